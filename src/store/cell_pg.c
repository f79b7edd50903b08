/*
 * cell_pg.c — the PostgreSQL backend of the cell's storage seam (store.h, cell_ops.h).
 *
 * Schema d11_cell_<id> (created when missing; versioned in d11_cell_<id>.migrations): the
 * same tables and columns as the SQLite cell (cell_sqlite.c, docs/storage.md) plus
 * batch_seq, one row holding the sequence number of the last committed batch.
 *
 * commit: ONE transaction sent in libpq pipeline mode — BEGIN, a handful of multi-row
 * statements, COMMIT, one sync, so one network round trip per batch whatever its size:
 *   orders / order_items / outbox  INSERT .. SELECT FROM unnest(array parameters), per shadow
 *   order updates                  UPDATE .. FROM unnest(..), the LAST update of each order
 *                                  (each record carries the whole new state: replaying only
 *                                  the last one per row gives the same row); every row must
 *                                  exist: the statement divides by (changed rows = n),
 *                                  so a missing order is an error in the server and the
 *                                  whole transaction aborts
 *   stock                          INSERT .. ON CONFLICT DO UPDATE, last record per (sku, shadow):
 *                                  a hot SKU is one row update per batch
 *   batch_seq                      upsert of this batch's number
 * Inserts come before updates, so an order created and paid in the same batch is right.
 *
 * Unknown outcome: when the connection breaks after COMMIT was sent, commit reconnects
 * (backoff, D11_PG_RESOLVE_WAIT_MS) and reads batch_seq: equal to this batch's number means
 * committed (commit returns 0, the batch is acknowledged once); anything else, or no
 * connection, returns D11_ESTORE (the cell answers 503 and restarts; recovery reads back
 * what is durable, so an order whose COMMIT landed after all is found there, never lost and
 * — idempotency keys being loaded — never created twice).
 *
 * load: stock rows, every order (real, then shadow) as ORDER_INSERT (+ ORDER_UPDATE when it
 * left pending), then the newest outbox event of each shadow — the SQLite order.
 * One thread at a time (store.h).
 */
#include "cell_pg.h"
#include "cell_ops.h"
#include "pg_util.h"
#include "../core/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define D11_PG_RESOLVE_WAIT_MS 10000

static const char *const MIGRATIONS[] = {
    /* 1: the SQLite cell's tables, same names and columns */
    "CREATE TABLE orders(order_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL,"
    " idem_key TEXT NOT NULL, body_hash BIGINT NOT NULL, status TEXT NOT NULL,"
    " total_cents BIGINT NOT NULL, payment_id TEXT, created_at BIGINT NOT NULL,"
    " expires_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE TABLE order_items(order_id BIGINT NOT NULL, idx INTEGER NOT NULL, sku TEXT NOT NULL,"
    " quantity BIGINT NOT NULL, price_cents BIGINT NOT NULL, PRIMARY KEY(order_id, idx));"
    "CREATE TABLE shadow_orders (LIKE orders INCLUDING ALL);"
    "CREATE TABLE shadow_order_items (LIKE order_items INCLUDING ALL);"
    "CREATE TABLE stock(sku TEXT NOT NULL, shadow INTEGER NOT NULL, price_cents BIGINT NOT NULL,"
    " granted BIGINT NOT NULL, returned BIGINT NOT NULL, sold BIGINT NOT NULL, PRIMARY KEY(sku, shadow));"
    "CREATE TABLE outbox(event_id BIGINT PRIMARY KEY, order_id BIGINT NOT NULL, type TEXT NOT NULL,"
    " payload TEXT NOT NULL, created_at BIGINT NOT NULL);"
    "CREATE TABLE shadow_outbox (LIKE outbox INCLUDING ALL);"
    "CREATE TABLE batch_seq(id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);"
    "INSERT INTO batch_seq VALUES (1, 0);",
};
#define NMIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

enum { O_ID, O_USER, O_IDEM, O_HASH, O_STATUS, O_TOTAL, O_CREATED, O_EXPIRES, O_NCOLS };
enum { I_OID, I_IDX, I_SKU, I_QTY, I_PRICE, I_NCOLS };
enum { E_ID, E_OID, E_TYPE, E_PAYLOAD, E_CREATED, E_NCOLS };
enum { U_ID, U_STATUS, U_PAY, U_AT, U_NCOLS };
enum { S_SKU, S_SHADOW, S_PRICE, S_GRANTED, S_RETURNED, S_SOLD, S_NCOLS };

typedef struct upd_rec { cell_op_update u; uint32_t seq; } upd_rec;
typedef struct stock_rec { cell_op_stock k; uint32_t seq; } stock_rec;

typedef struct cell_pg {
    d11_store  base;
    PGconn    *c;
    char      *url;
    char       schema[32];
    int        durability;
    int64_t    seq; /* number of the last committed batch (batch_seq) */
    int        test_lose; /* unit tests only: d11_pg_tx.lose for the next commit */
    /* Per-commit scratch, kept between commits (no allocation once warm). */
    d11_buf    ocol[2][O_NCOLS], icol[2][I_NCOLS], ecol[2][E_NCOLS], ucol[2][U_NCOLS], scol[S_NCOLS];
    uint32_t   norders[2], nout[2];
    upd_rec   *upd;
    stock_rec *stk;
    size_t     nupd, capupd, nstk, capstk;
} cell_pg;

static const d11_store_ops cell_pg_ops;

static cell_pg *from(d11_store *s)
{
    D11_ASSERT(s && s->ops == &cell_pg_ops);
    return (cell_pg *)s;
}

static void cols_open(d11_buf *cols, int n)
{
    for (int i = 0; i < n; i++) {
        d11_buf_reset(&cols[i]);
        d11_pg_arr_open(&cols[i]);
    }
}

static void cols_close(d11_buf *cols, int n, const char **params)
{
    for (int i = 0; i < n; i++) {
        d11_pg_arr_close(&cols[i]);
        params[i] = cols[i].data;
    }
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return p;
    size_t c = *cap ? *cap * 2 : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) d11_fatal("out of memory");
    *cap = c;
    return q;
}

static int upd_cmp(const void *a, const void *b)
{
    const upd_rec *x = a, *y = b;
    if (x->u.shadow != y->u.shadow) return x->u.shadow < y->u.shadow ? -1 : 1;
    if (x->u.id != y->u.id) return x->u.id < y->u.id ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int stock_cmp(const void *a, const void *b)
{
    const stock_rec *x = a, *y = b;
    size_t n = x->k.sku.n < y->k.sku.n ? x->k.sku.n : y->k.sku.n;
    int c = memcmp(x->k.sku.p, y->k.sku.p, n);
    if (c) return c;
    if (x->k.sku.n != y->k.sku.n) return x->k.sku.n < y->k.sku.n ? -1 : 1;
    if (x->k.shadow != y->k.shadow) return x->k.shadow < y->k.shadow ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort the op log's records into the column arrays. 0 or D11_EPROTO. */
static int gather(cell_pg *s, const uint8_t *ops, size_t len, uint32_t nops)
{
    for (int sh = 0; sh < 2; sh++) {
        cols_open(s->ocol[sh], O_NCOLS);
        cols_open(s->icol[sh], I_NCOLS);
        cols_open(s->ecol[sh], E_NCOLS);
        s->norders[sh] = s->nout[sh] = 0;
    }
    s->nupd = s->nstk = 0;
    d11_wdec d;
    d11_wdec_init(&d, ops, len);
    cell_op op;
    for (uint32_t k = 0; k < nops; k++) {
        if (cell_op_next(&d, &op) < 0) return D11_EPROTO;
        switch (op.kind) {
        case CELL_OP_ORDER_INSERT: {
            const cell_op_order *o = &op.u.order;
            d11_buf *oc = s->ocol[o->shadow], *ic = s->icol[o->shadow];
            d11_pg_arr_i64(&oc[O_ID], (int64_t)o->id);
            d11_pg_arr_i64(&oc[O_USER], (int64_t)o->user_id);
            d11_pg_arr_str(&oc[O_IDEM], o->idem.p ? o->idem.p : "", o->idem.n);
            d11_pg_arr_i64(&oc[O_HASH], (int64_t)o->body_hash);
            d11_pg_arr_str(&oc[O_STATUS], cell_status_name[o->status], strlen(cell_status_name[o->status]));
            d11_pg_arr_i64(&oc[O_TOTAL], (int64_t)o->total);
            d11_pg_arr_i64(&oc[O_CREATED], o->created_at);
            d11_pg_arr_i64(&oc[O_EXPIRES], o->expires_at);
            for (uint32_t i = 0; i < o->nitems; i++) {
                d11_pg_arr_i64(&ic[I_OID], (int64_t)o->id);
                d11_pg_arr_i64(&ic[I_IDX], i);
                d11_pg_arr_str(&ic[I_SKU], o->items[i].sku.p, o->items[i].sku.n);
                d11_pg_arr_i64(&ic[I_QTY], o->items[i].qty);
                d11_pg_arr_i64(&ic[I_PRICE], (int64_t)o->items[i].price);
            }
            s->norders[o->shadow]++;
            break;
        }
        case CELL_OP_ORDER_UPDATE:
            s->upd = grow(s->upd, &s->capupd, s->nupd + 1, sizeof *s->upd);
            s->upd[s->nupd++] = (upd_rec){op.u.update, k};
            break;
        case CELL_OP_STOCK:
            s->stk = grow(s->stk, &s->capstk, s->nstk + 1, sizeof *s->stk);
            s->stk[s->nstk++] = (stock_rec){op.u.stock, k};
            break;
        case CELL_OP_OUTBOX: {
            const cell_op_outbox *e = &op.u.outbox;
            d11_buf *ec = s->ecol[e->shadow];
            d11_pg_arr_i64(&ec[E_ID], (int64_t)e->event_id);
            d11_pg_arr_i64(&ec[E_OID], (int64_t)e->order_id);
            d11_pg_arr_str(&ec[E_TYPE], e->type.p ? e->type.p : "", e->type.n);
            d11_pg_arr_str(&ec[E_PAYLOAD], e->payload.p ? e->payload.p : "", e->payload.n);
            d11_pg_arr_i64(&ec[E_CREATED], e->created_at);
            s->nout[e->shadow]++;
            break;
        }
        default: return D11_EPROTO;
        }
    }
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

static const char *const PRE[2] = {"", "shadow_"};

/* The batch's statements, prepared once per connection (names "d11c_<index>"). */
enum { Q_ORDERS, Q_ITEMS = 2, Q_UPDATES = 4, Q_OUTBOX = 6, Q_STOCK = 8, Q_SEQ, Q_COUNT };

static void query_sql(int q, char *sql, size_t n, int *nparams)
{
    int sh = q < Q_STOCK ? q % 2 : 0;
    switch (q - sh) {
    case Q_ORDERS:
        *nparams = O_NCOLS;
        snprintf(sql, n,
                 "INSERT INTO %sorders(order_id, user_id, idem_key, body_hash, status, total_cents, created_at,"
                 " expires_at, updated_at) SELECT a, b, c, d, e, f, g, h, g FROM unnest($1::bigint[], $2::bigint[],"
                 " $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[]) AS u(a,b,c,d,e,f,g,h)",
                 PRE[sh]);
        return;
    case Q_ITEMS:
        *nparams = I_NCOLS;
        snprintf(sql, n,
                 "INSERT INTO %sorder_items(order_id, idx, sku, quantity, price_cents) SELECT * FROM"
                 " unnest($1::bigint[], $2::int[], $3::text[], $4::bigint[], $5::bigint[])",
                 PRE[sh]);
        return;
    case Q_UPDATES:
        /* A missing order makes the division fail IN the server: the transaction aborts. */
        *nparams = U_NCOLS + 1;
        snprintf(sql, n,
                 "WITH u AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) AS u(id, st, pay, at)),"
                 " c AS (UPDATE %sorders o SET status = u.st, payment_id = u.pay, updated_at = u.at FROM u"
                 " WHERE o.order_id = u.id RETURNING 1)"
                 " SELECT 1 / (count(*) = $5::bigint)::int FROM c",
                 PRE[sh]);
        return;
    case Q_OUTBOX:
        *nparams = E_NCOLS;
        snprintf(sql, n,
                 "INSERT INTO %soutbox(event_id, order_id, type, payload, created_at) SELECT * FROM"
                 " unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bigint[])",
                 PRE[sh]);
        return;
    case Q_STOCK:
        *nparams = S_NCOLS;
        snprintf(sql, n,
                 "INSERT INTO stock(sku, shadow, price_cents, granted, returned, sold) SELECT * FROM"
                 " unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])"
                 " ON CONFLICT (sku, shadow) DO UPDATE SET price_cents = excluded.price_cents,"
                 " granted = excluded.granted, returned = excluded.returned, sold = excluded.sold");
        return;
    default:
        D11_ASSERT(q == Q_SEQ);
        *nparams = 1;
        snprintf(sql, n, "INSERT INTO batch_seq VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq");
    }
}

static void query_name(int q, char *out, size_t n) { snprintf(out, n, "d11c_%d", q); }

/* Prepare every statement of a batch on s->c (after each connect). 0 or D11_ESTORE. */
static int prepare_all(cell_pg *s)
{
    char sql[1024], name[24];
    for (int q = 0; q < Q_COUNT; q++) {
        int np;
        query_sql(q, sql, sizeof sql, &np);
        query_name(q, name, sizeof name);
        if (d11_pg_prepare(s->c, name, sql, np) < 0) return D11_ESTORE;
    }
    return 0;
}

static int send_q(d11_pg_tx *t, int q, const char *const *p, bool one)
{
    char name[24];
    int np;
    char sql[1024];
    query_sql(q, sql, sizeof sql, &np);
    query_name(q, name, sizeof name);
    return d11_pg_tx_send_prepared(t, name, np, p, one);
}

/* Send the batch's statements (after BEGIN). 0 or D11_ESTORE. */
static int send_batch(cell_pg *s, d11_pg_tx *t)
{
    const char *p[9];
    int rc = 0;
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        if (!s->norders[sh]) continue;
        cols_close(s->ocol[sh], O_NCOLS, p);
        rc = send_q(t, Q_ORDERS + sh, p, false);
        cols_close(s->icol[sh], I_NCOLS, p);
        if (rc == 0) rc = send_q(t, Q_ITEMS + sh, p, false);
    }
    /* Updates: the last record of each order, one statement per shadow. */
    if (s->nupd) qsort(s->upd, s->nupd, sizeof *s->upd, upd_cmp);
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        cols_open(s->ucol[sh], U_NCOLS);
        uint32_t n = 0;
        for (size_t i = 0; i < s->nupd; i++) {
            const cell_op_update *u = &s->upd[i].u;
            if (u->shadow != sh) continue;
            if (i + 1 < s->nupd && s->upd[i + 1].u.shadow == sh && s->upd[i + 1].u.id == u->id) continue;
            d11_buf *uc = s->ucol[sh];
            d11_pg_arr_i64(&uc[U_ID], (int64_t)u->id);
            d11_pg_arr_str(&uc[U_STATUS], cell_status_name[u->status], strlen(cell_status_name[u->status]));
            d11_pg_arr_str(&uc[U_PAY], u->payment.n ? u->payment.p : NULL, u->payment.n);
            d11_pg_arr_i64(&uc[U_AT], u->updated_at);
            n++;
        }
        if (!n) continue;
        cols_close(s->ucol[sh], U_NCOLS, p);
        char cnt[16];
        snprintf(cnt, sizeof cnt, "%u", n);
        p[U_NCOLS] = cnt;
        rc = send_q(t, Q_UPDATES + sh, p, false);
    }
    /* Stock: the last record of each (sku, shadow). */
    if (rc == 0 && s->nstk) {
        qsort(s->stk, s->nstk, sizeof *s->stk, stock_cmp);
        cols_open(s->scol, S_NCOLS);
        for (size_t i = 0; i < s->nstk; i++) {
            const cell_op_stock *k = &s->stk[i].k;
            if (i + 1 < s->nstk && stock_cmp(&(stock_rec){*k, 0}, &(stock_rec){s->stk[i + 1].k, 0}) == 0) continue;
            d11_pg_arr_str(&s->scol[S_SKU], k->sku.p, k->sku.n);
            d11_pg_arr_i64(&s->scol[S_SHADOW], k->shadow);
            d11_pg_arr_i64(&s->scol[S_PRICE], (int64_t)k->price);
            d11_pg_arr_i64(&s->scol[S_GRANTED], (int64_t)k->granted);
            d11_pg_arr_i64(&s->scol[S_RETURNED], (int64_t)k->returned);
            d11_pg_arr_i64(&s->scol[S_SOLD], (int64_t)k->sold);
        }
        cols_close(s->scol, S_NCOLS, p);
        rc = send_q(t, Q_STOCK, p, false);
    }
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        if (!s->nout[sh]) continue;
        cols_close(s->ecol[sh], E_NCOLS, p);
        rc = send_q(t, Q_OUTBOX + sh, p, false);
    }
    char seq[24];
    snprintf(seq, sizeof seq, "%lld", (long long)(s->seq + 1));
    p[0] = seq;
    if (rc == 0) rc = send_q(t, Q_SEQ, p, true);
    return rc;
}

static int read_seq(PGconn *c, int64_t *out)
{
    PGresult *r = PQexec(c, "SELECT seq FROM batch_seq WHERE id = 1");
    int rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? 0 : D11_ESTORE;
    if (rc == 0) *out = d11_pg_i64(r, 0);
    PQclear(r);
    return rc;
}

/* The connection broke with the outcome of batch s->seq + 1 unknown: reconnect and read. */
static int resolve(cell_pg *s)
{
    PQfinish(s->c);
    s->c = NULL;
    if (d11_pg_connect(s->url, s->schema, s->durability, NULL, 0, D11_PG_RESOLVE_WAIT_MS, &s->c) < 0) {
        d11_error("cell store: the outcome of batch %lld is unknown (no connection); failing it",
                  (long long)(s->seq + 1));
        return D11_ESTORE;
    }
    PQsetnonblocking(s->c, 0);
    int64_t seq = -1;
    int rc = read_seq(s->c, &seq);
    PQsetnonblocking(s->c, 1);
    if (rc == 0) rc = prepare_all(s); /* the store goes on over this connection */
    if (rc < 0) return rc;
    if (seq == s->seq + 1) {
        d11_warn("cell store: batch %lld was committed (read back after the connection broke)", (long long)seq);
        s->seq = seq;
        return 0;
    }
    D11_ASSERT(seq == s->seq); /* one writer per schema: nobody else moves it */
    d11_warn("cell store: batch %lld was not committed (read back after the connection broke)",
             (long long)(s->seq + 1));
    return D11_ESTORE;
}

static int cp_commit(d11_store *base, const uint8_t *ops, size_t len, uint32_t nops)
{
    cell_pg *s = from(base);
    if (nops == 0) return 0;
    int rc = gather(s, ops, len, nops);
    if (rc < 0) return rc;
    if (!s->c || PQstatus(s->c) != CONNECTION_OK) return D11_ESTORE;
    d11_pg_tx t;
    rc = d11_pg_tx_begin(&t, s->c);
    t.lose = s->test_lose;
    s->test_lose = 0;
    if (rc == 0) rc = send_batch(s, &t);
    int end = d11_pg_tx_end(&t);
    d11_pg_tx_release(&t);
    if (end == D11_PG_ELOST || PQstatus(s->c) != CONNECTION_OK) return resolve(s);
    if (rc == 0) rc = end;
    if (rc == 0) {
        s->seq++;
        return 0;
    }
    return D11_ESTORE;
}

/* ---- load ---- */

typedef struct load_ctx {
    d11_buf *b;
    d11_store_apply_fn *fn;
    void *ctx;
    int sh;
    bool have;
    cell_op_order o;
    cell_op_update u;
    char idem[D11_IDEM_KEY_BYTES_MAX], pay[D11_PAYMENT_ID_BYTES_MAX];
    char skus[D11_ORDER_ITEMS_MAX][D11_SKU_BYTES_MAX];
} load_ctx;

static int emit(d11_buf *b, d11_store_apply_fn *fn, void *ctx)
{
    int rc = fn(ctx, (const uint8_t *)b->data, b->len, 1);
    d11_buf_reset(b);
    return rc;
}

static int flush_order(load_ctx *L)
{
    if (!L->have) return 0;
    L->have = false;
    cell_op_order_enc(L->b, &L->o);
    int rc = emit(L->b, L->fn, L->ctx);
    if (rc == 0 && L->u.status != ST_PENDING) {
        cell_op_update_enc(L->b, &L->u);
        rc = emit(L->b, L->fn, L->ctx);
    }
    return rc;
}

static int order_row(void *ctx, const PGresult *r)
{
    load_ctx *L = ctx;
    uint64_t id = (uint64_t)d11_pg_i64(r, 0);
    if (L->have && id != L->o.id) {
        int rc = flush_order(L);
        if (rc) return rc;
    }
    if (!L->have) {
        memset(&L->o, 0, sizeof L->o);
        memset(&L->u, 0, sizeof L->u);
        L->have = true;
        L->o.shadow = L->u.shadow = (uint8_t)L->sh;
        L->o.id = L->u.id = id;
        L->o.user_id = (uint64_t)d11_pg_i64(r, 1);
        d11_str k = d11_pg_str(r, 2);
        if (k.n > sizeof L->idem) return D11_EPROTO;
        memcpy(L->idem, k.p, k.n);
        L->o.idem = (d11_str){L->idem, k.n};
        L->o.body_hash = (uint64_t)d11_pg_i64(r, 3);
        d11_str stn = d11_pg_str(r, 4);
        int status = cell_status_parse(stn.p, stn.n);
        if (status < 0) {
            d11_error("order %llu has unknown status %.*s", (unsigned long long)id, (int)stn.n, stn.p);
            return D11_EPROTO;
        }
        L->o.status = ST_PENDING;
        L->u.status = (uint8_t)status;
        L->o.total = (uint64_t)d11_pg_i64(r, 5);
        if (!PQgetisnull(r, 0, 6)) {
            d11_str p = d11_pg_str(r, 6);
            if (p.n > sizeof L->pay) return D11_EPROTO;
            memcpy(L->pay, p.p, p.n);
            L->u.payment = (d11_str){L->pay, p.n};
        }
        L->o.created_at = d11_pg_i64(r, 7);
        L->o.expires_at = d11_pg_i64(r, 8);
        L->u.updated_at = d11_pg_i64(r, 9);
    }
    if (L->o.nitems >= D11_ORDER_ITEMS_MAX) return D11_EPROTO;
    d11_str sku = d11_pg_str(r, 10);
    if (sku.n < 1 || sku.n > D11_SKU_BYTES_MAX) return D11_EPROTO;
    memcpy(L->skus[L->o.nitems], sku.p, sku.n);
    L->o.items[L->o.nitems] = (cell_op_item){{L->skus[L->o.nitems], sku.n}, (uint32_t)d11_pg_i64(r, 11),
                                             (uint64_t)d11_pg_i64(r, 12)};
    L->o.nitems++;
    return 0;
}

static int stock_row(void *ctx, const PGresult *r)
{
    load_ctx *L = ctx;
    cell_op_stock k = {d11_pg_str(r, 0), (uint8_t)d11_pg_i64(r, 1), (uint64_t)d11_pg_i64(r, 2),
                       (uint64_t)d11_pg_i64(r, 3), (uint64_t)d11_pg_i64(r, 4), (uint64_t)d11_pg_i64(r, 5)};
    if (k.sku.n < 1 || k.sku.n > D11_SKU_BYTES_MAX || k.shadow > 1 || k.returned + k.sold > k.granted) {
        d11_error("stock row %.*s/%u is invalid", (int)k.sku.n, k.sku.p, k.shadow);
        return D11_EPROTO;
    }
    cell_op_stock_enc(L->b, &k);
    return emit(L->b, L->fn, L->ctx);
}

static int outbox_row(void *ctx, const PGresult *r)
{
    load_ctx *L = ctx;
    cell_op_outbox e = {(uint8_t)L->sh, (uint64_t)d11_pg_i64(r, 0), (uint64_t)d11_pg_i64(r, 1), d11_pg_str(r, 2),
                        {"", 0}, d11_pg_i64(r, 3)};
    cell_op_outbox_enc(L->b, &e);
    return emit(L->b, L->fn, L->ctx);
}

static int cp_load(d11_store *base, d11_store_apply_fn *fn, void *ctx)
{
    cell_pg *s = from(base);
    d11_buf b;
    d11_buf_init(&b, 4096);
    load_ctx *L = calloc(1, sizeof *L);
    if (!L) d11_fatal("out of memory");
    *L = (load_ctx){.b = &b, .fn = fn, .ctx = ctx};
    /* One snapshot for the whole load. */
    int rc = d11_pg_exec(s->c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    if (rc == 0)
        rc = d11_pg_each_row(s->c, "SELECT sku, shadow, price_cents, granted, returned, sold FROM stock", 0, NULL,
                             stock_row, L);
    char sql[512];
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        L->sh = sh;
        snprintf(sql, sizeof sql,
                 "SELECT o.order_id, o.user_id, o.idem_key, o.body_hash, o.status, o.total_cents, o.payment_id,"
                 " o.created_at, o.expires_at, o.updated_at, i.sku, i.quantity, i.price_cents"
                 " FROM %sorders o JOIN %sorder_items i ON i.order_id = o.order_id ORDER BY o.order_id, i.idx",
                 PRE[sh], PRE[sh]);
        rc = d11_pg_each_row(s->c, sql, 0, NULL, order_row, L);
        if (rc == 0) rc = flush_order(L);
        L->have = false;
    }
    for (int sh = 0; sh < 2 && rc == 0; sh++) {
        L->sh = sh;
        snprintf(sql, sizeof sql,
                 "SELECT event_id, order_id, type, created_at FROM %soutbox ORDER BY event_id DESC LIMIT 1", PRE[sh]);
        rc = d11_pg_each_row(s->c, sql, 0, NULL, outbox_row, L);
    }
    PQsetnonblocking(s->c, 0);
    (void)d11_pg_exec(s->c, "COMMIT");
    PQsetnonblocking(s->c, 1);
    free(L);
    d11_buf_free(&b);
    return rc;
}

/* async: a synchronous commit flushes the WAL up to it, every earlier async commit included. */
static int cp_sync(d11_store *base)
{
    cell_pg *s = from(base);
    if (s->durability != D11_DUR_ASYNC) return 0;
    PQsetnonblocking(s->c, 0);
    int rc = d11_pg_exec(s->c, "BEGIN; SET LOCAL synchronous_commit TO on; SELECT txid_current(); COMMIT");
    PQsetnonblocking(s->c, 1);
    return rc;
}

static void cp_close(d11_store *base)
{
    cell_pg *s = from(base);
    if (s->c) PQfinish(s->c);
    for (int sh = 0; sh < 2; sh++) {
        for (int i = 0; i < O_NCOLS; i++) d11_buf_free(&s->ocol[sh][i]);
        for (int i = 0; i < I_NCOLS; i++) d11_buf_free(&s->icol[sh][i]);
        for (int i = 0; i < E_NCOLS; i++) d11_buf_free(&s->ecol[sh][i]);
        for (int i = 0; i < U_NCOLS; i++) d11_buf_free(&s->ucol[sh][i]);
    }
    for (int i = 0; i < S_NCOLS; i++) d11_buf_free(&s->scol[i]);
    free(s->upd);
    free(s->stk);
    free(s->url);
    free(s);
}

static const d11_store_ops cell_pg_ops = {"postgresql", cp_load, cp_commit, cp_sync, cp_close};

static d11_store *open_common(const char *url, int id, int durability, bool ro)
{
    cell_pg *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(url))) d11_fatal("out of memory");
    s->base.ops = &cell_pg_ops;
    s->durability = durability;
    snprintf(s->schema, sizeof s->schema, "d11_cell_%d", id);
    for (int sh = 0; sh < 2; sh++) {
        for (int i = 0; i < O_NCOLS; i++) d11_buf_init(&s->ocol[sh][i], 256);
        for (int i = 0; i < I_NCOLS; i++) d11_buf_init(&s->icol[sh][i], 256);
        for (int i = 0; i < E_NCOLS; i++) d11_buf_init(&s->ecol[sh][i], 256);
        for (int i = 0; i < U_NCOLS; i++) d11_buf_init(&s->ucol[sh][i], 256);
    }
    for (int i = 0; i < S_NCOLS; i++) d11_buf_init(&s->scol[i], 256);
    int rc = d11_pg_connect(url, s->schema, durability, ro ? NULL : MIGRATIONS, NMIGRATIONS,
                            ro ? 0 : D11_PG_CONNECT_WAIT_MS, &s->c);
    if (rc == 0) {
        PQsetnonblocking(s->c, 0);
        rc = read_seq(s->c, &s->seq);
        PQsetnonblocking(s->c, 1);
    }
    if (rc == 0 && !ro) rc = prepare_all(s);
    if (rc < 0) {
        cp_close(&s->base);
        return rc == -ENOENT ? (d11_store *)-1 : NULL;
    }
    return &s->base;
}

d11_store *d11_cell_pg_open(const char *url, int id, int durability)
{
    d11_store *s = open_common(url, id, durability, false);
    return s == (d11_store *)-1 ? NULL : s;
}

int d11_cell_pg_open_ro(const char *url, int id, d11_store **out)
{
    d11_store *s = open_common(url, id, D11_DUR_SYNC, true);
    *out = s == (d11_store *)-1 ? NULL : s;
    if (s == (d11_store *)-1) return -ENOENT;
    return s ? 0 : D11_ESTORE;
}
