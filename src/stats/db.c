/*
 * db.c — DATA/stats.db (see db.h for the exactly-once contract). Schema:
 *
 *   meta(k TEXT PRIMARY KEY, v)        cursor, wm, events, late_1s, late_1m, late_day
 *   win(kind, dim, key, start, <D11_V_* columns>, PRIMARY KEY(kind, dim, key, start))
 *       kind 0 = 1 s, 1 = 1 min, 2 = UTC day; dim 0 = totals (key ""), 1 = SKU, 2 = category
 *
 * Rows are added with an UPSERT (col = col + excluded.col), in the batch's first-use
 * order. Pruning (same transaction): per kind, rows starting before
 * newest_start(watermark) - keep * len are deleted. Thread: the connection's owner.
 */
#include "db.h"

#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct d11_stats_db {
    sqlite3      *db;
    bool          ro;
    sqlite3_stmt *upsert, *get_meta, *put_meta, *prune;
};

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v);"
    "CREATE TABLE IF NOT EXISTS win(kind INTEGER NOT NULL, dim INTEGER NOT NULL, key TEXT NOT NULL,"
    " start INTEGER NOT NULL, orders_created INTEGER NOT NULL, orders_paid INTEGER NOT NULL,"
    " orders_cancelled INTEGER NOT NULL, orders_expired INTEGER NOT NULL, gmv_created_cents INTEGER NOT NULL,"
    " gmv_paid_cents INTEGER NOT NULL, units_created INTEGER NOT NULL, units_paid INTEGER NOT NULL,"
    " late INTEGER NOT NULL, PRIMARY KEY(kind, dim, key, start)) WITHOUT ROWID;";

_Static_assert(D11_V_N == 9, "the SQL below lists 9 value columns");

static const char *UPSERT =
    "INSERT INTO win(kind,dim,key,start,orders_created,orders_paid,orders_cancelled,orders_expired,"
    "gmv_created_cents,gmv_paid_cents,units_created,units_paid,late) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(kind,dim,key,start) DO UPDATE SET orders_created=orders_created+excluded.orders_created,"
    " orders_paid=orders_paid+excluded.orders_paid, orders_cancelled=orders_cancelled+excluded.orders_cancelled,"
    " orders_expired=orders_expired+excluded.orders_expired,"
    " gmv_created_cents=gmv_created_cents+excluded.gmv_created_cents,"
    " gmv_paid_cents=gmv_paid_cents+excluded.gmv_paid_cents, units_created=units_created+excluded.units_created,"
    " units_paid=units_paid+excluded.units_paid, late=late+excluded.late";

static const char *const late_key[D11_WIN_KINDS] = {"late_1s", "late_1m", "late_day"};

static int fail(d11_stats_db *d, const char *what)
{
    d11_error("stats.db: %s: %s", what, sqlite3_errmsg(d->db));
    return -EIO;
}

int d11_stats_db_open(const char *path, bool readonly, d11_stats_db **out)
{
    d11_stats_db *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->ro = readonly;
    struct stat sb;
    bool fresh = stat(path, &sb) < 0 || sb.st_size == 0;
    int fl = readonly ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    if (sqlite3_open_v2(path, &d->db, fl | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        d11_error("stats.db: cannot open %s: %s", path, d->db ? sqlite3_errmsg(d->db) : "out of memory");
        d11_stats_db_close(d);
        return -EIO;
    }
    sqlite3_busy_timeout(d->db, 2000);
    if (!readonly) {
        /* A new file is switched to WAL with an in-memory journal: no transient
         * stats.db-journal appears in the data directory (nothing to lose in a new file). */
        if (fresh && (sqlite3_exec(d->db, "PRAGMA journal_mode=MEMORY;", NULL, NULL, NULL) != SQLITE_OK ||
                      sqlite3_exec(d->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK)) {
            int rc = fail(d, "create");
            d11_stats_db_close(d);
            return rc;
        }
        if (sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(d->db, SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(d->db, UPSERT, -1, &d->upsert, NULL) != SQLITE_OK ||
            sqlite3_prepare_v2(d->db, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)", -1, &d->put_meta, NULL) !=
                SQLITE_OK ||
            sqlite3_prepare_v2(d->db, "DELETE FROM win WHERE kind = ? AND start < ?", -1, &d->prune, NULL) != SQLITE_OK) {
            int rc = fail(d, "schema");
            d11_stats_db_close(d);
            return rc;
        }
    }
    if (sqlite3_prepare_v2(d->db, "SELECT v FROM meta WHERE k = ?", -1, &d->get_meta, NULL) != SQLITE_OK) {
        int rc = fail(d, "prepare");
        d11_stats_db_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void d11_stats_db_close(d11_stats_db *d)
{
    if (!d) return;
    sqlite3_finalize(d->upsert);
    sqlite3_finalize(d->get_meta);
    sqlite3_finalize(d->put_meta);
    sqlite3_finalize(d->prune);
    sqlite3_close(d->db);
    free(d);
}

/* meta value k: its integer into *iv and/or its text into txt; 0 absent, 1 found, <0. */
static int meta_get(d11_stats_db *d, const char *k, int64_t *iv, char *txt, size_t cap)
{
    sqlite3_stmt *s = d->get_meta;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, k, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_DONE) return 0;
    if (rc != SQLITE_ROW) return fail(d, "read meta");
    if (iv) *iv = sqlite3_column_int64(s, 0);
    if (txt) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        snprintf(txt, cap, "%s", t ? (const char *)t : "");
    }
    return 1;
}

static int meta_put_int(d11_stats_db *d, const char *k, int64_t v)
{
    sqlite3_stmt *s = d->put_meta;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, v);
    return sqlite3_step(s) == SQLITE_DONE ? 0 : fail(d, "write meta");
}

static int state_read(d11_stats_db *d, d11_stats_state *st)
{
    memset(st, 0, sizeof *st);
    int64_t v = 0;
    if (meta_get(d, "cursor", NULL, st->cursor, sizeof st->cursor) < 0 || meta_get(d, "wm", &st->wm, NULL, 0) < 0 ||
        meta_get(d, "events", &v, NULL, 0) < 0)
        return -EIO;
    st->events = (uint64_t)v;
    for (int k = 0; k < D11_WIN_KINDS; k++) {
        v = 0;
        if (meta_get(d, late_key[k], &v, NULL, 0) < 0) return -EIO;
        st->late[k] = (uint64_t)v;
    }
    return 0;
}

int d11_stats_db_state(d11_stats_db *d, d11_stats_state *st)
{
    if (sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return fail(d, "begin");
    int rc = state_read(d, st);
    sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

static int apply(d11_stats_db *d, const char *next, const d11_stats_batch *b, const d11_stats_state *st)
{
    for (int i = 0; i < b->nused; i++) {
        const d11_stats_row *r = &b->slot[b->used_idx[i]];
        sqlite3_stmt *s = d->upsert;
        sqlite3_reset(s);
        sqlite3_bind_int(s, 1, r->kind);
        sqlite3_bind_int(s, 2, r->dim);
        sqlite3_bind_text(s, 3, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 4, r->start);
        for (int c = 0; c < D11_V_N; c++) sqlite3_bind_int64(s, 5 + c, (int64_t)r->v[c]);
        if (sqlite3_step(s) != SQLITE_DONE) return fail(d, "add window row");
    }
    if (b->wm > 0)
        for (int k = 0; k < D11_WIN_KINDS; k++) {
            sqlite3_stmt *s = d->prune;
            sqlite3_reset(s);
            sqlite3_bind_int(s, 1, k);
            sqlite3_bind_int64(s, 2, d11_stats_win_start(k, b->wm) - (int64_t)d11_stats_keep[k] * d11_stats_win_ms[k]);
            if (sqlite3_step(s) != SQLITE_DONE) return fail(d, "prune windows");
        }
    sqlite3_stmt *s = d->put_meta;
    sqlite3_reset(s);
    sqlite3_bind_text(s, 1, "cursor", -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, next, -1, SQLITE_STATIC);
    if (sqlite3_step(s) != SQLITE_DONE) return fail(d, "write cursor");
    if (meta_put_int(d, "wm", b->wm) < 0 || meta_put_int(d, "events", (int64_t)(st->events + (uint64_t)b->nevents)) < 0)
        return -EIO;
    for (int k = 0; k < D11_WIN_KINDS; k++)
        if (b->late[k] && meta_put_int(d, late_key[k], (int64_t)(st->late[k] + b->late[k])) < 0) return -EIO;
    return 0;
}

int d11_stats_db_commit(d11_stats_db *d, const char *expect, const char *next, const d11_stats_batch *b,
                        void (*before_commit)(void *), void *ctx)
{
    D11_ASSERT(!d->ro);
    if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return fail(d, "begin");
    d11_stats_state st;
    int rc = state_read(d, &st);
    if (rc == 0 && strcmp(st.cursor, expect) != 0) rc = D11_STATS_ECONFLICT;
    if (rc == 0) rc = apply(d, next, b, &st);
    if (rc == 0 && before_commit) before_commit(ctx);
    if (rc == 0 && sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) rc = fail(d, "commit");
    if (rc < 0) sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* ---- reading ---- */

static void row_json(d11_buf *o, sqlite3_stmt *s, int col0, int kind, int64_t wm, bool totals)
{
    int64_t start = sqlite3_column_int64(s, col0);
    char iso[25];
    d11_fmt_iso8601(start, iso);
    d11_buf_printf(o, "{\"start\":\"%s\",\"start_ms\":%" PRId64 ",\"end_ms\":%" PRId64 ",\"closed\":%s", iso, start,
                   start + d11_stats_win_ms[kind], d11_stats_closed(kind, start, wm) ? "true" : "false");
    for (int c = 0; c < D11_V_N; c++) {
        if (!totals && (c == D11_V_CANCELLED || c == D11_V_EXPIRED || c == D11_V_LATE)) continue;
        d11_buf_printf(o, ",\"%s\":%" PRId64, d11_stats_col[c], (int64_t)sqlite3_column_int64(s, col0 + 1 + c));
    }
    d11_buf_puts(o, "}");
}

#define COLS "start,orders_created,orders_paid,orders_cancelled,orders_expired,gmv_created_cents,gmv_paid_cents," \
             "units_created,units_paid,late"

/* The SKUs (dim 1) or categories (dim 2) of the day window `day`, by units paid. */
static int render_top(d11_stats_db *d, int dim, int64_t day, int top, int64_t wm, d11_buf *o)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT key," COLS " FROM win WHERE kind = 2 AND dim = ? AND start = ?"
                           " ORDER BY units_paid DESC, units_created DESC, key LIMIT ?",
                           -1, &s, NULL) != SQLITE_OK)
        return fail(d, "prepare top");
    sqlite3_bind_int(s, 1, dim);
    sqlite3_bind_int64(s, 2, day);
    sqlite3_bind_int(s, 3, top);
    int rc, n = 0;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n++) d11_buf_puts(o, ",");
        const char *k = (const char *)sqlite3_column_text(s, 0);
        size_t kl = (size_t)sqlite3_column_bytes(s, 0);
        size_t mark = o->len;
        row_json(o, s, 1, D11_WIN_DAY, wm, false);
        /* turn {"start"... into {"sku":K,"start"... */
        d11_buf tmp;
        d11_buf_init(&tmp, 96);
        d11_buf_puts(&tmp, dim == D11_DIM_SKU ? "{\"sku\":" : "{\"category\":");
        d11_buf_json_str(&tmp, k ? k : "", kl);
        d11_buf_puts(&tmp, ",");
        d11_buf_append(&tmp, o->data + mark + 1, o->len - mark - 1);
        o->len = mark;
        d11_buf_append(o, tmp.data, tmp.len);
        d11_buf_free(&tmp);
    }
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : fail(d, "read top");
}

static int render_tx(d11_stats_db *d, const d11_stats_query *q, d11_buf *o)
{
    d11_stats_state st;
    if (state_read(d, &st) < 0) return -EIO;
    d11_buf_printf(o, "{\"window\":\"%s\",\"cursor\":", d11_stats_win_name[q->kind]);
    d11_buf_json_str(o, st.cursor, strlen(st.cursor));
    d11_buf_printf(o, ",\"watermark_ms\":%" PRId64 ",\"events\":%" PRIu64 ",\"late_total\":%" PRIu64, st.wm, st.events,
                   st.late[q->kind]);
    if (q->sku) {
        d11_buf_puts(o, ",\"sku\":");
        d11_buf_json_str(o, q->sku, strlen(q->sku));
    }
    d11_buf_puts(o, ",\"windows\":[");
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT " COLS " FROM win WHERE kind = ? AND dim = ? AND key = ? AND start >= ?"
                           " ORDER BY start DESC LIMIT ?",
                           -1, &s, NULL) != SQLITE_OK)
        return fail(d, "prepare windows");
    sqlite3_bind_int(s, 1, q->kind);
    sqlite3_bind_int(s, 2, q->sku ? D11_DIM_SKU : D11_DIM_TOTAL);
    sqlite3_bind_text(s, 3, q->sku ? q->sku : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, q->since_ms);
    sqlite3_bind_int(s, 5, q->limit);
    int rc, n = 0;
    int64_t newest = -1;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (n++) d11_buf_puts(o, ",");
        if (newest < 0) newest = sqlite3_column_int64(s, 0);
        row_json(o, s, 0, q->kind, st.wm, q->sku == NULL);
    }
    sqlite3_finalize(s);
    if (rc != SQLITE_DONE) return fail(d, "read windows");
    d11_buf_puts(o, "]");
    if (q->kind == D11_WIN_DAY && !q->sku && q->top > 0) {
        int64_t day = newest >= 0 ? newest : d11_stats_win_start(D11_WIN_DAY, st.wm);
        d11_buf_printf(o, ",\"day_start_ms\":%" PRId64 ",\"skus\":[", day);
        if (render_top(d, D11_DIM_SKU, day, q->top, st.wm, o) < 0) return -EIO;
        d11_buf_puts(o, "],\"categories\":[");
        if (render_top(d, D11_DIM_CATEGORY, day, q->top, st.wm, o) < 0) return -EIO;
        d11_buf_puts(o, "]");
    }
    d11_buf_puts(o, "}");
    return 0;
}

int d11_stats_db_render(d11_stats_db *d, const d11_stats_query *q, d11_buf *o)
{
    D11_ASSERT(q->kind >= 0 && q->kind < D11_WIN_KINDS && q->limit >= 1 && q->limit <= D11_STATS_LIMIT_MAX);
    if (sqlite3_exec(d->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return fail(d, "begin");
    size_t mark = o->len;
    int rc = render_tx(d, q, o);
    sqlite3_exec(d->db, "COMMIT", NULL, NULL, NULL);
    if (rc < 0) o->len = mark;
    return rc;
}

int d11_stats_db_top_skus(d11_stats_db *d, int64_t day, int n, char (*keys)[D11_STATS_KEY_BYTES_MAX + 1])
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(d->db,
                           "SELECT key FROM win WHERE kind = 2 AND dim = 1 AND start = ?"
                           " ORDER BY units_paid DESC, units_created DESC, key LIMIT ?",
                           -1, &s, NULL) != SQLITE_OK)
        return fail(d, "prepare top");
    sqlite3_bind_int64(s, 1, day);
    sqlite3_bind_int(s, 2, n);
    int rc, k = 0;
    while (k < n && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        snprintf(keys[k++], D11_STATS_KEY_BYTES_MAX + 1, "%s", t ? (const char *)t : "");
    }
    sqlite3_finalize(s);
    return k;
}
