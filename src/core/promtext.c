/*
 * promtext.c — Prometheus text helpers (see promtext.h): fixed-bound histograms, the
 * process_* families read from /proc/self, and the merge of several processes'
 * expositions into one scrape.
 * Thread: any; no shared state.
 */
#include "promtext.h"
#include "fault.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef D11_GIT_REV
#define D11_GIT_REV "unknown"
#endif

const int64_t d11_hist_us_bounds[D11_HIST_US_N] = {25,    50,    100,    200,    300,    500,    750,
                                                   1000,  2000,  5000,   10000,  20000,  50000,  100000,
                                                   250000, 500000, 1000000, 2000000, 5000000};

void d11_hist_us_add(d11_hist_us *h, int64_t us)
{
    if (us < 0) us = 0;
    int k = 0;
    while (k < D11_HIST_US_N && us > d11_hist_us_bounds[k]) k++;
    h->b[k]++;
    h->count++;
    h->sum_us += (uint64_t)us;
}

void d11_hist_n_add(d11_hist_n *h, uint64_t v)
{
    int k = 0;
    while (k < D11_HIST_N_N && v > (1ull << k)) k++;
    h->b[k]++;
    h->count++;
    h->sum += v;
}

void d11_prom_head(d11_buf *b, const char *name, const char *type, const char *help)
{
    d11_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist_common(d11_buf *b, const char *name, const char *labels, const uint64_t *bk, int n,
                        const double *le, double sum, uint64_t count)
{
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int k = 0; k <= n; k++) {
        cum += bk[k];
        if (k < n) d11_buf_printf(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, le[k], (unsigned long long)cum);
        else d11_buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    D11_ASSERT(cum == count);
    const char *o = labels[0] ? "{" : "", *cl = labels[0] ? "}" : "";
    d11_buf_printf(b, "%s_sum%s%s%s %.6f\n", name, o, labels, cl, sum);
    d11_buf_printf(b, "%s_count%s%s%s %llu\n", name, o, labels, cl, (unsigned long long)count);
}

void d11_prom_hist_us(d11_buf *b, const char *name, const char *labels, const d11_hist_us *h)
{
    double le[D11_HIST_US_N];
    for (int k = 0; k < D11_HIST_US_N; k++) le[k] = (double)d11_hist_us_bounds[k] / 1e6;
    hist_common(b, name, labels, h->b, D11_HIST_US_N, le, (double)h->sum_us / 1e6, h->count);
}

void d11_prom_hist_n(d11_buf *b, const char *name, const char *labels, const d11_hist_n *h)
{
    double le[D11_HIST_N_N];
    for (int k = 0; k < D11_HIST_N_N; k++) le[k] = (double)(1ull << k);
    hist_common(b, name, labels, h->b, D11_HIST_N_N, le, (double)h->sum, h->count);
}

/* Field 22 (starttime, clock ticks since boot) and 14/15 (utime, stime) of /proc/self/stat;
 * 24 (rss pages), 23 (vsize bytes). */
static int read_stat(double *start_s, double *cpu_s, double *rss_b, double *vsz_b)
{
    char *txt = NULL;
    size_t n = 0;
    if (d11_read_file("/proc/self/stat", &txt, &n) < 0) return -1;
    char *p = strrchr(txt, ')'); /* comm may hold spaces */
    if (!p) {
        free(txt);
        return -1;
    }
    unsigned long long f[64] = {0};
    int i = 3; /* p[2] is field 3 (state) */
    p += 2;
    while (*p && i < 30) {
        while (*p == ' ') p++;
        if (i > 3) f[i] = strtoull(p, NULL, 10);
        while (*p && *p != ' ') p++;
        i++;
    }
    free(txt);
    long tck = sysconf(_SC_CLK_TCK), pg = sysconf(_SC_PAGESIZE);
    if (tck <= 0) tck = 100;
    double boot = 0;
    char *up = NULL;
    if (d11_read_file("/proc/stat", &up, &n) == 0) {
        char *q = strstr(up, "\nbtime ");
        if (q) boot = strtod(q + 7, NULL);
        free(up);
    }
    *start_s = boot + (double)f[22] / (double)tck;
    *cpu_s = (double)(f[14] + f[15]) / (double)tck;
    *rss_b = (double)f[24] * (double)pg;
    *vsz_b = (double)f[23];
    return 0;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own fd */
}

void d11_prom_process(d11_buf *b, const char *part)
{
    double start = 0, cpu = 0, rss = 0, vsz = 0;
    bool ok = read_stat(&start, &cpu, &rss, &vsz) == 0;
    if (ok) {
        d11_prom_head(b, "process_start_time_seconds", "gauge", "Start time of the process since the epoch, seconds.");
        d11_buf_printf(b, "process_start_time_seconds{part=\"%s\"} %.2f\n", part, start);
        d11_prom_head(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.");
        d11_buf_printf(b, "process_cpu_seconds_total{part=\"%s\"} %.2f\n", part, cpu);
        d11_prom_head(b, "process_resident_memory_bytes", "gauge", "Resident memory size, bytes.");
        d11_buf_printf(b, "process_resident_memory_bytes{part=\"%s\"} %.0f\n", part, rss);
        d11_prom_head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size, bytes.");
        d11_buf_printf(b, "process_virtual_memory_bytes{part=\"%s\"} %.0f\n", part, vsz);
    }
    int fds = count_fds();
    if (fds >= 0) {
        d11_prom_head(b, "process_open_fds", "gauge", "Open file descriptors.");
        d11_buf_printf(b, "process_open_fds{part=\"%s\"} %d\n", part, fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        d11_prom_head(b, "process_max_fds", "gauge", "Limit on open file descriptors.");
        d11_buf_printf(b, "process_max_fds{part=\"%s\"} %llu\n", part, (unsigned long long)rl.rlim_cur);
    }
    d11_prom_head(b, "d11_build_info", "gauge", "Build of the running binary (value 1).");
    d11_buf_printf(b, "d11_build_info{part=\"%s\",version=\"%s\",revision=\"%s\"} 1\n", part, D11_VERSION,
                   D11_GIT_REV);
    const char *r = getenv("D11_RESTARTS");
    uint64_t restarts = 0;
    if (r && d11_parse_u64(r, strlen(r), 1u << 30, &restarts) < 0) restarts = 0;
    d11_prom_head(b, "d11_process_restarts_total", "counter",
                  "Times the supervisor (d11 up) restarted this part after it died.");
    d11_buf_printf(b, "d11_process_restarts_total{part=\"%s\"} %llu\n", part, (unsigned long long)restarts);
    d11_fault_metrics(b, part); /* fault firings per point (core/fault.h, live chaos) */
}

/* ---- merge ---- */

#define MERGE_FAMILIES_MAX 256

typedef struct fam {
    const char *name;
    size_t      namen;
    const char *head; /* HELP/TYPE lines of the first text that had them */
    size_t      headn;
} fam;

/* Family name of a sample line: the metric name minus a histogram/summary suffix when
 * its base is a known family. */
static size_t metric_name_len(const char *l, size_t n)
{
    size_t k = 0;
    while (k < n && l[k] != '{' && l[k] != ' ') k++;
    return k;
}

static int fam_find(const fam *f, int nf, const char *name, size_t n)
{
    for (int i = 0; i < nf; i++)
        if (f[i].namen == n && memcmp(f[i].name, name, n) == 0) return i;
    return -1;
}

static int fam_of_sample(const fam *f, int nf, const char *l, size_t n)
{
    size_t k = metric_name_len(l, n);
    int i = fam_find(f, nf, l, k);
    if (i >= 0) return i;
    static const char *sfx[] = {"_bucket", "_sum", "_count"};
    for (int s = 0; s < 3; s++) {
        size_t sl = strlen(sfx[s]);
        if (k > sl && memcmp(l + k - sl, sfx[s], sl) == 0 && (i = fam_find(f, nf, l, k - sl)) >= 0) return i;
    }
    return -1;
}

/* Calls fn for each line of t (without its newline). */
#define FOR_LINES(t, tn, l, ln)                                                                  \
    for (const char *l = (t), *_e = (t) + (tn), *_nl; l < _e; l = _nl ? _nl + 1 : _e)           \
        for (size_t ln = (size_t)(((_nl = memchr(l, '\n', (size_t)(_e - l))) ? _nl : _e) - l),  \
                    _once = 1;                                                                   \
             _once; _once = 0)

void d11_prom_merge(d11_buf *out, const char *const *texts, const size_t *lens, int n)
{
    fam *f = calloc(MERGE_FAMILIES_MAX, sizeof *f);
    D11_ASSERT(f);
    int nf = 0;
    /* Pass 1: families from "# HELP name" / "# TYPE name" lines, in first-seen order. */
    for (int t = 0; t < n; t++)
        FOR_LINES(texts[t], lens[t], l, ln)
        {
            if (ln < 8 || (memcmp(l, "# HELP ", 7) != 0 && memcmp(l, "# TYPE ", 7) != 0)) continue;
            size_t k = metric_name_len(l + 7, ln - 7);
            int i = fam_find(f, nf, l + 7, k);
            if (i < 0) {
                if (nf == MERGE_FAMILIES_MAX) continue;
                i = nf++;
                f[i] = (fam){.name = l + 7, .namen = k, .head = l, .headn = 0};
            }
            if (f[i].head + f[i].headn == l || f[i].headn == 0) f[i].headn = (size_t)(l + ln + 1 - f[i].head);
        }
    /* Pass 2: per family, its header then every text's samples. */
    for (int i = 0; i < nf; i++) {
        size_t hn = f[i].headn;
        d11_buf_append(out, f[i].head, hn);
        if (hn && f[i].head[hn - 1] != '\n') d11_buf_puts(out, "\n");
        for (int t = 0; t < n; t++)
            FOR_LINES(texts[t], lens[t], l, ln)
            {
                if (ln == 0 || l[0] == '#') continue;
                if (fam_of_sample(f, nf, l, ln) != i) continue;
                d11_buf_append(out, l, ln);
                d11_buf_puts(out, "\n");
            }
    }
    free(f);
}
