/*
 * upstream.c — one gateway thread's wire connections to the center and the cells.
 *
 * Each target (center, cell i) has at most one connection per thread, connected with a
 * non-blocking Unix-socket connect (a full listen backlog fails at once instead of
 * blocking the loop) and re-tried with doubling backoff from D11_GW_RECONNECT_MS_MIN to
 * D11_GW_RECONNECT_MS_MAX while down. While a target is down, gw_up_ready() is false and
 * the handlers answer 503 unavailable at once. When a connection drops or sends garbage,
 * every request pending on it is failed (503 unavailable) and it is reconnected.
 *
 * Frames are appended to the target's output buffer as requests are dispatched and
 * written once per loop iteration (gw_up_flush_dirty), so a burst of requests to one
 * cell costs one write(2). Replies are matched by req_id (see gw_int.h); deadlines expire
 * in gw_up_tick. The routing table is re-fetched from the center every
 * D11_GW_ROUTING_REFRESH_MS; until the center has answered once, the default split
 * (d11_routing_default over --cells) is used.
 */
#include "gw_int.h"
#include "../core/clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TAG_UP 2ULL

static void up_set_events(gw_thread *t, int target, bool want_write)
{
    gw_up *u = &t->up[target];
    if (u->want_write == want_write) return;
    struct epoll_event ev = {.events = EPOLLIN | (want_write ? EPOLLOUT : 0),
                             .data.u64 = (TAG_UP << 32) | (uint64_t)target};
    if (epoll_ctl(t->ep, EPOLL_CTL_MOD, u->c.fd, &ev) == 0) u->want_write = want_write;
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
    t->up[GW_UP_CENTER].wanted = true;
    atomic_store_explicit(&t->m.up_wanted[GW_UP_CENTER], 1, memory_order_relaxed);
    for (int i = 0; i < D11_CELLS_MAX && i < ncells; i++) {
        t->up[gw_up_cell(i)].wanted = true;
        atomic_store_explicit(&t->m.up_wanted[gw_up_cell(i)], 1, memory_order_relaxed);
    }
}

void gw_up_init(gw_thread *t)
{
    for (int i = 0; i < GW_UP_N; i++) {
        gw_up *u = &t->up[i];
        memset(u, 0, sizeof *u);
        u->c.fd = -1;
        if (i == GW_UP_CENTER) snprintf(u->name, sizeof u->name, "center");
        else snprintf(u->name, sizeof u->name, "cell-%d", i - 1);
        char file[32];
        snprintf(file, sizeof file, i == GW_UP_CENTER ? "center.sock" : "cell-%d.sock", i - 1);
        if (d11_config_path(&G.cfg, file, u->path, sizeof u->path) < 0)
            d11_fatal("data directory path too long");
        u->backoff_ms = D11_GW_RECONNECT_MS_MIN;
    }
    set_wanted(t, G.cfg.cells);
    d11_routing_default(&t->routing, (unsigned)G.cfg.cells);
    t->routing_live = false;
    t->routing_next_ms = 0;
    atomic_store(&t->m.routing_version, 0);
    t->pend = calloc(D11_GW_PENDING_MAX, sizeof *t->pend);
    t->pend_free = calloc(D11_GW_PENDING_MAX, sizeof *t->pend_free);
    if (!t->pend || !t->pend_free) d11_fatal("out of memory for the pending table");
    for (uint32_t i = 0; i < D11_GW_PENDING_MAX; i++)
        t->pend_free[i] = D11_GW_PENDING_MAX - 1 - i;
    t->npend_free = D11_GW_PENDING_MAX;
    for (int c = 0; c < PC_N; c++) t->list_head[c] = t->list_tail[c] = GW_NIL;
    t->seq = 1;
}

void gw_up_release(gw_thread *t)
{
    for (int i = 0; i < GW_UP_N; i++)
        if (t->up[i].c.fd >= 0 || t->up[i].c.in.data) d11_conn_release(&t->up[i].c);
    free(t->pend);
    free(t->pend_free);
}

bool gw_up_ready(gw_thread *t, int target)
{
    return target >= 0 && target < GW_UP_N && t->up[target].connected;
}

int gw_target_of_slot(gw_thread *t, unsigned slot)
{
    D11_ASSERT(slot < D11_SLOTS);
    return gw_up_cell(t->routing.cell_of_slot[slot]);
}

/* ---- pending table ---- */

gw_pend *gw_pend_alloc(gw_thread *t, int cls)
{
    if (t->npend_free == 0) return NULL;
    uint32_t idx = t->pend_free[--t->npend_free];
    gw_pend *p = &t->pend[idx];
    D11_ASSERT(p->req_id == 0);
    memset(p, 0, sizeof *p);
    p->req_id = (t->seq++ << 16) | idx;
    p->cls = (uint8_t)cls;
    p->deadline_ms = t->now_ms + (cls == PC_PROBE ? D11_GW_PROBE_TIMEOUT_MS : G.cfg.request_timeout_ms);
    /* append to its class list: deadlines within a class are non-decreasing */
    p->prev = t->list_tail[cls];
    p->next = GW_NIL;
    if (p->prev != GW_NIL) t->pend[p->prev].next = idx;
    else t->list_head[cls] = idx;
    t->list_tail[cls] = idx;
    return p;
}

void gw_pend_free(gw_thread *t, gw_pend *p)
{
    uint32_t idx = (uint32_t)(p - t->pend);
    D11_ASSERT(idx < D11_GW_PENDING_MAX && p->req_id != 0);
    if (p->prev != GW_NIL) t->pend[p->prev].next = p->next;
    else t->list_head[p->cls] = p->next;
    if (p->next != GW_NIL) t->pend[p->next].prev = p->prev;
    else t->list_tail[p->cls] = p->prev;
    p->req_id = 0;
    t->pend_free[t->npend_free++] = idx;
}

static gw_pend *pend_lookup(gw_thread *t, uint64_t req_id)
{
    uint32_t idx = (uint32_t)(req_id & 0xFFFF);
    gw_pend *p = &t->pend[idx];
    return (req_id != 0 && p->req_id == req_id) ? p : NULL;
}

/* ---- sending ---- */

void gw_up_send(gw_thread *t, int target, gw_pend *p, uint16_t type, uint16_t flags,
                const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags,
                uint32_t deadline_ms)
{
    gw_up *u = &t->up[target];
    D11_ASSERT(u->connected);
    p->target = (uint8_t)target;
    d11_frame_hdr h = {.type = type, .flags = flags, .req_id = p->req_id,
                       .deadline_ms = deadline_ms ? d11_deadline_from_budget(d11_wall_ms(), deadline_ms) : 0,
                       .trace_flags = trace_flags};
    if (trace_id) memcpy(h.trace_id, trace_id, 16);
    if (span_id) memcpy(h.span_id, span_id, 8);
    size_t start = d11_frame_begin(&u->c.out, &h);
    d11_buf_append(&u->c.out, t->tmp.data, t->tmp.len);
    d11_frame_end(&u->c.out, start);
    u->dirty = true;
}

/* ---- connection state ---- */

static void up_down(gw_thread *t, int target, const char *why)
{
    gw_up *u = &t->up[target];
    if (u->c.fd >= 0) {
        epoll_ctl(t->ep, EPOLL_CTL_DEL, u->c.fd, NULL);
        d11_conn_release(&u->c);
    }
    u->c.fd = -1;
    bool was = u->connected;
    u->connected = false;
    u->dirty = u->want_write = false;
    u->retry_at_ms = t->now_ms + u->backoff_ms;
    atomic_store_explicit(&t->m.up_connected[target], 0, memory_order_relaxed);
    if (was) d11_warn("thread %d: connection to %s lost: %s", t->id, u->name, why);
    if (target == GW_UP_CENTER) t->routing_inflight = false;
    /* fail everything pending on it: both classes */
    for (int cls = 0; cls < PC_N; cls++) {
        uint32_t i = t->list_head[cls];
        while (i != GW_NIL) {
            gw_pend *p = &t->pend[i];
            uint32_t nx = p->next;
            if (p->target == target) {
                if (p->kind == PK_ROUTING) gw_pend_free(t, p);
                else gw_on_fail(t, p, GW_UPERR_DROPPED); /* frees p */
            }
            i = nx;
        }
    }
}

static void up_try_connect(gw_thread *t, int target)
{
    gw_up *u = &t->up[target];
    int fd = connect_unix_nb(u->path);
    if (fd < 0) {
        if (!u->warned_down && t->id == 0 && t->now_ms - G.start_ms > 5000) {
            d11_warn("%s not reachable at %s: %s (retrying)", u->name, u->path, d11_strerror(fd));
            u->warned_down = true;
        }
        u->retry_at_ms = t->now_ms + u->backoff_ms;
        u->backoff_ms = u->backoff_ms * 2 > D11_GW_RECONNECT_MS_MAX ? D11_GW_RECONNECT_MS_MAX
                                                                     : u->backoff_ms * 2;
        return;
    }
    d11_conn_init(&u->c, fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (TAG_UP << 32) | (uint64_t)target};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        d11_error("epoll_ctl(%s): %s", u->name, strerror(errno));
        d11_conn_release(&u->c);
        u->c.fd = -1;
        u->retry_at_ms = t->now_ms + u->backoff_ms;
        return;
    }
    u->connected = true;
    u->want_write = false;
    u->backoff_ms = D11_GW_RECONNECT_MS_MIN;
    if (u->warned_down || t->id == 0) d11_log(u->warned_down ? D11_LOG_INFO : D11_LOG_DEBUG,
                                              "connected to %s", u->name);
    u->warned_down = false;
    atomic_store_explicit(&t->m.up_connected[target], 1, memory_order_relaxed);
    if (target == GW_UP_CENTER) t->routing_next_ms = 0; /* fetch the table now */
}

void gw_up_flush_dirty(gw_thread *t)
{
    for (int i = 0; i < GW_UP_N; i++) {
        gw_up *u = &t->up[i];
        if (!u->dirty || !u->connected) continue;
        u->dirty = false;
        int rc = d11_conn_flush(&u->c);
        if (rc < 0) {
            up_down(t, i, d11_strerror(rc));
            continue;
        }
        up_set_events(t, i, rc == 1);
    }
}

/* ---- replies ---- */

static void on_routing_reply(gw_thread *t, const d11_frame *f)
{
    t->routing_inflight = false;
    if (f->hdr.status != 200) {
        d11_log(D11_LOG_DEBUG, "routing table request answered %u", f->hdr.status);
        return;
    }
    static __thread d11_routing r;
    int rc = d11_routing_dec(f->payload, f->payload_len, &r);
    if (rc) { /* tolerate the generic reply envelope around it */
        d11_str code, body;
        if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0)
            rc = d11_routing_dec(body.p, body.n, &r);
    }
    if (rc) {
        d11_warn("thread %d: malformed routing table from the center", t->id);
        gw_ctr_add(&t->m.uperr[GW_UP_CENTER][GW_UPERR_PROTOCOL], 1);
        return;
    }
    if (!t->routing_live || r.version != t->routing.version)
        d11_log(t->id == 0 ? D11_LOG_INFO : D11_LOG_DEBUG, "routing table version %u (%u cells)",
                r.version, r.ncells);
    t->routing = r;
    t->routing_live = true;
    atomic_store_explicit(&t->m.routing_version, r.version, memory_order_relaxed);
    set_wanted(t, r.ncells);
}

static void handle_frame(gw_thread *t, int target, const d11_frame *f)
{
    if (!(f->hdr.flags & D11_WF_REPLY)) {
        /* the gateway serves no requests over the wire: refuse politely */
        d11_conn_reply(&t->up[target].c, &f->hdr, 404, "not_found", "gateway serves no wire requests", 31);
        t->up[target].dirty = true;
        return;
    }
    gw_pend *p = pend_lookup(t, f->hdr.req_id);
    if (!p || p->target != target) {
        gw_ctr_add(&t->m.late_replies, 1);
        return;
    }
    if (p->kind == PK_ROUTING) {
        on_routing_reply(t, f);
        gw_pend_free(t, p);
        return;
    }
    gw_on_reply(t, p, f); /* frees p */
}

void gw_up_on_event(gw_thread *t, int target, uint32_t events)
{
    gw_up *u = &t->up[target];
    if (!u->connected) return;
    if (events & EPOLLOUT) {
        int rc = d11_conn_flush(&u->c);
        if (rc < 0) {
            up_down(t, target, d11_strerror(rc));
            return;
        }
        up_set_events(t, target, rc == 1);
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
    int rc = d11_conn_read(&u->c);
    d11_frame f;
    int fr;
    while ((fr = d11_conn_frame(&u->c, &f)) == 1) {
        handle_frame(t, target, &f);
        if (!u->connected) return; /* a handler cannot drop it, but stay safe */
    }
    if (fr < 0) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_PROTOCOL], 1);
        up_down(t, target, "protocol error");
        return;
    }
    d11_conn_compact(&u->c);
    if (rc < 0) up_down(t, target, rc == D11_ECLOSED ? "closed by peer" : d11_strerror(rc));
}

/* ---- timers ---- */

static void send_routing_get(gw_thread *t)
{
    gw_pend *p = gw_pend_alloc(t, PC_PROBE);
    if (!p) return;
    p->kind = PK_ROUTING;
    d11_buf_reset(&t->tmp);
    uint8_t span[8];
    uint64_t r = gw_rand64(t) | 1;
    memcpy(span, &r, 8);
    gw_up_send(t, GW_UP_CENTER, p, D11_MSG_ROUTING_GET, 0, NULL, span, 0, D11_GW_PROBE_TIMEOUT_MS);
    t->routing_inflight = true;
}

int64_t gw_up_tick(gw_thread *t)
{
    int64_t now = t->now_ms, next = now + 100;
    /* deadlines */
    for (int cls = 0; cls < PC_N; cls++) {
        while (t->list_head[cls] != GW_NIL) {
            gw_pend *p = &t->pend[t->list_head[cls]];
            if (p->deadline_ms > now) {
                if (p->deadline_ms < next) next = p->deadline_ms;
                break;
            }
            if (p->kind == PK_ROUTING) {
                t->routing_inflight = false;
                gw_pend_free(t, p);
            } else {
                gw_on_fail(t, p, GW_UPERR_TIMEOUT); /* frees p */
            }
        }
    }
    /* reconnects */
    for (int i = 0; i < GW_UP_N; i++) {
        gw_up *u = &t->up[i];
        if (!u->wanted || u->connected) continue;
        if (u->retry_at_ms <= now) up_try_connect(t, i);
        if (!u->connected && u->retry_at_ms < next) next = u->retry_at_ms;
    }
    /* routing table */
    if (t->up[GW_UP_CENTER].connected && !t->routing_inflight && now >= t->routing_next_ms) {
        send_routing_get(t);
        t->routing_next_ms = now + D11_GW_ROUTING_REFRESH_MS;
    }
    return next - now;
}
