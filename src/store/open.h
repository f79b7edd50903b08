/*
 * open.h — pick and open the backend of the storage seam (store.h) from the configuration:
 * PostgreSQL when a store URL applies to the process (--store-cells entry i for cell i,
 * --store-center for the center, else --store), SQLite in the data directory otherwise.
 * The returned store is owned by the caller (d11_store_close). NULL when it cannot be
 * opened, with the reason logged (never a password).
 */
#ifndef D11_STORE_OPEN_H
#define D11_STORE_OPEN_H

#include <stddef.h>
#include "store.h"
#include "../core/config.h"

d11_store *d11_store_open_cell(const d11_config *cfg, int id);
d11_store *d11_store_open_center(const d11_config *cfg);

/* The PostgreSQL URL for cell id / the center into out ("" = SQLite). 0 or -ENAMETOOLONG. */
int d11_store_url_cell(const d11_config *cfg, int id, char *out, size_t outlen);
int d11_store_url_center(const d11_config *cfg, char *out, size_t outlen);

#endif
