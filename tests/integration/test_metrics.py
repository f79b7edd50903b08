"""
test_metrics.py — metrics from every process (issue 12, part 1), as an operator's
Prometheus sees them through the gateway's GET /metrics (the gateway fans METRICS out to
the center and every cell and merges their families with its own, docs/operations.md):

  - after orders that succeed and orders refused out_of_stock, one scrape shows the cells'
    commit latency histogram (100 us bucket), batch sizes, orders by outcome and code
    (out_of_stock counted at the cell AND as a gateway error code), parked orders, the
    center's grants and the stock total / sold / available and allotment of the SKU,
    process_* and d11_build_info for the gateway, the center and each cell, and
    d11_part_up; `promtool check metrics` accepts the whole exposition;
  - a cell killed with SIGKILL and restarted by `d11 up` reports
    d11_process_restarts_total 1, and its part is up again;
  - a real Prometheus server (Debian `prometheus`, its own port and data dir, stopped by
    PID) scrapes a running d11 every second; a PromQL query over the scraped data returns
    the number of orders created.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from harness import (Checks, Platform, Skip, free_port, log, new_key, poll, scaled, test_tmp,
                     timeout)

import json
import urllib.parse
import urllib.request


def _scrape(c):
    r = c.get("/metrics", token=None)
    if r.status != 200:
        raise AssertionError("GET /metrics -> %r" % r)
    return r.text


def _value(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels`."""
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        lab = dict(re.findall(r'([a-zA-Z_]+)="([^"]*)"', m.group(2) or ""))
        if all(lab.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
            found = True
    return total if found else None


def _promtool_check(text, ck):
    exe = shutil.which("promtool")
    if not exe:
        raise Skip("promtool not installed (scripts/deps.sh installs prometheus)")
    cp = subprocess.run([exe, "check", "metrics"], input=text, capture_output=True, text=True,
                        timeout=30)
    # promtool check metrics exits 1 on lint problems too; only errors of the format fail here
    # besides the lint of counters / units it reports, so show all of it.
    ck.true(cp.returncode == 0, "promtool check metrics: rc=%d %s%s" % (cp.returncode, cp.stdout,
                                                                       cp.stderr))


def _orders(c, sku, n, ck):
    created = refused = 0
    for i in range(n):
        r = c.order(1000 + i, [{"sku": sku, "quantity": 1}], key=new_key("m"))
        if r.status == 201:
            created += 1
        elif r.status == 409 and r.error_code == "out_of_stock":
            refused += 1
        else:
            ck.fail("unexpected answer %r" % r)
    return created, refused


@timeout(60)
def test_metrics_every_process_and_promtool():
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        sku = "MET-1"
        ck.status(c.create_product(sku, stock=4), 201, "create")
        created, refused = _orders(c, sku, 7, ck)
        ck.eq((created, refused), (4, 3), "4 created, 3 out_of_stock")
        # the cells report sold units to the center asynchronously: wait for the report
        t = poll(lambda: (lambda x: x if _value(x, "d11_stock_sold_units", sku=sku) == 4.0 else None)(_scrape(c)),
                 scaled(10), "the center knows the 4 units sold")
        _promtool_check(t, ck)
        for part in ("gateway", "center", "cell-0", "cell-1"):
            for fam in ("process_start_time_seconds", "process_cpu_seconds_total",
                        "process_resident_memory_bytes", "process_open_fds",
                        "d11_build_info", "d11_process_restarts_total"):
                ck.true(_value(t, fam, part=part) is not None, "%s{part=%s} present" % (fam, part))
            ck.eq(_value(t, "d11_part_up", part=part), 1.0, "d11_part_up{part=%s}" % part)
        ck.true((_value(t, "process_resident_memory_bytes", part="cell-0") or 0) > 1e6, "cell RSS > 1 MB")
        ck.eq(_value(t, "d11_cell_orders_total", outcome="created"), 4.0, "cells: created")
        ck.eq(_value(t, "d11_cell_orders_total", code="out_of_stock"), 3.0, "cells: out_of_stock")
        ck.eq(_value(t, "d11_gateway_errors_total", route="orders.create", code="out_of_stock"), 3.0,
              "gateway: out_of_stock by code")
        n_commit = _value(t, "d11_cell_commit_duration_seconds_count")
        ck.true(n_commit is not None and n_commit >= 1, "commit histogram counted: %r" % n_commit)
        ck.true('d11_cell_commit_duration_seconds_bucket{part="cell-0",le="0.0001"}' in t,
                "a 100 us bucket exists")
        ck.true((_value(t, "d11_cell_batch_ops_count") or 0) >= 1, "batch size histogram counted")
        ck.true(_value(t, "d11_cell_parked_orders", part="cell-0") is not None, "parked gauge")
        ck.true((_value(t, "d11_center_grants_total") or 0) >= 1, "grants counted")
        ck.true(_value(t, "d11_center_reclaims_total") is not None, "reclaims present")
        ck.eq(_value(t, "d11_stock_total_units", sku=sku), 4.0, "stock total")
        ck.eq(_value(t, "d11_stock_sold_units", sku=sku), 4.0, "stock sold")
        ck.eq(_value(t, "d11_stock_available_units", sku=sku), 0.0, "stock available")
        ck.eq(_value(t, "d11_center_allotment_units", sku=sku), 4.0, "allotment summed over cells")
        p.stop()


@timeout(60)
def test_cell_restart_counted():
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        pid = p.pids()["cell-1"]
        os.kill(pid, signal.SIGKILL)

        def restarted():
            try:
                t = _scrape(c)
            except (AssertionError, OSError):
                return None
            if _value(t, "d11_process_restarts_total", part="cell-1") == 1.0 and \
                    _value(t, "d11_part_up", part="cell-1") == 1.0:
                return t
            return None
        t = poll(restarted, scaled(20), "cell-1 restarted and reporting restarts=1")
        ck.eq(_value(t, "d11_process_restarts_total", part="cell-0"), 0.0, "cell-0 never restarted")
        p.stop()


def _prom_query(port, q):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": q}))
    with urllib.request.urlopen(url, timeout=5) as r:
        d = json.loads(r.read().decode())
    res = d.get("data", {}).get("result", [])
    return float(res[0]["value"][1]) if d.get("status") == "success" and res else None


@timeout(90)
def test_real_prometheus_scrapes_order_count():
    exe = shutil.which("prometheus")
    if not exe:
        raise Skip("prometheus not installed (scripts/deps.sh installs it)")
    with Checks() as ck, Platform(cells=2) as p:
        c = p.client()
        ck.status(c.create_product("PROM-1", stock=100), 201, "create")
        created, _ = _orders(c, "PROM-1", 6, ck)
        ck.eq(created, 6, "6 orders created")
        d = tempfile.mkdtemp(prefix="prom.", dir=test_tmp())
        pport = free_port()
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: d11\n    metrics_path: /metrics\n"
                    "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % p.port)
        logf = open(os.path.join(d, "prometheus.log"), "w")
        proc = subprocess.Popen([exe, "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(d, "tsdb"),
                                 "--web.listen-address=127.0.0.1:%d" % pport],
                                stdout=logf, stderr=subprocess.STDOUT)
        try:
            q = 'sum(d11_cell_orders_total{job="d11",outcome="created"})'

            def got():
                try:
                    return _prom_query(pport, q)
                except OSError:
                    return None
            v = poll(got, scaled(30), "prometheus has scraped d11")
            ck.eq(v, 6.0, "PromQL %s" % q)
            up = poll(lambda: _prom_query(pport, 'up{job="d11"}'), scaled(10), "up{job=d11}")
            ck.eq(up, 1.0, "the scrape target is up")
            sold = poll(lambda: _prom_query(pport, 'sum(d11_stock_sold_units{sku="PROM-1"}) == 6'),
                        scaled(15), "stock sold of PROM-1 as scraped reaches 6")
            ck.eq(sold, 6.0, "stock sold of PROM-1 as scraped")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            logf.close()
        p.stop()
