/*
 * test_center.c — the center's state machine (src/center/center.h), driven without
 * sockets, threads or real time.
 *
 * Harness: a tiny test store (mem_store below) implementing d11_store_ops over one byte
 * buffer: commit appends the op log (or fails on demand), load replays EVERY committed
 * record in commit order — so a reopen also proves that applying the same row many
 * times converges. A fake host records what center_flush sends; a fake clock is moved by
 * hand. Requests are real frames built with the wire encoders.
 *
 * What is checked: first start commits the routing table; nothing is sent before the
 * commit of its round; grant sizing; idempotent returns; reclaim with 3 cells near
 * sell-out (who is asked, the parked grant answered when returns cover it); sold_out
 * at the reclaim deadline and at once when nobody can be asked; the parked-grant limit
 * (503); a peer going down drops its parked grants and held output; HELLO reply contents
 * and that a re-HELLO moves the cell to its new peer; reported sold replaces (lowers) the
 * stored value, is persisted and shows in the product view (issue 7, defect 2, center
 * side); a failed commit sends nothing and stops the machine, and a reopen shows the
 * state before that round; reopening gives the same ledgers; products come before their
 * stock and ledger rows in every commit.
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "center/catalog.h"
#include "center/center.h"
#include "core/util.h"
#include "rpc/wire.h"
#include "store/center_ops.h"
#include "store/mem.h"

#include "check.h"

/* ---- a store over a byte buffer ---- */

typedef struct mem_store {
    d11_store base;
    d11_buf   log; /* every committed record, in commit order */
    int       fail_next;
    int       ncommits;
    uint32_t  last_nops;
    uint32_t  nrecs; /* records in log */
} mem_store;

/* Every record ever committed, in commit order, in one call (the seam allows batches). */
static int ms_load(d11_store *s, d11_store_apply_fn *apply, void *ctx)
{
    mem_store *m = (mem_store *)s;
    return m->log.len ? apply(ctx, (const uint8_t *)m->log.data, m->log.len, m->nrecs) : 0;
}

static int ms_commit(d11_store *s, const uint8_t *ops, size_t len, uint32_t nops)
{
    mem_store *m = (mem_store *)s;
    if (m->fail_next) {
        m->fail_next = 0;
        return D11_ESTORE;
    }
    d11_buf_append(&m->log, ops, len);
    m->ncommits++;
    m->last_nops = nops;
    m->nrecs += nops;
    return 0;
}

static int ms_sync(d11_store *s)
{
    (void)s;
    return 0;
}

static void ms_close(d11_store *s) { (void)s; }

static const d11_store_ops ms_ops = {"test-memory", ms_load, ms_commit, ms_sync, ms_close};

/* ---- fake clock and host ---- */

static int64_t now_mono = 1000000, now_wall = 1700000000000LL;
static int64_t clk_mono(void *d)
{
    (void)d;
    return now_mono;
}
static int64_t clk_wall(void *d)
{
    (void)d;
    return now_wall;
}
static const d11_clock test_clock = {clk_mono, clk_wall, NULL};

#define SENT_MAX 1024
typedef struct sent_frame {
    uint32_t      peer;
    d11_frame_hdr hdr;
    uint8_t      *payload;
    size_t        n;
} sent_frame;
static sent_frame sent[SENT_MAX];
static int nsent;

static void host_send(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    (void)data;
    if (nsent == SENT_MAX) abort();
    sent_frame *s = &sent[nsent++];
    s->peer = peer;
    CHECK(d11_frame_hdr_decode(frame, n, &s->hdr) == 0 && s->hdr.len == n);
    s->n = n - D11_FRAME_HDR_BYTES;
    s->payload = malloc(s->n + 1);
    memcpy(s->payload, frame + D11_FRAME_HDR_BYTES, s->n);
}

static void sent_clear(void)
{
    for (int i = 0; i < nsent; i++) free(sent[i].payload);
    nsent = 0;
}

static const center_host host = {&test_clock, NULL, host_send};
static const center_opts opts3 = {.ncells = 3, .grant_chunk_max = 10, .reclaim_ms = 300};

/* ---- frames in ---- */

static d11_buf fb;
static uint64_t next_req = 100;

typedef void enc_fn(d11_buf *b, const void *m);

/* Build a request frame of type with payload from enc(m), deliver it to the center. */
static uint64_t deliver(center *c, uint32_t peer, uint16_t type, uint16_t flags, enc_fn *enc, const void *m)
{
    d11_buf_reset(&fb);
    d11_frame_hdr h = {.type = type, .flags = flags, .req_id = next_req++};
    size_t start = d11_frame_begin(&fb, &h);
    if (enc) enc(&fb, m);
    d11_frame_end(&fb, start);
    d11_frame f;
    CHECK(d11_frame_hdr_decode((const uint8_t *)fb.data, fb.len, &f.hdr) == 0);
    f.payload = (const uint8_t *)fb.data + D11_FRAME_HDR_BYTES;
    f.payload_len = fb.len - D11_FRAME_HDR_BYTES;
    center_on_frame(c, peer, &f);
    return h.req_id;
}

static void enc_product(d11_buf *b, const void *m) { d11_msg_product_enc(b, m); }
static void enc_sku(d11_buf *b, const void *m) { d11_msg_sku_qty_enc(b, m, false); }
static void enc_sku_qty(d11_buf *b, const void *m) { d11_msg_sku_qty_enc(b, m, true); }
static void enc_inv(d11_buf *b, const void *m) { d11_msg_inv_enc(b, m); }
static void enc_hello(d11_buf *b, const void *m) { d11_msg_hello_enc(b, &(d11_msg_hello){.cell = *(const uint16_t *)m}); }

typedef struct report1 {
    uint16_t    cell;
    const char *sku;
    uint8_t     shadow;
    uint64_t    sold;
} report1;
static void enc_report1(d11_buf *b, const void *m)
{
    const report1 *r = m;
    d11_msg_report_entry x = {.sku = {r->sku, strlen(r->sku)}, .shadow = r->shadow, .sold = r->sold};
    d11_msg_report_enc(b, &(d11_msg_report){.cell = r->cell, .n = 1}, &x);
}

static d11_str S(const char *s) { return (d11_str){s, strlen(s)}; }

static void create(center *c, uint32_t peer, const char *sku, uint64_t stock)
{
    d11_msg_product m = {.sku = S(sku), .title = S("Phone"), .price_cents = 500, .stock = stock, .category = S("x")};
    deliver(c, peer, D11_MSG_PRODUCT_CREATE, 0, enc_product, &m);
}

static uint64_t ask(center *c, uint32_t peer, uint16_t cell, const char *sku, uint64_t want, uint64_t sold)
{
    d11_msg_inv m = {.cell = cell, .sku = S(sku), .shadow = 0, .qty = want, .sold = sold};
    return deliver(c, peer, D11_MSG_GRANT, 0, enc_inv, &m);
}

static uint64_t give_back(center *c, uint32_t peer, uint16_t cell, const char *sku, uint64_t returned, uint64_t sold)
{
    d11_msg_inv m = {.cell = cell, .sku = S(sku), .shadow = 0, .qty = returned, .sold = sold};
    return deliver(c, peer, D11_MSG_RETURN, 0, enc_inv, &m);
}

static void hello(center *c, uint32_t peer, uint16_t cell) { deliver(c, peer, D11_MSG_CELL_HELLO, 0, enc_hello, &cell); }

/* The sent frame answering req_id (or NULL). */
static const sent_frame *reply_to(uint64_t req_id)
{
    for (int i = 0; i < nsent; i++)
        if ((sent[i].hdr.flags & D11_WF_REPLY) && sent[i].hdr.req_id == req_id) return &sent[i];
    return NULL;
}

static int count_type(uint16_t type, uint32_t peer)
{
    int n = 0;
    for (int i = 0; i < nsent; i++) n += sent[i].hdr.type == type && sent[i].peer == peer;
    return n;
}

static bool grant_reply(uint64_t req_id, d11_msg_grant_reply *r)
{
    const sent_frame *s = reply_to(req_id);
    return s && s->hdr.status == 200 && d11_msg_grant_reply_dec(s->payload, s->n, r) == 0;
}

static uint64_t cell_granted(const center *c, const char *sku, int cell)
{
    uint64_t g = 0, r, s;
    CHECK(center_ledger_cell(c, sku, strlen(sku), 0, cell, &g, &r, &s));
    return g;
}

/* Every ledger figure of sku, both shadows, as one comparable array. */
typedef struct snapshot {
    uint64_t v[2][3 + 3 * 3];
} snapshot;
static snapshot snap(const center *c, const char *sku)
{
    snapshot s;
    memset(&s, 0, sizeof s);
    for (int sh = 0; sh < 2; sh++) {
        CHECK(center_ledger(c, sku, strlen(sku), sh, &s.v[sh][0], &s.v[sh][1], &s.v[sh][2]));
        for (int cell = 0; cell < 3; cell++)
            CHECK(center_ledger_cell(c, sku, strlen(sku), sh, cell, &s.v[sh][3 + 3 * cell], &s.v[sh][4 + 3 * cell],
                                     &s.v[sh][5 + 3 * cell]));
    }
    return s;
}

static void store_init(mem_store *m)
{
    memset(m, 0, sizeof *m);
    m->base.ops = &ms_ops;
    d11_buf_init(&m->log, 4096);
}

/* Peers: 10 = gateway; 1, 2, 3 = cells 0, 1, 2. */
enum { GW = 10, P0 = 1, P1 = 2, P2 = 3 };

static center *open_center(mem_store *m)
{
    center *c = NULL;
    CHECK_RC(center_open(&c, &opts3, &host, &m->base), 0);
    return c;
}

static center *open_connected(mem_store *m)
{
    center *c = open_center(m);
    center_peer_up(c, GW);
    for (uint32_t p = P0; p <= P2; p++) {
        center_peer_up(c, p);
        hello(c, p, (uint16_t)(p - P0));
    }
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    return c;
}

/* ---- tests ---- */

static void test_first_start_and_routing(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_center(&m);
    CHECK_EQ(m.ncommits, 1); /* the routing table, before anything can be served */
    CHECK_EQ(m.last_nops, 1);
    CHECK_EQ(center_routing(c)->ncells, 3);
    center_peer_up(c, GW);
    uint64_t rq = deliver(c, GW, D11_MSG_ROUTING_GET, 0, NULL, NULL);
    CHECK_EQ(nsent, 0);
    CHECK_RC(center_flush(c), 0);
    CHECK_EQ(m.ncommits, 1); /* nothing changed: no commit */
    const sent_frame *s = reply_to(rq);
    d11_routing r;
    CHECK(s && s->peer == GW && s->hdr.status == 200 && d11_routing_dec(s->payload, s->n, &r) == 0);
    CHECK(s && r.ncells == 3 && r.version == 1 && r.cell_of_slot[D11_SLOTS - 1] == 2);
    sent_clear();
    center_free(c);

    /* A second start with another cell count is refused, the stored table is kept. */
    center *c2 = NULL;
    center_opts o4 = opts3;
    o4.ncells = 4;
    CHECK_RC(center_open(&c2, &o4, &host, &m.base), D11_ECONFIG);
    CHECK(c2 == NULL);
    c2 = open_center(&m);
    CHECK_EQ(m.ncommits, 1);
    center_free(c2);
    d11_buf_free(&m.log);
}

static void test_grant_return_and_hold(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "A", 100);
    uint64_t g0 = ask(c, P0, 0, "A", 1, 0);
    CHECK_EQ(nsent, 0); /* held until the commit */
    int commits = m.ncommits;
    CHECK_RC(center_flush(c), 0);
    CHECK_EQ(m.ncommits, commits + 1); /* one commit for the round */
    d11_msg_grant_reply r;
    CHECK(grant_reply(g0, &r) && r.exists && r.price_cents == 500 && !r.sold_out);
    /* max(1, min(100 / (2*3), 10)) = 10 */
    CHECK_EQ(r.granted_cum, 10);
    CHECK_EQ(center_inv_grant_size(100, 1, 3, 10), 10);
    uint64_t t, f, sold;
    CHECK(center_ledger(c, "A", 1, 0, &t, &f, &sold) && t == 100 && f == 90);
    CHECK(center_ledger(c, "A", 1, 1, &t, &f, &sold) && t == 100 && f == 100); /* shadow untouched */
    sent_clear();

    /* A return is cumulative: a repeat changes nothing. */
    uint64_t r1 = give_back(c, P0, 0, "A", 4, 3);
    uint64_t r2 = give_back(c, P0, 0, "A", 4, 3);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(r1) && reply_to(r1)->hdr.status == 200 && reply_to(r2) && reply_to(r2)->hdr.status == 200);
    CHECK(center_ledger(c, "A", 1, 0, &t, &f, &sold) && f == 94 && sold == 3);
    sent_clear();
    /* Returning more than was granted is a corrupt cell: 409, nothing changes. */
    uint64_t r3 = give_back(c, P0, 0, "A", 11, 3);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(r3) && reply_to(r3)->hdr.status == 409);
    CHECK(center_ledger(c, "A", 1, 0, &t, &f, &sold) && f == 94);
    sent_clear();
    /* An unknown SKU: exists = 0. A catalog lookup (want 0) grants nothing. */
    uint64_t u = ask(c, P1, 1, "NOPE", 1, 0);
    uint64_t l = ask(c, P1, 1, "A", 0, 0);
    CHECK_RC(center_flush(c), 0);
    CHECK(grant_reply(u, &r) && !r.exists);
    CHECK(grant_reply(l, &r) && r.exists && r.granted_cum == 0);
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

/* 3 cells, 12 units, everything allotted: the last units move to the cell that asks. */
static void test_reclaim_near_sellout(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "HOT", 12);
    uint64_t q[3];
    for (int i = 0; i < 3; i++) q[i] = ask(c, P0 + (uint32_t)i, (uint16_t)i, "HOT", 4, 0);
    CHECK_RC(center_flush(c), 0);
    d11_msg_grant_reply r;
    for (int i = 0; i < 3; i++) CHECK(grant_reply(q[i], &r) && r.granted_cum == 4);
    uint64_t t, f, sold;
    CHECK(center_ledger(c, "HOT", 3, 0, &t, &f, &sold) && f == 0);
    sent_clear();

    report1 rp1 = {1, "HOT", 0, 1}, rp2 = {2, "HOT", 0, 2};
    deliver(c, P1, D11_MSG_REPORT, 0, enc_report1, &rp1);
    deliver(c, P2, D11_MSG_REPORT, 0, enc_report1, &rp2);
    uint64_t want = ask(c, P0, 0, "HOT", 2, 4); /* cell 0 sold its 4, wants 2 more */
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(want) == NULL); /* parked */
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P1), 1);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P2), 1);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P0), 0); /* never the asking cell */
    for (int i = 0; i < nsent; i++)
        if (sent[i].hdr.type == D11_MSG_RECLAIM) {
            d11_msg_reclaim rc;
            CHECK_RC(d11_msg_reclaim_dec(sent[i].payload, sent[i].n, &rc), 0);
            CHECK(rc.sku.n == 3 && memcmp(rc.sku.p, "HOT", 3) == 0 && rc.shadow == 0);
            CHECK(sent[i].hdr.flags & D11_WF_PUSH);
        }
    sent_clear();

    /* Cell 1 hands back its 3 unsold: that covers the parked 2, answered at once. */
    uint64_t ret = give_back(c, P1, 1, "HOT", 3, 1);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(ret) && reply_to(ret)->hdr.status == 200);
    CHECK(grant_reply(want, &r) && !r.sold_out && r.granted_cum == 6);
    CHECK(center_ledger(c, "HOT", 3, 0, &t, &f, &sold) && f == 1);
    sent_clear();

    /* Cell 1 wants 5: a new round (the last one ended with its grant, though cell 2 never
     * answered) asks cell 0 (6 out, 4 sold) and cell 2 (4 out, 2 sold) again. Neither
     * answers: sold_out at this round's deadline, not before. */
    uint64_t w5 = ask(c, P1, 1, "HOT", 5, 1);
    CHECK_RC(center_flush(c), 0);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P0), 1);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P2), 1);
    CHECK(reply_to(w5) == NULL);
    sent_clear();
    now_mono += 299;
    center_tick(c);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(w5) == NULL);
    now_mono += 1;
    center_tick(c);
    CHECK_RC(center_flush(c), 0);
    CHECK(grant_reply(w5, &r) && r.sold_out && r.granted_cum == 4);
    sent_clear();

    /* Nobody holds unsold units: sold_out in the same round, no RECLAIM. */
    report1 rp0 = {0, "HOT", 0, 6};
    deliver(c, P0, D11_MSG_REPORT, 0, enc_report1, &rp0);
    give_back(c, P2, 2, "HOT", 2, 2);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    uint64_t w9 = ask(c, P1, 1, "HOT", 9, 1);
    CHECK_RC(center_flush(c), 0);
    CHECK(grant_reply(w9, &r) && r.sold_out);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P0) + count_type(D11_MSG_RECLAIM, P2), 0);
    CHECK(center_ledger(c, "HOT", 3, 0, &t, &f, &sold) && t == 12 && f == 3 && sold == 6 + 1 + 2);
    sent_clear();

    /* A restock serves a parked grant without waiting for the round. */
    report1 rp2b = {2, "HOT", 0, 1}; /* cell 2 shows unsold again: it will be asked */
    deliver(c, P2, D11_MSG_REPORT, 0, enc_report1, &rp2b);
    uint64_t w7 = ask(c, P1, 1, "HOT", 7, 1);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(w7) == NULL);
    d11_msg_sku_qty rs = {.sku = S("HOT"), .qty = 10};
    deliver(c, GW, D11_MSG_PRODUCT_RESTOCK, 0, enc_sku_qty, &rs);
    CHECK_RC(center_flush(c), 0);
    CHECK(grant_reply(w7, &r) && !r.sold_out && r.granted_cum == 4 + 7);
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

/* A reclaim round ends when its parked grants are answered, even if an asked cell never
 * answered: a later round gets its own deadline and is not answered early. */
static void test_new_round_new_deadline(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "D", 6);
    for (int i = 0; i < 3; i++) ask(c, P0 + (uint32_t)i, (uint16_t)i, "D", 2, 0);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    uint64_t w = ask(c, P0, 0, "D", 1, 2); /* cells 1 and 2 asked */
    give_back(c, P1, 1, "D", 2, 0);        /* cell 1 covers it; cell 2 stays silent */
    CHECK_RC(center_flush(c), 0);
    d11_msg_grant_reply r;
    CHECK(grant_reply(w, &r) && !r.sold_out);
    sent_clear();
    now_mono += 10000; /* long after the first round's deadline */
    center_tick(c);
    give_back(c, P0, 0, "D", 0, 3); /* cell 0 sold everything it holds */
    uint64_t w2 = ask(c, P1, 1, "D", 2, 0); /* free 1 < 2: a new round asks cell 2 again */
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(w2) == NULL);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P2), 1);
    now_mono += CENTER_RECLAIM_MS_DEFAULT - 1;
    center_tick(c);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(w2) == NULL); /* still within the new round */
    sent_clear();
    give_back(c, P2, 2, "D", 2, 0);
    CHECK_RC(center_flush(c), 0);
    CHECK(grant_reply(w2, &r) && !r.sold_out && r.granted_cum == 2 + 2);
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

static void test_pending_limit_and_peer_down(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "L", 2);
    uint64_t g = ask(c, P0, 0, "L", 2, 0);
    CHECK_RC(center_flush(c), 0);
    d11_msg_grant_reply r;
    CHECK(grant_reply(g, &r) && r.granted_cum == 2);
    sent_clear();
    /* Cell 0 holds 2 unsold, never answers RECLAIM: requests stay parked. */
    uint64_t first = 0, over = 0;
    for (int i = 0; i < CENTER_PENDING_MAX; i++) {
        uint64_t id = ask(c, P1, 1, "L", 1, 0);
        if (!i) first = id;
    }
    over = ask(c, P1, 1, "L", 1, 0);
    uint64_t gone = ask(c, P2, 2, "L", 1, 0); /* beyond the limit too */
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(over) && reply_to(over)->hdr.status == 503);
    CHECK(reply_to(gone) && reply_to(gone)->hdr.status == 503);
    CHECK(reply_to(first) == NULL);
    sent_clear();
    /* A request from cell 1 answered by a held frame, then cell 1's peer goes away. */
    deliver(c, P1, D11_MSG_PING, 0, NULL, NULL);
    center_peer_down(c, P1);
    now_mono += 1000;
    center_tick(c);
    CHECK_RC(center_flush(c), 0);
    CHECK_EQ(nsent, 0); /* parked grants and the held PING reply of P1: dropped */
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

static void test_hello_reply(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "H1", 100);
    create(c, GW, "H2", 100);
    create(c, GW, "H3", 100);
    ask(c, P0, 0, "H1", 3, 0);
    d11_msg_inv sh = {.cell = 0, .sku = S("H2"), .shadow = 1, .qty = 1, .sold = 0};
    deliver(c, P0, D11_MSG_GRANT, D11_WF_STRESS, enc_inv, &sh);
    ask(c, P1, 1, "H3", 1, 0); /* another cell's: not in cell 0's HELLO */
    give_back(c, P0, 0, "H1", 2, 0);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    /* Cell 0 reconnects on a new peer. */
    center_peer_up(c, 40);
    uint16_t cell0 = 0;
    uint64_t h = deliver(c, 40, D11_MSG_CELL_HELLO, 0, enc_hello, &cell0);
    CHECK_RC(center_flush(c), 0);
    const sent_frame *s = reply_to(h);
    CHECK(s && s->peer == 40 && s->hdr.status == 200);
    if (s) {
        d11_wire_iter it;
        d11_msg_hello_reply hr;
        d11_msg_hello_reply_entry x;
        CHECK_RC(d11_msg_hello_reply_dec_begin(&it, s->payload, s->n, &hr), 0);
        CHECK_EQ(hr.n, 2);
        int seen = 0, rc;
        while ((rc = d11_msg_hello_reply_dec_next(&it, &x)) == 1) {
            CHECK_EQ(x.price_cents, 500);
            if (x.sku.n == 2 && !memcmp(x.sku.p, "H1", 2) && x.shadow == 0) {
                seen |= 1;
                CHECK(x.granted_cum == 10 && x.returned_cum == 2);
            }
            if (x.sku.n == 2 && !memcmp(x.sku.p, "H2", 2) && x.shadow == 1) {
                seen |= 2;
                CHECK(x.granted_cum == 10 && x.returned_cum == 0);
            }
        }
        CHECK_RC(rc, 0);
        CHECK_EQ(seen, 3);
    }
    sent_clear();
    /* RECLAIM now goes to the new peer of cell 0. */
    create(c, GW, "H4", 6);
    ask(c, P0, 0, "H4", 6, 0);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    ask(c, P1, 1, "H4", 1, 0);
    CHECK_RC(center_flush(c), 0);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, 40), 1);
    CHECK_EQ(count_type(D11_MSG_RECLAIM, P0), 0);
    sent_clear();
    /* Malformed HELLO: 400. */
    uint16_t bad = 7;
    uint64_t hb = deliver(c, 41, D11_MSG_CELL_HELLO, 0, enc_hello, &bad);
    CHECK_RC(center_flush(c), 0);
    CHECK(reply_to(hb) && reply_to(hb)->hdr.status == 400);
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

static bool body_has(const sent_frame *s, const char *needle)
{
    d11_str code, body;
    if (!s || d11_msg_reply_dec(s->payload, s->n, &code, &body) < 0) return false;
    return memmem(body.p, body.n, needle, strlen(needle)) != NULL;
}

/* Issue 7 defect 2, center side: reported sold is the cell's latest committed value. */
static void test_reported_sold_replaces_and_persists(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "V", 50);
    ask(c, P0, 0, "V", 8, 0);
    ask(c, P1, 1, "V", 8, 0);
    report1 a = {0, "V", 0, 7}, b = {1, "V", 0, 5};
    deliver(c, P0, D11_MSG_REPORT, 0, enc_report1, &a);
    deliver(c, P1, D11_MSG_REPORT, 0, enc_report1, &b);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    d11_msg_sku_qty q = {.sku = S("V")};
    uint64_t get = deliver(c, GW, D11_MSG_PRODUCT_GET, 0, enc_sku, &q);
    CHECK_RC(center_flush(c), 0);
    CHECK(body_has(reply_to(get), "\"stock_sold\":12,\"stock_available\":38"));
    sent_clear();
    /* After a crash the cell reports less (its uncommitted sales were lost): the lower
     * value replaces the old one, at once and durably. */
    a.sold = 4;
    deliver(c, P0, D11_MSG_REPORT, 0, enc_report1, &a);
    get = deliver(c, GW, D11_MSG_PRODUCT_GET, 0, enc_sku, &q);
    CHECK_RC(center_flush(c), 0);
    CHECK(body_has(reply_to(get), "\"stock_sold\":9,\"stock_available\":41"));
    sent_clear();
    /* A malformed report (its second entry has shadow 2) is refused whole: 400, the
     * valid first entry is not applied either. */
    {
        d11_msg_report_entry bad[2] = {{.sku = {"V", 1}, .shadow = 0, .sold = 40}, {.sku = {"V", 1}, .shadow = 2, .sold = 1}};
        d11_buf_reset(&fb);
        d11_frame_hdr h = {.type = D11_MSG_REPORT, .req_id = next_req++};
        size_t start = d11_frame_begin(&fb, &h);
        d11_msg_report_enc(&fb, &(d11_msg_report){.cell = 0, .n = 2}, bad);
        d11_frame_end(&fb, start);
        d11_frame fr;
        CHECK_RC(d11_frame_hdr_decode((const uint8_t *)fb.data, fb.len, &fr.hdr), 0);
        fr.payload = (const uint8_t *)fb.data + D11_FRAME_HDR_BYTES;
        fr.payload_len = fb.len - D11_FRAME_HDR_BYTES;
        center_on_frame(c, P0, &fr);
        CHECK_RC(center_flush(c), 0);
        CHECK(reply_to(h.req_id) && reply_to(h.req_id)->hdr.status == 400);
        uint64_t t0, f0, s0;
        CHECK(center_ledger(c, "V", 1, 0, &t0, &f0, &s0) && s0 == 9);
        sent_clear();
    }
    /* Also through GRANT and RETURN. */
    ask(c, P1, 1, "V", 0, 3);
    give_back(c, P0, 0, "V", 1, 2);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    snapshot before = snap(c, "V");
    center_free(c);
    c = open_center(&m);
    snapshot after = snap(c, "V");
    CHECK(memcmp(&before, &after, sizeof before) == 0);
    uint64_t t, f, sold;
    CHECK(center_ledger(c, "V", 1, 0, &t, &f, &sold) && sold == 2 + 3);
    center_peer_up(c, GW);
    get = deliver(c, GW, D11_MSG_PRODUCT_GET, 0, enc_sku, &q);
    CHECK_RC(center_flush(c), 0);
    CHECK(body_has(reply_to(get), "\"stock_sold\":5,\"stock_available\":45"));
    sent_clear();
    center_free(c);
    d11_buf_free(&m.log);
}

static void test_failed_commit_sends_nothing(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    create(c, GW, "F", 40);
    ask(c, P0, 0, "F", 1, 0);
    CHECK_RC(center_flush(c), 0);
    sent_clear();
    snapshot durable = snap(c, "F");
    uint64_t g = ask(c, P1, 1, "F", 1, 0);
    create(c, GW, "F2", 5);
    deliver(c, GW, D11_MSG_PING, 0, NULL, NULL); /* even a reply that says nothing new waits */
    m.fail_next = 1;
    CHECK_RC(center_flush(c), D11_ESTORE);
    CHECK_EQ(nsent, 0);
    CHECK(reply_to(g) == NULL);
    /* Stopped for good: later rounds send nothing either. */
    deliver(c, GW, D11_MSG_PING, 0, NULL, NULL);
    CHECK_RC(center_flush(c), D11_ESTORE);
    CHECK_EQ(nsent, 0);
    center_free(c);
    /* Recovery shows the state before that round. */
    c = open_center(&m);
    snapshot again = snap(c, "F");
    CHECK(memcmp(&durable, &again, sizeof durable) == 0);
    CHECK_EQ(center_products(c), 1);
    CHECK_EQ(cell_granted(c, "F", 1), 0);
    center_free(c);
    d11_buf_free(&m.log);
}

/* Every commit lists a product before its stock and ledger rows; reopen converges. */
static void test_log_order_and_reopen(void)
{
    mem_store m;
    store_init(&m);
    center *c = open_connected(&m);
    const char *skus[] = {"R1", "R2", "R3"};
    for (int i = 0; i < 3; i++) create(c, GW, skus[i], 30 + (uint64_t)i);
    for (int round = 0; round < 5; round++) {
        for (int i = 0; i < 3; i++) ask(c, P0 + (uint32_t)(round % 3), (uint16_t)(round % 3), skus[i], 2, 1);
        d11_msg_sku_qty rs = {.sku = S("R2"), .qty = 3};
        if (round == 2) deliver(c, GW, D11_MSG_PRODUCT_RESTOCK, 0, enc_sku_qty, &rs);
        CHECK_RC(center_flush(c), 0);
        sent_clear();
    }
    /* Walk the log: products first, ledger rows consistent. */
    size_t off = 0;
    int nproducts = 0, bad_order = 0, bad = 0;
    char seen[8][8];
    while (off < m.log.len) {
        size_t n;
        center_op op;
        if (center_op_next((const uint8_t *)m.log.data + off, m.log.len - off, &n) < 0 ||
            center_op_dec((const uint8_t *)m.log.data + off, n, &op) < 0) {
            bad++;
            break;
        }
        if (op.type == CENTER_OP_PRODUCT && nproducts < 8) {
            memcpy(seen[nproducts], op.u.product.sku.p, op.u.product.sku.n);
            seen[nproducts++][op.u.product.sku.n] = 0;
        }
        if (op.type == CENTER_OP_STOCK || op.type == CENTER_OP_LEDGER) {
            d11_str k = op.type == CENTER_OP_STOCK ? op.u.stock.sku : op.u.ledger.sku;
            bool ok = false;
            for (int i = 0; i < nproducts; i++) ok |= strlen(seen[i]) == k.n && !memcmp(seen[i], k.p, k.n);
            bad_order += !ok;
        }
        off += n;
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(bad_order, 0);
    snapshot before[3];
    for (int i = 0; i < 3; i++) before[i] = snap(c, skus[i]);
    center_free(c);
    c = open_center(&m);
    for (int i = 0; i < 3; i++) {
        snapshot after = snap(c, skus[i]);
        CHECK(memcmp(&before[i], &after, sizeof after) == 0);
    }
    uint64_t t, f, sold;
    CHECK(center_ledger(c, "R2", 2, 0, &t, &f, &sold) && t == 34);
    CHECK(center_ledger(c, "R2", 2, 1, &t, &f, &sold) && t == 34);
    center_free(c);
    d11_buf_free(&m.log);
}

/* The same machine over the project's memory backend (store/mem.c, the simulator's). */
static void test_over_mem_backend(void)
{
    d11_store *st = d11_mem_store_open();
    center *c = NULL;
    CHECK_RC(center_open(&c, &opts3, &host, st), 0);
    center_peer_up(c, GW);
    center_peer_up(c, P0);
    hello(c, P0, 0);
    create(c, GW, "M", 20);
    uint64_t g = ask(c, P0, 0, "M", 2, 0);
    CHECK_RC(center_flush(c), 0);
    d11_msg_grant_reply r;
    CHECK(grant_reply(g, &r) && r.granted_cum == 3); /* max(2, min(20/6, 10)) */
    sent_clear();
    snapshot durable = snap(c, "M");
    ask(c, P0, 0, "M", 2, 1);
    d11_mem_store_fail_next(st, 1);
    CHECK_RC(center_flush(c), D11_ESTORE);
    CHECK_EQ(nsent, 0);
    center_free(c);
    c = NULL;
    CHECK_RC(center_open(&c, &opts3, &host, st), 0);
    snapshot again = snap(c, "M");
    CHECK(memcmp(&durable, &again, sizeof durable) == 0);
    CHECK_EQ(d11_mem_store_commits(st), 2); /* routing, one round; the failed one is not there */
    center_free(c);
    d11_store_close(st);
}

int main(void)
{
    d11_log_init("test_center", D11_LOG_ERROR + 1);
    d11_buf_init(&fb, 256);
    test_first_start_and_routing();
    test_grant_return_and_hold();
    test_reclaim_near_sellout();
    test_new_round_new_deadline();
    test_pending_limit_and_peer_down();
    test_hello_reply();
    test_reported_sold_replaces_and_persists();
    test_failed_commit_sends_nothing();
    test_log_order_and_reopen();
    test_over_mem_backend();
    d11_buf_free(&fb);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
