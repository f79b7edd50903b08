/*
 * fault.c — fault points (see fault.h). Triggers use a per-process xorshift generator
 * seeded from D11_FAULT_SEED so a drill can be replayed; counters are atomics because the
 * cell's storage thread checks store.commit while the logic thread checks the others.
 */
#include "fault.h"
#include "util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const point_names[D11_FP_COUNT] = {"cell.recv", "cell.reply", "store.commit", "center.grant"};

typedef struct fpoint {
    int      action;
    int64_t  delay_ms;
    double   prob;   /* < 0: not probabilistic */
    uint64_t nth;    /* fire on this hit only (0 = unused) */
    uint64_t every;  /* fire on every n-th hit (0 = unused) */
    _Atomic uint64_t hits, fired;
} fpoint;

bool d11__fault_any;
static fpoint points[D11_FP_COUNT];
static _Atomic uint64_t rng_state = 88172645463325252ULL;

static double next_unit(void)
{
    uint64_t x = atomic_load(&rng_state), n;
    do {
        n = x;
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
    } while (!atomic_compare_exchange_weak(&rng_state, &x, n));
    return (double)(n >> 11) / (double)(1ULL << 53);
}

void d11_fault_reset(void)
{
    for (int i = 0; i < D11_FP_COUNT; i++) {
        points[i].action = D11_FA_NONE;
        atomic_store(&points[i].hits, 0);
        atomic_store(&points[i].fired, 0);
    }
    d11__fault_any = false;
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
        char *colon = strchr(e, ':');
        if (!colon) {
            snprintf(err, errlen, "'%s': expected POINT:ACTION", e);
            return -1;
        }
        *colon = 0;
        int p = -1;
        for (int i = 0; i < D11_FP_COUNT; i++)
            if (!strcmp(e, point_names[i])) p = i;
        if (p < 0) {
            snprintf(err, errlen, "unknown fault point '%s'", e);
            return -1;
        }
        fpoint *fp = &points[p];
        fp->prob = -1;
        fp->nth = fp->every = 0;
        fp->delay_ms = 0;
        char *act = colon + 1, *trig = strpbrk(act, "@#*");
        char tch = 0;
        if (trig) {
            tch = *trig;
            *trig++ = 0;
        }
        if (!strcmp(act, "drop")) fp->action = D11_FA_DROP;
        else if (!strcmp(act, "fail")) fp->action = D11_FA_FAIL;
        else if (!strcmp(act, "garble")) fp->action = D11_FA_GARBLE;
        else if (!strncmp(act, "delay=", 6)) {
            uint64_t ms;
            size_t n = strlen(act + 6);
            if (n < 3 || strcmp(act + 6 + n - 2, "ms") || d11_parse_u64(act + 6, n - 2, 60000, &ms) < 0) {
                snprintf(err, errlen, "%s: delay must look like delay=50ms (at most 60000)", point_names[p]);
                return -1;
            }
            fp->action = D11_FA_DELAY;
            fp->delay_ms = (int64_t)ms;
        } else {
            snprintf(err, errlen, "%s: unknown action '%s' (drop, fail, garble, delay=Nms)", point_names[p], act);
            return -1;
        }
        if (tch == '@') {
            char *end;
            fp->prob = strtod(trig, &end);
            if (end == trig || *end || fp->prob < 0 || fp->prob > 1) {
                snprintf(err, errlen, "%s: probability must be in [0, 1]", point_names[p]);
                return -1;
            }
        } else if (tch == '#' || tch == '*') {
            uint64_t v;
            if (d11_parse_u64(trig, strlen(trig), UINT32_MAX, &v) < 0 || v == 0) {
                snprintf(err, errlen, "%s: %c needs a positive integer", point_names[p], tch);
                return -1;
            }
            if (tch == '#') fp->nth = v;
            else fp->every = v;
        }
        d11__fault_any = true;
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

d11_fault_hit d11__fault_check(int point)
{
    d11_fault_hit h = {D11_FA_NONE, 0};
    if (point < 0 || point >= D11_FP_COUNT) return h;
    fpoint *fp = &points[point];
    if (fp->action == D11_FA_NONE) return h;
    uint64_t n = atomic_fetch_add(&fp->hits, 1) + 1;
    bool fire;
    if (fp->nth) fire = n == fp->nth;
    else if (fp->every) fire = n % fp->every == 0;
    else if (fp->prob >= 0) fire = next_unit() < fp->prob;
    else fire = true;
    if (!fire) return h;
    atomic_fetch_add(&fp->fired, 1);
    h.action = fp->action;
    h.delay_ms = fp->delay_ms;
    d11_log(D11_LOG_DEBUG, "fault %s fired (hit %llu)", point_names[point], (unsigned long long)n);
    return h;
}

uint64_t d11_fault_fired(int point)
{
    return point >= 0 && point < D11_FP_COUNT ? atomic_load(&points[point].fired) : 0;
}
