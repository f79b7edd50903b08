/*
 * breaker.c — the per-upstream circuit breaker's state machine (see breaker.h).
 * Invariants: probe_out only in HALF_OPEN; the window counters only count CLOSED calls;
 * a slot's counts belong to the span [start_ms, start_ms + window_ms / GW_BRK_SLOTS).
 */
#include "breaker.h"

#include <stdio.h>
#include <string.h>

#include "../core/util.h"

const char *const gw_brk_state_names[3] = {"closed", "open", "half_open"};

void gw_breaker_cfg_default(gw_breaker_cfg *c)
{
    *c = (gw_breaker_cfg){.window_ms = 5000, .min_calls = 10, .slow_ms = 1000, .slow_ratio_pct = 80,
                          .error_ratio_pct = 50, .error_count = 0, .open_ms = 2000};
}

void gw_breaker_init(gw_breaker *b, const gw_breaker_cfg *cfg, const char *name)
{
    memset(b, 0, sizeof *b);
    snprintf(b->name, sizeof b->name, "%s", name);
    pthread_mutex_init(&b->mu, NULL);
    b->cfg = *cfg;
    b->state = GW_BRK_CLOSED;
    if (b->cfg.window_ms < GW_BRK_SLOTS) b->cfg.window_ms = GW_BRK_SLOTS;
    for (int i = 0; i < GW_BRK_SLOTS; i++) b->slot[i].start_ms = -1;
}

void gw_breaker_release(gw_breaker *b) { pthread_mutex_destroy(&b->mu); }

static void set_state(gw_breaker *b, int st, int64_t now_ms)
{
    D11_ASSERT(st >= GW_BRK_CLOSED && st <= GW_BRK_HALF_OPEN);
    if (st == GW_BRK_OPEN) {
        b->opened_ms = now_ms;
        atomic_fetch_add_explicit(&b->opened_total, 1, memory_order_relaxed);
    }
    if (st == GW_BRK_CLOSED)
        for (int i = 0; i < GW_BRK_SLOTS; i++) b->slot[i] = (gw_brk_slot){.start_ms = -1};
    b->probe_out = false;
    if (st != b->state)
        d11_info("circuit breaker %s: %s -> %s", b->name, gw_brk_state_names[b->state], gw_brk_state_names[st]);
    b->state = st;
    atomic_store_explicit(&b->state_pub, st, memory_order_relaxed);
}

bool gw_breaker_allow(gw_breaker *b, int64_t now_ms, bool *probe)
{
    *probe = false;
    if (atomic_load_explicit(&b->state_pub, memory_order_relaxed) == GW_BRK_CLOSED) return true; /* fast path */
    bool ok = false;
    pthread_mutex_lock(&b->mu);
    if (b->state == GW_BRK_CLOSED) {
        ok = true;
    } else if (now_ms - b->opened_ms >= b->cfg.open_ms && (b->state == GW_BRK_OPEN || b->probe_out)) {
        /* OPEN long enough (or a HALF_OPEN probe lost for open_ms): this call is the probe */
        set_state(b, GW_BRK_HALF_OPEN, now_ms);
        b->probe_out = true;
        b->opened_ms = now_ms;
        *probe = ok = true;
    }
    pthread_mutex_unlock(&b->mu);
    if (!ok) atomic_fetch_add_explicit(&b->refused_total, 1, memory_order_relaxed);
    return ok;
}

void gw_breaker_done(gw_breaker *b, int64_t now_ms, int64_t rt_ms, bool error, bool probe)
{
    bool slow = rt_ms >= b->cfg.slow_ms;
    pthread_mutex_lock(&b->mu);
    if (probe) {
        if (b->state == GW_BRK_HALF_OPEN && b->probe_out)
            set_state(b, error || slow ? GW_BRK_OPEN : GW_BRK_CLOSED, now_ms);
    } else if (b->state == GW_BRK_CLOSED) {
        int64_t span = b->cfg.window_ms / GW_BRK_SLOTS, start = now_ms - now_ms % span;
        gw_brk_slot *sl = &b->slot[(now_ms / span) % GW_BRK_SLOTS];
        if (sl->start_ms != start) *sl = (gw_brk_slot){.start_ms = start};
        sl->calls++;
        sl->slow += slow;
        sl->errors += error;
        int64_t calls = 0, nslow = 0, errors = 0;
        for (int i = 0; i < GW_BRK_SLOTS; i++) {
            const gw_brk_slot *x = &b->slot[i];
            if (x->start_ms < 0 || x->start_ms <= now_ms - b->cfg.window_ms) continue; /* aged out */
            calls += x->calls;
            nslow += x->slow;
            errors += x->errors;
        }
        const gw_breaker_cfg *c = &b->cfg;
        bool trip = false;
        if (calls >= c->min_calls) {
            if (c->slow_ratio_pct && nslow * 100 >= c->slow_ratio_pct * calls) trip = true;
            if (c->error_ratio_pct && errors * 100 >= c->error_ratio_pct * calls) trip = true;
        }
        if (c->error_count && errors >= c->error_count) trip = true;
        if (trip) set_state(b, GW_BRK_OPEN, now_ms);
    } /* a call that was allowed before the breaker opened: its outcome is already moot */
    pthread_mutex_unlock(&b->mu);
}
