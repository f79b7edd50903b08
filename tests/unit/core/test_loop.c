/*
 * test_loop.c — unit test of src/core/loop.{h,c}, the event loop.
 *
 * What is checked:
 *   - timers: fire earliest first, equal deadlines in arming order; a periodic timer keeps
 *     firing until stopped inside its own callback; re-arming moves a timer (before and
 *     from inside its callback); a 0 ms timer re-armed from its callback fires once per
 *     iteration (cannot starve I/O); a random heap of 600 timers with half of them stopped
 *     fires exactly the others, in deadline order; epoll_wait sleeps until the next timer
 *     and not past it; arming past D11_LOOP_TIMERS_MAX is a named limit (checked by value);
 *   - I/O: an io stopped inside another io's callback does not receive the event already
 *     fetched for it in the same iteration; stop inside its own callback; d11_io_want issues
 *     EPOLL_CTL_MOD only on change; epoll_ctl failures come back as -errno (-EBADF closed fd,
 *     -EPERM regular file, -EEXIST twice) and leave the io inactive;
 *   - d11_wake: signals from another thread run fn on the loop thread; a thread stopping
 *     the loop (stop + wake) makes d11_loop_run return;
 *   - before-sleep hooks run once per iteration, after events and timers, in order; the
 *     D11_LOOP_HOOKS_MAX limit returns D11_EFULL; d11_loop_nowait skips the sleep.
 * Output: failed checks, then "N passed, N failed"; exit 1 on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/loop.h"
#include "core/util.h"

#include "check.h"

/* ---- timers ---- */

typedef struct rec {
    int     order[1024];
    int     n;
    int64_t at[1024];
} rec;

static rec R;

static void rec_fire(d11_loop *l, d11_timer *t)
{
    (void)l;
    if (R.n < 1024) {
        R.at[R.n] = t->at_ms;
        R.order[R.n++] = (int)(intptr_t)t->data;
    }
}

/* Run iterations until `n` records exist or ms pass. */
static void run_until(d11_loop *l, int n, int64_t ms)
{
    int64_t end = d11_mono_ms() + ms;
    while (R.n < n && d11_mono_ms() < end) CHECK(d11_loop_run_once(l, 50) >= 0);
}

static void test_timer_order(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    memset(&R, 0, sizeof R);
    d11_timer t[8] = {0};
    d11_timer_start(&l, &t[0], 30, 0, rec_fire, (void *)(intptr_t)3);
    d11_timer_start(&l, &t[1], 10, 0, rec_fire, (void *)(intptr_t)1);
    d11_timer_start(&l, &t[2], 20, 0, rec_fire, (void *)(intptr_t)2);
    /* equal (0 ms) deadlines fire in arming order */
    for (int i = 3; i < 8; i++) d11_timer_start(&l, &t[i], 0, 0, rec_fire, (void *)(intptr_t)(10 + i));
    run_until(&l, 8, 2000);
    CHECK_EQ(R.n, 8);
    int want[8] = {13, 14, 15, 16, 17, 1, 2, 3};
    for (int i = 0; i < 8; i++) CHECKF(R.order[i] == want[i], "fire %d: %d, want %d", i, R.order[i], want[i]);
    for (int i = 0; i < 8; i++) CHECK(!d11_timer_armed(&t[i]));
    CHECK_EQ(l.ntimers, 0);
    d11_loop_release(&l);
}

static int n_periodic;
static void periodic_fire(d11_loop *l, d11_timer *t)
{
    if (++n_periodic == 3) d11_timer_stop(l, t); /* stop inside its own callback */
}

static void test_timer_periodic_stop_inside(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    d11_timer t = {0};
    n_periodic = 0;
    int64_t t0 = d11_mono_ms();
    d11_timer_start(&l, &t, 5, 5, periodic_fire, NULL);
    while (n_periodic < 3 && d11_mono_ms() - t0 < 2000) d11_loop_run_once(&l, 50);
    CHECK_EQ(n_periodic, 3);
    CHECK(d11_mono_ms() - t0 >= 15); /* three 5 ms periods */
    CHECK(!d11_timer_armed(&t));
    for (int i = 0; i < 5; i++) d11_loop_run_once(&l, 10);
    CHECK_EQ(n_periodic, 3);
    d11_timer_stop(&l, &t); /* idempotent */
    CHECK_EQ(l.ntimers, 0);
    d11_loop_release(&l);
}

static int n_rearm;
static void rearm_fire(d11_loop *l, d11_timer *t)
{
    if (++n_rearm < 3) d11_timer_start(l, t, 1, 0, rearm_fire, NULL); /* re-arm from inside */
}

static void test_timer_rearm(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    memset(&R, 0, sizeof R);
    d11_timer t = {0};
    int64_t t0 = d11_mono_ms();
    d11_timer_start(&l, &t, 60000, 0, rec_fire, (void *)(intptr_t)7);
    d11_timer_start(&l, &t, 5, 0, rec_fire, (void *)(intptr_t)8); /* moves it */
    CHECK_EQ(l.ntimers, 1);
    run_until(&l, 1, 2000);
    CHECK_EQ(R.n, 1);
    CHECK_EQ(R.order[0], 8);
    CHECK(d11_mono_ms() - t0 < 1000);
    for (int i = 0; i < 3; i++) d11_loop_run_once(&l, 10);
    CHECK_EQ(R.n, 1); /* one-shot: fired once */

    n_rearm = 0;
    d11_timer_start(&l, &t, 0, 0, rearm_fire, NULL);
    for (int i = 0; i < 50 && n_rearm < 3; i++) d11_loop_run_once(&l, 20);
    CHECK_EQ(n_rearm, 3);
    CHECK(!d11_timer_armed(&t));
    d11_loop_release(&l);
}

static int n_zero;
static void zero_fire(d11_loop *l, d11_timer *t)
{
    n_zero++;
    d11_timer_start(l, t, 0, 0, zero_fire, NULL);
}

static void test_timer_zero_no_starve(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    d11_timer t = {0};
    n_zero = 0;
    d11_timer_start(&l, &t, 0, 0, zero_fire, NULL);
    for (int i = 0; i < 10; i++) CHECK_RC(d11_loop_run_once(&l, 100), 1);
    CHECK_EQ(n_zero, 10); /* exactly one fire per iteration */
    d11_timer_stop(&l, &t);
    d11_loop_release(&l);
}

static void test_timer_heap_random(void)
{
    enum { N = 600 };
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    memset(&R, 0, sizeof R);
    static d11_timer t[N];
    memset(t, 0, sizeof t);
    srand(11);
    for (int i = 0; i < N; i++) d11_timer_start(&l, &t[i], rand() % 30, 0, rec_fire, (void *)(intptr_t)i);
    for (int i = 0; i < N; i += 3) d11_timer_start(&l, &t[i], rand() % 30, 0, rec_fire, (void *)(intptr_t)i);
    bool stopped[N] = {0};
    for (int i = 0; i < N; i++)
        if (rand() % 2) {
            d11_timer_stop(&l, &t[i]);
            stopped[i] = true;
        }
    int live = 0;
    for (int i = 0; i < N; i++) live += !stopped[i];
    CHECK_EQ(l.ntimers, live);
    run_until(&l, live, 3000);
    CHECK_EQ(R.n, live);
    int bad_order = 0, bad_stopped = 0;
    bool seen[N] = {0};
    for (int i = 0; i < R.n; i++) {
        if (i && R.at[i] < R.at[i - 1]) bad_order++;
        int id = R.order[i];
        if (stopped[id] || seen[id]) bad_stopped++;
        seen[id] = true;
    }
    CHECK_EQ(bad_order, 0);
    CHECK_EQ(bad_stopped, 0);
    d11_loop_release(&l);
}

static void test_timer_wait(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    memset(&R, 0, sizeof R);
    d11_timer t = {0};
    int64_t t0 = d11_mono_ms();
    d11_timer_start(&l, &t, 30, 0, rec_fire, NULL);
    /* one long wait: epoll_wait must wake for the timer, not sleep 5 s */
    int rc = d11_loop_run_once(&l, 5000);
    if (rc == 0) rc = d11_loop_run_once(&l, 5000); /* a coarse clock may wake 1 ms early */
    int64_t dt = d11_mono_ms() - t0;
    CHECK_RC(rc, 1);
    CHECKF(dt >= 30 && dt < 1000, "waited %lld ms", (long long)dt);
    /* no timers and max_wait 20: returns after ~20 ms with nothing done */
    t0 = d11_mono_ms();
    CHECK_RC(d11_loop_run_once(&l, 20), 0);
    dt = d11_mono_ms() - t0;
    CHECKF(dt >= 19 && dt < 1000, "waited %lld ms", (long long)dt);
    d11_loop_release(&l);
}

/* ---- I/O ---- */

typedef struct pipe_io {
    d11_io io;
    int    p[2];
    int    calls;
    struct pipe_io *other;
} pipe_io;

static void stop_other(d11_loop *l, d11_io *io, uint32_t ev)
{
    pipe_io *me = io->data;
    me->calls++;
    CHECK(ev & D11_IO_READ);
    d11_io_stop(l, &me->other->io);
    /* reuse the other's memory at once, as a free + malloc would */
    close(me->other->p[0]);
    memset(&me->other->io, 0xa5, sizeof me->other->io);
    me->other->io.active = false;
}

static void stop_self(d11_loop *l, d11_io *io, uint32_t ev)
{
    (void)ev;
    pipe_io *me = io->data;
    me->calls++;
    d11_io_stop(l, io);
}

static void test_io_stop_suppresses(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    pipe_io a = {0}, b = {0};
    CHECK(pipe2(a.p, O_NONBLOCK | O_CLOEXEC) == 0);
    CHECK(pipe2(b.p, O_NONBLOCK | O_CLOEXEC) == 0);
    a.other = &b;
    b.other = &a;
    CHECK_RC(d11_io_start(&l, &a.io, a.p[0], D11_IO_READ, stop_other, &a), 0);
    CHECK_RC(d11_io_start(&l, &b.io, b.p[0], D11_IO_READ, stop_other, &b), 0);
    CHECK(write(a.p[1], "x", 1) == 1);
    CHECK(write(b.p[1], "x", 1) == 1);
    /* both are ready in the same epoll_wait; whichever runs first stops the other */
    CHECK_RC(d11_loop_run_once(&l, 1000), 1);
    CHECK_EQ(a.calls + b.calls, 1);
    pipe_io *alive = a.calls ? &a : &b;
    CHECK(alive->io.active);
    d11_io_stop(&l, &alive->io);
    close(alive->p[0]);
    close(a.p[1]);
    close(b.p[1]);

    /* stop inside its own callback: no further deliveries although still readable */
    pipe_io c = {0};
    CHECK(pipe2(c.p, O_NONBLOCK | O_CLOEXEC) == 0);
    CHECK_RC(d11_io_start(&l, &c.io, c.p[0], D11_IO_READ, stop_self, &c), 0);
    CHECK(write(c.p[1], "x", 1) == 1);
    CHECK_RC(d11_loop_run_once(&l, 1000), 1);
    CHECK_RC(d11_loop_run_once(&l, 10), 0);
    CHECK_EQ(c.calls, 1);
    CHECK(!c.io.active);
    close(c.p[0]);
    close(c.p[1]);
    d11_loop_release(&l);
}

static void count_io(d11_loop *l, d11_io *io, uint32_t ev)
{
    (void)l;
    (void)ev;
    ((pipe_io *)io->data)->calls++;
}

static void test_io_ctl(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    d11_io io = {0};
    int p[2];
    CHECK(pipe2(p, O_NONBLOCK | O_CLOEXEC) == 0);
    int dead = dup(p[0]);
    close(dead);
    CHECK_RC(d11_io_start(&l, &io, dead, D11_IO_READ, count_io, NULL), -EBADF);
    CHECK(!io.active);
    CHECK_EQ(l.n_ctl_errors, 1);
    char path[] = "/tmp/d11-loop-XXXXXX";
    int ffd = mkstemp(path);
    CHECK(ffd >= 0);
    unlink(path);
    CHECK_RC(d11_io_start(&l, &io, ffd, D11_IO_READ, count_io, NULL), -EPERM);
    CHECK(!io.active);
    close(ffd);

    pipe_io w = {0};
    CHECK_RC(d11_io_start(&l, &w.io, p[1], 0, count_io, &w), 0);
    d11_io twice = {0};
    CHECK_RC(d11_io_start(&l, &twice, p[1], D11_IO_READ, count_io, NULL), -EEXIST);
    CHECK(!twice.active);
    uint64_t mods = l.n_ctl_mod;
    CHECK_RC(d11_io_want(&l, &w.io, 0), 0); /* unchanged: no syscall */
    CHECK_EQ(l.n_ctl_mod, mods);
    CHECK_RC(d11_loop_run_once(&l, 10), 0); /* nothing requested: nothing delivered */
    CHECK_RC(d11_io_want(&l, &w.io, D11_IO_WRITE), 0);
    CHECK_EQ(l.n_ctl_mod, mods + 1);
    CHECK_RC(d11_io_want(&l, &w.io, D11_IO_WRITE), 0);
    CHECK_EQ(l.n_ctl_mod, mods + 1);
    CHECK_RC(d11_loop_run_once(&l, 1000), 1); /* the pipe is writable */
    CHECK_EQ(w.calls, 1);
    /* a MOD that fails is reported and leaves want as it was (fd no longer in the set) */
    d11_io_stop(&l, &w.io);
    CHECK(!w.io.active);
    w.io.active = true; /* pretend it still is */
    CHECK_RC(d11_io_want(&l, &w.io, D11_IO_READ), -ENOENT);
    CHECK_EQ(w.io.want, D11_IO_WRITE);
    w.io.active = false;
    close(p[1]);
    close(p[0]);
    d11_loop_release(&l);
}

/* ---- wake ---- */

typedef struct wake_ctx {
    d11_wake w;
    int      runs;
    pthread_t self;
    bool     on_loop_thread;
} wake_ctx;

static void wake_fn(d11_loop *l, d11_wake *w)
{
    (void)l;
    wake_ctx *c = w->data;
    c->runs++;
    c->on_loop_thread = pthread_equal(pthread_self(), c->self);
}

static void *signal_thread(void *arg)
{
    wake_ctx *c = arg;
    for (int i = 0; i < 100; i++) d11_wake_signal(&c->w);
    return NULL;
}

typedef struct stopper {
    d11_loop *l;
    d11_wake *w;
} stopper;

static void *stop_thread(void *arg)
{
    stopper *s = arg;
    d11_loop_stop(s->l);
    d11_wake_signal(s->w);
    return NULL;
}

static void test_wake(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    wake_ctx c = {.self = pthread_self()};
    CHECK_RC(d11_wake_init(&l, &c.w, wake_fn, &c), 0);
    c.self = pthread_self();
    CHECK_RC(d11_loop_run_once(&l, 10), 0);
    CHECK_EQ(c.runs, 0);
    pthread_t th;
    CHECK(pthread_create(&th, NULL, signal_thread, &c) == 0);
    pthread_join(th, NULL);
    CHECK_RC(d11_loop_run_once(&l, 5000), 1); /* 100 signals coalesce into one run */
    CHECK_EQ(c.runs, 1);
    CHECK(c.on_loop_thread);
    CHECK_RC(d11_loop_run_once(&l, 10), 0);
    CHECK_EQ(c.runs, 1);

    /* a stop from another thread, followed by a wake, ends d11_loop_run at once */
    stopper s = {&l, &c.w};
    int64_t t0 = d11_mono_ms();
    CHECK(pthread_create(&th, NULL, stop_thread, &s) == 0);
    d11_loop_run(&l);
    pthread_join(th, NULL);
    CHECK(d11_loop_stopping(&l));
    CHECK(d11_mono_ms() - t0 < D11_LOOP_RUN_WAIT_MS * 5);
    d11_wake_release(&l, &c.w);
    CHECK_EQ(c.w.io.fd, -1);
    d11_loop_release(&l);
}

/* ---- hooks ---- */

static int hook_log[64], hook_n;
static int io_seen_at_hook;
static pipe_io *hook_pipe;

static void hook_fn(d11_loop *l, void *data)
{
    (void)l;
    if (hook_n < 64) hook_log[hook_n++] = (int)(intptr_t)data;
    if (hook_pipe) io_seen_at_hook = hook_pipe->calls;
}

static void test_hooks(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    hook_n = 0;
    for (int i = 1; i <= 3; i++) CHECK_RC(d11_loop_before_sleep(&l, hook_fn, (void *)(intptr_t)i), 0);
    for (int i = 3; i < D11_LOOP_HOOKS_MAX; i++) CHECK_RC(d11_loop_before_sleep(&l, hook_fn, (void *)(intptr_t)9), 0);
    CHECK_RC(d11_loop_before_sleep(&l, hook_fn, NULL), D11_EFULL);
    l.nhooks = 3;
    /* the hooks see the iteration's I/O already delivered */
    pipe_io p = {0};
    hook_pipe = &p;
    CHECK(pipe2(p.p, O_NONBLOCK | O_CLOEXEC) == 0);
    CHECK_RC(d11_io_start(&l, &p.io, p.p[1], D11_IO_WRITE, count_io, &p), 0);
    CHECK_RC(d11_loop_run_once(&l, 1000), 1);
    CHECK_EQ(io_seen_at_hook, 1);
    d11_io_stop(&l, &p.io);
    CHECK_RC(d11_loop_run_once(&l, 0), 0);
    CHECK_EQ(hook_n, 6);
    int want[6] = {1, 2, 3, 1, 2, 3};
    for (int i = 0; i < 6; i++) CHECK_EQ(hook_log[i], want[i]);
    hook_pipe = NULL;
    close(p.p[0]);
    close(p.p[1]);

    /* nowait: the next iteration does not sleep although nothing is ready */
    d11_loop_nowait(&l);
    int64_t t0 = d11_mono_ms();
    CHECK_RC(d11_loop_run_once(&l, 3000), 0);
    CHECK(d11_mono_ms() - t0 < 1000);
    CHECK(!l.nowait);
    d11_loop_release(&l);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    d11_log_init("test_loop", D11_LOG_ERROR);
    test_timer_order();
    test_timer_periodic_stop_inside();
    test_timer_rearm();
    test_timer_zero_no_starve();
    test_timer_heap_random();
    test_timer_wait();
    test_io_stop_suppresses();
    test_io_ctl();
    test_wake();
    test_hooks();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
