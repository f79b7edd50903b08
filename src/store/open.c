/*
 * open.c — the storage-backend factory (open.h). Pure selection: no state of its own.
 */
#include "open.h"
#include "cell_pg.h"
#include "cell_sqlite.h"
#include "center_pg.h"
#include "center_sqlite.h"
#include "pg_util.h"
#include "../core/util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int d11_store_url_cell(const d11_config *cfg, int id, char *out, size_t outlen)
{
    /* Entry `id` of the space-separated --store-cells list, when there is one. */
    const char *p = cfg->store_cells;
    for (int i = 0; *p; i++) {
        while (*p == ' ') p++;
        size_t n = strcspn(p, " ");
        if (!n) break;
        if (i == id) {
            if (n >= outlen) return -ENAMETOOLONG;
            memcpy(out, p, n);
            out[n] = 0;
            return 0;
        }
        p += n;
    }
    return snprintf(out, outlen, "%s", cfg->store) >= (int)outlen ? -ENAMETOOLONG : 0;
}

int d11_store_url_center(const d11_config *cfg, char *out, size_t outlen)
{
    const char *u = cfg->store_center[0] ? cfg->store_center : cfg->store;
    return snprintf(out, outlen, "%s", u) >= (int)outlen ? -ENAMETOOLONG : 0;
}

d11_store *d11_store_open_cell(const d11_config *cfg, int id)
{
    char url[sizeof cfg->store];
    if (d11_store_url_cell(cfg, id, url, sizeof url) < 0) return NULL;
    if (url[0]) {
        if (!d11_pg_is_url(url)) {
            d11_error("cell %d: --store must be a postgresql:// URL or a libpq key=value string", id);
            return NULL;
        }
        return d11_cell_pg_open(url, id, cfg->durability);
    }
    char path[1200], file[64];
    snprintf(file, sizeof file, "cell-%d.db", id);
    if (d11_config_path(cfg, file, path, sizeof path) < 0) return NULL;
    d11_store *s = d11_cell_sqlite_open(path, cfg->durability);
    if (!s) d11_error("cell %d: cannot open %s", id, path);
    return s;
}

d11_store *d11_store_open_center(const d11_config *cfg)
{
    char url[sizeof cfg->store];
    if (d11_store_url_center(cfg, url, sizeof url) < 0) return NULL;
    if (url[0]) {
        if (!d11_pg_is_url(url)) {
            d11_error("center: --store must be a postgresql:// URL or a libpq key=value string");
            return NULL;
        }
        return d11_center_pg_open(url, cfg->durability);
    }
    char path[1200];
    if (d11_config_path(cfg, "center.db", path, sizeof path) < 0) return NULL;
    d11_store *s = d11_center_sqlite_open(path, cfg->durability);
    if (!s) d11_error("center: cannot open %s", path);
    return s;
}
