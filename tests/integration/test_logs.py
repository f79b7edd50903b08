"""
test_logs.py — structured logs (issue 12, part 2), read from the platform's log file:

  - every line of every process (supervisor included) is one JSON object with ts, level,
    proc, pid and msg;
  - with --log-sample 1 every request has an info line with request id (= X-Request-Id),
    route, status, error code, trace id (= the traceparent sent), token label and
    latency; the user id appears only hashed, the Idempotency-Key only cut to 8 bytes;
  - with --log-sample 0 a 5xx (a stopped cell: 504) is still logged at info and a 2xx is
    not; PUT /admin/log-level debug makes the 2xx appear at once (no restart), a bad level
    is 422, and the change itself is logged with the token label;
  - the level of ONE process (target "cell:0") changes at run time over the control
    channel: GET shows every process's level, and only that cell writes debug lines,
    until it is set back;
  - slow requests and slow commits (a store.commit delay fault, thresholds
    --slow-request-ms / --slow-commit-ms) are logged at warn and counted in /metrics;
  - a rules change through PUT /admin/rules is logged with who (token label) and a diff
    of the changed keys.
"""

import json
import os
import re
import signal
import threading

from harness import Checks, Platform, new_key, poll, scaled, timeout

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _lines(p):
    out = []
    for ln in p.log_text().splitlines():
        if not ln.strip() or ln.startswith("[") or ln.startswith("-----"):
            continue
        out.append(ln)
    return out


def _json_lines(p, ck):
    objs = []
    for ln in _lines(p):
        try:
            o = json.loads(ln)
        except ValueError:
            ck.fail("log line is not JSON: %r" % ln)
            continue
        ck.true(isinstance(o, dict) and all(k in o for k in ("ts", "level", "proc", "pid", "msg")),
                "log line has ts/level/proc/pid/msg: %r" % ln)
        objs.append(o)
    return objs


def _requests(p, ck, **match):
    return [o for o in _json_lines(p, ck) if o.get("event") == "request" and
            all(o.get(k) == v for k, v in match.items())]


@timeout(60)
def test_request_log_fields_and_masking():
    with Checks() as ck, Platform(cells=2, extra_args=["--log-sample", "1"]) as p:
        tok = p.token_create("orders,read", label="shop-frontend")
        admin = p.client()
        ck.status(admin.create_product("LOG-1", stock=1), 201, "create")
        c = p.client(token=tok)
        key_ok, key_oos = new_key("secretkey"), new_key("secretkey")
        r1 = c.order(987654321, [("LOG-1", 1)], key=key_ok)
        ck.status(r1, 201, "order")
        r2 = c.order(987654321, [("LOG-1", 1)], key=key_oos,
                     headers={"traceparent": "00-%s-00f067aa0ba902b7-01" % TRACE})
        ck.status(r2, 409, "out of stock")
        rid = r2.headers.get("x-request-id") or r2.headers.get("X-Request-Id")

        def logged():
            ls = _requests(p, ck, request_id=rid)
            return ls or None
        ls = poll(logged, scaled(5), "request log line of the 409")
        o = ls[0]
        ck.eq(o["level"], "info", "sampled request at info")
        ck.eq(o["route"], "orders.create", "route")
        ck.eq(o["status"], 409, "status")
        ck.eq(o["code"], "out_of_stock", "error code")
        ck.eq(o["trace_id"], TRACE, "trace id continued from traceparent")
        ck.eq(o["token"], "shop-frontend", "token label")
        ck.true(isinstance(o["latency_us"], int) and o["latency_us"] >= 0, "latency_us: %r" % o)
        ck.true(re.match(r"^u:[0-9a-f]{16}$", o.get("user", "")) is not None, "user hashed: %r" % o)
        ck.eq(o.get("key"), key_oos[:8] + "...", "key truncated")
        ok = _requests(p, ck, route="orders.create", status=201)
        ck.true(len(ok) == 1 and ok[0]["user"] == o["user"], "same user, same hash: %r" % ok)
        text = p.log_text()
        ck.true("987654321" not in text, "the user id never appears in clear")
        ck.true(key_ok not in text and key_oos not in text, "the full keys never appear")
        ck.true(any(x.get("proc") == "up" for x in _json_lines(p, ck)), "the supervisor logs JSON too")
        p.stop()


@timeout(60)
def test_5xx_always_level_at_runtime_and_rules_diff():
    with Checks() as ck, Platform(cells=2, request_timeout_ms=300,
                                  extra_args=["--log-sample", "0"]) as p:
        c = p.client()
        ck.status(c.create_product("LOG-2", stock=100), 201, "create")
        ck.status(c.order(1, [("LOG-2", 1)], key=new_key()), 201, "order before")
        ck.eq(_requests(p, ck, route="orders.create", status=201), [], "a 2xx is not logged at info")
        # a 5xx: both cells stopped, the gateway answers 504 after its request timeout
        pids = p.pids()
        for n in ("cell-0", "cell-1"):
            os.kill(pids[n], signal.SIGSTOP)
        try:
            r = c.order(2, [("LOG-2", 1)], key=new_key())
            ck.true(r.status in (503, 504), "stopped cells: 5xx, got %r" % r)
        finally:
            for n in ("cell-0", "cell-1"):
                os.kill(pids[n], signal.SIGCONT)
        five = poll(lambda: _requests(p, ck, route="orders.create", status=r.status) or None, scaled(5),
                    "5xx logged")
        ck.eq(five[0]["level"], "info", "5xx at info")
        ck.true(five[0]["code"] in ("timeout", "unavailable"), "5xx code: %r" % five[0])
        # level at run time
        g = c.get("/admin/log-level")
        ck.status(g, 200, "GET log-level")
        ck.eq((g.json["level"], g.json["processes"]["gateway"]), ("info", "info"), "level info")
        ck.error(c.request("PUT", "/admin/log-level", {"level": "loud"}), 422, "invalid")
        ck.status(c.request("PUT", "/admin/log-level", {"level": "debug"}), 200, "PUT debug (old body: every process)")
        ck.eq(c.get("/admin/log-level").json["level"], "debug", "level now debug")
        ck.status(c.order(3, [("LOG-2", 1)], key=new_key()), 201, "order after")
        dbg = poll(lambda: _requests(p, ck, route="orders.create", status=201, level="debug") or None,
                   scaled(5), "2xx logged at debug after the change")
        ck.true(len(dbg) >= 1, "debug request line")
        ch = [o for o in _json_lines(p, ck) if o.get("event") == "log_level" and o["proc"] == "gateway"]
        ck.true(len(ch) == 1 and ch[0]["token"] == "admin" and ch[0]["new"] == "debug",
                "level change logged with who: %r" % ch)
        # a rules change: who and a diff
        cur = c.get("/admin/rules").json
        ver = cur.get("version", 0)
        body = dict(cur)
        body["degrade"] = {"orders.pay": True}
        ck.status(c.request("PUT", "/admin/rules", body), 200, "PUT rules")
        rc = poll(lambda: [o for o in _json_lines(p, ck) if o.get("event") == "rules_change"] or None,
                  scaled(5), "rules change logged")
        o = rc[-1]
        ck.eq(o["token"], "admin", "who")
        ck.eq(o["from_version"], ver, "from version")
        ck.eq(o["to_version"], ver + 1, "to version")
        ck.true(isinstance(o.get("diff"), dict) and "degrade" in o["diff"] and
                o["diff"]["degrade"]["new"] != o["diff"]["degrade"]["old"] and "flow" not in o["diff"],
                "diff names degrade only: %r" % o)
        p.stop()


@timeout(60)
def test_slow_requests_and_commits_logged_and_counted():
    os.environ["D11_FAULTS"] = "store.commit:delay=30ms"  # the platform's processes inherit it
    p = Platform(cells=2, extra_args=["--slow-request-ms", "20", "--slow-commit-ms", "20",
                                      "--log-sample", "0"])
    with Checks() as ck, p:
        del os.environ["D11_FAULTS"]
        c = p.client()
        ck.status(c.create_product("SLOW-1", stock=10), 201, "create")
        ck.status(c.order(5, [("SLOW-1", 1)], key=new_key()), 201, "order (commit delayed 30 ms)")
        sc = poll(lambda: [o for o in _json_lines(p, ck) if o.get("event") == "slow_commit"] or None,
                  scaled(5), "slow commit logged")
        ck.eq(sc[0]["level"], "warn", "slow commit at warn")
        ck.true(sc[0]["latency_us"] >= 20000, "slow commit latency: %r" % sc[0])
        sr = _requests(p, ck, route="orders.create", status=201)
        ck.true(len(sr) == 1 and sr[0]["slow"] is True and sr[0]["level"] == "warn",
                "slow request logged at warn: %r" % sr)
        t = c.get("/metrics", token=None).text
        ck.true(re.search(r'^d11_gateway_slow_requests_total\{route="orders.create"\} 1$', t, re.M),
                "slow request counted")
        m = re.findall(r'^d11_cell_slow_commits_total\{part="cell-\d"\} (\d+)$', t, re.M)
        ck.true(sum(int(x) for x in m) >= 1, "slow commits counted: %r" % m)
        p.stop()


def _proc_lines(p, ck, proc):
    return [o for o in _json_lines(p, ck) if o.get("proc") == proc]


@timeout(60)
def test_log_level_per_process_at_runtime():
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        poll(lambda: all(v is not None for v in c.get("/admin/log-level").json["processes"].values()),
             scaled(10), "every process answers the control channel")
        ck.eq(c.get("/admin/log-level").json["processes"],
              {"gateway": "info", "center": "info", "cell-0": "info", "cell-1": "info"}, "all info")
        ck.error(c.request("PUT", "/admin/log-level", {"level": "debug", "target": "cell:7"}), 422, "invalid",
                 what="no cell 7")
        r = c.request("PUT", "/admin/log-level", {"level": "debug", "target": "cell:0"})
        ck.status(r, 200, "PUT cell:0 debug")
        want = {"gateway": "info", "center": "info", "cell-0": "debug", "cell-1": "info"}
        ck.eq(r.json["processes"], want, "only cell 0 changed")
        ck.eq(c.get("/admin/log-level").json["processes"], want, "GET shows it")
        ck.status(c.create_product("LOG-4", stock=10), 201, "create")
        ck.status(c.order(1, [("LOG-4", 1)], key=new_key()), 201, "order")
        dbg = poll(lambda: [o for o in _proc_lines(p, ck, "cell-0") if o["level"] == "debug"] or None,
                   scaled(5), "cell 0 writes debug lines")
        ck.true(len(dbg) >= 1, "debug lines of cell 0: %r" % dbg[:2])
        ck.eq([o for o in _proc_lines(p, ck, "cell-1") if o["level"] == "debug"], [], "cell 1 stays at info")
        ck.eq([o for o in _proc_lines(p, ck, "center") if o["level"] == "debug"], [], "the center stays at info")
        # back to info, then a marker change to warn: nothing at debug from cell 0 in between
        ck.status(c.request("PUT", "/admin/log-level", {"level": "info", "target": "cell:0"}), 200, "back to info")
        c.get("/admin/log-level")
        ck.status(c.order(2, [("LOG-4", 1)], key=new_key()), 201, "order at info")
        ck.status(c.request("PUT", "/admin/log-level", {"level": "warn", "target": "cell:0"}), 200, "marker: warn")

        def between():
            ls = _proc_lines(p, ck, "cell-0")
            ch = [i for i, o in enumerate(ls) if o.get("event") == "log_level"]
            return (ls, ch) if len(ch) >= 3 else None
        ls, ch = poll(between, scaled(5), "cell 0 logged its three level changes")
        ck.eq([ls[i]["new"] for i in ch[:3]], ["debug", "info", "warn"], "the changes, in order")
        ck.eq([o for o in ls[ch[1] + 1:ch[2]] if o["level"] == "debug"], [], "no debug line once back at info")
        ck.eq(c.get("/admin/log-level").json["processes"]["cell-0"], "warn", "cell 0 at warn")
