"""
test_rehearse.py — `d11 rehearse` (issue 11, item 7; docs/rehearsal.md) against a platform
from the harness, then its HTML report rendered by headless Chromium (Debian `chromium`).

  1. A quick rehearsal (--quick: capacity probe, 0.5/1/2/3 × C, then a cell pause, slow
     commits, relay down, a scheduled degrade switch and a cell kill) with lenient
     thresholds: the exit status matches the JSON verdict; the process drills had their
     effect (the paused cell's breaker opened, the killed cell came back under `d11 up`);
     both chaos experiments were created and destroyed through /admin/chaos and the
     delayed commits were counted slow; the degrade switch refused orders and was removed
     again (degrade_schedule is empty afterwards); stress traffic only (the real
     stock_sold of the rehearsal SKUs is unchanged, the shadow one moved); `d11 audit`
     holds; the report, rendered by Chromium (--dump-dom), has its four SVG plots with
     data points, the fault bands, and a #verdict element whose text is the JSON verdict.
  2. The same command with an impossible goodput threshold (--goodput-min 1000): that
     check fails, the verdict is "fail", the exit status is 1 and the rendered report says
     FAIL — the verdict follows the checks.
  3. `d11 rehearse` killed (SIGKILL) while its pause drill holds a cell stopped: the cell is
     resumed anyway, by the watchdog child the drill forked.

The platform runs with --request-timeout-ms 500 (so that the quick profile's 6-s pause
outlasts the breaker's 5-s window plus the timeout and surely opens it) and
--protect-inflight-min 8 (so that adaptive protection refuses work past capacity on this
small load).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time

from harness import D11_BIN, Checks, Platform, heavy, log, poll, run_cli, scaled, test_tmp, timeout

LENIENT = ["--goodput-min", "0.05", "--p99-factor", "100000", "--refusal-ms", "5000", "--timeouts-max", "0.5"]


def chromium_dom(path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise AssertionError("chromium is not installed (scripts/deps.sh installs it)")
    prof = os.path.join(test_tmp(), "chromium-profile")
    cp = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + prof,
                         "--dump-dom", "file://" + path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, timeout=scaled(60))
    if cp.returncode != 0 or "<svg" not in cp.stdout:
        raise AssertionError("chromium --dump-dom failed (%d): %s" % (cp.returncode, cp.stderr[-800:]))
    return cp.stdout


def verdict_text(dom):
    m = re.search(r'<p id="verdict"[^>]*>([^<]*)</p>', dom)
    return m.group(1).strip() if m else None


def check_report(ck, dom, verdict):
    ck.eq(verdict_text(dom), verdict.upper(), "the rendered #verdict says the JSON verdict")
    svgs = re.findall(r'<svg[^>]*class="plot"[^>]*id="([a-z]+)"', dom)
    ck.eq(svgs, ["throughput", "latency", "refusals", "cells"], "four plots, in order")
    for plot in svgs:
        body = dom.split('id="%s"' % plot, 1)[1].split("</svg>", 1)[0]
        pts = body.count('class="pt"')
        ck.true(pts >= 5, "plot %s has data points (%d)" % (plot, pts))
        ck.true('class="ylabel"' in body and 'class="xlabel"' in body, "plot %s has axis titles" % plot)
    ck.true("requests per second" in dom and "latency (ms)" in dom and "time since start (s)" in dom,
            "axes with units")
    ck.true("<script" not in dom and "http://" not in dom.split("<body", 1)[1].replace("http://www.w3.org", ""),
            "no script, nothing fetched: opens offline")


def run_rehearsal(p, args, report):
    env = {"D11_URL": "http://127.0.0.1:%d" % p.port, "D11_TOKEN": "", "D11_TOKEN_FILE": "", "D11_DATA": ""}
    cp = run_cli(["rehearse", "--data", p.data, "--quick", "--json", "--quiet", "--connections", "48",
                  "--report", report] + args, env=env, timeout_s=90)
    log("rehearse exit %d; stderr tail: %s" % (cp.returncode, cp.stderr[-1500:]))
    d = json.loads(cp.stdout)
    return cp, d


@heavy
@timeout(150)
def test_quick_rehearsal_report_and_forced_failure():
    with Checks() as ck, Platform(cells=2, request_timeout_ms=500,
                                  extra_args=["--protect-inflight-min", "8"]) as p:
        report = os.path.join(test_tmp(), "rehearsal.html")
        cp, d = run_rehearsal(p, ["--probe-s", "1"] + LENIENT, report)
        checks = {c["name"]: c for c in d["checks"]}
        for c in d["checks"]:
            log("  %-34s %-7s %s" % (c["name"], c["status"], c["detail"]))
        ck.eq(cp.returncode, 0 if d["verdict"] == "pass" else 1, "exit status = the JSON verdict")
        ck.eq(d["verdict"] == "pass", all(c["status"] != "fail" for c in d["checks"]), "verdict = no failed check")
        ck.true(d["capacity_rps"] > 0, "a capacity was found: %r" % d["capacity_rps"])
        ck.eq([s["name"] for s in d["stages"] if s["ran"]], ["0.5C", "1C", "2C", "3C", "faults"], "every stage ran")
        faults = {f["kind"]: f for f in d["faults"]}
        ck.eq(faults["pause"]["status"], "done", "the pause drill ran: %r" % faults["pause"])
        ck.eq(faults["kill"]["status"], "done", "the kill drill ran: %r" % faults["kill"])
        ck.eq(checks["breaker_opened_on_pause"]["status"], "pass", "the paused cell's breaker opened")
        ck.eq(checks["cell_recovered_after_kill"]["status"], "pass", "the killed cell came back")
        for k in ("slow-commits", "relay-down"):
            ck.eq(faults[k]["status"], "done", "chaos step %s ran through /admin/chaos: %r" % (k, faults[k]))
        ck.eq(checks["chaos_experiments"]["status"], "pass", "every experiment created and destroyed")
        ck.eq(checks["slow_commits_seen"]["status"], "pass", "the delayed commits were counted as slow")
        ck.eq([e["state"] for e in p.client().get("/admin/chaos").json["experiments"]], ["destroyed"] * 2,
              "both experiments destroyed, none left armed")
        ck.eq(checks["degrade_switch_acted"]["status"], "pass", "the scheduled degrade switch refused orders")
        ck.eq(p.client().get("/admin/rules").json["degrade_schedule"], [], "the degrade entry was removed")
        ck.eq(checks["real_stock_untouched"]["status"], "pass", "stress traffic only")
        ck.true(d["shadow_sold_after"] > 0 and d["real_sold_after"] == d["real_sold_before"] == 0,
                "the shadow stock moved, the real one did not: %r" % {k: d[k] for k in (
                    "real_sold_before", "real_sold_after", "shadow_sold_after")})
        ck.eq(checks["invariants_audit"]["status"], "pass", "d11 audit after the run")
        ck.eq(checks["protection_refused_past_capacity"]["status"], "pass", "protection refused past capacity")
        ck.true(len(d["series"]) >= 15 and len(d["samples"]) >= 15, "a series and samples per second")
        ck.eq(d["verdict"], "pass", "with lenient thresholds the rehearsal passes")
        check_report(ck, chromium_dom(report), d["verdict"])
        page = open(report).read()
        ck.true(page.count('class="band"') >= 2 * 4, "the faults are bands on the time plots")

        # 2. an impossible goodput threshold: that check fails and so does the verdict
        report2 = os.path.join(test_tmp(), "rehearsal-fail.html")
        cp, d = run_rehearsal(p, ["--capacity", "300", "--faults", "none", "--stages", "2", "--stage-s", "1.5"]
                              + LENIENT + ["--goodput-min", "1000"], report2)
        checks = {c["name"]: c for c in d["checks"]}
        ck.eq(checks["goodput_at_overload"]["status"], "fail", "goodput >= 1000 x C cannot hold")
        ck.eq(d["verdict"], "fail", "a failed check fails the rehearsal")
        ck.eq(cp.returncode, 1, "exit 1 on a failed rehearsal")
        ck.eq(verdict_text(chromium_dom(report2)), "FAIL", "the rendered report says FAIL")
        p.stop()


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


@timeout(60)
def test_a_killed_rehearsal_never_leaves_a_cell_paused():
    """SIGKILL `d11 rehearse` while its pause drill holds cell 0 stopped: the watchdog child
    it forked sends SIGCONT at the end of the pause anyway (without it the cell would stay
    stopped forever)."""
    with Checks() as ck, Platform(cells=2, request_timeout_ms=500) as p:
        pid = p.pids()["cell-0"]
        env = dict(os.environ, D11_TEST_TMP=test_tmp(), D11_TOKEN="", D11_TOKEN_FILE="")
        proc = subprocess.Popen([D11_BIN, "rehearse", "--url", "http://127.0.0.1:%d" % p.port, "--data", p.data,
                                 "--quick", "--capacity", "100", "--stages", "0.5", "--stage-s", "0.5",
                                 "--faults", "pause", "--pause-s", "2", "--connections", "4", "--quiet"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        try:
            poll(lambda: _proc_state(pid) == "T", 20, "cell 0 stopped by the pause drill")
            t0 = time.monotonic()
            proc.kill()
            proc.wait()
            log("rehearse killed during the pause")
            poll(lambda: _proc_state(pid) not in ("T", None), 6, "cell 0 resumed by the watchdog")
            ck.true(time.monotonic() - t0 < scaled(5), "resumed within the pause + 1 s")
            ck.status(p.client().get("/readyz"), 200, "the platform is whole again")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if _proc_state(pid) == "T":
                os.kill(pid, signal.SIGCONT)  # never leave a stopped cell behind, even on failure
        p.stop()
