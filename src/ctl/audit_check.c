/*
 * audit_check.c — the invariant checker over stored data (see audit_check.h).
 *
 * Memory: one row per (sku, shadow, cell) and one small record per order (status, the
 * range of its items); keys of the idempotency check are hashed into a map with a
 * chain check on collision. Built for one run, freed at the end.
 */
#include "audit_check.h"
#include "../core/map.h"
#include "../store/cell_ops.h"
#include "../store/center_ops.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct acell_ledger {
    uint64_t granted, returned, sold; /* the cell's stock row */
    uint64_t held;                    /* units of pending + paid orders */
    uint64_t cgranted, creturned;     /* the center's ledger row for this cell */
    bool     cell_row, center_row;
} acell_ledger;

typedef struct akey {
    char         sku[D11_SKU_BYTES_MAX + 1];
    uint8_t      shadow;
    bool         center_stock;
    uint64_t     total, free;
    acell_ledger cells[D11_CELLS_MAX];
} akey;

typedef struct aorder {
    uint64_t id, total;
    uint32_t first_item, nitems;
    uint8_t  status, shadow;
} aorder;

typedef struct aitem {
    uint32_t key;
    uint32_t qty;
    uint64_t price;
} aitem;

typedef struct actx {
    d11_audit *a;
    akey      *keys;
    size_t     nkeys, capkeys;
    d11_smap   key_of; /* shadow byte + sku -> keys index */
    int        cell;   /* the cell being loaded, -1 for the center */
    aorder    *orders;
    size_t     norders, caporders;
    aitem     *items;
    size_t     nitems, capitems;
    d11_imap   order_of; /* order id -> orders index (per cell) */
    d11_smap   idem;     /* shadow + user + key -> 1 (per cell) */
} actx;

static void violation(d11_audit *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(d11_audit *a, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (a->violations) d11_buf_puts(&a->violations_json, ",");
    d11_buf_json_str(&a->violations_json, msg, strlen(msg));
    a->violations++;
}

static void *grow(void *p, size_t *cap, size_t n, size_t esz)
{
    if (n < *cap) return p;
    *cap = *cap ? *cap * 2 : 64;
    p = realloc(p, *cap * esz);
    if (!p) d11_fatal("out of memory");
    return p;
}

static uint32_t key_get(actx *x, const char *sku, size_t n, int shadow)
{
    char k[D11_SKU_BYTES_MAX + 1];
    k[0] = (char)shadow;
    memcpy(k + 1, sku, n);
    uint64_t v;
    if (d11_smap_get(&x->key_of, k, n + 1, &v)) return (uint32_t)v;
    x->keys = grow(x->keys, &x->capkeys, x->nkeys, sizeof *x->keys);
    akey *r = &x->keys[x->nkeys];
    memset(r, 0, sizeof *r);
    memcpy(r->sku, sku, n);
    r->shadow = (uint8_t)shadow;
    d11_smap_put(&x->key_of, k, n + 1, x->nkeys);
    return (uint32_t)x->nkeys++;
}

static int apply_center(void *ctx, const uint8_t *recs, size_t len, uint32_t nrecs)
{
    actx *x = ctx;
    size_t off = 0;
    for (uint32_t i = 0; i < nrecs; i++) {
        size_t rl;
        center_op op;
        if (center_op_next(recs + off, len - off, &rl) < 0 || center_op_dec(recs + off, rl, &op) < 0)
            return D11_EPROTO;
        off += rl;
        if (op.type == CENTER_OP_ROUTING) {
            x->a->ncells = op.u.routing.ncells;
        } else if (op.type == CENTER_OP_STOCK) {
            uint32_t ki = key_get(x, op.u.stock.sku.p, op.u.stock.sku.n, op.u.stock.shadow); /* may move keys */
            akey *k = &x->keys[ki];
            k->center_stock = true;
            k->total = op.u.stock.total;
            k->free = op.u.stock.free;
        } else if (op.type == CENTER_OP_LEDGER) {
            if (op.u.ledger.cell >= D11_CELLS_MAX) return D11_EPROTO;
            uint32_t ki = key_get(x, op.u.ledger.sku.p, op.u.ledger.sku.n, op.u.ledger.shadow); /* may move keys */
            akey *k = &x->keys[ki];
            acell_ledger *l = &k->cells[op.u.ledger.cell];
            l->center_row = true;
            l->cgranted = op.u.ledger.granted;
            l->creturned = op.u.ledger.returned;
        }
    }
    return off == len ? 0 : D11_EPROTO;
}

static int apply_cell(void *ctx, const uint8_t *recs, size_t len, uint32_t nrecs)
{
    actx *x = ctx;
    d11_wdec d;
    d11_wdec_init(&d, recs, len);
    cell_op op;
    for (uint32_t i = 0; i < nrecs; i++) {
        if (cell_op_next(&d, &op) < 0) return D11_EPROTO;
        switch (op.kind) {
        case CELL_OP_STOCK: {
            const cell_op_stock *s = &op.u.stock;
            uint32_t ki = key_get(x, s->sku.p, s->sku.n, s->shadow); /* may move keys */
            acell_ledger *l = &x->keys[ki].cells[x->cell];
            l->cell_row = true;
            l->granted = s->granted;
            l->returned = s->returned;
            l->sold = s->sold;
            break;
        }
        case CELL_OP_ORDER_INSERT: {
            const cell_op_order *o = &op.u.order;
            char k[9 + D11_IDEM_KEY_BYTES_MAX];
            k[0] = (char)o->shadow;
            memcpy(k + 1, &o->user_id, 8);
            memcpy(k + 9, o->idem.p, o->idem.n);
            uint64_t v;
            if (d11_smap_get(&x->idem, k, 9 + o->idem.n, &v))
                violation(x->a, "cell %d: idempotency key of user %llu used by two %sorders (%llu and %llu)", x->cell,
                          (unsigned long long)o->user_id, o->shadow ? "shadow " : "", (unsigned long long)v,
                          (unsigned long long)o->id);
            else d11_smap_put(&x->idem, k, 9 + o->idem.n, o->id);
            if (d11_imap_get(&x->order_of, o->id, &v)) {
                violation(x->a, "cell %d: order %llu stored twice", x->cell, (unsigned long long)o->id);
                break;
            }
            x->orders = grow(x->orders, &x->caporders, x->norders, sizeof *x->orders);
            aorder *r = &x->orders[x->norders];
            *r = (aorder){o->id, o->total, (uint32_t)x->nitems, o->nitems, o->status, o->shadow};
            uint64_t sum = 0;
            for (uint32_t k2 = 0; k2 < o->nitems; k2++) {
                uint32_t ki = key_get(x, o->items[k2].sku.p, o->items[k2].sku.n, o->shadow);
                x->items = grow(x->items, &x->capitems, x->nitems, sizeof *x->items);
                x->items[x->nitems++] = (aitem){ki, o->items[k2].qty, o->items[k2].price};
                sum += o->items[k2].price * o->items[k2].qty;
            }
            if (sum != o->total)
                violation(x->a, "cell %d: order %llu total_cents %llu is not the sum of its items %llu", x->cell,
                          (unsigned long long)o->id, (unsigned long long)o->total, (unsigned long long)sum);
            d11_imap_put(&x->order_of, o->id, x->norders++);
            break;
        }
        case CELL_OP_ORDER_UPDATE: {
            uint64_t v;
            if (!d11_imap_get(&x->order_of, op.u.update.id, &v)) {
                violation(x->a, "cell %d: status of unknown order %llu", x->cell, (unsigned long long)op.u.update.id);
                break;
            }
            x->orders[v].status = op.u.update.status;
            break;
        }
        case CELL_OP_OUTBOX: break;
        }
    }
    return d11_wdec_done(&d) ? 0 : D11_EPROTO;
}

int d11_audit_stores(d11_store *center, d11_store *const *cells, int ncells, d11_audit *a)
{
    memset(a, 0, sizeof *a);
    d11_buf_init(&a->violations_json, 1024);
    D11_ASSERT(ncells >= 1 && ncells <= D11_CELLS_MAX);
    actx x = {.a = a, .cell = -1};
    d11_smap_init(&x.key_of, 256);
    int rc = d11_store_load(center, apply_center, &x);
    for (int c = 0; c < ncells && rc == 0; c++) {
        if (!cells[c]) continue;
        x.cell = c;
        x.norders = x.nitems = 0;
        d11_imap_init(&x.order_of, 1024);
        d11_smap_init(&x.idem, 1024);
        rc = d11_store_load(cells[c], apply_cell, &x);
        for (size_t i = 0; i < x.norders && rc == 0; i++) {
            const aorder *o = &x.orders[i];
            if (!o->shadow) a->orders++;
            if (o->status != ST_PENDING && o->status != ST_PAID) continue;
            for (uint32_t k = 0; k < o->nitems; k++) {
                const aitem *it = &x.items[o->first_item + k];
                x.keys[it->key].cells[c].held += it->qty;
            }
        }
        d11_imap_free(&x.order_of);
        d11_smap_free(&x.idem);
    }
    if (rc < 0) goto out;
    a->rows = calloc(x.nkeys ? x.nkeys : 1, sizeof *a->rows);
    if (!a->rows) d11_fatal("out of memory");
    for (size_t i = 0; i < x.nkeys; i++) {
        const akey *k = &x.keys[i];
        const char *sku = k->sku;
        int sh = k->shadow;
        if (!k->center_stock) {
            violation(a, "%s/%d: held by a cell but unknown to the center", sku, sh);
            continue;
        }
        uint64_t out_c = 0, sold = 0, held = 0, transit = 0;
        for (int c = 0; c < D11_CELLS_MAX; c++) { /* a cell without a store holds nothing */
            const acell_ledger *l = &k->cells[c];
            out_c += l->cgranted - l->creturned;
            if (l->creturned > l->cgranted)
                violation(a, "%s/%d cell %d: center shows returned %llu > granted %llu", sku, sh, c,
                          (unsigned long long)l->creturned, (unsigned long long)l->cgranted);
            if (l->returned + l->sold > l->granted)
                violation(a, "%s/%d cell %d: returned %llu + sold %llu > granted %llu", sku, sh, c,
                          (unsigned long long)l->returned, (unsigned long long)l->sold, (unsigned long long)l->granted);
            if (l->granted > l->cgranted)
                violation(a, "%s/%d cell %d: cell granted %llu > center granted %llu", sku, sh, c,
                          (unsigned long long)l->granted, (unsigned long long)l->cgranted);
            if (l->returned < l->creturned)
                violation(a, "%s/%d cell %d: cell returned %llu < center returned %llu", sku, sh, c,
                          (unsigned long long)l->returned, (unsigned long long)l->creturned);
            if (l->sold != l->held)
                violation(a, "%s/%d cell %d: stock.sold %llu != units held by orders %llu", sku, sh, c,
                          (unsigned long long)l->sold, (unsigned long long)l->held);
            sold += l->sold;
            transit += l->returned - l->creturned;
            held += l->cgranted - l->returned - l->sold;
        }
        if (k->free + out_c != k->total)
            violation(a, "%s/%d: center free %llu + allotted %llu != total %llu", sku, sh, (unsigned long long)k->free,
                      (unsigned long long)out_c, (unsigned long long)k->total);
        if (sold > k->total)
            violation(a, "%s/%d: OVERSOLD: sold %llu > total %llu", sku, sh, (unsigned long long)sold,
                      (unsigned long long)k->total);
        if (sold + held + transit + k->free != k->total)
            violation(a, "%s/%d: sold %llu + held %llu + in transit %llu + free %llu != total %llu", sku, sh,
                      (unsigned long long)sold, (unsigned long long)held, (unsigned long long)transit,
                      (unsigned long long)k->free, (unsigned long long)k->total);
        d11_audit_row *r = &a->rows[a->nrows++];
        memcpy(r->sku, sku, sizeof r->sku);
        r->shadow = sh;
        r->total = k->total;
        r->free = k->free;
        r->sold = sold;
        r->held = held;
        r->transit = transit;
    }
out:
    free(x.keys);
    free(x.orders);
    free(x.items);
    d11_smap_free(&x.key_of);
    return rc;
}

void d11_audit_release(d11_audit *a)
{
    d11_buf_free(&a->violations_json);
    free(a->rows);
    memset(a, 0, sizeof *a);
}

const d11_audit_row *d11_audit_find(const d11_audit *a, const char *sku, size_t n, int shadow)
{
    for (size_t i = 0; i < a->nrows; i++)
        if (a->rows[i].shadow == shadow && strlen(a->rows[i].sku) == n && memcmp(a->rows[i].sku, sku, n) == 0)
            return &a->rows[i];
    return NULL;
}
