/*
 * config.h — runtime configuration shared by every subcommand.
 *
 * Sources, later wins: built-in defaults < DIR/d11.conf (if present) < command-line
 * flags. The file format is one `key = value` per line, `#` comments, blank lines
 * ignored; keys are the long flag names without dashes and with '-' or '_' alike
 * (e.g. `order-ttl-ms = 900000`). Unknown keys and bad values are errors (exit 2),
 * never silently ignored. Parsing is pure (no I/O besides reading the file) so it can be
 * fuzzed: see d11_config_parse_text.
 */
#ifndef D11_CONFIG_H
#define D11_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>

enum d11_durability { D11_DUR_SYNC = 0, D11_DUR_ASYNC = 1, D11_DUR_NONE = 2 };

typedef struct d11_config {
    char     data_dir[1024];     /* --data, default ./data */
    char     listen[256];        /* --listen HOST:PORT, default 127.0.0.1:8080 */
    int      cells;              /* --cells, default max(2, nproc) */
    int      threads;            /* --threads (gateway), default nproc */
    int      cell_id;            /* --id (cell subcommand) */
    int      durability;         /* --durability sync|async|none */
    int64_t  async_flush_ms;     /* --async-flush-ms, default 10 */
    int64_t  order_ttl_ms;       /* --order-ttl-ms, default 900000 (15 min) */
    int64_t  request_timeout_ms; /* --request-timeout-ms, default 3000 */
    int64_t  grant_chunk_max;    /* --grant-chunk-max, default 1000: largest allotment grant */
    int64_t  soldout_cache_ms;   /* --soldout-cache-ms, default 100 */
    int      log_level;          /* --log-level debug|info|warn|error */
    int64_t  slow_request_ms;    /* --slow-request-ms, default 500: logged + counted (gateway) */
    int64_t  slow_commit_ms;     /* --slow-commit-ms, default 50: logged + counted (cell) */
    int64_t  log_sample;         /* --log-sample N, default 100: 1 in N non-5xx requests logged */
    char     otlp_endpoint[256]; /* --otlp-endpoint URL: span export (core/otlp.h); "" = off */
    double   trace_ratio;        /* --trace-ratio R in [0, 1], default 0.01: head sampling */
    bool     protect;            /* --protect on|off (gateway adaptive protection), default on */
    int64_t  protect_inflight_min; /* --protect-inflight-min, default 256: always admitted */
    int64_t  protect_gain_pct;   /* --protect-gain-pct, default 200: headroom over the BDP */
    int64_t  protect_rt_max_ms;  /* --protect-rt-max-ms, default 0 = off */
    int64_t  protect_rt_tolerance_pct; /* --protect-rt-tolerance-pct, default 0 = off (throughput climb) */
    int64_t  protect_cpu_max_pct; /* --protect-cpu-max-pct, default 0 = off */
    int64_t  events_retention_ms; /* --events-retention-ms: prune delivered events older (0 = never) */
    char     nats[256];          /* --nats nats://HOST:PORT: JetStream relay ("" = off) */
    bool     help;               /* --help seen */
    char     store[1000];        /* --store URL: PostgreSQL for cells and center; "" = SQLite in DATA */
    char     store_center[1000]; /* --store-center URL: the center's database (default: store) */
    char     store_cells[1000];  /* --store-cells "URL0 URL1 ..": cell i's database (default: store) */
    char     risk_model[1024];   /* --risk-model FILE: risk model A when the rules have none ("" = none) */
    int64_t  risk_keys;          /* --risk-keys N, default 16384: velocity table entries */
    int64_t  risk_log_size;      /* --risk-log-size N, default 4096: risk decisions kept */
    int64_t  gateway_nice;       /* --gateway-nice N (up): nice value of the gateway process, 0..19 */
} d11_config;

/* --gateway-nice default (docs/protection.md, "CPU priority"); the --help text repeats it */
#define D11_GATEWAY_NICE_DEFAULT 0

void d11_config_defaults(d11_config *c);
/*
 * Apply one setting. key without leading dashes. Returns 0, or -1 with a one-line
 * reason in err (size errlen).
 */
int d11_config_set(d11_config *c, const char *key, const char *val, char *err, size_t errlen);
/* Parse a whole config text (d11.conf). Returns 0 or -1 with "line N: reason" in err. */
int d11_config_parse_text(d11_config *c, const char *text, size_t len, char *err, size_t errlen);
/*
 * Parse argv[1..argc) flags (--key value or --key=value; --help). argv[0] is the
 * subcommand ("up", "gateway", "cell", "center", "audit"): a flag that subcommand does
 * not read is refused ("--grant-chunk-max is not a flag of d11 gateway ..."), an unknown
 * one too ("unknown flag --bogus ..."); any other argv[0] accepts no flag. Loads
 * DATA/d11.conf first when --data (or the default) points at a directory holding one; its
 * keys are shared by every subcommand, so there only unknown keys and bad values are
 * errors. Returns 0, or -1 with a one-line reason in err (caller exits 2).
 */
int d11_config_from_args(d11_config *c, int argc, char **argv, char *err, size_t errlen);
const char *d11_durability_name(int d);
/* The i-th setting's name ("data", "listen", ...), or NULL past the last: to iterate. */
const char *d11_config_key(size_t i);
/* Does `d11 cmd` read setting key? ('-' and '_' alike; false for unknown keys/commands) */
bool d11_config_key_used(const char *cmd, const char *key);
/* key's current value in c as flag text (what --key=VALUE would set back). 0, -EINVAL
 * for an unknown key, -ENAMETOOLONG when out is too small. */
int d11_config_value(const d11_config *c, const char *key, char *out, size_t outlen);
/* Print the flags `d11 cmd` accepts, one "  --key ARG  what (default)" line each, then
 * --help: the flag list of its --help text, so the text never drifts from the parser. */
void d11_config_usage(FILE *f, const char *cmd);
/* Path helper: DATA_DIR/name into out. Returns 0 or -ENAMETOOLONG. */
int d11_config_path(const d11_config *c, const char *name, char *out, size_t outlen);

#endif
