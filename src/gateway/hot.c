/*
 * hot.c — hot-parameter limits (Sentinel's "param flow" rules) for orders.create: a GCRA
 * bucket per value of the SKU, the user id and the client IP, with per-value exceptions
 * (the hot SKU gets its own limit). The rules live in the rules document:
 *
 *   "hot": {"sku":  {"qps": 100, "burst": 100, "except": {"SKU-HOT": 5000}},
 *           "user": {"qps": 5}, "ip": {"qps": 50}}
 *
 * Buckets: a direct-mapped table of D11_HOT_SLOTS (tag = 64-bit hash of dimension and
 * value; tat = GCRA theoretical arrival time), allocated with the first rules document that has a
 * hot rule (then kept until the store is released). A
 * value whose slot holds another tag takes the slot over and starts a fresh bucket:
 * collisions only ever loosen a limit. A change of a dimension's rule does not reset the
 * table (the interval is read from the rules at each check). Lock-free; any thread.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"

const char *const d11_hot_dim_names[D11_HOT_DIMS] = {"sku", "user", "ip"};

struct d11_hot_slot {
    _Atomic uint64_t tag;
    _Atomic int64_t  tat_ns;
};

void d11__hot_alloc(d11_rules_store *s, const d11_rules *r)
{
    if (atomic_load(&s->hot)) return;
    bool any = false;
    for (int d = 0; d < D11_HOT_DIMS; d++) any |= r->hot[d].qps != 0;
    if (!any) return;
    struct d11_hot_slot *h = calloc(D11_HOT_SLOTS, sizeof *h);
    if (!h) d11_error("hot-parameter limits: out of memory; they are not enforced");
    atomic_store(&s->hot, h); /* under the store mutex: one writer */
}

void d11__hot_free(d11_rules_store *s)
{
    free(atomic_load(&s->hot));
    atomic_store(&s->hot, NULL);
}

/* FNV-1a over the dimension and the value, never 0 (0 = an empty slot). */
static uint64_t hot_hash(int dim, const char *v, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(dim + 1);
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)v[i]) * 1099511628211ULL;
    h ^= h >> 29;
    return h ? h : 1;
}

bool d11_hot_take(d11_rules_store *s, const d11_rules *r, int dim, const char *v, size_t n, int64_t now_ns,
                  int64_t *retry_ns)
{
    D11_ASSERT(dim >= 0 && dim < D11_HOT_DIMS);
    uint64_t qps = r->hot[dim].qps, burst = r->hot[dim].burst;
    for (uint32_t e = 0; e < r->hot[dim].nexc; e++)
        if (strlen(r->hot[dim].exc[e].value) == n && !memcmp(r->hot[dim].exc[e].value, v, n)) {
            qps = burst = r->hot[dim].exc[e].qps;
            break;
        }
    struct d11_hot_slot *tab = atomic_load_explicit(&s->hot, memory_order_acquire);
    if (!qps || !tab) return true;
    int64_t T = (int64_t)(1000000000ULL / qps);
    if (T == 0) T = 1;
    int64_t tau = T * (int64_t)burst;
    uint64_t h = hot_hash(dim, v, n);
    struct d11_hot_slot *sl = &tab[h % D11_HOT_SLOTS];
    if (atomic_load_explicit(&sl->tag, memory_order_relaxed) != h) { /* take the slot over */
        atomic_store_explicit(&sl->tat_ns, 0, memory_order_relaxed);
        atomic_store_explicit(&sl->tag, h, memory_order_relaxed);
    }
    int64_t tat = atomic_load_explicit(&sl->tat_ns, memory_order_relaxed);
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + T;
        if (next - now_ns > tau) {
            *retry_ns = next - now_ns - tau;
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&sl->tat_ns, &tat, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
}

static int hbad(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return D11_JSON_ERANGE;
}

/* One dimension's rule object at token v into out->hot[d] (a patch keeps what it does not
 * name; "except" merges per value, null removes one). */
static int parse_dim(d11_json *j, int v, d11_rules *out, int d, char *err, size_t errlen)
{
    const char *dn = d11_hot_dim_names[d];
    if (j->tok[v].type != D11_JT_OBJECT)
        return hbad(err, errlen, "hot.%s: must be an object {\"qps\",\"burst\",\"except\"}", dn);
    uint64_t old_qps = out->hot[d].qps, old_burst = out->hot[d].burst;
    int q = v + 1;
    for (int m = 0; m < j->tok[v].size; m++, q = j->tok[q + 1].next) {
        if (d11_json_str_eq(j, q, "qps", 3) || d11_json_str_eq(j, q, "burst", 5)) {
            uint64_t *dst = d11_json_str_eq(j, q, "qps", 3) ? &out->hot[d].qps : &out->hot[d].burst;
            if (d11_json_u64(j, q + 1, 1, D11_FLOW_QPS_MAX, dst))
                return hbad(err, errlen, "hot.%s: qps and burst are integers in 1..10000000", dn);
        } else if (d11_json_str_eq(j, q, "except", 6)) {
            int ev = q + 1, ek = ev + 1;
            if (j->tok[ev].type != D11_JT_OBJECT)
                return hbad(err, errlen, "hot.%s.except: must be an object {\"<value>\": qps}", dn);
            for (int e = 0; e < j->tok[ev].size; e++, ek = j->tok[ek + 1].next) {
                char val[D11_SKU_BYTES_MAX + 1];
                size_t vn = 0;
                if (d11_json_str(j, ek, val, sizeof val - 1, &vn) != 0 || vn == 0)
                    return hbad(err, errlen, "hot.%s.except: a value is 1..64 characters", dn);
                val[vn] = 0;
                uint32_t i = 0;
                while (i < out->hot[d].nexc && strcmp(out->hot[d].exc[i].value, val)) i++;
                if (j->tok[ek + 1].type == D11_JT_NULL) {
                    if (i < out->hot[d].nexc) out->hot[d].exc[i] = out->hot[d].exc[--out->hot[d].nexc];
                    continue;
                }
                if (i == out->hot[d].nexc) {
                    if (i >= D11_HOT_EXCEPT_MAX) return hbad(err, errlen, "hot.%s.except: at most 16 values", dn);
                    out->hot[d].nexc++;
                    memcpy(out->hot[d].exc[i].value, val, vn + 1);
                }
                if (d11_json_u64(j, ek + 1, 1, D11_FLOW_QPS_MAX, &out->hot[d].exc[i].qps))
                    return hbad(err, errlen, "hot.%s.except: each value's qps is an integer in 1..10000000", dn);
            }
        } else {
            return hbad(err, errlen, "hot.%s: unknown field (expected qps, burst, except)", dn);
        }
    }
    if (!out->hot[d].qps) return hbad(err, errlen, "hot.%s.qps: required", dn);
    if (!out->hot[d].burst || (out->hot[d].burst == old_burst && old_burst == old_qps))
        out->hot[d].burst = out->hot[d].qps;
    return 0;
}

int d11__hot_parse(d11_json *j, int v, d11_rules *out, bool patch, char *err, size_t errlen)
{
    if (j->tok[v].type != D11_JT_OBJECT) return hbad(err, errlen, "%s: must be an object", "hot");
    int k = v + 1;
    for (int f = 0; f < j->tok[v].size; f++, k = j->tok[k + 1].next) {
        int d = 0;
        while (d < D11_HOT_DIMS && !d11_json_str_eq(j, k, d11_hot_dim_names[d], strlen(d11_hot_dim_names[d]))) d++;
        if (d == D11_HOT_DIMS) return hbad(err, errlen, "%s: unknown dimension (expected sku, user, ip)", "hot");
        if (!patch || j->tok[k + 1].type == D11_JT_NULL) memset(&out->hot[d], 0, sizeof out->hot[d]);
        if (j->tok[k + 1].type == D11_JT_NULL) continue;
        int rc = parse_dim(j, k + 1, out, d, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

void d11__hot_render(const d11_rules *r, d11_buf *out)
{
    d11_buf_puts(out, "\"hot\":{");
    bool first = true;
    for (int d = 0; d < D11_HOT_DIMS; d++) {
        if (!r->hot[d].qps) continue;
        d11_buf_printf(out, "%s\"%s\":{\"qps\":%llu,\"burst\":%llu", first ? "" : ",", d11_hot_dim_names[d],
                       (unsigned long long)r->hot[d].qps, (unsigned long long)r->hot[d].burst);
        if (r->hot[d].nexc) {
            d11_buf_puts(out, ",\"except\":{");
            for (uint32_t e = 0; e < r->hot[d].nexc; e++) {
                if (e) d11_buf_puts(out, ",");
                d11_buf_json_str(out, r->hot[d].exc[e].value, strlen(r->hot[d].exc[e].value));
                d11_buf_printf(out, ":%llu", (unsigned long long)r->hot[d].exc[e].qps);
            }
            d11_buf_puts(out, "}");
        }
        d11_buf_puts(out, "}");
        first = false;
    }
    d11_buf_puts(out, "}");
}
