/*
 * chaos.c — live chaos experiments and the control fan-out (see chaos.h; the contract is
 * docs/reliability.md "Live chaos").
 *
 * Registry: D11_CHAOS_EXPERIMENTS_MAX records per gateway process, shared by its threads
 * under `reg.mu` (admin requests only, never the order path). It is process-wide state
 * like the fault table it drives (core/fault.h) and is not persisted: a restarted
 * gateway forgets its experiments, while the arms it made still expire by themselves in
 * every process. A record is "armed" until expires_at (wall clock), "expired" after, and
 * "destroyed" once DELETEd before that. The oldest record that is not armed makes room
 * for a new one; at most D11_CHAOS_ARMED_MAX are armed at once, and two armed experiments
 * never share a point in one process (409 experiment_conflict), so a DELETE never
 * disarms someone else's arm (each process disarms only the id that armed it).
 *
 * Fan-out (gw_ctl): one CONTROL request per part (center, cells) as probes
 * (D11_GW_PROBE_TIMEOUT_MS, not subject to gateway.upstream faults), counted in
 * t->nagg with the probes (D11_GW_AGG_MAX per thread); the last completion answers the
 * client, whether or not it is still there, and frees the gw_ctl.
 *
 * Restarts: a process that restarts comes back with nothing armed (arms live in memory),
 * and the gateway does NOT re-arm it: a drill ends where the process it hit restarts,
 * which also keeps an error experiment that makes a cell exit from crash-looping it.
 * GET /admin/chaos/{id} shows per process whether the arm is still live.
 * Thread: the connection's thread.
 */
#include "chaos.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bench/httpc.h"
#include "../core/fault.h"
#include "../core/limits.h"

_Static_assert(D11_CHAOS_DELAY_MS_MAX <= D11_FAULT_DELAY_MS_MAX, "a chaos delay is a fault delay");
_Static_assert((uint64_t)D11_CHAOS_TIMEOUT_S_MAX * 1000 <= UINT32_MAX, "timeout_ms fits the CONTROL field");

typedef struct gw_exp {
    bool       used, destroyed;
    uint64_t   id;
    char       target[16];
    gw_ctl_set set;
    int        point, action;
    uint32_t   ms, percent, timeout_s;
    int64_t    created_at, expires_at; /* wall ms */
} gw_exp;

static struct {
    pthread_mutex_t mu;
    gw_exp          v[D11_CHAOS_EXPERIMENTS_MAX];
    uint64_t        seq; /* creation order: the oldest record is evicted first */
    uint64_t        order[D11_CHAOS_EXPERIMENTS_MAX];
} reg = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Which process runs which point, and the actions it supports. */
enum { PK_GATEWAY, PK_CENTER, PK_CELL };
static const struct {
    int      kind;
    unsigned actions; /* bit per D11_FA_* */
} point_rule[D11_FP_COUNT] = {
    [D11_FP_CELL_RECV] = {PK_CELL, 1u << D11_FA_DELAY | 1u << D11_FA_DROP},
    [D11_FP_CELL_REPLY] = {PK_CELL, 1u << D11_FA_DELAY | 1u << D11_FA_DROP},
    [D11_FP_STORE_COMMIT] = {PK_CELL, 1u << D11_FA_DELAY | 1u << D11_FA_FAIL},
    [D11_FP_CENTER_GRANT] = {PK_CENTER, 1u << D11_FA_DELAY | 1u << D11_FA_DROP},
    [D11_FP_GATEWAY_UPSTREAM] = {PK_GATEWAY, 1u << D11_FA_DELAY | 1u << D11_FA_FAIL | 1u << D11_FA_DROP},
    [D11_FP_RELAY_PUBLISH] = {PK_GATEWAY, 1u << D11_FA_DELAY | 1u << D11_FA_FAIL},
};

static const char *exp_state(const gw_exp *e, int64_t now)
{
    if (e->destroyed) return "destroyed";
    return now >= e->expires_at ? "expired" : "armed";
}

static bool sets_overlap(const gw_ctl_set *a, const gw_ctl_set *b)
{
    return (a->gateway && b->gateway) || (a->center && b->center) || (a->cells & b->cells);
}

int gw_ctl_target_parse(const char *s, size_t n, unsigned ncells, bool allow_all, gw_ctl_set *out)
{
    memset(out, 0, sizeof *out);
    uint64_t all_cells = ncells >= 64 ? UINT64_MAX : (1ULL << ncells) - 1;
    if (n == 7 && !memcmp(s, "gateway", 7)) out->gateway = true;
    else if (n == 6 && !memcmp(s, "center", 6)) out->center = true;
    else if (n == 5 && !memcmp(s, "cells", 5)) out->cells = all_cells;
    else if (allow_all && n == 3 && !memcmp(s, "all", 3)) {
        out->gateway = out->center = true;
        out->cells = all_cells;
    } else if (n > 5 && !memcmp(s, "cell:", 5)) {
        uint64_t id;
        if (d11_parse_u64(s + 5, n - 5, D11_CELLS_MAX - 1, &id) < 0 || id >= ncells) return -1;
        out->cells = 1ULL << id;
    } else {
        return -1;
    }
    return 0;
}

/* ---- the fan-out ---- */

enum { K_LEVEL, K_CREATE, K_DELETE, K_GET };

typedef struct gw_ctl_part {
    uint8_t target;
    int8_t  ok; /* -1 waiting, 0 failed or not asked, 1 answered 200 */
    d11_buf txt;
} gw_ctl_part;

typedef struct gw_ctl {
    int         kind;
    gw_slot_ref ref;
    int         outstanding, nparts;
    uint64_t    exp_id;
    bool        put;     /* K_LEVEL: a PUT, on `set` */
    gw_ctl_set  set;
    gw_ctl_part part[GW_UP_N];
} gw_ctl;

static void ctl_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr);
static void ctl_finish(gw_thread *t, gw_ctl *a);

static void ignore_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)t, (void)p, (void)f, (void)uperr;
}

/* Queue one CONTROL to target; a = NULL: fire and forget. False when it cannot be sent. */
static bool ctl_send(gw_thread *t, gw_ctl *a, int k, int target, const d11_msg_control *m)
{
    if (!gw_up_writable(t, target)) return false;
    gw_pend *p = a ? gw_pend_alloc(t, GW_PC_PROBE, ctl_done, a, (uint64_t)k)
                   : gw_pend_alloc(t, GW_PC_PROBE, ignore_done, NULL, 0);
    if (!p) return false;
    d11_buf_reset(&t->tmp);
    d11_msg_control_enc(&t->tmp, m);
    gw_up_send(t, target, p, D11_MSG_CONTROL, 0, NULL, NULL, 0, D11_GW_PROBE_TIMEOUT_MS);
    if (a) a->outstanding++;
    return true;
}

static gw_ctl *ctl_new(gw_thread *t, gw_req *rq, int kind)
{
    if (t->nagg >= D11_GW_AGG_MAX) {
        gw_fail(t, rq, 503, "unavailable", "too many admin fan-outs in flight");
        return NULL;
    }
    gw_ctl *a = calloc(1, sizeof *a);
    if (!a) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return NULL;
    }
    t->nagg++;
    bool live;
    a->kind = kind;
    a->ref = gw_slot_ref_of(rq->c, rq->si);
    a->nparts = 1 + (int)gw_routing(t, &live)->ncells;
    for (int k = 0; k < a->nparts; k++) {
        a->part[k].target = (uint8_t)(k == 0 ? GW_UP_CENTER : gw_up_cell(k - 1));
        a->part[k].ok = 0;
    }
    return a;
}

static bool part_in(const gw_ctl_set *s, int k) { return k == 0 ? s->center : (s->cells >> (k - 1)) & 1; }

/* Send m to every part in s (others: op 0 when status_others, else nothing). */
static void ctl_fan(gw_thread *t, gw_ctl *a, const gw_ctl_set *s, const d11_msg_control *m, bool status_others)
{
    d11_msg_control st = {.op = 0};
    for (int k = 0; k < a->nparts; k++) {
        bool in = part_in(s, k);
        if (!in && !status_others) continue;
        a->part[k].ok = -1;
        if (!ctl_send(t, a, k, a->part[k].target, in ? m : &st)) a->part[k].ok = 0;
    }
    if (a->outstanding == 0) ctl_finish(t, a);
}

static void ctl_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)uperr;
    gw_ctl *a = p->ctx;
    int k = (int)p->arg;
    D11_ASSERT(k < a->nparts && a->outstanding > 0);
    gw_ctl_part *pt = &a->part[k];
    d11_str code, body;
    pt->ok = 0;
    if (f && d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
        pt->ok = f->hdr.status == 200;
        d11_buf_reset(&pt->txt);
        d11_buf_append(&pt->txt, body.p, body.n);
        d11_buf_append(&pt->txt, "", 1); /* a C string for d11_json_find_str */
        pt->txt.len--;
    }
    if (--a->outstanding == 0) ctl_finish(t, a);
}

static void part_name(int k, char *out, size_t cap)
{
    if (k == 0) snprintf(out, cap, "center");
    else snprintf(out, cap, "cell-%d", k - 1);
}

static void render_exp(d11_buf *b, const gw_exp *e, int64_t now)
{
    d11_buf_printf(b, "{\"id\":\"%016llx\",\"target\":\"%s\",\"point\":\"%s\",\"action\":\"%s\","
                   "\"params\":{\"ms\":%u,\"percent\":%u},\"timeout_s\":%u,\"state\":\"%s\",\"created_at\":%lld,"
                   "\"expires_at\":%lld}",
                   (unsigned long long)e->id, e->target, d11_fault_point_name(e->point),
                   d11_fault_action_name(e->action), e->ms, e->percent, e->timeout_s, exp_state(e, now),
                   (long long)e->created_at, (long long)e->expires_at);
}

/* A copy of the record with this id, or false. */
static bool reg_find(uint64_t id, gw_exp *out)
{
    bool found = false;
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < D11_CHAOS_EXPERIMENTS_MAX; i++)
        if (reg.v[i].used && reg.v[i].id == id) {
            *out = reg.v[i];
            found = true;
        }
    pthread_mutex_unlock(&reg.mu);
    return found;
}

/* Mark id destroyed; returns whether it was armed until now. */
static bool reg_destroy(uint64_t id, int64_t now)
{
    bool was = false;
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < D11_CHAOS_EXPERIMENTS_MAX; i++)
        if (reg.v[i].used && reg.v[i].id == id && !reg.v[i].destroyed && now < reg.v[i].expires_at) {
            reg.v[i].destroyed = true;
            was = true;
        }
    pthread_mutex_unlock(&reg.mu);
    return was;
}

static void ctl_finish(gw_thread *t, gw_ctl *a)
{
    int si;
    gw_conn *c = gw_slot_deref(t, a->ref, &si);
    int64_t now = d11_wall_ms();
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    gw_exp e;
    bool have = a->kind != K_LEVEL && reg_find(a->exp_id, &e);
    char nm[24], lv[16];
    if (a->kind == K_LEVEL) {
        d11_buf_printf(b, "{\"level\":\"%s\",\"processes\":{\"gateway\":\"%s\"", d11_log_level_name(d11_log_level()),
                       d11_log_level_name(d11_log_level()));
        for (int k = 0; k < a->nparts; k++) {
            part_name(k, nm, sizeof nm);
            const gw_ctl_part *pt = &a->part[k];
            if (pt->ok == 1 && d11_json_find_str(pt->txt.data, pt->txt.len, "level", lv, sizeof lv) > 0)
                d11_buf_printf(b, ",\"%s\":\"%s\"", nm, lv);
            else
                d11_buf_printf(b, ",\"%s\":null", nm);
        }
        d11_buf_puts(b, "}}");
        char failed[400] = "";
        size_t fl = 0;
        for (int k = 0; a->put && k < a->nparts; k++)
            if (part_in(&a->set, k) && a->part[k].ok != 1) {
                part_name(k, nm, sizeof nm);
                int w = snprintf(failed + fl, sizeof failed - fl, "%s%s", fl ? ", " : "", nm);
                if (w > 0 && (size_t)w < sizeof failed - fl) fl += (size_t)w;
            }
        if (c && fl) {
            char msg[480];
            snprintf(msg, sizeof msg, "level not set on %s (did not answer); set on the others; retry", failed);
            gw_respond_error(t, c, si, 503, "unavailable", msg, "Retry-After: 1\r\n");
        } else if (c) {
            gw_respond_json(t, c, si, 200, b->data, b->len);
        }
    } else if (a->kind == K_CREATE && have) {
        char failed[400] = "";
        size_t fl = 0;
        for (int k = 0; k < a->nparts; k++)
            if (part_in(&e.set, k) && a->part[k].ok != 1) {
                part_name(k, nm, sizeof nm);
                int w = snprintf(failed + fl, sizeof failed - fl, "%s%s", fl ? ", " : "", nm);
                if (w > 0 && (size_t)w < sizeof failed - fl) fl += (size_t)w;
            }
        if (fl) {
            /* all or nothing: take back what was armed, the experiment never existed */
            reg_destroy(e.id, now);
            d11_msg_control m = {.op = 3, .point = (uint8_t)e.point, .id = e.id};
            for (int k = 0; k < a->nparts; k++)
                if (part_in(&e.set, k) && a->part[k].ok == 1) (void)ctl_send(t, NULL, k, a->part[k].target, &m);
            d11_warn("chaos experiment %016llx not armed: %s did not accept it", (unsigned long long)e.id, failed);
            if (c) {
                char msg[480];
                snprintf(msg, sizeof msg, "not armed (nothing left armed): %s did not answer", failed);
                gw_respond_error(t, c, si, 503, "unavailable", msg, "Retry-After: 1\r\n");
            }
        } else {
            d11_buf_printf(b, "{\"id\":\"%016llx\",\"expires_at\":%lld}", (unsigned long long)e.id,
                           (long long)e.expires_at);
            if (c) gw_respond_json(t, c, si, 201, b->data, b->len);
        }
    } else if (have) { /* K_GET, K_DELETE: the record, then what each process says now */
        d11_buf_puts(b, "{\"experiment\":");
        render_exp(b, &e, now);
        d11_buf_puts(b, ",\"live\":{");
        bool first = true;
        char idhex[24];
        snprintf(idhex, sizeof idhex, "%016llx", (unsigned long long)e.id);
        if (e.set.gateway) {
            d11_buf fb;
            d11_buf_init(&fb, 256);
            d11_fault_render(&fb);
            d11_buf_append(&fb, "", 1);
            d11_buf_printf(b, "\"gateway\":%s", strstr(fb.data, idhex) ? "true" : "false");
            d11_buf_free(&fb);
            first = false;
        }
        for (int k = 0; k < a->nparts; k++) {
            if (!part_in(&e.set, k)) continue;
            part_name(k, nm, sizeof nm);
            const gw_ctl_part *pt = &a->part[k];
            d11_buf_printf(b, "%s\"%s\":%s", first ? "" : ",", nm,
                           pt->ok != 1 ? "null" : strstr(pt->txt.data, idhex) ? "true" : "false");
            first = false;
        }
        d11_buf_puts(b, "}}");
        if (c) gw_respond_json(t, c, si, 200, b->data, b->len);
    } else if (c) {
        gw_respond_error(t, c, si, 404, "not_found", "no such experiment", "");
    }
    for (int k = 0; k < a->nparts; k++) d11_buf_free(&a->part[k].txt);
    free(a);
    t->nagg--;
}

/* ---- log level ---- */

void gw_ctl_log_level(gw_thread *t, gw_req *rq, int level, const gw_ctl_set *set)
{
    if (level >= 0 && set->gateway) d11_log_set_level(level);
    gw_ctl *a = ctl_new(t, rq, K_LEVEL);
    if (!a) return;
    a->put = level >= 0;
    a->set = *set;
    d11_msg_control m = {.op = level >= 0 ? 1 : 0, .level = (uint8_t)(level >= 0 ? level : 0)};
    gw_ctl_set none = {0};
    ctl_fan(t, a, level >= 0 ? set : &none, &m, true);
}

/* ---- POST /admin/chaos ---- */

/* A 400 with code and message; returns -1. */
#define BAD(code, ...) (gw_fail(t, rq, 400, code, __VA_ARGS__), -1)

static int parse_create(gw_thread *t, gw_req *rq, gw_exp *e)
{
    size_t blen;
    const char *body = gw_body(rq, &blen);
    d11_json *j = &t->json;
    if (d11_json_parse(j, body, blen) < 0) return BAD("bad_json", "malformed JSON: %s", j->err);
    static const char *const keys[] = {"target", "point", "action", "params", "timeout_s"};
    for (int i = 0, tk = 1; i < j->tok[0].size; i++) {
        bool known = false;
        for (size_t q = 0; q < sizeof keys / sizeof keys[0]; q++)
            known |= d11_json_str_eq(j, tk, keys[q], strlen(keys[q]));
        if (!known) return BAD("unknown_field", "unknown field (allowed: target, point, action, params, timeout_s)");
        tk = j->tok[tk + 1].next;
    }
    char s[32];
    size_t n;
    bool live;
    unsigned ncells = gw_routing(t, &live)->ncells;
    if (d11_json_str(j, d11_json_find(j, 0, "target"), s, sizeof s, &n) < 0 ||
        gw_ctl_target_parse(s, n, ncells, false, &e->set) < 0)
        return BAD("bad_target", "target: one of \"gateway\", \"center\", \"cells\", \"cell:N\" (N < %u)", ncells);
    memcpy(e->target, s, n);
    e->target[n] = 0;
    if (d11_json_str(j, d11_json_find(j, 0, "point"), s, sizeof s, &n) < 0 || (e->point = d11_fault_point_parse(s, n)) < 0)
        return BAD("bad_point", "point: one of store.commit, cell.recv, cell.reply, center.grant, gateway.upstream, "
                                "relay.publish");
    int kind = point_rule[e->point].kind;
    bool fits = kind == PK_GATEWAY ? e->set.gateway && !e->set.center && !e->set.cells
              : kind == PK_CENTER  ? e->set.center && !e->set.gateway && !e->set.cells
                                   : e->set.cells && !e->set.gateway && !e->set.center;
    if (!fits)
        return BAD("bad_target", "point %s runs in %s, not in target %s", d11_fault_point_name(e->point),
                   kind == PK_GATEWAY ? "the gateway" : kind == PK_CENTER ? "the center" : "the cells", e->target);
    e->action = -1;
    if (d11_json_str(j, d11_json_find(j, 0, "action"), s, sizeof s, &n) == 0) {
        if (n == 5 && !memcmp(s, "delay", 5)) e->action = D11_FA_DELAY;
        else if (n == 5 && !memcmp(s, "error", 5)) e->action = D11_FA_FAIL;
        else if (n == 4 && !memcmp(s, "drop", 4)) e->action = D11_FA_DROP;
    }
    if (e->action < 0 || !(point_rule[e->point].actions & (1u << e->action))) {
        char ok[48] = "";
        size_t ol = 0;
        static const int acts[] = {D11_FA_DELAY, D11_FA_FAIL, D11_FA_DROP};
        for (int i = 0; i < 3; i++)
            if (point_rule[e->point].actions & (1u << acts[i]))
                ol += (size_t)snprintf(ok + ol, sizeof ok - ol, "%s%s", ol ? ", " : "", d11_fault_action_name(acts[i]));
        return BAD("bad_action", "action at %s: one of %s", d11_fault_point_name(e->point), ok);
    }
    int prm = d11_json_find(j, 0, "params");
    uint64_t v;
    e->ms = 0;
    e->percent = 100;
    if (prm >= 0) {
        if (j->tok[prm].type != D11_JT_OBJECT) return BAD("bad_params", "params: an object {\"ms\":N,\"percent\":P}");
        for (int i = 0, tk = prm + 1; i < j->tok[prm].size; i++) {
            if (!d11_json_str_eq(j, tk, "ms", 2) && !d11_json_str_eq(j, tk, "percent", 7))
                return BAD("bad_params", "params: only ms and percent");
            tk = j->tok[tk + 1].next;
        }
        int ms = d11_json_find(j, prm, "ms"), pc = d11_json_find(j, prm, "percent");
        if (ms >= 0) {
            if (d11_json_u64(j, ms, 1, D11_CHAOS_DELAY_MS_MAX, &v) < 0)
                return BAD("bad_params", "params.ms: an integer 1..%d", D11_CHAOS_DELAY_MS_MAX);
            e->ms = (uint32_t)v;
        }
        if (pc >= 0) {
            if (d11_json_u64(j, pc, 1, 100, &v) < 0) return BAD("bad_params", "params.percent: an integer 1..100");
            e->percent = (uint32_t)v;
        }
    }
    if (e->action == D11_FA_DELAY && e->ms == 0)
        return BAD("bad_params", "a delay needs params.ms (1..%d)", D11_CHAOS_DELAY_MS_MAX);
    if (e->action != D11_FA_DELAY && e->ms) return BAD("bad_params", "params.ms is for a delay only");
    if (d11_json_u64(j, d11_json_find(j, 0, "timeout_s"), 1, D11_CHAOS_TIMEOUT_S_MAX, &v) < 0)
        return BAD("bad_timeout", "timeout_s: required, an integer 1..%d", D11_CHAOS_TIMEOUT_S_MAX);
    e->timeout_s = (uint32_t)v;
    return 0;
}

/* Add e to the registry (409 and -1 on a conflict or when full). */
static int reg_add(gw_thread *t, gw_req *rq, gw_exp *e)
{
    int64_t now = e->created_at;
    int armed = 0, slot = -1, conflict = -1;
    pthread_mutex_lock(&reg.mu);
    for (int i = 0; i < D11_CHAOS_EXPERIMENTS_MAX; i++) {
        gw_exp *x = &reg.v[i];
        if (!x->used) {
            if (slot < 0 || reg.v[slot].used) slot = i;
            continue;
        }
        if (!x->destroyed && now < x->expires_at) {
            armed++;
            if (x->point == e->point && sets_overlap(&x->set, &e->set)) conflict = i;
        } else if (slot < 0 || (reg.v[slot].used && reg.order[i] < reg.order[slot])) {
            slot = i; /* the oldest record that is not armed */
        }
    }
    char other[24] = "";
    if (conflict >= 0) snprintf(other, sizeof other, "%016llx", (unsigned long long)reg.v[conflict].id);
    if (conflict < 0 && armed < D11_CHAOS_ARMED_MAX && slot >= 0) {
        reg.v[slot] = *e;
        reg.v[slot].used = true;
        reg.order[slot] = ++reg.seq;
    }
    pthread_mutex_unlock(&reg.mu);
    if (conflict >= 0) {
        gw_fail(t, rq, 409, "experiment_conflict", "experiment %s already arms %s in that target until it ends", other,
                d11_fault_point_name(e->point));
        return -1;
    }
    if (armed >= D11_CHAOS_ARMED_MAX || slot < 0) {
        gw_fail(t, rq, 409, "too_many_experiments", "at most %d experiments armed at once (D11_CHAOS_ARMED_MAX)",
                D11_CHAOS_ARMED_MAX);
        return -1;
    }
    return 0;
}

void gw_h_chaos_create(gw_thread *t, gw_req *rq)
{
    gw_exp e;
    memset(&e, 0, sizeof e);
    if (parse_create(t, rq, &e) < 0) return;
    /* every remote target must be reachable now: all or nothing */
    bool live;
    unsigned ncells = gw_routing(t, &live)->ncells;
    for (unsigned k = 0; k <= ncells; k++)
        if (part_in(&e.set, (int)k) && !gw_up_writable(t, k == 0 ? GW_UP_CENTER : gw_up_cell((int)k - 1))) {
            gw_fail(t, rq, 503, "unavailable", "%s is unreachable; nothing armed",
                    gw_up_name(t, k == 0 ? GW_UP_CENTER : gw_up_cell((int)k - 1)));
            return;
        }
    do e.id = gw_rand64(t);
    while (e.id == 0);
    e.created_at = d11_wall_ms();
    e.expires_at = e.created_at + (int64_t)e.timeout_s * 1000;
    if (reg_add(t, rq, &e) < 0) return;
    const char *who = rq->c->slots[rq->si].token;
    char kv[300];
    snprintf(kv, sizeof kv, "\"event\":\"chaos_create\",\"experiment\":\"%016llx\",\"token\":\"%s\",\"target\":\"%s\","
             "\"point\":\"%s\",\"action\":\"%s\",\"ms\":%u,\"percent\":%u,\"timeout_s\":%u",
             (unsigned long long)e.id, who, e.target, d11_fault_point_name(e.point), d11_fault_action_name(e.action),
             e.ms, e.percent, e.timeout_s);
    d11_log_kv(D11_LOG_WARN, kv, "chaos experiment %016llx created by %s", (unsigned long long)e.id, who[0] ? who : "?");
    if (e.set.gateway) {
        int rc = d11_fault_arm(e.point, e.action, e.ms, e.percent, (int64_t)e.timeout_s * 1000, e.id);
        D11_ASSERT(rc == 0); /* parse_create checked everything d11_fault_arm checks */
        char body[96];
        int n = snprintf(body, sizeof body, "{\"id\":\"%016llx\",\"expires_at\":%lld}", (unsigned long long)e.id,
                         (long long)e.expires_at);
        gw_respond_json(t, rq->c, rq->si, 201, body, (size_t)n);
        return;
    }
    gw_ctl *a = ctl_new(t, rq, K_CREATE);
    if (!a) {
        reg_destroy(e.id, e.created_at);
        return;
    }
    a->exp_id = e.id;
    d11_msg_control m = {.op = 2, .point = (uint8_t)e.point, .action = (uint8_t)e.action, .delay_ms = e.ms,
                         .percent = (uint8_t)e.percent, .timeout_ms = e.timeout_s * 1000, .id = e.id};
    ctl_fan(t, a, &e.set, &m, false);
}

/* ---- GET / DELETE ---- */

void gw_h_chaos_list(gw_thread *t, gw_req *rq)
{
    int64_t now = d11_wall_ms();
    gw_exp v[D11_CHAOS_EXPERIMENTS_MAX];
    uint64_t ord[D11_CHAOS_EXPERIMENTS_MAX];
    pthread_mutex_lock(&reg.mu);
    memcpy(v, reg.v, sizeof v);
    memcpy(ord, reg.order, sizeof ord);
    pthread_mutex_unlock(&reg.mu);
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"experiments\":[");
    bool first = true;
    uint64_t last = 0;
    for (;;) { /* creation order: the smallest order above the last one printed */
        int next = -1;
        for (int i = 0; i < D11_CHAOS_EXPERIMENTS_MAX; i++)
            if (v[i].used && ord[i] > last && (next < 0 || ord[i] < ord[next])) next = i;
        if (next < 0) break;
        last = ord[next];
        if (!first) d11_buf_puts(b, ",");
        render_exp(b, &v[next], now);
        first = false;
    }
    d11_buf_puts(b, "]}");
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

/* The experiment a path names, or false after answering 404. */
static bool exp_of_path(gw_thread *t, gw_req *rq, gw_exp *e)
{
    uint64_t id = 0;
    bool ok = rq->param.n == 16;
    for (size_t i = 0; ok && i < 16; i++) {
        char ch = rq->param.p[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0) ok = false;
        id = id << 4 | (uint64_t)(d < 0 ? 0 : d);
    }
    if (!ok || !reg_find(id, e)) {
        gw_fail(t, rq, 404, "not_found", "no such experiment");
        return false;
    }
    return true;
}

void gw_h_chaos_get(gw_thread *t, gw_req *rq)
{
    gw_exp e;
    if (!exp_of_path(t, rq, &e)) return;
    gw_ctl *a = ctl_new(t, rq, K_GET);
    if (!a) return;
    a->exp_id = e.id;
    d11_msg_control st = {.op = 0};
    ctl_fan(t, a, &e.set, &st, false);
}

void gw_h_chaos_delete(gw_thread *t, gw_req *rq)
{
    gw_exp e;
    if (!exp_of_path(t, rq, &e)) return;
    bool was_armed = reg_destroy(e.id, d11_wall_ms());
    if (was_armed) {
        const char *who = rq->c->slots[rq->si].token;
        char kv[160];
        snprintf(kv, sizeof kv, "\"event\":\"chaos_destroy\",\"experiment\":\"%016llx\",\"token\":\"%s\"",
                 (unsigned long long)e.id, who);
        d11_log_kv(D11_LOG_WARN, kv, "chaos experiment %016llx destroyed by %s", (unsigned long long)e.id,
                   who[0] ? who : "?");
    }
    if (e.set.gateway) (void)d11_fault_disarm(e.point, e.id); /* -ENOENT: expired already */
    gw_ctl *a = ctl_new(t, rq, K_DELETE);
    if (!a) return;
    a->exp_id = e.id;
    /* disarm again on every DELETE (harmless: only this id's arm is removed), so a
     * process that missed the first one (unreachable then) is disarmed by a retry */
    d11_msg_control m = {.op = 3, .point = (uint8_t)e.point, .id = e.id};
    ctl_fan(t, a, &e.set, &m, false);
}
