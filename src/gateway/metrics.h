/*
 * metrics.h — the gateway's counters and their Prometheus exposition.
 *
 * Each event-loop thread owns one gw_metrics and is its only writer (gw_ctr_add /
 * gw_gauge_add: relaxed load + store, no read-modify-write needed); any thread may read
 * every thread's counters with relaxed loads, which is what gw_metrics_render does when
 * a thread serves /metrics. So the request path takes no lock and shares no cache line.
 *
 * Request counters are indexed by route id (0 = "other": unknown routes, 404/405,
 * malformed requests; 1..n = the route table's lines, see router.h) and by status index
 * (gw_status_idx). The route labels come from struct gw (filled by the router at start),
 * so this file knows nothing about routes.
 */
#ifndef D11_GW_METRICS_H
#define D11_GW_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/promtext.h"
#include "../core/util.h"
#include "rules.h"

#define GW_ROUTES_MAX 64 /* route ids 0..GW_ROUTES_MAX-1: "other" + the route table */

#define GW_STATUS_N 21 /* tracked statuses + "other" */
extern const int gw_status_codes[GW_STATUS_N];
/* Index of an HTTP status in gw_status_codes (the last one, "other", when untracked). */
int gw_status_idx(int status);

#define GW_LAT_N 13 /* finite latency buckets; +1 for +Inf */
extern const int64_t gw_lat_bounds_us[GW_LAT_N];

/* Error codes of 4xx/5xx JSON answers (docs/api.md), counted by route; the last is "other". */
#define GW_ERRCODE_N 30
extern const char *const gw_errcodes[GW_ERRCODE_N];
/* Index of the code of an error body ({"error":{"code":"X",...), or -1 when body is not one. */
int gw_errcode_idx(const char *body, size_t n);

enum { GW_RULE_FLOW, GW_RULE_DEGRADE, GW_RULE_RISK, GW_RULE_N };
enum { GW_UPERR_UNAVAILABLE, GW_UPERR_TIMEOUT, GW_UPERR_DROPPED, GW_UPERR_PROTOCOL, GW_UPERR_5XX,
       GW_UPERR_N };

/* upstream targets: 0 = center, 1 + i = cell i */
#define GW_UP_CENTER 0
#define GW_UP_N (1 + D11_CELLS_MAX)
static inline int gw_up_cell(int cell) { return 1 + cell; }

typedef struct gw_metrics {
    _Atomic uint64_t req[GW_ROUTES_MAX][GW_STATUS_N];
    _Atomic uint64_t lat[GW_ROUTES_MAX][GW_LAT_N + 1];
    _Atomic uint64_t lat_sum_us[GW_ROUTES_MAX];
    _Atomic int64_t  inflight;
    _Atomic int64_t  conns_open;
    _Atomic uint64_t conns_accepted;
    _Atomic uint64_t conns_rejected;
    _Atomic uint64_t rejections[GW_RULE_N][D11_RES_COUNT];
    _Atomic uint64_t uperr[GW_UP_N][GW_UPERR_N];
    _Atomic uint64_t late_replies;
    _Atomic uint64_t pending_full;
    _Atomic uint8_t  up_connected[GW_UP_N];
    _Atomic uint8_t  up_wanted[GW_UP_N];
    _Atomic uint32_t routing_version;
    _Atomic uint64_t errcodes[GW_ROUTES_MAX][GW_ERRCODE_N];
    _Atomic uint64_t slow_requests[GW_ROUTES_MAX];
    _Atomic uint64_t order_lat[D11_HIST_US_N + 1]; /* POST /v1/orders, fine buckets (sale.c) */
    _Atomic uint64_t gmv_cents;                    /* total_cents of the orders created (201) */
} gw_metrics;

/* Single-writer counter bump (the owning thread), readable by any thread. */
static inline void gw_ctr_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}
static inline void gw_gauge_add(_Atomic int64_t *g, int64_t v)
{
    atomic_store_explicit(g, atomic_load_explicit(g, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

/* One answered request: status and latency by route (owning thread only). */
void gw_metrics_request(gw_metrics *m, int route, int status, int64_t us);
/* POST /v1/orders answered: its latency in fine buckets, and on 201 the order's total_cents
 * (GMV) read from the body (owning thread only). */
void gw_metrics_order(gw_metrics *m, int status, const char *body, size_t n, int64_t us);
/* The error code of an answered request with a JSON error body (owning thread only). */
void gw_metrics_errcode(gw_metrics *m, int route, const char *body, size_t n);

struct gw;
/* Append the Prometheus text exposition of every thread's counters (any thread). */
void gw_metrics_render(struct gw *g, d11_buf *out);

#endif
