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
 * Every section is optional. Unknown keys are rejected (422): a typo in an operator's
 * document must not silently turn a rule off. "updated_at" is accepted and ignored so a
 * document read with GET can be PUT back. "version", when present in a PUT, must equal
 * the current version (compare-and-set, 409 version_conflict otherwise).
 *
 * The store is process-wide: a mutex guards the current document, the history (the
 * previous D11_RULES_HISTORY_MAX versions, for rollback) and the file. Threads read a
 * private copy: they compare d11_rules_store_gen() (one relaxed atomic load) with the
 * generation of their copy and re-copy when it moved. Version numbers only grow: a new
 * document gets max-ever + 1; a rollback restores the previous document with its own
 * version number.
 *
 * Flow buckets are shared by all threads and lock-free: GCRA (the generic cell rate
 * algorithm, a token bucket expressed as one "theoretical arrival time" per resource,
 * advanced with compare-and-swap). A request is admitted when the bucket would not hold
 * more than `burst` requests' worth of debt; otherwise the caller learns how long to wait
 * (Retry-After). Precise to the nanosecond: no window edges, so no 2x bursts at edges.
 */
#ifndef D11_GW_RULES_H
#define D11_GW_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/util.h"

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

typedef struct d11_rules {
    uint64_t version;
    int64_t  updated_ms; /* wall clock */
    struct { uint64_t qps, burst; } flow[D11_RES_COUNT]; /* qps 0: unlimited */
    bool     degrade[D11_RES_COUNT];
    uint32_t ndeny;
    uint64_t deny[D11_RISK_DENY_USERS_MAX]; /* sorted ascending, unique */
    uint64_t max_order_qty;                 /* 0: off */
} d11_rules;

/*
 * Parse and validate a rules document. Returns 0; D11_JSON_EBAD (malformed JSON, 400)
 * or D11_JSON_ERANGE (invalid document, 422) with a reason in err. *has_version tells
 * whether the document carried "version" (then in out->version).
 */
int d11_rules_parse(const char *js, size_t n, d11_rules *out, bool *has_version, char *err,
                    size_t errlen);
/* Render as the JSON document above (appends to out). */
void d11_rules_render(const d11_rules *r, d11_buf *out);
/* Risk: is user_id on the deny list? (binary search) */
bool d11_rules_denied(const d11_rules *r, uint64_t user_id);

/* ---- the process-wide store ---- */

/* Load DATA/rules.json if present (an invalid file is logged and ignored). */
void     d11_rules_store_init(const char *data_dir);
uint64_t d11_rules_store_gen(void);
void     d11_rules_store_get(d11_rules *out, uint64_t *gen);
/*
 * Validate-then-apply a new document: persist to DATA/rules.json atomically, then make it
 * current and push the old one onto the history. Returns 0 (applied in *applied),
 * -ESTALE when the document's version is not the current one, -errno when persisting
 * failed (nothing changed).
 */
int d11_rules_store_put(const d11_rules *doc, bool has_version, d11_rules *applied);
/* Restore the previous version. -ENOENT when there is none. */
int d11_rules_store_rollback(d11_rules *applied);
/* Number of versions in the history. */
int d11_rules_store_history(void);
/* Pick up an external change of DATA/rules.json (rate-limited; any thread). */
void d11_rules_store_maybe_reload(int64_t now_ms);

/*
 * Flow check for resource res at now_ns: true to admit. When refused, *retry_ns is how
 * long until a request would be admitted. Lock-free; any thread.
 */
bool d11_flow_take(int res, int64_t now_ns, int64_t *retry_ns);

#endif
