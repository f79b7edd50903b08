/*
 * events_thread.h — the cell process's event reader thread: EVENTS_READ requests are
 * answered OFF the logic thread, so a consumer reading a large page never delays an
 * order (the logic thread only queues the request and, later, sends the finished reply).
 *
 * Protocol: the logic thread submits (peer, frame) — the payload is copied; the reader
 * thread reads the outbox (its own read-only connection, outbox_read.h), builds the whole
 * reply frame (events_read.h) and queues (peer, frame) on the done list, then signals
 * done_fd (an eventfd the logic thread's loop watches). The logic thread collects and
 * sends. A full queue (D11_EVENTS_QUEUE_MAX) answers 503 at once.
 * Ownership: the reader and its statements belong to the thread; the queues are shared
 * under mu. Threads: submit/collect on the logic thread, the rest on the reader thread.
 */
#ifndef D11_CELL_EVENTS_THREAD_H
#define D11_CELL_EVENTS_THREAD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/util.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "../store/outbox_read.h"
#include "events_cache.h"

#define D11_EVENTS_QUEUE_MAX 256 /* EVENTS_READ requests waiting for the reader thread */

typedef struct cell_evthread {
    pthread_t          th;
    pthread_mutex_t    mu;
    pthread_cond_t     cv;
    int                done_fd;
    bool               stop, started;
    int                cell_id;
    d11_outbox_reader *r;        /* NULL: every read answers 503 */
    d11_buf            in;       /* queued requests: u32 peer, u32 len, frame header + payload */
    uint32_t           nin;
    d11_buf            out;      /* finished replies: u32 peer, u32 len, frame */
    d11_buf            spare;    /* the other reply list: collect swaps them (capacity kept) */
    d11_buf            body, frame, work; /* the thread's scratch */
    cell_evcache       cache[2];          /* rendered lines per stream (events_cache.h) */
} cell_evthread;

/* Start the thread over r (owned by it from now on). 0 or -errno. */
int  cell_evthread_start(cell_evthread *e, d11_outbox_reader *r, int cell_id);
/* Stop, join, close the reader. */
void cell_evthread_stop(cell_evthread *e);
/* Queue one EVENTS_READ (false: the queue is full; answer 503). */
bool cell_evthread_submit(cell_evthread *e, uint32_t peer, const d11_frame *f);
/* Hand every finished reply to send(ctx, peer, frame, n). Call when done_fd is readable. */
void cell_evthread_collect(cell_evthread *e, void (*send)(void *ctx, uint32_t peer, const uint8_t *f, size_t n),
                           void *ctx);

#endif
