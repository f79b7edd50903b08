/*
 * test_pg_store.c — the PostgreSQL backends of the storage seam (src/store/cell_pg.c,
 * center_pg.c, pg_util.c) against a real server.
 *
 * Skipped (exit 77) unless D11_PG_URL names a reachable PostgreSQL (the integration
 * harness starts one: see docs/testing.md; by hand: D11_PG_URL=postgresql://u@127.0.0.1:P/db).
 * Uses schemas d11_cell_61 and d11_center (dropped first: never point it at a live d11).
 *
 * What is checked: a new schema loads nothing and records migration 1 (once, also on
 * reopen); one batch holding inserts, an update of an order inserted in the same batch,
 * two updates of one order and two stock records of one SKU commits as the last record
 * of each row; strings with quotes, backslashes, commas and braces round-trip exactly;
 * a batch with an update of a missing order commits nothing (batch_seq unchanged); a
 * connection lost after the COMMIT's outcome arrived resolves to "committed" by reading
 * batch_seq (commit returns 0, rows there) and one lost before COMMIT resolves to "not
 * committed" (D11_ESTORE, no rows), the store keeps working on its new connection; the
 * center's four record types upsert and load back (routing blob included); URLs are
 * printed without their password.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../src/store/cell_pg.c"
#include "store/center_ops.h"
#include "store/center_pg.h"

#include "check.h"

static d11_str S(const char *s) { return (d11_str){s, strlen(s)}; }
static bool str_eq(d11_str a, const char *b) { return a.n == strlen(b) && memcmp(a.p, b, a.n) == 0; }

/* Everything a load yields, decoded. */
typedef struct seen {
    d11_buf raw;
    int     orders, updates, stocks, outboxes;
} seen;

static int collect(void *ctx, const uint8_t *recs, size_t len, uint32_t n)
{
    seen *w = ctx;
    d11_buf_append(&w->raw, recs, len);
    (void)n;
    return 0;
}

static void load_all(d11_store *s, seen *w)
{
    d11_buf_init(&w->raw, 1024);
    w->orders = w->updates = w->stocks = w->outboxes = 0;
    CHECK_RC(d11_store_load(s, collect, w), 0);
    d11_wdec d;
    d11_wdec_init(&d, (const uint8_t *)w->raw.data, w->raw.len);
    cell_op op;
    while (!d11_wdec_done(&d) && cell_op_next(&d, &op) == 0) {
        if (op.kind == CELL_OP_ORDER_INSERT) w->orders++;
        if (op.kind == CELL_OP_ORDER_UPDATE) w->updates++;
        if (op.kind == CELL_OP_STOCK) w->stocks++;
        if (op.kind == CELL_OP_OUTBOX) w->outboxes++;
    }
}

/* Find the record of a kind and id (order id, or 0 for the first) in a load. */
static bool find(seen *w, int kind, uint64_t id, cell_op *out)
{
    d11_wdec d;
    d11_wdec_init(&d, (const uint8_t *)w->raw.data, w->raw.len);
    while (!d11_wdec_done(&d) && cell_op_next(&d, out) == 0) {
        if (out->kind != kind) continue;
        if (!id) return true;
        if (kind == CELL_OP_ORDER_INSERT && out->u.order.id == id) return true;
        if (kind == CELL_OP_ORDER_UPDATE && out->u.update.id == id) return true;
    }
    return false;
}

static void add_order(d11_buf *b, uint64_t id, const char *idem, const char *sku)
{
    cell_op_order o = {.shadow = 0, .status = ST_PENDING, .nitems = 1, .id = id, .user_id = 7,
                       .body_hash = 0xfedcba9876543210ull, .total = 300, .idem = S(idem),
                       .created_at = 1000, .expires_at = 2000};
    o.items[0] = (cell_op_item){S(sku), 3, 100};
    cell_op_order_enc(b, &o);
}

static int64_t seq_of(const char *url)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, "SELECT seq FROM d11_cell_61.batch_seq");
    int64_t v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

static void test_cell(const char *url)
{
    d11_store *st = d11_cell_pg_open(url, 61, D11_DUR_SYNC);
    CHECK(st != NULL);
    if (!st) return;
    seen w;
    load_all(st, &w);
    CHECK_EQ(w.raw.len, 0);
    d11_buf_free(&w.raw);

    /* One batch: two orders, the first paid then cancelled in the same batch, stock twice. */
    const char *odd = "k\"e,y{}\\ \xc3\xa9";
    d11_buf b;
    d11_buf_init(&b, 1024);
    add_order(&b, 101, odd, "S{1},\"x\"");
    add_order(&b, 102, "plain", "S2");
    cell_op_update_enc(&b, &(cell_op_update){0, ST_PAID, 101, S("pay\"1"), 1500});
    cell_op_update_enc(&b, &(cell_op_update){0, ST_CANCELLED, 101, {"", 0}, 1600});
    cell_op_stock_enc(&b, &(cell_op_stock){S("S2"), 0, 100, 10, 0, 1});
    cell_op_stock_enc(&b, &(cell_op_stock){S("S2"), 0, 100, 10, 0, 2});
    cell_op_outbox_enc(&b, &(cell_op_outbox){0, 5, 101, S("order.created"), S("{\"a\":\"b,c\"}"), 1000});
    cell_op_outbox_enc(&b, &(cell_op_outbox){0, 6, 102, S("order.created"), S("{}"), 1000});
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 8), 0);
    CHECK_EQ(seq_of(url), 1);

    load_all(st, &w);
    CHECK_EQ(w.orders, 2);
    CHECK_EQ(w.updates, 1); /* 102 is still pending: no update record */
    CHECK_EQ(w.stocks, 1);
    CHECK_EQ(w.outboxes, 1);
    cell_op op;
    CHECK(find(&w, CELL_OP_ORDER_INSERT, 101, &op) && str_eq(op.u.order.idem, odd) &&
          str_eq(op.u.order.items[0].sku, "S{1},\"x\"") && op.u.order.body_hash == 0xfedcba9876543210ull &&
          op.u.order.items[0].qty == 3 && op.u.order.total == 300);
    CHECK(find(&w, CELL_OP_ORDER_UPDATE, 101, &op) && op.u.update.status == ST_CANCELLED &&
          op.u.update.payment.n == 0 && op.u.update.updated_at == 1600);
    CHECK(find(&w, CELL_OP_STOCK, 0, &op) && op.u.stock.sold == 2 && op.u.stock.granted == 10);
    CHECK(find(&w, CELL_OP_OUTBOX, 0, &op) && op.u.outbox.event_id == 6);
    d11_buf_free(&w.raw);

    /* An update of a missing order: the whole batch is refused, nothing stored. */
    d11_buf_reset(&b);
    add_order(&b, 103, "k3", "S2");
    cell_op_update_enc(&b, &(cell_op_update){0, ST_PAID, 999, S("p"), 1700});
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 2), D11_ESTORE);
    CHECK_EQ(seq_of(url), 1);
    load_all(st, &w);
    CHECK_EQ(w.orders, 2);
    d11_buf_free(&w.raw);

    /* Connection lost after the outcome arrived: read back, committed, acknowledged once. */
    cell_pg *cp = (cell_pg *)st;
    d11_buf_reset(&b);
    add_order(&b, 104, "k4", "S2");
    cp->test_lose = 2;
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 1), 0);
    CHECK_EQ(seq_of(url), 2);
    CHECK_EQ(cp->seq, 2);
    /* Connection lost before COMMIT: read back, not committed. */
    d11_buf_reset(&b);
    add_order(&b, 105, "k5", "S2");
    cp->test_lose = 1;
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 1), D11_ESTORE);
    CHECK_EQ(seq_of(url), 2);
    /* The store goes on over its new connection. */
    d11_buf_reset(&b);
    add_order(&b, 106, "k6", "S2");
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 1), 0);
    load_all(st, &w);
    CHECK_EQ(w.orders, 4); /* 101, 102, 104, 106 */
    CHECK(find(&w, CELL_OP_ORDER_INSERT, 104, &op));
    CHECK(!find(&w, CELL_OP_ORDER_INSERT, 105, &op));
    d11_buf_free(&w.raw);
    d11_store_close(st);

    /* Reopen: same rows, migration 1 recorded once, the batch number carried on. */
    st = d11_cell_pg_open(url, 61, D11_DUR_ASYNC);
    CHECK(st != NULL);
    if (!st) return;
    CHECK_EQ(((cell_pg *)st)->seq, 3);
    CHECK_RC(d11_store_sync(st), 0);
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, "SELECT count(*), max(version) FROM d11_cell_61.migrations");
    CHECK(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "1") && !strcmp(PQgetvalue(r, 0, 1), "1"));
    PQclear(r);
    PQfinish(c);
    d11_store *ro = NULL;
    CHECK_RC(d11_cell_pg_open_ro(url, 61, &ro), 0);
    d11_store *none = NULL;
    CHECK_RC(d11_cell_pg_open_ro(url, 62, &none), -ENOENT); /* a cell that never started */
    CHECK(none == NULL);
    if (ro) {
        load_all(ro, &w);
        CHECK_EQ(w.orders, 4);
        d11_buf_free(&w.raw);
        d11_store_close(ro);
    }
    d11_store_close(st);
    d11_buf_free(&b);
}

static int center_collect(void *ctx, const uint8_t *recs, size_t len, uint32_t n)
{
    d11_buf *out = ctx;
    (void)n;
    d11_buf_append(out, recs, len);
    return 0;
}

static void test_center(const char *url)
{
    d11_store *st = d11_center_pg_open(url, D11_DUR_SYNC);
    CHECK(st != NULL);
    if (!st) return;
    d11_buf b, got;
    d11_buf_init(&b, 4096);
    d11_buf_init(&got, 4096);
    d11_routing rt;
    d11_routing_default(&rt, 3);
    rt.version = 7;
    rt.cell_of_slot[5] = 2;
    center_op_routing_enc(&b, &rt);
    center_op_product_enc(&b, &(center_op_product){S("P'1"), S("a \"title\""), S("cat"), 100, 50, 9});
    center_op_stock_enc(&b, &(center_op_stock){S("P'1"), 0, 50, 40});
    center_op_ledger_enc(&b, &(center_op_ledger){S("P'1"), 0, 2, 10, 0, 3});
    center_op_stock_enc(&b, &(center_op_stock){S("P'1"), 0, 50, 30}); /* replaces the row */
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 5), 0);
    CHECK_RC(d11_store_load(st, center_collect, &got), 0);
    size_t off = 0;
    int n = 0, routing_first = 0;
    while (off < got.len) {
        size_t rl;
        center_op op;
        if (center_op_next((const uint8_t *)got.data + off, got.len - off, &rl) < 0 ||
            center_op_dec((const uint8_t *)got.data + off, rl, &op) < 0) {
            CHECK(!"a loaded center record does not decode");
            break;
        }
        if (n == 0) routing_first = op.type == CENTER_OP_ROUTING;
        if (op.type == CENTER_OP_ROUTING)
            CHECK(op.u.routing.version == 7 && op.u.routing.ncells == 3 && op.u.routing.cell_of_slot[5] == 2);
        if (op.type == CENTER_OP_STOCK) CHECK_EQ(op.u.stock.free, 30);
        if (op.type == CENTER_OP_PRODUCT) CHECK(str_eq(op.u.product.title, "a \"title\"") && op.u.product.price_cents == 100);
        if (op.type == CENTER_OP_LEDGER) CHECK(op.u.ledger.cell == 2 && op.u.ledger.sold_reported == 3);
        off += rl;
        n++;
    }
    CHECK_EQ(n, 4);
    CHECK(routing_first);
    d11_buf_free(&b);
    d11_buf_free(&got);
    d11_store_close(st);
}

static void test_redact(void)
{
    char out[256];
    d11_pg_redact("postgresql://alice:s3cret@db1:5433/shop?sslmode=disable", out, sizeof out);
    CHECKF(strstr(out, "s3cret") == NULL && strstr(out, "host=db1") && strstr(out, "user=alice"), "%s", out);
    d11_pg_redact("host=db2 password=hunter2 dbname=x", out, sizeof out);
    CHECKF(strstr(out, "hunter2") == NULL && strstr(out, "dbname=x"), "%s", out);
    CHECK(d11_pg_is_url("postgres://x/y") && d11_pg_is_url("host=a") && !d11_pg_is_url("") && !d11_pg_is_url("./data"));
}

int main(void)
{
    d11_log_init("test", D11_LOG_ERROR);
    test_redact();
    const char *url = getenv("D11_PG_URL");
    if (!url || !*url) {
        printf("skipped: D11_PG_URL is not set\n");
        return 77;
    }
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        printf("skipped: no PostgreSQL at D11_PG_URL: %s", PQerrorMessage(c));
        PQfinish(c);
        return 77;
    }
    PGresult *r = PQexec(c, "DROP SCHEMA IF EXISTS d11_cell_61 CASCADE; DROP SCHEMA IF EXISTS d11_cell_62 CASCADE;"
                            " DROP SCHEMA IF EXISTS d11_center CASCADE");
    PQclear(r);
    PQfinish(c);
    test_cell(url);
    test_center(url);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
