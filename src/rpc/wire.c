/*
 * wire.c — the d11 wire protocol codec: frame headers, payload primitives, and the message
 * encoders/decoders GENERATED from wire_msgs.def (see wire.h for the API and the frame
 * layout, docs/wire-protocol.md for the catalogue). Every decoder is total: it never reads
 * past the payload, rejects trailing bytes, and re-checks the limits declared in the
 * catalogue (those of API.md and limits.h), so a buggy or hostile peer cannot push
 * out-of-range values into a cell or the center. Stateless; any thread.
 *
 * Hot path (ORDER_CREATE): no allocation beyond the caller's reused d11_buf, no copies
 * (decoded strings point into the payload); fields are written by inline appenders.
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

/* ---- helpers of the generated codecs ---- */

/* lo <= v <= hi, for any unsigned field (one comparison; lo <= hi). */
static inline bool in_range(uint64_t v, uint64_t lo, uint64_t hi) { return v - lo <= hi - lo; }

enum { CLS_ANY, CLS_PRINT, CLS_SKU };

/* SKU rule of API.md: [A-Za-z0-9_.-]. */
static inline bool sku_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static inline bool str_ok(const d11_str *s, int cls, size_t lo, size_t hi)
{
    if (!in_range(s->n, lo, hi)) return false;
    if (cls == CLS_SKU) {
        for (size_t i = 0; i < s->n; i++)
            if (!sku_char(s->p[i])) return false;
    } else if (cls == CLS_PRINT) {
        for (size_t i = 0; i < s->n; i++)
            if (s->p[i] < 0x20 || s->p[i] > 0x7e) return false; /* printable ASCII incl. space */
    }
    return true;
}

/* Inline appenders (the d11_wenc_* layout); the caller's encoder writes the d11_buf's
 * trailing NUL once at the end (fin). */
static inline uint8_t *room(d11_buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap) d11_buf_reserve(b, n);
    uint8_t *p = (uint8_t *)b->data + b->len;
    b->len += n;
    return p;
}
#define w_u8(b, v)  (*room(b, 1) = (uint8_t)(v))
#define w_u16(b, v) put_le(room(b, 2), (uint16_t)(v), 2)
#define w_u32(b, v) put_le(room(b, 4), (uint32_t)(v), 4)
#define w_u64(b, v) put_le(room(b, 8), (uint64_t)(v), 8)
static inline void w_bytes(d11_buf *b, const void *p, size_t n)
{
    if (n) memcpy(room(b, n), p, n);
}
static inline void w_str(d11_buf *b, const d11_str *s)
{
    D11_ASSERT(s->n <= UINT16_MAX);
    w_u16(b, s->n);
    w_bytes(b, s->p, s->n);
}
static inline void w_blob(d11_buf *b, const d11_str *s)
{
    D11_ASSERT(s->n <= D11_FRAME_BYTES_MAX);
    w_u32(b, s->n);
    w_bytes(b, s->p, s->n);
}
static inline void fin(d11_buf *b) { b->data[b->len] = 0; }

/* Inline readers (d11_wdec_* semantics: sticky err, zero values after it). */
static inline uint64_t r_int(d11_wdec *d, int n)
{
    if (d->err || d->n < (size_t)n) {
        d->err = true;
        return 0;
    }
    uint64_t v = get_le(d->p, n);
    d->p += n;
    d->n -= (size_t)n;
    return v;
}
#define r_u8(d)  ((uint8_t)r_int(d, 1))
#define r_u16(d) ((uint16_t)r_int(d, 2))
#define r_u32(d) ((uint32_t)r_int(d, 4))
#define r_u64(d) r_int(d, 8)
static inline void r_bytes(d11_wdec *d, size_t n, d11_str *s)
{
    if (d->err || d->n < n) {
        d->err = true;
        *s = (d11_str){"", 0};
        return;
    }
    s->p = (const char *)d->p;
    s->n = n;
    d->p += n;
    d->n -= n;
}

/* Cross-field rules named in the catalogue's `check` column. */
#define check_none(m) true
static bool check_items_unique(const d11_msg_order_create *m)
{
    for (uint32_t i = 1; i < m->nitems; i++)
        for (uint32_t j = 0; j < i; j++)
            if (m->items[j].sku.n == m->items[i].sku.n &&
                memcmp(m->items[j].sku.p, m->items[i].sku.p, m->items[i].sku.n) == 0)
                return false;
    return true;
}

/* ---- generated: field encoders ---- */

#define W_INT(name, bits, lo, hi)  w_u##bits(b, m->name);
#define W_STR(name, cls, lo, hi)   w_str(b, &m->name);
#define W_BLOB(name, lo, hi)       w_blob(b, &m->name);
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)                                   \
    D11_ASSERT(in_range(m->count, lo, hi));                                                \
    w_u##cbits(b, m->count);                                                               \
    for (uint32_t i_ = 0; i_ < m->count; i_++) enc_##ename(b, &m->name[i_], opt);
#define W_FIXARR(name, bits, len, lo, hi)                                                  \
    for (size_t i_ = 0; i_ < (len); i_++) w_u##bits(b, m->name[i_]);
#define W_COUNT(name, max)                                                                 \
    D11_ASSERT(m->name <= (max));                                                          \
    *count_at = b->len;                                                                    \
    *count_max = (max);                                                                    \
    w_u32(b, m->name);
#define W_IF_OPT(KIND, name, ...) if (opt) { W_##KIND(name, __VA_ARGS__) }
#define D11_WIRE_ENTRY(name, ctype, FIELDS)                                                \
    static inline void enc_##name(d11_buf *b, const ctype *m, bool opt)                    \
    {                                                                                      \
        (void)opt;                                                                         \
        FIELDS                                                                             \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    static inline void enc_##name(d11_buf *b, const ctype *m, size_t *count_at, uint32_t *count_max) \
    {                                                                                      \
        FIELDS                                                                             \
    }
#include "wire_msgs.def"

/* ---- generated: field decoders (false = malformed or out of a limit) ---- */

#define W_INT(name, bits, lo, hi)                                                          \
    m->name = r_u##bits(d);                                                         \
    if (d->err || !in_range(m->name, lo, hi)) return false;
#define W_STR(name, cls, lo, hi)                                                           \
    r_bytes(d, r_u16(d), &m->name);                                                        \
    if (d->err || !str_ok(&m->name, CLS_##cls, lo, hi)) return false;
#define W_BLOB(name, lo, hi)                                                               \
    r_bytes(d, r_u32(d), &m->name);                                                        \
    if (d->err || !in_range(m->name.n, lo, hi)) return false;
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)                                   \
    m->count = r_u##cbits(d);                                                       \
    if (d->err || !in_range(m->count, lo, hi)) return false;                               \
    for (uint32_t i_ = 0; i_ < m->count; i_++)                                             \
        if (!dec_##ename(d, &m->name[i_], opt)) return false;
#define W_FIXARR(name, bits, len, lo, hi)                                                  \
    for (size_t i_ = 0; i_ < (len); i_++) {                                                \
        m->name[i_] = r_u##bits(d);                                                 \
        if (d->err || !in_range(m->name[i_], lo, hi)) return false;                        \
    }
#define W_COUNT(name, max)                                                                 \
    m->name = r_u32(d);                                                                    \
    if (d->err || m->name > (max)) return false;
#define W_IF_OPT(KIND, name, ...)                                                          \
    if (opt) {                                                                             \
        W_##KIND(name, __VA_ARGS__)                                                        \
    } else {                                                                               \
        W_ZERO_##KIND(name)                                                                \
    }
#define W_ZERO_INT(name) m->name = 0;
#define W_ZERO_STR(name) m->name.p = ""; m->name.n = 0; /* no comma: FIELDS may be forwarded */
#define D11_WIRE_ENTRY(name, ctype, FIELDS)                                                \
    static inline bool dec_##name(d11_wdec *d, ctype *m, bool opt)                         \
    {                                                                                      \
        (void)opt;                                                                         \
        FIELDS                                                                             \
        return true;                                                                       \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS)                              \
    static inline bool dec_##name(d11_wdec *d, ctype *m, bool opt)                         \
    {                                                                                      \
        (void)opt;                                                                         \
        FIELDS                                                                             \
        return check_##check(m);                                                           \
    }
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    D11_WIRE_ENTRY(name, ctype, FIELDS)
#include "wire_msgs.def"

/* ---- generated: the public API of wire.h ---- */

#define D11__WIRE_API_PLAIN(name, ctype, prefix)                                           \
    void prefix##_enc(d11_buf *b, const ctype *m)                                          \
    {                                                                                      \
        enc_##name(b, m, false);                                                           \
        fin(b);                                                                            \
    }                                                                                      \
    int prefix##_dec(const void *p, size_t n, ctype *m)                                    \
    {                                                                                      \
        d11_wdec d;                                                                        \
        d11_wdec_init(&d, p, n);                                                           \
        return dec_##name(&d, m, false) && d11_wdec_done(&d) ? 0 : D11_EPROTO;             \
    }
#define D11__WIRE_API_OPT(name, ctype, prefix)                                             \
    void prefix##_enc(d11_buf *b, const ctype *m, bool opt)                                \
    {                                                                                      \
        enc_##name(b, m, opt);                                                             \
        fin(b);                                                                            \
    }                                                                                      \
    int prefix##_dec(const void *p, size_t n, ctype *m, bool opt)                          \
    {                                                                                      \
        d11_wdec d;                                                                        \
        d11_wdec_init(&d, p, n);                                                           \
        return dec_##name(&d, m, opt) && d11_wdec_done(&d) ? 0 : D11_EPROTO;               \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) D11__WIRE_API_##api(name, ctype, prefix)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    void prefix##_enc(d11_buf *b, const ctype *m, const ectype *v)                         \
    {                                                                                      \
        size_t at;                                                                         \
        uint32_t max;                                                                      \
        enc_##name(b, m, &at, &max);                                                       \
        D11_ASSERT(m->n <= max);                                                           \
        for (uint32_t i = 0; i < m->n; i++) enc_##ename(b, &v[i], false);                  \
        fin(b);                                                                            \
    }                                                                                      \
    void prefix##_enc_begin(d11_wire_list_enc *e, d11_buf *b, const ctype *m)              \
    {                                                                                      \
        ctype h = *m;                                                                      \
        h.n = 0;                                                                           \
        e->b = b;                                                                          \
        e->n = 0;                                                                          \
        enc_##name(b, &h, &e->count_at, &e->max);                                          \
        fin(b);                                                                            \
    }                                                                                      \
    int prefix##_enc_add(d11_wire_list_enc *e, const ectype *x)                            \
    {                                                                                      \
        D11_ASSERT(e->b && e->count_at + 4 <= e->b->len);                                  \
        if (e->n >= e->max) return D11_ETOOBIG;                                            \
        enc_##ename(e->b, x, false);                                                       \
        fin(e->b);                                                                         \
        e->n++;                                                                            \
        return 0;                                                                          \
    }                                                                                      \
    uint32_t prefix##_enc_end(d11_wire_list_enc *e)                                        \
    {                                                                                      \
        D11_ASSERT(e->b && e->count_at + 4 <= e->b->len && e->n <= e->max);                \
        put_le((uint8_t *)e->b->data + e->count_at, e->n, 4);                              \
        e->b = NULL;                                                                       \
        return e->n;                                                                       \
    }                                                                                      \
    int prefix##_dec_begin(d11_wire_iter *it, const void *p, size_t n, ctype *m)           \
    {                                                                                      \
        d11_wdec_init(&it->d, p, n);                                                       \
        it->left = 0;                                                                      \
        if (!dec_##name(&it->d, m, false)) {                                               \
            it->d.err = true;                                                              \
            return D11_EPROTO;                                                             \
        }                                                                                  \
        it->left = m->n;                                                                   \
        return 0;                                                                          \
    }                                                                                      \
    int prefix##_dec_next(d11_wire_iter *it, ectype *x)                                    \
    {                                                                                      \
        if (it->d.err) return D11_EPROTO;                                                  \
        if (it->left == 0) {                                                               \
            if (it->d.n == 0) return 0;                                                    \
            it->d.err = true; /* trailing bytes */                                         \
            return D11_EPROTO;                                                             \
        }                                                                                  \
        if (!dec_##ename(&it->d, x, false)) {                                              \
            it->d.err = true;                                                              \
            return D11_EPROTO;                                                             \
        }                                                                                  \
        it->left--;                                                                        \
        return 1;                                                                          \
    }
#include "wire_msgs.def"
#undef D11__WIRE_API_PLAIN
#undef D11__WIRE_API_OPT

/* ---- names ---- */

const char *d11_msg_type_name(unsigned type)
{
    switch (type) {
#define D11_WIRE_TYPE(NAME, value, log_name)                                               \
    case value: return log_name;
#include "wire_msgs.def"
    }
    return "unknown";
}

/* ---- hand-written wrappers ---- */

void d11_msg_reply_enc(d11_buf *b, const char *code, const char *body, size_t body_len)
{
    d11_msg_reply m = {{code ? code : "", code ? strlen(code) : 0}, {body ? body : "", body ? body_len : 0}};
    d11__msg_reply_enc(b, &m);
}

int d11_msg_reply_dec(const void *p, size_t n, d11_str *code, d11_str *body)
{
    d11_msg_reply m;
    int rc = d11__msg_reply_dec(p, n, &m);
    *code = rc == 0 ? m.code : (d11_str){"", 0};
    *body = rc == 0 ? m.body : (d11_str){"", 0};
    return rc;
}

void d11_routing_default(d11_routing *r, unsigned ncells)
{
    D11_ASSERT(ncells >= 1 && ncells <= D11_CELLS_MAX);
    r->version = 1;
    r->ncells = (uint16_t)ncells;
    for (unsigned s = 0; s < D11_SLOTS; s++) r->cell_of_slot[s] = (uint16_t)(s * ncells / D11_SLOTS);
}
