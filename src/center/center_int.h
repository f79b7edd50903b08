/*
 * center_int.h — internals shared by the center machine's two files:
 *   machine.c       open/load, the round (dirty marks, held output, flush), peers,
 *                   dispatch, gateway-facing requests (catalog, routing, stats)
 *   center_allot.c  cell-facing requests: allotments (HELLO, GRANT, RETURN, REPORT),
 *                   parked grants, RECLAIM and its deadlines (center_tick)
 * Nothing here is API: hosts use center.h.
 */
#ifndef D11_CENTER_INT_H
#define D11_CENTER_INT_H

#include "center.h"
#include "catalog.h"
#include "inventory.h"
#include "../store/center_ops.h"

/* One event of this round, queued by center__event (center_events.c). */
typedef struct center_evq {
    const char *type; /* static string */
    size_t      sku_off, sku_n, data_off, data_n; /* in center.evbuf */
    char        trace[33]; /* 32 hex or "" */
} center_evq;

typedef struct held_frame {
    uint32_t peer;
    bool     dropped; /* the peer went down before the flush */
    size_t   off, len; /* in center.held */
} held_frame;

struct center {
    center_opts    o;
    center_host    h;
    d11_store     *st;
    center_catalog cat;
    d11_routing    routing;
    bool           routing_loaded, routing_dirty;
    uint32_t       cell_peer[D11_CELLS_MAX]; /* valid where bit c of cell_up is set */
    uint64_t       cell_up;
    size_t        *dirty, ndirty, capdirty;       /* product indices with uncommitted changes */
    size_t        *waiting, nwaiting, capwaiting; /* product indices with parked grants */
    d11_buf        held;                          /* this round's output frames */
    held_frame    *msgs;
    size_t         nmsgs, capmsgs;
    d11_buf        ops;     /* the op log of a commit */
    d11_buf        scratch; /* JSON bodies, HELLO entries */
    int            failed;  /* the commit error that stopped the machine, or 0 */
    bool           flushing;
    uint64_t       n_grants, n_returns, n_reclaims, n_commits;
    /* the outbox (center_events.c) */
    uint64_t       ev_last;      /* newest event id assigned (loaded, then per commit) */
    uint64_t       ev_pruned;    /* retention watermark as loaded / last committed */
    uint64_t       ev_prune_req; /* > ev_pruned: commit an EVENT_PRUNE with the next round */
    center_evq    *evq;
    size_t         nevq, capevq;
    d11_buf        evbuf;        /* SKUs and data of the queued events */
};
/* Append idx to a growable index list (dirty, waiting). */
void center__push_index(size_t **v, size_t *n, size_t *cap, size_t idx);
/* Record that product idx changed: its products row (row), the center_stock row of
 * shadow (stock), the ledger row of cell (cell >= 0); the next flush commits them. */
void center__touch(center *c, size_t idx, int shadow, int cell, bool stock, bool row);
/* List product idx as having parked grants (center_tick visits it). */
void center__waiting_add(center *c, size_t idx);

/* Held output: out_open returns the buffer to encode ONE frame into for peer; out_close
 * ends it. Sent by center_flush after the commit. */
d11_buf *center__out_open(center *c, uint32_t peer);
void     center__out_close(center *c);
/* A generic reply frame (d11_reply_enc) held for peer. */
void center__reply(center *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code,
                   const char *body, size_t n);
void center__reply_err(center *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, const char *code,
                       const char *msg);

/* Answer the parked grants of (idx, shadow) that free covers now, in arrival order; when
 * final, answer the rest with sold_out. */
void center__pending_try(center *c, size_t idx, int shadow, bool final);
void center__handle_hello(center *c, uint32_t peer, const d11_frame *f);
void center__handle_grant(center *c, uint32_t peer, const d11_frame *f);
void center__handle_return(center *c, uint32_t peer, const d11_frame *f);
void center__handle_report(center *c, uint32_t peer, const d11_frame *f);

/* The outbox (center_events.c). center__event: queue event `type` for product idx (its
 * state now; qty > 0 adds "quantity"), trace id from h. center__events_encode: append
 * the round's EVENT (+ EVENT_PRUNE) records to b, ids from ev_last + 1, at = now_ms;
 * returns how many. center__events_committed: the commit succeeded. center__events_load:
 * a stored EVENT / EVENT_PRUNE record. center__events_free: release. */
void     center__event(center *c, const char *type, size_t idx, uint64_t qty, const d11_frame_hdr *h);
uint32_t center__events_encode(center *c, d11_buf *b, int64_t now_ms);
void     center__events_committed(center *c);
void     center__events_load(center *c, const center_op *op);
void     center__events_free(center *c);

#endif
