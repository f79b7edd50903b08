/*
 * check.c — the simulator's invariants.
 *
 * After every step (cheap, from the live processes):
 *   - never oversell: for every (sku, shadow), the units the cells hold as COMMITTED sold
 *     never exceed what the center put on sale (`total`);
 *   - the cells' own invariant returned + sold <= granted is asserted inside the cell, the
 *     center's free + sum(granted - returned) == total inside the center (a violation
 *     aborts, which the simulator reports with the seed on stderr).
 * After quiescence (everything healed, reconnected, committed, reported):
 *   - the stored truth: every cell reopened from its store (recovery re-checks each
 *     ledger's sold against the stored orders) — sum of sold <= total;
 *   - the product view (the center's sum of reported sold) equals the stored truth;
 *   - conservation: free + sum over cells (granted - returned) == total: no units lost
 *     or made up in transit;
 *   - live memory equals storage: each live cell's sold == its committed sold == the
 *     recovered sold;
 *   - `d11 audit`'s checker (ctl/audit_check.c) over the memory stores: center invariant,
 *     per-cell bounds against the center's ledger, units in transit, sold == the units
 *     the stored orders hold, no duplicate idempotency key, totals == sum of items.
 * The client checks the rest on every reply and every recovery (client.c).
 */
#include "sim.h"

#include "../ctl/audit_check.h"
#include "../store/cell_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *SKUS[SIM_SKUS] = {"HOT-0", "SKU-1", "SKU-2", "SKU-3"};

static int sku_index(const char *p, size_t n)
{
    for (int k = 0; k < SIM_SKUS; k++)
        if (strlen(SKUS[k]) == n && memcmp(SKUS[k], p, n) == 0) return k;
    return -1;
}

void sim_note_commit(sim *s, int ci, const uint8_t *ops, size_t len, uint32_t nops)
{
    d11_wdec d;
    d11_wdec_init(&d, ops, len);
    cell_op op;
    for (uint32_t i = 0; i < nops; i++) {
        if (cell_op_next(&d, &op) < 0) {
            sim_fail(s, "cell %d committed a malformed record", ci);
            return;
        }
        if (op.kind != CELL_OP_STOCK) continue;
        int k = sku_index(op.u.stock.sku.p, op.u.stock.sku.n);
        if (s->trace)
            fprintf(stderr, "t=%lld cell %d committed %.*s/%u sold %llu\n", (long long)s->now, ci,
                    (int)op.u.stock.sku.n, op.u.stock.sku.p, op.u.stock.shadow, (unsigned long long)op.u.stock.sold);
        if (k >= 0 && op.u.stock.sold < SIM_SOLD_VALUES)
            s->committed_sold[ci][k][op.u.stock.shadow][op.u.stock.sold / 8] |= (uint8_t)(1u << (op.u.stock.sold % 8));
    }
}

static bool was_committed(const sim *s, int ci, int k, int sh, uint64_t v)
{
    if (v == 0 || v >= SIM_SOLD_VALUES) return true; /* 0: never sold; beyond the bitmap: not tracked */
    return s->committed_sold[ci][k][sh][v / 8] & (1u << (v % 8));
}

void sim_check_step(sim *s)
{
    s->stats.checks++;
    if (!s->center.up) return;
    for (int k = 0; k < SIM_SKUS; k++)
        for (int sh = 0; sh < 2; sh++) {
            uint64_t total, free_, reported;
            if (!center_ledger(s->center.c, SKUS[k], strlen(SKUS[k]), sh, &total, &free_, &reported)) continue;
            uint64_t sold = 0;
            for (int i = 0; i < s->ncells; i++) {
                uint64_t g, r, so, sc;
                if (s->cells[i].up && cell_ledger_view(s->cells[i].c, SKUS[k], strlen(SKUS[k]), sh, &g, &r, &so, &sc))
                    sold += sc;
            }
            if (sold > total)
                sim_fail(s, "OVERSOLD %s/%d: cells hold %llu committed, total %llu", SKUS[k], sh,
                         (unsigned long long)sold, (unsigned long long)total);
            for (int i = 0; i < s->ncells; i++) {
                uint64_t g, r, rep;
                if (center_ledger_cell(s->center.c, SKUS[k], strlen(SKUS[k]), sh, i, &g, &r, &rep) &&
                    !was_committed(s, i, k, sh, rep))
                    sim_fail(s, "the center heard sold %llu of %s/%d from cell %d, a value it never committed",
                             (unsigned long long)rep, SKUS[k], sh, i);
            }
        }
}

static void noop_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    (void)data, (void)peer, (void)frame, (void)n;
}
static void noop_center(void *data, const uint8_t *frame, size_t n) { (void)data, (void)frame, (void)n; }

void sim_check_quiet(sim *s)
{
    s->stats.quiescences++;
    cell *fresh[SIM_CELLS_MAX] = {0};
    for (int i = 0; i < s->ncells; i++) {
        cell_opts o;
        cell_opts_default(&o, i);
        o.orders_max = 100000;
        o.items_max = 300000;
        o.ledgers_max = 64;
        o.parked_max = 16;
        cell_host h = {.clock = &s->clock, .data = NULL, .send_peer = noop_peer, .send_center = noop_center};
        if (cell_open(&fresh[i], &o, &h, s->cells[i].st) < 0) {
            sim_fail(s, "cell %d's store does not recover after quiescence", i);
            goto out;
        }
    }
    for (int k = 0; k < SIM_SKUS; k++)
        for (int sh = 0; sh < 2; sh++) {
            const char *sku = SKUS[k];
            size_t n = strlen(sku);
            uint64_t total, free_, reported;
            if (!center_ledger(s->center.c, sku, n, sh, &total, &free_, &reported)) continue;
            uint64_t truth = 0, held = 0;
            for (int i = 0; i < s->ncells; i++) {
                uint64_t g = 0, r = 0, so = 0, sc = 0, lg, lr, lso, lsc;
                bool have = cell_ledger_view(fresh[i], sku, n, sh, &g, &r, &so, &sc);
                bool live = cell_ledger_view(s->cells[i].c, sku, n, sh, &lg, &lr, &lso, &lsc);
                if (have != live && (have ? g : lg) != 0)
                    sim_fail(s, "cell %d: %s/%d known %s but not %s", i, sku, sh, have ? "stored" : "live",
                             have ? "live" : "stored");
                if (live && (lso != lsc || (have && (lsc != so || lg != g || lr != r))))
                    sim_fail(s, "cell %d: %s/%d memory (g %llu r %llu sold %llu committed %llu) != storage (g %llu r %llu "
                                "sold %llu)",
                             i, sku, sh, (unsigned long long)lg, (unsigned long long)lr, (unsigned long long)lso,
                             (unsigned long long)lsc, (unsigned long long)g, (unsigned long long)r,
                             (unsigned long long)so);
                truth += so;
                held += g - r;
            }
            if (truth > total)
                sim_fail(s, "OVERSOLD %s/%d: stored sold %llu > total %llu", sku, sh, (unsigned long long)truth,
                         (unsigned long long)total);
            if (reported != truth && s->trace)
                for (int i = 0; i < s->ncells; i++) {
                    uint64_t g, r, rep, lg, lr, lso, lsc;
                    center_ledger_cell(s->center.c, sku, n, sh, i, &g, &r, &rep);
                    bool live = cell_ledger_view(s->cells[i].c, sku, n, sh, &lg, &lr, &lso, &lsc);
                    fprintf(stderr, "  cell %d: center granted %llu returned %llu reported %llu | cell %s g %llu r %llu sold %llu committed %llu\n",
                            i, (unsigned long long)g, (unsigned long long)r, (unsigned long long)rep, live ? "live" : "unknown",
                            (unsigned long long)lg, (unsigned long long)lr, (unsigned long long)lso, (unsigned long long)lsc);
                }
            if (reported != truth)
                sim_fail(s, "product view of %s/%d says sold %llu, the stored truth is %llu", sku, sh,
                         (unsigned long long)reported, (unsigned long long)truth);
            if (free_ + held != total)
                sim_fail(s, "conservation of %s/%d: free %llu + held by cells %llu != total %llu", sku, sh,
                         (unsigned long long)free_, (unsigned long long)held, (unsigned long long)total);
        }
    /* The stored data alone, through the loaders `d11 audit` uses: every invariant. */
    d11_store *stores[SIM_CELLS_MAX];
    for (int i = 0; i < s->ncells; i++) stores[i] = s->cells[i].st;
    d11_audit a;
    int rc = d11_audit_stores(s->center.st, stores, s->ncells, &a);
    if (rc < 0) sim_fail(s, "audit cannot read the stores: %s", d11_strerror(rc));
    else if (a.violations)
        sim_fail(s, "audit of the stored data: %d violations: %.*s", a.violations, (int)a.violations_json.len,
                 a.violations_json.data);
    d11_audit_release(&a);
out:
    for (int i = 0; i < s->ncells; i++) cell_free(fresh[i]);
}
