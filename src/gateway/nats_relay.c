/*
 * nats_relay.c — the NATS JetStream relay thread (nats_relay.h).
 *
 * Round, per stream: for each part (the cells of the routing table, the center), read a
 * page after that part's position (evsrc.h: EVENTS_READ over a private connection) and
 * publish it as ONE acknowledged batch (fast path): every event but the last is a plain NATS message on
 * its subject (JetStream stores it because the stream listens there; no reply, no ack),
 * the last one is a JetStream publish that waits for its ack and carries
 * Nats-Expected-Last-Sequence = lseq + k - 1, where lseq is the stream's last sequence
 * before the page. The broker stores the messages of one connection in order and checks
 * that header before storing the last one, so an ack (not a duplicate) proves that all k
 * events are in the stream, in order, each once: the part's position then advances to the
 * page's last event and lseq to the ack's sequence; the positions are stored as one
 * cursor (DATA/consumers/nats.events|nats.stress, fsync + atomic rename) at most every
 * D11_NATS_SAVE_MS and whenever the relay is caught up. This costs the broker and libnats one ack per page instead of one per event.
 * Any other outcome (wrong last sequence: a message was lost, or a re-publish after a
 * crash was dropped as a duplicate; a timeout; a duplicate ack) falls back to the careful
 * path for that page: every event with js_PublishMsgAsync and its own ack, then
 * js_PublishAsyncComplete (bounded wait); messages the broker already has are discarded
 * by their Nats-Msg-Id. After the careful path lseq is read again from the stream's info.
 * If that fails too, the pending list is dropped and the page is published again after
 * D11_NATS_RETRY_MS. The connection reconnects by itself (libnats); while NATS is down the
 * rounds fail and the position waits. Assumption (docs/events.md): this relay is the only
 * publisher on the streams' subjects; another one only sends pages down the careful path.
 * The stress stream, usually empty, is read at most every D11_NATS_STRESS_IDLE_MS while
 * its last read found nothing; after a round that was not full the relay pauses
 * D11_NATS_IDLE_MS.
 * Spans: every event that carries a trace id is an event.publish span (core/otlp.h,
 * messaging.system "nats", destination its subject) from its publish to the end of the
 * round's ack — an acked round exports them (head-sampled by the trace id at
 * --trace-ratio), a failed one exports them as errors (always kept).
 * Thread: the relay's own (libnats runs its own I/O threads behind the connection).
 */
#include "nats_relay.h"

#include <pthread.h>
#include <errno.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../bench/httpc.h"
#include "evsrc.h"
#include "events.h"
#include "../core/fault.h"
#include "gw.h"

const int gw_nats_lat_le_ms[GW_NATS_LAT_BUCKETS - 1] = {1,  2,   3,   5,   7,   10,  15,   20,   30,   50,
                                                        75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000};

static void record_latency(gw_nats *n, int64_t ms)
{
    if (ms < 0) ms = 0;
    int b = 0;
    while (b < GW_NATS_LAT_BUCKETS - 1 && ms > gw_nats_lat_le_ms[b]) b++;
    atomic_fetch_add(&n->lat[b], 1);
    atomic_fetch_add(&n->lat_sum_ms, (uint64_t)ms);
}

static const char *const stream_name[2] = {"D11_EVENTS", "D11_STRESS"};
static const char *const stream_subj[2] = {"d11.events.>", "d11.stress.>"};
static const char *const subj_prefix[2] = {"d11.events.", "d11.stress."};
static const char *const consumer_name[2] = {"nats.events", "nats.stress"};

typedef struct relay {
    struct gw      *g;
    gw_evsrc        src;      /* private connections to the parts (evsrc.h) */
    unsigned        ncells;   /* cells of the routing table (the center's; cfg.cells until known) */
    int64_t         routing_next_ms;
    int64_t         at[D11_NATS_PAGE]; /* the page's commit times (latency histogram) */
    natsConnection *nc;
    jsCtx          *js;
    char            cur[2][D11_HOOK_CURSOR_BYTES_MAX + 1];
    uint32_t        spans[D11_NATS_PAGE][2];
    d11_span        pub[D11_NATS_PAGE]; /* the round's event.publish spans ... */
    bool            traced[D11_NATS_PAGE]; /* ... where the event has a trace id */
    uint64_t        lseq[2];    /* the stream's last sequence (valid when lseq_ok) */
    bool            lseq_ok[2];
    int64_t         stress_next_ms; /* the stress stream is read again from then on */
    int64_t         saved_ms[2];    /* when cur[sh] was last stored */
    bool            dirty[2];       /* cur[sh] is ahead of the stored position */
} relay;

/* The round is over (ok: acked): end and hand over its event.publish spans. */
static void end_spans(relay *r, int k, bool ok)
{
    d11_otlp *o = &r->g->otlp;
    if (!o->on) return;
    int64_t now = d11_span_now_ns();
    for (int i = 0; i < k; i++) {
        if (!r->traced[i]) continue;
        r->traced[i] = false;
        d11_span *sp = &r->pub[i];
        sp->end_ns = now;
        sp->error = !ok;
        d11_otlp_end(o, sp, d11_otlp_head_sampled(o, sp->trace_id));
    }
}

static void on_pub_err(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae; /* the library destroys the message; the whole page is published again */
    gw_nats *n = closure;
    atomic_fetch_add(&n->failures, 1);
}

static void disconnect(relay *r)
{
    if (r->js) jsCtx_Destroy(r->js);
    if (r->nc) natsConnection_Destroy(r->nc);
    r->js = NULL;
    r->nc = NULL;
    r->lseq_ok[0] = r->lseq_ok[1] = false;
    atomic_store(&r->g->nats.connected, 0);
}

static int ensure_stream(relay *r, int sh)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, r->js, stream_name[sh], NULL, &jerr);
    if (s == NATS_OK) {
        r->lseq[sh] = si->State.LastSeq;
        r->lseq_ok[sh] = true;
        jsStreamInfo_Destroy(si);
        return 0;
    }
    if (s != NATS_NOT_FOUND) return -1;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    cfg.Name = stream_name[sh];
    const char *subj[1] = {stream_subj[sh]};
    cfg.Subjects = subj;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    s = js_AddStream(&si, r->js, &cfg, NULL, &jerr);
    if (s == NATS_OK) {
        r->lseq[sh] = si->State.LastSeq;
        r->lseq_ok[sh] = true;
        jsStreamInfo_Destroy(si);
    }
    if (s != NATS_OK) d11_warn("nats: cannot create stream %s: %s", stream_name[sh], natsStatus_GetText(s));
    return s == NATS_OK ? 0 : -1;
}

static int connect_js(relay *r)
{
    natsOptions *o = NULL;
    if (natsOptions_Create(&o) != NATS_OK) return -1;
    natsOptions_SetURL(o, r->g->cfg.nats);
    natsOptions_SetTimeout(o, 2000);
    natsOptions_SetAllowReconnect(o, true);
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 200);
    natsOptions_SetIOBufSize(o, D11_NATS_IOBUF_BYTES);
    natsStatus s = natsConnection_Connect(&r->nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        r->nc = NULL;
        return -1;
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = D11_NATS_PAGE * 2;
    jo.PublishAsync.ErrHandler = on_pub_err;
    jo.PublishAsync.ErrHandlerClosure = &r->g->nats;
    if (natsConnection_JetStream(&r->js, r->nc, &jo) != NATS_OK || ensure_stream(r, 0) < 0 || ensure_stream(r, 1) < 0) {
        disconnect(r);
        return -1;
    }
    atomic_store(&r->g->nats.connected, 1);
    d11_info("nats: connected to %s (streams %s, %s)", r->g->cfg.nats, stream_name[0], stream_name[1]);
    return 0;
}

static void load_cursor(relay *r, int sh)
{
    char path[1200];
    snprintf(path, sizeof path, "%.1100s/consumers/%s", r->g->cfg.data_dir, consumer_name[sh]);
    r->cur[sh][0] = 0;
    FILE *f = fopen(path, "re");
    if (!f) return;
    size_t n = fread(r->cur[sh], 1, sizeof r->cur[sh] - 1, f);
    fclose(f);
    while (n && (r->cur[sh][n - 1] == '\n' || r->cur[sh][n - 1] == ' ')) n--;
    r->cur[sh][n] = 0;
}

static int save_cursor(relay *r, int sh)
{
    char path[1300], dir[1200];
    snprintf(dir, sizeof dir, "%.1100s/consumers", r->g->cfg.data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) return -errno;
    snprintf(path, sizeof path, "%s/%s", dir, consumer_name[sh]);
    char line[sizeof r->cur[sh] + 1];
    int n = snprintf(line, sizeof line, "%s\n", r->cur[sh]);
    return d11_write_file_atomic(path, line, (size_t)n, 0600);
}

/* The two leading fields of an event as the cells and the center render it:
 * {"id":"<id>","type":"<type>",... (no escapes in either); false: another shape. */
static bool lead_fields(const char *ev, size_t n, char *id, size_t idcap, char *type, size_t tcap)
{
    static const char a[] = "{\"id\":\"", b[] = "\",\"type\":\"";
    if (n < sizeof a - 1 || memcmp(ev, a, sizeof a - 1) != 0) return false;
    const char *s = ev + sizeof a - 1, *end = ev + n;
    const char *q = memchr(s, '"', (size_t)(end - s));
    if (!q || (size_t)(q - s) >= idcap || (size_t)(end - q) < sizeof b - 1 || memcmp(q, b, sizeof b - 1) != 0) return false;
    const char *t = q + sizeof b - 1, *q2 = memchr(t, '"', (size_t)(end - t));
    if (!q2 || (size_t)(q2 - t) >= tcap || memchr(s, '\\', (size_t)(q2 - s))) return false;
    memcpy(id, s, (size_t)(q - s));
    id[q - s] = 0;
    memcpy(type, t, (size_t)(q2 - t));
    type[q2 - t] = 0;
    return true;
}

/* The NATS message of event i of the page (subject, Nats-Msg-Id header); NULL on a
 * malformed event (skipped: the cell renders every event with both fields) or no memory. */
static natsMsg *make_msg(relay *r, int sh, const char *body, int i, bool *skip)
{
    const char *ev = body + r->spans[i][0];
    size_t len = r->spans[i][1];
    char id[48], type[48], subj[128];
    *skip = false;
    r->traced[i] = false;
    if (!lead_fields(ev, len, id, sizeof id, type, sizeof type) &&
        (d11_json_find_str(ev, len, "id", id, sizeof id) < 0 || d11_json_find_str(ev, len, "type", type, sizeof type) < 0)) {
        *skip = true;
        return NULL;
    }
    /* subject <prefix><type>.<cell> (the id's part before '-'; the center's is "center") */
    const char *dash = strchr(id, '-');
    size_t pn = strlen(subj_prefix[sh]), tn = strlen(type), cn = dash ? (size_t)(dash - id) : 1;
    D11_ASSERT(pn + tn + 1 + cn < sizeof subj); /* 11 + 47 + 1 + 47 < 128 */
    memcpy(subj, subj_prefix[sh], pn);
    memcpy(subj + pn, type, tn);
    subj[pn + tn] = '.';
    memcpy(subj + pn + tn + 1, dash ? id : "0", cn);
    subj[pn + tn + 1 + cn] = 0;
    r->traced[i] = r->g->otlp.on && d11_span_open_event(&r->pub[i], ev, len, "nats", subj);
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subj, NULL, ev, (int)len) != NATS_OK) return NULL;
    if (natsMsgHeader_Set(m, "Nats-Msg-Id", id) != NATS_OK) {
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

/* Fast path (file comment): k-1 plain messages, the last acknowledged with the expected
 * last sequence. true: all k are stored (lseq advanced). false: the careful path must run. */
static bool publish_batched(relay *r, int sh, const char *body, int k)
{
    if (!r->lseq_ok[sh]) return false;
    natsMsg *held = NULL; /* the newest message: plain if another follows, else the acked last */
    uint64_t cnt = 0;
    for (int i = 0; i < k; i++) {
        bool skip;
        natsMsg *m = make_msg(r, sh, body, i, &skip);
        if (skip) continue;
        if (!m) {
            natsMsg_Destroy(held);
            return false;
        }
        if (held) {
            natsStatus s = natsConnection_PublishMsg(r->nc, held);
            natsMsg_Destroy(held);
            if (s != NATS_OK) {
                natsMsg_Destroy(m);
                return false;
            }
        }
        held = m;
        cnt++;
    }
    if (!held) return true; /* every event was skipped: nothing to publish */
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = D11_NATS_ACK_WAIT_MS;
    po.ExpectLastSeq = r->lseq[sh] + cnt - 1; /* 0 (= unchecked) only for a lone event on an empty stream */
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_PublishMsg(&pa, r->js, held, &po, &jerr);
    natsMsg_Destroy(held);
    bool ok = s == NATS_OK && pa && !pa->Duplicate && pa->Sequence == r->lseq[sh] + cnt;
    if (ok) r->lseq[sh] = pa->Sequence;
    else r->lseq_ok[sh] = false;
    if (pa) jsPubAck_Destroy(pa);
    return ok;
}

/* Careful path: every event with its own ack; lseq is unknown afterwards. */
static bool publish_each(relay *r, int sh, const char *body, int k)
{
    gw_nats *n = &r->g->nats;
    uint64_t fail0 = atomic_load(&n->failures);
    bool ok = true;
    r->lseq_ok[sh] = false;
    for (int i = 0; i < k && ok; i++) {
        bool skip;
        natsMsg *m = make_msg(r, sh, body, i, &skip);
        if (skip) continue;
        ok = m && js_PublishMsgAsync(r->js, &m, NULL) == NATS_OK;
        natsMsg_Destroy(m); /* no effect when the library took it */
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = D11_NATS_ACK_WAIT_MS;
    if (ok) ok = js_PublishAsyncComplete(r->js, &po) == NATS_OK;
    if (!ok || atomic_load(&n->failures) != fail0) {
        natsMsgList pending;
        if (js_PublishAsyncGetPendingList(&pending, r->js) == NATS_OK) natsMsgList_Destroy(&pending);
        return false;
    }
    return true;
}

static bool publish_page(relay *r, int sh, const char *body, int k)
{
    if (publish_batched(r, sh, body, k)) return true;
    atomic_fetch_add(&r->g->nats.careful_pages, 1);
    if (!publish_each(r, sh, body, k)) return false;
    ensure_stream(r, sh); /* lseq again; a failure leaves lseq_ok false: the next page is careful too */
    return true;
}

/* Store cur[sh] (fsynced, atomic rename). Between stores the stored position lags by at
 * most D11_NATS_SAVE_MS of acknowledged pages: after a crash they are published again and
 * the broker drops them by Nats-Msg-Id (its duplicate window, 2 min by default, is far
 * longer); an idle round always stores, so a caught-up relay's stored position is exact. */
static void store_position(relay *r, int sh)
{
    if (save_cursor(r, sh) < 0) {
        d11_warn("nats: cannot store the relay position");
        return;
    }
    r->dirty[sh] = false;
    r->saved_ms[sh] = d11_mono_ms();
}

/* Publish one part's reply body (EVENTS_READ lines) and advance pos[part]: 1 = a full
 * page went out, 0 = fewer (or none), -1 = the publish failed (position unchanged). */
static int part_round(relay *r, int sh, int part, const char *b, size_t bn, uint64_t pos[D11_CELLS_MAX], bool *moved)
{
    gw_nats *n = &r->g->nats;
    const char *q = b, *end = b + bn, *nl = memchr(b, '\n', bn);
    char *e0;
    uint64_t head = nl ? strtoull(b, &e0, 10) : 0;
    if (!nl || e0 >= nl || *e0 != ' ') return 0; /* malformed: the part is skipped */
    q = nl + 1;
    int k = 0;
    uint64_t last = pos[part];
    while (q < end && k < D11_NATS_PAGE) {
        nl = memchr(q, '\n', (size_t)(end - q));
        if (!nl) break;
        char *e1, *e2;
        uint64_t id = strtoull(q, &e1, 10);
        int64_t at = e1 < nl && *e1 == ' ' ? strtoll(e1 + 1, &e2, 10) : 0;
        if (e1 >= nl || *e1 != ' ' || e2 >= nl || *e2 != ' ' || id <= last) break; /* cannot happen: the cell's own format */
        r->spans[k][0] = (uint32_t)(e2 + 1 - b);
        r->spans[k][1] = (uint32_t)(nl - (e2 + 1));
        r->at[k] = at;
        last = id;
        k++;
        q = nl + 1;
    }
    if (k == 0) {
        if (head > pos[part]) { /* nothing after pos, yet the head is above it: all pruned */
            pos[part] = head;
            *moved = true;
        }
        return 0;
    }
    if (d11_fault_trip(D11_FP_RELAY_PUBLISH)) return atomic_fetch_add(&n->failures, 1), -1; /* chaos (core/fault.h) */
    atomic_fetch_add(&n->rounds, 1);
    if (!publish_page(r, sh, b, k)) {
        atomic_fetch_add(&n->failures, 1);
        end_spans(r, k, false);
        return -1;
    }
    end_spans(r, k, true);
    atomic_fetch_add(&n->published, (uint64_t)k);
    int64_t now = d11_wall_ms();
    for (int i = 0; i < k; i++) record_latency(n, now - r->at[i]);
    pos[part] = last;
    *moved = true;
    return k == D11_NATS_PAGE;
}

/* One round of stream sh: every part (each cell of the routing table, and the center for
 * the real stream) is read after its own position and published on its own — the events
 * of one order live in one cell, so per-part order is per-order order and no merge is
 * needed. 1 = some part had a full page (more may wait), 0 = caught up, -1 = a publish
 * failed (sleep before the next round). A part that is down is skipped (its position
 * waits); a part answering 410 (events the relay never published were pruned: someone
 * removed its cursor) is read again from its oldest event, with a warning. */
static int round_once(relay *r, int sh)
{
    int64_t now = d11_mono_ms();
    if (now >= r->routing_next_ms) {
        unsigned nc;
        if (gw_evsrc_ncells(&r->src, &nc) == 0 && nc >= 1 && nc <= D11_CELLS_MAX) r->ncells = nc;
        r->routing_next_ms = now + D11_NATS_ROUTING_MS;
    }
    uint64_t pos[D11_CELLS_MAX];
    int shadow = sh;
    if (r->cur[sh][0] && (gw_cursor_decode(r->cur[sh], strlen(r->cur[sh]), &shadow, pos) < 0 || shadow != sh)) {
        d11_warn("nats: stored relay position %s is not a %s cursor: starting from the oldest events", r->cur[sh],
                 sh ? "stress" : "real");
        r->cur[sh][0] = 0;
    }
    if (!r->cur[sh][0]) memset(pos, 0, sizeof pos);
    int ncells = (int)r->ncells, busy = 0;
    bool moved = false;
    for (int part = 0; part < D11_CELLS_MAX; part++) {
        bool center = part == GW_EV_CENTER && sh == 0 && ncells < D11_CELLS_MAX;
        if (part >= ncells && !center) continue;
        int status;
        const char *b;
        size_t bn;
        if (gw_evsrc_read(&r->src, center ? GW_UP_CENTER : gw_up_cell(part), sh, pos[part], D11_NATS_PAGE, &status, &b,
                          &bn) < 0)
            continue;
        if (status == 410) {
            d11_warn("nats: %.*s: publishing from the oldest kept event", (int)(bn > 200 ? 200 : bn), b);
            pos[part] = 0;
            moved = true;
            continue;
        }
        if (status != 200) continue;
        int rc = part_round(r, sh, part, b, bn, pos, &moved);
        if (rc < 0) {
            busy = -1;
            break;
        }
        if (rc > 0) busy = 1;
    }
    if (moved) {
        d11_buf c;
        d11_buf_init(&c, 64);
        gw_cursor_encode(&c, sh, pos, ncells);
        snprintf(r->cur[sh], sizeof r->cur[sh], "%.*s", (int)c.len, c.data);
        d11_buf_free(&c);
        r->dirty[sh] = true;
    }
    if (sh == 1 && busy == 0 && !moved) r->stress_next_ms = d11_mono_ms() + D11_NATS_STRESS_IDLE_MS;
    /* the stored position: at most D11_NATS_SAVE_MS behind; exact once caught up */
    if (r->dirty[sh] && (busy == 0 || d11_mono_ms() - r->saved_ms[sh] >= D11_NATS_SAVE_MS)) store_position(r, sh);
    return busy;
}

static void nap(gw_nats *n, int ms)
{
    for (int i = 0; i < ms / 10 && !atomic_load(&n->stop); i++) usleep(10000);
}

static void *relay_main(void *arg)
{
    pthread_setname_np(pthread_self(), "d11-relay"); /* top -H, perf, /proc: who spends what */
    d11_thread_background(); /* below the order path under CPU saturation (core/util.h) */
    relay *r = arg;
    gw_nats *n = &r->g->nats;
    load_cursor(r, 0);
    load_cursor(r, 1);
    while (!atomic_load(&n->stop)) {
        if (!r->js && connect_js(r) < 0) {
            nap(n, D11_NATS_RETRY_MS);
            continue;
        }
        int busy = 0, failed = 0;
        for (int sh = 0; sh < 2; sh++) {
            if (sh == 1 && d11_mono_ms() < r->stress_next_ms) continue;
            int rc = round_once(r, sh);
            if (rc > 0) busy = 1;
            if (rc < 0) failed = 1;
        }
        if (failed) {
            if (natsConnection_IsClosed(r->nc)) disconnect(r);
            nap(n, D11_NATS_RETRY_MS);
        } else if (!busy) {
            nap(n, D11_NATS_IDLE_MS);
        }
    }
    for (int sh = 0; sh < 2; sh++)
        if (r->dirty[sh]) store_position(r, sh);
    disconnect(r);
    gw_evsrc_close(&r->src);
    free(r);
    return NULL;
}

int gw_nats_start(struct gw *g)
{
    if (!g->cfg.nats[0]) return 0;
    relay *r = calloc(1, sizeof *r);
    if (!r) return -ENOMEM;
    r->g = g;
    gw_evsrc_init(&r->src, g);
    r->ncells = (unsigned)g->cfg.cells;
    if (pthread_create(&g->nats.th, NULL, relay_main, r) != 0) {
        gw_evsrc_close(&r->src);
        free(r);
        return -EAGAIN;
    }
    g->nats.started = true;
    return 0;
}

void gw_nats_stop(struct gw *g)
{
    if (!g->nats.started) return;
    atomic_store(&g->nats.stop, 1);
    pthread_join(g->nats.th, NULL);
    g->nats.started = false;
}

void gw_nats_metrics(gw_nats *n, d11_buf *b)
{
    d11_buf_printf(b,
                   "# HELP d11_nats_connected 1 while the JetStream relay is connected (absent: no --nats).\n"
                   "# TYPE d11_nats_connected gauge\nd11_nats_connected %d\n"
                   "# HELP d11_nats_published_total Events acknowledged by JetStream.\n"
                   "# TYPE d11_nats_published_total counter\nd11_nats_published_total %llu\n"
                   "# HELP d11_nats_publish_failures_total Failed publishes or rounds (re-published).\n"
                   "# TYPE d11_nats_publish_failures_total counter\nd11_nats_publish_failures_total %llu\n"
                   "# HELP d11_nats_careful_pages_total Pages published with one ack per event (the batch check failed).\n"
                   "# TYPE d11_nats_careful_pages_total counter\nd11_nats_careful_pages_total %llu\n",
                   atomic_load(&n->connected), (unsigned long long)atomic_load(&n->published),
                   (unsigned long long)atomic_load(&n->failures), (unsigned long long)atomic_load(&n->careful_pages));
    d11_buf_puts(b, "# HELP d11_nats_ack_latency_seconds From an event's commit (its `at`) to JetStream's ack.\n"
                    "# TYPE d11_nats_ack_latency_seconds histogram\n");
    uint64_t cum = 0;
    for (int i = 0; i < GW_NATS_LAT_BUCKETS; i++) {
        cum += atomic_load(&n->lat[i]);
        if (i < GW_NATS_LAT_BUCKETS - 1)
            d11_buf_printf(b, "d11_nats_ack_latency_seconds_bucket{le=\"%.3f\"} %llu\n", gw_nats_lat_le_ms[i] / 1000.0,
                           (unsigned long long)cum);
        else d11_buf_printf(b, "d11_nats_ack_latency_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    }
    d11_buf_printf(b, "d11_nats_ack_latency_seconds_sum %.3f\nd11_nats_ack_latency_seconds_count %llu\n",
                   (double)atomic_load(&n->lat_sum_ms) / 1000.0, (unsigned long long)cum);
}
