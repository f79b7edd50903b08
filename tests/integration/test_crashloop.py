"""
test_crashloop.py — the crash loop: kill -9 of a random process at a random moment, again
and again, while clients order, pay, cancel, read and restock; the four invariants of
API.md must hold throughout.

Each cycle: clients run for a random time, then one victim is chosen — a cell, the
center, the gateway, or everything (`up` first, then every child by DIR/pids/*.pid) — and
killed with SIGKILL. A single child is restarted by the supervisor (the test polls for the
new pid, then /readyz); after a kill of everything the test checks the data exactly as the
crash left it (SQLite files + `d11 audit`), then restarts the platform. Creates whose
answer was lost are replayed with the same key after each restart.

What is checked (AckLedger / check_ledger_in_db in harness.py, docs/reliability.md):
  1. never oversell — per SKU, units held by pending_payment + paid orders <= stock_total;
  2. every acknowledged order is stored with its last acknowledged status, or a legal later
     one (expiry, or a pay / cancel whose own answer was lost), online (every 2xx a client
     reads) and on the stored data;
  3. one idempotency key -> at most one order (clients retry some keys right after a 5xx,
     the test replays every unanswered key; no order for a key nobody sent);
  4. `d11 audit` exits 0 on every crashed state and after the final clean stop;
  5. after every restart, with the traffic stopped, GET /v1/products/{sku} shows the
     stock_sold that `d11 audit` computes from the stored data (issue 7 defect 2).

Seeded: the seed is printed; D11_TEST_SEED=N replays the same choices (victims, moments,
configs, client decisions — thread timing still varies). D11_CRASH_CYCLES=N runs N cycles
(default 20; the long mode is e.g. 1000, see docs/reliability.md); a new data dir and
config every D11_CRASH_PHASE_CYCLES cycles (default 10).
"""

import collections
import os
import random
import time

from harness import (AckLedger, ChaosLoad, Checks, DbView, Platform, check_ledger_in_db, expect,
                     heavy, log, pid_alive, poll, replay_unresolved, seeded, spread_users, timeout,
                     wait_product)

CYCLES = int(os.environ.get("D11_CRASH_CYCLES") or 20)
PHASE_CYCLES = int(os.environ.get("D11_CRASH_PHASE_CYCLES") or 10)
TTL_MS = 3000


def _victims(cells):
    """(name, weight): everything 30 %, center 15 %, gateway 15 %, cells 40 % together."""
    out = [("all", 30), ("center", 15), ("gateway", 15)]
    out += [("cell-%d" % i, 40 // cells) for i in range(cells)]
    return out


def _pick(rng, weighted):
    total = sum(w for _, w in weighted)
    x = rng.uniform(0, total)
    for name, w in weighted:
        x -= w
        if x <= 0:
            return name
    return weighted[-1][0]


def _check_stored(p, ledger, ck, what, initial, stats):
    with DbView(p) as v:
        st = check_ledger_in_db(v, ledger, ck, what, initial_stock=initial)
    stats["db checks"] += 1
    a = p.audit()
    stats["audits"] += 1
    if a.rc != 0:
        ck.fail("%s: d11 audit must exit 0 (every invariant holds): %r" % (what, a))
    return st


def _view_matches_audit(p, skus, ck, what, stats, timeout_s=3.0):
    """Issue 7 defect 2: with no traffic, GET /v1/products/{sku} must show what `d11 audit`
    computes from the stored data (stock_sold == stored sold), within a report interval
    (100 ms; the bound here leaves room for a loaded machine). Polls both, because pending
    orders may still expire and move the truth while we look."""
    c = p.client()
    deadline = time.monotonic() + timeout_s
    last = None
    try:
        while True:
            a = p.audit()
            if a.report is None:
                ck.fail("%s: d11 audit gave no report: %r" % (what, a))
                return
            truth = {r["sku"]: r["sold"] for r in a.report["stock"] if r["shadow"] == 0}
            view = {}
            for sku in skus:
                r = c.product(sku)
                view[sku] = r.json.get("stock_sold") if r.status == 200 and isinstance(r.json, dict) else r
            last = (view, {k: truth.get(k, 0) for k in skus})
            if all(view[k] == truth.get(k, 0) for k in skus):
                stats["product view == audit"] += 1
                return
            if time.monotonic() >= deadline:
                ck.fail("%s: product view %r != stored truth (d11 audit) %r" % (what, last[0], last[1]))
                return
            time.sleep(0.05)  # polling a condition, not waiting out a race
    finally:
        c.close()


def _run_phase(phase, ncycles, rng, seed, ck, stats):
    cells = rng.choice((2, 3))
    chunk = rng.choice((None, None, 3, 8))
    extra = ["--grant-chunk-max", str(chunk)] if chunk else []
    print("phase %d: %d cycles, %d cells, grant-chunk-max %s, order TTL %d ms"
          % (phase, ncycles, cells, chunk or "default", TTL_MS), flush=True)
    initial = {"HOT": rng.randint(30, 80), "HOT2": rng.randint(20, 50), "WARM": 400, "COLD": 100000}
    with Platform(cells=cells, order_ttl_ms=TTL_MS, durability="sync", extra_args=extra) as p:
        c = p.client()
        for sku, n in sorted(initial.items()):
            expect(c.create_product(sku, stock=n, price=100 + len(sku)), 201)
        c.close()
        ledger = AckLedger()
        users = spread_users(64, base=101 + phase)
        def new_load(k):
            return ChaosLoad(p.port, p.admin_token, users, ["HOT"] * 4 + ["HOT2"] * 2 + ["WARM"] * 2 + ["COLD"],
                             ledger=ledger, nthreads=8, seed=seed + phase * 1000 + k, conn_ok=True,
                             restock_sku="WARM", deadline_s=90, client_timeout_s=10).start()
        load = new_load(0)
        for cyc in range(ncycles):
            stats["cycles"] += 1
            n_cycle = stats["cycles"]
            window = rng.uniform(0.3, 1.5)
            victim = _pick(rng, _victims(cells))
            acked0 = len(ledger.orders)
            time.sleep(window)  # the random moment of the crash (not waiting for anything)
            if victim == "all":
                p.kill9_all()
                load.stop()  # no traffic after the restart: nothing but recovery may fix the view
                stats["kill all"] += 1
                st = _check_stored(p, ledger, ck, "cycle %d: crashed data (kill -9 of everything)"
                                   % n_cycle, initial, stats)
                log("cycle %d: stored %r" % (n_cycle, st["by_status"]))
                p.start(30)
            else:
                old = p.kill9(victim)
                load.stop()
                stats["kill " + victim.split("-")[0]] += 1
                poll(lambda: (lambda x: x and x != old and pid_alive(x))(p.pids().get(victim)), 30,
                     "the supervisor to restart %s (killed pid %d)" % (victim, old))
                p.wait_ready(30)
            # The creates whose answer the crash swallowed: the same key gives one order.
            rc = p.client()
            replayed, found = replay_unresolved(rc, ledger, limit=60, rng=rng, deadline_s=20)
            rc.close()
            stats["replayed keys"] += replayed
            print("cycle %3d: %-8s after %.2fs; acked %d orders this cycle (%d in all), %d unanswered"
                  " creates replayed (%d found placed)" % (n_cycle, victim, window, len(ledger.orders) - acked0,
                                                           len(ledger.orders), replayed, found), flush=True)
            if ledger.errors and len(ck.failures) < 5:
                ck.fail("cycle %d: %d contract violations seen by clients so far, first: %s"
                        % (n_cycle, len(ledger.errors), ledger.errors[:3]))
            # Quiescence after every restart: the product view equals the stored truth. The
            # load stopped at the kill, so only recovery (and the few replays above) can have
            # told the center what the cells hold.
            _view_matches_audit(p, sorted(initial), ck, "cycle %d (after %s)" % (n_cycle, victim), stats)
            load = new_load(cyc + 1)
        load.stop()
        # Quiet now. Every unanswered key once more, then let every pending order expire.
        rc = p.client()
        replayed, found = replay_unresolved(rc, ledger, deadline_s=60)
        stats["replayed keys"] += replayed
        with ledger.lock:
            last_exp = max([o["expires"] or 0 for o in ledger.orders.values()] + [0])
        poll(lambda: time.time() * 1000 > last_exp + 200, TTL_MS / 1000.0 + 5,
             "every acknowledged order to be past its expires_at")
        # Read back orders through the API: all with an unanswered op, plus a sample.
        with ledger.lock:
            oids = list(ledger.orders)
            amb = [o for o in oids if ledger.orders[o]["amb"]]
        sample = set(amb[:400]) | set(random.Random(seed).sample(oids, min(400, len(oids))))
        for oid in sorted(sample):
            r = rc.get_order(oid)
            if r.status != 200:
                ck.fail("phase %d: acknowledged order %s: %r" % (phase, oid, r))
                continue
            ledger.observe(oid, r.json.get("status"), r)
            if r.json.get("status") == "pending_payment":
                ck.fail("phase %d: order %s still pending after its expires_at: %r" % (phase, oid, r))
        stats["orders read back"] += len(sample)
        # The product figures converge to what the stored orders hold.
        with DbView(p) as v:
            held = v.held()
        for sku in sorted(initial):
            try:
                wait_product(rc, sku, lambda j, s=sku: j["stock_sold"] == held.get(s, 0)
                             and j["stock_sold"] <= j["stock_total"],
                             "GET product %s: stock_sold == %d units held by stored orders"
                             % (sku, held.get(sku, 0)), 15)
            except AssertionError as e:
                ck.fail("phase %d: %s" % (phase, e))
        rc.close()
        p.stop()
        st = _check_stored(p, ledger, ck, "phase %d: after a clean stop" % phase, initial, stats)
        ck.true(not ledger.errors, "phase %d: %d contract violations seen by clients: %s"
                % (phase, len(ledger.errors), "\n      ".join(ledger.errors[:10])))
        stats["acked orders"] += len(ledger.orders)
        stats["stored orders"] += st["orders"]
        stats["placed although answered 5xx/nothing"] += ledger.placed_late
        for how, k in ledger.placed_late_by.items():
            stats["placed although answered %s" % how] += k
        stats["placed by a retry of the same key"] += ledger.retry_created
        for k, n in ledger.counts.items():
            stats["answer " + k] += n
        sold_out = sum(1 for s in ("HOT", "HOT2") if st["held"].get(s, 0) == st["totals"].get(s))
        print("phase %d done: stored %r; held %r of %r (%d hot SKUs sold out at the end)"
              % (phase, st["by_status"], st["held"], st["totals"], sold_out), flush=True)


@heavy
@timeout(max(150, 60 + CYCLES * 8))
def test_crash_loop_keeps_every_invariant():
    seed, rng = seeded("D11_TEST_SEED", "crash loop, %d cycles" % CYCLES)
    stats = collections.Counter()
    t0 = time.monotonic()
    with Checks() as ck:
        phase = 0
        done = 0
        while done < CYCLES:
            n = min(PHASE_CYCLES, CYCLES - done)
            _run_phase(phase, n, rng, seed, ck, stats)
            done += n
            phase += 1
            if len(ck.failures) > 20:
                break
        print("crash loop: %d cycles in %.1fs, seed %d" % (stats["cycles"], time.monotonic() - t0, seed))
        for k in sorted(stats):
            print("  %-45s %d" % (k, stats[k]))
        ck.eq(stats["cycles"], CYCLES, "cycles run")
