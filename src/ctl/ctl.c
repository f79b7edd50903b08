/*
 * ctl.c — `d11 ctl`: the operator's CLI over the gateway's admin API.
 *
 * One command = one HTTP request through the blocking client in bench/httpc.h. The
 * response body is printed on stdout as received (or indented with --pretty); the exit
 * status is 0 for a 2xx answer and 1 otherwise, with one line on stderr naming the
 * status and the error code from the body. Usage errors exit 2.
 *
 * Token: --token T, or --token-file F, or else $D11_TOKEN, or else $D11_TOKEN_FILE, or
 * else DATA/admin.token when it is readable (DATA: --data, $D11_DATA, ./data — the default
 * data directory of `d11 up`); with none, requests go without Authorization (enough for
 * health/ready/metrics). URL: --url, else $D11_URL, else http://127.0.0.1:8080.
 *
 * Output: tables for people by default (cells, rules get, products list, token list),
 * the gateway's JSON with --json for scripts. The rule verbs (degrade, flow, deny-user,
 * rules patch) live in ctl_rules.c, the tables in ctl_show.c, tokens in ctl_token.c.
 *
 * The command -> route table below is the one place that names admin routes; keep it in
 * step with the gateway's router.
 */

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../bench/httpc.h"
#include "../cmd.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "ctl_int.h"

#define CTL_DEFAULT_URL "http://127.0.0.1:8080"
#define CTL_BODY_BYTES_MAX (1 << 20)
#define CTL_HEADERS_BYTES_MAX 4096 /* request --header lines together */

static const char ctl_usage[] =
    "usage: d11 ctl [--url URL] [--token T | --token-file F] [--data DIR] [--timeout MS] [--json]\n"
    "               [--pretty] COMMAND\n"
    "\n"
    "commands\n"
    "  health                    GET  /healthz        process is up\n"
    "  ready                     GET  /readyz         every cell answers\n"
    "  cells                     GET  /admin/cells    table of the parts and their state\n"
    "  routing                   GET  /admin/routing  slot -> cell table and its version\n"
    "  ledger SKU                GET  /admin/ledger/SKU  inventory ledger of one SKU\n"
    "                                                 (total, sold, held per cell, free)\n"
    "  rules get                 GET  /admin/rules    the rules in force (table)\n"
    "  rules put FILE            PUT  /admin/rules    replace the WHOLE document (FILE: JSON, - = stdin)\n"
    "  rules patch JSON|@FILE|-  merge into the rules: keys given replace, objects merged one\n"
    "                            level deep, null deletes; everything else is kept\n"
    "  rules rollback            POST /admin/rules/rollback  back to the previous version\n"
    "  degrade on|off RES        switch a resource off (503 degraded) or back on\n"
    "  flow set RES --qps N [--burst N] | flow clear RES   a flow limit\n"
    "  deny-user add|remove ID   the risk deny list\n"
    "                            (rule edits: read-modify-write with the version, retried on\n"
    "                            a conflict; the gateway logs who and the diff)\n"
    "  products list [--category C] [--q TEXT] [--limit N] [--after SKU] [--all]\n"
    "  token list | token revoke LABEL | token create --scopes S [--label L] [--expires 7d]\n"
    "                            tokens of the local data directory (--data)\n"
    "  log-level [LEVEL [TARGET]] GET/PUT /admin/log-level (TARGET: all, gateway, center, cells, cell:N)\n"
    "  metrics                   GET  /metrics        Prometheus text\n"
    "  chaos create|list|get|delete ...   live chaos experiments (POST/GET/DELETE /admin/chaos)\n"
    "  chaos slow-commits --ms M --timeout S [--cell N]   store.commit delay experiment\n"
    "  chaos kill-cell N | pause-cell N --seconds S | fill-disk --up-to PCT%|BYTES --timeout S\n"
    "                            process drills on this host (pids from DATA/cell-N.lock)\n"
    "  request [--header 'K: V']... METHOD PATH [BODY]  any request; BODY is text, @FILE, or -\n"
    "\n"
    "flags\n"
    "  --url URL          gateway base URL (default $D11_URL, else " CTL_DEFAULT_URL ")\n"
    "  --token T          bearer token\n"
    "  --token-file F     read the token from F (default: $D11_TOKEN, else $D11_TOKEN_FILE,\n"
    "                     else DATA/admin.token if readable)\n"
    "  --data DIR         data directory (default $D11_DATA, else ./data)\n"
    "  --timeout MS       whole request timeout (default 5000)\n"
    "  --json             machine output (the gateway's JSON) instead of tables\n"
    "  --pretty           indent JSON answers\n"
    "\n"
    "exit status: 0 on a 2xx answer; 1 otherwise (the error line goes to stderr, the body to\n"
    "stdout); 2 on a usage error.\n";

static int usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "d11 ctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see d11 ctl --help)\n");
    return 2;
}

int ctl_usage_err(const char *fmt, const char *arg) { return usage(fmt, arg); }

static int read_body(const char *src, char **out, size_t *len);

int ctl_http(ctl_ctx *x, const char *method, const char *path, const char *body, size_t blen, const char *extra)
{
    char hdr[D11_HTTPC_TOKEN_BYTES_MAX + 256];
    snprintf(hdr, sizeof hdr, "%s%sAccept: application/json\r\n", x->auth, extra ? extra : "");
    int rc = d11_httpc_do(&x->c, method, path, hdr, body, blen);
    if (rc < 0) {
        fprintf(stderr, "d11 ctl: %s %s on %s: %s\n", method, path, x->c.url.hostport, d11_strerror(rc));
        return rc;
    }
    return x->c.status;
}

void ctl_report(ctl_ctx *x, const char *method, const char *path)
{
    const char *b = x->c.body.data ? x->c.body.data : "";
    char code[64] = "", msg[256] = "";
    (void)d11_json_find_str(b, x->c.body.len, "code", code, sizeof code);
    (void)d11_json_find_str(b, x->c.body.len, "message", msg, sizeof msg);
    fprintf(stderr, "d11 ctl: %s %s -> %d%s%s%s%s\n", method, path, x->c.status, code[0] ? " " : "", code,
            msg[0] ? ": " : "", msg);
}

/* Commands built on ctl_http (ctl_rules.c, ctl_show.c, ctl_token.c). -1: not one of them. */
static int run_verb(ctl_ctx *x, const char *cmd, int nargs, char **args)
{
    if (!strcmp(cmd, "degrade")) return ctl_degrade(x, nargs, args);
    if (!strcmp(cmd, "flow")) return ctl_flow(x, nargs, args);
    if (!strcmp(cmd, "deny-user")) return ctl_deny_user(x, nargs, args);
    if (!strcmp(cmd, "products")) return ctl_products_list(x, nargs, args);
    if (!strcmp(cmd, "token")) return ctl_token(x, nargs, args);
    if (!strcmp(cmd, "chaos")) return ctl_chaos(x, nargs, args);
    if (!strcmp(cmd, "cells") && nargs == 0 && !x->pretty) return ctl_show_cells(x);
    if (!strcmp(cmd, "rules") && nargs == 1 && !strcmp(args[0], "get") && !x->pretty) return ctl_show_rules(x);
    if (!strcmp(cmd, "rules") && nargs == 2 && !strcmp(args[0], "patch")) {
        char *body = NULL;
        size_t n = 0;
        const char *src = args[1];
        if (src[0] == '@' || !strcmp(src, "-")) {
            int rc = read_body(src[0] == '@' ? src + 1 : "-", &body, &n);
            if (rc < 0) {
                fprintf(stderr, "d11 ctl: cannot read %s: %s\n", src, d11_strerror(rc));
                return 1;
            }
        }
        int r = ctl_rules_patch(x, body ? body : src, body ? n : strlen(src));
        free(body);
        return r;
    }
    return -1;
}

static bool sku_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > D11_SKU_BYTES_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-') return false;
    return true;
}

/* Read FILE, "-" (stdin) into a malloc'ed string. Returns 0 or -errno / D11_ETOOBIG. */
static int read_body(const char *src, char **out, size_t *len)
{
    if (strcmp(src, "-") != 0) {
        int rc = d11_read_file(src, out, len);
        if (rc == 0 && *len > CTL_BODY_BYTES_MAX) {
            free(*out);
            return D11_ETOOBIG;
        }
        return rc;
    }
    d11_buf b;
    d11_buf_init(&b, 4096);
    for (;;) {
        d11_buf_reserve(&b, 4096);
        ssize_t r = read(0, b.data + b.len, b.cap - b.len - 1);
        if (r == -1 && errno == EINTR) continue;
        if (r == -1) {
            int e = -errno;
            d11_buf_free(&b);
            return e;
        }
        if (r == 0) break;
        b.len += (size_t)r;
        if (b.len > CTL_BODY_BYTES_MAX) {
            d11_buf_free(&b);
            return D11_ETOOBIG;
        }
    }
    b.data[b.len] = 0;
    *out = b.data;
    *len = b.len;
    return 0;
}

/* Indent a JSON text (string-aware; anything else passes through unchanged). */
static void print_pretty(const char *s, size_t n)
{
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            putchar(c);
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
            continue;
        }
        switch (c) {
        case '"':
            in_str = true;
            putchar(c);
            break;
        case '{':
        case '[': {
            /* keep empty {} and [] on one line */
            size_t j = i + 1;
            while (j < n && isspace((unsigned char)s[j])) j++;
            if (j < n && (s[j] == '}' || s[j] == ']')) {
                putchar(c);
                putchar(s[j]);
                i = j;
                break;
            }
            putchar(c);
            depth++;
            printf("\n%*s", depth * 2, "");
            break;
        }
        case '}':
        case ']':
            depth = depth > 0 ? depth - 1 : 0;
            printf("\n%*s%c", depth * 2, "", c);
            break;
        case ',':
            printf(",\n%*s", depth * 2, "");
            break;
        case ':':
            fputs(": ", stdout);
            break;
        case ' ':
        case '\t':
        case '\n':
        case '\r':
            break;
        default:
            putchar(c);
        }
    }
    putchar('\n');
}

int d11_ctl_main(int argc, char **argv)
{
    const char *url_s = getenv("D11_URL"), *token = NULL, *token_file = NULL;
    const char *data_dir = getenv("D11_DATA");
    if (!url_s || !*url_s) url_s = CTL_DEFAULT_URL;
    if (!data_dir || !*data_dir) data_dir = "./data";
    int timeout_ms = 5000;
    bool pretty = false, json = false;
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help")) {
            fputs(ctl_usage, stdout);
            return 0;
        }
        if (!strcmp(a, "--pretty")) {
            pretty = true;
            continue;
        }
        if (!strcmp(a, "--json")) {
            json = true;
            continue;
        }
        const char *eq = strchr(a, '=');
        char name[32];
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) return usage("unknown flag '%s'", a);
        memcpy(name, a, nl);
        name[nl] = 0;
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) return usage("%s needs a value", name);
        if (!strcmp(name, "--url")) url_s = val;
        else if (!strcmp(name, "--token")) token = val;
        else if (!strcmp(name, "--token-file")) token_file = val;
        else if (!strcmp(name, "--data")) data_dir = val;
        else if (!strcmp(name, "--timeout")) {
            uint64_t v;
            if (d11_parse_u64(val, strlen(val), 600000, &v) < 0 || v == 0)
                return usage("--timeout: expected milliseconds 1..600000, got '%s'", val);
            timeout_ms = (int)v;
        } else return usage("unknown flag '%s'", name);
    }
    if (i >= argc) return usage("%s", "missing COMMAND");
    const char *cmd = argv[i++];
    int nargs = argc - i;
    char **args = argv + i;

    char err[256];
    d11_url url;
    if (d11_url_parse(url_s, &url, err, sizeof err) < 0) return usage("--url: %s", err);
    if (token && token_file) return usage("%s", "give --token or --token-file, not both");
    if (!token && !token_file) {
        const char *env = getenv("D11_TOKEN"), *envf = getenv("D11_TOKEN_FILE");
        if (env && *env) token = env;
        else if (envf && *envf) token_file = envf;
        else {
            static char deflt[1100];
            snprintf(deflt, sizeof deflt, "%s/admin.token", data_dir);
            if (access(deflt, R_OK) == 0) token_file = deflt;
        }
    }
    char tok[D11_HTTPC_TOKEN_BYTES_MAX + 1];
    if (d11_httpc_token_load(token, token_file, tok, sizeof tok, err, sizeof err) < 0) {
        fprintf(stderr, "d11 ctl: %s\n", err);
        return token_file ? 1 : 2;
    }

    /* ---- verbs of their own (they may make several requests) ---- */
    {
        char authh[D11_HTTPC_TOKEN_BYTES_MAX + 32] = "";
        if (tok[0]) snprintf(authh, sizeof authh, "Authorization: Bearer %s\r\n", tok);
        ctl_ctx x = {.auth = authh, .json = json, .pretty = pretty, .data_dir = data_dir};
        signal(SIGPIPE, SIG_IGN);
        d11_httpc_init(&x.c, &url, timeout_ms);
        int r = run_verb(&x, cmd, nargs, args);
        d11_httpc_release(&x.c);
        explicit_bzero(authh, sizeof authh);
        if (r >= 0) return r;
    }

    /* ---- command -> request ---- */
    const char *method = "GET";
    char path[D11_HTTP_URL_BYTES_MAX];
    char *body = NULL;
    size_t body_len = 0;
    bool json_body = false;
    char extra_hdrs[CTL_HEADERS_BYTES_MAX] = ""; /* request --header lines */
    size_t extra_len = 0;
    bool has_ctype = false; /* one of them is Content-Type */
#define NARGS(n, what)                                                                   \
    do {                                                                                 \
        if (nargs != (n)) return usage("%s", what);                                      \
    } while (0)
    if (!strcmp(cmd, "health")) {
        NARGS(0, "usage: health");
        snprintf(path, sizeof path, "/healthz");
    } else if (!strcmp(cmd, "ready")) {
        NARGS(0, "usage: ready");
        snprintf(path, sizeof path, "/readyz");
    } else if (!strcmp(cmd, "cells")) {
        NARGS(0, "usage: cells");
        snprintf(path, sizeof path, "/admin/cells");
    } else if (!strcmp(cmd, "routing")) {
        NARGS(0, "usage: routing");
        snprintf(path, sizeof path, "/admin/routing");
    } else if (!strcmp(cmd, "metrics")) {
        NARGS(0, "usage: metrics");
        snprintf(path, sizeof path, "/metrics");
    } else if (!strcmp(cmd, "ledger")) {
        NARGS(1, "usage: ledger SKU");
        if (!sku_ok(args[0])) return usage("ledger: '%s' is not a SKU (1-64 of [A-Za-z0-9_.-])", args[0]);
        snprintf(path, sizeof path, "/admin/ledger/%s", args[0]);
    } else if (!strcmp(cmd, "rules")) {
        if (nargs < 1) return usage("%s", "usage: rules get | rules put FILE | rules rollback");
        if (!strcmp(args[0], "get")) {
            NARGS(1, "usage: rules get");
            snprintf(path, sizeof path, "/admin/rules");
        } else if (!strcmp(args[0], "put")) {
            NARGS(2, "usage: rules put FILE");
            int rc = read_body(args[1], &body, &body_len);
            if (rc < 0) {
                fprintf(stderr, "d11 ctl: cannot read %s: %s\n", args[1], d11_strerror(rc));
                return 1;
            }
            method = "PUT";
            json_body = true;
            snprintf(path, sizeof path, "/admin/rules");
        } else if (!strcmp(args[0], "rollback")) {
            NARGS(1, "usage: rules rollback");
            method = "POST";
            snprintf(path, sizeof path, "/admin/rules/rollback");
        } else {
            return usage("rules: unknown action '%s' (get, put, rollback)", args[0]);
        }
    } else if (!strcmp(cmd, "log-level")) {
        if (nargs > 2)
            return usage("%s", "usage: log-level [debug|info|warn|error [all|gateway|center|cells|cell:N]]");
        snprintf(path, sizeof path, "/admin/log-level");
        if (nargs >= 1) {
            const char *target = nargs == 2 ? args[1] : "all";
            for (const char *q = args[0]; *q; q++)
                if (!isalpha((unsigned char)*q)) return usage("log-level: bad level '%s'", args[0]);
            for (const char *q = target; *q; q++)
                if (!isalnum((unsigned char)*q) && *q != ':') return usage("log-level: bad target '%s'", target);
            method = "PUT";
            json_body = true;
            body_len = strlen(args[0]) + strlen(target) + 28;
            body = malloc(body_len + 1);
            if (!body) d11_fatal("out of memory");
            snprintf(body, body_len + 1, "{\"level\":\"%s\",\"target\":\"%s\"}", args[0], target);
            body_len = strlen(body);
        }
    } else if (!strcmp(cmd, "request")) {
        while (nargs >= 2 && !strcmp(args[0], "--header")) {
            const char *h = args[1], *colon = strchr(h, ':');
            bool ok = colon && colon > h && strlen(h) < 1024;
            for (const char *q = h; ok && *q; q++) ok = (*q >= 0x20 && *q < 0x7f) || *q == '\t';
            for (const char *q = h; ok && q < colon; q++) ok = *q > 0x20 && *q != ':';
            if (!ok) return usage("request: --header wants 'Name: value' (printable, one line), got '%s'", h);
            int w = snprintf(extra_hdrs + extra_len, sizeof extra_hdrs - extra_len, "%s\r\n", h);
            if (w < 0 || (size_t)w >= sizeof extra_hdrs - extra_len)
                return usage("request: --header lines exceed %s bytes in total", "4096");
            extra_len += (size_t)w;
            if (!strncasecmp(h, "content-type:", 13)) has_ctype = true;
            args += 2;
            nargs -= 2;
        }
        if (nargs < 2 || nargs > 3) return usage("%s", "usage: request [--header 'K: V']... METHOD PATH [BODY]");
        method = args[0];
        bool ok = method[0] != 0 && strlen(method) <= 16;
        for (const char *p = method; ok && *p; p++) ok = isupper((unsigned char)*p);
        if (!ok) return usage("request: METHOD must be uppercase letters, got '%s'", method);
        const char *p = args[1];
        ok = p[0] == '/' && strlen(p) < sizeof path;
        for (const char *q = p; ok && *q; q++) ok = *q > 0x20 && *q < 0x7f;
        if (!ok) return usage("request: PATH must start with / and be printable ASCII, got '%s'", p);
        snprintf(path, sizeof path, "%s", p);
        if (nargs == 3) {
            const char *src = args[2];
            if (src[0] == '@' || !strcmp(src, "-")) {
                int rc = read_body(src[0] == '@' ? src + 1 : "-", &body, &body_len);
                if (rc < 0) {
                    fprintf(stderr, "d11 ctl: cannot read %s: %s\n", src, d11_strerror(rc));
                    return 1;
                }
            } else {
                body_len = strlen(src);
                body = malloc(body_len + 1);
                if (!body) d11_fatal("out of memory");
                memcpy(body, src, body_len + 1);
            }
            json_body = true;
        }
    } else {
        return usage("unknown command '%s'", cmd);
    }
#undef NARGS

    d11_buf hdr;
    d11_buf_init(&hdr, 256);
    if (tok[0]) d11_buf_printf(&hdr, "Authorization: Bearer %s\r\n", tok);
    if (json_body && !has_ctype)
        d11_buf_puts(&hdr, "Content-Type: application/json\r\n");
    if (extra_len) d11_buf_append(&hdr, extra_hdrs, extra_len);
    d11_buf_puts(&hdr, "Accept: application/json\r\n");

    signal(SIGPIPE, SIG_IGN);
    d11_httpc c;
    d11_httpc_init(&c, &url, timeout_ms);
    int rc = d11_httpc_do(&c, method, path, hdr.data, body, body_len);
    int ret;
    if (rc < 0) {
        fprintf(stderr, "d11 ctl: %s %s on %s: %s\n", method, path, url.hostport, d11_strerror(rc));
        ret = 1;
    } else {
        const char *b = c.body.data ? c.body.data : "";
        bool is_json = strstr(c.content_type, "json") != NULL;
        if (pretty && is_json) print_pretty(b, c.body.len);
        else if (c.body.len) {
            fwrite(b, 1, c.body.len, stdout);
            if (b[c.body.len - 1] != '\n') putchar('\n');
        }
        fflush(stdout);
        if (c.status >= 200 && c.status < 300) {
            ret = 0;
        } else {
            char code[64] = "", msg[256] = "";
            (void)d11_json_find_str(b, c.body.len, "code", code, sizeof code);
            (void)d11_json_find_str(b, c.body.len, "message", msg, sizeof msg);
            fprintf(stderr, "d11 ctl: %s %s -> %d%s%s%s%s\n", method, path, c.status,
                    code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
            ret = 1;
        }
    }
    d11_httpc_release(&c);
    d11_buf_free(&hdr);
    free(body);
    return ret;
}
