/*
 * fuzz_http.c — libFuzzer driver for the gateway's HTTP request parser (src/gateway/http.c).
 *
 * The first input byte picks a feeding pattern (how many bytes arrive per read), the rest
 * is the byte stream of one client connection. The driver plays the connection's role:
 * it keeps the unparsed bytes in a buffer, consumes what the parser reports, and checks
 * the parser's contract on every event: *used never exceeds what was offered, a DONE
 * request is within every limit, an ERROR carries a 4xx/5xx status and stays sticky.
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_http.c \
 *       src/gateway/http.c src/core/util.c -lhttp_parser -o build/fuzz_http
 *   build/fuzz_http fuzz/corpus/http -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static d11_http_in h;
    static int inited;
    if (!inited) {
        d11_http_in_init(&h);
        inited = 1;
    }
    if (size < 1) return 0;
    size_t step = (size_t)(data[0] % 17) + 1; /* 1..17 bytes per "read" */
    if (data[0] >= 200) step = size;          /* sometimes everything at once */
    data++;
    size--;
    d11_http_in_reset(&h);
    d11_buf in;
    d11_buf_init(&in, 0);
    size_t fed = 0;
    int requests = 0;
    while (fed < size) {
        size_t take = size - fed < step ? size - fed : step;
        d11_buf_append(&in, data + fed, take);
        fed += take;
        for (;;) {
            size_t used = 0;
            int rc = d11_http_parse(&h, in.data, in.len, &used);
            if (used > in.len) abort();
            d11_buf_consume(&in, used);
            if (rc == D11_HTTP_NEED) break;
            if (rc == D11_HTTP_CONTINUE) continue;
            if (rc == D11_HTTP_ERROR) {
                if (h.req.err_status < 400 || h.req.err_status > 599 || !h.req.err_code) abort();
                size_t u2;
                if (d11_http_parse(&h, "GET / HTTP/1.1\r\n\r\n", 18, &u2) != D11_HTTP_ERROR) abort();
                d11_buf_free(&in);
                return 0;
            }
            if (rc != D11_HTTP_DONE) abort();
            if (h.req.body.len > D11_HTTP_BODY_BYTES_MAX || h.req.url_len > D11_HTTP_URL_BYTES_MAX ||
                h.req.url_len == 0 || strlen(h.req.url) != h.req.url_len)
                abort();
            if (++requests > 100000) abort();
        }
        if (in.len > D11_HTTP_HEADER_BYTES_MAX + D11_HTTP_BODY_BYTES_MAX + 64 * 1024) abort();
    }
    d11_buf_free(&in);
    return 0;
}
