/*
 * fuzz_wire.c — libFuzzer driver for the wire protocol decoders (src/rpc/wire.c).
 *
 * Every input is handed, whole, to d11_frame_hdr_decode and to the decoder of EVERY
 * message of the catalogue src/rpc/wire_msgs.def (both variants of an OPT message; the
 * LIST messages HELLO reply and REPORT through their iterators) — one fuzz entry per
 * message, generated from the catalogue, so a new message is fuzzed without a line here
 * — then walked as a frame stream the way d11_conn_frame walks its input buffer. Beyond
 * "no crash, no out-of-bounds read" (ASan/UBSan), each accepted input must satisfy the
 * decoder's contract, checked here and trapped on violation:
 *   - decoded values are inside the catalogue's limits (re-checked by code generated
 *     here, independent of wire.c's), and order items repeat no SKU;
 *   - decoded strings point inside the input;
 *   - the encoding is canonical: re-encoding what was decoded (lists: with the
 *     incremental encoder) gives back exactly the input bytes (so decode and encode
 *     cannot drift apart);
 *   - an accepted frame header has version 1 and a length in [52, D11_FRAME_BYTES_MAX],
 *     and re-encodes to the same 52 bytes (reserved bytes aside).
 *
 * Build and run (seed corpus in fuzz/corpus/wire/): `make fuzz`, or
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_wire.c src/rpc/wire.c \
 *       src/core/util.c -o /tmp/fuzz_wire
 *   /tmp/fuzz_wire -max_total_time=60 fuzz/corpus/wire
 * A crashing input is saved by libFuzzer as crash-<sha1>; keep it in fuzz/corpus/wire/ as a
 * regression case.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/wire.h"

#define REQUIRE(c)                                                                         \
    do {                                                                                   \
        if (!(c)) __builtin_trap();                                                        \
    } while (0)

static bool in_input(const char *p, size_t n, const uint8_t *data, size_t size)
{
    if (n == 0) return true;
    const uint8_t *q = (const uint8_t *)p;
    return q >= data && q + n <= data + size;
}

static bool sku_valid(const d11_str *s)
{
    if (s->n < 1 || s->n > D11_SKU_BYTES_MAX) return false;
    for (size_t i = 0; i < s->n; i++) {
        char c = s->p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '.' || c == '-'))
            return false;
    }
    return true;
}

static bool printable(const d11_str *s, size_t max)
{
    if (s->n < 1 || s->n > max) return false;
    for (size_t i = 0; i < s->n; i++)
        if (s->p[i] < 0x20 || s->p[i] > 0x7e) return false; /* printable ASCII, space included (API.md) */
    return true;
}

static d11_buf re; /* reused across inputs */

static void same_as_input(const uint8_t *data, size_t size)
{
    REQUIRE(re.len == size);
    REQUIRE(size == 0 || memcmp(re.data, data, size) == 0);
}

static void fuzz_header(const uint8_t *data, size_t size)
{
    d11_frame_hdr h;
    int rc = d11_frame_hdr_decode(data, size, &h);
    REQUIRE(rc == 0 || rc == 1 || rc == D11_EPROTO);
    if (rc == 1) REQUIRE(size < D11_FRAME_HDR_BYTES);
    if (rc != 0) return;
    REQUIRE(size >= D11_FRAME_HDR_BYTES);
    REQUIRE(h.version == D11_WIRE_VERSION);
    REQUIRE(h.len >= D11_FRAME_HDR_BYTES && h.len <= D11_FRAME_BYTES_MAX);
    uint8_t out[D11_FRAME_HDR_BYTES];
    d11_frame_hdr_encode(&h, out);
    REQUIRE(memcmp(out, data, 10) == 0);
    REQUIRE(memcmp(out + 12, data + 12, D11_FRAME_HDR_BYTES - 12) == 0);
    /* every prefix agrees: "need more" or the same early refusal, never a different answer */
    for (size_t n = 0; n < D11_FRAME_HDR_BYTES; n++) REQUIRE(d11_frame_hdr_decode(data, n, &h) == 1);
}

/* Walk the input as a stream of frames, as d11_conn_frame does. */
static void fuzz_stream(const uint8_t *data, size_t size)
{
    size_t off = 0;
    for (;;) {
        d11_frame_hdr h;
        int rc = d11_frame_hdr_decode(data + off, size - off, &h);
        if (rc != 0 || h.len > size - off) break;
        off += h.len;
        REQUIRE(off <= size);
    }
}

/* ---- generated from the catalogue: limit checks and one fuzz entry per message ---- */

static bool within(uint64_t v, uint64_t lo, uint64_t hi) { return v >= lo && v <= hi; }

enum { FZ_ANY, FZ_PRINT, FZ_SKU };
static bool str_valid(const d11_str *s, int cls, size_t lo, size_t hi, const uint8_t *data, size_t size)
{
    if (!within(s->n, lo, hi) || !in_input(s->p, s->n, data, size)) return false;
    if (s->n == 0) return true;
    if (cls == FZ_SKU) return sku_valid(s);
    if (cls == FZ_PRINT) return printable(s, hi);
    return true;
}

#define W_INT(name, bits, lo, hi) REQUIRE(within(m->name, (uint64_t)(lo), (uint64_t)(hi)));
#define W_STR(name, cls, lo, hi)  REQUIRE(str_valid(&m->name, FZ_##cls, lo, hi, data, size));
#define W_BLOB(name, lo, hi)      REQUIRE(str_valid(&m->name, FZ_ANY, lo, hi, data, size));
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)                                   \
    REQUIRE(within(m->count, lo, hi));                                                     \
    for (uint32_t i_ = 0; i_ < m->count; i_++) valid_##ename(&m->name[i_], opt, data, size);
#define W_FIXARR(name, bits, len, lo, hi)                                                  \
    for (size_t i_ = 0; i_ < (len); i_++) REQUIRE(within(m->name[i_], (uint64_t)(lo), (uint64_t)(hi)));
#define W_COUNT(name, max) REQUIRE(m->name <= (max));
#define W_IF_OPT(KIND, name, ...)                                                          \
    if (opt) {                                                                             \
        W_##KIND(name, __VA_ARGS__)                                                        \
    } else {                                                                               \
        W_ZERO_##KIND(name)                                                                \
    }
#define W_ZERO_INT(name) REQUIRE(m->name == 0);
#define W_ZERO_STR(name) REQUIRE(m->name.n == 0 && m->name.p != NULL);
#define D11_WIRE_ENTRY(name, ctype, FIELDS)                                                \
    static void valid_##name(const ctype *m, bool opt, const uint8_t *data, size_t size)   \
    {                                                                                      \
        (void)opt;                                                                         \
        (void)data;                                                                        \
        (void)size;                                                                        \
        FIELDS                                                                             \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#include "rpc/wire_msgs.def"

#define FZ_ENC_PLAIN(prefix, b, m, opt)    prefix##_enc(b, m)
#define FZ_ENC_OPT(prefix, b, m, opt)      prefix##_enc(b, m, opt)
#define FZ_DEC_PLAIN(prefix, p, n, m, opt) prefix##_dec(p, n, m)
#define FZ_DEC_OPT(prefix, p, n, m, opt)   prefix##_dec(p, n, m, opt)
#define FZ_HAS_OPT_PLAIN 0
#define FZ_HAS_OPT_OPT   1
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS)                              \
    static void fuzz_##name(const uint8_t *data, size_t size)                              \
    {                                                                                      \
        static ctype m; /* routing is 2 KiB */                                             \
        for (int opt = 0; opt <= FZ_HAS_OPT_##api; opt++) {                                \
            int rc = FZ_DEC_##api(prefix, data, size, &m, opt);                            \
            REQUIRE(rc == 0 || rc == D11_EPROTO);                                          \
            if (rc != 0) continue;                                                         \
            valid_##name(&m, opt, data, size);                                             \
            d11_buf_reset(&re);                                                            \
            FZ_ENC_##api(prefix, &re, &m, opt);                                            \
            same_as_input(data, size);                                                     \
        }                                                                                  \
    }
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    static void fuzz_##name(const uint8_t *data, size_t size)                              \
    {                                                                                      \
        d11_wire_iter it;                                                                  \
        d11_wire_list_enc e;                                                               \
        ctype m;                                                                           \
        ectype x;                                                                          \
        int rc = prefix##_dec_begin(&it, data, size, &m);                                  \
        REQUIRE(rc == 0 || rc == D11_EPROTO);                                              \
        if (rc != 0) {                                                                     \
            REQUIRE(prefix##_dec_next(&it, &x) == D11_EPROTO); /* sticky */                \
            return;                                                                        \
        }                                                                                  \
        valid_##name(&m, false, data, size);                                               \
        d11_buf_reset(&re);                                                                \
        prefix##_enc_begin(&e, &re, &m);                                                   \
        uint32_t got = 0;                                                                  \
        while ((rc = prefix##_dec_next(&it, &x)) == 1) {                                   \
            valid_##ename(&x, false, data, size);                                          \
            REQUIRE(prefix##_enc_add(&e, &x) == 0);                                        \
            got++;                                                                         \
        }                                                                                  \
        REQUIRE(rc == 0 || rc == D11_EPROTO);                                              \
        REQUIRE(rc != 0 || got == m.n);                                                    \
        REQUIRE(prefix##_dec_next(&it, &x) == rc); /* the end (or the error) is sticky */  \
        REQUIRE(prefix##_enc_end(&e) == got);                                              \
        if (rc == 0) same_as_input(data, size);                                            \
    }
#include "rpc/wire_msgs.def"

static void fuzz_messages(const uint8_t *data, size_t size)
{
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) fuzz_##name(data, size);
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS) fuzz_##name(data, size);
#include "rpc/wire_msgs.def"
    /* beyond the catalogue's limits: order items repeat no SKU */
    {
        d11_msg_order_create m;
        if (d11_msg_order_create_dec(data, size, &m) == 0)
            for (uint32_t i = 0; i < m.nitems; i++)
                for (uint32_t j = 0; j < i; j++)
                    REQUIRE(m.items[j].sku.n != m.items[i].sku.n ||
                            memcmp(m.items[j].sku.p, m.items[i].sku.p, m.items[i].sku.n) != 0);
    }
    /* the reply's public wrapper (C-string code): only codes without NUL re-encode exactly */
    {
        d11_str code, body;
        if (d11_msg_reply_dec(data, size, &code, &body) == 0) {
            REQUIRE(in_input(code.p, code.n, data, size) && in_input(body.p, body.n, data, size));
            if (!memchr(code.p, 0, code.n) && body.n <= D11_FRAME_BYTES_MAX) {
                char c[65536 + 1];
                memcpy(c, code.p, code.n);
                c[code.n] = 0;
                d11_buf_reset(&re);
                d11_msg_reply_enc(&re, c, body.p, body.n);
                same_as_input(data, size);
            }
        } else {
            REQUIRE(code.n == 0 && body.n == 0 && code.p && body.p);
        }
    }
    /* every frame type has a name */
    if (size >= 2) {
        const char *n = d11_msg_type_name((unsigned)data[0] | (unsigned)data[1] << 8);
        REQUIRE(n && n[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!re.data) d11_buf_init(&re, 4096);
    fuzz_header(data, size);
    fuzz_stream(data, size);
    fuzz_messages(data, size);
    /* a frame's payload is decoded the same way: also try what follows a header */
    if (size >= D11_FRAME_HDR_BYTES) fuzz_messages(data + D11_FRAME_HDR_BYTES, size - D11_FRAME_HDR_BYTES);
    return 0;
}
