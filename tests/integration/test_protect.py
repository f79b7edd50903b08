"""
test_protect.py — the gateway's system adaptive protection (docs/protection.md), checked
for behaviour, not speed (bench/protect.sh measures goodput and p99).

The cells are made slow on purpose (D11_FAULTS cell.recv:delay=5ms: each cell handles at
most ~200 frames/s), the in-flight floor is lowered to 4, and a burst of concurrent order
requests far above that capacity arrives at once:

  - protection on: every request is answered well within the request timeout (no 504, no
    connection left hanging); the excess gets 503 "unavailable" (overloaded) with Retry-After; every
    admitted request (201) placed a real order (GET finds it); /admin/protect and
    /metrics count the refusals.
  - protection off (the same burst): nothing is refused — which is what makes the first
    half fail if the check is removed.
"""

import json
import os
import time

from harness import Checks, Platform, log, order_burst, timeout

BURST = 48         # concurrent clients
PER_CLIENT = 3     # orders each, back to back


def _burst(p, token):
    return order_burst(p.port, token, "PROT-1", BURST, PER_CLIENT, 1000, "prot")


def _platform(protect):
    os.environ["D11_FAULTS"] = "cell.recv:delay=5ms"
    os.environ["D11_FAULT_SEED"] = "1"
    return Platform(cells=2, threads=1, request_timeout_ms=3000,
                    extra_args=["--protect", protect, "--protect-inflight-min", "4"])


@timeout(90)
def test_overload_gets_fast_503_with_retry_after():
    with _platform("on") as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("PROT-1", stock=100000), 201, "create the product")
        res = _burst(p, p.admin_token)
        n = len(res)
        codes = {}
        for st, _h, _j, _e in res:
            codes[st] = codes.get(st, 0) + 1
        log("burst of %d: %s" % (n, codes))
        ck.eq(n, BURST * PER_CLIENT, "every request answered")
        ck.eq(sorted(set(codes) - {201, 503}), [], "only 201 and 503 (no 504, no other error)")
        ck.true(codes.get(503, 0) > 0, "the excess is refused (503 overloaded): %s" % codes)
        ck.true(codes.get(201, 0) > 0, "some requests are admitted: %s" % codes)
        slowest = max(e for *_x, e in res)
        ck.true(slowest < 2.5, "no request waits near the 3 s timeout (slowest %.3f s)" % slowest)
        for st, h, j, e in res:
            if st == 503:
                ck.eq((j or {}).get("error", {}).get("code"), "unavailable", "503 code (API.md)")
                ck.true(h.get("retry-after", "").isdigit() and int(h["retry-after"]) >= 1,
                        "503 carries Retry-After (%r)" % h.get("retry-after"))
        for st, _h, j, _e in res:
            if st == 201:
                ck.status(c.get_order(j["order_id"]), 200, "an admitted order exists")
        pr = c.get("/admin/protect")
        ck.status(pr, 200, "GET /admin/protect")
        st = pr.json
        ck.true(st["on"] and st["refused"]["inflight"] + st["refused"]["rt"] == codes.get(503, 0),
                "/admin/protect counts every refusal: %s" % json.dumps(st))
        ck.eq(st["inflight"], 0, "nothing left in flight")
        m = c.get("/metrics").text
        ck.true('d11_gateway_protect_refused_total{reason="inflight"} %d' % codes.get(503, 0) in m
                or st["refused"]["rt"], "metrics count the refusals")


@timeout(90)
def test_without_protection_nothing_is_refused():
    with _platform("off") as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product("PROT-1", stock=100000), 201, "create the product")
        t0 = time.monotonic()
        res = _burst(p, p.admin_token)
        codes = {}
        for st, *_x in res:
            codes[st] = codes.get(st, 0) + 1
        log("burst of %d without protection: %s in %.2f s" % (len(res), codes, time.monotonic() - t0))
        ck.eq(codes.get(503, 0), 0, "protection off: no 503 overloaded")
        ck.eq(c.get("/admin/protect").json["on"], False, "/admin/protect says off")
