/*
 * test_events_cache.c — the event reader's cache of rendered lines (cell/events_cache.h):
 * what a run covers, serving a range as one copy, extending a run, dropping the older half
 * when full (the rest stays a run), reset.
 */
#include <stdio.h>
#include <string.h>

#include "cell/events_cache.h"
#include "check.h"

static void line(char *out, size_t cap, uint64_t id) { snprintf(out, cap, "%llu 1000 {\"id\":\"0-%llu\"}\n", (unsigned long long)id, (unsigned long long)id); }

static void add(cell_evcache *c, uint64_t id)
{
    char l[64];
    line(l, sizeof l, id);
    cell_evcache_add(c, id, l, strlen(l));
}

/* body == the lines of ids from..to stepping by step */
static bool lines_are(const d11_buf *b, uint64_t from, uint64_t to, uint64_t step)
{
    d11_buf want;
    d11_buf_init(&want, 256);
    for (uint64_t id = from; id <= to; id += step) {
        char l[64];
        line(l, sizeof l, id);
        d11_buf_puts(&want, l);
    }
    bool ok = want.len == b->len && !memcmp(want.data, b->data, b->len);
    d11_buf_free(&want);
    return ok;
}

int main(void)
{
    cell_evcache c;
    cell_evcache_init(&c);
    d11_buf b;
    d11_buf_init(&b, 256);
    uint64_t last;
    CHECK(!cell_evcache_covers(&c, 0));
    for (uint64_t id = 10; id <= 30; id += 2) add(&c, id); /* a run of rows 10, 12, ..., 30 */
    CHECK(!cell_evcache_covers(&c, 9));  /* the row after 9 may be below 10: unknown */
    CHECK(cell_evcache_covers(&c, 10) && cell_evcache_covers(&c, 11) && cell_evcache_covers(&c, 30));
    CHECK(!cell_evcache_covers(&c, 31));
    CHECK(cell_evcache_get(&c, 11, 3, &b, &last) == 3 && last == 16 && lines_are(&b, 12, 16, 2));
    d11_buf_reset(&b);
    CHECK(cell_evcache_get(&c, 24, 100, &b, &last) == 3 && last == 30 && lines_are(&b, 26, 30, 2));
    CHECK(cell_evcache_ends_at(&c, 30) && !cell_evcache_ends_at(&c, 28));
    d11_buf_reset(&b);
    CHECK(cell_evcache_get(&c, 30, 5, &b, &last) == 0 && last == 30 && b.len == 0); /* at the end: nothing */
    add(&c, 31); /* extended by the row after 30 */
    d11_buf_reset(&b);
    CHECK(cell_evcache_get(&c, 30, 5, &b, &last) == 1 && last == 31);
    CHECK(c.hits == 7 && c.misses == 12);
    /* full: the older half goes, what stays is still served exactly */
    cell_evcache_reset(&c);
    for (uint64_t id = 1; id <= D11_EVCACHE_EVENTS + 10; id++) add(&c, id);
    CHECKF(c.n <= D11_EVCACHE_EVENTS && c.n > D11_EVCACHE_EVENTS / 2, "n %u", c.n);
    uint64_t first = c.id[0];
    CHECK(first > 1 && !cell_evcache_covers(&c, first - 1) && cell_evcache_covers(&c, first));
    d11_buf_reset(&b);
    CHECK(cell_evcache_get(&c, first, 50, &b, &last) == 50 && last == first + 50 && lines_are(&b, first + 1, first + 50, 1));
    d11_buf_reset(&b);
    uint32_t k = cell_evcache_get(&c, D11_EVCACHE_EVENTS, 100, &b, &last);
    CHECK(k == 10 && last == D11_EVCACHE_EVENTS + 10 && lines_are(&b, D11_EVCACHE_EVENTS + 1, D11_EVCACHE_EVENTS + 10, 1));
    cell_evcache_reset(&c);
    CHECK(c.n == 0 && !cell_evcache_covers(&c, first));
    d11_buf_free(&b);
    cell_evcache_free(&c);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail > 0;
}
