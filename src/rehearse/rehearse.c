/*
 * rehearse.c — `d11 rehearse`: a Double-11 rehearsal against a running d11 (issue 11,
 * item 7; docs/rehearsal.md). Flags, then the timeline:
 *
 *   setup       the rehearsal SKUs (stress-tagged POST /v1/products; 409 exists is fine)
 *   capacity    --capacity N, or a short closed-loop probe (2xx per second)
 *   load        a load thread runs the stages one after the other (open loop at
 *               mult × C; d11_bench_run from src/bench) and records each one's result
 *   main        every 50 ms: fire / end the faults of the fault stage, send a refusal
 *               probe (every 200 ms) during overload stages
 *   sampler     a thread: every second, a sample of /metrics + /admin/cells
 *   after       end every fault still active (a paused cell is always SIGCONTed), wait
 *               for the cells, read the stock, run `d11 audit`, evaluate the checks,
 *               write --json / --report
 *
 * Exit status: 0 every check passed (skipped ones do not fail), 1 a check failed or the
 * run could not be done, 2 usage. Threads: main (faults, probes) + the load thread (+
 * loadgen's workers) + the sampler thread; they share only the run's stage table, series
 * and samples, under run->mu. The stop flag is
 * loadgen's d11__bench_stop (set by SIGINT/SIGTERM).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cmd.h"
#include "rehearse.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

static const char usage_text[] =
    "usage: d11 rehearse [FLAGS]\n"
    "\n"
    "A Double-11 rehearsal against a RUNNING d11, with stress (shadow) traffic only\n"
    "(X-D11-Stress: 1: shadow tables and shadow stock; the real stock is never touched).\n"
    "Finds the capacity C, ramps open loop to C and past it, then runs a scripted sequence\n"
    "of faults, samples /metrics and /admin/cells every second, checks that protection,\n"
    "breakers and recovery acted and that the invariants hold, and writes a report.\n"
    "\n"
    "  --url URL            gateway (default $D11_URL, else " DEFAULT_URL ")\n"
    "  --token T | --token-file F   admin token (default $D11_TOKEN, $D11_TOKEN_FILE, DATA/admin.token)\n"
    "  --data DIR           the platform's data directory: process drills (pid in DIR/cell-N.lock)\n"
    "                       and `d11 audit` after the run; without it those are skipped\n"
    "  --quick              the short profile (~40 s: 2 s stages, compressed faults)\n"
    "  --capacity N         skip the capacity probe: C = N orders/s\n"
    "  --probe-s S          closed-loop capacity probe length (default 5, quick 2)\n"
    "  --stages LIST        load stages as multiples of C (default 0.5,1,2,3)\n"
    "  --stage-s S          seconds per load stage (default 10, quick 2)\n"
    "  --faults LIST        pause,slow-commits,relay-down,degrade,kill (default all, in this order)\n"
    "                       or none\n"
    "  --drill-cell N       the cell of the process drills (default 0)\n"
    "  --pause-s S          how long the cell stays SIGSTOPped (default 9, quick 6; for its breaker to\n"
    "                       open surely: > 5 s (the breaker's window) + the --request-timeout-ms)\n"
    "  --slow-ms MS         commit delay of the slow-commits experiment (default 100)\n"
    "  --connections C      load connections (default 256); --threads T (default 2)\n"
    "  --skus N             rehearsal SKUs (default 16); --sku-prefix P (default REHEARSE-)\n"
    "checks\n"
    "  --goodput-min F      goodput at the top stage >= F x C (default 0.5)\n"
    "  --p99-factor F       admitted p99 at the top stage <= F x the lowest stage's (default 10)\n"
    "  --refusal-ms MS      refusals answered within MS at p99 (default 1000)\n"
    "  --timeouts-max R     timeouts + 504 + transport failures + unsent above 1C <= R (default 0.01)\n"
    "  --recover-s S        a killed cell must be back within S (default 15, quick 8)\n"
    "output\n"
    "  --json               the result document on stdout\n"
    "  --report FILE        an HTML report (SVG plots; opens offline)\n"
    "  --quiet              no progress on stderr\n"
    "\n"
    "exit status: 0 every check passed; 1 a check failed (or the run could not be done); 2 usage.\n";

static void on_signal(int sig)
{
    (void)sig;
    d11__bench_stop = 1;
}

static int usage_err(const char *what, const char *val)
{
    fprintf(stderr, "d11 rehearse: %s%s%s (see d11 rehearse --help)\n", what, val ? ": " : "", val ? val : "");
    return 2;
}

static int parse_args(d11_rh_opts *o, int argc, char **argv)
{
    const char *url = NULL, *token = NULL, *token_file = NULL, *stages = NULL, *faults = NULL;
    double stage_s = 0, pause_s = 0, v;
    bool quick = false;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick")) quick = true;
    d11_rh_plan_defaults(o, quick);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(a, "--quick")) continue;
        if (!strcmp(a, "--json")) { o->json = true; continue; }
        if (!strcmp(a, "--quiet")) { o->quiet = true; continue; }
        if (strncmp(a, "--", 2) != 0) return usage_err("unexpected argument", a);
        if (i + 1 >= argc) return usage_err("a value is needed after", a);
        const char *val = argv[++i];
#define NUM(lo, hi) do { if (!d11_parse_double(val, lo, hi, &v)) return usage_err(a, val); } while (0)
        if (!strcmp(a, "--url")) url = val;
        else if (!strcmp(a, "--token")) token = val;
        else if (!strcmp(a, "--token-file")) token_file = val;
        else if (!strcmp(a, "--data")) o->data_dir = val;
        else if (!strcmp(a, "--report")) o->report = val;
        else if (!strcmp(a, "--stages")) stages = val;
        else if (!strcmp(a, "--faults")) faults = val;
        else if (!strcmp(a, "--capacity")) { NUM(1, 1e8); o->capacity = v; }
        else if (!strcmp(a, "--probe-s")) { NUM(0.5, 600); o->probe_s = v; }
        else if (!strcmp(a, "--stage-s")) { NUM(0.5, 3600); stage_s = v; }
        else if (!strcmp(a, "--drill-cell")) { NUM(0, D11_RH_CELLS_MAX - 1); o->drill_cell = (int)v; }
        else if (!strcmp(a, "--pause-s")) { NUM(0.5, 600); pause_s = v; }
        else if (!strcmp(a, "--slow-ms")) { NUM(1, 60000); o->slow_ms = v; }
        else if (!strcmp(a, "--connections")) { NUM(1, D11_BENCH_CONNS_MAX); o->bo.connections = (int)v; }
        else if (!strcmp(a, "--threads")) { NUM(1, D11_BENCH_THREADS_MAX); o->bo.threads = (int)v; }
        else if (!strcmp(a, "--skus")) { NUM(1, 1000); o->bo.wl.skus = (uint64_t)v; }
        else if (!strcmp(a, "--sku-prefix")) {
            if (strlen(val) >= 20 || strspn(val, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") !=
                                         strlen(val))
                return usage_err("--sku-prefix: up to 19 of [A-Za-z0-9_.-]", val);
            snprintf(o->bo.wl.sku_prefix, sizeof o->bo.wl.sku_prefix, "%s", val);
        }
        else if (!strcmp(a, "--goodput-min")) { NUM(0, 1e6); o->goodput_min = v; }
        else if (!strcmp(a, "--p99-factor")) { NUM(0, 1e6); o->p99_factor = v; }
        else if (!strcmp(a, "--refusal-ms")) { NUM(0, 600000); o->refusal_ms = v; }
        else if (!strcmp(a, "--timeouts-max")) { NUM(0, 1); o->timeouts_max = v; }
        else if (!strcmp(a, "--recover-s")) { NUM(0.5, 600); o->recover_s = v; }
        else return usage_err("unknown flag", a);
#undef NUM
    }
    char err[256];
    if (stages && d11_rh_plan_stages(o, stages, err, sizeof err) < 0) return usage_err(err, NULL);
    if (stage_s > 0)
        for (int i = 0; i < o->nstages; i++)
            if (!o->stages[i].faults) o->stages[i].dur_s = stage_s;
    if (faults && d11_rh_plan_faults(o, faults, err, sizeof err) < 0) return usage_err(err, NULL);
    if (pause_s > 0) {
        for (int i = 0; i < o->nfaults; i++)
            if (o->faults[i].kind == D11_RH_F_PAUSE) o->faults[i].dur_s = pause_s;
        double t = o->nfaults ? o->faults[0].at_s : 0, gap = quick ? 1 : 3;
        for (int i = 0; i < o->nfaults; i++) { /* re-lay the sequence around the new length */
            o->faults[i].at_s = t;
            t += o->faults[i].dur_s + gap;
        }
        o->stages[o->nstages - 1].dur_s = o->nfaults ? t - gap + o->tail_s : 0;
    }
    if (token && token_file) return usage_err("give --token or --token-file, not both", NULL);
    const char *env_url = getenv("D11_URL"), *env_tok = getenv("D11_TOKEN"), *env_tf = getenv("D11_TOKEN_FILE");
    if (!url) url = env_url && *env_url ? env_url : DEFAULT_URL;
    static char deflt_tf[1100];
    if (!token && !token_file) {
        const char *data = o->data_dir ? o->data_dir : getenv("D11_DATA");
        snprintf(deflt_tf, sizeof deflt_tf, "%s/admin.token", data && *data ? data : "./data");
        if (env_tok && *env_tok) token = env_tok;
        else if (env_tf && *env_tf) token_file = env_tf;
        else if (access(deflt_tf, R_OK) == 0) token_file = deflt_tf;
    }
    if (d11_url_parse(url, &o->bo.url, err, sizeof err) < 0) return usage_err("--url", err);
    if (d11_httpc_token_load(token, token_file, o->token, sizeof o->token, err, sizeof err) < 0) {
        fprintf(stderr, "d11 rehearse: %s\n", err);
        return 2;
    }
    if (o->token[0]) snprintf(o->bo.auth_header, sizeof o->bo.auth_header, "Authorization: Bearer %s\r\n", o->token);
    snprintf(o->bo.extra_headers, sizeof o->bo.extra_headers, "X-D11-Stress: 1\r\n");
    if (o->bo.connections < o->bo.threads) o->bo.threads = o->bo.connections;
    return -1;
}

/* ---- the load thread ---- */

static double since(const d11_rh_run *r)
{
    return (double)(d11_mono_ns() - r->t0_ns) / 1e9;
}

static int64_t outcomes(const d11_bench_result *res, int status_lo, int status_hi)
{
    int64_t n = 0;
    for (int i = 0; i < res->c.n_outcomes; i++)
        if (res->c.outcome[i].status >= status_lo && res->c.outcome[i].status <= status_hi) n += res->c.outcome[i].count;
    return n;
}

static void stage_record(d11_rh_run *r, d11_rh_stage *s, const d11_bench_result *res)
{
    pthread_mutex_lock(&r->mu);
    s->t1_s = since(r);
    s->done = true;
    s->sent = res->c.sent;
    s->ok = res->c.cls[D11_CLS_OK];
    s->refused = outcomes(res, 429, 429) + outcomes(res, 503, 503);
    s->timeouts = outcomes(res, 0, 0);
    s->http504 = outcomes(res, 504, 504);
    s->unsent = res->unsent;
    s->other_err = res->c.cls[D11_CLS_ERROR] - s->refused - s->timeouts - s->http504;
    s->ok_per_s = s->dur_s > 0 ? (double)s->ok / s->dur_s : 0;
    s->ok_p50_us = d11_hist_percentile(&res->lat_ok, 50);
    s->ok_p99_us = d11_hist_percentile(&res->lat_ok, 99);
    s->p99_us = d11_hist_percentile(&res->lat, 99);
    for (int i = 0; i < res->nseries && r->nseries < D11_RH_SERIES_MAX; i++) {
        d11_bench_sec x = res->series[i];
        x.t_s += s->t0_s;
        r->series[r->nseries++] = x;
    }
    pthread_mutex_unlock(&r->mu);
}

static void *load_main(void *arg)
{
    d11_rh_run *r = arg;
    d11_rh_opts *o = r->o;
    d11_bench_result res;
    d11_bench_result_init(&res);
    for (int i = 0; i < o->nstages && !d11__bench_stop; i++) {
        d11_rh_stage *s = &o->stages[i];
        if (s->dur_s <= 0 || s->rate <= 0) continue;
        pthread_mutex_lock(&r->mu);
        r->cur_stage = i;
        s->t0_s = since(r);
        pthread_mutex_unlock(&r->mu);
        char label[40];
        snprintf(label, sizeof label, "[%s %.0f/s] ", s->name, s->rate);
        if (d11_bench_run(&o->bo, s->rate, s->dur_s, 0, label, &res) < 0) {
            fprintf(stderr, "d11 rehearse: stage %s could not start its load\n", s->name);
            break;
        }
        stage_record(r, s, &res);
    }
    pthread_mutex_lock(&r->mu);
    r->cur_stage = o->nstages;
    pthread_mutex_unlock(&r->mu);
    d11_bench_result_release(&res);
    return NULL;
}

/* ---- the main thread's loop ---- */

static void say(const d11_rh_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const d11_rh_opts *o, const char *fmt, ...)
{
    if (o->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rehearse: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* One sample into r->samples (the sampler thread, and once more at the end). */
static void take_sample(d11_rh_run *r, d11_httpc *c)
{
    d11_rh_sample s;
    pthread_mutex_lock(&r->mu);
    d11_rh_sample prev = r->nsamples ? r->samples[r->nsamples - 1] : (d11_rh_sample){0};
    bool have_prev = r->nsamples > 0;
    pthread_mutex_unlock(&r->mu);
    d11_rh_sample_take(c, r->o->bo.auth_header, since(r), have_prev ? &prev : NULL, &s);
    pthread_mutex_lock(&r->mu);
    if (r->nsamples < D11_RH_SAMPLES_MAX) r->samples[r->nsamples++] = s;
    pthread_mutex_unlock(&r->mu);
}

/* The sampler thread: a sample about every second until r->sampling goes false. A sample
 * can take longer than a second (a SIGSTOPped cell makes /admin/cells wait for its probe
 * timeout); it runs apart from the main thread so that the faults keep their times. */
static void *sampler_main(void *arg)
{
    d11_rh_run *r = arg;
    d11_httpc c;
    d11_httpc_init(&c, &r->o->bo.url, 2500);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool go = r->sampling;
        pthread_mutex_unlock(&r->mu);
        if (!go) break;
        int64_t t0 = d11_mono_ms();
        take_sample(r, &c);
        int64_t left = 1000 - (d11_mono_ms() - t0);
        while (left > 0) {
            struct timespec ts = {0, (left > 100 ? 100 : left) * 1000000L};
            nanosleep(&ts, NULL);
            left -= 100;
            pthread_mutex_lock(&r->mu);
            go = r->sampling;
            pthread_mutex_unlock(&r->mu);
            if (!go) break;
        }
    }
    d11_httpc_release(&c);
    return NULL;
}

/* All cells up in the latest sample. */
static bool all_up(d11_rh_run *r)
{
    pthread_mutex_lock(&r->mu);
    bool ok = false;
    if (r->nsamples) {
        const d11_rh_sample *x = &r->samples[r->nsamples - 1];
        int up = 0;
        for (int i = 0; i < x->ncells; i++) up += x->cell_up[i] == 1;
        ok = x->ok && x->ncells > 0 && up == x->ncells;
    }
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static void fault_begin(d11_rh_run *r, d11_httpc *c, d11_rh_fault *f)
{
    f->t0_s = since(r);
    d11_rh_fault_start(c, r->o, f);
    f->t1_s = f->t0_s;
    say(r->o, "t=%.1fs fault %s: %s%s", f->t0_s, d11_rh_fault_name(f->kind), d11_rh_fstatus_name(f->status),
        f->status == D11_RH_ACTIVE ? "" : " — ");
    if (f->status != D11_RH_ACTIVE) say(r->o, "  %s", f->why);
}

static void fault_end(d11_rh_run *r, d11_httpc *c, d11_rh_fault *f)
{
    d11_rh_fault_stop(c, r->o, f);
    f->t1_s = since(r);
    say(r->o, "t=%.1fs fault %s ended: %s", f->t1_s, d11_rh_fault_name(f->kind), d11_rh_fstatus_name(f->status));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void timeline(d11_rh_run *r, d11_httpc *c, d11_httpc *pc)
{
    d11_rh_opts *o = r->o;
    double next_poll = 0, next_probe = 0;
    uint64_t seq = 0;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int cur = r->cur_stage;
        double st0 = cur >= 0 && cur < o->nstages ? o->stages[cur].t0_s : 0;
        pthread_mutex_unlock(&r->mu);
        if (cur >= o->nstages) break;
        double now = since(r);
        if (d11__bench_stop) {
            sleep_ms(100);
            continue;
        }
        const d11_rh_stage *s = cur >= 0 ? &o->stages[cur] : NULL;
        if (s && s->faults) {
            for (int i = 0; i < o->nfaults; i++) {
                d11_rh_fault *f = &o->faults[i];
                if (f->status == D11_RH_PENDING && now - st0 >= f->at_s) fault_begin(r, c, f);
                else if (f->status == D11_RH_ACTIVE && now >= f->t0_s + f->dur_s) fault_end(r, c, f);
                else if (f->status == D11_RH_ACTIVE && f->kind == D11_RH_F_KILL && now >= next_poll &&
                         now >= f->t0_s + 0.5) {
                    next_poll = now + 0.5;
                    if (d11_rh_kill_recovered(c, o, f)) fault_end(r, c, f);
                }
            }
        }
        if (s && !s->faults && s->mult > 1 && now >= next_probe && now - st0 > 0.5) {
            d11_rh_probe(pc, o, r, ++seq);
            next_probe = now + 0.2;
        }
        sleep_ms(50);
    }
    for (int i = 0; i < o->nfaults; i++) /* interrupted or the stage ended early */
        if (o->faults[i].status == D11_RH_ACTIVE) fault_end(r, c, &o->faults[i]);
    for (int i = 0; i < o->nfaults; i++)
        if (o->faults[i].status == D11_RH_PENDING) {
            o->faults[i].status = D11_RH_SKIPPED;
            snprintf(o->faults[i].why, sizeof o->faults[i].why, "not reached (the run stopped first)");
        }
    /* settle: the cells back up (bounded) */
    for (int k = 0; k < (int)(o->recover_s * 10) && !d11__bench_stop && !all_up(r); k++) sleep_ms(100);
}

static int find_capacity(d11_rh_run *r)
{
    d11_rh_opts *o = r->o;
    if (o->capacity > 0) {
        r->capacity = o->capacity;
        snprintf(r->capacity_how, sizeof r->capacity_how, "given with --capacity");
        return 0;
    }
    d11_bench_opts bo = o->bo;
    bo.connections = bo.connections < 64 ? bo.connections : 64;
    if (bo.threads > bo.connections) bo.threads = bo.connections;
    d11_bench_result res;
    d11_bench_result_init(&res);
    int rc = d11_bench_run(&bo, 0, o->probe_s, 0, "[capacity] ", &res);
    r->capacity = rc == 0 ? (double)res.c.cls[D11_CLS_OK] / o->probe_s : 0;
    snprintf(r->capacity_how, sizeof r->capacity_how, "closed loop, %d connections, %.1f s", bo.connections,
             o->probe_s);
    d11_bench_result_release(&res);
    return r->capacity > 0 ? 0 : -1;
}

int d11_rehearse_main(int argc, char **argv)
{
    static d11_rh_opts o; /* large: off the stack */
    static d11_rh_run r;
    memset(&o, 0, sizeof o);
    memset(&r, 0, sizeof r);
    o.bo.connections = 256;
    o.bo.threads = 2;
    o.bo.pipeline = 1;
    o.bo.timeout_ms = 5000;
    o.bo.drain_ms = 2000;
    o.bo.wl.skus = 16;
    o.bo.wl.hot_share = 0.5;
    snprintf(o.bo.wl.sku_prefix, sizeof o.bo.wl.sku_prefix, "REHEARSE-");
    o.bo.wl.users = 1000000;
    o.bo.wl.quantity = 1;
    char err[256];
    if (d11_mix_parse(&o.bo.wl, "order=1", err, sizeof err) < 0 ||
        d11_user_dist_parse(&o.bo.wl, "uniform", err, sizeof err) < 0)
        d11_fatal("rehearse: workload defaults: %s", err);
    int rc = parse_args(&o, argc, argv);
    if (rc >= 0) return rc;
    o.bo.quiet = o.quiet;
    static char self[1024];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    self[k > 0 ? k : 0] = 0;
    o.self_exe = self;

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d11__bench_stop = 0;

    r.o = &o;
    r.cur_stage = -1;
    r.audit_rc = -1;
    pthread_mutex_init(&r.mu, NULL);
    r.series = calloc(D11_RH_SERIES_MAX, sizeof *r.series);
    r.samples = calloc(D11_RH_SAMPLES_MAX, sizeof *r.samples);
    if (!r.series || !r.samples) d11_fatal("rehearse: out of memory");
    d11_httpc c, pc;
    d11_httpc_init(&c, &o.bo.url, 2500);
    d11_httpc_init(&pc, &o.bo.url, 3000);
    int status = 1;
    if (d11_rh_setup(&c, &o) < 0) goto done;
    r.real_sold_before = d11_rh_sold(&c, &o, false);
    say(&o, "capacity: %s", o.capacity > 0 ? "given" : "closed-loop probe");
    if (find_capacity(&r) < 0) fprintf(stderr, "d11 rehearse: no order succeeded in the capacity probe\n");
    say(&o, "C = %.0f orders/s", r.capacity);
    for (int i = 0; i < o.nstages; i++) o.stages[i].rate = o.stages[i].mult * r.capacity;

    r.t0_ns = d11_mono_ns();
    pthread_t th;
    if (r.capacity > 0) {
        pthread_t sth;
        r.sampling = true;
        if (pthread_create(&th, NULL, load_main, &r) != 0 || pthread_create(&sth, NULL, sampler_main, &r) != 0)
            d11_fatal("rehearse: cannot start the load and sampler threads");
        timeline(&r, &c, &pc);
        pthread_join(th, NULL);
        pthread_mutex_lock(&r.mu);
        r.sampling = false;
        pthread_mutex_unlock(&r.mu);
        pthread_join(sth, NULL);
        take_sample(&r, &c); /* the state at the end */
    }
    r.real_sold_after = d11_rh_sold(&c, &o, false);
    r.shadow_sold_after = d11_rh_sold(&c, &o, true);
    r.audit_rc = d11_rh_audit(&o, r.audit_detail, sizeof r.audit_detail);
    d11_rh_evaluate(&r);
    if (d11__bench_stop) r.pass = false;
    status = r.pass ? 0 : 1;
    d11_buf j;
    d11_buf_init(&j, 1 << 16);
    d11_rh_json(&j, &r);
    if (o.json) fwrite(j.data, 1, j.len, stdout);
    d11_buf_free(&j);
    if (!o.json || !o.quiet) {
        FILE *f = o.json ? stderr : stdout;
        for (int i = 0; i < r.nchecks; i++)
            fprintf(f, "  %-34s %-7s %s\n", r.checks[i].name,
                    r.checks[i].status > 0 ? "pass" : r.checks[i].status == 0 ? "FAIL" : "skipped", r.checks[i].detail);
        fprintf(f, "verdict: %s\n", r.pass ? "PASS" : "FAIL");
    }
    if (o.report) {
        int hr = d11_rh_html(o.report, &r);
        if (hr < 0) {
            fprintf(stderr, "d11 rehearse: cannot write %s: %s\n", o.report, d11_strerror(hr));
            status = 1;
        }
    }
done:
    d11_httpc_release(&c);
    d11_httpc_release(&pc);
    free(r.series);
    free(r.samples);
    pthread_mutex_destroy(&r.mu);
    return status;
}
