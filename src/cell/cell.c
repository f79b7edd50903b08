/*
 * cell.c — `d11 cell --id N`: the process around the cell state machine (cell.h).
 *
 * One logic thread runs an epoll loop over: the listener DATA/cell-<id>.sock and the
 * gateway connections it accepts, one connection to the center (reconnected every
 * 200 ms while down), and the storage thread's eventfd (store/thread.h). Each loop
 * iteration hands the machine what arrived, then closes the open batch if the storage
 * thread is idle (group commit), then flushes output. A failed commit makes the machine
 * FAILED: the process answers, exits 1, and `d11 up` restarts it so recovery rebuilds
 * memory from what is durable.
 *
 * Fault points (core/fault.h) live here, on the transport: cell.recv (drop / delay /
 * garble a request) and cell.reply (drop / delay a reply).
 *
 * Peer ids given to the machine are (generation << 16 | slot) of the connection table,
 * so a reply for a connection that closed and was reused is dropped, never misdelivered.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/fault.h"
#include "../rpc/conn.h"
#include "../store/cell_sqlite.h"
#include "../store/thread.h"
#include "cell.h"

#define CELL_CONNS_MAX 1024
#define CELL_TICK_MS 10
#define CELL_CENTER_RETRY_MS 200
#define EV_CENTER CELL_CONNS_MAX
#define EV_LISTEN (CELL_CONNS_MAX + 1)
#define EV_STORE (CELL_CONNS_MAX + 2)

typedef struct gconn {
    d11_conn c;
    uint32_t gen;
    bool     open, dirty;
} gconn;

typedef struct cell_proc {
    d11_config       cfg;
    cell            *cell;
    d11_store       *store;
    d11_store_thread st;
    int              epfd, lfd;
    gconn            conns[CELL_CONNS_MAX];
    uint32_t         dirty[CELL_CONNS_MAX]; /* connections with output to flush */
    uint32_t         ndirty;
    d11_conn         center;
    bool             center_connected;
    int64_t          center_retry_ms;
} cell_proc;

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint32_t peer_id(const cell_proc *p, int ci) { return (p->conns[ci].gen << 16) | (uint32_t)ci; }

static void mark_dirty(cell_proc *p, int ci)
{
    if (p->conns[ci].dirty) return;
    p->conns[ci].dirty = true;
    p->dirty[p->ndirty++] = (uint32_t)ci;
}

static void host_send_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    cell_proc *p = data;
    uint32_t ci = peer & 0xffff, gen = peer >> 16;
    if (ci >= CELL_CONNS_MAX || !p->conns[ci].open || (p->conns[ci].gen & 0xffff) != gen) return;
    d11_fault_hit fh = d11_fault(D11_FP_CELL_REPLY);
    if (fh.action == D11_FA_DROP) return; /* chaos: the gateway times out (504) */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
    d11_buf_append(&p->conns[ci].c.out, frame, n);
    mark_dirty(p, (int)ci);
}

static void host_send_center(void *data, const uint8_t *frame, size_t n)
{
    cell_proc *p = data;
    if (p->center_connected) d11_buf_append(&p->center.out, frame, n);
}

static void set_out(cell_proc *p, d11_conn *c, uint32_t id, bool want)
{
    if (want == c->want_write) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = id};
    if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, c->fd, &ev) == -1) d11_fatal("epoll_ctl MOD: %s", strerror(errno));
    c->want_write = want;
}

static void conn_close(cell_proc *p, int ci)
{
    gconn *g = &p->conns[ci];
    if (!g->open) return;
    cell_peer_down(p->cell, peer_id(p, ci));
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, g->c.fd, NULL);
    d11_conn_release(&g->c);
    g->open = false;
    g->gen = (g->gen + 1) & 0xffff;
}

static void center_lost(cell_proc *p)
{
    if (!p->center_connected) return;
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->center.fd, NULL);
    d11_conn_release(&p->center);
    p->center_connected = false;
    p->center_retry_ms = d11_mono_ms() + CELL_CENTER_RETRY_MS;
    cell_center_down(p->cell);
}

static void center_connect(cell_proc *p)
{
    char path[1200];
    d11_config_path(&p->cfg, "center.sock", path, sizeof path);
    int fd = d11_connect_unix(path);
    if (fd < 0) {
        p->center_retry_ms = d11_mono_ms() + CELL_CENTER_RETRY_MS;
        return;
    }
    d11_conn_init(&p->center, fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_CENTER};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        d11_conn_release(&p->center);
        p->center_retry_ms = d11_mono_ms() + CELL_CENTER_RETRY_MS;
        return;
    }
    p->center_connected = true;
    cell_center_up(p->cell); /* HELLO; missed returns are re-sent by its reply */
}

static void flush_all(cell_proc *p)
{
    for (uint32_t i = 0; i < p->ndirty; i++) {
        int ci = (int)p->dirty[i];
        gconn *g = &p->conns[ci];
        g->dirty = false;
        if (!g->open) continue;
        int rc = d11_conn_flush(&g->c);
        if (rc < 0) conn_close(p, ci);
        else set_out(p, &g->c, (uint32_t)ci, rc == 1);
    }
    p->ndirty = 0;
    if (p->center_connected && (d11_conn_pending(&p->center) || p->center.want_write)) {
        int rc = d11_conn_flush(&p->center);
        if (rc < 0) center_lost(p);
        else set_out(p, &p->center, EV_CENTER, rc == 1);
    }
}

static void accept_all(cell_proc *p)
{
    for (;;) {
        int fd = d11_accept(p->lfd);
        if (fd < 0) return;
        int ci = -1;
        for (int i = 0; i < CELL_CONNS_MAX; i++)
            if (!p->conns[i].open) {
                ci = i;
                break;
            }
        if (ci < 0) {
            d11_warn("cell %d: connection table full (%d)", p->cfg.cell_id, CELL_CONNS_MAX);
            close(fd);
            continue;
        }
        d11_conn_init(&p->conns[ci].c, fd);
        p->conns[ci].open = true;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)ci};
        if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) conn_close(p, ci);
    }
}

static void on_gateway_readable(cell_proc *p, int ci, uint32_t events)
{
    gconn *g = &p->conns[ci];
    int rc = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? d11_conn_read(&g->c) : 0;
    d11_frame f;
    int fr;
    while (g->open && (fr = d11_conn_frame(&g->c, &f)) == 1) {
        d11_fault_hit fh = d11_fault(D11_FP_CELL_RECV);
        if (fh.action == D11_FA_DROP) continue; /* chaos: a lost request; the gateway answers 504 */
        if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
        if (fh.action == D11_FA_GARBLE) {
            /* chaos: a garbled frame is a broken stream; the receiver must drop the link */
            d11_warn("cell %d: garbled frame from the gateway; closing the connection", p->cfg.cell_id);
            conn_close(p, ci);
            return;
        }
        cell_on_request(p->cell, peer_id(p, ci), &f);
    }
    if (!g->open) return;
    d11_conn_compact(&g->c);
    if (fr < 0 || rc < 0) conn_close(p, ci);
}

static void on_center_readable(cell_proc *p, uint32_t events)
{
    int rc = (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? d11_conn_read(&p->center) : 0;
    d11_frame f;
    int fr;
    while ((fr = d11_conn_frame(&p->center, &f)) == 1) cell_on_center(p->cell, &f);
    d11_conn_compact(&p->center);
    if (fr < 0 || rc < 0) center_lost(p);
}

static void on_store_done(cell_proc *p)
{
    int result;
    int64_t us;
    if (!d11_store_thread_collect(&p->st, &result, &us)) return;
    cell_set_last_commit_us(p->cell, us);
    cell_batch_done(p->cell, result);
    if (cell_failed(p->cell)) {
        /* Memory is now ahead of the database: answer (done above), then restart from
         * what is durable. */
        flush_all(p);
        d11_error("cell %d: exiting for recovery", p->cfg.cell_id);
        _exit(1);
    }
}

static void maybe_commit(cell_proc *p)
{
    const uint8_t *ops;
    size_t len;
    uint32_t nops;
    if (cell_batch_take(p->cell, &ops, &len, &nops)) d11_store_thread_submit(&p->st, ops, len, nops);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 cell --id N [--data DIR] [--cells N] [--durability sync|async|none]\n"
               "                [--async-flush-ms MS] [--order-ttl-ms MS] [--soldout-cache-ms MS]\n"
               "                [--log-level LEVEL]\n\n"
               "Runs one cell: orders, allotments and expiry for the users whose slot it owns.\n"
               "Listens on DIR/cell-N.sock; stores in DIR/cell-N.db. Normally started by `d11 up`.\n\n"
               "  --id N               this cell's number (0-based)\n"
               "  --data DIR           data directory (default ./data)\n"
               "  --durability MODE    sync (default: answer after fsync), async, none — docs/storage.md\n"
               "  --async-flush-ms MS  fsync interval in async mode (default 10)\n"
               "  --order-ttl-ms MS    unpaid orders expire after this (default 900000 = 15 min)\n"
               "  --soldout-cache-ms MS  how long a sold-out answer from the center is trusted (default 100)\n"
               "  --log-level LEVEL    debug, info (default), warn, error\n");
}

static int run(cell_proc *p, const char *sock_path)
{
    struct epoll_event evs[256];
    int64_t last_tick = 0;
    bool draining = false;
    for (;;) {
        if (stop_flag && !draining) {
            draining = true;
            epoll_ctl(p->epfd, EPOLL_CTL_DEL, p->lfd, NULL);
            close(p->lfd);
            unlink(sock_path);
            cell_shutdown(p->cell);
            d11_info("cell %d draining", p->cfg.cell_id);
        }
        if (draining && cell_quiet(p->cell)) {
            flush_all(p);
            return 0;
        }
        int n = epoll_wait(p->epfd, evs, 256, CELL_TICK_MS);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == EV_LISTEN) {
                if (!draining) accept_all(p);
            } else if (id == EV_STORE) {
                on_store_done(p);
            } else if (id == EV_CENTER) {
                if (p->center_connected) on_center_readable(p, evs[i].events);
            } else if (id < CELL_CONNS_MAX && p->conns[id].open) {
                on_gateway_readable(p, (int)id, evs[i].events);
            }
        }
        int64_t now = d11_mono_ms();
        if (now - last_tick >= CELL_TICK_MS) {
            last_tick = now;
            if (!p->center_connected && !draining && now >= p->center_retry_ms) center_connect(p);
            cell_tick(p->cell);
        }
        maybe_commit(p);
        flush_all(p);
    }
}

int d11_cell_main(int argc, char **argv)
{
    static cell_proc P; /* large (connection table): static storage, passed explicitly below */
    cell_proc *p = &P;
    char err[256];
    d11_config_defaults(&p->cfg);
    if (d11_config_from_args(&p->cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 cell: %s\n", err);
        return 2;
    }
    if (p->cfg.help) {
        usage(stdout);
        return 0;
    }
    if (p->cfg.cell_id < 0) {
        fprintf(stderr, "d11 cell: --id is required\n");
        return 2;
    }
    int id = p->cfg.cell_id;
    char name[32];
    snprintf(name, sizeof name, "cell-%d", id);
    d11_log_init(name, p->cfg.log_level);
    if (mkdir(p->cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 cell: cannot create %s: %s\n", p->cfg.data_dir, strerror(errno));
        return 1;
    }
    char path[1200], file[64];
    snprintf(file, sizeof file, "cell-%d.db", id);
    d11_config_path(&p->cfg, file, path, sizeof path);
    p->store = d11_cell_sqlite_open(path, p->cfg.durability);
    if (!p->store) {
        fprintf(stderr, "d11 cell: cannot open %s\n", path);
        return 1;
    }
    d11_fault_init_from_env(name);
    cell_opts o;
    cell_opts_default(&o, id);
    o.order_ttl_ms = p->cfg.order_ttl_ms;
    o.soldout_cache_ms = p->cfg.soldout_cache_ms;
    cell_host h = {.clock = d11_clock_system(), .data = p, .send_peer = host_send_peer,
                   .send_center = host_send_center};
    int rc = cell_open(&p->cell, &o, &h, p->store);
    if (rc < 0) {
        fprintf(stderr, "d11 cell: recovery of %s failed: %s\n", path, d11_strerror(rc));
        return 1;
    }
    if (d11_store_thread_init(&p->st, p->store, p->cfg.durability, p->cfg.async_flush_ms) < 0 ||
        d11_store_thread_start(&p->st) < 0)
        d11_fatal("cannot start the storage thread");

    snprintf(file, sizeof file, "cell-%d.sock", id);
    d11_config_path(&p->cfg, file, path, sizeof path);
    p->lfd = d11_listen_unix(path);
    if (p->lfd < 0) {
        fprintf(stderr, "d11 cell: cannot listen on %s: %s\n", path, d11_strerror(p->lfd));
        return 1;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd == -1) d11_fatal("epoll_create1: %s", strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = EV_LISTEN};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->lfd, &ev) == -1) d11_fatal("epoll_ctl: %s", strerror(errno));
    ev.data.u32 = EV_STORE;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->st.done_fd, &ev) == -1) d11_fatal("epoll_ctl: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    center_connect(p);
    d11_info("cell %d listening on %s (durability %s)", id, path, d11_durability_name(p->cfg.durability));
    run(p, path);
    d11_store_thread_stop(&p->st);
    cell_free(p->cell);
    d11_store_close(p->store);
    d11_info("cell %d stopped", id);
    return 0;
}
