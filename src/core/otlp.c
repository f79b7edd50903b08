/*
 * otlp.c — span export as OTLP/HTTP JSON (see otlp.h): the bounded queue, the exporter
 * thread and the JSON rendering (ids as lowercase hex, times as decimal strings of
 * nanoseconds, int attributes as strings: the protobuf JSON mapping of OTLP).
 */
#include "otlp.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../bench/httpc.h"
#include "promtext.h"

void d11_span_attr_int(d11_span *s, const char *key, int64_t v)
{
    if (s->nattr >= D11_SPAN_ATTRS_MAX) return;
    d11_span_attr *a = &s->attr[s->nattr++];
    snprintf(a->key, sizeof a->key, "%s", key);
    a->is_int = true;
    a->i = v;
}

void d11_span_attr_str(d11_span *s, const char *key, const char *v)
{
    if (s->nattr >= D11_SPAN_ATTRS_MAX) return;
    d11_span_attr *a = &s->attr[s->nattr++];
    snprintf(a->key, sizeof a->key, "%s", key);
    a->is_int = false;
    snprintf(a->s, sizeof a->s, "%s", v);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

int64_t d11_span_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void d11_span_open(d11_span *s, const uint8_t trace_id[16], const uint8_t *parent_id, const char *name, uint8_t kind)
{
    memset(s, 0, sizeof *s);
    memcpy(s->trace_id, trace_id, 16);
    do d11_random_bytes(s->span_id, 8);
    while (all_zero(s->span_id, 8)); /* all zero is "no span" in W3C */
    if (parent_id) memcpy(s->parent_id, parent_id, 8);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->kind = kind;
    s->start_ns = d11_span_now_ns();
    s->end_ns = s->start_ns;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int d11_trace_id_parse(const char *hex, size_t n, uint8_t out[16])
{
    if (n != 32) return -EINVAL;
    for (size_t i = 0; i < 16; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return all_zero(out, 16) ? -EINVAL : 0;
}

void d11_otlp_render(d11_buf *b, const char *service, const d11_span *v, uint32_t n)
{
    d11_buf_puts(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
    d11_buf_json_str(b, service, strlen(service));
    d11_buf_puts(b, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"d11\",\"version\":\"" D11_VERSION "\"},\"spans\":[");
    for (uint32_t i = 0; i < n; i++) {
        const d11_span *s = &v[i];
        char tid[33], sid[17], pid[17];
        d11_hex(s->trace_id, 16, tid);
        d11_hex(s->span_id, 8, sid);
        d11_hex(s->parent_id, 8, pid);
        d11_buf_printf(b, "%s{\"traceId\":\"%s\",\"spanId\":\"%s\"", i ? "," : "", tid, sid);
        if (!all_zero(s->parent_id, 8)) d11_buf_printf(b, ",\"parentSpanId\":\"%s\"", pid);
        if (s->tracestate[0]) {
            d11_buf_puts(b, ",\"traceState\":");
            d11_buf_json_str(b, s->tracestate, strlen(s->tracestate));
        }
        d11_buf_puts(b, ",\"name\":");
        d11_buf_json_str(b, s->name, strlen(s->name));
        d11_buf_printf(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\",\"attributes\":[",
                       s->kind, (long long)s->start_ns, (long long)s->end_ns);
        for (int k = 0; k < s->nattr; k++) {
            const d11_span_attr *a = &s->attr[k];
            d11_buf_printf(b, "%s{\"key\":", k ? "," : "");
            d11_buf_json_str(b, a->key, strlen(a->key));
            if (a->is_int) d11_buf_printf(b, ",\"value\":{\"intValue\":\"%lld\"}}", (long long)a->i);
            else {
                d11_buf_puts(b, ",\"value\":{\"stringValue\":");
                d11_buf_json_str(b, a->s, strlen(a->s));
                d11_buf_puts(b, "}}");
            }
        }
        d11_buf_printf(b, "],\"status\":{\"code\":%d}}", s->error ? 2 : 0);
    }
    d11_buf_puts(b, "]}]}]}");
}

bool d11_span_open_event(d11_span *s, const char *ev, size_t n, const char *system, const char *dest)
{
    char hex[40], id[48];
    uint8_t tid[16];
    int k = d11_json_find_str(ev, n, "trace_id", hex, sizeof hex);
    if (k < 0 || d11_trace_id_parse(hex, (size_t)k, tid) < 0) return false;
    d11_span_open(s, tid, NULL, "event.publish", D11_SPAN_PRODUCER);
    if (d11_json_find_str(ev, n, "id", id, sizeof id) >= 0) d11_span_attr_str(s, "d11.event_id", id);
    d11_span_attr_str(s, "messaging.system", system);
    d11_span_attr_str(s, "messaging.destination", dest);
    D11_ASSERT(s->nattr <= 3 && memcmp(s->trace_id, tid, 16) == 0);
    return true;
}

static void *exporter_main(void *arg)
{
    d11_otlp *o = arg;
    d11_url url;
    char err[128];
    int rc = d11_url_parse(o->endpoint, &url, err, sizeof err);
    D11_ASSERT(rc == 0); /* checked by d11_otlp_start */
    const char *path = url.base[0] ? "" : "/v1/traces";
    d11_httpc c;
    d11_httpc_init(&c, &url, D11_OTLP_TIMEOUT_MS);
    d11_span *batch = malloc(sizeof *batch * D11_OTLP_BATCH_MAX);
    D11_ASSERT(batch);
    d11_buf body;
    d11_buf_init(&body, 1 << 16);
    pthread_mutex_lock(&o->mu);
    for (;;) {
        if (o->len < D11_OTLP_BATCH_MAX && !o->stop) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)D11_OTLP_FLUSH_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&o->cv, &o->mu, &ts);
        }
        uint32_t n = 0;
        while (n < D11_OTLP_BATCH_MAX && o->len) {
            batch[n++] = o->q[o->head];
            o->head = (o->head + 1) % D11_OTLP_QUEUE_MAX;
            o->len--;
        }
        bool stopping = o->stop;
        pthread_mutex_unlock(&o->mu);
        if (n) {
            d11_buf_reset(&body);
            d11_otlp_render(&body, o->service, batch, n);
            rc = d11_httpc_do(&c, "POST", path, "Content-Type: application/json\r\n", body.data, body.len);
            if (rc == 0 && c.status >= 200 && c.status < 300) atomic_fetch_add(&o->exported, n);
            else {
                atomic_fetch_add(&o->failed, n);
                d11_log(D11_LOG_DEBUG, "otlp: POST %s failed (%s, status %d): %u spans dropped", o->endpoint,
                        rc ? d11_strerror(rc) : "answered", c.status, n);
            }
        }
        pthread_mutex_lock(&o->mu);
        if (stopping && o->len == 0) break;
    }
    pthread_mutex_unlock(&o->mu);
    d11_buf_free(&body);
    free(batch);
    d11_httpc_release(&c);
    return NULL;
}

int d11_otlp_start(d11_otlp *o, const char *endpoint, const char *service, double ratio, int64_t slow_ms,
                   char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (!endpoint || !endpoint[0]) return 0;
    d11_url url;
    if (strlen(endpoint) >= sizeof o->endpoint || d11_url_parse(endpoint, &url, err, errlen) < 0) {
        if (strlen(endpoint) >= sizeof o->endpoint) snprintf(err, errlen, "otlp-endpoint: too long");
        return -1;
    }
    if (!(ratio >= 0 && ratio <= 1)) {
        snprintf(err, errlen, "trace-ratio: expected 0..1");
        return -1;
    }
    snprintf(o->endpoint, sizeof o->endpoint, "%s", endpoint);
    snprintf(o->service, sizeof o->service, "%s", service);
    o->ratio_threshold = ratio >= 1 ? UINT64_MAX : (uint64_t)(ratio * 18446744073709551615.0);
    o->slow_ns = slow_ms * 1000000;
    o->q = calloc(D11_OTLP_QUEUE_MAX, sizeof *o->q);
    if (!o->q) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    int e = pthread_create(&o->th, NULL, exporter_main, o);
    if (e) {
        snprintf(err, errlen, "cannot start the exporter thread: %s", strerror(e));
        free(o->q);
        return -1;
    }
    o->on = true;
    return 0;
}

void d11_otlp_stop(d11_otlp *o)
{
    if (!o->on) return;
    pthread_mutex_lock(&o->mu);
    o->stop = true;
    pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
    pthread_join(o->th, NULL);
    pthread_mutex_destroy(&o->mu);
    pthread_cond_destroy(&o->cv);
    free(o->q);
    o->q = NULL;
    o->on = false;
}

bool d11_otlp_head_sampled(const d11_otlp *o, const uint8_t trace_id[16])
{
    uint64_t low = 0;
    for (int i = 8; i < 16; i++) low = low << 8 | trace_id[i];
    return o->ratio_threshold == UINT64_MAX || low < o->ratio_threshold;
}

void d11_otlp_end(d11_otlp *o, const d11_span *s, bool head_sampled)
{
    if (!o->on) return;
    if (!head_sampled && !s->error && s->end_ns - s->start_ns < o->slow_ns) return;
    pthread_mutex_lock(&o->mu);
    if (o->len == D11_OTLP_QUEUE_MAX) {
        pthread_mutex_unlock(&o->mu);
        atomic_fetch_add(&o->dropped, 1);
        return;
    }
    o->q[(o->head + o->len) % D11_OTLP_QUEUE_MAX] = *s;
    o->len++;
    if (o->len >= D11_OTLP_BATCH_MAX) pthread_cond_signal(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

void d11_otlp_metrics(d11_otlp *o, d11_buf *b, const char *part)
{
    if (!o->on) return;
    d11_prom_head(b, "d11_otlp_spans_exported_total", "counter", "Spans accepted by the OTLP endpoint.");
    d11_buf_printf(b, "d11_otlp_spans_exported_total{part=\"%s\"} %llu\n", part,
                   (unsigned long long)atomic_load(&o->exported));
    d11_prom_head(b, "d11_otlp_spans_dropped_total", "counter", "Spans dropped because the export queue was full.");
    d11_buf_printf(b, "d11_otlp_spans_dropped_total{part=\"%s\"} %llu\n", part,
                   (unsigned long long)atomic_load(&o->dropped));
    d11_prom_head(b, "d11_otlp_spans_failed_total", "counter", "Spans lost with a failed POST to the endpoint.");
    d11_buf_printf(b, "d11_otlp_spans_failed_total{part=\"%s\"} %llu\n", part,
                   (unsigned long long)atomic_load(&o->failed));
}
