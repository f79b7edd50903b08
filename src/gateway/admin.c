/*
 * admin.c — the admin API answered locally (see admin.h). Thread: the connection's thread.
 *
 * Every rule change (PUT, rollback) is logged at info with who made it (the token's
 * label) and a diff: the top-level keys of the rules document whose value changed, old
 * and new ("event":"rules_change"). GET/PUT /admin/log-level read and set the log level
 * of every process (or one target) at run time, over the control channel (chaos.h).
 */
#include "admin.h"
#include "chaos.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULES_DIFF_KEYS_MAX 32

typedef struct key_span {
    const char *k, *v;
    size_t      kn, vn;
} key_span;

/* Top-level keys of a rendered rules document and their value texts (spans into txt). */
static int doc_keys(d11_json *j, const d11_buf *txt, key_span *out)
{
    if (d11_json_parse(j, txt->data, txt->len) < 0) return -1;
    int n = 0;
    int t = 1;
    for (int i = 0; i < j->tok[0].size && n < RULES_DIFF_KEYS_MAX; i++) {
        const d11_json_tok *k = &j->tok[t], *v = &j->tok[t + 1];
        int vs = v->type == D11_JT_STRING ? v->start - 1 : v->start;
        int ve = v->type == D11_JT_STRING ? v->end + 1 : v->end;
        out[n++] = (key_span){txt->data + k->start, txt->data + vs, (size_t)(k->end - k->start), (size_t)(ve - vs)};
        t = v->next;
    }
    return n;
}

/* Log a rules change: who, versions and the changed top-level keys (old -> new). */
static void log_rules_change(gw_thread *t, gw_req *rq, const char *what, const d11_rules *before,
                             const d11_rules *after)
{
    d11_buf a, b, diff;
    d11_buf_init(&a, 512);
    d11_buf_init(&b, 512);
    d11_buf_init(&diff, 512);
    d11_rules_render(before, &a);
    d11_rules_render(after, &b);
    key_span ka[RULES_DIFF_KEYS_MAX], kb[RULES_DIFF_KEYS_MAX];
    int na = doc_keys(&t->json, &a, ka);
    int nb = doc_keys(&t->json, &b, kb);
    d11_buf_puts(&diff, "{");
    bool first = true;
    for (int i = 0; i < nb; i++) {
        if ((kb[i].kn == 7 && memcmp(kb[i].k, "version", 7) == 0) ||
            (kb[i].kn == 10 && memcmp(kb[i].k, "updated_at", 10) == 0))
            continue;
        const key_span *old = NULL;
        for (int k = 0; k < na; k++)
            if (ka[k].kn == kb[i].kn && memcmp(ka[k].k, kb[i].k, kb[i].kn) == 0) old = &ka[k];
        if (old && old->vn == kb[i].vn && memcmp(old->v, kb[i].v, kb[i].vn) == 0) continue;
        d11_buf_printf(&diff, "%s\"%.*s\":{\"old\":", first ? "" : ",", (int)kb[i].kn, kb[i].k);
        if (old) d11_buf_append(&diff, old->v, old->vn);
        else d11_buf_puts(&diff, "null");
        d11_buf_puts(&diff, ",\"new\":");
        d11_buf_append(&diff, kb[i].v, kb[i].vn);
        d11_buf_puts(&diff, "}");
        first = false;
    }
    d11_buf_puts(&diff, "}");
    d11_buf_append(&diff, "", 1);
    const char *who = rq->c->slots[rq->si].token;
    char head[200];
    snprintf(head, sizeof head, "\"event\":\"rules_change\",\"action\":\"%s\",\"token\":\"%s\",\"from_version\":%llu,"
             "\"to_version\":%llu,\"diff\":", what, who, (unsigned long long)before->version,
             (unsigned long long)after->version);
    d11_buf kv;
    d11_buf_init(&kv, strlen(head) + diff.len + 1);
    d11_buf_puts(&kv, head);
    d11_buf_puts(&kv, na < 0 || nb < 0 ? "null" : diff.data);
    d11_buf_append(&kv, "", 1);
    d11_log_kv(D11_LOG_INFO, kv.data, "rules version %llu %s by %s", (unsigned long long)after->version, what,
               who[0] ? who : "?");
    d11_buf_free(&kv);
    d11_buf_free(&diff);
    d11_buf_free(&b);
    d11_buf_free(&a);
}

/* GET /admin/log-level: every process's level (chaos.c fans a CONTROL status out). */
void gw_h_log_level_get(gw_thread *t, gw_req *rq)
{
    gw_ctl_set none = {0};
    gw_ctl_log_level(t, rq, -1, &none);
}

/* PUT /admin/log-level {"level":L[,"target":"all"|"gateway"|"center"|"cells"|"cell:N"]}:
 * target defaults to all (the old body, level only, still works). 422 invalid for a bad
 * level or target; the answer is GET's, after the change. */
void gw_h_log_level_put(gw_thread *t, gw_req *rq)
{
    size_t blen;
    const char *body = gw_body(rq, &blen);
    if (d11_json_parse(&t->json, body, blen) < 0) {
        gw_fail(t, rq, 400, "bad_json", "malformed JSON: %s", t->json.err);
        return;
    }
    int v = d11_json_find(&t->json, 0, "level");
    char lv[16], tg[24];
    size_t n;
    int level = -1;
    if (d11_json_str(&t->json, v, lv, sizeof lv, &n) == 0) level = d11_log_level_parse(lv, n);
    if (level < 0) {
        gw_fail(t, rq, 422, "invalid", "level: must be one of debug, info, warn, error");
        return;
    }
    gw_ctl_set set;
    bool live;
    unsigned ncells = gw_routing(t, &live)->ncells;
    int tv = d11_json_find(&t->json, 0, "target");
    if (tv < 0) {
        (void)gw_ctl_target_parse("all", 3, ncells, true, &set);
        snprintf(tg, sizeof tg, "all");
    } else if (d11_json_str(&t->json, tv, tg, sizeof tg - 1, &n) < 0 || gw_ctl_target_parse(tg, n, ncells, true, &set) < 0) {
        gw_fail(t, rq, 422, "invalid", "target: one of all, gateway, center, cells, cell:N (N < %u)", ncells);
        return;
    } else {
        tg[n] = 0;
    }
    int old = d11_log_level();
    const char *who = rq->c->slots[rq->si].token;
    char kv[200];
    snprintf(kv, sizeof kv, "\"event\":\"log_level\",\"token\":\"%s\",\"old\":\"%s\",\"new\":\"%s\",\"target\":\"%s\"",
             who, d11_log_level_name(old), d11_log_level_name(level), tg);
    /* logged at warn so the change shows whatever the new level is */
    d11_log_kv(D11_LOG_WARN, kv, "log level -> %s on %s by %s", d11_log_level_name(level), tg, who[0] ? who : "?");
    gw_ctl_log_level(t, rq, level, &set);
}

void gw_h_admin_routing(gw_thread *t, gw_req *rq)
{
    bool live;
    const d11_routing *rt = gw_routing(t, &live);
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_printf(b, "{\"version\":%u,\"source\":\"%s\",\"ncells\":%u,\"slots\":%d,\"ranges\":[",
                   rt->version, live ? "center" : "default", rt->ncells, D11_SLOTS);
    int from = 0;
    for (int s = 1; s <= D11_SLOTS; s++)
        if (s == D11_SLOTS || rt->cell_of_slot[s] != rt->cell_of_slot[from]) {
            d11_buf_printf(b, "%s{\"from\":%d,\"to\":%d,\"cell\":%u}", from ? "," : "", from, s - 1,
                           rt->cell_of_slot[from]);
            from = s;
        }
    d11_buf_puts(b, "]}");
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

static void rules_reply(gw_thread *t, gw_req *rq, const d11_rules *r)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_rules_render(r, b);
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_h_rules_get(gw_thread *t, gw_req *rq)
{
    uint64_t g;
    d11_rules_store_get(&t->gw->rules, &t->doc, &g);
    rules_reply(t, rq, &t->doc);
}

void gw_h_rules_put(gw_thread *t, gw_req *rq)
{
    bool has_version;
    char msg[256];
    size_t blen;
    const char *body = gw_body(rq, &blen);
    int rc = d11_rules_parse(&t->json, body, blen, &t->doc, &has_version, msg, sizeof msg);
    if (rc == D11_JSON_EBAD) {
        gw_fail(t, rq, 400, "bad_json", "malformed JSON: %s", msg);
        return;
    }
    if (rc) {
        gw_fail(t, rq, 422, "invalid", "%s", msg);
        return;
    }
    d11_rules *before = malloc(sizeof *before); /* admin path: rare */
    if (!before) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return;
    }
    uint64_t g;
    d11_rules_store_get(&t->gw->rules, before, &g);
    rc = d11_rules_store_put(&t->gw->rules, &t->doc, has_version, &t->applied);
    if (rc == 0) log_rules_change(t, rq, "put", before, &t->applied);
    free(before);
    if (rc == -ESTALE) {
        gw_fail(t, rq, 409, "version_conflict", "version %llu is not the current version %llu",
                (unsigned long long)t->doc.version, (unsigned long long)t->applied.version);
        return;
    }
    if (rc) {
        gw_fail(t, rq, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    rules_reply(t, rq, &t->applied);
}

void gw_h_rules_rollback(gw_thread *t, gw_req *rq)
{
    d11_rules *before = malloc(sizeof *before);
    if (!before) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return;
    }
    uint64_t g;
    d11_rules_store_get(&t->gw->rules, before, &g);
    int rc = d11_rules_store_rollback(&t->gw->rules, &t->applied);
    if (rc == 0) log_rules_change(t, rq, "rollback", before, &t->applied);
    free(before);
    if (rc == -ENOENT) {
        gw_fail(t, rq, 409, "no_history", "no previous rules version to roll back to");
        return;
    }
    if (rc) {
        gw_fail(t, rq, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    rules_reply(t, rq, &t->applied);
}

/* GET /admin/protect: the adaptive protection's state (docs/protection.md). */
void gw_h_protect_get(gw_thread *t, gw_req *rq)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    gw_protect_render(&t->gw->prot, b);
    if (b->len && b->data[b->len - 1] == '}') { /* + "cluster_flow": the leases (cluster_flow.h) */
        b->len--;
        d11_buf_puts(b, ",\"cluster_flow\":");
        gw_cflow_render(&t->gw->rules, b);
        d11_buf_puts(b, "}");
    }
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

/* PATCH /admin/rules: a partial update, merged into the rules in force (rules.h,
 * d11_rules_parse_patch). "version" in the patch is a compare-and-set as for PUT; without
 * it the merge is retried (up to 3 times) when another change lands in between, so a
 * patch never overwrites a change it did not see. */
void gw_h_rules_patch(gw_thread *t, gw_req *rq)
{
    char msg[256];
    size_t blen;
    const char *body = gw_body(rq, &blen);
    for (int attempt = 0;; attempt++) {
        uint64_t g;
        bool has_version;
        d11_rules_store_get(&t->gw->rules, &t->applied, &g);
        int rc = d11_rules_parse_patch(&t->json, body, blen, &t->applied, &t->doc, &has_version, msg, sizeof msg);
        if (rc == D11_JSON_EBAD) {
            gw_fail(t, rq, 400, "bad_json", "malformed JSON: %s", msg);
            return;
        }
        if (rc) {
            gw_fail(t, rq, 422, "invalid", "%s", msg);
            return;
        }
        uint64_t want = t->doc.version;
        if (!has_version) t->doc.version = t->applied.version;
        rc = d11_rules_store_put(&t->gw->rules, &t->doc, true, &t->applied);
        if (rc == -ESTALE && !has_version && attempt < 3) continue;
        if (rc == -ESTALE) {
            gw_fail(t, rq, 409, "version_conflict", "version %llu is not the current version %llu",
                    (unsigned long long)want, (unsigned long long)t->applied.version);
            return;
        }
        if (rc) {
            gw_fail(t, rq, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
            return;
        }
        d11_info("rules version %llu applied (admin API, patch)", (unsigned long long)t->applied.version);
        rules_reply(t, rq, &t->applied);
        return;
    }
}
