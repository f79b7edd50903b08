"""
test_cell_proc.py — the cell PROCESS (src/cell/cell.c: event loop, links, storage thread,
STATS, drain) as a client sees it through the gateway:

  - a request whose deadline passed while the cell was stopped does no work: SIGSTOP a
    cell past the gateway's request timeout, POST an order -> 504; after SIGCONT the order
    never appears, and a retry with the same Idempotency-Key makes exactly one order
    (defect 5 of issue 7);
  - durability=async flushes on a timer: with --async-flush-ms 50 the cell's STATS
    (GET /admin/cells) shows no unsynced commit within 2 s of one order, and its commit
    and sync counters moved (defect 3 of issue 7);
  - SIGTERM to a cell, and to `d11 up`, while orders are in flight: every request gets an
    HTTP answer, every 201 is stored, and the process exits 0;
  - a gateway connection whose replies outgrow the socket buffer gets all of them once it
    reads again (the epoll cell.c before the d11_links port left them queued forever: a
    writable socket did not trigger a flush).

Requests are kept in flight by SIGSTOP of the cells, or by a delay on the cell.recv fault
point (D11_FAULTS) that stalls the cell's loop for each frame it takes; the tests wait for
the gateway's in-flight gauge (GET /metrics) instead of sleeping.
"""

import os
import re
import signal
import socket
import struct
import threading
import time

from harness import (Checks, Client, Platform, expect, find_order_cell, log, new_key, pid_alive,
                     poll, scaled, spread_users, timeout, until_served, users_for_cell)


def _ready(p):
    try:
        return p.client(token=None).get("/readyz").status == 200
    except ConnectionError:
        return False


def _cell_stats(c, cell):
    """The STATS object of `cell` from GET /admin/cells, or None when it is not there."""
    r = c.get("/admin/cells")
    if r.status != 200 or not isinstance(r.json, dict):
        return None
    for it in r.json.get("cells") or []:
        if it.get("id") == cell and isinstance(it.get("stats"), dict):
            return it["stats"]
    return None


def _user_orders(c, user):
    j = expect(c.get("/v1/users/%d/orders?limit=200" % user), 200, "list the orders of user %d" % user)
    return j["orders"]


def _signal_child(p, name, sig):
    """Send sig to one child of the platform by its pid file (only if it is ours)."""
    pid = p.pids().get(name)
    if pid is None or not pid_alive(pid) or not p._ours(pid):
        raise AssertionError("no running %s of ours (pids: %r)" % (name, p.pids()))
    os.kill(pid, sig)
    return pid


@timeout(90)
def test_expired_deadline_does_no_work():
    cells = 2
    with Platform(cells=cells, durability="sync", request_timeout_ms=3000) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=1000, price=100), 201)
        target, other = users_for_cell(0, cells, 2, base=3)
        # The cell holds an allotment of A before it stops: the late order would not wait
        # for the center, it would be created at once (the defect).
        expect(c.order(other, [("A", 1)]), 201, "warm-up order on cell-0")
        key = new_key("late")
        pid = _signal_child(p, "cell-0", signal.SIGSTOP)
        t_stop = time.monotonic()
        try:
            log("SIGSTOP cell-0 pid %d" % pid)
            t0 = time.monotonic()
            r = c.order(target, [("A", 1)], key)
            dt = time.monotonic() - t0
            ck.error(r, 504, "timeout", what="POST /v1/orders while its cell is stopped")
            ck.true(2.5 <= dt <= 3 + scaled(0.8) if r.status == 504 else True,
                    "the 504 came %.2fs after the request (the request timeout is 3 s)" % dt)
            # The cell stays stopped 4 s in all: it resumes with the request's deadline past.
            time.sleep(max(0.0, 4.0 - (time.monotonic() - t_stop)))
        finally:
            os.kill(pid, signal.SIGCONT)
        log("SIGCONT cell-0 pid %d" % pid)
        poll(lambda: _ready(p), 20, "/readyz 200 after SIGCONT")
        # Barrier: an order of another user of the same cell, sent after SIGCONT, is
        # answered only after its batch committed — a batch no earlier than the one the
        # stale request would have entered (it was in the socket before).
        expect(c.order(other, [("A", 1)]), 201, "an order on cell-0 after SIGCONT")
        got = _user_orders(c, target)
        ck.eq(got, [], "orders of user %d after the 504 and SIGCONT (the late request must do no work)"
              % target)
        st = _cell_stats(c, 0)
        ck.true(st is not None and st.get("expired_deadline", 0) >= 1,
                "cell-0 STATS counts the request whose deadline passed: %r" % st)
        # The client retries with the same key: exactly one order, and the same one again.
        r1 = c.order(target, [("A", 1)], key)
        ck.status(r1, 201, "retry with the same Idempotency-Key after the 504")
        r2 = c.order(target, [("A", 1)], key)
        ck.status(r2, (200, 201), "second retry with the same key")
        if r1.status == 201 and r2.status in (200, 201):
            ck.eq(r2.json.get("order_id"), r1.json.get("order_id"), "order id of the second retry")
        got = _user_orders(c, target)
        ck.eq(len(got), 1, "orders of user %d after the retries" % target)
        p.stop()


@timeout(60)
def test_async_durability_flushes_on_a_timer():
    with Platform(cells=2, durability="async", extra_args=["--async-flush-ms", "50"]) as p, \
            Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100, price=100), 201)
        user = users_for_cell(1, 2, 1, base=5)[0]
        expect(c.order(user, [("A", 1)]), 201, "one order on cell-1")
        last = [None]

        def flushed():
            last[0] = _cell_stats(c, 1)
            return last[0] is not None and last[0].get("unsynced_commits") == 0 and last[0].get("commits", 0) >= 1
        t0 = time.monotonic()
        try:
            poll(flushed, 2, "cell-1 STATS unsynced_commits == 0 after one order (--async-flush-ms 50)",
                 interval=0.02)
        except AssertionError as e:
            ck.fail("%s; last STATS: %r" % (e, last[0]))
        log("flushed within %.3fs" % (time.monotonic() - t0))
        st = last[0] or {}
        ck.eq(st.get("durability"), "async", "cell-1 STATS durability")
        ck.true(st.get("commits", 0) >= 1, "cell-1 STATS commits >= 1: %r" % st)
        ck.true(st.get("syncs", 0) >= 1, "cell-1 STATS syncs >= 1: %r" % st)
        ck.true(isinstance(st.get("pid"), int) and st.get("pid") == p.pids().get("cell-1"),
                "cell-1 STATS pid is the pid in pids/cell-1.pid: %r" % st)
        for k in ("orders", "skus", "created", "rejected_out_of_stock", "rejected_table_full",
                  "expired_deadline", "parked", "parked_total", "batches", "batch_ops",
                  "last_commit_us", "center_up", "limits"):
            ck.true(k in st, "cell-1 STATS has %r: %r" % (k, st))
        p.stop()


def _inflight(c):
    r = c.get("/metrics")
    m = re.search(r"^d11_gateway_inflight_requests (\d+)", r.text, re.M)
    return int(m.group(1)) if r.status == 200 and m else 0


def _orders_in_flight(p, users, ck):
    """One thread per user, each placing one order; returns (threads, results) where
    results[i] = (user, key, Resp or the exception)."""
    results = [None] * len(users)

    def one(i, u):
        cl = Client(p.port, p.admin_token, timeout_s=20)
        key = new_key("fl")
        try:
            results[i] = (u, key, cl.order(u, [("A", 1)], key))
        except ConnectionError as e:
            results[i] = (u, key, e)
        finally:
            cl.close()
    ths = [threading.Thread(target=one, args=(i, u), daemon=True) for i, u in enumerate(users)]
    for t in ths:
        t.start()
    return ths, results


def _check_answers(p, results, ck, what):
    """Every request got an HTTP answer (201, or 503 for an order refused while stopping);
    every 201 is stored, once."""
    acked = 0
    for u, key, r in results:
        if isinstance(r, Exception):
            ck.fail("%s: user %d got no HTTP answer: %s" % (what, u, r))
            continue
        if r.status == 201:
            acked += 1
            cell = find_order_cell(p, u, key)
            ck.true(cell is not None, "%s: acknowledged order of user %d (key %s) is not stored: %r"
                    % (what, u, key, r))
        elif not (r.status == 503 and r.error_code == "unavailable"):
            ck.fail("%s: user %d: expected 201 or 503 unavailable: %r" % (what, u, r))
    ck.true(acked >= 1, "%s: no order was acknowledged at all: %r" % (what, results))
    return acked


@timeout(90)
def test_sigterm_to_a_cell_answers_orders_in_flight():
    os.environ["D11_FAULTS"] = "cell.recv:delay=150ms"
    with Platform(cells=2, durability="sync", request_timeout_ms=5000) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=1000, price=100), 201)
        users = users_for_cell(0, 2, 8, base=7)
        expect(c.order(users[0], [("A", 1)]), 201, "warm-up order on cell-0")
        ths, results = _orders_in_flight(p, users, ck)
        poll(lambda: _inflight(c) >= len(users) // 2, 10, "orders in flight at the gateway", 0.01)
        pid = _signal_child(p, "cell-0", signal.SIGTERM)
        log("SIGTERM cell-0 pid %d with orders in flight" % pid)
        for t in ths:
            t.join(scaled(30))
        poll(lambda: not pid_alive(pid), 10, "cell-0 pid %d to exit after SIGTERM" % pid)
        acked = _check_answers(p, results, ck, "SIGTERM to cell-0")
        print("acknowledged %d of %d orders in flight at SIGTERM" % (acked, len(users)))
        poll(lambda: re.search(r"cell-0 \(pid %d\) exited with status \d+" % pid, p.log_text()), 10,
             "d11 up to log the exit of cell-0")
        m = re.search(r"cell-0 \(pid %d\) exited with status (\d+)" % pid, p.log_text())
        ck.eq(m and int(m.group(1)), 0, "exit status of cell-0 after SIGTERM")
        # Restarted by d11 up; what it acknowledged is read back through it. Under the
        # injected delay the orders in flight were slow (>= 1 s), so cell-0's circuit
        # breaker may be open for a moment: a 503 then is "not yet", not "lost" (bounded).
        poll(lambda: _ready(p), 30, "/readyz 200 after cell-0 restarted")
        for u, key, r in results:
            if not isinstance(r, Exception) and r.status == 201:
                g = until_served(lambda: c.get_order(r.json["order_id"]))
                ck.status(g, 200, "acknowledged order of user %d after the cell restarted" % u)
        p.stop()


@timeout(90)
def test_sigterm_to_up_answers_orders_in_flight():
    """Both cells are stopped (SIGSTOP) while the orders arrive, so every one of them is in
    flight — parsed by the gateway, waiting for its cell — when `d11 up` gets SIGTERM; the
    cells continue right after."""
    with Platform(cells=2, durability="sync", request_timeout_ms=5000) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=1000, price=100), 201)
        users = spread_users(12, base=9)
        for u in (users_for_cell(0, 2, 1, base=4)[0], users_for_cell(1, 2, 1, base=4)[0]):
            expect(c.order(u, [("A", 1)]), 201, "warm-up order")
        pids = p.pids()
        kids = {k: v for k, v in pids.items() if k != "up"}
        stopped = [_signal_child(p, "cell-%d" % i, signal.SIGSTOP) for i in (0, 1)]
        try:
            ths, results = _orders_in_flight(p, users, ck)
            # the /metrics request counts itself
            poll(lambda: _inflight(c) >= len(users) + 1, 10, "every order in flight at the gateway", 0.01)
            c.close()
            os.kill(p.proc.pid, signal.SIGTERM)
            log("SIGTERM d11 up pid %d with %d orders in flight" % (p.proc.pid, len(users)))
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        rc = p.proc.wait(timeout=scaled(30))
        for t in ths:
            t.join(scaled(30))
        ck.eq(rc, 0, "d11 up exit status after SIGTERM with orders in flight")
        for name, pid in kids.items():
            ck.true(not pid_alive(pid), "%s (pid %d) still running after d11 up exited" % (name, pid))
        acked = _check_answers(p, results, ck, "SIGTERM to d11 up")
        print("acknowledged %d of %d orders in flight at SIGTERM" % (acked, len(users)))


def _ping_frame(req_id):
    """A PING request: the 52-byte wire header alone (docs/wire-protocol.md)."""
    return struct.pack("<IBBHHHQII16s8s", 52, 1, 0, 90, 0, 0, req_id, 0, 0, b"\0" * 16, b"\0" * 8)


@timeout(60)
def test_replies_larger_than_the_socket_buffer_are_all_delivered():
    """A gateway connection whose replies back up (the reader pauses while the cell answers
    more than the socket buffer holds) gets every reply once it reads again: the rest is
    written when the socket becomes writable, not only when another reply is queued."""
    n = 100000
    with Platform(cells=1) as p, Checks() as ck:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(scaled(10))
        s.connect(os.path.join(p.data, "cell-0.sock"))
        # Send every request before reading anything: the cell answers them all, more
        # than the socket buffer holds, and must keep the rest until it can write.
        s.sendall(b"".join(_ping_frame(i + 1) for i in range(n)))
        got, buf, seen = 0, b"", set()
        deadline = time.monotonic() + scaled(20)
        try:
            while got < n and time.monotonic() < deadline:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
                off = 0
                while len(buf) - off >= 52:
                    ln, = struct.unpack_from("<I", buf, off)
                    if len(buf) - off < ln:
                        break
                    typ, flags, _, rid, _, status = struct.unpack_from("<HHHQII", buf, off + 6)
                    if typ == 90 and flags & 1 and status == 200:
                        seen.add(rid)
                    got += 1
                    off += ln
                buf = buf[off:]
        except socket.timeout:
            pass
        finally:
            s.close()
        ck.eq(got, n, "replies read back from cell-0 for %d pipelined PINGs" % n)
        ck.eq(len(seen), n, "distinct PING replies (status 200) by req_id")
        p.stop()
