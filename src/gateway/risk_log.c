/*
 * risk_log.c — the risk decision log (a bounded ring, shared by the gateway threads under
 * one mutex), its JSON form, the two admin handlers that query it, and the risk metrics.
 *
 * What is logged (gw_risk_check decides): every decision that is not "allow", every
 * model-B verdict that is not "allow", and a sample (risk.log_sample_pct) of the others.
 * Personal data is masked before it is stored: the user id only as the request log's
 * salted hash ("u:<16 hex>", so lines of one user correlate across the two logs), the
 * device id as a per-process salted hash, the client IP truncated to its /24 (IPv4) or
 * /48 (IPv6). The Idempotency-Key and the body are never stored.
 *
 * Memory: cap records (--risk-log-size) allocated at start; the oldest is overwritten.
 * A lookup by request id scans from the newest (admin path; cap bounds it).
 * Threads: push and find from any thread (the mutex); handlers on the connection's thread.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "request.h"
#include "risk.h"

int d11_risk_log_init(d11_risk_log *l, uint32_t cap)
{
    memset(l, 0, sizeof *l);
    if (cap < 1 || cap > D11_RISK_LOG_MAX) return -EINVAL;
    l->ring = calloc(cap, sizeof *l->ring);
    if (!l->ring) return -ENOMEM;
    l->cap = cap;
    pthread_mutex_init(&l->mu, NULL);
    return 0;
}

void d11_risk_log_release(d11_risk_log *l)
{
    if (!l->ring) return;
    pthread_mutex_destroy(&l->mu);
    free(l->ring);
    l->ring = NULL;
}

void d11_risk_log_push(d11_risk_log *l, const d11_risk_decision *d)
{
    D11_ASSERT(l->ring && d->action < D11_RISK_ACTIONS);
    pthread_mutex_lock(&l->mu);
    l->ring[l->next % l->cap] = *d;
    l->next++;
    pthread_mutex_unlock(&l->mu);
}

bool d11_risk_log_find(d11_risk_log *l, const char *rid, size_t n, d11_risk_decision *out)
{
    bool found = false;
    if (n == 0 || n >= sizeof out->rid) return false;
    pthread_mutex_lock(&l->mu);
    uint64_t have = l->next < l->cap ? l->next : l->cap;
    for (uint64_t i = 0; i < have && !found; i++) {
        const d11_risk_decision *d = &l->ring[(l->next - 1 - i) % l->cap];
        if (strlen(d->rid) == n && memcmp(d->rid, rid, n) == 0) {
            *out = *d;
            found = true;
        }
    }
    pthread_mutex_unlock(&l->mu);
    return found;
}

/* Up to max newest records into out (newest first); their number. */
static uint32_t log_newest(d11_risk_log *l, d11_risk_decision *out, uint32_t max)
{
    pthread_mutex_lock(&l->mu);
    uint64_t have = l->next < l->cap ? l->next : l->cap;
    uint32_t n = 0;
    for (; n < max && n < have; n++) out[n] = l->ring[(l->next - 1 - n) % l->cap];
    pthread_mutex_unlock(&l->mu);
    return n;
}

void d11_risk_mask_ip(const char *ip, char *out, size_t cap)
{
    D11_ASSERT(cap >= INET6_ADDRSTRLEN + 4);
    unsigned char a[16];
    char txt[INET6_ADDRSTRLEN];
    out[0] = 0;
    if (inet_pton(AF_INET, ip, a) == 1) {
        a[3] = 0;
        if (inet_ntop(AF_INET, a, txt, sizeof txt)) snprintf(out, cap, "%s/24", txt);
    } else if (inet_pton(AF_INET6, ip, a) == 1) {
        memset(a + 6, 0, 10);
        if (inet_ntop(AF_INET6, a, txt, sizeof txt)) snprintf(out, cap, "%s/48", txt);
    } else if (ip[0]) {
        snprintf(out, cap, "masked"); /* not an address we know how to truncate: keep nothing */
    }
}

void d11_risk_decision_render(const d11_risk_decision *d, d11_buf *out)
{
    char ts[25];
    d11_fmt_iso8601(d->at_ms, ts);
    d11_buf_printf(out, "{\"request_id\":\"%s\",\"at\":\"%s\",\"user\":\"u:%016llx\",\"ip\":\"%s\",", d->rid, ts,
                   (unsigned long long)d->user_hash, d->ip);
    if (d->device_hash) d11_buf_printf(out, "\"device\":\"d:%016llx\",", (unsigned long long)d->device_hash);
    else d11_buf_puts(out, "\"device\":null,");
    d11_buf_printf(out, "\"stress\":%s,\"action\":\"%s\",\"enforced\":%s,\"rule\":", d->stress ? "true" : "false",
                   d11_risk_action_names[d->action], d->enforced ? "true" : "false");
    if (d->rule[0]) d11_buf_printf(out, "\"%s\"", d->rule);
    else d11_buf_puts(out, "null");
    d11_buf_printf(out, ",\"rule_action\":\"%s\"", d11_risk_action_names[d->rule_action]);
    if (d->has_a)
        d11_buf_printf(out, ",\"model_a\":\"%s\",\"score_a\":%.17g,\"action_a\":\"%s\"", d->model_a, d->score_a,
                       d11_risk_action_names[d->action_a]);
    else d11_buf_puts(out, ",\"model_a\":null,\"score_a\":null,\"action_a\":null");
    if (d->has_b)
        d11_buf_printf(out, ",\"model_b\":\"%s\",\"score_b\":%.17g,\"action_b\":\"%s\"", d->model_b, d->score_b,
                       d11_risk_action_names[d->action_b]);
    else d11_buf_puts(out, ",\"model_b\":null,\"score_b\":null,\"action_b\":null");
    d11_buf_puts(out, ",\"features\":{");
    for (int dim = 0; dim < D11_RISK_DIMS; dim++)
        for (uint32_t w = 0; w < d->f.nwin; w++)
            d11_buf_printf(out, "\"%s_%us\":%u,", d11_risk_dim_names[dim], (unsigned)d->f.windows_s[w],
                           (unsigned)d->f.count[dim][w]);
    d11_buf_printf(out, "\"quantity\":%u,\"items\":%u,\"no_device\":%d}}", (unsigned)d->f.quantity,
                   (unsigned)d->f.items, d->f.has[D11_RISK_DEVICE] ? 0 : 1);
}

void gw_h_risk_decision(struct gw_thread *t, struct gw_req *rq)
{
    char rid[24];
    long n = gw_pct_decode(rq->param.p, rq->param.n, rid, sizeof rid);
    d11_risk_decision d;
    if (n < 1 || !d11_risk_log_find(&t->gw->risk.log, rid, (size_t)n, &d)) {
        gw_fail(t, rq, 404, "not_found", "no risk decision logged for this request id (sampled, or overwritten)");
        return;
    }
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_risk_decision_render(&d, b);
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_h_risk_decisions(struct gw_thread *t, struct gw_req *rq)
{
    uint64_t limit = 50;
    const char *q = rq->query;
    size_t qn = rq->query_len, i = 0;
    while (i < qn) {
        size_t j = i;
        while (j < qn && q[j] != '&') j++;
        if (j - i > 6 && memcmp(q + i, "limit=", 6) == 0 &&
            (d11_parse_u64(q + i + 6, j - i - 6, D11_RISK_LIST_MAX, &limit) < 0 || limit < 1)) {
            gw_fail(t, rq, 422, "invalid", "limit: must be an integer in 1..%d", D11_RISK_LIST_MAX);
            return;
        }
        i = j + 1;
    }
    d11_risk_decision *v = malloc(sizeof *v * (size_t)limit);
    if (!v) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return;
    }
    uint32_t n = log_newest(&t->gw->risk.log, v, (uint32_t)limit);
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"decisions\":[");
    for (uint32_t k = 0; k < n; k++) {
        if (k) d11_buf_puts(b, ",");
        d11_risk_decision_render(&v[k], b);
    }
    d11_buf_puts(b, "]}");
    free(v);
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_risk_metrics(gw_risk *r, d11_buf *b)
{
#define LD(x) (unsigned long long)atomic_load_explicit(&(x), memory_order_relaxed)
    d11_buf_puts(b, "# HELP d11_gateway_risk_decisions_total Risk decisions on orders (real traffic), by action and mode.\n"
                    "# TYPE d11_gateway_risk_decisions_total counter\n");
    for (int s = 0; s < 2; s++)
        for (int a = 0; a < D11_RISK_ACTIONS; a++)
            d11_buf_printf(b, "d11_gateway_risk_decisions_total{action=\"%s\",mode=\"%s\"} %llu\n",
                           d11_risk_action_names[a], s ? "shadow" : "enforce", LD(r->decisions[s][a]));
    d11_buf_puts(b, "# HELP d11_gateway_risk_model_total Verdicts of each model (a enforced, b scored on its share).\n"
                    "# TYPE d11_gateway_risk_model_total counter\n");
    for (int m = 0; m < GW_RISK_MODELS; m++)
        for (int a = 0; a < D11_RISK_ACTIONS; a++)
            d11_buf_printf(b, "d11_gateway_risk_model_total{model=\"%s\",action=\"%s\"} %llu\n", m ? "b" : "a",
                           d11_risk_action_names[a], LD(r->model[m][a]));
    d11_buf_puts(b, "# HELP d11_gateway_risk_stress_decisions_total Risk decisions on stress traffic (X-D11-Stress).\n"
                    "# TYPE d11_gateway_risk_stress_decisions_total counter\n");
    for (int a = 0; a < D11_RISK_ACTIONS; a++)
        d11_buf_printf(b, "d11_gateway_risk_stress_decisions_total{action=\"%s\"} %llu\n", d11_risk_action_names[a],
                       LD(r->stress[a]));
    d11_buf_printf(b, "# HELP d11_gateway_risk_logged_total Risk decisions written to the decision log.\n"
                      "# TYPE d11_gateway_risk_logged_total counter\nd11_gateway_risk_logged_total %llu\n"
                      "# HELP d11_gateway_risk_keys Velocity table entries in use.\n"
                      "# TYPE d11_gateway_risk_keys gauge\nd11_gateway_risk_keys %llu\n"
                      "# HELP d11_gateway_risk_keys_evicted_total Velocity keys evicted to make room (their counts restart).\n"
                      "# TYPE d11_gateway_risk_keys_evicted_total counter\nd11_gateway_risk_keys_evicted_total %llu\n"
                      "# HELP d11_gateway_risk_eval_seconds_total Time spent in risk checks (features, rules, models).\n"
                      "# TYPE d11_gateway_risk_eval_seconds_total counter\nd11_gateway_risk_eval_seconds_total %.9f\n"
                      "# HELP d11_gateway_risk_evals_total Risk checks run.\n"
                      "# TYPE d11_gateway_risk_evals_total counter\nd11_gateway_risk_evals_total %llu\n",
                   LD(r->logged), LD(r->table.keys), LD(r->table.evicted), (double)LD(r->eval_ns) / 1e9, LD(r->evals));
#undef LD
}
