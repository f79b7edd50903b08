/*
 * catalog.c — the center's products and their ledgers in memory (see catalog.h).
 */
#include "catalog.h"

#include <stdlib.h>
#include <ctype.h>
#include <string.h>

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) d11_fatal("center: out of memory");
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s ? s : "", s ? n : 0);
    if (!p) d11_fatal("center: out of memory");
    return p;
}

void center_catalog_init(center_catalog *cat, uint16_t ncells)
{
    D11_ASSERT(ncells >= 1 && ncells <= D11_CELLS_MAX);
    memset(cat, 0, sizeof *cat);
    cat->ncells = ncells;
    d11_smap_init(&cat->by_sku, 1024);
}

void center_catalog_release(center_catalog *cat)
{
    for (size_t i = 0; i < cat->n; i++) {
        center_product *p = cat->v[i];
        for (int s = 0; s < 2; s++) {
            free(p->st[s].inv.cells);
            free(p->st[s].pend);
        }
        free(p->title);
        free(p->category);
        free(p);
    }
    free(cat->v);
    d11_smap_free(&cat->by_sku);
    memset(cat, 0, sizeof *cat);
}

size_t center_catalog_add(center_catalog *cat, const char *sku, size_t skun)
{
    D11_ASSERT(skun >= 1 && skun <= D11_SKU_BYTES_MAX);
    D11_ASSERT(!center_catalog_find(cat, sku, skun, NULL));
    center_product *p = xcalloc(1, sizeof *p);
    memcpy(p->sku, sku, skun);
    p->skun = (uint8_t)skun;
    p->title = xstrndup("", 0);
    p->category = xstrndup("", 0);
    for (int s = 0; s < 2; s++) {
        p->st[s].inv.ncells = cat->ncells;
        p->st[s].inv.cells = xcalloc(cat->ncells, sizeof(center_inv_cell));
    }
    if (cat->n == cat->cap) {
        size_t cap = cat->cap ? cat->cap * 2 : 256;
        center_product **v = realloc(cat->v, cap * sizeof *v);
        if (!v) d11_fatal("center: out of memory");
        cat->v = v;
        cat->cap = cap;
    }
    cat->v[cat->n] = p;
    d11_smap_put(&cat->by_sku, sku, skun, cat->n);
    return cat->n++;
}

center_product *center_catalog_find(const center_catalog *cat, const char *sku, size_t skun, size_t *idx)
{
    uint64_t v;
    if (!d11_smap_get(&cat->by_sku, sku, skun, &v)) return NULL;
    D11_ASSERT(v < cat->n);
    if (idx) *idx = (size_t)v;
    return cat->v[v];
}

void center_product_set_text(center_product *p, const char *title, size_t titlen, const char *cat, size_t catn)
{
    free(p->title);
    free(p->category);
    p->title = xstrndup(title, titlen);
    p->category = xstrndup(cat, catn);
}

int center_stock_park(center_stock *s, const center_pending *pg)
{
    D11_ASSERT(pg->cell < s->inv.ncells);
    if (s->npend >= CENTER_PENDING_MAX) return D11_EFULL;
    if (s->npend == s->cappend) {
        uint32_t cap = s->cappend ? s->cappend * 2 : 8;
        if (cap > CENTER_PENDING_MAX) cap = CENTER_PENDING_MAX;
        center_pending *v = realloc(s->pend, cap * sizeof *v);
        if (!v) d11_fatal("center: out of memory");
        s->pend = v;
        s->cappend = cap;
    }
    s->pend[s->npend++] = *pg;
    D11_ASSERT(s->npend <= s->cappend);
    return 0;
}

void center_product_render(d11_buf *b, const center_product *p, int shadow)
{
    const center_inv *l = &p->st[shadow].inv;
    uint64_t sold = center_inv_sold(l);
    if (sold > l->total) sold = l->total; /* a report may run ahead of a restock: never show < 0 */
    d11_buf_puts(b, "{\"sku\":");
    d11_buf_json_str(b, p->sku, p->skun);
    d11_buf_puts(b, ",\"title\":");
    d11_buf_json_str(b, p->title, strlen(p->title));
    d11_buf_printf(b, ",\"price_cents\":%llu,\"category\":", (unsigned long long)p->price_cents);
    d11_buf_json_str(b, p->category, strlen(p->category));
    d11_buf_printf(b, ",\"stock_total\":%llu,\"stock_sold\":%llu,\"stock_available\":%llu}",
                   (unsigned long long)l->total, (unsigned long long)sold, (unsigned long long)(l->total - sold));
}

void center_ledger_render(d11_buf *b, const center_product *p)
{
    d11_buf_puts(b, "{\"sku\":");
    d11_buf_json_str(b, p->sku, p->skun);
    for (int s = 0; s < 2; s++) {
        const center_inv *l = &p->st[s].inv;
        uint64_t sold = center_inv_sold(l), held = center_inv_out(l);
        held = held >= sold ? held - sold : 0;
        d11_buf_printf(b, ",\"%s\":{\"total\":%llu,\"free\":%llu,\"sold_reported\":%llu,\"held_by_cells\":%llu,\"cells\":[",
                       s ? "shadow" : "real", (unsigned long long)l->total, (unsigned long long)l->free,
                       (unsigned long long)sold, (unsigned long long)held);
        for (unsigned c = 0; c < l->ncells; c++) {
            const center_inv_cell *cl = &l->cells[c];
            d11_buf_printf(b, "%s{\"cell\":%u,\"granted\":%llu,\"returned\":%llu,\"sold_reported\":%llu}",
                           c ? "," : "", c, (unsigned long long)cl->granted, (unsigned long long)cl->returned,
                           (unsigned long long)cl->sold);
        }
        d11_buf_puts(b, "]}");
    }
    d11_buf_puts(b, "}");
}

/* ---- listing (GET /v1/products) ---- */

static int sku_cmp(const center_product *a, const center_product *b)
{
    size_t n = a->skun < b->skun ? a->skun : b->skun;
    int r = memcmp(a->sku, b->sku, n);
    return r ? r : (a->skun > b->skun) - (a->skun < b->skun);
}

/* Case-insensitive (ASCII) substring test; an empty needle matches. */
static bool contains_ci(const char *hay, const char *needle, size_t nn)
{
    if (nn == 0) return true;
    for (const char *h = hay; *h; h++) {
        size_t k = 0;
        while (k < nn && h[k] && tolower((unsigned char)h[k]) == tolower((unsigned char)needle[k])) k++;
        if (k == nn) return true;
    }
    return false;
}

void center_catalog_list(const center_catalog *cat, const d11_msg_product_list *m, int shadow, d11_buf *out)
{
    D11_ASSERT(m->limit >= 1 && m->limit <= D11_LIST_LIMIT_MAX);
    const center_product *page[D11_LIST_LIMIT_MAX + 1]; /* the limit+1 smallest SKUs > after, sorted */
    uint32_t n = 0, cap = m->limit + 1;
    center_product after = {0};
    memcpy(after.sku, m->after.p, m->after.n);
    after.skun = (uint8_t)m->after.n;
    for (size_t i = 0; i < cat->n; i++) {
        const center_product *p = cat->v[i];
        if (m->after.n && sku_cmp(p, &after) <= 0) continue;
        if (m->category.n && (strlen(p->category) != m->category.n || memcmp(p->category, m->category.p, m->category.n)))
            continue;
        if (!contains_ci(p->title, m->q.p, m->q.n)) continue;
        if (n == cap && sku_cmp(p, page[n - 1]) >= 0) continue;
        uint32_t lo = 0, hi = n; /* insertion point */
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (sku_cmp(page[mid], p) < 0) lo = mid + 1;
            else hi = mid;
        }
        if (n < cap) n++;
        memmove(&page[lo + 1], &page[lo], (n - 1 - lo) * sizeof page[0]);
        page[lo] = p;
    }
    bool more = n > m->limit;
    uint32_t shown = more ? m->limit : n;
    d11_buf_puts(out, "{\"items\":[");
    for (uint32_t k = 0; k < shown; k++) {
        if (k) d11_buf_puts(out, ",");
        center_product_render(out, page[k], shadow);
    }
    d11_buf_puts(out, "],\"next_after\":");
    if (more) d11_buf_json_str(out, page[shown - 1]->sku, page[shown - 1]->skun);
    else d11_buf_puts(out, "null");
    d11_buf_puts(out, "}");
}
