/*
 * audit.c — `d11 audit --data DIR`: check the invariants of API.md against the stored
 * data of a stopped platform (or a copy of it). Read-only: the SQLite files are opened
 * read-only and read through the storage seam's loaders, the same code that recovery
 * uses; the checks themselves are in audit_check.c (the simulator runs them too).
 * "Never lose an acknowledged order" needs the client's record of what was
 * acknowledged; the crash tests compare that against the stored orders.
 *
 * Prints a JSON report on stdout; exit 0 when everything holds, 1 on any violation or
 * unreadable data, 2 on bad usage.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/limits.h"
#include "../core/util.h"
#include "../store/cell_sqlite.h"
#include "../store/center_sqlite.h"
#include "../store/cell_pg.h"
#include "../store/center_pg.h"
#include "../store/open.h"
#include "audit_check.h"

int d11_audit_main(int argc, char **argv)
{
    d11_config cfg;
    char err[256];
    d11_config_defaults(&cfg);
    if (d11_config_from_args(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 audit: %s\n", err);
        return 2;
    }
    if (cfg.help) {
        printf("usage: d11 audit [--data DIR] [--store URL]\n\n"
               "Checks the invariants (never oversell, stock conservation, never duplicate) against\n"
               "the SQLite files in DIR (or the PostgreSQL schemas of --store). Run it on a stopped platform. Prints a JSON report; exits 0\n"
               "when every invariant holds, 1 on any violation.\n\n");
        d11_config_usage(stdout, "audit");
        return 0;
    }
    d11_log_init("audit", D11_LOG_WARN);
    char path[1200];
    d11_store *center = NULL;
    d11_store *cells[D11_CELLS_MAX] = {0};
    int ncells = 0;
    char url[sizeof cfg.store];
    if (d11_store_url_center(&cfg, url, sizeof url) == 0 && url[0]) {
        /* PostgreSQL: schemas d11_center and d11_cell_<i>; a missing cell schema holds nothing. */
        if (d11_center_pg_open_ro(url, &center) < 0) {
            fprintf(stderr, "d11 audit: cannot read the schema d11_center (see the log line above)\n");
            return 1;
        }
        for (int i = 0; i < D11_CELLS_MAX; i++) {
            if (d11_store_url_cell(&cfg, i, url, sizeof url) < 0 || !url[0]) continue;
            int rc = d11_cell_pg_open_ro(url, i, &cells[i]);
            if (rc == -ENOENT) continue;
            if (rc < 0) {
                fprintf(stderr, "d11 audit: cannot read the schema d11_cell_%d\n", i);
                return 1;
            }
            ncells = i + 1;
        }
    } else {
        d11_config_path(&cfg, "center.db", path, sizeof path);
        struct stat sb;
        center = stat(path, &sb) == 0 ? d11_center_sqlite_open_ro(path) : NULL;
        if (!center) {
            fprintf(stderr, "d11 audit: cannot open %s\n", path);
            return 1;
        }
        for (int i = 0; i < D11_CELLS_MAX; i++) {
            char name[32];
            snprintf(name, sizeof name, "cell-%d.db", i);
            d11_config_path(&cfg, name, path, sizeof path);
            if (stat(path, &sb) != 0) continue; /* a cell that never started has no file: it holds nothing */
            cells[i] = d11_cell_sqlite_open_ro(path);
            if (!cells[i]) {
                fprintf(stderr, "d11 audit: cannot open %s\n", path);
                return 1;
            }
            ncells = i + 1;
        }
    }
    d11_audit a;
    int rc = d11_audit_stores(center, cells, ncells ? ncells : 1, &a);
    int status = 0;
    if (rc < 0) {
        fprintf(stderr, "d11 audit: cannot read the stored data: %s\n", d11_strerror(rc));
        status = 1;
    } else if (a.ncells < 1 || a.ncells > D11_CELLS_MAX) {
        fprintf(stderr, "d11 audit: %s/center.db has no routing table\n", cfg.data_dir);
        status = 1;
    } else {
        d11_buf out;
        d11_buf_init(&out, 4096);
        d11_buf_puts(&out, "{\"violations\":[");
        d11_buf_append(&out, a.violations_json.data ? a.violations_json.data : "", a.violations_json.len);
        d11_buf_printf(&out, "],\"ok\":%s,\"cells\":%d,\"skus\":%zu,\"orders\":%llu,\"stock\":[",
                       a.violations ? "false" : "true", a.ncells, a.nrows, (unsigned long long)a.orders);
        for (size_t i = 0; i < a.nrows; i++) {
            const d11_audit_row *r = &a.rows[i];
            d11_buf_puts(&out, i ? ",{\"sku\":" : "{\"sku\":");
            d11_buf_json_str(&out, r->sku, strlen(r->sku));
            d11_buf_printf(&out,
                           ",\"shadow\":%d,\"total\":%llu,\"sold\":%llu,\"held_by_cells\":%llu,\"in_transit\":%llu,"
                           "\"free\":%llu}",
                           r->shadow, (unsigned long long)r->total, (unsigned long long)r->sold,
                           (unsigned long long)r->held, (unsigned long long)r->transit, (unsigned long long)r->free);
        }
        d11_buf_puts(&out, "]}\n");
        fwrite(out.data, 1, out.len, stdout);
        d11_buf_free(&out);
        status = a.violations ? 1 : 0;
    }
    d11_audit_release(&a);
    for (int i = 0; i < D11_CELLS_MAX; i++) d11_store_close(cells[i]);
    d11_store_close(center);
    return status;
}
