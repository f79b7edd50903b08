/*
 * engine.c — `d11 bench-engine`: how fast is one cell without HTTP?
 *
 * Starts its own center and ONE cell (this binary, in a fresh temporary data directory,
 * the cell pinned to CPU 0 and this driver to CPU 1 when the machine has two), creates
 * the products through the center's socket, then drives the cell over the wire protocol
 * with `--depth` ORDER_CREATE frames in flight on one connection (deep pipelining) for
 * `--orders` orders. Users are chosen so they all map to the cell; each order has a
 * unique idempotency key. It reports durable orders/s (every reply counted came after
 * its batch committed with the chosen durability) and stops what it started, by PID.
 *
 * This isolates the engine — idempotency map, allotment, batching, SQLite commit —
 * from HTTP parsing and routing, to show how far the core is from its limit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/util.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "../core/clock.h"

static pid_t start_child(const char *self, char **argv, int cpu)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (cpu >= 0) {
            cpu_set_t set;
            CPU_ZERO(&set);
            CPU_SET(cpu, &set);
            sched_setaffinity(0, sizeof set, &set);
        }
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execv(self, argv);
        _exit(127);
    }
    return pid;
}

static int wait_sock(const char *path)
{
    for (int i = 0; i < 500; i++) { /* bounded: 10 s */
        int fd = d11_connect_unix(path);
        if (fd >= 0) return fd;
        usleep(20000);
    }
    return -1;
}

/* Send one frame on a blocking-ish conn and wait for its reply (setup only). */
static int call(d11_conn *c, const d11_buf *frame, uint32_t *status)
{
    d11_buf_append(&c->out, frame->data, frame->len);
    while (d11_conn_flush(c) == 1) usleep(100);
    for (int i = 0; i < 100000; i++) {
        d11_frame f;
        int rc = d11_conn_frame(c, &f);
        if (rc == 1) {
            *status = f.hdr.status;
            d11_conn_compact(c);
            return 0;
        }
        if (rc < 0) return rc;
        rc = d11_conn_read(c);
        if (rc < 0) return rc;
        usleep(100);
    }
    return -ETIMEDOUT;
}

int d11_bench_engine_main(int argc, char **argv)
{
    uint64_t orders = 200000, depth = 4096, skus = 1;
    const char *durability = "sync";
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: d11 bench-engine [--orders N] [--depth N] [--skus N] [--durability sync|async|none]\n\n"
                   "Starts a private center + ONE cell (cell on CPU 0, driver on CPU 1), then sends N\n"
                   "orders over the wire protocol with DEPTH in flight and prints durable orders/s.\n"
                   "Defaults: --orders 200000 --depth 4096 --skus 1 (one hot SKU) --durability sync.\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "d11 bench-engine: %s needs a value\n", a);
            return 2;
        }
        uint64_t *dst = !strcmp(a, "--orders") ? &orders : !strcmp(a, "--depth") ? &depth : !strcmp(a, "--skus") ? &skus : NULL;
        if (dst) {
            if (d11_parse_u64(v, strlen(v), 100000000, dst) < 0 || *dst == 0) {
                fprintf(stderr, "d11 bench-engine: %s: expected a positive integer\n", a);
                return 2;
            }
        } else if (!strcmp(a, "--durability") && (!strcmp(v, "sync") || !strcmp(v, "async") || !strcmp(v, "none"))) {
            durability = v;
        } else {
            fprintf(stderr, "d11 bench-engine: unknown flag or value: %s %s\n", a, v);
            return 2;
        }
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    char dir[] = "/tmp/d11-engine-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "d11 bench-engine: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    char data[64], dur[64], chunk[64];
    snprintf(data, sizeof data, "--data=%s", dir);
    snprintf(dur, sizeof dur, "--durability=%s", durability);
    snprintf(chunk, sizeof chunk, "--grant-chunk-max=%llu", (unsigned long long)(orders + 1));
    char *cargv[] = {"d11", "center", data, "--cells=1", dur, chunk, "--log-level=warn", NULL};
    char *largv[] = {"d11", "cell", data, "--id=0", dur, "--log-level=warn", NULL};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pid_t center = start_child(self, cargv, ncpu >= 2 ? 1 : -1);
    char path[256];
    snprintf(path, sizeof path, "%s/center.sock", dir);
    int cfd = wait_sock(path);
    pid_t cell = start_child(self, largv, ncpu >= 2 ? 0 : -1);
    snprintf(path, sizeof path, "%s/cell-0.sock", dir);
    int lfd = wait_sock(path);
    int rc = 1;
    if (cfd < 0 || lfd < 0) {
        fprintf(stderr, "d11 bench-engine: center or cell did not start\n");
        goto out;
    }
    if (ncpu >= 2) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(1, &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    d11_conn cc, lc;
    d11_conn_init(&cc, cfd);
    d11_conn_init(&lc, lfd);
    d11_buf fb;
    d11_buf_init(&fb, 1 << 16);
    for (uint64_t s = 0; s < skus; s++) {
        char sku[32];
        int sn = snprintf(sku, sizeof sku, "ENG-%llu", (unsigned long long)s);
        d11_buf_reset(&fb);
        d11_frame_hdr h = {.type = D11_MSG_PRODUCT_CREATE, .req_id = s + 1};
        size_t st = d11_frame_begin(&fb, &h);
        d11_msg_product m = {.sku = {sku, (size_t)sn}, .title = {"engine", 6}, .price_cents = 100,
                             .stock = orders + 1, .category = {"bench", 5}};
        d11_msg_product_enc(&fb, &m);
        d11_frame_end(&fb, st);
        uint32_t status;
        if (call(&cc, &fb, &status) < 0 || status != 201) {
            fprintf(stderr, "d11 bench-engine: product setup failed\n");
            goto out;
        }
    }
    /* Warm-up: one order per SKU so the allotment is in place before timing. */
    uint64_t sent = 0, done = 0, ok = 0, warm = skus;
    int64_t t0 = 0;
    uint64_t total = orders + warm;
    while (done < total) {
        while (sent < total && sent - done < (sent < warm ? 1 : depth) && lc.out.len - lc.out_off < (4u << 20)) {
            char key[32];
            int kn = snprintf(key, sizeof key, "e%llu", (unsigned long long)sent);
            char sku[32];
            int sn = snprintf(sku, sizeof sku, "ENG-%llu", (unsigned long long)(sent % skus));
            d11_frame_hdr h = {.type = D11_MSG_ORDER_CREATE, .req_id = sent, .deadline_ms = d11_deadline_from_budget(d11_wall_ms(), 60000)};
            size_t st = d11_frame_begin(&lc.out, &h);
            d11_msg_order_create m = {.user_id = 1 + (sent % 1000000) * 1024, .idem_key = {key, (size_t)kn}, .nitems = 1};
            m.items[0].sku.p = sku;
            m.items[0].sku.n = (size_t)sn;
            m.items[0].qty = 1;
            d11_msg_order_create_enc(&lc.out, &m);
            d11_frame_end(&lc.out, st);
            sent++;
        }
        if (d11_conn_flush(&lc) < 0) {
            fprintf(stderr, "d11 bench-engine: cell connection lost\n");
            goto out;
        }
        int r = d11_conn_read(&lc);
        d11_frame f;
        uint64_t before = done;
        while (d11_conn_frame(&lc, &f) == 1) {
            done++;
            if (f.hdr.status == 201) ok++;
            if (done == warm) t0 = d11_mono_us();
        }
        d11_conn_compact(&lc);
        if (r < 0) {
            fprintf(stderr, "d11 bench-engine: cell connection lost\n");
            goto out;
        }
        if (done < total && done == before) { /* nothing new: wait for the cell */
            struct pollfd pfd = {.fd = lc.fd, .events = POLLIN | (d11_conn_pending(&lc) ? POLLOUT : 0)};
            (void)poll(&pfd, 1, 100);
        }
    }
    int64_t us = d11_mono_us() - t0;
    printf("{\"orders\":%llu,\"ok\":%llu,\"depth\":%llu,\"skus\":%llu,\"durability\":\"%s\",\"seconds\":%.3f,"
           "\"orders_per_sec\":%.0f}\n",
           (unsigned long long)orders, (unsigned long long)(ok - warm), (unsigned long long)depth,
           (unsigned long long)skus, durability, us / 1e6, orders / (us / 1e6));
    rc = ok == total ? 0 : 1;
    if (rc) fprintf(stderr, "d11 bench-engine: %llu of %llu orders were not placed\n", (unsigned long long)(total - ok), (unsigned long long)total);
out:
    if (cell > 0) kill(cell, SIGTERM), waitpid(cell, NULL, 0);
    if (center > 0) kill(center, SIGTERM), waitpid(center, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "d11 bench-engine: could not remove %s\n", dir);
    return rc;
}
