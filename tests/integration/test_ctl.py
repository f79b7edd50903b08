"""
test_ctl.py — the operator's verbs of `d11 ctl` (issue 12, part 3) against a running
platform, with the defaults taken from D11_URL / D11_DATA (no --url, no --token-file):

  - degrade on|off RES, flow set RES --qps --burst, deny-user add|remove, rules patch: each
    changes only its part of the rules (the defect of the issue: `rules put` with
    {"degrade":...} silently dropped the flow limits and the deny list), and takes effect
    (503 degraded, 403 risk_rejected); every change is logged by the gateway with who and
    a diff;
  - a read-modify-write that loses the race (the version moved between its GET and PUT) is
    retried and keeps the other writer's change;
  - tables by default (cells, rules get, token list), the gateway's JSON with --json;
  - token create --expires (accepted, then 401 once expired), token list, token revoke
    (401 within the reload interval);
  - request --header sends the header (an Idempotency-Key: the same order twice);
  - log-level reads and sets the level of every process, or of one target (cell:N).
"""

import json
import os
import threading
import time

from harness import Checks, Client, Platform, new_key, poll, run_cli, scaled, timeout


def _env(p):
    return {"D11_URL": "http://127.0.0.1:%d" % p.port, "D11_DATA": p.data, "D11_TOKEN": "",
            "D11_TOKEN_FILE": ""}


def _ctl(p, *args):
    return run_cli(["ctl"] + list(args), env=_env(p))


def _ok(ck, cp, what):
    ck.true(cp.returncode == 0, "%s: exit %d, stdout %r, stderr %r" % (what, cp.returncode, cp.stdout, cp.stderr))
    return cp.stdout


@timeout(90)
def test_rule_verbs_change_only_their_part():
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        _ok(ck, _ctl(p, "flow", "set", "orders.create", "--qps", "5000", "--burst", "9000"), "flow set")
        _ok(ck, _ctl(p, "deny-user", "add", "77"), "deny add 77")
        _ok(ck, _ctl(p, "deny-user", "add", "78"), "deny add 78")
        _ok(ck, _ctl(p, "deny-user", "remove", "77"), "deny remove 77")
        out = _ok(ck, _ctl(p, "degrade", "on", "orders.pay"), "degrade on")
        ck.true("degrade orders.pay on" in out, "human answer: %r" % out)
        r = c.get("/admin/rules").json
        ck.eq(r["flow"].get("orders.create"), {"qps": 5000, "burst": 9000}, "flow kept after degrade")
        ck.eq(r["risk"]["deny_users"], [78], "deny list kept after degrade")
        ck.eq(r["degrade"]["orders.pay"], True, "degrade set")
        # the effect of the switches
        ck.status(c.create_product("CTL-1", stock=10), 201, "create")
        o = c.order(5, [("CTL-1", 1)], key=new_key())
        ck.status(o, 201, "order")
        ck.error(c.pay(o.json["order_id"], "pay-1"), 503, "degraded", what="pay while degraded")
        ck.error(c.order(78, [("CTL-1", 1)], key=new_key()), 403, "risk_rejected", what="denied user")
        # partial update: only degrade changes
        _ok(ck, _ctl(p, "rules", "patch", '{"degrade":{"orders.pay":false}}'), "rules patch")
        r2 = c.get("/admin/rules").json
        ck.eq(r2["degrade"]["orders.pay"], False, "patched off")
        ck.eq(r2["flow"].get("orders.create"), {"qps": 5000, "burst": 9000}, "flow kept after patch")
        ck.eq(r2["risk"]["deny_users"], [78], "deny list kept after patch")
        ck.status(c.pay(o.json["order_id"], "pay-1"), 200, "pay after degrade off")
        _ok(ck, _ctl(p, "flow", "clear", "orders.create"), "flow clear")
        ck.true("orders.create" not in c.get("/admin/rules").json["flow"], "flow cleared")
        # tables and --json
        t = _ok(ck, _ctl(p, "rules", "get"), "rules get")
        ck.true(t.splitlines()[1].split() == ["RULE", "RESOURCE", "SETTING"] and "risk     deny_users           [78]" in t,
                "rules table: %r" % t)
        j = json.loads(_ok(ck, _ctl(p, "--json", "rules", "get"), "rules get --json"))
        ck.eq(j["risk"]["deny_users"], [78], "--json is the document")
        cells = _ok(ck, _ctl(p, "cells"), "cells")
        rows = cells.splitlines()
        ck.true(rows[0].split()[:3] == ["PART", "UP", "LATENCY_MS"] and any(l.startswith("cell-1") for l in rows),
                "cells table: %r" % cells)
        jc = json.loads(_ok(ck, _ctl(p, "--json", "cells"), "cells --json"))
        ck.eq(len(jc["cells"]), 2, "--json cells")
        # every change logged with who and a diff
        log = [json.loads(l) for l in p.log_text().splitlines() if '"rules_change"' in l]
        ck.true(len(log) >= 7 and all(x["token"] == "admin" for x in log), "changes logged: %d" % len(log))
        ck.true(any(list(x["diff"].keys()) == ["degrade"] for x in log), "a diff naming degrade only")
        p.stop()


@timeout(60)
def test_rmw_retries_on_a_version_conflict():
    """Many concurrent deny-user adds: each reads, edits and PUTs with the version it read;
    the losers get 409 and start over; in the end every id is in the list."""
    with Checks() as ck, Platform(cells=2) as p:
        ids = list(range(1001, 1009))
        res = {}

        def one(u):
            res[u] = _ctl(p, "deny-user", "add", str(u))
        ts = [threading.Thread(target=one, args=(u,)) for u in ids]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for u in ids:
            _ok(ck, res[u], "deny-user add %d" % u)
        got = sorted(p.client().get("/admin/rules").json["risk"]["deny_users"])
        ck.eq(got, ids, "no lost update")
        p.stop()


@timeout(60)
def test_tokens_request_header_and_log_level():
    with Checks() as ck, Platform(cells=2) as p:
        tok = _ok(ck, _ctl(p, "token", "create", "--scopes", "read,orders", "--label", "kiosk"), "create").strip()
        exp = _ok(ck, _ctl(p, "token", "create", "--scopes", "read", "--label", "temp", "--expires", "2s"),
                  "create --expires").strip()
        lst = _ok(ck, _ctl(p, "token", "list"), "list")
        ck.true(any(l.startswith("kiosk") for l in lst.splitlines()) and "temp" in lst and tok not in lst,
                "table lists labels, never tokens: %r" % lst)
        jl = json.loads(_ok(ck, _ctl(p, "--json", "token", "list"), "list --json"))
        ck.eq(sorted(x["label"] for x in jl["tokens"]), ["admin", "kiosk", "temp"], "--json list")

        def status(t):
            return Client(p.port, t).get("/admin/log-level" if False else "/v1/products/NOPE").status
        poll(lambda: status(tok) == 404, scaled(5), "the kiosk token is accepted")
        ck.true(status(exp) in (404, 401), "the expiring token works until it expires")
        poll(lambda: status(exp) == 401, scaled(10), "the expiring token is refused once expired")
        _ok(ck, _ctl(p, "token", "revoke", "kiosk"), "revoke")
        poll(lambda: status(tok) == 401, scaled(5), "the revoked token is refused")
        ck.true("kiosk" not in _ctl(p, "token", "list").stdout, "revoked token gone from the list")
        ck.true(_ctl(p, "token", "revoke", "nobody").returncode == 1, "revoking an unknown label fails")
        # request --header
        c = p.client()
        ck.status(c.create_product("HDR-1", stock=5), 201, "create")
        key = new_key("hdr")
        body = '{"user_id":3,"items":[{"sku":"HDR-1","quantity":1}]}'
        a = _ok(ck, _ctl(p, "request", "--header", "Idempotency-Key: " + key, "POST", "/v1/orders", body), "post 1")
        b = _ok(ck, _ctl(p, "request", "--header", "Idempotency-Key: " + key, "POST", "/v1/orders", body), "post 2")
        ck.eq(json.loads(a)["order_id"], json.loads(b)["order_id"], "same key -> same order (header sent)")
        ck.true(_ctl(p, "request", "--header", "bad", "GET", "/healthz").returncode == 2, "bad header: usage")
        # log level
        ck.eq(json.loads(_ok(ck, _ctl(p, "log-level"), "get"))["level"], "info", "level")
        ck.eq(json.loads(_ok(ck, _ctl(p, "log-level", "warn"), "set"))["level"], "warn", "set")
        ck.eq(c.get("/admin/log-level").json["level"], "warn", "level changed in the gateway")
        _ok(ck, _ctl(p, "log-level", "debug", "cell:1"), "set one cell")
        procs = c.get("/admin/log-level").json["processes"]
        ck.eq(procs.get("cell-1"), "debug", "cell 1 at debug")
        ck.eq(procs.get("cell-0"), "warn", "cell 0 untouched")
        ck.eq(procs.get("gateway"), "warn", "gateway untouched")
        ck.true(_ctl(p, "log-level", "debug", "cell 1").returncode == 2, "bad target: usage")
        p.stop()
