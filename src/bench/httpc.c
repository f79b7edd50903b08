/*
 * httpc.c — URL parsing, request writing, the streaming response parser and the blocking
 * client (see httpc.h).
 *
 * The parser wraps http_parser in HTTP_RESPONSE mode: http_parser resets itself between
 * messages on a kept-alive stream, so pipelined responses come out one callback each, in
 * order. We keep only what the callers use: status, body (bounded), keep-alive,
 * Content-Type and Retry-After.
 */

#include "httpc.h"
#include "../core/limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

_Static_assert(D11_HTTPC_TOKEN_BYTES_MAX == D11_TOKEN_BYTES_MAX, "one token length limit");

/* ---- URL ---- */

int d11_url_parse(const char *s, d11_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    if (strncasecmp(s, "http://", 7) != 0) {
        snprintf(err, errlen, "url must start with http:// (got '%.80s')", s);
        return -1;
    }
    const char *h = s + 7;
    size_t hl = strcspn(h, "/?#");
    if (strpbrk(h, "?#")) {
        snprintf(err, errlen, "url must not carry a query or fragment: '%.80s'", s);
        return -1;
    }
    if (hl == 0 || h[0] == '[') {
        snprintf(err, errlen, "url needs an IPv4 address or host name: '%.80s'", s);
        return -1;
    }
    const char *colon = memchr(h, ':', hl);
    size_t namel = colon ? (size_t)(colon - h) : hl;
    uint64_t port = 80;
    if (colon && d11_parse_u64(colon + 1, hl - namel - 1, 65535, &port) < 0) {
        snprintf(err, errlen, "bad port in url '%.80s'", s);
        return -1;
    }
    if (namel == 0 || namel >= sizeof u->host || port == 0) {
        snprintf(err, errlen, "bad host or port in url '%.80s'", s);
        return -1;
    }
    memcpy(u->host, h, namel);
    u->host[namel] = 0;
    u->port = (uint16_t)port;
    snprintf(u->hostport, sizeof u->hostport, "%s:%u", u->host, (unsigned)u->port);
    const char *path = h + hl;
    size_t pl = strlen(path);
    while (pl > 0 && path[pl - 1] == '/') pl--;
    if (pl >= sizeof u->base) {
        snprintf(err, errlen, "url path prefix too long");
        return -1;
    }
    memcpy(u->base, path, pl);
    u->base[pl] = 0;

    u->addr.sin_family = AF_INET;
    u->addr.sin_port = htons(u->port);
    if (inet_pton(AF_INET, u->host, &u->addr.sin_addr) == 1) return 0;
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(u->host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", u->host, gai_strerror(rc));
        return -1;
    }
    u->addr.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
    freeaddrinfo(res);
    return 0;
}

/* ---- requests ---- */

static void append_u64(d11_buf *b, uint64_t v)
{
    char tmp[24];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    d11_buf_append(b, tmp + i, sizeof tmp - i);
}

void d11_httpc_write_request(d11_buf *out, const char *method, const d11_url *u,
                             const char *path, const char *headers, const char *body,
                             size_t body_len)
{
    d11_buf_puts(out, method);
    d11_buf_append(out, " ", 1);
    d11_buf_puts(out, u->base);
    d11_buf_puts(out, path);
    d11_buf_append(out, " HTTP/1.1\r\nHost: ", 17);
    d11_buf_puts(out, u->hostport);
    d11_buf_append(out, "\r\n", 2);
    if (headers) d11_buf_puts(out, headers);
    bool wants_length = body_len > 0 || !strcmp(method, "POST") || !strcmp(method, "PUT") ||
                        !strcmp(method, "PATCH");
    if (wants_length) {
        d11_buf_append(out, "Content-Length: ", 16);
        append_u64(out, body_len);
        d11_buf_append(out, "\r\n", 2);
    }
    d11_buf_append(out, "\r\n", 2);
    if (body_len) d11_buf_append(out, body, body_len);
}

/* ---- response parser ---- */

static d11_httpc_parser *P(http_parser *hp) { return hp->data; }

static int on_begin(http_parser *hp)
{
    d11_httpc_parser *p = P(hp);
    d11_buf_reset(&p->body);
    p->body_len = 0;
    p->hdr_state = 0;
    p->hdr_value_seen = true; /* so the first field starts a new name */
    p->hdr_name_len = 0;
    p->content_type[0] = 0;
    p->retry_after[0] = 0;
    p->in_message = true;
    return 0;
}

static int on_field(http_parser *hp, const char *at, size_t n)
{
    d11_httpc_parser *p = P(hp);
    if (p->hdr_value_seen) {
        p->hdr_name_len = 0;
        p->hdr_value_seen = false;
    }
    size_t room = sizeof p->hdr_name - 1 - p->hdr_name_len;
    if (n > room) n = room;
    memcpy(p->hdr_name + p->hdr_name_len, at, n);
    p->hdr_name_len += n;
    p->hdr_name[p->hdr_name_len] = 0;
    return 0;
}

static void append_bounded(char *dst, size_t cap, const char *at, size_t n)
{
    size_t have = strlen(dst);
    if (have + 1 >= cap) return;
    if (n > cap - 1 - have) n = cap - 1 - have;
    memcpy(dst + have, at, n);
    dst[have + n] = 0;
}

static int on_value(http_parser *hp, const char *at, size_t n)
{
    d11_httpc_parser *p = P(hp);
    if (!p->hdr_value_seen) {
        p->hdr_value_seen = true;
        p->hdr_state = !strcasecmp(p->hdr_name, "content-type")  ? 1
                       : !strcasecmp(p->hdr_name, "retry-after") ? 2
                                                                 : 0;
    }
    if (p->hdr_state == 1) append_bounded(p->content_type, sizeof p->content_type, at, n);
    else if (p->hdr_state == 2) append_bounded(p->retry_after, sizeof p->retry_after, at, n);
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    return P(hp)->skip_body ? 1 : 0;
}

static int on_body(http_parser *hp, const char *at, size_t n)
{
    d11_httpc_parser *p = P(hp);
    p->body_len += n;
    if (p->body.len < p->body_bytes_keep) {
        size_t take = p->body_bytes_keep - p->body.len;
        d11_buf_append(&p->body, at, n < take ? n : take);
    }
    return 0;
}

static int on_complete(http_parser *hp)
{
    d11_httpc_parser *p = P(hp);
    d11_httpc_resp r = {
        .status = (int)hp->status_code,
        .body = p->body.data ? p->body.data : "",
        .body_kept = p->body.len,
        .body_len = p->body_len,
        .keep_alive = http_should_keep_alive(hp) != 0,
        .retry_after_s = -1,
    };
    snprintf(r.content_type, sizeof r.content_type, "%s", p->content_type);
    uint64_t ra;
    if (p->retry_after[0] &&
        d11_parse_u64(p->retry_after, strlen(p->retry_after), 86400, &ra) == 0)
        r.retry_after_s = (int)ra;
    p->hdr_state = 0;
    p->in_message = false;
    if (p->cb && p->cb(p->ctx, &r) != 0) {
        p->stopped = true;
        return -1;
    }
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_begin,
    .on_header_field = on_field,
    .on_header_value = on_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

void d11_httpc_parser_init(d11_httpc_parser *p, d11_httpc_cb cb, void *ctx,
                           size_t body_bytes_keep)
{
    memset(p, 0, sizeof *p);
    p->cb = cb;
    p->ctx = ctx;
    p->body_bytes_keep = body_bytes_keep ? body_bytes_keep : D11_HTTPC_BODY_KEEP_DEFAULT;
    d11_buf_init(&p->body, 512);
    d11_httpc_parser_reset(p);
}

void d11_httpc_parser_release(d11_httpc_parser *p)
{
    d11_buf_free(&p->body);
}

void d11_httpc_parser_reset(d11_httpc_parser *p)
{
    http_parser_init(&p->hp, HTTP_RESPONSE);
    p->hp.data = p;
    p->stopped = false;
    p->skip_body = false;
    p->in_message = false;
    d11_buf_reset(&p->body);
    p->body_len = 0;
}

bool d11_httpc_parser_midway(const d11_httpc_parser *p)
{
    return p->in_message;
}

int d11_httpc_parser_feed(d11_httpc_parser *p, const char *data, size_t n)
{
    size_t used = http_parser_execute(&p->hp, &parser_settings, data, n);
    if (p->stopped) return D11_ECLOSED;
    if (HTTP_PARSER_ERRNO(&p->hp) != HPE_OK) return D11_EPROTO;
    if (used != n) return D11_EPROTO;
    return 0;
}

/* ---- sockets ---- */

int d11_httpc_connect_nb(const d11_url *u)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -errno;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)&u->addr, sizeof u->addr) == -1 &&
        errno != EINPROGRESS) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

/* ---- blocking client ---- */

static int blocking_cb(void *ctx, const d11_httpc_resp *r)
{
    d11_httpc *c = ctx;
    c->status = r->status;
    d11_buf_reset(&c->body);
    d11_buf_append(&c->body, r->body, r->body_kept);
    c->keep_alive = r->keep_alive;
    snprintf(c->content_type, sizeof c->content_type, "%s", r->content_type);
    c->got = true;
    return 1; /* one request, one response: stop here */
}

void d11_httpc_init(d11_httpc *c, const d11_url *u, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->url = *u;
    c->fd = -1;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
    d11_httpc_parser_init(&c->parser, blocking_cb, c, D11_HTTPC_BODY_KEEP_DEFAULT);
    d11_buf_init(&c->out, 1024);
    d11_buf_init(&c->body, 1024);
}

static void close_fd(d11_httpc *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

void d11_httpc_release(d11_httpc *c)
{
    close_fd(c);
    d11_httpc_parser_release(&c->parser);
    d11_buf_free(&c->out);
    d11_buf_free(&c->body);
}

/* Wait for events on c->fd until deadline_ms. Returns 0, -ETIMEDOUT or -errno. */
static int wait_fd(d11_httpc *c, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - d11_mono_ms();
        if (left <= 0) return -ETIMEDOUT;
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int n = poll(&pfd, 1, (int)left);
        if (n == -1) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (n == 0) return -ETIMEDOUT;
        return 0;
    }
}

static int connect_blocking(d11_httpc *c, int64_t deadline_ms)
{
    int fd = d11_httpc_connect_nb(&c->url);
    if (fd < 0) return fd;
    c->fd = fd;
    int rc = wait_fd(c, POLLOUT, deadline_ms);
    if (rc == 0) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1) rc = -errno;
        else if (soerr) rc = -soerr;
    }
    if (rc < 0) close_fd(c);
    return rc;
}

/* One attempt. *fresh_fail is set when a reused connection died before any reply byte. */
static int attempt(d11_httpc *c, int64_t deadline_ms, bool *retryable)
{
    *retryable = false;
    bool reused = c->fd >= 0;
    int rc;
    if (!reused && (rc = connect_blocking(c, deadline_ms)) < 0) return rc;
    size_t off = 0;
    while (off < c->out.len) {
        ssize_t w = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
        if (w >= 0) {
            off += (size_t)w;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if ((rc = wait_fd(c, POLLOUT, deadline_ms)) < 0) return rc;
            continue;
        }
        rc = -errno;
        *retryable = reused && (rc == -EPIPE || rc == -ECONNRESET);
        return rc;
    }
    size_t got_bytes = 0;
    char buf[16384];
    for (;;) {
        if ((rc = wait_fd(c, POLLIN, deadline_ms)) < 0) return rc;
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r == -1) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            rc = -errno;
            *retryable = reused && got_bytes == 0 && rc == -ECONNRESET;
            return rc;
        }
        if (r == 0) {
            rc = d11_httpc_parser_feed(&c->parser, NULL, 0);
            if (c->got) return 0;
            *retryable = reused && got_bytes == 0;
            return rc < 0 && rc != D11_ECLOSED ? rc : D11_ECLOSED;
        }
        got_bytes += (size_t)r;
        rc = d11_httpc_parser_feed(&c->parser, buf, (size_t)r);
        if (c->got) return 0;
        if (rc < 0) return rc;
    }
}

int d11_httpc_do(d11_httpc *c, const char *method, const char *path, const char *headers,
                 const char *body, size_t body_len)
{
    int64_t deadline_ms = d11_mono_ms() + c->timeout_ms;
    d11_buf_reset(&c->out);
    d11_httpc_write_request(&c->out, method, &c->url, path, headers, body, body_len);
    int rc = 0;
    for (int tries = 0; tries < 2; tries++) {
        c->got = false;
        c->status = 0;
        d11_buf_reset(&c->body);
        d11_httpc_parser_reset(&c->parser);
        c->parser.skip_body = !strcmp(method, "HEAD");
        bool retryable;
        rc = attempt(c, deadline_ms, &retryable);
        if (rc == 0) {
            if (!c->keep_alive) close_fd(c);
            return 0;
        }
        close_fd(c);
        if (!retryable) break;
    }
    return rc;
}

/* ---- tokens ---- */

int d11_httpc_token_load(const char *token, const char *token_file, char *out, size_t outlen,
                         char *err, size_t errlen)
{
    out[0] = 0;
    char *file_text = NULL;
    if (token_file) {
        int rc = d11_read_file(token_file, &file_text, NULL);
        if (rc < 0) {
            snprintf(err, errlen, "cannot read token file %s: %s", token_file, d11_strerror(rc));
            return -1;
        }
        size_t n = strlen(file_text);
        while (n > 0 && isspace((unsigned char)file_text[n - 1])) file_text[--n] = 0;
        token = file_text;
    }
    if (!token) return 0;
    size_t n = strlen(token);
    bool ok = n >= 1 && n <= D11_HTTPC_TOKEN_BYTES_MAX && n < outlen;
    for (size_t i = 0; ok && i < n; i++) ok = token[i] > 0x20 && token[i] < 0x7f;
    if (!ok) {
        snprintf(err, errlen, "token must be 1..%d printable ASCII characters without spaces",
                 D11_HTTPC_TOKEN_BYTES_MAX);
        free(file_text);
        return -1;
    }
    memcpy(out, token, n + 1);
    free(file_text);
    return 0;
}

/* ---- JSON scan ---- */

int d11_json_find_str(const char *json, size_t n, const char *key, char *out, size_t outlen)
{
    size_t kl = strlen(key);
    const char *end = json + n;
    const char *p = json;
    while (p < end) {
        const char *q = memmem(p, (size_t)(end - p), key, kl);
        if (!q) return -1;
        p = q + kl;
        if (q == json || q[-1] != '"' || p >= end || *p != '"') continue;
        const char *v = p + 1;
        while (v < end && isspace((unsigned char)*v)) v++;
        if (v >= end || *v != ':') continue;
        v++;
        while (v < end && isspace((unsigned char)*v)) v++;
        if (v >= end || *v != '"') return -1;
        v++;
        const char *e = v;
        while (e < end && *e != '"' && *e != '\\') e++;
        if (e >= end || *e != '"') return -1;
        size_t len = (size_t)(e - v);
        if (len + 1 > outlen) return -1;
        memcpy(out, v, len);
        out[len] = 0;
        return (int)len;
    }
    return -1;
}
