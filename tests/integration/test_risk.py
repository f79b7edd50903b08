"""
test_risk.py — risk control on POST /v1/orders (docs/protection.md "Risk control",
src/gateway/risk*.c):

  - velocity rules: a user over "max 3 in 60 s" gets 403 risk_challenge, over "max 5"
    403 risk_denied, and no order is created for them (the user's order list counts
    only the admitted ones); other users are not affected; a device id shared by
    several users is limited across them. Every order goes on a new connection, so the
    counts must be shared by the gateway threads. Stress traffic (X-D11-Stress: 1) is
    counted apart and does not use up a real user's budget.
  - the decision log: GET /admin/risk/decisions/{request_id} returns the masked record
    (user as a hash, IP cut to /24, device hashed), 404 for a request that was not logged;
    metrics count decisions by action and mode.
  - shadow mode: the same traffic goes through (201) but the decisions are logged with
    enforced=false and counted as shadow.
  - A/B split and scores: model A from --risk-model FILE, model B in the rules on 25% of
    users; the users scored by B are exactly those the split function picks (recomputed
    here), their share is within bounds, and both scores in the log equal the logistic
    function of the logged features computed here in Python from the model weights.
"""

import json
import math
import os
import re

from harness import Checks, Platform, expect, log, test_tmp, timeout

M64 = (1 << 64) - 1


def ab_in(user_id, percent_bp):
    """d11_risk_ab_in (risk_model.c): splitmix64(user_id) % 10000 < percent_bp."""
    z = (user_id + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    z ^= z >> 31
    return z % 10000 < percent_bp


def score(model, features):
    z = model["bias"]
    for name, w in model["weights"].items():
        z += w * features[name]
    return 1.0 / (1.0 + math.exp(-z))


def order_count(c, user_id):
    r = expect(c.get("/v1/users/%d/orders?limit=100" % user_id), 200)
    return len(r["orders"])


def metric(text, name, labels):
    for line in text.splitlines():
        if line.startswith(name + "{") and all('%s="%s"' % kv in line for kv in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


VELOCITY = {"user_burst": {"key": "user", "window_s": 60, "max": 3, "action": "challenge"},
            "user_flood": {"key": "user", "window_s": 60, "max": 5, "action": "deny"},
            "device_share": {"key": "device", "window_s": 60, "max": 2, "action": "deny"}}


@timeout(90)
def test_velocity_rules_refuse_and_log_masked():
    with Platform(cells=2, threads=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("RISK-1", stock=1000), 201)
        r = c.request("PATCH", "/admin/rules", {"risk": {"windows_s": [10, 60], "velocity": VELOCITY}})
        ck.status(r, 200, "PATCH the risk rules")
        ck.eq(r.json["risk"]["velocity"], VELOCITY, "rules read back")
        ck.eq(r.json["risk"]["windows_s"], [10, 60], "windows read back")
        # stress traffic first: counted apart, so it does not use up the real user's budget
        for i in range(4):
            s = p.client()
            r = s.order(1001, [("RISK-1", 1)], headers={"X-D11-Stress": "1"})
            s.close()
            ck.status(r, 403 if i == 3 else 201, "stress order %d of user 1001" % (i + 1))
        codes, rids = [], []
        for i in range(8):
            u = p.client()  # a new connection each time: any gateway thread
            r = u.order(1001, [("RISK-1", 1)])
            u.close()
            codes.append((r.status, r.error_code if r.status != 201 else None))
            rids.append(r.headers.get("x-request-id"))
        ck.eq(codes, [(201, None)] * 3 + [(403, "risk_challenge")] * 2 + [(403, "risk_denied")] * 3,
              "orders 1-3 admitted, 4-5 challenged, 6-8 denied")
        ck.eq(order_count(c, 1001), 3, "no order created for a refused request")
        ck.status(c.order(1002, [("RISK-1", 1)]), 201, "another user is not affected")
        # a device id shared by users: the third order from that device is denied
        dev = {"X-Device-Id": "device-secret-42"}
        dcodes = []
        for uid in (2001, 2002, 2003):
            r = p.client().order(uid, [("RISK-1", 2)], headers=dev)
            dcodes.append(r.status if r.status == 201 else r.error_code)
            last = r
        ck.eq(dcodes, [201, 201, "risk_denied"], "device velocity across users")
        ck.eq(order_count(c, 2003), 0, "the denied user has no order")
        # the decision log, by request id: masked
        d = expect(c.get("/admin/risk/decisions/" + rids[5]), 200)
        ck.eq((d["request_id"], d["action"], d["enforced"], d["rule"]), (rids[5], "deny", True, "user_flood"),
              "the 6th order's decision")
        ck.eq(d["features"]["user_60s"], 6, "its count in the window, this order included")
        ck.true(re.fullmatch(r"u:[0-9a-f]{16}", d["user"]) is not None, "user as a hash: %s" % d["user"])
        ck.eq(d["ip"], "127.0.0.0/24", "IP truncated")
        ck.true("1001" not in json.dumps(d), "the user id is not in the record")
        d4 = expect(c.get("/admin/risk/decisions/" + rids[3]), 200)
        ck.eq((d4["action"], d4["rule"]), ("challenge", "user_burst"), "the 4th order's decision")
        ck.eq(d4["user"], d["user"], "one user, one hash")
        dd = expect(c.get("/admin/risk/decisions/" + last.headers["x-request-id"]), 200)
        ck.eq((dd["action"], dd["rule"], dd["features"]["device_60s"], dd["features"]["quantity"]),
              ("deny", "device_share", 3, 2), "the device decision")
        ck.true(re.fullmatch(r"d:[0-9a-f]{16}", dd["device"]) and "secret" not in json.dumps(dd),
                "device id hashed: %s" % dd["device"])
        ck.error(c.get("/admin/risk/decisions/" + rids[0]), 404, "not_found",
                 what="an allowed order is not logged (sampling 0)")
        lst = expect(c.get("/admin/risk/decisions?limit=3"), 200)["decisions"]
        ck.eq(len(lst), 3, "list limit")
        ck.eq(lst[0]["request_id"], last.headers["x-request-id"], "newest first")
        ck.error(c.get("/admin/risk/decisions?limit=0"), 422, "invalid", what="limit 0")
        m = c.get("/metrics").text
        ck.eq(metric(m, "d11_gateway_risk_decisions_total", {"action": "deny", "mode": "enforce"}), 4,
              "deny decisions counted (3 user + 1 device)")
        ck.eq(metric(m, "d11_gateway_risk_decisions_total", {"action": "challenge", "mode": "enforce"}), 2,
              "challenge decisions counted")
        ck.eq(metric(m, "d11_gateway_risk_stress_decisions_total", {"action": "challenge"}), 1,
              "stress decisions apart")


@timeout(90)
def test_shadow_mode_lets_through_and_logs():
    with Platform(cells=2, threads=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("RISK-2", stock=1000), 201)
        r = c.request("PATCH", "/admin/rules", {"risk": {"mode": "shadow", "velocity": VELOCITY}})
        ck.status(r, 200, "PATCH shadow mode")
        ck.eq(r.json["risk"]["mode"], "shadow", "mode read back")
        rids = []
        for i in range(7):
            r = p.client().order(3001, [("RISK-2", 1)])
            ck.status(r, 201, "shadow: order %d goes through" % (i + 1))
            rids.append(r.headers["x-request-id"])
        ck.eq(order_count(c, 3001), 7, "every order created")
        acts = []
        for rid in rids[3:]:
            d = expect(c.get("/admin/risk/decisions/" + rid), 200)
            acts.append((d["action"], d["enforced"]))
        ck.eq(acts, [("challenge", False)] * 2 + [("deny", False)] * 2, "logged as they would have been, not enforced")
        m = c.get("/metrics").text
        ck.eq(metric(m, "d11_gateway_risk_decisions_total", {"action": "deny", "mode": "shadow"}), 2, "shadow counted")
        ck.eq(metric(m, "d11_gateway_risk_decisions_total", {"action": "deny", "mode": "enforce"}), 0, "nothing enforced")
        # back to enforce: the same user is now refused
        expect(c.request("PATCH", "/admin/rules", {"risk": {"mode": "enforce"}}), 200)
        ck.error(p.client().order(3001, [("RISK-2", 1)]), 403, "risk_denied", what="enforced again")


MODEL_A = {"name": "file-a", "bias": -2.5,
           "weights": {"user_60s": 0.3, "quantity": 0.2, "no_device": 0.5, "ip_10s": 0.001},
           "challenge": 0.999999, "deny": 1}
MODEL_B = {"name": "rules-b", "bias": -1.25, "weights": {"items": 0.5, "user_3600s": -0.75}, "percent": 25}


@timeout(120)
def test_ab_split_and_scores_match_the_model():
    path = os.path.join(test_tmp(), "model-a.json")
    with open(path, "w") as f:
        json.dump(MODEL_A, f)
    with Platform(cells=2, threads=2, extra_args=["--risk-model", path]) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("RISK-3", stock=10000), 201)
        expect(c.create_product("RISK-4", stock=10000), 201)
        r = c.request("PATCH", "/admin/rules", {"risk": {"model_b": MODEL_B, "log_sample_pct": 100}})
        ck.status(r, 200, "PATCH model B")
        N = 240
        by_rid = {}
        for i in range(N):
            uid = 50000 + i * 7
            items = [("RISK-3", 1 + i % 3)] + ([("RISK-4", 1)] if i % 2 else [])
            r = c.order(uid, items, headers={"X-Device-Id": "dev-%d" % i} if i % 4 == 0 else None)
            ck.status(r, 201, "order of user %d" % uid)
            by_rid[r.headers["x-request-id"]] = uid
        recs = expect(c.get("/admin/risk/decisions?limit=500"), 200)["decisions"]
        ck.eq(len(recs), N, "every decision logged at 100% sampling")
        in_b, want_b, worst_a, worst_b = set(), set(), 0.0, 0.0
        for d in recs:
            uid = by_rid[d["request_id"]]
            if ab_in(uid, 2500):
                want_b.add(uid)
            ck.eq(d["model_a"], "file-a", "model A from the file")
            worst_a = max(worst_a, abs(d["score_a"] - score(MODEL_A, d["features"])))
            if d["score_b"] is not None:
                in_b.add(uid)
                ck.eq(d["model_b"], "rules-b", "model B from the rules")
                worst_b = max(worst_b, abs(d["score_b"] - score(MODEL_B, d["features"])))
        log("A/B: %d of %d users scored by B; worst |score - reference| A %.3g, B %.3g"
            % (len(in_b), N, worst_a, worst_b))
        ck.eq(in_b, want_b, "B scores exactly the users the split picks")
        ck.true(0.15 * N <= len(in_b) <= 0.35 * N, "B's share near 25%%: %d of %d" % (len(in_b), N))
        ck.true(worst_a < 1e-12 and worst_b < 1e-12, "scores equal the Python reference (A %g, B %g)"
                % (worst_a, worst_b))
        one = recs[17]
        ck.eq(expect(c.get("/admin/risk/decisions/" + one["request_id"]), 200), one, "by request id = the list's record")
        m = c.get("/metrics").text
        ck.eq(metric(m, "d11_gateway_risk_model_total", {"model": "a", "action": "allow"}), N, "model A on all")
        ck.eq(metric(m, "d11_gateway_risk_model_total", {"model": "b", "action": "allow"}), len(in_b),
              "model B on its share")
