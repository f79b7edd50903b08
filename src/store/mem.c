/*
 * mem.c — the in-memory storage backend (see mem.h). A commit appends
 * [u32 nops][u32 len][bytes] to one log; load walks it. Single-threaded like every store.
 */
#include "mem.h"
#include "../core/util.h"

#include <stdlib.h>
#include <string.h>

typedef struct mem_store {
    d11_store base;
    d11_buf   log;
    uint32_t  fail_next;
    uint64_t  commits, syncs;
} mem_store;

static int mem_commit(d11_store *base, const uint8_t *ops, size_t len, uint32_t nops)
{
    mem_store *m = (mem_store *)base;
    if (m->fail_next) {
        m->fail_next--;
        return D11_ESTORE;
    }
    if (nops == 0) return 0;
    D11_ASSERT(len <= UINT32_MAX);
    uint32_t hdr[2] = {nops, (uint32_t)len};
    d11_buf_append(&m->log, hdr, sizeof hdr);
    d11_buf_append(&m->log, ops, len);
    m->commits++;
    return 0;
}

static int mem_load(d11_store *base, d11_store_apply_fn *fn, void *ctx)
{
    mem_store *m = (mem_store *)base;
    size_t off = 0;
    while (off < m->log.len) {
        uint32_t hdr[2];
        D11_ASSERT(off + sizeof hdr <= m->log.len);
        memcpy(hdr, m->log.data + off, sizeof hdr);
        off += sizeof hdr;
        D11_ASSERT(off + hdr[1] <= m->log.len);
        int rc = fn(ctx, (const uint8_t *)m->log.data + off, hdr[1], hdr[0]);
        if (rc < 0) return rc;
        off += hdr[1];
    }
    return 0;
}

static int mem_sync(d11_store *base)
{
    ((mem_store *)base)->syncs++;
    return 0;
}

static void mem_close(d11_store *base)
{
    mem_store *m = (mem_store *)base;
    d11_buf_free(&m->log);
    free(m);
}

static const d11_store_ops mem_ops = {"memory", mem_load, mem_commit, mem_sync, mem_close};

d11_store *d11_mem_store_open(void)
{
    mem_store *m = calloc(1, sizeof *m);
    if (!m) d11_fatal("out of memory");
    m->base.ops = &mem_ops;
    d11_buf_init(&m->log, 1 << 16);
    return &m->base;
}

void d11_mem_store_fail_next(d11_store *s, uint32_t n)
{
    D11_ASSERT(s->ops == &mem_ops);
    ((mem_store *)s)->fail_next = n;
}

uint64_t d11_mem_store_commits(const d11_store *s)
{
    D11_ASSERT(s->ops == &mem_ops);
    return ((const mem_store *)s)->commits;
}

uint64_t d11_mem_store_syncs(const d11_store *s)
{
    D11_ASSERT(s->ops == &mem_ops);
    return ((const mem_store *)s)->syncs;
}

size_t d11_mem_store_bytes(const d11_store *s)
{
    D11_ASSERT(s->ops == &mem_ops);
    return ((const mem_store *)s)->log.len;
}
