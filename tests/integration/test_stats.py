"""
test_stats.py — live sale numbers (docs/stats.md): the gateway's aggregator consumes the
real event stream exactly-once (cursor and window sums in one SQLite transaction of
DATA/stats.db), so after load, a crash of the gateway INSIDE an aggregator commit
(D11_STATS_CRASH_ONCE test hook; the supervisor restarts it), kill -9 of the whole
platform and a restart, GET /v1/stats equals sums over the stored orders exactly:
day-to-date counts (created / paid / cancelled / expired), GMV (created and paid), units
per SKU and per category; the 1 s and 1 min windows sum to the day; stress orders are not
counted. A cursor committed apart from its sums double-counts (or loses) the page that
was being committed at the crash, which the equalities catch.
"""

import os
import re
import signal
import subprocess

from harness import (D11_BIN, Checks, Client, OrderLoad, Platform, expect, free_port, pid_alive, poll,
                     spread_users, test_tmp, timeout)

KEYS = ("orders_created", "orders_paid", "orders_cancelled", "orders_expired",
        "gmv_created_cents", "gmv_paid_cents", "units_created", "units_paid")
CATS = {"A": "phones", "B": "phones", "C": "food"}


def stored_truth(p):
    """Sums over the real orders of every cell (read-only SQLite, harness p.query)."""
    tot = dict.fromkeys(KEYS, 0)
    sku = {}
    for n, _ in p.cell_dbs():
        name = "cell-%d.db" % n
        for status, cnt, gmv in p.query(name, "SELECT status, count(*), coalesce(sum(total_cents),0)"
                                              " FROM orders GROUP BY status"):
            tot["orders_created"] += cnt
            tot["gmv_created_cents"] += gmv
            if status in ("paid", "cancelled", "expired"):
                tot["orders_" + status] += cnt
            if status == "paid":
                tot["gmv_paid_cents"] += gmv
        for s, status, q, g in p.query(name, "SELECT i.sku, o.status, sum(i.quantity),"
                                             " sum(i.quantity * i.price_cents) FROM order_items i"
                                             " JOIN orders o ON o.order_id = i.order_id GROUP BY i.sku, o.status"):
            d = sku.setdefault(s, dict.fromkeys(("units_created", "units_paid", "gmv_created_cents",
                                                 "gmv_paid_cents"), 0))
            d["units_created"] += q
            d["gmv_created_cents"] += g
            tot["units_created"] += q
            if status == "paid":
                d["units_paid"] += q
                d["gmv_paid_cents"] += g
                tot["units_paid"] += q
    return tot, sku


def pending(p):
    return sum(p.query("cell-%d.db" % n, "SELECT count(*) FROM orders WHERE status = 'pending_payment'")[0][0]
               for n, _ in p.cell_dbs())


def caught_up(c):
    """True when the aggregator's stored cursor is at the head of the real stream."""
    r = c.get("/v1/stats?window=day&limit=1")
    if r.status != 200:
        return False
    cur = r.json["cursor"]
    q = "/v1/events?limit=1" + ("&after=%s" % cur if cur else "")
    e = c.get(q)
    return e.status == 200 and e.json["events"] == [] and cur != ""


def sum_windows(ws, keys=KEYS):
    return {k: sum(w[k] for w in ws) for k in keys}


@timeout(150)
def test_stats_equal_stored_orders_after_crash_in_commit_and_kill9():
    marker = os.path.join(test_tmp(), "stats-crash-%d" % os.getpid())
    if os.path.exists(marker):
        os.unlink(marker)
    os.environ["D11_STATS_CRASH_ONCE"] = "%s:3" % marker  # read by the gateway at start
    with Platform(cells=2, order_ttl_ms=1500, durability="sync") as p, Checks() as ck:
        del os.environ["D11_STATS_CRASH_ONCE"]  # the restart after kill -9 runs without it
        c = p.client()
        for s, price in (("A", 1999), ("B", 500), ("C", 250)):
            expect(c.create_product(s, stock=1000000, price=price, category=CATS[s]), 201)
        loads = [
            OrderLoad(p.port, p.admin_token, spread_users(48, base=101), [("A", 1), ("C", 2)], nthreads=4,
                      pay_every=3, cancel_every=4, max_requests=3000, deadline_s=60),
            OrderLoad(p.port, p.admin_token, spread_users(48, base=5001), [("B", 3)], nthreads=4,
                      pay_every=2, max_requests=3000, deadline_s=60),
            OrderLoad(p.port, p.admin_token, spread_users(16, base=9001), [("A", 2)], nthreads=2,
                      pay_every=2, max_requests=3000, deadline_s=60, headers={"X-D11-Stress": "1"}),
        ]
        for ld in loads:
            ld.start()
        # the gateway dies inside the aggregator's 3rd commit and is restarted by `up`
        poll(lambda: os.path.exists(marker), 40, "the aggregator's crash hook to fire", 0.02)
        poll(lambda: loads[0].ledger.acked() + loads[1].ledger.acked() >= 400, 60,
             "400 acknowledged orders", 0.01)
        p.kill9_all()
        for ld in loads:
            ld.stop()
        ck.true(loads[2].ledger.acked() > 0, "stress orders were placed (and must not be counted)")
        p.start()
        c = p.client()
        poll(lambda: pending(p) == 0, 30, "every unpaid order to expire", 0.1)
        poll(lambda: caught_up(c), 60, "the aggregator to reach the head of the stream", 0.1)
        truth, by_sku = stored_truth(p)
        ck.true(truth["orders_created"] >= 400 and truth["orders_paid"] > 0 and truth["orders_expired"] > 0
                and truth["orders_cancelled"] > 0, "the load made every kind of event: %r" % truth)
        day = expect(c.get("/v1/stats?window=day&limit=10&top=100"), 200)
        one_day = len(day["windows"]) == 1  # False only when the run crossed UTC midnight
        got = sum_windows(day["windows"])
        ck.eq(got, truth, "day-to-date counts and GMV == sums over the stored orders")
        ck.eq(day["events"], truth["orders_created"] + truth["orders_paid"] + truth["orders_cancelled"]
              + truth["orders_expired"], "events folded == events of the stored orders (no double count)")
        for w in ("1m", "1s"):
            r = expect(c.get("/v1/stats?window=%s&limit=3600" % w), 200)
            ck.eq(r["cursor"], day["cursor"], "%s answer is the same snapshot" % w)
            ck.eq(sum_windows(r["windows"]), got, "the %s windows sum to the day" % w)
            ck.true(all(x["end_ms"] - x["start_ms"] == (1000 if w == "1s" else 60000) for x in r["windows"]),
                    "%s window lengths" % w)
        for s, want in by_sku.items():
            r = expect(c.get("/v1/stats?window=day&sku=%s&limit=10" % s), 200)
            ck.eq(sum_windows(r["windows"], want.keys()), want, "SKU %s units and GMV day-to-date" % s)
            r = expect(c.get("/v1/stats?window=1m&sku=%s&limit=3600" % s), 200)
            ck.eq(sum_windows(r["windows"], want.keys()), want, "SKU %s: its 1m windows sum to the truth" % s)
        if one_day:  # `skus` / `categories` list the newest day
            skus = {x["sku"]: x for x in day["skus"]}
            ck.eq(sorted(skus), sorted(by_sku), "per-SKU rows: exactly the SKUs of real orders (stress excluded)")
            cats = {x["category"]: x for x in day["categories"]}
            for cat in ("phones", "food"):
                want = sum(by_sku[s]["units_paid"] for s in by_sku if CATS[s] == cat)
                ck.eq(cats.get(cat, {}).get("units_paid"), want, "category %s units paid" % cat)
            ck.eq(sum(x["gmv_paid_cents"] for x in skus.values()), truth["gmv_paid_cents"],
                  "GMV paid == sum of the SKUs' price x quantity")
        expect(c.get("/v1/consumers/stats"), 200)  # the aggregator is a retention sink


@timeout(60)
def test_stats_scopes_params_and_board():
    p = Platform(cells=2)
    ro = p.token_create("read", label="ro")
    prod = p.token_create("products", label="pr")
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("S1", stock=100, price=300, category="toys"), 201)
        oid = expect(c.order(7, [("S1", 2)]), 201)["order_id"]
        expect(c.pay(oid, "pay-1"), 200)
        poll(lambda: caught_up(c), 30, "the aggregator to catch up", 0.05)
        r = expect(p.client(token=ro).get("/v1/stats?window=1s"), 200)
        ck.eq(sum(w["orders_paid"] for w in r["windows"]), 1, "one paid order in the 1 s windows")
        ck.eq(sum(w["gmv_paid_cents"] for w in r["windows"]), 600, "GMV paid = 2 x 300")
        ck.eq(r["aggregator"]["order_cache_hits"], 1, "the paid event's lines came from the created event's read")
        ck.error(p.client(token=prod).get("/v1/stats"), 403, what="products token")
        ck.error(p.client(token=None).get("/v1/stats"), 401, what="no token")
        for q in ("window=2s", "window=1s&window=1m", "limit=0", "limit=3601", "since=x", "top=101"):
            ck.error(c.get("/v1/stats?" + q), 422, what=q)
        r = expect(c.get("/v1/stats?window=day&sku=S1"), 200)
        ck.eq((r["windows"][0]["units_created"], r["windows"][0]["units_paid"]), (2, 2), "per-SKU day row")
        r = expect(c.get("/v1/stats?window=day&sku=NOPE"), 200)
        ck.eq(r["windows"], [], "unknown SKU: no windows")
        r = expect(c.get("/v1/stats?window=1m&since=%d" % (2 ** 62)), 200)
        ck.eq(r["windows"], [], "since in the far future: nothing")

        def board():  # rebuilt every second: wait for one made after the pay was folded
            b = p.client(token=None).get("/dashboard/stats").json
            return b.get("stock") and b["day"]["windows"][0]["orders_paid"] == 1 and b
        b = poll(board, 10, "the dashboard snapshot with stock", 0.1)
        ck.eq(b["stock"][0]["sku"], "S1", "top SKU on the board")
        ck.eq(b["stock"][0]["stock_total"], 100, "stock from the catalog")
        ck.eq(b["day"]["windows"][0]["gmv_paid_cents"], 600, "GMV ticker value")
        m = p.client(token=None).get("/metrics").body.decode()
        ck.true(re.search(r"^d11_stats_aggregator_owner 1$", m, re.M) and re.search(r"^d11_stats_events_total 2$", m, re.M)
                and 'd11_events_consumer_lag{consumer="stats"}' in m, "aggregator metrics and its consumer lag")
        html = p.client(token=None).get("/").body.decode()
        ck.true("Live sale numbers" in html and "/dashboard/stats" in html, "dashboard has the big-screen section")


def _owner(port):
    try:
        m = Client(port).get("/metrics").body.decode()
    except ConnectionError:
        return None
    v = re.search(r"^d11_stats_aggregator_owner(?:\{[^}]*\})? (\d+)$", m, re.M)
    return int(v.group(1)) if v else None


def _ready(port):
    try:
        return Client(port).get("/readyz").status == 200
    except ConnectionError:
        return False


@timeout(90)
def test_two_gateways_on_one_data_dir_count_once():
    """A second gateway process on the same data directory serves /v1/stats from the same
    DATA/stats.db but does not aggregate (DATA/stats.lock); when the first gateway is
    killed, exactly one of the two aggregates, and the sums stay exact."""
    with Platform(cells=2, order_ttl_ms=600000) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("G", stock=100000, price=700, category="x"), 201)
        port2 = free_port()
        logf = open(os.path.join(test_tmp(), "gw2.log"), "wb")
        g2 = subprocess.Popen([D11_BIN, "gateway", "--data", p.data, "--listen", "127.0.0.1:%d" % port2,
                               "--cells", "2", "--threads", "1"], stdout=logf, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
        with open(os.path.join(test_tmp(), "started.pids"), "a") as f:
            f.write("%d %s\n" % (g2.pid, p.data))
        try:
            c2 = Client(port2, token=p.admin_token)
            poll(lambda: _ready(port2), 20, "the second gateway ready", 0.05)
            ck.eq((_owner(p.port), _owner(port2)), (1, 0), "only the first gateway aggregates")
            oids = []
            for i, cl in enumerate([c, c2] * 20):
                oids.append(expect(cl.order(1000 + i, [("G", 1)]), 201)["order_id"])
            for o in oids[:10]:
                expect(c2.pay(o, "p-" + o), 200)
            poll(lambda: caught_up(c) and caught_up(c2), 30, "both gateways see the aggregator at the head", 0.05)
            a = expect(c.get("/v1/stats?window=day"), 200)
            b = expect(c2.get("/v1/stats?window=day"), 200)
            want = {"orders_created": 40, "orders_paid": 10, "gmv_created_cents": 28000, "gmv_paid_cents": 7000}
            for who, r in (("first", a), ("second", b)):
                ck.eq({k: r["windows"][0][k] for k in want}, want, "the %s gateway's answer" % who)
            ck.eq((a["aggregator"]["here"], b["aggregator"]["here"]), (True, False), "'here' names the owner")
            # kill -9 the platform's gateway: `up` restarts it; the lock moves to one of the two
            gw_pid = p.pids()["gateway"]
            os.kill(gw_pid, signal.SIGKILL)
            poll(lambda: not pid_alive(gw_pid), 10, "the first gateway to die", 0.01)
            poll(lambda: (_owner(port2) or 0) + (_owner(p.port) or 0) == 1 and _ready(p.port),
                 20, "exactly one owner again and the first gateway back", 0.1)
            c = p.client()
            for i in range(20):
                expect(c2.order(3000 + i, [("G", 2)]), 201)
            poll(lambda: caught_up(c2), 30, "the aggregator at the head after the takeover", 0.05)
            r = expect(c2.get("/v1/stats?window=day"), 200)
            want = {"orders_created": 60, "orders_paid": 10, "units_created": 80, "gmv_created_cents": 56000}
            ck.eq({k: r["windows"][0][k] for k in want}, want, "exact after the takeover (no page twice)")
            ck.eq((_owner(p.port) or 0) + (_owner(port2) or 0), 1, "still exactly one aggregator")
        finally:
            g2.send_signal(signal.SIGTERM)
            try:
                g2.wait(15)
            except subprocess.TimeoutExpired:
                g2.kill()
                g2.wait(5)
            logf.close()
