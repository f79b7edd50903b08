/*
 * center_outbox_read.c — read committed center events from DATA/center.db (see
 * center_outbox_read.h). Every call is one short read transaction on a private read-only
 * connection (prepared statements, primary-key range scans): it never takes the write
 * lock. The statements are prepared on first use, so a file written by an older d11
 * (no center_outbox yet) opens fine and reads as empty until the center creates it.
 * Thread: the owner's (the center's loop thread).
 */
#include "center_outbox_read.h"
#include "outbox_read.h"

#include <sqlite3.h>
#include <stdbool.h>
#include <stdlib.h>

#include "../core/util.h"
#include "sqlite_util.h"

struct d11_center_outbox {
    sqlite3      *db;
    sqlite3_stmt *page, *head, *pruned, *oldest; /* NULL until the tables exist */
};


int d11_center_outbox_open(const char *path, d11_center_outbox **out)
{
    d11_center_outbox *r = calloc(1, sizeof *r);
    if (!r) return D11_ESTORE;
    int rc = sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        d11_error("center outbox reader %s: %s", path, r->db ? sqlite3_errmsg(r->db) : sqlite3_errstr(rc));
        d11_center_outbox_close(r);
        return D11_ESTORE;
    }
    sqlite3_busy_timeout(r->db, 50);
    *out = r;
    return 0;
}

void d11_center_outbox_close(d11_center_outbox *r)
{
    if (!r) return;
    sqlite3_finalize(r->page);
    sqlite3_finalize(r->head);
    sqlite3_finalize(r->pruned);
    sqlite3_finalize(r->oldest);
    sqlite3_close_v2(r->db);
    free(r);
}

static bool ready(d11_center_outbox *r)
{
    if (r->page && r->head && r->pruned && r->oldest) return true;
    if (!r->page)
        r->page = d11_sqlite_try_prepare(r->db, "SELECT event_id, type, sku, trace_id, payload, created_at FROM center_outbox"
                              " WHERE event_id > ? ORDER BY event_id LIMIT ?");
    if (!r->head) r->head = d11_sqlite_try_prepare(r->db, "SELECT max(event_id) FROM center_outbox");
    if (!r->pruned) r->pruned = d11_sqlite_try_prepare(r->db, "SELECT through FROM center_outbox_pruned WHERE id = 1");
    if (!r->oldest)
        r->oldest = d11_sqlite_try_prepare(r->db, "SELECT event_id, created_at FROM center_outbox WHERE event_id > ?"
                                " ORDER BY event_id LIMIT ?");
    return r->page && r->head && r->pruned && r->oldest;
}

static sqlite3_int64 clamp(uint64_t v) { return v > (uint64_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)v; }

int d11_center_outbox_bounds(d11_center_outbox *r, uint64_t *head, uint64_t *pruned)
{
    *head = *pruned = 0;
    if (!ready(r)) return 0; /* no table yet: nothing was ever written */
    int rc = sqlite3_step(r->head);
    if (rc == SQLITE_ROW) *head = (uint64_t)sqlite3_column_int64(r->head, 0);
    sqlite3_reset(r->head);
    if (rc != SQLITE_ROW) return D11_ESTORE;
    rc = sqlite3_step(r->pruned);
    if (rc == SQLITE_ROW) *pruned = (uint64_t)sqlite3_column_int64(r->pruned, 0);
    sqlite3_reset(r->pruned);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return D11_ESTORE;
    if (*pruned > *head) *head = *pruned; /* everything pruned: ids continue above it */
    return 0;
}

static const char *txt(sqlite3_stmt *st, int i, size_t *n)
{
    const char *p = (const char *)sqlite3_column_text(st, i);
    *n = p ? (size_t)sqlite3_column_bytes(st, i) : 0;
    return p ? p : "";
}

int d11_center_outbox_read(d11_center_outbox *r, uint64_t after, uint32_t limit, d11_center_event_fn *fn, void *ctx)
{
    if (!ready(r)) return 0;
    sqlite3_stmt *st = r->page;
    sqlite3_bind_int64(st, 1, clamp(after));
    sqlite3_bind_int64(st, 2, limit);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        d11_center_event e = {.event_id = (uint64_t)sqlite3_column_int64(st, 0),
                              .created_at = sqlite3_column_int64(st, 5)};
        e.type = txt(st, 1, &e.type_n);
        e.sku = txt(st, 2, &e.sku_n);
        e.trace_id = txt(st, 3, &e.trace_id_n);
        e.data = txt(st, 4, &e.data_n);
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

int d11_center_outbox_prune_point(d11_center_outbox *r, uint64_t through, int64_t cutoff_ms, uint32_t max_rows,
                                  uint64_t *upto, uint64_t *head, int64_t *oldest_at)
{
    uint64_t pruned;
    *upto = 0;
    *oldest_at = 0;
    int rc = d11_center_outbox_bounds(r, head, &pruned);
    if (rc < 0 || !ready(r)) return rc;
    return d11_outbox_prune_scan(r->oldest, pruned, max_rows, through, cutoff_ms, *head, upto, oldest_at);
}
