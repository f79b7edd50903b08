"""
test_cluster_flow.py — cluster-wide flow limits across gateways (docs/protection.md
"Cluster-wide limits"): two gateway processes on one platform (the `d11 up` one and a
second `d11 gateway` on the same data directory), both loaded well past the limit.

  - a cluster rule qps=N on orders.create: over a window of t seconds the requests
    admitted across BOTH gateways stay within N*t*1.25 + burst (and above half of N*t);
  - the same rule without "cluster": each gateway admits N/s of its own, ~2*N/s in all;
  - the center stopped (SIGSTOP by its pid): each gateway falls back to its local
    fallback_qps (admitted within the fallback bound; the fallback counter rises) and,
    after SIGCONT, comes back to the cluster budget;
  - demand under the budget is admitted (the leases keep up with a low rate).
"""

import os
import shutil
import signal
import subprocess
import threading
import time

from harness import (D11_BIN, Checks, Client, Platform, free_port, log, new_key, poll, scaled,
                     test_tmp, timeout)

N, BURST, FALLBACK = 60, 10, 15
SKU = "CFLOW-1"


class Load:
    """One thread per gateway posting orders as fast as it can; counts non-429 answers
    (admitted by the flow rule) and 429 rate_limited, per gateway."""

    def __init__(self, ports, token):
        self.ports, self.token = ports, token
        self.adm = [0] * len(ports)
        self.ref = [0] * len(ports)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.th = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(len(ports))]

    def run(self, i):
        c = Client(self.ports[i], token=self.token, timeout_s=10)
        u = 0
        try:
            while not self.stop.is_set():
                u += 1
                try:
                    r = c.order(100000 * (i + 1) + u, [{"sku": SKU, "quantity": 1}], key=new_key("cf"))
                except OSError:
                    c.close()
                    c = Client(self.ports[i], token=self.token, timeout_s=10)
                    continue
                with self.lock:
                    if r.status == 429:
                        self.ref[i] += 1
                    else:
                        self.adm[i] += 1
        finally:
            c.close()

    def snap(self):
        with self.lock:
            return list(self.adm), list(self.ref)

    def window(self, secs):
        a0, r0 = self.snap()
        t0 = time.monotonic()
        time.sleep(secs)  # a measurement window, not a race: the bound is per elapsed time
        a1, r1 = self.snap()
        dt = time.monotonic() - t0
        return [a1[i] - a0[i] for i in range(len(a0))], [r1[i] - r0[i] for i in range(len(r0))], dt

    def __enter__(self):
        for t in self.th:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.th:
            t.join(timeout=15)
        return False


def ready(port, token):
    try:
        return Client(port, token=token, timeout_s=2).get("/readyz").status == 200
    except (OSError, ConnectionError):
        return False


def cluster_state(port, token):
    r = Client(port, token=token, timeout_s=5).get("/admin/protect")
    return (r.json or {}).get("cluster_flow", {}).get("orders.create")


def rules_version(port, token):
    r = Client(port, token=token, timeout_s=5).get("/admin/rules")
    return r.json["version"] if r.status == 200 else None


def put_rule(p, ports, rule):
    c = p.client()
    r = c.request("PATCH", "/admin/rules", {"flow": {"orders.create": rule}})
    assert r.status == 200, r
    v = r.json["version"]
    # the second gateway picks rules.json up within D11_RULES_RELOAD_MS
    poll(lambda: all(rules_version(pt, p.admin_token) == v for pt in ports), 5,
         "both gateways on rules version %d" % v)
    return r.json


@timeout(60)
def test_cluster_limit_across_two_gateways_with_fallback():
    with Platform(cells=2, threads=1, extra_args=["--protect", "off"]) as p, Checks() as ck:
        c = p.client()
        ck.status(c.create_product(SKU, stock=10000000), 201, "create the product")
        port2 = free_port()
        logp = os.path.join(test_tmp(), "cflow-gw2.log")
        with open(logp, "wb") as lf:
            gw2 = subprocess.Popen([D11_BIN, "gateway", "--data", p.data, "--listen", "127.0.0.1:%d" % port2,
                                    "--cells", "2", "--threads", "1", "--protect", "off"],
                                   stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        center = p.pids()["center"]
        stopped = False
        try:
            poll(lambda: ready(port2, p.admin_token), 15, "the second gateway ready")
            ports = [p.port, port2]
            tok = p.admin_token
            with Load(ports, tok) as load:
                # 1. cluster rule: N/s across both gateways
                j = put_rule(p, ports, {"qps": N, "burst": BURST, "cluster": True, "fallback_qps": FALLBACK})
                ck.eq(j["flow"]["orders.create"], {"qps": N, "burst": BURST, "cluster": True,
                                                   "fallback_qps": FALLBACK}, "cluster rule rendered")
                poll(lambda: all((cluster_state(pt, tok) or {}).get("leases_granted", 0) > 0 for pt in ports),
                     5, "both gateways leasing")
                adm, ref, dt = load.window(scaled(3))
                log("cluster qps %d: admitted %s refused %s in %.2fs" % (N, adm, ref, dt))
                ck.true(sum(ref) > sum(adm), "offered well past the limit: %s vs %s" % (ref, adm))
                ck.true(sum(adm) <= 1.25 * N * dt + BURST,
                        "cluster total %d <= 1.25*N*t + burst = %.0f" % (sum(adm), 1.25 * N * dt + BURST))
                ck.true(sum(adm) >= 0.75 * N * dt, "cluster total %d not starved (>= %.0f)" % (sum(adm), 0.75 * N * dt))
                ck.true(min(adm) >= 0.2 * sum(adm), "both gateways get a share (loose fairness): %s" % adm)
                # 2. the same rule, local: each gateway N/s
                put_rule(p, ports, {"cluster": False, "fallback_qps": 0})
                adm, ref, dt = load.window(scaled(2))
                log("local qps %d: admitted %s refused %s in %.2fs" % (N, adm, ref, dt))
                ck.true(sum(adm) >= 1.6 * N * dt, "local rules admit ~2N/s: %d >= %.0f" % (sum(adm), 1.6 * N * dt))
                # 3. the center stopped: local fallback on both gateways
                put_rule(p, ports, {"cluster": True, "fallback_qps": FALLBACK})
                poll(lambda: all((cluster_state(pt, tok) or {}).get("leases_granted", 0) > 0 for pt in ports),
                     5, "both gateways leasing again")
                os.kill(center, signal.SIGSTOP)
                stopped = True
                poll(lambda: all((cluster_state(pt, tok) or {}).get("fallback") for pt in ports), 5,
                     "both gateways in fallback")
                st = [cluster_state(pt, tok) for pt in ports]
                ck.true(all(s["fallback_entered"] >= 1 and s["fallback_qps"] == FALLBACK for s in st),
                        "fallback counted, at fallback_qps: %s" % st)
                adm, ref, dt = load.window(scaled(2))
                log("fallback %d/s per gateway: admitted %s refused %s in %.2fs" % (FALLBACK, adm, ref, dt))
                fb_burst = max(1, BURST * FALLBACK // N)
                for i in range(2):
                    ck.true(adm[i] <= 1.25 * FALLBACK * dt + fb_burst + 2,
                            "gateway %d in fallback admitted %d <= %.0f" % (i, adm[i], 1.25 * FALLBACK * dt + fb_burst + 2))
                    ck.true(adm[i] >= 0.5 * FALLBACK * dt, "gateway %d in fallback still admits: %d" % (i, adm[i]))
                m = Client(port2, token=tok, timeout_s=5).get("/metrics").text
                ck.true('d11_gateway_flow_cluster_fallback_total{resource="orders.create"} ' in m,
                        "fallback counter in /metrics")
                exe = shutil.which("promtool")
                if exe:  # the exposition with the cluster flow families stays valid
                    cp = subprocess.run([exe, "check", "metrics"], input=m, capture_output=True, text=True,
                                        timeout=30)
                    ck.true(cp.returncode == 0, "promtool check metrics: %s%s" % (cp.stdout, cp.stderr))
                # 4. the center back: the cluster budget again
                os.kill(center, signal.SIGCONT)
                stopped = False
                poll(lambda: not any((cluster_state(pt, tok) or {}).get("fallback") for pt in ports), 10,
                     "both gateways back on the cluster budget")
                adm, ref, dt = load.window(scaled(2))
                log("cluster again: admitted %s refused %s in %.2fs" % (adm, ref, dt))
                ck.true(sum(adm) <= 1.25 * N * dt + BURST,
                        "cluster total after recovery %d <= %.0f" % (sum(adm), 1.25 * N * dt + BURST))
                ck.true(sum(adm) >= 0.5 * N * dt, "cluster total after recovery %d not starved" % sum(adm))
            # 5. demand under the budget (~25/s in all against 60/s) is admitted, not lost to
            # the leasing: requests paced 40 ms apart, alternating gateways
            cs = [Client(pt, token=tok, timeout_s=10) for pt in ports]
            for i, cl in enumerate(cs):
                poll(lambda: cl.order(900000 + i, [{"sku": SKU, "quantity": 1}], key=new_key("cf")).status != 429,
                     5, "gateway %d admits again once the load stopped" % i)
            codes = []
            for k in range(30):
                codes.append(cs[k % 2].order(910000 + k, [{"sku": SKU, "quantity": 1}], key=new_key("cf")).status)
                time.sleep(0.04)  # pacing: the offered rate, not a wait for a race
            log("under the budget: %s" % codes)
            ck.true(codes.count(429) <= 3, "under the budget at most 3 of 30 refused: %s" % codes)
            for cl in cs:
                cl.close()
        finally:
            if stopped:
                os.kill(center, signal.SIGCONT)
            gw2.terminate()
            try:
                gw2.wait(timeout=15)
            except subprocess.TimeoutExpired:
                gw2.kill()
