/*
 * topk.h — hot-key detection: the top SKUs by request rate (docs/events.md, "Product
 * cache"). One gw_topk per gateway thread, a space-saving summary (Metwally et al.) of
 * GW_TOPK_SLOTS counters: a SKU already counted adds to its counter; a new one takes a
 * free counter or replaces the smallest, inheriting its count as the error bound (so a
 * count is an overestimate by at most `err`, and any SKU with more than N / SLOTS of the
 * N requests is always present). Counts decay by half every GW_TOPK_HALF_LIFE_MS, so
 * they follow the recent rate: rate/s ~= count * ln 2 / half-life.
 *
 * /metrics and /dashboard/data merge every thread's summary (gw_topk_merge: sum per SKU,
 * the GW_HOT_SKU_K largest). Pure functions; the caller owns locking (products.c keeps a
 * mutex per thread's summary: the owner adds, a scraper copies).
 */
#ifndef D11_GW_TOPK_H
#define D11_GW_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "../core/limits.h"

#define GW_TOPK_SLOTS        32    /* counters per thread */
#define GW_HOT_SKU_K         10    /* SKUs shown in /metrics and on the dashboard */
#define GW_TOPK_HALF_LIFE_MS 10000 /* counts halve this often */

typedef struct gw_topk_entry {
    char     sku[D11_SKU_BYTES_MAX + 1];
    uint8_t  n;
    uint64_t count, err; /* err: count may overstate by this much */
} gw_topk_entry;

typedef struct gw_topk {
    gw_topk_entry e[GW_TOPK_SLOTS];
    int           n;
    int64_t       decayed_ms; /* time of the last halving */
    uint64_t      hits, misses, inval_seen; /* product cache counters of the owner (products.c) */
} gw_topk;

void gw_topk_init(gw_topk *k, int64_t now_ms);
/* Count w requests for sku (1..D11_SKU_BYTES_MAX bytes) at now_ms (halves first if due). */
void gw_topk_add(gw_topk *k, const char *sku, size_t n, uint64_t w, int64_t now_ms);
/* Halve every count as many times as half-lives passed since the last halving. */
void gw_topk_decay(gw_topk *k, int64_t now_ms);
/* Sum the entries of parts[0..nparts) per SKU; the largest up to kmax into out, count
 * descending (ties by SKU). Returns how many. */
int  gw_topk_merge(const gw_topk *parts, int nparts, gw_topk_entry *out, int kmax);

#endif
