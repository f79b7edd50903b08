/*
 * cell_sqlite.h — open a cell's SQLite database (DATA/cell-<i>.db) as a d11_store
 * (store.h) speaking the cell's op records (cell_ops.h).
 */
#ifndef D11_CELL_SQLITE_H
#define D11_CELL_SQLITE_H

#include "store.h"

/* Open (creating the file and schema if needed) with the durability mode of config.h.
 * NULL on failure (the reason is logged). Owned by the caller: d11_store_close. */
d11_store *d11_cell_sqlite_open(const char *path, int durability);
/* Read-only, for `d11 audit` on a stopped (or running) platform: load only; commit fails. */
d11_store *d11_cell_sqlite_open_ro(const char *path);

#endif
