/*
 * agg.h — live sale numbers (docs/stats.md): the pure part of the aggregator. It folds
 * order events into tumbling windows (1 s, 1 min, UTC day) and keeps, per window, the
 * totals and the per-SKU and per-category figures, as *deltas* of one page of events;
 * db.c then adds a batch to DATA/stats.db in the SAME transaction as the stream cursor
 * that page ends at (exactly-once). No I/O here; unit-tested (tests/unit/stats).
 *
 * Windows: kind k has length d11_stats_win_ms[k]; the window of an event is
 * [floor(at / len) * len, + len) (ms since the epoch, so the day window is the UTC day).
 * Watermark: the largest `at` folded so far (kept with the cursor). A window is closed
 * once the watermark is >= its end + D11_STATS_LATENESS_MS; an event whose window is
 * closed is LATE: it is still counted into its own window, and also in that window's
 * `late` counter (never dropped). Late status depends only on (watermark, event), so a
 * replayed page folds to the same deltas.
 *
 * Invariants: a batch holds at most D11_STATS_PAGE events; every row it can need fits
 * (D11_STATS_BATCH_SLOTS >= 2 x the worst case), so d11_stats_add fails only on a caller
 * bug (asserted). Ownership: the caller owns the batch (one thread).
 */
#ifndef D11_STATS_AGG_H
#define D11_STATS_AGG_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/limits.h"

enum { D11_WIN_1S = 0, D11_WIN_1M, D11_WIN_DAY, D11_WIN_KINDS };
enum { D11_EV_CREATED = 0, D11_EV_PAID, D11_EV_CANCELLED, D11_EV_EXPIRED, D11_EV_TYPES };
/* dimension of a row */
enum { D11_DIM_TOTAL = 0, D11_DIM_SKU, D11_DIM_CATEGORY, D11_DIMS };
/* the values of a row (columns of stats.db, names in d11_stats_col) */
enum {
    D11_V_CREATED = 0, /* orders created (dim SKU / category: orders with a line of it) */
    D11_V_PAID,
    D11_V_CANCELLED,   /* totals only (the event carries no lines) */
    D11_V_EXPIRED,     /* totals only */
    D11_V_GMV_CREATED, /* cents: total_cents of created orders (dims: price * qty of the lines) */
    D11_V_GMV_PAID,    /* cents: total_cents of paid orders */
    D11_V_UNITS_CREATED,
    D11_V_UNITS_PAID,
    D11_V_LATE,        /* totals only: events counted after this window closed */
    D11_V_N
};

#define D11_STATS_PAGE         200     /* events per page = per transaction */
#define D11_STATS_LATENESS_MS  2000    /* a window closes this long after its end (watermark) */
#define D11_STATS_KEEP_1S      900     /* 1 s windows kept (15 min) */
#define D11_STATS_KEEP_1M      1440    /* 1 min windows kept (a day) */
#define D11_STATS_KEEP_DAY     400     /* day windows kept */
/* worst case rows of a page: 3 kinds x (1 total + 16 SKUs + 16 categories) per event */
#define D11_STATS_BATCH_ROWS_MAX (D11_STATS_PAGE * D11_WIN_KINDS * (1 + 2 * D11_ORDER_ITEMS_MAX))
#define D11_STATS_BATCH_SLOTS  32768   /* power of two, >= 1.5 x the worst case */
_Static_assert(D11_STATS_BATCH_SLOTS >= D11_STATS_BATCH_ROWS_MAX * 3 / 2, "batch table too small");
_Static_assert((D11_STATS_BATCH_SLOTS & (D11_STATS_BATCH_SLOTS - 1)) == 0, "power of two");

#define D11_STATS_KEY_BYTES_MAX (D11_SKU_BYTES_MAX > D11_CATEGORY_BYTES_MAX ? D11_SKU_BYTES_MAX : D11_CATEGORY_BYTES_MAX)

extern const int64_t d11_stats_win_ms[D11_WIN_KINDS];
extern const int d11_stats_keep[D11_WIN_KINDS];
extern const char *const d11_stats_win_name[D11_WIN_KINDS]; /* "1s", "1m", "day" */
extern const char *const d11_stats_col[D11_V_N];            /* column / JSON names */

typedef struct d11_stats_line {
    char     sku[D11_SKU_BYTES_MAX + 1];
    char     cat[D11_CATEGORY_BYTES_MAX + 1];
    uint32_t qty;
    uint64_t price_cents;
} d11_stats_line;

typedef struct d11_stats_event {
    int            type;   /* D11_EV_* */
    int64_t        at;     /* ms since the epoch, >= 0 */
    uint64_t       total_cents;
    int            nlines; /* created / paid: the order's lines; 0 otherwise */
    d11_stats_line lines[D11_ORDER_ITEMS_MAX];
} d11_stats_event;

typedef struct d11_stats_row {
    bool     used;
    uint8_t  kind, dim;
    int64_t  start;
    char     key[D11_STATS_KEY_BYTES_MAX + 1]; /* "" for totals */
    uint64_t v[D11_V_N];
} d11_stats_row;

typedef struct d11_stats_batch {
    d11_stats_row *slot;     /* [D11_STATS_BATCH_SLOTS] */
    int           *used_idx; /* slots in use, in first-use order (deterministic apply) */
    int            nused;
    int            nevents;
    int64_t        wm;       /* watermark after the events added */
    uint64_t       late[D11_WIN_KINDS];
} d11_stats_batch;

/* Allocate an empty batch; 0 or -ENOMEM. */
int  d11_stats_batch_init(d11_stats_batch *b);
void d11_stats_batch_free(d11_stats_batch *b);
/* Empty it, starting from watermark wm (the stored one). */
void d11_stats_batch_reset(d11_stats_batch *b, int64_t wm);
/* Fold one event (at most D11_STATS_PAGE per batch). */
void d11_stats_add(d11_stats_batch *b, const d11_stats_event *e);
/* Window start of `at` for kind k. */
int64_t d11_stats_win_start(int kind, int64_t at);
/* True when the window [start, start + len) is closed at watermark wm. */
bool d11_stats_closed(int kind, int64_t start, int64_t wm);
/* Row lookup (NULL when absent), for tests and the apply loop. */
const d11_stats_row *d11_stats_find(const d11_stats_batch *b, int kind, int dim, int64_t start, const char *key);
/* Event type from its name ("order.created", ...), -1 when unknown. */
int d11_stats_type(const char *name);

#endif
