/*
 * store.h — the storage seam: what the cell and the center ask of durable storage.
 *
 * A state machine (cell, center) never sees SQL. It writes its changes as an OP LOG: a
 * byte stream of records, each `u8 op` followed by fields encoded with the wire encoders
 * (d11_wenc_*). The record layouts are declared once per owner (cell: src/store/cell_ops.h,
 * center: src/store/center_ops.h). A backend does four things with them:
 *
 *   load    replay the durable state as records, in an order the owner can apply
 *           (each record an upsert of one row; see the owner's ops header), through a
 *           callback. Used at start, by recovery, and by `d11 audit`.
 *   commit  apply one op log in ONE transaction: all of it or none of it. Returns 0 only
 *           when the batch is durable as the durability mode promises.
 *   sync    make earlier commits durable (durability=async: called on a timer).
 *   close   release everything.
 *
 * Backends: SQLite (cell_sqlite.c, center_sqlite.c), memory (mem.c: the simulator and
 * unit tests; it can fail a commit on demand and "crash" by dropping what was not
 * committed). A PostgreSQL backend is one more file implementing d11_store_ops.
 *
 * Threads: a d11_store belongs to one thread at a time (the cell's storage thread, the
 * center's loop). load runs before that thread starts.
 */
#ifndef D11_STORE_H
#define D11_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct d11_store d11_store;

/* Called by load with one or more whole records back to back (`nrecs` records, `len`
 * bytes; a backend may hand over one row at a time or a whole committed batch). Return 0
 * to continue, < 0 to stop (load then returns that value). */
typedef int d11_store_apply_fn(void *ctx, const uint8_t *recs, size_t len, uint32_t nrecs);

typedef struct d11_store_ops {
    const char *name; /* "sqlite", "memory", ... */
    int  (*load)(d11_store *s, d11_store_apply_fn *apply, void *ctx);
    /* ops: nops records back to back, len bytes. 0 or a negative error (D11_ESTORE...). */
    int  (*commit)(d11_store *s, const uint8_t *ops, size_t len, uint32_t nops);
    int  (*sync)(d11_store *s);
    void (*close)(d11_store *s);
} d11_store_ops;

/* Every backend embeds this first; `ops` is set by the backend's open function. */
struct d11_store {
    const d11_store_ops *ops;
};

static inline int d11_store_load(d11_store *s, d11_store_apply_fn *fn, void *ctx) { return s->ops->load(s, fn, ctx); }
static inline int d11_store_commit(d11_store *s, const uint8_t *ops, size_t len, uint32_t nops)
{
    return s->ops->commit(s, ops, len, nops);
}
static inline int d11_store_sync(d11_store *s) { return s->ops->sync(s); }
static inline void d11_store_close(d11_store *s)
{
    if (s) s->ops->close(s);
}

#endif
