/*
 * risk.c — the velocity table and the risk hook of POST /v1/orders (see risk.h).
 *
 * Velocity table: one per gateway process, shared by its threads, so a user's count is
 * the same whichever thread (connection) the order arrives on. Set-associative: a key's
 * salted 64-bit hash picks a set of D11_RISK_WAYS entries; a set is guarded by one of
 * D11_RISK_STRIPES mutexes (held for a few dozen ns: find, slide, add). A new key takes a
 * free entry of its set or evicts the set's least recently seen one (counted): memory is
 * fixed at start (--risk-keys), and under more distinct keys than entries the counts of
 * cold keys restart from zero — a limit can then only be looser, never stricter.
 * Per window an entry keeps D11_RISK_SUBBUCKETS counters of window/8 each: the count of
 * a window is the sum of the sub-buckets of the last `window` seconds (to within one
 * sub-bucket: the window slides in steps of window/8). A window whose length changed
 * since the entry was counted starts again from zero.
 * Nothing is kept in clear: an entry holds only the hash (the salt is random per
 * process), a count per sub-bucket and the time it was last seen.
 *
 * Threads: d11_risk_table_* from any thread; gw_risk_check on the connection's thread.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../core/json.h"
#include "gw.h"
#include "request.h"
#include "risk.h"

int d11_risk_table_init(d11_risk_table *t, uint32_t keys)
{
    memset(t, 0, sizeof *t);
    if (keys < D11_RISK_WAYS || keys > D11_RISK_KEYS_MAX) return -EINVAL;
    uint32_t sets = 1;
    while ((uint64_t)sets * D11_RISK_WAYS < keys) sets <<= 1;
    t->e = calloc((size_t)sets * D11_RISK_WAYS, sizeof *t->e);
    if (!t->e) return -ENOMEM;
    t->nsets = sets;
    for (int i = 0; i < D11_RISK_STRIPES; i++) pthread_mutex_init(&t->mu[i], NULL);
    return 0;
}

void d11_risk_table_release(d11_risk_table *t)
{
    if (!t->e) return;
    for (int i = 0; i < D11_RISK_STRIPES; i++) pthread_mutex_destroy(&t->mu[i]);
    free(t->e);
    t->e = NULL;
}

uint64_t d11_risk_key(uint64_t salt, int dim, bool stress, const void *v, size_t n)
{
    D11_ASSERT(dim >= 0 && dim < D11_RISK_DIMS);
    uint64_t h = d11_hash64(v, n, salt ^ ((uint64_t)(dim + 1) << 56) ^ (stress ? 0x5354524553530000ULL : 0));
    h ^= h >> 33; /* finalize (FNV alone mixes the last bytes poorly) */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return h ? h : 1;
}

/* Slide window w to sub-bucket idx (length len_ms), count one, return the window's sum. */
static uint32_t win_hit(d11_risk_win *w, uint32_t len_ms, uint64_t idx)
{
    if (w->len_ms != len_ms) { /* new entry, or the window's length changed */
        memset(w, 0, sizeof *w);
        w->len_ms = len_ms;
        w->head = idx;
    }
    if (idx >= w->head + D11_RISK_SUBBUCKETS) {
        memset(w->n, 0, sizeof w->n);
        w->head = idx;
    } else {
        for (; w->head < idx;) w->n[++w->head % D11_RISK_SUBBUCKETS] = 0;
    }
    /* idx may be a little behind head (another thread's later clock read): count it in
     * its own sub-bucket while that one is still in the window */
    if (idx + D11_RISK_SUBBUCKETS > w->head && w->n[idx % D11_RISK_SUBBUCKETS] < UINT32_MAX)
        w->n[idx % D11_RISK_SUBBUCKETS]++;
    uint64_t sum = 0;
    for (int i = 0; i < D11_RISK_SUBBUCKETS; i++) sum += w->n[i];
    return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

void d11_risk_table_hit(d11_risk_table *t, uint64_t tag, const uint32_t *windows_s, uint32_t nwin, int64_t now_ms,
                        uint32_t *out)
{
    D11_ASSERT(tag != 0 && nwin <= D11_RISK_WINDOWS_MAX && now_ms >= 0);
    uint32_t set = (uint32_t)(tag >> 7) & (t->nsets - 1);
    d11_risk_entry *s = &t->e[(size_t)set * D11_RISK_WAYS];
    pthread_mutex_t *mu = &t->mu[set % D11_RISK_STRIPES];
    pthread_mutex_lock(mu);
    d11_risk_entry *e = NULL, *victim = &s[0];
    for (int i = 0; i < D11_RISK_WAYS && !e; i++) {
        if (s[i].tag == tag) e = &s[i];
        else if (victim->tag && (!s[i].tag || s[i].seen_ms < victim->seen_ms)) victim = &s[i];
    }
    if (!e) {
        if (victim->tag) atomic_fetch_add_explicit(&t->evicted, 1, memory_order_relaxed);
        else atomic_fetch_add_explicit(&t->keys, 1, memory_order_relaxed);
        memset(victim, 0, sizeof *victim);
        victim->tag = tag;
        e = victim;
    }
    if (now_ms > e->seen_ms) e->seen_ms = now_ms;
    for (uint32_t w = 0; w < nwin; w++) {
        D11_ASSERT(windows_s[w] >= 1 && windows_s[w] <= D11_RISK_WINDOW_S_MAX);
        uint32_t len_ms = windows_s[w] * 1000u / D11_RISK_SUBBUCKETS;
        out[w] = win_hit(&e->w[w], len_ms, (uint64_t)now_ms / len_ms);
    }
    pthread_mutex_unlock(mu);
}

int gw_risk_init(gw_risk *r, const char *model_path, int64_t keys, int64_t log_size, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    d11_random_bytes(&r->salt, sizeof r->salt);
    if (d11_risk_table_init(&r->table, (uint32_t)keys) < 0) {
        snprintf(err, errlen, "--risk-keys %lld: cannot allocate the velocity table", (long long)keys);
        return -1;
    }
    if (d11_risk_log_init(&r->log, (uint32_t)log_size) < 0) {
        snprintf(err, errlen, "--risk-log-size %lld: cannot allocate the decision log", (long long)log_size);
        d11_risk_table_release(&r->table);
        return -1;
    }
    if (!model_path || !model_path[0]) return 0;
    char *text = NULL;
    size_t len = 0;
    int rc = d11_read_file(model_path, &text, &len);
    if (rc) {
        snprintf(err, errlen, "--risk-model %s: %s", model_path, d11_strerror(rc));
        gw_risk_release(r);
        return -1;
    }
    d11_json *j = malloc(sizeof *j);
    char why[200] = "out of memory";
    rc = j ? d11_risk_model_parse(j, text, len, &r->file_model, why, sizeof why) : -ENOMEM;
    free(j);
    free(text);
    if (rc) {
        snprintf(err, errlen, "--risk-model %s: %s", model_path, why);
        gw_risk_release(r);
        return -1;
    }
    r->has_file_model = true;
    return 0;
}

void gw_risk_release(gw_risk *r)
{
    d11_risk_table_release(&r->table);
    d11_risk_log_release(&r->log);
}

static int stronger(int a, int b) { return a > b ? a : b; }

bool gw_risk_check(struct gw_thread *t, struct gw_req *rq, const struct d11_msg_order_create *m)
{
    gw_risk *R = &t->gw->risk;
    const d11_risk_rules *rr = &t->rules.risk;
    const d11_risk_model *file = R->has_file_model ? &R->file_model : NULL;
    if (!R->table.e || !d11_risk_active(rr, file)) return true;
    int64_t t0 = d11_mono_ns();
    bool stress = (rq->flags & D11_WF_STRESS) != 0;
    d11_risk_decision d;
    d11_risk_features *f = &d.f;
    memset(f, 0, sizeof *f);
    const uint32_t *wins;
    f->nwin = d11_risk_windows(rr, &wins);
    memcpy(f->windows_s, wins, f->nwin * sizeof wins[0]);
    for (uint32_t k = 0; k < m->nitems; k++) f->quantity += (uint32_t)m->items[k].qty;
    f->items = m->nitems;
    /* the three keys: user id, client IP, device id (X-Device-Id) */
    const d11_hval *dev = &rq->http->device_id;
    const char *ip = rq->c->peer;
    const void *kv[D11_RISK_DIMS] = {&m->user_id, ip, dev->v};
    size_t kn[D11_RISK_DIMS] = {sizeof m->user_id, strlen(ip), dev->len};
    f->has[D11_RISK_USER] = true;
    f->has[D11_RISK_IP] = kn[D11_RISK_IP] > 0;
    f->has[D11_RISK_DEVICE] = dev->present && !dev->over && dev->len > 0;
    int64_t now_ms = t0 / 1000000;
    for (int dim = 0; dim < D11_RISK_DIMS; dim++)
        if (f->has[dim])
            d11_risk_table_hit(&R->table, d11_risk_key(R->salt, dim, stress, kv[dim], kn[dim]), f->windows_s, f->nwin,
                               now_ms, f->count[dim]);
    /* velocity rules: the strongest action, and the first rule that gave it */
    d.rule_action = D11_RISK_ALLOW;
    d.rule[0] = 0;
    for (uint32_t i = 0; i < rr->nvel; i++) {
        uint32_t w = 0;
        while (w < f->nwin && f->windows_s[w] != rr->vel[i].window_s) w++;
        D11_ASSERT(w < f->nwin); /* d11__risk_validate */
        if (f->count[rr->vel[i].dim][w] > rr->vel[i].max && rr->vel[i].action > d.rule_action) {
            d.rule_action = rr->vel[i].action;
            memcpy(d.rule, rr->vel[i].name, sizeof d.rule);
        }
    }
    /* model A (the rules' or the file's), enforced; model B on its share, scored only */
    const d11_risk_model *ma = rr->has_model ? &rr->model : file;
    d.has_a = ma != NULL;
    d.score_a = d.has_a ? d11_risk_score(ma, f) : 0;
    d.action_a = d.has_a ? (uint8_t)d11_risk_model_action(ma, d.score_a) : D11_RISK_ALLOW;
    d.has_b = rr->has_model_b && d11_risk_ab_in(m->user_id, rr->model_b.percent_bp);
    d.score_b = d.has_b ? d11_risk_score(&rr->model_b, f) : 0;
    d.action_b = d.has_b ? (uint8_t)d11_risk_model_action(&rr->model_b, d.score_b) : D11_RISK_ALLOW;
    d.action = (uint8_t)stronger(d.rule_action, d.action_a);
    d.enforced = rr->mode == D11_RISK_ENFORCE;
    d.stress = stress;
    atomic_fetch_add_explicit(&R->eval_ns, (uint64_t)(d11_mono_ns() - t0), memory_order_relaxed);
    atomic_fetch_add_explicit(&R->evals, 1, memory_order_relaxed);
    /* counters: real traffic by action and mode; stress apart (excluded from real figures) */
    if (stress) atomic_fetch_add_explicit(&R->stress[d.action], 1, memory_order_relaxed);
    else atomic_fetch_add_explicit(&R->decisions[d.enforced ? 0 : 1][d.action], 1, memory_order_relaxed);
    if (d.has_a) atomic_fetch_add_explicit(&R->model[GW_RISK_MODEL_A][d.action_a], 1, memory_order_relaxed);
    if (d.has_b) atomic_fetch_add_explicit(&R->model[GW_RISK_MODEL_B][d.action_b], 1, memory_order_relaxed);
    /* the decision log: every non-allow verdict (decision or model B), a sample of the rest */
    bool log = d.action != D11_RISK_ALLOW || d.action_b != D11_RISK_ALLOW ||
               (rr->log_sample_ppm && gw_rand64(t) % D11_RISK_PPM < rr->log_sample_ppm);
    if (log) {
        gw_slot *s = &rq->c->slots[rq->si];
        memcpy(d.rid, s->rid, sizeof d.rid);
        d.at_ms = d11_wall_ms();
        d.user_hash = d11_hash64(&m->user_id, sizeof m->user_id, 0x6431315f6d61736bULL) | 1; /* = request log */
        d.device_hash = f->has[D11_RISK_DEVICE] ? d11_risk_key(R->salt, D11_RISK_DEVICE, false, dev->v, dev->len) : 0;
        d11_risk_mask_ip(ip, d.ip, sizeof d.ip);
        snprintf(d.model_a, sizeof d.model_a, "%s", d.has_a ? ma->name : "");
        snprintf(d.model_b, sizeof d.model_b, "%s", d.has_b ? rr->model_b.name : "");
        d11_risk_log_push(&R->log, &d);
        atomic_fetch_add_explicit(&R->logged, 1, memory_order_relaxed);
    }
    if (!d.enforced || d.action == D11_RISK_ALLOW) return true;
    gw_ctr_add(&t->m.rejections[GW_RULE_RISK][D11_RES_ORDERS_CREATE], 1);
    const char *code = d.action == D11_RISK_DENY ? "risk_denied" : "risk_challenge";
    const char *verb = d.action == D11_RISK_DENY ? "refused" : "needs a challenge";
    if (d.rule_action == d.action)
        gw_fail(t, rq, 403, code, "order %s by risk control (velocity rule %s)", verb, d.rule);
    else
        gw_fail(t, rq, 403, code, "order %s by risk control (model %s scored %.3f)", verb, ma->name, d.score_a);
    return false;
}
