/*
 * center.c — `d11 center`: the process around the center's state machine (center.h).
 *
 * One thread, one d11_loop (core/loop.h) with the connection table d11_links
 * (rpc/link.h) listening on DATA/center.sock, and the SQLite store DATA/center.db
 * (store/center_sqlite.c). A loop iteration: every frame read goes to center_on_frame;
 * the 10 ms timer calls center_tick; then the before-sleep hooks run in order —
 * center_flush (commit the iteration's changes in one transaction, then hand the held
 * replies to send_to_peer, which queues them on the links), then d11_links_flush (write).
 * A failed commit exits the process (status 1) without sending anything of that
 * iteration: the supervisor restarts the center and the cells re-sync with HELLO.
 *
 * Peer ids given to the machine: link index | (low 16 bits of the link generation) << 16.
 * A link's id is unique while it is open; the machine forgets a peer (its cell mapping,
 * parked grants, held output) in center_peer_down, called from on_close before the
 * generation changes, so no stale id survives to meet a reused one.
 *
 * The fault point center.grant (fault.h) sits here, before the machine: a dropped or
 * delayed GRANT request is a property of the transport, not of the center.
 *
 * Spans (--otlp-endpoint, core/otlp.h): see "spans" below.
 *
 * Clean stop (SIGINT/SIGTERM -> d11_loop_stop): flush what is pending, remove
 * DATA/center.sock, close the links and the store.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include "../cmd.h"
#include "../core/clock.h"
#include "../core/config.h"
#include "../core/datadir.h"
#include "../core/fault.h"
#include "../core/limits.h"
#include "../core/loop.h"
#include "../core/otlp.h"
#include "../core/util.h"
#include "../rpc/control.h"
#include "../rpc/link.h"
#include "../store/center_sqlite.h"
#include "../store/open.h"
#include "center.h"
#include "center_events.h"
#include "cluster_flow.h"

#define CENTER_CONNS_MAX 1024 /* connections at once: gateway threads + cells + ctl */
#define CENTER_TICK_MS   10   /* center_tick period: reclaim deadlines */
#define CENTER_SPAN_SLOTS   1024 /* requests with a trace being handled (direct-mapped) */
#define CENTER_SPAN_SLOW_MS 50   /* spans this slow are exported even when not sampled */
_Static_assert(CENTER_CONNS_MAX <= 0x10000, "a peer id holds the link index in its low 16 bits");

typedef struct center_proc {
    d11_loop  loop;
    d11_links links;
    d11_io    lio;
    d11_timer tick;
    center   *C;
    d11_otlp  otlp;
    struct center_rq *rq; /* CENTER_SPAN_SLOTS; NULL when tracing is off */
    /* the event stream (center_events.h): a read-only connection, answered inline */
    d11_center_outbox *evr;   /* NULL: EVENTS_READ answers 503 (PostgreSQL) */
    d11_buf   ev_body, ev_frame;
    d11_cflow_center cflow; /* cluster flow budgets (cluster_flow.h), answered inline */
} center_proc;

static d11_loop *signal_loop; /* for the signal handler only */

static void on_signal(int sig)
{
    (void)sig;
    if (signal_loop) d11_loop_stop(signal_loop);
}

static uint32_t peer_of(const d11_link *k) { return k->idx | (k->gen & 0xffffu) << 16; }

/* ---- spans (core/otlp.h) ----
 * center.<request type> (SERVER) for every request frame that carries a trace id in its
 * header — the gateway's product requests, and a cell's GRANT when the cell stamps its
 * cell.grant span there — with parent = the header's span id (the caller's span). It
 * runs from the frame's arrival to its reply leaving send_to_peer, i.e. after the commit
 * of the iteration: a parked grant's span lasts until the grant is answered. The header's
 * W3C sampled flag is the head decision; errors (status >= 500) and spans of at least
 * CENTER_SPAN_SLOW_MS are kept anyway. One direct-mapped table by (peer, req_id): a
 * collision forgets the older entry (its span is not exported); an entry whose reply never
 * comes (a dropped link) is simply overwritten later. Loop thread only. */
typedef struct center_rq {
    uint64_t req_id;
    uint32_t peer;
    uint16_t type;
    bool     used;
    uint8_t  flags, trace_id[16], parent_id[8];
    int64_t  start_ns;
} center_rq;

static center_rq *rq_slot(center_proc *P, uint32_t peer, uint64_t req_id)
{
    return &P->rq[d11_hash64(&req_id, sizeof req_id, peer) % CENTER_SPAN_SLOTS];
}

static bool has_trace(const uint8_t id[16])
{
    for (int i = 0; i < 16; i++)
        if (id[i]) return true;
    return false;
}

/* A traced request frame arrived: remember its context and start time. */
static void span_begin(center_proc *P, uint32_t peer, const d11_frame_hdr *h)
{
    if (!P->rq || (h->flags & D11_WF_REPLY) || !has_trace(h->trace_id)) return;
    center_rq *r = rq_slot(P, peer, h->req_id);
    *r = (center_rq){.req_id = h->req_id, .peer = peer, .type = h->type, .used = true, .flags = h->trace_flags,
                     .start_ns = d11_span_now_ns()};
    memcpy(r->trace_id, h->trace_id, 16);
    memcpy(r->parent_id, h->span_id, 8);
}

/* A frame leaves for peer: when it answers a traced request, that request's span ends. */
static void span_end(center_proc *P, uint32_t peer, const uint8_t *frame, size_t n)
{
    d11_frame_hdr h;
    if (!P->rq || d11_frame_hdr_decode(frame, n, &h) != 0 || !(h.flags & D11_WF_REPLY)) return;
    center_rq *r = rq_slot(P, peer, h.req_id);
    if (!r->used || r->req_id != h.req_id || r->peer != peer || r->type != h.type) return;
    r->used = false;
    char name[D11_SPAN_NAME_BYTES];
    snprintf(name, sizeof name, "center.%s", d11_msg_type_name(h.type));
    d11_span s;
    d11_span_open(&s, r->trace_id, r->parent_id, name, D11_SPAN_SERVER);
    s.start_ns = r->start_ns;
    s.end_ns = d11_span_now_ns();
    s.error = h.status >= 500;
    d11_span_attr_int(&s, "rpc.status", h.status);
    d11_span_attr_int(&s, "d11.center.peer_link", peer & 0xffffu);
    d11_otlp_end(&P->otlp, &s, r->flags & 1);
}

/* host->send: queue a frame on the peer's link if it is still the same one. */
static void send_to_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    center_proc *P = data;
    uint32_t idx = peer & 0xffffu;
    if (idx >= P->links.cap) return;
    d11_link *k = &P->links.v[idx];
    if (!k->open || peer_of(k) != peer) return;
    span_end(P, peer, frame, n);
    d11_link_send(k, frame, n);
}

static void on_open(d11_links *t, d11_link *k)
{
    center_proc *P = t->data;
    center_peer_up(P->C, peer_of(k));
}

static void on_close(d11_links *t, d11_link *k, int why)
{
    (void)why;
    center_proc *P = t->data;
    center_peer_down(P->C, peer_of(k));
}

/* EVENTS_READ / EVENTS_PRUNE (center_events.h): answered at once from committed rows
 * (a primary-key range scan on the read-only connection), not held for the round. */
static bool events_frame(center_proc *P, d11_link *k, const d11_frame *f)
{
    if (f->hdr.flags & D11_WF_REPLY) return false;
    if (f->hdr.type == D11_MSG_EVENTS_READ)
        center_events_read_reply(P->evr, f, &P->ev_body, &P->ev_frame);
    else if (f->hdr.type == D11_MSG_EVENTS_PRUNE)
        center_events_prune_reply(P->C, P->evr, f, &P->ev_body, &P->ev_frame);
    else
        return false;
    d11_link_send(k, (const uint8_t *)P->ev_frame.data, P->ev_frame.len);
    return true;
}

static void events_open(center_proc *P, const char *db_path, const d11_config *cfg)
{
    d11_buf_init(&P->ev_body, 4096);
    d11_buf_init(&P->ev_frame, 4096);
    P->evr = NULL;
    char url[sizeof cfg->store];
    if (d11_store_url_center(cfg, url, sizeof url) < 0 || url[0]) return; /* PostgreSQL: no reader (503) */
    if (d11_center_outbox_open(db_path, &P->evr) < 0) P->evr = NULL; /* logged */
}

static void events_close(center_proc *P)
{
    d11_center_outbox_close(P->evr);
    P->evr = NULL;
    d11_buf_free(&P->ev_body);
    d11_buf_free(&P->ev_frame);
}

static void on_frame(d11_links *t, d11_link *k, const d11_frame *f)
{
    center_proc *P = t->data;
    if (d11_control_frame(k, f)) return; /* log level, chaos arms (rpc/control.h) */
    if (events_frame(P, k, f)) return; /* EVENTS_READ / EVENTS_PRUNE (center_events.h) */
    if (d11_cflow_center_frame(&P->cflow, k, f)) return; /* FLOW_LEASE (cluster_flow.h) */
    if (f->hdr.type == D11_MSG_GRANT && !(f->hdr.flags & D11_WF_REPLY)) {
        d11_fault_hit fh = d11_fault(D11_FP_CENTER_GRANT);
        if (fh.action == D11_FA_DROP) return; /* chaos: a lost grant; the cell asks again */
        if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000);
    }
    span_begin(P, peer_of(k), &f->hdr);
    center_on_frame(P->C, peer_of(k), f);
}

static void on_tick(d11_loop *l, d11_timer *t)
{
    (void)l;
    center_proc *P = t->data;
    center_tick(P->C);
}

/* Before-sleep hook 1: commit the iteration, hand its output to the links (hook 2 writes). */
static void commit_hook(d11_loop *l, void *data)
{
    (void)l;
    center_proc *P = data;
    int rc = center_flush(P->C);
    if (rc < 0) d11_fatal("center: commit failed (%s); exiting without answering", d11_strerror(rc));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 center [--data DIR] [--cells N] [--durability sync|async|none]\n"
               "                  [--grant-chunk-max N] [--log-level LEVEL] [--otlp-endpoint URL]\n\n"
               "Runs the center: catalog, inventory ledger with per-cell allotments, routing.\n"
               "Listens on DIR/center.sock (d11 wire protocol). Normally started by `d11 up`.\n\n"
               "  --data DIR            data directory (default ./data); DIR/center.db is SQLite\n"
               "  --cells N             number of cells of this deployment (fixed at first start)\n"
               "  --durability MODE     sync (default), async or none — see docs/storage.md\n"
               "  --grant-chunk-max N   largest allotment handed to a cell at once (default 1000)\n"
               "  --log-level LEVEL     debug, info (default), warn, error\n"
               "  --otlp-endpoint URL   export trace spans as OTLP/HTTP JSON (default off)\n");
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
    /* One center per data directory (the lock dies with the process, kill -9 included). */
    char lerr[512];
    int lock_fd = d11_datadir_lock(cfg.data_dir, "center", lerr, sizeof lerr);
    if (lock_fd < 0) {
        d11_error("%s", lerr);
        return 1;
    }
    char db_path[1200], sock_path[1200];
    if (d11_config_path(&cfg, "center.db", db_path, sizeof db_path) < 0 ||
        d11_config_path(&cfg, "center.sock", sock_path, sizeof sock_path) < 0) {
        d11_error("center: data directory path too long");
        return 1;
    }
    d11_store *st = d11_store_open_center(&cfg); /* PostgreSQL with --store, else SQLite at db_path */
    if (!st) {
        d11_error("center: cannot open %s", db_path);
        return 1;
    }
    static center_proc P; /* static storage: the loop's event and timer arrays are large */
    center_opts o = {.ncells = cfg.cells,
                     .grant_chunk_max = cfg.grant_chunk_max,
                     .reclaim_ms = CENTER_RECLAIM_MS_DEFAULT,
                     .pid = (int)getpid()};
    char oerr[200];
    if (d11_otlp_start(&P.otlp, cfg.otlp_endpoint, "d11-center", 0, CENTER_SPAN_SLOW_MS, oerr, sizeof oerr) < 0) {
        d11_error("center: --otlp-endpoint: %s", oerr);
        d11_store_close(st);
        return 1;
    }
    if (P.otlp.on && !(P.rq = calloc(CENTER_SPAN_SLOTS, sizeof *P.rq))) d11_fatal("center: out of memory");
    center_host h = {.clock = d11_clock_system(), .data = &P, .send = send_to_peer};
    int rc = center_open(&P.C, &o, &h, st);
    if (rc < 0) {
        d11_error("center: cannot start on %s: %s (see the log line above)", db_path, d11_strerror(rc));
        d11_store_close(st);
        return 1;
    }
    events_open(&P, db_path, &cfg);
    int lfd = d11_listen_unix(sock_path);
    if (lfd < 0) {
        d11_error("center: cannot listen on %s: %s", sock_path, d11_strerror(lfd));
        center_free(P.C);
        d11_store_close(st);
        return 1;
    }
    if ((rc = d11_loop_init(&P.loop)) < 0 ||
        (rc = d11_links_init(&P.links, &P.loop, CENTER_CONNS_MAX, on_frame, on_close, &P)) < 0)
        d11_fatal("center: event loop: %s", d11_strerror(rc));
    P.links.on_open = on_open;
    if ((rc = d11_links_listen(&P.links, &P.lio, lfd)) < 0) d11_fatal("center: listen: %s", d11_strerror(rc));
    d11_timer_start(&P.loop, &P.tick, CENTER_TICK_MS, CENTER_TICK_MS, on_tick, &P);
    if (d11_loop_before_sleep(&P.loop, commit_hook, &P) < 0 ||
        d11_loop_before_sleep(&P.loop, d11_links_flush_hook, &P.links) < 0) /* last: writes */
        d11_fatal("center: before-sleep hooks");
    signal_loop = &P.loop;
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d11_info("center listening on %s", sock_path);
    (void)sd_notify(0, "READY=1\nSTATUS=serving"); /* systemd Type=notify (deploy/systemd) */

    d11_loop_run(&P.loop);

    commit_hook(&P.loop, &P); /* what the last iteration left, if anything */
    d11_links_flush(&P.links);
    /* A clean stop leaves no socket behind (a stale one would look like a live center). */
    if (unlink(sock_path) == -1 && errno != ENOENT) d11_warn("center: cannot remove %s: %s", sock_path, strerror(errno));
    d11_timer_stop(&P.loop, &P.tick);
    d11_io_stop(&P.loop, &P.lio);
    close(lfd);
    d11_links_release(&P.links); /* on_close -> center_peer_down for each open link */
    d11_loop_release(&P.loop);
    signal_loop = NULL;
    center_free(P.C);
    events_close(&P);
    d11_store_close(st);
    d11_otlp_stop(&P.otlp); /* flushes the last spans */
    free(P.rq);
    P.rq = NULL;
    d11_info("center stopped");
    d11_datadir_unlock(lock_fd); /* the file no longer names a live pid */
    return 0;
}
