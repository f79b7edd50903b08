/*
 * rules.c — rules documents, the shared rules store and its two files (rules.json, the
 * document in force; rules.history, max-ever version + history), GCRA flow buckets (see
 * rules.h for the contract and the crash reasoning).
 * Invariants: cur.version <= max_version, every history version <= max_version, and
 * max_version on disk is never behind any version a client has been shown.
 * Threads: the store functions take the store mutex (admin path, rare; they do blocking
 * file I/O); d11_flow_take and d11_rules_store_gen are lock-free (hot path).
 */
#include "rules.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/json.h"

const char *const d11_res_names[D11_RES_COUNT] = {
    "orders.create", "orders.read", "orders.pay", "products.read", "products.write",
};

static int res_find(const d11_json *j, int key)
{
    for (int r = 0; r < D11_RES_COUNT; r++)
        if (d11_json_str_eq(j, key, d11_res_names[r], strlen(d11_res_names[r]))) return r;
    return -1;
}

static int bad(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return D11_JSON_ERANGE;
}

static void key_name(const d11_json *j, int key, char *out, size_t cap)
{
    size_t n = 0;
    if (d11_json_str(j, key, out, cap - 1, &n) != 0) n = 0;
    out[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == '"') out[i] = '?';
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Find caller rule (res, label) in out; -1 when absent. */
static int caller_find(const d11_rules *out, int r, const char *label)
{
    for (uint32_t i = 0; i < out->ncallers; i++)
        if (out->callers[i].res == (uint32_t)r && !strcmp(out->callers[i].label, label)) return (int)i;
    return -1;
}

/* "callers": {"<token label>": {"qps","burst"} | null, ...} of resource r: merged per label
 * into out (a full parse starts from none; null removes the label's rule). */
static int parse_callers(d11_json *j, int cv, const char *name, d11_rules *out, int r, char *err, size_t errlen)
{
    if (j->tok[cv].type != D11_JT_OBJECT)
        return bad(err, errlen, "flow.%s.callers: must be an object {\"<token label>\": {\"qps\",\"burst\"}}", name);
    int k = cv + 1;
    for (int e = 0; e < j->tok[cv].size; e++, k = j->tok[k + 1].next) {
        char label[D11_TOKEN_LABEL_BYTES_MAX + 1];
        size_t ln = 0;
        if (d11_json_str(j, k, label, sizeof label - 1, &ln) != 0 || ln == 0)
            return bad(err, errlen, "flow.%s.callers: a label is 1..64 characters", name);
        label[ln] = 0;
        int i = caller_find(out, r, label), v = k + 1;
        if (j->tok[v].type == D11_JT_NULL) {
            if (i >= 0) out->callers[i] = out->callers[--out->ncallers];
            continue;
        }
        if (i < 0) {
            if (out->ncallers >= D11_FLOW_CALLERS_MAX)
                return bad(err, errlen, "flow.%s.callers: at most 32 caller rules in all", name);
            i = (int)out->ncallers++;
            memset(&out->callers[i], 0, sizeof out->callers[i]);
            memcpy(out->callers[i].label, label, ln + 1);
            out->callers[i].res = (uint32_t)r;
        }
        if (j->tok[v].type != D11_JT_OBJECT)
            return bad(err, errlen, "flow.%s.callers: each is an object {\"qps\",\"burst\"}", name);
        uint64_t old_qps = out->callers[i].qps, old_burst = out->callers[i].burst;
        int q = v + 1;
        for (int m = 0; m < j->tok[v].size; m++, q = j->tok[q + 1].next) {
            uint64_t *dst = d11_json_str_eq(j, q, "qps", 3)     ? &out->callers[i].qps
                            : d11_json_str_eq(j, q, "burst", 5) ? &out->callers[i].burst
                                                                : NULL;
            if (!dst) return bad(err, errlen, "flow.%s.callers: unknown field (expected qps, burst)", name);
            if (d11_json_u64(j, q + 1, 1, D11_FLOW_QPS_MAX, dst))
                return bad(err, errlen, "flow.%s.callers: qps and burst are integers in 1..10000000", name);
        }
        if (!out->callers[i].qps) return bad(err, errlen, "flow.%s.callers: qps required", name);
        if (!out->callers[i].burst || (out->callers[i].burst == old_burst && old_burst == old_qps))
            out->callers[i].burst = out->callers[i].qps;
    }
    return 0;
}

/* One flow rule object {"qps","burst","concurrency","warm_up_s","cold_factor"} at token fv
 * into *f (fields absent keep their value: a patch starts from the rule in force). */
static int parse_flow_rule(d11_json *j, int fv, const char *name, d11_rules *out, int r, char *err,
                           size_t errlen)
{
    char path[96];
    if (j->tok[fv].type != D11_JT_OBJECT)
        return bad(err, errlen, "flow.%s: must be an object {\"qps\",\"burst\",...}", name);
    uint64_t old_qps = out->flow[r].qps, old_burst = out->flow[r].burst;
    int q = fv + 1;
    for (int m = 0; m < j->tok[fv].size; m++, q = j->tok[q + 1].next) {
        static const struct { const char *k; uint64_t lo, hi; } F[] = {
            {"qps", 1, D11_FLOW_QPS_MAX}, {"burst", 1, D11_FLOW_QPS_MAX}, {"concurrency", 0, D11_FLOW_CONC_MAX},
            {"warm_up_s", 0, D11_FLOW_WARM_S_MAX}, {"cold_factor", 2, 10}, {"max_wait_ms", 0, D11_FLOW_WAIT_MS_MAX},
        };
        uint64_t *dst[] = {&out->flow[r].qps, &out->flow[r].burst, &out->flow[r].concurrency,
                           &out->flow[r].warm_up_s, &out->flow[r].cold_factor, &out->flow[r].max_wait_ms};
        if (d11_json_str_eq(j, q, "callers", 7)) {
            int rc = parse_callers(j, q + 1, name, out, r, err, errlen);
            if (rc) return rc;
            continue;
        }
        int crc = d11__cflow_rule_field(j, q, name, out, r, err, errlen); /* cluster, fallback_qps */
        if (crc < 0) return crc;
        if (crc) continue;
        size_t f = 0;
        while (f < sizeof F / sizeof F[0] && !d11_json_str_eq(j, q, F[f].k, strlen(F[f].k))) f++;
        if (f == sizeof F / sizeof F[0])
            return bad(err, errlen, "flow.%s: unknown field (expected qps, burst, concurrency, warm_up_s, "
                                    "cold_factor, max_wait_ms, callers, cluster, fallback_qps)", name);
        snprintf(path, sizeof path, "flow.%s.%s", name, F[f].k);
        if (d11_json_u64(j, q + 1, F[f].lo, F[f].hi, dst[f])) {
            snprintf(err, errlen, "%s: must be an integer in %llu..%llu", path, (unsigned long long)F[f].lo,
                     (unsigned long long)F[f].hi);
            return D11_JSON_ERANGE;
        }
    }
    bool has_callers = false;
    for (uint32_t i = 0; i < out->ncallers; i++) has_callers |= out->callers[i].res == (uint32_t)r;
    if (!out->flow[r].qps && !out->flow[r].concurrency && !has_callers)
        return bad(err, errlen, "flow.%s.qps: required (or concurrency, or callers)", name);
    /* burst defaults to qps; a patch of qps alone keeps an explicit burst */
    if (!out->flow[r].burst || (out->flow[r].burst == old_burst && old_burst == old_qps))
        out->flow[r].burst = out->flow[r].qps;
    if (out->flow[r].warm_up_s && !out->flow[r].cold_factor) out->flow[r].cold_factor = 3;
    if ((out->flow[r].warm_up_s || out->flow[r].max_wait_ms) && !out->flow[r].qps)
        return bad(err, errlen, "flow.%s: warm_up_s and max_wait_ms need qps", name);
    return d11__cflow_rule_check(out, r, name, err, errlen);
}

static int parse_into(d11_json *j, const char *js, size_t n, d11_rules *out, bool *has_version,
                      bool patch, char *err, size_t errlen);

/*
 * The document as it will be rendered (rules.json, rules.history, GET) must parse again
 * within D11_JSON_TOKENS_MAX: a patch can merge sections (risk models, velocity rules, a
 * long deny list) that each fit into one that does not, and a rules.json that cannot be
 * read back would be ignored at the next start. j's tokens are no longer needed here.
 */
static int fits(d11_json *j, const d11_rules *out, char *err, size_t errlen)
{
    d11_buf b;
    d11_buf_init(&b, 2048);
    d11_rules_render(out, &b);
    int rc = d11_json_parse(j, b.data, b.len);
    d11_buf_free(&b);
    if (rc == 0) return 0;
    snprintf(err, errlen, "the rules document would be too large once merged (over %d JSON tokens): "
                          "remove something first", D11_JSON_TOKENS_MAX);
    return D11_JSON_ERANGE;
}

int d11_rules_parse(d11_json *j, const char *js, size_t n, d11_rules *out, bool *has_version,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int rc = parse_into(j, js, n, out, has_version, false, err, errlen);
    return rc ? rc : fits(j, out, err, errlen);
}

int d11_rules_parse_patch(d11_json *j, const char *js, size_t n, const d11_rules *base, d11_rules *out,
                          bool *has_version, char *err, size_t errlen)
{
    *out = *base;
    out->version = 0;
    int rc = parse_into(j, js, n, out, has_version, true, err, errlen);
    return rc ? rc : fits(j, out, err, errlen);
}

static int parse_into(d11_json *j, const char *js, size_t n, d11_rules *out, bool *has_version,
                      bool patch, char *err, size_t errlen)
{
    *has_version = false;
    if (d11_json_parse(j, js, n) != 0) {
        snprintf(err, errlen, "%s", j->err);
        return D11_JSON_EBAD;
    }
    char name[48];
    int k = 1;
    for (int i = 0; i < j->tok[0].size; i++, k = j->tok[k + 1].next) {
        int v = k + 1;
        if (d11_json_str_eq(j, k, "version", 7)) {
            if (d11_json_u64(j, v, 0, (uint64_t)INT64_MAX, &out->version))
                return bad(err, errlen, "%s: must be a non-negative integer", "version");
            *has_version = true;
        } else if (d11_json_str_eq(j, k, "updated_at", 10)) {
            /* informational; ignored */
        } else if (d11_json_str_eq(j, k, "flow", 4)) {
            if (j->tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "flow");
            int fk = v + 1;
            for (int f = 0; f < j->tok[v].size; f++, fk = j->tok[fk + 1].next) {
                int r = res_find(j, fk), fv = fk + 1;
                key_name(j, fk, name, sizeof name);
                if (r < 0) return bad(err, errlen, "flow.%s: unknown resource", name);
                memset(&out->flow[r], 0, patch && j->tok[fv].type != D11_JT_NULL ? 0 : sizeof out->flow[r]);
                if (j->tok[fv].type == D11_JT_NULL) { /* no rule (a patch: remove it, callers too) */
                    for (uint32_t c = 0; c < out->ncallers;)
                        if (out->callers[c].res == (uint32_t)r) out->callers[c] = out->callers[--out->ncallers];
                        else c++;
                    continue;
                }
                int rc = parse_flow_rule(j, fv, name, out, r, err, errlen);
                if (rc) return rc;
            }
        } else if (d11_json_str_eq(j, k, "degrade_schedule", 16)) {
            int rc = d11__sched_parse(j, v, out, err, errlen);
            if (rc) return rc;
        } else if (d11_json_str_eq(j, k, "hot", 3)) {
            int rc = d11__hot_parse(j, v, out, patch, err, errlen);
            if (rc) return rc;
        } else if (d11_json_str_eq(j, k, "degrade", 7)) {
            if (j->tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "degrade");
            int dk = v + 1;
            for (int f = 0; f < j->tok[v].size; f++, dk = j->tok[dk + 1].next) {
                int r = res_find(j, dk);
                key_name(j, dk, name, sizeof name);
                if (r < 0) return bad(err, errlen, "degrade.%s: unknown resource", name);
                if (d11_json_bool(j, dk + 1, &out->degrade[r]))
                    return bad(err, errlen, "degrade.%s: must be true or false", name);
            }
        } else if (d11_json_str_eq(j, k, "risk", 4)) {
            if (j->tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "risk");
            int rk = v + 1;
            for (int f = 0; f < j->tok[v].size; f++, rk = j->tok[rk + 1].next) {
                int rv = rk + 1;
                if (d11_json_str_eq(j, rk, "deny_users", 10)) {
                    if (j->tok[rv].type != D11_JT_ARRAY)
                        return bad(err, errlen, "%s: must be an array of user ids", "risk.deny_users");
                    if (j->tok[rv].size > D11_RISK_DENY_USERS_MAX)
                        return bad(err, errlen, "%s: at most 128 user ids", "risk.deny_users");
                    for (int e = 0; e < j->tok[rv].size; e++)
                        if (d11_json_u64(j, d11_json_elem(j, rv, e), 1, (uint64_t)INT64_MAX,
                                         &out->deny[e]))
                            return bad(err, errlen, "%s: user ids are integers in 1..2^63-1", "risk.deny_users");
                    uint32_t nd = (uint32_t)j->tok[rv].size;
                    qsort(out->deny, nd, sizeof out->deny[0], cmp_u64);
                    uint32_t u = 0;
                    for (uint32_t e = 0; e < nd; e++)
                        if (u == 0 || out->deny[u - 1] != out->deny[e]) out->deny[u++] = out->deny[e];
                    out->ndeny = u;
                } else if (d11_json_str_eq(j, rk, "max_order_quantity", 18)) {
                    if (j->tok[rv].type == D11_JT_NULL) {
                        out->max_order_qty = 0;
                        continue;
                    }
                    if (d11_json_u64(j, rv, 0, (uint64_t)D11_ORDER_ITEMS_MAX * D11_ITEM_QTY_MAX,
                                     &out->max_order_qty))
                        return bad(err, errlen, "%s: must be an integer in 0..16000", "risk.max_order_quantity");
                } else {
                    int rc = d11__risk_parse_field(j, rk, &out->risk, patch, err, errlen);
                    if (rc == 1) {
                        key_name(j, rk, name, sizeof name);
                        return bad(err, errlen, "risk.%s: unknown field (expected deny_users, max_order_quantity, "
                                                "mode, windows_s, velocity, model, model_b, log_sample_pct)", name);
                    }
                    if (rc) return rc;
                }
            }
            int rc = d11__risk_validate(&out->risk, err, errlen);
            if (rc) return rc;
        } else {
            key_name(j, k, name, sizeof name);
            return bad(err, errlen, "%s: unknown field (expected version, flow, hot, degrade, degrade_schedule, risk)", name);
        }
    }
    return 0;
}

void d11_rules_render(const d11_rules *r, d11_buf *out)
{
    char ts[25];
    d11_fmt_iso8601(r->updated_ms, ts);
    d11_buf_printf(out, "{\"version\":%llu,\"updated_at\":\"%s\",\"flow\":{",
                   (unsigned long long)r->version, ts);
    bool first = true;
    for (int i = 0; i < D11_RES_COUNT; i++) {
        bool has_callers = false;
        for (uint32_t k = 0; k < r->ncallers; k++) has_callers |= r->callers[k].res == (uint32_t)i;
        if (!r->flow[i].qps && !r->flow[i].concurrency && !has_callers) continue;
        d11_buf_printf(out, "%s\"%s\":{", first ? "" : ",", d11_res_names[i]);
        const char *sep = "";
        if (r->flow[i].qps) {
            d11_buf_printf(out, "\"qps\":%llu,\"burst\":%llu", (unsigned long long)r->flow[i].qps,
                           (unsigned long long)r->flow[i].burst);
            sep = ",";
        }
        if (r->flow[i].concurrency) {
            d11_buf_printf(out, "%s\"concurrency\":%llu", sep, (unsigned long long)r->flow[i].concurrency);
            sep = ",";
        }
        if (r->flow[i].warm_up_s) {
            d11_buf_printf(out, "%s\"warm_up_s\":%llu,\"cold_factor\":%llu", sep,
                           (unsigned long long)r->flow[i].warm_up_s, (unsigned long long)r->flow[i].cold_factor);
            sep = ",";
        }
        if (r->flow[i].max_wait_ms) {
            d11_buf_printf(out, "%s\"max_wait_ms\":%llu", sep, (unsigned long long)r->flow[i].max_wait_ms);
            sep = ",";
        }
        if (r->flow[i].cluster) {
            d11_buf_printf(out, "%s\"cluster\":true", sep);
            if (r->flow[i].fallback_qps)
                d11_buf_printf(out, ",\"fallback_qps\":%llu", (unsigned long long)r->flow[i].fallback_qps);
            sep = ",";
        }
        if (has_callers) {
            d11_buf_printf(out, "%s\"callers\":{", sep);
            bool f1 = true;
            for (uint32_t k = 0; k < r->ncallers; k++) {
                if (r->callers[k].res != (uint32_t)i) continue;
                d11_buf_printf(out, "%s", f1 ? "" : ",");
                d11_buf_json_str(out, r->callers[k].label, strlen(r->callers[k].label));
                d11_buf_printf(out, ":{\"qps\":%llu,\"burst\":%llu}", (unsigned long long)r->callers[k].qps,
                               (unsigned long long)r->callers[k].burst);
                f1 = false;
            }
            d11_buf_puts(out, "}");
        }
        d11_buf_puts(out, "}");
        first = false;
    }
    d11_buf_puts(out, "},");
    d11__hot_render(r, out);
    d11_buf_puts(out, ",\"degrade\":{");
    for (int i = 0; i < D11_RES_COUNT; i++)
        d11_buf_printf(out, "%s\"%s\":%s", i ? "," : "", d11_res_names[i],
                       r->degrade[i] ? "true" : "false");
    d11_buf_puts(out, "},");
    d11__sched_render(r, out);
    d11_buf_puts(out, ",\"risk\":{\"deny_users\":[");
    for (uint32_t i = 0; i < r->ndeny; i++)
        d11_buf_printf(out, "%s%llu", i ? "," : "", (unsigned long long)r->deny[i]);
    d11_buf_printf(out, "],\"max_order_quantity\":%llu", (unsigned long long)r->max_order_qty);
    d11__risk_render(&r->risk, out);
    d11_buf_puts(out, "}}");
}

bool d11_rules_denied(const d11_rules *r, uint64_t user_id)
{
    uint32_t lo = 0, hi = r->ndeny;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->deny[mid] == user_id) return true;
        if (r->deny[mid] < user_id) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* ---- the store: files ---- */

#define STATE_MAGIC "d11 rules history 1"

/* Same rules (everything but version and updated_at)? */
static bool same_content(const d11_rules *a, const d11_rules *b)
{
    if (memcmp(a->flow, b->flow, sizeof a->flow) != 0 || a->ncallers != b->ncallers) return false;
    if (a->nsched != b->nsched || memcmp(a->sched, b->sched, sizeof a->sched[0] * a->nsched) != 0) return false;
    for (int d = 0; d < D11_HOT_DIMS; d++) {
        if (a->hot[d].qps != b->hot[d].qps || a->hot[d].burst != b->hot[d].burst || a->hot[d].nexc != b->hot[d].nexc)
            return false;
        for (uint32_t e = 0; e < a->hot[d].nexc; e++)
            if (a->hot[d].exc[e].qps != b->hot[d].exc[e].qps || strcmp(a->hot[d].exc[e].value, b->hot[d].exc[e].value))
                return false;
    }
    for (uint32_t i = 0; i < a->ncallers; i++)
        if (a->callers[i].res != b->callers[i].res || a->callers[i].qps != b->callers[i].qps ||
            a->callers[i].burst != b->callers[i].burst || strcmp(a->callers[i].label, b->callers[i].label))
            return false;
    for (int i = 0; i < D11_RES_COUNT; i++)
        if (a->degrade[i] != b->degrade[i]) return false;
    return a->ndeny == b->ndeny && a->max_order_qty == b->max_order_qty &&
           memcmp(a->deny, b->deny, sizeof a->deny[0] * a->ndeny) == 0 && memcmp(&a->risk, &b->risk, sizeof a->risk) == 0;
}

static void remember_stat(d11_rules_store *s)
{
    struct stat st;
    if (stat(s->path, &st) == 0) {
        s->have_stat = true;
        s->mtime = st.st_mtim;
        s->size = st.st_size;
        s->ino = st.st_ino;
    } else {
        s->have_stat = false;
    }
}

static int persist_doc(d11_rules_store *s, const d11_rules *r)
{
    d11_buf b;
    d11_buf_init(&b, 1024);
    d11_rules_render(r, &b);
    d11_buf_puts(&b, "\n");
    int rc = d11_write_file_atomic(s->path, b.data, b.len, 0644);
    d11_buf_free(&b);
    if (rc == 0) remember_stat(s);
    return rc;
}

static void state_line(d11_buf *b, const char *what, const d11_rules *r)
{
    d11_buf_printf(b, "%s %lld ", what, (long long)r->updated_ms);
    d11_rules_render(r, b);
    d11_buf_puts(b, "\n");
}

/*
 * Write rules.history: max_version, cur, then the history oldest first — s->hist with
 * `pushed` (when not NULL) added on top, as d11_rules_store_put is about to do.
 */
static int persist_state(d11_rules_store *s, uint64_t max_version, const d11_rules *cur,
                         const d11_rules *pushed)
{
    D11_ASSERT(cur->version <= max_version);
    d11_buf b;
    d11_buf_init(&b, 4096);
    d11_buf_printf(&b, "%s\nmax_version %llu\n", STATE_MAGIC, (unsigned long long)max_version);
    state_line(&b, "current", cur);
    int from = pushed && s->nhist == D11_RULES_HISTORY_MAX ? 1 : 0; /* the oldest falls off */
    for (int i = from; i < s->nhist; i++) state_line(&b, "history", &s->hist[i]);
    if (pushed) state_line(&b, "history", pushed);
    int rc = d11_write_file_atomic(s->state_path, b.data, b.len, 0600);
    d11_buf_free(&b);
    if (rc) d11_error("cannot write %s: %s", s->state_path, d11_strerror(rc));
    return rc;
}

/* Parse one "<what> <updated_ms> <document>" line of rules.history into out. */
static int state_doc(d11_rules_store *s, const char *line, size_t n, d11_rules *out)
{
    const char *sp = memchr(line, ' ', n);
    if (!sp) return D11_ECONFIG;
    uint64_t ms;
    if (d11_parse_u64(line, (size_t)(sp - line), (uint64_t)INT64_MAX, &ms) < 0) return D11_ECONFIG;
    bool hv;
    char err[200];
    size_t off = (size_t)(sp - line) + 1;
    if (d11_rules_parse(&s->json, line + off, n - off, out, &hv, err, sizeof err) != 0 || !hv)
        return D11_ECONFIG;
    out->updated_ms = (int64_t)ms;
    return 0;
}

/* Load rules.history into s (all or nothing). 0, -ENOENT, or D11_ECONFIG (logged). */
static int load_state(d11_rules_store *s)
{
    char *text;
    size_t len;
    int rc = d11_read_file(s->state_path, &text, &len);
    if (rc) return rc;
    static const size_t magic_n = sizeof STATE_MAGIC - 1;
    uint64_t maxv = 0;
    bool have_max = false, have_cur = false;
    d11_rules cur;
    int nhist = 0;
    rc = 0;
    size_t i = 0, lineno = 0;
    while (i < len && rc == 0) {
        const char *line = text + i;
        const char *nl = memchr(line, '\n', len - i);
        size_t n = nl ? (size_t)(nl - line) : len - i;
        i += n + (nl ? 1 : 0);
        lineno++;
        if (lineno == 1) {
            if (n != magic_n || memcmp(line, STATE_MAGIC, magic_n) != 0) rc = D11_ECONFIG;
        } else if (n > 12 && memcmp(line, "max_version ", 12) == 0) {
            have_max = d11_parse_u64(line + 12, n - 12, (uint64_t)INT64_MAX, &maxv) == 0;
            if (!have_max) rc = D11_ECONFIG;
        } else if (n > 8 && memcmp(line, "current ", 8) == 0 && !have_cur) {
            rc = state_doc(s, line + 8, n - 8, &cur);
            have_cur = rc == 0;
        } else if (n > 8 && memcmp(line, "history ", 8) == 0 && nhist < D11_RULES_HISTORY_MAX) {
            rc = state_doc(s, line + 8, n - 8, &s->hist[nhist]);
            if (rc == 0) nhist++;
        } else {
            rc = D11_ECONFIG;
        }
    }
    free(text);
    if (rc == 0 && (!have_max || !have_cur || cur.version > maxv)) rc = D11_ECONFIG;
    for (int k = 0; rc == 0 && k < nhist; k++)
        if (s->hist[k].version > maxv) rc = D11_ECONFIG;
    if (rc) {
        d11_error("rules history %s is invalid (line %zu); starting without it", s->state_path,
                  lineno);
        return rc;
    }
    s->cur = cur;
    s->nhist = nhist;
    s->max_version = maxv;
    return 0;
}

static void push_history(d11_rules_store *s)
{
    if (s->nhist == D11_RULES_HISTORY_MAX) {
        memmove(&s->hist[0], &s->hist[1], sizeof s->hist[0] * (D11_RULES_HISTORY_MAX - 1));
        s->nhist--;
    }
    s->hist[s->nhist++] = s->cur;
}

static void make_current(d11_rules_store *s, const d11_rules *r)
{
    s->cur = *r;
    if (r->version > s->max_version) s->max_version = r->version;
    d11__hot_alloc(s, r);
    d11__flow_buckets_apply(s, r);
    atomic_fetch_add(&s->gen, 1);
}

/*
 * Read rules.json and reconcile it with the store (mu held):
 *  - the document in force (same rules; same version or none given): nothing to do;
 *  - the top of the history with its version: a rollback whose rules.history write did
 *    not happen (crash) or a PUT whose rules.json write did not: pop it;
 *  - anything else is a new document (an operator's edit): max-ever + 1.
 * have_history: rules.history was loaded (else a version in the file is taken as is, so
 * that a data directory from before rules.history keeps its numbers).
 */
static int load_file(d11_rules_store *s, bool initial, bool have_history)
{
    char *text;
    size_t len;
    int rc = d11_read_file(s->path, &text, &len);
    if (rc) return rc;
    d11_rules r;
    bool hv;
    char err[200];
    rc = d11_rules_parse(&s->json, text, len, &r, &hv, err, sizeof err);
    free(text);
    remember_stat(s);
    if (rc) {
        d11_error("rules file %s is invalid (%s); keeping the current rules", s->path, err);
        return D11_ECONFIG;
    }
    if (same_content(&r, &s->cur) && (!hv || r.version == s->cur.version)) return 0;
    if (hv && s->nhist > 0 && r.version == s->hist[s->nhist - 1].version &&
        same_content(&r, &s->hist[s->nhist - 1])) {
        r = s->hist[--s->nhist];
    } else {
        if (!(initial && !have_history && hv && r.version > s->max_version))
            r.version = s->max_version + 1;
        r.updated_ms = d11_wall_ms();
        if (!initial || have_history) push_history(s);
    }
    make_current(s, &r);
    (void)persist_state(s, s->max_version, &s->cur, NULL);
    d11_info("rules version %llu loaded from %s", (unsigned long long)r.version, s->path);
    return 0;
}

/* ---- the store: API ---- */

int d11_rules_store_init(d11_rules_store *s, const char *data_dir)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    if ((size_t)snprintf(s->path, sizeof s->path, "%s/rules.json", data_dir) >= sizeof s->path ||
        (size_t)snprintf(s->state_path, sizeof s->state_path, "%s/rules.history", data_dir) >=
            sizeof s->state_path)
        return -ENAMETOOLONG;
    s->cur.updated_ms = d11_wall_ms();
    bool have_history = load_state(s) == 0;
    int rc = load_file(s, true, have_history);
    if (rc && rc != -ENOENT && rc != D11_ECONFIG)
        d11_error("cannot read %s: %s", s->path, d11_strerror(rc));
    if (!have_history) (void)persist_state(s, s->max_version, &s->cur, NULL); /* start one */
    d11__hot_alloc(s, &s->cur);
    d11__flow_buckets_apply(s, &s->cur);
    atomic_fetch_add(&s->gen, 1);
    atomic_store(&s->next_check_ms, d11_mono_ms() + D11_RULES_RELOAD_MS);
    return 0;
}

void d11_rules_store_release(d11_rules_store *s)
{
    d11__hot_free(s);
    pthread_mutex_destroy(&s->mu);
}

uint64_t d11_rules_store_gen(d11_rules_store *s)
{
    return atomic_load_explicit(&s->gen, memory_order_acquire);
}

void d11_rules_store_get(d11_rules_store *s, d11_rules *out, uint64_t *gen)
{
    pthread_mutex_lock(&s->mu);
    *out = s->cur;
    *gen = atomic_load(&s->gen);
    pthread_mutex_unlock(&s->mu);
}

int d11_rules_store_put(d11_rules_store *s, const d11_rules *doc, bool has_version,
                        d11_rules *applied)
{
    pthread_mutex_lock(&s->mu);
    if (has_version && doc->version != s->cur.version) {
        *applied = s->cur;
        pthread_mutex_unlock(&s->mu);
        return -ESTALE;
    }
    d11_rules r = *doc;
    r.version = ++s->max_version; /* spent even if persisting fails: never reused */
    r.updated_ms = d11_wall_ms();
    int rc = persist_state(s, s->max_version, &r, &s->cur);
    if (rc == 0) rc = persist_doc(s, &r);
    if (rc == 0) {
        push_history(s);
        make_current(s, &r);
        *applied = r;
    }
    D11_ASSERT(s->cur.version <= s->max_version);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int d11_rules_store_rollback(d11_rules_store *s, d11_rules *applied)
{
    pthread_mutex_lock(&s->mu);
    if (s->nhist == 0) {
        pthread_mutex_unlock(&s->mu);
        return -ENOENT;
    }
    d11_rules prev = s->hist[s->nhist - 1];
    int rc = persist_doc(s, &prev);
    if (rc == 0) {
        s->nhist--;
        make_current(s, &prev);
        *applied = prev;
        /* a failure here is repaired at the next start: rules.json = top of the history */
        (void)persist_state(s, s->max_version, &s->cur, NULL);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

uint64_t d11_rules_store_version(d11_rules_store *s)
{
    pthread_mutex_lock(&s->mu);
    uint64_t v = s->cur.version;
    pthread_mutex_unlock(&s->mu);
    return v;
}

int d11_rules_store_history(d11_rules_store *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nhist;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void d11_rules_store_maybe_reload(d11_rules_store *s, int64_t now_ms)
{
    int64_t due = atomic_load_explicit(&s->next_check_ms, memory_order_relaxed);
    if (now_ms < due ||
        !atomic_compare_exchange_strong(&s->next_check_ms, &due, now_ms + D11_RULES_RELOAD_MS))
        return;
    struct stat st;
    if (stat(s->path, &st) == -1) return; /* a deleted file keeps the rules in force */
    pthread_mutex_lock(&s->mu);
    if (!s->have_stat || st.st_mtim.tv_sec != s->mtime.tv_sec ||
        st.st_mtim.tv_nsec != s->mtime.tv_nsec || st.st_size != s->size || st.st_ino != s->ino)
        (void)load_file(s, false, true);
    pthread_mutex_unlock(&s->mu);
}
