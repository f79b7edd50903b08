/*
 * sale.h — the sale dashboard's data (GET /dashboard/data, drawn by dashboard.c): a
 * history of one sample per second kept in the gateway process (GW_SALE_HISTORY_N
 * seconds), so a reload of the page keeps it, plus the latest snapshot of stock, cells
 * and totals.
 *
 * Every second thread 0 fans METRICS out to the center and the cells (probes.c,
 * gw_sale_fanout) and hands the answers to gw_sale_ingest, which reads the few families it
 * needs from the Prometheus text and the gateway's own counters, and appends a sample.
 * Any thread serves /dashboard/data under the history's mutex.
 */
#ifndef D11_GW_SALE_H
#define D11_GW_SALE_H

#include <stdbool.h>
#include <stddef.h>

#define GW_SALE_HISTORY_N 900 /* 15 minutes of seconds */
#define GW_SALE_SKUS_MAX  10  /* SKUs shown (the center reports the 20 most sold) */
#define GW_SALE_MS        1000

struct gw;
struct gw_thread;
struct gw_req;

int  gw_sale_init(struct gw *g);
void gw_sale_release(struct gw *g);
/* Thread 0, once a second: start the fan-out (probes.c). */
void gw_sale_fanout(struct gw_thread *t);
/* The fan-out's answers: texts[k] of part k (0 = center, 1 + i = cell i), ok[k] whether
 * it answered. */
void gw_sale_ingest(struct gw_thread *t, const char *const *texts, const size_t *lens, const bool *ok, int nparts);
/* GET /dashboard/data */
void gw_h_sale_data(struct gw_thread *t, struct gw_req *rq);

#endif
