/*
 * metrics.c — the gateway's counters (see metrics.h): the status and latency tables, the
 * per-request update done by the owning thread, and the Prometheus text exposition,
 * which sums every thread's counters with relaxed loads (any thread may serve /metrics).
 */
#include "metrics.h"

#include <stdio.h>
#include <string.h>

#include "gw.h"
#include "products.h"
#include "stats.h"

const int gw_status_codes[GW_STATUS_N] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413,
                                          414, 422, 429, 431, 500, 502, 503, 504, 505, 0};

int gw_status_idx(int status)
{
    for (int i = 0; i < GW_STATUS_N - 1; i++)
        if (gw_status_codes[i] == status) return i;
    return GW_STATUS_N - 1;
}

const int64_t gw_lat_bounds_us[GW_LAT_N] = {500,    1000,   2000,    5000,    10000,  20000, 50000,
                                            100000, 200000, 500000, 1000000, 2000000, 5000000};

const char *const gw_errcodes[GW_ERRCODE_N] = {
    "bad_request",    "bad_json",       "invalid",         "unauthorized",    "forbidden",
    "not_found",      "method_not_allowed", "exists",      "unknown_sku",     "out_of_stock",
    "not_payable",    "not_cancellable", "idempotency_mismatch", "version_conflict", "rate_limited",
    "degraded",       "risk_rejected",  "too_large",       "uri_too_long",    "headers_too_large",
    "request_timeout", "timeout",       "unavailable",     "internal",        "no_history",
    "expired",        "conflict",       "risk_challenge", "risk_denied",    "other"};

int gw_errcode_idx(const char *body, size_t n)
{
    static const char pre[] = "{\"error\":{\"code\":\"";
    size_t pl = sizeof pre - 1;
    if (n <= pl || memcmp(body, pre, pl) != 0) return -1;
    const char *c = body + pl;
    const char *e = memchr(c, '"', n - pl);
    if (!e) return -1;
    size_t cn = (size_t)(e - c);
    for (int i = 0; i < GW_ERRCODE_N - 1; i++)
        if (strlen(gw_errcodes[i]) == cn && memcmp(gw_errcodes[i], c, cn) == 0) return i;
    return GW_ERRCODE_N - 1;
}

void gw_metrics_order(gw_metrics *m, int status, const char *body, size_t n, int64_t us)
{
    int k = 0;
    while (k < D11_HIST_US_N && us > d11_hist_us_bounds[k]) k++;
    gw_ctr_add(&m->order_lat[k], 1);
    if (status != 201) return;
    static const char key[] = "\"total_cents\":";
    const char *p = memmem(body, n, key, sizeof key - 1);
    if (!p) return;
    p += sizeof key - 1;
    uint64_t v = 0;
    while (p < body + n && *p >= '0' && *p <= '9' && v < UINT64_MAX / 10) v = v * 10 + (uint64_t)(*p++ - '0');
    gw_ctr_add(&m->gmv_cents, v);
}

void gw_metrics_errcode(gw_metrics *m, int route, const char *body, size_t n)
{
    D11_ASSERT(route >= 0 && route < GW_ROUTES_MAX);
    int i = gw_errcode_idx(body, n);
    if (i >= 0) gw_ctr_add(&m->errcodes[route][i], 1);
}

void gw_metrics_request(gw_metrics *m, int route, int status, int64_t us)
{
    D11_ASSERT(route >= 0 && route < GW_ROUTES_MAX);
    gw_ctr_add(&m->req[route][gw_status_idx(status)], 1);
    int b = 0;
    while (b < GW_LAT_N && us > gw_lat_bounds_us[b]) b++;
    gw_ctr_add(&m->lat[route][b], 1);
    gw_ctr_add(&m->lat_sum_us[route], (uint64_t)(us > 0 ? us : 0));
}

void gw_metrics_render(struct gw *g, d11_buf *b)
{
    int T = g->nthreads;
#define SUM(expr)                                                                          \
    ({                                                                                     \
        uint64_t _s = 0;                                                                   \
        for (int _i = 0; _i < T; _i++) {                                                   \
            gw_metrics *m = &g->threads[_i].m;                                              \
            (void)m;                                                                       \
            _s += (uint64_t)atomic_load_explicit(&(expr), memory_order_relaxed);            \
        }                                                                                  \
        _s;                                                                                \
    })
    d11_buf_puts(b, "# HELP d11_gateway_requests_total HTTP requests answered, by route and status.\n"
                    "# TYPE d11_gateway_requests_total counter\n");
    for (int r = 0; r < g->nroutes; r++)
        for (int s = 0; s < GW_STATUS_N; s++) {
            uint64_t v = SUM(m->req[r][s]);
            if (!v) continue;
            if (gw_status_codes[s])
                d11_buf_printf(b, "d11_gateway_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               g->route_labels[r], gw_status_codes[s], (unsigned long long)v);
            else
                d11_buf_printf(b, "d11_gateway_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                               g->route_labels[r], (unsigned long long)v);
        }
    d11_buf_puts(b, "# HELP d11_gateway_request_duration_seconds Time from request parsed to response queued.\n"
                    "# TYPE d11_gateway_request_duration_seconds histogram\n");
    for (int r = 0; r < g->nroutes; r++) {
        uint64_t cum = 0, total = 0;
        for (int k = 0; k <= GW_LAT_N; k++) total += SUM(m->lat[r][k]);
        if (!total) continue;
        for (int k = 0; k <= GW_LAT_N; k++) {
            cum += SUM(m->lat[r][k]);
            if (k < GW_LAT_N)
                d11_buf_printf(b, "d11_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                               g->route_labels[r], (double)gw_lat_bounds_us[k] / 1e6, (unsigned long long)cum);
            else
                d11_buf_printf(b, "d11_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                               g->route_labels[r], (unsigned long long)cum);
        }
        d11_buf_printf(b, "d11_gateway_request_duration_seconds_sum{route=\"%s\"} %.6f\n", g->route_labels[r],
                       (double)SUM(m->lat_sum_us[r]) / 1e6);
        d11_buf_printf(b, "d11_gateway_request_duration_seconds_count{route=\"%s\"} %llu\n", g->route_labels[r],
                       (unsigned long long)total);
    }
    d11_buf_puts(b, "# HELP d11_gateway_errors_total Error answers by route and error code (out_of_stock included).\n"
                    "# TYPE d11_gateway_errors_total counter\n");
    for (int r = 0; r < g->nroutes; r++)
        for (int k = 0; k < GW_ERRCODE_N; k++) {
            uint64_t v = SUM(m->errcodes[r][k]);
            if (v)
                d11_buf_printf(b, "d11_gateway_errors_total{route=\"%s\",code=\"%s\"} %llu\n", g->route_labels[r],
                               gw_errcodes[k], (unsigned long long)v);
        }
    d11_buf_puts(b, "# HELP d11_gateway_slow_requests_total Requests slower than --slow-request-ms (each logged).\n"
                    "# TYPE d11_gateway_slow_requests_total counter\n");
    for (int r = 0; r < g->nroutes; r++) {
        uint64_t v = SUM(m->slow_requests[r]);
        if (v)
            d11_buf_printf(b, "d11_gateway_slow_requests_total{route=\"%s\"} %llu\n", g->route_labels[r],
                           (unsigned long long)v);
    }
    d11_buf_printf(b, "# HELP d11_gateway_gmv_cents_total Sum of total_cents of the orders created (201) through this gateway.\n"
                      "# TYPE d11_gateway_gmv_cents_total counter\nd11_gateway_gmv_cents_total %llu\n",
                   (unsigned long long)SUM(m->gmv_cents));
    int64_t inflight = 0, open = 0;
    for (int i = 0; i < T; i++) {
        inflight += atomic_load_explicit(&g->threads[i].m.inflight, memory_order_relaxed);
        open += atomic_load_explicit(&g->threads[i].m.conns_open, memory_order_relaxed);
    }
    d11_buf_printf(b, "# HELP d11_gateway_inflight_requests Requests parsed and not yet answered.\n"
                      "# TYPE d11_gateway_inflight_requests gauge\nd11_gateway_inflight_requests %lld\n",
                   (long long)inflight);
    d11_buf_printf(b, "# HELP d11_gateway_connections Open client connections.\n"
                      "# TYPE d11_gateway_connections gauge\nd11_gateway_connections %lld\n",
                   (long long)open);
    d11_buf_printf(b, "# HELP d11_gateway_connections_accepted_total Client connections accepted.\n"
                      "# TYPE d11_gateway_connections_accepted_total counter\n"
                      "d11_gateway_connections_accepted_total %llu\n",
                   (unsigned long long)SUM(m->conns_accepted));
    d11_buf_printf(b, "# HELP d11_gateway_connections_rejected_total Connections closed at accept (over the per-thread limit).\n"
                      "# TYPE d11_gateway_connections_rejected_total counter\n"
                      "d11_gateway_connections_rejected_total %llu\n",
                   (unsigned long long)SUM(m->conns_rejected));
    static const char *rule_names[GW_RULE_N] = {"flow", "degrade", "risk"};
    d11_buf_puts(b, "# HELP d11_gateway_rejections_total Requests refused by a rule.\n"
                    "# TYPE d11_gateway_rejections_total counter\n");
    for (int k = 0; k < GW_RULE_N; k++)
        for (int res = 0; res < D11_RES_COUNT; res++)
            d11_buf_printf(b, "d11_gateway_rejections_total{rule=\"%s\",resource=\"%s\"} %llu\n", rule_names[k],
                           d11_res_names[res], (unsigned long long)SUM(m->rejections[k][res]));
    static const char *uperr_names[GW_UPERR_N] = {"unavailable", "timeout", "dropped", "protocol", "status_5xx"};
    d11_buf_puts(b, "# HELP d11_gateway_upstream_errors_total Failed upstream requests by target and kind.\n"
                    "# TYPE d11_gateway_upstream_errors_total counter\n");
    d11_buf_puts(b, "# HELP d11_gateway_upstream_connected Gateway threads connected to the target.\n"
                    "# TYPE d11_gateway_upstream_connected gauge\n");
    for (int u = 0; u < GW_UP_N; u++) {
        if (!SUM(m->up_wanted[u])) continue;
        const char *nm = g->threads[0].ups.up[u].name;
        d11_buf_printf(b, "d11_gateway_upstream_connected{target=\"%s\"} %llu\n", nm,
                       (unsigned long long)SUM(m->up_connected[u]));
        for (int k = 0; k < GW_UPERR_N; k++) {
            uint64_t v = SUM(m->uperr[u][k]);
            if (v)
                d11_buf_printf(b, "d11_gateway_upstream_errors_total{target=\"%s\",kind=\"%s\"} %llu\n", nm,
                               uperr_names[k], (unsigned long long)v);
        }
    }
    d11_buf_printf(b, "# HELP d11_gateway_late_replies_total Upstream replies that arrived after their deadline.\n"
                      "# TYPE d11_gateway_late_replies_total counter\nd11_gateway_late_replies_total %llu\n",
                   (unsigned long long)SUM(m->late_replies));
    d11_buf_printf(b, "# HELP d11_gateway_pending_full_total Requests refused because the pending table was full.\n"
                      "# TYPE d11_gateway_pending_full_total counter\nd11_gateway_pending_full_total %llu\n",
                   (unsigned long long)SUM(m->pending_full));
    d11_buf_printf(b, "# HELP d11_gateway_rules_version Version of the rules in force.\n"
                      "# TYPE d11_gateway_rules_version gauge\nd11_gateway_rules_version %llu\n",
                   (unsigned long long)d11_rules_store_version(&g->rules));
    d11_buf_printf(b, "# HELP d11_gateway_routing_version Routing table version (0 = default split).\n"
                      "# TYPE d11_gateway_routing_version gauge\nd11_gateway_routing_version %u\n",
                   (unsigned)atomic_load(&g->threads[0].m.routing_version));
    d11_buf_printf(b, "# HELP d11_gateway_threads Event-loop threads.\n"
                      "# TYPE d11_gateway_threads gauge\nd11_gateway_threads %d\n", T);
    d11_buf_printf(b, "# HELP d11_gateway_uptime_seconds Seconds since start.\n"
                      "# TYPE d11_gateway_uptime_seconds gauge\nd11_gateway_uptime_seconds %.3f\n",
                   (double)(d11_mono_ms() - g->start_ms) / 1000.0);
    d11_buf_puts(b, "# HELP d11_gateway_breaker_state Circuit breaker per upstream: 0 closed, 1 open, 2 half-open.\n"
                    "# TYPE d11_gateway_breaker_state gauge\n");
    for (int u = 0; u < GW_UP_N; u++)
        if (SUM(m->up_wanted[u]))
            d11_buf_printf(b, "d11_gateway_breaker_state{target=\"%s\"} %d\n", g->threads[0].ups.up[u].name,
                           gw_breaker_state(&g->brk[u]));
    d11_buf_puts(b, "# HELP d11_gateway_breaker_opened_total Times the upstream's circuit breaker opened.\n"
                    "# TYPE d11_gateway_breaker_opened_total counter\n");
    for (int u = 0; u < GW_UP_N; u++)
        if (SUM(m->up_wanted[u]))
            d11_buf_printf(b, "d11_gateway_breaker_opened_total{target=\"%s\"} %llu\n", g->threads[0].ups.up[u].name,
                           (unsigned long long)atomic_load(&g->brk[u].opened_total));
    d11_buf_puts(b, "# HELP d11_gateway_breaker_refused_total Requests answered 503 unavailable because the breaker is open.\n"
                    "# TYPE d11_gateway_breaker_refused_total counter\n");
    for (int u = 0; u < GW_UP_N; u++)
        if (SUM(m->up_wanted[u]))
            d11_buf_printf(b, "d11_gateway_breaker_refused_total{target=\"%s\"} %llu\n", g->threads[0].ups.up[u].name,
                           (unsigned long long)atomic_load(&g->brk[u].refused_total));
    const gw_protect *pr = &g->prot;
    d11_buf_printf(b, "# HELP d11_gateway_protect_inflight Requests admitted by adaptive protection, not yet answered.\n"
                      "# TYPE d11_gateway_protect_inflight gauge\nd11_gateway_protect_inflight %lld\n"
                      "# HELP d11_gateway_protect_limit In-flight limit of adaptive protection (gain x max throughput x min RT).\n"
                      "# TYPE d11_gateway_protect_limit gauge\nd11_gateway_protect_limit %lld\n"
                      "# HELP d11_gateway_protect_max_throughput Highest completions/s of the window.\n"
                      "# TYPE d11_gateway_protect_max_throughput gauge\nd11_gateway_protect_max_throughput %lld\n"
                      "# HELP d11_gateway_protect_min_rt_seconds Lowest response time of the window.\n"
                      "# TYPE d11_gateway_protect_min_rt_seconds gauge\nd11_gateway_protect_min_rt_seconds %.6f\n"
                      "# HELP d11_gateway_protect_refused_total Requests refused 503 overloaded, by reason.\n"
                      "# TYPE d11_gateway_protect_refused_total counter\n"
                      "d11_gateway_protect_refused_total{reason=\"inflight\"} %llu\n"
                      "d11_gateway_protect_refused_total{reason=\"rt\"} %llu\n",
                   (long long)atomic_load_explicit(&pr->inflight, memory_order_relaxed),
                   (long long)atomic_load_explicit(&pr->limit, memory_order_relaxed),
                   (long long)atomic_load_explicit(&pr->max_tput, memory_order_relaxed),
                   (double)atomic_load_explicit(&pr->min_rt_us, memory_order_relaxed) / 1e6,
                   (unsigned long long)atomic_load_explicit(&pr->refused[GW_PROTECT_INFLIGHT], memory_order_relaxed),
                   (unsigned long long)atomic_load_explicit(&pr->refused[GW_PROTECT_RT], memory_order_relaxed));
    gw_events_metrics(g, &g->events, b); /* events.c: heads seen, consumer lag */
    gw_hooks_metrics(&g->hooks, b);      /* webhooks.c: delivered, retries, dead letters */
    gw_retention_metrics(&g->events, b); /* retention.c: outbox size, oldest event age */
    if (g->cfg.nats[0]) gw_nats_metrics(&g->nats, b); /* nats_relay.c */
    gw_risk_metrics(&g->risk, b);        /* risk_log.c: decisions, models, velocity table */
    gw_products_metrics(g, b); /* products.c: hot SKUs, product cache hits, invalidations */
    gw_stats_metrics(g, b);              /* stats_http.c: the live-sale-numbers aggregator */
    gw_cflow_metrics(&g->rules, b); /* cluster_flow.c: leases, fallback */
#undef SUM
}
