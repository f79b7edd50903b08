/*
 * test_promtext.c — unit test of src/core/promtext.{h,c}: histogram bucketing at the
 * bounds (100 us lands in le=0.0001, 101 us in the next), cumulative buckets and _count,
 * the merge of several expositions (one HELP/TYPE per family, samples of every text,
 * histogram suffixes kept with their family, families in first-seen order) and the
 * process_* families (present, labelled, plausible values).
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/promtext.h"
#include "core/util.h"

#include "check.h"

static int count_sub(const char *s, const char *sub)
{
    int n = 0;
    for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
    return n;
}

static void test_hist(void)
{
    d11_hist_us h = {0};
    d11_hist_us_add(&h, 100);
    d11_hist_us_add(&h, 101);
    d11_hist_us_add(&h, 0);
    d11_hist_us_add(&h, 9000000);
    CHECK_EQ(h.count, 4u);
    d11_buf b;
    d11_buf_init(&b, 256);
    d11_buf_puts(&b, "");
    d11_prom_hist_us(&b, "x_seconds", "part=\"a\"", &h);
    d11_buf_append(&b, "", 1);
    CHECKF(strstr(b.data, "x_seconds_bucket{part=\"a\",le=\"0.0001\"} 2\n") != NULL, "%s", b.data);
    CHECKF(strstr(b.data, "x_seconds_bucket{part=\"a\",le=\"0.0002\"} 3\n") != NULL, "%s", b.data);
    CHECKF(strstr(b.data, "x_seconds_bucket{part=\"a\",le=\"5\"} 3\n") != NULL, "%s", b.data);
    CHECKF(strstr(b.data, "x_seconds_bucket{part=\"a\",le=\"+Inf\"} 4\n") != NULL, "%s", b.data);
    CHECKF(strstr(b.data, "x_seconds_count{part=\"a\"} 4\n") != NULL, "%s", b.data);
    CHECK_EQ(count_sub(b.data, "_bucket{"), D11_HIST_US_N + 1);
    d11_hist_n hn = {0};
    d11_hist_n_add(&hn, 1);
    d11_hist_n_add(&hn, 3);
    d11_hist_n_add(&hn, 100000);
    d11_buf_reset(&b);
    d11_prom_hist_n(&b, "y", "", &hn);
    d11_buf_append(&b, "", 1);
    CHECKF(strstr(b.data, "y_bucket{le=\"1\"} 1\n") && strstr(b.data, "y_bucket{le=\"4\"} 2\n") &&
               strstr(b.data, "y_bucket{le=\"+Inf\"} 3\n") && strstr(b.data, "y_sum 100004.000000\n"),
           "%s", b.data);
    d11_buf_free(&b);
}

static void test_merge(void)
{
    const char *a = "# HELP m_total A.\n# TYPE m_total counter\nm_total{part=\"g\"} 1\n"
                    "# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\n"
                    "h_seconds_sum 0.1\nh_seconds_count 1\n";
    const char *c = "# HELP z Z.\n# TYPE z gauge\nz{part=\"c\"} 7\n# HELP m_total A.\n# TYPE m_total counter\n"
                    "m_total{part=\"c\"} 2\n# HELP h_seconds H.\n# TYPE h_seconds histogram\n"
                    "h_seconds_bucket{part=\"c\",le=\"+Inf\"} 5\nh_seconds_count{part=\"c\"} 5\nstray 1";
    const char *texts[2] = {a, c};
    size_t lens[2] = {strlen(a), strlen(c)};
    d11_buf b;
    d11_buf_init(&b, 256);
    d11_prom_merge(&b, texts, lens, 2);
    d11_buf_append(&b, "", 1);
    const char *want = "# HELP m_total A.\n# TYPE m_total counter\nm_total{part=\"g\"} 1\nm_total{part=\"c\"} 2\n"
                       "# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"+Inf\"} 1\n"
                       "h_seconds_sum 0.1\nh_seconds_count 1\nh_seconds_bucket{part=\"c\",le=\"+Inf\"} 5\n"
                       "h_seconds_count{part=\"c\"} 5\n# HELP z Z.\n# TYPE z gauge\nz{part=\"c\"} 7\n";
    CHECKF(strcmp(b.data, want) == 0, "merge:\n%s\nwant:\n%s", b.data, want);
    d11_buf_free(&b);
}

static void test_process(void)
{
    d11_buf b;
    d11_buf_init(&b, 256);
    d11_prom_process(&b, "cell-3");
    d11_buf_append(&b, "", 1);
    CHECKF(strstr(b.data, "# TYPE process_cpu_seconds_total counter\n") != NULL, "%s", b.data);
    const char *p = strstr(b.data, "process_open_fds{part=\"cell-3\"} ");
    CHECKF(p && strtol(p + strlen("process_open_fds{part=\"cell-3\"} "), NULL, 10) >= 3, "%s", b.data);
    p = strstr(b.data, "process_resident_memory_bytes{part=\"cell-3\"} ");
    CHECKF(p && atof(p + strlen("process_resident_memory_bytes{part=\"cell-3\"} ")) > 100000, "%s", b.data);
    p = strstr(b.data, "process_start_time_seconds{part=\"cell-3\"} ");
    CHECKF(p && atof(p + strlen("process_start_time_seconds{part=\"cell-3\"} ")) > 1.6e9, "%s", b.data);
    CHECKF(strstr(b.data, "d11_build_info{part=\"cell-3\",version=\"" D11_VERSION "\"") != NULL, "%s", b.data);
    CHECKF(strstr(b.data, "d11_process_restarts_total{part=\"cell-3\"} 0\n") != NULL, "%s", b.data);
    setenv("D11_RESTARTS", "4", 1);
    d11_buf_reset(&b);
    d11_prom_process(&b, "x");
    d11_buf_append(&b, "", 1);
    CHECKF(strstr(b.data, "d11_process_restarts_total{part=\"x\"} 4\n") != NULL, "%s", b.data);
    unsetenv("D11_RESTARTS");
    d11_buf_free(&b);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_hist();
    test_merge();
    test_process();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
