/*
 * products.c — the product handlers (see products.h). Thread: the connection's thread.
 *
 * The listing cache: per thread (no lock), D11_GW_CATALOG_CACHE_N pages keyed by the
 * encoded PRODUCT_LIST payload (and the stress flag), each served for
 * D11_GW_CATALOG_CACHE_MS after the center answered it, so a storm of shoppers reloading
 * the catalog costs the center one request per thread per second per distinct query.
 * Stock figures in a cached page are at most that old; GET /v1/products/{sku} is never
 * cached. A miss reserves the oldest entry (fill_ref = the client slot); the reply fills
 * it only if it is still reserved by that request.
 */
#include "products.h"

#include <stdlib.h>
#include <string.h>

#include "gw.h"

#define CAT_KEY_BYTES_MAX (16 + D11_CATEGORY_BYTES_MAX + D11_PRODUCT_QUERY_BYTES_MAX + D11_SKU_BYTES_MAX)

typedef struct gw_catentry {
    uint8_t  key[CAT_KEY_BYTES_MAX];
    size_t   keyn;
    int64_t  until_ms; /* served while now < until_ms; 0 = empty or filling */
    int64_t  used_ms;
    uint64_t fill_ref; /* slot ref of the request filling it, 0 = none */
    d11_buf  body;
} gw_catentry;

struct gw_catcache {
    gw_catentry e[D11_GW_CATALOG_CACHE_N];
    uint64_t    hits, misses;
};

void gw_catcache_free(gw_thread *t)
{
    if (!t->catcache) return;
    for (int i = 0; i < D11_GW_CATALOG_CACHE_N; i++) d11_buf_free(&t->catcache->e[i].body);
    free(t->catcache);
    t->catcache = NULL;
}

static void list_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    gw_catentry *e = p->ctx;
    if (e->fill_ref == p->arg) {
        e->fill_ref = 0;
        d11_str code, body;
        if (f && f->hdr.status == 200 && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
            d11_buf_reset(&e->body);
            d11_buf_append(&e->body, body.p, body.n);
            e->until_ms = gw_now_ms(t) + D11_GW_CATALOG_CACHE_MS;
        }
    }
    gw_forward_done(t, p, f, uperr);
}

/* One query parameter value, '+' as space, percent-decoded into buf; -1 when malformed or
 * longer than cap. */
static long qvalue(const char *v, size_t vn, char *buf, size_t cap)
{
    long n = gw_pct_decode(v, vn, buf, cap);
    if (n < 0) return -1;
    for (long i = 0; i < n; i++)
        if (buf[i] == '+' && memchr(v, '+', vn)) buf[i] = ' ';
    return n;
}

void gw_h_product_list(gw_thread *t, gw_req *rq)
{
    d11_msg_product_list m = {.limit = D11_LIST_LIMIT_DEFAULT};
    char cat[D11_CATEGORY_BYTES_MAX], q[D11_PRODUCT_QUERY_BYTES_MAX], after[D11_SKU_BYTES_MAX], num[16];
    const char *qs = rq->query;
    size_t qn = rq->query_len;
    for (size_t i = 0; i < qn;) {
        size_t j = i;
        while (j < qn && qs[j] != '&') j++;
        const char *kv = qs + i;
        size_t kvn = j - i;
        const char *eq = memchr(kv, '=', kvn);
        size_t kn = eq ? (size_t)(eq - kv) : kvn;
        const char *v = eq ? eq + 1 : kv + kvn;
        size_t vn = kvn - kn - (eq ? 1 : 0);
        long n;
        if (kn == 8 && !memcmp(kv, "category", 8)) {
            if ((n = qvalue(v, vn, cat, sizeof cat)) < 0 || !d11_utf8_valid(cat, (size_t)n)) {
                gw_fail(t, rq, 422, "invalid", "category: at most %d bytes of UTF-8", D11_CATEGORY_BYTES_MAX);
                return;
            }
            m.category = (d11_str){cat, (size_t)n};
        } else if (kn == 1 && kv[0] == 'q') {
            if ((n = qvalue(v, vn, q, sizeof q)) < 0 || !d11_utf8_valid(q, (size_t)n)) {
                gw_fail(t, rq, 422, "invalid", "q: at most %d bytes of UTF-8", D11_PRODUCT_QUERY_BYTES_MAX);
                return;
            }
            m.q = (d11_str){q, (size_t)n};
        } else if (kn == 5 && !memcmp(kv, "after", 5)) {
            if ((n = qvalue(v, vn, after, sizeof after)) < 0 || (n > 0 && !d11_sku_valid(after, (size_t)n))) {
                gw_fail(t, rq, 422, "invalid", "after: must be a SKU");
                return;
            }
            m.after = (d11_str){after, (size_t)n};
        } else if (kn == 5 && !memcmp(kv, "limit", 5)) {
            uint64_t x;
            n = gw_pct_decode(v, vn, num, sizeof num);
            if (n < 1 || d11_parse_u64(num, (size_t)n, D11_LIST_LIMIT_MAX, &x) < 0 || x < 1) {
                gw_fail(t, rq, 422, "invalid", "limit: must be an integer in 1..%d", D11_LIST_LIMIT_MAX);
                return;
            }
            m.limit = (uint32_t)x;
        }
        i = j + 1;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_product_list_enc(&t->tmp, &m);
    if (!t->catcache && !(t->catcache = calloc(1, sizeof *t->catcache))) {
        gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_LIST);
        return;
    }
    struct gw_catcache *cc = t->catcache;
    uint8_t key[CAT_KEY_BYTES_MAX];
    size_t keyn = t->tmp.len + 1;
    D11_ASSERT(keyn <= sizeof key);
    key[0] = (rq->flags & D11_WF_STRESS) ? 1 : 0;
    memcpy(key + 1, t->tmp.data, t->tmp.len);
    int64_t now = gw_now_ms(t);
    gw_catentry *victim = &cc->e[0];
    for (int i = 0; i < D11_GW_CATALOG_CACHE_N; i++) {
        gw_catentry *e = &cc->e[i];
        if (e->keyn == keyn && !memcmp(e->key, key, keyn) && now < e->until_ms) {
            cc->hits++;
            e->used_ms = now;
            gw_respond_json(t, rq->c, rq->si, 200, e->body.data, e->body.len);
            return;
        }
        if (e->used_ms < victim->used_ms) victim = e;
    }
    cc->misses++;
    memcpy(victim->key, key, keyn);
    victim->keyn = keyn;
    victim->until_ms = 0;
    victim->used_ms = now;
    victim->fill_ref = gw_slot_ref_of(rq->c, rq->si);
    gw_forward_with(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_LIST, list_done, victim);
}

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
