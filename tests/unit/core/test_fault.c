/*
 * test_fault.c — unit test of src/core/fault.{h,c}: the D11_FAULTS syntax still arms, and
 * run-time arming (live chaos) arms, fires, disarms by id only, and expires by itself.
 *
 * Expiry: a point armed for 30 ms stops firing once this process's monotonic clock has
 * passed its expiry, with no disarm call — checked by hitting it (the hot path disarms)
 * and by d11_fault_sweep. Concurrency: reader threads hit a point while a writer re-arms
 * it with alternating settings; every firing a reader sees must be one whole arm (a delay
 * with its own delay, never a drop carrying a delay: a torn read would mix them).
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/fault.h"
#include "core/util.h"

#include "check.h"

static void test_env_syntax(void)
{
    char err[256];
    CHECK_RC(d11_fault_parse("cell.recv:drop,store.commit:delay=5ms*2", 1, err, sizeof err), 0);
    CHECK_EQ(d11_fault(D11_FP_CELL_RECV).action, D11_FA_DROP);
    CHECK_EQ(d11_fault(D11_FP_STORE_COMMIT).action, D11_FA_NONE); /* hit 1 of *2 */
    d11_fault_hit h = d11_fault(D11_FP_STORE_COMMIT);
    CHECK_EQ(h.action, D11_FA_DELAY);
    CHECK_EQ(h.delay_ms, 5);
    CHECK_RC(d11_fault_parse("gateway.upstream:fail,relay.publish:fail", 1, err, sizeof err), 0);
    CHECK_EQ(d11_fault(D11_FP_GATEWAY_UPSTREAM).action, D11_FA_FAIL);
    CHECK(d11_fault_trip(D11_FP_RELAY_PUBLISH));
    CHECK_RC(d11_fault_parse("nope.point:drop", 1, err, sizeof err), -1);
    CHECK(strstr(err, "unknown fault point") != NULL);
    CHECK(!atomic_load(&d11__fault_any)); /* a bad spec arms nothing */
    d11_fault_reset();
    CHECK_EQ(d11_fault(D11_FP_CELL_RECV).action, D11_FA_NONE);
}

static void test_runtime_arm(void)
{
    d11_fault_reset();
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_DELAY, 0, 100, 1000, 7), -EINVAL); /* delay 0 */
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_GARBLE, 0, 100, 1000, 7), -EINVAL);
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_FAIL, 0, 0, 1000, 7), -EINVAL);   /* 0 % */
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_FAIL, 0, 101, 1000, 7), -EINVAL);
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_FAIL, 0, 100, 0, 7), -EINVAL);    /* no timeout */
    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_FAIL, 0, 100, 1000, 0), -EINVAL); /* no id */
    CHECK_RC(d11_fault_arm(D11_FP_COUNT, D11_FA_FAIL, 0, 100, 1000, 7), -EINVAL);
    CHECK(!atomic_load(&d11__fault_any));

    CHECK_RC(d11_fault_arm(D11_FP_STORE_COMMIT, D11_FA_DELAY, 3, 100, 60000, 7), 0);
    d11_fault_hit h = d11_fault(D11_FP_STORE_COMMIT);
    CHECK_EQ(h.action, D11_FA_DELAY);
    CHECK_EQ(h.delay_ms, 3);
    CHECK_EQ(d11_fault(D11_FP_CELL_RECV).action, D11_FA_NONE); /* only that point */
    CHECK_EQ(d11_fault_fired(D11_FP_STORE_COMMIT), 1);
    d11_buf b;
    d11_buf_init(&b, 256);
    d11_fault_render(&b);
    d11_buf_append(&b, "", 1);
    CHECK(strstr(b.data, "\"point\":\"store.commit\",\"action\":\"delay\",\"delay_ms\":3,\"percent\":100") != NULL);
    d11_buf_reset(&b);
    d11_fault_metrics(&b, "cell-0");
    d11_buf_append(&b, "", 1);
    CHECK(strstr(b.data, "d11_fault_fired_total{part=\"cell-0\",point=\"store.commit\"} 1\n") != NULL);
    d11_buf_free(&b);

    /* disarm: another experiment's id leaves it armed; its own id disarms; twice -> ENOENT */
    CHECK_RC(d11_fault_disarm(D11_FP_STORE_COMMIT, 8), -ENOENT);
    CHECK_EQ(d11_fault(D11_FP_STORE_COMMIT).action, D11_FA_DELAY);
    CHECK_RC(d11_fault_disarm(D11_FP_STORE_COMMIT, 7), 0);
    CHECK_RC(d11_fault_disarm(D11_FP_STORE_COMMIT, 7), -ENOENT);
    CHECK_EQ(d11_fault(D11_FP_STORE_COMMIT).action, D11_FA_NONE);
    CHECK(!atomic_load(&d11__fault_any));

    /* percent: about half of the hits */
    d11_fault_seed(42, "test");
    CHECK_RC(d11_fault_arm(D11_FP_CELL_REPLY, D11_FA_DROP, 0, 50, 60000, 9), 0);
    int fired = 0;
    for (int i = 0; i < 10000; i++) fired += d11_fault(D11_FP_CELL_REPLY).action == D11_FA_DROP;
    CHECKF(fired > 4500 && fired < 5500, "50%% fired %d of 10000", fired);
    d11_fault_reset();
}

static void test_expiry(void)
{
    d11_fault_reset();
    /* expiry on the hot path: nobody disarms */
    CHECK_RC(d11_fault_arm(D11_FP_CENTER_GRANT, D11_FA_DROP, 0, 100, 30, 11), 0);
    int64_t until = d11_mono_ms() + 30;
    CHECK_EQ(d11_fault(D11_FP_CENTER_GRANT).action, D11_FA_DROP);
    int64_t deadline = d11_mono_ms() + 5000;
    while (d11_mono_ms() <= until && d11_mono_ms() < deadline) (void)0; /* let the clock pass the expiry */
    CHECK_EQ(d11_fault(D11_FP_CENTER_GRANT).action, D11_FA_NONE);
    CHECK(!atomic_load(&d11__fault_any)); /* the hit disarmed it */
    CHECK_RC(d11_fault_disarm(D11_FP_CENTER_GRANT, 11), -ENOENT);

    /* expiry by a sweep: the point is never hit again */
    CHECK_RC(d11_fault_arm(D11_FP_RELAY_PUBLISH, D11_FA_FAIL, 0, 100, 30, 12), 0);
    CHECK_RC(d11_fault_sweep(d11_mono_ms()), 0); /* not yet */
    CHECK(atomic_load(&d11__fault_any));
    CHECK_RC(d11_fault_sweep(d11_mono_ms() + 31), 1);
    CHECK(!atomic_load(&d11__fault_any));
    d11_buf b;
    d11_buf_init(&b, 64);
    d11_fault_render(&b);
    CHECK(b.len == 2 && !memcmp(b.data, "[]", 2));
    d11_buf_free(&b);
}

/* ---- concurrent re-arming ---- */

static _Atomic int stop_readers;
static _Atomic uint64_t torn, seen;

static void *reader(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_readers)) {
        d11_fault_hit h = d11_fault(D11_FP_CELL_RECV);
        if (h.action == D11_FA_NONE) continue;
        atomic_fetch_add(&seen, 1);
        bool ok = h.action == D11_FA_DELAY ? (h.delay_ms == 1 || h.delay_ms == 2) : h.delay_ms == 0;
        if (!ok) atomic_fetch_add(&torn, 1);
    }
    return NULL;
}

static void test_concurrent(void)
{
    d11_fault_reset();
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, reader, NULL);
    for (int i = 0; i < 20000; i++) {
        int k = i % 4;
        uint64_t id = (uint64_t)i + 1;
        if (k == 0) d11_fault_arm(D11_FP_CELL_RECV, D11_FA_DELAY, 1, 100, 60000, id);
        else if (k == 1) d11_fault_arm(D11_FP_CELL_RECV, D11_FA_DROP, 0, 100, 60000, id);
        else if (k == 2) d11_fault_arm(D11_FP_CELL_RECV, D11_FA_DELAY, 2, 100, 60000, id);
        else d11_fault_disarm(D11_FP_CELL_RECV, id - 1);
    }
    atomic_store(&stop_readers, 1);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    CHECK_EQ(atomic_load(&torn), 0);
    printf("concurrent: %llu firings seen\n", (unsigned long long)atomic_load(&seen));
    d11_fault_reset();
}

int main(void)
{
    d11_log_init("test", D11_LOG_ERROR); /* arm/disarm lines are warnings */
    test_env_syntax();
    test_runtime_arm();
    test_expiry();
    test_concurrent();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail > 0;
}
