/*
 * test_stats_agg.c — the live-sale-numbers window logic (src/stats/agg.c) and its SQLite
 * store (src/stats/db.c): window starts for 1 s / 1 min / UTC day; totals, GMV and units
 * per event type; per-SKU and per-category rows (a category counts an order once);
 * lateness (an event whose window closed before it arrived is still counted in its own
 * window and in `late`, never dropped; the watermark only moves forward); a replayed
 * page folds to identical deltas; the store's compare-and-set cursor (a stale writer gets
 * D11_STATS_ECONFLICT and changes nothing), sums added across commits, pruning beyond the
 * kept window counts, and a render that is one snapshot.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stats/agg.h"
#include "stats/db.h"
#include "check.h"

#define DAY0 1764547200000LL /* 2025-12-01T00:00:00Z */

static d11_stats_event ev(int type, int64_t at, uint64_t total)
{
    d11_stats_event e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.at = at;
    e.total_cents = total;
    return e;
}

static void line(d11_stats_event *e, const char *sku, const char *cat, uint32_t q, uint64_t price)
{
    d11_stats_line *l = &e->lines[e->nlines++];
    snprintf(l->sku, sizeof l->sku, "%s", sku);
    snprintf(l->cat, sizeof l->cat, "%s", cat);
    l->qty = q;
    l->price_cents = price;
}

static void test_windows(void)
{
    CHECK_EQ(d11_stats_win_start(D11_WIN_1S, DAY0 + 12345), DAY0 + 12000);
    CHECK_EQ(d11_stats_win_start(D11_WIN_1M, DAY0 + 12345), DAY0);
    CHECK_EQ(d11_stats_win_start(D11_WIN_1M, DAY0 + 60000), DAY0 + 60000);
    CHECK_EQ(d11_stats_win_start(D11_WIN_DAY, DAY0 + 86399999), DAY0); /* UTC day */
    CHECK_EQ(d11_stats_win_start(D11_WIN_DAY, DAY0 + 86400000), DAY0 + 86400000);
    CHECK(!d11_stats_closed(D11_WIN_1S, DAY0, DAY0 + 1000 + D11_STATS_LATENESS_MS - 1));
    CHECK(d11_stats_closed(D11_WIN_1S, DAY0, DAY0 + 1000 + D11_STATS_LATENESS_MS));
    CHECK_EQ(d11_stats_type("order.paid"), D11_EV_PAID);
    CHECK_EQ(d11_stats_type("order.shipped"), -1);
}

static void fold_page(d11_stats_batch *b, int64_t wm)
{
    d11_stats_batch_reset(b, wm);
    d11_stats_event e = ev(D11_EV_CREATED, DAY0 + 1500, 2 * 300 + 500);
    line(&e, "A", "toys", 2, 300);
    line(&e, "B", "toys", 1, 500); /* same category: the order counts once for it */
    d11_stats_add(b, &e);
    e = ev(D11_EV_PAID, DAY0 + 1700, 1100);
    line(&e, "A", "toys", 2, 300);
    line(&e, "B", "toys", 1, 500);
    d11_stats_add(b, &e);
    e = ev(D11_EV_CREATED, DAY0 + 61000, 250);
    line(&e, "C", "food", 1, 250);
    d11_stats_add(b, &e);
    d11_stats_add(b, &(d11_stats_event){.type = D11_EV_EXPIRED, .at = DAY0 + 62000, .total_cents = 250});
    /* late: its 1 s window [1000, 2000) closed at watermark 62000; its minute did not */
    d11_stats_add(b, &(d11_stats_event){.type = D11_EV_CANCELLED, .at = DAY0 + 1900, .total_cents = 1100});
}

static void test_fold(void)
{
    d11_stats_batch b;
    CHECK(d11_stats_batch_init(&b) == 0);
    fold_page(&b, 0);
    CHECK_EQ(b.nevents, 5);
    CHECK_EQ(b.wm, DAY0 + 62000); /* the largest `at`; the late event did not move it back */
    const d11_stats_row *s1 = d11_stats_find(&b, D11_WIN_1S, D11_DIM_TOTAL, DAY0 + 1000, "");
    CHECK(s1 != NULL);
    if (s1) {
        CHECK_EQ(s1->v[D11_V_CREATED], 1);
        CHECK_EQ(s1->v[D11_V_PAID], 1);
        CHECK_EQ(s1->v[D11_V_CANCELLED], 1); /* counted into its own window... */
        CHECK_EQ(s1->v[D11_V_LATE], 1);      /* ...and as late */
        CHECK_EQ(s1->v[D11_V_GMV_CREATED], 1100);
        CHECK_EQ(s1->v[D11_V_GMV_PAID], 1100);
        CHECK_EQ(s1->v[D11_V_UNITS_CREATED], 3);
        CHECK_EQ(s1->v[D11_V_UNITS_PAID], 3);
    }
    CHECK_EQ(b.late[D11_WIN_1S], 1);
    CHECK_EQ(b.late[D11_WIN_1M], 1); /* minute [0, 60000) closed at watermark 60000 + lateness = 62000 */
    const d11_stats_row *m0 = d11_stats_find(&b, D11_WIN_1M, D11_DIM_TOTAL, DAY0, "");
    CHECK(m0 && m0->v[D11_V_LATE] == b.late[D11_WIN_1M]);
    const d11_stats_row *day = d11_stats_find(&b, D11_WIN_DAY, D11_DIM_TOTAL, DAY0, "");
    CHECK(day != NULL);
    if (day) {
        CHECK_EQ(day->v[D11_V_CREATED], 2);
        CHECK_EQ(day->v[D11_V_EXPIRED], 1);
        CHECK_EQ(day->v[D11_V_GMV_CREATED], 1350);
        CHECK_EQ(day->v[D11_V_LATE], 0);
    }
    const d11_stats_row *a = d11_stats_find(&b, D11_WIN_DAY, D11_DIM_SKU, DAY0, "A");
    CHECK(a && a->v[D11_V_CREATED] == 1 && a->v[D11_V_UNITS_CREATED] == 2 && a->v[D11_V_GMV_PAID] == 600);
    const d11_stats_row *toys = d11_stats_find(&b, D11_WIN_DAY, D11_DIM_CATEGORY, DAY0, "toys");
    CHECK(toys && toys->v[D11_V_CREATED] == 1 && toys->v[D11_V_UNITS_PAID] == 3 && toys->v[D11_V_GMV_CREATED] == 1100);
    CHECK(d11_stats_find(&b, D11_WIN_1S, D11_DIM_SKU, DAY0 + 1000, "C") == NULL);
    /* a replay of the same page from the same watermark gives the same rows */
    d11_stats_row first[64];
    int n = b.nused;
    CHECK(n <= 64);
    for (int i = 0; i < n && i < 64; i++) first[i] = b.slot[b.used_idx[i]];
    fold_page(&b, 0);
    CHECK_EQ(b.nused, n);
    bool same = true;
    for (int i = 0; i < n && i < 64; i++) same = same && !memcmp(&first[i], &b.slot[b.used_idx[i]], sizeof first[i]);
    CHECK(same);
    /* folded again after the watermark moved: everything before it is late */
    fold_page(&b, DAY0 + 10 * 60000);
    CHECK_EQ(b.late[D11_WIN_1S], 5);
    CHECK_EQ(b.late[D11_WIN_1M], 5);
    CHECK_EQ(b.late[D11_WIN_DAY], 0);
    d11_stats_batch_free(&b);
}

static long count(const char *json, const char *needle)
{
    long n = 0;
    for (const char *p = json; (p = strstr(p, needle)); p++) n++;
    return n;
}

static void test_db(void)
{
    char path[] = "/tmp/d11-stats-unit-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    unlink(path);
    d11_stats_db *d = NULL, *rd = NULL;
    CHECK(d11_stats_db_open(path, false, &d) == 0);
    d11_stats_state st;
    CHECK(d11_stats_db_state(d, &st) == 0 && st.cursor[0] == 0 && st.wm == 0);
    d11_stats_batch b;
    CHECK(d11_stats_batch_init(&b) == 0);
    fold_page(&b, 0);
    CHECK_RC(d11_stats_db_commit(d, "", "e1.3.2", &b, NULL, NULL), 0);
    /* a writer still at "" (another aggregator, or a stale one) may not add the page again */
    CHECK_RC(d11_stats_db_commit(d, "", "e1.3.2", &b, NULL, NULL), D11_STATS_ECONFLICT);
    CHECK(d11_stats_db_state(d, &st) == 0);
    CHECK_STREQ(st.cursor, "e1.3.2");
    CHECK_EQ(st.events, 5);
    CHECK_EQ(st.wm, DAY0 + 62000);
    CHECK_EQ(st.late[D11_WIN_1S], 1);
    fold_page(&b, st.wm);
    CHECK_RC(d11_stats_db_commit(d, "e1.3.2", "e1.6.4", &b, NULL, NULL), 0);
    CHECK(d11_stats_db_open(path, true, &rd) == 0);
    d11_buf o;
    d11_buf_init(&o, 4096);
    d11_stats_query q = {.kind = D11_WIN_DAY, .limit = 10, .top = 10};
    CHECK(d11_stats_db_render(rd, &q, &o) == 0);
    d11_buf_append(&o, "", 1);
    CHECKF(strstr(o.data, "\"orders_created\":4,\"orders_paid\":2,\"orders_cancelled\":2,\"orders_expired\":2,"
                          "\"gmv_created_cents\":2700") != NULL, "%s", o.data);
    CHECKF(strstr(o.data, "\"cursor\":\"e1.6.4\"") && strstr(o.data, "{\"sku\":\"A\"") &&
               strstr(o.data, "{\"category\":\"toys\""), "%s", o.data);
    d11_buf_reset(&o);
    q = (d11_stats_query){.kind = D11_WIN_1S, .sku = "A", .limit = 100};
    CHECK(d11_stats_db_render(rd, &q, &o) == 0);
    d11_buf_append(&o, "", 1);
    CHECKF(count(o.data, "\"start_ms\"") == 1 && strstr(o.data, "\"units_created\":4"), "%s", o.data);
    /* far later events: the old 1 s windows fall out (kept: D11_STATS_KEEP_1S), the day stays */
    d11_stats_batch_reset(&b, st.wm);
    d11_stats_add(&b, &(d11_stats_event){.type = D11_EV_EXPIRED, .at = DAY0 + 3600000, .total_cents = 1});
    CHECK_RC(d11_stats_db_commit(d, "e1.6.4", "e1.7.4", &b, NULL, NULL), 0);
    d11_buf_reset(&o);
    q = (d11_stats_query){.kind = D11_WIN_1S, .limit = 100};
    CHECK(d11_stats_db_render(rd, &q, &o) == 0);
    d11_buf_append(&o, "", 1);
    CHECKF(count(o.data, "\"start_ms\"") == 1, "%s", o.data);
    d11_buf_reset(&o);
    q = (d11_stats_query){.kind = D11_WIN_DAY, .limit = 100};
    CHECK(d11_stats_db_render(rd, &q, &o) == 0);
    d11_buf_append(&o, "", 1);
    CHECKF(strstr(o.data, "\"orders_expired\":3") != NULL, "%s", o.data);
    d11_buf_free(&o);
    d11_stats_batch_free(&b);
    d11_stats_db_close(rd);
    d11_stats_db_close(d);
    char p2[sizeof path + 8];
    unlink(path);
    snprintf(p2, sizeof p2, "%s-wal", path);
    unlink(p2);
    snprintf(p2, sizeof p2, "%s-shm", path);
    unlink(p2);
}

int main(void)
{
    d11_log_init("test_stats_agg", 3);
    test_windows();
    test_fold();
    test_db();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
