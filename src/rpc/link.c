/*
 * link.c — the connection table (see link.h for the contract).
 *
 * Slots: t->v[cap], each with its d11_conn buffers allocated at init and kept across
 * closes (reset, not freed), so opening a link allocates nothing. Free slots are a LIFO
 * stack of indexes (t->free_v); the dirty list (t->dirty) holds the indexes of links with
 * output queued since the last flush, each at most once (k->dirty, k->dirty_pos make
 * removal on close O(1)). The flush pops from the end, so a link closed or newly dirtied
 * while flushing is handled without re-scanning.
 *
 * Transport: all bytes go through link_read and link_write (plain socket I/O through
 * d11_conn today). A TLS transport replaces these two (and the close of the fd); nothing
 * else in the table knows how bytes move. See docs/event-loop.md.
 *
 * Single-threaded: the loop's thread.
 */

#include "link.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- transport ---- */

/* Read what the socket has into k->c.in: 0, D11_ECLOSED on EOF or -errno. */
static int link_read(d11_link *k) { return d11_conn_read(&k->c); }

/* Write queued output: 0 all written, 1 bytes remain (want WRITE), -errno. */
static int link_write(d11_link *k) { return d11_conn_flush(&k->c); }

/* ---- dirty list ---- */

static void mark_dirty(d11_link *k)
{
    D11_ASSERT(k->open);
    d11_links *t = k->tab;
    if (!k->dirty) {
        D11_ASSERT(t->ndirty < t->cap);
        k->dirty = true;
        k->dirty_pos = t->ndirty;
        t->dirty[t->ndirty++] = k->idx;
    }
    /* Output queued outside the events/timers phase (before the first iteration, or by a
     * hook) must not wait for a whole epoll_wait before the flush hook sees it. */
    if (!t->loop->in_dispatch) d11_loop_nowait(t->loop);
}

static void unmark_dirty(d11_link *k)
{
    if (!k->dirty) return;
    d11_links *t = k->tab;
    D11_ASSERT(k->dirty_pos < t->ndirty && t->dirty[k->dirty_pos] == k->idx);
    uint32_t last = t->dirty[--t->ndirty];
    t->dirty[k->dirty_pos] = last;
    t->v[last].dirty_pos = k->dirty_pos;
    k->dirty = false;
}

/* ---- table ---- */

int d11_links_init(d11_links *t, d11_loop *loop, uint32_t cap, d11_link_frame_fn *on_frame,
                   d11_link_close_fn *on_close, void *data)
{
    memset(t, 0, sizeof *t);
    if (cap == 0 || !on_frame || !on_close) return -EINVAL;
    t->loop = loop;
    t->cap = cap;
    t->on_frame = on_frame;
    t->on_close = on_close;
    t->data = data;
    t->v = calloc(cap, sizeof *t->v);
    t->free_v = calloc(cap, sizeof *t->free_v);
    t->dirty = calloc(cap, sizeof *t->dirty);
    if (!t->v || !t->free_v || !t->dirty) {
        free(t->v);
        free(t->free_v);
        free(t->dirty);
        memset(t, 0, sizeof *t);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < cap; i++) {
        d11_link *k = &t->v[i];
        k->tab = t;
        k->idx = i;
        k->gen = 1;
        k->io.fd = -1;
        d11_conn_init(&k->c, -1);
        t->free_v[t->nfree++] = cap - 1 - i; /* slot 0 is handed out first */
    }
    return 0;
}

void d11_links_release(d11_links *t)
{
    if (!t->v) return;
    for (uint32_t i = 0; i < t->cap; i++)
        if (t->v[i].open) d11_link_close(&t->v[i], 0);
    if (t->lio) d11_io_stop(t->loop, t->lio);
    d11_timer_stop(t->loop, &t->accept_pause);
    for (uint32_t i = 0; i < t->cap; i++) d11_conn_release(&t->v[i].c);
    free(t->v);
    free(t->free_v);
    free(t->dirty);
    memset(t, 0, sizeof *t);
}

static void link_on_io(d11_loop *l, d11_io *io, uint32_t events);

d11_link *d11_links_add(d11_links *t, int fd)
{
    D11_ASSERT(fd >= 0);
    if (t->nfree == 0) {
        close(fd);
        t->n_refused_full++;
        return NULL;
    }
    d11_link *k = &t->v[t->free_v[t->nfree - 1]];
    D11_ASSERT(!k->open && !k->dirty && !k->io.active);
    k->c.fd = fd;
    k->c.in.len = k->c.out.len = 0;
    k->c.in_off = k->c.out_off = 0;
    k->c.want_write = false;
    k->data = NULL;
    int rc = d11_io_start(t->loop, &k->io, fd, D11_IO_READ, link_on_io, k);
    if (rc < 0) {
        d11_warn("links: cannot watch fd %d: %s", fd, d11_strerror(rc));
        close(fd);
        k->c.fd = -1;
        t->n_add_failed++;
        return NULL;
    }
    t->nfree--;
    k->open = true;
    t->nopen++;
    return k;
}

d11_link *d11_links_get(d11_links *t, uint32_t idx, uint32_t gen)
{
    if (idx >= t->cap) return NULL;
    d11_link *k = &t->v[idx];
    return k->open && k->gen == gen ? k : NULL;
}

void d11_link_close(d11_link *k, int why)
{
    if (!k->open) return;
    d11_links *t = k->tab;
    k->open = false; /* a close from inside on_close is a no-op */
    t->on_close(t, k, why);
    D11_ASSERT(!k->open); /* on_close must not reopen the slot */
    unmark_dirty(k);
    d11_io_stop(t->loop, &k->io);
    close(k->c.fd);
    k->c.fd = -1;
    /* Keep the buffers' memory: a frame being delivered may still point into `in`. */
    k->c.in.len = k->c.out.len = 0;
    k->c.in_off = k->c.out_off = 0;
    k->c.want_write = false;
    k->gen++;
    D11_ASSERT(t->nopen > 0 && t->nfree < t->cap);
    t->nopen--;
    t->free_v[t->nfree++] = k->idx;
}

/* Readiness of one link: WRITE only marks it dirty (writes happen in d11_links_flush);
 * READ/HUP reads, delivers whole frames, compacts, and closes on EOF/error/bad stream. */
static void link_on_io(d11_loop *l, d11_io *io, uint32_t events)
{
    (void)l;
    d11_link *k = io->data;
    d11_links *t = k->tab;
    D11_ASSERT(k->open);
    if (events & D11_IO_WRITE) mark_dirty(k);
    if (!(events & (D11_IO_READ | D11_IO_HUP))) return;
    uint32_t gen = k->gen;
    size_t before = k->c.in.len;
    int rc = link_read(k);
    bool progress = k->c.in.len != before;
    d11_frame f;
    int fr;
    while ((fr = d11_conn_frame(&k->c, &f)) == 1) {
        t->on_frame(t, k, &f);
        if (k->gen != gen) return; /* closed (maybe reused) inside on_frame */
    }
    d11_conn_compact(&k->c);
    if (fr < 0) d11_link_close(k, D11_EPROTO);
    else if (rc < 0) d11_link_close(k, rc);
    else if ((events & D11_IO_HUP) && !progress) d11_link_close(k, D11_ECLOSED); /* no spin */
}

/* ---- output ---- */

d11_buf *d11_link_out(d11_link *k)
{
    mark_dirty(k);
    return &k->c.out;
}

void d11_link_reply(d11_link *k, const d11_frame_hdr *req, uint32_t status, const char *code,
                    const char *body, size_t n)
{
    mark_dirty(k);
    d11_conn_reply(&k->c, req, status, code, body, n);
}

void d11_link_send(d11_link *k, const void *frame, size_t n)
{
    D11_ASSERT(n >= D11_FRAME_HDR_BYTES && n <= D11_FRAME_BYTES_MAX);
    mark_dirty(k);
    d11_buf_append(&k->c.out, frame, n);
}

void d11_links_flush(d11_links *t)
{
    while (t->ndirty) {
        d11_link *k = &t->v[t->dirty[--t->ndirty]];
        D11_ASSERT(k->open && k->dirty);
        k->dirty = false;
        t->n_flushed++;
        int rc = link_write(k);
        if (rc < 0) {
            d11_link_close(k, rc);
            continue;
        }
        if (d11_conn_pending(&k->c) > (size_t)D11_RPC_OUT_BYTES_MAX) {
            t->n_closed_slow++;
            d11_link_close(k, D11_ETOOBIG);
            continue;
        }
        int e = d11_io_want(t->loop, &k->io, D11_IO_READ | (rc == 1 ? D11_IO_WRITE : 0u));
        if (e < 0) {
            d11_link_close(k, e);
            continue;
        }
        k->c.want_write = rc == 1;
    }
}

void d11_links_flush_hook(d11_loop *l, void *links)
{
    (void)l;
    d11_links_flush(links);
}

/* ---- listener ---- */

static void accept_resume(d11_loop *l, d11_timer *tm)
{
    d11_links *t = tm->data;
    if (!t->lio || !t->lio->active) return;
    int rc = d11_io_want(l, t->lio, D11_IO_READ);
    if (rc < 0) d11_warn("links: cannot resume accepting: %s", d11_strerror(rc));
}

static void links_on_accept(d11_loop *l, d11_io *io, uint32_t events)
{
    (void)events;
    d11_links *t = io->data;
    for (int i = 0; i < D11_LINK_ACCEPT_BURST_MAX; i++) {
        int fd = d11_accept(io->fd);
        if (fd == -EAGAIN || fd == -EWOULDBLOCK) return;
        if (fd < 0) {
            t->n_accept_errors++;
            if (fd == -EMFILE || fd == -ENFILE || fd == -ENOBUFS || fd == -ENOMEM) {
                /* level-triggered: keep READ armed and we would spin; pause instead */
                d11_warn("accept: %s; pausing accepts for %d ms", d11_strerror(fd),
                         D11_LINK_ACCEPT_PAUSE_MS);
                if (d11_io_want(l, io, 0) == 0)
                    d11_timer_start(l, &t->accept_pause, D11_LINK_ACCEPT_PAUSE_MS, 0,
                                    accept_resume, t);
            }
            return;
        }
        d11_link *k = d11_links_add(t, fd);
        if (!k) {
            if (t->n_refused_full % 1000 == 1)
                d11_warn("links: table full (%u); %llu connections refused", t->cap,
                         (unsigned long long)t->n_refused_full);
            continue;
        }
        if (t->on_open) t->on_open(t, k);
    }
}

int d11_links_listen(d11_links *t, d11_io *lio, int lfd)
{
    D11_ASSERT(t->lio == NULL || t->lio == lio); /* one listener per table */
    int rc = d11_io_start(t->loop, lio, lfd, D11_IO_READ, links_on_accept, t);
    if (rc < 0) return rc;
    t->lio = lio;
    return 0;
}
