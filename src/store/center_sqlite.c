/*
 * center_sqlite.c — the center's storage on SQLite (see center_sqlite.h): all of the
 * center's schema and SQL lives here.
 *
 * Records come in and go out as center op records (center_ops.h); this file only maps
 * them to rows. A record that does not decode aborts the commit (rolled back, D11_ESTORE):
 * the center built it, so a bad one is a bug upstream, never half-applied.
 */
#include "center_sqlite.h"

#include <stdlib.h>
#include <string.h>

#include "../core/config.h"
#include "../core/util.h"
#include "center_ops.h"
#include "sqlite_util.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS products(sku TEXT PRIMARY KEY, title TEXT NOT NULL,"
    " price_cents INTEGER NOT NULL, category TEXT NOT NULL, stock_total INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS center_stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
    " total INTEGER NOT NULL, free INTEGER NOT NULL, PRIMARY KEY(sku, shadow));"
    "CREATE TABLE IF NOT EXISTS ledger(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
    " cell INTEGER NOT NULL, granted INTEGER NOT NULL, returned INTEGER NOT NULL,"
    " sold_reported INTEGER NOT NULL, PRIMARY KEY(sku, shadow, cell));"
    "CREATE TABLE IF NOT EXISTS routing(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " version INTEGER NOT NULL, ncells INTEGER NOT NULL, cell_of_slot BLOB NOT NULL);"
    /* center events (docs/events.md): added later, additive; old files gain them here */
    "CREATE TABLE IF NOT EXISTS center_outbox(event_id INTEGER PRIMARY KEY, type TEXT NOT NULL,"
    " sku TEXT NOT NULL, trace_id TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS center_outbox_pruned(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " through INTEGER NOT NULL);";

typedef struct center_sqlite {
    d11_store     base; /* first: a d11_store * is a center_sqlite * */
    sqlite3      *db;
    int           durability;
    sqlite3_stmt *st_product, *st_stock, *st_ledger, *st_routing;
    sqlite3_stmt *st_event, *st_prune_del, *st_prune_mark;
    d11_buf       rec; /* one record being loaded */
} center_sqlite;

static const d11_store_ops center_sqlite_ops;

static center_sqlite *from(d11_store *s)
{
    D11_ASSERT(s && s->ops == &center_sqlite_ops);
    return (center_sqlite *)s;
}

static d11_str col_str(sqlite3_stmt *st, int i)
{
    const char *p = (const char *)sqlite3_column_text(st, i);
    return (d11_str){p ? p : "", p ? (size_t)sqlite3_column_bytes(st, i) : 0};
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
    int64_t v = sqlite3_column_int64(st, i);
    return v < 0 ? 0 : (uint64_t)v;
}

/* Hand the record in s->rec to apply after checking that it decodes (rows written by
 * hand or by an older d11 are checked, not trusted; a routing table that does not fit
 * its cell count stops the load). */
static int give(center_sqlite *s, d11_store_apply_fn *apply, void *ctx, const char *what)
{
    center_op op;
    if (center_op_dec((const uint8_t *)s->rec.data, s->rec.len, &op) < 0) {
        d11_error("center.db: the %s row is out of range", what);
        return D11_ESTORE;
    }
    return apply(ctx, (const uint8_t *)s->rec.data, s->rec.len, 1);
}

/* The center outbox on load: the pruned watermark, then only the newest event (the
 * machine continues numbering after it; center_ops.h). */
static sqlite3_stmt *prep_opt(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL; /* read-only, older file */
    return st;
}

static int load_events(center_sqlite *s, d11_store_apply_fn *apply, void *ctx)
{
    int rc = 0;
    sqlite3_stmt *q = prep_opt(s->db, "SELECT through FROM center_outbox_pruned WHERE id = 1");
    if (q && sqlite3_step(q) == SQLITE_ROW) {
        d11_buf_reset(&s->rec);
        center_op_event_prune_enc(&s->rec, col_u64(q, 0) > (uint64_t)INT64_MAX ? 0 : col_u64(q, 0));
        rc = give(s, apply, ctx, "center_outbox_pruned");
    }
    sqlite3_finalize(q);
    if (rc < 0) return rc;
    q = prep_opt(s->db, "SELECT event_id, type, sku, trace_id, payload, created_at FROM center_outbox"
                        " ORDER BY event_id DESC LIMIT 1");
    if (q && sqlite3_step(q) == SQLITE_ROW) {
        center_op_event m = {.event_id = col_u64(q, 0), .type = col_str(q, 1), .sku = col_str(q, 2),
                             .trace_id = col_str(q, 3), .data = col_str(q, 4), .created_at = sqlite3_column_int64(q, 5)};
        d11_buf_reset(&s->rec);
        if (m.event_id < 1 || m.type.n < 1 || m.type.n > CENTER_EVENT_TYPE_BYTES_MAX || m.sku.n < 1 ||
            m.sku.n > D11_SKU_BYTES_MAX || (m.trace_id.n != 0 && m.trace_id.n != 32) || m.data.n < 2 ||
            m.data.n > CENTER_EVENT_DATA_BYTES_MAX || m.data.p[0] != '{') {
            d11_error("center.db: center_outbox event %llu is out of range", (unsigned long long)m.event_id);
            rc = D11_ESTORE; /* checked here: the encoder asserts */
        } else {
            center_op_event_enc(&s->rec, &m);
            rc = give(s, apply, ctx, "center_outbox");
        }
    }
    sqlite3_finalize(q);
    return rc;
}

static int cs_load(d11_store *st, d11_store_apply_fn *apply, void *ctx)
{
    center_sqlite *s = from(st);
    int rc = 0;
    sqlite3_stmt *q = d11_sqlite_prepare(s->db, "SELECT version, ncells, cell_of_slot FROM routing WHERE id = 1");
    if (sqlite3_step(q) == SQLITE_ROW) {
        uint64_t version = col_u64(q, 0), n = col_u64(q, 1);
        const void *blob = sqlite3_column_blob(q, 2);
        if (n < 1 || n > D11_CELLS_MAX || version > UINT32_MAX) {
            d11_error("center.db: the routing row has %llu cells", (unsigned long long)n);
            rc = D11_ESTORE;
        } else {
            d11_routing r;
            d11_routing_default(&r, (unsigned)n); /* a blob of the wrong size keeps the default split */
            r.version = (uint32_t)version;
            if (blob && sqlite3_column_bytes(q, 2) == (int)sizeof r.cell_of_slot)
                memcpy(r.cell_of_slot, blob, sizeof r.cell_of_slot);
            d11_buf_reset(&s->rec);
            center_op_routing_enc(&s->rec, &r);
            rc = give(s, apply, ctx, "routing");
        }
    }
    sqlite3_finalize(q);
    if (rc < 0) return rc;

    q = d11_sqlite_prepare(s->db, "SELECT sku, title, price_cents, category, stock_total, created_at FROM products");
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        center_op_product m = {.sku = col_str(q, 0), .title = col_str(q, 1), .price_cents = col_u64(q, 2),
                               .category = col_str(q, 3), .stock_total = col_u64(q, 4),
                               .created_at = sqlite3_column_int64(q, 5)};
        if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || m.title.n > D11_TITLE_BYTES_MAX ||
            m.category.n > D11_CATEGORY_BYTES_MAX) {
            d11_error("center.db: product %.*s is out of range; skipped", (int)(m.sku.n > 80 ? 80 : m.sku.n), m.sku.p);
            continue;
        }
        d11_buf_reset(&s->rec);
        center_op_product_enc(&s->rec, &m);
        rc = give(s, apply, ctx, "products");
    }
    sqlite3_finalize(q);
    if (rc < 0) return rc;

    q = d11_sqlite_prepare(s->db, "SELECT sku, shadow, total, free FROM center_stock");
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        center_op_stock m = {.sku = col_str(q, 0), .total = col_u64(q, 2), .free = col_u64(q, 3)};
        uint64_t sh = col_u64(q, 1);
        if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || sh > 1 || m.free > m.total) {
            d11_error("center.db: center_stock row of %.*s is out of range; skipped",
                      (int)(m.sku.n > 80 ? 80 : m.sku.n), m.sku.p);
            continue;
        }
        m.shadow = (uint8_t)sh;
        d11_buf_reset(&s->rec);
        center_op_stock_enc(&s->rec, &m);
        rc = give(s, apply, ctx, "center_stock");
    }
    sqlite3_finalize(q);
    if (rc < 0) return rc;

    q = d11_sqlite_prepare(s->db, "SELECT sku, shadow, cell, granted, returned, sold_reported FROM ledger");
    while (rc == 0 && sqlite3_step(q) == SQLITE_ROW) {
        center_op_ledger m = {.sku = col_str(q, 0), .granted = col_u64(q, 3), .returned = col_u64(q, 4),
                              .sold_reported = col_u64(q, 5)};
        uint64_t sh = col_u64(q, 1), cell = col_u64(q, 2);
        if (m.sku.n < 1 || m.sku.n > D11_SKU_BYTES_MAX || sh > 1 || cell >= D11_CELLS_MAX || m.returned > m.granted) {
            /* Skipping would leave the invariant broken; the center refuses to start on it. */
            d11_error("center.db: ledger row of %.*s cell %llu is out of range",
                      (int)(m.sku.n > 80 ? 80 : m.sku.n), m.sku.p, (unsigned long long)cell);
            rc = D11_ESTORE;
            break;
        }
        m.shadow = (uint8_t)sh;
        m.cell = (uint16_t)cell;
        d11_buf_reset(&s->rec);
        center_op_ledger_enc(&s->rec, &m);
        rc = give(s, apply, ctx, "ledger");
    }
    sqlite3_finalize(q);
    if (rc < 0) return rc;
    return load_events(s, apply, ctx);
}

static void bind_str(sqlite3_stmt *st, int i, d11_str s) { sqlite3_bind_text(st, i, s.p, (int)s.n, SQLITE_STATIC); }

static int apply_one(center_sqlite *s, const center_op *op)
{
    sqlite3_stmt *st;
    switch (op->type) {
    case CENTER_OP_PRODUCT: {
        const center_op_product *m = &op->u.product;
        st = s->st_product;
        bind_str(st, 1, m->sku);
        bind_str(st, 2, m->title);
        sqlite3_bind_int64(st, 3, (int64_t)m->price_cents);
        bind_str(st, 4, m->category);
        sqlite3_bind_int64(st, 5, (int64_t)m->stock_total);
        sqlite3_bind_int64(st, 6, m->created_at);
        break;
    }
    case CENTER_OP_STOCK: {
        const center_op_stock *m = &op->u.stock;
        st = s->st_stock;
        bind_str(st, 1, m->sku);
        sqlite3_bind_int64(st, 2, m->shadow);
        sqlite3_bind_int64(st, 3, (int64_t)m->total);
        sqlite3_bind_int64(st, 4, (int64_t)m->free);
        break;
    }
    case CENTER_OP_LEDGER: {
        const center_op_ledger *m = &op->u.ledger;
        st = s->st_ledger;
        bind_str(st, 1, m->sku);
        sqlite3_bind_int64(st, 2, m->shadow);
        sqlite3_bind_int64(st, 3, m->cell);
        sqlite3_bind_int64(st, 4, (int64_t)m->granted);
        sqlite3_bind_int64(st, 5, (int64_t)m->returned);
        sqlite3_bind_int64(st, 6, (int64_t)m->sold_reported);
        break;
    }
    case CENTER_OP_ROUTING: {
        const d11_routing *r = &op->u.routing;
        st = s->st_routing;
        sqlite3_bind_int64(st, 1, r->version);
        sqlite3_bind_int64(st, 2, r->ncells);
        sqlite3_bind_blob(st, 3, r->cell_of_slot, sizeof r->cell_of_slot, SQLITE_STATIC);
        break;
    }
    case CENTER_OP_EVENT: {
        const center_op_event *m = &op->u.event;
        st = s->st_event;
        sqlite3_bind_int64(st, 1, (int64_t)m->event_id);
        bind_str(st, 2, m->type);
        bind_str(st, 3, m->sku);
        bind_str(st, 4, m->trace_id.p ? m->trace_id : (d11_str){"", 0});
        bind_str(st, 5, m->data);
        sqlite3_bind_int64(st, 6, m->created_at);
        break;
    }
    case CENTER_OP_EVENT_PRUNE: { /* the range DELETE and the watermark, in this transaction */
        sqlite3_bind_int64(s->st_prune_del, 1, (int64_t)op->u.prune_through);
        int rc = d11_sqlite_step_done(s->db, s->st_prune_del);
        sqlite3_clear_bindings(s->st_prune_del);
        if (rc < 0) return rc;
        st = s->st_prune_mark;
        sqlite3_bind_int64(st, 1, (int64_t)op->u.prune_through);
        break;
    }
    default: return D11_ESTORE;
    }
    int rc = d11_sqlite_step_done(s->db, st);
    sqlite3_clear_bindings(st);
    return rc;
}

static int cs_commit(d11_store *st, const uint8_t *ops, size_t len, uint32_t nops)
{
    center_sqlite *s = from(st);
    if (d11_sqlite_exec(s->db, "BEGIN IMMEDIATE") < 0) return D11_ESTORE;
    size_t off = 0;
    uint32_t n = 0;
    int rc = 0;
    while (off < len) {
        size_t rl;
        center_op op;
        if (center_op_next(ops + off, len - off, &rl) < 0 || center_op_dec(ops + off, rl, &op) < 0) {
            d11_error("center store: record %u of the commit does not decode", n);
            rc = D11_ESTORE;
            break;
        }
        if ((rc = apply_one(s, &op)) < 0) break;
        off += rl;
        n++;
    }
    if (rc == 0 && n != nops) {
        d11_error("center store: commit announced %u records, holds %u", nops, n);
        rc = D11_ESTORE;
    }
    if (rc == 0 && d11_sqlite_exec(s->db, "COMMIT") < 0) rc = D11_ESTORE;
    if (rc < 0) {
        (void)d11_sqlite_exec(s->db, "ROLLBACK");
        return rc;
    }
    if (s->durability == D11_DUR_ASYNC && d11_sqlite_sync(s->db) < 0) return D11_ESTORE;
    return 0;
}

static int cs_sync(d11_store *st)
{
    center_sqlite *s = from(st);
    return d11_sqlite_sync(s->db) < 0 ? D11_ESTORE : 0;
}

static void cs_close(d11_store *st)
{
    center_sqlite *s = from(st);
    sqlite3_finalize(s->st_product);
    sqlite3_finalize(s->st_stock);
    sqlite3_finalize(s->st_ledger);
    sqlite3_finalize(s->st_routing);
    sqlite3_finalize(s->st_event);
    sqlite3_finalize(s->st_prune_del);
    sqlite3_finalize(s->st_prune_mark);
    d11_sqlite_close(s->db);
    d11_buf_free(&s->rec);
    free(s);
}

static const d11_store_ops center_sqlite_ops = {
    .name = "sqlite", .load = cs_load, .commit = cs_commit, .sync = cs_sync, .close = cs_close};

d11_store *d11_center_sqlite_open(const char *path, int durability)
{
    center_sqlite *s = calloc(1, sizeof *s);
    if (!s) {
        d11_error("center store: out of memory");
        return NULL;
    }
    s->base.ops = &center_sqlite_ops;
    s->durability = durability;
    if (d11_sqlite_open(path, durability, &s->db) < 0 || d11_sqlite_exec(s->db, SCHEMA) < 0) {
        d11_error("center store: cannot open %s", path);
        d11_sqlite_close(s->db);
        free(s);
        return NULL;
    }
    s->st_product = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO products VALUES(?,?,?,?,?,?)");
    s->st_stock = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO center_stock VALUES(?,?,?,?)");
    s->st_ledger = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO ledger VALUES(?,?,?,?,?,?)");
    s->st_routing = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO routing VALUES(1,?,?,?)");
    s->st_event = d11_sqlite_prepare(s->db, "INSERT INTO center_outbox VALUES(?,?,?,?,?,?)");
    s->st_prune_del = d11_sqlite_prepare(s->db, "DELETE FROM center_outbox WHERE event_id <= ?");
    s->st_prune_mark = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO center_outbox_pruned VALUES(1, max(?,"
                                                  " coalesce((SELECT through FROM center_outbox_pruned), 0)))");
    d11_buf_init(&s->rec, 4096);
    return &s->base;
}

d11_store *d11_center_sqlite_open_ro(const char *path)
{
    center_sqlite *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &center_sqlite_ops;
    if (d11_sqlite_open_ro(path, &s->db) < 0) {
        free(s);
        return NULL;
    }
    d11_buf_init(&s->rec, 4096);
    return &s->base;
}
