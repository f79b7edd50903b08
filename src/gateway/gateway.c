/*
 * gateway.c — `d11 gateway`: the HTTP front door. Entry point, struct gw, the threads and
 * their epoll loop. See gw.h for the modules and the threading model, docs/gateway.md for
 * the design as a whole.
 *
 * One loop iteration: wait (at most until the next timer, at most SWEEP_MS), then hand
 * each event to its owner by tag (client connections, upstream connections, the
 * listener, the wake-up eventfd); then write what the iteration produced — upstream
 * frames, client responses, and upstream frames again for requests dispatched while
 * servicing stalled pipelines — so a burst costs one write(2) per connection. Every
 * SWEEP_MS: client timers (408, idle), token and rules reloads, listener re-arm.
 *
 * Shutdown: SIGINT/SIGTERM are taken by the main thread (sigtimedwait, so no signal
 * handler and no global); it sets gw.stop and wakes every loop through its eventfd. Each
 * thread then closes its listener, stops reading, closes idle connections, answers what
 * is in flight (upstream deadlines bound that), and exits when its last connection is
 * closed or after request timeout + D11_GW_DRAIN_EXTRA_MS. A second signal exits at once
 * with status 1.
 */
#include "gw.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../cmd.h"
#include "router.h"

#define SWEEP_MS 100

static void begin_drain(gw_thread *t)
{
    t->stopping = true;
    t->drain_deadline_ms = t->now_ms + t->gw->cfg.request_timeout_ms + D11_GW_DRAIN_EXTRA_MS;
    if (t->lfd >= 0) {
        epoll_ctl(t->ep, EPOLL_CTL_DEL, t->lfd, NULL);
        close(t->lfd);
        t->lfd = -1;
    }
    gw_clients_drain(t);
}

static void refresh_rules(gw_thread *t)
{
    uint64_t g = d11_rules_store_gen(&t->gw->rules);
    if (g != t->rules_gen) d11_rules_store_get(&t->gw->rules, &t->rules, &t->rules_gen);
}

static void *thread_main(void *arg)
{
    gw_thread *t = arg;
    struct epoll_event evs[256];
    t->now_ms = d11_mono_ms();
    refresh_rules(t);
    for (;;) {
        int64_t wait = gw_up_tick(t);
        if (wait > SWEEP_MS) wait = SWEEP_MS;
        if (wait < 0) wait = 0;
        if (t->cl.ndirty) wait = 0;
        int n = epoll_wait(t->ep, evs, 256, (int)wait);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        t->now_ms = d11_mono_ms();
        refresh_rules(t);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64 >> 32;
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (tag == GW_TAG_CLIENT) {
                gw_clients_on_event(t, idx, e);
            } else if (tag == GW_TAG_UP) {
                gw_up_on_event(t, (int)idx, e);
            } else if (tag == GW_TAG_LISTEN) {
                if (!t->stopping) gw_clients_accept(t);
            } else if (tag == GW_TAG_EVENT) {
                uint64_t v;
                (void)!read(t->efd, &v, sizeof v);
            }
        }
        gw_up_flush(t);
        gw_clients_flush(t);
        gw_up_flush(t); /* requests dispatched while servicing stalled pipelines */

        if (t->now_ms >= t->next_sweep_ms) {
            t->next_sweep_ms = t->now_ms + SWEEP_MS;
            gw_clients_sweep(t);
            gw_clients_flush(t);
            d11_auth_maybe_reload(t->auth, t->now_ms);
            if (t->id == 0) d11_rules_store_maybe_reload(&t->gw->rules, t->now_ms);
            if (!t->lfd_armed && !t->stopping && t->lfd >= 0 && t->now_ms >= t->lfd_rearm_ms) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = GW_TAG_LISTEN << 32};
                if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &ev) == 0) t->lfd_armed = true;
            }
        }
        if (!t->stopping && atomic_load(&t->gw->stop)) {
            begin_drain(t);
            gw_clients_flush(t);
        }
            if (t->stopping && (t->cl.nopen == 0 || t->now_ms >= t->drain_deadline_ms)) break;
    }
    gw_clients_close_all(t);
    atomic_store(&t->exited, 1);
    return NULL;
}

/* ---- setup ---- */

static int thread_init(struct gw *g, gw_thread *t, int id, int lfd)
{
    t->gw = g;
    t->id = id;
    t->lfd = lfd;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->ep == -1 || t->efd == -1) return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = GW_TAG_LISTEN << 32};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, lfd, &ev) == -1) return -errno;
    t->lfd_armed = true;
    ev.data.u64 = GW_TAG_EVENT << 32;
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->efd, &ev) == -1) return -errno;
    t->scratch = malloc(D11_HTTP_BODY_BYTES_MAX + 16);
    t->auth = malloc(sizeof *t->auth);
    if (!t->scratch || !t->auth) return -ENOMEM;
    int rc = gw_clients_init(t);
    if (rc < 0) return rc;
    d11_buf_init(&t->tmp, 4096);
    d11_random_bytes(&t->rng, sizeof t->rng);
    d11_auth_init(t->auth, g->cfg.data_dir);
    t->now_ms = d11_mono_ms();
    return gw_up_init(t);
}

static void thread_release(gw_thread *t)
{
    gw_up_release(t);
    gw_clients_release(t);
    free(t->scratch);
    free(t->auth);
    d11_buf_free(&t->tmp);
    if (t->lfd >= 0) close(t->lfd);
    close(t->ep);
    close(t->efd);
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
            "  --help                    this text\n"
            "\n"
            "Settings may also come from DIR/d11.conf (key = value). SIGINT/SIGTERM drain\n"
            "in-flight requests and exit 0.\n");
}

/* Start the threads, wait for a signal (sigwait: no handler, no global), drain, join. */
static int run(struct gw *g)
{
    d11_log_init("gateway", g->cfg.log_level);
    g->start_ms = d11_mono_ms();
    if (mkdir(g->cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 gateway: cannot create %s: %s\n", g->cfg.data_dir, strerror(errno));
        return 1;
    }
    http_parser_set_max_header_size(D11_HTTP_HEADER_BYTES_MAX + 1024);
    if (d11_rules_store_init(&g->rules, g->cfg.data_dir) < 0) {
        fprintf(stderr, "d11 gateway: data directory path too long\n");
        return 1;
    }
    gw_router_init(g);

    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    g->nthreads = g->cfg.threads;
    g->threads = calloc((size_t)g->nthreads, sizeof *g->threads);
    if (!g->threads) {
        fprintf(stderr, "d11 gateway: out of memory\n");
        return 1;
    }
    for (int i = 0; i < g->nthreads; i++) {
        int lfd = d11_listen_tcp(g->cfg.listen, true);
        if (lfd < 0) {
            fprintf(stderr, "d11 gateway: cannot listen on %s: %s\n", g->cfg.listen, d11_strerror(lfd));
            return 1;
        }
        int rc = thread_init(g, &g->threads[i], i, lfd);
        if (rc < 0) {
            fprintf(stderr, "d11 gateway: thread setup failed: %s\n", d11_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < g->nthreads; i++)
        if (pthread_create(&g->threads[i].th, NULL, thread_main, &g->threads[i]) != 0) {
            fprintf(stderr, "d11 gateway: cannot start threads\n");
            return 1;
        }
    d11_info("gateway listening on %s (%d threads, %d cells, request timeout %lld ms)",
             g->cfg.listen, g->nthreads, g->cfg.cells, (long long)g->cfg.request_timeout_ms);

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
            for (int i = 0; i < g->nthreads; i++) {
                uint64_t one = 1;
                (void)!write(g->threads[i].efd, &one, sizeof one);
            }
        }
        int alive = 0;
        for (int i = 0; i < g->nthreads; i++) alive += !atomic_load(&g->threads[i].exited);
        if (!alive) break;
    }
    for (int i = 0; i < g->nthreads; i++) {
        pthread_join(g->threads[i].th, NULL);
        thread_release(&g->threads[i]);
    }
    free(g->threads);
    d11_rules_store_release(&g->rules);
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
        usage(stderr);
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
