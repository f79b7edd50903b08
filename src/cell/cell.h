/*
 * cell.h — the cell as a state machine: orders, allotments and group commit for the users
 * whose slots it owns, with no sockets, threads or clocks of its own.
 *
 * A HOST drives it: the `d11 cell` process (cell.c: event loop, Unix sockets, a
 * storage thread) or the deterministic simulator (src/sim: simulated links, clock and
 * memory store). Everything the cell does to the outside goes through the host's
 * callbacks, which must only queue (never call back into the cell):
 *
 *   send_peer    a reply frame to a gateway connection (`peer` is the host's opaque id)
 *   send_center  a frame to the center (GRANT, RETURN, REPORT, HELLO); only called while
 *                the host has said the center is up
 *
 * Durability: state changes go into the OPEN batch's op log (store/cell_ops.h). The host
 * takes a closed batch with cell_batch_take, commits it through the storage seam (in
 * another thread if it likes; the op bytes stay valid and unchanged until
 * cell_batch_done), and reports the result with cell_batch_done. Replies that announce a
 * change — and reads of state that is not durable yet — are released only then, so a
 * reply never promises what a crash could take back. One batch commits while the next
 * fills (two-stage pipeline). A failed commit answers that batch's requests 503 and
 * puts the cell in the FAILED state: memory is ahead of storage, so the host must drop
 * the cell and open it again from the store (the process exits; the simulator
 * "restarts" it).
 *
 * Allotments: see ledger.c. What the center hears about `sold` is always a COMMITTED
 * value, and after every HELLO the cell reports every ledger, so the product view
 * converges on the stored truth after any crash of either side.
 *
 * Threads: every function runs on the host's logic thread.
 */
#ifndef D11_CELL_H
#define D11_CELL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/clock.h"
#include "../core/util.h"
#include "../rpc/conn.h"
#include "../store/store.h"

typedef struct cell cell;

typedef struct cell_host {
    const d11_clock *clock;
    void *data;
    void (*send_peer)(void *data, uint32_t peer, const uint8_t *frame, size_t n);
    void (*send_center)(void *data, const uint8_t *frame, size_t n);
} cell_host;

typedef struct cell_opts {
    int      id;
    int64_t  order_ttl_ms;       /* unpaid orders expire after this */
    int64_t  soldout_cache_ms;   /* how long a sold-out answer is trusted */
    uint32_t orders_max;         /* D11_CELL_ORDERS_MAX: orders held in memory */
    uint32_t items_max;          /* D11_CELL_ITEMS_MAX: order items held in memory */
    uint32_t ledgers_max;        /* D11_CELL_SKUS_MAX: (sku, shadow) ledgers */
    uint32_t parked_max;         /* D11_CELL_PARKED_MAX: orders waiting for the center */
    bool     moving_tables;      /* debug: tables move on growth (core/table.h) */
} cell_opts;

void cell_opts_default(cell_opts *o, int id);

/*
 * Open a cell over a store: load every record (recovery), check that each ledger's sold
 * equals the units its pending + paid orders hold, rebuild indexes and the expiry heap.
 * 0, or a negative error (D11_EPROTO: the stored data is inconsistent — refuse to run;
 * D11_ETOOBIG: more than the limits allow). The store stays the caller's.
 */
int  cell_open(cell **out, const cell_opts *o, const cell_host *h, d11_store *st);
void cell_free(cell *c);

/* ---- gateway side ---- */
/* A request frame from a gateway connection. Replies go to host->send_peer(peer). */
void cell_on_request(cell *c, uint32_t peer, const d11_frame *f);
/* The connection is gone: its parked orders are dropped (no one waits for them). */
void cell_peer_down(cell *c, uint32_t peer);

/* ---- center side ---- */
void cell_center_up(cell *c);                        /* connected: sends HELLO */
void cell_center_down(cell *c);                      /* lost: orders needing it get 503 */
void cell_on_center(cell *c, const d11_frame *f);    /* a reply or a push from the center */

/* ---- time ---- */
/* Expiry, grant retries, parked-order deadlines, reports. Call every ~10 ms. */
void cell_tick(cell *c);

/* ---- group commit ---- */
/* When no batch is committing and the open one holds anything: close it, return its op
 * log (valid until cell_batch_done) and true. */
bool cell_batch_take(cell *c, const uint8_t **ops, size_t *len, uint32_t *nops);
/* The taken batch committed (result 0) or failed (< 0). */
void cell_batch_done(cell *c, int result);
bool cell_committing(const cell *c);
bool cell_failed(const cell *c);                     /* a commit failed: drop this cell */

/* ---- retention ---- */
/* Delete the outbox events of a stream with id <= through in the next batch (same
 * transaction as the orders of that batch). The caller (the process, outbox_read.h) picks
 * a small range of committed events that every sink has and that is old enough, never
 * the stream's newest event. */
void cell_outbox_prune(cell *c, int shadow, uint64_t through);

/* ---- stop ---- */
/* Refuse new orders (503), answer every parked order 503. */
void cell_shutdown(cell *c);
/* Nothing open, nothing committing: safe to exit after flushing. */
bool cell_quiet(const cell *c);

/* ---- introspection (STATS, metrics, tests, simulator) ---- */
typedef struct cell_counts {
    uint64_t orders, ledgers, parked, created, rejected_oos, batches, batch_ops, parked_total;
    uint64_t rejected_full, expired_deadline, last_commit_us;
    bool     center_up;
} cell_counts;
void cell_get_counts(const cell *c, cell_counts *out);
void cell_set_last_commit_us(cell *c, int64_t us);
/* Units of (sku, shadow): as in memory, and as last committed. false if unknown. */
bool cell_ledger_view(const cell *c, const char *sku, size_t n, int shadow, uint64_t *granted, uint64_t *returned,
                      uint64_t *sold, uint64_t *sold_committed);

/* An order's status (enum cell_order_status) and whether its last change is committed. */
bool cell_order_view(const cell *c, uint64_t id, int shadow, uint8_t *status, bool *committed);
/* Pending orders parked for the center (simulator quiescence). */
uint32_t cell_parked(const cell *c);

#endif
