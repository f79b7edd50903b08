/*
 * test_gw_cflow.c — the gateway's cluster flow rules and leases (src/gateway/cluster_flow.c,
 * flow.c, rules.c): "cluster"/"fallback_qps" parse, validate, render, and a PATCH of
 * "cluster" alone keeps the rest; the lease bookkeeping (a take spends exactly the tokens
 * granted, the chunk follows the local demand within its bounds, one ask in flight, the
 * deadline and failures switch to the local fallback at fallback_qps or qps / gateways,
 * an answer ends it); d11_flow_take on a cluster rule. Last: the per-request cost of a
 * cluster rule against a local rule, printed for bench/RESULTS.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "core/util.h"
#include "gateway/rules.h"
#include "check.h"

static d11_json J;
static char err[256];
static d11_rules_store S;

static int parse(const char *s, d11_rules *r)
{
    bool hv;
    return d11_rules_parse(&J, s, strlen(s), r, &hv, err, sizeof err);
}

static void apply(const char *doc)
{
    d11_rules r, applied;
    CHECK_RC(parse(doc, &r), 0);
    CHECK_RC(d11_rules_store_put(&S, &r, false, &applied), 0);
}

static void test_rules(void)
{
    d11_rules r, r2;
    bool hv;
    const int R = D11_RES_ORDERS_CREATE;
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"qps\":100,\"burst\":20,\"concurrency\":5,\"cluster\":true,"
                   "\"fallback_qps\":30}}}", &r), 0);
    CHECK_EQ(r.flow[R].cluster, 1);
    CHECK_EQ(r.flow[R].fallback_qps, 30);
    d11_buf b = {0};
    d11_rules_render(&r, &b);
    CHECKF(strstr(b.data, "\"cluster\":true,\"fallback_qps\":30") != NULL, "%s", b.data);
    CHECK_RC(parse(b.data, &r2), 0);
    CHECK(memcmp(r.flow, r2.flow, sizeof r.flow) == 0);
    d11_buf_free(&b);
    /* PATCH of cluster alone keeps qps, burst, concurrency, fallback_qps; and back */
    const char *p = "{\"flow\":{\"orders.create\":{\"cluster\":false,\"fallback_qps\":0}}}";
    CHECK_RC(d11_rules_parse_patch(&J, p, strlen(p), &r, &r2, &hv, err, sizeof err), 0);
    CHECK_EQ(r2.flow[R].cluster, 0);
    CHECK_EQ(r2.flow[R].qps, 100);
    CHECK_EQ(r2.flow[R].burst, 20);
    CHECK_EQ(r2.flow[R].concurrency, 5);
    p = "{\"flow\":{\"orders.create\":{\"cluster\":true}}}";
    CHECK_RC(d11_rules_parse_patch(&J, p, strlen(p), &r2, &r, &hv, err, sizeof err), 0);
    CHECK_EQ(r.flow[R].cluster, 1);
    CHECK_EQ(r.flow[R].qps, 100);
    CHECK_EQ(r.flow[R].burst, 20);
    /* invalid: cluster without qps, with pace or warm-up; fallback_qps without cluster; not a bool */
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"concurrency\":5,\"cluster\":true}}}", &r), D11_JSON_ERANGE);
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"qps\":5,\"max_wait_ms\":9,\"cluster\":true}}}", &r), D11_JSON_ERANGE);
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"qps\":5,\"warm_up_s\":9,\"cluster\":true}}}", &r), D11_JSON_ERANGE);
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"qps\":5,\"fallback_qps\":2}}}", &r), D11_JSON_ERANGE);
    CHECK_RC(parse("{\"flow\":{\"orders.create\":{\"qps\":5,\"cluster\":1}}}", &r), D11_JSON_ERANGE);
}

static void test_lease_bookkeeping(void)
{
    d11_cflow_lease L;
    memset(&L, 0, sizeof L);
    d11_cflow_reset(&L, true, 1000, 1000, 0);
    int64_t t = 1000000000LL, tick = (int64_t)D11_CFLOW_TICK_MS * 1000000;
    /* nothing leased: refused; the first plan asks for the smallest chunk */
    CHECK(!d11_cflow_take(&L));
    uint32_t want = d11_cflow_plan(&L, t);
    CHECK_EQ(want, D11_CFLOW_CHUNK_MIN);
    d11_cflow_sent(&L, t);
    CHECK_EQ(d11_cflow_plan(&L, t + tick), 0); /* one ask in flight */
    d11_cflow_granted(&L, 3, 2);
    int n = 0;
    while (d11_cflow_take(&L)) n++;
    CHECK_EQ(n, 3); /* exactly the tokens granted */
    CHECK_EQ(atomic_load(&L.tokens), 0);
    CHECK_EQ(d11_cflow_fallback_qps(&L), 500); /* qps / 2 gateways */
    /* demand of 2000/s (40 per tick): the chunk follows, ~ rate x horizon */
    for (int k = 0; k < 20; k++) {
        for (int i = 0; i < 40; i++) d11_cflow_take(&L);
        t += tick;
        want = d11_cflow_plan(&L, t);
    }
    CHECKF(want >= 150 && want <= 250, "want %u at 2000/s", want);
    /* enough held: no ask */
    d11_cflow_sent(&L, t);
    d11_cflow_granted(&L, want, 2);
    CHECK_EQ(d11_cflow_plan(&L, t + 1), 0);
    /* an ask unanswered past the deadline: fallback; the answer ends it */
    while (d11_cflow_take(&L)) {}
    t += tick;
    want = d11_cflow_plan(&L, t);
    CHECK(want > 0);
    d11_cflow_sent(&L, t);
    d11_cflow_check_deadline(&L, t + (int64_t)D11_CFLOW_DEADLINE_MS * 1000000 - 1);
    CHECK_EQ(atomic_load(&L.fallback), 0);
    d11_cflow_check_deadline(&L, t + (int64_t)D11_CFLOW_DEADLINE_MS * 1000000 + 1);
    CHECK_EQ(atomic_load(&L.fallback), 1);
    CHECK_EQ(atomic_load(&L.fb_entered), 1);
    d11_cflow_granted(&L, 5, 4);
    CHECK_EQ(atomic_load(&L.fallback), 0);
    CHECK_EQ(d11_cflow_fallback_qps(&L), 250);
    /* a failure: fallback, counted once; in fallback a plan asks even with tokens held */
    t += tick;
    d11_cflow_failed(&L);
    CHECK_EQ(atomic_load(&L.fallback), 1);
    CHECK_EQ(atomic_load(&L.fb_entered), 2);
    CHECK(d11_cflow_plan(&L, t) > 0);
    /* the rule's fallback_qps wins over qps / gateways; a reset drops the tokens */
    d11_cflow_reset(&L, true, 1000, 1000, 77);
    CHECK_EQ(d11_cflow_fallback_qps(&L), 77);
    CHECK_EQ(atomic_load(&L.tokens), 0);
    CHECK_EQ(atomic_load(&L.fallback), 0);
    /* the chunk is bounded above */
    memset(&L, 0, sizeof L);
    d11_cflow_reset(&L, true, 10000000, 10000000, 0);
    t = 5000000000LL;
    d11_cflow_plan(&L, t);
    atomic_store(&L.demand, 100000000); /* 1e8 in one tick */
    CHECK_EQ(d11_cflow_plan(&L, t + tick), D11_CFLOW_CHUNK_MAX);
}

static void test_flow_take(void)
{
    const int R = D11_RES_ORDERS_CREATE;
    int64_t now = 1000000000000LL, retry = 0;
    apply("{\"flow\":{\"orders.create\":{\"qps\":100,\"burst\":100,\"cluster\":true,\"fallback_qps\":10}}}");
    d11_cflow_lease *L = &S.cflow[R];
    CHECK_EQ(atomic_load(&L->on), 1);
    /* cluster mode: only leased tokens admit, however far the local bucket would go */
    CHECK(!d11_flow_take(&S, R, now, &retry));
    CHECK(retry > 0);
    d11_cflow_plan(L, now);
    d11_cflow_sent(L, now);
    d11_cflow_granted(L, 7, 1);
    int n = 0;
    for (int i = 0; i < 100; i++) n += d11_flow_take(&S, R, now, &retry);
    CHECK_EQ(n, 7);
    /* fallback: the local bucket at fallback_qps 10 (burst 100 x 10 / 100 = 10) */
    d11_cflow_failed(L);
    n = 0;
    for (int i = 0; i < 100; i++) n += d11_flow_take(&S, R, now + i * 1000000LL, &retry); /* 100 ms */
    CHECKF(n >= 10 && n <= 12, "fallback admitted %d in 100 ms at 10/s burst 10", n);
    CHECK_EQ(atomic_load(&L->fb_admitted), (uint64_t)n);
    CHECK(atomic_load(&L->fb_refused) > 0);
    /* the same rule without cluster: the local bucket at qps 100 */
    apply("{\"flow\":{\"orders.create\":{\"qps\":100,\"burst\":100}}}");
    CHECK_EQ(atomic_load(&L->on), 0);
    n = 0;
    for (int i = 0; i < 200; i++) n += d11_flow_take(&S, R, now + 10000000000LL, &retry);
    CHECK_EQ(n, 100);
}

/* Per-request cost: d11_flow_take on a local rule and on a cluster rule (lease take). */
static void bench(void)
{
    const int R = D11_RES_ORDERS_CREATE, N = 2000000;
    double ns[2];
    for (int c = 0; c < 2; c++) {
        apply(c ? "{\"flow\":{\"orders.create\":{\"qps\":10000000,\"burst\":10000000,\"cluster\":true}}}"
                : "{\"flow\":{\"orders.create\":{\"qps\":10000000,\"burst\":10000000}}}");
        if (c) d11_cflow_granted(&S.cflow[R], 1000000, 1), atomic_store(&S.cflow[R].tokens, (int64_t)N * 2);
        struct timespec a, b;
        int64_t retry, ok = 0;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int i = 0; i < N; i++) ok += d11_flow_take(&S, R, d11_mono_ns(), &retry);
        clock_gettime(CLOCK_MONOTONIC, &b);
        ns[c] = ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / N;
        CHECK(ok > N / 2);
    }
    printf("flow take: local rule %.1f ns/request, cluster rule %.1f ns/request (incl. clock read)\n", ns[0], ns[1]);
    CHECKF(ns[1] < 2000, "%.1f ns per cluster take", ns[1]);
}

int main(void)
{
    test_rules();
    test_lease_bookkeeping();
    char dir[] = "/tmp/d11-test-cflow.XXXXXX";
    if (!mkdtemp(dir)) return 2;
    CHECK_RC(d11_rules_store_init(&S, dir), 0);
    test_flow_take();
    bench();
    d11_rules_store_release(&S);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) printf("cannot remove %s\n", dir);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
