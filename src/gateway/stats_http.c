/*
 * stats_http.c — GET /v1/stats (scope read or events; docs/stats.md) and GET
 * /dashboard/stats (no token: the big-screen snapshot the aggregator refreshes every
 * second). /v1/stats reads DATA/stats.db through this gateway thread's own read-only
 * connection (opened on first use, WAL: never blocks the aggregator's commits); one read
 * transaction per answer, so windows, day-to-date and cursor are one snapshot. The read
 * is a few indexed SQLite queries on the event-loop thread (bounded by `limit` and
 * D11_STATS_TOP_MAX rows). Thread: the connection's; rd[t->id] is that thread's only.
 */
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../stats/agg.h"
#include "../stats/db.h"
#include "gw.h"
#include "request.h"

#define STATS_LIMIT_DEFAULT 60
#define STATS_TOP_DEFAULT   20

/* One query parameter, percent-decoded and NUL-terminated; -1 absent, -2 bad or twice. */
static long param(const gw_req *rq, const char *key, char *buf, size_t cap)
{
    const char *q = rq->query;
    size_t qn = rq->query_len, kl = strlen(key), i = 0;
    long found = -1;
    while (i < qn) {
        size_t j = i;
        while (j < qn && q[j] != '&') j++;
        const char *eq = memchr(q + i, '=', j - i);
        if (eq && (size_t)(eq - (q + i)) == kl && !memcmp(q + i, key, kl)) {
            if (found != -1) return -2;
            found = gw_pct_decode(eq + 1, (size_t)(q + j - eq - 1), buf, cap - 1);
            if (found < 0) return -2;
            buf[found] = 0;
        }
        i = j + 1;
    }
    return found;
}

static bool int_param(gw_thread *t, gw_req *rq, const char *key, uint64_t lo, uint64_t hi, uint64_t *v)
{
    char buf[32];
    long n = param(rq, key, buf, sizeof buf);
    if (n == -1) return true;
    if (n < 1 || d11_parse_u64(buf, (size_t)n, hi, v) < 0 || *v < lo) {
        gw_fail(t, rq, 422, "invalid", "%s: must be an integer in %llu..%llu (given once)", key, (unsigned long long)lo,
                (unsigned long long)hi);
        return false;
    }
    return true;
}

void gw_h_stats(gw_thread *t, gw_req *rq)
{
    gw_stats *s = t->gw->stats;
    char win[8], sku[D11_SKU_BYTES_MAX + 2];
    d11_stats_query q = {.kind = D11_WIN_DAY, .limit = STATS_LIMIT_DEFAULT, .top = STATS_TOP_DEFAULT};
    long n = param(rq, "window", win, sizeof win);
    if (n != -1) {
        q.kind = -1;
        for (int k = 0; k < D11_WIN_KINDS && n >= 0; k++)
            if (!strcmp(win, d11_stats_win_name[k])) q.kind = k;
        if (q.kind < 0) {
            gw_fail(t, rq, 422, "invalid", "window: must be 1s, 1m or day (given once)");
            return;
        }
    }
    n = param(rq, "sku", sku, sizeof sku);
    if (n != -1) {
        if (n < 1 || n > D11_SKU_BYTES_MAX) {
            gw_fail(t, rq, 422, "invalid", "sku: 1..%d bytes (given once)", D11_SKU_BYTES_MAX);
            return;
        }
        q.sku = sku;
    }
    uint64_t since = 0, limit = STATS_LIMIT_DEFAULT, top = STATS_TOP_DEFAULT;
    if (!int_param(t, rq, "since", 0, (uint64_t)INT64_MAX, &since) ||
        !int_param(t, rq, "limit", 1, D11_STATS_LIMIT_MAX, &limit) || !int_param(t, rq, "top", 0, D11_STATS_TOP_MAX, &top))
        return;
    q.since_ms = (int64_t)since;
    q.limit = (int)limit;
    q.top = (int)top;
    D11_ASSERT(s && t->id >= 0 && t->id < s->nrd);
    if (!s->rd[t->id] && (access(s->path, F_OK) < 0 || d11_stats_db_open(s->path, true, &s->rd[t->id]) < 0)) {
        gw_fail(t, rq, 503, "unavailable", "live sale numbers are not available yet (DATA/stats.db)");
        return;
    }
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    if (d11_stats_db_render(s->rd[t->id], &q, b) < 0) {
        d11_stats_db_close(s->rd[t->id]); /* reopened by the next request */
        s->rd[t->id] = NULL;
        gw_fail(t, rq, 503, "unavailable", "cannot read DATA/stats.db");
        return;
    }
    D11_ASSERT(b->len > 0 && b->data[b->len - 1] == '}');
    b->len--;
    d11_buf_printf(b,
                   ",\"aggregator\":{\"here\":%s,\"events_folded\":%llu,\"pages\":%llu,\"cpu_ms\":%.3f,"
                   "\"reads\":%llu,\"order_cache_hits\":%llu}}",
                   atomic_load(&s->owner) ? "true" : "false", (unsigned long long)atomic_load(&s->events),
                   (unsigned long long)atomic_load(&s->pages), (double)atomic_load(&s->cpu_ns) / 1e6,
                   (unsigned long long)atomic_load(&s->fetches), (unsigned long long)atomic_load(&s->cache_hits));
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_h_stats_board(gw_thread *t, gw_req *rq)
{
    gw_stats *s = t->gw->stats;
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    pthread_mutex_lock(&s->mu);
    d11_buf_append(b, s->board.data, s->board.len);
    pthread_mutex_unlock(&s->mu);
    if (!b->len) d11_buf_puts(b, "{\"day\":null,\"sec\":null,\"stock\":[]}");
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_stats_release(struct gw *g)
{
    gw_stats *s = g->stats;
    if (!s) return;
    for (int i = 0; i < s->nrd; i++) d11_stats_db_close(s->rd[i]);
    free(s->rd);
    pthread_mutex_destroy(&s->mu);
    d11_buf_free(&s->board);
    free(s);
    g->stats = NULL;
}

void gw_stats_metrics(struct gw *g, d11_buf *b)
{
    gw_stats *s = g->stats;
    if (!s) return;
    int64_t wm = atomic_load(&s->wm);
    d11_buf_printf(b,
                   "# HELP d11_stats_aggregator_owner Whether this gateway runs the live-sale-numbers aggregator (holds DATA/stats.lock).\n"
                   "# TYPE d11_stats_aggregator_owner gauge\nd11_stats_aggregator_owner %d\n"
                   "# HELP d11_stats_events_total Events folded into DATA/stats.db by this process (committed).\n"
                   "# TYPE d11_stats_events_total counter\nd11_stats_events_total %llu\n"
                   "# HELP d11_stats_pages_total Pages committed (one SQLite transaction each).\n"
                   "# TYPE d11_stats_pages_total counter\nd11_stats_pages_total %llu\n"
                   "# HELP d11_stats_page_retries_total Pages dropped before their commit and read again (a read failed).\n"
                   "# TYPE d11_stats_page_retries_total counter\nd11_stats_page_retries_total %llu\n"
                   "# HELP d11_stats_commit_conflicts_total Commits refused because the stored cursor had moved.\n"
                   "# TYPE d11_stats_commit_conflicts_total counter\nd11_stats_commit_conflicts_total %llu\n"
                   "# HELP d11_stats_cpu_seconds_total Aggregator thread CPU over fold, order reads and commit.\n"
                   "# TYPE d11_stats_cpu_seconds_total counter\nd11_stats_cpu_seconds_total %.6f\n",
                   atomic_load(&s->owner), (unsigned long long)atomic_load(&s->events),
                   (unsigned long long)atomic_load(&s->pages), (unsigned long long)atomic_load(&s->failures),
                   (unsigned long long)atomic_load(&s->conflicts), (double)atomic_load(&s->cpu_ns) / 1e9);
    if (wm > 0)
        d11_buf_printf(b,
                       "# HELP d11_stats_watermark_age_seconds Now minus the newest event time folded (freshness).\n"
                       "# TYPE d11_stats_watermark_age_seconds gauge\nd11_stats_watermark_age_seconds %.3f\n",
                       (double)(d11_wall_ms() - wm) / 1000.0);
}
