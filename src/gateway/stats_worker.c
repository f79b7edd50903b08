/*
 * stats_worker.c — the live-sale-numbers aggregator thread (see stats.h for the design,
 * stats/agg.h for windows and lateness, stats/db.h for the exactly-once commit).
 *
 * Loop: hold flock(DATA/stats.lock) or wait; open DATA/stats.db and read the stored
 * state (cursor, watermark); then repeatedly read a page (<= D11_STATS_PAGE events) after
 * the stored cursor, enrich created / paid events with their order's lines and the
 * lines' categories, fold the page into a batch and commit batch + the page's `next`
 * cursor in one transaction. Any failure before the commit (a cell down, a 503, a
 * refused request) throws the batch away and reads the same page again later: the
 * stored state never moves without its sums. Every D11_STATS_BOARD_MS it rebuilds the
 * dashboard snapshot (top SKUs with their stock from the catalog).
 *
 * Test hook: D11_STATS_CRASH_ONCE=PATH:N makes the process _exit(137) inside its N-th
 * non-empty commit, just before COMMIT, unless PATH exists (it is created first, so the
 * restarted gateway goes on). tests/integration/test_stats.py uses it to prove that a
 * crash between folding and committing neither loses nor double-counts a page.
 *
 * Ownership: everything in `sw` is this thread's. Thread: its own.
 */
#include "stats.h"

#include <pthread.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include "../bench/httpc.h"
#include "../stats/agg.h"
#include "../stats/db.h"
#include "events.h"
#include "gw.h"

typedef struct cat_entry {
    bool valid;
    char sku[D11_SKU_BYTES_MAX + 1];
    char cat[D11_CATEGORY_BYTES_MAX + 1];
} cat_entry;

#define D11_STATS_ORDER_CACHE 16384 /* created orders' lines kept for their paid event */
#define D11_STATS_OC_LINES    4     /* orders with more lines are read again when paid */

typedef struct oc_line {
    uint32_t cat_slot, qty;
    uint64_t price, sku_hash;
} oc_line;

typedef struct oc_entry {
    uint64_t oid; /* 0 = empty */
    uint8_t  n;
    oc_line  l[D11_STATS_OC_LINES];
} oc_entry;

typedef struct sw {
    struct gw      *g;
    gw_stats       *s;
    int             lockfd;
    d11_stats_db   *db;
    d11_stats_state st;
    bool            st_ok;
    d11_httpc       self;
    bool            self_ok;
    char            auth[64 + D11_TOKEN_BYTES_MAX];
    char            hdrs[64 + D11_TOKEN_BYTES_MAX + 96]; /* auth + this page's unsampled traceparent */
    d11_buf         page;     /* copy of the events page (self.body is reused by fetches) */
    uint32_t        spans[D11_STATS_PAGE][2];
    char            next[D11_STATS_CURSOR_BYTES_MAX + 1];
    d11_stats_event ev[D11_STATS_PAGE];
    d11_stats_batch batch;
    d11_json       *json;
    cat_entry      *cats;     /* [D11_STATS_CAT_CACHE] */
    oc_entry       *oc;       /* [D11_STATS_ORDER_CACHE] */
    int64_t         board_at;
    /* test hook */
    char            crash_path[1024];
    long            crash_nth, commits;
    /* why the current page failed; logged at the start of a failure streak and every
     * D11_STATS_LOG_EVERY retries, so a lasting failure does not flood the log */
    char            why[200];
    long            streak;
} sw;

#define D11_STATS_LOG_EVERY 300 /* ~1 min of retries */

static int failed(sw *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failed(sw *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof w->why, fmt, ap);
    va_end(ap);
    return -1;
}

static void nap(gw_stats *s, int ms)
{
    for (int i = 0; i < ms / 10 && !atomic_load(&s->stop); i++) usleep(10000);
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Percent-encode a path segment (SKUs are printable; anything but unreserved is %XX). */
static void seg_encode(const char *in, char *out, size_t cap)
{
    static const char hx[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < cap; p++) {
        unsigned char c = *p;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hx[c >> 4];
            out[o++] = hx[c & 15];
        }
    }
    out[o] = 0;
}

/* GET path on our own listener; 0 with self.body holding a 200 answer, else -1. */
static int self_get(sw *w, const char *path)
{
    atomic_fetch_add(&w->s->fetches, 1);
    int rc = d11_httpc_do(&w->self, "GET", path, w->hdrs, NULL, 0);
    if (rc < 0) return failed(w, "GET %.100s: %s", path, d11_strerror(rc));
    return w->self.status == 200 ? 0 : failed(w, "GET %.100s: HTTP %d", path, w->self.status);
}

/* The category of sku (catalog, cached) into cat; the cache slot, or -1 (not readable now). */
static int category_of(sw *w, const char *sku, char *cat, size_t cap)
{
    int slot = (int)(d11_hash64(sku, strlen(sku), 7) % D11_STATS_CAT_CACHE);
    cat_entry *e = &w->cats[slot];
    if (!e->valid || strcmp(e->sku, sku) != 0) {
        char enc[D11_SKU_BYTES_MAX * 3 + 1], path[sizeof enc + 32], got[D11_CATEGORY_BYTES_MAX + 1];
        seg_encode(sku, enc, sizeof enc);
        snprintf(path, sizeof path, "/admin/stats/products/%s", enc);
        if (self_get(w, path) < 0) return -1;
        d11_json *j = w->json;
        int t;
        size_t n = 0;
        if (d11_json_parse(j, w->self.body.data, w->self.body.len) < 0 || (t = d11_json_find(j, 0, "category")) < 0 ||
            d11_json_str(j, t, got, sizeof got - 1, &n) < 0)
            return failed(w, "%s: no category in the answer", path);
        got[n] = 0;
        memcpy(e->cat, got, n + 1); /* the entry changes only once the answer is whole */
        snprintf(e->sku, sizeof e->sku, "%s", sku);
        e->valid = true;
    }
    snprintf(cat, cap, "%s", e->cat);
    return slot;
}

/* The lines of a created order, kept for its order.paid event (usually in the next pages):
 * direct-mapped by order id; a line names its SKU by category-cache slot + SKU hash, so a
 * hit is used only while that slot still holds the same SKU. Orders of more than
 * D11_STATS_OC_LINES lines are not kept. A miss is only a read more (GET /admin/stats/orders). */
static uint32_t oc_slot(uint64_t oid)
{
    /* hashed: an order id's low bits are its slot and a per-millisecond sequence */
    return (uint32_t)(d11_hash64(&oid, sizeof oid, 3) % D11_STATS_ORDER_CACHE);
}

static void oc_put(sw *w, uint64_t oid, const d11_stats_event *e, const int *slots)
{
    if (e->nlines > D11_STATS_OC_LINES) return;
    oc_entry *o = &w->oc[oc_slot(oid)];
    o->oid = oid;
    o->n = (uint8_t)e->nlines;
    for (int i = 0; i < e->nlines; i++)
        o->l[i] = (oc_line){(uint32_t)slots[i], e->lines[i].qty, e->lines[i].price_cents,
                            d11_hash64(e->lines[i].sku, strlen(e->lines[i].sku), 11)};
}

static bool oc_get(sw *w, uint64_t oid, d11_stats_event *e)
{
    const oc_entry *o = &w->oc[oc_slot(oid)];
    if (o->oid != oid || o->n == 0) return false;
    for (int i = 0; i < o->n; i++) {
        const cat_entry *c = &w->cats[o->l[i].cat_slot];
        if (!c->valid || d11_hash64(c->sku, strlen(c->sku), 11) != o->l[i].sku_hash) return false;
        d11_stats_line *l = &e->lines[i];
        snprintf(l->sku, sizeof l->sku, "%s", c->sku);
        snprintf(l->cat, sizeof l->cat, "%s", c->cat);
        l->qty = o->l[i].qty;
        l->price_cents = o->l[i].price;
    }
    e->nlines = o->n;
    atomic_fetch_add(&w->s->cache_hits, 1);
    return true;
}

/* The lines of order `oid` into e; 0 or -1. */
static int order_lines(sw *w, const char *oid, d11_stats_event *e)
{
    uint64_t id = 0;
    bool num = d11_parse_u64(oid, strlen(oid), UINT64_MAX, &id) == 0 && id != 0;
    if (num && e->type == D11_EV_PAID && oc_get(w, id, e)) return 0;
    char path[96];
    snprintf(path, sizeof path, "/admin/stats/orders/%.40s", oid);
    if (self_get(w, path) < 0) return -1;
    d11_json *j = w->json;
    int items;
    if (d11_json_parse(j, w->self.body.data, w->self.body.len) < 0 || (items = d11_json_find(j, 0, "items")) < 0 ||
        j->tok[items].type != D11_JT_ARRAY || j->tok[items].size > D11_ORDER_ITEMS_MAX)
        return failed(w, "%s: no items in the answer", path);
    e->nlines = j->tok[items].size;
    for (int i = 0; i < e->nlines; i++) {
        int it = d11_json_elem(j, items, i), t;
        d11_stats_line *l = &e->lines[i];
        uint64_t q = 0, p = 0;
        size_t n = 0;
        if ((t = d11_json_find(j, it, "sku")) < 0 || d11_json_str(j, t, l->sku, sizeof l->sku - 1, &n) < 0 ||
            d11_json_u64(j, d11_json_find(j, it, "quantity"), 1, UINT32_MAX, &q) < 0 ||
            d11_json_u64(j, d11_json_find(j, it, "price_cents"), 0, UINT64_MAX / 2, &p) < 0)
            return failed(w, "%s: malformed item %d", path, i);
        l->sku[n] = 0;
        l->qty = (uint32_t)q;
        l->price_cents = p;
    }
    /* categories after the order document is no longer needed (the json is reused) */
    int slots[D11_ORDER_ITEMS_MAX];
    for (int i = 0; i < e->nlines; i++)
        if ((slots[i] = category_of(w, e->lines[i].sku, e->lines[i].cat, sizeof e->lines[i].cat)) < 0) return -1;
    if (num && e->type == D11_EV_CREATED) oc_put(w, id, e, slots);
    return 0;
}

/* Parse event text into e (lines not yet known); 1 = an order event, 0 = skip, -1 bad. */
static int parse_event(sw *w, const char *txt, size_t n, d11_stats_event *e, char *oid, size_t oidcap)
{
    d11_json *j = w->json;
    char type[48];
    size_t tn = 0, on = 0;
    uint64_t at = 0, total = 0;
    int t, data;
    if (d11_json_parse(j, txt, n) < 0 || (t = d11_json_find(j, 0, "type")) < 0 ||
        d11_json_str(j, t, type, sizeof type - 1, &tn) < 0)
        return -1;
    type[tn] = 0;
    e->type = d11_stats_type(type);
    if (e->type < 0) return 0; /* a type this version does not aggregate */
    if (d11_json_u64(j, d11_json_find(j, 0, "at"), 0, INT64_MAX, &at) < 0 || (t = d11_json_find(j, 0, "order_id")) < 0 ||
        d11_json_str(j, t, oid, oidcap - 1, &on) < 0 || (data = d11_json_find(j, 0, "data")) < 0 ||
        d11_json_u64(j, d11_json_find(j, data, "total_cents"), 0, UINT64_MAX / 2, &total) < 0)
        return -1;
    oid[on] = 0;
    e->at = (int64_t)at;
    e->total_cents = total;
    e->nlines = 0;
    return 1;
}

static void crash_hook(void *ctx)
{
    sw *w = ctx;
    if (!w->crash_nth || ++w->commits != w->crash_nth || access(w->crash_path, F_OK) == 0) return;
    int fd = open(w->crash_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    d11_warn("stats: D11_STATS_CRASH_ONCE: exiting inside commit %ld (test hook)", w->commits);
    _exit(137);
}

static void put_consumer(sw *w)
{
    d11_buf b;
    d11_buf_init(&b, 64 + strlen(w->st.cursor));
    d11_buf_puts(&b, "{\"cursor\":");
    d11_buf_json_str(&b, w->st.cursor, strlen(w->st.cursor));
    d11_buf_puts(&b, "}");
    char hdrs[sizeof w->hdrs + 48];
    snprintf(hdrs, sizeof hdrs, "%sContent-Type: application/json\r\n", w->hdrs);
    (void)d11_httpc_do(&w->self, "PUT", "/v1/consumers/" D11_STATS_CONSUMER, hdrs, b.data, b.len);
    d11_buf_free(&b);
}

/* A new trace for the requests that follow, NOT sampled (flags 00): the aggregator's
 * loopback reads (about one per order) are not exported as spans unless they fail or
 * are slow (the gateway's tail keeping still applies). */
static void new_trace(sw *w)
{
    uint8_t id[24];
    char hex[49];
    d11_random_bytes(id, sizeof id);
    id[0] |= 1; /* never the all-zero (invalid) trace id */
    id[16] |= 1;
    d11_hex(id, sizeof id, hex);
    snprintf(w->hdrs, sizeof w->hdrs, "%sTraceparent: 00-%.32s-%.16s-00\r\n", w->auth, hex, hex + 32);
}

/* One page: 1 = a full page was folded (more may wait), 0 = at the head, -1 = failed. */
static int page_once(sw *w)
{
    gw_stats *s = w->s;
    new_trace(w);
    char q[D11_STATS_CURSOR_BYTES_MAX + 96];
    snprintf(q, sizeof q, "/v1/events?limit=%d&wait_ms=%d%s%s", D11_STATS_PAGE, D11_STATS_WAIT_MS,
             w->st.cursor[0] ? "&after=" : "", w->st.cursor);
    int hrc = d11_httpc_do(&w->self, "GET", q, w->hdrs, NULL, 0);
    if (hrc < 0) return failed(w, "GET /v1/events: %s", d11_strerror(hrc));
    if (w->self.status == 410) {
        d11_error("stats: the stored cursor points before pruned events (410): aggregates stay as they are; "
                  "see docs/stats.md");
        nap(s, 5000);
        return -1;
    }
    if (w->self.status != 200) return failed(w, "GET /v1/events: HTTP %d", w->self.status);
    d11_buf_reset(&w->page);
    d11_buf_append(&w->page, w->self.body.data, w->self.body.len);
    d11_buf_append(&w->page, "", 1);
    int k = gw_split_events(w->page.data, w->page.len - 1, w->spans, D11_STATS_PAGE, w->next, sizeof w->next);
    if (k < 0) return failed(w, "GET /v1/events: malformed page");
    if (k == 0 && !strcmp(w->next, w->st.cursor)) return 0;
    int64_t cpu0 = thread_cpu_ns();
    d11_stats_batch_reset(&w->batch, w->st.wm);
    for (int i = 0; i < k; i++) {
        d11_stats_event *e = &w->ev[i];
        char oid[48];
        int rc = parse_event(w, w->page.data + w->spans[i][0], w->spans[i][1], e, oid, sizeof oid);
        if (rc < 0) return failed(w, "malformed event in the stream: %.120s", w->page.data + w->spans[i][0]);
        if (rc == 0) continue;
        if ((e->type == D11_EV_CREATED || e->type == D11_EV_PAID) && order_lines(w, oid, e) < 0) return -1;
        d11_stats_add(&w->batch, e);
    }
    int rc = d11_stats_db_commit(w->db, w->st.cursor, w->next, &w->batch, w->crash_nth && k ? crash_hook : NULL, w);
    if (rc == D11_STATS_ECONFLICT) {
        atomic_fetch_add(&s->conflicts, 1);
        d11_warn("stats: the stored cursor moved under us (another aggregator?): reloading");
        w->st_ok = false;
        return -1;
    }
    if (rc < 0) return failed(w, "the commit to DATA/stats.db failed");
    snprintf(w->st.cursor, sizeof w->st.cursor, "%s", w->next);
    w->st.wm = w->batch.wm;
    atomic_store(&s->wm, w->st.wm);
    w->st.events += (uint64_t)w->batch.nevents;
    atomic_fetch_add(&s->events, (uint64_t)w->batch.nevents); /* folded: order events only */
    atomic_fetch_add(&s->pages, 1);
    atomic_fetch_add(&s->cpu_ns, (uint64_t)(thread_cpu_ns() - cpu0));
    put_consumer(w);
    return k == D11_STATS_PAGE;
}

/* The dashboard snapshot: day-to-date, the last 60 one-second windows, the top SKUs with
 * their stock from the catalog. */
static void board_refresh(sw *w)
{
    new_trace(w);
    d11_buf b;
    d11_buf_init(&b, 8192);
    d11_buf_puts(&b, "{\"day\":");
    d11_stats_query qd = {.kind = D11_WIN_DAY, .limit = 1, .top = D11_STATS_BOARD_SKUS};
    d11_stats_query qs = {.kind = D11_WIN_1S, .limit = 60};
    char keys[D11_STATS_BOARD_SKUS][D11_STATS_KEY_BYTES_MAX + 1];
    int n = d11_stats_db_top_skus(w->db, d11_stats_win_start(D11_WIN_DAY, w->st.wm), D11_STATS_BOARD_SKUS, keys);
    if (d11_stats_db_render(w->db, &qd, &b) < 0 || (d11_buf_puts(&b, ",\"sec\":"), d11_stats_db_render(w->db, &qs, &b)) < 0) {
        d11_buf_free(&b);
        return;
    }
    d11_buf_puts(&b, ",\"stock\":[");
    for (int i = 0, first = 1; i < n; i++) {
        char enc[D11_SKU_BYTES_MAX * 3 + 1], path[sizeof enc + 32];
        seg_encode(keys[i], enc, sizeof enc);
        snprintf(path, sizeof path, "/admin/stats/products/%s", enc);
        if (self_get(w, path) < 0) continue;
        d11_json *j = w->json;
        uint64_t tot = 0, sold = 0, av = 0;
        if (d11_json_parse(j, w->self.body.data, w->self.body.len) < 0 ||
            d11_json_u64(j, d11_json_find(j, 0, "stock_total"), 0, UINT64_MAX, &tot) < 0 ||
            d11_json_u64(j, d11_json_find(j, 0, "stock_sold"), 0, UINT64_MAX, &sold) < 0 ||
            d11_json_u64(j, d11_json_find(j, 0, "stock_available"), 0, UINT64_MAX, &av) < 0)
            continue;
        d11_buf_puts(&b, first ? "{\"sku\":" : ",{\"sku\":");
        first = 0;
        d11_buf_json_str(&b, keys[i], strlen(keys[i]));
        d11_buf_printf(&b, ",\"stock_total\":%llu,\"stock_sold\":%llu,\"stock_available\":%llu}", (unsigned long long)tot,
                       (unsigned long long)sold, (unsigned long long)av);
    }
    d11_buf_printf(&b, "],\"now_ms\":%lld}", (long long)d11_wall_ms());
    pthread_mutex_lock(&w->s->mu);
    d11_buf_reset(&w->s->board);
    d11_buf_append(&w->s->board, b.data, b.len);
    pthread_mutex_unlock(&w->s->mu);
    d11_buf_free(&b);
}

/* Become the owner: the lock, the database, our own listener. false = not yet. */
static bool ready(sw *w)
{
    gw_stats *s = w->s;
    if (w->lockfd < 0) {
        char path[1300];
        snprintf(path, sizeof path, "%.1100s/stats.lock", w->g->cfg.data_dir);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) return false;
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            close(fd);
            return false;
        }
        w->lockfd = fd;
        atomic_store(&s->owner, 1);
        d11_info("stats: this gateway runs the aggregator (holds DATA/stats.lock)");
    }
    if (!w->db && d11_stats_db_open(s->path, false, &w->db) < 0) return false;
    if (!w->st_ok) {
        if (d11_stats_db_state(w->db, &w->st) < 0) return false;
        w->st_ok = true;
        atomic_store(&s->wm, w->st.wm);
    }
    if (!w->self_ok) w->self_ok = gw_self_client(w->g, &w->self, w->auth, sizeof w->auth);
    return w->self_ok;
}

static void *stats_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-stats"); /* top -H, perf, /proc: who spends what */
    d11_thread_background(); /* below the order path under CPU saturation (core/util.h) */
    sw *w = arg;
    gw_stats *s = w->s;
    while (!atomic_load(&s->stop)) {
        if (!ready(w)) {
            nap(s, w->lockfd < 0 ? D11_STATS_LOCK_RETRY_MS : D11_STATS_RETRY_MS);
            continue;
        }
        w->why[0] = 0;
        int rc = page_once(w);
        if (rc < 0) {
            atomic_fetch_add(&s->failures, 1);
            if (w->why[0] && w->streak++ % D11_STATS_LOG_EVERY == 0)
                d11_warn("stats: page not committed, read again in %d ms (%ld in a row): %s", D11_STATS_RETRY_MS,
                         w->streak, w->why);
            nap(s, D11_STATS_RETRY_MS);
        } else if (w->streak) {
            d11_info("stats: pages commit again after %ld failed attempts", w->streak);
            w->streak = 0;
        }
        int64_t now = d11_mono_ms();
        if (now - w->board_at >= D11_STATS_BOARD_MS) {
            w->board_at = now;
            board_refresh(w);
        }
    }
    if (w->self_ok) d11_httpc_release(&w->self);
    d11_stats_db_close(w->db);
    if (w->lockfd >= 0) close(w->lockfd);
    d11_stats_batch_free(&w->batch);
    d11_buf_free(&w->page);
    free(w->json);
    free(w->cats);
    free(w->oc);
    free(w);
    return NULL;
}

int gw_stats_start(struct gw *g)
{
    gw_stats *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    pthread_mutex_init(&s->mu, NULL);
    d11_buf_init(&s->board, 256);
    snprintf(s->path, sizeof s->path, "%.1100s/stats.db", g->cfg.data_dir);
    s->nrd = g->nthreads;
    s->rd = calloc((size_t)(s->nrd > 0 ? s->nrd : 1), sizeof *s->rd);
    sw *w = calloc(1, sizeof *w);
    if (!s->rd || !w || !(w->json = malloc(sizeof *w->json)) || !(w->cats = calloc(D11_STATS_CAT_CACHE, sizeof *w->cats)) ||
        !(w->oc = calloc(D11_STATS_ORDER_CACHE, sizeof *w->oc)) ||
        d11_stats_batch_init(&w->batch) < 0) {
        if (w) {
            free(w->json);
            free(w->cats);
            free(w->oc);
            free(w);
        }
        free(s->rd);
        free(s);
        return -ENOMEM;
    }
    w->g = g;
    w->s = s;
    w->lockfd = -1;
    d11_buf_init(&w->page, 1 << 16);
    const char *hook = getenv("D11_STATS_CRASH_ONCE");
    const char *colon = hook ? strrchr(hook, ':') : NULL;
    if (colon && colon > hook && (size_t)(colon - hook) < sizeof w->crash_path) {
        memcpy(w->crash_path, hook, (size_t)(colon - hook));
        w->crash_nth = strtol(colon + 1, NULL, 10);
    }
    g->stats = s;
    if (pthread_create(&s->th, NULL, stats_main, w) != 0) {
        d11_stats_batch_free(&w->batch);
        d11_buf_free(&w->page);
        free(w->json);
        free(w->cats);
        free(w->oc);
        free(w);
        return -EAGAIN;
    }
    s->started = true;
    return 0;
}

void gw_stats_stop(struct gw *g)
{
    gw_stats *s = g->stats;
    if (!s) return;
    if (s->started) {
        atomic_store(&s->stop, 1);
        pthread_join(s->th, NULL);
        s->started = false;
    }
}
