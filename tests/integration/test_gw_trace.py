"""
test_gw_trace.py — docs/gateway.md: "Every response has X-Request-Id and traceparent".
Walks every route of the gateway's route table (with its method), the refusals of the
request path (404, 405, 401, 403, 400, 422, 409, a parse error), the dashboard and
/metrics, and checks each answer carries a valid W3C traceparent: continuing the
caller's trace when one was given, a new trace otherwise (issue 7, defect 9).
"""

import re

from harness import Checks, Platform, expect, new_key, raw_http

TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = "00-%s-%s-01" % (TRACE_ID, PARENT_SPAN)


def check_tp(ck, r, what, continued):
    tp = r.headers.get("traceparent")
    m = TP_RE.match(tp or "")
    if not ck.true(m is not None, "%s: no valid traceparent in the response (%r): %r" % (what, tp, r)):
        return
    tid, sid, _ = m.groups()
    ck.true(tid != "0" * 32 and sid != "0" * 16, "%s: all-zero ids in %r" % (what, tp))
    if continued is None:  # either is fine
        return
    if continued:
        ck.eq(tid, TRACE_ID, "%s: trace id continued" % what)
        ck.true(sid != PARENT_SPAN, "%s: the gateway's own span id, not the caller's: %r" % (what, tp))
    else:
        ck.true(tid != TRACE_ID, "%s: a new trace without a traceparent" % what)


def test_traceparent_on_every_route_and_refusal():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("TP-1", stock=50), 201)
        oid = expect(c.order(7, [("TP-1", 1)]), 201)["order_id"]
        oid2 = expect(c.order(8, [("TP-1", 1)]), 201)["order_id"]
        reader = p.token_create("read")
        rules = expect(c.get("/admin/rules"), 200)
        # (method, path, body, headers, token) -> every route of the table, once
        cases = [
            ("GET", "/", None, None, None),
            ("GET", "/healthz", None, None, None),
            ("GET", "/readyz", None, None, None),
            ("GET", "/metrics", None, None, None),
            ("POST", "/v1/products", {"sku": "TP-2", "title": "t", "price_cents": 1, "stock": 3,
                                      "category": "c"}, None, c.DEFAULT),
            ("GET", "/v1/products/TP-1", None, None, c.DEFAULT),
            ("POST", "/v1/products/TP-1/restock", {"quantity": 1}, None, c.DEFAULT),
            ("POST", "/v1/orders", {"user_id": 9, "items": [{"sku": "TP-1", "quantity": 1}]},
             {"Idempotency-Key": new_key()}, c.DEFAULT),
            ("GET", "/v1/orders/" + oid, None, None, c.DEFAULT),
            ("GET", "/v1/users/7/orders", None, None, c.DEFAULT),
            ("POST", "/v1/orders/%s/pay" % oid, {"payment_id": "p-1"}, None, c.DEFAULT),
            ("POST", "/v1/orders/%s/cancel" % oid2, None, None, c.DEFAULT),
            ("GET", "/admin/cells", None, None, c.DEFAULT),
            ("GET", "/admin/routing", None, None, c.DEFAULT),
            ("GET", "/admin/ledger/TP-1", None, None, c.DEFAULT),
            ("GET", "/admin/rules", None, None, c.DEFAULT),
            ("PUT", "/admin/rules", {"version": rules["version"]}, None, c.DEFAULT),
            ("POST", "/admin/rules/rollback", None, None, c.DEFAULT),
            # refusals
            ("GET", "/nope", None, None, c.DEFAULT),                          # 404
            ("DELETE", "/v1/products/TP-1", None, None, c.DEFAULT),           # 405
            ("GET", "/v1/products/TP-1", None, None, None),                   # 401
            ("POST", "/v1/products", {"sku": "X"}, None, reader),             # 403
            ("POST", "/v1/products", "{", None, c.DEFAULT),                   # 400
            ("POST", "/v1/orders", {"user_id": 0, "items": []},
             {"Idempotency-Key": new_key()}, c.DEFAULT),                      # 422
            ("POST", "/v1/orders/%s/pay" % oid2, {"payment_id": "p-2"}, None, c.DEFAULT),  # 409
            ("GET", "/v1/orders/123", None, None, c.DEFAULT),                 # 404 upstream
        ]
        seen = set()
        for continued in (False, True):
            for method, path, body, hdrs, tok in cases:
                h = dict(hdrs or {})
                if continued:
                    h["traceparent"] = TRACEPARENT
                kw = {"headers": h}
                if tok is not c.DEFAULT:
                    kw["token"] = tok
                r = c.request(method, path, body=body, **kw)
                seen.add(r.status)
                check_tp(ck, r, "%s %s (%d)%s" % (method, path, r.status,
                                                   " with traceparent" if continued else ""),
                         continued)
        for st in (200, 201, 400, 401, 403, 404, 405, 409, 422):
            ck.true(st in seen, "the walk produced a %d answer (seen %r)" % (st, sorted(seen)))

        # a request the parser refuses (400, then close), with and without a traceparent
        for extra in ("", "traceparent: %s\r\n" % TRACEPARENT):
            r = raw_http(p.port, ("GET /healthz HTTP/1.1\r\nHost: t\r\n%sContent-Length : 5\r\n\r\n"
                                  % extra).encode())
            ck.true(r is not None and r.status == 400, "a malformed header is 400: %r" % r)
            if r is not None:
                check_tp(ck, r, "parse error 400", None)
