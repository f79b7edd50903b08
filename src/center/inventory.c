/*
 * inventory.c — the center's inventory math (see inventory.h). Pure; every change ends
 * with center_inv_check, every input that could break the invariant is checked first.
 */
#include "inventory.h"

#include "../core/limits.h"
#include "../core/util.h"

void center_inv_check(const center_inv *l)
{
    D11_ASSERT(l->ncells >= 1 && l->ncells <= D11_CELLS_MAX);
    D11_ASSERT(l->free <= l->total);
    uint64_t out = 0;
    for (unsigned c = 0; c < l->ncells; c++) {
        D11_ASSERT(l->cells[c].returned <= l->cells[c].granted);
        out += l->cells[c].granted - l->cells[c].returned;
    }
    D11_ASSERT(l->free + out == l->total);
}

uint64_t center_inv_sold(const center_inv *l)
{
    uint64_t s = 0;
    for (unsigned c = 0; c < l->ncells; c++) s += l->cells[c].sold;
    return s;
}

uint64_t center_inv_out(const center_inv *l)
{
    uint64_t out = 0;
    for (unsigned c = 0; c < l->ncells; c++) out += l->cells[c].granted - l->cells[c].returned;
    D11_ASSERT(out <= l->total);
    return out;
}

uint64_t center_inv_grant_size(uint64_t free, uint64_t want, unsigned ncells, uint64_t chunk_max)
{
    D11_ASSERT(ncells >= 1);
    uint64_t share = free / (2 * (uint64_t)ncells);
    if (share > chunk_max) share = chunk_max;
    uint64_t g = want > share ? want : share;
    g = g > free ? free : g;
    D11_ASSERT(g <= free && (free < want || g >= want));
    return g;
}

void center_inv_grant(center_inv *l, uint16_t cell, uint64_t n)
{
    D11_ASSERT(cell < l->ncells);
    D11_ASSERT(n <= l->free);
    uint64_t before = l->cells[cell].granted;
    l->free -= n;
    l->cells[cell].granted += n;
    D11_ASSERT(l->cells[cell].granted >= before);
    center_inv_check(l);
}

int64_t center_inv_return(center_inv *l, uint16_t cell, uint64_t returned_cum)
{
    D11_ASSERT(cell < l->ncells);
    center_inv_cell *cl = &l->cells[cell];
    if (returned_cum > cl->granted) return D11_EPROTO;
    if (returned_cum <= cl->returned) return 0; /* a repeat, or older than what we know */
    uint64_t back = returned_cum - cl->returned;
    l->free += back;
    cl->returned = returned_cum;
    center_inv_check(l);
    return (int64_t)back;
}

int center_inv_restock(center_inv *l, uint64_t qty)
{
    if (qty > (uint64_t)D11_STOCK_MAX || l->total + qty > (uint64_t)D11_STOCK_MAX) return D11_ETOOBIG;
    l->total += qty;
    l->free += qty;
    center_inv_check(l);
    return 0;
}

bool center_inv_set_sold(center_inv *l, uint16_t cell, uint64_t sold)
{
    D11_ASSERT(cell < l->ncells);
    if (l->cells[cell].sold == sold) return false;
    l->cells[cell].sold = sold;
    return true;
}

uint64_t center_inv_reclaim_targets(const center_inv *l, uint16_t except, uint64_t asked, uint64_t reachable)
{
    uint64_t ask = 0;
    for (unsigned c = 0; c < l->ncells; c++) {
        uint64_t bit = 1ULL << c;
        if (c == except || (asked & bit) || !(reachable & bit)) continue;
        const center_inv_cell *cl = &l->cells[c];
        if (cl->granted - cl->returned <= cl->sold) continue; /* nothing unsold there, as far as we know */
        ask |= bit;
    }
    D11_ASSERT(!(ask & asked));
    return ask;
}

bool center_inv_grant_now(const center_inv *l, uint64_t want, uint32_t npend)
{
    return npend == 0 && l->free >= want;
}

enum center_pend_verdict center_inv_pend_verdict(uint64_t free, uint64_t want, bool final)
{
    if (free >= want) return CENTER_PEND_GRANT;
    return final ? CENTER_PEND_SOLD_OUT : CENTER_PEND_WAIT;
}
