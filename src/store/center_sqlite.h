/*
 * center_sqlite.h — the SQLite backend of the center's storage seam (store.h).
 *
 * One file, DATA/center.db, with the tables of docs/storage.md ("Center"): products,
 * center_stock, ledger, routing. Files written by earlier versions of d11 open unchanged
 * (same tables and columns); `d11 audit` reads the same tables.
 *
 *   load    yields ROUTING (if stored), every PRODUCT, then every STOCK and LEDGER row
 *           as center op records (center_ops.h).
 *   commit  applies one log of center op records in one transaction (BEGIN IMMEDIATE ..
 *           COMMIT); each record is an INSERT OR REPLACE of its row. In durability=async
 *           the WAL is also fsynced before commit returns: the center's commits are few
 *           (grants and catalog writes, not orders), and a grant must never be announced
 *           to a cell before it is on disk.
 *   sync    fsyncs the WAL.
 *
 * Threads: one thread at a time (the center's loop).
 */
#ifndef D11_CENTER_SQLITE_H
#define D11_CENTER_SQLITE_H

#include "store.h"

/* Open (creating the file and tables if needed). NULL, with the reason logged, on failure.
 * The caller owns the store: d11_store_close releases it. */
d11_store *d11_center_sqlite_open(const char *path, int durability);

/* Read-only, for `d11 audit`: load only (commit fails). NULL if the file cannot be opened. */
d11_store *d11_center_sqlite_open_ro(const char *path);

#endif
