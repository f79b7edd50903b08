"""
test_chaos.py — live chaos experiments (issue 11 item 6; docs/reliability.md "Live chaos"):

  - a store.commit delay on cell 0 for 2 s: that cell's orders take the delay and its
    d11_fault_fired_total counter rises; then, with no DELETE, the gateway reports it
    expired, the cell itself reports the arm gone, its orders are fast again and the
    counter stops rising (each process enforces its own expiry);
  - bad bodies are 400 with a named code and change nothing; an overlapping experiment is
    409; DELETE is idempotent (200 twice), an unknown id 404;
  - an error experiment on gateway.upstream makes orders fail fast with 503, and they are
    served again after DELETE;
  - `d11 ctl chaos`: pause-cell stops the cell (state T) and it resumes by itself; kill-cell
    kills it and `d11 up` restarts it; fill-disk leaves a ballast that disappears at its
    timeout; slow-commits creates a store.commit experiment.
Every wait is a poll with a deadline.
"""

import json
import os
import re
import time

from harness import Checks, Platform, new_key, poll, run_cli, scaled, timeout, users_for_cell

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _fired(c, part, point):
    pat = 'd11_fault_fired_total{part="%s",point="%s"} ' % (part, point)
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(pat):
            return int(float(line.rsplit(" ", 1)[1]))
    return None


def _control_ready(c):
    """Every process answers the control channel on this client's gateway thread."""
    poll(lambda: all(v is not None for v in c.get("/admin/log-level").json["processes"].values()),
         10, "every process answers GET /admin/log-level")


def _exp(c, eid):
    return [e for e in c.get("/admin/chaos").json["experiments"] if e["id"] == eid]


def _timed_order(c, user, sku):
    t0 = time.monotonic()
    r = c.order(user, [(sku, 1)], key=new_key())
    return r, time.monotonic() - t0


@timeout(90)
def test_store_commit_delay_slows_one_cell_then_disarms_itself():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        _control_ready(c)
        ck.status(c.create_product("CH-1", stock=1000), 201, "create")
        u0 = users_for_cell(0, 2, 8)
        u1 = users_for_cell(1, 2, 4)
        ck.status(c.order(u0[0], [("CH-1", 1)], key=new_key()), 201, "warm cell 0")
        before = _fired(c, "cell-0", "store.commit")
        ck.eq(before, 0, "counter before the experiment")
        t_wall = int(time.time() * 1000)
        r = c.post("/admin/chaos", {"target": "cell:0", "point": "store.commit", "action": "delay",
                                    "params": {"ms": 300}, "timeout_s": 2})
        ck.status(r, 201, "create the experiment")
        eid = r.json["id"]
        ck.true(HEX16.match(eid), "id is 16 hex digits: %r" % eid)
        ck.true(abs(r.json["expires_at"] - (t_wall + 2000)) < 1500, "expires_at ~ now + 2 s: %r" % r.json)
        g = c.get("/admin/chaos/" + eid)
        ck.status(g, 200, "GET one")
        ck.eq(g.json["experiment"]["state"], "armed", "armed")
        ck.eq(g.json["live"], {"cell-0": True}, "armed in cell 0 only")
        for u in u0[1:3]:
            r, dt = _timed_order(c, u, "CH-1")
            ck.status(r, 201, "order on the slowed cell")
            ck.true(dt >= 0.25, "a commit on cell 0 takes the 300 ms delay: %.3f s" % dt)
        during = _fired(c, "cell-0", "store.commit")
        ck.true(during >= 2, "fault counter rose: %r" % during)
        ck.status(c.order(u1[0], [("CH-1", 1)], key=new_key()), 201, "cell 1 serves")
        ck.eq(_fired(c, "cell-1", "store.commit"), 0, "cell 1 is not hit")
        # nobody deletes it: the gateway's record expires...
        poll(lambda: _exp(c, eid)[0]["state"] == "expired", 10, "the experiment shows expired")
        # ...and the cell's own clock disarmed its arm (no disarm was ever sent)
        poll(lambda: c.get("/admin/chaos/" + eid).json["live"] == {"cell-0": False}, 10,
             "cell 0 reports the arm gone")
        after = _fired(c, "cell-0", "store.commit")
        for u in u0[3:6]:
            r, dt = _timed_order(c, u, "CH-1")
            ck.status(r, 201, "order after expiry")
            ck.true(dt < 0.25, "fast again after expiry: %.3f s" % dt)
        ck.eq(_fired(c, "cell-0", "store.commit"), after, "the counter stopped rising")
        lg = p.log_text()
        ck.true('"event":"fault_arm"' in lg and '"event":"fault_disarm"' in lg,
                "arm and expiry are logged by the cell")


@timeout(90)
def test_bad_bodies_conflicts_delete_and_gateway_upstream_errors():
    with Platform(cells=2, threads=1) as p, Checks() as ck:
        c = p.client()
        _control_ready(c)
        ck.status(c.create_product("CH-2", stock=1000), 201, "create")
        u = users_for_cell(0, 2, 1)[0]
        ok = {"target": "cell:0", "point": "store.commit", "action": "delay", "params": {"ms": 10}, "timeout_s": 5}

        def with_(**kw):
            d = dict(ok)
            d.update(kw)
            return {k: v for k, v in d.items() if v is not None}
        bad = [
            ("not json", "bad_json"),
            ({}, "bad_target"),
            (with_(target="cell:9"), "bad_target"),
            (with_(target="everything"), "bad_target"),
            (with_(point="disk.melt"), "bad_point"),
            (with_(target="gateway"), "bad_target"),          # store.commit runs in cells
            (with_(point="center.grant"), "bad_target"),      # center.grant runs in the center
            (with_(action="drop"), "bad_action"),             # store.commit: delay | error
            (with_(action="explode"), "bad_action"),
            (with_(params=None), "bad_params"),               # a delay needs ms
            (with_(params={"ms": 0}), "bad_params"),
            (with_(params={"ms": 10001}), "bad_params"),
            (with_(params={"ms": 10, "percent": 0}), "bad_params"),
            (with_(params={"ms": 10, "percent": 101}), "bad_params"),
            (with_(params={"ms": 10, "jitter": 1}), "bad_params"),
            (with_(action="error", params={"ms": 10}), "bad_params"),
            (with_(timeout_s=None), "bad_timeout"),
            (with_(timeout_s=0), "bad_timeout"),
            (with_(timeout_s=3601), "bad_timeout"),
            (with_(timeout_s="5"), "bad_timeout"),
            (with_(colour="red"), "unknown_field"),
        ]
        for body, code in bad:
            r = c.request("POST", "/admin/chaos", body)
            ck.error(r, 400, code, what="bad body %r" % (body,))
        ck.eq(c.get("/admin/chaos").json, {"experiments": []}, "bad bodies changed nothing")
        ck.eq(_fired(c, "cell-0", "store.commit"), 0, "nothing armed")
        # gateway.upstream error: forwarded requests fail fast with 503
        r = c.post("/admin/chaos", {"target": "gateway", "point": "gateway.upstream", "action": "error",
                                    "timeout_s": 60})
        ck.status(r, 201, "create gateway.upstream error")
        eid = r.json["id"]
        r, dt = _timed_order(c, u, "CH-2")
        ck.error(r, 503, "unavailable", what="order under gateway.upstream error")
        ck.true(dt < 1.0, "a fast refusal, not a timeout: %.3f s" % dt)
        ck.true(_fired(c, "gateway", "gateway.upstream") >= 1, "the gateway's counter rose")
        ck.status(c.get("/healthz"), 200, "probes are not hit")
        # the same point in the same process again: conflict
        r = c.post("/admin/chaos", {"target": "gateway", "point": "gateway.upstream", "action": "drop",
                                    "timeout_s": 5})
        ck.error(r, 409, "experiment_conflict", what="overlapping experiment")
        # DELETE: 200, again 200, unknown 404
        d1 = c.request("DELETE", "/admin/chaos/" + eid)
        ck.status(d1, 200, "DELETE")
        ck.eq(d1.json["experiment"]["state"], "destroyed", "destroyed")
        ck.eq(d1.json["live"], {"gateway": False}, "disarmed in the gateway")
        ck.status(c.request("DELETE", "/admin/chaos/" + eid), 200, "DELETE again (idempotent)")
        ck.error(c.request("DELETE", "/admin/chaos/0123456789abcdef"), 404, "not_found", what="unknown id")
        ck.error(c.request("DELETE", "/admin/chaos/nope"), 404, "not_found", what="malformed id")
        ck.error(c.get("/admin/chaos/0123456789abcdef"), 404, "not_found", what="GET unknown id")
        ck.eq([e["state"] for e in c.get("/admin/chaos").json["experiments"]], ["destroyed"], "list")
        # served again (the breaker, opened by the errors, lets a probe through within seconds)
        poll(lambda: c.order(u, [("CH-2", 1)], key=new_key()).status == 201, 15, "orders served after DELETE")
        n = _fired(c, "gateway", "gateway.upstream")
        ck.status(c.order(u, [("CH-2", 1)], key=new_key()), 201, "order")
        ck.eq(_fired(c, "gateway", "gateway.upstream"), n, "no firing after DELETE")
        # a new experiment on the point is allowed once the old one is destroyed
        r = c.post("/admin/chaos", {"target": "cells", "point": "cell.reply", "action": "delay",
                                    "params": {"ms": 1, "percent": 50}, "timeout_s": 1})
        ck.status(r, 201, "cells target")
        ck.eq(c.get("/admin/chaos/" + r.json["id"]).json["live"], {"cell-0": True, "cell-1": True},
              "armed in every cell")


def _ctl(p, *args):
    env = {"D11_URL": "http://127.0.0.1:%d" % p.port, "D11_DATA": p.data, "D11_TOKEN": "", "D11_TOKEN_FILE": ""}
    return run_cli(["ctl"] + list(args), env=env)


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@timeout(120)
def test_ctl_chaos_drills():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        _control_ready(c)
        ck.status(c.create_product("CH-3", stock=1000), 201, "create")
        u0 = users_for_cell(0, 2, 1)[0]
        pid0 = p.pids()["cell-0"]
        with open(os.path.join(p.data, "cell-0.lock")) as f:
            ck.eq(int(f.read().split()[0]), pid0, "the lock file names the cell's pid")
        # pause-cell: stopped now, resumed by the detached child
        cp = _ctl(p, "chaos", "pause-cell", "0", "--seconds", "2")
        ck.true(cp.returncode == 0, "pause-cell: %r" % (cp,))
        out = json.loads(cp.stdout)
        ck.eq(out["pid"], pid0, "paused the right pid")
        ck.eq(_proc_state(pid0), "T", "cell 0 is stopped")
        poll(lambda: _proc_state(pid0) not in ("T", None), 15, "cell 0 resumes by itself")
        poll(lambda: c.order(u0, [("CH-3", 1)], key=new_key()).status == 201, 15, "cell 0 serves again")
        ck.eq(p.pids()["cell-0"], pid0, "same process (paused, not restarted)")
        # kill-cell: d11 up restarts it
        cp = _ctl(p, "chaos", "kill-cell", "0")
        ck.true(cp.returncode == 0 and json.loads(cp.stdout)["pid"] == pid0, "kill-cell: %r" % (cp,))
        poll(lambda: p.pids().get("cell-0") not in (None, pid0), 20, "cell 0 restarted with a new pid")
        poll(lambda: c.order(u0, [("CH-3", 1)], key=new_key()).status == 201, 20, "restarted cell serves")
        ck.true(_ctl(p, "chaos", "kill-cell", "7").returncode == 1, "no cell 7: exit 1")
        # fill-disk: a ballast removed at its timeout
        cp = _ctl(p, "chaos", "fill-disk", "--up-to", "1M", "--timeout", "1")
        ck.true(cp.returncode == 0, "fill-disk: %r" % (cp,))
        fd = json.loads(cp.stdout)
        ck.eq(fd["bytes"], 1 << 20, "1 MiB ballast")
        ck.true(fd["path"].startswith(p.data), "in the data directory: %r" % fd)
        poll(lambda: not os.path.exists(fd["path"]), 15, "ballast removed at its timeout")
        ck.true(_ctl(p, "chaos", "fill-disk", "--up-to", "lots", "--timeout", "1").returncode == 2, "bad --up-to")
        # slow-commits = a store.commit delay experiment; list and delete through ctl
        cp = _ctl(p, "chaos", "slow-commits", "--ms", "20", "--timeout", "30", "--cell", "1")
        ck.true(cp.returncode == 0, "slow-commits: %r" % (cp,))
        eid = json.loads(cp.stdout)["id"]
        e = _exp(c, eid)
        ck.true(len(e) == 1 and e[0]["point"] == "store.commit" and e[0]["target"] == "cell:1" and
                e[0]["params"]["ms"] == 20 and e[0]["state"] == "armed", "the experiment: %r" % e)
        cp = _ctl(p, "chaos", "list")
        ck.true(cp.returncode == 0 and eid in cp.stdout and "armed" in cp.stdout, "list table: %r" % cp.stdout)
        ck.true(_ctl(p, "chaos", "delete", eid).returncode == 0, "delete")
        ck.true(_ctl(p, "chaos", "delete", eid).returncode == 0, "delete again")
        ck.eq(_exp(c, eid)[0]["state"], "destroyed", "destroyed")
        cp = _ctl(p, "chaos", "create", "--target", "cell:0", "--point", "store.commit", "--action", "drop",
                  "--timeout", "5")
        ck.true(cp.returncode == 1 and "bad_action" in cp.stderr, "create refused: %r" % (cp,))


@timeout(60)
def test_relay_publish_error_holds_webhooks_until_it_expires():
    from test_events import Receiver  # the signed webhook endpoint of the events tests
    rcv = Receiver("k")
    try:
        with Platform(cells=2) as p, Checks() as ck:
            c = p.client()
            _control_ready(c)
            r = c.post("/admin/chaos", {"target": "gateway", "point": "relay.publish", "action": "error",
                                        "timeout_s": 2})
            ck.status(r, 201, "relay.publish error")
            eid = r.json["id"]
            ck.status(c.post("/admin/webhooks", {"url": rcv.url, "secret": "k", "max_attempts": 20}), 201, "webhook")
            ck.status(c.create_product("CH-4", stock=10), 201, "create")
            ck.status(c.order(5, [("CH-4", 1)], key=new_key()), 201, "order")
            poll(lambda: (_fired(c, "gateway", "relay.publish") or 0) >= 1, 10, "a delivery hit the fault")
            with rcv.lock:
                early = list(rcv.attempts)
            still = _exp(c, eid)[0]["state"]
            if still == "armed":
                ck.eq(early, [], "nothing reaches the endpoint while the relay fails")
            poll(lambda: len(rcv.delivered()) >= 1, 15, "delivered once the experiment expired")
            ck.eq(_exp(c, eid)[0]["state"], "expired", "expired by itself")
    finally:
        rcv.close()
