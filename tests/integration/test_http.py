"""
test_http.py — API.md's HTTP-level rules: the error document and X-Request-Id on every
response, 404 not_found / 405 / 400 bad_json / 413 / 431, traceparent, the operations
endpoints, and "a bad request never crashes a process and never changes data".
"""

import json
import socket
import time

from harness import Checks, Platform, expect, new_key, raw_http, scaled

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = "00-%s-00f067aa0ba902b7-01" % TRACE_ID


def test_request_id_on_every_response():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        rs = [c.get("/healthz", token=None), c.get("/v1/products/A"), c.get("/v1/products/NOPE"),
              c.order(1, [("A", 1)]), c.get("/nope")]
        ids = []
        for r in rs:
            rid = r.headers.get("x-request-id")
            ck.true(rid and len(rid) <= 64, "X-Request-Id missing or over 64 bytes: %r %r" % (rid, r))
            ids.append(rid)
        ck.eq(len(set(ids)), len(ids), "X-Request-Id values are unique per request")


def test_unknown_route_is_404_not_found():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        for path in ("/v1/nope", "/v2/products/A", "/v1/products/A/nope", "/v1/orders/1/refund",
                     "/nope"):
            ck.error(c.get(path), 404, "not_found", what="GET " + path)
        ck.error(c.post("/v1/nope", {}), 404, "not_found", what="POST /v1/nope")


def test_wrong_method_is_405():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        oid = expect(c.order(1, [("A", 1)]), 201)["order_id"]
        for method, path in (("DELETE", "/v1/products/A"), ("PUT", "/v1/products/A"),
                             ("GET", "/v1/orders"), ("DELETE", "/v1/orders/" + oid),
                             ("GET", "/v1/orders/%s/pay" % oid), ("GET", "/v1/orders/%s/cancel" % oid),
                             ("GET", "/v1/products/A/restock"), ("POST", "/v1/users/1/orders"),
                             ("PATCH", "/v1/products")):
            ck.error(c.request(method, path), 405, what="%s %s" % (method, path))
        r = c.get_order(oid)
        ck.eq((r.json or {}).get("status"), "pending_payment", "order untouched by the 405s")


def test_bad_json_is_400():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        bodies = ['{', '{"sku": "B", "title": "t", "price_cents": 1, "stock": 1, "category": "c"',
                  'not json', '{"sku": "B",}', '{"sku": "B" "title": "t"}', b'{"sku": "\xff\xfe"}',
                  '{"sku": "B", "title": "\\ud800x"', '[' * 40 + ']' * 40,
                  '{"a":' * 20 + '1' + '}' * 20, '']
        for b in bodies:
            shown = b if isinstance(b, str) else b.decode("latin-1")
            r = c.post("/v1/products", b)
            ck.error(r, 400, "bad_json", what="POST /v1/products %r" % shown[:50])
        for b in ('{"user_id": 1, "items": [', '{"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}}'):
            r = c.post("/v1/orders", b, headers={"Idempotency-Key": new_key()})
            ck.error(r, 400, "bad_json", what="POST /v1/orders %r" % b[:50])
        ck.error(c.get("/v1/products/B"), 404, what="no product B was created by a bad body")
        r = c.get("/v1/products/A")
        ck.product(r, {"stock_sold": 0}, "A untouched")


def test_body_too_large_is_413():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        big = json.dumps({"user_id": 1, "items": [{"sku": "A", "quantity": 1}], "pad": "x" * 20000})
        req = ("POST /v1/orders HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
               "Idempotency-Key: big-1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
               % (p.admin_token, len(big), big))
        r = raw_http(p.port, req.encode())
        if r is None:
            ck.fail("POST /v1/orders with a %d-byte body: connection closed without a response" % len(big))
        else:
            ck.error(r, 413, what="POST /v1/orders with a %d-byte body" % len(big))
        # Announced but not sent: the Content-Length alone is enough to refuse.
        req = ("POST /v1/products HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n{" % p.admin_token)
        r = raw_http(p.port, req.encode())
        ck.true(r is not None and r.status == 413, "Content-Length 10000000: expected 413, got %r" % r)
        # Through http.client as well (keep-alive client): 413 with the error document.
        try:
            r = c.post("/v1/products", {"sku": "B", "title": "t" * 17000, "price_cents": 1, "stock": 1,
                                        "category": "c"})
            ck.error(r, 413, what="17000-byte product body")
        except ConnectionError as e:
            ck.fail("17000-byte product body: no 413 answer, the connection failed: %s" % e)
        ck.error(c.get("/v1/products/B"), 404, what="the oversized product was not created")
        ck.product(c.get("/v1/products/A"), {"stock_sold": 0}, "A untouched by the oversized order")
        ck.status(c.get("/healthz", token=None), 200, "healthz after 413s")


def test_headers_too_large_is_431():
    with Platform(cells=1) as p, Checks() as ck:
        for what, extra in (("one 9000-byte header", "X-Big: %s\r\n" % ("y" * 9000)),
                            ("70 headers", "".join("X-H%d: v\r\n" % i for i in range(70)))):
            req = ("GET /v1/products/A HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n%s\r\n"
                   % (p.admin_token, extra))
            r = raw_http(p.port, req.encode())
            if r is None:
                ck.fail("%s: connection closed without a response (expected 431)" % what)
            else:
                ck.error(r, 431, what=what)
        ck.status(p.client().get("/healthz", token=None), 200, "healthz after 431s")


def test_traceparent_accepted():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        r = c.create_product("A", stock=5, headers={"traceparent": TRACEPARENT})
        ck.status(r, 201, "create with traceparent")
        r = c.order(1, [("A", 1)], headers={"traceparent": TRACEPARENT})
        ck.status(r, 201, "order with traceparent")
        tp = r.headers.get("traceparent")
        if tp is not None:
            ck.true(tp.split("-")[1:2] == [TRACE_ID],
                    "a traceparent in the answer must continue the trace %s: %r" % (TRACE_ID, tp))
        for bad in ("garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "ff-%s-00f067aa0ba902b7-01" % TRACE_ID):
            r = c.order(2, [("A", 1)], headers={"traceparent": bad})
            ck.status(r, 201, "an invalid traceparent %r starts a new trace, never fails the request" % bad)
        ck.status(c.get("/v1/products/A", headers={"traceparent": TRACEPARENT}), 200, "GET with traceparent")


def test_operations_endpoints():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client(token=None)
        ck.status(c.get("/healthz"), 200, "GET /healthz without a token")
        ck.status(c.get("/readyz"), 200, "GET /readyz")
        r = c.get("/metrics")
        ck.status(r, 200, "GET /metrics")
        ck.true("# TYPE" in r.text, "/metrics is Prometheus text (has # TYPE lines): %r" % r)
        r = c.get("/")
        ck.status(r, 200, "GET / (dashboard)")
        ck.true("html" in r.headers.get("content-type", ""), "GET / is HTML: %r" % r.headers)


def test_bad_requests_never_crash_or_change_data():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        oid = expect(c.order(1, [("A", 1)]), 201)["order_id"]
        before = p.pids()
        junk = [b"\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                b"POST /v1/orders HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                b"POST /v1/orders HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                b"POST /v1/orders HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /v1/products/A HTTP/1.1\r\nAuthorization: Bearer \x00\xff\r\n\r\n",
                b"GET /v1/products/%00%ff HTTP/1.1\r\nHost: t\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
                ("POST /v1/orders/%s/pay HTTP/1.1\r\nAuthorization: Bearer %s\r\nContent-Length: 4\r\n\r\n{\"pa"
                 % (oid, p.admin_token)).encode()]
        for j in junk:
            r = raw_http(p.port, j, timeout_s=5)
            if r is not None:
                ck.true(400 <= r.status < 500 or r.status == 505,
                        "junk request %r: expected a 4xx, got %r" % (j[:40], r))
        for sku in ("A", "A%2F..", "..%2F..%2Fetc"):
            r = c.get("/v1/products/" + sku)
            ck.true(r.status in (200, 404, 422), "GET product %s: %r" % (sku, r))
        ck.status(c.get("/healthz", token=None), 200, "healthz after the junk")
        ck.eq(p.pids(), before, "every process survived the junk (same pids)")
        ck.eq((c.get_order(oid).json or {}).get("status"), "pending_payment", "order untouched")
        ck.product(c.get("/v1/products/A"), {"stock_total": 5}, "product untouched")
        ck.status(c.order(2, [("A", 1)]), 201, "still taking orders")


def _read_responses(sock, n, timeout_s=10):
    """Read n HTTP/1.1 responses (Content-Length framed) from sock; returns
    [(status, headers, body)]."""
    sock.settimeout(timeout_s)
    buf = b""
    out = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        h = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            h[k.strip().lower()] = v.strip()
        ln = int(h.get("content-length", "0"))
        while len(buf) < ln:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            buf += chunk
        out.append((int(lines[0].split(" ")[1]), h, buf[:ln]))
        buf = buf[ln:]
    return out


def test_pipelined_requests_answered_in_order():
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        for i in range(5):
            expect(c.create_product("P%d" % i, stock=10 + i), 201)
        reqs = b""
        want = []
        for i in range(10):
            if i % 3 == 2:
                body = json.dumps({"user_id": 100 + i * 300, "items": [{"sku": "P%d" % (i % 5), "quantity": 1}]})
                reqs += ("POST /v1/orders HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nIdempotency-Key: pipe-%d\r\n"
                         "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (p.admin_token, i, len(body), body)).encode()
                want.append((201, "user_id", 100 + i * 300))
            elif i == 7:
                reqs += ("GET /v1/products/NOPE HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n"
                         % p.admin_token).encode()
                want.append((404, None, None))
            else:
                reqs += ("GET /v1/products/P%d HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n"
                         % (i % 5, p.admin_token)).encode()
                want.append((200, "stock_total", 10 + i % 5))
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        try:
            s.sendall(reqs)  # ten requests in one write
            got = _read_responses(s, 10)
        finally:
            s.close()
        ck.eq(len(got), 10, "responses to 10 pipelined requests")
        for i, ((st, h, body), (wst, key, val)) in enumerate(zip(got, want)):
            ck.eq(st, wst, "pipelined response %d status" % i)
            if key:
                try:
                    ck.eq(json.loads(body).get(key), val, "pipelined response %d %s (answers in request order)" % (i, key))
                except ValueError:
                    ck.fail("pipelined response %d: not JSON: %r" % (i, body[:200]))
            ck.true(h.get("x-request-id"), "pipelined response %d has X-Request-Id" % i)


def test_chunked_request_body():
    """A chunked request body is either parsed (201) or refused with 411; never a hang."""
    with Platform(cells=1) as p, Checks() as ck:
        expect(p.client().create_product("A", stock=5), 201)
        body = json.dumps({"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}).encode()
        chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, body[:10], len(body) - 10, body[10:])
        req = ("POST /v1/orders HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nIdempotency-Key: ch-1\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % p.admin_token).encode() + chunks
        r = raw_http(p.port, req, timeout_s=10)
        ck.true(r is not None and r.status in (201, 411), "chunked POST /v1/orders: expected 201 or 411, got %r" % r)


def test_slow_headers_do_not_block_others():
    """A client that never finishes its headers is cut off (408 or close) within the
    header timeout (10 s), and meanwhile everyone else is served."""
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        slow = []
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=30)
            s.sendall(b"GET /v1/products/A HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            slow.append(s)
        t0 = time.monotonic()
        ck.status(c.create_product("A", stock=5), 201, "create while 20 clients hold half-sent headers")
        ck.true(time.monotonic() - t0 < 2, "a normal request waited %.1fs behind slow clients" % (time.monotonic() - t0))
        s = slow[0]
        s.settimeout(scaled(25))
        t0 = time.monotonic()
        try:
            data = s.recv(4096)
        except socket.timeout:
            data = None
        dt = time.monotonic() - t0
        ck.true(data is not None, "a client with unfinished headers was not cut off within 25s")
        if data:
            ck.true(data.startswith(b"HTTP/1.1 408"), "expected 408 (or a plain close) for slow headers: %r" % data[:80])
        print("slow client cut off after %.1fs: %r" % (dt, (data or b"")[:40]))
        for s in slow:
            s.close()
        ck.status(c.get("/v1/products/A"), 200, "served after the slow clients")


def test_many_idle_connections():
    with Platform(cells=1) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=5), 201)
        idle = []
        try:
            for _ in range(400):
                idle.append(socket.create_connection(("127.0.0.1", p.port), timeout=10))
            for i in range(20):
                ck.status(p.client().get("/v1/products/A"), 200, "request %d with 400 idle connections open" % i)
        finally:
            for s in idle:
                s.close()
        ck.status(c.order(1, [("A", 1)]), 201, "order after the idle connections closed")
