"""
test_races.py — the state machine and idempotency under concurrency: many clients sending
the same Idempotency-Key at once get one order; pay and cancel racing on one order (one
wins, the answers match the final state, stock follows); pay racing the expiry timer
(a 200 means paid forever, a 409 means expired; stock returns only for expired ones).
"""

import threading
import time

from harness import (Checks, Platform, check_audit, db_holding, db_no_duplicate_keys,
                     expect, heavy, new_key, poll, timeout, wait_product)


def _burst(n, fn):
    """Run fn(i) in n threads released together; returns the results in order."""
    out = [None] * n
    gate = threading.Barrier(n)

    def run(i):
        try:
            gate.wait(10)
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            out[i] = e
    ths = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(60)
    return out


@heavy
@timeout(120)
def test_same_key_concurrently_makes_one_order():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100000, price=100), 201)
        clients = [p.client() for _ in range(12)]
        rounds = 25
        for rnd in range(rounds):
            user = 1000 + rnd * 37
            key = new_key("same")
            res = _burst(12, lambda i: clients[i].order(user, [("A", 2)], key))
            oids = set()
            for r in res:
                if isinstance(r, Exception):
                    ck.fail("round %d: %r" % (rnd, r))
                elif r.status in (200, 201):
                    oids.add(r.json.get("order_id"))
                else:
                    ck.fail("round %d: 12 concurrent sends of one key: %r" % (rnd, r))
            ck.eq(len(oids), 1, "round %d: distinct order ids for one key sent 12 times at once" % rnd)
        try:
            wait_product(c, "A", lambda j: j["stock_sold"] == 2 * rounds,
                         "stock_sold %d (%d keys x 2 units)" % (2 * rounds, rounds), 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        db_no_duplicate_keys(p, ck)
        ck.eq(db_holding(p, "A"), 2 * rounds, "units held by stored orders")


@heavy
@timeout(120)
def test_pay_and_cancel_race():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        n = 40
        expect(c.create_product("A", stock=n, price=100), 201)
        oids = [expect(c.order(2000 + i * 13, [("A", 1)]), 201)["order_id"] for i in range(n)]
        clients = [p.client() for _ in range(4)]
        paid, cancelled = set(), set()
        for oid in oids:
            res = _burst(4, lambda i: clients[i].pay(oid, "pay-" + oid) if i % 2 == 0 else clients[i].cancel(oid))
            pays = [r for i, r in enumerate(res) if i % 2 == 0]
            cancels = [r for i, r in enumerate(res) if i % 2 == 1]
            for r in res:
                if isinstance(r, Exception):
                    ck.fail("%s: %r" % (oid, r))
            if any(isinstance(r, Exception) for r in res):
                continue
            p_ok = [r for r in pays if r.status == 200]
            c_ok = [r for r in cancels if r.status == 200]
            for r in pays:
                if r.status != 200:
                    ck.error(r, 409, "not_payable", what="losing pay of %s" % oid)
            for r in cancels:
                if r.status != 200:
                    ck.error(r, 409, "not_cancellable", what="losing cancel of %s" % oid)
            if p_ok and c_ok:
                ck.fail("order %s: both pay and cancel answered 200: %r / %r" % (oid, p_ok[0], c_ok[0]))
            elif not p_ok and not c_ok:
                ck.fail("order %s: neither pay nor cancel succeeded: %r" % (oid, res))
            final = (c.get_order(oid).json or {}).get("status")
            want = "paid" if p_ok else "cancelled"
            ck.eq(final, want, "order %s final status (pay 200s: %d, cancel 200s: %d)" % (oid, len(p_ok), len(c_ok)))
            (paid if p_ok else cancelled).add(oid)
        print("paid %d, cancelled %d" % (len(paid), len(cancelled)))
        try:
            wait_product(c, "A", lambda j: j["stock_sold"] == len(paid),
                         "stock_sold == %d paid orders" % len(paid), 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "A"), len(paid), "units held by stored orders")
        check_audit(p, ck)


@heavy
@timeout(120)
def test_pay_racing_expiry():
    ttl = 1000
    with Platform(cells=2, order_ttl_ms=ttl) as p, Checks() as ck:
        c = p.client()
        n = 60
        expect(c.create_product("A", stock=n, price=100), 201)
        made = []
        for i in range(n):
            r = c.order(3000 + i * 29, [("A", 1)])
            expect(r, 201)
            made.append((time.monotonic(), r.json["order_id"]))
        answers = {}
        lock = threading.Lock()

        def payer(part):
            cl = p.client()
            for k, t0, oid in part:
                # pay each order at a different moment around its expiry (0.8 .. 1.2 TTL)
                off = 0.8 + 0.4 * (k * 37 % n) / float(n)
                delay = t0 + off * ttl / 1000.0 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # scheduling the race, not waiting for a result
                r = cl.pay(oid, "pay-" + oid)
                with lock:
                    answers[oid] = r
            cl.close()
        indexed = [(k, t0, oid) for k, (t0, oid) in enumerate(made)]
        ths = [threading.Thread(target=payer, args=(indexed[i::6],)) for i in range(6)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(60)
        ok = [o for o, r in answers.items() if r.status == 200]
        print("pays answered 200: %d of %d" % (len(ok), n))
        for oid, r in answers.items():
            if r.status not in (200,) and not (r.status == 409 and r.error_code == "not_payable"):
                ck.fail("pay near expiry: %r" % r)
        # Final states: after every expires_at has passed, each order is paid iff its pay got 200.
        for _, oid in made:
            st = poll(lambda: (lambda s: s if s in ("paid", "expired") else None)(
                (c.get_order(oid).json or {}).get("status")), 10, "order %s to settle" % oid)
            want = "paid" if answers.get(oid) is not None and answers[oid].status == 200 else "expired"
            ck.eq(st, want, "order %s (pay answered %s)" % (oid, answers.get(oid).status if answers.get(oid) else None))
        try:
            wait_product(c, "A", lambda j: j["stock_sold"] == len(ok), "stock_sold == %d paid" % len(ok), 10)
        except AssertionError as e:
            ck.fail(str(e))
        p.stop()
        ck.eq(db_holding(p, "A"), len(ok), "units held by stored orders")
        check_audit(p, ck)


def test_concurrent_create_and_restock():
    with Platform(cells=2) as p, Checks() as ck:
        clients = [p.client() for _ in range(10)]
        for rnd in range(5):
            sku = "RACE-%d" % rnd
            res = _burst(10, lambda i: clients[i].create_product(sku, stock=10 + i, price=100 + i))
            created = [r for r in res if not isinstance(r, Exception) and r.status == 201]
            ck.eq(len(created), 1, "201s among 10 concurrent creates of %s" % sku)
            for r in res:
                if isinstance(r, Exception):
                    ck.fail("create %s: %r" % (sku, r))
                elif r.status != 201:
                    ck.error(r, 409, "exists", what="losing create of %s" % sku)
            if created:
                g = clients[0].product(sku).json or {}
                w = created[0].json
                ck.eq((g.get("stock_total"), g.get("price_cents")), (w.get("stock_total"), w.get("price_cents")),
                      "%s reads back as the create that won" % sku)
        expect(clients[0].create_product("RS", stock=0, price=100), 201)
        res = _burst(10, lambda i: [clients[i].post("/v1/products/RS/restock", {"quantity": 7}) for _ in range(5)])
        n_ok = 0
        for rs in res:
            if isinstance(rs, Exception):
                ck.fail("restock: %r" % rs)
                continue
            for r in rs:
                n_ok += r.status == 200
                if r.status != 200:
                    ck.fail("concurrent restock: %r" % r)
        ck.eq((clients[0].product("RS").json or {}).get("stock_total"), 7 * n_ok,
              "stock_total after %d concurrent restocks of 7" % n_ok)
        p.stop()
        check_audit(p, ck)
