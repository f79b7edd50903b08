/*
 * evsrc.c — blocking EVENTS_READ / ROUTING_GET to the parts (evsrc.h).
 * A request: connect if needed (d11_connect_unix, non-blocking socket), write the whole
 * frame, read until one whole reply frame is in (poll with the time left of
 * D11_EVSRC_TIMEOUT_MS). Replies carry the request's id; a reply with another id (a late
 * answer to a request that timed out) is skipped. Any error closes the connection.
 */
#include "evsrc.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "gw.h"

void gw_evsrc_init(gw_evsrc *s, const struct gw *g)
{
    memset(s, 0, sizeof *s);
    s->g = g;
    for (int i = 0; i < GW_UP_N; i++) s->fd[i] = -1;
    d11_buf_init(&s->out, 256);
    d11_buf_init(&s->in, 64 * 1024);
}

static void drop(gw_evsrc *s, int target)
{
    if (s->fd[target] >= 0) close(s->fd[target]);
    s->fd[target] = -1;
}

void gw_evsrc_close(gw_evsrc *s)
{
    for (int i = 0; i < GW_UP_N; i++) drop(s, i);
    d11_buf_free(&s->out);
    d11_buf_free(&s->in);
}

static int wait_fd(int fd, short ev, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - d11_mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = ev};
        int r = poll(&p, 1, (int)left);
        if (r > 0) return 0;
        if (r < 0 && errno != EINTR) return -errno;
    }
}

/* Send s->out (one frame with id req) to target and read its reply into s->in. */
static int call(gw_evsrc *s, int target, uint64_t req, d11_frame *reply)
{
    int64_t deadline = d11_mono_ms() + D11_EVSRC_TIMEOUT_MS;
    if (s->fd[target] < 0) {
        char path[1024];
        if (gw_up_sock_path(s->g, target, path, sizeof path) < 0) return -ENAMETOOLONG;
        int fd = d11_connect_unix(path);
        if (fd < 0) return fd;
        s->fd[target] = fd;
    }
    int fd = s->fd[target], rc = 0;
    for (size_t off = 0; off < s->out.len;) {
        ssize_t w = write(fd, s->out.data + off, s->out.len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (rc = wait_fd(fd, POLLOUT, deadline)) == 0) continue;
        drop(s, target);
        return rc ? rc : -EIO;
    }
    d11_buf_reset(&s->in);
    for (;;) {
        d11_frame_hdr h;
        int d = d11_frame_hdr_decode((const uint8_t *)s->in.data, s->in.len, &h);
        if (d < 0) {
            drop(s, target);
            return d;
        }
        if (d == 0 && s->in.len >= h.len) {
            if (h.req_id == req && (h.flags & D11_WF_REPLY)) {
                reply->hdr = h;
                reply->payload = (const uint8_t *)s->in.data + D11_FRAME_HDR_BYTES;
                reply->payload_len = h.len - D11_FRAME_HDR_BYTES;
                return 0; /* one request in flight: nothing can follow this reply */
            }
            memmove(s->in.data, s->in.data + h.len, s->in.len - h.len); /* a late answer */
            s->in.len -= h.len;
            continue;
        }
        d11_buf_reserve(&s->in, 64 * 1024);
        ssize_t r = read(fd, s->in.data + s->in.len, s->in.cap - s->in.len - 1);
        if (r > 0) {
            s->in.len += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && (rc = wait_fd(fd, POLLIN, deadline)) == 0) continue;
        drop(s, target);
        return r == 0 ? D11_ECLOSED : rc ? rc : -EIO;
    }
}

static void begin(gw_evsrc *s, uint16_t type, uint16_t flags)
{
    d11_frame_hdr h = {.type = type, .flags = flags, .req_id = ++s->req,
                       .deadline_ms = d11_deadline_from_budget(d11_wall_ms(), D11_EVSRC_TIMEOUT_MS)};
    d11_buf_reset(&s->out);
    (void)d11_frame_begin(&s->out, &h);
}

int gw_evsrc_read(gw_evsrc *s, int target, int shadow, uint64_t after, uint32_t limit, int *status,
                  const char **body, size_t *n)
{
    D11_ASSERT(target >= 0 && target < GW_UP_N && limit >= 1 && limit <= D11_EVENTS_LIMIT_MAX);
    begin(s, D11_MSG_EVENTS_READ, shadow ? D11_WF_STRESS : 0);
    d11_msg_events_read m = {.shadow = (uint8_t)shadow, .after = after, .limit = limit};
    d11_msg_events_read_enc(&s->out, &m);
    d11_frame_end(&s->out, 0);
    d11_frame f;
    int rc = call(s, target, s->req, &f);
    if (rc < 0) return rc;
    d11_str code, b;
    if (d11_msg_reply_dec(f.payload, f.payload_len, &code, &b) < 0) {
        drop(s, target);
        return D11_EPROTO;
    }
    *status = (int)f.hdr.status;
    *body = b.p;
    *n = b.n;
    return 0;
}

int gw_evsrc_ncells(gw_evsrc *s, unsigned *ncells)
{
    begin(s, D11_MSG_ROUTING_GET, 0);
    d11_frame_end(&s->out, 0);
    d11_frame f;
    int rc = call(s, GW_UP_CENTER, s->req, &f);
    if (rc < 0) return rc;
    if (f.hdr.status != 200) return -EAGAIN;
    d11_routing r;
    rc = d11_routing_dec(f.payload, f.payload_len, &r);
    if (rc) { /* the generic reply envelope around it, as upstream.c accepts */
        d11_str code, body;
        if (d11_msg_reply_dec(f.payload, f.payload_len, &code, &body) == 0) rc = d11_routing_dec(body.p, body.n, &r);
    }
    if (rc) return D11_EPROTO;
    *ncells = r.ncells;
    return 0;
}
