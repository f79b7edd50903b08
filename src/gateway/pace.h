/*
 * pace.h — the pacing queue of one gateway thread: the "pace" behaviour of a flow rule
 * (Sentinel's rate limiter: requests spaced evenly at 1/qps, each waiting at most
 * max_wait_ms; beyond that 429). The router reserves the request's turn in the resource's
 * bucket (d11_flow_reserve); the handler validates and encodes it as usual; gw_forward
 * then parks the encoded frame here instead of sending it, with its pending entry already
 * allocated (so the request timeout still runs from now). A timer sends each frame when
 * its turn comes; a frame whose pending entry expired meanwhile (504 answered) is dropped,
 * one whose target is no longer writable fails its entry (503).
 *
 * Bounded: D11_PACE_QUEUE_MAX frames per thread; a full queue sends at once (pacing is
 * then lost, never the request). Payload buffers are kept for reuse. Thread: the owner.
 */
#ifndef D11_GW_PACE_H
#define D11_GW_PACE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/loop.h"
#include "../core/util.h"

#define D11_PACE_QUEUE_MAX 1024

typedef struct gw_pend gw_pend;
typedef struct gw_thread gw_thread;

typedef struct gw_paced {
    int64_t  due_ms;
    uint64_t req_id;       /* the pending entry's, to see whether it is still waiting */
    gw_pend *p;
    int      target;
    uint16_t type, flags;
    uint8_t  trace_id[16], span_id[8], trace_flags;
    uint32_t deadline_ms;
    d11_buf  payload;
} gw_paced;

typedef struct gw_pace {
    gw_paced *q;           /* [D11_PACE_QUEUE_MAX], allocated on first use */
    int       n;
    d11_timer timer;
    uint64_t  queued_total, full_total;
} gw_pace;

/* Park the frame in t->tmp for target until due_ms. False when the queue is full (the
 * caller then sends it now). */
bool gw_pace_push(gw_thread *t, int64_t due_ms, int target, gw_pend *p, uint16_t type, uint16_t flags,
                  const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags, uint32_t deadline_ms);
void gw_pace_release(gw_thread *t);

#endif
