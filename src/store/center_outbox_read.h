/*
 * center_outbox_read.h — the read side of the center's outbox (table center_outbox of
 * DATA/center.db, written by center_sqlite.c from CENTER_OP_EVENT records in the same
 * transaction as the product change): committed events, oldest first, through a SECOND,
 * read-only SQLite connection (WAL: it never blocks the center's writer and sees only
 * committed transactions). The center's twin of store/outbox_read.h (the cells'), kept
 * apart because the tables differ (a product event has a SKU, not an order).
 *
 * Invariants: event ids are assigned by the center in commit order (center_events.c), so
 * a read of ids > after never skips an event committed later with a smaller id. The
 * watermark center_outbox_pruned.through says which ids retention deleted.
 * Ownership/threads: one reader, used by the center's loop thread only.
 * PostgreSQL: no reader (open fails on a file that is not SQLite; EVENTS_READ -> 503).
 */
#ifndef D11_CENTER_OUTBOX_READ_H
#define D11_CENTER_OUTBOX_READ_H

#include <stddef.h>
#include <stdint.h>

typedef struct d11_center_outbox d11_center_outbox;

typedef struct d11_center_event {
    uint64_t    event_id;
    int64_t     created_at;                /* ms since the epoch: the commit */
    const char *type, *sku, *trace_id, *data; /* valid during the callback */
    size_t      type_n, sku_n, trace_id_n, data_n;
} d11_center_event;

typedef int d11_center_event_fn(void *ctx, const d11_center_event *e);

/* Open path read-only. 0 or D11_ESTORE (logged). */
int  d11_center_outbox_open(const char *path, d11_center_outbox **out);
void d11_center_outbox_close(d11_center_outbox *r);
/* Newest committed event id (0 when none) and the pruned watermark. 0 or D11_ESTORE. */
int  d11_center_outbox_bounds(d11_center_outbox *r, uint64_t *head, uint64_t *pruned);
/* Up to limit events with id > after, oldest first: the count, or < 0. */
int  d11_center_outbox_read(d11_center_outbox *r, uint64_t after, uint32_t limit, d11_center_event_fn *fn,
                            void *ctx);
/* Retention, as d11_outbox_prune_point (outbox_read.h): the largest id upto such that
 * every kept event with id <= upto has id <= through, was created before cutoff_ms, is
 * not the newest, and they are at most max_rows. 0 or D11_ESTORE. */
int  d11_center_outbox_prune_point(d11_center_outbox *r, uint64_t through, int64_t cutoff_ms, uint32_t max_rows,
                                   uint64_t *upto, uint64_t *head, int64_t *oldest_at);

#endif
