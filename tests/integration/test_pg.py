"""
test_pg.py — d11 on PostgreSQL (issue 10, docs/postgresql.md): every test starts its own
PostgreSQL 15 (harness.Postgres: initdb in a temp dir, own port, fsync on) and a platform
whose d11.conf says `store = postgresql://...`, so cells, center and `d11 audit` all use it.

  api walk          products, orders create / pay / cancel / get / list, idempotency across
                    a restart, rows in d11_cell_<i> / d11_center, migrations recorded
  placement         cell 1 on another database (store-cells), the rest on the first
  hot SKU           exact sell-out across cells, one stock row per (sku, shadow) per cell
  kill -9           of everything under load, audit on the crashed data, restart: no
                    acknowledged order lost, no key twice (@heavy)
  PostgreSQL crash  pg_ctl stop -m immediate under load: requests get 5xx, nothing
                    acknowledged is lost, service resumes once it is back (@heavy)
"""

import time

from harness import (Checks, Ledger, OrderLoad, Postgres, check_audit, expect, heavy, new_key,
                     pg_holding, pg_no_duplicate_keys, pg_platform, poll, spread_users, timeout,
                     verify_acked_orders, verify_idempotent_replay, wait_product)


@timeout(90)
def test_pg_api_walk_and_restart():
    with Postgres() as pg, pg_platform(pg, cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("A", stock=100, price=1999), 201)
        expect(c.create_product("B", stock=5, price=250), 201)
        ck.status(c.product("A"), 200, "GET product A")
        users = spread_users(8, base=3)
        made = {}
        for u in users:
            key = new_key()
            r = c.order(u, [("A", 2), ("B", 1)] if u == users[0] else [("A", 1)], key)
            if ck.status(r, 201, "create for user %d" % u):
                made[r.json["order_id"]] = (u, key, r.json)
        oids = sorted(made)
        ck.status(c.pay(oids[0], "pay-1"), 200, "pay")
        ck.status(c.cancel(oids[1]), 200, "cancel")
        ck.status(c.pay(oids[1], "pay-2"), 409, "pay after cancel")
        u0 = made[oids[0]][0]
        lst = c.get("/v1/users/%d/orders" % u0)
        ck.status(lst, 200, "list")
        ck.true(oids[0] in [o.get("order_id") for o in (lst.json or {}).get("orders", [])],
                "order %s in its user's list" % oids[0])
        # Rows are in PostgreSQL, in the cell schemas (not in SQLite files).
        stored = sum(int(pg.psql("SELECT count(*) FROM d11_cell_%d.orders" % i)[0][0]) for i in range(2))
        ck.eq(stored, len(made), "orders stored in d11_cell_0 + d11_cell_1")
        ck.eq(pg.psql("SELECT max(version) FROM d11_center.migrations"), [["2"]], "center migrations")
        ck.true(["product.created"] in pg.psql("SELECT type FROM d11_center.center_outbox"),
                "the center's outbox (migration 2) holds product.created, written with the product")
        ck.eq(pg.psql("SELECT status, payment_id FROM d11_cell_%d.orders WHERE order_id = %s"
                      % (_cell_of(pg, oids[0]), oids[0])), [["paid", "pay-1"]], "paid row")
        ck.true(all(int(pg.psql("SELECT seq FROM d11_cell_%d.batch_seq" % i)[0][0]) > 0 for i in range(2)),
                "batch_seq moved in every cell")
        import os
        ck.true(not [n for n in os.listdir(p.data) if n.endswith(".db") and n != "stats.db"],
                "no SQLite file in the data dir (stats.db: the gateway's live-numbers aggregator, docs/stats.md)")
        p.restart()
        c = p.client()
        for oid, (u, key, body) in made.items():
            r = c.get_order(oid)
            ck.status(r, 200, "GET %s after restart" % oid)
            items = [(it["sku"], it["quantity"]) for it in body["items"]]
            r2 = c.order(u, items, key)
            ck.true(r2.status in (200, 201) and r2.json.get("order_id") == oid,
                    "same key after restart returns %s: %r" % (oid, r2))
        ck.eq(c.get_order(oids[0]).json.get("status"), "paid", "paid after restart")
        ck.eq(c.get_order(oids[1]).json.get("status"), "cancelled", "cancelled after restart")
        wait_product(c, "B", lambda j: j["stock_sold"] == 1, "B sold 1 after restart")
        p.stop()
        pg_no_duplicate_keys(pg, 2, ck)
        check_audit(p, ck, "d11 audit --store")


def _cell_of(pg, oid):
    for i in range(2):
        if pg.psql("SELECT 1 FROM d11_cell_%d.orders WHERE order_id = %s" % (i, oid)):
            return i
    return 0


@timeout(90)
def test_pg_placement_cell_on_another_database():
    with Postgres() as pg:
        pg.psql("CREATE DATABASE other")
        p = pg_platform(pg, cells=2)
        with open(p.data + "/d11.conf", "a") as f:
            f.write("store-cells = %s %s\n" % (pg.url(), pg.url("other")))
        with p, Checks() as ck:
            c = p.client()
            expect(c.create_product("A", stock=50, price=100), 201)
            for u in spread_users(6, base=11):
                ck.status(c.order(u, [("A", 1)], new_key()), 201, "create for user %d" % u)
            p.stop()
            import subprocess, os
            from harness import PG_BIN
            cp = subprocess.run([os.path.join(PG_BIN, "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(pg.port),
                                 "-U", "d11", "-d", "other", "-c", "SELECT count(*) FROM d11_cell_1.orders"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            ck.true(cp.returncode == 0 and int(cp.stdout or 0) > 0,
                    "cell 1's orders in database other: %r" % (cp.stdout + cp.stderr))
            ck.eq(pg.psql("SELECT count(*) FROM pg_namespace WHERE nspname = 'd11_cell_1'"), [["0"]],
                  "no d11_cell_1 schema in the first database")
            check_audit(p, ck, "d11 audit with store-cells")


@timeout(120)
def test_pg_hot_sku_exact_sellout():
    stock = 200
    with Postgres() as pg, pg_platform(pg, cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("HOT", stock=stock, price=9900), 201)
        load = OrderLoad(p.port, p.admin_token, spread_users(64), [("HOT", 1)], nthreads=16, oos_stop=3,
                         max_requests=stock * 3, deadline_s=60)
        ledger = load.start().join(90)
        print("answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        ck.eq(len(ledger.unanswered), 0, "unanswered creates")
        ck.eq(len(ledger.orders), stock, "201s for %d units" % stock)
        wait_product(c, "HOT", lambda j: j["stock_sold"] == stock and j["stock_available"] == 0,
                     "GET HOT: sold %d" % stock)
        ck.eq(pg_holding(pg, "HOT", 2), stock, "units held by orders stored in PostgreSQL")
        for i in range(2):
            ck.eq(pg.psql("SELECT count(*) FROM d11_cell_%d.stock WHERE sku = 'HOT' AND shadow = 0" % i), [["1"]],
                  "cell %d: one stock row for HOT (one row update per batch, not per order)" % i)
        p.stop()
        check_audit(p, ck, "d11 audit --store after the sell-out")


@heavy
@timeout(180)
def test_pg_kill9_everything_loses_no_acked_order():
    with Postgres() as pg, pg_platform(pg, cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("C", stock=1000, price=100), 201)
        users = spread_users(64, base=9)
        ledgers = []
        for rnd, at in ((1, 60), (2, 120)):
            load = OrderLoad(p.port, p.admin_token, users, [("C", 1)], nthreads=16, pay_every=3,
                             cancel_every=4, max_requests=3000, deadline_s=60, oos_stop=3).start()
            poll(lambda: load.ledger.acked() >= at, 40, "%d acknowledged orders" % at, 0.002)
            p.kill9_all()
            ledger = load.stop()
            ledgers.append(ledger)
            print("round %d: acked %d; answers %r" % (rnd, len(ledger.orders), ledger.counts))
            ck.true(not ledger.errors, "round %d: unexpected answers: %s" % (rnd, ledger.errors[:5]))
            check_audit(p, ck, "d11 audit --store on the crashed data (round %d)" % rnd)
            ck.true(pg_holding(pg, "C", 2) <= 1000, "round %d: oversold" % rnd)
            p.start()
            for lg in ledgers:
                verify_acked_orders(p, lg, ck)
            verify_idempotent_replay(p, ledger, ck)
        p.stop()
        pg_no_duplicate_keys(pg, 2, ck)
        check_audit(p, ck, "d11 audit --store after the crashes")


@heavy
@timeout(180)
def test_pg_server_crash_under_load():
    with Postgres() as pg, pg_platform(pg, cells=2, durability="sync") as p, Checks() as ck:
        c = p.client()
        expect(c.create_product("R", stock=5000, price=100), 201)
        users = spread_users(64, base=21)
        ledger = Ledger()
        load = OrderLoad(p.port, p.admin_token, users, [("R", 1)], nthreads=12, pay_every=3,
                         max_requests=100000, deadline_s=120, retries=0, ledger=ledger).start()
        poll(lambda: ledger.acked() >= 100, 40, "100 acknowledged orders before the crash", 0.002)
        pg.stop("immediate")  # the server dies: no checkpoint, WAL replay on start
        before = ledger.acked()
        poll(lambda: sum(v for k, v in ledger.counts.items() if k.startswith("5") or k == "conn") >= 5, 30,
             "5xx answers while PostgreSQL is down")
        time.sleep(1.0)  # keep it down for a while under load (not a race: we measure both sides)
        down_acked = ledger.acked() - before
        pg.start()
        t0 = time.monotonic()
        poll(lambda: ledger.acked() >= before + down_acked + 50, 60, "50 new acknowledged orders after restart",
             0.01)
        print("service resumed %.2fs after PostgreSQL was back; acked while down: %d" %
              (time.monotonic() - t0, down_acked))
        ledger = load.stop()
        print("answers: %r" % ledger.counts)
        ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
        ck.true(down_acked <= 12, "orders acknowledged while PostgreSQL was down: %d (in-flight only)" % down_acked)
        verify_acked_orders(p, ledger, ck)
        verify_idempotent_replay(p, ledger, ck)
        p.stop()
        pg_no_duplicate_keys(pg, 2, ck)
        check_audit(p, ck, "d11 audit --store after the PostgreSQL crash")


@timeout(60)
def test_pg_store_unit_test_against_the_server():
    """tests/unit/store/test_pg_store.c skips without a server; here it runs on one."""
    import os
    import subprocess
    from harness import REPO, Skip
    build = os.environ.get("D11_TEST_BUILD", "build")
    binp = os.path.join(REPO, build, "tests", "test_pg_store")
    if not os.path.exists(binp):
        raise Skip("%s not built (make test-bins)" % binp)
    with Postgres() as pg:
        env = dict(os.environ, D11_PG_URL=pg.url())
        cp = subprocess.run([binp], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=60)
        out = cp.stdout.decode(errors="replace")
        print(out[-3000:])
        assert cp.returncode == 0, "test_pg_store exited %d:\n%s" % (cp.returncode, out[-3000:])
        assert " 0 failed" in out and "skipped" not in out, out[-500:]


@heavy
@timeout(180)
def test_pg_failover_to_synchronous_standby_loses_no_acked_order():
    """Primary + synchronous standby (synchronous_standby_names = 'ANY 1 (standby1)'), d11
    on a multi-host URL with target_session_attrs=read-write. Kill -9-like stop of the
    primary under load, promote the standby: d11 reconnects to it, every acknowledged
    order is there, the audit passes."""
    with Postgres() as pg1, Postgres(autostart=False) as pg2:
        pg2.standby_of(pg1)
        pg1.psql("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (standby1)'")
        pg1.psql("SELECT pg_reload_conf()")
        poll(lambda: pg1.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby1'")
             == [["quorum"]], 30, "standby1 streaming as a synchronous (quorum) standby")
        url = ("postgresql://d11@127.0.0.1:%d,127.0.0.1:%d/d11?target_session_attrs=read-write&connect_timeout=2"
               % (pg1.port, pg2.port))
        p = pg_platform(pg1, cells=2, durability="sync")
        with open(p.data + "/d11.conf", "w") as f:
            f.write("store = %s\n" % url)
        with p, Checks() as ck:
            c = p.client()
            expect(c.create_product("F", stock=100000, price=100), 201)
            ledger = Ledger()
            load = OrderLoad(p.port, p.admin_token, spread_users(64, base=5), [("F", 1)], nthreads=12,
                             pay_every=3, max_requests=100000, deadline_s=120, retries=0, ledger=ledger).start()
            poll(lambda: ledger.acked() >= 150, 40, "150 acknowledged orders on the primary", 0.002)
            t_kill = time.monotonic()
            pg1.stop("immediate")
            acked_at_kill = ledger.acked()
            pg2.promote()
            poll(lambda: ledger.acked() >= acked_at_kill + 20, 90, "acknowledged orders on the promoted standby", 0.01)
            t_first = time.monotonic() - t_kill
            p.wait_ready(90)  # every cell and the center reconnected (readyz 200)
            print("failover: %.2f s from the primary's stop to 20 acknowledged orders on the new primary,"
                  " %.2f s to every process serving again" % (t_first, time.monotonic() - t_kill))
            ledger = load.stop()
            print("answers: %r" % ledger.counts)
            ck.true(not ledger.errors, "unexpected answers: %s" % ledger.errors[:5])
            verify_acked_orders(p, ledger, ck)
            verify_idempotent_replay(p, ledger, ck)
            p.stop()
            pg_no_duplicate_keys(pg2, 2, ck)
            check_audit(p, ck, "d11 audit --store after the failover")
