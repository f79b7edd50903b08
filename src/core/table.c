/*
 * table.c — fixed-capacity, index-addressed arrays (see table.h).
 */
#include "table.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define TABLE_MOVE_STEP 1 /* moving tables move on EVERY push: a stale pointer is always caught */

int d11_table_init(d11_table *t, size_t esz, uint32_t max, bool moving)
{
    memset(t, 0, sizeof *t);
    D11_ASSERT(esz > 0 && esz <= UINT32_MAX && max > 0);
    t->esz = (uint32_t)esz;
    t->max = max;
    t->moving = moving;
    if (moving) return 0;
    void *p = mmap(NULL, esz * max, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return -errno;
    t->v = p;
    t->cap = max;
    t->mapped = true;
    return 0;
}

void d11_table_release(d11_table *t)
{
    if (t->mapped) munmap(t->v, (size_t)t->esz * t->max);
    else free(t->v);
    memset(t, 0, sizeof *t);
}

int64_t d11_table_push(d11_table *t)
{
    if (t->n == t->max) return -1;
    if (t->n == t->cap) {
        D11_ASSERT(t->moving);
        uint32_t cap = t->cap + TABLE_MOVE_STEP;
        if (cap > t->max) cap = t->max;
        uint8_t *p = malloc((size_t)cap * t->esz);
        if (!p) d11_fatal("out of memory");
        if (t->n) memcpy(p, t->v, (size_t)t->n * t->esz);
        free(t->v); /* the old block dies: a stale element pointer is now a use-after-free */
        t->v = p;
        t->cap = cap;
    }
    uint32_t i = t->n++;
    memset(t->v + (size_t)i * t->esz, 0, t->esz);
    return i;
}

void d11_table_clear(d11_table *t) { t->n = 0; }
