/*
 * rules.h — the gateway's dynamic rules: flow rules, degrade switches, risk rules.
 *
 * One versioned JSON document (GET/PUT /admin/rules):
 *
 *   {"version": 3, "updated_at": "2026-11-11T00:00:00.000Z",
 *    "flow":    {"orders.create": {"qps": 5000, "burst": 10000}, ...},
 *    "degrade": {"orders.read": true, ...},
 *    "risk":    {"deny_users": [13, 42], "max_order_quantity": 100}}
 *
 * Resources: orders.create, orders.read, orders.pay, products.read, products.write.
 * flow: per resource a rate limit, qps 1..D11_FLOW_QPS_MAX with burst 1..D11_FLOW_QPS_MAX
 * (default = qps); an absent resource is not limited. degrade: a switched-on resource
 * answers 503 degraded. risk: deny_users (at most D11_RISK_DENY_USERS_MAX ids) and
 * max_order_quantity (total units per order; 0 or absent = off) answer 403 risk_rejected.
 * risk also holds mode, windows_s, velocity, model, model_b, log_sample_pct: risk control
 * with velocity rules and a scoring model (risk.h; parsed by risk_model.c, merged like
 * the rest).
 * Every section is optional. Unknown keys are rejected (422): a typo in an operator's
 * document must not silently turn a rule off. "updated_at" is accepted and ignored so a
 * document read with GET can be PUT back. "version", when present in a PUT, must equal
 * the current version (compare-and-set, 409 version_conflict otherwise).
 *
 * The store (struct d11_rules_store, one per process, owned by whoever runs the gateway)
 * is guarded by a mutex: the current document, the history (the previous
 * D11_RULES_HISTORY_MAX versions, for rollback), the highest version ever issued, and the
 * two files. Threads read a private copy: they compare d11_rules_store_gen() (one
 * acquire load) with the generation of their copy and re-copy when it moved. Version
 * numbers only grow, across restarts too: a new document gets max-ever + 1; a rollback
 * restores the previous document with its own version number.
 *
 * Files (both written with d11_write_file_atomic):
 *   DATA/rules.json     the document in force, as GET shows it; operators may edit it
 *                       (picked up within D11_RULES_RELOAD_MS; an edit becomes a new
 *                       version, max-ever + 1).
 *   DATA/rules.history  the store's memory: max-ever version, the current document and
 *                       the history, one rendered document per line. Without it a
 *                       restart would reuse version numbers and lose the history.
 * A PUT writes rules.history first, then rules.json; a rollback rules.json first, then
 * rules.history. A crash between the two leaves rules.json equal to the top of the
 * history, which loading recognises (the PUT did not happen / the rollback did), so after
 * any crash the numbers still only grow and nothing acknowledged is lost.
 *
 * Flow buckets are shared by all threads and lock-free: GCRA (the generic cell rate
 * algorithm, a token bucket expressed as one "theoretical arrival time" per resource,
 * advanced with compare-and-swap). A request is admitted when the bucket would not hold
 * more than `burst` requests' worth of debt; otherwise the caller learns how long to wait
 * (Retry-After). Precise to the nanosecond: no window edges, so no 2x bursts at edges.
 */
#ifndef D11_GW_RULES_H
#define D11_GW_RULES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "../core/json.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "risk.h"
#include "cluster_flow.h"

enum d11_res {
    D11_RES_ORDERS_CREATE,
    D11_RES_ORDERS_READ,
    D11_RES_ORDERS_PAY, /* pay and cancel */
    D11_RES_PRODUCTS_READ,
    D11_RES_PRODUCTS_WRITE,
    D11_RES_COUNT,
    D11_RES_NONE = -1,
};
extern const char *const d11_res_names[D11_RES_COUNT];

enum d11_hot_dim { D11_HOT_SKU, D11_HOT_USER, D11_HOT_IP, D11_HOT_DIMS };
extern const char *const d11_hot_dim_names[D11_HOT_DIMS];

typedef struct d11_rules {
    uint64_t version;
    int64_t  updated_ms; /* wall clock */
    struct {
        uint64_t qps, burst;   /* qps 0: no rate limit */
        uint64_t concurrency;  /* requests of the resource in flight at once; 0: no limit */
        uint64_t warm_up_s;    /* 0: no warm-up; else the rate starts at qps/cold_factor */
        uint64_t cold_factor;  /* 2..10 (default 3) when warm_up_s > 0 */
        uint64_t max_wait_ms;  /* > 0: the pace behaviour (spaced at 1/qps, wait <= this) */
        uint64_t cluster;      /* 1: qps/burst are the total across every gateway (cluster_flow.h) */
        uint64_t fallback_qps; /* cluster: the local rate while the center is unreachable (0: qps / gateways) */
    } flow[D11_RES_COUNT];
    uint32_t ncallers;     /* per-caller rules: a token label's own rate on one resource */
    struct {
        char     label[D11_TOKEN_LABEL_BYTES_MAX + 1];
        uint32_t res;
        uint64_t qps, burst;
    } callers[D11_FLOW_CALLERS_MAX];
    /* hot-parameter limits on orders.create, per value of the SKU (each item's), the user
     * id and the client IP; qps 0 = none; exceptions give one value its own qps */
    struct {
        uint64_t qps, burst;
        uint32_t nexc;
        struct {
            char     value[D11_SKU_BYTES_MAX + 1];
            uint64_t qps;
        } exc[D11_HOT_EXCEPT_MAX];
    } hot[D11_HOT_DIMS];
    bool     degrade[D11_RES_COUNT];
    /* scoped and scheduled degrade switches: resource res is degraded (for one SKU when
     * sku is not empty) while from_ms <= now < until_ms (wall clock; 0 = no bound) */
    uint32_t nsched;
    struct {
        uint32_t res;
        char     sku[D11_SKU_BYTES_MAX + 1];
        int64_t  from_ms, until_ms;
    } sched[D11_DEGRADE_SCHED_MAX];
    uint32_t ndeny;
    uint64_t deny[D11_RISK_DENY_USERS_MAX]; /* sorted ascending, unique */
    uint64_t max_order_qty;                 /* 0: off */
    d11_risk_rules risk;                    /* risk control beyond the two above (risk.h) */
} d11_rules;

/*
 * Parse and validate a rules document (j: the caller's parse scratch). Returns 0;
 * D11_JSON_EBAD (malformed JSON, 400) or D11_JSON_ERANGE (invalid document, 422) with a
 * reason in err. *has_version tells whether the document carried "version" (then in
 * out->version).
 */
int d11_rules_parse(d11_json *j, const char *js, size_t n, d11_rules *out, bool *has_version,
                    char *err, size_t errlen);
/*
 * A partial update (PATCH /admin/rules, JSON merge-patch semantics): out = base with the
 * patch's fields applied. A field present replaces that field only (flow.R.qps changes
 * the qps and keeps R's burst, concurrency, warm-up); null removes (a flow rule, the
 * max_order_quantity); arrays (deny_users) replace the whole array. Same errors as
 * d11_rules_parse.
 */
int d11_rules_parse_patch(d11_json *j, const char *js, size_t n, const d11_rules *base, d11_rules *out,
                          bool *has_version, char *err, size_t errlen);
/* Render as the JSON document above (appends to out). */
void d11_rules_render(const d11_rules *r, d11_buf *out);
/* Risk: is user_id on the deny list? (binary search) */
bool d11_rules_denied(const d11_rules *r, uint64_t user_id);

/* ---- the process-wide store ---- */

typedef struct d11_flow_bucket {
    _Atomic int64_t tat_ns;      /* theoretical arrival time of the next request */
    _Atomic int64_t interval_ns; /* 1e9 / qps; 0 = unlimited */
    _Atomic int64_t tau_ns;      /* burst * interval */
    /* warm-up (Sentinel's "warm up" behaviour, as a GCRA whose interval shrinks): after
     * warm_ns of no admission the bucket is cold again; from the first admission after
     * that, the interval is interval x f, f falling linearly from cold to 1 over warm_ns */
    _Atomic int64_t warm_ns;     /* 0 = no warm-up */
    _Atomic int64_t cold;        /* cold factor */
    _Atomic int64_t warm_start_ns;
    _Atomic int64_t last_ns;     /* last admission */
    _Atomic int64_t inflight;    /* concurrency limit: requests of the resource in flight */
} d11_flow_bucket;

typedef struct d11_rules_store {
    pthread_mutex_t  mu;
    _Atomic uint64_t gen;          /* moves whenever cur changes */
    d11_rules        cur;
    d11_rules        hist[D11_RULES_HISTORY_MAX]; /* hist[nhist-1] is the most recent previous */
    int              nhist;
    uint64_t         max_version;  /* highest version ever issued (persisted) */
    char             path[1100];   /* DATA/rules.json */
    char             state_path[1100]; /* DATA/rules.history */
    bool             have_stat;    /* rules.json as last read or written */
    struct timespec  mtime;
    off_t            size;
    ino_t            ino;
    _Atomic int64_t  next_check_ms;
    d11_json         json;         /* parse scratch, under mu */
    d11_flow_bucket  buckets[D11_RES_COUNT]; /* lock-free, outside mu */
    d11_flow_bucket  caller_buckets[D11_FLOW_CALLERS_MAX]; /* by index in cur.callers */
    d11_cflow_lease  cflow[D11_RES_COUNT]; /* cluster rules' leases (cluster_flow.h), lock-free */
    uint64_t         cflow_gw_id;  /* this gateway process, to the center (lease thread) */
    struct d11_hot_slot *_Atomic hot; /* [D11_HOT_SLOTS] hot-parameter buckets (hot.c), allocated
                                          with the first document that has a hot rule */
} d11_rules_store;

/*
 * Load DATA/rules.history and DATA/rules.json (either may be absent; an invalid file is
 * logged and ignored) and apply the flow buckets. 0, or -ENAMETOOLONG for a data
 * directory path that does not fit. Single-threaded (before the loops start).
 */
int      d11_rules_store_init(d11_rules_store *s, const char *data_dir);
void     d11_rules_store_release(d11_rules_store *s);
uint64_t d11_rules_store_gen(d11_rules_store *s);
void     d11_rules_store_get(d11_rules_store *s, d11_rules *out, uint64_t *gen);
/*
 * Validate-then-apply a new document: persist (rules.history, then rules.json), then make
 * it current and push the old one onto the history. Returns 0 (applied in *applied),
 * -ESTALE when the document's version is not the current one (*applied = the current
 * document), -errno when persisting failed (nothing in force changed; the version number
 * is spent).
 */
int d11_rules_store_put(d11_rules_store *s, const d11_rules *doc, bool has_version,
                        d11_rules *applied);
/* Restore the previous version. -ENOENT when there is none; -errno when rules.json
 * cannot be written (nothing changed). */
int d11_rules_store_rollback(d11_rules_store *s, d11_rules *applied);
/* Version of the document in force. */
uint64_t d11_rules_store_version(d11_rules_store *s);
/* Number of versions in the history. */
int d11_rules_store_history(d11_rules_store *s);
/* Pick up an external change of DATA/rules.json (rate-limited; any thread). */
void d11_rules_store_maybe_reload(d11_rules_store *s, int64_t now_ms);

/*
 * Flow check for resource res at now_ns: true to admit. When refused, *retry_ns is how
 * long until a request would be admitted. Lock-free; any thread.
 */
bool d11_flow_take(d11_rules_store *s, int res, int64_t now_ns, int64_t *retry_ns);
/*
 * The pace behaviour: reserve the next turn of resource res, turns spaced at the bucket's
 * interval (no burst). Returns the wait until that turn (>= 0, the turn is taken), or -1
 * when it would be more than max_wait_ns away (nothing taken; *retry_ns = how long until
 * a turn within max_wait_ns frees up). Lock-free; any thread.
 */
int64_t d11_flow_reserve(d11_rules_store *s, int res, int64_t now_ns, int64_t max_wait_ns, int64_t *retry_ns);
/*
 * Concurrency limit of resource res (limit from the caller's copy of the rules; 0 = none):
 * true when one more request may be in flight (then counted: call d11_flow_conc_leave once
 * it is answered). Lock-free; any thread.
 */
bool d11_flow_conc_enter(d11_rules_store *s, int res, uint64_t limit);
void d11_flow_conc_leave(d11_rules_store *s, int res);
/*
 * Hot-parameter check (hot.c) of one value of dimension dim ("SKU-1", "42", "10.0.0.7")
 * against r's rule for that dimension (r: the caller's copy of the rules in force): true
 * to admit. Buckets are per value, in a direct-mapped table of D11_HOT_SLOTS keyed by a
 * 64-bit hash: two values that share a slot take it over from each other (the bucket
 * restarts), so a limit can only be looser than configured, never stricter. Lock-free.
 */
bool d11_hot_take(d11_rules_store *s, const d11_rules *r, int dim, const char *v, size_t n, int64_t now_ns,
                  int64_t *retry_ns);
/* (rules.c -> hot.c) the "hot" section: parse into out (patch: merge per dimension and
 * exception value, null removes) / render. */
int  d11__hot_parse(d11_json *j, int v, d11_rules *out, bool patch, char *err, size_t errlen);
void d11__hot_render(const d11_rules *r, d11_buf *out);
void d11__hot_alloc(d11_rules_store *s, const d11_rules *r);
void d11__hot_free(d11_rules_store *s);
/*
 * Degrade switches in force at wall time now_ms for resource res: the plain switch, or a
 * scheduled entry without a SKU (d11_rules_degraded), or one naming this SKU
 * (d11_rules_degraded_sku). degrade.c.
 */
bool d11_rules_degraded(const d11_rules *r, int res, int64_t now_ms);
bool d11_rules_degraded_sku(const d11_rules *r, int res, const char *sku, size_t n, int64_t now_ms);
/* (rules.c -> degrade.c) "degrade_schedule": [{"resource","sku","from_ms","until_ms"}, ...]
 * (an array: a patch replaces it whole) / render. */
int  d11__sched_parse(d11_json *j, int v, d11_rules *out, char *err, size_t errlen);
void d11__sched_render(const d11_rules *r, d11_buf *out);
/* (rules.c -> flow.c) Re-arm the buckets for r, the rules now in force. */
void d11__flow_buckets_apply(d11_rules_store *s, const d11_rules *r);
/* (rules.c -> cluster_flow.c) A flow rule's key at token q: "cluster" or "fallback_qps"
 * parsed into out->flow[r] (1), not one of them (0), or D11_JSON_ERANGE with err. Then
 * the cross-field check of a finished rule: 0 or D11_JSON_ERANGE. */
int d11__cflow_rule_field(d11_json *j, int q, const char *name, d11_rules *out, int r, char *err, size_t errlen);
int d11__cflow_rule_check(const d11_rules *out, int r, const char *name, char *err, size_t errlen);
/* (cluster_flow.c -> flow.c) Set the local bucket of res to qps/burst (the fallback rate
 * of a cluster rule); a change restarts the bucket. */
void d11__flow_bucket_rate(d11_rules_store *s, int res, uint64_t qps, uint64_t burst);
/* Per-caller rule i of the rules in force (index into d11_rules.callers): as d11_flow_take. */
bool d11_flow_take_caller(d11_rules_store *s, int i, int64_t now_ns, int64_t *retry_ns);

#endif
