/*
 * plan.c — the plan of a rehearsal (stages, the fault sequence, thresholds) and the
 * checks that turn what a run collected into pass / fail (rehearse.h).
 *
 * Timeline: load stages at mult × C (default 0.5, 1, 2, 3), each a constant open-loop
 * rate, then the fault phase at 0.6 C during which the faults run one after another
 * (default: cell pause, slow commits, relay down, cell kill), each starting `gap` after
 * the previous one ended. The checks read only the run's collected data, so they are
 * pure functions (tested through the integration test's forced failure and the unit
 * test of the plan). Thread: the main thread.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rehearse.h"

const char *d11_rh_reason_name(int r)
{
    static const char *const n[D11_RH_R_COUNT] = {"overloaded", "rate_limited", "breaker_open", "degraded",
                                                   "risk"};
    return r >= 0 && r < D11_RH_R_COUNT ? n[r] : "?";
}

const char *d11_rh_fault_name(int kind)
{
    static const char *const n[D11_RH_F_KINDS] = {"pause", "slow-commits", "relay-down", "kill", "degrade"};
    return kind >= 0 && kind < D11_RH_F_KINDS ? n[kind] : "?";
}

const char *d11_rh_fstatus_name(int s)
{
    static const char *const n[] = {"pending", "active", "done", "skipped", "failed"};
    return s >= 0 && s <= D11_RH_FAILED ? n[s] : "?";
}

/* Lengths per fault kind, full and quick profile (seconds). The pause is long because
 * the gateway's breaker counts calls in a fixed 5-s window that starts at the first call
 * after the previous one expired: at a high rate the window holds thousands of successes
 * from before the pause, so the breaker trips only once a window starts inside the pause
 * — for certain when the pause lasts window + request timeout (5 + 3 s by default; the
 * quick profile assumes --request-timeout-ms <= 1000). */
static const double fault_len[2][D11_RH_F_KINDS] = {{9, 5, 4, 15, 5}, {6, 2, 1.5, 8, 2}};

void d11_rh_plan_defaults(d11_rh_opts *o, bool quick)
{
    o->quick = quick;
    o->probe_s = quick ? 2 : 5;
    o->drill_cell = 0;
    o->slow_ms = 100;
    o->tail_s = quick ? 1 : 4;
    o->goodput_min = 0.5;
    o->p99_factor = 10;
    o->refusal_ms = 1000;
    o->timeouts_max = 0.01;
    o->recover_s = quick ? 8 : 15; /* a cell reloads its orders first: seconds under load */
    char err[128];
    int rc = d11_rh_plan_stages(o, "0.5,1,2,3", err, sizeof err);
    D11_ASSERT(rc == 0);
    rc = d11_rh_plan_faults(o, "pause,slow-commits,relay-down,degrade,kill", err, sizeof err);
    D11_ASSERT(rc == 0);
}

/* The fault stage is the last one; (re)build it from the fault list. */
static void lay_out(d11_rh_opts *o)
{
    int q = o->quick ? 1 : 0;
    double gap = q ? 1 : 3, t = q ? 0.5 : 1;
    for (int i = 0; i < o->nfaults; i++) {
        d11_rh_fault *f = &o->faults[i];
        f->at_s = t;
        f->dur_s = f->kind == D11_RH_F_KILL ? o->recover_s : fault_len[q][f->kind];
        t += f->dur_s + gap;
    }
    D11_ASSERT(o->nstages >= 1 && o->stages[o->nstages - 1].faults);
    d11_rh_stage *s = &o->stages[o->nstages - 1];
    s->dur_s = o->nfaults ? t - gap + o->tail_s : 0;
}

int d11_rh_plan_stages(d11_rh_opts *o, const char *list, char *err, size_t errlen)
{
    double dur = o->quick ? 2 : 10;
    int n = 0;
    for (const char *p = list; *p;) {
        char *end;
        double m = strtod(p, &end);
        if (end == p || !(m > 0) || m > 100) {
            snprintf(err, errlen, "--stages: expected multipliers of the capacity like 0.5,1,2,3");
            return -1;
        }
        if (n == D11_RH_STAGES_MAX - 1) {
            snprintf(err, errlen, "--stages: at most %d stages", D11_RH_STAGES_MAX - 1);
            return -1;
        }
        d11_rh_stage *s = &o->stages[n++];
        memset(s, 0, sizeof *s);
        s->mult = m;
        s->dur_s = dur;
        snprintf(s->name, sizeof s->name, "%gC", m);
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') {
            snprintf(err, errlen, "--stages: expected multipliers of the capacity like 0.5,1,2,3");
            return -1;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "--stages: at least one stage");
        return -1;
    }
    d11_rh_stage *fs = &o->stages[n++];
    memset(fs, 0, sizeof *fs);
    fs->mult = 0.6;
    fs->faults = true;
    snprintf(fs->name, sizeof fs->name, "faults");
    o->nstages = n;
    lay_out(o);
    return 0;
}

int d11_rh_plan_faults(d11_rh_opts *o, const char *list, char *err, size_t errlen)
{
    o->nfaults = 0;
    if (strcmp(list, "none") != 0) {
        for (const char *p = list; *p;) {
            size_t n = strcspn(p, ",");
            int kind = -1;
            for (int k = 0; k < D11_RH_F_KINDS; k++)
                if (strlen(d11_rh_fault_name(k)) == n && !strncmp(p, d11_rh_fault_name(k), n)) kind = k;
            if (kind < 0 || o->nfaults == D11_RH_FAULTS_MAX) {
                snprintf(err, errlen, "--faults: a list of pause, slow-commits, relay-down, degrade, kill (at most %d), or none",
                         D11_RH_FAULTS_MAX);
                return -1;
            }
            memset(&o->faults[o->nfaults], 0, sizeof o->faults[0]);
            o->faults[o->nfaults].kind = kind;
            o->faults[o->nfaults].effect = -1;
            o->nfaults++;
            p += n;
            if (*p == ',') p++;
        }
    }
    lay_out(o);
    return 0;
}

/* ---- checks ---- */

static void add(d11_rh_run *r, const char *name, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void add(d11_rh_run *r, const char *name, int status, const char *fmt, ...)
{
    D11_ASSERT(r->nchecks < D11_RH_CHECKS_MAX);
    d11_rh_check *c = &r->checks[r->nchecks++];
    snprintf(c->name, sizeof c->name, "%s", name);
    c->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->detail, sizeof c->detail, fmt, ap);
    va_end(ap);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The sample index at or just before t (0 when none). */
static int sample_at(const d11_rh_run *r, double t)
{
    int k = 0;
    for (int i = 0; i < r->nsamples; i++)
        if (r->samples[i].t_s <= t) k = i;
    return k;
}

static const d11_rh_fault *fault_of(const d11_rh_opts *o, int kind)
{
    for (int i = 0; i < o->nfaults; i++)
        if (o->faults[i].kind == kind) return &o->faults[i];
    return NULL;
}

static void check_breaker(d11_rh_run *r)
{
    const d11_rh_opts *o = r->o;
    const d11_rh_fault *f = fault_of(o, D11_RH_F_PAUSE);
    if (!f || f->status != D11_RH_DONE) {
        add(r, "breaker_opened_on_pause", -1, "%s", f ? f->why : "no pause in the plan");
        return;
    }
    int c = o->drill_cell, i0 = sample_at(r, f->t0_s);
    bool opened = false;
    for (int i = i0; i < r->nsamples && r->samples[i].t_s <= f->t1_s + 3; i++) {
        const d11_rh_sample *s = &r->samples[i];
        if (!s->ok || c >= s->ncells) continue;
        if (s->breaker[c] == 1 || s->breaker[c] == 2 ||
            s->breaker_opened_cum[c] > r->samples[i0].breaker_opened_cum[c])
            opened = true;
    }
    add(r, "breaker_opened_on_pause", opened ? 1 : 0,
        "cell %d paused (SIGSTOP) %.1f s at t=%.1f s: its breaker %s", c, f->t1_s - f->t0_s, f->t0_s,
        opened ? "opened" : "never opened (its 5-s window must start inside the pause: pause > 5 s + the request timeout)");
}

void d11_rh_evaluate(d11_rh_run *r)
{
    const d11_rh_opts *o = r->o;
    r->nchecks = 0;
    add(r, "capacity_found", r->capacity > 0 ? 1 : 0, "C = %.0f orders/s (%s)", r->capacity, r->capacity_how);

    /* the baseline (lowest load stage) and the overload stage (highest above 1C) */
    const d11_rh_stage *base = NULL, *over = NULL;
    for (int i = 0; i < o->nstages; i++) {
        const d11_rh_stage *s = &o->stages[i];
        if (s->faults || !s->done) continue;
        if (!base || s->mult < base->mult) base = s;
        if (s->mult > 1 && (!over || s->mult > over->mult)) over = s;
    }
    int64_t sent = 0, refused = 0, bad = 0, tmo = 0, g504 = 0, unsent = 0, ok_n = 0;
    for (int i = 0; i < o->nstages; i++) {
        const d11_rh_stage *s = &o->stages[i];
        if (s->faults || !s->done || s->mult <= 1) continue;
        sent += s->sent + s->unsent;
        refused += s->refused;
        ok_n += s->ok;
        bad += s->timeouts + s->unsent + s->http504;
        tmo += s->timeouts;
        g504 += s->http504;
        unsent += s->unsent;
    }
    if (!over) {
        add(r, "protection_refused_past_capacity", -1, "no stage above 1C ran");
        add(r, "no_timeouts_past_capacity", -1, "no stage above 1C ran");
        add(r, "goodput_at_overload", -1, "no stage above 1C ran");
        add(r, "admitted_p99_at_overload", -1, "no stage above 1C ran");
    } else {
        /* Of what was offered above 1C and not served, protection should have refused most
         * at once (the rest waited: queued, timed out, or never sent). */
        int64_t unserved = sent - ok_n;
        bool served = unserved <= sent / 20;
        add(r, "protection_refused_past_capacity", served || refused * 2 >= unserved ? 1 : 0,
            "above 1C: %lld offered, %lld served, %lld refused at once (fast 503/429) = %.0f%% of the unserved "
            "(need >= 50%%)%s", (long long)sent, (long long)ok_n, (long long)refused,
            unserved > 0 ? 100.0 * (double)refused / (double)unserved : 100.0,
            served ? "; the offered load was served (not overloaded)" : "");
        double ratio = sent ? (double)bad / (double)sent : 0;
        add(r, "no_timeouts_past_capacity", ratio <= o->timeouts_max ? 1 : 0,
            "%lld of %lld requests above 1C: %lld transport failures/timeouts, %lld 504, %lld never sent (every "
            "connection waiting); %.4f, limit %.4f", (long long)bad, (long long)sent, (long long)tmo, (long long)g504,
            (long long)unsent, ratio, o->timeouts_max);
        double want = o->goodput_min * r->capacity;
        add(r, "goodput_at_overload", over->ok_per_s >= want && over->ok > 0 ? 1 : 0,
            "at %s (%.0f/s offered): %.0f orders/s admitted and served; need >= %.2f x C = %.0f/s", over->name,
            over->rate, over->ok_per_s, o->goodput_min, want);
        double lim = base ? o->p99_factor * (double)base->ok_p99_us : 0;
        add(r, "admitted_p99_at_overload", base && over->ok_p99_us > 0 && (double)over->ok_p99_us <= lim ? 1 : 0,
            "p99 of admitted orders at %s %.1f ms; at %s %.1f ms; limit %.1f x = %.1f ms", over->name,
            (double)over->ok_p99_us / 1000, base ? base->name : "-", base ? (double)base->ok_p99_us / 1000 : 0,
            o->p99_factor, lim / 1000);
    }
    if (r->probe_refused > 0) {
        double *v = (double *)r->probe_refused_ms;
        int n = r->probe_refused < D11_RH_PROBES_MAX ? r->probe_refused : D11_RH_PROBES_MAX;
        double tmp[D11_RH_PROBES_MAX];
        memcpy(tmp, v, (size_t)n * sizeof *tmp);
        qsort(tmp, (size_t)n, sizeof *tmp, cmp_double);
        double p99 = tmp[(int)ceil(0.99 * n) - 1];
        bool ok = r->probe_refused_ra == r->probe_refused && p99 <= o->refusal_ms;
        add(r, "refusals_fast_with_retry_after", ok ? 1 : 0,
            "%d of %d probe orders above 1C refused; %d with Retry-After; refusal p99 %.1f ms (limit %.0f ms)",
            r->probe_refused, r->nprobes, r->probe_refused_ra, p99, o->refusal_ms);
    } else {
        add(r, "refusals_fast_with_retry_after", -1, "none of %d probe orders above 1C was refused", r->nprobes);
    }
    check_breaker(r);
    const d11_rh_fault *f = fault_of(o, D11_RH_F_KILL);
    if (!f || f->status != D11_RH_DONE)
        add(r, "cell_recovered_after_kill", -1, "%s", f ? f->why : "no kill in the plan");
    else
        add(r, "cell_recovered_after_kill", f->effect == 1 ? 1 : 0, "%s", f->why);
    f = fault_of(o, D11_RH_F_SLOW_COMMITS);
    if (!f || f->status == D11_RH_SKIPPED || f->status == D11_RH_PENDING) {
        add(r, "slow_commits_seen", -1, "%s", f ? f->why : "no slow-commits in the plan");
    } else if (f->status == D11_RH_FAILED) {
        add(r, "slow_commits_seen", 0, "%s", f->why);
    } else {
        int i0 = sample_at(r, f->t0_s), i1 = sample_at(r, f->t1_s + 1.5);
        double d = r->samples[i1].slow_commits_cum - r->samples[i0].slow_commits_cum;
        add(r, "slow_commits_seen", d > 0 ? 1 : 0, "d11_cell_slow_commits_total rose by %.0f while commits were "
            "delayed %.0f ms", d, o->slow_ms);
    }
    f = fault_of(o, D11_RH_F_DEGRADE);
    if (!f || f->status == D11_RH_SKIPPED || f->status == D11_RH_PENDING) {
        add(r, "degrade_switch_acted", -1, "%s", f ? f->why : "no degrade in the plan");
    } else if (f->status == D11_RH_FAILED) {
        add(r, "degrade_switch_acted", 0, "%s", f->why);
    } else {
        int i0 = sample_at(r, f->t0_s), i1 = sample_at(r, f->t1_s + 1.5);
        double d = r->samples[i1].refused_cum[D11_RH_R_DEGRADED] - r->samples[i0].refused_cum[D11_RH_R_DEGRADED];
        add(r, "degrade_switch_acted", d > 0 ? 1 : 0, "%.0f orders refused 503 degraded while a scheduled switch "
            "was on for the hot rehearsal SKU; removed after %.1f s", d, f->t1_s - f->t0_s);
    }
    int armed = 0, failed = 0, skipped = 0;
    char why[D11_RH_TEXT_MAX] = "";
    for (int i = 0; i < o->nfaults; i++) {
        const d11_rh_fault *x = &o->faults[i];
        if (x->kind != D11_RH_F_SLOW_COMMITS && x->kind != D11_RH_F_RELAY_DOWN) continue;
        if (x->status == D11_RH_DONE) armed++;
        else if (x->status == D11_RH_FAILED) failed++, snprintf(why, sizeof why, "%s", x->why);
        else skipped++, snprintf(why, sizeof why, "%s", x->why);
    }
    if (failed) add(r, "chaos_experiments", 0, "%d failed: %s", failed, why);
    else if (armed) add(r, "chaos_experiments", 1, "%d armed through POST /admin/chaos and destroyed", armed);
    else add(r, "chaos_experiments", -1, "%s", skipped ? why : "none in the plan");

    add(r, "real_stock_untouched",
        r->real_sold_before >= 0 && r->real_sold_after == r->real_sold_before ? 1 : 0,
        "real stock_sold of the rehearsal SKUs %lld before, %lld after (shadow sold %lld)",
        (long long)r->real_sold_before, (long long)r->real_sold_after, (long long)r->shadow_sold_after);
    if (r->audit_rc < 0) add(r, "invariants_audit", -1, "%s", r->audit_detail);
    else add(r, "invariants_audit", r->audit_rc == 0 ? 1 : 0, "%s", r->audit_detail);
    const d11_rh_sample *last = r->nsamples ? &r->samples[r->nsamples - 1] : NULL;
    int up = 0, n = last ? last->ncells : 0;
    for (int i = 0; i < n; i++) up += last->cell_up[i] == 1;
    add(r, "all_cells_up_at_end", last && last->ok && n > 0 && up == n ? 1 : 0, "%d of %d cells up at the end", up,
        n);
    r->pass = true;
    for (int i = 0; i < r->nchecks; i++)
        if (r->checks[i].status == 0) r->pass = false;
}
