/*
 * center_ops.h — the center's op records: what the center writes through the storage seam
 * (store.h) and what a backend replays to it on load.
 *
 * Every record is one UPSERT of one row of the center's state (the tables of
 * docs/storage.md, "Center"), keyed as the table is keyed:
 *
 *   CENTER_OP_PRODUCT   products      key sku            full row
 *   CENTER_OP_STOCK     center_stock  key (sku, shadow)  total, free
 *   CENTER_OP_LEDGER    ledger        key (sku, shadow, cell)
 *                                                        granted, returned, sold_reported
 *   CENTER_OP_ROUTING   routing       one row            version, ncells, cell_of_slot
 *   CENTER_OP_EVENT     center_outbox key event_id       type, sku, trace id, data, created_at
 *   CENTER_OP_EVENT_PRUNE  center_outbox_pruned (one row): DELETE event_id <= through, watermark
 *
 * EVENT is an INSERT of an outbox row (product.created, product.restocked: docs/events.md,
 * "Center events"), committed in the same transaction as the product change it reports.
 * On load, a backend yields only the NEWEST stored event (so event ids continue after it)
 * and the pruned watermark as an EVENT_PRUNE record; the reader side is
 * store/center_outbox_read.h.
 *
 * Byte layout of one record (fields with the wire encoders, d11_wenc_*, little-endian):
 *
 *   u8 op, u32 n, then n bytes of fields:
 *     PRODUCT  str sku, str title, str category, u64 price_cents, u64 stock_total, u64 created_at
 *     STOCK    str sku, u8 shadow, u64 total, u64 free
 *     LEDGER   str sku, u8 shadow, u16 cell, u64 granted, u64 returned, u64 sold_reported
 *     ROUTING  u32 version, u16 ncells, 1024 x u16 cell_of_slot   (the ROUTING_GET reply body)
 *     EVENT    u64 event_id, str type, str sku, str trace_id (0 or 32 hex), str data, u64 created_at
 *     EVENT_PRUNE  u64 through
 *
 * The length after the op byte lets a backend that does not know these layouts (the
 * in-memory backend, which keeps committed logs and replays them in commit order) split
 * a log into records: see center_op_next.
 *
 * Replay contract: applying the records of a load in order must rebuild the state, and
 * applying a record twice (or an older version of a row before a newer one, in commit
 * order) must be harmless: each record replaces its row. A load yields ROUTING first,
 * then every PRODUCT before any STOCK or LEDGER row of that SKU; a commit by the center
 * keeps the same order within its log.
 *
 * Pure functions, no allocation; decoded strings point into the record.
 */
#ifndef D11_CENTER_OPS_H
#define D11_CENTER_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/util.h"
#include "../rpc/wire.h"

enum center_op_type {
    CENTER_OP_PRODUCT = 1,
    CENTER_OP_STOCK   = 2,
    CENTER_OP_LEDGER  = 3,
    CENTER_OP_ROUTING = 4,
    CENTER_OP_EVENT   = 5,
    CENTER_OP_EVENT_PRUNE = 6,
};

#define CENTER_EVENT_TYPE_BYTES_MAX 32
#define CENTER_EVENT_DATA_BYTES_MAX 2048 /* the product as JSON: title and category escaped */
#define CENTER_EVENT_JSON_BYTES_MAX (CENTER_EVENT_DATA_BYTES_MAX + 600) /* one rendered event */

#define CENTER_OP_HDR_BYTES 5 /* u8 op + u32 length of the fields */

typedef struct center_op_product {
    d11_str  sku;      /* 1..D11_SKU_BYTES_MAX */
    d11_str  title;    /* 0..D11_TITLE_BYTES_MAX */
    d11_str  category; /* 0..D11_CATEGORY_BYTES_MAX */
    uint64_t price_cents;
    uint64_t stock_total; /* the real (shadow 0) total, kept in products for readers of the table */
    int64_t  created_at;  /* wall ms */
} center_op_product;

typedef struct center_op_stock {
    d11_str  sku;
    uint8_t  shadow; /* 0 real, 1 stress */
    uint64_t total, free;
} center_op_stock;

typedef struct center_op_ledger {
    d11_str  sku;
    uint8_t  shadow;
    uint16_t cell; /* < D11_CELLS_MAX */
    uint64_t granted, returned, sold_reported;
} center_op_ledger;

typedef struct center_op_event {
    uint64_t event_id; /* >= 1, assigned in commit order */
    d11_str  type;     /* 1..CENTER_EVENT_TYPE_BYTES_MAX */
    d11_str  sku;
    d11_str  trace_id; /* "" or 32 lowercase hex */
    d11_str  data;     /* JSON object, 2..CENTER_EVENT_DATA_BYTES_MAX */
    int64_t  created_at; /* wall ms of the commit */
} center_op_event;

typedef struct center_op {
    uint8_t type; /* enum center_op_type */
    union {
        center_op_product product;
        center_op_stock   stock;
        center_op_ledger  ledger;
        d11_routing       routing;
        center_op_event   event;
        uint64_t          prune_through; /* EVENT_PRUNE */
    } u;
} center_op;

/* Append one record to b. Strings must respect the limits above (asserted). */
void center_op_product_enc(d11_buf *b, const center_op_product *m);
void center_op_stock_enc(d11_buf *b, const center_op_stock *m);
void center_op_ledger_enc(d11_buf *b, const center_op_ledger *m);
void center_op_routing_enc(d11_buf *b, const d11_routing *r);
void center_op_event_enc(d11_buf *b, const center_op_event *m);
void center_op_event_prune_enc(d11_buf *b, uint64_t through);

/*
 * Length of the record that starts at p[0..n): 0 with *reclen set, or D11_EPROTO when
 * p does not start with a whole record (short, or a length beyond n).
 */
int center_op_next(const uint8_t *p, size_t n, size_t *reclen);

/*
 * Decode exactly one record rec[0..len) (as center_op_next delimits it, or as a load
 * hands it to its apply callback). 0, or D11_EPROTO for an unknown op, a short or long
 * record, or a field outside its limits. Strings in *out point into rec.
 */
int center_op_dec(const uint8_t *rec, size_t len, center_op *out);

#endif
