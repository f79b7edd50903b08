/*
 * test_cell.c — the cell's order logic, driven in-process without sockets or a center.
 *
 * How: this file #includes src/cell/cell.c and src/cell/cell_store.c to reach their
 * statics (the logic thread's state S, try_create, handle_gateway_frame, recover, ...).
 * The Makefile links every object into each unit test, including the objects of src/cell, so
 * the few NON-static symbols of those two files are renamed below before the include;
 * the test's copies then cannot clash with the linked objects. (If cell.c or
 * cell_store.c gain a new non-static symbol, add it to the list: the link error names it.)
 *
 * The harness sets S up the way d11_cell_main does (config defaults, maps, batches, a
 * SQLite file in $TMPDIR, recover(), the real storage thread), marks a few connection
 * slots open with fd -1 and reads the reply frames straight out of their output
 * buffers. Requests enter through handle_gateway_frame with real encoded frames, and
 * center traffic through handle_center_frame, so the codecs are on the path. pump()
 * closes the open batch, waits on the storage thread's eventfd (poll, no sleeps) and
 * runs batch_done(), which is what releases deferred replies.
 *
 * What is checked: allotment math (all-or-nothing reservation across items, available =
 * granted - returned - sold, sold-out cache with its shortfall rule, park -> grant ->
 * placed, unknown SKU, reclaim); idempotency (replay, mismatch, per user, shadow vs real,
 * duplicates while parked); the state machine (pay / cancel / expire, repeats, 409s,
 * lazy and timer expiry, an illegal move aborts); order ids (slot bits, monotonic per
 * user and per generator); the per-user list; durability (commit through the storage
 * thread, then recover() into a fresh S from the same file gives back orders, ledgers,
 * idempotency and outbox; an uncommitted order is not there); storage atomicity (a
 * failing op rolls the whole batch back); a failed commit answers 503 and exits; recovery
 * refuses a ledger whose sold disagrees with its orders.
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#define d11_cell_main      test_cell__d11_cell_main_unused
#define cell_status_name   test_cell__status_name
#define cell_store_open    test_cell__store_open
#define cell_store_start   test_cell__store_start
#define cell_store_submit  test_cell__store_submit
#define cell_store_collect test_cell__store_collect
#define cell_store_stop    test_cell__store_stop

#include "../../src/cell/cell.c"
#include "../../src/cell/cell_store.c"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>

/* ---- checks ---- */

#include "check.h"

/* ---- harness: S set up like d11_cell_main, without sockets ---- */

#define NCONN 4 /* connection slots 0..3 are "open" gateway connections */

static char g_tmp[512];
static void *graveyard[64]; /* old copies of S: keeps their memory reachable (LeakSanitizer) */
static int ngrave;

static void cell_setup(const char *dbpath, int durability)
{
    if (S.store.db) { /* retire the previous state without freeing what it points to */
        if (ngrave < 64) {
            graveyard[ngrave] = malloc(sizeof S);
            if (graveyard[ngrave]) memcpy(graveyard[ngrave++], &S, sizeof S);
        }
    }
    memset(&S, 0, sizeof S);
    d11_config_defaults(&S.cfg);
    snprintf(S.cfg.data_dir, sizeof S.cfg.data_dir, "%s", g_tmp); /* no center.sock there */
    S.cfg.durability = durability;
    S.id = 0;
    S.epfd = S.lfd = -1;
    if (cell_store_open(&S.store, dbpath, durability, 10) < 0) {
        printf("cannot open %s\n", dbpath);
        exit(1);
    }
    d11_smap_init(&S.ledger_by_key, 1024);
    d11_imap_init(&S.order_by_id, 1 << 10);
    d11_smap_init(&S.order_by_idem, 1 << 10);
    d11_imap_init(&S.user_head, 1 << 10);
    d11_buf_init(&S.scratch, 1 << 16);
    d11_buf_init(&S.scratch2, 4096);
    for (int i = 0; i < 2; i++) {
        d11_buf_init(&S.batches[i].ops, 1 << 16);
        d11_buf_init(&S.batches[i].replies, 1 << 16);
        d11_buf_init(&S.batches[i].returns, 4096);
    }
    recover();
    S.open_seq = 1;
    S.committed_seq = 0;
    for (int i = 0; i < NCONN; i++) {
        d11_conn_init(&S.conns[i].c, -1);
        S.conns[i].open = true;
    }
    d11_conn_init(&S.center, -1);
    S.center_up = false;
    S.center_retry_ms = INT64_MAX; /* tick() must not try to reach a real center */
    if (cell_store_start(&S.store) < 0) {
        printf("cannot start the storage thread\n");
        exit(1);
    }
}

/* Stop the storage thread and close the database (the "process" ends). */
static void cell_stop(void) { cell_store_stop(&S.store); }

/* Commit everything that is pending through the storage thread; deliver the replies. */
static void pump(void)
{
    for (int guard = 0; guard < 1000; guard++) {
        maybe_submit();
        if (!S.committing) return;
        struct pollfd p = {.fd = S.store.done_fd, .events = POLLIN};
        int rc = poll(&p, 1, 30000);
        if (rc != 1) {
            printf("%s:%d: storage thread did not answer within 30 s\n", __FILE__, __LINE__);
            exit(1);
        }
        batch_done();
    }
}

static const ledger *L(const char *sku, int shadow)
{
    uint32_t li = ledger_get(sku, strlen(sku), shadow, false);
    return li == NONE32 ? NULL : &S.ledgers.v[li];
}

/* A ledger as a center grant would leave it. */
static uint32_t mk_ledger(const char *sku, int shadow, uint64_t price, uint64_t granted)
{
    uint32_t li = ledger_get(sku, strlen(sku), shadow, true);
    ledger *l = &S.ledgers.v[li];
    l->known = 1;
    l->price = price;
    l->granted = granted;
    ledger_touch(li);
    return li;
}

static uint64_t avail_of(const char *sku, int shadow)
{
    const ledger *l = L(sku, shadow);
    return l ? l->granted - l->returned - l->sold : 0;
}

/* ---- replies read back from a connection's output buffer ---- */

typedef struct reply {
    uint64_t req_id;
    uint16_t type, flags;
    uint32_t status;
    char code[64];
    char body[4096];
} reply;

#define MAXREP 64
static reply reps[MAXREP];
static int nreps, nreps_total;

/* Move every reply frame queued on connection ci into reps[] (the first MAXREP). */
static void collect(int ci)
{
    nreps = nreps_total = 0;
    d11_conn *c = &S.conns[ci].c;
    size_t off = c->out_off;
    int bad = 0;
    while (off < c->out.len) {
        d11_frame_hdr h;
        int rc = d11_frame_hdr_decode((uint8_t *)c->out.data + off, c->out.len - off, &h);
        if (rc != 0 || h.len > c->out.len - off) {
            printf("%s:%d: bad frame in connection %d output (rc %d)\n", __FILE__, __LINE__, ci, rc);
            n_fail++;
            break;
        }
        d11_str code, body;
        int drc = d11_msg_reply_dec(c->out.data + off + D11_FRAME_HDR_BYTES, h.len - D11_FRAME_HDR_BYTES, &code, &body);
        if (drc != 0 || !(h.flags & D11_WF_REPLY) || h.deadline_ms != 0) bad++;
        if (nreps < MAXREP) {
            reply *r = &reps[nreps++];
            r->req_id = h.req_id;
            r->type = h.type;
            r->flags = h.flags;
            r->status = h.status;
            snprintf(r->code, sizeof r->code, "%.*s", (int)code.n, code.p);
            snprintf(r->body, sizeof r->body, "%.*s", (int)body.n, body.p);
        }
        nreps_total++;
        off += h.len;
    }
    CHECKF(bad == 0, "connection %d: %d malformed reply frames", ci, bad);
    c->out.len = c->out_off = 0;
}

static const reply *find_rep(uint64_t req_id)
{
    for (int i = 0; i < nreps; i++)
        if (reps[i].req_id == req_id) return &reps[i];
    return NULL;
}

/* Commit, collect connection ci, return the reply to req_id (NULL when none). */
static const reply *answer(int ci, uint64_t req_id)
{
    pump();
    collect(ci);
    return find_rep(req_id);
}

/* Value of "key": in a JSON body, number or string; 0 / "" when absent. */
static uint64_t json_u64(const char *body, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(body, pat);
    if (!p) return 0;
    p += strlen(pat);
    if (*p == '"') p++;
    uint64_t v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
}

static const char *json_str(const char *body, const char *key)
{
    static char out[256];
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(body, pat);
    out[0] = 0;
    if (!p) return out;
    p += strlen(pat);
    size_t n = 0;
    while (p[n] && p[n] != '"' && n < sizeof out - 1) n++;
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

/* ---- requests, encoded as the gateway would and fed to handle_gateway_frame ---- */

static uint64_t next_req = 1000;

static uint64_t send_frame(int ci, uint16_t type, bool shadow, const d11_buf *payload)
{
    d11_buf b;
    d11_buf_init(&b, 256);
    d11_frame_hdr h = {.type = type, .req_id = ++next_req, .flags = shadow ? D11_WF_STRESS : 0, .deadline_ms = 3000};
    h.trace_id[0] = 0x42;
    size_t st = d11_frame_begin(&b, &h);
    d11_buf_append(&b, payload->data, payload->len);
    d11_frame_end(&b, st);
    d11_frame f;
    CHECK(d11_frame_hdr_decode((uint8_t *)b.data, b.len, &f.hdr) == 0);
    f.payload = (uint8_t *)b.data + D11_FRAME_HDR_BYTES;
    f.payload_len = b.len - D11_FRAME_HDR_BYTES;
    handle_gateway_frame(ci, &f);
    d11_buf_free(&b);
    return h.req_id;
}

typedef struct item_spec {
    const char *sku;
    uint32_t qty;
} item_spec;

/* ORDER_CREATE; returns the req_id. Items end at a NULL sku. */
static uint64_t create(int ci, bool shadow, uint64_t user, const char *key, const item_spec *items)
{
    d11_msg_order_create m = {.user_id = user, .idem_key = {key, strlen(key)}};
    for (const item_spec *it = items; it->sku; it++) {
        m.items[m.nitems].sku.p = it->sku;
        m.items[m.nitems].sku.n = strlen(it->sku);
        m.items[m.nitems].qty = it->qty;
        m.nitems++;
    }
    d11_buf p;
    d11_buf_init(&p, 256);
    d11_msg_order_create_enc(&p, &m);
    uint64_t id = send_frame(ci, D11_MSG_ORDER_CREATE, shadow, &p);
    d11_buf_free(&p);
    return id;
}

static uint64_t ref(int ci, uint16_t type, bool shadow, uint64_t order_id, const char *payment)
{
    d11_msg_order_ref m = {.order_id = order_id, .payment_id = {payment ? payment : "", payment ? strlen(payment) : 0}};
    d11_buf p;
    d11_buf_init(&p, 64);
    d11_msg_order_ref_enc(&p, &m, type == D11_MSG_ORDER_PAY);
    uint64_t id = send_frame(ci, type, shadow, &p);
    d11_buf_free(&p);
    return id;
}

static uint64_t list(int ci, bool shadow, uint64_t user, uint64_t before, uint32_t limit)
{
    d11_msg_order_list m = {.user_id = user, .before = before, .limit = limit};
    d11_buf p;
    d11_buf_init(&p, 64);
    d11_msg_order_list_enc(&p, &m);
    uint64_t id = send_frame(ci, D11_MSG_ORDER_LIST, shadow, &p);
    d11_buf_free(&p);
    return id;
}

/* Create and commit; returns the order id from the 201/200 reply (0 on any other answer). */
static uint64_t place(bool shadow, uint64_t user, const char *key, const item_spec *items, uint32_t *status)
{
    uint64_t rq = create(0, shadow, user, key, items);
    const reply *r = answer(0, rq);
    if (status) *status = r ? r->status : 0;
    if (!r || (r->status != 201 && r->status != 200)) return 0;
    return json_u64(r->body, "order_id");
}

static order *O(uint64_t id, int shadow) { return find_order(id, shadow); }

/* sum over pending + paid orders of the units of (sku, shadow) */
static uint64_t units_held(const char *sku, int shadow)
{
    uint32_t li = ledger_get(sku, strlen(sku), shadow, false);
    uint64_t n = 0;
    for (size_t i = 0; i < S.orders.n; i++) {
        const order *o = &S.orders.v[i];
        if (o->status != ST_PENDING && o->status != ST_PAID) continue;
        for (uint32_t k = 0; k < o->nitems; k++)
            if (S.items.v[o->items + k].ledger == li) n += S.items.v[o->items + k].qty;
    }
    return n;
}

/* The fake center: frames the cell queued for it, and replies we inject. */
typedef struct center_msg {
    uint16_t type;
    uint64_t req_id;
    d11_msg_inv inv;
    char sku[D11_SKU_BYTES_MAX + 1];
} center_msg;

static int center_take(center_msg *out, int max)
{
    int n = 0;
    d11_conn *c = &S.center;
    size_t off = 0;
    while (off < c->out.len) {
        d11_frame_hdr h;
        if (d11_frame_hdr_decode((uint8_t *)c->out.data + off, c->out.len - off, &h) != 0) {
            n_fail++;
            printf("%s:%d: bad frame to the center\n", __FILE__, __LINE__);
            break;
        }
        if (n < max && (h.type == D11_MSG_GRANT || h.type == D11_MSG_RETURN)) {
            center_msg *m = &out[n++];
            m->type = h.type;
            m->req_id = h.req_id;
            CHECK(d11_msg_inv_dec(c->out.data + off + D11_FRAME_HDR_BYTES, h.len - D11_FRAME_HDR_BYTES, &m->inv) == 0);
            snprintf(m->sku, sizeof m->sku, "%.*s", (int)m->inv.sku.n, m->inv.sku.p);
            m->inv.sku.p = m->sku;
        }
        off += h.len;
    }
    c->out.len = c->out_off = 0;
    return n;
}

static void center_grant_reply(uint64_t req_id, uint32_t status, uint8_t exists, uint64_t price, uint64_t granted_cum,
                               uint8_t sold_out)
{
    d11_buf b;
    d11_buf_init(&b, 128);
    d11_frame_hdr h = {.type = D11_MSG_GRANT, .flags = D11_WF_REPLY, .req_id = req_id, .status = status};
    size_t st = d11_frame_begin(&b, &h);
    d11_msg_grant_reply g = {.exists = exists, .price_cents = price, .granted_cum = granted_cum, .sold_out = sold_out};
    d11_msg_grant_reply_enc(&b, &g);
    d11_frame_end(&b, st);
    d11_frame f = {.payload = (uint8_t *)b.data + D11_FRAME_HDR_BYTES, .payload_len = b.len - D11_FRAME_HDR_BYTES};
    CHECK(d11_frame_hdr_decode((uint8_t *)b.data, b.len, &f.hdr) == 0);
    handle_center_frame(&f);
    d11_buf_free(&b);
}

static void center_reclaim(const char *sku, uint8_t shadow)
{
    d11_buf b;
    d11_buf_init(&b, 128);
    d11_frame_hdr h = {.type = D11_MSG_RECLAIM, .flags = D11_WF_PUSH, .req_id = 7};
    size_t st = d11_frame_begin(&b, &h);
    d11_wenc_str(&b, sku, strlen(sku));
    d11_wenc_u8(&b, shadow);
    d11_frame_end(&b, st);
    d11_frame f = {.payload = (uint8_t *)b.data + D11_FRAME_HDR_BYTES, .payload_len = b.len - D11_FRAME_HDR_BYTES};
    CHECK(d11_frame_hdr_decode((uint8_t *)b.data, b.len, &f.hdr) == 0);
    handle_center_frame(&f);
    d11_buf_free(&b);
}

static void dbpath(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", g_tmp, name); }

/* ================================================================================== */

static void test_allotment(void)
{
    char db[700];
    dbpath(db, sizeof db, "allot.db");
    cell_setup(db, D11_DUR_NONE);
    mk_ledger("A", 0, 100, 10);
    mk_ledger("B", 0, 250, 5);
    uint32_t lc = mk_ledger("C", 0, 7, 3);
    uint32_t lbi = ledger_get("B", 1, 0, false);
#define LB (&S.ledgers.v[lbi])
    S.cfg.soldout_cache_ms = 3600 * 1000; /* cached answers must not expire during the test */
    S.ledgers.v[lc].returned = 1; /* available = 3 - 1 - 0 = 2 */

    /* 1. a two-item order reserves both */
    uint32_t st;
    uint64_t id1 = place(false, 42, "k1", (item_spec[]){{"A", 4}, {"B", 5}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    CHECK(id1 != 0);
    CHECK_EQ(L("A", 0)->sold, 4);
    CHECK_EQ(L("B", 0)->sold, 5);
    CHECK_EQ(avail_of("A", 0), 6);
    CHECK_EQ(avail_of("B", 0), 0);
    order *o1 = O(id1, 0);
    CHECK(o1 && o1->total == 4 * 100 + 5 * 250 && o1->status == ST_PENDING);
    const reply *r;

    /* 2. one item short, center unreachable: 503, NOTHING reserved, no order */
    size_t norders = S.orders.n;
    uint64_t rq = create(0, false, 43, "k2", (item_spec[]){{"A", 1}, {"B", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 503);
    CHECK_STREQ(r ? r->code : NULL, "unavailable");
    CHECK_EQ(L("A", 0)->sold, 4);
    CHECK_EQ(S.orders.n, norders);
    CHECK_EQ(S.parked.n, 0);

    /* 3. the same with a fresh sold-out answer cached for B: 409 out_of_stock */
    LB->soldout_until = d11_mono_ms() + 3600 * 1000;
    LB->soldout_min = 1;
    uint64_t oos0 = S.n_rejected_oos;
    rq = create(0, false, 43, "k3", (item_spec[]){{"A", 1}, {"B", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 409);
    CHECK_STREQ(r ? r->code : NULL, "out_of_stock");
    CHECK_EQ(L("A", 0)->sold, 4);
    CHECK_EQ(S.orders.n, norders);
    CHECK_EQ(S.n_rejected_oos, oos0 + 1);
    /* the cache only covers shortfalls at least as large as the one the center refused */
    LB->soldout_min = 2;
    rq = create(0, false, 43, "k3b", (item_spec[]){{"B", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 503); /* shortfall 1 < 2: asks the center (down) instead */
    rq = create(0, false, 43, "k3c", (item_spec[]){{"B", 2}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 409);
    /* an expired cache entry does not reject */
    LB->soldout_until = d11_mono_ms() - 1;
    rq = create(0, false, 43, "k3d", (item_spec[]){{"B", 2}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 503);

    /* 4. returned units are not available: C has 3 granted, 1 returned */
    LB->soldout_until = d11_mono_ms() + 3600 * 1000;
    S.ledgers.v[lc].soldout_until = d11_mono_ms() + 3600 * 1000;
    rq = create(0, false, 44, "k4", (item_spec[]){{"C", 3}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 409);
    CHECK_EQ(L("C", 0)->sold, 0);
    uint64_t id4 = place(false, 44, "k5", (item_spec[]){{"C", 2}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    CHECK(id4 != 0);
    CHECK_EQ(L("C", 0)->sold, 2);
    CHECK_EQ(avail_of("C", 0), 0);
    CHECK_EQ(L("C", 0)->returned + L("C", 0)->sold, L("C", 0)->granted);

    /* 5. exactly the available units */
    uint64_t id5 = place(false, 45, "k6", (item_spec[]){{"A", 6}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    CHECK_EQ(avail_of("A", 0), 0);
    CHECK_EQ(L("A", 0)->sold, 10);

    /* 6. cancel gives the units back to the allotment */
    rq = ref(0, D11_MSG_ORDER_CANCEL, false, id1, NULL);
    r = answer(0, rq);
    CHECK(r && r->status == 200);
    CHECK_EQ(L("A", 0)->sold, 6);
    CHECK_EQ(L("B", 0)->sold, 0);
    CHECK_EQ(avail_of("B", 0), 5);
    CHECK_EQ(units_held("A", 0), L("A", 0)->sold);
    CHECK_EQ(units_held("B", 0), L("B", 0)->sold);
    (void)id5;

    /* 7. with the center up: a shortfall parks the order and asks for exactly the shortfall */
    S.center_up = true;
    LB->soldout_until = 0;
    center_msg cm[8];
    center_take(cm, 8); /* drop anything queued so far */
    rq = create(0, false, 46, "k7", (item_spec[]){{"B", 2}, {"A", 7}, {NULL, 0}}); /* A has 4 left */
    pump();
    collect(0);
    CHECK(find_rep(rq) == NULL); /* parked: no answer yet */
    CHECK_EQ(S.parked.n, 1);
    CHECK_EQ(L("A", 0)->sold, 6); /* nothing reserved while parked, not even B */
    CHECK_EQ(L("B", 0)->sold, 0);
    int n = center_take(cm, 8);
    CHECK_EQ(n, 1);
    CHECK(n >= 1 && cm[0].type == D11_MSG_GRANT && strcmp(cm[0].sku, "A") == 0);
    CHECK(n >= 1 && cm[0].inv.qty == 3 && cm[0].inv.sold == 6 && cm[0].inv.shadow == 0 && cm[0].inv.cell == 0);
    /* a second order for A while the grant is in flight does not send a second GRANT */
    uint64_t rq2 = create(0, false, 47, "k8", (item_spec[]){{"A", 5}, {NULL, 0}});
    CHECK_EQ(S.parked.n, 2);
    CHECK_EQ(center_take(cm + 1, 7), 0);
    /* the center grants 10 more: both parked orders fit (3 + 5 <= 4 + 10) and are placed */
    center_grant_reply(cm[0].req_id, 200, 1, 100, 20, 0);
    CHECK_EQ(L("A", 0)->granted, 20);
    CHECK_EQ(S.parked.n, 0);
    r = answer(0, rq);
    CHECK(r && r->status == 201);
    CHECK(find_rep(rq2) && find_rep(rq2)->status == 201);
    CHECK_EQ(L("A", 0)->sold, 6 + 7 + 5);
    CHECK_EQ(L("B", 0)->sold, 2);
    CHECK_EQ(units_held("A", 0), L("A", 0)->sold);

    /* 8. the center says sold out: the parked order gets 409, nothing reserved, and the
     *    answer is cached for shortfalls of that size */
    rq = create(0, false, 48, "k9", (item_spec[]){{"B", 1}, {"A", 5}, {NULL, 0}}); /* A has 2 left */
    CHECK_EQ(S.parked.n, 1);
    n = center_take(cm, 8);
    CHECK(n == 1 && cm[0].inv.qty == 3);
    center_grant_reply(cm[0].req_id, 200, 1, 100, 20, 1);
    r = answer(0, rq);
    CHECK(r && r->status == 409);
    CHECK_STREQ(r ? r->code : NULL, "out_of_stock");
    CHECK_EQ(S.parked.n, 0);
    CHECK_EQ(L("B", 0)->sold, 2);
    CHECK_EQ(L("A", 0)->sold, 18);
    rq = create(0, false, 48, "k10", (item_spec[]){{"A", 5}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 409);            /* cached: no new grant request */
    CHECK_EQ(center_take(cm, 8), 0);
    uint64_t id11 = place(false, 48, "k11", (item_spec[]){{"A", 2}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201); /* what is left can still be sold */
    CHECK(id11 != 0);

    /* 9. a failed grant (status 503) is a short sold-out for any shortfall */
    rq = create(0, false, 49, "k12", (item_spec[]){{"B", 4}, {NULL, 0}}); /* B has 3 left */
    n = center_take(cm, 8);
    CHECK(n == 1 && cm[0].inv.qty == 1);
    center_grant_reply(cm[0].req_id, 503, 0, 0, 0, 0);
    r = answer(0, rq);
    CHECK(r && r->status == 409);
    CHECK_EQ(L("B", 0)->sold, 2);

    /* 10. an unknown SKU: the center says it does not exist -> 404, and it is remembered */
    rq = create(0, false, 50, "k13", (item_spec[]){{"B", 1}, {"NOPE", 1}, {NULL, 0}}); /* B has 3 left */
    n = center_take(cm, 8);
    CHECK(n == 1 && strcmp(cm[0].sku, "NOPE") == 0 && cm[0].inv.qty == 0);
    center_grant_reply(cm[0].req_id, 200, 0, 0, 0, 0);
    r = answer(0, rq);
    CHECK(r && r->status == 404);
    CHECK_STREQ(r ? r->code : NULL, "unknown_sku");
    CHECK_EQ(L("B", 0)->sold, 2);
    ledger *ln = &S.ledgers.v[ledger_get("NOPE", 4, 0, false)];
    ln->unknown_until = d11_mono_ms() + 3600 * 1000;
    rq = create(0, false, 50, "k14", (item_spec[]){{"NOPE", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 404);
    CHECK_EQ(center_take(cm, 8), 0);

    /* 11. RECLAIM: every available unit goes back; the RETURN leaves after the commit */
    uint64_t free_b = avail_of("B", 0);
    CHECK(free_b > 0);
    uint64_t ret0 = L("B", 0)->returned;
    center_reclaim("B", 0);
    CHECK_EQ(avail_of("B", 0), 0);
    CHECK_EQ(L("B", 0)->returned, ret0 + free_b);
    CHECK_EQ(center_take(cm, 8), 0); /* not before the new `returned` is durable */
    pump();
    n = center_take(cm, 8);
    CHECK(n == 1 && cm[0].type == D11_MSG_RETURN && strcmp(cm[0].sku, "B") == 0 && cm[0].inv.qty == ret0 + free_b);
    /* a reclaim for a SKU the cell never saw is answered with a RETURN of 0 */
    center_reclaim("NEVER-SEEN", 1);
    pump();
    n = center_take(cm, 8);
    CHECK(n == 1 && cm[0].type == D11_MSG_RETURN && cm[0].inv.qty == 0 && cm[0].inv.shadow == 1);

    /* the invariant on every ledger */
    for (size_t i = 0; i < S.ledgers.n; i++) {
        const ledger *l = &S.ledgers.v[i];
        CHECKF(l->returned + l->sold <= l->granted, "ledger %s: returned %llu + sold %llu > granted %llu", l->sku,
               (unsigned long long)l->returned, (unsigned long long)l->sold, (unsigned long long)l->granted);
    }
    S.center_up = false;
#undef LB
    cell_stop();
}

static void test_idempotency(void)
{
    char db[700];
    dbpath(db, sizeof db, "idem.db");
    cell_setup(db, D11_DUR_NONE);
    mk_ledger("A", 0, 100, 100);
    mk_ledger("B", 0, 50, 100);
    mk_ledger("A", 1, 100, 100); /* shadow copy */
    uint32_t st;
    const reply *r;

    uint64_t id1 = place(false, 42, "key-1", (item_spec[]){{"A", 1}, {"B", 2}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    size_t norders = S.orders.n;
    uint64_t sold_a = L("A", 0)->sold;
    /* same key, same body: the same order, 200 */
    uint64_t again = place(false, 42, "key-1", (item_spec[]){{"A", 1}, {"B", 2}, {NULL, 0}}, &st);
    CHECK_EQ(st, 200);
    CHECK_EQ(again, id1);
    CHECK_EQ(S.orders.n, norders);
    CHECK_EQ(L("A", 0)->sold, sold_a);
    /* same key, different body: 409 idempotency_mismatch (quantity, item, item count) */
    const item_spec *const other[] = {
        (item_spec[]){{"A", 2}, {"B", 2}, {NULL, 0}},
        (item_spec[]){{"A", 1}, {NULL, 0}},
        (item_spec[]){{"A", 1}, {"B", 2}, {"C", 1}, {NULL, 0}},
    };
    for (int k = 0; k < 3; k++) {
        uint64_t rq = create(0, false, 42, "key-1", other[k]);
        r = answer(0, rq);
        CHECKF(r && r->status == 409 && strcmp(r->code, "idempotency_mismatch") == 0, "body variant %d: %u %s", k,
               r ? r->status : 0, r ? r->code : "-");
    }
    CHECK_EQ(S.orders.n, norders);
    CHECK_EQ(L("A", 0)->sold, sold_a);
    /* the same key for another user is another order */
    uint64_t id2 = place(false, 43, "key-1", (item_spec[]){{"A", 1}, {"B", 2}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    CHECK(id2 != 0 && id2 != id1);
    /* stress traffic: same user, same key -> a separate shadow order on the shadow ledger */
    uint64_t sold_b = L("B", 0)->sold;
    uint64_t rq = create(0, true, 42, "key-1", (item_spec[]){{"A", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 201);
    CHECK(r && (r->flags & D11_WF_STRESS)); /* replies keep the stress tag */
    uint64_t sid = r ? json_u64(r->body, "order_id") : 0;
    CHECK(sid != 0 && sid != id1);
    CHECK_EQ(L("A", 1)->sold, 1);
    CHECK_EQ(L("A", 0)->sold, sold_a + 1); /* only user 43's order added to the real A */
    CHECK_EQ(L("B", 0)->sold, sold_b);
    rq = create(0, true, 42, "key-1", (item_spec[]){{"A", 1}, {NULL, 0}});
    r = answer(0, rq);
    CHECK(r && r->status == 200 && json_u64(r->body, "order_id") == sid);
    again = place(false, 42, "key-1", (item_spec[]){{"A", 1}, {"B", 2}, {NULL, 0}}, &st);
    CHECK(st == 200 && again == id1);
    /* real and shadow orders are invisible to each other */
    r = answer(0, ref(0, D11_MSG_ORDER_GET, true, id1, NULL));
    CHECK(r && r->status == 404);
    r = answer(0, ref(0, D11_MSG_ORDER_GET, false, sid, NULL));
    CHECK(r && r->status == 404);
    r = answer(0, ref(0, D11_MSG_ORDER_GET, true, sid, NULL));
    CHECK(r && r->status == 200);

    /* a replay before the first commit: both answers wait for the batch, same order */
    uint64_t q1 = create(0, false, 44, "key-2", (item_spec[]){{"B", 1}, {NULL, 0}});
    uint64_t q2 = create(0, false, 44, "key-2", (item_spec[]){{"B", 1}, {NULL, 0}});
    collect(0);
    CHECK_EQ(nreps_total, 0); /* nothing leaves before the commit */
    pump();
    collect(0);
    const reply *a1 = find_rep(q1), *a2 = find_rep(q2);
    CHECK(a1 && a2 && a1->status == 201 && a2->status == 200);
    CHECK(a1 && a2 && json_u64(a1->body, "order_id") == json_u64(a2->body, "order_id"));

    /* duplicates while parked: one order, both told its id */
    S.center_up = true;
    center_msg cm[4];
    center_take(cm, 4);
    uint64_t avail_a = avail_of("A", 0);
    q1 = create(0, false, 45, "key-3", (item_spec[]){{"A", (uint32_t)avail_a + 1}, {NULL, 0}});
    q2 = create(1, false, 45, "key-3", (item_spec[]){{"A", (uint32_t)avail_a + 1}, {NULL, 0}});
    CHECK_EQ(S.parked.n, 2);
    int n = center_take(cm, 4);
    CHECK_EQ(n, 1);
    norders = S.orders.n;
    if (n == 1) center_grant_reply(cm[0].req_id, 200, 1, 100, L("A", 0)->granted + 50, 0);
    CHECK_EQ(S.orders.n, norders + 1);
    pump();
    collect(0);
    a1 = find_rep(q1);
    uint64_t p1 = a1 ? json_u64(a1->body, "order_id") : 0;
    CHECK(a1 && a1->status == 201);
    collect(1);
    a2 = find_rep(q2);
    CHECK(a2 && a2->status == 200 && json_u64(a2->body, "order_id") == p1);
    S.center_up = false;

    /* a malformed create is 422 and changes nothing */
    d11_buf junk;
    d11_buf_init(&junk, 16);
    d11_wenc_u64(&junk, 42);
    norders = S.orders.n;
    rq = send_frame(0, D11_MSG_ORDER_CREATE, false, &junk);
    r = answer(0, rq);
    CHECK(r && r->status == 422);
    CHECK_EQ(S.orders.n, norders);
    d11_buf_free(&junk);
    cell_stop();
}

static void test_state_machine(void)
{
    char db[700];
    dbpath(db, sizeof db, "state.db");
    cell_setup(db, D11_DUR_NONE);
    mk_ledger("A", 0, 100, 100);
    uint32_t st;
    const reply *r;

    /* pending -> paid; repeat with the same payment id is fine; another id is not */
    uint64_t id = place(false, 7, "s1", (item_spec[]){{"A", 3}, {NULL, 0}}, &st);
    CHECK_EQ(L("A", 0)->sold, 3);
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id, "pay-1"));
    CHECK(r && r->status == 200);
    CHECK_STREQ(r ? json_str(r->body, "status") : NULL, "paid");
    CHECK_STREQ(r ? json_str(r->body, "payment_id") : NULL, "pay-1");
    CHECK_EQ(L("A", 0)->sold, 3); /* a paid order still holds its units */
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id, "pay-1"));
    CHECK(r && r->status == 200 && strcmp(json_str(r->body, "status"), "paid") == 0);
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id, "pay-2"));
    CHECK(r && r->status == 409);
    CHECK_STREQ(r ? r->code : NULL, "not_payable");
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id, "pay-1x"));
    CHECK(r && r->status == 409); /* a longer id with the same prefix is another id */
    r = answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, id, NULL));
    CHECK(r && r->status == 409);
    CHECK_STREQ(r ? r->code : NULL, "not_cancellable");
    CHECK_EQ(O(id, 0)->status, ST_PAID);
    CHECK_EQ(L("A", 0)->sold, 3);
    /* expiry never touches a paid order */
    CHECK(!expire_if_due(O(id, 0), INT64_MAX));
    CHECK_EQ(O(id, 0)->status, ST_PAID);

    /* pending -> cancelled; repeat is harmless; pay afterwards is refused */
    uint64_t id2 = place(false, 7, "s2", (item_spec[]){{"A", 4}, {NULL, 0}}, &st);
    CHECK_EQ(L("A", 0)->sold, 7);
    r = answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, id2, NULL));
    CHECK(r && r->status == 200 && strcmp(json_str(r->body, "status"), "cancelled") == 0);
    CHECK_EQ(L("A", 0)->sold, 3);
    r = answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, id2, NULL));
    CHECK(r && r->status == 200 && strcmp(json_str(r->body, "status"), "cancelled") == 0);
    CHECK_EQ(L("A", 0)->sold, 3); /* not returned twice */
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id2, "pay-3"));
    CHECK(r && r->status == 409 && strcmp(r->code, "not_payable") == 0);
    CHECK(!expire_if_due(O(id2, 0), INT64_MAX));
    CHECK_EQ(L("A", 0)->sold, 3);

    /* pending -> expired (explicitly due): units return once */
    uint64_t id3 = place(false, 7, "s3", (item_spec[]){{"A", 5}, {NULL, 0}}, &st);
    CHECK_EQ(L("A", 0)->sold, 8);
    order *o3 = O(id3, 0);
    CHECK(!expire_if_due(o3, o3->expires_at - 1));
    CHECK(expire_if_due(o3, o3->expires_at));
    CHECK_EQ(o3->status, ST_EXPIRED);
    CHECK_EQ(L("A", 0)->sold, 3);
    CHECK(!expire_if_due(o3, INT64_MAX));
    CHECK_EQ(L("A", 0)->sold, 3);
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id3, "pay-4"));
    CHECK(r && r->status == 409 && strcmp(r->code, "not_payable") == 0);
    r = answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, id3, NULL));
    CHECK(r && r->status == 409 && strcmp(r->code, "not_cancellable") == 0);
    r = answer(0, ref(0, D11_MSG_ORDER_GET, false, id3, NULL));
    CHECK(r && r->status == 200 && strcmp(json_str(r->body, "status"), "expired") == 0);

    /* lazy expiry on access: a GET / PAY of an order past its time sees it expired */
    uint64_t id4 = place(false, 7, "s4", (item_spec[]){{"A", 1}, {NULL, 0}}, &st);
    O(id4, 0)->expires_at = d11_wall_ms() - 1;
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id4, "pay-5"));
    CHECK(r && r->status == 409 && strcmp(r->code, "not_payable") == 0);
    CHECK_EQ(O(id4, 0)->status, ST_EXPIRED);
    CHECK_EQ(L("A", 0)->sold, 3);

    /* timer expiry: tick() pops due orders from the heap */
    int64_t ttl = S.cfg.order_ttl_ms;
    S.cfg.order_ttl_ms = 0; /* due at creation */
    uint64_t id5 = place(false, 8, "s5", (item_spec[]){{"A", 2}, {NULL, 0}}, &st);
    S.cfg.order_ttl_ms = ttl;
    uint64_t id6 = place(false, 8, "s6", (item_spec[]){{"A", 2}, {NULL, 0}}, &st); /* not due */
    CHECK_EQ(L("A", 0)->sold, 7);
    tick();
    CHECK_EQ(O(id5, 0)->status, ST_EXPIRED);
    CHECK_EQ(O(id6, 0)->status, ST_PENDING);
    CHECK_EQ(L("A", 0)->sold, 5);
    CHECK_EQ(units_held("A", 0), 5);
    pump();

    /* unknown order, malformed request */
    r = answer(0, ref(0, D11_MSG_ORDER_GET, false, 12345, NULL));
    CHECK(r && r->status == 404 && strcmp(r->code, "not_found") == 0);
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, id6, NULL)); /* PAY without payment id */
    CHECK(r && r->status == 422);
    CHECK_EQ(O(id6, 0)->status, ST_PENDING);
    d11_buf bad;
    d11_buf_init(&bad, 16);
    d11_wenc_u64(&bad, id6);
    d11_wenc_str(&bad, "pay\t6", 5); /* tab: not printable ASCII */
    r = answer(0, send_frame(0, D11_MSG_ORDER_PAY, false, &bad));
    CHECK(r && r->status == 422);
    CHECK_EQ(O(id6, 0)->status, ST_PENDING);
    d11_buf_free(&bad);
    /* a reply follows only the connection generation it was asked on */
    uint64_t rq = ref(2, D11_MSG_ORDER_PAY, false, id6, "pay-6");
    S.conns[2].gen++; /* the gateway connection went away before the commit */
    pump();
    collect(2);
    CHECK(find_rep(rq) == NULL);
    CHECK_EQ(O(id6, 0)->status, ST_PAID); /* the payment itself stands */

    /* an illegal move is an assertion (abort), never a silent state change */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        order_transition(O(id, 0), ST_CANCELLED, "order.cancelled"); /* paid -> cancelled */
        _exit(0);
    }
    int ws = 0;
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGABRT, "paid -> cancelled did not abort (status 0x%x)", ws);
    cell_stop();
}

static void test_order_ids(void)
{
    char db[700];
    dbpath(db, sizeof db, "ids.db");
    cell_setup(db, D11_DUR_NONE);
    mk_ledger("A", 0, 1, 1000000);
    uint32_t st;
    static const uint64_t users[] = {1, 2, 1023, 1024, 1025, 777777, (uint64_t)INT64_MAX, (uint64_t)INT64_MAX - 1023};
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++) {
        char key[32];
        snprintf(key, sizeof key, "u%zu", i);
        uint64_t id = place(false, users[i], key, (item_spec[]){{"A", 1}, {NULL, 0}}, &st);
        CHECK_EQ(st, 201);
        CHECKF(((id >> 12) & 1023) == users[i] % 1024, "user %llu: id %llu has slot %llu", (unsigned long long)users[i],
               (unsigned long long)id, (unsigned long long)((id >> 12) & 1023));
        /* the id is a decimal string in the reply and the order's user is right */
        CHECK(O(id, 0) && O(id, 0)->user_id == users[i]);
    }
    /* 5000 orders of one user in one batch: strictly increasing ids */
    size_t first = S.orders.n;
    for (int i = 0; i < 5000; i++) {
        char key[32];
        snprintf(key, sizeof key, "bulk-%d", i);
        create(0, false, 99, key, (item_spec[]){{"A", 1}, {NULL, 0}});
    }
    pump();
    collect(0);
    CHECK_EQ(nreps_total, 5000);
    bool inc = true, slot_ok = true;
    for (size_t i = first; i < S.orders.n; i++) {
        if (i > first && S.orders.v[i].id <= S.orders.v[i - 1].id) inc = false;
        if (((S.orders.v[i].id >> 12) & 1023) != 99) slot_ok = false;
    }
    CHECK_EQ(S.orders.n - first, 5000);
    CHECK(inc);
    CHECK(slot_ok);
    /* the generator itself: (ms, seq) strictly increasing across slots, seq < 4096,
     * including when more than 4096 ids are taken within one millisecond */
    uint64_t prev = 0;
    bool gen_ok = true;
    for (int i = 0; i < 20000; i++) {
        unsigned slot = (unsigned)(i * 37 % 1024);
        uint64_t id = new_order_id(slot);
        uint64_t key = (id >> 22) << 12 | (id & 4095);
        if (((id >> 12) & 1023) != slot || (i && key <= prev)) gen_ok = false;
        prev = key;
    }
    CHECK(gen_ok);

    /* the per-user list: newest first, pages joined by `next` */
    uint64_t rq = list(0, false, 99, 0, 3);
    const reply *r = answer(0, rq);
    CHECK(r && r->status == 200);
    uint64_t newest = S.orders.v[S.orders.n - 1].id;
    CHECK(r && json_u64(r->body, "order_id") == newest);
    uint64_t next = r ? json_u64(r->body, "next") : 0;
    CHECK_EQ(next, S.orders.v[S.orders.n - 3].id);
    rq = list(0, false, 99, next, 2);
    r = answer(0, rq);
    CHECK(r && json_u64(r->body, "order_id") == S.orders.v[S.orders.n - 4].id);
    rq = list(0, false, 1, 0, 50); /* one order: next is null */
    r = answer(0, rq);
    CHECK(r && strstr(r->body, "\"next\":null") != NULL);
    rq = list(0, true, 99, 0, 50); /* the shadow list of the same user is empty */
    r = answer(0, rq);
    CHECK(r && strstr(r->body, "\"orders\":[]") != NULL);
    cell_stop();
}

/* ---- durability: commit through the storage thread, recover into a fresh S ---- */

typedef struct snap_order {
    uint64_t id, user, total;
    int64_t created, expires;
    uint8_t status, shadow, nitems;
    char idem[140], payment[140];
    char skus[4][D11_SKU_BYTES_MAX + 1];
    uint32_t qty[4];
    uint64_t price[4];
} snap_order;

static void snap(const order *o, snap_order *s)
{
    memset(s, 0, sizeof *s);
    s->id = o->id;
    s->user = o->user_id;
    s->total = o->total;
    s->created = o->created_at;
    s->expires = o->expires_at;
    s->status = o->status;
    s->shadow = o->shadow;
    s->nitems = o->nitems;
    snprintf(s->idem, sizeof s->idem, "%.*s", (int)o->idem_n, o->idem);
    if (o->payment) snprintf(s->payment, sizeof s->payment, "%.*s", (int)o->payment_n, o->payment);
    for (uint32_t k = 0; k < o->nitems && k < 4; k++) {
        const oitem *it = &S.items.v[o->items + k];
        snprintf(s->skus[k], sizeof s->skus[k], "%s", S.ledgers.v[it->ledger].sku);
        s->qty[k] = it->qty;
        s->price[k] = it->price;
    }
}

static long long db_count(const char *path, const char *sql)
{
    sqlite3 *db;
    long long n = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(db);
    return n;
}

static void test_durability(void)
{
    char db[700];
    dbpath(db, sizeof db, "durable.db");
    cell_setup(db, D11_DUR_SYNC);
    CHECK_EQ(S.orders.n, 0);
    mk_ledger("A", 0, 100, 50);
    mk_ledger("B-2.x_y", 0, 333, 20);
    mk_ledger("A", 1, 100, 40);
    uint32_t st;
    uint64_t ids[8];
    int k = 0;
    ids[k++] = place(false, 1, "d-1", (item_spec[]){{"A", 2}, {"B-2.x_y", 3}, {NULL, 0}}, &st);
    ids[k++] = place(false, 1025, "d-2", (item_spec[]){{"A", 1}, {NULL, 0}}, &st); /* same slot */
    ids[k++] = place(false, 2, "d-3", (item_spec[]){{"B-2.x_y", 4}, {NULL, 0}}, &st);
    ids[k++] = place(false, 3, "d-4", (item_spec[]){{"A", 5}, {NULL, 0}}, &st);
    ids[k++] = place(true, 1, "d-1", (item_spec[]){{"A", 7}, {NULL, 0}}, &st); /* shadow */
    for (int i = 0; i < k; i++) CHECKF(ids[i] != 0, "order %d not placed", i);
    answer(0, ref(0, D11_MSG_ORDER_PAY, false, ids[0], "pay-~!1"));
    answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, ids[2], NULL));
    order *o4 = O(ids[3], 0);
    CHECK(expire_if_due(o4, o4->expires_at));
    center_reclaim("A", 1); /* shadow A: returned = 40 - 7 = 33 */
    pump();
    CHECK_EQ(L("A", 1)->returned, 33);
    /* a cancel whose batch was closed AND an order that never committed: the first is
     * durable once its batch commits; the second must vanish with the "crash" */
    uint64_t lost_rq = create(0, false, 4, "d-lost", (item_spec[]){{"A", 1}, {NULL, 0}});
    CHECK(!S.committing && open_batch()->nops > 0);
    size_t n_before = S.orders.n - 1; /* without the lost one */
    snap_order before[16];
    size_t nb = 0;
    for (size_t i = 0; i < n_before && nb < 16; i++) snap(&S.orders.v[i], &before[nb++]);
    struct {
        char sku[D11_SKU_BYTES_MAX + 1];
        uint8_t shadow;
        uint64_t price, granted, returned, sold;
    } lb[8];
    size_t nl = 0;
    for (size_t i = 0; i < S.ledgers.n && nl < 8; i++) {
        ledger *l = &S.ledgers.v[i];
        snprintf(lb[nl].sku, sizeof lb[nl].sku, "%s", l->sku);
        lb[nl].shadow = l->shadow;
        lb[nl].price = l->price;
        lb[nl].granted = l->granted;
        lb[nl].returned = l->returned;
        lb[nl].sold = l->sold;
        if (!strcmp(l->sku, "A") && l->shadow == 0) lb[nl].sold -= 1; /* the lost order's unit */
        nl++;
    }
    uint64_t next_event = S.next_event_id;
    collect(0);
    CHECK(find_rep(lost_rq) == NULL); /* never acknowledged */
    cell_stop(); /* "crash": the open batch is not committed */

    /* events in the outbox: 5 created + pay + cancel + expire (+1 lost, not committed) */
    CHECK_EQ(db_count(db, "SELECT count(*) FROM outbox") + db_count(db, "SELECT count(*) FROM shadow_outbox"), 8);
    CHECK_EQ(db_count(db, "SELECT count(*) FROM orders WHERE user_id = 4"), 0);

    cell_setup(db, D11_DUR_SYNC); /* recover() runs inside */
    CHECK_EQ(S.orders.n, n_before);
    for (size_t i = 0; i < nb; i++) {
        order *o = O(before[i].id, before[i].shadow);
        CHECKF(o != NULL, "order %llu lost", (unsigned long long)before[i].id);
        if (!o) continue;
        snap_order a;
        snap(o, &a);
        CHECKF(memcmp(&a, &before[i], sizeof a) == 0,
               "order %llu differs after recovery: status %u/%u total %llu/%llu items %u/%u idem '%s'/'%s' pay "
               "'%s'/'%s'",
               (unsigned long long)a.id, a.status, before[i].status, (unsigned long long)a.total,
               (unsigned long long)before[i].total, a.nitems, before[i].nitems, a.idem, before[i].idem, a.payment,
               before[i].payment);
    }
    CHECK(O(ids[4], 1) != NULL && O(ids[4], 0) == NULL); /* the shadow order stays shadow */
    for (size_t i = 0; i < nl; i++) {
        uint32_t li = ledger_get(lb[i].sku, strlen(lb[i].sku), lb[i].shadow, false);
        CHECKF(li != NONE32, "ledger %s/%u lost", lb[i].sku, lb[i].shadow);
        if (li == NONE32) continue;
        ledger *l = &S.ledgers.v[li];
        CHECK_EQ(l->known, 1);
        CHECKF(l->price == lb[i].price && l->granted == lb[i].granted && l->returned == lb[i].returned &&
                   l->sold == lb[i].sold,
               "ledger %s/%u: price %llu/%llu granted %llu/%llu returned %llu/%llu sold %llu/%llu", lb[i].sku,
               lb[i].shadow, (unsigned long long)l->price, (unsigned long long)lb[i].price,
               (unsigned long long)l->granted, (unsigned long long)lb[i].granted, (unsigned long long)l->returned,
               (unsigned long long)lb[i].returned, (unsigned long long)l->sold, (unsigned long long)lb[i].sold);
        CHECK_EQ(l->sold, units_held(lb[i].sku, lb[i].shadow));
    }
    /* the lost order's unit is back in the allotment; the event counter is past every event */
    CHECK_EQ(L("A", 0)->sold, 2 + 1); /* d-1 (paid) 2 + d-2 1; d-4 expired */
    CHECK(S.next_event_id >= 9 && S.next_event_id <= next_event);
    /* idempotency survived: replay -> same id 200, other body -> 409, shadow separate */
    const reply *r;
    r = answer(0, create(0, false, 1, "d-1", (item_spec[]){{"A", 2}, {"B-2.x_y", 3}, {NULL, 0}}));
    CHECK(r && r->status == 200 && json_u64(r->body, "order_id") == ids[0]);
    CHECK(r && strcmp(json_str(r->body, "status"), "paid") == 0);
    CHECK(r && strcmp(json_str(r->body, "payment_id"), "pay-~!1") == 0);
    r = answer(0, create(0, false, 1, "d-1", (item_spec[]){{"A", 3}, {NULL, 0}}));
    CHECK(r && r->status == 409 && strcmp(r->code, "idempotency_mismatch") == 0);
    r = answer(0, create(0, true, 1, "d-1", (item_spec[]){{"A", 7}, {NULL, 0}}));
    CHECK(r && r->status == 200 && json_u64(r->body, "order_id") == ids[4]);
    /* the key of the lost order is free: a retry creates the order now */
    r = answer(0, create(0, false, 4, "d-lost", (item_spec[]){{"A", 1}, {NULL, 0}}));
    CHECK(r && r->status == 201);
    /* the state machine continues from the recovered state */
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, ids[0], "pay-~!1"));
    CHECK(r && r->status == 200);
    r = answer(0, ref(0, D11_MSG_ORDER_CANCEL, false, ids[1], NULL));
    CHECK(r && r->status == 200);
    r = answer(0, ref(0, D11_MSG_ORDER_PAY, false, ids[3], "p"));
    CHECK(r && r->status == 409);
    /* new ids after recovery keep increasing per user, and the list is newest first */
    uint64_t id_new = place(false, 1, "d-5", (item_spec[]){{"A", 1}, {NULL, 0}}, &st);
    CHECK(id_new > ids[0]);
    r = answer(0, list(0, false, 1, 0, 10));
    CHECK(r && json_u64(r->body, "order_id") == id_new);
    CHECK(S.heap.n >= 2); /* recovered pending orders (ids[1], shadow ids[4]) are on the expiry heap */
    /* an order that falls due while the cell is down */
    int64_t ttl = S.cfg.order_ttl_ms;
    S.cfg.order_ttl_ms = 0;
    uint64_t id_due = place(false, 6, "d-due", (item_spec[]){{"A", 4}, {NULL, 0}}, &st);
    S.cfg.order_ttl_ms = ttl;
    CHECK(id_due != 0);
    uint64_t sold_with_due = L("A", 0)->sold;
    size_t n2 = S.orders.n;
    cell_stop();

    /* third life: the durable state of the second, and the overdue order expires on tick */
    cell_setup(db, D11_DUR_SYNC);
    CHECK_EQ(S.orders.n, n2);
    CHECK_EQ(O(ids[1], 0) ? O(ids[1], 0)->status : 99, ST_CANCELLED);
    CHECK_EQ(O(id_due, 0) ? O(id_due, 0)->status : 99, ST_PENDING);
    CHECK_EQ(L("A", 0)->sold, sold_with_due);
    tick();
    CHECK_EQ(O(id_due, 0) ? O(id_due, 0)->status : 99, ST_EXPIRED);
    CHECK_EQ(L("A", 0)->sold, sold_with_due - 4);
    pump();
    cell_stop();
    /* fourth life: the expiry and the returned units were committed together */
    cell_setup(db, D11_DUR_SYNC);
    CHECK_EQ(O(id_due, 0) ? O(id_due, 0)->status : 99, ST_EXPIRED);
    CHECK_EQ(L("A", 0)->sold, sold_with_due - 4);
    CHECK_EQ(units_held("A", 0), L("A", 0)->sold);
    cell_stop();
}

/* ---- storage atomicity: one transaction per batch ---- */

static void test_commit_atomic(void)
{
    char db[700];
    dbpath(db, sizeof db, "atomic.db");
    cell_store s;
    CHECK(cell_store_open(&s, db, D11_DUR_NONE, 10) == 0);
    cell_batch b = {0};
    d11_buf_init(&b.ops, 1024);
    /* a valid insert, then an update of an order that does not exist */
    d11_wenc_u8(&b.ops, CELL_OP_ORDER_INSERT);
    d11_wenc_u8(&b.ops, 0);
    d11_wenc_u64(&b.ops, 555);
    d11_wenc_u64(&b.ops, 9);
    d11_wenc_str(&b.ops, "key", 3);
    d11_wenc_u64(&b.ops, 1);
    d11_wenc_u8(&b.ops, ST_PENDING);
    d11_wenc_u64(&b.ops, 100);
    d11_wenc_u64(&b.ops, 1000);
    d11_wenc_u64(&b.ops, 2000);
    d11_wenc_u8(&b.ops, 1);
    d11_wenc_str(&b.ops, "A", 1);
    d11_wenc_u32(&b.ops, 1);
    d11_wenc_u64(&b.ops, 100);
    size_t good_len = b.ops.len;
    d11_wenc_u8(&b.ops, CELL_OP_ORDER_UPDATE);
    d11_wenc_u8(&b.ops, 0);
    d11_wenc_u64(&b.ops, 556);
    d11_wenc_u8(&b.ops, ST_PAID);
    d11_wenc_str(&b.ops, "p", 1);
    d11_wenc_u64(&b.ops, 3000);
    b.nops = 2;
    CHECK_RC(commit_batch(&s, &b), D11_ESTORE);
    /* the same insert, then a truncated record: D11_EPROTO */
    b.ops.len = good_len;
    d11_wenc_u8(&b.ops, CELL_OP_STOCK);
    d11_wenc_str(&b.ops, "A", 1);
    b.nops = 2;
    CHECK_RC(commit_batch(&s, &b), D11_EPROTO);
    /* an unknown op code */
    b.ops.len = good_len;
    d11_wenc_u8(&b.ops, 99);
    CHECK_RC(commit_batch(&s, &b), D11_EPROTO);
    /* fault injection: the Nth commit fails before touching anything */
    b.ops.len = good_len;
    b.nops = 1;
    s.fail_commit_at = s.commits + 1;
    CHECK_RC(commit_batch(&s, &b), D11_ESTORE);
    s.fail_commit_at = 0;
    /* nothing of the failed batches is in the database */
    sqlite3_stmt *q = d11_sqlite_prepare(s.db, "SELECT count(*) FROM orders");
    CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) == 0);
    sqlite3_reset(q);
    /* and the valid batch alone commits, once */
    CHECK_EQ(commit_batch(&s, &b), 0);
    CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) == 1);
    sqlite3_reset(q);
    CHECK_RC(commit_batch(&s, &b), D11_ESTORE); /* same primary key again */
    CHECK(sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int64(q, 0) == 1);
    sqlite3_finalize(q);
    /* an empty batch is a no-op */
    cell_batch e = {0};
    uint64_t c0 = s.commits;
    CHECK_EQ(commit_batch(&s, &e), 0);
    CHECK_EQ(s.commits, c0);
    d11_buf_free(&b.ops);
    sqlite3_stmt *sts[] = {s.ins_order[0], s.ins_order[1], s.ins_item[0], s.ins_item[1], s.upd_order[0],
                           s.upd_order[1], s.ins_outbox[0], s.ins_outbox[1], s.up_stock};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++) sqlite3_finalize(sts[i]);
    d11_sqlite_close(s.db);
    close(s.done_fd);
}

/* A failed commit: the waiting client gets 503 (not placed), the cell exits for recovery,
 * and the order is not in the database. Runs in a child process (batch_done _exits). */
static void test_commit_failure(void)
{
    char db[700];
    dbpath(db, sizeof db, "fail.db");
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        cell_setup(db, D11_DUR_SYNC);
        mk_ledger("A", 0, 100, 10);
        d11_conn_release(&S.conns[3].c);
        d11_conn_init(&S.conns[3].c, sv[1]);
        S.store.fail_commit_at = S.store.commits + 1;
        create(3, false, 5, "f-1", (item_spec[]){{"A", 1}, {NULL, 0}});
        pump(); /* batch_done() answers 503 and _exits(1) */
        _exit(0);
    }
    close(sv[1]);
    int ws = 0;
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 1, "child status 0x%x", ws);
    d11_conn c;
    d11_conn_init(&c, sv[0]);
    CHECK(d11_set_nonblock(sv[0]) == 0);
    int rc = d11_conn_read(&c);
    CHECK(rc == D11_ECLOSED);
    d11_frame f;
    CHECK_EQ(d11_conn_frame(&c, &f), 1);
    if (c.in_off) {
        d11_str code, body;
        CHECK_EQ(f.hdr.status, 503);
        CHECK(d11_msg_reply_dec(f.payload, f.payload_len, &code, &body) == 0 && code.n == 11 &&
              memcmp(code.p, "unavailable", 11) == 0);
    }
    d11_conn_release(&c);
    CHECK_EQ(db_count(db, "SELECT count(*) FROM orders"), 0);
}

/* Recovery refuses a database whose ledger disagrees with its orders. */
static void test_recovery_check(void)
{
    char db[700];
    dbpath(db, sizeof db, "tamper.db");
    cell_setup(db, D11_DUR_NONE);
    mk_ledger("A", 0, 100, 10);
    uint32_t st;
    place(false, 5, "t-1", (item_spec[]){{"A", 3}, {NULL, 0}}, &st);
    CHECK_EQ(st, 201);
    cell_stop();
    /* consistent: recovers */
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        cell_setup(db, D11_DUR_NONE);
        _exit(L("A", 0) && L("A", 0)->sold == 3 ? 0 : 3);
    }
    int ws = 0;
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CHECKF(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "clean recovery: status 0x%x", ws);
    /* tampered: sold one too high */
    sqlite3 *h;
    CHECK(sqlite3_open(db, &h) == SQLITE_OK);
    CHECK(sqlite3_exec(h, "UPDATE stock SET sold = sold + 1 WHERE sku = 'A'", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(h);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 2);
        cell_setup(db, D11_DUR_NONE);
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &ws, 0) == pid);
    CHECKF(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGABRT, "tampered ledger recovered (status 0x%x)", ws);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    d11_log_init("test_cell", D11_LOG_ERROR + 1); /* quiet: failures are reported on stdout */
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/d11-test-cell.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(g_tmp)) {
        printf("cannot create a temporary directory: %s\n0 passed, 1 failed\n", strerror(errno));
        return 1;
    }
    /* fork-based tests first, while no storage thread exists in this process */
    test_commit_failure();
    test_recovery_check();
    test_commit_atomic();
    test_allotment();
    test_idempotency();
    test_state_machine();
    test_order_ids();
    test_durability();
    char cmd[700];
    if (!getenv("D11_KEEP_TMP")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
        if (system(cmd) != 0) printf("could not remove %s\n", g_tmp);
    }
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
