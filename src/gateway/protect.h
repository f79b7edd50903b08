/*
 * protect.h — system adaptive overload protection for the gateway (Sentinel's "system
 * rule" with its BBR-style check), on by default (--protect on|off).
 *
 * The question asked for every business request (a route with a rules resource), right
 * after routing and before the token check so that a refusal is as cheap as possible:
 * may one more request be in flight in this gateway process?
 *
 *   in flight <= inflight_min                       -> admit (the floor: never starve)
 *   in flight >  limit                              -> refuse 503 overloaded (reason "inflight")
 *   rt_max_us set and last bucket's mean RT > it    -> refuse (reason "rt")
 *   otherwise                                       -> admit
 *
 *   limit = max(inflight_min, bdp, climb)
 *   bdp   = gain x max_throughput x min_rt          (Sentinel's BBR-style estimate)
 *
 * max_throughput is the highest completion rate (successful answers per second) of any
 * bucket of the window and min_rt the lowest response time seen in the window: their
 * product is the bandwidth-delay product, how many requests the system beneath holds
 * without queueing (Little's law). On d11 it underestimates badly: the cells batch commits,
 * so the fastest request (a lone order) is ~10x faster than a typical one at capacity, and
 * capacity needs ~200 orders in flight where the BDP says ~5 (bench/RESULTS.md). Hence
 * the floor (default 256) and the optional climb:
 *
 * climb (tolerance_pct > 0; off by default): a hill climber on the completion rate, one
 * step per sample of GW_PROTECT_SAMPLE_MIN answers or 1 s — raise the limit while raising
 * it raised the rate, cut it while cutting it raised the rate, and when the rate is flat
 * cut when the sample's p99 is above tolerance x baseline (the lowest sample p99 of the
 * last D11_PROTECT_BASE_S seconds), else raise. Steps are limit/8 + 1.
 *
 * CPU cap: when system CPU (from /proc/stat) is above cpu_max_pct, the BDP's gain is
 * dropped and the climb does not rise. A refused request gets 503 "unavailable" (API.md; reason overloaded) with
 * Retry-After: 1 at once; it never waits, so nothing times out because of the excess.
 *
 * Window: D11_PROTECT_BUCKETS buckets of D11_PROTECT_BUCKET_MS. The bucket being filled is
 * a few atomics shared by the gateway threads (completions, RT sum, RT minimum); thread 0
 * closes it from its sweep timer (gw_protect_tick) and recomputes the limit, which every
 * thread reads with one relaxed load.
 *
 * Invariants: inflight counts exactly the admitted requests not yet answered or dropped
 * (every gw_protect_enter that returns 0 is paired with one gw_protect_leave); limit >=
 * inflight_min. Threads: enter/leave from any gateway thread; tick from one thread only.
 */
#ifndef D11_GW_PROTECT_H
#define D11_GW_PROTECT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/util.h"

#define D11_PROTECT_BUCKET_MS 100 /* one window bucket */
#define D11_PROTECT_BUCKETS   10  /* window = 1 s */
#define D11_PROTECT_BASE_S    60  /* the RT baseline is the lowest bucket mean of this many seconds */
#define D11_PROTECT_LIMIT_MAX 1000000
#define GW_PROTECT_HIST_N     64  /* RT histogram slots, two per power of two */
#define GW_PROTECT_SAMPLE_MIN 200 /* answers per gradient step (or 1 s, whichever first) */

enum { GW_PROTECT_OK = 0, GW_PROTECT_INFLIGHT, GW_PROTECT_RT, GW_PROTECT_N };
extern const char *const gw_protect_reason_names[GW_PROTECT_N];

typedef struct gw_protect_cfg {
    bool    on;
    int64_t inflight_min;
    int64_t gain_pct;    /* >= 100 */
    int64_t rt_max_us;   /* 0 = off */
    int64_t cpu_max_pct; /* 0 = off */
    int64_t tolerance_pct; /* RT gradient: mean RT allowed over the baseline; 0 = no gradient */
} gw_protect_cfg;

typedef struct gw_protect_bucket {
    uint64_t done;       /* successful completions */
    int64_t  rt_sum_us;
    int64_t  rt_min_us;  /* INT64_MAX when done == 0 */
    int64_t  dur_ms;
} gw_protect_bucket;

typedef struct gw_protect {
    gw_protect_cfg   cfg;
    _Atomic int64_t  inflight;
    _Atomic int64_t  limit;
    /* the bucket being filled (any thread) */
    _Atomic uint64_t cur_done;
    _Atomic int64_t  cur_rt_sum_us;
    _Atomic int64_t  cur_rt_min_us;
    /* published by tick (read by metrics / the admin view) */
    _Atomic int64_t  max_tput;      /* completions per second */
    _Atomic int64_t  min_rt_us;     /* 0 = no sample in the window */
    _Atomic int64_t  rt_avg_us;     /* mean RT of the last closed bucket */
    _Atomic int64_t  cpu_pct;       /* -1 = unknown */
    _Atomic uint64_t refused[GW_PROTECT_N];
    _Atomic int64_t  peak;          /* highest in flight of the current bucket */
    _Atomic int64_t  bdp;           /* gain x max_tput x min_rt of the window */
    _Atomic int64_t  rt_base_us;    /* the gradient's baseline p99, 0 = none yet */
    _Atomic int64_t  rt_p99_us;     /* p99 of the last gradient sample */
    _Atomic uint64_t cur_hist[GW_PROTECT_HIST_N]; /* RT histogram being filled */
    /* tick's own state (one thread) */
    gw_protect_bucket ring[D11_PROTECT_BUCKETS];
    int               head;
    int64_t           last_tick_ms;
    uint64_t          cpu_busy, cpu_total; /* previous /proc/stat sample */
    int64_t           grad;                /* the gradient's limit (>= inflight_min) */
    int64_t           base_ring[D11_PROTECT_BASE_S]; /* per-second minima of bucket mean RT */
    int64_t           base_acc;            /* minimum of the current second */
    int               base_head, base_ticks;
    uint64_t          hist[GW_PROTECT_HIST_N]; /* the gradient's sample so far */
    int               sample_ticks;
    int64_t           peak_acc;            /* highest in flight during the sample */
    int64_t           sample_ms;           /* the sample's duration so far */
    int64_t           last_rate;           /* completions/s of the previous step */
    int               dir;                 /* last move of the limit: +1, -1, 0 */
} gw_protect;

void gw_protect_init(gw_protect *p, const gw_protect_cfg *cfg, int64_t now_ms);

/* Admit one request? GW_PROTECT_OK (now counted in flight: call gw_protect_leave once
 * when it is answered or dropped) or the reason of the refusal (nothing counted). */
int gw_protect_enter(gw_protect *p);
/* An admitted request ends: rt_us its response time; ok when it counts as a successful
 * completion (status < 500). ok=false also for a request dropped unanswered. */
void gw_protect_leave(gw_protect *p, int64_t rt_us, bool ok);
/* Close the current bucket when D11_PROTECT_BUCKET_MS have passed and recompute the limit.
 * cpu_pct: system CPU busy percent over the bucket, or -1 when unknown. One thread only. */
void gw_protect_tick(gw_protect *p, int64_t now_ms, int64_t cpu_pct);
/* System CPU busy percent since the previous call, from /proc/stat; -1 when unreadable or
 * on the first call. One thread only (the tick's). */
int64_t gw_protect_cpu_sample(gw_protect *p);
/* Append the state as a JSON object (the /admin/protect view). */
void gw_protect_render(gw_protect *p, d11_buf *out);

#endif
