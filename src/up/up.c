/*
 * up.c — `d11 up`: the supervisor that runs the whole platform on one machine.
 *
 * Starts, as child processes of this same binary: the center, then N cells (once the
 * center's socket answers), then the gateway. Writes DATA/pids/<name>.pid for each (and
 * up.pid) so operators and tests can find them. A child that dies is restarted with
 * exponential backoff (100 ms doubling to 5 s; reset after 10 s of good health).
 * The gateway runs --gateway-nice levels below the others (nice(2) between fork and exec;
 * docs/protection.md, "CPU priority"). Children get PR_SET_PDEATHSIG(SIGKILL): if the supervisor itself is killed, the whole
 * platform goes down with it instead of leaving orphans holding the sockets.
 *
 * Before it creates or deletes anything it checks, in this order: its flags (exit 2),
 * D11_FAULTS (exit 2: the children would refuse it), the data-directory lock DATA/d11.lock
 * (exit 1 naming the holder's pid: two platforms on one directory corrupt each other), the
 * HTTP address (exit 1 naming it: a taken port would restart the gateway forever).
 *
 * Each child gets exactly the settings it reads (d11_config_key_used), so a child never
 * refuses a flag of another part. SIGINT/SIGTERM stop everything gracefully, in
 * dependency order: the gateway first (it stops accepting and answers what is in flight),
 * then the cells (they commit their open batches), then the center. Each gets a bounded
 * time before SIGKILL; once a child is reaped its pid file and its socket are removed (we
 * hold the directory lock, so they are ours). Every line on stderr is one JSON log object,
 * except usage errors (exit 2), which come before logging starts.
 *
 * While serving, up runs on one d11_loop (core/loop.h): SIGINT, SIGTERM and SIGCHLD are
 * blocked and read from a signalfd d11_io; each child has a one-shot restart d11_timer
 * (its backoff) and one periodic timer retries pid files that could not be written.
 * Startup (waiting for each socket) and the ordered stop are bounded synchronous waits
 * outside the loop. Single-threaded.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/datadir.h"
#include "../core/fault.h"
#include "../core/limits.h"
#include "../core/loop.h"
#include "../core/util.h"
#include "../gateway/auth.h"
#include "../rpc/conn.h"

#define UP_CHILDREN_MAX (D11_CELLS_MAX + 2)
#define UP_BACKOFF_MIN_MS 100
#define UP_BACKOFF_MAX_MS 5000
#define UP_HEALTHY_MS 10000
#define UP_STOP_CELLS_MS 15000
#define UP_STOP_CENTER_MS 5000
#define UP_PID_RETRY_MS 500 /* how often a pid file that could not be written is retried */

#define UP_ARGS_MAX 24
#define UP_ARG_BYTES_MAX 1100 /* --data=DIR with the longest DIR config.c accepts */

typedef struct child {
    char    name[32];
    char    sock[32]; /* its Unix socket in DATA ("" for the gateway) */
    char   *argv[UP_ARGS_MAX + 1];
    int     argc;
    pid_t   pid;
    int64_t started_ms, backoff_ms;
    int     restarts;
    bool    pid_stale;   /* its pid file could not be written: retried from the loop */
    d11_timer restart;   /* armed while the child is down, for its backoff */
} child;

static struct {
    d11_config cfg;
    child      kids[UP_CHILDREN_MAX];
    int        nkids;
    char       self[4096];
    char       argstore[UP_CHILDREN_MAX][UP_ARGS_MAX][UP_ARG_BYTES_MAX];
    d11_loop   loop;      /* the supervising loop (serving phase only) */
    d11_io     sig_io;    /* signalfd: SIGINT, SIGTERM, SIGCHLD */
    d11_timer  pid_retry; /* periodic: rewrite stale pid files */
} U;

static void add_arg(child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_arg(child *c, const char *fmt, ...)
{
    int k = (int)(c - U.kids);
    D11_ASSERT(c->argc < UP_ARGS_MAX);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(U.argstore[k][c->argc], sizeof U.argstore[k][c->argc], fmt, ap);
    va_end(ap);
    D11_ASSERT(n >= 0 && (size_t)n < sizeof U.argstore[k][c->argc]); /* config.c bounds every value */
    c->argv[c->argc] = U.argstore[k][c->argc];
    c->argc++;
    c->argv[c->argc] = NULL;
}

/* A child running `d11 SUB` with every setting of ours that SUB reads (and nothing else:
 * the child refuses flags it does not use). */
static child *new_child(const char *name, const char *sub, const char *sock)
{
    D11_ASSERT(U.nkids < UP_CHILDREN_MAX);
    child *c = &U.kids[U.nkids++];
    memset(c, 0, sizeof *c);
    snprintf(c->name, sizeof c->name, "%s", name);
    snprintf(c->sock, sizeof c->sock, "%s", sock);
    c->backoff_ms = UP_BACKOFF_MIN_MS;
    add_arg(c, "d11");
    add_arg(c, "%s", sub);
    const char *key;
    for (size_t i = 0; (key = d11_config_key(i)) != NULL; i++) {
        if (!d11_config_key_used("up", key) || !d11_config_key_used(sub, key)) continue;
        char val[UP_ARG_BYTES_MAX - 64];
        int rc = d11_config_value(&U.cfg, key, val, sizeof val);
        D11_ASSERT(rc == 0);
        add_arg(c, "--%s=%s", key, val);
    }
    return c;
}

/* A reaped child leaves no pid file naming a dead process and no socket nobody serves. */
static void child_gone(child *c)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/pids/%s.pid", U.cfg.data_dir, c->name);
    if (unlink(path) == -1 && errno != ENOENT) d11_warn("cannot remove %s: %s", path, strerror(errno));
    if (c->sock[0]) {
        snprintf(path, sizeof path, "%s/%s", U.cfg.data_dir, c->sock);
        if (unlink(path) == -1 && errno != ENOENT) d11_warn("cannot remove %s: %s", path, strerror(errno));
    }
}

/* Returns 0, or <0 when the file could not be written — then a stale file naming a dead
 * process is removed, so a pid file never lies (the caller retries later). */
static int write_pid(const char *name, pid_t pid)
{
    char path[1200], buf[32];
    snprintf(path, sizeof path, "%s/pids/%s.pid", U.cfg.data_dir, name);
    int n = snprintf(buf, sizeof buf, "%d\n", (int)pid);
    int rc = d11_write_file_atomic(path, buf, (size_t)n, 0644);
    if (rc < 0) {
        d11_warn("cannot write %s: %s (will retry)", path, d11_strerror(rc));
        unlink(path);
    }
    return rc;
}

/* CPU priority of a child (docs/protection.md, "CPU priority"): the gateway runs at
 * --gateway-nice, everything else at up's own. Set between fork and exec, so every thread
 * the child makes inherits it. */
static int child_nice(const child *c)
{
    return strcmp(c->name, "gateway") == 0 ? (int)U.cfg.gateway_nice : 0;
}

static int spawn(child *c)
{
    int nice_add = child_nice(c);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) return -errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1); /* the supervisor died between fork and prctl */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char rs[16];
        snprintf(rs, sizeof rs, "%d", c->restarts);
        setenv("D11_RESTARTS", rs, 1); /* shown as d11_process_restarts_total (core/promtext.h) */
        if (nice_add) {
            errno = 0;
            if (nice(nice_add) == -1 && errno) d11_warn("nice(%d) for %s: %s", nice_add, c->name, strerror(errno));
        }
        execv(U.self, c->argv);
        d11_error("exec %s failed: %s", U.self, strerror(errno));
        _exit(127);
    }
    c->pid = pid;
    c->started_ms = d11_mono_ms();
    c->pid_stale = write_pid(c->name, pid) < 0;
    if (nice_add) d11_info("started %s (pid %d, nice +%d)", c->name, (int)pid, nice_add);
    else d11_info("started %s (pid %d)", c->name, (int)pid);
    return 0;
}

/* Wait until a Unix socket accepts connections (the child is serving). */
static bool wait_socket(const char *name, int64_t timeout_ms, child *c)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", U.cfg.data_dir, name);
    int64_t end = d11_mono_ms() + timeout_ms;
    while (d11_mono_ms() < end) {
        int fd = d11_connect_unix(path);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        int st;
        if (c && waitpid(c->pid, &st, WNOHANG) == c->pid) {
            c->pid = 0;
            return false;
        }
        usleep(20000); /* startup polling, not a race fix: bounded by timeout_ms */
    }
    return false;
}

static child *find_child(pid_t pid)
{
    for (int i = 0; i < U.nkids; i++)
        if (U.kids[i].pid == pid) return &U.kids[i];
    return NULL;
}

/* Send sig to children [from, to) and wait for them up to timeout_ms, then SIGKILL. */
static void stop_range(int from, int to, int64_t timeout_ms)
{
    for (int i = from; i < to; i++)
        if (U.kids[i].pid == 0) child_gone(&U.kids[i]); /* down (crashed, awaiting restart) */
    for (int i = from; i < to; i++)
        if (U.kids[i].pid > 0) kill(U.kids[i].pid, SIGTERM);
    int64_t end = d11_mono_ms() + timeout_ms;
    for (;;) {
        bool alive = false;
        for (int i = from; i < to; i++) {
            if (U.kids[i].pid <= 0) continue;
            int st;
            pid_t r = waitpid(U.kids[i].pid, &st, WNOHANG);
            if (r == U.kids[i].pid || (r == -1 && errno == ECHILD)) {
                d11_info("%s stopped", U.kids[i].name);
                U.kids[i].pid = 0;
                child_gone(&U.kids[i]);
            } else {
                alive = true;
            }
        }
        if (!alive) return;
        if (d11_mono_ms() >= end) {
            for (int i = from; i < to; i++)
                if (U.kids[i].pid > 0) {
                    d11_warn("%s did not stop in time; killing it", U.kids[i].name);
                    kill(U.kids[i].pid, SIGKILL);
                    waitpid(U.kids[i].pid, NULL, 0);
                    U.kids[i].pid = 0;
                    child_gone(&U.kids[i]);
                }
            return;
        }
        usleep(10000); /* shutdown polling, bounded by timeout_ms */
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 up [--data DIR] [--listen HOST:PORT] [--cells N] [flags]\n\n"
               "Runs the whole platform on this machine in the foreground: the center, N cells\n"
               "and the gateway as child processes. Restarts a crashed child; SIGINT/SIGTERM stop\n"
               "everything gracefully (in-flight requests answered, open batches committed).\n\n");
    d11_config_usage(f, "up");
    fprintf(f, "\nFiles: DIR/center.db, DIR/cell-N.db (SQLite), DIR/admin.token (mode 0600, created on\n"
               "first start), DIR/tokens, DIR/pids/*.pid, DIR/d11.lock (one platform per directory),\n"
               "DIR/d11.conf (optional settings, key = value).\n");
}

/* 0 when nobody listens on HOST:PORT now (we bind it, without SO_REUSEPORT so that even a
 * SO_REUSEPORT listener counts as taken, and let go), else -errno. */
static int listen_free(const char *hostport)
{
    int fd = d11_listen_tcp(hostport, false);
    if (fd < 0) return fd;
    close(fd);
    return 0;
}

/* Start every child in dependency order, each waiting for the previous to serve. 0, or -1
 * (logged) with every child stopped. */
static int start_all(void)
{
    child *center = &U.kids[0], *gw = &U.kids[U.nkids - 1];
    if (spawn(center) < 0 || !wait_socket(center->sock, 15000, center)) {
        d11_error("the center did not start (see its log above)");
        stop_range(0, U.nkids, 2000);
        return -1;
    }
    for (int i = 1; i <= U.cfg.cells; i++) {
        if (spawn(&U.kids[i]) < 0 || !wait_socket(U.kids[i].sock, 30000, &U.kids[i])) {
            d11_error("%s did not start (see its log above)", U.kids[i].name);
            stop_range(0, U.nkids, 5000);
            return -1;
        }
    }
    if (spawn(gw) < 0) {
        d11_error("cannot start the gateway: %s", strerror(errno));
        stop_range(0, U.nkids, 5000);
        return -1;
    }
    return 0;
}

/* A down child's backoff has passed: start it again (unless we are stopping). */
static void on_restart(d11_loop *l, d11_timer *t)
{
    child *c = t->data;
    D11_ASSERT(c->pid == 0);
    if (d11_loop_stopping(l)) return;
    c->restarts++;
    if (spawn(c) < 0) {
        d11_warn("cannot restart %s: %s; retrying in %lld ms", c->name, strerror(errno), (long long)c->backoff_ms);
        d11_timer_start(l, t, c->backoff_ms, 0, on_restart, c);
    }
}

/* Reap every exited child and arm its restart after its backoff (doubling to
 * UP_BACKOFF_MAX_MS; back to UP_BACKOFF_MIN_MS after UP_HEALTHY_MS of good health). */
static void reap(d11_loop *l)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        child *c = find_child(pid);
        if (!c) continue;
        int64_t now = d11_mono_ms();
        if (now - c->started_ms >= UP_HEALTHY_MS) c->backoff_ms = UP_BACKOFF_MIN_MS;
        if (WIFEXITED(st))
            d11_warn("%s (pid %d) exited with status %d; restarting in %lld ms", c->name, (int)pid,
                     WEXITSTATUS(st), (long long)c->backoff_ms);
        else
            d11_warn("%s (pid %d) killed by signal %d; restarting in %lld ms", c->name, (int)pid, WTERMSIG(st),
                     (long long)c->backoff_ms);
        c->pid = 0;
        d11_timer_start(l, &c->restart, c->backoff_ms, 0, on_restart, c);
        c->backoff_ms = c->backoff_ms * 2 > UP_BACKOFF_MAX_MS ? UP_BACKOFF_MAX_MS : c->backoff_ms * 2;
    }
}

/* The signalfd is readable: SIGINT/SIGTERM stop the loop, SIGCHLD reaps. Signals of one
 * kind coalesce, so reaping always drains every exited child. */
static void on_signal(d11_loop *l, d11_io *io, uint32_t events)
{
    (void)events;
    struct signalfd_siginfo si[8];
    for (;;) {
        ssize_t n = read(io->fd, si, sizeof si);
        if (n == -1 && errno == EINTR) continue;
        if (n == -1 && errno == EAGAIN) break;
        if (n <= 0) d11_fatal("read(signalfd): %s", n == 0 ? "end of file" : strerror(errno));
        D11_ASSERT((size_t)n % sizeof si[0] == 0);
        for (size_t i = 0; i < (size_t)n / sizeof si[0]; i++) {
            int sig = (int)si[i].ssi_signo;
            if ((sig == SIGINT || sig == SIGTERM) && !d11_loop_stopping(l)) {
                d11_info("stopping (signal %d)", sig);
                d11_loop_stop(l);
            }
        }
    }
    reap(l);
}

static void on_pid_retry(d11_loop *l, d11_timer *t)
{
    (void)l;
    (void)t;
    for (int i = 0; i < U.nkids; i++) {
        child *c = &U.kids[i];
        if (c->pid > 0 && c->pid_stale) c->pid_stale = write_pid(c->name, c->pid) < 0;
    }
}

/* Reap and restart children until SIGINT/SIGTERM. set: the blocked signals to take from a
 * signalfd. Returns 0, or -errno when the loop could not be set up (then the caller stops
 * the children). */
static int supervise(const sigset_t *set)
{
    int rc = d11_loop_init(&U.loop);
    if (rc < 0) return rc;
    int sfd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd == -1) {
        rc = -errno;
        d11_loop_release(&U.loop);
        return rc;
    }
    rc = d11_io_start(&U.loop, &U.sig_io, sfd, D11_IO_READ, on_signal, NULL);
    if (rc < 0) {
        close(sfd);
        d11_loop_release(&U.loop);
        return rc;
    }
    d11_timer_start(&U.loop, &U.pid_retry, UP_PID_RETRY_MS, UP_PID_RETRY_MS, on_pid_retry, NULL);
    reap(&U.loop); /* a child that exited before the loop existed */
    d11_loop_run(&U.loop);
    for (int i = 0; i < U.nkids; i++) d11_timer_stop(&U.loop, &U.kids[i].restart);
    d11_timer_stop(&U.loop, &U.pid_retry);
    d11_io_stop(&U.loop, &U.sig_io);
    close(sfd);
    d11_loop_release(&U.loop);
    return 0;
}

int d11_up_main(int argc, char **argv)
{
    char err[512];
    d11_config_defaults(&U.cfg);
    if (d11_config_from_args(&U.cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 up: %s\n", err);
        return 2;
    }
    if (U.cfg.help) {
        usage(stdout);
        return 0;
    }
    /* Every child arms D11_FAULTS: a bad spec is a usage error, found before anything is
     * created rather than as a child that "did not start". */
    if (d11_fault_check_env(err, sizeof err) < 0) {
        fprintf(stderr, "d11 up: %s\n", err);
        return 2;
    }
    d11_log_init("up", U.cfg.log_level);
    ssize_t n = readlink("/proc/self/exe", U.self, sizeof U.self - 1);
    if (n <= 0) {
        d11_error("cannot find my own executable: %s", strerror(errno));
        return 1;
    }
    U.self[n] = 0;
    int lock_fd = d11_datadir_lock(U.cfg.data_dir, "d11", err, sizeof err);
    if (lock_fd < 0) {
        d11_error("%s", err);
        return 1;
    }
    int exit_code = 1;
    char path[1200];
    int rc = listen_free(U.cfg.listen);
    if (rc < 0) {
        d11_error("cannot listen on %s: %s", U.cfg.listen, d11_strerror(rc));
        goto out_unlock;
    }
    snprintf(path, sizeof path, "%s/pids", U.cfg.data_dir);
    if (mkdir(path, 0755) == -1 && errno != EEXIST) {
        d11_error("cannot create %s: %s", path, strerror(errno));
        goto out_unlock;
    }
    rc = d11_auth_bootstrap(U.cfg.data_dir, path, sizeof path);
    if (rc < 0) {
        d11_error("cannot create the admin token: %s", d11_strerror(rc));
        goto out_unlock;
    }
    if (rc == 1) d11_info("admin token written to %s (mode 0600)", path);

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    write_pid("up", getpid());

    new_child("center", "center", "center.sock");
    for (int i = 0; i < U.cfg.cells; i++) {
        char name[32], sock[32];
        snprintf(name, sizeof name, "cell-%d", i);
        snprintf(sock, sizeof sock, "cell-%d.sock", i);
        add_arg(new_child(name, "cell", sock), "--id=%d", i);
    }
    new_child("gateway", "gateway", "");

    if (start_all() == 0) {
        d11_info("serving on http://%s with %d cells (data %s, durability %s)", U.cfg.listen, U.cfg.cells,
                 U.cfg.data_dir, d11_durability_name(U.cfg.durability));
        rc = supervise(&set);
        if (rc < 0) d11_error("cannot supervise: %s", d11_strerror(rc));
        stop_range(U.nkids - 1, U.nkids, U.cfg.request_timeout_ms + 3000); /* gateway */
        stop_range(1, U.nkids - 1, UP_STOP_CELLS_MS);                      /* cells */
        stop_range(0, 1, UP_STOP_CENTER_MS);                               /* center */
        exit_code = rc < 0 ? 1 : 0;
    }
    snprintf(path, sizeof path, "%s/pids/up.pid", U.cfg.data_dir);
    unlink(path);
    if (exit_code == 0) d11_info("stopped");
out_unlock:
    d11_datadir_unlock(lock_fd);
    return exit_code;
}
