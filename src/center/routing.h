/*
 * routing.h — the center's routing table (slot -> cell, versioned): created on the first
 * start of a deployment, stored with the center's state, served to gateways (ROUTING_GET).
 *
 * Today the table is the default contiguous split fixed at first start; moving slots
 * between cells is not supported yet, so a deployment keeps its cell count.
 */
#ifndef D11_CENTER_ROUTING_H
#define D11_CENTER_ROUTING_H

#include <stdint.h>

#include "../rpc/wire.h"

/* The table of a new deployment of ncells cells (version 1). */
void center_routing_first(d11_routing *r, uint16_t ncells);
/* A stored table must fit the configured cell count: 0, or D11_ECONFIG with the reason
 * (and what to do) logged. */
int center_routing_check(const d11_routing *r, uint16_t ncells);
/* Append the ROUTING_GET reply to req (status 200) to out. */
void center_routing_reply(d11_buf *out, const d11_frame_hdr *req, const d11_routing *r);

#endif
