/*
 * test_cell_ops.c — unit test of src/store/cell_ops.{h,c}: the cell's op-log records, the
 * one format every cell backend and `d11 audit` read.
 *
 * What is checked:
 *   - every record kind (ORDER_INSERT, ORDER_UPDATE, STOCK, OUTBOX) round-trips: encode,
 *     decode with cell_op_next, every field equal, the decoder ends exactly at the end of
 *     the stream; values at their limits (16 items, 64-byte SKU, 128-byte idempotency key
 *     and payment id, returned + sold == granted, status 3) are accepted;
 *   - the decoder rejects (D11_EPROTO) every truncated prefix of every record, and
 *     out-of-limit values written by hand (the encoders assert, so raw d11_wenc_* here):
 *     status > 3, nitems 0 or > 16, an empty or too long SKU, a too long idempotency key
 *     or payment id, shadow > 1, returned + sold > granted (also when the sum overflows
 *     64 bits), returned > granted, unknown kinds;
 *   - cell_status_name / cell_status_parse agree.
 * Single-threaded, no files. Output: failed checks, then "N passed, N failed"; exit 1 on
 * failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "store/cell_ops.h"

#include "check.h"

static bool str_eq(d11_str a, const char *p, size_t n) { return a.n == n && (n == 0 || memcmp(a.p, p, n) == 0); }

/* Decode exactly one record from buf[0..n): the result of cell_op_next, and whether the
 * decoder consumed every byte. */
static int dec_one(const void *buf, size_t n, cell_op *op, bool *all)
{
    d11_wdec d;
    d11_wdec_init(&d, buf, n);
    int rc = cell_op_next(&d, op);
    *all = d11_wdec_done(&d);
    return rc;
}

/* Every strict prefix of a valid record must be refused. Returns how many were accepted. */
static int prefixes_accepted(const d11_buf *b)
{
    int bad = 0;
    for (size_t n = 0; n < b->len; n++) {
        uint8_t *copy = malloc(n ? n : 1); /* an exact-size copy: ASan sees any over-read */
        if (!copy) abort();
        memcpy(copy, b->data, n);
        cell_op op;
        bool all;
        if (dec_one(copy, n, &op, &all) != D11_EPROTO) {
            printf("  prefix of %zu / %zu bytes accepted (kind %u)\n", n, b->len, (unsigned)(uint8_t)b->data[0]);
            bad++;
        }
        free(copy);
    }
    return bad;
}

static void fill(char *p, size_t n, char c)
{
    memset(p, c, n);
    p[n] = 0;
}

/* ---- round trips ---- */

static void test_round_trip(void)
{
    char sku64[D11_SKU_BYTES_MAX + 1], idem128[D11_IDEM_KEY_BYTES_MAX + 1], pay128[D11_PAYMENT_ID_BYTES_MAX + 1];
    fill(sku64, D11_SKU_BYTES_MAX, 'S');
    fill(idem128, D11_IDEM_KEY_BYTES_MAX, 'k');
    fill(pay128, D11_PAYMENT_ID_BYTES_MAX, 'p');
    static char skus[D11_ORDER_ITEMS_MAX][16];

    cell_op_order o = {.shadow = 1, .status = ST_EXPIRED, .nitems = D11_ORDER_ITEMS_MAX, .id = 0x123456789abcdef0ull,
                       .user_id = UINT64_MAX, .body_hash = 0xfeedfacecafebeefull, .total = 1ull << 40,
                       .idem = {idem128, D11_IDEM_KEY_BYTES_MAX}, .created_at = 1764547200123,
                       .expires_at = -5 /* negative times survive the u64 encoding */};
    for (int i = 0; i < D11_ORDER_ITEMS_MAX; i++) {
        snprintf(skus[i], sizeof skus[i], "SKU-%d", i);
        o.items[i] = (cell_op_item){{skus[i], strlen(skus[i])}, (uint32_t)(i * 1000 + 1), (uint64_t)i * 7919};
    }
    o.items[3].sku = (d11_str){sku64, D11_SKU_BYTES_MAX};
    o.items[4].qty = UINT32_MAX;
    cell_op_order o1 = {.shadow = 0, .status = ST_PENDING, .nitems = 1, .id = 1, .user_id = 0, .body_hash = 0,
                        .total = 0, .idem = {"", 0}, .created_at = 0, .expires_at = 0};
    o1.items[0] = (cell_op_item){{"A", 1}, 1, 0};
    cell_op_update u = {.shadow = 1, .status = ST_PAID, .id = 99, .payment = {pay128, D11_PAYMENT_ID_BYTES_MAX},
                        .updated_at = 1764547200999};
    cell_op_update u0 = {.shadow = 0, .status = ST_CANCELLED, .id = UINT64_MAX, .payment = {NULL, 0},
                         .updated_at = INT64_MIN};
    cell_op_stock s = {{sku64, D11_SKU_BYTES_MAX}, 1, 199900, 1000000, 400000, 600000}; /* returned + sold == granted */
    cell_op_stock s0 = {{"B", 1}, 0, 0, 0, 0, 0};
    static const char payload[] = "{\"type\":\"order.created\",\"x\":\"\\u0000\"}";
    cell_op_outbox e = {.shadow = 1, .event_id = 1ull << 50, .order_id = 77, .type = {"order.created", 13},
                        .payload = {payload, sizeof payload - 1}, .created_at = 42};
    cell_op_outbox e0 = {.shadow = 0, .event_id = 1, .order_id = 0, .type = {"", 0}, .payload = {"", 0},
                         .created_at = 0};

    d11_buf b;
    d11_buf_init(&b, 256);
    cell_op_order_enc(&b, &o);
    cell_op_order_enc(&b, &o1);
    cell_op_update_enc(&b, &u);
    cell_op_update_enc(&b, &u0);
    cell_op_stock_enc(&b, &s);
    cell_op_stock_enc(&b, &s0);
    cell_op_outbox_enc(&b, &e);
    cell_op_outbox_enc(&b, &e0);

    d11_wdec d;
    d11_wdec_init(&d, b.data, b.len);
    cell_op op;

    /* ORDER_INSERT, at the limits */
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_ORDER_INSERT);
    const cell_op_order *r = &op.u.order;
    CHECK(r->shadow == o.shadow && r->status == o.status && r->nitems == o.nitems);
    CHECK(r->id == o.id && r->user_id == o.user_id && r->body_hash == o.body_hash && r->total == o.total);
    CHECK(str_eq(r->idem, idem128, D11_IDEM_KEY_BYTES_MAX));
    CHECK(r->created_at == o.created_at && r->expires_at == o.expires_at);
    int item_bad = 0;
    for (int i = 0; i < D11_ORDER_ITEMS_MAX; i++)
        if (!str_eq(r->items[i].sku, o.items[i].sku.p, o.items[i].sku.n) || r->items[i].qty != o.items[i].qty ||
            r->items[i].price != o.items[i].price)
            item_bad++;
    CHECK_EQ(item_bad, 0);
    /* ORDER_INSERT, minimal */
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_ORDER_INSERT);
    CHECK(r->nitems == 1 && r->status == ST_PENDING && r->id == 1 && r->idem.n == 0);
    CHECK(str_eq(r->items[0].sku, "A", 1) && r->items[0].qty == 1 && r->items[0].price == 0);
    /* ORDER_UPDATE with and without a payment id */
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_ORDER_UPDATE);
    CHECK(op.u.update.shadow == 1 && op.u.update.status == ST_PAID && op.u.update.id == 99);
    CHECK(str_eq(op.u.update.payment, pay128, D11_PAYMENT_ID_BYTES_MAX));
    CHECK(op.u.update.updated_at == u.updated_at);
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_ORDER_UPDATE);
    CHECK(op.u.update.shadow == 0 && op.u.update.status == ST_CANCELLED && op.u.update.id == UINT64_MAX);
    CHECK(op.u.update.payment.n == 0 && op.u.update.updated_at == INT64_MIN);
    /* STOCK */
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_STOCK);
    CHECK(str_eq(op.u.stock.sku, sku64, D11_SKU_BYTES_MAX) && op.u.stock.shadow == 1);
    CHECK(op.u.stock.price == 199900 && op.u.stock.granted == 1000000 && op.u.stock.returned == 400000 &&
          op.u.stock.sold == 600000);
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_STOCK);
    CHECK(str_eq(op.u.stock.sku, "B", 1) && op.u.stock.granted == 0 && op.u.stock.sold == 0);
    /* OUTBOX */
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_OUTBOX);
    CHECK(op.u.outbox.shadow == 1 && op.u.outbox.event_id == e.event_id && op.u.outbox.order_id == 77);
    CHECK(str_eq(op.u.outbox.type, "order.created", 13));
    CHECK(str_eq(op.u.outbox.payload, payload, sizeof payload - 1));
    CHECK(op.u.outbox.created_at == 42);
    CHECK_RC(cell_op_next(&d, &op), 0);
    CHECK_EQ(op.kind, CELL_OP_OUTBOX);
    CHECK(op.u.outbox.event_id == 1 && op.u.outbox.type.n == 0 && op.u.outbox.payload.n == 0);
    /* exactly at the end; one more read is refused */
    CHECK(d11_wdec_done(&d));
    CHECK_RC(cell_op_next(&d, &op), D11_EPROTO);

    /* every strict prefix of every record is refused */
    d11_buf one;
    d11_buf_init(&one, 256);
    cell_op_order_enc(&one, &o);
    CHECK_EQ(prefixes_accepted(&one), 0);
    d11_buf_reset(&one);
    cell_op_update_enc(&one, &u);
    CHECK_EQ(prefixes_accepted(&one), 0);
    d11_buf_reset(&one);
    cell_op_update_enc(&one, &u0);
    CHECK_EQ(prefixes_accepted(&one), 0);
    d11_buf_reset(&one);
    cell_op_stock_enc(&one, &s);
    CHECK_EQ(prefixes_accepted(&one), 0);
    d11_buf_reset(&one);
    cell_op_outbox_enc(&one, &e);
    CHECK_EQ(prefixes_accepted(&one), 0);
    d11_buf_free(&one);
    d11_buf_free(&b);
}

/* ---- hand-written records with values out of their limits ---- */

typedef struct order_raw {
    uint8_t  shadow, status, nitems;
    size_t   idem_n, sku_n;
    uint32_t items_written; /* how many item entries follow (may differ from nitems) */
} order_raw;

static void enc_order_raw(d11_buf *b, const order_raw *r)
{
    char idem[300], sku[300];
    fill(idem, r->idem_n, 'i');
    fill(sku, r->sku_n, 's');
    d11_wenc_u8(b, CELL_OP_ORDER_INSERT);
    d11_wenc_u8(b, r->shadow);
    d11_wenc_u64(b, 1);
    d11_wenc_u64(b, 2);
    d11_wenc_str(b, idem, r->idem_n);
    d11_wenc_u64(b, 3);
    d11_wenc_u8(b, r->status);
    d11_wenc_u64(b, 4);
    d11_wenc_u64(b, 5);
    d11_wenc_u64(b, 6);
    d11_wenc_u8(b, r->nitems);
    for (uint32_t i = 0; i < r->items_written; i++) {
        d11_wenc_str(b, sku, r->sku_n);
        d11_wenc_u32(b, 1);
        d11_wenc_u64(b, 1);
    }
}

static void enc_update_raw(d11_buf *b, uint8_t shadow, uint8_t status, size_t pay_n)
{
    char pay[300];
    fill(pay, pay_n, 'p');
    d11_wenc_u8(b, CELL_OP_ORDER_UPDATE);
    d11_wenc_u8(b, shadow);
    d11_wenc_u64(b, 1);
    d11_wenc_u8(b, status);
    d11_wenc_str(b, pay, pay_n);
    d11_wenc_u64(b, 2);
}

static void enc_stock_raw(d11_buf *b, size_t sku_n, uint8_t shadow, uint64_t granted, uint64_t returned, uint64_t sold)
{
    char sku[300];
    fill(sku, sku_n, 's');
    d11_wenc_u8(b, CELL_OP_STOCK);
    d11_wenc_str(b, sku, sku_n);
    d11_wenc_u8(b, shadow);
    d11_wenc_u64(b, 100);
    d11_wenc_u64(b, granted);
    d11_wenc_u64(b, returned);
    d11_wenc_u64(b, sold);
}

static void enc_outbox_raw(d11_buf *b, uint8_t shadow)
{
    d11_wenc_u8(b, CELL_OP_OUTBOX);
    d11_wenc_u8(b, shadow);
    d11_wenc_u64(b, 1);
    d11_wenc_u64(b, 2);
    d11_wenc_str(b, "t", 1);
    d11_wenc_blob(b, "{}", 2);
    d11_wenc_u64(b, 3);
}

/* The decoder's answer for the record in b (then b is reset). */
static int dec_reset(d11_buf *b)
{
    cell_op op;
    bool all;
    int rc = dec_one(b->data, b->len, &op, &all);
    if (rc == 0 && !all) rc = 1; /* accepted but left bytes: the test layout is wrong */
    d11_buf_reset(b);
    return rc;
}

static void test_limits(void)
{
    d11_buf b;
    d11_buf_init(&b, 256);
    const size_t SK = D11_SKU_BYTES_MAX, IK = D11_IDEM_KEY_BYTES_MAX, PK = D11_PAYMENT_ID_BYTES_MAX;
    const uint8_t IM = D11_ORDER_ITEMS_MAX;

    /* the raw encoders themselves produce valid records at the limits */
    enc_order_raw(&b, &(order_raw){1, ST_EXPIRED, IM, IK, SK, IM});
    CHECK_RC(dec_reset(&b), 0);
    enc_update_raw(&b, 1, ST_EXPIRED, PK);
    CHECK_RC(dec_reset(&b), 0);
    enc_stock_raw(&b, SK, 1, 10, 4, 6);
    CHECK_RC(dec_reset(&b), 0);
    enc_outbox_raw(&b, 1);
    CHECK_RC(dec_reset(&b), 0);

    /* ORDER_INSERT */
    enc_order_raw(&b, &(order_raw){0, 4, 1, 1, 1, 1}); /* status > 3 */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, 255, 1, 1, 1, 1});
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 0, 1, 1, 0}); /* no items */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, (uint8_t)(IM + 1), 1, 1, (uint32_t)IM + 1}); /* 17 items */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 255, 1, 1, 255});
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 1, 1, SK + 1, 1}); /* SKU too long */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 1, 1, 0, 1}); /* empty SKU */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 1, IK + 1, 1, 1}); /* idempotency key too long */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){2, ST_PENDING, 1, 1, 1, 1}); /* shadow > 1 */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_order_raw(&b, &(order_raw){0, ST_PENDING, 3, 1, 1, 2}); /* says 3 items, holds 2 */
    CHECK_RC(dec_reset(&b), D11_EPROTO);

    /* ORDER_UPDATE */
    enc_update_raw(&b, 0, 4, 1);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_update_raw(&b, 0, ST_PAID, PK + 1);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_update_raw(&b, 2, ST_PAID, 1);
    CHECK_RC(dec_reset(&b), D11_EPROTO);

    /* STOCK */
    enc_stock_raw(&b, SK + 1, 0, 10, 0, 0);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 0, 0, 10, 0, 0);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 2, 10, 0, 0);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, 4, 7); /* returned + sold > granted */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, 0, 11);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, 11, 0); /* returned > granted */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, 1, UINT64_MAX); /* the sum wraps to 0 in 64 bits: still refused */
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, UINT64_MAX, 2);
    CHECK_RC(dec_reset(&b), D11_EPROTO);
    enc_stock_raw(&b, 1, 0, 10, 4, 6); /* exactly granted: fine */
    CHECK_RC(dec_reset(&b), 0);

    /* OUTBOX */
    enc_outbox_raw(&b, 2);
    CHECK_RC(dec_reset(&b), D11_EPROTO);

    /* unknown kinds */
    static const uint8_t kinds[] = {0, 5, 99, 255};
    for (size_t i = 0; i < sizeof kinds; i++) {
        d11_wenc_u8(&b, kinds[i]);
        enc_outbox_raw(&b, 0); /* a valid record after it changes nothing */
        CHECKF(dec_reset(&b) == D11_EPROTO, "kind %u accepted", kinds[i]);
    }
    d11_buf_free(&b);
}

static void test_status_names(void)
{
    for (int k = 0; k < 4; k++)
        CHECK_EQ(cell_status_parse(cell_status_name[k], strlen(cell_status_name[k])), k);
    CHECK_RC(cell_status_parse("paid", 4), ST_PAID);
    CHECK_RC(cell_status_parse("pending_payment", 15), ST_PENDING);
    CHECK_RC(cell_status_parse("pai", 3), -1);
    CHECK_RC(cell_status_parse("paidx", 5), -1);
    CHECK_RC(cell_status_parse("", 0), -1);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    d11_log_init("test_cell_ops", D11_LOG_ERROR + 1);
    test_round_trip();
    test_limits();
    test_status_names();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
