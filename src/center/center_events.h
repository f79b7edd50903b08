/*
 * center_events.h — the center's outbox (docs/events.md, "Center events").
 *
 * Write side (the machine, center_events.c): a product change (PRODUCT_CREATE,
 * PRODUCT_RESTOCK) queues one event; center_flush encodes the round's events as
 * CENTER_OP_EVENT records (store/center_ops.h) in the SAME commit as the product rows,
 * with ids assigned in commit order (continuing after the newest stored one, which the
 * load yields) and `at` = the commit's wall time. A retention request (EVENTS_PRUNE)
 * adds one CENTER_OP_EVENT_PRUNE record to the next commit.
 *
 * Read side (the process, center.c): EVENTS_READ is answered from committed rows through
 * a read-only connection (store/center_outbox_read.h), in the cells' reply format
 * (wire_msgs.def EVENTS_READ), rendering each row as the public event document:
 *
 *   {"id":"center-<n>","type":"product.restocked","sku":"..","order_id":null,"user_id":null,
 *    "cell":"center","at":<ms>,"trace_id":"<32 hex>"|null,"stress":false,"data":{product}}
 *
 * The center has no stress stream: a read of shadow 1 answers an empty page.
 * Thread: the center's loop thread.
 */
#ifndef D11_CENTER_EVENTS_H
#define D11_CENTER_EVENTS_H

#include "../core/limits.h"
#include "../rpc/wire.h"
#include "../store/center_ops.h"
#include "../store/center_outbox_read.h"
#include "center.h"

#define CENTER_EVENTS_PAGE_MAX 256 /* events per EVENTS_READ reply: 256 x 2.7 KB fits a frame */
_Static_assert(CENTER_EVENTS_PAGE_MAX * (CENTER_EVENT_JSON_BYTES_MAX + 48) + 64 < D11_FRAME_BYTES_MAX,
               "a full page of center events must fit one frame");

/* The frame was an EVENTS_READ: frame <- the reply (r NULL -> 503). body is scratch. */
void center_events_read_reply(d11_center_outbox *r, const d11_frame *f, d11_buf *body, d11_buf *frame);
/* The frame was an EVENTS_PRUNE: pick the range with r, ask c to delete it in its next
 * commit (center_events_prune), frame <- "<upto> <head> <oldest_at>\n" or 503. */
void center_events_prune_reply(center *c, d11_center_outbox *r, const d11_frame *f, d11_buf *body, d11_buf *frame);
/* Delete the events with id <= upto in the next commit (ignored if not above the
 * current watermark). */
void center_events_prune(center *c, uint64_t upto);
/* The newest event id assigned (committed, or in the current round). */
uint64_t center_events_last(const center *c);

#endif
