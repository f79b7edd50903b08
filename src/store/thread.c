/*
 * thread.c — the storage thread (see thread.h).
 */
#include "thread.h"
#include "../core/config.h"
#include "../core/fault.h"
#include "../core/util.h"

#include <pthread.h>
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

int d11_store_thread_init(d11_store_thread *t, d11_store *st, int durability, int64_t async_flush_ms)
{
    memset(t, 0, sizeof *t);
    t->store = st;
    t->durability = durability;
    t->async_flush_ms = async_flush_ms > 0 ? async_flush_ms : 10;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (t->done_fd == -1) return -errno;
    return 0;
}

static int commit_one(d11_store_thread *t, const uint8_t *ops, size_t len, uint32_t nops)
{
    if (nops == 0) return 0;
    d11_fault_hit fh = d11_fault(D11_FP_STORE_COMMIT);
    if (fh.action == D11_FA_FAIL) {
        d11_error("fault injection: failing a commit of %u records", nops);
        return D11_ESTORE;
    }
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a slow disk */
    return d11_store_commit(t->store, ops, len, nops);
}

/* Sync with mu held (released around the syscall). */
static void sync_locked(d11_store_thread *t)
{
    pthread_mutex_unlock(&t->mu);
    int rc = d11_store_sync(t->store);
    pthread_mutex_lock(&t->mu);
    t->last_sync_ms = d11_mono_ms();
    if (rc < 0) d11_error("async flush failed: %s", d11_strerror(rc));
    else t->unsynced = 0, t->syncs++;
}

static void *store_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-store"); /* top -H, perf, /proc: who spends what */
    d11_store_thread *t = arg;
    pthread_mutex_lock(&t->mu);
    t->last_sync_ms = d11_mono_ms();
    for (;;) {
        while (!t->todo && !t->quit) {
            if (t->durability == D11_DUR_ASYNC && t->unsynced) {
                /* Unsynced commits: sync at most one flush interval after the last sync,
                 * whether or not another commit comes (a busy stream of commits must not
                 * postpone it either: see the check after each commit below). */
                int64_t due = t->last_sync_ms + t->async_flush_ms;
                if (d11_mono_ms() >= due) {
                    sync_locked(t);
                    continue;
                }
                struct timespec ts = {.tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000};
                (void)pthread_cond_timedwait(&t->cv, &t->mu, &ts);
            } else {
                pthread_cond_wait(&t->cv, &t->mu);
            }
        }
        if (!t->todo && t->quit) break;
        const uint8_t *ops = t->ops;
        size_t len = t->len;
        uint32_t nops = t->nops;
        pthread_mutex_unlock(&t->mu);
        int64_t t0 = d11_mono_us();
        int rc = commit_one(t, ops, len, nops);
        int64_t us = d11_mono_us() - t0;
        pthread_mutex_lock(&t->mu);
        t->todo = false;
        t->done = true;
        t->result = rc;
        t->commit_us = us;
        if (rc == 0 && nops) {
            t->commits++;
            if (t->durability == D11_DUR_ASYNC) t->unsynced++; /* sync: COMMIT fsynced; none: never synced */
        }
        uint64_t one = 1;
        (void)!write(t->done_fd, &one, sizeof one);
        if (t->durability == D11_DUR_ASYNC && t->unsynced && d11_mono_ms() - t->last_sync_ms >= t->async_flush_ms)
            sync_locked(t);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

int d11_store_thread_start(d11_store_thread *t)
{
    int rc = pthread_create(&t->thread, NULL, store_main, t);
    if (rc) return -rc;
    t->started = true;
    return 0;
}

void d11_store_thread_submit(d11_store_thread *t, const uint8_t *ops, size_t len, uint32_t nops)
{
    pthread_mutex_lock(&t->mu);
    D11_ASSERT(!t->todo && !t->done);
    t->ops = ops;
    t->len = len;
    t->nops = nops;
    t->todo = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

bool d11_store_thread_collect(d11_store_thread *t, int *result, int64_t *commit_us)
{
    uint64_t v;
    (void)!read(t->done_fd, &v, sizeof v);
    pthread_mutex_lock(&t->mu);
    bool done = t->done;
    if (done) {
        *result = t->result;
        *commit_us = t->commit_us;
        t->done = false;
    }
    pthread_mutex_unlock(&t->mu);
    return done;
}

void d11_store_thread_counts(d11_store_thread *t, uint64_t *commits, uint64_t *syncs, uint64_t *unsynced)
{
    pthread_mutex_lock(&t->mu);
    *commits = t->commits;
    *syncs = t->syncs;
    *unsynced = t->unsynced;
    pthread_mutex_unlock(&t->mu);
}

void d11_store_thread_stop(d11_store_thread *t)
{
    if (t->started) {
        pthread_mutex_lock(&t->mu);
        t->quit = true;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);
        t->started = false;
    }
    if (t->durability == D11_DUR_ASYNC && t->unsynced) (void)d11_store_sync(t->store);
    if (t->done_fd >= 0) close(t->done_fd);
    t->done_fd = -1;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}
