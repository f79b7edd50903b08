/*
 * cell_int.h — the cell's state (struct cell) and the internals shared by its files:
 *
 *   machine.c  entry points: open/recovery, request dispatch, deadlines, tick, stop
 *   orders.c   the order table, its indexes and expiry heap, ids, transitions, rendering,
 *              and the order requests (create, get, pay, cancel, list) with parking
 *   ledger.c   allotments per (sku, shadow) and the link to the center (grant, return,
 *              reclaim, hello, report)
 *   batch.c    the op log, the double buffer, deferred replies and returns
 *
 * Rules that keep it safe:
 *   - Orders, items, ledgers and parked requests live in fixed-capacity tables
 *     (core/table.h) and are referenced by INDEX (uint32_t). No function keeps an element
 *     pointer across a call that can push to any table (creating an order, a ledger, a
 *     parked entry) — retry_parked() creates orders, so everything that calls it
 *     re-reads by index afterwards.
 *   - `sold` in memory includes the open batch; `sold_committed` / `returned_committed`
 *     are the values of the last committed STOCK record and the only ones the center
 *     hears (GRANT, RETURN, REPORT).
 *   - Invariant per ledger (asserted on every change): returned + sold <= granted.
 *   - Order status moves only pending -> {paid, cancelled, expired} (asserted).
 */
#ifndef D11_CELL_INT_H
#define D11_CELL_INT_H

#include "cell.h"
#include "../core/limits.h"
#include "../core/map.h"
#include "../core/table.h"
#include "../rpc/wire.h"
#include "../store/cell_ops.h"

#define NONE32 UINT32_MAX
#define CELL_REPORT_MS 100
#define CELL_GRANT_TIMEOUT_MS 1000     /* a grant unanswered this long is asked again */
#define ORDER_EPOCH_MS 1735689600000LL /* 2025-01-01T00:00:00Z: order ids count ms from here */

typedef struct ledger {
    char     sku[D11_SKU_BYTES_MAX];
    uint8_t  skun, shadow;
    uint8_t  known; /* 0 never heard, 1 exists, 2 does not exist */
    bool     grant_inflight, dirty, report_dirty;
    uint64_t price, granted, returned, sold;
    uint64_t returned_committed, sold_committed;
    uint64_t want_inflight; /* units asked for in the grant in flight */
    int64_t  grant_sent_ms; /* when the grant in flight was sent */
    uint64_t soldout_min;   /* while soldout_until: a shortfall this large cannot be met */
    int64_t  soldout_until, unknown_until;
} ledger;

typedef struct oitem {
    uint32_t ledger, qty;
    uint64_t price;
} oitem;

typedef struct order {
    uint64_t id, user_id, body_hash, total, batch_seq;
    int64_t  created_at, expires_at, updated_at;
    const char *idem, *payment; /* in the cell's string arena: live as long as the cell */
    uint16_t idem_n, payment_n;
    uint32_t items;     /* index of the first item */
    uint32_t prev_user; /* the user's previous order (list newest first) */
    uint32_t next_idem; /* next order in the same idempotency hash chain */
    uint8_t  status, shadow, nitems;
} order;

typedef struct parked {
    uint32_t      peer;
    d11_frame_hdr hdr;
    uint8_t      *payload; /* malloc'ed copy of the ORDER_CREATE payload */
    size_t        payload_len;
} parked;

typedef struct heap_ent {
    int64_t  at;
    uint32_t order;
} heap_ent;

typedef struct cell_batch {
    uint64_t seq;
    d11_buf  ops;      /* op records (store/cell_ops.h) */
    uint32_t nops;
    d11_buf  replies;  /* [u32 peer][frame] records to release after commit */
    uint32_t nreplies;
    d11_buf  snaps;    /* [u32 ledger][u64 returned][u64 sold]: STOCK values in this batch */
    uint32_t nsnaps;
    d11_buf  returns;  /* [u32 ledger]: RETURNs to send after commit */
    uint32_t nreturns;
} cell_batch;

typedef struct arena_chunk arena_chunk;

struct cell {
    cell_opts   o;
    cell_host   h;
    /* tables */
    d11_table   ledgers;  /* ledger */
    d11_table   orders;   /* order */
    d11_table   items;    /* oitem */
    d11_table   heap;     /* heap_ent: pending orders by due time */
    d11_table   parked;   /* parked */
    uint32_t   *dirty;    /* ledgers touched since the last batch close */
    uint32_t    ndirty;
    d11_smap    ledger_by_key; /* shadow byte + sku -> ledger index */
    d11_imap    order_by_id;   /* order id -> index */
    d11_imap    idem_head;     /* hash(shadow, user, key) -> first order of the chain */
    d11_imap    user_head;     /* user_id | shadow << 63 -> newest order index */
    /* batches */
    cell_batch  batches[2];
    int         open;          /* index of the batch being filled */
    bool        committing, failed, stopping;
    uint64_t    open_seq, committed_seq;
    /* ids */
    uint64_t    last_ms, id_seq;
    uint64_t    next_event_id;
    const uint8_t *trace;  /* trace id of the request being handled (outbox events), or NULL */
    /* center link */
    bool        center_up, hello_done;
    int64_t     last_report_ms;
    /* scratch and strings */
    d11_buf     scratch, scratch2, frame;
    arena_chunk *arena;
    size_t      arena_left;
    char       *arena_p;
    /* counters */
    uint64_t    n_created, n_rejected_oos, n_batches, n_batch_ops, n_parked_total, n_rejected_full;
    uint64_t    n_expired_deadline;
    int64_t     last_commit_us;
};

static inline ledger *LG(cell *c, uint32_t i)
{
    D11_ASSERT(i < c->ledgers.n);
    return &D11_TAB(&c->ledgers, ledger)[i];
}
static inline order *OR(cell *c, uint32_t i)
{
    D11_ASSERT(i < c->orders.n);
    return &D11_TAB(&c->orders, order)[i];
}
static inline oitem *IT(cell *c, uint32_t i)
{
    D11_ASSERT(i < c->items.n);
    return &D11_TAB(&c->items, oitem)[i];
}
static inline int64_t cell_mono(const cell *c) { return d11_clock_mono(c->h.clock); }
static inline int64_t cell_wall(const cell *c) { return d11_clock_wall(c->h.clock); }

/* machine.c */
const char *d11__cell_arena_dup(cell *c, const char *p, size_t n);

/* ledger.c */
uint32_t d11__ledger_get(cell *c, const char *sku, size_t n, int shadow, bool create); /* NONE32: unknown / full */
uint64_t d11__ledger_avail(const ledger *l);
void     d11__ledger_touch(cell *c, uint32_t li);
void     d11__request_grant(cell *c, uint32_t li, uint64_t want);
void     d11__ledger_tick(cell *c);
void     d11__send_reports(cell *c, bool all);

/* orders.c */
void d11__order_create(cell *c, uint32_t peer, const d11_frame *f);
void d11__order_ref(cell *c, uint32_t peer, const d11_frame *f);
void d11__order_list(cell *c, uint32_t peer, const d11_frame *f);
void d11__retry_parked(cell *c);
void d11__park_drop_peer(cell *c, uint32_t peer);
void d11__park_fail_all(cell *c, const char *why);
void d11__expire_due(cell *c);
int  d11__order_load(cell *c, const cell_op_order *o);
int  d11__order_load_update(cell *c, const cell_op_update *u);
int  d11__orders_loaded(cell *c);

/* batch.c */
cell_batch *d11__open_batch(cell *c);
void d11__reply(cell *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code, const char *body,
                size_t n, bool defer);
void d11__reply_err(cell *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code, const char *msg);
void d11__op_order_insert(cell *c, uint32_t oi);
void d11__op_order_update(cell *c, uint32_t oi);
void d11__op_outbox(cell *c, uint32_t oi, const char *type);
void d11__queue_return(cell *c, uint32_t li);
void d11__batches_init(cell *c);
void d11__batches_release(cell *c);

#endif
