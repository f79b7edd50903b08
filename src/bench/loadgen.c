/*
 * loadgen.c — worker threads, their epoll loops, and the per-second progress line
 * (see loadgen.h for the open/closed-loop rules).
 *
 * Length (~1,100 lines): the open-loop scheduler, the connection state machine and the
 * per-second series share one worker's state; split, every function would take that
 * whole state as parameters. The pure parts (histogram, workload, HTTP client, report)
 * are already in their own files.
 *
 * A worker owns: its connections (fd, output buffer, response parser, a FIFO of the
 * requests in flight on it), a "ready" list of open connections with a free pipeline
 * slot, its random generator, a ring of order ids it placed (for pay/cancel), and its
 * histograms and counters. Nothing here is shared between workers; the main thread
 * only reads each worker's published snapshot under that worker's mutex.
 *
 * Life of a connection: DOWN -> CONNECTING -> OPEN -> (error, timeout, peer close) ->
 * DOWN -> reconnect (at once after a clean close; with a 10 ms .. 1 s backoff when it
 * failed before ever answering). Requests in flight on a connection that dies are
 * counted as transport failures ("timeout", "closed", "io", "proto"), never retried:
 * the bench measures what a client would have seen.
 *
 * A connection is never closed from inside a parser callback or a send: those only mark
 * it dead, and the event loop closes it once the call returns (after_io).
 */

#include "loadgen.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

volatile int d11__bench_stop;

#define NS_PER_S   1000000000LL
#define NS_PER_MS  1000000LL
#define TICK_NS    (10 * NS_PER_MS)   /* timeouts, reconnects */
#define PUB_NS     (100 * NS_PER_MS)  /* snapshot for the progress line */
#define WARM_NS    (2 * NS_PER_S)     /* max wait for the first connects */
#define EVENTS_MAX 256

enum { C_DOWN = 0, C_CONNECTING, C_OPEN };

typedef struct inflight_req {
    int64_t intended_ns;
    int64_t sent_ns;
    int     op;
} inflight_req;

typedef struct worker worker;

typedef struct bconn {
    worker          *w;
    int              fd;
    int              state;
    d11_buf          out;
    size_t           out_off;
    bool             want_out;      /* EPOLLOUT armed */
    d11_httpc_parser parser;
    inflight_req    *q;             /* ring of `pipeline` slots */
    int              q_head, q_len;
    struct bconn    *prev, *next;   /* ready list */
    bool             linked;
    int64_t          retry_at_ns;
    int64_t          connect_start_ns;
    int              backoff_ms;
    int64_t          answered;      /* responses on this TCP connection */
    bool             dead;          /* close at the next after_io */
    const char      *dead_kind;     /* NULL: clean close */
} bconn;

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             ready;
    bool            go;
    int64_t         t0_ns;
} gate;

struct worker {
    int                    id;
    const d11_bench_opts  *o;
    gate                  *g;
    pthread_t              th;
    bool                   started;
    int                    ep;
    bconn                 *conns;
    int                    nconns;
    bconn                 *rhead, *rtail;
    d11_rng                rng;
    /* schedule */
    double                 period_ns;   /* open loop: ns between intended sends; 0 closed */
    double                 duration_s;
    int64_t                t0_ns, deadline_ns, drain_end_ns;
    int64_t                budget;      /* max sends, -1 = unbounded */
    int64_t                k;           /* sends so far (= next schedule index) */
    int                    nthreads;    /* workers of the run (ramp stages split by id) */
    bool                   issuing;
    int64_t                stop_ns;
    int64_t                inflight_total;
    int64_t                last_done_ns;
    /* placed orders, for pay/cancel (FIFO ring) */
    char                 (*ids)[D11_BENCH_ORDER_ID_BYTES_MAX];
    int                    ids_head, ids_len;
    char                   run_id[32];
    uint64_t               seq;
    d11_buf                hdr, body, common;
    char                   rbuf[65536];
    int                    verbose_left;
    /* results */
    d11_bench_counts       c;
    d11_hist               lat, svc, lat_op[D11_OP_COUNT], ival, lat_ok;
    /* published for the progress line */
    pthread_mutex_t        mu;
    d11_hist               pub_hist;
    d11_bench_counts       pub_c;
    int64_t                pub_inflight;
    bool                   finished;
    int                    err;          /* setup failure (-errno) */
};

/* ---- outcomes ---- */

int d11_bench_classify(int status, const char *code)
{
    if (status >= 200 && status < 300) return D11_CLS_OK;
    if (status == 409 && (!strcmp(code, "out_of_stock") || !strcmp(code, "not_payable") ||
                          !strcmp(code, "not_cancellable")))
        return D11_CLS_REJECT;
    if (status == 403 && !strncmp(code, "risk_", 5)) return D11_CLS_REJECT; /* risk_rejected, risk_challenge, risk_denied */
    return D11_CLS_ERROR;
}

void d11_bench_count_outcome(d11_bench_counts *c, int status, const char *code, int64_t n)
{
    for (int i = 0; i < c->n_outcomes; i++) {
        d11_bench_outcome *o = &c->outcome[i];
        if (o->status == status && !strcmp(o->code, code)) {
            o->count += n;
            return;
        }
    }
    if (c->n_outcomes == D11_BENCH_OUTCOMES_MAX) {
        c->outcome_overflow += n;
        return;
    }
    d11_bench_outcome *o = &c->outcome[c->n_outcomes++];
    o->status = status;
    snprintf(o->code, sizeof o->code, "%s", code);
    o->cls = status == 0 ? D11_CLS_ERROR : d11_bench_classify(status, code);
    o->count = n;
}

void d11_bench_counts_merge(d11_bench_counts *dst, const d11_bench_counts *src)
{
    dst->scheduled += src->scheduled;
    dst->sent += src->sent;
    dst->done += src->done;
    for (int i = 0; i < D11_CLS_COUNT; i++) dst->cls[i] += src->cls[i];
    for (int i = 0; i < D11_OP_COUNT; i++) {
        dst->op_sent[i] += src->op_sent[i];
        dst->op_ok[i] += src->op_ok[i];
    }
    dst->substituted += src->substituted;
    dst->late += src->late;
    dst->connects += src->connects;
    dst->connect_errors += src->connect_errors;
    dst->outcome_overflow += src->outcome_overflow;
    for (int i = 0; i < src->n_outcomes; i++)
        d11_bench_count_outcome(dst, src->outcome[i].status, src->outcome[i].code,
                                src->outcome[i].count);
}

static void hist_init_us(d11_hist *h)
{
    int rc = d11_hist_init(h, 1, D11_BENCH_HIST_HIGHEST_US, D11_BENCH_HIST_DIGITS);
    D11_ASSERT(rc == 0);
}

void d11_bench_result_init(d11_bench_result *r)
{
    memset(r, 0, sizeof *r);
    hist_init_us(&r->lat);
    hist_init_us(&r->svc);
    for (int i = 0; i < D11_OP_COUNT; i++) hist_init_us(&r->lat_op[i]);
    hist_init_us(&r->lat_ok);
}

void d11_bench_result_release(d11_bench_result *r)
{
    free(r->series);
    r->series = NULL;
    r->nseries = r->capseries = 0;
    d11_hist_release(&r->lat);
    d11_hist_release(&r->svc);
    for (int i = 0; i < D11_OP_COUNT; i++) d11_hist_release(&r->lat_op[i]);
    d11_hist_release(&r->lat_ok);
}

static void result_reset(d11_bench_result *r)
{
    memset(&r->c, 0, sizeof r->c);
    r->rate_target = 0;
    r->elapsed_s = 0;
    r->unsent = r->unfinished = 0;
    r->interrupted = false;
    r->nseries = 0;
    d11_hist_reset(&r->lat);
    d11_hist_reset(&r->svc);
    for (int i = 0; i < D11_OP_COUNT; i++) d11_hist_reset(&r->lat_op[i]);
    d11_hist_reset(&r->lat_ok);
}

double d11_bench_error_ratio(const d11_bench_result *r)
{
    int64_t attempted = r->c.sent + r->unsent;
    if (attempted <= 0) return 0;
    return (double)(r->c.cls[D11_CLS_ERROR] + r->unsent + r->unfinished) / (double)attempted;
}

/* ---- ramp stages ---- */

double d11_bench_stage_rate(const d11_bench_opts *o, double t)
{
    D11_ASSERT(o->nstages > 0);
    double r0 = 0;
    for (int i = 0; i < o->nstages; i++) {
        const d11_bench_stage *s = &o->stages[i];
        if (t < s->dur_s) return r0 + (s->rate - r0) * t / s->dur_s;
        t -= s->dur_s;
        r0 = s->rate;
    }
    return r0;
}

double d11_bench_stage_count(const d11_bench_opts *o, double t)
{
    D11_ASSERT(o->nstages > 0);
    double r0 = 0, n = 0;
    for (int i = 0; i < o->nstages && t > 0; i++) {
        const d11_bench_stage *s = &o->stages[i];
        double tau = t < s->dur_s ? t : s->dur_s;
        n += r0 * tau + (s->rate - r0) * tau * tau / (2 * s->dur_s);
        t -= s->dur_s;
        r0 = s->rate;
    }
    return n;
}

double d11_bench_stage_time(const d11_bench_opts *o, double n)
{
    D11_ASSERT(o->nstages > 0);
    double r0 = 0, t0 = 0;
    for (int i = 0; i < o->nstages; i++) {
        const d11_bench_stage *s = &o->stages[i];
        double in = (r0 + s->rate) / 2 * s->dur_s; /* requests of this stage */
        if (n <= in) {
            double a = (s->rate - r0) / (2 * s->dur_s), b = r0, tau;
            if (fabs(a) < 1e-12) tau = b > 0 ? n / b : 0;
            else tau = (-b + sqrt(b * b + 4 * a * n)) / (2 * a);
            if (tau < 0) tau = 0;
            if (tau > s->dur_s) tau = s->dur_s;
            return t0 + tau;
        }
        n -= in;
        t0 += s->dur_s;
        r0 = s->rate;
    }
    return INFINITY;
}

/* ---- ready list ---- */

static void ready_unlink(bconn *c)
{
    if (!c->linked) return;
    worker *w = c->w;
    if (c->prev) c->prev->next = c->next;
    else w->rhead = c->next;
    if (c->next) c->next->prev = c->prev;
    else w->rtail = c->prev;
    c->prev = c->next = NULL;
    c->linked = false;
}

static void ready_append(bconn *c)
{
    worker *w = c->w;
    D11_ASSERT(!c->linked);
    c->prev = w->rtail;
    c->next = NULL;
    if (w->rtail) w->rtail->next = c;
    else w->rhead = c;
    w->rtail = c;
    c->linked = true;
}

/* Put c on the ready list when it can take another request (open loop only). */
static void ready_update(bconn *c)
{
    bool can = c->state == C_OPEN && !c->dead && c->q_len < c->w->o->pipeline;
    if (can && !c->linked) ready_append(c);
    else if (!can) ready_unlink(c);
}

/* ---- order ids ---- */

static void ids_push(worker *w, const char *id, size_t n)
{
    if (n == 0 || n >= D11_BENCH_ORDER_ID_BYTES_MAX) return;
    int slot;
    if (w->ids_len == D11_BENCH_ORDER_RING) { /* full: the oldest gives way */
        slot = w->ids_head;
        w->ids_head = (w->ids_head + 1) % D11_BENCH_ORDER_RING;
    } else {
        slot = (w->ids_head + w->ids_len) % D11_BENCH_ORDER_RING;
        w->ids_len++;
    }
    memcpy(w->ids[slot], id, n);
    w->ids[slot][n] = 0;
}

static bool ids_pop(worker *w, char *out)
{
    if (w->ids_len == 0) return false;
    memcpy(out, w->ids[w->ids_head], D11_BENCH_ORDER_ID_BYTES_MAX);
    w->ids_head = (w->ids_head + 1) % D11_BENCH_ORDER_RING;
    w->ids_len--;
    return true;
}

/* ---- connections ---- */

static void arm(bconn *c, bool out)
{
    if (c->want_out == out) return;
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev) == -1) {
        c->dead = true;
        c->dead_kind = "io";
        return;
    }
    c->want_out = out;
}

static void mark_dead(bconn *c, const char *kind)
{
    if (c->dead) return;
    c->dead = true;
    c->dead_kind = kind;
}

static void conn_flush(bconn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n >= 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            arm(c, true);
            return;
        }
        mark_dead(c, "io");
        return;
    }
    d11_buf_reset(&c->out);
    c->out_off = 0;
    if (c->want_out) arm(c, false);
}

static void conn_start(bconn *c, int64_t now)
{
    worker *w = c->w;
    D11_ASSERT(c->state == C_DOWN && c->fd < 0);
    int fd = d11_httpc_connect_nb(&w->o->url);
    if (fd < 0) {
        w->c.connect_errors++;
        c->backoff_ms = c->backoff_ms ? (c->backoff_ms * 2 > 1000 ? 1000 : c->backoff_ms * 2) : 10;
        c->retry_at_ns = now + c->backoff_ms * NS_PER_MS;
        return;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) == -1) {
        close(fd);
        w->c.connect_errors++;
        c->retry_at_ns = now + 100 * NS_PER_MS;
        return;
    }
    c->fd = fd;
    c->want_out = true;
    c->state = C_CONNECTING;
    c->connect_start_ns = now;
    c->answered = 0;
    c->dead = false;
    c->dead_kind = NULL;
}

/* Close c: the requests in flight fail with `kind` ("closed" when the peer closed
 * cleanly with requests still pending). Schedules the reconnect. */
static void conn_close(bconn *c, const char *kind, int64_t now)
{
    worker *w = c->w;
    bool was_connecting = c->state == C_CONNECTING;
    if (c->q_len > 0) {
        const char *k = kind ? kind : "closed";
        d11_bench_count_outcome(&w->c, 0, k, c->q_len);
        w->c.cls[D11_CLS_ERROR] += c->q_len;
        w->inflight_total -= c->q_len;
        c->q_len = 0;
        c->q_head = 0;
    }
    ready_unlink(c);
    if (c->fd >= 0) {
        (void)epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    c->state = C_DOWN;
    c->want_out = false;
    d11_buf_reset(&c->out);
    c->out_off = 0;
    d11_httpc_parser_reset(&c->parser);
    c->dead = false;
    c->dead_kind = NULL;
    if (was_connecting) w->c.connect_errors++;
    if (!was_connecting && (kind == NULL || c->answered > 0)) {
        c->retry_at_ns = now; /* a working connection ended: replace it at once */
    } else {
        c->backoff_ms = c->backoff_ms ? (c->backoff_ms * 2 > 1000 ? 1000 : c->backoff_ms * 2) : 10;
        c->retry_at_ns = now + c->backoff_ms * NS_PER_MS;
    }
    if (w->issuing && c->retry_at_ns <= now) conn_start(c, now);
}

/* ---- requests ---- */

static void build_request(worker *w, bconn *c, int op)
{
    const d11_workload *wl = &w->o->wl;
    char sku[D11_BENCH_SKU_PREFIX_BYTES_MAX + 24];
    char path[D11_BENCH_ORDER_ID_BYTES_MAX + 64];
    char id[D11_BENCH_ORDER_ID_BYTES_MAX];
    d11_buf *h = &w->hdr, *b = &w->body;
    d11_buf_reset(h);
    d11_buf_reset(b);
    d11_buf_append(h, w->common.data, w->common.len);
    switch (op) {
    case D11_OP_READ:
        d11_workload_sku_name(wl, d11_workload_pick_sku(wl, &w->rng), sku, sizeof sku);
        snprintf(path, sizeof path, "/v1/products/%s", sku);
        d11_httpc_write_request(&c->out, "GET", &w->o->url, path, h->data, NULL, 0);
        return;
    case D11_OP_ORDER: {
        uint64_t user = d11_workload_pick_user(wl, &w->rng);
        d11_workload_sku_name(wl, d11_workload_pick_sku(wl, &w->rng), sku, sizeof sku);
        d11_buf_printf(h, "Content-Type: application/json\r\nIdempotency-Key: %s-%llu\r\n",
                       w->run_id, (unsigned long long)++w->seq);
        d11_buf_printf(b, "{\"user_id\":%llu,\"items\":[{\"sku\":\"%s\",\"quantity\":%d}]}",
                       (unsigned long long)user, sku, wl->quantity);
        d11_httpc_write_request(&c->out, "POST", &w->o->url, "/v1/orders", h->data, b->data,
                                b->len);
        return;
    }
    case D11_OP_PAY:
    case D11_OP_CANCEL: {
        bool ok = ids_pop(w, id);
        D11_ASSERT(ok);
        snprintf(path, sizeof path, "/v1/orders/%s/%s", id, op == D11_OP_PAY ? "pay" : "cancel");
        if (op == D11_OP_PAY) {
            d11_buf_puts(h, "Content-Type: application/json\r\n");
            d11_buf_printf(b, "{\"payment_id\":\"pay-%s-%llu\"}", w->run_id,
                           (unsigned long long)++w->seq);
        }
        d11_httpc_write_request(&c->out, "POST", &w->o->url, path, h->data, b->data, b->len);
        return;
    }
    }
    D11_ASSERT(!"unknown operation");
}

/* Send one request on c, intended at `intended` (closed loop: now). */
static void issue(bconn *c, int64_t intended)
{
    worker *w = c->w;
    int depth = w->o->pipeline;
    D11_ASSERT(c->state == C_OPEN && c->q_len < depth);
    int op = d11_workload_pick_op(&w->o->wl, &w->rng);
    if ((op == D11_OP_PAY || op == D11_OP_CANCEL) && w->ids_len == 0) {
        op = D11_OP_ORDER;
        w->c.substituted++;
    }
    build_request(w, c, op);
    inflight_req *f = &c->q[(c->q_head + c->q_len) % depth];
    f->intended_ns = intended;
    f->sent_ns = d11_mono_ns();
    f->op = op;
    if (f->sent_ns - intended > NS_PER_MS && w->period_ns > 0) w->c.late++;
    c->q_len++;
    w->inflight_total++;
    w->k++;
    w->c.sent++;
    w->c.op_sent[op]++;
    conn_flush(c);
}

static bool may_issue(const worker *w)
{
    return w->issuing && (w->budget < 0 || w->k < w->budget);
}

/* Closed loop: keep c's pipeline full. */
static void fill(bconn *c)
{
    while (c->state == C_OPEN && !c->dead && c->q_len < c->w->o->pipeline && may_issue(c->w))
        issue(c, d11_mono_ns());
}

static int64_t intended_at(const worker *w, int64_t k)
{
    if (w->o->nstages > 0) { /* this worker's k-th of every `threads` requests of the ramp */
        double t = d11_bench_stage_time(w->o, (double)k * w->nthreads + w->id); /* request k*T+id at N(t) */
        return isinf(t) || t > 1e6 ? INT64_MAX / 2 : w->t0_ns + (int64_t)(t * (double)NS_PER_S);
    }
    return w->t0_ns + (int64_t)((double)k * w->period_ns);
}

/* Open loop: send every request whose intended time has come, while a connection can
 * take it. Requests that find no free connection wait (their latency keeps growing). */
static void dispatch(worker *w, int64_t now)
{
    while (may_issue(w)) {
        int64_t t = intended_at(w, w->k);
        if (t > now || t >= w->deadline_ns) break;
        bconn *c = w->rhead;
        if (!c) break;
        issue(c, t);
        ready_unlink(c);
        if (c->dead) conn_close(c, c->dead_kind, now);
        else ready_update(c); /* to the tail: spread over connections before pipelining */
    }
}

/* ---- responses ---- */

static int on_response(void *ctx, const d11_httpc_resp *r)
{
    bconn *c = ctx;
    worker *w = c->w;
    if (c->q_len == 0) { /* an answer nobody asked for */
        mark_dead(c, "proto");
        return 1;
    }
    inflight_req f = c->q[c->q_head];
    c->q_head = (c->q_head + 1) % w->o->pipeline;
    c->q_len--;
    w->inflight_total--;
    int64_t now = d11_mono_ns();
    int64_t lat_us = (now - f.intended_ns) / 1000, svc_us = (now - f.sent_ns) / 1000;
    d11_hist_record(&w->lat, lat_us);
    d11_hist_record(&w->lat_op[f.op], lat_us);
    d11_hist_record(&w->svc, svc_us);
    d11_hist_record(&w->ival, lat_us);

    char code[D11_BENCH_CODE_BYTES_MAX] = "";
    bool ok2xx = r->status >= 200 && r->status < 300;
    if (ok2xx) d11_hist_record(&w->lat_ok, lat_us);
    if (!ok2xx && d11_json_find_str(r->body, r->body_kept, "code", code, sizeof code) < 0)
        code[0] = 0;
    int cls = d11_bench_classify(r->status, code);
    w->c.done++;
    w->c.cls[cls]++;
    if (cls == D11_CLS_OK) w->c.op_ok[f.op]++;
    d11_bench_count_outcome(&w->c, r->status, code, 1);
    if (f.op == D11_OP_ORDER && ok2xx) {
        char id[D11_BENCH_ORDER_ID_BYTES_MAX];
        int n = d11_json_find_str(r->body, r->body_kept, "order_id", id, sizeof id);
        if (n > 0) ids_push(w, id, (size_t)n);
    }
    if (cls == D11_CLS_ERROR && w->verbose_left > 0) {
        w->verbose_left--;
        fprintf(stderr, "d11 bench: %s -> %d %.*s\n", d11_bench_op_name(f.op), r->status,
                (int)(r->body_kept > 300 ? 300 : r->body_kept), r->body);
    }
    c->answered++;
    c->backoff_ms = 0;
    w->last_done_ns = now;
    if (!r->keep_alive) {
        mark_dead(c, NULL);
        return 1;
    }
    return 0;
}

static void on_readable(bconn *c)
{
    worker *w = c->w;
    for (int i = 0; i < 16 && !c->dead; i++) {
        ssize_t r = recv(c->fd, w->rbuf, sizeof w->rbuf, 0);
        if (r > 0) {
            int rc = d11_httpc_parser_feed(&c->parser, w->rbuf, (size_t)r);
            if (rc == D11_EPROTO) mark_dead(c, "proto");
            if (rc < 0 || (size_t)r < sizeof w->rbuf) return;
            continue;
        }
        if (r == 0) {
            (void)d11_httpc_parser_feed(&c->parser, NULL, 0);
            mark_dead(c, c->q_len ? "closed" : NULL);
            return;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) mark_dead(c, errno == ECONNRESET ? "reset" : "io");
        return;
    }
}

static void on_connected(bconn *c, int64_t now)
{
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1 || soerr) {
        conn_close(c, NULL, now);
        return;
    }
    c->state = C_OPEN;
    c->w->c.connects++;
    arm(c, false);
}

/* After any event or send on c: close it if it died, else keep it busy. */
static void after_io(bconn *c, int64_t now)
{
    worker *w = c->w;
    if (c->dead) {
        conn_close(c, c->dead_kind, now);
        return;
    }
    if (c->state != C_OPEN) return;
    if (w->period_ns > 0) ready_update(c);
    else fill(c);
    if (c->dead) conn_close(c, c->dead_kind, now);
}

static void on_event(bconn *c, uint32_t events, int64_t now)
{
    if (c->state == C_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c, now);
    } else if (c->state == C_OPEN) {
        if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        if (!c->dead && (events & EPOLLOUT)) conn_flush(c);
    }
    if (c->state != C_DOWN || c->dead) after_io(c, now);
}

/* Every TICK: expire slow requests and connects, reconnect what is due. */
static void tick(worker *w, int64_t now)
{
    int64_t timeout_ns = (int64_t)w->o->timeout_ms * NS_PER_MS;
    for (int i = 0; i < w->nconns; i++) {
        bconn *c = &w->conns[i];
        if (c->state == C_OPEN && c->q_len > 0 && now - c->q[c->q_head].sent_ns > timeout_ns) {
            conn_close(c, "timeout", now);
        } else if (c->state == C_CONNECTING && now - c->connect_start_ns > timeout_ns) {
            conn_close(c, NULL, now);
        } else if (c->state == C_DOWN && w->issuing && now >= c->retry_at_ns) {
            conn_start(c, now);
        }
    }
}

static void publish(worker *w)
{
    pthread_mutex_lock(&w->mu);
    int rc = d11_hist_merge(&w->pub_hist, &w->ival);
    D11_ASSERT(rc == 0);
    w->pub_c = w->c;
    w->pub_inflight = w->inflight_total;
    pthread_mutex_unlock(&w->mu);
    d11_hist_reset(&w->ival);
}

static int wait_events(int ep, struct epoll_event *ev, int n, int64_t timeout_ns)
{
    static __thread bool no_pwait2;
    if (timeout_ns < 0) timeout_ns = 0;
    if (!no_pwait2) {
        struct timespec ts = {.tv_sec = timeout_ns / NS_PER_S, .tv_nsec = timeout_ns % NS_PER_S};
        int r = epoll_pwait2(ep, ev, n, &ts, NULL);
        if (r != -1 || errno != ENOSYS) return r;
        no_pwait2 = true;
    }
    return epoll_wait(ep, ev, n, (int)((timeout_ns + NS_PER_MS - 1) / NS_PER_MS));
}

static void poll_once(worker *w, int64_t timeout_ns)
{
    struct epoll_event ev[EVENTS_MAX];
    int n = wait_events(w->ep, ev, EVENTS_MAX, timeout_ns);
    if (n == -1) return; /* EINTR: the loop re-checks its state */
    int64_t now = d11_mono_ns();
    for (int i = 0; i < n; i++) on_event(ev[i].data.ptr, ev[i].events, now);
}

static void stop_issuing(worker *w, int64_t now)
{
    w->issuing = false;
    w->stop_ns = now < w->deadline_ns ? now : w->deadline_ns;
    w->drain_end_ns = now + (int64_t)w->o->drain_ms * NS_PER_MS;
    if (w->period_ns > 0) {
        int64_t due = (int64_t)ceil((double)(w->stop_ns - w->t0_ns) / w->period_ns);
        if (w->o->nstages > 0) {
            double n = d11_bench_stage_count(w->o, (double)(w->stop_ns - w->t0_ns) / NS_PER_S);
            /* indices k*T+id below N(stop) were due before the stop */
            due = n > w->id ? (int64_t)ceil((n - w->id) / w->nthreads - 1e-9) : 0;
        }
        if (due < 0) due = 0;
        if (w->budget >= 0 && due > w->budget) due = w->budget;
        if (due < w->k) due = w->k;
        w->c.scheduled = due;
    } else {
        w->c.scheduled = w->k;
    }
    for (bconn *c = w->rhead; c;) { /* nothing more to send: empty the ready list */
        bconn *next = c->next;
        ready_unlink(c);
        c = next;
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    (void)prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 µs: open-loop sends need fine timers */
    int64_t now = d11_mono_ns();

    /* Warm-up: open the connections before the clock starts. */
    w->issuing = true; /* lets tick() retry connects; nothing is sent until go */
    int64_t warm_end = now + WARM_NS;
    for (int i = 0; i < w->nconns; i++) conn_start(&w->conns[i], now);
    w->issuing = false;
    for (;;) {
        int open = 0, down = 0;
        for (int i = 0; i < w->nconns; i++) {
            open += w->conns[i].state == C_OPEN;
            down += w->conns[i].state == C_DOWN;
        }
        if (open + down == w->nconns || d11_mono_ns() >= warm_end || d11__bench_stop) break;
        poll_once(w, TICK_NS);
    }

    pthread_mutex_lock(&w->g->mu);
    w->g->ready++;
    pthread_cond_broadcast(&w->g->cv);
    while (!w->g->go) pthread_cond_wait(&w->g->cv, &w->g->mu);
    w->t0_ns = w->g->t0_ns;
    pthread_mutex_unlock(&w->g->mu);

    w->deadline_ns = w->t0_ns + (int64_t)(w->duration_s * (double)NS_PER_S);
    w->issuing = true;
    now = d11_mono_ns();
    for (int i = 0; i < w->nconns; i++) {
        bconn *c = &w->conns[i];
        if (c->state == C_DOWN) conn_start(c, now);
        else if (c->state == C_OPEN) after_io(c, now);
    }
    int64_t next_tick = now + TICK_NS, next_pub = now + PUB_NS;
    for (;;) {
        now = d11_mono_ns();
        if (w->issuing && (now >= w->deadline_ns || d11__bench_stop || !may_issue(w)))
            stop_issuing(w, now);
        if (!w->issuing && (w->inflight_total == 0 || now >= w->drain_end_ns)) break;
        if (w->issuing && w->period_ns > 0) dispatch(w, now);

        int64_t wake = next_tick < next_pub ? next_tick : next_pub;
        if (w->issuing) {
            if (w->deadline_ns < wake) wake = w->deadline_ns;
            if (w->period_ns > 0 && w->rhead && may_issue(w)) {
                int64_t t = intended_at(w, w->k);
                if (t < wake) wake = t;
            }
        } else if (w->drain_end_ns < wake) {
            wake = w->drain_end_ns;
        }
        poll_once(w, wake - d11_mono_ns());

        now = d11_mono_ns();
        if (now >= next_tick) {
            tick(w, now);
            next_tick = now + TICK_NS;
        }
        if (now >= next_pub) {
            publish(w);
            next_pub = now + PUB_NS;
        }
    }
    publish(w);
    pthread_mutex_lock(&w->mu);
    w->finished = true;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- setup and teardown of workers ---- */

static void worker_init(worker *w, int id, const d11_bench_opts *o, gate *g, int nconns)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->o = o;
    w->g = g;
    w->ep = -1;
    w->nconns = nconns;
    w->conns = calloc((size_t)nconns, sizeof *w->conns);
    w->ids = malloc(sizeof *w->ids * D11_BENCH_ORDER_RING);
    if (!w->conns || !w->ids) d11_fatal("out of memory for %d connections", nconns);
    for (int i = 0; i < nconns; i++) {
        bconn *c = &w->conns[i];
        c->w = w;
        c->fd = -1;
        d11_buf_init(&c->out, 4096);
        d11_httpc_parser_init(&c->parser, on_response, c, 4096);
        c->q = calloc((size_t)o->pipeline, sizeof *c->q);
        if (!c->q) d11_fatal("out of memory");
    }
    d11_buf_init(&w->hdr, 1024);
    d11_buf_init(&w->body, 512);
    d11_buf_init(&w->common, 1024);
    d11_buf_puts(&w->common, o->auth_header);
    d11_buf_puts(&w->common, o->extra_headers);
    hist_init_us(&w->lat);
    hist_init_us(&w->svc);
    hist_init_us(&w->ival);
    hist_init_us(&w->lat_ok);
    hist_init_us(&w->pub_hist);
    for (int i = 0; i < D11_OP_COUNT; i++) hist_init_us(&w->lat_op[i]);
    pthread_mutex_init(&w->mu, NULL);
    w->verbose_left = o->verbose_errors ? 5 : 0;
}

static void worker_release(worker *w)
{
    for (int i = 0; i < w->nconns; i++) {
        bconn *c = &w->conns[i];
        if (c->fd >= 0) close(c->fd);
        d11_buf_free(&c->out);
        d11_httpc_parser_release(&c->parser);
        free(c->q);
    }
    free(w->conns);
    free(w->ids);
    if (w->ep >= 0) close(w->ep);
    d11_buf_free(&w->hdr);
    d11_buf_free(&w->body);
    d11_buf_free(&w->common);
    d11_hist_release(&w->lat);
    d11_hist_release(&w->svc);
    d11_hist_release(&w->ival);
    d11_hist_release(&w->lat_ok);
    d11_hist_release(&w->pub_hist);
    for (int i = 0; i < D11_OP_COUNT; i++) d11_hist_release(&w->lat_op[i]);
    pthread_mutex_destroy(&w->mu);
}

/* ---- progress line ---- */

static void fmt_us(char out[32], size_t n, int64_t us)
{
    if (us < 1000) snprintf(out, n, "%lldus", (long long)us);
    else if (us < 1000000) snprintf(out, n, "%.2fms", (double)us / 1000.0);
    else snprintf(out, n, "%.2fs", (double)us / 1e6);
}

static int64_t outcome_count(const d11_bench_counts *c, int status, const char *code)
{
    for (int i = 0; i < c->n_outcomes; i++)
        if (c->outcome[i].status == status && !strcmp(c->outcome[i].code, code))
            return c->outcome[i].count;
    return 0;
}

static void progress_line(const char *label, double t_s, const d11_bench_counts *now_c,
                          const d11_bench_counts *prev_c, double dt_s, const d11_hist *h,
                          int64_t inflight)
{
    char p50[32], p99[32], mx[32];
    fmt_us(p50, sizeof p50, d11_hist_percentile(h, 50));
    fmt_us(p99, sizeof p99, d11_hist_percentile(h, 99));
    fmt_us(mx, sizeof mx, h->max);
    int64_t d_done = now_c->done - prev_c->done;
    int64_t d_ok = now_c->cls[D11_CLS_OK] - prev_c->cls[D11_CLS_OK];
    int64_t d_rej = now_c->cls[D11_CLS_REJECT] - prev_c->cls[D11_CLS_REJECT];
    int64_t d_err = now_c->cls[D11_CLS_ERROR] - prev_c->cls[D11_CLS_ERROR];
    char line[1024];
    int n = snprintf(line, sizeof line,
                     "%s%5.1fs  %7.0f/s  ok %lld  rej %lld  err %lld  p50 %s  p99 %s  max %s  inflight %lld",
                     label, t_s, dt_s > 0 ? (double)d_done / dt_s : 0.0, (long long)d_ok,
                     (long long)d_rej, (long long)d_err, p50, p99, mx, (long long)inflight);
    /* the three largest non-2xx outcomes of this second */
    bool used[D11_BENCH_OUTCOMES_MAX] = {false};
    for (int shown = 0; shown < 3 && n > 0 && (size_t)n < sizeof line; shown++) {
        int best = -1;
        int64_t best_d = 0;
        for (int i = 0; i < now_c->n_outcomes; i++) {
            const d11_bench_outcome *o = &now_c->outcome[i];
            if (used[i] || (o->status >= 200 && o->status < 300)) continue;
            int64_t d = o->count - outcome_count(prev_c, o->status, o->code);
            if (d > best_d) {
                best_d = d;
                best = i;
            }
        }
        if (best < 0) break;
        used[best] = true;
        const d11_bench_outcome *o = &now_c->outcome[best];
        char st[8] = "";
        if (o->status) snprintf(st, sizeof st, "%d ", o->status);
        n += snprintf(line + n, sizeof line - (size_t)n, "%s%s%s %lld", shown ? ", " : "  | ", st,
                      o->code[0] ? o->code : "-", (long long)best_d);
    }
    fprintf(stderr, "%s\n", line);
}

/* One second of the run into res->series (bounded by D11_BENCH_SERIES_MAX). */
static void series_add(d11_bench_result *res, const d11_bench_opts *o, double rate, double t_s, double dt_s,
                       const d11_bench_counts *cur, const d11_bench_counts *prev, const d11_hist *h, int64_t inflight)
{
    if (res->nseries >= D11_BENCH_SERIES_MAX) return;
    if (res->nseries == res->capseries) {
        int cap = res->capseries ? res->capseries * 2 : 64;
        d11_bench_sec *v = realloc(res->series, (size_t)cap * sizeof *v);
        if (!v) return;
        res->series = v;
        res->capseries = cap;
    }
    d11_bench_sec *s = &res->series[res->nseries++];
    s->t_s = t_s;
    s->target_rps = o->nstages > 0 ? d11_bench_stage_rate(o, t_s) : rate;
    s->rps = dt_s > 0 ? (double)(cur->done - prev->done) / dt_s : 0;
    s->ok = cur->cls[D11_CLS_OK] - prev->cls[D11_CLS_OK];
    s->rejected = cur->cls[D11_CLS_REJECT] - prev->cls[D11_CLS_REJECT];
    s->errors = cur->cls[D11_CLS_ERROR] - prev->cls[D11_CLS_ERROR];
    s->p50_us = d11_hist_percentile(h, 50);
    s->p90_us = d11_hist_percentile(h, 90);
    s->p99_us = d11_hist_percentile(h, 99);
    s->p999_us = d11_hist_percentile(h, 99.9);
    s->max_us = h->max;
    s->inflight = inflight;
}

/* ---- the run ---- */

int d11_bench_run(const d11_bench_opts *o, double rate, double duration_s, int64_t requests,
                  const char *label, d11_bench_result *res)
{
    result_reset(res);
    res->rate_target = rate;
    int threads = o->threads < o->connections ? o->threads : o->connections;
    D11_ASSERT(threads >= 1 && threads <= D11_BENCH_THREADS_MAX);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    if (!ws) d11_fatal("out of memory");
    gate g = {.ready = 0, .go = false};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);

    uint8_t rnd[8];
    d11_random_bytes(rnd, sizeof rnd);
    char run_id[17];
    d11_hex(rnd, 6, run_id);
    uint64_t seed = o->seed;
    if (!seed) memcpy(&seed, rnd, sizeof seed);

    int rc = 0;
    for (int i = 0; i < threads; i++) {
        worker *w = &ws[i];
        int nc = o->connections / threads + (i < o->connections % threads);
        worker_init(w, i, o, &g, nc);
        snprintf(w->run_id, sizeof w->run_id, "%s-%d", run_id, i);
        d11_rng_seed(&w->rng, seed + 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
        w->period_ns = rate > 0 ? (double)NS_PER_S * threads / rate : 0;
        w->duration_s = duration_s;
        w->nthreads = threads;
        w->budget = requests > 0 ? requests / threads + (i < requests % threads) : -1;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->ep == -1) rc = -errno;
    }

    /* Workers never take SIGINT/SIGTERM: the main thread does, and sets the stop flag. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int started = 0;
    for (int i = 0; i < threads && rc == 0; i++) {
        int e = pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
        if (e) rc = -e;
        else {
            ws[i].started = true;
            started++;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* Start gate: every started worker has tried its connects. */
    pthread_mutex_lock(&g.mu);
    while (g.ready < started) pthread_cond_wait(&g.cv, &g.mu);
    g.t0_ns = d11_mono_ns();
    g.go = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (rc != 0) d11__bench_stop = 1;

    int64_t t0 = g.t0_ns, next_line = t0 + NS_PER_S, prev_line = t0;
    d11_bench_counts prev = {0}, cur;
    d11_hist tick_hist;
    hist_init_us(&tick_hist);
    for (;;) {
        bool all_done = true;
        for (int i = 0; i < started; i++) {
            pthread_mutex_lock(&ws[i].mu);
            all_done &= ws[i].finished;
            pthread_mutex_unlock(&ws[i].mu);
        }
        if (all_done) break;
        int64_t now = d11_mono_ns();
        if (now >= next_line) {
            memset(&cur, 0, sizeof cur);
            int64_t inflight = 0;
            d11_hist_reset(&tick_hist);
            for (int i = 0; i < started; i++) {
                pthread_mutex_lock(&ws[i].mu);
                (void)d11_hist_merge(&tick_hist, &ws[i].pub_hist);
                d11_hist_reset(&ws[i].pub_hist);
                d11_bench_counts_merge(&cur, &ws[i].pub_c);
                inflight += ws[i].pub_inflight;
                pthread_mutex_unlock(&ws[i].mu);
            }
            if (!o->quiet)
                progress_line(label, (double)(now - t0) / NS_PER_S, &cur, &prev,
                              (double)(now - prev_line) / NS_PER_S, &tick_hist, inflight);
            series_add(res, o, rate, (double)(now - t0) / NS_PER_S, (double)(now - prev_line) / NS_PER_S, &cur,
                       &prev, &tick_hist, inflight);
            prev = cur;
            prev_line = now;
            next_line += NS_PER_S;
            if (next_line <= now) next_line = now + NS_PER_S;
        }
        int64_t wait = next_line - d11_mono_ns();
        if (wait > 50 * NS_PER_MS) wait = 50 * NS_PER_MS;
        if (wait > 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = wait};
            nanosleep(&ts, NULL); /* EINTR (a signal) just shortens the wait */
        }
    }
    { /* the last, partial second of the series (the workers published their final state) */
        int64_t now = d11_mono_ns();
        memset(&cur, 0, sizeof cur);
        int64_t inflight = 0;
        d11_hist_reset(&tick_hist);
        for (int i = 0; i < started; i++) {
            pthread_mutex_lock(&ws[i].mu);
            (void)d11_hist_merge(&tick_hist, &ws[i].pub_hist);
            d11_hist_reset(&ws[i].pub_hist);
            d11_bench_counts_merge(&cur, &ws[i].pub_c);
            inflight += ws[i].pub_inflight;
            pthread_mutex_unlock(&ws[i].mu);
        }
        if (cur.done > prev.done)
            series_add(res, o, rate, (double)(now - t0) / NS_PER_S, (double)(now - prev_line) / NS_PER_S, &cur,
                       &prev, &tick_hist, inflight);
    }
    d11_hist_release(&tick_hist);

    int64_t last = t0, stop_max = t0;
    for (int i = 0; i < threads; i++) {
        worker *w = &ws[i];
        if (w->started) pthread_join(w->th, NULL);
        if (!w->started) continue;
        (void)d11_hist_merge(&res->lat, &w->lat);
        (void)d11_hist_merge(&res->svc, &w->svc);
        (void)d11_hist_merge(&res->lat_ok, &w->lat_ok);
        for (int k = 0; k < D11_OP_COUNT; k++) (void)d11_hist_merge(&res->lat_op[k], &w->lat_op[k]);
        d11_bench_counts_merge(&res->c, &w->c);
        if (w->period_ns > 0 && w->c.scheduled > w->c.sent) res->unsent += w->c.scheduled - w->c.sent;
        res->unfinished += w->inflight_total;
        if (w->last_done_ns > last) last = w->last_done_ns;
        if (w->stop_ns > stop_max) stop_max = w->stop_ns;
    }
    /* Requests still unanswered when the drain ended are failures the client saw. */
    if (res->unfinished > 0) {
        d11_bench_count_outcome(&res->c, 0, "unfinished", res->unfinished);
    }
    int64_t end = last > stop_max ? last : stop_max;
    res->elapsed_s = (double)(end - t0) / NS_PER_S;
    res->interrupted = d11__bench_stop != 0;
    for (int i = 0; i < threads; i++) worker_release(&ws[i]);
    free(ws);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    return rc;
}
