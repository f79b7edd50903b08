/*
 * batch.c — the cell's group commit: the open batch's op log, replies held until their
 * batch is durable, RETURNs sent only after the `returned` they announce is committed,
 * and the double buffer (one batch committing while the next fills).
 *
 * Invariants: at most one batch is taken (committing) at a time; its bytes are not
 * touched until cell_batch_done; replies leave in the order they were queued; after a
 * failed commit every held reply becomes a 503 and the cell is FAILED (cell.h).
 */
#include "cell_int.h"

#include <string.h>

cell_batch *d11__open_batch(cell *c) { return &c->batches[c->open]; }

void d11__batches_init(cell *c)
{
    for (int i = 0; i < 2; i++) {
        cell_batch *b = &c->batches[i];
        memset(b, 0, sizeof *b);
        d11_buf_init(&b->ops, 1 << 16);
        d11_buf_init(&b->replies, 1 << 16);
        d11_buf_init(&b->snaps, 1024);
        d11_buf_init(&b->returns, 256);
    }
    c->open = 0;
    c->open_seq = 1;
    c->committed_seq = 0;
}

void d11__batches_release(cell *c)
{
    for (int i = 0; i < 2; i++) {
        d11_buf_free(&c->batches[i].ops);
        d11_buf_free(&c->batches[i].replies);
        d11_buf_free(&c->batches[i].snaps);
        d11_buf_free(&c->batches[i].returns);
    }
}

static void encode_reply(cell *c, const d11_frame_hdr *h, uint32_t status, const char *code, const char *body,
                         size_t n)
{
    d11_buf_reset(&c->frame);
    d11_reply_enc(&c->frame, h, status, code, body, n);
}

void d11__reply(cell *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code, const char *body,
                size_t n, bool defer)
{
    if (peer == NONE32) return; /* an internal retry with nobody waiting */
    if (!defer) {
        encode_reply(c, h, status, code, body, n);
        c->h.send_peer(c->h.data, peer, (const uint8_t *)c->frame.data, c->frame.len);
        return;
    }
    cell_batch *b = d11__open_batch(c);
    d11_wenc_u32(&b->replies, peer);
    d11_reply_enc(&b->replies, h, status, code, body, n);
    b->nreplies++;
}

void d11__reply_err(cell *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code, const char *msg)
{
    d11__reply(c, peer, h, status, code, msg, strlen(msg), false);
}

void d11__op_order_insert(cell *c, uint32_t oi)
{
    const order *o = OR(c, oi);
    D11_ASSERT(o->status == ST_PENDING && o->batch_seq == c->open_seq); /* a new order enters the open batch */
    cell_op_order r = {.shadow = o->shadow, .status = o->status, .nitems = o->nitems, .id = o->id,
                       .user_id = o->user_id, .body_hash = o->body_hash, .total = o->total,
                       .idem = {o->idem, o->idem_n}, .created_at = o->created_at, .expires_at = o->expires_at};
    uint64_t sum = 0;
    for (uint32_t i = 0; i < o->nitems; i++) {
        const oitem *it = IT(c, o->items + i);
        const ledger *l = LG(c, it->ledger);
        r.items[i] = (cell_op_item){{l->sku, l->skun}, it->qty, it->price};
        sum += it->price * it->qty;
        D11_ASSERT(it->qty >= 1 && it->qty <= D11_ITEM_QTY_MAX);
    }
    D11_ASSERT(sum == o->total); /* the stored total is the sum of the stored items */
    cell_batch *b = d11__open_batch(c);
    cell_op_order_enc(&b->ops, &r);
    b->nops++;
}

void d11__op_order_update(cell *c, uint32_t oi)
{
    const order *o = OR(c, oi);
    cell_op_update r = {.shadow = o->shadow, .status = o->status, .id = o->id,
                        .payment = {o->payment ? o->payment : "", o->payment_n}, .updated_at = o->updated_at};
    cell_batch *b = d11__open_batch(c);
    cell_op_update_enc(&b->ops, &r);
    b->nops++;
}

/*
 * The outbox event of an order's change. The payload is compact on purpose (one row per
 * order on the hot path): ids, status, money and time; consumers read the order by id.
 */
void d11__op_outbox(cell *c, uint32_t oi, const char *type)
{
    const order *o = OR(c, oi);
    d11_buf *p = &c->scratch2;
    d11_buf_reset(p);
    d11_buf_puts(p, "{\"type\":\"");
    d11_buf_puts(p, type);
    d11_buf_puts(p, "\",\"cell\":");
    d11_buf_u64(p, (uint64_t)c->o.id);
    d11_buf_puts(p, ",\"order_id\":\"");
    d11_buf_u64(p, o->id);
    d11_buf_puts(p, "\",\"user_id\":");
    d11_buf_u64(p, o->user_id);
    d11_buf_puts(p, ",\"status\":\"");
    d11_buf_puts(p, cell_status_name[o->status & 3]);
    d11_buf_puts(p, "\",\"total_cents\":");
    d11_buf_u64(p, o->total);
    d11_buf_puts(p, ",\"items\":");
    d11_buf_u64(p, o->nitems);
    d11_buf_puts(p, ",\"at\":");
    d11_buf_u64(p, (uint64_t)o->updated_at);
    static const uint8_t no_trace[16];
    if (c->trace && memcmp(c->trace, no_trace, 16) != 0) { /* the request's W3C trace id, for the event stream */
        char tid[33];
        d11_hex(c->trace, 16, tid);
        d11_buf_puts(p, ",\"trace_id\":\"");
        d11_buf_append(p, tid, 32);
        d11_buf_puts(p, "\"");
    }
    d11_buf_puts(p, "}");
    cell_op_outbox e = {.shadow = o->shadow, .event_id = c->next_event_id++, .order_id = o->id,
                        .type = {type, strlen(type)}, .payload = {p->data, p->len}, .created_at = o->updated_at};
    cell_batch *b = d11__open_batch(c);
    cell_op_outbox_enc(&b->ops, &e);
    b->nops++;
}

void cell_outbox_prune(cell *c, int shadow, uint64_t through)
{
    D11_ASSERT((shadow == 0 || shadow == 1) && through < c->next_event_id);
    cell_op_prune r = {.shadow = (uint8_t)shadow, .through = through};
    cell_batch *b = d11__open_batch(c);
    cell_op_prune_enc(&b->ops, &r);
    b->nops++;
}

void d11__queue_return(cell *c, uint32_t li)
{
    cell_batch *b = d11__open_batch(c);
    d11_wenc_u32(&b->returns, li);
    b->nreturns++;
}

bool cell_committing(const cell *c) { return c->committing; }
bool cell_failed(const cell *c) { return c->failed; }

bool cell_batch_take(cell *c, const uint8_t **ops, size_t *len, uint32_t *nops)
{
    if (c->committing || c->failed) return false;
    cell_batch *b = d11__open_batch(c);
    /* The touched ledgers' rows, once per batch: a hot SKU costs one row per batch. */
    for (uint32_t i = 0; i < c->ndirty; i++) {
        uint32_t li = c->dirty[i];
        ledger *l = LG(c, li);
        D11_ASSERT(l->dirty && l->returned + l->sold <= l->granted);
        cell_op_stock s = {{l->sku, l->skun}, l->shadow, l->price, l->granted, l->returned, l->sold};
        cell_op_stock_enc(&b->ops, &s);
        b->nops++;
        d11_wenc_u32(&b->snaps, li);
        d11_wenc_u64(&b->snaps, l->returned);
        d11_wenc_u64(&b->snaps, l->sold);
        b->nsnaps++;
        l->dirty = false;
    }
    c->ndirty = 0;
    if (b->nops == 0 && b->nreplies == 0 && b->nreturns == 0) return false;
    D11_ASSERT((b->nops == 0) == (b->ops.len == 0) && c->open_seq == c->committed_seq + 1);
    b->seq = c->open_seq++;
    c->committing = true;
    c->open ^= 1;
    *ops = (const uint8_t *)b->ops.data;
    *len = b->ops.len;
    *nops = b->nops;
    return true;
}

static void batch_reset(cell_batch *b)
{
    d11_buf_reset(&b->ops);
    d11_buf_reset(&b->replies);
    d11_buf_reset(&b->snaps);
    d11_buf_reset(&b->returns);
    b->nops = b->nreplies = b->nsnaps = b->nreturns = 0;
}

static void send_return(cell *c, uint32_t li)
{
    const ledger *l = LG(c, li);
    d11_frame_hdr h = {.type = D11_MSG_RETURN, .req_id = ((uint64_t)D11_MSG_RETURN << 40) | li,
                       .flags = l->shadow ? D11_WF_STRESS : 0};
    d11_buf_reset(&c->frame);
    size_t start = d11_frame_begin(&c->frame, &h);
    d11_msg_inv m = {.cell = (uint16_t)c->o.id, .sku = {l->sku, l->skun}, .shadow = l->shadow,
                     .qty = l->returned_committed, .sold = l->sold_committed};
    d11_msg_inv_enc(&c->frame, &m);
    d11_frame_end(&c->frame, start);
    c->h.send_center(c->h.data, (const uint8_t *)c->frame.data, c->frame.len);
}

void cell_batch_done(cell *c, int result)
{
    D11_ASSERT(c->committing);
    cell_batch *b = &c->batches[c->open ^ 1];
    D11_ASSERT(b->seq == c->committed_seq + 1); /* batches complete in the order they were taken */
    d11_wdec d;
    if (result == 0) {
        /* What this batch made durable is now what the center may hear. */
        d11_wdec_init(&d, b->snaps.data, b->snaps.len);
        for (uint32_t i = 0; i < b->nsnaps; i++) {
            uint32_t li = d11_wdec_u32(&d);
            uint64_t r = d11_wdec_u64(&d), s = d11_wdec_u64(&d);
            D11_ASSERT(!d.err);
            ledger *l = LG(c, li);
            D11_ASSERT(r >= l->returned_committed);
            if (s != l->sold_committed) l->report_dirty = true;
            l->returned_committed = r;
            l->sold_committed = s;
        }
    }
    d11_wdec_init(&d, b->replies.data, b->replies.len);
    for (uint32_t i = 0; i < b->nreplies; i++) {
        uint32_t peer = d11_wdec_u32(&d);
        d11_frame_hdr h;
        D11_ASSERT(!d.err && d11_frame_hdr_decode(d.p, d.n, &h) == 0 && h.len <= d.n);
        if (result == 0) {
            c->h.send_peer(c->h.data, peer, d.p, h.len);
        } else {
            static const char msg[] = "storage failure: not placed";
            d11_buf_reset(&c->frame);
            d11_reply_enc(&c->frame, &h, 503, "unavailable", msg, sizeof msg - 1);
            c->h.send_peer(c->h.data, peer, (const uint8_t *)c->frame.data, c->frame.len);
        }
        d.p += h.len;
        d.n -= h.len;
    }
    if (result != 0) {
        d11_error("cell %d: batch %llu failed to commit (%s); memory is ahead of storage", c->o.id,
                  (unsigned long long)b->seq, d11_strerror(result));
        c->failed = true;
        c->committing = false;
        batch_reset(b);
        return;
    }
    if (c->center_up) {
        d11_wdec_init(&d, b->returns.data, b->returns.len);
        for (uint32_t i = 0; i < b->nreturns; i++) send_return(c, d11_wdec_u32(&d));
    }
    c->committed_seq = b->seq;
    c->n_batches++;
    c->n_batch_ops += b->nops;
    batch_reset(b);
    c->committing = false;
}
