/*
 * webhooks.c — the webhook registry (webhooks.h): load / save of DATA/webhooks, the admin
 * handlers (POST/GET /admin/webhooks, DELETE /admin/webhooks/{id}, POST .../pause,
 * .../resume, .../replay, GET .../dead), metrics and the HMAC signature.
 *
 * File format (one webhook per line after "next_id N"):
 *   <id> <paused 0|1> <types mask> <max_attempts> <url> <secret as hex> <cursor or ->
 * URLs and cursors have no spaces (checked on create); secrets are stored hex-encoded.
 * Thread: request threads and the worker, every access under hs->mu.
 */
#include "webhooks.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../bench/httpc.h"
#include "events.h"
#include "request.h"

const char *const gw_hook_type_names[GW_HOOK_NTYPES] = {"order.created", "order.paid", "order.cancelled",
                                                        "order.expired", "product.created", "product.restocked"};

void gw_hook_sign(const char *secret, const char *ts, const char *body, size_t n, char *out)
{
    d11_buf m;
    d11_buf_init(&m, strlen(ts) + 1 + n);
    d11_buf_puts(&m, ts);
    d11_buf_puts(&m, ".");
    d11_buf_append(&m, body, n);
    unsigned char mac[32];
    unsigned int ml = 0;
    D11_ASSERT(HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)m.data, m.len, mac, &ml) &&
               ml == 32);
    d11_buf_free(&m);
    memcpy(out, "sha256=", 7);
    d11_hex(mac, 32, out + 7);
}

void gw_hook_dead_path(const gw_hooks *hs, uint32_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%.1060s/%u.dead", hs->dir, id);
}

static int unhex(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s);
    if (n % 2 || n / 2 >= cap) return -1;
    for (size_t i = 0; i < n; i += 2) {
        unsigned v;
        if (sscanf(s + i, "%2x", &v) != 1) return -1;
        out[i / 2] = (char)v;
    }
    out[n / 2] = 0;
    return 0;
}

_Static_assert(D11_HOOK_CURSOR_BYTES_MAX == 1347 && D11_HOOK_URL_BYTES_MAX == 512 && D11_HOOK_SECRET_BYTES_MAX == 128,
               "the sscanf widths of gw_hooks_init");

int gw_hooks_init(gw_hooks *hs, const char *data_dir)
{
    memset(hs, 0, sizeof *hs);
    pthread_mutex_init(&hs->mu, NULL);
    hs->next_id = 1;
    if (snprintf(hs->path, sizeof hs->path, "%.1000s/webhooks", data_dir) < 0 ||
        snprintf(hs->dir, sizeof hs->dir, "%.1000s/webhooks.d", data_dir) < 0)
        return -ENAMETOOLONG;
    FILE *f = fopen(hs->path, "re");
    if (!f) return errno == ENOENT ? 0 : -errno;
    char line[4096], url[D11_HOOK_URL_BYTES_MAX + 1], sec[2 * D11_HOOK_SECRET_BYTES_MAX + 1],
        cur[D11_HOOK_CURSOR_BYTES_MAX + 1];
    int rc = 0, k = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned id, paused, types, att;
        if (sscanf(line, "next_id %u", &id) == 1) {
            hs->next_id = id;
            continue;
        }
        if (k >= D11_WEBHOOKS_MAX ||
            sscanf(line, "%u %u %u %u %512s %256s %1347s", &id, &paused, &types, &att, url, sec, cur) != 7) {
            rc = D11_EPROTO;
            break;
        }
        gw_hook *h = &hs->h[k++];
        h->used = true;
        h->id = id;
        h->paused = paused != 0;
        h->types = types;
        h->max_attempts = att;
        snprintf(h->url, sizeof h->url, "%s", url);
        if (unhex(sec, h->secret, sizeof h->secret) < 0) rc = D11_EPROTO;
        snprintf(h->cursor, sizeof h->cursor, "%s", strcmp(cur, "-") ? cur : "");
        if (id >= hs->next_id) hs->next_id = id + 1;
    }
    fclose(f);
    if (rc < 0) d11_error("gateway: %s is corrupt; webhooks not loaded", hs->path);
    return rc;
}

void gw_hooks_release(gw_hooks *hs) { pthread_mutex_destroy(&hs->mu); }

int gw_hooks_save_locked(gw_hooks *hs)
{
    d11_buf b;
    d11_buf_init(&b, 1024);
    d11_buf_printf(&b, "next_id %u\n", hs->next_id);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++) {
        const gw_hook *h = &hs->h[i];
        if (!h->used) continue;
        char sec[2 * D11_HOOK_SECRET_BYTES_MAX + 1];
        d11_hex((const uint8_t *)h->secret, strlen(h->secret), sec);
        d11_buf_printf(&b, "%u %d %u %u %s %s %s\n", h->id, h->paused, h->types, h->max_attempts, h->url, sec,
                       h->cursor[0] ? h->cursor : "-");
    }
    int rc = d11_write_file_atomic(hs->path, b.data, b.len, 0600);
    d11_buf_free(&b);
    return rc;
}

/* ---- admin handlers ---- */

static void render_hook(d11_buf *b, const gw_hook *h)
{
    d11_buf_printf(b, "{\"id\":\"%u\",\"url\":", h->id);
    d11_buf_json_str(b, h->url, strlen(h->url));
    d11_buf_puts(b, ",\"types\":[");
    for (int i = 0, n = 0; i < GW_HOOK_NTYPES; i++)
        if (!h->types || (h->types & (1u << i))) d11_buf_printf(b, "%s\"%s\"", n++ ? "," : "", gw_hook_type_names[i]);
    d11_buf_printf(b, "],\"paused\":%s,\"max_attempts\":%u,\"cursor\":", h->paused ? "true" : "false",
                   h->max_attempts);
    d11_buf_json_str(b, h->cursor, strlen(h->cursor));
    d11_buf_printf(b, ",\"delivered\":%llu,\"retries\":%llu,\"dead_letters\":%llu}", (unsigned long long)h->delivered,
                   (unsigned long long)h->retries, (unsigned long long)h->dead);
}

void gw_h_hooks_create(gw_thread *t, gw_req *rq)
{
    gw_hooks *hs = &t->gw->hooks;
    size_t bn;
    const char *body = gw_body(rq, &bn);
    d11_json *j = &t->json;
    if (d11_json_parse(j, body, bn) < 0 || j->tok[0].type != D11_JT_OBJECT) {
        gw_fail(t, rq, 400, "bad_json", "body: must be a JSON object {\"url\",\"secret\",\"types\"}");
        return;
    }
    gw_hook h = {.used = true, .max_attempts = D11_HOOK_ATTEMPTS_DEFAULT};
    size_t n = 0;
    int tok = d11_json_find(j, 0, "url");
    d11_url u;
    char err[160];
    if (tok < 0 || d11_json_str(j, tok, h.url, sizeof h.url, &n) < 0 || (h.url[n] = 0, strchr(h.url, ' ')) ||
        d11_url_parse(h.url, &u, err, sizeof err) < 0) {
        gw_fail(t, rq, 422, "invalid", "url: must be an http:// URL without spaces or query (up to %d bytes)",
                D11_HOOK_URL_BYTES_MAX);
        return;
    }
    tok = d11_json_find(j, 0, "secret");
    if (tok < 0 || d11_json_str(j, tok, h.secret, sizeof h.secret, &n) < 0 || n < 1 || memchr(h.secret, 0, n)) {
        gw_fail(t, rq, 422, "invalid", "secret: must be a string of 1..%d bytes", D11_HOOK_SECRET_BYTES_MAX);
        return;
    }
    h.secret[n] = 0;
    if ((tok = d11_json_find(j, 0, "types")) >= 0) {
        if (j->tok[tok].type != D11_JT_ARRAY) {
            gw_fail(t, rq, 422, "invalid", "types: must be an array of event types");
            return;
        }
        for (int i = 0, e; (e = d11_json_elem(j, tok, i)) >= 0; i++) {
            int k = 0;
            while (k < GW_HOOK_NTYPES && !d11_json_str_eq(j, e, gw_hook_type_names[k], strlen(gw_hook_type_names[k]))) k++;
            if (k == GW_HOOK_NTYPES) {
                gw_fail(t, rq, 422, "invalid", "types: unknown event type (order.created, order.paid, "
                                               "order.cancelled, order.expired)");
                return;
            }
            h.types |= 1u << k;
        }
    }
    uint64_t v;
    if ((tok = d11_json_find(j, 0, "max_attempts")) >= 0) {
        if (d11_json_u64(j, tok, 1, D11_HOOK_ATTEMPTS_MAX, &v) < 0) {
            gw_fail(t, rq, 422, "invalid", "max_attempts: must be an integer in 1..%d", D11_HOOK_ATTEMPTS_MAX);
            return;
        }
        h.max_attempts = (uint32_t)v;
    }
    if ((tok = d11_json_find(j, 0, "after")) >= 0) {
        int sh;
        uint64_t pos[D11_CELLS_MAX];
        if (d11_json_str(j, tok, h.cursor, sizeof h.cursor, &n) < 0 || gw_cursor_decode(h.cursor, n, &sh, pos) < 0 ||
            sh != 0) {
            gw_fail(t, rq, 422, "invalid", "after: must be a cursor of the real event stream");
            return;
        }
        h.cursor[n] = 0;
    }
    pthread_mutex_lock(&hs->mu);
    int slot = -1;
    for (int i = 0; i < D11_WEBHOOKS_MAX && slot < 0; i++)
        if (!hs->h[i].used) slot = i;
    if (slot < 0) {
        pthread_mutex_unlock(&hs->mu);
        gw_fail(t, rq, 507, "too_many_webhooks", "at most %d webhooks", D11_WEBHOOKS_MAX);
        return;
    }
    h.id = hs->next_id++;
    hs->h[slot] = h;
    int rc = gw_hooks_save_locked(hs);
    if (rc < 0) {
        hs->h[slot].used = false;
        pthread_mutex_unlock(&hs->mu);
        gw_fail(t, rq, 500, "internal", "cannot store the webhook: %s", d11_strerror(rc));
        return;
    }
    d11_buf_reset(&t->tmp);
    render_hook(&t->tmp, &hs->h[slot]);
    pthread_mutex_unlock(&hs->mu);
    gw_respond_json(t, rq->c, rq->si, 201, t->tmp.data, t->tmp.len);
}

void gw_h_hooks_list(gw_thread *t, gw_req *rq)
{
    gw_hooks *hs = &t->gw->hooks;
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"webhooks\":[");
    pthread_mutex_lock(&hs->mu);
    for (int i = 0, n = 0; i < D11_WEBHOOKS_MAX; i++)
        if (hs->h[i].used) {
            if (n++) d11_buf_puts(b, ",");
            render_hook(b, &hs->h[i]);
        }
    pthread_mutex_unlock(&hs->mu);
    d11_buf_puts(b, "]}");
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

/* The webhook named by the path; answers 404/422 and returns NULL (mu not held) when none;
 * otherwise returns it with mu HELD. */
static gw_hook *find_locked(gw_thread *t, gw_req *rq)
{
    gw_hooks *hs = &t->gw->hooks;
    uint64_t id;
    if (rq->param.n < 1 || rq->param.n > 10 || d11_parse_u64(rq->param.p, rq->param.n, UINT32_MAX, &id) < 0) {
        gw_fail(t, rq, 404, "not_found", "no such webhook");
        return NULL;
    }
    pthread_mutex_lock(&hs->mu);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++)
        if (hs->h[i].used && hs->h[i].id == id) return &hs->h[i];
    pthread_mutex_unlock(&hs->mu);
    gw_fail(t, rq, 404, "not_found", "no such webhook");
    return NULL;
}

/* Save, unlock, answer the webhook (200) or 500. */
static void change_done(gw_thread *t, gw_req *rq, gw_hook *h, bool gone)
{
    gw_hooks *hs = &t->gw->hooks;
    h->gen++;
    d11_buf_reset(&t->tmp);
    if (!gone) render_hook(&t->tmp, h);
    int rc = gw_hooks_save_locked(hs);
    pthread_mutex_unlock(&hs->mu);
    if (rc < 0) gw_fail(t, rq, 500, "internal", "cannot store the webhooks: %s", d11_strerror(rc));
    else if (gone) gw_respond(t, rq->c, rq->si, 204, "application/json", "", "", 0);
    else gw_respond_json(t, rq->c, rq->si, 200, t->tmp.data, t->tmp.len);
}

void gw_h_hooks_delete(gw_thread *t, gw_req *rq)
{
    gw_hook *h = find_locked(t, rq);
    if (!h) return;
    char path[1200];
    gw_hook_dead_path(&t->gw->hooks, h->id, path, sizeof path);
    unlink(path);
    h->used = false;
    change_done(t, rq, h, true);
}

void gw_h_hooks_pause(gw_thread *t, gw_req *rq)
{
    gw_hook *h = find_locked(t, rq);
    if (!h) return;
    h->paused = true;
    change_done(t, rq, h, false);
}

void gw_h_hooks_resume(gw_thread *t, gw_req *rq)
{
    gw_hook *h = find_locked(t, rq);
    if (!h) return;
    h->paused = false;
    change_done(t, rq, h, false);
}

void gw_h_hooks_replay(gw_thread *t, gw_req *rq)
{
    gw_hook *h = find_locked(t, rq);
    if (!h) return;
    h->replay = true; /* the worker re-delivers DATA/webhooks.d/<id>.dead */
    d11_buf_reset(&t->tmp);
    render_hook(&t->tmp, h);
    pthread_mutex_unlock(&t->gw->hooks.mu);
    gw_respond_json(t, rq->c, rq->si, 202, t->tmp.data, t->tmp.len);
}

void gw_h_hooks_dead(gw_thread *t, gw_req *rq)
{
    gw_hook *h = find_locked(t, rq);
    if (!h) return;
    char path[1200];
    gw_hook_dead_path(&t->gw->hooks, h->id, path, sizeof path);
    pthread_mutex_unlock(&t->gw->hooks.mu);
    d11_buf *b = &t->tmp;
    d11_buf_reset(b);
    d11_buf_puts(b, "{\"dead\":[");
    FILE *f = fopen(path, "re");
    char line[D11_EVENT_JSON_BYTES_MAX + 512];
    int n = 0;
    while (f && n < D11_HOOK_DEAD_LIST_MAX && fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n')) l--;
        if (!l) continue;
        if (n++) d11_buf_puts(b, ",");
        d11_buf_append(b, line, l);
    }
    if (f) fclose(f);
    d11_buf_puts(b, "]}");
    gw_respond_json(t, rq->c, rq->si, 200, b->data, b->len);
}

void gw_hooks_metrics(gw_hooks *hs, d11_buf *b)
{
    d11_buf_puts(b, "# HELP d11_webhook_delivered_total Events delivered (2xx) per webhook since start.\n"
                    "# TYPE d11_webhook_delivered_total counter\n"
                    "# HELP d11_webhook_retries_total Failed delivery attempts that were retried.\n"
                    "# TYPE d11_webhook_retries_total counter\n"
                    "# HELP d11_webhook_dead_letters_total Events moved to the dead letters since start.\n"
                    "# TYPE d11_webhook_dead_letters_total counter\n");
    pthread_mutex_lock(&hs->mu);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++) {
        const gw_hook *h = &hs->h[i];
        if (!h->used) continue;
        d11_buf_printf(b, "d11_webhook_delivered_total{webhook=\"%u\"} %llu\n", h->id, (unsigned long long)h->delivered);
        d11_buf_printf(b, "d11_webhook_retries_total{webhook=\"%u\"} %llu\n", h->id, (unsigned long long)h->retries);
        d11_buf_printf(b, "d11_webhook_dead_letters_total{webhook=\"%u\"} %llu\n", h->id, (unsigned long long)h->dead);
    }
    pthread_mutex_unlock(&hs->mu);
}
