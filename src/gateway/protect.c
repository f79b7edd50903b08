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
    for (int i = 0; i < D11_PROTECT_BASE_S; i++) p->base_ring[i] = INT64_MAX;
    p->base_acc = INT64_MAX;
    p->grad = cfg->inflight_min;
    p->last_tick_ms = now_ms;
}

/* Histogram slot of a response time: two per power of two (1 us .. 2^31 us). */
static int hist_idx(int64_t us)
{
    if (us < 1) us = 1;
    int msb = 63 - __builtin_clzll((unsigned long long)us);
    int i = 2 * msb + (msb > 0 ? (int)((us >> (msb - 1)) & 1) : 0);
    return i < GW_PROTECT_HIST_N ? i : GW_PROTECT_HIST_N - 1;
}
/* Upper bound (us) of histogram slot i. */
static int64_t hist_upper(int i)
{
    int msb = i / 2;
    int64_t lo = (int64_t)1 << msb;
    return (i & 1) ? 2 * lo : lo + (lo >> 1);
}

int gw_protect_enter(gw_protect *p)
{
    if (!p->cfg.on) return GW_PROTECT_OK;
    int64_t n = atomic_fetch_add_explicit(&p->inflight, 1, RLX) + 1;
    if (n > atomic_load_explicit(&p->peak, RLX)) atomic_store_explicit(&p->peak, n, RLX);
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
    atomic_fetch_add_explicit(&p->cur_hist[hist_idx(rt_us)], 1, RLX);
    int64_t m = atomic_load_explicit(&p->cur_rt_min_us, RLX);
    while (rt_us < m && !atomic_compare_exchange_weak_explicit(&p->cur_rt_min_us, &m, rt_us, RLX, RLX)) {
    }
}

/* p99 (upper bound of its slot) of the sample gathered since the last gradient step, or
 * 0 when it holds fewer than GW_PROTECT_SAMPLE_MIN answers (keep gathering, up to 1 s). */
static int64_t sample_p99(gw_protect *p, uint64_t *n_out)
{
    for (int i = 0; i < GW_PROTECT_HIST_N; i++)
        p->hist[i] += atomic_exchange_explicit(&p->cur_hist[i], 0, RLX);
    uint64_t n = 0;
    for (int i = 0; i < GW_PROTECT_HIST_N; i++) n += p->hist[i];
    if (++p->sample_ticks * D11_PROTECT_BUCKET_MS < 1000 && n < GW_PROTECT_SAMPLE_MIN) return 0;
    int64_t p99 = 0;
    uint64_t want = n - n / 100, cum = 0; /* the ceil(0.99 n)-th answer */
    for (int i = 0; i < GW_PROTECT_HIST_N && n; i++) {
        cum += p->hist[i];
        if (cum >= want) {
            p99 = hist_upper(i);
            break;
        }
    }
    memset(p->hist, 0, sizeof p->hist);
    p->sample_ticks = 0;
    *n_out = n;
    return p99;
}

/*
 * The throughput climb (protect.h): a hill climber on the completion rate. Each step (a
 * sample of GW_PROTECT_SAMPLE_MIN answers or 1 s) compares the rate with the previous
 * step's. After a raise: the rate rose -> raise again; it fell -> go back down. After a
 * cut: the rate rose -> cut again; it fell -> go back up. When the rate did not move
 * (within 3%), the p99 decides: above tolerance x baseline (the lowest p99 of the last
 * D11_PROTECT_BASE_S seconds) -> cut (more concurrency only queues), else raise. Steps
 * are limit/8 + 1. A limit not in use (peak in flight < 3/4 of it) is left alone, and it
 * never rises while the CPU is above its cap.
 */
static void grad_update(gw_protect *p, int64_t dur_ms, bool cpu_hot)
{
    int64_t peak = atomic_exchange_explicit(&p->peak, 0, RLX);
    if (peak > p->peak_acc) p->peak_acc = peak;
    p->sample_ms += dur_ms;
    if (!p->cfg.tolerance_pct) return;
    uint64_t n = 0;
    int64_t p99 = sample_p99(p, &n);
    if (p99 == 0) return; /* still gathering */
    peak = p->peak_acc;
    p->peak_acc = 0;
    int64_t rate = p->sample_ms > 0 ? (int64_t)n * 1000 / p->sample_ms : 0;
    p->sample_ms = 0;
    atomic_store_explicit(&p->rt_p99_us, p99, RLX);
    if (p99 < p->base_acc) p->base_acc = p99;
    if (++p->base_ticks >= 1) { /* one entry per step (<= 1 s) */
        p->base_head = (p->base_head + 1) % D11_PROTECT_BASE_S;
        p->base_ring[p->base_head] = p->base_acc;
        p->base_acc = INT64_MAX;
        p->base_ticks = 0;
    }
    int64_t base = INT64_MAX;
    for (int i = 0; i < D11_PROTECT_BASE_S; i++)
        if (p->base_ring[i] < base) base = p->base_ring[i];
    atomic_store_explicit(&p->rt_base_us, base, RLX);
    int64_t g = p->grad, last = p->last_rate;
    if (peak * 4 < g * 3) return; /* the limit is not what holds the traffic back */
    p->last_rate = rate;
    int trend = rate * 100 > last * 103 ? 1 : rate * 100 < last * 97 ? -1 : 0;
    int move;
    if (trend == 0) move = p99 > base * p->cfg.tolerance_pct / 100 ? -1 : 1;
    else move = trend * (p->dir ? p->dir : 1);
    if (move > 0 && cpu_hot) move = 0;
    g += move * (g / 8 + 1);
    if (g < p->cfg.inflight_min) g = p->cfg.inflight_min;
    if (g > D11_PROTECT_LIMIT_MAX) g = D11_PROTECT_LIMIT_MAX;
    p->dir = move ? move : p->dir;
    p->grad = g;
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
    bool cpu_hot = p->cfg.cpu_max_pct && cpu_pct > p->cfg.cpu_max_pct;
    int64_t gain = cpu_hot ? 100 : p->cfg.gain_pct;
    int64_t bdp = 0;
    if (tput && rt_min != INT64_MAX) /* gain% x (completions/s) x (us) / 1e6, rounded up */
        bdp = (tput * rt_min * gain + 100000000 - 1) / 100000000;
    grad_update(p, dur, cpu_hot);
    int64_t limit = p->cfg.inflight_min;
    if (bdp > limit) limit = bdp;
    if (p->cfg.tolerance_pct && p->grad > limit) limit = p->grad;
    D11_ASSERT(limit >= p->cfg.inflight_min);
    atomic_store_explicit(&p->limit, limit, RLX);
    atomic_store_explicit(&p->bdp, bdp, RLX);
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
                   "\"rt_avg_us\":%lld,\"cpu_pct\":%lld,\"refused\":{\"inflight\":%llu,\"rt\":%llu},"
                   "\"bdp\":%lld,\"rt_p99_us\":%lld,\"rt_base_us\":%lld,\"rt_tolerance_pct\":%lld}",
                   p->cfg.on ? "true" : "false", (long long)atomic_load_explicit(&p->inflight, RLX),
                   (long long)atomic_load_explicit(&p->limit, RLX), (long long)p->cfg.inflight_min,
                   (long long)p->cfg.gain_pct, (long long)(p->cfg.rt_max_us / 1000),
                   (long long)p->cfg.cpu_max_pct, (long long)atomic_load_explicit(&p->max_tput, RLX),
                   (long long)atomic_load_explicit(&p->min_rt_us, RLX),
                   (long long)atomic_load_explicit(&p->rt_avg_us, RLX),
                   (long long)atomic_load_explicit(&p->cpu_pct, RLX),
                   (unsigned long long)atomic_load_explicit(&p->refused[GW_PROTECT_INFLIGHT], RLX),
                   (unsigned long long)atomic_load_explicit(&p->refused[GW_PROTECT_RT], RLX),
                   (long long)atomic_load_explicit(&p->bdp, RLX),
                   (long long)atomic_load_explicit(&p->rt_p99_us, RLX),
                   (long long)atomic_load_explicit(&p->rt_base_us, RLX), (long long)p->cfg.tolerance_pct);
}
