/*
 * handlers.c — what the gateway does with one parsed request: route, authenticate,
 * apply degrade switches and flow rules, validate, apply risk rules, and either answer
 * locally or forward one wire request to the cell or the center; and what it does with
 * the upstream's answer. Also the fan-out probes (/readyz, /admin/cells) and the
 * Prometheus exposition. Runs on the connection's thread.
 *
 * Order of checks (cheapest refusal first, and nothing unauthenticated costs a parse):
 *   route (404/405) -> token (401) -> scope (403) -> X-D11-Stress (403/422)
 *   -> degrade switch (503 degraded) -> flow rule (429 + Retry-After)
 *   -> path parameters (404/422) -> body (400/422) -> risk rules (403) -> forward.
 *
 * Resources for rules: orders.create (POST /v1/orders), orders.read (GET order, list),
 * orders.pay (pay and cancel), products.read (GET product), products.write (create,
 * restock). /healthz, /readyz, /metrics, / and /admin/... are never limited.
 */
#include "gw_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bodies.h"

const char *const gw_route_names[GR__COUNT] = {
    [GR_OTHER] = "other",
    [GR_PRODUCTS_CREATE] = "products.create",
    [GR_PRODUCTS_GET] = "products.get",
    [GR_PRODUCTS_RESTOCK] = "products.restock",
    [GR_ORDERS_CREATE] = "orders.create",
    [GR_ORDERS_GET] = "orders.get",
    [GR_ORDERS_LIST] = "orders.list",
    [GR_ORDERS_PAY] = "orders.pay",
    [GR_ORDERS_CANCEL] = "orders.cancel",
    [GR_HEALTHZ] = "healthz",
    [GR_READYZ] = "readyz",
    [GR_METRICS] = "metrics",
    [GR_DASHBOARD] = "dashboard",
    [GR_ADMIN_CELLS] = "admin.cells",
    [GR_ADMIN_ROUTING] = "admin.routing",
    [GR_ADMIN_LEDGER] = "admin.ledger",
    [GR_ADMIN_RULES_GET] = "admin.rules.get",
    [GR_ADMIN_RULES_PUT] = "admin.rules.put",
    [GR_ADMIN_RULES_ROLLBACK] = "admin.rules.rollback",
};

const int gw_status_codes[GW_STATUS_N] = {200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 413,
                                          414, 422, 429, 431, 500, 502, 503, 504, 505, 0};

int gw_status_idx(int status)
{
    for (int i = 0; i < GW_STATUS_N - 1; i++)
        if (gw_status_codes[i] == status) return i;
    return GW_STATUS_N - 1;
}

const int64_t gw_lat_bounds_us[GW_LAT_N] = {500,    1000,   2000,    5000,    10000,  20000, 50000,
                                            100000, 200000, 500000, 1000000, 2000000, 5000000};

/* ---- route table ---- */

typedef struct route_def {
    const char *pat; /* '*' = one parameter segment */
    int         method;
    int         route;
} route_def;

static const route_def routes[] = {
    {"/", HTTP_GET, GR_DASHBOARD},
    {"/healthz", HTTP_GET, GR_HEALTHZ},
    {"/readyz", HTTP_GET, GR_READYZ},
    {"/metrics", HTTP_GET, GR_METRICS},
    {"/v1/products", HTTP_POST, GR_PRODUCTS_CREATE},
    {"/v1/products/*", HTTP_GET, GR_PRODUCTS_GET},
    {"/v1/products/*/restock", HTTP_POST, GR_PRODUCTS_RESTOCK},
    {"/v1/orders", HTTP_POST, GR_ORDERS_CREATE},
    {"/v1/orders/*", HTTP_GET, GR_ORDERS_GET},
    {"/v1/orders/*/pay", HTTP_POST, GR_ORDERS_PAY},
    {"/v1/orders/*/cancel", HTTP_POST, GR_ORDERS_CANCEL},
    {"/v1/users/*/orders", HTTP_GET, GR_ORDERS_LIST},
    {"/admin/cells", HTTP_GET, GR_ADMIN_CELLS},
    {"/admin/routing", HTTP_GET, GR_ADMIN_ROUTING},
    {"/admin/ledger/*", HTTP_GET, GR_ADMIN_LEDGER},
    {"/admin/rules", HTTP_GET, GR_ADMIN_RULES_GET},
    {"/admin/rules", HTTP_PUT, GR_ADMIN_RULES_PUT},
    {"/admin/rules/rollback", HTTP_POST, GR_ADMIN_RULES_ROLLBACK},
};

static const struct {
    uint32_t scopes; /* any of these (admin always); 0 = no token needed */
    int      res;    /* rules resource, D11_RES_NONE = not limited */
} rinfo[GR__COUNT] = {
    [GR_OTHER] = {0, D11_RES_NONE},
    [GR_PRODUCTS_CREATE] = {D11_SCOPE_PRODUCTS, D11_RES_PRODUCTS_WRITE},
    [GR_PRODUCTS_GET] = {D11_SCOPE_READ, D11_RES_PRODUCTS_READ},
    [GR_PRODUCTS_RESTOCK] = {D11_SCOPE_PRODUCTS, D11_RES_PRODUCTS_WRITE},
    [GR_ORDERS_CREATE] = {D11_SCOPE_ORDERS, D11_RES_ORDERS_CREATE},
    [GR_ORDERS_GET] = {D11_SCOPE_READ | D11_SCOPE_ORDERS, D11_RES_ORDERS_READ},
    [GR_ORDERS_LIST] = {D11_SCOPE_READ | D11_SCOPE_ORDERS, D11_RES_ORDERS_READ},
    [GR_ORDERS_PAY] = {D11_SCOPE_ORDERS, D11_RES_ORDERS_PAY},
    [GR_ORDERS_CANCEL] = {D11_SCOPE_ORDERS, D11_RES_ORDERS_PAY},
    [GR_HEALTHZ] = {0, D11_RES_NONE},
    [GR_READYZ] = {0, D11_RES_NONE},
    [GR_METRICS] = {0, D11_RES_NONE},
    [GR_DASHBOARD] = {0, D11_RES_NONE},
    [GR_ADMIN_CELLS] = {D11_SCOPE_ADMIN, D11_RES_NONE},
    [GR_ADMIN_ROUTING] = {D11_SCOPE_ADMIN, D11_RES_NONE},
    [GR_ADMIN_LEDGER] = {D11_SCOPE_ADMIN, D11_RES_NONE},
    [GR_ADMIN_RULES_GET] = {D11_SCOPE_ADMIN, D11_RES_NONE},
    [GR_ADMIN_RULES_PUT] = {D11_SCOPE_ADMIN, D11_RES_NONE},
    [GR_ADMIN_RULES_ROLLBACK] = {D11_SCOPE_ADMIN, D11_RES_NONE},
};

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

/* Percent-decode s into out (cap); -1 on a bad escape or overflow. */
static long pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int hi = s[i + 1], lo = s[i + 2];
            int h = hi >= '0' && hi <= '9' ? hi - '0' : (hi | 32) >= 'a' && (hi | 32) <= 'f' ? (hi | 32) - 'a' + 10 : -1;
            int l = lo >= '0' && lo <= '9' ? lo - '0' : (lo | 32) >= 'a' && (lo | 32) <= 'f' ? (lo | 32) - 'a' + 10 : -1;
            if (h < 0 || l < 0) return -1;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (k >= cap) return -1;
        out[k++] = c;
    }
    return (long)k;
}

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
static bool parse_traceparent(const char *v, size_t n, uint8_t tid[16], uint8_t *flags)
{
    if (n != 55 || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-')
        return false;
    uint8_t t[16], f;
    if (!hexlower(v + 3, 32, t) || !hexlower(v + 36, 16, NULL)) return false;
    if (!hexlower(v + 53, 2, &f) && !(v[53] == '0' && v[54] == '0')) return false;
    if (v[53] == '0' && v[54] == '0') f = 0;
    memcpy(tid, t, 16);
    *flags = f;
    return true;
}

/* Order id in a path: 1-20 digits, <= UINT64_MAX. */
static bool parse_order_id(d11_str seg, uint64_t *id)
{
    char buf[24];
    long n = pct_decode(seg.p, seg.n, buf, sizeof buf);
    return n >= 1 && n <= 20 && d11_parse_u64(buf, (size_t)n, UINT64_MAX, id) == 0;
}

static void err(gw_thread *t, gw_conn *c, int si, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void err(gw_thread *t, gw_conn *c, int si, int status, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_respond_error(t, c, si, status, code, msg, "");
}

/* ---- forwarding ---- */

static void forward(gw_thread *t, gw_conn *c, int si, int target, uint16_t type, uint16_t flags)
{
    gw_slot *s = &c->slots[si];
    gw_up *u = &t->up[target];
    if (!u->connected) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_UNAVAILABLE], 1);
        err(t, c, si, 503, "unavailable", "%s is unavailable", u->name);
        return;
    }
    if (d11_conn_pending(&u->c) > D11_RPC_OUT_BYTES_MAX) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_UNAVAILABLE], 1);
        err(t, c, si, 503, "unavailable", "%s is overloaded", u->name);
        return;
    }
    gw_pend *p = gw_pend_alloc(t, PC_REQ);
    if (!p) {
        gw_ctr_add(&t->m.pending_full, 1);
        err(t, c, si, 503, "unavailable", "gateway is at its in-flight limit");
        return;
    }
    p->kind = PK_FWD;
    p->conn_idx = c->idx;
    p->conn_gen = c->gen;
    p->slot = (uint8_t)si;
    gw_up_send(t, target, p, type, flags, s->trace_id, s->span_id, s->trace_flags,
               (uint32_t)G.cfg.request_timeout_ms);
}

static void agg_part_done(gw_thread *t, gw_pend *p, const d11_frame *f);

void gw_on_reply(gw_thread *t, gw_pend *p, const d11_frame *f)
{
    if (p->kind == PK_AGG) {
        agg_part_done(t, p, f);
        return;
    }
    D11_ASSERT(p->kind == PK_FWD);
    int target = p->target, si = p->slot;
    gw_conn *c = gw_conn_lookup(t, p->conn_idx, p->conn_gen);
    gw_pend_free(t, p);
    if (!c || c->slots[si].state != SLOT_WAIT) return; /* the client went away */
    d11_str code, body;
    uint32_t st = f->hdr.status;
    if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) != 0 || st < 200 || st > 599) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_PROTOCOL], 1);
        err(t, c, si, 502, "bad_gateway", "invalid reply from %s", t->up[target].name);
        return;
    }
    if (st < 300) {
        gw_respond_json(t, c, si, (int)st, body.p, body.n);
        return;
    }
    if (st >= 500) gw_ctr_add(&t->m.uperr[target][GW_UPERR_5XX], 1);
    char codebuf[64], msgbuf[512];
    snprintf(codebuf, sizeof codebuf, "%.*s", (int)(code.n ? code.n : 8), code.n ? code.p : "internal");
    snprintf(msgbuf, sizeof msgbuf, "%.*s", (int)(body.n < 500 ? body.n : 500), body.p);
    gw_respond_error(t, c, si, (int)st, codebuf, msgbuf, st == 429 ? "Retry-After: 1\r\n" : "");
}

static void agg_part_fail(gw_thread *t, gw_pend *p);

void gw_on_fail(gw_thread *t, gw_pend *p, int uperr)
{
    if (p->kind == PK_AGG) {
        agg_part_fail(t, p);
        return;
    }
    int target = p->target, si = p->slot;
    gw_conn *c = gw_conn_lookup(t, p->conn_idx, p->conn_gen);
    gw_pend_free(t, p);
    gw_ctr_add(&t->m.uperr[target][uperr], 1);
    if (!c || c->slots[si].state != SLOT_WAIT) return;
    if (uperr == GW_UPERR_TIMEOUT)
        err(t, c, si, 504, "timeout", "%s did not answer within %lld ms", t->up[target].name,
            (long long)G.cfg.request_timeout_ms);
    else
        err(t, c, si, 503, "unavailable", "connection to %s lost", t->up[target].name);
}

/* ---- probes: /readyz and /admin/cells ---- */

static void agg_send(gw_thread *t, gw_conn *c, int si, gw_agg *a, int k, int sub)
{
    gw_pend *p = gw_pend_alloc(t, PC_PROBE);
    gw_agg_part *pt = &a->part[k];
    if (!p) {
        if (sub == SUB_PING) pt->ping_ok = 0;
        else pt->stats_ok = 0;
        return;
    }
    p->kind = PK_AGG;
    p->agg = a;
    p->part = (uint8_t)k;
    p->sub = (uint8_t)sub;
    d11_buf_reset(&t->tmp);
    gw_slot *s = &c->slots[si];
    gw_up_send(t, pt->target, p, sub == SUB_PING ? D11_MSG_PING : D11_MSG_STATS, 0, s->trace_id,
               s->span_id, s->trace_flags, D11_GW_PROBE_TIMEOUT_MS);
    a->outstanding++;
}

static void agg_finish(gw_thread *t, gw_agg *a);

static void agg_start(gw_thread *t, gw_conn *c, int si, int kind)
{
    if (t->nagg >= D11_GW_AGG_MAX) {
        err(t, c, si, 503, "unavailable", "too many probes in flight");
        return;
    }
    gw_agg *a = calloc(1, sizeof *a);
    if (!a) {
        err(t, c, si, 503, "unavailable", "out of memory");
        return;
    }
    t->nagg++;
    a->kind = kind;
    a->conn_idx = c->idx;
    a->conn_gen = c->gen;
    a->slot = (uint8_t)si;
    a->nparts = 1 + t->routing.ncells;
    int64_t now = d11_mono_us();
    for (int k = 0; k < a->nparts; k++) {
        gw_agg_part *pt = &a->part[k];
        pt->target = (uint8_t)(k == 0 ? GW_UP_CENTER : gw_up_cell(k - 1));
        pt->ping_ok = pt->stats_ok = -1;
        pt->sent_us = now;
        if (!gw_up_ready(t, pt->target)) {
            pt->ping_ok = pt->stats_ok = 0;
            continue;
        }
        agg_send(t, c, si, a, k, SUB_PING);
        if (kind == AGG_CELLS) agg_send(t, c, si, a, k, SUB_STATS);
        else pt->stats_ok = 0;
    }
    if (a->outstanding == 0) agg_finish(t, a);
}

static void reply_text(const d11_frame *f, d11_buf *out)
{
    d11_str code, body;
    d11_buf_reset(out);
    if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
        d11_buf_append(out, body.p, body.n);
        return;
    }
    d11_wdec d;
    d11_wdec_init(&d, f->payload, f->payload_len);
    size_t n;
    const char *s = d11_wdec_str(&d, &n);
    if (s && d11_wdec_done(&d)) d11_buf_append(out, s, n);
}

static void agg_part_done(gw_thread *t, gw_pend *p, const d11_frame *f)
{
    gw_agg *a = p->agg;
    gw_agg_part *pt = &a->part[p->part];
    bool ok = f->hdr.status >= 200 && f->hdr.status < 300;
    if (p->sub == SUB_PING) {
        pt->ping_ok = ok;
        pt->rtt_us = d11_mono_us() - pt->sent_us;
        reply_text(f, &pt->ping_txt);
    } else {
        pt->stats_ok = ok;
        reply_text(f, &pt->stats_txt);
    }
    gw_pend_free(t, p);
    if (--a->outstanding == 0) agg_finish(t, a);
}

static void agg_part_fail(gw_thread *t, gw_pend *p)
{
    gw_agg *a = p->agg;
    gw_agg_part *pt = &a->part[p->part];
    if (p->sub == SUB_PING) pt->ping_ok = 0;
    else pt->stats_ok = 0;
    gw_pend_free(t, p);
    if (--a->outstanding == 0) agg_finish(t, a);
}

static void json_text_or_raw(d11_buf *b, const d11_buf *txt)
{
    size_t s = 0, e = txt->len;
    while (s < e && (txt->data[s] == ' ' || txt->data[s] == '\n')) s++;
    while (e > s && (txt->data[e - 1] == ' ' || txt->data[e - 1] == '\n')) e--;
    if (e > s && txt->data[s] == '{' && txt->data[e - 1] == '}' &&
        d11_utf8_valid(txt->data + s, e - s) && !memchr(txt->data + s, 0, e - s))
        d11_buf_append(b, txt->data + s, e - s);
    else
        d11_buf_json_str(b, txt->len ? txt->data : "", txt->len);
}

static void render_routing_brief(gw_thread *t, d11_buf *b)
{
    d11_buf_printf(b, "{\"version\":%u,\"source\":\"%s\",\"ncells\":%u}", t->routing.version,
                   t->routing_live ? "center" : "default", t->routing.ncells);
}

static void agg_finish(gw_thread *t, gw_agg *a)
{
    gw_conn *c = gw_conn_lookup(t, a->conn_idx, a->conn_gen);
    if (c && c->slots[a->slot].state == SLOT_WAIT) {
        d11_buf *b = &t->tmp;
        d11_buf_reset(b);
        bool all_ok = true;
        char down[512] = "";
        size_t dl = 0;
        for (int k = 0; k < a->nparts; k++)
            if (a->part[k].ping_ok != 1) {
                all_ok = false;
                const char *nm = t->up[a->part[k].target].name;
                int w = snprintf(down + dl, sizeof down - dl, "%s%s", dl ? ", " : "", nm);
                if (w > 0 && (size_t)w < sizeof down - dl) dl += (size_t)w;
            }
        if (a->kind == AGG_READY) d11_buf_printf(b, "{\"status\":\"%s\",", all_ok ? "ok" : "unavailable");
        else d11_buf_puts(b, "{");
        d11_buf_puts(b, "\"routing\":");
        render_routing_brief(t, b);
        for (int k = 0; k < a->nparts; k++) {
            gw_agg_part *pt = &a->part[k];
            if (k == 0) d11_buf_puts(b, ",\"center\":");
            else d11_buf_printf(b, "%s{\"id\":%d,", k == 1 ? ",\"cells\":[" : ",", k - 1);
            if (k == 0) d11_buf_puts(b, "{");
            d11_buf_printf(b, "\"up\":%s,\"connected\":%s", pt->ping_ok == 1 ? "true" : "false",
                           gw_up_ready(t, pt->target) ? "true" : "false");
            if (pt->ping_ok == 1) d11_buf_printf(b, ",\"latency_ms\":%.3f", (double)pt->rtt_us / 1000.0);
            if (a->kind == AGG_CELLS) {
                d11_buf_puts(b, ",\"ping\":");
                d11_buf_json_str(b, pt->ping_txt.len ? pt->ping_txt.data : "", pt->ping_txt.len);
                d11_buf_puts(b, ",\"stats\":");
                if (pt->stats_ok == 1) json_text_or_raw(b, &pt->stats_txt);
                else d11_buf_puts(b, "null");
            }
            d11_buf_puts(b, "}");
        }
        if (a->nparts > 1) d11_buf_puts(b, "]");
        int status = 200;
        if (a->kind == AGG_READY && !all_ok) {
            status = 503;
            d11_buf_puts(b, ",\"error\":{\"code\":\"unavailable\",\"message\":");
            char msg[600];
            snprintf(msg, sizeof msg, "not ready: %s down", down);
            d11_buf_json_str(b, msg, strlen(msg));
            d11_buf_printf(b, ",\"request_id\":\"%s\"}", c->slots[a->slot].rid);
        }
        d11_buf_puts(b, "}");
        gw_respond_json(t, c, a->slot, status, b->data, b->len);
    }
    for (int k = 0; k < a->nparts; k++) {
        d11_buf_free(&a->part[k].ping_txt);
        d11_buf_free(&a->part[k].stats_txt);
    }
    free(a);
    t->nagg--;
}

/* ---- local endpoints ---- */

static void admin_routing(gw_thread *t, gw_conn *c, int si)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_printf(b, "{\"version\":%u,\"source\":\"%s\",\"ncells\":%u,\"slots\":%d,\"ranges\":[",
                   t->routing.version, t->routing_live ? "center" : "default", t->routing.ncells,
                   D11_SLOTS);
    int from = 0;
    for (int s = 1; s <= D11_SLOTS; s++)
        if (s == D11_SLOTS || t->routing.cell_of_slot[s] != t->routing.cell_of_slot[from]) {
            d11_buf_printf(b, "%s{\"from\":%d,\"to\":%d,\"cell\":%u}", from ? "," : "", from, s - 1,
                           t->routing.cell_of_slot[from]);
            from = s;
        }
    d11_buf_puts(b, "]}");
    gw_respond_json(t, c, si, 200, b->data, b->len);
}

static void rules_reply(gw_thread *t, gw_conn *c, int si, const d11_rules *r)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_rules_render(r, b);
    gw_respond_json(t, c, si, 200, b->data, b->len);
}

static void admin_rules_put(gw_thread *t, gw_conn *c, int si, d11_http_req *r)
{
    static __thread d11_rules doc, applied;
    bool has_version;
    char msg[256];
    int rc = d11_rules_parse(&t->json, r->body.data ? r->body.data : "", r->body.len, &doc, &has_version, msg,
                             sizeof msg);
    if (rc == D11_JSON_EBAD) {
        err(t, c, si, 400, "bad_json", "malformed JSON: %s", msg);
        return;
    }
    if (rc) {
        err(t, c, si, 422, "invalid", "%s", msg);
        return;
    }
    d11_rules cur;
    uint64_t g;
    d11_rules_store_get(&G.rules, &cur, &g);
    rc = d11_rules_store_put(&G.rules, &doc, has_version, &applied);
    if (rc == -ESTALE) {
        err(t, c, si, 409, "version_conflict", "version %llu is not the current version %llu",
            (unsigned long long)doc.version, (unsigned long long)cur.version);
        return;
    }
    if (rc) {
        err(t, c, si, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    d11_info("rules version %llu applied (admin API)", (unsigned long long)applied.version);
    rules_reply(t, c, si, &applied);
}

static void admin_rules_rollback(gw_thread *t, gw_conn *c, int si)
{
    static __thread d11_rules applied;
    int rc = d11_rules_store_rollback(&G.rules, &applied);
    if (rc == -ENOENT) {
        err(t, c, si, 409, "no_history", "no previous rules version to roll back to");
        return;
    }
    if (rc) {
        err(t, c, si, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    d11_info("rules rolled back to version %llu", (unsigned long long)applied.version);
    rules_reply(t, c, si, &applied);
}

/* GET /v1/users/{uid}/orders?limit=&before= */
static void orders_list(gw_thread *t, gw_conn *c, int si, d11_str uid, const char *q, size_t qn,
                        uint16_t flags)
{
    d11_msg_order_list m = {.limit = D11_LIST_LIMIT_DEFAULT, .before = 0};
    char buf[32];
    long n = pct_decode(uid.p, uid.n, buf, sizeof buf);
    if (n < 1 || d11_parse_u64(buf, (size_t)n, (uint64_t)INT64_MAX, &m.user_id) < 0 || m.user_id < 1) {
        err(t, c, si, 422, "invalid", "user_id: must be an integer in 1..9223372036854775807");
        return;
    }
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
        long dn = pct_decode(v, vn, buf, sizeof buf);
        uint64_t x;
        if (kn == 5 && !memcmp(kv, "limit", 5)) {
            if (seen_limit || dn < 1 || d11_parse_u64(buf, (size_t)dn, D11_LIST_LIMIT_MAX, &x) < 0 || x < 1) {
                err(t, c, si, 422, "invalid", "limit: must be an integer in 1..%d (given once)",
                    D11_LIST_LIMIT_MAX);
                return;
            }
            m.limit = (uint32_t)x;
            seen_limit = true;
        } else if (kn == 6 && !memcmp(kv, "before", 6)) {
            if (seen_before || dn < 1 || dn > 20 || d11_parse_u64(buf, (size_t)dn, UINT64_MAX, &x) < 0) {
                err(t, c, si, 422, "invalid", "before: must be an order id (given once)");
                return;
            }
            m.before = x;
            seen_before = true;
        }
        i = j + 1;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_order_list_enc(&t->tmp, &m);
    forward(t, c, si, gw_target_of_slot(t, (unsigned)(m.user_id % D11_SLOTS)), D11_MSG_ORDER_LIST, flags);
}

static bool sku_from_path(d11_str seg, char *buf, size_t cap, d11_str *out)
{
    long n = pct_decode(seg.p, seg.n, buf, cap);
    if (n < 1 || !d11_sku_valid(buf, (size_t)n)) return false;
    out->p = buf;
    out->n = (size_t)n;
    return true;
}

void gw_dispatch(gw_thread *t, gw_conn *c, int si, d11_http_req *r)
{
    gw_slot *s = &c->slots[si];
    if (r->traceparent.present && !r->traceparent.over)
        parse_traceparent(r->traceparent.v, r->traceparent.len, s->trace_id, &s->trace_flags);

    /* target: origin-form only; path up to '?', query up to '#' */
    const char *url = r->url;
    size_t n = r->url_len, pn = 0;
    while (pn < n && url[pn] != '?' && url[pn] != '#') pn++;
    const char *q = url + pn;
    size_t qn = 0;
    if (pn < n && url[pn] == '?') {
        q++;
        while (pn + 1 + qn < n && q[qn] != '#') qn++;
    }
    int route = -1;
    d11_str param = {"", 0};
    char allow[64] = "";
    size_t al = 0;
    for (size_t k = 0; k < sizeof routes / sizeof routes[0]; k++) {
        d11_str pm = {"", 0};
        if (!match(routes[k].pat, url, pn, &pm)) continue;
        if (routes[k].method == r->method) {
            route = routes[k].route;
            param = pm;
            break;
        }
        int w = snprintf(allow + al, sizeof allow - al, "%s%s", al ? ", " : "",
                         http_method_str((enum http_method)routes[k].method));
        if (w > 0 && (size_t)w < sizeof allow - al) al += (size_t)w;
    }
    if (route < 0) {
        if (al) {
            char hdr[96];
            snprintf(hdr, sizeof hdr, "Allow: %s\r\n", allow);
            char msg[96];
            snprintf(msg, sizeof msg, "method not allowed; allowed: %s", allow);
            gw_respond_error(t, c, si, 405, "method_not_allowed", msg, hdr);
        } else {
            err(t, c, si, 404, "not_found", "no such route");
        }
        return;
    }
    s->route = (uint8_t)route;

    /* authentication, scope, stress tag */
    uint16_t flags = 0;
    if (rinfo[route].scopes) {
        uint32_t sc = 0;
        if (r->authorization.present && !r->authorization.over)
            sc = d11_auth_check(t->auth, r->authorization.v, r->authorization.len);
        if (!sc) {
            gw_respond_error(t, c, si, 401, "unauthorized", "missing or invalid bearer token",
                             "WWW-Authenticate: Bearer\r\n");
            return;
        }
        if (!d11_scope_ok(sc, rinfo[route].scopes)) {
            uint32_t need = rinfo[route].scopes;
            err(t, c, si, 403, "forbidden", "token lacks scope %s",
                need == (D11_SCOPE_READ | D11_SCOPE_ORDERS) ? "'read' or 'orders'"
                : need == D11_SCOPE_READ                     ? "'read'"
                : need == D11_SCOPE_ORDERS                   ? "'orders'"
                : need == D11_SCOPE_PRODUCTS                 ? "'products'"
                                                             : "'admin'");
            return;
        }
        if (r->stress.present) {
            if (r->stress.len == 1 && r->stress.v[0] == '1') {
                if (!(sc & D11_SCOPE_STRESS)) {
                    err(t, c, si, 403, "forbidden", "X-D11-Stress: 1 needs scope 'stress'");
                    return;
                }
                flags |= D11_WF_STRESS;
            } else if (!(r->stress.len == 1 && r->stress.v[0] == '0')) {
                err(t, c, si, 422, "invalid", "X-D11-Stress: must be 0 or 1");
                return;
            }
        }
    }

    /* degrade switches and flow rules */
    int res = rinfo[route].res;
    if (res != D11_RES_NONE) {
        if (t->rules.degrade[res]) {
            gw_ctr_add(&t->m.rejections[GW_RULE_DEGRADE][res], 1);
            err(t, c, si, 503, "degraded", "%s is degraded (switched off by the operator)",
                d11_res_names[res]);
            return;
        }
        int64_t retry_ns;
        if (!d11_flow_take(&G.rules, res, d11_mono_ns(), &retry_ns)) {
            gw_ctr_add(&t->m.rejections[GW_RULE_FLOW][res], 1);
            int64_t secs = (retry_ns + 999999999) / 1000000000;
            if (secs < 1) secs = 1;
            char hdr[48];
            snprintf(hdr, sizeof hdr, "Retry-After: %lld\r\n", (long long)secs);
            char msg[96];
            snprintf(msg, sizeof msg, "%s is over its flow limit", d11_res_names[res]);
            gw_respond_error(t, c, si, 429, "rate_limited", msg, hdr);
            return;
        }
    }

    const char *body = r->body.data ? r->body.data : "";
    size_t blen = r->body.len;
    d11_scratch scr = {t->scratch, D11_HTTP_BODY_BYTES_MAX + 16, 0};
    d11_gw_err e;
    char skubuf[D11_SKU_BYTES_MAX + 1];
    d11_str sku;
    uint64_t id;
    switch (route) {
    case GR_HEALTHZ:
        gw_respond_json(t, c, si, 200, "{\"status\":\"ok\"}", 15);
        return;
    case GR_READYZ:
        agg_start(t, c, si, AGG_READY);
        return;
    case GR_ADMIN_CELLS:
        agg_start(t, c, si, AGG_CELLS);
        return;
    case GR_METRICS:
        d11_buf_reset(&t->tmp);
        gw_render_metrics(&t->tmp);
        gw_respond(t, c, si, 200, "text/plain; version=0.0.4; charset=utf-8", "", t->tmp.data, t->tmp.len);
        return;
    case GR_DASHBOARD:
        gw_respond(t, c, si, 200, "text/html; charset=utf-8", "Cache-Control: no-store\r\n",
                   gw_dashboard_html, strlen(gw_dashboard_html));
        return;
    case GR_ADMIN_ROUTING:
        admin_routing(t, c, si);
        return;
    case GR_ADMIN_RULES_GET: {
        static __thread d11_rules cur;
        uint64_t g;
        d11_rules_store_get(&G.rules, &cur, &g);
        rules_reply(t, c, si, &cur);
        return;
    }
    case GR_ADMIN_RULES_PUT:
        admin_rules_put(t, c, si, r);
        return;
    case GR_ADMIN_RULES_ROLLBACK:
        admin_rules_rollback(t, c, si);
        return;
    case GR_ADMIN_LEDGER:
    case GR_PRODUCTS_GET: {
        if (!sku_from_path(param, skubuf, sizeof skubuf, &sku)) {
            err(t, c, si, 404, "not_found", "no such product");
            return;
        }
        d11_msg_sku_qty m = {.sku = sku};
        d11_buf_reset(&t->tmp);
        d11_msg_sku_qty_enc(&t->tmp, &m, false);
        forward(t, c, si, GW_UP_CENTER, route == GR_PRODUCTS_GET ? D11_MSG_PRODUCT_GET : D11_MSG_LEDGER_GET,
                flags);
        return;
    }
    case GR_PRODUCTS_CREATE: {
        d11_msg_product m;
        if (d11_body_product(&t->json, body, blen, &scr, &m, &e)) break;
        d11_buf_reset(&t->tmp);
        d11_msg_product_enc(&t->tmp, &m);
        forward(t, c, si, GW_UP_CENTER, D11_MSG_PRODUCT_CREATE, flags);
        return;
    }
    case GR_PRODUCTS_RESTOCK: {
        if (!sku_from_path(param, skubuf, sizeof skubuf, &sku)) {
            err(t, c, si, 404, "not_found", "no such product");
            return;
        }
        d11_msg_sku_qty m = {.sku = sku};
        if (d11_body_restock(&t->json, body, blen, &m.qty, &e)) break;
        d11_buf_reset(&t->tmp);
        d11_msg_sku_qty_enc(&t->tmp, &m, true);
        forward(t, c, si, GW_UP_CENTER, D11_MSG_PRODUCT_RESTOCK, flags);
        return;
    }
    case GR_ORDERS_CREATE: {
        static __thread d11_msg_order_create m;
        const d11_hval *ik = &r->idempotency_key;
        if (!ik->present || ik->len == 0) {
            err(t, c, si, 422, "invalid", "Idempotency-Key: header is required");
            return;
        }
        if (ik->over || !d11_printable_valid(ik->v, ik->len, D11_IDEM_KEY_BYTES_MAX)) {
            err(t, c, si, 422, "invalid", "Idempotency-Key: 1-128 printable ASCII characters");
            return;
        }
        if (d11_body_order(&t->json, body, blen, &scr, &m, &e)) break;
        if (t->rules.ndeny && d11_rules_denied(&t->rules, m.user_id)) {
            gw_ctr_add(&t->m.rejections[GW_RULE_RISK][res], 1);
            err(t, c, si, 403, "risk_rejected", "order refused by risk rules (user on the deny list)");
            return;
        }
        if (t->rules.max_order_qty) {
            uint64_t total = 0;
            for (uint32_t k = 0; k < m.nitems; k++) total += m.items[k].qty;
            if (total > t->rules.max_order_qty) {
                gw_ctr_add(&t->m.rejections[GW_RULE_RISK][res], 1);
                err(t, c, si, 403, "risk_rejected",
                    "order refused by risk rules (quantity %llu over the limit %llu)",
                    (unsigned long long)total, (unsigned long long)t->rules.max_order_qty);
                return;
            }
        }
        m.idem_key.p = ik->v;
        m.idem_key.n = ik->len;
        d11_buf_reset(&t->tmp);
        d11_msg_order_create_enc(&t->tmp, &m);
        forward(t, c, si, gw_target_of_slot(t, (unsigned)(m.user_id % D11_SLOTS)), D11_MSG_ORDER_CREATE,
                flags);
        return;
    }
    case GR_ORDERS_GET:
    case GR_ORDERS_PAY:
    case GR_ORDERS_CANCEL: {
        if (!parse_order_id(param, &id)) {
            err(t, c, si, 404, "not_found", "no such order");
            return;
        }
        d11_msg_order_ref m = {.order_id = id, .payment_id = {"", 0}};
        if (route == GR_ORDERS_PAY && d11_body_pay(&t->json, body, blen, &scr, &m.payment_id, &e)) break;
        if (route == GR_ORDERS_CANCEL && d11_body_empty_or_object(&t->json, body, blen, &e)) break;
        d11_buf_reset(&t->tmp);
        d11_msg_order_ref_enc(&t->tmp, &m, route == GR_ORDERS_PAY);
        unsigned slot = (unsigned)((id >> 12) & (D11_SLOTS - 1));
        forward(t, c, si, gw_target_of_slot(t, slot),
                route == GR_ORDERS_GET ? D11_MSG_ORDER_GET
                : route == GR_ORDERS_PAY ? D11_MSG_ORDER_PAY
                                         : D11_MSG_ORDER_CANCEL,
                flags);
        return;
    }
    case GR_ORDERS_LIST:
        orders_list(t, c, si, param, q, qn, flags);
        return;
    default:
        err(t, c, si, 500, "internal", "unhandled route");
        return;
    }
    /* body validation failed */
    gw_respond_error(t, c, si, e.status, e.code, e.msg, "");
}

/* ---- Prometheus exposition ---- */

void gw_render_metrics(d11_buf *b)
{
    int T = G.nthreads;
#define SUM(expr)                                                                          \
    ({                                                                                     \
        uint64_t _s = 0;                                                                   \
        for (int _i = 0; _i < T; _i++) {                                                   \
            gw_metrics *m = &G.threads[_i].m;                                              \
            (void)m;                                                                       \
            _s += (uint64_t)atomic_load_explicit(&(expr), memory_order_relaxed);            \
        }                                                                                  \
        _s;                                                                                \
    })
    d11_buf_puts(b, "# HELP d11_gateway_requests_total HTTP requests answered, by route and status.\n"
                    "# TYPE d11_gateway_requests_total counter\n");
    for (int r = 0; r < GR__COUNT; r++)
        for (int s = 0; s < GW_STATUS_N; s++) {
            uint64_t v = SUM(m->req[r][s]);
            if (!v) continue;
            if (gw_status_codes[s])
                d11_buf_printf(b, "d11_gateway_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                               gw_route_names[r], gw_status_codes[s], (unsigned long long)v);
            else
                d11_buf_printf(b, "d11_gateway_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                               gw_route_names[r], (unsigned long long)v);
        }
    d11_buf_puts(b, "# HELP d11_gateway_request_duration_seconds Time from request parsed to response queued.\n"
                    "# TYPE d11_gateway_request_duration_seconds histogram\n");
    for (int r = 0; r < GR__COUNT; r++) {
        uint64_t cum = 0, total = 0;
        for (int k = 0; k <= GW_LAT_N; k++) total += SUM(m->lat[r][k]);
        if (!total) continue;
        for (int k = 0; k <= GW_LAT_N; k++) {
            cum += SUM(m->lat[r][k]);
            if (k < GW_LAT_N)
                d11_buf_printf(b, "d11_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                               gw_route_names[r], (double)gw_lat_bounds_us[k] / 1e6, (unsigned long long)cum);
            else
                d11_buf_printf(b, "d11_gateway_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
                               gw_route_names[r], (unsigned long long)cum);
        }
        d11_buf_printf(b, "d11_gateway_request_duration_seconds_sum{route=\"%s\"} %.6f\n", gw_route_names[r],
                       (double)SUM(m->lat_sum_us[r]) / 1e6);
        d11_buf_printf(b, "d11_gateway_request_duration_seconds_count{route=\"%s\"} %llu\n", gw_route_names[r],
                       (unsigned long long)total);
    }
    int64_t inflight = 0, open = 0;
    for (int i = 0; i < T; i++) {
        inflight += atomic_load_explicit(&G.threads[i].m.inflight, memory_order_relaxed);
        open += atomic_load_explicit(&G.threads[i].m.conns_open, memory_order_relaxed);
    }
    d11_buf_printf(b, "# HELP d11_gateway_inflight_requests Requests parsed and not yet answered.\n"
                      "# TYPE d11_gateway_inflight_requests gauge\nd11_gateway_inflight_requests %lld\n",
                   (long long)inflight);
    d11_buf_printf(b, "# HELP d11_gateway_connections Open client connections.\n"
                      "# TYPE d11_gateway_connections gauge\nd11_gateway_connections %lld\n",
                   (long long)open);
    d11_buf_printf(b, "# HELP d11_gateway_connections_accepted_total Client connections accepted.\n"
                      "# TYPE d11_gateway_connections_accepted_total counter\n"
                      "d11_gateway_connections_accepted_total %llu\n",
                   (unsigned long long)SUM(m->conns_accepted));
    d11_buf_printf(b, "# HELP d11_gateway_connections_rejected_total Connections closed at accept (over the per-thread limit).\n"
                      "# TYPE d11_gateway_connections_rejected_total counter\n"
                      "d11_gateway_connections_rejected_total %llu\n",
                   (unsigned long long)SUM(m->conns_rejected));
    static const char *rule_names[GW_RULE_N] = {"flow", "degrade", "risk"};
    d11_buf_puts(b, "# HELP d11_gateway_rejections_total Requests refused by a rule.\n"
                    "# TYPE d11_gateway_rejections_total counter\n");
    for (int k = 0; k < GW_RULE_N; k++)
        for (int res = 0; res < D11_RES_COUNT; res++)
            d11_buf_printf(b, "d11_gateway_rejections_total{rule=\"%s\",resource=\"%s\"} %llu\n", rule_names[k],
                           d11_res_names[res], (unsigned long long)SUM(m->rejections[k][res]));
    static const char *uperr_names[GW_UPERR_N] = {"unavailable", "timeout", "dropped", "protocol", "status_5xx"};
    d11_buf_puts(b, "# HELP d11_gateway_upstream_errors_total Failed upstream requests by target and kind.\n"
                    "# TYPE d11_gateway_upstream_errors_total counter\n");
    d11_buf_puts(b, "# HELP d11_gateway_upstream_connected Gateway threads connected to the target.\n"
                    "# TYPE d11_gateway_upstream_connected gauge\n");
    for (int u = 0; u < GW_UP_N; u++) {
        if (!SUM(m->up_wanted[u])) continue;
        const char *nm = G.threads[0].up[u].name;
        d11_buf_printf(b, "d11_gateway_upstream_connected{target=\"%s\"} %llu\n", nm,
                       (unsigned long long)SUM(m->up_connected[u]));
        for (int k = 0; k < GW_UPERR_N; k++) {
            uint64_t v = SUM(m->uperr[u][k]);
            if (v)
                d11_buf_printf(b, "d11_gateway_upstream_errors_total{target=\"%s\",kind=\"%s\"} %llu\n", nm,
                               uperr_names[k], (unsigned long long)v);
        }
    }
    d11_buf_printf(b, "# HELP d11_gateway_late_replies_total Upstream replies that arrived after their deadline.\n"
                      "# TYPE d11_gateway_late_replies_total counter\nd11_gateway_late_replies_total %llu\n",
                   (unsigned long long)SUM(m->late_replies));
    d11_buf_printf(b, "# HELP d11_gateway_pending_full_total Requests refused because the pending table was full.\n"
                      "# TYPE d11_gateway_pending_full_total counter\nd11_gateway_pending_full_total %llu\n",
                   (unsigned long long)SUM(m->pending_full));
    static __thread d11_rules cur;
    uint64_t g;
    d11_rules_store_get(&G.rules, &cur, &g);
    d11_buf_printf(b, "# HELP d11_gateway_rules_version Version of the rules in force.\n"
                      "# TYPE d11_gateway_rules_version gauge\nd11_gateway_rules_version %llu\n",
                   (unsigned long long)cur.version);
    d11_buf_printf(b, "# HELP d11_gateway_routing_version Routing table version (0 = default split).\n"
                      "# TYPE d11_gateway_routing_version gauge\nd11_gateway_routing_version %u\n",
                   (unsigned)atomic_load(&G.threads[0].m.routing_version));
    d11_buf_printf(b, "# HELP d11_gateway_threads Event-loop threads.\n"
                      "# TYPE d11_gateway_threads gauge\nd11_gateway_threads %d\n", T);
    d11_buf_printf(b, "# HELP d11_gateway_uptime_seconds Seconds since start.\n"
                      "# TYPE d11_gateway_uptime_seconds gauge\nd11_gateway_uptime_seconds %.3f\n",
                   (double)(d11_mono_ms() - G.start_ms) / 1000.0);
#undef SUM
}
