/*
 * probe.c — what `d11 rehearse` says to the platform (rehearse.h): samples of /metrics
 * and /admin/cells, the live chaos API (POST/DELETE /admin/chaos), process drills on a
 * cell (SIGSTOP/SIGCONT, SIGKILL) by the pid in DATA/cell-N.lock, a scheduled degrade
 * switch on a rehearsal SKU (PATCH /admin/rules), stress-tagged refusal probes, stock
 * reads and `d11 audit`.
 *
 * Safety rules kept here: every business request carries X-D11-Stress: 1; a signal goes
 * only to a pid whose /proc/PID/cmdline is `d11 ... cell ...` (a stale lock file naming a
 * recycled pid is refused); a pause is always ended by d11_rh_fault_stop (the caller
 * stops every active fault on every exit path), and by a watchdog child 1 s after its
 * planned end if this process dies before. All calls block, with the client's
 * timeout; the main thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../ctl/ctl_int.h"
#include "rehearse.h"

#define STRESS_HDR "X-D11-Stress: 1\r\n"

/* ---- Prometheus text ---- */

bool d11_rh_prom_sum(const char *text, size_t n, const char *name, const char *want, double *out)
{
    size_t nl = strlen(name);
    bool found = false;
    double sum = 0;
    const char *p = text, *end = text + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if (*p != '#' && (size_t)(eol - p) > nl && !memcmp(p, name, nl) && (p[nl] == '{' || p[nl] == ' ')) {
            const char *v = p + nl;
            bool match = true;
            if (*v == '{') {
                const char *close = memchr(v, '}', (size_t)(eol - v));
                if (!close) match = false;
                else {
                    if (want && !memmem(v, (size_t)(close - v), want, strlen(want))) match = false;
                    v = close + 1;
                }
            } else if (want && *want) {
                match = false;
            }
            if (match) {
                char num[64];
                size_t k = (size_t)(eol - v);
                if (k >= sizeof num) k = sizeof num - 1;
                memcpy(num, v, k);
                num[k] = 0;
                char *e;
                double x = strtod(num, &e);
                if (e != num && isfinite(x)) {
                    sum += x;
                    found = true;
                }
            }
        }
        p = eol + 1;
    }
    if (found) *out = sum;
    return found;
}

static int get(d11_httpc *c, const char *auth, const char *path)
{
    int rc = d11_httpc_do(c, "GET", path, auth, NULL, 0);
    return rc < 0 ? rc : c->status;
}

void d11_rh_sample_take(d11_httpc *c, const char *auth, double t_s, const d11_rh_sample *prev,
                        d11_rh_sample *s)
{
    memset(s, 0, sizeof *s);
    s->t_s = t_s;
    memset(s->cell_up, -1, sizeof s->cell_up);
    memset(s->breaker, -1, sizeof s->breaker);
    if (get(c, auth, "/admin/cells") == 200 && c->body.data) {
        jw_span doc = {c->body.data, c->body.len}, cells, el;
        if (jw_get(doc, "cells", &cells)) {
            const char *it = cells.p, *end = cells.p + cells.n;
            while (jw_elem(&it, end, &el)) {
                jw_span v;
                char t[32];
                if (!jw_get(el, "id", &v)) continue;
                jw_text(v, t, sizeof t);
                int id = (int)strtol(t, NULL, 10);
                if (id < 0 || id >= D11_RH_CELLS_MAX) continue;
                bool up = jw_get(el, "up", &v) && v.n == 4 && !memcmp(v.p, "true", 4);
                bool conn = jw_get(el, "connected", &v) && v.n == 4 && !memcmp(v.p, "true", 4);
                s->cell_up[id] = up && conn;
                if (id + 1 > s->ncells) s->ncells = id + 1;
            }
        }
    }
    if (get(c, auth, "/metrics") != 200 || !c->body.data) return;
    s->ok = true;
    const char *m = c->body.data;
    size_t n = c->body.len;
    double v;
    static const char *const rej[D11_RH_R_COUNT] = {NULL, "rule=\"flow\"", NULL, "rule=\"degrade\"", "rule=\"risk\""};
    for (int r = 0; r < D11_RH_R_COUNT; r++) {
        v = 0;
        if (r == D11_RH_R_OVERLOADED) (void)d11_rh_prom_sum(m, n, "d11_gateway_protect_refused_total", NULL, &v);
        else if (r == D11_RH_R_BREAKER) (void)d11_rh_prom_sum(m, n, "d11_gateway_breaker_refused_total", NULL, &v);
        else (void)d11_rh_prom_sum(m, n, "d11_gateway_rejections_total", rej[r], &v);
        s->refused_cum[r] = v;
        if (prev && prev->ok && t_s > prev->t_s && v >= prev->refused_cum[r])
            s->refused_ps[r] = (v - prev->refused_cum[r]) / (t_s - prev->t_s);
    }
    for (int i = 0; i < D11_RH_CELLS_MAX; i++) {
        char want[48];
        snprintf(want, sizeof want, "target=\"cell-%d\"", i);
        if (d11_rh_prom_sum(m, n, "d11_gateway_breaker_state", want, &v)) {
            s->breaker[i] = (int8_t)v;
            if (i + 1 > s->ncells) s->ncells = i + 1;
        }
        if (d11_rh_prom_sum(m, n, "d11_gateway_breaker_opened_total", want, &v)) s->breaker_opened_cum[i] = v;
    }
    if (d11_rh_prom_sum(m, n, "d11_cell_slow_commits_total", NULL, &v)) s->slow_commits_cum = v;
    if (prev && prev->slow_commits_cum > s->slow_commits_cum) s->slow_commits_cum = prev->slow_commits_cum;
    if (d11_rh_prom_sum(m, n, "d11_gateway_protect_inflight", "", &v)) s->protect_inflight = v;
    if (d11_rh_prom_sum(m, n, "d11_gateway_protect_limit", "", &v)) s->protect_limit = v;
}

/* ---- process drills ---- */

/* The pid in DATA/cell-N.lock when it is a live `d11 ... cell` process; else 0 (why set). */
static int cell_pid(const d11_rh_opts *o, int cell, char *why, size_t n)
{
    char path[1200], buf[64] = "";
    snprintf(path, sizeof path, "%s/cell-%d.lock", o->data_dir, cell);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        snprintf(why, n, "cannot read %.160s: %s", path, strerror(errno));
        return 0;
    }
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    long pid = k > 0 ? strtol(buf, NULL, 10) : 0;
    if (pid <= 1) {
        snprintf(why, n, "%.160s names no process (cell %d down?)", path, cell);
        return 0;
    }
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    char cmd[1024];
    fd = open(path, O_RDONLY | O_CLOEXEC);
    k = fd == -1 ? -1 : read(fd, cmd, sizeof cmd - 1);
    if (fd != -1) close(fd);
    bool d11 = false, is_cell = false;
    for (ssize_t i = 0; i < k; i += (ssize_t)strlen(cmd + i) + 1) {
        cmd[k] = 0;
        const char *a = cmd + i, *base = strrchr(a, '/');
        if (i == 0) d11 = strstr(base ? base + 1 : a, "d11") != NULL;
        else if (!strcmp(a, "cell")) is_cell = true;
    }
    if (!d11 || !is_cell) {
        snprintf(why, n, "pid %ld of %.160s/cell-%d.lock is not a d11 cell process", pid, o->data_dir, cell);
        return 0;
    }
    return (int)pid;
}

static bool cell_up_now(d11_httpc *c, const char *auth, int cell)
{
    d11_rh_sample s;
    d11_rh_sample_take(c, auth, 0, NULL, &s);
    return cell < s.ncells && s.cell_up[cell] == 1;
}

/* ---- chaos API ---- */

static void chaos_arm(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    char body[512], hdr[D11_BENCH_HEADERS_BYTES_MAX + 64];
    int timeout_s = (int)ceil(f->dur_s) + 5; /* disarms itself even if we die */
    if (f->kind == D11_RH_F_SLOW_COMMITS)
        snprintf(body, sizeof body,
                 "{\"target\":\"cells\",\"point\":\"store.commit\",\"action\":\"delay\","
                 "\"params\":{\"ms\":%.0f,\"percent\":100},\"timeout_s\":%d}",
                 o->slow_ms, timeout_s);
    else
        snprintf(body, sizeof body,
                 "{\"target\":\"gateway\",\"point\":\"relay.publish\",\"action\":\"error\","
                 "\"params\":{\"percent\":100},\"timeout_s\":%d}",
                 timeout_s);
    snprintf(hdr, sizeof hdr, "%sContent-Type: application/json\r\n", o->bo.auth_header);
    int rc = d11_httpc_do(c, "POST", "/admin/chaos", hdr, body, strlen(body));
    const char *b = c->body.data ? c->body.data : "";
    if (rc < 0) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "POST /admin/chaos: %s", d11_strerror(rc));
    } else if (c->status == 404 || c->status == 405) {
        f->status = D11_RH_SKIPPED;
        snprintf(f->why, sizeof f->why, "the live chaos API is not available (POST /admin/chaos -> %d)", c->status);
    } else if (c->status != 201 && c->status != 200) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "POST /admin/chaos -> %d %.160s", c->status, b);
    } else if (d11_json_find_str(b, c->body.len, "id", f->chaos_id, sizeof f->chaos_id) <= 0) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "POST /admin/chaos -> %d without an id: %.160s", c->status, b);
    } else {
        f->status = D11_RH_ACTIVE;
        snprintf(f->why, sizeof f->why, "chaos experiment %.64s: %.160s", f->chaos_id, body);
    }
}

static void chaos_disarm(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    char path[128];
    snprintf(path, sizeof path, "/admin/chaos/%s", f->chaos_id);
    int rc = d11_httpc_do(c, "DELETE", path, o->bo.auth_header, NULL, 0);
    if (rc < 0 || (c->status / 100 != 2 && c->status != 404)) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "DELETE %s -> %d %s (it disarms itself at its timeout)", path,
                 rc < 0 ? 0 : c->status, rc < 0 ? d11_strerror(rc) : "");
        return;
    }
    f->status = D11_RH_DONE;
}

/* ---- degrade drill: a scheduled switch scoped to the hot rehearsal SKU ----
 * The entry is added to the rules' "degrade_schedule" (PATCH, compare-and-set on the
 * version read) with an until_ms a few seconds past the drill, so it turns itself off even
 * if the rehearsal dies; at the end exactly that entry is removed again (the array is
 * replaced whole by a PATCH, so the others are written back as read). */

/* GET /admin/rules: the schedule array's text into arr, the version into *version. */
static int rules_read(d11_httpc *c, const d11_rh_opts *o, d11_buf *arr, uint64_t *version)
{
    if (get(c, o->bo.auth_header, "/admin/rules") != 200 || !c->body.data) return -1;
    jw_span doc = {c->body.data, c->body.len}, v, s;
    char t[32];
    if (!jw_get(doc, "version", &v) || !jw_get(doc, "degrade_schedule", &s) || s.n < 2 || s.p[0] != '[') return -1;
    jw_text(v, t, sizeof t);
    *version = strtoull(t, NULL, 10);
    d11_buf_reset(arr);
    d11_buf_append(arr, s.p, s.n);
    d11_buf_append(arr, "", 1);
    arr->len--;
    return 0;
}

static int rules_patch(d11_httpc *c, const d11_rh_opts *o, uint64_t version, const d11_buf *arr)
{
    d11_buf b;
    d11_buf_init(&b, arr->len + 64);
    d11_buf_printf(&b, "{\"version\":%llu,\"degrade_schedule\":", (unsigned long long)version);
    d11_buf_append(&b, arr->data, arr->len);
    d11_buf_puts(&b, "}");
    char hdr[D11_BENCH_HEADERS_BYTES_MAX + 64];
    snprintf(hdr, sizeof hdr, "%sContent-Type: application/json\r\n", o->bo.auth_header);
    int rc = d11_httpc_do(c, "PATCH", "/admin/rules", hdr, b.data, b.len);
    d11_buf_free(&b);
    return rc < 0 ? rc : c->status;
}

static void degrade_on(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    d11_buf arr;
    d11_buf_init(&arr, 1024);
    uint64_t ver = 0;
    char sku[64];
    d11_workload_sku_name(&o->bo.wl, 0, sku, sizeof sku);
    int64_t now = d11_wall_ms();
    snprintf(f->degrade_entry, sizeof f->degrade_entry,
             "{\"resource\":\"orders.create\",\"sku\":\"%s\",\"from_ms\":%lld,\"until_ms\":%lld}", sku,
             (long long)(now - 5000), (long long)(now + (int64_t)(f->dur_s * 1000) + 5000));
    if (rules_read(c, o, &arr, &ver) < 0) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "GET /admin/rules: no rules document with a degrade_schedule");
    } else {
        bool empty = arr.len == 2 || strspn(arr.data + 1, " \n\t\r") == arr.len - 2;
        arr.len--; /* drop ']' */
        if (!empty) d11_buf_puts(&arr, ",");
        d11_buf_puts(&arr, f->degrade_entry);
        d11_buf_puts(&arr, "]");
        int st = rules_patch(c, o, ver, &arr);
        if (st == 200) {
            f->status = D11_RH_ACTIVE;
            snprintf(f->why, sizeof f->why, "degrade_schedule += orders.create for SKU %s (version %llu -> %llu)", sku,
                     (unsigned long long)ver, (unsigned long long)ver + 1);
        } else {
            f->status = D11_RH_FAILED;
            snprintf(f->why, sizeof f->why, "PATCH /admin/rules -> %d %.160s", st,
                     st > 0 && c->body.data ? c->body.data : "");
        }
    }
    d11_buf_free(&arr);
}

static void degrade_off(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    d11_buf arr;
    d11_buf_init(&arr, 1024);
    int st = 0;
    for (int attempt = 0; attempt < 3; attempt++) { /* 409: someone changed the rules meanwhile */
        uint64_t ver = 0;
        if (rules_read(c, o, &arr, &ver) < 0) break;
        char *at = strstr(arr.data, f->degrade_entry);
        if (!at) {
            st = 200; /* already gone */
            break;
        }
        size_t off = (size_t)(at - arr.data), n = strlen(f->degrade_entry);
        if (off + n < arr.len && arr.data[off + n] == ',') n++;           /* "mine," */
        else if (off > 1 && arr.data[off - 1] == ',') off--, n++;        /* ",mine" */
        memmove(arr.data + off, arr.data + off + n, arr.len - off - n + 1);
        arr.len -= n;
        st = rules_patch(c, o, ver, &arr);
        if (st != 409) break;
    }
    size_t k = strlen(f->why);
    if (st == 200) {
        f->status = D11_RH_DONE;
        snprintf(f->why + k, sizeof f->why - k, "; removed again");
    } else {
        f->status = D11_RH_FAILED;
        snprintf(f->why + k, sizeof f->why - k, "; could not remove it (PATCH -> %d); it ends by itself at until_ms", st);
    }
    d11_buf_free(&arr);
}

void d11_rh_fault_start(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    D11_ASSERT(f->status == D11_RH_PENDING);
    if (f->kind == D11_RH_F_SLOW_COMMITS || f->kind == D11_RH_F_RELAY_DOWN) {
        chaos_arm(c, o, f);
        return;
    }
    if (f->kind == D11_RH_F_DEGRADE) {
        degrade_on(c, o, f);
        return;
    }
    if (!o->data_dir) {
        f->status = D11_RH_SKIPPED;
        snprintf(f->why, sizeof f->why, "process drill needs --data DIR (the cell's pid is in DIR/cell-N.lock)");
        return;
    }
    char why[D11_RH_TEXT_MAX];
    int pid = cell_pid(o, o->drill_cell, why, sizeof why);
    if (pid <= 0) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "%s", why);
        return;
    }
    f->pid = pid;
    int sig = f->kind == D11_RH_F_PAUSE ? SIGSTOP : SIGKILL;
    if (kill(pid, sig) == -1) {
        f->status = D11_RH_FAILED;
        snprintf(f->why, sizeof f->why, "kill(%d, %s): %s", pid, sig == SIGSTOP ? "SIGSTOP" : "SIGKILL",
                 strerror(errno));
        return;
    }
    if (sig == SIGSTOP) {
        /* A watchdog child ends the pause even if this process is killed first (SIGKILL,
         * OOM): it only sleeps, sends SIGCONT and exits (async-signal-safe calls only,
         * as the child of a threaded process must). d11_rh_fault_stop reaps it. */
        pid_t w = fork();
        if (w == 0) {
            setsid();
            struct timespec ts = {(time_t)(f->dur_s + 1), 0};
            while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
            kill(pid, SIGCONT);
            _exit(0);
        }
        f->watchdog_pid = w > 0 ? (int)w : 0;
    }
    f->status = D11_RH_ACTIVE;
    snprintf(f->why, sizeof f->why, "cell %d (pid %d) %s", o->drill_cell, pid,
             sig == SIGSTOP ? "paused with SIGSTOP" : "killed with SIGKILL");
}

/* Kill drill: has the cell come back (a new live pid, reported up)? */
bool d11_rh_kill_recovered(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    char why[D11_RH_TEXT_MAX];
    int pid = cell_pid(o, o->drill_cell, why, sizeof why);
    return pid > 0 && pid != f->pid && cell_up_now(c, o->bo.auth_header, o->drill_cell);
}

void d11_rh_fault_stop(d11_httpc *c, const d11_rh_opts *o, d11_rh_fault *f)
{
    if (f->status != D11_RH_ACTIVE) return;
    switch (f->kind) {
    case D11_RH_F_SLOW_COMMITS:
    case D11_RH_F_RELAY_DOWN:
        chaos_disarm(c, o, f);
        return;
    case D11_RH_F_DEGRADE:
        degrade_off(c, o, f);
        return;
    case D11_RH_F_PAUSE:
        if (kill(f->pid, SIGCONT) == -1 && errno != ESRCH) {
            f->status = D11_RH_FAILED;
            snprintf(f->why, sizeof f->why, "kill(%d, SIGCONT): %s", f->pid, strerror(errno));
            return;
        }
        if (f->watchdog_pid > 0) {
            kill(f->watchdog_pid, SIGKILL);
            while (waitpid(f->watchdog_pid, NULL, 0) == -1 && errno == EINTR) {}
            f->watchdog_pid = 0;
        }
        f->status = D11_RH_DONE;
        return;
    case D11_RH_F_KILL: {
        bool back = d11_rh_kill_recovered(c, o, f);
        f->effect = back ? 1 : 0;
        size_t k = strlen(f->why);
        snprintf(f->why + k, sizeof f->why - k, back ? "; back up (restarted by its supervisor)"
                                                     : "; NOT back up within the recovery window");
        f->status = D11_RH_DONE;
        return;
    }
    }
    D11_ASSERT(!"unknown fault kind");
}

/* ---- business requests (all stress-tagged) ---- */

void d11_rh_probe(d11_httpc *c, const d11_rh_opts *o, d11_rh_run *r, uint64_t seq)
{
    char hdr[D11_BENCH_HEADERS_BYTES_MAX + 160], body[256], sku[64];
    d11_workload_sku_name(&o->bo.wl, 0, sku, sizeof sku);
    snprintf(hdr, sizeof hdr, "%s" STRESS_HDR "Content-Type: application/json\r\nIdempotency-Key: rh-probe-%d-%llu\r\n",
             o->bo.auth_header, (int)getpid(), (unsigned long long)seq);
    snprintf(body, sizeof body, "{\"user_id\":%llu,\"items\":[{\"sku\":\"%s\",\"quantity\":1}]}",
             (unsigned long long)(seq % 100000 + 1), sku);
    int64_t t0 = d11_mono_us();
    int rc = d11_httpc_do(c, "POST", "/v1/orders", hdr, body, strlen(body));
    double ms = (double)(d11_mono_us() - t0) / 1000.0;
    r->nprobes++;
    if (rc < 0) { /* a timeout or a reset is not a fast refusal: count it as a slow one */
        if (r->probe_refused < D11_RH_PROBES_MAX) r->probe_refused_ms[r->probe_refused] = ms;
        r->probe_refused++;
        return;
    }
    if (c->status == 429 || c->status == 503) {
        if (r->probe_refused < D11_RH_PROBES_MAX) r->probe_refused_ms[r->probe_refused] = ms;
        r->probe_refused++;
        if (c->parser.retry_after[0]) r->probe_refused_ra++;
    }
}

int64_t d11_rh_sold(d11_httpc *c, const d11_rh_opts *o, bool stress)
{
    char hdr[D11_BENCH_HEADERS_BYTES_MAX + 32], path[128], sku[64];
    snprintf(hdr, sizeof hdr, "%s%s", o->bo.auth_header, stress ? STRESS_HDR : "");
    int64_t sum = 0;
    uint64_t n = o->bo.wl.skus < 64 ? o->bo.wl.skus : 64;
    for (uint64_t i = 0; i < n; i++) {
        d11_workload_sku_name(&o->bo.wl, i, sku, sizeof sku);
        snprintf(path, sizeof path, "/v1/products/%s", sku);
        if (d11_httpc_do(c, "GET", path, hdr, NULL, 0) < 0 || c->status != 200 || !c->body.data) return -1;
        jw_span doc = {c->body.data, c->body.len}, v;
        char t[32];
        if (!jw_get(doc, "stock_sold", &v)) return -1;
        jw_text(v, t, sizeof t);
        sum += strtoll(t, NULL, 10);
    }
    return sum;
}

int d11_rh_setup(d11_httpc *c, const d11_rh_opts *o)
{
    char hdr[D11_BENCH_HEADERS_BYTES_MAX + 64], body[256], sku[64];
    snprintf(hdr, sizeof hdr, "%s" STRESS_HDR "Content-Type: application/json\r\n", o->bo.auth_header);
    for (uint64_t i = 0; i < o->bo.wl.skus; i++) {
        d11_workload_sku_name(&o->bo.wl, i, sku, sizeof sku);
        snprintf(body, sizeof body,
                 "{\"sku\":\"%s\",\"title\":\"d11 rehearsal item %llu\",\"price_cents\":100,"
                 "\"stock\":1000000000,\"category\":\"rehearsal\"}",
                 sku, (unsigned long long)i);
        int rc = d11_httpc_do(c, "POST", "/v1/products", hdr, body, strlen(body));
        if (rc < 0) {
            fprintf(stderr, "d11 rehearse: POST %s/v1/products: %s\n", o->bo.url.hostport, d11_strerror(rc));
            return -1;
        }
        if (c->status != 201 && c->status != 200 && c->status != 409) {
            fprintf(stderr, "d11 rehearse: POST /v1/products (%s) -> %d %.200s\n", sku, c->status,
                    c->body.data ? c->body.data : "");
            return -1;
        }
    }
    return 0;
}

/* ---- audit ---- */

int d11_rh_audit(const d11_rh_opts *o, char *detail, size_t n)
{
    if (!o->data_dir) {
        snprintf(detail, n, "needs --data DIR (the platform's data directory)");
        return -1;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == -1) {
        snprintf(detail, n, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid == -1) {
        snprintf(detail, n, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        execl(o->self_exe, "d11", "audit", "--data", o->data_dir, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    d11_buf out;
    d11_buf_init(&out, 4096);
    char buf[4096];
    ssize_t k;
    while ((k = read(fds[0], buf, sizeof buf)) > 0 || (k == -1 && errno == EINTR))
        if (k > 0 && out.len < (1 << 22)) d11_buf_append(&out, buf, (size_t)k);
    close(fds[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR) {}
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    d11_buf_append(&out, "", 1);
    const char *viol = strstr(out.data, "\"violations\":[");
    const char *skus = strstr(out.data, "\"skus\":");
    if (rc == 0)
        snprintf(detail, n, "d11 audit --data %.120s: every invariant holds (%lld SKU ledgers checked)", o->data_dir,
                 skus ? strtoll(skus + 7, NULL, 10) : 0LL);
    else if (rc == 1 && viol)
        snprintf(detail, n, "d11 audit: %.200s", viol);
    else
        snprintf(detail, n, "d11 audit exited %d", rc);
    if (rc != 0 && rc != 1) rc = -1;
    d11_buf_free(&out);
    return rc;
}
