/*
 * nats_relay.h — the NATS JetStream relay (docs/events.md): with --nats nats://HOST:PORT
 * one more gateway thread reads both event streams straight from the parts (evsrc.h: one
 * position per part, no HTTP, no merge) and publishes every event to JetStream, one
 * acknowledged batch per page (nats_relay.c): stream D11_EVENTS
 * (subjects d11.events.>, file storage, created if missing) with subject
 * d11.events.<type>.<cell>, stress events to D11_STRESS / d11.stress.<type>.<cell>,
 * header Nats-Msg-Id = the event id (the broker drops a re-publish within its duplicate
 * window). Its position advances only when a page is proven stored, and
 * is stored as the named consumers "nats.events" / "nats.stress" (DATA/consumers: durable,
 * a retention sink, lag in /metrics). A NATS outage only stops this thread's progress:
 * orders never wait for it; the events wait in the outbox and catch up.
 * Thread: its own; the counters are atomics read by /metrics.
 */
#ifndef D11_GW_NATS_RELAY_H
#define D11_GW_NATS_RELAY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../core/util.h"

struct gw;

#define D11_NATS_PAGE        1000  /* events published per acknowledged round (= D11_EVENTS_LIMIT_MAX) */
#define D11_NATS_IDLE_MS     25    /* pause after a round that was not full: fewer, larger rounds.
                                      Measured (bench/RESULTS.md §9): 10 ms cost ~8% more order
                                      throughput than 25-30 ms; latency grows by ~half the pause */
#define D11_NATS_ACK_WAIT_MS 5000  /* a round not fully acknowledged by then is re-published */
#define D11_NATS_RETRY_MS    500   /* reconnect / re-publish backoff */
#define D11_NATS_IOBUF_BYTES (256 * 1024) /* libnats write buffer: a page goes out in few writes */
#define D11_NATS_SAVE_MS     200   /* the stored position lags the acked one by at most this */
#define D11_NATS_ROUTING_MS  5000  /* the routing table (how many cells) is asked again after this */
#define D11_NATS_STRESS_IDLE_MS 100 /* an empty stress stream is read again after this */

#define GW_NATS_LAT_BUCKETS 21
/* commit -> JetStream ack latency histogram upper bounds (ms); the last is +Inf */
extern const int gw_nats_lat_le_ms[GW_NATS_LAT_BUCKETS - 1];

typedef struct gw_nats {
    pthread_t        th;
    bool             started;
    _Atomic int      stop;
    _Atomic int      connected;
    _Atomic uint64_t published, failures, rounds, careful_pages;
    _Atomic uint64_t lat[GW_NATS_LAT_BUCKETS]; /* event `at` -> ack, per bucket */
    _Atomic uint64_t lat_sum_ms;
} gw_nats;

/* Start the relay when cfg.nats is set (else nothing). 0 or -errno. */
int  gw_nats_start(struct gw *g);
void gw_nats_stop(struct gw *g);
void gw_nats_metrics(gw_nats *n, d11_buf *b);

#endif
