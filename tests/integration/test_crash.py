"""
test_crash.py — kill -9 of the whole platform (up first, then every child, by their PID
files) while clients place, pay and cancel orders. The invariants must hold on the
crashed data as it lies on disk (d11 audit before any restart) and after a restart:
every acknowledged order is there with its last acknowledged status, one idempotency
key never yields two orders, sold <= stock.
"""

import os
import random

from harness import (Checks, OrderLoad, Platform, check_audit, db_holding,
                     db_no_duplicate_keys, db_stock_total, expect, heavy, poll, spread_users,
                     timeout, verify_acked_orders, verify_idempotent_replay, wait_product,
                     pid_alive)

STOCK = 1000


def _crash_round(p, ck, users, round_no, rng):
    load = OrderLoad(p.port, p.admin_token, users, [("C", 1)], nthreads=16, pay_every=3,
                     cancel_every=4, max_requests=3000, deadline_s=60, oos_stop=3).start()
    at = rng.randint(20, 150)
    poll(lambda: load.ledger.acked() >= at, 40, "%d acknowledged orders before the crash" % at, 0.002)
    p.kill9_all()
    ledger = load.stop()
    print("round %d: acked %d; answers %r" % (round_no, len(ledger.orders), ledger.counts))
    ck.true(not ledger.errors, "round %d: unexpected answers: %s" % (round_no, ledger.errors[:5]))
    return ledger


@heavy
@timeout(240)
def test_kill9_everything_loses_no_acked_order():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("C", stock=STOCK, price=100), 201)
        users = spread_users(64, base=9)
        seed = int(os.environ.get("D11_TEST_SEED") or random.randrange(1 << 30))
        print("D11_TEST_SEED=%d" % seed)
        rng = random.Random(seed)
        ledgers = []
        for rnd in (1, 2, 3, 4):
            ledger = _crash_round(p, ck, users, rnd, rng)
            ledgers.append(ledger)
            # The data as the crash left it: the auditor must find every invariant true.
            check_audit(p, ck, "d11 audit on the crashed data (round %d, before restart)" % rnd)
            ck.true(db_holding(p, "C") <= STOCK, "round %d: held %d > stock %d on the crashed data"
                    % (rnd, db_holding(p, "C"), STOCK))
            p.start()
            for lg in ledgers:  # this round's orders and every earlier round's
                verify_acked_orders(p, lg, ck)
            verify_idempotent_replay(p, ledger, ck)
            # Creates that got no answer: the same key now returns at most one order.
            c = p.client()
            for user, key, items in ledger.unanswered[:50]:
                r1 = c.order(user, items, key)
                r2 = c.order(user, items, key)
                if r1.status in (200, 201) or r2.status in (200, 201):
                    ck.true(r1.status in (200, 201) and r2.status in (200, 201)
                            and r1.json.get("order_id") == r2.json.get("order_id"),
                            "unanswered key %s replayed twice gave %r and %r" % (key, r1, r2))
                elif not (r1.status == 409 and r1.error_code == "out_of_stock"):
                    ck.fail("replay of an unanswered create: %r" % r1)
        # After both crashes (no traffic now): the product converges to what the stored
        # orders hold, nothing oversold.
        c = p.client()
        held = db_holding(p, "C")
        ck.true(held <= STOCK, "orders hold %d units of C, stock is %d" % (held, STOCK))
        try:
            wait_product(c, "C", lambda j: j["stock_sold"] == held and j["stock_total"] == STOCK,
                         "GET product C: stock_sold == %d units held by stored orders" % held, 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "C"), held, "units held after the clean stop")
        ck.eq(db_stock_total(p, "C"), STOCK, "stock_total after the crashes")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck, "d11 audit after the crashes and a clean stop")


@heavy
@timeout(120)
def test_kill9_sold_out_then_restart_sells_nothing_more():
    """Crash right at sell-out: after the restart nothing more is sold, the held units match."""
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("S", stock=100, price=100), 201)
        users = spread_users(32, base=5)
        load = OrderLoad(p.port, p.admin_token, users, [("S", 1)], nthreads=16, oos_stop=2,
                         max_requests=500, deadline_s=60).start()
        poll(lambda: load.ledger.acked() >= 95, 40, "95 of 100 units sold", 0.005)
        p.kill9_all()
        ledger = load.stop()
        ck.true(len(ledger.orders) <= 100, "acknowledged %d orders for 100 units" % len(ledger.orders))
        check_audit(p, ck, "d11 audit on the crashed data")
        p.start()
        verify_acked_orders(p, ledger, ck)
        load2 = OrderLoad(p.port, p.admin_token, users, [("S", 1)], nthreads=8, oos_stop=3,
                          max_requests=300, deadline_s=60, ledger=ledger).start()
        ledger = load2.join(90)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        # Creates whose answer the crash swallowed may have been committed: their keys now
        # return them (sold out, so a replay cannot make a new one).
        c = p.client()
        for user, key, items in list(ledger.unanswered):
            r = c.order(user, items, key)
            if r.status in (200, 201):
                ledger.record_create(user, key, r, items)
            elif not (r.status == 409 and r.error_code == "out_of_stock"):
                ck.fail("replay of an unanswered create after sell-out: %r" % r)
        ck.eq(len(ledger.orders), 100, "orders over both runs (acknowledged + found by replaying"
              " unanswered keys) for 100 units")
        p.stop()
        ck.eq(db_holding(p, "S"), 100, "units held by stored orders")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(180)
def test_kill9_during_tiny_allotment_sale():
    """Grant chunks of 2 over 3 cells: grants, returns and reclaims are in flight all the
    time, so a kill -9 lands in the middle of them. Stock conservation must hold on the
    crashed data, and after the restarts the SKU still sells out to exactly its stock."""
    stock = 300
    with Platform(cells=3, durability="sync", extra_args=["--grant-chunk-max", "2"]) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("G", stock=stock, price=100), 201)
        users = spread_users(48, base=23)
        seed = int(os.environ.get("D11_TEST_SEED") or random.randrange(1 << 30))
        print("D11_TEST_SEED=%d" % seed)
        rng = random.Random(seed)
        ledgers = []
        for rnd in range(3):
            load = OrderLoad(p.port, p.admin_token, users, [("G", 1)], nthreads=16, cancel_every=5,
                             max_requests=2000, deadline_s=60, oos_stop=3).start()
            at = rng.randint(10, 60)
            poll(lambda: load.ledger.acked() >= at, 40, "%d sales before the crash" % at, 0.002)
            p.kill9_all()
            ledgers.append(load.stop())
            check_audit(p, ck, "d11 audit on the crashed data, round %d" % rnd)
            p.start()
            c = p.client()
        for lg in ledgers:
            verify_acked_orders(p, lg, ck)
        # Sell out what is left; exactly the stock ends up held.
        load = OrderLoad(p.port, p.admin_token, users, [("G", 1)], nthreads=16, oos_stop=3,
                         max_requests=2000, deadline_s=90).start()
        last = load.join(120)
        ck.true(not last.errors, "unexpected answers: %s" % last.errors[:5])
        p.stop()
        ck.eq(db_holding(p, "G"), stock, "units held by stored orders after selling out")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(180)
def test_center_killed_during_tiny_allotment_sale():
    """The center dies (kill -9, restarted by the supervisor) three times while cells keep
    asking it for stock: nothing is oversold, nothing is lost, the SKU sells out exactly."""
    stock = 300
    with Platform(cells=3, durability="sync", extra_args=["--grant-chunk-max", "2"]) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("Z", stock=stock, price=100), 201)
        load = OrderLoad(p.port, p.admin_token, spread_users(48, base=29), [("Z", 1)], nthreads=16,
                         max_requests=3000, deadline_s=120).start()
        for n in range(3):
            poll(lambda: load.ledger.acked() >= 50 * (n + 1), 40, "%d sales" % (50 * (n + 1)), 0.005)
            old = p.kill9("center")
            poll(lambda: (lambda x: x and x != old and pid_alive(x))(p.pids().get("center")), 30,
                 "the supervisor to restart the center")
        load.oos_stop = 3
        ledger = load.join(150)
        print("answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        verify_acked_orders(p, ledger, ck)
        for user, key, items in list(ledger.unanswered):
            r = c.order(user, items, key)
            if r.status in (200, 201):
                ledger.record_create(user, key, r, items)
            elif not (r.status == 409 and r.error_code == "out_of_stock"):
                ck.fail("replay of an unanswered create: %r" % r)
        ck.eq(len(ledger.orders), stock, "orders (acknowledged + found by replaying unanswered keys)")
        p.stop()
        ck.eq(db_holding(p, "Z"), stock, "units held by stored orders")
        check_audit(p, ck)
