/*
 * client.h — one gateway thread's HTTP client connections: accept, read, parse, the
 * pipeline of response slots, writing, timeouts, drain. It knows nothing about routes:
 * each parsed request is handed to struct gw's on_request callback, which answers it
 * (now or later) with gw_respond*.
 *
 * Pipelining: a connection has a ring of D11_HTTP_PIPELINE_MAX response slots. A request
 * takes the next slot when it is parsed; its response is written straight to the
 * connection's output when its slot is at the head of the ring, otherwise it waits in
 * the slot's own buffer until every earlier slot has been answered. Every slot is
 * answered exactly once (D11_ASSERT), then freed in ring order.
 *
 * A response that completes later (after an upstream reply) finds its slot through a
 * gw_slot_ref: connection index + generation + slot, so a connection that was closed and
 * reused meanwhile is never answered by mistake (gw_slot_deref returns NULL).
 *
 * Each connection is a d11_io on the thread's d11_loop. Reading stops (D11_IO_READ dropped) while the pipeline is full, while `out` holds more
 * than D11_HTTP_OUT_BYTES_MAX unsent bytes, once the client has shut its side, or once
 * the connection is closing (an error answer, Connection: close, a 408, shutdown).
 * Writes happen once per loop iteration for every connection marked dirty
 * (gw_clients_flush), together with everything else that became ready in it.
 *
 * Memory: connection structs and their buffers are allocated on first use and reused
 * (buffers keep their capacity up to 64 KiB); the tables are sized by
 * D11_HTTP_CONNS_MAX at start. Thread: only the owning thread touches any of it.
 */
#ifndef D11_GW_CLIENT_H
#define D11_GW_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/limits.h"
#include "../core/loop.h"
#include "../core/util.h"
#include "http.h"

typedef struct gw_thread gw_thread;

enum { SLOT_FREE = 0, SLOT_WAIT, SLOT_READY };

typedef struct gw_slot {
    uint8_t  state;
    uint8_t  route;         /* route id for metrics (0 = other) */
    bool     close_after;   /* answer with Connection: close, then close */
    bool     keepalive_hdr; /* HTTP/1.0 keep-alive: say "Connection: keep-alive" */
    bool     counted;       /* counted in the in-flight gauge */
    bool     prot;          /* admitted by adaptive protection: leave it once answered */
    int8_t   conc_res;      /* counted by that resource's concurrency limit; -1 = none */
    int64_t  start_us;
    char     rid[17];       /* X-Request-Id */
    uint8_t  trace_id[16];
    uint8_t  span_id[8];    /* the gateway's span: sent upstream, returned in traceparent */
    uint8_t  trace_flags;   /* bit 0: sampled (head decision, or the caller's) */
    uint8_t  parent_id[8];  /* the caller's span (traceparent), zero for a new trace */
    char     token[D11_TOKEN_LABEL_BYTES_MAX + 1]; /* label of the request's token ("" = none) */
    uint64_t user_hash;     /* masked user id for the request log (0 = none) */
    char     key_prefix[9]; /* first 8 bytes of the Idempotency-Key, printable only ("" = none) */
    d11_buf  resp;          /* only for a response completed out of order */
} gw_slot;

/* Remember the request's user (hashed with a fixed salt: lines of one user correlate, the id
 * is not readable) and the first 8 printable bytes of its key, for the request log. */
static inline void gw_slot_set_user(gw_slot *s, uint64_t user_id, const char *key, size_t keyn)
{
    s->user_hash = d11_hash64(&user_id, sizeof user_id, 0x6431315f6d61736bULL) | 1;
    size_t n = 0;
    for (; n < keyn && n < 8; n++) s->key_prefix[n] = (key[n] > 0x20 && key[n] < 0x7f && key[n] != '"' && key[n] != '\\') ? key[n] : '_';
    s->key_prefix[n] = 0;
}

typedef struct gw_conn {
    d11_io   io;         /* the socket; io.want = the readiness currently asked for */
    uint32_t idx, gen;
    bool     open;
    bool     closing;    /* no more requests will be read; close once answered */
    bool     rd_eof;     /* the client shut its sending side */
    bool     dirty;      /* on the thread's service list */
    bool     stalled;    /* parsing stopped at a full pipeline; resume when a slot frees */
    int64_t  last_active_ms;
    int64_t  req_start_ms; /* first byte of a request still being received, 0 = none */
    char     peer[48];     /* the client's IP address as text ("" when unknown) */
    d11_buf  in;
    d11_buf  out;
    size_t   out_off;
    uint8_t  head, nslots;
    d11_http_in http;
    gw_slot  slots[D11_HTTP_PIPELINE_MAX];
    int8_t   tracestate_slot; /* the slot whose tracestate is below, -1 none (one per connection) */
    char     tracestate[192];
} gw_conn;

/* The client side of one thread. */
typedef struct gw_clients {
    gw_conn **conns;    /* [D11_HTTP_CONNS_MAX], allocated on first use, reused */
    uint32_t  nalloc;   /* conns[0..nalloc) allocated */
    uint32_t *free_idx; /* closed connections, for reuse */
    uint32_t  nfree;
    uint32_t  nopen;
    uint32_t *dirty;    /* connections to service at the end of the iteration */
    uint32_t  ndirty;
} gw_clients;

/* Where a later answer goes: (gen << 32) | (slot << 16) | idx. */
typedef uint64_t gw_slot_ref;
_Static_assert(D11_HTTP_CONNS_MAX <= 65536, "connection index fits 16 bits of a slot ref");
_Static_assert(D11_HTTP_PIPELINE_MAX <= 256, "slot index fits 8 bits of a slot ref");

static inline gw_slot_ref gw_slot_ref_of(const gw_conn *c, int si)
{
    return (uint64_t)c->gen << 32 | (uint64_t)(unsigned)si << 16 | c->idx;
}
/* The connection a ref points to, with *si its slot, while that slot still waits for its
 * answer; NULL when the client went away (closed, or the connection was reused). */
gw_conn *gw_slot_deref(gw_thread *t, gw_slot_ref ref, int *si);

/* 0 or -ENOMEM. */
int  gw_clients_init(gw_thread *t);
void gw_clients_release(gw_thread *t);
/* Accept on t->lfd (a batch per readiness, refusing over D11_HTTP_CONNS_MAX; paused for
 * 100 ms when out of descriptors). 0 or -errno. */
int  gw_clients_listen(gw_thread *t);
/* Write what is queued, resume stalled pipelines, fix the wanted readiness; called once
 * per loop iteration (a before-sleep hook). */
void gw_clients_flush(gw_thread *t);
/* Timers: 408 for a request not received within D11_HTTP_HEADER_TIMEOUT_MS, idle close. */
void gw_clients_sweep(gw_thread *t);
/* Shutdown: close the listener, stop reading everywhere; connections close once answered. */
void gw_clients_drain(gw_thread *t);
void gw_clients_close_all(gw_thread *t);

/*
 * Answer slot si of c (it must be waiting: each slot is answered once). extra_hdrs: ""
 * or complete header lines ("Allow: GET\r\n"). Every response carries X-Request-Id and
 * traceparent. Counts the request in the thread's metrics. The body is copied.
 */
void gw_respond(gw_thread *t, gw_conn *c, int si, int status, const char *ctype,
                const char *extra_hdrs, const char *body, size_t blen);
void gw_respond_json(gw_thread *t, gw_conn *c, int si, int status, const char *body, size_t blen);
/* {"error":{"code","message","request_id"}} with the given status. */
/* Adaptive protection's refusal (503 unavailable, overloaded, Retry-After: 1), the cheap
 * way: no printf, the request log at most once per second (client.c). rt: the reason is
 * the RT cap, else the in-flight limit. */
void gw_respond_overloaded(gw_thread *t, gw_conn *c, int si, bool rt);
void gw_respond_error(gw_thread *t, gw_conn *c, int si, int status, const char *code,
                      const char *msg, const char *extra_hdrs);

#endif
