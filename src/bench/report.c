/*
 * report.c — series, HTML/SVG report and auth-failure count of `d11 bench` (report.h).
 *
 * The charts are drawn as SVG polylines by chart(): a plot area with a left axis
 * (5 "nice" ticks from 0 to the rounded maximum, unit in the axis title), a bottom axis
 * (time in seconds, or percentiles on a log scale of 1/(1-p)), a legend; every number is
 * written by this file, so the page needs nothing but a browser.
 */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void d11_bench_json_series(d11_buf *j, const d11_bench_result *r)
{
    d11_buf_puts(j, "\"series\":[");
    for (int i = 0; i < r->nseries; i++) {
        const d11_bench_sec *s = &r->series[i];
        d11_buf_printf(j,
                       "%s{\"t_s\":%.3f,\"target_rps\":%.1f,\"rps\":%.1f,\"ok\":%lld,\"rejected\":%lld,"
                       "\"errors\":%lld,\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld,\"p999_us\":%lld,"
                       "\"max_us\":%lld,\"inflight\":%lld}",
                       i ? "," : "", s->t_s, s->target_rps, s->rps, (long long)s->ok, (long long)s->rejected,
                       (long long)s->errors, (long long)s->p50_us, (long long)s->p90_us, (long long)s->p99_us,
                       (long long)s->p999_us, (long long)s->max_us, (long long)s->inflight);
    }
    d11_buf_puts(j, "]");
}

int64_t d11_bench_auth_failures(const d11_bench_result *r)
{
    int64_t n = 0;
    for (int i = 0; i < r->c.n_outcomes; i++) {
        const d11_bench_outcome *o = &r->c.outcome[i];
        if (o->status == 401 || (o->status == 403 && strncmp(o->code, "risk_", 5) != 0)) n += o->count;
    }
    return n;
}

/* ---- SVG ---- */

#define CH_W 860
#define CH_H 300
#define PAD_L 70
#define PAD_R 150
#define PAD_T 34
#define PAD_B 46
#define LINES_MAX 6

typedef struct line {
    const char   *name, *color;
    const double *x, *y;
    int           n;
    bool          dashed;
} line;

/* A round step so that 5 steps cover max. */
static double nice_step(double max)
{
    if (max <= 0) return 1;
    double raw = max / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double nf = f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10;
    return nf * mag;
}

static void fmt_num(char *out, size_t n, double v)
{
    if (fabs(v) >= 1e6) snprintf(out, n, "%.3gM", v / 1e6);
    else if (fabs(v) >= 1e4) snprintf(out, n, "%.3gk", v / 1e3);
    else snprintf(out, n, "%g", round(v * 1000) / 1000);
}

/* xmode 0: linear x (seconds); 1: x given as -log10(1-p) with percentile tick labels. */
static void chart(d11_buf *b, const char *title, const char *xlabel, const char *ylabel, const line *ls, int nl,
                  int xmode)
{
    double xmin = INFINITY, xmax = -INFINITY, ymax = 0;
    for (int k = 0; k < nl; k++)
        for (int i = 0; i < ls[k].n; i++) {
            if (ls[k].x[i] < xmin) xmin = ls[k].x[i];
            if (ls[k].x[i] > xmax) xmax = ls[k].x[i];
            if (ls[k].y[i] > ymax) ymax = ls[k].y[i];
        }
    if (!isfinite(xmin)) xmin = 0, xmax = 1;
    if (xmode == 0) xmin = 0;
    if (xmax <= xmin) xmax = xmin + 1;
    double ystep = nice_step(ymax), ytop = ystep * ceil(ymax / ystep);
    if (ytop <= 0) ytop = ystep * 5;
    int pw = CH_W - PAD_L - PAD_R, ph = CH_H - PAD_T - PAD_B;
#define X(v) (PAD_L + ((v) - xmin) / (xmax - xmin) * pw)
#define Y(v) (PAD_T + ph - (v) / ytop * ph)
    d11_buf_printf(b,
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                   "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n"
                   "<text x=\"%d\" y=\"20\" font-size=\"15\" font-weight=\"bold\">%s</text>\n",
                   CH_W, CH_H, CH_W, CH_H, PAD_L, title);
    for (double v = 0; v <= ytop + ystep / 2; v += ystep) { /* y grid and ticks */
        char t[32];
        fmt_num(t, sizeof t, v);
        d11_buf_printf(b,
                       "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                       "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n",
                       PAD_L, PAD_L + pw, Y(v), Y(v), PAD_L - 6, Y(v) + 4, t);
    }
    if (xmode == 0) {
        double xs = nice_step(xmax - xmin);
        for (double v = xmin; v <= xmax + xs / 100; v += xs) {
            char t[32];
            fmt_num(t, sizeof t, v);
            d11_buf_printf(b,
                           "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#888\"/>"
                           "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                           X(v), X(v), PAD_T + ph, PAD_T + ph + 5, X(v), PAD_T + ph + 18, t);
        }
    } else {
        static const char *const lab[] = {"0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"};
        for (int k = 0; k <= 6 && k <= xmax + 0.01; k++)
            d11_buf_printf(b,
                           "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>"
                           "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                           X((double)k), X((double)k), PAD_T, PAD_T + ph, X((double)k), PAD_T + ph + 18, lab[k]);
    }
    d11_buf_printf(b,
                   "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>"
                   "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"#000\"/>\n"
                   "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>\n"
                   "<text transform=\"translate(16,%d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n",
                   PAD_L, PAD_L + pw, PAD_T + ph, PAD_T + ph, PAD_L, PAD_L, PAD_T, PAD_T + ph, PAD_L + pw / 2,
                   CH_H - 8, xlabel, PAD_T + ph / 2, ylabel);
    for (int k = 0; k < nl; k++) {
        const line *l = &ls[k];
        d11_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", l->color,
                       l->dashed ? " stroke-dasharray=\"6 4\"" : "");
        for (int i = 0; i < l->n; i++) d11_buf_printf(b, "%s%.1f,%.1f", i ? " " : "", X(l->x[i]), Y(l->y[i]));
        d11_buf_puts(b, "\"/>\n");
        d11_buf_printf(b,
                       "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/>"
                       "<text x=\"%d\" y=\"%d\">%s</text>\n",
                       PAD_L + pw + 12, PAD_L + pw + 30, PAD_T + 10 + 18 * k, PAD_T + 10 + 18 * k, l->color,
                       PAD_L + pw + 36, PAD_T + 14 + 18 * k, l->name);
    }
    d11_buf_puts(b, "</svg>\n");
#undef X
#undef Y
}

int d11_bench_html(const char *path, const char *about, const d11_bench_result *r)
{
    int n = r->nseries;
    double *v = calloc((size_t)(n > 0 ? n : 1) * 9 + 2 * 64, sizeof *v);
    if (!v) return -ENOMEM;
    double *t = v, *rps = v + n, *ok = v + 2 * n, *rej = v + 3 * n, *err = v + 4 * n, *tgt = v + 5 * n,
           *p50 = v + 6 * n, *p99 = v + 7 * n, *p999 = v + 8 * n, *px = v + 9 * n, *py = v + 9 * n + 64;
    bool any_target = false;
    for (int i = 0; i < n; i++) {
        const d11_bench_sec *s = &r->series[i];
        t[i] = s->t_s;
        rps[i] = s->rps;
        ok[i] = (double)s->ok;
        rej[i] = (double)s->rejected;
        err[i] = (double)s->errors;
        tgt[i] = s->target_rps;
        any_target |= s->target_rps > 0;
        p50[i] = (double)s->p50_us / 1000;
        p99[i] = (double)s->p99_us / 1000;
        p999[i] = (double)s->p999_us / 1000;
    }
    int np = 0; /* spectrum: 0 .. 99.9999 % on -log10(1-p) */
    for (double x = 0; x <= 6.0001 && np < 64; x += 0.125, np++) {
        double p = 100 * (1 - pow(10, -x));
        px[np] = x;
        py[np] = (double)d11_hist_percentile(&r->lat, p) / 1000;
    }
    d11_buf b;
    d11_buf_init(&b, 65536);
    d11_buf_puts(&b, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>d11 bench report</title>\n"
                     "<style>body{font-family:sans-serif;margin:24px;color:#222}td,th{padding:2px 10px;"
                     "text-align:right}</style></head><body>\n<h1>d11 bench report</h1>\n<p>");
    for (const char *p = about; *p; p++) { /* escape */
        if (*p == '<') d11_buf_puts(&b, "&lt;");
        else if (*p == '&') d11_buf_puts(&b, "&amp;");
        else d11_buf_append(&b, p, 1);
    }
    d11_buf_printf(&b,
                   "</p>\n<table><tr><th>answered</th><th>ok</th><th>rejected</th><th>errors</th><th>elapsed</th>"
                   "<th>p50</th><th>p99</th><th>p99.9</th><th>max</th></tr>\n<tr><td>%lld</td><td>%lld</td>"
                   "<td>%lld</td><td>%lld</td><td>%.1f s</td><td>%.3f ms</td><td>%.3f ms</td><td>%.3f ms</td>"
                   "<td>%.3f ms</td></tr></table>\n",
                   (long long)r->c.done, (long long)r->c.cls[D11_CLS_OK], (long long)r->c.cls[D11_CLS_REJECT],
                   (long long)r->c.cls[D11_CLS_ERROR], r->elapsed_s, d11_hist_percentile(&r->lat, 50) / 1000.0,
                   d11_hist_percentile(&r->lat, 99) / 1000.0, d11_hist_percentile(&r->lat, 99.9) / 1000.0,
                   r->lat.max / 1000.0);
    line thr[5] = {{"answers/s", "#1f77b4", t, rps, n, false},
                   {"ok/s", "#2ca02c", t, ok, n, false},
                   {"rejected/s", "#ff7f0e", t, rej, n, false},
                   {"errors/s", "#d62728", t, err, n, false},
                   {"target/s", "#555", t, tgt, n, true}};
    chart(&b, "Throughput over time", "time since start (s)", "requests per second", thr, any_target ? 5 : 4, 0);
    line lat[3] = {{"p50", "#2ca02c", t, p50, n, false},
                   {"p99", "#ff7f0e", t, p99, n, false},
                   {"p99.9", "#d62728", t, p999, n, false}};
    chart(&b, "Latency over time (per second)", "time since start (s)", "latency (ms)", lat, 3, 0);
    line spec[1] = {{"latency", "#1f77b4", px, py, np, false}};
    chart(&b, "Percentile spectrum (whole run)", "percentile", "latency (ms)", spec, 1, 1);
    d11_buf_puts(&b, "</body></html>\n");
    int rc = d11_write_file_atomic(path, b.data, b.len, 0644);
    d11_buf_free(&b);
    free(v);
    return rc;
}
