/*
 * map.c — the hash maps of map.h. Hashes are FNV-1a with a final avalanche step so that
 * sequential integer keys (order ids, user ids) spread over the table.
 */
#include "map.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) d11_fatal("out of memory allocating a map of %zu slots", n);
    return p;
}

void d11_imap_init(d11_imap *m, size_t cap_hint)
{
    m->cap = pow2_at_least(cap_hint * 10 / 7 + 1);
    m->len = 0;
    m->keys = xcalloc(m->cap, sizeof *m->keys);
    m->vals = xcalloc(m->cap, sizeof *m->vals);
    m->used = xcalloc(m->cap, 1);
}

void d11_imap_free(d11_imap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof *m);
}

bool d11_imap_get(const d11_imap *m, uint64_t key, uint64_t *val)
{
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (!m->used[i]) return false;
        if (m->keys[i] == key) {
            *val = m->vals[i];
            return true;
        }
    }
}

static void imap_grow(d11_imap *m)
{
    d11_imap n;
    d11_imap_init(&n, m->cap);
    for (size_t i = 0; i < m->cap; i++)
        if (m->used[i]) d11_imap_put(&n, m->keys[i], m->vals[i]);
    d11_imap_free(m);
    *m = n;
}

void d11_imap_put(d11_imap *m, uint64_t key, uint64_t val)
{
    if ((m->len + 1) * 10 > m->cap * 7) imap_grow(m);
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (!m->used[i]) {
            m->used[i] = 1;
            m->keys[i] = key;
            m->vals[i] = val;
            m->len++;
            return;
        }
        if (m->keys[i] == key) {
            m->vals[i] = val;
            return;
        }
    }
}

void d11_smap_init(d11_smap *m, size_t cap_hint)
{
    m->cap = pow2_at_least(cap_hint * 10 / 7 + 1);
    m->len = 0;
    m->slots = xcalloc(m->cap, sizeof *m->slots);
}

void d11_smap_free(d11_smap *m)
{
    for (size_t i = 0; i < m->cap; i++) free(m->slots[i].key);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static uint64_t shash(const void *key, size_t klen) { return mix64(d11_hash64(key, klen, 0)); }

bool d11_smap_get(const d11_smap *m, const void *key, size_t klen, uint64_t *val)
{
    uint64_t h = shash(key, klen);
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const d11_smap_slot *s = &m->slots[i];
        if (!s->key) return false;
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) {
            *val = s->val;
            return true;
        }
    }
}

static void smap_insert_slot(d11_smap *m, d11_smap_slot *src)
{
    size_t mask = m->cap - 1;
    for (size_t i = src->hash & mask;; i = (i + 1) & mask)
        if (!m->slots[i].key) {
            m->slots[i] = *src;
            m->len++;
            return;
        }
}

void d11_smap_put(d11_smap *m, const void *key, size_t klen, uint64_t val)
{
    D11_ASSERT(klen < UINT32_MAX);
    if ((m->len + 1) * 10 > m->cap * 7) {
        d11_smap n;
        d11_smap_init(&n, m->cap);
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].key) smap_insert_slot(&n, &m->slots[i]);
        free(m->slots);
        *m = n;
    }
    uint64_t h = shash(key, klen);
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        d11_smap_slot *s = &m->slots[i];
        if (!s->key) {
            s->key = malloc(klen + 1);
            if (!s->key) d11_fatal("out of memory");
            memcpy(s->key, key, klen);
            s->key[klen] = 0;
            s->klen = (uint32_t)klen;
            s->hash = h;
            s->val = val;
            m->len++;
            return;
        }
        if (s->hash == h && s->klen == klen && memcmp(s->key, key, klen) == 0) {
            s->val = val;
            return;
        }
    }
}
