/*
 * degrade.c — scoped and scheduled degrade switches (see rules.h). In the rules document:
 *
 *   "degrade_schedule": [
 *     {"resource": "orders.read"},                                     always, whole resource
 *     {"resource": "orders.create", "sku": "SKU-7"},                   one SKU
 *     {"resource": "products.read", "from_ms": 1794355200000, "until_ms": 1794355500000}]
 *
 * from_ms / until_ms are wall-clock milliseconds (absent or 0 = unbounded): the switch is
 * on from from_ms and off again at until_ms with no one calling (checked per request).
 * SKU-scoped entries apply where the request names the SKU: orders.create (any item),
 * products.read and products.write (the path's SKU). Pure functions; any thread.
 */
#include <stdio.h>
#include <string.h>

#include "bodies.h"
#include "rules.h"

static bool active(const d11_rules *r, uint32_t i, int64_t now_ms)
{
    return (!r->sched[i].from_ms || now_ms >= r->sched[i].from_ms) &&
           (!r->sched[i].until_ms || now_ms < r->sched[i].until_ms);
}

bool d11_rules_degraded(const d11_rules *r, int res, int64_t now_ms)
{
    if (r->degrade[res]) return true;
    for (uint32_t i = 0; i < r->nsched; i++)
        if (r->sched[i].res == (uint32_t)res && !r->sched[i].sku[0] && active(r, i, now_ms)) return true;
    return false;
}

bool d11_rules_degraded_sku(const d11_rules *r, int res, const char *sku, size_t n, int64_t now_ms)
{
    for (uint32_t i = 0; i < r->nsched; i++)
        if (r->sched[i].res == (uint32_t)res && r->sched[i].sku[0] && strlen(r->sched[i].sku) == n &&
            !memcmp(r->sched[i].sku, sku, n) && active(r, i, now_ms))
            return true;
    return false;
}

static int sbad(char *err, size_t errlen, const char *msg, int i)
{
    snprintf(err, errlen, "degrade_schedule[%d]: %s", i, msg);
    return D11_JSON_ERANGE;
}

int d11__sched_parse(d11_json *j, int v, d11_rules *out, char *err, size_t errlen)
{
    if (j->tok[v].type != D11_JT_ARRAY) {
        snprintf(err, errlen, "degrade_schedule: must be an array");
        return D11_JSON_ERANGE;
    }
    if (j->tok[v].size > D11_DEGRADE_SCHED_MAX) {
        snprintf(err, errlen, "degrade_schedule: at most %d entries", D11_DEGRADE_SCHED_MAX);
        return D11_JSON_ERANGE;
    }
    out->nsched = 0;
    memset(out->sched, 0, sizeof out->sched);
    for (int e = 0; e < j->tok[v].size; e++) {
        int o = d11_json_elem(j, v, e);
        if (j->tok[o].type != D11_JT_OBJECT) return sbad(err, errlen, "must be an object", e);
        bool have_res = false;
        int k = o + 1;
        for (int m = 0; m < j->tok[o].size; m++, k = j->tok[k + 1].next) {
            if (d11_json_str_eq(j, k, "resource", 8)) {
                int rr = -1;
                for (int x = 0; x < D11_RES_COUNT && rr < 0; x++)
                    if (d11_json_str_eq(j, k + 1, d11_res_names[x], strlen(d11_res_names[x]))) rr = x;
                if (rr < 0) return sbad(err, errlen, "resource: unknown resource", e);
                out->sched[e].res = (uint32_t)rr;
                have_res = true;
            } else if (d11_json_str_eq(j, k, "sku", 3)) {
                size_t n = 0;
                if (d11_json_str(j, k + 1, out->sched[e].sku, D11_SKU_BYTES_MAX, &n) != 0 || n == 0 ||
                    !d11_sku_valid(out->sched[e].sku, n))
                    return sbad(err, errlen, "sku: not a valid SKU", e);
                out->sched[e].sku[n] = 0;
            } else if (d11_json_str_eq(j, k, "from_ms", 7) || d11_json_str_eq(j, k, "until_ms", 8)) {
                uint64_t ms;
                if (d11_json_u64(j, k + 1, 0, (uint64_t)INT64_MAX, &ms))
                    return sbad(err, errlen, "from_ms / until_ms: wall-clock milliseconds", e);
                if (d11_json_str_eq(j, k, "from_ms", 7)) out->sched[e].from_ms = (int64_t)ms;
                else out->sched[e].until_ms = (int64_t)ms;
            } else {
                return sbad(err, errlen, "unknown field (expected resource, sku, from_ms, until_ms)", e);
            }
        }
        if (!have_res) return sbad(err, errlen, "resource: required", e);
        if (out->sched[e].until_ms && out->sched[e].until_ms <= out->sched[e].from_ms)
            return sbad(err, errlen, "until_ms must be after from_ms", e);
        out->nsched++;
    }
    return 0;
}

void d11__sched_render(const d11_rules *r, d11_buf *out)
{
    d11_buf_puts(out, "\"degrade_schedule\":[");
    for (uint32_t i = 0; i < r->nsched; i++) {
        d11_buf_printf(out, "%s{\"resource\":\"%s\"", i ? "," : "", d11_res_names[r->sched[i].res]);
        if (r->sched[i].sku[0]) {
            d11_buf_puts(out, ",\"sku\":");
            d11_buf_json_str(out, r->sched[i].sku, strlen(r->sched[i].sku));
        }
        if (r->sched[i].from_ms) d11_buf_printf(out, ",\"from_ms\":%lld", (long long)r->sched[i].from_ms);
        if (r->sched[i].until_ms) d11_buf_printf(out, ",\"until_ms\":%lld", (long long)r->sched[i].until_ms);
        d11_buf_puts(out, "}");
    }
    d11_buf_puts(out, "]");
}
