/*
 * test_bench_report.c — unit tests of the ramp stages (loadgen.c: rate, count and its
 * inverse over piecewise-linear stages) and of report.c (the per-second series in JSON,
 * the HTML report with its three SVG charts, the 401/403 count behind exit 2).
 *
 * Prints one line per failed check and, last, "N passed, N failed"; exits 1 on failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/loadgen.h"
#include "bench/report.h"

#include "check.h"

static void test_stages(void)
{
    d11_bench_opts o;
    memset(&o, 0, sizeof o);
    o.nstages = 2;
    o.stages[0] = (d11_bench_stage){10, 1000};  /* 0 -> 1000 over 10 s: 5000 requests */
    o.stages[1] = (d11_bench_stage){30, 20000}; /* 1000 -> 20000 over 30 s: 315000 */
    CHECK(fabs(d11_bench_stage_rate(&o, 0)) < 1e-9);
    CHECK(fabs(d11_bench_stage_rate(&o, 5) - 500) < 1e-9);
    CHECK(fabs(d11_bench_stage_rate(&o, 25) - 10500) < 1e-6);
    CHECK(fabs(d11_bench_stage_rate(&o, 99) - 20000) < 1e-9);
    CHECK(fabs(d11_bench_stage_count(&o, 10) - 5000) < 1e-6);
    CHECK(fabs(d11_bench_stage_count(&o, 40) - 320000) < 1e-3);
    CHECKF(fabs(d11_bench_stage_count(&o, 100) - 320000) < 1e-3, "count after the end %f",
           d11_bench_stage_count(&o, 100));
    int bad = 0;
    for (double n = 0; n <= 320000; n += 997) { /* time(count) is the inverse of count(time) */
        double t = d11_bench_stage_time(&o, n);
        if (fabs(d11_bench_stage_count(&o, t) - n) > 1e-3) bad++;
    }
    CHECKF(bad == 0, "%d inverse mismatches", bad);
    CHECK(isinf(d11_bench_stage_time(&o, 320001)));
    /* a flat stage */
    o.nstages = 1;
    o.stages[0] = (d11_bench_stage){4, 0};
    CHECK(isinf(d11_bench_stage_time(&o, 1)));
}

static void fill(d11_bench_result *r)
{
    d11_bench_result_init(r);
    r->nseries = r->capseries = 3;
    r->series = calloc(3, sizeof *r->series);
    for (int i = 0; i < 3; i++)
        r->series[i] = (d11_bench_sec){.t_s = i + 1, .target_rps = 100 * (i + 1), .rps = 90 * (i + 1), .ok = 90,
                                       .p50_us = 500, .p99_us = 2000, .p999_us = 4000, .max_us = 5000};
    for (int i = 0; i < 1000; i++) d11_hist_record(&r->lat, 100 + i);
    r->c.done = 10;
    d11_bench_count_outcome(&r->c, 401, "unauthorized", 4);
    d11_bench_count_outcome(&r->c, 403, "forbidden", 2);
    d11_bench_count_outcome(&r->c, 403, "risk_rejected", 3);
    d11_bench_count_outcome(&r->c, 201, "", 1);
}

static void test_report(void)
{
    d11_bench_result r;
    fill(&r);
    CHECK_EQ(d11_bench_auth_failures(&r), 6);
    d11_buf j;
    d11_buf_init(&j, 256);
    d11_bench_json_series(&j, &r);
    d11_buf_append(&j, "", 1);
    CHECKF(strstr(j.data, "\"series\":[{\"t_s\":1.000,\"target_rps\":100.0,\"rps\":90.0") &&
               strstr(j.data, "\"p999_us\":4000") && strstr(j.data, "{\"t_s\":3.000"),
           "%s", j.data);
    d11_buf_free(&j);
    char path[] = "/tmp/d11_report_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    CHECK_EQ(d11_bench_html(path, "a <b> & c", &r), 0);
    char *html = NULL;
    size_t n = 0;
    CHECK_EQ(d11_read_file(path, &html, &n), 0);
    int svgs = 0;
    for (const char *p = html; (p = strstr(p, "<svg ")); p++) svgs++;
    CHECK_EQ(svgs, 3);
    CHECKF(strstr(html, "a &lt;b> &amp; c") && strstr(html, "requests per second") && strstr(html, "latency (ms)") &&
               strstr(html, "99.9%") && strstr(html, "<polyline"),
           "html content");
    CHECKF(!strstr(html, "<script") && !strstr(html, "src=") && !strstr(html, "href="), "no script, no external resource");
    free(html);
    unlink(path);
    d11_bench_result_release(&r);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_stages();
    test_report();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
