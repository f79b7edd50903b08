/*
 * test_topk.c — the hot-SKU summary (src/gateway/topk.c): exact counts while SKUs fit
 * the counters; space-saving replacement keeps every heavy hitter with err <= count and
 * an overestimate bounded by err; halving per half-life (and forgetting zeros); the merge
 * of several threads' summaries sums per SKU and orders by count, at most k.
 */
#include <stdio.h>
#include <string.h>

#include "gateway/topk.h"
#include "check.h"

static void add(gw_topk *k, const char *s, uint64_t w, int64_t now) { gw_topk_add(k, s, strlen(s), w, now); }

static const gw_topk_entry *find(const gw_topk *k, const char *s)
{
    for (int i = 0; i < k->n; i++)
        if (strcmp(k->e[i].sku, s) == 0) return &k->e[i];
    return NULL;
}

static void exact_while_it_fits(void)
{
    gw_topk k;
    gw_topk_init(&k, 0);
    add(&k, "A", 5, 0);
    add(&k, "B", 2, 0);
    add(&k, "A", 1, 0);
    CHECK_EQ(k.n, 2);
    CHECK_EQ(find(&k, "A")->count, 6);
    CHECK_EQ(find(&k, "A")->err, 0);
    CHECK_EQ(find(&k, "B")->count, 2);
}

static void heavy_hitters_survive_a_long_tail(void)
{
    gw_topk k;
    gw_topk_init(&k, 0);
    char s[16];
    uint64_t hot = 0;
    /* 3 hot SKUs get 1 of every 4 requests each; 5000 distinct cold SKUs share the rest */
    for (int i = 0; i < 20000; i++) {
        if (i % 4 != 3) {
            snprintf(s, sizeof s, "HOT%d", i % 4);
            hot += i % 4 == 0;
        } else {
            snprintf(s, sizeof s, "c%d", i % 5000);
        }
        add(&k, s, 1, 0);
    }
    CHECK(k.n == GW_TOPK_SLOTS);
    for (int h = 0; h < 3; h++) {
        snprintf(s, sizeof s, "HOT%d", h);
        const gw_topk_entry *e = find(&k, s);
        CHECKF(e != NULL, "%s kept", s);
        if (e) {
            CHECK(e->err <= e->count);
            CHECK(e->count >= hot && e->count - e->err <= hot); /* overestimate bounded by err */
        }
    }
    gw_topk_entry top[GW_HOT_SKU_K];
    int n = gw_topk_merge(&k, 1, top, 3);
    CHECK_EQ(n, 3);
    for (int i = 0; i < n; i++) CHECK(strncmp(top[i].sku, "HOT", 3) == 0);
}

static void decay_halves_and_forgets(void)
{
    gw_topk k;
    gw_topk_init(&k, 1000);
    add(&k, "A", 8, 1000);
    add(&k, "B", 1, 1000);
    gw_topk_decay(&k, 1000 + GW_TOPK_HALF_LIFE_MS - 1);
    CHECK_EQ(find(&k, "A")->count, 8); /* not yet */
    gw_topk_decay(&k, 1000 + 2 * GW_TOPK_HALF_LIFE_MS);
    CHECK_EQ(find(&k, "A")->count, 2);
    CHECK(find(&k, "B") == NULL); /* 1 >> 2 = 0: its counter is free again */
    CHECK_EQ(k.n, 1);
    add(&k, "C", 1, 1000 + 2 * GW_TOPK_HALF_LIFE_MS + 5);
    CHECK_EQ(k.n, 2);
}

static void merge_sums_threads(void)
{
    gw_topk t[3];
    for (int i = 0; i < 3; i++) gw_topk_init(&t[i], 0);
    add(&t[0], "X", 5, 0);
    add(&t[1], "X", 7, 0);
    add(&t[1], "Y", 10, 0);
    add(&t[2], "Z", 1, 0);
    add(&t[2], "Y", 1, 0);
    gw_topk_entry out[GW_HOT_SKU_K];
    int n = gw_topk_merge(t, 3, out, GW_HOT_SKU_K);
    CHECK_EQ(n, 3);
    CHECK_STREQ(out[0].sku, "X"); /* 12 */
    CHECK_EQ(out[0].count, 12);
    CHECK_STREQ(out[1].sku, "Y"); /* 11 */
    CHECK_EQ(out[1].count, 11);
    CHECK_STREQ(out[2].sku, "Z");
    CHECK_EQ(gw_topk_merge(t, 3, out, 2), 2);
    CHECK_EQ(gw_topk_merge(t, 0, out, 2), 0);
}

int main(void)
{
    exact_while_it_fits();
    heavy_hitters_survive_a_long_tail();
    decay_halves_and_forgets();
    merge_sums_threads();
    printf("test_topk: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
