/*
 * report.h — the parts of `d11 bench`'s report beyond the table: the per-second series in
 * the --json document, the --html report (SVG drawn here, no script, no network: it opens
 * offline), and the count of answers that say the token is wrong (401/403).
 * Thread: the main thread, after the run.
 */
#ifndef D11_BENCH_REPORT_H
#define D11_BENCH_REPORT_H

#include <stdint.h>

#include "loadgen.h"

/* Append "\"series\":[{...},...]" (no leading comma). */
void d11_bench_json_series(d11_buf *j, const d11_bench_result *r);

/*
 * Write an HTML page to path: throughput over time (answers, ok, rejected, errors and the
 * target), latency over time (p50 / p99 / p99.9 per second) and the percentile spectrum
 * of the whole run, each an SVG with axes and units; `about` is shown under the title.
 * Returns 0 or -errno.
 */
int d11_bench_html(const char *path, const char *about, const d11_bench_result *r);

/* Answers 401, and 403 other than risk_rejected: the token is missing, wrong or lacks a scope. */
int64_t d11_bench_auth_failures(const d11_bench_result *r);

#endif
