/*
 * test_center_main.c — the `d11 center` process (src/center/center.c) around the
 * machine: started as a real process on a fresh data directory, spoken to over its Unix
 * socket with real frames, stopped with SIGTERM.
 *
 * What is checked: the center answers PING and ROUTING_GET (the event loop, the link table
 * and the commit-then-send hooks work end to end); a product created over the socket is
 * in center.db after the stop; a clean stop exits 0 and removes DATA/center.sock (issue 7,
 * defect 8: it used to be left behind); a restart with another cell count exits 1.
 *
 * Needs the binary: $D11_BIN (tests/run.sh sets it), else bin/d11; exit 77 (skipped)
 * when there is none. Files go to $TMPDIR. No sleeps decide an outcome: waits poll for a
 * condition with a deadline.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "rpc/conn.h"
#include "rpc/wire.h"

#include "check.h"

static const char *bin;
static char dir[512], sock[600];

static pid_t start_center(int cells)
{
    char ncells[16];
    snprintf(ncells, sizeof ncells, "%d", cells);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) dup2(fd, 2); /* its log lines are not the test's output */
        execl(bin, bin, "center", "--data", dir, "--cells", ncells, "--log-level", "error", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Wait for pid to exit within ms; its status, or -1 on timeout. */
static int wait_exit(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 5; i++) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int connect_retry(int ms)
{
    for (int i = 0; i < ms / 5; i++) {
        int fd = d11_connect_unix(sock);
        if (fd >= 0) return fd;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

/* Send one request, read its reply frame into *f (payload in c->in). 0 or -1. */
static int call(d11_conn *c, uint16_t type, const d11_buf *payload, d11_frame *f)
{
    static uint64_t req = 1;
    d11_frame_hdr h = {.type = type, .req_id = req++};
    size_t start = d11_frame_begin(&c->out, &h);
    if (payload) d11_buf_append(&c->out, payload->data, payload->len);
    d11_frame_end(&c->out, start);
    for (int i = 0; i < 400; i++) {
        int rc = d11_conn_flush(c);
        if (rc < 0) return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (rc == 1 ? POLLOUT : 0)};
        if (poll(&p, 1, 10) < 0) return -1;
        if (p.revents & POLLIN) {
            rc = d11_conn_read(c);
            int fr = d11_conn_frame(c, f);
            if (fr == 1) return f->hdr.req_id == h.req_id && (f->hdr.flags & D11_WF_REPLY) ? 0 : -1;
            if (fr < 0 || rc < 0) return -1;
        }
    }
    return -1;
}

int main(void)
{
    bin = getenv("D11_BIN");
    if (!bin || !*bin) bin = "bin/d11";
    if (access(bin, X_OK) != 0) {
        printf("skipped: no %s\n", bin);
        return 77;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/center-main-%d", tmp && *tmp ? tmp : "/tmp", (int)getpid());
    snprintf(sock, sizeof sock, "%s/center.sock", dir);
    mkdir(dir, 0700);

    pid_t pid = start_center(2);
    int fd = connect_retry(10000);
    CHECK(fd >= 0);
    if (fd < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        printf("%d passed, %d failed\n", n_pass, n_fail);
        return 1;
    }
    d11_conn c;
    d11_conn_init(&c, fd);
    d11_frame f;
    d11_str code, body;
    CHECK_RC(call(&c, D11_MSG_PING, NULL, &f), 0);
    CHECK(f.hdr.status == 200 && d11_msg_reply_dec(f.payload, f.payload_len, &code, &body) == 0 && body.n == 6 &&
          memcmp(body.p, "center", 6) == 0);
    d11_conn_compact(&c);
    CHECK_RC(call(&c, D11_MSG_ROUTING_GET, NULL, &f), 0);
    d11_routing r;
    CHECK(f.hdr.status == 200 && d11_routing_dec(f.payload, f.payload_len, &r) == 0 && r.ncells == 2);
    d11_conn_compact(&c);
    d11_buf pl;
    d11_buf_init(&pl, 128);
    d11_msg_product_enc(&pl, &(d11_msg_product){.sku = {"MAIN-1", 6}, .title = {"t", 1}, .price_cents = 9,
                                                .stock = 5, .category = {"c", 1}});
    CHECK_RC(call(&c, D11_MSG_PRODUCT_CREATE, &pl, &f), 0);
    CHECK_EQ(f.hdr.status, 201);
    d11_conn_compact(&c);
    d11_conn_release(&c);
    d11_buf_free(&pl);

    /* Clean stop: exit 0, no socket left behind, the product stored. */
    CHECK_RC(kill(pid, SIGTERM), 0);
    CHECK_EQ(wait_exit(pid, 10000), 0);
    struct stat stt;
    CHECKF(lstat(sock, &stt) == -1 && errno == ENOENT, "%s still exists after a clean stop", sock);
    char db[700];
    snprintf(db, sizeof db, "%s/center.db", dir);
    CHECK(stat(db, &stt) == 0 && stt.st_size > 0);

    /* The data directory keeps its cell count. */
    pid = start_center(3);
    CHECK_EQ(wait_exit(pid, 10000), 1);

    /* Restart with the right count: the product is there. */
    pid = start_center(2);
    fd = connect_retry(10000);
    CHECK(fd >= 0);
    if (fd >= 0) {
        d11_conn_init(&c, fd);
        d11_buf_init(&pl, 64);
        d11_msg_sku_qty_enc(&pl, &(d11_msg_sku_qty){.sku = {"MAIN-1", 6}}, false);
        CHECK_RC(call(&c, D11_MSG_PRODUCT_GET, &pl, &f), 0);
        CHECK(f.hdr.status == 200 && d11_msg_reply_dec(f.payload, f.payload_len, &code, &body) == 0 &&
              memmem(body.p, body.n, "\"stock_total\":5", 15) != NULL);
        d11_conn_release(&c);
        d11_buf_free(&pl);
    }
    kill(pid, SIGTERM);
    CHECK_EQ(wait_exit(pid, 10000), 0);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
