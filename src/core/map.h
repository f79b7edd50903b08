/*
 * map.h — open-addressing hash maps (linear probing, power-of-two capacity, load <= 0.7).
 *
 *   d11_imap: uint64 key -> uint64 value (keys may be any value; occupancy is tracked
 *             separately, so 0 is a valid key).
 *   d11_smap: byte-string key -> uint64 value. Keys are copied into the map (owned);
 *             lookups take (ptr, len).
 *
 * Neither supports deletion: d11's maps only grow (orders, SKUs, users) for the life of a
 * process, which keeps probing simple and lookups branch-light. Growth doubles and
 * rehashes (amortised O(1)); it allocates, so callers size them at startup with
 * d11_*map_init(cap) when the final size is known (recovery).
 * Not thread-safe: a map belongs to one thread.
 */
#ifndef D11_MAP_H
#define D11_MAP_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef struct d11_imap {
    uint64_t *keys;
    uint64_t *vals;
    uint8_t  *used;
    size_t    cap; /* power of two */
    size_t    len;
} d11_imap;

void d11_imap_init(d11_imap *m, size_t cap_hint);
void d11_imap_free(d11_imap *m);
/* Returns true and sets *val when key is present. */
bool d11_imap_get(const d11_imap *m, uint64_t key, uint64_t *val);
/* Insert or overwrite. */
void d11_imap_put(d11_imap *m, uint64_t key, uint64_t val);

typedef struct d11_smap_slot {
    char    *key; /* owned, NUL-terminated copy; NULL = empty */
    uint32_t klen;
    uint64_t hash;
    uint64_t val;
} d11_smap_slot;

typedef struct d11_smap {
    d11_smap_slot *slots;
    size_t         cap;
    size_t         len;
} d11_smap;

void d11_smap_init(d11_smap *m, size_t cap_hint);
void d11_smap_free(d11_smap *m);
bool d11_smap_get(const d11_smap *m, const void *key, size_t klen, uint64_t *val);
void d11_smap_put(d11_smap *m, const void *key, size_t klen, uint64_t val);

#endif
