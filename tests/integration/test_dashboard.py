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
    copied there (how docs/dashboard.png is made);
  - the switches work from the page: chromium, driven over the Chrome DevTools Protocol
    (--remote-debugging-pipe: NUL-separated JSON on fds 3/4, standard library only), gets
    the admin token TYPED into the token field, CLICKS a degrade switch and fills and
    applies a flow limit with real mouse and keyboard events; GET /admin/rules then shows
    both changes and the page says so (its message line and the switch's label).
"""

import json
import os
import re
import shutil
import subprocess
import time
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


class _Cdp:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe: chromium
    reads commands from its fd 3 and writes answers and events to its fd 4, each message
    one JSON text followed by a NUL byte. One page target, attached in flat mode."""

    def __init__(self, exe, profile):
        cmd_r, self._cmd_w = os.pipe()
        self._ev_r, ev_w = os.pipe()

        def fds():  # in the child: the pipe ends at 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(ev_w, 4)
        self.proc = subprocess.Popen([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      "--remote-debugging-pipe", "--user-data-dir=" + profile,
                                      "--window-size=1400,1250", "about:blank"],
                                     preexec_fn=fds, close_fds=False,  # pipes are CLOEXEC; dup2 clears it
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(ev_w)
        self._buf = b""
        self._id = 0
        self.session = None

    def call(self, method, params=None, session=True, limit_s=10):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + limit_s
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                m = json.loads(raw)
                if m.get("id") == self._id:
                    if "error" in m:
                        raise AssertionError("CDP %s: %r" % (method, m["error"]))
                    return m["result"]
            if time.monotonic() > end:
                raise AssertionError("CDP %s: no answer in %d s" % (method, limit_s))
            chunk = os.read(self._ev_r, 65536)
            if not chunk:
                raise AssertionError("chromium closed the DevTools pipe (exit %r)" % self.proc.poll())
            self._buf += chunk

    def open(self, url):
        tid = self.call("Target.createTarget", {"url": url})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError("page script %r: %r" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def click(self, selector):
        """A real left click (pressed + released) at the centre of the element."""
        box = self.js("(()=>{const e=document.querySelector(%s);if(!e)return null;e.scrollIntoView({block:'center'});"
                      "const r=e.getBoundingClientRect();return [r.x+r.width/2,r.y+r.height/2];})()"
                      % json.dumps(selector))
        if box is None:
            raise AssertionError("no element %s on the page" % selector)
        for t in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": t, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def type(self, selector, text):
        """Click into a field and type text into it (keyboard input, not a script)."""
        self.click(selector)
        self.call("Input.insertText", {"text": text})

    def close(self):
        try:
            os.close(self._cmd_w)
            os.close(self._ev_r)
        finally:
            self.proc.kill()
            self.proc.wait()


@timeout(40)
def test_switches_clicked_in_a_browser():
    exe = _chromium()
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        before = c.get("/admin/rules").json
        res = sorted(before.get("degrade") or {})
        ck.true(len(res) >= 2, "degrade resources to switch: %r" % res)
        sw, fl = res[0], res[1]
        ck.eq(before["degrade"][sw], False, "%s serving before" % sw)
        ck.true(fl not in (before.get("flow") or {}), "no flow limit on %s before" % fl)
        cdp = _Cdp(exe, os.path.join(test_tmp(), "chrome-cdp"))
        try:
            cdp.open("http://127.0.0.1:%d/" % p.port)
            esc = lambda r: r.replace(".", "\\.")  # noqa: E731 (CSS id escape)
            sel_q, sel_b = "#q_" + esc(fl), "#b_" + esc(fl)
            poll(lambda: cdp.js("document.querySelectorAll('#t_sw button').length") or None, scaled(10),
                 "the switch table drawn by the page")
            cdp.type("#tok", p.admin_token)
            ck.eq(cdp.js("document.getElementById('tok').value"), p.admin_token, "token typed into the field")
            # the degrade switch of `sw`: the button of its row
            btn = "#t_sw tr:has(#q_%s) td:nth-child(2) button" % esc(sw)
            ck.eq(cdp.js("document.querySelector(%s).textContent" % json.dumps(btn)), "serving", "switch label before")
            cdp.click(btn)
            after = poll(lambda: (lambda r: r if (r.get("degrade") or {}).get(sw) is True else None)(
                c.get("/admin/rules").json), scaled(10), "GET /admin/rules shows %s degraded" % sw)
            ck.true(after["version"] > before["version"], "a new rules version")
            poll(lambda: "degrade %s on" % sw in (cdp.js("document.getElementById('msg').textContent") or "") or None,
                 scaled(5), "the page's message line reports the switch")
            poll(lambda: cdp.js("(()=>{const b=document.querySelector(%s);return b&&b.textContent=='degraded'})()"
                                % json.dumps(btn)) or None, scaled(5), "the switch now reads 'degraded'")
            # a flow limit typed into the row of `fl` and applied with its button
            cdp.type(sel_q, "50")
            cdp.type(sel_b, "80")
            cdp.click("#t_sw tr:has(%s) td:last-child button" % sel_q)
            try:
                flow = poll(lambda: (c.get("/admin/rules").json.get("flow") or {}).get(fl), scaled(10),
                            "GET /admin/rules shows a flow limit on %s" % fl)
            except AssertionError as e:
                raise AssertionError("%s; the page says %r" % (e, cdp.js("document.getElementById('msg').textContent")))
            ck.eq((flow.get("qps"), flow.get("burst")), (50, 80), "the flow limit typed on the page")
            final = c.get("/admin/rules").json
            ck.eq(final["degrade"][sw], True, "the degrade switch kept by the flow change (read-modify-write)")
            poll(lambda: ("flow %s 50/s" % fl) in (cdp.js("document.getElementById('msg').textContent") or "") or None,
                 scaled(5), "the page's message line reports the flow limit")
        finally:
            cdp.close()
        p.stop()
