/*
 * mem.h — the in-memory backend of the storage seam (store.h), for the deterministic
 * simulator (src/sim) and unit tests. Owner-agnostic: it keeps every committed op log
 * as it was given and load replays them in commit order (records are upserts, store.h).
 *
 * Faults: d11_mem_store_fail_next(s, n) makes the next n commits fail (nothing applied,
 * D11_ESTORE). A "crash" of the owner is simply: drop the owner's memory and load again —
 * only what commit accepted is there. `durable_upto` models a commit that was applied
 * but whose success the owner never learned (the simulator crashes right after commit).
 */
#ifndef D11_MEM_STORE_H
#define D11_MEM_STORE_H

#include <stdint.h>
#include "store.h"

d11_store *d11_mem_store_open(void);
void     d11_mem_store_fail_next(d11_store *s, uint32_t n);
uint64_t d11_mem_store_commits(const d11_store *s); /* successful commits so far */
uint64_t d11_mem_store_syncs(const d11_store *s);
size_t   d11_mem_store_bytes(const d11_store *s);

#endif
