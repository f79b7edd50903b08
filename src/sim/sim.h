/*
 * sim.h — the deterministic simulator's world: one center, N cells, a fake gateway and
 * in-memory stores, driven by ONE seed (TigerBeetle's VOPR, FoundationDB's simulation
 * testing). Everything that is random (workload, delays, faults, the clock) comes from
 * the seed's PRNG, so a failing seed replays exactly.
 *
 *   sim.c    the world: processes, links, the simulated clock and storage threads,
 *            faults (crash / restart any part, failed commits, connection resets,
 *            dropped requests and replies, dropped grant requests), the event loop, main
 *   client.c the fake gateway: workload (create, pay, cancel, get, list, idempotent
 *            replays with the same and a different body, stress traffic, restocks),
 *            request tracking and the checks on every reply
 *   check.c  invariants after every step and after quiescence (see check.c)
 *
 * Links model the wire as it is: ordered byte streams. A frame is delivered after a
 * random delay but never overtakes an earlier frame of the same link; "loss" is a
 * connection reset (both directions dropped, both ends told), except where production
 * has a fault point that drops single frames (gateway request / reply, center grant).
 * Reordering therefore happens ACROSS links (cell 0's report vs cell 1's grant), which is
 * what an interleaving bug needs.
 */
#ifndef D11_SIM_H
#define D11_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "../cell/cell.h"
#include "../center/center.h"
#include "../core/clock.h"
#include "../core/map.h"
#include "../rpc/wire.h"
#include "../store/mem.h"

#define SIM_CELLS_MAX 4
#define SIM_SKUS 4          /* SKU-0 is the hot one */
#define SIM_USERS 48
#define SIM_ORDERS_MAX 4096 /* orders the client tracks per seed */
#define SIM_REQS_MAX 512    /* requests in flight */
#define SIM_SOLD_VALUES 4096 /* committed sold values remembered per (cell, sku, shadow) */
#define SIM_REPORT_MS 100   /* the cells' report interval (CELL_REPORT_MS) */
#define SIM_QUIET_MS 600    /* > the latest tick (210 ms) + a report interval, with margin */

typedef struct sim_rng {
    uint64_t s;
} sim_rng;

static inline uint64_t sim_next(sim_rng *r)
{
    /* splitmix64: tiny, good enough, and fully determined by the seed */
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline uint32_t sim_below(sim_rng *r, uint32_t n) { return n ? (uint32_t)(sim_next(r) % n) : 0; }
static inline bool sim_chance(sim_rng *r, uint32_t per_mille) { return sim_below(r, 1000) < per_mille; }

/* A frame in flight on a link. */
typedef struct sim_msg {
    int64_t  at;
    uint32_t len;
    uint8_t *bytes;
} sim_msg;

typedef struct sim_link {
    sim_msg *q;
    uint32_t head, n, cap;
    bool     up;
    uint32_t gen;     /* bumps on every reset: the peer id the far end sees */
    int64_t  last_at; /* delivery time of the newest frame: FIFO */
} sim_link;

typedef struct sim sim;

typedef struct sim_cellp {
    sim       *s;
    int        ci;
    cell      *c;
    d11_store *st;
    bool       up;
    int64_t    restart_at;
    bool       committing;
    const uint8_t *ops;
    size_t     len;
    uint32_t   nops;
    int64_t    commit_at;
    sim_link   to_gw, from_gw, to_center, from_center;
    int64_t    reconnect_at;
    int64_t    tick_at;     /* the cell's next 10 ms tick (late when the cell stalls) */
} sim_cellp;

typedef struct sim_centerp {
    center    *c;
    d11_store *st;
    bool       up;
    int64_t    restart_at;
    sim_link   to_gw, from_gw;
} sim_centerp;

typedef enum { RQ_CREATE, RQ_PAY, RQ_CANCEL, RQ_GET, RQ_LIST, RQ_PRODUCT, RQ_RESTOCK, RQ_VIEW } sim_rq_kind;

typedef struct sim_req {
    bool        used;
    uint64_t    req_id;
    sim_rq_kind kind;
    int         target;   /* cell index, or -1 = center */
    uint32_t    link_gen; /* gateway link generation it was sent on */
    int64_t     timeout_at;
    int         order;    /* client order index (pay/cancel/get), create: the key's order slot */
    int         key;      /* client key index (create) */
    uint64_t    want_id;  /* create replay: the id the key must have */
    bool        diff_body;
    int         sku;
} sim_req;

/* What the client knows about one idempotency key / order. */
typedef struct sim_order {
    int      user;
    bool     stress;
    uint32_t nitems;
    int      skus[3];
    uint32_t qty[3];
    uint64_t id;            /* 0 until a 201/200 told us */
    uint8_t  acked_status;  /* last status a 200/201 told us */
    bool     acked;
    uint8_t  max_status_seen;
    char     key[24];
    char     pay[24];
} sim_order;

typedef struct sim_stats {
    uint64_t steps, requests, replies, created, paid, cancelled, expired_seen, timeouts, crashes_cell,
        crashes_center, commit_failures, resets, drops, restocks, quiescences, checks;
} sim_stats;

struct sim {
    uint64_t    seed;
    sim_rng     rng;
    int64_t     now;      /* simulated ms (mono and wall share it) */
    d11_clock   clock;
    int         ncells;
    d11_routing routing;  /* the default table: slot -> cell */
    sim_cellp   cells[SIM_CELLS_MAX];
    sim_centerp center;
    bool        faults;   /* false while healing for quiescence */
    /* client */
    sim_req     reqs[SIM_REQS_MAX];
    uint64_t    next_req;
    sim_order   orders[SIM_ORDERS_MAX];
    int         norders;
    uint64_t    stock[SIM_SKUS][2]; /* total put on sale per (sku, shadow) */
    bool        product_made[SIM_SKUS];
    int         verbose;
    bool        trace;    /* D11_SIM_TRACE set */
    sim_stats   stats;
    char        failure[512];
    d11_buf     tmp;
    /* every value `sold` ever had in a committed STOCK row, per (cell, sku, shadow): what
     * the center hears must be one of them (reports carry only committed values) */
    uint8_t     committed_sold[SIM_CELLS_MAX][SIM_SKUS][2][SIM_SOLD_VALUES / 8];
};

/* sim.c */
void sim_send_cell(sim *s, int ci, const d11_buf *frame);  /* gateway -> cell */
void sim_send_center(sim *s, const d11_buf *frame);        /* gateway -> center */
bool sim_link_push(sim *s, sim_link *l, const uint8_t *p, size_t n);
void sim_fail(sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* client.c */
void sim_client_init(sim *s);
void sim_client_act(sim *s);                       /* one random client action */
void sim_client_on_reply(sim *s, int from, const d11_frame *f); /* from: cell index or -1 */
void sim_client_link_reset(sim *s, int target);    /* requests on that link: outcome unknown */
void sim_client_timeouts(sim *s);
bool sim_client_idle(const sim *s);
void sim_client_after_recovery(sim *s, int ci);    /* acknowledged orders of cell ci survived? */

/* check.c */
void sim_note_commit(sim *s, int ci, const uint8_t *ops, size_t len, uint32_t nops);
void sim_check_step(sim *s);
void sim_check_quiet(sim *s);

#endif
