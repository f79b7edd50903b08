/*
 * probes.h — the operations endpoints, no token needed unless noted:
 *   GET /healthz       200 {"status":"ok"} while the process runs
 *   GET /readyz        PING to the center and every cell of the routing table (1 s
 *                      budget): 200 when all answer, else 503 with the standard error
 *                      object and per-target state
 *   GET /admin/cells   (scope admin) PING + STATS to each, stats JSON embedded
 *   GET /metrics       Prometheus text (metrics.h)
 *   GET /              the dashboard (dashboard.c)
 * Thread: the connection's thread.
 */
#ifndef D11_GW_PROBES_H
#define D11_GW_PROBES_H

#include "request.h"

gw_handler gw_h_healthz;
gw_handler gw_h_readyz;
gw_handler gw_h_admin_cells;
gw_handler gw_h_metrics;
gw_handler gw_h_dashboard;

/* The dashboard page (dashboard.c). */
extern const char gw_dashboard_html[];

#endif
