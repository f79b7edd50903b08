/*
 * catalog.h — the center's products: one entry per SKU with its two stock ledgers
 * (shadow 0 real, 1 stress), the grant requests parked on each, and what is not yet
 * committed (dirty marks). Also the JSON views of a product and of its ledger.
 *
 * Ownership: the catalog owns every product and everything a product points to
 * (title, category, cells[], pending queues). Products are allocated one by one and
 * never freed or moved while the catalog lives, so a center_product * stays valid
 * across catalog_add; the index (center_catalog.v[i]) is the stable name used in the
 * dirty and waiting lists. Memory grows per product and per cell only: the pending queue
 * of a ledger is bounded by CENTER_PENDING_MAX.
 *
 * Single thread (the center's).
 */
#ifndef D11_CENTER_CATALOG_H
#define D11_CENTER_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/map.h"
#include "../core/util.h"
#include "../rpc/wire.h"
#include "inventory.h"

/* Grant requests parked on one (SKU, shadow) while reclaimed units are awaited. A cell
 * has one grant in flight per ledger and re-asks a lost one, so a few per cell is plenty;
 * a request beyond the limit is answered 503 `busy`. */
#define CENTER_PENDING_MAX (4 * D11_CELLS_MAX)

typedef struct center_pending {
    uint32_t      peer; /* where the answer goes (dropped with the peer) */
    uint16_t      cell;
    uint64_t      want;
    d11_frame_hdr hdr; /* the request's header: the reply echoes it */
} center_pending;

typedef struct center_stock {
    center_inv      inv;
    center_pending *pend; /* FIFO, npend entries, capacity cappend <= CENTER_PENDING_MAX */
    uint32_t        npend, cappend;
    uint64_t        reclaim_asked;       /* cells asked to return, not answered (bit = cell) */
    int64_t         reclaim_deadline_ms; /* mono; end of the current reclaim round */
    uint64_t        dirty_cells;         /* ledger rows changed since the last commit */
    bool            dirty_stock;         /* the center_stock row changed */
} center_stock;

typedef struct center_product {
    char         sku[D11_SKU_BYTES_MAX + 1]; /* NUL-terminated; skun bytes */
    uint8_t      skun;
    char        *title, *category; /* owned, NUL-terminated */
    uint64_t     price_cents;
    int64_t      created_at; /* wall ms */
    center_stock st[2];
    bool         dirty_row; /* the products row changed (created, restocked) */
    bool         listed_dirty, listed_waiting; /* member of the center's dirty / waiting lists */
} center_product;

typedef struct center_catalog {
    center_product **v;
    size_t           n, cap;
    d11_smap         by_sku; /* sku -> index into v */
    uint16_t         ncells;
} center_catalog;

void center_catalog_init(center_catalog *cat, uint16_t ncells);
void center_catalog_release(center_catalog *cat);
/* The index of a new product with this SKU (1..D11_SKU_BYTES_MAX bytes, not present yet;
 * asserted), every other field zero, title and category "". */
size_t center_catalog_add(center_catalog *cat, const char *sku, size_t skun);
/* The product of this SKU or NULL; *idx set when found and idx non-NULL. */
center_product *center_catalog_find(const center_catalog *cat, const char *sku, size_t skun, size_t *idx);
/* Replace title / category (copied). */
void center_product_set_text(center_product *p, const char *title, size_t titlen, const char *cat, size_t catn);
/* Park a grant request. 0, or D11_EFULL when CENTER_PENDING_MAX are parked already. */
int center_stock_park(center_stock *s, const center_pending *pg);

/* The product as the API shows it: stock_sold = sum of the cells' reported sold (clamped to
 * total), stock_available = total - stock_sold. */
void center_product_render(d11_buf *b, const center_product *p, int shadow);
/* The admin ledger view of both shadows, per cell. */
void center_ledger_render(d11_buf *b, const center_product *p);
/*
 * One page of the catalog for GET /v1/products: products whose SKU is after m->after,
 * whose category equals m->category (when given) and whose title contains m->q (ASCII
 * case-insensitive, when given), SKUs ascending, at most m->limit, rendered as
 * {"items":[...],"next_after":SKU|null} (next_after: the last SKU shown when more match).
 * O(n log limit) over the catalog.
 */
void center_catalog_list(const center_catalog *cat, const d11_msg_product_list *m, int shadow, d11_buf *out);

#endif
