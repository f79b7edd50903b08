"""
test_hot_sku.py — the flash sale: one SKU with limited stock, many concurrent buyers spread
over every cell. Exactly `stock` orders succeed (never oversell, never strand a unit in a
cell), the product reads sold == stock, cancelled units sell again, and the auditor and
the stored orders agree.
"""

from harness import (Checks, Ledger, OrderLoad, Platform, check_audit, db_holding,
                     db_no_duplicate_keys, db_stock_total, expect, heavy, pid_alive, poll,
                     spread_users, timeout, verify_acked_orders, wait_product)

STOCK = 300


def _sell_out(p, users, ledger, nthreads):
    load = OrderLoad(p.port, p.admin_token, users, [("HOT", 1)], nthreads=nthreads, oos_stop=3,
                     max_requests=STOCK * 3, deadline_s=90, ledger=ledger)
    load.start()
    return load.join(120)


@heavy
@timeout(240)
def test_hot_sku_sells_exactly_the_stock():
    cells = 3
    with Platform(cells=cells, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("HOT", stock=STOCK, price=9900), 201)
        users = spread_users(96)
        ledger = Ledger()
        ledger = _sell_out(p, users, ledger, nthreads=24)
        print("phase 1 answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        ck.eq(len(ledger.unanswered), 0, "orders left unanswered (5xx / connection errors after retries)")
        ck.eq(len(ledger.orders), STOCK, "201s for %d units of a hot SKU" % STOCK)
        seen = []
        try:
            prod = wait_product(c, "HOT", lambda j: (seen.append(j["stock_sold"]) or True)
                                and j["stock_sold"] == STOCK and j["stock_available"] == 0,
                                "GET product: stock_sold %d, stock_available 0" % STOCK, 10)
            ck.eq(prod["stock_total"], STOCK, "stock_total")
        except AssertionError as e:
            ck.fail(str(e))
        ck.true(max(seen or [0]) <= STOCK, "stock_sold read %d > stock %d" % (max(seen or [0]), STOCK))
        # Every cell sold something (the buyers were spread over all of them).
        per_cell = {}
        for oid, o in ledger.orders.items():
            cell = (o["user"] % 1024) * cells // 1024
            per_cell[cell] = per_cell.get(cell, 0) + 1
        print("orders per (default-routing) cell: %r" % per_cell)
        ck.eq(sorted(per_cell), list(range(cells)), "cells whose users bought")

        # Cancel 15 orders (users of every cell); exactly 15 more sell, no more.
        oids = sorted(ledger.orders)[:15]
        for oid in oids:
            r = c.cancel(oid)
            if ck.status(r, 200, "cancel %s" % oid):
                ledger.record_status(oid, "cancelled")
        try:
            wait_product(c, "HOT", lambda j: j["stock_sold"] == STOCK - 15 and j["stock_available"] == 15,
                         "15 cancelled units back in stock_available", 10)
        except AssertionError as e:
            ck.fail(str(e))
        ledger2 = Ledger()
        ledger2 = _sell_out(p, users, ledger2, nthreads=24)
        print("phase 2 answers: %r" % ledger2.counts)
        ck.true(not ledger2.errors, "unexpected answers (phase 2): %s" % ledger2.errors[:5])
        ck.eq(len(ledger2.orders), 15, "201s after cancelling 15 orders")
        try:
            wait_product(c, "HOT", lambda j: j["stock_sold"] == STOCK and j["stock_available"] == 0,
                         "sold out again: stock_sold %d" % STOCK, 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_stock_total(p, "HOT"), STOCK, "center.db products.stock_total")
        ck.eq(db_holding(p, "HOT"), STOCK, "units held by stored pending/paid orders")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(120)
def test_hot_sku_multi_item_orders_never_oversell():
    """Two hot SKUs bought together and alone, qty 1-3: all-or-nothing under contention."""
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("H1", stock=120, price=100), 201)
        expect(c.create_product("H2", stock=80, price=200), 201)
        users = spread_users(48, base=3)
        loads = [OrderLoad(p.port, p.admin_token, users[0::3], [("H1", 2), ("H2", 1)], nthreads=6,
                           oos_stop=3, max_requests=400, deadline_s=60),
                 OrderLoad(p.port, p.admin_token, users[1::3], [("H1", 3)], nthreads=5,
                           oos_stop=3, max_requests=400, deadline_s=60),
                 OrderLoad(p.port, p.admin_token, users[2::3], [("H2", 1)], nthreads=5,
                           oos_stop=3, max_requests=400, deadline_s=60)]
        for ld in loads:
            ld.start()
        ls = [ld.join(90) for ld in loads]
        sold1 = 2 * len(ls[0].orders) + 3 * len(ls[1].orders)
        sold2 = len(ls[0].orders) + len(ls[2].orders)
        print("H1 sold %d, H2 sold %d; answers %r" % (sold1, sold2, [ld.counts for ld in ls]))
        for ld in ls:
            ck.true(not ld.errors, "unexpected answers: %s" % ld.errors[:5])
        ck.true(sold1 <= 120, "H1 oversold: %d > 120" % sold1)
        ck.true(sold2 <= 80, "H2 oversold: %d > 80" % sold2)
        # Once every buyer has seen out_of_stock 3 times in a row, what is left cannot
        # be bought by any of the three order shapes: H2 (bought alone by 1) is gone, H1
        # (bought alone by 3) has fewer than 3 left.
        ck.eq(sold2, 80, "H2 units sold (the H2:1 buyers stop only when none is left)")
        ck.true(120 - sold1 < 3, "H1 has %d units left but the H1:3 buyers stopped" % (120 - sold1))
        try:
            wait_product(c, "H1", lambda j: j["stock_sold"] == sold1, "H1 stock_sold %d" % sold1, 10)
            wait_product(c, "H2", lambda j: j["stock_sold"] == sold2, "H2 stock_sold %d" % sold2, 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "H1"), sold1, "H1 units held by stored orders")
        ck.eq(db_holding(p, "H2"), sold2, "H2 units held by stored orders")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(180)
def test_hot_sku_tiny_allotments_sell_exactly():
    """--grant-chunk-max 3: cells run dry all the time, so grants, reclaims and the
    one-at-a-time end game at the center are exercised on every few orders."""
    stock = 500
    with Platform(cells=3, durability="sync", extra_args=["--grant-chunk-max", "3"]) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("T", stock=stock, price=100), 201)
        load = OrderLoad(p.port, p.admin_token, spread_users(64, base=11), [("T", 1)], nthreads=24,
                         oos_stop=3, max_requests=stock, deadline_s=120)
        ledger = load.start().join(150)
        print("answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        ck.eq(len(ledger.unanswered), 0, "orders left unanswered")
        ck.eq(len(ledger.orders), stock, "201s with grant chunks of 3")
        try:
            wait_product(c, "T", lambda j: j["stock_sold"] == stock, "stock_sold %d" % stock, 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "T"), stock, "units held by stored orders")
        check_audit(p, ck)


@heavy
@timeout(180)
def test_hot_sku_restock_during_the_sale():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("R", stock=200, price=100), 201)
        load = OrderLoad(p.port, p.admin_token, spread_users(48, base=13), [("R", 1)], nthreads=16,
                         max_requests=2000, deadline_s=120).start()
        restocked = 0
        for _ in range(5):
            poll(lambda: load.ledger.acked() >= 150 + restocked, 30, "sales to reach %d" % (150 + restocked), 0.005)
            r = c.post("/v1/products/R/restock", {"quantity": 60})
            if ck.status(r, 200, "restock 60 during the sale"):
                restocked += 60
        load.oos_stop = 3  # now sell out: every buyer stops after 3 out_of_stock in a row
        ledger = load.join(120)
        print("restocked %d; answers %r" % (restocked, ledger.counts))
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        ck.eq(len(ledger.unanswered), 0, "orders left unanswered")
        ck.eq(len(ledger.orders), 200 + restocked, "201s for 200 units + %d restocked" % restocked)
        try:
            wait_product(c, "R", lambda j: j["stock_total"] == 200 + restocked and j["stock_available"] == 0,
                         "stock_total %d, all sold" % (200 + restocked), 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "R"), 200 + restocked, "units held by stored orders")
        check_audit(p, ck)


@heavy
@timeout(180)
def test_hot_sku_real_and_stress_traffic_together():
    """Stress traffic on the same SKU at the same time never takes a real unit."""
    stock = 200
    p = Platform(cells=2, durability="sync")
    stress_tok = p.token_create("read,orders,stress", label="stress")
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("M", stock=stock, price=100), 201)
        users = spread_users(64, base=17)
        real = OrderLoad(p.port, p.admin_token, users[0::2], [("M", 1)], nthreads=12, oos_stop=3,
                         max_requests=1000, deadline_s=90)
        stress = OrderLoad(p.port, stress_tok, users[1::2], [("M", 1)], nthreads=12, oos_stop=3,
                           max_requests=1000, deadline_s=90, headers={"X-D11-Stress": "1"})
        real.start()
        stress.start()
        lr, ls = real.join(120), stress.join(120)
        print("real %r; stress %r" % (lr.counts, ls.counts))
        ck.true(not lr.errors and not ls.errors, "unexpected answers: %s %s" % (lr.errors[:3], ls.errors[:3]))
        ck.eq(len(lr.orders), stock, "real 201s")
        ck.true(len(ls.orders) <= stock, "stress orders %d > stock %d" % (len(ls.orders), stock))
        try:
            wait_product(c, "M", lambda j: j["stock_sold"] == stock, "real stock_sold %d" % stock, 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "M"), stock, "units held by real stored orders")
        ck.eq(db_holding(p, "M", "shadow_orders"), len(ls.orders), "units held by shadow orders")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(180)
def test_hot_sku_cells_killed_during_the_sale():
    """kill -9 of one cell, then the other, while buyers of every cell buy: never oversold,
    no acknowledged order lost, and once all cells are back every unit can be sold."""
    stock = 400
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("K", stock=stock, price=100), 201)
        users = spread_users(64, base=19)
        load = OrderLoad(p.port, p.admin_token, users, [("K", 1)], nthreads=16, cancel_every=10,
                         max_requests=3000, deadline_s=120).start()
        for n, name in enumerate(("cell-0", "cell-1", "cell-0")):
            poll(lambda: load.ledger.acked() >= 80 * (n + 1), 30, "%d sales" % (80 * (n + 1)), 0.005)
            old = p.kill9(name)
            poll(lambda: (lambda x: x and x != old and pid_alive(x))(p.pids().get(name)), 30,
                 "the supervisor to restart %s" % name)
        load.oos_stop = 3
        ledger = load.join(150)
        print("answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        verify_acked_orders(p, ledger, ck)
        # Creates that got a 5xx: replaying the key either finds the order or (sold out) not.
        for user, key, items in list(ledger.unanswered):
            r = c.order(user, items, key)
            if r.status in (200, 201):
                ledger.record_create(user, key, r, items)
            elif not (r.status == 409 and r.error_code == "out_of_stock"):
                ck.fail("replay of an unanswered create: %r" % r)
        p.stop()
        ck.eq(db_holding(p, "K"), stock, "units held by stored orders")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)
