/*
 * orders.c — the order handlers (see orders.h). Validation and routing only: the cell
 * owns the orders, so every accepted request becomes one wire request to one cell.
 * Thread: the connection's thread.
 */
#include "orders.h"

#include <stdio.h>
#include <string.h>

/* Hot-parameter limits (rules "hot": per SKU of each item, per user, per client IP);
 * false after answering 429 rate_limited naming the value. */
static bool hot_ok(gw_thread *t, gw_req *rq, const d11_msg_order_create *m)
{
    const d11_rules *r = &t->rules;
    if (!r->hot[D11_HOT_SKU].qps && !r->hot[D11_HOT_USER].qps && !r->hot[D11_HOT_IP].qps) return true;
    int64_t now = d11_mono_ns(), retry = 0;
    char uid[24];
    int un = snprintf(uid, sizeof uid, "%llu", (unsigned long long)m->user_id);
    const char *what = NULL, *val = NULL;
    int vn = 0;
    for (uint32_t k = 0; k < m->nitems && !what; k++)
        if (!d11_hot_take(&t->gw->rules, r, D11_HOT_SKU, m->items[k].sku.p, m->items[k].sku.n, now, &retry)) {
            what = "sku";
            val = m->items[k].sku.p;
            vn = (int)m->items[k].sku.n;
        }
    if (!what && !d11_hot_take(&t->gw->rules, r, D11_HOT_USER, uid, (size_t)un, now, &retry)) {
        what = "user";
        val = uid;
        vn = un;
    }
    const char *ip = rq->c->peer;
    if (!what && ip[0] && !d11_hot_take(&t->gw->rules, r, D11_HOT_IP, ip, strlen(ip), now, &retry)) {
        what = "ip";
        val = ip;
        vn = (int)strlen(ip);
    }
    if (!what) return true;
    gw_ctr_add(&t->m.rejections[GW_RULE_FLOW][D11_RES_ORDERS_CREATE], 1);
    int64_t secs = (retry + 999999999) / 1000000000;
    char hdr[48], msg[160];
    snprintf(hdr, sizeof hdr, "Retry-After: %lld\r\n", (long long)(secs < 1 ? 1 : secs));
    snprintf(msg, sizeof msg, "hot-parameter limit: %s '%.*s' is over its rate", what, vn, val);
    gw_respond_error(t, rq->c, rq->si, 429, "rate_limited", msg, hdr);
    return false;
}

void gw_h_order_create(gw_thread *t, gw_req *rq)
{
    d11_msg_order_create *m = &t->order;
    const d11_hval *ik = &rq->http->idempotency_key;
    if (!ik->present || ik->len == 0) {
        gw_fail(t, rq, 422, "invalid", "Idempotency-Key: header is required");
        return;
    }
    if (ik->over || !d11_printable_valid(ik->v, ik->len, D11_IDEM_KEY_BYTES_MAX)) {
        gw_fail(t, rq, 422, "invalid", "Idempotency-Key: 1-128 printable ASCII characters");
        return;
    }
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_scratch scr = gw_body_scratch(t);
    d11_gw_err e;
    if (d11_body_order(&t->json, body, blen, &scr, m, &e)) {
        gw_fail_body(t, rq, &e);
        return;
    }
    gw_slot_set_user(&rq->c->slots[rq->si], m->user_id, ik->v, ik->len); /* masked in the request log */
    int res = rq->route->res;
    D11_ASSERT(res == D11_RES_ORDERS_CREATE);
    if (t->rules.ndeny && d11_rules_denied(&t->rules, m->user_id)) {
        gw_ctr_add(&t->m.rejections[GW_RULE_RISK][res], 1);
        gw_fail(t, rq, 403, "risk_rejected", "order refused by risk rules (user on the deny list)");
        return;
    }
    if (t->rules.max_order_qty) {
        uint64_t total = 0;
        for (uint32_t k = 0; k < m->nitems; k++) total += m->items[k].qty;
        if (total > t->rules.max_order_qty) {
            gw_ctr_add(&t->m.rejections[GW_RULE_RISK][res], 1);
            gw_fail(t, rq, 403, "risk_rejected",
                    "order refused by risk rules (quantity %llu over the limit %llu)",
                    (unsigned long long)total, (unsigned long long)t->rules.max_order_qty);
            return;
        }
    }
    if (!gw_risk_check(t, rq, m)) return; /* velocity rules, scoring model, decision log (risk.c) */
    if (t->rules.nsched) { /* degrade switches scoped to a SKU */
        int64_t now = d11_wall_ms();
        for (uint32_t k = 0; k < m->nitems; k++)
            if (d11_rules_degraded_sku(&t->rules, res, m->items[k].sku.p, m->items[k].sku.n, now)) {
                gw_ctr_add(&t->m.rejections[GW_RULE_DEGRADE][res], 1);
                gw_fail(t, rq, 503, "degraded", "orders.create is degraded for SKU %.*s (switched off by the operator)",
                        (int)m->items[k].sku.n, m->items[k].sku.p);
                return;
            }
    }
    if (!hot_ok(t, rq, m)) return;
    m->idem_key.p = ik->v;
    m->idem_key.n = ik->len;
    d11_buf_reset(&t->tmp);
    d11_msg_order_create_enc(&t->tmp, m);
    gw_forward(t, rq, gw_target_of_slot(t, (unsigned)(m->user_id % D11_SLOTS)), D11_MSG_ORDER_CREATE);
}

void gw_h_order_ref(gw_thread *t, gw_req *rq)
{
    uint16_t type = rq->route->msg;
    D11_ASSERT(type == D11_MSG_ORDER_GET || type == D11_MSG_ORDER_PAY || type == D11_MSG_ORDER_CANCEL);
    uint64_t id;
    if (!gw_param_order_id(rq->param, &id)) {
        gw_fail(t, rq, 404, "not_found", "no such order");
        return;
    }
    d11_msg_order_ref m = {.order_id = id, .payment_id = {"", 0}};
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_scratch scr = gw_body_scratch(t);
    d11_gw_err e;
    if ((type == D11_MSG_ORDER_PAY && d11_body_pay(&t->json, body, blen, &scr, &m.payment_id, &e)) ||
        (type == D11_MSG_ORDER_CANCEL && d11_body_empty_or_object(&t->json, body, blen, &e))) {
        gw_fail_body(t, rq, &e);
        return;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_order_ref_enc(&t->tmp, &m, type == D11_MSG_ORDER_PAY);
    unsigned slot = (unsigned)((id >> 12) & (D11_SLOTS - 1));
    gw_forward(t, rq, gw_target_of_slot(t, slot), type);
}

/* GET /v1/users/{uid}/orders?limit=&before= */
void gw_h_order_list(gw_thread *t, gw_req *rq)
{
    d11_msg_order_list m = {.limit = D11_LIST_LIMIT_DEFAULT, .before = 0};
    char buf[32];
    long n = gw_pct_decode(rq->param.p, rq->param.n, buf, sizeof buf);
    if (n < 1 || d11_parse_u64(buf, (size_t)n, (uint64_t)INT64_MAX, &m.user_id) < 0 || m.user_id < 1) {
        gw_fail(t, rq, 422, "invalid", "user_id: must be an integer in 1..9223372036854775807");
        return;
    }
    const char *q = rq->query;
    size_t qn = rq->query_len;
    bool seen_limit = false, seen_before = false;
    size_t i = 0;
    while (i < qn) {
        size_t j = i;
        while (j < qn && q[j] != '&') j++;
        const char *kv = q + i;
        size_t kvn = j - i;
        const char *eq = memchr(kv, '=', kvn);
        size_t kn = eq ? (size_t)(eq - kv) : kvn;
        const char *v = eq ? eq + 1 : kv + kvn;
        size_t vn = kvn - kn - (eq ? 1 : 0);
        long dn = gw_pct_decode(v, vn, buf, sizeof buf);
        uint64_t x;
        if (kn == 5 && !memcmp(kv, "limit", 5)) {
            if (seen_limit || dn < 1 || d11_parse_u64(buf, (size_t)dn, D11_LIST_LIMIT_MAX, &x) < 0 || x < 1) {
                gw_fail(t, rq, 422, "invalid", "limit: must be an integer in 1..%d (given once)",
                        D11_LIST_LIMIT_MAX);
                return;
            }
            m.limit = (uint32_t)x;
            seen_limit = true;
        } else if (kn == 6 && !memcmp(kv, "before", 6)) {
            if (seen_before || dn < 1 || dn > 20 || d11_parse_u64(buf, (size_t)dn, UINT64_MAX, &x) < 0) {
                gw_fail(t, rq, 422, "invalid", "before: must be an order id (given once)");
                return;
            }
            m.before = x;
            seen_before = true;
        }
        i = j + 1;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_order_list_enc(&t->tmp, &m);
    gw_forward(t, rq, gw_target_of_slot(t, (unsigned)(m.user_id % D11_SLOTS)), D11_MSG_ORDER_LIST);
}
