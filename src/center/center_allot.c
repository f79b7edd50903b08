/*
 * center_allot.c — the cell-facing half of the center machine: allotments.
 *
 *   HELLO   a cell (re)connects: it becomes reachable for RECLAIM, and learns its
 *           cumulative granted / returned of every ledger (then it sends a full REPORT)
 *   GRANT   a cell asks for `want` more units; granted at once (grant size: inventory.h)
 *           or parked when free cannot cover it or others are parked before it (FIFO)
 *   RETURN  a cell hands units back (cumulative, idempotent), answering a RECLAIM or not
 *   REPORT  a cell's latest committed sold counts (replace, never max())
 *   RECLAIM pushed to the other cells that hold unsold units when a grant is parked; the
 *           round ends when every asked cell returned or reclaim_ms passed (center_tick),
 *           then parked grants are granted or answered sold_out
 * Every change is marked dirty (center__touch) and every answer is held: the round's
 * commit comes first (center.h). Invariants are asserted by inventory.c on each change.
 */
#include <stdio.h>
#include <string.h>

#include "../core/limits.h"
#include "../core/util.h"
#include "center_int.h"

void center__waiting_add(center *c, size_t idx)
{
    center_product *p = c->cat.v[idx];
    if (p->listed_waiting) return;
    p->listed_waiting = true;
    center__push_index(&c->waiting, &c->nwaiting, &c->capwaiting, idx);
}

/* ---- answers ---- */

static void send_grant_reply(center *c, uint32_t peer, const d11_frame_hdr *h, const center_product *p, int shadow,
                             uint16_t cell, bool sold_out)
{
    d11_msg_grant_reply r = {.exists = p ? 1 : 0,
                             .price_cents = p ? p->price_cents : 0,
                             .granted_cum = p ? p->st[shadow].inv.cells[cell].granted : 0,
                             .sold_out = sold_out};
    d11_frame_hdr rh = *h;
    rh.flags = (uint16_t)((h->flags & D11_WF_STRESS) | D11_WF_REPLY);
    rh.status = 200;
    rh.deadline_ms = 0;
    d11_buf *o = center__out_open(c, peer);
    size_t start = d11_frame_begin(o, &rh);
    d11_msg_grant_reply_enc(o, &r);
    d11_frame_end(o, start);
    center__out_close(c);
}

/* RECLAIM push (d11_msg_reclaim: sku, shadow). The cell answers with a RETURN. */
static void send_reclaim(center *c, uint32_t peer, const center_product *p, int shadow)
{
    d11_frame_hdr h = {.type = D11_MSG_RECLAIM, .flags = (uint16_t)(D11_WF_PUSH | (shadow ? D11_WF_STRESS : 0))};
    d11_buf *o = center__out_open(c, peer);
    size_t start = d11_frame_begin(o, &h);
    d11_msg_reclaim_enc(o, &(d11_msg_reclaim){.sku = {p->sku, p->skun}, .shadow = (uint8_t)shadow});
    d11_frame_end(o, start);
    center__out_close(c);
}

/* ---- grants and reclaim ---- */

static void grant(center *c, size_t idx, int shadow, uint16_t cell, uint64_t want)
{
    center_inv *l = &c->cat.v[idx]->st[shadow].inv;
    uint64_t n = center_inv_grant_size(l->free, want, l->ncells, (uint64_t)c->o.grant_chunk_max);
    D11_ASSERT(n >= want);
    center_inv_grant(l, cell, n);
    center__touch(c, idx, shadow, cell, true, false);
    c->n_grants++;
}

/* Answer the parked grants of (idx, shadow) that can be served now, in arrival order;
 * when `final`, answer the rest with sold_out. */
void center__pending_try(center *c, size_t idx, int shadow, bool final)
{
    center_product *p = c->cat.v[idx];
    center_stock *s = &p->st[shadow];
    uint32_t keep = 0;
    for (uint32_t i = 0; i < s->npend; i++) {
        center_pending g = s->pend[i];
        switch (center_inv_pend_verdict(s->inv.free, g.want, final)) {
        case CENTER_PEND_GRANT:
            grant(c, idx, shadow, g.cell, g.want);
            send_grant_reply(c, g.peer, &g.hdr, p, shadow, g.cell, false);
            break;
        case CENTER_PEND_SOLD_OUT: send_grant_reply(c, g.peer, &g.hdr, p, shadow, g.cell, true); break;
        case CENTER_PEND_WAIT: s->pend[keep++] = g; break;
        }
    }
    s->npend = keep;
    D11_ASSERT(!final || s->npend == 0);
    /* Nothing parked: the round is over, whoever has not answered yet. The next park
     * starts a new round with its own deadline (and may ask the same cells again). */
    if (s->npend == 0) s->reclaim_asked = 0;
}

/* Push RECLAIM to the cells that may hold unsold units of (idx, shadow); a new round
 * starts its deadline. */
static void start_reclaim(center *c, size_t idx, int shadow, uint16_t except)
{
    center_product *p = c->cat.v[idx];
    center_stock *s = &p->st[shadow];
    if (!s->reclaim_asked) s->reclaim_deadline_ms = d11_clock_mono(c->h.clock) + c->o.reclaim_ms;
    uint64_t ask = center_inv_reclaim_targets(&s->inv, except, s->reclaim_asked, c->cell_up);
    for (unsigned cell = 0; cell < c->cat.ncells; cell++) {
        if (!(ask & (1ULL << cell))) continue;
        send_reclaim(c, c->cell_peer[cell], p, shadow);
        c->n_reclaims++;
    }
    s->reclaim_asked |= ask;
}

/* ---- requests ---- */

/* Record a cell's reported committed sold count of (idx, shadow). */
static void set_sold(center *c, size_t idx, int shadow, uint16_t cell, uint64_t sold)
{
    if (center_inv_set_sold(&c->cat.v[idx]->st[shadow].inv, cell, sold)) center__touch(c, idx, shadow, cell, false, false);
}

void center__handle_grant(center *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_inv m;
    if (d11_msg_inv_dec(f->payload, f->payload_len, &m) < 0 || m.cell >= c->cat.ncells) {
        center__reply_err(c, peer, &f->hdr, 400, "bad_request", "malformed grant");
        return;
    }
    size_t idx;
    center_product *p = center_catalog_find(&c->cat, m.sku.p, m.sku.n, &idx);
    int shadow = m.shadow;
    if (!p) {
        send_grant_reply(c, peer, &f->hdr, NULL, 0, 0, false);
        return;
    }
    center_stock *s = &p->st[shadow];
    set_sold(c, idx, shadow, m.cell, m.sold);
    if (m.qty == 0) { /* a catalog lookup only */
        send_grant_reply(c, peer, &f->hdr, p, shadow, m.cell, false);
        return;
    }
    if (center_inv_grant_now(&s->inv, m.qty, s->npend)) {
        grant(c, idx, shadow, m.cell, m.qty);
        send_grant_reply(c, peer, &f->hdr, p, shadow, m.cell, false);
        return;
    }
    /* Park it and reclaim unsold units from the other cells. */
    center_pending pg = {.peer = peer, .cell = m.cell, .want = m.qty, .hdr = f->hdr};
    if (center_stock_park(s, &pg) < 0) {
        d11_warn("center: %u grant requests parked on %s already; refusing one from cell %u", s->npend, p->sku,
                 m.cell);
        center__reply_err(c, peer, &f->hdr, 503, "busy", "too many grant requests parked on this SKU");
        return;
    }
    start_reclaim(c, idx, shadow, m.cell);
    if (!s->reclaim_asked) center__pending_try(c, idx, shadow, true); /* nobody to ask: answer now */
    else center__waiting_add(c, idx);
}

void center__handle_return(center *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_inv m;
    if (d11_msg_inv_dec(f->payload, f->payload_len, &m) < 0 || m.cell >= c->cat.ncells) {
        center__reply_err(c, peer, &f->hdr, 400, "bad_request", "malformed return");
        return;
    }
    size_t idx;
    center_product *p = center_catalog_find(&c->cat, m.sku.p, m.sku.n, &idx);
    if (!p) {
        center__reply_err(c, peer, &f->hdr, 404, "not_found", "no such product");
        return;
    }
    center_stock *s = &p->st[m.shadow];
    int64_t back = center_inv_return(&s->inv, m.cell, m.qty);
    if (back < 0) {
        /* A cell can never have returned more than it was granted: its state is corrupt. */
        d11_error("cell %u returned %llu of %s but was granted %llu", m.cell, (unsigned long long)m.qty, p->sku,
                  (unsigned long long)s->inv.cells[m.cell].granted);
        center__reply_err(c, peer, &f->hdr, 409, "ledger_mismatch", "returned more than granted");
        return;
    }
    if (back > 0) {
        center__touch(c, idx, m.shadow, m.cell, true, false);
        c->n_returns++;
    }
    set_sold(c, idx, m.shadow, m.cell, m.sold);
    s->reclaim_asked &= ~(1ULL << m.cell);
    center__reply(c, peer, &f->hdr, 200, NULL, "", 0);
    if (s->npend) center__pending_try(c, idx, m.shadow, s->reclaim_asked == 0);
}

/* REPORT (d11_msg_report: cell, list of (sku, shadow, sold)). Validated whole before
 * anything is applied, so a malformed report changes nothing. Unknown SKUs are skipped
 * (a product is never deleted here; it can only be a stale request). */
void center__handle_report(center *c, uint32_t peer, const d11_frame *f)
{
    d11_wire_iter it;
    d11_msg_report m;
    d11_msg_report_entry x;
    int rc;
    if (d11_msg_report_dec_begin(&it, f->payload, f->payload_len, &m) < 0 || m.cell >= c->cat.ncells) goto bad;
    while ((rc = d11_msg_report_dec_next(&it, &x)) == 1) continue; /* validate */
    if (rc < 0) goto bad;
    d11_msg_report_dec_begin(&it, f->payload, f->payload_len, &m);
    while (d11_msg_report_dec_next(&it, &x) == 1) {
        size_t idx;
        if (center_catalog_find(&c->cat, x.sku.p, x.sku.n, &idx)) set_sold(c, idx, x.shadow, m.cell, x.sold);
    }
    center__reply(c, peer, &f->hdr, 200, NULL, "", 0);
    return;
bad:
    center__reply_err(c, peer, &f->hdr, 400, "bad_request", "malformed report");
}

/* HELLO (d11_msg_hello: cell). Reply (d11_msg_hello_reply): one entry (sku, shadow,
 * price, granted_cum, returned_cum) for every ledger where the cell was ever granted
 * something. The reply is one list of at most D11_WIRE_LIST_MAX entries: a cell holding
 * more ledgers cannot sync (500 too_big, logged) until HELLO replies are paged. */
void center__handle_hello(center *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_hello m;
    if (d11_msg_hello_dec(f->payload, f->payload_len, &m) < 0 || m.cell >= c->cat.ncells) {
        center__reply_err(c, peer, &f->hdr, 400, "bad_request", "malformed hello");
        return;
    }
    uint16_t cell = m.cell;
    size_t n = 0;
    for (size_t i = 0; i < c->cat.n; i++)
        for (int s = 0; s < 2; s++) n += c->cat.v[i]->st[s].inv.cells[cell].granted != 0;
    if (n > D11_WIRE_LIST_MAX) {
        d11_error("center: cell %u holds %zu ledgers, over the HELLO reply limit D11_WIRE_LIST_MAX (%d)", cell, n,
                  D11_WIRE_LIST_MAX);
        center__reply_err(c, peer, &f->hdr, 500, "too_big", "HELLO reply over its list limit");
        return;
    }
    for (unsigned other = 0; other < c->cat.ncells; other++) /* one cell per peer */
        if ((c->cell_up & (1ULL << other)) && c->cell_peer[other] == peer) c->cell_up &= ~(1ULL << other);
    c->cell_peer[cell] = peer;
    c->cell_up |= 1ULL << cell;
    d11_frame_hdr rh = f->hdr;
    rh.flags = D11_WF_REPLY;
    rh.status = 200;
    rh.deadline_ms = 0;
    d11_buf *o = center__out_open(c, peer);
    size_t start = d11_frame_begin(o, &rh);
    d11_wire_list_enc e;
    d11_msg_hello_reply_enc_begin(&e, o, &(d11_msg_hello_reply){0});
    for (size_t i = 0; i < c->cat.n; i++) {
        const center_product *p = c->cat.v[i];
        for (int s = 0; s < 2; s++) {
            const center_inv_cell *cl = &p->st[s].inv.cells[cell];
            if (!cl->granted) continue;
            d11_msg_hello_reply_entry x = {.sku = {p->sku, p->skun},
                                           .shadow = (uint8_t)s,
                                           .price_cents = p->price_cents,
                                           .granted_cum = cl->granted,
                                           .returned_cum = cl->returned};
            int rc = d11_msg_hello_reply_enc_add(&e, &x);
            D11_ASSERT(rc == 0); /* counted above */
        }
    }
    uint32_t sent_n = d11_msg_hello_reply_enc_end(&e);
    D11_ASSERT(sent_n == n);
    d11_frame_end(o, start);
    center__out_close(c);
    d11_info("cell %u connected (%u ledger entries)", cell, sent_n);
}

/* ---- time ---- */

void center_tick(center *c)
{
    D11_ASSERT(!c->flushing);
    if (c->failed) return;
    int64_t now = d11_clock_mono(c->h.clock);
    size_t keep = 0;
    for (size_t i = 0; i < c->nwaiting; i++) {
        size_t idx = c->waiting[i];
        center_product *p = c->cat.v[idx];
        bool still = false;
        for (int s = 0; s < 2; s++) {
            center_stock *st = &p->st[s];
            if (!st->npend) continue;
            if (now >= st->reclaim_deadline_ms) {
                st->reclaim_asked = 0; /* the round is over: whoever did not answer is not waited for */
                center__pending_try(c, idx, s, true);
            }
            if (st->npend) still = true;
        }
        if (still) c->waiting[keep++] = idx;
        else p->listed_waiting = false;
    }
    c->nwaiting = keep;
}
