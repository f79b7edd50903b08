/*
 * bodies.h — request bodies of the public API: strict JSON in, validated wire messages
 * out. Pure functions (no I/O, no globals), so unit tests and fuzzers call them directly.
 *
 * Every limit of API.md is checked here, so a bad request never reaches a cell or the
 * center (which re-check anyway, see wire.c). Outcomes, in d11_gw_err:
 *   400 bad_json  — not a strict JSON object (json.h), incl. invalid UTF-8, duplicate
 *                   keys, nesting, trailing data, too many tokens;
 *   422 invalid   — a field missing, of the wrong type or out of range; the message
 *                   names the field ("items[2].quantity: ...").
 * Unknown fields are ignored. Decoded strings (unescaped) are written into the caller's
 * scratch buffer, which must be at least as large as the body and outlive the message;
 * the d11_str fields of the message point into it.
 */
#ifndef D11_GW_BODIES_H
#define D11_GW_BODIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/json.h"
#include "../rpc/wire.h"

typedef struct d11_gw_err {
    int         status;
    const char *code;
    char        msg[192];
} d11_gw_err;

typedef struct d11_scratch {
    char  *p;
    size_t cap, used;
} d11_scratch;

/* SKU rule of API.md: 1-64 of [A-Za-z0-9_.-]. */
bool d11_sku_valid(const char *p, size_t n);
/* 1..max bytes of printable ASCII, space included (0x20..0x7e), as API.md and the wire require. */
bool d11_printable_valid(const char *p, size_t n, size_t max);

/* POST /v1/orders body {"user_id","items":[{"sku","quantity"}]}. Returns 0 or -1. */
int d11_body_order(d11_json *j, const char *body, size_t n, d11_scratch *s,
                   d11_msg_order_create *m, d11_gw_err *e);
/* POST /v1/products body {"sku","title","price_cents","stock","category"}. */
int d11_body_product(d11_json *j, const char *body, size_t n, d11_scratch *s,
                     d11_msg_product *m, d11_gw_err *e);
/* POST /v1/products/{sku}/restock body {"quantity"}. */
int d11_body_restock(d11_json *j, const char *body, size_t n, uint64_t *qty, d11_gw_err *e);
/* POST /v1/orders/{id}/pay body {"payment_id"}. */
int d11_body_pay(d11_json *j, const char *body, size_t n, d11_scratch *s, d11_str *payment_id,
                 d11_gw_err *e);
/* POST /v1/orders/{id}/cancel: empty, or any JSON object. */
int d11_body_empty_or_object(d11_json *j, const char *body, size_t n, d11_gw_err *e);

#endif
