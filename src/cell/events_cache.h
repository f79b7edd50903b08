/*
 * events_cache.h — the event reader thread's cache of rendered event lines, one run per
 * stream. Every consumer reads near the head of the outbox (the stats aggregator, the
 * NATS relay, webhooks, named consumers), so the same events are read and rendered once
 * per consumer; the cache keeps the newest rendered lines ("<id> <at> <json>\n", the
 * EVENTS_READ body format) so that each event is read from SQLite and rendered once.
 *
 * A run is a sequence of consecutive outbox rows: entry i+1 is the row that follows entry
 * i in the table (they were read by one range scan, or by a scan that started right after
 * the run's last row). Rows are immutable once committed, so a run stays true until its
 * rows are pruned — and a read below the pruned watermark is answered 410 before the
 * cache is asked. Bounds: D11_EVCACHE_EVENTS entries and D11_EVCACHE_BYTES of lines per
 * stream; when full, the older half is dropped.
 * Thread: the event reader thread only (events_thread.c); no locks.
 */
#ifndef D11_CELL_EVENTS_CACHE_H
#define D11_CELL_EVENTS_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "../core/util.h"

#define D11_EVCACHE_EVENTS 8192            /* rendered events kept per stream */
#define D11_EVCACHE_BYTES  (4u << 20)      /* bytes of rendered lines kept per stream */

typedef struct cell_evcache {
    uint64_t *id;    /* event ids, ascending */
    uint32_t *end;   /* end offset of entry i's line in lines (start: end[i-1], or 0) */
    d11_buf   lines; /* the rendered lines, concatenated */
    uint32_t  n;
    uint64_t  hits, misses; /* events served from the cache / rendered from SQLite */
} cell_evcache;

void cell_evcache_init(cell_evcache *c);
void cell_evcache_free(cell_evcache *c);
/* Does the run hold the row that follows `after` (or end exactly at it)? */
bool cell_evcache_covers(const cell_evcache *c, uint64_t after);
/* Append to body the lines of up to limit cached events after `after` (covers() must be
 * true); returns how many, *last = the last one's id (after when none). */
uint32_t cell_evcache_get(cell_evcache *c, uint64_t after, uint32_t limit, d11_buf *body, uint64_t *last);
/* The run ends at the row `last` (true) — rows read right after it extend it. */
bool cell_evcache_ends_at(const cell_evcache *c, uint64_t last);
void cell_evcache_reset(cell_evcache *c);
/* Append the line of event id (the row right after the run's last one, or the first of a
 * new run after cell_evcache_reset). */
void cell_evcache_add(cell_evcache *c, uint64_t id, const char *line, size_t n);

#endif
