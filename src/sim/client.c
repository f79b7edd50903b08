/*
 * client.c — the simulator's fake gateway: the workload and the checks on every reply.
 *
 * Workload (all random from the seed): products (SKU-0 hot with little stock), creates
 * with 1-3 items from SIM_USERS users (some as stress traffic), idempotent replays of a
 * key with the same body and with a different body, pay, cancel, get, list, restocks.
 * Requests carry an absolute deadline; an unanswered request times out (its outcome is
 * unknown, as for a real client) and may be retried with the same key.
 *
 * Checks on replies (violations go to sim_fail):
 *   - one order per idempotency key: a key answered with order X is never answered with
 *     another order; a different body for an acknowledged key is never placed;
 *   - status moves only forward: once an order was seen paid / cancelled / expired it is
 *     never seen in another status;
 *   - every acknowledged order is durable with its last acknowledged status: checked on
 *     every recovery (sim_client_after_recovery) against the recovered cell.
 */
#include "sim.h"
#include "../store/cell_ops.h"

#include <stdlib.h>
#include <string.h>

#define REQ_TIMEOUT_MS 400

static const char *SKU[SIM_SKUS] = {"HOT-0", "SKU-1", "SKU-2", "SKU-3"};

static int route(const sim *s, uint64_t user)
{
    return s->routing.cell_of_slot[user % D11_SLOTS]; /* the center's default table */
}

static sim_req *req_new(sim *s, sim_rq_kind kind, int target)
{
    for (int i = 0; i < SIM_REQS_MAX; i++) {
        sim_req *r = &s->reqs[i];
        if (r->used) continue;
        memset(r, 0, sizeof *r);
        r->used = true;
        r->kind = kind;
        r->target = target;
        r->req_id = ++s->next_req;
        r->timeout_at = s->now + REQ_TIMEOUT_MS;
        r->order = r->key = -1;
        r->link_gen = target >= 0 ? s->cells[target].from_gw.gen : s->center.from_gw.gen;
        s->stats.requests++;
        return r;
    }
    return NULL;
}

static void begin(sim *s, sim_req *r, uint16_t type, bool stress, size_t *start)
{
    d11_buf_reset(&s->tmp);
    d11_frame_hdr h = {.type = type, .req_id = r->req_id, .flags = stress ? D11_WF_STRESS : 0,
                       .deadline_ms = d11_deadline_from_budget(s->now, REQ_TIMEOUT_MS)};
    *start = d11_frame_begin(&s->tmp, &h);
}

static void send(sim *s, sim_req *r, size_t start)
{
    d11_frame_end(&s->tmp, start);
    if (r->target >= 0) sim_send_cell(s, r->target, &s->tmp);
    else sim_send_center(s, &s->tmp);
}

static void product_create(sim *s, int k)
{
    sim_req *r = req_new(s, RQ_PRODUCT, -1);
    if (!r) return;
    r->sku = k;
    uint64_t stock = k == 0 ? 5 + sim_below(&s->rng, 40) : 40 + sim_below(&s->rng, 300);
    size_t start;
    begin(s, r, D11_MSG_PRODUCT_CREATE, false, &start);
    d11_msg_product m = {{SKU[k], strlen(SKU[k])}, {"thing", 5}, 100 + (uint64_t)k, stock, {"cat", 3}};
    d11_msg_product_enc(&s->tmp, &m);
    send(s, r, start);
}

void sim_client_init(sim *s)
{
    for (int k = 0; k < SIM_SKUS; k++) product_create(s, k);
}

static void create(sim *s, int oi, bool diff_body)
{
    sim_order *o = &s->orders[oi];
    int ci = route(s, (uint64_t)o->user);
    sim_req *r = req_new(s, RQ_CREATE, ci);
    if (!r) return;
    r->order = oi;
    r->diff_body = diff_body;
    size_t start;
    begin(s, r, D11_MSG_ORDER_CREATE, o->stress, &start);
    d11_msg_order_create m = {.user_id = (uint64_t)o->user, .idem_key = {o->key, strlen(o->key)}, .nitems = o->nitems};
    for (uint32_t i = 0; i < o->nitems; i++)
        m.items[i] = (d11_item){{SKU[o->skus[i]], strlen(SKU[o->skus[i]])}, o->qty[i] + (diff_body && i == 0)};
    d11_msg_order_create_enc(&s->tmp, &m);
    send(s, r, start);
}

static void order_ref(sim *s, sim_rq_kind kind, int oi)
{
    sim_order *o = &s->orders[oi];
    int ci = route(s, (uint64_t)o->user);
    sim_req *r = req_new(s, kind, ci);
    if (!r) return;
    r->order = oi;
    uint16_t type = kind == RQ_PAY ? D11_MSG_ORDER_PAY : kind == RQ_CANCEL ? D11_MSG_ORDER_CANCEL : D11_MSG_ORDER_GET;
    size_t start;
    begin(s, r, type, o->stress, &start);
    d11_msg_order_ref m = {.order_id = o->id, .payment_id = {o->pay, strlen(o->pay)}};
    d11_msg_order_ref_enc(&s->tmp, &m, kind == RQ_PAY);
    send(s, r, start);
}

static void list(sim *s, int user, bool stress)
{
    sim_req *r = req_new(s, RQ_LIST, route(s, (uint64_t)user));
    if (!r) return;
    size_t start;
    begin(s, r, D11_MSG_ORDER_LIST, stress, &start);
    d11_msg_order_list m = {(uint64_t)user, 0, 1 + sim_below(&s->rng, 5)};
    d11_msg_order_list_enc(&s->tmp, &m);
    send(s, r, start);
}

static void restock(sim *s)
{
    sim_req *r = req_new(s, RQ_RESTOCK, -1);
    if (!r) return;
    size_t start;
    begin(s, r, D11_MSG_PRODUCT_RESTOCK, false, &start);
    int k = (int)sim_below(&s->rng, SIM_SKUS);
    d11_msg_sku_qty m = {{SKU[k], strlen(SKU[k])}, 1 + sim_below(&s->rng, 5)};
    d11_msg_sku_qty_enc(&s->tmp, &m, true);
    send(s, r, start);
    s->stats.restocks++;
}

static int pick_known(sim *s)
{
    if (!s->norders) return -1;
    for (int tries = 0; tries < 8; tries++) {
        int oi = (int)sim_below(&s->rng, (uint32_t)s->norders);
        if (s->orders[oi].id) return oi;
    }
    return -1;
}

void sim_client_act(sim *s)
{
    for (int k = 0; k < SIM_SKUS; k++)
        if (!s->product_made[k]) {
            if (sim_chance(&s->rng, 300)) product_create(s, k);
            return;
        }
    uint32_t r = sim_below(&s->rng, 100);
    if (r < 40 && s->norders < SIM_ORDERS_MAX) { /* a new key */
        int oi = s->norders++;
        sim_order *o = &s->orders[oi];
        memset(o, 0, sizeof *o);
        o->user = 1 + (int)sim_below(&s->rng, SIM_USERS);
        o->stress = sim_chance(&s->rng, 150);
        o->nitems = 1 + (sim_chance(&s->rng, 300) ? sim_below(&s->rng, 3) : 0);
        bool used[SIM_SKUS] = {0};
        for (uint32_t i = 0; i < o->nitems; i++) {
            int k;
            do k = sim_chance(&s->rng, 500) ? 0 : (int)sim_below(&s->rng, SIM_SKUS);
            while (used[k]);
            used[k] = true;
            o->skus[i] = k;
            o->qty[i] = 1 + sim_below(&s->rng, 3);
        }
        snprintf(o->key, sizeof o->key, "k-%d", oi);
        snprintf(o->pay, sizeof o->pay, "pay-%d", oi);
        create(s, oi, false);
    } else if (r < 55 && s->norders) { /* a replay: same key, same body */
        create(s, (int)sim_below(&s->rng, (uint32_t)s->norders), false);
    } else if (r < 58) { /* same key, different body: only for keys known to be placed */
        int oi = pick_known(s);
        if (oi >= 0) create(s, oi, true);
    } else if (r < 70) {
        int oi = pick_known(s);
        if (oi >= 0) order_ref(s, RQ_PAY, oi);
    } else if (r < 80) {
        int oi = pick_known(s);
        if (oi >= 0) order_ref(s, RQ_CANCEL, oi);
    } else if (r < 92) {
        int oi = pick_known(s);
        if (oi >= 0) order_ref(s, RQ_GET, oi);
    } else if (r < 97) {
        list(s, 1 + (int)sim_below(&s->rng, SIM_USERS), sim_chance(&s->rng, 150));
    } else {
        restock(s);
    }
}

/* ---- replies ---- */

static bool json_u64_after(const char *p, size_t n, const char *key, uint64_t *out)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < n; i++) {
        if (memcmp(p + i, key, kl) != 0) continue;
        i += kl;
        if (i < n && p[i] == '"') i++;
        uint64_t v = 0;
        size_t d = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') v = v * 10 + (uint64_t)(p[i++] - '0'), d++;
        if (!d) return false;
        *out = v;
        return true;
    }
    return false;
}

static int json_status(const char *p, size_t n)
{
    static const char key[] = "\"status\":\"";
    for (size_t i = 0; i + sizeof key < n; i++) {
        if (memcmp(p + i, key, sizeof key - 1) != 0) continue;
        const char *v = p + i + sizeof key - 1;
        const char *e = memchr(v, '"', n - (size_t)(v - p));
        return e ? cell_status_parse(v, (size_t)(e - v)) : -1;
    }
    return -1;
}

/* An order was seen in `status` (from any reply). */
static void saw_status(sim *s, int oi, int status, bool acked)
{
    sim_order *o = &s->orders[oi];
    if (status < 0) {
        sim_fail(s, "order %llu: reply without a valid status", (unsigned long long)o->id);
        return;
    }
    if (o->max_status_seen != ST_PENDING && status != o->max_status_seen)
        sim_fail(s, "order %llu moved backwards or sideways: seen %s, now %s", (unsigned long long)o->id,
                 cell_status_name[o->max_status_seen], cell_status_name[status]);
    if (status != ST_PENDING) o->max_status_seen = (uint8_t)status;
    if (acked) {
        o->acked = true;
        o->acked_status = (uint8_t)status;
    }
}

static sim_req *req_find(sim *s, uint64_t req_id, int from)
{
    for (int i = 0; i < SIM_REQS_MAX; i++)
        if (s->reqs[i].used && s->reqs[i].req_id == req_id && s->reqs[i].target == from) return &s->reqs[i];
    return NULL;
}

void sim_client_on_reply(sim *s, int from, const d11_frame *f)
{
    s->stats.replies++;
    sim_req *r = req_find(s, f->hdr.req_id, from);
    if (!r) return; /* timed out already, or a reply to a reset link */
    r->used = false;
    d11_str code, body;
    if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) < 0) {
        sim_fail(s, "undecodable reply to request %llu", (unsigned long long)r->req_id);
        return;
    }
    uint32_t st = f->hdr.status;
    if (st >= 500 && st != 503 && st != 504) sim_fail(s, "status %u (%.*s)", st, (int)body.n, body.p);
    if (st == 400 || st == 422) sim_fail(s, "a valid request was refused %u: %.*s", st, (int)body.n, body.p);
    sim_order *o = r->order >= 0 ? &s->orders[r->order] : NULL;
    switch (r->kind) {
    case RQ_PRODUCT:
        if (st == 201 || (st == 409 && code.n == 6 && !memcmp(code.p, "exists", 6))) s->product_made[r->sku] = true;
        break;
    case RQ_CREATE: {
        if (st != 200 && st != 201) {
            if (r->diff_body && st != 409 && st != 503 && st != 504)
                sim_fail(s, "a different body for an acknowledged key got %u", st);
            if (r->diff_body && st == 409 && !(code.n == 20 && !memcmp(code.p, "idempotency_mismatch", 20)))
                sim_fail(s, "a different body for an acknowledged key got 409 %.*s", (int)code.n, code.p);
            break;
        }
        if (r->diff_body) {
            sim_fail(s, "key %s placed again with a different body (%u)", o->key, st);
            break;
        }
        uint64_t id;
        if (!json_u64_after(body.p, body.n, "\"order_id\":", &id)) {
            sim_fail(s, "create reply without order_id");
            break;
        }
        if (o->id && o->id != id)
            sim_fail(s, "key %s answered with order %llu and with order %llu", o->key, (unsigned long long)o->id,
                     (unsigned long long)id);
        if (!o->id && st == 201) s->stats.created++;
        o->id = id;
        saw_status(s, r->order, json_status(body.p, body.n), true);
        break;
    }
    case RQ_PAY:
    case RQ_CANCEL:
    case RQ_GET:
        if (st == 200) {
            int status = json_status(body.p, body.n);
            saw_status(s, r->order, status, true);
            if (r->kind == RQ_PAY && status != ST_PAID) sim_fail(s, "pay answered 200 with status %d", status);
            if (r->kind == RQ_CANCEL && status != ST_CANCELLED)
                sim_fail(s, "cancel answered 200 with status %d", status);
            if (r->kind == RQ_PAY) s->stats.paid++;
            if (r->kind == RQ_CANCEL) s->stats.cancelled++;
        } else if (st == 404 && o->acked) {
            sim_fail(s, "acknowledged order %llu is gone (404)", (unsigned long long)o->id);
        }
        break;
    case RQ_LIST:
    case RQ_RESTOCK:
    case RQ_VIEW: break;
    }
}

void sim_client_link_reset(sim *s, int target)
{
    for (int i = 0; i < SIM_REQS_MAX; i++)
        if (s->reqs[i].used && s->reqs[i].target == target) s->reqs[i].used = false; /* outcome unknown */
}

void sim_client_timeouts(sim *s)
{
    for (int i = 0; i < SIM_REQS_MAX; i++)
        if (s->reqs[i].used && s->now >= s->reqs[i].timeout_at) {
            s->reqs[i].used = false; /* the gateway answers 504: outcome unknown */
            s->stats.timeouts++;
        }
}

bool sim_client_idle(const sim *s)
{
    for (int i = 0; i < SIM_REQS_MAX; i++)
        if (s->reqs[i].used) return false;
    return true;
}

void sim_client_after_recovery(sim *s, int ci)
{
    const cell *c = s->cells[ci].c;
    for (int i = 0; i < s->norders; i++) {
        const sim_order *o = &s->orders[i];
        if (!o->acked || route(s, (uint64_t)o->user) != ci) continue;
        uint8_t status;
        bool committed;
        if (!cell_order_view(c, o->id, o->stress, &status, &committed)) {
            sim_fail(s, "acknowledged order %llu (key %s) lost by cell %d's recovery", (unsigned long long)o->id, o->key,
                     ci);
            return;
        }
        if (o->acked_status != ST_PENDING && status != o->acked_status)
            sim_fail(s, "order %llu was acknowledged %s but recovered %s", (unsigned long long)o->id,
                     cell_status_name[o->acked_status], cell_status_name[status]);
    }
}
