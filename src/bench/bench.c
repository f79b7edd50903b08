/*
 * bench.c — `d11 bench`: flags, product setup, one load run or a capacity search, and the
 * report (table on stdout, or --json). The engine is loadgen.c; the histogram hist.c;
 * the HTTP client httpc.c; the workload (mix, users, SKUs) workload.c.
 *
 * Length (~870 lines): one file per command is the bench tool's rule; most of it is the
 * flag table, their validation and the two report formats, which read best together.
 *
 * Exit status: 0 the run completed and met the SLO flags given; 1 failure (setup failed,
 * nothing could be sent or answered, interrupted); 2 usage error (one-line reason);
 * 3 the run completed but broke --slo-p99 / --slo-errors (for --find-capacity: even the
 * starting rate broke them).
 */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "hist.h"
#include "httpc.h"
#include "loadgen.h"
#include "report.h"
#include "workload.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

static const char usage_text[] =
    "usage: d11 bench [FLAGS]\n"
    "\n"
    "Full-link load generator: HTTP/1.1 keep-alive connections on epoll loops, open-loop\n"
    "(--rate) or closed-loop, latency in a log-linear histogram (3 significant digits).\n"
    "Open loop measures latency from each request's INTENDED send time (no coordinated\n"
    "omission). Progress every second on stderr; the report on stdout.\n"
    "\n"
    "target\n"
    "  --url URL              server base URL (default $D11_URL, else " DEFAULT_URL ")\n"
    "  --token T              bearer token (default $D11_TOKEN)\n"
    "  --token-file F         read the bearer token from F (default $D11_TOKEN_FILE, else\n"
    "                         DATA/admin.token when readable; DATA: $D11_DATA or ./data)\n"
    "  --header 'N: V'        extra request header (repeatable)\n"
    "  --stress               tag every request X-D11-Stress: 1 (shadow tables; scope stress)\n"
    "\n"
    "load shape\n"
    "  --rate R               open loop: R requests/s in total, on a fixed schedule\n"
    "  --stages SPEC          open loop on a ramp, e.g. 10s:1000,30s:20000 (the rate goes\n"
    "                         linearly from the previous stage's, 0 at first, to each one's)\n"
    "                         (omit or 0: closed loop, each connection resends on reply)\n"
    "  --connections C        keep-alive connections in total (default 32)\n"
    "  --threads T            client threads, each with its own epoll loop (default 1)\n"
    "  --pipeline D           requests in flight per connection (default 1, max 64)\n"
    "  --duration S           stop sending after S seconds (default 10; with only\n"
    "                         --requests, a 300 s cap)\n"
    "  --requests N           stop after N requests\n"
    "  --timeout MS           per-request timeout; the connection is recycled (default 5000)\n"
    "  --drain MS             after the last send, wait this long for answers (default 2000)\n"
    "\n"
    "workload\n"
    "  --mix SPEC             weights, e.g. read=1,order=8,pay=1,cancel=0 (default order=1)\n"
    "                         read: GET /v1/products/{sku}; order: POST /v1/orders with a\n"
    "                         unique Idempotency-Key; pay/cancel: an order this run placed\n"
    "  --skus N               SKUs <prefix>0 .. <prefix>N-1 (default 100)\n"
    "  --hot-sku-share F      share of orders and reads going to SKU 0 (default 0.9)\n"
    "  --sku-prefix P         SKU name prefix (default BENCH-)\n"
    "  --users N              user ids 1..N (default 1000000)\n"
    "  --user-dist D          uniform | zipf | zipf:S (default uniform; zipf means s = 1)\n"
    "  --quantity Q           units per order (default 1)\n"
    "  --seed N               random seed for the picks (default: random)\n"
    "\n"
    "setup\n"
    "  --setup                create the SKUs first (POST /v1/products; 409 exists is fine)\n"
    "  --setup-only           create the SKUs and exit\n"
    "  --stock N              stock per created SKU (default 1000000000)\n"
    "  --price-cents N        price per created SKU (default 1999)\n"
    "\n"
    "verdict\n"
    "  --slo-p99 MS           exit 3 when the p99 latency is above MS\n"
    "  --slo-errors RATIO     exit 3 when errors / attempted is above RATIO\n"
    "                         (errors: transport failures, 5xx, 429, unexpected 4xx,\n"
    "                         requests never sent or never answered; 409 out_of_stock /\n"
    "                         not_payable / not_cancellable and 403 risk_rejected are\n"
    "                         'rejected', not errors)\n"
    "\n"
    "capacity search\n"
    "  --find-capacity        open-loop steps at rising rates until the p99 SLO or the\n"
    "                         error ratio breaks; reports the highest rate that held\n"
    "                         (needs --slo-p99; --slo-errors defaults to 0.01)\n"
    "  --cap-start R          first rate (default 500)\n"
    "  --cap-factor F         rate multiplier per step (default 1.5)\n"
    "  --cap-step S           seconds per step (default 5)\n"
    "  --cap-max-steps N      at most N rising steps (default 15)\n"
    "  --cap-refine N         bisection steps between the last good and first bad rate\n"
    "                         (default 2)\n"
    "  --cap-pause MS         pause between steps for the server to drain (default 1000)\n"
    "\n"
    "output\n"
    "  --json                 machine-readable result on stdout instead of the table, with\n"
    "                         the per-second series\n"
    "  --html FILE            also write an HTML report (throughput and latency over time,\n"
    "                         the percentile spectrum; SVG, works offline)\n"
    "  --quiet                no progress line\n"
    "  --show-errors          print the first 5 unexpected answers per thread on stderr\n"
    "\n"
    "exit status: 0 ok; 1 failure (setup failed, no answers, interrupted); 2 usage error,\n"
    "or most answers were 401/403 (a missing or wrong token); 3 an --slo-* limit was broken.\n";

typedef struct bench_cli {
    d11_bench_opts o;
    double  rate;
    double  duration_s;
    bool    duration_given;
    int64_t requests;
    bool    setup, setup_only, json, find_capacity, stress;
    uint64_t stock, price_cents;
    double  slo_p99_ms;      /* 0 = none */
    double  slo_errors;      /* < 0 = none */
    double  cap_start, cap_factor, cap_step_s;
    int     cap_max_steps, cap_refine, cap_pause_ms;
    char    mix_text[128];
    char    user_dist_text[32];
    char    token[D11_TOKEN_BYTES_MAX + 1];
    const char *html;        /* --html FILE */
} bench_cli;

static void on_signal(int sig)
{
    (void)sig;
    d11__bench_stop = 1;
}

/* ---- flag parsing ---- */

static int usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "d11 bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see d11 bench --help)\n");
    va_end(ap);
    return 2;
}

static bool parse_int(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    uint64_t v;
    if (d11_parse_u64(s, strlen(s), hi, &v) < 0 || v < lo) return false;
    *out = v;
    return true;
}

static int parse_args(bench_cli *b, int argc, char **argv)
{
    d11_bench_opts *o = &b->o;
    const char *url = DEFAULT_URL, *token = NULL, *token_file = NULL;
    size_t extra_len = 0;
    char err[256];
    for (int i = 1; i < argc; i++) {
        char *arg = argv[i], *val = NULL, name[64];
        if (!strcmp(arg, "-h")) arg = "--help";
        if (strncmp(arg, "--", 2) != 0) return usage_err("unexpected argument '%s'", arg);
        char *eq = strchr(arg, '=');
        size_t nl = eq ? (size_t)(eq - arg) : strlen(arg);
        if (nl >= sizeof name) return usage_err("unknown flag '%.40s'", arg);
        memcpy(name, arg, nl);
        name[nl] = 0;
        static const char *const booleans[] = {"--setup", "--setup-only", "--json", "--quiet",
                                               "--stress", "--find-capacity", "--show-errors",
                                               "--help"};
        static const char *const valued[] = {
            "--url", "--token", "--token-file", "--header", "--rate", "--connections",
            "--threads", "--pipeline", "--duration", "--requests", "--timeout", "--drain",
            "--mix", "--skus", "--hot-sku-share", "--sku-prefix", "--users", "--user-dist",
            "--quantity", "--seed", "--stock", "--price-cents", "--slo-p99", "--slo-errors",
            "--cap-start", "--cap-factor", "--cap-step", "--cap-max-steps", "--cap-refine",
            "--cap-pause", "--stages", "--html"};
        bool is_bool = false, known = false;
        for (size_t k = 0; k < sizeof booleans / sizeof booleans[0]; k++)
            if (!strcmp(name, booleans[k])) is_bool = known = true;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
            if (!strcmp(name, valued[k])) known = true;
        if (!known) return usage_err("unknown flag '%s'", name);
        if (is_bool) {
            if (eq) return usage_err("%s takes no value", name);
        } else if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            return usage_err("%s needs a value", name);
        }
        uint64_t u;
        double d;
#define BAD(what) return usage_err("%s: expected %s, got '%s'", name, what, val)
        if (!strcmp(name, "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(name, "--url")) url = val;
        else if (!strcmp(name, "--token")) token = val;
        else if (!strcmp(name, "--token-file")) token_file = val;
        else if (!strcmp(name, "--header")) {
            const char *colon = strchr(val, ':');
            if (!colon || colon == val || strpbrk(val, "\r\n")) BAD("'Name: value'");
            size_t vl = strlen(val);
            if (extra_len + vl + 3 >= sizeof o->extra_headers) return usage_err("--header: too many header bytes");
            memcpy(o->extra_headers + extra_len, val, vl);
            memcpy(o->extra_headers + extra_len + vl, "\r\n", 3);
            extra_len += vl + 2;
        } else if (!strcmp(name, "--stress")) b->stress = true;
        else if (!strcmp(name, "--rate")) {
            if (!d11_parse_double(val, 0, 1e8, &d)) BAD("a rate 0..1e8 requests/s");
            b->rate = d;
        } else if (!strcmp(name, "--connections")) {
            if (!parse_int(val, 1, D11_BENCH_CONNS_MAX, &u)) BAD("1..10000");
            o->connections = (int)u;
        } else if (!strcmp(name, "--threads")) {
            if (!parse_int(val, 1, D11_BENCH_THREADS_MAX, &u)) BAD("1..64");
            o->threads = (int)u;
        } else if (!strcmp(name, "--pipeline")) {
            if (!parse_int(val, 1, D11_BENCH_PIPELINE_MAX, &u)) BAD("1..64");
            o->pipeline = (int)u;
        } else if (!strcmp(name, "--duration")) {
            if (!d11_parse_double(val, 0.001, 86400, &d)) BAD("seconds in (0, 86400]");
            b->duration_s = d;
            b->duration_given = true;
        } else if (!strcmp(name, "--requests")) {
            if (!parse_int(val, 1, UINT64_C(1) << 40, &u)) BAD("a positive count");
            b->requests = (int64_t)u;
        } else if (!strcmp(name, "--timeout")) {
            if (!parse_int(val, 1, 600000, &u)) BAD("milliseconds 1..600000");
            o->timeout_ms = (int)u;
        } else if (!strcmp(name, "--drain")) {
            if (!parse_int(val, 0, 600000, &u)) BAD("milliseconds 0..600000");
            o->drain_ms = (int)u;
        } else if (!strcmp(name, "--mix")) {
            if (strlen(val) >= sizeof b->mix_text) BAD("a shorter mix");
            snprintf(b->mix_text, sizeof b->mix_text, "%s", val);
        } else if (!strcmp(name, "--skus")) {
            if (!parse_int(val, 1, 100000000, &u)) BAD("1..100000000");
            o->wl.skus = u;
        } else if (!strcmp(name, "--hot-sku-share")) {
            if (!d11_parse_double(val, 0, 1, &d)) BAD("a share in [0, 1]");
            o->wl.hot_share = d;
        } else if (!strcmp(name, "--sku-prefix")) {
            size_t pl = strlen(val);
            bool ok = pl < 20; /* leaves room for the index within the 64-byte SKU limit */
            for (size_t k = 0; ok && k < pl; k++)
                ok = isalnum((unsigned char)val[k]) || val[k] == '_' || val[k] == '.' || val[k] == '-';
            if (!ok) BAD("up to 19 of [A-Za-z0-9_.-]");
            snprintf(o->wl.sku_prefix, sizeof o->wl.sku_prefix, "%s", val);
        } else if (!strcmp(name, "--users")) {
            if (!parse_int(val, 1, UINT64_C(1) << 62, &u)) BAD("1..2^62");
            o->wl.users = u;
        } else if (!strcmp(name, "--user-dist")) {
            if (strlen(val) >= sizeof b->user_dist_text) BAD("uniform or zipf[:S]");
            snprintf(b->user_dist_text, sizeof b->user_dist_text, "%s", val);
        } else if (!strcmp(name, "--quantity")) {
            if (!parse_int(val, 1, D11_ITEM_QTY_MAX, &u)) BAD("1..1000");
            o->wl.quantity = (int)u;
        } else if (!strcmp(name, "--seed")) {
            if (!parse_int(val, 1, UINT64_MAX, &u)) BAD("a positive integer");
            o->seed = u;
        } else if (!strcmp(name, "--setup")) b->setup = true;
        else if (!strcmp(name, "--setup-only")) b->setup = b->setup_only = true;
        else if (!strcmp(name, "--stock")) {
            if (!parse_int(val, 0, (uint64_t)D11_STOCK_MAX, &u)) BAD("0..10^12");
            b->stock = u;
        } else if (!strcmp(name, "--price-cents")) {
            if (!parse_int(val, 1, (uint64_t)D11_PRICE_CENTS_MAX, &u)) BAD("1..10^12");
            b->price_cents = u;
        } else if (!strcmp(name, "--slo-p99")) {
            if (!d11_parse_double(val, 0.001, 3.6e6, &d)) BAD("milliseconds > 0");
            b->slo_p99_ms = d;
        } else if (!strcmp(name, "--slo-errors")) {
            if (!d11_parse_double(val, 0, 1, &d)) BAD("a ratio in [0, 1]");
            b->slo_errors = d;
        } else if (!strcmp(name, "--find-capacity")) b->find_capacity = true;
        else if (!strcmp(name, "--cap-start")) {
            if (!d11_parse_double(val, 1, 1e8, &d)) BAD("a rate >= 1");
            b->cap_start = d;
        } else if (!strcmp(name, "--cap-factor")) {
            if (!d11_parse_double(val, 1.01, 100, &d)) BAD("a factor in [1.01, 100]");
            b->cap_factor = d;
        } else if (!strcmp(name, "--cap-step")) {
            if (!d11_parse_double(val, 0.5, 3600, &d)) BAD("seconds in [0.5, 3600]");
            b->cap_step_s = d;
        } else if (!strcmp(name, "--cap-max-steps")) {
            if (!parse_int(val, 1, 100, &u)) BAD("1..100");
            b->cap_max_steps = (int)u;
        } else if (!strcmp(name, "--cap-refine")) {
            if (!parse_int(val, 0, 20, &u)) BAD("0..20");
            b->cap_refine = (int)u;
        } else if (!strcmp(name, "--cap-pause")) {
            if (!parse_int(val, 0, 60000, &u)) BAD("milliseconds 0..60000");
            b->cap_pause_ms = (int)u;
        } else if (!strcmp(name, "--html")) {
            b->html = val;
        } else if (!strcmp(name, "--stages")) {
            o->nstages = 0;
            b->duration_s = 0;
            b->rate = 0;
            for (const char *p = val; *p;) {
                char *end;
                double dur = strtod(p, &end), rate;
                if (end == p || dur <= 0) BAD("stages like 10s:1000,30s:20000");
                if (*end == 's') end++;
                else if (*end == 'm') dur *= 60, end++;
                if (*end != ':') BAD("stages like 10s:1000,30s:20000");
                p = end + 1;
                rate = strtod(p, &end);
                if (end == p || rate < 0 || rate > 1e8) BAD("stage rates 0..1e8");
                if (o->nstages == D11_BENCH_STAGES_MAX) BAD("at most 32 stages");
                o->stages[o->nstages++] = (d11_bench_stage){dur, rate};
                b->duration_s += dur;
                if (rate > b->rate) b->rate = rate;
                p = end;
                if (*p == ',') p++;
                else if (*p) BAD("stages like 10s:1000,30s:20000");
            }
            if (b->rate <= 0) BAD("a stage with a rate above 0");
            b->duration_given = true;
        } else if (!strcmp(name, "--json")) b->json = true;
        else if (!strcmp(name, "--quiet")) o->quiet = true;
        else if (!strcmp(name, "--show-errors")) o->verbose_errors = true;
        else return usage_err("unknown flag '%s'", name);
#undef BAD
    }

    if (token && token_file) return usage_err("give --token or --token-file, not both");
    /* defaults like d11 ctl's: $D11_URL, $D11_TOKEN, $D11_TOKEN_FILE, DATA/admin.token */
    const char *env_url = getenv("D11_URL"), *env_tok = getenv("D11_TOKEN"), *env_tf = getenv("D11_TOKEN_FILE");
    if (!strcmp(url, DEFAULT_URL) && env_url && *env_url) url = env_url;
    static char deflt_tf[1100];
    if (!token && !token_file) {
        const char *data = getenv("D11_DATA");
        snprintf(deflt_tf, sizeof deflt_tf, "%s/admin.token", data && *data ? data : "./data");
        if (env_tok && *env_tok) token = env_tok;
        else if (env_tf && *env_tf) token_file = env_tf;
        else if (access(deflt_tf, R_OK) == 0) token_file = deflt_tf;
    }
    if (d11_url_parse(url, &o->url, err, sizeof err) < 0) return usage_err("--url: %s", err);
    if (d11_httpc_token_load(token, token_file, b->token, sizeof b->token, err, sizeof err) < 0) {
        fprintf(stderr, "d11 bench: %s\n", err);
        return token_file ? 1 : 2;
    }
    if (b->token[0])
        snprintf(o->auth_header, sizeof o->auth_header, "Authorization: Bearer %s\r\n", b->token);
    if (b->stress) {
        if (extra_len + 20 >= sizeof o->extra_headers) return usage_err("--header: too many header bytes");
        memcpy(o->extra_headers + extra_len, "X-D11-Stress: 1\r\n", 18);
        extra_len += 17;
    }
    if (d11_mix_parse(&o->wl, b->mix_text, err, sizeof err) < 0) return usage_err("%s", err);
    if (d11_user_dist_parse(&o->wl, b->user_dist_text, err, sizeof err) < 0)
        return usage_err("%s", err);
    if (!b->duration_given) b->duration_s = b->requests > 0 ? 300 : 10;
    if (b->find_capacity) {
        if (b->slo_p99_ms <= 0) return usage_err("--find-capacity needs --slo-p99 MS");
        if (b->requests > 0) return usage_err("--find-capacity runs by time: drop --requests");
        if (b->rate > 0) return usage_err("--find-capacity sets the rate itself: drop --rate (use --cap-start)");
        if (o->nstages) return usage_err("--find-capacity and --stages do not go together");
        if (b->slo_errors < 0) b->slo_errors = 0.01;
    }
    return -1; /* parsed; go on */
}

/* ---- setup ---- */

static int do_setup(const bench_cli *b)
{
    const d11_bench_opts *o = &b->o;
    d11_httpc hc;
    d11_httpc_init(&hc, &o->url, o->timeout_ms);
    d11_buf hdr, body;
    d11_buf_init(&hdr, 512);
    d11_buf_init(&body, 512);
    d11_buf_puts(&hdr, o->auth_header);
    d11_buf_puts(&hdr, o->extra_headers);
    d11_buf_puts(&hdr, "Content-Type: application/json\r\n");
    int64_t created = 0, existed = 0, t0 = d11_mono_ms();
    int ret = 0;
    for (uint64_t i = 0; i < o->wl.skus && !d11__bench_stop; i++) {
        char sku[D11_BENCH_SKU_PREFIX_BYTES_MAX + 24];
        d11_workload_sku_name(&o->wl, i, sku, sizeof sku);
        d11_buf_reset(&body);
        d11_buf_printf(&body,
                       "{\"sku\":\"%s\",\"title\":\"d11 bench item %llu\",\"price_cents\":%llu,"
                       "\"stock\":%llu,\"category\":\"bench\"}",
                       sku, (unsigned long long)i, (unsigned long long)b->price_cents,
                       (unsigned long long)b->stock);
        int rc = d11_httpc_do(&hc, "POST", "/v1/products", hdr.data, body.data, body.len);
        if (rc < 0) {
            fprintf(stderr, "d11 bench: setup: POST %s/v1/products (%s): %s\n", o->url.hostport,
                    sku, d11_strerror(rc));
            ret = 1;
            break;
        }
        char code[D11_BENCH_CODE_BYTES_MAX] = "";
        (void)d11_json_find_str(hc.body.data ? hc.body.data : "", hc.body.len, "code", code, sizeof code);
        if (hc.status == 201 || hc.status == 200) created++;
        else if (hc.status == 409 && (!strcmp(code, "exists") || !code[0])) existed++;
        else {
            fprintf(stderr, "d11 bench: setup: POST /v1/products (%s) -> %d %.300s\n", sku,
                    hc.status, hc.body.data ? hc.body.data : "");
            ret = 1;
            break;
        }
        if (!o->quiet && b->o.wl.skus >= 1000 && (i + 1) % 1000 == 0)
            fprintf(stderr, "setup: %llu/%llu SKUs\n", (unsigned long long)(i + 1),
                    (unsigned long long)o->wl.skus);
    }
    if (ret == 0 && d11__bench_stop) ret = 1;
    if (ret == 0 && !o->quiet)
        fprintf(stderr, "setup: %lld SKUs created, %lld already existed (%.1f s)\n",
                (long long)created, (long long)existed, (double)(d11_mono_ms() - t0) / 1000.0);
    d11_buf_free(&hdr);
    d11_buf_free(&body);
    d11_httpc_release(&hc);
    return ret;
}

/* ---- report ---- */

static const char *cls_name(int cls)
{
    return cls == D11_CLS_OK ? "ok" : cls == D11_CLS_REJECT ? "rejected" : "error";
}

static void fmt_ms(char *out, size_t n, int64_t us)
{
    if (us < 10000) snprintf(out, n, "%.3f", (double)us / 1000.0);
    else if (us < 1000000) snprintf(out, n, "%.1f", (double)us / 1000.0);
    else snprintf(out, n, "%.0f", (double)us / 1000.0);
}

static void table_lat_row(const char *name, const d11_hist *h)
{
    if (h->total == 0) return;
    static const double ps[] = {50, 90, 99, 99.9};
    char cell[5][24];
    for (int i = 0; i < 4; i++) fmt_ms(cell[i], sizeof cell[i], d11_hist_percentile(h, ps[i]));
    fmt_ms(cell[4], sizeof cell[4], h->max);
    char mean[24];
    fmt_ms(mean, sizeof mean, (int64_t)d11_hist_mean(h));
    printf("  %-9s %10lld %9s %9s %9s %9s %9s %9s\n", name, (long long)h->total, cell[0], cell[1],
           cell[2], cell[3], cell[4], mean);
}

/* The verdict of a result against the SLO flags; reasons into why. */
static bool slo_ok(const bench_cli *b, const d11_bench_result *r, char *why, size_t whylen)
{
    why[0] = 0;
    bool ok = true;
    int64_t p99 = d11_hist_percentile(&r->lat, 99);
    double er = d11_bench_error_ratio(r);
    size_t n = 0;
    if (b->slo_p99_ms > 0 && (double)p99 / 1000.0 > b->slo_p99_ms) {
        ok = false;
        n += (size_t)snprintf(why + n, whylen - n, "p99 %.3f ms > %.3f ms", (double)p99 / 1000.0,
                              b->slo_p99_ms);
    }
    if (b->slo_p99_ms > 0 && r->lat.total == 0) {
        ok = false;
        n += (size_t)snprintf(why + n, whylen - n, "%sno answers", n ? "; " : "");
    }
    if (b->slo_errors >= 0 && er > b->slo_errors && n < whylen) {
        ok = false;
        snprintf(why + n, whylen - n, "%serror ratio %.4f > %.4f", n ? "; " : "", er, b->slo_errors);
    }
    return ok;
}

static void print_table(const bench_cli *b, const d11_bench_result *r)
{
    const d11_bench_opts *o = &b->o;
    char mode[96];
    if (r->rate_target > 0) snprintf(mode, sizeof mode, "open loop at %.0f req/s", r->rate_target);
    else snprintf(mode, sizeof mode, "closed loop");
    printf("d11 bench  %s  %s%s\n", o->url.hostport, mode, b->stress ? "  (stress-tagged)" : "");
    printf("  %d connection(s) x pipeline %d, %d thread(s), %.1f s%s\n", o->connections,
           o->pipeline, o->threads < o->connections ? o->threads : o->connections, r->elapsed_s,
           r->interrupted ? "  [INTERRUPTED]" : "");
    printf("  mix read=%d order=%d pay=%d cancel=%d   skus %llu (hot share %.2f)   users %llu %s\n",
           o->wl.weight[0], o->wl.weight[1], o->wl.weight[2], o->wl.weight[3],
           (unsigned long long)o->wl.skus, o->wl.hot_share, (unsigned long long)o->wl.users,
           b->user_dist_text);
    printf("\n");
    double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
    printf("requests   sent %lld   answered %lld   (%.1f/s; 2xx %.1f/s)\n", (long long)r->c.sent,
           (long long)r->c.done, (double)r->c.done / el, (double)r->c.cls[D11_CLS_OK] / el);
    printf("outcome    ok %lld   rejected %lld   errors %lld   unsent %lld   unfinished %lld   error ratio %.4f\n",
           (long long)r->c.cls[D11_CLS_OK], (long long)r->c.cls[D11_CLS_REJECT],
           (long long)r->c.cls[D11_CLS_ERROR], (long long)r->unsent, (long long)r->unfinished,
           d11_bench_error_ratio(r));
    if (r->rate_target > 0)
        printf("schedule   %lld of %lld sends left more than 1 ms after their intended time%s\n",
               (long long)r->c.late, (long long)r->c.sent,
               r->c.late * 100 > r->c.sent ? " (client or connections saturated: see docs/bench.md)" : "");
    if (r->c.substituted)
        printf("note       %lld pay/cancel draws found no placed order yet and sent an order instead\n",
               (long long)r->c.substituted);
    printf("\nlatency (ms) %s\n", r->rate_target > 0
                                      ? "from the INTENDED send time (coordinated-omission corrected)"
                                      : "from the actual send time (closed loop)");
    printf("  %-9s %10s %9s %9s %9s %9s %9s %9s\n", "", "count", "p50", "p90", "p99", "p99.9", "max",
           "mean");
    table_lat_row("all", &r->lat);
    for (int i = 0; i < D11_OP_COUNT; i++)
        if (o->wl.weight[i] || r->lat_op[i].total) table_lat_row(d11_bench_op_name(i), &r->lat_op[i]);
    if (r->rate_target > 0) table_lat_row("service", &r->svc);
    table_lat_row("2xx only", &r->lat_ok);
    printf("\n  %-8s %-24s %-9s %12s %8s\n", "status", "code", "class", "count", "share");
    int64_t all = 0;
    for (int i = 0; i < r->c.n_outcomes; i++) all += r->c.outcome[i].count;
    for (int i = 0; i < r->c.n_outcomes; i++) {
        const d11_bench_outcome *x = &r->c.outcome[i];
        char st[12];
        if (x->status) snprintf(st, sizeof st, "%d", x->status);
        else snprintf(st, sizeof st, "-");
        printf("  %-8s %-24s %-9s %12lld %7.2f%%\n", st, x->code[0] ? x->code : "-", cls_name(x->cls),
               (long long)x->count, all ? 100.0 * (double)x->count / (double)all : 0.0);
    }
    if (r->unsent)
        printf("  %-8s %-24s %-9s %12lld   (scheduled, never sent: the client had no free connection)\n",
               "-", "unsent", "error", (long long)r->unsent);
    if (r->c.outcome_overflow)
        printf("  (%lld answers with other status/code pairs not listed)\n", (long long)r->c.outcome_overflow);
    printf("\nconnections established %lld, connect failures %lld\n", (long long)r->c.connects,
           (long long)r->c.connect_errors);
}

static void json_hist(d11_buf *j, const char *name, const d11_hist *h)
{
    d11_buf_printf(j,
                   "\"%s\":{\"count\":%lld,\"p50\":%lld,\"p90\":%lld,\"p99\":%lld,\"p999\":%lld,"
                   "\"max\":%lld,\"min\":%lld,\"mean\":%.1f}",
                   name, (long long)h->total, (long long)d11_hist_percentile(h, 50),
                   (long long)d11_hist_percentile(h, 90), (long long)d11_hist_percentile(h, 99),
                   (long long)d11_hist_percentile(h, 99.9), (long long)h->max,
                   (long long)(h->total ? h->min : 0), d11_hist_mean(h));
}

static void json_result(d11_buf *j, const d11_bench_result *r)
{
    double el = r->elapsed_s > 0 ? r->elapsed_s : 1;
    d11_buf_printf(j, "{\"mode\":\"%s\",\"rate_target\":%.3f,\"elapsed_s\":%.3f,\"interrupted\":%s,",
                   r->rate_target > 0 ? "open" : "closed", r->rate_target, r->elapsed_s,
                   r->interrupted ? "true" : "false");
    d11_buf_printf(j,
                   "\"requests\":{\"scheduled\":%lld,\"sent\":%lld,\"answered\":%lld,\"ok\":%lld,"
                   "\"rejected\":%lld,\"errors\":%lld,\"unsent\":%lld,\"unfinished\":%lld,"
                   "\"substituted\":%lld,\"late\":%lld,\"error_ratio\":%.6f},",
                   (long long)r->c.scheduled, (long long)r->c.sent, (long long)r->c.done,
                   (long long)r->c.cls[D11_CLS_OK], (long long)r->c.cls[D11_CLS_REJECT],
                   (long long)r->c.cls[D11_CLS_ERROR], (long long)r->unsent,
                   (long long)r->unfinished, (long long)r->c.substituted, (long long)r->c.late,
                   d11_bench_error_ratio(r));
    d11_buf_printf(j, "\"throughput\":{\"answered_per_s\":%.1f,\"ok_per_s\":%.1f},",
                   (double)r->c.done / el, (double)r->c.cls[D11_CLS_OK] / el);
    d11_buf_puts(j, "\"latency_basis\":");
    d11_buf_puts(j, r->rate_target > 0 ? "\"intended\"," : "\"sent\",");
    json_hist(j, "latency_us", &r->lat);
    d11_buf_puts(j, ",");
    json_hist(j, "service_us", &r->svc);
    d11_buf_puts(j, ",");
    json_hist(j, "ok_latency_us", &r->lat_ok);
    d11_buf_puts(j, ",\"ops\":{");
    for (int i = 0; i < D11_OP_COUNT; i++) {
        d11_buf_printf(j, "%s\"%s\":{\"sent\":%lld,\"ok\":%lld,", i ? "," : "", d11_bench_op_name(i),
                       (long long)r->c.op_sent[i], (long long)r->c.op_ok[i]);
        json_hist(j, "latency_us", &r->lat_op[i]);
        d11_buf_puts(j, "}");
    }
    d11_buf_puts(j, "},\"outcomes\":[");
    for (int i = 0; i < r->c.n_outcomes; i++) {
        const d11_bench_outcome *x = &r->c.outcome[i];
        d11_buf_printf(j, "%s{\"status\":%d,\"code\":", i ? "," : "", x->status);
        d11_buf_json_str(j, x->code, strlen(x->code));
        d11_buf_printf(j, ",\"class\":\"%s\",\"count\":%lld}", cls_name(x->cls), (long long)x->count);
    }
    d11_buf_printf(j, "],\"connections_established\":%lld,\"connect_errors\":%lld}",
                   (long long)r->c.connects, (long long)r->c.connect_errors);
}

static void json_config(d11_buf *j, const bench_cli *b)
{
    const d11_bench_opts *o = &b->o;
    d11_buf_puts(j, "\"config\":{\"url\":");
    d11_buf url;
    d11_buf_init(&url, 128);
    d11_buf_printf(&url, "http://%s%s", o->url.hostport, o->url.base);
    d11_buf_json_str(j, url.data, url.len);
    d11_buf_free(&url);
    d11_buf_printf(j,
                   ",\"connections\":%d,\"threads\":%d,\"pipeline\":%d,\"duration_s\":%.3f,"
                   "\"requests\":%lld,\"timeout_ms\":%d,\"mix\":{\"read\":%d,\"order\":%d,"
                   "\"pay\":%d,\"cancel\":%d},\"skus\":%llu,\"hot_sku_share\":%.4f,\"users\":%llu,"
                   "\"user_dist\":",
                   o->connections, o->threads, o->pipeline, b->duration_s, (long long)b->requests,
                   o->timeout_ms, o->wl.weight[0], o->wl.weight[1], o->wl.weight[2], o->wl.weight[3],
                   (unsigned long long)o->wl.skus, o->wl.hot_share, (unsigned long long)o->wl.users);
    d11_buf_json_str(j, b->user_dist_text, strlen(b->user_dist_text));
    d11_buf_printf(j, ",\"stress\":%s}", b->stress ? "true" : "false");
}

static void json_slo(d11_buf *j, const bench_cli *b, bool ok, const char *why)
{
    d11_buf_puts(j, "\"slo\":{");
    if (b->slo_p99_ms > 0) d11_buf_printf(j, "\"p99_ms\":%.3f,", b->slo_p99_ms);
    if (b->slo_errors >= 0) d11_buf_printf(j, "\"error_ratio\":%.6f,", b->slo_errors);
    d11_buf_printf(j, "\"broken\":%s,\"reason\":", ok ? "false" : "true");
    d11_buf_json_str(j, why, strlen(why));
    d11_buf_puts(j, "}");
}

/* ---- one run ---- */

static int run_once(bench_cli *b)
{
    d11_bench_result r;
    d11_bench_result_init(&r);
    int rc = d11_bench_run(&b->o, b->rate, b->duration_s, b->requests, "", &r);
    if (rc < 0) {
        fprintf(stderr, "d11 bench: cannot start the load: %s\n", d11_strerror(rc));
        d11_bench_result_release(&r);
        return 1;
    }
    char why[256];
    bool ok = slo_ok(b, &r, why, sizeof why);
    if (b->json) {
        d11_buf j;
        d11_buf_init(&j, 8192);
        d11_buf_puts(&j, "{");
        json_config(&j, b);
        d11_buf_puts(&j, ",\"result\":");
        json_result(&j, &r);
        d11_buf_puts(&j, ",");
        json_slo(&j, b, ok, why);
        d11_buf_puts(&j, ",");
        d11_bench_json_series(&j, &r);
        d11_buf_puts(&j, "}\n");
        fwrite(j.data, 1, j.len, stdout);
        d11_buf_free(&j);
    } else {
        print_table(b, &r);
        if (b->slo_p99_ms > 0 || b->slo_errors >= 0)
            printf("\nSLO        %s%s%s\n", ok ? "met" : "BROKEN: ", ok ? "" : why, "");
    }
    fflush(stdout);
    if (b->html) {
        char about[512];
        snprintf(about, sizeof about, "%s %s, %s, %d connections, mix %s", b->o.url.hostport,
                 b->o.nstages ? "ramp" : b->rate > 0 ? "open loop" : "closed loop",
                 b->o.nstages ? "stages" : "fixed rate", b->o.connections, b->mix_text);
        int hrc = d11_bench_html(b->html, about, &r);
        if (hrc < 0) fprintf(stderr, "d11 bench: cannot write %s: %s\n", b->html, d11_strerror(hrc));
    }
    int ret = 0;
    int64_t auth_bad = d11_bench_auth_failures(&r);
    if (r.c.done > 0 && auth_bad * 2 > r.c.done) {
        fprintf(stderr, "d11 bench: %lld of %lld answers were 401/403: the token is missing, wrong or lacks a "
                        "scope (--token-file DATA/admin.token, or d11 ctl token create)\n",
                (long long)auth_bad, (long long)r.c.done);
        ret = 2;
    } else if (r.c.done == 0) {
        fprintf(stderr, "d11 bench: no request was answered (%lld connect failures): is %s up?\n",
                (long long)r.c.connect_errors, b->o.url.hostport);
        ret = 1;
    } else if (r.interrupted) {
        fprintf(stderr, "d11 bench: interrupted\n");
        ret = 1;
    } else if (!ok) {
        fprintf(stderr, "d11 bench: SLO broken: %s\n", why);
        ret = 3;
    }
    d11_bench_result_release(&r);
    return ret;
}

/* ---- capacity search ---- */

typedef struct cap_step {
    double  rate, achieved, error_ratio;
    int64_t p50, p99, max, unsent;
    bool    pass;
    char    why[160];
} cap_step;

static bool run_step(bench_cli *b, double rate, int n, cap_step *s, d11_bench_result *r)
{
    char label[64];
    snprintf(label, sizeof label, "[step %d @ %.0f/s] ", n, rate);
    memset(s, 0, sizeof *s);
    s->rate = rate;
    if (d11_bench_run(&b->o, rate, b->cap_step_s, 0, label, r) < 0) {
        snprintf(s->why, sizeof s->why, "could not start");
        return false;
    }
    s->achieved = r->elapsed_s > 0 ? (double)r->c.done / r->elapsed_s : 0;
    s->error_ratio = d11_bench_error_ratio(r);
    s->p50 = d11_hist_percentile(&r->lat, 50);
    s->p99 = d11_hist_percentile(&r->lat, 99);
    s->max = r->lat.max;
    s->unsent = r->unsent;
    s->pass = slo_ok(b, r, s->why, sizeof s->why);
    if (s->pass && s->achieved < 0.95 * rate) {
        s->pass = false;
        snprintf(s->why, sizeof s->why, "answered %.0f/s < 95%% of the target", s->achieved);
    }
    if (r->interrupted) {
        s->pass = false;
        snprintf(s->why, sizeof s->why, "interrupted");
    }
    if (!b->o.quiet)
        fprintf(stderr, "%s=> %s%s%s\n", label, s->pass ? "held" : "BROKE", s->pass ? "" : ": ", s->why);
    return true;
}

static void pause_ms(int ms)
{
    int64_t end = d11_mono_ms() + ms;
    while (!d11__bench_stop && d11_mono_ms() < end) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static int find_capacity(bench_cli *b)
{
    enum { STEPS_MAX = 128 };
    cap_step steps[STEPS_MAX];
    int n = 0;
    double best = 0, bad = 0, rate = b->cap_start;
    d11_bench_result r;
    d11_bench_result_init(&r);
    int64_t answered = 0;
    for (int i = 0; i < b->cap_max_steps && n < STEPS_MAX && !d11__bench_stop; i++) {
        if (n) pause_ms(b->cap_pause_ms);
        if (!run_step(b, rate, n + 1, &steps[n], &r)) break;
        answered += r.c.done;
        if (steps[n++].pass) {
            best = rate;
            rate *= b->cap_factor;
        } else {
            bad = rate;
            break;
        }
    }
    for (int i = 0; i < b->cap_refine && best > 0 && bad > 0 && n < STEPS_MAX && !d11__bench_stop; i++) {
        double mid = (best + bad) / 2;
        if (mid - best < 1) break;
        pause_ms(b->cap_pause_ms);
        if (!run_step(b, mid, n + 1, &steps[n], &r)) break;
        answered += r.c.done;
        if (steps[n++].pass) best = mid;
        else bad = mid;
    }
    d11_bench_result_release(&r);

    if (b->json) {
        d11_buf j;
        d11_buf_init(&j, 4096);
        d11_buf_puts(&j, "{");
        json_config(&j, b);
        d11_buf_printf(&j,
                       ",\"find_capacity\":{\"slo_p99_ms\":%.3f,\"slo_errors\":%.6f,\"start\":%.1f,"
                       "\"factor\":%.3f,\"step_s\":%.3f},\"steps\":[",
                       b->slo_p99_ms, b->slo_errors, b->cap_start, b->cap_factor, b->cap_step_s);
        for (int i = 0; i < n; i++) {
            cap_step *s = &steps[i];
            d11_buf_printf(&j,
                           "%s{\"rate_target\":%.1f,\"answered_per_s\":%.1f,\"p50_us\":%lld,"
                           "\"p99_us\":%lld,\"max_us\":%lld,\"error_ratio\":%.6f,\"unsent\":%lld,"
                           "\"held\":%s,\"reason\":",
                           i ? "," : "", s->rate, s->achieved, (long long)s->p50, (long long)s->p99,
                           (long long)s->max, s->error_ratio, (long long)s->unsent,
                           s->pass ? "true" : "false");
            d11_buf_json_str(&j, s->why, strlen(s->why));
            d11_buf_puts(&j, "}");
        }
        d11_buf_printf(&j, "],\"sustainable_rate\":%.1f,\"first_broken_rate\":%.1f,\"interrupted\":%s}\n",
                       best, bad, d11__bench_stop ? "true" : "false");
        fwrite(j.data, 1, j.len, stdout);
        d11_buf_free(&j);
    } else {
        printf("d11 bench --find-capacity  %s  SLO p99 <= %.3f ms, error ratio <= %.4f, %.1f s steps\n\n",
               b->o.url.hostport, b->slo_p99_ms, b->slo_errors, b->cap_step_s);
        printf("  %4s %12s %12s %10s %10s %10s %9s  %s\n", "step", "target/s", "answered/s", "p50 ms",
               "p99 ms", "max ms", "errors", "verdict");
        for (int i = 0; i < n; i++) {
            cap_step *s = &steps[i];
            char p50[24], p99[24], mx[24];
            fmt_ms(p50, sizeof p50, s->p50);
            fmt_ms(p99, sizeof p99, s->p99);
            fmt_ms(mx, sizeof mx, s->max);
            printf("  %4d %12.0f %12.0f %10s %10s %10s %8.3f%%  %s%s%s\n", i + 1, s->rate, s->achieved,
                   p50, p99, mx, 100 * s->error_ratio, s->pass ? "held" : "broke", s->pass ? "" : ": ",
                   s->why);
        }
        if (best > 0)
            printf("\nsustainable rate: %.0f req/s%s\n", best,
                   bad > 0 ? "" : "  (the last step still held: raise --cap-max-steps)");
        else
            printf("\nsustainable rate: none (the first step at %.0f req/s already broke the SLO)\n",
                   b->cap_start);
    }
    fflush(stdout);
    if (answered == 0) {
        fprintf(stderr, "d11 bench: no request was answered: is %s up?\n", b->o.url.hostport);
        return 1;
    }
    if (d11__bench_stop) return 1;
    return best > 0 ? 0 : 3;
}

/* ---- entry ---- */

int d11_bench_main(int argc, char **argv)
{
    static bench_cli b; /* large (histogram-free, but header buffers): keep it off the stack */
    memset(&b, 0, sizeof b);
    b.o.connections = 32;
    b.o.threads = 1;
    b.o.pipeline = 1;
    b.o.timeout_ms = 5000;
    b.o.drain_ms = 2000;
    b.o.wl.skus = 100;
    b.o.wl.hot_share = 0.9;
    snprintf(b.o.wl.sku_prefix, sizeof b.o.wl.sku_prefix, "BENCH-");
    b.o.wl.users = 1000000;
    b.o.wl.quantity = 1;
    b.stock = 1000000000;
    b.price_cents = 1999;
    b.slo_errors = -1;
    b.cap_start = 500;
    b.cap_factor = 1.5;
    b.cap_step_s = 5;
    b.cap_max_steps = 15;
    b.cap_refine = 2;
    b.cap_pause_ms = 1000;
    snprintf(b.mix_text, sizeof b.mix_text, "order=1");
    snprintf(b.user_dist_text, sizeof b.user_dist_text, "uniform");

    int rc = parse_args(&b, argc, argv);
    if (rc >= 0) return rc;
    if (b.o.connections < b.o.threads) b.o.threads = b.o.connections;

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d11__bench_stop = 0;

    if (b.setup && (rc = do_setup(&b)) != 0) return rc;
    if (b.setup_only) return 0;
    if (b.find_capacity) return find_capacity(&b);
    return run_once(&b);
}
