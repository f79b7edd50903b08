/*
 * events_read.c — EVENTS_READ in the cell process (events_read.h): read a page of the
 * committed outbox and render each row as the public event document:
 *
 *   {"id":"<cell>-<event_id>" (stress: "<cell>-s-<event_id>"),"type":..,"order_id":"..",
 *    "user_id":..,"cell":..,"at":<ms>,"trace_id":"<32 hex>"|null,"stress":bool,
 *    "data":<the outbox payload: the order's state after the change>}
 *
 * user_id and trace_id are taken from the payload, which this cell wrote itself
 * (batch.c d11__op_outbox: fixed field order, no nesting), so a key scan is exact.
 * Thread: the cell's logic thread.
 */
#include "events_read.h"

#include <string.h>

#include "../rpc/conn.h"
#include "cell.h"

/* The digits of "key":<digits> or the hex of "key":"<hex>" in payload; n = 0 when absent. */
static d11_str field(const char *p, size_t pn, const char *key, bool quoted)
{
    size_t kn = strlen(key);
    for (size_t i = 0; i + kn + 3 < pn; i++) {
        if (p[i] != '"' || memcmp(p + i + 1, key, kn) != 0 || p[i + 1 + kn] != '"' || p[i + 2 + kn] != ':') continue;
        size_t s = i + 3 + kn;
        if (quoted) {
            if (s >= pn || p[s] != '"') return (d11_str){"", 0};
            s++;
        }
        size_t e = s;
        while (e < pn && ((p[e] >= '0' && p[e] <= '9') || (p[e] >= 'a' && p[e] <= 'f'))) e++;
        return (d11_str){p + s, e - s};
    }
    return (d11_str){"", 0};
}

void d11_cell_event_render(d11_buf *b, int cell_id, int shadow, const d11_outbox_event *e)
{
    d11_buf_printf(b, "{\"id\":\"%d-%s%llu\",\"type\":", cell_id, shadow ? "s-" : "", (unsigned long long)e->event_id);
    d11_buf_json_str(b, e->type, e->type_n);
    d11_buf_printf(b, ",\"order_id\":\"%llu\",\"user_id\":", (unsigned long long)e->order_id);
    d11_str u = field(e->payload, e->payload_n, "user_id", false);
    if (u.n) d11_buf_append(b, u.p, u.n);
    else d11_buf_puts(b, "null");
    d11_buf_printf(b, ",\"cell\":%d,\"at\":%lld,\"trace_id\":", cell_id, (long long)e->created_at);
    d11_str tr = field(e->payload, e->payload_n, "trace_id", true);
    if (tr.n == 32) {
        d11_buf_puts(b, "\"");
        d11_buf_append(b, tr.p, tr.n);
        d11_buf_puts(b, "\"");
    } else {
        d11_buf_puts(b, "null");
    }
    d11_buf_printf(b, ",\"stress\":%s,\"data\":", shadow ? "true" : "false");
    d11_buf_append(b, e->payload, e->payload_n);
    d11_buf_puts(b, "}");
}

typedef struct page_ctx {
    d11_buf *body;
    int      cell, shadow;
} page_ctx;

static int on_event(void *ctx, const d11_outbox_event *e)
{
    page_ctx *pc = ctx;
    if (e->payload_n + e->type_n + 200 > D11_EVENT_JSON_BYTES_MAX) return D11_ETOOBIG; /* cannot happen: bounded payload */
    d11_buf_printf(pc->body, "%llu %lld ", (unsigned long long)e->event_id, (long long)e->created_at);
    d11_cell_event_render(pc->body, pc->cell, pc->shadow, e);
    d11_buf_puts(pc->body, "\n");
    return 0;
}

void d11_cell_events_reply(d11_outbox_reader *r, int cell_id, const d11_frame *f, d11_buf *body, d11_buf *frame)
{
    d11_msg_events_read m;
    d11_buf_reset(body);
    d11_buf_reset(frame);
    if (d11_msg_events_read_dec(f->payload, f->payload_len, &m) < 0) {
        static const char msg[] = "malformed events read";
        d11_reply_enc(frame, &f->hdr, 422, "invalid", msg, sizeof msg - 1);
        return;
    }
    uint64_t head, pruned;
    if (!r || d11_outbox_bounds(r, m.shadow, &head, &pruned) < 0) {
        static const char msg[] = "the outbox cannot be read";
        d11_reply_enc(frame, &f->hdr, 503, "unavailable", msg, sizeof msg - 1);
        return;
    }
    if (m.after == 0) m.after = pruned; /* no position yet: from the oldest retained event */
    if (m.after < pruned) {
        d11_buf_printf(body, "cell %d: events after %llu were pruned (oldest kept: %llu)", cell_id,
                       (unsigned long long)m.after, (unsigned long long)pruned + 1);
        d11_reply_enc(frame, &f->hdr, 410, "cursor_expired", body->data, body->len);
        return;
    }
    d11_buf_printf(body, "%llu %llu\n", (unsigned long long)head, (unsigned long long)pruned);
    page_ctx pc = {body, cell_id, m.shadow};
    int n = d11_outbox_read(r, m.shadow, m.after, m.limit, on_event, &pc);
    if (n < 0) {
        static const char msg[] = "the outbox cannot be read";
        d11_reply_enc(frame, &f->hdr, 503, "unavailable", msg, sizeof msg - 1);
        return;
    }
    d11_reply_enc(frame, &f->hdr, 200, NULL, body->data, body->len);
}

void d11_cell_events_prune(d11_outbox_reader *r, cell *c, const d11_frame *f, d11_buf *body, d11_buf *frame)
{
    d11_msg_events_prune m;
    d11_buf_reset(body);
    d11_buf_reset(frame);
    if (d11_msg_events_prune_dec(f->payload, f->payload_len, &m) < 0) {
        static const char msg[] = "malformed events prune";
        d11_reply_enc(frame, &f->hdr, 422, "invalid", msg, sizeof msg - 1);
        return;
    }
    uint64_t upto, head;
    int64_t oldest;
    if (!r || cell_failed(c) ||
        d11_outbox_prune_point(r, m.shadow, m.through, (int64_t)m.cutoff_ms, D11_EVENTS_PRUNE_ROWS, &upto, &head,
                               &oldest) < 0) {
        static const char msg[] = "the outbox cannot be read";
        d11_reply_enc(frame, &f->hdr, 503, "unavailable", msg, sizeof msg - 1);
        return;
    }
    if (upto) cell_outbox_prune(c, m.shadow, upto);
    d11_buf_printf(body, "%llu %llu %lld\n", (unsigned long long)upto, (unsigned long long)head, (long long)oldest);
    d11_reply_enc(frame, &f->hdr, 200, NULL, body->data, body->len);
}
