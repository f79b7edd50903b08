/*
 * rehearse.h — internals of `d11 rehearse` (issue 11, item 7): a Double-11 rehearsal
 * against a RUNNING d11 with stress (shadow) traffic only.
 *
 *   rehearse.c  the command: flags, the timeline (capacity probe, load stages on a load
 *               thread, the main thread sampling every second and firing the faults)
 *   plan.c      the plan (stages, the fault sequence, thresholds; the --quick profile)
 *               and the checks: pure functions of what the run collected
 *   probe.c     talking to the platform: /metrics and /admin/cells samples, the chaos
 *               API, process drills (SIGSTOP/SIGCONT/SIGKILL of a cell by the pid in
 *               DATA/cell-N.lock), refusal probes, product stock reads, `d11 audit`
 *   svg.c       the SVG plot writer (time series with fault bands, lanes of states)
 *   report.c    the --json document and the --html report
 *
 * Ownership: one d11_rh_run holds everything a run collects. The load thread writes the
 * stage results and the client series, the sampler thread the samples, the main thread
 * the faults and probes; shared fields are touched under run->mu only, and the checks
 * read them after both threads are joined. The arrays are owned by d11_rehearse_main.
 * Safety: every business request carries X-D11-Stress: 1 (shadow tables and shadow
 * stock: the real stock is never touched, and the check "real_stock_untouched" proves
 * it); process drills need --data DIR and act only on a pid whose /proc cmdline is a d11
 * cell; a paused cell is always SIGCONTed before the command exits.
 */
#ifndef D11_REHEARSE_H
#define D11_REHEARSE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../bench/httpc.h"
#include "../bench/loadgen.h"
#include "../core/limits.h"
#include "../core/util.h"

#define D11_RH_STAGES_MAX     8
#define D11_RH_FAULTS_MAX     8
#define D11_RH_CELLS_MAX      16        /* cells sampled and plotted */
#define D11_RH_SAMPLES_MAX    7200      /* one per second: 2 h */
#define D11_RH_CHECKS_MAX     16
#define D11_RH_PROBES_MAX     4096
#define D11_RH_SERIES_MAX     7200
#define D11_RH_TEXT_MAX       256

/* Refusal reasons counted from the gateway's metrics (per second in the samples). */
enum { D11_RH_R_OVERLOADED = 0, D11_RH_R_RATE_LIMITED, D11_RH_R_BREAKER, D11_RH_R_DEGRADED,
       D11_RH_R_RISK, D11_RH_R_COUNT };
const char *d11_rh_reason_name(int r);

enum { D11_RH_F_PAUSE = 0, D11_RH_F_SLOW_COMMITS, D11_RH_F_RELAY_DOWN, D11_RH_F_KILL,
       D11_RH_F_DEGRADE, D11_RH_F_KINDS };
const char *d11_rh_fault_name(int kind);

enum { D11_RH_PENDING = 0, D11_RH_ACTIVE, D11_RH_DONE, D11_RH_SKIPPED, D11_RH_FAILED };
const char *d11_rh_fstatus_name(int s);

/* One load stage: an open-loop rate mult × capacity for dur_s seconds. */
typedef struct d11_rh_stage {
    char    name[24];
    double  mult, dur_s, rate;
    bool    faults;          /* the fault phase runs during this stage */
    /* filled by the load thread */
    bool    done;
    double  t0_s, t1_s;      /* from the start of the timeline */
    int64_t sent, ok, refused, timeouts, http504, other_err, unsent;
    double  ok_per_s;
    int64_t ok_p50_us, ok_p99_us, p99_us;
} d11_rh_stage;

typedef struct d11_rh_fault {
    int    kind;
    double at_s, dur_s;      /* offset from the fault stage's start; length */
    /* filled when it runs */
    int    status;
    double t0_s, t1_s;       /* actual, from the timeline's start */
    int    pid;              /* process drills: the cell's pid then */
    int    watchdog_pid;     /* pause: the child that SIGCONTs the cell if we die first */
    int    effect;           /* kill: 1 the cell came back (new pid, up); -1 not known */
    char   chaos_id[64];
    char   degrade_entry[D11_RH_TEXT_MAX]; /* degrade: the schedule entry added (as rendered) */
    char   why[D11_RH_TEXT_MAX]; /* skipped / failed reason, or what was done */
} d11_rh_fault;

/* One sample of the platform (main thread, about every second). */
typedef struct d11_rh_sample {
    double  t_s;
    bool    ok;                              /* /metrics answered */
    int     ncells;
    int8_t  cell_up[D11_RH_CELLS_MAX];       /* -1 unknown */
    int8_t  breaker[D11_RH_CELLS_MAX];       /* 0 closed 1 open 2 half-open, -1 unknown */
    double  refused_cum[D11_RH_R_COUNT];     /* counters as read */
    double  refused_ps[D11_RH_R_COUNT];      /* per second since the previous sample */
    double  breaker_opened_cum[D11_RH_CELLS_MAX];
    double  slow_commits_cum;
    double  protect_inflight, protect_limit;
} d11_rh_sample;

typedef struct d11_rh_check {
    char name[40];
    int  status;                             /* 1 pass, 0 fail, -1 skipped */
    char detail[D11_RH_TEXT_MAX];
} d11_rh_check;

typedef struct d11_rh_opts {
    d11_bench_opts bo;       /* url, auth, stress tag, workload, connections */
    char   token[D11_TOKEN_BYTES_MAX + 1];
    const char *data_dir;    /* NULL: no process drills, no audit */
    const char *report, *self_exe;
    bool   json, quiet, quick;
    double capacity;         /* 0: probe */
    double probe_s;
    int    nstages;
    d11_rh_stage stages[D11_RH_STAGES_MAX];
    int    nfaults;
    d11_rh_fault faults[D11_RH_FAULTS_MAX];
    int    drill_cell;
    double slow_ms, tail_s;
    /* thresholds */
    double goodput_min, p99_factor, refusal_ms, timeouts_max, recover_s;
} d11_rh_opts;

typedef struct d11_rh_run {
    d11_rh_opts *o;
    pthread_mutex_t mu;
    int64_t t0_ns;
    int     cur_stage;       /* load thread: the stage running (-1 before, nstages after) */
    double  capacity;
    char    capacity_how[64];
    /* client-side series (one entry per second of load) */
    d11_bench_sec *series;
    int     nseries;
    /* platform samples (the sampler thread appends under mu while `sampling`) */
    bool    sampling;
    d11_rh_sample *samples;
    int     nsamples;
    /* refusal probes during overload stages */
    int     nprobes, probe_refused, probe_refused_ra;
    double  probe_refused_ms[D11_RH_PROBES_MAX];
    /* product stock (real) before and after, summed over the SKUs */
    int64_t real_sold_before, real_sold_after, shadow_sold_after;
    int     audit_rc;        /* -1 not run */
    char    audit_detail[D11_RH_TEXT_MAX];
    int     nchecks;
    d11_rh_check checks[D11_RH_CHECKS_MAX];
    bool    pass;
} d11_rh_run;

/* ---- plan.c ---- */
/* Defaults (full or --quick): stages 0.5C 1C 2C 3C then the fault phase at 0.6C. */
void d11_rh_plan_defaults(d11_rh_opts *o, bool quick);
/* "pause,slow-commits,relay-down,kill" (any subset, in order) or "none": lays the faults
 * out one after the other in the fault stage and sizes that stage. 0 or -1 with err. */
int  d11_rh_plan_faults(d11_rh_opts *o, const char *list, char *err, size_t errlen);
/* "0.5,1,2,3": the load stages before the fault phase. 0 or -1 with err. */
int  d11_rh_plan_stages(d11_rh_opts *o, const char *list, char *err, size_t errlen);
/* Evaluate every check into run->checks and run->pass. */
void d11_rh_evaluate(d11_rh_run *r);

/* ---- probe.c ---- */
/* One sample (cells, breakers, refusals, protection) into *s; prev for the rates. */
void d11_rh_sample_take(d11_httpc *c, const char *auth, double t_s, const d11_rh_sample *prev,
                        d11_rh_sample *s);
/* Prometheus text: the value of the series `name{labels}` (labels exactly as written,
 * or "" for none), summed over every line whose name matches and whose label set
 * contains every "k=\"v\"" in want (want NULL: all). Returns false when absent. */
bool d11_rh_prom_sum(const char *text, size_t n, const char *name, const char *want, double *out);
/* Start / stop a fault. Start sets f->status (ACTIVE, SKIPPED or FAILED) and f->why. */
void d11_rh_fault_start(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f);
void d11_rh_fault_stop(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f);
/* Kill drill: is the cell back (a new live pid in its lock file, reported up)? */
bool d11_rh_kill_recovered(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f);
/* One stress-tagged order; records a refusal's latency and Retry-After. */
void d11_rh_probe(d11_httpc *c, const d11_rh_opts *o, d11_rh_run *r, uint64_t seq);
/* Sum of stock_sold over the rehearsal SKUs, real (stress false) or shadow; -1 on error. */
int64_t d11_rh_sold(d11_httpc *c, const d11_rh_opts *o, bool stress);
/* Run `d11 audit --data DIR`: 0 ok, 1 violations, other: could not run. */
int  d11_rh_audit(const d11_rh_opts *o, char *detail, size_t n);
/* Create the SKUs (stress-tagged; 409 exists is fine). 0 or -1 (reason on stderr). */
int  d11_rh_setup(d11_httpc *c, const d11_rh_opts *o);

/* ---- svg.c ---- */
typedef struct d11_rh_line {
    const char   *name, *color;
    const double *x, *y;
    int           n;
    bool          dashed;
} d11_rh_line;

typedef struct d11_rh_band {
    double      x0, x1;
    const char *label;
} d11_rh_band;

typedef struct d11_rh_chart {
    const char *id, *title, *xlabel, *ylabel;
    double      xmax;        /* the time axis spans 0..xmax (<= 0: from the data) */
    const d11_rh_band *bands;
    int         nbands;
} d11_rh_chart;

/* A line chart: axes with 5 round ticks and units, a legend, each line as a polyline and
 * one <circle class="pt"> per data point, bands as shaded rects with their label. */
void d11_rh_svg_lines(d11_buf *b, const d11_rh_chart *c, const d11_rh_line *ls, int nl);
/* Lanes: lane k is a row of cells; state[k][i] over [x[i], x[i+1]) (the last one is
 * one second wide): 0 up, 1 breaker open/half-open, 2 down, -1 unknown. */
void d11_rh_svg_lanes(d11_buf *b, const d11_rh_chart *c, const char *const *lane_names, int nlanes,
                      const double *x, const int8_t *const *state, int n);
/* Escape text for HTML/SVG (& < > "). */
void d11_rh_xml_text(d11_buf *b, const char *s);

/* ---- report.c ---- */
void d11_rh_json(d11_buf *b, const d11_rh_run *r);
int  d11_rh_html(const char *path, const d11_rh_run *r);

#endif
