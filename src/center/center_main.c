/*
 * center_main.c — `d11 center`: the process around the center's state machine (center.h).
 *
 * One thread, one epoll loop on DATA/center.sock, the SQLite store DATA/center.db
 * (store/center_sqlite.c). A loop turn: read every ready connection and hand each frame
 * to center_on_frame, call center_tick, then center_flush — which commits the turn's
 * changes in one transaction and only then hands the held replies to send_to_peer,
 * which queues them on the connection — then write the queued output. A failed commit
 * exits the process (status 1) without sending anything of that turn: the supervisor
 * restarts the center and the cells re-sync with HELLO.
 *
 * Peer ids given to the machine: connection slot | (slot generation << 16), so a slot
 * reused for a new connection is a new peer and late output for the old one is dropped.
 *
 * The fault point center.grant (fault.h) sits here, before the machine: a dropped or
 * delayed GRANT request is a property of the transport, not of the center.
 *
 * Clean stop (SIGINT/SIGTERM): flush what is pending, close the store, remove
 * DATA/center.sock.
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
#include "../core/clock.h"
#include "../core/config.h"
#include "../core/fault.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "../rpc/conn.h"
#include "../store/center_sqlite.h"
#include "center.h"

#define CENTER_CONNS_MAX 1024 /* connections at once: gateway threads + cells + ctl */
#define CENTER_TICK_MS   10   /* epoll timeout: reclaim deadlines are checked at least this often */
_Static_assert(CENTER_CONNS_MAX <= 0x10000, "a peer id holds the slot in its low 16 bits");

typedef struct cconn {
    d11_conn c;
    uint32_t gen;
    bool     open;
} cconn;

typedef struct center_proc {
    int    epfd, lfd;
    cconn *conns; /* CENTER_CONNS_MAX */
} center_proc;

static volatile sig_atomic_t stop_requested; /* set by the signal handler only */

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static uint32_t peer_of(const center_proc *P, int slot)
{
    return (uint32_t)slot | (P->conns[slot].gen & 0xffffu) << 16;
}

/* host->send: queue a frame on the peer's connection if it is still the same one. */
static void send_to_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    center_proc *P = data;
    uint32_t slot = peer & 0xffffu;
    if (slot >= CENTER_CONNS_MAX) return;
    cconn *cc = &P->conns[slot];
    if (!cc->open || (cc->gen & 0xffffu) != peer >> 16) return;
    d11_buf_append(&cc->c.out, frame, n);
}

static void conn_close(center_proc *P, center *C, int slot)
{
    cconn *cc = &P->conns[slot];
    if (!cc->open) return;
    center_peer_down(C, peer_of(P, slot));
    if (epoll_ctl(P->epfd, EPOLL_CTL_DEL, cc->c.fd, NULL) == -1) d11_warn("epoll_ctl del: %s", strerror(errno));
    d11_conn_release(&cc->c);
    cc->open = false;
    cc->gen++;
}

static void accept_all(center_proc *P, center *C)
{
    for (;;) {
        int fd = d11_accept(P->lfd);
        if (fd < 0) return;
        int slot = -1;
        for (int i = 0; i < CENTER_CONNS_MAX; i++)
            if (!P->conns[i].open) {
                slot = i;
                break;
            }
        if (slot < 0) {
            d11_warn("center: connection table full (%d), refusing", CENTER_CONNS_MAX);
            close(fd);
            continue;
        }
        cconn *cc = &P->conns[slot];
        d11_conn_init(&cc->c, fd);
        cc->open = true;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)slot};
        if (epoll_ctl(P->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
            d11_warn("epoll_ctl add: %s", strerror(errno));
            d11_conn_release(&cc->c);
            cc->open = false;
            cc->gen++;
            continue;
        }
        center_peer_up(C, peer_of(P, slot));
    }
}

static void read_conn(center_proc *P, center *C, int slot)
{
    cconn *cc = &P->conns[slot];
    int rc = d11_conn_read(&cc->c);
    d11_frame f;
    int fr;
    while ((fr = d11_conn_frame(&cc->c, &f)) == 1) {
        if (f.hdr.type == D11_MSG_GRANT && !(f.hdr.flags & D11_WF_REPLY)) {
            d11_fault_hit fh = d11_fault(D11_FP_CENTER_GRANT);
            if (fh.action == D11_FA_DROP) continue; /* chaos: a lost grant; the cell asks again */
            if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000);
        }
        center_on_frame(C, peer_of(P, slot), &f);
    }
    d11_conn_compact(&cc->c);
    if (fr < 0 || rc < 0) conn_close(P, C, slot);
}

static void write_all(center_proc *P, center *C)
{
    for (int i = 0; i < CENTER_CONNS_MAX; i++) {
        cconn *cc = &P->conns[i];
        if (!cc->open || (d11_conn_pending(&cc->c) == 0 && !cc->c.want_write)) continue;
        int rc = d11_conn_flush(&cc->c);
        if (rc < 0) {
            conn_close(P, C, i);
            continue;
        }
        bool want = rc == 1;
        if (want != cc->c.want_write) {
            struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)i};
            if (epoll_ctl(P->epfd, EPOLL_CTL_MOD, cc->c.fd, &ev) == -1) {
                d11_warn("epoll_ctl mod: %s", strerror(errno));
                conn_close(P, C, i);
                continue;
            }
            cc->c.want_write = want;
        }
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 center [--data DIR] [--cells N] [--durability sync|async|none]\n"
               "                  [--grant-chunk-max N] [--log-level LEVEL]\n\n"
               "Runs the center: catalog, inventory ledger with per-cell allotments, routing.\n"
               "Listens on DIR/center.sock (d11 wire protocol). Normally started by `d11 up`.\n\n"
               "  --data DIR            data directory (default ./data); DIR/center.db is SQLite\n"
               "  --cells N             number of cells of this deployment (fixed at first start)\n"
               "  --durability MODE     sync (default), async or none — see docs/storage.md\n"
               "  --grant-chunk-max N   largest allotment handed to a cell at once (default 1000)\n"
               "  --log-level LEVEL     debug, info (default), warn, error\n");
}

/* Commit the turn and hand out its output; a failed commit ends the process. */
static void flush_turn(center_proc *P, center *C)
{
    int rc = center_flush(C);
    if (rc < 0) d11_fatal("center: commit failed (%s); exiting without answering", d11_strerror(rc));
    write_all(P, C);
}

int d11_center_main(int argc, char **argv)
{
    char err[256];
    d11_config cfg;
    d11_config_defaults(&cfg);
    if (d11_config_from_args(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 center: %s\n", err);
        return 2;
    }
    if (cfg.help) {
        usage(stdout);
        return 0;
    }
    d11_log_init("center", cfg.log_level);
    d11_fault_init_from_env("center");
    if (mkdir(cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 center: cannot create %s: %s\n", cfg.data_dir, strerror(errno));
        return 1;
    }
    char db_path[1200], sock_path[1200];
    if (d11_config_path(&cfg, "center.db", db_path, sizeof db_path) < 0 ||
        d11_config_path(&cfg, "center.sock", sock_path, sizeof sock_path) < 0) {
        fprintf(stderr, "d11 center: data directory path too long\n");
        return 1;
    }
    d11_store *st = d11_center_sqlite_open(db_path, cfg.durability);
    if (!st) {
        fprintf(stderr, "d11 center: cannot open %s\n", db_path);
        return 1;
    }
    center_proc P = {.epfd = -1, .lfd = -1};
    P.conns = calloc(CENTER_CONNS_MAX, sizeof *P.conns);
    if (!P.conns) d11_fatal("center: out of memory");
    center_opts o = {.ncells = cfg.cells,
                     .grant_chunk_max = cfg.grant_chunk_max,
                     .reclaim_ms = CENTER_RECLAIM_MS_DEFAULT,
                     .pid = (int)getpid()};
    center_host h = {.clock = d11_clock_system(), .data = &P, .send = send_to_peer};
    center *C = NULL;
    int rc = center_open(&C, &o, &h, st);
    if (rc < 0) {
        fprintf(stderr, "d11 center: cannot start on %s: %s (see the log line above)\n", db_path, d11_strerror(rc));
        d11_store_close(st);
        free(P.conns);
        return 1;
    }

    P.lfd = d11_listen_unix(sock_path);
    if (P.lfd < 0) {
        fprintf(stderr, "d11 center: cannot listen on %s: %s\n", sock_path, d11_strerror(P.lfd));
        center_free(C);
        d11_store_close(st);
        free(P.conns);
        return 1;
    }
    P.epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (P.epfd == -1 || epoll_ctl(P.epfd, EPOLL_CTL_ADD, P.lfd, &lev) == -1)
        d11_fatal("center: epoll: %s", strerror(errno));
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d11_info("center listening on %s", sock_path);

    struct epoll_event evs[256];
    while (!stop_requested) {
        int n = epoll_wait(P.epfd, evs, 256, CENTER_TICK_MS);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == UINT32_MAX) {
                accept_all(&P, C);
                continue;
            }
            if (!P.conns[id].open) continue;
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(&P, C, (int)id);
        }
        center_tick(C);
        flush_turn(&P, C); /* durable before any reply leaves */
    }
    flush_turn(&P, C);
    /* A clean stop leaves no socket behind (a stale one would look like a live center). */
    if (unlink(sock_path) == -1 && errno != ENOENT) d11_warn("center: cannot remove %s: %s", sock_path, strerror(errno));
    for (int i = 0; i < CENTER_CONNS_MAX; i++) conn_close(&P, C, i);
    close(P.lfd);
    close(P.epfd);
    center_free(C);
    d11_store_close(st);
    free(P.conns);
    d11_info("center stopped");
    return 0;
}
