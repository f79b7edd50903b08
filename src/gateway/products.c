/*
 * products.c — the product handlers (see products.h). Thread: the connection's thread.
 */
#include "products.h"

void gw_h_product_create(gw_thread *t, gw_req *rq)
{
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_scratch scr = gw_body_scratch(t);
    d11_gw_err e;
    d11_msg_product m;
    if (d11_body_product(&t->json, body, blen, &scr, &m, &e)) {
        gw_fail_body(t, rq, &e);
        return;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_product_enc(&t->tmp, &m);
    gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_CREATE);
}

/* A degrade switch scoped to this SKU (rules "degrade_schedule"); false after 503. */
static bool sku_live(gw_thread *t, gw_req *rq, d11_str sku)
{
    int res = rq->route->res;
    if (!t->rules.nsched || res == D11_RES_NONE || !d11_rules_degraded_sku(&t->rules, res, sku.p, sku.n, d11_wall_ms()))
        return true;
    gw_ctr_add(&t->m.rejections[GW_RULE_DEGRADE][res], 1);
    gw_fail(t, rq, 503, "degraded", "%s is degraded for SKU %.*s (switched off by the operator)", d11_res_names[res],
            (int)sku.n, sku.p);
    return false;
}

void gw_h_product_get(gw_thread *t, gw_req *rq)
{
    D11_ASSERT(rq->route->msg == D11_MSG_PRODUCT_GET || rq->route->msg == D11_MSG_LEDGER_GET);
    char skubuf[D11_SKU_BYTES_MAX + 1];
    d11_str sku;
    if (!gw_param_sku(rq->param, skubuf, sizeof skubuf, &sku)) {
        gw_fail(t, rq, 404, "not_found", "no such product");
        return;
    }
    if (!sku_live(t, rq, sku)) return;
    d11_msg_sku_qty m = {.sku = sku};
    d11_buf_reset(&t->tmp);
    d11_msg_sku_qty_enc(&t->tmp, &m, false);
    gw_forward(t, rq, GW_UP_CENTER, rq->route->msg);
}

void gw_h_product_restock(gw_thread *t, gw_req *rq)
{
    char skubuf[D11_SKU_BYTES_MAX + 1];
    d11_str sku;
    if (!gw_param_sku(rq->param, skubuf, sizeof skubuf, &sku)) {
        gw_fail(t, rq, 404, "not_found", "no such product");
        return;
    }
    if (!sku_live(t, rq, sku)) return;
    d11_msg_sku_qty m = {.sku = sku};
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_gw_err e;
    if (d11_body_restock(&t->json, body, blen, &m.qty, &e)) {
        gw_fail_body(t, rq, &e);
        return;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_sku_qty_enc(&t->tmp, &m, true);
    gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_RESTOCK);
}
