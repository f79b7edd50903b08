"""
test_cell_down.py — a cell that dies takes only its own slots down: kill -9 of cell-0
while users of every cell keep ordering. Users of the other cells keep getting 201; users
of the dead cell get 503 `unavailable` (never another error, never a hang) until the
supervisor has restarted it (a new pid in DATA/pids/cell-0.pid), then 201 again; the
dead cell's orders are intact afterwards. Also kill -9 of the center and of the gateway.
"""

import time

from harness import (Checks, Ledger, Platform, check_audit, db_no_duplicate_keys, expect,
                     find_order_cell, heavy, new_key, pid_alive, poll, scaled, timeout,
                     users_for_cell, verify_acked_orders)


def _place_probe_orders(p, c, users, ledger, ck):
    for u in users:
        key = new_key("probe")
        r = c.order(u, [("A", 1)], key)
        if ck.status(r, 201, "probe order of user %d" % u):
            ledger.record_create(u, key, r, [("A", 1)])


@heavy
@timeout(150)
def test_one_cell_down_others_keep_selling():
    cells = 2
    with Platform(cells=cells, durability="sync", request_timeout_ms=2000) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100000, price=100), 201)
        dead_users = users_for_cell(0, cells, 6, base=2)
        live_users = users_for_cell(1, cells, 6, base=2)
        ledger = Ledger()
        _place_probe_orders(p, c, dead_users + live_users, ledger, ck)
        # Confirm the routing from the data: which cell database holds each probe order.
        for oid, o in ledger.orders.items():
            cell = find_order_cell(p, o["user"], o["key"])
            want = 0 if o["user"] in dead_users else 1
            ck.eq(cell, want, "cell holding the order of user %d (slot %d)" % (o["user"], o["user"] % 1024))
        for oid, o in list(ledger.orders.items())[::3]:
            expect(c.pay(oid, "pay-" + oid), 200)
            ledger.record_status(oid, "paid")
        ck.done()

        old = p.kill9("cell-0")
        t_kill = time.monotonic()
        answers = {"dead": {}, "live": {}}
        restarted_at = None
        dead_ok_at = None
        deadline = time.monotonic() + scaled(30)
        i = 0
        while time.monotonic() < deadline:
            i += 1
            for kind, users in (("dead", dead_users), ("live", live_users)):
                u = users[i % len(users)]
                key = new_key(kind)
                t0 = time.monotonic()
                try:
                    r = c.order(u, [("A", 1)], key)
                except ConnectionError as e:
                    ck.fail("%s-cell user %d: connection error %s" % (kind, u, e))
                    continue
                dt = time.monotonic() - t0
                tag = "%d %s" % (r.status, r.error_code or "")
                answers[kind][tag] = answers[kind].get(tag, 0) + 1
                if dt > scaled(5):
                    ck.fail("%s-cell user %d waited %.1fs for %r" % (kind, u, dt, r))
                if r.status == 201:
                    ledger.record_create(u, key, r, [("A", 1)])
                    if kind == "dead" and restarted_at is not None and dead_ok_at is None:
                        dead_ok_at = time.monotonic()
                elif kind == "live":
                    ck.fail("user %d of a live cell while cell-0 is down: %r" % (u, r))
                elif not (r.status == 503 and r.error_code == "unavailable"):
                    ck.fail("user %d of the dead cell: expected 201 or 503 unavailable: %r" % (u, r))
            if restarted_at is None:
                new = p.pids().get("cell-0")
                if new and new != old and pid_alive(new):
                    restarted_at = time.monotonic()
            if dead_ok_at is not None and time.monotonic() - dead_ok_at > 1:
                break
        print("answers while cell-0 was down and after: %r" % answers)
        ck.true(restarted_at is not None, "the supervisor did not restart cell-0 within 30s (pid file: %r)"
                % p.pids().get("cell-0"))
        if restarted_at is not None:
            print("cell-0 restarted %.2fs after the kill" % (restarted_at - t_kill))
            ck.true(dead_ok_at is not None, "users of cell-0 never got a 201 after its restart: %r" % answers)
        ck.true(p.running(), "d11 up is still running")
        # Everything acknowledged, before and after the kill, is intact.
        poll(lambda: c.get("/readyz", token=None).status == 200, 20, "/readyz 200 after the restart")
        verify_acked_orders(p, ledger, ck)
        p.stop()
        db_no_duplicate_keys(p, ck)
        check_audit(p, ck)


@heavy
@timeout(120)
def test_center_and_gateway_restarted_by_supervisor():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=1000, price=100), 201)
        ledger = Ledger()
        _place_probe_orders(p, c, [1, 700], ledger, ck)
        for name in ("center", "gateway"):
            old = p.kill9(name)
            poll(lambda: (lambda n: n and n != old and pid_alive(n))(p.pids().get(name)), 30,
                 "the supervisor to restart %s (new pid in pids/%s.pid)" % (name, name))
            poll(lambda: _ready(p), 30, "/readyz 200 after %s restarted" % name)
            c = p.client()
            # Orders keep working (they never needed the center on the hot path).
            _place_probe_orders(p, c, [2, 701], ledger, ck)
            try:
                poll(lambda: c.product("A").status == 200, 10, "GET /v1/products/A 200 after %s restarted" % name)
            except AssertionError as e:
                ck.fail("%s; last: %r" % (e, c.product("A")))
        verify_acked_orders(p, ledger, ck)
        ck.true(p.running(), "d11 up still running")
        p.stop()
        check_audit(p, ck)


def _ready(p):
    try:
        return p.client(token=None).get("/readyz").status == 200
    except ConnectionError:
        return False
