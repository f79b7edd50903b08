/*
 * cluster_flow.c — the gateway's cluster flow leases (see cluster_flow.h): the lease
 * bookkeeping (pure, unit-tested), the lease thread's tick that asks the center
 * (FLOW_LEASE) and the metrics and /admin/protect rendering.
 * Threads: d11_cflow_take on any thread; everything else on gateway thread 0 (the lease
 * thread) except the renderers, which only load atomics.
 */
#include "cluster_flow.h"

#include <math.h>
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "gw.h"

bool d11_cflow_take(d11_cflow_lease *L)
{
    atomic_fetch_add_explicit(&L->demand, 1, memory_order_relaxed);
    int64_t n = atomic_load_explicit(&L->tokens, memory_order_relaxed);
    while (n > 0)
        if (atomic_compare_exchange_weak_explicit(&L->tokens, &n, n - 1, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_fetch_add_explicit(&L->admitted, 1, memory_order_relaxed);
            return true;
        }
    atomic_fetch_add_explicit(&L->refused, 1, memory_order_relaxed);
    return false;
}

uint32_t d11_cflow_plan(d11_cflow_lease *L, int64_t now_ns)
{
    uint64_t d = atomic_load_explicit(&L->demand, memory_order_relaxed);
    if (L->last_ns && now_ns > L->last_ns) {
        double inst = (double)(d - L->last_demand) * 1e9 / (double)(now_ns - L->last_ns);
        L->rate = L->rate ? 0.5 * L->rate + 0.5 * inst : inst;
    }
    L->last_ns = now_ns;
    L->last_demand = d;
    double w = ceil(L->rate * D11_CFLOW_HORIZON_MS / 1000.0);
    uint32_t want = w < D11_CFLOW_CHUNK_MIN ? D11_CFLOW_CHUNK_MIN
                  : w > D11_CFLOW_CHUNK_MAX ? D11_CFLOW_CHUNK_MAX : (uint32_t)w;
    if (L->inflight) return 0;
    int64_t held = atomic_load_explicit(&L->tokens, memory_order_relaxed);
    if (!atomic_load_explicit(&L->fallback, memory_order_relaxed) && held * 2 >= (int64_t)want) return 0;
    return want;
}

void d11_cflow_sent(d11_cflow_lease *L, int64_t now_ns)
{
    D11_ASSERT(!L->inflight);
    L->inflight = true;
    L->sent_ns = now_ns;
    atomic_fetch_add_explicit(&L->asked, 1, memory_order_relaxed);
}

void d11_cflow_granted(d11_cflow_lease *L, uint32_t granted, uint32_t gateways)
{
    L->inflight = false;
    atomic_fetch_add_explicit(&L->tokens, granted, memory_order_relaxed);
    atomic_fetch_add_explicit(&L->granted_leases, granted ? 1 : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&L->tokens_granted, granted, memory_order_relaxed);
    if (gateways) atomic_store_explicit(&L->gateways, gateways, memory_order_relaxed);
    atomic_store_explicit(&L->fallback_qps, d11_cflow_fallback_qps(L), memory_order_relaxed);
    atomic_store_explicit(&L->fallback, 0, memory_order_relaxed);
}

static void enter_fallback(d11_cflow_lease *L)
{
    if (!atomic_exchange_explicit(&L->fallback, 1, memory_order_relaxed))
        atomic_fetch_add_explicit(&L->fb_entered, 1, memory_order_relaxed);
}

void d11_cflow_failed(d11_cflow_lease *L)
{
    if (L->inflight) atomic_fetch_add_explicit(&L->failed, 1, memory_order_relaxed);
    L->inflight = false;
    enter_fallback(L);
}

void d11_cflow_check_deadline(d11_cflow_lease *L, int64_t now_ns)
{
    if (L->inflight && now_ns - L->sent_ns > (int64_t)D11_CFLOW_DEADLINE_MS * 1000000) enter_fallback(L);
}

uint64_t d11_cflow_fallback_qps(const d11_cflow_lease *L)
{
    uint64_t f = atomic_load_explicit(&L->rule_fallback, memory_order_relaxed);
    if (f) return f;
    uint64_t q = atomic_load_explicit(&L->qps, memory_order_relaxed);
    uint64_t g = atomic_load_explicit(&L->gateways, memory_order_relaxed);
    if (!g) g = 1;
    return q ? (q + g - 1) / g : 0;
}

void d11_cflow_reset(d11_cflow_lease *L, bool on, uint64_t qps, uint64_t burst, uint64_t rule_fallback)
{
    atomic_store(&L->on, on ? 1 : 0);
    atomic_store(&L->qps, qps);
    atomic_store(&L->burst, burst);
    atomic_store(&L->rule_fallback, rule_fallback);
    atomic_store(&L->tokens, 0);
    atomic_store(&L->fallback, 0);
    atomic_store(&L->fallback_qps, d11_cflow_fallback_qps(L));
}

/* ---- the rule's fields (rules.c) ---- */

int d11__cflow_rule_field(d11_json *j, int q, const char *name, d11_rules *out, int r, char *err, size_t errlen)
{
    if (d11_json_str_eq(j, q, "cluster", 7)) {
        bool on = false;
        if (d11_json_bool(j, q + 1, &on)) {
            snprintf(err, errlen, "flow.%s.cluster: must be true or false", name);
            return D11_JSON_ERANGE;
        }
        out->flow[r].cluster = on;
        return 1;
    }
    if (d11_json_str_eq(j, q, "fallback_qps", 12)) {
        if (d11_json_u64(j, q + 1, 0, D11_FLOW_QPS_MAX, &out->flow[r].fallback_qps)) {
            snprintf(err, errlen, "flow.%s.fallback_qps: must be an integer in 0..10000000 (0: qps / gateways)", name);
            return D11_JSON_ERANGE;
        }
        return 1;
    }
    return 0;
}

int d11__cflow_rule_check(const d11_rules *out, int r, const char *name, char *err, size_t errlen)
{
    if (out->flow[r].cluster && (!out->flow[r].qps || out->flow[r].warm_up_s || out->flow[r].max_wait_ms)) {
        snprintf(err, errlen, "flow.%s.cluster: needs qps, and the reject behaviour (no warm_up_s, no max_wait_ms)", name);
        return D11_JSON_ERANGE;
    }
    if (out->flow[r].fallback_qps && !out->flow[r].cluster) {
        snprintf(err, errlen, "flow.%s.fallback_qps: only with \"cluster\": true", name);
        return D11_JSON_ERANGE;
    }
    return 0;
}

/* ---- the lease thread ---- */

static void on_lease_reply(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)uperr;
    d11_cflow_lease *L = p->ctx;
    int res = (int)p->arg;
    D11_ASSERT(L->inflight); /* one ask in flight per lease; only its reply lands here */
    d11_msg_flow_lease_reply r;
    d11_str code, body;
    if (!f || f->hdr.status != 200 || d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) != 0 ||
        d11_msg_flow_lease_reply_dec(body.p, body.n, &r) != 0) {
        d11_cflow_failed(L);
        return;
    }
    L->scarce = r.granted < L->asked_n;
    bool was = atomic_load(&L->fallback);
    uint64_t fq = atomic_load(&L->fallback_qps);
    d11_cflow_granted(L, r.granted, r.gateways);
    if (atomic_load(&L->fallback_qps) != fq) { /* gateways changed: re-rate the local bucket */
        uint64_t q = atomic_load(&L->qps), nq = atomic_load(&L->fallback_qps);
        uint64_t b = q ? atomic_load(&L->burst) * nq / q : nq;
        d11__flow_bucket_rate(&t->gw->rules, res, nq, b ? b : 1);
    }
    if (was) d11_log(D11_LOG_INFO, "cluster flow %s: the center answers again; fallback over", d11_res_names[res]);
}

void gw_cflow_tick(gw_thread *t)
{
    d11_rules_store *s = &t->gw->rules;
    int64_t now = d11_mono_ns();
    if (!s->cflow_gw_id) s->cflow_gw_id = ((uint64_t)getpid() << 32 ^ (uint64_t)now) | 1;
    for (int res = 0; res < D11_RES_COUNT; res++) {
        d11_cflow_lease *L = &s->cflow[res];
        if (!atomic_load_explicit(&L->on, memory_order_relaxed)) continue;
        d11_cflow_check_deadline(L, now);
        uint32_t want = d11_cflow_plan(L, now);
        if (!want) continue;
        if (L->scarce && !atomic_load(&L->fallback) && (gw_rand64(t) & 1)) continue; /* jitter (header) */
        if (!gw_up_writable(t, GW_UP_CENTER)) {
            if (!atomic_load(&L->fallback))
                d11_warn("cluster flow %s: center not connected; local fallback at %llu/s", d11_res_names[res],
                         (unsigned long long)atomic_load(&L->fallback_qps));
            d11_cflow_failed(L);
            continue;
        }
        gw_pend *p = gw_pend_alloc(t, GW_PC_PROBE, on_lease_reply, L, (uint64_t)res);
        if (!p) continue;
        d11_msg_flow_lease m = {
            .res = (uint8_t)res, .gw_id = s->cflow_gw_id,
            .qps = (uint32_t)atomic_load(&L->qps), .burst = (uint32_t)atomic_load(&L->burst), .want = want,
        };
        d11_buf_reset(&t->tmp);
        d11_msg_flow_lease_enc(&t->tmp, &m);
        uint8_t span[8];
        uint64_t r = gw_rand64(t) | 1;
        memcpy(span, &r, 8);
        gw_up_send(t, GW_UP_CENTER, p, D11_MSG_FLOW_LEASE, 0, NULL, span, 0, D11_GW_PROBE_TIMEOUT_MS);
        d11_cflow_sent(L, now);
        L->asked_n = want;
    }
}

/* ---- rendering ---- */

void gw_cflow_metrics(d11_rules_store *s, d11_buf *b)
{
    static const struct { const char *name, *type, *help; size_t off; } M[] = {
#define CF(n, ty, h, f) {"d11_gateway_flow_cluster_" n, ty, h, offsetof(d11_cflow_lease, f)}
        CF("admitted_total", "counter", "Requests admitted with a leased cluster token.", admitted),
        CF("refused_total", "counter", "Requests refused 429: no cluster token left.", refused),
        CF("fallback_admitted_total", "counter", "Requests admitted by the local fallback limit.", fb_admitted),
        CF("fallback_refused_total", "counter", "Requests refused 429 by the local fallback limit.", fb_refused),
        CF("fallback_total", "counter", "Times the lease went into local fallback (center unreachable or slow).", fb_entered),
        CF("leases_asked_total", "counter", "FLOW_LEASE requests sent to the center.", asked),
        CF("leases_granted_total", "counter", "FLOW_LEASE answers granting at least one token.", granted_leases),
        CF("lease_failures_total", "counter", "FLOW_LEASE requests that timed out, were lost or refused.", failed),
        CF("tokens_granted_total", "counter", "Tokens granted by the center.", tokens_granted),
        CF("in_fallback", "gauge", "1 while the local fallback limit is in force.", fallback),
        CF("tokens", "gauge", "Leased tokens not yet spent.", tokens),
#undef CF
    };
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
        bool any = false;
        for (int r = 0; r < D11_RES_COUNT; r++) {
            d11_cflow_lease *L = &s->cflow[r];
            if (!atomic_load(&L->on) && !atomic_load(&L->asked)) continue;
            if (!any) d11_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", M[i].name, M[i].help, M[i].name, M[i].type);
            any = true;
            const char *base = (const char *)L + M[i].off;
            long long v = M[i].off == offsetof(d11_cflow_lease, tokens)
                              ? (long long)atomic_load((_Atomic int64_t *)(uintptr_t)base)
                              : (long long)atomic_load((_Atomic uint64_t *)(uintptr_t)base);
            d11_buf_printf(b, "%s{resource=\"%s\"} %lld\n", M[i].name, d11_res_names[r], v);
        }
    }
}

void gw_cflow_render(d11_rules_store *s, d11_buf *b)
{
    d11_buf_puts(b, "{");
    bool first = true;
    for (int r = 0; r < D11_RES_COUNT; r++) {
        d11_cflow_lease *L = &s->cflow[r];
        if (!atomic_load(&L->on)) continue;
        d11_buf_printf(b, "%s\"%s\":{\"qps\":%llu,\"fallback\":%s,\"fallback_qps\":%llu,\"gateways\":%llu,"
                          "\"tokens\":%lld,\"admitted\":%llu,\"refused\":%llu,\"fallback_admitted\":%llu,"
                          "\"fallback_refused\":%llu,\"fallback_entered\":%llu,\"leases_asked\":%llu,"
                          "\"leases_granted\":%llu,\"tokens_granted\":%llu}",
                       first ? "" : ",", d11_res_names[r], (unsigned long long)atomic_load(&L->qps),
                       atomic_load(&L->fallback) ? "true" : "false", (unsigned long long)atomic_load(&L->fallback_qps),
                       (unsigned long long)atomic_load(&L->gateways), (long long)atomic_load(&L->tokens),
                       (unsigned long long)atomic_load(&L->admitted), (unsigned long long)atomic_load(&L->refused),
                       (unsigned long long)atomic_load(&L->fb_admitted), (unsigned long long)atomic_load(&L->fb_refused),
                       (unsigned long long)atomic_load(&L->fb_entered), (unsigned long long)atomic_load(&L->asked),
                       (unsigned long long)atomic_load(&L->granted_leases),
                       (unsigned long long)atomic_load(&L->tokens_granted));
        first = false;
    }
    d11_buf_puts(b, "}");
}
