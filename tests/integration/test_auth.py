"""
test_auth.py — tokens and scopes: 401 without or with a bad token, 403 for a token that
lacks the scope, /healthz open; the admin token file (created on first start, mode 0600,
kept across restarts, its path printed) and tokens never written into any log.
"""

import os
import stat

from harness import Checks, Platform, expect


def test_missing_or_bad_token_is_401():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        anon = p.client(token=None)
        ck.status(anon.get("/healthz"), 200, "/healthz without a token")
        reqs = [("GET", "/v1/products/A", None), ("POST", "/v1/orders",
                                                   {"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}),
                ("GET", "/v1/users/1/orders", None), ("POST", "/v1/products/A/restock", {"quantity": 1})]
        for method, path, body in reqs:
            h = {"Idempotency-Key": "auth-1"}
            ck.error(anon.request(method, path, body, headers=h), 401, what="%s %s without a token" % (method, path))
            ck.error(anon.request(method, path, body, headers=dict(h, Authorization="Bearer not-a-token")),
                     401, what="%s %s with a bad token" % (method, path))
            ck.error(anon.request(method, path, body, headers=dict(h, Authorization="Bearer " + p.admin_token + "x")),
                     401, what="%s %s with the admin token plus one byte" % (method, path))
            ck.error(anon.request(method, path, body, headers=dict(h, Authorization="Basic " + p.admin_token)),
                     401, what="%s %s with a Basic scheme" % (method, path))
        ck.error(anon.get("/admin/cells"), 401, what="GET /admin/cells without a token")
        ck.product(c.get("/v1/products/A"), {"stock_sold": 0, "stock_total": 5},
                   "nothing sold or restocked by unauthenticated requests")
        ck.eq((c.get("/v1/users/1/orders").json or {}).get("orders"), [], "no order placed without a token")


def test_token_lacking_scope_is_403():
    p = Platform(cells=1)
    ro_tok = p.token_create("read", label="ro")  # before the start: no propagation delay
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        ro = p.client(ro_tok)
        ck.status(ro.get("/v1/products/A"), 200, "read token: GET product")
        ck.error(ro.order(1, [("A", 1)]), 403, what="read token: POST /v1/orders")
        ck.error(ro.create_product("B", stock=1), 403, what="read token: POST /v1/products")
        ck.error(ro.post("/v1/products/A/restock", {"quantity": 1}), 403, what="read token: restock")
        ck.error(ro.get("/admin/cells"), 403, what="read token: GET /admin/cells")
        rw = p.client(p.token_create("read,orders", label="rw"))  # while running
        r = rw.order(1, [("A", 1)])
        ck.status(r, 201, "read,orders token: POST /v1/orders")
        if r.status == 201:
            oid = r.json["order_id"]
            ck.status(ro.get_order(oid), 200, "read token: GET order")
            ck.error(ro.pay(oid, "p-1"), 403, what="read token: pay")
            ck.error(ro.cancel(oid), 403, what="read token: cancel")
            ck.eq((c.get_order(oid).json or {}).get("status"), "pending_payment", "order untouched by 403s")
        ck.error(rw.get("/admin/cells"), 403, what="read,orders token: GET /admin/cells")
        ck.error(c.get("/v1/products/B"), 404, what="the read token created no product")


def test_admin_token_file_and_logs():
    with Platform(cells=2, log_level="debug") as p, Checks() as ck:
        path = os.path.join(p.data, "admin.token")
        st = os.stat(path)
        ck.eq(stat.S_IMODE(st.st_mode), 0o600, "mode of DIR/admin.token")
        tok = p.admin_token
        ck.true(len(tok) >= 16, "admin token is at least 16 characters: %d" % len(tok))
        ck.true("admin.token" in p.log_text(), "first start prints the admin token's path; log:\n%s" % p.log_tail(20))
        c = p.client()
        expect(c.create_product("A", stock=50), 201)
        other = p.token_create("read,orders", label="client")
        oc = p.client(other)
        for i in range(5):
            expect(oc.order(100 + i, [("A", 1)]), 201)
        oc.get("/v1/users/100/orders")
        p.client(token=None).get("/v1/products/A", headers={"Authorization": "Bearer " + tok[:-1] + "Z"})
        p.stop()
        p.start()
        ck.eq(open(path).read().strip(), tok, "admin.token unchanged by a restart")
        ck.status(p.client(tok).get("/v1/products/A"), 200, "the admin token works after a restart")
        ck.status(p.client(other).get("/v1/products/A"), 200, "a created token works after a restart")
        p.stop()
        logs = p.all_log_text()
        ck.true(len(logs) > 0, "the platform wrote some log")
        for name, t in (("admin token", tok), ("created token", other)):
            for piece in (t, t[-16:]):
                if piece in logs:
                    line = [ln for ln in logs.splitlines() if piece in ln][0]
                    ck.fail("the %s (or its last 16 bytes) appears in the logs: %s" % (name, line[:300]))
                    break
