/*
 * report.c — the outputs of `d11 rehearse` (rehearse.h): the --json document and the
 * --report HTML page.
 *
 * The page is self-contained (no script, no stylesheet or image from elsewhere): the
 * verdict (element #verdict, text PASS or FAIL, the same as the JSON "verdict"), the
 * table of checks (#checks), the stages and faults, and four SVG plots drawn by svg.c —
 * throughput, latency percentiles, refusals by reason, per-cell health — each with the
 * faults as bands on the time axis. Main thread, after the run.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/report.h"
#include "rehearse.h"

static const char *check_status(int s)
{
    return s > 0 ? "pass" : s == 0 ? "fail" : "skipped";
}

void d11_rh_json(d11_buf *b, const d11_rh_run *r)
{
    const d11_rh_opts *o = r->o;
    d11_buf_printf(b, "{\"verdict\":\"%s\",\"capacity_rps\":%.1f,\"capacity_how\":", r->pass ? "pass" : "fail",
                   r->capacity);
    d11_buf_json_str(b, r->capacity_how, strlen(r->capacity_how));
    d11_buf_printf(b, ",\"url\":");
    d11_buf_json_str(b, o->bo.url.hostport, strlen(o->bo.url.hostport));
    d11_buf_printf(b, ",\"quick\":%s,\"checks\":[", o->quick ? "true" : "false");
    for (int i = 0; i < r->nchecks; i++) {
        const d11_rh_check *c = &r->checks[i];
        d11_buf_printf(b, "%s{\"name\":\"%s\",\"status\":\"%s\",\"detail\":", i ? "," : "", c->name,
                       check_status(c->status));
        d11_buf_json_str(b, c->detail, strlen(c->detail));
        d11_buf_puts(b, "}");
    }
    d11_buf_puts(b, "],\"stages\":[");
    for (int i = 0; i < o->nstages; i++) {
        const d11_rh_stage *s = &o->stages[i];
        d11_buf_printf(b,
                       "%s{\"name\":\"%s\",\"mult\":%.3f,\"rate\":%.1f,\"duration_s\":%.2f,\"ran\":%s,\"t0_s\":%.2f,"
                       "\"t1_s\":%.2f,\"sent\":%lld,\"ok\":%lld,\"refused\":%lld,\"timeouts\":%lld,\"http504\":%lld,"
                       "\"other_errors\":%lld,\"unsent\":%lld,\"ok_per_s\":%.1f,\"ok_p50_us\":%lld,\"ok_p99_us\":%lld,"
                       "\"p99_us\":%lld}",
                       i ? "," : "", s->name, s->mult, s->rate, s->dur_s, s->done ? "true" : "false", s->t0_s, s->t1_s,
                       (long long)s->sent, (long long)s->ok, (long long)s->refused, (long long)s->timeouts,
                       (long long)s->http504, (long long)s->other_err, (long long)s->unsent, s->ok_per_s,
                       (long long)s->ok_p50_us, (long long)s->ok_p99_us, (long long)s->p99_us);
    }
    d11_buf_puts(b, "],\"faults\":[");
    for (int i = 0; i < o->nfaults; i++) {
        const d11_rh_fault *f = &o->faults[i];
        d11_buf_printf(b, "%s{\"kind\":\"%s\",\"status\":\"%s\",\"at_s\":%.2f,\"duration_s\":%.2f,\"t0_s\":%.2f,"
                          "\"t1_s\":%.2f,\"what\":",
                       i ? "," : "", d11_rh_fault_name(f->kind), d11_rh_fstatus_name(f->status), f->at_s, f->dur_s,
                       f->t0_s, f->t1_s);
        d11_buf_json_str(b, f->why, strlen(f->why));
        d11_buf_puts(b, "}");
    }
    d11_buf_printf(b, "],\"probes\":{\"sent\":%d,\"refused\":%d,\"refused_with_retry_after\":%d},"
                      "\"real_sold_before\":%lld,\"real_sold_after\":%lld,\"shadow_sold_after\":%lld,\"audit\":",
                   r->nprobes, r->probe_refused, r->probe_refused_ra, (long long)r->real_sold_before,
                   (long long)r->real_sold_after, (long long)r->shadow_sold_after);
    d11_buf_json_str(b, r->audit_detail, strlen(r->audit_detail));
    d11_buf_puts(b, ",");
    d11_bench_result tmp = {.series = r->series, .nseries = r->nseries};
    d11_bench_json_series(b, &tmp);
    d11_buf_puts(b, ",\"samples\":[");
    for (int i = 0; i < r->nsamples; i++) {
        const d11_rh_sample *s = &r->samples[i];
        d11_buf_printf(b, "%s{\"t_s\":%.2f,\"ok\":%s,\"cells_up\":[", i ? "," : "", s->t_s, s->ok ? "true" : "false");
        for (int k = 0; k < s->ncells; k++) d11_buf_printf(b, "%s%d", k ? "," : "", s->cell_up[k]);
        d11_buf_puts(b, "],\"breakers\":[");
        for (int k = 0; k < s->ncells; k++) d11_buf_printf(b, "%s%d", k ? "," : "", s->breaker[k]);
        d11_buf_puts(b, "],\"refused_per_s\":{");
        for (int k = 0; k < D11_RH_R_COUNT; k++)
            d11_buf_printf(b, "%s\"%s\":%.1f", k ? "," : "", d11_rh_reason_name(k), s->refused_ps[k]);
        d11_buf_printf(b, "},\"protect_inflight\":%.0f,\"protect_limit\":%.0f}", s->protect_inflight,
                       s->protect_limit);
    }
    d11_buf_puts(b, "]}\n");
}

int d11_rh_html(const char *path, const d11_rh_run *r)
{
    const d11_rh_opts *o = r->o;
    int n = r->nseries, m = r->nsamples;
    double *v = calloc((size_t)(n + 1) * 8 + (size_t)(m + 1) * (1 + D11_RH_R_COUNT), sizeof *v);
    int8_t *lanes = calloc((size_t)(m + 1) * D11_RH_CELLS_MAX, 1);
    if (!v || !lanes) {
        free(v);
        free(lanes);
        return -ENOMEM;
    }
    double *t = v, *tgt = t + n, *rps = tgt + n, *ok = rps + n, *bad = ok + n, *p50 = bad + n, *p99 = p50 + n,
           *p999 = p99 + n, *st = p999 + n, *rs = st + m;
    double xmax = 1;
    for (int i = 0; i < n; i++) {
        const d11_bench_sec *s = &r->series[i];
        t[i] = s->t_s;
        tgt[i] = s->target_rps;
        rps[i] = s->rps;
        ok[i] = (double)s->ok;
        bad[i] = (double)s->errors;
        p50[i] = (double)s->p50_us / 1000;
        p99[i] = (double)s->p99_us / 1000;
        p999[i] = (double)s->p999_us / 1000;
        if (s->t_s > xmax) xmax = s->t_s;
    }
    int ncells = 0;
    for (int i = 0; i < m; i++) {
        const d11_rh_sample *s = &r->samples[i];
        st[i] = s->t_s;
        if (s->t_s + 1 > xmax) xmax = s->t_s + 1;
        for (int k = 0; k < D11_RH_R_COUNT; k++) rs[k * m + i] = s->refused_ps[k];
        if (s->ncells > ncells) ncells = s->ncells;
        for (int c = 0; c < D11_RH_CELLS_MAX; c++) {
            int8_t x = -1;
            if (c < s->ncells && s->cell_up[c] == 0) x = 2;
            else if (c < s->ncells && (s->breaker[c] == 1 || s->breaker[c] == 2)) x = 1;
            else if (c < s->ncells && s->cell_up[c] == 1) x = 0;
            lanes[c * m + i] = x;
        }
    }
    d11_rh_band bands[D11_RH_FAULTS_MAX];
    char blabel[D11_RH_FAULTS_MAX][48];
    int nb = 0;
    for (int i = 0; i < o->nfaults; i++) {
        const d11_rh_fault *f = &o->faults[i];
        if (f->status != D11_RH_DONE && f->status != D11_RH_FAILED) continue;
        if (f->kind == D11_RH_F_PAUSE || f->kind == D11_RH_F_KILL)
            snprintf(blabel[nb], sizeof blabel[nb], "%s cell %d", d11_rh_fault_name(f->kind), o->drill_cell);
        else snprintf(blabel[nb], sizeof blabel[nb], "%s", d11_rh_fault_name(f->kind));
        bands[nb] = (d11_rh_band){f->t0_s, f->t1_s, blabel[nb]};
        nb++;
    }
    d11_buf b;
    d11_buf_init(&b, 1 << 17);
    d11_buf_printf(&b,
                   "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>d11 rehearsal report</title>\n"
                   "<style>body{font-family:sans-serif;margin:24px;color:#222}td,th{padding:2px 10px;text-align:left}"
                   ".pass{color:#1a7f1a}.fail{color:#c00;font-weight:bold}.skipped{color:#888}#verdict{font-size:28px;"
                   "font-weight:bold}table{border-collapse:collapse}tr:nth-child(even){background:#f6f6f6}"
                   "#stages td,#faults td:nth-child(-n+4){white-space:nowrap}"
                   "</style></head><body>\n<h1>d11 rehearsal report</h1>\n"
                   "<p id=\"verdict\" class=\"%s\">%s</p>\n<p>Target ",
                   r->pass ? "pass" : "fail", r->pass ? "PASS" : "FAIL");
    d11_rh_xml_text(&b, o->bo.url.hostport);
    d11_buf_printf(&b, "; capacity C = %.0f orders/s (", r->capacity);
    d11_rh_xml_text(&b, r->capacity_how);
    d11_buf_printf(&b, "); %s profile; stress (shadow) traffic only.</p>\n<h2>Checks</h2>\n<table id=\"checks\">"
                       "<tr><th>check</th><th>result</th><th>detail</th></tr>\n",
                   o->quick ? "quick" : "full");
    for (int i = 0; i < r->nchecks; i++) {
        const d11_rh_check *c = &r->checks[i];
        d11_buf_printf(&b, "<tr><td>%s</td><td class=\"%s\">%s</td><td>", c->name, check_status(c->status),
                       check_status(c->status));
        d11_rh_xml_text(&b, c->detail);
        d11_buf_puts(&b, "</td></tr>\n");
    }
    d11_buf_puts(&b, "</table>\n<h2>Plots</h2>\n");
    d11_rh_chart ch = {"throughput", "Throughput", "time since start (s)", "requests per second", xmax, bands, nb};
    d11_rh_line thr[4] = {{"target/s", "#555", t, tgt, n, true},
                          {"answered/s", "#1f77b4", t, rps, n, false},
                          {"ok/s (goodput)", "#2ca02c", t, ok, n, false},
                          {"refused+errors/s", "#d62728", t, bad, n, false}};
    d11_rh_svg_lines(&b, &ch, thr, 4);
    ch = (d11_rh_chart){"latency", "Latency percentiles (per second, from the intended send)", "time since start (s)",
                        "latency (ms)", xmax, bands, nb};
    d11_rh_line lat[3] = {{"p50", "#2ca02c", t, p50, n, false},
                          {"p99", "#ff7f0e", t, p99, n, false},
                          {"p99.9", "#d62728", t, p999, n, false}};
    d11_rh_svg_lines(&b, &ch, lat, 3);
    ch = (d11_rh_chart){"refusals", "Refusals by reason (gateway metrics)", "time since start (s)",
                        "refusals per second", xmax, bands, nb};
    static const char *const rc[D11_RH_R_COUNT] = {"#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
    d11_rh_line ref[D11_RH_R_COUNT];
    for (int k = 0; k < D11_RH_R_COUNT; k++)
        ref[k] = (d11_rh_line){d11_rh_reason_name(k), rc[k], st, rs + k * m, m, false};
    d11_rh_svg_lines(&b, &ch, ref, D11_RH_R_COUNT);
    if (ncells > D11_RH_CELLS_MAX) ncells = D11_RH_CELLS_MAX;
    char names[D11_RH_CELLS_MAX][24]; /* "cell " + any int */
    const char *np[D11_RH_CELLS_MAX];
    const int8_t *lp[D11_RH_CELLS_MAX];
    for (int c = 0; c < ncells; c++) {
        snprintf(names[c], sizeof names[c], "cell %d", c);
        np[c] = names[c];
        lp[c] = lanes + c * m;
    }
    ch = (d11_rh_chart){"cells", "Per-cell health (/admin/cells and the gateway's breakers)", "time since start (s)",
                        "cell", xmax, bands, nb};
    d11_rh_svg_lanes(&b, &ch, np, ncells, st, lp, m);
    d11_buf_puts(&b, "<h2>Stages</h2>\n<table id=\"stages\"><tr><th>stage</th><th>offered/s</th><th>from</th>"
                     "<th>to</th><th>sent</th><th>ok</th><th>ok/s</th><th>refused</th><th>timeouts</th><th>504</th>"
                     "<th>unsent</th><th>admitted p99</th></tr>\n");
    for (int i = 0; i < o->nstages; i++) {
        const d11_rh_stage *s = &o->stages[i];
        if (!s->done) continue;
        d11_buf_printf(&b,
                       "<tr><td>%s</td><td>%.0f</td><td>%.1f s</td><td>%.1f s</td><td>%lld</td><td>%lld</td><td>%.0f</td>"
                       "<td>%lld</td><td>%lld</td><td>%lld</td><td>%lld</td><td>%.1f ms</td></tr>\n",
                       s->name, s->rate, s->t0_s, s->t1_s, (long long)s->sent, (long long)s->ok, s->ok_per_s,
                       (long long)s->refused, (long long)s->timeouts, (long long)s->http504, (long long)s->unsent,
                       (double)s->ok_p99_us / 1000);
    }
    d11_buf_puts(&b, "</table>\n<h2>Faults</h2>\n<table id=\"faults\"><tr><th>fault</th><th>status</th><th>from</th>"
                     "<th>to</th><th>what</th></tr>\n");
    for (int i = 0; i < o->nfaults; i++) {
        const d11_rh_fault *f = &o->faults[i];
        d11_buf_printf(&b, "<tr><td>%s</td><td>%s</td><td>%.1f s</td><td>%.1f s</td><td>", d11_rh_fault_name(f->kind),
                       d11_rh_fstatus_name(f->status), f->t0_s, f->t1_s);
        d11_rh_xml_text(&b, f->why);
        d11_buf_puts(&b, "</td></tr>\n");
    }
    d11_buf_puts(&b, "</table>\n</body></html>\n");
    int rc2 = d11_write_file_atomic(path, b.data, b.len, 0644);
    d11_buf_free(&b);
    free(v);
    free(lanes);
    return rc2;
}
