/*
 * workload.c — random numbers, Zipf sampling, mix parsing and picks (see workload.h).
 *
 * The Zipf sampler is rejection-inversion: draw u uniformly under the integral H of the
 * hat function h(x) = x^-s over [1.5 - 1, n + 0.5], invert it to x, round to k, and
 * accept k when u falls in the part of k's strip whose width is exactly h(k) — so
 * P(k) is proportional to k^-s. The quick-accept bound skips evaluating H for most
 * draws. H and its inverse are written through log1p/expm1 helpers so that s = 1 and
 * s near 1 stay exact.
 */

#include "workload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *d11_bench_op_name(int op)
{
    static const char *names[D11_OP_COUNT] = {"read", "order", "pay", "cancel"};
    return op >= 0 && op < D11_OP_COUNT ? names[op] : "?";
}

/* ---- xoshiro256** ---- */

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void d11_rng_seed(d11_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
    if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3])) r->s[0] = 1; /* all-zero is a fixed point */
}

uint64_t d11_rng_next(d11_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double d11_rng_unit(d11_rng *r) { return (double)(d11_rng_next(r) >> 11) * 0x1.0p-53; }

uint64_t d11_rng_below(d11_rng *r, uint64_t n)
{
    D11_ASSERT(n >= 1);
    return (uint64_t)(((unsigned __int128)d11_rng_next(r) * n) >> 64);
}

/* ---- Zipf by rejection-inversion ---- */

/* log1p(t)/t, continuous at 0 */
static double helper1(double t) { return fabs(t) > 1e-8 ? log1p(t) / t : 1 - t / 2 + t * t / 3; }
/* expm1(t)/t, continuous at 0 */
static double helper2(double t) { return fabs(t) > 1e-8 ? expm1(t) / t : 1 + t / 2 + t * t / 6; }

/* H(x) = (x^(1-s) - 1) / (1 - s), or log x when s = 1: an antiderivative of x^-s. */
static double zH(double s, double x)
{
    double lx = log(x);
    return helper2((1 - s) * lx) * lx;
}

static double zH_inv(double s, double y)
{
    double t = y * (1 - s);
    if (t < -1) t = -1; /* rounding guard: the exact argument is never below -1 */
    return exp(helper1(t) * y);
}

static double zh(double s, double x) { return exp(-s * log(x)); }

int d11_zipf_init(d11_zipf *z, uint64_t n, double s)
{
    if (n < 1 || !(s > 0) || s > 20) return -EINVAL;
    z->n = n;
    z->s = s;
    z->h_integral_x1 = zH(s, 1.5) - 1;
    z->h_integral_n = zH(s, (double)n + 0.5);
    z->quick_accept = 2 - zH_inv(s, zH(s, 2.5) - zh(s, 2));
    return 0;
}

uint64_t d11_zipf_next(const d11_zipf *z, d11_rng *r)
{
    if (z->n == 1) return 1;
    for (;;) {
        double u = z->h_integral_n + d11_rng_unit(r) * (z->h_integral_x1 - z->h_integral_n);
        double x = zH_inv(z->s, u);
        double kd = floor(x + 0.5);
        uint64_t k;
        if (kd < 1) k = 1;
        else if (kd > (double)z->n) k = z->n;
        else k = (uint64_t)kd;
        if ((double)k - x <= z->quick_accept || u >= zH(z->s, (double)k + 0.5) - zh(z->s, (double)k))
            return k;
    }
}

/* ---- mix and distributions ---- */

int d11_mix_parse(d11_workload *w, const char *s, char *err, size_t errlen)
{
    int weight[D11_OP_COUNT] = {0};
    bool seen[D11_OP_COUNT] = {false};
    const char *p = s;
    if (!*p) {
        snprintf(err, errlen, "--mix: empty");
        return -1;
    }
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (!eq) {
            snprintf(err, errlen, "--mix: expected NAME=WEIGHT, got '%.*s'", (int)len, p);
            return -1;
        }
        size_t nl = (size_t)(eq - p);
        int op = -1;
        for (int i = 0; i < D11_OP_COUNT; i++)
            if (strlen(d11_bench_op_name(i)) == nl && !memcmp(p, d11_bench_op_name(i), nl)) op = i;
        uint64_t v;
        if (op < 0) {
            snprintf(err, errlen, "--mix: unknown operation '%.*s' (read, order, pay, cancel)",
                     (int)nl, p);
            return -1;
        }
        if (seen[op]) {
            snprintf(err, errlen, "--mix: '%s' given twice", d11_bench_op_name(op));
            return -1;
        }
        if (d11_parse_u64(eq + 1, len - nl - 1, 1000000, &v) < 0) {
            snprintf(err, errlen, "--mix: weight of '%s' must be an integer 0..1000000",
                     d11_bench_op_name(op));
            return -1;
        }
        seen[op] = true;
        weight[op] = (int)v;
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) {
                snprintf(err, errlen, "--mix: trailing comma");
                return -1;
            }
        }
    }
    int total = 0;
    for (int i = 0; i < D11_OP_COUNT; i++) total += weight[i];
    if (total == 0) {
        snprintf(err, errlen, "--mix: every weight is 0");
        return -1;
    }
    if ((weight[D11_OP_PAY] || weight[D11_OP_CANCEL]) && !weight[D11_OP_ORDER]) {
        snprintf(err, errlen, "--mix: pay and cancel act on orders the bench placed: order must be > 0");
        return -1;
    }
    memcpy(w->weight, weight, sizeof weight);
    w->weight_total = total;
    return 0;
}

int d11_user_dist_parse(d11_workload *w, const char *s, char *err, size_t errlen)
{
    if (!strcmp(s, "uniform")) {
        w->user_dist = D11_USERS_UNIFORM;
        return 0;
    }
    double zs = 1.0;
    if (!strncmp(s, "zipf", 4) && (s[4] == 0 || s[4] == ':')) {
        if (s[4] == ':') {
            char *end;
            errno = 0;
            zs = strtod(s + 5, &end);
            if (errno || end == s + 5 || *end || !(zs > 0) || zs > 20) {
                snprintf(err, errlen, "--user-dist: zipf exponent must be a number in (0, 20], got '%s'",
                         s + 5);
                return -1;
            }
        }
        w->user_dist = D11_USERS_ZIPF;
        if (d11_zipf_init(&w->zipf, w->users, zs) < 0) {
            snprintf(err, errlen, "--user-dist: bad zipf parameters");
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "--user-dist: expected uniform, zipf or zipf:S, got '%s'", s);
    return -1;
}

int d11_workload_pick_op(const d11_workload *w, d11_rng *r)
{
    uint64_t x = d11_rng_below(r, (uint64_t)w->weight_total);
    for (int i = 0; i < D11_OP_COUNT; i++) {
        if (x < (uint64_t)w->weight[i]) return i;
        x -= (uint64_t)w->weight[i];
    }
    D11_ASSERT(!"mix weights do not add up");
    return D11_OP_ORDER;
}

uint64_t d11_workload_pick_user(const d11_workload *w, d11_rng *r)
{
    if (w->user_dist == D11_USERS_ZIPF) return d11_zipf_next(&w->zipf, r);
    return 1 + d11_rng_below(r, w->users);
}

uint64_t d11_workload_pick_sku(const d11_workload *w, d11_rng *r)
{
    if (w->skus <= 1) return 0;
    if (d11_rng_unit(r) < w->hot_share) return 0;
    return 1 + d11_rng_below(r, w->skus - 1);
}

int d11_workload_sku_name(const d11_workload *w, uint64_t i, char *out, size_t outlen)
{
    int n = snprintf(out, outlen, "%s%llu", w->sku_prefix, (unsigned long long)i);
    D11_ASSERT(n > 0 && (size_t)n < outlen);
    return n;
}
