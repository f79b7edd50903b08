/*
 * ctl.c — `d11 ctl`: the operator's CLI over the gateway's admin API.
 *
 * One command = one HTTP request through the blocking client in bench/httpc.h. The
 * response body is printed on stdout as received (or indented with --pretty); the exit
 * status is 0 for a 2xx answer and 1 otherwise, with one line on stderr naming the
 * status and the error code from the body. Usage errors exit 2.
 *
 * Token: --token T, or --token-file F, or else $D11_TOKEN, or else ./data/admin.token
 * when it is readable (the default data directory of `d11 up`); with none, requests go
 * without Authorization (enough for health/ready/metrics).
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
#include <unistd.h>

#include "../bench/httpc.h"
#include "../cmd.h"
#include "../core/limits.h"
#include "../core/util.h"

#define CTL_DEFAULT_URL "http://127.0.0.1:8080"
#define CTL_DEFAULT_TOKEN_FILE "./data/admin.token"
#define CTL_BODY_BYTES_MAX (1 << 20)

static const char ctl_usage[] =
    "usage: d11 ctl [--url URL] [--token T | --token-file F] [--timeout MS] [--pretty] COMMAND\n"
    "\n"
    "commands\n"
    "  health                    GET  /healthz        process is up\n"
    "  ready                     GET  /readyz         every cell answers\n"
    "  cells                     GET  /admin/cells    cells, their slots and state\n"
    "  routing                   GET  /admin/routing  slot -> cell table and its version\n"
    "  ledger SKU                GET  /admin/ledger/SKU  inventory ledger of one SKU\n"
    "                                                 (total, sold, held per cell, free)\n"
    "  rules get                 GET  /admin/rules    current dynamic rules document\n"
    "  rules put FILE            PUT  /admin/rules    replace the rules (FILE: JSON, - = stdin)\n"
    "  rules rollback            POST /admin/rules/rollback  back to the previous version\n"
    "  metrics                   GET  /metrics        Prometheus text\n"
    "  request METHOD PATH [BODY]  any request; BODY is text, @FILE, or - for stdin\n"
    "\n"
    "flags\n"
    "  --url URL          gateway base URL (default " CTL_DEFAULT_URL ")\n"
    "  --token T          bearer token\n"
    "  --token-file F     read the token from F (default: $D11_TOKEN, else\n"
    "                     " CTL_DEFAULT_TOKEN_FILE " if readable)\n"
    "  --timeout MS       whole request timeout (default 5000)\n"
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
    const char *url_s = CTL_DEFAULT_URL, *token = NULL, *token_file = NULL;
    int timeout_ms = 5000;
    bool pretty = false;
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
        const char *env = getenv("D11_TOKEN");
        if (env && *env) token = env;
        else if (access(CTL_DEFAULT_TOKEN_FILE, R_OK) == 0) token_file = CTL_DEFAULT_TOKEN_FILE;
    }
    char tok[D11_HTTPC_TOKEN_BYTES_MAX + 1];
    if (d11_httpc_token_load(token, token_file, tok, sizeof tok, err, sizeof err) < 0) {
        fprintf(stderr, "d11 ctl: %s\n", err);
        return token_file ? 1 : 2;
    }

    /* ---- command -> request ---- */
    const char *method = "GET";
    char path[D11_HTTP_URL_BYTES_MAX];
    char *body = NULL;
    size_t body_len = 0;
    bool json_body = false;
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
    } else if (!strcmp(cmd, "request")) {
        if (nargs < 2 || nargs > 3) return usage("%s", "usage: request METHOD PATH [BODY]");
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
    if (json_body) d11_buf_puts(&hdr, "Content-Type: application/json\r\n");
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
