/*
 * cell_sqlite.c — the SQLite backend of the cell's storage seam (store.h, cell_ops.h).
 *
 * Schema (docs/storage.md has the column meanings): orders / order_items and their
 * shadow_ twins are append-mostly tables keyed by INTEGER PRIMARY KEY (order ids are
 * roughly time-ordered: milliseconds in the high bits; item rows take the next rowid),
 * with NO secondary index: every random index insert costs ~15-20 us per row here,
 * against ~1.5 us for an append. The idempotency lookup and the per-user order list are
 * in-memory structures the cell rebuilds from load. `stock` holds one row per (sku,
 * shadow): the cell's ledger, rewritten once per batch per SKU touched — a hot SKU costs
 * one row update per batch, not one per order.
 *
 * commit: BEGIN, one statement per record, COMMIT; any failure rolls the whole batch back
 * and returns D11_ESTORE (or D11_EPROTO for a malformed record). load: stock rows, then
 * every order (real, then shadow) as ORDER_INSERT (+ ORDER_UPDATE when it left pending),
 * then the newest outbox event of each kind. One thread at a time (store.h).
 */
#include "cell_sqlite.h"
#include "cell_ops.h"
#include "sqlite_util.h"
#include "../core/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cell_sqlite {
    d11_store     base;
    sqlite3      *db;
    int           durability;
    sqlite3_stmt *ins_order[2], *ins_item[2], *upd_order[2], *ins_outbox[2], *up_stock;
    sqlite3_stmt *del_outbox[2], *mark_pruned; /* OUTBOX_PRUNE (retention) */
} cell_sqlite;

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS orders(order_id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
    " idem_key TEXT NOT NULL, body_hash INTEGER NOT NULL, status TEXT NOT NULL,"
    " total_cents INTEGER NOT NULL, payment_id TEXT, created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS order_items(id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL,"
    " idx INTEGER NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS shadow_orders(order_id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL,"
    " idem_key TEXT NOT NULL, body_hash INTEGER NOT NULL, status TEXT NOT NULL,"
    " total_cents INTEGER NOT NULL, payment_id TEXT, created_at INTEGER NOT NULL,"
    " expires_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS shadow_order_items(id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL,"
    " idx INTEGER NOT NULL, sku TEXT NOT NULL, quantity INTEGER NOT NULL, price_cents INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
    " price_cents INTEGER NOT NULL, granted INTEGER NOT NULL, returned INTEGER NOT NULL,"
    " sold INTEGER NOT NULL, PRIMARY KEY(sku, shadow));"
    "CREATE TABLE IF NOT EXISTS outbox(event_id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL,"
    " type TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS shadow_outbox(event_id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL,"
    " type TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS outbox_pruned(shadow INTEGER PRIMARY KEY, through INTEGER NOT NULL);";

#define BIND_STR(st, i, s) sqlite3_bind_text(st, i, (s).n ? (s).p : "", (int)(s).n, SQLITE_STATIC)

static int apply(cell_sqlite *s, const cell_op *op)
{
    sqlite3 *db = s->db;
    switch (op->kind) {
    case CELL_OP_ORDER_INSERT: {
        const cell_op_order *o = &op->u.order;
        sqlite3_stmt *st = s->ins_order[o->shadow];
        sqlite3_bind_int64(st, 1, (int64_t)o->id);
        sqlite3_bind_int64(st, 2, (int64_t)o->user_id);
        BIND_STR(st, 3, o->idem);
        sqlite3_bind_int64(st, 4, (int64_t)o->body_hash);
        sqlite3_bind_text(st, 5, cell_status_name[o->status], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (int64_t)o->total);
        sqlite3_bind_int64(st, 7, o->created_at);
        sqlite3_bind_int64(st, 8, o->expires_at);
        sqlite3_bind_int64(st, 9, o->created_at);
        if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
        for (uint32_t i = 0; i < o->nitems; i++) {
            sqlite3_stmt *it = s->ins_item[o->shadow];
            sqlite3_bind_int64(it, 1, (int64_t)o->id);
            sqlite3_bind_int64(it, 2, i);
            BIND_STR(it, 3, o->items[i].sku);
            sqlite3_bind_int64(it, 4, o->items[i].qty);
            sqlite3_bind_int64(it, 5, (int64_t)o->items[i].price);
            if (d11_sqlite_step_done(db, it) < 0) return D11_ESTORE;
        }
        return 0;
    }
    case CELL_OP_ORDER_UPDATE: {
        const cell_op_update *u = &op->u.update;
        sqlite3_stmt *st = s->upd_order[u->shadow];
        sqlite3_bind_text(st, 1, cell_status_name[u->status], -1, SQLITE_STATIC);
        if (u->payment.n) BIND_STR(st, 2, u->payment);
        else sqlite3_bind_null(st, 2);
        sqlite3_bind_int64(st, 3, u->updated_at);
        sqlite3_bind_int64(st, 4, (int64_t)u->id);
        if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
        if (sqlite3_changes(db) != 1) {
            d11_error("update of order %llu touched %d rows", (unsigned long long)u->id, sqlite3_changes(db));
            return D11_ESTORE;
        }
        return 0;
    }
    case CELL_OP_STOCK: {
        const cell_op_stock *k = &op->u.stock;
        sqlite3_stmt *st = s->up_stock;
        BIND_STR(st, 1, k->sku);
        sqlite3_bind_int64(st, 2, k->shadow);
        sqlite3_bind_int64(st, 3, (int64_t)k->price);
        sqlite3_bind_int64(st, 4, (int64_t)k->granted);
        sqlite3_bind_int64(st, 5, (int64_t)k->returned);
        sqlite3_bind_int64(st, 6, (int64_t)k->sold);
        return d11_sqlite_step_done(db, st) < 0 ? D11_ESTORE : 0;
    }
    case CELL_OP_OUTBOX: {
        const cell_op_outbox *e = &op->u.outbox;
        sqlite3_stmt *st = s->ins_outbox[e->shadow];
        sqlite3_bind_int64(st, 1, (int64_t)e->event_id);
        sqlite3_bind_int64(st, 2, (int64_t)e->order_id);
        BIND_STR(st, 3, e->type);
        BIND_STR(st, 4, e->payload);
        sqlite3_bind_int64(st, 5, e->created_at);
        return d11_sqlite_step_done(db, st) < 0 ? D11_ESTORE : 0;
    }
    case CELL_OP_OUTBOX_PRUNE: { /* retention: a bounded range (outbox_read.c chose it) */
        const cell_op_prune *pr = &op->u.prune;
        sqlite3_stmt *del = s->del_outbox[pr->shadow], *mark = s->mark_pruned;
        sqlite3_bind_int64(del, 1, (int64_t)pr->through);
        if (d11_sqlite_step_done(db, del) < 0) return D11_ESTORE;
        sqlite3_bind_int64(mark, 1, pr->shadow);
        sqlite3_bind_int64(mark, 2, (int64_t)pr->through);
        return d11_sqlite_step_done(db, mark) < 0 ? D11_ESTORE : 0;
    }
    }
    return D11_EPROTO;
}

static int cs_commit(d11_store *base, const uint8_t *ops, size_t len, uint32_t nops)
{
    cell_sqlite *s = (cell_sqlite *)base;
    if (nops == 0) return 0;
    if (d11_sqlite_exec(s->db, "BEGIN") < 0) return D11_ESTORE;
    d11_wdec d;
    d11_wdec_init(&d, ops, len);
    int rc = 0;
    cell_op op;
    for (uint32_t k = 0; k < nops && rc == 0; k++) {
        rc = cell_op_next(&d, &op);
        if (rc == 0) rc = apply(s, &op);
    }
    if (rc == 0 && !d11_wdec_done(&d)) rc = D11_EPROTO;
    if (rc == 0 && d11_sqlite_exec(s->db, "COMMIT") < 0) rc = D11_ESTORE;
    if (rc != 0) (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Re-encode one row as a record and hand it to the owner. */
static int emit(d11_buf *b, d11_store_apply_fn *fn, void *ctx)
{
    int rc = fn(ctx, (const uint8_t *)b->data, b->len, 1);
    d11_buf_reset(b);
    return rc;
}

static d11_str col_str(sqlite3_stmt *st, int i)
{
    d11_str s = {(const char *)sqlite3_column_text(st, i), (size_t)sqlite3_column_bytes(st, i)};
    if (!s.p) s.p = "", s.n = 0;
    return s;
}

static int load_orders(cell_sqlite *s, int sh, d11_buf *b, d11_store_apply_fn *fn, void *ctx)
{
    static const char *pre[2] = {"", "shadow_"};
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT o.order_id, o.user_id, o.idem_key, o.body_hash, o.status, o.total_cents, o.payment_id,"
             " o.created_at, o.expires_at, o.updated_at, i.sku, i.quantity, i.price_cents"
             " FROM %sorders o JOIN %sorder_items i ON i.order_id = o.order_id ORDER BY o.order_id, i.idx",
             pre[sh], pre[sh]);
    sqlite3_stmt *st = d11_sqlite_prepare(s->db, sql);
    /* Rows of one order are consecutive; strings are copied (the row changes under us). */
    cell_op_order o;
    cell_op_update u;
    char idem[D11_IDEM_KEY_BYTES_MAX], pay[D11_PAYMENT_ID_BYTES_MAX];
    char skus[D11_ORDER_ITEMS_MAX][D11_SKU_BYTES_MAX];
    bool have = false;
    int rc = 0, step;
    while (rc == 0) {
        step = sqlite3_step(st);
        uint64_t id = step == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        if (have && (step != SQLITE_ROW || id != o.id)) {
            cell_op_order_enc(b, &o);
            rc = emit(b, fn, ctx);
            if (rc == 0 && u.status != ST_PENDING) {
                cell_op_update_enc(b, &u);
                rc = emit(b, fn, ctx);
            }
            have = false;
        }
        if (step != SQLITE_ROW || rc != 0) break;
        if (!have) {
            memset(&o, 0, sizeof o);
            memset(&u, 0, sizeof u);
            have = true;
            o.shadow = u.shadow = (uint8_t)sh;
            o.id = u.id = id;
            o.user_id = (uint64_t)sqlite3_column_int64(st, 1);
            d11_str k = col_str(st, 2);
            if (k.n > sizeof idem) {
                rc = D11_EPROTO;
                break;
            }
            memcpy(idem, k.p, k.n);
            o.idem = (d11_str){idem, k.n};
            o.body_hash = (uint64_t)sqlite3_column_int64(st, 3);
            d11_str stn = col_str(st, 4);
            int status = cell_status_parse(stn.p, stn.n);
            if (status < 0) {
                d11_error("order %llu has unknown status %.*s", (unsigned long long)id, (int)stn.n, stn.p);
                rc = D11_EPROTO;
                break;
            }
            /* The insert carries pending; the update (if any) the final status, like the log. */
            o.status = ST_PENDING;
            u.status = (uint8_t)status;
            o.total = (uint64_t)sqlite3_column_int64(st, 5);
            if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
                d11_str p = col_str(st, 6);
                if (p.n > sizeof pay) {
                    rc = D11_EPROTO;
                    break;
                }
                memcpy(pay, p.p, p.n);
                u.payment = (d11_str){pay, p.n};
            }
            o.created_at = sqlite3_column_int64(st, 7);
            o.expires_at = sqlite3_column_int64(st, 8);
            u.updated_at = sqlite3_column_int64(st, 9);
        }
        if (o.nitems >= D11_ORDER_ITEMS_MAX) {
            rc = D11_EPROTO;
            break;
        }
        d11_str sku = col_str(st, 10);
        if (sku.n < 1 || sku.n > D11_SKU_BYTES_MAX) {
            rc = D11_EPROTO;
            break;
        }
        memcpy(skus[o.nitems], sku.p, sku.n);
        o.items[o.nitems] = (cell_op_item){{skus[o.nitems], sku.n}, (uint32_t)sqlite3_column_int64(st, 11),
                                            (uint64_t)sqlite3_column_int64(st, 12)};
        o.nitems++;
    }
    sqlite3_finalize(st);
    return rc;
}

static int cs_load(d11_store *base, d11_store_apply_fn *fn, void *ctx)
{
    cell_sqlite *s = (cell_sqlite *)base;
    d11_buf b;
    d11_buf_init(&b, 4096);
    int rc = 0;
    sqlite3_stmt *st = d11_sqlite_prepare(s->db, "SELECT sku, shadow, price_cents, granted, returned, sold FROM stock");
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        cell_op_stock k = {col_str(st, 0), (uint8_t)sqlite3_column_int(st, 1), (uint64_t)sqlite3_column_int64(st, 2),
                           (uint64_t)sqlite3_column_int64(st, 3), (uint64_t)sqlite3_column_int64(st, 4),
                           (uint64_t)sqlite3_column_int64(st, 5)};
        if (k.sku.n < 1 || k.sku.n > D11_SKU_BYTES_MAX || k.shadow > 1 || k.returned + k.sold > k.granted) {
            d11_error("stock row %.*s/%u is invalid", (int)k.sku.n, k.sku.p, k.shadow);
            rc = D11_EPROTO;
            break;
        }
        cell_op_stock_enc(&b, &k);
        rc = emit(&b, fn, ctx);
    }
    sqlite3_finalize(st);
    for (int sh = 0; sh < 2 && rc == 0; sh++) rc = load_orders(s, sh, &b, fn, ctx);
    static const char *last[2] = {"SELECT event_id, order_id, type, created_at FROM outbox ORDER BY event_id DESC LIMIT 1",
                                  "SELECT event_id, order_id, type, created_at FROM shadow_outbox ORDER BY event_id DESC LIMIT 1"};
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        st = d11_sqlite_prepare(s->db, last[sh]);
        if (sqlite3_step(st) == SQLITE_ROW) {
            cell_op_outbox e = {(uint8_t)sh, (uint64_t)sqlite3_column_int64(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
                                col_str(st, 2), {"", 0}, sqlite3_column_int64(st, 3)};
            cell_op_outbox_enc(&b, &e);
            rc = emit(&b, fn, ctx);
        }
        sqlite3_finalize(st);
    }
    d11_buf_free(&b);
    return rc;
}

static int cs_sync(d11_store *base)
{
    cell_sqlite *s = (cell_sqlite *)base;
    return d11_sqlite_sync(s->db);
}

static void cs_close(d11_store *base)
{
    cell_sqlite *s = (cell_sqlite *)base;
    for (int i = 0; i < 2; i++) {
        sqlite3_finalize(s->ins_order[i]);
        sqlite3_finalize(s->ins_item[i]);
        sqlite3_finalize(s->upd_order[i]);
        sqlite3_finalize(s->ins_outbox[i]);
        sqlite3_finalize(s->del_outbox[i]);
    }
    sqlite3_finalize(s->up_stock);
    sqlite3_finalize(s->mark_pruned);
    d11_sqlite_close(s->db);
    free(s);
}

static const d11_store_ops cell_sqlite_ops = {"sqlite", cs_load, cs_commit, cs_sync, cs_close};

d11_store *d11_cell_sqlite_open(const char *path, int durability)
{
    cell_sqlite *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &cell_sqlite_ops;
    s->durability = durability;
    if (d11_sqlite_open(path, durability, &s->db) < 0) {
        free(s);
        return NULL;
    }
    if (d11_sqlite_exec(s->db, SCHEMA) < 0) {
        d11_sqlite_close(s->db);
        free(s);
        return NULL;
    }
    static const char *pre[2] = {"", "shadow_"};
    char sql[512];
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO %sorders VALUES(?,?,?,?,?,?,NULL,?,?,?)", pre[i]);
        s->ins_order[i] = d11_sqlite_prepare(s->db, sql);
        snprintf(sql, sizeof sql, "INSERT INTO %sorder_items VALUES(NULL,?,?,?,?,?)", pre[i]);
        s->ins_item[i] = d11_sqlite_prepare(s->db, sql);
        snprintf(sql, sizeof sql, "UPDATE %sorders SET status=?, payment_id=?, updated_at=? WHERE order_id=?", pre[i]);
        s->upd_order[i] = d11_sqlite_prepare(s->db, sql);
        snprintf(sql, sizeof sql, "INSERT INTO %soutbox VALUES(?,?,?,?,?)", pre[i]);
        s->ins_outbox[i] = d11_sqlite_prepare(s->db, sql);
        snprintf(sql, sizeof sql, "DELETE FROM %soutbox WHERE event_id <= ?", pre[i]);
        s->del_outbox[i] = d11_sqlite_prepare(s->db, sql);
    }
    s->mark_pruned = d11_sqlite_prepare(s->db, "INSERT INTO outbox_pruned VALUES(?1, ?2) ON CONFLICT(shadow)"
                                               " DO UPDATE SET through = max(through, ?2)");
    s->up_stock = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO stock VALUES(?,?,?,?,?,?)");
    return &s->base;
}

d11_store *d11_cell_sqlite_open_ro(const char *path)
{
    cell_sqlite *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.ops = &cell_sqlite_ops;
    if (d11_sqlite_open_ro(path, &s->db) < 0) {
        free(s);
        return NULL;
    }
    return &s->base;
}
