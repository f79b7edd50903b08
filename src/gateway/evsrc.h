/*
 * evsrc.h — a blocking reader of the parts' outboxes for the gateway's own consumer
 * threads (today the NATS relay, nats_relay.c): EVENTS_READ and ROUTING_GET over a private
 * Unix-socket connection per part (center, cell i), one request at a time, bounded by a
 * timeout. No HTTP and no merge: the caller reads each part on its own (per-order order is
 * per cell, so a consumer that keeps one position per part needs no merge) and gets the
 * cell's reply body as is: "<head> <pruned>\n" then "<event_id> <at> <event JSON>\n" lines
 * (wire_msgs.def EVENTS_READ).
 * Why not GET /v1/events on our own listener (as the webhook and stats workers do): that
 * hop costs a gateway worker thread the HTTP request, the fan-out, the merge and the page
 * write, and this thread the read and the JSON split, for every event — measured as a
 * large share of the relay's cost (bench/RESULTS.md §9).
 * Thread: the owning thread only (no locks). A connection that fails is closed and opened
 * again at the next call.
 */
#ifndef D11_GW_EVSRC_H
#define D11_GW_EVSRC_H

#include <stdint.h>

#include "../core/util.h"
#include "metrics.h"

struct gw;

#define D11_EVSRC_TIMEOUT_MS 5000 /* one request's bound (connect, write, reply) */

typedef struct gw_evsrc {
    const struct gw *g;
    int              fd[GW_UP_N]; /* -1: not connected; index as GW_UP_CENTER / gw_up_cell(i) */
    uint64_t         req;
    d11_buf          out, in;
} gw_evsrc;

void gw_evsrc_init(gw_evsrc *s, const struct gw *g);
void gw_evsrc_close(gw_evsrc *s);

/* EVENTS_READ of target (GW_UP_CENTER or gw_up_cell(i)): up to limit events of stream
 * shadow after `after`. 0: *status is the reply's status (200, 410, 503, ...) and *body,
 * *n its body (valid until the next call). <0: the part could not be asked (down). */
int gw_evsrc_read(gw_evsrc *s, int target, int shadow, uint64_t after, uint32_t limit, int *status,
                  const char **body, size_t *n);

/* The number of cells of the center's routing table. 0 or <0 (center down, bad reply). */
int gw_evsrc_ncells(gw_evsrc *s, unsigned *ncells);

#endif
