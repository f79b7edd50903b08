/*
 * cell.c — `d11 cell --id N`: the process around the cell state machine (cell.h).
 *
 * Length (~720 lines, over the house's ~700): everything here is transport — links, the
 * storage thread hand-off, drain, the STATS / METRICS answers and the spans of the
 * process — and splitting it would scatter one loop's state over files; the cell's
 * logic is in the machine files.
 *
 * One logic thread runs a d11_loop (core/loop.h) over: the listener DATA/cell-<id>.sock
 * and the gateway connections it accepts (a d11_links table, rpc/link.h); the center, an
 * outgoing link in a one-slot table of its own, reconnected by a one-shot timer
 * CELL_CENTER_RETRY_MS after a failed connect or a loss; the storage thread's done_fd
 * (store/thread.h), whose result goes to cell_batch_done, which releases that batch's
 * replies; and a periodic CELL_TICK_MS timer (expiry, grant retries, parked deadlines).
 * Before sleeping, two hooks run in this order: group commit (hand the open batch to the
 * storage thread when it is idle), then the flush of every link with output — so every
 * reply produced in an iteration leaves in one write per link.
 *
 * Peer ids given to the machine name a gateway link: gen (low CELL_PEER_GEN_BITS) << 10 |
 * idx. host_send_peer rebuilds the full gen (the newest one <= the slot's current gen
 * with those low bits) and asks d11_links_get, so a reply for a link that closed — even
 * if its slot now serves a new connection — is dropped, never misdelivered. The top bit
 * stays 0: an id never equals the machine's NONE32.
 *
 * EVENTS_READ is answered here too: queued to the event reader thread (events_thread.h),
 * which reads committed outbox rows through a read-only SQLite connection of its own and
 * hands back the reply through an eventfd this loop watches — a large page never delays
 * an order. EVENTS_PRUNE (retention, twice a second) is answered inline (events_read.h).
 *
 * STATS is answered here: the machine's counters (cell_get_counts) plus what only the
 * process knows — the storage thread's commits, syncs and unsynced commits, durability,
 * pid, the link table.
 *
 * Failure and stop: a failed commit makes the machine FAILED; its 503s are flushed and the
 * process exits 1 (`d11 up` restarts it; recovery rebuilds memory from what is durable).
 * SIGTERM/SIGINT set the only global, the signal flag; the loop then stops accepting,
 * unlinks the socket, calls cell_shutdown, and exits 0 once the machine is quiet and
 * nothing is left unsent (bounded by CELL_DRAIN_UNSENT_MS for a gateway not reading).
 *
 * Fault points (core/fault.h) live here, on the transport: cell.recv (drop / delay /
 * garble a request) and cell.reply (drop / delay a reply).
 *
 * Threads: all of this runs on the logic thread; the storage thread shares only the op
 * bytes of the batch it commits (store/thread.h).
 */
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
#include "../core/config.h"
#include "../core/datadir.h"
#include "../core/fault.h"
#include "../core/loop.h"
#include "../core/otlp.h"
#include "../core/promtext.h"
#include "../rpc/control.h"
#include "../rpc/link.h"
#include "../store/cell_sqlite.h"
#include "../store/open.h"
#include "../store/thread.h"
#include "cell.h"
#include "events_read.h"
#include "events_thread.h"

#define CELL_CONNS_MAX        1024 /* gateway connections (one per gateway thread in practice) */
#define CELL_TICK_MS          10
#define CELL_CENTER_RETRY_MS  200
#define CELL_DRAIN_UNSENT_MS  2000 /* after quiet: how long unsent replies may hold the exit */
#define CELL_PEER_IDX_BITS    10
#define CELL_PEER_GEN_BITS    21
#define CELL_PEER_GEN_MASK    ((1u << CELL_PEER_GEN_BITS) - 1)

_Static_assert(CELL_CONNS_MAX <= (1u << CELL_PEER_IDX_BITS), "link index must fit in a peer id");
_Static_assert(CELL_PEER_IDX_BITS + CELL_PEER_GEN_BITS < 32, "peer ids keep the top bit 0 (never NONE32)");

typedef struct cell_proc {
    d11_config       cfg;
    cell_opts        opts;
    cell            *cell;
    d11_store       *store;
    d11_store_thread st;
    d11_loop         loop;
    d11_links        gw;      /* gateway connections */
    d11_links        up;      /* one slot: the center */
    uint32_t         center_gen; /* gen of up.v[0] while the center is connected; 0 = none */
    d11_io           lio, store_io;
    d11_timer        tick, center_retry;
    int              lfd;
    bool             draining;
    int64_t          quiet_since_ms; /* draining: when the machine was first seen quiet */
    d11_buf          stats_body, stats_frame; /* STATS and METRICS replies */
    d11_hist_us      commit_hist; /* storage thread round trips (loop thread only) */
    d11_hist_n       batch_hist;  /* ops per batch handed to the storage thread */
    uint32_t         last_nops;   /* ops of the batch at the storage thread */
    uint64_t         slow_commits; /* commits >= --slow-commit-ms (each logged) */
    /* tracing (--otlp-endpoint): see "spans" below */
    d11_otlp         otlp;
    struct cell_rq  *rq;          /* CELL_SPAN_SLOTS requests being handled, by (peer, req_id) */
    struct cell_rq  *cur;         /* the request being handled now (a GRANT it causes is its child) */
    struct cell_rq  *grants;      /* CELL_SPAN_SLOTS grants in flight, by req_id */
    int64_t          commit_start_ns, commit_end_ns; /* the batch whose replies are being released */
    uint32_t         commit_ops;
    bool             releasing;   /* inside cell_batch_done: replies waited for that commit */
    uint64_t         rng;
    d11_outbox_reader *outbox; /* EVENTS_PRUNE (events_read.h); NULL: answered 503 */
    cell_evthread    evt;     /* EVENTS_READ, off this thread (events_thread.h) */
    d11_io           evt_io;
    char             sock_path[1200];
} cell_proc;

static volatile sig_atomic_t stop_flag;

/* ---- spans (core/otlp.h) ----
 * cell.<request type> (SERVER, parent: the gateway's span carried in the frame header) from
 * the frame's arrival to its reply; cell.batch_commit (INTERNAL, child of it) when the
 * reply waited for a group commit; cell.grant (CLIENT, child of the request that caused
 * it) for the GRANT round trip to the center. The W3C sampled flag of the frame header is
 * the head decision; errors (status >= 500) and slow ones (>= --slow-commit-ms) are kept
 * anyway. Entries live in two small direct-mapped tables (a collision forgets the older
 * one: its span is simply not exported). Loop thread only. */
#define CELL_SPAN_SLOTS 4096

typedef struct cell_rq {
    uint64_t req_id;
    uint32_t peer;
    bool     used;
    uint8_t  trace_id[16], parent_id[8], span_id[8], flags;
    int64_t  start_ns;
} cell_rq;

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t span_rand(cell_proc *p)
{
    uint64_t z = (p->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (z ^ (z >> 31)) | 1;
}

static cell_rq *rq_slot(cell_rq *tab, uint32_t peer, uint64_t req_id)
{
    return &tab[d11_hash64(&req_id, sizeof req_id, peer) % CELL_SPAN_SLOTS];
}

/* A request frame arrived: remember its trace context and start time. */
static void span_begin(cell_proc *p, uint32_t peer, const d11_frame_hdr *h)
{
    p->cur = NULL;
    if (!p->otlp.on) return;
    cell_rq *r = rq_slot(p->rq, peer, h->req_id);
    *r = (cell_rq){.req_id = h->req_id, .peer = peer, .used = true, .flags = h->trace_flags, .start_ns = wall_ns()};
    memcpy(r->trace_id, h->trace_id, 16);
    memcpy(r->parent_id, h->span_id, 8);
    uint64_t sid = span_rand(p);
    memcpy(r->span_id, &sid, 8);
    p->cur = r;
}

/* A reply leaves: end the request's span (and its batch_commit child). */
static void span_end(cell_proc *p, uint32_t peer, const uint8_t *frame, size_t n)
{
    d11_frame_hdr h;
    if (!p->otlp.on || d11_frame_hdr_decode(frame, n, &h) != 0 || !(h.flags & D11_WF_REPLY)) return;
    cell_rq *r = rq_slot(p->rq, peer, h.req_id);
    if (!r->used || r->req_id != h.req_id || r->peer != peer) return;
    r->used = false;
    d11_span s;
    memset(&s, 0, sizeof s);
    memcpy(s.trace_id, r->trace_id, 16);
    memcpy(s.span_id, r->span_id, 8);
    memcpy(s.parent_id, r->parent_id, 8);
    snprintf(s.name, sizeof s.name, "cell.%s", d11_msg_type_name(h.type));
    s.kind = D11_SPAN_SERVER;
    s.error = h.status >= 500;
    s.start_ns = r->start_ns;
    s.end_ns = wall_ns();
    d11_span_attr_int(&s, "d11.cell", p->opts.id);
    d11_span_attr_int(&s, "rpc.status", h.status);
    bool head = r->flags & 1;
    if (p->releasing) {
        d11_span b;
        memset(&b, 0, sizeof b);
        memcpy(b.trace_id, r->trace_id, 16);
        uint64_t bid = span_rand(p);
        memcpy(b.span_id, &bid, 8);
        memcpy(b.parent_id, r->span_id, 8);
        snprintf(b.name, sizeof b.name, "cell.batch_commit");
        b.kind = D11_SPAN_INTERNAL;
        b.start_ns = p->commit_start_ns;
        b.end_ns = p->commit_end_ns;
        d11_span_attr_int(&b, "d11.batch_ops", p->commit_ops);
        d11_span_attr_int(&b, "d11.cell", p->opts.id);
        bool keep = head || s.error || s.end_ns - s.start_ns >= p->otlp.slow_ns;
        d11_otlp_end(&p->otlp, &b, keep);
        if (keep) head = true; /* keep the parent with its child */
    }
    d11_otlp_end(&p->otlp, &s, head);
}

/* A GRANT leaves for the center while a request is handled: its round trip is a child,
 * and the frame (already queued: patched in place) carries the grant span as the parent
 * of the center's span. */
static void grant_begin(cell_proc *p, uint8_t *frame, size_t n)
{
    d11_frame_hdr h;
    if (!p->otlp.on || !p->cur || d11_frame_hdr_decode(frame, n, &h) != 0 || h.type != D11_MSG_GRANT) return;
    cell_rq *g = rq_slot(p->grants, 0, h.req_id);
    *g = *p->cur;
    g->req_id = h.req_id;
    g->start_ns = wall_ns();
    memcpy(g->parent_id, p->cur->span_id, 8);
    uint64_t sid = span_rand(p);
    memcpy(g->span_id, &sid, 8);
    memcpy(h.trace_id, g->trace_id, 16);
    memcpy(h.span_id, g->span_id, 8);
    h.trace_flags = g->flags;
    d11_frame_hdr_encode(&h, frame);
}

static void grant_end(cell_proc *p, const d11_frame *f)
{
    if (!p->otlp.on || f->hdr.type != D11_MSG_GRANT) return;
    cell_rq *g = rq_slot(p->grants, 0, f->hdr.req_id);
    if (!g->used || g->req_id != f->hdr.req_id) return;
    g->used = false;
    d11_span s;
    memset(&s, 0, sizeof s);
    memcpy(s.trace_id, g->trace_id, 16);
    memcpy(s.span_id, g->span_id, 8);
    memcpy(s.parent_id, g->parent_id, 8);
    snprintf(s.name, sizeof s.name, "cell.grant");
    s.kind = D11_SPAN_CLIENT;
    s.error = f->hdr.status >= 500;
    s.start_ns = g->start_ns;
    s.end_ns = wall_ns();
    d11_span_attr_int(&s, "d11.cell", p->opts.id);
    d11_span_attr_int(&s, "rpc.status", f->hdr.status);
    d11_otlp_end(&p->otlp, &s, g->flags & 1);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* ---- gateway links ---- */

static uint32_t peer_of(const d11_link *k)
{
    return ((k->gen & CELL_PEER_GEN_MASK) << CELL_PEER_IDX_BITS) | k->idx;
}

/* The open link a peer id names, or NULL (closed, or its slot reused since). */
static d11_link *link_of(cell_proc *p, uint32_t peer)
{
    uint32_t idx = peer & ((1u << CELL_PEER_IDX_BITS) - 1), low = peer >> CELL_PEER_IDX_BITS;
    if (idx >= p->gw.cap) return NULL;
    uint32_t cur = p->gw.v[idx].gen;
    uint32_t gen = (cur & ~CELL_PEER_GEN_MASK) | low;
    if (gen > cur) gen -= CELL_PEER_GEN_MASK + 1; /* an older generation */
    return d11_links_get(&p->gw, idx, gen);
}

static void host_send_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    cell_proc *p = data;
    d11_link *k = link_of(p, peer);
    if (!k) return; /* the gateway went away; it answered (or will answer) 503/504 itself */
    d11_fault_hit fh = d11_fault(D11_FP_CELL_REPLY);
    if (fh.action == D11_FA_DROP) return; /* chaos: the gateway times out (504) */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
    span_end(p, peer, frame, n);
    d11_link_send(k, frame, n);
}

/* STATS (admin probe, GET /admin/cells): the machine's counters and limits, plus the
 * storage thread's commits / syncs / unsynced_commits, durability, pid and the links. */
static void reply_stats(cell_proc *p, const d11_link *k, const d11_frame_hdr *h)
{
    cell_counts cc;
    uint64_t commits, syncs, unsynced;
    cell_get_counts(p->cell, &cc);
    d11_store_thread_counts(&p->st, &commits, &syncs, &unsynced);
    const cell_opts *o = &p->opts;
    d11_buf *b = &p->stats_body;
    d11_buf_reset(b);
#define U(x) ((unsigned long long)(x))
    d11_buf_printf(b,
                   "{\"process\":\"cell\",\"cell\":%d,\"pid\":%d,\"durability\":\"%s\",\"orders\":%llu,"
                   "\"skus\":%llu,\"created\":%llu,\"rejected_out_of_stock\":%llu,\"rejected_table_full\":%llu,"
                   "\"expired_deadline\":%llu,\"parked\":%llu,\"parked_total\":%llu,\"batches\":%llu,"
                   "\"batch_ops\":%llu,\"last_commit_us\":%llu,\"center_up\":%s,\"commits\":%llu,"
                   "\"syncs\":%llu,\"unsynced_commits\":%llu,"
                   "\"links\":{\"open\":%u,\"refused_full\":%llu,\"closed_slow\":%llu},"
                   "\"limits\":{\"orders_max\":%u,\"items_max\":%u,\"skus_max\":%u,\"parked_max\":%u,"
                   "\"conns_max\":%u}}",
                   o->id, (int)getpid(), d11_durability_name(p->cfg.durability), U(cc.orders), U(cc.ledgers),
                   U(cc.created), U(cc.rejected_oos), U(cc.rejected_full), U(cc.expired_deadline), U(cc.parked),
                   U(cc.parked_total), U(cc.batches), U(cc.batch_ops), U(cc.last_commit_us),
                   cc.center_up ? "true" : "false", U(commits), U(syncs), U(unsynced), p->gw.nopen,
                   U(p->gw.n_refused_full), U(p->gw.n_closed_slow), o->orders_max, o->items_max, o->ledgers_max,
                   o->parked_max, p->gw.cap);
#undef U
    d11_buf_reset(&p->stats_frame);
    d11_reply_enc(&p->stats_frame, h, 200, NULL, b->data, b->len);
    host_send_peer(p, peer_of(k), (const uint8_t *)p->stats_frame.data, p->stats_frame.len); /* cell.reply applies */
}

/* METRICS (gateway /metrics): this cell's families in the Prometheus text format, every
 * sample labelled part="cellN" (the gateway merges the parts, core/promtext.h). */
static void reply_metrics(cell_proc *p, const d11_link *k, const d11_frame_hdr *h)
{
    cell_counts cc;
    uint64_t commits, syncs, unsynced;
    cell_get_counts(p->cell, &cc);
    d11_store_thread_counts(&p->st, &commits, &syncs, &unsynced);
    d11_buf *b = &p->stats_body;
    d11_buf_reset(b);
    char part[32], lb[48];
    snprintf(part, sizeof part, "cell-%d", p->opts.id);
    snprintf(lb, sizeof lb, "part=\"%s\"", part);
#define U(x) ((unsigned long long)(x))
    d11_prom_head(b, "d11_cell_commit_duration_seconds", "histogram",
                  "Group commit round trip to the storage thread (write, and fsync when durable).");
    d11_prom_hist_us(b, "d11_cell_commit_duration_seconds", lb, &p->commit_hist);
    d11_prom_head(b, "d11_cell_batch_ops", "histogram", "Operations per committed batch (batch size).");
    d11_prom_hist_n(b, "d11_cell_batch_ops", lb, &p->batch_hist);
    d11_prom_head(b, "d11_cell_slow_commits_total", "counter", "Commits slower than --slow-commit-ms (each logged).");
    d11_buf_printf(b, "d11_cell_slow_commits_total{%s} %llu\n", lb, U(p->slow_commits));
    d11_prom_head(b, "d11_cell_orders_total", "counter",
                  "Order creations decided by the cell, by outcome and error code.");
    d11_buf_printf(b, "d11_cell_orders_total{%s,outcome=\"created\",code=\"ok\"} %llu\n", lb, U(cc.created));
    d11_buf_printf(b, "d11_cell_orders_total{%s,outcome=\"rejected\",code=\"out_of_stock\"} %llu\n", lb,
                   U(cc.rejected_oos));
    d11_buf_printf(b, "d11_cell_orders_total{%s,outcome=\"rejected\",code=\"table_full\"} %llu\n", lb,
                   U(cc.rejected_full));
    d11_buf_printf(b, "d11_cell_orders_total{%s,outcome=\"expired\",code=\"deadline\"} %llu\n", lb,
                   U(cc.expired_deadline));
    d11_prom_head(b, "d11_cell_parked_orders", "gauge", "Orders parked waiting for a grant from the center.");
    d11_buf_printf(b, "d11_cell_parked_orders{%s} %llu\n", lb, U(cc.parked));
    d11_prom_head(b, "d11_cell_parked_total", "counter", "Orders ever parked for a grant.");
    d11_buf_printf(b, "d11_cell_parked_total{%s} %llu\n", lb, U(cc.parked_total));
    d11_prom_head(b, "d11_cell_orders", "gauge", "Orders held in the cell's table.");
    d11_buf_printf(b, "d11_cell_orders{%s} %llu\n", lb, U(cc.orders));
    d11_prom_head(b, "d11_cell_orders_max", "gauge", "Capacity of the cell's order table.");
    d11_buf_printf(b, "d11_cell_orders_max{%s} %u\n", lb, p->opts.orders_max);
    d11_prom_head(b, "d11_cell_skus", "gauge", "SKU ledgers held by the cell.");
    d11_buf_printf(b, "d11_cell_skus{%s} %llu\n", lb, U(cc.ledgers));
    d11_prom_head(b, "d11_cell_batches_total", "counter", "Batches committed.");
    d11_buf_printf(b, "d11_cell_batches_total{%s} %llu\n", lb, U(cc.batches));
    d11_prom_head(b, "d11_cell_commits_total", "counter", "Storage commits.");
    d11_buf_printf(b, "d11_cell_commits_total{%s} %llu\n", lb, U(commits));
    d11_prom_head(b, "d11_cell_syncs_total", "counter", "Storage fsyncs.");
    d11_buf_printf(b, "d11_cell_syncs_total{%s} %llu\n", lb, U(syncs));
    d11_prom_head(b, "d11_cell_unsynced_commits", "gauge", "Commits not yet fsynced (async durability).");
    d11_buf_printf(b, "d11_cell_unsynced_commits{%s} %llu\n", lb, U(unsynced));
    d11_prom_head(b, "d11_cell_center_up", "gauge", "1 when the cell is connected to the center.");
    d11_buf_printf(b, "d11_cell_center_up{%s} %d\n", lb, cc.center_up ? 1 : 0);
    d11_prom_head(b, "d11_cell_links_open", "gauge", "Gateway connections open at the cell.");
    d11_buf_printf(b, "d11_cell_links_open{%s} %u\n", lb, p->gw.nopen);
#undef U
    d11_prom_process(b, part);
    d11_otlp_metrics(&p->otlp, b, part);
    d11_buf_reset(&p->stats_frame);
    d11_reply_enc(&p->stats_frame, h, 200, NULL, b->data, b->len);
    host_send_peer(p, peer_of(k), (const uint8_t *)p->stats_frame.data, p->stats_frame.len);
}

static void on_gw_frame(d11_links *t, d11_link *k, const d11_frame *f)
{
    cell_proc *p = t->data;
    if (d11_control_frame(k, f)) return; /* log level, chaos arms: before the fault points (rpc/control.h) */
    d11_fault_hit fh = d11_fault(D11_FP_CELL_RECV);
    if (fh.action == D11_FA_DROP) return; /* chaos: a lost request; the gateway answers 504 */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
    if (fh.action == D11_FA_GARBLE) {
        /* chaos: a garbled frame is a broken stream; the receiver must drop the link */
        d11_warn("cell %d: garbled frame from the gateway; closing the connection", p->opts.id);
        d11_link_close(k, D11_EPROTO);
        return;
    }
    if (f->hdr.type == D11_MSG_STATS && !(f->hdr.flags & D11_WF_REPLY)) reply_stats(p, k, &f->hdr);
    else if (f->hdr.type == D11_MSG_METRICS && !(f->hdr.flags & D11_WF_REPLY)) reply_metrics(p, k, &f->hdr);
    else if (f->hdr.type == D11_MSG_EVENTS_READ && !(f->hdr.flags & D11_WF_REPLY)) {
        /* the committed outbox, read by the reader thread: never delays an order */
        if (!cell_evthread_submit(&p->evt, peer_of(k), f)) {
            static const char msg[] = "too many event reads queued";
            d11_buf_reset(&p->stats_frame);
            d11_reply_enc(&p->stats_frame, &f->hdr, 503, "unavailable", msg, sizeof msg - 1);
            host_send_peer(p, peer_of(k), (const uint8_t *)p->stats_frame.data, p->stats_frame.len);
        }
    } else if (f->hdr.type == D11_MSG_EVENTS_PRUNE && !(f->hdr.flags & D11_WF_REPLY)) {
        d11_cell_events_prune(p->outbox, p->cell, f, &p->stats_body, &p->stats_frame);
        host_send_peer(p, peer_of(k), (const uint8_t *)p->stats_frame.data, p->stats_frame.len);
    } else {
        span_begin(p, peer_of(k), &f->hdr);
        cell_on_request(p->cell, peer_of(k), f);
        p->cur = NULL;
    }
}

static void on_gw_close(d11_links *t, d11_link *k, int why)
{
    cell_proc *p = t->data;
    (void)why;
    cell_peer_down(p->cell, peer_of(k)); /* k->gen is still the closing link's */
}

/* ---- the center ---- */

static void center_retry_fire(d11_loop *l, d11_timer *tm);

static void host_send_center(void *data, const uint8_t *frame, size_t n)
{
    cell_proc *p = data;
    d11_link *k = d11_links_get(&p->up, 0, p->center_gen);
    if (k) {
        d11_buf *out = d11_link_out(k);
        size_t at = out->len;
        d11_buf_append(out, frame, n);
        grant_begin(p, (uint8_t *)out->data + at, n);
    }
}

static void on_center_frame(d11_links *t, d11_link *k, const d11_frame *f)
{
    cell_proc *p = t->data;
    (void)k;
    if (f->hdr.flags & D11_WF_REPLY) grant_end(p, f);
    cell_on_center(p->cell, f);
}

static void on_center_close(d11_links *t, d11_link *k, int why)
{
    cell_proc *p = t->data;
    (void)k;
    p->center_gen = 0;
    if (why == 0) return; /* d11_links_release at exit */
    cell_center_down(p->cell); /* logs the loss; orders needing the center get 503 */
    if (!p->draining) d11_timer_start(&p->loop, &p->center_retry, CELL_CENTER_RETRY_MS, 0, center_retry_fire, p);
}

/* Connect to DATA/center.sock (a blocking local connect); on failure retry in
 * CELL_CENTER_RETRY_MS. Never while draining. */
static void center_connect(cell_proc *p)
{
    if (p->draining) return;
    char path[1200];
    d11_config_path(&p->cfg, "center.sock", path, sizeof path);
    int fd = d11_connect_unix(path);
    d11_link *k = fd < 0 ? NULL : d11_links_add(&p->up, fd); /* takes the fd */
    if (!k) {
        d11_timer_start(&p->loop, &p->center_retry, CELL_CENTER_RETRY_MS, 0, center_retry_fire, p);
        return;
    }
    D11_ASSERT(k->idx == 0 && k->gen != 0);
    p->center_gen = k->gen;
    cell_center_up(p->cell); /* HELLO; missed returns are re-sent by its reply */
}

static void center_retry_fire(d11_loop *l, d11_timer *tm)
{
    (void)l;
    center_connect(tm->data);
}

/* ---- storage thread, event reader thread, tick, group commit ---- */

static void send_event_reply(void *ctx, uint32_t peer, const uint8_t *f, size_t n) { host_send_peer(ctx, peer, f, n); }

static void on_evt_done(d11_loop *l, d11_io *io, uint32_t events)
{
    cell_proc *p = io->data;
    (void)l, (void)events;
    cell_evthread_collect(&p->evt, send_event_reply, p);
}

static void on_store_done(d11_loop *l, d11_io *io, uint32_t events)
{
    cell_proc *p = io->data;
    (void)l, (void)events;
    int result;
    int64_t us;
    if (!d11_store_thread_collect(&p->st, &result, &us)) return;
    cell_set_last_commit_us(p->cell, us);
    d11_hist_us_add(&p->commit_hist, us);
    p->commit_end_ns = wall_ns();
    p->commit_start_ns = p->commit_end_ns - us * 1000;
    p->commit_ops = p->last_nops;
    if (us >= p->cfg.slow_commit_ms * 1000) {
        p->slow_commits++;
        char kv[160];
        snprintf(kv, sizeof kv, "\"event\":\"slow_commit\",\"cell\":%d,\"latency_us\":%lld,\"ops\":%u",
                 p->opts.id, (long long)us, p->last_nops);
        d11_log_kv(D11_LOG_WARN, kv, "cell %d: slow commit: %lld us for %u ops (threshold %lld ms)", p->opts.id,
                   (long long)us, p->last_nops, (long long)p->cfg.slow_commit_ms);
    }
    p->releasing = true; /* the replies sent now waited for this commit (spans) */
    cell_batch_done(p->cell, result); /* releases the batch's replies (or its 503s) */
    p->releasing = false;
    if (cell_failed(p->cell)) {
        /* Memory is now ahead of the database: answer, then restart from what is durable. */
        d11_links_flush(&p->gw);
        d11_error("cell %d: exiting for recovery", p->opts.id);
        _exit(1);
    }
}

static void on_tick(d11_loop *l, d11_timer *tm)
{
    cell_proc *p = tm->data;
    (void)l;
    cell_tick(p->cell);
}

/* Before-sleep hook 1: when the storage thread is idle, close the open batch and hand it
 * over. Runs before the flush hook, so nothing it releases waits an iteration. */
static void group_commit(d11_loop *l, void *data)
{
    cell_proc *p = data;
    (void)l;
    const uint8_t *ops;
    size_t len;
    uint32_t nops;
    if (cell_batch_take(p->cell, &ops, &len, &nops)) {
        d11_hist_n_add(&p->batch_hist, nops);
        p->last_nops = nops;
        d11_store_thread_submit(&p->st, ops, len, nops);
    }
}

/* Before-sleep hook 2 (last): write every link with output. */
static void flush_all(d11_loop *l, void *data)
{
    cell_proc *p = data;
    (void)l;
    d11_links_flush(&p->gw);
    d11_links_flush(&p->up);
}

/* ---- drain and run ---- */

static bool gw_unsent(const cell_proc *p)
{
    for (uint32_t i = 0; i < p->gw.cap; i++)
        if (p->gw.v[i].open && d11_conn_pending(&p->gw.v[i].c)) return true;
    return false;
}

static void begin_drain(cell_proc *p)
{
    p->draining = true;
    d11_io_stop(&p->loop, &p->lio);
    close(p->lfd);
    p->lfd = -1;
    unlink(p->sock_path);
    d11_timer_stop(&p->loop, &p->center_retry);
    cell_shutdown(p->cell); /* parked orders answered 503 (queued: the next flush sends them) */
    d11_info("cell %d draining", p->opts.id);
}

/* Iterate until a drain finishes. After each d11_loop_run_once every hook has run, so
 * what the machine released has been offered to the kernel. */
static int run(cell_proc *p)
{
    for (;;) {
        if (stop_flag && !p->draining) begin_drain(p);
        if (p->draining && cell_quiet(p->cell)) {
            int64_t now = d11_mono_ms();
            if (!p->quiet_since_ms) p->quiet_since_ms = now;
            if (!gw_unsent(p)) return 0;
            if (now - p->quiet_since_ms >= CELL_DRAIN_UNSENT_MS) {
                d11_warn("cell %d: a gateway did not read its last replies; exiting anyway", p->opts.id);
                return 0;
            }
        }
        int rc = d11_loop_run_once(&p->loop, -1); /* the tick bounds the sleep */
        if (rc < 0) d11_fatal("cell %d: event loop: %s", p->opts.id, d11_strerror(rc));
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 cell --id N [--data DIR] [--durability sync|async|none]\n"
               "                [--async-flush-ms MS] [--order-ttl-ms MS] [--soldout-cache-ms MS]\n"
               "                [--log-level LEVEL] [--slow-commit-ms MS] [--otlp-endpoint URL]\n\n"
               "Runs one cell: orders, allotments and expiry for the users whose slot it owns.\n"
               "Listens on DIR/cell-N.sock; stores in DIR/cell-N.db. Normally started by `d11 up`.\n\n"
               "  --id N               this cell's number (0-based)\n"
               "  --data DIR           data directory (default ./data)\n"
               "  --durability MODE    sync (default: answer after fsync), async, none — docs/storage.md\n"
               "  --async-flush-ms MS  fsync interval in async mode (default 10)\n"
               "  --order-ttl-ms MS    unpaid orders expire after this (default 900000 = 15 min)\n"
               "  --soldout-cache-ms MS  how long a sold-out answer from the center is trusted (default 100)\n"
               "  --log-level LEVEL    debug, info (default), warn, error\n"
               "  --slow-commit-ms MS  commits at least this slow are logged and counted (default 50)\n"
               "  --otlp-endpoint URL  export trace spans as OTLP/HTTP JSON (default off)\n");
}

/* Open the store, recover the machine, start the storage thread, listen, and register
 * everything on the loop. 0, or 1 after printing why (the exit status). */
static int setup(cell_proc *p)
{
    int id = p->cfg.cell_id;
    char path[1200], file[64];
    snprintf(file, sizeof file, "cell-%d.db", id);
    d11_config_path(&p->cfg, file, path, sizeof path);
    p->store = d11_store_open_cell(&p->cfg, id); /* PostgreSQL with --store, else SQLite at path */
    if (!p->store) {
        d11_error("cell %d: cannot open %s", p->cfg.cell_id, path);
        return 1;
    }
    cell_opts_default(&p->opts, id);
    p->opts.order_ttl_ms = p->cfg.order_ttl_ms;
    p->opts.soldout_cache_ms = p->cfg.soldout_cache_ms;
    cell_host h = {.clock = d11_clock_system(), .data = p, .send_peer = host_send_peer,
                   .send_center = host_send_center};
    int rc = cell_open(&p->cell, &p->opts, &h, p->store);
    if (rc < 0) {
        d11_error("cell %d: recovery of %s failed: %s", p->cfg.cell_id, path, d11_strerror(rc));
        return 1;
    }
    if (d11_store_thread_init(&p->st, p->store, p->cfg.durability, p->cfg.async_flush_ms) < 0 ||
        d11_store_thread_start(&p->st) < 0)
        d11_fatal("cannot start the storage thread");
    snprintf(file, sizeof file, "cell-%d.sock", id);
    d11_config_path(&p->cfg, file, p->sock_path, sizeof p->sock_path);
    p->lfd = d11_listen_unix(p->sock_path);
    if (p->lfd < 0) {
        d11_error("cell %d: cannot listen on %s: %s", p->cfg.cell_id, p->sock_path, d11_strerror(p->lfd));
        return 1;
    }
    if (d11_outbox_reader_open(path, &p->outbox) < 0) p->outbox = NULL; /* logged; events answer 503 */
    d11_outbox_reader *evr = NULL;
    if (d11_outbox_reader_open(path, &evr) < 0) evr = NULL;
    if (cell_evthread_start(&p->evt, evr, id) < 0) d11_fatal("cell %d: cannot start the event reader thread", id);
    d11_buf_init(&p->stats_body, 1024);
    d11_buf_init(&p->stats_frame, 1024);
    char oerr[200];
    if (d11_otlp_start(&p->otlp, p->cfg.otlp_endpoint, "d11-cell", 0, p->cfg.slow_commit_ms, oerr, sizeof oerr) < 0) {
        d11_error("cell %d: --otlp-endpoint: %s", id, oerr);
        return 1;
    }
    if (p->otlp.on) {
        p->rq = calloc(CELL_SPAN_SLOTS, sizeof *p->rq);
        p->grants = calloc(CELL_SPAN_SLOTS, sizeof *p->grants);
        if (!p->rq || !p->grants) d11_fatal("out of memory");
        d11_random_bytes(&p->rng, sizeof p->rng);
    }
    if ((rc = d11_loop_init(&p->loop)) < 0 ||
        (rc = d11_links_init(&p->gw, &p->loop, CELL_CONNS_MAX, on_gw_frame, on_gw_close, p)) < 0 ||
        (rc = d11_links_init(&p->up, &p->loop, 1, on_center_frame, on_center_close, p)) < 0 ||
        (rc = d11_links_listen(&p->gw, &p->lio, p->lfd)) < 0 ||
        (rc = d11_io_start(&p->loop, &p->store_io, p->st.done_fd, D11_IO_READ, on_store_done, p)) < 0 ||
        (rc = d11_io_start(&p->loop, &p->evt_io, p->evt.done_fd, D11_IO_READ, on_evt_done, p)) < 0 ||
        (rc = d11_loop_before_sleep(&p->loop, group_commit, p)) < 0 ||
        (rc = d11_loop_before_sleep(&p->loop, flush_all, p)) < 0)
        d11_fatal("cell %d: cannot set up the event loop: %s", id, d11_strerror(rc));
    d11_timer_start(&p->loop, &p->tick, CELL_TICK_MS, CELL_TICK_MS, on_tick, p);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    center_connect(p);
    return 0;
}

int d11_cell_main(int argc, char **argv)
{
    cell_proc P = {0};
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
    d11_fault_init_from_env(name); /* a bad D11_FAULTS exits 2 before anything is created */
    /* One process per cell file: a second `d11 cell --id N` on the same directory stops
     * here, naming the holder (the lock dies with the process, kill -9 included). */
    char lerr[512];
    int lock_fd = d11_datadir_lock(p->cfg.data_dir, name, lerr, sizeof lerr);
    if (lock_fd < 0) {
        d11_error("%s", lerr);
        return 1;
    }
    int rc = setup(p);
    if (rc) {
        d11_datadir_unlock(lock_fd);
        return rc;
    }
    d11_info("cell %d listening on %s (durability %s)", id, p->sock_path, d11_durability_name(p->cfg.durability));
    (void)sd_notify(0, "READY=1\nSTATUS=recovered, serving"); /* systemd Type=notify (deploy/systemd) */
    rc = run(p);
    d11_timer_stop(&p->loop, &p->tick);
    d11_timer_stop(&p->loop, &p->center_retry);
    d11_io_stop(&p->loop, &p->store_io);
    d11_io_stop(&p->loop, &p->evt_io);
    cell_evthread_stop(&p->evt);
    d11_links_release(&p->gw);
    d11_links_release(&p->up);
    d11_store_thread_stop(&p->st);
    cell_free(p->cell);
    d11_store_close(p->store);
    d11_outbox_reader_close(p->outbox);
    d11_loop_release(&p->loop);
    d11_buf_free(&p->stats_body);
    d11_buf_free(&p->stats_frame);
    d11_otlp_stop(&p->otlp); /* flushes the last spans */
    free(p->rq);
    free(p->grants);
    d11_info("cell %d stopped", id);
    d11_datadir_unlock(lock_fd); /* the file no longer names a live pid */
    return rc;
}
