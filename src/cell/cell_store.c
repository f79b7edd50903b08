/*
 * cell_store.c — the cell's storage thread: commits one batch per SQLite transaction.
 *
 * Schema (docs/storage.md has the column meanings): orders / order_items and their
 * shadow_ twins are append-mostly tables keyed by INTEGER PRIMARY KEY (order ids are
 * roughly time-ordered: milliseconds in the high bits, item rows take the next rowid), with NO secondary index: every random
 * index insert costs ~15-20 us per row here, against ~1.5 us for an append. The
 * idempotency lookup and the per-user order list are in-memory structures rebuilt at
 * start from these tables. `stock` holds one row per (sku, shadow): the cell's ledger,
 * rewritten once per batch per SKU touched — a hot SKU costs one row update per batch,
 * not one per order.
 *
 * Failure: if any statement or the COMMIT fails, the transaction is rolled back and the
 * batch is returned with result = D11_ESTORE; the logic thread then answers its requests
 * 503 and exits so that recovery rebuilds memory from what is durable.
 */
#include "cell_int.h"
#include "../core/fault.h"
#include "../rpc/wire.h"
#include "../store/sqlite_util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

const char *const cell_status_name[4] = {"pending_payment", "paid", "cancelled", "expired"};

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
    " type TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL);";

int cell_store_open(cell_store *s, const char *path, int durability, int64_t async_flush_ms)
{
    memset(s, 0, sizeof *s);
    s->durability = durability;
    s->async_flush_ms = async_flush_ms;
    if (d11_sqlite_open(path, durability, &s->db) < 0) return D11_ESTORE;
    if (d11_sqlite_exec(s->db, SCHEMA) < 0) return D11_ESTORE;
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
    }
    s->up_stock = d11_sqlite_prepare(s->db, "INSERT OR REPLACE INTO stock VALUES(?,?,?,?,?,?)");
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->done_fd == -1) return -errno;
    return 0;
}

#define BIND_STR(st, i, p, n) sqlite3_bind_text(st, i, p, (int)(n), SQLITE_STATIC)

static int apply_ops(cell_store *s, cell_batch *b)
{
    d11_wdec d;
    d11_wdec_init(&d, b->ops.data, b->ops.len);
    sqlite3 *db = s->db;
    for (uint32_t k = 0; k < b->nops; k++) {
        uint8_t op = d11_wdec_u8(&d);
        size_t n1, n2;
        const char *p1, *p2;
        switch (op) {
        case CELL_OP_ORDER_INSERT: {
            int sh = d11_wdec_u8(&d) & 1;
            sqlite3_stmt *st = s->ins_order[sh];
            uint64_t id = d11_wdec_u64(&d);
            sqlite3_bind_int64(st, 1, (int64_t)id);
            sqlite3_bind_int64(st, 2, (int64_t)d11_wdec_u64(&d));
            p1 = d11_wdec_str(&d, &n1);
            BIND_STR(st, 3, p1 ? p1 : "", n1);
            sqlite3_bind_int64(st, 4, (int64_t)d11_wdec_u64(&d));
            uint8_t status = d11_wdec_u8(&d);
            sqlite3_bind_text(st, 5, cell_status_name[status & 3], -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 6, (int64_t)d11_wdec_u64(&d));
            int64_t created = (int64_t)d11_wdec_u64(&d);
            sqlite3_bind_int64(st, 7, created);
            sqlite3_bind_int64(st, 8, (int64_t)d11_wdec_u64(&d));
            sqlite3_bind_int64(st, 9, created);
            if (d.err) return D11_EPROTO;
            if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
            uint8_t n = d11_wdec_u8(&d);
            for (uint8_t i = 0; i < n; i++) {
                sqlite3_stmt *it = s->ins_item[sh];
                p1 = d11_wdec_str(&d, &n1);
                uint32_t qty = d11_wdec_u32(&d);
                uint64_t price = d11_wdec_u64(&d);
                if (d.err) return D11_EPROTO;
                sqlite3_bind_int64(it, 1, (int64_t)id);
                sqlite3_bind_int64(it, 2, i);
                BIND_STR(it, 3, p1, n1);
                sqlite3_bind_int64(it, 4, qty);
                sqlite3_bind_int64(it, 5, (int64_t)price);
                if (d11_sqlite_step_done(db, it) < 0) return D11_ESTORE;
            }
            break;
        }
        case CELL_OP_ORDER_UPDATE: {
            int sh = d11_wdec_u8(&d) & 1;
            sqlite3_stmt *st = s->upd_order[sh];
            uint64_t id = d11_wdec_u64(&d);
            uint8_t status = d11_wdec_u8(&d);
            p1 = d11_wdec_str(&d, &n1);
            int64_t upd = (int64_t)d11_wdec_u64(&d);
            if (d.err) return D11_EPROTO;
            sqlite3_bind_text(st, 1, cell_status_name[status & 3], -1, SQLITE_STATIC);
            if (n1) BIND_STR(st, 2, p1, n1);
            else sqlite3_bind_null(st, 2);
            sqlite3_bind_int64(st, 3, upd);
            sqlite3_bind_int64(st, 4, (int64_t)id);
            if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
            if (sqlite3_changes(db) != 1) {
                d11_error("update of order %llu touched %d rows", (unsigned long long)id, sqlite3_changes(db));
                return D11_ESTORE;
            }
            break;
        }
        case CELL_OP_STOCK: {
            sqlite3_stmt *st = s->up_stock;
            p1 = d11_wdec_str(&d, &n1);
            uint8_t sh = d11_wdec_u8(&d);
            uint64_t price = d11_wdec_u64(&d), g = d11_wdec_u64(&d), r = d11_wdec_u64(&d), so = d11_wdec_u64(&d);
            if (d.err) return D11_EPROTO;
            D11_ASSERT(r + so <= g); /* a cell never holds a negative allotment */
            BIND_STR(st, 1, p1, n1);
            sqlite3_bind_int64(st, 2, sh);
            sqlite3_bind_int64(st, 3, (int64_t)price);
            sqlite3_bind_int64(st, 4, (int64_t)g);
            sqlite3_bind_int64(st, 5, (int64_t)r);
            sqlite3_bind_int64(st, 6, (int64_t)so);
            if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
            break;
        }
        case CELL_OP_OUTBOX: {
            int sh = d11_wdec_u8(&d) & 1;
            sqlite3_stmt *st = s->ins_outbox[sh];
            uint64_t ev = d11_wdec_u64(&d), oid = d11_wdec_u64(&d);
            p1 = d11_wdec_str(&d, &n1);
            p2 = d11_wdec_blob(&d, &n2);
            int64_t created = (int64_t)d11_wdec_u64(&d);
            if (d.err) return D11_EPROTO;
            sqlite3_bind_int64(st, 1, (int64_t)ev);
            sqlite3_bind_int64(st, 2, (int64_t)oid);
            BIND_STR(st, 3, p1, n1);
            BIND_STR(st, 4, p2, n2);
            sqlite3_bind_int64(st, 5, created);
            if (d11_sqlite_step_done(db, st) < 0) return D11_ESTORE;
            break;
        }
        default: return D11_EPROTO;
        }
    }
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

static int commit_batch(cell_store *s, cell_batch *b)
{
    if (b->nops == 0) return 0;
    s->commits++;
    if ((s->fail_commit_at && s->commits == s->fail_commit_at) ||
        d11_fault(D11_FP_STORE_COMMIT).action == D11_FA_FAIL) {
        d11_error("fault injection: failing commit #%llu", (unsigned long long)s->commits);
        return D11_ESTORE;
    }
    if (d11_sqlite_exec(s->db, "BEGIN") < 0) return D11_ESTORE;
    int rc = apply_ops(s, b);
    if (rc == 0 && d11_sqlite_exec(s->db, "COMMIT") < 0) rc = D11_ESTORE;
    if (rc != 0) {
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (s->durability == D11_DUR_ASYNC) {
        int64_t now = d11_mono_ms();
        if (now - s->last_sync_ms >= s->async_flush_ms) {
            (void)d11_sqlite_sync(s->db);
            s->last_sync_ms = now;
        }
    }
    return 0;
}

static void *store_main(void *arg)
{
    cell_store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->todo && !s->quit) pthread_cond_wait(&s->cv, &s->mu);
        cell_batch *b = s->todo;
        s->todo = NULL;
        bool quit = s->quit;
        pthread_mutex_unlock(&s->mu);
        if (!b) {
            if (quit) break;
            continue;
        }
        int64_t t0 = d11_mono_us();
        b->result = commit_batch(s, b);
        b->commit_us = d11_mono_us() - t0;
        pthread_mutex_lock(&s->mu);
        s->done = b;
        pthread_mutex_unlock(&s->mu);
        uint64_t one = 1;
        (void)!write(s->done_fd, &one, sizeof one);
    }
    return NULL;
}

int cell_store_start(cell_store *s)
{
    s->last_sync_ms = d11_mono_ms();
    int rc = pthread_create(&s->thread, NULL, store_main, s);
    return rc ? -rc : 0;
}

void cell_store_submit(cell_store *s, cell_batch *b)
{
    pthread_mutex_lock(&s->mu);
    D11_ASSERT(s->todo == NULL && s->done == NULL);
    s->todo = b;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

cell_batch *cell_store_collect(cell_store *s)
{
    uint64_t v;
    (void)!read(s->done_fd, &v, sizeof v);
    pthread_mutex_lock(&s->mu);
    cell_batch *b = s->done;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    return b;
}

void cell_store_stop(cell_store *s)
{
    pthread_mutex_lock(&s->mu);
    s->quit = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    if (s->durability == D11_DUR_ASYNC) (void)d11_sqlite_sync(s->db);
    d11_sqlite_close(s->db);
    close(s->done_fd);
}
