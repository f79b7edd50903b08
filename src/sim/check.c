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
 *     recovered sold.
 * The client checks the rest on every reply and every recovery (client.c).
 */
#include "sim.h"

#include <string.h>

static const char *SKUS[SIM_SKUS] = {"HOT-0", "SKU-1", "SKU-2", "SKU-3"};

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
            if (reported != truth)
                sim_fail(s, "product view of %s/%d says sold %llu, the stored truth is %llu", sku, sh,
                         (unsigned long long)reported, (unsigned long long)truth);
            if (free_ + held != total)
                sim_fail(s, "conservation of %s/%d: free %llu + held by cells %llu != total %llu", sku, sh,
                         (unsigned long long)free_, (unsigned long long)held, (unsigned long long)total);
        }
out:
    for (int i = 0; i < s->ncells; i++) cell_free(fresh[i]);
}
