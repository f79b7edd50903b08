"""
test_hostile.py — "a bad request never crashes a process and never changes data"
(API.md), one test per shape of hostile input. Every test:
  - sends the hostile bytes (raw sockets, exact bytes) on fresh connections;
  - expects a 4xx with the error document (or, where the framing is lost, a close) and,
    after a framing error, that the connection is closed (nothing after it is trusted);
  - checks that NOTHING was written: every table of center.db and of each cell-<i>.db
    (products, center stock and ledger, orders, items, outbox, stock ledgers) is exactly
    as before (DbView.fingerprint), and the products read back unchanged through the API;
  - checks that the gateway (and every other process) is alive with the same pid,
    /healthz answers 200, and a normal order is still placed.
test_http.py covers the basic 400 / 413 / 431 / pipelining / slow-header cases; this file
covers the rest (boundaries, smuggling shapes, chunk syntax, every JSON number shape,
wrong types for every field, NUL bytes, request-line garbage, 414, idle connections).
"""

import json
import select
import socket
import time

from harness import (Checks, DbView, Platform, Resp, expect, fingerprint_diff, new_key, scaled,
                     wait_product)

# ---------------------------------------------------------------- the frame of every test

GOOD_ORDER = {"user_id": 77, "items": [{"sku": "A", "quantity": 1}]}
GOOD_PRODUCT = {"sku": "NEWSKU", "title": "t", "price_cents": 100, "stock": 5, "category": "c"}


class Hostile:
    """A running platform with product A (stock 10) and one pending order, the data
    fingerprint and every pid taken before the hostile requests; `verify()` checks
    afterwards that nothing changed and everybody is alive."""

    def __init__(self, p, ck):
        self.p, self.ck = p, ck
        self.port = p.port
        self.token = p.admin_token
        c = p.client()
        expect(c.create_product("A", stock=10, price=500), 201)
        self.oid = expect(c.order(5, [("A", 2)]), 201)["order_id"]
        # stock_sold comes from the cells' reports to the center: wait until it shows.
        self.product = wait_product(c, "A", lambda j: j["stock_sold"] == 2, "product A to show 2 sold")
        c.close()
        with DbView(p) as v:
            self.fp = v.fingerprint()
        self.pids = p.pids()

    # -- request building --
    def req(self, method="POST", path="/v1/orders", body=b"", headers=(), auth=True, cl=True, key=True,
            version="HTTP/1.1"):
        """Bytes of one request; body bytes/str/dict; headers extra lines (str)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        lines = ["%s %s %s" % (method, path, version), "Host: t"]
        if auth:
            lines.append("Authorization: Bearer " + self.token)
        if key and path == "/v1/orders":
            lines.append("Idempotency-Key: " + new_key("h"))
        lines += list(headers)
        if cl and body is not None:
            lines.append("Content-Length: %d" % len(body))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    def exchange(self, data, wait_s=3.0, max_responses=None):
        return exchange(self.port, data, wait_s, max_responses)

    def post(self, path, body, key=True):
        """One request on a fresh connection; returns its Resp (or None: closed)."""
        rs, _ = self.exchange(self.req("POST", path, body, key=key), max_responses=1)
        return rs[0] if rs else None

    # -- expectations --
    def refused(self, r, what, status=None, code=None, field=None, allow_close=False):
        """r must be a 4xx error document (status / code / field when given), or None
        (a close) when allow_close."""
        ck = self.ck
        if r is None:
            if not allow_close:
                ck.fail("%s: the connection closed without an answer (expected a 4xx)" % what)
            return
        if status is None:
            if not ck.true(400 <= r.status < 500, "%s: expected a 4xx: %r" % (what, r)):
                return
            status = r.status
        ck.error(r, status, code, field, what=what)

    def verify(self):
        p, ck = self.p, self.ck
        c = p.client()
        h = c.get("/healthz", token=None)
        ck.status(h, 200, "GET /healthz after the hostile requests")
        ck.eq(p.pids(), self.pids, "every process alive with the same pid (no crash, no restart)")
        with DbView(p) as v:
            diff = fingerprint_diff(self.fp, v.fingerprint())
        ck.true(not diff, "hostile requests changed stored data:\n      " + "\n      ".join(diff))
        ck.eq(c.product("A").json, self.product, "product A read back unchanged")
        ck.error(c.product("NEWSKU"), 404, what="no product was created by a hostile request")
        r = c.get_order(self.oid)
        ck.eq((r.json or {}).get("status"), "pending_payment", "the pending order is untouched")
        ck.status(c.order(6, [("A", 1)]), 201, "a normal order is still placed afterwards")
        c.close()


def hostile_test(fn):
    """Run fn(h) on a fresh platform, then h.verify()."""
    def run():
        with Platform(cells=2) as p, Checks() as ck:
            h = Hostile(p, ck)
            fn(h)
            h.verify()
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    run.timeout = getattr(fn, "timeout", 60)
    return run


# ---------------------------------------------------------------- raw HTTP

def _parse_responses(buf):
    """Parse complete Content-Length-framed responses from buf; returns (list, rest)."""
    out = []
    while b"\r\n\r\n" in buf:
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        hd = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hd[k.strip().lower()] = v.strip()
        n = int(hd.get("content-length", "0") or 0)
        if len(rest) < n:
            break
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            status = -1
        out.append((status, parts[2] if len(parts) > 2 else "", hd, rest[:n]))
        buf = rest[n:]
    return out, buf


def exchange(port, data, wait_s=3.0, max_responses=None):
    """Send data on a new connection and read until the server closes, wait_s passes
    with no new bytes, or max_responses complete answers are in. Returns ([Resp...],
    closed)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(10))
    first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:100]
    desc = "raw[%r ... %d bytes]" % (first, len(data))
    buf = b""
    closed = False
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        s.settimeout(scaled(wait_s))
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            buf += chunk
            if max_responses and len(_parse_responses(buf)[0]) >= max_responses:
                break
    finally:
        s.close()
    rs, rest = _parse_responses(buf)
    out = [Resp(desc, st, reason, hd, body, 0.0) for st, reason, hd, body in rs]
    if rest.strip():
        out.append(Resp(desc + " (unparsable tail)", -1, "", {}, rest[:200], 0.0))
    return out, closed


def framing_refused(h, data, what, status=400, code=None, allow_close=False):
    """A request whose framing is bad: one 4xx (or a close when allowed), then the server
    closes the connection; nothing smuggled after it is answered."""
    rs, closed = h.exchange(data)
    if not rs:
        h.refused(None, what, allow_close=allow_close)
    else:
        h.refused(rs[0], what, status, code)
        h.ck.true(len(rs) == 1, "%s: expected exactly one answer, got %d: %r" % (what, len(rs), rs))
    h.ck.true(closed, "%s: the connection must be closed after a framing error" % what)


# ---------------------------------------------------------------- header limits

@hostile_test
def test_header_block_one_byte_over_limit_is_431(h):
    """The request line + headers + empty line: 8192 bytes are accepted, 8193 are 431."""
    def sized(total, method, path, body):
        base = h.req(method, path, body, headers=["X-Pad: "])
        head_len = base.index(b"\r\n\r\n") + 4
        pad = total - head_len
        return h.req(method, path, body, headers=["X-Pad: " + "p" * pad])
    ok = sized(8192, "GET", "/v1/products/A", None)
    assert ok.index(b"\r\n\r\n") + 4 == 8192
    rs, _ = h.exchange(ok, max_responses=1)
    h.ck.true(rs and rs[0].status == 200, "a header block of exactly 8192 bytes is accepted: %r" % rs)
    over = sized(8193, "POST", "/v1/orders", GOOD_ORDER)
    assert over.index(b"\r\n\r\n") + 4 == 8193
    rs, closed = h.exchange(over, max_responses=1)
    h.refused(rs[0] if rs else None, "POST /v1/orders with a 8193-byte header block", 431, "headers_too_large")
    # Far over: 64 KB of headers in many lines, sent at once.
    big = h.req("POST", "/v1/orders", GOOD_ORDER, headers=["X-F%d: %s" % (i, "v" * 1000) for i in range(60)])
    rs, closed = h.exchange(big, max_responses=1)
    h.refused(rs[0] if rs else None, "60 KB of headers", 431, allow_close=True)


@hostile_test
def test_header_count_over_limit_is_431(h):
    """64 header fields are accepted, 65 are 431 (whatever their size)."""
    def with_fields(n, method, path, body):
        base = h.req(method, path, body)
        have = base.split(b"\r\n\r\n")[0].count(b"\r\n")  # fields already there
        return h.req(method, path, body, headers=["X-N%d: v" % i for i in range(n - have)])
    ok = with_fields(64, "GET", "/v1/products/A", None)
    rs, _ = h.exchange(ok, max_responses=1)
    h.ck.true(rs and rs[0].status == 200, "64 header fields are accepted: %r" % rs)
    rs, _ = h.exchange(with_fields(65, "POST", "/v1/orders", GOOD_ORDER), max_responses=1)
    h.refused(rs[0] if rs else None, "POST /v1/orders with 65 header fields", 431, "headers_too_large")
    rs, _ = h.exchange(with_fields(1000, "POST", "/v1/orders", GOOD_ORDER), max_responses=1)
    h.refused(rs[0] if rs else None, "POST /v1/orders with 1000 tiny header fields", 431, allow_close=True)


# ---------------------------------------------------------------- body limit

@hostile_test
def test_body_one_byte_over_limit_is_413(h):
    """16384 body bytes are read and validated (422 for an invalid product), 16385 are 413
    — declared by Content-Length or reached by chunks."""
    def body_of(n):
        doc = dict(GOOD_PRODUCT, sku="", pad="")
        base = len(json.dumps(doc))
        doc["pad"] = "x" * (n - base)
        b = json.dumps(doc)
        assert len(b) == n
        return b
    r = h.post("/v1/products", body_of(16384))
    h.refused(r, "a 16384-byte product body (invalid sku)", 422, "invalid", "sku")
    r = h.post("/v1/products", body_of(16385))
    h.refused(r, "a 16385-byte product body", 413)
    r = h.post("/v1/orders", json.dumps(dict(GOOD_ORDER, pad="y" * 16400)))
    h.refused(r, "a valid order padded over 16384 bytes", 413)
    # Chunked: 9000 + 7385 bytes = 16385.
    body = json.dumps(dict(GOOD_ORDER, pad="z" * 16385))[:16385].encode()
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (9000, body[:9000], len(body) - 9000, body[9000:])
    data = h.req("POST", "/v1/orders", None, headers=["Transfer-Encoding: chunked"], cl=False) + chunks
    framing_refused(h, data, "a chunked order body of 16385 bytes", 413, allow_close=True)


# ---------------------------------------------------------------- slow and idle clients

def _dribble(h, data, limit_s, step_s=0.25, what=""):
    """Send data one byte every step_s until the server answers or closes; returns
    (seconds since the first byte, first bytes received or b"" for a close, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", h.port), timeout=scaled(5))
    t0 = time.monotonic()
    sent = 0
    try:
        while time.monotonic() - t0 < scaled(limit_s):
            if sent < len(data):
                try:
                    s.sendall(data[sent:sent + 1])
                except OSError:
                    return time.monotonic() - t0, b"", sent
                sent += 1
            r, _, _ = select.select([s], [], [], step_s)
            if r:
                try:
                    got = s.recv(4096)
                except OSError:
                    got = b""
                return time.monotonic() - t0, got, sent
        return None, None, sent
    finally:
        s.close()


@hostile_test
def test_slowloris_headers_dribbled_are_cut_off(h):
    """Headers sent one byte every 250 ms (each byte "keeps the connection busy"): the
    request must still arrive whole within the header timeout (10 s from its first
    byte), else 408 (or a close) — and the order is never placed."""
    data = h.req("POST", "/v1/orders", GOOD_ORDER, headers=["X-Slow-%d: %s" % (i, "s" * 20) for i in range(8)])
    dt, got, sent = _dribble(h, data, limit_s=15)
    print("slow headers: cut off after %s s (%d of %d bytes sent): %r" % (dt and round(dt, 2), sent, len(data),
                                                                          (got or b"")[:60]))
    if dt is None:
        h.ck.fail("a client dribbling its headers (1 byte / 250 ms) was not cut off within %.0fs" % scaled(15))
        return
    h.ck.true(dt <= scaled(12.5), "cut off after %.1fs; the header timeout is 10 s" % dt)
    h.ck.true(got == b"" or got.startswith(b"HTTP/1.1 408"), "expected 408 or a close: %r" % got[:100])
    h.ck.true(sent < len(data), "the whole request was accepted byte by byte (%d bytes in %.1fs)" % (sent, dt))


@hostile_test
def test_slow_body_dribbled_is_cut_off(h):
    """Headers at once, then the body one byte every 300 ms: the request must be whole
    within 10 s of its first byte, else 408 / close; the order is not placed."""
    body = json.dumps(dict(GOOD_ORDER, pad="q" * 60)).encode()
    head = h.req("POST", "/v1/orders", body)[:-len(body)]
    s = socket.create_connection(("127.0.0.1", h.port), timeout=scaled(5))
    t0 = time.monotonic()
    got = None
    try:
        s.sendall(head)
        for i in range(len(body)):
            try:
                s.sendall(body[i:i + 1])
            except OSError:
                got = b""
                break
            r, _, _ = select.select([s], [], [], 0.3)
            if r:
                try:
                    got = s.recv(4096)
                except OSError:
                    got = b""
                break
            if time.monotonic() - t0 > scaled(15):
                break
    finally:
        s.close()
    dt = time.monotonic() - t0
    print("slow body: answer after %.2fs: %r" % (dt, (got or b"")[:60]))
    h.ck.true(got is not None, "a body dribbled for %.0fs was never cut off" % dt)
    if got is not None:
        h.ck.true(dt <= scaled(12.5), "cut off after %.1fs; the request timeout is 10 s" % dt)
        h.ck.true(got == b"" or got.startswith(b"HTTP/1.1 408"), "expected 408 or a close: %r" % got[:100])


@hostile_test
def test_idle_keepalive_connection_is_closed(h):
    """A keep-alive connection with nothing in flight (after one answered request, and a
    connection that never sent a byte) is closed after the idle timeout (30 s)."""
    a = socket.create_connection(("127.0.0.1", h.port), timeout=scaled(5))
    b = socket.create_connection(("127.0.0.1", h.port), timeout=scaled(5))
    try:
        a.sendall(h.req("GET", "/v1/products/A", None))
        buf = b""
        while True:
            chunk = a.recv(65536)
            if not chunk:
                break
            buf += chunk
            rs, rest = _parse_responses(buf)
            if rs:
                break
        h.ck.true(rs and rs[0][0] == 200 and not rest, "keep-alive request answered 200: %r" % buf[:80])
        t0 = time.monotonic()
        socks = {"after a request": a, "never used": b}
        closed = {}
        while len(closed) < len(socks) and time.monotonic() - t0 < scaled(40):
            ready, _, _ = select.select([s for n, s in socks.items() if n not in closed], [], [], 0.5)
            for s in ready:
                name = [n for n, x in socks.items() if x is s][0]
                try:
                    d = s.recv(65536)
                except OSError:
                    d = b""
                if d:
                    h.ck.fail("idle connection (%s): unexpected bytes %r" % (name, d[:80]))
                closed[name] = time.monotonic() - t0
        print("idle connections closed after: %r" % closed)
        for name in socks:
            if name not in closed:
                h.ck.fail("idle connection (%s) still open after %.0fs (idle timeout 30 s)" % (name, scaled(40)))
            else:
                h.ck.true(closed[name] >= 25, "idle connection (%s) closed after only %.1fs (idle timeout 30 s)"
                          % (name, closed[name]))
    finally:
        a.close()
        b.close()


test_idle_keepalive_connection_is_closed.timeout = 90


# ---------------------------------------------------------------- framing (smuggling)

@hostile_test
def test_content_length_with_transfer_encoding_is_400(h):
    """CL + TE in one request is the classic smuggling shape: 400, close; the order
    smuggled in the body is never placed (in either header order, any TE case)."""
    inner = h.req("POST", "/v1/orders", GOOD_ORDER)
    chunked = b"0\r\n\r\n" + inner
    for what, hdrs in (("CL then TE", ["Content-Length: %d" % len(chunked), "Transfer-Encoding: chunked"]),
                       ("TE then CL", ["Transfer-Encoding: chunked", "Content-Length: %d" % len(chunked)]),
                       ("CL + TE: CHUNKED", ["Content-Length: 5", "Transfer-Encoding: CHUNKED"]),
                       ("CL + TE: gzip, chunked", ["Content-Length: 5", "Transfer-Encoding: gzip, chunked"])):
        data = h.req("POST", "/v1/orders", None, headers=hdrs, cl=False) + chunked
        framing_refused(h, data, what, 400)
    # TE alone but not exactly "chunked", or twice:
    for what, hdrs in (("TE: gzip", ["Transfer-Encoding: gzip"]),
                       ("TE twice", ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"]),
                       ("TE: chunked, chunked", ["Transfer-Encoding: chunked, chunked"])):
        data = h.req("POST", "/v1/orders", None, headers=hdrs, cl=False) + chunked
        framing_refused(h, data, what, 400)
    data = h.req("POST", "/v1/orders", None, headers=["Transfer-Encoding: chunked"], cl=False,
                 version="HTTP/1.0") + chunked
    framing_refused(h, data, "TE in an HTTP/1.0 request", 400)


@hostile_test
def test_duplicate_content_length_same_value_is_400(h):
    body = json.dumps(GOOD_ORDER).encode()
    data = h.req("POST", "/v1/orders", body, headers=["Content-Length: %d" % len(body)])
    framing_refused(h, data, "Content-Length twice with the same value", 400)
    data = h.req("POST", "/v1/orders", body, cl=False,
                 headers=["Content-Length: %d, %d" % (len(body), len(body))])
    framing_refused(h, data, "Content-Length: N, N (a list)", 400)


@hostile_test
def test_duplicate_content_length_different_values_is_400(h):
    """Two Content-Lengths that disagree: the second request hidden by the shorter one
    must never run."""
    inner = h.req("POST", "/v1/orders", GOOD_ORDER)
    body = json.dumps(GOOD_ORDER).encode()
    for a, b in ((len(body), len(body) + len(inner)), (len(body) + len(inner), len(body)), (0, len(body))):
        data = h.req("POST", "/v1/orders", None, cl=False,
                     headers=["Content-Length: %d" % a, "Content-Length: %d" % b]) + body + inner
        framing_refused(h, data, "Content-Length %d and %d" % (a, b), 400)
    for bad in ("-1", "+%d" % len(body), "0x10", " ", "1 2", "%d.0" % len(body), "99999999999999999999999"):
        data = h.req("POST", "/v1/orders", None, cl=False, headers=["Content-Length: " + bad]) + body
        framing_refused(h, data, "Content-Length: %r" % bad, 400, allow_close=True)


@hostile_test
def test_bad_chunk_size_is_400(h):
    body = json.dumps(GOOD_ORDER).encode()
    head = h.req("POST", "/v1/orders", None, headers=["Transfer-Encoding: chunked"], cl=False)
    n = len(body)
    cases = {
        "not hex": b"zz\r\n" + body + b"\r\n0\r\n\r\n",
        "0x prefix": b"0x%x\r\n" % n + body + b"\r\n0\r\n\r\n",
        "negative": b"-%x\r\n" % n + body + b"\r\n0\r\n\r\n",
        "leading space": b" %x\r\n" % n + body + b"\r\n0\r\n\r\n",
        "trailing space": b"%x \r\n" % n + body + b"\r\n0\r\n\r\n",
        "9 hex digits": b"00000000%x\r\n" % n + body + b"\r\n0\r\n\r\n",
        "empty size line": b"\r\n" + body + b"\r\n0\r\n\r\n",
        "bare LF": b"%x\n" % n + body + b"\n0\n\n",
        "size larger than data, then a request": b"%x\r\n" % (n + 5) + body + b"\r\n0\r\n\r\n" + h.req("POST", "/v1/orders", GOOD_ORDER),
        "size smaller than data": b"%x\r\n" % (n - 3) + body + b"\r\n0\r\n\r\n",
        "no CRLF after data": b"%x\r\n" % n + body + b"XX0\r\n\r\n",
        "overflow ffffffffffffffff": b"ffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n",
    }
    for what, chunks in cases.items():
        rs, closed = h.exchange(head + chunks)
        # "size larger than data": the parser reads the following bytes as chunk data and
        # then fails on the missing CRLF / bad next size line: also 400 and close.
        if not rs:
            h.ck.fail("bad chunk (%s): closed without an answer" % what)
        else:
            h.refused(rs[0], "bad chunk (%s)" % what)
            h.ck.true(rs[0].status in (400, 413), "bad chunk (%s): expected 400 (413 for a huge size): %r"
                      % (what, rs[0]))
            h.ck.true(len(rs) == 1, "bad chunk (%s): %d answers: %r" % (what, len(rs), rs))
        h.ck.true(closed, "bad chunk (%s): the connection must be closed" % what)


# ---------------------------------------------------------------- JSON text

@hostile_test
def test_invalid_utf8_in_json_string_is_400(h):
    bad = {"lone continuation": b"\x80", "0xff": b"\xff", "overlong /": b"\xc0\xaf",
           "overlong NUL": b"\xc0\x80", "UTF-8 surrogate": b"\xed\xa0\x80",
           "above U+10FFFF": b"\xf4\x90\x80\x80", "truncated 3-byte": b"\xe2\x82",
           "5-byte form": b"\xf8\x88\x80\x80\x80"}
    esc = {"lone high surrogate": b"\\ud800", "lone low surrogate": b"\\udc00",
           "high + non-surrogate": b"\\ud800\\u0041", "bad escape": b"\\x41", "short \\u": b"\\u12"}
    for name, seq in list(bad.items()) + list(esc.items()):
        for what, path, body in (
                ("order sku", "/v1/orders", b'{"user_id": 1, "items": [{"sku": "A' + seq + b'", "quantity": 1}]}'),
                ("order unknown field", "/v1/orders", b'{"user_id": 1, "items": [{"sku": "A", "quantity": 1}],'
                                                      b' "note": "' + seq + b'"}'),
                ("order key", "/v1/orders", b'{"user_id": 1, "it' + seq + b'": 1, "items": [{"sku": "A", "quantity": 1}]}'),
                ("product title", "/v1/products", b'{"sku": "NEWSKU", "title": "' + seq + b'", "price_cents": 1,'
                                                  b' "stock": 1, "category": "c"}'),
                ("pay payment_id", "/v1/orders/%s/pay" % h.oid, b'{"payment_id": "p' + seq + b'"}')):
            r = h.post(path, body)
            h.refused(r, "%s with %s" % (what, name), 400, "bad_json")


@hostile_test
def test_deep_json_nesting_is_400(h):
    """Nesting depth 8 is parsed (here: 422 for the invalid sku), 9 is 400 bad_json;
    thousands of levels are refused quickly without exhausting any stack."""
    def product(depth_inside):
        return '{"sku": "", "x": %s1%s}' % ("[" * depth_inside, "]" * depth_inside)
    h.refused(h.post("/v1/products", product(7)), "depth 8", 422, "invalid", "sku")
    h.refused(h.post("/v1/products", product(8)), "depth 9", 400, "bad_json")
    for name, body in (("9 deep in an order item", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1,'
                                                    ' "x": [[[[[[1]]]]]]}]}'),
                       ("5000 arrays", "[" * 5000 + "]" * 5000),
                       ("5000 objects, unclosed", '{"a":' * 3000),
                       ("16000 open brackets", "[" * 16000)):
        t0 = time.monotonic()
        r = h.post("/v1/orders", body)
        h.refused(r, name, 400, "bad_json")
        h.ck.true(time.monotonic() - t0 < scaled(2), "%s: took %.1fs" % (name, time.monotonic() - t0))


# Every integer field of every body: (path, body builder, field name in the message).
def _int_fields(h):
    return [
        ("/v1/orders", lambda v: '{"user_id": %s, "items": [{"sku": "A", "quantity": 1}]}' % v, "user_id"),
        ("/v1/orders", lambda v: '{"user_id": 1, "items": [{"sku": "A", "quantity": %s}]}' % v, "items[0].quantity"),
        ("/v1/products", lambda v: '{"sku": "NEWSKU", "title": "t", "price_cents": %s, "stock": 1,'
                                   ' "category": "c"}' % v, "price_cents"),
        ("/v1/products", lambda v: '{"sku": "NEWSKU", "title": "t", "price_cents": 1, "stock": %s,'
                                   ' "category": "c"}' % v, "stock"),
        ("/v1/products/A/restock", lambda v: '{"quantity": %s}' % v, "quantity"),
    ]


def _numbers_are_422(h, values, shape):
    for path, build, field in _int_fields(h):
        for v in values:
            r = h.post(path, build(v))
            h.refused(r, "%s %s = %s (%s)" % (path, field, v, shape), 422, "invalid", field)


@hostile_test
def test_number_out_of_range_is_422(h):
    _numbers_are_422(h, ["9223372036854775808", "18446744073709551616", "18446744073709551617",
                         "100000000000000000000000000000"], "out of range")
    for path, v, field in (("/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1001}]}', "quantity"),
                           ("/v1/products", dict(GOOD_PRODUCT, price_cents=10 ** 12 + 1), "price_cents"),
                           ("/v1/products", dict(GOOD_PRODUCT, stock=10 ** 12 + 1), "stock"),
                           ("/v1/products/A/restock", {"quantity": 10 ** 12 + 1}, "quantity")):
        h.refused(h.post(path, v), "%s %s just over its limit" % (path, field), 422, "invalid", field)


@hostile_test
def test_number_negative_is_422(h):
    _numbers_are_422(h, ["-1", "-0", "-9223372036854775808", "-18446744073709551615"], "negative")


@hostile_test
def test_number_fraction_is_422(h):
    _numbers_are_422(h, ["1.5", "1.0", "0.999", "2.00000000000000000001"], "fraction")


@hostile_test
def test_number_exponent_is_422(h):
    _numbers_are_422(h, ["1e3", "1E0", "10e-1", "1e+2", "5e18", "1e400"], "exponent")


@hostile_test
def test_number_leading_zero_is_422(h):
    _numbers_are_422(h, ["01", "007", "00"], "leading zero")


@hostile_test
def test_number_non_integer_type_is_422(h):
    _numbers_are_422(h, ["true", "false", "null", "[]", "{}", "[1]", '{"n": 1}'], "not a number")


@hostile_test
def test_number_as_string_is_422(h):
    _numbers_are_422(h, ['"1"', '""', '"1e3"', '"0x10"', '" 1"'], "a string")


@hostile_test
def test_number_not_valid_json_is_400(h):
    """Number shapes JSON itself forbids are malformed documents: 400 bad_json."""
    for path, build, field in _int_fields(h):
        for v in ("+1", ".5", "1.", "0x10", "NaN", "Infinity", "-", "1e", "--1", "1_000"):
            r = h.post(path, build(v))
            h.refused(r, "%s %s = %s" % (path, field, v), 400, "bad_json")


@hostile_test
def test_duplicate_json_keys_is_400(h):
    for what, path, body in (
            ("user_id twice, same value", "/v1/orders", '{"user_id": 1, "user_id": 1, "items": [{"sku": "A", "quantity": 1}]}'),
            ("user_id twice, different", "/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1}], "user_id": 2}'),
            ("items twice", "/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1}], "items": []}'),
            ("item sku twice", "/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "sku": "B", "quantity": 1}]}'),
            ("item quantity twice", "/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1, "quantity": 9}]}'),
            ("key twice after unescaping", "/v1/orders", '{"user_id": 1, "user\\u005fid": 2, "items": [{"sku": "A", "quantity": 1}]}'),
            ("unknown key twice", "/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1}], "x": 1, "x": 1}'),
            ("product sku twice", "/v1/products", '{"sku": "NEWSKU", "title": "t", "price_cents": 1, "stock": 1,'
                                                  ' "category": "c", "sku": "OTHER"}'),
            ("restock quantity twice", "/v1/products/A/restock", '{"quantity": 1, "quantity": 2}'),
            ("payment_id twice", "/v1/orders/%s/pay" % h.oid, '{"payment_id": "a", "payment_id": "b"}'),
            ("cancel body with a key twice", "/v1/orders/%s/cancel" % h.oid, '{"a": 1, "a": 2}')):
        h.refused(h.post(path, body), what, 400, "bad_json")


@hostile_test
def test_wrong_types_for_every_field_is_422(h):
    """Every field of the order, product, restock and pay bodies, given every JSON type
    but its own: 422 invalid naming the field (nothing written)."""
    values = {"string": '"x"', "integer": "1", "float": "1.5", "true": "true", "null": "null",
              "array": "[]", "object": "{}"}
    fields = [  # (path, template with {} for the value, field name, its own types)
        ("/v1/orders", '{"user_id": %s, "items": [{"sku": "A", "quantity": 1}]}', "user_id", ("integer",)),
        ("/v1/orders", '{"user_id": 1, "items": %s}', "items", ("array",)),
        ("/v1/orders", '{"user_id": 1, "items": [%s]}', "items[0]", ("object",)),
        ("/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": 1}, %s]}', "items[1]", ("object",)),
        ("/v1/orders", '{"user_id": 1, "items": [{"sku": %s, "quantity": 1}]}', "items[0].sku", ("string",)),
        ("/v1/orders", '{"user_id": 1, "items": [{"sku": "A", "quantity": %s}]}', "items[0].quantity", ("integer",)),
        ("/v1/products", '{"sku": %s, "title": "t", "price_cents": 1, "stock": 1, "category": "c"}', "sku", ("string",)),
        ("/v1/products", '{"sku": "NEWSKU", "title": %s, "price_cents": 1, "stock": 1, "category": "c"}', "title", ("string",)),
        ("/v1/products", '{"sku": "NEWSKU", "title": "t", "price_cents": %s, "stock": 1, "category": "c"}', "price_cents", ("integer",)),
        ("/v1/products", '{"sku": "NEWSKU", "title": "t", "price_cents": 1, "stock": %s, "category": "c"}', "stock", ("integer",)),
        ("/v1/products", '{"sku": "NEWSKU", "title": "t", "price_cents": 1, "stock": 1, "category": %s}', "category", ("string",)),
        ("/v1/products/A/restock", '{"quantity": %s}', "quantity", ("integer",)),
        ("/v1/orders/%s/pay" % h.oid, '{"payment_id": %s}', "payment_id", ("string",)),
    ]
    n = 0
    for path, tmpl, field, own in fields:
        for tname, v in values.items():
            if tname in own:
                continue
            r = h.post(path, tmpl % v)
            n += 1
            h.refused(r, "%s: %s as %s" % (path, field, tname), 422, "invalid", field)
    print("%d wrong-type bodies refused" % n)


@hostile_test
def test_truncated_json_is_400(h):
    """Every proper prefix of a valid order / product / pay / restock body, sent with its
    own exact Content-Length: 400 bad_json. A body cut short by the client closing its
    side: the connection is closed at once, nothing runs."""
    c = h.p.client()
    n = 0
    for path, body in (("/v1/orders", json.dumps(dict(GOOD_ORDER, items=[{"sku": "A", "quantity": 1},
                                                                           {"sku": "B", "quantity": 2}]))),
                       ("/v1/products", json.dumps(GOOD_PRODUCT)),
                       ("/v1/orders/%s/pay" % h.oid, json.dumps({"payment_id": "pay-x"})),
                       ("/v1/products/A/restock", json.dumps({"quantity": 3}))):
        for i in range(len(body)):
            prefix = body[:i]
            hd = {"Idempotency-Key": new_key("t")} if path == "/v1/orders" else None
            try:
                r = c.post(path, prefix, headers=hd)
            except ConnectionError as e:
                h.ck.fail("%s truncated to %d bytes: no answer: %s" % (path, i, e))
                continue
            n += 1
            h.refused(r, "%s truncated to %r" % (path, prefix[-30:]), 400, "bad_json")
    c.close()
    print("%d truncated bodies refused" % n)
    # Body shorter than its Content-Length, then the client half-closes.
    body = json.dumps(GOOD_ORDER).encode()
    s = socket.create_connection(("127.0.0.1", h.port), timeout=scaled(15))
    try:
        s.sendall(h.req("POST", "/v1/orders", body)[:-10])
        s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        try:
            d = s.recv(4096)
        except OSError:
            d = b""
        h.ck.true(d == b"" or d.startswith(b"HTTP/1.1 4"), "a body cut short by EOF: expected a close or 4xx: %r" % d[:80])
        h.ck.true(time.monotonic() - t0 < scaled(11), "a body cut short by EOF held the connection %.1fs"
                  % (time.monotonic() - t0))
    finally:
        s.close()


@hostile_test
def test_non_object_top_level_is_400(h):
    """Only an object is a body. Also for cancel, whose body may be empty: a non-object
    body must not cancel the order."""
    docs = ['[]', '[{"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}]', '"x"', '1', '-1', 'null', 'true',
            '{}{}', '{} {}', '{}x', '{},', '  ', '{"user_id": 1, "items": []} []']
    for path in ("/v1/orders", "/v1/products", "/v1/products/A/restock", "/v1/orders/%s/pay" % h.oid,
                 "/v1/orders/%s/cancel" % h.oid):
        for d in docs:
            if d.strip() == "" and path.endswith("/cancel"):
                continue  # an empty cancel body is allowed (and would cancel)
            h.refused(h.post(path, d), "%s with body %r" % (path, d[:40]), 400, "bad_json")


@hostile_test
def test_nul_bytes_are_refused(h):
    order = json.dumps(GOOD_ORDER).encode()
    # In the body.
    for what, path, body, status in (
            ("raw NUL in a string", "/v1/orders", order.replace(b'"A"', b'"A\x00"'), 400),
            ("raw NUL between tokens", "/v1/orders", order.replace(b", ", b",\x00 "), 400),
            ("NUL after the object", "/v1/orders", order + b"\x00", 400),
            ("escaped NUL in the sku", "/v1/orders", order.replace(b'"A"', b'"A\\u0000"'), 422),
            ("escaped NUL in a product title", "/v1/products",
             json.dumps(dict(GOOD_PRODUCT, title="a\u0000b")).encode(), 422),
            ("escaped NUL in payment_id", "/v1/orders/%s/pay" % h.oid, b'{"payment_id": "p\\u0000"}', 422)):
        h.refused(h.post(path, body), what, status)
    # In the request line and headers (raw bytes): 400 and close.
    for what, data in (
            ("NUL in the path", h.req("POST", "/v1/orders\x00x", order)),
            ("NUL in the Idempotency-Key", h.req("POST", "/v1/orders", order, key=False,
                                                   headers=["Idempotency-Key: k\x00y"])),
            ("NUL in a header name", h.req("POST", "/v1/orders", order, headers=["X-A\x00B: 1"])),
            ("NUL in the Authorization", h.req("POST", "/v1/orders", order, auth=False,
                                               headers=["Authorization: Bearer " + h.token + "\x00"])),
            ("NUL before the request", b"\x00" + h.req("POST", "/v1/orders", order))):
        rs, closed = h.exchange(data)
        h.refused(rs[0] if rs else None, what, 400)
        h.ck.true(closed, "%s: the connection must be closed" % what)


@hostile_test
def test_request_line_garbage_is_refused(h):
    body = json.dumps(GOOD_ORDER).encode()
    auth = "Authorization: Bearer %s\r\nIdempotency-Key: %s\r\nContent-Length: %d\r\n\r\n" % (
        h.token, new_key("g"), len(body))
    lines = [b"post /v1/orders HTTP/1.1", b"POST  /v1/orders HTTP/1.1", b"POST /v1/orders  HTTP/1.1",
             b"POST /v1/orders", b"POST /v1/orders HTTP/1.1 extra", b"POST\t/v1/orders\tHTTP/1.1",
             b"POST /v1/orders HTTP/2.0", b"POST /v1/orders HTTP/1.2", b"POST /v1/orders HTTP/1", b"POST /v1/orders http/1.1",
             b"POST /v1/orders HTTP/1.1\r", b" POST /v1/orders HTTP/1.1", b"POST\xff /v1/orders HTTP/1.1",
             b"P\xc3\x96ST /v1/orders HTTP/1.1", b"POST /v1/\xc3\xb6rders HTTP/1.1", b"POST /v1/orders\x7f HTTP/1.1",
             b"POSTPOSTPOSTPOSTPOSTPOST /v1/orders HTTP/1.1", b"FOO /v1/orders HTTP/1.1", b"POST * HTTP/1.1",
             b"CONNECT 127.0.0.1:80 HTTP/1.1", b"PRI * HTTP/2.0", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
             b"GET /v1/orders HTTP/1.1\nHost: t", b"HTTP/1.1 200 OK",
             b"POST /v1/orders/../orders HTTP/1.1", b"POST /v1/./orders HTTP/1.1", b"POST //v1/orders HTTP/1.1"]
    seen = []
    for ln in lines:
        data = ln + b"\r\nHost: t\r\n" + auth.encode() + body
        rs, closed = h.exchange(data, wait_s=2, max_responses=1)
        what = "request line %r" % ln[:60]
        seen.append((ln[:40], rs[0].status if rs else "close"))
        if not rs:
            continue  # a close without an answer is acceptable for garbage
        r = rs[0]
        h.ck.true(400 <= r.status < 500 or r.status in (501, 505),
                  "%s: expected a 4xx (or 501/505): %r" % (what, r))
    print("request-line garbage answered: %r" % seen)


@hostile_test
def test_very_long_url_is_414(h):
    """The request target: 2048 bytes are accepted (routed), 2049 are 414, even on a
    write; a target longer than the whole header limit is 414 or 431, never a hang."""
    def target(n, base="/v1/products/A?q="):
        return base + "x" * (n - len(base))
    rs, _ = h.exchange(h.req("GET", target(2048), None), max_responses=1)
    h.ck.true(rs and rs[0].status == 200, "a 2048-byte target is accepted: %r" % rs)
    rs, _ = h.exchange(h.req("GET", target(2049), None), max_responses=1)
    h.refused(rs[0] if rs else None, "GET with a 2049-byte target", 414, "uri_too_long")
    rs, _ = h.exchange(h.req("POST", target(3000, "/v1/orders?pad="), GOOD_ORDER), max_responses=1)
    h.refused(rs[0] if rs else None, "POST /v1/orders with a 3000-byte target", 414)
    rs, _ = h.exchange(h.req("POST", "/v1/orders/" + "9" * 5000 + "/pay", {"payment_id": "p"}), max_responses=1)
    h.refused(rs[0] if rs else None, "pay with a 5000-digit order id", 414)
    t0 = time.monotonic()
    rs, _ = h.exchange(h.req("GET", target(100000), None), max_responses=1)
    h.ck.true(rs and rs[0].status in (414, 431), "a 100 KB target: expected 414 or 431: %r" % rs)
    h.ck.true(time.monotonic() - t0 < scaled(4), "a 100 KB target took %.1fs" % (time.monotonic() - t0))
