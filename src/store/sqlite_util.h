/*
 * sqlite_util.h — SQLite helpers for the SQLite backends of the storage seam (store.h): opening a SQLite
 * database in WAL mode with the configured durability, and small helpers around
 * prepared statements and transactions.
 *
 * Durability modes (config.h):
 *   sync  — synchronous=FULL: every COMMIT fsyncs the WAL before returning. A batch is
 *           acknowledged only after its COMMIT returned. The default.
 *   async — synchronous=NORMAL: COMMIT does not fsync; the owner calls d11_sqlite_sync()
 *           every async_flush_ms, which fsyncs the WAL. A power loss or kernel crash can
 *           lose the last async_flush_ms of acknowledged orders (a process crash loses
 *           nothing: the WAL is in the page cache). Never the default.
 *   none  — synchronous=OFF and no periodic sync: for tests and benchmarks only.
 * A sqlite3 handle belongs to one thread at a time.
 */
#ifndef D11_SQLITE_UTIL_H
#define D11_SQLITE_UTIL_H

#include <sqlite3.h>
#include <stdint.h>

/* Open (creating if needed) path with WAL and the durability mode. Returns 0 or D11_ESTORE
 * with the SQLite message logged. */
int d11_sqlite_open(const char *path, int durability, sqlite3 **out);
void d11_sqlite_close(sqlite3 *db);
/* Open an existing database read-only (`d11 audit`: never writes, never recovers a WAL it
 * does not own beyond what SQLite does for readers). 0 or D11_ESTORE. */
int d11_sqlite_open_ro(const char *path, sqlite3 **out);
/* Run one or more SQL statements without results. 0 or D11_ESTORE (logged). */
int d11_sqlite_exec(sqlite3 *db, const char *sql);
/* Prepare a persistent statement or die (statements are fixed at build time). */
sqlite3_stmt *d11_sqlite_prepare(sqlite3 *db, const char *sql);
/* Prepare, or NULL (a read-only reader whose tables may not exist yet). */
sqlite3_stmt *d11_sqlite_try_prepare(sqlite3 *db, const char *sql);
/* fsync the WAL (async mode). 0 or -errno. */
int d11_sqlite_sync(sqlite3 *db);
/* Step a statement expecting SQLITE_DONE, then reset it. 0 or D11_ESTORE. */
int d11_sqlite_step_done(sqlite3 *db, sqlite3_stmt *st);

#endif
