/*
 * conn.c — framed non-blocking connections and socket helpers (see conn.h).
 * Output compaction is lazy: written bytes are dropped only when the whole buffer has
 * drained or the written prefix is larger than the rest, so a busy connection does not
 * memmove on every write.
 */

#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

void d11_conn_init(d11_conn *c, int fd)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    d11_buf_init(&c->in, 65536);
    d11_buf_init(&c->out, 65536);
}

void d11_conn_release(d11_conn *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    d11_buf_free(&c->in);
    d11_buf_free(&c->out);
    c->in_off = c->out_off = 0;
}

int d11_conn_read(d11_conn *c)
{
    for (;;) {
        d11_buf_reserve(&c->in, 65536);
        ssize_t r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
        if (r > 0) {
            c->in.len += (size_t)r;
            if (c->in.len - c->in_off > 4 * (size_t)D11_FRAME_BYTES_MAX) return 0; /* let the loop drain */
            continue;
        }
        if (r == 0) return D11_ECLOSED;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        return -errno;
    }
}

int d11_conn_frame(d11_conn *c, d11_frame *f)
{
    const uint8_t *p = (const uint8_t *)c->in.data + c->in_off;
    size_t n = c->in.len - c->in_off;
    int rc = d11_frame_hdr_decode(p, n, &f->hdr);
    if (rc < 0) return rc;
    if (rc == 1 || n < f->hdr.len) return 0;
    f->payload = p + D11_FRAME_HDR_BYTES;
    f->payload_len = f->hdr.len - D11_FRAME_HDR_BYTES;
    c->in_off += f->hdr.len;
    return 1;
}

void d11_conn_compact(d11_conn *c)
{
    d11_buf_consume(&c->in, c->in_off);
    c->in_off = 0;
}

int d11_conn_flush(d11_conn *c)
{
    while (c->out_off < c->out.len) {
        /* send(MSG_NOSIGNAL): a peer that went away is an EPIPE, never a SIGPIPE */
        ssize_t w = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w == -1 && errno == ENOTSOCK)
            w = write(c->fd, c->out.data + c->out_off, c->out.len - c->out_off);
        if (w == -1) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            return -errno;
        }
        c->out_off += (size_t)w;
    }
    if (c->out_off == c->out.len) {
        c->out.len = c->out_off = 0;
        return 0;
    }
    if (c->out_off > c->out.len - c->out_off) {
        d11_buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    return 1;
}

void d11_reply_enc(d11_buf *out, const d11_frame_hdr *req, uint32_t status, const char *code,
                   const char *body, size_t body_len)
{
    d11_frame_hdr h = *req;
    h.flags = (uint16_t)((req->flags & D11_WF_STRESS) | D11_WF_REPLY);
    h.deadline_ms = 0;
    h.status = status;
    size_t start = d11_frame_begin(out, &h);
    d11_msg_reply_enc(out, code, body, body_len);
    d11_frame_end(out, start);
}

void d11_conn_reply(d11_conn *c, const d11_frame_hdr *req, uint32_t status, const char *code,
                    const char *body, size_t body_len)
{
    d11_reply_enc(&c->out, req, status, code, body, body_len);
}

/* ---- sockets ---- */

int d11_listen_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == -1 || listen(fd, 1024) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static void tune_socket(int fd, int family)
{
    int one = 1, sz = 4 << 20;
    if (family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
}

int d11_connect_unix(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return -ENAMETOOLONG;
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    tune_socket(fd, AF_UNIX);
    int rc = d11_set_nonblock(fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

static int parse_hostport(const char *hostport, struct sockaddr_in *a)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof host) return -EINVAL;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = 0;
    uint64_t port;
    if (d11_parse_u64(colon + 1, strlen(colon + 1), 65535, &port) < 0) return -EINVAL;
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &a->sin_addr) != 1) return -EINVAL;
    return 0;
}

int d11_listen_tcp(const char *hostport, bool reuseport)
{
    struct sockaddr_in a;
    int rc = parse_hostport(hostport, &a);
    if (rc < 0) return rc;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == -1 || listen(fd, 4096) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

int d11_connect_tcp(const char *hostport)
{
    struct sockaddr_in a;
    int rc = parse_hostport(hostport, &a);
    if (rc < 0) return rc;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == -1) {
        int e = -errno;
        close(fd);
        return e;
    }
    tune_socket(fd, AF_INET);
    rc = d11_set_nonblock(fd);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    return fd;
}

int d11_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return fd;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return -errno;
    }
}
