/*
 * ctl_int.h — internals shared by the files of `d11 ctl` (ctl.c: flags, dispatch and the
 * plain request commands; ctl_rules.c: rule edits by read-modify-write; ctl_show.c:
 * tables; ctl_token.c: token list / revoke / create).
 *
 * jw_*: a walker over JSON texts the gateway produced (well-formed, any size: no token
 * limit, unlike core/json.h, which bounds client bodies). It never allocates; spans
 * point into the caller's text. Malformed input makes the iterators stop (return false).
 *
 * Thread: single-threaded CLI.
 */
#ifndef D11_CTL_INT_H
#define D11_CTL_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../bench/httpc.h"
#include "../core/util.h"

typedef struct ctl_ctx {
    d11_httpc   c;
    const char *auth;      /* "Authorization: Bearer ...\r\n" or "" */
    bool        json;      /* --json: machine output */
    bool        pretty;
    const char *data_dir;  /* --data / $D11_DATA / ./data (token verbs) */
} ctl_ctx;

/* One request; returns the HTTP status (c.body holds the body) or a negative error, which
 * it reports on stderr. body may be NULL. extra: more header lines or NULL. */
int ctl_http(ctl_ctx *x, const char *method, const char *path, const char *body, size_t blen,
             const char *extra);
/* Report a non-2xx answer on stderr ("d11 ctl: METHOD PATH -> 409 code: message"). */
void ctl_report(ctl_ctx *x, const char *method, const char *path);
int ctl_usage_err(const char *fmt, const char *arg);

/* ---- JSON walker ---- */
typedef struct jw_span {
    const char *p;
    size_t      n;
} jw_span;

/* Skip whitespace then one value starting at p; returns the end of the value or NULL. */
const char *jw_skip(const char *p, const char *end);
/* Iterate object members: *it starts at the object's '{'; returns false at the end. */
bool jw_member(const char **it, const char *end, jw_span *key, jw_span *val);
/* Iterate array elements: *it starts at '['. */
bool jw_elem(const char **it, const char *end, jw_span *val);
/* The value of key in the object v, or false. */
bool jw_get(jw_span obj, const char *key, jw_span *val);
bool jw_key_is(jw_span key, const char *s);
/* Value as text: strings without quotes (escapes left as they are), others as written. */
void jw_text(jw_span v, char *out, size_t cap);

/* ---- verbs ---- */
int ctl_degrade(ctl_ctx *x, int nargs, char **args);
int ctl_flow(ctl_ctx *x, int nargs, char **args);
int ctl_deny_user(ctl_ctx *x, int nargs, char **args);
int ctl_rules_patch(ctl_ctx *x, const char *patch, size_t n);
int ctl_show_cells(ctl_ctx *x);
int ctl_show_rules(ctl_ctx *x);
int ctl_products_list(ctl_ctx *x, int nargs, char **args);
int ctl_token(ctl_ctx *x, int nargs, char **args);
int ctl_chaos(ctl_ctx *x, int nargs, char **args); /* ctl_chaos.c */

#endif
