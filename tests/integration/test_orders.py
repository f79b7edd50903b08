"""
test_orders.py — API.md "Orders (cells)", line by line: create (exact shape, validation of
every field, idempotency, out_of_stock all-or-nothing, unknown_sku), get, list with
paging, pay, cancel (stock returns and sells again), the state machine's 409s and expiry
after the order TTL.
"""

import json

from harness import (MAX_U63, Checks, Platform, expect, new_key, poll, raw_http,
                     wait_product)

TTL_MS = 600000


def setup_products(c, *specs):
    """specs: (sku, stock, price)."""
    for sku, stock, price in specs:
        expect(c.create_product(sku, stock=stock, price=price), 201, "create " + sku)


def test_order_create_shape():
    with Platform(cells=2, order_ttl_ms=TTL_MS) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 100, 1999), ("B", 100, 250))
        r = c.order(42, [("A", 2), ("B", 3)], new_key())
        ck.status(r, 201, "create")
        ck.order(r, 42, [("A", 2, 1999), ("B", 3, 250)], "pending_payment", TTL_MS, "create answer")
        ck.true(r.headers.get("content-type", "").startswith("application/json"),
                "Content-Type of an order: %r" % r.headers.get("content-type"))
        if r.status == 201:
            oid = r.json["order_id"]
            g = c.get_order(oid)
            ck.status(g, 200, "GET the order")
            ck.order(g, 42, [("A", 2, 1999), ("B", 3, 250)], "pending_payment", TTL_MS, "GET answer")
            ck.eq(g.json and g.json.get("order_id"), oid, "GET order_id")
            ck.eq(g.json and g.json.get("created_at"), r.json["created_at"], "created_at read back")
            ck.eq(g.json and g.json.get("expires_at"), r.json["expires_at"], "expires_at read back")
        wait_product(c, "A", lambda j: j["stock_sold"] == 2 and j["stock_available"] == 98,
                     "product A stock_sold 2 / available 98 after the order")


def test_order_user_id_range():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 1000, 100))
        r = c.order(MAX_U63, [("A", 1)])
        ck.status(r, 201, "user_id 2^63-1")
        ck.true(b'"user_id":9223372036854775807' in r.body.replace(b" ", b""),
                "user_id 2^63-1 must be written as the exact integer: %r" % r)
        ck.order(r, MAX_U63, [("A", 1, 100)], what="user_id 2^63-1")
        if r.status == 201:
            g = c.get_order(r.json["order_id"])
            ck.order(g, MAX_U63, [("A", 1, 100)], what="GET of the 2^63-1 user's order")
            lst = c.get("/v1/users/%d/orders" % MAX_U63)
            ck.status(lst, 200, "list of user 2^63-1")
            ids = [o.get("order_id") for o in (lst.json or {}).get("orders", [])]
            ck.eq(ids, [r.json["order_id"]], "orders of user 2^63-1")
        r = c.order(1, [("A", 1)])
        ck.status(r, 201, "user_id 1")
        for bad in ("9223372036854775808", "18446744073709551616", "0", "-1", "1.5", '"1"',
                    "null", "true", "[1]"):
            raw = '{"user_id": %s, "items": [{"sku": "A", "quantity": 1}]}' % bad
            r = c.post("/v1/orders", raw, headers={"Idempotency-Key": new_key()})
            ck.error(r, 422, "invalid", field="user_id", what="user_id %s" % bad)
        r = c.post("/v1/orders", {"items": [{"sku": "A", "quantity": 1}]},
                   headers={"Idempotency-Key": new_key()})
        ck.error(r, 422, "invalid", field="user_id", what="user_id missing")
        wait_product(c, "A", lambda j: j["stock_sold"] == 2, "stock_sold 2 (only the 2 valid orders)")


def test_order_items_validation():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        skus = ["S%02d" % i for i in range(17)]
        setup_products(c, *[(s, 5000, 10) for s in skus])
        cases = [
            ("items", []),
            ("items", [{"sku": s, "quantity": 1} for s in skus]),  # 17 items
            ("quantity", [{"sku": "S00", "quantity": 0}]),
            ("quantity", [{"sku": "S00", "quantity": 1001}]),
            ("quantity", [{"sku": "S00", "quantity": -1}]),
            ("quantity", [{"sku": "S00", "quantity": 1.5}]),
            ("quantity", [{"sku": "S00", "quantity": "1"}]),
            ("quantity", [{"sku": "S00"}]),
            ("sku", [{"quantity": 1}]),
            ("sku", [{"sku": "bad sku", "quantity": 1}]),
            ("sku", [{"sku": "", "quantity": 1}]),
            ("sku", [{"sku": "S00", "quantity": 1}, {"sku": "S01", "quantity": 1},
                     {"sku": "S00", "quantity": 2}]),  # a SKU twice
            ("items", "S00"),
            ("items", None),
        ]
        for field, items in cases:
            r = c.post("/v1/orders", {"user_id": 5, "items": items}, headers={"Idempotency-Key": new_key()})
            ck.error(r, 422, "invalid", field=field, what="items %s" % json.dumps(items)[:80])
        r = c.post("/v1/orders", {"user_id": 5}, headers={"Idempotency-Key": new_key()})
        ck.error(r, 422, "invalid", field="items", what="items missing")
        # The limits themselves are accepted: 16 items, quantity 1000.
        r = c.order(5, [(s, 1) for s in skus[:16]])
        ck.status(r, 201, "16 items")
        r = c.order(5, [("S16", 1000)])
        ck.status(r, 201, "quantity 1000")
        wait_product(c, "S16", lambda j: j["stock_sold"] == 1000, "S16 stock_sold 1000")
        wait_product(c, "S00", lambda j: j["stock_sold"] == 1, "S00 stock_sold 1 (rejected orders reserved nothing)")


def test_idempotency_key_required_and_bounded():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 100, 100))
        b = {"user_id": 3, "items": [{"sku": "A", "quantity": 1}]}
        ck.error(c.post("/v1/orders", b), 422, "invalid", field="idempotency", what="no Idempotency-Key")
        ck.error(c.post("/v1/orders", b, headers={"Idempotency-Key": ""}), 422, "invalid",
                 field="idempotency", what="empty Idempotency-Key")
        ck.error(c.post("/v1/orders", b, headers={"Idempotency-Key": "k" * 129}), 422, "invalid",
                 field="idempotency", what="129-byte Idempotency-Key")
        # A control byte in the key (http.client refuses to send it, so raw bytes).
        req = ("POST /v1/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nIdempotency-Key: ab\x01cd\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n%s" % (p.admin_token, len(json.dumps(b)), json.dumps(b)))
        r = raw_http(p.port, req.encode("latin-1"))
        ck.true(r is not None and r.status in (400, 422),
                "Idempotency-Key with a control byte: expected 400 or 422, got %r" % r)
        made = 0
        for key, what in (("K" * 128, "128-byte Idempotency-Key"),
                          ("~!@#$%^&*()_+{}|:<>?`-=[];',./\"\\", "Idempotency-Key of ASCII punctuation"),
                          ("with space", "Idempotency-Key with a space (0x20 is printable ASCII)")):
            r = c.post("/v1/orders", b, headers={"Idempotency-Key": key})
            made += r.status == 201
            ck.status(r, 201, what)
        wait_product(c, "A", lambda j: j["stock_sold"] == made,
                     "stock_sold %d (only the orders that got a 201)" % made)


def test_idempotent_replay_and_mismatch():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 100, 100), ("B", 100, 100))
        key = new_key()
        r1 = c.order(11, [("A", 2)], key)
        expect(r1, 201, "first create")
        oid = r1.json["order_id"]
        for i in range(3):
            r = c.order(11, [("A", 2)], key)
            ck.status(r, (200, 201), "replay %d of the same key and body" % (i + 1))
            ck.eq(r.json and r.json.get("order_id"), oid, "replay %d order_id" % (i + 1))
            ck.order(r, 11, [("A", 2, 100)], what="replay %d" % (i + 1))
        ck.error(c.order(11, [("A", 3)], key), 409, "idempotency_mismatch", what="same key, other quantity")
        ck.error(c.order(11, [("B", 2)], key), 409, "idempotency_mismatch", what="same key, other sku")
        ck.error(c.order(11, [("A", 2), ("B", 1)], key), 409, "idempotency_mismatch",
                 what="same key, extra item")
        # The key belongs to the user: another user with the same key gets their own order.
        r2 = c.order(12, [("A", 2)], key)
        ck.status(r2, 201, "same key, another user")
        ck.true(r2.status != 201 or r2.json.get("order_id") != oid,
                "another user's order with the same key must be a new order: %r" % r2)
        # Replay after the order moved on (paid): still the same order, never a new one.
        expect(c.pay(oid, "pay-1"), 200, "pay")
        r = c.order(11, [("A", 2)], key)
        ck.status(r, (200, 201), "replay after pay")
        ck.eq(r.json and r.json.get("order_id"), oid, "replay after pay: order_id")
        lst = c.get("/v1/users/11/orders").json or {}
        ck.eq(len(lst.get("orders", [])), 1, "user 11 has exactly one order")
        wait_product(c, "A", lambda j: j["stock_sold"] == 4, "A stock_sold 4 (2 orders of 2)")
        wait_product(c, "B", lambda j: j["stock_sold"] == 0, "B stock_sold 0")


def test_out_of_stock_reserves_nothing():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 5, 100), ("B", 1, 100))
        r = c.order(21, [("A", 2), ("B", 2)])
        ck.error(r, 409, "out_of_stock", what="A:2 + B:2 with B holding 1")
        r = c.order(21, [("B", 1), ("A", 6)])
        ck.error(r, 409, "out_of_stock", what="B:1 + A:6 with A holding 5")
        # Nothing was reserved: all 5 of A and the 1 of B still sell, in one order.
        r = c.order(22, [("A", 5), ("B", 1)])
        ck.status(r, 201, "A:5 + B:1 after the rejected orders")
        ck.error(c.order(23, [("A", 1)]), 409, "out_of_stock", what="A sold out")
        wait_product(c, "A", lambda j: j["stock_sold"] == 5 and j["stock_available"] == 0, "A sold 5")
        wait_product(c, "B", lambda j: j["stock_sold"] == 1 and j["stock_available"] == 0, "B sold 1")


def test_unknown_sku_reserves_nothing():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 3, 100))
        ck.error(c.order(31, [("NOPE", 1)]), 404, "unknown_sku", what="unknown sku")
        ck.error(c.order(31, [("A", 1), ("NOPE", 1)]), 404, "unknown_sku", what="known + unknown sku")
        ck.status(c.order(32, [("A", 3)]), 201, "all 3 of A still sell")


def test_get_order_404():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 3, 100))
        r = expect(c.order(41, [("A", 1)]), 201)
        oid = r["order_id"]
        for bad in ("123456789", "999999999999999999", "abc", oid + "0"):
            ck.error(c.get_order(bad), 404, what="GET order %s" % bad)
            ck.error(c.pay(bad, "p"), 404, what="pay order %s" % bad)
            ck.error(c.cancel(bad), 404, what="cancel order %s" % bad)
        ck.status(c.get_order(oid), 200, "the real order")


def test_list_user_orders_paging():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 100, 100))
        made = []
        for i in range(5):
            made.append(expect(c.order(77, [("A", 1)]), 201, "order %d" % i)["order_id"])
        expect(c.order(78, [("A", 1)]), 201, "another user's order")
        newest_first = list(reversed(made))
        r = c.get("/v1/users/77/orders")
        ck.status(r, 200, "list")
        j = r.json or {}
        ck.eq([o.get("order_id") for o in j.get("orders", [])], newest_first, "all orders newest first")
        ck.true("next" in j, "list body has a 'next' field: %r" % r)
        for o in j.get("orders", []):
            ck.order(_Wrap(o), 77, [("A", 1, 100)], what="listed order")
        # Paging by 2 with before=next.
        got, before, pages = [], None, 0
        while pages < 6:
            path = "/v1/users/77/orders?limit=2" + ("&before=%s" % before if before else "")
            r = c.get(path)
            if not ck.status(r, 200, path):
                break
            j = r.json or {}
            page = [o.get("order_id") for o in j.get("orders", [])]
            ck.true(len(page) <= 2, "limit=2 returned %d orders: %r" % (len(page), r))
            got += page
            pages += 1
            before = j.get("next")
            if not before or not page:
                break
        ck.eq(got, newest_first, "orders collected by paging limit=2")
        ck.true(pages <= 4, "paging 5 orders by 2 took %d pages" % pages)
        # before = the 2nd newest: everything older than it.
        r = c.get("/v1/users/77/orders?before=%s" % newest_first[1])
        ck.eq([o.get("order_id") for o in (r.json or {}).get("orders", [])], newest_first[2:],
              "before=<2nd newest>")
        r = c.get("/v1/users/79/orders")
        ck.status(r, 200, "user without orders")
        ck.eq((r.json or {}).get("orders"), [], "orders of a user without orders")
        for q in ("limit=0", "limit=-1", "limit=abc", "limit=201", "before=abc", "limit="):
            ck.error(c.get("/v1/users/77/orders?" + q), 422, "invalid", what="list ?" + q)
        for u in ("0", "abc", "9223372036854775808", "-5"):
            ck.error(c.get("/v1/users/%s/orders" % u), 422, "invalid", what="list of user %s" % u)
        r = c.get("/v1/users/77/orders?limit=200")
        ck.status(r, 200, "limit=200 (the maximum)")


class _Wrap:
    """Lets Checks.order look at an order nested in a list."""

    def __init__(self, o):
        self.json = o
        self.status = 200

    def __repr__(self):
        return json.dumps(self.json)


def test_pay():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 10, 300))
        oid = expect(c.order(51, [("A", 2)]), 201)["order_id"]
        r = c.pay(oid, "pay-123")
        ck.status(r, 200, "pay")
        ck.order(r, 51, [("A", 2, 300)], "paid", what="pay answer")
        r = c.pay(oid, "pay-123")
        ck.status(r, 200, "pay again with the same payment_id")
        ck.order(r, 51, [("A", 2, 300)], "paid", what="repeated pay answer")
        ck.error(c.pay(oid, "pay-456"), 409, "not_payable", what="pay with another payment_id")
        ck.eq((c.get_order(oid).json or {}).get("status"), "paid", "status after pay")
        ck.error(c.cancel(oid), 409, "not_cancellable", what="cancel a paid order")
        ck.eq((c.get_order(oid).json or {}).get("status"), "paid", "status after refused cancel")
        oid2 = expect(c.order(51, [("A", 1)]), 201)["order_id"]
        for b in ({}, {"payment_id": ""}, {"payment_id": 5}, {"payment_id": "p" * 129}):
            ck.error(c.post("/v1/orders/%s/pay" % oid2, b), 422, "invalid", field="payment_id",
                     what="pay body %s" % json.dumps(b)[:60])
        ck.eq((c.get_order(oid2).json or {}).get("status"), "pending_payment", "status after bad pays")
        wait_product(c, "A", lambda j: j["stock_sold"] == 3, "stock_sold 3 (paid orders keep their stock)")


def test_cancel_returns_stock():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 1, 500))
        oid = expect(c.order(61, [("A", 1)]), 201)["order_id"]
        ck.error(c.order(62, [("A", 1)]), 409, "out_of_stock", what="sold out")
        r = c.cancel(oid)
        ck.status(r, 200, "cancel")
        ck.order(r, 61, [("A", 1, 500)], "cancelled", what="cancel answer")
        ck.eq((c.get_order(oid).json or {}).get("status"), "cancelled", "status after cancel")
        ck.error(c.pay(oid, "pay-1"), 409, "not_payable", what="pay a cancelled order")
        ck.eq((c.get_order(oid).json or {}).get("status"), "cancelled", "status after refused pay")
        wait_product(c, "A", lambda j: j["stock_sold"] == 0 and j["stock_available"] == 1,
                     "the cancelled unit back in stock_available")
        # The returned unit sells again (to a user of the other cell too, polled: the unit
        # may have to travel back through the center).
        got = []

        def buy():
            r2 = c.order(62 + 512, [("A", 1)])
            if r2.status == 201:
                got.append(r2.json["order_id"])
                return True
            if r2.status == 409 and r2.error_code == "out_of_stock":
                return False
            ck.fail("ordering the returned unit: %r" % r2)
            return True
        poll(buy, 10, "the returned unit to sell again")
        ck.error(c.order(63, [("A", 1)]), 409, "out_of_stock", what="sold out again")
        wait_product(c, "A", lambda j: j["stock_sold"] == 1 and j["stock_available"] == 0, "sold 1 again")


def test_order_expires_and_stock_returns():
    ttl = 1500
    with Platform(cells=2, order_ttl_ms=ttl) as p, Checks() as ck:
        c = p.client()
        setup_products(c, ("A", 2, 100))
        r = c.order(71, [("A", 2)])
        expect(r, 201)
        ck.order(r, 71, [("A", 2, 100)], ttl_ms=ttl, what="short-TTL order")
        oid = r.json["order_id"]
        ck.error(c.order(72, [("A", 1)]), 409, "out_of_stock", what="sold out while the order is pending")
        st = poll(lambda: (c.get_order(oid).json or {}).get("status") == "expired" and "expired",
                  15, "order %s to become expired (TTL %d ms)" % (oid, ttl), 0.1)
        ck.eq(st, "expired", "status after the TTL")
        ck.error(c.pay(oid, "late"), 409, "not_payable", what="pay an expired order")
        ck.error(c.cancel(oid), 409, "not_cancellable", what="cancel an expired order")
        wait_product(c, "A", lambda j: j["stock_sold"] == 0 and j["stock_available"] == 2,
                     "expired order's stock back", 15)
        # The returned units sell again; a paid order never expires.
        oid2 = poll(lambda: (lambda r2: r2.json["order_id"] if r2.status == 201 else None)(c.order(73, [("A", 1)])),
                    10, "a returned unit to sell")
        ck.status(c.pay(oid2, "pay-73"), 200, "pay before the TTL")
        oid3 = expect(c.order(73, [("A", 1)]), 201, "the second returned unit")["order_id"]
        poll(lambda: (c.get_order(oid3).json or {}).get("status") == "expired", 15,
             "the unpaid order %s to expire" % oid3, 0.1)
        ck.eq((c.get_order(oid2).json or {}).get("status"), "paid",
              "a paid order stays paid after its expires_at")
        wait_product(c, "A", lambda j: j["stock_sold"] == 1, "stock_sold 1 (the paid order)", 15)
