"""
harness.py — start and drive a real d11 platform on loopback for the integration tests.

What it offers (Python 3 standard library only):
  Platform   one `bin/d11 up` on its own temp data dir and its own free 127.0.0.1 port:
             start (waits for GET /readyz 200 with a bounded deadline), stop (SIGTERM, checks
             exit 0 and that every child is gone), kill9_all / kill9 (by the PIDs in
             DIR/pids/*.pid), token_create, audit, read-only SQLite queries.
  Client     a keep-alive HTTP/1.1 client (http.client) with a default bearer token;
             every response remembers the request that produced it, so a failed check
             prints "POST /v1/orders {...} -> 409 {...}".
  raw_http   send exact bytes on a fresh socket (413 / 431 / malformed requests).
  Checks     soft assertions: collect every failed expectation of a test, raise at the end.
  poll       wait for a condition with a deadline (never sleep-and-hope).

Isolation and cleanup: the runner (run.py) gives each test its own directory in
$D11_TEST_TMP; data dirs are created there with SHORT paths (Unix socket paths live in the
data dir and are limited to 108 bytes). Every process the harness starts carries
D11_TEST_TMP in its environment and its data dir on its command line; the runner uses
that to find and SIGKILL, by PID, anything a test left behind. The harness never kills a
process it cannot prove is its own (see Platform._ours).

Timeouts scale with $D11_TEST_TIMEOUT_SCALE (run.py sets 3 for sanitizer builds).
"""

import errno
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
D11_BIN = os.environ.get("D11_BIN") or os.path.join(REPO, "bin", "d11")
SCALE = float(os.environ.get("D11_TEST_TIMEOUT_SCALE", "1") or "1")

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ORDER_KEYS = ("order_id", "user_id", "status", "items", "total_cents", "created_at", "expires_at")
PRODUCT_KEYS = ("sku", "title", "price_cents", "category", "stock_total", "stock_sold",
                "stock_available")
MAX_U63 = 2 ** 63 - 1


class Skip(Exception):
    """Raise to mark a test skipped (exit status 77 of the child)."""


# ---------------------------------------------------------------- test attributes

def timeout(seconds):
    """Decorator: this test's time limit in seconds (default 60), before scaling."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


def heavy(fn):
    """Decorator: run this test alone (load tests: they need both cores)."""
    fn.heavy = True
    return fn


# ---------------------------------------------------------------- small helpers

def log(*args):
    print("[%6.2f]" % (time.monotonic() - _T0), *args, file=sys.stderr, flush=True)


_T0 = time.monotonic()


def scaled(seconds):
    return seconds * SCALE


def poll(fn, timeout_s, what, interval=0.05):
    """Call fn() until it returns a truthy value; return that value. Raise AssertionError
    naming `what` and the last value seen when timeout_s (scaled) passes."""
    end = time.monotonic() + scaled(timeout_s)
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= end:
            raise AssertionError("timed out after %.1fs waiting for %s; last value: %r"
                                 % (scaled(timeout_s), what, last))
        time.sleep(interval)


def new_key(prefix="k"):
    return "%s-%s" % (prefix, uuid.uuid4().hex)


def order_burst(port, token, sku, clients, per_client, user_base, key_prefix="burst"):
    """`clients` threads, each with its own connection, start together (a barrier) and send
    `per_client` orders of one unit of `sku` back to back (user ids from user_base up, one
    per order); returns the list of (status, headers, body json, elapsed s)."""
    out, lock = [], threading.Lock()
    start = threading.Barrier(clients)

    def one(i):
        c = Client(port, token=token, timeout_s=20)
        try:
            start.wait()
            for k in range(per_client):
                r = c.order(user_base + i * per_client + k, [{"sku": sku, "quantity": 1}],
                            key=new_key(key_prefix))
                with lock:
                    out.append((r.status, r.headers, r.json, r.elapsed))
        finally:
            c.close()

    th = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    return out


def test_tmp():
    """The directory of the running test (made by run.py), or a private temp dir."""
    global _TMP
    if _TMP is None:
        t = os.environ.get("D11_TEST_TMP")
        if not t:
            import tempfile
            t = tempfile.mkdtemp(prefix="d11t.", dir="/tmp")
            os.environ["D11_TEST_TMP"] = t
        os.makedirs(t, exist_ok=True)
        _TMP = t
    return _TMP


_TMP = None
_DATA_SEQ = [0]


def new_data_dir():
    base = test_tmp()
    while True:
        d = os.path.join(base, "d%d" % _DATA_SEQ[0])
        _DATA_SEQ[0] += 1
        if not os.path.exists(d):
            os.makedirs(d)
            return d


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def pid_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return False
    # state is the field after the parenthesised command name
    return st[st.rfind(")") + 2:st.rfind(")") + 3] not in ("Z", "X")


def proc_has_marker(pid, markers):
    """True when /proc/pid/cmdline or environ contains one of the marker strings."""
    for what in ("cmdline", "environ"):
        try:
            with open("/proc/%d/%s" % (pid, what), "rb") as f:
                blob = f.read()
        except OSError:
            continue
        for m in markers:
            if m.encode() in blob:
                return True
    return False


def run_cli(args, timeout_s=30, env=None):
    """Run `d11 ARGS...` to completion; returns CompletedProcess (text)."""
    e = dict(os.environ)
    e["D11_TEST_TMP"] = test_tmp()
    if env:
        e.update(env)
    return subprocess.run([D11_BIN] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=scaled(timeout_s), env=e)


# ---------------------------------------------------------------- HTTP

class Resp:
    def __init__(self, req, status, reason, headers, body, elapsed):
        self.req = req
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (repeats joined with ", ")
        self.body = body
        self.elapsed = elapsed
        self._json = Ellipsis

    @property
    def json(self):
        if self._json is Ellipsis:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                self._json = None
        return self._json

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    @property
    def error_code(self):
        j = self.json
        if isinstance(j, dict) and isinstance(j.get("error"), dict):
            return j["error"].get("code")
        return None

    def __repr__(self):
        body = self.text
        if len(body) > 600:
            body = body[:600] + "...(%d bytes)" % len(self.body)
        return "%s -> %s %s" % (self.req, self.status, body)


class Client:
    """One keep-alive connection (not thread-safe: one Client per thread)."""

    DEFAULT = object()

    def __init__(self, port, token=None, timeout_s=10, host="127.0.0.1"):
        self.host = host
        self.port = port
        self.token = token
        self.timeout_s = scaled(timeout_s)
        self.conn = None

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, token=DEFAULT):
        hdrs = {}
        if token is Client.DEFAULT:
            token = self.token
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if body is None:
            data = None
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode("utf-8")
        else:
            data = json.dumps(body).encode("utf-8")
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        if headers:
            for k, v in headers.items():
                if v is None:
                    hdrs.pop(k, None)
                else:
                    hdrs[k] = v
        shown = ""
        if data is not None:
            shown = data[:300].decode("utf-8", "replace")
            if len(data) > 300:
                shown += "...(%d bytes)" % len(data)
        extra = {k: v for k, v in hdrs.items() if k.lower() not in ("authorization", "content-type")}
        desc = "%s %s%s%s" % (method, path, (" " + json.dumps(extra)) if extra else "",
                              (" " + shown) if shown else "")
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            t0 = time.monotonic()
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if fresh or attempt == 1:
                    raise ConnectionError("%s: %s" % (desc, e)) from e
                continue  # a stale keep-alive connection: retry once on a new one
            except (OSError, http.client.HTTPException) as e:
                self.close()
                raise ConnectionError("%s: %s" % (desc, e)) from e
            elapsed = time.monotonic() - t0
            h = {}
            for k, v in r.getheaders():
                k = k.lower()
                h[k] = (h[k] + ", " + v) if k in h else v
            if r.will_close:
                self.close()
            return Resp(desc, r.status, r.reason, h, raw, elapsed)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    # -- API helpers (no assertions: return the Resp) --
    def create_product(self, sku, stock=100, price=1999, title=None, category="test", **kw):
        return self.post("/v1/products", {"sku": sku, "title": title or ("Product " + sku),
                                          "price_cents": price, "stock": stock,
                                          "category": category}, **kw)

    def product(self, sku, **kw):
        return self.get("/v1/products/" + sku, **kw)

    def order(self, user_id, items, key=None, headers=None, **kw):
        """items: [(sku, qty), ...] or a raw list of dicts."""
        if items and isinstance(items[0], tuple):
            items = [{"sku": s, "quantity": q} for s, q in items]
        h = {"Idempotency-Key": key or new_key()}
        if headers:
            h.update(headers)
        return self.post("/v1/orders", {"user_id": user_id, "items": items}, headers=h, **kw)

    def get_order(self, order_id, **kw):
        return self.get("/v1/orders/" + str(order_id), **kw)

    def pay(self, order_id, payment_id, **kw):
        return self.post("/v1/orders/%s/pay" % order_id, {"payment_id": payment_id}, **kw)

    def cancel(self, order_id, **kw):
        return self.post("/v1/orders/%s/cancel" % order_id, **kw)


def raw_http(port, data, timeout_s=10, read_limit=1 << 20):
    """Send `data` (bytes) on a new connection, then read one response. Sending errors
    (the server may answer and close before reading everything) are ignored. Returns
    Resp, or None when the server closed without answering."""
    s = socket.create_connection(("127.0.0.1", port), timeout=scaled(timeout_s))
    try:
        try:
            s.sendall(data)
        except OSError:
            pass
        buf = b""
        try:
            while b"\r\n\r\n" not in buf and len(buf) < read_limit:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
        if b"\r\n\r\n" not in buf:
            return None
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1])
        h = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                h[k.strip().lower()] = v.strip()
        n = int(h.get("content-length", "0") or 0)
        try:
            while len(rest) < n:
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except OSError:
            pass
        first = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")[:120]
        return Resp("raw[%s ... %d bytes]" % (first, len(data)), status,
                    parts[2] if len(parts) > 2 else "", h, rest[:n], 0.0)
    finally:
        s.close()


# ---------------------------------------------------------------- checks

class Checks:
    """Soft assertions. Use `with Checks() as ck:`; every failed expectation is recorded
    and all of them are raised together when the block ends."""

    def __init__(self):
        self.failures = []

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.done()
        return False

    def done(self):
        if self.failures:
            msg = "%d check(s) failed:\n" % len(self.failures)
            msg += "\n".join("  - " + f for f in self.failures)
            self.failures = []
            raise AssertionError(msg)

    def fail(self, msg):
        self.failures.append(msg)
        log("CHECK FAILED:", msg)
        return False

    def true(self, cond, msg):
        if not cond:
            return self.fail(msg)
        return True

    def eq(self, got, want, what):
        if got != want:
            return self.fail("%s: expected %r, got %r" % (what, want, got))
        return True

    def status(self, r, want, what=""):
        """r.status in want (an int or a tuple)."""
        ok = r.status in want if isinstance(want, tuple) else r.status == want
        if not ok:
            return self.fail("%sexpected HTTP %s: %r" % ((what + ": ") if what else "", want, r))
        if not r.headers.get("x-request-id"):
            return self.fail("%sresponse lacks X-Request-Id: %r" % ((what + ": ") if what else "", r))
        return True

    def error(self, r, status, code=None, field=None, what=""):
        """An error response: HTTP status, {"error":{"code","message","request_id"}}, the
        X-Request-Id header equal to error.request_id, the stable code and (for 422) the
        offending field named in the message."""
        pre = (what + ": ") if what else ""
        if not self.status(r, status, what):
            return False
        j = r.json
        e = j.get("error") if isinstance(j, dict) else None
        if not isinstance(e, dict):
            return self.fail("%sbody is not {\"error\": {...}}: %r" % (pre, r))
        ok = True
        for k in ("code", "message", "request_id"):
            if not isinstance(e.get(k), str) or (k != "message" and not e.get(k)):
                ok = self.fail("%serror.%s missing or not a non-empty string: %r" % (pre, k, r))
        if not ok:
            return False
        rid = r.headers.get("x-request-id")
        if rid != e["request_id"]:
            ok = self.fail("%sX-Request-Id %r != error.request_id %r: %r"
                           % (pre, rid, e["request_id"], r))
        if code is not None and e["code"] != code:
            ok = self.fail("%sexpected error code %r: %r" % (pre, code, r))
        if field is not None and field.lower() not in e["message"].lower():
            ok = self.fail("%serror message does not name the field %r: %r" % (pre, field, r))
        return ok

    def product(self, r, want, what=""):
        """A product body with the documented keys and the values in `want` (dict)."""
        pre = (what + ": ") if what else ""
        p = r.json
        if not isinstance(p, dict):
            return self.fail("%sproduct body is not an object: %r" % (pre, r))
        ok = True
        for k in PRODUCT_KEYS:
            if k not in p:
                ok = self.fail("%sproduct lacks %r: %r" % (pre, k, r))
        if not ok:
            return False
        for k in ("price_cents", "stock_total", "stock_sold", "stock_available"):
            if type(p[k]) is not int:
                ok = self.fail("%sproduct.%s is not an integer: %r" % (pre, k, r))
        for k in ("sku", "title", "category"):
            if not isinstance(p[k], str):
                ok = self.fail("%sproduct.%s is not a string: %r" % (pre, k, r))
        if ok and p["stock_available"] != p["stock_total"] - p["stock_sold"]:
            ok = self.fail("%sstock_available != stock_total - stock_sold: %r" % (pre, r))
        for k, v in want.items():
            if p.get(k) != v:
                ok = self.fail("%sproduct.%s: expected %r: %r" % (pre, k, v, r))
        return ok

    def order(self, r, user_id, items, status="pending_payment", ttl_ms=None, what=""):
        """An order body: documented keys and types; items = [(sku, qty, price_cents)]."""
        pre = (what + ": ") if what else ""
        o = r.json
        if not isinstance(o, dict):
            return self.fail("%sorder body is not an object: %r" % (pre, r))
        ok = True
        for k in ORDER_KEYS:
            if k not in o:
                ok = self.fail("%sorder lacks %r: %r" % (pre, k, r))
        if not ok:
            return False
        if not isinstance(o["order_id"], str) or not o["order_id"]:
            ok = self.fail("%sorder_id must be a non-empty string: %r" % (pre, r))
        if type(o["user_id"]) is not int or o["user_id"] != user_id:
            ok = self.fail("%suser_id: expected %r (exactly): %r" % (pre, user_id, r))
        if o["status"] != status:
            ok = self.fail("%sstatus: expected %r: %r" % (pre, status, r))
        want_items = [{"sku": s, "quantity": q, "price_cents": p} for s, q, p in items]
        got_items = o["items"]
        if not isinstance(got_items, list) or [
                {k: it.get(k) for k in ("sku", "quantity", "price_cents")} if isinstance(it, dict) else it
                for it in got_items] != want_items:
            ok = self.fail("%sitems: expected %r: %r" % (pre, want_items, r))
        total = sum(q * p for _, q, p in items)
        if type(o["total_cents"]) is not int or o["total_cents"] != total:
            ok = self.fail("%stotal_cents: expected %d: %r" % (pre, total, r))
        for k in ("created_at", "expires_at"):
            if not isinstance(o[k], str) or not ISO_MS_Z.match(o[k]):
                ok = self.fail("%s%s is not ISO-8601 with ms and Z: %r" % (pre, k, r))
        if ok and ttl_ms is not None:
            d = iso_ms(o["expires_at"]) - iso_ms(o["created_at"])
            if abs(d - ttl_ms) > 1000:
                ok = self.fail("%sexpires_at - created_at = %d ms, expected the TTL %d ms: %r"
                               % (pre, d, ttl_ms, r))
            skew = abs(iso_ms(o["created_at"]) - time.time() * 1000)
            if skew > 120000:
                ok = self.fail("%screated_at is %d ms away from now: %r" % (pre, skew, r))
        return ok


def iso_ms(s):
    import calendar
    t = time.strptime(s[:19], "%Y-%m-%dT%H:%M:%S")
    return calendar.timegm(t) * 1000 + int(s[20:23])


def expect(r, status, what=""):
    """Hard assertion on one response's status; returns r.json."""
    ok = r.status in status if isinstance(status, tuple) else r.status == status
    if not ok:
        raise AssertionError("%sexpected HTTP %s: %r" % ((what + ": ") if what else "", status, r))
    return r.json


# ---------------------------------------------------------------- the platform

_LIVE = []  # platforms of this process, killed at exit if a test forgot


class AuditResult:
    def __init__(self, cp):
        self.rc = cp.returncode
        self.stdout = cp.stdout
        self.stderr = cp.stderr
        try:
            self.report = json.loads(cp.stdout)
        except ValueError:
            self.report = None

    def __repr__(self):
        return "d11 audit exit %d\nstdout: %s\nstderr: %s" % (self.rc, self.stdout[-3000:],
                                                              self.stderr[-2000:])


class Platform:
    """One `d11 up` on a private data dir. Use as a context manager: on leaving, a still
    running platform is stopped (SIGTERM, then SIGKILL of every PID after a deadline);
    on an exception the tail of its log is printed."""

    def __init__(self, cells=2, order_ttl_ms=None, durability=None, threads=None,
                 request_timeout_ms=None, log_level=None, extra_args=(), data=None):
        self.cells = cells
        self.order_ttl_ms = order_ttl_ms
        self.durability = durability
        self.threads = threads
        self.request_timeout_ms = request_timeout_ms
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.data = data or new_data_dir()
        self.port = None
        self.proc = None
        self.log_paths = []
        self._admin = None
        _LIVE.append(self)

    # -- lifecycle --
    def __enter__(self):
        self.start()
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            sys.stderr.write("\n----- tail of the d11 log (%s) -----\n%s\n-----\n"
                             % (self.log_paths[-1] if self.log_paths else "none",
                                self.log_tail(80)))
        if self.running():
            try:
                self.stop(check=False)
            except Exception as e:  # noqa: BLE001 - teardown must not mask the test's error
                log("teardown: stop failed: %s" % e)
        self.kill_leftovers()
        return False

    def argv(self):
        a = [D11_BIN, "up", "--data", self.data, "--listen", "127.0.0.1:%d" % self.port,
             "--cells", str(self.cells)]
        if self.order_ttl_ms is not None:
            a += ["--order-ttl-ms", str(self.order_ttl_ms)]
        if self.durability:
            a += ["--durability", self.durability]
        if self.threads:
            a += ["--threads", str(self.threads)]
        if self.request_timeout_ms:
            a += ["--request-timeout-ms", str(self.request_timeout_ms)]
        if self.log_level:
            a += ["--log-level", self.log_level]
        return a + self.extra_args

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready_timeout_s=20):
        if not os.path.exists(D11_BIN):
            raise AssertionError("D11_BIN %s does not exist (run make)" % D11_BIN)
        assert not self.running(), "platform already running"
        first_port = self.port is None
        for attempt in range(3):
            if first_port:
                self.port = free_port()
            logp = os.path.join(os.path.dirname(self.data),
                                "%s.up%d.log" % (os.path.basename(self.data), len(self.log_paths)))
            self.log_paths.append(logp)
            env = dict(os.environ)
            env["D11_TEST_TMP"] = test_tmp()
            with open(logp, "wb") as lf:
                self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=lf,
                                             stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
            with open(os.path.join(test_tmp(), "started.pids"), "a") as f:
                f.write("%d %s\n" % (self.proc.pid, self.data))
            log("started d11 up pid %d on port %d, data %s" % (self.proc.pid, self.port, self.data))
            try:
                self.wait_ready(ready_timeout_s)
                return self
            except AssertionError:
                tail = self.log_tail(40)
                if (first_port and attempt < 2 and self.proc.poll() is not None
                        and "in use" in tail.lower()):
                    log("port %d in use, retrying on another" % self.port)
                    continue
                if self.running():
                    self.kill9_all()
                raise

    def wait_ready(self, timeout_s=20):
        end = time.monotonic() + scaled(timeout_s)
        last = "no answer"
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("d11 up exited with status %d before /readyz answered 200;"
                                     " log:\n%s" % (rc, self.log_tail(60)))
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                hdrs = {}
                tok = self._read_admin_token()
                if tok:
                    hdrs["Authorization"] = "Bearer " + tok
                c.request("GET", "/readyz", headers=hdrs)
                r = c.getresponse()
                body = r.read()
                c.close()
                if r.status == 200:
                    return
                last = "HTTP %d %s" % (r.status, body[:200])
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            if time.monotonic() >= end:
                raise AssertionError("d11 up not ready after %.0fs (GET /readyz: %s); log:\n%s"
                                     % (scaled(timeout_s), last, self.log_tail(60)))
            time.sleep(0.05)

    def stop(self, timeout_s=30, check=True):
        """SIGTERM the up process; wait for it. With check: exit status must be 0 and every
        child listed in DIR/pids must be gone. Returns the exit status."""
        assert self.proc is not None
        kids = {k: v for k, v in self.pids().items() if k != "up"}
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=scaled(timeout_s))
        except subprocess.TimeoutExpired:
            self.kill9_all()
            raise AssertionError("d11 up did not exit within %.0fs of SIGTERM; log:\n%s"
                                 % (scaled(timeout_s), self.log_tail(60)))
        log("d11 up exited with %d" % rc)
        if check:
            if rc != 0:
                raise AssertionError("d11 up exited with %d after SIGTERM (expected 0); log:\n%s"
                                     % (rc, self.log_tail(60)))
            alive = {}
            end = time.monotonic() + scaled(10)
            while True:
                alive = {k: p for k, p in kids.items() if pid_alive(p) and self._ours(p)}
                if not alive or time.monotonic() >= end:
                    break
                time.sleep(0.05)
            if alive:
                self.kill_leftovers()
                raise AssertionError("children still running 10s after d11 up exited: %r" % alive)
        return rc

    def restart(self, ready_timeout_s=20):
        if self.running():
            self.stop()
        return self.start(ready_timeout_s)

    def pids(self):
        """name -> pid from DATA/pids/*.pid (up, center, cell-<i>, gateway)."""
        out = {}
        d = os.path.join(self.data, "pids")
        try:
            names = os.listdir(d)
        except OSError:
            return out
        for n in names:
            if not n.endswith(".pid"):
                continue
            try:
                with open(os.path.join(d, n)) as f:
                    out[n[:-4]] = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        return out

    def _ours(self, pid):
        return proc_has_marker(pid, [self.data, "D11_TEST_TMP=" + test_tmp()])

    def _kill(self, pid, sig=signal.SIGKILL):
        if pid and pid_alive(pid) and self._ours(pid):
            try:
                os.kill(pid, sig)
                return True
            except ProcessLookupError:
                pass
        return False

    def kill9(self, name):
        """SIGKILL one child by its pid file (e.g. "cell-0"); returns its pid."""
        pid = self.pids().get(name)
        if pid is None:
            raise AssertionError("no pid file %s/pids/%s.pid; have %r" % (self.data, name, self.pids()))
        if not pid_alive(pid):
            raise AssertionError("%s pid %d from the pid file is not running" % (name, pid))
        if not self._kill(pid):
            raise AssertionError("could not kill %s pid %d" % (name, pid))
        poll(lambda: not pid_alive(pid), 10, "%s pid %d to die" % (name, pid), 0.01)
        log("kill -9 %s pid %d" % (name, pid))
        return pid

    def kill9_all(self):
        """SIGKILL up first (so nothing is restarted), then every child by its pid file."""
        ps = self.pids()
        order = ["up"] + sorted(k for k in ps if k != "up")
        if self.proc is not None:
            self._kill(self.proc.pid)
        for k in order:
            if k in ps:
                self._kill(ps[k])
        if self.proc is not None:
            try:
                self.proc.wait(timeout=scaled(10))
            except subprocess.TimeoutExpired:
                pass
        for k, p in ps.items():
            poll(lambda: not pid_alive(p), 10, "%s pid %d to die after SIGKILL" % (k, p), 0.01)
        log("kill -9 of the whole platform: %r" % ps)

    def kill_leftovers(self):
        """SIGKILL any process of ours still running for this data dir (by PID)."""
        for k, p in self.pids().items():
            self._kill(p)

    # -- logs --
    def log_text(self):
        out = []
        for p in self.log_paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def all_log_text(self):
        """Every log we can see: up's captured output plus *.log files in the data dir."""
        parts = [self.log_text()]
        for root, _, files in os.walk(self.data):
            for n in files:
                if n.endswith(".log") or n.endswith(".jsonl") or ".log." in n:
                    try:
                        with open(os.path.join(root, n), "rb") as f:
                            parts.append(f.read().decode("utf-8", "replace"))
                    except OSError:
                        pass
        return "\n".join(parts)

    def log_tail(self, n=60):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    # -- tokens and clients --
    def _read_admin_token(self):
        try:
            with open(os.path.join(self.data, "admin.token")) as f:
                return f.read().strip() or None
        except OSError:
            return None

    @property
    def admin_token(self):
        if self._admin is None:
            t = self._read_admin_token()
            if not t:
                raise AssertionError("%s/admin.token missing or empty after start" % self.data)
            self._admin = t
        return self._admin

    def client(self, token=Client.DEFAULT, timeout_s=10):
        if token is Client.DEFAULT:
            token = self.admin_token
        return Client(self.port, token, timeout_s)

    def token_create(self, scopes, label=None, wait_s=5):
        """`d11 token create --data DIR --scopes S`; returns the token. Works before the
        first start (the data dir exists from __init__). When the platform is running,
        waits (bounded) until the gateway stops answering 401 for it."""
        args = ["token", "create", "--data", self.data, "--scopes", scopes]
        if label:
            args += ["--label", label]
        cp = run_cli(args)
        tok = cp.stdout.strip()
        if cp.returncode != 0 or not tok or "\n" in tok:
            raise AssertionError("d11 %s: exit %d, stdout %r, stderr %r"
                                 % (" ".join(args), cp.returncode, cp.stdout, cp.stderr))
        if self.running():
            # Each gateway thread may pick the new token up on its own: require a run of
            # answers other than 401 on fresh connections (spread over the threads).
            run = [0]

            def accepted():
                c = self.client(tok)
                st = c.get("/v1/products/token-probe").status
                c.close()
                run[0] = run[0] + 1 if st != 401 else 0
                return run[0] >= 16
            poll(accepted, wait_s, "every gateway thread to accept a token made by"
                 " `d11 token create` (scopes %s)" % scopes, 0.02)
        return tok

    def audit(self, timeout_s=120):
        return AuditResult(run_cli(["audit", "--data", self.data], timeout_s))

    # -- SQLite --
    def db_path(self, name):
        return os.path.join(self.data, name)

    def cell_dbs(self):
        out = []
        for n in sorted(os.listdir(self.data)):
            m = re.match(r"^cell-(\d+)\.db$", n)
            if m:
                out.append((int(m.group(1)), os.path.join(self.data, n)))
        return sorted(out)

    def query(self, name, sql, args=()):
        """Rows of `sql` on DATA/name. While the platform runs: a read-only connection
        (WAL readers do not block the writer). Stopped or crashed: a private copy of the
        db + WAL, so that reading never checkpoints or recovers the platform's own files."""
        path = self.db_path(name)
        if not os.path.exists(path):
            raise AssertionError("%s does not exist; data dir has %r" % (path, sorted(os.listdir(self.data))))
        if self.running():
            con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=10)
        else:
            snap = os.path.join(test_tmp(), "snap")
            if os.path.isdir(snap):
                shutil.rmtree(snap)
            os.makedirs(snap)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    shutil.copy(path + suffix, os.path.join(snap, name + suffix))
            con = sqlite3.connect(os.path.join(snap, name), timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def columns(self, name, table):
        return [r[1] for r in self.query(name, "PRAGMA table_info(%s)" % table)]


def _kill_live_at_exit():
    for p in _LIVE:
        try:
            if p.running():
                p.kill9_all()
            p.kill_leftovers()
        except Exception:  # noqa: BLE001
            pass


import atexit  # noqa: E402
atexit.register(_kill_live_at_exit)


# ---------------------------------------------------------------- routing knowledge

def slot_of(user_id):
    return user_id % 1024


def default_cell_of(user_id, ncells):
    """The default routing table: slots split into ncells contiguous ranges
    (d11_routing_default). Tests that depend on it confirm it from the cell databases."""
    return slot_of(user_id) * ncells // 1024


def users_for_cell(cell, ncells, n, base=1):
    """n distinct user ids whose slot falls in `cell`'s default range."""
    lo = -(-cell * 1024 // ncells)
    hi = -(-(cell + 1) * 1024 // ncells)
    out = []
    k = base
    while len(out) < n:
        for s in range(lo, hi, max(1, (hi - lo) // n)):
            uid = k * 1024 + s
            if uid >= 1 and default_cell_of(uid, ncells) == cell:
                out.append(uid)
                if len(out) == n:
                    break
        k += 1
    return out


def find_order_cell(p, user_id, key):
    """Which cell-<i>.db holds the order (user_id, idem_key)? None if none does."""
    for i, path in p.cell_dbs():
        rows = p.query(os.path.basename(path),
                       "SELECT count(*) FROM orders WHERE user_id = ? AND idem_key = ?",
                       (user_id, key))
        if rows and rows[0][0]:
            return i
    return None


# ---------------------------------------------------------------- load generation

class Ledger:
    """What clients were told, shared by load threads (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.orders = {}      # order_id -> dict(user, key, status, pending_op, items)
        self.by_key = {}      # (user, key) -> order_id
        self.unanswered = []  # (user, key, items) creates that got no answer / 5xx
        self.errors = []      # unexpected answers (strings)
        self.counts = {}      # "201", "409 out_of_stock", "conn", ...

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def acked(self):
        with self.lock:
            return len(self.orders)

    def record_create(self, user, key, r, items):
        with self.lock:
            oid = r.json["order_id"]
            prev = self.by_key.get((user, key))
            if prev is not None and prev != oid:
                self.errors.append("same key %r (user %d) answered two order ids: %s and %s"
                                   % (key, user, prev, oid))
            self.by_key[(user, key)] = oid
            if oid not in self.orders:
                self.orders[oid] = {"user": user, "key": key, "status": "pending_payment",
                                    "pending_op": None, "items": items}

    def set_pending(self, oid, op):
        with self.lock:
            self.orders[oid]["pending_op"] = op

    def record_status(self, oid, status):
        with self.lock:
            self.orders[oid]["status"] = status
            self.orders[oid]["pending_op"] = None


class OrderLoad:
    """N threads placing orders (and paying / cancelling some) until stop() or until
    every thread saw `oos_stop` out_of_stock answers in a row. Every request is bounded
    (client timeout) and the whole load by max_requests per thread and a deadline."""

    def __init__(self, port, token, users, items, nthreads=8, pay_every=0, cancel_every=0,
                 oos_stop=None, max_requests=2000, deadline_s=60, ledger=None, retries=5,
                 headers=None):
        self.port = port
        self.token = token
        self.users = users
        self.items = items
        self.nthreads = nthreads
        self.pay_every = pay_every
        self.cancel_every = cancel_every
        self.oos_stop = oos_stop
        self.max_requests = max_requests
        self.deadline = time.monotonic() + scaled(deadline_s)
        self.ledger = ledger or Ledger()
        self.retries = retries
        self.headers = headers
        self.stop_ev = threading.Event()
        self.threads = []

    def start(self):
        for t in range(self.nthreads):
            users = self.users[t::self.nthreads]
            th = threading.Thread(target=self._run, args=(t, users), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def stop(self, join_s=30):
        self.stop_ev.set()
        return self.join(join_s)

    def join(self, join_s=60):
        end = time.monotonic() + scaled(join_s)
        for th in self.threads:
            th.join(max(0.1, end - time.monotonic()))
        stuck = [th for th in self.threads if th.is_alive()]
        if stuck:
            raise AssertionError("%d load threads still running after %.0fs"
                                 % (len(stuck), scaled(join_s)))
        return self.ledger

    def _over(self):
        return self.stop_ev.is_set() or time.monotonic() >= self.deadline

    def _run(self, t, users):
        L = self.ledger
        c = Client(self.port, self.token, timeout_s=10)
        n = 0
        oos_row = 0
        try:
            while not self._over() and n < self.max_requests:
                user = users[n % len(users)]
                key = new_key("t%d" % t)
                items = self.items
                r = None
                for attempt in range(self.retries + 1):
                    if self._over() and attempt > 0:
                        break
                    n += 1
                    try:
                        r = c.order(user, items, key, headers=self.headers)
                    except ConnectionError:
                        L.count("conn")
                        r = None
                        if self._over():
                            break
                        time.sleep(0.05)
                        continue
                    if r.status == 429:
                        L.count("429")
                        ra = r.headers.get("retry-after", "1")
                        time.sleep(min(2.0, float(ra) if ra.replace(".", "").isdigit() else 1.0))
                        continue
                    if r.status >= 500:
                        L.count("%d %s" % (r.status, r.error_code))
                        time.sleep(0.05)
                        continue
                    break
                if r is None or r.status >= 500 or r.status == 429:
                    with L.lock:
                        L.unanswered.append((user, key, items))
                    continue
                if r.status in (200, 201):
                    L.count(str(r.status))
                    if not isinstance(r.json, dict) or not isinstance(r.json.get("order_id"), str):
                        with L.lock:
                            L.errors.append("2xx without an order: %r" % r)
                        continue
                    L.record_create(user, key, r, items)
                    oos_row = 0
                    oid = r.json["order_id"]
                    k = len(L.orders)
                    if self.pay_every and k % self.pay_every == 0:
                        self._transition(c, oid, "pay")
                    elif self.cancel_every and k % self.cancel_every == 1:
                        self._transition(c, oid, "cancel")
                    continue
                code = r.error_code
                L.count("%d %s" % (r.status, code))
                if r.status == 409 and code == "out_of_stock":
                    oos_row += 1
                    if self.oos_stop and oos_row >= self.oos_stop:
                        return
                    continue
                with L.lock:
                    L.errors.append("unexpected answer: %r" % r)
        finally:
            c.close()

    def _transition(self, c, oid, op):
        L = self.ledger
        L.set_pending(oid, op)
        try:
            if op == "pay":
                r = c.pay(oid, "pay-" + oid)
            else:
                r = c.cancel(oid)
        except ConnectionError:
            L.count(op + " conn")
            return
        if r.status == 200:
            want = "paid" if op == "pay" else "cancelled"
            got = r.json.get("status") if isinstance(r.json, dict) else None
            if got != want:
                with L.lock:
                    L.errors.append("%s answered 200 with status %r: %r" % (op, got, r))
            L.record_status(oid, want)
        elif r.status >= 500:
            L.count("%s %d" % (op, r.status))
        else:
            with L.lock:
                L.errors.append("unexpected %s answer: %r" % (op, r))


def spread_users(n, base=1):
    """n user ids with slots spread evenly over 0..1023 (so over every cell)."""
    return [base * 1024 + (i * 1024) // n + (i * 1024 * 7) for i in range(n)]


def until_served(fn, timeout_s=15):
    """fn() again while it answers 503/504 (a cell restarting, its circuit breaker open
    after a fault): "not available yet" is not "lost". Bounded; returns the last answer."""
    deadline = time.monotonic() + scaled(timeout_s)
    while True:
        r = fn()
        if r.status not in (503, 504) or time.monotonic() >= deadline:
            return r
        time.sleep(0.05)  # polling a condition with a deadline


def verify_acked_orders(p, ledger, ck, c=None):
    """Every acknowledged order is readable with its last acknowledged status (or the
    status of a transition whose answer was lost)."""
    c = c or p.client()
    missing = 0
    for oid, o in sorted(ledger.orders.items()):
        r = until_served(lambda: c.get_order(oid))
        if r.status != 200:
            missing += 1
            ck.fail("acknowledged order lost: %r (acked status %s)" % (r, o["status"]))
            if missing > 20:
                ck.fail("... stopping after 20 lost orders")
                break
            continue
        got = r.json.get("status")
        allowed = {o["status"]}
        if o["pending_op"] == "pay":
            allowed.add("paid")
        if o["pending_op"] == "cancel":
            allowed.add("cancelled")
        if got not in allowed:
            ck.fail("order %s: status %r, last acknowledged %r (in-flight op %r)"
                    % (oid, got, o["status"], o["pending_op"]))
        if r.json.get("user_id") != o["user"]:
            ck.fail("order %s: user_id %r, expected %r" % (oid, r.json.get("user_id"), o["user"]))
    c.close()


def verify_idempotent_replay(p, ledger, ck):
    """The same key again returns the same order id (never a second order)."""
    c = p.client()
    for (user, key), oid in sorted(ledger.by_key.items()):
        items = ledger.orders[oid]["items"]
        r = until_served(lambda: c.order(user, items, key))
        if r.status not in (200, 201) or r.json.get("order_id") != oid:
            ck.fail("replay of key %r (user %d) should return order %s: %r" % (key, user, oid, r))
    c.close()


def db_no_duplicate_keys(p, ck):
    """Invariant 3 on the stored data: one (user_id, idem_key) -> at most one order,
    across every cell database (real and shadow tables)."""
    seen = {}
    for i, path in p.cell_dbs():
        n = os.path.basename(path)
        for table in ("orders", "shadow_orders"):
            try:
                rows = p.query(n, "SELECT user_id, idem_key, count(*) FROM %s GROUP BY user_id, idem_key" % table)
            except sqlite3.Error as e:
                ck.fail("%s: cannot read %s: %s" % (n, table, e))
                continue
            for u, k, cnt in rows:
                if cnt > 1:
                    ck.fail("%s.%s: %d orders for user %s key %r" % (n, table, cnt, u, k))
                if table == "orders":
                    if (u, k) in seen:
                        ck.fail("user %s key %r stored in %s and %s" % (u, k, seen[(u, k)], n))
                    seen[(u, k)] = n
    return seen


def db_holding(p, sku, table="orders"):
    """Units of sku held by stored orders in pending_payment or paid, over every cell."""
    total = 0
    items = "shadow_order_items" if table == "shadow_orders" else "order_items"
    for i, path in p.cell_dbs():
        rows = p.query(os.path.basename(path),
                       "SELECT coalesce(sum(it.quantity), 0) FROM %s it JOIN %s o ON o.order_id = it.order_id"
                       " WHERE it.sku = ? AND o.status IN ('pending_payment', 'paid')" % (items, table),
                       (sku,))
        total += rows[0][0]
    return total


def db_stock_total(p, sku):
    rows = p.query("center.db", "SELECT stock_total FROM products WHERE sku = ?", (sku,))
    return rows[0][0] if rows else None


def check_audit(p, ck, what="d11 audit"):
    a = p.audit()
    if a.rc != 0:
        ck.fail("%s: expected exit 0 (every invariant holds): %r" % (what, a))
    elif a.report is None:
        ck.fail("%s: stdout is not a JSON report: %r" % (what, a))
    return a


def wait_product(c, sku, pred, what, timeout_s=10):
    """Poll GET /v1/products/{sku} until pred(product) holds; returns the product."""
    last = [None]

    def f():
        r = c.product(sku)
        last[0] = r
        return r.json if r.status == 200 and isinstance(r.json, dict) and pred(r.json) else None
    try:
        return poll(f, timeout_s, what)
    except AssertionError as e:
        raise AssertionError("%s; last response: %r" % (e, last[0]))


# ================================================================ reliability helpers
# (appended for test_crashloop.py, test_faults.py, test_hostile.py; see docs/reliability.md)

import collections  # noqa: E402
import random  # noqa: E402


def seeded(env="D11_TEST_SEED", what="seed"):
    """(seed, random.Random(seed)): the seed from $env when set (replay), else a random one.
    The seed is printed so that a failing run can be replayed with env=SEED."""
    s = os.environ.get(env)
    seed = int(s) if s else random.randrange(1 << 30)
    print("%s=%d   (%s; replay with %s=%d)" % (env, seed, what, env, seed), flush=True)
    return seed, random.Random(seed)


class DbView:
    """Every SQLite file of a data dir opened at once, for invariant checks.
    Running platform: read-only connections (WAL readers never block the writer; the files
    are not one snapshot, so use cross-file sums only when traffic is quiet). Stopped or
    crashed platform: ONE private copy of every db + WAL taken together, so reading never
    recovers or checkpoints the platform's own files.
        with DbView(p) as v: v.center.execute(...); v.cells -> {i: connection}"""

    def __init__(self, p):
        self.p = p
        self.center = None
        self.cells = {}
        self._snap = None

    def __enter__(self):
        names = ["center.db"] + [os.path.basename(path) for _, path in self.p.cell_dbs()]
        if self.p.running():
            def con(n):
                return sqlite3.connect("file:%s?mode=ro" % self.p.db_path(n), uri=True, timeout=10)
        else:
            self._snap = os.path.join(test_tmp(), "dbview")
            if os.path.isdir(self._snap):
                shutil.rmtree(self._snap)
            os.makedirs(self._snap)
            for n in names:
                for suffix in ("", "-wal", "-shm"):
                    src = self.p.db_path(n) + suffix
                    if os.path.exists(src):
                        shutil.copy(src, os.path.join(self._snap, n + suffix))

            def con(n):
                return sqlite3.connect(os.path.join(self._snap, n), timeout=10)
        self.center = con("center.db")
        for i, path in self.p.cell_dbs():
            self.cells[i] = con(os.path.basename(path))
        return self

    def __exit__(self, *a):
        for c in [self.center] + list(self.cells.values()):
            if c is not None:
                c.close()
        if self._snap:
            shutil.rmtree(self._snap, ignore_errors=True)
        return False

    def orders(self, table="orders"):
        """order_id (str) -> dict(cell, user, key, status, created, expires, updated,
        payment_id, total, items=((sku, qty), ...) in item order)."""
        items_t = "shadow_order_items" if table == "shadow_orders" else "order_items"
        out = {}
        for i, con in sorted(self.cells.items()):
            for row in con.execute("SELECT order_id, user_id, idem_key, status, created_at, expires_at,"
                                   " updated_at, payment_id, total_cents FROM %s" % table):
                oid = str(row[0])
                out[oid] = {"cell": i, "user": row[1], "key": row[2], "status": row[3],
                            "created": row[4], "expires": row[5], "updated": row[6],
                            "payment_id": row[7], "total": row[8], "items": []}
            for oid, sku, qty in con.execute("SELECT order_id, sku, quantity FROM %s ORDER BY order_id, idx"
                                             % items_t):
                o = out.get(str(oid))
                if o is not None and o["cell"] == i:
                    o["items"].append((sku, qty))
        for o in out.values():
            o["items"] = tuple(o["items"])
        return out

    def stock_totals(self):
        return dict(self.center.execute("SELECT sku, stock_total FROM products"))

    def held(self, orders=None):
        """sku -> units held by pending_payment + paid orders, over every cell."""
        orders = self.orders() if orders is None else orders
        h = collections.Counter()
        for o in orders.values():
            if o["status"] in ("pending_payment", "paid"):
                for sku, q in o["items"]:
                    h[sku] += q
        return h

    def fingerprint(self):
        """Everything a request could have written, as comparable values: products and the
        center ledger, and per cell the orders, items, outbox and stock ledgers (real and
        shadow). sold_reported (the cells' periodic reports to the center) is left out."""
        fp = {"products": self.center.execute("SELECT * FROM products ORDER BY sku").fetchall(),
              "center_stock": self.center.execute("SELECT * FROM center_stock ORDER BY 1, 2").fetchall(),
              "ledger": self.center.execute("SELECT sku, shadow, cell, granted, returned FROM ledger"
                                            " ORDER BY 1, 2, 3").fetchall()}
        for i, con in sorted(self.cells.items()):
            for t in ("orders", "shadow_orders"):
                fp["cell%d.%s" % (i, t)] = con.execute(
                    "SELECT order_id, status, payment_id, updated_at FROM %s ORDER BY 1" % t).fetchall()
            for t in ("order_items", "shadow_order_items", "outbox", "shadow_outbox"):
                fp["cell%d.%s" % (i, t)] = con.execute("SELECT count(*), max(rowid) FROM %s" % t).fetchall()
            fp["cell%d.stock" % i] = con.execute("SELECT sku, shadow, granted, returned, sold FROM stock"
                                                 " ORDER BY 1, 2").fetchall()
        return fp


def fingerprint_diff(a, b):
    """Human-readable list of what differs between two DbView.fingerprint() values."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append("%s: before %r, after %r" % (k, (a.get(k) or [])[:5], (b.get(k) or [])[:5]))
    return out


def fault_counts(p):
    """How often each fault point fired, from the logs: {"cell.recv": n, ...}, plus
    "store.commit" from the cells' "fault injection: failing commit" lines. Fault points
    log every firing at debug level: start the platform with log_level="debug"."""
    text = p.all_log_text()
    out = collections.Counter()
    for m in re.finditer(r"fault ([a-z.]+) fired", text):
        out[m.group(1)] += 1
    n = len(re.findall(r"fault injection: failing commit", text))
    if n:
        out["store.commit"] = max(out["store.commit"], n)
    return dict(out)


ORDER_STATUSES = ("pending_payment", "paid", "cancelled", "expired")


class AckLedger:
    """What the clients were told, order by order: the record behind invariants 2 and 3.

    An order's `status` is its last ACKNOWLEDGED status (the 201 of its create, the 200 of
    a pay / cancel, or a 200 GET that showed it). `amb` holds the operations sent whose
    answer was lost (5xx, timeout, connection dropped): they may or may not have happened.
    From pending_payment an order may later be seen `expired` (never before its expires_at)
    or moved by an acknowledged or ambiguous pay / cancel; paid, cancelled and expired are
    final. Every create key ever sent is remembered, so an order nobody asked for
    ("phantom") or a second order for one key is caught. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.orders = {}       # oid -> dict(user, key, items, status, amb, expires, t_acked)
        self.keys = {}         # (user, key) -> oid, from a 2xx
        self.sent = {}         # (user, key) -> items, every create ever sent
        self.unresolved = {}   # (user, key) -> (items, wall ms of the first failed answer)
        self.placed_late = 0   # creates answered 5xx / nothing that HAD placed the order
        self.retry_created = 0  # creates answered 5xx / nothing, placed by a later retry
        self.placed_late_by = collections.Counter()  # placed_late by the failed answer's status
        self.errors = []       # contract violations seen by clients (strings)
        self.counts = collections.Counter()
        self.restocks = {}     # sku -> [acked units, ambiguous units]
        self.max_latency = (0.0, None)  # (seconds, request) slowest answer seen

    # -- bookkeeping --
    def error(self, msg):
        with self.lock:
            self.errors.append(msg)
        log("VIOLATION:", msg)

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] += n

    def latency(self, r_or_desc, seconds):
        with self.lock:
            if seconds > self.max_latency[0]:
                self.max_latency = (seconds, r_or_desc if isinstance(r_or_desc, str) else repr(r_or_desc)[:300])

    @staticmethod
    def allowed(o):
        s = o["status"]
        if s != "pending_payment":
            return {s}
        ok = {"pending_payment", "expired"}
        if "pay" in o["amb"]:
            ok.add("paid")
        if "cancel" in o["amb"]:
            ok.add("cancelled")
        return ok

    def snapshot(self):
        """Deep-enough copy for checking while clients keep running."""
        with self.lock:
            orders = {oid: dict(o, amb=set(o["amb"])) for oid, o in self.orders.items()}
            return {"orders": orders, "keys": dict(self.keys), "sent": dict(self.sent),
                    "unresolved": dict(self.unresolved),
                    "restocks": {k: list(v) for k, v in self.restocks.items()}}

    # -- creates --
    def create_sent(self, user, key, items):
        with self.lock:
            self.sent[(user, key)] = tuple(items)

    def create_failed(self, user, key, items, how="5xx"):
        """A create got a 5xx or no answer (`how`: "503", "504", "conn"...): the order may
        or may not exist."""
        with self.lock:
            if (user, key) not in self.keys and (user, key) not in self.unresolved:
                self.unresolved[(user, key)] = (tuple(items), int(time.time() * 1000), str(how))

    def create_acked(self, user, key, items, r):
        """A 200/201 to a create: check the body, record the order. Returns the oid or None."""
        j = r.json
        if not isinstance(j, dict) or not isinstance(j.get("order_id"), str):
            self.error("create answered %d without an order: %r" % (r.status, r))
            return None
        oid = j["order_id"]
        got_items = tuple((it.get("sku"), it.get("quantity")) for it in j.get("items") or []
                          if isinstance(it, dict))
        if j.get("user_id") != user or got_items != tuple(items):
            self.error("create for user %d items %r answered another order: %r" % (user, items, r))
        if r.status == 201 and j.get("status") != "pending_payment":
            self.error("201 with status %r: %r" % (j.get("status"), r))
        try:
            expires = iso_ms(j["expires_at"])
        except (KeyError, TypeError, ValueError):
            self.error("order without a valid expires_at: %r" % r)
            expires = None
        with self.lock:
            prev = self.keys.get((user, key))
            if prev is not None and prev != oid:
                self.errors.append("DUPLICATE: key %r (user %d) answered two orders %s and %s"
                                   % (key, user, prev, oid))
            self.keys[(user, key)] = oid
            if (user, key) in self.unresolved:
                # Placed by the attempt that got no answer (created before that answer), or
                # created by this retry?
                _, t_fail, how = self.unresolved.pop((user, key))
                try:
                    created = iso_ms(j["created_at"])
                except (KeyError, TypeError, ValueError):
                    created = None
                if created is not None and created <= t_fail:
                    self.placed_late += 1
                    self.placed_late_by[how] += 1
                else:
                    self.retry_created += 1
            if oid not in self.orders:
                self.orders[oid] = {"user": user, "key": key, "items": tuple(items),
                                    "status": "pending_payment", "amb": set(), "expires": expires,
                                    "t_acked": time.time(), "t_status": time.monotonic(),
                                    "seen": {"pending_payment"}}
        if j.get("status") in ORDER_STATUSES:
            self.observe(oid, j["status"], r)
        return oid

    # -- status observations --
    def op_started(self, oid, op):
        with self.lock:
            self.orders[oid]["amb"].add(op)

    def observe(self, oid, status, r):
        """A 2xx showed the order in `status`: it must be a legal successor of what was
        acknowledged before; it becomes the acknowledged status. When r.t_sent (monotonic
        time the request was sent) is earlier than the moment the current status was
        recorded, the two requests overlapped (two threads on one order: a replay racing
        the owner's cancel) and cannot be ordered: the answer must then show a status the
        order had, or may have now, and it changes nothing."""
        msg = None
        t_sent = getattr(r, "t_sent", None)
        with self.lock:
            o = self.orders[oid]
            if t_sent is not None and t_sent < o["t_status"]:
                if status not in o["seen"] and status not in self.allowed(o):
                    msg = ("order %s (user %d): overlapping request saw %r; the order was %r before and"
                           " is %r now (ambiguous ops %r): %r" % (oid, o["user"], status, sorted(o["seen"]),
                                                                  o["status"], sorted(o["amb"]), r))
            elif status not in self.allowed(o):
                msg = ("order %s (user %d): last acknowledged %r, ambiguous ops %r, now %r: %r"
                       % (oid, o["user"], o["status"], sorted(o["amb"]), status, r))
            elif status == "expired" and o["status"] == "pending_payment" and o["expires"] \
                    and time.time() * 1000 < o["expires"] - 5:
                msg = "order %s expired %.0f ms before its expires_at: %r" % (
                    oid, o["expires"] - time.time() * 1000, r)
            else:
                if status != o["status"]:
                    o["t_status"] = time.monotonic()
                o["status"] = status
                o["seen"].add(status)
        if msg:
            self.error(msg)

    def restock_result(self, sku, qty, acked):
        with self.lock:
            v = self.restocks.setdefault(sku, [0, 0])
            v[0 if acked else 1] += qty


def check_ledger_in_db(v, ledger, ck, what, initial_stock=None, snap=None):
    """Invariants 1-3 on the stored data (a DbView) against what clients were told:
      1. per SKU, units held by pending_payment + paid orders <= stock_total;
      2. every acknowledged order is stored, same user and items, in a status its
         acknowledged history allows (expired never before expires_at);
      3. one (user, key) -> at most one order, the one the clients were answered with;
         no order for a key nobody sent.
    Also: restocks (initial_stock: sku -> stock at creation) — stock_total is at least the
    initial stock + acknowledged restocks and at most that + ambiguous ones.
    Returns stats {orders, by_status, placed_unanswered}."""
    snap = snap or ledger.snapshot()
    orders = v.orders()
    totals = v.stock_totals()
    bad = [0]

    def fail(msg):
        bad[0] += 1
        if bad[0] <= 25:
            ck.fail("%s: %s" % (what, msg))
        elif bad[0] == 26:
            ck.fail("%s: ... more failures not shown" % what)

    by_key = collections.defaultdict(list)
    for oid, o in orders.items():
        by_key[(o["user"], o["key"])].append(oid)
    for k, oids in by_key.items():
        if len(oids) > 1:
            fail("DUPLICATE: key %r of user %d holds %d orders %r" % (k[1], k[0], len(oids), oids))
    for oid, a in snap["orders"].items():
        o = orders.get(oid)
        if o is None:
            fail("LOST: acknowledged order %s (user %d, key %r, acknowledged %r) is not stored"
                 % (oid, a["user"], a["key"], a["status"]))
            continue
        if o["user"] != a["user"] or o["items"] != a["items"] or o["key"] != a["key"]:
            fail("order %s stored as user %r key %r items %r; acknowledged user %r key %r items %r"
                 % (oid, o["user"], o["key"], o["items"], a["user"], a["key"], a["items"]))
        if o["status"] not in AckLedger.allowed(a):
            fail("order %s stored %r; last acknowledged %r, ambiguous ops %r"
                 % (oid, o["status"], a["status"], sorted(a["amb"])))
    placed_unanswered = 0
    for oid, o in orders.items():
        k = (o["user"], o["key"])
        if k not in snap["sent"]:
            fail("PHANTOM: order %s for user %r key %r that no client sent" % (oid, o["user"], o["key"]))
        elif k in snap["keys"] and snap["keys"][k] != oid:
            fail("key %r (user %d) was answered with order %s but the store has %s"
                 % (o["key"], o["user"], snap["keys"][k], oid))
        elif k not in snap["keys"]:
            placed_unanswered += 1
            if o["items"] != tuple(snap["sent"][k]):
                fail("order %s for key %r holds %r, the request asked for %r" % (oid, o["key"], o["items"], snap["sent"][k]))
        if o["status"] not in ORDER_STATUSES:
            fail("order %s has status %r" % (oid, o["status"]))
        if o["status"] == "expired" and o["updated"] < o["expires"] - 5:
            fail("order %s expired at %d, %d ms before its expires_at" % (oid, o["updated"], o["expires"] - o["updated"]))
    held = v.held(orders)
    for sku, h in sorted(held.items()):
        tot = totals.get(sku)
        if tot is None or h > tot:
            fail("OVERSOLD: %s: pending+paid orders hold %d units, stock_total %r" % (sku, h, tot))
    for sku, (acked, amb) in sorted(snap["restocks"].items()):
        if initial_stock and sku in initial_stock:
            lo, hi = initial_stock[sku] + acked, initial_stock[sku] + acked + amb
            if not lo <= totals.get(sku, -1) <= hi:
                fail("%s: stock_total %r, expected %d..%d (initial + acknowledged restocks"
                     " [+ unanswered ones])" % (sku, totals.get(sku), lo, hi))
    st = collections.Counter(o["status"] for o in orders.values())
    return {"orders": len(orders), "by_status": dict(st), "placed_unanswered": placed_unanswered,
            "held": dict(held), "totals": totals}


class ChaosLoad:
    """Client threads that create, pay, cancel, read and restock, recording every answer in
    an AckLedger and checking each one against the contract as it comes:
      - only statuses in `ok_status` (default 200, 201, 409, 503, 504) — anything else,
        and any 409 other than out_of_stock / not_payable / not_cancellable, is a violation;
      - a connection failure is a violation unless conn_ok (crash tests kill the gateway);
      - with max_latency_s, every answer must come within it (no hang);
      - a create that failed (5xx / no answer) is retried with the SAME key with
        probability retry_p (up to `retries` times): at most one order may ever result.
    Bounded: `deadline_s` (scaled) and `max_requests` per thread."""

    def __init__(self, port, token, users, skus, ledger=None, nthreads=8, seed=1,
                 mix=(("create", 60), ("pay", 6), ("cancel", 6), ("get", 15), ("repay", 2), ("restock", 2)),
                 restock_sku=None, retry_p=0.7, retries=3, conn_ok=False, max_latency_s=None,
                 ok_status=(200, 201, 409, 503, 504), deadline_s=60, max_requests=100000,
                 client_timeout_s=10, qty_max=3):
        self.port, self.token, self.users, self.skus = port, token, users, skus
        self.ledger = ledger or AckLedger()
        self.nthreads, self.seed, self.retry_p, self.retries = nthreads, seed, retry_p, retries
        self.conn_ok, self.max_latency_s, self.ok_status = conn_ok, max_latency_s, ok_status
        self.restock_sku = restock_sku
        self.deadline = time.monotonic() + scaled(deadline_s)
        self.max_requests, self.client_timeout_s, self.qty_max = max_requests, client_timeout_s, qty_max
        self.ops = [op for op, w in mix for _ in range(w) if op != "restock" or restock_sku]
        self.stop_ev = threading.Event()
        self.threads = []
        self.requests = 0
        self.lock_requests = threading.Lock()

    def start(self):
        for t in range(self.nthreads):
            th = threading.Thread(target=self._run, args=(t,), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def stop(self, join_s=30):
        self.stop_ev.set()
        end = time.monotonic() + scaled(join_s)
        for th in self.threads:
            th.join(max(0.1, end - time.monotonic()))
        stuck = [th for th in self.threads if th.is_alive()]
        if stuck:
            raise AssertionError("%d chaos client threads still running %.0fs after stop"
                                 % (len(stuck), scaled(join_s)))
        return self.ledger

    def join(self, join_s=60):
        """Wait (bounded) for the threads to reach their deadline / request budget."""
        end = time.monotonic() + scaled(join_s)
        for th in self.threads:
            th.join(max(0.1, end - time.monotonic()))
        return self.stop(5)

    def _over(self):
        return self.stop_ev.is_set() or time.monotonic() >= self.deadline

    def _call(self, c, fn, *a):
        """One request; returns Resp or None (no answer), after the generic checks."""
        L = self.ledger
        t0 = time.monotonic()
        try:
            r = fn(*a)
            r.t_sent = t0
        except ConnectionError as e:
            dt = time.monotonic() - t0
            L.count("conn")
            if not self.conn_ok:
                L.error("no answer (after %.2fs): %s" % (dt, e))
            L.latency(str(e), dt)
            return None
        with self.lock_requests:
            self.requests += 1
        dt = time.monotonic() - t0
        L.latency(r, dt)
        if self.max_latency_s is not None and dt > scaled(self.max_latency_s):
            L.error("answer took %.2fs (limit %.2fs): %r" % (dt, scaled(self.max_latency_s), r))
        if r.status not in self.ok_status:
            L.error("unexpected status: %r" % r)
        L.count("%d %s" % (r.status, r.error_code or "")) if r.status >= 300 else L.count(str(r.status))
        return r

    def _run(self, t):
        rng = random.Random(self.seed * 1000 + t)
        users = self.users[t::self.nthreads] or self.users
        mine = []  # this thread's order ids (only the owner pays / cancels them)
        c = Client(self.port, self.token, timeout_s=self.client_timeout_s)
        n = 0
        try:
            while not self._over() and n < self.max_requests:
                n += 1
                op = rng.choice(self.ops)
                if op == "restock":
                    if t == 0:
                        self._restock(c, rng)
                    continue
                if op in ("pay", "cancel", "get", "repay") and mine:
                    self._order_op(c, rng, op, mine)
                    continue
                self._create(c, rng, users, mine)
        except Exception as e:  # noqa: BLE001 - a crashed client thread is a test failure
            import traceback
            self.ledger.error("client thread %d crashed: %s\n%s" % (t, e, traceback.format_exc()))
        finally:
            c.close()

    def _create(self, c, rng, users, mine):
        L = self.ledger
        user = rng.choice(users)
        k = min(rng.choice((1, 1, 1, 2)), len(set(self.skus)))
        skus = []  # self.skus may repeat a SKU to make it hotter; an order names it once
        while len(skus) < k:
            s = rng.choice(self.skus)
            if s not in skus:
                skus.append(s)
        items = tuple((s, rng.randint(1, self.qty_max)) for s in skus)
        key = "%s-%s" % (rng.choice("abcdef"), uuid.uuid4().hex[:20])
        L.create_sent(user, key, items)
        for attempt in range(self.retries + 1):
            r = self._call(c, c.order, user, list(items), key)
            if r is not None and r.status in (200, 201):
                oid = L.create_acked(user, key, items, r)
                if oid:
                    mine.append(oid)
                    if attempt:
                        L.count("create acked on a retry")
                return
            if r is not None and r.status == 409:
                if r.error_code != "out_of_stock":
                    L.error("create: unexpected 409: %r" % r)
                if attempt:
                    L.create_failed(user, key, items)  # an earlier attempt may have placed it
                return
            if r is not None and r.status < 500:
                if attempt:
                    L.create_failed(user, key, items)
                return  # already reported by _call
            L.create_failed(user, key, items, "conn" if r is None else r.status)
            if self._over() or rng.random() >= self.retry_p:
                return
            time.sleep(rng.uniform(0.01, 0.05))

    def _order_op(self, c, rng, op, mine):
        L = self.ledger
        with L.lock:
            pend = [o for o in mine[-64:] if L.orders[o]["status"] == "pending_payment"]
            paid = [o for o in mine[-64:] if L.orders[o]["status"] == "paid"]
        if op in ("pay", "cancel") and not pend:
            op = "get"
        if op == "repay" and not paid:
            op = "get"
        if op == "get":
            oid = rng.choice(mine[-200:])
            r = self._call(c, c.get_order, oid)
            self._observe(oid, r, "GET")
            return
        if op == "repay":  # paying again with the same payment_id: 200, nothing changes
            oid = rng.choice(paid)
            r = self._call(c, c.pay, oid, "pay-" + oid)
            if r is not None and r.status == 409:
                L.error("a repeated pay with the same payment_id: %r" % r)
            self._observe(oid, r, "repay")
            return
        oid = rng.choice(pend)
        L.op_started(oid, op)
        r = self._call(c, c.pay, oid, "pay-" + oid) if op == "pay" else self._call(c, c.cancel, oid)
        if r is None or r.status >= 500:
            L.count(op + " unanswered (ambiguous)")
        if r is not None and r.status == 200:
            want = "paid" if op == "pay" else "cancelled"
            if (r.json or {}).get("status") != want:
                L.error("%s answered 200 with status %r: %r" % (op, (r.json or {}).get("status"), r))
        if r is not None and r.status == 409:
            want = "not_payable" if op == "pay" else "not_cancellable"
            if r.error_code != want:
                L.error("%s: unexpected 409: %r" % (op, r))
            # Not pending any more although the client did not move it: learn how.
            r2 = self._call(c, c.get_order, oid)
            self._observe(oid, r2, "GET after a 409")
            return
        self._observe(oid, r, op)

    def _observe(self, oid, r, what):
        L = self.ledger
        if r is None or r.status >= 500:
            return
        if r.status == 404:
            L.error("LOST? an acknowledged order is unknown (%s): %r" % (what, r))
            return
        if r.status != 200:
            return
        j = r.json
        if not isinstance(j, dict) or j.get("order_id") != oid:
            L.error("%s of %s answered another document: %r" % (what, oid, r))
            return
        with L.lock:
            o = L.orders[oid]
            want = (o["user"], o["items"])
        got = (j.get("user_id"), tuple((it.get("sku"), it.get("quantity")) for it in j.get("items") or []
                                       if isinstance(it, dict)))
        if got != want:  # e.g. an order id issued twice after a crash
            L.error("%s of %s: user / items %r, acknowledged %r: %r" % (what, oid, got, want, r))
        L.observe(oid, j.get("status"), r)

    def _restock(self, c, rng):
        qty = rng.randint(1, 5)
        r = self._call(c, c.post, "/v1/products/%s/restock" % self.restock_sku, {"quantity": qty})
        if r is not None and r.status == 200:
            self.ledger.restock_result(self.restock_sku, qty, True)
        elif r is None or r.status >= 500:
            self.ledger.restock_result(self.restock_sku, qty, False)
        else:
            self.ledger.error("restock: unexpected answer %r" % r)


def replay_unresolved(c, ledger, limit=None, rng=None, deadline_s=60):
    """Send again (same user, key, items) the creates whose answer was a 5xx or nothing:
    the key must yield at most one order. Two replays in a row must agree. Returns
    (replayed, found placed)."""
    with ledger.lock:
        todo = list(ledger.unresolved.items())
    if rng is not None:
        rng.shuffle(todo)
    if limit is not None:
        todo = todo[:limit]
    deadline = time.monotonic() + scaled(deadline_s)
    found = 0
    for (user, key), (items, _, _) in todo:
        if time.monotonic() > deadline:
            ledger.count("replays skipped (deadline)", 1)
            break
        try:
            t1 = time.monotonic()
            r1 = c.order(user, list(items), key)
            t2 = time.monotonic()
            r2 = c.order(user, list(items), key)
            r1.t_sent, r2.t_sent = t1, t2
        except ConnectionError as e:
            ledger.count("replay conn")
            log("replay: %s" % e)
            continue
        ok1, ok2 = r1.status in (200, 201), r2.status in (200, 201)
        if ok1 and ok2 and r1.json.get("order_id") != r2.json.get("order_id"):
            ledger.error("DUPLICATE: key %r replayed twice gave two orders: %r / %r" % (key, r1, r2))
        if ok1 or ok2:
            found += 1
        for r in (r1, r2):
            if r.status in (200, 201):
                ledger.create_acked(user, key, items, r)
            elif r.status == 409 and r.error_code == "out_of_stock":
                pass
            elif r.status not in (503, 504):
                ledger.error("replay of an unanswered create: %r" % r)
    return len(todo), found


# ---------------------------------------------------------------- PostgreSQL (issue 10)

PG_BIN = os.environ.get("D11_PG_BIN") or "/usr/lib/postgresql/15/bin"


class Postgres:
    """A private PostgreSQL 15 (Debian) for one test: initdb into a fresh temp dir, its own
    port on 127.0.0.1, fsync on, trust auth for user d11, database d11. Started and
    stopped with pg_ctl; the postmaster is found by the PID in postmaster.pid. As root the
    server runs as the `postgres` user (initdb refuses root) with our environment, so the
    runner's D11_TEST_TMP marker finds any leftover. Use as a context manager; raises Skip
    when the binaries are missing."""

    def __init__(self, extra_conf="", autostart=True):
        self.autostart = autostart
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            raise Skip("PostgreSQL binaries not found in %s (apt-get install postgresql-15)" % PG_BIN)
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="d11pg.", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.extra_conf = extra_conf
        self.logf = os.path.join(self.dir, "pg.log")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(test_tmp(), "started.pids"), "a") as f:
            f.write("0 %s\n" % self.dir)

    def _run(self, args, check=True, timeout_s=60):
        argv = list(args)
        if self.as_root:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--"] + argv
        env = dict(os.environ)
        env["D11_TEST_TMP"] = test_tmp()
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, timeout=scaled(timeout_s), cwd=self.dir)
        if check and cp.returncode != 0:
            raise AssertionError("%s: exit %d\n%s%s" % (" ".join(args), cp.returncode,
                                                         cp.stdout.decode(errors="replace"),
                                                         cp.stderr.decode(errors="replace")))
        return cp

    def init(self):
        self._run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "d11", "-A", "trust",
                   "--no-sync", "-E", "UTF8"])
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\nlisten_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "fsync = on\nsynchronous_commit = on\nmax_connections = 100\n"
                    "shared_buffers = 64MB\nwal_level = replica\nmax_wal_senders = 4\n%s\n"
                    % (self.port, self.dir, self.extra_conf))
        return self

    def start(self, timeout_s=30):
        if not os.path.exists(self.data):
            self.init()
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.logf, "-w",
                   "-t", str(int(scaled(timeout_s))), "start"], timeout_s=timeout_s + 5)
        if not getattr(self, "_db", False):
            self._run([os.path.join(PG_BIN, "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                       "-U", "d11", "d11"])
            self._db = True
        log("postgresql pid %s on port %d, data %s" % (self.pid(), self.port, self.data))
        return self

    def pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def stop(self, mode="fast"):
        """pg_ctl stop -m fast|immediate (immediate = crash: no checkpoint, WAL replay on start)."""
        if self.pid() is None or not pid_alive(self.pid()):
            return
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], check=False)
        log("postgresql stopped (%s)" % mode)

    def url(self, db="d11"):
        return "postgresql://d11@127.0.0.1:%d/%s" % (self.port, db)

    def standby_of(self, primary, name="standby1"):
        """Make this (not yet initialised) server a streaming standby of primary
        (pg_basebackup -R), reporting application_name `name`; then start it."""
        self._run([os.path.join(PG_BIN, "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                   "-U", "d11", "-D", self.data, "-R", "-X", "stream", "--no-sync", "-c", "fast"], timeout_s=120)
        # postgresql.auto.conf (where -R wrote primary_conninfo) is read last: override there.
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write("\nport = %d\nunix_socket_directories = '%s'\nsynchronous_standby_names = ''\n"
                    "primary_conninfo = 'host=127.0.0.1 port=%d user=d11 application_name=%s'\n"
                    % (self.port, self.dir, primary.port, name))
        self._db = True
        return self.start()

    def promote(self):
        self._run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-w", "promote"])
        log("postgresql on port %d promoted" % self.port)

    def psql(self, sql):
        """Rows of sql as lists of strings (psql -At, '|' separated)."""
        cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1",
                             "-h", "127.0.0.1", "-p", str(self.port), "-U", "d11", "-d", "d11", "-c", sql],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=scaled(60))
        if cp.returncode != 0:
            raise AssertionError("psql %r: %s" % (sql, cp.stderr.decode(errors="replace")))
        return [line.split("|") for line in cp.stdout.decode().splitlines() if line]

    def __enter__(self):
        return self.start() if self.autostart else self

    def __exit__(self, et, ev, tb):
        if et is not None:
            try:
                with open(self.logf, errors="replace") as f:
                    sys.stderr.write("\n----- tail of the postgresql log -----\n%s\n" % "".join(f.readlines()[-30:]))
            except OSError:
                pass
        try:
            self.stop("immediate")
        finally:
            if not os.environ.get("D11_KEEP_TMP"):
                shutil.rmtree(self.dir, ignore_errors=True)
        return False


def pg_platform(pg, cells=2, **kw):
    """A Platform whose DATA/d11.conf says `store = URL` of pg: every process (and
    `d11 audit --data DIR`) uses PostgreSQL."""
    p = Platform(cells=cells, **kw)
    with open(os.path.join(p.data, "d11.conf"), "w") as f:
        f.write("store = %s\n" % pg.url())
    return p


def pg_holding(pg, sku, cells, table="orders"):
    """Units of sku held by stored orders in pending_payment or paid, over every cell schema."""
    items = "shadow_order_items" if table == "shadow_orders" else "order_items"
    total = 0
    for i in range(cells):
        rows = pg.psql("SELECT coalesce(sum(it.quantity), 0) FROM d11_cell_%d.%s it JOIN d11_cell_%d.%s o"
                       " ON o.order_id = it.order_id WHERE it.sku = '%s' AND o.status IN"
                       " ('pending_payment', 'paid')" % (i, items, i, table, sku))
        total += int(rows[0][0])
    return total


def pg_no_duplicate_keys(pg, cells, ck):
    """Invariant 3 on the stored data: one (user, key) -> at most one order over every cell."""
    seen = {}
    for i in range(cells):
        for user, key, cnt in pg.psql("SELECT user_id, idem_key, count(*) FROM d11_cell_%d.orders"
                                      " GROUP BY user_id, idem_key" % i):
            if int(cnt) > 1:
                ck.fail("d11_cell_%d.orders: %s orders for user %s key %r" % (i, cnt, user, key))
            if (user, key) in seen:
                ck.fail("user %s key %r stored in cells %d and %d" % (user, key, seen[(user, key)], i))
            seen[(user, key)] = i
    return seen


# ================================================================ the suite on PostgreSQL (issue 10)
# D11_TEST_STORE=postgresql runs the ordinary integration tests on the PostgreSQL backend.
# tests/integration/pgserver.py starts ONE server for the whole run (initdb into a temp
# dir, own port, stopped by PID at the end) and exports D11_TEST_PG_PORT; here every
# Platform then gets a FRESH database on it (CREATE DATABASE t_<hex>) and is started with
# `--store URL` (`d11 audit` gets the same flag). The SQLite-reading helpers keep their
# names and signatures but read the platform's PostgreSQL schemas instead: Platform.cell_dbs
# lists d11_cell_<i> as "DATA/cell-<i>.db", Platform.query("cell-<i>.db" | "center.db", sql,
# args) runs sql in that schema, DbView opens one such reader per schema — so db_holding,
# db_no_duplicate_keys, db_stock_total, DbView and check_ledger_in_db work on both backends
# unchanged. SQL is the common subset (`?` placeholders are inlined as quoted literals,
# `rowid` reads as PostgreSQL's `ctid`). A test that cannot mean the same on PostgreSQL
# (a full data-dir disk, reading .db files) calls pg_skip(reason).

PG_MODE = os.environ.get("D11_TEST_STORE", "") == "postgresql"


def pg_skip(reason):
    """In PostgreSQL mode: skip this test, printing why (SKIP: ... in the run output)."""
    if PG_MODE:
        raise Skip("on PostgreSQL: %s" % reason)


def _pg_port():
    p = os.environ.get("D11_TEST_PG_PORT")
    if not p:
        raise AssertionError("D11_TEST_STORE=postgresql needs the run's server: run the tests under"
                             " `python3 tests/integration/pgserver.py bash tests/run.sh ...` (make test-pg)")
    return int(p)


def _pg_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, bytes):
        return "'\\x%s'::bytea" % v.hex()
    return "'%s'" % str(v).replace("'", "''")


def _pg_inline(sql, args):
    if not args:
        return sql
    parts = sql.split("?")
    if len(parts) - 1 != len(args):
        raise AssertionError("query %r has %d placeholders for %d args" % (sql, len(parts) - 1, len(args)))
    out = parts[0]
    for a, rest in zip(args, parts[1:]):
        out += _pg_literal(a) + rest
    return out


def pg_sql(db, sql, args=(), schema=None, port=None):
    """Rows (tuples of Python values: JSON types, so bigint -> int) of sql on database db of
    the run's server, with search_path = schema when given."""
    q = _pg_inline(sql, args).strip().rstrip(";")
    q = re.sub(r"\browid\b", "ctid", q)
    wrapped = "SELECT coalesce(json_agg(json_build_array(VARIADIC ARRAY(SELECT value FROM" \
              " json_each(row_to_json(t))))), '[]') FROM (%s) t" % q
    env = dict(os.environ)
    if schema:
        env["PGOPTIONS"] = "-c search_path=%s" % schema
    cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                         "-p", str(port or _pg_port()), "-U", "d11", "-d", db, "-c", wrapped],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        env=env, timeout=scaled(60))
    if cp.returncode != 0:
        raise AssertionError("psql on %s (%s): %r: %s" % (db, schema, q, cp.stderr.decode(errors="replace")))
    return [tuple(r) for r in json.loads(cp.stdout.decode() or "[]")]


class _PgRows(list):
    def fetchall(self):
        return list(self)


class _PgSchemaCon:
    """The part of a sqlite3 connection DbView uses (execute -> rows, close), on one schema."""

    def __init__(self, db, schema):
        self.db, self.schema = db, schema

    def execute(self, sql, args=()):
        return _PgRows(pg_sql(self.db, sql, args, schema=self.schema))

    def close(self):
        pass


def _pg_schema_of(name):
    m = re.match(r"^cell-(\d+)\.db$", name)
    if m:
        return "d11_cell_%s" % m.group(1)
    if name == "center.db":
        return "d11_center"
    raise AssertionError("no PostgreSQL schema for %r" % name)


if PG_MODE:
    _sqlite_platform_init = Platform.__init__
    _sqlite_platform_argv = Platform.argv
    _sqlite_platform_audit = Platform.audit
    _sqlite_pg_platform = pg_platform

    def pg_platform(pg, cells=2, **kw):  # noqa: F811 - test_pg.py's own servers, not the run's
        p = Platform.__new__(Platform)
        p._pg_own_server = True
        Platform.__init__(p, cells=cells, **kw)
        with open(os.path.join(p.data, "d11.conf"), "w") as f:
            f.write("store = %s\n" % pg.url())
        return p

    def _pg_platform_init(self, *a, **kw):
        _sqlite_platform_init(self, *a, **kw)
        if getattr(self, "_pg_own_server", False):
            return
        self.pg_db = "t_%s" % uuid.uuid4().hex[:16]
        cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                             "-p", str(_pg_port()), "-U", "d11", "-d", "postgres",
                             "-c", "CREATE DATABASE %s" % self.pg_db],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            timeout=scaled(60))
        if cp.returncode != 0:
            raise AssertionError("CREATE DATABASE %s: %s" % (self.pg_db, cp.stderr.decode(errors="replace")))
        self.store_url = "postgresql://d11@127.0.0.1:%d/%s" % (_pg_port(), self.pg_db)
        log("platform data %s stores in %s" % (self.data, self.store_url))

    def _pg_platform_argv(self):
        if getattr(self, "_pg_own_server", False):
            return _sqlite_platform_argv(self)
        return _sqlite_platform_argv(self) + ["--store", self.store_url]

    def _pg_platform_audit(self, timeout_s=120):
        if getattr(self, "_pg_own_server", False):
            return _sqlite_platform_audit(self, timeout_s)
        return AuditResult(run_cli(["audit", "--data", self.data, "--store", self.store_url], timeout_s))

    def _pg_platform_cell_dbs(self):
        rows = pg_sql(self.pg_db, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'd11_cell_%'")
        cells = sorted(int(r[0][len("d11_cell_"):]) for r in rows if r[0][len("d11_cell_"):].isdigit())
        return [(i, os.path.join(self.data, "cell-%d.db" % i)) for i in cells]

    def _pg_platform_query(self, name, sql, args=()):
        return pg_sql(self.pg_db, sql, args, schema=_pg_schema_of(name))

    def _pg_dbview_enter(self):
        self.center = _PgSchemaCon(self.p.pg_db, "d11_center")
        for i, path in self.p.cell_dbs():
            self.cells[i] = _PgSchemaCon(self.p.pg_db, _pg_schema_of(os.path.basename(path)))
        return self

    Platform.__init__ = _pg_platform_init
    Platform.argv = _pg_platform_argv
    Platform.audit = _pg_platform_audit
    Platform.cell_dbs = _pg_platform_cell_dbs
    Platform.query = _pg_platform_query
    DbView.__enter__ = _pg_dbview_enter
