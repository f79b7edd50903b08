/*
 * thread.h — a storage thread: commits op logs through a d11_store off the owner's
 * logic thread, one batch at a time, and tells the owner through an eventfd.
 *
 * The owner (the cell) hands over a closed batch with d11_store_thread_submit (the bytes
 * must stay untouched until collected), keeps filling the next batch, and when `done_fd`
 * is readable calls d11_store_thread_collect for the result. Two-stage pipeline, no
 * locks on the owner's hot path besides one mutex handoff per batch.
 *
 * durability=async (config.h): COMMIT does not fsync; this thread syncs the store every
 * `async_flush_ms` while any commit is not yet synced — on a timer, so an acknowledged
 * order is on disk within one flush interval even when no further commit comes.
 *
 * Fault point store.commit (core/fault.h): a commit that fails as if the disk did.
 */
#ifndef D11_STORE_THREAD_H
#define D11_STORE_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

typedef struct d11_store_thread {
    d11_store      *store;
    int             durability;
    int64_t         async_flush_ms;
    pthread_t       thread;
    pthread_mutex_t mu;
    pthread_cond_t  cv;
    int             done_fd; /* eventfd, readable when a result is ready */
    /* guarded by mu */
    const uint8_t  *ops;
    size_t          len;
    uint32_t        nops;
    bool            todo, done, quit, started;
    int             result;
    int64_t         commit_us;
    uint64_t        unsynced;    /* commits not yet synced (async) */
    int64_t         last_sync_ms; /* CLOCK_MONOTONIC, same base as pthread_cond_timedwait's clock */
    uint64_t        commits, syncs;
} d11_store_thread;

/* 0 or -errno. The store stays the caller's. */
int  d11_store_thread_init(d11_store_thread *t, d11_store *st, int durability, int64_t async_flush_ms);
int  d11_store_thread_start(d11_store_thread *t);
/* Hand over one batch (none may be in flight). */
void d11_store_thread_submit(d11_store_thread *t, const uint8_t *ops, size_t len, uint32_t nops);
/* After done_fd was readable: true and the result (0 or < 0) when the batch finished. */
bool d11_store_thread_collect(d11_store_thread *t, int *result, int64_t *commit_us);
/* Counters (any thread). */
void d11_store_thread_counts(d11_store_thread *t, uint64_t *commits, uint64_t *syncs, uint64_t *unsynced);
/* Stop (after the last batch was collected): a final sync in async mode, join. */
void d11_store_thread_stop(d11_store_thread *t);

#endif
