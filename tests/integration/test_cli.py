"""
test_cli.py — the command line and the supervisor as a new user meets them: one platform
per data directory, a taken port, what a clean stop leaves behind, flag errors, --help,
D11_FAULTS checked before anything is created, JSON-only log lines, `make run ARGS=...`,
and the README's walk through the API, run exactly as written.

Every process a test starts carries D11_TEST_TMP (run_cli / Platform), so the runner can
reap it by PID if a test fails half-way; a supervisor a test starts by hand is stopped by
its own PID.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time

from harness import (D11_BIN, REPO, Checks, Platform, expect, free_port, new_data_dir, poll,
                     run_cli, scaled, test_tmp, timeout)

SUBCOMMANDS = ("up", "gateway", "cell", "center", "audit")
# A valid value for every setting (the union of all subcommands' flags).
VALID = {"data": None, "listen": "127.0.0.1:9", "cells": "3", "threads": "2", "id": "1",
         "durability": "async", "async-flush-ms": "20", "order-ttl-ms": "5000",
         "request-timeout-ms": "700", "grant-chunk-max": "5", "soldout-cache-ms": "7",
         "log-level": "warn", "slow-request-ms": "250", "slow-commit-ms": "20", "log-sample": "10",
         "otlp-endpoint": "http://127.0.0.1:9/v1/traces", "trace-ratio": "0.5"}


def _env(extra=None):
    e = dict(os.environ)
    e["D11_TEST_TMP"] = test_tmp()
    if extra:
        e.update(extra)
    return e


def _start_up(args, env=None):
    """Start `d11 up ARGS` by hand (stdout+stderr captured); the caller stops it by PID."""
    return subprocess.Popen([D11_BIN, "up"] + list(args), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(env), start_new_session=True)


def _finish(proc, wait_s):
    """Wait for a supervisor started by _start_up to exit by itself within wait_s. If it is
    still running (the defect: it started instead of refusing), SIGTERM it — it and only it,
    by PID — and wait. Returns (exit status or None when it had to be stopped, stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=scaled(wait_s))
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=scaled(30))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return None, out, err


def _lines(text):
    return [l for l in text.splitlines() if l.strip()]


def _json_line(ck, line, what):
    try:
        obj = json.loads(line)
    except ValueError:
        ck.fail("%s: not a JSON object: %r" % (what, line))
        return {}
    ck.true(isinstance(obj, dict) and all(k in obj for k in ("ts", "level", "proc", "pid", "msg")),
            "%s: log object with ts/level/proc/pid/msg: %r" % (what, line))
    return obj if isinstance(obj, dict) else {}


def _snapshot(d):
    """name -> (inode, mtime_ns, size) of everything in DIR and DIR/pids."""
    out = {}
    for sub in ("", "pids"):
        base = os.path.join(d, sub)
        for n in os.listdir(base):
            st = os.lstat(os.path.join(base, n))
            if not os.path.isdir(os.path.join(base, n)):
                out[os.path.join(sub, n)] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


# ---------------------------------------------------------------- one platform per directory

@timeout(90)
def test_second_up_on_same_data_dir_is_refused():
    with Platform(cells=2) as p, Checks() as ck:
        up_pid = p.pids()["up"]
        c = p.client()
        expect(c.create_product("L1", stock=5, price=100), 201)
        # Writes by the running platform (WAL, pid files) may move mtimes of its own files;
        # what the second instance must not do is delete, create or replace anything.
        before = {k: v for k, v in _snapshot(p.data).items() if not k.endswith(("-wal", "-shm", ".db"))}
        proc = _start_up(["--data", p.data, "--listen", "127.0.0.1:%d" % free_port(), "--cells", "2"])
        rc, out, err = _finish(proc, 15)
        ck.eq(rc, 1, "exit status of a second d11 up on the same data directory (None: it started)")
        lines = _lines(err)
        ck.eq(len(lines), 1, "lines on stderr of the refused d11 up: %r" % lines[:10])
        if lines:
            obj = _json_line(ck, lines[0], "the refusal")
            ck.true(str(up_pid) in obj.get("msg", ""), "the refusal names the holder's pid %d: %r"
                    % (up_pid, lines[0]))
            ck.true("d11.lock" in obj.get("msg", ""), "the refusal names the lock file: %r" % lines[0])
        after = {k: v for k, v in _snapshot(p.data).items() if not k.endswith(("-wal", "-shm", ".db"))}
        ck.eq(sorted(after), sorted(before), "files of the data directory after the refused start")
        for name, v in before.items():
            if name in after and name.endswith((".sock", ".token", "tokens", ".pid")):
                ck.eq(after[name][0], v[0], "%s is the same file (not deleted and re-created)" % name)
        with open(os.path.join(p.data, "d11.lock")) as f:
            ck.eq(f.read().strip(), str(up_pid), "DATA/d11.lock holds the holder's pid")
        # The first platform still serves, on its own sockets.
        ck.status(c.get("/readyz"), 200, "the first platform is still ready")
        ck.status(c.order(7, [("L1", 1)]), 201, "the first platform still takes orders")
        ck.eq(p.stop(), 0, "the first platform stops cleanly")
        # Once it has stopped, the directory is free again.
        p.start()
        ck.status(p.client().get("/readyz"), 200, "a new d11 up on the released directory")


@timeout(60)
def test_second_cell_or_center_on_same_data_dir_is_refused():
    """A hand-started `d11 cell --id 0` / `d11 center` next to a running one stops at
    once, one JSON line naming the lock file and the holder's pid; the running platform
    keeps serving (before: a second cell crash-looped on UNIQUE outbox.event_id)."""
    with Platform(cells=2) as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("L2", stock=5, price=100), 201)
        pids = p.pids()
        for name, args in (("cell-0", ["cell", "--id", "0"]), ("center", ["center", "--cells", "2"])):
            cp = subprocess.run([D11_BIN] + args + ["--data", p.data], capture_output=True, text=True, timeout=20)
            ck.eq(cp.returncode, 1, "exit status of a second %s on the same data directory" % name)
            lines = _lines(cp.stderr)
            ck.eq(len(lines), 1, "lines on stderr of the refused %s: %r" % (name, lines[:10]))
            if lines:
                obj = _json_line(ck, lines[0], "the refusal of %s" % name)
                ck.true(str(pids[name]) in obj.get("msg", ""), "the refusal names the holder's pid %d: %r"
                        % (pids[name], lines[0]))
                ck.true(name + ".lock" in obj.get("msg", ""), "the refusal names %s.lock: %r" % (name, lines[0]))
        ck.eq(p.pids().get("cell-0"), pids["cell-0"], "the running cell 0 was not replaced")
        ck.status(c.order(7, [("L2", 1)]), 201, "the platform still takes orders")


# ---------------------------------------------------------------- port in use

@timeout(90)
def test_port_in_use_is_refused_before_announcing():
    with Checks() as ck:
        for reuseport in (False, True):
            what = "a SO_REUSEPORT listener" if reuseport else "a plain listener"
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:  # as another d11 gateway holds its port
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(8)
            addr = "127.0.0.1:%d" % s.getsockname()[1]
            data = new_data_dir()
            try:
                proc = _start_up(["--data", data, "--listen", addr, "--cells", "2"])
                rc, out, err = _finish(proc, 15)
            finally:
                s.close()
            ck.eq(rc, 1, "exit status of d11 up on a port held by %s (None: it kept running)" % what)
            lines = _lines(err)
            ck.eq(len(lines), 1, "stderr lines when the port is held by %s: %r" % (what, lines[:8]))
            if lines:
                obj = _json_line(ck, lines[0], "the port refusal")
                ck.true(addr in obj.get("msg", "") and "in use" in obj.get("msg", "").lower(),
                        "the refusal names %s and says it is in use: %r" % (addr, lines[0]))
            ck.true("serving on" not in err, "no 'serving on' announced for a taken port")
            ck.true(not os.path.exists(os.path.join(data, "pids")), "no pid files for a refused start")
            ck.true(not os.path.exists(os.path.join(data, "admin.token")), "no token for a refused start")


# ---------------------------------------------------------------- clean stop

@timeout(90)
def test_clean_stop_leaves_no_pid_files_or_sockets():
    with Platform(cells=2) as p, Checks() as ck:
        ck.eq(sorted(p.pids()), ["cell-0", "cell-1", "center", "gateway", "up"], "pid files while running")
        ck.true(os.path.exists(os.path.join(p.data, "center.sock")), "center.sock while running")
        ck.eq(p.stop(), 0, "exit status of the clean stop")
        left = sorted(os.listdir(os.path.join(p.data, "pids")))
        ck.eq(left, [], "DATA/pids after a clean stop")
        socks = sorted(n for n in os.listdir(p.data) if n.endswith(".sock"))
        ck.eq(socks, [], "sockets left in DATA after a clean stop")
        with open(os.path.join(p.data, "d11.lock")) as f:
            ck.eq(f.read(), "", "DATA/d11.lock names no dead pid after a clean stop")


# ---------------------------------------------------------------- flags

def test_unknown_and_foreign_flags_are_refused():
    with Checks() as ck:
        for sub in ("up", "audit", "gateway", "cell", "center"):
            for args in (["--bogus"], ["--bogus", "1"], ["--bogus=1"]):
                cp = run_cli([sub] + args + ["--data", new_data_dir()])
                first = (_lines(cp.stderr) or [""])[0]
                ck.eq(cp.returncode, 2, "exit status of d11 %s %s" % (sub, " ".join(args)))
                ck.true("unknown flag --bogus" in first,
                        "d11 %s %s says 'unknown flag --bogus': %r" % (sub, " ".join(args), first))
        # the example, as typed (on a free port: before the fix it started a gateway)
        d = new_data_dir()
        cp = run_cli(["gateway", "--data", d, "--listen", "127.0.0.1:%d" % free_port(),
                      "--grant-chunk-max", "5"], timeout_s=10)
        first = (_lines(cp.stderr) or [""])[0]
        ck.eq(cp.returncode, 2, "exit status of d11 gateway --grant-chunk-max 5")
        ck.true("--grant-chunk-max is not a flag of d11 gateway" in first, "one clear line: %r" % first)
        ck.eq(sorted(os.listdir(d)), [], "d11 gateway --grant-chunk-max 5 created nothing")
        # one foreign flag per part (--help last: nothing would run even if it were accepted)
        for sub, flag, val in (("cell", "listen", "127.0.0.1:9"), ("center", "threads", "2"),
                               ("audit", "cells", "2"), ("up", "id", "1"), ("cell", "cells", "2")):
            cp = run_cli([sub, "--" + flag, val, "--help"])
            first = (_lines(cp.stderr) or [""])[0]
            ck.eq(cp.returncode, 2, "exit status of d11 %s --%s %s" % (sub, flag, val))
            ck.true("--%s is not a flag of d11 %s" % (flag, sub) in first,
                    "d11 %s --%s: one clear line: %r" % (sub, flag, first))
        # a key another part reads is fine in the shared d11.conf
        d = new_data_dir()
        with open(os.path.join(d, "d11.conf"), "w") as f:
            f.write("grant-chunk-max = 5\nid = 1\nlisten = 127.0.0.1:9\n")
        for sub in ("gateway", "cell", "center", "audit", "up"):
            cp = run_cli([sub, "--data", d, "--help"])
            ck.eq(cp.returncode, 0, "d11 %s with another part's keys in d11.conf: %s" % (sub, cp.stderr))


def _help_flags(text):
    """The flags of a --help text's option list (lines that start with spaces then --)."""
    return {m.group(1) for m in re.finditer(r"(?m)^\s+--([a-z][a-z-]*)\b", text)}


def test_help_lists_exactly_the_accepted_flags():
    with Checks() as ck:
        for sub in SUBCOMMANDS:
            cp = run_cli([sub, "--help"])
            ck.eq(cp.returncode, 0, "d11 %s --help" % sub)
            listed = _help_flags(cp.stdout) - {"help"}
            ck.true(listed, "d11 %s --help lists flags" % sub)
            for key, val in VALID.items():
                val = val or new_data_dir()
                # --help after the flag: parsed, judged, nothing run
                r = run_cli([sub, "--%s=%s" % (key, val), "--help"])
                if key in listed:
                    ck.eq(r.returncode, 0, "d11 %s --%s (listed in its --help) is accepted: %s"
                          % (sub, key, r.stderr.strip()))
                else:
                    ck.eq(r.returncode, 2, "d11 %s --%s (not in its --help) is refused" % (sub, key))


# ---------------------------------------------------------------- D11_FAULTS

def test_bad_fault_spec_exits_2_before_creating_anything():
    with Checks() as ck:
        for spec in ("nosuch.point:drop", "cell.recv:explode", "cell.recv:drop@2"):
            d = os.path.join(new_data_dir(), "fresh")
            cp = run_cli(["up", "--data", d, "--listen", "127.0.0.1:%d" % free_port()],
                         env={"D11_FAULTS": spec}, timeout_s=30)
            ck.eq(cp.returncode, 2, "exit status of d11 up with D11_FAULTS=%s" % spec)
            ck.true("D11_FAULTS" in cp.stderr, "the error names D11_FAULTS: %r" % cp.stderr[-300:])
            ck.eq(len(_lines(cp.stderr)), 1, "one line for D11_FAULTS=%s: %r" % (spec, cp.stderr[-500:]))
            ck.true(not os.path.exists(d), "D11_FAULTS=%s: the data directory was not created" % spec)
        cp = run_cli(["up", "--data", os.path.join(new_data_dir(), "fresh")],
                     env={"D11_FAULTS": "cell.recv:drop", "D11_FAULT_SEED": "x"})
        ck.eq(cp.returncode, 2, "exit status with a bad D11_FAULT_SEED")


# ---------------------------------------------------------------- log stream

@timeout(90)
def test_every_stderr_line_of_up_is_json():
    with Platform(cells=2) as p, Checks() as ck:
        ck.status(p.client().get("/readyz"), 200, "ready")
        p.stop()
        text = p.log_text()  # up's stderr: its own lines and its children's
        lines = _lines(text)
        ck.true(len(lines) >= 5, "the platform logged something: %d lines" % len(lines))
        msgs = [_json_line(ck, l, "log line %d" % i).get("msg", "") for i, l in enumerate(lines)]
        ck.true(any("admin token written to" in m for m in msgs), "the token's path is logged (as JSON)")
        ck.true(any(m.startswith("serving on http://127.0.0.1:%d" % p.port) for m in msgs),
                "'serving on' is logged (as JSON)")


# ---------------------------------------------------------------- make run, README

def test_make_run_passes_args():
    cp = subprocess.run(["make", "-n", "-s", "-C", REPO, "run", "ARGS=--listen 127.0.0.1:9000 --cells 3"],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, timeout=scaled(60), env=_env())
    with Checks() as ck:
        ck.eq(cp.returncode, 0, "make -n run: %s" % cp.stderr[-500:])
        ck.true("bin/d11 up --listen 127.0.0.1:9000 --cells 3" in cp.stdout.splitlines(),
                "make run ARGS=... runs d11 up with them: %r" % cp.stdout[-500:])


def _readme_walk():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    sec = text.split("## A walk through the API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", sec, re.S)
    assert blocks, "README: no ```sh block in 'A walk through the API'"
    return "\n".join(blocks)


@timeout(120)
def test_readme_walk_works_when_pasted():
    walk = _readme_walk()
    port = free_port()
    script = walk.replace("bin/d11 ", D11_BIN + " ").replace("8080", str(port))
    assert D11_BIN in script and str(port) in script, "README walk: no bin/d11 up / port 8080 to run"
    cwd = new_data_dir()  # the walk uses ./data relative to where it is pasted
    proc = subprocess.Popen(["bash", "-c", script], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=scaled(90))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the walk's own process group: bash and its d11 up
        out, err = proc.communicate()
        raise AssertionError("the README walk did not finish in 90 s:\nstdout: %s\nstderr: %s"
                             % (out[-2000:], err[-3000:]))
    with Checks() as ck:
        ck.eq(proc.returncode, 0, "exit status of the README walk (stderr: %s)" % err[-2000:])
        objs = []
        for l in _lines(out):
            try:
                objs.append(json.loads(l))
            except ValueError:
                ck.fail("the walk printed a line that is not JSON: %r" % l)
        by_status = [o.get("status") for o in objs if isinstance(o, dict) and "order_id" in o]
        ck.true("pending_payment" in by_status, "the walk placed an order: %r" % objs)
        ck.true("paid" in by_status, "the walk paid the order: %r" % objs)
        prods = [o for o in objs if isinstance(o, dict) and o.get("sku") == "SKU-1"]
        ck.true(prods and prods[-1].get("stock_sold") == 1,
                "the product shows the sale at the end: %r" % prods[-1:])
        ck.true(not os.path.exists(os.path.join(cwd, "data", "pids", "up.pid")),
                "the walk's d11 up has stopped")
