/*
 * ctl_rules.c — rule edits of `d11 ctl` by read-modify-write of the rules document:
 *
 *   degrade on|off RES            degrade.RES = true | false
 *   flow set RES --qps N --burst N   flow.RES = {qps, burst};  flow clear RES
 *   deny-user add|remove ID       risk.deny_users +/- ID
 *   rules patch JSON|@FILE|-      merge: each top-level key of the patch replaces the
 *                                 document's, objects merged one level deep, null deletes
 *
 * Each GETs /admin/rules, rebuilds the document with only the edited part changed (every
 * other key, known or not, copied verbatim, so rules the gateway adds later survive) and
 * PUTs it with the version it read (compare-and-set). A 409 version_conflict — someone
 * else changed the rules in between — starts over after a short random wait (so that
 * several operators or scripts editing at once do not keep colliding), at most
 * CTL_RULES_TRIES times. The
 * gateway logs every change with the token's label and a diff (docs/operations.md).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../core/limits.h"
#include "ctl_int.h"

#define CTL_RULES_TRIES    20 /* read-modify-write attempts before giving up */
#define CTL_RULES_BACKOFF_MS 10 /* after a conflict: a random wait up to attempt x this */

typedef void (*build_fn)(d11_buf *out, jw_span doc, void *arg);

static void put_member(d11_buf *out, bool *first, jw_span k, jw_span v)
{
    d11_buf_printf(out, "%s\"%.*s\":", *first ? "" : ",", (int)k.n, k.p);
    d11_buf_append(out, v.p, v.n);
    *first = false;
}

/* Members of obj (may be empty) except `skip`, written into out without braces. */
static void copy_except(d11_buf *out, bool *first, jw_span obj, const char *skip)
{
    if (obj.n == 0 || obj.p[0] != '{') return;
    const char *it = obj.p;
    jw_span k, v;
    while (jw_member(&it, obj.p + obj.n, &k, &v))
        if (!skip || !jw_key_is(k, skip)) put_member(out, first, k, v);
}

static int rules_edit(ctl_ctx *x, build_fn fn, void *arg, const char *what)
{
    d11_buf doc, out;
    d11_buf_init(&doc, 1024);
    d11_buf_init(&out, 1024);
    int ret = 1;
    for (int attempt = 0; attempt < CTL_RULES_TRIES; attempt++) {
        int st = ctl_http(x, "GET", "/admin/rules", NULL, 0, NULL);
        if (st < 0) goto done;
        if (st != 200) {
            ctl_report(x, "GET", "/admin/rules");
            goto done;
        }
        d11_buf_reset(&doc);
        d11_buf_append(&doc, x->c.body.data, x->c.body.len);
        jw_span d = {doc.data, doc.len}, ver;
        while (d.n && isspace((unsigned char)d.p[d.n - 1])) d.n--;
        if (!jw_get(d, "version", &ver)) {
            fprintf(stderr, "d11 ctl: GET /admin/rules: no version in the answer\n");
            goto done;
        }
        d11_buf_reset(&out);
        d11_buf_printf(&out, "{\"version\":%.*s", (int)ver.n, ver.p);
        fn(&out, d, arg);
        d11_buf_puts(&out, "}");
        st = ctl_http(x, "PUT", "/admin/rules", out.data, out.len, "Content-Type: application/json\r\n");
        if (st < 0) goto done;
        if (st == 409) {
            char code[64] = "";
            (void)d11_json_find_str(x->c.body.data, x->c.body.len, "code", code, sizeof code);
            if (!strcmp(code, "version_conflict")) { /* changed under us: read again, a little later */
                uint32_t r;
                d11_random_bytes(&r, sizeof r);
                usleep((useconds_t)(r % (uint32_t)((attempt + 1) * CTL_RULES_BACKOFF_MS) + 1) * 1000);
                continue;
            }
        }
        if (st != 200) {
            ctl_report(x, "PUT", "/admin/rules");
            goto done;
        }
        jw_span nd = {x->c.body.data, x->c.body.len}, nv;
        char vs[32] = "?";
        if (jw_get(nd, "version", &nv)) jw_text(nv, vs, sizeof vs);
        if (x->json) {
            fwrite(x->c.body.data, 1, x->c.body.len, stdout);
            if (x->c.body.len && x->c.body.data[x->c.body.len - 1] != '\n') putchar('\n');
        } else {
            printf("rules version %s: %s\n", vs, what);
        }
        ret = 0;
        goto done;
    }
    fprintf(stderr, "d11 ctl: the rules kept changing under us (%d version conflicts); try again\n",
            CTL_RULES_TRIES);
done:
    d11_buf_free(&doc);
    d11_buf_free(&out);
    return ret;
}

/* The document's members except `top` (and version/updated_at), then "top": value built by
 * sub(out, old value of top or an empty span, arg). */
typedef struct top_edit {
    const char *top;
    void (*sub)(d11_buf *out, jw_span old, void *arg);
    void *arg;
} top_edit;

static void build_top(d11_buf *out, jw_span doc, void *arg)
{
    top_edit *e = arg;
    const char *it = doc.p;
    jw_span k, v, old = {NULL, 0};
    while (jw_member(&it, doc.p + doc.n, &k, &v)) {
        if (jw_key_is(k, "version") || jw_key_is(k, "updated_at")) continue;
        if (jw_key_is(k, e->top)) {
            old = v;
            continue;
        }
        d11_buf_printf(out, ",\"%.*s\":", (int)k.n, k.p);
        d11_buf_append(out, v.p, v.n);
    }
    d11_buf_printf(out, ",\"%s\":", e->top);
    e->sub(out, old, e->arg);
}

static bool res_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!islower((unsigned char)s[i]) && s[i] != '.' && s[i] != '_') return false;
    return true;
}

/* ---- degrade ---- */

typedef struct kv_set {
    const char *key;
    const char *val; /* NULL: remove */
} kv_set;

static void sub_kv(d11_buf *out, jw_span old, void *arg)
{
    kv_set *s = arg;
    bool first = true;
    d11_buf_puts(out, "{");
    copy_except(out, &first, old, s->key);
    if (s->val) d11_buf_printf(out, "%s\"%s\":%s", first ? "" : ",", s->key, s->val);
    d11_buf_puts(out, "}");
}

int ctl_degrade(ctl_ctx *x, int nargs, char **args)
{
    if (nargs != 2 || (strcmp(args[0], "on") && strcmp(args[0], "off")))
        return ctl_usage_err("%s", "usage: degrade on|off RESOURCE (e.g. orders.pay)");
    if (!res_ok(args[1])) return ctl_usage_err("degrade: '%s' is not a resource name", args[1]);
    bool on = !strcmp(args[0], "on");
    kv_set s = {args[1], on ? "true" : "false"};
    top_edit e = {"degrade", sub_kv, &s};
    char what[128];
    snprintf(what, sizeof what, "degrade %s %s", args[1], on ? "on" : "off");
    return rules_edit(x, build_top, &e, what);
}

/* ---- flow ---- */

int ctl_flow(ctl_ctx *x, int nargs, char **args)
{
    if (nargs >= 2 && !strcmp(args[0], "clear") && nargs == 2) {
        if (!res_ok(args[1])) return ctl_usage_err("flow: '%s' is not a resource name", args[1]);
        kv_set s = {args[1], NULL};
        top_edit e = {"flow", sub_kv, &s};
        char what[128];
        snprintf(what, sizeof what, "flow limit of %s cleared", args[1]);
        return rules_edit(x, build_top, &e, what);
    }
    if (nargs < 2 || strcmp(args[0], "set"))
        return ctl_usage_err("%s", "usage: flow set RESOURCE --qps N --burst N | flow clear RESOURCE");
    if (!res_ok(args[1])) return ctl_usage_err("flow: '%s' is not a resource name", args[1]);
    uint64_t qps = 0, burst = 0;
    bool have_qps = false, have_burst = false;
    for (int i = 2; i < nargs; i++) {
        const char *a = args[i], *v = strchr(a, '=');
        size_t an = v ? (size_t)(v - a) : strlen(a);
        if (!v) v = i + 1 < nargs ? args[++i] : NULL;
        else v++;
        if (!v) return ctl_usage_err("flow: %s needs a value", a);
        uint64_t n;
        if (d11_parse_u64(v, strlen(v), 1000000000, &n) < 0 || n == 0)
            return ctl_usage_err("flow: expected a positive integer, got '%s'", v);
        if (an == 5 && !strncmp(a, "--qps", 5)) qps = n, have_qps = true;
        else if (an == 7 && !strncmp(a, "--burst", 7)) burst = n, have_burst = true;
        else return ctl_usage_err("flow: unknown flag '%s' (--qps, --burst)", a);
    }
    if (!have_qps) return ctl_usage_err("%s", "flow set: --qps is required");
    if (!have_burst) burst = qps;
    char val[96], what[160];
    snprintf(val, sizeof val, "{\"qps\":%llu,\"burst\":%llu}", (unsigned long long)qps, (unsigned long long)burst);
    kv_set s = {args[1], val};
    top_edit e = {"flow", sub_kv, &s};
    snprintf(what, sizeof what, "flow %s qps %llu burst %llu", args[1], (unsigned long long)qps,
             (unsigned long long)burst);
    return rules_edit(x, build_top, &e, what);
}

/* ---- deny-user ---- */

typedef struct deny_edit {
    uint64_t id;
    bool     add;
} deny_edit;

static void sub_deny(d11_buf *out, jw_span old, void *arg)
{
    deny_edit *d = arg;
    bool first = true;
    d11_buf_puts(out, "{");
    copy_except(out, &first, old, "deny_users");
    d11_buf_printf(out, "%s\"deny_users\":[", first ? "" : ",");
    jw_span arr;
    bool firstel = true, seen = false;
    if (old.n && jw_get(old, "deny_users", &arr) && arr.n && arr.p[0] == '[') {
        const char *it = arr.p;
        jw_span v;
        while (jw_elem(&it, arr.p + arr.n, &v)) {
            uint64_t id;
            if (d11_parse_u64(v.p, v.n, UINT64_MAX, &id) == 0 && id == d->id) {
                seen = true;
                if (!d->add) continue;
            }
            d11_buf_printf(out, "%s%.*s", firstel ? "" : ",", (int)v.n, v.p);
            firstel = false;
        }
    }
    if (d->add && !seen) d11_buf_printf(out, "%s%llu", firstel ? "" : ",", (unsigned long long)d->id);
    d11_buf_puts(out, "]}");
}

int ctl_deny_user(ctl_ctx *x, int nargs, char **args)
{
    if (nargs != 2 || (strcmp(args[0], "add") && strcmp(args[0], "remove")))
        return ctl_usage_err("%s", "usage: deny-user add|remove USER_ID");
    uint64_t id;
    if (d11_parse_u64(args[1], strlen(args[1]), (uint64_t)INT64_MAX, &id) < 0 || id == 0)
        return ctl_usage_err("deny-user: '%s' is not a user id (1..2^63-1)", args[1]);
    deny_edit d = {id, !strcmp(args[0], "add")};
    top_edit e = {"risk", sub_deny, &d};
    char what[96];
    snprintf(what, sizeof what, "user %llu %s the deny list", (unsigned long long)id,
             d.add ? "added to" : "removed from");
    return rules_edit(x, build_top, &e, what);
}

/* ---- rules patch ---- */

typedef struct patch {
    jw_span p;
} patch;

static bool is_null(jw_span v) { return v.n == 4 && !memcmp(v.p, "null", 4); }
static bool is_obj(jw_span v) { return v.n && v.p[0] == '{'; }

static void build_patch(d11_buf *out, jw_span doc, void *arg)
{
    patch *pa = arg;
    const char *it = doc.p;
    jw_span k, v, pv;
    while (jw_member(&it, doc.p + doc.n, &k, &v)) {
        if (jw_key_is(k, "version") || jw_key_is(k, "updated_at")) continue;
        char key[80];
        jw_text(k, key, sizeof key);
        if (!jw_get(pa->p, key, &pv)) {
            d11_buf_printf(out, ",\"%.*s\":", (int)k.n, k.p);
            d11_buf_append(out, v.p, v.n);
            continue;
        }
        if (is_null(pv)) continue; /* deleted */
        d11_buf_printf(out, ",\"%.*s\":", (int)k.n, k.p);
        if (is_obj(v) && is_obj(pv)) { /* one level deep: patch members win, null deletes */
            bool first = true;
            d11_buf_puts(out, "{");
            const char *i2 = v.p;
            jw_span k2, v2, p2;
            while (jw_member(&i2, v.p + v.n, &k2, &v2)) {
                char key2[80];
                jw_text(k2, key2, sizeof key2);
                if (!jw_get(pv, key2, &p2)) put_member(out, &first, k2, v2);
            }
            i2 = pv.p;
            while (jw_member(&i2, pv.p + pv.n, &k2, &v2))
                if (!is_null(v2)) put_member(out, &first, k2, v2);
            d11_buf_puts(out, "}");
        } else {
            d11_buf_append(out, pv.p, pv.n);
        }
    }
    it = pa->p.p;
    while (jw_member(&it, pa->p.p + pa->p.n, &k, &pv)) { /* keys new to the document */
        char key[80];
        jw_text(k, key, sizeof key);
        if (jw_key_is(k, "version") || jw_key_is(k, "updated_at") || is_null(pv) || jw_get(doc, key, &v)) continue;
        d11_buf_printf(out, ",\"%.*s\":", (int)k.n, k.p);
        d11_buf_append(out, pv.p, pv.n);
    }
}

int ctl_rules_patch(ctl_ctx *x, const char *text, size_t n)
{
    jw_span p = {text, n};
    while (p.n && isspace((unsigned char)*p.p)) p.p++, p.n--;
    while (p.n && isspace((unsigned char)p.p[p.n - 1])) p.n--;
    if (!is_obj(p) || jw_skip(p.p, p.p + p.n) != p.p + p.n) {
        fprintf(stderr, "d11 ctl: rules patch: the patch must be one JSON object\n");
        return 2;
    }
    patch pa = {p};
    return rules_edit(x, build_patch, &pa, "patched");
}
