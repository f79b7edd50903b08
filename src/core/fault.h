/*
 * fault.h — named fault points compiled into the code, for chaos drills and fault tests.
 *
 * A point is armed with an action and a trigger, two ways:
 *
 * 1. From the environment at process start (replayable drills, the fault tests):
 *
 *     D11_FAULTS="cell.recv:drop@0.05,store.commit:fail#3,cell.reply:delay=50ms@0.1"
 *     D11_FAULT_SEED=42            (the seed, with the process name and pid, fixes the draws)
 *
 *    Each entry is POINT:ACTION[=ARG][@PROBABILITY | #NTH | *EVERY]. Actions: `drop`,
 *    `fail`, `garble`, `delay=<N>ms`. Triggers: `@p` fires with probability p; `#n` fires on
 *    the n-th hit only; `*n` fires on every n-th hit; no trigger = every hit. A malformed
 *    D11_FAULTS is an error at start (the process exits 2), never silently ignored. These
 *    arms never expire.
 *
 * 2. At run time (live chaos experiments, docs/reliability.md "Live chaos"): d11_fault_arm
 *    with an action, a delay, a percentage, a timeout and the experiment's id. The arm
 *    carries its own expiry (CLOCK_MONOTONIC of THIS process): once it passes, the point
 *    never fires again and is disarmed at its next hit or the next d11_fault_sweep, even if
 *    no one ever disarms it — no other process is needed for that.
 *
 * Points (see docs/reliability.md for what each does where it sits):
 *   cell.recv         a frame from the gateway, before it is handled (drop | garble | delay)
 *   cell.reply        a reply, just before it is queued to the gateway (drop | delay)
 *   store.commit      a cell's batch commit (fail: the batch is answered 503, the cell
 *                     restarts; delay: a slow disk, counted in the commit latency)
 *   center.grant      a grant request at the center (drop | delay)
 *   gateway.upstream  a forwarded request, before the gateway sends it to a cell or the
 *                     center (fail: 503 at once; drop: never sent, 504 at its deadline;
 *                     delay: the gateway thread stalls)
 *   relay.publish     the event relays: a NATS publish round, a webhook POST (fail | delay)
 *
 * Threads: any thread may check, arm or disarm. Each point's settings are guarded by a
 * seqlock (writers serialised by a mutex, readers retry on a concurrent write); the
 * unarmed fast path is one relaxed load and one predictable branch. Every firing is
 * counted (d11_fault_fired, d11_fault_metrics) and logged at debug.
 */
#ifndef D11_FAULT_H
#define D11_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "util.h"

enum d11_fault_point {
    D11_FP_CELL_RECV = 0,
    D11_FP_CELL_REPLY,
    D11_FP_STORE_COMMIT,
    D11_FP_CENTER_GRANT,
    D11_FP_GATEWAY_UPSTREAM,
    D11_FP_RELAY_PUBLISH,
    D11_FP_COUNT
};

enum d11_fault_action { D11_FA_NONE = 0, D11_FA_DROP, D11_FA_FAIL, D11_FA_GARBLE, D11_FA_DELAY, D11_FA_COUNT };

#define D11_FAULT_DELAY_MS_MAX 60000 /* one firing's delay, either way of arming */

typedef struct d11_fault_hit {
    int     action;   /* D11_FA_NONE when the point does not fire this time */
    int64_t delay_ms; /* D11_FA_DELAY */
} d11_fault_hit;

/* Parse a spec (the D11_FAULTS syntax). 0, or -1 with a reason in err. */
int d11_fault_parse(const char *spec, uint64_t seed, char *err, size_t errlen);
/* Seed the trigger generator (scrambled with splitmix64 and the salt). */
void d11_fault_seed(uint64_t seed, const char *salt);
/* Arm from D11_FAULTS / D11_FAULT_SEED; exits 2 with a message when malformed. Draws
 * differ per process: the generator is seeded from the seed, the process name and pid. */
void d11_fault_init_from_env(const char *proc);
/* Check D11_FAULTS / D11_FAULT_SEED without arming anything (a supervisor validates what
 * its children will arm, before it creates anything). 0, or -1 with a reason in err. */
int d11_fault_check_env(char *err, size_t errlen);
/* Clear every point (settings and counters). */
void d11_fault_reset(void);

/* ---- run-time arming (live chaos) ---- */

/*
 * Arm point with action (D11_FA_DROP, _FAIL, _DELAY; delay_ms 0..D11_FAULT_DELAY_MS_MAX
 * for a delay), firing on percent (1..100) of the hits, until timeout_ms (1.. ) from now;
 * id names the experiment (non-zero). Replaces whatever the point had. 0, or -EINVAL.
 */
int d11_fault_arm(int point, int action, int64_t delay_ms, unsigned percent, int64_t timeout_ms, uint64_t id);
/* Disarm point if its arm is experiment id (id 0: whatever it is). 0 when disarmed,
 * -ENOENT when the point was not armed by id, -EINVAL for a bad point. */
int d11_fault_disarm(int point, uint64_t id);
/* Disarm every run-time arm whose expiry has passed (monotonic now_ms); returns how many. */
int d11_fault_sweep(int64_t now_ms);
/* Point by name ("store.commit"), or -1. */
int d11_fault_point_parse(const char *s, size_t n);
const char *d11_fault_point_name(int point);
const char *d11_fault_action_name(int action);
/* The state of every point as a JSON array (after a sweep): [{"point","action","delay_ms",
 * "percent","id","expires_in_ms","hits","fired"}], armed points only. Appends to b. */
void d11_fault_render(d11_buf *b);
/* Prometheus family d11_fault_fired_total{part,point} (every point, armed or not). */
void d11_fault_metrics(d11_buf *b, const char *part);

extern _Atomic bool d11__fault_any;
d11_fault_hit d11__fault_check(int point);
/* Does `point` fire now, and how? Cheap when nothing is armed. */
static inline d11_fault_hit d11_fault(int point)
{
    if (__builtin_expect(!atomic_load_explicit(&d11__fault_any, memory_order_relaxed), 1))
        return (d11_fault_hit){0, 0};
    return d11__fault_check(point);
}
/* For points where any firing fails the operation (the relays): sleeps through a delay;
 * true when the operation must fail (fail or drop). */
bool d11_fault_trip(int point);
uint64_t d11_fault_fired(int point);

#endif
