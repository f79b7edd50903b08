/*
 * test_wire.c — unit test of src/rpc/wire.{h,c} and the framing of src/rpc/conn.{h,c}.
 *
 * What is checked:
 *   - the 52-byte frame header: field offsets (little-endian), encode -> decode, and the
 *     decoder's three answers (0 whole header, 1 need more, D11_EPROTO bad length/version);
 *   - every message codec of wire.h: encode -> decode -> equal, then the decoder rejects
 *     the payload truncated at EVERY length, with a trailing byte, and with each
 *     out-of-range value API.md forbids (the cell and center rely on the decoders to
 *     re-check the gateway);
 *   - d11_conn over a socketpair: a stream of frames written split at every byte boundary
 *     (and one byte at a time) comes out as the same frames, a maximum-size frame passes,
 *     a bad stream is refused as soon as its length field is in, EOF is reported.
 *   - the ORDER_CREATE hot path: encode and decode ns/op are printed (never asserted).
 * Generated round trips of every catalogue message (wire_msgs.def) are in
 * test_wire_msgs.c. Decoders are always given an exact-size heap copy of the payload so that a sanitizer
 * build (make test-full) catches any read past the end. Finally every file of
 * fuzz/corpus/wire/ is replayed through the libFuzzer driver fuzz/fuzz_wire.c (included
 * here), whose property checks trap on a violation; run from the repository root.
 *
 * Output: one line per failed check (file:line, expression, values), then
 * "N passed, N failed"; exit status 1 when anything failed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpc/conn.h"
#include "rpc/wire.h"

/* The libFuzzer driver, to replay its corpus with its checks (see replay_corpus). */
#include "fuzz/fuzz_wire.c"

/* ---- checks ---- */

#include "check.h"
#include "replay.h"

static bool str_eq(d11_str s, const char *p, size_t n) { return s.n == n && memcmp(s.p, p, n) == 0; }
#define CHECK_STR(got_, wp_, wn_)                                                          \
    do {                                                                                   \
        d11_str gs_ = (got_);                                                              \
        const char *wantp_ = (wp_);                                                        \
        size_t wantn_ = (wn_);                                                             \
        if (str_eq(gs_, wantp_, wantn_)) n_pass++;                                         \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK_STR(%s) failed: got '%.*s' (%zu bytes), want '%.*s' (%zu)\n", \
                   __FILE__, __LINE__, #got_, (int)gs_.n, gs_.p, gs_.n, (int)wantn_, wantp_, wantn_); \
        }                                                                                  \
    } while (0)

/* ---- generic decoder harness ---- */

/* A decoder under test, wrapping one d11_msg_*_dec with its own output struct. */
typedef int (*dec_fn)(const void *p, size_t n);

/* Run dec on an exact-size heap copy of p[0..n) (so ASan sees an over-read). */
static int run_dec(dec_fn dec, const void *p, size_t n)
{
    void *copy = malloc(n ? n : 1);
    if (!copy) abort();
    if (n) memcpy(copy, p, n);
    int rc = dec(n ? copy : NULL, n);
    free(copy);
    return rc;
}

/*
 * The payload b[0..len) must decode, and every strict prefix of it and the payload with
 * one extra byte must be refused with D11_EPROTO.
 */
static void check_truncations(const char *what, dec_fn dec, const d11_buf *b)
{
    CHECKF(run_dec(dec, b->data, b->len) == 0, "%s: full payload (%zu bytes) refused", what, b->len);
    for (size_t n = 0; n < b->len; n++) {
        int rc = run_dec(dec, b->data, n);
        CHECKF(rc == D11_EPROTO, "%s: truncated to %zu of %zu bytes -> %d", what, n, b->len, rc);
    }
    d11_buf t;
    d11_buf_init(&t, b->len + 1);
    d11_buf_append(&t, b->data, b->len);
    for (int extra = 0; extra < 2; extra++) {
        d11_wenc_u8(&t, (uint8_t)(extra ? 0xff : 0));
        int rc = run_dec(dec, t.data, t.len);
        CHECKF(rc == D11_EPROTO, "%s: %d trailing byte(s) -> %d", what, extra + 1, rc);
    }
    d11_buf_free(&t);
}

static bool inside(const void *p, size_t n, const void *base, size_t len)
{
    const char *c = p, *b = base;
    return n == 0 || (c >= b && c + n <= b + len);
}

/* ---- frame header ---- */

static void fill_hdr(d11_frame_hdr *h, uint32_t len)
{
    memset(h, 0, sizeof *h);
    h->len = len;
    h->version = D11_WIRE_VERSION;
    h->trace_flags = 0x01;
    h->type = 0xBEEF;
    h->flags = D11_WF_REPLY | D11_WF_STRESS | D11_WF_PUSH;
    h->req_id = 0x0102030405060708ULL;
    h->deadline_ms = 0xA1B2C3D4u;
    h->status = 409;
    for (int i = 0; i < 16; i++) h->trace_id[i] = (uint8_t)(0x10 + i);
    for (int i = 0; i < 8; i++) h->span_id[i] = (uint8_t)(0xE0 + i);
}

static void test_frame_hdr(void)
{
    d11_frame_hdr h, g;
    uint8_t out[D11_FRAME_HDR_BYTES];
    fill_hdr(&h, 1234);
    h.version = 77; /* the encoder always writes D11_WIRE_VERSION */
    memset(out, 0xAA, sizeof out);
    d11_frame_hdr_encode(&h, out);
    /* layout of wire.h, little-endian */
    CHECK_EQ(out[0], 1234 & 0xff);
    CHECK_EQ(out[1], 1234 >> 8);
    CHECK_EQ(out[2], 0);
    CHECK_EQ(out[3], 0);
    CHECK_EQ(out[4], D11_WIRE_VERSION);
    CHECK_EQ(out[5], 0x01);
    CHECK_EQ(out[6], 0xEF);
    CHECK_EQ(out[7], 0xBE);
    CHECK_EQ(out[8], 7);
    CHECK_EQ(out[9], 0);
    CHECK_EQ(out[10], 0);
    CHECK_EQ(out[11], 0);
    CHECK_EQ(out[12], 0x08);
    CHECK_EQ(out[19], 0x01);
    CHECK_EQ(out[20], 0xD4);
    CHECK_EQ(out[23], 0xA1);
    CHECK_EQ(out[24], 409 & 0xff);
    CHECK_EQ(out[25], 409 >> 8);
    CHECK_EQ(out[28], 0x10);
    CHECK_EQ(out[43], 0x1F);
    CHECK_EQ(out[44], 0xE0);
    CHECK_EQ(out[51], 0xE7);

    memset(&g, 0, sizeof g);
    CHECK_RC(d11_frame_hdr_decode(out, sizeof out, &g), 0);
    CHECK_EQ(g.len, 1234);
    CHECK_EQ(g.version, D11_WIRE_VERSION);
    CHECK_EQ(g.trace_flags, h.trace_flags);
    CHECK_EQ(g.type, h.type);
    CHECK_EQ(g.flags, h.flags);
    CHECK_EQ(g.req_id, h.req_id);
    CHECK_EQ(g.deadline_ms, h.deadline_ms);
    CHECK_EQ(g.status, h.status);
    CHECK(memcmp(g.trace_id, h.trace_id, 16) == 0);
    CHECK(memcmp(g.span_id, h.span_id, 8) == 0);

    /* Any prefix of a valid header: "need more". */
    for (size_t n = 0; n < D11_FRAME_HDR_BYTES; n++) {
        int rc = d11_frame_hdr_decode(out, n, &g);
        CHECKF(rc == 1, "valid header prefix of %zu bytes -> %d", n, rc);
    }
    /* The whole header decodes even when more bytes follow (the payload). */
    uint8_t big[D11_FRAME_HDR_BYTES + 10];
    memcpy(big, out, sizeof out);
    memset(big + sizeof out, 0x55, 10);
    CHECK_RC(d11_frame_hdr_decode(big, sizeof big, &g), 0);

    /* Length bounds: 52 and D11_FRAME_BYTES_MAX accepted; 0, 51, MAX+1, UINT32_MAX refused,
     * as soon as the 4 length bytes are in. */
    static const uint64_t lens[] = {0, 1, 51, 52, 53, D11_FRAME_BYTES_MAX, D11_FRAME_BYTES_MAX + 1ULL,
                                    0x7fffffffULL, 0xffffffffULL};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        uint8_t b[D11_FRAME_HDR_BYTES];
        memcpy(b, out, sizeof b);
        for (int i = 0; i < 4; i++) b[i] = (uint8_t)(lens[k] >> (8 * i));
        bool ok = lens[k] >= D11_FRAME_HDR_BYTES && lens[k] <= D11_FRAME_BYTES_MAX;
        int rc = d11_frame_hdr_decode(b, sizeof b, &g);
        CHECKF(rc == (ok ? 0 : D11_EPROTO), "len %llu, whole header -> %d", (unsigned long long)lens[k], rc);
        if (ok) CHECK_EQ(g.len, lens[k]);
        for (size_t n = 0; n < D11_FRAME_HDR_BYTES; n++) {
            int want = ok || n < 4 ? 1 : D11_EPROTO;
            rc = d11_frame_hdr_decode(b, n, &g);
            CHECKF(rc == want, "len %llu, %zu bytes in -> %d (want %d)", (unsigned long long)lens[k], n, rc, want);
        }
    }
    /* Version: only D11_WIRE_VERSION. */
    static const uint8_t versions[] = {0, 2, 0xff};
    for (size_t k = 0; k < sizeof versions; k++) {
        uint8_t b[D11_FRAME_HDR_BYTES];
        memcpy(b, out, sizeof b);
        b[4] = versions[k];
        CHECKF(d11_frame_hdr_decode(b, sizeof b, &g) == D11_EPROTO, "version %u accepted", versions[k]);
    }

    /* d11_frame_begin / d11_frame_end patch the total length, keep the rest. */
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_buf_append(&b, "xyz", 3); /* frames may start mid-buffer */
    fill_hdr(&h, D11_FRAME_HDR_BYTES);
    size_t start = d11_frame_begin(&b, &h);
    CHECK_EQ(start, 3);
    d11_wenc_u32(&b, 0xdeadbeef);
    d11_wenc_str(&b, "hello", 5);
    d11_frame_end(&b, start);
    CHECK_EQ(b.len, 3 + D11_FRAME_HDR_BYTES + 4 + 2 + 5);
    CHECK_RC(d11_frame_hdr_decode((uint8_t *)b.data + 3, b.len - 3, &g), 0);
    CHECK_EQ(g.len, D11_FRAME_HDR_BYTES + 11);
    CHECK_EQ(g.req_id, h.req_id);
    CHECK_EQ(g.type, h.type);
    CHECK(memcmp(b.data, "xyz", 3) == 0);
    d11_buf_free(&b);
}

/* ---- primitive field codecs ---- */

static void test_primitives(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_wenc_u8(&b, 0xfe);
    d11_wenc_u16(&b, 0xfedc);
    d11_wenc_u32(&b, 0xfedcba98u);
    d11_wenc_u64(&b, 0xfedcba9876543210ULL);
    d11_wenc_str(&b, "a\0b", 3);
    d11_wenc_str(&b, "", 0);
    d11_wenc_blob(&b, "blob\0!", 6);
    CHECK_EQ(b.len, 1 + 2 + 4 + 8 + (2 + 3) + 2 + (4 + 6));
    /* little-endian on the wire */
    CHECK_EQ((uint8_t)b.data[1], 0xdc);
    CHECK_EQ((uint8_t)b.data[2], 0xfe);
    CHECK_EQ((uint8_t)b.data[3], 0x98);
    CHECK_EQ((uint8_t)b.data[7], 0x10);

    d11_wdec d;
    size_t n;
    d11_wdec_init(&d, b.data, b.len);
    CHECK_EQ(d11_wdec_u8(&d), 0xfe);
    CHECK_EQ(d11_wdec_u16(&d), 0xfedc);
    CHECK_EQ(d11_wdec_u32(&d), 0xfedcba98u);
    CHECK_EQ(d11_wdec_u64(&d), 0xfedcba9876543210ULL);
    const char *s = d11_wdec_str(&d, &n);
    CHECK(s && n == 3 && memcmp(s, "a\0b", 3) == 0);
    CHECK(inside(s, n, b.data, b.len));
    s = d11_wdec_str(&d, &n);
    CHECK(s != NULL && n == 0);
    s = d11_wdec_blob(&d, &n);
    CHECK(s && n == 6 && memcmp(s, "blob\0!", 6) == 0);
    CHECK(d11_wdec_done(&d));

    /* Past the end: err is sticky and every later read yields zero / NULL. */
    CHECK_EQ(d11_wdec_u8(&d), 0);
    CHECK(d.err);
    CHECK(!d11_wdec_done(&d));
    d11_wdec_init(&d, b.data, 3);
    CHECK_EQ(d11_wdec_u8(&d), 0xfe);
    CHECK_EQ(d11_wdec_u32(&d), 0); /* only 2 left */
    CHECK(d.err);
    CHECK_EQ(d11_wdec_u8(&d), 0); /* a byte is left, but err is sticky */
    s = d11_wdec_str(&d, &n);
    CHECK(s == NULL && n == 0);

    /* A string whose length runs past the payload. */
    d11_buf_reset(&b);
    d11_wenc_u16(&b, 10);
    d11_buf_append(&b, "abc", 3);
    d11_wdec_init(&d, b.data, b.len);
    s = d11_wdec_str(&d, &n);
    CHECK(s == NULL && n == 0 && d.err);
    d11_buf_reset(&b);
    d11_wenc_u32(&b, 0xffffffffu);
    d11_buf_append(&b, "abc", 3);
    d11_wdec_init(&d, b.data, b.len);
    s = d11_wdec_blob(&d, &n);
    CHECK(s == NULL && n == 0 && d.err);
    d11_buf_free(&b);
}

/* ---- ORDER_CREATE ---- */

static d11_msg_order_create g_oc;
static int dec_order_create(const void *p, size_t n) { return d11_msg_order_create_dec(p, n, &g_oc); }

/* Encode an ORDER_CREATE payload by hand (the encoder asserts 1..16 items). */
static void enc_order_create_raw(d11_buf *b, uint64_t user, const char *key, size_t keyn, unsigned nitems,
                                 const char *const *skus, const uint32_t *qty)
{
    d11_wenc_u64(b, user);
    d11_wenc_str(b, key, keyn);
    d11_wenc_u8(b, (uint8_t)nitems);
    for (unsigned i = 0; i < nitems; i++) {
        d11_wenc_str(b, skus[i], strlen(skus[i]));
        d11_wenc_u32(b, qty[i]);
    }
}

static void test_order_create(void)
{
    char skus[D11_ORDER_ITEMS_MAX][D11_SKU_BYTES_MAX + 1];
    char key[D11_IDEM_KEY_BYTES_MAX + 2];
    for (int i = 0; i < D11_IDEM_KEY_BYTES_MAX + 1; i++) key[i] = (char)(0x21 + i % 94); /* every printable */
    key[D11_IDEM_KEY_BYTES_MAX + 1] = 0;

    /* Round trip: 1 item; 16 items with max-length SKU and key; limits at their edges. */
    for (int variant = 0; variant < 3; variant++) {
        d11_msg_order_create m;
        memset(&m, 0, sizeof m);
        m.user_id = variant == 0 ? 1 : variant == 1 ? (uint64_t)INT64_MAX : 42;
        m.idem_key.p = key;
        m.idem_key.n = variant == 0 ? 1 : variant == 1 ? D11_IDEM_KEY_BYTES_MAX : 36;
        m.nitems = variant == 0 ? 1 : variant == 1 ? D11_ORDER_ITEMS_MAX : 3;
        for (uint32_t i = 0; i < m.nitems; i++) {
            size_t sn = variant == 1 ? D11_SKU_BYTES_MAX : 1 + i;
            for (size_t k = 0; k < sn; k++) skus[i][k] = "AZaz09_.-"[(k + i) % 9];
            skus[i][0] = (char)('A' + i); /* distinct */
            skus[i][sn] = 0;
            m.items[i].sku.p = skus[i];
            m.items[i].sku.n = sn;
            m.items[i].qty = i == 0 ? 1 : i == 1 ? D11_ITEM_QTY_MAX : 7 * i;
        }
        d11_buf b;
        d11_buf_init(&b, 0);
        d11_msg_order_create_enc(&b, &m);
        d11_msg_order_create o;
        memset(&o, 0xcc, sizeof o);
        CHECK_RC(d11_msg_order_create_dec(b.data, b.len, &o), 0);
        CHECK_EQ(o.user_id, m.user_id);
        CHECK_STR(o.idem_key, m.idem_key.p, m.idem_key.n);
        CHECK(inside(o.idem_key.p, o.idem_key.n, b.data, b.len));
        CHECK_EQ(o.nitems, m.nitems);
        for (uint32_t i = 0; i < m.nitems && i < o.nitems; i++) {
            CHECK_STR(o.items[i].sku, m.items[i].sku.p, m.items[i].sku.n);
            CHECK(inside(o.items[i].sku.p, o.items[i].sku.n, b.data, b.len));
            CHECK_EQ(o.items[i].qty, m.items[i].qty);
        }
        check_truncations("order_create", dec_order_create, &b);
        d11_buf_free(&b);
    }

    /* Out-of-range values, one at a time, on an otherwise valid message. */
    static const char *const two[] = {"SKU-1", "SKU-2"};
    static const uint32_t q11[] = {1, 1};
    struct {
        const char *what;
        uint64_t user;
        const char *key;
        size_t keyn;
        unsigned nitems;
        const char *const *skus;
        const uint32_t *qty;
        int want;
    } cases[] = {
        {"valid", 42, "k-1", 3, 2, two, q11, 0},
        {"user 0", 0, "k-1", 3, 2, two, q11, D11_EPROTO},
        {"user 2^63", (uint64_t)INT64_MAX + 1, "k-1", 3, 2, two, q11, D11_EPROTO},
        {"user 2^64-1", UINT64_MAX, "k-1", 3, 2, two, q11, D11_EPROTO},
        {"user 2^63-1", (uint64_t)INT64_MAX, "k-1", 3, 2, two, q11, 0},
        {"key empty", 42, "", 0, 2, two, q11, D11_EPROTO},
        {"key with space (printable ASCII)", 42, "k 1", 3, 2, two, q11, 0},
        {"key with tab", 42, "k\t1", 3, 2, two, q11, D11_EPROTO},
        {"key with DEL", 42, "k\x7f", 2, 2, two, q11, D11_EPROTO},
        {"key with NUL", 42, "k\0001", 3, 2, two, q11, D11_EPROTO},
        {"key with 8-bit byte", 42, "k\xc3\xa9", 3, 2, two, q11, D11_EPROTO},
        {"key 128 bytes", 42, key, 128, 2, two, q11, 0},
        {"key 129 bytes", 42, key, 129, 2, two, q11, D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        d11_buf b;
        d11_buf_init(&b, 0);
        enc_order_create_raw(&b, cases[k].user, cases[k].key, cases[k].keyn, cases[k].nitems, cases[k].skus,
                             cases[k].qty);
        int rc = run_dec(dec_order_create, b.data, b.len);
        CHECKF(rc == cases[k].want, "order_create %s -> %d, want %d", cases[k].what, rc, cases[k].want);
        d11_buf_free(&b);
    }

    /* Items: count 0 and 17, quantity 0 / 1001 / 2^32-1, duplicates, SKU rules. */
    const char *many[D11_ORDER_ITEMS_MAX + 1];
    uint32_t qty[D11_ORDER_ITEMS_MAX + 1];
    char manybuf[D11_ORDER_ITEMS_MAX + 1][16];
    for (int i = 0; i <= D11_ORDER_ITEMS_MAX; i++) {
        snprintf(manybuf[i], sizeof manybuf[i], "S%d", i);
        many[i] = manybuf[i];
        qty[i] = 1;
    }
    for (unsigned nitems = 0; nitems <= D11_ORDER_ITEMS_MAX + 1; nitems++) {
        d11_buf b;
        d11_buf_init(&b, 0);
        enc_order_create_raw(&b, 42, "k", 1, nitems, many, qty);
        int want = nitems >= 1 && nitems <= D11_ORDER_ITEMS_MAX ? 0 : D11_EPROTO;
        int rc = run_dec(dec_order_create, b.data, b.len);
        CHECKF(rc == want, "order_create with %u items -> %d", nitems, rc);
        d11_buf_free(&b);
    }
    /* nitems byte 255 with a short payload must not read items[16+] */
    {
        d11_buf b;
        d11_buf_init(&b, 0);
        enc_order_create_raw(&b, 42, "k", 1, 0, many, qty);
        b.data[b.len - 1] = (char)0xff;
        CHECK_RC(run_dec(dec_order_create, b.data, b.len), D11_EPROTO);
        d11_buf_free(&b);
    }
    static const uint32_t bad_qty[] = {0, D11_ITEM_QTY_MAX + 1, UINT32_MAX};
    for (size_t k = 0; k < 3; k++) {
        for (int pos = 0; pos < 2; pos++) { /* the bad item first or second */
            uint32_t q[2] = {1, 1};
            q[pos] = bad_qty[k];
            d11_buf b;
            d11_buf_init(&b, 0);
            enc_order_create_raw(&b, 42, "k", 1, 2, two, q);
            int rc = run_dec(dec_order_create, b.data, b.len);
            CHECKF(rc == D11_EPROTO, "qty %u at item %d -> %d", bad_qty[k], pos, rc);
            d11_buf_free(&b);
        }
    }
    char sku64[D11_SKU_BYTES_MAX + 1], sku65[D11_SKU_BYTES_MAX + 2];
    memset(sku64, 'x', D11_SKU_BYTES_MAX);
    sku64[D11_SKU_BYTES_MAX] = 0;
    memset(sku65, 'x', D11_SKU_BYTES_MAX + 1);
    sku65[D11_SKU_BYTES_MAX + 1] = 0;
    struct {
        const char *a, *b;
        int want;
    } sk[] = {
        {"SKU-1", "SKU-1", D11_EPROTO},   /* duplicate */
        {"SKU-1", "sku-1", 0},            /* case matters */
        {"SKU-1", "SKU-1.", 0},           /* prefix is not a duplicate */
        {"A", "", D11_EPROTO},            /* empty */
        {"A", "a b", D11_EPROTO},         /* space */
        {"A", "a/b", D11_EPROTO},         /* slash */
        {"A", "a:b", D11_EPROTO},
        {"A", "a\"b", D11_EPROTO},
        {"A", "\xc3\xa9", D11_EPROTO},    /* non-ASCII */
        {"A", "aZ09_.-", 0},              /* every allowed class */
        {"A", sku64, 0},
        {"A", sku65, D11_EPROTO},
        {sku65, "A", D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof sk / sizeof sk[0]; k++) {
        const char *pair[2] = {sk[k].a, sk[k].b};
        d11_buf b;
        d11_buf_init(&b, 0);
        enc_order_create_raw(&b, 42, "k", 1, 2, pair, q11);
        int rc = run_dec(dec_order_create, b.data, b.len);
        CHECKF(rc == sk[k].want, "skus '%.70s','%.70s' -> %d, want %d", sk[k].a, sk[k].b, rc, sk[k].want);
        d11_buf_free(&b);
    }
    /* A SKU with an embedded NUL byte. */
    {
        d11_buf b;
        d11_buf_init(&b, 0);
        d11_wenc_u64(&b, 42);
        d11_wenc_str(&b, "k", 1);
        d11_wenc_u8(&b, 1);
        d11_wenc_str(&b, "A\0B", 3);
        d11_wenc_u32(&b, 1);
        CHECK_RC(run_dec(dec_order_create, b.data, b.len), D11_EPROTO);
        d11_buf_free(&b);
    }
    /* A duplicate far apart (item 0 and item 15). */
    {
        const char *d[D11_ORDER_ITEMS_MAX];
        for (int i = 0; i < D11_ORDER_ITEMS_MAX; i++) d[i] = many[i];
        d[D11_ORDER_ITEMS_MAX - 1] = many[0];
        d11_buf b;
        d11_buf_init(&b, 0);
        enc_order_create_raw(&b, 42, "k", 1, D11_ORDER_ITEMS_MAX, d, qty);
        CHECK_RC(run_dec(dec_order_create, b.data, b.len), D11_EPROTO);
        d11_buf_free(&b);
    }
}

/* ---- ORDER_GET / PAY / CANCEL ---- */

static d11_msg_order_ref g_ref;
static int dec_ref_plain(const void *p, size_t n) { return d11_msg_order_ref_dec(p, n, &g_ref, false); }
static int dec_ref_pay(const void *p, size_t n) { return d11_msg_order_ref_dec(p, n, &g_ref, true); }

static void test_order_ref(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    static const uint64_t ids[] = {0, 1, 0x123456789abcdefULL, UINT64_MAX};
    for (size_t k = 0; k < 4; k++) {
        d11_msg_order_ref m = {.order_id = ids[k], .payment_id = {"pay-1", 5}};
        d11_msg_order_ref o;
        d11_buf_reset(&b);
        d11_msg_order_ref_enc(&b, &m, false);
        CHECK_EQ(b.len, 8);
        memset(&o, 0xcc, sizeof o);
        CHECK_RC(d11_msg_order_ref_dec(b.data, b.len, &o, false), 0);
        CHECK_EQ(o.order_id, ids[k]);
        CHECK_EQ(o.payment_id.n, 0);
        CHECK(o.payment_id.p != NULL);
        check_truncations("order_ref", dec_ref_plain, &b);
        /* the same bytes are not a PAY (no payment id) */
        CHECK_RC(run_dec(dec_ref_pay, b.data, b.len), D11_EPROTO);

        d11_buf_reset(&b);
        d11_msg_order_ref_enc(&b, &m, true);
        memset(&o, 0xcc, sizeof o);
        CHECK_RC(d11_msg_order_ref_dec(b.data, b.len, &o, true), 0);
        CHECK_EQ(o.order_id, ids[k]);
        CHECK_STR(o.payment_id, "pay-1", 5);
        CHECK(inside(o.payment_id.p, o.payment_id.n, b.data, b.len));
        check_truncations("order_ref pay", dec_ref_pay, &b);
    }
    char pid[D11_PAYMENT_ID_BYTES_MAX + 2];
    memset(pid, 'p', sizeof pid);
    struct {
        const char *p;
        size_t n;
        int want;
    } pc[] = {
        {"", 0, D11_EPROTO},
        {"a b", 3, 0}, /* space is printable ASCII (API.md) */
        {"a\nb", 3, D11_EPROTO},
        {"a\0b", 3, D11_EPROTO},
        {"\x80", 1, D11_EPROTO},
        {"!~", 2, 0},
        {pid, D11_PAYMENT_ID_BYTES_MAX, 0},
        {pid, D11_PAYMENT_ID_BYTES_MAX + 1, D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof pc / sizeof pc[0]; k++) {
        d11_msg_order_ref m = {.order_id = 9, .payment_id = {pc[k].p, pc[k].n}};
        d11_buf_reset(&b);
        d11_msg_order_ref_enc(&b, &m, true);
        int rc = run_dec(dec_ref_pay, b.data, b.len);
        CHECKF(rc == pc[k].want, "payment id case %zu (%zu bytes) -> %d", k, pc[k].n, rc);
    }
    d11_buf_free(&b);
}

/* ---- ORDER_LIST ---- */

static d11_msg_order_list g_list;
static int dec_list(const void *p, size_t n) { return d11_msg_order_list_dec(p, n, &g_list); }

static void test_order_list(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_msg_order_list m = {.user_id = (uint64_t)INT64_MAX, .before = UINT64_MAX, .limit = D11_LIST_LIMIT_MAX};
    d11_msg_order_list_enc(&b, &m);
    d11_msg_order_list o;
    memset(&o, 0, sizeof o);
    CHECK_RC(d11_msg_order_list_dec(b.data, b.len, &o), 0);
    CHECK_EQ(o.user_id, m.user_id);
    CHECK_EQ(o.before, m.before);
    CHECK_EQ(o.limit, m.limit);
    check_truncations("order_list", dec_list, &b);

    struct {
        uint64_t user, before;
        uint32_t limit;
        int want;
    } c[] = {
        {1, 0, 1, 0},
        {1, 0, 0, D11_EPROTO},
        {1, 0, D11_LIST_LIMIT_MAX + 1, D11_EPROTO},
        {1, 0, UINT32_MAX, D11_EPROTO},
        {0, 0, 50, D11_EPROTO},
        {(uint64_t)INT64_MAX + 1, 0, 50, D11_EPROTO},
        {UINT64_MAX, 0, 50, D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        d11_msg_order_list x = {c[k].user, c[k].before, c[k].limit};
        d11_buf_reset(&b);
        d11_msg_order_list_enc(&b, &x);
        int rc = run_dec(dec_list, b.data, b.len);
        CHECKF(rc == c[k].want, "order_list case %zu -> %d, want %d", k, rc, c[k].want);
    }
    d11_buf_free(&b);
}

/* ---- PRODUCT_CREATE ---- */

static d11_msg_product g_prod;
static int dec_product(const void *p, size_t n) { return d11_msg_product_dec(p, n, &g_prod); }

static void test_product(void)
{
    char title[D11_TITLE_BYTES_MAX + 2], cat[D11_CATEGORY_BYTES_MAX + 2];
    memset(title, 'T', sizeof title);
    memset(cat, 'c', sizeof cat);
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_msg_product m = {.sku = {"SKU-1", 5}, .title = {"Flash \"sale\" \xe2\x82\xac", 16},
                         .price_cents = 1999, .stock = 100, .category = {"shoes", 5}};
    d11_msg_product_enc(&b, &m);
    d11_msg_product o;
    memset(&o, 0xcc, sizeof o);
    CHECK_RC(d11_msg_product_dec(b.data, b.len, &o), 0);
    CHECK_STR(o.sku, m.sku.p, m.sku.n);
    CHECK_STR(o.title, m.title.p, m.title.n);
    CHECK_STR(o.category, m.category.p, m.category.n);
    CHECK_EQ(o.price_cents, 1999);
    CHECK_EQ(o.stock, 100);
    check_truncations("product", dec_product, &b);

    struct {
        const char *what;
        d11_str sku, title, category;
        uint64_t price, stock;
        int want;
    } c[] = {
        {"edges ok", {"A", 1}, {title, D11_TITLE_BYTES_MAX}, {cat, D11_CATEGORY_BYTES_MAX}, 1, 0, 0},
        {"max price/stock", {"A", 1}, {"", 0}, {"", 0}, (uint64_t)D11_PRICE_CENTS_MAX, (uint64_t)D11_STOCK_MAX, 0},
        {"title too long", {"A", 1}, {title, D11_TITLE_BYTES_MAX + 1}, {"", 0}, 1, 0, D11_EPROTO},
        {"category too long", {"A", 1}, {"", 0}, {cat, D11_CATEGORY_BYTES_MAX + 1}, 1, 0, D11_EPROTO},
        {"price 0", {"A", 1}, {"", 0}, {"", 0}, 0, 0, D11_EPROTO},
        {"price 10^12+1", {"A", 1}, {"", 0}, {"", 0}, (uint64_t)D11_PRICE_CENTS_MAX + 1, 0, D11_EPROTO},
        {"stock 10^12+1", {"A", 1}, {"", 0}, {"", 0}, 1, (uint64_t)D11_STOCK_MAX + 1, D11_EPROTO},
        {"stock 2^64-1", {"A", 1}, {"", 0}, {"", 0}, 1, UINT64_MAX, D11_EPROTO},
        {"sku empty", {"", 0}, {"", 0}, {"", 0}, 1, 1, D11_EPROTO},
        {"sku space", {"A B", 3}, {"", 0}, {"", 0}, 1, 1, D11_EPROTO},
        {"sku 65", {title, 65}, {"", 0}, {"", 0}, 1, 1, D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        d11_msg_product x = {c[k].sku, c[k].title, c[k].price, c[k].stock, c[k].category};
        d11_buf_reset(&b);
        d11_msg_product_enc(&b, &x);
        int rc = run_dec(dec_product, b.data, b.len);
        CHECKF(rc == c[k].want, "product %s -> %d, want %d", c[k].what, rc, c[k].want);
    }
    d11_buf_free(&b);
}

/* ---- PRODUCT_GET / RESTOCK / LEDGER_GET ---- */

static d11_msg_sku_qty g_sq;
static int dec_sku(const void *p, size_t n) { return d11_msg_sku_qty_dec(p, n, &g_sq, false); }
static int dec_sku_qty(const void *p, size_t n) { return d11_msg_sku_qty_dec(p, n, &g_sq, true); }

static void test_sku_qty(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_msg_sku_qty m = {.sku = {"SKU.9_x-Y", 9}, .qty = 77};
    d11_msg_sku_qty o;
    d11_msg_sku_qty_enc(&b, &m, false);
    memset(&o, 0xcc, sizeof o);
    CHECK_RC(d11_msg_sku_qty_dec(b.data, b.len, &o, false), 0);
    CHECK_STR(o.sku, m.sku.p, m.sku.n);
    CHECK_EQ(o.qty, 0);
    check_truncations("sku", dec_sku, &b);
    d11_buf_reset(&b);
    d11_msg_sku_qty_enc(&b, &m, true);
    memset(&o, 0xcc, sizeof o);
    CHECK_RC(d11_msg_sku_qty_dec(b.data, b.len, &o, true), 0);
    CHECK_STR(o.sku, m.sku.p, m.sku.n);
    CHECK_EQ(o.qty, 77);
    check_truncations("sku_qty", dec_sku_qty, &b);

    static const struct {
        uint64_t q;
        int want;
    } q[] = {{0, D11_EPROTO}, {1, 0}, {(uint64_t)D11_STOCK_MAX, 0}, {(uint64_t)D11_STOCK_MAX + 1, D11_EPROTO},
             {UINT64_MAX, D11_EPROTO}};
    for (size_t k = 0; k < sizeof q / sizeof q[0]; k++) {
        d11_msg_sku_qty x = {.sku = {"A", 1}, .qty = q[k].q};
        d11_buf_reset(&b);
        d11_msg_sku_qty_enc(&b, &x, true);
        int rc = run_dec(dec_sku_qty, b.data, b.len);
        CHECKF(rc == q[k].want, "restock qty %llu -> %d", (unsigned long long)q[k].q, rc);
    }
    static const d11_str bad[] = {{"", 0}, {"a b", 3}, {"a\0", 2}, {"\xff", 1}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        d11_msg_sku_qty x = {.sku = bad[k], .qty = 1};
        for (int wq = 0; wq < 2; wq++) {
            d11_buf_reset(&b);
            d11_msg_sku_qty_enc(&b, &x, wq);
            CHECKF(run_dec(wq ? dec_sku_qty : dec_sku, b.data, b.len) == D11_EPROTO, "bad sku %zu (qty %d)", k, wq);
        }
    }
    d11_buf_free(&b);
}

/* ---- generic reply ---- */

static d11_str g_code, g_body;
static int dec_reply(const void *p, size_t n) { return d11_msg_reply_dec(p, n, &g_code, &g_body); }

static void test_reply(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_str code, body;
    d11_msg_reply_enc(&b, "out_of_stock", "SKU-1: 0 left\0x", 15);
    CHECK_RC(d11_msg_reply_dec(b.data, b.len, &code, &body), 0);
    CHECK_STR(code, "out_of_stock", 12);
    CHECK_STR(body, "SKU-1: 0 left\0x", 15);
    CHECK(inside(body.p, body.n, b.data, b.len));
    check_truncations("reply", dec_reply, &b);

    d11_buf_reset(&b);
    d11_msg_reply_enc(&b, NULL, NULL, 0);
    CHECK_EQ(b.len, 2 + 4);
    CHECK_RC(d11_msg_reply_dec(b.data, b.len, &code, &body), 0);
    CHECK(code.n == 0 && code.p != NULL);
    CHECK(body.n == 0 && body.p != NULL);
    check_truncations("empty reply", dec_reply, &b);

    /* a large body (blob length is 32-bit) */
    size_t big = 300000;
    char *p = malloc(big);
    if (!p) abort();
    for (size_t i = 0; i < big; i++) p[i] = (char)(i * 7);
    d11_buf_reset(&b);
    d11_msg_reply_enc(&b, "", p, big);
    CHECK_RC(d11_msg_reply_dec(b.data, b.len, &code, &body), 0);
    CHECK(body.n == big && memcmp(body.p, p, big) == 0);
    CHECK_RC(run_dec(dec_reply, b.data, b.len - 1), D11_EPROTO);
    free(p);
    d11_buf_free(&b);
}

/* ---- routing ---- */

static d11_routing g_rt;
static int dec_routing(const void *p, size_t n) { return d11_routing_dec(p, n, &g_rt); }

static void test_routing(void)
{
    static const unsigned ns[] = {1, 2, 3, 7, 63, D11_CELLS_MAX};
    d11_buf b;
    d11_buf_init(&b, 0);
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        d11_routing r, o;
        d11_routing_default(&r, ns[k]);
        CHECK_EQ(r.ncells, ns[k]);
        /* contiguous ranges, every cell owns at least one slot, first -> 0, last -> n-1 */
        CHECK_EQ(r.cell_of_slot[0], 0);
        CHECK_EQ(r.cell_of_slot[D11_SLOTS - 1], ns[k] - 1);
        unsigned owned[D11_CELLS_MAX] = {0};
        bool mono = true;
        for (int s = 0; s < D11_SLOTS; s++) {
            if (r.cell_of_slot[s] < D11_CELLS_MAX) owned[r.cell_of_slot[s]]++;
            if (s && r.cell_of_slot[s] < r.cell_of_slot[s - 1]) mono = false;
        }
        CHECK(mono);
        for (unsigned c = 0; c < ns[k]; c++) CHECKF(owned[c] >= 1, "ncells %u: cell %u owns no slot", ns[k], c);
        r.version = 0xabcdef01u;
        d11_buf_reset(&b);
        d11_routing_enc(&b, &r);
        CHECK_EQ(b.len, 4 + 2 + 2 * D11_SLOTS);
        memset(&o, 0xcc, sizeof o);
        CHECK_RC(d11_routing_dec(b.data, b.len, &o), 0);
        CHECK_EQ(o.version, r.version);
        CHECK_EQ(o.ncells, r.ncells);
        CHECK(memcmp(o.cell_of_slot, r.cell_of_slot, sizeof r.cell_of_slot) == 0);
        if (k == 2) check_truncations("routing", dec_routing, &b);
    }
    /* bad tables */
    d11_routing r;
    d11_routing_default(&r, 4);
    struct {
        const char *what;
        uint16_t ncells;
        int slot;
        uint16_t cell;
        int want;
    } c[] = {
        {"ncells 0", 0, -1, 0, D11_EPROTO},
        {"ncells 65", D11_CELLS_MAX + 1, -1, 0, D11_EPROTO},
        {"cell index == ncells", 4, 0, 4, D11_EPROTO},
        {"cell index == ncells at last slot", 4, D11_SLOTS - 1, 4, D11_EPROTO},
        {"cell index 65535", 4, 500, 65535, D11_EPROTO},
        {"cell index ncells-1 anywhere", 4, 0, 3, 0},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        d11_routing x = r;
        x.ncells = c[k].ncells;
        if (c[k].slot >= 0) x.cell_of_slot[c[k].slot] = c[k].cell;
        d11_buf_reset(&b);
        d11_routing_enc(&b, &x);
        int rc = run_dec(dec_routing, b.data, b.len);
        CHECKF(rc == c[k].want, "routing %s -> %d", c[k].what, rc);
    }
    d11_buf_free(&b);
}

/* ---- inventory ---- */

static d11_msg_inv g_inv;
static int dec_inv(const void *p, size_t n) { return d11_msg_inv_dec(p, n, &g_inv); }
static d11_msg_grant_reply g_gr;
static int dec_grant_reply(const void *p, size_t n) { return d11_msg_grant_reply_dec(p, n, &g_gr); }

static void test_inventory(void)
{
    d11_buf b;
    d11_buf_init(&b, 0);
    d11_msg_inv m = {.cell = D11_CELLS_MAX - 1, .sku = {"hot-1", 5}, .shadow = 1, .qty = UINT64_MAX,
                     .sold = 0x1122334455667788ULL};
    d11_msg_inv_enc(&b, &m);
    d11_msg_inv o;
    memset(&o, 0xcc, sizeof o);
    CHECK_RC(d11_msg_inv_dec(b.data, b.len, &o), 0);
    CHECK_EQ(o.cell, m.cell);
    CHECK_STR(o.sku, "hot-1", 5);
    CHECK_EQ(o.shadow, 1);
    CHECK_EQ(o.qty, m.qty);
    CHECK_EQ(o.sold, m.sold);
    check_truncations("inv", dec_inv, &b);
    struct {
        const char *what;
        uint16_t cell;
        d11_str sku;
        uint8_t shadow;
        int want;
    } c[] = {
        {"cell 0 real", 0, {"A", 1}, 0, 0},
        {"cell 64", D11_CELLS_MAX, {"A", 1}, 0, D11_EPROTO},
        {"cell 65535", 65535, {"A", 1}, 0, D11_EPROTO},
        {"shadow 2", 0, {"A", 1}, 2, D11_EPROTO},
        {"shadow 255", 0, {"A", 1}, 255, D11_EPROTO},
        {"sku empty", 0, {"", 0}, 0, D11_EPROTO},
        {"sku bad char", 0, {"A*", 2}, 0, D11_EPROTO},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        d11_msg_inv x = {.cell = c[k].cell, .sku = c[k].sku, .shadow = c[k].shadow, .qty = 1, .sold = 1};
        d11_buf_reset(&b);
        d11_msg_inv_enc(&b, &x);
        int rc = run_dec(dec_inv, b.data, b.len);
        CHECKF(rc == c[k].want, "inv %s -> %d", c[k].what, rc);
    }

    d11_msg_grant_reply g = {.exists = 1, .price_cents = 1999, .granted_cum = (uint64_t)D11_STOCK_MAX, .sold_out = 1};
    d11_msg_grant_reply go;
    d11_buf_reset(&b);
    d11_msg_grant_reply_enc(&b, &g);
    CHECK_EQ(b.len, 1 + 8 + 8 + 1);
    memset(&go, 0xcc, sizeof go);
    CHECK_RC(d11_msg_grant_reply_dec(b.data, b.len, &go), 0);
    CHECK_EQ(go.exists, 1);
    CHECK_EQ(go.price_cents, 1999);
    CHECK_EQ(go.granted_cum, g.granted_cum);
    CHECK_EQ(go.sold_out, 1);
    check_truncations("grant_reply", dec_grant_reply, &b);
    d11_buf_free(&b);
}

/* ---- ORDER_CREATE speed (the hot path): printed, never asserted ---- */

static void bench_order_create(void)
{
    static const char *const skus[4] = {"SKU-1", "phone-128GB", "case.blue", "cable_usb-c"};
    d11_msg_order_create m;
    memset(&m, 0, sizeof m);
    m.user_id = 123456789;
    m.idem_key = (d11_str){"3f1c2a9e-8d7b-4c55-9a10-5e2f7b6c1d00", 36};
    m.nitems = 4;
    for (int i = 0; i < 4; i++) m.items[i] = (d11_item){{skus[i], strlen(skus[i])}, (uint32_t)(i + 1)};
    d11_buf b;
    d11_buf_init(&b, 256);
    enum { N = 2000000 };
    int64_t t0 = d11_mono_ns();
    for (int i = 0; i < N; i++) {
        d11_buf_reset(&b);
        m.user_id = 1 + (uint64_t)i;
        d11_msg_order_create_enc(&b, &m);
    }
    int64_t t1 = d11_mono_ns();
    d11_msg_order_create o;
    int bad = 0;
    for (int i = 0; i < N; i++) bad += d11_msg_order_create_dec(b.data, b.len, &o) != 0;
    int64_t t2 = d11_mono_ns();
    CHECK_EQ(bad, 0);
    printf("order_create (4 items, %zu bytes): encode %.1f ns/op, decode %.1f ns/op\n", b.len,
           (double)(t1 - t0) / N, (double)(t2 - t1) / N);
    d11_buf_free(&b);
}

/* ---- d11_conn framing over a socketpair ---- */

typedef struct rx_frame {
    d11_frame_hdr hdr;
    uint8_t *payload;
    size_t n;
} rx_frame;

typedef struct rx {
    rx_frame v[16];
    int n;
    int err; /* first negative d11_conn_frame result */
} rx;

static void rx_reset(rx *r)
{
    for (int i = 0; i < r->n; i++) free(r->v[i].payload);
    r->n = 0;
    r->err = 0;
}

/* Take every whole frame out of c (copying it), then optionally compact. */
static void rx_drain(d11_conn *c, rx *r, bool compact)
{
    d11_frame f;
    int rc;
    while ((rc = d11_conn_frame(c, &f)) == 1) {
        if (r->n < 16) {
            rx_frame *x = &r->v[r->n];
            x->hdr = f.hdr;
            x->n = f.payload_len;
            x->payload = malloc(f.payload_len ? f.payload_len : 1);
            if (!x->payload) abort();
            memcpy(x->payload, f.payload, f.payload_len);
        }
        r->n++;
    }
    if (rc < 0 && !r->err) r->err = rc;
    if (compact) d11_conn_compact(c);
}

typedef struct sent {
    uint16_t type;
    uint64_t req_id;
    size_t off, len; /* frame position in the stream */
} sent;

/* Build a stream of 5 frames of different shapes; returns their count. */
static int build_stream(d11_buf *s, sent *out)
{
    int k = 0;
    d11_frame_hdr h;
    /* 1: ORDER_CREATE */
    fill_hdr(&h, D11_FRAME_HDR_BYTES);
    h.type = D11_MSG_ORDER_CREATE;
    h.flags = 0;
    h.req_id = 1001;
    size_t st = d11_frame_begin(s, &h);
    d11_msg_order_create m = {.user_id = 42, .idem_key = {"key-1", 5}, .nitems = 2,
                              .items = {{{"SKU-1", 5}, 2}, {{"SKU-2", 5}, 1}}};
    d11_msg_order_create_enc(s, &m);
    d11_frame_end(s, st);
    out[k++] = (sent){h.type, h.req_id, st, s->len - st};
    /* 2: header only (PING) */
    h.type = D11_MSG_PING;
    h.req_id = 1002;
    st = d11_frame_begin(s, &h);
    d11_frame_end(s, st);
    out[k++] = (sent){h.type, h.req_id, st, s->len - st};
    /* 3: a reply with a 300-byte body */
    char body[300];
    for (int i = 0; i < 300; i++) body[i] = (char)i;
    d11_frame_hdr req = h;
    req.type = D11_MSG_ORDER_GET;
    req.req_id = 1003;
    st = s->len;
    d11_reply_enc(s, &req, 200, NULL, body, sizeof body);
    out[k++] = (sent){req.type, req.req_id, st, s->len - st};
    /* 4: routing table (2 KiB payload) */
    h.type = D11_MSG_ROUTING_GET;
    h.req_id = 1004;
    st = d11_frame_begin(s, &h);
    d11_routing r;
    d11_routing_default(&r, 5);
    d11_routing_enc(s, &r);
    d11_frame_end(s, st);
    out[k++] = (sent){h.type, h.req_id, st, s->len - st};
    /* 5: another header-only frame right at the end */
    h.type = D11_MSG_STATS;
    h.req_id = 1005;
    st = d11_frame_begin(s, &h);
    d11_frame_end(s, st);
    out[k++] = (sent){h.type, h.req_id, st, s->len - st};
    return k;
}

static bool rx_matches(const rx *r, const d11_buf *s, const sent *want, int nwant)
{
    if (r->err || r->n != nwant) return false;
    for (int i = 0; i < nwant; i++) {
        const rx_frame *x = &r->v[i];
        if (x->hdr.type != want[i].type || x->hdr.req_id != want[i].req_id) return false;
        if (x->hdr.len != want[i].len || x->n != want[i].len - D11_FRAME_HDR_BYTES) return false;
        if (memcmp(x->payload, s->data + want[i].off + D11_FRAME_HDR_BYTES, x->n) != 0) return false;
    }
    return true;
}

static int make_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
        printf("socketpair: %s\n", strerror(errno));
        return -1;
    }
    if (d11_set_nonblock(sv[1]) < 0) return -1;
    return 0;
}

static void test_conn_splits(void)
{
    d11_buf s;
    d11_buf_init(&s, 0);
    sent want[8];
    int nf = build_stream(&s, want);
    rx r = {0};

    /* Two writes, split at every byte boundary; compacting after each drain or never. */
    for (int compact = 0; compact < 2; compact++) {
        int bad = 0;
        for (size_t k = 0; k <= s.len; k++) {
            int sv[2];
            if (make_pair(sv) < 0) {
                n_fail++;
                return;
            }
            d11_conn c;
            d11_conn_init(&c, sv[1]);
            rx_reset(&r);
            int rc1 = d11_write_all(sv[0], s.data, k);
            int rc2 = d11_conn_read(&c);
            rx_drain(&c, &r, compact);
            int rc3 = d11_write_all(sv[0], s.data + k, s.len - k);
            int rc4 = d11_conn_read(&c);
            rx_drain(&c, &r, compact);
            if (rc1 || rc2 || rc3 || rc4 || !rx_matches(&r, &s, want, nf)) {
                if (bad++ < 5)
                    printf("%s:%d: split at %zu/%zu (compact %d): rc %d %d %d %d, %d frames (want %d), err %d\n",
                           __FILE__, __LINE__, k, s.len, compact, rc1, rc2, rc3, rc4, r.n, nf, r.err);
            }
            /* nothing left over */
            if (c.in.len - c.in_off != 0 && bad++ < 5)
                printf("%s:%d: split at %zu: %zu bytes left in the buffer\n", __FILE__, __LINE__, k,
                       c.in.len - c.in_off);
            d11_conn_release(&c);
            close(sv[0]);
        }
        CHECKF(bad == 0, "%d of %zu two-way splits failed (compact %d)", bad, s.len + 1, compact);
    }

    /* Three-way splits around every frame boundary +-3 bytes, crossed with all split points. */
    {
        int bad = 0, runs = 0;
        for (int fb = 0; fb < nf; fb++) {
            for (int d = -3; d <= 3; d++) {
                long a = (long)want[fb].off + d;
                if (a < 0 || (size_t)a > s.len) continue;
                for (size_t b2 = (size_t)a; b2 <= s.len; b2 += 7) {
                    int sv[2];
                    if (make_pair(sv) < 0) {
                        n_fail++;
                        return;
                    }
                    d11_conn c;
                    d11_conn_init(&c, sv[1]);
                    rx_reset(&r);
                    size_t cuts[4] = {0, (size_t)a, b2, s.len};
                    int rcs = 0;
                    for (int p = 0; p < 3; p++) {
                        rcs |= d11_write_all(sv[0], s.data + cuts[p], cuts[p + 1] - cuts[p]);
                        rcs |= d11_conn_read(&c);
                        rx_drain(&c, &r, p == 1);
                    }
                    runs++;
                    if (rcs || !rx_matches(&r, &s, want, nf)) {
                        if (bad++ < 5)
                            printf("%s:%d: 3-way split %ld/%zu: rc %d, %d frames, err %d\n", __FILE__, __LINE__, a,
                                   b2, rcs, r.n, r.err);
                    }
                    d11_conn_release(&c);
                    close(sv[0]);
                }
            }
        }
        CHECKF(bad == 0, "%d of %d three-way splits failed", bad, runs);
    }

    /* One byte at a time, draining after every byte. */
    {
        int sv[2];
        if (make_pair(sv) < 0) {
            n_fail++;
            return;
        }
        d11_conn c;
        d11_conn_init(&c, sv[1]);
        rx_reset(&r);
        int bad = 0;
        for (size_t i = 0; i < s.len; i++) {
            int before = r.n;
            if (d11_write_all(sv[0], s.data + i, 1) || d11_conn_read(&c)) bad++;
            rx_drain(&c, &r, (i & 1) != 0);
            /* a frame must appear exactly when its last byte is in */
            bool ends = false;
            for (int f = 0; f < nf; f++)
                if (want[f].off + want[f].len == i + 1) ends = true;
            if (r.n != before + (ends ? 1 : 0)) bad++;
        }
        CHECKF(bad == 0, "byte-at-a-time: %d bad steps", bad);
        CHECK(rx_matches(&r, &s, want, nf));
        /* EOF is reported, and a read with nothing pending is not an error. */
        CHECK_RC(d11_conn_read(&c), 0);
        close(sv[0]);
        CHECK_RC(d11_conn_read(&c), D11_ECLOSED);
        d11_conn_release(&c);
        CHECK_EQ(c.fd, -1);
    }
    rx_reset(&r);
    d11_buf_free(&s);
}

static void test_conn_bad_stream(void)
{
    rx r = {0};
    d11_frame_hdr h;
    uint8_t hb[D11_FRAME_HDR_BYTES];
    /* length 51: refused once the 4 length bytes are in, before the rest of the header */
    static const uint32_t bad_len[] = {0, 51, D11_FRAME_BYTES_MAX + 1};
    for (size_t k = 0; k < 3; k++) {
        int sv[2];
        if (make_pair(sv) < 0) {
            n_fail++;
            return;
        }
        d11_conn c;
        d11_conn_init(&c, sv[1]);
        fill_hdr(&h, 100);
        d11_frame_hdr_encode(&h, hb);
        for (int i = 0; i < 4; i++) hb[i] = (uint8_t)(bad_len[k] >> (8 * i));
        rx_reset(&r);
        CHECK_RC(d11_write_all(sv[0], hb, 3), 0);
        CHECK_RC(d11_conn_read(&c), 0);
        rx_drain(&c, &r, false);
        CHECK(r.err == 0 && r.n == 0);
        CHECK_RC(d11_write_all(sv[0], hb + 3, 1), 0);
        CHECK_RC(d11_conn_read(&c), 0);
        rx_drain(&c, &r, false);
        CHECKF(r.err == D11_EPROTO && r.n == 0, "len %u: err %d, %d frames", bad_len[k], r.err, r.n);
        d11_conn_release(&c);
        close(sv[0]);
    }
    /* a good frame, then a bad version: the first frame is delivered, then EPROTO */
    {
        int sv[2];
        if (make_pair(sv) < 0) {
            n_fail++;
            return;
        }
        d11_conn c;
        d11_conn_init(&c, sv[1]);
        d11_buf s;
        d11_buf_init(&s, 0);
        fill_hdr(&h, D11_FRAME_HDR_BYTES);
        size_t st = d11_frame_begin(&s, &h);
        d11_wenc_u32(&s, 7);
        d11_frame_end(&s, st);
        st = d11_frame_begin(&s, &h);
        d11_frame_end(&s, st);
        s.data[st + 4] = 9; /* version */
        CHECK_RC(d11_write_all(sv[0], s.data, s.len - 1), 0);
        CHECK_RC(d11_conn_read(&c), 0);
        rx_reset(&r);
        rx_drain(&c, &r, false);
        CHECK(r.n == 1 && r.err == 0); /* second header incomplete: not judged yet */
        CHECK_RC(d11_write_all(sv[0], s.data + s.len - 1, 1), 0);
        CHECK_RC(d11_conn_read(&c), 0);
        rx_drain(&c, &r, false);
        CHECK(r.n == 1 && r.err == D11_EPROTO);
        /* a complete frame followed by EOF is still delivered */
        d11_conn_release(&c);
        close(sv[0]);
        if (make_pair(sv) < 0) {
            n_fail++;
            return;
        }
        d11_conn_init(&c, sv[1]);
        CHECK_RC(d11_write_all(sv[0], s.data, st), 0);
        close(sv[0]);
        CHECK_RC(d11_conn_read(&c), D11_ECLOSED);
        rx_reset(&r);
        rx_drain(&c, &r, true);
        CHECK(r.n == 1 && r.err == 0 && r.v[0].n == 4);
        d11_conn_release(&c);
        d11_buf_free(&s);
    }
    rx_reset(&r);
}

/* A maximum-size frame and a small one, pushed through non-blocking flush/read. */
static void test_conn_big(void)
{
    int sv[2];
    if (make_pair(sv) < 0 || d11_set_nonblock(sv[0]) < 0) {
        n_fail++;
        return;
    }
    d11_conn tx, rxc;
    d11_conn_init(&tx, sv[0]);
    d11_conn_init(&rxc, sv[1]);
    d11_frame_hdr h;
    fill_hdr(&h, D11_FRAME_HDR_BYTES);
    h.type = D11_MSG_STATS;
    size_t st = d11_frame_begin(&tx.out, &h);
    size_t body = D11_FRAME_BYTES_MAX - D11_FRAME_HDR_BYTES - 4;
    d11_buf_reserve(&tx.out, body + 4);
    d11_wenc_u32(&tx.out, (uint32_t)body);
    for (size_t i = 0; i < body; i++) tx.out.data[tx.out.len + i] = (char)(i % 251);
    tx.out.len += body;
    d11_frame_end(&tx.out, st);
    CHECK_EQ(tx.out.len, D11_FRAME_BYTES_MAX);
    d11_frame_hdr req = h;
    req.req_id = 99;
    req.flags = D11_WF_STRESS | D11_WF_PUSH;
    req.deadline_ms = 500;
    d11_conn_reply(&tx, &req, 503, "unavailable", "down", 4);
    size_t total = tx.out.len;
    CHECK_EQ(d11_conn_pending(&tx), total);

    rx r = {0};
    int steps = 0, partial = 0;
    int frc = 1;
    while ((frc == 1 || r.n < 2) && steps < 100000 && !r.err) {
        frc = d11_conn_flush(&tx);
        if (frc < 0) break;
        if (frc == 1) partial++;
        int rc = d11_conn_read(&rxc);
        if (rc < 0) break;
        rx_drain(&rxc, &r, true);
        steps++;
    }
    CHECK_RC(frc, 0);
    CHECK_EQ(d11_conn_pending(&tx), 0);
    CHECK(partial > 0); /* 1 MiB does not fit a socket buffer: flush must have said "more" */
    CHECK_EQ(r.n, 2);
    CHECK_RC(r.err, 0);
    if (r.n >= 2) {
        CHECK_EQ(r.v[0].hdr.len, D11_FRAME_BYTES_MAX);
        bool same = r.v[0].n == body + 4;
        for (size_t i = 0; same && i < body; i++)
            if (r.v[0].payload[4 + i] != (uint8_t)(i % 251)) same = false;
        CHECK(same);
        /* the reply frame: echoes type, req_id, trace; REPLY set, STRESS kept, PUSH dropped */
        const rx_frame *x = &r.v[1];
        CHECK_EQ(x->hdr.type, req.type);
        CHECK_EQ(x->hdr.req_id, 99);
        CHECK_EQ(x->hdr.flags, D11_WF_REPLY | D11_WF_STRESS);
        CHECK_EQ(x->hdr.status, 503);
        CHECK_EQ(x->hdr.deadline_ms, 0);
        CHECK(memcmp(x->hdr.trace_id, req.trace_id, 16) == 0);
        d11_str code, rb;
        CHECK_RC(d11_msg_reply_dec(x->payload, x->n, &code, &rb), 0);
        CHECK_STR(code, "unavailable", 11);
        CHECK_STR(rb, "down", 4);
    }
    /* Writing to a closed peer is an error, not a hang (SIGPIPE is ignored by the processes). */
    d11_conn_reply(&tx, &req, 200, NULL, "x", 1);
    d11_conn_release(&rxc);
    int rc = d11_conn_flush(&tx);
    CHECKF(rc == -EPIPE || rc == -ECONNRESET, "flush to a closed peer -> %d", rc);
    d11_conn_release(&tx);
    rx_reset(&r);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_frame_hdr();
    test_primitives();
    test_order_create();
    test_order_ref();
    test_order_list();
    test_product();
    test_sku_qty();
    test_reply();
    test_routing();
    test_inventory();
    bench_order_create();
    test_conn_splits();
    test_conn_bad_stream();
    test_conn_big();
    replay_corpus("fuzz/corpus/wire", LLVMFuzzerTestOneInput);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
