/*
 * promtext.h — Prometheus text exposition helpers shared by every d11 process.
 *
 * Each process (gateway, cell, center) renders its own families in the text format
 * 0.0.4; every sample of a cell or the center carries a `part` label ("cell0",
 * "center"), so the gateway can concatenate them into one scrape (d11_prom_merge
 * groups samples of the same family under one HELP/TYPE header, which promtool and
 * Prometheus require).
 *
 * d11_hist_us: a latency histogram with fixed microsecond bounds fine enough for
 * 100 us reads (25 us .. 5 s). One writer; readers on other threads must copy it
 * under their own protocol (the cell reads it on its loop thread only).
 *
 * No allocation except inside the caller's d11_buf. Thread: any (no shared state).
 */
#ifndef D11_CORE_PROMTEXT_H
#define D11_CORE_PROMTEXT_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define D11_VERSION "0.1.0"

#define D11_HIST_US_N 19 /* finite bounds; bucket D11_HIST_US_N is +Inf */
extern const int64_t d11_hist_us_bounds[D11_HIST_US_N];

typedef struct d11_hist_us {
    uint64_t b[D11_HIST_US_N + 1];
    uint64_t count;
    uint64_t sum_us;
} d11_hist_us;

void d11_hist_us_add(d11_hist_us *h, int64_t us);

/* Histogram of small counts (batch sizes): bounds 1, 2, 4, ... 4096. */
#define D11_HIST_N_N 13
typedef struct d11_hist_n {
    uint64_t b[D11_HIST_N_N + 1];
    uint64_t count, sum;
} d11_hist_n;
void d11_hist_n_add(d11_hist_n *h, uint64_t v);

/* "# HELP name help\n# TYPE name type\n". */
void d11_prom_head(d11_buf *b, const char *name, const char *type, const char *help);
/* Samples of a histogram in seconds (bounds in us) / in units; labels: "" or `k="v"`. */
void d11_prom_hist_us(d11_buf *b, const char *name, const char *labels, const d11_hist_us *h);
void d11_prom_hist_n(d11_buf *b, const char *name, const char *labels, const d11_hist_n *h);

/*
 * The process_* families (start time, CPU, RSS, virtual memory, open and max fds, from
 * /proc/self), d11_build_info and d11_process_restarts_total (the D11_RESTARTS the
 * supervisor `d11 up` puts in a restarted child's environment), all labelled part=part.
 */
void d11_prom_process(d11_buf *b, const char *part);

/*
 * Merge n expositions into out: families in first-seen order, each with one HELP/TYPE
 * header and the samples of every text that has it. Lines that are neither comments nor
 * samples are dropped. Inputs need not end with a newline.
 */
void d11_prom_merge(d11_buf *out, const char *const *texts, const size_t *lens, int n);

#endif
