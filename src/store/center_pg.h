/*
 * center_pg.h — the PostgreSQL backend of the center's storage seam (store.h): schema
 * d11_center on any libpq URL, the tables of the SQLite center (center_sqlite.h). See
 * center_pg.c and docs/postgresql.md.
 */
#ifndef D11_CENTER_PG_H
#define D11_CENTER_PG_H

#include "store.h"

/* Connect (with backoff), create or migrate d11_center. NULL on failure (logged, URL
 * without password). The caller owns the store: d11_store_close. */
d11_store *d11_center_pg_open(const char *url, int durability);
/* For `d11 audit`: no schema change. 0 with *out; -ENOENT when d11_center does not exist;
 * D11_ESTORE when the server cannot be read. */
int d11_center_pg_open_ro(const char *url, d11_store **out);

#endif
