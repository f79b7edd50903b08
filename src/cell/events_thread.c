/*
 * events_thread.c — the cell's event reader thread (events_thread.h).
 * Thread: see the header; every queue access holds mu, the SQLite work does not.
 */
#include "events_thread.h"

#include <pthread.h>
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "events_read.h"

static void *ev_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-events"); /* top -H, perf, /proc: who spends what */
    d11_thread_background(); /* below the order path under CPU saturation (core/util.h) */
    cell_evthread *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && e->nin == 0) pthread_cond_wait(&e->cv, &e->mu);
        if (e->stop) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        /* take the whole queue: swap buffers, work without the lock */
        d11_buf tmp = e->work;
        e->work = e->in;
        e->in = tmp;
        d11_buf_reset(&e->in);
        uint32_t n = e->nin;
        e->nin = 0;
        pthread_mutex_unlock(&e->mu);
        d11_wdec d;
        d11_wdec_init(&d, (const uint8_t *)e->work.data, e->work.len);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t peer = d11_wdec_u32(&d), len = d11_wdec_u32(&d);
            D11_ASSERT(!d.err && len <= d.n);
            d11_frame f;
            D11_ASSERT(d11_frame_hdr_decode(d.p, len, &f.hdr) == 0);
            f.payload = d.p + D11_FRAME_HDR_BYTES;
            f.payload_len = len - D11_FRAME_HDR_BYTES;
            d11_cell_events_reply(e->r, e->cache, e->cell_id, &f, &e->body, &e->frame);
            d.p += len;
            d.n -= len;
            pthread_mutex_lock(&e->mu);
            d11_wenc_u32(&e->out, peer);
            d11_wenc_u32(&e->out, (uint32_t)e->frame.len);
            d11_buf_append(&e->out, e->frame.data, e->frame.len);
            pthread_mutex_unlock(&e->mu);
            uint64_t one = 1;
            ssize_t w = write(e->done_fd, &one, sizeof one);
            (void)w; /* EAGAIN: the counter is already non-zero, the loop will wake */
        }
        d11_buf_reset(&e->work);
    }
}

int cell_evthread_start(cell_evthread *e, d11_outbox_reader *r, int cell_id)
{
    memset(e, 0, sizeof *e);
    e->r = r;
    e->cell_id = cell_id;
    e->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->done_fd < 0) return -errno;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    d11_buf_init(&e->in, 4096);
    d11_buf_init(&e->out, 4096);
    d11_buf_init(&e->spare, 4096);
    d11_buf_init(&e->work, 4096);
    d11_buf_init(&e->body, 4096);
    d11_buf_init(&e->frame, 4096);
    cell_evcache_init(&e->cache[0]);
    cell_evcache_init(&e->cache[1]);
    int rc = pthread_create(&e->th, NULL, ev_main, e);
    if (rc) return -rc;
    e->started = true;
    return 0;
}

void cell_evthread_stop(cell_evthread *e)
{
    if (e->started) {
        pthread_mutex_lock(&e->mu);
        e->stop = true;
        pthread_cond_signal(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->th, NULL);
        e->started = false;
    }
    d11_outbox_reader_close(e->r);
    e->r = NULL;
    if (e->done_fd >= 0) close(e->done_fd);
    e->done_fd = -1;
    d11_buf_free(&e->in);
    d11_buf_free(&e->out);
    d11_buf_free(&e->spare);
    d11_buf_free(&e->work);
    d11_buf_free(&e->body);
    d11_buf_free(&e->frame);
    cell_evcache_free(&e->cache[0]);
    cell_evcache_free(&e->cache[1]);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
}

bool cell_evthread_submit(cell_evthread *e, uint32_t peer, const d11_frame *f)
{
    pthread_mutex_lock(&e->mu);
    bool ok = e->nin < D11_EVENTS_QUEUE_MAX;
    if (ok) {
        uint8_t hdr[D11_FRAME_HDR_BYTES];
        d11_frame_hdr h = f->hdr;
        h.len = (uint32_t)(D11_FRAME_HDR_BYTES + f->payload_len);
        d11_frame_hdr_encode(&h, hdr);
        d11_wenc_u32(&e->in, peer);
        d11_wenc_u32(&e->in, h.len);
        d11_buf_append(&e->in, (const char *)hdr, sizeof hdr);
        d11_buf_append(&e->in, (const char *)f->payload, f->payload_len);
        e->nin++;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return ok;
}

void cell_evthread_collect(cell_evthread *e, void (*send)(void *ctx, uint32_t peer, const uint8_t *f, size_t n),
                           void *ctx)
{
    uint64_t v;
    ssize_t rd = read(e->done_fd, &v, sizeof v);
    (void)rd;
    pthread_mutex_lock(&e->mu);
    d11_buf got = e->out; /* take the list; the thread appends to the spare (it keeps its capacity:
                             no realloc growth and page faults for every page of events) */
    e->out = e->spare;
    e->spare = (d11_buf){0}; /* until `got` comes back below */
    pthread_mutex_unlock(&e->mu);
    d11_wdec d;
    d11_wdec_init(&d, (const uint8_t *)got.data, got.len);
    while (d.n > 0) {
        uint32_t peer = d11_wdec_u32(&d), len = d11_wdec_u32(&d);
        D11_ASSERT(!d.err && len <= d.n);
        send(ctx, peer, d.p, len);
        d.p += len;
        d.n -= len;
    }
    d11_buf_reset(&got);
    pthread_mutex_lock(&e->mu);
    e->spare = got;
    pthread_mutex_unlock(&e->mu);
}
