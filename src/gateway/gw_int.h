/*
 * gw_int.h — internals shared by the gateway's files (gateway.c: threads, event loop,
 * client connections, responses; upstream.c: wire connections to the center and cells,
 * pending requests, deadlines, routing table; handlers.c: routes, validation, admin,
 * probes, metrics exposition; dashboard.c: the HTML page).
 *
 * Threading model: G.nthreads identical threads, each with its own SO_REUSEPORT
 * listener, epoll loop, client connections, upstream connections, pending table, token
 * table and copy of the rules. Nothing on the request path is shared except the flow
 * buckets (lock-free, rules.c) and the metrics counters, which are per thread and
 * written only by their thread (relaxed atomics so /metrics, served by any thread, can
 * read them without a data race).
 *
 * Pipelining: a client connection has a ring of D11_HTTP_PIPELINE_MAX response slots.
 * A request takes the next slot when it is parsed; its response is written straight to
 * the connection's output when its slot is at the head of the ring, otherwise it waits
 * in the slot's own buffer until every earlier slot has been answered.
 *
 * Upstream correlation: a pending entry (pool of D11_GW_PENDING_MAX per thread) records
 * which connection (index + generation, so a closed and reused connection is never
 * answered by mistake) and which slot an upstream reply belongs to. The wire req_id is
 * (sequence << 16 | pool index), so a late reply to a recycled entry is recognised and
 * dropped. Pending entries sit on one of two FIFO lists by timeout class (requests:
 * --request-timeout-ms; probes: D11_GW_PROBE_TIMEOUT_MS), so both lists stay sorted by
 * deadline and expiry is O(1) per expired entry.
 */
#ifndef D11_GW_INT_H
#define D11_GW_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/config.h"
#include "../core/json.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "auth.h"
#include "http.h"
#include "rules.h"

/* ---- routes (also the metrics label) ---- */
enum gw_route {
    GR_OTHER = 0, /* unknown route, 404/405, malformed requests */
    GR_PRODUCTS_CREATE,
    GR_PRODUCTS_GET,
    GR_PRODUCTS_RESTOCK,
    GR_ORDERS_CREATE,
    GR_ORDERS_GET,
    GR_ORDERS_LIST,
    GR_ORDERS_PAY,
    GR_ORDERS_CANCEL,
    GR_HEALTHZ,
    GR_READYZ,
    GR_METRICS,
    GR_DASHBOARD,
    GR_ADMIN_CELLS,
    GR_ADMIN_ROUTING,
    GR_ADMIN_LEDGER,
    GR_ADMIN_RULES_GET,
    GR_ADMIN_RULES_PUT,
    GR_ADMIN_RULES_ROLLBACK,
    GR__COUNT
};
extern const char *const gw_route_names[GR__COUNT];

#define GW_STATUS_N 21 /* tracked statuses + "other" */
extern const int gw_status_codes[GW_STATUS_N];
int gw_status_idx(int status);

#define GW_LAT_N 13 /* finite latency buckets; +1 for +Inf */
extern const int64_t gw_lat_bounds_us[GW_LAT_N];

enum { GW_RULE_FLOW, GW_RULE_DEGRADE, GW_RULE_RISK, GW_RULE_N };
enum { GW_UPERR_UNAVAILABLE, GW_UPERR_TIMEOUT, GW_UPERR_DROPPED, GW_UPERR_PROTOCOL, GW_UPERR_5XX,
       GW_UPERR_N };

/* upstream targets: 0 = center, 1 + i = cell i */
#define GW_UP_CENTER 0
#define GW_UP_N (1 + D11_CELLS_MAX)
static inline int gw_up_cell(int cell) { return 1 + cell; }

typedef struct gw_metrics {
    _Atomic uint64_t req[GR__COUNT][GW_STATUS_N];
    _Atomic uint64_t lat[GR__COUNT][GW_LAT_N + 1];
    _Atomic uint64_t lat_sum_us[GR__COUNT];
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

/* ---- client connections ---- */
enum { SLOT_FREE = 0, SLOT_WAIT, SLOT_READY };

typedef struct gw_slot {
    uint8_t  state;
    uint8_t  route;
    bool     close_after;   /* answer with Connection: close, then close */
    bool     keepalive_hdr; /* HTTP/1.0 keep-alive: say "Connection: keep-alive" */
    bool     counted;       /* counted in the in-flight gauge */
    int64_t  start_us;
    char     rid[17];       /* X-Request-Id */
    uint8_t  trace_id[16];
    uint8_t  span_id[8];    /* the gateway's span: sent upstream, returned in traceparent */
    uint8_t  trace_flags;
    d11_buf  resp;          /* only for a response completed out of order */
} gw_slot;

typedef struct gw_conn {
    int      fd;
    uint32_t idx, gen;
    bool     open;
    bool     closing;    /* no more requests will be read; close once answered */
    bool     rd_eof;     /* the client shut its sending side */
    bool     dirty;      /* on the thread's service list */
    bool     stalled;    /* parsing stopped at a full pipeline; resume when a slot frees */
    uint32_t events;     /* epoll interest currently registered */
    int64_t  last_active_ms;
    int64_t  req_start_ms; /* first byte of a request still being received, 0 = none */
    d11_buf  in;
    d11_buf  out;
    size_t   out_off;
    uint8_t  head, nslots;
    d11_http_in http;
    gw_slot  slots[D11_HTTP_PIPELINE_MAX];
} gw_conn;

/* ---- upstream ---- */
enum { PK_FWD = 0, PK_ROUTING, PK_AGG };
enum { PC_REQ = 0, PC_PROBE = 1, PC_N };
enum { AGG_READY = 0, AGG_CELLS };
enum { SUB_PING = 0, SUB_STATS };

typedef struct gw_agg_part {
    uint8_t  target;
    int8_t   ping_ok;  /* -1 waiting, 0 failed, 1 answered */
    int8_t   stats_ok;
    int64_t  sent_us, rtt_us;
    d11_buf  ping_txt, stats_txt;
} gw_agg_part;

typedef struct gw_agg {
    int      kind;
    uint32_t conn_idx, conn_gen;
    uint8_t  slot;
    int      outstanding;
    int      nparts;
    gw_agg_part part[GW_UP_N];
} gw_agg;

typedef struct gw_pend {
    uint64_t req_id;  /* 0 = free */
    uint32_t prev, next;
    uint32_t conn_idx, conn_gen;
    int64_t  deadline_ms;
    gw_agg  *agg;
    uint8_t  slot, kind, target, cls, sub, part;
} gw_pend;
#define GW_NIL UINT32_MAX

typedef struct gw_up {
    d11_conn c;           /* c.fd < 0 while down */
    bool     connected;
    bool     dirty;       /* frames queued since the last flush */
    bool     want_write;  /* EPOLLOUT armed */
    bool     wanted;      /* a target we keep connected */
    bool     warned_down; /* logged the outage once */
    int64_t  retry_at_ms;
    int      backoff_ms;
    char     name[16];
    char     path[1100];
} gw_up;

typedef struct gw_thread {
    int       id;
    pthread_t th;
    int       ep, lfd, efd;
    bool      lfd_armed;
    int64_t   lfd_rearm_ms;
    /* client connections */
    gw_conn **conns;       /* [D11_HTTP_CONNS_MAX], allocated on first use, reused */
    uint32_t  nalloc;      /* conns[0..nalloc) allocated */
    uint32_t *free_idx;
    uint32_t  nfree;
    uint32_t  nopen;
    uint32_t *dirty;
    uint32_t  ndirty;
    /* upstream */
    gw_up     up[GW_UP_N];
    gw_pend  *pend;        /* [D11_GW_PENDING_MAX] */
    uint32_t *pend_free;
    uint32_t  npend_free;
    uint32_t  list_head[PC_N], list_tail[PC_N];
    uint64_t  seq;
    int       nagg;
    d11_routing routing;
    bool      routing_live;     /* from the center (else the default split) */
    bool      routing_inflight;
    int64_t   routing_next_ms;
    /* auth, rules */
    d11_auth *auth;
    d11_rules rules;
    uint64_t  rules_gen;
    /* scratch */
    uint64_t  rng;
    d11_json  json;
    char     *scratch;     /* [D11_HTTP_BODY_BYTES_MAX]: unescaped body strings */
    d11_buf   tmp;         /* payload encoding, documents */
    /* lifecycle */
    bool      stopping;
    int64_t   drain_deadline_ms;
    int64_t   now_ms;
    int64_t   next_sweep_ms;
    _Atomic int exited;
    gw_metrics m;
} gw_thread;

typedef struct gw_global {
    d11_config cfg;
    int        nthreads;
    gw_thread *threads;
    _Atomic int stop;
    int64_t    start_ms;
    d11_rules_store rules;
} gw_global;
extern gw_global G;

/* ---- gateway.c ---- */
gw_conn *gw_conn_lookup(gw_thread *t, uint32_t idx, uint32_t gen);
/* Answer slot si of c. extra_hdrs: "" or complete header lines ("Allow: GET\r\n"). */
void gw_respond(gw_thread *t, gw_conn *c, int si, int status, const char *ctype,
                const char *extra_hdrs, const char *body, size_t blen);
void gw_respond_json(gw_thread *t, gw_conn *c, int si, int status, const char *body, size_t blen);
void gw_respond_error(gw_thread *t, gw_conn *c, int si, int status, const char *code,
                      const char *msg, const char *extra_hdrs);
uint64_t gw_rand64(gw_thread *t);

/* ---- upstream.c ---- */
void gw_up_init(gw_thread *t);
void gw_up_release(gw_thread *t);
void gw_up_on_event(gw_thread *t, int target, uint32_t events);
void gw_up_flush_dirty(gw_thread *t);
/* Reconnects, deadlines, routing refresh. Returns ms until the next due timer. */
int64_t gw_up_tick(gw_thread *t);
bool gw_up_ready(gw_thread *t, int target);
gw_pend *gw_pend_alloc(gw_thread *t, int cls);
void gw_pend_free(gw_thread *t, gw_pend *p);
/* Queue one request frame (payload in t->tmp) to target for pending p. */
void gw_up_send(gw_thread *t, int target, gw_pend *p, uint16_t type, uint16_t flags,
                const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags,
                uint32_t deadline_ms);
/* The cell serving a slot per the current table, as an upstream target index. */
int gw_target_of_slot(gw_thread *t, unsigned slot);

/* ---- handlers.c ---- */
void gw_dispatch(gw_thread *t, gw_conn *c, int si, d11_http_req *r);
/* Upstream outcomes for pending entries of kind PK_FWD / PK_AGG. frame NULL: failed. */
void gw_on_reply(gw_thread *t, gw_pend *p, const d11_frame *f);
void gw_on_fail(gw_thread *t, gw_pend *p, int uperr);
void gw_render_metrics(d11_buf *out);

/* ---- dashboard.c ---- */
extern const char gw_dashboard_html[];

#endif
