/*
 * events_read.h — the cell process's answer to EVENTS_READ (wire_msgs.def): committed
 * outbox events of one stream rendered as the public event documents of docs/events.md,
 * one per line behind a "<head> <pruned>" header line, for the gateway to merge.
 * Thread: the cell's event reader thread. No state of its own: the reader, the cache and
 * the buffers are the caller's.
 */
#ifndef D11_CELL_EVENTS_READ_H
#define D11_CELL_EVENTS_READ_H

#include "../core/util.h"
#include "../rpc/conn.h"
#include "../rpc/wire.h"
#include "../store/outbox_read.h"
#include "events_cache.h"

/*
 * Build the reply to one EVENTS_READ request of f into frame (a whole reply frame):
 * 200 with the lines; 410 cursor_expired when after < the pruned watermark; 422 for a
 * malformed request; 503 when the store cannot be read (r NULL: no reader). body is scratch.
 * cache (per stream, may be NULL): rendered lines kept between reads (events_cache.h).
 */
void d11_cell_events_reply(d11_outbox_reader *r, cell_evcache cache[2], int cell_id, const d11_frame *f,
                           d11_buf *body, d11_buf *frame);

/*
 * Retention, EVENTS_PRUNE of f: choose a small range with d11_outbox_prune_point and hand
 * it to the machine (cell_outbox_prune: deleted in the next batch's transaction). Reply
 * "<upto> <head> <oldest_at_ms>\n" at once (the delete is durable a batch later; a repeat
 * is harmless). 503 when the store cannot be read or the cell has failed.
 */
struct cell;
void d11_cell_events_prune(d11_outbox_reader *r, struct cell *c, const d11_frame *f, d11_buf *body, d11_buf *frame);

/* Render one event document (no newline) into b. */
void d11_cell_event_render(d11_buf *b, int cell_id, int shadow, const d11_outbox_event *e);

#endif
