/*
 * test_store_thread.c — unit test of src/store/thread.{h,c}, the storage thread that
 * commits op logs through a d11_store off the owner's logic thread.
 *
 * The store under it is a counting fake (below): it records every commit (the batch's
 * first u32, so the order can be checked) and every sync, and fails the commit number it
 * is told to. Results come back the way the cell gets them: poll(done_fd) then collect.
 *
 * What is checked:
 *   - durability=async with async_flush_ms = 50: ONE batch, collected, then — with no
 *     further commit — the thread syncs on its timer: syncs == 1 and unsynced == 0 within
 *     3 s (polled, never a fixed sleep). This is defect 3 of issue 7: the old cell storage
 *     thread synced only when a LATER commit came, so an acknowledged order could stay
 *     unflushed for as long as traffic paused (1.5 s measured). Nothing syncs twice, and
 *     stop adds no sync when nothing is unsynced;
 *   - async: stop syncs what is still unsynced (a long flush interval, one commit);
 *   - sync and none modes never call sync;
 *   - a failing commit is reported as the batch's result (D11_ESTORE), is not counted as
 *     a commit, and the next batch commits normally; an empty batch never reaches the store;
 *   - 100 batches in a row (sync, and async with a 1 ms flush) are committed and collected
 *     in order, each with result 0; collect before anything finished says false.
 * Threads: the test thread plus the storage thread; the fake's counters are under its own
 * mutex. Output: failed checks, then "N passed, N failed"; exit 1 on failure.
 */
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/config.h"
#include "core/util.h"
#include "store/thread.h"

#include "check.h"

#define WAIT_MS 3000 /* the longest any expected event may take */

/* ---- a counting fake store ---- */

#define SEEN_MAX 256

typedef struct fake_store {
    d11_store       base;
    pthread_mutex_t mu;
    uint64_t        calls, commits, syncs;
    uint64_t        fail_at; /* fail the commit call with this number (1-based; 0 = never) */
    uint32_t        seen[SEEN_MAX];
    uint32_t        nseen;
} fake_store;

static int fake_load(d11_store *s, d11_store_apply_fn *fn, void *ctx)
{
    (void)s, (void)fn, (void)ctx;
    return 0;
}

static int fake_commit(d11_store *base, const uint8_t *ops, size_t len, uint32_t nops)
{
    fake_store *f = (fake_store *)base;
    pthread_mutex_lock(&f->mu);
    int rc = 0;
    f->calls++;
    if (f->fail_at && f->calls == f->fail_at) {
        rc = D11_ESTORE;
    } else {
        uint32_t first = 0;
        if (len >= 4) memcpy(&first, ops, 4);
        if (f->nseen < SEEN_MAX) f->seen[f->nseen++] = first;
        f->commits++;
    }
    (void)nops;
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static int fake_sync(d11_store *base)
{
    fake_store *f = (fake_store *)base;
    pthread_mutex_lock(&f->mu);
    f->syncs++;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void fake_close(d11_store *base) { (void)base; }

static const d11_store_ops fake_ops = {"fake", fake_load, fake_commit, fake_sync, fake_close};

static void fake_init(fake_store *f)
{
    memset(f, 0, sizeof *f);
    f->base.ops = &fake_ops;
    pthread_mutex_init(&f->mu, NULL);
}

static void fake_counts(fake_store *f, uint64_t *calls, uint64_t *commits, uint64_t *syncs)
{
    pthread_mutex_lock(&f->mu);
    *calls = f->calls;
    *commits = f->commits;
    *syncs = f->syncs;
    pthread_mutex_unlock(&f->mu);
}

/* ---- helpers ---- */

static int64_t now_ms(void) { return d11_mono_ms(); }

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Wait for the submitted batch's result. false when none came within WAIT_MS. */
static bool wait_result(d11_store_thread *t, int *result)
{
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        int64_t left = end - now_ms();
        if (left <= 0) return false;
        struct pollfd p = {.fd = t->done_fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)left);
        if (rc == 1) {
            int64_t us;
            if (d11_store_thread_collect(t, result, &us)) return true;
        }
    }
}

/* Submit one batch whose first u32 is `seq` and wait for its result (INT32_MIN: none). */
static int commit_seq(d11_store_thread *t, uint8_t buf[8], uint32_t seq)
{
    memcpy(buf, &seq, 4);
    memset(buf + 4, 0xab, 4);
    d11_store_thread_submit(t, buf, 8, 1);
    int result;
    return wait_result(t, &result) ? result : INT32_MIN;
}

/* Poll the thread's counters until syncs >= want_syncs and unsynced == 0, or WAIT_MS. */
static bool wait_synced(d11_store_thread *t, uint64_t want_syncs)
{
    int64_t end = now_ms() + WAIT_MS;
    for (;;) {
        uint64_t c, s, u;
        d11_store_thread_counts(t, &c, &s, &u);
        if (s >= want_syncs && u == 0) return true;
        if (now_ms() >= end) return false;
        nap_ms(2);
    }
}

/* ---- tests ---- */

/* Defect 3 (issue 7): one commit in async mode must be synced by the timer alone. */
static void test_async_timer_flush(void)
{
    fake_store f;
    fake_init(&f);
    d11_store_thread t;
    CHECK_RC(d11_store_thread_init(&t, &f.base, D11_DUR_ASYNC, 50), 0);
    CHECK_RC(d11_store_thread_start(&t), 0);
    int result;
    int64_t us;
    CHECK(!d11_store_thread_collect(&t, &result, &us)); /* nothing submitted: nothing done */
    uint8_t buf[8];
    int64_t t0 = now_ms();
    CHECK_RC(commit_seq(&t, buf, 1), 0);
    /* no further commit: only the flush timer can sync now */
    bool synced = wait_synced(&t, 1);
    CHECKF(synced, "async: one commit still unsynced %lld ms later (no timer flush)", (long long)(now_ms() - t0));
    uint64_t c, s, u;
    d11_store_thread_counts(&t, &c, &s, &u);
    CHECK_EQ(c, 1);
    CHECK_EQ(s, 1);
    CHECK_EQ(u, 0);
    d11_store_thread_stop(&t);
    uint64_t calls, commits, syncs;
    fake_counts(&f, &calls, &commits, &syncs);
    CHECK_EQ(commits, 1);
    CHECK_EQ(syncs, 1); /* the timer's, once; stop had nothing left to sync */
    pthread_mutex_destroy(&f.mu);
}

/* async: what is unsynced at stop is synced by stop. */
static void test_async_stop_syncs(void)
{
    fake_store f;
    fake_init(&f);
    d11_store_thread t;
    CHECK_RC(d11_store_thread_init(&t, &f.base, D11_DUR_ASYNC, 600000), 0);
    CHECK_RC(d11_store_thread_start(&t), 0);
    uint8_t buf[8];
    CHECK_RC(commit_seq(&t, buf, 7), 0);
    uint64_t c, s, u;
    d11_store_thread_counts(&t, &c, &s, &u);
    CHECK_EQ(c, 1);
    CHECK_EQ(s, 0); /* the interval is ten minutes: not yet */
    CHECK_EQ(u, 1);
    d11_store_thread_stop(&t);
    uint64_t calls, commits, syncs;
    fake_counts(&f, &calls, &commits, &syncs);
    CHECK_EQ(syncs, 1);
    pthread_mutex_destroy(&f.mu);
}

/* sync and none: the store's sync is never called; a failing commit is the result. */
static void test_no_sync_modes_and_failure(int durability)
{
    fake_store f;
    fake_init(&f);
    f.fail_at = 3;
    d11_store_thread t;
    CHECK_RC(d11_store_thread_init(&t, &f.base, durability, 1), 0);
    CHECK_RC(d11_store_thread_start(&t), 0);
    uint8_t buf[8];
    CHECK_RC(commit_seq(&t, buf, 0), 0);
    CHECK_RC(commit_seq(&t, buf, 1), 0);
    CHECK_RC(commit_seq(&t, buf, 2), D11_ESTORE); /* the third store call fails */
    CHECK_RC(commit_seq(&t, buf, 3), 0);          /* and the next one is fine */
    /* an empty batch is answered without reaching the store */
    d11_store_thread_submit(&t, buf, 0, 0);
    int result = 1;
    CHECK(wait_result(&t, &result));
    CHECK_RC(result, 0);
    for (uint32_t i = 4; i < 10; i++) CHECK_RC(commit_seq(&t, buf, i), 0);
    uint64_t c, s, u;
    d11_store_thread_counts(&t, &c, &s, &u);
    CHECK_EQ(c, 9); /* ten batches with records, one failed */
    CHECK_EQ(s, 0);
    d11_store_thread_stop(&t);
    uint64_t calls, commits, syncs;
    fake_counts(&f, &calls, &commits, &syncs);
    CHECK_EQ(calls, 10);
    CHECK_EQ(commits, 9);
    CHECKF(syncs == 0, "durability %d: sync called %llu times", durability, (unsigned long long)syncs);
    bool order_ok = f.nseen == 9;
    for (uint32_t i = 0; i < f.nseen && order_ok; i++) order_ok = f.seen[i] == (i < 2 ? i : i + 1);
    CHECK(order_ok);
    pthread_mutex_destroy(&f.mu);
}

/* 100 batches in a row, collected in order. */
static void test_many_in_order(int durability, int64_t flush_ms)
{
    fake_store f;
    fake_init(&f);
    d11_store_thread t;
    CHECK_RC(d11_store_thread_init(&t, &f.base, durability, flush_ms), 0);
    CHECK_RC(d11_store_thread_start(&t), 0);
    static uint8_t bufs[100][8]; /* each batch its own bytes, untouched until collected */
    int bad = 0;
    for (uint32_t i = 0; i < 100; i++) {
        int rc = commit_seq(&t, bufs[i], 1000 + i);
        if (rc != 0) {
            printf("  batch %u: result %d\n", i, rc);
            bad++;
        }
    }
    CHECK_EQ(bad, 0);
    uint64_t c, s, u;
    d11_store_thread_counts(&t, &c, &s, &u);
    CHECK_EQ(c, 100);
    if (durability == D11_DUR_ASYNC) CHECK(wait_synced(&t, 1));
    d11_store_thread_stop(&t);
    bool order_ok = f.nseen == 100;
    for (uint32_t i = 0; i < f.nseen && order_ok; i++) order_ok = f.seen[i] == 1000 + i;
    CHECK(order_ok);
    uint64_t calls, commits, syncs;
    fake_counts(&f, &calls, &commits, &syncs);
    CHECK_EQ(commits, 100);
    if (durability != D11_DUR_ASYNC) CHECK_EQ(syncs, 0);
    else CHECK(syncs >= 1);
    pthread_mutex_destroy(&f.mu);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    d11_log_init("test_store_thread", D11_LOG_ERROR + 1);
    test_async_timer_flush();
    test_async_stop_syncs();
    test_no_sync_modes_and_failure(D11_DUR_SYNC);
    test_no_sync_modes_and_failure(D11_DUR_NONE);
    test_many_in_order(D11_DUR_SYNC, 50);
    test_many_in_order(D11_DUR_ASYNC, 1);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
