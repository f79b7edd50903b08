/*
 * center.h — the center as a state machine: catalog, inventory ledger, routing table.
 *
 * Read in this order: center.h (this API), machine.c (the machine: frames in, state and
 * held output, one commit per round), inventory.h (the ledger math), catalog.h (products),
 * routing.h, then center.c (the `d11 center` process: socket, epoll loop, signals)
 * and store/center_ops.h + store/center_sqlite.c (what is stored, and how).
 *
 * The machine owns no socket, thread or clock. Its host (center.c in the real
 * process; a unit test or the simulator otherwise) gives it:
 *   - frames from peers (center_on_frame), peers coming and going (center_peer_up/down);
 *   - time, through host->clock, and a call to center_tick about every 10 ms;
 *   - a store (store.h) holding the state: center_open loads it, center_flush commits.
 * A round is: any number of center_on_frame / center_tick / peer calls, then center_flush.
 * Every reply and push produced in the round is HELD until center_flush has committed
 * all state changed in the round in ONE d11_store_commit; only then does it go out,
 * in order, through host->send. So no peer ever hears of a grant, a product or a routing
 * table that a crash could take back. If the commit fails nothing of the round is sent
 * and the machine stops (every later center_flush returns the same error): its memory is
 * ahead of the store, so the host must exit (the simulator "crashes" it) and a new
 * center_open recovers from what was durable; cells re-sync with HELLO and REPORT.
 *
 * Memory grows per product and per cell only; the pending-grant queue of each (SKU,
 * shadow) is bounded (CENTER_PENDING_MAX in catalog.h; beyond it a grant is answered 503).
 * Held output is bounded by what the host feeds in one round.
 *
 * Single thread: every call on one center from the same thread.
 */
#ifndef D11_CENTER_H
#define D11_CENTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/clock.h"
#include "../rpc/conn.h"
#include "../store/store.h"

typedef struct center center;

typedef struct center_host {
    const d11_clock *clock; /* mono: reclaim deadlines; wall: created_at of products */
    void            *data;
    /* Deliver one encoded frame (header included) to a peer. Called ONLY from
     * center_flush, after the commit that makes everything the frame says durable. The
     * frame is valid during the call only. A peer that is gone may be ignored. */
    void (*send)(void *data, uint32_t peer, const uint8_t *frame, size_t n);
} center_host;

#define CENTER_RECLAIM_MS_DEFAULT 300 /* how long a parked grant waits for reclaimed units */

typedef struct center_opts {
    int     ncells;          /* cells of the deployment, 1..D11_CELLS_MAX; fixed at first start */
    int64_t grant_chunk_max; /* largest allotment handed out at once (>= 1) */
    int64_t reclaim_ms;      /* reclaim round length (>= 0) */
    int     pid;             /* shown by STATS (0 in tests) */
} center_opts;

/*
 * Load the state from st (d11_store_load), check the ledger invariant of every product
 * (asserted) and that the stored routing table fits o->ncells. On the first start (no
 * routing table stored) create it and commit it before returning. 0 with *out set, or a
 * negative error with the reason logged: D11_ECONFIG (bad options, cell count differs
 * from the stored table), D11_ESTORE (load or first commit failed), D11_EPROTO (a stored
 * record does not decode). The store stays the caller's; it must outlive the center.
 */
int center_open(center **out, const center_opts *o, const center_host *h, d11_store *st);

/* A new connection. Peer ids are opaque u32 chosen by the host, never reused while up. */
void center_peer_up(center *c, uint32_t peer);
/* A connection is gone: forget which cell it was, drop its parked grant requests and
 * any output held for it. */
void center_peer_down(center *c, uint32_t peer);
/* One frame from a peer (gateway or cell). Replies and pushes are held for center_flush;
 * the frame is not referenced after the call. Reply frames (D11_WF_REPLY) are ignored:
 * nothing the center pushes expects an answer. */
void center_on_frame(center *c, uint32_t peer, const d11_frame *f);
/* Reclaim deadlines: parked grants whose round is over are answered (granted, or
 * sold_out). Call about every 10 ms. */
void center_tick(center *c);
/* Commit everything changed since the last flush in one d11_store_commit (none when
 * nothing changed), then send the held output through host->send in order. 0, or the
 * commit's error (then nothing held is sent and the center is stopped for good). */
int center_flush(center *c);
/* Free the machine. The store is the caller's and stays open. */
void center_free(center *c);

/* ---- read-only introspection (tests, simulator, the process's log lines) ---- */

/* Ledger totals of (sku, shadow): false when there is no such product. sold_reported_sum
 * is the sum of the cells' latest reported committed sold counts. */
bool center_ledger(const center *c, const char *sku, size_t skun, int shadow, uint64_t *total, uint64_t *free_,
                   uint64_t *sold_reported_sum);
/* One cell's row of that ledger. false when no such product or cell. */
bool center_ledger_cell(const center *c, const char *sku, size_t skun, int shadow, int cell, uint64_t *granted,
                        uint64_t *returned, uint64_t *sold_reported);
/* Products in the catalog. */
size_t center_products(const center *c);
/* The routing table in force. */
const d11_routing *center_routing(const center *c);

#endif
