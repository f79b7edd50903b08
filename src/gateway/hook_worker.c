/*
 * hook_worker.c — the webhook delivery worker: one thread of the gateway process (see
 * webhooks.h for the delivery contract: order, retries, dead letters, at-least-once).
 *
 * Each round: copy the registry under the mutex; for every webhook that is not paused
 * and is due, read a page of events after its cursor through GET /v1/events on the
 * gateway's own listener (blocking loopback client, the admin token of DATA/admin.token),
 * then POST the events one by one in stream order. After a short page (at the head) it
 * sleeps D11_HOOK_IDLE_MS before reading again, so it never spins on a trickle. An event whose type the webhook does
 * not want only moves the cursor. A failed POST schedules the SAME event again after the
 * backoff; nothing later is sent to that webhook meanwhile. The cursor (local, per event:
 * the event's cell position) is written back to the registry and DATA/webhooks at most
 * every D11_HOOK_SAVE_MS and when a page ends.
 *
 * Every POST of an event that carries a trace id is an event.publish span (core/otlp.h,
 * messaging.system "webhook"), exported with the gateway's spans when --otlp-endpoint is
 * set: head-sampled by the trace id at --trace-ratio, a failed POST always kept.
 *
 * Ownership: hw_state (per registry slot) is the worker's alone. Thread: the worker.
 */
#include "webhooks.h"

#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../bench/httpc.h"
#include "../core/fault.h"
#include "events.h"
#include "gw.h"

typedef struct hw_span {
    uint32_t off, len;
} hw_span;

typedef struct hw_state {
    bool      valid;
    uint32_t  id;
    uint64_t  gen;
    gw_hook   cfg;            /* copy of the registry entry */
    d11_httpc cl;             /* to the webhook's URL (kept alive) */
    d11_buf   page;
    hw_span   ev[D11_HOOK_PAGE];
    int       nev, idx;
    char      next[D11_HOOK_CURSOR_BYTES_MAX + 1]; /* the page's "next" */
    uint64_t  pos[D11_CELLS_MAX];                  /* position after the events done */
    uint32_t  attempt;
    int64_t   next_at, saved_at;
    bool      dirty;
    char      last_err[96];
    uint64_t  delivered, retries, dead; /* not yet added to the registry counters */
} hw_state;

typedef struct hw {
    struct gw *g;
    hw_state   st[D11_WEBHOOKS_MAX];
    d11_httpc  self;
    bool       self_ok;
    char       auth[64 + D11_TOKEN_BYTES_MAX];
    uint64_t   rng;
} hw;

static uint64_t rnd(hw *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

bool gw_self_client(struct gw *g, d11_httpc *c, char *auth, size_t cap)
{
    char path[1200], tok[D11_TOKEN_BYTES_MAX + 1], url[300], err[160];
    snprintf(path, sizeof path, "%.1100s/admin.token", g->cfg.data_dir);
    FILE *f = fopen(path, "re");
    if (!f) return false;
    size_t n = fread(tok, 1, sizeof tok - 1, f);
    fclose(f);
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == ' ')) n--;
    tok[n] = 0;
    if (!n) return false;
    const char *lst = g->cfg.listen, *colon = strrchr(lst, ':');
    if (!colon) return false;
    const char *host = lst;
    size_t hn = (size_t)(colon - lst);
    if (hn == 0 || (hn == 7 && !memcmp(lst, "0.0.0.0", 7)) || (hn == 1 && lst[0] == '*')) {
        host = "127.0.0.1";
        hn = 9;
    }
    snprintf(url, sizeof url, "http://%.*s:%s", (int)hn, host, colon + 1);
    d11_url u;
    if (d11_url_parse(url, &u, err, sizeof err) < 0) return false;
    d11_httpc_init(c, &u, D11_HOOK_TIMEOUT_MS);
    snprintf(auth, cap, "Authorization: Bearer %s\r\n", tok);
    return true;
}

/* Our own listener and the admin token; false until both are there. */
static bool self_setup(hw *w)
{
    if (!w->self_ok) w->self_ok = gw_self_client(w->g, &w->self, w->auth, sizeof w->auth);
    return w->self_ok;
}

int gw_split_events(const char *b, size_t n, uint32_t (*spans)[2], int max, char *next, size_t cap)
{
    const char *p = strstr(b, "\"events\":[");
    if (!p) return -1;
    size_t i = (size_t)(p - b) + 10;
    int depth = 0, k = 0;
    bool str = false;
    size_t start = 0;
    for (; i < n; i++) {
        char c = b[i];
        if (str) {
            /* jump to the next quote or backslash (memchr is vectorised; events are mostly strings) */
            const char *q = memchr(b + i, '"', n - i), *bs = memchr(b + i, '\\', q ? (size_t)(q - (b + i)) : n - i);
            if (bs) i = (size_t)(bs - b) + 1; /* skip the escaped character */
            else if (q) i = (size_t)(q - b), str = false;
            else i = n;
            continue;
        }
        if (c == '"') str = true;
        else if (c == '{' && depth++ == 0) start = i;
        else if (c == '}' && --depth == 0) {
            if (k == max) return -1;
            spans[k][0] = (uint32_t)start;
            spans[k][1] = (uint32_t)(i + 1 - start);
            k++;
        } else if (c == ']' && depth == 0) break;
    }
    if (i >= n || d11_json_find_str(b + i, n - i, "next", next, cap) < 0) return -1;
    return k;
}

/* Split the page into s->ev; -1 when malformed. */
static int split_page(hw_state *s)
{
    uint32_t sp[D11_HOOK_PAGE][2];
    int k = gw_split_events(s->page.data, s->page.len, sp, D11_HOOK_PAGE, s->next, sizeof s->next);
    if (k < 0) return -1;
    for (int i = 0; i < k; i++) s->ev[i] = (hw_span){sp[i][0], sp[i][1]};
    s->nev = k;
    s->idx = 0;
    return 0;
}

static bool fetch_page(hw *w, hw_state *s)
{
    if (!self_setup(w)) return false;
    char path[D11_HOOK_CURSOR_BYTES_MAX + 64];
    d11_buf cur;
    d11_buf_init(&cur, 64);
    gw_cursor_encode(&cur, 0, s->pos, D11_CELLS_MAX);
    snprintf(path, sizeof path, "/v1/events?limit=%d&after=%.*s", D11_HOOK_PAGE, (int)cur.len, cur.data);
    d11_buf_free(&cur);
    if (d11_httpc_do(&w->self, "GET", path, w->auth, NULL, 0) < 0 || w->self.status != 200) return false;
    d11_buf_reset(&s->page);
    d11_buf_append(&s->page, w->self.body.data, w->self.body.len);
    d11_buf_puts(&s->page, ""); /* NUL-terminated */
    if (split_page(s) < 0) {
        d11_warn("webhook %u: malformed event page; retrying", s->id);
        s->nev = 0;
        return false;
    }
    if (s->nev == 0) { /* at the head: adopt next (it may jump over pruned ids) */
        int sh;
        gw_cursor_decode(s->next, strlen(s->next), &sh, s->pos);
        return false;
    }
    return true;
}

/* The event's id "C-E" / "C-s-E" moves pos[C] to E. */
static void advance(hw_state *s, const char *ev, size_t n)
{
    char id[48];
    if (d11_json_find_str(ev, n, "id", id, sizeof id) < 0) return;
    unsigned long long c, e;
    if (sscanf(id, "%llu-%llu", &c, &e) == 2 && c < D11_CELLS_MAX) s->pos[c] = e;
    s->dirty = true;
}

static void append_dead(hw *w, hw_state *s, const char *ev, size_t n)
{
    char path[1200];
    if (mkdir(w->g->hooks.dir, 0700) < 0 && errno != EEXIST) d11_warn("webhooks: mkdir %s: %s", w->g->hooks.dir, strerror(errno));
    gw_hook_dead_path(&w->g->hooks, s->id, path, sizeof path);
    FILE *f = fopen(path, "ae");
    if (!f) {
        d11_error("webhook %u: cannot write dead letter %s: %s", s->id, path, strerror(errno));
        return;
    }
    fprintf(f, "{\"event\":%.*s,\"attempts\":%u,\"error\":\"%s\"}\n", (int)n, ev, s->attempt, s->last_err);
    fflush(f);
    fsync(fileno(f));
    fclose(f);
}

/* One POST of event ev; true on 2xx (last_err set otherwise). */
static bool deliver(hw_state *s, const char *ev, size_t n)
{
    if (d11_fault_trip(D11_FP_RELAY_PUBLISH)) return snprintf(s->last_err, sizeof s->last_err, "chaos: relay.publish"), false;
    char id[48] = "", ts[24], sig[80], hdr[256];
    d11_json_find_str(ev, n, "id", id, sizeof id);
    snprintf(ts, sizeof ts, "%lld", (long long)(d11_wall_ms() / 1000));
    gw_hook_sign(s->cfg.secret, ts, ev, n, sig);
    snprintf(hdr, sizeof hdr,
             "Content-Type: application/json\r\nX-D11-Event-Id: %s\r\nX-D11-Timestamp: %s\r\nX-D11-Signature: %s\r\n",
             id, ts, sig);
    int rc = d11_httpc_do(&s->cl, "POST", s->cl.url.base[0] ? "" : "/", hdr, ev, n);
    if (rc < 0) {
        snprintf(s->last_err, sizeof s->last_err, "%s", d11_strerror(rc));
        return false;
    }
    if (s->cl.status >= 200 && s->cl.status < 300) return true;
    snprintf(s->last_err, sizeof s->last_err, "HTTP %d", s->cl.status);
    return false;
}

/* deliver() inside an event.publish span (when tracing is on and the event has a trace). */
static bool deliver_traced(hw *w, hw_state *s, const char *ev, size_t n)
{
    d11_otlp *o = &w->g->otlp;
    d11_span sp;
    char dest[24];
    snprintf(dest, sizeof dest, "webhook-%u", s->id);
    bool traced = o->on && d11_span_open_event(&sp, ev, n, "webhook", dest);
    bool ok = deliver(s, ev, n);
    if (!traced) return ok;
    sp.end_ns = d11_span_now_ns();
    sp.error = !ok;
    d11_span_attr_int(&sp, "http.response.status_code", s->cl.status);
    d11_span_attr_int(&sp, "d11.attempt", (int64_t)s->attempt + 1);
    d11_otlp_end(o, &sp, d11_otlp_head_sampled(o, sp.trace_id));
    return ok;
}

static int wanted(const hw_state *s, const char *ev, size_t n)
{
    if (!s->cfg.types) return 1;
    char type[48];
    if (d11_json_find_str(ev, n, "type", type, sizeof type) < 0) return 1;
    for (int i = 0; i < GW_HOOK_NTYPES; i++)
        if (!strcmp(type, gw_hook_type_names[i])) return (s->cfg.types >> i) & 1;
    return 0;
}

/* Re-deliver the dead letters once each; the failing ones stay. */
static void replay(hw *w, hw_state *s)
{
    char path[1200];
    gw_hook_dead_path(&w->g->hooks, s->id, path, sizeof path);
    FILE *f = fopen(path, "re");
    if (!f) return;
    d11_buf keep;
    d11_buf_init(&keep, 1024);
    static char line[D11_EVENT_JSON_BYTES_MAX + 512];
    while (fgets(line, sizeof line, f)) {
        char *ev = strstr(line, "{\"event\":");
        char *end = strstr(line, ",\"attempts\":");
        if (!ev || !end) continue;
        ev += 9;
        if (deliver_traced(w, s, ev, (size_t)(end - ev))) s->delivered++;
        else d11_buf_puts(&keep, line);
    }
    fclose(f);
    if (d11_write_file_atomic(path, keep.data ? keep.data : "", keep.len, 0600) < 0)
        d11_error("webhook %u: cannot rewrite %s", s->id, path);
    d11_buf_free(&keep);
}

/* Work on one webhook; true when it did something (no idle sleep). */
static bool step(hw *w, hw_state *s, int64_t now)
{
    if (s->cfg.paused || now < s->next_at) return false;
    if (s->idx >= s->nev && !fetch_page(w, s)) return false;
    bool did = false;
    while (s->idx < s->nev) {
        const char *ev = s->page.data + s->ev[s->idx].off;
        size_t n = s->ev[s->idx].len;
        if (wanted(s, ev, n)) {
            if (deliver_traced(w, s, ev, n)) {
                s->delivered++;
            } else if (++s->attempt < s->cfg.max_attempts) {
                s->retries++;
                int64_t back = D11_HOOK_BACKOFF_MS_MIN << (s->attempt - 1 < 20 ? s->attempt - 1 : 20);
                if (back > D11_HOOK_BACKOFF_MS_MAX) back = D11_HOOK_BACKOFF_MS_MAX;
                back = back / 2 + (int64_t)(rnd(w) % (uint64_t)(back + 1)); /* +-50% jitter */
                s->next_at = d11_mono_ms() + back;
                return true;
            } else {
                append_dead(w, s, ev, n);
                s->dead++;
            }
        }
        s->attempt = 0;
        advance(s, ev, n);
        s->idx++;
        did = true;
    }
    if (s->idx >= s->nev) { /* page done: the page's next also covers skipped heads */
        int sh;
        gw_cursor_decode(s->next, strlen(s->next), &sh, s->pos);
        s->dirty = true;
    }
    /* busy (no idle sleep) only while there is a backlog: a short page means we are at the
     * head, and re-reading at once would spin on a handful of new events */
    return did && s->nev == D11_HOOK_PAGE;
}

/* Registry -> worker state (new, changed, deleted webhooks) and worker -> registry
 * (cursor, counters, replay flag), under the mutex. */
static void sync_registry(hw *w, int64_t now, bool force_save)
{
    gw_hooks *hs = &w->g->hooks;
    bool save = false;
    pthread_mutex_lock(&hs->mu);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++) {
        gw_hook *h = &hs->h[i];
        hw_state *s = &w->st[i];
        if (s->valid && (!h->used || h->id != s->id)) { /* deleted */
            d11_httpc_release(&s->cl);
            d11_buf_free(&s->page);
            s->valid = false;
        }
        if (!h->used) continue;
        if (!s->valid) {
            memset(s, 0, sizeof *s);
            s->valid = true;
            s->id = h->id;
            s->gen = h->gen;
            s->cfg = *h;
            d11_url u;
            char err[160];
            if (d11_url_parse(h->url, &u, err, sizeof err) < 0) memset(&u, 0, sizeof u);
            d11_httpc_init(&s->cl, &u, D11_HOOK_TIMEOUT_MS);
            d11_buf_init(&s->page, 4096);
            int sh;
            gw_cursor_decode(h->cursor, strlen(h->cursor), &sh, s->pos);
        }
        if (h->gen != s->gen) { /* paused / resumed */
            s->gen = h->gen;
            s->cfg.paused = h->paused;
        }
        h->delivered += s->delivered;
        h->retries += s->retries;
        h->dead += s->dead;
        s->delivered = s->retries = s->dead = 0;
        if (h->replay) {
            h->replay = false;
            s->cfg.replay = true;
        }
        if (s->dirty && (force_save || now - s->saved_at >= D11_HOOK_SAVE_MS)) {
            d11_buf cur;
            d11_buf_init(&cur, 64);
            gw_cursor_encode(&cur, 0, s->pos, D11_CELLS_MAX);
            snprintf(h->cursor, sizeof h->cursor, "%.*s", (int)cur.len, cur.data);
            d11_buf_free(&cur);
            s->dirty = false;
            s->saved_at = now;
            save = true;
        }
    }
    if (save && gw_hooks_save_locked(hs) < 0) d11_error("webhooks: cannot save %s", hs->path);
    pthread_mutex_unlock(&hs->mu);
}

static void *worker_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-hooks"); /* top -H, perf, /proc: who spends what */
    d11_thread_background(); /* below the order path under CPU saturation (core/util.h) */
    hw *w = arg;
    while (!atomic_load(&w->g->hooks.stop)) {
        int64_t now = d11_mono_ms();
        sync_registry(w, now, false);
        bool busy = false;
        for (int i = 0; i < D11_WEBHOOKS_MAX; i++) {
            hw_state *s = &w->st[i];
            if (!s->valid) continue;
            if (s->cfg.replay) {
                s->cfg.replay = false;
                replay(w, s);
            }
            busy |= step(w, s, now);
        }
        if (!busy) usleep(D11_HOOK_IDLE_MS * 1000);
    }
    sync_registry(w, d11_mono_ms(), true);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++)
        if (w->st[i].valid) {
            d11_httpc_release(&w->st[i].cl);
            d11_buf_free(&w->st[i].page);
        }
    if (w->self_ok) d11_httpc_release(&w->self);
    free(w);
    return NULL;
}

int gw_hooks_start(struct gw *g)
{
    hw *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    w->g = g;
    w->rng = (uint64_t)d11_mono_ns() | 1;
    if (pthread_create(&g->hooks.th, NULL, worker_main, w) != 0) {
        free(w);
        return -EAGAIN;
    }
    g->hooks.started = true;
    return 0;
}

void gw_hooks_stop(struct gw *g)
{
    if (!g->hooks.started) return;
    atomic_store(&g->hooks.stop, 1);
    pthread_join(g->hooks.th, NULL);
    g->hooks.started = false;
}
