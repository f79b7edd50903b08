/*
 * admin.h — the admin API answered by the gateway itself (scope admin):
 * GET /admin/routing (the routing table in force and its source), GET/PUT /admin/rules
 * and POST /admin/rules/rollback (the rules store, rules.h: 400 bad_json, 422 invalid,
 * 409 version_conflict / no_history, 500 when the document cannot be persisted).
 * /admin/ledger/{sku} is forwarded (products.h), /admin/cells is a probe (probes.h).
 * Thread: the connection's thread; the rules calls do blocking file I/O (rare).
 */
#ifndef D11_GW_ADMIN_H
#define D11_GW_ADMIN_H

#include "request.h"

gw_handler gw_h_admin_routing;
gw_handler gw_h_rules_get;
gw_handler gw_h_rules_put;
gw_handler gw_h_rules_rollback;
gw_handler gw_h_protect_get;
gw_handler gw_h_rules_patch;

/* GET /admin/log-level -> {"level":GATEWAY,"processes":{"gateway":..,"center":..,"cell-N":..}};
 * PUT {"level":"debug","target":"all"|"gateway"|"center"|"cells"|"cell:N"} sets it (chaos.h). */
void gw_h_log_level_get(gw_thread *t, gw_req *rq);
void gw_h_log_level_put(gw_thread *t, gw_req *rq);

#endif
