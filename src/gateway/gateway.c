/*
 * gateway.c — `d11 gateway`: the HTTP front door. Entry point, struct gw, the threads and
 * their epoll loop. See gw.h for the modules and the threading model, docs/gateway.md for
 * the design as a whole.
 *
 * Each thread runs one d11_loop (core/loop.h). One iteration: wait (at most until the
 * next timer, at most GW_SWEEP_MS); the loop hands each readiness event to its d11_io
 * (client connections and the listener: client.c; upstream links: upstream.c via
 * rpc/link.c; the wake eventfd); timers run (the GW_SWEEP_MS sweep: client timers, token
 * and rules reloads); then the before-sleep hooks, in this order: upstream tick
 * (deadlines, reconnects, routing refresh), upstream flush, client flush (responses,
 * stalled pipelines), upstream flush again — so a burst costs one write(2) per
 * connection.
 *
 * Shutdown: SIGINT/SIGTERM are taken by the main thread (sigtimedwait, so no signal
 * handler and no global); it sets gw.stop and wakes every loop (d11_wake_signal). Each
 * thread then closes its listener, stops reading, closes idle connections, answers what
 * is in flight (upstream deadlines bound that), and exits when its last connection is
 * closed or after request timeout + D11_GW_DRAIN_EXTRA_MS. A second signal exits at once
 * with status 1.
 */
#include "gw.h"
#include "products.h"
#include "sale.h"

#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "../cmd.h"
#include "router.h"
#include "../core/fault.h"
#include "stats.h"

/* ---- the loop's callbacks ---- */

static void begin_drain(gw_thread *t)
{
    t->stopping = true;
    t->drain_deadline_ms = gw_now_ms(t) + t->gw->cfg.request_timeout_ms + D11_GW_DRAIN_EXTRA_MS;
    gw_clients_drain(t);
}

/* The main thread signalled: a stop (the only message it sends). */
static void on_wake(d11_loop *l, d11_wake *w)
{
    (void)w;
    gw_thread *t = gw_thread_of(l);
    if (!t->stopping && atomic_load(&t->gw->stop)) begin_drain(t);
}

/* Thread 0, every D11_CFLOW_TICK_MS: cluster flow leases (cluster_flow.h). */
static void on_cflow_timer(d11_loop *l, d11_timer *tm)
{
    (void)tm;
    gw_cflow_tick(gw_thread_of(l));
}

/* Every GW_SWEEP_MS: client timers (408, idle), token and rules file reloads. */
static void on_sweep(d11_loop *l, d11_timer *tm)
{
    (void)tm;
    gw_thread *t = gw_thread_of(l);
    int64_t now = gw_now_ms(t);
    gw_clients_sweep(t);
    d11_auth_maybe_reload(t->auth, now);
    if (t->id == 0) d11_rules_store_maybe_reload(&t->gw->rules, now);
    if (t->id == 0 && t->gw->prot.cfg.on) {
        int64_t mono = d11_mono_ms();
        if (mono - t->gw->prot.last_tick_ms >= D11_PROTECT_BUCKET_MS / 2)
            gw_protect_tick(&t->gw->prot, mono,
                            t->gw->prot.cfg.cpu_max_pct ? gw_protect_cpu_sample(&t->gw->prot) : -1);
    }
    if (t->id == 0 && !t->stopping) gw_events_retention_tick(t); /* events.h: outbox retention */
}

static void on_sale_timer(d11_loop *l, d11_timer *tm)
{
    (void)tm;
    gw_thread *t = gw_thread_of(l);
    if (!t->stopping) gw_sale_fanout(t);
}

static void on_up_timer(d11_loop *l, d11_timer *tm)
{
    (void)l;
    (void)tm; /* only wakes the loop: the tick hook does the work */
}

/* Hook 1: upstream deadlines, reconnects, routing refresh; wake for the next one. */
static void hook_up_tick(d11_loop *l, void *data)
{
    gw_thread *t = data;
    int64_t wait = gw_up_tick(t);
    if (wait < 1) wait = 1;
    /* re-arm only to wake earlier: an early wakeup costs one idle pass, a re-arm per pass
     * costs a heap update every iteration */
    if (!d11_timer_armed(&t->up_timer) || t->up_timer.at_ms > gw_now_ms(t) + wait)
        d11_timer_start(l, &t->up_timer, wait, 0, on_up_timer, t);
}

/* Hook 2: write upstream frames. */
static void hook_up_flush(d11_loop *l, void *data)
{
    (void)l;
    gw_up_flush(data);
}

/* Hook 3: write client responses, resume stalled pipelines, close finished connections. */
static void hook_clients_flush(d11_loop *l, void *data)
{
    (void)l;
    gw_clients_flush(data);
}

/* Hook 4: upstream frames again (hook 3 may dispatch requests while it resumes stalled
 * pipelines). A link that fails here answers its pending requests: do not sleep on them. */
static void hook_up_flush_last(d11_loop *l, void *data)
{
    gw_thread *t = data;
    gw_up_flush(t);
    if (t->cl.ndirty) d11_loop_nowait(l);
}

static void *thread_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-gw"); /* top -H, perf, /proc: who spends what */
    gw_thread *t = arg;
    d11_timer_start(&t->loop, &t->sweep, GW_SWEEP_MS, GW_SWEEP_MS, on_sweep, t);
    if (t->id == 0) d11_timer_start(&t->loop, &t->sale_timer, GW_SALE_MS, GW_SALE_MS, on_sale_timer, t);
    if (t->id == 0) d11_timer_start(&t->loop, &t->cflow_timer, D11_CFLOW_TICK_MS, D11_CFLOW_TICK_MS, on_cflow_timer, t);
    while (!(t->stopping && (t->cl.nopen == 0 || gw_now_ms(t) >= t->drain_deadline_ms))) {
        int rc = d11_loop_run_once(&t->loop, GW_SWEEP_MS);
        if (rc < 0) d11_fatal("thread %d: event loop: %s", t->id, d11_strerror(rc));
        if (!t->stopping && atomic_load(&t->gw->stop)) { /* a wake that came before the flag */
            begin_drain(t);
            gw_clients_flush(t);
        }
    }
    gw_clients_close_all(t);
    d11_timer_stop(&t->loop, &t->sweep);
    if (t->id == 0) d11_timer_stop(&t->loop, &t->sale_timer);
    if (t->id == 0) d11_timer_stop(&t->loop, &t->cflow_timer);
    atomic_store(&t->exited, 1);
    return NULL;
}

/* ---- setup ---- */

static int thread_init(struct gw *g, gw_thread *t, int id, int lfd)
{
    t->gw = g;
    t->id = id;
    t->lfd = lfd;
    int rc = d11_loop_init(&t->loop);
    if (rc < 0) return rc;
    t->scratch = malloc(D11_HTTP_BODY_BYTES_MAX + 16);
    t->auth = malloc(sizeof *t->auth);
    if (!t->scratch || !t->auth) return -ENOMEM;
    d11_buf_init(&t->tmp, 4096);
    d11_random_bytes(&t->rng, sizeof t->rng);
    d11_auth_init(t->auth, g->cfg.data_dir);
    uint64_t gen = d11_rules_store_gen(&g->rules);
    d11_rules_store_get(&g->rules, &t->rules, &gen);
    t->rules_gen = gen;
    if ((rc = gw_clients_init(t)) < 0 || (rc = gw_up_init(t)) < 0 ||
        (rc = gw_clients_listen(t)) < 0 || (rc = d11_wake_init(&t->loop, &t->wake, on_wake, t)) < 0)
        return rc;
    /* order matters: frames queued by the tick and by resumed pipelines leave this pass */
    if ((rc = d11_loop_before_sleep(&t->loop, hook_up_tick, t)) < 0 ||
        (rc = d11_loop_before_sleep(&t->loop, hook_up_flush, t)) < 0 ||
        (rc = d11_loop_before_sleep(&t->loop, hook_clients_flush, t)) < 0 ||
        (rc = d11_loop_before_sleep(&t->loop, hook_up_flush_last, t)) < 0)
        return rc;
    return 0;
}

static void thread_release(gw_thread *t)
{
    gw_pace_release(t);  /* before the pending table its entries point into */
    gw_up_release(t);    /* completions of what was pending find no client: dropped */
    gw_clients_drain(t); /* the listener, if still open */
    gw_clients_release(t);
    d11_wake_release(&t->loop, &t->wake);
    d11_timer_stop(&t->loop, &t->up_timer);
    d11_timer_stop(&t->loop, &t->sweep);
    if (t->id == 0) d11_timer_stop(&t->loop, &t->sale_timer);
    free(t->scratch);
    free(t->auth);
    gw_catcache_free(t);
    d11_buf_free(&t->tmp);
    d11_loop_release(&t->loop);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: d11 gateway [FLAGS]\n"
            "\n"
            "Run the HTTP gateway: authenticates, applies flow/degrade/risk rules, routes each\n"
            "request to the cell owning the user's slot (or to the center), serves /healthz,\n"
            "/readyz, /metrics, the dashboard at / and the admin API.\n"
            "\n"
            "  --data DIR                data directory (sockets, tokens, rules.json); default ./data\n"
            "  --listen HOST:PORT        HTTP listen address; default 127.0.0.1:8080\n"
            "  --cells N                 cells to route to until the center sends its table;\n"
            "                            default max(2, nproc)\n"
            "  --threads T               event-loop threads, each with its own listener\n"
            "                            (SO_REUSEPORT); default nproc\n"
            "  --request-timeout-ms MS   upstream deadline per request (504 after it); default 3000\n"
            "  --log-level LEVEL         debug|info|warn|error; default info\n"
            "  --slow-request-ms MS      requests at least this slow are logged (warn) and counted;\n"
            "                            default 500\n"
            "  --log-sample N            request log: every 5xx and 1 in N others at info;\n"
            "                            default 100 (0: 5xx and slow only)\n"
            "  --otlp-endpoint URL       export trace spans as OTLP/HTTP JSON (default off)\n"
            "  --trace-ratio R           head sampling of new traces, 0..1; default 0.01\n"
            "  --help                    this text\n"
            "\n"
            "Settings may also come from DIR/d11.conf (key = value). SIGINT/SIGTERM drain\n"
            "in-flight requests and exit 0.\n");
}

/* Start the threads, wait for a signal (sigwait: no handler, no global), drain, join. */
static int run(struct gw *g)
{
    char oerr_risk[300];
    d11_log_init("gateway", g->cfg.log_level);
    d11_fault_init_from_env("gateway"); /* gateway.upstream and relay.publish armable at start too */
    g->start_ms = d11_mono_ms();
    if (mkdir(g->cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        d11_error("gateway: cannot create %s: %s", g->cfg.data_dir, strerror(errno));
        return 1;
    }
    http_parser_set_max_header_size(D11_HTTP_HEADER_BYTES_MAX + 1024);
    if (d11_rules_store_init(&g->rules, g->cfg.data_dir) < 0) {
        d11_error("gateway: data directory path too long");
        return 1;
    }
    gw_router_init(g);
    if (gw_risk_init(&g->risk, g->cfg.risk_model, g->cfg.risk_keys, g->cfg.risk_log_size, oerr_risk, sizeof oerr_risk) < 0) {
        d11_error("gateway: %s", oerr_risk);
        return 1;
    }
    if (gw_sale_init(g) < 0) {
        d11_error("gateway: out of memory");
        return 1;
    }
    char oerr[200];
    if (d11_otlp_start(&g->otlp, g->cfg.otlp_endpoint, "d11-gateway", g->cfg.trace_ratio, g->cfg.slow_request_ms,
                       oerr, sizeof oerr) < 0) {
        d11_error("gateway: --otlp-endpoint: %s", oerr);
        return 1;
    }
    gw_protect_cfg pc = {
        .on = g->cfg.protect,
        .inflight_min = g->cfg.protect_inflight_min,
        .gain_pct = g->cfg.protect_gain_pct,
        .rt_max_us = g->cfg.protect_rt_max_ms * 1000,
        .cpu_max_pct = g->cfg.protect_cpu_max_pct,
        .tolerance_pct = g->cfg.protect_rt_tolerance_pct,
    };
    gw_protect_init(&g->prot, &pc, d11_mono_ms());
    gw_breaker_cfg bc;
    gw_breaker_cfg_default(&bc);
    for (int u = 0; u < GW_UP_N; u++) {
        char nm[24];
        if (u == GW_UP_CENTER) snprintf(nm, sizeof nm, "center");
        else snprintf(nm, sizeof nm, "cell-%d", u - 1);
        gw_breaker_init(&g->brk[u], &bc, nm);
    }
    if (gw_hooks_init(&g->hooks, g->cfg.data_dir) < 0) {
        d11_error("gateway: cannot load the webhooks registry (DATA/webhooks)");
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    g->nthreads = g->cfg.threads;
    g->threads = calloc((size_t)g->nthreads, sizeof *g->threads);
    if (!g->threads) {
        d11_error("gateway: out of memory");
        return 1;
    }
    for (int i = 0; i < g->nthreads; i++) {
        int lfd = d11_listen_tcp(g->cfg.listen, true);
        if (lfd < 0) {
            d11_error("gateway: cannot listen on %s: %s", g->cfg.listen, d11_strerror(lfd));
            return 1;
        }
        int rc = thread_init(g, &g->threads[i], i, lfd);
        if (rc < 0) {
            d11_error("gateway: thread setup failed: %s", d11_strerror(rc));
            return 1;
        }
    }
    if (gw_stats_start(g) < 0) {
        d11_error("gateway: cannot start the live-sale-numbers aggregator");
        return 1;
    }
    for (int i = 0; i < g->nthreads; i++)
        if (pthread_create(&g->threads[i].th, NULL, thread_main, &g->threads[i]) != 0) {
            d11_error("gateway: cannot start threads");
            return 1;
        }
    if (gw_hooks_start(g) < 0) {
        d11_error("gateway: cannot start the webhook worker");
        return 1;
    }
    if (gw_nats_start(g) < 0) {
        d11_error("gateway: cannot start the NATS relay");
        return 1;
    }
    d11_info("gateway listening on %s (%d threads, %d cells, request timeout %lld ms)",
             g->cfg.listen, g->nthreads, g->cfg.cells, (long long)g->cfg.request_timeout_ms);
    (void)sd_notify(0, "READY=1\nSTATUS=serving HTTP"); /* systemd Type=notify; no-op without NOTIFY_SOCKET */

    /* wait for a signal or for every thread to have exited */
    bool stopping = false;
    for (;;) {
        struct timespec ts = {0, 100 * 1000000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig > 0) {
            if (stopping) {
                d11_warn("second signal: exiting now");
                _exit(1);
            }
            stopping = true;
            d11_info("signal %d: draining in-flight requests", sig);
            atomic_store(&g->stop, 1);
            for (int i = 0; i < g->nthreads; i++) d11_wake_signal(&g->threads[i].wake);
        }
        int alive = 0;
        for (int i = 0; i < g->nthreads; i++) alive += !atomic_load(&g->threads[i].exited);
        if (!alive) break;
    }
    gw_hooks_stop(g); /* before the threads go: it may be waiting on our own listener */
    gw_nats_stop(g);
    gw_stats_stop(g);
    for (int i = 0; i < g->nthreads; i++) {
        pthread_join(g->threads[i].th, NULL);
        thread_release(&g->threads[i]);
    }
    free(g->threads);
    d11_otlp_stop(&g->otlp); /* flushes the spans of the last requests */
    gw_sale_release(g);
    d11_rules_store_release(&g->rules);
    for (int u = 0; u < GW_UP_N; u++) gw_breaker_release(&g->brk[u]);
    gw_hooks_release(&g->hooks);
    gw_risk_release(&g->risk);
    gw_stats_release(g);
    d11_info("gateway stopped");
    return 0;
}

int d11_gateway_main(int argc, char **argv)
{
    char err[300];
    struct gw *g = calloc(1, sizeof *g);
    if (!g) {
        fprintf(stderr, "d11 gateway: out of memory\n");
        return 1;
    }
    d11_config_defaults(&g->cfg);
    int rc;
    if (d11_config_from_args(&g->cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 gateway: %s\n", err);
        rc = 2;
    } else if (g->cfg.help) {
        usage(stdout);
        rc = 0;
    } else {
        rc = run(g);
    }
    free(g);
    return rc;
}
