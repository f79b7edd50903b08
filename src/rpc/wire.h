/*
 * wire.h — the d11 wire protocol between gateway, cells and center.
 *
 * A connection (Unix socket or loopback TCP) carries frames in both directions. Every
 * frame is a fixed 52-byte little-endian header followed by a payload:
 *
 *   off size field
 *     0   4  len          total frame length in bytes, header included (<= D11_FRAME_BYTES_MAX)
 *     4   1  version      D11_WIRE_VERSION
 *     5   1  trace_flags  W3C trace flags (bit 0 = sampled)
 *     6   2  type         D11_MSG_* (requests) — a reply repeats its request's type
 *     8   2  flags        D11_WF_REPLY, D11_WF_STRESS, D11_WF_PUSH
 *    10   2  reserved     zero
 *    12   8  req_id       chosen by the sender of a request, echoed in its reply
 *    20   4  deadline_ms  remaining budget when sent (0 = none); replies: 0
 *    24   4  status       replies: HTTP-style status (200, 201, 404, ...); requests: 0
 *    28  16  trace_id     W3C trace id (all zero = none)
 *    44   8  span_id      the sender's span id (parent of the receiver's span)
 *
 * Requests are pipelined: a sender may have many requests in flight on one connection and
 * replies may come back in any order; req_id matches them. The payload is a sequence of
 * fields written with the d11_wenc_* functions and read with d11_wdec_* (integers
 * little-endian, strings as u16 length + bytes, no terminator). Decoding is bounds-checked:
 * any short or malformed payload sets dec->err and every later read returns zero values,
 * so a message is validated by checking dec->err once at the end.
 *
 * The message catalogue — every frame type and every payload layout — is declared ONCE,
 * in wire_msgs.def; this header generates from it the d11_msg_type enum, the message
 * structs and the encode/decode prototypes, wire.c the codecs, tests/unit/test_wire.c the
 * round trips and fuzz/fuzz_wire.c the fuzz entries. docs/wire-protocol.md documents it.
 *
 * Generated API, per message of the catalogue (see wire_msgs.def for each layout):
 *   void PREFIX_enc(d11_buf *b, const T *m [, bool opt]);
 *       appends the payload. Never fails; asserts only what would overflow the struct
 *       (an array count above its limit). Out-of-range values ARE encoded (so a test can
 *       check the peer's decoder refuses them).
 *   int  PREFIX_dec(const void *p, size_t n, T *m [, bool opt]);
 *       0, or D11_EPROTO when p[0..n) is short, has trailing bytes or breaks a limit of
 *       wire_msgs.def. Strings in *m point into p (valid while p is). On error *m is
 *       partly filled and must not be used.
 * and per LIST message (a header, a u32 count <= D11_WIRE_LIST_MAX, then entries):
 *   void PREFIX_enc(d11_buf *b, const T *m, const E *v);       m->n entries from v[]
 *   void PREFIX_enc_begin(d11_wire_list_enc *e, d11_buf *b, const T *m);  (m->n ignored)
 *   int  PREFIX_enc_add(d11_wire_list_enc *e, const E *x);     0, or D11_ETOOBIG when the
 *        list already holds its limit (x is not added: end this message, start another)
 *   uint32_t PREFIX_enc_end(d11_wire_list_enc *e);             patches the count, returns it
 *   int  PREFIX_dec_begin(d11_wire_iter *it, const void *p, size_t n, T *m);
 *        0 (header in *m, m->n = entry count) or D11_EPROTO (short, count over the limit)
 *   int  PREFIX_dec_next(d11_wire_iter *it, E *x);
 *        1 = *x filled; 0 = all m->n entries read AND the payload ended exactly there;
 *        D11_EPROTO = malformed entry, short payload or trailing bytes (sticky).
 *        Entries already returned were valid: a receiver that must not act on a partly
 *        bad list iterates twice (validate, then apply).
 * Between encoder begin and end nothing else may be appended to b.
 */
#ifndef D11_WIRE_H
#define D11_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include "../core/util.h"
#include "../core/limits.h"

#define D11_WIRE_VERSION 1
#define D11_FRAME_HDR_BYTES 52

/* Frame types (wire_msgs.def): D11_MSG_ORDER_CREATE = 1, ... D11_MSG_METRICS = 92. */
enum d11_msg_type {
#define D11_WIRE_TYPE(NAME, value, log_name) D11_MSG_##NAME = value,
#include "wire_msgs.def"
};

/* The catalogue's name of a frame type, for logs and metrics ("order_create"); "unknown"
 * for a type not in it. Static storage. */
const char *d11_msg_type_name(unsigned type);

enum {
    D11_WF_REPLY  = 1 << 0,
    D11_WF_STRESS = 1 << 1, /* full-link stress traffic: shadow tables */
    D11_WF_PUSH   = 1 << 2, /* unsolicited request from center to cell */
};

typedef struct d11_frame_hdr {
    uint32_t len;
    uint8_t  version;
    uint8_t  trace_flags;
    uint16_t type;
    uint16_t flags;
    uint64_t req_id;
    uint32_t deadline_ms;
    uint32_t status;
    uint8_t  trace_id[16];
    uint8_t  span_id[8];
} d11_frame_hdr;

/* Encode hdr into out[52]. hdr->len must already be the total frame length. */
void d11_frame_hdr_encode(const d11_frame_hdr *hdr, uint8_t out[D11_FRAME_HDR_BYTES]);
/*
 * Decode a header from buf[0..n). Returns 0 and fills *hdr when a whole frame header is
 * present, 1 when more bytes are needed, D11_EPROTO for a bad version or a length
 * outside [52, D11_FRAME_BYTES_MAX]. The caller then waits for hdr->len bytes.
 */
int d11_frame_hdr_decode(const uint8_t *buf, size_t n, d11_frame_hdr *hdr);

/* ---- payload encoding ---- */

/* Encoder: appends to a d11_buf. Frames are built as: d11_frame_begin, fields, d11_frame_end. */
size_t d11_frame_begin(d11_buf *b, const d11_frame_hdr *hdr); /* returns frame start offset */
void   d11_frame_end(d11_buf *b, size_t start);               /* patches the length */

void d11_wenc_u8(d11_buf *b, uint8_t v);
void d11_wenc_u16(d11_buf *b, uint16_t v);
void d11_wenc_u32(d11_buf *b, uint32_t v);
void d11_wenc_u64(d11_buf *b, uint64_t v);
void d11_wenc_str(d11_buf *b, const char *s, size_t n); /* n <= 65535, asserted */
void d11_wenc_blob(d11_buf *b, const void *p, size_t n); /* u32 length + bytes */

typedef struct d11_wdec {
    const uint8_t *p;
    size_t n;
    bool err;
} d11_wdec;

static inline void d11_wdec_init(d11_wdec *d, const void *p, size_t n)
{
    d->p = p;
    d->n = n;
    d->err = false;
}
uint8_t  d11_wdec_u8(d11_wdec *d);
uint16_t d11_wdec_u16(d11_wdec *d);
uint32_t d11_wdec_u32(d11_wdec *d);
uint64_t d11_wdec_u64(d11_wdec *d);
/* Strings point into the payload (valid while the frame is); *len set. NULL on error. */
const char *d11_wdec_str(d11_wdec *d, size_t *len);
const char *d11_wdec_blob(d11_wdec *d, size_t *len);
/* True when the payload was read exactly to its end without error. */
static inline bool d11_wdec_done(const d11_wdec *d) { return !d->err && d->n == 0; }

/* ---- typed messages (generated from wire_msgs.def) ---- */

typedef struct d11_str { const char *p; size_t n; } d11_str;

/* Decoder iterator of a LIST message. */
typedef struct d11_wire_iter {
    d11_wdec d;
    uint32_t left; /* entries still to read */
} d11_wire_iter;

/* Incremental encoder of a LIST message (begin / add / end). */
typedef struct d11_wire_list_enc {
    d11_buf *b;        /* NULL once ended */
    size_t   count_at; /* offset of the u32 count in b */
    uint32_t n;        /* entries added */
    uint32_t max;      /* the list's limit */
} d11_wire_list_enc;

#define W_INT(name, bits, lo, hi)                         uint##bits##_t name;
#define W_STR(name, cls, lo, hi)                          d11_str name;
#define W_BLOB(name, lo, hi)                              d11_str name;
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)  uint32_t count; ectype name[hi];
#define W_FIXARR(name, bits, len, lo, hi)                 uint##bits##_t name[len];
#define W_COUNT(name, max)                                uint32_t name;
#define W_IF_OPT(KIND, name, ...)                         W_##KIND(name, __VA_ARGS__)
#define D11__WIRE_API_PLAIN(ctype, prefix)                                                 \
    void prefix##_enc(d11_buf *b, const ctype *m);                                         \
    int prefix##_dec(const void *p, size_t n, ctype *m);
#define D11__WIRE_API_OPT(ctype, prefix)                                                   \
    void prefix##_enc(d11_buf *b, const ctype *m, bool opt);                               \
    int prefix##_dec(const void *p, size_t n, ctype *m, bool opt);
#define D11_WIRE_ENTRY(name, ctype, FIELDS) typedef struct ctype { FIELDS } ctype;
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS)                              \
    typedef struct ctype { FIELDS } ctype;                                                 \
    D11__WIRE_API_##api(ctype, prefix)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    typedef struct ctype { FIELDS } ctype;                                                 \
    void prefix##_enc(d11_buf *b, const ctype *m, const ectype *v);                        \
    void prefix##_enc_begin(d11_wire_list_enc *e, d11_buf *b, const ctype *m);             \
    int prefix##_enc_add(d11_wire_list_enc *e, const ectype *x);                           \
    uint32_t prefix##_enc_end(d11_wire_list_enc *e);                                       \
    int prefix##_dec_begin(d11_wire_iter *it, const void *p, size_t n, ctype *m);          \
    int prefix##_dec_next(d11_wire_iter *it, ectype *x);
#include "wire_msgs.def"
#undef D11__WIRE_API_PLAIN
#undef D11__WIRE_API_OPT

/*
 * What the catalogue generates above, by message (layouts in wire_msgs.def and
 * docs/wire-protocol.md):
 *   d11_item                   { d11_str sku; uint32_t qty; }                  (order line)
 *   d11_msg_order_create       ORDER_CREATE            d11_msg_order_create_enc/_dec
 *   d11_msg_order_ref          ORDER_GET/PAY/CANCEL    d11_msg_order_ref_enc/_dec(.., with_payment)
 *   d11_msg_order_list         ORDER_LIST              d11_msg_order_list_enc/_dec
 *   d11_msg_product            PRODUCT_CREATE          d11_msg_product_enc/_dec
 *   d11_msg_sku_qty            PRODUCT_GET/RESTOCK, LEDGER_GET  d11_msg_sku_qty_enc/_dec(.., with_qty)
 *   d11_routing                ROUTING_GET reply       d11_routing_enc/_dec
 *   d11_msg_reply              every gateway-facing reply: d11_msg_reply_enc/_dec below
 *   d11_msg_hello              CELL_HELLO request      d11_msg_hello_enc/_dec        { uint16_t cell; }
 *   d11_msg_hello_reply        CELL_HELLO reply (LIST) d11_msg_hello_reply_*         { uint32_t n; }
 *     d11_msg_hello_reply_entry  { d11_str sku; uint8_t shadow; uint64_t price_cents,
 *                                  granted_cum, returned_cum; }
 *   d11_msg_inv                GRANT / RETURN request  d11_msg_inv_enc/_dec
 *   d11_msg_grant_reply        GRANT reply             d11_msg_grant_reply_enc/_dec
 *   d11_msg_report             REPORT request (LIST)   d11_msg_report_*              { uint16_t cell; uint32_t n; }
 *     d11_msg_report_entry       { d11_str sku; uint8_t shadow; uint64_t sold; }
 *   d11_msg_reclaim            RECLAIM push            d11_msg_reclaim_enc/_dec      { d11_str sku; uint8_t shadow; }
 *
 * Example, the center answering a HELLO while walking its products:
 *   d11_wire_list_enc e;
 *   d11_msg_hello_reply_enc_begin(&e, out, &(d11_msg_hello_reply){0});
 *   for (...) if (d11_msg_hello_reply_enc_add(&e, &entry) < 0) break; // limit: log + metric
 *   d11_msg_hello_reply_enc_end(&e);
 * and the cell reading it:
 *   d11_wire_iter it; d11_msg_hello_reply h; d11_msg_hello_reply_entry x; int rc;
 *   if (d11_msg_hello_reply_dec_begin(&it, p, n, &h) < 0) -> malformed
 *   while ((rc = d11_msg_hello_reply_dec_next(&it, &x)) == 1) apply(&x);
 *   if (rc < 0) -> malformed
 */

/*
 * Generic reply payload (all gateway-facing replies): str code, blob body.
 * Success (status 2xx): code empty, body = the JSON document to send to the client.
 * Failure: code = stable error code ("out_of_stock"), body = human message.
 * code may be NULL (empty); body may be NULL (empty). Thin wrappers over the generated
 * d11__msg_reply_enc/_dec; on error *code and *body are set to empty strings.
 */
void d11_msg_reply_enc(d11_buf *b, const char *code, const char *body, size_t body_len);
int  d11_msg_reply_dec(const void *p, size_t n, d11_str *code, d11_str *body);

/* The default routing table: slots split into ncells contiguous ranges. */
void d11_routing_default(d11_routing *r, unsigned ncells);

#endif
