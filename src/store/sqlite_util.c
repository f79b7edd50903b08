/*
 * sqlite_util.c — SQLite helpers (see sqlite_util.h). Errors are logged here with the SQLite message
 * so callers can just propagate D11_ESTORE.
 */
#include "sqlite_util.h"
#include "../core/util.h"
#include "../core/config.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <unistd.h>

int d11_sqlite_open(const char *path, int durability, sqlite3 **out)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        d11_error("sqlite open %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return D11_ESTORE;
    }
    sqlite3_busy_timeout(db, 5000);
    const char *sync = durability == D11_DUR_SYNC ? "FULL" : durability == D11_DUR_ASYNC ? "NORMAL" : "OFF";
    char sql[256];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA wal_autocheckpoint=10000;"
             "PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;",
             sync);
    if (d11_sqlite_exec(db, sql) < 0) {
        sqlite3_close(db);
        return D11_ESTORE;
    }
    *out = db;
    return 0;
}

int d11_sqlite_open_ro(const char *path, sqlite3 **out)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return D11_ESTORE;
    }
    sqlite3_busy_timeout(db, 5000);
    *out = db;
    return 0;
}

void d11_sqlite_close(sqlite3 *db)
{
    if (db) sqlite3_close_v2(db);
}

int d11_sqlite_exec(sqlite3 *db, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        d11_error("sqlite: %s (in: %.120s)", err ? err : "?", sql);
        sqlite3_free(err);
        return D11_ESTORE;
    }
    return 0;
}

sqlite3_stmt *d11_sqlite_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK)
        d11_fatal("sqlite prepare: %s (in: %.200s)", sqlite3_errmsg(db), sql);
    return st;
}

int d11_sqlite_step_done(sqlite3 *db, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        d11_error("sqlite step: %s", sqlite3_errmsg(db));
        return D11_ESTORE;
    }
    return 0;
}

int d11_sqlite_sync(sqlite3 *db)
{
    const char *file = sqlite3_db_filename(db, "main");
    if (!file || !*file) return 0;
    char wal[4200];
    snprintf(wal, sizeof wal, "%s-wal", file);
    int fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd == -1) return errno == ENOENT ? 0 : -errno;
    int rc = fdatasync(fd) == -1 ? -errno : 0;
    close(fd);
    return rc;
}

sqlite3_stmt *d11_sqlite_try_prepare(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    return st;
}
