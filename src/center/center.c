/*
 * center.c — `d11 center`: the catalog, the inventory ledger and the routing table.
 *
 * One thread, one epoll loop, one SQLite database (DATA/center.db). It serves the
 * gateway (product create/get/restock, routing, ledger) and the cells (allotment grants,
 * returns, sold reports). It is off the order hot path: a cell only talks to it when its
 * allotment of a SKU runs low.
 *
 * Ledger, per (SKU, shadow) — shadow = 1 is the stress-test copy of the stock:
 *     total                     units ever put on sale (create + restocks)
 *     free                      units at the center, not allotted to any cell
 *     cells[c].granted          units ever granted to cell c (cumulative)
 *     cells[c].returned         units cell c ever handed back (cumulative)
 *     cells[c].sold             cell c's last reported sold count (pending + paid)
 * Invariant (asserted after every change): free + sum(granted - returned) == total.
 * Cumulative counters make every cell message idempotent: a repeated GRANT reply or
 * RETURN carries the same cumulative value and the receiver keeps the maximum.
 *
 * Group commit: the loop handles every ready frame first, mutating memory and queuing
 * replies, then commits all dirty products in ONE transaction, and only then flushes the
 * replies. A reply therefore never announces a grant that is not durable. If a commit
 * fails the process exits without sending them (the supervisor restarts it and the
 * cells re-sync with HELLO).
 *
 * Grants near sell-out: when free < want, the center asks every other cell holding
 * unsold units to return them (RECLAIM push), parks the request, and answers it when the
 * returns have arrived or reclaim_ms passed — with sold_out=1 if it still cannot grant.
 * This is how the last units of a hot SKU stay sellable from any cell.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/fault.h"
#include "../core/limits.h"
#include "../core/map.h"
#include "../core/util.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "../store/sqlite_util.h"

#define CENTER_CONNS_MAX 1024
#define CENTER_RECLAIM_MS 300 /* how long a parked grant waits for reclaimed units */

typedef struct cell_ledger {
    uint64_t granted, returned, sold;
} cell_ledger;

typedef struct pending_grant {
    int          conn; /* index into conns[] */
    uint32_t     gen;
    d11_frame_hdr hdr;
    uint16_t     cell;
    uint64_t     want;
} pending_grant;

typedef struct ledger {
    uint64_t       total, free;
    cell_ledger   *cells; /* ncells entries */
    uint64_t       reclaim_mask; /* cells asked to return and not yet answered */
    int64_t        reclaim_deadline_ms;
    pending_grant *pend;
    size_t         npend, cappend;
} ledger;

typedef struct product {
    char     sku[D11_SKU_BYTES_MAX + 1];
    char    *title, *category;
    uint64_t price_cents;
    int64_t  created_at;
    ledger   l[2];
    bool     dirty, is_new, waiting;
} product;

typedef struct cconn {
    d11_conn c;
    uint32_t gen;
    int      cell; /* -1 until HELLO */
    bool     open;
} cconn;

static struct {
    d11_config    cfg;
    sqlite3      *db;
    int           epfd, lfd;
    cconn         conns[CENTER_CONNS_MAX];
    int           cell_conn[D11_CELLS_MAX]; /* conn index of each cell, -1 if none */
    product     **products;
    size_t        nproducts, capproducts;
    d11_smap      by_sku;
    size_t       *dirty;
    size_t        ndirty, capdirty;
    size_t       *waiting; /* products with parked grants */
    size_t        nwaiting, capwaiting;
    d11_routing   routing;
    int           ncells;
    sqlite3_stmt *st_product, *st_stock, *st_ledger;
    volatile sig_atomic_t stop;
    uint64_t      n_grants, n_returns, n_reclaims, n_commits;
} C;

static void on_signal(int sig)
{
    (void)sig;
    C.stop = 1;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) d11_fatal("out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);
    if (!p) d11_fatal("out of memory");
    return p;
}

/* ---- ledger invariant ---- */

static void ledger_check(const ledger *l)
{
    uint64_t out = 0;
    for (int c = 0; c < C.ncells; c++) {
        D11_ASSERT(l->cells[c].returned <= l->cells[c].granted);
        out += l->cells[c].granted - l->cells[c].returned;
    }
    D11_ASSERT(l->free + out == l->total);
}

static uint64_t ledger_sold(const ledger *l)
{
    uint64_t s = 0;
    for (int c = 0; c < C.ncells; c++) s += l->cells[c].sold;
    return s;
}

static void mark_dirty(size_t idx)
{
    product *p = C.products[idx];
    if (p->dirty) return;
    p->dirty = true;
    if (C.ndirty == C.capdirty) {
        C.capdirty = C.capdirty ? C.capdirty * 2 : 64;
        C.dirty = xrealloc(C.dirty, C.capdirty * sizeof *C.dirty);
    }
    C.dirty[C.ndirty++] = idx;
}

static size_t product_add(const char *sku, size_t skun)
{
    product *p = calloc(1, sizeof *p);
    if (!p) d11_fatal("out of memory");
    memcpy(p->sku, sku, skun);
    for (int s = 0; s < 2; s++) {
        p->l[s].cells = calloc((size_t)C.ncells, sizeof(cell_ledger));
        if (!p->l[s].cells) d11_fatal("out of memory");
    }
    if (C.nproducts == C.capproducts) {
        C.capproducts = C.capproducts ? C.capproducts * 2 : 256;
        C.products = xrealloc(C.products, C.capproducts * sizeof *C.products);
    }
    C.products[C.nproducts] = p;
    d11_smap_put(&C.by_sku, sku, skun, C.nproducts);
    return C.nproducts++;
}

static product *product_find(const char *sku, size_t n, size_t *idx)
{
    uint64_t v;
    if (!d11_smap_get(&C.by_sku, sku, n, &v)) return NULL;
    if (idx) *idx = (size_t)v;
    return C.products[v];
}

/* ---- storage ---- */

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS products(sku TEXT PRIMARY KEY, title TEXT NOT NULL,"
    " price_cents INTEGER NOT NULL, category TEXT NOT NULL, stock_total INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS center_stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
    " total INTEGER NOT NULL, free INTEGER NOT NULL, PRIMARY KEY(sku, shadow));"
    "CREATE TABLE IF NOT EXISTS ledger(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
    " cell INTEGER NOT NULL, granted INTEGER NOT NULL, returned INTEGER NOT NULL,"
    " sold_reported INTEGER NOT NULL, PRIMARY KEY(sku, shadow, cell));"
    "CREATE TABLE IF NOT EXISTS routing(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " version INTEGER NOT NULL, ncells INTEGER NOT NULL, cell_of_slot BLOB NOT NULL);";

static int64_t col_i64(sqlite3_stmt *st, int i) { return sqlite3_column_int64(st, i); }

static int load_state(void)
{
    sqlite3_stmt *st = d11_sqlite_prepare(C.db, "SELECT version, ncells, cell_of_slot FROM routing WHERE id = 1");
    if (sqlite3_step(st) == SQLITE_ROW) {
        int n = (int)col_i64(st, 1);
        if (n != C.cfg.cells) {
            fprintf(stderr, "d11 center: %s was created with %d cells, not %d; start with --cells %d "
                            "(moving slots between cells is not supported yet)\n",
                    C.cfg.data_dir, n, C.cfg.cells, n);
            sqlite3_finalize(st);
            return -1;
        }
        d11_routing_default(&C.routing, (unsigned)n);
        C.routing.version = (uint32_t)col_i64(st, 0);
        const uint16_t *blob = sqlite3_column_blob(st, 2);
        if (blob && sqlite3_column_bytes(st, 2) == (int)sizeof C.routing.cell_of_slot)
            memcpy(C.routing.cell_of_slot, blob, sizeof C.routing.cell_of_slot);
    } else {
        d11_routing_default(&C.routing, (unsigned)C.cfg.cells);
        sqlite3_stmt *ins = d11_sqlite_prepare(C.db, "INSERT INTO routing VALUES(1, ?, ?, ?)");
        sqlite3_bind_int64(ins, 1, C.routing.version);
        sqlite3_bind_int64(ins, 2, C.routing.ncells);
        sqlite3_bind_blob(ins, 3, C.routing.cell_of_slot, sizeof C.routing.cell_of_slot, SQLITE_STATIC);
        int rc = d11_sqlite_step_done(C.db, ins);
        sqlite3_finalize(ins);
        if (rc) {
            sqlite3_finalize(st);
            return -1;
        }
    }
    sqlite3_finalize(st);

    st = d11_sqlite_prepare(C.db, "SELECT sku, title, price_cents, category, created_at FROM products");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sku = (const char *)sqlite3_column_text(st, 0);
        size_t idx = product_add(sku, strlen(sku));
        product *p = C.products[idx];
        p->title = xstrndup((const char *)sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        p->price_cents = (uint64_t)col_i64(st, 2);
        p->category = xstrndup((const char *)sqlite3_column_text(st, 3), (size_t)sqlite3_column_bytes(st, 3));
        p->created_at = col_i64(st, 4);
    }
    sqlite3_finalize(st);
    st = d11_sqlite_prepare(C.db, "SELECT sku, shadow, total, free FROM center_stock");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sku = (const char *)sqlite3_column_text(st, 0);
        product *p = product_find(sku, strlen(sku), NULL);
        int sh = (int)col_i64(st, 1);
        if (!p || sh < 0 || sh > 1) continue;
        p->l[sh].total = (uint64_t)col_i64(st, 2);
        p->l[sh].free = (uint64_t)col_i64(st, 3);
    }
    sqlite3_finalize(st);
    st = d11_sqlite_prepare(C.db, "SELECT sku, shadow, cell, granted, returned, sold_reported FROM ledger");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sku = (const char *)sqlite3_column_text(st, 0);
        product *p = product_find(sku, strlen(sku), NULL);
        int sh = (int)col_i64(st, 1), cell = (int)col_i64(st, 2);
        if (!p || sh < 0 || sh > 1 || cell < 0 || cell >= C.ncells) {
            d11_error("ledger row for %s cell %d does not fit this deployment", sku, cell);
            continue;
        }
        p->l[sh].cells[cell].granted = (uint64_t)col_i64(st, 3);
        p->l[sh].cells[cell].returned = (uint64_t)col_i64(st, 4);
        p->l[sh].cells[cell].sold = (uint64_t)col_i64(st, 5);
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < C.nproducts; i++)
        for (int s = 0; s < 2; s++) ledger_check(&C.products[i]->l[s]);
    d11_info("center loaded %zu products, %d cells, routing v%u", C.nproducts, C.ncells, C.routing.version);
    return 0;
}

/* Commit every dirty product in one transaction. Exits the process on failure: the
 * replies queued for these changes must never be sent. */
static void commit_dirty(void)
{
    if (!C.ndirty) return;
    if (d11_sqlite_exec(C.db, "BEGIN IMMEDIATE") < 0) d11_fatal("center: cannot begin a transaction");
    for (size_t i = 0; i < C.ndirty; i++) {
        product *p = C.products[C.dirty[i]];
        if (p->is_new) {
            sqlite3_bind_text(C.st_product, 1, p->sku, -1, SQLITE_STATIC);
            sqlite3_bind_text(C.st_product, 2, p->title, -1, SQLITE_STATIC);
            sqlite3_bind_int64(C.st_product, 3, (int64_t)p->price_cents);
            sqlite3_bind_text(C.st_product, 4, p->category, -1, SQLITE_STATIC);
            sqlite3_bind_int64(C.st_product, 5, (int64_t)p->l[0].total);
            sqlite3_bind_int64(C.st_product, 6, p->created_at);
            if (d11_sqlite_step_done(C.db, C.st_product) < 0) d11_fatal("center: commit failed");
        } else {
            sqlite3_stmt *up = d11_sqlite_prepare(C.db, "UPDATE products SET stock_total = ? WHERE sku = ?");
            sqlite3_bind_int64(up, 1, (int64_t)p->l[0].total);
            sqlite3_bind_text(up, 2, p->sku, -1, SQLITE_STATIC);
            if (d11_sqlite_step_done(C.db, up) < 0) d11_fatal("center: commit failed");
            sqlite3_finalize(up);
        }
        for (int s = 0; s < 2; s++) {
            ledger *l = &p->l[s];
            ledger_check(l);
            sqlite3_bind_text(C.st_stock, 1, p->sku, -1, SQLITE_STATIC);
            sqlite3_bind_int64(C.st_stock, 2, s);
            sqlite3_bind_int64(C.st_stock, 3, (int64_t)l->total);
            sqlite3_bind_int64(C.st_stock, 4, (int64_t)l->free);
            if (d11_sqlite_step_done(C.db, C.st_stock) < 0) d11_fatal("center: commit failed");
            for (int c = 0; c < C.ncells; c++) {
                cell_ledger *cl = &l->cells[c];
                if (!cl->granted && !cl->returned && !cl->sold) continue;
                sqlite3_bind_text(C.st_ledger, 1, p->sku, -1, SQLITE_STATIC);
                sqlite3_bind_int64(C.st_ledger, 2, s);
                sqlite3_bind_int64(C.st_ledger, 3, c);
                sqlite3_bind_int64(C.st_ledger, 4, (int64_t)cl->granted);
                sqlite3_bind_int64(C.st_ledger, 5, (int64_t)cl->returned);
                sqlite3_bind_int64(C.st_ledger, 6, (int64_t)cl->sold);
                if (d11_sqlite_step_done(C.db, C.st_ledger) < 0) d11_fatal("center: commit failed");
            }
        }
        p->dirty = p->is_new = false;
    }
    if (d11_sqlite_exec(C.db, "COMMIT") < 0) d11_fatal("center: commit failed");
    if (C.cfg.durability == D11_DUR_ASYNC) (void)d11_sqlite_sync(C.db);
    C.ndirty = 0;
    C.n_commits++;
}

/* ---- rendering ---- */

static void render_product(d11_buf *b, const product *p, int shadow)
{
    const ledger *l = &p->l[shadow];
    uint64_t sold = ledger_sold(l);
    if (sold > l->total) sold = l->total; /* reports can lag a restock-free window; never show < 0 */
    d11_buf_puts(b, "{\"sku\":");
    d11_buf_json_str(b, p->sku, strlen(p->sku));
    d11_buf_puts(b, ",\"title\":");
    d11_buf_json_str(b, p->title, strlen(p->title));
    d11_buf_printf(b, ",\"price_cents\":%llu,\"category\":", (unsigned long long)p->price_cents);
    d11_buf_json_str(b, p->category, strlen(p->category));
    d11_buf_printf(b, ",\"stock_total\":%llu,\"stock_sold\":%llu,\"stock_available\":%llu}",
                   (unsigned long long)l->total, (unsigned long long)sold,
                   (unsigned long long)(l->total - sold));
}

static void render_ledger(d11_buf *b, const product *p)
{
    d11_buf_puts(b, "{\"sku\":");
    d11_buf_json_str(b, p->sku, strlen(p->sku));
    for (int s = 0; s < 2; s++) {
        const ledger *l = &p->l[s];
        uint64_t held = 0, sold = ledger_sold(l);
        for (int c = 0; c < C.ncells; c++) held += l->cells[c].granted - l->cells[c].returned;
        held = held >= sold ? held - sold : 0;
        d11_buf_printf(b, ",\"%s\":{\"total\":%llu,\"free\":%llu,\"sold_reported\":%llu,\"held_by_cells\":%llu,\"cells\":[",
                       s ? "shadow" : "real", (unsigned long long)l->total, (unsigned long long)l->free,
                       (unsigned long long)sold, (unsigned long long)held);
        for (int c = 0; c < C.ncells; c++) {
            const cell_ledger *cl = &l->cells[c];
            d11_buf_printf(b, "%s{\"cell\":%d,\"granted\":%llu,\"returned\":%llu,\"sold_reported\":%llu}",
                           c ? "," : "", c, (unsigned long long)cl->granted,
                           (unsigned long long)cl->returned, (unsigned long long)cl->sold);
        }
        d11_buf_puts(b, "]}");
    }
    d11_buf_puts(b, "}");
}

/* ---- request handlers ---- */

static d11_buf scratch;

static void reply(int ci, const d11_frame_hdr *h, uint32_t status, const char *code, const char *body, size_t n)
{
    if (!C.conns[ci].open) return;
    d11_conn_reply(&C.conns[ci].c, h, status, code, body, n);
}

static void reply_err(int ci, const d11_frame_hdr *h, uint32_t status, const char *code, const char *msg)
{
    reply(ci, h, status, code, msg, strlen(msg));
}

static void handle_product_create(int ci, const d11_frame *f)
{
    d11_msg_product m;
    if (d11_msg_product_dec(f->payload, f->payload_len, &m) < 0) {
        reply_err(ci, &f->hdr, 422, "invalid", "malformed product");
        return;
    }
    if (product_find(m.sku.p, m.sku.n, NULL)) {
        char msg[128];
        snprintf(msg, sizeof msg, "%.*s already exists", (int)m.sku.n, m.sku.p);
        reply_err(ci, &f->hdr, 409, "exists", msg);
        return;
    }
    size_t idx = product_add(m.sku.p, m.sku.n);
    product *p = C.products[idx];
    p->title = xstrndup(m.title.p, m.title.n);
    p->category = xstrndup(m.category.p, m.category.n);
    p->price_cents = m.price_cents;
    p->created_at = d11_wall_ms();
    for (int s = 0; s < 2; s++) p->l[s].total = p->l[s].free = m.stock;
    p->is_new = true;
    mark_dirty(idx);
    d11_buf_reset(&scratch);
    render_product(&scratch, p, 0);
    reply(ci, &f->hdr, 201, NULL, scratch.data, scratch.len);
}

static void grant_try_pending(size_t idx, int shadow, bool final);

static void handle_product_get(int ci, const d11_frame *f, bool restock)
{
    d11_msg_sku_qty m;
    if (d11_msg_sku_qty_dec(f->payload, f->payload_len, &m, restock) < 0) {
        reply_err(ci, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    size_t idx;
    product *p = product_find(m.sku.p, m.sku.n, &idx);
    if (!p) {
        char msg[128];
        snprintf(msg, sizeof msg, "no product %.*s", (int)m.sku.n, m.sku.p);
        reply_err(ci, &f->hdr, 404, "not_found", msg);
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    if (restock) {
        if (p->l[0].total + m.qty > (uint64_t)D11_STOCK_MAX) {
            reply_err(ci, &f->hdr, 422, "invalid", "quantity: stock_total would exceed 10^12");
            return;
        }
        for (int s = 0; s < 2; s++) {
            p->l[s].total += m.qty;
            p->l[s].free += m.qty;
            ledger_check(&p->l[s]);
            if (p->l[s].npend) grant_try_pending(idx, s, false);
        }
        mark_dirty(idx);
    }
    d11_buf_reset(&scratch);
    render_product(&scratch, p, restock ? 0 : shadow);
    reply(ci, &f->hdr, 200, NULL, scratch.data, scratch.len);
}

static void handle_ledger_get(int ci, const d11_frame *f)
{
    d11_msg_sku_qty m;
    if (d11_msg_sku_qty_dec(f->payload, f->payload_len, &m, false) < 0) {
        reply_err(ci, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    product *p = product_find(m.sku.p, m.sku.n, NULL);
    if (!p) {
        reply_err(ci, &f->hdr, 404, "not_found", "no such product");
        return;
    }
    d11_buf_reset(&scratch);
    render_ledger(&scratch, p);
    reply(ci, &f->hdr, 200, NULL, scratch.data, scratch.len);
}

static void send_grant_reply(int ci, uint32_t gen, const d11_frame_hdr *h, const product *p, int shadow,
                             uint16_t cell, bool sold_out)
{
    if (!C.conns[ci].open || C.conns[ci].gen != gen) return;
    d11_msg_grant_reply r = {.exists = p ? 1 : 0,
                             .price_cents = p ? p->price_cents : 0,
                             .granted_cum = p ? p->l[shadow].cells[cell].granted : 0,
                             .sold_out = sold_out};
    d11_frame_hdr rh = *h;
    rh.flags = (uint16_t)((h->flags & D11_WF_STRESS) | D11_WF_REPLY);
    rh.status = 200;
    rh.deadline_ms = 0;
    size_t start = d11_frame_begin(&C.conns[ci].c.out, &rh);
    d11_msg_grant_reply_enc(&C.conns[ci].c.out, &r);
    d11_frame_end(&C.conns[ci].c.out, start);
}

/* Grant size: a share of what is free, so that every cell gets some and the center keeps
 * a reserve; never less than what the order needs, never more than grant_chunk_max. */
static uint64_t grant_size(const ledger *l, uint64_t want)
{
    uint64_t share = l->free / (2 * (uint64_t)C.ncells);
    if (share > (uint64_t)C.cfg.grant_chunk_max) share = (uint64_t)C.cfg.grant_chunk_max;
    uint64_t g = want > share ? want : share;
    return g > l->free ? l->free : g;
}

static void do_grant(ledger *l, uint16_t cell, uint64_t g)
{
    D11_ASSERT(g <= l->free);
    l->free -= g;
    l->cells[cell].granted += g;
    ledger_check(l);
    C.n_grants++;
}

static void waiting_add(size_t idx)
{
    product *p = C.products[idx];
    if (p->waiting) return;
    p->waiting = true;
    if (C.nwaiting == C.capwaiting) {
        C.capwaiting = C.capwaiting ? C.capwaiting * 2 : 16;
        C.waiting = xrealloc(C.waiting, C.capwaiting * sizeof *C.waiting);
    }
    C.waiting[C.nwaiting++] = idx;
}

/* Answer parked grants that can now be served (FIFO). When `final`, answer the rest
 * with sold_out. */
static void grant_try_pending(size_t idx, int shadow, bool final)
{
    product *p = C.products[idx];
    ledger *l = &p->l[shadow];
    size_t keep = 0;
    bool changed = false;
    for (size_t i = 0; i < l->npend; i++) {
        pending_grant *g = &l->pend[i];
        if (l->free >= g->want) {
            do_grant(l, g->cell, grant_size(l, g->want));
            changed = true;
            send_grant_reply(g->conn, g->gen, &g->hdr, p, shadow, g->cell, false);
        } else if (final) {
            send_grant_reply(g->conn, g->gen, &g->hdr, p, shadow, g->cell, true);
        } else {
            l->pend[keep++] = *g;
        }
    }
    l->npend = keep;
    if (changed) mark_dirty(idx);
}

static void start_reclaim(product *p, int shadow, uint16_t except)
{
    ledger *l = &p->l[shadow];
    if (!l->reclaim_mask) l->reclaim_deadline_ms = d11_mono_ms() + CENTER_RECLAIM_MS; /* a new round */
    for (int c = 0; c < C.ncells; c++) {
        if (c == except || (l->reclaim_mask & (1ULL << c))) continue;
        cell_ledger *cl = &l->cells[c];
        uint64_t out = cl->granted - cl->returned;
        if (out <= cl->sold) continue; /* nothing unsold there, as far as we know */
        int ci = C.cell_conn[c];
        if (ci < 0 || !C.conns[ci].open) continue;
        d11_frame_hdr h = {.type = D11_MSG_RECLAIM, .flags = D11_WF_PUSH | (shadow ? D11_WF_STRESS : 0)};
        size_t start = d11_frame_begin(&C.conns[ci].c.out, &h);
        d11_wenc_str(&C.conns[ci].c.out, p->sku, strlen(p->sku));
        d11_wenc_u8(&C.conns[ci].c.out, (uint8_t)shadow);
        d11_frame_end(&C.conns[ci].c.out, start);
        l->reclaim_mask |= 1ULL << c;
        C.n_reclaims++;
    }
}

static void handle_grant(int ci, const d11_frame *f)
{
    d11_fault_hit fh = d11_fault(D11_FP_CENTER_GRANT);
    if (fh.action == D11_FA_DROP) return; /* chaos: a lost grant; the cell asks again */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000);
    d11_msg_inv m;
    if (d11_msg_inv_dec(f->payload, f->payload_len, &m) < 0 || m.cell >= C.ncells) {
        reply_err(ci, &f->hdr, 400, "bad_request", "malformed grant");
        return;
    }
    size_t idx;
    product *p = product_find(m.sku.p, m.sku.n, &idx);
    int shadow = m.shadow;
    if (!p) {
        send_grant_reply(ci, C.conns[ci].gen, &f->hdr, NULL, 0, 0, false);
        return;
    }
    ledger *l = &p->l[shadow];
    if (l->cells[m.cell].sold != m.sold) {
        l->cells[m.cell].sold = m.sold;
        mark_dirty(idx);
    }
    if (m.qty == 0) { /* a catalog lookup only */
        send_grant_reply(ci, C.conns[ci].gen, &f->hdr, p, shadow, m.cell, false);
        return;
    }
    if (l->free >= m.qty && l->npend == 0) {
        do_grant(l, m.cell, grant_size(l, m.qty));
        mark_dirty(idx);
        send_grant_reply(ci, C.conns[ci].gen, &f->hdr, p, shadow, m.cell, false);
        return;
    }
    /* Park it and reclaim unsold units from the other cells. */
    if (l->npend == l->cappend) {
        l->cappend = l->cappend ? l->cappend * 2 : 8;
        l->pend = xrealloc(l->pend, l->cappend * sizeof *l->pend);
    }
    l->pend[l->npend++] = (pending_grant){.conn = ci, .gen = C.conns[ci].gen, .hdr = f->hdr, .cell = m.cell, .want = m.qty};
    start_reclaim(p, shadow, m.cell);
    if (!l->reclaim_mask) grant_try_pending(idx, shadow, true); /* nobody to ask: answer now */
    else waiting_add(idx);
}

static void handle_return(int ci, const d11_frame *f)
{
    d11_msg_inv m;
    if (d11_msg_inv_dec(f->payload, f->payload_len, &m) < 0 || m.cell >= C.ncells) {
        reply_err(ci, &f->hdr, 400, "bad_request", "malformed return");
        return;
    }
    size_t idx;
    product *p = product_find(m.sku.p, m.sku.n, &idx);
    if (!p) {
        reply_err(ci, &f->hdr, 404, "not_found", "no such product");
        return;
    }
    ledger *l = &p->l[m.shadow];
    cell_ledger *cl = &l->cells[m.cell];
    if (m.qty > cl->granted) {
        /* A cell can never have returned more than it was granted: its state is corrupt. */
        d11_error("cell %u returned %llu of %s but was granted %llu", m.cell, (unsigned long long)m.qty,
                  p->sku, (unsigned long long)cl->granted);
        reply_err(ci, &f->hdr, 409, "ledger_mismatch", "returned more than granted");
        return;
    }
    if (m.qty > cl->returned) {
        l->free += m.qty - cl->returned;
        cl->returned = m.qty;
        C.n_returns++;
    }
    cl->sold = m.sold;
    ledger_check(l);
    l->reclaim_mask &= ~(1ULL << m.cell);
    mark_dirty(idx);
    reply(ci, &f->hdr, 200, NULL, "", 0);
    if (l->npend) grant_try_pending(idx, m.shadow, l->reclaim_mask == 0);
}

static void handle_report(int ci, const d11_frame *f)
{
    d11_wdec d;
    d11_wdec_init(&d, f->payload, f->payload_len);
    uint16_t cell = d11_wdec_u16(&d);
    uint32_t n = d11_wdec_u32(&d);
    if (d.err || cell >= C.ncells) goto bad;
    for (uint32_t i = 0; i < n; i++) {
        size_t skun;
        const char *sku = d11_wdec_str(&d, &skun);
        uint8_t shadow = d11_wdec_u8(&d);
        uint64_t sold = d11_wdec_u64(&d);
        if (d.err || shadow > 1) goto bad;
        size_t idx;
        product *p = product_find(sku, skun, &idx);
        if (p && p->l[shadow].cells[cell].sold != sold) {
            p->l[shadow].cells[cell].sold = sold;
            mark_dirty(idx);
        }
    }
    if (!d11_wdec_done(&d)) goto bad;
    reply(ci, &f->hdr, 200, NULL, "", 0);
    return;
bad:
    reply_err(ci, &f->hdr, 400, "bad_request", "malformed report");
}

static void handle_hello(int ci, const d11_frame *f)
{
    d11_wdec d;
    d11_wdec_init(&d, f->payload, f->payload_len);
    uint16_t cell = d11_wdec_u16(&d);
    if (!d11_wdec_done(&d) || cell >= C.ncells) {
        reply_err(ci, &f->hdr, 400, "bad_request", "malformed hello");
        return;
    }
    C.conns[ci].cell = cell;
    C.cell_conn[cell] = ci;
    d11_buf *o = &C.conns[ci].c.out;
    d11_frame_hdr rh = f->hdr;
    rh.flags = D11_WF_REPLY;
    rh.status = 200;
    size_t start = d11_frame_begin(o, &rh);
    size_t count_at = o->len;
    d11_wenc_u32(o, 0);
    uint32_t n = 0;
    for (size_t i = 0; i < C.nproducts; i++) {
        product *p = C.products[i];
        for (int s = 0; s < 2; s++) {
            cell_ledger *cl = &p->l[s].cells[cell];
            if (!cl->granted) continue;
            d11_wenc_str(o, p->sku, strlen(p->sku));
            d11_wenc_u8(o, (uint8_t)s);
            d11_wenc_u64(o, p->price_cents);
            d11_wenc_u64(o, cl->granted);
            d11_wenc_u64(o, cl->returned);
            n++;
        }
    }
    for (int i = 0; i < 4; i++) o->data[count_at + (size_t)i] = (char)(n >> (8 * i));
    d11_frame_end(o, start);
    d11_info("cell %u connected (%u ledger entries)", cell, n);
}

static void handle_frame(int ci, const d11_frame *f)
{
    if (f->hdr.flags & D11_WF_REPLY) return; /* cells never expect anything back from our pushes */
    switch (f->hdr.type) {
    case D11_MSG_PRODUCT_CREATE: handle_product_create(ci, f); break;
    case D11_MSG_PRODUCT_GET: handle_product_get(ci, f, false); break;
    case D11_MSG_PRODUCT_RESTOCK: handle_product_get(ci, f, true); break;
    case D11_MSG_LEDGER_GET: handle_ledger_get(ci, f); break;
    case D11_MSG_ROUTING_GET: {
        d11_frame_hdr rh = f->hdr;
        rh.flags = D11_WF_REPLY;
        rh.status = 200;
        size_t start = d11_frame_begin(&C.conns[ci].c.out, &rh);
        d11_routing_enc(&C.conns[ci].c.out, &C.routing);
        d11_frame_end(&C.conns[ci].c.out, start);
        break;
    }
    case D11_MSG_CELL_HELLO: handle_hello(ci, f); break;
    case D11_MSG_GRANT: handle_grant(ci, f); break;
    case D11_MSG_RETURN: handle_return(ci, f); break;
    case D11_MSG_REPORT: handle_report(ci, f); break;
    case D11_MSG_PING: reply(ci, &f->hdr, 200, NULL, "center", 6); break;
    case D11_MSG_STATS:
        d11_buf_reset(&scratch);
        d11_buf_printf(&scratch,
                       "{\"process\":\"center\",\"pid\":%d,\"products\":%zu,\"cells\":%d,\"routing_version\":%u,"
                       "\"grants\":%llu,\"returns\":%llu,\"reclaims\":%llu,\"commits\":%llu}",
                       (int)getpid(), C.nproducts, C.ncells, C.routing.version, (unsigned long long)C.n_grants,
                       (unsigned long long)C.n_returns, (unsigned long long)C.n_reclaims,
                       (unsigned long long)C.n_commits);
        reply(ci, &f->hdr, 200, NULL, scratch.data, scratch.len);
        break;
    default: reply_err(ci, &f->hdr, 400, "bad_request", "unknown message type");
    }
}

/* ---- loop ---- */

static void conn_close(int ci)
{
    cconn *cc = &C.conns[ci];
    if (!cc->open) return;
    if (cc->cell >= 0 && C.cell_conn[cc->cell] == ci) {
        C.cell_conn[cc->cell] = -1;
        d11_warn("cell %d disconnected", cc->cell);
    }
    epoll_ctl(C.epfd, EPOLL_CTL_DEL, cc->c.fd, NULL);
    d11_conn_release(&cc->c);
    cc->open = false;
    cc->gen++;
}

static void accept_all(void)
{
    for (;;) {
        int fd = d11_accept(C.lfd);
        if (fd < 0) return;
        int ci = -1;
        for (int i = 0; i < CENTER_CONNS_MAX; i++)
            if (!C.conns[i].open) {
                ci = i;
                break;
            }
        if (ci < 0) {
            d11_warn("center: connection table full (%d), refusing", CENTER_CONNS_MAX);
            close(fd);
            continue;
        }
        cconn *cc = &C.conns[ci];
        d11_conn_init(&cc->c, fd);
        cc->open = true;
        cc->cell = -1;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)ci};
        if (epoll_ctl(C.epfd, EPOLL_CTL_ADD, fd, &ev) == -1) conn_close(ci);
    }
}

static void flush_all(void)
{
    for (int i = 0; i < CENTER_CONNS_MAX; i++) {
        cconn *cc = &C.conns[i];
        if (!cc->open || (d11_conn_pending(&cc->c) == 0 && !cc->c.want_write)) continue;
        int rc = d11_conn_flush(&cc->c);
        if (rc < 0) {
            conn_close(i);
            continue;
        }
        bool want = rc == 1;
        if (want != cc->c.want_write) {
            struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
            epoll_ctl(C.epfd, EPOLL_CTL_MOD, cc->c.fd, &ev);
            cc->c.want_write = want;
        }
    }
}

static void check_reclaim_deadlines(void)
{
    int64_t now = d11_mono_ms();
    size_t keep = 0;
    for (size_t i = 0; i < C.nwaiting; i++) {
        size_t idx = C.waiting[i];
        product *p = C.products[idx];
        bool still = false;
        for (int s = 0; s < 2; s++) {
            ledger *l = &p->l[s];
            if (!l->npend) continue;
            if (now >= l->reclaim_deadline_ms) {
                l->reclaim_mask = 0;
                grant_try_pending(idx, s, true);
            }
            if (l->npend) still = true;
        }
        if (still) C.waiting[keep++] = idx;
        else p->waiting = false;
    }
    C.nwaiting = keep;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 center [--data DIR] [--cells N] [--durability sync|async|none]\n"
               "                  [--grant-chunk-max N] [--log-level LEVEL]\n\n"
               "Runs the center: catalog, inventory ledger with per-cell allotments, routing.\n"
               "Listens on DIR/center.sock (d11 wire protocol). Normally started by `d11 up`.\n\n"
               "  --data DIR            data directory (default ./data); DIR/center.db is SQLite\n"
               "  --cells N             number of cells of this deployment (fixed at first start)\n"
               "  --durability MODE     sync (default), async or none — see docs/storage.md\n"
               "  --grant-chunk-max N   largest allotment handed to a cell at once (default 1000)\n"
               "  --log-level LEVEL     debug, info (default), warn, error\n");
}

int d11_center_main(int argc, char **argv)
{
    char err[256];
    d11_config_defaults(&C.cfg);
    if (d11_config_from_args(&C.cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 center: %s\n", err);
        return 2;
    }
    if (C.cfg.help) {
        usage(stdout);
        return 0;
    }
    d11_log_init("center", C.cfg.log_level);
    d11_fault_init_from_env("center");
    C.ncells = C.cfg.cells;
    for (int i = 0; i < D11_CELLS_MAX; i++) C.cell_conn[i] = -1;
    d11_smap_init(&C.by_sku, 1024);
    d11_buf_init(&scratch, 4096);
    if (mkdir(C.cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 center: cannot create %s: %s\n", C.cfg.data_dir, strerror(errno));
        return 1;
    }
    char path[1200];
    d11_config_path(&C.cfg, "center.db", path, sizeof path);
    if (d11_sqlite_open(path, C.cfg.durability, &C.db) < 0 || d11_sqlite_exec(C.db, SCHEMA) < 0) {
        fprintf(stderr, "d11 center: cannot open %s\n", path);
        return 1;
    }
    if (load_state() < 0) return 1;
    C.st_product = d11_sqlite_prepare(C.db, "INSERT INTO products VALUES(?,?,?,?,?,?)");
    C.st_stock = d11_sqlite_prepare(C.db, "INSERT OR REPLACE INTO center_stock VALUES(?,?,?,?)");
    C.st_ledger = d11_sqlite_prepare(C.db, "INSERT OR REPLACE INTO ledger VALUES(?,?,?,?,?,?)");

    d11_config_path(&C.cfg, "center.sock", path, sizeof path);
    C.lfd = d11_listen_unix(path);
    if (C.lfd < 0) {
        fprintf(stderr, "d11 center: cannot listen on %s: %s\n", path, d11_strerror(C.lfd));
        return 1;
    }
    C.epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(C.epfd, EPOLL_CTL_ADD, C.lfd, &lev);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d11_info("center listening on %s", path);

    struct epoll_event evs[256];
    while (!C.stop) {
        int n = epoll_wait(C.epfd, evs, 256, 50);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == UINT32_MAX) {
                accept_all();
                continue;
            }
            cconn *cc = &C.conns[id];
            if (!cc->open) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                int rc = d11_conn_read(&cc->c);
                d11_frame f;
                int fr;
                while ((fr = d11_conn_frame(&cc->c, &f)) == 1) handle_frame((int)id, &f);
                d11_conn_compact(&cc->c);
                if (fr < 0 || rc < 0) conn_close((int)id);
            }
        }
        check_reclaim_deadlines();
        commit_dirty(); /* durable before any reply leaves */
        flush_all();
    }
    commit_dirty();
    flush_all();
    d11_info("center stopped");
    d11_sqlite_close(C.db);
    return 0;
}
