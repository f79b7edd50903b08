/*
 * fuzz_json.c — libFuzzer driver for strict JSON (src/core/json.c), the request-body
 * validators (src/gateway/bodies.c) and the rules document parser (src/gateway/rules.c).
 *
 * Every input goes through all of them. Checks: a document accepted by d11_json_parse has
 * a consistent token tree (every `next` in range and increasing), its strings decode to
 * valid UTF-8, and every validated message survives the wire round trip (encode then the
 * receiver's decode, which re-checks API.md's limits).
 *
 * Build and run (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE -Isrc fuzz/fuzz_json.c \
 *       src/core/json.c src/core/util.c src/gateway/bodies.c src/gateway/rules.c src/rpc/wire.c \
 *       -lpthread -o build/fuzz_json
 *   build/fuzz_json fuzz/corpus/json -max_total_time=60
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "gateway/bodies.h"
#include "gateway/rules.h"

static d11_json J;
static char scratch[D11_HTTP_BODY_BYTES_MAX * 2 + 64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > D11_HTTP_BODY_BYTES_MAX) return 0;
    const char *s = (const char *)data;
    if (d11_json_parse(&J, s, size) == 0) {
        for (int i = 0; i < J.ntok; i++) {
            if (J.tok[i].next <= i || J.tok[i].next > J.ntok) abort();
            if (J.tok[i].type == D11_JT_STRING) {
                size_t n;
                if (d11_json_str(&J, i, scratch, sizeof scratch, &n) != 0) abort();
                if (!d11_utf8_valid(scratch, n)) abort();
            }
        }
    }
    d11_gw_err e;
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_scratch sc = {scratch, sizeof scratch, 0};
    static d11_msg_order_create m, m2;
    if (d11_body_order(&J, s, size, &sc, &m, &e) == 0) {
        d11_str key = {"k", 1};
        m.idem_key = key;
        d11_msg_order_create_enc(&b, &m);
        if (d11_msg_order_create_dec(b.data, b.len, &m2) != 0) abort();
    } else if (e.status != 400 && e.status != 422) {
        abort();
    }
    sc.used = 0;
    d11_buf_reset(&b);
    d11_msg_product p, p2;
    if (d11_body_product(&J, s, size, &sc, &p, &e) == 0) {
        d11_msg_product_enc(&b, &p);
        if (d11_msg_product_dec(b.data, b.len, &p2) != 0) abort();
    }
    sc.used = 0;
    d11_str pid;
    if (d11_body_pay(&J, s, size, &sc, &pid, &e) == 0) {
        d11_msg_order_ref r = {.order_id = 1, .payment_id = pid}, r2;
        d11_buf_reset(&b);
        d11_msg_order_ref_enc(&b, &r, true);
        if (d11_msg_order_ref_dec(b.data, b.len, &r2, true) != 0) abort();
    }
    uint64_t q;
    (void)d11_body_restock(&J, s, size, &q, &e);
    (void)d11_body_empty_or_object(&J, s, size, &e);
    static d11_rules rules, again;
    bool hv;
    char err[200];
    if (d11_rules_parse(&J, s, size, &rules, &hv, err, sizeof err) == 0) {
        d11_buf_reset(&b);
        d11_rules_render(&rules, &b);
        if (d11_rules_parse(&J, b.data, b.len, &again, &hv, err, sizeof err) != 0) abort();
        if (again.ndeny != rules.ndeny || again.max_order_qty != rules.max_order_qty) abort();
    }
    d11_buf_free(&b);
    return 0;
}
