/*
 * conn.h — a non-blocking, framed connection for epoll loops, and socket helpers.
 *
 * A d11_conn owns its fd and two buffers: `in` (bytes read, not yet consumed) and `out`
 * (frames encoded, not yet written). Typical loop:
 *
 *     rc = d11_conn_read(c);              // on EPOLLIN
 *     while ((rc = d11_conn_frame(c, &f)) == 1) handle(&f);   // frames point into c->in
 *     d11_conn_compact(c);               // drop consumed bytes (invalidates frame pointers)
 *     d11_conn_flush(c);                 // on EPOLLOUT or after queuing replies
 *
 * Not thread-safe: a connection belongs to exactly one thread (its loop).
 */
#ifndef D11_CONN_H
#define D11_CONN_H

#include "wire.h"

typedef struct d11_conn {
    int      fd;
    d11_buf  in;
    size_t   in_off; /* bytes of `in` already handed out as frames */
    d11_buf  out;
    size_t   out_off; /* bytes of `out` already written */
    bool     want_write; /* EPOLLOUT armed */
} d11_conn;

typedef struct d11_frame {
    d11_frame_hdr  hdr;
    const uint8_t *payload;
    size_t         payload_len;
} d11_frame;

void d11_conn_init(d11_conn *c, int fd);
/* Closes the fd (if >= 0) and frees the buffers. */
void d11_conn_release(d11_conn *c);
/* Read until EAGAIN. Returns 0, D11_ECLOSED on EOF, -errno on error. */
int d11_conn_read(d11_conn *c);
/* Next whole frame from `in`: 1 = *f filled, 0 = need more bytes, D11_EPROTO = bad stream. */
int d11_conn_frame(d11_conn *c, d11_frame *f);
/* Drop the frames already handed out. Frame pointers are invalid afterwards. */
void d11_conn_compact(d11_conn *c);
/* Write queued output until done or EAGAIN. Returns 0 (all written), 1 (more pending),
 * -errno on error. */
int d11_conn_flush(d11_conn *c);
static inline size_t d11_conn_pending(const d11_conn *c) { return c->out.len - c->out_off; }

/* Queue a reply frame to `req` with a status, an error code (NULL on success) and body. */
void d11_conn_reply(d11_conn *c, const d11_frame_hdr *req, uint32_t status, const char *code,
                    const char *body, size_t body_len);
/* Same, encoding into an arbitrary buffer. */
void d11_reply_enc(d11_buf *out, const d11_frame_hdr *req, uint32_t status, const char *code,
                   const char *body, size_t body_len);

/* ---- sockets; all return an fd >= 0 or -errno ---- */
int d11_listen_unix(const char *path);      /* unlinks a stale socket first; non-blocking */
int d11_connect_unix(const char *path);     /* blocking connect, then non-blocking */
/* "HOST:PORT" (IPv4). reuseport: SO_REUSEPORT so N threads can each own a listener. */
int d11_listen_tcp(const char *hostport, bool reuseport);
int d11_connect_tcp(const char *hostport);  /* blocking connect, then non-blocking */
/* Accept one connection, non-blocking + cloexec. -EAGAIN when none. */
int d11_accept(int lfd);

#endif
