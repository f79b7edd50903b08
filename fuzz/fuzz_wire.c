/*
 * fuzz_wire.c — libFuzzer driver for the wire protocol decoders (src/rpc/wire.c).
 *
 * Every input is handed, whole, to d11_frame_hdr_decode and to each d11_msg_*_dec (and
 * d11_routing_dec), then walked as a frame stream the way d11_conn_frame walks its input
 * buffer. Beyond "no crash, no out-of-bounds read" (ASan/UBSan), each accepted input
 * must satisfy the decoder's contract, checked here and trapped on violation:
 *   - decoded values are inside the limits of API.md / limits.h;
 *   - decoded strings point inside the input;
 *   - the encoding is canonical: re-encoding what was decoded gives back exactly the
 *     input bytes (so decode and encode cannot drift apart);
 *   - an accepted frame header has version 1 and a length in [52, D11_FRAME_BYTES_MAX],
 *     and re-encodes to the same 52 bytes (reserved bytes aside).
 *
 * Build and run (seed corpus in fuzz/corpus/wire/):
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

static void fuzz_messages(const uint8_t *data, size_t size)
{
    {
        d11_msg_order_create m;
        if (d11_msg_order_create_dec(data, size, &m) == 0) {
            REQUIRE(m.user_id >= 1 && m.user_id <= (uint64_t)INT64_MAX);
            REQUIRE(printable(&m.idem_key, D11_IDEM_KEY_BYTES_MAX));
            REQUIRE(in_input(m.idem_key.p, m.idem_key.n, data, size));
            REQUIRE(m.nitems >= 1 && m.nitems <= D11_ORDER_ITEMS_MAX);
            for (uint32_t i = 0; i < m.nitems; i++) {
                REQUIRE(sku_valid(&m.items[i].sku));
                REQUIRE(in_input(m.items[i].sku.p, m.items[i].sku.n, data, size));
                REQUIRE(m.items[i].qty >= 1 && m.items[i].qty <= D11_ITEM_QTY_MAX);
                for (uint32_t j = 0; j < i; j++)
                    REQUIRE(m.items[j].sku.n != m.items[i].sku.n ||
                            memcmp(m.items[j].sku.p, m.items[i].sku.p, m.items[i].sku.n) != 0);
            }
            d11_buf_reset(&re);
            d11_msg_order_create_enc(&re, &m);
            same_as_input(data, size);
        }
    }
    for (int pay = 0; pay < 2; pay++) {
        d11_msg_order_ref m;
        if (d11_msg_order_ref_dec(data, size, &m, pay) == 0) {
            if (pay) REQUIRE(printable(&m.payment_id, D11_PAYMENT_ID_BYTES_MAX));
            else REQUIRE(m.payment_id.n == 0);
            REQUIRE(in_input(m.payment_id.p, m.payment_id.n, data, size));
            d11_buf_reset(&re);
            d11_msg_order_ref_enc(&re, &m, pay);
            same_as_input(data, size);
        }
    }
    {
        d11_msg_order_list m;
        if (d11_msg_order_list_dec(data, size, &m) == 0) {
            REQUIRE(m.limit >= 1 && m.limit <= D11_LIST_LIMIT_MAX);
            REQUIRE(m.user_id >= 1 && m.user_id <= (uint64_t)INT64_MAX);
            d11_buf_reset(&re);
            d11_msg_order_list_enc(&re, &m);
            same_as_input(data, size);
        }
    }
    {
        d11_msg_product m;
        if (d11_msg_product_dec(data, size, &m) == 0) {
            REQUIRE(sku_valid(&m.sku));
            REQUIRE(m.title.n <= D11_TITLE_BYTES_MAX && m.category.n <= D11_CATEGORY_BYTES_MAX);
            REQUIRE(in_input(m.title.p, m.title.n, data, size) && in_input(m.category.p, m.category.n, data, size));
            REQUIRE(m.price_cents >= 1 && m.price_cents <= (uint64_t)D11_PRICE_CENTS_MAX);
            REQUIRE(m.stock <= (uint64_t)D11_STOCK_MAX);
            d11_buf_reset(&re);
            d11_msg_product_enc(&re, &m);
            same_as_input(data, size);
        }
    }
    for (int wq = 0; wq < 2; wq++) {
        d11_msg_sku_qty m;
        if (d11_msg_sku_qty_dec(data, size, &m, wq) == 0) {
            REQUIRE(sku_valid(&m.sku));
            if (wq) REQUIRE(m.qty >= 1 && m.qty <= (uint64_t)D11_STOCK_MAX);
            d11_buf_reset(&re);
            d11_msg_sku_qty_enc(&re, &m, wq);
            same_as_input(data, size);
        }
    }
    {
        d11_str code, body;
        if (d11_msg_reply_dec(data, size, &code, &body) == 0) {
            REQUIRE(in_input(code.p, code.n, data, size) && in_input(body.p, body.n, data, size));
            /* the encoder takes a C string code: only codes without NUL re-encode exactly */
            if (!memchr(code.p, 0, code.n) && body.n <= D11_FRAME_BYTES_MAX) {
                char c[65536 + 1];
                memcpy(c, code.p, code.n);
                c[code.n] = 0;
                d11_buf_reset(&re);
                d11_msg_reply_enc(&re, c, body.p, body.n);
                same_as_input(data, size);
            }
        }
    }
    {
        static d11_routing r;
        if (d11_routing_dec(data, size, &r) == 0) {
            REQUIRE(r.ncells >= 1 && r.ncells <= D11_CELLS_MAX);
            for (int s = 0; s < D11_SLOTS; s++) REQUIRE(r.cell_of_slot[s] < r.ncells);
            d11_buf_reset(&re);
            d11_routing_enc(&re, &r);
            same_as_input(data, size);
        }
    }
    {
        d11_msg_inv m;
        if (d11_msg_inv_dec(data, size, &m) == 0) {
            REQUIRE(sku_valid(&m.sku) && m.shadow <= 1 && m.cell < D11_CELLS_MAX);
            d11_buf_reset(&re);
            d11_msg_inv_enc(&re, &m);
            same_as_input(data, size);
        }
    }
    {
        d11_msg_grant_reply m;
        if (d11_msg_grant_reply_dec(data, size, &m) == 0) {
            d11_buf_reset(&re);
            d11_msg_grant_reply_enc(&re, &m);
            same_as_input(data, size);
        }
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
