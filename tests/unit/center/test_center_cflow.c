/*
 * test_center_cflow.c — the center's cluster flow budget (src/center/cluster_flow.c):
 * grants never exceed want or the budget (qps x t + burst over any span, several
 * gateways asking), chunks shrink as the budget runs out, the budget refills at qps, a
 * rule change keeps the debt, the recent-gateways count, bad resource ids.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "center/cluster_flow.h"
#include "check.h"

static d11_cflow_center C;

static uint32_t ask(int res, uint64_t gw, uint32_t qps, uint32_t burst, uint32_t want, int64_t now, uint16_t *gws)
{
    d11_msg_flow_lease m = {.res = (uint8_t)res, .gw_id = gw, .qps = qps, .burst = burst, .want = want};
    d11_msg_flow_lease_reply r;
    CHECK_RC(d11_cflow_center_grant(&C, &m, now, &r), 0);
    if (gws) *gws = r.gateways;
    CHECK(r.granted <= want);
    return r.granted;
}

static void test_chunks_shrink(void)
{
    d11_cflow_center_init(&C);
    int64_t t0 = 1000000000000LL;
    /* qps 1000, burst 250: a full budget holds 250 tokens */
    CHECK_EQ(ask(0, 1, 1000, 250, 100, t0, NULL), 100);
    CHECK_EQ(ask(0, 2, 1000, 250, 100, t0, NULL), 100);
    CHECK_EQ(ask(0, 1, 1000, 250, 100, t0, NULL), 50); /* what is left */
    CHECK_EQ(ask(0, 2, 1000, 250, 100, t0, NULL), 0);  /* empty */
    CHECK_EQ(d11_cflow_center_available(&C, 0, t0), 0);
    /* refills at qps: 10 ms -> 10 tokens */
    CHECK_EQ(ask(0, 1, 1000, 250, 100, t0 + 10000000, NULL), 10);
    /* another resource has its own budget */
    CHECK_EQ(ask(3, 1, 10, 10, 100, t0, NULL), 10);
}

/* Two gateways ask every 7 ms with ragged wants for 10 s: every span [a, b) of whole
 * asks gets at most qps x (b - a) + burst tokens, and the total is close to qps x 10 s. */
static void test_never_over_budget(void)
{
    d11_cflow_center_init(&C);
    const uint32_t qps = 500, burst = 50;
    int64_t t0 = 5000000000000LL, step = 7000000;
    enum { N = 1430 };
    static uint32_t got[N];
    uint64_t total = 0;
    for (int i = 0; i < N; i++) {
        uint32_t want = 1 + (uint32_t)(i * 37 % 60);
        got[i] = ask(1, 10 + (uint64_t)(i & 1), qps, burst, want, t0 + i * step, NULL);
        total += got[i];
    }
    int bad = 0;
    for (int a = 0; a < N; a += 13) {
        uint64_t sum = 0;
        for (int b = a; b < N; b++) {
            sum += got[b];
            double span_s = (double)(b - a) * (double)step / 1e9;
            if ((double)sum > qps * span_s + burst + 1e-9) bad++;
        }
    }
    CHECKF(bad == 0, "%d spans over qps x t + burst", bad);
    double secs = (double)N * (double)step / 1e9;
    CHECKF(total <= qps * secs + burst && total >= 0.9 * qps * secs, "total %llu over %.2f s", (unsigned long long)total, secs);
}

static void test_rule_change_and_gateways(void)
{
    d11_cflow_center_init(&C);
    int64_t t0 = 9000000000000LL;
    uint16_t g = 0;
    CHECK_EQ(ask(0, 7, 100, 100, 100, t0, &g), 100);
    CHECK_EQ(g, 1);
    /* a higher qps keeps the debt taken: nothing more until it is paid at the new rate */
    CHECK_EQ(ask(0, 8, 1000, 100, 100, t0, &g), 0);
    CHECK_EQ(g, 2);
    CHECK_EQ(ask(0, 8, 1000, 100, 1000, t0 + 2000000000LL, &g), 100);
    CHECK_EQ(g, 2); /* both asked within D11_CFLOW_GATEWAY_TTL_MS */
    CHECK_EQ(ask(0, 8, 1000, 100, 1, t0 + 4000000000LL, &g), 1);
    CHECK_EQ(g, 1); /* gateway 7 has not asked for 4 s */
    d11_msg_flow_lease m = {.res = D11_CFLOW_RES_MAX, .gw_id = 1, .qps = 1, .burst = 1, .want = 1};
    d11_msg_flow_lease_reply r;
    CHECK_RC(d11_cflow_center_grant(&C, &m, t0, &r), -EINVAL);
    /* more gateways than remembered: the oldest is forgotten, the count stays bounded */
    d11_cflow_center_init(&C);
    for (uint64_t i = 0; i < D11_CFLOW_GATEWAYS_MAX + 10; i++) ask(2, 100 + i, 1000, 1000, 1, t0 + (int64_t)i, &g);
    CHECK_EQ(g, D11_CFLOW_GATEWAYS_MAX);
}

int main(void)
{
    test_chunks_shrink();
    test_never_over_budget();
    test_rule_change_and_gateways();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
