/*
 * loadgen.h — the engine of `d11 bench`: T worker threads, each with its own epoll loop
 * and its own share of the keep-alive connections, driving the workload open-loop (fixed
 * request schedule) or closed-loop (a new request as soon as an answer comes back).
 *
 * Open loop (rate > 0): worker w sends its k-th request at the INTENDED time
 * t0 + k / (rate / T) on whichever of its connections has a free pipeline slot; when none
 * has one the request waits, and its latency still counts from the intended time. This
 * is wrk2's rule: a server that stalls for a second is charged for every request that
 * should have been sent during that second, instead of the few the client happened to
 * have in flight (coordinated omission). A second histogram ("service") measures from
 * the actual send, so the two can be compared.
 * Closed loop (rate == 0): each connection keeps `pipeline` requests in flight; latency
 * is from the actual send (which is subject to coordinated omission — documented in
 * docs/bench.md).
 *
 * Threads: d11_bench_run is called from the main thread, starts the workers, prints the
 * live progress line each second on stderr (unless quiet), joins them and merges their
 * histograms and counters into a d11_bench_result. Workers share only the read-only
 * options and a per-worker mutex-protected snapshot that the progress line reads.
 */
#ifndef D11_BENCH_LOADGEN_H
#define D11_BENCH_LOADGEN_H

#include <stdbool.h>
#include <stdint.h>

#include "hist.h"
#include "httpc.h"
#include "workload.h"

/* Client-side limits (the server's own limits are in core/limits.h). */
#define D11_BENCH_THREADS_MAX      64
#define D11_BENCH_CONNS_MAX        10000     /* all threads together */
#define D11_BENCH_PIPELINE_MAX     64        /* = the gateway's D11_HTTP_PIPELINE_MAX */
#define D11_BENCH_ORDER_RING       16384     /* placed order ids kept per thread for pay/cancel */
#define D11_BENCH_ORDER_ID_BYTES_MAX 64
#define D11_BENCH_OUTCOMES_MAX     48        /* distinct (status, code) pairs tracked */
#define D11_BENCH_CODE_BYTES_MAX   32
#define D11_BENCH_HEADERS_BYTES_MAX 4096     /* --header lines together */
#define D11_BENCH_HIST_HIGHEST_US  (3600LL * 1000000) /* 1 h */
#define D11_BENCH_HIST_DIGITS      3
#define D11_BENCH_STAGES_MAX       32        /* --stages entries */
#define D11_BENCH_SERIES_MAX       86400     /* per-second samples kept (24 h) */

/* One ramp stage (--stages 10s:1000,30s:20000): the target rate goes linearly from the
 * previous stage's rate (0 before the first) to `rate` over `dur_s` seconds. */
typedef struct d11_bench_stage {
    double dur_s, rate;
} d11_bench_stage;

/* One second of a run, as the progress line saw it. */
typedef struct d11_bench_sec {
    double  t_s;          /* end of the second, from the start */
    double  target_rps;   /* open loop: the schedule's rate then; 0 closed loop */
    double  rps;          /* answers per second */
    int64_t ok, rejected, errors;
    int64_t p50_us, p90_us, p99_us, p999_us, max_us; /* of the answers of that second */
    int64_t inflight;
} d11_bench_sec;

/* Outcome classes. OK: 2xx. REJECT: an answer a flash sale expects (409 out_of_stock,
 * not_payable, not_cancellable; 403 risk_rejected). ERROR: everything else (5xx, 429,
 * other 4xx, and transport failures: timeout, reset, protocol). */
enum { D11_CLS_OK = 0, D11_CLS_REJECT, D11_CLS_ERROR, D11_CLS_COUNT };

typedef struct d11_bench_opts {
    d11_url      url;
    char         auth_header[D11_BENCH_HEADERS_BYTES_MAX]; /* "Authorization: ...\r\n" or "" */
    char         extra_headers[D11_BENCH_HEADERS_BYTES_MAX]; /* --header lines + stress tag */
    d11_workload wl;
    int          connections;   /* total, split over threads */
    int          threads;
    int          pipeline;      /* requests in flight per connection */
    int          timeout_ms;    /* per request; the connection is recycled on expiry */
    int          drain_ms;      /* after the last send, wait this long for answers */
    uint64_t     seed;          /* 0 = random */
    bool         quiet;         /* no progress line */
    bool         verbose_errors;/* print the first few unexpected bodies on stderr */
    int          nstages;       /* > 0: open loop on the ramp of stages[] (rate = their max) */
    d11_bench_stage stages[D11_BENCH_STAGES_MAX];
} d11_bench_opts;

/* The ramp: target rate at t, requests due by t (the integral), and its inverse (the time
 * the n-th request is due; +inf past the last stage). nstages must be > 0. */
double d11_bench_stage_rate(const d11_bench_opts *o, double t_s);
double d11_bench_stage_count(const d11_bench_opts *o, double t_s);
double d11_bench_stage_time(const d11_bench_opts *o, double n);

typedef struct d11_bench_outcome {
    int     status;                          /* HTTP status, or 0 for transport failures */
    char    code[D11_BENCH_CODE_BYTES_MAX];  /* error code from the body / failure kind */
    int     cls;                             /* D11_CLS_* */
    int64_t count;
} d11_bench_outcome;

typedef struct d11_bench_counts {
    int64_t scheduled;     /* open loop: intended sends due before the stop */
    int64_t sent;
    int64_t done;          /* answered (any status) */
    int64_t cls[D11_CLS_COUNT]; /* done + transport failures, by class */
    int64_t op_sent[D11_OP_COUNT];
    int64_t op_ok[D11_OP_COUNT];
    int64_t substituted;   /* pay/cancel drawn with no placed order to act on: sent an order */
    int64_t late;          /* open loop: sent more than 1 ms after the intended time */
    int64_t connects;      /* connections established */
    int64_t connect_errors;
    int64_t outcome_overflow;  /* answers whose (status, code) did not fit the table */
    int     n_outcomes;
    d11_bench_outcome outcome[D11_BENCH_OUTCOMES_MAX];
} d11_bench_counts;

typedef struct d11_bench_result {
    double   rate_target;    /* 0 = closed loop */
    double   elapsed_s;      /* from the start to the last answer */
    d11_bench_counts c;
    int64_t  unsent;         /* open loop: scheduled but never sent (client-side backlog) */
    int64_t  unfinished;     /* sent, no answer before the drain ended */
    d11_hist lat;            /* from intended send (open) / actual send (closed), µs */
    d11_hist svc;            /* from actual send, µs */
    d11_hist lat_op[D11_OP_COUNT];
    d11_hist lat_ok;         /* like lat, 2xx answers only (what admitted requests saw) */
    bool     interrupted;    /* SIGINT/SIGTERM stopped the run early */
    d11_bench_sec *series;   /* one entry per second of the run (owned) */
    int      nseries, capseries;
} d11_bench_result;

/* Set from a signal handler: workers stop sending and drain. */
extern volatile int d11__bench_stop;

void d11_bench_result_init(d11_bench_result *r);
void d11_bench_result_release(d11_bench_result *r);

/*
 * Run one load phase. rate: requests/s over all threads (0 = closed loop). duration_s:
 * stop sending after this long (> 0). requests: stop after this many sends (0 = no
 * count bound). label prefixes the progress line. Returns 0 with *res filled (res must
 * have been initialised; it is reset first), or -errno when threads or sockets could not
 * be set up at all. Failures of individual requests are results, not errors.
 */
int d11_bench_run(const d11_bench_opts *o, double rate, double duration_s, int64_t requests,
                  const char *label, d11_bench_result *res);

/* Total of ERROR-class outcomes plus unsent, over everything attempted. */
double d11_bench_error_ratio(const d11_bench_result *r);

/* Classify a final answer; code may be "". */
int d11_bench_classify(int status, const char *code);

/* Add n to the (status, code) row of c (creating it). */
void d11_bench_count_outcome(d11_bench_counts *c, int status, const char *code, int64_t n);
/* dst += src, row by row. */
void d11_bench_counts_merge(d11_bench_counts *dst, const d11_bench_counts *src);

#endif
