/*
 * breaker.h — a circuit breaker per upstream (the center, each cell), shared by the
 * gateway's threads (Sentinel's degrade rules: slow-call ratio, error ratio, error count).
 *
 * States and moves:
 *   CLOSED     every call allowed; outcomes counted in a SLIDING window of window_ms made
 *              of GW_BRK_SLOTS slots (a slot older than the window is forgotten, so the
 *              successes of a healthy minute never dilute the errors of a stalled second;
 *              Sentinel's leap array). At the end of a call, once the window holds >=
 *              min_calls calls: slow calls
 *              (rt >= slow_ms) / calls >= slow_ratio_pct, or errors / calls >=
 *              error_ratio_pct, or errors >= error_count (when set) -> OPEN.
 *   OPEN       every call refused (the gateway answers 503 unavailable at once) until
 *              open_ms have passed; then the next call is let through as the one probe ->
 *              HALF_OPEN.
 *   HALF_OPEN  the probe is out; every other call refused. Probe fine (no error, not slow)
 *              -> CLOSED with a fresh window; probe failed -> OPEN again (open_ms anew).
 * An error is a timeout, a dropped connection or a 5xx reply; a slow call one whose
 * response time is >= slow_ms. A probe that is never completed (its gateway thread lost
 * it) is forgotten after open_ms: a new probe may go.
 *
 * Threads: allow/done from any gateway thread (a mutex per breaker, held for a few
 * instructions); state_pub is readable without it (metrics, dashboard). Time is passed in.
 */
#ifndef D11_GW_BREAKER_H
#define D11_GW_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum { GW_BRK_CLOSED = 0, GW_BRK_OPEN = 1, GW_BRK_HALF_OPEN = 2 };
extern const char *const gw_brk_state_names[3];

typedef struct gw_breaker_cfg {
    int64_t window_ms;       /* sliding counting window (default 5000; >= GW_BRK_SLOTS) */
    int64_t min_calls;       /* calls in the window before it may open (default 10) */
    int64_t slow_ms;         /* a call this slow counts as slow (default 1000) */
    int64_t slow_ratio_pct;  /* 1..100; 0 = off (default 80) */
    int64_t error_ratio_pct; /* 1..100; 0 = off (default 50) */
    int64_t error_count;     /* errors in the window; 0 = off (default 0) */
    int64_t open_ms;         /* OPEN for this long before the probe (default 2000) */
} gw_breaker_cfg;

#define GW_BRK_SLOTS 10 /* slots of the sliding window (window_ms / GW_BRK_SLOTS each) */

typedef struct gw_brk_slot {
    int64_t start_ms; /* start of the slot's span; -1 = empty */
    int64_t calls, slow, errors;
} gw_brk_slot;

typedef struct gw_breaker {
    pthread_mutex_t  mu;
    gw_breaker_cfg   cfg;
    char             name[24];      /* "center", "cell-3": for the log */
    int              state;         /* under mu */
    gw_brk_slot      slot[GW_BRK_SLOTS]; /* under mu */
    int64_t          opened_ms;     /* when it last opened / the probe went */
    bool             probe_out;
    _Atomic int      state_pub;     /* = state, for readers without mu */
    _Atomic uint64_t opened_total;  /* CLOSED/HALF_OPEN -> OPEN moves */
    _Atomic uint64_t refused_total; /* calls refused while OPEN / HALF_OPEN */
} gw_breaker;

void gw_breaker_cfg_default(gw_breaker_cfg *c);
void gw_breaker_init(gw_breaker *b, const gw_breaker_cfg *cfg, const char *name);
void gw_breaker_release(gw_breaker *b);
/* May a call go now? When true and *probe, this call is the HALF_OPEN probe: pass
 * probe=true to gw_breaker_done. False: refused (counted). */
bool gw_breaker_allow(gw_breaker *b, int64_t now_ms, bool *probe);
/* A call allowed by gw_breaker_allow ended: rt_ms its response time, error as above. */
void gw_breaker_done(gw_breaker *b, int64_t now_ms, int64_t rt_ms, bool error, bool probe);
static inline int gw_breaker_state(gw_breaker *b) { return atomic_load_explicit(&b->state_pub, memory_order_relaxed); }

#endif
