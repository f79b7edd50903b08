/*
 * table.h — fixed-capacity arrays addressed by index: the cell's orders, items, ledgers,
 * expiry heap. Sized once at start from a named limit (`max`), so the hot path never
 * reallocates and never rehashes a table; a full table is an operating error the caller
 * answers (503 + a metric), not a crash and not a surprise allocation.
 *
 * Memory: the whole `max * esz` range is reserved as virtual memory (mmap, NORESERVE) and
 * touched only as elements are pushed, so a large limit costs address space, not RAM.
 * Element addresses are therefore stable — but code must still hold INDEXES, never
 * element pointers, across any call that can push (that is the rule that keeps the cell
 * free of use-after-free when storage changes). To prove that rule, a table opened with
 * `moving = true` (the simulator and sanitizer tests) grows by malloc and MOVES its
 * elements on every growth step, freeing the old block: a pointer held across a push is
 * then a use-after-free that AddressSanitizer reports at once.
 *
 * Not thread-safe: a table belongs to its owner's thread.
 */
#ifndef D11_TABLE_H
#define D11_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct d11_table {
    uint8_t *v;
    uint32_t n;      /* elements in use */
    uint32_t cap;    /* elements addressable now */
    uint32_t max;    /* the limit */
    uint32_t esz;
    bool     moving; /* debug: move on every growth (see above) */
    bool     mapped;
} d11_table;

/* 0 or -errno (mmap failed). */
int  d11_table_init(d11_table *t, size_t esz, uint32_t max, bool moving);
void d11_table_release(d11_table *t);
/* Append one zeroed element. Returns its index, or -1 when the table holds `max`. */
int64_t d11_table_push(d11_table *t);
/* Drop every element (keeps the reservation). */
void d11_table_clear(d11_table *t);

#define D11_TAB(t, T) ((T *)(t)->v)

#endif
