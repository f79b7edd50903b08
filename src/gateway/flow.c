/*
 * flow.c — the flow buckets of the rules store (see rules.h): GCRA per resource and per
 * caller rule, the warm-up behaviour, and the per-resource concurrency counters. A cluster
 * rule (cluster_flow.h) takes from the lease instead, and its local bucket runs at the
 * fallback rate, used only while the lease is in fallback.
 * Lock-free; any thread. d11__flow_buckets_apply is called by rules.c under the store's
 * mutex whenever the rules in force change.
 */
#include <stdatomic.h>
#include <string.h>

#include "rules.h"

/* ---- flow buckets (GCRA) ---- */

static bool gcra_take(d11_flow_bucket *b, int64_t now_ns, int64_t *retry_ns)
{
    int64_t T = atomic_load_explicit(&b->interval_ns, memory_order_relaxed);
    if (T == 0) return true;
    int64_t tau = atomic_load_explicit(&b->tau_ns, memory_order_relaxed);
    int64_t warm = atomic_load_explicit(&b->warm_ns, memory_order_relaxed);
    if (warm) { /* warm-up: a longer interval while the bucket is still cold */
        int64_t last = atomic_load_explicit(&b->last_ns, memory_order_relaxed);
        int64_t start = atomic_load_explicit(&b->warm_start_ns, memory_order_relaxed);
        if (!last || now_ns - last > warm) { /* cold again: the warm-up starts now */
            start = now_ns;
            atomic_store_explicit(&b->warm_start_ns, start, memory_order_relaxed);
        }
        int64_t el = now_ns - start, cold = atomic_load_explicit(&b->cold, memory_order_relaxed);
        if (el < warm) { /* f = cold - (cold - 1) * el / warm, in 1/1024ths */
            int64_t f1024 = cold * 1024 - (cold - 1) * 1024 * (el / 1000) / (warm / 1000 ? warm / 1000 : 1);
            T = T * f1024 / 1024;
            tau = T; /* no burst while warming up */
        }
    }
    int64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + T;
        if (next - now_ns > tau) {
            *retry_ns = next - now_ns - tau;
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&b->tat_ns, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            if (warm) atomic_store_explicit(&b->last_ns, now_ns, memory_order_relaxed);
            return true;
        }
    }
}

bool d11_flow_conc_enter(d11_rules_store *s, int res, uint64_t limit)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    _Atomic int64_t *c = &s->buckets[res].inflight;
    int64_t n = atomic_fetch_add_explicit(c, 1, memory_order_relaxed) + 1;
    if (limit && n > (int64_t)limit) {
        atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void d11_flow_conc_leave(d11_rules_store *s, int res)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    int64_t left = atomic_fetch_sub_explicit(&s->buckets[res].inflight, 1, memory_order_relaxed) - 1;
    D11_ASSERT(left >= 0);
}

bool d11_flow_take(d11_rules_store *s, int res, int64_t now_ns, int64_t *retry_ns)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    d11_cflow_lease *L = &s->cflow[res];
    if (atomic_load_explicit(&L->on, memory_order_relaxed)) { /* a cluster rule (cluster_flow.h) */
        if (!atomic_load_explicit(&L->fallback, memory_order_relaxed)) {
            if (d11_cflow_take(L)) return true;
            *retry_ns = (int64_t)D11_CFLOW_TICK_MS * 1000000; /* the next lease */
            return false;
        }
        bool ok = gcra_take(&s->buckets[res], now_ns, retry_ns); /* at the fallback rate */
        atomic_fetch_add_explicit(ok ? &L->fb_admitted : &L->fb_refused, 1, memory_order_relaxed);
        return ok;
    }
    return gcra_take(&s->buckets[res], now_ns, retry_ns);
}

int64_t d11_flow_reserve(d11_rules_store *s, int res, int64_t now_ns, int64_t max_wait_ns, int64_t *retry_ns)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    d11_flow_bucket *b = &s->buckets[res];
    int64_t T = atomic_load_explicit(&b->interval_ns, memory_order_relaxed);
    if (T == 0) return 0;
    int64_t tat = atomic_load_explicit(&b->tat_ns, memory_order_relaxed);
    for (;;) {
        int64_t turn = tat > now_ns ? tat : now_ns;
        if (turn - now_ns > max_wait_ns) {
            *retry_ns = turn - now_ns - max_wait_ns;
            return -1;
        }
        if (atomic_compare_exchange_weak_explicit(&b->tat_ns, &tat, turn + T, memory_order_relaxed,
                                                  memory_order_relaxed))
            return turn - now_ns;
    }
}

bool d11_flow_take_caller(d11_rules_store *s, int i, int64_t now_ns, int64_t *retry_ns)
{
    D11_ASSERT(i >= 0 && i < D11_FLOW_CALLERS_MAX);
    return gcra_take(&s->caller_buckets[i], now_ns, retry_ns);
}

/* Set a bucket's rate; a change restarts it (unlimited for an instant while switching). */
static void bucket_set(d11_flow_bucket *b, uint64_t qps, uint64_t burst)
{
    int64_t T = qps ? (int64_t)(1000000000ULL / qps) : 0;
    if (T == 0 && qps) T = 1;
    int64_t tau = T * (int64_t)burst;
    if (atomic_load(&b->interval_ns) != T || atomic_load(&b->tau_ns) != tau) {
        atomic_store(&b->interval_ns, 0);
        atomic_store(&b->tau_ns, tau);
        atomic_store(&b->tat_ns, 0);
        atomic_store(&b->interval_ns, T);
    }
}

void d11__flow_buckets_apply(d11_rules_store *s, const d11_rules *r)
{
    for (uint32_t i = 0; i < D11_FLOW_CALLERS_MAX; i++)
        bucket_set(&s->caller_buckets[i], i < r->ncallers ? r->callers[i].qps : 0,
                   i < r->ncallers ? r->callers[i].burst : 0);
    for (int i = 0; i < D11_RES_COUNT; i++) {
        d11_flow_bucket *b = &s->buckets[i];
        int64_t warm = (int64_t)r->flow[i].warm_up_s * 1000000000LL;
        if (atomic_load(&b->warm_ns) != warm || atomic_load(&b->cold) != (int64_t)r->flow[i].cold_factor) {
            atomic_store(&b->cold, (int64_t)r->flow[i].cold_factor);
            atomic_store(&b->last_ns, 0); /* a new warm-up rule starts cold */
            atomic_store(&b->warm_ns, warm);
        }
        uint64_t qps = r->flow[i].qps, burst = r->flow[i].burst;
        d11_cflow_lease *L = &s->cflow[i];
        bool on = r->flow[i].cluster && qps;
        if (on != (bool)atomic_load(&L->on) || atomic_load(&L->qps) != (on ? qps : 0) ||
            atomic_load(&L->burst) != (on ? burst : 0) || atomic_load(&L->rule_fallback) != (on ? r->flow[i].fallback_qps : 0))
            d11_cflow_reset(L, on, on ? qps : 0, on ? burst : 0, on ? r->flow[i].fallback_qps : 0);
        if (on) { /* the local bucket serves the fallback (cluster_flow.h) */
            uint64_t fq = d11_cflow_fallback_qps(L), fb = burst * fq / qps;
            qps = fq;
            burst = fb ? fb : 1;
        }
        bucket_set(b, qps, burst);
    }
}

void d11__flow_bucket_rate(d11_rules_store *s, int res, uint64_t qps, uint64_t burst)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    bucket_set(&s->buckets[res], qps, burst);
}

