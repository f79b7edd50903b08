/*
 * chaos.h — live chaos experiments (ChaosBlade's model) and the control channel to the
 * cells and the center (wire message CONTROL, rpc/control.h):
 *
 *   POST   /admin/chaos        create: arm a fault point in the target processes for
 *                              timeout_s -> 201 {"id","expires_at"}; 400 on bad input
 *                              (nothing changes), 409 on a conflict or too many armed,
 *                              503 when a target cannot be reached (nothing stays armed)
 *   GET    /admin/chaos        {"experiments":[...]} (newest last)
 *   GET    /admin/chaos/{id}   one experiment, plus "live": what each target reports now
 *   DELETE /admin/chaos/{id}   destroy (idempotent: 200 again; 404 for an unknown id)
 *   GET/PUT /admin/log-level   every process's level; PUT sets it on a target
 *
 * The contract (bodies, codes, states) is in docs/reliability.md "Live chaos". Every
 * process enforces its arm's expiry itself (core/fault.h): an experiment ends at its
 * timeout even if this gateway dies or no one calls again.
 * Thread: the connection's thread. The experiment registry is shared by the gateway's
 * threads (a mutex; admin traffic only).
 */
#ifndef D11_GW_CHAOS_H
#define D11_GW_CHAOS_H

#include "request.h"

gw_handler gw_h_chaos_create;
gw_handler gw_h_chaos_list;
gw_handler gw_h_chaos_get;
gw_handler gw_h_chaos_delete;

/* The processes a control request is for: the gateway itself, the center, a set of cells. */
typedef struct gw_ctl_set {
    bool     gateway, center;
    uint64_t cells; /* bit i: cell i */
} gw_ctl_set;
_Static_assert(D11_CELLS_MAX <= 64, "gw_ctl_set.cells is one 64-bit mask");

/* Parse a target: "gateway", "center", "cell:N" (N < ncells), "cells", and "all" when
 * allow_all. 0, or -1 when it names nothing of this deployment. */
int gw_ctl_target_parse(const char *s, size_t n, unsigned ncells, bool allow_all, gw_ctl_set *out);

/* GET (level < 0) or PUT (level: D11_LOG_*, set on `set`) /admin/log-level: fans a CONTROL
 * out to the center and every cell and answers {"level":GATEWAY,"processes":{...}} with
 * null for a process that did not answer; a PUT that a targeted process did not answer is
 * 503 unavailable naming it (the others keep the new level). */
void gw_ctl_log_level(gw_thread *t, gw_req *rq, int level, const gw_ctl_set *set);

#endif
