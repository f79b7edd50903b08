/*
 * cluster_flow.h — the gateway's side of cluster-wide flow limits (docs/protection.md
 * "Cluster-wide limits"): a flow rule with "cluster": true limits the TOTAL rate across
 * every gateway of the platform; the budget is the center's (center/cluster_flow.h).
 *
 * Per resource a lease: tokens leased from the center and not yet spent. The request path
 * takes one with a compare-and-swap (d11_cflow_take), never waiting for the center. One
 * thread (the lease thread: gateway thread 0, every D11_CFLOW_TICK_MS) plans the next ask
 * (d11_cflow_plan): a chunk sized to the local demand over D11_CFLOW_HORIZON_MS, bounded
 * by D11_CFLOW_CHUNK_MIN..D11_CFLOW_CHUNK_MAX, asked when fewer than half a chunk is left,
 * at most one ask in flight. Leftover tokens are kept (not dropped), so a gateway holds at
 * most ~1.5 chunks: over any span t the cluster admits at most qps x t + burst + what the
 * gateways held at its start.
 *
 * While the budget is scarce (the last answer granted less than asked) the lease thread
 * asks on a random half of its ticks: every gateway's ticks have the same period, so
 * without the jitter the one whose ticks follow another's always got the smaller share of
 * what accrued in between (measured 51/129 of 180); with it the gaps are random and the
 * shares even out.
 *
 * Fallback: when the center is not connected, an ask is unanswered after
 * D11_CFLOW_DEADLINE_MS, or an ask failed, the lease is in fallback and the request path
 * uses the resource's LOCAL GCRA bucket at the fallback rate instead: the rule's
 * fallback_qps, or else ceil(qps / gateways) with gateways the number of gateways the
 * center saw leasing this resource lately (1 before any answer). Asks go on while in
 * fallback; the first answer ends it.
 *
 * Threads: the atomics are shared (relaxed: counters and flags, no ordering needed
 * between them); the fields under "lease thread only" belong to thread 0.
 */
#ifndef D11_GW_CLUSTER_FLOW_H
#define D11_GW_CLUSTER_FLOW_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define D11_CFLOW_TICK_MS     20     /* the lease thread's period */
#define D11_CFLOW_DEADLINE_MS 100    /* an ask unanswered this long: fallback */
#define D11_CFLOW_HORIZON_MS  100    /* a chunk covers this much of the local demand */
#define D11_CFLOW_CHUNK_MIN   2      /* smallest ask */
#define D11_CFLOW_CHUNK_MAX   100000 /* largest ask */

typedef struct d11_cflow_lease {
    /* the rule (set on every rules change, rules.c -> flow.c) */
    _Atomic uint64_t on;            /* 1: the rule in force is a cluster rule */
    _Atomic uint64_t qps, burst;    /* the cluster rule */
    _Atomic uint64_t rule_fallback; /* the rule's fallback_qps (0: qps / gateways) */
    /* the lease */
    _Atomic int64_t  tokens;        /* leased, not spent; >= 0 */
    _Atomic uint64_t fallback;      /* 1: center unreachable or slow: the local bucket rules */
    _Atomic uint64_t fallback_qps;  /* the local rate in force during a fallback */
    _Atomic uint64_t gateways;      /* as last told by the center (0: never) */
    /* counters (metrics, /admin/protect) */
    _Atomic uint64_t demand;        /* requests that checked the lease */
    _Atomic uint64_t admitted, refused;        /* by the lease */
    _Atomic uint64_t fb_admitted, fb_refused;  /* by the local bucket, in fallback */
    _Atomic uint64_t fb_entered;    /* times the lease went into fallback */
    _Atomic uint64_t asked, granted_leases, tokens_granted, failed;
    /* lease thread only */
    bool     inflight;
    bool     scarce;                /* the last answer granted less than asked */
    uint32_t asked_n;               /* the ask in flight */
    int64_t  sent_ns;
    double   rate;                  /* local demand per second (EWMA over ticks) */
    uint64_t last_demand;
    int64_t  last_ns;
} d11_cflow_lease;

/* Request path: take one leased token at now_ns; false when none is left. Lock-free. */
bool     d11_cflow_take(d11_cflow_lease *L);
/* Lease thread, every tick: update the demand rate; returns the chunk to ask for now, or 0
 * (an ask in flight, or enough tokens held). Does not mark the ask sent. */
uint32_t d11_cflow_plan(d11_cflow_lease *L, int64_t now_ns);
/* Lease thread: an ask went out at now_ns. */
void     d11_cflow_sent(d11_cflow_lease *L, int64_t now_ns);
/* Lease thread: the center answered (granted tokens; gateways it saw): ends a fallback. */
void     d11_cflow_granted(d11_cflow_lease *L, uint32_t granted, uint32_t gateways);
/* Lease thread: the ask failed (timeout, lost connection, refused) or the center is not
 * connected: fallback. */
void     d11_cflow_failed(d11_cflow_lease *L);
/* Lease thread: fallback when the ask in flight is older than D11_CFLOW_DEADLINE_MS. */
void     d11_cflow_check_deadline(d11_cflow_lease *L, int64_t now_ns);
/* The local rate during a fallback: the rule's fallback_qps, else ceil(qps / gateways). */
uint64_t d11_cflow_fallback_qps(const d11_cflow_lease *L);
/* Reset the lease for a changed rule (tokens dropped, fallback over). */
void     d11_cflow_reset(d11_cflow_lease *L, bool on, uint64_t qps, uint64_t burst, uint64_t rule_fallback);

typedef struct gw_thread gw_thread;
typedef struct d11_buf d11_buf;
/* Gateway thread 0, every D11_CFLOW_TICK_MS: deadlines, asks (wire FLOW_LEASE), fallback
 * rates of the local buckets. */
void gw_cflow_tick(gw_thread *t);
/* Prometheus lines (d11_gateway_flow_cluster_*) and the JSON state for /admin/protect
 * ({"orders.create":{"fallback":false,...},...}). rules: the d11_rules_store. */
struct d11_rules_store;
void gw_cflow_metrics(struct d11_rules_store *s, d11_buf *b);
void gw_cflow_render(struct d11_rules_store *s, d11_buf *b);

#endif
