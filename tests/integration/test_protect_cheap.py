"""
test_protect_cheap.py — what the overload work of issue 11 added to adaptive protection
(docs/protection.md, "The refusal path" and "CPU priority"), checked for behaviour, not
speed (bench/protect.sh measures goodput and p99):

  - `d11 up --gateway-nice N` runs the gateway N nice levels below the cells, the center
    and the supervisor, set before exec so every gateway thread has it (default 0);
  - under a burst far above capacity every refusal is still a 503 "unavailable" with
    Retry-After, X-Request-Id and traceparent, answered on a kept-alive connection, but
    the request log holds at most one line per second for them (plus a count of the
    unlogged ones), where every 503 used to write a line; admitted orders are real.
"""

import json
import os

from harness import Checks, Platform, log, order_burst, timeout

BURST = 48
PER_CLIENT = 4


def _nice(pid):
    with open("/proc/%d/stat" % pid) as f:
        st = f.read()
    return int(st[st.rindex(")") + 2:].split()[16])  # field 19: nice


# threads that lower themselves below the request path (core/util.h d11_thread_background)
BACKGROUND = ("d11-relay", "d11-stats", "d11-hooks", "d11-events")


def _task_nices(pid, background=False):
    """Nice of every thread of pid: the request-serving ones, or (background=True) the
    background consumers, which run D11_BACKGROUND_NICE (5) below them."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            st = f.read()
        if (st[st.index("(") + 1:st.rindex(")")] in BACKGROUND) == background:
            out.append(int(st[st.rindex(")") + 2:].split()[16]))
    return out


@timeout(60)
def test_gateway_nice_is_applied():
    """--gateway-nice N is an increment over up's own nice (nice(2) in the forked child
    before exec, so every gateway thread has it), clamped at 19; default 0. Under
    `nice -n 19` only the clamp is visible in /proc, so up's log line is checked too."""
    with Platform(cells=2, threads=2, extra_args=["--gateway-nice", "5"]) as p, Checks() as ck:
        pids = p.pids()
        base = _nice(pids["up"])
        want = min(19, base + 5)
        ck.eq(_nice(pids["gateway"]), want, "gateway nice (up's %d + --gateway-nice 5)" % base)
        ck.true(all(n == want for n in _task_nices(pids["gateway"])),
                "every request-serving gateway thread runs at nice %d: %s" % (want, _task_nices(pids["gateway"])))
        bg = _task_nices(pids["gateway"], background=True)
        ck.true(bg and all(n == min(19, want + 5) for n in bg),
                "the gateway's background consumers run 5 below it (%d): %s" % (min(19, want + 5), bg))
        for name in ("center", "cell-0", "cell-1"):
            ck.eq(_nice(pids[name]), base, "%s runs at up's nice" % name)
        with open(p.log_paths[-1]) as f:
            ck.true(any('"started gateway' in l and "nice +5" in l for l in f),
                    "up says it started the gateway at nice +5")
        if base + 5 > 19:
            log("up runs at nice %d: the /proc check only sees the clamp at 19" % base)
    with Platform(cells=1) as p, Checks() as ck:
        pids = p.pids()
        ck.eq(_nice(pids["gateway"]), _nice(pids["up"]), "default: the gateway at up's nice")


def _burst(p, token):
    return order_burst(p.port, token, "CHEAP-1", BURST, PER_CLIENT, 2000, "cheap")


@timeout(90)
def test_refusals_are_cheap_and_not_logged_one_by_one():
    os.environ["D11_FAULTS"] = "cell.recv:delay=5ms"
    os.environ["D11_FAULT_SEED"] = "1"
    try:
        p = Platform(cells=2, threads=1, request_timeout_ms=3000,
                     extra_args=["--protect-inflight-min", "2"])
        with p, Checks() as ck:
            c = p.client()
            ck.status(c.create_product("CHEAP-1", stock=100000), 201, "create the product")
            res = _burst(p, p.admin_token)
            codes = {}
            for st, _h, _j, _e in res:
                codes[st] = codes.get(st, 0) + 1
            log("burst: %s" % codes)
            ck.eq(sorted(set(codes) - {201, 503}), [], "only 201 and 503")
            n503 = codes.get(503, 0)
            ck.true(n503 >= 20, "many refusals to count (%d)" % n503)
            for st, h, j, _e in res:
                if st != 503:
                    continue
                err = (j or {}).get("error", {})
                ck.eq(err.get("code"), "unavailable", "503 code")
                ck.true(err.get("message", "").startswith("overloaded:"), "overloaded message")
                ck.eq(err.get("request_id"), h.get("x-request-id"), "body request_id == X-Request-Id")
                ck.eq(h.get("retry-after"), "1", "Retry-After: 1")
                ck.true(len(h.get("traceparent", "")) == 55, "traceparent on the refusal")
                ck.true(h.get("connection", "").lower() != "close", "the connection is kept")
            for st, _h, j, _e in res:
                if st == 201:
                    ck.status(c.get_order(j["order_id"]), 200, "an admitted order exists")
            st = c.get("/admin/protect").json
            ck.eq(st["refused"]["inflight"] + st["refused"]["rt"], n503, "every refusal counted")
            logged = unlogged = 0
            with open(p.log_paths[-1]) as f:
                for line in f:
                    if '"proc":"gateway"' not in line:
                        continue
                    o = json.loads(line)
                    if o.get("event") == "request" and o.get("status") == 503:
                        logged += 1
                    if o.get("event") == "protect_refusals":
                        unlogged += int(o["msg"].split()[0])
            log("503 lines: %d, summarised: %d, refused: %d" % (logged, unlogged, n503))
            ck.true(logged >= 1, "the first refusal of a second is logged")
            ck.true(logged <= 10, "refusals are not logged one by one (%d lines for %d)" % (logged, n503))
            ck.true(logged + unlogged <= n503, "no refusal counted twice in the log")
    finally:
        os.environ.pop("D11_FAULTS", None)
        os.environ.pop("D11_FAULT_SEED", None)
