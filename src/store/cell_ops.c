/*
 * cell_ops.c — encoders and the one decoder of the cell's op-log records (cell_ops.h).
 * Encoders assert their inputs are within the limits (the cell built them); the decoder
 * checks everything (it reads what a backend returned, or a fuzzer's bytes).
 */
#include "cell_ops.h"

#include <string.h>

const char *const cell_status_name[4] = {"pending_payment", "paid", "cancelled", "expired"};

int cell_status_parse(const char *s, size_t n)
{
    for (int k = 0; k < 4; k++)
        if (strlen(cell_status_name[k]) == n && memcmp(cell_status_name[k], s, n) == 0) return k;
    return -1;
}

void cell_op_order_enc(d11_buf *b, const cell_op_order *o)
{
    D11_ASSERT(o->nitems >= 1 && o->nitems <= D11_ORDER_ITEMS_MAX && o->status <= ST_EXPIRED);
    D11_ASSERT(o->idem.n <= D11_IDEM_KEY_BYTES_MAX && o->shadow <= 1);
    d11_wenc_u8(b, CELL_OP_ORDER_INSERT);
    d11_wenc_u8(b, o->shadow);
    d11_wenc_u64(b, o->id);
    d11_wenc_u64(b, o->user_id);
    d11_wenc_str(b, o->idem.p, o->idem.n);
    d11_wenc_u64(b, o->body_hash);
    d11_wenc_u8(b, o->status);
    d11_wenc_u64(b, o->total);
    d11_wenc_u64(b, (uint64_t)o->created_at);
    d11_wenc_u64(b, (uint64_t)o->expires_at);
    d11_wenc_u8(b, o->nitems);
    for (uint32_t i = 0; i < o->nitems; i++) {
        D11_ASSERT(o->items[i].sku.n >= 1 && o->items[i].sku.n <= D11_SKU_BYTES_MAX);
        d11_wenc_str(b, o->items[i].sku.p, o->items[i].sku.n);
        d11_wenc_u32(b, o->items[i].qty);
        d11_wenc_u64(b, o->items[i].price);
    }
}

void cell_op_update_enc(d11_buf *b, const cell_op_update *u)
{
    D11_ASSERT(u->status <= ST_EXPIRED && u->status != ST_PENDING && u->payment.n <= D11_PAYMENT_ID_BYTES_MAX);
    d11_wenc_u8(b, CELL_OP_ORDER_UPDATE);
    d11_wenc_u8(b, u->shadow);
    d11_wenc_u64(b, u->id);
    d11_wenc_u8(b, u->status);
    d11_wenc_str(b, u->payment.n ? u->payment.p : "", u->payment.n);
    d11_wenc_u64(b, (uint64_t)u->updated_at);
}

void cell_op_stock_enc(d11_buf *b, const cell_op_stock *s)
{
    D11_ASSERT(s->returned + s->sold <= s->granted); /* a cell never holds a negative allotment */
    D11_ASSERT(s->sku.n >= 1 && s->sku.n <= D11_SKU_BYTES_MAX && s->shadow <= 1);
    d11_wenc_u8(b, CELL_OP_STOCK);
    d11_wenc_str(b, s->sku.p, s->sku.n);
    d11_wenc_u8(b, s->shadow);
    d11_wenc_u64(b, s->price);
    d11_wenc_u64(b, s->granted);
    d11_wenc_u64(b, s->returned);
    d11_wenc_u64(b, s->sold);
}

void cell_op_outbox_enc(d11_buf *b, const cell_op_outbox *e)
{
    d11_wenc_u8(b, CELL_OP_OUTBOX);
    d11_wenc_u8(b, e->shadow);
    d11_wenc_u64(b, e->event_id);
    d11_wenc_u64(b, e->order_id);
    d11_wenc_str(b, e->type.p, e->type.n);
    d11_wenc_blob(b, e->payload.p, e->payload.n);
    d11_wenc_u64(b, (uint64_t)e->created_at);
}

void cell_op_prune_enc(d11_buf *b, const cell_op_prune *p)
{
    d11_wenc_u8(b, CELL_OP_OUTBOX_PRUNE);
    d11_wenc_u8(b, p->shadow);
    d11_wenc_u64(b, p->through);
}

static d11_str dec_str(d11_wdec *d)
{
    d11_str s;
    s.p = d11_wdec_str(d, &s.n);
    if (!s.p) s.n = 0;
    return s;
}

int cell_op_next(d11_wdec *d, cell_op *out)
{
    out->kind = d11_wdec_u8(d);
    switch (out->kind) {
    case CELL_OP_ORDER_INSERT: {
        cell_op_order *o = &out->u.order;
        o->shadow = d11_wdec_u8(d);
        o->id = d11_wdec_u64(d);
        o->user_id = d11_wdec_u64(d);
        o->idem = dec_str(d);
        o->body_hash = d11_wdec_u64(d);
        o->status = d11_wdec_u8(d);
        o->total = d11_wdec_u64(d);
        o->created_at = (int64_t)d11_wdec_u64(d);
        o->expires_at = (int64_t)d11_wdec_u64(d);
        o->nitems = d11_wdec_u8(d);
        if (d->err || o->shadow > 1 || o->status > ST_EXPIRED || o->nitems < 1 || o->nitems > D11_ORDER_ITEMS_MAX ||
            o->idem.n > D11_IDEM_KEY_BYTES_MAX)
            return D11_EPROTO;
        for (uint32_t i = 0; i < o->nitems; i++) {
            o->items[i].sku = dec_str(d);
            o->items[i].qty = d11_wdec_u32(d);
            o->items[i].price = d11_wdec_u64(d);
            if (d->err || o->items[i].sku.n < 1 || o->items[i].sku.n > D11_SKU_BYTES_MAX) return D11_EPROTO;
        }
        return 0;
    }
    case CELL_OP_ORDER_UPDATE: {
        cell_op_update *u = &out->u.update;
        u->shadow = d11_wdec_u8(d);
        u->id = d11_wdec_u64(d);
        u->status = d11_wdec_u8(d);
        u->payment = dec_str(d);
        u->updated_at = (int64_t)d11_wdec_u64(d);
        if (d->err || u->shadow > 1 || u->status > ST_EXPIRED || u->status == ST_PENDING ||
            u->payment.n > D11_PAYMENT_ID_BYTES_MAX)
            return D11_EPROTO; /* an update only ever moves an order OUT of pending */
        return 0;
    }
    case CELL_OP_STOCK: {
        cell_op_stock *s = &out->u.stock;
        s->sku = dec_str(d);
        s->shadow = d11_wdec_u8(d);
        s->price = d11_wdec_u64(d);
        s->granted = d11_wdec_u64(d);
        s->returned = d11_wdec_u64(d);
        s->sold = d11_wdec_u64(d);
        if (d->err || s->shadow > 1 || s->sku.n < 1 || s->sku.n > D11_SKU_BYTES_MAX) return D11_EPROTO;
        if (s->returned > s->granted || s->sold > s->granted - s->returned) return D11_EPROTO;
        return 0;
    }
    case CELL_OP_OUTBOX: {
        cell_op_outbox *e = &out->u.outbox;
        e->shadow = d11_wdec_u8(d);
        e->event_id = d11_wdec_u64(d);
        e->order_id = d11_wdec_u64(d);
        e->type = dec_str(d);
        e->payload.p = d11_wdec_blob(d, &e->payload.n);
        if (!e->payload.p) e->payload.n = 0;
        e->created_at = (int64_t)d11_wdec_u64(d);
        if (d->err || e->shadow > 1) return D11_EPROTO;
        return 0;
    }
    case CELL_OP_OUTBOX_PRUNE: {
        cell_op_prune *pr = &out->u.prune;
        pr->shadow = d11_wdec_u8(d);
        pr->through = d11_wdec_u64(d);
        if (d->err || pr->shadow > 1) return D11_EPROTO;
        return 0;
    }
    default: return D11_EPROTO;
    }
}
