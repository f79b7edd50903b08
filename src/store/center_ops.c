/*
 * center_ops.c — encode and decode the center's op records (layouts in center_ops.h).
 *
 * Every encoder writes the record header, the fields, then patches the length; the
 * decoder checks the header length against what it was given and every field against
 * its limit, so a backend can trust a decoded record (the pair is round-tripped by
 * tests/unit/test_center_store.c).
 */
#include "center_ops.h"

#include <string.h>

#include "../core/limits.h"

static size_t op_begin(d11_buf *b, uint8_t op)
{
    size_t at = b->len;
    d11_wenc_u8(b, op);
    d11_wenc_u32(b, 0); /* patched by op_end */
    return at;
}

static void op_end(d11_buf *b, size_t at)
{
    size_t n = b->len - at - CENTER_OP_HDR_BYTES;
    D11_ASSERT(n <= UINT32_MAX);
    for (int i = 0; i < 4; i++) b->data[at + 1 + (size_t)i] = (char)(uint8_t)(n >> (8 * i));
}

static bool sku_ok(const d11_str *s) { return s->p && s->n >= 1 && s->n <= D11_SKU_BYTES_MAX; }

void center_op_product_enc(d11_buf *b, const center_op_product *m)
{
    D11_ASSERT(sku_ok(&m->sku));
    D11_ASSERT(m->title.n <= D11_TITLE_BYTES_MAX && m->category.n <= D11_CATEGORY_BYTES_MAX);
    size_t at = op_begin(b, CENTER_OP_PRODUCT);
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_str(b, m->title.p, m->title.n);
    d11_wenc_str(b, m->category.p, m->category.n);
    d11_wenc_u64(b, m->price_cents);
    d11_wenc_u64(b, m->stock_total);
    d11_wenc_u64(b, (uint64_t)m->created_at);
    op_end(b, at);
}

void center_op_stock_enc(d11_buf *b, const center_op_stock *m)
{
    D11_ASSERT(sku_ok(&m->sku) && m->shadow <= 1);
    D11_ASSERT(m->free <= m->total);
    size_t at = op_begin(b, CENTER_OP_STOCK);
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_u8(b, m->shadow);
    d11_wenc_u64(b, m->total);
    d11_wenc_u64(b, m->free);
    op_end(b, at);
}

void center_op_ledger_enc(d11_buf *b, const center_op_ledger *m)
{
    D11_ASSERT(sku_ok(&m->sku) && m->shadow <= 1 && m->cell < D11_CELLS_MAX);
    D11_ASSERT(m->returned <= m->granted);
    size_t at = op_begin(b, CENTER_OP_LEDGER);
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_u8(b, m->shadow);
    d11_wenc_u16(b, m->cell);
    d11_wenc_u64(b, m->granted);
    d11_wenc_u64(b, m->returned);
    d11_wenc_u64(b, m->sold_reported);
    op_end(b, at);
}

void center_op_routing_enc(d11_buf *b, const d11_routing *r)
{
    D11_ASSERT(r->ncells >= 1 && r->ncells <= D11_CELLS_MAX);
    size_t at = op_begin(b, CENTER_OP_ROUTING);
    d11_routing_enc(b, r);
    op_end(b, at);
}

static bool event_ok(const center_op_event *m)
{
    if (m->event_id < 1 || m->event_id > (uint64_t)INT64_MAX || !sku_ok(&m->sku)) return false;
    if (m->type.n < 1 || m->type.n > CENTER_EVENT_TYPE_BYTES_MAX) return false;
    if (m->data.n < 2 || m->data.n > CENTER_EVENT_DATA_BYTES_MAX || m->data.p[0] != '{') return false;
    if (m->trace_id.n != 0 && m->trace_id.n != 32) return false;
    for (size_t i = 0; i < m->trace_id.n; i++) {
        char c = m->trace_id.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

void center_op_event_enc(d11_buf *b, const center_op_event *m)
{
    D11_ASSERT(event_ok(m));
    size_t at = op_begin(b, CENTER_OP_EVENT);
    d11_wenc_u64(b, m->event_id);
    d11_wenc_str(b, m->type.p, m->type.n);
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_str(b, m->trace_id.p ? m->trace_id.p : "", m->trace_id.n);
    d11_wenc_str(b, m->data.p, m->data.n);
    d11_wenc_u64(b, (uint64_t)m->created_at);
    op_end(b, at);
}

void center_op_event_prune_enc(d11_buf *b, uint64_t through)
{
    D11_ASSERT(through <= (uint64_t)INT64_MAX);
    size_t at = op_begin(b, CENTER_OP_EVENT_PRUNE);
    d11_wenc_u64(b, through);
    op_end(b, at);
}

int center_op_next(const uint8_t *p, size_t n, size_t *reclen)
{
    if (n < CENTER_OP_HDR_BYTES) return D11_EPROTO;
    uint32_t len = (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
    if ((size_t)len > n - CENTER_OP_HDR_BYTES) return D11_EPROTO;
    *reclen = CENTER_OP_HDR_BYTES + (size_t)len;
    return 0;
}

static d11_str dec_str(d11_wdec *d, size_t max)
{
    d11_str s;
    s.p = d11_wdec_str(d, &s.n);
    if (!d->err && s.n > max) d->err = true;
    return s;
}

int center_op_dec(const uint8_t *rec, size_t len, center_op *out)
{
    size_t n;
    if (center_op_next(rec, len, &n) < 0 || n != len) return D11_EPROTO;
    d11_wdec d;
    d11_wdec_init(&d, rec + CENTER_OP_HDR_BYTES, len - CENTER_OP_HDR_BYTES);
    memset(out, 0, sizeof *out);
    out->type = rec[0];
    switch (out->type) {
    case CENTER_OP_PRODUCT: {
        center_op_product *m = &out->u.product;
        m->sku = dec_str(&d, D11_SKU_BYTES_MAX);
        m->title = dec_str(&d, D11_TITLE_BYTES_MAX);
        m->category = dec_str(&d, D11_CATEGORY_BYTES_MAX);
        m->price_cents = d11_wdec_u64(&d);
        m->stock_total = d11_wdec_u64(&d);
        m->created_at = (int64_t)d11_wdec_u64(&d);
        if (!d11_wdec_done(&d) || !sku_ok(&m->sku)) return D11_EPROTO;
        return 0;
    }
    case CENTER_OP_STOCK: {
        center_op_stock *m = &out->u.stock;
        m->sku = dec_str(&d, D11_SKU_BYTES_MAX);
        m->shadow = d11_wdec_u8(&d);
        m->total = d11_wdec_u64(&d);
        m->free = d11_wdec_u64(&d);
        if (!d11_wdec_done(&d) || !sku_ok(&m->sku) || m->shadow > 1 || m->free > m->total) return D11_EPROTO;
        return 0;
    }
    case CENTER_OP_LEDGER: {
        center_op_ledger *m = &out->u.ledger;
        m->sku = dec_str(&d, D11_SKU_BYTES_MAX);
        m->shadow = d11_wdec_u8(&d);
        m->cell = d11_wdec_u16(&d);
        m->granted = d11_wdec_u64(&d);
        m->returned = d11_wdec_u64(&d);
        m->sold_reported = d11_wdec_u64(&d);
        if (!d11_wdec_done(&d) || !sku_ok(&m->sku) || m->shadow > 1 || m->cell >= D11_CELLS_MAX ||
            m->returned > m->granted)
            return D11_EPROTO;
        return 0;
    }
    case CENTER_OP_EVENT: {
        center_op_event *m = &out->u.event;
        m->event_id = d11_wdec_u64(&d);
        m->type = dec_str(&d, CENTER_EVENT_TYPE_BYTES_MAX);
        m->sku = dec_str(&d, D11_SKU_BYTES_MAX);
        m->trace_id = dec_str(&d, 32);
        m->data = dec_str(&d, CENTER_EVENT_DATA_BYTES_MAX);
        m->created_at = (int64_t)d11_wdec_u64(&d);
        if (!d11_wdec_done(&d) || !event_ok(m)) return D11_EPROTO;
        return 0;
    }
    case CENTER_OP_EVENT_PRUNE:
        out->u.prune_through = d11_wdec_u64(&d);
        if (!d11_wdec_done(&d) || out->u.prune_through > (uint64_t)INT64_MAX) return D11_EPROTO;
        return 0;
    case CENTER_OP_ROUTING:
        return d11_routing_dec(rec + CENTER_OP_HDR_BYTES, len - CENTER_OP_HDR_BYTES, &out->u.routing);
    default: return D11_EPROTO;
    }
}
