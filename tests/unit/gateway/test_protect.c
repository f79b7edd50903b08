/*
 * test_protect.c — the gateway's system adaptive protection (src/gateway/protect.c):
 * the floor, the BDP limit (gain x max throughput x min RT) as the window moves, the RT
 * cap, the CPU cap (no gain above it), "off" admits everything, and enter/leave pairing.
 * Time is passed in, so every case is deterministic.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/protect.h"
#include "check.h"

static gw_protect P;

static gw_protect_cfg cfg(int64_t min, int64_t gain, int64_t rt_max_us, int64_t cpu_max)
{
    return (gw_protect_cfg){.on = true, .inflight_min = min, .gain_pct = gain, .rt_max_us = rt_max_us,
                            .cpu_max_pct = cpu_max};
}

/* Admit as many as the protection lets in (up to cap); returns how many. */
static int fill(gw_protect *p, int cap)
{
    int n = 0;
    while (n < cap && gw_protect_enter(p) == GW_PROTECT_OK) n++;
    return n;
}

static void drain(gw_protect *p, int n, int64_t rt_us)
{
    for (int i = 0; i < n; i++) gw_protect_leave(p, rt_us, true);
}

/* One 100-ms bucket in which `done` requests completed with response time rt_us each. */
static void bucket(gw_protect *p, int64_t *now, int done, int64_t rt_us, int64_t cpu)
{
    for (int i = 0; i < done; i++) {
        CHECK_EQ(gw_protect_enter(p), GW_PROTECT_OK); /* one at a time: under any limit */
        gw_protect_leave(p, rt_us, true);
    }
    *now += D11_PROTECT_BUCKET_MS;
    gw_protect_tick(p, *now, cpu);
}

static void test_floor_and_off(void)
{
    gw_protect_cfg c = cfg(8, 200, 0, 0);
    gw_protect_init(&P, &c, 0);
    CHECK_EQ(fill(&P, 100), 8); /* no measurement yet: the floor */
    CHECK_EQ(gw_protect_enter(&P), GW_PROTECT_INFLIGHT);
    CHECK_EQ(atomic_load(&P.refused[GW_PROTECT_INFLIGHT]), 2);
    CHECK_EQ(atomic_load(&P.inflight), 8);
    drain(&P, 8, 1000);
    CHECK_EQ(atomic_load(&P.inflight), 0);

    c.on = false;
    gw_protect_init(&P, &c, 0);
    CHECK_EQ(fill(&P, 1000), 1000); /* off: nothing refused, nothing counted */
    CHECK_EQ(atomic_load(&P.inflight), 0);
}

static void test_bdp_limit(void)
{
    gw_protect_cfg c = cfg(4, 200, 0, 0);
    gw_protect_init(&P, &c, 0);
    int64_t now = 0;
    /* 1,000 completions in 100 ms = 10,000/s at 2 ms: BDP 20, x2 = 40 */
    bucket(&P, &now, 1000, 2000, -1);
    CHECK_EQ(atomic_load(&P.max_tput), 10000);
    CHECK_EQ(atomic_load(&P.min_rt_us), 2000);
    CHECK_EQ(atomic_load(&P.limit), 40);
    CHECK_EQ(fill(&P, 100), 40);
    CHECK_EQ(gw_protect_enter(&P), GW_PROTECT_INFLIGHT);
    drain(&P, 40, 2000);
    /* a faster bucket (lower RT) lowers min RT; the max throughput stays the window's max */
    bucket(&P, &now, 500, 500, -1); /* 5,000/s at 0.5 ms */
    CHECK_EQ(atomic_load(&P.max_tput), 10000);
    CHECK_EQ(atomic_load(&P.min_rt_us), 500);
    CHECK_EQ(atomic_load(&P.limit), 10); /* 2 x 10,000 x 0.0005 */
    /* once both buckets have left the window, the estimate follows the new regime */
    for (int i = 0; i < D11_PROTECT_BUCKETS; i++) bucket(&P, &now, 100, 3000, -1); /* 1,000/s, 3 ms */
    CHECK_EQ(atomic_load(&P.max_tput), 1000);
    CHECK_EQ(atomic_load(&P.min_rt_us), 3000);
    CHECK_EQ(atomic_load(&P.limit), 6);
    /* an empty window falls back to the floor */
    for (int i = 0; i < D11_PROTECT_BUCKETS; i++) bucket(&P, &now, 0, 0, -1);
    CHECK_EQ(atomic_load(&P.limit), 4);
    /* a tick earlier than half a bucket changes nothing */
    bucket(&P, &now, 1000, 2000, -1);
    int64_t lim = atomic_load(&P.limit);
    gw_protect_tick(&P, now + 10, -1);
    CHECK_EQ(atomic_load(&P.limit), lim);
}

static void test_failures_do_not_count(void)
{
    gw_protect_cfg c = cfg(2, 100, 0, 0);
    gw_protect_init(&P, &c, 0);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ(gw_protect_enter(&P), GW_PROTECT_OK);
        gw_protect_leave(&P, 10, false); /* 5xx or dropped: not a completion */
    }
    gw_protect_tick(&P, D11_PROTECT_BUCKET_MS, -1);
    CHECK_EQ(atomic_load(&P.max_tput), 0);
    CHECK_EQ(atomic_load(&P.min_rt_us), 0);
    CHECK_EQ(atomic_load(&P.inflight), 0);
}

static void test_rt_cap(void)
{
    gw_protect_cfg c = cfg(2, 10000, 5000, 0); /* RT cap 5 ms; a huge gain so BDP is not the limit */
    gw_protect_init(&P, &c, 0);
    int64_t now = 0;
    bucket(&P, &now, 2, 20000, -1); /* mean RT 20 ms > 5 ms */
    CHECK_EQ(atomic_load(&P.rt_avg_us), 20000);
    CHECK_EQ(fill(&P, 100), 2); /* the floor still gets in */
    CHECK_EQ(gw_protect_enter(&P), GW_PROTECT_RT);
    CHECK_EQ(atomic_load(&P.refused[GW_PROTECT_RT]), 2); /* fill's last try and this one */
    drain(&P, 2, 1000);
    bucket(&P, &now, 2, 1000, -1); /* back under the cap */
    CHECK(fill(&P, 100) > 2);
}

static void test_cpu_cap(void)
{
    gw_protect_cfg c = cfg(1, 300, 0, 80);
    gw_protect_init(&P, &c, 0);
    int64_t now = 0;
    bucket(&P, &now, 1000, 1000, 50); /* 10,000/s x 1 ms = 10; CPU 50% <= 80%: x3 */
    CHECK_EQ(atomic_load(&P.limit), 30);
    bucket(&P, &now, 0, 0, 95); /* CPU above its cap: the BDP without headroom */
    CHECK_EQ(atomic_load(&P.limit), 10);
    CHECK_EQ(atomic_load(&P.cpu_pct), 95);
}

/* One climb step: the limit is filled (so it is "in use"), then `done` answers of rt_us
 * each complete within one bucket. Returns the limit after the step. */
static int64_t climb_step(gw_protect *p, int64_t *now, int done, int64_t rt_us)
{
    int64_t g = atomic_load(&p->limit);
    int held = fill(p, (int)g);
    drain(p, held, rt_us);
    for (int i = held; i < done; i++) {
        CHECK_EQ(gw_protect_enter(p), GW_PROTECT_OK);
        gw_protect_leave(p, rt_us, true);
    }
    *now += D11_PROTECT_BUCKET_MS;
    gw_protect_tick(p, *now, -1);
    return atomic_load(&p->limit);
}

static void test_throughput_climb(void)
{
    gw_protect_cfg c = cfg(16, 100, 0, 0);
    c.tolerance_pct = 300;
    gw_protect_init(&P, &c, 0);
    int64_t now = 0, g0 = atomic_load(&P.limit), g;
    /* the rate keeps rising with the limit: keep raising */
    g = climb_step(&P, &now, 300, 1000);
    CHECKF(g > g0, "first step raises (%lld -> %lld)", (long long)g0, (long long)g);
    for (int k = 0; k < 5; k++) {
        int64_t before = g;
        g = climb_step(&P, &now, 300 + 60 * (k + 1), 1000);
        CHECKF(g > before, "rate up after a raise: raise again (%lld -> %lld)", (long long)before, (long long)g);
    }
    /* the rate falls after a raise: go back down */
    int64_t before = g;
    g = climb_step(&P, &now, 300, 1000);
    CHECKF(g < before, "rate down after a raise: cut (%lld -> %lld)", (long long)before, (long long)g);
    /* the rate rises after a cut: cut again */
    before = g;
    g = climb_step(&P, &now, 400, 1000);
    CHECKF(g < before, "rate up after a cut: cut again (%lld -> %lld)", (long long)before, (long long)g);
    /* flat rate, p99 far above tolerance x baseline (1 ms): cut */
    before = g;
    g = climb_step(&P, &now, 400, 50000);
    CHECKF(g < before, "flat rate, p99 50 ms vs baseline 1 ms: cut (%lld -> %lld)", (long long)before, (long long)g);
    /* flat rate, p99 back at the baseline: raise */
    before = g;
    g = climb_step(&P, &now, 400, 1000);
    CHECKF(g > before, "flat rate, p99 at baseline: raise (%lld -> %lld)", (long long)before, (long long)g);
    CHECKF(atomic_load(&P.rt_base_us) > 0 && atomic_load(&P.rt_base_us) <= 2048, "baseline p99 %lld us",
           (long long)atomic_load(&P.rt_base_us));
    /* the climb never goes below the floor; the limit is then the BDP (4,000/s x 50 ms) */
    for (int k = 0; k < 50; k++) climb_step(&P, &now, 400, 50000);
    CHECK_EQ(P.grad, 16);
    CHECK_EQ(atomic_load(&P.limit), 200);
    CHECK_EQ(atomic_load(&P.inflight), 0);
}

static void test_render(void)
{
    gw_protect_cfg c = cfg(3, 200, 7000, 0);
    gw_protect_init(&P, &c, 0);
    d11_buf b = {0};
    gw_protect_render(&P, &b);
    CHECKF(strstr(b.data, "\"on\":true") && strstr(b.data, "\"limit\":3") && strstr(b.data, "\"rt_max_ms\":7"),
           "%s", b.data);
    d11_buf_free(&b);
}

int main(void)
{
    test_floor_and_off();
    test_bdp_limit();
    test_failures_do_not_count();
    test_rt_cap();
    test_cpu_cap();
    test_throughput_climb();
    test_render();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
