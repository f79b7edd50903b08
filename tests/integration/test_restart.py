"""
test_restart.py — what survives a graceful restart: idempotency keys, order states, stock
figures; and a SIGTERM under load loses no acknowledged order (every 2xx is in the
database after d11 up exits 0, with every child gone).
"""

import os
import time

from harness import (Checks, OrderLoad, Platform, check_audit, db_no_duplicate_keys, expect,
                     heavy, new_key, poll, spread_users, timeout, verify_acked_orders,
                     wait_product)


def test_idempotency_survives_restart():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=10, price=100), 201)
        k1, k2, k3 = new_key(), new_key(), new_key()
        o1 = expect(c.order(1, [("A", 1)], k1), 201)["order_id"]
        o2 = expect(c.order(600, [("A", 2)], k2), 201)["order_id"]
        o3 = expect(c.order(601, [("A", 3)], k3), 201)["order_id"]
        expect(c.pay(o2, "pay-2"), 200)
        expect(c.cancel(o3), 200)
        wait_product(c, "A", lambda j: j["stock_sold"] == 3, "stock_sold 3 before the restart")
        ck.eq(p.stop(), 0, "exit status after SIGTERM")
        p.start()
        c = p.client()
        for key, user, items, oid, status in ((k1, 1, [("A", 1)], o1, "pending_payment"),
                                              (k2, 600, [("A", 2)], o2, "paid"),
                                              (k3, 601, [("A", 3)], o3, "cancelled")):
            r = c.order(user, items, key)
            ck.status(r, (200, 201), "replay of key %s after the restart" % key)
            ck.eq(r.json and r.json.get("order_id"), oid, "replayed order_id after the restart")
            g = c.get_order(oid)
            ck.status(g, 200, "GET %s after the restart" % oid)
            ck.eq((g.json or {}).get("status"), status, "status of %s after the restart" % oid)
        ck.error(c.order(1, [("A", 2)], k1), 409, "idempotency_mismatch", what="mismatch after restart")
        ck.error(c.pay(o2, "other"), 409, "not_payable", what="pay with another payment_id after restart")
        ck.status(c.pay(o2, "pay-2"), 200, "repeat pay with the same payment_id after restart")
        ck.error(c.cancel(o2), 409, "not_cancellable", what="cancel the paid order after restart")
        wait_product(c, "A", lambda j: j["stock_total"] == 10 and j["stock_sold"] == 3,
                     "stock figures after the restart")
        ck.status(c.order(2, [("A", 7)]), 201, "the 7 remaining units sell after the restart")
        ck.error(c.order(3, [("A", 1)]), 409, "out_of_stock", what="sold out after the restart")
        p.stop()
        check_audit(p, ck)


@heavy
@timeout(150)
def test_sigterm_under_load_keeps_every_acked_order():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100000, price=100), 201)
        load = OrderLoad(p.port, p.admin_token, spread_users(64), [("A", 1)], nthreads=12,
                         pay_every=3, cancel_every=5, max_requests=5000, deadline_s=60).start()
        poll(lambda: load.ledger.acked() >= 150, 30, "150 acknowledged orders under load", 0.02)
        pids = p.pids()
        rc = p.stop(check=False)
        at_stop = load.ledger.acked()
        ledger = load.stop()
        ck.eq(rc, 0, "d11 up exit status after SIGTERM under load")
        for name, pid in pids.items():
            ck.true(not _alive(pid), "%s (pid %d) still running after d11 up exited" % (name, pid))
        ck.true(not ledger.errors, "unexpected answers under load: %s" % ledger.errors[:5])
        print("acked %d orders (%d at SIGTERM); answers %r" % (len(ledger.orders), at_stop, ledger.counts))
        # In the database after the stop: every acknowledged order, with its last
        # acknowledged state (or the state an unanswered pay/cancel was moving it to).
        stored = {}
        for i, path in p.cell_dbs():
            for u, k, st in p.query(os.path.basename(path), "SELECT user_id, idem_key, status FROM orders"):
                stored[(u, k)] = st
        lost = 0
        for oid, o in ledger.orders.items():
            st = stored.get((o["user"], o["key"]))
            allowed = {o["status"]} | ({"paid"} if o["pending_op"] == "pay" else set()) | \
                      ({"cancelled"} if o["pending_op"] == "cancel" else set())
            if st is None:
                lost += 1
                if lost <= 10:
                    ck.fail("acknowledged order %s (user %d key %s) is not in the database"
                            % (oid, o["user"], o["key"]))
            elif st not in allowed:
                ck.fail("order %s stored as %r, last acknowledged %r" % (oid, st, o["status"]))
        ck.eq(lost, 0, "acknowledged orders missing from the database")
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)
        p.start()
        verify_acked_orders(p, ledger, ck)


def _alive(pid):
    from harness import pid_alive
    return pid_alive(pid)


def test_expiry_survives_restart_and_crash():
    """The expiry due time is persisted: an order that expires while the platform is down
    (stopped, or killed) is expired after the restart and its stock returns; replaying its
    key returns the expired order, never a new one."""
    ttl = 1500
    with Platform(cells=2, order_ttl_ms=ttl, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=2, price=100), 201)
        k1, k2 = new_key(), new_key()
        r1, r2 = c.order(1, [("A", 1)], k1), c.order(700, [("A", 1)], k2)
        expect(r1, 201)
        expect(r2, 201)
        o1, o2 = r1.json["order_id"], r2.json["order_id"]
        t_created = time.monotonic()
        p.stop()
        # Down for longer than the TTL (the platform is stopped: nothing to poll).
        while time.monotonic() < t_created + 2 * ttl / 1000.0:
            time.sleep(0.1)
        p.start()
        c = p.client()
        for oid in (o1, o2):
            try:
                poll(lambda: (c.get_order(oid).json or {}).get("status") == "expired", 10,
                     "order %s (TTL passed while stopped) to be expired" % oid)
            except AssertionError as e:
                ck.fail("%s; now: %r" % (e, c.get_order(oid)))
        for user, key, oid in ((1, k1, o1), (700, k2, o2)):
            r = c.order(user, [("A", 1)], key)
            ck.status(r, (200, 201), "replay of the expired order's key")
            ck.eq((r.json or {}).get("order_id"), oid, "replay of an expired order's key returns it")
        try:
            wait_product(c, "A", lambda j: j["stock_sold"] == 0 and j["stock_available"] == 2,
                         "stock of the orders that expired while stopped is back", 10)
        except AssertionError as e:
            ck.fail(str(e))
        # Same after a kill -9.
        o3 = expect(c.order(2, [("A", 1)]), 201)["order_id"]
        t_created = time.monotonic()
        p.kill9_all()
        while time.monotonic() < t_created + 2 * ttl / 1000.0:
            time.sleep(0.1)
        p.start()
        c = p.client()
        try:
            poll(lambda: (c.get_order(o3).json or {}).get("status") == "expired", 10,
                 "order %s (TTL passed while killed) to be expired" % o3)
        except AssertionError as e:
            ck.fail("%s; now: %r" % (e, c.get_order(o3)))
        try:
            wait_product(c, "A", lambda j: j["stock_sold"] == 0, "stock back after the crash + expiry", 10)
        except AssertionError as e:
            ck.fail(str(e))
        got = []
        poll(lambda: got.append(c.order(3, [("A", 2)])) or got[-1].status == 201, 10,
             "both units to sell again")
        p.stop()
        check_audit(p, ck)


def test_cells_fixed_at_first_start():
    """`--cells` is fixed at first start: a restart with another count either refuses to
    start (non-zero exit, a reason on stderr) or runs with the original cells; either way
    no order becomes unreachable."""
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100, price=100), 201)
        made = [expect(c.order(u, [("A", 1)]), 201)["order_id"] for u in (1, 300, 600, 900, 1023)]
        p.stop()
        p.cells = 3
        try:
            p.start(ready_timeout_s=10)
            started = True
        except AssertionError as e:
            started = False
            rc = p.proc.poll()
            ck.true(rc not in (None, 0), "d11 up with another --cells neither ran nor exited non-zero: %s" % e)
            print("restart with --cells 3 refused (exit %r): %s" % (rc, p.log_tail(3)))
        if started:
            c = p.client()
            for oid in made:
                ck.status(c.get_order(oid), 200, "order %s after restarting with --cells 3" % oid)
            for u in (2, 301, 601, 901):
                ck.status(c.order(u, [("A", 1)]), 201, "new order of user %d" % u)
            p.stop()
        p.cells = 2
        p.start()
        c = p.client()
        for oid in made:
            ck.status(c.get_order(oid), 200, "order %s back on --cells 2" % oid)
        p.stop()
        check_audit(p, ck)
