"""
test_bench_report.py — `d11 bench` as an operator uses it (issue 12, part 5), against a
running platform, with the defaults taken from D11_URL / D11_DATA (no --url, no token
flag: DATA/admin.token is found like `d11 ctl` finds it):

  - --stages 1s:100,2s:400 ramps the open-loop rate: the run schedules exactly the
    integral (50 + 500 = 550 requests) and the --json document carries one series entry
    per second with the target rate rising;
  - --html FILE writes a page with three SVG charts (throughput and latency over time, the
    percentile spectrum) and no external resource;
  - without a usable token most answers are 401: exit 2 and a line naming the token, not
    0 at "85k req/s of 401s".
"""

import json
import os

from harness import Checks, Platform, run_cli, test_tmp, timeout


@timeout(90)
def test_stages_series_html_and_no_token_exit_2():
    with Checks() as ck, Platform(cells=2) as p:
        env = {"D11_URL": "http://127.0.0.1:%d" % p.port, "D11_DATA": p.data, "D11_TOKEN": "", "D11_TOKEN_FILE": ""}
        html = os.path.join(test_tmp(), "bench.html")
        cp = run_cli(["bench", "--setup", "--skus", "5", "--stages", "1s:100,2s:400", "--connections", "8",
                      "--quiet", "--json", "--html", html], env=env, timeout_s=60)
        ck.true(cp.returncode == 0, "bench exit 0: %d %s" % (cp.returncode, cp.stderr))
        d = json.loads(cp.stdout)
        res = d["result"]
        ck.eq(res["requests"]["scheduled"], 550, "scheduled = the integral of the ramp")
        ck.true(res["requests"]["answered"] >= 540, "answered: %r" % res["requests"])
        s = d["series"]
        ck.true(len(s) >= 3, "one entry per second: %r" % s)
        ck.true(s[0]["target_rps"] < s[1]["target_rps"] < s[2]["target_rps"] <= 400,
                "target rises: %r" % [x["target_rps"] for x in s])
        ck.true(all(set(x) >= {"t_s", "rps", "ok", "rejected", "errors", "p50_us", "p99_us", "p999_us"} for x in s),
                "series fields")
        ck.true(sum(x["ok"] for x in s) >= 500, "the series adds up: %r" % sum(x["ok"] for x in s))
        with open(html) as f:
            page = f.read()
        ck.eq(page.count("<svg "), 3, "three charts")
        for want in ("Throughput over time", "Latency over time", "Percentile spectrum", "requests per second",
                     "latency (ms)", "99.9%"):
            ck.true(want in page, "page has %r" % want)
        ck.true("<script" not in page and "src=" not in page, "offline page")
        # no token: the admin.token default is gone (D11_DATA points elsewhere)
        env2 = dict(env, D11_DATA=os.path.join(test_tmp(), "nothing"))
        cp = run_cli(["bench", "--duration", "1", "--quiet", "--connections", "4", "--rate", "200"], env=env2)
        ck.eq(cp.returncode, 2, "exit 2 when most answers are 401: %s" % cp.stderr)
        ck.true("401/403" in cp.stderr and "token" in cp.stderr, "says why: %r" % cp.stderr)
        p.stop()
