#!/usr/bin/env python3
"""
pgserver.py — run a command with ONE private PostgreSQL 15 server for the whole run, so that
the integration suite runs on the PostgreSQL backend (issue 10; docs/postgresql.md §Tests).

    python3 tests/integration/pgserver.py [--fsync on|off] CMD [ARG ...]
    e.g. python3 tests/integration/pgserver.py bash tests/run.sh test_orders.py   (make test-pg)

What it does: initdb into a fresh temp dir under /tmp (harness.Postgres: own free port on
127.0.0.1, trust auth for role d11, fsync on by default), starts the server, runs CMD with
D11_TEST_STORE=postgresql and D11_TEST_PG_PORT=<port> in its environment (harness.py then
gives every Platform a fresh database on this server and starts it with --store), and at
the end stops the server (pg_ctl stop -m immediate, then SIGKILL of the postmaster's PID
from postmaster.pid if it is still there) and removes the temp dir. Exit status: CMD's, or
1 when the server cannot be started (the message says why, and a `0 passed, 1 failed`
line follows); 0 with `0 passed, 0 failed, 1 skipped` when PostgreSQL is not installed
(tests/sum.sh and .ci/run count that line).

Ownership: the server's processes carry this script's own D11_TEST_TMP (not a test's), so
run.py's per-test cleanup never touches them; only this script stops them, by PID.
Threads: none. Signals: SIGINT/SIGTERM stop the server before exiting.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True


def main(argv):
    fsync = "on"
    while argv and argv[0].startswith("--"):
        if argv[0] == "--fsync" and len(argv) > 1 and argv[1] in ("on", "off"):
            fsync = argv[1]
            argv = argv[2:]
        else:
            print("usage: pgserver.py [--fsync on|off] CMD [ARG ...]", file=sys.stderr)
            return 2
    if not argv:
        print("usage: pgserver.py [--fsync on|off] CMD [ARG ...]", file=sys.stderr)
        return 2
    # The server's own marker directory (harness.test_tmp() reads D11_TEST_TMP).
    own = tempfile.mkdtemp(prefix="d11pgrun.", dir="/tmp")
    os.environ["D11_TEST_TMP"] = own
    os.environ.pop("D11_TEST_STORE", None)   # import harness in SQLite mode (no patching)
    import harness
    try:
        pg = harness.Postgres(extra_conf="fsync = %s\nmax_connections = 200\n" % fsync)
    except harness.Skip as e:
        print("pgserver: %s" % e, flush=True)
        print("0 passed, 0 failed, 1 skipped", flush=True)
        return 0
    stopping = []

    def on_signal(signum, _frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    rc = 1
    t0 = time.monotonic()
    try:
        try:
            pg.start()
        except AssertionError as e:
            print("pgserver: PostgreSQL did not start: %s" % e, flush=True)
            print("0 passed, 1 failed", flush=True)
            return 1
        print("pgserver: PostgreSQL pid %s on 127.0.0.1:%d (fsync %s), data %s"
              % (pg.pid(), pg.port, fsync, pg.data), flush=True)
        env = dict(os.environ)
        env.pop("D11_TEST_TMP", None)
        env["D11_TEST_STORE"] = "postgresql"
        env["D11_TEST_PG_PORT"] = str(pg.port)
        env["D11_PG_BIN"] = harness.PG_BIN
        try:
            rc = subprocess.call(argv, env=env)
        except KeyboardInterrupt:
            rc = 130
    finally:
        pid = pg.pid()
        try:
            pg.stop("immediate")
        except Exception as e:  # noqa: BLE001 - still kill by PID below
            print("pgserver: pg_ctl stop: %s" % e, flush=True)
        if pid and harness.pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not os.environ.get("D11_KEEP_TMP"):
            import shutil
            shutil.rmtree(pg.dir, ignore_errors=True)
            shutil.rmtree(own, ignore_errors=True)
        print("pgserver: PostgreSQL stopped after %.0f s" % (time.monotonic() - t0), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
