/*
 * cluster_flow.h — the center's side of cluster-wide flow limits (docs/protection.md
 * "Cluster-wide limits"): the token server of Sentinel's cluster flow control.
 *
 * Gateways with a flow rule marked "cluster": true lease tokens from the center in chunks
 * (wire FLOW_LEASE). Per resource the center keeps one GCRA budget at the rule's qps with
 * the rule's burst as depth; a lease of `want` tokens is granted min(want, tokens the
 * budget holds now), so over any span t the tokens granted across every gateway are at
 * most qps x t + burst. The rule comes with each request (the center keeps no rules): a
 * new qps or burst applies from that request on, keeping the debt already taken.
 * Nothing is persisted: after a center restart the budget starts full (one burst more).
 *
 * Also per resource: which gateways (by their random 64-bit id) leased within
 * D11_CFLOW_GATEWAY_TTL_MS, so a gateway can size its local fallback as qps / gateways.
 *
 * Invariants: granted <= want; granted <= available budget; tat never moves backwards.
 * Threads: one owner (the center's loop thread). Memory: inline, no allocation.
 */
#ifndef D11_CENTER_CLUSTER_FLOW_H
#define D11_CENTER_CLUSTER_FLOW_H

#include <stdbool.h>
#include <stdint.h>

#include "../rpc/link.h"
#include "../rpc/wire.h"

#define D11_CFLOW_RES_MAX        16   /* resource ids 0..15 (wire field res) */
#define D11_CFLOW_GATEWAYS_MAX   64   /* gateways remembered; the oldest is forgotten first */
#define D11_CFLOW_GATEWAY_TTL_MS 3000 /* a gateway that leased this recently counts */

typedef struct d11_cflow_budget {
    uint32_t qps, burst; /* 0: never asked */
    int64_t  tat_ns;     /* GCRA theoretical arrival time of the next token */
    uint64_t leases, tokens_granted;
} d11_cflow_budget;

typedef struct d11_cflow_center {
    d11_cflow_budget res[D11_CFLOW_RES_MAX];
    struct {
        uint64_t id;                       /* 0 = free */
        int64_t  seen_ns[D11_CFLOW_RES_MAX]; /* last lease per resource (0 = never) */
    } gw[D11_CFLOW_GATEWAYS_MAX];
} d11_cflow_center;

void d11_cflow_center_init(d11_cflow_center *c);
/* Answer one lease request at now_ns: fills out (granted, gateways). 0, or
 * -EINVAL for a resource id out of range (nothing changes). */
int d11_cflow_center_grant(d11_cflow_center *c, const d11_msg_flow_lease *m, int64_t now_ns,
                           d11_msg_flow_lease_reply *out);
/* Tokens the budget of res could grant at now_ns (tests, logs). */
uint64_t d11_cflow_center_available(const d11_cflow_center *c, int res, int64_t now_ns);
/* A FLOW_LEASE request frame on link k: answered at once (200 with a flow_lease_reply
 * body, or 400 invalid); true when f was one. */
bool d11_cflow_center_frame(d11_cflow_center *c, d11_link *k, const d11_frame *f);

#endif
