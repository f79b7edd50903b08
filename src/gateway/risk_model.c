/*
 * risk_model.c — the risk section of the rules document (mode, windows, velocity rules,
 * model, model_b, log sampling: parse with merge-patch semantics, cross-checks, render)
 * and the scoring model: a logistic regression over named features (see risk.h).
 *
 * Invariants: a parsed section only names windows it tracks (d11__risk_validate), holds
 * at most D11_RISK_VELOCITY_MAX rules and D11_RISK_FEATURES_MAX weights per model, and
 * every number is finite and bounded, so d11_risk_score is a handful of multiply-adds and
 * one exp() — no allocation, no lock. Pure functions; any thread.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "risk.h"

const char *const d11_risk_dim_names[D11_RISK_DIMS] = {"user", "ip", "device"};
const char *const d11_risk_action_names[D11_RISK_ACTIONS] = {"allow", "challenge", "deny"};
const uint32_t d11_risk_windows_default[3] = {10, 60, 3600};

#define THRESH_OFF 2.0 /* a threshold above any score: that action never comes from the model */

static int rbad(char *err, size_t errlen, const char *fmt, const char *what)
{
    snprintf(err, errlen, fmt, what);
    return D11_JSON_ERANGE;
}

/* A JSON number token as a double within [lo, hi]. */
static int json_num(const d11_json *j, int t, double lo, double hi, double *out)
{
    if (t < 0 || j->tok[t].type != D11_JT_NUMBER) return D11_JSON_ETYPE;
    char buf[48];
    int n = j->tok[t].end - j->tok[t].start;
    if (n <= 0 || n >= (int)sizeof buf) return D11_JSON_ERANGE;
    memcpy(buf, j->js + j->tok[t].start, (size_t)n);
    buf[n] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end || !isfinite(d) || d < lo || d > hi) return D11_JSON_ERANGE;
    *out = d;
    return 0;
}

/* A name: 1..32 of [A-Za-z0-9_.-]. */
static bool get_name(const d11_json *j, int t, char *out)
{
    size_t n = 0;
    memset(out, 0, D11_RISK_NAME_BYTES_MAX + 1); /* whole buffer: documents compare with memcmp */
    if (d11_json_str(j, t, out, D11_RISK_NAME_BYTES_MAX, &n) != 0 || n == 0) return false;
    out[n] = 0;
    for (size_t i = 0; i < n; i++) {
        char c = out[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* A feature name token into w (kind, dim, window); false when not a feature. */
static bool parse_feature(const d11_json *j, int t, d11_risk_weight *w)
{
    char s[40];
    size_t n = 0;
    if (d11_json_str(j, t, s, sizeof s - 1, &n) != 0) return false;
    s[n] = 0;
    memset(w, 0, sizeof *w);
    if (!strcmp(s, "quantity")) w->kind = D11_RISK_F_QUANTITY;
    else if (!strcmp(s, "items")) w->kind = D11_RISK_F_ITEMS;
    else if (!strcmp(s, "no_device")) w->kind = D11_RISK_F_NO_DEVICE;
    else {
        for (int d = 0; d < D11_RISK_DIMS; d++) {
            size_t dn = strlen(d11_risk_dim_names[d]);
            if (n < dn + 3 || memcmp(s, d11_risk_dim_names[d], dn) != 0 || s[dn] != '_' || s[n - 1] != 's') continue;
            uint64_t v;
            if (d11_parse_u64(s + dn + 1, n - dn - 2, D11_RISK_WINDOW_S_MAX, &v) < 0 || v < 1) return false;
            w->kind = D11_RISK_F_VEL;
            w->dim = (uint8_t)d;
            w->window_s = (uint32_t)v;
            return true;
        }
        return false;
    }
    return true;
}

void d11_risk_feature_name(const d11_risk_weight *w, char *out, size_t cap)
{
    D11_ASSERT(cap >= 24);
    switch (w->kind) {
    case D11_RISK_F_QUANTITY: snprintf(out, cap, "quantity"); break;
    case D11_RISK_F_ITEMS: snprintf(out, cap, "items"); break;
    case D11_RISK_F_NO_DEVICE: snprintf(out, cap, "no_device"); break;
    default:
        D11_ASSERT(w->kind == D11_RISK_F_VEL && w->dim < D11_RISK_DIMS);
        snprintf(out, cap, "%s_%us", d11_risk_dim_names[w->dim], (unsigned)w->window_s);
    }
}

static bool same_feature(const d11_risk_weight *a, const d11_risk_weight *b)
{
    return a->kind == b->kind && (a->kind != D11_RISK_F_VEL || (a->dim == b->dim && a->window_s == b->window_s));
}

/* A model object at token v into m (merged into what m holds; fresh: start empty). */
static int parse_model(d11_json *j, int v, d11_risk_model *m, bool fresh, bool is_b, const char *what, char *err,
                       size_t errlen)
{
    if (j->tok[v].type != D11_JT_OBJECT)
        return rbad(err, errlen, "%s: must be an object {\"name\",\"bias\",\"weights\",\"challenge\",\"deny\"}", what);
    if (fresh) {
        memset(m, 0, sizeof *m);
        m->challenge = m->deny = THRESH_OFF;
    }
    char path[64];
    int q = v + 1;
    for (int f = 0; f < j->tok[v].size; f++, q = j->tok[q + 1].next) {
        int qv = q + 1;
        if (d11_json_str_eq(j, q, "name", 4)) {
            if (!get_name(j, qv, m->name)) return rbad(err, errlen, "%s.name: 1..32 of [A-Za-z0-9_.-]", what);
        } else if (d11_json_str_eq(j, q, "bias", 4)) {
            if (json_num(j, qv, -D11_RISK_WEIGHT_MAX, D11_RISK_WEIGHT_MAX, &m->bias))
                return rbad(err, errlen, "%s.bias: must be a number in -1e6..1e6", what);
        } else if (d11_json_str_eq(j, q, "challenge", 9) || d11_json_str_eq(j, q, "deny", 4)) {
            double *dst = d11_json_str_eq(j, q, "deny", 4) ? &m->deny : &m->challenge;
            snprintf(path, sizeof path, "%s.%s", what, dst == &m->deny ? "deny" : "challenge");
            if (j->tok[qv].type == D11_JT_NULL) *dst = THRESH_OFF;
            else if (json_num(j, qv, 0, 1, dst)) return rbad(err, errlen, "%s: a score threshold in 0..1 (or null)", path);
        } else if (is_b && d11_json_str_eq(j, q, "percent", 7)) {
            double p;
            if (json_num(j, qv, 0, 100, &p)) return rbad(err, errlen, "%s.percent: must be a number in 0..100", what);
            m->percent_bp = (uint32_t)llround(p * 100);
        } else if (d11_json_str_eq(j, q, "weights", 7)) {
            if (j->tok[qv].type != D11_JT_OBJECT)
                return rbad(err, errlen, "%s.weights: must be an object {\"<feature>\": weight}", what);
            int wk = qv + 1;
            for (int e = 0; e < j->tok[qv].size; e++, wk = j->tok[wk + 1].next) {
                d11_risk_weight w;
                if (!parse_feature(j, wk, &w))
                    return rbad(err, errlen, "%s.weights: unknown feature (expected user_<N>s, ip_<N>s, device_<N>s, "
                                             "quantity, items, no_device)", what);
                uint32_t i = 0;
                while (i < m->nw && !same_feature(&m->w[i], &w)) i++;
                if (j->tok[wk + 1].type == D11_JT_NULL) {
                    if (i < m->nw) m->w[i] = m->w[--m->nw];
                    continue;
                }
                if (json_num(j, wk + 1, -D11_RISK_WEIGHT_MAX, D11_RISK_WEIGHT_MAX, &w.w))
                    return rbad(err, errlen, "%s.weights: each is a number in -1e6..1e6", what);
                if (i == m->nw) {
                    if (m->nw >= D11_RISK_FEATURES_MAX) return rbad(err, errlen, "%s.weights: at most 12 features", what);
                    m->nw++;
                }
                m->w[i] = w;
            }
        } else {
            return rbad(err, errlen, is_b ? "%s: unknown field (expected name, bias, weights, challenge, deny, percent)"
                                          : "%s: unknown field (expected name, bias, weights, challenge, deny)", what);
        }
    }
    if (!m->name[0]) return rbad(err, errlen, "%s.name: required", what);
    return 0;
}

/* "velocity": {"<name>": {"key","window_s","max","action"} | null}, merged per name. */
static int parse_velocity(d11_json *j, int v, d11_risk_rules *out, char *err, size_t errlen)
{
    if (j->tok[v].type != D11_JT_OBJECT)
        return rbad(err, errlen, "%s: must be an object {\"<name>\": {\"key\",\"window_s\",\"max\",\"action\"}}",
                    "risk.velocity");
    int k = v + 1;
    for (int e = 0; e < j->tok[v].size; e++, k = j->tok[k + 1].next) {
        char name[D11_RISK_NAME_BYTES_MAX + 1];
        if (!get_name(j, k, name)) return rbad(err, errlen, "%s: rule names are 1..32 of [A-Za-z0-9_.-]", "risk.velocity");
        uint32_t i = 0;
        while (i < out->nvel && strcmp(out->vel[i].name, name)) i++;
        int rv = k + 1;
        if (j->tok[rv].type == D11_JT_NULL) {
            if (i < out->nvel) out->vel[i] = out->vel[--out->nvel];
            continue;
        }
        if (j->tok[rv].type != D11_JT_OBJECT)
            return rbad(err, errlen, "risk.velocity.%s: must be an object {\"key\",\"window_s\",\"max\",\"action\"}", name);
        if (i == out->nvel) {
            if (out->nvel >= D11_RISK_VELOCITY_MAX) return rbad(err, errlen, "%s: at most 8 rules", "risk.velocity");
            memset(&out->vel[i], 0, sizeof out->vel[i]);
            memcpy(out->vel[i].name, name, sizeof name);
            out->vel[i].dim = 0xff;
            out->vel[i].action = D11_RISK_CHALLENGE;
            out->nvel++;
        }
        int q = rv + 1;
        for (int f = 0; f < j->tok[rv].size; f++, q = j->tok[q + 1].next) {
            int qv = q + 1;
            if (d11_json_str_eq(j, q, "key", 3)) {
                int d = 0;
                while (d < D11_RISK_DIMS && !d11_json_str_eq(j, qv, d11_risk_dim_names[d], strlen(d11_risk_dim_names[d]))) d++;
                if (d == D11_RISK_DIMS) return rbad(err, errlen, "risk.velocity.%s.key: user, ip or device", name);
                out->vel[i].dim = (uint8_t)d;
            } else if (d11_json_str_eq(j, q, "window_s", 8)) {
                uint64_t w;
                if (d11_json_u64(j, qv, 1, D11_RISK_WINDOW_S_MAX, &w))
                    return rbad(err, errlen, "risk.velocity.%s.window_s: an integer in 1..86400", name);
                out->vel[i].window_s = (uint32_t)w;
            } else if (d11_json_str_eq(j, q, "max", 3)) {
                if (d11_json_u64(j, qv, 0, UINT32_MAX, &out->vel[i].max))
                    return rbad(err, errlen, "risk.velocity.%s.max: an integer in 0..4294967295", name);
            } else if (d11_json_str_eq(j, q, "action", 6)) {
                if (d11_json_str_eq(j, qv, "challenge", 9)) out->vel[i].action = D11_RISK_CHALLENGE;
                else if (d11_json_str_eq(j, qv, "deny", 4)) out->vel[i].action = D11_RISK_DENY;
                else return rbad(err, errlen, "risk.velocity.%s.action: challenge or deny", name);
            } else {
                return rbad(err, errlen, "risk.velocity.%s: unknown field (expected key, window_s, max, action)", name);
            }
        }
        if (out->vel[i].dim == 0xff || !out->vel[i].window_s)
            return rbad(err, errlen, "risk.velocity.%s: key and window_s are required", name);
    }
    return 0;
}

int d11__risk_parse_field(d11_json *j, int k, d11_risk_rules *out, bool patch, char *err, size_t errlen)
{
    int v = k + 1;
    if (d11_json_str_eq(j, k, "mode", 4)) {
        if (d11_json_str_eq(j, v, "enforce", 7)) out->mode = D11_RISK_ENFORCE;
        else if (d11_json_str_eq(j, v, "shadow", 6)) out->mode = D11_RISK_SHADOW;
        else return rbad(err, errlen, "%s: \"enforce\" or \"shadow\"", "risk.mode");
    } else if (d11_json_str_eq(j, k, "windows_s", 9)) {
        out->nwin = 0;
        memset(out->windows_s, 0, sizeof out->windows_s);
        if (j->tok[v].type == D11_JT_NULL) return 0; /* back to the defaults */
        if (j->tok[v].type != D11_JT_ARRAY || j->tok[v].size < 1 || j->tok[v].size > D11_RISK_WINDOWS_MAX)
            return rbad(err, errlen, "%s: an array of 1..4 window lengths in seconds", "risk.windows_s");
        for (int e = 0; e < j->tok[v].size; e++) {
            uint64_t w;
            if (d11_json_u64(j, d11_json_elem(j, v, e), 1, D11_RISK_WINDOW_S_MAX, &w))
                return rbad(err, errlen, "%s: each an integer in 1..86400", "risk.windows_s");
            for (uint32_t x = 0; x < out->nwin; x++)
                if (out->windows_s[x] == w) return rbad(err, errlen, "%s: each window once", "risk.windows_s");
            out->windows_s[out->nwin++] = (uint32_t)w;
        }
    } else if (d11_json_str_eq(j, k, "velocity", 8)) {
        return parse_velocity(j, v, out, err, errlen);
    } else if (d11_json_str_eq(j, k, "model", 5) || d11_json_str_eq(j, k, "model_b", 7)) {
        bool is_b = d11_json_str_eq(j, k, "model_b", 7);
        d11_risk_model *m = is_b ? &out->model_b : &out->model;
        bool *has = is_b ? &out->has_model_b : &out->has_model;
        if (j->tok[v].type == D11_JT_NULL) {
            *has = false;
            memset(m, 0, sizeof *m);
            return 0;
        }
        int rc = parse_model(j, v, m, !(patch && *has), is_b, is_b ? "risk.model_b" : "risk.model", err, errlen);
        if (rc) return rc;
        *has = true;
    } else if (d11_json_str_eq(j, k, "log_sample_pct", 14)) {
        double p = 0;
        if (j->tok[v].type != D11_JT_NULL && json_num(j, v, 0, 100, &p))
            return rbad(err, errlen, "%s: a number in 0..100 (allow decisions logged)", "risk.log_sample_pct");
        out->log_sample_ppm = (uint32_t)llround(p * 10000);
    } else {
        return 1;
    }
    return 0;
}

uint32_t d11_risk_windows(const d11_risk_rules *r, const uint32_t **w)
{
    if (r->nwin) {
        *w = r->windows_s;
        return r->nwin;
    }
    *w = d11_risk_windows_default;
    return 3;
}

static bool tracked(const d11_risk_rules *r, uint32_t window_s)
{
    const uint32_t *w;
    uint32_t n = d11_risk_windows(r, &w);
    for (uint32_t i = 0; i < n; i++)
        if (w[i] == window_s) return true;
    return false;
}

int d11__risk_validate(const d11_risk_rules *r, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < r->nvel; i++)
        if (!tracked(r, r->vel[i].window_s))
            return rbad(err, errlen, "risk.velocity.%s.window_s: not one of risk.windows_s", r->vel[i].name);
    for (int b = 0; b < 2; b++) {
        const d11_risk_model *m = b ? &r->model_b : &r->model;
        if (!(b ? r->has_model_b : r->has_model)) continue;
        for (uint32_t i = 0; i < m->nw; i++)
            if (m->w[i].kind == D11_RISK_F_VEL && !tracked(r, m->w[i].window_s)) {
                char fn[40];
                d11_risk_feature_name(&m->w[i], fn, sizeof fn);
                snprintf(err, errlen, "risk.%s.weights.%s: its window is not one of risk.windows_s",
                         b ? "model_b" : "model", fn);
                return D11_JSON_ERANGE;
            }
    }
    return 0;
}

static void render_model(const d11_risk_model *m, bool is_b, d11_buf *out)
{
    d11_buf_printf(out, "{\"name\":\"%s\",\"bias\":%.17g,\"weights\":{", m->name, m->bias);
    for (uint32_t i = 0; i < m->nw; i++) {
        char fn[40];
        d11_risk_feature_name(&m->w[i], fn, sizeof fn);
        d11_buf_printf(out, "%s\"%s\":%.17g", i ? "," : "", fn, m->w[i].w);
    }
    d11_buf_puts(out, "}");
    if (m->challenge <= 1) d11_buf_printf(out, ",\"challenge\":%.17g", m->challenge);
    if (m->deny <= 1) d11_buf_printf(out, ",\"deny\":%.17g", m->deny);
    if (is_b) d11_buf_printf(out, ",\"percent\":%.17g", m->percent_bp / 100.0);
    d11_buf_puts(out, "}");
}

void d11__risk_render(const d11_risk_rules *r, d11_buf *out)
{
    /* only what differs from the defaults, so a document without these reads back as before */
    if (r->mode == D11_RISK_SHADOW) d11_buf_puts(out, ",\"mode\":\"shadow\"");
    if (r->nwin) {
        d11_buf_puts(out, ",\"windows_s\":[");
        for (uint32_t i = 0; i < r->nwin; i++) d11_buf_printf(out, "%s%u", i ? "," : "", (unsigned)r->windows_s[i]);
        d11_buf_puts(out, "]");
    }
    if (r->nvel) {
        d11_buf_puts(out, ",\"velocity\":{");
        for (uint32_t i = 0; i < r->nvel; i++)
            d11_buf_printf(out, "%s\"%s\":{\"key\":\"%s\",\"window_s\":%u,\"max\":%llu,\"action\":\"%s\"}", i ? "," : "",
                           r->vel[i].name, d11_risk_dim_names[r->vel[i].dim], (unsigned)r->vel[i].window_s,
                           (unsigned long long)r->vel[i].max, d11_risk_action_names[r->vel[i].action]);
        d11_buf_puts(out, "}");
    }
    if (r->has_model) {
        d11_buf_puts(out, ",\"model\":");
        render_model(&r->model, false, out);
    }
    if (r->has_model_b) {
        d11_buf_puts(out, ",\"model_b\":");
        render_model(&r->model_b, true, out);
    }
    if (r->log_sample_ppm) d11_buf_printf(out, ",\"log_sample_pct\":%.17g", r->log_sample_ppm / 10000.0);
}

int d11_risk_model_parse(d11_json *j, const char *js, size_t n, d11_risk_model *m, char *err, size_t errlen)
{
    if (d11_json_parse(j, js, n) != 0) {
        snprintf(err, errlen, "%s", j->err);
        return D11_JSON_EBAD;
    }
    return parse_model(j, 0, m, true, false, "model", err, errlen);
}

double d11_risk_feature(const d11_risk_features *f, const d11_risk_weight *w)
{
    switch (w->kind) {
    case D11_RISK_F_QUANTITY: return (double)f->quantity;
    case D11_RISK_F_ITEMS: return (double)f->items;
    case D11_RISK_F_NO_DEVICE: return f->has[D11_RISK_DEVICE] ? 0.0 : 1.0;
    default: break;
    }
    D11_ASSERT(w->kind == D11_RISK_F_VEL && w->dim < D11_RISK_DIMS);
    for (uint32_t i = 0; i < f->nwin; i++)
        if (f->windows_s[i] == w->window_s) return (double)f->count[w->dim][i];
    return 0.0; /* a file model naming a window the rules do not track */
}

double d11_risk_score(const d11_risk_model *m, const d11_risk_features *f)
{
    D11_ASSERT(m->nw <= D11_RISK_FEATURES_MAX);
    double z = m->bias;
    for (uint32_t i = 0; i < m->nw; i++) z += m->w[i].w * d11_risk_feature(f, &m->w[i]);
    double s = 1.0 / (1.0 + exp(-z));
    D11_ASSERT(s >= 0.0 && s <= 1.0);
    return s;
}

int d11_risk_model_action(const d11_risk_model *m, double score)
{
    if (score >= m->deny) return D11_RISK_DENY;
    if (score >= m->challenge) return D11_RISK_CHALLENGE;
    return D11_RISK_ALLOW;
}

bool d11_risk_ab_in(uint64_t user_id, uint32_t percent_bp)
{
    uint64_t z = user_id + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z % 10000 < percent_bp;
}

bool d11_risk_active(const d11_risk_rules *r, const d11_risk_model *file_model)
{
    return r->nvel || r->has_model || r->has_model_b || file_model;
}
