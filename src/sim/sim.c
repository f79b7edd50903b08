/*
 * sim.c — the deterministic simulator (see sim.h): the world, its event loop and main.
 *
 *   build/sim [--seeds N] [--seed S] [--steps K] [--cells N] [-v] [--regressions FILE]
 *
 * One seed = one world: a center, N cells (random 2..4), the fake gateway (client.c),
 * memory stores. Each step picks ONE event with the seed's PRNG: a client action, the
 * delivery of a frame whose time has come, a storage commit finishing, the clock moving
 * (ticks), or a fault (crash / restart a cell or the center, a failed commit, a
 * connection reset, a dropped request, reply or grant). After every step the live
 * processes run their "before sleep" (group commit, center flush) and check.c checks the
 * invariants. At the end the world heals (no faults, everything restarted and
 * reconnected), runs until quiet, and the quiescence checks run (product view == stored
 * truth, ...). A violation prints the seed and the step; `--seed S` replays it exactly.
 *
 * Exit status: 0 all seeds passed, 1 a violation, 2 bad usage.
 */
#include "sim.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
void __sanitizer_set_death_callback(void (*callback)(void));
#endif

#define CENTER_GW_PEER 0xffu

/* ---- a crash (assertion, sanitizer report) still names its seed ---- */

static volatile uint64_t running_seed;   /* the only globals: read by the crash handlers */
static volatile uint32_t running_steps;

static void say_seed(void)
{
    char line[160];
    int n = snprintf(line, sizeof line, "FAIL seed %llu crashed (assertion or sanitizer report above)\n"
                     "  replay: build/sim --seed %llu --steps %u\n",
                     (unsigned long long)running_seed, (unsigned long long)running_seed, (unsigned)running_steps);
    if (n > 0) (void)!write(2, line, (size_t)n);
}

static void on_crash(int sig)
{
    say_seed();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ---- clock ---- */

static int64_t sim_clock_ms(void *data) { return ((sim *)data)->now; }

/* ---- failure ---- */

void sim_fail(sim *s, const char *fmt, ...)
{
    if (s->failure[0]) return; /* the first violation is the one that matters */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->failure, sizeof s->failure, fmt, ap);
    va_end(ap);
}

/* ---- links ---- */

static int64_t link_delay(sim *s)
{
    if (sim_chance(&s->rng, 20)) return 50 + sim_below(&s->rng, 250); /* a stall */
    return sim_below(&s->rng, 8);
}

bool sim_link_push(sim *s, sim_link *l, const uint8_t *p, size_t n)
{
    if (!l->up) return false;
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? l->cap * 2 : 16;
        sim_msg *q = malloc(sizeof *q * cap);
        if (!q) d11_fatal("out of memory");
        for (uint32_t i = 0; i < l->n; i++) q[i] = l->q[(l->head + i) % l->cap];
        free(l->q);
        l->q = q;
        l->cap = cap;
        l->head = 0;
    }
    int64_t at = s->now + link_delay(s);
    if (at < l->last_at) at = l->last_at; /* a stream never reorders */
    l->last_at = at;
    sim_msg *m = &l->q[(l->head + l->n) % l->cap];
    m->at = at;
    m->len = (uint32_t)n;
    m->bytes = malloc(n ? n : 1);
    if (!m->bytes) d11_fatal("out of memory");
    memcpy(m->bytes, p, n);
    l->n++;
    return true;
}

static bool link_ready(const sim *s, const sim_link *l) { return l->up && l->n && l->q[l->head].at <= s->now; }

/* Pop the head frame into *m (caller frees m->bytes). */
static void link_pop(sim_link *l, sim_msg *m)
{
    *m = l->q[l->head];
    l->head = (l->head + 1) % l->cap;
    l->n--;
}

static void link_reset(sim_link *l)
{
    while (l->n) {
        sim_msg m;
        link_pop(l, &m);
        free(m.bytes);
    }
    l->up = false;
    l->gen = (l->gen + 1) & 0xffffff;
    l->last_at = 0;
}

static void link_up(sim_link *l)
{
    D11_ASSERT(!l->up && l->n == 0);
    l->up = true;
}

static void link_free(sim_link *l)
{
    link_reset(l);
    free(l->q);
    memset(l, 0, sizeof *l);
}

static bool frame_of(const sim_msg *m, d11_frame *f)
{
    if (d11_frame_hdr_decode(m->bytes, m->len, &f->hdr) != 0 || f->hdr.len != m->len) return false;
    f->payload = m->bytes + D11_FRAME_HDR_BYTES;
    f->payload_len = m->len - D11_FRAME_HDR_BYTES;
    return true;
}

/* ---- hosts ---- */

static uint32_t cell_peer_of_center(const sim_cellp *p) { return (p->to_center.gen << 8) | (uint32_t)p->ci; }

static void cell_send_peer(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    sim_cellp *p = data;
    if (peer != p->to_gw.gen) return; /* the connection that asked is gone */
    if (p->s->faults && sim_chance(&p->s->rng, 5)) { /* fault point cell.reply: drop */
        p->s->stats.drops++;
        return;
    }
    sim_link_push(p->s, &p->to_gw, frame, n);
}

static void cell_send_center(void *data, const uint8_t *frame, size_t n)
{
    sim_cellp *p = data;
    sim_link_push(p->s, &p->to_center, frame, n);
}

static void center_send(void *data, uint32_t peer, const uint8_t *frame, size_t n)
{
    sim *s = data;
    uint32_t idx = peer & 0xff, gen = peer >> 8;
    if (idx == CENTER_GW_PEER) {
        if (gen == s->center.to_gw.gen) sim_link_push(s, &s->center.to_gw, frame, n);
        return;
    }
    D11_ASSERT(idx < (uint32_t)s->ncells);
    sim_cellp *p = &s->cells[idx];
    if (gen == p->from_center.gen) sim_link_push(s, &p->from_center, frame, n);
}

void sim_send_cell(sim *s, int ci, const d11_buf *frame)
{
    sim_link_push(s, &s->cells[ci].from_gw, (const uint8_t *)frame->data, frame->len);
}

void sim_send_center(sim *s, const d11_buf *frame)
{
    sim_link_push(s, &s->center.from_gw, (const uint8_t *)frame->data, frame->len);
}

/* ---- processes ---- */

static void cell_opts_for(sim *s, cell_opts *o, int ci)
{
    cell_opts_default(o, ci);
    o->order_ttl_ms = 300 + (int64_t)(s->seed % 7) * 300;
    o->soldout_cache_ms = 50;
    o->orders_max = (s->seed % 11 == 3) ? 64 : 100000; /* some seeds run into the table limit */
    o->items_max = o->orders_max * 3;
    o->ledgers_max = 64;
    o->parked_max = 256;
    o->moving_tables = true; /* a pointer held across a push is a use-after-free ASan sees */
}

static void cell_restart(sim *s, int ci)
{
    sim_cellp *p = &s->cells[ci];
    D11_ASSERT(!p->up);
    cell_opts o;
    cell_opts_for(s, &o, ci);
    cell_host h = {.clock = &s->clock, .data = p, .send_peer = cell_send_peer, .send_center = cell_send_center};
    int rc = cell_open(&p->c, &o, &h, p->st);
    if (rc < 0) {
        sim_fail(s, "cell %d refused to recover from its store: %s", ci, d11_strerror(rc));
        return;
    }
    p->up = true;
    p->committing = false;
    link_up(&p->from_gw);
    link_up(&p->to_gw);
    p->reconnect_at = s->now + sim_below(&s->rng, 30);
    sim_client_after_recovery(s, ci);
}

static void center_link_reset(sim *s, int ci)
{
    sim_cellp *p = &s->cells[ci];
    bool was = p->to_center.up;
    uint32_t peer = cell_peer_of_center(p);
    link_reset(&p->to_center);
    link_reset(&p->from_center);
    p->from_center.gen = p->to_center.gen;
    if (!was) return;
    if (s->center.up) center_peer_down(s->center.c, peer);
    if (p->up) cell_center_down(p->c);
    p->reconnect_at = s->now + 20 + sim_below(&s->rng, 200);
}

static void gw_link_reset(sim *s, int ci)
{
    sim_cellp *p = &s->cells[ci];
    uint32_t old = p->to_gw.gen;
    link_reset(&p->from_gw);
    link_reset(&p->to_gw);
    p->from_gw.gen = p->to_gw.gen;
    if (p->up) {
        cell_peer_down(p->c, old);
        link_up(&p->from_gw);
        link_up(&p->to_gw);
    }
    sim_client_link_reset(s, ci);
}

static void cell_crash(sim *s, int ci, bool apply_pending)
{
    sim_cellp *p = &s->cells[ci];
    if (!p->up) return;
    if (s->trace) fprintf(stderr, "t=%lld cell %d crash (committing %d apply %d)\n", (long long)s->now, ci, p->committing, apply_pending);
    if (p->committing && apply_pending && d11_store_commit(p->st, p->ops, p->len, p->nops) == 0)
        sim_note_commit(s, ci, p->ops, p->len, p->nops); /* durable, but the cell never learned it */
    center_link_reset(s, ci);
    cell_free(p->c);
    p->c = NULL;
    p->up = false;
    p->committing = false;
    link_reset(&p->from_gw);
    link_reset(&p->to_gw);
    p->from_gw.gen = p->to_gw.gen;
    sim_client_link_reset(s, ci);
    p->restart_at = s->now + 20 + sim_below(&s->rng, 400);
    s->stats.crashes_cell++;
}

static void center_restart(sim *s)
{
    sim_centerp *cp = &s->center;
    center_opts o = {.ncells = s->ncells, .grant_chunk_max = 1 + (int64_t)(s->seed % 13), .reclaim_ms = 300};
    center_host h = {.clock = &s->clock, .data = s, .send = center_send};
    int rc = center_open(&cp->c, &o, &h, cp->st);
    if (rc < 0) {
        sim_fail(s, "center refused to recover from its store: %s", d11_strerror(rc));
        return;
    }
    cp->up = true;
    link_up(&cp->from_gw);
    link_up(&cp->to_gw);
    center_peer_up(cp->c, (cp->to_gw.gen << 8) | CENTER_GW_PEER);
    for (int i = 0; i < s->ncells; i++) s->cells[i].reconnect_at = s->now + sim_below(&s->rng, 50);
}

static void center_crash(sim *s)
{
    sim_centerp *cp = &s->center;
    if (!cp->up) return;
    if (s->trace) fprintf(stderr, "t=%lld center crash\n", (long long)s->now);
    for (int i = 0; i < s->ncells; i++) center_link_reset(s, i);
    center_free(cp->c);
    cp->c = NULL;
    cp->up = false;
    link_reset(&cp->from_gw);
    link_reset(&cp->to_gw);
    cp->from_gw.gen = cp->to_gw.gen;
    sim_client_link_reset(s, -1);
    cp->restart_at = s->now + 20 + sim_below(&s->rng, 400);
    s->stats.crashes_center++;
}

static void connect_cells(sim *s)
{
    if (!s->center.up) return;
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        if (!p->up || p->to_center.up || s->now < p->reconnect_at) continue;
        link_up(&p->to_center);
        link_up(&p->from_center);
        center_peer_up(s->center.c, cell_peer_of_center(p));
        cell_center_up(p->c);
    }
}

/* "Before sleep" of every live process: group commit, center flush. */
static void before_sleep(sim *s)
{
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        if (!p->up || p->committing) continue;
        if (cell_batch_take(p->c, &p->ops, &p->len, &p->nops)) {
            p->committing = true;
            p->commit_at = s->now + sim_below(&s->rng, 6);
        }
    }
    if (s->center.up) {
        if (s->faults && sim_chance(&s->rng, 2)) d11_mem_store_fail_next(s->center.st, 1);
        if (center_flush(s->center.c) < 0) {
            s->stats.commit_failures++;
            center_crash(s); /* the process exits; `d11 up` restarts it */
        }
    }
}

static void finish_commit(sim *s, int ci)
{
    sim_cellp *p = &s->cells[ci];
    if (s->faults && sim_chance(&s->rng, 4)) d11_mem_store_fail_next(p->st, 1);
    int rc = d11_store_commit(p->st, p->ops, p->len, p->nops);
    if (rc == 0) sim_note_commit(s, ci, p->ops, p->len, p->nops);
    p->committing = false;
    cell_batch_done(p->c, rc);
    if (cell_failed(p->c)) {
        s->stats.commit_failures++;
        cell_crash(s, ci, false); /* it answered 503s; the process exits and restarts */
    }
}

/* ---- one step ---- */

static bool deliver_one(sim *s)
{
    /* Collect ready links, pick one. */
    sim_link *ready[SIM_CELLS_MAX * 4 + 2];
    int who[SIM_CELLS_MAX * 4 + 2], kind[SIM_CELLS_MAX * 4 + 2], n = 0;
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        sim_link *ls[4] = {&p->from_gw, &p->to_gw, &p->to_center, &p->from_center};
        for (int k = 0; k < 4; k++)
            if (link_ready(s, ls[k])) ready[n] = ls[k], who[n] = i, kind[n++] = k;
    }
    if (link_ready(s, &s->center.from_gw)) ready[n] = &s->center.from_gw, who[n] = -1, kind[n++] = 4;
    if (link_ready(s, &s->center.to_gw)) ready[n] = &s->center.to_gw, who[n] = -1, kind[n++] = 5;
    if (!n) return false;
    int k = (int)sim_below(&s->rng, (uint32_t)n);
    sim_msg m;
    link_pop(ready[k], &m);
    d11_frame f;
    if (!frame_of(&m, &f)) {
        sim_fail(s, "a malformed frame on a link");
        free(m.bytes);
        return true;
    }
    int ci = who[k];
    switch (kind[k]) {
    case 0: /* gateway -> cell; fault point cell.recv: drop */
        if (s->faults && sim_chance(&s->rng, 5)) s->stats.drops++;
        else cell_on_request(s->cells[ci].c, s->cells[ci].from_gw.gen, &f);
        break;
    case 1: sim_client_on_reply(s, ci, &f); break;
    case 2: /* cell -> center; fault point center.grant: drop a grant request */
        if (s->trace) {
            fprintf(stderr, "t=%lld cell %d -> center %s (%zu bytes)\n", (long long)s->now, ci,
                    d11_msg_type_name(f.hdr.type), f.payload_len);
            if (f.hdr.type == D11_MSG_REPORT) {
                d11_wire_iter it;
                d11_msg_report rm;
                d11_msg_report_entry x;
                d11_msg_report_dec_begin(&it, f.payload, f.payload_len, &rm);
                while (d11_msg_report_dec_next(&it, &x) == 1)
                    fprintf(stderr, "   report %.*s/%u sold %llu\n", (int)x.sku.n, x.sku.p, x.shadow,
                            (unsigned long long)x.sold);
            }
        }
        if (s->faults && f.hdr.type == D11_MSG_GRANT && sim_chance(&s->rng, 30)) s->stats.drops++;
        else center_on_frame(s->center.c, cell_peer_of_center(&s->cells[ci]), &f);
        break;
    case 3: cell_on_center(s->cells[ci].c, &f); break;
    case 4: center_on_frame(s->center.c, (s->center.to_gw.gen << 8) | CENTER_GW_PEER, &f); break;
    case 5: sim_client_on_reply(s, -1, &f); break;
    }
    free(m.bytes);
    return true;
}

static void advance(sim *s, int64_t ms)
{
    s->now += ms;
    /* Each cell ticks on its own schedule, sometimes late (a busy or stalled loop), so
     * requests can arrive between an order's due time and the tick that expires it. */
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        if (!p->up || s->now < p->tick_at) continue;
        cell_tick(p->c);
        p->tick_at = s->now + 10 + (sim_chance(&s->rng, 100) ? sim_below(&s->rng, 200) : 0);
    }
    if (s->center.up) center_tick(s->center.c);
    sim_client_timeouts(s);
}

static void fault(sim *s)
{
    uint32_t r = sim_below(&s->rng, 100);
    int ci = (int)sim_below(&s->rng, (uint32_t)s->ncells);
    if (r < 35) cell_crash(s, ci, sim_chance(&s->rng, 500));
    else if (r < 45) center_crash(s);
    else if (r < 75) {
        if (s->cells[ci].to_center.up) {
            center_link_reset(s, ci);
            s->stats.resets++;
        }
    } else if (r < 90) {
        gw_link_reset(s, ci);
        s->stats.resets++;
    } else {
        link_reset(&s->center.from_gw);
        link_reset(&s->center.to_gw);
        s->center.from_gw.gen = s->center.to_gw.gen;
        if (s->center.up) {
            link_up(&s->center.from_gw);
            link_up(&s->center.to_gw);
            center_peer_up(s->center.c, (s->center.to_gw.gen << 8) | CENTER_GW_PEER);
        }
        sim_client_link_reset(s, -1);
        s->stats.resets++;
    }
}

static void restarts(sim *s)
{
    for (int i = 0; i < s->ncells; i++)
        if (!s->cells[i].up && s->now >= s->cells[i].restart_at) cell_restart(s, i);
    if (!s->center.up && s->now >= s->center.restart_at) center_restart(s);
    connect_cells(s);
}

static void step(sim *s)
{
    s->stats.steps++;
    uint32_t r = sim_below(&s->rng, 100);
    bool did = false;
    if (r < 30) {
        sim_client_act(s);
        did = true;
    } else if (r < 70) {
        did = deliver_one(s);
    } else if (r < 85) {
        for (int i = 0; i < s->ncells && !did; i++) {
            int ci = (int)(((uint32_t)i + sim_below(&s->rng, (uint32_t)s->ncells)) % (uint32_t)s->ncells);
            if (s->cells[ci].up && s->cells[ci].committing && s->cells[ci].commit_at <= s->now) {
                finish_commit(s, ci);
                did = true;
            }
        }
    } else if (r < 86 && s->faults) {
        fault(s);
        did = true;
    }
    if (!did) advance(s, 1 + sim_below(&s->rng, 15));
    restarts(s);
    before_sleep(s);
}

/* Heal and run until nothing moves: every process up and connected, nothing in flight. */
static bool quiet(sim *s)
{
    if (!s->center.up) return false;
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        if (!p->up || p->committing || !p->to_center.up || p->from_gw.n || p->to_gw.n || p->to_center.n ||
            p->from_center.n || cell_parked(p->c) || !cell_quiet(p->c))
            return false;
    }
    return s->center.from_gw.n == 0 && s->center.to_gw.n == 0 && sim_client_idle(s);
}

static void settle(sim *s)
{
    s->faults = false;
    int64_t start = s->now, quiet_since = -1;
    while (s->now - start < 20000 && !s->failure[0]) {
        bool activity = false;
        restarts(s);
        while (deliver_one(s)) {
            activity = true;
            before_sleep(s);
        }
        for (int i = 0; i < s->ncells; i++)
            if (s->cells[i].up && s->cells[i].committing) {
                finish_commit(s, i);
                activity = true;
            }
        before_sleep(s);
        sim_check_step(s);
        /* Quiet = nothing moved for longer than a late tick plus a report interval. */
        if (quiet(s) && !activity) {
            if (quiet_since < 0) quiet_since = s->now;
            if (s->now - quiet_since >= SIM_QUIET_MS) break;
        } else {
            quiet_since = -1;
        }
        advance(s, 5);
    }
    if (!quiet(s)) sim_fail(s, "the world did not settle within 20 s of simulated time after healing");
}

static void world_free(sim *s)
{
    for (int i = 0; i < s->ncells; i++) {
        sim_cellp *p = &s->cells[i];
        if (p->up) cell_free(p->c);
        d11_store_close(p->st);
        link_free(&p->from_gw);
        link_free(&p->to_gw);
        link_free(&p->to_center);
        link_free(&p->from_center);
    }
    if (s->center.up) center_free(s->center.c);
    d11_store_close(s->center.st);
    link_free(&s->center.from_gw);
    link_free(&s->center.to_gw);
    d11_buf_free(&s->tmp);
}

/* Run one seed. Returns true when no invariant broke. */
static bool run_seed(uint64_t seed, uint32_t steps, int ncells_force, int verbose, sim_stats *total)
{
    sim *s = calloc(1, sizeof *s);
    if (!s) d11_fatal("out of memory");
    running_seed = seed;
    running_steps = steps;
    s->seed = seed;
    s->rng.s = seed * 0x2545f4914f6cdd1dULL + 1;
    s->now = 1767225600000LL + (int64_t)sim_below(&s->rng, 1000000); /* 2026-01-01, plus noise */
    s->clock = (d11_clock){sim_clock_ms, sim_clock_ms, s};
    s->ncells = ncells_force ? ncells_force : 2 + (int)sim_below(&s->rng, SIM_CELLS_MAX - 1);
    d11_routing_default(&s->routing, (unsigned)s->ncells);
    s->verbose = verbose;
    s->trace = getenv("D11_SIM_TRACE") != NULL; /* events on stderr: crashes, frames to the center, commits */
    s->faults = true;
    d11_buf_init(&s->tmp, 4096);
    for (int i = 0; i < s->ncells; i++) {
        s->cells[i].s = s;
        s->cells[i].ci = i;
        s->cells[i].st = d11_mem_store_open();
    }
    s->center.st = d11_mem_store_open();
    center_restart(s);
    for (int i = 0; i < s->ncells && !s->failure[0]; i++) cell_restart(s, i);
    connect_cells(s);
    sim_client_init(s);
    for (uint32_t i = 0; i < steps && !s->failure[0]; i++) {
        step(s);
        sim_check_step(s);
    }
    if (!s->failure[0]) settle(s);
    if (!s->failure[0]) sim_check_quiet(s);
    bool ok = !s->failure[0];
    if (!ok)
        printf("FAIL seed %llu at step %llu (t=+%lld ms): %s\n  replay: build/sim --seed %llu --steps %u\n",
               (unsigned long long)seed, (unsigned long long)s->stats.steps, (long long)(s->now - 1767225600000LL),
               s->failure, (unsigned long long)seed, steps);
    else if (verbose)
        printf("seed %llu ok: %d cells, %llu steps, %llu requests, %llu created, %llu paid, %llu cancelled, "
               "%llu cell crashes, %llu center crashes, %llu commit failures, %llu resets, %llu drops\n",
               (unsigned long long)seed, s->ncells, (unsigned long long)s->stats.steps,
               (unsigned long long)s->stats.requests, (unsigned long long)s->stats.created,
               (unsigned long long)s->stats.paid, (unsigned long long)s->stats.cancelled,
               (unsigned long long)s->stats.crashes_cell, (unsigned long long)s->stats.crashes_center,
               (unsigned long long)s->stats.commit_failures, (unsigned long long)s->stats.resets,
               (unsigned long long)s->stats.drops);
    uint64_t *a = (uint64_t *)total, *b = (uint64_t *)&s->stats;
    for (size_t i = 0; i < sizeof *total / sizeof(uint64_t); i++) a[i] += b[i];
    world_free(s);
    free(s);
    return ok;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sim [--seeds N] [--first S] [--seed S] [--steps K] [--cells N] [--regressions FILE] [-v]\n\n"
               "Deterministic simulation of a center, N cells and a client with faults; checks the\n"
               "invariants after every step and after quiescence. A failing seed prints itself and\n"
               "replays exactly with --seed.\n\n"
               "  --seeds N          run N seeds starting at --first (default 100 from 1)\n"
               "  --seed S           run only seed S\n"
               "  --steps K          steps per seed (default 2000)\n"
               "  --cells N          force the number of cells (default: 2..4 from the seed)\n"
               "  --regressions FILE run the seeds listed in FILE (one per line, # comments) first\n"
               "  -v                 one line per seed\n");
}

int main(int argc, char **argv)
{
    uint64_t first = 1, nseeds = 100;
    uint32_t steps = 2000;
    int cells = 0, verbose = 0;
    const char *regress = NULL;
    if (argc == 1) {
        /* The test-suite budget (tests/run.sh runs this binary as tests/test_sim): the
         * regression seeds, then D11_SIM_SEEDS fresh seeds (default 150). */
        regress = "tests/sim/regressions.txt";
        const char *e = getenv("D11_SIM_SEEDS");
        nseeds = e ? strtoull(e, NULL, 10) : 150;
        e = getenv("D11_SIM_FIRST");
        if (e) first = strtoull(e, NULL, 10);
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--seeds") && has) nseeds = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--first") && has) first = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--seed") && has) first = strtoull(argv[++i], NULL, 10), nseeds = 1;
        else if (!strcmp(a, "--steps") && has) steps = (uint32_t)strtoul(argv[++i], NULL, 10);
        else if (!strcmp(a, "--cells") && has) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            cells = (*end || v < 0 || v > SIM_CELLS_MAX) ? -1 : (int)v; /* checked below */
        }
        else if (!strcmp(a, "--regressions") && has) regress = argv[++i];
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "sim: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (cells < 0 || cells > SIM_CELLS_MAX || cells == 1) {
        fprintf(stderr, "sim: --cells must be 2..%d\n", SIM_CELLS_MAX);
        return 2;
    }
    d11_log_init("sim", D11_LOG_ERROR + 1); /* the processes' own logs would drown the output */
    signal(SIGABRT, on_crash);
    signal(SIGSEGV, on_crash);
#ifdef __SANITIZE_ADDRESS__
    __sanitizer_set_death_callback(say_seed);
#endif
    sim_stats total = {0};
    uint64_t ran = 0, failed = 0;
    if (regress) {
        FILE *f = fopen(regress, "r");
        if (!f) {
            fprintf(stderr, "sim: cannot read %s\n", regress);
            return 2;
        }
        char line[256];
        while (fgets(line, sizeof line, f)) {
            if (line[0] < '0' || line[0] > '9') continue;
            uint64_t seed = strtoull(line, NULL, 10);
            ran++;
            if (!run_seed(seed, steps, cells, verbose, &total)) failed++;
        }
        fclose(f);
    }
    for (uint64_t k = 0; k < nseeds; k++) {
        ran++;
        if (!run_seed(first + k, steps, cells, verbose, &total)) failed++;
    }
    printf("%llu passed, %llu failed\n", (unsigned long long)(ran - failed), (unsigned long long)failed);
    printf("sim: %llu seeds, %llu steps, %llu requests (%llu created, %llu paid, %llu cancelled), %llu cell crashes, "
           "%llu center crashes, %llu failed commits, %llu resets, %llu drops, %llu checks: %llu failed\n",
           (unsigned long long)ran, (unsigned long long)total.steps, (unsigned long long)total.requests,
           (unsigned long long)total.created, (unsigned long long)total.paid, (unsigned long long)total.cancelled,
           (unsigned long long)total.crashes_cell, (unsigned long long)total.crashes_center,
           (unsigned long long)total.commit_failures, (unsigned long long)total.resets,
           (unsigned long long)total.drops, (unsigned long long)total.checks, (unsigned long long)failed);
    return failed ? 1 : 0;
}
