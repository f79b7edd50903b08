/*
 * probes.c — the operations endpoints (see probes.h): /healthz, /readyz and /admin/cells
 * (a fan-out of PING, and STATS for /admin/cells, to the center and every cell of the
 * routing table, D11_GW_PROBE_TIMEOUT_MS budget, answered when the last part is in),
 * /metrics (a fan-out of METRICS to the same parts, merged with the gateway's own
 * families into one exposition) and the dashboard.
 *
 * A fan-out (gw_agg) is allocated per probe (rare, not the order path), at most
 * D11_GW_AGG_MAX per thread; each of its pending requests carries the gw_agg as context
 * and (part << 8 | sub) as argument. The gw_agg is freed by agg_finish once every part
 * has completed, whether or not the client is still there.
 * Thread: the connection's thread.
 */
#include "probes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/promtext.h"
#include "metrics.h"
#include "sale.h"

enum { AGG_READY = 0, AGG_CELLS, AGG_METRICS, AGG_SAMPLE };
enum { SUB_PING = 0, SUB_STATS, SUB_METRICS };

typedef struct gw_agg_part {
    uint8_t  target;
    int8_t   ping_ok;  /* -1 waiting, 0 failed, 1 answered */
    int8_t   stats_ok;
    int64_t  sent_us, rtt_us;
    d11_buf  ping_txt, stats_txt;
} gw_agg_part;

typedef struct gw_agg {
    int         kind;
    gw_slot_ref ref;
    int         outstanding;
    int         nparts;
    gw_agg_part part[GW_UP_N];
} gw_agg;

static void agg_finish(gw_thread *t, gw_agg *a);

static void agg_part_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr);

static void agg_send(gw_thread *t, gw_conn *c, int si, gw_agg *a, int k, int sub)
{
    gw_agg_part *pt = &a->part[k];
    gw_pend *p = gw_pend_alloc(t, GW_PC_PROBE, agg_part_done, a, (uint64_t)k << 8 | (uint64_t)sub);
    if (!p) {
        if (sub == SUB_PING) pt->ping_ok = 0;
        else pt->stats_ok = 0;
        return;
    }
    d11_buf_reset(&t->tmp);
    gw_slot *s = c ? &c->slots[si] : NULL; /* NULL: the dashboard's own sample (no client) */
    int type = sub == SUB_PING ? D11_MSG_PING : sub == SUB_STATS ? D11_MSG_STATS : D11_MSG_METRICS;
    gw_up_send(t, pt->target, p, type, 0, s ? s->trace_id : NULL, s ? s->span_id : NULL, s ? s->trace_flags : 0,
               D11_GW_PROBE_TIMEOUT_MS);
    a->outstanding++;
}

static void agg_start(gw_thread *t, gw_req *rq, int kind)
{
    gw_conn *c = rq->c;
    int si = rq->si;
    if (t->nagg >= D11_GW_AGG_MAX) {
        gw_fail(t, rq, 503, "unavailable", "too many probes in flight");
        return;
    }
    gw_agg *a = calloc(1, sizeof *a);
    if (!a) {
        gw_fail(t, rq, 503, "unavailable", "out of memory");
        return;
    }
    t->nagg++;
    bool live;
    a->kind = kind;
    a->ref = gw_slot_ref_of(c, si);
    a->nparts = 1 + (int)gw_routing(t, &live)->ncells;
    int64_t now = d11_mono_us();
    for (int k = 0; k < a->nparts; k++) {
        gw_agg_part *pt = &a->part[k];
        pt->target = (uint8_t)(k == 0 ? GW_UP_CENTER : gw_up_cell(k - 1));
        pt->ping_ok = pt->stats_ok = -1;
        pt->sent_us = now;
        if (!gw_up_writable(t, pt->target)) {
            pt->ping_ok = pt->stats_ok = 0;
            continue;
        }
        if (kind == AGG_METRICS) {
            pt->ping_ok = 0;
            agg_send(t, c, si, a, k, SUB_METRICS);
            continue;
        }
        agg_send(t, c, si, a, k, SUB_PING);
        if (kind == AGG_CELLS) agg_send(t, c, si, a, k, SUB_STATS);
        else pt->stats_ok = 0;
    }
    if (a->outstanding == 0) agg_finish(t, a);
}

static void reply_text(const d11_frame *f, d11_buf *out)
{
    d11_str code, body;
    d11_buf_reset(out);
    if (d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0) {
        d11_buf_append(out, body.p, body.n);
        return;
    }
    d11_wdec d;
    d11_wdec_init(&d, f->payload, f->payload_len);
    size_t n;
    const char *s = d11_wdec_str(&d, &n);
    if (s && d11_wdec_done(&d)) d11_buf_append(out, s, n);
}

/* Completion of one PING or STATS (arg: part << 8 | sub); the last one answers. */
static void agg_part_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)uperr;
    gw_agg *a = p->ctx;
    int part = (int)(p->arg >> 8), sub = (int)(p->arg & 0xFF);
    D11_ASSERT(part < a->nparts && a->outstanding > 0);
    gw_agg_part *pt = &a->part[part];
    if (!f) {
        if (sub == SUB_PING) pt->ping_ok = 0;
        else pt->stats_ok = 0;
        if (--a->outstanding == 0) agg_finish(t, a);
        return;
    }
    bool ok = f->hdr.status >= 200 && f->hdr.status < 300;
    if (sub == SUB_PING) {
        pt->ping_ok = ok;
        pt->rtt_us = d11_mono_us() - pt->sent_us;
        reply_text(f, &pt->ping_txt);
    } else {
        pt->stats_ok = ok;
        reply_text(f, &pt->stats_txt);
    }
    if (--a->outstanding == 0) agg_finish(t, a);
}

static void json_text_or_raw(d11_buf *b, const d11_buf *txt)
{
    size_t s = 0, e = txt->len;
    while (s < e && (txt->data[s] == ' ' || txt->data[s] == '\n')) s++;
    while (e > s && (txt->data[e - 1] == ' ' || txt->data[e - 1] == '\n')) e--;
    if (e > s && txt->data[s] == '{' && txt->data[e - 1] == '}' &&
        d11_utf8_valid(txt->data + s, e - s) && !memchr(txt->data + s, 0, e - s))
        d11_buf_append(b, txt->data + s, e - s);
    else
        d11_buf_json_str(b, txt->len ? txt->data : "", txt->len);
}

static void render_routing_brief(gw_thread *t, d11_buf *b)
{
    bool live;
    const d11_routing *rt = gw_routing(t, &live);
    d11_buf_printf(b, "{\"version\":%u,\"source\":\"%s\",\"ncells\":%u}", rt->version,
                   live ? "center" : "default", rt->ncells);
}

/* /metrics: the gateway's own families, then every part's (METRICS replies), merged into
 * one exposition (core/promtext.h); d11_part_up says which parts answered. */
static void metrics_finish(gw_thread *t, gw_conn *c, int si, gw_agg *a)
{
    d11_buf own;
    d11_buf_init(&own, 16384);
    gw_metrics_render(t->gw, &own);
    d11_prom_process(&own, "gateway");
    d11_otlp_metrics(&t->gw->otlp, &own, "gateway");
    d11_prom_head(&own, "d11_part_up", "gauge", "1 when the part answered the gateway's metrics fan-out.");
    d11_buf_puts(&own, "d11_part_up{part=\"gateway\"} 1\n");
    for (int k = 0; k < a->nparts; k++) {
        if (k == 0) d11_buf_printf(&own, "d11_part_up{part=\"center\"} %d\n", a->part[k].stats_ok == 1);
        else d11_buf_printf(&own, "d11_part_up{part=\"cell-%d\"} %d\n", k - 1, a->part[k].stats_ok == 1);
    }
    const char *texts[GW_UP_N + 1];
    size_t lens[GW_UP_N + 1];
    int n = 0;
    texts[n] = own.data;
    lens[n++] = own.len;
    for (int k = 0; k < a->nparts; k++)
        if (a->part[k].stats_ok == 1) {
            texts[n] = a->part[k].stats_txt.data;
            lens[n++] = a->part[k].stats_txt.len;
        }
    d11_buf_reset(&t->tmp);
    d11_prom_merge(&t->tmp, texts, lens, n);
    d11_buf_free(&own);
    gw_respond(t, c, si, 200, "text/plain; version=0.0.4; charset=utf-8", "", t->tmp.data, t->tmp.len);
}

void gw_sale_fanout(gw_thread *t)
{
    if (t->nagg >= D11_GW_AGG_MAX) return;
    gw_agg *a = calloc(1, sizeof *a);
    if (!a) return;
    t->nagg++;
    bool live;
    a->kind = AGG_SAMPLE;
    a->nparts = 1 + (int)gw_routing(t, &live)->ncells;
    for (int k = 0; k < a->nparts; k++) {
        gw_agg_part *pt = &a->part[k];
        pt->target = (uint8_t)(k == 0 ? GW_UP_CENTER : gw_up_cell(k - 1));
        pt->ping_ok = 0;
        pt->stats_ok = -1;
        if (!gw_up_writable(t, pt->target)) {
            pt->stats_ok = 0;
            continue;
        }
        agg_send(t, NULL, 0, a, k, SUB_METRICS);
    }
    if (a->outstanding == 0) agg_finish(t, a);
}

static void agg_finish(gw_thread *t, gw_agg *a)
{
    int si;
    gw_conn *c = a->kind == AGG_SAMPLE ? NULL : gw_slot_deref(t, a->ref, &si);
    if (a->kind == AGG_SAMPLE) {
        const char *texts[GW_UP_N];
        size_t lens[GW_UP_N];
        bool ok[GW_UP_N];
        for (int k = 0; k < a->nparts; k++) {
            ok[k] = a->part[k].stats_ok == 1;
            texts[k] = a->part[k].stats_txt.data ? a->part[k].stats_txt.data : "";
            lens[k] = ok[k] ? a->part[k].stats_txt.len : 0;
        }
        gw_sale_ingest(t, texts, lens, ok, a->nparts);
    } else if (c && a->kind == AGG_METRICS) {
        metrics_finish(t, c, si, a);
    } else if (c) {
        d11_buf *b = &t->tmp;
        d11_buf_reset(b);
        bool all_ok = true;
        char down[512] = "";
        size_t dl = 0;
        for (int k = 0; k < a->nparts; k++)
            if (a->part[k].ping_ok != 1) {
                all_ok = false;
                const char *nm = gw_up_name(t, a->part[k].target);
                int w = snprintf(down + dl, sizeof down - dl, "%s%s", dl ? ", " : "", nm);
                if (w > 0 && (size_t)w < sizeof down - dl) dl += (size_t)w;
            }
        if (a->kind == AGG_READY) d11_buf_printf(b, "{\"status\":\"%s\",", all_ok ? "ok" : "unavailable");
        else d11_buf_puts(b, "{");
        d11_buf_puts(b, "\"routing\":");
        render_routing_brief(t, b);
        for (int k = 0; k < a->nparts; k++) {
            gw_agg_part *pt = &a->part[k];
            if (k == 0) d11_buf_puts(b, ",\"center\":");
            else d11_buf_printf(b, "%s{\"id\":%d,", k == 1 ? ",\"cells\":[" : ",", k - 1);
            if (k == 0) d11_buf_puts(b, "{");
            d11_buf_printf(b, "\"up\":%s,\"connected\":%s", pt->ping_ok == 1 ? "true" : "false",
                           gw_up_ready(t, pt->target) ? "true" : "false");
            if (pt->ping_ok == 1) d11_buf_printf(b, ",\"latency_ms\":%.3f", (double)pt->rtt_us / 1000.0);
            if (a->kind == AGG_CELLS) {
                d11_buf_puts(b, ",\"ping\":");
                d11_buf_json_str(b, pt->ping_txt.len ? pt->ping_txt.data : "", pt->ping_txt.len);
                d11_buf_puts(b, ",\"stats\":");
                if (pt->stats_ok == 1) json_text_or_raw(b, &pt->stats_txt);
                else d11_buf_puts(b, "null");
            }
            d11_buf_puts(b, "}");
        }
        if (a->nparts > 1) d11_buf_puts(b, "]");
        int status = 200;
        if (a->kind == AGG_READY && !all_ok) {
            status = 503;
            d11_buf_puts(b, ",\"error\":{\"code\":\"unavailable\",\"message\":");
            char msg[600];
            snprintf(msg, sizeof msg, "not ready: %s down", down);
            d11_buf_json_str(b, msg, strlen(msg));
            d11_buf_printf(b, ",\"request_id\":\"%s\"}", c->slots[si].rid);
        }
        d11_buf_puts(b, "}");
        gw_respond_json(t, c, si, status, b->data, b->len);
    }
    for (int k = 0; k < a->nparts; k++) {
        d11_buf_free(&a->part[k].ping_txt);
        d11_buf_free(&a->part[k].stats_txt);
    }
    free(a);
    t->nagg--;
}


void gw_h_healthz(gw_thread *t, gw_req *rq)
{
    gw_respond_json(t, rq->c, rq->si, 200, "{\"status\":\"ok\"}", 15);
}

void gw_h_readyz(gw_thread *t, gw_req *rq) { agg_start(t, rq, AGG_READY); }

void gw_h_admin_cells(gw_thread *t, gw_req *rq) { agg_start(t, rq, AGG_CELLS); }

void gw_h_metrics(gw_thread *t, gw_req *rq) { agg_start(t, rq, AGG_METRICS); }

void gw_h_dashboard(gw_thread *t, gw_req *rq)
{
    gw_respond(t, rq->c, rq->si, 200, "text/html; charset=utf-8", "Cache-Control: no-store\r\n",
               gw_dashboard_html, strlen(gw_dashboard_html));
}
