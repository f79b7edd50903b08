/*
 * outbox_read.c — read committed outbox events of a cell's SQLite file (outbox_read.h).
 * Every call is one short read transaction on a private read-only connection (prepared
 * statements, primary-key range scans): it never takes the write lock.
 * Thread: the owner's (the cell's logic thread).
 */
#include "outbox_read.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>

#include "../core/util.h"
#include "sqlite_util.h"

struct d11_outbox_reader {
    sqlite3      *db;
    sqlite3_stmt *page[2], *head[2], *oldest[2];
    sqlite3_stmt *pruned; /* NULL while the table does not exist (no retention ran yet) */
};


int d11_outbox_reader_open(const char *path, d11_outbox_reader **out)
{
    d11_outbox_reader *r = calloc(1, sizeof *r);
    if (!r) return D11_ESTORE;
    int rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(r->db, 50);
        static const char *pg[2] = {
            "SELECT event_id, order_id, type, payload, created_at FROM outbox WHERE event_id > ?"
            " ORDER BY event_id LIMIT ?",
            "SELECT event_id, order_id, type, payload, created_at FROM shadow_outbox WHERE event_id > ?"
            " ORDER BY event_id LIMIT ?"};
        static const char *hd[2] = {"SELECT max(event_id) FROM outbox", "SELECT max(event_id) FROM shadow_outbox"};
        static const char *od[2] = {
            "SELECT event_id, created_at FROM outbox WHERE event_id > ? ORDER BY event_id LIMIT ?",
            "SELECT event_id, created_at FROM shadow_outbox WHERE event_id > ? ORDER BY event_id LIMIT ?"};
        for (int i = 0; i < 2; i++) {
            r->page[i] = d11_sqlite_try_prepare(r->db, pg[i]);
            r->head[i] = d11_sqlite_try_prepare(r->db, hd[i]);
            r->oldest[i] = d11_sqlite_try_prepare(r->db, od[i]);
            if (!r->page[i] || !r->head[i] || !r->oldest[i]) rc = SQLITE_ERROR;
        }
    }
    if (rc != SQLITE_OK) {
        d11_error("outbox reader %s: %s", path, r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        d11_outbox_reader_close(r);
        return D11_ESTORE;
    }
    *out = r;
    return 0;
}

void d11_outbox_reader_close(d11_outbox_reader *r)
{
    if (!r) return;
    for (int i = 0; i < 2; i++) {
        sqlite3_finalize(r->page[i]);
        sqlite3_finalize(r->head[i]);
        sqlite3_finalize(r->oldest[i]);
    }
    sqlite3_finalize(r->pruned);
    sqlite3_close_v2(r->db);
    free(r);
}

int d11_outbox_bounds(d11_outbox_reader *r, int shadow, uint64_t *head, uint64_t *pruned)
{
    D11_ASSERT(shadow == 0 || shadow == 1);
    *head = *pruned = 0;
    sqlite3_stmt *st = r->head[shadow];
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *head = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return D11_ESTORE;
    if (!r->pruned) r->pruned = d11_sqlite_try_prepare(r->db, "SELECT through FROM outbox_pruned WHERE shadow = ?");
    if (r->pruned) {
        sqlite3_bind_int(r->pruned, 1, shadow);
        if (sqlite3_step(r->pruned) == SQLITE_ROW) *pruned = (uint64_t)sqlite3_column_int64(r->pruned, 0);
        sqlite3_reset(r->pruned);
    }
    if (*pruned > *head) *head = *pruned; /* everything pruned: ids continue above it */
    return 0;
}

int d11_outbox_read(d11_outbox_reader *r, int shadow, uint64_t after, uint32_t limit, d11_outbox_event_fn *fn,
                    void *ctx)
{
    D11_ASSERT(shadow == 0 || shadow == 1);
    sqlite3_stmt *st = r->page[shadow];
    sqlite3_bind_int64(st, 1, after > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)after);
    sqlite3_bind_int64(st, 2, limit);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        d11_outbox_event e = {
            .event_id = (uint64_t)sqlite3_column_int64(st, 0),
            .order_id = (uint64_t)sqlite3_column_int64(st, 1),
            .type = (const char *)sqlite3_column_text(st, 2),
            .type_n = (size_t)sqlite3_column_bytes(st, 2),
            .payload = (const char *)sqlite3_column_text(st, 3),
            .payload_n = (size_t)sqlite3_column_bytes(st, 3),
            .created_at = sqlite3_column_int64(st, 4),
        };
        if (!e.type) e.type = "";
        if (!e.payload) e.payload = "";
        int c = fn(ctx, &e);
        if (c < 0) {
            sqlite3_reset(st);
            return c;
        }
        n++;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? n : D11_ESTORE;
}

int d11_outbox_prune_point(d11_outbox_reader *r, int shadow, uint64_t through, int64_t cutoff_ms, uint32_t max_rows,
                           uint64_t *upto, uint64_t *head, int64_t *oldest_at)
{
    uint64_t pruned;
    *upto = 0;
    *oldest_at = 0;
    int rc = d11_outbox_bounds(r, shadow, head, &pruned);
    if (rc < 0) return rc;
    return d11_outbox_prune_scan(r->oldest[shadow], pruned, max_rows, through, cutoff_ms, *head, upto, oldest_at);
}

int d11_outbox_prune_scan(sqlite3_stmt *st, uint64_t pruned, uint32_t max_rows, uint64_t through, int64_t cutoff_ms,
                          uint64_t head, uint64_t *upto, int64_t *oldest_at)
{
    int rc;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(pruned > (uint64_t)INT64_MAX ? INT64_MAX : pruned));
    sqlite3_bind_int64(st, 2, max_rows);
    bool first = true, go = true;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
        int64_t at = sqlite3_column_int64(st, 1);
        if (first) *oldest_at = at;
        first = false;
        if (!go || id > through || at >= cutoff_ms || id >= head) {
            go = false;
            continue;
        }
        *upto = id;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : D11_ESTORE;
}
