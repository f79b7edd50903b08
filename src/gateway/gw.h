/*
 * gw.h — the gateway's state, passed explicitly: struct gw (one per process) and
 * gw_thread (one per event-loop thread, passed to every function of the request path).
 *
 * Modules (each with its header and contract), from the bottom up:
 *   metrics    counters and /metrics exposition          (metrics.h)
 *   client     HTTP client connections, slots, responses  (client.h)
 *   upstream   wire connections, pending requests, routing (upstream.h)
 *   request    one request being served: errors, path parameters, forwarding (request.h)
 *   orders, products, admin, probes   the handlers, one file per resource
 *   router     the route table and gw_dispatch             (router.h)
 *   gateway    entry point, threads, their d11_loop         (gateway.c)
 * Calls go only downwards: client learns of a parsed request through gw.on_request and
 * upstream reports completions through each pending request's callback, so neither
 * knows the modules above it.
 *
 * Threading model: nthreads identical threads, each with its own SO_REUSEPORT listener,
 * d11_loop (core/loop.h), client connections (a d11_io each), upstream connections (a
 * d11_links table, rpc/link.h), pending table, token table and
 * copy of the rules. Nothing on the request path is shared except the flow buckets
 * (lock-free, rules.c) and the metrics counters (per thread, single writer). struct gw is
 * written only before the threads start, except `stop` (atomic) and the rules store
 * (its own mutex).
 */
#ifndef D11_GW_H
#define D11_GW_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/config.h"
#include "../core/json.h"
#include "../core/limits.h"
#include "../core/loop.h"
#include "../core/otlp.h"
#include "../core/util.h"
#include "../rpc/wire.h"
#include "auth.h"
#include "client.h"
#include "http.h"
#include "metrics.h"
#include "protect.h"
#include "breaker.h"
#include "pace.h"
#include "rules.h"
#include "upstream.h"
#include "events.h"
#include "webhooks.h"
#include "nats_relay.h"

/* A parsed request, handed to the layer above client.c; answer slot si of c. */
typedef void gw_request_fn(gw_thread *t, gw_conn *c, int si, d11_http_req *r);

struct gw_thread {
    struct gw *gw;         /* process-wide state */
    int        id;
    pthread_t  th;
    d11_loop   loop;
    d11_wake   wake;       /* the main thread's "stop" reaches the loop at once */
    d11_timer  sweep;      /* every GW_SWEEP_MS: client timers, token and rules reloads */
    d11_timer  up_timer;   /* wakes the loop for the next upstream deadline or reconnect */
    int        lfd;        /* this thread's SO_REUSEPORT listener, -1 once closed */
    d11_io     lio;
    d11_timer  accept_pause; /* out of descriptors: accepts resume after this */
    gw_clients cl;         /* client.c */
    gw_upstream ups;       /* upstream.c */
    gw_pace    pace;       /* pace.c: requests waiting their turn (flow "max_wait_ms") */
    d11_auth  *auth;
    d11_rules  rules;      /* this thread's copy of the rules in force */
    uint64_t   rules_gen;
    int        nagg;       /* probe fan-outs in flight (probes.c) */
    int        nevpoll;    /* GET /v1/events reads in flight or waiting (events.c) */
    /* scratch, reused by every request of this thread */
    uint64_t   rng;
    d11_json   json;
    char      *scratch;    /* [D11_HTTP_BODY_BYTES_MAX + 16]: unescaped body strings */
    d11_buf    tmp;        /* payload encoding, documents */
    d11_msg_order_create order;  /* POST /v1/orders */
    d11_rules  doc, applied;     /* admin rules documents */
    /* lifecycle */
    bool       stopping;
    int64_t    drain_deadline_ms;
    _Atomic int exited;
    gw_metrics m;
    uint64_t   log_seq;    /* request-log sampling (client.c) */
    d11_timer  sale_timer; /* thread 0: the dashboard's sample every second (sale.c) */
    struct gw_catcache *catcache; /* GET /v1/products pages (products.c; owned, lazily made) */
    d11_timer  cflow_timer; /* thread 0: cluster flow leases every D11_CFLOW_TICK_MS (cluster_flow.h) */
    int64_t    prot_log_sec;  /* second (monotonic) of the last overload refusal logged (client.c) */
    uint64_t   prot_unlogged; /* overload refusals not logged one by one since then */
};

struct gw {
    d11_config      cfg;
    int             nthreads;
    gw_thread      *threads;
    _Atomic int     stop;        /* set by the main thread on SIGINT/SIGTERM */
    int64_t         start_ms;
    d11_rules_store rules;
    gw_protect      prot;        /* system adaptive protection (protect.h) */
    gw_breaker      brk[GW_UP_N]; /* a circuit breaker per upstream (breaker.h) */
    gw_request_fn  *on_request;  /* the router's dispatch */
    int             nroutes;     /* route ids 0..nroutes-1 (0 = other) */
    const char     *route_labels[GW_ROUTES_MAX];
    d11_otlp        otlp;        /* span export (--otlp-endpoint), core/otlp.h */
    int             route_orders_create; /* route id of POST /v1/orders (router.c) */
    struct gw_sale *sale;        /* the sale dashboard's history (sale.c) */
    gw_events       events;      /* events.c: heads seen per cell (consumer lag) */
    gw_hooks        hooks;       /* webhooks.c registry, hook_worker.c thread */
    gw_nats         nats;        /* nats_relay.c thread (--nats) */
    gw_risk         risk;        /* risk.c: velocity table, decision log, --risk-model (risk.h) */
    struct gw_stats *stats;      /* stats_worker.c aggregator, stats_http.c (stats.h) */
};

#define GW_SWEEP_MS 100

/* The thread that owns loop l (every gateway loop is embedded in its gw_thread). */
static inline gw_thread *gw_thread_of(d11_loop *l)
{
    return (gw_thread *)(void *)((char *)l - offsetof(gw_thread, loop));
}
/* The loop's cached clock (CLOCK_MONOTONIC ms at the last wakeup). */
static inline int64_t gw_now_ms(const gw_thread *t) { return d11_loop_now_ms(&t->loop); }

/* splitmix64: request ids and span ids need uniqueness, not secrecy. */
static inline uint64_t gw_rand64(gw_thread *t)
{
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#endif
