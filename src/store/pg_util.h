/*
 * pg_util.h — PostgreSQL helpers shared by the PostgreSQL backends of the storage seam
 * (cell_pg.c, center_pg.c): connecting with the durability mode, one schema per owner with
 * versioned migrations, pipelined transactions, streamed reads, and URIs printed without
 * their password.
 *
 * Durability (config.h) maps to synchronous_commit, set once per connection:
 *   sync  -> on   (COMMIT returns after the WAL is flushed, and on the synchronous
 *                  standbys when synchronous_standby_names is set: docs/postgresql.md)
 *   async -> off  (the owner's sync() commits a tiny synchronous transaction, which
 *                  flushes the WAL up to it: every earlier async commit included)
 *   none  -> off  (no sync at all; tests and benchmarks)
 *
 * Connections: any libpq URI or key=value string. A password in it is never logged
 * (d11_pg_redact). A PGconn belongs to one thread at a time, like the store that owns it.
 */
#ifndef D11_PG_UTIL_H
#define D11_PG_UTIL_H

#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "../core/util.h"
#include "../rpc/wire.h"

/* Longest a store open waits for PostgreSQL (retrying with backoff 100 ms .. 2 s). */
#define D11_PG_CONNECT_WAIT_MS 30000
#define D11_PG_BACKOFF_MS_MIN  100
#define D11_PG_BACKOFF_MS_MAX  2000
/* Largest number of statements one pipelined transaction may hold. */
#define D11_PG_PIPELINE_STMTS_MAX 65536

/* True when s names a PostgreSQL database (postgres:// or postgresql:// URI, or a libpq
 * key=value string), false for anything else (the SQLite default has no store URL). */
bool d11_pg_is_url(const char *s);

/* The connection string without its password, for logs: "host=.. port=.. dbname=..". */
void d11_pg_redact(const char *url, char *out, size_t outlen);

/*
 * Connect (retrying with backoff up to wait_ms), set synchronous_commit for durability,
 * and select schema (search_path). When migrations != NULL, create the schema if missing
 * and apply migrations[v] for every version v not yet recorded in schema.migrations, each
 * in its own transaction; when NULL (read-only use), a missing schema is -ENOENT.
 * 0 with *out set, or D11_ESTORE / -ENOENT (logged, URL redacted).
 */
int d11_pg_connect(const char *url, const char *schema, int durability, const char *const *migrations,
                   int nmigrations, int64_t wait_ms, PGconn **out);

/* Run SQL without parameters, expecting no error. 0 or D11_ESTORE (logged). */
int d11_pg_exec(PGconn *c, const char *sql);

/*
 * Pipelined transaction: d11_pg_tx_begin enters pipeline mode and sends BEGIN; the caller
 * sends statements with d11_pg_tx_send; d11_pg_tx_end sends COMMIT and ONE sync, then
 * reads every result. 0 when the COMMIT succeeded; D11_ESTORE when any statement failed
 * (the transaction is rolled back); D11_PG_ELOST when the connection broke before the
 * outcome was read (the COMMIT may or may not have happened: the caller reads back).
 * expect_one_row marks a statement that must report exactly one row.
 *
 * Test seam: lose = 1 breaks the connection before COMMIT is sent (the server rolls the
 * transaction back), lose = 2 after the outcome arrived but before it is read (the COMMIT
 * happened); either way tx_end returns D11_PG_ELOST, as a real connection loss does.
 */
#define D11_PG_ELOST (-EPIPE)
typedef struct d11_pg_tx {
    PGconn  *c;
    int      nsent;    /* statements sent, BEGIN and COMMIT included */
    uint8_t *expect1;  /* per statement: must change exactly one row */
    int      cap;
    bool     failed;
    int      lose;     /* test seam, see above; 0 in production */
} d11_pg_tx;

int  d11_pg_tx_begin(d11_pg_tx *t, PGconn *c);
/* Send one statement with text parameters (NULL = SQL NULL; lengths for binary params
 * when formats != NULL). */
int  d11_pg_tx_send(d11_pg_tx *t, const char *sql, int nparams, const char *const *params, const int *lengths,
                    const int *formats, bool expect_one_row);
/* Send a statement prepared on this connection with d11_pg_prepare (text parameters). */
int  d11_pg_tx_send_prepared(d11_pg_tx *t, const char *name, int nparams, const char *const *params,
                             bool expect_one_row);
int  d11_pg_tx_end(d11_pg_tx *t);
/* Prepare a named statement on c (outside any pipeline). 0 or D11_ESTORE (logged). */
int  d11_pg_prepare(PGconn *c, const char *name, const char *sql, int nparams);
void d11_pg_tx_release(d11_pg_tx *t);

/* Stream the rows of a query one at a time (single-row mode) to fn; fn returns 0 to go
 * on, < 0 to stop (returned). 0, D11_ESTORE or fn's error. */
typedef int d11_pg_row_fn(void *ctx, const PGresult *row);
int d11_pg_each_row(PGconn *c, const char *sql, int nparams, const char *const *params, d11_pg_row_fn *fn, void *ctx);

/* Column helpers on a one-row result. */
int64_t d11_pg_i64(const PGresult *r, int col);
d11_str d11_pg_str(const PGresult *r, int col);

/* Text array literal builder for multi-row INSERT .. SELECT FROM unnest($1::T[], ...):
 * "{" then elements separated by ",", then "}". Strings are quoted and escaped. */
void d11_pg_arr_open(d11_buf *b);
void d11_pg_arr_i64(d11_buf *b, int64_t v);
void d11_pg_arr_str(d11_buf *b, const char *p, size_t n);
/* Closes the array and appends a NUL, so b->data + start is a parameter. */
void d11_pg_arr_close(d11_buf *b);

#endif
