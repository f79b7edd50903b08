/*
 * pg_util.c — PostgreSQL helpers of the storage seam (see pg_util.h).
 *
 * Pipelined transactions run on a NON-BLOCKING connection: while the whole transaction is
 * being written, the server's answers are read into libpq's buffer (PQconsumeInput), so a
 * long pipeline can never dead-lock with both sides waiting to write. One thread at a time
 * per connection (the owning store's).
 */
#include "pg_util.h"
#include "../core/config.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool d11_pg_is_url(const char *s)
{
    if (!s || !s[0]) return false;
    return !strncmp(s, "postgresql://", 13) || !strncmp(s, "postgres://", 11) || strchr(s, '=') != NULL;
}

void d11_pg_redact(const char *url, char *out, size_t outlen)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    size_t len = 0;
    out[0] = 0;
    if (!opts) {
        snprintf(out, outlen, "(unparsable connection string)");
        PQfreemem(err);
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !o->val[0] || !strcmp(o->keyword, "password")) continue;
        int n = snprintf(out + len, outlen - len, "%s%s=%s", len ? " " : "", o->keyword, o->val);
        if (n < 0 || (size_t)n >= outlen - len) break;
        len += (size_t)n;
    }
    PQconninfoFree(opts);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

int d11_pg_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : D11_ESTORE;
    if (rc) d11_error("postgresql: %.80s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    return rc;
}

/* Apply the migrations not yet recorded, each in its own transaction. */
static int migrate(PGconn *c, const char *schema, const char *const *mig, int n)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "CREATE SCHEMA IF NOT EXISTS %s;"
             "CREATE TABLE IF NOT EXISTS %s.migrations(version INTEGER PRIMARY KEY,"
             " applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
             "SET search_path TO %s",
             schema, schema, schema);
    if (d11_pg_exec(c, sql) < 0) return D11_ESTORE;
    for (int v = 0; v < n; v++) {
        if (d11_pg_exec(c, "BEGIN") < 0) return D11_ESTORE;
        /* The lock serialises two processes opening the same schema (a misconfiguration
         * the data-directory lock cannot see when the URL is shared). */
        snprintf(sql, sizeof sql, "LOCK TABLE %s.migrations IN EXCLUSIVE MODE", schema);
        if (d11_pg_exec(c, sql) < 0) goto fail;
        char vs[16];
        snprintf(vs, sizeof vs, "%d", v + 1);
        const char *p[1] = {vs};
        snprintf(sql, sizeof sql, "SELECT 1 FROM %s.migrations WHERE version = $1", schema);
        PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
        bool have = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!ok) goto fail;
        if (!have) {
            if (d11_pg_exec(c, mig[v]) < 0) goto fail;
            snprintf(sql, sizeof sql, "INSERT INTO %s.migrations(version) VALUES (%d)", schema, v + 1);
            if (d11_pg_exec(c, sql) < 0) goto fail;
            d11_info("postgresql: schema %s migrated to version %d", schema, v + 1);
        }
        if (d11_pg_exec(c, "COMMIT") < 0) return D11_ESTORE;
    }
    return 0;
fail:
    (void)d11_pg_exec(c, "ROLLBACK");
    return D11_ESTORE;
}

int d11_pg_connect(const char *url, const char *schema, int durability, const char *const *migrations,
                   int nmigrations, int64_t wait_ms, PGconn **out)
{
    D11_ASSERT(url && schema && out);
    char shown[512];
    d11_pg_redact(url, shown, sizeof shown);
    int64_t waited = 0, backoff = D11_PG_BACKOFF_MS_MIN;
    PGconn *c;
    for (;;) {
        c = PQconnectdb(url);
        if (PQstatus(c) == CONNECTION_OK) break;
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
        for (char *q = msg; *q; q++)
            if (*q == '\n') *q = ' ';
        PQfinish(c);
        if (waited >= wait_ms) {
            d11_error("postgresql: cannot connect to %s: %s", shown, msg);
            return D11_ESTORE;
        }
        d11_warn("postgresql: cannot connect to %s (%s); retrying in %lld ms", shown, msg, (long long)backoff);
        sleep_ms(backoff);
        waited += backoff;
        backoff = backoff * 2 > D11_PG_BACKOFF_MS_MAX ? D11_PG_BACKOFF_MS_MAX : backoff * 2;
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SET synchronous_commit TO %s; SET client_min_messages TO warning;"
             " SET plan_cache_mode TO force_generic_plan",
             durability == D11_DUR_SYNC ? "on" : "off");
    if (d11_pg_exec(c, sql) < 0) goto fail;
    if (migrations) {
        if (migrate(c, schema, migrations, nmigrations) < 0) goto fail;
    } else {
        const char *p[1] = {schema};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL, p, NULL, NULL, 0);
        bool have = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        PQclear(r);
        if (!have) {
            PQfinish(c);
            return -ENOENT;
        }
    }
    snprintf(sql, sizeof sql, "SET search_path TO %s", schema);
    if (d11_pg_exec(c, sql) < 0) goto fail;
    if (PQsetnonblocking(c, 1) != 0) goto fail;
    d11_info("postgresql: %s schema %s (synchronous_commit %s)", shown, schema,
             durability == D11_DUR_SYNC ? "on" : "off");
    *out = c;
    return 0;
fail:
    d11_error("postgresql: cannot prepare schema %s on %s", schema, shown);
    PQfinish(c);
    return D11_ESTORE;
}

/* ---- pipelined transactions ---- */

static int tx_send_raw(d11_pg_tx *t, const char *name, const char *sql, int n, const char *const *p, const int *lens,
                       const int *fmts, bool one)
{
    if (t->nsent >= D11_PG_PIPELINE_STMTS_MAX) {
        d11_error("postgresql: a transaction of more than %d statements", D11_PG_PIPELINE_STMTS_MAX);
        t->failed = true;
        return D11_ESTORE;
    }
    if (t->nsent == t->cap) {
        int cap = t->cap ? t->cap * 2 : 64;
        uint8_t *e = realloc(t->expect1, (size_t)cap);
        if (!e) d11_fatal("out of memory");
        t->expect1 = e, t->cap = cap;
    }
    int ok = name ? PQsendQueryPrepared(t->c, name, n, p, lens, fmts, 0)
                  : PQsendQueryParams(t->c, sql, n, NULL, p, lens, fmts, 0);
    if (!ok) {
        d11_error("postgresql: send: %s", PQerrorMessage(t->c));
        t->failed = true;
        return D11_ESTORE;
    }
    t->expect1[t->nsent++] = one;
    return 0;
}

int d11_pg_tx_begin(d11_pg_tx *t, PGconn *c)
{
    memset(t, 0, sizeof *t);
    t->c = c;
    if (PQstatus(c) != CONNECTION_OK || !PQenterPipelineMode(c)) {
        d11_error("postgresql: cannot enter pipeline mode: %s", PQerrorMessage(c));
        return D11_ESTORE;
    }
    return tx_send_raw(t, NULL, "BEGIN", 0, NULL, NULL, NULL, false);
}

int d11_pg_tx_send(d11_pg_tx *t, const char *sql, int nparams, const char *const *params, const int *lengths,
                   const int *formats, bool expect_one_row)
{
    if (t->failed) return D11_ESTORE;
    return tx_send_raw(t, NULL, sql, nparams, params, lengths, formats, expect_one_row);
}

int d11_pg_tx_send_prepared(d11_pg_tx *t, const char *name, int nparams, const char *const *params, bool expect_one_row)
{
    if (t->failed) return D11_ESTORE;
    return tx_send_raw(t, name, NULL, nparams, params, NULL, NULL, expect_one_row);
}

int d11_pg_prepare(PGconn *c, const char *name, const char *sql, int nparams)
{
    PQsetnonblocking(c, 0);
    PGresult *r = PQprepare(c, name, sql, nparams, NULL);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : D11_ESTORE;
    if (rc) d11_error("postgresql: prepare %.80s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    PQsetnonblocking(c, 1);
    return rc;
}

/* Write everything queued, reading answers meanwhile (non-blocking connection). */
static int flush_all(PGconn *c)
{
    for (;;) {
        int r = PQflush(c);
        if (r == 0) return 0;
        if (r < 0) return D11_ESTORE;
        struct pollfd pf = {PQsocket(c), POLLIN | POLLOUT, 0};
        if (poll(&pf, 1, 1000) == -1 && errno != EINTR) return D11_ESTORE;
        if ((pf.revents & (POLLIN | POLLERR | POLLHUP)) && !PQconsumeInput(c)) return D11_ESTORE;
    }
}

int d11_pg_tx_end(d11_pg_tx *t)
{
    PGconn *c = t->c;
    int rc = t->failed ? D11_ESTORE : 0;
    if (t->lose == 1) (void)shutdown(PQsocket(c), SHUT_RDWR); /* test seam: lost before COMMIT */
    if (rc == 0 && t->lose != 1) rc = tx_send_raw(t, NULL, "COMMIT", 0, NULL, NULL, NULL, false);
    if (!PQpipelineSync(c) || flush_all(c) < 0) {
        d11_error("postgresql: connection lost while sending a transaction: %s", PQerrorMessage(c));
        return D11_PG_ELOST;
    }
    /* One result (then NULL) per statement, then the sync. */
    for (int i = 0; i < t->nsent; i++) {
        PGresult *r = PQgetResult(c);
        if (!r) {
            if (PQstatus(c) != CONNECTION_OK) {
                d11_error("postgresql: connection lost before the outcome of a commit: %s", PQerrorMessage(c));
                return D11_PG_ELOST;
            }
            r = PQgetResult(c);
            if (!r) return D11_PG_ELOST;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR) {
            if (PQstatus(c) != CONNECTION_OK) {
                PQclear(r);
                d11_error("postgresql: connection lost before the outcome of a commit: %s", PQerrorMessage(c));
                return D11_PG_ELOST;
            }
            if (rc == 0) d11_error("postgresql: statement %d of a batch failed: %s", i, PQresultErrorMessage(r));
            rc = D11_ESTORE;
        } else if (st == PGRES_PIPELINE_ABORTED) {
            rc = D11_ESTORE;
        } else if (t->expect1[i] && strcmp(PQcmdTuples(r), "1") != 0) {
            d11_error("postgresql: statement %d reported %s rows, expected 1", i, PQcmdTuples(r));
            rc = D11_ESTORE;
        }
        PQclear(r);
        r = PQgetResult(c); /* the NULL that ends this statement's results */
        if (r) {
            PQclear(r);
            rc = D11_ESTORE;
        }
    }
    PGresult *r = PQgetResult(c);
    bool synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    if (!synced || PQstatus(c) != CONNECTION_OK) {
        d11_error("postgresql: connection lost before the outcome of a commit: %s", PQerrorMessage(c));
        return D11_PG_ELOST;
    }
    if (!PQexitPipelineMode(c)) rc = D11_ESTORE;
    if (PQtransactionStatus(c) != PQTRANS_IDLE) { /* a failed statement left the block open */
        PQsetnonblocking(c, 0);
        (void)d11_pg_exec(c, "ROLLBACK");
        PQsetnonblocking(c, 1);
        rc = D11_ESTORE;
    }
    if (t->lose == 2) { /* test seam: the outcome came, the caller never sees it */
        (void)shutdown(PQsocket(c), SHUT_RDWR);
        d11_error("postgresql: connection lost before the outcome of a commit (test seam)");
        return D11_PG_ELOST;
    }
    return rc;
}

void d11_pg_tx_release(d11_pg_tx *t)
{
    free(t->expect1);
    memset(t, 0, sizeof *t);
}

/* ---- reads ---- */

int d11_pg_each_row(PGconn *c, const char *sql, int nparams, const char *const *params, d11_pg_row_fn *fn, void *ctx)
{
    int rc = 0;
    PQsetnonblocking(c, 0);
    if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0) || !PQsetSingleRowMode(c)) {
        d11_error("postgresql: %.80s: %s", sql, PQerrorMessage(c));
        PQsetnonblocking(c, 1);
        return D11_ESTORE;
    }
    PGresult *r;
    while ((r = PQgetResult(c)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE) {
            if (rc == 0) rc = fn(ctx, r);
        } else if (st != PGRES_TUPLES_OK) {
            if (rc == 0) d11_error("postgresql: %.80s: %s", sql, PQresultErrorMessage(r));
            rc = D11_ESTORE;
        }
        PQclear(r);
    }
    PQsetnonblocking(c, 1);
    return rc;
}

int64_t d11_pg_i64(const PGresult *r, int col)
{
    if (PQgetisnull(r, 0, col)) return 0;
    return strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

d11_str d11_pg_str(const PGresult *r, int col)
{
    return (d11_str){PQgetvalue(r, 0, col), (size_t)PQgetlength(r, 0, col)};
}

/* ---- array literals ---- */

void d11_pg_arr_open(d11_buf *b) { d11_buf_append(b, "{", 1); }

static void sep(d11_buf *b)
{
    if (b->len && b->data[b->len - 1] != '{') d11_buf_append(b, ",", 1);
}

void d11_pg_arr_i64(d11_buf *b, int64_t v)
{
    sep(b);
    d11_buf_printf(b, "%lld", (long long)v);
}

void d11_pg_arr_str(d11_buf *b, const char *p, size_t n)
{
    sep(b);
    if (!p) { /* SQL NULL */
        d11_buf_append(b, "NULL", 4);
        return;
    }
    d11_buf_reserve(b, n * 2 + 2);
    d11_buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '"' || p[i] == '\\') d11_buf_append(b, "\\", 1);
        d11_buf_append(b, p + i, 1);
    }
    d11_buf_append(b, "\"", 1);
}

void d11_pg_arr_close(d11_buf *b)
{
    d11_buf_append(b, "}", 1);
    d11_buf_append(b, "", 1);
}
