"""
test_dashboard.py — the sale dashboard at GET / (issue 12, part 8), under load, seen by a
real browser (Debian `chromium`, headless):

  - while `d11 bench` places orders on a few SKUs, GET /dashboard/data grows one sample per
    second kept by the gateway (orders/s by outcome, p50/p99/p99.9, GMV), with the stock
    and sell-through of the SKUs, the cells' health and the refusals;
  - chromium renders the page (--dump-dom after its scripts ran): the cards hold numbers
    (orders created/s > 0, GMV, p99 in ms), the two charts are SVG with axes and units,
    the stock table shows the SKU with its sell-through, every cell is "up";
  - a second load of the page shows at least the history of the first (kept server-side);
  - a screenshot is taken (PNG, non-trivial size); with D11_DASHBOARD_SHOT=PATH it is also
    copied there (how docs/dashboard.png is made).
"""

import json
import os
import re
import shutil
import subprocess
import urllib.request

from harness import Checks, Platform, Skip, poll, run_cli, scaled, test_tmp, timeout, heavy


def _chromium():
    for exe in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(exe)
        if p:
            return p
    raise Skip("chromium not installed (scripts/deps.sh installs it)")


def _browser(exe, args, url):
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--user-data-dir=" + os.path.join(test_tmp(), "chrome"),
                           "--virtual-time-budget=4000"] + args + [url],
                          capture_output=True, text=True, timeout=scaled(60))


@heavy
@timeout(120)
def test_dashboard_under_load_in_a_browser():
    exe = _chromium()
    with Checks() as ck, Platform(cells=2) as p:
        base = "http://127.0.0.1:%d" % p.port
        env = {"D11_URL": base, "D11_DATA": p.data}
        bench = subprocess.Popen([os.environ.get("D11_BIN") or os.path.join(os.path.dirname(os.path.dirname(
            os.path.dirname(os.path.abspath(__file__)))), "bin", "d11"), "bench", "--setup", "--skus", "4",
            "--stock", "2000", "--rate", "300", "--duration", "12", "--quiet", "--connections", "8"],
            env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def data():
                with urllib.request.urlopen(base + "/dashboard/data", timeout=5) as r:
                    return json.loads(r.read())

            def loaded():
                d = data()
                h = d["history"]
                return d if len(h) >= 4 and sum(x["created"] for x in h[-3:]) > 0 and d["stock"] else None
            d = poll(loaded, scaled(20), "samples with orders in the history")
            last = d["history"][-1]
            ck.true(set(last) >= {"t", "created", "out_of_stock", "rejected", "errors_5xx", "gmv_cents", "p50_ms",
                                  "p99_ms", "p999_ms"}, "sample fields: %r" % last)
            ck.true(d["totals"]["gmv_cents"] > 0 and d["totals"]["created"] > 0, "totals: %r" % d["totals"])
            ck.true(any(s["sold"] > 0 and s["total"] == 2000 for s in d["stock"]), "stock: %r" % d["stock"])
            ck.true(len(d["cells"]) == 2 and all(c["up"] and c["commits"] > 0 for c in d["cells"]), "cells: %r" % d["cells"])
            ck.true(d["rules"].get("degrade"), "degrade states for the switches")
            cp = _browser(exe, ["--dump-dom"], base + "/")
            dom = cp.stdout
            ck.true(cp.returncode == 0 and "<svg" in dom, "chromium rendered the page: rc %d %s" % (cp.returncode, cp.stderr[-300:]))

            def card(i):
                m = re.search(r'id="%s">([^<]*)<' % i, dom)
                return m.group(1) if m else None
            ck.true(re.fullmatch(r"[0-9.]+k?", card("c_created") or "") and card("c_created") != "0",
                    "orders created/s card: %r" % card("c_created"))
            ck.true(re.fullmatch(r"[0-9.]+ ms", card("c_p99") or ""), "p99 card: %r" % card("c_p99"))
            ck.true(re.fullmatch(r"[0-9,]+\.[0-9]{2}", card("c_gmv") or "") and card("c_gmv") != "0.00",
                    "GMV card: %r" % card("c_gmv"))
            for want in ("Orders per second by outcome", "orders / s", "Latency of POST /v1/orders", "milliseconds",
                         "p99.9", "sell-through", "BENCH-0", "linked", "serving"):
                ck.true(want in dom, "the page shows %r" % want)
            ck.true(dom.count("<polyline") >= 7, "7 series drawn: %d" % dom.count("<polyline"))
            ck.true(re.search(r"<td>BENCH-0</td><td>2000</td><td>[1-9][0-9]*</td>", dom) is not None,
                    "stock row with units sold")
            n1 = int(re.search(r"history (\d+) s kept", dom).group(1))
            shot = os.path.join(test_tmp(), "dashboard.png")
            cp = _browser(exe, ["--screenshot=" + shot, "--window-size=1400,1250"], base + "/")
            ck.true(os.path.exists(shot) and os.path.getsize(shot) > 20000, "screenshot taken: %s" % cp.stderr[-300:])
            if os.environ.get("D11_DASHBOARD_SHOT"):
                shutil.copyfile(shot, os.environ["D11_DASHBOARD_SHOT"])
            dom2 = _browser(exe, ["--dump-dom"], base + "/").stdout
            n2 = int(re.search(r"history (\d+) s kept", dom2).group(1))
            ck.true(n2 >= n1 >= 4, "a reload keeps the history (server-side): %d then %d" % (n1, n2))
        finally:
            bench.kill()
            bench.wait()
        p.stop()
