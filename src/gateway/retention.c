/*
 * retention.c — outbox retention driven by the gateway (events.h). Only the gateway knows
 * the sinks: the named consumers (DATA/consumers) and the webhooks (registry cursors, as
 * persisted). Every D11_EVENTS_PRUNE_MS, thread 0 computes per cell and stream the lowest
 * position any sink of that stream holds (no sink: no bound) and sends EVENTS_PRUNE with
 * that and the age cutoff (now - --events-retention-ms) to every cell. The cell deletes at
 * most D11_EVENTS_PRUNE_ROWS of the oldest qualifying events in its next batch, so a round
 * never costs a commit more than one bounded range delete; a backlog drains over rounds.
 * A plain GET /v1/events reader is not a sink: its cursor may expire (410) once the
 * window has passed — use a named consumer to hold events.
 * Thread: gateway thread 0 (the round state in gw_events is touched only there); the
 * gauges are atomics read by /metrics on any thread.
 */
#include "events.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw.h"
#include "request.h"

static void lower(uint64_t bound[D11_CELLS_MAX], const char *cur, size_t n, int want_shadow)
{
    int sh;
    uint64_t pos[D11_CELLS_MAX];
    if (gw_cursor_decode(cur, n, &sh, pos) < 0 || sh != want_shadow) return;
    for (int k = 0; k < D11_CELLS_MAX; k++)
        if (pos[k] < bound[k]) bound[k] = pos[k];
}

/* The lowest position of every sink of stream sh, per cell (UINT64_MAX: no sink). */
static void sink_bounds(struct gw *g, int sh, uint64_t bound[D11_CELLS_MAX])
{
    for (int k = 0; k < D11_CELLS_MAX; k++) bound[k] = UINT64_MAX;
    char dir[1200], path[1500], cur[D11_HTTP_URL_BYTES_MAX];
    snprintf(dir, sizeof dir, "%.1100s/consumers", g->cfg.data_dir);
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%.200s", dir, e->d_name);
        FILE *f = fopen(path, "re");
        if (!f) continue;
        size_t n = fread(cur, 1, sizeof cur - 1, f);
        fclose(f);
        while (n && (cur[n - 1] == '\n' || cur[n - 1] == ' ')) n--;
        lower(bound, cur, n, sh);
    }
    if (d) closedir(d);
    if (sh != 0) return;
    gw_hooks *hs = &g->hooks;
    pthread_mutex_lock(&hs->mu);
    for (int i = 0; i < D11_WEBHOOKS_MAX; i++)
        if (hs->h[i].used) lower(bound, hs->h[i].cursor, strlen(hs->h[i].cursor), 0);
    pthread_mutex_unlock(&hs->mu);
}

static void prune_done(gw_thread *t, const gw_pend *p, const d11_frame *f, int uperr)
{
    (void)uperr;
    gw_events *ev = &t->gw->events;
    int k = (int)(p->arg >> 1), sh = (int)(p->arg & 1);
    D11_ASSERT(ev->prune_outstanding > 0 && k < D11_CELLS_MAX);
    ev->prune_outstanding--;
    d11_str code, body;
    if (!f || f->hdr.status != 200 || d11_msg_reply_dec(f->payload, f->payload_len, &code, &body) < 0) return;
    char txt[96];
    size_t n = body.n < sizeof txt - 1 ? body.n : sizeof txt - 1;
    memcpy(txt, body.p, n);
    txt[n] = 0;
    unsigned long long upto, head;
    long long oldest;
    if (sscanf(txt, "%llu %llu %lld", &upto, &head, &oldest) != 3) return;
    if (upto > atomic_load(&ev->pruned[sh][k])) atomic_store(&ev->pruned[sh][k], upto);
    if (head > atomic_load(&ev->head[sh][k])) atomic_store(&ev->head[sh][k], head);
    atomic_store(&ev->oldest_at[sh][k], (int64_t)oldest);
}

void gw_events_retention_tick(gw_thread *t)
{
    struct gw *g = t->gw;
    gw_events *ev = &g->events;
    int64_t now = gw_now_ms(t);
    if (ev->prune_outstanding || now < ev->prune_next_ms) return;
    ev->prune_next_ms = now + D11_EVENTS_PRUNE_MS;
    bool live;
    int ncells = (int)gw_routing(t, &live)->ncells;
    int64_t cutoff = g->cfg.events_retention_ms > 0 ? d11_wall_ms() - g->cfg.events_retention_ms : 0;
    atomic_fetch_add(&ev->prune_rounds, 1);
    for (int sh = 0; sh < 2; sh++) {
        uint64_t bound[D11_CELLS_MAX];
        sink_bounds(g, sh, bound);
        for (int k = 0; k < ncells; k++) {
            int target = gw_up_cell(k);
            if (!gw_up_writable(t, target)) continue;
            gw_pend *p = gw_pend_alloc(t, GW_PC_PROBE, prune_done, NULL, (uint64_t)k << 1 | (uint64_t)sh);
            if (!p) return;
            /* cutoff 0 (retention off): nothing is old enough; the reply still feeds the gauges */
            d11_msg_events_prune m = {.shadow = (uint8_t)sh, .through = bound[k], .cutoff_ms = (uint64_t)(cutoff > 0 ? cutoff : 0)};
            d11_buf_reset(&t->tmp);
            d11_msg_events_prune_enc(&t->tmp, &m);
            ev->prune_outstanding++;
            gw_up_send(t, target, p, D11_MSG_EVENTS_PRUNE, sh ? D11_WF_STRESS : 0, NULL, NULL, 0,
                       D11_GW_PROBE_TIMEOUT_MS);
        }
        /* The center's outbox (product events, real stream only) sits in slot GW_EV_CENTER. */
        if (sh == 0 && ncells < D11_CELLS_MAX && gw_up_writable(t, GW_UP_CENTER)) {
            gw_pend *p = gw_pend_alloc(t, GW_PC_PROBE, prune_done, NULL, (uint64_t)GW_EV_CENTER << 1);
            if (!p) return;
            d11_msg_events_prune m = {.shadow = 0, .through = bound[GW_EV_CENTER],
                                      .cutoff_ms = (uint64_t)(cutoff > 0 ? cutoff : 0)};
            d11_buf_reset(&t->tmp);
            d11_msg_events_prune_enc(&t->tmp, &m);
            ev->prune_outstanding++;
            gw_up_send(t, GW_UP_CENTER, p, D11_MSG_EVENTS_PRUNE, 0, NULL, NULL, 0, D11_GW_PROBE_TIMEOUT_MS);
        }
    }
}

/* The label of slot k in the retention gauges: a cell's number, or "center". */
static const char *slot_label(int k, char buf[16])
{
    if (k == GW_EV_CENTER) return "center";
    snprintf(buf, 16, "%d", k);
    return buf;
}

void gw_retention_metrics(gw_events *ev, d11_buf *b)
{
    d11_buf_puts(b, "# HELP d11_events_outbox_events Outbox events kept per cell and stream (id distance between"
                    " the retention watermark and the newest event: an upper bound).\n"
                    "# TYPE d11_events_outbox_events gauge\n");
    int64_t now = d11_wall_ms();
    for (int sh = 0; sh < 2; sh++)
        for (int k = 0; k < D11_CELLS_MAX; k++) {
            uint64_t h = atomic_load(&ev->head[sh][k]), p = atomic_load(&ev->pruned[sh][k]);
            char lb[16];
            if (h) d11_buf_printf(b, "d11_events_outbox_events{cell=\"%s\",stream=\"%s\"} %llu\n", slot_label(k, lb),
                                  sh ? "stress" : "real", (unsigned long long)(h > p ? h - p : 0));
        }
    d11_buf_puts(b, "# HELP d11_events_oldest_age_seconds Age of the oldest outbox event kept, per cell and stream.\n"
                    "# TYPE d11_events_oldest_age_seconds gauge\n");
    for (int sh = 0; sh < 2; sh++)
        for (int k = 0; k < D11_CELLS_MAX; k++) {
            int64_t at = atomic_load(&ev->oldest_at[sh][k]);
            char lb[16];
            if (at) d11_buf_printf(b, "d11_events_oldest_age_seconds{cell=\"%s\",stream=\"%s\"} %.3f\n", slot_label(k, lb),
                                   sh ? "stress" : "real", (double)(now - at) / 1000.0);
        }
    d11_buf_printf(b, "# HELP d11_events_retention_rounds_total Retention rounds started.\n"
                      "# TYPE d11_events_retention_rounds_total counter\nd11_events_retention_rounds_total %llu\n",
                   (unsigned long long)atomic_load(&ev->prune_rounds));
}
