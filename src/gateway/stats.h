/*
 * stats.h — live sale numbers in the gateway (docs/stats.md): the aggregator thread
 * (stats_worker.c) and GET /v1/stats, GET /dashboard/stats (stats_http.c).
 *
 * The aggregator is one more gateway thread, like the webhook worker: it reads the real
 * event stream through GET /v1/events on the gateway's own listener (admin token), learns
 * each created / paid order's lines (GET /admin/stats/orders/{id}, kept from the created
 * event for the paid one) and each SKU's category
 * (GET /admin/stats/products/{sku}, cached; both routes are the order / product reads
 * outside protection, flow rules and degrade: one request at a time), folds a page into window deltas (stats/agg.h) and
 * commits deltas + cursor in ONE SQLite transaction to DATA/stats.db (stats/db.h). It runs
 * only while this process holds flock(DATA/stats.lock): a second gateway on the same data
 * directory waits (and takes over when the first dies); the cursor compare-and-set in the
 * transaction guards against double counting even without the lock. After each commit it
 * also commits the named consumer "stats" (a retention sink, lag in /metrics).
 *
 * Ownership: struct gw_stats is made by gw_stats_start before the gateway threads start;
 * rd[i] is gateway thread i's read-only connection (lazily opened, that thread only);
 * the board (dashboard snapshot) is behind mu; counters are atomics.
 */
#ifndef D11_GW_STATS_H
#define D11_GW_STATS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/util.h"

struct gw;
struct d11_stats_db;
typedef struct gw_req gw_req;
typedef struct gw_thread gw_thread;

#define D11_STATS_WAIT_MS      500   /* long-poll of the aggregator's reads at the head */
#define D11_STATS_RETRY_MS     200   /* after a failed read, fetch or commit */
#define D11_STATS_LOCK_RETRY_MS 1000 /* not the owner: try the lock again */
#define D11_STATS_BOARD_MS     1000  /* dashboard snapshot refresh */
#define D11_STATS_BOARD_SKUS   10    /* top SKUs on the big screen */
#define D11_STATS_CAT_CACHE    4096  /* SKU -> category entries (direct-mapped) */
#define D11_STATS_CONSUMER     "stats"

typedef struct gw_stats {
    pthread_t             th;
    bool                  started;
    _Atomic int           stop;
    _Atomic int           owner;    /* 1 while this process holds DATA/stats.lock */
    _Atomic uint64_t      events, pages, conflicts, fetches, failures, cpu_ns, cache_hits;
    _Atomic int64_t       wm;       /* watermark of the last commit (ms since the epoch), 0 = none */
    pthread_mutex_t       mu;       /* guards board */
    d11_buf               board;    /* GET /dashboard/stats body ("" until the first) */
    int                   nrd;
    struct d11_stats_db **rd;       /* [nrd]: gateway thread i's read connection */
    char                  path[1200]; /* DATA/stats.db */
} gw_stats;

/* Make g->stats and start the aggregator thread (before the gateway threads start). */
int  gw_stats_start(struct gw *g);
/* Stop the thread (before the gateway threads are joined). */
void gw_stats_stop(struct gw *g);
/* Free g->stats (after the gateway threads are joined: handlers use rd[]). */
void gw_stats_release(struct gw *g);

void gw_h_stats(gw_thread *t, gw_req *rq);       /* GET /v1/stats */
void gw_h_stats_board(gw_thread *t, gw_req *rq); /* GET /dashboard/stats (no token) */
/* d11_stats_* lines for /metrics. */
void gw_stats_metrics(struct gw *g, d11_buf *b);

#endif
