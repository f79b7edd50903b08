/*
 * audit.c — `d11 audit --data DIR`: check the four invariants of API.md against the
 * stored data of a stopped platform (or a copy of it). Read-only.
 *
 * For every (SKU, shadow) it checks:
 *   center    free + sum over cells (granted - returned) == total           (ledger)
 *   per cell  returned + sold <= granted (cell view), granted <= center's granted,
 *             returned >= center's returned (the difference is "in transit": returned
 *             by the cell, not yet acknowledged by the center)
 *   per cell  sold == units held by that cell's pending_payment + paid orders
 *   overall   sum of sold <= total                                  (never oversell)
 *             sold + held by cells + in transit + free == total     (conservation)
 * and per cell: no two orders share (user_id, idem_key) (never duplicate), every order
 * has items and total_cents equals the sum of its items, every status is a known one.
 * "Never lose an acknowledged order" needs the client's record of what was
 * acknowledged; the crash tests compare that against these tables.
 *
 * Prints a JSON report on stdout; exit 0 when everything holds, 1 on any violation.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "../cmd.h"
#include "../core/config.h"
#include "../core/limits.h"
#include "../core/util.h"

static int violations;
static d11_buf out;

static void violation(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void violation(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    d11_buf_puts(&out, violations ? "," : "");
    d11_buf_json_str(&out, msg, strlen(msg));
    violations++;
}

static sqlite3 *open_ro(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static int64_t scalar(sqlite3 *db, const char *sql, const char *a, int64_t b, int64_t c)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    if (a) sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, b);
    sqlite3_bind_int64(st, 3, c);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return v;
}

int d11_audit_main(int argc, char **argv)
{
    d11_config cfg;
    char err[256];
    d11_config_defaults(&cfg);
    if (d11_config_from_args(&cfg, argc, argv, err, sizeof err) < 0) {
        fprintf(stderr, "d11 audit: %s\n", err);
        return 2;
    }
    if (cfg.help) {
        printf("usage: d11 audit [--data DIR]\n\n"
               "Checks the invariants (never oversell, stock conservation, never duplicate) against\n"
               "the SQLite files in DIR. Run it on a stopped platform. Prints a JSON report; exits 0\n"
               "when every invariant holds, 1 on any violation.\n\n");
        d11_config_usage(stdout, "audit");
        return 0;
    }
    char path[1200];
    d11_config_path(&cfg, "center.db", path, sizeof path);
    sqlite3 *center = open_ro(path);
    if (!center) {
        fprintf(stderr, "d11 audit: cannot open %s\n", path);
        return 1;
    }
    int ncells = (int)scalar(center, "SELECT ncells FROM routing WHERE id = 1 AND ?2 = ?2 AND ?3 = ?3", NULL, 0, 0);
    if (ncells < 1 || ncells > D11_CELLS_MAX) {
        fprintf(stderr, "d11 audit: %s has no routing table\n", path);
        return 1;
    }
    sqlite3 *cells[D11_CELLS_MAX] = {0};
    for (int i = 0; i < ncells; i++) {
        char name[32];
        snprintf(name, sizeof name, "cell-%d.db", i);
        d11_config_path(&cfg, name, path, sizeof path);
        cells[i] = open_ro(path); /* a cell that never started has no file: it holds nothing */
    }
    d11_buf_init(&out, 4096);
    d11_buf_puts(&out, "{\"violations\":[");

    uint64_t skus = 0, orders_total = 0;
    sqlite3_stmt *st;
    sqlite3_prepare_v2(center, "SELECT sku, shadow, total, free FROM center_stock ORDER BY sku, shadow", -1, &st, NULL);
    d11_buf rows;
    d11_buf_init(&rows, 4096);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sku = (const char *)sqlite3_column_text(st, 0);
        int sh = sqlite3_column_int(st, 1);
        int64_t total = sqlite3_column_int64(st, 2), free_ = sqlite3_column_int64(st, 3);
        int64_t out_c = 0, sold = 0, held = 0, transit = 0;
        skus++;
        for (int c = 0; c < ncells; c++) {
            int64_t cg = scalar(center, "SELECT granted FROM ledger WHERE sku=?1 AND shadow=?2 AND cell=?3", sku, sh, c);
            int64_t cr = scalar(center, "SELECT returned FROM ledger WHERE sku=?1 AND shadow=?2 AND cell=?3", sku, sh, c);
            out_c += cg - cr;
            if (cr > cg) violation("%s/%d cell %d: center shows returned %lld > granted %lld", sku, sh, c, (long long)cr, (long long)cg);
            int64_t g = 0, r = 0, s = 0, held_orders = 0;
            if (cells[c]) {
                g = scalar(cells[c], "SELECT granted FROM stock WHERE sku=?1 AND shadow=?2 AND ?3=?3", sku, sh, 0);
                r = scalar(cells[c], "SELECT returned FROM stock WHERE sku=?1 AND shadow=?2 AND ?3=?3", sku, sh, 0);
                s = scalar(cells[c], "SELECT sold FROM stock WHERE sku=?1 AND shadow=?2 AND ?3=?3", sku, sh, 0);
                held_orders = scalar(cells[c],
                                     sh ? "SELECT coalesce(sum(i.quantity),0) FROM shadow_order_items i JOIN shadow_orders o"
                                          " ON o.order_id=i.order_id WHERE i.sku=?1 AND o.status IN"
                                          " ('pending_payment','paid') AND ?2=?2 AND ?3=?3"
                                        : "SELECT coalesce(sum(i.quantity),0) FROM order_items i JOIN orders o"
                                          " ON o.order_id=i.order_id WHERE i.sku=?1 AND o.status IN"
                                          " ('pending_payment','paid') AND ?2=?2 AND ?3=?3",
                                     sku, sh, 0);
            }
            if (r + s > g) violation("%s/%d cell %d: returned %lld + sold %lld > granted %lld", sku, sh, c, (long long)r, (long long)s, (long long)g);
            if (g > cg) violation("%s/%d cell %d: cell granted %lld > center granted %lld", sku, sh, c, (long long)g, (long long)cg);
            if (r < cr) violation("%s/%d cell %d: cell returned %lld < center returned %lld", sku, sh, c, (long long)r, (long long)cr);
            if (s != held_orders) violation("%s/%d cell %d: stock.sold %lld != units held by orders %lld", sku, sh, c, (long long)s, (long long)held_orders);
            sold += s;
            transit += r - cr;
            held += cg - r - s;
        }
        if (free_ < 0 || free_ + out_c != total)
            violation("%s/%d: center free %lld + allotted %lld != total %lld", sku, sh, (long long)free_, (long long)out_c, (long long)total);
        if (sold > total) violation("%s/%d: OVERSOLD: sold %lld > total %lld", sku, sh, (long long)sold, (long long)total);
        if (sold + held + transit + free_ != total)
            violation("%s/%d: sold %lld + held %lld + in transit %lld + free %lld != total %lld", sku, sh, (long long)sold,
                      (long long)held, (long long)transit, (long long)free_, (long long)total);
        d11_buf_puts(&rows, rows.len ? "," : "");
        d11_buf_puts(&rows, "{\"sku\":");
        d11_buf_json_str(&rows, sku, strlen(sku));
        d11_buf_printf(&rows, ",\"shadow\":%d,\"total\":%lld,\"sold\":%lld,\"held_by_cells\":%lld,\"in_transit\":%lld,\"free\":%lld}",
                       sh, (long long)total, (long long)sold, (long long)held, (long long)transit, (long long)free_);
    }
    sqlite3_finalize(st);
    for (int c = 0; c < ncells; c++) {
        if (!cells[c]) continue;
        for (int sh = 0; sh < 2; sh++) {
            const char *pre = sh ? "shadow_" : "";
            char sql[512];
            snprintf(sql, sizeof sql, "SELECT count(*) FROM (SELECT 1 FROM %sorders GROUP BY user_id, idem_key HAVING count(*) > 1) WHERE ?2=?2 AND ?3=?3", pre);
            int64_t dups = scalar(cells[c], sql, NULL, 0, 0);
            if (dups) violation("cell %d: %lld idempotency keys with more than one %sorder", c, (long long)dups, pre);
            /* One grouped pass (order_items has no index on order_id by design: a correlated
             * subquery would be quadratic). Orders with no items count as bad too. */
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM %sorders o LEFT JOIN (SELECT order_id, sum(quantity*price_cents) AS s"
                     " FROM %sorder_items GROUP BY order_id) t ON t.order_id = o.order_id"
                     " WHERE t.s IS NULL OR t.s != o.total_cents AND ?2=?2 AND ?3=?3", pre, pre);
            int64_t bad = scalar(cells[c], sql, NULL, 0, 0);
            if (bad) violation("cell %d: %lld %sorders whose total_cents is not the sum of their items", c, (long long)bad, pre);
            snprintf(sql, sizeof sql,
                     "SELECT count(*) FROM %sorders WHERE status NOT IN ('pending_payment','paid','cancelled','expired') AND ?2=?2 AND ?3=?3", pre);
            bad = scalar(cells[c], sql, NULL, 0, 0);
            if (bad) violation("cell %d: %lld %sorders with an unknown status", c, (long long)bad, pre);
            snprintf(sql, sizeof sql, "SELECT count(*) FROM %sorders WHERE ?2=?2 AND ?3=?3", pre);
            if (!sh) orders_total += (uint64_t)scalar(cells[c], sql, NULL, 0, 0);
        }
    }
    d11_buf_printf(&out, "],\"ok\":%s,\"cells\":%d,\"skus\":%llu,\"orders\":%llu,\"stock\":[", violations ? "false" : "true",
                   ncells, (unsigned long long)skus, (unsigned long long)orders_total);
    d11_buf_append(&out, rows.data ? rows.data : "", rows.len);
    d11_buf_puts(&out, "]}\n");
    fwrite(out.data, 1, out.len, stdout);
    for (int c = 0; c < ncells; c++) sqlite3_close(cells[c]);
    sqlite3_close(center);
    d11_buf_free(&rows);
    d11_buf_free(&out);
    return violations ? 1 : 0;
}
