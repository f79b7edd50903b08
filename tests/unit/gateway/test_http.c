/*
 * test_http.c — the gateway's request parser (src/gateway/http.c) fed byte streams the
 * way a connection feeds it (a buffer of unparsed bytes, consumed as reported):
 * pipelined requests split at every byte boundary and fed byte by byte, the smuggling
 * shapes libhttp_parser alone would let through, every limit, header extraction and
 * keep-alive semantics. Prints one line per failed check; last line "N passed, N failed".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http.h"

#include "check.h"

#define MAXREQ 8
typedef struct result {
    int  n;            /* requests completed */
    int  method[MAXREQ];
    char url[MAXREQ][64];
    char body[MAXREQ][128];
    bool keep_alive[MAXREQ];
    int  err_status;   /* 0 = none */
    int  continues;
} result;

static d11_http_in H;
static d11_http_req LAST; /* shallow copy of the last completed request (headers only) */

/* Feed `s` in pieces: first `split` bytes, then the rest in chunks of `step` bytes. */
static void run(const char *s, size_t n, size_t split, size_t step, result *r)
{
    memset(r, 0, sizeof *r);
    d11_http_in_reset(&H);
    d11_buf in;
    d11_buf_init(&in, 64);
    size_t fed = 0;
    while (fed < n || in.len) {
        size_t take = fed == 0 ? (split ? split : step) : step;
        if (take > n - fed) take = n - fed;
        d11_buf_append(&in, s + fed, take);
        fed += take;
        for (;;) {
            size_t used = 0;
            int rc = d11_http_parse(&H, in.data, in.len, &used);
            d11_buf_consume(&in, used);
            if (rc == D11_HTTP_NEED) break;
            if (rc == D11_HTTP_CONTINUE) {
                r->continues++;
                continue;
            }
            if (rc == D11_HTTP_ERROR) {
                r->err_status = H.req.err_status;
                d11_buf_free(&in);
                return;
            }
            memcpy(&LAST, &H.req, sizeof LAST);
            if (r->n < MAXREQ) {
                r->method[r->n] = H.req.method;
                snprintf(r->url[r->n], sizeof r->url[0], "%.60s", H.req.url);
                snprintf(r->body[r->n], sizeof r->body[0], "%.*s", (int)H.req.body.len,
                         H.req.body.data ? H.req.body.data : "");
                r->keep_alive[r->n] = H.req.keep_alive;
            }
            r->n++;
        }
        if (fed == n && in.len) break; /* leftover partial request */
    }
    d11_buf_free(&in);
}

static void whole(const char *s, result *r) { run(s, strlen(s), 0, strlen(s) ? strlen(s) : 1, r); }

static int status_of(const char *s)
{
    result r;
    whole(s, &r);
    return r.err_status;
}

static void test_pipelined_splits(void)
{
    const char *s =
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        "\r\n" /* a stray empty line between requests is tolerated */
        "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n"
        "GET /d HTTP/1.0\r\n\r\n";
    size_t n = strlen(s);
    int bad = 0;
    for (size_t split = 0; split <= n; split++) {
        result r;
        run(s, n, split, n, &r);
        if (!(r.n == 4 && !strcmp(r.url[0], "/a") && !strcmp(r.body[1], "hello") && !strcmp(r.url[2], "/c") &&
              !strcmp(r.body[2], "abcde") && !strcmp(r.url[3], "/d") && r.err_status == 0 && r.keep_alive[0] &&
              !r.keep_alive[3])) {
            if (bad++ < 3) printf("FAIL split at %zu: n=%d err=%d\n", split, r.n, r.err_status);
        }
    }
    CHECKF(bad == 0, "every split point of 4 pipelined requests (%d bad)", bad);
    result r;
    run(s, n, 1, 1, &r);
    CHECKF(r.n == 4 && !strcmp(r.body[2], "abcde") && r.err_status == 0, "byte by byte");
    run(s, n, 0, 7, &r);
    CHECKF(r.n == 4 && r.method[1] == HTTP_POST, "7-byte chunks");
}

static void test_smuggling(void)
{
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400, "CL+TE");
    CHECKF(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n") == 400, "TE+CL");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx") == 400, "dup CL equal");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx") == 400, "dup CL differ");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx") == 400, "CL list");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx") == 400, "CL sign");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 0x1\r\n\r\nx") == 400, "CL hex");
    CHECKF(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n") == 400, "TE list");
    CHECKF(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n") == 400, "TE identity");
    CHECKF(status_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400, "TE twice");
    CHECKF(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") == 400, "TE in 1.0");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length : 1\r\n\r\nx") == 400, "space before colon (CL)");
    CHECKF(status_of("POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n") == 400, "space before colon (TE)");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length:\r\n 1\r\n\r\nx") == 400, "obs-fold");
    CHECKF(status_of("POST / HTTP/1.1\r\n Host: x\r\n\r\n") == 400, "leading whitespace line");
    CHECKF(status_of("GET / HTTP/1.1\nHost: x\n\n") == 400, "bare LF");
    CHECKF(status_of("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n") == 400, "bare CR in value");
    CHECKF(status_of("GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n") == 400, "control byte");
    CHECKF(status_of("GET / HTTP/1.1\r\nX\x7f: a\r\n\r\n") == 400, "DEL in name");
    CHECKF(status_of("GET /\r\n\r\n") == 400, "HTTP/0.9");
    CHECKF(status_of("GET / HTTP/2.0\r\n\r\n") == 505, "HTTP/2.0");
    CHECKF(status_of("GET  / HTTP/1.1\r\n\r\n") == 400, "double space");
    CHECKF(status_of("get / HTTP/1.1\r\n\r\n") == 400, "lowercase method");
    CHECKF(status_of("FOO / HTTP/1.1\r\n\r\n") == 400, "unknown method");
    CHECKF(status_of("GET /\x80 HTTP/1.1\r\n\r\n") == 400, "non-ASCII target");
    const char *chunk_bad[] = {"1 \r\nx\r\n0\r\n\r\n", " 1\r\nx\r\n0\r\n\r\n", "0x1\r\nx\r\n0\r\n\r\n",
                               "-1\r\nx\r\n0\r\n\r\n", "zz\r\nx\r\n0\r\n\r\n", "1\nx\n0\n\n",
                               "1\r\nxy\r\n0\r\n\r\n", "1\r\nx0\r\n\r\n", "\r\n", "123456789\r\n",
                               "1;a\x01\r\nx\r\n0\r\n\r\n", "0\r\nbad trailer\r\n\r\n"};
    for (size_t i = 0; i < sizeof chunk_bad / sizeof chunk_bad[0]; i++) {
        char req[256];
        snprintf(req, sizeof req, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%s", chunk_bad[i]);
        CHECKF(status_of(req) == 400, "bad chunk shape #%zu", i);
    }
    result r;
    whole("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n00000001\r\nx\r\n0\r\n\r\n", &r);
    CHECKF(r.n == 1 && !strcmp(r.body[0], "x"), "chunked is case-insensitive, 8 hex digits ok");
}

static void test_limits(void)
{
    static char big[40000];
    size_t n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < D11_HTTP_HEADERS_MAX; i++) n += (size_t)snprintf(big + n, sizeof big - n, "X-%d: y\r\n", i);
    snprintf(big + n, sizeof big - n, "\r\n");
    CHECKF(status_of(big) == 0, "exactly %d headers ok", D11_HTTP_HEADERS_MAX);
    n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= D11_HTTP_HEADERS_MAX; i++) n += (size_t)snprintf(big + n, sizeof big - n, "X-%d: y\r\n", i);
    snprintf(big + n, sizeof big - n, "\r\n");
    CHECKF(status_of(big) == 431, "too many headers -> 431");
    n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nX: ");
    memset(big + n, 'a', D11_HTTP_HEADER_BYTES_MAX);
    snprintf(big + n + D11_HTTP_HEADER_BYTES_MAX, 8, "\r\n\r\n");
    CHECKF(status_of(big) == 431, "header bytes -> 431");
    /* without the end of the block: 431 as soon as the limit is passed */
    result r;
    run(big, strlen(big) - 4, 0, 1000, &r);
    CHECKF(r.err_status == 431, "incomplete oversize header block -> 431 early");
    n = (size_t)snprintf(big, sizeof big, "GET /");
    memset(big + n, 'a', D11_HTTP_URL_BYTES_MAX);
    snprintf(big + n + D11_HTTP_URL_BYTES_MAX, 16, " HTTP/1.1\r\n\r\n");
    CHECKF(status_of(big) == 414, "long target -> 414");
    big[n + D11_HTTP_URL_BYTES_MAX - 1] = ' ';
    memcpy(big + n + D11_HTTP_URL_BYTES_MAX - 1, " HTTP/1.1\r\n\r\n", 14);
    CHECKF(status_of(big) == 0, "target of %d bytes ok", D11_HTTP_URL_BYTES_MAX);
    snprintf(big, sizeof big, "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", D11_HTTP_BODY_BYTES_MAX + 1);
    CHECKF(status_of(big) == 413, "declared body too large -> 413 before the body");
    n = (size_t)snprintf(big, sizeof big, "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", D11_HTTP_BODY_BYTES_MAX);
    memset(big + n, 'b', D11_HTTP_BODY_BYTES_MAX);
    big[n + D11_HTTP_BODY_BYTES_MAX] = 0;
    whole(big, &r);
    CHECKF(r.n == 1 && r.err_status == 0, "body of exactly the limit ok");
    n = (size_t)snprintf(big, sizeof big, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 5; i++) {
        n += (size_t)snprintf(big + n, sizeof big - n, "1000\r\n");
        memset(big + n, 'c', 0x1000);
        n += 0x1000;
        n += (size_t)snprintf(big + n, sizeof big - n, "\r\n");
    }
    snprintf(big + n, sizeof big - n, "0\r\n\r\n");
    CHECKF(status_of(big) == 413, "chunked body over the limit -> 413");
    CHECKF(status_of("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n") == 400, "CL overflow");
}

static void test_headers(void)
{
    result r;
    whole("POST /v1/orders?x=1 HTTP/1.1\r\nauthorization:   Bearer abc  \r\nIDEMPOTENCY-KEY: k-1\r\n"
          "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nX-D11-Stress: 1\r\n"
          "Content-Length: 2\r\n\r\n{}",
          &r);
    CHECKF(r.n == 1 && !strcmp(r.url[0], "/v1/orders?x=1"), "url");
    CHECKF(LAST.authorization.present && !strcmp(LAST.authorization.v, "Bearer abc"), "authorization trimmed");
    CHECKF(LAST.idempotency_key.present && !strcmp(LAST.idempotency_key.v, "k-1"), "idempotency key");
    CHECKF(LAST.traceparent.present && LAST.traceparent.len == 55, "traceparent");
    CHECKF(LAST.stress.present && !strcmp(LAST.stress.v, "1"), "stress");
    CHECKF(status_of("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n") == 400, "dup authorization");
    CHECKF(status_of("GET / HTTP/1.1\r\nIdempotency-Key: a\r\nIdempotency-Key: a\r\n\r\n") == 400, "dup idempotency key");
    whole("GET / HTTP/1.1\r\ntraceparent: a\r\ntraceparent: b\r\n\r\n", &r);
    CHECKF(r.n == 1 && LAST.traceparent.over, "dup traceparent ignored (marked unusable)");
    char longkey[400];
    snprintf(longkey, sizeof longkey, "GET / HTTP/1.1\r\nIdempotency-Key: %0300d\r\n\r\n", 1);
    whole(longkey, &r);
    CHECKF(r.n == 1 && LAST.idempotency_key.over, "over-long value flagged, not truncated silently");
    whole("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &r);
    CHECKF(r.n == 1 && !r.keep_alive[0], "Connection: close");
    whole("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r);
    CHECKF(r.n == 1 && r.keep_alive[0], "1.0 keep-alive");
    whole("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", &r);
    CHECKF(r.n == 1 && r.continues == 1 && !strcmp(r.body[0], "{}"), "100-continue reported once");
    whole("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", &r);
    CHECKF(r.n == 1 && r.continues == 0, "no continue without a body");
    whole("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &r);
    CHECKF(r.n == 1, "leading empty lines skipped");
    whole("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /2 HTTP/1.1\r\n\r\n", &r);
    CHECKF(r.n == 2 && !strcmp(r.url[1], "/2"), "upgrade ignored, stream continues as HTTP");
}

static void test_busy(void)
{
    d11_http_in_reset(&H);
    size_t used;
    CHECKF(!d11_http_in_busy(&H), "idle at start");
    CHECKF(d11_http_parse(&H, "GET / HT", 8, &used) == D11_HTTP_NEED && used == 0 && d11_http_in_busy(&H),
          "partial header block: busy, nothing consumed");
    const char *full = "GET / HTTP/1.1\r\n\r\n";
    CHECKF(d11_http_parse(&H, full, strlen(full), &used) == D11_HTTP_DONE && used == strlen(full), "done");
    CHECKF(d11_http_parse(&H, "", 0, &used) == D11_HTTP_NEED && !d11_http_in_busy(&H), "idle after");
    const char *part = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na";
    CHECKF(d11_http_parse(&H, part, strlen(part), &used) == D11_HTTP_NEED && used == strlen(part) &&
              d11_http_in_busy(&H),
          "partial body: consumed, busy");
    CHECKF(d11_http_parse(&H, "bc", 2, &used) == D11_HTTP_DONE && used == 2 && H.req.body.len == 3 &&
              !memcmp(H.req.body.data, "abc", 3),
          "rest of the body completes the request");
    d11_http_in_reset(&H);
    CHECKF(d11_http_parse(&H, "X", 1, &used) == D11_HTTP_NEED, "garbage waits for a line");
    CHECKF(d11_http_parse(&H, "XYZ\r\n", 5, &used) == D11_HTTP_ERROR && H.req.err_status == 400, "then 400");
    CHECKF(d11_http_parse(&H, "GET / HTTP/1.1\r\n\r\n", 18, &used) == D11_HTTP_ERROR, "error is sticky");
}

int main(void)
{
    d11_http_in_init(&H);
    test_pipelined_splits();
    test_smuggling();
    test_limits();
    test_headers();
    test_busy();
    d11_http_in_release(&H);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
