/*
 * upstream.h — one gateway thread's wire connections to the center and the cells, the
 * table of pending requests, their deadlines, and the routing table.
 *
 * Targets: GW_UP_CENTER and gw_up_cell(i) (metrics.h). Each has at most one connection
 * per thread, connected without blocking and re-tried with doubling backoff
 * (D11_GW_RECONNECT_MS_MIN .. _MAX) while down; gw_up_ready() tells whether a request
 * can be sent now.
 *
 * A request is a pending entry (gw_pend_alloc) plus one frame (gw_up_send). The entry
 * carries its completion callback and the caller's context, as a libuv request does, so
 * this module knows nothing about what the request was for: the callback is called
 * exactly once — with the reply frame, or with reply NULL and the reason
 * (GW_UPERR_TIMEOUT at its deadline, GW_UPERR_DROPPED when the connection is lost). The
 * entry is already free when the callback runs (it gets a copy), so the callback may
 * issue new requests.
 *
 * Correlation: the wire req_id is (sequence << 16 | pool index), so a late reply to a
 * recycled entry is recognised and dropped (late_replies). Entries sit on one of two FIFO
 * lists by timeout class (GW_PC_REQ: --request-timeout-ms; GW_PC_PROBE:
 * D11_GW_PROBE_TIMEOUT_MS), so both lists stay sorted by deadline and expiry is O(1) per
 * expired entry. Pool of D11_GW_PENDING_MAX entries per thread, allocated at start; a
 * full pool is backpressure (gw_pend_alloc returns NULL).
 *
 * Connections are d11_links (rpc/link.h) in a table of GW_UP_N per thread: frames are
 * appended to the link's output and written once per loop iteration (gw_up_flush, the
 * table's one flush/re-arm path), so a burst of requests to one cell costs one write(2).
 *
 * Routing: the table is re-fetched from the center every D11_GW_ROUTING_REFRESH_MS; until
 * the center has answered once, d11_routing_default(--cells) is used.
 * Thread: only the owning thread.
 */
#ifndef D11_GW_UPSTREAM_H
#define D11_GW_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "../rpc/conn.h"
#include "../rpc/link.h"
#include "../rpc/wire.h"
#include "metrics.h"

typedef struct gw_thread gw_thread;
typedef struct gw_pend gw_pend;

enum { GW_PC_REQ = 0, GW_PC_PROBE = 1, GW_PC_N };
#define GW_NIL UINT32_MAX

/*
 * Completion of a pending request. p is a copy of the (already freed) entry: its ctx,
 * arg and target are the caller's. reply: the reply frame (valid during the call), or
 * NULL when the request failed with uperr (GW_UPERR_TIMEOUT or GW_UPERR_DROPPED).
 */
typedef void gw_up_cb(gw_thread *t, const gw_pend *p, const d11_frame *reply, int uperr);

struct gw_pend {
    uint64_t  req_id;  /* 0 = free */
    uint32_t  prev, next;
    int64_t   deadline_ms;
    gw_up_cb *cb;
    void     *ctx;     /* the caller's */
    uint64_t  arg;     /* the caller's */
    uint8_t   target, cls;
    bool      brk_probe; /* a forwarded request that is its breaker's HALF_OPEN probe (request.c) */
    bool      chaos_fail; /* gateway.upstream fault "error": completes as dropped at the next tick */
};

typedef struct gw_up {
    uint32_t link_idx, link_gen; /* its d11_link while connected */
    bool     connected;
    bool     wanted;      /* a target we keep connected */
    bool     warned_down; /* logged the outage once */
    int64_t  retry_at_ms;
    int      backoff_ms;
    char     name[24];      /* "center" or "cell-N": fits any int N */
    char     path[1100];
} gw_up;

/* The upstream side of one thread. */
typedef struct gw_upstream {
    d11_links links;       /* one link per connected target */
    gw_up     up[GW_UP_N];
    gw_pend  *pend;        /* [D11_GW_PENDING_MAX] */
    uint32_t *pend_free;
    uint32_t  npend_free;
    uint32_t  list_head[GW_PC_N], list_tail[GW_PC_N];
    uint64_t  seq;
    d11_routing routing;
    d11_routing routing_in; /* decode scratch */
    bool      routing_live;     /* from the center (else the default split) */
    bool      routing_inflight;
    int64_t   routing_next_ms;
} gw_upstream;

/* 0 or -ENOMEM / -ENAMETOOLONG. */
int  gw_up_init(gw_thread *t);
void gw_up_release(gw_thread *t);
/* Write the frames queued this iteration (one write per target; a before-sleep hook). */
void gw_up_flush(gw_thread *t);
/* Deadlines, reconnects, routing refresh (a before-sleep hook). Returns ms until the next
 * due one. */
int64_t gw_up_tick(gw_thread *t);
/* Connected now. */
bool gw_up_ready(gw_thread *t, int target);
/* Connected, and its unsent bytes leave room for one more frame under the link's
 * D11_RPC_OUT_BYTES_MAX (over it the link would be closed as a peer that stopped reading). */
#define GW_UP_BACKLOG_MAX ((size_t)D11_RPC_OUT_BYTES_MAX - (size_t)D11_FRAME_BYTES_MAX)
bool gw_up_writable(gw_thread *t, int target);
/* Name of a target ("center", "cell-3"). */
const char *gw_up_name(gw_thread *t, int target);
/* Bytes queued and not yet written to target. */
size_t gw_up_backlog(gw_thread *t, int target);

/* A pending entry of class cls (GW_PC_*) with its completion; NULL when the pool is full. */
gw_pend *gw_pend_alloc(gw_thread *t, int cls, gw_up_cb *cb, void *ctx, uint64_t arg);
/*
 * Queue one request frame (payload: t->tmp) to target for pending p. The target must be
 * writable (gw_up_writable). trace_id may be NULL (a fresh trace upstream).
 */
void gw_up_send(gw_thread *t, int target, gw_pend *p, uint16_t type, uint16_t flags,
                const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags,
                uint32_t deadline_ms);

/* Is p still the pending entry req_id (not completed or expired meanwhile)? */
bool gw_pend_waiting(gw_thread *t, const gw_pend *p, uint64_t req_id);
/* Complete pending p now as failed with uperr (GW_UPERR_*): its callback runs. */
void gw_pend_fail(gw_thread *t, gw_pend *p, int uperr);

/* The cell serving a slot per the current table, as an upstream target index. */
int gw_target_of_slot(gw_thread *t, unsigned slot);
/* DATA/center.sock or DATA/cell-<i>.sock of target (GW_UP_CENTER / gw_up_cell(i)). */
int gw_up_sock_path(const struct gw *g, int target, char *out, size_t cap);
/* The routing table in force and whether it came from the center. */
const d11_routing *gw_routing(gw_thread *t, bool *live);

#endif
