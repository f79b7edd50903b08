/*
 * inventory.h — the center's inventory math: one ledger per (SKU, shadow), pure functions.
 *
 * A ledger (shadow 1 is the stress-test copy of a product's stock):
 *     total              units ever put on sale (create + restocks)
 *     free               units at the center, not allotted to any cell
 *     cells[c].granted   units ever granted to cell c (cumulative)
 *     cells[c].returned  units cell c ever handed back (cumulative)
 *     cells[c].sold      cell c's latest COMMITTED sold count (pending + paid), as the cell
 *                        last reported it; replaced by every report, never max()-ed (a
 *                        cancel or expiry lowers it)
 * Invariant, asserted by every function that changes a ledger:
 *     free + sum over cells (granted - returned) == total,   returned <= granted
 * Cumulative granted/returned make cell messages idempotent: a repeated RETURN carries the
 * same cumulative value and changes nothing.
 *
 * No I/O, no clock, no allocation: the catalog owns the cells[] array; the machine
 * (machine.c) decides when to call what. Unit-tested in tests/unit/test_center_inventory.c.
 */
#ifndef D11_CENTER_INVENTORY_H
#define D11_CENTER_INVENTORY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct center_inv_cell {
    uint64_t granted, returned, sold;
} center_inv_cell;

typedef struct center_inv {
    uint64_t         total, free;
    uint16_t         ncells;
    center_inv_cell *cells; /* ncells entries; not owned */
} center_inv;

/* Abort (D11_ASSERT) unless the invariant holds. */
void center_inv_check(const center_inv *l);
/* Sum over cells of the reported sold (the product view's stock_sold before clamping). */
uint64_t center_inv_sold(const center_inv *l);
/* Sum over cells of granted - returned: units out at the cells. */
uint64_t center_inv_out(const center_inv *l);

/*
 * Grant size for a request of `want` units: a share of what is free, so that every cell
 * gets some and the center keeps a reserve — max(want, min(free / (2 * ncells), chunk_max)),
 * capped by free. Callers grant only when free >= want, so the result is >= want then.
 */
uint64_t center_inv_grant_size(uint64_t free, uint64_t want, unsigned ncells, uint64_t chunk_max);
/* Move n (<= free, asserted) units from free to cell's granted. */
void center_inv_grant(center_inv *l, uint16_t cell, uint64_t n);
/*
 * Apply a RETURN carrying the cell's cumulative returned count. Returns the units that
 * came back to free (0 for a repeat or an older message), or D11_EPROTO when
 * returned_cum > granted (the cell's state is corrupt; nothing changes).
 */
int64_t center_inv_return(center_inv *l, uint16_t cell, uint64_t returned_cum);
/* Add qty units to total and free. D11_ETOOBIG (nothing changes) above D11_STOCK_MAX. */
int center_inv_restock(center_inv *l, uint64_t qty);
/* Record a cell's reported committed sold count. True when it changed. */
bool center_inv_set_sold(center_inv *l, uint16_t cell, uint64_t sold);

/*
 * Reclaim near sell-out: the cells to push RECLAIM to now — every cell other than
 * `except` that is in `reachable` (connected), not already in `asked` (this round), and
 * holds units it has not sold as far as its reports tell (granted - returned > sold).
 * Bit c of the masks is cell c.
 */
uint64_t center_inv_reclaim_targets(const center_inv *l, uint16_t except, uint64_t asked, uint64_t reachable);

/*
 * A grant request can be answered at once when nobody is parked before it (FIFO) and
 * free covers it; otherwise it is parked.
 */
bool center_inv_grant_now(const center_inv *l, uint64_t want, uint32_t npend);

/* What to do with one parked grant request, visited in arrival order. */
enum center_pend_verdict {
    CENTER_PEND_WAIT = 0, /* keep it parked: returns may still come */
    CENTER_PEND_GRANT,    /* grant center_inv_grant_size(free, want, ...) now */
    CENTER_PEND_SOLD_OUT, /* answer sold_out: the round is over and free < want */
};
/* `final`: the reclaim round is over (every asked cell answered, nobody to ask, or the
 * deadline passed). */
enum center_pend_verdict center_inv_pend_verdict(uint64_t free, uint64_t want, bool final);

#endif
