/*
 * machine.c — the center's state machine (API and the round contract in center.h): open
 * and load, the round (dirty marks, held output, one commit, then send), peers, dispatch,
 * and the gateway-facing requests (products, ledger view, routing, ping, stats). The
 * cell-facing requests — allotments, parked grants, reclaim — are in center_allot.c.
 *
 * State: the catalog (catalog.h: products, their two ledgers, parked grants), the routing
 * table, which peer is which cell, and this round's held output and dirty marks.
 *
 *   frames in ──> handlers ──> ledger math (inventory.h), dirty marks, held output
 *   center_flush ──> dirty rows as op records (store/center_ops.h) ──> ONE d11_store_commit
 *                ──> held frames to host->send, in order
 *
 * Sold counts: every GRANT, RETURN and REPORT carries the cell's latest COMMITTED sold
 * count for a ledger; it replaces the stored value (no max(): cancels and expiries lower
 * it), is committed like any change, and the product view (stock_sold) is their sum at
 * the time of the read. A cell sends a full REPORT after every HELLO exchange, so after
 * any crash the view converges to the stored truth.
 *
 * Memory: held output, the op buffer and the JSON scratch keep their capacity between
 * rounds; the dirty and waiting lists hold each product at most once.
 */
#include "center.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/limits.h"
#include "../core/util.h"
#include "../core/promtext.h"
#include "../store/center_ops.h"
#include "center_int.h"
#include "routing.h"

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) d11_fatal("center: out of memory");
    return p;
}

void center__push_index(size_t **v, size_t *n, size_t *cap, size_t idx)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *v = xrealloc(*v, *cap * sizeof **v);
    }
    (*v)[(*n)++] = idx;
}

/* ---- dirty marks ---- */

/* Record that product idx changed: its row (row), the center_stock row of shadow (stock),
 * the ledger row of cell (cell >= 0). */
void center__touch(center *c, size_t idx, int shadow, int cell, bool stock, bool row)
{
    center_product *p = c->cat.v[idx];
    D11_ASSERT(shadow == 0 || shadow == 1);
    D11_ASSERT(cell < (int)c->cat.ncells);
    if (cell >= 0) p->st[shadow].dirty_cells |= 1ULL << cell;
    if (stock) p->st[shadow].dirty_stock = true;
    if (row) p->dirty_row = true;
    if (!p->listed_dirty) {
        p->listed_dirty = true;
        center__push_index(&c->dirty, &c->ndirty, &c->capdirty, idx);
    }
}

/* ---- held output ---- */

d11_buf *center__out_open(center *c, uint32_t peer)
{
    D11_ASSERT(!c->flushing);
    if (c->nmsgs == c->capmsgs) {
        c->capmsgs = c->capmsgs ? c->capmsgs * 2 : 64;
        c->msgs = xrealloc(c->msgs, c->capmsgs * sizeof *c->msgs);
    }
    c->msgs[c->nmsgs++] = (held_frame){.peer = peer, .off = c->held.len};
    return &c->held;
}

void center__out_close(center *c)
{
    held_frame *m = &c->msgs[c->nmsgs - 1];
    m->len = c->held.len - m->off;
    D11_ASSERT(m->len >= D11_FRAME_HDR_BYTES && m->len <= D11_FRAME_BYTES_MAX);
}

void center__reply(center *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code,
                   const char *body, size_t n)
{
    d11_reply_enc(center__out_open(c, peer), h, status, code, body, n);
    center__out_close(c);
}

void center__reply_err(center *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code,
                       const char *msg)
{
    center__reply(c, peer, h, status, code, msg, strlen(msg));
}

/* ---- handlers ---- */

static void handle_product_create(center *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_product m;
    if (d11_msg_product_dec(f->payload, f->payload_len, &m) < 0) {
        center__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed product");
        return;
    }
    char msg[128];
    if (center_catalog_find(&c->cat, m.sku.p, m.sku.n, NULL)) {
        snprintf(msg, sizeof msg, "%.*s already exists", (int)m.sku.n, m.sku.p);
        center__reply_err(c, peer, &f->hdr, 409, "exists", msg);
        return;
    }
    size_t idx = center_catalog_add(&c->cat, m.sku.p, m.sku.n);
    center_product *p = c->cat.v[idx];
    center_product_set_text(p, m.title.p, m.title.n, m.category.p, m.category.n);
    p->price_cents = m.price_cents;
    p->created_at = d11_clock_wall(c->h.clock);
    for (int s = 0; s < 2; s++) {
        int rc = center_inv_restock(&p->st[s].inv, m.stock); /* m.stock <= D11_STOCK_MAX: decoded */
        D11_ASSERT(rc == 0);
        center__touch(c, idx, s, -1, true, true);
    }
    center__event(c, "product.created", idx, 0, &f->hdr); /* committed with the rows (center_events.c) */
    d11_buf_reset(&c->scratch);
    center_product_render(&c->scratch, p, 0);
    center__reply(c, peer, &f->hdr, 201, NULL, c->scratch.data, c->scratch.len);
}

/* PRODUCT_GET, or PRODUCT_RESTOCK when restock. */
static void handle_product_get(center *c, uint32_t peer, const d11_frame *f, bool restock)
{
    d11_msg_sku_qty m;
    if (d11_msg_sku_qty_dec(f->payload, f->payload_len, &m, restock) < 0) {
        center__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    size_t idx;
    center_product *p = center_catalog_find(&c->cat, m.sku.p, m.sku.n, &idx);
    if (!p) {
        char msg[128];
        snprintf(msg, sizeof msg, "no product %.*s", (int)m.sku.n, m.sku.p);
        center__reply_err(c, peer, &f->hdr, 404, "not_found", msg);
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    if (restock) {
        for (int s = 0; s < 2; s++)
            if (p->st[s].inv.total + m.qty > (uint64_t)D11_STOCK_MAX) {
                center__reply_err(c, peer, &f->hdr, 422, "invalid", "quantity: stock_total would exceed 10^12");
                return;
            }
        for (int s = 0; s < 2; s++) {
            int rc = center_inv_restock(&p->st[s].inv, m.qty); /* checked just above */
            D11_ASSERT(rc == 0);
            center__touch(c, idx, s, -1, true, true);
            if (p->st[s].npend) center__pending_try(c, idx, s, false);
        }
        center__event(c, "product.restocked", idx, m.qty, &f->hdr);
        shadow = 0;
    }
    d11_buf_reset(&c->scratch);
    center_product_render(&c->scratch, p, shadow);
    center__reply(c, peer, &f->hdr, 200, NULL, c->scratch.data, c->scratch.len);
}

static void handle_ledger_get(center *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_sku_qty m;
    if (d11_msg_sku_qty_dec(f->payload, f->payload_len, &m, false) < 0) {
        center__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    center_product *p = center_catalog_find(&c->cat, m.sku.p, m.sku.n, NULL);
    if (!p) {
        center__reply_err(c, peer, &f->hdr, 404, "not_found", "no such product");
        return;
    }
    d11_buf_reset(&c->scratch);
    center_ledger_render(&c->scratch, p);
    center__reply(c, peer, &f->hdr, 200, NULL, c->scratch.data, c->scratch.len);
}

/* Record a cell's reported committed sold count of (idx, shadow). */
static void handle_stats(center *c, uint32_t peer, const d11_frame *f)
{
    d11_buf_reset(&c->scratch);
    d11_buf_printf(&c->scratch,
                   "{\"process\":\"center\",\"pid\":%d,\"products\":%zu,\"cells\":%u,\"routing_version\":%u,"
                   "\"grants\":%llu,\"returns\":%llu,\"reclaims\":%llu,\"commits\":%llu}",
                   c->o.pid, c->cat.n, c->cat.ncells, c->routing.version, (unsigned long long)c->n_grants,
                   (unsigned long long)c->n_returns, (unsigned long long)c->n_reclaims,
                   (unsigned long long)c->n_commits);
    center__reply(c, peer, &f->hdr, 200, NULL, c->scratch.data, c->scratch.len);
}

#define CENTER_METRICS_TOP_SKUS 20 /* SKUs with stock series: the most sold */

/* METRICS (gateway /metrics): the center's counters, stock total / sold / available and
 * the per-cell allotment of the CENTER_METRICS_TOP_SKUS most sold SKUs (live stock, not
 * shadow), and process_* when running as a process (o.pid != 0). part="center". */
static void handle_metrics(center *c, uint32_t peer, const d11_frame *f)
{
    d11_buf *b = &c->scratch;
    d11_buf_reset(b);
#define U(x) ((unsigned long long)(x))
    d11_prom_head(b, "d11_center_grants_total", "counter", "Stock grants handed to cells.");
    d11_buf_printf(b, "d11_center_grants_total{part=\"center\"} %llu\n", U(c->n_grants));
    d11_prom_head(b, "d11_center_returns_total", "counter", "Stock returns received from cells.");
    d11_buf_printf(b, "d11_center_returns_total{part=\"center\"} %llu\n", U(c->n_returns));
    d11_prom_head(b, "d11_center_reclaims_total", "counter", "Reclaim requests pushed to cells.");
    d11_buf_printf(b, "d11_center_reclaims_total{part=\"center\"} %llu\n", U(c->n_reclaims));
    d11_prom_head(b, "d11_center_commits_total", "counter", "Center storage commits.");
    d11_buf_printf(b, "d11_center_commits_total{part=\"center\"} %llu\n", U(c->n_commits));
    d11_prom_head(b, "d11_center_products", "gauge", "Products in the catalog.");
    d11_buf_printf(b, "d11_center_products{part=\"center\"} %zu\n", c->cat.n);
    d11_prom_head(b, "d11_center_cells", "gauge", "Cells of the deployment.");
    d11_buf_printf(b, "d11_center_cells{part=\"center\"} %u\n", c->cat.ncells);
    /* the top SKUs by sold: a selection over the catalog, at most TOP entries */
    size_t top[CENTER_METRICS_TOP_SKUS];
    size_t ntop = 0;
    for (size_t i = 0; i < c->cat.n; i++) {
        uint64_t s = center_inv_sold(&c->cat.v[i]->st[0].inv);
        size_t k = ntop < CENTER_METRICS_TOP_SKUS ? ntop++ : CENTER_METRICS_TOP_SKUS;
        while (k > 0 && center_inv_sold(&c->cat.v[top[k - 1]]->st[0].inv) < s) {
            if (k < CENTER_METRICS_TOP_SKUS) top[k] = top[k - 1];
            k--;
        }
        if (k < CENTER_METRICS_TOP_SKUS) top[k] = i;
    }
    static const char *fam[3][2] = {
        {"d11_stock_total_units", "Units of stock of the SKU (top SKUs by sold)."},
        {"d11_stock_sold_units", "Units sold of the SKU, as reported by the cells (top SKUs by sold)."},
        {"d11_stock_available_units", "Units not yet sold: total - sold (top SKUs by sold)."}};
    for (int m = 0; m < 3; m++) {
        d11_prom_head(b, fam[m][0], "gauge", fam[m][1]);
        for (size_t k = 0; k < ntop; k++) {
            const center_product *p = c->cat.v[top[k]];
            uint64_t total = p->st[0].inv.total, sold = center_inv_sold(&p->st[0].inv);
            if (sold > total) sold = total;
            uint64_t v = m == 0 ? total : m == 1 ? sold : total - sold;
            d11_buf_printf(b, "%s{part=\"center\",sku=\"%s\"} %llu\n", fam[m][0], p->sku, U(v));
        }
    }
    d11_prom_head(b, "d11_center_allotment_units", "gauge",
                  "Units out at a cell for the SKU: granted - returned (top SKUs by sold).");
    for (size_t k = 0; k < ntop; k++) {
        const center_product *p = c->cat.v[top[k]];
        for (uint16_t ci = 0; ci < p->st[0].inv.ncells; ci++) {
            const center_inv_cell *ic = &p->st[0].inv.cells[ci];
            d11_buf_printf(b, "d11_center_allotment_units{part=\"center\",sku=\"%s\",cell=\"%u\"} %llu\n", p->sku,
                           ci, U(ic->granted - ic->returned));
        }
    }
    d11_prom_head(b, "d11_center_free_units", "gauge", "Units held at the center, not granted (top SKUs by sold).");
    for (size_t k = 0; k < ntop; k++)
        d11_buf_printf(b, "d11_center_free_units{part=\"center\",sku=\"%s\"} %llu\n", c->cat.v[top[k]]->sku,
                       U(c->cat.v[top[k]]->st[0].inv.free));
#undef U
    if (c->o.pid) d11_prom_process(b, "center");
    center__reply(c, peer, &f->hdr, 200, NULL, b->data, b->len);
}

void center_on_frame(center *c, uint32_t peer, const d11_frame *f)
{
    D11_ASSERT(!c->flushing);
    if (c->failed) return; /* stopped: the host is about to exit */
    if (f->hdr.flags & D11_WF_REPLY) return; /* nothing the center pushes expects an answer */
    switch (f->hdr.type) {
    case D11_MSG_PRODUCT_CREATE: handle_product_create(c, peer, f); break;
    case D11_MSG_PRODUCT_GET: handle_product_get(c, peer, f, false); break;
    case D11_MSG_PRODUCT_RESTOCK: handle_product_get(c, peer, f, true); break;
    case D11_MSG_LEDGER_GET: handle_ledger_get(c, peer, f); break;
    case D11_MSG_ROUTING_GET:
        center_routing_reply(center__out_open(c, peer), &f->hdr, &c->routing);
        center__out_close(c);
        break;
    case D11_MSG_CELL_HELLO: center__handle_hello(c, peer, f); break;
    case D11_MSG_GRANT: center__handle_grant(c, peer, f); break;
    case D11_MSG_RETURN: center__handle_return(c, peer, f); break;
    case D11_MSG_REPORT: center__handle_report(c, peer, f); break;
    case D11_MSG_PING: center__reply(c, peer, &f->hdr, 200, NULL, "center", 6); break;
    case D11_MSG_STATS: handle_stats(c, peer, f); break;
    case D11_MSG_PRODUCT_LIST: {
        d11_msg_product_list m;
        if (d11_msg_product_list_dec(f->payload, f->payload_len, &m) < 0) {
            center__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed request");
            break;
        }
        d11_buf_reset(&c->scratch);
        center_catalog_list(&c->cat, &m, (f->hdr.flags & D11_WF_STRESS) ? 1 : 0, &c->scratch);
        center__reply(c, peer, &f->hdr, 200, NULL, c->scratch.data, c->scratch.len);
        break;
    }
    case D11_MSG_METRICS: handle_metrics(c, peer, f); break;
    default: center__reply_err(c, peer, &f->hdr, 400, "bad_request", "unknown message type");
    }
}

/* ---- peers and time ---- */

void center_peer_up(center *c, uint32_t peer)
{
    for (unsigned cell = 0; cell < c->cat.ncells; cell++)
        D11_ASSERT(!((c->cell_up & (1ULL << cell)) && c->cell_peer[cell] == peer)); /* ids are not reused while up */
}

void center_peer_down(center *c, uint32_t peer)
{
    for (unsigned cell = 0; cell < c->cat.ncells; cell++) {
        if (!(c->cell_up & (1ULL << cell)) || c->cell_peer[cell] != peer) continue;
        c->cell_up &= ~(1ULL << cell);
        d11_warn("cell %u disconnected", cell);
    }
    for (size_t i = 0; i < c->nwaiting; i++) {
        center_product *p = c->cat.v[c->waiting[i]];
        for (int s = 0; s < 2; s++) {
            center_stock *st = &p->st[s];
            uint32_t keep = 0;
            for (uint32_t j = 0; j < st->npend; j++)
                if (st->pend[j].peer != peer) st->pend[keep++] = st->pend[j];
            st->npend = keep;
        }
    }
    for (size_t i = 0; i < c->nmsgs; i++)
        if (c->msgs[i].peer == peer) c->msgs[i].dropped = true;
}

/* ---- commit and send ---- */

/* The op records of everything dirty; returns how many. */
static uint32_t encode_dirty(center *c)
{
    uint32_t nops = 0;
    d11_buf *b = &c->ops;
    d11_buf_reset(b);
    if (c->routing_dirty) {
        center_op_routing_enc(b, &c->routing);
        nops++;
    }
    for (size_t i = 0; i < c->ndirty; i++) {
        const center_product *p = c->cat.v[c->dirty[i]];
        d11_str sku = {p->sku, p->skun};
        if (p->dirty_row) { /* products before their stock and ledger rows (center_ops.h) */
            center_op_product_enc(b, &(center_op_product){.sku = sku,
                                                          .title = {p->title, strlen(p->title)},
                                                          .category = {p->category, strlen(p->category)},
                                                          .price_cents = p->price_cents,
                                                          .stock_total = p->st[0].inv.total,
                                                          .created_at = p->created_at});
            nops++;
        }
        for (int s = 0; s < 2; s++) {
            const center_stock *st = &p->st[s];
            center_inv_check(&st->inv);
            if (st->dirty_stock) {
                center_op_stock_enc(b, &(center_op_stock){.sku = sku, .shadow = (uint8_t)s, .total = st->inv.total,
                                                          .free = st->inv.free});
                nops++;
            }
            for (unsigned cell = 0; cell < st->inv.ncells; cell++) {
                if (!(st->dirty_cells & (1ULL << cell))) continue;
                const center_inv_cell *cl = &st->inv.cells[cell];
                center_op_ledger_enc(b, &(center_op_ledger){.sku = sku, .shadow = (uint8_t)s, .cell = (uint16_t)cell,
                                                            .granted = cl->granted, .returned = cl->returned,
                                                            .sold_reported = cl->sold});
                nops++;
            }
        }
    }
    nops += center__events_encode(c, b, d11_clock_wall(c->h.clock)); /* same commit (center_events.c) */
    return nops;
}

static void clear_dirty(center *c)
{
    c->routing_dirty = false;
    for (size_t i = 0; i < c->ndirty; i++) {
        center_product *p = c->cat.v[c->dirty[i]];
        p->dirty_row = p->listed_dirty = false;
        for (int s = 0; s < 2; s++) {
            p->st[s].dirty_stock = false;
            p->st[s].dirty_cells = 0;
        }
    }
    c->ndirty = 0;
}

int center_flush(center *c)
{
    D11_ASSERT(!c->flushing);
    if (c->failed) return c->failed;
    uint32_t nops = encode_dirty(c);
    if (nops) {
        int rc = d11_store_commit(c->st, (const uint8_t *)c->ops.data, c->ops.len, nops);
        if (rc < 0) {
            d11_error("center: commit of %u records failed (%s); nothing of this round is sent", nops,
                      d11_strerror(rc));
            c->failed = rc;
            c->nmsgs = 0;
            d11_buf_reset(&c->held);
            return rc;
        }
        c->n_commits++;
        clear_dirty(c);
        center__events_committed(c);
    }
    D11_ASSERT(c->ndirty == 0 && !c->routing_dirty);
    c->flushing = true; /* host->send must not call back into the center */
    for (size_t i = 0; i < c->nmsgs; i++) {
        const held_frame *m = &c->msgs[i];
        if (!m->dropped) c->h.send(c->h.data, m->peer, (const uint8_t *)c->held.data + m->off, m->len);
    }
    c->flushing = false;
    c->nmsgs = 0;
    d11_buf_reset(&c->held);
    return 0;
}

/* ---- open, load, free ---- */

/* Apply one stored record: each is an upsert of one row, so a record seen again later
 * in commit order simply replaces the earlier value. */
static int load_one(center *c, const uint8_t *rec, size_t len)
{
    center_op op;
    if (center_op_dec(rec, len, &op) < 0) {
        d11_error("center: a stored record (op %u, %zu bytes) does not decode", len ? rec[0] : 0, len);
        return D11_EPROTO;
    }
    switch (op.type) {
    case CENTER_OP_ROUTING: {
        int rc = center_routing_check(&op.u.routing, c->cat.ncells);
        if (rc < 0) return rc;
        c->routing = op.u.routing;
        c->routing_loaded = true;
        return 0;
    }
    case CENTER_OP_PRODUCT: {
        const center_op_product *m = &op.u.product;
        size_t idx;
        center_product *p = center_catalog_find(&c->cat, m->sku.p, m->sku.n, &idx);
        if (!p) {
            idx = center_catalog_add(&c->cat, m->sku.p, m->sku.n); /* may move cat.v: index it after */
            p = c->cat.v[idx];
        }
        center_product_set_text(p, m->title.p, m->title.n, m->category.p, m->category.n);
        p->price_cents = m->price_cents;
        p->created_at = m->created_at;
        return 0;
    }
    case CENTER_OP_STOCK: {
        const center_op_stock *m = &op.u.stock;
        center_product *p = center_catalog_find(&c->cat, m->sku.p, m->sku.n, NULL);
        if (!p) {
            d11_warn("center: stock row of %.*s without a product; ignored", (int)m->sku.n, m->sku.p);
            return 0;
        }
        p->st[m->shadow].inv.total = m->total;
        p->st[m->shadow].inv.free = m->free;
        return 0;
    }
    case CENTER_OP_LEDGER: {
        const center_op_ledger *m = &op.u.ledger;
        center_product *p = center_catalog_find(&c->cat, m->sku.p, m->sku.n, NULL);
        if (!p) {
            d11_warn("center: ledger row of %.*s without a product; ignored", (int)m->sku.n, m->sku.p);
            return 0;
        }
        if (m->cell >= c->cat.ncells) {
            d11_error("center: ledger row of %.*s names cell %u of %u", (int)m->sku.n, m->sku.p, m->cell,
                      c->cat.ncells);
            return D11_ECONFIG;
        }
        center_inv_cell *cl = &p->st[m->shadow].inv.cells[m->cell];
        cl->granted = m->granted;
        cl->returned = m->returned;
        cl->sold = m->sold_reported;
        return 0;
    }
    case CENTER_OP_EVENT:
    case CENTER_OP_EVENT_PRUNE: center__events_load(c, &op); return 0;
    default: return D11_EPROTO;
    }
}

/* d11_store_apply_fn: nrecs whole records back to back (one row, or a committed batch). */
static int load_apply(void *ctx, const uint8_t *recs, size_t len, uint32_t nrecs)
{
    center *c = ctx;
    size_t off = 0;
    uint32_t n = 0;
    while (off < len) {
        size_t rl;
        if (center_op_next(recs + off, len - off, &rl) < 0) {
            d11_error("center: stored records cut short at byte %zu of %zu", off, len);
            return D11_EPROTO;
        }
        int rc = load_one(c, recs + off, rl);
        if (rc < 0) return rc;
        off += rl;
        n++;
    }
    if (n != nrecs) {
        d11_error("center: the store announced %u records and gave %u", nrecs, n);
        return D11_EPROTO;
    }
    return 0;
}

int center_open(center **out, const center_opts *o, const center_host *h, d11_store *st)
{
    if (o->ncells < 1 || o->ncells > D11_CELLS_MAX || o->grant_chunk_max < 1 || o->reclaim_ms < 0 || !h->clock ||
        !h->send || !st) {
        d11_error("center: bad options (cells %d, grant_chunk_max %lld, reclaim_ms %lld)", o->ncells,
                  (long long)o->grant_chunk_max, (long long)o->reclaim_ms);
        return D11_ECONFIG;
    }
    center *c = calloc(1, sizeof *c);
    if (!c) d11_fatal("center: out of memory");
    c->o = *o;
    c->h = *h;
    c->st = st;
    center_catalog_init(&c->cat, (uint16_t)o->ncells);
    d11_buf_init(&c->held, 4096);
    d11_buf_init(&c->ops, 4096);
    d11_buf_init(&c->scratch, 4096);
    int rc = d11_store_load(st, load_apply, c);
    if (rc < 0) {
        d11_error("center: cannot load the stored state (%s)", d11_strerror(rc));
        center_free(c);
        return rc;
    }
    for (size_t i = 0; i < c->cat.n; i++)
        for (int s = 0; s < 2; s++) center_inv_check(&c->cat.v[i]->st[s].inv);
    if (!c->routing_loaded) { /* first start of this deployment */
        center_routing_first(&c->routing, (uint16_t)o->ncells);
        c->routing_dirty = true;
        if ((rc = center_flush(c)) < 0) {
            center_free(c);
            return rc;
        }
    }
    d11_info("center loaded %zu products, %d cells, routing v%u", c->cat.n, o->ncells, c->routing.version);
    *out = c;
    return 0;
}

void center_free(center *c)
{
    if (!c) return;
    center_catalog_release(&c->cat);
    free(c->dirty);
    free(c->waiting);
    free(c->msgs);
    d11_buf_free(&c->held);
    d11_buf_free(&c->ops);
    d11_buf_free(&c->scratch);
    center__events_free(c);
    free(c);
}

/* ---- introspection ---- */

static const center_stock *stock_of(const center *c, const char *sku, size_t skun, int shadow)
{
    if (shadow < 0 || shadow > 1) return NULL;
    const center_product *p = center_catalog_find(&c->cat, sku, skun, NULL);
    return p ? &p->st[shadow] : NULL;
}

bool center_ledger(const center *c, const char *sku, size_t skun, int shadow, uint64_t *total, uint64_t *free_,
                   uint64_t *sold_reported_sum)
{
    const center_stock *s = stock_of(c, sku, skun, shadow);
    if (!s) return false;
    *total = s->inv.total;
    *free_ = s->inv.free;
    *sold_reported_sum = center_inv_sold(&s->inv);
    return true;
}

bool center_ledger_cell(const center *c, const char *sku, size_t skun, int shadow, int cell, uint64_t *granted,
                        uint64_t *returned, uint64_t *sold_reported)
{
    const center_stock *s = stock_of(c, sku, skun, shadow);
    if (!s || cell < 0 || cell >= (int)s->inv.ncells) return false;
    *granted = s->inv.cells[cell].granted;
    *returned = s->inv.cells[cell].returned;
    *sold_reported = s->inv.cells[cell].sold;
    return true;
}

size_t center_products(const center *c) { return c->cat.n; }

const d11_routing *center_routing(const center *c) { return &c->routing; }
