"""
test_gw_rules.py — the rules document (GET/PUT /admin/rules, POST /admin/rules/rollback)
across gateway restarts: version numbers are never reused and the rollback history
survives a restart (issue 7, defect 4).

Two ways to restart: the whole platform (SIGTERM + start on the same data dir), and a
kill -9 of the gateway alone, which `d11 up` restarts.
"""

from harness import Checks, Platform, expect, log, pid_alive, poll

DOC1 = {"risk": {"max_order_quantity": 11}}
DOC2 = {"risk": {"max_order_quantity": 22}, "flow": {"orders.read": {"qps": 5000}}}
DOC3 = {"risk": {"max_order_quantity": 33}}


def put(c, doc):
    return c.request("PUT", "/admin/rules", doc)


def rollback(c):
    return c.post("/admin/rules/rollback")


def _doc(r):
    """A Resp or the JSON that expect() returned."""
    return r if isinstance(r, dict) else (r.json or {})


def moq(r):
    return (_doc(r).get("risk") or {}).get("max_order_quantity")


def ver(r):
    return _doc(r).get("version")


def kill_gateway_and_wait(p):
    """kill -9 the gateway; wait until `d11 up` has started a new one that answers."""
    old = p.kill9("gateway")

    def restarted():
        pid = p.pids().get("gateway")
        if pid is None or pid == old or not pid_alive(pid):
            return False
        try:
            c = p.client()
            st = c.get("/admin/rules").status
            c.close()
            return st == 200
        except ConnectionError:
            return False
    poll(restarted, 20, "d11 up to restart the gateway after kill -9")
    log("gateway restarted (was pid %d, now %d)" % (old, p.pids().get("gateway")))


def test_rule_versions_survive_platform_restart():
    """The exact sequence of the defect: PUT, PUT, rollback x2, restart, GET, PUT, rollback."""
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        ck.eq(ver(expect(c.get("/admin/rules"), 200)), 0, "initial rules version")
        ck.eq(ver(expect(put(c, DOC1), 200)), 1, "first PUT")
        ck.eq(ver(expect(put(c, DOC2), 200)), 2, "second PUT")
        r = expect(rollback(c), 200)
        ck.true(ver(r) == 1 and moq(r) == 11, "rollback to version 1: %r" % _doc(r))
        r = expect(rollback(c), 200)
        ck.true(ver(r) == 0 and moq(r) == 0, "rollback to version 0: %r" % _doc(r))
        c.close()

        p.restart()
        c = p.client()
        r = c.get("/admin/rules")
        ck.status(r, 200, "GET after restart")
        ck.true(ver(r) == 0 and moq(r) == 0,
                "after a restart the rules in force are still version 0 (empty): %r" % _doc(r))
        # A compare-and-set client still holding version 2 must be refused.
        ck.error(put(c, dict(DOC3, version=2)), 409, "version_conflict",
                 what="PUT with the stale version 2 after a restart")
        r = put(c, DOC3)
        ck.status(r, 200, "PUT after restart")
        ck.true(ver(r) == 3 and moq(r) == 33,
                "the first PUT after a restart gets version 3, never a reused number: %r" % _doc(r))
        r = rollback(c)
        ck.status(r, 200, "rollback after restart")
        ck.true(ver(r) == 0 and moq(r) == 0, "rollback returns to version 0: %r" % _doc(r))
        ck.error(rollback(c), 409, "no_history", what="history exhausted")


def test_rule_history_survives_gateway_kill():
    """History and the highest version survive a kill -9 of the gateway (restarted by up)."""
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        ck.eq(ver(expect(put(c, DOC1), 200)), 1, "PUT 1")
        ck.eq(ver(expect(put(c, DOC2), 200)), 2, "PUT 2")
        ck.eq(ver(expect(put(c, DOC3), 200)), 3, "PUT 3")
        c.close()

        kill_gateway_and_wait(p)
        c = p.client()
        r = expect(c.get("/admin/rules"), 200)
        ck.true(ver(r) == 3 and moq(r) == 33, "version 3 in force after the kill: %r" % _doc(r))
        r = rollback(c)
        ck.status(r, 200, "rollback after the kill")
        ck.true(ver(r) == 2 and moq(r) == 22, "rollback to version 2 after a restart: %r" % _doc(r))
        c.close()

        kill_gateway_and_wait(p)
        c = p.client()
        r = expect(c.get("/admin/rules"), 200)
        ck.true(ver(r) == 2 and moq(r) == 22, "version 2 in force after the second kill: %r" % _doc(r))
        r = rollback(c)
        ck.status(r, 200, "second rollback")
        ck.true(ver(r) == 1 and moq(r) == 11, "rollback to version 1: %r" % _doc(r))
        r = put(c, DOC2)
        ck.status(r, 200, "PUT after rollbacks and restarts")
        ck.eq(ver(r), 4, "a new document after two restarts gets max-ever + 1")
        r = c.get("/metrics", token=None)
        ck.true("d11_gateway_rules_version 4" in r.text, "metrics show version 4")
