/*
 * db.h — DATA/stats.db, the aggregator's SQLite file (docs/stats.md). One table of window
 * rows (win: kind, dim, key, start -> the D11_V_* counters) and one of state (meta: the
 * event-stream cursor, the watermark, events folded, late events per window kind).
 *
 * Exactly-once: d11_stats_db_commit adds a batch's deltas AND moves the cursor in ONE
 * transaction (BEGIN IMMEDIATE ... COMMIT), after checking that the stored cursor is the
 * one the batch was read from (compare-and-set: a second writer, or a stale process,
 * gets D11_STATS_ECONFLICT and must reload). A crash before COMMIT loses both, so the
 * page is read and folded again; after COMMIT both are kept. WAL, synchronous=NORMAL:
 * a power loss may take back the last commits, cursor and sums together.
 *
 * Readers (GET /v1/stats) use their own read-only connection; a render runs in one read
 * transaction, so windows, days and cursor are one consistent snapshot.
 * Ownership: one d11_stats_db per thread.
 */
#ifndef D11_STATS_DB_H
#define D11_STATS_DB_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/util.h"
#include "agg.h"

#define D11_STATS_ECONFLICT   (-EAGAIN)
#define D11_STATS_CURSOR_BYTES_MAX (3 + D11_CELLS_MAX * 21)
#define D11_STATS_TOP_MAX     100   /* SKUs / categories listed in a day answer */
#define D11_STATS_LIMIT_MAX   3600  /* windows in one answer */

typedef struct d11_stats_db d11_stats_db;

typedef struct d11_stats_state {
    char     cursor[D11_STATS_CURSOR_BYTES_MAX + 1]; /* "" = from the oldest retained event */
    int64_t  wm;
    uint64_t events;
    uint64_t late[D11_WIN_KINDS];
} d11_stats_state;

/* Open (and create unless readonly) path. 0 or negative error (logged). */
int  d11_stats_db_open(const char *path, bool readonly, d11_stats_db **out);
void d11_stats_db_close(d11_stats_db *d);
int  d11_stats_db_state(d11_stats_db *d, d11_stats_state *st);
/*
 * One page: if the stored cursor == expect, add b's rows, prune windows beyond the kept
 * counts (agg.h), store cursor `next`, the batch's watermark, events and late counters,
 * in one transaction. before_commit (may be NULL) runs inside the transaction, just
 * before COMMIT (a test hook). 0, D11_STATS_ECONFLICT, or -EIO.
 */
int d11_stats_db_commit(d11_stats_db *d, const char *expect, const char *next, const d11_stats_batch *b,
                        void (*before_commit)(void *), void *ctx);

typedef struct d11_stats_query {
    int         kind;     /* D11_WIN_* */
    const char *sku;      /* NULL: totals */
    int64_t     since_ms; /* windows starting at or after */
    int         limit;    /* newest first, 1..D11_STATS_LIMIT_MAX */
    int         top;      /* day answers: SKUs / categories listed (0..D11_STATS_TOP_MAX) */
} d11_stats_query;

/* The JSON answer of GET /v1/stats (docs/stats.md) appended to out. 0 or -EIO. */
int d11_stats_db_render(d11_stats_db *d, const d11_stats_query *q, d11_buf *out);



/* Up to n SKU keys of day window `day`, by units paid then created; count or -EIO. */
int d11_stats_db_top_skus(d11_stats_db *d, int64_t day, int n, char (*keys)[D11_STATS_KEY_BYTES_MAX + 1]);
#endif
