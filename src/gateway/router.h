/*
 * router.h — the route table and what happens to every parsed request before a handler
 * sees it, cheapest refusal first (nothing unauthenticated costs a parse):
 *   route (404, or 405 with Allow) -> token (401) -> scope (403)
 *   -> X-D11-Stress (403 without scope stress, 422 unless 0/1)
 *   -> degrade switch (503 degraded) -> flow rule (429 rate_limited + Retry-After)
 *   -> the route's handler (path parameters, body, risk rules, forward or answer).
 * A valid W3C traceparent on the request is continued (its trace id and flags, with the
 * gateway's own span id); anything else starts a new trace.
 *
 * The table (router.c) is the one place that lists routes: pattern, method, scopes,
 * rules resource, handler, metrics label, wire message. Adding a route is one line there
 * and one handler. Route ids (metrics) are 1 + the line's index; 0 is "other".
 * Thread: gw_dispatch runs on the connection's thread; gw_router_init before the threads.
 */
#ifndef D11_GW_ROUTER_H
#define D11_GW_ROUTER_H

#include "gw.h"

/* Install the dispatcher and the route labels into g (single-threaded, at start). */
void gw_router_init(struct gw *g);
/* Serve one parsed request (gw_request_fn): answers slot si of c, now or later. */
void gw_dispatch(gw_thread *t, gw_conn *c, int si, d11_http_req *r);

#endif
