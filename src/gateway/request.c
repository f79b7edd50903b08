/*
 * request.c — the handlers' common ground (see request.h): error answers, path
 * parameters, and forwarding one wire request with the translation of its reply.
 * Thread: the connection's thread.
 */
#include "request.h"
#include "products.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void gw_fail(gw_thread *t, gw_req *rq, int status, const char *code, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_respond_error(t, rq->c, rq->si, status, code, msg, "");
}

void gw_fail_body(gw_thread *t, gw_req *rq, const d11_gw_err *e)
{
    D11_ASSERT(e->status >= 400 && e->status < 500);
    gw_respond_error(t, rq->c, rq->si, e->status, e->code, e->msg, "");
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    ch |= 32;
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

long gw_pct_decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0) return -1;
            c = (char)(h * 16 + l);
            i += 2;
        }
        if (k >= cap) return -1;
        out[k++] = c;
    }
    return (long)k;
}

bool gw_param_order_id(d11_str seg, uint64_t *id)
{
    char buf[24];
    long n = gw_pct_decode(seg.p, seg.n, buf, sizeof buf);
    return n >= 1 && n <= 20 && d11_parse_u64(buf, (size_t)n, UINT64_MAX, id) == 0;
}

bool gw_param_sku(d11_str seg, char *buf, size_t cap, d11_str *out)
{
    long n = gw_pct_decode(seg.p, seg.n, buf, cap);
    if (n < 1 || !d11_sku_valid(buf, (size_t)n)) return false;
    out->p = buf;
    out->n = (size_t)n;
    return true;
}

/* ---- forwarding ---- */

/* Tell the target's circuit breaker how the call went (error: no answer or a 5xx). */
static void breaker_done(gw_thread *t, const gw_pend *p, bool error)
{
    int64_t now = gw_now_ms(t);
    int64_t rt = now - (p->deadline_ms - t->gw->cfg.request_timeout_ms);
    gw_breaker_done(&t->gw->brk[p->target], now, rt, error, p->brk_probe);
}

void gw_forward_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    int target = p->target, si;
    breaker_done(t, p, !f || f->hdr.status >= 500);
    gw_conn *c = gw_slot_deref(t, p->arg, &si);
    if (!f) {
        gw_ctr_add(&t->m.uperr[target][uperr], 1);
        if (!c) return; /* the client went away */
        if (uperr == GW_UPERR_TIMEOUT) {
            char msg[128];
            snprintf(msg, sizeof msg, "%s did not answer within %lld ms", gw_up_name(t, target),
                     (long long)t->gw->cfg.request_timeout_ms);
            gw_respond_error(t, c, si, 504, "timeout", msg, "");
        } else {
            char msg[64];
            snprintf(msg, sizeof msg, "connection to %s lost", gw_up_name(t, target));
            gw_respond_error(t, c, si, 503, "unavailable", msg, "");
        }
        return;
    }
    d11_str code, body;
    uint32_t st = f->hdr.status;
    bool dec_ok = d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) == 0;
    if (dec_ok && st >= 200 && st < 300 && !(f->hdr.flags & D11_WF_STRESS) &&
        (f->hdr.type == D11_MSG_ORDER_CREATE || f->hdr.type == D11_MSG_ORDER_CANCEL))
        gw_products_saw_order(t, body.p, body.n); /* even when the client went away */
    if (!c) return;
    if (!dec_ok || st < 200 || st > 599) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_PROTOCOL], 1);
        char msg[64];
        snprintf(msg, sizeof msg, "invalid reply from %s", gw_up_name(t, target));
        gw_respond_error(t, c, si, 502, "bad_gateway", msg, "");
        return;
    }
    if (st < 300) {
        gw_respond_json(t, c, si, (int)st, body.p, body.n);
        return;
    }
    if (st >= 500) gw_ctr_add(&t->m.uperr[target][GW_UPERR_5XX], 1);
    char codebuf[64], msgbuf[512];
    snprintf(codebuf, sizeof codebuf, "%.*s", (int)(code.n ? code.n : 8), code.n ? code.p : "internal");
    snprintf(msgbuf, sizeof msgbuf, "%.*s", (int)(body.n < 500 ? body.n : 500), body.p);
    gw_respond_error(t, c, si, (int)st, codebuf, msgbuf, st == 429 ? "Retry-After: 1\r\n" : "");
}

void gw_forward(gw_thread *t, gw_req *rq, int target, uint16_t type)
{
    gw_forward_with(t, rq, target, type, gw_forward_done, NULL);
}

void gw_forward_with(gw_thread *t, gw_req *rq, int target, uint16_t type, gw_up_cb *cb, void *ctx)
{
    D11_ASSERT(target >= 0 && target < GW_UP_N);
    if (!gw_up_ready(t, target)) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_UNAVAILABLE], 1);
        gw_fail(t, rq, 503, "unavailable", "%s is unavailable", gw_up_name(t, target));
        return;
    }
    if (gw_up_backlog(t, target) > GW_UP_BACKLOG_MAX) {
        gw_ctr_add(&t->m.uperr[target][GW_UPERR_UNAVAILABLE], 1);
        gw_fail(t, rq, 503, "unavailable", "%s is overloaded", gw_up_name(t, target));
        return;
    }
    bool probe;
    if (!gw_breaker_allow(&t->gw->brk[target], gw_now_ms(t), &probe)) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s is failing: its circuit breaker is open", gw_up_name(t, target));
        gw_respond_error(t, rq->c, rq->si, 503, "unavailable", msg, "Retry-After: 1\r\n");
        return;
    }
    gw_pend *p = gw_pend_alloc(t, GW_PC_REQ, cb, ctx, gw_slot_ref_of(rq->c, rq->si));
    if (!p) {
        if (probe) gw_breaker_done(&t->gw->brk[target], gw_now_ms(t), 0, true, true);
        gw_ctr_add(&t->m.pending_full, 1);
        gw_fail(t, rq, 503, "unavailable", "gateway is at its in-flight limit");
        return;
    }
    p->brk_probe = probe;
    const gw_slot *s = &rq->c->slots[rq->si];
    if (rq->pace_ms > 0 && gw_pace_push(t, gw_now_ms(t) + rq->pace_ms, target, p, type, rq->flags, s->trace_id,
                                        s->span_id, s->trace_flags, (uint32_t)t->gw->cfg.request_timeout_ms))
        return; /* sent when its turn comes (pace.c) */
    gw_up_send(t, target, p, type, rq->flags, s->trace_id, s->span_id, s->trace_flags,
               (uint32_t)t->gw->cfg.request_timeout_ms);
}
