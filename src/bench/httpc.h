/*
 * httpc.h — the HTTP/1.1 client pieces shared by `d11 bench` and `d11 ctl`.
 *
 * Three layers, each usable alone:
 *   1. d11_url: parse "http://HOST:PORT[/prefix]" once into an IPv4 address, the Host
 *      header value and a path prefix. Only plain http (d11 terminates TLS elsewhere).
 *   2. Request writing (d11_httpc_write_request) and a streaming response parser
 *      (d11_httpc_parser, on top of Debian's http_parser 2.9) that accepts any split of
 *      the byte stream and several pipelined responses in one read, and calls back once
 *      per complete response. The bench's epoll loop uses these directly.
 *   3. d11_httpc: a blocking keep-alive client with a per-request timeout, for setup
 *      steps and for `d11 ctl`.
 *
 * Limits: a response body is kept up to `body_bytes_keep` bytes (the rest is counted in
 * body_len but dropped), so a misbehaving server cannot make the client grow without
 * bound. Not thread-safe: each object belongs to one thread.
 */
#ifndef D11_BENCH_HTTPC_H
#define D11_BENCH_HTTPC_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <http_parser.h>

#include "../core/util.h"

#define D11_HTTPC_HOST_BYTES_MAX   256
#define D11_HTTPC_BASE_BYTES_MAX   512
#define D11_HTTPC_BODY_KEEP_DEFAULT (1 << 20)  /* bytes of a response body kept */
#define D11_HTTPC_TOKEN_BYTES_MAX  128        /* = D11_TOKEN_BYTES_MAX (core/limits.h) */

typedef struct d11_url {
    char     host[D11_HTTPC_HOST_BYTES_MAX];       /* as written in the URL */
    uint16_t port;
    char     hostport[D11_HTTPC_HOST_BYTES_MAX + 8]; /* Host header value */
    char     base[D11_HTTPC_BASE_BYTES_MAX];       /* path prefix, no trailing '/', or "" */
    struct sockaddr_in addr;
} d11_url;

/*
 * Parse an http URL. The host may be an IPv4 literal or a name resolved once through
 * getaddrinfo (IPv4 only). Port defaults to 80. Query strings and fragments are
 * rejected. Returns 0, or -1 with a one-line reason in err.
 */
int d11_url_parse(const char *s, d11_url *u, char *err, size_t errlen);

/*
 * Append one request to out: "METHOD base+path HTTP/1.1", Host, the caller's header
 * block (already "Name: value\r\n" lines, may be NULL), Content-Length when there is a
 * body or the method usually carries one (POST/PUT/PATCH), then the body.
 */
void d11_httpc_write_request(d11_buf *out, const char *method, const d11_url *u,
                             const char *path, const char *headers, const char *body,
                             size_t body_len);

/* One complete response as handed to the callback. Pointers live until it returns. */
typedef struct d11_httpc_resp {
    int         status;
    const char *body;        /* NUL-terminated; the first body_kept bytes */
    size_t      body_kept;
    size_t      body_len;    /* full length as received */
    bool        keep_alive;  /* false: the server will close after this response */
    char        content_type[64];
    int         retry_after_s; /* Retry-After in seconds, -1 when absent */
} d11_httpc_resp;

/* Return 0 to go on, non-zero to stop parsing (feed then returns D11_ECLOSED). */
typedef int (*d11_httpc_cb)(void *ctx, const d11_httpc_resp *r);

typedef struct d11_httpc_parser {
    http_parser   hp;
    d11_httpc_cb  cb;
    void         *ctx;
    d11_buf       body;
    size_t        body_len;
    size_t        body_bytes_keep;
    /* header being read: which one we care about */
    int           hdr_state;  /* 0 other, 1 content-type, 2 retry-after */
    bool          hdr_value_seen;
    char          hdr_name[32];
    size_t        hdr_name_len;
    char          content_type[64];
    char          retry_after[16];
    bool          skip_body;  /* the response being read answers a HEAD request */
    bool          stopped;
    bool          in_message; /* between on_message_begin and its completion */
} d11_httpc_parser;

void d11_httpc_parser_init(d11_httpc_parser *p, d11_httpc_cb cb, void *ctx,
                           size_t body_bytes_keep);
void d11_httpc_parser_release(d11_httpc_parser *p);
/* Start over (after a reconnect). */
void d11_httpc_parser_reset(d11_httpc_parser *p);
/*
 * Feed received bytes (n == 0 means EOF: completes a body delimited by the close).
 * Calls cb for every complete response. Returns 0, D11_EPROTO on a malformed stream, or
 * D11_ECLOSED when cb asked to stop.
 */
int d11_httpc_parser_feed(d11_httpc_parser *p, const char *data, size_t n);
/* True between the first byte of a response and its completion. */
bool d11_httpc_parser_midway(const d11_httpc_parser *p);

/* Non-blocking TCP connect to u; returns fd (connect may be in progress) or -errno. */
int d11_httpc_connect_nb(const d11_url *u);

/* ---- blocking client ---- */

typedef struct d11_httpc {
    d11_url  url;
    int      fd;
    int      timeout_ms;     /* whole request, connect included */
    d11_httpc_parser parser;
    d11_buf  out;
    /* last response (owned copies; valid until the next request) */
    int      status;
    d11_buf  body;
    bool     keep_alive;
    char     content_type[64];
    bool     got;            /* a response completed */
} d11_httpc;

void d11_httpc_init(d11_httpc *c, const d11_url *u, int timeout_ms);
void d11_httpc_release(d11_httpc *c);
/*
 * Send one request and wait for its response on the kept-alive connection (connecting
 * first when needed). A request that finds a kept-alive connection closed by the server
 * before any response byte is retried once on a new connection. On 0, c->status and
 * c->body hold the response. Errors: -ETIMEDOUT, -ECONNREFUSED (and other -errno),
 * D11_EPROTO, D11_ECLOSED (closed without a response).
 */
int d11_httpc_do(d11_httpc *c, const char *method, const char *path, const char *headers,
                 const char *body, size_t body_len);

/*
 * Find the string value of the first "key": "value" pair in a JSON text (a shallow
 * scan: good for machine-generated bodies like d11's; escapes inside the value make it
 * fail). Copies at most outlen-1 bytes. Returns the value length, or -1 when absent,
 * not a string, or too long.
 */
int d11_json_find_str(const char *json, size_t n, const char *key, char *out, size_t outlen);

/*
 * The bearer token from --token (given) or --token-file (read; surrounding whitespace
 * trimmed). Both NULL: out = "" and 0. Rules: 1..128 printable ASCII (space included).
 * Returns 0, or -1 with a reason in err (the token itself is never echoed).
 */
int d11_httpc_token_load(const char *token, const char *token_file, char *out, size_t outlen,
                         char *err, size_t errlen);

#endif
