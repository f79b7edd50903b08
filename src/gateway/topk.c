/*
 * topk.c — the space-saving summary and its merge (topk.h). Linear scans over
 * GW_TOPK_SLOTS (32) entries: a few dozen compares per product read, no allocation.
 * Invariants: 0 <= n <= GW_TOPK_SLOTS; err <= count for every entry; SKUs distinct.
 */
#include "topk.h"

#include <stdlib.h>
#include <string.h>

#include "../core/util.h"

void gw_topk_init(gw_topk *k, int64_t now_ms)
{
    memset(k, 0, sizeof *k);
    k->decayed_ms = now_ms;
}

void gw_topk_decay(gw_topk *k, int64_t now_ms)
{
    if (now_ms - k->decayed_ms < GW_TOPK_HALF_LIFE_MS) return;
    int64_t halvings = (now_ms - k->decayed_ms) / GW_TOPK_HALF_LIFE_MS;
    k->decayed_ms += halvings * GW_TOPK_HALF_LIFE_MS;
    int sh = halvings > 63 ? 63 : (int)halvings;
    int keep = 0;
    for (int i = 0; i < k->n; i++) {
        gw_topk_entry *e = &k->e[i];
        e->count >>= sh;
        e->err >>= sh;
        if (e->count) k->e[keep++] = *e; /* forgotten SKUs free their counter */
    }
    k->n = keep;
}

void gw_topk_add(gw_topk *k, const char *sku, size_t n, uint64_t w, int64_t now_ms)
{
    D11_ASSERT(n >= 1 && n <= D11_SKU_BYTES_MAX && k->n >= 0 && k->n <= GW_TOPK_SLOTS);
    gw_topk_decay(k, now_ms);
    int min = -1;
    for (int i = 0; i < k->n; i++) {
        gw_topk_entry *e = &k->e[i];
        if (e->n == n && memcmp(e->sku, sku, n) == 0) {
            e->count += w;
            return;
        }
        if (min < 0 || e->count < k->e[min].count) min = i;
    }
    gw_topk_entry *e;
    uint64_t base = 0;
    if (k->n < GW_TOPK_SLOTS) {
        e = &k->e[k->n++];
    } else { /* replace the smallest: the newcomer inherits its count as error */
        e = &k->e[min];
        base = e->count;
    }
    memcpy(e->sku, sku, n);
    e->sku[n] = 0;
    e->n = (uint8_t)n;
    e->count = base + w;
    e->err = base;
}

static int by_count(const void *a, const void *b)
{
    const gw_topk_entry *x = a, *y = b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->sku, y->sku);
}

int gw_topk_merge(const gw_topk *parts, int nparts, gw_topk_entry *out, int kmax)
{
    if (nparts <= 0 || kmax <= 0) return 0;
    gw_topk_entry *all = calloc((size_t)nparts * GW_TOPK_SLOTS, sizeof *all);
    if (!all) return 0;
    int n = 0;
    for (int p = 0; p < nparts; p++)
        for (int i = 0; i < parts[p].n; i++) {
            const gw_topk_entry *e = &parts[p].e[i];
            int j = 0;
            while (j < n && !(all[j].n == e->n && memcmp(all[j].sku, e->sku, e->n) == 0)) j++;
            if (j == n) all[n++] = *e;
            else {
                all[j].count += e->count;
                all[j].err += e->err;
            }
        }
    qsort(all, (size_t)n, sizeof *all, by_count);
    int k = n < kmax ? n : kmax;
    memcpy(out, all, (size_t)k * sizeof *out);
    free(all);
    return k;
}
