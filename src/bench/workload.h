/*
 * workload.h — what `d11 bench` asks for: the scenario mix, SKU and user choice, and the
 * random numbers behind them.
 *
 *   d11_rng    xoshiro256** seeded through splitmix64: fast, 2^256 period, one per thread
 *              (never shared), deterministic for a given --seed.
 *   d11_zipf   Zipf(s) over 1..n by rejection-inversion (Hörmann & Derflinger, 1996):
 *              O(1) per draw and O(1) memory, so n can be 10^9 users; s > 0 (s = 1 is
 *              the classic Zipf law).
 *   mix        weights per operation parsed from "read=1,order=8,pay=1,cancel=0".
 *   workload   the immutable description shared by every worker thread: how to pick an
 *              operation, a user and a SKU, and how SKUs are named.
 *
 * Everything here is pure computation: no I/O, no global state.
 */
#ifndef D11_BENCH_WORKLOAD_H
#define D11_BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "../core/util.h"

enum d11_bench_op { D11_OP_READ = 0, D11_OP_ORDER, D11_OP_PAY, D11_OP_CANCEL, D11_OP_COUNT };
const char *d11_bench_op_name(int op);

typedef struct d11_rng {
    uint64_t s[4];
} d11_rng;

void     d11_rng_seed(d11_rng *r, uint64_t seed);
uint64_t d11_rng_next(d11_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double   d11_rng_unit(d11_rng *r);
/* Uniform in [0, n) (n >= 1), by multiply-shift; the bias is below 2^-64 * n. */
uint64_t d11_rng_below(d11_rng *r, uint64_t n);

typedef struct d11_zipf {
    uint64_t n;
    double   s;
    double   h_integral_x1;  /* H(1.5) - 1 */
    double   h_integral_n;   /* H(n + 0.5) */
    double   quick_accept;   /* 2 - H^-1(H(2.5) - h(2)) */
} d11_zipf;

/* n >= 1, s in (0, 20]. Returns 0 or -EINVAL. */
int      d11_zipf_init(d11_zipf *z, uint64_t n, double s);
/* One draw in 1..n; rank 1 is the most likely. */
uint64_t d11_zipf_next(const d11_zipf *z, d11_rng *r);

enum { D11_USERS_UNIFORM = 0, D11_USERS_ZIPF = 1 };

#define D11_BENCH_SKU_PREFIX_BYTES_MAX 32

typedef struct d11_workload {
    int      weight[D11_OP_COUNT];
    int      weight_total;
    uint64_t skus;            /* SKUs 0 .. skus-1 */
    double   hot_share;       /* share of picks that go to SKU 0 */
    char     sku_prefix[D11_BENCH_SKU_PREFIX_BYTES_MAX];
    uint64_t users;           /* user ids 1 .. users */
    int      user_dist;       /* D11_USERS_* */
    d11_zipf zipf;            /* when user_dist == D11_USERS_ZIPF */
    int      quantity;        /* units per order line */
} d11_workload;

/*
 * Parse "read=1,order=8,pay=1,cancel=0" (any subset, any order; missing ones are 0;
 * weights 0..1000000) into w->weight and w->weight_total. At least one weight must be
 * positive, and pay/cancel need order > 0 (they act on orders the bench placed).
 * Returns 0, or -1 with a reason in err.
 */
int  d11_mix_parse(d11_workload *w, const char *s, char *err, size_t errlen);
/* "zipf", "zipf:1.2" or "uniform". Returns 0, or -1 with a reason. */
int  d11_user_dist_parse(d11_workload *w, const char *s, char *err, size_t errlen);

int      d11_workload_pick_op(const d11_workload *w, d11_rng *r);
uint64_t d11_workload_pick_user(const d11_workload *w, d11_rng *r);
uint64_t d11_workload_pick_sku(const d11_workload *w, d11_rng *r);
/* Writes "<prefix><i>" into out. Returns the length. */
int      d11_workload_sku_name(const d11_workload *w, uint64_t i, char *out, size_t outlen);

#endif
