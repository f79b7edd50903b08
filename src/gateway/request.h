/*
 * request.h — one HTTP request being served, as the handlers see it, and what every
 * handler needs: answering errors, reading path parameters, forwarding one wire request
 * to the center or a cell and turning its reply into the HTTP answer.
 *
 * A handler (gw_handler) is called by the router once the request has passed route,
 * token, scope, stress tag, degrade switch and flow rule; it validates the rest
 * (parameters, body, risk rules) and answers slot rq->si of rq->c exactly once — now
 * (gw_respond*, gw_fail) or later (gw_forward, or its own gw_pend callback). The gw_req
 * and everything it points to is valid only during the handler call; an answer that
 * comes later finds its slot again through a gw_slot_ref (client.h).
 * Thread: the connection's thread.
 */
#ifndef D11_GW_REQUEST_H
#define D11_GW_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "bodies.h"
#include "gw.h"

typedef struct gw_req gw_req;
typedef void gw_handler(gw_thread *t, gw_req *rq);

/* One line of the route table (router.c). */
typedef struct gw_route {
    const char *pattern; /* '*' = one path segment, the parameter */
    int         method;  /* HTTP_GET, ... */
    uint32_t    scopes;  /* any of these (admin implies all); 0 = no token needed */
    int         res;     /* rules resource (degrade, flow, risk); D11_RES_NONE = none */
    gw_handler *handler;
    const char *label;   /* metrics label, e.g. "orders.create" */
    uint16_t    msg;     /* wire message, for a handler that serves several routes */
} gw_route;

struct gw_req {
    gw_conn            *c;
    int                 si;      /* the response slot */
    d11_http_req       *http;
    const gw_route     *route;
    d11_str             param;   /* the '*' segment, still percent-encoded */
    const char         *query;   /* after '?', up to '#' */
    size_t              query_len;
    uint16_t            flags;   /* wire flags for forwarded requests (D11_WF_STRESS) */
    const char         *label;   /* the token's label (the caller), "" before/without a token */
    int64_t             pace_ms; /* > 0: the pace behaviour gave it a turn this far away */
};

/* The request body ("" when none). */
static inline const char *gw_body(const gw_req *rq, size_t *n)
{
    *n = rq->http->body.len;
    return rq->http->body.data ? rq->http->body.data : "";
}
/* Scratch for unescaped body strings, valid until the next request of this thread. */
static inline d11_scratch gw_body_scratch(gw_thread *t)
{
    return (d11_scratch){t->scratch, D11_HTTP_BODY_BYTES_MAX + 16, 0};
}

/* Answer rq with the error document; msg is a printf format. */
void gw_fail(gw_thread *t, gw_req *rq, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Answer a body validation failure (400 bad_json / 422 invalid naming the field). */
void gw_fail_body(gw_thread *t, gw_req *rq, const d11_gw_err *e);

/* Percent-decode s into out (cap bytes); the length, or -1 on a bad escape or overflow. */
long gw_pct_decode(const char *s, size_t n, char *out, size_t cap);
/* An order id path segment: 1-20 digits, <= UINT64_MAX. */
bool gw_param_order_id(d11_str seg, uint64_t *id);
/* A SKU path segment, decoded into buf (cap bytes); *out points into buf. */
bool gw_param_sku(d11_str seg, char *buf, size_t cap, d11_str *out);

/*
 * Send the payload in t->tmp as wire message `type` to target and answer rq with the
 * reply: 2xx -> the upstream body verbatim; other statuses -> the error document with
 * the upstream's status and code (Retry-After: 1 on a 429); a malformed reply -> 502;
 * no answer within --request-timeout-ms -> 504; connection lost -> 503. Answers 503 at
 * once when the target is down, its backlog is over D11_RPC_OUT_BYTES_MAX or the pending
 * table is full.
 */
void gw_forward(gw_thread *t, gw_req *rq, int target, uint16_t type);
/* The same with a completion of the caller's (ctx is the gw_pend's ctx; p->arg is the
 * client slot ref): it may look at the reply, then call gw_forward_done to answer. */
void gw_forward_with(gw_thread *t, gw_req *rq, int target, uint16_t type, gw_up_cb *cb, void *ctx);
void gw_forward_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr);

#endif
