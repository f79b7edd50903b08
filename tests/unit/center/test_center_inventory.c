/*
 * test_center_inventory.c — the center's inventory math (src/center/inventory.h): pure
 * functions, no center, no store.
 *
 * What is checked: grant sizing (share of free, want as a floor, chunk_max as a ceiling,
 * capped by free) over a table and over every small (free, want, ncells, chunk) — its
 * result always covers want when free does and never exceeds free; grant / return /
 * restock keep the invariant free + sum(granted - returned) == total; returns are
 * idempotent and a return beyond granted is refused without a change; reported sold
 * replaces the old value (lower too); reclaim targets (not the asker, not already asked,
 * only reachable cells holding unsold units); the parked-grant verdicts; and that the
 * invariant assertions fire (in a child process) when a caller breaks the rules.
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "center/inventory.h"
#include "core/limits.h"
#include "core/util.h"

#include "check.h"

static center_inv_cell cells[3];
static center_inv mk(uint64_t total)
{
    memset(cells, 0, sizeof cells);
    return (center_inv){.total = total, .free = total, .ncells = 3, .cells = cells};
}

static void test_grant_size(void)
{
    /* max(want, min(free / (2 * ncells), chunk)), capped by free */
    CHECK_EQ(center_inv_grant_size(100, 1, 3, 10), 10);    /* share 16 -> chunk 10 */
    CHECK_EQ(center_inv_grant_size(100, 1, 3, 1000), 16);  /* share 16 */
    CHECK_EQ(center_inv_grant_size(100, 30, 3, 10), 30);   /* want above the share */
    CHECK_EQ(center_inv_grant_size(5, 1, 3, 1000), 1);     /* share 0: want */
    CHECK_EQ(center_inv_grant_size(5, 5, 1, 1000), 5);
    CHECK_EQ(center_inv_grant_size(3, 5, 3, 10), 3);       /* free < want: capped (callers park instead) */
    CHECK_EQ(center_inv_grant_size(0, 1, 3, 10), 0);
    CHECK_EQ(center_inv_grant_size(1000000, 7, 64, 1000), 1000);
    int bad = 0;
    for (uint64_t free = 0; free <= 60; free++)
        for (uint64_t want = 1; want <= 20; want++)
            for (unsigned n = 1; n <= 4; n++)
                for (uint64_t chunk = 1; chunk <= 12; chunk += 5) {
                    uint64_t g = center_inv_grant_size(free, want, n, chunk);
                    bad += g > free;
                    bad += free >= want && g < want;
                    bad += g > (want > chunk ? want : chunk);
                }
    CHECK_EQ(bad, 0);
}

static void test_moves_keep_invariant(void)
{
    center_inv l = mk(20);
    center_inv_check(&l);
    center_inv_grant(&l, 0, 8);
    center_inv_grant(&l, 2, 5);
    CHECK_EQ(l.free, 7);
    CHECK_EQ(center_inv_out(&l), 13);
    CHECK_EQ(center_inv_return(&l, 0, 3), 3);
    CHECK_EQ(center_inv_return(&l, 0, 3), 0); /* repeat */
    CHECK_EQ(center_inv_return(&l, 0, 2), 0); /* older message */
    CHECK_EQ(l.free, 10);
    CHECK_EQ(center_inv_return(&l, 2, 6), D11_EPROTO); /* more than granted */
    CHECK_EQ(l.free, 10);
    CHECK_EQ(cells[2].returned, 0);
    CHECK_EQ(center_inv_restock(&l, 5), 0);
    CHECK(l.total == 25 && l.free == 15);
    CHECK_EQ(center_inv_restock(&l, (uint64_t)D11_STOCK_MAX), D11_ETOOBIG);
    CHECK(l.total == 25 && l.free == 15);
    center_inv_check(&l);

    CHECK(center_inv_set_sold(&l, 0, 4));
    CHECK(!center_inv_set_sold(&l, 0, 4));
    CHECK(center_inv_set_sold(&l, 0, 2)); /* lower: a report of committed sold after a crash */
    CHECK(center_inv_set_sold(&l, 2, 5));
    CHECK_EQ(center_inv_sold(&l), 7);
}

static void test_reclaim_targets(void)
{
    center_inv l = mk(30);
    center_inv_grant(&l, 0, 10);
    center_inv_grant(&l, 1, 10);
    center_inv_grant(&l, 2, 10);
    cells[0].sold = 10; /* all sold */
    cells[1].sold = 4;
    cells[2].sold = 9;
    uint64_t all = 7;
    CHECK_EQ(center_inv_reclaim_targets(&l, 0, 0, all), 2 | 4);
    CHECK_EQ(center_inv_reclaim_targets(&l, 1, 0, all), 4);       /* not the asker; cell 0 sold out */
    CHECK_EQ(center_inv_reclaim_targets(&l, 0, 2, all), 4);       /* cell 1 already asked */
    CHECK_EQ(center_inv_reclaim_targets(&l, 0, 0, 1 | 2), 2);     /* cell 2 not connected */
    CHECK_EQ(center_inv_return(&l, 2, 1), 1);                     /* cell 2: 9 out, 9 sold */
    CHECK_EQ(center_inv_reclaim_targets(&l, 0, 0, all), 2);
    cells[1].sold = 12; /* a report may run ahead of what the center knows: never a target */
    CHECK_EQ(center_inv_reclaim_targets(&l, 0, 0, all), 0);
}

static void test_pending(void)
{
    center_inv l = mk(5);
    CHECK(center_inv_grant_now(&l, 5, 0));
    CHECK(!center_inv_grant_now(&l, 6, 0));
    CHECK(!center_inv_grant_now(&l, 1, 1)); /* FIFO: someone is parked before */
    CHECK_EQ(center_inv_pend_verdict(5, 5, false), CENTER_PEND_GRANT);
    CHECK_EQ(center_inv_pend_verdict(5, 5, true), CENTER_PEND_GRANT);
    CHECK_EQ(center_inv_pend_verdict(4, 5, false), CENTER_PEND_WAIT);
    CHECK_EQ(center_inv_pend_verdict(4, 5, true), CENTER_PEND_SOLD_OUT);
}

/* Run fn in a child; true when it died of SIGABRT (a D11_ASSERT). */
static bool aborts(void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(2); /* keep the expected assertion message out of the test output */
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void grant_beyond_free(void)
{
    center_inv l = mk(3);
    center_inv_grant(&l, 1, 4);
}
static void broken_ledger(void)
{
    center_inv l = mk(10);
    cells[1].granted = 2; /* free was not lowered */
    center_inv_check(&l);
}
static void returned_above_granted(void)
{
    center_inv l = mk(10);
    l.free = 9;
    cells[0].granted = 0;
    cells[0].returned = 1;
    center_inv_check(&l);
}

static void test_asserts(void)
{
    CHECK(aborts(grant_beyond_free));
    CHECK(aborts(broken_ledger));
    CHECK(aborts(returned_above_granted));
}

int main(void)
{
    test_grant_size();
    test_moves_keep_invariant();
    test_reclaim_targets();
    test_pending();
    test_asserts();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
