/*
 * orders.h — the order handlers: POST /v1/orders, GET /v1/orders/{id},
 * POST /v1/orders/{id}/pay, POST /v1/orders/{id}/cancel, GET /v1/users/{uid}/orders.
 *
 * Each validates what the router left (path parameters: 404 for a malformed order id,
 * 422 for a bad user id / limit / before; the body: 400 / 422; Idempotency-Key on
 * creation: 422; risk rules on creation: 403 risk_rejected) and forwards one wire
 * request to the cell owning the user's slot: slot = user_id mod D11_SLOTS for creation
 * and listing, slot = (order id >> 12) & (D11_SLOTS - 1) for an order id (no lookup).
 * Thread: the connection's thread.
 */
#ifndef D11_GW_ORDERS_H
#define D11_GW_ORDERS_H

#include "request.h"

gw_handler gw_h_order_create;
/* GET / pay / cancel of one order: the wire message is the route's msg. */
gw_handler gw_h_order_ref;
gw_handler gw_h_order_list;

#endif
