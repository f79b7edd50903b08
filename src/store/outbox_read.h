/*
 * outbox_read.h — the read side of a cell's outbox: committed events, oldest first, from
 * a SECOND, read-only SQLite connection to DATA/cell-<i>.db (WAL: readers never block the
 * storage thread's writer and see only committed transactions). It is deliberately not
 * part of d11_store_ops (store.h): the write seam stays load/commit/sync/close, and a
 * backend without a reader (the memory store of the simulator) simply has no event
 * stream. A PostgreSQL backend would add its own reader with this interface.
 *
 * Invariants: event ids of one cell are assigned in commit order (batch.c), so a read of
 * ids > after never skips an event committed later with a smaller id. The pruned
 * watermark (table outbox_pruned, written by retention in the same transaction as the
 * DELETE) says which ids are gone: a cursor below it has lost events (410).
 * Ownership/threads: one reader per cell process, used by its logic thread only.
 */
#ifndef D11_OUTBOX_READ_H
#define D11_OUTBOX_READ_H

#include <stddef.h>
#include <sqlite3.h>
#include <stdint.h>

typedef struct d11_outbox_reader d11_outbox_reader;

typedef struct d11_outbox_event {
    uint64_t    event_id, order_id;
    int64_t     created_at;      /* ms since the epoch: the change, committed with it */
    const char *type, *payload;  /* valid during the callback */
    size_t      type_n, payload_n;
} d11_outbox_event;

/* Return 0 to continue, < 0 to stop the read with that value. */
typedef int d11_outbox_event_fn(void *ctx, const d11_outbox_event *e);

/* Open path read-only. 0 or D11_ESTORE (logged). */
int  d11_outbox_reader_open(const char *path, d11_outbox_reader **out);
void d11_outbox_reader_close(d11_outbox_reader *r);
/* Newest committed event id of a stream (0 when empty) and the pruned watermark. */
int  d11_outbox_bounds(d11_outbox_reader *r, int shadow, uint64_t *head, uint64_t *pruned);
/* Up to limit events of the stream with id > after, oldest first: the count, or < 0. */
int  d11_outbox_read(d11_outbox_reader *r, int shadow, uint64_t after, uint32_t limit,
                     d11_outbox_event_fn *fn, void *ctx);

/*
 * The retention scan shared by the cells' and the center's readers: st selects (id, at)
 * of the oldest rows with id > ?1, at most ?2 of them, in id order; the result is as for
 * d11_outbox_prune_point. 0 or D11_ESTORE.
 */
int  d11_outbox_prune_scan(sqlite3_stmt *st, uint64_t pruned, uint32_t max_rows, uint64_t through, int64_t cutoff_ms,
                           uint64_t head, uint64_t *upto, int64_t *oldest_at);
/*
 * Retention: the largest id `upto` such that every event of the stream with pruned < id
 * <= upto has id <= through, was created before cutoff_ms, is not the newest, and they
 * are at most max_rows. *upto = 0 when nothing qualifies. Also the stream's head and the
 * creation time of its oldest kept event (0 when empty). 0 or D11_ESTORE.
 */
int  d11_outbox_prune_point(d11_outbox_reader *r, int shadow, uint64_t through, int64_t cutoff_ms,
                            uint32_t max_rows, uint64_t *upto, uint64_t *head, int64_t *oldest_at);

#endif
