/*
 * test_json.c — strict JSON (src/core/json.c) and the request-body validators built on it
 * (src/gateway/bodies.c): exact integers, strings and escapes, UTF-8, duplicate keys,
 * depth and token limits, the grammar holes of jsmn, and every 400/422 distinction.
 * Prints one line per failed check; last line "N passed, N failed"; exit 1 on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "gateway/bodies.h"

#include "check.h"

static d11_json J;

static int parse(const char *s) { return d11_json_parse(&J, s, strlen(s)); }
static int parse_n(const char *s, size_t n) { return d11_json_parse(&J, s, n); }

static void ok(const char *s) { CHECKF(parse(s) == 0, "should parse: %s (%s)", s, J.err); }
static void bad(const char *s) { CHECKF(parse(s) == D11_JSON_EBAD, "should be bad_json: %s", s); }

/* value of "v" as u64 with bounds */
static int u64v(const char *doc, uint64_t min, uint64_t max, uint64_t *out)
{
    if (parse(doc) != 0) return 99;
    return d11_json_u64(&J, d11_json_find(&J, 0, "v"), min, max, out);
}

static void test_integers(void)
{
    uint64_t v = 0;
    const uint64_t I63 = 9223372036854775807ULL;
    CHECKF(u64v("{\"v\":9223372036854775807}", 1, I63, &v) == 0 && v == I63, "2^63-1 exact");
    CHECKF(u64v("{\"v\":9223372036854775808}", 1, I63, &v) == D11_JSON_ERANGE, "2^63 rejected");
    CHECKF(u64v("{\"v\":18446744073709551615}", 0, UINT64_MAX, &v) == 0 && v == UINT64_MAX, "2^64-1");
    CHECKF(u64v("{\"v\":18446744073709551616}", 0, UINT64_MAX, &v) == D11_JSON_ERANGE, "2^64");
    CHECKF(u64v("{\"v\":99999999999999999999999999}", 0, UINT64_MAX, &v) == D11_JSON_ERANGE, "huge");
    CHECKF(u64v("{\"v\":1e3}", 0, 10000, &v) == D11_JSON_ETYPE, "1e3 is not an exact integer");
    CHECKF(u64v("{\"v\":1E3}", 0, 10000, &v) == D11_JSON_ETYPE, "1E3");
    CHECKF(u64v("{\"v\":1.0}", 0, 10, &v) == D11_JSON_ETYPE, "1.0");
    CHECKF(u64v("{\"v\":-1}", 0, 10, &v) == D11_JSON_ERANGE, "-1");
    CHECKF(u64v("{\"v\":-0}", 0, 10, &v) == D11_JSON_ERANGE, "-0");
    CHECKF(u64v("{\"v\":007}", 0, 10, &v) == D11_JSON_ERANGE, "007 (leading zeros -> 422)");
    CHECKF(u64v("{\"v\":00}", 0, 10, &v) == D11_JSON_ERANGE, "00");
    CHECKF(u64v("{\"v\":0}", 0, 10, &v) == 0 && v == 0, "0");
    CHECKF(u64v("{\"v\":0}", 1, 10, &v) == D11_JSON_ERANGE, "0 below min");
    CHECKF(u64v("{\"v\":11}", 1, 10, &v) == D11_JSON_ERANGE, "above max");
    CHECKF(u64v("{\"v\":\"5\"}", 1, 10, &v) == D11_JSON_ETYPE, "string is not an integer");
    CHECKF(u64v("{\"v\":true}", 1, 10, &v) == D11_JSON_ETYPE, "bool");
    CHECKF(u64v("{\"v\":null}", 1, 10, &v) == D11_JSON_EMISSING, "null counts as missing");
    CHECKF(u64v("{\"w\":1}", 1, 10, &v) == D11_JSON_EMISSING, "missing");
    CHECKF(u64v("{\"v\":[1]}", 1, 10, &v) == D11_JSON_ETYPE, "array");
}

static void test_strings(void)
{
    char out[64];
    size_t n = 0;
    CHECKF(parse("{\"v\":\"\\ud83d\\ude00\"}") == 0, "surrogate pair parses");
    CHECKF(d11_json_str(&J, 2, out, sizeof out, &n) == 0 && n == 4 && !memcmp(out, "\xF0\x9F\x98\x80", 4),
          "surrogate pair -> U+1F600");
    bad("{\"v\":\"\\ud83d\"}");
    bad("{\"v\":\"\\ude00\"}");
    bad("{\"v\":\"\\ud83d\\u0041\"}");
    bad("{\"v\":\"\\ud83dx\"}");
    bad("{\"v\":\"\\u12\"}");
    bad("{\"v\":\"\\u12G4\"}");
    bad("{\"v\":\"\\x\"}");
    bad("{\"v\":\"\\'\"}");
    CHECKF(parse("{\"v\":\"\\u00e9\\n\\t\\\"\\\\\\/\\b\\f\\r\"}") == 0, "escapes");
    CHECKF(d11_json_str(&J, 2, out, sizeof out, &n) == 0 && n == 10 &&
              !memcmp(out, "\xC3\xA9\n\t\"\\/\b\f\r", 10),
          "escapes decode");
    CHECKF(parse("{\"v\":\"a\\u0000b\"}") == 0 && d11_json_str(&J, 2, out, sizeof out, &n) == 0 && n == 3 &&
              out[1] == 0,
          "\\u0000 decodes to NUL (callers reject it where needed)");
    CHECKF(parse("{\"v\":\"abcdef\"}") == 0 && d11_json_str(&J, 2, out, 3, &n) == D11_JSON_ERANGE,
          "string over capacity");
    CHECKF(parse("{\"v\":1}") == 0 && d11_json_str(&J, 2, out, sizeof out, &n) == D11_JSON_ETYPE,
          "number is not a string");
    bad("{\"v\":\"a\x01b\"}");
    bad("{\"v\":\"a\tb\"}");
    bad("{\"v\":\"a\nb\"}");
    bad("{\"v\":\"abc}");
    /* UTF-8 */
    ok("{\"v\":\"\xE2\x82\xAC \xC3\xA9 \xF0\x9F\x98\x80\"}");
    bad("{\"v\":\"\xFF\"}");
    bad("{\"v\":\"\xC0\xAF\"}");         /* overlong '/' */
    bad("{\"v\":\"\xE0\x80\xAF\"}");     /* overlong */
    bad("{\"v\":\"\xED\xA0\x80\"}");     /* UTF-16 surrogate in UTF-8 */
    bad("{\"v\":\"\xE2\x82\"}");         /* truncated */
    bad("{\"v\":\"\xF4\x90\x80\x80\"}"); /* > U+10FFFF */
    bad("{\"v\":\"\x80\"}");             /* lone continuation */
    bad("{\"\xFF\":1}");                 /* in a key */
    CHECKF(d11_utf8_valid("\xF4\x8F\xBF\xBF", 4), "U+10FFFF valid");
    CHECKF(!d11_utf8_valid("\xF8\x88\x80\x80\x80", 5), "5-byte form invalid");
}

static void test_structure(void)
{
    ok("{}");
    ok(" \t\r\n{ \"a\" : 1 , \"b\" : [ 1 , 2 , { } ] } \n");
    ok("{\"a\":true,\"b\":false,\"c\":null,\"d\":-1.5e-3,\"e\":0.25,\"f\":1E+2}");
    bad("");
    bad("   ");
    bad("[]");
    bad("\"s\"");
    bad("1");
    bad("null");
    bad("{\"a\":1,}");
    bad("{,\"a\":1}");
    bad("{\"a\" 1}");
    bad("{\"a\":1 \"b\":2}");
    bad("{\"a\":[1 2]}");
    bad("{\"a\":[1,]}");
    bad("{\"a\":[,1]}");
    bad("{\"a\"::1}");
    bad("{\"a\":1:2}");
    bad("{\"a\":\"b\":\"c\"}");
    bad("{\"a\"}");
    bad("{1:2}");
    bad("{\"a\":tru}");
    bad("{\"a\":nul}");
    bad("{\"a\":truex}");
    bad("{\"a\":-}");
    bad("{\"a\":1.}");
    bad("{\"a\":.5}");
    bad("{\"a\":1e}");
    bad("{\"a\":+1}");
    bad("{\"a\":0x10}");
    bad("{\"a\":1}x");
    bad("{\"a\":1}{}");
    bad("{\"a\":1}}");
    bad("{\"a\":1]");
    bad("{\"a\":[}");
    bad("{\"a\":{}");
    bad("{'a':1}");
    CHECKF(parse_n("{\"a\":1}\0", 8) == D11_JSON_EBAD, "NUL after the document");
    CHECKF(parse_n("{\"a\":\"x\0y\"}", 11) == D11_JSON_EBAD, "NUL inside a string");
    ok("{\"a\":007}"); /* tolerated as a token; rejected by d11_json_u64 */
}

static void test_duplicates(void)
{
    bad("{\"a\":1,\"a\":2}");
    bad("{\"a\":1,\"b\":2,\"a\":3}");
    bad("{\"a\":1,\"\\u0061\":2}");
    bad("{\"\\u00e9\":1,\"\xC3\xA9\":2}");
    bad("{\"x\":{\"k\":1,\"k\":1}}");
    bad("{\"x\":[{\"k\":1,\"k\":1}]}");
    ok("{\"a\":{\"a\":1},\"b\":{\"a\":2}}");
    ok("{\"ab\":1,\"a\":2,\"b\":3}");
}

static void test_limits(void)
{
    char buf[8192];
    /* depth: the top-level object is depth 1 */
    for (int d = 1; d <= D11_JSON_DEPTH_MAX + 1; d++) {
        size_t n = 0;
        for (int i = 0; i < d; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, i ? "\"a\":{" : "{");
        for (int i = 0; i < d; i++) buf[n++] = '}';
        buf[n] = 0;
        if (d <= D11_JSON_DEPTH_MAX) CHECKF(parse(buf) == 0, "depth %d ok (%s)", d, J.err);
        else CHECKF(parse(buf) == D11_JSON_EBAD, "depth %d rejected", d);
    }
    size_t n = (size_t)snprintf(buf, sizeof buf, "{\"a\":");
    for (int i = 0; i < D11_JSON_DEPTH_MAX; i++) buf[n++] = '[';
    for (int i = 0; i < D11_JSON_DEPTH_MAX; i++) buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = 0;
    CHECKF(parse(buf) == D11_JSON_EBAD, "arrays count as depth");
    /* tokens: an object of k keys has 1 + 2k tokens */
    int kmax = (D11_JSON_TOKENS_MAX - 1) / 2;
    for (int k = kmax; k <= kmax + 1; k++) {
        n = 0;
        buf[n++] = '{';
        for (int i = 0; i < k; i++) n += (size_t)snprintf(buf + n, sizeof buf - n, "%s\"k%d\":1", i ? "," : "", i);
        buf[n++] = '}';
        buf[n] = 0;
        if (k == kmax) CHECKF(parse(buf) == 0, "%d tokens ok", 1 + 2 * k);
        else CHECKF(parse(buf) == D11_JSON_EBAD && strstr(J.err, "too many"), "token overflow -> bad_json");
    }
}

static void test_access(void)
{
    CHECKF(parse("{\"a\":[10,20,{\"x\":\"y\"}],\"b\":2}") == 0, "access doc");
    int a = d11_json_find(&J, 0, "a");
    CHECKF(a > 0 && J.tok[a].type == D11_JT_ARRAY && J.tok[a].size == 3, "find array");
    uint64_t v;
    CHECKF(d11_json_u64(&J, d11_json_elem(&J, a, 1), 0, 100, &v) == 0 && v == 20, "elem 1");
    int o = d11_json_elem(&J, a, 2);
    CHECKF(d11_json_str_eq(&J, d11_json_find(&J, o, "x"), "y", 1), "nested string");
    CHECKF(d11_json_u64(&J, d11_json_find(&J, 0, "b"), 0, 100, &v) == 0 && v == 2, "skip subtree");
    CHECKF(d11_json_elem(&J, a, 3) == -1 && d11_json_find(&J, a, "x") == -1, "bounds");
    bool bv;
    CHECKF(parse("{\"t\":true,\"f\":false}") == 0 && d11_json_bool(&J, 2, &bv) == 0 && bv &&
              d11_json_bool(&J, 4, &bv) == 0 && !bv,
          "bools");
}

/* ---- bodies ---- */

static char scratch[D11_HTTP_BODY_BYTES_MAX];

static int order(const char *s, d11_msg_order_create *m, d11_gw_err *e)
{
    d11_scratch sc = {scratch, sizeof scratch, 0};
    memset(e, 0, sizeof *e);
    return d11_body_order(&J, s, strlen(s), &sc, m, e);
}

static void expect_order(const char *s, int status, const char *field)
{
    d11_msg_order_create m;
    d11_gw_err e;
    int rc = order(s, &m, &e);
    CHECKF(rc == -1 && e.status == status && (!field || strstr(e.msg, field)),
          "order %s -> %d naming %s (got %d %s)", s, status, field ? field : "-", rc ? e.status : 0, e.msg);
}

static void test_bodies(void)
{
    d11_msg_order_create m;
    d11_gw_err e;
    CHECKF(order("{\"user_id\":42,\"items\":[{\"sku\":\"SKU-1\",\"quantity\":1},{\"sku\":\"b.2_x\",\"quantity\":1000}],"
                "\"extra\":{\"ignored\":[1,2]}}",
                &m, &e) == 0 &&
              m.user_id == 42 && m.nitems == 2 && m.items[1].qty == 1000 && m.items[0].sku.n == 5,
          "valid order (%s)", e.msg);
    CHECKF(order("{\"user_id\":9223372036854775807,\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", &m, &e) == 0 &&
              m.user_id == 9223372036854775807ULL,
          "max user id");
    expect_order("{\"user_id\":9223372036854775808,\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 422, "user_id");
    expect_order("{\"user_id\":0,\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 422, "user_id");
    expect_order("{\"user_id\":\"42\",\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 422, "user_id");
    expect_order("{\"user_id\":4.2e1,\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 422, "user_id");
    expect_order("{\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 422, "user_id");
    expect_order("{\"user_id\":1}", 422, "items");
    expect_order("{\"user_id\":1,\"items\":{}}", 422, "items");
    expect_order("{\"user_id\":1,\"items\":[]}", 422, "items");
    expect_order("{\"user_id\":1,\"items\":[1]}", 422, "items[0]");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"A\",\"quantity\":0}]}", 422, "items[0].quantity");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"A\",\"quantity\":1001}]}", 422, "items[0].quantity");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"A\"}]}", 422, "items[0].quantity");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"A B\",\"quantity\":1}]}", 422, "items[0].sku");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"\",\"quantity\":1}]}", 422, "items[0].sku");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"A\",\"quantity\":1}]}", 422,
                 "items[1].sku");
    expect_order("{\"user_id\":1,\"items\":[{\"sku\":\"\\u0041\",\"quantity\":1},{\"sku\":\"A\",\"quantity\":1}]}",
                 422, "items[1].sku");
    char big[2048];
    size_t n = (size_t)snprintf(big, sizeof big, "{\"user_id\":1,\"items\":[");
    for (int i = 0; i < 17; i++) n += (size_t)snprintf(big + n, sizeof big - n, "%s{\"sku\":\"S%d\",\"quantity\":1}", i ? "," : "", i);
    snprintf(big + n, sizeof big - n, "]}");
    expect_order(big, 422, "items");
    expect_order("{\"user_id\":1,", 400, "malformed");
    expect_order("{\"user_id\":1,\"user_id\":2,\"items\":[{\"sku\":\"A\",\"quantity\":1}]}", 400, "duplicate");

    d11_msg_product p;
    d11_scratch sc = {scratch, sizeof scratch, 0};
    const char *prod = "{\"sku\":\"SKU-1\",\"title\":\"Caf\\u00e9\",\"price_cents\":1999,\"stock\":0,\"category\":\"\"}";
    CHECKF(d11_body_product(&J, prod, strlen(prod), &sc, &p, &e) == 0 && p.title.n == 5 && p.category.n == 0 &&
              p.stock == 0,
          "product, empty category accepted (%s)", e.msg);
    const char *nocat = "{\"sku\":\"SKU-1\",\"title\":\"x\",\"price_cents\":1999,\"stock\":0}";
    sc.used = 0;
    CHECKF(d11_body_product(&J, nocat, strlen(nocat), &sc, &p, &e) != 0 && e.status == 422 && strstr(e.msg, "category"),
          "product without category is 422 naming it (%s)", e.msg);
    const char *p2 = "{\"sku\":\"S\",\"title\":\"x\",\"price_cents\":1000000000001,\"stock\":0}";
    sc.used = 0;
    CHECKF(d11_body_product(&J, p2, strlen(p2), &sc, &p, &e) == -1 && e.status == 422 && strstr(e.msg, "price_cents"),
          "price over 10^12");
    const char *p3 = "{\"sku\":\"S\",\"title\":\"a\\u0000b\",\"price_cents\":1,\"stock\":0}";
    sc.used = 0;
    CHECKF(d11_body_product(&J, p3, strlen(p3), &sc, &p, &e) == -1 && strstr(e.msg, "title"), "NUL in title");
    uint64_t q;
    CHECKF(d11_body_restock(&J, "{\"quantity\":1000000000000}", 26, &q, &e) == 0 && q == 1000000000000ULL, "restock max");
    CHECKF(d11_body_restock(&J, "{\"quantity\":0}", 14, &q, &e) == -1 && e.status == 422, "restock 0");
    d11_str pid;
    sc.used = 0;
    CHECKF(d11_body_pay(&J, "{\"payment_id\":\"p-1\"}", 20, &sc, &pid, &e) == 0 && pid.n == 3, "pay");
    sc.used = 0;
    CHECKF(d11_body_pay(&J, "{\"payment_id\":\"\"}", 17, &sc, &pid, &e) == -1 && e.status == 422, "empty payment id");
    CHECKF(d11_body_empty_or_object(&J, "", 0, &e) == 0 && d11_body_empty_or_object(&J, " {} ", 4, &e) == 0,
          "cancel bodies");
    CHECKF(d11_body_empty_or_object(&J, "[]", 2, &e) == -1 && e.status == 400, "cancel with array");
}

int main(void)
{
    test_integers();
    test_strings();
    test_structure();
    test_duplicates();
    test_limits();
    test_access();
    test_bodies();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
