/*
 * test_link.c — unit test of src/rpc/link.{h,c}, the connection table, over socketpairs
 * and a unix listener on one d11_loop.
 *
 * What is checked:
 *   - frames cross in order and intact when the sender's socket buffer is tiny and the
 *     frames are big (many partial writes, WRITE armed then disarmed);
 *   - a full table refuses (NULL, fd closed, n_refused_full), also from the listener, whose
 *     accepted links get on_open;
 *   - (idx, gen): a closed link is no longer found, a reused slot has a new gen;
 *   - on_close runs once per link with the reason: peer EOF after the last frames were
 *     delivered, a bad stream (D11_EPROTO), a write error (-EPIPE, without SIGPIPE), unsent
 *     bytes over D11_RPC_OUT_BYTES_MAX (D11_ETOOBIG), d11_link_close's why, release (0);
 *   - closing inside on_frame stops delivery at once (also when the slot is reused there);
 *   - the flush touches only dirty links (n_flushed), each once however much was queued,
 *     and a link closed while dirty leaves the dirty list;
 *   - EPOLL_CTL_MOD only when WRITE interest changes (loop n_ctl_mod);
 *   - output queued outside an iteration is flushed without waiting out epoll_wait.
 * Output: failed checks, then "N passed, N failed"; exit 1 on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/loop.h"
#include "rpc/link.h"

#include "check.h"

/* ---- recording callbacks ---- */

typedef struct got {
    uint32_t idx;
    uint64_t req_id;
    size_t   len;
    bool     intact;
} got;

typedef struct rec {
    got      f[256];
    int      nf;
    int      why[64];
    uint32_t why_idx[64];
    int      nclose, nopen;
    int      close_at;   /* on_frame closes the link when nf reaches this (0 = never) */
    int      reopen_fd;  /* ... and adds this fd (reusing the slot) when >= 0 */
} rec;

static uint8_t pattern(uint64_t req_id, size_t i) { return (uint8_t)(req_id * 31 + i * 7); }

static void on_frame(d11_links *t, d11_link *k, const d11_frame *f)
{
    rec *r = t->data;
    bool ok = true;
    for (size_t i = 0; i < f->payload_len; i++)
        if (f->payload[i] != pattern(f->hdr.req_id, i)) {
            ok = false;
            break;
        }
    if (r->nf < 256) r->f[r->nf++] = (got){k->idx, f->hdr.req_id, f->payload_len, ok};
    if (r->close_at && r->nf == r->close_at) {
        d11_link_close(k, 77);
        if (r->reopen_fd >= 0) {
            d11_link *n = d11_links_add(t, r->reopen_fd);
            CHECK(n == k); /* LIFO: the same slot, a new gen */
            r->reopen_fd = -1;
        }
    }
}

static void on_close(d11_links *t, d11_link *k, int why)
{
    rec *r = t->data;
    CHECK(!k->open);
    if (r->nclose < 64) {
        r->why_idx[r->nclose] = k->idx;
        r->why[r->nclose++] = why;
    }
}

static void on_open(d11_links *t, d11_link *k)
{
    (void)k;
    ((rec *)t->data)->nopen++;
}

/* Encode one frame of `plen` payload bytes into b. */
static void frame(d11_buf *b, uint64_t req_id, size_t plen)
{
    d11_frame_hdr h = {.version = D11_WIRE_VERSION, .type = D11_MSG_PING, .req_id = req_id};
    size_t st = d11_frame_begin(b, &h);
    d11_buf_reserve(b, plen);
    for (size_t i = 0; i < plen; i++) b->data[b->len + i] = (char)pattern(req_id, i);
    b->len += plen;
    d11_frame_end(b, st);
}

static void pair(int sv[2])
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
}

static bool fd_is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

/* Read and discard everything fd has. */
static size_t drain(int fd)
{
    char buf[65536];
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd, buf, sizeof buf)) > 0) n += (size_t)r;
    return n;
}

/* ---- tests ---- */

static void test_order_partial_writes(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    rec rs = {0}, rr = {0};
    d11_links snd, rcv;
    CHECK_RC(d11_links_init(&snd, &l, 2, on_frame, on_close, &rs), 0);
    CHECK_RC(d11_links_init(&rcv, &l, 2, on_frame, on_close, &rr), 0);
    CHECK_RC(d11_loop_before_sleep(&l, d11_links_flush_hook, &snd), 0);
    CHECK_RC(d11_loop_before_sleep(&l, d11_links_flush_hook, &rcv), 0);
    int sv[2];
    pair(sv);
    int small = 4096;
    CHECK(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    CHECK(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0);
    d11_link *a = d11_links_add(&snd, sv[0]);
    d11_link *b = d11_links_add(&rcv, sv[1]);
    CHECK(a && b);
    enum { N = 12 };
    size_t sizes[N];
    d11_buf tmp;
    d11_buf_init(&tmp, 0);
    for (int i = 0; i < N; i++) {
        sizes[i] = (i % 3 == 0) ? 0 : (size_t)(200000 + i * 37777) % (D11_FRAME_BYTES_MAX - 64);
        tmp.len = 0;
        frame(&tmp, 100 + (uint64_t)i, sizes[i]);
        if (i % 2) d11_link_send(a, tmp.data, tmp.len);
        else d11_buf_append(d11_link_out(a), tmp.data, tmp.len);
    }
    d11_buf_free(&tmp);
    uint64_t mods = l.n_ctl_mod;
    int64_t end = d11_mono_ms() + 10000;
    bool armed = false;
    while (rr.nf < N && d11_mono_ms() < end) {
        CHECK(d11_loop_run_once(&l, 100) >= 0);
        armed |= (a->io.want & D11_IO_WRITE) != 0;
    }
    CHECK_EQ(rr.nf, N);
    for (int i = 0; i < rr.nf; i++) {
        CHECKF(rr.f[i].req_id == 100 + (uint64_t)i, "frame %d is req %llu", i, (unsigned long long)rr.f[i].req_id);
        CHECK_EQ(rr.f[i].len, sizes[i]);
        CHECK(rr.f[i].intact);
    }
    CHECK(armed);                         /* partial writes armed WRITE ... */
    CHECK(!(a->io.want & D11_IO_WRITE));  /* ... and the drained link disarmed it */
    CHECK(!a->c.want_write);
    CHECK_EQ(l.n_ctl_mod - mods, 2);      /* once each way, however many partial writes */
    CHECK(snd.n_flushed > 2);
    CHECK_EQ(rs.nclose + rr.nclose, 0);
    d11_links_release(&snd);
    d11_links_release(&rcv);
    CHECK_EQ(rs.nclose, 1);
    CHECK_RC(rs.why[0], 0);
    CHECK(!fd_is_open(sv[0]) && !fd_is_open(sv[1]));
    d11_loop_release(&l);
}

static void test_full_and_gen(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    rec r = {0};
    d11_links t;
    CHECK_RC(d11_links_init(&t, &l, 2, on_frame, on_close, &r), 0);
    int p[3][2];
    for (int i = 0; i < 3; i++) pair(p[i]);
    d11_link *a = d11_links_add(&t, p[0][0]);
    d11_link *b = d11_links_add(&t, p[1][0]);
    CHECK(a && b && a != b);
    CHECK_EQ(t.nopen, 2);
    CHECK(d11_links_add(&t, p[2][0]) == NULL);
    CHECK_EQ(t.n_refused_full, 1);
    CHECK(!fd_is_open(p[2][0]));
    CHECK(d11_links_get(&t, 0, 0) == NULL); /* a zeroed reference names nothing */
    uint32_t idx = a->idx, gen = a->gen;
    CHECK(d11_links_get(&t, idx, gen) == a);
    CHECK(d11_links_get(&t, 99, gen) == NULL);
    d11_link_close(a, 5);
    d11_link_close(a, 6); /* no-op */
    CHECK_EQ(r.nclose, 1);
    CHECK_RC(r.why[0], 5);
    CHECK(!fd_is_open(p[0][0]));
    CHECK(d11_links_get(&t, idx, gen) == NULL);
    d11_link *c = d11_links_add(&t, p[2][1]);
    CHECK(c == a); /* the freed slot, reused ... */
    CHECK(c->gen != gen); /* ... under a new name */
    CHECK(d11_links_get(&t, idx, gen) == NULL);
    CHECK(d11_links_get(&t, c->idx, c->gen) == c);
    CHECK(c->data == NULL && !c->dirty);
    d11_links_release(&t);
    CHECK_EQ(r.nclose, 3);
    close(p[0][1]);
    close(p[1][1]);
    d11_loop_release(&l);
}

static void test_close_inside_on_frame(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    /* reuse 0: close only; 1: the slot is reused inside on_frame; 2: the same, and the
     * peer's EOF came in the same read (it must not close the new link) */
    for (int reuse = 0; reuse < 3; reuse++) {
        rec r = {.close_at = 2, .reopen_fd = -1};
        d11_links t;
        CHECK_RC(d11_links_init(&t, &l, 1, on_frame, on_close, &r), 0);
        int sv[2], other[2];
        pair(sv);
        pair(other);
        if (reuse) r.reopen_fd = other[0];
        d11_link *k = d11_links_add(&t, sv[0]);
        CHECK(k != NULL);
        d11_buf b;
        d11_buf_init(&b, 0);
        for (int i = 0; i < 5; i++) frame(&b, 1 + (uint64_t)i, 10); /* one write: one read */
        CHECK(write(sv[1], b.data, b.len) == (ssize_t)b.len);
        if (reuse == 2) shutdown(sv[1], SHUT_WR);
        d11_buf_free(&b);
        CHECK_RC(d11_loop_run_once(&l, 1000), 1);
        CHECK_EQ(r.nf, 2); /* frames 3..5 were in the buffer, never delivered */
        CHECK_EQ(r.nclose, 1);
        CHECK_RC(r.why[0], 77);
        CHECK_EQ(t.nopen, reuse ? 1 : 0);
        if (reuse) CHECK(t.v[0].open && t.v[0].c.fd == other[0]);
        CHECK_RC(d11_loop_run_once(&l, 10), 0);
        CHECK_EQ(r.nf, 2);
        d11_links_release(&t);
        close(sv[1]);
        close(other[1]);
        if (!reuse) close(other[0]);
    }
    d11_loop_release(&l);
}

static void test_close_reasons(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    rec r = {0};
    d11_links t;
    CHECK_RC(d11_links_init(&t, &l, 4, on_frame, on_close, &r), 0);
    CHECK_RC(d11_loop_before_sleep(&l, d11_links_flush_hook, &t), 0);

    /* EOF after three frames: all three delivered, then D11_ECLOSED */
    int e[2];
    pair(e);
    d11_link *k = d11_links_add(&t, e[0]);
    d11_buf b;
    d11_buf_init(&b, 0);
    for (int i = 0; i < 3; i++) frame(&b, 7, 100);
    CHECK(write(e[1], b.data, b.len) == (ssize_t)b.len);
    close(e[1]);
    for (int i = 0; i < 5 && r.nclose == 0; i++) d11_loop_run_once(&l, 1000);
    CHECK_EQ(r.nf, 3);
    CHECK_EQ(r.nclose, 1);
    CHECK_RC(r.why[0], D11_ECLOSED);
    CHECK(!k->open);

    /* a bad stream (version 9) */
    int p[2];
    pair(p);
    k = d11_links_add(&t, p[0]);
    b.len = 0;
    frame(&b, 8, 0);
    b.data[4] = 9;
    CHECK(write(p[1], b.data, b.len) == (ssize_t)b.len);
    for (int i = 0; i < 5 && r.nclose == 1; i++) d11_loop_run_once(&l, 1000);
    CHECK_EQ(r.nclose, 2);
    CHECK_RC(r.why[1], D11_EPROTO);
    close(p[1]);

    /* a write to a closed peer: -EPIPE (no SIGPIPE: main() does not ignore it) */
    pair(p);
    k = d11_links_add(&t, p[0]);
    close(p[1]);
    b.len = 0;
    frame(&b, 9, 10);
    d11_link_send(k, b.data, b.len);
    d11_links_flush(&t);
    CHECK_EQ(r.nclose, 3);
    CHECK_RC(r.why[2], -EPIPE);
    CHECK_EQ(t.ndirty, 0);

    /* unsent bytes over the limit: a peer that never reads */
    pair(p);
    int small = 4096;
    CHECK(setsockopt(p[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    k = d11_links_add(&t, p[0]);
    b.len = 0;
    frame(&b, 10, D11_FRAME_BYTES_MAX - D11_FRAME_HDR_BYTES);
    for (size_t sent = 0; sent <= (size_t)D11_RPC_OUT_BYTES_MAX; sent += b.len) d11_link_send(k, b.data, b.len);
    d11_links_flush(&t);
    CHECK_EQ(r.nclose, 4);
    CHECK_RC(r.why[3], D11_ETOOBIG);
    CHECK_EQ(t.n_closed_slow, 1);
    close(p[1]);
    d11_buf_free(&b);
    CHECK_EQ(t.nopen, 0);
    d11_links_release(&t);
    CHECK_EQ(r.nclose, 4);
    d11_loop_release(&l);
}

static void test_dirty_and_mods(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    rec r = {0};
    d11_links t;
    enum { N = 8 };
    CHECK_RC(d11_links_init(&t, &l, N, on_frame, on_close, &r), 0);
    int p[N][2];
    d11_link *k[N];
    for (int i = 0; i < N; i++) {
        pair(p[i]);
        k[i] = d11_links_add(&t, p[i][0]);
    }
    d11_buf b;
    d11_buf_init(&b, 0);
    frame(&b, 1, 10);
    d11_link_send(k[2], b.data, b.len);
    d11_link_send(k[2], b.data, b.len);
    d11_link_reply(k[5], &(d11_frame_hdr){.version = D11_WIRE_VERSION, .type = D11_MSG_PING, .req_id = 3},
                   200, NULL, "{}", 2);
    d11_link_send(k[6], b.data, b.len);
    CHECK_EQ(t.ndirty, 3);
    d11_link_close(k[6], 1); /* closed while dirty: leaves the list */
    CHECK_EQ(t.ndirty, 2);
    uint64_t mods = l.n_ctl_mod;
    d11_links_flush(&t);
    CHECK_EQ(t.n_flushed, 2); /* only the two dirty links, once each */
    CHECK_EQ(t.ndirty, 0);
    CHECK_EQ(l.n_ctl_mod, mods); /* everything written at once: WRITE never armed */
    CHECK_EQ(drain(p[2][1]), 2 * b.len);
    CHECK(drain(p[5][1]) > D11_FRAME_HDR_BYTES);
    CHECK_EQ(drain(p[3][1]), 0);
    d11_links_flush(&t);
    CHECK_EQ(t.n_flushed, 2);

    /* a peer that does not read: WRITE armed once, kept while bytes remain, disarmed once */
    int small = 4096;
    CHECK(setsockopt(p[4][0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    b.len = 0;
    frame(&b, 4, 300000);
    d11_link_send(k[4], b.data, b.len);
    d11_links_flush(&t);
    CHECK(k[4]->io.want & D11_IO_WRITE);
    CHECK_EQ(l.n_ctl_mod, mods + 1);
    d11_link_send(k[4], b.data, b.len);
    d11_links_flush(&t);
    CHECK_EQ(l.n_ctl_mod, mods + 1);
    for (int i = 0; i < 3; i++) d11_loop_run_once(&l, 10); /* not writable: no WRITE event */
    CHECK_EQ(l.n_ctl_mod, mods + 1);
    CHECK_RC(d11_loop_before_sleep(&l, d11_links_flush_hook, &t), 0);
    size_t got_bytes = 0;
    int64_t end = d11_mono_ms() + 10000;
    while (got_bytes < 2 * b.len && d11_mono_ms() < end) {
        got_bytes += drain(p[4][1]);
        d11_loop_run_once(&l, 10);
    }
    got_bytes += drain(p[4][1]);
    CHECK_EQ(got_bytes, 2 * b.len);
    CHECK(!(k[4]->io.want & D11_IO_WRITE));
    CHECK_EQ(l.n_ctl_mod, mods + 2);
    d11_buf_free(&b);
    d11_links_release(&t);
    CHECK_EQ(r.nclose, N);
    for (int i = 0; i < N; i++) close(p[i][1]);
    d11_loop_release(&l);
}

static void test_listen_and_nowait(void)
{
    d11_loop l;
    CHECK_RC(d11_loop_init(&l), 0);
    rec r = {0};
    d11_links t;
    CHECK_RC(d11_links_init(&t, &l, 2, on_frame, on_close, &r), 0);
    t.on_open = on_open;
    CHECK_RC(d11_loop_before_sleep(&l, d11_links_flush_hook, &t), 0);
    char path[256];
    const char *dir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/link-%d.sock", dir && *dir ? dir : "/tmp", (int)getpid());
    int lfd = d11_listen_unix(path);
    CHECK(lfd >= 0);
    d11_io lio = {0};
    CHECK_RC(d11_links_listen(&t, &lio, lfd), 0);
    int c[3];
    for (int i = 0; i < 3; i++) c[i] = d11_connect_unix(path);
    for (int i = 0; i < 3; i++) CHECK(c[i] >= 0);
    for (int i = 0; i < 5 && r.nopen + (int)t.n_refused_full < 3; i++) d11_loop_run_once(&l, 1000);
    CHECK_EQ(r.nopen, 2);
    CHECK_EQ(t.nopen, 2);
    CHECK_EQ(t.n_refused_full, 1);
    char x;
    CHECK(read(c[2], &x, 1) == 0); /* the refused client sees EOF */

    /* output queued outside an iteration: the next run_once does not sleep its 5 s */
    d11_link *k = d11_links_get(&t, 0, t.v[0].gen);
    CHECK(k != NULL);
    d11_buf b;
    d11_buf_init(&b, 0);
    frame(&b, 5, 10);
    d11_link_send(k, b.data, b.len);
    int64_t t0 = d11_mono_ms();
    d11_loop_run_once(&l, 5000);
    CHECK(d11_mono_ms() - t0 < 2000);
    CHECK_EQ(t.ndirty, 0);
    size_t n = 0;
    for (int i = 0; i < 2; i++) n += drain(c[i]);
    CHECK_EQ(n, b.len);
    d11_buf_free(&b);
    d11_links_release(&t);
    CHECK(!lio.active);
    close(lfd);
    unlink(path);
    for (int i = 0; i < 3; i++) close(c[i]);
    d11_loop_release(&l);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    d11_log_init("test_link", D11_LOG_ERROR);
    test_order_partial_writes();
    test_full_and_gen();
    test_close_inside_on_frame();
    test_close_reasons();
    test_dirty_and_mods();
    test_listen_and_nowait();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
