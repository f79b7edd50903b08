/*
 * test_center_store.c — the center's side of the storage seam: op records
 * (src/store/center_ops.h) and the SQLite backend (src/store/center_sqlite.c).
 *
 * What is checked: every record type round-trips (encode then decode gives the same
 * fields); center_op_next splits a log and refuses a short or overlong record; decode
 * refuses unknown ops, trailing bytes and fields outside their limits; the SQLite backend
 * loads nothing from a new file, commits a log in one transaction (an upsert per record,
 * so a newer row replaces an older one), yields ROUTING first and every PRODUCT before
 * any STOCK or LEDGER row, refuses a log that does not decode or does not hold the
 * announced record count and then keeps nothing of it; a center.db written with the
 * schema and statements of earlier d11 versions loads unchanged into a center
 * (center_open over this backend), and a center run over this backend reopens with the
 * same ledger. The outbox: EVENT / EVENT_PRUNE records round-trip and bad ones are
 * refused; a center over SQLite writes product.created / product.restocked with its
 * commit (ids 1, 2, trace id, at, data), the read-only reader sees them, ids continue
 * after a reopen, and a prune deletes through the watermark in a later commit.
 *
 * Files go to $TMPDIR (the runner gives each test its own). Output: one line per failed
 * check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "center/center.h"
#include "center/center_events.h"
#include "store/center_outbox_read.h"
#include "core/clock.h"
#include "core/config.h"
#include "core/util.h"
#include "store/center_ops.h"
#include "store/center_sqlite.h"

#include "check.h"

static d11_str S(const char *s) { return (d11_str){s, strlen(s)}; }
static bool str_eq(d11_str a, const char *b) { return a.n == strlen(b) && memcmp(a.p, b, a.n) == 0; }

static void test_roundtrip(void)
{
    d11_buf b;
    d11_buf_init(&b, 256);
    center_op_product_enc(&b, &(center_op_product){.sku = S("SKU 1"), .title = S("Phone"), .category = S("phones"),
                                                   .price_cents = 199900, .stock_total = 100, .created_at = -5});
    center_op_stock_enc(&b, &(center_op_stock){.sku = S("SKU 1"), .shadow = 1, .total = 100, .free = 40});
    center_op_ledger_enc(&b, &(center_op_ledger){.sku = S("SKU 1"), .shadow = 0, .cell = 63, .granted = 9,
                                                 .returned = 2, .sold_reported = 7});
    d11_routing r;
    d11_routing_default(&r, 5);
    r.version = 77;
    center_op_routing_enc(&b, &r);

    const uint8_t *p = (const uint8_t *)b.data;
    size_t off = 0, n;
    center_op op;
    int types[4] = {0}, k = 0;
    while (off < b.len && k < 4) {
        CHECK_RC(center_op_next(p + off, b.len - off, &n), 0);
        CHECK_RC(center_op_dec(p + off, n, &op), 0);
        types[k++] = op.type;
        switch (op.type) {
        case CENTER_OP_PRODUCT:
            CHECK(str_eq(op.u.product.sku, "SKU 1") && str_eq(op.u.product.title, "Phone") &&
                  str_eq(op.u.product.category, "phones"));
            CHECK(op.u.product.price_cents == 199900 && op.u.product.stock_total == 100 && op.u.product.created_at == -5);
            break;
        case CENTER_OP_STOCK:
            CHECK(str_eq(op.u.stock.sku, "SKU 1") && op.u.stock.shadow == 1 && op.u.stock.total == 100 &&
                  op.u.stock.free == 40);
            break;
        case CENTER_OP_LEDGER:
            CHECK(op.u.ledger.cell == 63 && op.u.ledger.granted == 9 && op.u.ledger.returned == 2 &&
                  op.u.ledger.sold_reported == 7 && op.u.ledger.shadow == 0);
            break;
        case CENTER_OP_ROUTING: CHECK(memcmp(&op.u.routing, &r, sizeof r) == 0); break;
        }
        /* Every proper prefix is refused. */
        size_t short_n;
        CHECK_RC(center_op_next(p + off, n - 1, &short_n), D11_EPROTO);
        CHECK_RC(center_op_dec(p + off, n - 1, &op), D11_EPROTO);
        off += n;
    }
    CHECK_EQ(off, b.len);
    CHECK(types[0] == CENTER_OP_PRODUCT && types[1] == CENTER_OP_STOCK && types[2] == CENTER_OP_LEDGER &&
          types[3] == CENTER_OP_ROUTING);
    CHECK_RC(center_op_next(p, 4, &n), D11_EPROTO);

    /* Decode refuses what the encoder would never write. */
    uint8_t rec[64];
    d11_buf t;
    d11_buf_init(&t, 64);
    center_op_stock_enc(&t, &(center_op_stock){.sku = S("A"), .shadow = 0, .total = 5, .free = 5});
    memcpy(rec, t.data, t.len);
    size_t len = t.len;
    CHECK_RC(center_op_dec(rec, len, &op), 0);
    rec[0] = 9; /* unknown op */
    CHECK_RC(center_op_dec(rec, len, &op), D11_EPROTO);
    rec[0] = CENTER_OP_STOCK;
    rec[CENTER_OP_HDR_BYTES + 3] = 2; /* shadow 2 (after u16 len + 1 sku byte) */
    CHECK_RC(center_op_dec(rec, len, &op), D11_EPROTO);
    rec[CENTER_OP_HDR_BYTES + 3] = 0;
    rec[CENTER_OP_HDR_BYTES + 12] = 6; /* free (low byte) 6 > total 5 */
    CHECK_RC(center_op_dec(rec, len, &op), D11_EPROTO);
    /* Trailing bytes inside the announced length. */
    d11_buf_reset(&t);
    center_op_stock_enc(&t, &(center_op_stock){.sku = S("A"), .shadow = 0, .total = 5, .free = 5});
    d11_buf_append(&t, "x", 1);
    t.data[1]++;
    CHECK_RC(center_op_dec((const uint8_t *)t.data, t.len, &op), D11_EPROTO);
    d11_buf_free(&t);
    d11_buf_free(&b);
}

/* ---- SQLite backend ---- */

typedef struct seen {
    int      n, types[64];
    uint64_t granted_c1;
    uint32_t routing_version;
    int      order_bad;
    bool     product_seen;
} seen;

static int collect(void *ctx, const uint8_t *rec, size_t len, uint32_t nrecs)
{
    seen *s = ctx;
    CHECK_EQ(nrecs, 1); /* the SQLite backend hands over one row at a time */
    center_op op;
    CHECK_RC(center_op_dec(rec, len, &op), 0);
    if (s->n < 64) s->types[s->n] = op.type;
    s->n++;
    if (op.type == CENTER_OP_ROUTING) {
        s->routing_version = op.u.routing.version;
        s->order_bad += s->n != 1; /* first */
    }
    if (op.type == CENTER_OP_PRODUCT) s->product_seen = true;
    if (op.type == CENTER_OP_STOCK || op.type == CENTER_OP_LEDGER) s->order_bad += !s->product_seen;
    if (op.type == CENTER_OP_LEDGER && op.u.ledger.cell == 1) s->granted_c1 = op.u.ledger.granted;
    return 0;
}

static void path_in_tmp(char *out, size_t n, const char *name)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, n, "%s/%s", t && *t ? t : "/tmp", name);
    unlink(out);
}

static void test_sqlite_backend(void)
{
    char path[512];
    path_in_tmp(path, sizeof path, "test_center_store.db");
    d11_store *st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK(st != NULL);
    if (!st) return;
    seen s = {0};
    CHECK_RC(d11_store_load(st, collect, &s), 0);
    CHECK_EQ(s.n, 0);

    d11_buf b;
    d11_buf_init(&b, 4096);
    /* Deliberately stock and ledger rows of P before the routing row: load reorders. */
    center_op_product_enc(&b, &(center_op_product){.sku = S("P"), .title = S("t"), .category = S("c"),
                                                   .price_cents = 3, .stock_total = 10, .created_at = 1});
    center_op_stock_enc(&b, &(center_op_stock){.sku = S("P"), .shadow = 0, .total = 10, .free = 6});
    center_op_stock_enc(&b, &(center_op_stock){.sku = S("P"), .shadow = 1, .total = 10, .free = 10});
    center_op_ledger_enc(&b, &(center_op_ledger){.sku = S("P"), .cell = 1, .granted = 4});
    d11_routing r;
    d11_routing_default(&r, 2);
    center_op_routing_enc(&b, &r);
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 5), 0);
    /* Upsert: a newer ledger row replaces the older one. */
    d11_buf_reset(&b);
    center_op_ledger_enc(&b, &(center_op_ledger){.sku = S("P"), .cell = 1, .granted = 7, .sold_reported = 2});
    center_op_stock_enc(&b, &(center_op_stock){.sku = S("P"), .shadow = 0, .total = 10, .free = 3});
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 2), 0);
    /* A log with a count that does not match, and one with garbage: refused, rolled back. */
    d11_buf_reset(&b);
    center_op_ledger_enc(&b, &(center_op_ledger){.sku = S("P"), .cell = 1, .granted = 99});
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 2), D11_ESTORE);
    d11_buf_append(&b, "\x03\x01\x00\x00\x00z", 6);
    CHECK_RC(d11_store_commit(st, (const uint8_t *)b.data, b.len, 2), D11_ESTORE);
    CHECK_RC(d11_store_sync(st), 0);
    d11_store_close(st);

    st = d11_center_sqlite_open(path, D11_DUR_ASYNC);
    CHECK(st != NULL);
    if (!st) return;
    memset(&s, 0, sizeof s);
    CHECK_RC(d11_store_load(st, collect, &s), 0);
    CHECK_EQ(s.n, 5);
    CHECK_EQ(s.order_bad, 0);
    CHECK_EQ(s.types[0], CENTER_OP_ROUTING);
    CHECK_EQ(s.types[1], CENTER_OP_PRODUCT);
    CHECK_EQ(s.granted_c1, 7);
    CHECK_EQ(s.routing_version, 1);
    d11_store_close(st);
    d11_buf_free(&b);

    /* A path that cannot be opened: NULL, no crash. */
    CHECK(d11_center_sqlite_open("/nonexistent-dir/x/center.db", D11_DUR_SYNC) == NULL);
}

/* ---- files written by earlier versions ---- */

static void noop_send(void *d, uint32_t peer, const uint8_t *f, size_t n)
{
    (void)d, (void)peer, (void)f, (void)n;
}

static void test_old_file_and_machine_reopen(void)
{
    char path[512];
    path_in_tmp(path, sizeof path, "old_center.db");
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    /* The schema and statements of the center before the storage seam, verbatim. */
    const char *old =
        "CREATE TABLE IF NOT EXISTS products(sku TEXT PRIMARY KEY, title TEXT NOT NULL,"
        " price_cents INTEGER NOT NULL, category TEXT NOT NULL, stock_total INTEGER NOT NULL,"
        " created_at INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS center_stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
        " total INTEGER NOT NULL, free INTEGER NOT NULL, PRIMARY KEY(sku, shadow));"
        "CREATE TABLE IF NOT EXISTS ledger(sku TEXT NOT NULL, shadow INTEGER NOT NULL,"
        " cell INTEGER NOT NULL, granted INTEGER NOT NULL, returned INTEGER NOT NULL,"
        " sold_reported INTEGER NOT NULL, PRIMARY KEY(sku, shadow, cell));"
        "CREATE TABLE IF NOT EXISTS routing(id INTEGER PRIMARY KEY CHECK(id = 1),"
        " version INTEGER NOT NULL, ncells INTEGER NOT NULL, cell_of_slot BLOB NOT NULL);"
        "INSERT INTO products VALUES('OLD-1','Old phone',1000,'phones',50,1700000000000);"
        "INSERT OR REPLACE INTO center_stock VALUES('OLD-1',0,50,20);"
        "INSERT OR REPLACE INTO center_stock VALUES('OLD-1',1,50,50);"
        "INSERT OR REPLACE INTO ledger VALUES('OLD-1',0,0,20,0,18);"
        "INSERT OR REPLACE INTO ledger VALUES('OLD-1',0,1,12,2,7);";
    CHECK(sqlite3_exec(db, old, NULL, NULL, NULL) == SQLITE_OK);
    d11_routing r;
    d11_routing_default(&r, 2);
    sqlite3_stmt *ins;
    CHECK(sqlite3_prepare_v2(db, "INSERT INTO routing VALUES(1, ?, ?, ?)", -1, &ins, NULL) == SQLITE_OK);
    sqlite3_bind_int64(ins, 1, r.version);
    sqlite3_bind_int64(ins, 2, r.ncells);
    sqlite3_bind_blob(ins, 3, r.cell_of_slot, sizeof r.cell_of_slot, SQLITE_STATIC);
    CHECK(sqlite3_step(ins) == SQLITE_DONE);
    sqlite3_finalize(ins);
    sqlite3_close(db);

    center_host h = {.clock = d11_clock_system(), .send = noop_send};
    center_opts o = {.ncells = 2, .grant_chunk_max = 1000, .reclaim_ms = 300};
    d11_store *st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK(st != NULL);
    if (!st) return;
    center *c = NULL;
    CHECK_RC(center_open(&c, &o, &h, st), 0);
    if (!c) return;
    uint64_t t, f, sold, g, ret;
    CHECK(center_ledger(c, "OLD-1", 5, 0, &t, &f, &sold) && t == 50 && f == 20 && sold == 25);
    CHECK(center_ledger_cell(c, "OLD-1", 5, 0, 1, &g, &ret, &sold) && g == 12 && ret == 2 && sold == 7);
    CHECK(center_ledger(c, "OLD-1", 5, 1, &t, &f, &sold) && t == 50 && f == 50 && sold == 0);
    CHECK_EQ(center_routing(c)->ncells, 2);

    /* Drive it: a grant and a lower sold report, committed through SQLite; reopen. */
    d11_buf fb;
    d11_buf_init(&fb, 256);
    d11_frame_hdr hd = {.type = D11_MSG_GRANT, .req_id = 5};
    size_t start = d11_frame_begin(&fb, &hd);
    d11_msg_inv_enc(&fb, &(d11_msg_inv){.cell = 1, .sku = S("OLD-1"), .qty = 3, .sold = 5});
    d11_frame_end(&fb, start);
    d11_frame fr;
    CHECK_RC(d11_frame_hdr_decode((const uint8_t *)fb.data, fb.len, &fr.hdr), 0);
    fr.payload = (const uint8_t *)fb.data + D11_FRAME_HDR_BYTES;
    fr.payload_len = fb.len - D11_FRAME_HDR_BYTES;
    center_peer_up(c, 1);
    center_on_frame(c, 1, &fr);
    CHECK_RC(center_flush(c), 0);
    uint64_t g_after;
    CHECK(center_ledger_cell(c, "OLD-1", 5, 0, 1, &g_after, &ret, &sold) && g_after > 12 && sold == 5);
    center_free(c);
    d11_store_close(st);
    d11_buf_free(&fb);

    st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK_RC(center_open(&c, &o, &h, st), 0);
    CHECK(center_ledger_cell(c, "OLD-1", 5, 0, 1, &g, &ret, &sold) && g == g_after && ret == 2 && sold == 5);
    CHECK(center_ledger(c, "OLD-1", 5, 0, &t, &f, &sold) && t == 50 && f == 20 - (g_after - 12) && sold == 18 + 5);
    center_free(c);
    /* Another cell count than the stored routing table: refused. */
    o.ncells = 3;
    c = NULL;
    CHECK_RC(center_open(&c, &o, &h, st), D11_ECONFIG);
    CHECK(c == NULL);
    d11_store_close(st);
}

/* ---- the outbox ---- */

static void frame_of(d11_buf *fb, uint16_t type, const uint8_t trace[16], d11_frame *fr)
{
    /* fb holds the payload; wrap it in a frame in place */
    d11_buf pl;
    d11_buf_init(&pl, 256);
    d11_buf_append(&pl, fb->data, fb->len);
    d11_buf_reset(fb);
    d11_frame_hdr hd = {.type = type, .req_id = 9};
    if (trace) memcpy(hd.trace_id, trace, 16);
    size_t start = d11_frame_begin(fb, &hd);
    d11_buf_append(fb, pl.data, pl.len);
    d11_frame_end(fb, start);
    d11_buf_free(&pl);
    CHECK_RC(d11_frame_hdr_decode((const uint8_t *)fb->data, fb->len, &fr->hdr), 0);
    fr->payload = (const uint8_t *)fb->data + D11_FRAME_HDR_BYTES;
    fr->payload_len = fb->len - D11_FRAME_HDR_BYTES;
}

typedef struct evseen {
    int      n;
    uint64_t id[8];
    char     type[8][32], data[8][400], trace[8][33];
    int64_t  at[8];
} evseen;

static int on_ev(void *ctx, const d11_center_event *e)
{
    evseen *s = ctx;
    if (s->n >= 8) return -1;
    s->id[s->n] = e->event_id;
    s->at[s->n] = e->created_at;
    snprintf(s->type[s->n], 32, "%.*s", (int)e->type_n, e->type);
    snprintf(s->data[s->n], 400, "%.*s", (int)e->data_n, e->data);
    snprintf(s->trace[s->n], 33, "%.*s", (int)e->trace_id_n, e->trace_id);
    s->n++;
    return 0;
}

static void restock(center *c, d11_buf *fb, uint64_t qty)
{
    d11_frame fr;
    d11_buf_reset(fb);
    d11_msg_sku_qty_enc(fb, &(d11_msg_sku_qty){.sku = S("EV"), .qty = qty}, true);
    frame_of(fb, D11_MSG_PRODUCT_RESTOCK, NULL, &fr);
    center_on_frame(c, 1, &fr);
    CHECK_RC(center_flush(c), 0);
}

static void test_outbox(void)
{
    /* records */
    d11_buf b;
    d11_buf_init(&b, 256);
    center_op_event ev = {.event_id = 7, .type = S("product.created"), .sku = S("A"),
                          .trace_id = S("0123456789abcdef0123456789abcdef"), .data = S("{\"x\":1}"), .created_at = 42};
    center_op_event_enc(&b, &ev);
    center_op op;
    CHECK_RC(center_op_dec((const uint8_t *)b.data, b.len, &op), 0);
    CHECK(op.type == CENTER_OP_EVENT && op.u.event.event_id == 7 && str_eq(op.u.event.type, "product.created") &&
          str_eq(op.u.event.sku, "A") && op.u.event.trace_id.n == 32 && str_eq(op.u.event.data, "{\"x\":1}") &&
          op.u.event.created_at == 42);
    d11_buf_reset(&b);
    center_op_event_prune_enc(&b, 5);
    CHECK_RC(center_op_dec((const uint8_t *)b.data, b.len, &op), 0);
    CHECK(op.type == CENTER_OP_EVENT_PRUNE && op.u.prune_through == 5);
    d11_buf_reset(&b);
    ev.trace_id = S("0123456789ABCDEF0123456789abcdef"); /* upper case: not a trace id */
    d11_wenc_u8(&b, CENTER_OP_EVENT); /* hand-built, the encoder asserts */
    d11_wenc_u32(&b, 0);
    size_t at = b.len;
    d11_wenc_u64(&b, 7);
    d11_wenc_str(&b, "t", 1);
    d11_wenc_str(&b, "A", 1);
    d11_wenc_str(&b, ev.trace_id.p, ev.trace_id.n);
    d11_wenc_str(&b, "{}", 2);
    d11_wenc_u64(&b, 1);
    uint32_t n = (uint32_t)(b.len - at);
    memcpy(b.data + 1, &n, 4); /* little-endian host */
    CHECK_RC(center_op_dec((const uint8_t *)b.data, b.len, &op), D11_EPROTO);
    d11_buf_free(&b);

    /* a center over SQLite */
    char path[512];
    path_in_tmp(path, sizeof path, "outbox_center.db");
    center_host h = {.clock = d11_clock_system(), .send = noop_send};
    center_opts o = {.ncells = 2, .grant_chunk_max = 1000, .reclaim_ms = 300};
    d11_store *st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK(st != NULL);
    if (!st) return;
    center *c = NULL;
    CHECK_RC(center_open(&c, &o, &h, st), 0);
    if (!c) return;
    center_peer_up(c, 1);
    d11_buf fb;
    d11_buf_init(&fb, 256);
    d11_frame fr;
    uint8_t trace[16];
    for (int i = 0; i < 16; i++) trace[i] = (uint8_t)(0xa0 + i);
    d11_msg_product_enc(&fb, &(d11_msg_product){.sku = S("EV"), .title = S("T \"q\""), .price_cents = 5, .stock = 10,
                                                 .category = S("c")});
    frame_of(&fb, D11_MSG_PRODUCT_CREATE, trace, &fr);
    int64_t t0 = d11_wall_ms();
    center_on_frame(c, 1, &fr);
    d11_center_outbox *r = NULL;
    CHECK_RC(d11_center_outbox_open(path, &r), 0);
    evseen s = {0};
    CHECK_RC(d11_center_outbox_read(r, 0, 10, on_ev, &s), 0); /* nothing before the commit */
    CHECK_RC(center_flush(c), 0);
    restock(c, &fb, 5);
    CHECK_EQ(center_events_last(c), 2);
    CHECK_RC(d11_center_outbox_read(r, 0, 10, on_ev, &s), 2);
    CHECK(s.id[0] == 1 && s.id[1] == 2);
    CHECK_STREQ(s.type[0], "product.created");
    CHECK_STREQ(s.type[1], "product.restocked");
    CHECK_STREQ(s.trace[0], "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
    CHECK_STREQ(s.trace[1], "");
    CHECK(s.at[0] >= t0 && s.at[1] >= s.at[0]);
    CHECKF(strstr(s.data[0], "\"stock_total\":10") != NULL, "%s", s.data[0]);
    CHECKF(strstr(s.data[1], "\"stock_total\":15") && strstr(s.data[1], "\"quantity\":5}"), "%s", s.data[1]);
    center_free(c);
    d11_store_close(st);

    /* reopen: ids continue; a prune commits the range delete and the watermark */
    st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK_RC(center_open(&c, &o, &h, st), 0);
    CHECK_EQ(center_events_last(c), 2);
    center_peer_up(c, 1);
    restock(c, &fb, 1);
    CHECK_EQ(center_events_last(c), 3);
    center_events_prune(c, 2);
    CHECK_RC(center_flush(c), 0);
    uint64_t head, pruned;
    CHECK_RC(d11_center_outbox_bounds(r, &head, &pruned), 0);
    CHECK(head == 3 && pruned == 2);
    memset(&s, 0, sizeof s);
    CHECK_RC(d11_center_outbox_read(r, pruned, 10, on_ev, &s), 1);
    CHECK(s.id[0] == 3);
    uint64_t upto;
    int64_t oldest;
    CHECK_RC(d11_center_outbox_prune_point(r, 3, INT64_MAX, 512, &upto, &head, &oldest), 0);
    CHECK_EQ(upto, 0); /* never the newest */
    center_free(c);
    d11_store_close(st);
    st = d11_center_sqlite_open(path, D11_DUR_SYNC);
    CHECK_RC(center_open(&c, &o, &h, st), 0);
    CHECK_EQ(center_events_last(c), 3); /* the newest kept event, above the watermark */
    center_free(c);
    d11_store_close(st);
    d11_center_outbox_close(r);
    d11_buf_free(&fb);
}

int main(void)
{
    d11_log_init("test_center_store", D11_LOG_ERROR + 1);
    test_roundtrip();
    test_sqlite_backend();
    test_old_file_and_machine_reopen();
    test_outbox();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
