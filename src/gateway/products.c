/*
 * products.c — the product handlers (see products.h). Thread: the connection's thread.
 *
 * The listing cache: per thread (no lock), D11_GW_CATALOG_CACHE_N pages keyed by the
 * encoded PRODUCT_LIST payload (and the stress flag), each served for
 * D11_GW_CATALOG_CACHE_MS after the center answered it, so a storm of shoppers reloading
 * the catalog costs the center one request per thread per second per distinct query.
 * Stock figures in a cached page are at most that old. A miss reserves the oldest entry
 * (fill_ref = the client slot); the reply fills it only if it is still reserved by that
 * request. Any center product event also drops every cached page (pc_list_gen).
 *
 * The product cache (L1, GET /v1/products/{sku}, real stream): ONE per process, shared by
 * the threads (gw_events.pc, a mutex per entry held for a copy of at most GW_PCACHE_BODY_MAX
 * bytes), direct-mapped by SKU hash, GW_PCACHE_N entries. Shared so that reads are monotonic:
 * a fill replaces the entry only if it was sent after the entry's own fill (stamp), and
 * every connection reads the same entry, so no client sees stock figures go back in time
 * by landing on another thread. Each entry is served while ALL of:
 *   - younger than the TTL (D11_GW_PRODUCT_TTL_MS; env D11_GW_PRODUCT_TTL_MS overrides):
 *     bounds the stock_sold / stock_available figures of changes this gateway did not
 *     make (expiry, other gateways): an order this gateway placed or cancelled drops its
 *     SKUs' entries at once (gw_products_saw_order);
 *   - its bucket's generation (gw_events.pc_gen) is the one read when its request was
 *     SENT: a center product event (product.created / product.restocked) bumps it;
 *   - the process's last answered tail of the center's event stream was sent at most
 *     D11_GW_PRODUCT_TAIL_MS ago. The tail is one EVENTS_READ to the center (after =
 *     pc_center_pos), at most one in flight per process, started by a product read that
 *     finds the last one older than half that bound (so under steady reads freshness
 *     never lapses); when it has lapsed, reads go to the center until a tail answers.
 * So a hit at time T reflects every product event committed before T - TAIL_MS: product
 * metadata and stock_total are never staler than the event stream by more than
 * D11_GW_PRODUCT_TAIL_MS (docs/events.md, "Product cache").
 * Hot keys: every product read counts its SKU in the thread's space-saving summary
 * (topk.h), behind a mutex shared only with a /metrics or /dashboard/data scrape.
 */
#include "products.h"

#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "topk.h"
#include "../bench/httpc.h" /* d11_json_find_str */

#include <stdio.h>

#define D11_GW_PRODUCT_TTL_MS    100  /* stock figures served from the cache at most this old (about
                                          * the cells' report interval: the view stays live) */
#define D11_GW_PRODUCT_TAIL_MS   20   /* a hit needs a center-event tail sent at most this long ago */
#define D11_GW_PRODUCT_TAIL_PAGE 256  /* center events applied per tail read */



#define CAT_KEY_BYTES_MAX (16 + D11_CATEGORY_BYTES_MAX + D11_PRODUCT_QUERY_BYTES_MAX + D11_SKU_BYTES_MAX)

typedef struct gw_catentry {
    uint8_t  key[CAT_KEY_BYTES_MAX];
    size_t   keyn;
    int64_t  until_ms; /* served while now < until_ms; 0 = empty or filling */
    int64_t  used_ms;
    uint64_t fill_ref; /* slot ref of the request filling it, 0 = none */
    d11_buf  body;
} gw_catentry;

struct gw_catcache {
    gw_catentry e[D11_GW_CATALOG_CACHE_N];
    uint32_t    list_gen[D11_GW_CATALOG_CACHE_N]; /* pc_list_gen when the entry's request was sent */
    uint64_t    hits, misses;
    int64_t     ttl_ms;
    gw_hot_box *hot; /* &gw_events.hot[thread id], NULL for ids >= GW_HOT_THREADS_MAX */
};

void gw_catcache_free(gw_thread *t)
{
    if (!t->catcache) return;
    for (int i = 0; i < D11_GW_CATALOG_CACHE_N; i++) d11_buf_free(&t->catcache->e[i].body);
    /* the hot-SKU box stays in struct gw: a scrape may still read it */
    free(t->catcache);
    t->catcache = NULL;
}

static struct gw_catcache *catcache(gw_thread *t)
{
    if (t->catcache) return t->catcache;
    struct gw_catcache *cc = calloc(1, sizeof *cc);
    if (!cc) return NULL;
    cc->ttl_ms = D11_GW_PRODUCT_TTL_MS;
    const char *env = getenv("D11_GW_PRODUCT_TTL_MS"); /* tests: a long TTL isolates the invalidation */
    uint64_t v;
    if (env && d11_parse_u64(env, strlen(env), 86400000, &v) == 0) cc->ttl_ms = (int64_t)v;
    if (t->id < GW_HOT_THREADS_MAX) {
        cc->hot = &t->gw->events.hot[t->id];
        pthread_mutex_lock(&cc->hot->mu);
        gw_topk_init(&cc->hot->k, gw_now_ms(t));
        cc->hot->used = true;
        pthread_mutex_unlock(&cc->hot->mu);
    }
    t->catcache = cc;
    return cc;
}

static void list_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    gw_catentry *e = p->ctx;
    if (e->fill_ref == p->arg) {
        e->fill_ref = 0;
        d11_str code, body;
        if (f && f->hdr.status == 200 && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
            d11_buf_reset(&e->body);
            d11_buf_append(&e->body, body.p, body.n);
            e->until_ms = gw_now_ms(t) + D11_GW_CATALOG_CACHE_MS;
        }
    }
    gw_forward_done(t, p, f, uperr);
}

/* One query parameter value, '+' as space, percent-decoded into buf; -1 when malformed or
 * longer than cap. */
static long qvalue(const char *v, size_t vn, char *buf, size_t cap)
{
    long n = gw_pct_decode(v, vn, buf, cap);
    if (n < 0) return -1;
    for (long i = 0; i < n; i++)
        if (buf[i] == '+' && memchr(v, '+', vn)) buf[i] = ' ';
    return n;
}

void gw_h_product_list(gw_thread *t, gw_req *rq)
{
    d11_msg_product_list m = {.limit = D11_LIST_LIMIT_DEFAULT};
    char cat[D11_CATEGORY_BYTES_MAX], q[D11_PRODUCT_QUERY_BYTES_MAX], after[D11_SKU_BYTES_MAX], num[16];
    const char *qs = rq->query;
    size_t qn = rq->query_len;
    for (size_t i = 0; i < qn;) {
        size_t j = i;
        while (j < qn && qs[j] != '&') j++;
        const char *kv = qs + i;
        size_t kvn = j - i;
        const char *eq = memchr(kv, '=', kvn);
        size_t kn = eq ? (size_t)(eq - kv) : kvn;
        const char *v = eq ? eq + 1 : kv + kvn;
        size_t vn = kvn - kn - (eq ? 1 : 0);
        long n;
        if (kn == 8 && !memcmp(kv, "category", 8)) {
            if ((n = qvalue(v, vn, cat, sizeof cat)) < 0 || !d11_utf8_valid(cat, (size_t)n)) {
                gw_fail(t, rq, 422, "invalid", "category: at most %d bytes of UTF-8", D11_CATEGORY_BYTES_MAX);
                return;
            }
            m.category = (d11_str){cat, (size_t)n};
        } else if (kn == 1 && kv[0] == 'q') {
            if ((n = qvalue(v, vn, q, sizeof q)) < 0 || !d11_utf8_valid(q, (size_t)n)) {
                gw_fail(t, rq, 422, "invalid", "q: at most %d bytes of UTF-8", D11_PRODUCT_QUERY_BYTES_MAX);
                return;
            }
            m.q = (d11_str){q, (size_t)n};
        } else if (kn == 5 && !memcmp(kv, "after", 5)) {
            if ((n = qvalue(v, vn, after, sizeof after)) < 0 || (n > 0 && !d11_sku_valid(after, (size_t)n))) {
                gw_fail(t, rq, 422, "invalid", "after: must be a SKU");
                return;
            }
            m.after = (d11_str){after, (size_t)n};
        } else if (kn == 5 && !memcmp(kv, "limit", 5)) {
            uint64_t x;
            n = gw_pct_decode(v, vn, num, sizeof num);
            if (n < 1 || d11_parse_u64(num, (size_t)n, D11_LIST_LIMIT_MAX, &x) < 0 || x < 1) {
                gw_fail(t, rq, 422, "invalid", "limit: must be an integer in 1..%d", D11_LIST_LIMIT_MAX);
                return;
            }
            m.limit = (uint32_t)x;
        }
        i = j + 1;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_product_list_enc(&t->tmp, &m);
    if (!catcache(t)) {
        gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_LIST);
        return;
    }
    struct gw_catcache *cc = t->catcache;
    uint8_t key[CAT_KEY_BYTES_MAX];
    size_t keyn = t->tmp.len + 1;
    D11_ASSERT(keyn <= sizeof key);
    key[0] = (rq->flags & D11_WF_STRESS) ? 1 : 0;
    memcpy(key + 1, t->tmp.data, t->tmp.len);
    int64_t now = gw_now_ms(t);
    gw_catentry *victim = &cc->e[0];
    for (int i = 0; i < D11_GW_CATALOG_CACHE_N; i++) {
        gw_catentry *e = &cc->e[i];
        if (e->keyn == keyn && !memcmp(e->key, key, keyn) && now < e->until_ms &&
            cc->list_gen[i] == atomic_load_explicit(&t->gw->events.pc_list_gen, memory_order_acquire)) {
            cc->hits++;
            e->used_ms = now;
            gw_respond_json(t, rq->c, rq->si, 200, e->body.data, e->body.len);
            return;
        }
        if (e->used_ms < victim->used_ms) victim = e;
    }
    cc->misses++;
    memcpy(victim->key, key, keyn);
    victim->keyn = keyn;
    victim->until_ms = 0;
    victim->used_ms = now;
    victim->fill_ref = gw_slot_ref_of(rq->c, rq->si);
    cc->list_gen[victim - cc->e] = atomic_load_explicit(&t->gw->events.pc_list_gen, memory_order_acquire);
    gw_forward_with(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_LIST, list_done, victim);
}

void gw_h_product_create(gw_thread *t, gw_req *rq)
{
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_scratch scr = gw_body_scratch(t);
    d11_gw_err e;
    d11_msg_product m;
    if (d11_body_product(&t->json, body, blen, &scr, &m, &e)) {
        gw_fail_body(t, rq, &e);
        return;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_product_enc(&t->tmp, &m);
    gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_CREATE);
}

/* A degrade switch scoped to this SKU (rules "degrade_schedule"); false after 503. */
static bool sku_live(gw_thread *t, gw_req *rq, d11_str sku)
{
    int res = rq->route->res;
    if (!t->rules.nsched || res == D11_RES_NONE || !d11_rules_degraded_sku(&t->rules, res, sku.p, sku.n, d11_wall_ms()))
        return true;
    gw_ctr_add(&t->m.rejections[GW_RULE_DEGRADE][res], 1);
    gw_fail(t, rq, 503, "degraded", "%s is degraded for SKU %.*s (switched off by the operator)", d11_res_names[res],
            (int)sku.n, sku.p);
    return false;
}

/* ---- the product cache (L1) ---- */

/* Every thread's hot-SKU summary, copied under its mutex, merged. */
static int hot_merge(struct gw *g, gw_topk_entry *top, uint64_t *hits, uint64_t *misses)
{
    int nt = g->nthreads < GW_HOT_THREADS_MAX ? g->nthreads : GW_HOT_THREADS_MAX;
    gw_topk *parts = calloc((size_t)(nt > 0 ? nt : 1), sizeof *parts);
    if (!parts) return 0;
    int np = 0;
    for (int i = 0; i < nt; i++) {
        gw_hot_box *h = &g->events.hot[i];
        pthread_mutex_lock(&h->mu);
        bool used = h->used;
        if (used) parts[np] = h->k;
        pthread_mutex_unlock(&h->mu);
        if (!used) continue;
        *hits += parts[np].hits;
        *misses += parts[np].misses;
        np++;
    }
    int n = gw_topk_merge(parts, np, top, GW_HOT_SKU_K);
    free(parts);
    return n;
}

static uint64_t sku_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static void bump(gw_events *ev, const char *sku, size_t n)
{
    atomic_fetch_add_explicit(&ev->pc_gen[sku_hash(sku, n) % GW_PC_GEN_N], 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&ev->pc_list_gen, 1, memory_order_acq_rel);
    atomic_fetch_add_explicit(&ev->pc_invalidations, 1, memory_order_relaxed);
}

/* An order this gateway placed or cancelled (2xx reply body, the order's JSON) changes the
 * stock figures of its SKUs now: drop their cached products (every thread's: the bucket
 * generation is shared), so this gateway's own readers never see a product older than an
 * order it acknowledged. Changes made elsewhere (expiry, another gateway) stay bounded by
 * the TTL. */
void gw_products_saw_order(gw_thread *t, const char *body, size_t n)
{
    static const char key[] = "\"sku\":\"";
    gw_events *ev = &t->gw->events;
    const char *q = body, *end = body + n;
    while (q < end) {
        const char *k = memmem(q, (size_t)(end - q), key, sizeof key - 1);
        if (!k) break;
        k += sizeof key - 1;
        const char *ke = memchr(k, '"', (size_t)(end - k));
        if (!ke) break;
        /* only the product's bucket: the listing pages keep their own 1-s bound (dropping
         * them on every order would empty the listing cache exactly during a sale) */
        if (ke > k)
            atomic_fetch_add_explicit(&ev->pc_gen[sku_hash(k, (size_t)(ke - k)) % GW_PC_GEN_N], 1, memory_order_acq_rel);
        q = ke + 1;
    }
}

/* The tail's answer: bump the bucket of every product event's SKU, then advance. */
static void tail_done(gw_thread *t, const gw_pend *pd, const d11_frame *f, int uperr)
{
    (void)uperr;
    gw_events *ev = &t->gw->events;
    d11_str code, body;
    if (f && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
        if (f->hdr.status == 200) {
            const char *q = body.p, *end = body.p + body.n;
            const char *nl = memchr(q, '\n', body.n);
            unsigned long long head = 0, pruned = 0;
            uint64_t pos = atomic_load(&ev->pc_center_pos), last = pos;
            bool ok = nl && sscanf(q, "%llu %llu", &head, &pruned) == 2;
            for (q = nl ? nl + 1 : end; ok && q < end;) {
                const char *e = memchr(q, '\n', (size_t)(end - q));
                if (!e) break;
                unsigned long long id = strtoull(q, NULL, 10);
                static const char key[] = "\"sku\":\"";
                const char *k = memmem(q, (size_t)(e - q), key, sizeof key - 1);
                if (k) {
                    k += sizeof key - 1;
                    const char *ke = memchr(k, '"', (size_t)(e - k));
                    if (ke && ke > k) bump(ev, k, (size_t)(ke - k));
                }
                if (id > last) last = id;
                q = e + 1;
            }
            if (ok && last == pos && head > pos) last = head; /* nothing kept after pos (pruned) */
            if (ok) {
                atomic_store(&ev->pc_center_pos, last);
                atomic_store(&ev->pc_tail_ok_ms, (int64_t)pd->arg); /* the send time */
            }
        } else if (f->hdr.status == 410) { /* events lost to retention: drop everything */
            for (int i = 0; i < GW_PC_GEN_N; i++) atomic_fetch_add(&ev->pc_gen[i], 1);
            atomic_fetch_add(&ev->pc_list_gen, 1);
            atomic_store(&ev->pc_center_pos, 0);
        }
    }
    atomic_store(&ev->pc_tail_busy, 0);
}

/* Start a tail read of the center's events when the last one is too old; true when a
 * hit may be served now. */
static bool tail_fresh(gw_thread *t)
{
    gw_events *ev = &t->gw->events;
    int64_t now = gw_now_ms(t), age = now - atomic_load(&ev->pc_tail_ok_ms);
    bool fresh = age <= D11_GW_PRODUCT_TAIL_MS;
    if (age < D11_GW_PRODUCT_TAIL_MS / 2) return fresh; /* renewed at half the bound: no gap under load */
    bool live;
    int expect = 0;
    if (gw_routing(t, &live)->ncells >= D11_CELLS_MAX || !gw_up_writable(t, GW_UP_CENTER) ||
        !atomic_compare_exchange_strong(&ev->pc_tail_busy, &expect, 1))
        return fresh;
    gw_pend *pd = gw_pend_alloc(t, GW_PC_PROBE, tail_done, NULL, (uint64_t)now);
    if (!pd) {
        atomic_store(&ev->pc_tail_busy, 0);
        return fresh;
    }
    d11_msg_events_read m = {.shadow = 0, .after = atomic_load(&ev->pc_center_pos), .limit = D11_GW_PRODUCT_TAIL_PAGE};
    d11_buf_reset(&t->tmp);
    d11_msg_events_read_enc(&t->tmp, &m);
    gw_up_send(t, GW_UP_CENTER, pd, D11_MSG_EVENTS_READ, 0, NULL, NULL, 0, D11_GW_PROBE_TIMEOUT_MS);
    return fresh;
}

/* The fill's answer: store it unless a product event came after its send (gen moved) or a
 * later-sent fill is already there (stamp, serial arithmetic), so the shared entry only
 * ever moves forward and no reader on any thread sees older figures after newer ones.
 * ctx packs the bucket generation and the send stamp read when the request was sent. */
static void product_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    gw_events *ev = &t->gw->events;
    uint64_t packed = (uint64_t)(uintptr_t)p->ctx;
    uint32_t gen = (uint32_t)(packed >> 32), stamp = (uint32_t)packed;
    d11_str code, body;
    char sku[D11_SKU_BYTES_MAX + 1];
    if (f && f->hdr.status == 200 && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0 &&
        body.n <= GW_PCACHE_BODY_MAX && d11_json_find_str(body.p, body.n, "sku", sku, sizeof sku) > 0) {
        size_t n = strlen(sku);
        uint64_t h = sku_hash(sku, n);
        gw_pshared *e = &ev->pc[h % GW_PCACHE_N];
        pthread_mutex_lock(&e->mu);
        bool same = e->skun == n && !memcmp(e->sku, sku, n);
        bool newer_there = same && e->until_ms && (int32_t)(e->stamp - stamp) > 0;
        if (!newer_there && atomic_load_explicit(&ev->pc_gen[h % GW_PC_GEN_N], memory_order_acquire) == gen) {
            memcpy(e->sku, sku, n + 1);
            e->skun = (uint8_t)n;
            e->gen = gen;
            e->stamp = stamp;
            e->len = (uint32_t)body.n;
            memcpy(e->body, body.p, body.n);
            e->until_ms = gw_now_ms(t) + t->catcache->ttl_ms;
        }
        pthread_mutex_unlock(&e->mu);
    }
    gw_forward_done(t, p, f, uperr);
}

/* Serve GET /v1/products/{sku} from the cache (true), or forward it and fill (true), or
 * false: the caller forwards it uncached. */
static bool pcache_get(gw_thread *t, gw_req *rq, d11_str sku)
{
    struct gw_catcache *cc = catcache(t);
    if (!cc || cc->ttl_ms <= 0) return false; /* D11_GW_PRODUCT_TTL_MS=0: the cache is off */
    gw_events *ev = &t->gw->events;
    int64_t now = gw_now_ms(t);
    bool fresh = tail_fresh(t); /* may use t->tmp: before the request is encoded */
    uint64_t h = sku_hash(sku.p, sku.n);
    uint32_t gen = atomic_load_explicit(&ev->pc_gen[h % GW_PC_GEN_N], memory_order_acquire);
    gw_pshared *e = &ev->pc[h % GW_PCACHE_N];
    bool valid = false, hit = false;
    pthread_mutex_lock(&e->mu);
    valid = e->skun == sku.n && !memcmp(e->sku, sku.p, sku.n) && now < e->until_ms && e->gen == gen;
    hit = fresh && valid;
    if (hit) {
        d11_buf_reset(&t->tmp);
        d11_buf_append(&t->tmp, e->body, e->len);
    }
    pthread_mutex_unlock(&e->mu);
    if (cc->hot) {
        pthread_mutex_lock(&cc->hot->mu);
        gw_topk_add(&cc->hot->k, sku.p, sku.n, 1, now);
        if (hit) cc->hot->k.hits++;
        else cc->hot->k.misses++;
        pthread_mutex_unlock(&cc->hot->mu);
    }
    if (hit) {
        gw_respond_json(t, rq->c, rq->si, 200, t->tmp.data, t->tmp.len);
        return true;
    }
    /* a miss, or only the tail lapsed: read through AND refill, so that the entry never
     * lags an answer this gateway already gave (no read goes back in time) */
    /* read before the request is sent: a later event makes the fill stale */
    uint32_t stamp = (uint32_t)atomic_fetch_add_explicit(&ev->pc_stamp, 1, memory_order_relaxed);
    d11_msg_sku_qty m = {.sku = sku};
    d11_buf_reset(&t->tmp);
    d11_msg_sku_qty_enc(&t->tmp, &m, false);
    gw_forward_with(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_GET, product_done,
                    (void *)(uintptr_t)((uint64_t)gen << 32 | stamp));
    return true;
}

void gw_products_hot_json(struct gw *g, d11_buf *b)
{
    gw_topk_entry top[GW_HOT_SKU_K];
    uint64_t hits = 0, misses = 0;
    int n = hot_merge(g, top, &hits, &misses);
    d11_buf_printf(b, "{\"k\":%d,\"half_life_ms\":%d,\"cache_hits\":%llu,\"cache_misses\":%llu,\"skus\":[",
                   GW_HOT_SKU_K, GW_TOPK_HALF_LIFE_MS, (unsigned long long)hits, (unsigned long long)misses);
    for (int i = 0; i < n; i++) {
        d11_buf_puts(b, i ? "," : "");
        d11_buf_puts(b, "{\"sku\":");
        d11_buf_json_str(b, top[i].sku, top[i].n);
        d11_buf_printf(b, ",\"requests\":%llu,\"error\":%llu}", (unsigned long long)top[i].count,
                       (unsigned long long)top[i].err);
    }
    d11_buf_puts(b, "]}");
}

void gw_products_metrics(struct gw *g, d11_buf *b)
{
    gw_topk_entry top[GW_HOT_SKU_K];
    uint64_t hits = 0, misses = 0;
    int n = hot_merge(g, top, &hits, &misses);
    d11_buf_printf(b, "# HELP d11_gateway_hot_sku_requests Product reads of the top %d SKUs (space-saving summary per"
                      " thread, merged; counts halve every %d ms: rate/s ~ value * 0.069).\n"
                      "# TYPE d11_gateway_hot_sku_requests gauge\n", GW_HOT_SKU_K, GW_TOPK_HALF_LIFE_MS);
    for (int i = 0; i < n; i++)
        d11_buf_printf(b, "d11_gateway_hot_sku_requests{sku=\"%s\"} %llu\n", top[i].sku,
                       (unsigned long long)top[i].count);
    d11_buf_printf(b, "# HELP d11_gateway_product_cache_total GET /v1/products/{sku} answered from the gateway's"
                      " cache (hit) or by the center (miss).\n# TYPE d11_gateway_product_cache_total counter\n"
                      "d11_gateway_product_cache_total{result=\"hit\"} %llu\n"
                      "d11_gateway_product_cache_total{result=\"miss\"} %llu\n",
                   (unsigned long long)hits, (unsigned long long)misses);
    d11_buf_printf(b, "# HELP d11_gateway_product_invalidations_total Center product events applied to the"
                      " gateway's product and listing caches.\n# TYPE d11_gateway_product_invalidations_total counter\n"
                      "d11_gateway_product_invalidations_total %llu\n",
                   (unsigned long long)atomic_load(&g->events.pc_invalidations));
}

void gw_h_product_get(gw_thread *t, gw_req *rq)
{
    D11_ASSERT(rq->route->msg == D11_MSG_PRODUCT_GET || rq->route->msg == D11_MSG_LEDGER_GET);
    char skubuf[D11_SKU_BYTES_MAX + 1];
    d11_str sku;
    if (!gw_param_sku(rq->param, skubuf, sizeof skubuf, &sku)) {
        gw_fail(t, rq, 404, "not_found", "no such product");
        return;
    }
    if (!sku_live(t, rq, sku)) return;
    if (rq->route->msg == D11_MSG_PRODUCT_GET && !(rq->flags & D11_WF_STRESS) && pcache_get(t, rq, sku)) return;
    d11_msg_sku_qty m = {.sku = sku};
    d11_buf_reset(&t->tmp);
    d11_msg_sku_qty_enc(&t->tmp, &m, false);
    gw_forward(t, rq, GW_UP_CENTER, rq->route->msg);
}

void gw_h_product_restock(gw_thread *t, gw_req *rq)
{
    char skubuf[D11_SKU_BYTES_MAX + 1];
    d11_str sku;
    if (!gw_param_sku(rq->param, skubuf, sizeof skubuf, &sku)) {
        gw_fail(t, rq, 404, "not_found", "no such product");
        return;
    }
    if (!sku_live(t, rq, sku)) return;
    d11_msg_sku_qty m = {.sku = sku};
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_gw_err e;
    if (d11_body_restock(&t->json, body, blen, &m.qty, &e)) {
        gw_fail_body(t, rq, &e);
        return;
    }
    d11_buf_reset(&t->tmp);
    d11_msg_sku_qty_enc(&t->tmp, &m, true);
    gw_forward(t, rq, GW_UP_CENTER, D11_MSG_PRODUCT_RESTOCK);
}
