"""
test_events.py — the event stream (docs/events.md): GET /v1/events merges every cell's
committed outbox behind one cursor; events carry id/type/order_id/user_id/cell/at/
trace_id/data; one order's events are in commit order; paging by cursor neither skips
nor repeats; the stress stream is separate; long-poll wakes on a new commit; named
consumers keep their cursor across restarts, with lag in /metrics; a cursor whose events
were pruned is 410 cursor_expired; after kill -9 of the whole platform under load every
acknowledged order has exactly one order.created and no event names a missing order.
"""

import os
import sqlite3
import threading
import time

from harness import (Checks, OrderLoad, Platform, expect, heavy, poll, spread_users,
                     timeout)

TERMINAL = {"order.paid", "order.cancelled", "order.expired"}


def read_all(c, after=None, limit=1000, headers=None, max_pages=10000, products=False):
    """Every event from `after` to the end, page by page; returns (events, next cursor).
    The center's product events (ids "center-N") are left out unless products=True."""
    out = []
    cur = after
    for _ in range(max_pages):
        q = "/v1/events?limit=%d" % limit + ("&after=%s" % cur if cur else "")
        r = c.get(q, headers=headers)
        page = expect(r, 200, "GET %s" % q)
        out += page["events"]
        if not page["events"] and cur == page["next"]:
            if not products:
                out = [e for e in out if not e["id"].startswith("center-")]
            return out, cur
        cur = page["next"]
    raise AssertionError("event stream did not end")


def _orders(events):
    """The ids of the order events (the center's product events left out)."""
    return [e["id"] for e in events if not e["id"].startswith("center-")]


def check_order_sequences(events, ck, what):
    """Per order: one order.created first, then at most one terminal event; ids unique.
    The center's product events (no order) are left out."""
    events = [e for e in events if not e["id"].startswith("center-")]
    ids = [e["id"] for e in events]
    ck.eq(len(ids), len(set(ids)), "%s: event ids are unique" % what)
    by_order = {}
    for e in events:
        by_order.setdefault(e["order_id"], []).append(e["type"])
    for oid, types in by_order.items():
        ck.true(types[0] == "order.created" and types.count("order.created") == 1,
                "%s: order %s events start with exactly one order.created: %s" % (what, oid, types))
        ck.true(len(types) <= 2 and all(t in TERMINAL for t in types[1:]),
                "%s: order %s has at most one terminal event after created: %s" % (what, oid, types))
    return by_order


@timeout(60)
def test_stream_fields_order_paging_scope_and_stress():
    p = Platform(cells=2)
    ev_tok = p.token_create("events", label="ev")
    ro_tok = p.token_create("read", label="ro")
    with p, Checks() as ck:
        c = p.client()
        expect(c.create_product("E", stock=100, price=250), 201)
        users = spread_users(8, base=3)
        tp = "00-%s-%s-01" % ("ab" * 16, "cd" * 8)
        oids = []
        for i, u in enumerate(users):
            r = expect(c.order(u, [("E", 1)], headers={"traceparent": tp} if i == 0 else None), 201)
            oids.append(r["order_id"])
        expect(c.pay(oids[0], "pay-0"), 200)
        expect(c.cancel(oids[1]), 200)
        ck.error(p.client(token=ro_tok).get("/v1/events"), 403, what="read token: GET /v1/events")
        ck.error(p.client(token=None).get("/v1/events"), 401, what="no token: GET /v1/events")
        ev = p.client(token=ev_tok)
        events, cur = read_all(ev)
        mine = [e for e in events if e["order_id"] in oids]
        ck.eq(len(mine), len(oids) + 2, "one event per change (8 created, 1 paid, 1 cancelled)")
        by = check_order_sequences(events, ck, "stream")
        ck.eq(by.get(oids[0]), ["order.created", "order.paid"], "paid order's events in order")
        ck.eq(by.get(oids[1]), ["order.created", "order.cancelled"], "cancelled order's events in order")
        e0 = [e for e in events if e["order_id"] == oids[0]][0]
        for f in ("id", "type", "order_id", "user_id", "cell", "at", "trace_id", "data"):
            ck.true(f in e0, "event has field %s: %r" % (f, e0))
        ck.eq(e0["user_id"], users[0], "user_id")
        ck.eq(e0["trace_id"], "ab" * 16, "trace_id is the request's W3C trace id")
        ck.eq(e0["data"]["order_id"], oids[0], "data is the order")
        ck.eq(e0["data"]["total_cents"], 250, "data carries the total")
        ck.true(e0["id"].startswith("%d-" % e0["cell"]), "id names the cell: %s" % e0["id"])
        ck.eq(len({e["cell"] for e in mine}), 2, "both cells' events are merged")
        # paging with limit=3 gives the same sequence, nothing skipped or repeated
        paged, cur2 = read_all(ev, limit=3)
        ck.eq([e["id"] for e in paged], [e["id"] for e in events], "limit=3 pages == one page")
        ck.eq(cur2, cur, "the final cursor is the same")
        # nothing new: empty page, same cursor
        r = expect(ev.get("/v1/events?after=%s" % cur), 200)
        ck.eq((r["events"], r["next"]), ([], cur), "at the head: no events, cursor unchanged")
        # bad parameters
        ck.error(ev.get("/v1/events?after=zz"), 422, what="garbage cursor")
        ck.error(ev.get("/v1/events?limit=0"), 422, what="limit 0")
        ck.error(ev.get("/v1/events?wait_ms=30001"), 422, what="wait_ms over 30000")
        # stress orders go to the stress stream only
        st = {"X-D11-Stress": "1"}
        rs = expect(c.order(users[0], [("E", 1)], headers=st), 201)
        r = expect(ev.get("/v1/events?after=%s" % cur), 200)
        ck.eq(r["events"], [], "a stress order is not in the real stream")
        adm = p.client()
        sev, scur = read_all(adm, headers=st)
        ck.eq([e["order_id"] for e in sev], [rs["order_id"]], "the stress stream has the stress order")
        ck.true(sev[0]["id"].split("-")[1] == "s" and sev[0]["stress"] is True, "stress id: %s" % sev[0]["id"])
        ck.error(adm.get("/v1/events?after=%s" % scur), 422, what="stress cursor on the real stream")
        ck.error(ev.get("/v1/events", headers=st), 403, what="stress stream needs scope stress")


@timeout(60)
def test_long_poll_wakes_on_commit_and_times_out():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("L", stock=100), 201)
        _, cur = read_all(c)
        t0 = time.monotonic()
        r = expect(c.get("/v1/events?after=%s&wait_ms=400" % cur), 200)
        took = time.monotonic() - t0
        ck.eq(r["events"], [], "nothing new: empty")
        ck.true(0.35 <= took < 3, "an empty long-poll waits about wait_ms (took %.3f s)" % took)
        got = {}

        def waiter():
            t = time.monotonic()
            got["r"] = p.client(timeout_s=20).get("/v1/events?after=%s&wait_ms=10000" % cur)
            got["s"] = time.monotonic() - t

        th = threading.Thread(target=waiter)
        th.start()
        time.sleep(0.3)  # the waiter is parked in the gateway before the order exists
        oid = expect(c.order(spread_users(1, base=5)[0], [("L", 1)]), 201)["order_id"]
        th.join(15)
        ck.true("r" in got and got["r"].status == 200, "long-poll answered: %r" % got.get("r"))
        evs = got["r"].json["events"]
        ck.eq([(e["type"], e["order_id"]) for e in evs], [("order.created", oid)], "long-poll returns the new event")
        ck.true(got["s"] < 5, "woken by the commit, not by wait_ms (%.3f s)" % got["s"])


@timeout(90)
def test_consumers_survive_restart_and_lag_in_metrics():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("K", stock=100), 201)
        users = spread_users(6, base=7)
        first = [expect(c.order(u, [("K", 1)]), 201)["order_id"] for u in users[:3]]
        evs, cur = read_all(c)
        ck.eq(sorted(e["order_id"] for e in evs), sorted(first), "three created events")
        ck.error(c.get("/v1/consumers/billing"), 404, what="unknown consumer")
        ck.error(c.request("PUT", "/v1/consumers/billing", {"cursor": "nope"}), 422, what="bad cursor")
        ck.error(c.request("PUT", "/v1/consumers/b%2Fad", {"cursor": cur}), 422, what="bad name")
        r = expect(c.request("PUT", "/v1/consumers/billing", {"cursor": cur}), 201)
        ck.eq(r["cursor"], cur, "committed cursor echoed")
        second = [expect(c.order(u, [("K", 1)]), 201)["order_id"] for u in users[3:]]
        read_all(c)  # the gateway learns the heads (lag is measured against them)
        m = c.get("/metrics").text
        lag = [l for l in m.splitlines() if l.startswith('d11_events_consumer_lag{consumer="billing"}')]
        ck.true(lag and int(lag[0].split()[-1]) >= 3, "lag of billing >= 3 in /metrics: %r" % lag)
        p.stop()
        p.start()
        c = p.client()
        r = expect(c.get("/v1/consumers/billing"), 200)
        ck.eq(r["cursor"], cur, "the committed cursor survives a restart")
        rest, _ = read_all(c, after=r["cursor"])
        ck.eq(sorted(e["order_id"] for e in rest), sorted(second),
              "after a restart the cursor yields exactly the later events")
        expect(c.request("PUT", "/v1/consumers/billing", {"cursor": _}), 200)


@timeout(60)
def test_pruned_cursor_is_410():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("P", stock=100), 201)
        u = spread_users(1, base=11)[0]
        for _ in range(4):
            expect(c.order(u, [("P", 1)]), 201)
        evs, _ = read_all(c)
        ids = [int(e["id"].split("-")[-1]) for e in evs]
        old = "e1.%d" % ids[0]
        p.stop()
        # retention's record: ids <= ids[2] are gone (the row retention writes with its DELETE)
        con = sqlite3.connect(p.db_path("cell-0.db"))
        con.execute("CREATE TABLE IF NOT EXISTS outbox_pruned(shadow INTEGER PRIMARY KEY, through INTEGER NOT NULL)")
        con.execute("INSERT OR REPLACE INTO outbox_pruned VALUES(0, ?)", (ids[2],))
        con.execute("DELETE FROM outbox WHERE event_id <= ?", (ids[2],))
        con.commit()
        con.close()
        p.start()
        c = p.client()
        ck.error(c.get("/v1/events?after=%s" % old), 410, "cursor_expired", what="cursor before the pruned watermark")
        r = expect(c.get("/v1/events?after=e1.%d" % ids[2]), 200)
        ck.eq(_orders(r["events"]), [e["id"] for e in evs[3:]], "a cursor at the watermark still reads")
        r = expect(c.get("/v1/events"), 200)
        ck.eq(_orders(r["events"]), [e["id"] for e in evs[3:]], "no cursor: from the oldest retained")


@heavy
@timeout(150)
def test_kill9_under_load_every_acked_order_has_one_created_event():
    with Platform(cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("Z", stock=100000, price=100), 201)
        users = spread_users(64, base=13)
        load = OrderLoad(p.port, p.admin_token, users, [("Z", 1)], nthreads=12, pay_every=3,
                         cancel_every=4, max_requests=4000, deadline_s=60).start()
        poll(lambda: load.ledger.acked() >= 300, 40, "300 acknowledged orders before the crash", 0.005)
        p.kill9_all()
        ledger = load.stop()
        p.start()
        c = p.client()
        events, _ = read_all(c)
        by = check_order_sequences(events, ck, "after kill -9")
        acked = set(ledger.orders)
        ck.true(len(acked) >= 300, "acked %d orders" % len(acked))
        missing = [o for o in acked if o not in by]
        ck.eq(missing[:5], [], "every acknowledged order has its order.created (%d acked)" % len(acked))
        stored = set()
        for name in ("cell-0.db", "cell-1.db"):
            con = sqlite3.connect("file:%s?mode=ro" % p.db_path(name), uri=True)
            stored |= {str(r[0]) for r in con.execute("SELECT order_id FROM orders")}
            con.close()
        ghosts = [o for o in by if o not in stored]
        ck.eq(ghosts[:5], [], "no event names an order that does not exist (%d orders with events)" % len(by))
        for oid, o in ledger.orders.items():
            if o["status"] == "paid" and o["pending_op"] is None:
                ck.true("order.paid" in by.get(oid, []), "acknowledged pay of %s has its event" % oid)
            if o["status"] == "cancelled" and o["pending_op"] is None:
                ck.true("order.cancelled" in by.get(oid, []), "acknowledged cancel of %s has its event" % oid)


# ---------------------------------------------------------------- webhooks

import hashlib
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """A webhook endpoint: verifies X-D11-Signature, records every attempt (time, event,
    status answered); answers 500 for the first `fail_first` attempts, or always while
    `fail_always` is set."""

    def __init__(self, secret, fail_first=0):
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.fail_always = False
        self.lock = threading.Lock()
        self.attempts = []   # (monotonic, event dict, status)
        self.bad_sigs = []
        rcv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                ts = self.headers.get("X-D11-Timestamp", "")
                want = "sha256=" + hmac.new(rcv.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
                ev = json.loads(body)
                with rcv.lock:
                    if self.headers.get("X-D11-Signature") != want or self.headers.get("X-D11-Event-Id") != ev["id"]:
                        rcv.bad_sigs.append(ev["id"])
                    fail = rcv.fail_always or rcv.fail_first > 0
                    if rcv.fail_first > 0:
                        rcv.fail_first -= 1
                    status = 500 if fail else 200
                    rcv.attempts.append((time.monotonic(), ev, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def delivered(self):
        """Events answered 2xx, first delivery of each id, in arrival order."""
        with self.lock:
            seen, out = set(), []
            for _, ev, st in self.attempts:
                if st == 200 and ev["id"] not in seen:
                    seen.add(ev["id"])
                    out.append(ev)
            return out

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@timeout(60)
def test_webhook_signed_retried_with_backoff_in_order():
    rcv = Receiver("s3cret", fail_first=3)
    try:
        with Platform(cells=2) as p, Checks() as ck:
            c = p.client()
            ck.error(c.post("/admin/webhooks", {"url": "ftp://x", "secret": "a"}), 422, what="bad url")
            ck.error(c.post("/admin/webhooks", {"url": rcv.url, "secret": "a", "types": ["nope"]}), 422,
                     what="unknown type")
            ck.error(p.client(token=p.token_create("events", label="e2")).post(
                "/admin/webhooks", {"url": rcv.url, "secret": "a"}), 403, what="events token cannot admin webhooks")
            wh = expect(c.post("/admin/webhooks", {"url": rcv.url, "secret": "s3cret",
                                                   "types": ["order.created", "order.paid"]}), 201)
            ck.true("secret" not in wh, "the secret is never echoed")
            expect(c.create_product("W", stock=100, price=300), 201)
            users = spread_users(3, base=17)
            oids = [expect(c.order(u, [("W", 1)]), 201)["order_id"] for u in users]
            expect(c.pay(oids[0], "p0"), 200)
            expect(c.cancel(oids[1]), 200)
            poll(lambda: len(rcv.delivered()) >= 4, 20, "4 events delivered (3 created, 1 paid)")
            got = rcv.delivered()
            ck.eq(sorted((e["order_id"], e["type"]) for e in got),
                  sorted([(o, "order.created") for o in oids] + [(oids[0], "order.paid")]),
                  "created + paid delivered, cancelled filtered out by types")
            ck.eq(rcv.bad_sigs, [], "every delivery carries a valid signature and event id header")
            seq = [e["type"] for e in got if e["order_id"] == oids[0]]
            ck.eq(seq, ["order.created", "order.paid"], "one order's events delivered in order")
            with rcv.lock:
                first_id = rcv.attempts[0][1]["id"]
                times = [t for t, ev, _ in rcv.attempts if ev["id"] == first_id]
            ck.eq(len(times), 4, "the first event: 3 failures then a success")
            gaps = [b - a for a, b in zip(times, times[1:])]
            ck.true(gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.195,
                    "exponential backoff between attempts (>= 50/100/200 ms with jitter): %r" % gaps)
            lst = expect(c.get("/admin/webhooks"), 200)["webhooks"]
            ck.eq(len(lst), 1, "one webhook listed")
            m = c.get("/metrics").text
            ck.true('d11_webhook_retries_total{webhook="%s"} 3' % wh["id"] in m, "3 retries in /metrics")
    finally:
        rcv.close()


@timeout(60)
def test_webhook_dead_letters_replay_pause_delete():
    rcv = Receiver("k")
    rcv.fail_always = True
    try:
        with Platform(cells=2) as p, Checks() as ck:
            c = p.client()
            wh = expect(c.post("/admin/webhooks", {"url": rcv.url, "secret": "k", "max_attempts": 2}), 201)
            wid = wh["id"]
            expect(c.create_product("D", stock=100), 201)
            users = spread_users(2, base=19)
            oids = [expect(c.order(u, [("D", 1)]), 201)["order_id"] for u in users]
            poll(lambda: len([d for d in expect(c.get("/admin/webhooks/%s/dead" % wid), 200)["dead"]
                              if d["event"]["order_id"]]) >= 2, 20,
                 "both order events in the dead letters (the product event too)")
            dead = expect(c.get("/admin/webhooks/%s/dead" % wid), 200)["dead"]
            ck.eq(sorted(d["event"]["order_id"] for d in dead if d["event"]["order_id"]), sorted(oids),
                  "the dead letters are the events")
            ck.true(all(d["attempts"] == 2 and d["error"] == "HTTP 500" for d in dead), "attempts/error: %r" % dead)
            ck.eq(rcv.delivered(), [], "nothing delivered while failing")
            rcv.fail_always = False
            expect(c.post("/admin/webhooks/%s/replay" % wid), 202)
            poll(lambda: len(rcv.delivered()) >= 2, 20, "replay delivers the dead letters")
            poll(lambda: expect(c.get("/admin/webhooks/%s/dead" % wid), 200)["dead"] == [], 10,
                 "dead letters emptied by a successful replay")
            # pause: nothing is delivered; resume: it is
            expect(c.post("/admin/webhooks/%s/pause" % wid), 200)
            o3 = expect(c.order(spread_users(1, base=23)[0], [("D", 1)]), 201)["order_id"]
            time.sleep(0.5)  # negative check: a paused webhook must stay silent
            ck.true(all(e["order_id"] != o3 for e in rcv.delivered()), "paused: not delivered")
            expect(c.post("/admin/webhooks/%s/resume" % wid), 200)
            poll(lambda: any(e["order_id"] == o3 for e in rcv.delivered()), 10, "resumed: delivered")
            ck.status(c.request("DELETE", "/admin/webhooks/%s" % wid), 204, "delete")
            ck.eq(expect(c.get("/admin/webhooks"), 200)["webhooks"], [], "deleted")
            ck.error(c.get("/admin/webhooks/%s/dead" % wid), 404, what="deleted webhook")
    finally:
        rcv.close()


@heavy
@timeout(150)
def test_kill9_webhook_receives_every_acked_order_in_order():
    rcv = Receiver("z")
    try:
        with Platform(cells=2, durability="sync") as p, Checks() as ck:
            c = p.client()
            expect(c.post("/admin/webhooks", {"url": rcv.url, "secret": "z"}), 201)
            expect(c.create_product("H", stock=100000, price=100), 201)
            users = spread_users(32, base=29)
            load = OrderLoad(p.port, p.admin_token, users, [("H", 1)], nthreads=8, pay_every=3,
                             cancel_every=4, max_requests=4000, deadline_s=60).start()
            poll(lambda: load.ledger.acked() >= 200, 40, "200 acknowledged orders before the crash", 0.005)
            p.kill9_all()
            ledger = load.stop()
            p.start()
            acked = set(ledger.orders)
            poll(lambda: acked <= {e["order_id"] for e in rcv.delivered() if e["type"] == "order.created"}, 60,
                 "every acknowledged order's order.created delivered after the restart")
            got = rcv.delivered()
            by = check_order_sequences(got, ck, "webhook after kill -9")
            ck.true(len(by) >= len(acked), "%d orders delivered, %d acked" % (len(by), len(acked)))
    finally:
        rcv.close()


def _metric(c, name):
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return None


@timeout(60)
def test_retention_prunes_only_what_every_sink_has_and_is_old():
    with Platform(cells=2, extra_args=["--events-retention-ms", "1000"]) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("R", stock=100), 201)
        expect(c.create_product("R2", stock=5), 201)  # two center events: the older is prunable
        users = spread_users(8, base=31)
        for u in users:
            expect(c.order(u, [("R", 1)]), 201)
        evs, cur = read_all(c)
        ck.eq(len(evs), 8, "8 events")
        ck.eq(len([e for e in read_all(c, products=True)[0] if e["id"].startswith("center-")]), 2,
              "2 center events")
        expect(c.request("PUT", "/v1/consumers/hold", {"cursor": "e1"}), 201)  # has read nothing
        r0 = _metric(c, "d11_events_retention_rounds_total")
        time.sleep(1.2)  # the events are now older than the window
        poll(lambda: _metric(c, "d11_events_retention_rounds_total") >= r0 + 3, 10, "three retention rounds")
        ck.eq(len(read_all(c)[0]), 8, "a consumer that has read nothing holds every event")
        expect(c.request("PUT", "/v1/consumers/hold", {"cursor": cur}), 200)  # now it has everything
        poll(lambda: len(read_all(c)[0]) == 2, 10, "pruned down to the newest event of each cell")
        # the center's outbox is pruned by the same rounds (retention.c: slot "center")
        poll(lambda: [e["id"] for e in read_all(c, products=True)[0] if e["id"].startswith("center-")] == ["center-2"],
             10, "the center's outbox pruned down to its newest event")
        ck.true(any(l.startswith('d11_events_outbox_events{cell="center"') for l in c.get("/metrics").text.splitlines()),
                "the center's outbox size in /metrics")
        old = evs[0]["id"].split("-")
        pos = ["0", "0"]
        pos[int(old[0])] = old[-1]
        ck.error(c.get("/v1/events?after=e1.%s" % ".".join(pos)), 410, "cursor_expired",
                 what="a cursor inside the pruned range")
        ck.true(_metric(c, "d11_events_oldest_age_seconds") is not None, "oldest event age in /metrics")
        o = expect(c.order(users[0], [("R", 1)]), 201)["order_id"]
        rest, _ = read_all(c, after=cur)
        ck.eq([e["order_id"] for e in rest], [o], "the consumer's cursor still reads the next event")


# ---------------------------------------------------------------- NATS JetStream relay

import shutil
import signal
import subprocess
import urllib.request

from harness import free_port, new_data_dir, pid_alive


class NatsServer:
    """A real `nats-server -js` on its own ports and store dir, stopped by its PID."""

    def __init__(self):
        self.port, self.mon = free_port(), free_port()
        self.dir = new_data_dir() + ".nats"
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "log"), "a")
        self.proc = subprocess.Popen(["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-m",
                                      str(self.mon), "-sd", self.dir], stdout=self.log, stderr=self.log)
        poll(lambda: self._jsz() is not None, 10, "nats-server up")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        self.proc = None

    def _jsz(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/jsz?streams=true" % self.mon, timeout=2) as r:
                return json.loads(r.read())
        except Exception:
            return None

    def messages(self, stream):
        j = self._jsz() or {}
        for acc in j.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if st["name"] == stream:
                    return st["state"]["messages"]
        return None


def _need_nats():
    if not shutil.which("nats-server"):
        raise AssertionError("nats-server is not installed (scripts/deps.sh installs it)")


@heavy
@timeout(120)
def test_nats_relay_outage_and_crash_exactly_one_message_per_event():
    _need_nats()
    nats = NatsServer().start()
    try:
        with Platform(cells=2, durability="sync",
                      extra_args=["--nats", "nats://127.0.0.1:%d" % nats.port]) as p, Checks() as ck:
            c = p.client()
            expect(c.create_product("N", stock=100000, price=100), 201)
            users = spread_users(32, base=37)
            load = OrderLoad(p.port, p.admin_token, users, [("N", 1)], nthreads=6, pay_every=3,
                             cancel_every=4, max_requests=3000, deadline_s=60).start()
            poll(lambda: load.ledger.acked() >= 100, 30, "100 orders before the NATS outage", 0.005)
            nats.stop()  # NATS down while orders flow
            n0 = load.ledger.acked()
            poll(lambda: load.ledger.acked() >= n0 + 200, 30, "200 more orders acknowledged while NATS is down", 0.005)
            nats.start()
            poll(lambda: load.ledger.acked() >= n0 + 300, 30, "orders after NATS is back", 0.005)
            p.kill9_all()  # the relay dies between publish and cursor save: re-publishes after restart
            ledger = load.stop()
            ck.eq(ledger.errors, [], "no order failed because of NATS")
            ck.true(not any(k.startswith("5") for k in ledger.counts), "no 5xx answers: %r" % ledger.counts)
            p.start()
            c = p.client()
            st = {"X-D11-Stress": "1"}
            expect(c.order(users[0], [("N", 1)], headers=st), 201)
            evs, _ = read_all(c, products=True)  # the center's product events are published too
            sevs, _ = read_all(c, headers=st)
            ids = {e["id"] for e in evs}
            ck.true(len(ids) == len(evs) and len(evs) >= 400, "%d distinct real events" % len(evs))
            poll(lambda: nats.messages("D11_EVENTS") == len(ids), 40,
                 "D11_EVENTS holds exactly one message per event (%d)" % len(ids))
            poll(lambda: nats.messages("D11_STRESS") == len(sevs), 20, "D11_STRESS holds the stress events")
            acked = set(ledger.orders)
            created = {e["order_id"] for e in evs if e["type"] == "order.created"}
            ck.true(acked <= created, "every acknowledged order has its order.created in the stream")
            # a crash that lost the relay's saved position: everything is published again,
            # and the broker drops every re-publish by its Nats-Msg-Id
            p.stop()
            with open(os.path.join(p.data, "consumers", "nats.events"), "w") as f:
                f.write("e1\n")
            p.start()
            c = p.client()
            _, head = read_all(c)
            poll(lambda: expect(c.get("/v1/consumers/nats.events"), 200)["cursor"] == head, 30,
                 "the relay re-published everything from the start")
            ck.eq(nats.messages("D11_EVENTS"), len(ids), "no duplicate after re-publishing every event")
            m = c.get("/metrics").text
            ck.true("d11_nats_connected 1" in m, "d11_nats_connected 1 in /metrics")
            ck.true('d11_events_consumer_lag{consumer="nats.events"}' in m, "relay lag in /metrics")
    finally:
        nats.stop()


def _connz(nats):
    with urllib.request.urlopen("http://127.0.0.1:%d/connz" % nats.mon, timeout=2) as r:
        return json.loads(r.read())["connections"] or []


def _foreign_publish(nats, subject, payload=b"x"):
    """One plain NATS message from another connection (raw protocol: CONNECT, PUB, PING)."""
    import socket
    s = socket.create_connection(("127.0.0.1", nats.port), timeout=5)
    try:
        s.recv(4096)  # INFO
        s.sendall(b'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' % (subject.encode(), len(payload), payload))
        buf = b""
        while b"PONG" not in buf:
            buf += s.recv(4096)
    finally:
        s.close()


@timeout(90)
def test_nats_relay_one_ack_per_page_and_the_careful_path():
    """The relay publishes a page as plain messages + one acknowledged last message that
    expects the stream's last sequence (nats_relay.c): far fewer acks than events. When a
    message of another publisher moves the stream's sequence, the check fails, the page
    goes the careful way (one ack per event) and still lands exactly once."""
    _need_nats()
    nats = NatsServer().start()
    try:
        with Platform(cells=2, extra_args=["--nats", "nats://127.0.0.1:%d" % nats.port]) as p, Checks() as ck:
            c = p.client()
            expect(c.create_product("NB", stock=100000, price=100), 201)
            users = spread_users(16, base=91)
            load = OrderLoad(p.port, p.admin_token, users, [("NB", 1)], nthreads=4, max_requests=300,
                             deadline_s=60).start()
            ledger = load.join()
            ck.true(len(ledger.orders) >= 1000, "%d orders placed" % len(ledger.orders))
            evs, _ = read_all(c, products=True)
            poll(lambda: nats.messages("D11_EVENTS") == len(evs), 30, "every event in D11_EVENTS (%d)" % len(evs))
            ck.eq(_metric(c, "d11_nats_careful_pages_total"), 0.0, "no page needed the careful path")
            # the relay's connection got one ack per page (plus a few API replies), not one per event
            relay = [x for x in _connz(nats) if x.get("in_msgs", 0) >= len(evs)]
            ck.eq(len(relay), 1, "one connection published the events")
            if relay:
                ck.true(relay[0]["out_msgs"] * 10 < len(evs),
                        "acks to the relay %d for %d events" % (relay[0]["out_msgs"], len(evs)))
            # another publisher moves the stream's last sequence: the next page's check fails
            _foreign_publish(nats, "d11.events.foreign.9")
            more = OrderLoad(p.port, p.admin_token, users, [("NB", 1)], nthreads=2, max_requests=100,
                             deadline_s=60).start().join()
            ck.true(len(more.orders) >= 150, "%d more orders" % len(more.orders))
            evs2, _ = read_all(c, products=True)
            poll(lambda: nats.messages("D11_EVENTS") == len(evs2) + 1, 30,
                 "every event exactly once, plus the foreign message (%d)" % (len(evs2) + 1))
            ck.true(_metric(c, "d11_nats_careful_pages_total") >= 1, "the page after it went the careful way")
            ck.eq(len({e["id"] for e in evs2}), len(evs2), "event ids distinct")
            # the consumers run below the order path (core/util.h d11_thread_background)
            nices = _thread_nices(p.proc.pid)
            base = [n for comm, n in nices if comm == "d11-gw"]
            ck.true(base, "gateway worker threads found: %r" % sorted(set(c for c, _ in nices)))
            for name in ("d11-relay", "d11-events", "d11-stats"):
                got = [n for comm, n in nices if comm == name]
                ck.true(got and base and all(n == min(19, base[0] + 5) for n in got),
                        "%s threads at nice %s (gateway workers at %s): %r" % (name, base and min(19, base[0] + 5), base[:1], got))
    finally:
        nats.stop()


def _thread_nices(root):
    """(thread name, nice) of every thread of root and its descendants."""
    kids, out = {}, []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
    todo = [root]
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            tasks = os.listdir("/proc/%d/task" % pid)
        except OSError:
            continue
        for t in tasks:
            try:
                st = open("/proc/%d/task/%s/stat" % (pid, t)).read()
            except OSError:
                continue
            f = st[st.rindex(")") + 2:].split()
            out.append((st[st.index("(") + 1:st.rindex(")")], int(f[16])))
    return out


def _center(events):
    return [e for e in events if e["id"].startswith("center-")]


@timeout(90)
def test_center_product_events_committed_once_across_kill9():
    """product.created / product.restocked come from the center's outbox (same commit as
    the change): right fields and data, cursor with the center's position, and after a
    kill -9 of the whole platform each event exactly once, ids continuing, cursor valid."""
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        tp = "00-%s-%s-01" % ("ef" * 16, "12" * 8)
        t0 = int(time.time() * 1000)
        expect(c.create_product("CEV", stock=10, price=300, headers={"traceparent": tp}), 201)
        expect(c.post("/v1/products/CEV/restock", {"quantity": 5}), 200)
        u = spread_users(1, base=21)[0]
        oid = expect(c.order(u, [("CEV", 1)]), 201)["order_id"]
        evs, cur = read_all(c, products=True)
        ce = _center(evs)
        ck.eq([(e["type"], e["sku"]) for e in ce], [("product.created", "CEV"), ("product.restocked", "CEV")],
              "the center's two events, in commit order")
        if len(ce) == 2:
            cr, rs = ce
            ck.eq((cr["cell"], cr["order_id"], cr["user_id"], cr["stress"]), ("center", None, None, False),
                  "center event fields")
            ck.eq(cr["trace_id"], "ef" * 16, "trace id of the creating request")
            ck.true(t0 - 5000 <= cr["at"] <= rs["at"] <= int(time.time() * 1000) + 5000, "at = commit time, ordered")
            ck.eq((cr["data"]["stock_total"], cr["data"]["price_cents"]), (10, 300), "created: the product")
            ck.eq((rs["data"]["stock_total"], rs["data"]["quantity"]), (15, 5), "restocked: the new total and qty")
            ck.true(cr["id"] != rs["id"], "ids differ")
        ck.true(".c" in cur, "the cursor holds the center's position: %s" % cur)
        ck.eq([e["order_id"] for e in evs if e["type"] == "order.created"], [oid], "the order's event is merged in")
        old = expect(c.get("/v1/events?after=e1&limit=1000"), 200)
        ck.eq([e["id"] for e in _center(old["events"])], [e["id"] for e in ce],
              "a cursor without the center's part reads the center from its oldest event")
        p.kill9_all()
        p.start()
        c = p.client()
        expect(c.post("/v1/products/CEV/restock", {"quantity": 7}), 200)
        rest, _ = read_all(c, after=cur, products=True)
        ck.eq([(e["type"], e["data"]["stock_total"]) for e in _center(rest)], [("product.restocked", 22)],
              "after kill -9 the old cursor yields exactly the new event")
        every, _ = read_all(c, products=True)
        ids = [e["id"] for e in _center(every)]
        ck.eq(len(ids), 3, "three center events in all: %r" % ids)
        ck.eq(len(set(ids)), len(ids), "no center event twice")
        ck.eq(ids, sorted(ids, key=lambda i: int(i.split("-")[1])), "ids grow in commit order")
        m = c.get("/metrics").text
        ck.true('d11_events_head{cell="center",stream="real"}' in m, "the center's head in /metrics")


def _cache_hits(c):
    for line in c.get("/metrics").text.splitlines():
        if line.startswith('d11_gateway_product_cache_total{result="hit"}'):
            return int(float(line.split()[-1]))
    return 0


@timeout(60)
def test_product_cache_invalidated_by_center_events_and_hot_skus():
    """GET /v1/products/{sku} is served from the gateway's cache (hits in /metrics); with
    a 60 s TTL only the center's event stream can refresh it: a restock is read within
    the documented bound (D11_GW_PRODUCT_TAIL_MS = 20 ms after its event, plus a round
    trip) once product.restocked is in the stream. The hot-SKU top-K names the hottest
    SKU in /metrics and /dashboard/data."""
    os.environ["D11_GW_PRODUCT_TTL_MS"] = "60000"  # the TTL cannot be what refreshes it
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("HOTP", stock=10), 201)
        expect(c.create_product("COLD", stock=10), 201)
        for _ in range(5):
            expect(c.get("/v1/products/COLD"), 200)
        deadline = time.time() + 10
        n = 0
        while _cache_hits(c) < 20 and time.time() < deadline:
            for _ in range(20):
                ck.eq(expect(c.get("/v1/products/HOTP"), 200)["stock_total"], 10, "before the restock")
                n += 1
        hits = _cache_hits(c)
        ck.true(hits >= 20, "reads are served from the cache: %d hits of %d reads" % (hits, n))
        # readers keep the cache hot (and the tail fresh) throughout, as in a sale
        stop = threading.Event()

        def reader():
            rc = p.client()
            while not stop.is_set():
                rc.get("/v1/products/HOTP")
        bg = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
        for th in bg:
            th.start()
        try:
            h0 = _cache_hits(c)
            poll(lambda: _cache_hits(c) > h0 + 50, 10, "the background readers hit the cache")
            expect(c.post("/v1/products/HOTP/restock", {"quantity": 5}), 200)
            poll(lambda: any(e["type"] == "product.restocked" and e["sku"] == "HOTP"
                             for e in read_all(c, products=True)[0]), 10, "product.restocked in the stream")
            # the bound: every read that starts D11_GW_PRODUCT_TAIL_MS (20 ms) after the event
            # is in the stream sees the restock, hit or miss, for as long as we look
            t0 = time.time()
            h1 = _cache_hits(c)
            late = []
            while time.time() - t0 < 0.5:
                start = time.time()
                v = expect(c.get("/v1/products/HOTP"), 200)["stock_total"]
                if start - t0 >= 0.020:
                    late.append(v)
            window_hits = _cache_hits(c) - h1
        finally:
            stop.set()
            for th in bg:
                th.join(10)
        ck.true(late and all(v == 15 for v in late),
                "every read 20 ms after the event sees the restock (60 s TTL: the invalidation did it): "
                "%d reads, %d stale" % (len(late), sum(1 for v in late if v != 15)))
        ck.true(window_hits > 0, "the cache kept serving meanwhile: %d hits" % window_hits)
        m = c.get("/metrics").text
        hot = [l for l in m.splitlines() if l.startswith("d11_gateway_hot_sku_requests{")]
        ck.true(hot and hot[0].startswith('d11_gateway_hot_sku_requests{sku="HOTP"}'),
                "the hottest SKU first in /metrics: %r" % hot[:3])
        ck.true(any('sku="COLD"' in l for l in hot), "the colder SKU is listed too")
        ck.true(any(l.startswith("d11_gateway_product_invalidations_total ") and float(l.split()[-1]) >= 3
                    for l in m.splitlines()), "invalidations counted (2 created + 1 restocked)")
        d = expect(c.get("/dashboard/data"), 200)
        ck.eq(d["hot_skus"]["k"], 10, "K in /dashboard/data")
        ck.eq(d["hot_skus"]["skus"][0]["sku"] if d["hot_skus"]["skus"] else None, "HOTP",
              "the hottest SKU first on the dashboard")
