/*
 * protect.c — system adaptive overload protection (see protect.h for the rule, the
 * window and the threads). The request path costs one atomic add, one relaxed load of the
 * limit and, on completion, one atomic add per counter plus a CAS loop for the minimum RT.
 */
#include "protect.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *const gw_protect_reason_names[GW_PROTECT_N] = {"ok", "inflight", "rt"};

#define RLX memory_order_relaxed

void gw_protect_init(gw_protect *p, const gw_protect_cfg *cfg, int64_t now_ms)
{
    D11_ASSERT(cfg->inflight_min >= 1 && cfg->gain_pct >= 100);
    memset(p, 0, sizeof *p);
    p->cfg = *cfg;
    atomic_store(&p->limit, cfg->inflight_min);
    atomic_store(&p->cur_rt_min_us, INT64_MAX);
    atomic_store(&p->cpu_pct, -1);
    for (int i = 0; i < D11_PROTECT_BUCKETS; i++) p->ring[i].rt_min_us = INT64_MAX;
    p->last_tick_ms = now_ms;
}

int gw_protect_enter(gw_protect *p)
{
    if (!p->cfg.on) return GW_PROTECT_OK;
    int64_t n = atomic_fetch_add_explicit(&p->inflight, 1, RLX) + 1;
    if (n <= p->cfg.inflight_min) return GW_PROTECT_OK;
    int why = GW_PROTECT_OK;
    if (n > atomic_load_explicit(&p->limit, RLX)) why = GW_PROTECT_INFLIGHT;
    else if (p->cfg.rt_max_us && atomic_load_explicit(&p->rt_avg_us, RLX) > p->cfg.rt_max_us)
        why = GW_PROTECT_RT;
    if (why != GW_PROTECT_OK) {
        atomic_fetch_sub_explicit(&p->inflight, 1, RLX);
        atomic_fetch_add_explicit(&p->refused[why], 1, RLX);
    }
    return why;
}

void gw_protect_leave(gw_protect *p, int64_t rt_us, bool ok)
{
    if (!p->cfg.on) return;
    int64_t left = atomic_fetch_sub_explicit(&p->inflight, 1, RLX) - 1;
    D11_ASSERT(left >= 0); /* every leave pairs with an admitted enter */
    if (!ok) return;
    if (rt_us < 1) rt_us = 1;
    atomic_fetch_add_explicit(&p->cur_done, 1, RLX);
    atomic_fetch_add_explicit(&p->cur_rt_sum_us, rt_us, RLX);
    int64_t m = atomic_load_explicit(&p->cur_rt_min_us, RLX);
    while (rt_us < m && !atomic_compare_exchange_weak_explicit(&p->cur_rt_min_us, &m, rt_us, RLX, RLX)) {
    }
}

void gw_protect_tick(gw_protect *p, int64_t now_ms, int64_t cpu_pct)
{
    int64_t dur = now_ms - p->last_tick_ms;
    if (dur < D11_PROTECT_BUCKET_MS / 2) return; /* the sweep timer may fire a little early */
    p->last_tick_ms = now_ms;
    gw_protect_bucket b = {
        .done = atomic_exchange_explicit(&p->cur_done, 0, RLX),
        .rt_sum_us = atomic_exchange_explicit(&p->cur_rt_sum_us, 0, RLX),
        .rt_min_us = atomic_exchange_explicit(&p->cur_rt_min_us, INT64_MAX, RLX),
        .dur_ms = dur,
    };
    p->head = (p->head + 1) % D11_PROTECT_BUCKETS;
    p->ring[p->head] = b;
    int64_t tput = 0, rt_min = INT64_MAX;
    for (int i = 0; i < D11_PROTECT_BUCKETS; i++) {
        const gw_protect_bucket *x = &p->ring[i];
        if (!x->done || x->dur_ms <= 0) continue;
        int64_t r = (int64_t)x->done * 1000 / x->dur_ms;
        if (r > tput) tput = r;
        if (x->rt_min_us < rt_min) rt_min = x->rt_min_us;
    }
    int64_t gain = p->cfg.gain_pct;
    if (p->cfg.cpu_max_pct && cpu_pct > p->cfg.cpu_max_pct) gain = 100;
    int64_t limit = p->cfg.inflight_min;
    if (tput && rt_min != INT64_MAX) {
        /* gain% x (completions/s) x (us) / 1e6, rounded up; tput <= 1e9, rt <= 1e10 fit */
        int64_t bdp = (tput * rt_min * gain + 100000000 - 1) / 100000000;
        if (bdp > limit) limit = bdp;
    }
    D11_ASSERT(limit >= p->cfg.inflight_min);
    atomic_store_explicit(&p->limit, limit, RLX);
    atomic_store_explicit(&p->max_tput, tput, RLX);
    atomic_store_explicit(&p->min_rt_us, rt_min == INT64_MAX ? 0 : rt_min, RLX);
    atomic_store_explicit(&p->rt_avg_us, b.done ? b.rt_sum_us / (int64_t)b.done : 0, RLX);
    atomic_store_explicit(&p->cpu_pct, cpu_pct, RLX);
}

int64_t gw_protect_cpu_sample(gw_protect *p)
{
    char buf[512];
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd == -1) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    uint64_t v[8] = {0};
    if (sscanf(buf, "cpu %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                    " %" SCNu64 " %" SCNu64,
               &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 4)
        return -1;
    uint64_t total = 0;
    for (int i = 0; i < 8; i++) total += v[i];
    uint64_t busy = total - v[3] - v[4]; /* minus idle and iowait */
    int64_t pct = -1;
    if (p->cpu_total && total > p->cpu_total)
        pct = (int64_t)((busy - p->cpu_busy) * 100 / (total - p->cpu_total));
    p->cpu_busy = busy;
    p->cpu_total = total;
    return pct;
}

void gw_protect_render(gw_protect *p, d11_buf *out)
{
    d11_buf_printf(out,
                   "{\"on\":%s,\"inflight\":%lld,\"limit\":%lld,\"inflight_min\":%lld,\"gain_pct\":%lld,"
                   "\"rt_max_ms\":%lld,\"cpu_max_pct\":%lld,\"max_throughput\":%lld,\"min_rt_us\":%lld,"
                   "\"rt_avg_us\":%lld,\"cpu_pct\":%lld,\"refused\":{\"inflight\":%llu,\"rt\":%llu}}",
                   p->cfg.on ? "true" : "false", (long long)atomic_load_explicit(&p->inflight, RLX),
                   (long long)atomic_load_explicit(&p->limit, RLX), (long long)p->cfg.inflight_min,
                   (long long)p->cfg.gain_pct, (long long)(p->cfg.rt_max_us / 1000),
                   (long long)p->cfg.cpu_max_pct, (long long)atomic_load_explicit(&p->max_tput, RLX),
                   (long long)atomic_load_explicit(&p->min_rt_us, RLX),
                   (long long)atomic_load_explicit(&p->rt_avg_us, RLX),
                   (long long)atomic_load_explicit(&p->cpu_pct, RLX),
                   (unsigned long long)atomic_load_explicit(&p->refused[GW_PROTECT_INFLIGHT], RLX),
                   (unsigned long long)atomic_load_explicit(&p->refused[GW_PROTECT_RT], RLX));
}
