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
    c->events_retention_ms = 24LL * 3600 * 1000;
    c->log_level = D11_LOG_INFO;
    c->slow_request_ms = 500;
    c->slow_commit_ms = 50;
    c->log_sample = 100;
    c->trace_ratio = 0.01;
    c->protect = true;
    c->protect_inflight_min = 256;
    c->protect_gain_pct = 200;
    c->protect_rt_tolerance_pct = 0;
    c->risk_keys = 16384;
    c->risk_log_size = 4096;
    c->gateway_nice = D11_GATEWAY_NICE_DEFAULT;
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
    } else if (!strcmp(key, "protect")) {
        if (!strcmp(val, "on")) c->protect = true;
        else if (!strcmp(val, "off")) c->protect = false;
        else {
            snprintf(err, errlen, "protect: expected on or off, got '%s'", val);
            return -1;
        }
    } else if (!strcmp(key, "protect-inflight-min")) {
        if (set_int(key, val, 1, 1000000, &c->protect_inflight_min, err, errlen)) return -1;
    } else if (!strcmp(key, "protect-gain-pct")) {
        if (set_int(key, val, 100, 10000, &c->protect_gain_pct, err, errlen)) return -1;
    } else if (!strcmp(key, "protect-rt-max-ms")) {
        if (set_int(key, val, 0, 600000, &c->protect_rt_max_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "protect-rt-tolerance-pct")) {
        if (set_int(key, val, 0, 10000, &c->protect_rt_tolerance_pct, err, errlen)) return -1;
    } else if (!strcmp(key, "protect-cpu-max-pct")) {
        if (set_int(key, val, 0, 100, &c->protect_cpu_max_pct, err, errlen)) return -1;
    } else if (!strcmp(key, "nats")) {
        size_t n = strlen(val);
        if (n && (strncmp(val, "nats://", 7) != 0 || n < 8 || n >= sizeof c->nats || strchr(val, ' '))) {
            snprintf(err, errlen, "nats: expected nats://HOST:PORT (or empty for none), got '%.100s'", val);
            return -1;
        }
        memcpy(c->nats, val, n + 1);
    } else if (!strcmp(key, "risk-model")) {
        if (strlen(val) >= sizeof c->risk_model) {
            snprintf(err, errlen, "risk-model: longer than %zu bytes", sizeof c->risk_model - 1);
            return -1;
        }
        snprintf(c->risk_model, sizeof c->risk_model, "%s", val);
    } else if (!strcmp(key, "risk-keys")) {
        if (set_int(key, val, 8, 4194304, &c->risk_keys, err, errlen)) return -1;
    } else if (!strcmp(key, "risk-log-size")) {
        if (set_int(key, val, 1, 1048576, &c->risk_log_size, err, errlen)) return -1;
    } else if (!strcmp(key, "gateway-nice")) {
        if (set_int(key, val, 0, 19, &c->gateway_nice, err, errlen)) return -1;
    } else if (!strcmp(key, "events-retention-ms")) {
        if (set_int(key, val, 0, 365LL * 24 * 3600 * 1000, &c->events_retention_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "log-level")) {
        if (!strcmp(val, "debug")) c->log_level = D11_LOG_DEBUG;
        else if (!strcmp(val, "info")) c->log_level = D11_LOG_INFO;
        else if (!strcmp(val, "warn")) c->log_level = D11_LOG_WARN;
        else if (!strcmp(val, "error")) c->log_level = D11_LOG_ERROR;
        else {
            snprintf(err, errlen, "log-level: expected debug, info, warn or error, got '%s'", val);
            return -1;
        }
    } else if (!strcmp(key, "slow-request-ms")) {
        if (set_int(key, val, 1, 600000, &c->slow_request_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "slow-commit-ms")) {
        if (set_int(key, val, 1, 600000, &c->slow_commit_ms, err, errlen)) return -1;
    } else if (!strcmp(key, "log-sample")) {
        if (set_int(key, val, 0, 1000000, &c->log_sample, err, errlen)) return -1;
    } else if (!strcmp(key, "otlp-endpoint")) {
        if (strlen(val) >= sizeof c->otlp_endpoint || (val[0] && strncmp(val, "http://", 7))) {
            snprintf(err, errlen, "otlp-endpoint: expected http://HOST:PORT[/path], got '%.60s'", val);
            return -1;
        }
        snprintf(c->otlp_endpoint, sizeof c->otlp_endpoint, "%s", val);
    } else if (!strcmp(key, "trace-ratio")) {
        char *end;
        double d = strtod(val, &end);
        if (!val[0] || *end || !(d >= 0 && d <= 1)) {
            snprintf(err, errlen, "trace-ratio: expected a number in 0..1, got '%s'", val);
            return -1;
        }
        c->trace_ratio = d;
    } else if (!strcmp(key, "store") || !strcmp(key, "store-center") || !strcmp(key, "store-cells")) {
        char *dst = !strcmp(key, "store") ? c->store : !strcmp(key, "store-center") ? c->store_center : c->store_cells;
        if (strlen(val) >= sizeof c->store) {
            snprintf(err, errlen, "%s: longer than %zu bytes", key, sizeof c->store - 1);
            return -1;
        }
        snprintf(dst, sizeof c->store, "%s", val);
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

/* ---- which subcommand uses which setting ---- */

enum {
    CMD_UP = 1u << 0,
    CMD_GATEWAY = 1u << 1,
    CMD_CELL = 1u << 2,
    CMD_CENTER = 1u << 3,
    CMD_AUDIT = 1u << 4,
};

static const struct {
    const char *name;
    unsigned    bit;
} commands[] = {
    {"up", CMD_UP}, {"gateway", CMD_GATEWAY}, {"cell", CMD_CELL}, {"center", CMD_CENTER}, {"audit", CMD_AUDIT},
};

/* Every setting, in the order --help lists them. used_by: the subcommands that read it
 * (`up` reads what it forwards to its children, never `id`, which it sets per cell). */
static const struct {
    const char *key, *arg, *help;
    unsigned    used_by;
} keys[] = {
    {"data", "DIR", "data directory (default ./data)", CMD_UP | CMD_GATEWAY | CMD_CELL | CMD_CENTER | CMD_AUDIT},
    {"listen", "HOST:PORT", "HTTP address of the gateway (default 127.0.0.1:8080)", CMD_UP | CMD_GATEWAY},
    {"cells", "N", "number of cells (default: cores, at least 2; fixed at first start)",
     CMD_UP | CMD_GATEWAY | CMD_CENTER},
    {"threads", "N", "gateway threads, each with its own listener (default: cores)", CMD_UP | CMD_GATEWAY},
    {"id", "N", "this cell's number, 0-based (required)", CMD_CELL},
    {"durability", "MODE", "sync (default), async or none; see docs/storage.md", CMD_UP | CMD_CELL | CMD_CENTER},
    {"async-flush-ms", "MS", "fsync interval in async mode (default 10)", CMD_UP | CMD_CELL},
    {"order-ttl-ms", "MS", "unpaid orders expire after this (default 900000 = 15 min)", CMD_UP | CMD_CELL},
    {"request-timeout-ms", "MS", "gateway -> cell deadline, 504 after it (default 3000)", CMD_UP | CMD_GATEWAY},
    {"grant-chunk-max", "N", "largest allotment the center hands a cell at once (default 1000)",
     CMD_UP | CMD_CENTER},
    {"soldout-cache-ms", "MS", "how long a cell trusts a sold-out answer (default 100)", CMD_UP | CMD_CELL},
    {"log-level", "LEVEL", "debug, info (default), warn, error", CMD_UP | CMD_GATEWAY | CMD_CELL | CMD_CENTER},
    {"slow-request-ms", "MS", "requests slower than this are logged and counted (default 500)",
     CMD_UP | CMD_GATEWAY},
    {"slow-commit-ms", "MS", "cell commits slower than this are logged and counted (default 50)", CMD_UP | CMD_CELL},
    {"log-sample", "N", "request log: every 5xx and 1 in N other requests (default 100; 0 = 5xx only)",
     CMD_UP | CMD_GATEWAY},
    {"otlp-endpoint", "URL", "export trace spans as OTLP/HTTP JSON to URL (default: off)",
     CMD_UP | CMD_GATEWAY | CMD_CELL | CMD_CENTER},
    {"trace-ratio", "R", "head sampling of new traces, 0..1 (default 0.01); errors and slow requests always kept",
     CMD_UP | CMD_GATEWAY},
    {"store", "URL", "PostgreSQL URL for cells and center (default: SQLite in DIR); docs/postgresql.md",
     CMD_UP | CMD_CELL | CMD_CENTER | CMD_AUDIT},
    {"store-center", "URL", "the center's PostgreSQL URL (default: --store)", CMD_UP | CMD_CENTER | CMD_AUDIT},
    {"store-cells", "\"URL0 URL1 ..\"", "cell i's PostgreSQL URL (default: --store)", CMD_UP | CMD_CELL | CMD_AUDIT},
    {"protect", "on|off", "gateway adaptive overload protection (default on; docs/protection.md)", CMD_UP | CMD_GATEWAY},
    {"protect-inflight-min", "N", "requests in flight always admitted (default 256)", CMD_UP | CMD_GATEWAY},
    {"protect-gain-pct", "PCT", "in-flight limit = PCT% of max throughput x min RT (default 200)", CMD_UP | CMD_GATEWAY},
    {"protect-rt-max-ms", "MS", "refuse above the floor while the mean RT exceeds MS (default 0 = off)", CMD_UP | CMD_GATEWAY},
    {"protect-rt-tolerance-pct", "PCT", "throughput climb of the in-flight limit; flat rate and p99 > PCT% of the baseline p99 -> cut (default 0 = off)", CMD_UP | CMD_GATEWAY},
    {"protect-cpu-max-pct", "PCT", "above this system CPU, no headroom over the BDP (default 0 = off)", CMD_UP | CMD_GATEWAY},
    {"events-retention-ms", "MS", "prune outbox events every sink has and older than this (default 86400000; 0 = never)",
     CMD_UP | CMD_GATEWAY},
    {"nats", "URL", "relay the event stream to NATS JetStream at nats://HOST:PORT (default: none)",
     CMD_UP | CMD_GATEWAY},
    {"risk-model", "FILE", "risk scoring model (JSON) used when the rules have no risk.model (docs/protection.md)",
     CMD_UP | CMD_GATEWAY},
    {"risk-keys", "N", "risk velocity table entries (users, IPs, devices; default 16384)", CMD_UP | CMD_GATEWAY},
    {"risk-log-size", "N", "risk decisions kept for GET /admin/risk/decisions (default 4096)", CMD_UP | CMD_GATEWAY},
    {"gateway-nice", "N", "nice value of the gateway process, 0..19: the cells run first under CPU contention (default 0 = same as up; docs/protection.md)", CMD_UP},
};
#define NKEYS (sizeof keys / sizeof keys[0])

static unsigned command_bit(const char *cmd)
{
    for (size_t i = 0; cmd && i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name)) return commands[i].bit;
    return 0;
}

/* Index of a setting ('-' and '_' alike), or -1. */
static int find_key(const char *key_in)
{
    char key[64];
    size_t kn = strlen(key_in);
    if (kn >= sizeof key) return -1;
    for (size_t i = 0; i <= kn; i++) key[i] = key_in[i] == '_' ? '-' : key_in[i];
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(key, keys[i].key)) return (int)i;
    return -1;
}

const char *d11_config_key(size_t i) { return i < NKEYS ? keys[i].key : NULL; }

bool d11_config_key_used(const char *cmd, const char *key)
{
    int k = find_key(key);
    return k >= 0 && (keys[k].used_by & command_bit(cmd)) != 0;
}

int d11_config_value(const d11_config *c, const char *key, char *out, size_t outlen)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    int k = find_key(key);
    if (k < 0) return -EINVAL;
    const char *name = keys[k].key;
    int n;
    if (!strcmp(name, "data")) n = snprintf(out, outlen, "%s", c->data_dir);
    else if (!strcmp(name, "listen")) n = snprintf(out, outlen, "%s", c->listen);
    else if (!strcmp(name, "cells")) n = snprintf(out, outlen, "%d", c->cells);
    else if (!strcmp(name, "threads")) n = snprintf(out, outlen, "%d", c->threads);
    else if (!strcmp(name, "id")) n = snprintf(out, outlen, "%d", c->cell_id);
    else if (!strcmp(name, "durability")) n = snprintf(out, outlen, "%s", d11_durability_name(c->durability));
    else if (!strcmp(name, "async-flush-ms")) n = snprintf(out, outlen, "%lld", (long long)c->async_flush_ms);
    else if (!strcmp(name, "order-ttl-ms")) n = snprintf(out, outlen, "%lld", (long long)c->order_ttl_ms);
    else if (!strcmp(name, "request-timeout-ms")) n = snprintf(out, outlen, "%lld", (long long)c->request_timeout_ms);
    else if (!strcmp(name, "grant-chunk-max")) n = snprintf(out, outlen, "%lld", (long long)c->grant_chunk_max);
    else if (!strcmp(name, "soldout-cache-ms")) n = snprintf(out, outlen, "%lld", (long long)c->soldout_cache_ms);
    else if (!strcmp(name, "slow-request-ms")) n = snprintf(out, outlen, "%lld", (long long)c->slow_request_ms);
    else if (!strcmp(name, "slow-commit-ms")) n = snprintf(out, outlen, "%lld", (long long)c->slow_commit_ms);
    else if (!strcmp(name, "log-sample")) n = snprintf(out, outlen, "%lld", (long long)c->log_sample);
    else if (!strcmp(name, "otlp-endpoint")) n = snprintf(out, outlen, "%s", c->otlp_endpoint);
    else if (!strcmp(name, "trace-ratio")) n = snprintf(out, outlen, "%.17g", c->trace_ratio);
    else if (!strcmp(name, "store")) n = snprintf(out, outlen, "%s", c->store);
    else if (!strcmp(name, "store-center")) n = snprintf(out, outlen, "%s", c->store_center);
    else if (!strcmp(name, "store-cells")) n = snprintf(out, outlen, "%s", c->store_cells);
    else if (!strcmp(name, "protect")) n = snprintf(out, outlen, "%s", c->protect ? "on" : "off");
    else if (!strcmp(name, "protect-inflight-min")) n = snprintf(out, outlen, "%lld", (long long)c->protect_inflight_min);
    else if (!strcmp(name, "protect-gain-pct")) n = snprintf(out, outlen, "%lld", (long long)c->protect_gain_pct);
    else if (!strcmp(name, "protect-rt-max-ms")) n = snprintf(out, outlen, "%lld", (long long)c->protect_rt_max_ms);
    else if (!strcmp(name, "protect-rt-tolerance-pct")) n = snprintf(out, outlen, "%lld", (long long)c->protect_rt_tolerance_pct);
    else if (!strcmp(name, "protect-cpu-max-pct")) n = snprintf(out, outlen, "%lld", (long long)c->protect_cpu_max_pct);
    else if (!strcmp(name, "events-retention-ms")) n = snprintf(out, outlen, "%lld", (long long)c->events_retention_ms);
    else if (!strcmp(name, "nats")) n = snprintf(out, outlen, "%s", c->nats);
    else if (!strcmp(name, "risk-model")) n = snprintf(out, outlen, "%s", c->risk_model);
    else if (!strcmp(name, "risk-keys")) n = snprintf(out, outlen, "%lld", (long long)c->risk_keys);
    else if (!strcmp(name, "risk-log-size")) n = snprintf(out, outlen, "%lld", (long long)c->risk_log_size);
    else if (!strcmp(name, "gateway-nice")) n = snprintf(out, outlen, "%lld", (long long)c->gateway_nice);
    else {
        D11_ASSERT(!strcmp(name, "log-level"));
        D11_ASSERT(c->log_level >= D11_LOG_DEBUG && c->log_level <= D11_LOG_ERROR);
        n = snprintf(out, outlen, "%s", levels[c->log_level]);
    }
    return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

void d11_config_usage(FILE *f, const char *cmd)
{
    unsigned bit = command_bit(cmd);
    for (size_t i = 0; i < NKEYS; i++) {
        if (!(keys[i].used_by & bit)) continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s %s", keys[i].key, keys[i].arg);
        fprintf(f, "  %-24s %s\n", flag, keys[i].help);
    }
    fprintf(f, "  %-24s %s\n", "--help", "this text");
}

/* "up, center": the subcommands that use setting k, for an error message. */
static void users_of(int k, char *out, size_t outlen)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (!(keys[k].used_by & commands[i].bit)) continue;
        int n = snprintf(out + len, outlen - len, "%sd11 %s", len ? ", " : "", commands[i].name);
        if (n < 0 || (size_t)n >= outlen - len) return;
        len += (size_t)n;
    }
}

int d11_config_from_args(d11_config *c, int argc, char **argv, char *err, size_t errlen)
{
    const char *cmd = argc >= 1 && argv[0] ? argv[0] : "?";
    unsigned bit = command_bit(cmd);
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
        /* Keys in d11.conf are shared by every process: one used only by another part is
         * fine here; only unknown keys and bad values are errors. */
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
        const char *eq = strchr(a, '=');
        size_t kn = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (kn >= sizeof key) {
            snprintf(err, errlen, "unknown flag --%.40s... (see d11 %s --help)", a + 2, cmd);
            return -1;
        }
        memcpy(key, a + 2, kn);
        key[kn] = 0;
        /* The name first: a flag this process does not have is refused as such, whether or
         * not a value follows it. */
        int k = find_key(key);
        if (k < 0) {
            snprintf(err, errlen, "unknown flag --%s (see d11 %s --help)", key, cmd);
            return -1;
        }
        if (!(keys[k].used_by & bit)) {
            char users[128];
            users_of(k, users, sizeof users);
            snprintf(err, errlen, "--%s is not a flag of d11 %s (it is read by %s)", key, cmd, users);
            return -1;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else {
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
