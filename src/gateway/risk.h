/*
 * risk.h — risk control for POST /v1/orders (docs/protection.md, "Risk control"):
 * velocity features over sliding windows, velocity rules with actions, a logistic-
 * regression score (model A enforced, model B scored on an A/B share), shadow mode, and a
 * sampled, masked decision log queryable by request id.
 *
 * Parts (one module, three files):
 *   risk_model.c  the "risk" section of the rules document beyond deny_users /
 *                 max_order_quantity (parse with merge-patch semantics, render), the
 *                 model (d11_risk_model_parse for --risk-model FILE, d11_risk_score)
 *   risk.c        the velocity table (d11_risk_table: shared, striped locks, bounded,
 *                 keyed by a salted hash — no identifier is kept in clear) and the
 *                 gateway hook gw_risk_check
 *   risk_log.c    the decision ring (d11_risk_log), its JSON, the admin handlers and the
 *                 metrics
 *
 * The rules section (all optional; "risk" also holds deny_users, max_order_quantity):
 *   "risk": {"mode": "enforce" | "shadow",
 *            "windows_s": [10, 60, 3600],
 *            "velocity": {"<name>": {"key": "user"|"ip"|"device", "window_s": 10,
 *                                    "max": 5, "action": "challenge"|"deny"}},
 *            "model":   {"name": "m1", "bias": -4, "weights": {"user_10s": 0.8, ...},
 *                        "challenge": 0.7, "deny": 0.95},
 *            "model_b": {... as model ..., "percent": 10},
 *            "log_sample_pct": 1.5}
 * Features a model may weigh: <key>_<W>s for key user|ip|device and W one of windows_s
 * (the count in that window, this order included), "quantity" (units in the order),
 * "items" (lines), "no_device" (1 when X-Device-Id is absent). A velocity rule fires when
 * its count exceeds max. The decision is the strongest of the rule actions and model A's
 * (score >= deny -> deny, >= challenge -> challenge); enforced unless mode is "shadow".
 *
 * Threads: the rules types are plain values (a copy per thread); the table and the log
 * are shared by every gateway thread (their own locks); gw_risk_check runs on the
 * connection's thread.
 */
#ifndef D11_GW_RISK_H
#define D11_GW_RISK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/json.h"
#include "../core/util.h"

#define D11_RISK_WINDOWS_MAX      4      /* windows_s entries */
#define D11_RISK_WINDOW_S_MAX     86400  /* one window at most a day */
#define D11_RISK_SUBBUCKETS       8      /* a window slides in steps of window/8 */
#define D11_RISK_VELOCITY_MAX     8      /* velocity rules in a document */
#define D11_RISK_FEATURES_MAX     12     /* weights per model */
#define D11_RISK_NAME_BYTES_MAX   32     /* rule and model names */
#define D11_RISK_WAYS             8      /* velocity table: entries per set (LRU within a set) */
#define D11_RISK_STRIPES          64     /* velocity table: locks */
#define D11_RISK_KEYS_DEFAULT     16384  /* --risk-keys: tracked keys (user, ip, device alike) */
#define D11_RISK_KEYS_MAX         (1 << 22)
#define D11_RISK_LOG_DEFAULT      4096   /* --risk-log-size: decisions kept */
#define D11_RISK_LOG_MAX          (1 << 20)
#define D11_RISK_LIST_MAX         500    /* GET /admin/risk/decisions?limit= at most */
#define D11_RISK_WEIGHT_MAX       1e6    /* |weight|, |bias| */
#define D11_RISK_PPM              1000000

enum { D11_RISK_USER, D11_RISK_IP, D11_RISK_DEVICE, D11_RISK_DIMS };
enum { D11_RISK_ALLOW, D11_RISK_CHALLENGE, D11_RISK_DENY, D11_RISK_ACTIONS };
enum { D11_RISK_F_VEL, D11_RISK_F_QUANTITY, D11_RISK_F_ITEMS, D11_RISK_F_NO_DEVICE };
enum { D11_RISK_ENFORCE = 0, D11_RISK_SHADOW = 1 };
extern const char *const d11_risk_dim_names[D11_RISK_DIMS];
extern const char *const d11_risk_action_names[D11_RISK_ACTIONS];
extern const uint32_t d11_risk_windows_default[3];

typedef struct d11_risk_weight {
    uint8_t  kind;     /* D11_RISK_F_* */
    uint8_t  dim;      /* D11_RISK_F_VEL: D11_RISK_USER.. */
    uint32_t window_s; /* D11_RISK_F_VEL */
    double   w;
} d11_risk_weight;

typedef struct d11_risk_model {
    char     name[D11_RISK_NAME_BYTES_MAX + 1];
    uint32_t nw;
    uint32_t percent_bp;     /* model_b: share of users scored, basis points 0..10000 */
    double   bias;
    double   challenge, deny; /* thresholds in [0,1]; > 1 = the model never gives that action */
    d11_risk_weight w[D11_RISK_FEATURES_MAX];
} d11_risk_model;

typedef struct d11_risk_rules {
    uint8_t  mode;         /* D11_RISK_ENFORCE / D11_RISK_SHADOW */
    bool     has_model, has_model_b;
    uint32_t nwin;         /* 0: d11_risk_windows_default */
    uint32_t windows_s[D11_RISK_WINDOWS_MAX];
    uint32_t nvel;
    struct {
        char     name[D11_RISK_NAME_BYTES_MAX + 1];
        uint8_t  dim, action;
        uint32_t window_s;
        uint64_t max;
    } vel[D11_RISK_VELOCITY_MAX];
    d11_risk_model model, model_b;
    uint32_t log_sample_ppm; /* allow decisions logged per million (challenge/deny: always) */
} d11_risk_rules;

/* The feature values of one order (inputs of the rules and the model). */
typedef struct d11_risk_features {
    uint32_t nwin;
    uint32_t windows_s[D11_RISK_WINDOWS_MAX];
    uint32_t count[D11_RISK_DIMS][D11_RISK_WINDOWS_MAX]; /* 0 when the key is absent */
    bool     has[D11_RISK_DIMS];
    uint32_t quantity, items;
} d11_risk_features;

/* ---- risk_model.c ---- */

/* One field of the rules document's "risk" object (key token k, value k+1) other than
 * deny_users / max_order_quantity, into out (patch: merge into what is there; null
 * removes a velocity rule, a weight, a model). 1 when k is not a field of this module
 * (the caller reports it unknown), 0, or D11_JSON_ERANGE with a reason in err. */
int  d11__risk_parse_field(d11_json *j, int k, d11_risk_rules *out, bool patch, char *err, size_t errlen);
/* Cross-field checks once the whole "risk" object is in (windows named by rules and
 * model features exist, thresholds ordered): 0 or D11_JSON_ERANGE. */
int  d11__risk_validate(const d11_risk_rules *r, char *err, size_t errlen);
/* Append the fields of this module (",\"mode\":...") to a "risk" object being rendered. */
void d11__risk_render(const d11_risk_rules *r, d11_buf *out);
/* A model document ({"name","bias","weights","challenge","deny"}, the --risk-model file
 * format) into m: 0, D11_JSON_EBAD or D11_JSON_ERANGE with a reason. */
int  d11_risk_model_parse(d11_json *j, const char *js, size_t n, d11_risk_model *m, char *err, size_t errlen);
/* Windows in force (r->windows_s or the defaults); returns their number. */
uint32_t d11_risk_windows(const d11_risk_rules *r, const uint32_t **w);
/* Value of one feature (0 when its window is not tracked or its key absent). */
double d11_risk_feature(const d11_risk_features *f, const d11_risk_weight *w);
/* The logistic score 1 / (1 + e^-(bias + sum w_i x_i)), in [0, 1]. */
double d11_risk_score(const d11_risk_model *m, const d11_risk_features *f);
/* The model's action for a score. */
int d11_risk_model_action(const d11_risk_model *m, double score);
/* Feature name ("user_10s", "quantity") into out (cap >= 24). */
void d11_risk_feature_name(const d11_risk_weight *w, char *out, size_t cap);
/* Is user_id in model B's share? Deterministic: splitmix64(user_id) % 10000 < percent_bp. */
bool d11_risk_ab_in(uint64_t user_id, uint32_t percent_bp);
/* Anything to do for these rules (velocity rules, a model) or a file model? */
bool d11_risk_active(const d11_risk_rules *r, const d11_risk_model *file_model);

/* ---- risk.c: the velocity table ---- */

typedef struct d11_risk_win {
    uint64_t head;   /* sub-bucket index (now_ms / len_ms) of the newest count */
    uint32_t len_ms; /* sub-bucket length these counts were made with (0 = empty) */
    uint32_t n[D11_RISK_SUBBUCKETS];
} d11_risk_win;

typedef struct d11_risk_entry {
    uint64_t     tag;    /* salted hash of (dimension, value); 0 = free */
    int64_t      seen_ms;
    d11_risk_win w[D11_RISK_WINDOWS_MAX];
} d11_risk_entry;

typedef struct d11_risk_table {
    uint32_t         nsets;   /* power of two; D11_RISK_WAYS entries each */
    d11_risk_entry  *e;       /* [nsets * D11_RISK_WAYS], owned */
    pthread_mutex_t  mu[D11_RISK_STRIPES]; /* set s is guarded by mu[s % D11_RISK_STRIPES] */
    _Atomic uint64_t evicted; /* keys dropped to make room */
    _Atomic uint64_t keys;    /* slots in use */
} d11_risk_table;

/* keys: capacity, rounded up to a power of two >= D11_RISK_WAYS. 0 or -ENOMEM/-EINVAL. */
int  d11_risk_table_init(d11_risk_table *t, uint32_t keys);
void d11_risk_table_release(d11_risk_table *t);
/* Count one event of key tag (!= 0) at now_ms in each of the nwin windows (seconds) and
 * write the counts in each window, this event included, to out[0..nwin). A key not in
 * the table takes a free entry of its set or evicts the set's least recently seen one. */
void d11_risk_table_hit(d11_risk_table *t, uint64_t tag, const uint32_t *windows_s, uint32_t nwin, int64_t now_ms,
                        uint32_t *out);
/* Salted 64-bit key of (dimension, value): never 0; stress traffic gets its own keys. */
uint64_t d11_risk_key(uint64_t salt, int dim, bool stress, const void *v, size_t n);

/* ---- risk_log.c: the decision log ---- */

typedef struct d11_risk_decision {
    char     rid[17];          /* X-Request-Id */
    int64_t  at_ms;            /* wall clock */
    uint64_t user_hash;        /* as in the request log: "u:<hex>" */
    uint64_t device_hash;      /* 0 = no device id */
    char     ip[56];           /* truncated: IPv4 /24, IPv6 /48 */
    uint8_t  action;           /* the decision (rules + model A) */
    uint8_t  rule_action;      /* strongest velocity rule action */
    uint8_t  action_a, action_b;
    bool     enforced, stress, has_a, has_b;
    char     rule[D11_RISK_NAME_BYTES_MAX + 1]; /* the rule that gave rule_action ("" none) */
    char     model_a[D11_RISK_NAME_BYTES_MAX + 1], model_b[D11_RISK_NAME_BYTES_MAX + 1];
    double   score_a, score_b;
    d11_risk_features f;
} d11_risk_decision;

typedef struct d11_risk_log {
    pthread_mutex_t    mu;
    uint32_t           cap;
    uint64_t           next;  /* records ever pushed; ring[i % cap] */
    d11_risk_decision *ring;  /* owned */
} d11_risk_log;

int  d11_risk_log_init(d11_risk_log *l, uint32_t cap);
void d11_risk_log_release(d11_risk_log *l);
void d11_risk_log_push(d11_risk_log *l, const d11_risk_decision *d);
/* Copy of the newest record with this request id: true when found. */
bool d11_risk_log_find(d11_risk_log *l, const char *rid, size_t n, d11_risk_decision *out);
/* Append one record as JSON. */
void d11_risk_decision_render(const d11_risk_decision *d, d11_buf *out);
/* Mask an IP address text: "10.1.2.3" -> "10.1.2.0/24", IPv6 -> its /48; "" stays "". */
void d11_risk_mask_ip(const char *ip, char *out, size_t cap);

/* ---- the gateway's risk state (one per process, struct gw.risk) ---- */

enum { GW_RISK_MODEL_A, GW_RISK_MODEL_B, GW_RISK_MODELS };

typedef struct gw_risk {
    d11_risk_table   table;
    d11_risk_log     log;
    uint64_t         salt;        /* random per process: table keys */
    bool             has_file_model;
    d11_risk_model   file_model;  /* --risk-model FILE: model A when the rules have none */
    _Atomic uint64_t decisions[2][D11_RISK_ACTIONS]; /* [shadow][action], real traffic */
    _Atomic uint64_t stress[D11_RISK_ACTIONS];
    _Atomic uint64_t model[GW_RISK_MODELS][D11_RISK_ACTIONS];
    _Atomic uint64_t logged;
    _Atomic uint64_t eval_ns;     /* time spent in gw_risk_check (features + rules + models) */
    _Atomic uint64_t evals;
} gw_risk;

struct gw;
struct gw_thread;
struct gw_req;
struct d11_msg_order_create;

/* Allocate the table and the log (sizes from --risk-keys / --risk-log-size) and load
 * --risk-model (path "" = none). 0, or -1 with a reason in err. Before the threads. */
int  gw_risk_init(gw_risk *r, const char *model_path, int64_t keys, int64_t log_size, char *err, size_t errlen);
void gw_risk_release(gw_risk *r);
/* The hook of POST /v1/orders, after the body is validated: velocity features, rules,
 * models, decision log. false after answering 403 risk_challenge / risk_denied. */
bool gw_risk_check(struct gw_thread *t, struct gw_req *rq, const struct d11_msg_order_create *m);
/* GET /admin/risk/decisions/{request_id}, GET /admin/risk/decisions?limit=N */
void gw_h_risk_decision(struct gw_thread *t, struct gw_req *rq);
void gw_h_risk_decisions(struct gw_thread *t, struct gw_req *rq);
/* Prometheus text of the counters above. */
void gw_risk_metrics(gw_risk *r, d11_buf *out);

#endif
