"""
test_traces.py — spans exported as OTLP/HTTP JSON (issue 12, part 7) to a receiver that
this test runs (a Python HTTP server on its own port), with the platform started with
--otlp-endpoint:

  - an order sent with a sampled traceparent and a tracestate gives, in the same trace,
    the gateway's SERVER span (parent = the caller's span, traceState kept and echoed in
    the answer), the cell's SERVER span (parent = the gateway's span: the link across
    processes), a cell.batch_commit child and, for the first order of a SKU, a cell.grant
    CLIENT span (the round trip to the center); ids are lowercase hex of 32/16 digits,
    times decimal strings of nanoseconds, end >= start;
  - head sampling: with --trace-ratio 0 a request without traceparent exports nothing,
    but a 5xx (a stopped cell: 504) is always kept;
  - an endpoint that refuses connections costs nothing to the requests and the lost spans
    are counted (d11_otlp_spans_failed_total);
  - the center (started by `d11 up` with the same --otlp-endpoint) exports a SERVER span
    center.product_create whose parent is the gateway's span of the same trace (the link
    across processes through the wire frame header), and an order's event delivered to a
    webhook and relayed to NATS JetStream (a real nats-server started by the test, as in
    test_events.py) gives one event.publish PRODUCER span per sink in the order's trace.
"""

import json
import os
import re
import shutil
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import Checks, Platform, free_port, new_key, poll, scaled, timeout
from test_events import NatsServer

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


class Receiver:
    def __init__(self):
        self.docs = []
        self.paths = []
        self.lock = threading.Lock()
        rec = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with rec.lock:
                    rec.paths.append((self.path, self.headers.get("Content-Type")))
                    rec.docs.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass
        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.th = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.th.start()

    def spans(self):
        out = []
        with self.lock:
            for d in self.docs:
                for rs in d["resourceSpans"]:
                    svc = [a["value"]["stringValue"] for a in rs["resource"]["attributes"]
                           if a["key"] == "service.name"][0]
                    for ss in rs["scopeSpans"]:
                        for s in ss["spans"]:
                            out.append(dict(s, service=svc))
        return out

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def _attrs(s):
    return {a["key"]: list(a["value"].values())[0] for a in s.get("attributes", [])}


@timeout(60)
def test_spans_across_processes():
    rcv = Receiver()
    try:
        with Checks() as ck, Platform(cells=2, extra_args=["--otlp-endpoint",
                                                           "http://127.0.0.1:%d/v1/traces" % rcv.port,
                                                           "--trace-ratio", "1"]) as p:
            c = p.client()
            ck.status(c.create_product("TR-1", stock=10), 201, "create")
            r = c.order(7, [("TR-1", 1)], key=new_key(),
                        headers={"traceparent": "00-%s-%s-01" % (CALLER_TRACE, CALLER_SPAN),
                                 "tracestate": "vendor=abc,other=1"})
            ck.status(r, 201, "order")
            ck.eq(r.headers.get("tracestate"), "vendor=abc,other=1", "tracestate echoed")
            tp = r.headers.get("traceparent")
            gw_span = tp.split("-")[2]

            def complete():
                ss = [s for s in rcv.spans() if s["traceId"] == CALLER_TRACE]
                names = {s["name"] for s in ss}
                return ss if {"orders.create", "cell.order_create", "cell.batch_commit", "cell.grant"} <= names \
                    else None
            ss = poll(complete, scaled(10), "gateway, cell, batch commit and grant spans of the trace")
            by = {s["name"]: s for s in ss}
            g, cs, bc, gr = by["orders.create"], by["cell.order_create"], by["cell.batch_commit"], by["cell.grant"]
            for s in ss:
                ck.true(re.fullmatch(r"[0-9a-f]{32}", s["traceId"]) and re.fullmatch(r"[0-9a-f]{16}", s["spanId"]),
                        "hex ids: %r" % s)
                ck.true(re.fullmatch(r"[0-9]{19}", s["startTimeUnixNano"]) and
                        re.fullmatch(r"[0-9]{19}", s["endTimeUnixNano"]) and
                        int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]),
                        "nanosecond strings: %r" % s)
            ck.eq(g["service"], "d11-gateway", "gateway service name")
            ck.eq(g["spanId"], gw_span, "the gateway span is the one in the answer's traceparent")
            ck.eq(g["parentSpanId"], CALLER_SPAN, "parent: the caller's span")
            ck.eq(g["traceState"], "vendor=abc,other=1", "traceState exported")
            ck.eq(g["kind"], 2, "SERVER")
            ck.eq(_attrs(g).get("http.response.status_code"), "201", "status attribute (int as string)")
            ck.eq(cs["service"], "d11-cell", "cell service name")
            ck.eq(cs["parentSpanId"], g["spanId"], "cell span is a child of the gateway span (across processes)")
            ck.eq(bc["parentSpanId"], cs["spanId"], "batch commit is a child of the cell span")
            ck.eq(gr["parentSpanId"], cs["spanId"], "grant round trip is a child of the cell span")
            ck.eq(gr["kind"], 3, "grant is CLIENT")
            cg = poll(lambda: [s for s in rcv.spans() if s["traceId"] == CALLER_TRACE and s["name"] == "center.grant"] or None,
                      scaled(10), "center.grant span")
            ck.eq(cg[0]["parentSpanId"], gr["spanId"], "center.grant child of cell.grant")
            ck.eq(cg[0]["service"], "d11-center", "center service")
            ck.true(int(g["startTimeUnixNano"]) <= int(cs["startTimeUnixNano"]) and
                    int(cs["endTimeUnixNano"]) <= int(g["endTimeUnixNano"]) + 5_000_000,
                    "cell span within the gateway span (clock of one machine)")
            ck.true(all(path == "/v1/traces" and ctype == "application/json" for path, ctype in rcv.paths),
                    "POST /v1/traces, JSON: %r" % rcv.paths[:3])
            # the exporter counts a batch once the receiver has answered it, just after the
            # receiver recorded it: poll
            poll(lambda: re.search(r'^d11_otlp_spans_exported_total\{part="gateway"\} [1-9]',
                                   c.get("/metrics", token=None).text, re.M), scaled(5), "exported spans counted")
            p.stop()
    finally:
        rcv.close()


@timeout(60)
def test_center_span_and_event_publish_span():
    if not shutil.which("nats-server"):
        raise AssertionError("nats-server is not installed (scripts/deps.sh installs it)")
    rcv, hook, nats = Receiver(), Receiver(), NatsServer().start()
    trace_p, trace_o = "4bf92f3577b34da6a3ce929d0e0e4736", "5cf92f3577b34da6a3ce929d0e0e4737"
    try:
        with Checks() as ck, Platform(cells=2, extra_args=["--otlp-endpoint",
                                                           "http://127.0.0.1:%d/v1/traces" % rcv.port,
                                                           "--trace-ratio", "1",
                                                           "--nats", "nats://127.0.0.1:%d" % nats.port]) as p:
            c = p.client()
            r = c.create_product("TR-4", stock=10, headers={"traceparent": "00-%s-%s-01" % (trace_p, CALLER_SPAN)})
            ck.status(r, 201, "create with a traceparent")
            gw_span = r.headers.get("traceparent").split("-")[2]
            wh = c.post("/admin/webhooks", {"url": "http://127.0.0.1:%d/hook" % hook.port, "secret": "s"})
            ck.status(wh, 201, "webhook registered")
            o = c.order(11, [("TR-4", 1)], key=new_key(),
                        headers={"traceparent": "00-%s-%s-01" % (trace_o, CALLER_SPAN)})
            ck.status(o, 201, "order")

            def center_span():
                ss = [s for s in rcv.spans() if s["traceId"] == trace_p and s["service"] == "d11-center"]
                return ss or None
            cs = poll(center_span, scaled(10), "a center span in the product's trace")
            ck.eq([s["name"] for s in cs], ["center.product_create"], "one center span, named by the message")
            cs = cs[0]
            ck.eq(cs["parentSpanId"], gw_span, "center span's parent: the gateway span (across processes)")
            ck.eq(cs["kind"], 2, "center span is SERVER")
            ck.eq(_attrs(cs).get("rpc.status"), "201", "center span carries the reply status")
            ck.true(re.fullmatch(r"[0-9a-f]{16}", cs["spanId"]) and cs["spanId"] != gw_span, "own span id")
            g = poll(lambda: [s for s in rcv.spans() if s["spanId"] == gw_span] or None, scaled(10),
                     "the parent gateway span exported too")
            ck.eq([(s["traceId"], s["service"]) for s in g], [(trace_p, "d11-gateway")], "in the same trace")
            ck.true(int(g[0]["startTimeUnixNano"]) <= int(cs["startTimeUnixNano"]) and
                    int(cs["endTimeUnixNano"]) <= int(g[0]["endTimeUnixNano"]) + 5_000_000,
                    "center span within the gateway span")

            def publish_spans():
                ss = {_attrs(s).get("messaging.system"): s for s in rcv.spans()
                      if s["traceId"] == trace_o and s["name"] == "event.publish"}
                return ss if {"webhook", "nats"} <= set(ss) else None
            both = poll(publish_spans, scaled(15), "event.publish spans (webhook, nats) in the order's trace")
            ps, ns = both["webhook"], both["nats"]
            a, na = _attrs(ps), _attrs(ns)
            ck.eq((ns["service"], ns["kind"], ns["status"]["code"]), ("d11-gateway", 4, 0), "NATS span: PRODUCER, ok")
            ck.true(re.fullmatch(r"d11\.events\.order\.created\.\d+", na.get("messaging.destination", "")),
                    "NATS span names the subject: %r" % na)
            ck.eq(na.get("d11.event_id"), a.get("d11.event_id"), "the same event through both sinks")
            ck.true(int(ns["endTimeUnixNano"]) >= int(ns["startTimeUnixNano"]), "publish .. ack")
            ck.eq(ps["service"], "d11-gateway", "published by the gateway's webhook worker")
            ck.eq(ps["kind"], 4, "PRODUCER")
            ck.eq(a.get("messaging.system"), "webhook", "webhook path")
            ck.eq(a.get("http.response.status_code"), "200", "delivery status")
            ck.true(re.fullmatch(r"\d+-\d+", a.get("d11.event_id", "")), "event id attribute: %r" % a)
            ck.eq(ps["status"]["code"], 0, "a delivered event is not an error")
            with hook.lock:
                got = [d for d in hook.docs if d.get("trace_id") == trace_o]
            ck.true(got and any(d["id"] == a.get("d11.event_id") for d in got),
                    "the span names an event the webhook received: %r" % got[:1])
            p.stop()
    finally:
        rcv.close()
        hook.close()
        nats.stop()


@timeout(60)
def test_head_ratio_zero_keeps_errors_and_failed_export_is_counted():
    rcv = Receiver()
    try:
        with Checks() as ck, Platform(cells=2, request_timeout_ms=300,
                                      extra_args=["--otlp-endpoint", "http://127.0.0.1:%d" % rcv.port,
                                                  "--trace-ratio", "0"]) as p:
            c = p.client()
            ck.status(c.create_product("TR-2", stock=10), 201, "create")
            ok = c.order(8, [("TR-2", 1)], key=new_key())
            ck.status(ok, 201, "order")
            ck.true(ok.headers.get("traceparent").endswith("-00"), "not sampled: flag 00 sent on")
            pid = p.pids()["cell-0"], p.pids()["cell-1"]
            for x in pid:
                os.kill(x, signal.SIGSTOP)
            try:
                bad = c.order(9, [("TR-2", 1)], key=new_key())
            finally:
                for x in pid:
                    os.kill(x, signal.SIGCONT)
            ck.true(bad.status >= 500, "a 5xx: %r" % bad)
            bad_trace = bad.headers.get("traceparent").split("-")[1]
            ok_trace = ok.headers.get("traceparent").split("-")[1]
            s = poll(lambda: [x for x in rcv.spans() if x["traceId"] == bad_trace] or None, scaled(10),
                     "the 5xx span exported")
            ck.eq(s[0]["status"]["code"], 2, "error status")
            ck.eq([x for x in rcv.spans() if x["traceId"] == ok_trace], [], "the unsampled 201 was not exported")
            p.stop()
        # an endpoint nobody listens on: requests are fine, lost spans counted
        dead = free_port()
        with Checks() as ck, Platform(cells=2, extra_args=["--otlp-endpoint", "http://127.0.0.1:%d" % dead,
                                                           "--trace-ratio", "1"]) as p:
            c = p.client()
            ck.status(c.create_product("TR-3", stock=10), 201, "create with a dead collector")

            def failed():
                m = c.get("/metrics", token=None).text
                v = re.search(r'^d11_otlp_spans_failed_total\{part="gateway"\} (\d+)', m, re.M)
                return v and int(v.group(1)) >= 1
            poll(failed, scaled(10), "failed exports counted")
            p.stop()
    finally:
        rcv.close()
