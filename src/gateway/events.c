/*
 * events.c — GET /v1/events and /v1/consumers/{name} (events.h, docs/events.md).
 *
 * A read (gw_evpoll, calloc'd, at most D11_EVENTS_WAITERS_MAX per thread) sends one
 * EVENTS_READ per cell of the routing table (after = the cursor's position for that
 * cell) and, once every part has answered, merges the pages by commit time, keeping each
 * cell's events in id order (= commit order; one order lives in one cell, so its events
 * stay in order). When no cell had anything and wait_ms is not over, it reads again
 * every D11_EVENTS_POLL_MS (long-poll by polling the committed outbox: a read is a
 * primary-key range scan on a read-only connection of the cell, never the commit path).
 * A cell that is down is skipped (its position stays; "unavailable_cells" names it), so
 * nothing is lost, only delayed. Any part answering 410 makes the whole read 410
 * cursor_expired. The poll is freed when it answers, or when it finds its client gone.
 *
 * The center's outbox (product events, center_events.h) is one more part, at index
 * GW_EV_CENTER of the positions, read with the same EVENTS_READ from the center (real
 * stream only; skipped when the routing table uses all D11_CELLS_MAX cells).
 *
 * Consumers: DATA/consumers/<name> holds the committed cursor, written to a per-thread
 * temporary file, fsynced and renamed over (atomic; the last PUT wins).
 * Thread: the connection's thread.
 */
#include "events.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "request.h"

typedef struct gw_evpart {
    d11_buf  body;
    int      status; /* -1 waiting, 0 no answer (down), else the reply status */
    uint64_t head;
} gw_evpart;

typedef struct gw_evpoll {
    gw_thread  *t;
    gw_slot_ref ref;
    int         shadow, ncells, outstanding;
    bool        center; /* the center's events are a part (index GW_EV_CENTER) */
    uint32_t    limit;
    int64_t     deadline_ms;
    uint16_t    flags;
    uint8_t     trace_id[16], span_id[8], trace_flags;
    d11_timer   timer;
    uint64_t    pos[D11_CELLS_MAX];
    gw_evpart   part[D11_CELLS_MAX];
} gw_evpoll;

/* ---- cursor ---- */

int gw_cursor_decode(const char *s, size_t n, int *shadow, uint64_t pos[D11_CELLS_MAX])
{
    memset(pos, 0, sizeof(uint64_t) * D11_CELLS_MAX);
    if (n < 2 || (s[0] != 'e' && s[0] != 's') || s[1] != '1') return -1;
    *shadow = s[0] == 's';
    size_t i = 2;
    int k = 0;
    bool center = false;
    while (i < n) {
        if (center || s[i] != '.') return -1;
        if (i + 1 < n && s[i + 1] == 'c') { /* ".c<pos>": the center, last */
            size_t j = i + 2;
            while (j < n && s[j] >= '0' && s[j] <= '9') j++;
            if (j == i + 2 || j - i - 2 > 20 || d11_parse_u64(s + i + 2, j - i - 2, UINT64_MAX, &pos[GW_EV_CENTER]) < 0)
                return -1;
            center = true;
            i = j;
            continue;
        }
        if (k >= D11_CELLS_MAX) return -1;
        size_t j = ++i;
        while (j < n && s[j] >= '0' && s[j] <= '9') j++;
        if (j == i || j - i > 20 || d11_parse_u64(s + i, j - i, UINT64_MAX, &pos[k]) < 0) return -1;
        k++;
        i = j;
    }
    return 0;
}

void gw_cursor_encode(d11_buf *b, int shadow, const uint64_t *pos, int ncells)
{
    d11_buf_puts(b, shadow ? "s1" : "e1");
    int last = ncells < GW_EV_CENTER ? ncells : GW_EV_CENTER;
    while (last > 0 && pos[last - 1] == 0) last--; /* trailing zeros are implied */
    for (int k = 0; k < last; k++) d11_buf_printf(b, ".%llu", (unsigned long long)pos[k]);
    if (pos[GW_EV_CENTER]) d11_buf_printf(b, ".c%llu", (unsigned long long)pos[GW_EV_CENTER]);
}

/* Is part k read by this poll: a cell of the routing table, or the center's events. */
static bool part_on(const gw_evpoll *p, int k) { return k < p->ncells || (k == GW_EV_CENTER && p->center); }

/* ---- GET /v1/events ---- */

static void poll_round(gw_evpoll *p);
static void evpoll_fire(d11_loop *l, d11_timer *tm);

static void poll_free(gw_evpoll *p)
{
    for (int k = 0; k < D11_CELLS_MAX; k++) d11_buf_free(&p->part[k].body);
    p->t->nevpoll--;
    free(p);
}

typedef struct ev_line {
    uint64_t    id;
    int64_t     at;
    const char *json;
    size_t      n;
} ev_line;

/* Parse "<id> <at> <json>" at *q (up to end); false at the end or on garbage. */
static bool next_line(const char **q, const char *end, ev_line *out)
{
    const char *s = *q;
    if (s >= end) return false;
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) return false;
    char *e1, *e2;
    out->id = strtoull(s, &e1, 10);
    if (e1 >= nl || *e1 != ' ') return false;
    out->at = strtoll(e1 + 1, &e2, 10);
    if (e2 >= nl || *e2 != ' ') return false;
    out->json = e2 + 1;
    out->n = (size_t)(nl - out->json);
    *q = nl + 1;
    return true;
}

/* Every part answered: 410, wait for more, or merge and answer. */
static void poll_finish(gw_evpoll *p)
{
    gw_thread *t = p->t;
    int si;
    gw_conn *c = gw_slot_deref(t, p->ref, &si);
    if (!c) {
        poll_free(p);
        return;
    }
    int total = 0;
    const char *cur[D11_CELLS_MAX], *end[D11_CELLS_MAX];
    bool empty[D11_CELLS_MAX];
    for (int k = 0; k < D11_CELLS_MAX; k++) {
        gw_evpart *pt = &p->part[k];
        cur[k] = end[k] = pt->body.data;
        empty[k] = true;
        if (!part_on(p, k)) continue;
        if (pt->status == 410) {
            gw_respond_error(t, c, si, 410, "cursor_expired", pt->body.len ? pt->body.data : "cursor expired", "");
            poll_free(p);
            return;
        }
        if (pt->status != 200) continue;
        end[k] = pt->body.data + pt->body.len;
        const char *nl = memchr(cur[k], '\n', pt->body.len);
        unsigned long long head = 0, pruned = 0;
        if (!nl || sscanf(cur[k], "%llu %llu", &head, &pruned) != 2) {
            pt->status = 0;
            continue;
        }
        pt->head = head;
        uint64_t seen = atomic_load_explicit(&t->gw->events.head[p->shadow][k], memory_order_relaxed);
        if (head > seen) atomic_store_explicit(&t->gw->events.head[p->shadow][k], head, memory_order_relaxed);
        cur[k] = nl + 1;
        empty[k] = cur[k] >= end[k];
        if (!empty[k]) total++;
    }
    if (total == 0 && gw_now_ms(t) + D11_EVENTS_POLL_MS <= p->deadline_ms && !t->stopping) {
        d11_timer_start(&t->loop, &p->timer, D11_EVENTS_POLL_MS, 0, evpoll_fire, p);
        return;
    }
    /* k-way merge by (at, cell): each cell's lines are already in id (commit) order */
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"events\":[");
    uint32_t taken = 0;
    ev_line head[D11_CELLS_MAX];
    bool have[D11_CELLS_MAX];
    for (int k = 0; k < D11_CELLS_MAX; k++)
        have[k] = part_on(p, k) && p->part[k].status == 200 && next_line(&cur[k], end[k], &head[k]);
    while (taken < p->limit) {
        int best = -1;
        for (int k = 0; k < D11_CELLS_MAX; k++)
            if (have[k] && (best < 0 || head[k].at < head[best].at)) best = k;
        if (best < 0) break;
        d11_buf_puts(b, taken ? "," : "");
        d11_buf_append(b, head[best].json, head[best].n);
        D11_ASSERT(head[best].id > p->pos[best]);
        p->pos[best] = head[best].id;
        taken++;
        have[best] = next_line(&cur[best], end[best], &head[best]);
    }
    /* a cell with nothing after pos whose head is above it (all pruned): move to the head */
    for (int k = 0; k < D11_CELLS_MAX; k++)
        if (part_on(p, k) && p->part[k].status == 200 && empty[k] && p->part[k].head > p->pos[k])
            p->pos[k] = p->part[k].head;
    d11_buf_puts(b, "],\"next\":\"");
    gw_cursor_encode(b, p->shadow, p->pos, p->ncells);
    d11_buf_puts(b, "\"");
    bool any_down = false;
    for (int k = 0; k < p->ncells; k++)
        if (p->part[k].status != 200) {
            d11_buf_printf(b, "%s%d", any_down ? "," : ",\"unavailable_cells\":[", k);
            any_down = true;
        }
    if (any_down) d11_buf_puts(b, "]");
    if (p->center && p->part[GW_EV_CENTER].status != 200) d11_buf_puts(b, ",\"unavailable_center\":true");
    d11_buf_puts(b, "}");
    gw_respond_json(t, c, si, 200, b->data, b->len);
    poll_free(p);
}

static void evpoll_fire(d11_loop *l, d11_timer *tm)
{
    (void)l;
    poll_round(tm->data);
}

static void part_done(gw_thread *t, const gw_pend *pd, const d11_frame *f, int uperr)
{
    (void)t;
    (void)uperr;
    gw_evpoll *p = pd->ctx;
    gw_evpart *pt = &p->part[pd->arg];
    D11_ASSERT(p->outstanding > 0);
    d11_buf_reset(&pt->body);
    pt->status = 0;
    d11_str code, body;
    if (f && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
        pt->status = (int)f->hdr.status;
        d11_buf_append(&pt->body, body.p, body.n);
    }
    if (--p->outstanding == 0) poll_finish(p);
}

static void poll_round(gw_evpoll *p)
{
    gw_thread *t = p->t;
    D11_ASSERT(p->outstanding == 0);
    int si;
    if (!gw_slot_deref(t, p->ref, &si)) {
        poll_free(p);
        return;
    }
    p->outstanding = 1; /* held while sending: a synchronous completion cannot finish early */
    for (int k = 0; k < D11_CELLS_MAX; k++) {
        if (!part_on(p, k)) continue;
        gw_evpart *pt = &p->part[k];
        pt->status = 0;
        int target = k == GW_EV_CENTER && p->center ? GW_UP_CENTER : gw_up_cell(k);
        if (!gw_up_writable(t, target)) continue;
        gw_pend *pd = gw_pend_alloc(t, GW_PC_REQ, part_done, p, (uint64_t)k);
        if (!pd) continue;
        d11_buf_reset(&t->tmp);
        d11_msg_events_read m = {.shadow = (uint8_t)p->shadow, .after = p->pos[k], .limit = p->limit};
        d11_msg_events_read_enc(&t->tmp, &m);
        pt->status = -1;
        p->outstanding++;
        gw_up_send(t, target, pd, D11_MSG_EVENTS_READ, p->flags, p->trace_id, p->span_id, p->trace_flags, 0);
    }
    if (--p->outstanding == 0) poll_finish(p);
}

/* One query parameter value, percent-decoded into buf; -1 when absent or bad. */
static long query_get(const gw_req *rq, const char *key, char *buf, size_t cap, bool *twice)
{
    const char *q = rq->query;
    size_t qn = rq->query_len, kl = strlen(key), i = 0;
    long found = -1;
    int seen = 0;
    while (i < qn) {
        size_t j = i;
        while (j < qn && q[j] != '&') j++;
        const char *eq = memchr(q + i, '=', j - i);
        if (eq && (size_t)(eq - (q + i)) == kl && !memcmp(q + i, key, kl)) {
            found = gw_pct_decode(eq + 1, (size_t)(q + j - eq - 1), buf, cap);
            if (found < 0) found = -2;
            seen++;
        }
        i = j + 1;
    }
    *twice = seen > 1;
    return found;
}

void gw_h_events(gw_thread *t, gw_req *rq)
{
    char buf[D11_HTTP_URL_BYTES_MAX];
    bool twice;
    uint64_t limit = D11_EVENTS_LIMIT_DEFAULT, wait_ms = 0;
    long n = query_get(rq, "limit", buf, sizeof buf, &twice);
    if (n != -1 && (twice || n < 1 || d11_parse_u64(buf, (size_t)n, D11_EVENTS_LIMIT_MAX, &limit) < 0 || limit < 1)) {
        gw_fail(t, rq, 422, "invalid", "limit: must be an integer in 1..%d (given once)", D11_EVENTS_LIMIT_MAX);
        return;
    }
    n = query_get(rq, "wait_ms", buf, sizeof buf, &twice);
    if (n != -1 && (twice || n < 1 || d11_parse_u64(buf, (size_t)n, D11_EVENTS_WAIT_MS_MAX, &wait_ms) < 0)) {
        gw_fail(t, rq, 422, "invalid", "wait_ms: must be an integer in 0..%d (given once)", D11_EVENTS_WAIT_MS_MAX);
        return;
    }
    int shadow = (rq->flags & D11_WF_STRESS) ? 1 : 0, cshadow = shadow;
    uint64_t pos[D11_CELLS_MAX];
    memset(pos, 0, sizeof pos);
    n = query_get(rq, "after", buf, sizeof buf, &twice);
    if (n != -1 && (twice || n < 0 || gw_cursor_decode(buf, (size_t)n, &cshadow, pos) < 0)) {
        gw_fail(t, rq, 422, "invalid", "after: not a cursor returned by this API (given once)");
        return;
    }
    if (cshadow != shadow) {
        gw_fail(t, rq, 422, "invalid", "after: a cursor of the %s stream (X-D11-Stress must be %d)",
                cshadow ? "stress" : "real", cshadow);
        return;
    }
    if (t->nevpoll >= D11_EVENTS_WAITERS_MAX) {
        gw_fail(t, rq, 503, "unavailable", "too many event reads waiting on this gateway thread");
        return;
    }
    gw_evpoll *p = calloc(1, sizeof *p);
    if (!p) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return;
    }
    t->nevpoll++;
    bool live;
    p->t = t;
    p->ref = gw_slot_ref_of(rq->c, rq->si);
    p->shadow = shadow;
    p->ncells = (int)gw_routing(t, &live)->ncells;
    p->center = !shadow && p->ncells < D11_CELLS_MAX;
    p->limit = (uint32_t)limit;
    p->deadline_ms = gw_now_ms(t) + (int64_t)wait_ms;
    p->flags = rq->flags;
    gw_slot *s = &rq->c->slots[rq->si];
    memcpy(p->trace_id, s->trace_id, 16);
    memcpy(p->span_id, s->span_id, 8);
    p->trace_flags = s->trace_flags;
    memcpy(p->pos, pos, sizeof pos);
    for (int k = 0; k < D11_CELLS_MAX; k++) d11_buf_init(&p->part[k].body, 0);
    poll_round(p);
}

/* ---- named consumers ---- */

static bool consumer_name_ok(const char *s, size_t n)
{
    if (n < 1 || n > D11_CONSUMER_NAME_BYTES_MAX || s[0] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.'))
            return false;
    }
    return true;
}

/* DATA/consumers[/name] into out; 0 or -ENAMETOOLONG. */
static int consumer_path(const struct gw *g, const char *name, char *out, size_t cap)
{
    size_t dn = strlen(g->cfg.data_dir), nn = name ? strlen(name) : 0;
    if (dn + nn + 16 > cap) return -ENAMETOOLONG;
    memcpy(out, g->cfg.data_dir, dn);
    memcpy(out + dn, "/consumers", 11);
    if (name) {
        out[dn + 10] = '/';
        memcpy(out + dn + 11, name, nn + 1);
    }
    return 0;
}

/* The committed cursor of name into cur (cap bytes): its length, 0 when none, < 0 on error. */
static long consumer_read(const struct gw *g, const char *name, char *cur, size_t cap)
{
    char path[1200];
    if (consumer_path(g, name, path, sizeof path) < 0) return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) return errno == ENOENT ? 0 : -errno;
    ssize_t n = read(fd, cur, cap - 1);
    close(fd);
    if (n < 0) return -EIO;
    while (n > 0 && (cur[n - 1] == '\n' || cur[n - 1] == ' ')) n--;
    cur[n] = 0;
    return n;
}

static uint64_t cursor_lag(struct gw *g, int shadow, const uint64_t *pos)
{
    uint64_t lag = 0;
    for (int k = 0; k < D11_CELLS_MAX; k++) {
        uint64_t h = atomic_load_explicit(&g->events.head[shadow][k], memory_order_relaxed);
        if (h > pos[k]) lag += h - pos[k];
    }
    return lag;
}

static void consumer_reply(gw_thread *t, gw_req *rq, const char *name, const char *cur, size_t n, int status)
{
    int shadow = 0;
    uint64_t pos[D11_CELLS_MAX];
    bool ok = gw_cursor_decode(cur, n, &shadow, pos) == 0;
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"name\":");
    d11_buf_json_str(b, name, strlen(name));
    d11_buf_puts(b, ",\"cursor\":");
    d11_buf_json_str(b, cur, n);
    if (ok) d11_buf_printf(b, ",\"lag_events\":%llu", (unsigned long long)cursor_lag(t->gw, shadow, pos));
    d11_buf_puts(b, "}");
    gw_respond_json(t, rq->c, rq->si, status, b->data, b->len);
}

static bool consumer_name(gw_thread *t, gw_req *rq, char *name, size_t cap)
{
    long n = gw_pct_decode(rq->param.p, rq->param.n, name, cap);
    if (n < 0 || !consumer_name_ok(name, (size_t)n)) {
        gw_fail(t, rq, 422, "invalid", "name: 1..%d of [A-Za-z0-9_.-], not starting with '.'",
                D11_CONSUMER_NAME_BYTES_MAX);
        return false;
    }
    name[n] = 0;
    return true;
}

/* GET /v1/consumers/{name} */
void gw_h_consumer_get(gw_thread *t, gw_req *rq)
{
    char name[D11_CONSUMER_NAME_BYTES_MAX * 3 + 1], cur[D11_HTTP_URL_BYTES_MAX];
    if (!consumer_name(t, rq, name, sizeof name)) return;
    long n = consumer_read(t->gw, name, cur, sizeof cur);
    if (n < 0) {
        gw_fail(t, rq, 503, "unavailable", "cannot read the consumer: %s", d11_strerror((int)n));
        return;
    }
    if (n == 0) {
        gw_fail(t, rq, 404, "not_found", "no such consumer");
        return;
    }
    consumer_reply(t, rq, name, cur, (size_t)n, 200);
}

/* PUT /v1/consumers/{name} {"cursor":"..."}: commit (create on first use). */
void gw_h_consumer_put(gw_thread *t, gw_req *rq)
{
    char name[D11_CONSUMER_NAME_BYTES_MAX * 3 + 1], cur[D11_HTTP_URL_BYTES_MAX], path[1200], tmp[1300];
    if (!consumer_name(t, rq, name, sizeof name)) return;
    size_t bn;
    const char *body = gw_body(rq, &bn);
    d11_json *j = &t->json;
    int tok;
    size_t cn = 0;
    if (d11_json_parse(j, body, bn) < 0 || j->tok[0].type != D11_JT_OBJECT) {
        gw_fail(t, rq, 400, "bad_json", "body: must be a JSON object {\"cursor\": \"...\"}");
        return;
    }
    int shadow;
    uint64_t pos[D11_CELLS_MAX];
    if ((tok = d11_json_find(j, 0, "cursor")) < 0 || d11_json_str(j, tok, cur, sizeof cur, &cn) < 0 ||
        gw_cursor_decode(cur, cn, &shadow, pos) < 0) {
        gw_fail(t, rq, 422, "invalid", "cursor: must be a cursor returned by GET /v1/events");
        return;
    }
    cur[cn] = 0;
    if (consumer_path(t->gw, NULL, path, sizeof path) < 0 || (mkdir(path, 0700) < 0 && errno != EEXIST)) {
        gw_fail(t, rq, 503, "unavailable", "cannot create the consumers directory");
        return;
    }
    bool exists = consumer_read(t->gw, name, tmp, sizeof tmp) > 0;
    if (!exists) {
        int count = 0;
        DIR *d = opendir(path);
        for (struct dirent *e; d && (e = readdir(d));) count += e->d_name[0] != '.';
        if (d) closedir(d);
        if (count >= D11_CONSUMERS_MAX) {
            gw_fail(t, rq, 507, "too_many_consumers", "at most %d named consumers", D11_CONSUMERS_MAX);
            return;
        }
    }
    snprintf(tmp, sizeof tmp, "%s/.tmp-%d", path, t->id); /* one writer per thread: no clash */
    consumer_path(t->gw, name, path, sizeof path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int rc = fd == -1 ? -errno : 0;
    if (!rc) {
        cur[cn] = '\n';
        rc = d11_write_all(fd, cur, cn + 1);
        cur[cn] = 0;
        if (!rc && fsync(fd) == -1) rc = -errno;
        close(fd);
    }
    if (!rc && rename(tmp, path) == -1) rc = -errno; /* atomic: readers see the old or the new */
    if (rc) {
        unlink(tmp);
        gw_fail(t, rq, 503, "unavailable", "cannot store the consumer: %s", d11_strerror(rc));
        return;
    }
    consumer_reply(t, rq, name, cur, cn, exists ? 200 : 201);
}

void gw_events_metrics(struct gw *g, gw_events *ev, d11_buf *b)
{
    d11_buf_puts(b, "# HELP d11_events_head Newest committed outbox event id seen per cell and stream.\n"
                    "# TYPE d11_events_head gauge\n");
    for (int sh = 0; sh < 2; sh++)
        for (int k = 0; k < D11_CELLS_MAX; k++) {
            uint64_t h = atomic_load_explicit(&ev->head[sh][k], memory_order_relaxed);
            if (h && k == GW_EV_CENTER && !sh)
                d11_buf_printf(b, "d11_events_head{cell=\"center\",stream=\"real\"} %llu\n", (unsigned long long)h);
            else if (h)
                d11_buf_printf(b, "d11_events_head{cell=\"%d\",stream=\"%s\"} %llu\n", k, sh ? "stress" : "real",
                               (unsigned long long)h);
        }
    d11_buf_puts(b, "# HELP d11_events_consumer_lag Events (event-id distance, an upper bound) between a named"
                    " consumer's committed cursor and the newest events seen.\n"
                    "# TYPE d11_events_consumer_lag gauge\n");
    char dir[1200], cur[D11_HTTP_URL_BYTES_MAX];
    if (consumer_path(g, NULL, dir, sizeof dir) < 0) return;
    DIR *d = opendir(dir);
    if (!d) return;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < D11_CONSUMERS_MAX;) {
        if (!consumer_name_ok(e->d_name, strlen(e->d_name))) continue;
        long cn = consumer_read(g, e->d_name, cur, sizeof cur);
        int shadow;
        uint64_t pos[D11_CELLS_MAX];
        if (cn <= 0 || gw_cursor_decode(cur, (size_t)cn, &shadow, pos) < 0) continue;
        d11_buf_printf(b, "d11_events_consumer_lag{consumer=\"%s\"} %llu\n", e->d_name,
                       (unsigned long long)cursor_lag(g, shadow, pos));
        n++;
    }
    closedir(d);
}
