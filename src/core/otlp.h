/*
 * otlp.h — trace spans and their export as OTLP/HTTP JSON (POST {"resourceSpans":...} to
 * --otlp-endpoint, e.g. http://collector:4318/v1/traces), used by the gateway, the cells
 * and the center.
 *
 * Sampling: head sampling by ratio on the trace id (d11_otlp_head_sampled: the same
 * decision in every process for one trace, and the W3C sampled flag carries it), plus tail
 * keeping: a span that ended in error or took at least `slow_ns` is exported whatever the
 * head decision was.
 *
 * Export: spans are copied into a bounded FIFO (D11_OTLP_QUEUE_MAX); a full queue drops
 * the span and counts it (never blocks the caller). One exporter thread per process sends
 * batches of at most D11_OTLP_BATCH_MAX spans every D11_OTLP_FLUSH_MS (or as soon as a
 * batch is full) with a blocking HTTP client (bench/httpc.h) and a timeout; a failed POST
 * drops that batch and counts it. Counters are atomics, readable from any thread.
 *
 * Threads: d11_otlp_end from any thread (one mutex, held for a copy); start/stop from the
 * owner. The span helpers below (d11_span_open, d11_trace_id_parse) touch only their
 * arguments: any thread.
 *
 * Where spans come from: the gateway (request, SERVER), the cells (cell.<type> SERVER,
 * cell.batch_commit, cell.grant CLIENT), the center (center.<type> SERVER, parent = the
 * caller's span of the frame header), the event relays (event.publish PRODUCER, one per
 * event acked by NATS or delivered to a webhook, in the trace the order was made in).
 */
#ifndef D11_CORE_OTLP_H
#define D11_CORE_OTLP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define D11_OTLP_QUEUE_MAX   4096
#define D11_OTLP_BATCH_MAX   512
#define D11_OTLP_FLUSH_MS    500
#define D11_OTLP_TIMEOUT_MS  2000
#define D11_SPAN_ATTRS_MAX   6
#define D11_SPAN_NAME_BYTES  48
#define D11_TRACESTATE_BYTES 256 /* W3C: at most 512; longer ones are not propagated */

enum { D11_SPAN_INTERNAL = 1, D11_SPAN_SERVER = 2, D11_SPAN_CLIENT = 3, D11_SPAN_PRODUCER = 4 };

typedef struct d11_span_attr {
    char    key[32];
    bool    is_int;
    int64_t i;
    char    s[64];
} d11_span_attr;

typedef struct d11_span {
    uint8_t       trace_id[16], span_id[8], parent_id[8]; /* parent all zero: a root span */
    char          name[D11_SPAN_NAME_BYTES];
    uint8_t       kind;
    bool          error;
    int64_t       start_ns, end_ns; /* wall clock, ns since the epoch */
    char          tracestate[D11_TRACESTATE_BYTES];
    int           nattr;
    d11_span_attr attr[D11_SPAN_ATTRS_MAX];
} d11_span;

void d11_span_attr_int(d11_span *s, const char *key, int64_t v);
void d11_span_attr_str(d11_span *s, const char *key, const char *v);

typedef struct d11_otlp {
    bool             on;
    char             endpoint[256];
    char             service[32];
    uint64_t         ratio_threshold; /* head-sampled when the trace id's low 8 bytes are below */
    int64_t          slow_ns;
    pthread_t        th;
    pthread_mutex_t  mu;
    pthread_cond_t   cv;
    d11_span        *q;
    uint32_t         head, len;
    bool             stop;
    _Atomic uint64_t exported, dropped, failed;
} d11_otlp;

/* Start exporting to endpoint (http://HOST:PORT[/path]; /v1/traces when no path) as service
 * name `service`, head ratio in [0, 1], tail keeping of spans >= slow_ms. An empty
 * endpoint leaves the exporter off (every call then a no-op). 0, or -1 with err set. */
int d11_otlp_start(d11_otlp *o, const char *endpoint, const char *service, double ratio, int64_t slow_ms,
                   char *err, size_t errlen);
/* Flush what is queued (bounded by the timeout) and stop the thread. */
void d11_otlp_stop(d11_otlp *o);
/* The head-sampling decision for a new trace. */
bool d11_otlp_head_sampled(const d11_otlp *o, const uint8_t trace_id[16]);
/* A finished span: queued when head-sampled, in error, or slow; else forgotten. */
void d11_otlp_end(d11_otlp *o, const d11_span *s, bool head_sampled);
/* Append the exporter's counters (d11_otlp_spans_*_total{part=...}). */
void d11_otlp_metrics(d11_otlp *o, d11_buf *b, const char *part);
/* Wall clock in ns since the epoch (span times). */
int64_t d11_span_now_ns(void);
/* Zero *s and open a span: trace_id, a new random span id (getrandom: not for a hot path
 * that opens thousands a second — the cells keep their own generator), parent (NULL or
 * all zero: a root span), name (truncated to D11_SPAN_NAME_BYTES - 1), kind, start = now. */
void d11_span_open(d11_span *s, const uint8_t trace_id[16], const uint8_t *parent_id, const char *name, uint8_t kind);
/* 32 hex digits (either case) -> 16 bytes; -EINVAL for another length, a non-hex digit or
 * the all-zero (invalid) trace id. */
int d11_trace_id_parse(const char *hex, size_t n, uint8_t out[16]);
/* An event.publish span (PRODUCER) for one event of the stream, ev[0..n) its JSON as
 * GET /v1/events serves it: in the event's trace (its top-level "trace_id"), with no parent
 * (an event keeps the trace id of the request that made it, not a span id), attributes
 * d11.event_id, messaging.system = `system` ("nats", "webhook") and messaging.destination
 * = `dest`; start = now. false, nothing opened, when the event has no valid trace id. */
bool d11_span_open_event(d11_span *s, const char *ev, size_t n, const char *system, const char *dest);
/* Render spans as one OTLP/HTTP JSON document (exposed for the unit test). */
void d11_otlp_render(d11_buf *b, const char *service, const d11_span *v, uint32_t n);

#endif
