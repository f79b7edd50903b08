/*
 * test_map.c — unit test of src/core/map.{h,c} (d11_imap, d11_smap).
 *
 * Each map is driven with a deterministic pseudo-random sequence of inserts and
 * overwrites and compared against a deliberately naive reference (sorted arrays and
 * binary search): every key the reference holds must be found with its latest value,
 * keys it does not hold must be absent, and len must equal the number of distinct keys.
 * Edge cases: key 0 and UINT64_MAX (imap tracks occupancy separately), keys that differ
 * only in high bits (order ids share their low bits), the empty string key, binary keys
 * with NUL bytes, keys that are prefixes of each other, and growth from the smallest
 * capacity to 200k keys with the documented load factor (<= 0.7, power-of-two capacity).
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/map.h"
#include "core/util.h"

#include "check.h"

static uint64_t rng_state;
static uint64_t rnd(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static bool pow2(size_t x) { return x && (x & (x - 1)) == 0; }

/* ---- reference for integer keys: append log, then sort + keep the last write ---- */

typedef struct ikv {
    uint64_t k, v;
    size_t seq;
} ikv;

static int ikv_cmp(const void *a, const void *b)
{
    const ikv *x = a, *y = b;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort the log and keep only the latest value per key. Returns the distinct count. */
static size_t ikv_finish(ikv *log, size_t n)
{
    qsort(log, n, sizeof *log, ikv_cmp);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (out && log[out - 1].k == log[i].k) log[out - 1] = log[i];
        else log[out++] = log[i];
    }
    return out;
}

static bool ikv_has(const ikv *ref, size_t n, uint64_t k)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ref[mid].k == k) return true;
        if (ref[mid].k < k) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

static void test_imap_basic(void)
{
    d11_imap m;
    uint64_t v = 12345;
    d11_imap_init(&m, 0);
    CHECK(pow2(m.cap));
    CHECK_EQ(m.len, 0);
    CHECK(!d11_imap_get(&m, 0, &v));
    CHECK_EQ(v, 12345); /* untouched on a miss */
    CHECK(!d11_imap_get(&m, 1, &v));
    /* key 0 is a key like any other */
    d11_imap_put(&m, 0, 0);
    CHECK(d11_imap_get(&m, 0, &v) && v == 0);
    CHECK_EQ(m.len, 1);
    CHECK(!d11_imap_get(&m, 1, &v));
    d11_imap_put(&m, 0, 77);
    CHECK(d11_imap_get(&m, 0, &v) && v == 77);
    CHECK_EQ(m.len, 1); /* overwrite does not grow */
    d11_imap_put(&m, UINT64_MAX, UINT64_MAX);
    CHECK(d11_imap_get(&m, UINT64_MAX, &v) && v == UINT64_MAX);
    CHECK(d11_imap_get(&m, 0, &v) && v == 77);
    CHECK_EQ(m.len, 2);
    d11_imap_free(&m);
    CHECK(m.keys == NULL && m.cap == 0 && m.len == 0);

    /* cap_hint sizing: no growth before the hinted count */
    d11_imap_init(&m, 1000);
    size_t cap0 = m.cap;
    CHECK(pow2(cap0));
    CHECK(cap0 * 7 >= 1000 * 10);
    for (uint64_t k = 0; k < 1000; k++) d11_imap_put(&m, k, k);
    CHECK_EQ(m.cap, cap0);
    d11_imap_free(&m);
}

/* Random keys from a small range (many overwrites) or a huge one; three key shapes. */
static void test_imap_vs_reference(int shape, size_t nops)
{
    d11_imap m;
    d11_imap_init(&m, 1);
    ikv *log = malloc(nops * sizeof *log);
    if (!log) abort();
    rng_state = 0x1234 + (uint64_t)shape;
    bool grow_ok = true;
    for (size_t i = 0; i < nops; i++) {
        uint64_t k;
        switch (shape) {
        case 0: k = rnd(); break;                                /* anywhere */
        case 1: k = rnd() % (nops / 2); break;                   /* dense, ~40% overwrites */
        default: k = (rnd() % (nops / 2)) << 22 | (5u << 12); break; /* order-id shape: low 22 bits equal */
        }
        uint64_t v = rnd();
        d11_imap_put(&m, k, v);
        log[i] = (ikv){k, v, i};
        if (!pow2(m.cap) || m.len * 10 > m.cap * 7) grow_ok = false;
    }
    CHECKF(grow_ok, "shape %d: capacity not a power of two or load factor above 0.7", shape);
    size_t n = ikv_finish(log, nops);
    CHECKF(m.len == n, "shape %d: len %zu, reference %zu", shape, m.len, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ~log[i].v;
        if (!d11_imap_get(&m, log[i].k, &v) || v != log[i].v) bad++;
    }
    CHECKF(bad == 0, "shape %d: %zu of %zu keys missing or with a stale value", shape, bad, n);
    /* absent keys */
    size_t probes = 0, wrong = 0;
    for (size_t i = 0; i < 50000; i++) {
        uint64_t k = shape == 0 ? rnd() : shape == 1 ? nops / 2 + rnd() % nops : (rnd() % nops) << 22 | (6u << 12);
        if (ikv_has(log, n, k)) continue;
        probes++;
        uint64_t v;
        if (d11_imap_get(&m, k, &v)) wrong++;
    }
    CHECKF(wrong == 0 && probes > 1000, "shape %d: %zu of %zu absent keys found", shape, wrong, probes);
    free(log);
    d11_imap_free(&m);
}

/* ---- reference for string keys ---- */

typedef struct skv {
    uint8_t k[24];
    uint32_t kn;
    uint64_t v;
    size_t seq;
} skv;

static int skv_keycmp(const skv *x, const uint8_t *k, uint32_t kn)
{
    size_t n = x->kn < kn ? x->kn : kn;
    int c = memcmp(x->k, k, n);
    if (c) return c;
    return x->kn < kn ? -1 : x->kn > kn;
}

static int skv_cmp(const void *a, const void *b)
{
    const skv *x = a, *y = b;
    int c = skv_keycmp(x, y->k, y->kn);
    if (c) return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static bool skv_has(const skv *ref, size_t n, const uint8_t *k, uint32_t kn)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = skv_keycmp(&ref[mid], k, kn);
        if (c == 0) return true;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* A random binary key of 0..23 bytes over a tiny alphabet that includes NUL. */
static uint32_t rand_key(uint8_t *k)
{
    static const uint8_t alpha[] = {0, 1, 'a', 'b', 0xff, '\n', 'z', 0x80};
    uint32_t n = (uint32_t)(rnd() % 24);
    for (uint32_t i = 0; i < n; i++) k[i] = alpha[rnd() % sizeof alpha];
    return n;
}

static void test_smap_basic(void)
{
    d11_smap m;
    uint64_t v = 99;
    d11_smap_init(&m, 0);
    CHECK(pow2(m.cap));
    CHECK(!d11_smap_get(&m, "", 0, &v));
    CHECK(!d11_smap_get(&m, "a", 1, &v));
    CHECK_EQ(v, 99);
    /* the empty key */
    d11_smap_put(&m, "", 0, 5);
    CHECK(d11_smap_get(&m, "", 0, &v) && v == 5);
    CHECK(!d11_smap_get(&m, "\0", 1, &v));
    /* keys with NULs that a C string compare would confuse */
    d11_smap_put(&m, "a\0b", 3, 1);
    d11_smap_put(&m, "a\0c", 3, 2);
    d11_smap_put(&m, "a", 1, 3);
    d11_smap_put(&m, "a\0", 2, 4);
    CHECK_EQ(m.len, 5);
    CHECK(d11_smap_get(&m, "a\0b", 3, &v) && v == 1);
    CHECK(d11_smap_get(&m, "a\0c", 3, &v) && v == 2);
    CHECK(d11_smap_get(&m, "a", 1, &v) && v == 3);
    CHECK(d11_smap_get(&m, "a\0", 2, &v) && v == 4);
    CHECK(!d11_smap_get(&m, "a\0b\0", 4, &v));
    CHECK(!d11_smap_get(&m, "a\0d", 3, &v));
    /* overwrite */
    d11_smap_put(&m, "a\0b", 3, 100);
    CHECK(d11_smap_get(&m, "a\0b", 3, &v) && v == 100);
    CHECK_EQ(m.len, 5);
    /* the map owns its copy of the key: changing the caller's buffer changes nothing */
    char buf[8] = "SKU-1";
    d11_smap_put(&m, buf, 5, 7);
    memcpy(buf, "XXXXX", 5);
    CHECK(!d11_smap_get(&m, buf, 5, &v));
    CHECK(d11_smap_get(&m, "SKU-1", 5, &v) && v == 7);
    /* the stored copy is NUL-terminated (map.h promises it) */
    bool term = true;
    for (size_t i = 0; i < m.cap; i++)
        if (m.slots[i].key && m.slots[i].key[m.slots[i].klen] != 0) term = false;
    CHECK(term);
    d11_smap_free(&m);
    CHECK(m.slots == NULL && m.cap == 0);

    /* a long key (1 MiB) */
    d11_smap_init(&m, 4);
    size_t big = 1 << 20;
    char *k = malloc(big);
    if (!k) abort();
    memset(k, 'k', big);
    d11_smap_put(&m, k, big, 11);
    k[big - 1] = 'j';
    CHECK(!d11_smap_get(&m, k, big, &v));
    k[big - 1] = 'k';
    CHECK(d11_smap_get(&m, k, big, &v) && v == 11);
    CHECK(!d11_smap_get(&m, k, big - 1, &v));
    free(k);
    d11_smap_free(&m);
}

static void test_smap_vs_reference(size_t nops, int mode)
{
    d11_smap m;
    d11_smap_init(&m, 1);
    skv *log = malloc(nops * sizeof *log);
    if (!log) abort();
    rng_state = 0xabc + (uint64_t)mode;
    bool grow_ok = true;
    for (size_t i = 0; i < nops; i++) {
        skv *e = &log[i];
        memset(e->k, 0, sizeof e->k);
        if (mode == 0) {
            e->kn = rand_key(e->k); /* short binary keys: many collisions and overwrites */
        } else {                    /* "user id + idempotency key" shape: shadow byte, 8 bytes, text */
            uint64_t user = rnd() % 50000;
            e->k[0] = (uint8_t)(rnd() & 1);
            memcpy(e->k + 1, &user, 8);
            int n = snprintf((char *)e->k + 9, 15, "k%llu", (unsigned long long)(rnd() % 8));
            e->kn = (uint32_t)(9 + n);
        }
        e->v = rnd();
        e->seq = i;
        d11_smap_put(&m, e->k, e->kn, e->v);
        if (!pow2(m.cap) || m.len * 10 > m.cap * 7) grow_ok = false;
    }
    CHECKF(grow_ok, "smap mode %d: capacity not a power of two or load factor above 0.7", mode);
    qsort(log, nops, sizeof *log, skv_cmp);
    size_t n = 0;
    for (size_t i = 0; i < nops; i++) {
        if (n && skv_keycmp(&log[n - 1], log[i].k, log[i].kn) == 0) log[n - 1] = log[i];
        else log[n++] = log[i];
    }
    CHECKF(m.len == n, "smap mode %d: len %zu, reference %zu", mode, m.len, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = ~log[i].v;
        if (!d11_smap_get(&m, log[i].k, log[i].kn, &v) || v != log[i].v) bad++;
    }
    CHECKF(bad == 0, "smap mode %d: %zu of %zu keys missing or stale", mode, bad, n);
    size_t probes = 0, wrong = 0;
    for (size_t i = 0; i < 50000; i++) {
        uint8_t k[24] = {0};
        uint32_t kn;
        if (mode == 0) kn = rand_key(k);
        else {
            uint64_t user = rnd() % 60000;
            k[0] = (uint8_t)(rnd() % 3);
            memcpy(k + 1, &user, 8);
            kn = (uint32_t)(9 + snprintf((char *)k + 9, 15, "k%llu", (unsigned long long)(rnd() % 10)));
        }
        if (skv_has(log, n, k, kn)) continue;
        probes++;
        uint64_t v;
        if (d11_smap_get(&m, k, kn, &v)) wrong++;
    }
    CHECKF(wrong == 0 && probes > 100, "smap mode %d: %zu of %zu absent keys found", mode, wrong, probes);
    free(log);
    d11_smap_free(&m);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_imap_basic();
    test_imap_vs_reference(0, 200000);
    test_imap_vs_reference(1, 200000);
    test_imap_vs_reference(2, 200000);
    test_smap_basic();
    test_smap_vs_reference(20000, 0);
    test_smap_vs_reference(300000, 1);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
