"""
test_stress_tag.py — full-link stress traffic (X-D11-Stress: 1): needs the `stress` scope;
is processed like real traffic but lands in the shadow tables, never in `orders`, and
does not move the real figures (stock_sold).
"""

import os

from harness import Checks, Platform, expect, new_key, wait_product

STRESS = {"X-D11-Stress": "1"}


def test_stress_needs_scope():
    p = Platform(cells=1)
    tok = p.token_create("read,orders", label="no-stress")
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        rw = p.client(tok)
        ck.error(rw.order(1, [("A", 1)], headers=STRESS), 403, what="X-D11-Stress: 1 without the stress scope")
        ck.status(rw.order(1, [("A", 1)]), 201, "the same token without the header")


def test_stress_orders_go_to_shadow_tables():
    p = Platform(cells=2)
    tok = p.token_create("read,orders,stress", label="stress")
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=10, price=700), 201)
        st = p.client(tok)
        skey = new_key("stress")
        r = st.order(5, [("A", 3)], skey, headers=STRESS)
        ck.status(r, 201, "stress order")
        ck.order(r, 5, [("A", 3, 700)], what="stress order")
        soid = r.json.get("order_id") if r.status == 201 and isinstance(r.json, dict) else None
        if soid:
            g = st.get_order(soid, headers=STRESS)
            ck.status(g, 200, "GET the stress order as stress traffic")
            ck.status(st.pay(soid, "stress-pay", headers=STRESS), 200, "pay the stress order")
        # The real figures: one real order of 1 after the stress order of 3. Once stock_sold
        # shows the real unit it must be exactly 1 (never 4): the stress units never count.
        rkey = new_key("real")
        expect(c.order(6, [("A", 1)], rkey), 201, "real order")
        prod = wait_product(c, "A", lambda j: j["stock_sold"] >= 1, "the real order in stock_sold")
        ck.eq((prod["stock_sold"], prod["stock_available"]), (1, 9),
              "stock_sold / stock_available count the real order only")
        # All 10 real units still sell to real traffic (the shadow stock is separate).
        ck.status(c.order(7, [("A", 9)]), 201, "the other 9 real units")
        lst = c.get("/v1/users/5/orders")
        ck.eq([o.get("order_id") for o in (lst.json or {}).get("orders", [])], [],
              "real traffic lists no orders for the stress-only user")
        p.stop()
        rows_real, rows_shadow = 0, 0
        for i, path in p.cell_dbs():
            n = os.path.basename(path)
            rows_real += p.query(n, "SELECT count(*) FROM orders WHERE idem_key = ?", (skey,))[0][0]
            rows_shadow += p.query(n, "SELECT count(*) FROM shadow_orders WHERE idem_key = ?", (skey,))[0][0]
            ck.eq(p.query(n, "SELECT count(*) FROM shadow_orders WHERE idem_key = ?", (rkey,))[0][0], 0,
                  "%s: the real order is not in shadow_orders" % n)
        ck.eq(rows_real, 0, "stress order rows in `orders`")
        ck.eq(rows_shadow, 1, "stress order rows in `shadow_orders`")
        real = sum(p.query(os.path.basename(path), "SELECT count(*) FROM orders WHERE idem_key = ?", (rkey,))[0][0]
                   for _, path in p.cell_dbs())
        ck.eq(real, 1, "real order rows in `orders`")
        a = p.audit()
        ck.eq(a.rc, 0, "d11 audit after stress + real traffic: %r" % a)
