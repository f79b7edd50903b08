#!/usr/bin/env python3
"""
run.py — discover and run d11's integration tests, each in isolation.

    python3 tests/integration/run.py [-j N] [-k SUBSTRING] [--list] [TEST ...]
        TEST = test_orders.py | test_orders.py::test_pay | test_pay (a function name)

Discovery: every tests/integration/test_*.py, every top-level function named test_* in
definition order. Each test runs in its own child process (`run.py --child FILE::FUNC`)
with its own directory ($D11_TEST_TMP, short path under /tmp) and a time limit (the
function's `timeout` attribute, default 60 s, times $D11_TEST_TIMEOUT_SCALE). Tests marked
`heavy` (load tests) run alone, after the others; the rest run -j at a time (default:
$D11_TEST_JOBS, else 2 when the machine has 2+ cores).

After each test, whatever the outcome, every process still running that carries the
test's directory (in its command line or its D11_TEST_TMP environment) is SIGKILLed by PID
— the test's own processes and nothing else.

Output: one line per test (PASS / FAIL / SKIP, seconds), a failing test's captured output
indented under it, and a final line `N passed, N failed[, N skipped]`. With --counts FILE
the three numbers are also written there (tests/run.sh adds them to the unit tests').
Exit status 0 when nothing failed, 1 otherwise.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TIMEOUT_S = 60
SKIP_RC = 77


def load_module(path):
    name = os.path.splitext(os.path.basename(path))[0]
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def discover():
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod = load_module(os.path.join(HERE, fn))
        for name, obj in vars(mod).items():
            if name.startswith("test_") and callable(obj) and getattr(obj, "__module__", None) == mod.__name__:
                tests.append({"file": fn, "func": name, "id": "%s::%s" % (fn, name),
                              "timeout": getattr(obj, "timeout", DEFAULT_TIMEOUT_S),
                              "heavy": getattr(obj, "heavy", False)})
    return tests


def select(tests, names, pattern):
    out = []
    for t in tests:
        if names and not any(n in (t["file"], t["id"], t["func"]) or n == t["file"][:-3]
                             for n in names):
            continue
        if pattern and pattern not in t["id"]:
            continue
        out.append(t)
    return out


# ---------------------------------------------------------------- child side

def child(test_id):
    fn, func = test_id.split("::")
    mod = load_module(os.path.join(HERE, fn))
    harness = sys.modules.get("harness")
    t0 = time.monotonic()
    try:
        getattr(mod, func)()
    except Exception as e:  # noqa: BLE001
        if harness is not None and isinstance(e, harness.Skip):
            print("SKIP: %s" % e)
            sys.stdout.flush()
            return SKIP_RC
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    finally:
        sys.stdout.flush()
    print("ok (%.1fs)" % (time.monotonic() - t0))
    return 0


# ---------------------------------------------------------------- cleanup

def marked_pids(tmp):
    """PIDs of our processes (same uid) whose cmdline or environment carries tmp."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        pid = int(d)
        if pid == me:
            continue
        for what in ("cmdline", "environ"):
            try:
                with open("/proc/%d/%s" % (pid, what), "rb") as f:
                    blob = f.read()
            except OSError:
                continue
            if tmp.encode() + b"\0" in blob + b"\0" or (tmp + "/").encode() in blob:
                out.append(pid)
                break
    return out


def is_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
        return st[st.rfind(")") + 2] in "ZX"
    except OSError:
        return True


def cleanup(tmp):
    """SIGKILL every process left behind by the test that owned tmp; returns how many."""
    killed = 0
    for _ in range(5):  # a supervisor might restart a child between passes
        pids = [p for p in marked_pids(tmp) if not is_zombie(p)]
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    return killed


# ---------------------------------------------------------------- parent side

class Runner:
    def __init__(self, root, scale, keep):
        self.root = root
        self.scale = scale
        self.keep = keep
        self.lock = threading.Lock()
        self.results = {"passed": 0, "failed": 0, "skipped": 0}
        self.failed = []
        self.seq = 0

    def run_one(self, t):
        with self.lock:
            self.seq += 1
            tmp = os.path.join(self.root, "%02d" % self.seq)
        os.makedirs(tmp)
        outp = os.path.join(tmp, "output.txt")
        env = dict(os.environ)
        env["D11_TEST_TMP"] = tmp
        env["D11_TEST_TIMEOUT_SCALE"] = str(self.scale)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        limit = t["timeout"] * self.scale
        t0 = time.monotonic()
        note = ""
        with open(outp, "wb") as out:
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", t["id"]],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, cwd=os.path.dirname(os.path.dirname(HERE)))
            try:
                rc = proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
                note = "TIMEOUT after %.0fs" % limit
        n = cleanup(tmp)
        dt = time.monotonic() - t0
        if n:
            note += ("; " if note else "") + "killed %d leftover process(es)" % n
        with open(outp, "rb") as f:
            output = f.read().decode("utf-8", "replace")
        if rc == 0:
            verdict = "PASS"
        elif rc == SKIP_RC:
            verdict = "SKIP"
        else:
            verdict = "FAIL"
        with self.lock:
            line = "%-4s %-58s %6.1fs%s" % (verdict, t["id"], dt, ("  [" + note + "]") if note else "")
            print(line, flush=True)
            if verdict == "FAIL":
                self.results["failed"] += 1
                self.failed.append(t["id"])
                lines = output.splitlines()
                if len(lines) > 250:
                    lines = ["    ... (%d lines omitted; full output in %s)" % (len(lines) - 250, outp)] + lines[-250:]
                for ln in lines:
                    print("    | " + ln)
                print("    | (test dir kept: %s)" % tmp, flush=True)
            elif verdict == "SKIP":
                self.results["skipped"] += 1
                reason = [ln for ln in output.splitlines() if ln.startswith("SKIP:")]
                if reason:
                    print("    " + reason[-1], flush=True)
            else:
                self.results["passed"] += 1
        if verdict != "FAIL" and not self.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def run(self, tests, jobs):
        light = [t for t in tests if not t["heavy"]]
        heavy = [t for t in tests if t["heavy"]]
        queue = list(light)
        qlock = threading.Lock()

        def worker():
            while True:
                with qlock:
                    if not queue:
                        return
                    t = queue.pop(0)
                self.run_one(t)

        ths = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        for t in heavy:
            self.run_one(t)


def main():
    ap = argparse.ArgumentParser(description="d11 integration tests")
    ap.add_argument("tests", nargs="*", help="FILE.py, FILE.py::FUNC or FUNC")
    ap.add_argument("-k", dest="pattern", help="only tests whose id contains this")
    ap.add_argument("-j", dest="jobs", type=int, default=None)
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cleanup", help=argparse.SUPPRESS)  # tests/run.sh, after a unit test
    ap.add_argument("--tmp", help="parent directory for the tests' directories")
    ap.add_argument("--counts", help="write 'passed failed skipped' to this file")
    ap.add_argument("--keep", action="store_true", help="keep every test's directory")
    a = ap.parse_args()

    if a.child:
        sys.exit(child(a.child))
    if a.cleanup:
        n = cleanup(os.path.abspath(a.cleanup))
        if n:
            print("killed %d leftover process(es)" % n)
        return

    try:
        tests = select(discover(), a.tests, a.pattern)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        print("0 passed, 1 failed")
        if a.counts:
            with open(a.counts, "w") as f:
                f.write("0 1 0\n")
        sys.exit(1)
    if a.list:
        for t in tests:
            print("%s%s" % (t["id"], "  (heavy)" if t["heavy"] else ""))
        return
    if a.tests and not tests:
        print("no test matches %r" % a.tests, file=sys.stderr)
        sys.exit(2)

    scale = float(os.environ.get("D11_TEST_TIMEOUT_SCALE", "") or 1)
    jobs = a.jobs or int(os.environ.get("D11_TEST_JOBS", "0") or 0) or min(2, os.cpu_count() or 1)
    own_root = a.tmp is None
    root = tempfile.mkdtemp(prefix="d11i.", dir=a.tmp or "/tmp")
    d11 = os.environ.get("D11_BIN") or os.path.join(os.path.dirname(os.path.dirname(HERE)), "bin", "d11")
    print("integration: %d test(s), -j %d, D11_BIN=%s, dirs under %s" % (len(tests), jobs, d11, root),
          flush=True)
    r = Runner(root, scale, a.keep or os.environ.get("D11_KEEP_TMP") == "1")
    r.run(tests, jobs)
    res = r.results
    if a.counts:
        with open(a.counts, "w") as f:
            f.write("%d %d %d\n" % (res["passed"], res["failed"], res["skipped"]))
    if r.failed:
        print("integration failures: " + " ".join(r.failed))
    line = "%d passed, %d failed" % (res["passed"], res["failed"])
    if res["skipped"]:
        line += ", %d skipped" % res["skipped"]
    print(line)
    if own_root and not r.failed and not r.keep:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if res["failed"] else 0)


if __name__ == "__main__":
    main()
