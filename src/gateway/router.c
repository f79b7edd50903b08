/*
 * router.c — the route table and the checks every request passes before its handler
 * (see router.h for the order and the contract). Thread: the connection's thread.
 *
 * Rules resources: orders.create (POST /v1/orders), orders.read (GET order, list),
 * orders.pay (pay and cancel), products.read (GET product), products.write (create,
 * restock). /healthz, /readyz, /metrics, / and /admin/... are never limited.
 */
#include "router.h"

#include <stdio.h>
#include <string.h>

#include "admin.h"
#include "orders.h"
#include "probes.h"
#include "products.h"
#include "events.h"
#include "webhooks.h"
#include "request.h"
#include "sale.h"
#include "chaos.h"
#include "stats.h"

#define S_READ     D11_SCOPE_READ
#define S_ORDERS   D11_SCOPE_ORDERS
#define S_PRODUCTS D11_SCOPE_PRODUCTS
#define S_ADMIN    D11_SCOPE_ADMIN
#define S_EVENTS   D11_SCOPE_EVENTS
#define NONE       D11_RES_NONE

static const gw_route routes[] = {
    /* pattern                  method     scopes             resource                  handler               label                    wire message */
    {"/",                       HTTP_GET,  0,                 NONE,                     gw_h_dashboard,       "dashboard",             0},
    {"/healthz",                HTTP_GET,  0,                 NONE,                     gw_h_healthz,         "healthz",               0},
    {"/readyz",                 HTTP_GET,  0,                 NONE,                     gw_h_readyz,          "readyz",                0},
    {"/metrics",                HTTP_GET,  0,                 NONE,                     gw_h_metrics,         "metrics",               0},
    {"/v1/products",            HTTP_POST, S_PRODUCTS,        D11_RES_PRODUCTS_WRITE,   gw_h_product_create,  "products.create",       D11_MSG_PRODUCT_CREATE},
    {"/v1/products/*",          HTTP_GET,  S_READ,            D11_RES_PRODUCTS_READ,    gw_h_product_get,     "products.get",          D11_MSG_PRODUCT_GET},
    {"/v1/products/*/restock",  HTTP_POST, S_PRODUCTS,        D11_RES_PRODUCTS_WRITE,   gw_h_product_restock, "products.restock",      D11_MSG_PRODUCT_RESTOCK},
    {"/v1/orders",              HTTP_POST, S_ORDERS,          D11_RES_ORDERS_CREATE,    gw_h_order_create,    "orders.create",         D11_MSG_ORDER_CREATE},
    {"/v1/orders/*",            HTTP_GET,  S_READ | S_ORDERS, D11_RES_ORDERS_READ,      gw_h_order_ref,       "orders.get",            D11_MSG_ORDER_GET},
    {"/v1/orders/*/pay",        HTTP_POST, S_ORDERS,          D11_RES_ORDERS_PAY,       gw_h_order_ref,       "orders.pay",            D11_MSG_ORDER_PAY},
    {"/v1/orders/*/cancel",     HTTP_POST, S_ORDERS,          D11_RES_ORDERS_PAY,       gw_h_order_ref,       "orders.cancel",         D11_MSG_ORDER_CANCEL},
    {"/v1/users/*/orders",      HTTP_GET,  S_READ | S_ORDERS, D11_RES_ORDERS_READ,      gw_h_order_list,      "orders.list",           D11_MSG_ORDER_LIST},
    {"/admin/cells",            HTTP_GET,  S_ADMIN,           NONE,                     gw_h_admin_cells,     "admin.cells",           0},
    {"/admin/routing",          HTTP_GET,  S_ADMIN,           NONE,                     gw_h_admin_routing,   "admin.routing",         0},
    {"/admin/ledger/*",         HTTP_GET,  S_ADMIN,           NONE,                     gw_h_product_get,     "admin.ledger",          D11_MSG_LEDGER_GET},
    {"/admin/rules",            HTTP_GET,  S_ADMIN,           NONE,                     gw_h_rules_get,       "admin.rules.get",       0},
    {"/admin/rules",            HTTP_PUT,  S_ADMIN,           NONE,                     gw_h_rules_put,       "admin.rules.put",       0},
    {"/admin/rules/rollback",   HTTP_POST, S_ADMIN,           NONE,                     gw_h_rules_rollback,  "admin.rules.rollback",  0},
    {"/admin/log-level",        HTTP_GET,  S_ADMIN,           NONE,                     gw_h_log_level_get,   "admin.log_level.get",   0},
    {"/admin/log-level",        HTTP_PUT,  S_ADMIN,           NONE,                     gw_h_log_level_put,   "admin.log_level.put",   0},
    {"/v1/products",            HTTP_GET,  S_READ,            D11_RES_PRODUCTS_READ,    gw_h_product_list,    "products.list",         D11_MSG_PRODUCT_LIST},
    {"/dashboard/data",         HTTP_GET,  0,                 NONE,                     gw_h_sale_data,       "dashboard.data",        0},
    {"/admin/rules",            HTTP_PATCH, S_ADMIN,          NONE,                     gw_h_rules_patch,     "admin.rules.patch",     0},
    {"/admin/protect",          HTTP_GET,  S_ADMIN,           NONE,                     gw_h_protect_get,     "admin.protect.get",     0},
    {"/v1/events",              HTTP_GET,  S_EVENTS,          NONE,                     gw_h_events,          "events.read",           D11_MSG_EVENTS_READ},
    {"/v1/consumers/*",         HTTP_GET,  S_EVENTS,          NONE,                     gw_h_consumer_get,    "consumers.get",         0},
    {"/v1/consumers/*",         HTTP_PUT,  S_EVENTS,          NONE,                     gw_h_consumer_put,    "consumers.put",         0},
    {"/admin/webhooks",         HTTP_POST, S_ADMIN,           NONE,                     gw_h_hooks_create,    "admin.webhooks.create", 0},
    {"/admin/webhooks",         HTTP_GET,  S_ADMIN,           NONE,                     gw_h_hooks_list,      "admin.webhooks.list",   0},
    {"/admin/webhooks/*",       HTTP_DELETE, S_ADMIN,         NONE,                     gw_h_hooks_delete,    "admin.webhooks.delete", 0},
    {"/admin/webhooks/*/pause", HTTP_POST, S_ADMIN,           NONE,                     gw_h_hooks_pause,     "admin.webhooks.pause",  0},
    {"/admin/webhooks/*/resume", HTTP_POST, S_ADMIN,          NONE,                     gw_h_hooks_resume,    "admin.webhooks.resume", 0},
    {"/admin/webhooks/*/dead",  HTTP_GET,  S_ADMIN,           NONE,                     gw_h_hooks_dead,      "admin.webhooks.dead",   0},
    {"/admin/webhooks/*/replay", HTTP_POST, S_ADMIN,          NONE,                     gw_h_hooks_replay,    "admin.webhooks.replay", 0},
    {"/admin/chaos",            HTTP_POST, S_ADMIN,           NONE,                     gw_h_chaos_create,    "admin.chaos.create",    0},
    {"/admin/chaos",            HTTP_GET,  S_ADMIN,           NONE,                     gw_h_chaos_list,      "admin.chaos.list",      0},
    {"/admin/chaos/*",          HTTP_GET,  S_ADMIN,           NONE,                     gw_h_chaos_get,       "admin.chaos.get",       0},
    {"/admin/chaos/*",          HTTP_DELETE, S_ADMIN,         NONE,                     gw_h_chaos_delete,    "admin.chaos.delete",    0},
    {"/admin/risk/decisions",   HTTP_GET,  S_ADMIN,           NONE,                     gw_h_risk_decisions,  "admin.risk.decisions",  0},
    {"/admin/risk/decisions/*", HTTP_GET,  S_ADMIN,           NONE,                     gw_h_risk_decision,   "admin.risk.decision",   0},
    {"/v1/stats",               HTTP_GET,  S_READ | S_EVENTS, NONE,                     gw_h_stats,           "stats.read",            0},
    {"/dashboard/stats",        HTTP_GET,  0,                 NONE,                     gw_h_stats_board,     "dashboard.stats",       0},
    /* the live-sale-numbers aggregator's own reads (stats_worker.c): admin only, one at a
     * time, so outside protection, flow rules and degrade, and counted apart */
    {"/admin/stats/orders/*",   HTTP_GET,  S_ADMIN,           NONE,                     gw_h_order_ref,       "admin.stats.order",     D11_MSG_ORDER_GET},
    {"/admin/stats/products/*", HTTP_GET,  S_ADMIN,           NONE,                     gw_h_product_get,     "admin.stats.product",   D11_MSG_PRODUCT_GET},
};
#define NROUTES ((int)(sizeof routes / sizeof routes[0]))
_Static_assert(NROUTES + 1 <= GW_ROUTES_MAX, "raise GW_ROUTES_MAX (metrics.h)");

void gw_router_init(struct gw *g)
{
    g->on_request = gw_dispatch;
    g->nroutes = 1 + NROUTES;
    g->route_labels[0] = "other";
    for (int i = 0; i < NROUTES; i++) {
        D11_ASSERT(routes[i].handler && routes[i].label);
        g->route_labels[1 + i] = routes[i].label;
        if (!strcmp(routes[i].label, "orders.create")) g->route_orders_create = 1 + i;
    }
}

/* Match path (no query) against pat; on success the '*' segment is in *param. */
static bool match(const char *pat, const char *path, size_t n, d11_str *param)
{
    size_t i = 0;
    const char *p = pat;
    while (*p) {
        if (*p == '*') {
            size_t s = i;
            while (i < n && path[i] != '/') i++;
            if (i == s) return false;
            param->p = path + s;
            param->n = i - s;
            p++;
            continue;
        }
        if (i >= n || path[i] != *p) return false;
        i++;
        p++;
    }
    return i == n;
}

/* n lowercase hex digits into out (when not NULL); false unless valid and not all zero. */
static bool hexlower(const char *s, size_t n, uint8_t *out)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i += 2) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = s[i + (size_t)k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
            if (d < 0) return false;
            v = v * 16 + d;
        }
        if (out) out[i / 2] = (uint8_t)v;
        if (v) nonzero = true;
    }
    return nonzero;
}

/* W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>"; false when invalid (start a new trace). */
static bool parse_traceparent(const char *v, size_t n, uint8_t tid[16], uint8_t pid[8], uint8_t *flags)
{
    if (n != 55 || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    uint8_t t[16], f, par[8];
    if (!hexlower(v + 3, 32, t) || !hexlower(v + 36, 16, par)) return false;
    if (!hexlower(v + 53, 2, &f) && !(v[53] == '0' && v[54] == '0')) return false;
    if (v[53] == '0' && v[54] == '0') f = 0;
    memcpy(tid, t, 16);
    memcpy(pid, par, 8);
    *flags = f;
    return true;
}

static const char *scope_words(uint32_t need)
{
    return need == (D11_SCOPE_READ | D11_SCOPE_ORDERS) ? "'read' or 'orders'"
           : need == D11_SCOPE_READ                     ? "'read'"
           : need == D11_SCOPE_ORDERS                   ? "'orders'"
           : need == D11_SCOPE_PRODUCTS                 ? "'products'"
           : need == D11_SCOPE_EVENTS                   ? "'events'"
           : need == (D11_SCOPE_READ | D11_SCOPE_EVENTS) ? "'read' or 'events'"
                                                        : "'admin'";
}

/* Find the route of rq's target; false after answering 404 or 405 (with Allow). */
static bool route(gw_thread *t, gw_req *rq)
{
    d11_http_req *r = rq->http;
    /* origin-form only; path up to '?', query up to '#' */
    const char *url = r->url;
    size_t n = r->url_len, pn = 0;
    while (pn < n && url[pn] != '?' && url[pn] != '#') pn++;
    rq->query = url + pn;
    rq->query_len = 0;
    if (pn < n && url[pn] == '?') {
        rq->query++;
        while (pn + 1 + rq->query_len < n && rq->query[rq->query_len] != '#') rq->query_len++;
    }
    char allow[64] = "";
    size_t al = 0;
    for (int k = 0; k < NROUTES; k++) {
        d11_str pm = {"", 0};
        if (!match(routes[k].pattern, url, pn, &pm)) continue;
        if (routes[k].method == r->method) {
            rq->route = &routes[k];
            rq->param = pm;
            rq->c->slots[rq->si].route = (uint8_t)(1 + k);
            return true;
        }
        int w = snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "",
                         http_method_str((enum http_method)routes[k].method));
        if (w > 0 && (size_t)w < sizeof allow - al) al += (size_t)w;
    }
    if (al) {
        char hdr[96], msg[96];
        snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
        snprintf(msg, sizeof msg, "method not allowed; allowed: %s", allow);
        gw_respond_error(t, rq->c, rq->si, 405, "method_not_allowed", msg, hdr);
    } else {
        gw_fail(t, rq, 404, "not_found", "no such route");
    }
    return false;
}

/* Token, scope and stress tag; false after answering 401 / 403 / 422. */
static bool admit(gw_thread *t, gw_req *rq)
{
    const d11_http_req *r = rq->http;
    uint32_t need = rq->route->scopes;
    if (!need) return true;
    uint32_t sc = 0;
    if (r->authorization.present && !r->authorization.over)
        sc = d11_auth_check_label(t->auth, r->authorization.v, r->authorization.len, &rq->label);
    snprintf(rq->c->slots[rq->si].token, sizeof rq->c->slots[rq->si].token, "%s", rq->label);
    if (!sc) {
        gw_respond_error(t, rq->c, rq->si, 401, "unauthorized", "missing or invalid bearer token",
                         "WWW-Authenticate: Bearer\r\n");
        return false;
    }
    if (!d11_scope_ok(sc, need)) {
        gw_fail(t, rq, 403, "forbidden", "token lacks scope %s", scope_words(need));
        return false;
    }
    if (r->stress.present) {
        if (r->stress.len == 1 && r->stress.v[0] == '1') {
            if (!(sc & D11_SCOPE_STRESS)) {
                gw_fail(t, rq, 403, "forbidden", "X-D11-Stress: 1 needs scope 'stress'");
                return false;
            }
            rq->flags |= D11_WF_STRESS;
        } else if (!(r->stress.len == 1 && r->stress.v[0] == '0')) {
            gw_fail(t, rq, 422, "invalid", "X-D11-Stress: must be 0 or 1");
            return false;
        }
    }
    return true;
}

/* Degrade switch and flow rule of the route's resource; false after answering 503 / 429. */
static bool within_rules(gw_thread *t, gw_req *rq)
{
    int res = rq->route->res;
    if (res == D11_RES_NONE) return true;
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    if (t->rules.degrade[res] || (t->rules.nsched && d11_rules_degraded(&t->rules, res, d11_wall_ms()))) {
        gw_ctr_add(&t->m.rejections[GW_RULE_DEGRADE][res], 1);
        gw_fail(t, rq, 503, "degraded", "%s is degraded (switched off by the operator)",
                d11_res_names[res]);
        return false;
    }
    int64_t retry_ns = 0;
    bool flow_ok;
    uint64_t wait_ms = t->rules.flow[res].max_wait_ms;
    if (wait_ms) { /* pace: a turn within max_wait_ms (sent then, pace.c), or 429 */
        int64_t w = d11_flow_reserve(&t->gw->rules, res, d11_mono_ns(), (int64_t)wait_ms * 1000000, &retry_ns);
        flow_ok = w >= 0;
        if (w > 0) rq->pace_ms = (w + 999999) / 1000000;
    } else {
        flow_ok = d11_flow_take(&t->gw->rules, res, d11_mono_ns(), &retry_ns);
    }
    if (!flow_ok) {
        gw_ctr_add(&t->m.rejections[GW_RULE_FLOW][res], 1);
        int64_t secs = (retry_ns + 999999999) / 1000000000;
        if (secs < 1) secs = 1;
        char hdr[48], msg[96];
        snprintf(hdr, sizeof hdr, "Retry-After: %lld\r\n", (long long)secs);
        snprintf(msg, sizeof msg, "%s is over its flow limit", d11_res_names[res]);
        gw_respond_error(t, rq->c, rq->si, 429, "rate_limited", msg, hdr);
        return false;
    }
    for (uint32_t i = 0; i < t->rules.ncallers; i++) { /* per-caller rules (token label) */
        if (t->rules.callers[i].res != (uint32_t)res || strcmp(t->rules.callers[i].label, rq->label)) continue;
        if (!d11_flow_take_caller(&t->gw->rules, (int)i, d11_mono_ns(), &retry_ns)) {
            gw_ctr_add(&t->m.rejections[GW_RULE_FLOW][res], 1);
            int64_t secs = (retry_ns + 999999999) / 1000000000;
            char hdr[48], msg[160];
            snprintf(hdr, sizeof hdr, "Retry-After: %lld\r\n", (long long)(secs < 1 ? 1 : secs));
            snprintf(msg, sizeof msg, "caller '%s' is over its flow limit on %s", rq->label, d11_res_names[res]);
            gw_respond_error(t, rq->c, rq->si, 429, "rate_limited", msg, hdr);
            return false;
        }
    }
    uint64_t conc = t->rules.flow[res].concurrency;
    if (conc) {
        if (!d11_flow_conc_enter(&t->gw->rules, res, conc)) {
            gw_ctr_add(&t->m.rejections[GW_RULE_FLOW][res], 1);
            char msg[96];
            snprintf(msg, sizeof msg, "%s is at its concurrency limit (%llu in flight)", d11_res_names[res],
                     (unsigned long long)conc);
            gw_respond_error(t, rq->c, rq->si, 429, "rate_limited", msg, "Retry-After: 1\r\n");
            return false;
        }
        rq->c->slots[rq->si].conc_res = (int8_t)res;
    }
    return true;
}

/* System adaptive protection (protect.h) for business routes; false after a fast 503
 * overloaded with Retry-After. Checked before the token: a refusal must cost little. */
static bool protected_admit(gw_thread *t, gw_req *rq)
{
    if (rq->route->res == D11_RES_NONE) return true;
    int why = gw_protect_enter(&t->gw->prot);
    if (why == GW_PROTECT_OK) {
        rq->c->slots[rq->si].prot = t->gw->prot.cfg.on;
        return true;
    }
    gw_respond_overloaded(t, rq->c, rq->si, why == GW_PROTECT_RT);
    return false;
}

void gw_dispatch(gw_thread *t, gw_conn *c, int si, d11_http_req *r)
{
    gw_slot *s = &c->slots[si];
    D11_ASSERT(s->state == SLOT_WAIT);
    s->token[0] = 0;
    s->user_hash = 0;
    s->key_prefix[0] = 0;
    memset(s->parent_id, 0, sizeof s->parent_id);
    bool continued = r->traceparent.present && !r->traceparent.over &&
                     parse_traceparent(r->traceparent.v, r->traceparent.len, s->trace_id, s->parent_id, &s->trace_flags);
    if (!continued) /* a new trace: the head-sampling decision, carried by the sampled flag */
        s->trace_flags = d11_otlp_head_sampled(&t->gw->otlp, s->trace_id) ? 1 : 0;
    if (continued && r->tracestate.present && !r->tracestate.over && r->tracestate.len < sizeof c->tracestate) {
        memcpy(c->tracestate, r->tracestate.v, r->tracestate.len); /* honoured: echoed and exported */
        c->tracestate[r->tracestate.len] = 0;
        c->tracestate_slot = (int8_t)si;
    } else if (c->tracestate_slot == si) {
        c->tracestate_slot = -1;
    }
    /* the rules in force: one acquire load, a copy only when they changed (rare) */
    uint64_t gen = d11_rules_store_gen(&t->gw->rules);
    if (gen != t->rules_gen) d11_rules_store_get(&t->gw->rules, &t->rules, &t->rules_gen);
    gw_req rq = {.c = c, .si = si, .http = r, .label = ""};
    if (route(t, &rq) && protected_admit(t, &rq) && admit(t, &rq) && within_rules(t, &rq))
        rq.route->handler(t, &rq);
}
