/*
 * http.c — strict HTTP/1.1 request parsing (see http.h for the contract and the list of
 * request shapes rejected). Thread: the owner of the connection. No allocation except the
 * body buffer's growth up to D11_HTTP_BODY_BYTES_MAX.
 *
 * Offsets: while a header block is being scanned nothing is consumed (used = 0, apart
 * from leading empty lines), so h->scan and h->line_start stay relative to the caller's
 * unparsed bytes; the block is consumed whole once it is complete and checked.
 */
#include "http.h"

#include <string.h>

enum {
    ST_START = 0,   /* scanning a header block */
    ST_BODY_CL,     /* reading Content-Length bytes */
    ST_CHUNK_LINE,  /* expecting a chunk-size line */
    ST_CHUNK_DATA,  /* reading chunk bytes */
    ST_CHUNK_CRLF,  /* expecting the CRLF after chunk data */
    ST_TRAILER,     /* trailer lines until the empty line */
    ST_DONE,        /* a request was returned; the next call starts a new one */
    ST_ERROR,
};

enum { F_OTHER = 0, F_AUTH, F_IDEM, F_TRACE, F_STRESS, F_CL, F_TE, F_EXPECT, F_TRACESTATE, F_DEVICE };

#define LEADING_EMPTY_LINES_MAX 16

bool d11_http_ieq(const char *p, size_t n, const char *s)
{
    size_t sn = strlen(s);
    if (n != sn) return false;
    for (size_t i = 0; i < n; i++) {
        char a = p[i], b = s[i];
        if (a >= 'A' && a <= 'Z') a = (char)(a + 32);
        if (b >= 'A' && b <= 'Z') b = (char)(b + 32);
        if (a != b) return false;
    }
    return true;
}

static int set_err(d11_http_in *h, int status, const char *code, const char *msg)
{
    h->state = ST_ERROR;
    h->req.err_status = status;
    h->req.err_code = code;
    h->req.err_msg = msg;
    return D11_HTTP_ERROR;
}
#define BAD(h, msg) set_err((h), 400, "bad_request", (msg))

/* ---- http_parser callbacks: collect the target and the headers the gateway uses ---- */

static d11_hval *field_hval(d11_http_in *h, int f)
{
    switch (f) {
    case F_AUTH: return &h->req.authorization;
    case F_IDEM: return &h->req.idempotency_key;
    case F_TRACE: return &h->req.traceparent;
    case F_STRESS: return &h->req.stress;
    case F_TRACESTATE: return &h->req.tracestate;
    case F_DEVICE: return &h->req.device_id;
    default: return NULL;
    }
}

/* The current field name is complete: classify it and count it (value may be empty). */
static void begin_value(d11_http_in *h)
{
    const char *f = h->field;
    size_t n = h->field_len;
    int id = F_OTHER;
    if (n < sizeof h->field) {
        if (d11_http_ieq(f, n, "authorization")) id = F_AUTH;
        else if (d11_http_ieq(f, n, "idempotency-key")) id = F_IDEM;
        else if (d11_http_ieq(f, n, "traceparent")) id = F_TRACE;
        else if (d11_http_ieq(f, n, "x-d11-stress")) id = F_STRESS;
        else if (d11_http_ieq(f, n, "tracestate")) id = F_TRACESTATE;
        else if (d11_http_ieq(f, n, "x-device-id")) id = F_DEVICE;
        else if (d11_http_ieq(f, n, "content-length")) id = F_CL;
        else if (d11_http_ieq(f, n, "transfer-encoding")) id = F_TE;
        else if (d11_http_ieq(f, n, "expect")) id = F_EXPECT;
    }
    h->cur_field = id;
    h->in_value = true;
    d11_hval *hv = field_hval(h, id);
    if (hv) {
        if (hv->present) hv->dup = true; /* a repeated header */
        hv->present = true;
        hv->len = 0;
    } else if (id == F_CL) {
        h->n_content_length++;
    } else if (id == F_TE) {
        h->n_transfer_encoding++;
    } else if (id == F_EXPECT) {
        h->n_expect++;
    }
}

static void append_small(char *dst, size_t cap, size_t *len, bool *over, const char *p, size_t n)
{
    if (*len + n >= cap) {
        *over = true;
        return;
    }
    memcpy(dst + *len, p, n);
    *len += n;
    dst[*len] = 0;
}

static int cb_url(http_parser *p, const char *at, size_t n)
{
    d11_http_in *h = p->data;
    if (h->req.url_len + n > D11_HTTP_URL_BYTES_MAX) return 1; /* scanner checks first */
    memcpy(h->req.url + h->req.url_len, at, n);
    h->req.url_len += n;
    h->req.url[h->req.url_len] = 0;
    return 0;
}

static int cb_field(http_parser *p, const char *at, size_t n)
{
    d11_http_in *h = p->data;
    /* The library alternates field and value callbacks (an empty value still gets a
     * zero-length one), and the block is fed whole, so a name arrives in one piece. */
    if (h->in_value) {
        h->in_value = false;
        h->field_len = 0;
    }
    if (h->field_len + n < sizeof h->field) memcpy(h->field + h->field_len, at, n);
    h->field_len += n;
    return 0;
}

static int cb_value(http_parser *p, const char *at, size_t n)
{
    d11_http_in *h = p->data;
    if (!h->in_value) begin_value(h);
    d11_hval *hv = field_hval(h, h->cur_field);
    if (hv) {
        size_t len = hv->len;
        append_small(hv->v, sizeof hv->v, &len, &hv->over, at, n);
        hv->len = (uint16_t)len;
    } else if (h->cur_field == F_CL) {
        size_t len = strlen(h->content_length);
        append_small(h->content_length, sizeof h->content_length, &len, &h->cl_over, at, n);
    } else if (h->cur_field == F_TE) {
        size_t len = strlen(h->transfer_encoding);
        append_small(h->transfer_encoding, sizeof h->transfer_encoding, &len, &h->te_over, at, n);
    } else if (h->cur_field == F_EXPECT) {
        if (d11_http_ieq(at, n, "100-continue")) h->req.expect_continue = true;
    }
    return 0;
}

static int cb_headers_complete(http_parser *p)
{
    d11_http_in *h = p->data;
    if (!h->in_value && h->field_len > 0) begin_value(h); /* defensive: no value seen */
    return 1; /* skip the body: framing is done by this file, not the library */
}

static int cb_message_complete(http_parser *p)
{
    d11_http_in *h = p->data;
    h->in_value = false;
    return 0;
}

static const http_parser_settings settings = {
    .on_url = cb_url,
    .on_header_field = cb_field,
    .on_header_value = cb_value,
    .on_headers_complete = cb_headers_complete,
    .on_message_complete = cb_message_complete,
};

/* ---- lifecycle ---- */

static void req_reset(d11_http_in *h)
{
    d11_http_req *r = &h->req;
    r->method = 0;
    r->http_minor = 1;
    r->keep_alive = true;
    r->expect_continue = false;
    r->url_len = 0;
    r->url[0] = 0;
    r->authorization.present = r->authorization.over = r->authorization.dup = false;
    r->idempotency_key.present = r->idempotency_key.over = r->idempotency_key.dup = false;
    r->traceparent.present = r->traceparent.over = r->traceparent.dup = false;
    r->tracestate.present = r->tracestate.over = r->tracestate.dup = false;
    r->tracestate.len = 0;
    r->device_id.present = r->device_id.over = r->device_id.dup = false;
    r->device_id.len = 0;
    r->stress.present = r->stress.over = r->stress.dup = false;
    r->authorization.len = r->idempotency_key.len = r->traceparent.len = r->stress.len = 0;
    d11_buf_reset(&r->body);
    if (r->body.data) r->body.data[0] = 0;
    r->err_status = 0;
    r->err_code = NULL;
    r->err_msg = NULL;
    h->scan = h->line_start = 0;
    h->nlines = 0;
    h->body_left = 0;
    h->trailer_bytes = 0;
    h->trailer_lines = 0;
    h->cur_field = -1;
    h->in_value = false;
    h->field_len = 0;
    h->n_content_length = h->n_transfer_encoding = h->n_expect = 0;
    h->content_length[0] = h->transfer_encoding[0] = 0;
    h->cl_over = h->te_over = false;
}

void d11_http_in_init(d11_http_in *h)
{
    memset(h, 0, sizeof *h);
    d11_buf_init(&h->req.body, 0);
    req_reset(h);
    h->state = ST_START;
}

void d11_http_in_release(d11_http_in *h) { d11_buf_free(&h->req.body); }

void d11_http_in_reset(d11_http_in *h)
{
    req_reset(h);
    h->state = ST_START;
}

bool d11_http_in_busy(const d11_http_in *h)
{
    return (h->state == ST_START && h->scan > 0) ||
           (h->state != ST_START && h->state != ST_DONE && h->state != ST_ERROR);
}

/* ---- the strict header-block scanner ---- */

static bool tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Request line: METHOD SP target SP HTTP/1.x. Returns 0 or an error event. */
static int check_request_line(d11_http_in *h, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] >= 'A' && s[i] <= 'Z') i++;
    if (i == 0 || i > 20 || i >= n || s[i] != ' ') return BAD(h, "malformed request line");
    size_t t0 = ++i;
    while (i < n && s[i] != ' ') {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e) return BAD(h, "invalid byte in request target");
        i++;
    }
    if (i - t0 > D11_HTTP_URL_BYTES_MAX) return set_err(h, 414, "uri_too_long", "request target too long");
    if (i == t0 || i >= n) return BAD(h, "malformed request line");
    const char *v = s + i + 1;
    size_t vn = n - i - 1;
    if (vn == 8 && (!memcmp(v, "HTTP/1.1", 8) || !memcmp(v, "HTTP/1.0", 8))) return 0;
    if (vn == 8 && !memcmp(v, "HTTP/", 5) && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
        v[7] >= '0' && v[7] <= '9')
        return set_err(h, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1");
    return BAD(h, "malformed request line");
}

/* Header or trailer line: token ':' value (control bytes were rejected by the caller). */
static int check_field_line(d11_http_in *h, const char *s, size_t n)
{
    if (s[0] == ' ' || s[0] == '\t') return BAD(h, "obsolete line folding");
    size_t i = 0;
    while (i < n && tchar((unsigned char)s[i])) i++;
    if (i == 0 || i >= n || s[i] != ':') return BAD(h, "malformed header field");
    return 0;
}

/* Byte class check for header bytes: HTAB, SP..~, obs-text. CR/LF handled by callers. */
static bool field_byte_ok(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static int finish_headers(d11_http_in *h, const char *b, size_t block_len);

static int scan_block(d11_http_in *h, const char *b, size_t avail, size_t *block_len)
{
    size_t i = h->scan;
    while (i < avail) {
        unsigned char c = (unsigned char)b[i];
        if (c == '\r') {
            if (i + 1 >= avail) break;
            if (b[i + 1] != '\n') return BAD(h, "bare CR in header");
            size_t ln = i - h->line_start;
            if (ln == 0) {
                *block_len = i + 2;
                if (*block_len > D11_HTTP_HEADER_BYTES_MAX)
                    return set_err(h, 431, "headers_too_large", "header section too large");
                h->scan = i + 2;
                return D11_HTTP_DONE;
            }
            int rc = h->nlines == 0 ? check_request_line(h, b + h->line_start, ln)
                                    : check_field_line(h, b + h->line_start, ln);
            if (rc) return rc;
            h->nlines++;
            if (h->nlines - 1 > D11_HTTP_HEADERS_MAX)
                return set_err(h, 431, "headers_too_large", "too many header fields");
            i += 2;
            h->line_start = i;
            continue;
        }
        if (c == '\n') return BAD(h, "bare LF in header");
        if (!field_byte_ok(c)) return BAD(h, "control byte in header");
        if (h->nlines == 0 && i - h->line_start > D11_HTTP_URL_BYTES_MAX + 32)
            return set_err(h, 414, "uri_too_long", "request target too long");
        i++;
        if (i >= D11_HTTP_HEADER_BYTES_MAX)
            return set_err(h, 431, "headers_too_large", "header section too large");
    }
    h->scan = i;
    return D11_HTTP_NEED;
}

static void trim(d11_hval *v)
{
    size_t s = 0, e = v->len;
    while (s < e && (v->v[s] == ' ' || v->v[s] == '\t')) s++;
    while (e > s && (v->v[e - 1] == ' ' || v->v[e - 1] == '\t')) e--;
    memmove(v->v, v->v + s, e - s);
    v->len = (uint16_t)(e - s);
    v->v[v->len] = 0;
}

static size_t trim_str(char *s)
{
    size_t n = strlen(s), a = 0;
    while (a < n && (s[a] == ' ' || s[a] == '\t')) a++;
    while (n > a && (s[n - 1] == ' ' || s[n - 1] == '\t')) n--;
    memmove(s, s + a, n - a);
    s[n - a] = 0;
    return n - a;
}

/* Run the checked block through http_parser and decide the body framing. */
static int finish_headers(d11_http_in *h, const char *b, size_t block_len)
{
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
    size_t done = http_parser_execute(&h->parser, &settings, b, block_len);
    enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
    if (e != HPE_OK || done != block_len) {
        switch (e) {
        case HPE_HEADER_OVERFLOW: return set_err(h, 431, "headers_too_large", "header section too large");
        case HPE_INVALID_VERSION: return set_err(h, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1");
        case HPE_INVALID_METHOD: return BAD(h, "unknown method");
        case HPE_INVALID_URL: return BAD(h, "invalid request target");
        case HPE_UNEXPECTED_CONTENT_LENGTH: return BAD(h, "conflicting Content-Length / Transfer-Encoding");
        case HPE_INVALID_CONTENT_LENGTH: return BAD(h, "invalid Content-Length");
        case HPE_INVALID_TRANSFER_ENCODING: return BAD(h, "unsupported Transfer-Encoding");
        default: return BAD(h, "malformed request");
        }
    }
    d11_http_req *r = &h->req;
    r->method = (int)h->parser.method;
    r->http_minor = h->parser.http_minor;
    r->keep_alive = http_should_keep_alive(&h->parser) != 0;
    if (h->parser.http_major != 1 || h->parser.http_minor > 1)
        return set_err(h, 505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1");
    trim(&r->authorization);
    trim(&r->idempotency_key);
    trim(&r->traceparent);
    trim(&r->tracestate);
    if (r->tracestate.dup) r->tracestate.over = true; /* several lines: not propagated (kept simple) */
    trim(&r->stress);
    trim(&r->device_id);
    if (r->device_id.dup) r->device_id.over = true; /* ambiguous: not used (risk treats it as absent) */
    /* Repeated singleton headers are ambiguous: refuse them outright. A repeated
     * traceparent is invalid per W3C Trace Context: ignore it (start a new trace). */
    if (r->authorization.dup || r->idempotency_key.dup || r->stress.dup)
        return BAD(h, "repeated header field");
    if (r->traceparent.dup) r->traceparent.over = true;
    if (h->n_transfer_encoding > 1) return BAD(h, "repeated Transfer-Encoding");
    if (h->n_content_length > 1) return BAD(h, "repeated Content-Length");
    if (h->n_transfer_encoding && h->n_content_length)
        return BAD(h, "Content-Length with Transfer-Encoding");
    if (h->n_transfer_encoding) {
        trim_str(h->transfer_encoding);
        if (h->te_over || !d11_http_ieq(h->transfer_encoding, strlen(h->transfer_encoding), "chunked"))
            return set_err(h, 400, "bad_request", "unsupported Transfer-Encoding");
        if (r->http_minor == 0) return BAD(h, "Transfer-Encoding in an HTTP/1.0 request");
        h->state = ST_CHUNK_LINE;
    } else if (h->n_content_length) {
        size_t n = trim_str(h->content_length);
        uint64_t cl;
        if (h->cl_over || d11_parse_u64(h->content_length, n, UINT64_MAX, &cl) < 0)
            return BAD(h, "invalid Content-Length");
        if (cl > D11_HTTP_BODY_BYTES_MAX) return set_err(h, 413, "too_large", "request body too large");
        h->body_left = cl;
        h->state = cl ? ST_BODY_CL : ST_DONE;
    } else {
        h->state = ST_DONE;
    }
    if (h->n_expect == 0) r->expect_continue = false;
    if (h->state == ST_DONE) r->expect_continue = false;
    return 0;
}

/* A whole line at p[0..n) ending in CRLF? Returns the line length (without CRLF),
 * -1 when more bytes are needed, -2 on a bare CR/LF or a control byte. */
static long take_line(const char *p, size_t n, size_t max)
{
    for (size_t i = 0; i < n && i <= max; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '\r') {
            if (i + 1 >= n) return -1;
            return p[i + 1] == '\n' ? (long)i : -2;
        }
        if (c == '\n' || !field_byte_ok(c)) return -2;
    }
    return -1;
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int d11_http_parse(d11_http_in *h, const char *p, size_t n, size_t *used)
{
    size_t off = 0;
    *used = 0;
    if (h->state == ST_ERROR) return D11_HTTP_ERROR;
    if (h->state == ST_DONE) {
        req_reset(h);
        h->state = ST_START;
    }
    for (;;) {
        switch (h->state) {
        case ST_START: {
            if (h->scan == 0) { /* RFC 9112 2.2: ignore empty lines before a request */
                int k = 0;
                while (n - off >= 2 && p[off] == '\r' && p[off + 1] == '\n') {
                    off += 2;
                    if (++k > LEADING_EMPTY_LINES_MAX) {
                        *used = off;
                        return BAD(h, "too many empty lines");
                    }
                }
                if (n - off == 1 && p[off] == '\r') {
                    *used = off;
                    return D11_HTTP_NEED;
                }
            }
            size_t block_len = 0;
            int rc = scan_block(h, p + off, n - off, &block_len);
            if (rc == D11_HTTP_NEED) {
                *used = off;
                return rc;
            }
            if (rc == D11_HTTP_ERROR) {
                *used = off;
                return rc;
            }
            rc = finish_headers(h, p + off, block_len);
            off += block_len;
            *used = off;
            if (rc) return rc;
            if (h->req.expect_continue) {
                h->req.expect_continue = false; /* report once */
                return D11_HTTP_CONTINUE;
            }
            break;
        }
        case ST_BODY_CL: {
            size_t take = n - off < h->body_left ? n - off : (size_t)h->body_left;
            d11_buf_append(&h->req.body, p + off, take);
            off += take;
            h->body_left -= take;
            *used = off;
            if (h->body_left) return D11_HTTP_NEED;
            h->state = ST_DONE;
            break;
        }
        case ST_CHUNK_LINE: {
            long ln = take_line(p + off, n - off, D11_HTTP_CHUNK_LINE_BYTES_MAX);
            if (ln == -2) return BAD(h, "malformed chunk size line");
            if (ln == -1) {
                if (n - off > D11_HTTP_CHUNK_LINE_BYTES_MAX) return BAD(h, "chunk size line too long");
                return D11_HTTP_NEED;
            }
            const char *s = p + off;
            size_t i = 0;
            uint64_t size = 0;
            while (i < (size_t)ln && hexdig(s[i]) >= 0) {
                size = size * 16 + (uint64_t)hexdig(s[i]);
                if (++i > 8) return BAD(h, "chunk size too long");
            }
            if (i == 0) return BAD(h, "invalid chunk size");
            if (i < (size_t)ln && s[i] != ';') return BAD(h, "invalid chunk size");
            if (size > D11_HTTP_BODY_BYTES_MAX - h->req.body.len)
                return set_err(h, 413, "too_large", "request body too large");
            off += (size_t)ln + 2;
            *used = off;
            h->body_left = size;
            h->state = size ? ST_CHUNK_DATA : ST_TRAILER;
            break;
        }
        case ST_CHUNK_DATA: {
            size_t take = n - off < h->body_left ? n - off : (size_t)h->body_left;
            d11_buf_append(&h->req.body, p + off, take);
            off += take;
            h->body_left -= take;
            *used = off;
            if (h->body_left) return D11_HTTP_NEED;
            h->state = ST_CHUNK_CRLF;
            break;
        }
        case ST_CHUNK_CRLF:
            if (n - off < 2) {
                if (n - off == 1 && p[off] != '\r') return BAD(h, "chunk data not followed by CRLF");
                return D11_HTTP_NEED;
            }
            if (p[off] != '\r' || p[off + 1] != '\n') return BAD(h, "chunk data not followed by CRLF");
            off += 2;
            *used = off;
            h->state = ST_CHUNK_LINE;
            break;
        case ST_TRAILER: {
            long ln = take_line(p + off, n - off, D11_HTTP_HEADER_BYTES_MAX);
            if (ln == -2) return BAD(h, "malformed trailer");
            if (ln == -1) {
                if (h->trailer_bytes + (n - off) > D11_HTTP_HEADER_BYTES_MAX)
                    return set_err(h, 431, "headers_too_large", "trailer section too large");
                return D11_HTTP_NEED;
            }
            h->trailer_bytes += (size_t)ln + 2;
            if (h->trailer_bytes > D11_HTTP_HEADER_BYTES_MAX)
                return set_err(h, 431, "headers_too_large", "trailer section too large");
            if (ln > 0) {
                int rc = check_field_line(h, p + off, (size_t)ln);
                if (rc) return rc;
                if (++h->trailer_lines > D11_HTTP_HEADERS_MAX)
                    return set_err(h, 431, "headers_too_large", "too many trailer fields");
            }
            off += (size_t)ln + 2;
            *used = off;
            if (ln == 0) h->state = ST_DONE;
            break;
        }
        case ST_DONE:
            *used = off;
            return D11_HTTP_DONE;
        default:
            return D11_HTTP_ERROR;
        }
    }
}
