/*
 * test_breaker.c — the per-upstream circuit breaker's state machine (src/gateway/breaker.c):
 * error ratio, slow-call ratio and error count each open it (and not below min_calls);
 * OPEN refuses until open_ms, then exactly one probe goes (HALF_OPEN refuses the rest);
 * a good probe closes it with a fresh window, a failed or slow probe reopens it; a lost
 * probe is replaced after open_ms; the window resets; counters; the window SLIDES (the
 * successes of a healthy past age out slot by slot, so a stall opens it within one window
 * even when the window began in good times). Time is passed in.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/breaker.h"
#include "check.h"

static gw_breaker B;

static gw_breaker_cfg cfg(void)
{
    gw_breaker_cfg c;
    gw_breaker_cfg_default(&c);
    c.window_ms = 1000;
    c.min_calls = 10;
    c.slow_ms = 100;
    c.slow_ratio_pct = 80;
    c.error_ratio_pct = 50;
    c.error_count = 0;
    c.open_ms = 500;
    return c;
}

/* n calls at `now`, each with rt and error. */
static void calls(int n, int64_t now, int64_t rt, bool error)
{
    for (int i = 0; i < n; i++) {
        bool probe;
        CHECK(gw_breaker_allow(&B, now, &probe));
        CHECK(!probe);
        gw_breaker_done(&B, now, rt, error, false);
    }
}

static void test_error_ratio_and_probe(void)
{
    gw_breaker_cfg c = cfg();
    gw_breaker_init(&B, &c, "cell-0");
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(4, 0, 5, false);
    calls(5, 0, 5, true); /* 5 of 9 errors, but under min_calls */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(1, 0, 5, true); /* 6 of 10: >= 50% */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    CHECK_EQ(atomic_load(&B.opened_total), 1);
    bool probe;
    CHECK(!gw_breaker_allow(&B, 100, &probe));
    CHECK(!gw_breaker_allow(&B, 499, &probe));
    CHECK_EQ(atomic_load(&B.refused_total), 2);
    /* after open_ms: exactly one probe */
    CHECK(gw_breaker_allow(&B, 500, &probe));
    CHECK(probe);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_HALF_OPEN);
    bool p2;
    CHECK(!gw_breaker_allow(&B, 501, &p2));
    CHECK(!gw_breaker_allow(&B, 600, &p2));
    /* the probe fails: OPEN again, for open_ms from now */
    gw_breaker_done(&B, 620, 5, true, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    CHECK_EQ(atomic_load(&B.opened_total), 2);
    CHECK(!gw_breaker_allow(&B, 1000, &p2));
    CHECK(gw_breaker_allow(&B, 1120, &probe) && probe);
    /* a late answer of a call from before (not the probe) changes nothing */
    gw_breaker_done(&B, 1121, 5, false, false);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_HALF_OPEN);
    /* the probe succeeds: CLOSED with a fresh window (the old errors are gone) */
    gw_breaker_done(&B, 1130, 5, false, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(9, 1131, 5, true); /* 9 errors of 9: under min_calls again */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    gw_breaker_release(&B);
}

static void test_slow_ratio(void)
{
    gw_breaker_cfg c = cfg();
    c.error_ratio_pct = 0;
    gw_breaker_init(&B, &c, "center");
    calls(3, 0, 5, false);
    calls(7, 0, 150, false); /* 7 of 10 slow: under 80% */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(5, 0, 150, false); /* 12 of 15 = 80% */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    /* a slow probe counts as failed */
    bool probe;
    CHECK(gw_breaker_allow(&B, 600, &probe) && probe);
    gw_breaker_done(&B, 800, 200, false, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    gw_breaker_release(&B);
}

static void test_error_count_and_window(void)
{
    gw_breaker_cfg c = cfg();
    c.error_ratio_pct = 0;
    c.slow_ratio_pct = 0;
    c.error_count = 3;
    gw_breaker_init(&B, &c, "cell-1");
    calls(100, 0, 5, false);
    calls(2, 10, 5, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(2, 1500, 5, true); /* a new window: 2 errors, not 4 */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(1, 1600, 5, true); /* 3 in the window: open, even with few calls (no min_calls) */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    /* a probe that never comes back is replaced after open_ms */
    bool probe;
    CHECK(gw_breaker_allow(&B, 2100, &probe) && probe);
    CHECK(!gw_breaker_allow(&B, 2500, &probe));
    CHECK(gw_breaker_allow(&B, 2600, &probe) && probe);
    gw_breaker_done(&B, 2610, 5, false, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    gw_breaker_release(&B);
}

static void test_sliding_window(void)
{
    gw_breaker_cfg c = cfg(); /* window 1000 ms: 10 slots of 100 ms */
    gw_breaker_init(&B, &c, "cell-0");
    /* a healthy stream, 10 successes every 10 ms up to t=990 */
    for (int64_t t = 0; t < 1000; t += 10) calls(10, t, 5, false);
    /* then errors only, 1 every 5 ms. A fixed window restarting at t=1000 would open after
     * 10 of them (t=1045), forgetting the 1000 successes of the last second at its edge; the
     * sliding window remembers them and opens only once the errors are half of the last
     * 1000 ms: successes left ≈ 1990-t, errors ≈ (t-1000)/5, equal at t ≈ 1825. */
    int64_t opened_at = -1;
    for (int64_t t = 1000; t < 2000 && opened_at < 0; t += 5) {
        calls(1, t, 5, true);
        if (gw_breaker_state(&B) == GW_BRK_OPEN) opened_at = t;
    }
    CHECK(opened_at >= 0);
    CHECK(opened_at > 1300); /* not at the edge of a fixed window */
    CHECK(opened_at < 1950); /* but as soon as errors are half of the last second (~t=1825) */
    /* a window with only 9 calls never opens (min_calls), even if all are errors */
    gw_breaker_release(&B);
    gw_breaker_init(&B, &c, "cell-0");
    calls(9, 5000, 5, true);
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(9, 6100, 5, true); /* the first 9 aged out: still 9 in the window */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_CLOSED);
    calls(1, 6200, 5, true); /* 10 within 1000 ms: open */
    CHECK_EQ(gw_breaker_state(&B), GW_BRK_OPEN);
    gw_breaker_release(&B);
}

int main(void)
{
    test_sliding_window();
    test_error_ratio_and_probe();
    test_slow_ratio();
    test_error_count_and_window();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
