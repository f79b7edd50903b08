/*
 * sale.c — history and snapshot of the sale dashboard (see sale.h).
 *
 * A sample holds per-second rates computed from counter deltas between two ticks:
 * orders created and refused out of stock (the cells' d11_cell_orders_total), refusals by
 * rules and 5xx (the gateway's own counters), GMV (total_cents of created orders), and
 * p50 / p99 / p99.9 of POST /v1/orders from the gateway's fine histogram (bucket bounds of
 * core/promtext.h, linear within a bucket). Ownership: struct gw_sale is owned by struct
 * gw; its ring and snapshot are guarded by mu (writer: thread 0; readers: any thread).
 */
#include "sale.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/promtext.h"
#include "gw.h"
#include "request.h"
#include "products.h"

typedef struct sale_sample {
    int64_t t_ms;
    double  created, oos, rejected, e5, gmv_cents, p50_ms, p99_ms, p999_ms;
} sale_sample;

typedef struct sale_totals {
    double   created, oos, rejected, e5, gmv_cents;
    uint64_t lat[D11_HIST_US_N + 1];
} sale_totals;

struct gw_sale {
    pthread_mutex_t mu;
    sale_sample     ring[GW_SALE_HISTORY_N];
    int             head, n;
    sale_totals     prev;
    int64_t         prev_ms;
    bool            have_prev;
    d11_buf         snap; /* JSON members: "totals", "stock", "cells", "center" */
};

int gw_sale_init(struct gw *g)
{
    g->sale = calloc(1, sizeof *g->sale);
    if (!g->sale) return -1;
    pthread_mutex_init(&g->sale->mu, NULL);
    d11_buf_init(&g->sale->snap, 4096);
    d11_buf_puts(&g->sale->snap, "\"totals\":{},\"stock\":[],\"cells\":[],\"center\":{\"up\":false}");
    return 0;
}

void gw_sale_release(struct gw *g)
{
    if (!g->sale) return;
    pthread_mutex_destroy(&g->sale->mu);
    d11_buf_free(&g->sale->snap);
    free(g->sale);
    g->sale = NULL;
}

/* Sum of the samples of `name` whose label text contains `has` (NULL: any). */
static double pv(const char *txt, size_t n, const char *name, const char *has)
{
    double s = 0;
    size_t nl = strlen(name);
    for (const char *l = txt, *e = txt + n; l < e;) {
        const char *nx = memchr(l, '\n', (size_t)(e - l));
        size_t ln = nx ? (size_t)(nx - l) : (size_t)(e - l);
        if (ln > nl && !memcmp(l, name, nl) && (l[nl] == '{' || l[nl] == ' ')) {
            const char *sp = memrchr(l, ' ', ln);
            bool ok = true;
            if (has) {
                char buf[512];
                size_t k = ln < sizeof buf - 1 ? ln : sizeof buf - 1;
                memcpy(buf, l, k);
                buf[k] = 0;
                ok = strstr(buf, has) != NULL;
            }
            if (ok && sp) s += strtod(sp + 1, NULL);
        }
        l = nx ? nx + 1 : e;
    }
    return s;
}

/* The value of label `key` in a sample line into out. */
static bool label_of(const char *l, size_t ln, const char *key, char *out, size_t cap)
{
    char pat[40];
    snprintf(pat, sizeof pat, "%s=\"", key);
    const char *p = memmem(l, ln, pat, strlen(pat));
    if (!p) return false;
    p += strlen(pat);
    const char *q = memchr(p, '"', (size_t)(l + ln - p));
    if (!q || (size_t)(q - p) >= cap) return false;
    memcpy(out, p, (size_t)(q - p));
    out[q - p] = 0;
    return true;
}

static double pct_ms(const uint64_t *d, double p)
{
    uint64_t tot = 0;
    for (int k = 0; k <= D11_HIST_US_N; k++) tot += d[k];
    if (!tot) return 0;
    double want = p * (double)tot, cum = 0;
    for (int k = 0; k <= D11_HIST_US_N; k++) {
        if (cum + (double)d[k] >= want && d[k]) {
            double lo = k ? (double)d11_hist_us_bounds[k - 1] : 0;
            double hi = k < D11_HIST_US_N ? (double)d11_hist_us_bounds[k] : lo * 2;
            return (lo + (hi - lo) * (want - cum) / (double)d[k]) / 1000.0;
        }
        cum += (double)d[k];
    }
    return (double)d11_hist_us_bounds[D11_HIST_US_N - 1] / 1000.0;
}

void gw_sale_ingest(gw_thread *t, const char *const *texts, const size_t *lens, const bool *ok, int nparts)
{
    struct gw *g = t->gw;
    struct gw_sale *sa = g->sale;
    sale_totals cur;
    memset(&cur, 0, sizeof cur);
    for (int k = 1; k < nparts; k++)
        if (ok[k]) {
            cur.created += pv(texts[k], lens[k], "d11_cell_orders_total", "outcome=\"created\"");
            cur.oos += pv(texts[k], lens[k], "d11_cell_orders_total", "code=\"out_of_stock\"");
        }
    for (int i = 0; i < g->nthreads; i++) {
        const gw_metrics *m = &g->threads[i].m;
        for (int r = 0; r < g->nroutes; r++)
            for (int s = 0; s < GW_STATUS_N; s++)
                if (gw_status_codes[s] >= 500) cur.e5 += (double)atomic_load_explicit(&m->req[r][s], memory_order_relaxed);
        for (int k = 0; k < GW_RULE_N; k++)
            for (int res = 0; res < D11_RES_COUNT; res++)
                cur.rejected += (double)atomic_load_explicit(&m->rejections[k][res], memory_order_relaxed);
        cur.gmv_cents += (double)atomic_load_explicit(&m->gmv_cents, memory_order_relaxed);
        for (int k = 0; k <= D11_HIST_US_N; k++) cur.lat[k] += atomic_load_explicit(&m->order_lat[k], memory_order_relaxed);
    }
    int64_t now = d11_wall_ms();
    /* the snapshot */
    d11_buf snap;
    d11_buf_init(&snap, 4096);
    d11_buf_printf(&snap, "\"totals\":{\"created\":%.0f,\"out_of_stock\":%.0f,\"rejected\":%.0f,\"errors_5xx\":%.0f,"
                          "\"gmv_cents\":%.0f}",
                   cur.created, cur.oos, cur.rejected, cur.e5, cur.gmv_cents);
    d11_buf_puts(&snap, ",\"stock\":[");
    int ns = 0;
    if (nparts > 0 && ok[0]) {
        const char *txt = texts[0], *e = txt + lens[0];
        static const char fam[] = "d11_stock_total_units{";
        for (const char *l = txt; l < e && ns < GW_SALE_SKUS_MAX;) {
            const char *nx = memchr(l, '\n', (size_t)(e - l));
            size_t ln = nx ? (size_t)(nx - l) : (size_t)(e - l);
            char sku[80], has[100];
            if (ln > sizeof fam && !memcmp(l, fam, sizeof fam - 1) && label_of(l, ln, "sku", sku, sizeof sku)) {
                snprintf(has, sizeof has, "sku=\"%s\"", sku);
                double total = pv(txt, lens[0], "d11_stock_total_units", has);
                double sold = pv(txt, lens[0], "d11_stock_sold_units", has);
                d11_buf_printf(&snap, "%s{\"sku\":\"%s\",\"total\":%.0f,\"sold\":%.0f,\"available\":%.0f}", ns ? "," : "",
                               sku, total, sold, total - sold);
                ns++;
            }
            l = nx ? nx + 1 : e;
        }
    }
    d11_buf_printf(&snap, "],\"center\":{\"up\":%s},\"cells\":[", nparts > 0 && ok[0] ? "true" : "false");
    for (int k = 1; k < nparts; k++) {
        const char *txt = ok[k] ? texts[k] : "";
        size_t n = ok[k] ? lens[k] : 0;
        double cs = pv(txt, n, "d11_cell_commit_duration_seconds_sum", NULL),
               cc = pv(txt, n, "d11_cell_commit_duration_seconds_count", NULL),
               bs = pv(txt, n, "d11_cell_batch_ops_sum", NULL), bc = pv(txt, n, "d11_cell_batch_ops_count", NULL);
        d11_buf_printf(&snap,
                       "%s{\"part\":\"cell-%d\",\"up\":%s,\"commit_ms_mean\":%.3f,\"batch_ops_mean\":%.2f,\"commits\":%.0f,"
                       "\"restarts\":%.0f,\"parked\":%.0f,\"orders\":%.0f,\"center_up\":%s}",
                       k > 1 ? "," : "", k - 1, ok[k] ? "true" : "false", cc > 0 ? cs / cc * 1000 : 0, bc > 0 ? bs / bc : 0,
                       cc, pv(txt, n, "d11_process_restarts_total", NULL), pv(txt, n, "d11_cell_parked_orders", NULL),
                       pv(txt, n, "d11_cell_orders", NULL), pv(txt, n, "d11_cell_center_up", NULL) > 0 ? "true" : "false");
    }
    d11_buf_puts(&snap, "]");
    pthread_mutex_lock(&sa->mu);
    if (sa->have_prev && now > sa->prev_ms) {
        double dt = (double)(now - sa->prev_ms) / 1000.0;
        sale_sample *s = &sa->ring[(sa->head + sa->n) % GW_SALE_HISTORY_N];
        if (sa->n == GW_SALE_HISTORY_N) sa->head = (sa->head + 1) % GW_SALE_HISTORY_N;
        else sa->n++;
        uint64_t d[D11_HIST_US_N + 1];
        for (int k = 0; k <= D11_HIST_US_N; k++) d[k] = cur.lat[k] - sa->prev.lat[k];
        *s = (sale_sample){.t_ms = now,
                           .created = fmax(0, cur.created - sa->prev.created) / dt,
                           .oos = fmax(0, cur.oos - sa->prev.oos) / dt,
                           .rejected = fmax(0, cur.rejected - sa->prev.rejected) / dt,
                           .e5 = fmax(0, cur.e5 - sa->prev.e5) / dt,
                           .gmv_cents = fmax(0, cur.gmv_cents - sa->prev.gmv_cents) / dt,
                           .p50_ms = pct_ms(d, 0.5),
                           .p99_ms = pct_ms(d, 0.99),
                           .p999_ms = pct_ms(d, 0.999)};
    }
    sa->prev = cur;
    sa->prev_ms = now;
    sa->have_prev = true;
    d11_buf_reset(&sa->snap);
    d11_buf_append(&sa->snap, snap.data, snap.len);
    pthread_mutex_unlock(&sa->mu);
    d11_buf_free(&snap);
}

void gw_h_sale_data(gw_thread *t, gw_req *rq)
{
    struct gw *g = t->gw;
    struct gw_sale *sa = g->sale;
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_printf(b, "{\"now_ms\":%lld,\"history\":[", (long long)d11_wall_ms());
    pthread_mutex_lock(&sa->mu);
    for (int i = 0; i < sa->n; i++) {
        const sale_sample *s = &sa->ring[(sa->head + i) % GW_SALE_HISTORY_N];
        d11_buf_printf(b,
                       "%s{\"t\":%lld,\"created\":%.1f,\"out_of_stock\":%.1f,\"rejected\":%.1f,\"errors_5xx\":%.1f,"
                       "\"gmv_cents\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f}",
                       i ? "," : "", (long long)s->t_ms, s->created, s->oos, s->rejected, s->e5, s->gmv_cents, s->p50_ms,
                       s->p99_ms, s->p999_ms);
    }
    d11_buf_puts(b, "],");
    d11_buf_append(b, sa->snap.data, sa->snap.len);
    pthread_mutex_unlock(&sa->mu);
    d11_buf_puts(b, ",\"refusals\":[");
    static const char *const rule_names[GW_RULE_N] = {"flow", "degrade", "risk"};
    bool first = true;
    for (int k = 0; k < GW_RULE_N; k++)
        for (int res = 0; res < D11_RES_COUNT; res++) {
            uint64_t v = 0;
            for (int i = 0; i < g->nthreads; i++)
                v += atomic_load_explicit(&g->threads[i].m.rejections[k][res], memory_order_relaxed);
            d11_buf_printf(b, "%s{\"rule\":\"%s\",\"resource\":\"%s\",\"total\":%llu}", first ? "" : ",", rule_names[k],
                           d11_res_names[res], (unsigned long long)v);
            first = false;
        }
    d11_buf_puts(b, "],\"upstreams\":[");
    first = true;
    for (int u = 0; u < GW_UP_N; u++) {
        if (!atomic_load(&t->m.up_wanted[u])) continue;
        static const char *const brk_names[] = {"closed", "open", "half-open"}; /* breaker.h states */
        int bs = gw_breaker_state(&g->brk[u]);
        d11_buf_printf(b, "%s{\"target\":\"%s\",\"connected\":%s,\"breaker\":\"%s\"}", first ? "" : ",",
                       t->ups.up[u].name, atomic_load(&t->m.up_connected[u]) ? "true" : "false",
                       bs >= 0 && bs < 3 ? brk_names[bs] : "unknown");
        first = false;
    }
    d11_buf_puts(b, "],\"rules\":");
    uint64_t gen;
    d11_rules_store_get(&g->rules, &t->doc, &gen);
    d11_rules_render(&t->doc, b);
    d11_buf_puts(b, ",\"hot_skus\":"); /* products.c: the top-K SKUs by product reads */
    gw_products_hot_json(g, b);
    d11_buf_puts(b, "}");
    gw_respond(t, rq->c, rq->si, 200, "application/json", "Cache-Control: no-store\r\n", b->data, b->len);
}
