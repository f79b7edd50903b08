/*
 * test_wire_msgs.c — round trips of EVERY message of the wire catalogue, generated from
 * src/rpc/wire_msgs.def (the same X-macros that generate the codecs), so a message added
 * there is tested without a line here. Hand-written edge cases per message stay in
 * test_wire.c.
 *
 * For each message (both variants of an OPT message) and each of: all fields at their
 * minimum, all at their maximum (strings at full length, lists at D11_WIRE_LIST_MAX
 * entries), and ROUNDS random valid values:
 *   - decode(encode(x)) == x, field by field, decoded strings pointing into the payload;
 *   - encode(decode(bytes)) == bytes (canonical encoding);
 *   - the payload cut at every length (sampled for big payloads) and with a trailing
 *     byte is refused with D11_EPROTO;
 *   - lists: the array encoder and the incremental encoder (begin/add/end) give the same
 *     bytes; the iterator returns every entry then 0; enc_add past the limit gives
 *     D11_ETOOBIG and leaves a valid, full message.
 * Then, for every field with a limit, one field at a time is set outside it (below lo,
 * above hi, a character outside its class; 30 draws per field, cycling through every kind) and the decoder must
 * refuse the message.
 * Decoders get exact-size heap copies, so `make test-full` (ASan) sees any over-read.
 *
 * Output: failed checks (file:line, values), "N passed, N failed"; exit 1 on failure.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/wire.h"

#include "check.h"

#define ROUNDS 200

/* ---- deterministic randomness and string storage ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}
/* Uniform-ish in [lo, hi]; a third of the draws land on an edge. */
static uint64_t pick(uint64_t lo, uint64_t hi)
{
    uint64_t r = rnd();
    if (r % 6 == 0) return lo;
    if (r % 6 == 1) return hi;
    uint64_t span = hi - lo;
    return span == UINT64_MAX ? rnd() : lo + rnd() % (span + 1);
}

static char arena[8 << 20];
static size_t arena_used;
static char *arena_take(size_t n)
{
    if (arena_used + n > sizeof arena) abort();
    char *p = arena + arena_used;
    arena_used += n;
    return p;
}

enum { CLS_ANY, CLS_PRINT, CLS_SKU };
static const char sku_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";

/* How a generator fills a message. */
enum { MODE_MIN, MODE_MAX, MODE_RANDOM };
typedef struct gen {
    int mode;
    bool opt;
    int brk;      /* the field number to set outside its limit; -1 = none */
    int fieldno;  /* fields seen so far */
    bool broke;   /* the field `brk` was set outside its limit */
    int rep;      /* which way to break it (cycles through every kind and bad character) */
} gen;

static uint64_t gen_int(gen *g, int bits, uint64_t lo, uint64_t hi)
{
    uint64_t tmax = bits == 64 ? UINT64_MAX : (1ULL << bits) - 1;
    if (g->fieldno++ == g->brk) {
        if (lo > 0 && (hi == tmax || g->rep % 2)) return g->broke = true, lo - 1;
        if (hi < tmax) return g->broke = true, hi + 1 + (g->rep % 4 < 2 ? 0 : rnd() % (tmax - hi));
    }
    return g->mode == MODE_MIN ? lo : g->mode == MODE_MAX ? hi : pick(lo, hi);
}

/* salt > 0: an SKU starts with a character unique to its array index (order items must
 * not repeat an SKU). */
static d11_str gen_str(gen *g, int cls, size_t lo, size_t hi, unsigned salt)
{
    size_t n = g->mode == MODE_MIN ? lo : g->mode == MODE_MAX ? hi : (size_t)pick(lo, hi < 300 ? hi : 300);
    int bad = 0; /* 1 too short, 2 too long, 3 bad character */
    if (g->fieldno++ == g->brk) {
        int opts[3], k = 0;
        if (lo > 0) opts[k++] = 1;
        if (hi < UINT16_MAX && hi < D11_FRAME_BYTES_MAX) opts[k++] = 2;
        if (cls != CLS_ANY) opts[k++] = 3;
        if (k) {
            bad = opts[g->rep % k];
            g->broke = true;
            if (bad == 1) n = lo - 1;
            if (bad == 2) n = hi + 1;
            if (bad == 3 && n == 0) n = 1;
        }
    }
    char *p = arena_take(n + 1);
    for (size_t i = 0; i < n; i++) {
        if (cls == CLS_SKU) p[i] = sku_chars[rnd() % (sizeof sku_chars - 1)];
        else if (cls == CLS_PRINT) p[i] = (char)(0x20 + rnd() % 95);
        else p[i] = (char)rnd();
    }
    if (cls == CLS_SKU && salt && n) p[0] = sku_chars[salt % (sizeof sku_chars - 1)];
    if (bad == 3) {
        static const char sku_bad[] = " /:\"*\x7f\x80\xff", print_bad[] = "\t\n\x7f\x80\xff";
        const char *set = cls == CLS_SKU ? sku_bad : print_bad;
        size_t nset = strlen(set) + (cls == CLS_SKU); /* NUL is bad too */
        p[rnd() % n] = set[(size_t)(g->rep / 3) % nset];
    }
    return (d11_str){p, n};
}

static bool str_eq(const d11_str *a, const d11_str *b) { return a->n == b->n && memcmp(a->p, b->p, a->n) == 0; }

/* ---- generated: generators and comparisons of every struct of the catalogue ---- */

#define W_INT(name, bits, lo, hi) m->name = (uint##bits##_t)gen_int(g, bits, (uint64_t)(lo), (uint64_t)(hi));
#define W_STR(name, cls, lo, hi)  m->name = gen_str(g, CLS_##cls, lo, hi, salt);
#define W_BLOB(name, lo, hi)      m->name = gen_str(g, CLS_ANY, lo, hi, 0);
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)                                   \
    m->count = g->mode == MODE_MIN ? (lo) : g->mode == MODE_MAX ? (hi) : (uint32_t)pick(lo, hi); \
    for (uint32_t i_ = 0; i_ < m->count; i_++) gen_##ename(g, &m->name[i_], i_ + 1);
#define W_FIXARR(name, bits, len, lo, hi)                                                  \
    {                                                                                      \
        int at_ = g->fieldno == g->brk ? (int)(rnd() % (len)) : -1;                        \
        for (size_t i_ = 0; i_ < (len); i_++) {                                            \
            int save_ = g->fieldno;                                                        \
            if ((int)i_ != at_) g->fieldno = -100;                                         \
            m->name[i_] = (uint##bits##_t)gen_int(g, bits, (uint64_t)(lo), (uint64_t)(hi)); \
            g->fieldno = save_;                                                            \
        }                                                                                  \
        g->fieldno++;                                                                      \
    }
#define W_COUNT(name, max)                                                                 \
    m->name = g->mode == MODE_MIN ? 0 : g->mode == MODE_MAX ? (max) : (uint32_t)pick(0, 40);
#define W_IF_OPT(KIND, name, ...)                                                          \
    if (g->opt) {                                                                          \
        W_##KIND(name, __VA_ARGS__)                                                        \
    } else {                                                                               \
        W_ZERO_##KIND(name)                                                                \
    }
#define W_ZERO_INT(name) m->name = 0;
#define W_ZERO_STR(name) m->name.p = ""; m->name.n = 0; /* no comma: FIELDS may be forwarded */
#define D11_WIRE_ENTRY(name, ctype, FIELDS)                                                \
    static void gen_##name(gen *g, ctype *m, unsigned salt)                                \
    {                                                                                      \
        (void)salt;                                                                        \
        FIELDS                                                                             \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#include "rpc/wire_msgs.def"

#define W_INT(name, bits, lo, hi) ok = ok && a->name == b->name;
#define W_STR(name, cls, lo, hi)  ok = ok && str_eq(&a->name, &b->name);
#define W_BLOB(name, lo, hi)      ok = ok && str_eq(&a->name, &b->name);
#define W_ARR(name, count, cbits, lo, hi, ename, ectype)                                   \
    ok = ok && a->count == b->count;                                                       \
    for (uint32_t i_ = 0; ok && i_ < a->count; i_++) ok = eq_##ename(&a->name[i_], &b->name[i_]);
#define W_FIXARR(name, bits, len, lo, hi) ok = ok && memcmp(a->name, b->name, sizeof a->name) == 0;
#define W_COUNT(name, max)                ok = ok && a->name == b->name;
#define W_IF_OPT(KIND, name, ...)         W_##KIND(name, __VA_ARGS__)
#define D11_WIRE_ENTRY(name, ctype, FIELDS)                                                \
    static bool eq_##name(const ctype *a, const ctype *b)                                  \
    {                                                                                      \
        bool ok = true;                                                                    \
        FIELDS                                                                             \
        return ok;                                                                         \
    }
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS) D11_WIRE_ENTRY(name, ctype, FIELDS)
#include "rpc/wire_msgs.def"

/* ---- harness ---- */

/* Exact-size heap copy, so ASan sees an over-read. Caller frees. */
static void *copy_of(const void *p, size_t n)
{
    void *c = malloc(n ? n : 1);
    if (!c) abort();
    if (n) memcpy(c, p, n);
    return c;
}

typedef int (*whole_dec)(const void *p, size_t n, bool opt); /* 0 or D11_EPROTO */

/* Prefixes (every length up to 4 KiB, then ~600 sampled) and a trailing byte: refused. */
static void check_cuts(const char *what, bool opt, whole_dec dec, const d11_buf *b)
{
    size_t step = b->len <= 4096 ? 1 : b->len / 600;
    for (size_t n = 0; n < b->len; n += step) {
        void *c = copy_of(b->data, n);
        int rc = dec(c, n, opt);
        free(c);
        CHECKF(rc == D11_EPROTO, "%s (opt %d): cut to %zu of %zu bytes -> %d", what, opt, n, b->len, rc);
    }
    void *c = copy_of(b->data, b->len + 1);
    ((char *)c)[b->len] = 0;
    int rc = dec(c, b->len + 1, opt);
    free(c);
    CHECKF(rc == D11_EPROTO, "%s (opt %d): trailing byte -> %d", what, opt, rc);
}

static bool points_into(const d11_str *s, const void *base, size_t len)
{
    return s->n == 0 || (s->p >= (const char *)base && s->p + s->n <= (const char *)base + len);
}

#define ENC_PLAIN(prefix, b, m, opt) prefix##_enc(b, m)
#define ENC_OPT(prefix, b, m, opt)   prefix##_enc(b, m, opt)
#define DEC_PLAIN(prefix, p, n, m, opt) prefix##_dec(p, n, m)
#define DEC_OPT(prefix, p, n, m, opt)   prefix##_dec(p, n, m, opt)
#define HAS_OPT_PLAIN 0
#define HAS_OPT_OPT   1

/* ---- generated: one round-trip test per message ---- */

#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS)                              \
    static int whole_##name(const void *p, size_t n, bool opt)                             \
    {                                                                                      \
        static ctype o;                                                                    \
        (void)opt;                                                                         \
        return DEC_##api(prefix, p, n, &o, opt);                                           \
    }                                                                                      \
    static void test_##name(void)                                                          \
    {                                                                                      \
        static ctype m, o;                                                                 \
        d11_buf b, r;                                                                      \
        d11_buf_init(&b, 0);                                                               \
        d11_buf_init(&r, 0);                                                               \
        for (int opt = 0; opt <= HAS_OPT_##api; opt++) {                                   \
            for (int round = 0; round < 2 + ROUNDS; round++) {                             \
                gen g = {round < 2 ? round : MODE_RANDOM, opt, -1, 0, false};              \
                arena_used = 0;                                                            \
                gen_##name(&g, &m, 0);                                                     \
                d11_buf_reset(&b);                                                         \
                ENC_##api(prefix, &b, &m, opt);                                            \
                void *c = copy_of(b.data, b.len);                                          \
                memset(&o, 0xa5, sizeof o);                                                \
                int rc = DEC_##api(prefix, c, b.len, &o, opt);                             \
                CHECKF(rc == 0, #name " (opt %d, round %d, %zu bytes) -> %d", opt, round, b.len, rc); \
                CHECKF(rc != 0 || eq_##name(&m, &o), #name " (opt %d, round %d): decoded != encoded", opt, round); \
                d11_buf_reset(&r);                                                         \
                if (rc == 0) ENC_##api(prefix, &r, &o, opt);                               \
                CHECKF(rc != 0 || (r.len == b.len && memcmp(r.data, b.data, b.len) == 0), \
                       #name " (opt %d, round %d): re-encoding differs", opt, round);      \
                free(c);                                                                   \
                if (round < 12) check_cuts(#name, opt, whole_##name, &b);                  \
            }                                                                              \
            /* one field at a time outside its limit */                                    \
            for (int brk = 0, rep = 0;; rep = (rep + 1) % 30, brk += rep == 0) {           \
                gen g = {MODE_RANDOM, opt, brk, 0, false, rep};                                 \
                arena_used = 0;                                                            \
                gen_##name(&g, &m, 0);                                                     \
                if (brk >= g.fieldno) break;                                               \
                if (!g.broke) continue;                                                    \
                d11_buf_reset(&b);                                                         \
                ENC_##api(prefix, &b, &m, opt);                                            \
                void *c = copy_of(b.data, b.len);                                          \
                int rc = DEC_##api(prefix, c, b.len, &o, opt);                             \
                free(c);                                                                   \
                CHECKF(rc == D11_EPROTO, #name " (opt %d): field #%d out of its limit accepted", opt, brk); \
            }                                                                              \
        }                                                                                  \
        d11_buf_free(&b);                                                                  \
        d11_buf_free(&r);                                                                  \
    }
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS)                          \
    static int whole_##name(const void *p, size_t n, bool opt)                             \
    {                                                                                      \
        (void)opt;                                                                         \
        d11_wire_iter it;                                                                  \
        ctype h;                                                                           \
        ectype x;                                                                          \
        int rc = prefix##_dec_begin(&it, p, n, &h);                                        \
        while (rc == 0 && (rc = prefix##_dec_next(&it, &x)) == 1) rc = 0;                  \
        return rc;                                                                         \
    }                                                                                      \
    static void test_##name(void)                                                          \
    {                                                                                      \
        static ctype m, o;                                                                 \
        static ectype v[D11_WIRE_LIST_MAX + 1], x;                                         \
        d11_buf b, r;                                                                      \
        d11_buf_init(&b, 0);                                                               \
        d11_buf_init(&r, 0);                                                               \
        for (int round = 0; round < 2 + ROUNDS; round++) {                                 \
            gen g = {round < 2 ? round : MODE_RANDOM, false, -1, 0, false};                \
            arena_used = 0;                                                                \
            gen_##name(&g, &m, 0);                                                         \
            for (uint32_t i = 0; i < m.n; i++) gen_##ename(&g, &v[i], 0);                  \
            d11_buf_reset(&b);                                                             \
            prefix##_enc(&b, &m, v);                                                       \
            /* the incremental encoder writes the same bytes */                            \
            d11_wire_list_enc e;                                                           \
            d11_buf_reset(&r);                                                             \
            ctype h = m;                                                                   \
            h.n = 12345; /* ignored by begin */                                            \
            prefix##_enc_begin(&e, &r, &h);                                                \
            int arc = 0;                                                                   \
            for (uint32_t i = 0; i < m.n; i++) arc |= prefix##_enc_add(&e, &v[i]);         \
            CHECK_RC(arc, 0);                                                              \
            CHECK_EQ(prefix##_enc_end(&e), m.n);                                           \
            CHECKF(r.len == b.len && memcmp(r.data, b.data, b.len) == 0,                   \
                   #name " round %d: incremental encoding differs", round);                \
            /* iterate, compare, re-encode */                                              \
            void *c = copy_of(b.data, b.len);                                              \
            d11_wire_iter it;                                                              \
            memset(&o, 0xa5, sizeof o);                                                    \
            CHECK_RC(prefix##_dec_begin(&it, c, b.len, &o), 0);                            \
            CHECKF(eq_##name(&m, &o), #name " round %d: header differs", round);           \
            d11_buf_reset(&r);                                                             \
            prefix##_enc_begin(&e, &r, &o);                                                \
            uint32_t got = 0;                                                              \
            int rc;                                                                        \
            bool same = true, inside = true;                                               \
            while ((rc = prefix##_dec_next(&it, &x)) == 1) {                               \
                same = same && got < m.n && eq_##ename(&v[got], &x);                       \
                inside = inside && points_into(&x.sku, c, b.len);                          \
                prefix##_enc_add(&e, &x);                                                  \
                got++;                                                                     \
            }                                                                              \
            prefix##_enc_end(&e);                                                          \
            CHECKF(rc == 0 && got == m.n && same && inside,                                \
                   #name " round %d: rc %d, %u of %u entries, same %d, inside %d", round, rc, got, m.n, same, inside); \
            CHECK_RC(prefix##_dec_next(&it, &x), 0); /* stays at the end */                \
            CHECKF(r.len == b.len && memcmp(r.data, b.data, b.len) == 0,                   \
                   #name " round %d: re-encoding differs", round);                         \
            free(c);                                                                       \
            if (round < 12) check_cuts(#name, false, whole_##name, &b);                    \
        }                                                                                  \
        /* header fields, then the last entry's fields, one at a time outside a limit */   \
        for (int brk = 0, rep = 0;; rep = (rep + 1) % 30, brk += rep == 0) {               \
            gen g = {MODE_RANDOM, false, brk, 0, false, rep}, ok = {MODE_RANDOM, false, -1, 0, false}; \
            arena_used = 0;                                                                \
            gen_##name(&g, &m, 0);                                                         \
            if (m.n == 0) m.n = 1;                                                         \
            for (uint32_t i = 0; i + 1 < m.n; i++) gen_##ename(&ok, &v[i], 0);             \
            gen_##ename(&g, &v[m.n - 1], 0);                                               \
            if (brk >= g.fieldno) break;                                                   \
            if (!g.broke) continue;                                                        \
            d11_buf_reset(&b);                                                             \
            prefix##_enc(&b, &m, v);                                                       \
            void *c = copy_of(b.data, b.len);                                              \
            int rc = whole_##name(c, b.len, false);                                        \
            free(c);                                                                       \
            CHECKF(rc == D11_EPROTO, #name ": field #%d out of its limit accepted", brk);   \
        }                                                                                  \
        /* the limit: adding past it is refused, the message stays whole */                \
        {                                                                                  \
            gen g = {MODE_MIN, false, -1, 0, false};                                       \
            arena_used = 0;                                                                \
            gen_##name(&g, &m, 0);                                                         \
            gen_##ename(&g, &x, 0);                                                        \
            d11_wire_list_enc e;                                                           \
            d11_buf_reset(&b);                                                             \
            prefix##_enc_begin(&e, &b, &m);                                                \
            int arc = 0;                                                                   \
            for (uint32_t i = 0; i < D11_WIRE_LIST_MAX; i++) arc |= prefix##_enc_add(&e, &x); \
            CHECK_RC(arc, 0);                                                              \
            CHECK_RC(prefix##_enc_add(&e, &x), D11_ETOOBIG);                               \
            CHECK_EQ(prefix##_enc_end(&e), D11_WIRE_LIST_MAX);                             \
            CHECK_RC(whole_##name(b.data, b.len, false), 0);                               \
            CHECK(b.len < D11_FRAME_BYTES_MAX - D11_FRAME_HDR_BYTES);                      \
            /* a count one over the limit is refused by dec_begin */                       \
            d11_buf_reset(&r);                                                             \
            prefix##_enc_begin(&e, &r, &m);                                                \
            size_t at = e.count_at;                                                        \
            prefix##_enc_end(&e);                                                          \
            uint32_t over = D11_WIRE_LIST_MAX + 1;                                         \
            for (int k = 0; k < 4; k++) r.data[at + (size_t)k] = (char)(over >> (8 * k));  \
            d11_wire_iter it;                                                              \
            CHECK_RC(prefix##_dec_begin(&it, r.data, r.len, &o), D11_EPROTO);              \
            CHECK_RC(prefix##_dec_next(&it, &x), D11_EPROTO);                              \
        }                                                                                  \
        d11_buf_free(&b);                                                                  \
        d11_buf_free(&r);                                                                  \
    }
#include "rpc/wire_msgs.def"

static void test_type_names(void)
{
    CHECK_STREQ(d11_msg_type_name(D11_MSG_ORDER_CREATE), "order_create");
    CHECK_STREQ(d11_msg_type_name(D11_MSG_CELL_HELLO), "cell_hello");
    CHECK_STREQ(d11_msg_type_name(D11_MSG_RECLAIM), "reclaim");
    CHECK_STREQ(d11_msg_type_name(8), "unknown");
    CHECK_STREQ(d11_msg_type_name(D11_MSG_EVENTS_READ), "events_read");
    /* every type has a distinct name; the values are the wire's (docs/wire-protocol.md) */
    static const struct { unsigned v; const char *n; } t[] = {
#define D11_WIRE_TYPE(NAME, value, log_name) {value, log_name},
#include "rpc/wire_msgs.def"
    };
    size_t nt = sizeof t / sizeof t[0];
    CHECK_EQ(nt, 23); /* + METRICS, PRODUCT_LIST (issue 12); + EVENTS_READ, EVENTS_PRUNE (docs/events.md); + CONTROL (live chaos); + FLOW_LEASE (cluster flow) */
    for (size_t i = 0; i < nt; i++) {
        CHECK_STREQ(d11_msg_type_name(t[i].v), t[i].n);
        for (size_t j = 0; j < i; j++) CHECKF(t[i].v != t[j].v && strcmp(t[i].n, t[j].n) != 0, "type %zu/%zu", i, j);
    }
    CHECK_EQ(D11_MSG_ORDER_CREATE, 1);
    CHECK_EQ(D11_MSG_LEDGER_GET, 24);
    CHECK_EQ(D11_MSG_CELL_HELLO, 40);
    CHECK_EQ(D11_MSG_REPORT, 43);
    CHECK_EQ(D11_MSG_RECLAIM, 60);
    CHECK_EQ(D11_MSG_STATS, 91);
    CHECK_EQ(D11_MSG_METRICS, 92);
    CHECK_EQ(D11_MSG_PRODUCT_LIST, 25);
    CHECK_EQ(D11_MSG_FLOW_LEASE, 96);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_type_names();
#define D11_WIRE_MSG(name, ctype, prefix, api, check, FIELDS) test_##name();
#define D11_WIRE_LIST(name, ctype, prefix, ename, ectype, FIELDS) test_##name();
#include "rpc/wire_msgs.def"
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
