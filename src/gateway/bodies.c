/*
 * bodies.c — validation of the public API's request bodies (see bodies.h).
 */
#include "bodies.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int err(d11_gw_err *e, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int err(d11_gw_err *e, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->status = status;
    e->code = code;
    return -1;
}
#define INVALID(e, ...) err((e), 422, "invalid", __VA_ARGS__)

bool d11_sku_valid(const char *p, size_t n)
{
    if (n < 1 || n > D11_SKU_BYTES_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool d11_printable_valid(const char *p, size_t n, size_t max)
{
    if (n < 1 || n > max) return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e) return false; /* printable ASCII, space included */
    return true;
}

static int parse(d11_json *j, const char *body, size_t n, d11_gw_err *e)
{
    if (d11_json_parse(j, body, n) != 0) return err(e, 400, "bad_json", "malformed JSON: %s", j->err);
    return 0;
}

/* Integer field: missing / wrong type / range -> 422 naming the field. */
static int get_u64(const d11_json *j, int obj, const char *key, const char *label, uint64_t min,
                   uint64_t max, bool required, uint64_t *out, d11_gw_err *e)
{
    int t = d11_json_find(j, obj, key);
    int rc = d11_json_u64(j, t, min, max, out);
    if (rc == 0) return 0;
    if (rc == D11_JSON_EMISSING && !required) return 1;
    if (rc == D11_JSON_EMISSING) return INVALID(e, "%s: required", label);
    return INVALID(e, "%s: must be an integer in %llu..%llu", label, (unsigned long long)min,
                   (unsigned long long)max);
}

/* String field into scratch. Returns 0, 1 (absent, optional) or -1. */
static int get_str(const d11_json *j, int obj, const char *key, const char *label, size_t max,
                   bool required, d11_scratch *s, d11_str *out, d11_gw_err *e)
{
    int t = d11_json_find(j, obj, key);
    size_t n = 0;
    char *dst = s->p + s->used;
    int rc = d11_json_str(j, t, dst, s->cap - s->used, &n);
    if (rc == D11_JSON_EMISSING) {
        if (!required) return 1;
        return INVALID(e, "%s: required", label);
    }
    if (rc == D11_JSON_ETYPE) return INVALID(e, "%s: must be a string", label);
    if (rc || n > max) return INVALID(e, "%s: at most %zu bytes", label, max);
    if (memchr(dst, 0, n)) return INVALID(e, "%s: must not contain NUL", label);
    s->used += n;
    out->p = dst;
    out->n = n;
    return 0;
}

int d11_body_order(d11_json *j, const char *body, size_t n, d11_scratch *s,
                   d11_msg_order_create *m, d11_gw_err *e)
{
    if (parse(j, body, n, e)) return -1;
    if (get_u64(j, 0, "user_id", "user_id", 1, (uint64_t)INT64_MAX, true, &m->user_id, e)) return -1;
    int items = d11_json_find(j, 0, "items");
    if (items < 0 || j->tok[items].type == D11_JT_NULL) return INVALID(e, "items: required");
    if (j->tok[items].type != D11_JT_ARRAY) return INVALID(e, "items: must be an array");
    int cnt = j->tok[items].size;
    if (cnt < 1 || cnt > D11_ORDER_ITEMS_MAX)
        return INVALID(e, "items: must hold 1..%d items", D11_ORDER_ITEMS_MAX);
    m->nitems = (uint32_t)cnt;
    int it = items + 1;
    for (int i = 0; i < cnt; i++, it = j->tok[it].next) {
        char label[48];
        if (j->tok[it].type != D11_JT_OBJECT) return INVALID(e, "items[%d]: must be an object", i);
        snprintf(label, sizeof label, "items[%d].sku", i);
        d11_str sku;
        if (get_str(j, it, "sku", label, D11_SKU_BYTES_MAX, true, s, &sku, e)) return -1;
        if (!d11_sku_valid(sku.p, sku.n))
            return INVALID(e, "%s: 1-64 characters of [A-Za-z0-9_.-]", label);
        for (int k = 0; k < i; k++)
            if (m->items[k].sku.n == sku.n && !memcmp(m->items[k].sku.p, sku.p, sku.n))
                return INVALID(e, "%s: SKU appears more than once in the order", label);
        snprintf(label, sizeof label, "items[%d].quantity", i);
        uint64_t q;
        if (get_u64(j, it, "quantity", label, 1, D11_ITEM_QTY_MAX, true, &q, e)) return -1;
        m->items[i].sku = sku;
        m->items[i].qty = (uint32_t)q;
    }
    return 0;
}

int d11_body_product(d11_json *j, const char *body, size_t n, d11_scratch *s, d11_msg_product *m,
                     d11_gw_err *e)
{
    if (parse(j, body, n, e)) return -1;
    if (get_str(j, 0, "sku", "sku", D11_SKU_BYTES_MAX, true, s, &m->sku, e)) return -1;
    if (!d11_sku_valid(m->sku.p, m->sku.n)) return INVALID(e, "sku: 1-64 characters of [A-Za-z0-9_.-]");
    if (get_str(j, 0, "title", "title", D11_TITLE_BYTES_MAX, true, s, &m->title, e)) return -1;
    if (get_u64(j, 0, "price_cents", "price_cents", 1, (uint64_t)D11_PRICE_CENTS_MAX, true,
                &m->price_cents, e))
        return -1;
    if (get_u64(j, 0, "stock", "stock", 0, (uint64_t)D11_STOCK_MAX, true, &m->stock, e)) return -1;
    /* API.md lists category among the fields; a missing field is 422 (it may be ""). */
    if (get_str(j, 0, "category", "category", D11_CATEGORY_BYTES_MAX, true, s, &m->category, e)) return -1;
    return 0;
}

int d11_body_restock(d11_json *j, const char *body, size_t n, uint64_t *qty, d11_gw_err *e)
{
    if (parse(j, body, n, e)) return -1;
    if (get_u64(j, 0, "quantity", "quantity", 1, (uint64_t)D11_STOCK_MAX, true, qty, e)) return -1;
    return 0;
}

int d11_body_pay(d11_json *j, const char *body, size_t n, d11_scratch *s, d11_str *payment_id,
                 d11_gw_err *e)
{
    if (parse(j, body, n, e)) return -1;
    if (get_str(j, 0, "payment_id", "payment_id", D11_PAYMENT_ID_BYTES_MAX, true, s, payment_id, e))
        return -1;
    if (!d11_printable_valid(payment_id->p, payment_id->n, D11_PAYMENT_ID_BYTES_MAX))
        return INVALID(e, "payment_id: 1-128 printable ASCII characters");
    return 0;
}

int d11_body_empty_or_object(d11_json *j, const char *body, size_t n, d11_gw_err *e)
{
    size_t i = 0;
    while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n')) i++;
    if (i == n) return 0;
    return parse(j, body, n, e);
}
