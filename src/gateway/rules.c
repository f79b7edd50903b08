/*
 * rules.c — rules documents, the shared rules store, GCRA flow buckets (see rules.h).
 * Threads: the store functions take the store mutex (admin path, rare); d11_flow_take
 * and d11_rules_store_gen are lock-free (hot path).
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

int d11_rules_parse(const char *js, size_t n, d11_rules *out, bool *has_version, char *err,
                    size_t errlen)
{
    static __thread d11_json j; /* 5 KB: keep it off small thread stacks */
    memset(out, 0, sizeof *out);
    *has_version = false;
    if (d11_json_parse(&j, js, n) != 0) {
        snprintf(err, errlen, "%s", j.err);
        return D11_JSON_EBAD;
    }
    char name[48];
    int k = 1;
    for (int i = 0; i < j.tok[0].size; i++, k = j.tok[k + 1].next) {
        int v = k + 1;
        if (d11_json_str_eq(&j, k, "version", 7)) {
            if (d11_json_u64(&j, v, 0, (uint64_t)INT64_MAX, &out->version))
                return bad(err, errlen, "%s: must be a non-negative integer", "version");
            *has_version = true;
        } else if (d11_json_str_eq(&j, k, "updated_at", 10)) {
            /* informational; ignored */
        } else if (d11_json_str_eq(&j, k, "flow", 4)) {
            if (j.tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "flow");
            int fk = v + 1;
            for (int f = 0; f < j.tok[v].size; f++, fk = j.tok[fk + 1].next) {
                int r = res_find(&j, fk), fv = fk + 1;
                key_name(&j, fk, name, sizeof name);
                if (r < 0) return bad(err, errlen, "flow.%s: unknown resource", name);
                if (j.tok[fv].type == D11_JT_NULL) continue;
                if (j.tok[fv].type != D11_JT_OBJECT)
                    return bad(err, errlen, "flow.%s: must be an object {\"qps\",\"burst\"}", name);
                int q = fv + 1;
                bool seen_qps = false;
                for (int m = 0; m < j.tok[fv].size; m++, q = j.tok[q + 1].next) {
                    if (d11_json_str_eq(&j, q, "qps", 3)) {
                        if (d11_json_u64(&j, q + 1, 1, D11_FLOW_QPS_MAX, &out->flow[r].qps))
                            return bad(err, errlen, "flow.%s.qps: must be an integer in 1..10000000", name);
                        seen_qps = true;
                    } else if (d11_json_str_eq(&j, q, "burst", 5)) {
                        if (d11_json_u64(&j, q + 1, 1, D11_FLOW_QPS_MAX, &out->flow[r].burst))
                            return bad(err, errlen, "flow.%s.burst: must be an integer in 1..10000000", name);
                    } else {
                        return bad(err, errlen, "flow.%s: unknown field (expected qps, burst)", name);
                    }
                }
                if (!seen_qps) return bad(err, errlen, "flow.%s.qps: required", name);
                if (!out->flow[r].burst) out->flow[r].burst = out->flow[r].qps;
            }
        } else if (d11_json_str_eq(&j, k, "degrade", 7)) {
            if (j.tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "degrade");
            int dk = v + 1;
            for (int f = 0; f < j.tok[v].size; f++, dk = j.tok[dk + 1].next) {
                int r = res_find(&j, dk);
                key_name(&j, dk, name, sizeof name);
                if (r < 0) return bad(err, errlen, "degrade.%s: unknown resource", name);
                if (d11_json_bool(&j, dk + 1, &out->degrade[r]))
                    return bad(err, errlen, "degrade.%s: must be true or false", name);
            }
        } else if (d11_json_str_eq(&j, k, "risk", 4)) {
            if (j.tok[v].type != D11_JT_OBJECT) return bad(err, errlen, "%s: must be an object", "risk");
            int rk = v + 1;
            for (int f = 0; f < j.tok[v].size; f++, rk = j.tok[rk + 1].next) {
                int rv = rk + 1;
                if (d11_json_str_eq(&j, rk, "deny_users", 10)) {
                    if (j.tok[rv].type != D11_JT_ARRAY)
                        return bad(err, errlen, "%s: must be an array of user ids", "risk.deny_users");
                    if (j.tok[rv].size > D11_RISK_DENY_USERS_MAX)
                        return bad(err, errlen, "%s: at most 128 user ids", "risk.deny_users");
                    for (int e = 0; e < j.tok[rv].size; e++)
                        if (d11_json_u64(&j, d11_json_elem(&j, rv, e), 1, (uint64_t)INT64_MAX,
                                         &out->deny[e]))
                            return bad(err, errlen, "%s: user ids are integers in 1..2^63-1", "risk.deny_users");
                    uint32_t nd = (uint32_t)j.tok[rv].size;
                    qsort(out->deny, nd, sizeof out->deny[0], cmp_u64);
                    uint32_t u = 0;
                    for (uint32_t e = 0; e < nd; e++)
                        if (u == 0 || out->deny[u - 1] != out->deny[e]) out->deny[u++] = out->deny[e];
                    out->ndeny = u;
                } else if (d11_json_str_eq(&j, rk, "max_order_quantity", 18)) {
                    if (j.tok[rv].type == D11_JT_NULL) continue;
                    if (d11_json_u64(&j, rv, 0, (uint64_t)D11_ORDER_ITEMS_MAX * D11_ITEM_QTY_MAX,
                                     &out->max_order_qty))
                        return bad(err, errlen, "%s: must be an integer in 0..16000", "risk.max_order_quantity");
                } else {
                    key_name(&j, rk, name, sizeof name);
                    return bad(err, errlen, "risk.%s: unknown field (expected deny_users, max_order_quantity)", name);
                }
            }
        } else {
            key_name(&j, k, name, sizeof name);
            return bad(err, errlen, "%s: unknown field (expected version, flow, degrade, risk)", name);
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
        if (!r->flow[i].qps) continue;
        d11_buf_printf(out, "%s\"%s\":{\"qps\":%llu,\"burst\":%llu}", first ? "" : ",",
                       d11_res_names[i], (unsigned long long)r->flow[i].qps,
                       (unsigned long long)r->flow[i].burst);
        first = false;
    }
    d11_buf_puts(out, "},\"degrade\":{");
    for (int i = 0; i < D11_RES_COUNT; i++)
        d11_buf_printf(out, "%s\"%s\":%s", i ? "," : "", d11_res_names[i],
                       r->degrade[i] ? "true" : "false");
    d11_buf_puts(out, "},\"risk\":{\"deny_users\":[");
    for (uint32_t i = 0; i < r->ndeny; i++)
        d11_buf_printf(out, "%s%llu", i ? "," : "", (unsigned long long)r->deny[i]);
    d11_buf_printf(out, "],\"max_order_quantity\":%llu}}", (unsigned long long)r->max_order_qty);
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

/* ---- flow buckets (GCRA) ---- */

static struct {
    _Atomic int64_t tat_ns;      /* theoretical arrival time of the next request */
    _Atomic int64_t interval_ns; /* 1e9 / qps; 0 = unlimited */
    _Atomic int64_t tau_ns;      /* burst * interval */
} buckets[D11_RES_COUNT];

bool d11_flow_take(int res, int64_t now_ns, int64_t *retry_ns)
{
    D11_ASSERT(res >= 0 && res < D11_RES_COUNT);
    int64_t T = atomic_load_explicit(&buckets[res].interval_ns, memory_order_relaxed);
    if (T == 0) return true;
    int64_t tau = atomic_load_explicit(&buckets[res].tau_ns, memory_order_relaxed);
    int64_t tat = atomic_load_explicit(&buckets[res].tat_ns, memory_order_relaxed);
    for (;;) {
        int64_t next = (tat > now_ns ? tat : now_ns) + T;
        if (next - now_ns > tau) {
            *retry_ns = next - now_ns - tau;
            return false;
        }
        if (atomic_compare_exchange_weak_explicit(&buckets[res].tat_ns, &tat, next,
                                                  memory_order_relaxed, memory_order_relaxed))
            return true;
    }
}

static void buckets_apply(const d11_rules *r)
{
    for (int i = 0; i < D11_RES_COUNT; i++) {
        int64_t T = r->flow[i].qps ? (int64_t)(1000000000ULL / r->flow[i].qps) : 0;
        if (T == 0 && r->flow[i].qps) T = 1;
        int64_t tau = T * (int64_t)r->flow[i].burst;
        if (atomic_load(&buckets[i].interval_ns) != T || atomic_load(&buckets[i].tau_ns) != tau) {
            atomic_store(&buckets[i].interval_ns, 0); /* unlimited while switching */
            atomic_store(&buckets[i].tau_ns, tau);
            atomic_store(&buckets[i].tat_ns, 0);
            atomic_store(&buckets[i].interval_ns, T);
        }
    }
}

/* ---- the store ---- */

static struct {
    pthread_mutex_t mu;
    _Atomic uint64_t gen;
    d11_rules cur;
    d11_rules hist[D11_RULES_HISTORY_MAX]; /* hist[nhist-1] is the most recent previous */
    int       nhist;
    uint64_t  max_version;
    char      path[1100];
    bool      have_stat;
    struct timespec mtime;
    off_t     size;
    ino_t     ino;
    _Atomic int64_t next_check_ms;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void remember_stat(void)
{
    struct stat st;
    if (stat(S.path, &st) == 0) {
        S.have_stat = true;
        S.mtime = st.st_mtim;
        S.size = st.st_size;
        S.ino = st.st_ino;
    } else {
        S.have_stat = false;
    }
}

static int persist(const d11_rules *r)
{
    d11_buf b;
    d11_buf_init(&b, 1024);
    d11_rules_render(r, &b);
    d11_buf_puts(&b, "\n");
    int rc = d11_write_file_atomic(S.path, b.data, b.len, 0644);
    d11_buf_free(&b);
    if (rc == 0) remember_stat();
    return rc;
}

static void push_history(void)
{
    if (S.nhist == D11_RULES_HISTORY_MAX) {
        memmove(&S.hist[0], &S.hist[1], sizeof S.hist[0] * (D11_RULES_HISTORY_MAX - 1));
        S.nhist--;
    }
    S.hist[S.nhist++] = S.cur;
}

static void make_current(const d11_rules *r)
{
    S.cur = *r;
    if (r->version > S.max_version) S.max_version = r->version;
    buckets_apply(r);
    atomic_fetch_add(&S.gen, 1);
}

static int load_file(bool initial)
{
    char *text;
    size_t len;
    int rc = d11_read_file(S.path, &text, &len);
    if (rc) return rc;
    d11_rules r;
    bool hv;
    char err[200];
    rc = d11_rules_parse(text, len, &r, &hv, err, sizeof err);
    free(text);
    remember_stat();
    if (rc) {
        d11_error("rules file %s is invalid (%s); keeping the current rules", S.path, err);
        return D11_ECONFIG;
    }
    if (!hv || r.version == 0) r.version = S.max_version + 1;
    r.updated_ms = d11_wall_ms();
    if (!initial) push_history();
    make_current(&r);
    d11_info("rules version %llu loaded from %s", (unsigned long long)r.version, S.path);
    return 0;
}

void d11_rules_store_init(const char *data_dir)
{
    pthread_mutex_lock(&S.mu);
    memset(&S.cur, 0, sizeof S.cur);
    S.nhist = 0;
    S.max_version = 0;
    S.cur.updated_ms = d11_wall_ms();
    if ((size_t)snprintf(S.path, sizeof S.path, "%s/rules.json", data_dir) >= sizeof S.path)
        d11_fatal("data directory path too long");
    buckets_apply(&S.cur);
    int rc = load_file(true);
    if (rc && rc != -ENOENT && rc != D11_ECONFIG)
        d11_error("cannot read %s: %s", S.path, d11_strerror(rc));
    atomic_fetch_add(&S.gen, 1);
    atomic_store(&S.next_check_ms, d11_mono_ms() + D11_RULES_RELOAD_MS);
    pthread_mutex_unlock(&S.mu);
}

uint64_t d11_rules_store_gen(void) { return atomic_load_explicit(&S.gen, memory_order_acquire); }

void d11_rules_store_get(d11_rules *out, uint64_t *gen)
{
    pthread_mutex_lock(&S.mu);
    *out = S.cur;
    *gen = atomic_load(&S.gen);
    pthread_mutex_unlock(&S.mu);
}

int d11_rules_store_put(const d11_rules *doc, bool has_version, d11_rules *applied)
{
    pthread_mutex_lock(&S.mu);
    if (has_version && doc->version != S.cur.version) {
        pthread_mutex_unlock(&S.mu);
        return -ESTALE;
    }
    d11_rules r = *doc;
    r.version = S.max_version + 1;
    r.updated_ms = d11_wall_ms();
    int rc = persist(&r);
    if (rc == 0) {
        push_history();
        make_current(&r);
        *applied = r;
    }
    pthread_mutex_unlock(&S.mu);
    return rc;
}

int d11_rules_store_rollback(d11_rules *applied)
{
    pthread_mutex_lock(&S.mu);
    if (S.nhist == 0) {
        pthread_mutex_unlock(&S.mu);
        return -ENOENT;
    }
    d11_rules prev = S.hist[S.nhist - 1];
    int rc = persist(&prev);
    if (rc == 0) {
        S.nhist--;
        make_current(&prev);
        *applied = prev;
    }
    pthread_mutex_unlock(&S.mu);
    return rc;
}

int d11_rules_store_history(void)
{
    pthread_mutex_lock(&S.mu);
    int n = S.nhist;
    pthread_mutex_unlock(&S.mu);
    return n;
}

void d11_rules_store_maybe_reload(int64_t now_ms)
{
    int64_t due = atomic_load_explicit(&S.next_check_ms, memory_order_relaxed);
    if (now_ms < due ||
        !atomic_compare_exchange_strong(&S.next_check_ms, &due, now_ms + D11_RULES_RELOAD_MS))
        return;
    struct stat st;
    bool exists = stat(S.path, &st) == 0;
    if (!exists) return; /* a deleted file keeps the rules in force */
    pthread_mutex_lock(&S.mu);
    if (!S.have_stat || st.st_mtim.tv_sec != S.mtime.tv_sec || st.st_mtim.tv_nsec != S.mtime.tv_nsec ||
        st.st_size != S.size || st.st_ino != S.ino)
        (void)load_file(false);
    pthread_mutex_unlock(&S.mu);
}
