/*
 * orders.c — the cell's orders: the table and its indexes (by id, by idempotency key, per
 * user), the expiry heap, the id generator, status transitions, rendering, and the order
 * requests themselves (create with parking, get / pay / cancel, list).
 *
 * Placing an order (the hot path): idempotency lookup; reserve every item from the
 * cell's allotments, all or nothing (ledger.c); append the order row, its items and its
 * outbox event to the open batch (batch.c); the 201 waits in the batch until it is
 * durable. When an allotment is short the request is PARKED and the cell asks the
 * center for a grant; parked requests are retried in arrival order whenever stock may
 * have appeared (a grant, a cancel, an expiry, a reconnect) and answered 504 at their
 * deadline.
 *
 * Orders are referenced by index; see cell_int.h for why no `order *` outlives a call
 * that can create an order (retry_parked does).
 */
#include "cell_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { TRY_DONE, TRY_PARK };

static uint64_t new_order_id(cell *c, unsigned slot)
{
    D11_ASSERT(slot < D11_SLOTS);
    uint64_t ms = (uint64_t)(cell_wall(c) - ORDER_EPOCH_MS);
    if (ms > c->last_ms) {
        c->last_ms = ms;
        c->id_seq = 0;
    } else if (++c->id_seq >= 4096) { /* 4096 ids per ms used up: borrow the next ms */
        c->last_ms++;
        c->id_seq = 0;
    }
    D11_ASSERT(c->id_seq < 4096);
    uint64_t id = (c->last_ms << 22) | ((uint64_t)slot << 12) | c->id_seq;
    D11_ASSERT((id >> 22) == c->last_ms && ((id >> 12) & 1023) == slot); /* routable by its slot bits */
    return id;
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

static uint64_t idem_hash(int shadow, uint64_t user, const char *k, size_t kn)
{
    uint64_t h = d11_hash64(&user, sizeof user, 0x5bd1e995u + (uint64_t)shadow);
    return d11_hash64(k, kn, h);
}

/* The order with this (shadow, user, key), or NONE32. */
static uint32_t idem_find(cell *c, int shadow, uint64_t user, const char *k, size_t kn)
{
    uint64_t v;
    if (!d11_imap_get(&c->idem_head, idem_hash(shadow, user, k, kn), &v)) return NONE32;
    for (uint32_t oi = (uint32_t)v; oi != NONE32; oi = OR(c, oi)->next_idem) {
        const order *o = OR(c, oi);
        if (o->user_id == user && o->shadow == shadow && o->idem_n == kn && memcmp(o->idem, k, kn) == 0) return oi;
    }
    return NONE32;
}

/* ---- expiry heap (pending orders by due time; stale entries are skipped when popped) ---- */

static heap_ent *HP(cell *c) { return D11_TAB(&c->heap, heap_ent); }

static void heap_push(cell *c, int64_t at, uint32_t oi)
{
    D11_ASSERT(oi < c->orders.n && OR(c, oi)->status == ST_PENDING);
    int64_t k = d11_table_push(&c->heap);
    D11_ASSERT(k >= 0); /* sized like the orders table: one entry per pending order at most */
    size_t i = (size_t)k;
    HP(c)[i] = (heap_ent){at, oi};
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (HP(c)[p].at <= HP(c)[i].at) break;
        heap_ent t = HP(c)[p];
        HP(c)[p] = HP(c)[i];
        HP(c)[i] = t;
        i = p;
    }
}

static void heap_pop(cell *c)
{
    D11_ASSERT(c->heap.n > 0);
    heap_ent *h = HP(c);
    h[0] = h[--c->heap.n];
    size_t i = 0, n = c->heap.n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].at < h[m].at) m = l;
        if (r < n && h[r].at < h[m].at) m = r;
        if (m == i) break;
        heap_ent t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
}

/* Register a fully built order in the indexes (not the heap). */
static void order_index(cell *c, uint32_t oi)
{
    order *o = OR(c, oi);
    uint64_t seen;
    D11_ASSERT(!d11_imap_get(&c->order_by_id, o->id, &seen)); /* ids are unique per cell */
    D11_ASSERT(o->nitems >= 1 && o->nitems <= D11_ORDER_ITEMS_MAX && o->items + o->nitems <= c->items.n);
    d11_imap_put(&c->order_by_id, o->id, oi);
    uint64_t ih = idem_hash(o->shadow, o->user_id, o->idem, o->idem_n), head;
    o->next_idem = d11_imap_get(&c->idem_head, ih, &head) ? (uint32_t)head : NONE32;
    d11_imap_put(&c->idem_head, ih, oi);
    uint64_t ukey = o->user_id | ((uint64_t)o->shadow << 63);
    o->prev_user = d11_imap_get(&c->user_head, ukey, &head) ? (uint32_t)head : NONE32;
    d11_imap_put(&c->user_head, ukey, oi);
}

/* Move an order out of pending_payment; stock returns to the allotment unless paid. */
static void order_transition(cell *c, uint32_t oi, int to, const char *event)
{
    order *o = OR(c, oi);
    D11_ASSERT(o->status == ST_PENDING && to != ST_PENDING && to <= ST_EXPIRED); /* the only legal moves */
    if (to != ST_PAID) {
        for (uint32_t i = 0; i < o->nitems; i++) {
            const oitem *it = IT(c, o->items + i);
            ledger *l = LG(c, it->ledger);
            D11_ASSERT(l->sold >= it->qty);
            l->sold -= it->qty;
            d11__ledger_touch(c, it->ledger);
        }
    }
    o->status = (uint8_t)to;
    o->updated_at = cell_wall(c);
    o->batch_seq = c->open_seq;
    d11__op_order_update(c, oi);
    d11__op_outbox(c, oi, event);
}

/* Expire a pending order whose time has come (lazily on access, or from the heap). */
static bool expire_if_due(cell *c, uint32_t oi, int64_t wall_now)
{
    const order *o = OR(c, oi);
    if (o->status != ST_PENDING || o->expires_at > wall_now) return false;
    order_transition(c, oi, ST_EXPIRED, "order.expired");
    return true;
}

void d11__expire_due(cell *c)
{
    int64_t wall = cell_wall(c);
    bool freed = false;
    while (c->heap.n && HP(c)[0].at <= wall) {
        uint32_t oi = HP(c)[0].order;
        heap_pop(c);
        freed |= expire_if_due(c, oi, wall);
    }
    if (freed) d11__retry_parked(c);
}

/* ---- rendering ---- */

static void render_order(cell *c, d11_buf *b, uint32_t oi)
{
    const order *o = OR(c, oi);
    char ts1[25], ts2[25];
    d11_fmt_iso8601(o->created_at, ts1);
    d11_fmt_iso8601(o->expires_at, ts2);
    d11_buf_puts(b, "{\"order_id\":\"");
    d11_buf_u64(b, o->id);
    d11_buf_puts(b, "\",\"user_id\":");
    d11_buf_u64(b, o->user_id);
    d11_buf_puts(b, ",\"status\":\"");
    d11_buf_puts(b, cell_status_name[o->status & 3]);
    d11_buf_puts(b, "\",\"items\":[");
    for (uint32_t i = 0; i < o->nitems; i++) {
        const oitem *it = IT(c, o->items + i);
        const ledger *l = LG(c, it->ledger);
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

static bool order_uncommitted(cell *c, uint32_t oi) { return OR(c, oi)->batch_seq > c->committed_seq; }

static void reply_order(cell *c, uint32_t peer, const d11_frame_hdr *h, uint32_t status, uint32_t oi)
{
    d11_buf_reset(&c->scratch);
    render_order(c, &c->scratch, oi);
    d11__reply(c, peer, h, status, NULL, c->scratch.data, c->scratch.len, order_uncommitted(c, oi));
}

static void reply_full(cell *c, uint32_t peer, const d11_frame_hdr *h, const char *what)
{
    char msg[160];
    snprintf(msg, sizeof msg, "cell %d: %s table full; order not placed", c->o.id, what);
    c->n_rejected_full++;
    d11__reply_err(c, peer, h, 503, "unavailable", msg);
}

/* ---- placing ---- */

/*
 * Try to place an order. TRY_PARK: it must wait for the center (the caller parks it);
 * TRY_DONE: it was answered (placed, replayed or rejected).
 */
static int try_create(cell *c, uint32_t peer, const d11_frame_hdr *h, const d11_msg_order_create *m)
{
    int shadow = (h->flags & D11_WF_STRESS) ? 1 : 0;
    uint64_t bh = body_hash(m);
    uint32_t prev = idem_find(c, shadow, m->user_id, m->idem_key.p, m->idem_key.n);
    if (prev != NONE32) {
        if (OR(c, prev)->body_hash != bh) {
            static const char msg[] = "this Idempotency-Key was used with a different request body";
            /* a conflict with a change that is not durable yet waits for it (cell.h) */
            d11__reply(c, peer, h, 409, "idempotency_mismatch", msg, sizeof msg - 1, order_uncommitted(c, prev));
            return TRY_DONE;
        }
        reply_order(c, peer, h, 200, prev);
        return TRY_DONE;
    }
    int64_t now = cell_mono(c);
    uint32_t li[D11_ORDER_ITEMS_MAX];
    bool need_center = false;
    for (uint32_t i = 0; i < m->nitems; i++) {
        li[i] = d11__ledger_get(c, m->items[i].sku.p, m->items[i].sku.n, shadow, true);
        if (li[i] == NONE32) {
            reply_full(c, peer, h, "ledger");
            return TRY_DONE;
        }
        const ledger *l = LG(c, li[i]);
        if (l->known == 2 && now < l->unknown_until) {
            char msg[128];
            snprintf(msg, sizeof msg, "%.*s: no such product", (int)l->skun, l->sku);
            d11__reply_err(c, peer, h, 404, "unknown_sku", msg);
            return TRY_DONE;
        }
        if (l->known != 1) need_center = true;
    }
    if (!need_center) {
        bool all = true;
        for (uint32_t i = 0; i < m->nitems; i++)
            if (d11__ledger_avail(LG(c, li[i])) < m->items[i].qty) all = false;
        if (all) {
            if (c->orders.n == c->orders.max) {
                reply_full(c, peer, h, "order");
                return TRY_DONE;
            }
            if (c->items.max - c->items.n < m->nitems) {
                reply_full(c, peer, h, "order item");
                return TRY_DONE;
            }
            /* Reserve everything, build the order, append it to the open batch. */
            uint32_t first_item = c->items.n;
            uint64_t total = 0;
            for (uint32_t i = 0; i < m->nitems; i++) {
                ledger *l = LG(c, li[i]);
                l->sold += m->items[i].qty;
                D11_ASSERT(l->returned + l->sold <= l->granted);
                d11__ledger_touch(c, li[i]);
                int64_t k = d11_table_push(&c->items);
                D11_ASSERT(k >= 0);
                *IT(c, (uint32_t)k) = (oitem){li[i], m->items[i].qty, l->price};
                total += l->price * m->items[i].qty;
            }
            const char *idem = d11__cell_arena_dup(c, m->idem_key.p, m->idem_key.n);
            int64_t k = d11_table_push(&c->orders);
            D11_ASSERT(k >= 0);
            uint32_t oi = (uint32_t)k;
            order *o = OR(c, oi);
            o->id = new_order_id(c, (unsigned)(m->user_id % D11_SLOTS));
            o->user_id = m->user_id;
            o->body_hash = bh;
            o->idem = idem;
            o->idem_n = (uint16_t)m->idem_key.n;
            o->created_at = o->updated_at = cell_wall(c);
            o->expires_at = o->created_at + c->o.order_ttl_ms;
            o->status = ST_PENDING;
            o->shadow = (uint8_t)shadow;
            o->nitems = (uint8_t)m->nitems;
            o->items = first_item;
            o->total = total;
            o->batch_seq = c->open_seq;
            order_index(c, oi);
            heap_push(c, OR(c, oi)->expires_at, oi);
            d11__op_order_insert(c, oi);
            c->trace = h->trace_id;
            d11__op_outbox(c, oi, "order.created");
            c->trace = NULL;
            c->n_created++;
            d11_buf_reset(&c->scratch);
            render_order(c, &c->scratch, oi);
            d11__reply(c, peer, h, 201, NULL, c->scratch.data, c->scratch.len, true);
            return TRY_DONE;
        }
    }
    /* Something is missing: sold out (cached), or ask the center. */
    for (uint32_t i = 0; i < m->nitems; i++) {
        const ledger *l = LG(c, li[i]);
        if (l->known == 1) {
            uint64_t avail = d11__ledger_avail(l);
            if (avail >= m->items[i].qty) continue;
            if (now < l->soldout_until && m->items[i].qty - avail >= l->soldout_min) {
                char msg[160];
                snprintf(msg, sizeof msg, "%.*s: not enough stock for %u", (int)l->skun, l->sku, m->items[i].qty);
                d11__reply_err(c, peer, h, 409, "out_of_stock", msg);
                c->n_rejected_oos++;
                return TRY_DONE;
            }
            if (!c->center_up) goto unavailable;
            d11__request_grant(c, li[i], m->items[i].qty - avail);
        } else {
            if (!c->center_up) goto unavailable;
            d11__request_grant(c, li[i], 0); /* catalog lookup (and a first allotment) */
        }
    }
    return TRY_PARK;
unavailable:
    d11__reply_err(c, peer, h, 503, "unavailable", "inventory center unreachable; order not placed");
    return TRY_DONE;
}

static parked *PK(cell *c) { return D11_TAB(&c->parked, parked); }

static void park(cell *c, uint32_t peer, const d11_frame *f)
{
    int64_t k = d11_table_push(&c->parked);
    if (k < 0) {
        d11__reply_err(c, peer, &f->hdr, 503, "unavailable", "too many orders waiting for stock; not placed");
        return;
    }
    parked *p = &PK(c)[k];
    p->peer = peer;
    p->hdr = f->hdr;
    if (!p->hdr.deadline_ms) p->hdr.deadline_ms = d11_deadline_from_budget(cell_wall(c), D11_RPC_DEADLINE_MS_DEFAULT);
    p->payload_len = f->payload_len;
    p->payload = malloc(f->payload_len ? f->payload_len : 1);
    if (!p->payload) d11_fatal("out of memory");
    memcpy(p->payload, f->payload, f->payload_len);
    c->n_parked_total++;
}

/* Retry every parked order in arrival order (after a grant, a return of stock, ...). */
void d11__retry_parked(cell *c)
{
    uint32_t n = c->parked.n, keep = 0;
    if (!n) return;
    int64_t wall = cell_wall(c);
    for (uint32_t i = 0; i < n; i++) {
        parked p = PK(c)[i]; /* a copy: try_create must not see table memory it could move */
        bool done = true;
        if (d11_deadline_passed(p.hdr.deadline_ms, wall)) {
            d11__reply_err(c, p.peer, &p.hdr, 504, "timeout", "waited too long for stock; not placed");
        } else if (c->stopping) {
            d11__reply_err(c, p.peer, &p.hdr, 503, "unavailable", "cell is shutting down; not placed");
        } else {
            d11_msg_order_create m;
            D11_ASSERT(d11_msg_order_create_dec(p.payload, p.payload_len, &m) == 0);
            done = try_create(c, p.peer, &p.hdr, &m) == TRY_DONE;
        }
        if (done) free(p.payload);
        else PK(c)[keep++] = p;
    }
    D11_ASSERT(c->parked.n == n); /* nothing parks while retrying */
    D11_ASSERT(keep <= n);
    c->parked.n = keep;
}

void d11__park_drop_peer(cell *c, uint32_t peer)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < c->parked.n; i++) {
        parked p = PK(c)[i];
        if (p.peer == peer) free(p.payload);
        else PK(c)[keep++] = p;
    }
    c->parked.n = keep;
}

void d11__park_fail_all(cell *c, const char *why)
{
    for (uint32_t i = 0; i < c->parked.n; i++) {
        parked p = PK(c)[i];
        d11__reply_err(c, p.peer, &p.hdr, 503, "unavailable", why);
        free(p.payload);
    }
    c->parked.n = 0;
}

void d11__order_create(cell *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_order_create m;
    if (d11_msg_order_create_dec(f->payload, f->payload_len, &m) < 0) {
        d11__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed order");
        return;
    }
    if (c->stopping) {
        d11__reply_err(c, peer, &f->hdr, 503, "unavailable", "cell is shutting down; not placed");
        return;
    }
    if (try_create(c, peer, &f->hdr, &m) == TRY_PARK) park(c, peer, f);
}

/* ---- get / pay / cancel ---- */

static uint32_t find_order(cell *c, uint64_t id, int shadow)
{
    uint64_t v;
    if (!d11_imap_get(&c->order_by_id, id, &v)) return NONE32;
    return OR(c, (uint32_t)v)->shadow == shadow ? (uint32_t)v : NONE32;
}

static void reply_status_conflict(cell *c, uint32_t peer, const d11_frame_hdr *h, const char *code, uint32_t oi)
{
    char msg[96];
    int n = snprintf(msg, sizeof msg, "order is %s", cell_status_name[OR(c, oi)->status & 3]);
    /* a status that is not durable yet is not told before it is (cell.h) */
    d11__reply(c, peer, h, 409, code, msg, (size_t)n, order_uncommitted(c, oi));
}

void d11__order_ref(cell *c, uint32_t peer, const d11_frame *f)
{
    int type = f->hdr.type;
    d11_msg_order_ref m;
    if (d11_msg_order_ref_dec(f->payload, f->payload_len, &m, type == D11_MSG_ORDER_PAY) < 0) {
        d11__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    uint32_t oi = find_order(c, m.order_id, shadow);
    if (oi == NONE32) {
        d11__reply_err(c, peer, &f->hdr, 404, "not_found", "no such order");
        return;
    }
    /* Expiring frees stock, and retrying parked orders then creates orders: from here on
     * only the index `oi` is valid (this was the use-after-free of the defects issue). */
    if (expire_if_due(c, oi, cell_wall(c))) d11__retry_parked(c);
    uint8_t status = OR(c, oi)->status;
    if (type == D11_MSG_ORDER_GET) {
        reply_order(c, peer, &f->hdr, 200, oi);
    } else if (type == D11_MSG_ORDER_PAY) {
        const order *o = OR(c, oi);
        if (status == ST_PAID && o->payment_n == m.payment_id.n && memcmp(o->payment, m.payment_id.p, m.payment_id.n) == 0) {
            reply_order(c, peer, &f->hdr, 200, oi);
        } else if (status != ST_PENDING) {
            reply_status_conflict(c, peer, &f->hdr, "not_payable", oi);
        } else {
            const char *pay = d11__cell_arena_dup(c, m.payment_id.p, m.payment_id.n);
            OR(c, oi)->payment = pay;
            OR(c, oi)->payment_n = (uint16_t)m.payment_id.n;
            c->trace = f->hdr.trace_id;
            order_transition(c, oi, ST_PAID, "order.paid");
            c->trace = NULL;
            reply_order(c, peer, &f->hdr, 200, oi);
        }
    } else { /* cancel */
        if (status == ST_CANCELLED) {
            reply_order(c, peer, &f->hdr, 200, oi); /* repeating a cancel is harmless */
        } else if (status != ST_PENDING) {
            reply_status_conflict(c, peer, &f->hdr, "not_cancellable", oi);
        } else {
            c->trace = f->hdr.trace_id;
            order_transition(c, oi, ST_CANCELLED, "order.cancelled");
            c->trace = NULL;
            reply_order(c, peer, &f->hdr, 200, oi);
            d11__retry_parked(c);
        }
    }
}

void d11__order_list(cell *c, uint32_t peer, const d11_frame *f)
{
    d11_msg_order_list m;
    if (d11_msg_order_list_dec(f->payload, f->payload_len, &m) < 0) {
        d11__reply_err(c, peer, &f->hdr, 422, "invalid", "malformed request");
        return;
    }
    int shadow = (f->hdr.flags & D11_WF_STRESS) ? 1 : 0;
    uint64_t head;
    uint32_t oi = d11_imap_get(&c->user_head, m.user_id | ((uint64_t)shadow << 63), &head) ? (uint32_t)head : NONE32;
    /* Expire first (it touches ledgers and the batch), render afterwards. */
    int64_t now = cell_wall(c);
    bool freed = false;
    uint32_t count = 0;
    for (uint32_t k = oi; k != NONE32 && count <= m.limit; k = OR(c, k)->prev_user) {
        if (m.before && OR(c, k)->id >= m.before) continue;
        freed |= expire_if_due(c, k, now);
        count++;
    }
    d11_buf *b = &c->scratch;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"orders\":[");
    bool defer = false, more = false;
    uint64_t last_id = 0;
    count = 0;
    for (; oi != NONE32; oi = OR(c, oi)->prev_user) {
        if (m.before && OR(c, oi)->id >= m.before) continue;
        if (count == m.limit) {
            more = true;
            break;
        }
        if (count) d11_buf_puts(b, ",");
        render_order(c, b, oi);
        defer |= order_uncommitted(c, oi);
        last_id = OR(c, oi)->id;
        count++;
    }
    if (more) {
        d11_buf_puts(b, "],\"next\":\"");
        d11_buf_u64(b, last_id);
        d11_buf_puts(b, "\"}");
    } else {
        d11_buf_puts(b, "],\"next\":null}");
    }
    d11__reply(c, peer, &f->hdr, 200, NULL, b->data, b->len, defer);
    if (freed) d11__retry_parked(c);
}

/* ---- recovery ---- */

int d11__order_load(cell *c, const cell_op_order *r)
{
    uint64_t v;
    if (d11_imap_get(&c->order_by_id, r->id, &v)) {
        d11_error("cell %d: order %llu stored twice", c->o.id, (unsigned long long)r->id);
        return D11_EPROTO;
    }
    if (c->orders.n == c->orders.max || c->items.max - c->items.n < r->nitems) {
        d11_error("cell %d: more stored orders than D11_CELL_ORDERS_MAX / D11_CELL_ITEMS_MAX allow", c->o.id);
        return D11_ETOOBIG;
    }
    uint32_t first = c->items.n;
    for (uint32_t i = 0; i < r->nitems; i++) {
        uint32_t li = d11__ledger_get(c, r->items[i].sku.p, r->items[i].sku.n, r->shadow, true);
        if (li == NONE32) return D11_ETOOBIG;
        int64_t k = d11_table_push(&c->items);
        D11_ASSERT(k >= 0);
        *IT(c, (uint32_t)k) = (oitem){li, r->items[i].qty, r->items[i].price};
    }
    const char *idem = d11__cell_arena_dup(c, r->idem.p, r->idem.n);
    int64_t k = d11_table_push(&c->orders);
    D11_ASSERT(k >= 0);
    order *o = OR(c, (uint32_t)k);
    o->id = r->id;
    o->user_id = r->user_id;
    o->body_hash = r->body_hash;
    o->idem = idem;
    o->idem_n = (uint16_t)r->idem.n;
    o->status = r->status;
    o->total = r->total;
    o->created_at = o->updated_at = r->created_at;
    o->expires_at = r->expires_at;
    o->shadow = r->shadow;
    o->nitems = r->nitems;
    o->items = first;
    order_index(c, (uint32_t)k);
    uint64_t ms = r->id >> 22, seq = r->id & 4095;
    if (ms > c->last_ms) c->last_ms = ms, c->id_seq = seq;
    else if (ms == c->last_ms && seq > c->id_seq) c->id_seq = seq;
    return 0;
}

int d11__order_load_update(cell *c, const cell_op_update *u)
{
    uint64_t v;
    if (!d11_imap_get(&c->order_by_id, u->id, &v) || OR(c, (uint32_t)v)->shadow != u->shadow) {
        d11_error("cell %d: update of unknown order %llu", c->o.id, (unsigned long long)u->id);
        return D11_EPROTO;
    }
    order *o = OR(c, (uint32_t)v);
    if (o->status != ST_PENDING && o->status != u->status) {
        d11_error("cell %d: stored order %llu moves from %s to %s", c->o.id, (unsigned long long)u->id,
                  cell_status_name[o->status], cell_status_name[u->status]);
        return D11_EPROTO; /* status moves only forward, once */
    }
    o->status = u->status;
    o->updated_at = u->updated_at;
    if (u->payment.n) {
        const char *p = d11__cell_arena_dup(c, u->payment.p, u->payment.n);
        o = OR(c, (uint32_t)v);
        o->payment = p;
        o->payment_n = (uint16_t)u->payment.n;
    }
    return 0;
}

/* After the last record: check stock against the orders, build the expiry heap. */
int d11__orders_loaded(cell *c)
{
    uint64_t *held = calloc(c->ledgers.n + 1, sizeof *held);
    if (!held) d11_fatal("out of memory");
    for (uint32_t i = 0; i < c->orders.n; i++) {
        const order *o = OR(c, i);
        if (o->status == ST_PENDING) heap_push(c, o->expires_at, i);
        if (o->status != ST_PENDING && o->status != ST_PAID) continue;
        for (uint32_t k = 0; k < o->nitems; k++) held[IT(c, o->items + k)->ledger] += IT(c, o->items + k)->qty;
    }
    int rc = 0;
    for (uint32_t i = 0; i < c->ledgers.n; i++) {
        const ledger *l = LG(c, i);
        if (l->sold != held[i]) {
            d11_error("cell %d: ledger %.*s sold=%llu but its orders hold %llu", c->o.id, (int)l->skun, l->sku,
                      (unsigned long long)l->sold, (unsigned long long)held[i]);
            rc = D11_EPROTO;
        }
    }
    free(held);
    return rc;
}
