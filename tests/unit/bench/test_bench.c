/*
 * test_bench.c — unit tests of `d11 bench`'s pieces (histogram, random numbers and Zipf,
 * mix parsing, URL parsing, the HTTP response parser, the JSON scan, outcome counting)
 * and end-to-end runs of the load engine against a stub HTTP server started in this
 * process on an ephemeral 127.0.0.1 port (closed loop, pipelining, open loop with a
 * server stall to show the coordinated-omission correction, peer closes, timeouts, a
 * refused connection).
 *
 * Prints one line per failed check and, last, "N passed, N failed"; exits 1 on failure.
 * Links against the library objects (built by `make test-bins`).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench/hist.h"
#include "bench/httpc.h"
#include "bench/loadgen.h"
#include "bench/workload.h"
#include "core/util.h"

static int passed, failed;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) passed++;                                                          \
        else {                                                                       \
            failed++;                                                                \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                            \
    } while (0)

#define CHECKF(cond, fmt, ...)                                                       \
    do {                                                                             \
        if (cond) passed++;                                                          \
        else {                                                                       \
            failed++;                                                                \
            printf("FAIL %s:%d: %s (" fmt ")\n", __FILE__, __LINE__, #cond, __VA_ARGS__); \
        }                                                                            \
    } while (0)

/* ---------------------------------------------------------------- histogram */

static void test_hist_layout(void)
{
    d11_hist h;
    CHECK(d11_hist_init(&h, 1, 3600LL * 1000000, 3) == 0);
    CHECK(h.sub_bucket_count == 2048);
    CHECK(h.sub_bucket_half_count == 1024);
    CHECK(h.unit_magnitude == 0);
    CHECK(d11_hist_index(&h, h.highest) < h.counts_len);
    /* exact below the first bucket's end; then relative width <= 1/1024 */
    int bad_exact = 0, bad_rel = 0, bad_round = 0, bad_mono = 0;
    int32_t prev = -1;
    for (int64_t v = 0; v < 5000000; v += (v < 10000 ? 1 : 97)) {
        int64_t lo = d11_hist_lowest_equivalent(&h, v), hi = d11_hist_highest_equivalent(&h, v);
        if (v < 2048 && (lo != v || hi != v)) bad_exact++;
        if (!(lo <= v && v <= hi) || (double)(hi - lo + 1) > (double)v / 1000.0 + 1) bad_rel++;
        int32_t i = d11_hist_index(&h, v);
        if (d11_hist_value_at_index(&h, i) != lo) bad_round++;
        if (i < prev) bad_mono++;
        prev = i;
    }
    CHECKF(bad_exact == 0, "%d", bad_exact);
    CHECKF(bad_rel == 0, "%d", bad_rel);
    CHECKF(bad_round == 0, "%d", bad_round);
    CHECKF(bad_mono == 0, "%d", bad_mono);
    /* large values too */
    for (int64_t v = 1000000; v <= h.highest; v = v * 3 + 7) {
        int64_t lo = d11_hist_lowest_equivalent(&h, v), hi = d11_hist_highest_equivalent(&h, v);
        CHECK(lo <= v && v <= hi && (double)(hi - lo) <= (double)v / 1000.0);
    }
    d11_hist_release(&h);

    CHECK(d11_hist_init(&h, 0, 100, 3) == -EINVAL);
    CHECK(d11_hist_init(&h, 10, 15, 3) == -EINVAL);
    CHECK(d11_hist_init(&h, 1, 100, 0) == -EINVAL);
    CHECK(d11_hist_init(&h, 1, 100, 6) == -EINVAL);
    /* other precisions and a unit above 1 */
    for (int d = 1; d <= 5; d++) {
        CHECK(d11_hist_init(&h, 1000, 60LL * 1000000000, d) == 0);
        int64_t v = 123456789;
        d11_hist_record(&h, v);
        int64_t p = d11_hist_percentile(&h, 50);
        CHECKF(p >= v - v / 5 && p <= v, "digits %d p50 %lld", d, (long long)p);
        d11_hist_release(&h);
    }
}

static void test_hist_percentiles(void)
{
    d11_hist h, a, b;
    d11_hist_init(&h, 1, 3600LL * 1000000, 3);
    d11_hist_init(&a, 1, 3600LL * 1000000, 3);
    d11_hist_init(&b, 1, 3600LL * 1000000, 3);
    CHECK(d11_hist_percentile(&h, 99) == 0);
    for (int64_t v = 1; v <= 100000; v++) {
        d11_hist_record(&h, v);
        d11_hist_record(v % 2 ? &a : &b, v);
    }
    static const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < 4; i++) {
        int64_t want = (int64_t)(ps[i] * 1000), got = d11_hist_percentile(&h, ps[i]);
        CHECKF(got >= want && (double)got <= (double)want * 1.001 + 1, "p%g = %lld", ps[i], (long long)got);
    }
    CHECK(d11_hist_percentile(&h, 100) == 100000);
    CHECK(h.max == 100000 && h.min == 1 && h.total == 100000);
    CHECK(fabs(d11_hist_mean(&h) - 50000.5) < 0.01);
    /* merging halves gives the same answers */
    CHECK(d11_hist_merge(&a, &b) == 0);
    CHECK(a.total == h.total && a.max == h.max && a.min == h.min);
    for (size_t i = 0; i < 4; i++) CHECK(d11_hist_percentile(&a, ps[i]) == d11_hist_percentile(&h, ps[i]));
    /* saturation and negatives */
    d11_hist_reset(&b);
    d11_hist_record(&b, -5);
    d11_hist_record(&b, INT64_C(1) << 50);
    CHECK(b.saturated == 1 && b.max == b.highest && b.min == 0);
    d11_hist_record_n(&b, 1000, 98);
    CHECK(b.total == 100 && d11_hist_percentile(&b, 50) == 1000);
    /* layout mismatch is refused and leaves dst alone */
    d11_hist c;
    d11_hist_init(&c, 1, 1000000, 2);
    d11_hist_record(&c, 5);
    int64_t before = b.total;
    CHECK(d11_hist_merge(&b, &c) == -EINVAL);
    CHECK(b.total == before);
    d11_hist_reset(&b);
    CHECK(b.total == 0 && b.max == 0 && d11_hist_percentile(&b, 50) == 0);
    d11_hist_release(&c);
    d11_hist_release(&h);
    d11_hist_release(&a);
    d11_hist_release(&b);
}

/* ---------------------------------------------------------------- rng, zipf, mix */

static void test_rng(void)
{
    d11_rng r1, r2;
    d11_rng_seed(&r1, 42);
    d11_rng_seed(&r2, 42);
    bool same = true;
    for (int i = 0; i < 1000; i++) same &= d11_rng_next(&r1) == d11_rng_next(&r2);
    CHECK(same);
    d11_rng_seed(&r2, 43);
    CHECK(d11_rng_next(&r1) != d11_rng_next(&r2));
    int bad = 0, buckets[10] = {0};
    for (int i = 0; i < 100000; i++) {
        double u = d11_rng_unit(&r1);
        if (u < 0 || u >= 1) bad++;
        uint64_t k = d11_rng_below(&r1, 10);
        if (k >= 10) bad++;
        else buckets[k]++;
    }
    CHECK(bad == 0);
    for (int i = 0; i < 10; i++) CHECKF(abs(buckets[i] - 10000) < 600, "bucket %d = %d", i, buckets[i]);
    CHECK(d11_rng_below(&r1, 1) == 0);
}

static void test_zipf(void)
{
    d11_rng r;
    d11_rng_seed(&r, 7);
    d11_zipf z;
    CHECK(d11_zipf_init(&z, 0, 1) == -EINVAL);
    CHECK(d11_zipf_init(&z, 10, 0) == -EINVAL);
    CHECK(d11_zipf_init(&z, 10, -1) == -EINVAL);
    static const double ss[] = {0.5, 1.0, 1.2, 2.0};
    for (size_t si = 0; si < 4; si++) {
        double s = ss[si];
        enum { N = 10, DRAWS = 400000 };
        CHECK(d11_zipf_init(&z, N, s) == 0);
        int count[N + 1] = {0}, out = 0;
        for (int i = 0; i < DRAWS; i++) {
            uint64_t k = d11_zipf_next(&z, &r);
            if (k < 1 || k > N) out++;
            else count[k]++;
        }
        CHECK(out == 0);
        double norm = 0;
        for (int k = 1; k <= N; k++) norm += pow(k, -s);
        for (int k = 1; k <= N; k++) {
            double want = DRAWS * pow(k, -s) / norm;
            double sd = sqrt(want);
            CHECKF(fabs(count[k] - want) < 6 * sd + 10, "s=%g k=%d got %d want %.0f", s, k, count[k], want);
        }
    }
    CHECK(d11_zipf_init(&z, 1, 1) == 0 && d11_zipf_next(&z, &r) == 1);
    CHECK(d11_zipf_init(&z, 1000000000ULL, 1.1) == 0);
    int out = 0, ones = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t k = d11_zipf_next(&z, &r);
        if (k < 1 || k > 1000000000ULL) out++;
        ones += k == 1;
    }
    CHECK(out == 0);
    CHECK(ones > 1000); /* rank 1 is by far the most frequent */
}

static void test_mix(void)
{
    d11_workload w;
    memset(&w, 0, sizeof w);
    char err[256];
    CHECK(d11_mix_parse(&w, "read=1,order=8,pay=1,cancel=0", err, sizeof err) == 0);
    CHECK(w.weight[D11_OP_READ] == 1 && w.weight[D11_OP_ORDER] == 8 && w.weight[D11_OP_PAY] == 1 &&
          w.weight[D11_OP_CANCEL] == 0 && w.weight_total == 10);
    CHECK(d11_mix_parse(&w, "order=1", err, sizeof err) == 0 && w.weight_total == 1);
    CHECK(d11_mix_parse(&w, "cancel=2,order=3", err, sizeof err) == 0 && w.weight[D11_OP_CANCEL] == 2);
    CHECK(d11_mix_parse(&w, "", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "bogus=1", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=1,order=2", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=0", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "pay=1", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=1,", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=x", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=-1", err, sizeof err) < 0);
    CHECK(d11_mix_parse(&w, "order=2000000", err, sizeof err) < 0);

    /* picks follow the weights */
    CHECK(d11_mix_parse(&w, "read=1,order=8,pay=1", err, sizeof err) == 0);
    d11_rng r;
    d11_rng_seed(&r, 1);
    int n[D11_OP_COUNT] = {0};
    for (int i = 0; i < 100000; i++) n[d11_workload_pick_op(&w, &r)]++;
    CHECK(abs(n[D11_OP_READ] - 10000) < 700 && abs(n[D11_OP_ORDER] - 80000) < 1000 && n[D11_OP_CANCEL] == 0);

    /* users and SKUs */
    w.users = 100;
    CHECK(d11_user_dist_parse(&w, "uniform", err, sizeof err) == 0 && w.user_dist == D11_USERS_UNIFORM);
    CHECK(d11_user_dist_parse(&w, "zipf", err, sizeof err) == 0 && w.user_dist == D11_USERS_ZIPF &&
          w.zipf.s == 1.0);
    CHECK(d11_user_dist_parse(&w, "zipf:1.3", err, sizeof err) == 0 && fabs(w.zipf.s - 1.3) < 1e-12);
    CHECK(d11_user_dist_parse(&w, "zipf:0", err, sizeof err) < 0);
    CHECK(d11_user_dist_parse(&w, "zipf:", err, sizeof err) < 0);
    CHECK(d11_user_dist_parse(&w, "zipf:abc", err, sizeof err) < 0);
    CHECK(d11_user_dist_parse(&w, "zipfy", err, sizeof err) < 0);
    CHECK(d11_user_dist_parse(&w, "normal", err, sizeof err) < 0);
    int out = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t u = d11_workload_pick_user(&w, &r);
        out += u < 1 || u > 100;
    }
    CHECK(out == 0);
    w.skus = 10;
    w.hot_share = 0.9;
    int hot = 0;
    out = 0;
    for (int i = 0; i < 100000; i++) {
        uint64_t s = d11_workload_pick_sku(&w, &r);
        hot += s == 0;
        out += s >= 10;
    }
    CHECK(out == 0 && abs(hot - 90000) < 800);
    w.skus = 1;
    CHECK(d11_workload_pick_sku(&w, &r) == 0);
    snprintf(w.sku_prefix, sizeof w.sku_prefix, "SKU-");
    char name[64];
    CHECK(d11_workload_sku_name(&w, 42, name, sizeof name) == 6 && !strcmp(name, "SKU-42"));
}

/* ---------------------------------------------------------------- http pieces */

static void test_url(void)
{
    d11_url u;
    char err[256];
    CHECK(d11_url_parse("http://127.0.0.1:8080", &u, err, sizeof err) == 0);
    CHECK(u.port == 8080 && !strcmp(u.host, "127.0.0.1") && !strcmp(u.base, "") &&
          !strcmp(u.hostport, "127.0.0.1:8080") && u.addr.sin_addr.s_addr == htonl(0x7f000001));
    CHECK(d11_url_parse("http://127.0.0.1:9/api/", &u, err, sizeof err) == 0 && !strcmp(u.base, "/api"));
    CHECK(d11_url_parse("http://localhost", &u, err, sizeof err) == 0 && u.port == 80);
    CHECK(d11_url_parse("https://127.0.0.1", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("127.0.0.1:80", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://127.0.0.1:99999", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://127.0.0.1:0", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://127.0.0.1:x", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://[::1]:80", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://127.0.0.1/a?b=1", &u, err, sizeof err) < 0);
    CHECK(d11_url_parse("http://", &u, err, sizeof err) < 0);
}

static void test_write_request(void)
{
    d11_url u;
    char err[128];
    d11_url_parse("http://127.0.0.1:8080/base", &u, err, sizeof err);
    d11_buf b;
    d11_buf_init(&b, 64);
    d11_httpc_write_request(&b, "GET", &u, "/v1/x", "A: b\r\n", NULL, 0);
    CHECK(!strcmp(b.data, "GET /base/v1/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nA: b\r\n\r\n"));
    d11_buf_reset(&b);
    d11_httpc_write_request(&b, "POST", &u, "/o", NULL, "{}", 2);
    CHECK(!strcmp(b.data, "POST /base/o HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 2\r\n\r\n{}"));
    d11_buf_reset(&b);
    d11_httpc_write_request(&b, "POST", &u, "/c", NULL, NULL, 0);
    CHECK(strstr(b.data, "Content-Length: 0\r\n") != NULL);
    d11_buf_free(&b);
}

typedef struct got_resp {
    int  n;
    int  status[8];
    char body[8][64];
    bool keep[8];
    char ctype[8][64];
    int  retry[8];
} got_resp;

static int collect(void *ctx, const d11_httpc_resp *r)
{
    got_resp *g = ctx;
    if (g->n < 8) {
        g->status[g->n] = r->status;
        snprintf(g->body[g->n], sizeof g->body[0], "%s", r->body);
        g->keep[g->n] = r->keep_alive;
        snprintf(g->ctype[g->n], sizeof g->ctype[0], "%s", r->content_type);
        g->retry[g->n] = r->retry_after_s;
    }
    g->n++;
    return 0;
}

static void test_parser(void)
{
    got_resp g;
    d11_httpc_parser p;
    static const char three[] =
        "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
        "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 2\r\nRetry-After: 3\r\n\r\n{}"
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    /* all at once */
    memset(&g, 0, sizeof g);
    d11_httpc_parser_init(&p, collect, &g, 0);
    CHECK(d11_httpc_parser_feed(&p, three, sizeof three - 1) == 0);
    CHECK(g.n == 3);
    CHECK(g.status[0] == 201 && !strcmp(g.body[0], "{\"a\":1}") && g.keep[0] &&
          !strcmp(g.ctype[0], "application/json") && g.retry[0] == -1);
    CHECK(g.status[1] == 429 && !strcmp(g.body[1], "{}") && g.retry[1] == 3);
    CHECK(g.status[2] == 200 && !strcmp(g.body[2], "abcde"));
    CHECK(!d11_httpc_parser_midway(&p));
    /* byte by byte */
    memset(&g, 0, sizeof g);
    d11_httpc_parser_reset(&p);
    int rc = 0;
    for (size_t i = 0; i < sizeof three - 1 && rc == 0; i++) {
        rc = d11_httpc_parser_feed(&p, three + i, 1);
        if (i == 10) CHECK(d11_httpc_parser_midway(&p));
    }
    CHECK(rc == 0 && g.n == 3 && g.status[2] == 200 && !strcmp(g.body[2], "abcde"));
    d11_httpc_parser_release(&p);

    /* body kept up to the limit, length counted in full */
    memset(&g, 0, sizeof g);
    d11_httpc_parser_init(&p, collect, &g, 4);
    static const char big[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789";
    CHECK(d11_httpc_parser_feed(&p, big, sizeof big - 1) == 0 && g.n == 1 && !strcmp(g.body[0], "0123"));
    d11_httpc_parser_release(&p);

    /* Connection: close and HTTP/1.0 are not kept alive; body up to EOF */
    memset(&g, 0, sizeof g);
    d11_httpc_parser_init(&p, collect, &g, 0);
    static const char cl[] = "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx";
    CHECK(d11_httpc_parser_feed(&p, cl, sizeof cl - 1) == 0 && g.n == 1 && !g.keep[0]);
    d11_httpc_parser_reset(&p);
    static const char h10[] = "HTTP/1.0 200 OK\r\n\r\nuntil-eof";
    CHECK(d11_httpc_parser_feed(&p, h10, sizeof h10 - 1) == 0 && g.n == 1);
    CHECK(d11_httpc_parser_feed(&p, NULL, 0) == 0 && g.n == 2 && !strcmp(g.body[1], "until-eof") && !g.keep[1]);
    /* garbage */
    d11_httpc_parser_reset(&p);
    CHECK(d11_httpc_parser_feed(&p, "XTTP/1.1 200 OK\r\n\r\n", 19) == D11_EPROTO);
    d11_httpc_parser_reset(&p);
    CHECK(d11_httpc_parser_feed(&p, "HTTP/1.1 200 OK\r\nContent-Length: zz\r\n\r\n", 39) == D11_EPROTO);
    /* EOF in the middle of a body */
    d11_httpc_parser_reset(&p);
    static const char cut[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01";
    CHECK(d11_httpc_parser_feed(&p, cut, sizeof cut - 1) == 0 && d11_httpc_parser_midway(&p));
    CHECK(d11_httpc_parser_feed(&p, NULL, 0) == D11_EPROTO);
    d11_httpc_parser_release(&p);
}

static void test_json_find(void)
{
    char out[32];
    const char *j = "{\"error\": {\"code\" : \"out_of_stock\", \"message\": \"SKU-1: 0 left\"}}";
    CHECK(d11_json_find_str(j, strlen(j), "code", out, sizeof out) == 12 && !strcmp(out, "out_of_stock"));
    CHECK(d11_json_find_str(j, strlen(j), "message", out, sizeof out) == 13);
    CHECK(d11_json_find_str(j, strlen(j), "nothere", out, sizeof out) == -1);
    const char *k = "{\"x\":\"code\",\"code\":\"c1\"}"; /* the key, not a value equal to it */
    CHECK(d11_json_find_str(k, strlen(k), "code", out, sizeof out) == 2 && !strcmp(out, "c1"));
    const char *n = "{\"order_id\":42}";
    CHECK(d11_json_find_str(n, strlen(n), "order_id", out, sizeof out) == -1);
    const char *e = "{\"code\":\"a\\\"b\"}";
    CHECK(d11_json_find_str(e, strlen(e), "code", out, sizeof out) == -1);
    const char *l = "{\"code\":\"0123456789012345678901234567890123456789\"}";
    CHECK(d11_json_find_str(l, strlen(l), "code", out, sizeof out) == -1);
    const char *t = "{\"code\":\"unterminated";
    CHECK(d11_json_find_str(t, strlen(t), "code", out, sizeof out) == -1);
    const char *s = "{\"xcode\":\"no\",\"code\":\"yes\"}";
    CHECK(d11_json_find_str(s, strlen(s), "code", out, sizeof out) == 3 && !strcmp(out, "yes"));
}

static void test_outcomes(void)
{
    CHECK(d11_bench_classify(201, "") == D11_CLS_OK);
    CHECK(d11_bench_classify(200, "") == D11_CLS_OK);
    CHECK(d11_bench_classify(409, "out_of_stock") == D11_CLS_REJECT);
    CHECK(d11_bench_classify(409, "not_payable") == D11_CLS_REJECT);
    CHECK(d11_bench_classify(409, "not_cancellable") == D11_CLS_REJECT);
    CHECK(d11_bench_classify(409, "idempotency_mismatch") == D11_CLS_ERROR);
    CHECK(d11_bench_classify(403, "risk_rejected") == D11_CLS_REJECT);
    CHECK(d11_bench_classify(403, "forbidden") == D11_CLS_ERROR);
    CHECK(d11_bench_classify(429, "rate_limited") == D11_CLS_ERROR);
    CHECK(d11_bench_classify(503, "unavailable") == D11_CLS_ERROR);
    CHECK(d11_bench_classify(404, "unknown_sku") == D11_CLS_ERROR);

    static d11_bench_counts a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    d11_bench_count_outcome(&a, 201, "", 5);
    d11_bench_count_outcome(&a, 409, "out_of_stock", 2);
    d11_bench_count_outcome(&a, 201, "", 1);
    CHECK(a.n_outcomes == 2 && a.outcome[0].count == 6 && a.outcome[1].cls == D11_CLS_REJECT);
    d11_bench_count_outcome(&b, 0, "timeout", 3);
    d11_bench_count_outcome(&b, 201, "", 4);
    b.sent = 7;
    d11_bench_counts_merge(&a, &b);
    CHECK(a.n_outcomes == 3 && a.outcome[0].count == 10 && a.outcome[2].count == 3 &&
          a.outcome[2].cls == D11_CLS_ERROR && a.sent == 7);
    for (int i = 0; i < D11_BENCH_OUTCOMES_MAX + 5; i++) d11_bench_count_outcome(&a, 500 + i, "x", 1);
    CHECK(a.n_outcomes == D11_BENCH_OUTCOMES_MAX && a.outcome_overflow == 8);
}

/* ---------------------------------------------------------------- stub server */

/*
 * A tiny HTTP/1.1 server on 127.0.0.1:<ephemeral>, one thread, poll(2). It answers:
 *   POST /v1/orders               201 {"order_id":"o-N",...}  (checks Idempotency-Key uniqueness)
 *   POST /v1/orders/o-N/pay       200 when o-N was issued, else 404 unknown
 *   POST /v1/orders/ID/cancel     409 not_cancellable
 *   GET  /v1/products/...         200
 * with knobs: close after every answer; stall the whole server once for stall_ms at
 * request number stall_at; never answer request number drop_at.
 */
typedef struct stub {
    int          lfd;
    uint16_t     port;
    pthread_t    th;
    atomic_bool  quit;
    bool         close_each;
    int          stall_at, stall_ms;
    int          drop_at;
    /* counters (read after stop) */
    int          requests, orders, pays_ok, pays_bad, cancels, reads, dup_keys, conns;
    uint64_t     keys[1 << 16];
    bool         key_used[1 << 16];
} stub;

typedef struct sclient {
    int     fd;
    d11_buf in, out;
    bool    closing;
} sclient;

static void stub_answer(stub *s, sclient *c, const char *req, size_t hdr_len, const char *body, size_t blen)
{
    (void)body;
    (void)blen;
    int n = ++s->requests;
    if (n == s->stall_at) usleep((useconds_t)s->stall_ms * 1000);
    if (n == s->drop_at) return;
    char line[256];
    size_t ll = strcspn(req, "\r\n");
    snprintf(line, sizeof line, "%.*s", (int)(ll < 255 ? ll : 255), req);
    int status = 404;
    char rb[256] = "{\"error\":{\"code\":\"not_found\",\"message\":\"-\"}}";
    unsigned oid;
    if (!strncmp(line, "POST /v1/orders HTTP", 20)) {
        const char *k = strcasestr(req, "\r\nIdempotency-Key: ");
        if (k && k < req + hdr_len) {
            k += 19;
            size_t kl = strcspn(k, "\r\n");
            uint64_t h = d11_hash64(k, kl, 0);
            size_t slot = h & ((1 << 16) - 1);
            while (s->key_used[slot] && s->keys[slot] != h) slot = (slot + 1) & ((1 << 16) - 1);
            if (s->key_used[slot]) s->dup_keys++;
            s->key_used[slot] = true;
            s->keys[slot] = h;
        } else {
            s->dup_keys++;
        }
        s->orders++;
        status = 201;
        snprintf(rb, sizeof rb, "{\"order_id\":\"o-%d\",\"status\":\"pending_payment\"}", s->orders);
    } else if (strstr(line, "/pay HTTP") && sscanf(line, "POST /v1/orders/o-%u/pay HTTP", &oid) == 1) {
        if (oid >= 1 && (int)oid <= s->orders) {
            s->pays_ok++;
            status = 200;
            snprintf(rb, sizeof rb, "{\"order_id\":\"o-%u\",\"status\":\"paid\"}", oid);
        } else {
            s->pays_bad++;
        }
    } else if (!strncmp(line, "POST /v1/orders/", 16) && strstr(line, "/cancel HTTP")) {
        s->cancels++;
        status = 409;
        snprintf(rb, sizeof rb, "{\"error\":{\"code\":\"not_cancellable\",\"message\":\"-\"}}");
    } else if (!strncmp(line, "GET /v1/products/", 17)) {
        s->reads++;
        status = 200;
        snprintf(rb, sizeof rb, "{\"sku\":\"x\"}");
    }
    d11_buf_printf(&c->out, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
                   status, strlen(rb), s->close_each ? "Connection: close\r\n" : "", rb);
    if (s->close_each) c->closing = true;
}

static void *stub_main(void *arg)
{
    stub *s = arg;
    enum { MAXC = 128 };
    sclient cl[MAXC];
    int ncl = 0;
    while (!atomic_load(&s->quit)) {
        struct pollfd pf[MAXC + 1];
        pf[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (int i = 0; i < ncl; i++)
            pf[i + 1] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN | (cl[i].out.len ? POLLOUT : 0)};
        int polled = ncl;
        if (poll(pf, (nfds_t)ncl + 1, 20) <= 0) continue;
        if ((pf[0].revents & POLLIN) && ncl < MAXC) {
            int fd = accept(s->lfd, NULL, NULL);
            if (fd >= 0) {
                d11_set_nonblock(fd);
                cl[ncl].fd = fd;
                cl[ncl].closing = false;
                d11_buf_init(&cl[ncl].in, 4096);
                d11_buf_init(&cl[ncl].out, 4096);
                ncl++;
                s->conns++;
            }
        }
        for (int i = 0; i < ncl; i++) {
            sclient *c = &cl[i];
            bool dead = false;
            if (i < polled && pf[i + 1].fd == c->fd && (pf[i + 1].revents & (POLLIN | POLLHUP | POLLERR))) {
                char buf[16384];
                ssize_t r = read(c->fd, buf, sizeof buf);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) dead = true;
                else if (r > 0) d11_buf_append(&c->in, buf, (size_t)r);
            }
            /* answer every whole request buffered (pipelining) */
            while (!dead && !c->closing && c->in.len) {
                char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
                if (!end) break;
                size_t hl = (size_t)(end - c->in.data) + 4;
                size_t blen = 0;
                const char *cl_h = strcasestr(c->in.data, "\r\nContent-Length: ");
                if (cl_h && cl_h < end) blen = strtoul(cl_h + 18, NULL, 10);
                if (c->in.len < hl + blen) break;
                stub_answer(s, c, c->in.data, hl, c->in.data + hl, blen);
                d11_buf_consume(&c->in, hl + blen);
            }
            if (!dead && c->out.len) {
                ssize_t w = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
                if (w > 0) d11_buf_consume(&c->out, (size_t)w);
                else if (w < 0 && errno != EAGAIN) dead = true;
            }
            if (!dead && c->closing && c->out.len == 0) dead = true;
            if (dead) {
                close(c->fd);
                d11_buf_free(&c->in);
                d11_buf_free(&c->out);
                cl[i] = cl[--ncl];
                pf[i + 1] = pf[ncl + 1]; /* keep poll results aligned with the moved client */
                if (ncl < polled) polled = ncl;
                i--;
            }
        }
    }
    for (int i = 0; i < ncl; i++) {
        close(cl[i].fd);
        d11_buf_free(&cl[i].in);
        d11_buf_free(&cl[i].out);
    }
    return NULL;
}

static stub *stub_start(void)
{
    stub *s = calloc(1, sizeof *s);
    s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof a) == -1 || listen(s->lfd, 512) == -1) {
        printf("FAIL stub: cannot listen: %s\n", strerror(errno));
        exit(1);
    }
    socklen_t al = sizeof a;
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    d11_set_nonblock(s->lfd);
    return s;
}

static void stub_run(stub *s) { pthread_create(&s->th, NULL, stub_main, s); }

static void stub_stop(stub *s)
{
    atomic_store(&s->quit, true);
    pthread_join(s->th, NULL);
    close(s->lfd);
    free(s);
}

static void opts_for(d11_bench_opts *o, uint16_t port, const char *mix)
{
    memset(o, 0, sizeof *o);
    char url[64], err[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", port);
    if (d11_url_parse(url, &o->url, err, sizeof err) < 0) abort();
    o->connections = 4;
    o->threads = 1;
    o->pipeline = 1;
    o->timeout_ms = 2000;
    o->drain_ms = 2000;
    o->quiet = true;
    o->seed = 99;
    o->wl.skus = 10;
    o->wl.hot_share = 0.5;
    o->wl.users = 1000;
    o->wl.quantity = 1;
    snprintf(o->wl.sku_prefix, sizeof o->wl.sku_prefix, "T-");
    snprintf(o->auth_header, sizeof o->auth_header, "Authorization: Bearer t\r\n");
    if (d11_mix_parse(&o->wl, mix, err, sizeof err) < 0) abort();
}

static int64_t outcome(const d11_bench_result *r, int status, const char *code)
{
    for (int i = 0; i < r->c.n_outcomes; i++)
        if (r->c.outcome[i].status == status && !strcmp(r->c.outcome[i].code, code)) return r->c.outcome[i].count;
    return 0;
}

static void test_engine_closed_loop(void)
{
    stub *s = stub_start();
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "read=1,order=4,pay=2,cancel=1");
    o.threads = 2;
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 0, 30, 2000, "", &r) == 0);
    CHECKF(r.c.sent == 2000 && r.c.done == 2000, "sent %lld done %lld", (long long)r.c.sent, (long long)r.c.done);
    CHECK(r.unsent == 0 && r.unfinished == 0 && r.c.cls[D11_CLS_ERROR] == 0);
    CHECK(r.lat.total == 2000 && r.svc.total == 2000);
    CHECK(r.c.op_sent[D11_OP_CANCEL] == outcome(&r, 409, "not_cancellable"));
    CHECK(r.c.cls[D11_CLS_REJECT] == r.c.op_sent[D11_OP_CANCEL]);
    CHECK(r.c.op_sent[D11_OP_PAY] > 300 && r.c.op_sent[D11_OP_READ] > 150);
    stub_stop(s);
    /* read after the server thread ended */
    d11_bench_result_release(&r);
}

static void test_engine_counts_and_keys(void)
{
    stub *s = stub_start();
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "order=2,pay=1");
    o.connections = 3;
    o.pipeline = 8; /* deep pipelining on few connections */
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 0, 30, 3000, "", &r) == 0);
    int orders = 0, pays_ok = 0, pays_bad = 0, dups = 0, reqs = 0;
    atomic_store(&s->quit, true);
    pthread_join(s->th, NULL);
    orders = s->orders;
    pays_ok = s->pays_ok;
    pays_bad = s->pays_bad;
    dups = s->dup_keys;
    reqs = s->requests;
    close(s->lfd);
    free(s);
    CHECKF(reqs == 3000 && r.c.done == 3000, "server saw %d, done %lld", reqs, (long long)r.c.done);
    CHECK(orders == r.c.op_sent[D11_OP_ORDER]);
    CHECKF(dups == 0, "%d duplicate idempotency keys", dups);
    CHECKF(pays_bad == 0 && pays_ok == r.c.op_sent[D11_OP_PAY], "pays ok %d bad %d", pays_ok, pays_bad);
    CHECK(r.c.op_ok[D11_OP_PAY] == r.c.op_sent[D11_OP_PAY]);
    d11_bench_result_release(&r);
}

static void test_engine_open_loop_stall(void)
{
    /* 1000 req/s for 1.5 s; at request 300 the server freezes for 300 ms. Requests due
     * during the freeze wait for a connection; measured from their intended time they
     * are slow (up to ~300 ms), measured from the send they look fast. */
    stub *s = stub_start();
    s->stall_at = 300;
    s->stall_ms = 300;
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "order=1");
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 1000, 1.5, 0, "", &r) == 0);
    stub_stop(s);
    CHECKF(r.c.sent >= 1200 && r.c.sent <= 1500 && r.c.done == r.c.sent, "sent %lld done %lld",
           (long long)r.c.sent, (long long)r.c.done);
    CHECK(r.c.scheduled == 1500 && r.unsent == 1500 - r.c.sent);
    int64_t lat99 = d11_hist_percentile(&r.lat, 99), svc99 = d11_hist_percentile(&r.svc, 99);
    int64_t lat90 = d11_hist_percentile(&r.lat, 90);
    CHECKF(lat99 > 200000, "p99 from intended = %lld us", (long long)lat99);
    CHECKF(lat90 > 20000, "p90 from intended = %lld us", (long long)lat90);
    CHECKF(svc99 < lat99 / 2, "service p99 %lld us vs %lld us", (long long)svc99, (long long)lat99);
    CHECK(r.rate_target == 1000 && r.elapsed_s >= 1.4 && r.elapsed_s < 4.5);
    /* about 1000/s answered */
    double rate = (double)r.c.done / r.elapsed_s;
    CHECKF(rate > 600 && rate < 1100, "rate %.0f", rate);
    d11_bench_result_release(&r);
}

static void test_engine_open_loop_budget(void)
{
    stub *s = stub_start();
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "order=1");
    o.threads = 2;
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 2000, 10, 301, "", &r) == 0);
    stub_stop(s);
    CHECKF(r.c.sent == 301 && r.c.done == 301 && r.unsent == 0, "sent %lld done %lld unsent %lld",
           (long long)r.c.sent, (long long)r.c.done, (long long)r.unsent);
    CHECKF(r.elapsed_s > 0.12 && r.elapsed_s < 3.0, "elapsed %.3f", r.elapsed_s);
    d11_bench_result_release(&r);
}

static void test_engine_peer_close(void)
{
    stub *s = stub_start();
    s->close_each = true;
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "order=1");
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 0, 30, 400, "", &r) == 0);
    int conns = s->conns;
    stub_stop(s);
    for (int i = 0; i < r.c.n_outcomes; i++)
        if (r.c.outcome[i].cls == D11_CLS_ERROR)
            printf("  peer close: %d %s x%lld\n", r.c.outcome[i].status, r.c.outcome[i].code,
                   (long long)r.c.outcome[i].count);
    CHECKF(r.c.done == 400 && r.c.cls[D11_CLS_ERROR] == 0, "done %lld errors %lld", (long long)r.c.done,
           (long long)r.c.cls[D11_CLS_ERROR]);
    CHECKF(conns >= 400 && r.c.connects >= 400, "server conns %d, client connects %lld", conns,
           (long long)r.c.connects);
    d11_bench_result_release(&r);
}

static void test_engine_timeout(void)
{
    stub *s = stub_start();
    s->drop_at = 10;
    stub_run(s);
    d11_bench_opts o;
    opts_for(&o, s->port, "order=1");
    o.connections = 2;
    o.timeout_ms = 400;
    d11_bench_result r;
    d11_bench_result_init(&r);
    CHECK(d11_bench_run(&o, 0, 30, 100, "", &r) == 0);
    stub_stop(s);
    CHECKF(outcome(&r, 0, "timeout") == 1, "timeouts %lld", (long long)outcome(&r, 0, "timeout"));
    CHECK(r.c.cls[D11_CLS_ERROR] == 1 && r.c.done == 99 && r.c.sent == 100);
    CHECK(fabs(d11_bench_error_ratio(&r) - 0.01) < 1e-9);
    d11_bench_result_release(&r);
}

static void test_engine_refused(void)
{
    /* a port nobody listens on: bind one, learn its number, close it */
    stub *s = stub_start();
    uint16_t port = s->port;
    close(s->lfd);
    free(s);
    d11_bench_opts o;
    opts_for(&o, port, "order=1");
    d11_bench_result r;
    d11_bench_result_init(&r);
    int64_t t0 = d11_mono_ms();
    CHECK(d11_bench_run(&o, 500, 0.5, 0, "", &r) == 0);
    CHECK(r.c.done == 0 && r.c.sent == 0 && r.c.connect_errors > 0);
    CHECK(r.unsent == 250 && d11_bench_error_ratio(&r) == 1.0);
    CHECK(d11_mono_ms() - t0 < 6000);
    d11_bench_result_release(&r);
}

static void test_blocking_client(void)
{
    stub *s = stub_start();
    stub_run(s);
    char url[64], err[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u", s->port);
    d11_url u;
    CHECK(d11_url_parse(url, &u, err, sizeof err) == 0);
    d11_httpc c;
    d11_httpc_init(&c, &u, 2000);
    CHECK(d11_httpc_do(&c, "POST", "/v1/orders", "Idempotency-Key: k1\r\n", "{}", 2) == 0);
    CHECK(c.status == 201 && strstr(c.body.data, "\"o-1\"") && !strcmp(c.content_type, "application/json"));
    int fd = c.fd;
    CHECK(d11_httpc_do(&c, "GET", "/v1/products/x", NULL, NULL, 0) == 0 && c.status == 200);
    CHECK(c.fd == fd); /* kept alive */
    CHECK(d11_httpc_do(&c, "GET", "/nope", NULL, NULL, 0) == 0 && c.status == 404);
    d11_httpc_release(&c);
    int conns = s->conns;
    stub_stop(s);
    CHECK(conns == 1);
    /* refused */
    d11_httpc_init(&c, &u, 500);
    CHECK(d11_httpc_do(&c, "GET", "/", NULL, NULL, 0) == -ECONNREFUSED);
    d11_httpc_release(&c);

    char tok[200];
    CHECK(d11_httpc_token_load("abc", NULL, tok, sizeof tok, err, sizeof err) == 0 && !strcmp(tok, "abc"));
    CHECK(d11_httpc_token_load(NULL, NULL, tok, sizeof tok, err, sizeof err) == 0 && tok[0] == 0);
    CHECK(d11_httpc_token_load("a b", NULL, tok, sizeof tok, err, sizeof err) < 0);
    CHECK(d11_httpc_token_load(NULL, "/nonexistent/token", tok, sizeof tok, err, sizeof err) < 0);
    char path[] = "/tmp/d11-test-token-XXXXXX";
    int tfd = mkstemp(path);
    CHECK(tfd >= 0 && write(tfd, "secret-1\n", 9) == 9);
    close(tfd);
    CHECK(d11_httpc_token_load(NULL, path, tok, sizeof tok, err, sizeof err) == 0 && !strcmp(tok, "secret-1"));
    unlink(path);
}

int main(void)
{
    test_hist_layout();
    test_hist_percentiles();
    test_rng();
    test_zipf();
    test_mix();
    test_url();
    test_write_request();
    test_parser();
    test_json_find();
    test_outcomes();
    test_blocking_client();
    test_engine_closed_loop();
    test_engine_counts_and_keys();
    test_engine_open_loop_stall();
    test_engine_open_loop_budget();
    test_engine_peer_close();
    test_engine_timeout();
    test_engine_refused();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
