/*
 * ctl_chaos.c — `d11 ctl chaos ...`: live chaos experiments over the admin API and
 * process drills on the local host (docs/reliability.md "Live chaos").
 *
 *   chaos create JSON | --target T --point P --action A [--ms N] [--percent P] --timeout S
 *                                 POST /admin/chaos, prints {"id","expires_at"}
 *   chaos list                    GET /admin/chaos (a table; --json: the gateway's JSON)
 *   chaos get ID | delete ID      GET / DELETE /admin/chaos/ID
 *   chaos slow-commits --ms M --timeout S [--cell N]
 *                                 an experiment: store.commit delay M ms on cell N (default:
 *                                 every cell) for S seconds
 *   chaos kill-cell N             SIGKILL cell N (`d11 up` restarts it)
 *   chaos pause-cell N --seconds S
 *                                 SIGSTOP cell N; a detached child sends SIGCONT after S s
 *   chaos fill-disk --up-to PCT%|BYTES --timeout S
 *                                 a ballast file DATA/chaos-ballast-<pid>.bin (PCT%: until the
 *                                 file system of DATA is PCT% used; BYTES: that many, with a
 *                                 K/M/G suffix), removed by a detached child after S s
 *
 * Drills find a cell's pid in its lock file DATA/cell-N.lock (core/datadir.h) and check
 * that the lock is held (flock would succeed on a dead holder's file), so a stale pid is
 * never signalled. The undo of a drill (SIGCONT, unlink) is done by a child that leaves
 * the session (setsid) and ignores SIGHUP/SIGINT/SIGTERM: killing ctl, or its terminal,
 * does not cancel it. Only SIGKILL of that child (its pid is printed) or a reboot does;
 * then `kill -CONT PID` / `rm` the ballast by hand.
 * Thread: single-threaded CLI (the undo child is a fork).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "../core/limits.h"
#include "ctl_int.h"

#define CHAOS_PAUSE_S_MAX   3600        /* pause-cell --seconds */
#define CHAOS_FILL_S_MAX    3600        /* fill-disk --timeout */
#define CHAOS_FILL_BYTES_MAX (1ULL << 40) /* one ballast file */

/* ---- the API verbs ---- */

static int print_answer(ctl_ctx *x, int st, const char *method, const char *path)
{
    if (st < 0) return 1;
    fwrite(x->c.body.data ? x->c.body.data : "", 1, x->c.body.len, stdout);
    putchar('\n');
    if (st < 200 || st > 299) {
        ctl_report(x, method, path);
        return 1;
    }
    return 0;
}

/* Value of --name in args[from..n) (also --name=V), or NULL. */
static const char *flag(int nargs, char **args, int from, const char *name)
{
    size_t nl = strlen(name);
    for (int i = from; i < nargs; i++)
        if (!strncmp(args[i], name, nl)) {
            if (args[i][nl] == '=') return args[i] + nl + 1;
            if (!args[i][nl] && i + 1 < nargs) return args[i + 1];
        }
    return NULL;
}

static int post_experiment(ctl_ctx *x, const char *body)
{
    int st = ctl_http(x, "POST", "/admin/chaos", body, strlen(body), "Content-Type: application/json\r\n");
    return print_answer(x, st, "POST", "/admin/chaos");
}

static int create(ctl_ctx *x, int nargs, char **args)
{
    if (nargs >= 2 && args[1][0] == '{') return post_experiment(x, args[1]);
    const char *tg = flag(nargs, args, 1, "--target"), *pt = flag(nargs, args, 1, "--point");
    const char *ac = flag(nargs, args, 1, "--action"), *ms = flag(nargs, args, 1, "--ms");
    const char *pc = flag(nargs, args, 1, "--percent"), *to = flag(nargs, args, 1, "--timeout");
    if (!tg || !pt || !ac || !to)
        return ctl_usage_err("%s", "chaos create JSON | --target T --point P --action A [--ms N] [--percent P] --timeout S");
    char body[512];
    uint64_t v;
    if (d11_parse_u64(to, strlen(to), UINT32_MAX, &v) < 0) return ctl_usage_err("--timeout: seconds, got '%s'", to);
    int n = snprintf(body, sizeof body, "{\"target\":\"%s\",\"point\":\"%s\",\"action\":\"%s\",\"timeout_s\":%s", tg,
                     pt, ac, to);
    if (ms || pc) {
        if (ms && d11_parse_u64(ms, strlen(ms), UINT32_MAX, &v) < 0) return ctl_usage_err("--ms: an integer, got '%s'", ms);
        if (pc && d11_parse_u64(pc, strlen(pc), 100, &v) < 0) return ctl_usage_err("--percent: 1..100, got '%s'", pc);
        n += snprintf(body + n, sizeof body - (size_t)n, ",\"params\":{%s%s%s%s%s}", ms ? "\"ms\":" : "", ms ? ms : "",
                      ms && pc ? "," : "", pc ? "\"percent\":" : "", pc ? pc : "");
    }
    if ((size_t)n + 2 >= sizeof body || strpbrk(tg, "\"\\") || strpbrk(pt, "\"\\") || strpbrk(ac, "\"\\"))
        return ctl_usage_err("%s", "chaos create: arguments too long or with quotes");
    snprintf(body + n, sizeof body - (size_t)n, "}");
    return post_experiment(x, body);
}

static int slow_commits(ctl_ctx *x, int nargs, char **args)
{
    const char *ms = flag(nargs, args, 1, "--ms"), *to = flag(nargs, args, 1, "--timeout");
    const char *cell = flag(nargs, args, 1, "--cell");
    uint64_t m, s, c = 0;
    if (!ms || !to || d11_parse_u64(ms, strlen(ms), UINT32_MAX, &m) < 0 ||
        d11_parse_u64(to, strlen(to), UINT32_MAX, &s) < 0 ||
        (cell && d11_parse_u64(cell, strlen(cell), D11_CELLS_MAX - 1, &c) < 0))
        return ctl_usage_err("%s", "chaos slow-commits --ms M --timeout S [--cell N]");
    char body[256], target[24];
    if (cell) snprintf(target, sizeof target, "cell:%llu", (unsigned long long)c);
    else snprintf(target, sizeof target, "cells");
    snprintf(body, sizeof body,
             "{\"target\":\"%s\",\"point\":\"store.commit\",\"action\":\"delay\",\"params\":{\"ms\":%llu},"
             "\"timeout_s\":%llu}",
             target, (unsigned long long)m, (unsigned long long)s);
    return post_experiment(x, body);
}

static int list(ctl_ctx *x)
{
    int st = ctl_http(x, "GET", "/admin/chaos", NULL, 0, NULL);
    if (st < 0) return 1;
    if (x->json || st != 200) return print_answer(x, st, "GET", "/admin/chaos");
    const char *it;
    jw_span root = {x->c.body.data, x->c.body.len}, arr, e;
    printf("%-16s  %-8s  %-16s  %-6s  %-8s  %-9s  %s\n", "ID", "TARGET", "POINT", "ACTION", "PARAMS", "STATE",
           "EXPIRES_AT");
    if (!jw_get(root, "experiments", &arr)) return 0;
    it = arr.p;
    while (jw_elem(&it, arr.p + arr.n, &e)) {
        char id[24], tg[16], pt[24], ac[12], stt[12], ex[24], ms[12] = "", pc[8] = "";
        jw_span v, prm;
        const char *keys[] = {"id", "target", "point", "action", "state", "expires_at"};
        char *outs[] = {id, tg, pt, ac, stt, ex};
        size_t caps[] = {sizeof id, sizeof tg, sizeof pt, sizeof ac, sizeof stt, sizeof ex};
        for (int i = 0; i < 6; i++) {
            outs[i][0] = 0;
            if (jw_get(e, keys[i], &v)) jw_text(v, outs[i], caps[i]);
        }
        if (jw_get(e, "params", &prm)) {
            if (jw_get(prm, "ms", &v)) jw_text(v, ms, sizeof ms);
            if (jw_get(prm, "percent", &v)) jw_text(v, pc, sizeof pc);
        }
        char params[32];
        snprintf(params, sizeof params, "%sms %s%%", ms, pc);
        printf("%-16s  %-8s  %-16s  %-6s  %-8s  %-9s  %s\n", id, tg, pt, ac, params, stt, ex);
    }
    return 0;
}

/* ---- process drills ---- */

/* The pid holding DATA/<who>.lock, or 0 (after a message) when no live process holds it. */
static long locked_pid(const char *data, const char *who)
{
    char path[1200], buf[32];
    snprintf(path, sizeof path, "%s/%s.lock", data, who);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        fprintf(stderr, "d11 ctl: %s: %s (is %s running on this host, with this --data?)\n", path, strerror(errno),
                who);
        return 0;
    }
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) { /* nobody holds it: the pid in it is stale */
        close(fd);
        fprintf(stderr, "d11 ctl: %s is not running (%s is not locked)\n", who, path);
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    uint64_t pid = 0;
    size_t len = n > 0 ? (size_t)n : 0;
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' ')) len--;
    if (len == 0 || d11_parse_u64(buf, len, 1u << 22, &pid) < 0 || pid < 2) {
        fprintf(stderr, "d11 ctl: %s holds no pid yet; try again\n", path);
        return 0;
    }
    return (long)pid;
}

static long cell_pid(ctl_ctx *x, const char *arg)
{
    uint64_t n;
    if (!arg || d11_parse_u64(arg, strlen(arg), D11_CELLS_MAX - 1, &n) < 0) {
        ctl_usage_err("cell number expected, got '%s'", arg ? arg : "");
        return -2;
    }
    char who[32];
    snprintf(who, sizeof who, "cell-%llu", (unsigned long long)n);
    return locked_pid(x->data_dir, who);
}

/* Fork a detached child that sleeps s seconds and then runs undo(arg). The parent
 * returns the child's pid (or -errno). */
static long undo_later(uint64_t s, void (*undo)(const void *), const void *arg)
{
    pid_t c = fork();
    if (c == -1) return -errno;
    if (c > 0) return c;
    setsid();
    signal(SIGHUP, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    int dn = open("/dev/null", O_RDWR);
    if (dn >= 0) {
        dup2(dn, 0);
        dup2(dn, 1);
        dup2(dn, 2); /* release the caller's pipes: a script waiting for ctl's output must not wait for us */
        if (dn > 2) close(dn);
    }
    struct timespec ts = {.tv_sec = (time_t)s}, rem;
    while (nanosleep(&ts, &rem) == -1 && errno == EINTR) ts = rem;
    undo(arg);
    _exit(0);
}

static void resume(const void *arg)
{
    pid_t pid = *(const pid_t *)arg;
    if (kill(pid, SIGCONT) == -1 && errno != ESRCH)
        fprintf(stderr, "d11 ctl chaos: cannot resume %d: %s\n", (int)pid, strerror(errno));
}

static void unlink_ballast(const void *arg) { (void)unlink((const char *)arg); }

static int kill_cell(ctl_ctx *x, int nargs, char **args)
{
    long pid = cell_pid(x, nargs >= 2 ? args[1] : NULL);
    if (pid <= 0) return pid == -2 ? 2 : 1;
    if (kill((pid_t)pid, SIGKILL) == -1) {
        fprintf(stderr, "d11 ctl: kill %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    printf("{\"drill\":\"kill-cell\",\"cell\":%s,\"pid\":%ld}\n", args[1], pid);
    return 0;
}

static int pause_cell(ctl_ctx *x, int nargs, char **args)
{
    const char *sec = flag(nargs, args, 2, "--seconds");
    uint64_t s;
    if (!sec || d11_parse_u64(sec, strlen(sec), CHAOS_PAUSE_S_MAX, &s) < 0 || s == 0)
        return ctl_usage_err("chaos pause-cell N --seconds S (1..%s)", "3600");
    long pid = cell_pid(x, nargs >= 2 ? args[1] : NULL);
    if (pid <= 0) return pid == -2 ? 2 : 1;
    pid_t target = (pid_t)pid;
    fflush(stdout);
    long child = undo_later(s, resume, &target); /* first the resume, then the pause */
    if (child < 0) {
        fprintf(stderr, "d11 ctl: cannot start the resume child: %s\n", d11_strerror((int)child));
        return 1;
    }
    if (kill(target, SIGSTOP) == -1) {
        fprintf(stderr, "d11 ctl: kill -STOP %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    printf("{\"drill\":\"pause-cell\",\"cell\":%s,\"pid\":%ld,\"resume_at\":%lld,\"resumer_pid\":%ld}\n", args[1], pid,
           (long long)(d11_wall_ms() + (int64_t)s * 1000), child);
    return 0;
}

/* PCT% or BYTES[K|M|G] -> the ballast size for the file system of dir. */
static int ballast_bytes(const char *dir, const char *spec, uint64_t *out)
{
    size_t n = strlen(spec);
    uint64_t v;
    if (n >= 2 && spec[n - 1] == '%') {
        if (d11_parse_u64(spec, n - 1, 100, &v) < 0) return -EINVAL;
        struct statvfs sv;
        if (statvfs(dir, &sv) == -1) return -errno;
        uint64_t total = (uint64_t)sv.f_blocks * sv.f_frsize, avail = (uint64_t)sv.f_bavail * sv.f_frsize;
        uint64_t used = total - (uint64_t)sv.f_bfree * sv.f_frsize, want = total / 100 * v;
        *out = want > used ? want - used : 0;
        if (*out > avail) *out = avail;
        return 0;
    }
    uint64_t mul = 1;
    char last = n ? spec[n - 1] : 0;
    if (last == 'K' || last == 'k') mul = 1ULL << 10;
    else if (last == 'M' || last == 'm') mul = 1ULL << 20;
    else if (last == 'G' || last == 'g') mul = 1ULL << 30;
    if (mul > 1) n--;
    if (n == 0 || d11_parse_u64(spec, n, CHAOS_FILL_BYTES_MAX / mul, &v) < 0) return -EINVAL;
    *out = v * mul;
    return 0;
}

static int fill_disk(ctl_ctx *x, int nargs, char **args)
{
    const char *up = flag(nargs, args, 1, "--up-to"), *to = flag(nargs, args, 1, "--timeout");
    uint64_t s, bytes = 0;
    if (!up || !to || d11_parse_u64(to, strlen(to), CHAOS_FILL_S_MAX, &s) < 0 || s == 0)
        return ctl_usage_err("%s", "chaos fill-disk --up-to PCT%|BYTES[K|M|G] --timeout S (1..3600)");
    int rc = ballast_bytes(x->data_dir, up, &bytes);
    if (rc < 0) return ctl_usage_err("--up-to: PCT%% (0..100) or BYTES[K|M|G], got '%s'", up);
    static char path[1200];
    snprintf(path, sizeof path, "%s/chaos-ballast-%d.bin", x->data_dir, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd == -1) {
        fprintf(stderr, "d11 ctl: %s: %s\n", path, strerror(errno));
        return 1;
    }
    rc = bytes ? posix_fallocate(fd, 0, (off_t)bytes) : 0;
    close(fd);
    if (rc != 0 && rc != ENOSPC) {
        fprintf(stderr, "d11 ctl: cannot fill %s: %s\n", path, strerror(rc));
        unlink(path);
        return 1;
    }
    struct stat st;
    uint64_t got = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    fflush(stdout);
    long child = undo_later(s, unlink_ballast, path);
    if (child < 0) {
        fprintf(stderr, "d11 ctl: cannot start the cleanup child (%s); removing the ballast now\n",
                d11_strerror((int)child));
        unlink(path);
        return 1;
    }
    printf("{\"drill\":\"fill-disk\",\"path\":\"%s\",\"bytes\":%llu,\"remove_at\":%lld,\"remover_pid\":%ld}\n", path,
           (unsigned long long)got, (long long)(d11_wall_ms() + (int64_t)s * 1000), child);
    return 0;
}

int ctl_chaos(ctl_ctx *x, int nargs, char **args)
{
    const char *v = nargs ? args[0] : "";
    char path[64];
    if (!strcmp(v, "create")) return create(x, nargs, args);
    if (!strcmp(v, "list") && nargs == 1) return list(x);
    if ((!strcmp(v, "get") || !strcmp(v, "delete")) && nargs == 2 && strlen(args[1]) <= 32 &&
        !strpbrk(args[1], "/?#% ")) {
        snprintf(path, sizeof path, "/admin/chaos/%s", args[1]);
        const char *m = v[0] == 'g' ? "GET" : "DELETE";
        return print_answer(x, ctl_http(x, m, path, NULL, 0, NULL), m, path);
    }
    if (!strcmp(v, "slow-commits")) return slow_commits(x, nargs, args);
    if (!strcmp(v, "kill-cell") && nargs == 2) return kill_cell(x, nargs, args);
    if (!strcmp(v, "pause-cell")) return pause_cell(x, nargs, args);
    if (!strcmp(v, "fill-disk")) return fill_disk(x, nargs, args);
    return ctl_usage_err("%s", "chaos create|list|get ID|delete ID|slow-commits|kill-cell N|pause-cell N|fill-disk");
}
