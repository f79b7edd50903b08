/*
 * ctl_token.c — `d11 ctl token list | revoke LABEL | create --scopes S [--label L]
 * [--expires DUR]`: the API tokens of a data directory (--data, $D11_DATA, ./data).
 *
 * Tokens live only as hashes in DATA/tokens (gateway/auth.h); gateways reload the file
 * within a second, so a revoked token is refused (401) from then on and a created one
 * accepted. Revoke rewrites the file atomically without the lines of that label
 * (d11_write_file_atomic); an expiring token carries "exp=<unix seconds>" on its line.
 * These verbs work on the local files, not over HTTP: run them where the data is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../gateway/auth.h"
#include "ctl_int.h"

static int tokens_read(const char *data, char **text, size_t *n, char *path, size_t cap)
{
    int w = snprintf(path, cap, "%s/tokens", data);
    if (w < 0 || (size_t)w >= cap) return -ENAMETOOLONG;
    int rc = d11_read_file(path, text, n);
    if (rc == -ENOENT) {
        *text = NULL;
        *n = 0;
        return 0;
    }
    return rc;
}

/* The fields of one line: hash, scopes, label, expiry (0 = never). false if malformed. */
static bool split(const char *l, size_t ln, char *hash, char *scopes, char *label, int64_t *exp)
{
    char buf[400];
    if (ln >= sizeof buf || ln < 66) return false;
    memcpy(buf, l, ln);
    buf[ln] = 0;
    char *save = NULL, *f[4] = {0};
    int nf = 0;
    for (char *t = strtok_r(buf, " ", &save); t && nf < 4; t = strtok_r(NULL, " ", &save)) f[nf++] = t;
    if (nf < 2 || strlen(f[0]) != 64) return false;
    snprintf(hash, 65, "%s", f[0]);
    snprintf(scopes, 64, "%s", f[1]);
    snprintf(label, D11_TOKEN_LABEL_BYTES_MAX + 1, "%s", nf >= 3 ? f[2] : "");
    *exp = 0;
    if (nf == 4 && !strncmp(f[3], "exp=", 4)) *exp = strtoll(f[3] + 4, NULL, 10);
    return true;
}

static int token_list(ctl_ctx *x)
{
    char path[1200], *text;
    size_t n;
    int rc = tokens_read(x->data_dir, &text, &n, path, sizeof path);
    if (rc < 0) {
        fprintf(stderr, "d11 ctl: cannot read %s: %s\n", path, d11_strerror(rc));
        return 1;
    }
    int64_t now = d11_wall_ms() / 1000;
    if (x->json) printf("{\"tokens\":[");
    else printf("%-24s %-36s %-14s %s\n", "LABEL", "SCOPES", "HASH", "EXPIRES");
    bool first = true;
    for (size_t pos = 0; pos < n;) {
        size_t end = pos;
        while (end < n && text[end] != '\n') end++;
        char hash[65], scopes[64], label[D11_TOKEN_LABEL_BYTES_MAX + 1];
        int64_t exp;
        if (end > pos && text[pos] != '#' && split(text + pos, end - pos, hash, scopes, label, &exp)) {
            char when[40] = "never";
            if (exp) {
                time_t t = (time_t)exp;
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
                if (exp <= now) {
                    size_t wn = strlen(when);
                    snprintf(when + wn, sizeof when - wn, " (expired)");
                }
            }
            if (x->json)
                printf("%s{\"label\":\"%s\",\"scopes\":\"%s\",\"hash\":\"%.12s\",\"expires\":%lld,\"expired\":%s}",
                       first ? "" : ",", label, scopes, hash, (long long)exp, exp && exp <= now ? "true" : "false");
            else
                printf("%-24s %-36s %.12s…  %s\n", label, scopes, hash, when);
            first = false;
        }
        pos = end + 1;
    }
    if (x->json) printf("]}\n");
    free(text);
    return 0;
}

static int token_revoke(ctl_ctx *x, const char *label)
{
    char path[1200], *text;
    size_t n;
    int rc = tokens_read(x->data_dir, &text, &n, path, sizeof path);
    if (rc < 0 || !text) {
        fprintf(stderr, "d11 ctl: cannot read %s: %s\n", path, rc < 0 ? d11_strerror(rc) : "no tokens file");
        return 1;
    }
    d11_buf out;
    d11_buf_init(&out, n + 1);
    int removed = 0;
    for (size_t pos = 0; pos < n;) {
        size_t end = pos;
        while (end < n && text[end] != '\n') end++;
        char hash[65], scopes[64], lb[D11_TOKEN_LABEL_BYTES_MAX + 1];
        int64_t exp;
        if (end > pos && split(text + pos, end - pos, hash, scopes, lb, &exp) && !strcmp(lb, label)) removed++;
        else if (end > pos) {
            d11_buf_append(&out, text + pos, end - pos);
            d11_buf_puts(&out, "\n");
        }
        pos = end + 1;
    }
    explicit_bzero(text, n);
    free(text);
    int ret = 0;
    if (removed == 0) {
        fprintf(stderr, "d11 ctl: no token labelled '%s' in %s\n", label, path);
        ret = 1;
    } else if ((rc = d11_write_file_atomic(path, out.data ? out.data : "", out.len, 0600)) < 0) {
        fprintf(stderr, "d11 ctl: cannot write %s: %s\n", path, d11_strerror(rc));
        ret = 1;
    } else if (x->json) {
        printf("{\"revoked\":%d,\"label\":\"%s\"}\n", removed, label);
    } else {
        printf("revoked %d token%s labelled %s (gateways refuse it within a second)\n", removed,
               removed == 1 ? "" : "s", label);
    }
    d11_buf_free(&out);
    return ret;
}

/* "90s", "30m", "12h", "7d" or plain seconds -> seconds; -1 when malformed. */
static int64_t parse_dur(const char *s)
{
    size_t n = strlen(s);
    if (n == 0) return -1;
    int64_t mul = 1;
    char u = s[n - 1];
    if (u == 's' || u == 'm' || u == 'h' || u == 'd') {
        mul = u == 's' ? 1 : u == 'm' ? 60 : u == 'h' ? 3600 : 86400;
        n--;
    }
    uint64_t v;
    if (d11_parse_u64(s, n, 100ull * 365 * 86400, &v) < 0 || v == 0) return -1;
    return (int64_t)v * mul;
}

static int token_create(ctl_ctx *x, int nargs, char **args)
{
    const char *scopes = NULL, *label = "token";
    int64_t ttl = 0;
    for (int i = 0; i < nargs; i++) {
        const char *a = args[i];
        if (i + 1 >= nargs) return ctl_usage_err("token create: %s needs a value", a);
        const char *v = args[++i];
        if (!strcmp(a, "--scopes")) scopes = v;
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--expires")) {
            if ((ttl = parse_dur(v)) < 0)
                return ctl_usage_err("token create: --expires wants 90s, 30m, 12h, 7d or seconds, got '%s'", v);
        } else return ctl_usage_err("token create: unknown flag '%s'", a);
    }
    if (!scopes) return ctl_usage_err("%s", "token create: --scopes is required");
    uint32_t sc;
    if (d11_scopes_parse(scopes, strlen(scopes), &sc) < 0)
        return ctl_usage_err("token create: bad --scopes '%s' (read, orders, products, stress, admin)", scopes);
    int64_t exp = ttl ? d11_wall_ms() / 1000 + ttl : 0;
    char tok[D11_TOKEN_LEN + 1];
    int rc = d11_token_create_exp(x->data_dir, sc, label, exp, tok);
    if (rc == -EINVAL) return ctl_usage_err("token create: bad --label '%s' (1-64 of [A-Za-z0-9_.-])", label);
    if (rc < 0) {
        fprintf(stderr, "d11 ctl: cannot create a token in %s: %s\n", x->data_dir, d11_strerror(rc));
        return 1;
    }
    if (x->json) printf("{\"token\":\"%s\",\"label\":\"%s\",\"expires\":%lld}\n", tok, label, (long long)exp);
    else printf("%s\n", tok);
    explicit_bzero(tok, sizeof tok);
    return 0;
}

int ctl_token(ctl_ctx *x, int nargs, char **args)
{
    if (nargs >= 1 && !strcmp(args[0], "list") && nargs == 1) return token_list(x);
    if (nargs == 2 && !strcmp(args[0], "revoke")) return token_revoke(x, args[1]);
    if (nargs >= 1 && !strcmp(args[0], "create")) return token_create(x, nargs - 1, args + 1);
    return ctl_usage_err("%s", "usage: token list | token revoke LABEL | token create --scopes S [--label L] "
                               "[--expires DUR]");
}
