/*
 * clock.h — the clock a state machine reads, passed in by its host.
 *
 * The cell and the center never call d11_mono_ms()/d11_wall_ms() directly: they read the
 * clock their host gave them. A process passes d11_clock_system() (CLOCK_MONOTONIC and
 * the wall clock); the deterministic simulator (src/sim) passes a simulated clock it
 * advances itself, so one seed replays exactly.
 *
 * mono_ms: for timeouts and intervals (never goes back). wall_ms: for what is stored or
 * shown (order times, expiry). Both are called on the owner's thread only.
 */
#ifndef D11_CLOCK_H
#define D11_CLOCK_H

#include <stdint.h>

typedef struct d11_clock {
    int64_t (*mono_ms)(void *data);
    int64_t (*wall_ms)(void *data);
    void *data;
} d11_clock;

/* The real clocks (static storage, valid forever). */
const d11_clock *d11_clock_system(void);

static inline int64_t d11_clock_mono(const d11_clock *c) { return c->mono_ms(c->data); }
static inline int64_t d11_clock_wall(const d11_clock *c) { return c->wall_ms(c->data); }

/*
 * Deadlines on the wire (frame header `deadline_ms`): an ABSOLUTE wall-clock time in
 * milliseconds since the epoch, modulo 2^32; 0 = none. Absolute, so time a request spends
 * queued in a socket buffer (a stopped or overloaded receiver) counts against it; compared
 * with serial-number arithmetic (RFC 1982), valid while budgets stay under ~24 days.
 * Hosts exchanging frames must keep their wall clocks within a few ms (NTP on one LAN;
 * trivially true on one machine).
 */
static inline uint32_t d11_deadline_from_budget(int64_t wall_now_ms, int64_t budget_ms)
{
    uint32_t d = (uint32_t)(uint64_t)(wall_now_ms + budget_ms);
    return d ? d : 1;
}
static inline int64_t d11_deadline_left_ms(uint32_t deadline, int64_t wall_now_ms)
{
    return (int64_t)(int32_t)(deadline - (uint32_t)(uint64_t)wall_now_ms);
}
static inline int d11_deadline_passed(uint32_t deadline, int64_t wall_now_ms)
{
    return deadline != 0 && d11_deadline_left_ms(deadline, wall_now_ms) <= 0;
}

#endif
