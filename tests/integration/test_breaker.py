"""
test_breaker.py — circuit breakers per upstream (docs/protection.md): SIGSTOP a cell; its
requests time out (504) until its breaker opens; from then on its users get a fast 503
503 unavailable (breaker open) with Retry-After while the other cell's users are served (201); /metrics
shows the breaker open; after SIGCONT the half-open probe succeeds and the breaker closes
(orders for that cell are placed again). The breaker's defaults: 10 calls, 50% errors,
open for 2 s.
"""

import os
import signal
import threading
import time

from harness import Checks, Client, Platform, log, new_key, poll, timeout, users_for_cell


def _metric(c, name, target):
    for line in c.get("/metrics").text.splitlines():
        if line.startswith('%s{target="%s"}' % (name, target)):
            return float(line.rsplit(" ", 1)[1])
    return None


@timeout(90)
def test_stopped_cell_opens_its_breaker_and_others_are_served():
    with Platform(cells=2, threads=1, request_timeout_ms=400) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("BRK-1", stock=100000), 201, "create the product")
        u0 = users_for_cell(0, 2, 30)
        u1 = users_for_cell(1, 2, 30)
        ck.status(c.order(u0[0], [("BRK-1", 1)]), 201, "cell 0 serves before the stop")
        ck.eq(_metric(c, "d11_gateway_breaker_state", "cell-0"), 0, "breaker closed")
        pid = p.pids()["cell-0"]
        os.kill(pid, signal.SIGSTOP)
        log("SIGSTOP cell-0 pid %d" % pid)
        try:
            res, lock = [], threading.Lock()

            def one(uid):
                cl = Client(p.port, token=p.admin_token, timeout_s=10)
                try:
                    r = cl.order(uid, [("BRK-1", 1)], key=new_key("brk"))
                    with lock:
                        res.append(r.status)
                finally:
                    cl.close()

            th = [threading.Thread(target=one, args=(u,)) for u in u0[1:13]]
            for t in th:
                t.start()
            for t in th:
                t.join()
            log("12 orders to the stopped cell: %s" % sorted(res))
            ck.eq(sorted(set(res) - {503, 504}), [], "a stopped cell: 504 (or 503), never a hang")
            poll(lambda: _metric(c, "d11_gateway_breaker_state", "cell-0") == 1, 5, "cell-0 breaker open")
            t0 = time.monotonic()
            r = c.order(u0[20], [("BRK-1", 1)])
            el = time.monotonic() - t0
            ck.status(r, 503, "an order for the stopped cell while its breaker is open")
            ck.eq(r.error_code, "unavailable", "503 code (API.md: a breaker is open)")
            ck.true(r.headers.get("retry-after") == "1", "Retry-After on a breaker refusal")
            ck.true(el < 0.3, "a breaker refusal is answered at once (%.3f s; the timeout is 0.4 s)" % el)
            for u in u1[:5]:
                ck.status(c.order(u, [("BRK-1", 1)]), 201, "the other cell's users are served")
            ck.eq(_metric(c, "d11_gateway_breaker_state", "cell-1"), 0, "cell-1 breaker closed")
            ck.true(_metric(c, "d11_gateway_breaker_opened_total", "cell-0") >= 1, "opened counted")
            ck.true(_metric(c, "d11_gateway_breaker_refused_total", "cell-0") >= 1, "refusals counted")
            ck.true("brk-" in c.get("/").text, "the dashboard shows the breakers")
        finally:
            os.kill(pid, signal.SIGCONT)
            log("SIGCONT cell-0")
        # the probe goes after 2 s; a probe sent while the cell still drains may fail and
        # reopen it for 2 s more: keep ordering until one is placed
        placed = []

        def try_order():
            r = c.order(u0[25], [("BRK-1", 1)], key="brk-after")
            placed.append(r.status)
            return r.status == 201
        poll(try_order, 15, "an order for cell 0 is placed again", interval=0.2)
        log("after SIGCONT: %s" % placed)
        ck.eq(_metric(c, "d11_gateway_breaker_state", "cell-0"), 0, "breaker closed again")
