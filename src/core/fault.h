/*
 * fault.h — named fault points compiled into the code, for chaos drills and fault tests.
 *
 * A point is armed with an action and a trigger, from the environment at process start:
 *
 *     D11_FAULTS="cell.recv:drop@0.05,store.commit:fail#3,cell.reply:delay=50ms@0.1"
 *     D11_FAULT_SEED=42            (the seed, with the process name and pid, fixes the draws)
 *
 * Each entry is POINT:ACTION[=ARG][@PROBABILITY | #NTH | *EVERY]. Actions: `drop`,
 * `fail`, `garble`, `delay=<N>ms`. Triggers: `@p` fires with probability p; `#n` fires on
 * the n-th hit only; `*n` fires on every n-th hit; no trigger = every hit. A malformed
 * D11_FAULTS is an error at start (the process exits 2), never silently ignored.
 *
 * Points (see docs/reliability.md for what each does where it sits):
 *   cell.recv     a frame from the gateway, before it is handled (drop | garble | delay)
 *   cell.reply    a reply, just before it is queued to the gateway (drop | delay)
 *   store.commit  a cell's batch commit (fail: the batch is answered 503, the cell restarts;
 *                 delay: a slow disk, counted in the commit latency)
 *   center.grant  a grant request at the center (drop | delay)
 *
 * Unarmed points cost one predictable branch. Thread-safe for reading; arming happens once
 * before threads start. Every firing is counted (d11_fault_fired) and logged.
 */
#ifndef D11_FAULT_H
#define D11_FAULT_H

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

enum d11_fault_point {
    D11_FP_CELL_RECV = 0,
    D11_FP_CELL_REPLY,
    D11_FP_STORE_COMMIT,
    D11_FP_CENTER_GRANT,
    D11_FP_COUNT
};

enum d11_fault_action { D11_FA_NONE = 0, D11_FA_DROP, D11_FA_FAIL, D11_FA_GARBLE, D11_FA_DELAY };

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
/* Clear every point. */
void d11_fault_reset(void);

extern bool d11__fault_any;
d11_fault_hit d11__fault_check(int point);
/* Does `point` fire now, and how? Cheap when nothing is armed. */
static inline d11_fault_hit d11_fault(int point)
{
    if (__builtin_expect(!d11__fault_any, 1)) return (d11_fault_hit){0, 0};
    return d11__fault_check(point);
}
uint64_t d11_fault_fired(int point);

#endif
