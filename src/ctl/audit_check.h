/*
 * audit_check.h — the invariant checker over STORED data, read through the storage seam
 * (store/store.h): the center's records (store/center_ops.h) and every cell's
 * (store/cell_ops.h), whatever the backend. `d11 audit` runs it on the SQLite files of a
 * stopped platform; the simulator runs it on its memory stores.
 *
 * For every (SKU, shadow):
 *   center    free + sum over cells (granted - returned) == total
 *   per cell  returned + sold <= granted (cell view); granted <= the center's granted;
 *             returned >= the center's returned (the difference is "in transit")
 *   per cell  sold == units held by that cell's pending_payment + paid orders
 *   overall   sum of sold <= total                                  (never oversell)
 *             sold + held by cells + in transit + free == total     (conservation)
 * Per cell: no two orders share (shadow, user_id, idem_key) (never duplicate); every
 * order's total_cents is the sum of its items; every status is a known one (the
 * decoder refuses others).
 */
#ifndef D11_AUDIT_CHECK_H
#define D11_AUDIT_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "../core/limits.h"
#include "../core/util.h"
#include "../store/store.h"

typedef struct d11_audit_row {
    char     sku[D11_SKU_BYTES_MAX + 1];
    int      shadow;
    uint64_t total, free, sold, held, transit; /* held: by cells, unsold; transit: returned, not yet known */
} d11_audit_row;

typedef struct d11_audit {
    int            violations;
    int            ncells;          /* from the center's routing table (0: none stored) */
    uint64_t       orders;          /* real orders seen */
    d11_buf        violations_json; /* JSON strings, comma separated */
    d11_audit_row *rows;            /* one per (sku, shadow) of the center */
    size_t         nrows;
} d11_audit;

/*
 * Load every store and check. cells[i] may be NULL (a cell that never started holds
 * nothing). 0 when the stores could be read (violations counted in *out, which the caller
 * releases with d11_audit_release), or a negative error from a load.
 */
int  d11_audit_stores(d11_store *center, d11_store *const *cells, int ncells, d11_audit *out);
void d11_audit_release(d11_audit *a);
/* The row of (sku, shadow), or NULL. */
const d11_audit_row *d11_audit_find(const d11_audit *a, const char *sku, size_t n, int shadow);

#endif
