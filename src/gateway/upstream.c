/*
 * upstream.c — one gateway thread's wire connections to the center and the cells (see
 * upstream.h for the contract: pending requests with completion callbacks, deadlines,
 * the routing table).
 *
 * Each target has at most one connection per thread, connected with a non-blocking
 * Unix-socket connect (a full listen backlog fails at once instead of blocking the loop)
 * and re-tried with doubling backoff while down. When a connection drops or sends
 * garbage, every request pending on it completes with GW_UPERR_DROPPED and it is
 * reconnected (the d11_link's on_close, up_closed). Frames are written once per loop
 * iteration (gw_up_flush). The fault point gateway.upstream sits in gw_up_send (up_fault).
 * Thread: the owning thread only.
 */
#include "upstream.h"
#include "../core/clock.h"
#include "../core/fault.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "gw.h"

/* The open link of target, or NULL while it is down. */
static d11_link *up_link(gw_thread *t, int target)
{
    gw_up *u = &t->ups.up[target];
    if (!u->connected) return NULL;
    d11_link *k = d11_links_get(&t->ups.links, u->link_idx, u->link_gen);
    D11_ASSERT(k != NULL); /* a closed link has gone through up_closed */
    return k;
}

static int connect_unix_nb(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == -1) {
        int e = -errno;
        close(fd);
        return e; /* EAGAIN (backlog full), ENOENT, ECONNREFUSED: retry later */
    }
    int sz = 4 << 20;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    return fd;
}

static void set_wanted(gw_thread *t, int ncells)
{
    t->ups.up[GW_UP_CENTER].wanted = true;
    atomic_store_explicit(&t->m.up_wanted[GW_UP_CENTER], 1, memory_order_relaxed);
    for (int i = 0; i < D11_CELLS_MAX && i < ncells; i++) {
        t->ups.up[gw_up_cell(i)].wanted = true;
        atomic_store_explicit(&t->m.up_wanted[gw_up_cell(i)], 1, memory_order_relaxed);
    }
}

static void up_on_frame(d11_links *lt, d11_link *k, const d11_frame *f);
static void up_closed(d11_links *lt, d11_link *k, int why);

int gw_up_sock_path(const struct gw *g, int target, char *out, size_t cap)
{
    char file[32];
    snprintf(file, sizeof file, target == GW_UP_CENTER ? "center.sock" : "cell-%d.sock", target - 1);
    return d11_config_path(&g->cfg, file, out, cap);
}

int gw_up_init(gw_thread *t)
{
    int rc = d11_links_init(&t->ups.links, &t->loop, GW_UP_N, up_on_frame, up_closed, t);
    if (rc < 0) return rc;
    for (int i = 0; i < GW_UP_N; i++) {
        gw_up *u = &t->ups.up[i];
        memset(u, 0, sizeof *u);
        if (i == GW_UP_CENTER) snprintf(u->name, sizeof u->name, "center");
        else snprintf(u->name, sizeof u->name, "cell-%d", i - 1);
        if (gw_up_sock_path(t->gw, i, u->path, sizeof u->path) < 0) return -ENAMETOOLONG;
        u->backoff_ms = D11_GW_RECONNECT_MS_MIN;
    }
    set_wanted(t, t->gw->cfg.cells);
    d11_routing_default(&t->ups.routing, (unsigned)t->gw->cfg.cells);
    t->ups.routing_live = false;
    t->ups.routing_next_ms = 0;
    atomic_store(&t->m.routing_version, 0);
    t->ups.pend = calloc(D11_GW_PENDING_MAX, sizeof *t->ups.pend);
    t->ups.pend_free = calloc(D11_GW_PENDING_MAX, sizeof *t->ups.pend_free);
    if (!t->ups.pend || !t->ups.pend_free) return -ENOMEM;
    for (uint32_t i = 0; i < D11_GW_PENDING_MAX; i++)
        t->ups.pend_free[i] = D11_GW_PENDING_MAX - 1 - i;
    t->ups.npend_free = D11_GW_PENDING_MAX;
    for (int c = 0; c < GW_PC_N; c++) t->ups.list_head[c] = t->ups.list_tail[c] = GW_NIL;
    t->ups.seq = 1;
    return 0;
}

void gw_up_release(gw_thread *t)
{
    d11_timer_stop(&t->loop, &t->up_timer);
    d11_links_release(&t->ups.links); /* closes: what is pending completes as dropped */
    free(t->ups.pend);
    free(t->ups.pend_free);
}

const char *gw_up_name(gw_thread *t, int target)
{
    D11_ASSERT(target >= 0 && target < GW_UP_N);
    return t->ups.up[target].name;
}

size_t gw_up_backlog(gw_thread *t, int target)
{
    D11_ASSERT(target >= 0 && target < GW_UP_N);
    d11_link *k = up_link(t, target);
    return k ? d11_conn_pending(&k->c) : 0;
}

const d11_routing *gw_routing(gw_thread *t, bool *live)
{
    *live = t->ups.routing_live;
    return &t->ups.routing;
}

bool gw_up_ready(gw_thread *t, int target)
{
    return target >= 0 && target < GW_UP_N && t->ups.up[target].connected;
}

bool gw_up_writable(gw_thread *t, int target)
{
    return gw_up_ready(t, target) && gw_up_backlog(t, target) <= GW_UP_BACKLOG_MAX;
}

int gw_target_of_slot(gw_thread *t, unsigned slot)
{
    D11_ASSERT(slot < D11_SLOTS);
    return gw_up_cell(t->ups.routing.cell_of_slot[slot]);
}

/* ---- pending table ---- */

gw_pend *gw_pend_alloc(gw_thread *t, int cls, gw_up_cb *cb, void *ctx, uint64_t arg)
{
    D11_ASSERT(cb != NULL && (cls == GW_PC_REQ || cls == GW_PC_PROBE));
    if (t->ups.npend_free == 0) return NULL;
    uint32_t idx = t->ups.pend_free[--t->ups.npend_free];
    gw_pend *p = &t->ups.pend[idx];
    D11_ASSERT(p->req_id == 0);
    memset(p, 0, sizeof *p);
    p->req_id = (t->ups.seq++ << 16) | idx;
    p->cls = (uint8_t)cls;
    p->cb = cb;
    p->ctx = ctx;
    p->arg = arg;
    p->deadline_ms = gw_now_ms(t) + (cls == GW_PC_PROBE ? D11_GW_PROBE_TIMEOUT_MS : t->gw->cfg.request_timeout_ms);
    /* append to its class list: deadlines within a class are non-decreasing */
    p->prev = t->ups.list_tail[cls];
    p->next = GW_NIL;
    if (p->prev != GW_NIL) t->ups.pend[p->prev].next = idx;
    else t->ups.list_head[cls] = idx;
    t->ups.list_tail[cls] = idx;
    return p;
}

static void pend_free(gw_thread *t, gw_pend *p)
{
    uint32_t idx = (uint32_t)(p - t->ups.pend);
    D11_ASSERT(idx < D11_GW_PENDING_MAX && p->req_id != 0);
    if (p->prev != GW_NIL) t->ups.pend[p->prev].next = p->next;
    else t->ups.list_head[p->cls] = p->next;
    if (p->next != GW_NIL) t->ups.pend[p->next].prev = p->prev;
    else t->ups.list_tail[p->cls] = p->prev;
    p->req_id = 0;
    t->ups.pend_free[t->ups.npend_free++] = idx;
}

/* Free p, then run its completion (on a copy: the callback may allocate again). */
static void pend_complete(gw_thread *t, gw_pend *p, const d11_frame *reply, int uperr)
{
    gw_pend done = *p;
    pend_free(t, p);
    done.cb(t, &done, reply, uperr);
}

static gw_pend *pend_lookup(gw_thread *t, uint64_t req_id)
{
    uint32_t idx = (uint32_t)(req_id & 0xFFFF);
    gw_pend *p = &t->ups.pend[idx];
    return (req_id != 0 && p->req_id == req_id) ? p : NULL;
}

bool gw_pend_waiting(gw_thread *t, const gw_pend *p, uint64_t req_id)
{
    return req_id != 0 && p->req_id == req_id && pend_lookup(t, req_id) == p;
}

void gw_pend_fail(gw_thread *t, gw_pend *p, int uperr)
{
    D11_ASSERT(p->req_id != 0);
    pend_complete(t, p, NULL, uperr);
}

/* ---- sending ---- */

/* The gateway.upstream fault point, for forwarded requests only (probes, the control
 * channel and the routing refresh are never hit, so an experiment can always be seen and
 * destroyed). delay: the thread stalls (every client of this thread waits, as in a long
 * pause); drop: the frame is never sent, the request meets its deadline (504); error:
 * the request moves to the head of its list and the next gw_up_tick completes it as
 * dropped (503), never inside this call (callers still hold state around it). True when
 * the frame must not be sent. */
static bool up_fault(gw_thread *t, gw_pend *p)
{
    d11_fault_hit h = d11_fault(D11_FP_GATEWAY_UPSTREAM);
    if (h.action == D11_FA_DELAY) usleep((useconds_t)h.delay_ms * 1000);
    if (h.action == D11_FA_DROP) return true;
    if (h.action != D11_FA_FAIL) return false;
    uint32_t idx = (uint32_t)(p - t->ups.pend);
    int cls = p->cls;
    if (t->ups.list_head[cls] != idx) { /* unlink, then push at the head */
        t->ups.pend[p->prev].next = p->next;
        if (p->next != GW_NIL) t->ups.pend[p->next].prev = p->prev;
        else t->ups.list_tail[cls] = p->prev;
        p->prev = GW_NIL;
        p->next = t->ups.list_head[cls];
        t->ups.pend[p->next].prev = idx;
        t->ups.list_head[cls] = idx;
    }
    p->chaos_fail = true;
    return true;
}

void gw_up_send(gw_thread *t, int target, gw_pend *p, uint16_t type, uint16_t flags,
                const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags,
                uint32_t deadline_ms)
{
    d11_link *k = up_link(t, target);
    D11_ASSERT(k != NULL && p->req_id != 0);
    p->target = (uint8_t)target;
    if (p->cls == GW_PC_REQ && up_fault(t, p)) return; /* chaos: gateway.upstream (core/fault.h) */
    d11_frame_hdr h = {.type = type, .flags = flags, .req_id = p->req_id,
                       .deadline_ms = deadline_ms ? d11_deadline_from_budget(d11_wall_ms(), deadline_ms) : 0,
                       .trace_flags = trace_flags};
    if (trace_id) memcpy(h.trace_id, trace_id, 16);
    if (span_id) memcpy(h.span_id, span_id, 8);
    d11_buf *out = d11_link_out(k); /* marks the link dirty: written by the flush hook */
    size_t start = d11_frame_begin(out, &h);
    d11_buf_append(out, t->tmp.data, t->tmp.len);
    d11_frame_end(out, start);
}

/* ---- connection state ---- */

/* A link closed (peer gone, I/O error, bad stream, release): the target is down until a
 * reconnect; everything pending on it completes as dropped. */
static void up_closed(d11_links *lt, d11_link *k, int why)
{
    gw_thread *t = lt->data;
    int target = (int)(intptr_t)k->data;
    D11_ASSERT(target >= 0 && target < GW_UP_N);
    gw_up *u = &t->ups.up[target];
    D11_ASSERT(u->connected && u->link_idx == k->idx && u->link_gen == k->gen);
    u->connected = false;
    u->retry_at_ms = gw_now_ms(t) + u->backoff_ms;
    atomic_store_explicit(&t->m.up_connected[target], 0, memory_order_relaxed);
    if (why == D11_EPROTO) gw_ctr_add(&t->m.uperr[target][GW_UPERR_PROTOCOL], 1);
    if (why != 0)
        d11_warn("thread %d: connection to %s lost: %s", t->id, u->name,
                 why == D11_ECLOSED ? "closed by peer"
                 : why == D11_EPROTO ? "protocol error"
                                     : d11_strerror(why));
    if (target == GW_UP_CENTER) t->ups.routing_inflight = false;
    /* fail everything pending on it: both classes */
    for (int cls = 0; cls < GW_PC_N; cls++) {
        uint32_t i = t->ups.list_head[cls];
        while (i != GW_NIL) {
            gw_pend *p = &t->ups.pend[i];
            uint32_t nx = p->next;
            if (p->target == target) pend_complete(t, p, NULL, GW_UPERR_DROPPED);
            i = nx;
        }
    }
}

static void up_try_connect(gw_thread *t, int target)
{
    gw_up *u = &t->ups.up[target];
    int fd = connect_unix_nb(u->path);
    if (fd < 0) {
        if (!u->warned_down && t->id == 0 && gw_now_ms(t) - t->gw->start_ms > 5000) {
            d11_warn("%s not reachable at %s: %s (retrying)", u->name, u->path, d11_strerror(fd));
            u->warned_down = true;
        }
        u->retry_at_ms = gw_now_ms(t) + u->backoff_ms;
        u->backoff_ms = u->backoff_ms * 2 > D11_GW_RECONNECT_MS_MAX ? D11_GW_RECONNECT_MS_MAX
                                                                     : u->backoff_ms * 2;
        return;
    }
    d11_link *k = d11_links_add(&t->ups.links, fd); /* takes the fd */
    if (!k) {
        d11_error("cannot watch the connection to %s", u->name);
        u->retry_at_ms = gw_now_ms(t) + u->backoff_ms;
        return;
    }
    k->data = (void *)(intptr_t)target;
    u->link_idx = k->idx;
    u->link_gen = k->gen;
    u->connected = true;
    u->backoff_ms = D11_GW_RECONNECT_MS_MIN;
    if (u->warned_down || t->id == 0) d11_log(u->warned_down ? D11_LOG_INFO : D11_LOG_DEBUG,
                                              "connected to %s", u->name);
    u->warned_down = false;
    atomic_store_explicit(&t->m.up_connected[target], 1, memory_order_relaxed);
    if (target == GW_UP_CENTER) t->ups.routing_next_ms = 0; /* fetch the table now */
}

void gw_up_flush(gw_thread *t) { d11_links_flush(&t->ups.links); }

/* ---- replies ---- */

static void on_routing_reply(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)p;
    (void)uperr; /* a lost or late answer: asked again at the next refresh */
    t->ups.routing_inflight = false;
    if (!f) return;
    if (f->hdr.status != 200) {
        d11_log(D11_LOG_DEBUG, "routing table request answered %u", f->hdr.status);
        return;
    }
    d11_routing *r = &t->ups.routing_in;
    int rc = d11_routing_dec(f->payload, f->payload_len, r);
    if (rc) { /* tolerate the generic reply envelope around it */
        d11_str code, body;
        if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0)
            rc = d11_routing_dec(body.p, body.n, r);
    }
    if (rc) {
        d11_warn("thread %d: malformed routing table from the center", t->id);
        gw_ctr_add(&t->m.uperr[GW_UP_CENTER][GW_UPERR_PROTOCOL], 1);
        return;
    }
    if (!t->ups.routing_live || r->version != t->ups.routing.version)
        d11_log(t->id == 0 ? D11_LOG_INFO : D11_LOG_DEBUG, "routing table version %u (%u cells)",
                r->version, r->ncells);
    t->ups.routing = *r;
    t->ups.routing_live = true;
    atomic_store_explicit(&t->m.routing_version, r->version, memory_order_relaxed);
    set_wanted(t, (int)r->ncells);
}

static void up_on_frame(d11_links *lt, d11_link *k, const d11_frame *f)
{
    gw_thread *t = lt->data;
    int target = (int)(intptr_t)k->data;
    if (!(f->hdr.flags & D11_WF_REPLY)) {
        /* the gateway serves no requests over the wire: refuse politely */
        d11_link_reply(k, &f->hdr, 404, "not_found", "gateway serves no wire requests", 31);
        return;
    }
    gw_pend *p = pend_lookup(t, f->hdr.req_id);
    if (!p || p->target != target) {
        gw_ctr_add(&t->m.late_replies, 1);
        return;
    }
    pend_complete(t, p, f, 0);
}

/* ---- timers ---- */

static void send_routing_get(gw_thread *t)
{
    if (!gw_up_writable(t, GW_UP_CENTER)) return;
    gw_pend *p = gw_pend_alloc(t, GW_PC_PROBE, on_routing_reply, NULL, 0);
    if (!p) return;
    d11_buf_reset(&t->tmp);
    uint8_t span[8];
    uint64_t r = gw_rand64(t) | 1;
    memcpy(span, &r, 8);
    gw_up_send(t, GW_UP_CENTER, p, D11_MSG_ROUTING_GET, 0, NULL, span, 0, D11_GW_PROBE_TIMEOUT_MS);
    t->ups.routing_inflight = true;
}

int64_t gw_up_tick(gw_thread *t)
{
    int64_t now = gw_now_ms(t), next = now + 100;
    /* deadlines */
    for (int cls = 0; cls < GW_PC_N; cls++) {
        while (t->ups.list_head[cls] != GW_NIL) {
            gw_pend *p = &t->ups.pend[t->ups.list_head[cls]];
            if (p->chaos_fail) { /* gateway.upstream error (up_fault): at the head, out of deadline order */
                pend_complete(t, p, NULL, GW_UPERR_DROPPED);
                continue;
            }
            if (p->deadline_ms > now) {
                if (p->deadline_ms < next) next = p->deadline_ms;
                break;
            }
            pend_complete(t, p, NULL, GW_UPERR_TIMEOUT);
        }
    }
    /* reconnects */
    for (int i = 0; i < GW_UP_N; i++) {
        gw_up *u = &t->ups.up[i];
        if (!u->wanted || u->connected) continue;
        if (u->retry_at_ms <= now) up_try_connect(t, i);
        if (!u->connected && u->retry_at_ms < next) next = u->retry_at_ms;
    }
    /* routing table */
    if (t->ups.up[GW_UP_CENTER].connected && !t->ups.routing_inflight && now >= t->ups.routing_next_ms) {
        send_routing_get(t);
        t->ups.routing_next_ms = now + D11_GW_ROUTING_REFRESH_MS;
    }
    return next - now;
}
