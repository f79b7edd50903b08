/*
 * pace.c — a gateway thread's pacing queue (see pace.h). The queue is unordered; the
 * timer scans it (at most D11_PACE_QUEUE_MAX entries), sends what is due and re-arms for
 * the earliest remaining turn.
 */
#include "pace.h"

#include <stdlib.h>
#include <string.h>

#include "gw.h"

static void pace_fire(d11_loop *l, d11_timer *tm);

static void rearm(gw_thread *t)
{
    gw_pace *pc = &t->pace;
    if (!pc->n) {
        d11_timer_stop(&t->loop, &pc->timer);
        return;
    }
    int64_t first = pc->q[0].due_ms;
    for (int i = 1; i < pc->n; i++)
        if (pc->q[i].due_ms < first) first = pc->q[i].due_ms;
    int64_t after = first - gw_now_ms(t);
    d11_timer_start(&t->loop, &pc->timer, after < 0 ? 0 : after, 0, pace_fire, t);
}

bool gw_pace_push(gw_thread *t, int64_t due_ms, int target, gw_pend *p, uint16_t type, uint16_t flags,
                  const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t trace_flags, uint32_t deadline_ms)
{
    gw_pace *pc = &t->pace;
    if (!pc->q) pc->q = calloc(D11_PACE_QUEUE_MAX, sizeof *pc->q);
    if (!pc->q || pc->n >= D11_PACE_QUEUE_MAX) {
        pc->full_total++;
        return false;
    }
    gw_paced *e = &pc->q[pc->n++];
    e->due_ms = due_ms;
    e->req_id = p->req_id;
    e->p = p;
    e->target = target;
    e->type = type;
    e->flags = flags;
    memcpy(e->trace_id, trace_id, 16);
    memcpy(e->span_id, span_id, 8);
    e->trace_flags = trace_flags;
    e->deadline_ms = deadline_ms;
    d11_buf_reset(&e->payload);
    d11_buf_append(&e->payload, t->tmp.data, t->tmp.len);
    pc->queued_total++;
    rearm(t);
    return true;
}

static void pace_fire(d11_loop *l, d11_timer *tm)
{
    (void)tm;
    gw_thread *t = gw_thread_of(l);
    gw_pace *pc = &t->pace;
    int64_t now = gw_now_ms(t);
    for (int i = 0; i < pc->n;) {
        gw_paced *e = &pc->q[i];
        if (e->due_ms > now) {
            i++;
            continue;
        }
        if (gw_pend_waiting(t, e->p, e->req_id)) {
            if (gw_up_writable(t, e->target)) {
                d11_buf_reset(&t->tmp);
                d11_buf_append(&t->tmp, e->payload.data, e->payload.len);
                gw_up_send(t, e->target, e->p, e->type, e->flags, e->trace_id, e->span_id, e->trace_flags,
                           e->deadline_ms);
            } else {
                gw_pend_fail(t, e->p, GW_UPERR_UNAVAILABLE);
            }
        } /* else: it timed out while waiting its turn (answered 504) */
        gw_paced last = pc->q[--pc->n]; /* swap-remove; keep the payload buffers */
        if (i != pc->n) {
            d11_buf keep = e->payload;
            *e = last;
            pc->q[pc->n].payload = keep;
        }
    }
    rearm(t);
}

void gw_pace_release(gw_thread *t)
{
    gw_pace *pc = &t->pace;
    d11_timer_stop(&t->loop, &pc->timer);
    if (pc->q)
        for (int i = 0; i < D11_PACE_QUEUE_MAX; i++) d11_buf_free(&pc->q[i].payload);
    free(pc->q);
    pc->q = NULL;
    pc->n = 0;
}
