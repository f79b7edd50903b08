/*
 * admin.c — the admin API answered locally (see admin.h). Thread: the connection's thread.
 */
#include "admin.h"

#include <errno.h>

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
    rc = d11_rules_store_put(&t->gw->rules, &t->doc, has_version, &t->applied);
    if (rc == -ESTALE) {
        gw_fail(t, rq, 409, "version_conflict", "version %llu is not the current version %llu",
                (unsigned long long)t->doc.version, (unsigned long long)t->applied.version);
        return;
    }
    if (rc) {
        gw_fail(t, rq, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    d11_info("rules version %llu applied (admin API)", (unsigned long long)t->applied.version);
    rules_reply(t, rq, &t->applied);
}

void gw_h_rules_rollback(gw_thread *t, gw_req *rq)
{
    int rc = d11_rules_store_rollback(&t->gw->rules, &t->applied);
    if (rc == -ENOENT) {
        gw_fail(t, rq, 409, "no_history", "no previous rules version to roll back to");
        return;
    }
    if (rc) {
        gw_fail(t, rq, 500, "internal", "cannot persist the rules: %s", d11_strerror(rc));
        return;
    }
    d11_info("rules rolled back to version %llu", (unsigned long long)t->applied.version);
    rules_reply(t, rq, &t->applied);
}

/* GET /admin/protect: the adaptive protection's state (docs/protection.md). */
void gw_h_protect_get(gw_thread *t, gw_req *rq)
{
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    gw_protect_render(&t->gw->prot, b);
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
