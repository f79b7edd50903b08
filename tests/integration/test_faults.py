"""
test_faults.py — injected faults (src/core/fault.h, armed by D11_FAULTS in the environment
of `d11 up`, inherited by every child) and a real full disk. The promises:

  - a failed storage commit answers every request of its batch 503 (never 2xx), the cell
    exits, `d11 up` restarts it, recovery keeps every acknowledged order, and a client
    retrying with the same key gets exactly one order;
  - a full disk refuses orders with 5xx, loses nothing acknowledged, and service resumes by
    itself once space is freed;
  - lost, delayed or garbled frames between the gateway, the cells and the center only
    ever give clients 2xx / 409 / 503 / 504, each within the request timeout + slack (no
    hang), and retrying a 503 / 504 with the same key never makes a second order (it
    returns the first one when that was in fact placed);
  - afterwards the stored data passes every invariant and `d11 audit`.

Seeds: D11_TEST_SEED (the test's own choices) and D11_FAULT_SEED (the fault points'
draws) are printed; set them to replay a run. Fault tests run with --log-level debug so
that every firing is logged ("fault cell.recv fired") and counted.
"""

import errno
import os
import random
import subprocess
import time

from harness import (AckLedger, pg_skip, ChaosLoad, Checks, DbView, Platform, Skip, check_ledger_in_db,
                     expect, fault_counts, heavy, log, pid_alive, poll, replay_unresolved,
                     scaled, seeded, spread_users, test_tmp, timeout, users_for_cell)


def fault_draws(seed, n):
    """The first n draws (in [0, 1)) of src/core/fault.c's generator for `seed`: xorshift64
    seeded with the raw value. Every process of the platform, and every restart of one,
    makes exactly these draws (docs/reliability.md, known problem 1)."""
    m = (1 << 64) - 1
    x = seed or 88172645463325252
    out = []
    for _ in range(n):
        x ^= (x << 13) & m
        x ^= x >> 7
        x ^= (x << 17) & m
        out.append((x >> 11) / float(1 << 53))
    return out


def _arm(spec, fault_seed=None, first_fire_at_least=None):
    """Arm D11_FAULTS for the platforms this test starts (they inherit os.environ; each
    test runs in its own process, so this never leaks into another test).
    first_fire_at_least=(p, k): when the seed is not given, draw one whose first k-1 draws
    are all >= p — for a single @p point whose process restarts on firing, so that each
    incarnation gets some work done before its (always identical) first firing."""
    if fault_seed is None:
        s = os.environ.get("D11_FAULT_SEED")
        # 63-bit seeds by default: see docs/reliability.md (small seeds make the first draw
        # of every process fire).
        fault_seed = int(s) if s else random.getrandbits(63)
        while not s and first_fire_at_least and \
                min(fault_draws(fault_seed, first_fire_at_least[1] - 1)) < first_fire_at_least[0]:
            fault_seed = random.getrandbits(63)
    os.environ["D11_FAULTS"] = spec
    os.environ["D11_FAULT_SEED"] = str(fault_seed)
    print("D11_FAULTS=%s D11_FAULT_SEED=%d" % (spec, fault_seed), flush=True)
    return fault_seed


def _exits(p, name):
    """How often the supervisor saw `name` exit (status or signal), from its log."""
    return p.log_text().count('"msg":"%s (pid ' % name)


def _finish(p, ledger, ck, what, initial=None):
    """Stop cleanly, then every invariant on the stored data and `d11 audit`."""
    p.stop()
    with DbView(p) as v:
        st = check_ledger_in_db(v, ledger, ck, what, initial_stock=initial)
    a = p.audit()
    ck.true(a.rc == 0, "%s: d11 audit must exit 0: %r" % (what, a))
    ck.true(not ledger.errors, "%s: %d contract violations seen by clients:\n      %s"
            % (what, len(ledger.errors), "\n      ".join(ledger.errors[:12])))
    return st


def _create_until_acked(c, ledger, user, items, key, ck, deadline_s=20):
    """Create (user, items) with `key`, retrying the SAME key on 5xx until a 2xx (bounded).
    Returns (oid or None, number of 5xx answers)."""
    ledger.create_sent(user, key, items)
    end = time.monotonic() + scaled(deadline_s)
    fails = 0
    while True:
        try:
            r = c.order(user, list(items), key)
        except ConnectionError as e:
            ck.fail("create %r: no answer (the gateway never dies in this test): %s" % (key, e))
            return None, fails
        if r.status in (200, 201):
            return ledger.create_acked(user, key, items, r), fails
        if r.status != 503:
            ck.fail("create %r: expected 201 or 503, got %r" % (key, r))
            return None, fails
        if r.error_code != "unavailable":
            ck.fail("a 503 must carry code unavailable: %r" % r)
        fails += 1
        ledger.create_failed(user, key, items, r.status)
        if time.monotonic() > end:
            ck.fail("create %r: still 503 after %.0fs of retries" % (key, scaled(deadline_s)))
            return None, fails
        time.sleep(0.05)


def _until_200(c, fn, what, ck, deadline_s=20):
    end = time.monotonic() + scaled(deadline_s)
    while True:
        r = fn()
        if r.status == 200 or r.status < 500:
            return r
        if time.monotonic() > end:
            ck.fail("%s: still %d after %.0fs" % (what, r.status, scaled(deadline_s)))
            return r
        time.sleep(0.05)


# ---------------------------------------------------------------- storage commit faults

@timeout(120)
def test_commit_failure_answers_503_and_cell_recovers():
    """store.commit:fail#N — the N-th commit of each cell process fails (every restarted
    process counts again from 1, so each cell fails over and over, every N commits)."""
    seed, rng = seeded("D11_TEST_SEED", "commit fault")
    n = rng.randint(3, 6)
    _arm("store.commit:fail#%d" % n, 0)
    with Platform(cells=2, log_level="debug") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100000, price=250), 201)
        ledger = AckLedger()
        users = {cell: users_for_cell(cell, 2, 4, base=3) for cell in (0, 1)}
        fails = {0: 0, 1: 0}
        rounds = 2 * n + 1
        for rnd in range(rounds):
            for cell in (0, 1):
                user = users[cell][rnd % 4]
                items = (("A", 1 + rnd % 3),)
                oid, f = _create_until_acked(c, ledger, user, items, "nth-%d-%d" % (cell, rnd), ck)
                fails[cell] += f
                if oid and rnd % 3 == 1:
                    ledger.op_started(oid, "pay")
                    r = _until_200(c, lambda: c.pay(oid, "pay-" + oid), "pay " + oid, ck)
                    if ck.status(r, 200, "pay after retries"):
                        ledger.observe(oid, r.json.get("status"), r)
                elif oid and rnd % 3 == 2:
                    ledger.op_started(oid, "cancel")
                    r = _until_200(c, lambda: c.cancel(oid), "cancel " + oid, ck)
                    if ck.status(r, 200, "cancel after retries"):
                        ledger.observe(oid, r.json.get("status"), r)
        print("N=%d: %d rounds; 503 answers per cell %r; cell exits %r; placed although"
              " answered 503: %d; placed by the retry: %d"
              % (n, rounds, fails, {i: _exits(p, "cell-%d" % i) for i in (0, 1)}, ledger.placed_late,
                 ledger.retry_created))
        for cell in (0, 1):
            ck.true(fails[cell] >= 2, "cell %d: expected at least 2 failed commits (503) in %d rounds with"
                    " store.commit:fail#%d, saw %d" % (cell, rounds, n, fails[cell]))
            ck.true(_exits(p, "cell-%d" % cell) >= 2, "cell %d: the supervisor should have restarted it"
                    " after each failed commit; log:\n%s" % (cell, p.log_tail(30)))
        # "503 = not placed": no order answered 503 was stored by the failed batch.
        ck.eq(ledger.placed_late, 0, "orders stored although their create was answered 503")
        # Every acknowledged order reads back with its acknowledged status.
        for oid in sorted(ledger.orders):
            r = _until_200(c, lambda: c.get_order(oid), "GET " + oid, ck)
            if ck.status(r, 200, "GET acknowledged order"):
                ledger.observe(oid, r.json.get("status"), r)
        st = _finish(p, ledger, ck, "store.commit:fail#%d" % n)
        ck.eq(st["orders"], len(ledger.orders), "stored orders == acknowledged orders (one per key)")
        print("fault counts: %r; stored %r" % (fault_counts(p), st["by_status"]))


@heavy
@timeout(150)
def test_commit_failures_under_load_with_retries():
    """store.commit:fail@0.05 while 8 clients order, pay, cancel and retry 5xx with the
    same key: no 2xx is lost, no key yields two orders, every 503 meant "not placed".
    Each restarted cell replays the same draws, so the seed is chosen to let every
    incarnation commit at least 9 batches before it fails (see fault_draws)."""
    seed, rng = seeded("D11_TEST_SEED", "commit faults under load")
    fseed = _arm("store.commit:fail@0.05", first_fire_at_least=(0.05, 10))
    first = [i + 1 for i, d in enumerate(fault_draws(fseed, 200)) if d < 0.05][:1]
    print("each cell process fails its commit #%s" % (first[0] if first else ">200"))
    with Platform(cells=2, order_ttl_ms=4000, log_level="debug") as p, Checks() as ck:
        c = p.client()
        initial = {"HOT": 300, "COLD": 100000}
        for sku, stock in initial.items():
            expect(c.create_product(sku, stock=stock, price=100), 201)
        load = ChaosLoad(p.port, p.admin_token, spread_users(48, base=7), ["HOT", "HOT", "COLD"],
                         nthreads=8, seed=seed, retry_p=1.0, retries=6, deadline_s=10,
                         mix=(("create", 60), ("pay", 8), ("cancel", 6), ("get", 15), ("repay", 2))).start()
        ledger = load.join(60)
        replayed, found = replay_unresolved(c, ledger)
        fc = fault_counts(p)
        print("fault seed %d: faults fired %r; cell exits %r; answers %r; acked %d orders;"
              " %d unanswered keys replayed (%d found placed); retries placed %d"
              % (fseed, fc, {i: _exits(p, "cell-%d" % i) for i in (0, 1)}, dict(ledger.counts),
                 len(ledger.orders), replayed, found, ledger.retry_created))
        ck.true(fc.get("store.commit", 0) >= 2, "expected several failed commits, saw %r" % fc)
        ck.true(len(ledger.orders) >= 20, "only %d orders acknowledged in 10 s: the platform must keep"
                " serving between failed commits" % len(ledger.orders))
        ck.eq(ledger.placed_late, 0, "orders stored although their create was answered 503")
        _finish(p, ledger, ck, "store.commit:fail@0.05 (fault seed %d)" % fseed, initial)


@timeout(90)
def test_commit_fault_probability_is_not_replayed_by_every_process():
    """store.commit:fail@0.05 must let cells commit: a 5 % failure rate is not an outage.
    KNOWN BUG (docs/reliability.md): src/core/fault.c seeds xorshift64 with the raw
    D11_FAULT_SEED and every process — each cell, and each restart of a cell — starts from
    that same state. For fault.h's own example seed 42 (and any seed below ~2^32) the
    first draw is ~0; for about 5 % of all other seeds (here 4279097640775012486, first
    draw 0.015) it is also below 0.05. Either way each cell fails its first commit,
    restarts, draws the same number, fails again — forever: no order is ever placed."""
    with Checks() as ck:
        for fseed in (42, 4279097640775012486):
            _arm("store.commit:fail@0.05", fseed)
            print("first draws for seed %d: %r" % (fseed, [round(d, 4) for d in fault_draws(fseed, 3)]))
            with Platform(cells=1, log_level="debug") as p:
                c = p.client()
                expect(c.create_product("A", stock=1000, price=100), 201)
                end = time.monotonic() + scaled(8)
                got = []
                while time.monotonic() < end and 201 not in got:
                    r = c.order(5, [("A", 1)], "seed-%d-%d" % (fseed, len(got)))
                    got.append(r.status)
                    time.sleep(0.1)
                firsts = p.log_text().count("failing commit #1\"")
                print("seed %d: answers %r; cell processes that failed their very first commit: %d"
                      % (fseed, got, firsts))
                ck.true(201 in got, "store.commit:fail@0.05 with D11_FAULT_SEED=%d: no order placed in %.0fs"
                        " (%d tries); %d cell processes in a row failed their very first commit (every"
                        " process replays the same draws)" % (fseed, scaled(8), len(got), firsts))
                p.stop()


# ---------------------------------------------------------------- disk full

def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    cp = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", path],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
    if cp.returncode != 0:
        raise Skip("cannot mount a tmpfs for the data dir (mount -t tmpfs exit %d: %s); the disk-full"
                   " test needs root with CAP_SYS_ADMIN" % (cp.returncode, cp.stdout.strip()))


def _umount(path):
    for args in (["umount", path], ["umount", "-l", path]):
        if subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=20).returncode == 0:
            return
    log("WARNING: could not unmount %s" % path)


def _fill(path):
    """Write zeros into path/fill until the filesystem is full; returns bytes written."""
    n = 0
    with open(os.path.join(path, "fill"), "wb", buffering=0) as f:
        for chunk in (1 << 20, 1 << 16, 4096, 512, 1):
            buf = b"\0" * chunk
            while True:
                try:
                    f.write(buf)
                    n += chunk
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


class _DiskFullPlatform:
    """A platform whose data dir is the root of a small tmpfs (the log stays outside)."""

    def __init__(self, size="24m", **kw):
        self.mnt = os.path.join(test_tmp(), "fs%d" % random.randrange(1 << 20))
        self.size = size
        self.kw = kw
        self.p = None

    def __enter__(self):
        _mount_tmpfs(self.mnt, self.size)
        try:
            self.p = Platform(data=self.mnt, **self.kw)
            self.p.__enter__()
        except BaseException:
            _umount(self.mnt)
            raise
        return self.p

    def __exit__(self, et, ev, tb):
        try:
            self.p.__exit__(et, ev, tb)
        finally:
            if self.p.running():
                self.p.kill9_all()
            self.p.kill_leftovers()
            _umount(self.mnt)
        return False


@heavy
@timeout(150)
def test_disk_full_refuses_orders_then_resumes():
    pg_skip("the store is not in the data dir, so filling the data dir's disk does not reach it")
    seed, rng = seeded("D11_TEST_SEED", "disk full")
    with _DiskFullPlatform(cells=2, order_ttl_ms=60000) as p, Checks() as ck:
        c = p.client()
        initial = {"A": 100000}
        expect(c.create_product("A", stock=100000, price=100), 201)
        ledger = AckLedger()
        users = spread_users(16, base=11)
        # Before: orders on both cells (each cell now holds an allotment from the center).
        for i in range(40):
            oid, _ = _create_until_acked(c, ledger, users[i % 16], (("A", 1),), "before-%d" % i, ck)
        n = _fill(p.data)
        print("filled the %s tmpfs with %d bytes" % ("24m", n))
        # Full: every answer is 2xx (an order that still fit is durable) or 5xx (refused).
        full = {}
        oids = sorted(ledger.orders)
        for i in range(60):
            user = users[i % 16]
            key = "full-%d" % i
            ledger.create_sent(user, key, (("A", 1),))
            try:
                r = c.order(user, [("A", 1)], key)
            except ConnectionError as e:
                ck.fail("no answer while the disk is full: %s" % e)
                continue
            full[r.status] = full.get(r.status, 0) + 1
            if r.status in (200, 201):
                ledger.create_acked(user, key, (("A", 1),), r)
            elif r.status >= 500:
                ledger.create_failed(user, key, (("A", 1),), r.status)
                ck.true(r.status == 503 and r.error_code == "unavailable",
                        "disk full: a refused order should be 503 unavailable: %r" % r)
            else:
                ck.fail("disk full: expected 2xx or 5xx: %r" % r)
            if i % 4 == 0 and oids:  # pays need a commit too
                oid = oids.pop()
                ledger.op_started(oid, "pay")
                r = c.pay(oid, "pay-" + oid)
                ck.true(r.status in (200, 503), "pay while the disk is full: %r" % r)
                if r.status == 200:
                    ledger.observe(oid, r.json.get("status"), r)
        print("answers while the disk was full: %r" % full)
        ck.true(sum(v for k, v in full.items() if k >= 500) >= 10,
                "the disk is full, yet only %r of 60 orders were refused" % full)
        ck.true(p.pids().get("gateway") and pid_alive(p.pids()["gateway"]), "the gateway survived")
        # Free the space: service resumes on its own (supervisor backoff <= 5 s).
        os.unlink(os.path.join(p.data, "fill"))
        t0 = time.monotonic()
        oid, f = _create_until_acked(c, ledger, users[0], (("A", 2),), "after-0", ck, deadline_s=40)
        print("first order after freeing space placed in %.1fs (%d x 503 before)" % (time.monotonic() - t0, f))
        for i in range(1, 40):
            _create_until_acked(c, ledger, users[i % 16], (("A", 1),), "after-%d" % i, ck, deadline_s=20)
        replayed, found = replay_unresolved(c, ledger)
        print("replayed %d refused keys: %d now hold an order; placed although refused: %d"
              % (replayed, found, ledger.placed_late))
        ck.eq(ledger.placed_late, 0, "orders stored although their create was refused with 5xx")
        for oid in sorted(ledger.orders):
            r = c.get_order(oid)
            if ck.status(r, 200, "acknowledged order after the disk was full"):
                ledger.observe(oid, r.json.get("status"), r)
        _finish(p, ledger, ck, "disk full", initial)


@timeout(90)
def test_pid_files_stay_true_after_restarts_on_a_full_disk():
    """docs/operations.md: DIR/pids/<name>.pid is the pid of that process. A child restarted
    while the disk is full cannot get its pid file written; once space is back the file
    must name the live process again (operators and tests kill by these files).
    KNOWN BUG: up writes a pid file only at spawn, so it keeps naming the dead process."""
    with _DiskFullPlatform(size="8m", cells=1) as p, Checks() as ck:
        old = p.pids()["center"]
        _fill(p.data)
        p.kill9("center")
        poll(lambda: "cannot write" in p.log_text() or
             (p.pids().get("center") not in (None, old)), 20, "the supervisor to restart the center")
        os.unlink(os.path.join(p.data, "fill"))
        p.wait_ready(30)
        try:
            poll(lambda: all(pid_alive(pid) for pid in p.pids().values()), 10,
                 "every DIR/pids/*.pid to name a live process after space is back")
        except AssertionError as e:
            ck.fail("%s: pids %r; supervisor log: %s" % (e, p.pids(), [ln for ln in p.log_text().splitlines()
                                                                         if "cannot write" in ln][:2]))


# ---------------------------------------------------------------- wire faults

TIMEOUT_MS = 300
SLACK_S = 2.0


def _wire_run(spec, ck, extra=(), cells=2, seconds=6, nthreads=6, expect_points=(), expect_codes=()):
    seed, rng = seeded("D11_TEST_SEED", "wire faults")
    fseed = _arm(spec)
    with Platform(cells=cells, request_timeout_ms=TIMEOUT_MS, order_ttl_ms=5000, log_level="debug",
                  extra_args=list(extra)) as p:
        c = p.client()
        initial = {"HOT": 150, "WARM": 2000, "COLD": 100000}
        for sku, stock in initial.items():
            expect(c.create_product(sku, stock=stock, price=300), 201)
        load = ChaosLoad(p.port, p.admin_token, spread_users(48, base=17), ["HOT", "HOT", "WARM", "COLD"],
                         nthreads=nthreads, seed=seed, retry_p=1.0, retries=4, conn_ok=False,
                         max_latency_s=TIMEOUT_MS / 1000.0 + SLACK_S, ok_status=(200, 201, 409, 503, 504),
                         deadline_s=seconds, client_timeout_s=5,
                         mix=(("create", 60), ("pay", 8), ("cancel", 6), ("get", 15), ("repay", 2),
                              ("restock", 2)), restock_sku="WARM").start()
        ledger = load.join(seconds + 30)
        replayed, found = replay_unresolved(c, ledger)
        fc = fault_counts(p)
        codes = {k: v for k, v in ledger.counts.items()}
        print("%s (fault seed %d): fired %r; answers %r; acked %d; retries of a 5xx that found the first"
              " order placed: %d; retries that placed it: %d; unanswered keys replayed %d (%d placed);"
              " slowest answer %.3fs: %s; placed although answered, by answer: %r"
              % (spec, fseed, fc, codes, len(ledger.orders), ledger.placed_late, ledger.retry_created,
                 replayed, found, ledger.max_latency[0], ledger.max_latency[1], dict(ledger.placed_late_by)))
        for pt in expect_points:
            ck.true(fc.get(pt, 0) > 0, "%s: the fault point %s never fired (%r)" % (spec, pt, fc))
        for code in expect_codes:
            ck.true(any(k.startswith(code) for k in codes), "%s: no %s answer was seen: %r" % (spec, code, codes))
        ck.true(len(ledger.orders) >= 20, "%s: only %d orders acknowledged" % (spec, len(ledger.orders)))
        st = _finish(p, ledger, ck, spec, initial)
        return ledger, fc, st


@heavy
@timeout(120)
def test_wire_cell_recv_drop():
    with Checks() as ck:
        _wire_run("cell.recv:drop@0.03", ck, expect_points=["cell.recv"], expect_codes=["504"])


@heavy
@timeout(120)
def test_wire_cell_recv_delay():
    with Checks() as ck:
        _wire_run("cell.recv:delay=400ms@0.002", ck, expect_points=["cell.recv"], expect_codes=["504"])


@heavy
@timeout(120)
def test_wire_cell_recv_garble():
    with Checks() as ck:
        _wire_run("cell.recv:garble@0.01", ck, expect_points=["cell.recv"], expect_codes=["503"])


@heavy
@timeout(120)
def test_wire_cell_reply_drop():
    with Checks() as ck:
        ledger, _, _ = _wire_run("cell.reply:drop@0.03", ck, expect_points=["cell.reply"], expect_codes=["504"])
        # A dropped reply of a create that was placed: the retry with the same key must
        # have returned that very order (and no second one).
        ck.true(ledger.placed_late > 0, "no retry found its first attempt placed: the dropped-reply path"
                " was not exercised")


@heavy
@timeout(120)
def test_wire_center_grant_drop():
    with Checks() as ck:
        # 10 s, not 6: with 30 % of grants dropped most creates wait out the 300 ms deadline,
        # and on a loaded CI box 6 s acknowledged as few as 18 orders (the floor is 20)
        _wire_run("center.grant:drop@0.3", ck, extra=["--grant-chunk-max", "3"], cells=3, seconds=10,
                  expect_points=["center.grant"], expect_codes=["504"])


@heavy
@timeout(150)
def test_wire_all_faults_together():
    with Checks() as ck:
        _wire_run("cell.recv:delay=50ms@0.01,cell.reply:drop@0.02,center.grant:drop@0.2,store.commit:fail@0.01",
                  ck, extra=["--grant-chunk-max", "5"], cells=3, seconds=8,
                  expect_points=["cell.reply", "center.grant"])
