/*
 * center_events.c — the center's outbox: events queued by the product handlers and
 * committed with them, and the EVENTS_READ / EVENTS_PRUNE answers (center_events.h).
 *
 * Invariants: an event is encoded only into the commit that also carries the product rows
 * of its change (center_flush calls center__events_encode inside encode_dirty); ids are
 * ev_last + 1, + 2, ... in queue order, and ev_last advances only when that commit
 * succeeded (a failed commit stops the machine, so an id is never reused for another
 * event). The load yields the newest stored event, so ids continue after a restart.
 * Memory: evq and evbuf keep their capacity between rounds.
 * Thread: the center's loop thread.
 */
#include "center_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/limits.h"
#include "../core/util.h"
#include "center_int.h"

void center__event(center *c, const char *type, size_t idx, uint64_t qty, const d11_frame_hdr *h)
{
    D11_ASSERT(idx < c->cat.n && strlen(type) <= CENTER_EVENT_TYPE_BYTES_MAX);
    const center_product *p = c->cat.v[idx];
    if (c->nevq == c->capevq) {
        c->capevq = c->capevq ? c->capevq * 2 : 16;
        c->evq = realloc(c->evq, c->capevq * sizeof *c->evq);
        if (!c->evq) d11_fatal("center: out of memory");
    }
    if (!c->evbuf.cap) d11_buf_init(&c->evbuf, 4096);
    center_evq *e = &c->evq[c->nevq++];
    e->type = type;
    e->sku_off = c->evbuf.len;
    e->sku_n = p->skun;
    d11_buf_append(&c->evbuf, p->sku, p->skun);
    e->data_off = c->evbuf.len;
    center_product_render(&c->evbuf, p, 0); /* the real stock view after the change */
    if (qty) {
        c->evbuf.len--; /* reopen the object: ,"quantity":N} */
        d11_buf_printf(&c->evbuf, ",\"quantity\":%llu}", (unsigned long long)qty);
    }
    e->data_n = c->evbuf.len - e->data_off;
    /* title 200 B and category 64 B escaped at most 6x, a 64 B SKU, numbers: < 2048 */
    D11_ASSERT(e->data_n <= CENTER_EVENT_DATA_BYTES_MAX);
    e->trace[0] = 0;
    static const uint8_t zero[16];
    if (h && memcmp(h->trace_id, zero, 16) != 0) d11_hex(h->trace_id, 16, e->trace);
}

uint32_t center__events_encode(center *c, d11_buf *b, int64_t now_ms)
{
    uint32_t n = 0;
    for (size_t i = 0; i < c->nevq; i++) {
        const center_evq *e = &c->evq[i];
        center_op_event_enc(b, &(center_op_event){.event_id = c->ev_last + 1 + i,
                                                  .type = {e->type, strlen(e->type)},
                                                  .sku = {c->evbuf.data + e->sku_off, e->sku_n},
                                                  .trace_id = {e->trace, strlen(e->trace)},
                                                  .data = {c->evbuf.data + e->data_off, e->data_n},
                                                  .created_at = now_ms});
        n++;
    }
    if (c->ev_prune_req > c->ev_pruned) {
        center_op_event_prune_enc(b, c->ev_prune_req);
        n++;
    }
    return n;
}

void center__events_committed(center *c)
{
    c->ev_last += c->nevq;
    c->nevq = 0;
    d11_buf_reset(&c->evbuf);
    if (c->ev_prune_req > c->ev_pruned) c->ev_pruned = c->ev_prune_req;
}

void center__events_load(center *c, const center_op *op)
{
    if (op->type == CENTER_OP_EVENT && op->u.event.event_id > c->ev_last) c->ev_last = op->u.event.event_id;
    if (op->type == CENTER_OP_EVENT_PRUNE && op->u.prune_through > c->ev_pruned) {
        c->ev_pruned = op->u.prune_through;
        if (c->ev_pruned > c->ev_last) c->ev_last = c->ev_pruned; /* ids continue above the watermark */
    }
}

void center__events_free(center *c)
{
    free(c->evq);
    c->evq = NULL;
    c->nevq = c->capevq = 0;
    if (c->evbuf.cap) d11_buf_free(&c->evbuf);
}

void center_events_prune(center *c, uint64_t upto)
{
    if (upto > c->ev_prune_req && upto <= c->ev_last) c->ev_prune_req = upto;
}

uint64_t center_events_last(const center *c) { return c->ev_last; }

/* ---- the read side (the process) ---- */

static void render(d11_buf *b, const d11_center_event *e)
{
    d11_buf_printf(b, "{\"id\":\"center-%llu\",\"type\":", (unsigned long long)e->event_id);
    d11_buf_json_str(b, e->type, e->type_n);
    d11_buf_puts(b, ",\"sku\":");
    d11_buf_json_str(b, e->sku, e->sku_n);
    d11_buf_printf(b, ",\"order_id\":null,\"user_id\":null,\"cell\":\"center\",\"at\":%lld,\"trace_id\":",
                   (long long)e->created_at);
    if (e->trace_id_n == 32) d11_buf_json_str(b, e->trace_id, e->trace_id_n);
    else d11_buf_puts(b, "null");
    d11_buf_puts(b, ",\"stress\":false,\"data\":");
    if (e->data_n >= 2 && e->data[0] == '{') d11_buf_append(b, e->data, e->data_n);
    else d11_buf_puts(b, "{}");
    d11_buf_puts(b, "}");
}

static int on_event(void *ctx, const d11_center_event *e)
{
    d11_buf *body = ctx;
    if (e->data_n + e->type_n + e->sku_n + 300 > CENTER_EVENT_JSON_BYTES_MAX) return D11_ETOOBIG; /* stored rows are checked on write */
    d11_buf_printf(body, "%llu %lld ", (unsigned long long)e->event_id, (long long)e->created_at);
    render(body, e);
    d11_buf_puts(body, "\n");
    return 0;
}

static void unavailable(const d11_frame *f, d11_buf *frame)
{
    static const char msg[] = "the center outbox cannot be read";
    d11_reply_enc(frame, &f->hdr, 503, "unavailable", msg, sizeof msg - 1);
}

void center_events_read_reply(d11_center_outbox *r, const d11_frame *f, d11_buf *body, d11_buf *frame)
{
    d11_msg_events_read m;
    d11_buf_reset(body);
    d11_buf_reset(frame);
    if (d11_msg_events_read_dec(f->payload, f->payload_len, &m) < 0) {
        static const char msg[] = "malformed events read";
        d11_reply_enc(frame, &f->hdr, 422, "invalid", msg, sizeof msg - 1);
        return;
    }
    if (m.shadow) { /* no stress stream at the center */
        d11_buf_puts(body, "0 0\n");
        d11_reply_enc(frame, &f->hdr, 200, NULL, body->data, body->len);
        return;
    }
    uint64_t head, pruned;
    if (!r || d11_center_outbox_bounds(r, &head, &pruned) < 0) {
        unavailable(f, frame);
        return;
    }
    if (m.after == 0) m.after = pruned;
    if (m.after < pruned) {
        d11_buf_printf(body, "center: events after %llu were pruned (oldest kept: %llu)", (unsigned long long)m.after,
                       (unsigned long long)pruned + 1);
        d11_reply_enc(frame, &f->hdr, 410, "cursor_expired", body->data, body->len);
        return;
    }
    d11_buf_printf(body, "%llu %llu\n", (unsigned long long)head, (unsigned long long)pruned);
    uint32_t limit = m.limit < CENTER_EVENTS_PAGE_MAX ? m.limit : CENTER_EVENTS_PAGE_MAX;
    if (m.after < head && d11_center_outbox_read(r, m.after, limit, on_event, body) < 0) {
        unavailable(f, frame);
        return;
    }
    d11_reply_enc(frame, &f->hdr, 200, NULL, body->data, body->len);
}

void center_events_prune_reply(center *c, d11_center_outbox *r, const d11_frame *f, d11_buf *body, d11_buf *frame)
{
    d11_msg_events_prune m;
    d11_buf_reset(body);
    d11_buf_reset(frame);
    if (d11_msg_events_prune_dec(f->payload, f->payload_len, &m) < 0) {
        static const char msg[] = "malformed events prune";
        d11_reply_enc(frame, &f->hdr, 422, "invalid", msg, sizeof msg - 1);
        return;
    }
    uint64_t upto = 0, head = 0;
    int64_t oldest = 0;
    if (!m.shadow) {
        if (!r || d11_center_outbox_prune_point(r, m.through, (int64_t)m.cutoff_ms, D11_EVENTS_PRUNE_ROWS, &upto,
                                                &head, &oldest) < 0) {
            unavailable(f, frame);
            return;
        }
        if (upto) center_events_prune(c, upto);
    }
    d11_buf_printf(body, "%llu %llu %lld\n", (unsigned long long)upto, (unsigned long long)head, (long long)oldest);
    d11_reply_enc(frame, &f->hdr, 200, NULL, body->data, body->len);
}
