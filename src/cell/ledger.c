/*
 * ledger.c — the cell's allotments and its link to the center.
 *
 * One ledger per (sku, shadow): cumulative `granted` (from the center) and `returned` (to
 * it), and `sold` = units held by pending + paid orders; available = granted - returned
 * - sold. Invariant, asserted wherever it changes: returned + sold <= granted.
 *
 * Center protocol (every quantity cumulative, so every message is idempotent):
 *   - GRANT(want, sold_committed): when an order needs more than is available. The reply
 *     carries the center's cumulative `granted`; the cell keeps the maximum. A grant
 *     unanswered for CELL_GRANT_TIMEOUT_MS is asked again.
 *   - RECLAIM push: move everything available to `returned`, commit, then RETURN
 *     (batch.c sends it after the commit; always answered, even with nothing to give).
 *   - HELLO on every (re)connection; its reply says what the center has committed for
 *     this cell: the cell adopts a larger `granted`, re-sends a RETURN the center missed,
 *     and then REPORTs every ledger so the center's view of `sold` is the stored truth.
 *   - REPORT every CELL_REPORT_MS: ledgers whose COMMITTED sold changed.
 */
#include "cell_int.h"

#include <stdio.h>
#include <string.h>

uint32_t d11__ledger_get(cell *c, const char *sku, size_t n, int shadow, bool create)
{
    char key[D11_SKU_BYTES_MAX + 1];
    D11_ASSERT(n >= 1 && n <= D11_SKU_BYTES_MAX && (shadow == 0 || shadow == 1));
    key[0] = (char)shadow;
    memcpy(key + 1, sku, n);
    uint64_t v;
    if (d11_smap_get(&c->ledger_by_key, key, n + 1, &v)) return (uint32_t)v;
    if (!create) return NONE32;
    int64_t li = d11_table_push(&c->ledgers);
    if (li < 0) return NONE32; /* D11_CELL_SKUS_MAX: the caller answers 503 */
    ledger *l = LG(c, (uint32_t)li);
    l->skun = (uint8_t)n;
    l->shadow = (uint8_t)shadow;
    memcpy(l->sku, sku, n);
    d11_smap_put(&c->ledger_by_key, key, n + 1, (uint64_t)li);
    return (uint32_t)li;
}

uint64_t d11__ledger_avail(const ledger *l)
{
    D11_ASSERT(l->returned + l->sold <= l->granted);
    return l->granted - l->returned - l->sold;
}

void d11__ledger_touch(cell *c, uint32_t li)
{
    ledger *l = LG(c, li);
    D11_ASSERT(l->returned + l->sold <= l->granted);
    if (l->dirty) return;
    l->dirty = true;
    D11_ASSERT(c->ndirty < c->ledgers.max);
    c->dirty[c->ndirty++] = li;
}

static void send_inv(cell *c, uint16_t type, uint32_t li, uint64_t qty)
{
    const ledger *l = LG(c, li);
    d11_frame_hdr h = {.type = type, .req_id = ((uint64_t)type << 40) | li, .flags = l->shadow ? D11_WF_STRESS : 0};
    d11_buf_reset(&c->frame);
    size_t start = d11_frame_begin(&c->frame, &h);
    d11_msg_inv m = {.cell = (uint16_t)c->o.id, .sku = {l->sku, l->skun}, .shadow = l->shadow, .qty = qty,
                     .sold = l->sold_committed};
    d11_msg_inv_enc(&c->frame, &m);
    d11_frame_end(&c->frame, start);
    c->h.send_center(c->h.data, (const uint8_t *)c->frame.data, c->frame.len);
}

void d11__request_grant(cell *c, uint32_t li, uint64_t want)
{
    ledger *l = LG(c, li);
    if (l->grant_inflight || !c->center_up) return;
    l->grant_inflight = true;
    l->want_inflight = want;
    l->grant_sent_ms = cell_mono(c);
    send_inv(c, D11_MSG_GRANT, li, want);
}

void cell_center_up(cell *c)
{
    D11_ASSERT(!c->center_up);
    c->center_up = true;
    c->hello_done = false;
    d11_frame_hdr h = {.type = D11_MSG_CELL_HELLO, .req_id = 1};
    d11_buf_reset(&c->frame);
    size_t start = d11_frame_begin(&c->frame, &h);
    d11_msg_hello m = {.cell = (uint16_t)c->o.id};
    d11_msg_hello_enc(&c->frame, &m);
    d11_frame_end(&c->frame, start);
    c->h.send_center(c->h.data, (const uint8_t *)c->frame.data, c->frame.len);
}

void cell_center_down(cell *c)
{
    if (!c->center_up) return;
    c->center_up = c->hello_done = false;
    for (uint32_t i = 0; i < c->ledgers.n; i++) LG(c, i)->grant_inflight = false;
    d11_warn("cell %d lost the center", c->o.id);
    d11__retry_parked(c); /* those needing the center now get 503 */
}

/* Reports: the COMMITTED sold of every ledger that changed (all = every known ledger). */
void d11__send_reports(cell *c, bool all)
{
    if (!c->center_up || !c->hello_done) return;
    if (all)
        for (uint32_t i = 0; i < c->ledgers.n; i++) LG(c, i)->report_dirty = LG(c, i)->known == 1;
    /* As many frames as it takes: a frame holds at most D11_WIRE_LIST_MAX entries. */
    uint32_t i = 0;
    for (;;) {
        while (i < c->ledgers.n && !(LG(c, i)->known == 1 && LG(c, i)->report_dirty)) i++;
        if (i == c->ledgers.n) break;
        d11_frame_hdr h = {.type = D11_MSG_REPORT, .req_id = 2};
        d11_buf_reset(&c->frame);
        size_t start = d11_frame_begin(&c->frame, &h);
        d11_wire_list_enc e;
        d11_msg_report m = {.cell = (uint16_t)c->o.id};
        d11_msg_report_enc_begin(&e, &c->frame, &m);
        for (; i < c->ledgers.n; i++) {
            ledger *l = LG(c, i);
            if (l->known != 1 || !l->report_dirty) continue;
            d11_msg_report_entry x = {{l->sku, l->skun}, l->shadow, l->sold_committed};
            if (d11_msg_report_enc_add(&e, &x) < 0) break; /* frame full: the next frame goes on from i */
            l->report_dirty = false;
        }
        d11_msg_report_enc_end(&e);
        d11_frame_end(&c->frame, start);
        c->h.send_center(c->h.data, (const uint8_t *)c->frame.data, c->frame.len);
    }
    c->last_report_ms = cell_mono(c);
}

void d11__ledger_tick(cell *c)
{
    int64_t now = cell_mono(c);
    if (c->parked.n) {
        for (uint32_t i = 0; i < c->ledgers.n; i++) {
            ledger *l = LG(c, i);
            if (l->grant_inflight && now - l->grant_sent_ms >= CELL_GRANT_TIMEOUT_MS) {
                /* Lost (or very slow): ask again. A late reply is harmless: counts are cumulative. */
                d11_warn("cell %d: grant for %.*s unanswered for %d ms; asking again", c->o.id, (int)l->skun, l->sku,
                         CELL_GRANT_TIMEOUT_MS);
                l->grant_inflight = false;
            }
        }
    }
    if (now - c->last_report_ms >= CELL_REPORT_MS) d11__send_reports(c, false);
}

static void on_reclaim(cell *c, const d11_frame *f)
{
    d11_msg_reclaim m;
    if (d11_msg_reclaim_dec(f->payload, f->payload_len, &m) < 0) return;
    uint32_t li = d11__ledger_get(c, m.sku.p, m.sku.n, m.shadow, true);
    if (li == NONE32) return; /* ledger table full: the center's reclaim round times out */
    ledger *l = LG(c, li);
    uint64_t avail = d11__ledger_avail(l);
    if (avail) {
        l->returned += avail;
        d11__ledger_touch(c, li);
    }
    D11_ASSERT(d11__ledger_avail(l) == 0); /* everything unsold went back */
    d11__queue_return(c, li); /* always answered, after the commit of the new `returned` */
}

static void on_grant_reply(cell *c, const d11_frame *f)
{
    uint32_t li = (uint32_t)(f->hdr.req_id & 0xffffffffu);
    if (li >= c->ledgers.n) return;
    ledger *l = LG(c, li);
    l->grant_inflight = false;
    d11_msg_grant_reply r;
    int64_t now = cell_mono(c);
    int64_t cache = c->o.soldout_cache_ms ? c->o.soldout_cache_ms : 1;
    if (f->hdr.status != 200 || d11_msg_grant_reply_dec(f->payload, f->payload_len, &r) < 0) {
        d11_warn("grant for %.*s failed with status %u", (int)l->skun, l->sku, f->hdr.status);
        l->soldout_until = now + c->o.soldout_cache_ms;
        l->soldout_min = 1;
    } else if (!r.exists) {
        l->known = 2;
        l->unknown_until = now + cache;
    } else {
        l->known = 1;
        l->price = r.price_cents;
        if (r.granted_cum > l->granted) {
            l->granted = r.granted_cum; /* cumulative: only ever grows */
            d11__ledger_touch(c, li);
        }
        D11_ASSERT(l->granted >= r.granted_cum && l->returned + l->sold <= l->granted);
        l->soldout_until = r.sold_out ? now + cache : 0;
        l->soldout_min = l->want_inflight ? l->want_inflight : 1;
    }
    d11__retry_parked(c);
}

static void on_hello_reply(cell *c, const d11_frame *f)
{
    d11_wire_iter it;
    d11_msg_hello_reply m;
    d11_msg_hello_reply_entry x;
    uint32_t n = 0;
    int rc = d11_msg_hello_reply_dec_begin(&it, f->payload, f->payload_len, &m);
    while (rc == 0 && (rc = d11_msg_hello_reply_dec_next(&it, &x)) == 1) {
        rc = 0;
        uint32_t li = d11__ledger_get(c, x.sku.p, x.sku.n, x.shadow, true);
        if (li == NONE32) break;
        n++;
        ledger *l = LG(c, li);
        l->known = 1;
        l->price = x.price_cents;
        if (x.granted_cum > l->granted) {
            l->granted = x.granted_cum;
            d11__ledger_touch(c, li);
        } else if (x.granted_cum < l->granted) {
            d11_error("center knows %llu granted of %.*s but cell has %llu: center lost data?",
                      (unsigned long long)x.granted_cum, (int)l->skun, l->sku, (unsigned long long)l->granted);
        }
        if (l->returned > x.returned_cum) {
            d11__queue_return(c, li); /* a return the center never heard of */
        } else if (l->returned < x.returned_cum) {
            d11_error("center has %llu returned of %.*s, cell %llu: cell lost data?", (unsigned long long)x.returned_cum,
                      (int)l->skun, l->sku, (unsigned long long)l->returned);
        }
    }
    if (rc < 0) d11_error("cell %d: malformed HELLO reply from the center", c->o.id);
    c->hello_done = true;
    d11_info("cell %d synced with center (%u ledger entries)", c->o.id, n);
    /* The center's `sold` of this cell may be stale (it or we crashed): tell it all. */
    d11__send_reports(c, true);
    d11__retry_parked(c);
}

void cell_on_center(cell *c, const d11_frame *f)
{
    if (!c->center_up) return;
    if (!(f->hdr.flags & D11_WF_REPLY)) {
        if (f->hdr.type == D11_MSG_RECLAIM) on_reclaim(c, f);
        return;
    }
    if (f->hdr.type == D11_MSG_GRANT) on_grant_reply(c, f);
    else if (f->hdr.type == D11_MSG_CELL_HELLO) on_hello_reply(c, f);
}

bool cell_ledger_view(const cell *c, const char *sku, size_t n, int shadow, uint64_t *granted, uint64_t *returned,
                      uint64_t *sold, uint64_t *sold_committed)
{
    char key[D11_SKU_BYTES_MAX + 1];
    if (n < 1 || n > D11_SKU_BYTES_MAX) return false;
    key[0] = (char)shadow;
    memcpy(key + 1, sku, n);
    uint64_t v;
    if (!d11_smap_get(&c->ledger_by_key, key, n + 1, &v)) return false;
    const ledger *l = &D11_TAB(&c->ledgers, const ledger)[v];
    *granted = l->granted;
    *returned = l->returned;
    *sold = l->sold;
    *sold_committed = l->sold_committed;
    return true;
}
