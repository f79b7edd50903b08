/*
 * cell.c — `d11 cell --id N`: the LDC unit that owns a slice of users (their slots).
 *
 * The logic thread (this file) owns all of the cell's state and runs one epoll loop:
 *   - gateway connections on DATA/cell-<id>.sock send order requests;
 *   - one connection to the center for allotments (GRANT / RETURN / REPORT / HELLO) and
 *     reclaim pushes;
 *   - the storage thread's eventfd says "batch committed".
 *
 * Hot path (ORDER_CREATE): idempotency lookup in memory; reserve every item from the
 * cell's own allotment (all or nothing); create the order in memory; append its rows,
 * the outbox event and (at batch close) the touched stock rows to the OPEN batch; the
 * reply waits in the batch. When the storage thread is idle the open batch is closed
 * and handed over; while it commits, the next batch fills. Replies leave only after
 * their batch committed (durability=sync: fsynced), so an acknowledged order survives
 * any crash. Reads of state that is not yet durable are deferred the same way, so a
 * client never sees an order that a crash could take back.
 *
 * Allotments: ledger per (sku, shadow) with cumulative granted / returned counters and
 * sold = units held by pending + paid orders; available = granted - returned - sold.
 * Invariant (asserted): returned + sold <= granted; and at recovery sold equals the sum
 * over the stored orders. When an order cannot be served from the allotment it is
 * parked and the cell asks the center for a grant; the center may reclaim units from
 * other cells first. A "sold out" answer is cached for soldout_cache_ms so a sold-out
 * flash sale does not turn every rejected click into a center round trip.
 *
 * Recovery: load stock rows and every order from the database, check that each
 * ledger's sold matches its orders, rebuild the maps and the expiry heap, then HELLO
 * the center to learn grants that were committed there but not here.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/fault.h"
#include "../core/map.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "../store/sqlite_util.h"
#include "cell_int.h"

#define CELL_CONNS_MAX 1024
#define CELL_TICK_MS 10
#define CELL_REPORT_MS 100
#define CELL_GRANT_TIMEOUT_MS 1000 /* a grant unanswered this long is asked again */
#define ORDER_EPOCH_MS 1735689600000LL /* 2025-01-01T00:00:00Z: order ids count ms from here */
#define NONE32 UINT32_MAX

typedef struct ledger {
    char     sku[D11_SKU_BYTES_MAX + 1];
    uint8_t  skun, shadow;
    uint8_t  known; /* 0 never heard, 1 exists, 2 does not exist */
    bool     grant_inflight, dirty, report_dirty;
    uint64_t price, granted, returned, sold;
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
    const char *idem, *payment;
    uint16_t idem_n, payment_n;
    uint32_t items, prev_user;
    uint8_t  status, shadow, nitems;
} order;

typedef struct gconn {
    d11_conn c;
    uint32_t gen;
    bool     open;
} gconn;

typedef struct parked {
    int           conn;
    uint32_t      gen;
    d11_frame_hdr hdr;
    int64_t       deadline_ms;
    uint8_t      *payload;
    size_t        payload_len;
} parked;

typedef struct heap_ent {
    int64_t  at;
    uint32_t order;
} heap_ent;

#define VEC(T) struct { T *v; size_t n, cap; }
#define VEC_PUSH(vec, x)                                                               \
    do {                                                                               \
        if ((vec).n == (vec).cap) {                                                    \
            (vec).cap = (vec).cap ? (vec).cap * 2 : 64;                                \
            (vec).v = realloc((vec).v, (vec).cap * sizeof *(vec).v);                   \
            if (!(vec).v) d11_fatal("out of memory");                                  \
        }                                                                              \
        (vec).v[(vec).n++] = (x);                                                      \
    } while (0)

static struct {
    d11_config  cfg;
    int         id;
    int         epfd, lfd;
    cell_store  store;
    gconn       conns[CELL_CONNS_MAX];
    d11_conn    center;
    bool        center_up, hello_done;
    int64_t     center_retry_ms;
    VEC(ledger) ledgers;
    VEC(order)  orders;
    VEC(oitem)  items;
    VEC(uint32_t) dirty_ledgers;
    VEC(parked) parked;
    VEC(heap_ent) heap;
    d11_smap    ledger_by_key; /* shadow byte + sku -> ledger index */
    d11_imap    order_by_id;   /* order id -> index */
    d11_smap    order_by_idem; /* shadow + user_id + key -> index */
    d11_imap    user_head;     /* user_id | shadow << 63 -> newest order index */
    cell_batch  batches[2];
    int         open;          /* index of the batch being filled */
    bool        committing;
    uint64_t    open_seq, committed_seq;
    uint64_t    last_ms, id_seq;  /* order id generator */
    uint64_t    next_event_id;
    int64_t     last_report_ms;
    d11_buf     scratch, scratch2;
    char       *arena;
    size_t      arena_left;
    volatile sig_atomic_t stop;
    uint64_t    n_created, n_rejected_oos, n_batches, n_batch_ops, n_parked_total;
    int64_t     last_commit_us;
} S;

static void on_signal(int sig)
{
    (void)sig;
    S.stop = 1;
}

/* Strings that live as long as the process (idempotency keys, payment ids). */
static const char *arena_dup(const char *p, size_t n)
{
    if (n + 1 > S.arena_left) {
        size_t sz = n + 1 > (1 << 20) ? n + 1 : (1 << 20);
        S.arena = malloc(sz);
        if (!S.arena) d11_fatal("out of memory");
        S.arena_left = sz;
    }
    char *r = S.arena;
    memcpy(r, p, n);
    r[n] = 0;
    S.arena += n + 1;
    S.arena_left -= n + 1;
    return r;
}

/* ---- ledgers ---- */

static uint32_t ledger_get(const char *sku, size_t n, int shadow, bool create)
{
    char key[D11_SKU_BYTES_MAX + 1];
    D11_ASSERT(n >= 1 && n <= D11_SKU_BYTES_MAX);
    key[0] = (char)shadow;
    memcpy(key + 1, sku, n);
    uint64_t v;
    if (d11_smap_get(&S.ledger_by_key, key, n + 1, &v)) return (uint32_t)v;
    if (!create) return NONE32;
    ledger l = {.skun = (uint8_t)n, .shadow = (uint8_t)shadow};
    memcpy(l.sku, sku, n);
    VEC_PUSH(S.ledgers, l);
    d11_smap_put(&S.ledger_by_key, key, n + 1, S.ledgers.n - 1);
    return (uint32_t)(S.ledgers.n - 1);
}

static uint64_t ledger_avail(const ledger *l)
{
    D11_ASSERT(l->returned + l->sold <= l->granted);
    return l->granted - l->returned - l->sold;
}

static void ledger_touch(uint32_t li)
{
    ledger *l = &S.ledgers.v[li];
    l->report_dirty = true;
    if (l->dirty) return;
    l->dirty = true;
    VEC_PUSH(S.dirty_ledgers, li);
}

/* ---- batches ---- */

static cell_batch *open_batch(void) { return &S.batches[S.open]; }

static void op_order_insert(const order *o)
{
    cell_batch *b = open_batch();
    d11_buf *x = &b->ops;
    d11_wenc_u8(x, CELL_OP_ORDER_INSERT);
    d11_wenc_u8(x, o->shadow);
    d11_wenc_u64(x, o->id);
    d11_wenc_u64(x, o->user_id);
    d11_wenc_str(x, o->idem, o->idem_n);
    d11_wenc_u64(x, o->body_hash);
    d11_wenc_u8(x, o->status);
    d11_wenc_u64(x, o->total);
    d11_wenc_u64(x, (uint64_t)o->created_at);
    d11_wenc_u64(x, (uint64_t)o->expires_at);
    d11_wenc_u8(x, o->nitems);
    for (uint32_t i = 0; i < o->nitems; i++) {
        const oitem *it = &S.items.v[o->items + i];
        const ledger *l = &S.ledgers.v[it->ledger];
        d11_wenc_str(x, l->sku, l->skun);
        d11_wenc_u32(x, it->qty);
        d11_wenc_u64(x, it->price);
    }
    b->nops++;
}

static void op_order_update(const order *o)
{
    cell_batch *b = open_batch();
    d11_wenc_u8(&b->ops, CELL_OP_ORDER_UPDATE);
    d11_wenc_u8(&b->ops, o->shadow);
    d11_wenc_u64(&b->ops, o->id);
    d11_wenc_u8(&b->ops, o->status);
    d11_wenc_str(&b->ops, o->payment ? o->payment : "", o->payment_n);
    d11_wenc_u64(&b->ops, (uint64_t)o->updated_at);
    b->nops++;
}

static void render_order(d11_buf *b, const order *o);

/*
 * Outbox event for o. The payload is compact on purpose (the outbox row is written for
 * every order on the hot path): ids, status, money and time; the items are in
 * order_items and consumers can read the full order by id.
 */
static void op_outbox(const order *o, const char *type)
{
    cell_batch *b = open_batch();
    d11_buf_reset(&S.scratch2);
    d11_buf_puts(&S.scratch2, "{\"type\":\"");
    d11_buf_puts(&S.scratch2, type);
    d11_buf_puts(&S.scratch2, "\",\"cell\":");
    d11_buf_u64(&S.scratch2, (uint64_t)S.id);
    d11_buf_puts(&S.scratch2, ",\"order_id\":\"");
    d11_buf_u64(&S.scratch2, o->id);
    d11_buf_puts(&S.scratch2, "\",\"user_id\":");
    d11_buf_u64(&S.scratch2, o->user_id);
    d11_buf_puts(&S.scratch2, ",\"status\":\"");
    d11_buf_puts(&S.scratch2, cell_status_name[o->status & 3]);
    d11_buf_puts(&S.scratch2, "\",\"total_cents\":");
    d11_buf_u64(&S.scratch2, o->total);
    d11_buf_puts(&S.scratch2, ",\"items\":");
    d11_buf_u64(&S.scratch2, o->nitems);
    d11_buf_puts(&S.scratch2, ",\"at\":");
    d11_buf_u64(&S.scratch2, (uint64_t)o->updated_at);
    d11_buf_puts(&S.scratch2, "}");
    d11_wenc_u8(&b->ops, CELL_OP_OUTBOX);
    d11_wenc_u8(&b->ops, o->shadow);
    d11_wenc_u64(&b->ops, S.next_event_id++);
    d11_wenc_u64(&b->ops, o->id);
    d11_wenc_str(&b->ops, type, strlen(type));
    d11_wenc_blob(&b->ops, S.scratch2.data, S.scratch2.len);
    d11_wenc_u64(&b->ops, (uint64_t)o->updated_at);
    b->nops++;
}

/* Queue a reply: at once when `defer` is false, else after the open batch commits. */
static void send_reply(int ci, uint32_t gen, const d11_frame_hdr *h, uint32_t status, const char *code,
                       const char *body, size_t n, bool defer)
{
    if (ci < 0) return; /* internal retry with nobody waiting */
    d11_fault_hit fh = d11_fault(D11_FP_CELL_REPLY);
    if (fh.action == D11_FA_DROP) return; /* chaos: the gateway times out (504) */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
    if (!defer) {
        if (S.conns[ci].open && S.conns[ci].gen == gen) d11_conn_reply(&S.conns[ci].c, h, status, code, body, n);
        return;
    }
    cell_batch *b = open_batch();
    d11_wenc_u32(&b->replies, (uint32_t)ci);
    d11_wenc_u32(&b->replies, gen);
    d11_reply_enc(&b->replies, h, status, code, body, n);
    b->nreplies++;
}

static void send_err(int ci, uint32_t gen, const d11_frame_hdr *h, uint32_t status, const char *code, const char *msg)
{
    send_reply(ci, gen, h, status, code, msg, strlen(msg), false);
}

static void center_send_inv(d11_buf *out, uint16_t type, uint32_t li, uint64_t qty)
{
    const ledger *l = &S.ledgers.v[li];
    d11_frame_hdr h = {.type = type, .req_id = ((uint64_t)type << 40) | li,
                       .flags = l->shadow ? D11_WF_STRESS : 0};
    size_t start = d11_frame_begin(out, &h);
    d11_msg_inv m = {.cell = (uint16_t)S.id, .sku = {l->sku, l->skun}, .shadow = l->shadow, .qty = qty, .sold = l->sold};
    d11_msg_inv_enc(out, &m);
    d11_frame_end(out, start);
}

/* Close the open batch and hand it to the storage thread, if it is idle. */
static void maybe_submit(void)
{
    if (S.committing) return;
    cell_batch *b = open_batch();
    for (size_t i = 0; i < S.dirty_ledgers.n; i++) {
        ledger *l = &S.ledgers.v[S.dirty_ledgers.v[i]];
        D11_ASSERT(l->returned + l->sold <= l->granted);
        d11_wenc_u8(&b->ops, CELL_OP_STOCK);
        d11_wenc_str(&b->ops, l->sku, l->skun);
        d11_wenc_u8(&b->ops, l->shadow);
        d11_wenc_u64(&b->ops, l->price);
        d11_wenc_u64(&b->ops, l->granted);
        d11_wenc_u64(&b->ops, l->returned);
        d11_wenc_u64(&b->ops, l->sold);
        b->nops++;
        l->dirty = false;
    }
    S.dirty_ledgers.n = 0;
    if (b->nops == 0 && b->nreplies == 0 && b->returns.len == 0) return;
    b->seq = S.open_seq++;
    S.committing = true;
    S.open ^= 1;
    cell_store_submit(&S.store, b);
}

static void conn_flush(int ci);

static void batch_done(void)
{
    cell_batch *b = cell_store_collect(&S.store);
    if (!b) return;
    D11_ASSERT(S.committing && b == &S.batches[S.open ^ 1]);
    d11_wdec d;
    d11_wdec_init(&d, b->replies.data, b->replies.len);
    for (uint32_t i = 0; i < b->nreplies; i++) {
        uint32_t ci = d11_wdec_u32(&d), gen = d11_wdec_u32(&d);
        D11_ASSERT(!d.err && d.n >= D11_FRAME_HDR_BYTES);
        d11_frame_hdr h;
        D11_ASSERT(d11_frame_hdr_decode(d.p, d.n, &h) == 0 && h.len <= d.n);
        if (ci < CELL_CONNS_MAX && S.conns[ci].open && S.conns[ci].gen == gen) {
            if (b->result == 0) d11_buf_append(&S.conns[ci].c.out, d.p, h.len);
            else d11_conn_reply(&S.conns[ci].c, &h, 503, "unavailable", "storage failure: not placed", 27);
        }
        d.p += h.len;
        d.n -= h.len;
    }
    if (b->result != 0) {
        /* Memory is now ahead of the database. Answer, then restart from what is durable. */
        for (int i = 0; i < CELL_CONNS_MAX; i++)
            if (S.conns[i].open) (void)d11_conn_flush(&S.conns[i].c);
        d11_error("cell %d: batch %llu failed to commit (%s); exiting for recovery", S.id,
                  (unsigned long long)b->seq, d11_strerror(b->result));
        _exit(1);
    }
    if (b->returns.len && S.center_up) d11_buf_append(&S.center.out, b->returns.data, b->returns.len);
    S.committed_seq = b->seq;
    S.n_batches++;
    S.n_batch_ops += b->nops;
    S.last_commit_us = b->commit_us;
    d11_buf_reset(&b->ops);
    d11_buf_reset(&b->replies);
    d11_buf_reset(&b->returns);
    b->nops = b->nreplies = 0;
    S.committing = false;
    maybe_submit();
}

/* ---- orders ---- */

static const char *status_name(int st) { return cell_status_name[st & 3]; }

static void render_order(d11_buf *b, const order *o)
{
    char ts1[25], ts2[25];
    d11_fmt_iso8601(o->created_at, ts1);
    d11_fmt_iso8601(o->expires_at, ts2);
    d11_buf_puts(b, "{\"order_id\":\"");
    d11_buf_u64(b, o->id);
    d11_buf_puts(b, "\",\"user_id\":");
    d11_buf_u64(b, o->user_id);
    d11_buf_puts(b, ",\"status\":\"");
    d11_buf_puts(b, status_name(o->status));
    d11_buf_puts(b, "\",\"items\":[");
    for (uint32_t i = 0; i < o->nitems; i++) {
        const oitem *it = &S.items.v[o->items + i];
        const ledger *l = &S.ledgers.v[it->ledger];
        d11_buf_puts(b, i ? ",{\"sku\":" : "{\"sku\":");
        d11_buf_json_str(b, l->sku, l->skun);
        d11_buf_puts(b, ",\"quantity\":");
        d11_buf_u64(b, it->qty);
        d11_buf_puts(b, ",\"price_cents\":");
        d11_buf_u64(b, it->price);
        d11_buf_puts(b, "}");
    }
    d11_buf_puts(b, "],\"total_cents\":");
    d11_buf_u64(b, o->total);
    d11_buf_puts(b, ",\"created_at\":\"");
    d11_buf_append(b, ts1, 24);
    d11_buf_puts(b, "\",\"expires_at\":\"");
    d11_buf_append(b, ts2, 24);
    d11_buf_puts(b, "\"");
    if (o->payment) {
        d11_buf_puts(b, ",\"payment_id\":");
        d11_buf_json_str(b, o->payment, o->payment_n);
    }
    if (o->status != ST_PENDING) {
        char ts3[25];
        d11_fmt_iso8601(o->updated_at, ts3);
        d11_buf_puts(b, ",\"updated_at\":\"");
        d11_buf_append(b, ts3, 24);
        d11_buf_puts(b, "\"");
    }
    d11_buf_puts(b, "}");
}

static bool order_uncommitted(const order *o) { return o->batch_seq > S.committed_seq; }

static void reply_order(int ci, uint32_t gen, const d11_frame_hdr *h, uint32_t status, const order *o)
{
    d11_buf_reset(&S.scratch);
    render_order(&S.scratch, o);
    send_reply(ci, gen, h, status, NULL, S.scratch.data, S.scratch.len, order_uncommitted(o));
}

static uint64_t new_order_id(unsigned slot)
{
    uint64_t ms = (uint64_t)(d11_wall_ms() - ORDER_EPOCH_MS);
    if (ms > S.last_ms) {
        S.last_ms = ms;
        S.id_seq = 0;
    } else if (++S.id_seq >= 4096) { /* 4096 ids per ms used up: borrow the next ms */
        S.last_ms++;
        S.id_seq = 0;
    }
    return (S.last_ms << 22) | ((uint64_t)slot << 12) | S.id_seq;
}

static uint64_t body_hash(const d11_msg_order_create *m)
{
    uint64_t h = d11_hash64(&m->user_id, sizeof m->user_id, 7);
    for (uint32_t i = 0; i < m->nitems; i++) {
        h = d11_hash64(m->items[i].sku.p, m->items[i].sku.n, h);
        h = d11_hash64(&m->items[i].qty, sizeof m->items[i].qty, h);
    }
    return h;
}

static size_t idem_key(char *out, int shadow, uint64_t user, const char *k, size_t kn)
{
    out[0] = (char)shadow;
    memcpy(out + 1, &user, 8);
    memcpy(out + 9, k, kn);
    return 9 + kn;
}

static void heap_push(int64_t at, uint32_t oi)
{
    heap_ent e = {at, oi};
    VEC_PUSH(S.heap, e);
    size_t i = S.heap.n - 1;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (S.heap.v[p].at <= S.heap.v[i].at) break;
        heap_ent t = S.heap.v[p];
        S.heap.v[p] = S.heap.v[i];
        S.heap.v[i] = t;
        i = p;
    }
}

static void heap_pop(void)
{
    S.heap.v[0] = S.heap.v[--S.heap.n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < S.heap.n && S.heap.v[l].at < S.heap.v[m].at) m = l;
        if (r < S.heap.n && S.heap.v[r].at < S.heap.v[m].at) m = r;
        if (m == i) break;
        heap_ent t = S.heap.v[m];
        S.heap.v[m] = S.heap.v[i];
        S.heap.v[i] = t;
        i = m;
    }
}

/* Register a fully built order in the in-memory indexes. */
static void order_index(uint32_t oi)
{
    order *o = &S.orders.v[oi];
    char key[9 + D11_IDEM_KEY_BYTES_MAX];
    d11_imap_put(&S.order_by_id, o->id, oi);
    d11_smap_put(&S.order_by_idem, key, idem_key(key, o->shadow, o->user_id, o->idem, o->idem_n), oi);
    uint64_t ukey = o->user_id | ((uint64_t)o->shadow << 63), head;
    o->prev_user = d11_imap_get(&S.user_head, ukey, &head) ? (uint32_t)head : NONE32;
    d11_imap_put(&S.user_head, ukey, oi);
    if (o->status == ST_PENDING) heap_push(o->expires_at, oi);
}

/* Move an order out of pending_payment; stock returns to the allotment unless paid. */
static void order_transition(order *o, int to, const char *event)
{
    D11_ASSERT(o->status == ST_PENDING && to != ST_PENDING); /* the only legal moves */
    if (to != ST_PAID) {
        for (uint32_t i = 0; i < o->nitems; i++) {
            oitem *it = &S.items.v[o->items + i];
            ledger *l = &S.ledgers.v[it->ledger];
            D11_ASSERT(l->sold >= it->qty);
            l->sold -= it->qty;
            ledger_touch(it->ledger);
        }
    }
    o->status = (uint8_t)to;
    o->updated_at = d11_wall_ms();
    o->batch_seq = S.open_seq;
    op_order_update(o);
    op_outbox(o, event);
}

enum { TRY_DONE, TRY_PARK };

static void request_grant(uint32_t li, uint64_t want)
{
    ledger *l = &S.ledgers.v[li];
    if (l->grant_inflight || !S.center_up) return;
    l->grant_inflight = true;
    l->want_inflight = want;
    l->grant_sent_ms = d11_mono_ms();
    center_send_inv(&S.center.out, D11_MSG_GRANT, li, want);
}

/*
 * Try to place an order. Returns TRY_PARK when it must wait for the center (the caller
 * parks it), TRY_DONE when it was answered (placed, replayed or rejected).
 */
static int try_create(int ci, uint32_t gen, const d11_frame_hdr *h, const d11_msg_order_create *m, bool retry)
{
    int shadow = (h->flags & D11_WF_STRESS) ? 1 : 0;
    char key[9 + D11_IDEM_KEY_BYTES_MAX];
    size_t kn = idem_key(key, shadow, m->user_id, m->idem_key.p, m->idem_key.n);
    uint64_t v;
    uint64_t bh = body_hash(m);
    if (d11_smap_get(&S.order_by_idem, key, kn, &v)) {
        order *o = &S.orders.v[v];
        if (o->body_hash != bh) {
            send_err(ci, gen, h, 409, "idempotency_mismatch",
                     "this Idempotency-Key was used with a different request body");
            return TRY_DONE;
        }
        reply_order(ci, gen, h, 200, o);
        return TRY_DONE;
    }
    int64_t now = d11_mono_ms();
    uint32_t li[D11_ORDER_ITEMS_MAX];
    bool need_center = false;
    for (uint32_t i = 0; i < m->nitems; i++) {
        li[i] = ledger_get(m->items[i].sku.p, m->items[i].sku.n, shadow, true);
        ledger *l = &S.ledgers.v[li[i]];
        if (l->known == 2 && now < l->unknown_until) {
            char msg[128];
            snprintf(msg, sizeof msg, "%.*s: no such product", (int)l->skun, l->sku);
            send_err(ci, gen, h, 404, "unknown_sku", msg);
            return TRY_DONE;
        }
        if (l->known != 1) need_center = true;
    }
    if (!need_center) {
        bool all = true;
        for (uint32_t i = 0; i < m->nitems; i++)
            if (ledger_avail(&S.ledgers.v[li[i]]) < m->items[i].qty) all = false;
        if (all) {
            /* Reserve everything, build the order, append it to the open batch. */
            order o = {0};
            unsigned slot = (unsigned)(m->user_id % D11_SLOTS);
            o.id = new_order_id(slot);
            o.user_id = m->user_id;
            o.body_hash = bh;
            o.idem = arena_dup(m->idem_key.p, m->idem_key.n);
            o.idem_n = (uint16_t)m->idem_key.n;
            o.created_at = o.updated_at = d11_wall_ms();
            o.expires_at = o.created_at + S.cfg.order_ttl_ms;
            o.status = ST_PENDING;
            o.shadow = (uint8_t)shadow;
            o.nitems = (uint8_t)m->nitems;
            o.items = (uint32_t)S.items.n;
            o.batch_seq = S.open_seq;
            for (uint32_t i = 0; i < m->nitems; i++) {
                ledger *l = &S.ledgers.v[li[i]];
                l->sold += m->items[i].qty;
                D11_ASSERT(l->returned + l->sold <= l->granted);
                ledger_touch(li[i]);
                oitem it = {li[i], m->items[i].qty, l->price};
                VEC_PUSH(S.items, it);
                o.total += l->price * m->items[i].qty;
            }
            VEC_PUSH(S.orders, o);
            uint32_t oi = (uint32_t)(S.orders.n - 1);
            order_index(oi);
            op_order_insert(&S.orders.v[oi]);
            op_outbox(&S.orders.v[oi], "order.created");
            d11_buf_reset(&S.scratch);
            render_order(&S.scratch, &S.orders.v[oi]);
            S.n_created++;
            send_reply(ci, gen, h, 201, NULL, S.scratch.data, S.scratch.len, true);
            return TRY_DONE;
        }
    }
    /* Something is missing: sold out (cached), or ask the center. */
    bool parked_for_something = false;
    for (uint32_t i = 0; i < m->nitems; i++) {
        ledger *l = &S.ledgers.v[li[i]];
        if (l->known == 1) {
            uint64_t avail = ledger_avail(l);
            if (avail >= m->items[i].qty) continue;
            if (now < l->soldout_until && m->items[i].qty - avail >= l->soldout_min) {
                char msg[160];
                snprintf(msg, sizeof msg, "%.*s: not enough stock for %u", (int)l->skun, l->sku, m->items[i].qty);
                send_err(ci, gen, h, 409, "out_of_stock", msg);
                S.n_rejected_oos++;
                return TRY_DONE;
            }
            if (!S.center_up) goto unavailable;
            request_grant(li[i], m->items[i].qty - avail);
        } else {
            if (!S.center_up) goto unavailable;
            request_grant(li[i], 0); /* catalog lookup (and a first allotment) */
        }
        parked_for_something = true;
    }
    (void)retry;
    D11_ASSERT(parked_for_something);
    return TRY_PARK;
unavailable:
    send_err(ci, gen, h, 503, "unavailable", "inventory center unreachable; order not placed");
    return TRY_DONE;
}

static void park(int ci, uint32_t gen, const d11_frame_hdr *h, const uint8_t *payload, size_t n, int64_t deadline)
{
    if (S.parked.n >= D11_CELL_PARKED_MAX) {
        send_err(ci, gen, h, 503, "unavailable", "too many orders waiting for stock; not placed");
        return;
    }
    parked p = {.conn = ci, .gen = gen, .hdr = *h, .deadline_ms = deadline, .payload_len = n};
    p.payload = malloc(n ? n : 1);
    if (!p.payload) d11_fatal("out of memory");
    memcpy(p.payload, payload, n);
    VEC_PUSH(S.parked, p);
    S.n_parked_total++;
}

/* Retry every parked order in arrival order (after a grant, a return of stock, ...). */
static void retry_parked(void)
{
    if (!S.parked.n) return;
    size_t n = S.parked.n, keep = 0;
    parked *list = S.parked.v;
    int64_t now = d11_mono_ms();
    for (size_t i = 0; i < n; i++) {
        parked *p = &list[i];
        bool alive = p->conn >= 0 && S.conns[p->conn].open && S.conns[p->conn].gen == p->gen;
        if (!alive) {
            free(p->payload);
            continue;
        }
        if (p->deadline_ms && now >= p->deadline_ms) {
            send_err(p->conn, p->gen, &p->hdr, 504, "timeout", "waited too long for stock; not placed");
            free(p->payload);
            continue;
        }
        d11_msg_order_create m;
        D11_ASSERT(d11_msg_order_create_dec(p->payload, p->payload_len, &m) == 0);
        if (try_create(p->conn, p->gen, &p->hdr, &m, true) == TRY_PARK) list[keep++] = *p;
        else free(p->payload);
    }
    S.parked.n = keep;
}

static order *find_order(uint64_t id, int shadow)
{
    uint64_t v;
    if (!d11_imap_get(&S.order_by_id, id, &v)) return NULL;
    order *o = &S.orders.v[v];
    return o->shadow == shadow ? o : NULL;
}

/* Expire a pending order whose time has come (lazily on access, or from the timer). */
static bool expire_if_due(order *o, int64_t wall_now)
{
    if (o->status != ST_PENDING || o->expires_at > wall_now) return false;
    order_transition(o, ST_EXPIRED, "order.expired");
    return true;
}

static void handle_order_ref(int ci, const d11_frame *f, int type)
{
    uint32_t gen = S.conns[ci].gen;
    d11_msg_order_ref m;
    if (d11_msg_order_ref_dec(f->payload, f->payload_len, &m, type == D11_MSG_ORDER_PAY) < 0) {
        send_err(ci, gen, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    order *o = find_order(m.order_id, shadow);
    if (!o) {
        send_err(ci, gen, &f->hdr, 404, "not_found", "no such order");
        return;
    }
    bool expired_now = expire_if_due(o, d11_wall_ms());
    if (expired_now) retry_parked();
    if (type == D11_MSG_ORDER_GET) {
        reply_order(ci, gen, &f->hdr, 200, o);
    } else if (type == D11_MSG_ORDER_PAY) {
        if (o->status == ST_PAID && o->payment_n == m.payment_id.n &&
            memcmp(o->payment, m.payment_id.p, m.payment_id.n) == 0) {
            reply_order(ci, gen, &f->hdr, 200, o);
        } else if (o->status != ST_PENDING) {
            char msg[96];
            snprintf(msg, sizeof msg, "order is %s", status_name(o->status));
            send_err(ci, gen, &f->hdr, 409, "not_payable", msg);
        } else {
            o->payment = arena_dup(m.payment_id.p, m.payment_id.n);
            o->payment_n = (uint16_t)m.payment_id.n;
            order_transition(o, ST_PAID, "order.paid");
            reply_order(ci, gen, &f->hdr, 200, o);
        }
    } else { /* cancel */
        if (o->status == ST_CANCELLED) {
            reply_order(ci, gen, &f->hdr, 200, o); /* repeating a cancel is harmless */
        } else if (o->status != ST_PENDING) {
            char msg[96];
            snprintf(msg, sizeof msg, "order is %s", status_name(o->status));
            send_err(ci, gen, &f->hdr, 409, "not_cancellable", msg);
        } else {
            order_transition(o, ST_CANCELLED, "order.cancelled");
            reply_order(ci, gen, &f->hdr, 200, o);
            retry_parked();
        }
    }
}

static void handle_order_list(int ci, const d11_frame *f)
{
    uint32_t gen = S.conns[ci].gen;
    d11_msg_order_list m;
    if (d11_msg_order_list_dec(f->payload, f->payload_len, &m) < 0) {
        send_err(ci, gen, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    uint64_t head;
    uint32_t oi = d11_imap_get(&S.user_head, m.user_id | ((uint64_t)shadow << 63), &head) ? (uint32_t)head : NONE32;
    d11_buf *b = &S.scratch;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"orders\":[");
    uint32_t count = 0;
    bool defer = false, more = false;
    uint64_t last_id = 0;
    int64_t now = d11_wall_ms();
    for (; oi != NONE32; oi = S.orders.v[oi].prev_user) {
        order *o = &S.orders.v[oi];
        if (m.before && o->id >= m.before) continue;
        if (count == m.limit) {
            more = true;
            break;
        }
        expire_if_due(o, now);
        if (count) d11_buf_puts(b, ",");
        render_order(b, o);
        defer |= order_uncommitted(o);
        last_id = o->id;
        count++;
    }
    if (more) d11_buf_printf(b, "],\"next\":\"%llu\"}", (unsigned long long)last_id);
    else d11_buf_puts(b, "],\"next\":null}");
    send_reply(ci, gen, &f->hdr, 200, NULL, b->data, b->len, defer);
}

static void conn_close(int ci);

static void handle_gateway_frame(int ci, const d11_frame *f)
{
    uint32_t gen = S.conns[ci].gen;
    if (f->hdr.flags & D11_WF_REPLY) return;
    d11_fault_hit fh = d11_fault(D11_FP_CELL_RECV);
    if (fh.action == D11_FA_DROP) return; /* chaos: a lost request; the gateway answers 504 */
    if (fh.action == D11_FA_DELAY) usleep((useconds_t)fh.delay_ms * 1000); /* chaos: a stalled cell */
    if (fh.action == D11_FA_GARBLE) {
        /* chaos: a garbled frame is a broken stream; the receiver must drop the link */
        d11_warn("cell %d: garbled frame from the gateway; closing the connection", S.id);
        conn_close(ci);
        return;
    }
    switch (f->hdr.type) {
    case D11_MSG_ORDER_CREATE: {
        d11_msg_order_create m;
        if (d11_msg_order_create_dec(f->payload, f->payload_len, &m) < 0) {
            send_err(ci, gen, &f->hdr, 422, "invalid", "malformed order");
            return;
        }
        if (S.stop) {
            send_err(ci, gen, &f->hdr, 503, "unavailable", "cell is shutting down; not placed");
            return;
        }
        if (try_create(ci, gen, &f->hdr, &m, false) == TRY_PARK) {
            int64_t dl = f->hdr.deadline_ms ? d11_mono_ms() + f->hdr.deadline_ms : d11_mono_ms() + D11_RPC_DEADLINE_MS_DEFAULT;
            park(ci, gen, &f->hdr, f->payload, f->payload_len, dl);
        }
        break;
    }
    case D11_MSG_ORDER_GET:
    case D11_MSG_ORDER_PAY:
    case D11_MSG_ORDER_CANCEL: handle_order_ref(ci, f, f->hdr.type); break;
    case D11_MSG_ORDER_LIST: handle_order_list(ci, f); break;
    case D11_MSG_PING: {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "cell %d", S.id);
        send_reply(ci, gen, &f->hdr, 200, NULL, msg, (size_t)n, false);
        break;
    }
    case D11_MSG_STATS: {
        d11_buf_reset(&S.scratch);
        d11_buf_printf(&S.scratch,
                       "{\"process\":\"cell\",\"cell\":%d,\"pid\":%d,\"orders\":%zu,\"skus\":%zu,"
                       "\"created\":%llu,\"rejected_out_of_stock\":%llu,\"parked\":%zu,\"parked_total\":%llu,"
                       "\"batches\":%llu,\"batch_ops\":%llu,\"last_commit_us\":%lld,\"center_up\":%s,"
                       "\"durability\":\"%s\"}",
                       S.id, (int)getpid(), S.orders.n, S.ledgers.n, (unsigned long long)S.n_created,
                       (unsigned long long)S.n_rejected_oos, S.parked.n, (unsigned long long)S.n_parked_total,
                       (unsigned long long)S.n_batches, (unsigned long long)S.n_batch_ops,
                       (long long)S.last_commit_us, S.center_up ? "true" : "false",
                       d11_durability_name(S.cfg.durability));
        send_reply(ci, gen, &f->hdr, 200, NULL, S.scratch.data, S.scratch.len, false);
        break;
    }
    default: send_err(ci, gen, &f->hdr, 400, "bad_request", "unknown message type");
    }
}

/* ---- center link ---- */

static void queue_return(uint32_t li)
{
    /* Sent after the open batch (which persists the new `returned`) commits. */
    center_send_inv(&open_batch()->returns, D11_MSG_RETURN, li, S.ledgers.v[li].returned);
}

static void handle_center_frame(const d11_frame *f)
{
    if (!(f->hdr.flags & D11_WF_REPLY)) {
        if (f->hdr.type == D11_MSG_RECLAIM) {
            d11_wdec d;
            d11_wdec_init(&d, f->payload, f->payload_len);
            size_t n;
            const char *sku = d11_wdec_str(&d, &n);
            uint8_t shadow = d11_wdec_u8(&d);
            if (!d11_wdec_done(&d) || n < 1 || n > D11_SKU_BYTES_MAX || shadow > 1) return;
            /* Always answer, even with nothing to give, so the center need not wait. */
            uint32_t li = ledger_get(sku, n, shadow, true);
            ledger *l = &S.ledgers.v[li];
            uint64_t avail = ledger_avail(l);
            if (avail) {
                l->returned += avail;
                ledger_touch(li);
            }
            queue_return(li);
        }
        return;
    }
    uint32_t type = f->hdr.type;
    if (type == D11_MSG_GRANT) {
        uint32_t li = (uint32_t)(f->hdr.req_id & 0xffffffffu);
        if (li >= S.ledgers.n) return;
        ledger *l = &S.ledgers.v[li];
        l->grant_inflight = false;
        d11_msg_grant_reply r;
        if (f->hdr.status != 200 || d11_msg_grant_reply_dec(f->payload, f->payload_len, &r) < 0) {
            d11_warn("grant for %s failed with status %u", l->sku, f->hdr.status);
            l->soldout_until = d11_mono_ms() + S.cfg.soldout_cache_ms;
            l->soldout_min = 1;
        } else if (!r.exists) {
            l->known = 2;
            l->unknown_until = d11_mono_ms() + (S.cfg.soldout_cache_ms ? S.cfg.soldout_cache_ms : 1);
        } else {
            l->known = 1;
            l->price = r.price_cents;
            if (r.granted_cum > l->granted) {
                l->granted = r.granted_cum;
                ledger_touch(li);
            }
            l->soldout_until = r.sold_out ? d11_mono_ms() + (S.cfg.soldout_cache_ms ? S.cfg.soldout_cache_ms : 1) : 0;
            l->soldout_min = l->want_inflight ? l->want_inflight : 1;
        }
        retry_parked();
    } else if (type == D11_MSG_CELL_HELLO) {
        d11_wdec d;
        d11_wdec_init(&d, f->payload, f->payload_len);
        uint32_t n = d11_wdec_u32(&d);
        for (uint32_t i = 0; i < n && !d.err; i++) {
            size_t skun;
            const char *sku = d11_wdec_str(&d, &skun);
            uint8_t shadow = d11_wdec_u8(&d);
            uint64_t price = d11_wdec_u64(&d), g = d11_wdec_u64(&d), r = d11_wdec_u64(&d);
            if (d.err || skun < 1 || skun > D11_SKU_BYTES_MAX || shadow > 1) break;
            uint32_t li = ledger_get(sku, skun, shadow, true);
            ledger *l = &S.ledgers.v[li];
            l->known = 1;
            l->price = price;
            if (g > l->granted) {
                l->granted = g;
                ledger_touch(li);
            } else if (g < l->granted) {
                d11_error("center knows %llu granted of %s but cell has %llu: center lost data?",
                          (unsigned long long)g, l->sku, (unsigned long long)l->granted);
            }
            if (l->returned > r) {
                queue_return(li); /* a return the center never heard of */
            } else if (l->returned < r) {
                d11_error("center has %llu returned of %s, cell %llu: cell lost data?", (unsigned long long)r,
                          l->sku, (unsigned long long)l->returned);
            }
        }
        S.hello_done = true;
        d11_info("cell %d synced with center (%u ledger entries)", S.id, n);
        retry_parked();
    }
}

static void center_down(void)
{
    if (!S.center_up) return;
    epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.center.fd, NULL);
    d11_conn_release(&S.center);
    S.center_up = S.hello_done = false;
    for (size_t i = 0; i < S.ledgers.n; i++) S.ledgers.v[i].grant_inflight = false;
    S.center_retry_ms = d11_mono_ms() + 200;
    d11_warn("cell %d lost the center", S.id);
    retry_parked(); /* those needing the center now get 503 */
}

static void center_connect(void)
{
    char path[1200];
    d11_config_path(&S.cfg, "center.sock", path, sizeof path);
    int fd = d11_connect_unix(path);
    if (fd < 0) {
        S.center_retry_ms = d11_mono_ms() + 200;
        return;
    }
    d11_conn_init(&S.center, fd);
    S.center_up = true;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CELL_CONNS_MAX};
    epoll_ctl(S.epfd, EPOLL_CTL_ADD, fd, &ev);
    d11_frame_hdr h = {.type = D11_MSG_CELL_HELLO, .req_id = 1};
    size_t start = d11_frame_begin(&S.center.out, &h);
    d11_wenc_u16(&S.center.out, (uint16_t)S.id);
    d11_frame_end(&S.center.out, start);
    /* Returns the center may have missed are re-sent by the HELLO reply handler. */
}

static void send_reports(void)
{
    int64_t now = d11_mono_ms();
    if (!S.center_up || now - S.last_report_ms < CELL_REPORT_MS) return;
    S.last_report_ms = now;
    uint32_t n = 0;
    for (size_t i = 0; i < S.ledgers.n; i++) n += S.ledgers.v[i].report_dirty && S.ledgers.v[i].known == 1;
    if (!n) return;
    d11_frame_hdr h = {.type = D11_MSG_REPORT, .req_id = 2};
    size_t start = d11_frame_begin(&S.center.out, &h);
    d11_wenc_u16(&S.center.out, (uint16_t)S.id);
    d11_wenc_u32(&S.center.out, n);
    for (size_t i = 0; i < S.ledgers.n; i++) {
        ledger *l = &S.ledgers.v[i];
        if (!l->report_dirty || l->known != 1) continue;
        d11_wenc_str(&S.center.out, l->sku, l->skun);
        d11_wenc_u8(&S.center.out, l->shadow);
        d11_wenc_u64(&S.center.out, l->sold);
        l->report_dirty = false;
    }
    d11_frame_end(&S.center.out, start);
}

/* ---- recovery ---- */

static int recover(void)
{
    sqlite3 *db = S.store.db;
    sqlite3_stmt *st = d11_sqlite_prepare(db, "SELECT sku, shadow, price_cents, granted, returned, sold FROM stock");
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sku = (const char *)sqlite3_column_text(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        int sh = sqlite3_column_int(st, 1);
        if (n < 1 || n > D11_SKU_BYTES_MAX || sh < 0 || sh > 1) continue;
        uint32_t li = ledger_get(sku, n, sh, true);
        ledger *l = &S.ledgers.v[li];
        l->known = 1;
        l->price = (uint64_t)sqlite3_column_int64(st, 2);
        l->granted = (uint64_t)sqlite3_column_int64(st, 3);
        l->returned = (uint64_t)sqlite3_column_int64(st, 4);
        l->sold = (uint64_t)sqlite3_column_int64(st, 5);
        D11_ASSERT(l->returned + l->sold <= l->granted);
    }
    sqlite3_finalize(st);
    static const char *pre[2] = {"", "shadow_"};
    for (int sh = 0; sh < 2; sh++) {
        char sql[400];
        snprintf(sql, sizeof sql,
                 "SELECT o.order_id, o.user_id, o.idem_key, o.body_hash, o.status, o.total_cents, o.payment_id,"
                 " o.created_at, o.expires_at, o.updated_at, i.sku, i.quantity, i.price_cents"
                 " FROM %sorders o JOIN %sorder_items i ON i.order_id = o.order_id ORDER BY o.order_id, i.idx",
                 pre[sh], pre[sh]);
        st = d11_sqlite_prepare(db, sql);
        uint64_t cur = 0;
        bool have = false;
        while (sqlite3_step(st) == SQLITE_ROW) {
            uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
            if (!have || id != cur) {
                if (have) order_index((uint32_t)(S.orders.n - 1));
                have = true;
                cur = id;
                order o = {0};
                o.id = id;
                o.user_id = (uint64_t)sqlite3_column_int64(st, 1);
                o.idem = arena_dup((const char *)sqlite3_column_text(st, 2), (size_t)sqlite3_column_bytes(st, 2));
                o.idem_n = (uint16_t)sqlite3_column_bytes(st, 2);
                o.body_hash = (uint64_t)sqlite3_column_int64(st, 3);
                const char *stname = (const char *)sqlite3_column_text(st, 4);
                o.status = ST_PENDING;
                for (int k = 0; k < 4; k++)
                    if (!strcmp(stname, cell_status_name[k])) o.status = (uint8_t)k;
                o.total = (uint64_t)sqlite3_column_int64(st, 5);
                if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
                    o.payment = arena_dup((const char *)sqlite3_column_text(st, 6), (size_t)sqlite3_column_bytes(st, 6));
                    o.payment_n = (uint16_t)sqlite3_column_bytes(st, 6);
                }
                o.created_at = sqlite3_column_int64(st, 7);
                o.expires_at = sqlite3_column_int64(st, 8);
                o.updated_at = sqlite3_column_int64(st, 9);
                o.shadow = (uint8_t)sh;
                o.items = (uint32_t)S.items.n;
                VEC_PUSH(S.orders, o);
                uint64_t ms = id >> 22;
                if (ms > S.last_ms) S.last_ms = ms, S.id_seq = id & 4095;
                else if (ms == S.last_ms && (id & 4095) > S.id_seq) S.id_seq = id & 4095;
            }
            order *o = &S.orders.v[S.orders.n - 1];
            const char *sku = (const char *)sqlite3_column_text(st, 10);
            size_t n = (size_t)sqlite3_column_bytes(st, 10);
            uint32_t li = ledger_get(sku, n, sh, true);
            oitem it = {li, (uint32_t)sqlite3_column_int64(st, 11), (uint64_t)sqlite3_column_int64(st, 12)};
            VEC_PUSH(S.items, it);
            o->nitems++;
        }
        if (have) order_index((uint32_t)(S.orders.n - 1));
        sqlite3_finalize(st);
    }
    /* Stock conservation inside the cell: each ledger's sold == units held by its orders. */
    uint64_t *sold_check = calloc(S.ledgers.n + 1, sizeof *sold_check);
    if (!sold_check) d11_fatal("out of memory");
    for (size_t i = 0; i < S.orders.n; i++) {
        const order *o = &S.orders.v[i];
        if (o->status != ST_PENDING && o->status != ST_PAID) continue;
        for (uint32_t k = 0; k < o->nitems; k++) sold_check[S.items.v[o->items + k].ledger] += S.items.v[o->items + k].qty;
    }
    for (size_t i = 0; i < S.ledgers.n; i++) {
        if (S.ledgers.v[i].sold != sold_check[i]) {
            d11_error("cell %d: ledger %s sold=%llu but orders hold %llu", S.id, S.ledgers.v[i].sku,
                      (unsigned long long)S.ledgers.v[i].sold, (unsigned long long)sold_check[i]);
            D11_ASSERT(S.ledgers.v[i].sold == sold_check[i]);
        }
    }
    free(sold_check);
    st = d11_sqlite_prepare(db, "SELECT max(event_id) FROM (SELECT max(event_id) AS event_id FROM outbox"
                               " UNION ALL SELECT max(event_id) FROM shadow_outbox)");
    S.next_event_id = 1;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        S.next_event_id = (uint64_t)sqlite3_column_int64(st, 0) + 1;
    sqlite3_finalize(st);
    d11_info("cell %d recovered %zu orders, %zu ledgers", S.id, S.orders.n, S.ledgers.n);
    return 0;
}

/* ---- loop ---- */

static void conn_close(int ci)
{
    gconn *g = &S.conns[ci];
    if (!g->open) return;
    epoll_ctl(S.epfd, EPOLL_CTL_DEL, g->c.fd, NULL);
    d11_conn_release(&g->c);
    g->open = false;
    g->gen++;
}

static void conn_flush(int ci)
{
    gconn *g = &S.conns[ci];
    if (!g->open) return;
    if (d11_conn_pending(&g->c) == 0 && !g->c.want_write) return;
    int rc = d11_conn_flush(&g->c);
    if (rc < 0) {
        conn_close(ci);
        return;
    }
    bool want = rc == 1;
    if (want != g->c.want_write) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = (uint32_t)ci};
        epoll_ctl(S.epfd, EPOLL_CTL_MOD, g->c.fd, &ev);
        g->c.want_write = want;
    }
}

static void center_flush(void)
{
    if (!S.center_up) return;
    int rc = d11_conn_flush(&S.center);
    if (rc < 0) {
        center_down();
        return;
    }
    bool want = rc == 1;
    if (want != S.center.want_write) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.u32 = CELL_CONNS_MAX};
        epoll_ctl(S.epfd, EPOLL_CTL_MOD, S.center.fd, &ev);
        S.center.want_write = want;
    }
}

static void accept_all(void)
{
    for (;;) {
        int fd = d11_accept(S.lfd);
        if (fd < 0) return;
        int ci = -1;
        for (int i = 0; i < CELL_CONNS_MAX; i++)
            if (!S.conns[i].open) {
                ci = i;
                break;
            }
        if (ci < 0) {
            d11_warn("cell %d: connection table full (%d)", S.id, CELL_CONNS_MAX);
            close(fd);
            continue;
        }
        d11_conn_init(&S.conns[ci].c, fd);
        S.conns[ci].open = true;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)ci};
        if (epoll_ctl(S.epfd, EPOLL_CTL_ADD, fd, &ev) == -1) conn_close(ci);
    }
}

static void tick(void)
{
    int64_t wall = d11_wall_ms();
    bool freed = false;
    while (S.heap.n && S.heap.v[0].at <= wall) {
        order *o = &S.orders.v[S.heap.v[0].order];
        heap_pop();
        freed |= expire_if_due(o, wall);
    }
    if (!S.center_up && !S.stop && d11_mono_ms() >= S.center_retry_ms) center_connect();
    int64_t mono = d11_mono_ms();
    for (size_t i = 0; i < S.ledgers.n && S.parked.n; i++) {
        ledger *l = &S.ledgers.v[i];
        if (l->grant_inflight && mono - l->grant_sent_ms >= CELL_GRANT_TIMEOUT_MS) {
            /* Lost (or very slow): ask again. A late reply is harmless: counts are cumulative. */
            d11_warn("cell %d: grant for %s unanswered for %d ms; asking again", S.id, l->sku, CELL_GRANT_TIMEOUT_MS);
            l->grant_inflight = false;
        }
    }
    if (freed || S.parked.n) retry_parked(); /* also times out parked orders */
    send_reports();
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 cell --id N [--data DIR] [--cells N] [--durability sync|async|none]\n"
               "                [--async-flush-ms MS] [--order-ttl-ms MS] [--soldout-cache-ms MS]\n"
               "                [--log-level LEVEL]\n\n"
               "Runs one cell: orders, allotments and expiry for the users whose slot it owns.\n"
               "Listens on DIR/cell-N.sock; stores in DIR/cell-N.db. Normally started by `d11 up`.\n\n"
               "  --id N               this cell's number (0-based)\n"
               "  --data DIR           data directory (default ./data)\n"
               "  --durability MODE    sync (default: answer after fsync), async, none — docs/storage.md\n"
               "  --async-flush-ms MS  fsync interval in async mode (default 10)\n"
               "  --order-ttl-ms MS    unpaid orders expire after this (default 900000 = 15 min)\n"
               "  --soldout-cache-ms MS  how long a sold-out answer from the center is trusted (default 100)\n"
               "  --log-level LEVEL    debug, info (default), warn, error\n");
}

int d11_cell_main(int argc, char **argv)
{
    char err[256];
    d11_config_defaults(&S.cfg);
    if (d11_config_from_args(&S.cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 cell: %s\n", err);
        return 2;
    }
    if (S.cfg.help) {
        usage(stdout);
        return 0;
    }
    if (S.cfg.cell_id < 0) {
        fprintf(stderr, "d11 cell: --id is required\n");
        return 2;
    }
    S.id = S.cfg.cell_id;
    char name[32];
    snprintf(name, sizeof name, "cell-%d", S.id);
    d11_log_init(name, S.cfg.log_level);
    if (mkdir(S.cfg.data_dir, 0700) == -1 && errno != EEXIST) {
        fprintf(stderr, "d11 cell: cannot create %s: %s\n", S.cfg.data_dir, strerror(errno));
        return 1;
    }
    char path[1200], file[64];
    snprintf(file, sizeof file, "cell-%d.db", S.id);
    d11_config_path(&S.cfg, file, path, sizeof path);
    if (cell_store_open(&S.store, path, S.cfg.durability, S.cfg.async_flush_ms) < 0) {
        fprintf(stderr, "d11 cell: cannot open %s\n", path);
        return 1;
    }
    d11_fault_init_from_env(name);
    d11_smap_init(&S.ledger_by_key, 1024);
    d11_imap_init(&S.order_by_id, 1 << 16);
    d11_smap_init(&S.order_by_idem, 1 << 16);
    d11_imap_init(&S.user_head, 1 << 16);
    d11_buf_init(&S.scratch, 1 << 16);
    d11_buf_init(&S.scratch2, 4096);
    for (int i = 0; i < 2; i++) {
        d11_buf_init(&S.batches[i].ops, 1 << 20);
        d11_buf_init(&S.batches[i].replies, 1 << 20);
        d11_buf_init(&S.batches[i].returns, 4096);
    }
    recover();
    S.open_seq = 1;
    S.committed_seq = 0;
    if (cell_store_start(&S.store) < 0) d11_fatal("cannot start the storage thread");

    snprintf(file, sizeof file, "cell-%d.sock", S.id);
    d11_config_path(&S.cfg, file, path, sizeof path);
    S.lfd = d11_listen_unix(path);
    if (S.lfd < 0) {
        fprintf(stderr, "d11 cell: cannot listen on %s: %s\n", path, d11_strerror(S.lfd));
        return 1;
    }
    S.epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CELL_CONNS_MAX + 1};
    epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.lfd, &ev);
    ev.data.u32 = CELL_CONNS_MAX + 2;
    epoll_ctl(S.epfd, EPOLL_CTL_ADD, S.store.done_fd, &ev);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    center_connect();
    d11_info("cell %d listening on %s (durability %s)", S.id, path, d11_durability_name(S.cfg.durability));

    struct epoll_event evs[256];
    int64_t last_tick = 0;
    bool draining = false;
    for (;;) {
        if (S.stop && !draining) {
            draining = true;
            epoll_ctl(S.epfd, EPOLL_CTL_DEL, S.lfd, NULL);
            close(S.lfd);
            unlink(path);
            for (size_t i = 0; i < S.parked.n; i++) {
                send_err(S.parked.v[i].conn, S.parked.v[i].gen, &S.parked.v[i].hdr, 503, "unavailable",
                         "cell is shutting down; not placed");
                free(S.parked.v[i].payload);
            }
            S.parked.n = 0;
            d11_info("cell %d draining", S.id);
        }
        if (draining && !S.committing && open_batch()->nops == 0 && open_batch()->nreplies == 0 &&
            S.dirty_ledgers.n == 0) {
            for (int i = 0; i < CELL_CONNS_MAX; i++) conn_flush(i);
            center_flush();
            break;
        }
        int n = epoll_wait(S.epfd, evs, 256, CELL_TICK_MS);
        if (n == -1 && errno != EINTR) d11_fatal("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == CELL_CONNS_MAX + 1) {
                if (!draining) accept_all();
            } else if (id == CELL_CONNS_MAX + 2) {
                batch_done();
            } else if (id == CELL_CONNS_MAX) {
                if (!S.center_up) continue;
                int rc = (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? d11_conn_read(&S.center) : 0;
                d11_frame f;
                int fr;
                while ((fr = d11_conn_frame(&S.center, &f)) == 1) handle_center_frame(&f);
                d11_conn_compact(&S.center);
                if (fr < 0 || rc < 0) center_down();
            } else if (id < CELL_CONNS_MAX && S.conns[id].open) {
                gconn *g = &S.conns[id];
                int rc = (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? d11_conn_read(&g->c) : 0;
                d11_frame f;
                int fr;
                while ((fr = d11_conn_frame(&g->c, &f)) == 1) handle_gateway_frame((int)id, &f);
                d11_conn_compact(&g->c);
                if (fr < 0 || rc < 0) conn_close((int)id);
            }
        }
        int64_t now = d11_mono_ms();
        if (now - last_tick >= CELL_TICK_MS) {
            last_tick = now;
            tick();
        }
        maybe_submit();
        for (int i = 0; i < CELL_CONNS_MAX; i++) conn_flush(i);
        center_flush();
    }
    cell_store_stop(&S.store);
    d11_info("cell %d stopped", S.id);
    return 0;
}
