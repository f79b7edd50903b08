/*
 * gateway.c — `d11 gateway`: the HTTP front door. Entry point, threads, the epoll loop,
 * client connections and response writing. See gw_int.h for the threading model and
 * docs/gateway.md for the design as a whole.
 *
 * Per client connection: read into `in` (at most D11_HTTP_IN_BYTES_MAX unparsed bytes),
 * parse requests one by one (http.c), give each a pipeline slot and dispatch it
 * (handlers.c); responses go to `out` in request order and are written at the end of the
 * loop iteration, together with everything else that became ready in it. Reading stops
 * (EPOLLIN dropped) while the pipeline is full, while `out` holds more than
 * D11_HTTP_OUT_BYTES_MAX unsent bytes, once the client has shut its side, or once the
 * connection is closing (an error answer, Connection: close, a 408, shutdown).
 *
 * Timers (checked every loop iteration; epoll_wait sleeps at most until the next one):
 * a request must arrive whole within D11_HTTP_HEADER_TIMEOUT_MS of its first byte (else
 * 408 and close — slowloris); a connection with nothing in flight is closed after
 * D11_HTTP_IDLE_MS without traffic; upstream deadlines, reconnects and the routing
 * refresh live in upstream.c.
 *
 * Shutdown: SIGINT/SIGTERM are taken by the main thread (sigwait); it sets G.stop and
 * wakes every loop through its eventfd. Each thread then closes its listener, stops
 * reading, closes idle connections, answers what is in flight (upstream deadlines bound
 * that), and exits when its last connection is closed or after request timeout +
 * D11_GW_DRAIN_EXTRA_MS. A second signal exits at once with status 1.
 */
#include "gw_int.h"

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

gw_global G;

#define TAG_LISTEN 1ULL
#define TAG_UP     2ULL
#define TAG_CLIENT 3ULL
#define TAG_EVENT  4ULL
#define SWEEP_MS   100

/* ---- small helpers ---- */

uint64_t gw_rand64(gw_thread *t)
{
    /* splitmix64: ids and span ids need uniqueness, not secrecy */
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

gw_conn *gw_conn_lookup(gw_thread *t, uint32_t idx, uint32_t gen)
{
    if (idx >= t->nalloc) return NULL;
    gw_conn *c = t->conns[idx];
    return (c && c->open && c->gen == gen) ? c : NULL;
}

static void mark_dirty(gw_thread *t, gw_conn *c)
{
    if (c->dirty) return;
    D11_ASSERT(t->ndirty < D11_HTTP_CONNS_MAX); /* each open connection at most once */
    c->dirty = true;
    t->dirty[t->ndirty++] = c->idx;
}

/* ---- responses ---- */

static void slot_pop(gw_conn *c)
{
    gw_slot *s = &c->slots[c->head];
    s->state = SLOT_FREE;
    if (s->close_after) c->closing = true;
    c->head = (uint8_t)((c->head + 1) % D11_HTTP_PIPELINE_MAX);
    c->nslots--;
}

void gw_respond(gw_thread *t, gw_conn *c, int si, int status, const char *ctype,
                const char *extra_hdrs, const char *body, size_t blen)
{
    gw_slot *s = &c->slots[si];
    D11_ASSERT(s->state == SLOT_WAIT);
    bool at_head = si == c->head;
    d11_buf *dst = at_head ? &c->out : &s->resp;
    if (!at_head) d11_buf_reset(dst);
    if (t->stopping) s->close_after = true;
    const char *reason = http_status_str((enum http_status)status);
    if (!reason || reason[0] == '<') reason = "Status";
    const char *conn_hdr = s->close_after ? "Connection: close\r\n"
                           : s->keepalive_hdr ? "Connection: keep-alive\r\n" : "";
    char tp[96], tid[33], sid[17]; /* every response carries the trace (docs/gateway.md) */
    d11_hex(s->trace_id, 16, tid);
    d11_hex(s->span_id, 8, sid);
    snprintf(tp, sizeof tp, "traceparent: 00-%s-%s-%02x\r\n", tid, sid, s->trace_flags);
    d11_buf_printf(dst,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "X-Request-Id: %s\r\n%s%s%s\r\n",
                   status, reason, ctype, blen, s->rid, tp, extra_hdrs ? extra_hdrs : "", conn_hdr);
    d11_buf_append(dst, body, blen);

    /* metrics */
    int64_t us = d11_mono_us() - s->start_us;
    gw_metrics *m = &t->m;
    gw_ctr_add(&m->req[s->route][gw_status_idx(status)], 1);
    int b = 0;
    while (b < GW_LAT_N && us > gw_lat_bounds_us[b]) b++;
    gw_ctr_add(&m->lat[s->route][b], 1);
    gw_ctr_add(&m->lat_sum_us[s->route], (uint64_t)(us > 0 ? us : 0));
    if (s->counted) {
        gw_gauge_add(&m->inflight, -1);
        s->counted = false;
    }
    if (status >= 400)
        d11_log(D11_LOG_DEBUG, "request %s route=%s status=%d us=%lld", s->rid,
                gw_route_names[s->route], status, (long long)us);

    if (!at_head) {
        s->state = SLOT_READY;
    } else {
        slot_pop(c);
        while (c->nslots && c->slots[c->head].state == SLOT_READY) {
            gw_slot *h = &c->slots[c->head];
            d11_buf_append(&c->out, h->resp.data, h->resp.len);
            if (h->resp.cap > 65536) d11_buf_free(&h->resp);
            else d11_buf_reset(&h->resp);
            slot_pop(c);
        }
    }
    mark_dirty(t, c);
}

void gw_respond_json(gw_thread *t, gw_conn *c, int si, int status, const char *body, size_t blen)
{
    gw_respond(t, c, si, status, "application/json", "", body, blen);
}

void gw_respond_error(gw_thread *t, gw_conn *c, int si, int status, const char *code,
                      const char *msg, const char *extra_hdrs)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"error\":{\"code\":");
    d11_buf_json_str(b, code, strlen(code));
    d11_buf_puts(b, ",\"message\":");
    d11_buf_json_str(b, msg, strlen(msg));
    d11_buf_printf(b, ",\"request_id\":\"%s\"}}", c->slots[si].rid);
    gw_respond(t, c, si, status, "application/json", extra_hdrs, b->data, b->len);
}

/* ---- connections ---- */

static void conn_set_events(gw_thread *t, gw_conn *c, uint32_t ev)
{
    if (c->events == ev) return;
    struct epoll_event e = {.events = ev, .data.u64 = (TAG_CLIENT << 32) | c->idx};
    if (epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &e) == 0) c->events = ev;
}

static void conn_close(gw_thread *t, gw_conn *c)
{
    if (!c->open) return;
    close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    for (int k = 0; k < c->nslots; k++) {
        gw_slot *s = &c->slots[(c->head + k) % D11_HTTP_PIPELINE_MAX];
        if (s->counted) gw_gauge_add(&t->m.inflight, -1);
        s->counted = false;
        s->state = SLOT_FREE;
        if (s->resp.cap > 65536) d11_buf_free(&s->resp);
    }
    c->nslots = c->head = 0;
    c->open = false;
    c->gen++;
    if (c->in.cap > 65536) d11_buf_free(&c->in);
    if (c->out.cap > 65536) d11_buf_free(&c->out);
    d11_buf_reset(&c->in);
    d11_buf_reset(&c->out);
    c->out_off = 0;
    d11_http_in_reset(&c->http);
    t->free_idx[t->nfree++] = c->idx;
    t->nopen--;
    gw_gauge_add(&t->m.conns_open, -1);
}

static void conn_open(gw_thread *t, int fd)
{
    gw_conn *c;
    if (t->nfree) {
        c = t->conns[t->free_idx[--t->nfree]];
    } else {
        D11_ASSERT(t->nalloc < D11_HTTP_CONNS_MAX);
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return;
        }
        c->idx = t->nalloc;
        d11_http_in_init(&c->http);
        t->conns[t->nalloc++] = c;
    }
    c->fd = fd;
    c->open = true;
    c->closing = c->rd_eof = c->dirty = c->stalled = false;
    c->head = c->nslots = 0;
    c->out_off = 0;
    c->last_active_ms = t->now_ms;
    c->req_start_ms = 0;
    c->events = EPOLLIN;
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = (TAG_CLIENT << 32) | c->idx};
    t->nopen++;
    gw_gauge_add(&t->m.conns_open, 1);
    gw_ctr_add(&t->m.conns_accepted, 1);
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &e) == -1) {
        d11_error("epoll_ctl(client): %s", strerror(errno));
        conn_close(t, c);
    }
}

static int slot_alloc(gw_thread *t, gw_conn *c)
{
    D11_ASSERT(c->nslots < D11_HTTP_PIPELINE_MAX);
    int si = (c->head + c->nslots) % D11_HTTP_PIPELINE_MAX;
    c->nslots++;
    gw_slot *s = &c->slots[si];
    D11_ASSERT(s->state == SLOT_FREE);
    s->state = SLOT_WAIT;
    s->route = GR_OTHER;
    s->close_after = s->keepalive_hdr = false;
    s->start_us = d11_mono_us();
    uint64_t r = gw_rand64(t);
    d11_hex((const uint8_t *)&r, 8, s->rid);
    /* a fresh trace until the request's traceparent says otherwise (handlers.c) */
    uint64_t a = gw_rand64(t), b = gw_rand64(t), sp = gw_rand64(t) | 1;
    memcpy(s->trace_id, &a, 8);
    memcpy(s->trace_id + 8, &b, 8);
    memcpy(s->span_id, &sp, 8);
    s->trace_flags = 1;
    s->counted = true;
    gw_gauge_add(&t->m.inflight, 1);
    return si;
}

/* Parse and dispatch what is buffered, as far as the pipeline allows. */
static void conn_process(gw_thread *t, gw_conn *c)
{
    size_t off = 0;
    int rc = D11_HTTP_NEED;
    c->stalled = false;
    while (!c->closing && !t->stopping) {
        if (c->nslots == D11_HTTP_PIPELINE_MAX) {
            c->stalled = true; /* resumed by conn_service when a slot frees */
            break;
        }
        size_t used = 0;
        rc = d11_http_parse(&c->http, c->in.data + off, c->in.len - off, &used);
        off += used;
        if (rc == D11_HTTP_NEED) break;
        if (rc == D11_HTTP_CONTINUE) {
            if (c->nslots == 0 && c->out.len == c->out_off)
                d11_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            continue;
        }
        int si = slot_alloc(t, c);
        if (rc == D11_HTTP_DONE) {
            d11_http_req *r = &c->http.req;
            if (!r->keep_alive) {
                c->slots[si].close_after = true;
                c->closing = true;
            }
            c->slots[si].keepalive_hdr = r->http_minor == 0 && r->keep_alive;
            gw_dispatch(t, c, si, r);
            continue;
        }
        /* D11_HTTP_ERROR: answer in order, then close */
        c->slots[si].close_after = true;
        c->closing = true;
        d11_http_req *r = &c->http.req;
        gw_respond_error(t, c, si, r->err_status, r->err_code, r->err_msg, "");
        break;
    }
    if (off) d11_buf_consume(&c->in, off);
    if (rc == D11_HTTP_NEED && (d11_http_in_busy(&c->http) || c->in.len > 0)) {
        if (!c->req_start_ms) c->req_start_ms = t->now_ms;
    } else if (!d11_http_in_busy(&c->http)) {
        c->req_start_ms = 0;
    }
    mark_dirty(t, c);
}

static void conn_read(gw_thread *t, gw_conn *c)
{
    while (c->in.len < D11_HTTP_IN_BYTES_MAX) {
        d11_buf_reserve(&c->in, 16384);
        size_t room = c->in.cap - c->in.len - 1;
        if (room > D11_HTTP_IN_BYTES_MAX - c->in.len) room = D11_HTTP_IN_BYTES_MAX - c->in.len;
        ssize_t r = read(c->fd, c->in.data + c->in.len, room);
        if (r > 0) {
            c->in.len += (size_t)r;
            c->last_active_ms = t->now_ms;
            if ((size_t)r < room) break;
            continue;
        }
        if (r == 0) {
            c->rd_eof = true;
            break;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        conn_close(t, c);
        return;
    }
    conn_process(t, c);
}

/* Write what is queued, continue a stalled pipeline, close when done, fix interest. */
static void conn_service(gw_thread *t, gw_conn *c)
{
    for (int round = 0; round < 2 && c->open; round++) {
        while (c->out_off < c->out.len) {
            ssize_t w = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
            if (w > 0) {
                c->out_off += (size_t)w;
                c->last_active_ms = t->now_ms;
                continue;
            }
            if (w == -1 && errno == EINTR) continue;
            if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            conn_close(t, c); /* EPIPE, ECONNRESET, ... */
            return;
        }
        if (c->out_off == c->out.len) {
            c->out.len = c->out_off = 0;
        } else if (c->out_off > c->out.len / 2) {
            d11_buf_consume(&c->out, c->out_off);
            c->out_off = 0;
        }
        if (round == 0 && c->stalled && !c->closing && !c->rd_eof && !t->stopping &&
            c->nslots < D11_HTTP_PIPELINE_MAX && c->out.len - c->out_off < D11_HTTP_OUT_BYTES_MAX) {
            conn_process(t, c); /* the pipeline had room again */
            continue;
        }
        break;
    }
    if (!c->open) return;
    bool drained = c->out.len == c->out_off && c->nslots == 0;
    if (drained && (c->closing || t->stopping || (c->rd_eof))) {
        conn_close(t, c);
        return;
    }
    uint32_t ev = 0;
    if (!c->closing && !c->rd_eof && !t->stopping && c->in.len < D11_HTTP_IN_BYTES_MAX &&
        c->out.len - c->out_off < D11_HTTP_OUT_BYTES_MAX)
        ev |= EPOLLIN;
    if (c->out.len > c->out_off) ev |= EPOLLOUT;
    conn_set_events(t, c, ev);
}

static void service_dirty(gw_thread *t)
{
    /* conn_service may append to the list (a process step); iterate by index */
    for (uint32_t i = 0; i < t->ndirty; i++) {
        gw_conn *c = t->conns[t->dirty[i]];
        if (c->open) conn_service(t, c); /* c->dirty stays set: no re-queueing meanwhile */
        c->dirty = false;
    }
    t->ndirty = 0;
}

static void sweep(gw_thread *t)
{
    int64_t now = t->now_ms;
    for (uint32_t i = 0; i < t->nalloc; i++) {
        gw_conn *c = t->conns[i];
        if (!c->open) continue;
        if (c->req_start_ms && !c->closing && now - c->req_start_ms > D11_HTTP_HEADER_TIMEOUT_MS) {
            c->req_start_ms = 0;
            c->closing = true;
            if (c->nslots < D11_HTTP_PIPELINE_MAX) {
                int si = slot_alloc(t, c);
                c->slots[si].close_after = true;
                gw_respond_error(t, c, si, 408, "request_timeout",
                                 "request not received in time", "");
            }
            mark_dirty(t, c);
        } else if (c->nslots == 0 && !d11_http_in_busy(&c->http) &&
                   now - c->last_active_ms > D11_HTTP_IDLE_MS) {
            conn_close(t, c);
        }
    }
}

static void accept_all(gw_thread *t)
{
    for (int k = 0; k < 256; k++) {
        int fd = d11_accept(t->lfd);
        if (fd == -EAGAIN || fd == -EWOULDBLOCK) return;
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* out of descriptors: stop accepting for a moment instead of spinning */
                d11_warn("accept: %s; pausing accepts for 100 ms", d11_strerror(fd));
                epoll_ctl(t->ep, EPOLL_CTL_DEL, t->lfd, NULL);
                t->lfd_armed = false;
                t->lfd_rearm_ms = t->now_ms + 100;
            }
            return;
        }
        if (t->nopen >= D11_HTTP_CONNS_MAX) {
            close(fd);
            gw_ctr_add(&t->m.conns_rejected, 1);
            continue;
        }
        conn_open(t, fd);
    }
}

static void begin_drain(gw_thread *t)
{
    t->stopping = true;
    t->drain_deadline_ms = t->now_ms + G.cfg.request_timeout_ms + D11_GW_DRAIN_EXTRA_MS;
    if (t->lfd >= 0) {
        epoll_ctl(t->ep, EPOLL_CTL_DEL, t->lfd, NULL);
        close(t->lfd);
        t->lfd = -1;
    }
    for (uint32_t i = 0; i < t->nalloc; i++)
        if (t->conns[i]->open) mark_dirty(t, t->conns[i]);
}

static void refresh_rules(gw_thread *t)
{
    uint64_t g = d11_rules_store_gen(&G.rules);
    if (g != t->rules_gen) d11_rules_store_get(&G.rules, &t->rules, &t->rules_gen);
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
        if (t->ndirty) wait = 0;
        int n = epoll_wait(t->ep, evs, 256, (int)wait);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        t->now_ms = d11_mono_ms();
        refresh_rules(t);
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64 >> 32;
            uint32_t idx = (uint32_t)evs[i].data.u64;
            uint32_t e = evs[i].events;
            if (tag == TAG_CLIENT) {
                gw_conn *c = t->conns[idx];
                if (!c->open) continue;
                if (e & EPOLLOUT) mark_dirty(t, c);
                if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                    if (c->events & EPOLLIN) conn_read(t, c);
                    else if (e & (EPOLLHUP | EPOLLERR)) conn_close(t, c);
                }
            } else if (tag == TAG_UP) {
                gw_up_on_event(t, (int)idx, e);
            } else if (tag == TAG_LISTEN) {
                if (!t->stopping) accept_all(t);
            } else if (tag == TAG_EVENT) {
                uint64_t v;
                (void)!read(t->efd, &v, sizeof v);
            }
        }
        gw_up_flush_dirty(t);
        service_dirty(t);
        gw_up_flush_dirty(t); /* requests dispatched while servicing stalled pipelines */

        if (t->now_ms >= t->next_sweep_ms) {
            t->next_sweep_ms = t->now_ms + SWEEP_MS;
            sweep(t);
            service_dirty(t);
            d11_auth_maybe_reload(t->auth, t->now_ms);
            if (t->id == 0) d11_rules_store_maybe_reload(&G.rules, t->now_ms);
            if (!t->lfd_armed && !t->stopping && t->lfd >= 0 && t->now_ms >= t->lfd_rearm_ms) {
                struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN << 32};
                if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->lfd, &ev) == 0) t->lfd_armed = true;
            }
        }
        if (!t->stopping && atomic_load(&G.stop)) {
            begin_drain(t);
            service_dirty(t);
        }
        if (t->stopping && (t->nopen == 0 || t->now_ms >= t->drain_deadline_ms)) break;
    }
    for (uint32_t i = 0; i < t->nalloc; i++)
        if (t->conns[i]->open) conn_close(t, t->conns[i]);
    atomic_store(&t->exited, 1);
    return NULL;
}

/* ---- setup ---- */

static int thread_init(gw_thread *t, int id, int lfd)
{
    t->id = id;
    t->lfd = lfd;
    t->ep = epoll_create1(EPOLL_CLOEXEC);
    t->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->ep == -1 || t->efd == -1) return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN << 32};
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, lfd, &ev) == -1) return -errno;
    t->lfd_armed = true;
    ev.data.u64 = TAG_EVENT << 32;
    if (epoll_ctl(t->ep, EPOLL_CTL_ADD, t->efd, &ev) == -1) return -errno;
    t->conns = calloc(D11_HTTP_CONNS_MAX, sizeof *t->conns);
    t->free_idx = calloc(D11_HTTP_CONNS_MAX, sizeof *t->free_idx);
    t->dirty = calloc(D11_HTTP_CONNS_MAX, sizeof *t->dirty);
    t->scratch = malloc(D11_HTTP_BODY_BYTES_MAX + 16);
    t->auth = malloc(sizeof *t->auth);
    if (!t->conns || !t->free_idx || !t->dirty || !t->scratch || !t->auth) return -ENOMEM;
    d11_buf_init(&t->tmp, 4096);
    d11_random_bytes(&t->rng, sizeof t->rng);
    d11_auth_init(t->auth, G.cfg.data_dir);
    t->now_ms = d11_mono_ms();
    gw_up_init(t);
    return 0;
}

static void thread_release(gw_thread *t)
{
    gw_up_release(t);
    for (uint32_t i = 0; i < t->nalloc; i++) {
        gw_conn *c = t->conns[i];
        d11_buf_free(&c->in);
        d11_buf_free(&c->out);
        for (int k = 0; k < D11_HTTP_PIPELINE_MAX; k++) d11_buf_free(&c->slots[k].resp);
        d11_http_in_release(&c->http);
        free(c);
    }
    free(t->conns);
    free(t->free_idx);
    free(t->dirty);
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

int d11_gateway_main(int argc, char **argv)
{
    char err[300];
    d11_config_defaults(&G.cfg);
    if (d11_config_from_args(&G.cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 gateway: %s\n", err);
        usage(stderr);
        return 2;
    }
    if (G.cfg.help) {
        usage(stdout);
        return 0;
    }
    d11_log_init("gateway", G.cfg.log_level);
    G.start_ms = d11_mono_ms();
    if (mkdir(G.cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 gateway: cannot create %s: %s\n", G.cfg.data_dir, strerror(errno));
        return 1;
    }
    http_parser_set_max_header_size(D11_HTTP_HEADER_BYTES_MAX + 1024);
    if (d11_rules_store_init(&G.rules, G.cfg.data_dir) < 0) {
        fprintf(stderr, "d11 gateway: data directory path too long\n");
        return 1;
    }

    signal(SIGPIPE, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    G.nthreads = G.cfg.threads;
    G.threads = calloc((size_t)G.nthreads, sizeof *G.threads);
    if (!G.threads) {
        fprintf(stderr, "d11 gateway: out of memory\n");
        return 1;
    }
    for (int i = 0; i < G.nthreads; i++) {
        int lfd = d11_listen_tcp(G.cfg.listen, true);
        if (lfd < 0) {
            fprintf(stderr, "d11 gateway: cannot listen on %s: %s\n", G.cfg.listen, d11_strerror(lfd));
            return 1;
        }
        int rc = thread_init(&G.threads[i], i, lfd);
        if (rc < 0) {
            fprintf(stderr, "d11 gateway: thread setup failed: %s\n", d11_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < G.nthreads; i++)
        if (pthread_create(&G.threads[i].th, NULL, thread_main, &G.threads[i]) != 0) {
            fprintf(stderr, "d11 gateway: cannot start threads\n");
            return 1;
        }
    d11_info("gateway listening on %s (%d threads, %d cells, request timeout %lld ms)",
             G.cfg.listen, G.nthreads, G.cfg.cells, (long long)G.cfg.request_timeout_ms);

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
            atomic_store(&G.stop, 1);
            for (int i = 0; i < G.nthreads; i++) {
                uint64_t one = 1;
                (void)!write(G.threads[i].efd, &one, sizeof one);
            }
        }
        int alive = 0;
        for (int i = 0; i < G.nthreads; i++) alive += !atomic_load(&G.threads[i].exited);
        if (!alive) break;
    }
    for (int i = 0; i < G.nthreads; i++) {
        pthread_join(G.threads[i].th, NULL);
        thread_release(&G.threads[i]);
    }
    free(G.threads);
    d11_info("gateway stopped");
    return 0;
}
