#!/usr/bin/env python3
"""
events_bench.py — the cost of events out, and commit -> webhook latency (bench/RESULTS.md).

  python3 bench/events_bench.py cost  [SECONDS] [ROUNDS] [MODES]  orders/s per mode
        MODES: comma list of off, off2, nats, burn, burndd, consumer, hook-filtered, on (default off,on);
        odd rounds run them in reverse order
  python3 bench/events_bench.py latency-nats [RATE] [SECONDS]    commit -> JetStream ack p50/p99
  python3 bench/events_bench.py latency [RATE] [SECONDS]   commit -> webhook delivery p50/p99
  python3 bench/events_bench.py latency-nginx [RATE] [SECONDS]   the same with nginx as the receiver

  D11_BENCH_PIN=1: d11 on CPU 0, the load generator and nats-server on CPU 1 (taskset), so
  that the relay's cost is d11's own (the broker and the client run elsewhere in production).
  `cost` also prints the CPU of d11's processes (and nats-server's) per order, from /proc.
  D11_BENCH_ALT=PATH: modes named alt-MODE run MODE on that other d11 binary (e.g.
  `git worktree add /tmp/old HEAD~1 && make -C /tmp/old`), side by side.
  D11_BENCH_KEEP=1: keep the data directories (removed after each run otherwise).
  D11_BENCH_RATE=R: `cost` runs open loop at R orders/s instead of closed loop (CPU per
  order at a fixed rate: the relay's cost without the throughput feedback).

Starts its own `bin/d11 up` (2 cells, durability sync) on a temporary data dir and port,
drives it with `bin/d11 bench`, and stops everything it started by PID. The webhook
receiver is a Python HTTP/1.1 server in this process (it acknowledges at once); latency
is the receiver's arrival time minus the event's `at` (the change's time: it includes the
group commit, the 20 ms read poll of the worker and the POST).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIN = os.environ.get("D11_BENCH_PIN") == "1"
D11_CPU = ["taskset", "-c", "0"] if PIN else []
AUX_CPU = ["taskset", "-c", "1"] if PIN else []
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D11 = os.path.join(ROOT, "bin", "d11")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Up:
    def __init__(self, extra=(), binary=None):
        self.data = tempfile.mkdtemp(prefix="d11evb.")
        self.port = free_port()
        self.log = open(os.path.join(self.data, "up.log"), "w")
        self.proc = subprocess.Popen(D11_CPU + [binary or D11, "up", "--data", self.data, "--listen", "127.0.0.1:%d" % self.port,
                                      "--cells", "2", "--durability", "sync"] + list(extra),
                                     stdout=self.log, stderr=self.log)
        tok = os.path.join(self.data, "admin.token")
        for _ in range(200):
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.port, timeout=1)
                if os.path.exists(tok):
                    break
            except Exception:
                pass
            time.sleep(0.05)
        self.token = open(tok).read().strip()

    def call(self, method, path, body=None):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + self.token,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")

    def raw(self, method, path):
        """GET a page and return its "next" without parsing the events (a cheap client)."""
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.port, path), method=method,
                                     headers={"Authorization": "Bearer " + self.token})
        with urllib.request.urlopen(req, timeout=10) as r:
            b = r.read()
        i = b.rindex(b'"next":"') + 8
        return b[i:b.index(b'"', i)].decode(), b.count(b'{"id":') >= 1000

    def bench(self, *args):
        out = subprocess.run(AUX_CPU + [D11, "bench", "--url", "http://127.0.0.1:%d" % self.port, "--token", self.token,
                              "--setup", "--mix", "order=1", "--skus", "100", "--hot-sku-share", "0"] + list(args),
                             capture_output=True, text=True, timeout=600).stdout
        m = re.search(r"2xx ([0-9.]+)/s", out)
        return out, float(m.group(1)) if m else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()
        if not os.environ.get("D11_BENCH_KEEP"):  # ~120 MB per run: hundreds of runs filled the disk once
            shutil.rmtree(self.data, ignore_errors=True)


class Receiver:
    def __init__(self):
        self.lat_ms = []
        self.n = 0
        rcv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time() * 1000
                ev = json.loads(body)
                rcv.lat_ms.append(now - ev["at"])
                rcv.n += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()


class Nginx:
    """A receiver that costs next to nothing: nginx, 1 worker, `return 200`."""

    def __init__(self, log=False):
        self.dir = tempfile.mkdtemp(prefix="d11evn.")
        self.log = os.path.join(self.dir, "hooks.log")
        self.port = free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        d = self.dir
        head = ("worker_processes 1; daemon off; pid %s/nginx.pid; error_log %s/error.log warn;\n"
                "events { worker_connections 1024; }\n" % (d, d))
        logging = ("access_log %s t buffer=256k flush=1s; " % self.log) if log else "access_log off; "
        http = ("http { log_format t '$msec $http_x_d11_event_id'; " + logging +
                "client_body_temp_path %s/b; proxy_temp_path %s/p; fastcgi_temp_path %s/f;"
                " uwsgi_temp_path %s/u; scgi_temp_path %s/s; keepalive_requests 100000000;"
                " server { listen 127.0.0.1:%d; location / { return 200; } } }\n" % (d, d, d, d, d, self.port))
        open(conf, "w").write(head + http)
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-p", d], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = "http://127.0.0.1:%d/hook" % self.port
        time.sleep(0.3)
        self.n = 0

    def stop(self, keep=False):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        if not keep:
            self.remove()

    def remove(self):
        if not os.environ.get("D11_BENCH_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)


class Nats:
    """nats-server -js on its own port and store dir, stopped by PID."""

    def __init__(self):
        # D11_BENCH_NATS_DIR=/dev/shm: the broker's store off d11's disk (in production the
        # broker has its own machine and disk; here its fsyncs and writeback would share
        # the journal with the cells' group commits)
        self.dir = tempfile.mkdtemp(prefix="d11evnats.", dir=os.environ.get("D11_BENCH_NATS_DIR") or None)
        self.port = free_port()
        self.proc = subprocess.Popen(AUX_CPU + ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.dir],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        self.url = "nats://127.0.0.1:%d" % self.port

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_ticks(root):
    """utime + stime (clock ticks, every thread) of root and all its descendants."""
    kids, ticks = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        kids.setdefault(int(f[1]), []).append(int(d))
        ticks[int(d)] = int(f[11]) + int(f[12])
    total, todo = 0, [root]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo += kids.get(p, [])
    return total


def cpu_busy():
    """(busy, total) jiffies of CPU 0 (where D11_BENCH_PIN puts d11); iowait counts as idle."""
    for line in open("/proc/stat"):
        if line.startswith("cpu0 "):
            f = [int(x) for x in line.split()[1:]]
            return sum(f) - f[3] - f[4], sum(f)
    return 0, 1


def cpu0_detail():
    """CPU 0's softirq and steal jiffies (/proc/stat) and its interrupts by kind
    (/proc/interrupts: RES rescheduling and CAL function-call IPIs, LOC timer, the rest)."""
    out = {}
    for line in open("/proc/stat"):
        if line.startswith("cpu0 "):
            f = [int(x) for x in line.split()[1:]]
            out["softirq"], out["steal"] = f[6], f[7]
    with open("/proc/interrupts") as fh:
        fh.readline()
        for line in fh:
            parts = line.split()
            if len(parts) > 1 and parts[1].isdigit():
                key = parts[0].rstrip(":")
                key = key if key in ("RES", "CAL", "LOC", "TLB") else "other"
                out[key] = out.get(key, 0) + int(parts[1])
    return out


def thread_ticks(root):
    """utime + stime per thread name (comm) over root and its descendants: d11 names its
    threads (d11-gw, d11-relay and the libnats threads it starts, d11-events, d11-store...)."""
    kids, out = {}, {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
    todo = [root]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            tasks = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for t in tasks:
            try:
                st = open("/proc/%d/task/%s/stat" % (p, t)).read()
            except OSError:
                continue
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            out[comm] = out.get(comm, 0) + int(f[11]) + int(f[12])
    return out


def metric_lines(up, prefix):
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % up.port)
    with urllib.request.urlopen(req, timeout=10) as r:
        return [l for l in r.read().decode().splitlines() if l.startswith(prefix)]


def hist_quantile(lines, q):
    """Quantile from Prometheus cumulative buckets (linear inside a bucket)."""
    b = []
    for l in lines:
        m = re.match(r'.*_bucket\{le="([^"]+)"\} (\d+)', l)
        if m:
            b.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
    total = b[-1][1]
    want, prev_le, prev_c = q * total, 0.0, 0
    for le, c in b:
        if c >= want:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((want - prev_c) / max(1, c - prev_c))
        prev_le, prev_c = le, c
    return prev_le


def consumer(up, stop):
    """Reads everything as it comes (long-poll, re-reading 20 ms after a short page) and
    commits its cursor once a second: what a sensible consumer does."""
    cur = None
    last = 0
    while not stop.is_set():
        q = "/v1/events?limit=1000&wait_ms=1000" + ("&after=" + cur if cur else "")
        try:
            cur, full = up.raw("GET", q)
            if not full:
                time.sleep(0.02)  # micro-batching: at the head, read again in 20 ms
            if time.monotonic() - last >= 1:
                up.call("PUT", "/v1/consumers/bench", {"cursor": cur})
                last = time.monotonic()
        except Exception:  # the platform stopped under us: the run is over
            return


MODES = {
    "off": (False, None),                  # nothing reads the outbox
    "off2": (False, None),                 # control: the same as off (the noise of a pair of runs)
    "nats": (False, None),                 # the NATS JetStream relay to a local nats-server
    "burn": (False, None),                 # control: relay off, CPU 1 kept busy (nice 19 spinner)
    "burndd": (False, None),               # control: relay off, CPU 1 copying memory (nice 19 dd, 1 MB blocks)
    "consumer": (True, None),              # one named consumer long-polling GET /v1/events
    "hook-filtered": (False, ["order.paid"]),  # a webhook that reads every event, POSTs none (no pays)
    "on": (True, []),                      # consumer + a webhook POSTing every event to nginx
}


def median(xs):
    """The median (the mean of the two middle values for an even count)."""
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0


def cost(seconds, rounds, modes=("off", "on")):
    res = {m: [] for m in modes}
    threads = {}
    for r in range(rounds):
        # ABBA: every other round runs its modes in reverse, so that a bias of a run's place
        # in the round (the previous run's writeback, caches) cancels in the median
        for mode in (modes if r % 2 == 0 else modes[::-1]):
            # alt-MODE: MODE on the binary named by D11_BENCH_ALT (e.g. a `make MALLOC=libc` build)
            base = mode[4:] if mode.startswith("alt-") else mode
            nats = Nats() if base == "nats" else None
            burn = None
            if base == "burn":
                burn = subprocess.Popen(AUX_CPU + ["nice", "-n", "19", "python3", "-c", "while True: pass"])
            elif base == "burndd":
                burn = subprocess.Popen(AUX_CPU + ["nice", "-n", "19", "dd", "if=/dev/zero", "of=/dev/null", "bs=1M"],
                                        stderr=subprocess.DEVNULL)
            up = Up(["--nats", nats.url] if nats else [], os.environ["D11_BENCH_ALT"] if base != mode else None)
            stop = threading.Event()
            use_consumer, types = MODES[base]
            rcv = None
            if types is not None:
                rcv = Nginx()
                body = {"url": rcv.url, "secret": "b"}
                if types:
                    body["types"] = types
                up.call("POST", "/admin/webhooks", body)
            if use_consumer:
                threading.Thread(target=consumer, args=(up, stop), daemon=True).start()
            c0, n0 = cpu_ticks(up.proc.pid), cpu_ticks(nats.proc.pid) if nats else 0
            t0 = thread_ticks(up.proc.pid)
            b0, i0 = cpu_busy(), cpu0_detail()
            fixed = ["--rate", os.environ["D11_BENCH_RATE"]] if os.environ.get("D11_BENCH_RATE") else []
            out, rate = up.bench("--connections", "64", "--duration", str(seconds), *fixed)
            c1, n1 = cpu_ticks(up.proc.pid), cpu_ticks(nats.proc.pid) if nats else 0
            t1 = thread_ticks(up.proc.pid)
            b1, i1 = cpu_busy(), cpu0_detail()
            stop.set()
            res[mode].append(rate)
            hz = os.sysconf("SC_CLK_TCK")
            orders = (rate or 0) * seconds
            extra = " d11 CPU %.1f us/order" % ((c1 - c0) / hz * 1e6 / max(1, orders))
            extra += ", cpu0 busy %.0f%%" % (100.0 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]))
            tot = max(1, b1[1] - b0[1])
            extra += " (softirq %.1f%%, steal %.1f%%; per order: %s)" % (
                100.0 * (i1["softirq"] - i0["softirq"]) / tot, 100.0 * (i1["steal"] - i0["steal"]) / tot,
                ", ".join("%s %.2f" % (k, (i1.get(k, 0) - i0.get(k, 0)) / max(1, orders))
                          for k in ("RES", "CAL", "LOC", "other")))
            per = {k: (t1.get(k, 0) - t0.get(k, 0)) / hz * 1e6 / max(1, orders) for k in t1}
            threads.setdefault(mode, []).append(per)
            extra += " [%s]" % ", ".join("%s %.1f" % (k, v) for k, v in sorted(per.items()) if v >= 0.05)
            lag = [l.split()[-1] for l in metric_lines(up, "d11_events_consumer_lag") if 'consumer="stats"' in l]
            extra += ", stats aggregator lag %s events at the end" % (lag[0] if lag else "?")
            if nats:
                def relay_lag():
                    v = [l.split()[-1] for l in metric_lines(up, "d11_events_consumer_lag")
                         if 'consumer="nats.events"' in l]
                    return int(float(v[0])) if v else -1
                lag0, t_end = relay_lag(), time.monotonic()
                while relay_lag() > 0 and time.monotonic() - t_end < 60:
                    time.sleep(0.05)
                extra += ", relay lag %d events at the end, caught up %.1f s later" % (lag0, time.monotonic() - t_end)
                extra += ", nats-server %.1f us/order" % ((n1 - n0) / hz * 1e6 / max(1, orders))
            if rcv:
                wh = up.call("GET", "/admin/webhooks")["webhooks"][0]
                extra += " (webhook delivered %d so far)" % wh["delivered"]
                rcv.stop()
            if nats:
                extra += " (%s)" % metric_lines(up, "d11_nats_published_total")[0]
            print("round %d %s: %s orders/s%s" % (r + 1, mode, rate, extra), flush=True)
            up.stop()
            if nats:
                nats.stop()
            if burn:
                burn.kill()
                burn.wait()
    for k, v in res.items():
        v = [x for x in v if x]
        print("%s: median %.0f orders/s over %d runs %s" % (k, median(v), len(v), v))
    for k, runs in threads.items():  # median CPU per order of each thread name
        names = sorted({n for r in runs for n in r})
        med = {n: median([r.get(n, 0) for r in runs]) for n in names}
        print("%s: median us of CPU per order by thread: %s" % (k, ", ".join("%s %.2f" % (n, v) for n, v in med.items()
                                                                                if v >= 0.05)))
    # runs of one round are adjacent in time: their ratio cancels the machine's drift; every
    # pair is printed, so that a mode can be read against a control (e.g. nats / burndd)
    for i, base in enumerate(modes):
        for k in modes[i + 1:]:
            r = sorted(b / a for a, b in zip(res[base], res[k]) if a and b)
            if r:
                print("%s / %s: median of %d per-round ratios %.3f (%s)" % (k, base, len(r), median(r),
                                                                       ", ".join("%.2f" % x for x in r)))


def latency_nginx(rate, seconds):
    """commit -> delivery with nginx as the receiver (it logs arrival time + event id; the
    events' `at` come from GET /v1/events afterwards)."""
    up = Up()
    rcv = Nginx(log=True)
    up.call("POST", "/admin/webhooks", {"url": rcv.url, "secret": "b"})
    out, got = up.bench("--rate", str(rate), "--connections", "64", "--duration", str(seconds))
    at, cur = {}, None
    while True:
        page = up.call("GET", "/v1/events?limit=1000" + ("&after=" + cur if cur else ""))
        for e in page["events"]:
            at[e["id"]] = e["at"]
        if not page["events"]:
            break
        cur = page["next"]
    end = time.time() + 60
    while time.time() < end and up.call("GET", "/admin/webhooks")["webhooks"][0]["delivered"] < len(at):
        time.sleep(0.2)
    time.sleep(1.2)  # nginx flushes its log buffer every second
    rcv.stop(keep=True)
    lat = []
    for line in open(rcv.log):
        t, eid = line.split()
        if eid in at:
            lat.append(float(t) * 1000 - at[eid])
    rcv.remove()
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("nginx receiver, rate %s/s for %ss: %s orders/s answered, %d events, %d delivered; commit->webhook "
          "p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (rate, seconds, got, len(at), len(lat), pick(0.5), pick(0.99),
                                                     lat[-1]))
    up.stop()


def latency_nats(rate, seconds):
    """commit -> JetStream ack, from the relay's histogram (d11_nats_ack_latency_seconds)."""
    nats = Nats()
    up = Up(["--nats", nats.url])
    out, got = up.bench("--rate", str(rate), "--connections", "64", "--duration", str(seconds))
    time.sleep(2)
    lines = metric_lines(up, "d11_nats_ack_latency_seconds")
    pub = metric_lines(up, "d11_nats_published_total")[0]
    print("NATS relay, rate %s/s for %ss: %s orders/s answered, %s; commit->ack p50 %.1f ms, p99 %.1f ms "
          "(histogram buckets, interpolated)" % (rate, seconds, got, pub, hist_quantile(lines, 0.5) * 1000,
                                                 hist_quantile(lines, 0.99) * 1000))
    up.stop()
    nats.stop()


def latency(rate, seconds):
    up = Up()
    rcv = Receiver()
    up.call("POST", "/admin/webhooks", {"url": rcv.url, "secret": "b"})
    out, got = up.bench("--rate", str(rate), "--connections", "32", "--duration", str(seconds))
    end = time.time() + 30
    while time.time() < end and rcv.n < got * seconds * 0.99:
        time.sleep(0.2)
    lat = sorted(rcv.lat_ms)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("rate %s/s for %ss: %d orders/s answered, %d events delivered; commit->webhook p50 %.1f ms, "
          "p99 %.1f ms, max %.1f ms" % (rate, seconds, got or 0, len(lat), pick(0.5), pick(0.99), lat[-1]))
    up.stop()


if __name__ == "__main__":
    if sys.argv[1] == "cost":
        cost(int(sys.argv[2]) if len(sys.argv) > 2 else 8, int(sys.argv[3]) if len(sys.argv) > 3 else 3,
             sys.argv[4].split(",") if len(sys.argv) > 4 else ("off", "on"))
    elif sys.argv[1] == "latency-nats":
        latency_nats(int(sys.argv[2]) if len(sys.argv) > 2 else 10000, int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    elif sys.argv[1] == "latency-nginx":
        latency_nginx(int(sys.argv[2]) if len(sys.argv) > 2 else 10000, int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    else:
        latency(int(sys.argv[2]) if len(sys.argv) > 2 else 1000, int(sys.argv[3]) if len(sys.argv) > 3 else 10)
