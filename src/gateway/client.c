/*
 * client.c — one thread's HTTP client connections (see client.h for the contract):
 * accept, read into `in` (at most D11_HTTP_IN_BYTES_MAX unparsed bytes), parse requests
 * one by one (http.c), give each a pipeline slot and hand it to gw.on_request; responses
 * go to `out` in request order and are written at the end of the loop iteration. Answer
 * heads are built without printf; adaptive protection's refusals take a cheaper path
 * still (gw_respond_overloaded: request log at most once per second).
 *
 * Timers (gw_clients_sweep, every GW sweep period): a request must arrive whole within
 * D11_HTTP_HEADER_TIMEOUT_MS of its first byte (else 408 and close — slowloris); a
 * connection with nothing in flight is closed after D11_HTTP_IDLE_MS without traffic.
 * Thread: the owning thread only.
 */
#include "client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "gw.h"

gw_conn *gw_slot_deref(gw_thread *t, gw_slot_ref ref, int *si)
{
    uint32_t idx = (uint32_t)(ref & 0xFFFF), gen = (uint32_t)(ref >> 32);
    int s = (int)((ref >> 16) & 0xFF);
    if (idx >= t->cl.nalloc || s >= D11_HTTP_PIPELINE_MAX) return NULL;
    gw_conn *c = t->cl.conns[idx];
    if (!c || !c->open || c->gen != gen || c->slots[s].state != SLOT_WAIT) return NULL;
    *si = s;
    return c;
}

static void mark_dirty(gw_thread *t, gw_conn *c)
{
    if (c->dirty) return;
    D11_ASSERT(t->cl.ndirty < D11_HTTP_CONNS_MAX); /* each open connection at most once */
    c->dirty = true;
    t->cl.dirty[t->cl.ndirty++] = c->idx;
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

/*
 * The request log (docs/operations.md): every 5xx and every slow request (>=
 * --slow-request-ms, also counted) at info/warn, 1 in --log-sample of the others at info,
 * everything at debug. Fields: request id, route, status, error code, trace id, token
 * label, latency. Personal data masked: the user id only as a salted hash, the Idempotency-Key cut to 8
 * bytes; bodies are never logged.
 */
static void request_log(gw_thread *t, gw_slot *s, int status, const char *body, size_t blen, int64_t us)
{
    const d11_config *cfg = &t->gw->cfg;
    bool slow = us >= cfg->slow_request_ms * 1000;
    if (slow) gw_ctr_add(&t->m.slow_requests[s->route], 1);
    int level = D11_LOG_DEBUG;
    if (status >= 500) level = D11_LOG_INFO;
    else if (slow) level = D11_LOG_WARN;
    else if (cfg->log_sample > 0 && t->log_seq++ % (uint64_t)cfg->log_sample == 0) level = D11_LOG_INFO;
    if (slow && level < D11_LOG_WARN) level = D11_LOG_WARN;
    if (level < d11_log_level()) return;
    int ci = status >= 400 ? gw_errcode_idx(body, blen) : -1;
    char tid[33], kv[400];
    d11_hex(s->trace_id, 16, tid);
    snprintf(kv, sizeof kv,
             "\"event\":\"request\",\"request_id\":\"%s\",\"route\":\"%s\",\"status\":%d,\"code\":\"%s\","
             "\"trace_id\":\"%s\",\"token\":\"%s\",\"latency_us\":%lld,\"slow\":%s",
             s->rid, t->gw->route_labels[s->route], status, ci >= 0 ? gw_errcodes[ci] : "", tid, s->token,
             (long long)us, slow ? "true" : "false");
    if (s->user_hash) {
        size_t kl = strlen(kv);
        snprintf(kv + kl, sizeof kv - kl, ",\"user\":\"u:%016llx\",\"key\":\"%s...\"",
                 (unsigned long long)s->user_hash, s->key_prefix);
    }
    d11_log_kv(level, kv, "%s %d in %lld us", t->gw->route_labels[s->route], status, (long long)us);
}

/* The gateway's span of a request (SERVER): exported per the sampling of core/otlp.h. */
static void request_span(gw_thread *t, gw_conn *c, gw_slot *s, int status, const char *body, size_t blen,
                         int64_t us)
{
    d11_otlp *o = &t->gw->otlp;
    if (!o->on) return;
    d11_span sp;
    memset(&sp, 0, sizeof sp);
    memcpy(sp.trace_id, s->trace_id, 16);
    memcpy(sp.span_id, s->span_id, 8);
    memcpy(sp.parent_id, s->parent_id, 8);
    snprintf(sp.name, sizeof sp.name, "%s", t->gw->route_labels[s->route]);
    sp.kind = D11_SPAN_SERVER;
    sp.error = status >= 500;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    sp.end_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
    sp.start_ns = sp.end_ns - us * 1000;
    if (c->tracestate_slot == (int8_t)(s - c->slots)) snprintf(sp.tracestate, sizeof sp.tracestate, "%s", c->tracestate);
    d11_span_attr_str(&sp, "http.route", t->gw->route_labels[s->route]);
    d11_span_attr_int(&sp, "http.response.status_code", status);
    d11_span_attr_str(&sp, "d11.request_id", s->rid);
    int ci = status >= 400 ? gw_errcode_idx(body, blen) : -1;
    if (ci >= 0) d11_span_attr_str(&sp, "error.type", gw_errcodes[ci]);
    if (s->token[0]) d11_span_attr_str(&sp, "d11.token", s->token);
    d11_otlp_end(o, &sp, s->trace_flags & 1);
}

/* Append a literal (no strlen at run time). */
#define PUT_LIT(b, lit) d11_buf_append((b), (lit), sizeof(lit) - 1)

/* The status line and headers of slot s's answer (no printf: every answer goes through
 * here, refusals under overload included). */
static void put_head(d11_buf *dst, const gw_conn *c, int si, int status, const char *ctype,
                     const char *extra_hdrs, size_t blen)
{
    const gw_slot *s = &c->slots[si];
    const char *reason = http_status_str((enum http_status)status);
    if (!reason || reason[0] == '<') reason = "Status";
    d11_buf_reserve(dst, 256 + blen);
    PUT_LIT(dst, "HTTP/1.1 ");
    d11_buf_u64(dst, (uint64_t)status);
    PUT_LIT(dst, " ");
    d11_buf_puts(dst, reason);
    PUT_LIT(dst, "\r\nContent-Type: ");
    d11_buf_puts(dst, ctype);
    PUT_LIT(dst, "\r\nContent-Length: ");
    d11_buf_u64(dst, blen);
    PUT_LIT(dst, "\r\nX-Request-Id: ");
    d11_buf_puts(dst, s->rid);
    /* every response carries the trace (docs/gateway.md) */
    char tid[33], sid[17];
    d11_hex(s->trace_id, 16, tid);
    d11_hex(s->span_id, 8, sid);
    PUT_LIT(dst, "\r\ntraceparent: 00-");
    d11_buf_append(dst, tid, 32);
    PUT_LIT(dst, "-");
    d11_buf_append(dst, sid, 16);
    PUT_LIT(dst, "-");
    d11_hex(&s->trace_flags, 1, tid);
    d11_buf_append(dst, tid, 2);
    PUT_LIT(dst, "\r\n");
    if (c->tracestate_slot == si) {
        PUT_LIT(dst, "tracestate: ");
        d11_buf_puts(dst, c->tracestate);
        PUT_LIT(dst, "\r\n");
    }
    if (extra_hdrs) d11_buf_puts(dst, extra_hdrs);
    if (s->close_after) PUT_LIT(dst, "Connection: close\r\n");
    else if (s->keepalive_hdr) PUT_LIT(dst, "Connection: keep-alive\r\n");
    PUT_LIT(dst, "\r\n");
}

/* Everything after the bytes of an answer: metrics, protection / concurrency leave, the
 * request log (unless quiet), the span, and the pipeline. */
static void respond_finish(gw_thread *t, gw_conn *c, int si, int status, const char *body, size_t blen,
                           bool quiet)
{
    gw_slot *s = &c->slots[si];
    int64_t us = d11_mono_us() - s->start_us;
    gw_metrics_request(&t->m, s->route, status, us);
    if (status >= 400) gw_metrics_errcode(&t->m, s->route, body, blen);
    if (s->route == t->gw->route_orders_create && s->route) gw_metrics_order(&t->m, status, body, blen, us);
    if (s->counted) {
        gw_gauge_add(&t->m.inflight, -1);
        s->counted = false;
    }
    if (s->prot) {
        gw_protect_leave(&t->gw->prot, us, status < 500);
        s->prot = false;
    }
    if (s->conc_res >= 0) {
        d11_flow_conc_leave(&t->gw->rules, s->conc_res);
        s->conc_res = -1;
    }
    if (!quiet) request_log(t, s, status, body, blen, us);
    request_span(t, c, s, status, body, blen, us);
    if (c->tracestate_slot == si) c->tracestate_slot = -1;

    if (si != c->head) {
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

/* Where slot si's answer goes: straight to the connection's output when it is the head
 * of the pipeline, else to the slot's own buffer until the ones before it are answered. */
static d11_buf *answer_buf(gw_thread *t, gw_conn *c, int si)
{
    gw_slot *s = &c->slots[si];
    D11_ASSERT(s->state == SLOT_WAIT);
    if (t->stopping) s->close_after = true;
    if (si == c->head) return &c->out;
    d11_buf_reset(&s->resp);
    return &s->resp;
}

void gw_respond(gw_thread *t, gw_conn *c, int si, int status, const char *ctype,
                const char *extra_hdrs, const char *body, size_t blen)
{
    d11_buf *dst = answer_buf(t, c, si);
    put_head(dst, c, si, status, ctype, extra_hdrs, blen);
    d11_buf_append(dst, body, blen);
    respond_finish(t, c, si, status, body, blen, false);
}

/*
 * The cheap refusal of adaptive protection (docs/protection.md, "The refusal path"): the
 * same 503 document and headers as gw_respond_error would write, assembled without printf.
 * The request log gets the first refusal of each second (per thread) only, preceded by one
 * "protect_refusals" line counting the refusals not logged since the last one. Nothing
 * else is touched: no token, rules, body or upstream. Under overload this runs for most
 * requests, so it must cost little.
 */
void gw_respond_overloaded(gw_thread *t, gw_conn *c, int si, bool rt)
{
    static const char msg_inflight[] = "overloaded: too many requests in flight; retry later";
    static const char msg_rt[] = "overloaded: response time above its cap; retry later";
    d11_buf *dst = answer_buf(t, c, si);
    char body[200];
    size_t bl = 0;
#define BODY_LIT(lit) (memcpy(body + bl, (lit), sizeof(lit) - 1), bl += sizeof(lit) - 1)
    BODY_LIT("{\"error\":{\"code\":\"unavailable\",\"message\":\"");
    if (rt) BODY_LIT(msg_rt);
    else BODY_LIT(msg_inflight);
    BODY_LIT("\",\"request_id\":\"");
    memcpy(body + bl, c->slots[si].rid, sizeof c->slots[si].rid - 1); /* always 16 hex digits */
    bl += sizeof c->slots[si].rid - 1;
    BODY_LIT("\"}}");
#undef BODY_LIT
    D11_ASSERT(bl < sizeof body);
    put_head(dst, c, si, 503, "application/json", "Retry-After: 1\r\n", bl);
    d11_buf_append(dst, body, bl);
    int64_t sec = gw_now_ms(t) / 1000;
    bool quiet = sec == t->prot_log_sec;
    if (quiet) {
        t->prot_unlogged++;
    } else {
        if (t->prot_unlogged && d11_log_level() <= D11_LOG_INFO)
            d11_log_kv(D11_LOG_INFO, "\"event\":\"protect_refusals\"", "%llu more overload refusals not logged one by one",
                       (unsigned long long)t->prot_unlogged);
        t->prot_unlogged = 0;
        t->prot_log_sec = sec;
    }
    respond_finish(t, c, si, 503, body, bl, quiet);
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

static void conn_close(gw_thread *t, gw_conn *c)
{
    if (!c->open) return;
    d11_io_stop(&t->loop, &c->io); /* drops an event of c already fetched this iteration */
    close(c->io.fd);
    c->io.fd = -1;
    for (int k = 0; k < c->nslots; k++) {
        gw_slot *s = &c->slots[(c->head + k) % D11_HTTP_PIPELINE_MAX];
        if (s->counted) gw_gauge_add(&t->m.inflight, -1);
        s->counted = false;
        if (s->prot) gw_protect_leave(&t->gw->prot, 0, false);
        s->prot = false;
        if (s->conc_res >= 0) d11_flow_conc_leave(&t->gw->rules, s->conc_res);
        s->conc_res = -1;
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
    t->cl.free_idx[t->cl.nfree++] = c->idx;
    t->cl.nopen--;
    gw_gauge_add(&t->m.conns_open, -1);
}

static void client_on_io(d11_loop *l, d11_io *io, uint32_t events);

/* The peer's address of a TCP socket as text; "" when unknown. */
static void peer_text(int fd, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    out[0] = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == -1) return;
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)cap);
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)cap);
}

static void conn_open(gw_thread *t, int fd)
{
    gw_conn *c;
    if (t->cl.nfree) {
        c = t->cl.conns[t->cl.free_idx[--t->cl.nfree]];
    } else {
        D11_ASSERT(t->cl.nalloc < D11_HTTP_CONNS_MAX);
        c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            return;
        }
        c->idx = t->cl.nalloc;
        d11_http_in_init(&c->http);
        t->cl.conns[t->cl.nalloc++] = c;
    }
    c->open = true;
    c->closing = c->rd_eof = c->dirty = c->stalled = false;
    c->head = c->nslots = 0;
    c->tracestate_slot = -1;
    c->out_off = 0;
    c->last_active_ms = gw_now_ms(t);
    c->req_start_ms = 0;
    peer_text(fd, c->peer, sizeof c->peer); /* for the hot-parameter limit per client IP */
    t->cl.nopen++;
    gw_gauge_add(&t->m.conns_open, 1);
    gw_ctr_add(&t->m.conns_accepted, 1);
    int rc = d11_io_start(&t->loop, &c->io, fd, D11_IO_READ, client_on_io, c);
    if (rc < 0) {
        d11_error("cannot watch a client connection: %s", d11_strerror(rc));
        c->io.fd = fd;
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
    s->route = 0; /* "other" until routed */
    s->close_after = s->keepalive_hdr = s->prot = false;
    s->conc_res = -1;
    s->start_us = d11_mono_us();
    uint64_t r = gw_rand64(t);
    d11_hex((const uint8_t *)&r, 8, s->rid);
    /* a fresh trace until the request's traceparent says otherwise (router.c) */
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
            t->gw->on_request(t, c, si, r);
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
        if (!c->req_start_ms) c->req_start_ms = gw_now_ms(t);
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
        ssize_t r = read(c->io.fd, c->in.data + c->in.len, room);
        if (r > 0) {
            c->in.len += (size_t)r;
            c->last_active_ms = gw_now_ms(t);
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
            ssize_t w = write(c->io.fd, c->out.data + c->out_off, c->out.len - c->out_off);
            if (w > 0) {
                c->out_off += (size_t)w;
                c->last_active_ms = gw_now_ms(t);
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
    uint32_t want = 0;
    if (!c->closing && !c->rd_eof && !t->stopping && c->in.len < D11_HTTP_IN_BYTES_MAX &&
        c->out.len - c->out_off < D11_HTTP_OUT_BYTES_MAX)
        want |= D11_IO_READ;
    if (c->out.len > c->out_off) want |= D11_IO_WRITE;
    int rc = d11_io_want(&t->loop, &c->io, want); /* an epoll_ctl only when it changes */
    if (rc < 0) {
        d11_error("cannot re-arm a client connection: %s", d11_strerror(rc));
        conn_close(t, c);
    }
}

void gw_clients_flush(gw_thread *t)
{
    /* conn_service may append to the list (a process step); iterate by index */
    for (uint32_t i = 0; i < t->cl.ndirty; i++) {
        gw_conn *c = t->cl.conns[t->cl.dirty[i]];
        if (c->open) conn_service(t, c); /* c->dirty stays set: no re-queueing meanwhile */
        c->dirty = false;
    }
    t->cl.ndirty = 0;
}

void gw_clients_sweep(gw_thread *t)
{
    int64_t now = gw_now_ms(t);
    for (uint32_t i = 0; i < t->cl.nalloc; i++) {
        gw_conn *c = t->cl.conns[i];
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

static void accept_resume(d11_loop *l, d11_timer *tm)
{
    gw_thread *t = tm->data;
    if (!t->lio.active) return; /* closed meanwhile (drain) */
    int rc = d11_io_want(l, &t->lio, D11_IO_READ);
    if (rc < 0) d11_warn("cannot resume accepting: %s", d11_strerror(rc));
}

/* The listener is readable: accept a batch, refusing over D11_HTTP_CONNS_MAX. */
static void on_accept(d11_loop *l, d11_io *io, uint32_t events)
{
    (void)events;
    gw_thread *t = gw_thread_of(l);
    if (t->stopping) return;
    for (int k = 0; k < 256; k++) {
        int fd = d11_accept(io->fd);
        if (fd == -EAGAIN || fd == -EWOULDBLOCK) return;
        if (fd < 0) {
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* out of descriptors: stop accepting for a moment instead of spinning */
                d11_warn("accept: %s; pausing accepts for 100 ms", d11_strerror(fd));
                if (d11_io_want(l, io, 0) == 0)
                    d11_timer_start(l, &t->accept_pause, 100, 0, accept_resume, t);
            }
            return;
        }
        if (t->cl.nopen >= D11_HTTP_CONNS_MAX) {
            close(fd);
            gw_ctr_add(&t->m.conns_rejected, 1);
            continue;
        }
        conn_open(t, fd);
    }
}

int gw_clients_listen(gw_thread *t)
{
    D11_ASSERT(t->lfd >= 0 && !t->lio.active);
    return d11_io_start(&t->loop, &t->lio, t->lfd, D11_IO_READ, on_accept, t);
}

/* Readiness of one client connection. */
static void client_on_io(d11_loop *l, d11_io *io, uint32_t e)
{
    gw_thread *t = gw_thread_of(l);
    gw_conn *c = io->data;
    D11_ASSERT(c->open && &c->io == io);
    if (e & D11_IO_WRITE) mark_dirty(t, c);
    if (e & (D11_IO_READ | D11_IO_HUP)) {
        if (c->io.want & D11_IO_READ) conn_read(t, c);
        else if (e & D11_IO_HUP) conn_close(t, c);
    }
}

void gw_clients_drain(gw_thread *t)
{
    d11_timer_stop(&t->loop, &t->accept_pause);
    if (t->lfd >= 0) {
        d11_io_stop(&t->loop, &t->lio);
        close(t->lfd);
        t->lfd = -1;
    }
    for (uint32_t i = 0; i < t->cl.nalloc; i++)
        if (t->cl.conns[i]->open) mark_dirty(t, t->cl.conns[i]);
}

void gw_clients_close_all(gw_thread *t)
{
    for (uint32_t i = 0; i < t->cl.nalloc; i++)
        if (t->cl.conns[i]->open) conn_close(t, t->cl.conns[i]);
}

int gw_clients_init(gw_thread *t)
{
    gw_clients *cl = &t->cl;
    memset(cl, 0, sizeof *cl);
    cl->conns = calloc(D11_HTTP_CONNS_MAX, sizeof *cl->conns);
    cl->free_idx = calloc(D11_HTTP_CONNS_MAX, sizeof *cl->free_idx);
    cl->dirty = calloc(D11_HTTP_CONNS_MAX, sizeof *cl->dirty);
    if (!cl->conns || !cl->free_idx || !cl->dirty) return -ENOMEM;
    return 0;
}

void gw_clients_release(gw_thread *t)
{
    gw_clients *cl = &t->cl;
    for (uint32_t i = 0; i < cl->nalloc; i++) {
        gw_conn *c = cl->conns[i];
        if (c->open) conn_close(t, c);
        d11_buf_free(&c->in);
        d11_buf_free(&c->out);
        for (int k = 0; k < D11_HTTP_PIPELINE_MAX; k++) d11_buf_free(&c->slots[k].resp);
        d11_http_in_release(&c->http);
        free(c);
    }
    free(cl->conns);
    free(cl->free_idx);
    free(cl->dirty);
    memset(cl, 0, sizeof *cl);
}
