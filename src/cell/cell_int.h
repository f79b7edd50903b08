/*
 * cell_int.h — internals shared by the cell's logic thread (cell.c) and its storage
 * thread (cell_store.c). Not a public API.
 *
 * Threads and ownership:
 *   - The logic thread owns every in-memory structure below (ledgers, orders, maps,
 *     connections) and never blocks on I/O except epoll_wait. No locks on the hot path.
 *   - The storage thread owns the write handle of DATA/cell-<id>.db. It receives one
 *     closed batch at a time, commits it in ONE transaction and hands it back.
 *   - A batch moves between them through cell_store_submit() / the done eventfd; while
 *     the storage thread holds batch k, the logic thread fills batch k+1 (two-stage
 *     pipeline). Nothing else is shared.
 *
 * Batch payload: `ops` is a byte stream of records written with the wire encoders
 * (CELL_OP_* below); it is a snapshot, so the logic thread may keep mutating orders
 * while the storage thread writes. `replies` holds the reply frames to send once the
 * batch is durable: records of [u32 conn index][u32 conn generation][frame bytes].
 */
#ifndef D11_CELL_INT_H
#define D11_CELL_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdbool.h>

#include "../core/util.h"
#include "../core/config.h"
#include "../core/limits.h"

enum cell_op {
    CELL_OP_ORDER_INSERT = 1, /* u8 shadow, u64 id, u64 user, str idem, u64 hash, u8 status,
                                 u64 total, i64 created, i64 expires, u8 n, n x (str sku, u32 qty, u64 price) */
    CELL_OP_ORDER_UPDATE = 2, /* u8 shadow, u64 id, u8 status, str payment_id, i64 updated */
    CELL_OP_STOCK        = 3, /* str sku, u8 shadow, u64 price, u64 granted, u64 returned, u64 sold */
    CELL_OP_OUTBOX       = 4, /* u8 shadow, u64 event_id, u64 order_id, str type, blob payload, i64 created */
};

enum order_status { ST_PENDING = 0, ST_PAID = 1, ST_CANCELLED = 2, ST_EXPIRED = 3 };
extern const char *const cell_status_name[4];

typedef struct cell_batch {
    uint64_t seq;
    d11_buf  ops;
    uint32_t nops;
    d11_buf  replies;
    uint32_t nreplies;
    d11_buf  returns; /* RETURN frames to send to the center after commit */
    int      result;  /* set by the storage thread: 0 or D11_ESTORE */
    int64_t  commit_us;
} cell_batch;

typedef struct cell_store {
    sqlite3        *db;
    int             durability;
    int64_t         async_flush_ms;
    int64_t         last_sync_ms;
    pthread_t       thread;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    cell_batch     *todo;   /* guarded by mu */
    bool            quit;   /* guarded by mu */
    int             done_fd; /* eventfd: storage -> logic "batch done" */
    cell_batch     *done;   /* guarded by mu */
    sqlite3_stmt   *ins_order[2], *ins_item[2], *upd_order[2], *ins_outbox[2], *up_stock;
    uint64_t        fail_commit_at; /* fault injection: fail the Nth commit (0 = never) */
    uint64_t        commits;
} cell_store;

/* Open the database, create the schema. 0 or D11_ESTORE. */
int  cell_store_open(cell_store *s, const char *path, int durability, int64_t async_flush_ms);
/* Start the storage thread. */
int  cell_store_start(cell_store *s);
/* Hand a closed batch to the storage thread (must be idle: one batch in flight). */
void cell_store_submit(cell_store *s, cell_batch *b);
/* Collect the finished batch (after done_fd became readable), or NULL. */
cell_batch *cell_store_collect(cell_store *s);
/* Stop the thread (after the last batch was collected) and close the database. */
void cell_store_stop(cell_store *s);

#endif
