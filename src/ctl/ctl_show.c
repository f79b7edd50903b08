/*
 * ctl_show.c — `d11 ctl` answers as tables for people (the default) — cells, rules,
 * products list — and as the gateway's JSON with --json, for scripts.
 */
#include <stdio.h>
#include <string.h>

#include "ctl_int.h"

static void raw(ctl_ctx *x)
{
    fwrite(x->c.body.data, 1, x->c.body.len, stdout);
    if (x->c.body.len && x->c.body.data[x->c.body.len - 1] != '\n') putchar('\n');
}

/* GET path and expect 200. 0: the body is in x->c.body; 1: failed (reported). With
 * --json the body is also printed as it came. */
static int get_ok(ctl_ctx *x, const char *path)
{
    int st = ctl_http(x, "GET", path, NULL, 0, NULL);
    if (st < 0) return 1;
    if (st != 200) {
        ctl_report(x, "GET", path);
        return 1;
    }
    if (x->json) raw(x);
    return 0;
}

static void field(jw_span obj, const char *key, char *out, size_t cap)
{
    jw_span v;
    if (jw_get(obj, key, &v)) jw_text(v, out, cap);
    else snprintf(out, cap, "-");
}

static void cell_row(const char *name, jw_span part)
{
    char up[8], lat[24], orders[24], parked[24], created[24], oos[24], batches[24], lc[24], cup[8];
    jw_span st = {NULL, 0};
    field(part, "up", up, sizeof up);
    field(part, "latency_ms", lat, sizeof lat);
    (void)jw_get(part, "stats", &st);
    field(st, "orders", orders, sizeof orders);
    field(st, "parked", parked, sizeof parked);
    field(st, "created", created, sizeof created);
    field(st, "rejected_out_of_stock", oos, sizeof oos);
    field(st, "batches", batches, sizeof batches);
    field(st, "last_commit_us", lc, sizeof lc);
    field(st, "center_up", cup, sizeof cup);
    printf("%-8s %-5s %10s %10s %8s %10s %12s %10s %14s %9s\n", name, up, lat, orders, parked, created, oos, batches,
           lc, cup);
}

int ctl_show_cells(ctl_ctx *x)
{
    if (get_ok(x, "/admin/cells")) return 1;
    if (x->json) return 0;
    jw_span doc = {x->c.body.data, x->c.body.len}, center, cells, v;
    printf("%-8s %-5s %10s %10s %8s %10s %12s %10s %14s %9s\n", "PART", "UP", "LATENCY_MS", "ORDERS", "PARKED",
           "CREATED", "OUT_OF_STOCK", "BATCHES", "LAST_COMMIT_US", "CENTER_UP");
    if (jw_get(doc, "center", &center)) {
        char up[8], lat[24];
        field(center, "up", up, sizeof up);
        field(center, "latency_ms", lat, sizeof lat);
        printf("%-8s %-5s %10s\n", "center", up, lat);
    }
    if (jw_get(doc, "cells", &cells) && cells.n && cells.p[0] == '[') {
        const char *it = cells.p;
        while (jw_elem(&it, cells.p + cells.n, &v)) {
            char id[16], name[24];
            field(v, "id", id, sizeof id);
            snprintf(name, sizeof name, "cell-%s", id);
            cell_row(name, v);
        }
    }
    return 0;
}

int ctl_show_rules(ctl_ctx *x)
{
    if (get_ok(x, "/admin/rules")) return 1;
    if (x->json) return 0;
    jw_span doc = {x->c.body.data, x->c.body.len}, v, k, e;
    char ver[32], upd[48];
    field(doc, "version", ver, sizeof ver);
    field(doc, "updated_at", upd, sizeof upd);
    printf("version %s (updated %s)\n", ver, upd);
    printf("%-8s %-20s %s\n", "RULE", "RESOURCE", "SETTING");
    if (jw_get(doc, "degrade", &v)) {
        const char *it = v.p;
        while (jw_member(&it, v.p + v.n, &k, &e))
            printf("%-8s %-20.*s %s\n", "degrade", (int)k.n, k.p, jw_key_is(e, "true") ? "on" : "off");
    }
    if (jw_get(doc, "flow", &v)) {
        const char *it = v.p;
        while (jw_member(&it, v.p + v.n, &k, &e)) {
            char q[24], b[24];
            field(e, "qps", q, sizeof q);
            field(e, "burst", b, sizeof b);
            printf("%-8s %-20.*s qps %s burst %s\n", "flow", (int)k.n, k.p, q, b);
        }
    }
    if (jw_get(doc, "risk", &v)) {
        const char *it = v.p;
        while (jw_member(&it, v.p + v.n, &k, &e))
            printf("%-8s %-20.*s %.*s\n", "risk", (int)k.n, k.p, (int)e.n, e.p);
    }
    /* rule kinds this ctl does not know yet: shown as they are */
    const char *it = doc.p;
    while (jw_member(&it, doc.p + doc.n, &k, &e))
        if (!jw_key_is(k, "version") && !jw_key_is(k, "updated_at") && !jw_key_is(k, "degrade") &&
            !jw_key_is(k, "flow") && !jw_key_is(k, "risk"))
            printf("%-8.*s %-20s %.*s\n", (int)k.n, k.p, "", (int)e.n, e.p);
    return 0;
}

/* products list [--category C] [--q TEXT] [--limit N] [--after SKU] [--all] */
int ctl_products_list(ctl_ctx *x, int nargs, char **args)
{
    if (nargs < 1 || strcmp(args[0], "list"))
        return ctl_usage_err("%s", "usage: products list [--category C] [--q TEXT] [--limit N] [--after SKU] [--all]");
    char query[512] = "";
    size_t ql = 0;
    bool all = false;
    for (int i = 1; i < nargs; i++) {
        const char *a = args[i];
        if (!strcmp(a, "--all")) {
            all = true;
            continue;
        }
        static const char *const names[] = {"--category", "--q", "--limit", "--after"};
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (!strcmp(a, names[j])) k = j;
        if (k < 0 || i + 1 >= nargs) return ctl_usage_err("products list: bad flag '%s'", a);
        const char *v = args[++i];
        int w = snprintf(query + ql, sizeof query - ql, "%s%s=", ql ? "&" : "?", names[k] + 2);
        if (w < 0 || (size_t)w >= sizeof query - ql) return ctl_usage_err("%s", "products list: query too long");
        ql += (size_t)w;
        for (const char *p = v; *p; p++) { /* percent-encode everything but unreserved bytes */
            unsigned char ch = (unsigned char)*p;
            bool keep = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                        ch == '-' || ch == '_' || ch == '.' || ch == '~';
            w = keep ? snprintf(query + ql, sizeof query - ql, "%c", ch)
                     : snprintf(query + ql, sizeof query - ql, "%%%02X", ch);
            if (w < 0 || (size_t)w >= sizeof query - ql) return ctl_usage_err("%s", "products list: query too long");
            ql += (size_t)w;
        }
    }
    char path[700], after[80] = "";
    bool header = false;
    int pages = 0;
    for (;;) {
        if (after[0])
            snprintf(path, sizeof path, "/v1/products%s%safter=%s", query, ql ? "&" : "?", after);
        else
            snprintf(path, sizeof path, "/v1/products%s", query);
        if (get_ok(x, path)) return 1;
        if (x->json && !all) return 0;
        jw_span doc = {x->c.body.data, x->c.body.len}, items, v, nx;
        if (!x->json && !header) {
            printf("%-24s %-32s %-14s %12s %10s %10s %10s\n", "SKU", "TITLE", "CATEGORY", "PRICE_CENTS", "TOTAL",
                   "SOLD", "AVAILABLE");
            header = true;
        }
        if (!x->json && jw_get(doc, "items", &items) && items.n && items.p[0] == '[') {
            const char *it = items.p;
            while (jw_elem(&it, items.p + items.n, &v)) {
                char sku[80], title[200], cat[80], price[24], tot[24], sold[24], av[24];
                field(v, "sku", sku, sizeof sku);
                field(v, "title", title, sizeof title);
                field(v, "category", cat, sizeof cat);
                field(v, "price_cents", price, sizeof price);
                field(v, "stock_total", tot, sizeof tot);
                field(v, "stock_sold", sold, sizeof sold);
                field(v, "stock_available", av, sizeof av);
                printf("%-24s %-32.32s %-14.14s %12s %10s %10s %10s\n", sku, title, cat, price, tot, sold, av);
            }
        }
        after[0] = 0;
        if (jw_get(doc, "next_after", &nx) && !(nx.n == 4 && !memcmp(nx.p, "null", 4))) jw_text(nx, after, sizeof after);
        if (!all || !after[0] || ++pages >= 10000) break;
        if (!x->json) continue;
    }
    if (!x->json && after[0]) printf("(more: --after %s, or --all)\n", after);
    return 0;
}
