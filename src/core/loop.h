/*
 * loop.h — the one event loop of d11: epoll readiness, timers, a cross-thread wakeup and
 * before-sleep hooks (in the spirit of Redis's ae.c). Every process (gateway threads, cell,
 * center, up) runs one d11_loop per thread; connections on top of it live in rpc/link.h.
 *
 * One iteration (d11_loop_run_once):
 *   1. sleep in epoll_wait at most min(max_wait_ms, time to the next timer), or not at all
 *      when d11_loop_nowait() was called since the last hooks ran;
 *   2. cache the clock (d11_loop_now_ms), deliver every fetched I/O event to its d11_io;
 *   3. run the due timers (earliest first; equal deadlines in arming order);
 *   4. run the before-sleep hooks in registration order (group commit, then output flush).
 *
 * Invariants:
 *   - every epoll_ctl is checked; d11_io_start / d11_io_want return -errno and leave the
 *     d11_io as it was; EPOLL_CTL_MOD is issued only when the wanted set really changes
 *     (n_ctl_mod counts them, so tests can prove it);
 *   - an event already fetched for a d11_io that is stopped during the same iteration is
 *     never delivered (d11_io_stop scrubs the fetched batch), so a callback may stop and
 *     free any io, its own included;
 *   - timers live in a fixed binary min-heap of pointers (D11_LOOP_TIMERS_MAX; arming more
 *     is an assertion: timers are static per process, not per request); a timer armed or
 *     re-armed while timers are running fires at the earliest in the next iteration, so a
 *     0 ms timer cannot starve I/O.
 *
 * Ownership: the loop owns its epoll fd only. d11_io, d11_timer, d11_wake and hook data are
 * the caller's memory and must outlive their registration (stop them before freeing). The
 * loop never closes a caller's fd.
 *
 * Threads: a d11_loop and everything registered on it belong to one thread (the one that
 * calls run/run_once). Exceptions: d11_wake_signal may be called from any thread, and
 * d11_loop_stop from any thread or a signal handler (an atomic flag; a stop from another
 * thread is seen within D11_LOOP_RUN_WAIT_MS by d11_loop_run, at once if followed by a
 * d11_wake_signal).
 */
#ifndef D11_LOOP_H
#define D11_LOOP_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/epoll.h>

#define D11_LOOP_TIMERS_MAX   1024 /* armed timers per loop (static per process) */
#define D11_LOOP_EVENTS_MAX   256  /* events fetched by one epoll_wait */
#define D11_LOOP_HOOKS_MAX    8    /* before-sleep hooks per loop */
#define D11_LOOP_RUN_WAIT_MS  1000 /* d11_loop_run's longest sleep (bounds a cross-thread stop) */

typedef struct d11_loop d11_loop;

enum {
    D11_IO_READ = 1u,
    D11_IO_WRITE = 2u,
    D11_IO_HUP = 4u, /* EPOLLHUP | EPOLLERR: reported, never requested */
};

/* ---- I/O readiness ---- */

typedef struct d11_io d11_io;
/* `events`: D11_IO_* bits that are ready. */
typedef void d11_io_fn(d11_loop *loop, d11_io *io, uint32_t events);
struct d11_io {
    int        fd;
    uint32_t   want;   /* D11_IO_READ | D11_IO_WRITE currently registered */
    d11_io_fn *fn;
    void      *data;   /* the owner's */
    bool       active; /* in the epoll set */
};

/* ---- timers ---- */

typedef struct d11_timer d11_timer;
typedef void d11_timer_fn(d11_loop *loop, d11_timer *t);
struct d11_timer {
    int64_t       at_ms;     /* next deadline (CLOCK_MONOTONIC ms) */
    int64_t       period_ms; /* 0 = one-shot */
    d11_timer_fn *fn;
    void         *data;      /* the owner's */
    uint32_t      slot;      /* internal: heap index + 1, 0 = not armed */
    uint64_t      seq;       /* internal: arming order (ties, and "not in this pass") */
};

/* ---- cross-thread wakeup (eventfd) ---- */

typedef struct d11_wake {
    d11_io io;
    void (*fn)(d11_loop *, struct d11_wake *);
    void  *data; /* the owner's */
} d11_wake;

typedef struct d11_loop_hook {
    void (*fn)(d11_loop *, void *);
    void  *data;
} d11_loop_hook;

struct d11_loop {
    int                epfd;
    atomic_bool        stop;
    bool               nowait;      /* do not sleep in the next epoll_wait */
    bool               in_dispatch; /* delivering I/O events or running timers */
    int64_t            now_ms;      /* cached CLOCK_MONOTONIC (see d11_loop_now_ms) */
    /* the batch fetched by the current epoll_wait; entries of stopped ios are zeroed */
    struct epoll_event evs[D11_LOOP_EVENTS_MAX];
    int                nevs, ev_i;
    d11_timer         *timers[D11_LOOP_TIMERS_MAX]; /* min-heap on (at_ms, seq) */
    uint32_t           ntimers;
    uint64_t           timer_seq;
    d11_loop_hook      hooks[D11_LOOP_HOOKS_MAX];
    uint32_t           nhooks;
    /* counters (tests and metrics) */
    uint64_t           n_iter, n_ctl_add, n_ctl_mod, n_ctl_del, n_ctl_errors;
};

/* epoll_create1(EPOLL_CLOEXEC). Returns 0 or -errno. */
int  d11_loop_init(d11_loop *l);
/* Closes the epoll fd. Registered ios, timers and wakes are forgotten, not closed. */
void d11_loop_release(d11_loop *l);

/* Register fd with the wanted D11_IO_READ|D11_IO_WRITE bits (0 is allowed: only HUP/ERR
 * are reported). EPOLL_CTL_ADD, checked: 0 or -errno (-EBADF for a closed fd, -EPERM for
 * a regular file, -EEXIST if fd is already registered); on error io is not active.
 * The io must not be active. */
int  d11_io_start(d11_loop *l, d11_io *io, int fd, uint32_t want, d11_io_fn *fn, void *data);
/* Change the wanted bits; EPOLL_CTL_MOD only when they change. 0 or -errno (io->want then
 * keeps the old value). The io must be active. */
int  d11_io_want(d11_loop *l, d11_io *io, uint32_t want);
/* EPOLL_CTL_DEL (the fd stays open: close it after). No-op when not active. Safe inside
 * any callback, its own included; an event of this io already fetched in the current
 * iteration is dropped. */
void d11_io_stop(d11_loop *l, d11_io *io);

/* Arm t to fire after_ms from now, then every period_ms (0 = once). Re-arming an armed
 * timer moves it. Asserts when D11_LOOP_TIMERS_MAX timers are armed already. */
void d11_timer_start(d11_loop *l, d11_timer *t, int64_t after_ms, int64_t period_ms,
                     d11_timer_fn *fn, void *data);
/* Disarm; idempotent; safe inside its own callback (a periodic timer then stops). */
void d11_timer_stop(d11_loop *l, d11_timer *t);
static inline bool d11_timer_armed(const d11_timer *t) { return t->slot != 0; }

/* eventfd(EFD_NONBLOCK|EFD_CLOEXEC) registered on l; fn runs on the loop thread once per
 * iteration in which one or more signals arrived (signals coalesce). 0 or -errno. */
int  d11_wake_init(d11_loop *l, d11_wake *w, void (*fn)(d11_loop *, d11_wake *), void *data);
/* Any thread, async-signal-safe. */
void d11_wake_signal(d11_wake *w);
/* Stop and close the eventfd (loop thread, after every signaller is done). */
void d11_wake_release(d11_loop *l, d11_wake *w);

/* Add a hook run once per iteration after I/O events and timers, before sleeping; hooks run
 * in registration order. 0, or D11_EFULL past D11_LOOP_HOOKS_MAX. */
int  d11_loop_before_sleep(d11_loop *l, void (*fn)(d11_loop *, void *), void *data);
/* Make the next epoll_wait return at once (work is queued for the before-sleep hooks, e.g.
 * output queued outside an iteration). Loop thread only. */
static inline void d11_loop_nowait(d11_loop *l) { l->nowait = true; }

/* One iteration. max_wait_ms < 0: no limit other than the timers. Returns the number of
 * callbacks run (I/O events + timers), or -errno if epoll_wait failed (EINTR is not an
 * error: it returns what ran, timers and hooks included). */
int  d11_loop_run_once(d11_loop *l, int max_wait_ms);
/* Iterate until d11_loop_stop. A failing epoll_wait is fatal (it cannot recover). */
void d11_loop_run(d11_loop *l);
/* Ask d11_loop_run to return after the current iteration. Any thread; async-signal-safe. */
void d11_loop_stop(d11_loop *l);
static inline bool d11_loop_stopping(d11_loop *l)
{
    return atomic_load_explicit(&l->stop, memory_order_relaxed);
}
/* CLOCK_MONOTONIC ms cached when epoll_wait returned (refreshed before timers run). */
static inline int64_t d11_loop_now_ms(const d11_loop *l) { return l->now_ms; }

#endif
