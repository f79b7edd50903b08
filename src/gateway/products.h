/*
 * products.h — the product handlers: POST /v1/products, GET /v1/products/{sku},
 * POST /v1/products/{sku}/restock. A malformed SKU in the path is 404 (no such product);
 * bodies are validated here (400 / 422); the center owns the catalog, so each accepted
 * request becomes one wire request to the center. Thread: the connection's thread.
 */
#ifndef D11_GW_PRODUCTS_H
#define D11_GW_PRODUCTS_H

#include "request.h"

gw_handler gw_h_product_create;
/* GET /v1/products/{sku} and GET /admin/ledger/{sku}: the wire message is the route's msg.
 * The first (real stream) is served from the thread's product cache when it may be:
 * bound and invalidation in products.c and docs/events.md "Product cache". */
gw_handler gw_h_product_get;
gw_handler gw_h_product_restock;

/* GET /v1/products?category=&q=&limit=&after= — a catalog page from the center, served
 * from this thread's cache for D11_GW_CATALOG_CACHE_MS when the same query was answered
 * (and no center product event was applied since). */
void gw_h_product_list(gw_thread *t, gw_req *rq);
/* Free the thread's listing cache (thread exit). */
void gw_catcache_free(gw_thread *t);

/* The product cache's hot SKUs and hit/miss counts (any thread): /metrics lines
 * (d11_gateway_hot_sku_requests{sku}, d11_gateway_product_cache_total{result},
 * d11_gateway_product_invalidations_total), and the /dashboard/data object
 * {"k","half_life_ms","cache_hits","cache_misses","skus":[{"sku","requests","error"}]}. */
struct gw;
void gw_products_metrics(struct gw *g, d11_buf *b);
/* A 2xx order create / cancel answer (the order's JSON): its SKUs' cached products go. */
void gw_products_saw_order(gw_thread *t, const char *body, size_t n);
void gw_products_hot_json(struct gw *g, d11_buf *b);

#endif
