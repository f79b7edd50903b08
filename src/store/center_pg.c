/*
 * center_pg.c — the center's storage on PostgreSQL (see center_pg.h): schema d11_center
 * with the SQLite center's tables (products, center_stock, ledger, routing; migration 2:
 * center_outbox, center_outbox_pruned), versioned in d11_center.migrations. The center's
 * event stream is read from SQLite only (center_outbox_read.h): on PostgreSQL the events
 * are written (same transaction) but EVENTS_READ answers 503, as for PostgreSQL cells.
 *
 * commit: one pipelined transaction (pg_util.h): BEGIN, one upsert per record in log order
 * (INSERT .. ON CONFLICT DO UPDATE: the record replaces its row, center_ops.h), COMMIT, one
 * sync. The center commits rarely (grants, catalog writes), so one statement per record
 * costs nothing that matters; the round trip is still one per commit. A record that does
 * not decode aborts the commit before anything is sent. synchronous_commit is on in sync
 * and async (a grant must be durable before a cell hears of it, as center_sqlite.c does),
 * off only in none. A broken connection fails the commit (the center exits and is
 * restarted; the center's state is rebuilt by load, and a grant whose COMMIT landed after
 * all was never sent to a cell, so the cell asks again).
 *
 * Threads: one thread at a time (the center's loop).
 */
#include "center_pg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/util.h"
#include "center_ops.h"
#include "pg_util.h"

static const char *const MIGRATIONS[] = {
    "CREATE TABLE products(sku TEXT PRIMARY KEY, title TEXT NOT NULL, price_cents BIGINT NOT NULL,"
    " category TEXT NOT NULL, stock_total BIGINT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE TABLE center_stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL, total BIGINT NOT NULL,"
    " free BIGINT NOT NULL, PRIMARY KEY(sku, shadow));"
    "CREATE TABLE ledger(sku TEXT NOT NULL, shadow INTEGER NOT NULL, cell INTEGER NOT NULL,"
    " granted BIGINT NOT NULL, returned BIGINT NOT NULL, sold_reported BIGINT NOT NULL,"
    " PRIMARY KEY(sku, shadow, cell));"
    "CREATE TABLE routing(id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL,"
    " ncells INTEGER NOT NULL, cell_of_slot BYTEA NOT NULL);",
    /* 2: the center outbox (docs/events.md "Center events"), additive */
    "CREATE TABLE center_outbox(event_id BIGINT PRIMARY KEY, type TEXT NOT NULL, sku TEXT NOT NULL,"
    " trace_id TEXT NOT NULL, payload TEXT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE TABLE center_outbox_pruned(id INTEGER PRIMARY KEY CHECK (id = 1), through BIGINT NOT NULL);",
};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

typedef struct center_pg {
    d11_store base; /* first: a d11_store * is a center_pg * */
    PGconn   *c;
    int       durability;
    d11_buf   rec;  /* one record being loaded */
    d11_buf   txt;  /* parameter texts of one commit, NUL-separated */
} center_pg;

static const d11_store_ops center_pg_ops;

static center_pg *from(d11_store *s)
{
    D11_ASSERT(s && s->ops == &center_pg_ops);
    return (center_pg *)s;
}

static uint64_t u64_of(const PGresult *r, int col)
{
    int64_t v = d11_pg_i64(r, col);
    return v < 0 ? 0 : (uint64_t)v;
}

typedef struct load_ctx {
    center_pg *s;
    d11_store_apply_fn *apply;
    void *ctx;
} load_ctx;

static int give(load_ctx *L, const char *what)
{
    center_op op;
    if (center_op_dec((const uint8_t *)L->s->rec.data, L->s->rec.len, &op) < 0) {
        d11_error("d11_center: the %s row is out of range", what);
        return D11_ESTORE;
    }
    return L->apply(L->ctx, (const uint8_t *)L->s->rec.data, L->s->rec.len, 1);
}

static int routing_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    uint64_t version = u64_of(q, 0), n = u64_of(q, 1);
    if (n < 1 || n > D11_CELLS_MAX || version > UINT32_MAX) {
        d11_error("d11_center: the routing row has %llu cells", (unsigned long long)n);
        return D11_ESTORE;
    }
    d11_routing r;
    d11_routing_default(&r, (unsigned)n);
    r.version = (uint32_t)version;
    size_t bl = 0;
    unsigned char *blob = PQunescapeBytea((const unsigned char *)PQgetvalue(q, 0, 2), &bl);
    if (blob && bl == sizeof r.cell_of_slot) memcpy(r.cell_of_slot, blob, sizeof r.cell_of_slot);
    PQfreemem(blob);
    d11_buf_reset(&L->s->rec);
    center_op_routing_enc(&L->s->rec, &r);
    return give(L, "routing");
}

static int product_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    center_op_product m = {.sku = d11_pg_str(q, 0), .title = d11_pg_str(q, 1), .price_cents = u64_of(q, 2),
                           .category = d11_pg_str(q, 3), .stock_total = u64_of(q, 4), .created_at = d11_pg_i64(q, 5)};
    if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || m.title.n > D11_TITLE_BYTES_MAX ||
        m.category.n > D11_CATEGORY_BYTES_MAX) {
        d11_error("d11_center: product %.*s is out of range; skipped", (int)(m.sku.n > 80 ? 80 : m.sku.n), m.sku.p);
        return 0;
    }
    d11_buf_reset(&L->s->rec);
    center_op_product_enc(&L->s->rec, &m);
    return give(L, "products");
}

static int stock_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    center_op_stock m = {.sku = d11_pg_str(q, 0), .total = u64_of(q, 2), .free = u64_of(q, 3)};
    uint64_t sh = u64_of(q, 1);
    if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || sh > 1 || m.free > m.total) {
        d11_error("d11_center: center_stock row of %.*s is out of range; skipped",
                  (int)(m.sku.n > 80 ? 80 : m.sku.n), m.sku.p);
        return 0;
    }
    m.shadow = (uint8_t)sh;
    d11_buf_reset(&L->s->rec);
    center_op_stock_enc(&L->s->rec, &m);
    return give(L, "center_stock");
}

static int ledger_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    center_op_ledger m = {.sku = d11_pg_str(q, 0), .granted = u64_of(q, 3), .returned = u64_of(q, 4),
                          .sold_reported = u64_of(q, 5)};
    uint64_t sh = u64_of(q, 1), cell = u64_of(q, 2);
    if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || sh > 1 || cell >= D11_CELLS_MAX || m.returned > m.granted) {
        d11_error("d11_center: ledger row of %.*s cell %llu is out of range", (int)(m.sku.n > 80 ? 80 : m.sku.n),
                  m.sku.p, (unsigned long long)cell);
        return D11_ESTORE;
    }
    m.shadow = (uint8_t)sh;
    m.cell = (uint16_t)cell;
    d11_buf_reset(&L->s->rec);
    center_op_ledger_enc(&L->s->rec, &m);
    return give(L, "ledger");
}

static int pruned_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    uint64_t t = u64_of(q, 0);
    d11_buf_reset(&L->s->rec);
    center_op_event_prune_enc(&L->s->rec, t > (uint64_t)INT64_MAX ? 0 : t);
    return give(L, "center_outbox_pruned");
}

static int event_row(void *ctx, const PGresult *q)
{
    load_ctx *L = ctx;
    center_op_event m = {.event_id = u64_of(q, 0), .type = d11_pg_str(q, 1), .sku = d11_pg_str(q, 2),
                         .trace_id = d11_pg_str(q, 3), .data = d11_pg_str(q, 4), .created_at = d11_pg_i64(q, 5)};
    if (m.event_id < 1 || m.type.n < 1 || m.type.n > CENTER_EVENT_TYPE_BYTES_MAX || m.sku.n < 1 ||
        m.sku.n > D11_SKU_BYTES_MAX || (m.trace_id.n != 0 && m.trace_id.n != 32) || m.data.n < 2 ||
        m.data.n > CENTER_EVENT_DATA_BYTES_MAX || m.data.p[0] != '{') {
        d11_error("d11_center: center_outbox event %llu is out of range", (unsigned long long)m.event_id);
        return D11_ESTORE;
    }
    d11_buf_reset(&L->s->rec);
    center_op_event_enc(&L->s->rec, &m);
    return give(L, "center_outbox");
}

static int cp_load(d11_store *st, d11_store_apply_fn *apply, void *ctx)
{
    center_pg *s = from(st);
    load_ctx L = {s, apply, ctx};
    int rc = d11_pg_exec(s->c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT version, ncells, cell_of_slot FROM routing WHERE id = 1", 0, NULL,
                             routing_row, &L);
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT sku, title, price_cents, category, stock_total, created_at FROM products",
                             0, NULL, product_row, &L);
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT sku, shadow, total, free FROM center_stock", 0, NULL, stock_row, &L);
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT sku, shadow, cell, granted, returned, sold_reported FROM ledger", 0, NULL,
                             ledger_row, &L);
    if (rc == 0) /* the outbox: watermark, then only the newest event (center_ops.h) */
        rc = d11_pg_each_row(s->c, "SELECT through FROM center_outbox_pruned WHERE id = 1", 0, NULL, pruned_row, &L);
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT event_id, type, sku, trace_id, payload, created_at FROM center_outbox"
                                   " ORDER BY event_id DESC LIMIT 1", 0, NULL, event_row, &L);
    PQsetnonblocking(s->c, 0);
    (void)d11_pg_exec(s->c, "COMMIT");
    PQsetnonblocking(s->c, 1);
    return rc;
}

/* Parameter texts go into s->txt NUL-terminated; offsets become pointers once it stops growing. */
static size_t put_str(d11_buf *b, d11_str v)
{
    size_t off = b->len;
    d11_buf_append(b, v.p ? v.p : "", v.n);
    d11_buf_append(b, "", 1);
    return off;
}

static size_t put_i64(d11_buf *b, int64_t v)
{
    size_t off = b->len;
    d11_buf_printf(b, "%lld", (long long)v);
    d11_buf_append(b, "", 1);
    return off;
}

static int send_one(center_pg *s, d11_pg_tx *t, const center_op *op)
{
    size_t off[6];
    const char *p[6];
    int lens[6] = {0}, fmts[6] = {0};
    const char *sql2 = NULL; /* EVENT_PRUNE: a second statement with the same parameter */
    const char *sql;
    int n;
    d11_buf *b = &s->txt;
    d11_buf_reset(b);
    switch (op->type) {
    case CENTER_OP_PRODUCT: {
        const center_op_product *m = &op->u.product;
        off[0] = put_str(b, m->sku), off[1] = put_str(b, m->title), off[2] = put_i64(b, (int64_t)m->price_cents);
        off[3] = put_str(b, m->category), off[4] = put_i64(b, (int64_t)m->stock_total);
        off[5] = put_i64(b, m->created_at);
        n = 6;
        sql = "INSERT INTO products VALUES($1,$2,$3,$4,$5,$6) ON CONFLICT (sku) DO UPDATE SET title = excluded.title,"
              " price_cents = excluded.price_cents, category = excluded.category,"
              " stock_total = excluded.stock_total, created_at = excluded.created_at";
        break;
    }
    case CENTER_OP_STOCK: {
        const center_op_stock *m = &op->u.stock;
        off[0] = put_str(b, m->sku), off[1] = put_i64(b, m->shadow), off[2] = put_i64(b, (int64_t)m->total);
        off[3] = put_i64(b, (int64_t)m->free);
        n = 4;
        sql = "INSERT INTO center_stock VALUES($1,$2,$3,$4) ON CONFLICT (sku, shadow) DO UPDATE SET"
              " total = excluded.total, free = excluded.free";
        break;
    }
    case CENTER_OP_LEDGER: {
        const center_op_ledger *m = &op->u.ledger;
        off[0] = put_str(b, m->sku), off[1] = put_i64(b, m->shadow), off[2] = put_i64(b, m->cell);
        off[3] = put_i64(b, (int64_t)m->granted), off[4] = put_i64(b, (int64_t)m->returned);
        off[5] = put_i64(b, (int64_t)m->sold_reported);
        n = 6;
        sql = "INSERT INTO ledger VALUES($1,$2,$3,$4,$5,$6) ON CONFLICT (sku, shadow, cell) DO UPDATE SET"
              " granted = excluded.granted, returned = excluded.returned, sold_reported = excluded.sold_reported";
        break;
    }
    case CENTER_OP_ROUTING: {
        const d11_routing *r = &op->u.routing;
        off[0] = put_i64(b, r->version), off[1] = put_i64(b, r->ncells);
        off[2] = b->len;
        d11_buf_append(b, r->cell_of_slot, sizeof r->cell_of_slot);
        lens[2] = (int)sizeof r->cell_of_slot, fmts[2] = 1; /* bytea, binary */
        n = 3;
        sql = "INSERT INTO routing VALUES(1,$1,$2,$3) ON CONFLICT (id) DO UPDATE SET version = excluded.version,"
              " ncells = excluded.ncells, cell_of_slot = excluded.cell_of_slot";
        break;
    }
    case CENTER_OP_EVENT: {
        const center_op_event *m = &op->u.event;
        off[0] = put_i64(b, (int64_t)m->event_id), off[1] = put_str(b, m->type), off[2] = put_str(b, m->sku);
        off[3] = put_str(b, m->trace_id), off[4] = put_str(b, m->data), off[5] = put_i64(b, m->created_at);
        n = 6;
        sql = "INSERT INTO center_outbox VALUES($1,$2,$3,$4,$5,$6)";
        break;
    }
    case CENTER_OP_EVENT_PRUNE: {
        off[0] = put_i64(b, (int64_t)op->u.prune_through);
        n = 1;
        sql = "DELETE FROM center_outbox WHERE event_id <= $1";
        sql2 = "INSERT INTO center_outbox_pruned VALUES(1,$1) ON CONFLICT (id) DO UPDATE SET"
               " through = greatest(center_outbox_pruned.through, excluded.through)";
        break;
    }
    default: return D11_ESTORE;
    }
    for (int i = 0; i < n; i++) p[i] = b->data + off[i];
    /* libpq copies the parameters into its output buffer: b may be reused at once. */
    int rc = d11_pg_tx_send(t, sql, n, p, lens, fmts, false);
    if (rc == 0 && sql2) rc = d11_pg_tx_send(t, sql2, n, p, lens, fmts, false);
    return rc;
}

static int cp_commit(d11_store *st, const uint8_t *ops, size_t len, uint32_t nops)
{
    center_pg *s = from(st);
    /* Decode everything first: a bad record sends nothing. */
    size_t off = 0;
    uint32_t n = 0;
    while (off < len) {
        size_t rl;
        center_op op;
        if (center_op_next(ops + off, len - off, &rl) < 0 || center_op_dec(ops + off, rl, &op) < 0) {
            d11_error("center store: record %u of the commit does not decode", n);
            return D11_ESTORE;
        }
        off += rl;
        n++;
    }
    if (n != nops) {
        d11_error("center store: commit announced %u records, holds %u", nops, n);
        return D11_ESTORE;
    }
    if (!s->c || PQstatus(s->c) != CONNECTION_OK) return D11_ESTORE;
    d11_pg_tx t;
    int rc = d11_pg_tx_begin(&t, s->c);
    for (off = 0; rc == 0 && off < len;) {
        size_t rl;
        center_op op;
        (void)center_op_next(ops + off, len - off, &rl);
        (void)center_op_dec(ops + off, rl, &op);
        rc = send_one(s, &t, &op);
        off += rl;
    }
    int end = d11_pg_tx_end(&t);
    d11_pg_tx_release(&t);
    return rc ? rc : end;
}

static int cp_sync(d11_store *st)
{
    (void)from(st);
    return 0; /* every commit is synchronous unless durability=none */
}

static void cp_close(d11_store *st)
{
    center_pg *s = from(st);
    if (s->c) PQfinish(s->c);
    d11_buf_free(&s->rec);
    d11_buf_free(&s->txt);
    free(s);
}

static const d11_store_ops center_pg_ops = {
    .name = "postgresql", .load = cp_load, .commit = cp_commit, .sync = cp_sync, .close = cp_close};

static int open_common(const char *url, int durability, bool ro, d11_store **out)
{
    center_pg *s = calloc(1, sizeof *s);
    if (!s) d11_fatal("out of memory");
    s->base.ops = &center_pg_ops;
    s->durability = durability;
    d11_buf_init(&s->rec, 4096);
    d11_buf_init(&s->txt, 4096);
    /* The center's commits are synchronous in sync and async alike. */
    int dur = durability == D11_DUR_NONE ? D11_DUR_NONE : D11_DUR_SYNC;
    int rc = d11_pg_connect(url, "d11_center", dur, ro ? NULL : MIGRATIONS, NMIGRATIONS,
                            ro ? 0 : D11_PG_CONNECT_WAIT_MS, &s->c);
    if (rc < 0) {
        cp_close(&s->base);
        *out = NULL;
        return rc;
    }
    *out = &s->base;
    return 0;
}

d11_store *d11_center_pg_open(const char *url, int durability)
{
    d11_store *s;
    return open_common(url, durability, false, &s) == 0 ? s : NULL;
}

int d11_center_pg_open_ro(const char *url, d11_store **out) { return open_common(url, D11_DUR_SYNC, true, out); }
