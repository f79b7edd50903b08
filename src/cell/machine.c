/*
 * machine.c — the cell's entry points (cell.h): open and recovery, request dispatch with
 * deadlines, the tick, stop, and introspection. The work itself is in orders.c (orders),
 * ledger.c (allotments, center) and batch.c (group commit).
 *
 * Recovery: every record the store returns is applied as an upsert (STOCK sets a
 * ledger; ORDER_INSERT creates an order; ORDER_UPDATE moves it; OUTBOX advances the
 * event id). Afterwards each ledger's sold must equal what its pending + paid orders
 * hold, or the cell refuses to start: better down than wrong.
 *
 * Deadlines (wire header, core/clock.h): a request whose deadline has passed when it is
 * taken from the connection is answered 504 and does no work — nobody waits for it (the
 * gateway answered 504 already). A request that entered a batch is committed and
 * answered whatever the time.
 */
#include "cell_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARENA_CHUNK_BYTES (1 << 20)

struct arena_chunk {
    arena_chunk *next;
};

void cell_opts_default(cell_opts *o, int id)
{
    memset(o, 0, sizeof *o);
    o->id = id;
    o->order_ttl_ms = 900000;
    o->soldout_cache_ms = 100;
    o->orders_max = D11_CELL_ORDERS_MAX;
    o->items_max = D11_CELL_ITEMS_MAX;
    o->ledgers_max = D11_CELL_SKUS_MAX;
    o->parked_max = D11_CELL_PARKED_MAX;
}

/* Strings that live as long as the cell (idempotency keys, payment ids). */
const char *d11__cell_arena_dup(cell *c, const char *p, size_t n)
{
    if (n + 1 > c->arena_left) {
        size_t sz = sizeof(arena_chunk) + (n + 1 > ARENA_CHUNK_BYTES ? n + 1 : ARENA_CHUNK_BYTES);
        arena_chunk *ch = malloc(sz);
        if (!ch) d11_fatal("out of memory");
        ch->next = c->arena;
        c->arena = ch;
        c->arena_p = (char *)(ch + 1);
        c->arena_left = sz - sizeof(arena_chunk);
    }
    char *r = c->arena_p;
    memcpy(r, p, n);
    r[n] = 0;
    c->arena_p += n + 1;
    c->arena_left -= n + 1;
    return r;
}

static int apply_records(void *ctx, const uint8_t *recs, size_t len, uint32_t nrecs)
{
    cell *c = ctx;
    d11_wdec d;
    d11_wdec_init(&d, recs, len);
    cell_op op;
    for (uint32_t i = 0; i < nrecs; i++) {
        if (cell_op_next(&d, &op) < 0) {
            d11_error("cell %d: malformed stored record", c->o.id);
            return D11_EPROTO;
        }
        int rc = 0;
        switch (op.kind) {
        case CELL_OP_STOCK: {
            const cell_op_stock *s = &op.u.stock;
            uint32_t li = d11__ledger_get(c, s->sku.p, s->sku.n, s->shadow, true);
            if (li == NONE32) return D11_ETOOBIG;
            ledger *l = LG(c, li);
            l->known = 1;
            l->price = s->price;
            l->granted = s->granted;
            l->returned = l->returned_committed = s->returned;
            l->sold = l->sold_committed = s->sold;
            D11_ASSERT(l->returned + l->sold <= l->granted);
            break;
        }
        case CELL_OP_ORDER_INSERT: rc = d11__order_load(c, &op.u.order); break;
        case CELL_OP_ORDER_UPDATE: rc = d11__order_load_update(c, &op.u.update); break;
        case CELL_OP_OUTBOX:
            if (op.u.outbox.event_id >= c->next_event_id) c->next_event_id = op.u.outbox.event_id + 1;
            break;
        }
        if (rc < 0) return rc;
    }
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

int cell_open(cell **out, const cell_opts *o, const cell_host *h, d11_store *st)
{
    *out = NULL;
    cell *c = calloc(1, sizeof *c);
    if (!c) return -ENOMEM;
    c->o = *o;
    c->h = *h;
    D11_ASSERT(h->clock && h->send_peer && h->send_center);
    int rc;
    if ((rc = d11_table_init(&c->ledgers, sizeof(ledger), o->ledgers_max, o->moving_tables)) < 0 ||
        (rc = d11_table_init(&c->orders, sizeof(order), o->orders_max, o->moving_tables)) < 0 ||
        (rc = d11_table_init(&c->items, sizeof(oitem), o->items_max, o->moving_tables)) < 0 ||
        (rc = d11_table_init(&c->heap, sizeof(heap_ent), o->orders_max, o->moving_tables)) < 0 ||
        (rc = d11_table_init(&c->parked, sizeof(parked), o->parked_max, o->moving_tables)) < 0) {
        cell_free(c);
        return rc;
    }
    c->dirty = malloc(sizeof *c->dirty * o->ledgers_max);
    if (!c->dirty) d11_fatal("out of memory");
    d11_smap_init(&c->ledger_by_key, 1024);
    d11_imap_init(&c->order_by_id, 1 << 12);
    d11_imap_init(&c->idem_head, 1 << 12);
    d11_imap_init(&c->user_head, 1 << 12);
    d11_buf_init(&c->scratch, 1 << 16);
    d11_buf_init(&c->scratch2, 4096);
    d11_buf_init(&c->frame, 4096);
    d11__batches_init(c);
    c->next_event_id = 1;
    rc = d11_store_load(st, apply_records, c);
    if (rc == 0) rc = d11__orders_loaded(c);
    if (rc < 0) {
        d11_error("cell %d: recovery failed: %s", o->id, d11_strerror(rc));
        cell_free(c);
        return rc;
    }
    d11_info("cell %d recovered %u orders, %u ledgers", o->id, c->orders.n, c->ledgers.n);
    *out = c;
    return 0;
}

void cell_free(cell *c)
{
    if (!c) return;
    for (uint32_t i = 0; i < c->parked.n; i++) free(D11_TAB(&c->parked, parked)[i].payload);
    d11_table_release(&c->ledgers);
    d11_table_release(&c->orders);
    d11_table_release(&c->items);
    d11_table_release(&c->heap);
    d11_table_release(&c->parked);
    free(c->dirty);
    d11_smap_free(&c->ledger_by_key);
    d11_imap_free(&c->order_by_id);
    d11_imap_free(&c->idem_head);
    d11_imap_free(&c->user_head);
    d11_buf_free(&c->scratch);
    d11_buf_free(&c->scratch2);
    d11_buf_free(&c->frame);
    d11__batches_release(c);
    while (c->arena) {
        arena_chunk *n = c->arena->next;
        free(c->arena);
        c->arena = n;
    }
    free(c);
}

static void reply_stats(cell *c, uint32_t peer, const d11_frame_hdr *h)
{
    d11_buf *b = &c->scratch;
    d11_buf_reset(b);
    d11_buf_printf(b,
                   "{\"process\":\"cell\",\"cell\":%d,\"pid\":%d,\"orders\":%u,\"skus\":%u,"
                   "\"created\":%llu,\"rejected_out_of_stock\":%llu,\"rejected_table_full\":%llu,"
                   "\"expired_deadline\":%llu,\"parked\":%u,\"parked_total\":%llu,"
                   "\"batches\":%llu,\"batch_ops\":%llu,\"last_commit_us\":%lld,\"center_up\":%s,"
                   "\"limits\":{\"orders_max\":%u,\"items_max\":%u,\"skus_max\":%u,\"parked_max\":%u}}",
                   c->o.id, (int)getpid(), c->orders.n, c->ledgers.n, (unsigned long long)c->n_created,
                   (unsigned long long)c->n_rejected_oos, (unsigned long long)c->n_rejected_full,
                   (unsigned long long)c->n_expired_deadline, c->parked.n, (unsigned long long)c->n_parked_total,
                   (unsigned long long)c->n_batches, (unsigned long long)c->n_batch_ops, (long long)c->last_commit_us,
                   c->center_up ? "true" : "false", c->orders.max, c->items.max, c->ledgers.max, c->parked.max);
    d11__reply(c, peer, h, 200, NULL, b->data, b->len, false);
}

void cell_on_request(cell *c, uint32_t peer, const d11_frame *f)
{
    if (f->hdr.flags & D11_WF_REPLY) return;
    if (c->failed) {
        d11__reply_err(c, peer, &f->hdr, 503, "unavailable", "cell is restarting; not placed");
        return;
    }
    switch (f->hdr.type) {
    case D11_MSG_ORDER_CREATE:
    case D11_MSG_ORDER_GET:
    case D11_MSG_ORDER_PAY:
    case D11_MSG_ORDER_CANCEL:
    case D11_MSG_ORDER_LIST:
        if (d11_deadline_passed(f->hdr.deadline_ms, cell_wall(c))) {
            c->n_expired_deadline++;
            d11__reply_err(c, peer, &f->hdr, 504, "timeout", "deadline passed before the cell took the request");
            return;
        }
        break;
    }
    switch (f->hdr.type) {
    case D11_MSG_ORDER_CREATE: d11__order_create(c, peer, f); break;
    case D11_MSG_ORDER_GET:
    case D11_MSG_ORDER_PAY:
    case D11_MSG_ORDER_CANCEL: d11__order_ref(c, peer, f); break;
    case D11_MSG_ORDER_LIST: d11__order_list(c, peer, f); break;
    case D11_MSG_PING: {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "cell %d", c->o.id);
        d11__reply(c, peer, &f->hdr, 200, NULL, msg, (size_t)n, false);
        break;
    }
    case D11_MSG_STATS: reply_stats(c, peer, &f->hdr); break;
    default: d11__reply_err(c, peer, &f->hdr, 400, "bad_request", "unknown message type");
    }
}

void cell_peer_down(cell *c, uint32_t peer) { d11__park_drop_peer(c, peer); }

void cell_tick(cell *c)
{
    if (c->failed) return;
    d11__expire_due(c);
    d11__ledger_tick(c);
    if (c->parked.n) d11__retry_parked(c); /* also times out parked orders */
}

void cell_shutdown(cell *c)
{
    c->stopping = true;
    d11__park_fail_all(c, "cell is shutting down; not placed");
}

bool cell_quiet(const cell *c)
{
    const cell_batch *b = &c->batches[c->open];
    return !c->committing && b->nops == 0 && b->nreplies == 0 && b->nreturns == 0 && c->ndirty == 0;
}

void cell_set_last_commit_us(cell *c, int64_t us) { c->last_commit_us = us; }

void cell_get_counts(const cell *c, cell_counts *out)
{
    *out = (cell_counts){.orders = c->orders.n, .ledgers = c->ledgers.n, .parked = c->parked.n,
                         .created = c->n_created, .rejected_oos = c->n_rejected_oos, .batches = c->n_batches,
                         .batch_ops = c->n_batch_ops, .parked_total = c->n_parked_total,
                         .rejected_full = c->n_rejected_full, .expired_deadline = c->n_expired_deadline,
                         .last_commit_us = (uint64_t)c->last_commit_us, .center_up = c->center_up};
}

bool cell_order_view(const cell *c, uint64_t id, int shadow, uint8_t *status, bool *committed)
{
    uint64_t v;
    if (!d11_imap_get(&c->order_by_id, id, &v)) return false;
    const order *o = &D11_TAB(&c->orders, const order)[v];
    if (o->shadow != shadow) return false;
    *status = o->status;
    *committed = o->batch_seq <= c->committed_seq;
    return true;
}

uint32_t cell_parked(const cell *c) { return c->parked.n; }
