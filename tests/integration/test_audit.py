"""
test_audit.py — the auditor is the oracle of the load and crash tests, so it must be able
to say no: on copies of a stopped platform's data, each invariant is broken on purpose
(an oversold SKU, two orders for one idempotency key, a unit created out of thin air at
the center, a paid order moved back to pending) and `d11 audit` must exit 1 with a
non-empty violation list; the untouched copy passes.
"""

import json
import os
import shutil
import sqlite3

from harness import Checks, Platform, expect, run_cli, test_tmp


def _copy(src, name):
    dst = os.path.join(test_tmp(), name)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.sock", "pids"))
    return dst


def _dup_order(db, new_id, idem_key=None, qty=None, status=None):
    """Insert a copy of the first order (and its items) under new_id, optionally with
    another idempotency key, item quantity or status."""
    con = sqlite3.connect(db)
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(orders)")]
        row = list(con.execute("SELECT * FROM orders ORDER BY order_id LIMIT 1").fetchone())
        old_id = row[cols.index("order_id")]
        row[cols.index("order_id")] = new_id
        if idem_key is not None:
            row[cols.index("idem_key")] = idem_key
        if status is not None:
            row[cols.index("status")] = status
        con.execute("INSERT INTO orders VALUES (%s)" % ",".join("?" * len(cols)), row)
        icols = [r[1] for r in con.execute("PRAGMA table_info(order_items)")]
        for it in con.execute("SELECT * FROM order_items WHERE order_id = ?", (old_id,)).fetchall():
            it = list(it)
            it[icols.index("id")] = None
            it[icols.index("order_id")] = new_id
            if qty is not None:
                it[icols.index("quantity")] = qty
            con.execute("INSERT INTO order_items VALUES (%s)" % ",".join("?" * len(icols)), it)
        con.commit()
    finally:
        con.close()


def _sql(db, sql, args=()):
    con = sqlite3.connect(db)
    try:
        con.execute(sql, args)
        con.commit()
    finally:
        con.close()


def _audit(d):
    cp = run_cli(["audit", "--data", d], 60)
    try:
        rep = json.loads(cp.stdout)
    except ValueError:
        rep = None
    return cp, rep


def test_audit_detects_violations():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=10, price=100), 201)
        oid = expect(c.order(5, [("A", 2)]), 201)["order_id"]
        expect(c.order(6, [("A", 1)]), 201)
        expect(c.pay(oid, "pay-1"), 200)
        p.stop()
        cell = "cell-%d.db" % (5 % 1024 * 2 // 1024)

        clean = _copy(p.data, "clean")
        cp, rep = _audit(clean)
        ck.eq(cp.returncode, 0, "audit of an untouched copy (stdout %s, stderr %s)" % (cp.stdout[-500:], cp.stderr[-300:]))

        cases = []
        d = _copy(p.data, "oversold")
        _dup_order(os.path.join(d, cell), 2 ** 40 + 1, idem_key="forged-1", qty=50, status="pending_payment")
        cases.append(("an order holding 50 of 10 units", d))
        d = _copy(p.data, "duplicate")
        _dup_order(os.path.join(d, cell), 2 ** 40 + 2)
        cases.append(("two orders for one (user, idempotency key)", d))
        d = _copy(p.data, "conservation")
        _sql(os.path.join(d, "center.db"), "UPDATE center_stock SET free = free + 1 WHERE sku = 'A' AND shadow = 0")
        cases.append(("one unit more free at the center", d))
        d = _copy(p.data, "state")
        _sql(os.path.join(d, cell), "UPDATE orders SET status = 'cancelled' WHERE status = 'paid'")
        cases.append(("a paid order turned cancelled without its stock returning", d))

        for what, d in cases:
            cp, rep = _audit(d)
            ck.eq(cp.returncode, 1, "d11 audit exit status on data with %s (stdout %s)" % (what, cp.stdout[-600:]))
            ck.true(isinstance(rep, dict) and rep.get("violations"),
                    "d11 audit report lists the violation (%s): %s" % (what, cp.stdout[-600:]))
