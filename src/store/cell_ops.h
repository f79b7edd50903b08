/*
 * cell_ops.h — the cell's op log: the records a cell commits through the storage seam
 * (store.h) and gets back from load. Declared once here; the cell (src/cell/batch.c)
 * encodes them, every cell backend (cell_sqlite.c, mem.c) and `d11 audit` decode them.
 *
 * Every record is an UPSERT of one row, so replaying records in commit order (the memory
 * backend) or the current rows (SQLite) rebuilds the same state:
 *
 *   ORDER_INSERT  u8 shadow, u64 id, u64 user, str idem, u64 body_hash, u8 status,
 *                 u64 total, i64 created, i64 expires, u8 n, n x (str sku, u32 qty, u64 price)
 *   ORDER_UPDATE  u8 shadow, u64 id, u8 status, str payment_id ("" = none), i64 updated
 *   STOCK         str sku, u8 shadow, u64 price, u64 granted, u64 returned, u64 sold
 *   OUTBOX        u8 shadow, u64 event_id, u64 order_id, str type, blob payload, i64 created
 *                 (load may return only the newest event per shadow: the cell needs the
 *                 next event id, not the events; consumers read the outbox table)
 *   OUTBOX_PRUNE  u8 shadow, u64 through: retention deleted that stream's events with
 *                 id <= through (and recorded the watermark, table outbox_pruned). Never
 *                 the newest event of a stream (load derives the next event id from it).
 *                 load never returns it; replay ignores it.
 *
 * Decoders are bounds-checked (limits of limits.h) and return 0 or D11_EPROTO; decoded
 * strings point into the record.
 */
#ifndef D11_CELL_OPS_H
#define D11_CELL_OPS_H

#include <stdint.h>
#include <stddef.h>
#include "../core/limits.h"
#include "../core/util.h"
#include "../rpc/wire.h"

enum cell_op_kind {
    CELL_OP_ORDER_INSERT = 1,
    CELL_OP_ORDER_UPDATE = 2,
    CELL_OP_STOCK        = 3,
    CELL_OP_OUTBOX       = 4,
    CELL_OP_OUTBOX_PRUNE = 5,
};

enum cell_order_status { ST_PENDING = 0, ST_PAID = 1, ST_CANCELLED = 2, ST_EXPIRED = 3 };
extern const char *const cell_status_name[4];
/* Status by name; -1 when unknown. */
int cell_status_parse(const char *s, size_t n);

typedef struct cell_op_item {
    d11_str  sku;
    uint32_t qty;
    uint64_t price;
} cell_op_item;

typedef struct cell_op_order {
    uint8_t  shadow, status, nitems;
    uint64_t id, user_id, body_hash, total;
    d11_str  idem;
    int64_t  created_at, expires_at;
    cell_op_item items[D11_ORDER_ITEMS_MAX];
} cell_op_order;

typedef struct cell_op_update {
    uint8_t  shadow, status;
    uint64_t id;
    d11_str  payment; /* n == 0: none */
    int64_t  updated_at;
} cell_op_update;

typedef struct cell_op_stock {
    d11_str  sku;
    uint8_t  shadow;
    uint64_t price, granted, returned, sold;
} cell_op_stock;

typedef struct cell_op_outbox {
    uint8_t  shadow;
    uint64_t event_id, order_id;
    d11_str  type;
    d11_str  payload;
    int64_t  created_at;
} cell_op_outbox;

typedef struct cell_op_prune {
    uint8_t  shadow;
    uint64_t through;
} cell_op_prune;

/* A decoded record of any kind. */
typedef struct cell_op {
    uint8_t kind; /* enum cell_op_kind */
    union {
        cell_op_order  order;
        cell_op_update update;
        cell_op_stock  stock;
        cell_op_outbox outbox;
        cell_op_prune  prune;
    } u;
} cell_op;

void cell_op_order_enc(d11_buf *b, const cell_op_order *o);
void cell_op_update_enc(d11_buf *b, const cell_op_update *u);
void cell_op_stock_enc(d11_buf *b, const cell_op_stock *s);
void cell_op_outbox_enc(d11_buf *b, const cell_op_outbox *e);
void cell_op_prune_enc(d11_buf *b, const cell_op_prune *p);

/* Decode the next record from *d (advancing it). 0 or D11_EPROTO. */
int cell_op_next(d11_wdec *d, cell_op *out);

#endif
