"""
test_catalog.py — GET /v1/products (issue 12, part 4): the catalog listing served by the
center (wire PRODUCT_LIST) through the gateway's per-thread page cache:

  - pages of `limit` in SKU order, `next_after` as the cursor: walking the pages returns
    every product exactly once; the last page has next_after null;
  - category filter (exact), q (title substring, case-insensitive, '+' and %20 as space),
    both together, and a query that matches nothing;
  - 422 invalid for a bad limit, a bad cursor, an over-long q; the read scope is needed;
  - the cache: the same query on the same connection within D11_GW_CATALOG_CACHE_MS is
    answered from the gateway (a restock in between does not show), and the new stock
    shows once the page expires;
  - `d11 ctl products list` prints a table and follows the cursor with --all.
"""

import json
import time

from harness import Checks, Platform, poll, run_cli, scaled, timeout


def _page(c, q):
    r = c.get("/v1/products" + q)
    return r


@timeout(60)
def test_list_pages_filters_and_errors():
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        skus = []
        for i in range(23):
            cat = "shoes" if i % 2 == 0 else "hats"
            title = ("Red Running Shoe %d" % i) if cat == "shoes" else ("Woolly Hat %d" % i)
            sku = "CAT-%03d" % (22 - i)  # created in reverse SKU order
            ck.status(c.create_product(sku, stock=10 + i, title=title, category=cat), 201, "create %s" % sku)
            skus.append(sku)
        seen, after, pages = [], None, 0
        while True:
            r = _page(c, "?limit=5" + ("&after=" + after if after else ""))
            ck.status(r, 200, "page")
            j = r.json
            ck.true(set(j.keys()) == {"items", "next_after"}, "page keys: %r" % j.keys())
            ck.true(len(j["items"]) <= 5, "at most limit items")
            for it in j["items"]:
                ck.true(set(it.keys()) >= {"sku", "title", "category", "price_cents", "stock_total",
                                           "stock_sold", "stock_available"}, "product fields: %r" % it)
            seen += [it["sku"] for it in j["items"]]
            pages += 1
            after = j["next_after"]
            if after is None or pages > 10:
                break
        ck.eq(seen, sorted(skus), "every product once, SKUs ascending")
        ck.eq(pages, 5, "23 products in pages of 5")
        shoes = _page(c, "?category=shoes&limit=200").json["items"]
        ck.eq(sorted(x["sku"] for x in shoes), sorted(s for i, s in enumerate(skus) if i % 2 == 0), "category")
        ck.true(all(x["category"] == "shoes" for x in shoes), "only shoes")
        q = _page(c, "?q=running+shoe%201&limit=200").json["items"]
        ck.eq(sorted(x["title"] for x in q),
              sorted(t for t in ("Red Running Shoe %d" % i for i in range(0, 23, 2)) if "running shoe 1" in t.lower()),
              "q: case-insensitive substring")
        ck.eq(_page(c, "?q=WOOLLY&category=shoes").json, {"items": [], "next_after": None}, "nothing matches")
        ck.eq(len(_page(c, "?q=woolly&category=hats&limit=200").json["items"]), 11, "both filters")
        ck.eq(_page(c, "").json["next_after"], None, "default limit 50 > 23")
        ck.error(_page(c, "?limit=0"), 422, "invalid", what="limit 0")
        ck.error(_page(c, "?limit=201"), 422, "invalid", what="limit 201")
        ck.error(_page(c, "?after=bad%20sku"), 422, "invalid", what="bad cursor")
        ck.error(_page(c, "?q=" + "x" * 101), 422, "invalid", what="q too long")
        ck.error(p.client(token=None).get("/v1/products"), 401, "unauthorized", what="no token")
        # ctl products list: a table, and --all follows the cursor
        env = {"D11_URL": "http://127.0.0.1:%d" % p.port, "D11_DATA": p.data}
        cp = run_cli(["ctl", "products", "list", "--limit", "4", "--all"], env=env)
        rows = cp.stdout.splitlines()
        ck.true(cp.returncode == 0 and rows[0].split()[0] == "SKU" and len(rows) == 24,
                "ctl products list --all: %r %r" % (cp.stdout, cp.stderr))
        cp = run_cli(["ctl", "--json", "products", "list", "--category", "hats", "--q", "woolly hat 1"], env=env)
        j = json.loads(cp.stdout)
        ck.eq(sorted(x["title"] for x in j["items"]),
              sorted(t for t in ("Woolly Hat %d" % i for i in range(1, 23, 2)) if "woolly hat 1" in t.lower()),
              "ctl --json with filters")
        p.stop()


@timeout(60)
def test_pages_are_cached_for_a_second():
    with Checks() as ck, Platform(cells=2, threads=1) as p:
        c = p.client()
        ck.status(c.create_product("CACHE-1", stock=5, category="cache"), 201, "create")
        t0 = time.monotonic()
        a = _page(c, "?category=cache")
        ck.status(c.post("/v1/products/CACHE-1/restock", {"quantity": 7}), 200, "restock")
        b = _page(c, "?category=cache")
        if time.monotonic() - t0 < 0.5:
            ck.eq(b.json, a.json, "the same query within the TTL is served from the cache")
            ck.eq(b.json["items"][0]["stock_total"], 5, "cached page shows the old stock")
        fresh = poll(lambda: (lambda r: r if r.json["items"][0]["stock_total"] == 12 else None)(
            _page(c, "?category=cache")), scaled(5), "the new stock shows once the page expired")
        ck.eq(fresh.json["items"][0]["stock_total"], 12, "fresh page")
        ck.eq(c.get("/v1/products/CACHE-1").json["stock_total"], 12, "single product never cached")
        p.stop()
