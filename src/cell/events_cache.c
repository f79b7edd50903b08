/*
 * events_cache.c — rendered event lines kept by the event reader thread (events_cache.h).
 */
#include "events_cache.h"

#include <stdlib.h>
#include <string.h>

void cell_evcache_init(cell_evcache *c)
{
    memset(c, 0, sizeof *c);
    c->id = malloc(sizeof *c->id * D11_EVCACHE_EVENTS);
    c->end = malloc(sizeof *c->end * D11_EVCACHE_EVENTS);
    if (!c->id || !c->end) d11_fatal("out of memory for the event cache");
    d11_buf_init(&c->lines, 64 * 1024);
}

void cell_evcache_free(cell_evcache *c)
{
    free(c->id);
    free(c->end);
    d11_buf_free(&c->lines);
    memset(c, 0, sizeof *c);
}

void cell_evcache_reset(cell_evcache *c)
{
    c->n = 0;
    d11_buf_reset(&c->lines);
}

bool cell_evcache_covers(const cell_evcache *c, uint64_t after)
{
    return c->n > 0 && after >= c->id[0] && after <= c->id[c->n - 1];
}

bool cell_evcache_ends_at(const cell_evcache *c, uint64_t last) { return c->n > 0 && c->id[c->n - 1] == last; }

/* The first entry with id > after (binary search; ids ascend). */
static uint32_t first_after(const cell_evcache *c, uint64_t after)
{
    uint32_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->id[mid] <= after) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

uint32_t cell_evcache_get(cell_evcache *c, uint64_t after, uint32_t limit, d11_buf *body, uint64_t *last)
{
    D11_ASSERT(cell_evcache_covers(c, after));
    uint32_t j = first_after(c, after), k = c->n - j < limit ? c->n - j : limit;
    *last = after;
    if (k == 0) return 0;
    uint32_t from = j ? c->end[j - 1] : 0, to = c->end[j + k - 1];
    d11_buf_append(body, c->lines.data + from, to - from); /* consecutive lines: one copy */
    *last = c->id[j + k - 1];
    c->hits += k;
    return k;
}

/* Drop the older half of the run (it stays a run: a suffix of consecutive rows). */
static void drop_half(cell_evcache *c)
{
    if (c->n < 2) {
        cell_evcache_reset(c);
        return;
    }
    uint32_t keep_from = c->n / 2, cut = c->end[keep_from - 1];
    memmove(c->id, c->id + keep_from, sizeof *c->id * (c->n - keep_from));
    for (uint32_t i = keep_from; i < c->n; i++) c->end[i - keep_from] = c->end[i] - cut;
    c->n -= keep_from;
    memmove(c->lines.data, c->lines.data + cut, c->lines.len - cut);
    c->lines.len -= cut;
}

void cell_evcache_add(cell_evcache *c, uint64_t id, const char *line, size_t n)
{
    D11_ASSERT(c->n == 0 || id > c->id[c->n - 1]);
    c->misses++;
    if (n > D11_EVCACHE_BYTES / 4) { /* cannot happen: events are bounded far below; keep the run true */
        cell_evcache_reset(c);
        return;
    }
    while (c->n > 0 && (c->n == D11_EVCACHE_EVENTS || c->lines.len + n > D11_EVCACHE_BYTES)) drop_half(c);
    d11_buf_append(&c->lines, line, n);
    c->id[c->n] = id;
    c->end[c->n] = (uint32_t)c->lines.len;
    c->n++;
}
