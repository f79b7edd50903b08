/*
 * loop.c — the event loop (see loop.h for the contract).
 *
 * epoll is level-triggered; each registered d11_io is its own epoll_event.data.ptr.
 * Delivering a batch: l->ev_i walks l->evs[0..nevs); d11_io_stop zeroes the later entries
 * that point at the stopped io, which is what makes stop-inside-a-callback safe even when
 * the io is freed or reused for another fd in the same iteration.
 * Timers: a binary min-heap of d11_timer pointers keyed by (at_ms, seq); each timer keeps
 * its heap index + 1 in `slot` so stop/move are O(log n). seq is a per-loop counter taken
 * at every arming: it breaks ties in arming order and lets the expiry pass skip timers
 * armed during the pass (seq >= the pass's first seq), which then fire next iteration.
 * Single-threaded except d11_wake_signal (a write(2) on an eventfd) and d11_loop_stop (an
 * atomic store).
 */

#include "loop.h"

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "util.h"

int d11_loop_init(d11_loop *l)
{
    memset(l, 0, sizeof *l);
    atomic_init(&l->stop, false);
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd == -1) return -errno;
    l->now_ms = d11_mono_ms();
    return 0;
}

void d11_loop_release(d11_loop *l)
{
    if (l->epfd >= 0) close(l->epfd);
    l->epfd = -1;
    l->ntimers = 0;
    l->nhooks = 0;
}

/* ---- I/O ---- */

static uint32_t to_epoll(uint32_t want)
{
    return ((want & D11_IO_READ) ? (uint32_t)EPOLLIN : 0) | ((want & D11_IO_WRITE) ? (uint32_t)EPOLLOUT : 0);
}

static uint32_t from_epoll(uint32_t ev)
{
    return ((ev & EPOLLIN) ? D11_IO_READ : 0) | ((ev & EPOLLOUT) ? D11_IO_WRITE : 0) |
           ((ev & (EPOLLHUP | EPOLLERR)) ? D11_IO_HUP : 0);
}

int d11_io_start(d11_loop *l, d11_io *io, int fd, uint32_t want, d11_io_fn *fn, void *data)
{
    D11_ASSERT(!io->active);
    D11_ASSERT((want & ~(uint32_t)(D11_IO_READ | D11_IO_WRITE)) == 0);
    D11_ASSERT(fn != NULL);
    io->fd = fd;
    io->fn = fn;
    io->data = data;
    io->want = want;
    struct epoll_event ev = {.events = to_epoll(want), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        int e = -errno;
        l->n_ctl_errors++;
        return e;
    }
    l->n_ctl_add++;
    io->active = true;
    return 0;
}

int d11_io_want(d11_loop *l, d11_io *io, uint32_t want)
{
    D11_ASSERT(io->active);
    D11_ASSERT((want & ~(uint32_t)(D11_IO_READ | D11_IO_WRITE)) == 0);
    if (want == io->want) return 0;
    struct epoll_event ev = {.events = to_epoll(want), .data.ptr = io};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, io->fd, &ev) == -1) {
        int e = -errno;
        l->n_ctl_errors++;
        return e;
    }
    l->n_ctl_mod++;
    io->want = want;
    return 0;
}

void d11_io_stop(d11_loop *l, d11_io *io)
{
    if (!io->active) return;
    io->active = false;
    /* Drop the events of this io still to be delivered in this iteration. */
    for (int i = l->ev_i + 1; i < l->nevs; i++)
        if (l->evs[i].data.ptr == io) l->evs[i].data.ptr = NULL;
    if (epoll_ctl(l->epfd, EPOLL_CTL_DEL, io->fd, NULL) == -1) {
        /* EBADF/ENOENT: the owner closed the fd before stopping it (the kernel has dropped
         * it already, unless the fd was dup'ed). Counted, not fatal. */
        l->n_ctl_errors++;
        d11_warn("epoll_ctl(DEL, fd %d): %s (fd closed before d11_io_stop?)", io->fd,
                 strerror(errno));
        return;
    }
    l->n_ctl_del++;
}

/* ---- timers: binary min-heap on (at_ms, seq) ---- */

static bool timer_before(const d11_timer *a, const d11_timer *b)
{
    return a->at_ms < b->at_ms || (a->at_ms == b->at_ms && a->seq < b->seq);
}

static void heap_set(d11_loop *l, uint32_t i, d11_timer *t)
{
    l->timers[i] = t;
    t->slot = i + 1;
}

static void heap_up(d11_loop *l, uint32_t i)
{
    d11_timer *t = l->timers[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (!timer_before(t, l->timers[p])) break;
        heap_set(l, i, l->timers[p]);
        i = p;
    }
    heap_set(l, i, t);
}

static void heap_down(d11_loop *l, uint32_t i)
{
    d11_timer *t = l->timers[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= l->ntimers) break;
        if (c + 1 < l->ntimers && timer_before(l->timers[c + 1], l->timers[c])) c++;
        if (!timer_before(l->timers[c], t)) break;
        heap_set(l, i, l->timers[c]);
        i = c;
    }
    heap_set(l, i, t);
}

static void heap_remove(d11_loop *l, d11_timer *t)
{
    uint32_t i = t->slot - 1;
    D11_ASSERT(i < l->ntimers && l->timers[i] == t);
    t->slot = 0;
    d11_timer *last = l->timers[--l->ntimers];
    if (last == t) return;
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->slot - 1);
}

static void heap_insert(d11_loop *l, d11_timer *t)
{
    D11_ASSERT(t->slot == 0);
    D11_ASSERT(l->ntimers < D11_LOOP_TIMERS_MAX); /* timers are static: raise the limit */
    t->seq = l->timer_seq++;
    l->timers[l->ntimers] = t;
    heap_up(l, l->ntimers++);
}

void d11_timer_start(d11_loop *l, d11_timer *t, int64_t after_ms, int64_t period_ms,
                     d11_timer_fn *fn, void *data)
{
    D11_ASSERT(fn != NULL && after_ms >= 0 && period_ms >= 0);
    if (t->slot) heap_remove(l, t);
    t->fn = fn;
    t->data = data;
    t->period_ms = period_ms;
    t->at_ms = d11_mono_ms() + after_ms;
    heap_insert(l, t);
}

void d11_timer_stop(d11_loop *l, d11_timer *t)
{
    if (t->slot) heap_remove(l, t);
}

/* Run the timers due at l->now_ms that were armed before this pass. */
static int run_timers(d11_loop *l)
{
    int ran = 0;
    uint64_t pass_seq = l->timer_seq;
    while (l->ntimers) {
        d11_timer *t = l->timers[0];
        if (t->at_ms > l->now_ms || t->seq >= pass_seq) break;
        heap_remove(l, t);
        if (t->period_ms > 0) {
            /* keep the cadence; after a stall, skip the missed ticks instead of bursting */
            t->at_ms += t->period_ms;
            if (t->at_ms <= l->now_ms) t->at_ms = l->now_ms + t->period_ms;
            heap_insert(l, t);
        }
        t->fn(l, t); /* may stop, move or re-arm t or any other timer */
        ran++;
    }
    return ran;
}

static int wait_ms(d11_loop *l, int max_wait_ms)
{
    if (l->nowait) return 0;
    int64_t w = max_wait_ms;
    if (l->ntimers) {
        int64_t until = l->timers[0]->at_ms - d11_mono_ms();
        if (until < 0) until = 0;
        if (w < 0 || until < w) w = until;
    }
    if (w > INT32_MAX) w = INT32_MAX;
    return (int)w;
}

/* ---- wakeup ---- */

static void wake_on_io(d11_loop *l, d11_io *io, uint32_t events)
{
    (void)events;
    d11_wake *w = io->data;
    uint64_t v;
    ssize_t r = read(io->fd, &v, sizeof v); /* resets the counter: signals coalesce */
    if (r != (ssize_t)sizeof v) return;     /* EAGAIN: a spurious wakeup */
    w->fn(l, w);
}

int d11_wake_init(d11_loop *l, d11_wake *w, void (*fn)(d11_loop *, d11_wake *), void *data)
{
    memset(w, 0, sizeof *w);
    w->fn = fn;
    w->data = data;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd == -1) return -errno;
    int rc = d11_io_start(l, &w->io, fd, D11_IO_READ, wake_on_io, w);
    if (rc < 0) {
        close(fd);
        w->io.fd = -1;
    }
    return rc;
}

void d11_wake_signal(d11_wake *w)
{
    uint64_t one = 1;
    /* EAGAIN only if the counter is at its 2^64-2 ceiling: a wakeup is pending anyway. */
    ssize_t r = write(w->io.fd, &one, sizeof one);
    (void)r;
}

void d11_wake_release(d11_loop *l, d11_wake *w)
{
    d11_io_stop(l, &w->io);
    if (w->io.fd >= 0) close(w->io.fd);
    w->io.fd = -1;
}

/* ---- hooks and iterations ---- */

int d11_loop_before_sleep(d11_loop *l, void (*fn)(d11_loop *, void *), void *data)
{
    D11_ASSERT(fn != NULL);
    if (l->nhooks >= D11_LOOP_HOOKS_MAX) return D11_EFULL;
    l->hooks[l->nhooks].fn = fn;
    l->hooks[l->nhooks].data = data;
    l->nhooks++;
    return 0;
}

int d11_loop_run_once(d11_loop *l, int max_wait_ms)
{
    D11_ASSERT(l->nevs == 0); /* not re-entered from a callback */
    int n = epoll_wait(l->epfd, l->evs, D11_LOOP_EVENTS_MAX, wait_ms(l, max_wait_ms));
    int err = n == -1 ? errno : 0;
    if (err && err != EINTR) return -err;
    if (n < 0) n = 0;
    l->n_iter++;
    l->now_ms = d11_mono_ms();
    int ran = 0;
    l->nevs = n;
    l->in_dispatch = true;
    for (l->ev_i = 0; l->ev_i < l->nevs; l->ev_i++) {
        d11_io *io = l->evs[l->ev_i].data.ptr;
        if (!io) continue; /* stopped earlier in this iteration */
        D11_ASSERT(io->active);
        io->fn(l, io, from_epoll(l->evs[l->ev_i].events));
        ran++;
    }
    l->nevs = l->ev_i = 0;
    l->now_ms = d11_mono_ms();
    ran += run_timers(l);
    l->in_dispatch = false;
    l->nowait = false; /* hooks (or anything outside an iteration) may set it again */
    for (uint32_t i = 0; i < l->nhooks; i++) l->hooks[i].fn(l, l->hooks[i].data);
    return ran;
}

void d11_loop_run(d11_loop *l)
{
    while (!d11_loop_stopping(l)) {
        int rc = d11_loop_run_once(l, D11_LOOP_RUN_WAIT_MS);
        if (rc < 0) d11_fatal("epoll_wait: %s", d11_strerror(rc));
    }
}

void d11_loop_stop(d11_loop *l)
{
    atomic_store_explicit(&l->stop, true, memory_order_relaxed);
}
