/*
 * webhooks.h — webhooks (docs/events.md): the registry and its admin API (webhooks.c,
 * on the gateway's request threads) and the delivery worker (hook_worker.c, ONE extra
 * thread of the gateway process).
 *
 * The worker is an ordinary consumer of GET /v1/events over loopback HTTP with the admin
 * token, one cursor per webhook. Per webhook, one delivery is in flight at a time, in
 * stream order: a later event waits while an earlier one is retried, so the events of
 * one order arrive in order. 2xx = delivered; anything else (or no answer within
 * D11_HOOK_TIMEOUT_MS) is retried after D11_HOOK_BACKOFF_MS_MIN * 2^(attempt-1) (capped
 * at D11_HOOK_BACKOFF_MS_MAX) with +-50% jitter, up to max_attempts; then the event is
 * appended to the webhook's dead letters (DATA/webhooks/<id>.dead, JSON lines) and the
 * stream moves on. POST .../replay re-delivers the dead letters (one attempt each; the
 * ones failing again stay). The cursor is persisted at most every D11_HOOK_SAVE_MS:
 * after a crash the events since the last save are delivered again (at-least-once).
 *
 * Registry: DATA/webhooks (mode 0600: it holds the secrets), one line per webhook,
 * rewritten atomically on every change under gw_hooks.mu. Thread: the mutex guards the
 * table; the worker copies what it needs under it and does its I/O outside it.
 */
#ifndef D11_GW_WEBHOOKS_H
#define D11_GW_WEBHOOKS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/util.h"

struct gw;
typedef struct gw_req gw_req;
typedef struct gw_thread gw_thread;

#define D11_WEBHOOKS_MAX          32        /* registered webhooks -> 507 */
#define D11_HOOK_URL_BYTES_MAX    512
#define D11_HOOK_SECRET_BYTES_MAX 128
#define D11_HOOK_CURSOR_BYTES_MAX (3 + D11_CELLS_MAX * 21)
#define D11_HOOK_ATTEMPTS_DEFAULT 8
#define D11_HOOK_ATTEMPTS_MAX     20
#define D11_HOOK_BACKOFF_MS_MIN   100
#define D11_HOOK_BACKOFF_MS_MAX   30000
#define D11_HOOK_TIMEOUT_MS       5000      /* one delivery POST, connect included */
#define D11_HOOK_SAVE_MS          200       /* cursor persistence period (at-least-once) */
#define D11_HOOK_PAGE             200       /* events fetched per read */
#define D11_HOOK_DEAD_LIST_MAX    1000      /* dead letters shown by GET .../dead */
#define D11_HOOK_IDLE_MS          10        /* worker sleep when nothing is due */

/* Event types a webhook may subscribe to (bit i = hook_type_names[i]). */
#define GW_HOOK_NTYPES 6
extern const char *const gw_hook_type_names[GW_HOOK_NTYPES];

typedef struct gw_hook {
    bool     used, paused, replay;
    uint32_t id;
    uint32_t types;       /* bit mask; 0 = every type */
    uint32_t max_attempts;
    char     url[D11_HOOK_URL_BYTES_MAX + 1];
    char     secret[D11_HOOK_SECRET_BYTES_MAX + 1];
    char     cursor[D11_HOOK_CURSOR_BYTES_MAX + 1]; /* "" = from the oldest retained */
    uint64_t delivered, retries, dead;              /* since start (metrics) */
    uint64_t gen;         /* bumped on every config change: the worker restarts its state */
} gw_hook;

typedef struct gw_hooks {
    pthread_mutex_t mu;
    gw_hook         h[D11_WEBHOOKS_MAX];
    uint32_t        next_id;
    char            path[1100], dir[1100];
    pthread_t       th;
    bool            started;
    _Atomic int     stop;
} gw_hooks;

/* Load DATA/webhooks (a missing file = none). 0, or < 0 (logged) on a corrupt file. */
int  gw_hooks_init(gw_hooks *hs, const char *data_dir);
/* Start / stop the delivery worker (hook_worker.c). */
int  gw_hooks_start(struct gw *g);
void gw_hooks_stop(struct gw *g);
void gw_hooks_release(gw_hooks *hs);
/* Rewrite DATA/webhooks; the caller holds mu. 0 or -errno. */
int  gw_hooks_save_locked(gw_hooks *hs);
/* DATA/webhooks/<id>.dead into out. */
void gw_hook_dead_path(const gw_hooks *hs, uint32_t id, char *out, size_t cap);
/* Prometheus lines: delivered, retries, dead letters per webhook. */
void gw_hooks_metrics(gw_hooks *hs, d11_buf *b);

void gw_h_hooks_create(gw_thread *t, gw_req *rq);
void gw_h_hooks_list(gw_thread *t, gw_req *rq);
void gw_h_hooks_delete(gw_thread *t, gw_req *rq);
void gw_h_hooks_pause(gw_thread *t, gw_req *rq);
void gw_h_hooks_resume(gw_thread *t, gw_req *rq);
void gw_h_hooks_dead(gw_thread *t, gw_req *rq);
void gw_h_hooks_replay(gw_thread *t, gw_req *rq);

/* A blocking HTTP client to this gateway's own listener (loopback) and the admin token's
 * "Authorization: ..." header line; false until DATA/admin.token exists. Used by the
 * webhook worker and the NATS relay, which are ordinary consumers of GET /v1/events. */
struct d11_httpc;
bool gw_self_client(struct gw *g, struct d11_httpc *c, char *auth, size_t cap);

/* Split a GET /v1/events body into the events' [offset, length] (at most max) and copy
 * its "next" into next; the count, or -1 when malformed. */
int gw_split_events(const char *b, size_t n, uint32_t (*spans)[2], int max, char *next, size_t cap);

/* The signature header value: "sha256=" + hex HMAC-SHA256(secret, ts "." body); out >= 72. */
void gw_hook_sign(const char *secret, const char *ts, const char *body, size_t n, char *out);

#endif
