/*
 * http.h — HTTP/1.1 request parsing for the gateway: bytes in, one request at a time out.
 *
 * A d11_http_in belongs to one client connection (one thread). The caller keeps the
 * unparsed bytes in its own buffer and calls d11_http_parse on them repeatedly; the parser
 * consumes what it can and reports one event per call:
 *
 *   D11_HTTP_NEED      all usable bytes taken (*used of them); feed more when they come.
 *   D11_HTTP_CONTINUE  headers of a request with "Expect: 100-continue" are in and its
 *                      body is still to come; the caller may send "100 Continue".
 *   D11_HTTP_DONE      a whole request is in h->req (valid until the next call);
 *                      *used bytes belong to it. Call again for a pipelined next one.
 *   D11_HTTP_ERROR     the stream is bad; h->req.err_status/err_code/err_msg say how to
 *                      answer. The connection must be closed after that answer: once
 *                      framing is in doubt, nothing after it can be trusted (smuggling).
 *
 * Layering. The header block (request line + header fields + empty line) is first found
 * and checked by our own strict scanner: CRLF line ends only (a bare CR or LF is 400),
 * no obs-fold, field names are RFC 9110 tokens (so "Content-Length : 5" is 400), no
 * control bytes, HTTP/1.0 or HTTP/1.1 only, at most D11_HTTP_HEADER_BYTES_MAX bytes and
 * D11_HTTP_HEADERS_MAX fields (431), a target of at most D11_HTTP_URL_BYTES_MAX (414).
 * The complete block is then run through libhttp_parser (2.9.4) for method, target,
 * version, Content-Length syntax and keep-alive semantics, with the body skipped: body
 * framing is ours, because the library tolerates some smuggling shapes:
 *   - Content-Length together with Transfer-Encoding            -> 400
 *   - Content-Length twice, even with the same value, or invalid -> 400
 *   - Transfer-Encoding other than exactly one "chunked"         -> 400
 *     (the library accepts "gzip, chunked" and repeated headers)
 *   - Transfer-Encoding in an HTTP/1.0 request                   -> 400
 *   - chunk sizes: 1-8 hex digits, nothing else before ';' or CRLF ("1 ", " 1", "0x1",
 *     "-1", bare LF line ends are all 400); chunk data must end in CRLF
 *   - a body over D11_HTTP_BODY_BYTES_MAX (declared or chunked)  -> 413
 * Trailer fields after the last chunk are checked like header lines and ignored.
 *
 * Memory: the request struct is embedded (fixed arrays for the few headers the gateway
 * uses); only the body buffer grows, to at most the body limit, and keeps its capacity
 * for the next request.
 */
#ifndef D11_GW_HTTP_H
#define D11_GW_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/util.h"

enum { D11_HTTP_ERROR = -1, D11_HTTP_NEED = 0, D11_HTTP_DONE = 1, D11_HTTP_CONTINUE = 2 };

/* A header value the gateway uses, copied out of the stream; `over` when it was longer. */
typedef struct d11_hval {
    bool     present;
    bool     over;  /* longer than v: the value is unusable */
    bool     dup;   /* the header appeared more than once */
    uint16_t len;
    char     v[D11_IDEM_KEY_BYTES_MAX + 64];
} d11_hval;

typedef struct d11_http_req {
    int      method;      /* enum http_method */
    int      http_minor;  /* 0 or 1 */
    bool     keep_alive;  /* false: answer with Connection: close, then close */
    bool     expect_continue;
    size_t   url_len;
    char     url[D11_HTTP_URL_BYTES_MAX + 1];
    d11_hval authorization, idempotency_key, traceparent, stress;
    d11_hval tracestate;  /* W3C; propagated when it fits and comes on one line */
    d11_hval device_id;   /* X-Device-Id: risk velocity per device (risk.h); over/dup = unusable */
    d11_buf  body;        /* NUL-terminated; capacity reused across requests */
    /* set with D11_HTTP_ERROR */
    int         err_status;
    const char *err_code;
    const char *err_msg;
} d11_http_req;

typedef struct d11_http_in {
    http_parser parser;
    int      state;       /* internal */
    size_t   scan;        /* header block bytes already checked */
    size_t   line_start;  /* start of the line being checked, within the block */
    int      nlines;      /* lines of the block checked so far */
    uint64_t body_left;   /* Content-Length bytes or current chunk bytes still due */
    size_t   trailer_bytes;
    int      trailer_lines;
    /* header callbacks */
    int      cur_field;   /* which d11_hval / framing header the current value is for */
    bool     in_value;
    size_t   field_len;
    char     field[32];
    int      n_content_length, n_transfer_encoding, n_expect;
    char     content_length[24];
    bool     cl_over;
    char     transfer_encoding[24];
    bool     te_over;
    d11_http_req req;
} d11_http_in;

void d11_http_in_init(d11_http_in *h);
void d11_http_in_release(d11_http_in *h);
/* Forget any partial request (connection reuse). Keeps the body buffer. */
void d11_http_in_reset(d11_http_in *h);
/* True while a request is partly received (bytes taken or scanned, not yet DONE). */
bool d11_http_in_busy(const d11_http_in *h);

/* See the overview. p[0..n) are the caller's unparsed bytes; *used is set in every case. */
int d11_http_parse(d11_http_in *h, const char *p, size_t n, size_t *used);

/* Case-insensitive ASCII comparison of p[0..n) with the NUL-terminated s. */
bool d11_http_ieq(const char *p, size_t n, const char *s);

#endif
