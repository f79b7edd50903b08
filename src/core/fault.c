/*
 * fault.c — fault points (see fault.h). Triggers use a per-process xorshift generator
 * seeded from D11_FAULT_SEED so a drill can be replayed; counters are atomics because the
 * cell's storage thread checks store.commit while the logic thread checks the others.
 *
 * Concurrency: the table of points is process-wide by nature (a fault point is a line of
 * code, not an object), like the log level. Each point's settings are atomics written
 * inside a seqlock: a writer (arm, disarm, parse, reset, expiry) holds `wmu`, makes the
 * sequence odd, stores the fields, makes it even again; a reader loads the sequence, the
 * fields, then the sequence again and retries when it changed or was odd, so it never
 * acts on half an arm. d11__fault_any is recomputed under wmu after every write, and is
 * true whenever some point is armed (it may stay true a little after the last expiry,
 * until a hit or a sweep notices).
 */
#include "fault.h"
#include "promtext.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const point_names[D11_FP_COUNT] = {"cell.recv",    "cell.reply",       "store.commit",
                                                      "center.grant", "gateway.upstream", "relay.publish"};
static const char *const action_names[D11_FA_COUNT] = {"none", "drop", "error", "garble", "delay"};

#define PROB_ONE     (1ULL << 53) /* a draw is (x >> 11) in [0, 2^53) */
#define PROB_NO_DRAW UINT64_MAX   /* no probability trigger: every hit fires */

typedef struct fpoint {
    _Atomic uint32_t seq;       /* odd while a writer is changing the fields below */
    _Atomic int      action;
    _Atomic int64_t  delay_ms;
    _Atomic uint64_t prob;      /* fire when draw < prob; PROB_NO_DRAW: always */
    _Atomic uint64_t nth;       /* fire on this hit only (0 = unused) */
    _Atomic uint64_t every;     /* fire on every n-th hit (0 = unused) */
    _Atomic int64_t  expires_ms; /* CLOCK_MONOTONIC; 0 = never (D11_FAULTS) */
    _Atomic uint64_t id;        /* the experiment that armed it; 0 = D11_FAULTS */
    _Atomic uint64_t hits, fired;
} fpoint;

typedef struct fsnap {
    int      action;
    int64_t  delay_ms, expires_ms;
    uint64_t prob, nth, every, id;
} fsnap;

_Atomic bool d11__fault_any;
static fpoint points[D11_FP_COUNT];
static pthread_mutex_t wmu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t rng_state = 88172645463325252ULL;

#define RLX memory_order_relaxed

static double next_unit(void)
{
    uint64_t x = atomic_load(&rng_state), n;
    do {
        n = x;
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
    } while (!atomic_compare_exchange_weak(&rng_state, &x, n));
    return (double)(n >> 11) / (double)PROB_ONE;
}

/* ---- the seqlock ---- */

static void snap_read(fpoint *fp, fsnap *s)
{
    for (;;) {
        uint32_t s1 = atomic_load_explicit(&fp->seq, memory_order_acquire);
        if (s1 & 1) continue; /* a writer is between its two increments: a few stores */
        s->action = atomic_load_explicit(&fp->action, RLX);
        s->delay_ms = atomic_load_explicit(&fp->delay_ms, RLX);
        s->prob = atomic_load_explicit(&fp->prob, RLX);
        s->nth = atomic_load_explicit(&fp->nth, RLX);
        s->every = atomic_load_explicit(&fp->every, RLX);
        s->expires_ms = atomic_load_explicit(&fp->expires_ms, RLX);
        s->id = atomic_load_explicit(&fp->id, RLX);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&fp->seq, RLX) == s1) return;
    }
}

/* With wmu held. */
static void snap_write(fpoint *fp, const fsnap *s)
{
    uint32_t q = atomic_load_explicit(&fp->seq, RLX);
    D11_ASSERT((q & 1) == 0);
    atomic_store_explicit(&fp->seq, q + 1, RLX);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&fp->action, s->action, RLX);
    atomic_store_explicit(&fp->delay_ms, s->delay_ms, RLX);
    atomic_store_explicit(&fp->prob, s->prob, RLX);
    atomic_store_explicit(&fp->nth, s->nth, RLX);
    atomic_store_explicit(&fp->every, s->every, RLX);
    atomic_store_explicit(&fp->expires_ms, s->expires_ms, RLX);
    atomic_store_explicit(&fp->id, s->id, RLX);
    atomic_store_explicit(&fp->seq, q + 2, memory_order_release);
}

/* With wmu held: is anything armed? */
static void any_recompute(void)
{
    bool any = false;
    for (int i = 0; i < D11_FP_COUNT; i++)
        if (atomic_load_explicit(&points[i].action, RLX) != D11_FA_NONE) any = true;
    atomic_store_explicit(&d11__fault_any, any, memory_order_release);
}

static const fsnap disarmed = {.action = D11_FA_NONE, .prob = PROB_NO_DRAW};

/* ---- D11_FAULTS ---- */

void d11_fault_reset(void)
{
    pthread_mutex_lock(&wmu);
    for (int i = 0; i < D11_FP_COUNT; i++) {
        snap_write(&points[i], &disarmed);
        atomic_store(&points[i].hits, 0);
        atomic_store(&points[i].fired, 0);
    }
    any_recompute();
    pthread_mutex_unlock(&wmu);
}

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void d11_fault_seed(uint64_t seed, const char *salt)
{
    /* Scramble: raw small seeds would start xorshift near zero, and a probability trigger
     * would then fire on the very first draw of every process. */
    uint64_t x = splitmix64(seed ^ d11_hash64(salt, strlen(salt), 0x5eed));
    atomic_store(&rng_state, x ? x : 88172645463325252ULL);
}

int d11_fault_point_parse(const char *s, size_t n)
{
    for (int i = 0; i < D11_FP_COUNT; i++)
        if (strlen(point_names[i]) == n && !memcmp(s, point_names[i], n)) return i;
    return -1;
}

const char *d11_fault_point_name(int point)
{
    return point >= 0 && point < D11_FP_COUNT ? point_names[point] : "?";
}

const char *d11_fault_action_name(int action)
{
    return action >= 0 && action < D11_FA_COUNT ? action_names[action] : "?";
}

/* Parse one POINT:ACTION[trigger] entry (e is modified) into *p and *s. */
static int parse_entry(char *e, int *p_out, fsnap *s, char *err, size_t errlen)
{
    char *colon = strchr(e, ':');
    if (!colon) {
        snprintf(err, errlen, "'%s': expected POINT:ACTION", e);
        return -1;
    }
    *colon = 0;
    int p = d11_fault_point_parse(e, strlen(e));
    if (p < 0) {
        snprintf(err, errlen, "unknown fault point '%s'", e);
        return -1;
    }
    *s = disarmed;
    char *act = colon + 1, *trig = strpbrk(act, "@#*");
    char tch = 0;
    if (trig) {
        tch = *trig;
        *trig++ = 0;
    }
    if (!strcmp(act, "drop")) s->action = D11_FA_DROP;
    else if (!strcmp(act, "fail")) s->action = D11_FA_FAIL;
    else if (!strcmp(act, "garble")) s->action = D11_FA_GARBLE;
    else if (!strncmp(act, "delay=", 6)) {
        uint64_t ms;
        size_t n = strlen(act + 6);
        if (n < 3 || strcmp(act + 6 + n - 2, "ms") || d11_parse_u64(act + 6, n - 2, D11_FAULT_DELAY_MS_MAX, &ms) < 0) {
            snprintf(err, errlen, "%s: delay must look like delay=50ms (at most %d)", point_names[p],
                     D11_FAULT_DELAY_MS_MAX);
            return -1;
        }
        s->action = D11_FA_DELAY;
        s->delay_ms = (int64_t)ms;
    } else {
        snprintf(err, errlen, "%s: unknown action '%s' (drop, fail, garble, delay=Nms)", point_names[p], act);
        return -1;
    }
    if (tch == '@') {
        char *end;
        double prob = strtod(trig, &end);
        if (end == trig || *end || !(prob >= 0 && prob <= 1)) {
            snprintf(err, errlen, "%s: probability must be in [0, 1]", point_names[p]);
            return -1;
        }
        s->prob = (uint64_t)(prob * (double)PROB_ONE);
    } else if (tch == '#' || tch == '*') {
        uint64_t v;
        if (d11_parse_u64(trig, strlen(trig), UINT32_MAX, &v) < 0 || v == 0) {
            snprintf(err, errlen, "%s: %c needs a positive integer", point_names[p], tch);
            return -1;
        }
        if (tch == '#') s->nth = v;
        else s->every = v;
    }
    *p_out = p;
    return 0;
}

int d11_fault_parse(const char *spec, uint64_t seed, char *err, size_t errlen)
{
    d11_fault_reset();
    d11_fault_seed(seed, "");
    char buf[1024];
    if (strlen(spec) >= sizeof buf) {
        snprintf(err, errlen, "fault spec longer than %zu bytes", sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *e = strtok_r(buf, ",", &save); e; e = strtok_r(NULL, ",", &save)) {
        int p;
        fsnap s;
        if (parse_entry(e, &p, &s, err, errlen) < 0) {
            d11_fault_reset();
            return -1;
        }
        pthread_mutex_lock(&wmu);
        snap_write(&points[p], &s);
        any_recompute();
        pthread_mutex_unlock(&wmu);
    }
    return 0;
}

/* The environment's spec and seed: 0 (nothing armed when D11_FAULTS is unset or empty),
 * or -1 with a reason naming the variable. */
static int env_spec(const char **spec_out, uint64_t *seed_out, char *err, size_t errlen)
{
    const char *spec = getenv("D11_FAULTS");
    *spec_out = spec && *spec ? spec : NULL;
    *seed_out = 0;
    if (!*spec_out) return 0;
    const char *seed_s = getenv("D11_FAULT_SEED");
    if (seed_s && d11_parse_u64(seed_s, strlen(seed_s), UINT64_MAX, seed_out) < 0) {
        snprintf(err, errlen, "D11_FAULT_SEED must be an integer");
        return -1;
    }
    char e2[256];
    if (d11_fault_parse(spec, *seed_out, e2, sizeof e2) < 0) {
        snprintf(err, errlen, "D11_FAULTS: %s", e2);
        return -1;
    }
    return 0;
}

int d11_fault_check_env(char *err, size_t errlen)
{
    const char *spec;
    uint64_t seed;
    int rc = env_spec(&spec, &seed, err, errlen);
    d11_fault_reset(); /* checked, not armed */
    return rc;
}

void d11_fault_init_from_env(const char *proc)
{
    const char *spec;
    uint64_t seed;
    char err[300];
    if (env_spec(&spec, &seed, err, sizeof err) < 0) {
        fprintf(stderr, "d11 %s: %s\n", proc, err);
        exit(2);
    }
    if (!spec) return;
    /* Each process (and each restart of it) draws its own sequence: the seed, the process
     * name and the pid together. Otherwise a restarted cell would replay exactly the draws
     * that crashed it, forever. */
    char salt[64];
    snprintf(salt, sizeof salt, "%s/%d", proc, (int)getpid());
    d11_fault_seed(seed, salt);
    d11_warn("fault injection armed: %s (seed %llu)", spec, (unsigned long long)seed);
}

/* ---- run-time arming ---- */

int d11_fault_arm(int point, int action, int64_t delay_ms, unsigned percent, int64_t timeout_ms, uint64_t id)
{
    if (point < 0 || point >= D11_FP_COUNT || id == 0 || percent < 1 || percent > 100 || timeout_ms < 1 ||
        (action != D11_FA_DROP && action != D11_FA_FAIL && action != D11_FA_DELAY) || delay_ms < 0 ||
        delay_ms > D11_FAULT_DELAY_MS_MAX || (action == D11_FA_DELAY && delay_ms == 0))
        return -EINVAL;
    fsnap s = {.action = action,
               .delay_ms = action == D11_FA_DELAY ? delay_ms : 0,
               .prob = percent == 100 ? PROB_NO_DRAW : (uint64_t)percent * PROB_ONE / 100,
               .expires_ms = d11_mono_ms() + timeout_ms,
               .id = id};
    pthread_mutex_lock(&wmu);
    snap_write(&points[point], &s);
    any_recompute();
    pthread_mutex_unlock(&wmu);
    D11_ASSERT(atomic_load(&d11__fault_any));
    char kv[200];
    snprintf(kv, sizeof kv, "\"event\":\"fault_arm\",\"point\":\"%s\",\"action\":\"%s\",\"delay_ms\":%lld,"
             "\"percent\":%u,\"timeout_ms\":%lld,\"experiment\":\"%016llx\"", point_names[point],
             action_names[action], (long long)s.delay_ms, percent, (long long)timeout_ms, (unsigned long long)id);
    d11_log_kv(D11_LOG_WARN, kv, "fault %s armed: %s for %lld ms", point_names[point], action_names[action],
               (long long)timeout_ms);
    return 0;
}

/* With wmu held: disarm point when it is armed by id (0: any) and, when only_expired,
 * its expiry is <= now_ms. True when it was disarmed. */
static bool disarm_locked(int point, uint64_t id, bool only_expired, int64_t now_ms)
{
    fpoint *fp = &points[point];
    fsnap s;
    snap_read(fp, &s);
    if (s.action == D11_FA_NONE || (id && s.id != id)) return false;
    if (only_expired && !(s.expires_ms && s.expires_ms <= now_ms)) return false;
    snap_write(fp, &disarmed);
    any_recompute();
    char kv[120];
    snprintf(kv, sizeof kv, "\"event\":\"fault_disarm\",\"point\":\"%s\",\"experiment\":\"%016llx\",\"expired\":%s",
             point_names[point], (unsigned long long)s.id, only_expired ? "true" : "false");
    d11_log_kv(D11_LOG_WARN, kv, "fault %s disarmed (%s)", point_names[point], only_expired ? "expired" : "destroyed");
    return true;
}

int d11_fault_disarm(int point, uint64_t id)
{
    if (point < 0 || point >= D11_FP_COUNT) return -EINVAL;
    pthread_mutex_lock(&wmu);
    bool done = disarm_locked(point, id, false, 0);
    pthread_mutex_unlock(&wmu);
    return done ? 0 : -ENOENT;
}

int d11_fault_sweep(int64_t now_ms)
{
    int n = 0;
    if (!atomic_load_explicit(&d11__fault_any, memory_order_acquire)) return 0;
    pthread_mutex_lock(&wmu);
    for (int i = 0; i < D11_FP_COUNT; i++) n += disarm_locked(i, 0, true, now_ms);
    pthread_mutex_unlock(&wmu);
    return n;
}

d11_fault_hit d11__fault_check(int point)
{
    d11_fault_hit h = {D11_FA_NONE, 0};
    if (point < 0 || point >= D11_FP_COUNT) return h;
    fpoint *fp = &points[point];
    fsnap s;
    snap_read(fp, &s);
    if (s.action == D11_FA_NONE) return h;
    if (s.expires_ms && d11_mono_ms() >= s.expires_ms) {
        /* the experiment's time is up: never fire again, whoever calls */
        pthread_mutex_lock(&wmu);
        (void)disarm_locked(point, s.id, true, d11_mono_ms());
        pthread_mutex_unlock(&wmu);
        return h;
    }
    uint64_t n = atomic_fetch_add(&fp->hits, 1) + 1;
    bool fire;
    if (s.nth) fire = n == s.nth;
    else if (s.every) fire = n % s.every == 0;
    else if (s.prob != PROB_NO_DRAW) fire = next_unit() * (double)PROB_ONE < (double)s.prob;
    else fire = true;
    if (!fire) return h;
    atomic_fetch_add(&fp->fired, 1);
    h.action = s.action;
    h.delay_ms = s.delay_ms;
    d11_log(D11_LOG_DEBUG, "fault %s fired (hit %llu)", point_names[point], (unsigned long long)n);
    return h;
}

bool d11_fault_trip(int point)
{
    d11_fault_hit h = d11_fault(point);
    if (h.action == D11_FA_DELAY) usleep((useconds_t)h.delay_ms * 1000);
    return h.action == D11_FA_FAIL || h.action == D11_FA_DROP;
}

uint64_t d11_fault_fired(int point)
{
    return point >= 0 && point < D11_FP_COUNT ? atomic_load(&points[point].fired) : 0;
}

void d11_fault_render(d11_buf *b)
{
    int64_t now = d11_mono_ms();
    d11_fault_sweep(now);
    d11_buf_puts(b, "[");
    bool first = true;
    for (int i = 0; i < D11_FP_COUNT; i++) {
        fsnap s;
        snap_read(&points[i], &s);
        if (s.action == D11_FA_NONE) continue;
        unsigned pct = s.prob == PROB_NO_DRAW ? 100 : (unsigned)((s.prob * 100 + PROB_ONE / 2) / PROB_ONE);
        d11_buf_printf(b, "%s{\"point\":\"%s\",\"action\":\"%s\",\"delay_ms\":%lld,\"percent\":%u,\"id\":\"%016llx\","
                       "\"expires_in_ms\":%lld,\"hits\":%llu,\"fired\":%llu}",
                       first ? "" : ",", point_names[i], action_names[s.action], (long long)s.delay_ms, pct,
                       (unsigned long long)s.id, (long long)(s.expires_ms ? s.expires_ms - now : -1),
                       (unsigned long long)atomic_load(&points[i].hits),
                       (unsigned long long)atomic_load(&points[i].fired));
        first = false;
    }
    d11_buf_puts(b, "]");
}

void d11_fault_metrics(d11_buf *b, const char *part)
{
    d11_prom_head(b, "d11_fault_fired_total", "counter", "Fault point firings (chaos experiments and D11_FAULTS).");
    for (int i = 0; i < D11_FP_COUNT; i++)
        d11_buf_printf(b, "d11_fault_fired_total{part=\"%s\",point=\"%s\"} %llu\n", part, point_names[i],
                       (unsigned long long)atomic_load(&points[i].fired));
}
