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

/* The digits of "key":<digits> in payload; n = 0 when absent. The key is among the first
 * fields (batch.c d11__op_outbox), so memmem stops early. */
static d11_str field(const char *p, size_t pn, const char *key, size_t kn)
{
    const char *k = memmem(p, pn, key, kn); /* key = "\"name\":" */
    if (!k) return (d11_str){"", 0};
    size_t s = (size_t)(k - p) + kn, e = s;
    while (e < pn && p[e] >= '0' && p[e] <= '9') e++;
    return (d11_str){p + s, e - s};
}

/* The trace id: the payload's LAST field when present (batch.c writes it last):
 * ...,"trace_id":"<32 hex>"} — a tail check, no scan. */
static d11_str trace_of(const char *p, size_t pn)
{
    static const char key[] = ",\"trace_id\":\"";
    const size_t kn = sizeof key - 1, need = kn + 32 + 2;
    if (pn < need || memcmp(p + pn - need, key, kn) != 0 || memcmp(p + pn - 2, "\"}", 2) != 0) return (d11_str){"", 0};
    return (d11_str){p + pn - 34, 32};
}

#define PUT(w, lit) (memcpy((w), (lit), sizeof(lit) - 1), (w) += sizeof(lit) - 1)

/* Hand-formatted into one reservation (no printf, no per-field calls): this is the
 * per-event cost of reading the outbox. The type is a fixed name of ours (no escapes
 * needed); anything else goes through the JSON escaper. */
void d11_cell_event_render(d11_buf *b, int cell_id, int shadow, const d11_outbox_event *e)
{
    bool plain = true;
    for (size_t i = 0; i < e->type_n; i++)
        if (e->type[i] == '"' || e->type[i] == '\\' || (unsigned char)e->type[i] < 0x20) plain = false;
    d11_str u = field(e->payload, e->payload_n, "\"user_id\":", 10), tr = trace_of(e->payload, e->payload_n);
    d11_buf_reserve(b, 320 + 6 * e->type_n + e->payload_n); /* fixed parts < 260 bytes */
    char *w = b->data + b->len;
    PUT(w, "{\"id\":\"");
    w = d11_fmt_u64(w, (uint64_t)cell_id);
    if (shadow) PUT(w, "-s-");
    else PUT(w, "-");
    w = d11_fmt_u64(w, e->event_id);
    PUT(w, "\",\"type\":");
    if (plain) {
        *w++ = '"';
        memcpy(w, e->type, e->type_n);
        w += e->type_n;
        *w++ = '"';
    } else {
        b->len = (size_t)(w - b->data);
        d11_buf_json_str(b, e->type, e->type_n);
        w = b->data + b->len;
    }
    PUT(w, ",\"order_id\":\"");
    w = d11_fmt_u64(w, e->order_id);
    PUT(w, "\",\"user_id\":");
    if (u.n && u.n <= 20) {
        memcpy(w, u.p, u.n);
        w += u.n;
    } else {
        PUT(w, "null");
    }
    PUT(w, ",\"cell\":");
    w = d11_fmt_u64(w, (uint64_t)cell_id);
    PUT(w, ",\"at\":");
    if (e->created_at < 0) *w++ = '-'; /* cannot happen: commit times are wall-clock ms */
    w = d11_fmt_u64(w, (uint64_t)(e->created_at < 0 ? -e->created_at : e->created_at));
    PUT(w, ",\"trace_id\":");
    if (tr.n) {
        *w++ = '"';
        memcpy(w, tr.p, 32);
        w += 32;
        *w++ = '"';
    } else {
        PUT(w, "null");
    }
    if (shadow) PUT(w, ",\"stress\":true,\"data\":");
    else PUT(w, ",\"stress\":false,\"data\":");
    memcpy(w, e->payload, e->payload_n);
    w += e->payload_n;
    *w++ = '}';
    b->len = (size_t)(w - b->data);
    b->data[b->len] = 0;
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
    d11_buf_reserve(pc->body, 48);
    char *w = pc->body->data + pc->body->len;
    w = d11_fmt_u64(w, e->event_id);
    *w++ = ' ';
    if (e->created_at < 0) *w++ = '-'; /* cannot happen: commit times are wall-clock ms */
    w = d11_fmt_u64(w, (uint64_t)(e->created_at < 0 ? -e->created_at : e->created_at));
    *w++ = ' ';
    pc->body->len = (size_t)(w - pc->body->data);
    d11_cell_event_render(pc->body, pc->cell, pc->shadow, e);
    d11_buf_append(pc->body, "\n", 1);
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
    bool hit = ec && cell_evcache_covers(ec, after);
    if (hit) got = cell_evcache_get(ec, after, m.limit, body, &after);
    int n = 0;
    if (got < m.limit) {
        /* rows that extend the run are kept; a reader far behind the head neither uses nor
         * disturbs the run — its rows are kept only if they reach the head (a new run) */
        bool extend = hit && cell_evcache_ends_at(ec, after);
        bool fresh = ec && !hit && head > after && head - after <= m.limit - got;
        if (fresh) cell_evcache_reset(ec);
        page_ctx pc = {body, cell_id, m.shadow, extend || fresh ? ec : NULL};
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
