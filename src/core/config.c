/*
 * config.c — defaults, d11.conf parsing and flag parsing (see config.h).
 */

#include "config.h"
#include "util.h"
#include "limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void d11_config_defaults(d11_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data_dir, sizeof c->data_dir, "./data");
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:8080");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    c->cells = n < 2 ? 2 : (int)(n > D11_CELLS_MAX ? D11_CELLS_MAX : n);
    c->threads = (int)(n > 64 ? 64 : n);
    c->cell_id = -1;
    c->durability = D11_DUR_SYNC;
    c->async_flush_ms = 10;
    c->order_ttl_ms = 15 * 60 * 1000;
    c->request_timeout_ms = D11_RPC_DEADLINE_MS_DEFAULT;
    c->grant_chunk_max = 1000;
    c->soldout_cache_ms = 100;
    c->log_level = D11_LOG_INFO;
}

const char *d11_durability_name(int d)
{
    return d == D11_DUR_SYNC ? "sync" : d == D11_DUR_ASYNC ? "async" : "none";
}

static int set_int(const char *key, const char *val, int64_t lo, int64_t hi, int64_t *out,
                   char *err, size_t errlen)
{
    uint64_t v;
    if (d11_parse_u64(val, strlen(val), (uint64_t)hi, &v) < 0 || (int64_t)v < lo) {
        snprintf(err, errlen, "%s: expected an integer in %lld..%lld, got '%s'", key,
                 (long long)lo, (long long)hi, val);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int d11_config_set(d11_config *c, const char *key_in, const char *val, char *err, size_t errlen)
{
    for (const char *p = val; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            snprintf(err, errlen, "%s: control character in value", key_in);
            return -1;
        }
    char key[64];
    size_t kn = strlen(key_in);
    if (kn >= sizeof key) {
        snprintf(err, errlen, "unknown setting '%.40s...'", key_in);
        return -1;
    }
    for (size_t i = 0; i <= kn; i++) key[i] = key_in[i] == '_' ? '-' : key_in[i];
    int64_t v;
    if (!strcmp(key, "data")) {
        if (!val[0] || strlen(val) >= sizeof c->data_dir - 64) {
            snprintf(err, errlen, "data: path empty or too long");
            return -1;
        }
        snprintf(c->data_dir, sizeof c->data_dir, "%s", val);
    } else if (!strcmp(key, "listen")) {
        const char *colon = strrchr(val, ':');
        uint64_t port;
        if (!colon || strlen(val) >= sizeof c->listen ||
            d11_parse_u64(colon + 1, strlen(colon + 1), 65535, &port) < 0) {
            snprintf(err, errlen, "listen: expected HOST:PORT, got '%s'", val);
            return -1;
        }
        snprintf(c->listen, sizeof c->listen, "%s", val);
    } else if (!strcmp(key, "cells")) {
        if (set_int(key, val, 1, D11_CELLS_MAX, &v, err, errlen)) return -1;
        c->cells = (int)v;
    } else if (!strcmp(key, "threads")) {
        if (set_int(key, val, 1, 64, &v, err, errlen)) return -1;
        c->threads = (int)v;
    } else if (!strcmp(key, "id")) {
        if (set_int(key, val, 0, D11_CELLS_MAX - 1, &v, err, errlen)) return -1;
        c->cell_id = (int)v;
    } else if (!strcmp(key, "durability")) {
        if (!strcmp(val, "sync")) c->durability = D11_DUR_SYNC;
        else if (!strcmp(val, "async")) c->durability = D11_DUR_ASYNC;
        else if (!strcmp(val, "none")) c->durability = D11_DUR_NONE;
        else {
            snprintf(err, errlen, "durability: expected sync, async or none, got '%s'", val);
            return -1;
        }
    } else if (!strcmp(key, "async-flush-ms")) {
        if (set_int(key, val, 1, 10000, &c->async_flush_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "order-ttl-ms")) {
        if (set_int(key, val, 100, 30LL * 24 * 3600 * 1000, &c->order_ttl_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "request-timeout-ms")) {
        if (set_int(key, val, 10, 600000, &c->request_timeout_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "grant-chunk-max")) {
        if (set_int(key, val, 1, D11_STOCK_MAX, &c->grant_chunk_max, err, errlen)) return -1;
    } else if (!strcmp(key, "soldout-cache-ms")) {
        if (set_int(key, val, 0, 60000, &c->soldout_cache_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "log-level")) {
        if (!strcmp(val, "debug")) c->log_level = D11_LOG_DEBUG;
        else if (!strcmp(val, "info")) c->log_level = D11_LOG_INFO;
        else if (!strcmp(val, "warn")) c->log_level = D11_LOG_WARN;
        else if (!strcmp(val, "error")) c->log_level = D11_LOG_ERROR;
        else {
            snprintf(err, errlen, "log-level: expected debug, info, warn or error, got '%s'", val);
            return -1;
        }
    } else {
        snprintf(err, errlen, "unknown setting '%s'", key_in);
        return -1;
    }
    return 0;
}

static const char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    return s;
}

int d11_config_parse_text(d11_config *c, const char *text, size_t len, char *err, size_t errlen)
{
    size_t pos = 0;
    int lineno = 0;
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        lineno++;
        char line[1024];
        size_t ln = end - pos;
        if (ln >= sizeof line) {
            snprintf(err, errlen, "line %d: longer than %zu bytes", lineno, sizeof line - 1);
            return -1;
        }
        memcpy(line, text + pos, ln);
        line[ln] = 0;
        pos = end + 1;
        if (memchr(line, 0, ln)) {
            snprintf(err, errlen, "line %d: NUL byte", lineno);
            return -1;
        }
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        const char *t = trim(line);
        if (!*t) continue;
        char *eq = strchr((char *)t, '=');
        if (!eq) {
            snprintf(err, errlen, "line %d: expected 'key = value'", lineno);
            return -1;
        }
        *eq = 0;
        const char *k = trim((char *)t);
        const char *v = trim(eq + 1);
        char e2[200];
        if (d11_config_set(c, k, v, e2, sizeof e2) < 0) {
            snprintf(err, errlen, "line %d: %s", lineno, e2);
            return -1;
        }
    }
    return 0;
}

int d11_config_from_args(d11_config *c, int argc, char **argv, char *err, size_t errlen)
{
    /* First pass: find --data so DATA/d11.conf can be loaded before flags override it. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            if (d11_config_set(c, "data", argv[i + 1], err, errlen)) return -1;
        } else if (!strncmp(argv[i], "--data=", 7)) {
            if (d11_config_set(c, "data", argv[i] + 7, err, errlen)) return -1;
        }
    }
    char path[1100];
    snprintf(path, sizeof path, "%s/d11.conf", c->data_dir);
    char *text;
    size_t len;
    int rrc = d11_read_file(path, &text, &len);
    if (rrc < 0 && rrc != -ENOENT) {
        snprintf(err, errlen, "%s: cannot read: %s", path, d11_strerror(rrc));
        return -1;
    }
    if (rrc == 0) {
        char e2[300];
        int rc = d11_config_parse_text(c, text, len, e2, sizeof e2);
        free(text);
        if (rc) {
            snprintf(err, errlen, "%s: %s", path, e2);
            return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            c->help = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s'", a);
            return -1;
        }
        char key[64];
        const char *val;
        const char *eq = strchr(a, '=');
        if (eq) {
            size_t kn = (size_t)(eq - a - 2);
            if (kn >= sizeof key) kn = sizeof key - 1;
            memcpy(key, a + 2, kn);
            key[kn] = 0;
            val = eq + 1;
        } else {
            snprintf(key, sizeof key, "%s", a + 2);
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--%s needs a value", key);
                return -1;
            }
            val = argv[++i];
        }
        if (d11_config_set(c, key, val, err, errlen)) return -1;
    }
    return 0;
}

int d11_config_path(const d11_config *c, const char *name, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", c->data_dir, name);
    return (n < 0 || (size_t)n >= outlen) ? -ENAMETOOLONG : 0;
}
