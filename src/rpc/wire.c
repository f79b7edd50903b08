/*
 * wire.c — encoders and decoders for the d11 wire protocol (see wire.h for the frame
 * layout and docs/wire-protocol.md for the catalogue). Every decoder is total: it never
 * reads past the payload, rejects trailing bytes, and re-checks the limits of API.md so a
 * buggy or hostile peer cannot push out-of-range values into a cell or the center.
 */
#include "wire.h"

#include <string.h>

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void d11_frame_hdr_encode(const d11_frame_hdr *h, uint8_t out[D11_FRAME_HDR_BYTES])
{
    D11_ASSERT(h->len >= D11_FRAME_HDR_BYTES && h->len <= D11_FRAME_BYTES_MAX);
    put_le(out + 0, h->len, 4);
    out[4] = D11_WIRE_VERSION;
    out[5] = h->trace_flags;
    put_le(out + 6, h->type, 2);
    put_le(out + 8, h->flags, 2);
    put_le(out + 10, 0, 2);
    put_le(out + 12, h->req_id, 8);
    put_le(out + 20, h->deadline_ms, 4);
    put_le(out + 24, h->status, 4);
    memcpy(out + 28, h->trace_id, 16);
    memcpy(out + 44, h->span_id, 8);
}

int d11_frame_hdr_decode(const uint8_t *buf, size_t n, d11_frame_hdr *h)
{
    if (n < D11_FRAME_HDR_BYTES) {
        /* Reject an impossible length as early as its 4 bytes are in. */
        if (n >= 4) {
            uint32_t len = (uint32_t)get_le(buf, 4);
            if (len < D11_FRAME_HDR_BYTES || len > D11_FRAME_BYTES_MAX) return D11_EPROTO;
        }
        return 1;
    }
    h->len = (uint32_t)get_le(buf, 4);
    h->version = buf[4];
    h->trace_flags = buf[5];
    h->type = (uint16_t)get_le(buf + 6, 2);
    h->flags = (uint16_t)get_le(buf + 8, 2);
    h->req_id = get_le(buf + 12, 8);
    h->deadline_ms = (uint32_t)get_le(buf + 20, 4);
    h->status = (uint32_t)get_le(buf + 24, 4);
    memcpy(h->trace_id, buf + 28, 16);
    memcpy(h->span_id, buf + 44, 8);
    if (h->version != D11_WIRE_VERSION) return D11_EPROTO;
    if (h->len < D11_FRAME_HDR_BYTES || h->len > D11_FRAME_BYTES_MAX) return D11_EPROTO;
    return 0;
}

size_t d11_frame_begin(d11_buf *b, const d11_frame_hdr *hdr)
{
    size_t start = b->len;
    d11_frame_hdr h = *hdr;
    h.len = D11_FRAME_HDR_BYTES; /* patched by d11_frame_end */
    d11_buf_reserve(b, D11_FRAME_HDR_BYTES);
    d11_frame_hdr_encode(&h, (uint8_t *)b->data + b->len);
    b->len += D11_FRAME_HDR_BYTES;
    return start;
}

void d11_frame_end(d11_buf *b, size_t start)
{
    size_t len = b->len - start;
    D11_ASSERT(len >= D11_FRAME_HDR_BYTES && len <= D11_FRAME_BYTES_MAX);
    put_le((uint8_t *)b->data + start, len, 4);
}

void d11_wenc_u8(d11_buf *b, uint8_t v) { d11_buf_append(b, &v, 1); }
void d11_wenc_u16(d11_buf *b, uint16_t v) { uint8_t t[2]; put_le(t, v, 2); d11_buf_append(b, t, 2); }
void d11_wenc_u32(d11_buf *b, uint32_t v) { uint8_t t[4]; put_le(t, v, 4); d11_buf_append(b, t, 4); }
void d11_wenc_u64(d11_buf *b, uint64_t v) { uint8_t t[8]; put_le(t, v, 8); d11_buf_append(b, t, 8); }

void d11_wenc_str(d11_buf *b, const char *s, size_t n)
{
    D11_ASSERT(n <= 65535);
    d11_wenc_u16(b, (uint16_t)n);
    d11_buf_append(b, s, n);
}

void d11_wenc_blob(d11_buf *b, const void *p, size_t n)
{
    D11_ASSERT(n <= D11_FRAME_BYTES_MAX);
    d11_wenc_u32(b, (uint32_t)n);
    d11_buf_append(b, p, n);
}

static const uint8_t *take(d11_wdec *d, size_t n)
{
    if (d->err || d->n < n) {
        d->err = true;
        return NULL;
    }
    const uint8_t *p = d->p;
    d->p += n;
    d->n -= n;
    return p;
}

uint8_t d11_wdec_u8(d11_wdec *d) { const uint8_t *p = take(d, 1); return p ? p[0] : 0; }
uint16_t d11_wdec_u16(d11_wdec *d) { const uint8_t *p = take(d, 2); return p ? (uint16_t)get_le(p, 2) : 0; }
uint32_t d11_wdec_u32(d11_wdec *d) { const uint8_t *p = take(d, 4); return p ? (uint32_t)get_le(p, 4) : 0; }
uint64_t d11_wdec_u64(d11_wdec *d) { const uint8_t *p = take(d, 8); return p ? get_le(p, 8) : 0; }

const char *d11_wdec_str(d11_wdec *d, size_t *len)
{
    size_t n = d11_wdec_u16(d);
    const uint8_t *p = take(d, n);
    *len = p ? n : 0;
    return (const char *)p;
}

const char *d11_wdec_blob(d11_wdec *d, size_t *len)
{
    size_t n = d11_wdec_u32(d);
    const uint8_t *p = take(d, n);
    *len = p ? n : 0;
    return (const char *)p;
}

static void get_str(d11_wdec *d, d11_str *s)
{
    s->p = d11_wdec_str(d, &s->n);
    if (!s->p) s->p = "";
}

/* SKU rule of API.md: 1-64 of [A-Za-z0-9_.-]. */
static bool sku_ok(const d11_str *s)
{
    if (s->n < 1 || s->n > D11_SKU_BYTES_MAX) return false;
    for (size_t i = 0; i < s->n; i++) {
        char c = s->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static bool printable_ok(const d11_str *s, size_t max)
{
    if (s->n < 1 || s->n > max) return false;
    for (size_t i = 0; i < s->n; i++)
        if (s->p[i] < 0x20 || s->p[i] > 0x7e) return false; /* printable ASCII incl. space */
    return true;
}

/* ---- order messages ---- */

void d11_msg_order_create_enc(d11_buf *b, const d11_msg_order_create *m)
{
    D11_ASSERT(m->nitems >= 1 && m->nitems <= D11_ORDER_ITEMS_MAX);
    d11_wenc_u64(b, m->user_id);
    d11_wenc_str(b, m->idem_key.p, m->idem_key.n);
    d11_wenc_u8(b, (uint8_t)m->nitems);
    for (uint32_t i = 0; i < m->nitems; i++) {
        d11_wenc_str(b, m->items[i].sku.p, m->items[i].sku.n);
        d11_wenc_u32(b, m->items[i].qty);
    }
}

int d11_msg_order_create_dec(const void *p, size_t n, d11_msg_order_create *m)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    m->user_id = d11_wdec_u64(&d);
    get_str(&d, &m->idem_key);
    m->nitems = d11_wdec_u8(&d);
    if (d.err || m->nitems < 1 || m->nitems > D11_ORDER_ITEMS_MAX) return D11_EPROTO;
    for (uint32_t i = 0; i < m->nitems; i++) {
        get_str(&d, &m->items[i].sku);
        m->items[i].qty = d11_wdec_u32(&d);
        if (d.err || !sku_ok(&m->items[i].sku) || m->items[i].qty < 1 ||
            m->items[i].qty > D11_ITEM_QTY_MAX)
            return D11_EPROTO;
        for (uint32_t j = 0; j < i; j++)
            if (m->items[j].sku.n == m->items[i].sku.n &&
                memcmp(m->items[j].sku.p, m->items[i].sku.p, m->items[i].sku.n) == 0)
                return D11_EPROTO;
    }
    if (!d11_wdec_done(&d)) return D11_EPROTO;
    if (m->user_id < 1 || m->user_id > (uint64_t)INT64_MAX) return D11_EPROTO;
    if (!printable_ok(&m->idem_key, D11_IDEM_KEY_BYTES_MAX)) return D11_EPROTO;
    return 0;
}

void d11_msg_order_ref_enc(d11_buf *b, const d11_msg_order_ref *m, bool with_payment)
{
    d11_wenc_u64(b, m->order_id);
    if (with_payment) d11_wenc_str(b, m->payment_id.p, m->payment_id.n);
}

int d11_msg_order_ref_dec(const void *p, size_t n, d11_msg_order_ref *m, bool with_payment)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    m->order_id = d11_wdec_u64(&d);
    m->payment_id.p = "";
    m->payment_id.n = 0;
    if (with_payment) {
        get_str(&d, &m->payment_id);
        if (!d.err && !printable_ok(&m->payment_id, D11_PAYMENT_ID_BYTES_MAX)) return D11_EPROTO;
    }
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

void d11_msg_order_list_enc(d11_buf *b, const d11_msg_order_list *m)
{
    d11_wenc_u64(b, m->user_id);
    d11_wenc_u64(b, m->before);
    d11_wenc_u32(b, m->limit);
}

int d11_msg_order_list_dec(const void *p, size_t n, d11_msg_order_list *m)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    m->user_id = d11_wdec_u64(&d);
    m->before = d11_wdec_u64(&d);
    m->limit = d11_wdec_u32(&d);
    if (!d11_wdec_done(&d)) return D11_EPROTO;
    if (m->limit < 1 || m->limit > D11_LIST_LIMIT_MAX) return D11_EPROTO;
    if (m->user_id < 1 || m->user_id > (uint64_t)INT64_MAX) return D11_EPROTO;
    return 0;
}

/* ---- product messages ---- */

void d11_msg_product_enc(d11_buf *b, const d11_msg_product *m)
{
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_str(b, m->title.p, m->title.n);
    d11_wenc_u64(b, m->price_cents);
    d11_wenc_u64(b, m->stock);
    d11_wenc_str(b, m->category.p, m->category.n);
}

int d11_msg_product_dec(const void *p, size_t n, d11_msg_product *m)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    get_str(&d, &m->sku);
    get_str(&d, &m->title);
    m->price_cents = d11_wdec_u64(&d);
    m->stock = d11_wdec_u64(&d);
    get_str(&d, &m->category);
    if (!d11_wdec_done(&d)) return D11_EPROTO;
    if (!sku_ok(&m->sku) || m->title.n > D11_TITLE_BYTES_MAX ||
        m->category.n > D11_CATEGORY_BYTES_MAX || m->price_cents < 1 ||
        m->price_cents > (uint64_t)D11_PRICE_CENTS_MAX || m->stock > (uint64_t)D11_STOCK_MAX)
        return D11_EPROTO;
    return 0;
}

void d11_msg_sku_qty_enc(d11_buf *b, const d11_msg_sku_qty *m, bool with_qty)
{
    d11_wenc_str(b, m->sku.p, m->sku.n);
    if (with_qty) d11_wenc_u64(b, m->qty);
}

int d11_msg_sku_qty_dec(const void *p, size_t n, d11_msg_sku_qty *m, bool with_qty)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    get_str(&d, &m->sku);
    m->qty = with_qty ? d11_wdec_u64(&d) : 0;
    if (!d11_wdec_done(&d) || !sku_ok(&m->sku)) return D11_EPROTO;
    if (with_qty && (m->qty < 1 || m->qty > (uint64_t)D11_STOCK_MAX)) return D11_EPROTO;
    return 0;
}

/* ---- replies ---- */

void d11_msg_reply_enc(d11_buf *b, const char *code, const char *body, size_t body_len)
{
    d11_wenc_str(b, code ? code : "", code ? strlen(code) : 0);
    d11_wenc_blob(b, body ? body : "", body ? body_len : 0);
}

int d11_msg_reply_dec(const void *p, size_t n, d11_str *code, d11_str *body)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    get_str(&d, code);
    body->p = d11_wdec_blob(&d, &body->n);
    if (!body->p) body->p = "";
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

/* ---- routing ---- */

void d11_routing_enc(d11_buf *b, const d11_routing *r)
{
    d11_wenc_u32(b, r->version);
    d11_wenc_u16(b, r->ncells);
    for (int i = 0; i < D11_SLOTS; i++) d11_wenc_u16(b, r->cell_of_slot[i]);
}

int d11_routing_dec(const void *p, size_t n, d11_routing *r)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    r->version = d11_wdec_u32(&d);
    r->ncells = d11_wdec_u16(&d);
    for (int i = 0; i < D11_SLOTS; i++) r->cell_of_slot[i] = d11_wdec_u16(&d);
    if (!d11_wdec_done(&d) || r->ncells < 1 || r->ncells > D11_CELLS_MAX) return D11_EPROTO;
    for (int i = 0; i < D11_SLOTS; i++)
        if (r->cell_of_slot[i] >= r->ncells) return D11_EPROTO;
    return 0;
}

void d11_routing_default(d11_routing *r, unsigned ncells)
{
    D11_ASSERT(ncells >= 1 && ncells <= D11_CELLS_MAX);
    r->version = 1;
    r->ncells = (uint16_t)ncells;
    for (unsigned s = 0; s < D11_SLOTS; s++) r->cell_of_slot[s] = (uint16_t)(s * ncells / D11_SLOTS);
}

/* ---- inventory ---- */

void d11_msg_inv_enc(d11_buf *b, const d11_msg_inv *m)
{
    d11_wenc_u16(b, m->cell);
    d11_wenc_str(b, m->sku.p, m->sku.n);
    d11_wenc_u8(b, m->shadow);
    d11_wenc_u64(b, m->qty);
    d11_wenc_u64(b, m->sold);
}

int d11_msg_inv_dec(const void *p, size_t n, d11_msg_inv *m)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    m->cell = d11_wdec_u16(&d);
    get_str(&d, &m->sku);
    m->shadow = d11_wdec_u8(&d);
    m->qty = d11_wdec_u64(&d);
    m->sold = d11_wdec_u64(&d);
    if (!d11_wdec_done(&d) || !sku_ok(&m->sku) || m->shadow > 1 || m->cell >= D11_CELLS_MAX)
        return D11_EPROTO;
    return 0;
}

void d11_msg_grant_reply_enc(d11_buf *b, const d11_msg_grant_reply *m)
{
    d11_wenc_u8(b, m->exists);
    d11_wenc_u64(b, m->price_cents);
    d11_wenc_u64(b, m->granted_cum);
    d11_wenc_u8(b, m->sold_out);
}

int d11_msg_grant_reply_dec(const void *p, size_t n, d11_msg_grant_reply *m)
{
    d11_wdec d;
    d11_wdec_init(&d, p, n);
    m->exists = d11_wdec_u8(&d);
    m->price_cents = d11_wdec_u64(&d);
    m->granted_cum = d11_wdec_u64(&d);
    m->sold_out = d11_wdec_u8(&d);
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}
