/*
 * test_rehearse.c — the pure parts of `d11 rehearse` (src/rehearse): the SVG plot writer
 * (coordinates of data points, axes with round ticks and units, fault bands, clamping of
 * NaN / negative / out-of-range values, escaping, lanes), the Prometheus text reader, the
 * plan (fault list, stage list, the --quick layout) and the checks (a goodput below the
 * threshold turns the verdict to fail; skipped checks do not).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rehearse/rehearse.h"
#include "check.h"

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
    return n;
}

static void test_lines(void)
{
    /* plot area: x 72..740 (668 px) for 0..10 s; y 254 (0) .. 44 (top = 100) */
    double x[3] = {0, 5, 10}, y[3] = {0, 50, 100};
    d11_rh_line l = {"ok/s", "#2ca02c", x, y, 3, false};
    d11_rh_band band = {2, 4, "pause <cell 0>"};
    d11_rh_chart c = {"tp", "Throughput & more", "time since start (s)", "requests per second", 10, &band, 1};
    d11_buf b;
    d11_buf_init(&b, 4096);
    d11_rh_svg_lines(&b, &c, &l, 1);
    d11_buf_append(&b, "", 1);
    const char *s = b.data;
    CHECKF(strstr(s, "points=\"72.0,254.0 406.0,149.0 740.0,44.0\""), "%s", s);
    CHECK_EQ(count(s, "<circle class=\"pt\""), 3);
    CHECK(strstr(s, "cx=\"406.0\" cy=\"149.0\"") != NULL);
    CHECK(strstr(s, "data-points=\"3\"") != NULL);
    /* y ticks 0, 20, .. 100 and x ticks 0, 2, .. 10, with the units in the axis titles */
    CHECK_EQ(count(s, "class=\"ytick\""), 6);
    CHECK(strstr(s, ">100</text>") != NULL);
    CHECK_EQ(count(s, "class=\"xtick\""), 6);
    CHECK(strstr(s, ">requests per second</text>") && strstr(s, ">time since start (s)</text>"));
    /* the band: x 2..4 s = 205.6 .. 339.2 px, its label escaped */
    CHECKF(strstr(s, "class=\"band\" x=\"205.6\" y=\"44\" width=\"133.6\"") != NULL, "%s", s);
    CHECK(strstr(s, "pause &lt;cell 0&gt;") != NULL);
    CHECK(strstr(s, "Throughput &amp; more") != NULL);
    CHECK(strncmp(s, "<svg ", 5) == 0 && strstr(s, "</svg>\n") != NULL);
    d11_buf_free(&b);

    /* NaN, negative and values past the axis are clamped into the plot area */
    double x2[4] = {-1, NAN, 3, 50}, y2[4] = {NAN, -5, 7, INFINITY};
    d11_rh_line l2 = {"p99", "#f00", x2, y2, 4, true};
    d11_rh_chart c2 = {"lat", "Latency", "time (s)", "latency (ms)", 10, NULL, 0};
    d11_buf_init(&b, 4096);
    d11_rh_svg_lines(&b, &c2, &l2, 1);
    d11_buf_append(&b, "", 1);
    CHECKF(!strstr(b.data, "nan") && !strstr(b.data, "inf"), "%s", b.data);
    CHECK(strstr(b.data, "points=\"72.0,254.0 72.0,254.0 ") != NULL);
    CHECK(strstr(b.data, " 740.0,") != NULL); /* x = 50 clamped to the axis end */
    CHECK(strstr(b.data, "stroke-dasharray") != NULL);
    d11_buf_free(&b);

    /* no data at all: still a well-formed chart with an axis */
    d11_buf_init(&b, 1024);
    d11_rh_chart c3 = {"e", "Empty", "t (s)", "n", 0, NULL, 0};
    d11_rh_svg_lines(&b, &c3, NULL, 0);
    d11_buf_append(&b, "", 1);
    CHECK(strstr(b.data, "class=\"ytick\"") && strstr(b.data, "</svg>"));
    d11_buf_free(&b);
}

static void test_lanes(void)
{
    double x[4] = {0, 1, 2, 3};
    int8_t c0[4] = {0, 2, 1, 0}, c1[4] = {0, 0, -1, 0};
    const int8_t *st[2] = {c0, c1};
    const char *names[2] = {"cell 0", "cell 1"};
    d11_rh_chart c = {"cells", "Health", "time since start (s)", "cell", 4, NULL, 0};
    d11_buf b;
    d11_buf_init(&b, 4096);
    d11_rh_svg_lanes(&b, &c, names, 2, x, st, 4);
    d11_buf_append(&b, "", 1);
    CHECK_EQ(count(b.data, "<rect class=\"pt\""), 7); /* the unknown sample is not drawn */
    CHECK_EQ(count(b.data, "data-state=\"down\""), 1);
    CHECK_EQ(count(b.data, "data-state=\"breaker open\""), 1);
    CHECK_EQ(count(b.data, "data-state=\"up\""), 5);
    CHECK(strstr(b.data, ">cell 1</text>") != NULL);
    d11_buf_free(&b);
}

static void test_prom(void)
{
    const char *t = "# HELP x\n"
                    "d11_gateway_protect_refused_total{reason=\"inflight\"} 7\n"
                    "d11_gateway_protect_refused_total{reason=\"rt\"} 5\n"
                    "d11_gateway_protect_refused_totalx 100\n"
                    "d11_gateway_rejections_total{rule=\"flow\",resource=\"orders.create\"} 3\n"
                    "d11_gateway_rejections_total{rule=\"degrade\",resource=\"orders.create\"} 4\n"
                    "d11_gateway_rejections_total{rule=\"flow\",resource=\"orders.read\"} 2\n"
                    "d11_gateway_protect_limit 256\n";
    double v = -1;
    CHECK(d11_rh_prom_sum(t, strlen(t), "d11_gateway_protect_refused_total", NULL, &v) && v == 12);
    CHECK(d11_rh_prom_sum(t, strlen(t), "d11_gateway_rejections_total", "rule=\"flow\"", &v) && v == 5);
    CHECK(d11_rh_prom_sum(t, strlen(t), "d11_gateway_protect_limit", "", &v) && v == 256);
    CHECK(!d11_rh_prom_sum(t, strlen(t), "d11_gateway_rejections_total", "rule=\"risk\"", &v));
    CHECK(!d11_rh_prom_sum(t, strlen(t), "d11_absent", NULL, &v));
}

static void test_plan(void)
{
    static d11_rh_opts o;
    memset(&o, 0, sizeof o);
    d11_rh_plan_defaults(&o, true);
    CHECK_EQ(o.nstages, 5);
    CHECK(o.stages[4].faults && o.stages[3].mult == 3 && o.stages[0].mult == 0.5);
    CHECK_EQ(o.nfaults, 5);
    CHECK(o.faults[0].kind == D11_RH_F_PAUSE && o.faults[3].kind == D11_RH_F_DEGRADE &&
          o.faults[4].kind == D11_RH_F_KILL);
    /* quick: 0.5 + 6 + 1 + 2 + 1 + 1.5 + 1 + 2 + 1 + 8 (recover) + 1 (tail) */
    CHECKF(fabs(o.stages[4].dur_s - 25) < 1e-9, "%f", o.stages[4].dur_s);
    for (int i = 1; i < o.nfaults; i++) CHECK(o.faults[i].at_s >= o.faults[i - 1].at_s + o.faults[i - 1].dur_s);
    char err[200];
    CHECK_RC(d11_rh_plan_faults(&o, "kill,bogus", err, sizeof err), -1);
    CHECK_RC(d11_rh_plan_faults(&o, "none", err, sizeof err), 0);
    CHECK_EQ(o.nfaults, 0);
    CHECK(o.stages[o.nstages - 1].dur_s == 0);
    CHECK_RC(d11_rh_plan_stages(&o, "1,x", err, sizeof err), -1);
    CHECK_RC(d11_rh_plan_stages(&o, "1,4", err, sizeof err), 0);
    CHECK_EQ(o.nstages, 3);
}

/* A run whose numbers all pass; then one goodput below the threshold. */
static void test_checks(void)
{
    static d11_rh_opts o;
    static d11_rh_run r;
    static d11_rh_sample samples[2];
    memset(&o, 0, sizeof o);
    memset(&r, 0, sizeof r);
    d11_rh_plan_defaults(&o, true);
    char err[64];
    CHECK_RC(d11_rh_plan_faults(&o, "none", err, sizeof err), 0);
    r.o = &o;
    r.capacity = 1000;
    for (int i = 0; i < o.nstages - 1; i++) {
        d11_rh_stage *s = &o.stages[i];
        s->done = true;
        s->rate = s->mult * 1000;
        s->sent = (int64_t)(s->rate * 2);
        s->ok = s->mult > 1 ? 1800 : s->sent;
        s->refused = s->sent - s->ok;
        s->ok_per_s = (double)s->ok / 2;
        s->ok_p99_us = s->mult > 1 ? 20000 : 5000;
    }
    r.nprobes = 10;
    r.probe_refused = r.probe_refused_ra = 2;
    r.probe_refused_ms[0] = 1;
    r.probe_refused_ms[1] = 3;
    samples[0] = (d11_rh_sample){.t_s = 0, .ok = true, .ncells = 2, .cell_up = {1, 1}};
    samples[1] = (d11_rh_sample){.t_s = 1, .ok = true, .ncells = 2, .cell_up = {1, 1}};
    r.samples = samples;
    r.nsamples = 2;
    r.audit_rc = -1;
    d11_rh_evaluate(&r);
    int fails = 0, skips = 0;
    for (int i = 0; i < r.nchecks; i++) {
        fails += r.checks[i].status == 0;
        skips += r.checks[i].status < 0;
        if (r.checks[i].status == 0) printf("unexpected fail: %s: %s\n", r.checks[i].name, r.checks[i].detail);
    }
    CHECK_EQ(fails, 0);
    CHECK(skips >= 4); /* no faults, no audit */
    CHECK(r.pass);
    o.goodput_min = 5; /* 5 x C = 5000/s: the top stage served 900/s */
    d11_rh_evaluate(&r);
    CHECK(!r.pass);
    for (int i = 0; i < r.nchecks; i++)
        if (!strcmp(r.checks[i].name, "goodput_at_overload")) CHECK_EQ(r.checks[i].status, 0);
    o.goodput_min = 0.5;
    o.stages[3].refused = 100; /* most of the unserved excess waited instead of being refused */
    o.stages[3].unsent = o.stages[3].sent - o.stages[3].ok - 100;
    d11_rh_evaluate(&r);
    CHECK(!r.pass);
    for (int i = 0; i < r.nchecks; i++)
        if (!strcmp(r.checks[i].name, "protection_refused_past_capacity")) CHECK_EQ(r.checks[i].status, 0);
    o.stages[3].refused = o.stages[3].sent - o.stages[3].ok;
    o.stages[3].unsent = 0;
    d11_rh_evaluate(&r);
    CHECK(r.pass);
    r.probe_refused_ra = 1; /* a refusal without Retry-After */
    d11_rh_evaluate(&r);
    CHECK(!r.pass);
    r.probe_refused_ra = 2;
    r.real_sold_after = 1; /* the real stock moved */
    d11_rh_evaluate(&r);
    CHECK(!r.pass);
}

int main(void)
{
    test_lines();
    test_lanes();
    test_prom();
    test_plan();
    test_checks();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
