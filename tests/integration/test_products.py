"""
test_products.py — API.md "Products (center)", line by line: create (201, 409 exists,
422 for every bad or missing field), get (200 shape, 404), restock (200, 404, 422).
"""

import json

from harness import Checks, Platform, expect, new_key, poll, wait_product

GOOD = {"sku": "SKU-1", "title": "Phone", "price_cents": 1999, "stock": 10, "category": "phones"}


def body(**over):
    b = dict(GOOD)
    for k, v in over.items():
        if v is DROP:
            b.pop(k, None)
        else:
            b[k] = v
    return b


DROP = object()


def test_create_and_get_product():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        r = c.post("/v1/products", body())
        ck.status(r, 201, "create")
        want = {"sku": "SKU-1", "title": "Phone", "price_cents": 1999, "category": "phones",
                "stock_total": 10, "stock_sold": 0, "stock_available": 10}
        ck.product(r, want, "create answer")
        r = c.get("/v1/products/SKU-1")
        ck.status(r, 200, "get")
        ck.product(r, want, "get")
        # A title of exactly 200 bytes in 100 two-byte characters, every sku character
        # class, the limits of price and stock: all accepted and read back exactly.
        edge = {"sku": "Az09_.-" + "x" * 57, "title": "\u00e9" * 100, "price_cents": 10 ** 12,
                "stock": 10 ** 12, "category": "c" * 64}
        r = c.post("/v1/products", edge)
        ck.status(r, 201, "create at every upper limit")
        r = c.get("/v1/products/" + edge["sku"])
        ck.status(r, 200, "get the limit product")
        ck.product(r, {"sku": edge["sku"], "title": edge["title"], "price_cents": 10 ** 12,
                       "category": edge["category"], "stock_total": 10 ** 12,
                       "stock_sold": 0, "stock_available": 10 ** 12}, "limit product")
        r = c.post("/v1/products", {"sku": "S", "title": "t", "price_cents": 1, "stock": 0,
                                    "category": ""})
        ck.status(r, 201, "create at every lower limit (1-char sku, price 1, stock 0, empty category)")
        r = c.get("/v1/products/S")
        ck.product(r, {"stock_total": 0, "stock_available": 0, "price_cents": 1}, "lower-limit product")


def test_create_existing_sku_is_409_and_changes_nothing():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.post("/v1/products", body()), 201, "create")
        r = c.post("/v1/products", body(title="Other", price_cents=5, stock=99))
        ck.error(r, 409, "exists", what="create the same sku again")
        r = c.get("/v1/products/SKU-1")
        ck.product(r, {"title": "Phone", "price_cents": 1999, "stock_total": 10},
                   "the original product is unchanged")


def test_create_product_invalid_fields_are_422():
    cases = [
        ("sku", body(sku="")),
        ("sku", body(sku="x" * 65)),
        ("sku", body(sku="has space")),
        ("sku", body(sku="a/b")),
        ("sku", body(sku="caf\u00e9")),
        ("sku", body(sku="semi;colon")),
        ("sku", body(sku=12)),
        ("title", body(title="t" * 201)),
        ("title", body(title="\u00e9" * 100 + "x")),  # 201 bytes, 101 characters
        ("title", body(title=5)),
        ("price_cents", body(price_cents=0)),
        ("price_cents", body(price_cents=10 ** 12 + 1)),
        ("price_cents", body(price_cents=-1)),
        ("price_cents", body(price_cents=1.5)),
        ("price_cents", body(price_cents="100")),
        ("stock", body(stock=-1)),
        ("stock", body(stock=10 ** 12 + 1)),
        ("stock", body(stock=2.5)),
        ("stock", body(stock="10")),
        ("category", body(category="c" * 65)),
        ("category", body(category=7)),
        ("sku", body(sku=DROP)),
        ("title", body(title=DROP)),
        ("price_cents", body(price_cents=DROP)),
        ("stock", body(stock=DROP)),
        ("category", body(category=DROP)),
    ]
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        for n, (field, b) in enumerate(cases):
            if field != "sku":
                b["sku"] = "BAD-%d" % n  # a sku of its own: a wrongly accepted body shows up below
            r = c.post("/v1/products", b)
            ck.error(r, 422, "invalid", field=field, what="bad %s %s" % (field, json.dumps(b)[:90]))
        # None of them created anything.
        for n, (field, b) in enumerate(cases):
            if field != "sku":
                ck.error(c.get("/v1/products/BAD-%d" % n), 404, what="product of rejected case %d (%s)" % (n, field))
        r = c.post("/v1/products", body())
        ck.status(r, 201, "the valid product after 26 rejected ones")
        r = c.get("/v1/products/" + "x" * 65)
        ck.true(r.status in (404, 422), "GET of an over-long sku: expected 404 or 422: %r" % r)


def test_get_unknown_product_is_404():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        ck.error(c.get("/v1/products/NOPE-" + new_key()[:8]), 404, what="unknown sku")


def test_restock():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.post("/v1/products", body(stock=1)), 201, "create")
        r = c.order(7, [("SKU-1", 1)])
        ck.status(r, 201, "sell the only unit")
        ck.error(c.order(8, [("SKU-1", 1)]), 409, "out_of_stock", what="sold out")
        r = c.post("/v1/products/SKU-1/restock", {"quantity": 5})
        ck.status(r, 200, "restock 5")
        if r.status == 200:
            ck.product(r, {"sku": "SKU-1", "stock_total": 6}, "restock answer")
        wait_product(c, "SKU-1", lambda j: j["stock_total"] == 6 and j["stock_sold"] == 1
                     and j["stock_available"] == 5, "stock_total 6, sold 1, available 5 after restock")
        # The restocked units sell (polled: a cell may cache "sold out" for a moment).
        sold = []

        def buy():
            r2 = c.order(9, [("SKU-1", 1)])
            if r2.status == 201:
                sold.append(r2)
                return True
            if r2.status != 409 or r2.error_code != "out_of_stock":
                ck.fail("ordering a restocked unit: %r" % r2)
                return True
            return False
        poll(buy, 5, "an order of a restocked unit to succeed")
        for u in range(4):
            ck.status(c.order(10 + u, [("SKU-1", 1)]), 201, "restocked unit %d" % (u + 2))
        ck.error(c.order(20, [("SKU-1", 1)]), 409, "out_of_stock", what="sold out again after 5 more")


def test_restock_errors():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.post("/v1/products", body(stock=3)), 201, "create")
        ck.error(c.post("/v1/products/NOPE-1/restock", {"quantity": 1}), 404, what="restock unknown sku")
        for q in (-1, 1.5, "2", None, 10 ** 12 + 1):
            ck.error(c.post("/v1/products/SKU-1/restock", {"quantity": q}), 422, "invalid",
                     field="quantity", what="restock quantity %r" % (q,))
        ck.error(c.post("/v1/products/SKU-1/restock", {}), 422, "invalid", field="quantity",
                 what="restock without quantity")
        # Restock may not push stock_total over 10^12.
        ck.error(c.post("/v1/products/SKU-1/restock", {"quantity": 10 ** 12}), 422, "invalid",
                 field="quantity", what="restock to 10^12 + 3 units")
        r = c.get("/v1/products/SKU-1")
        ck.product(r, {"stock_total": 3, "stock_available": 3}, "unchanged after rejected restocks")
