"""
test_degrade.py — degrade switches with scope and schedule (docs/protection.md):

  - a switch scoped to one SKU: orders and product reads for that SKU answer 503
    degraded, other SKUs are served;
  - a scheduled switch (from_ms .. until_ms, wall clock) turns itself on and off again
    with no one calling the admin API in between.
"""

import time

from harness import Checks, Platform, log, poll, timeout


@timeout(60)
def test_degrade_scoped_to_one_sku():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        for sku in ("DG-A", "DG-B"):
            ck.status(c.create_product(sku, stock=1000), 201, "create " + sku)
        r = c.request("PATCH", "/admin/rules", {"degrade_schedule": [
            {"resource": "orders.create", "sku": "DG-A"}, {"resource": "products.read", "sku": "DG-A"}]})
        ck.status(r, 200, "switch off orders and reads of DG-A")
        r = c.order(1, [("DG-A", 1)])
        ck.status(r, 503, "an order for DG-A")
        ck.eq(r.error_code, "degraded", "503 degraded")
        ck.true("DG-A" in r.text, "names the SKU")
        ck.status(c.order(2, [("DG-B", 1), ("DG-A", 1)]), 503, "any item of the SKU")
        ck.status(c.order(3, [("DG-B", 1)]), 201, "another SKU is served")
        ck.status(c.product("DG-A"), 503, "reads of DG-A")
        ck.status(c.product("DG-B"), 200, "reads of DG-B")
        ck.status(c.request("PATCH", "/admin/rules", {"degrade_schedule": []}), 200, "switch back on")
        ck.status(c.order(4, [("DG-A", 1)]), 201, "DG-A served again")


@timeout(60)
def test_scheduled_degrade_turns_itself_on_and_off():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("DG-S", stock=1000), 201, "create the product")
        now = int(time.time() * 1000)
        frm, until = now + 1500, now + 3500
        r = c.request("PATCH", "/admin/rules", {"degrade_schedule": [
            {"resource": "products.read", "from_ms": frm, "until_ms": until}]})
        ck.status(r, 200, "schedule products.read off in 1.5 s for 2 s")
        ck.status(c.product("DG-S"), 200, "before the window")
        poll(lambda: c.product("DG-S").status == 503, 5, "the switch turns itself on")
        on_at = int(time.time() * 1000)
        ck.true(on_at >= frm - 50, "not before from_ms (%d vs %d)" % (on_at, frm))
        r = c.product("DG-S")
        if r.status == 503:
            ck.eq(r.error_code, "degraded", "503 degraded")
        ck.status(c.order(5, [("DG-S", 1)]), 201, "other resources are not affected")
        poll(lambda: c.product("DG-S").status == 200, 6, "the switch turns itself off")
        off_at = int(time.time() * 1000)
        ck.true(off_at >= until - 50, "not before until_ms (%d vs %d)" % (off_at, until))
        log("on at +%d ms, off at +%d ms" % (on_at - now, off_at - now))
