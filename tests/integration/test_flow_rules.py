"""
test_flow_rules.py — flow rules through the admin API (docs/protection.md, docs/api.md):

  - PATCH /admin/rules changes one field and keeps every other one (a PUT of the same
    text would drop them); null removes a rule; a stale "version" is refused (409);
  - a concurrency limit on orders.create: with slow cells, a burst of concurrent orders
    gets 429 rate_limited (with Retry-After) beyond the limit, the rest 201, and
    once the burst is over the limit frees (a new order is admitted).
"""

import os
import threading
import time

from harness import Checks, Client, Platform, log, new_key, timeout


@timeout(60)
def test_patch_changes_one_field_and_keeps_the_others():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        doc = {"flow": {"orders.create": {"qps": 1000, "burst": 5000, "concurrency": 64},
                        "orders.read": {"qps": 300}},
               "degrade": {"products.write": True},
               "risk": {"deny_users": [13], "max_order_quantity": 20}}
        r = c.request("PUT", "/admin/rules", doc)
        ck.status(r, 200, "PUT the rules")
        v0 = r.json["version"]
        r = c.request("PATCH", "/admin/rules", {"flow": {"orders.create": {"qps": 2000}}})
        ck.status(r, 200, "PATCH one field")
        j = r.json
        ck.eq(j["version"], v0 + 1, "a patch is a new version")
        ck.eq(j["flow"]["orders.create"], {"qps": 2000, "burst": 5000, "concurrency": 64},
              "qps changed, burst and concurrency kept")
        ck.eq(j["flow"]["orders.read"], {"qps": 300, "burst": 300}, "the other rule kept")
        ck.eq(j["degrade"]["products.write"], True, "degrade kept")
        ck.eq(j["risk"], {"deny_users": [13], "max_order_quantity": 20}, "risk kept")
        ck.eq(c.get("/admin/rules").json["flow"], j["flow"], "GET shows the merged document")
        r = c.request("PATCH", "/admin/rules", {"flow": {"orders.read": None},
                                                 "degrade": {"orders.read": True}})
        ck.status(r, 200, "PATCH removing a rule")
        ck.eq(sorted(r.json["flow"]), ["orders.create"], "null removed orders.read")
        ck.eq(r.json["degrade"]["orders.read"] and r.json["degrade"]["products.write"], True,
              "degrade switches merged per resource")
        r = c.request("PATCH", "/admin/rules", {"version": v0, "risk": {"max_order_quantity": 1}})
        ck.status(r, 409, "a stale version in a patch")
        r = c.request("PATCH", "/admin/rules", {"flow": {"orders.create": {"qps": 0}}})
        ck.status(r, 422, "an invalid patch")
        ck.true("flow.orders.create.qps" in r.text, "422 names the field: %s" % r.text)
        ck.eq(c.get("/admin/rules").json["risk"]["max_order_quantity"], 20, "nothing applied")
        r = c.request("POST", "/admin/rules/rollback")
        ck.status(r, 200, "a patch can be rolled back")
        ck.true("orders.read" in r.json["flow"], "rollback restores the removed rule")


@timeout(90)
def test_concurrency_limit_refuses_beyond_the_limit():
    os.environ["D11_FAULTS"] = "cell.recv:delay=20ms"
    os.environ["D11_FAULT_SEED"] = "1"
    with Platform(cells=2, threads=1, extra_args=["--protect", "off"]) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("CONC-1", stock=100000), 201, "create the product")
        ck.status(c.request("PATCH", "/admin/rules", {"flow": {"orders.create": {"concurrency": 2}}}),
                  200, "concurrency limit 2")
        out, lock = [], threading.Lock()
        start = threading.Barrier(12)

        def one(i):
            cl = Client(p.port, token=p.admin_token, timeout_s=20)
            try:
                start.wait()
                r = cl.order(5000 + i, [{"sku": "CONC-1", "quantity": 1}], key=new_key("conc"))
                with lock:
                    out.append(r)
            finally:
                cl.close()

        th = [threading.Thread(target=one, args=(i,)) for i in range(12)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        codes = sorted(r.status for r in out)
        log("12 concurrent orders, concurrency limit 2: %s" % codes)
        ck.eq(sorted(set(codes) - {201, 429}), [], "only 201 and 429")
        n429 = [r for r in out if r.status == 429]
        ck.true(len(n429) >= 6, "most of the burst is over the limit: %s" % codes)
        ck.true(codes.count(201) >= 2, "the limit's worth is admitted: %s" % codes)
        for r in n429:
            ck.eq(r.error_code, "rate_limited", "429 code (API.md: flow control)")
            ck.true(r.headers.get("retry-after") == "1", "Retry-After on 429")
        ck.status(c.order(6000, [{"sku": "CONC-1", "quantity": 1}]), 201,
                  "after the burst the limit is free again")


@timeout(60)
def test_per_caller_limit_applies_to_that_token_label_only():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("CALL-1", stock=100000), 201, "create the product")
        app = p.token_create("orders", label="app-a")
        r = c.request("PATCH", "/admin/rules",
                      {"flow": {"orders.create": {"callers": {"app-a": {"qps": 1, "burst": 2}}}}})
        ck.status(r, 200, "a per-caller rule for the label app-a")
        ck.eq(r.json["flow"]["orders.create"], {"callers": {"app-a": {"qps": 1, "burst": 2}}},
              "rendered under its resource")
        ca = Client(p.port, token=app)
        got = [ca.order(7000 + i, [("CALL-1", 1)]).status for i in range(5)]
        log("app-a, 5 orders at once with qps 1 burst 2: %s" % got)
        ck.eq(got[:2], [201, 201], "the burst is admitted")
        ck.true(got.count(429) >= 2, "app-a is limited beyond its burst: %s" % got)
        r = ca.order(7100, [("CALL-1", 1)])
        if r.status == 429:
            ck.eq(r.error_code, "rate_limited", "429 code")
            ck.true("app-a" in r.text and r.headers.get("retry-after"), "names the caller, Retry-After")
        for i in range(5):
            ck.status(c.order(7200 + i, [("CALL-1", 1)]), 201, "another caller (admin) is not limited")
        ca.close()


@timeout(60)
def test_hot_parameter_limits_per_sku_user_ip_with_exceptions():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        for sku in ("COLD-1", "HOT-1"):
            ck.status(c.create_product(sku, stock=100000), 201, "create " + sku)
        r = c.request("PATCH", "/admin/rules", {"hot": {"sku": {"qps": 1, "burst": 2,
                                                                "except": {"HOT-1": 100000}}}})
        ck.status(r, 200, "hot SKU rule with an exception")
        ck.eq(r.json["hot"], {"sku": {"qps": 1, "burst": 2, "except": {"HOT-1": 100000}}}, "rendered")
        cold = [c.order(8000 + i, [("COLD-1", 1)]).status for i in range(5)]
        log("COLD-1 x5 at qps 1 burst 2: %s" % cold)
        ck.eq(cold[:2], [201, 201], "the burst of a plain SKU")
        ck.true(cold.count(429) >= 2, "a plain SKU over its rate: %s" % cold)
        hot = [c.order(8100 + i, [("HOT-1", 1)]).status for i in range(10)]
        ck.eq(hot, [201] * 10, "the hot SKU has its own (higher) limit")
        r = c.order(8200, [("COLD-1", 1)])
        if r.status == 429:
            ck.true("COLD-1" in r.text and r.headers.get("retry-after"), "names the SKU, Retry-After")
        # per user and per client IP; the SKU rule removed
        r = c.request("PATCH", "/admin/rules", {"hot": {"sku": None, "user": {"qps": 1, "burst": 1},
                                                        "ip": {"qps": 1, "burst": 6}}})
        ck.status(r, 200, "per-user and per-IP rules")
        ck.eq(sorted(r.json["hot"]), ["ip", "user"], "sku removed")
        u = [c.order(9000, [("HOT-1", 1)], key=new_key("u")).status for _ in range(3)]
        ck.eq(u[0], 201, "a user's first order")
        ck.true(429 in u[1:], "the same user again at once: %s" % u)
        ips = [c.order(9100 + i, [("HOT-1", 1)]).status for i in range(10)]
        log("10 users from 127.0.0.1 with ip qps 1 burst 6: %s" % ips)
        ck.true(ips.count(429) >= 3, "one client IP over its rate: %s" % ips)


@timeout(60)
def test_pace_behaviour_spaces_requests_and_refuses_beyond_max_wait():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("PACE-1", stock=100000), 201, "create the product")
        r = c.request("PATCH", "/admin/rules", {"flow": {"orders.create": {"qps": 10, "max_wait_ms": 450}}})
        ck.status(r, 200, "pace at 10/s, waiting at most 450 ms")
        ck.eq(r.json["flow"]["orders.create"], {"qps": 10, "burst": 10, "max_wait_ms": 450}, "rendered")
        out, lock = [], threading.Lock()
        start = threading.Barrier(8)
        t0 = [0.0]

        def one(i):
            cl = Client(p.port, token=p.admin_token, timeout_s=10)
            try:
                start.wait()
                if i == 0:
                    t0[0] = time.monotonic()
                r = cl.order(9500 + i, [("PACE-1", 1)], key=new_key("pace"))
                with lock:
                    out.append((r.status, time.monotonic(), r.error_code))
            finally:
                cl.close()

        th = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in th:
            t.start()
        for t in th:
            t.join()
        ok = sorted(x[1] - t0[0] for x in out if x[0] == 201)
        refused = [x for x in out if x[0] != 201]
        log("8 at once, pace 10/s max wait 450 ms: 201 at %s; others %s"
            % (["%.2f" % v for v in ok], [(x[0], x[2]) for x in refused]))
        ck.true(4 <= len(ok) <= 6, "the turns within 450 ms are admitted (5 expected): %d" % len(ok))
        ck.eq(sorted(set(x[0] for x in refused)), [429] if refused else [], "the rest get 429")
        ck.true(all(x[2] == "rate_limited" for x in refused), "429 rate_limited")
        ck.true(len(ok) >= 4 and ok[-1] - ok[0] >= 0.25,
                "admitted orders are spaced, not sent at once (%.3f s from first to last)"
                % ((ok[-1] - ok[0]) if ok else 0))
