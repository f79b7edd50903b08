/*
 * events.h — the event stream API (docs/events.md): GET /v1/events (a merge of every
 * cell's committed outbox behind one opaque cursor, long-poll) and named durable
 * consumers (/v1/consumers/{name}: a committed cursor per name, DATA/consumers/<name>).
 * Thread: the connection's thread; consumer files are shared by all threads (atomic
 * rename) and the per-cell heads seen (struct gw_events) are atomics.
 */
#ifndef D11_GW_EVENTS_H
#define D11_GW_EVENTS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/util.h"
#include "topk.h"

struct gw;

#define GW_PC_GEN_N          1024 /* product cache: SKU-hash buckets of invalidation generations */
#define GW_HOT_THREADS_MAX   64   /* gateway threads whose hot-SKU summary is counted */

/* One gateway thread's hot-SKU summary (products.c): written by its thread, copied by a
 * scrape, both under mu; lives as long as struct gw (a zeroed mutex is a valid one). */
typedef struct gw_hot_box {
    pthread_mutex_t mu;
    bool            used;
    gw_topk         k;
} gw_hot_box;

#define GW_PCACHE_N              256  /* product cache entries per gateway process (direct-mapped) */
#define GW_PCACHE_BODY_MAX       2560 /* a product JSON larger than this is not cached */

/* One product cache entry, shared by the gateway's threads (products.c), so that every
 * connection sees the same, newest fill: reads never go back in time across threads.
 * Under mu; a zeroed mutex is a valid one. */
typedef struct gw_pshared {
    pthread_mutex_t mu;
    char            sku[D11_SKU_BYTES_MAX + 1];
    uint8_t         skun;
    uint32_t        gen;      /* pc_gen of the bucket when the filling request was sent */
    uint64_t        stamp;    /* the fill's send stamp (pc_stamp): a later send replaces it */
    int64_t         until_ms; /* served while now < until_ms; 0 = empty */
    uint32_t        len;
    char            body[GW_PCACHE_BODY_MAX];
} gw_pshared;

/* Process-wide: the newest committed event id each cell reported, per stream (lag). */
typedef struct gw_events {
    _Atomic uint64_t head[2][D11_CELLS_MAX];
    _Atomic uint64_t pruned[2][D11_CELLS_MAX];    /* retention watermark (retention.c) */
    _Atomic int64_t  oldest_at[2][D11_CELLS_MAX]; /* oldest kept event's time, 0 = none */
    _Atomic uint64_t prune_rounds;
    /* retention.c, gateway thread 0 only */
    int              prune_outstanding;
    int64_t          prune_next_ms;
    /* the product cache (products.c): invalidation driven by the center's events */
    _Atomic uint32_t pc_gen[GW_PC_GEN_N];  /* bumped per product event, bucket = SKU hash */
    _Atomic uint32_t pc_list_gen;          /* bumped by any product event: listing pages */
    _Atomic uint64_t pc_center_pos;        /* the center event id the tail has applied */
    _Atomic int64_t  pc_tail_ok_ms;        /* monotonic send time of the last answered tail */
    _Atomic int      pc_tail_busy;         /* one tail read in flight per process */
    _Atomic uint64_t pc_invalidations;
    _Atomic uint64_t pc_stamp;             /* send stamps of product cache fills */
    gw_pshared       pc[GW_PCACHE_N];          /* the product cache (L1), shared by the threads */
    gw_hot_box       hot[GW_HOT_THREADS_MAX]; /* per gateway thread id */
} gw_events;

typedef struct gw_req gw_req;
typedef struct gw_thread gw_thread;

void gw_h_events(gw_thread *t, gw_req *rq);
void gw_h_consumer_get(gw_thread *t, gw_req *rq);
void gw_h_consumer_put(gw_thread *t, gw_req *rq);

/* Cursor codec (pure; unit-tested): "<e|s>1" then ".<pos>" per cell, pos = the last
 * event id delivered from that cell, then ".c<pos>" for the center's events when not 0
 * (added later: a cursor without it = the center from its oldest kept event). Decode: 0,
 * or -1 when malformed; missing cells = 0. In the array the center's position lives at
 * index GW_EV_CENTER (the last; a 64th cell's number decodes there too, so the center's
 * stream is served only while the routing table has fewer than D11_CELLS_MAX cells). */
#define GW_EV_CENTER (D11_CELLS_MAX - 1)
int  gw_cursor_decode(const char *s, size_t n, int *shadow, uint64_t pos[D11_CELLS_MAX]);
void gw_cursor_encode(d11_buf *b, int shadow, const uint64_t *pos, int ncells);

/* Retention (retention.c): on gateway thread 0's sweep, every D11_EVENTS_PRUNE_MS, ask
 * every cell to prune what every sink has and is older than --events-retention-ms. */
void gw_events_retention_tick(gw_thread *t);
/* Outbox size (id distance) and oldest event age per cell and stream, for /metrics. */
void gw_retention_metrics(gw_events *ev, d11_buf *b);

/* d11_consumer_lag_events{consumer="..."} lines for /metrics. */
void gw_events_metrics(struct gw *g, gw_events *ev, d11_buf *b);

#endif
