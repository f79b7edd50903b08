/*
 * agg.c — folding order events into window deltas (see agg.h for windows, watermark and
 * lateness). A batch is an open-addressing hash of rows keyed by (kind, dim, start, key),
 * plus the list of used slots in first-use order, so the rows are applied to SQLite in a
 * deterministic order. Pure: no I/O, no clock. Thread: the caller's.
 */
#include "agg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../core/util.h"

const int64_t d11_stats_win_ms[D11_WIN_KINDS] = {1000, 60000, 86400000};
const int d11_stats_keep[D11_WIN_KINDS] = {D11_STATS_KEEP_1S, D11_STATS_KEEP_1M, D11_STATS_KEEP_DAY};
const char *const d11_stats_win_name[D11_WIN_KINDS] = {"1s", "1m", "day"};
const char *const d11_stats_col[D11_V_N] = {
    "orders_created", "orders_paid", "orders_cancelled", "orders_expired", "gmv_created_cents",
    "gmv_paid_cents", "units_created", "units_paid", "late",
};

int d11_stats_batch_init(d11_stats_batch *b)
{
    memset(b, 0, sizeof *b);
    b->slot = calloc(D11_STATS_BATCH_SLOTS, sizeof *b->slot);
    b->used_idx = calloc(D11_STATS_BATCH_SLOTS, sizeof *b->used_idx);
    if (!b->slot || !b->used_idx) {
        d11_stats_batch_free(b);
        return -ENOMEM;
    }
    return 0;
}

void d11_stats_batch_free(d11_stats_batch *b)
{
    free(b->slot);
    free(b->used_idx);
    b->slot = NULL;
    b->used_idx = NULL;
}

void d11_stats_batch_reset(d11_stats_batch *b, int64_t wm)
{
    for (int i = 0; i < b->nused; i++) b->slot[b->used_idx[i]].used = false;
    b->nused = 0;
    b->nevents = 0;
    b->wm = wm;
    memset(b->late, 0, sizeof b->late);
}

int64_t d11_stats_win_start(int kind, int64_t at)
{
    D11_ASSERT(kind >= 0 && kind < D11_WIN_KINDS && at >= 0);
    return at - at % d11_stats_win_ms[kind];
}

bool d11_stats_closed(int kind, int64_t start, int64_t wm)
{
    return wm >= start + d11_stats_win_ms[kind] + D11_STATS_LATENESS_MS;
}

static uint64_t row_hash(int kind, int dim, int64_t start, const char *key)
{
    uint64_t h = d11_hash64(key, strlen(key), (uint64_t)start * 31u + (uint64_t)(kind * 4 + dim));
    return h;
}

static d11_stats_row *lookup(const d11_stats_batch *b, int kind, int dim, int64_t start, const char *key, bool *found)
{
    uint32_t mask = D11_STATS_BATCH_SLOTS - 1, i = (uint32_t)row_hash(kind, dim, start, key) & mask;
    for (uint32_t probes = 0; probes < D11_STATS_BATCH_SLOTS; probes++, i = (i + 1) & mask) {
        d11_stats_row *r = &b->slot[i];
        if (!r->used) {
            *found = false;
            return r;
        }
        if (r->kind == kind && r->dim == dim && r->start == start && !strcmp(r->key, key)) {
            *found = true;
            return r;
        }
    }
    *found = false;
    return NULL;
}

const d11_stats_row *d11_stats_find(const d11_stats_batch *b, int kind, int dim, int64_t start, const char *key)
{
    bool found;
    const d11_stats_row *r = lookup(b, kind, dim, start, key, &found);
    return found ? r : NULL;
}

static d11_stats_row *row(d11_stats_batch *b, int kind, int dim, int64_t start, const char *key)
{
    bool found;
    d11_stats_row *r = lookup(b, kind, dim, start, key, &found);
    D11_ASSERT(r != NULL && b->nused < D11_STATS_BATCH_ROWS_MAX); /* sized for the worst page */
    if (!found) {
        memset(r, 0, sizeof *r);
        r->used = true;
        r->kind = (uint8_t)kind;
        r->dim = (uint8_t)dim;
        r->start = start;
        size_t n = strlen(key);
        D11_ASSERT(n <= D11_STATS_KEY_BYTES_MAX);
        memcpy(r->key, key, n + 1);
        b->used_idx[b->nused++] = (int)(r - b->slot);
    }
    return r;
}

/* The per-SKU / per-category part of a created or paid event. */
static void add_lines(d11_stats_batch *b, int kind, int64_t start, const d11_stats_event *e)
{
    int vc = e->type == D11_EV_CREATED ? D11_V_CREATED : D11_V_PAID;
    int vg = e->type == D11_EV_CREATED ? D11_V_GMV_CREATED : D11_V_GMV_PAID;
    int vu = e->type == D11_EV_CREATED ? D11_V_UNITS_CREATED : D11_V_UNITS_PAID;
    for (int i = 0; i < e->nlines; i++) {
        const d11_stats_line *l = &e->lines[i];
        d11_stats_row *s = row(b, kind, D11_DIM_SKU, start, l->sku);
        s->v[vc]++; /* a SKU appears at most once per order (API rule) */
        s->v[vu] += l->qty;
        s->v[vg] += l->price_cents * l->qty;
        /* a category counts an order once even when several of its lines share it */
        bool first = true;
        for (int j = 0; j < i && first; j++) first = strcmp(e->lines[j].cat, l->cat) != 0;
        d11_stats_row *c = row(b, kind, D11_DIM_CATEGORY, start, l->cat);
        if (first) c->v[vc]++;
        c->v[vu] += l->qty;
        c->v[vg] += l->price_cents * l->qty;
    }
}

void d11_stats_add(d11_stats_batch *b, const d11_stats_event *e)
{
    D11_ASSERT(b->nevents < D11_STATS_PAGE);
    D11_ASSERT(e->type >= 0 && e->type < D11_EV_TYPES && e->at >= 0);
    D11_ASSERT(e->nlines >= 0 && e->nlines <= D11_ORDER_ITEMS_MAX);
    b->nevents++;
    for (int k = 0; k < D11_WIN_KINDS; k++) {
        int64_t start = d11_stats_win_start(k, e->at);
        d11_stats_row *t = row(b, k, D11_DIM_TOTAL, start, "");
        uint64_t units = 0;
        for (int i = 0; i < e->nlines; i++) units += e->lines[i].qty;
        switch (e->type) {
        case D11_EV_CREATED:
            t->v[D11_V_CREATED]++;
            t->v[D11_V_GMV_CREATED] += e->total_cents;
            t->v[D11_V_UNITS_CREATED] += units;
            break;
        case D11_EV_PAID:
            t->v[D11_V_PAID]++;
            t->v[D11_V_GMV_PAID] += e->total_cents;
            t->v[D11_V_UNITS_PAID] += units;
            break;
        case D11_EV_CANCELLED: t->v[D11_V_CANCELLED]++; break;
        default: t->v[D11_V_EXPIRED]++; break;
        }
        if (d11_stats_closed(k, start, b->wm)) {
            t->v[D11_V_LATE]++;
            b->late[k]++;
        }
        if (e->type == D11_EV_CREATED || e->type == D11_EV_PAID) add_lines(b, k, start, e);
    }
    if (e->at > b->wm) b->wm = e->at;
}

int d11_stats_type(const char *name)
{
    static const char *const names[D11_EV_TYPES] = {"order.created", "order.paid", "order.cancelled", "order.expired"};
    for (int i = 0; i < D11_EV_TYPES; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}
