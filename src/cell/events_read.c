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
#include "events_cache.h"

/* The digits of "key":<digits> or the hex of "key":"<hex>" in payload; n = 0 when absent.
 * memmem: the payload is a few hundred bytes and this runs for every event read. */
static d11_str field(const char *p, size_t pn, const char *key, size_t kn, bool quoted)
{
    const char *k = memmem(p, pn, key, kn); /* key = "\"name\":" */
    if (!k) return (d11_str){"", 0};
    size_t s = (size_t)(k - p) + kn;
    if (quoted) {
        if (s >= pn || p[s] != '"') return (d11_str){"", 0};
        s++;
    }
    size_t e = s;
    while (e < pn && ((p[e] >= '0' && p[e] <= '9') || (p[e] >= 'a' && p[e] <= 'f'))) e++;
    return (d11_str){p + s, e - s};
}

#define PUTS(b, lit) d11_buf_append((b), (lit), sizeof(lit) - 1)

/* Hand-formatted (no printf): this is the per-event cost of every consumer's read. */
void d11_cell_event_render(d11_buf *b, int cell_id, int shadow, const d11_outbox_event *e)
{
    PUTS(b, "{\"id\":\"");
    d11_buf_u64(b, (uint64_t)cell_id);
    if (shadow) PUTS(b, "-s-");
    else PUTS(b, "-");
    d11_buf_u64(b, e->event_id);
    PUTS(b, "\",\"type\":");
    d11_buf_json_str(b, e->type, e->type_n);
    PUTS(b, ",\"order_id\":\"");
    d11_buf_u64(b, e->order_id);
    PUTS(b, "\",\"user_id\":");
    d11_str u = field(e->payload, e->payload_n, "\"user_id\":", 10, false);
    if (u.n) d11_buf_append(b, u.p, u.n);
    else PUTS(b, "null");
    PUTS(b, ",\"cell\":");
    d11_buf_u64(b, (uint64_t)cell_id);
    PUTS(b, ",\"at\":");
    if (e->created_at < 0) PUTS(b, "-"); /* cannot happen: commit times are wall-clock ms */
    d11_buf_u64(b, (uint64_t)(e->created_at < 0 ? -e->created_at : e->created_at));
    PUTS(b, ",\"trace_id\":");
    d11_str tr = field(e->payload, e->payload_n, "\"trace_id\":", 11, true);
    if (tr.n == 32) {
        PUTS(b, "\"");
        d11_buf_append(b, tr.p, tr.n);
        PUTS(b, "\"");
    } else {
        PUTS(b, "null");
    }
    if (shadow) PUTS(b, ",\"stress\":true,\"data\":");
    else PUTS(b, ",\"stress\":false,\"data\":");
    d11_buf_append(b, e->payload, e->payload_n);
    PUTS(b, "}");
}

typedef struct page_ctx {
    d11_buf      *body;
    int           cell, shadow;
    cell_evcache *cache; /* NULL: the lines are not kept */
} page_ctx;

static int on_event(void *ctx, const d11_outbox_event *e)
{
    page_ctx *pc = ctx;
    if (e->payload_n + e->type_n + 200 > D11_EVENT_JSON_BYTES_MAX) return D11_ETOOBIG; /* cannot happen: bounded payload */
    size_t start = pc->body->len;
    d11_buf_u64(pc->body, e->event_id);
    PUTS(pc->body, " ");
    if (e->created_at < 0) PUTS(pc->body, "-"); /* cannot happen: commit times are wall-clock ms */
    d11_buf_u64(pc->body, (uint64_t)(e->created_at < 0 ? -e->created_at : e->created_at));
    PUTS(pc->body, " ");
    d11_cell_event_render(pc->body, pc->cell, pc->shadow, e);
    PUTS(pc->body, "\n");
    if (pc->cache) cell_evcache_add(pc->cache, e->event_id, pc->body->data + start, pc->body->len - start);
    return 0;
}

void d11_cell_events_reply(d11_outbox_reader *r, cell_evcache cache[2], int cell_id, const d11_frame *f, d11_buf *body,
                           d11_buf *frame)
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
    /* the newest events were most likely rendered for another consumer already
     * (events_cache.h): serve those lines, read and render only what follows them */
    cell_evcache *ec = cache ? &cache[m.shadow] : NULL;
    uint64_t after = m.after;
    uint32_t got = 0;
    if (ec && cell_evcache_covers(ec, after)) got = cell_evcache_get(ec, after, m.limit, body, &after);
    else if (ec) cell_evcache_reset(ec); /* the rows read now start a new run */
    int n = 0;
    if (got < m.limit) {
        page_ctx pc = {body, cell_id, m.shadow, ec && (ec->n == 0 || cell_evcache_ends_at(ec, after)) ? ec : NULL};
        n = d11_outbox_read(r, m.shadow, after, m.limit - got, on_event, &pc);
    }
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
