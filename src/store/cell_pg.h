/*
 * cell_pg.h — open a cell's PostgreSQL schema (d11_cell_<id>, on any libpq URL) as a
 * d11_store (store.h) speaking the cell's op records (cell_ops.h). See cell_pg.c and
 * docs/postgresql.md.
 */
#ifndef D11_CELL_PG_H
#define D11_CELL_PG_H

#include "store.h"

/* Connect (retrying with backoff for up to D11_PG_CONNECT_WAIT_MS), create the schema or
 * migrate it, set synchronous_commit from durability. NULL on failure (logged, the URL
 * without its password). Owned by the caller: d11_store_close. */
d11_store *d11_cell_pg_open(const char *url, int id, int durability);
/* For `d11 audit`: no schema change, one connection attempt. 0 with *out set; -ENOENT
 * when the cell's schema does not exist (a cell that never started holds nothing);
 * D11_ESTORE when the server cannot be read. */
int d11_cell_pg_open_ro(const char *url, int id, d11_store **out);

#endif
