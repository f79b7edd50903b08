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
 * The message catalogue (payload layouts) is in docs/wire-protocol.md and in the
 * encode/decode pairs in wire.c; both must change together, and the unit test
 * tests/unit/test_wire.c round-trips every message.
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

enum d11_msg_type {
    /* gateway -> cell */
    D11_MSG_ORDER_CREATE = 1,
    D11_MSG_ORDER_GET    = 2,
    D11_MSG_ORDER_LIST   = 3,
    D11_MSG_ORDER_PAY    = 4,
    D11_MSG_ORDER_CANCEL = 5,
    /* gateway -> center */
    D11_MSG_PRODUCT_CREATE  = 20,
    D11_MSG_PRODUCT_GET     = 21,
    D11_MSG_PRODUCT_RESTOCK = 22,
    D11_MSG_ROUTING_GET     = 23,
    D11_MSG_LEDGER_GET      = 24, /* admin: the center's ledger for one SKU (JSON) */
    /* cell -> center */
    D11_MSG_CELL_HELLO   = 40,
    D11_MSG_GRANT        = 41,
    D11_MSG_RETURN       = 42,
    D11_MSG_REPORT       = 43,
    /* center -> cell (pushed, flag D11_WF_PUSH) */
    D11_MSG_RECLAIM      = 60,
    /* any -> any */
    D11_MSG_PING         = 90, /* readiness; reply payload: str process description */
    D11_MSG_STATS        = 91, /* reply payload: str JSON stats of the process */
};

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

/* ---- typed messages ---- */

typedef struct d11_str { const char *p; size_t n; } d11_str;

typedef struct d11_item {
    d11_str  sku;
    uint32_t qty;
} d11_item;

/* ORDER_CREATE: gateway has validated every field against API.md limits. */
typedef struct d11_msg_order_create {
    uint64_t user_id;
    d11_str  idem_key;
    uint32_t nitems;
    d11_item items[D11_ORDER_ITEMS_MAX];
} d11_msg_order_create;

void d11_msg_order_create_enc(d11_buf *b, const d11_msg_order_create *m);
/* Returns 0 or D11_EPROTO (also when a limit of API.md is broken: the cell re-checks). */
int  d11_msg_order_create_dec(const void *p, size_t n, d11_msg_order_create *m);

/* ORDER_GET / ORDER_CANCEL: u64 order_id. ORDER_PAY: u64 order_id, str payment_id. */
typedef struct d11_msg_order_ref {
    uint64_t order_id;
    d11_str  payment_id; /* ORDER_PAY only */
} d11_msg_order_ref;
void d11_msg_order_ref_enc(d11_buf *b, const d11_msg_order_ref *m, bool with_payment);
int  d11_msg_order_ref_dec(const void *p, size_t n, d11_msg_order_ref *m, bool with_payment);

/* ORDER_LIST: user_id, before (0 = from newest), limit 1..D11_LIST_LIMIT_MAX. */
typedef struct d11_msg_order_list {
    uint64_t user_id;
    uint64_t before;
    uint32_t limit;
} d11_msg_order_list;
void d11_msg_order_list_enc(d11_buf *b, const d11_msg_order_list *m);
int  d11_msg_order_list_dec(const void *p, size_t n, d11_msg_order_list *m);

/* PRODUCT_CREATE */
typedef struct d11_msg_product {
    d11_str  sku;
    d11_str  title;
    uint64_t price_cents;
    uint64_t stock;
    d11_str  category;
} d11_msg_product;
void d11_msg_product_enc(d11_buf *b, const d11_msg_product *m);
int  d11_msg_product_dec(const void *p, size_t n, d11_msg_product *m);

/* PRODUCT_GET: str sku. PRODUCT_RESTOCK: str sku, u64 quantity. LEDGER_GET: str sku. */
typedef struct d11_msg_sku_qty {
    d11_str  sku;
    uint64_t qty;
} d11_msg_sku_qty;
void d11_msg_sku_qty_enc(d11_buf *b, const d11_msg_sku_qty *m, bool with_qty);
int  d11_msg_sku_qty_dec(const void *p, size_t n, d11_msg_sku_qty *m, bool with_qty);

/*
 * Generic reply payload (all gateway-facing replies): str code, str body.
 * Success (status 2xx): code empty, body = the JSON document to send to the client.
 * Failure: code = stable error code ("out_of_stock"), body = human message.
 */
void d11_msg_reply_enc(d11_buf *b, const char *code, const char *body, size_t body_len);
int  d11_msg_reply_dec(const void *p, size_t n, d11_str *code, d11_str *body);

/* ROUTING_GET reply (status 200): u32 version, u16 ncells, u16 cell_of_slot[D11_SLOTS]. */
typedef struct d11_routing {
    uint32_t version;
    uint16_t ncells;
    uint16_t cell_of_slot[D11_SLOTS];
} d11_routing;
void d11_routing_enc(d11_buf *b, const d11_routing *r);
int  d11_routing_dec(const void *p, size_t n, d11_routing *r);
/* The default table: slots split into ncells contiguous ranges. */
void d11_routing_default(d11_routing *r, unsigned ncells);

/*
 * Inventory messages between cell and center. Every quantity is CUMULATIVE per
 * (cell, sku, shadow) so each message is idempotent: the receiver keeps the maximum.
 *   GRANT request:  u16 cell, str sku, u8 shadow, u64 want, u64 sold
 *   GRANT reply:    u8 exists, u64 price_cents, u64 granted_cum, u8 sold_out
 *   RETURN request: u16 cell, str sku, u8 shadow, u64 returned_cum, u64 sold
 *   RETURN reply:   empty (status 200)
 *   RECLAIM push:   str sku, u8 shadow (the cell answers by sending RETURN)
 *   HELLO request:  u16 cell
 *   HELLO reply:    u32 n, n x (str sku, u8 shadow, u64 price, u64 granted_cum, u64 returned_cum)
 *   REPORT request: u16 cell, u32 n, n x (str sku, u8 shadow, u64 sold); reply empty
 */
typedef struct d11_msg_inv {
    uint16_t cell;
    d11_str  sku;
    uint8_t  shadow;
    uint64_t qty;  /* GRANT: want; RETURN: returned_cum */
    uint64_t sold; /* the cell's current sold count (pending + paid) */
} d11_msg_inv;
void d11_msg_inv_enc(d11_buf *b, const d11_msg_inv *m);
int  d11_msg_inv_dec(const void *p, size_t n, d11_msg_inv *m);

typedef struct d11_msg_grant_reply {
    uint8_t  exists;
    uint64_t price_cents;
    uint64_t granted_cum;
    uint8_t  sold_out;
} d11_msg_grant_reply;
void d11_msg_grant_reply_enc(d11_buf *b, const d11_msg_grant_reply *m);
int  d11_msg_grant_reply_dec(const void *p, size_t n, d11_msg_grant_reply *m);

#endif
