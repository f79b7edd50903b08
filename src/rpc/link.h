/*
 * link.h — the connection table: framed wire connections (d11_conn) on a d11_loop, in a
 * fixed pool with a free list (nginx's free_connections) and a dirty list, so that the one
 * flush/re-arm path (d11_links_flush, called from a before-sleep hook) touches only the
 * links that have output.
 *
 * A link is named by (idx, gen): gen increments when the link closes, so a reference kept
 * across calls (a parked request, a pending reply) is checked with d11_links_get and a
 * reused slot is never mistaken for the old peer. gen starts at 1, so a zeroed reference
 * (idx 0, gen 0) never names a link.
 *
 * Reading: on readiness the link reads until EAGAIN (or a burst bound), hands every whole
 * frame to on_frame in order, then compacts its input; EOF, a read error or a malformed
 * stream closes it. Frames point into the link's input buffer and are valid until on_frame
 * returns, even if on_frame closes the link (buffers are kept with the slot; a closed link
 * gets no further frames). Writing: d11_link_send / d11_link_reply / d11_link_out queue
 * bytes and mark the link dirty; d11_links_flush writes every dirty link, asks for
 * D11_IO_WRITE only while bytes remain (EPOLL_CTL_MOD only when that changes) and closes a
 * link on a write error or when its unsent bytes pass D11_RPC_OUT_BYTES_MAX. A WRITE event
 * only marks the link dirty: all writes happen in d11_links_flush.
 *
 * The transport (plain read/write today; TLS later) is behind two functions in link.c,
 * link_read and link_write; see docs/event-loop.md.
 *
 * Memory: d11_links_init allocates the slots and their I/O buffers for `cap` links; nothing
 * is allocated afterwards except buffer growth for frames larger than the initial buffers
 * (kept for reuse). d11_links_release frees everything.
 *
 * Ownership: a link owns its fd from d11_links_add on (closed with the link). `data` is the
 * owner's; the table never touches it. The d11_link pointers stay valid until release
 * (slots never move), but name a different peer after a close: keep (idx, gen), not the
 * pointer, across iterations.
 *
 * Threads: the table belongs to its loop's thread.
 */
#ifndef D11_LINK_H
#define D11_LINK_H

#include "../core/loop.h"
#include "conn.h"

#define D11_LINK_ACCEPT_BURST_MAX 256 /* accepts per listener event (fairness) */
#define D11_LINK_ACCEPT_PAUSE_MS  100 /* out of descriptors: stop accepting this long */

typedef struct d11_links d11_links;

typedef struct d11_link {
    d11_io     io;
    d11_conn   c;
    d11_links *tab;
    uint32_t   idx, gen;  /* (idx, gen) names a link; gen increments on close */
    bool       open, dirty;
    void      *data;      /* the owner's per-link data */
    uint32_t   dirty_pos; /* internal: index in tab->dirty while dirty */
} d11_link;

/* One whole frame from k; f and its payload are valid until the callback returns. The
 * callback may send on any link and close any link, k included (no more frames of k are
 * delivered then). */
typedef void d11_link_frame_fn(d11_links *t, d11_link *k, const d11_frame *f);
/* Called once when a link closes (peer EOF: D11_ECLOSED; I/O error: -errno; bad stream:
 * D11_EPROTO; output over its limit: D11_ETOOBIG; d11_link_close: its `why`; release: 0),
 * before its gen changes, with k->open already false (sending is no longer possible). */
typedef void d11_link_close_fn(d11_links *t, d11_link *k, int why);
/* Optional (set t->on_open after init): a link was accepted by the listener. */
typedef void d11_link_open_fn(d11_links *t, d11_link *k);

struct d11_links {
    d11_loop          *loop;
    d11_link          *v;       /* cap slots */
    uint32_t           cap, nopen;
    uint32_t          *free_v;  /* stack of free slot indexes (LIFO: warm buffers first) */
    uint32_t           nfree;
    uint32_t          *dirty;   /* indexes of links with output to flush */
    uint32_t           ndirty;
    d11_link_frame_fn *on_frame;
    d11_link_close_fn *on_close;
    d11_link_open_fn  *on_open; /* optional; NULL after init */
    void              *data;    /* the owner's */
    d11_io            *lio;     /* the listener of d11_links_listen, if any */
    d11_timer          accept_pause;
    /* counters (metrics and tests) */
    uint64_t           n_refused_full;  /* adds refused: table full */
    uint64_t           n_add_failed;    /* adds refused: epoll_ctl failed */
    uint64_t           n_accept_errors; /* accept(2) failures other than EAGAIN */
    uint64_t           n_flushed;       /* links written by d11_links_flush */
    uint64_t           n_closed_slow;   /* links closed for unsent bytes over the limit */
};

/* Allocate cap slots and their buffers. 0, -EINVAL (cap 0) or -ENOMEM. on_frame and
 * on_close are required. */
int  d11_links_init(d11_links *t, d11_loop *loop, uint32_t cap, d11_link_frame_fn *on_frame,
                    d11_link_close_fn *on_close, void *data);
/* Close every open link (on_close with why 0), stop the listener io (its fd stays open:
 * the caller owns it), free the table. */
void d11_links_release(d11_links *t);
/* Take ownership of a connected, non-blocking fd and start reading it. NULL when the table
 * is full (fd closed, n_refused_full counted; the caller logs) or epoll_ctl failed (fd
 * closed, n_add_failed counted). The new link is open, clean, data = NULL. */
d11_link *d11_links_add(d11_links *t, int fd);
/* Accept on the non-blocking listening fd lfd, adding each connection (d11_accept). On
 * EMFILE/ENFILE/ENOBUFS/ENOMEM accepts pause for D11_LINK_ACCEPT_PAUSE_MS. One listener
 * per table; lio is the caller's memory (stop it with d11_io_stop before closing lfd).
 * 0 or -errno. */
int  d11_links_listen(d11_links *t, d11_io *lio, int lfd);
/* The open link (idx, gen), or NULL if it closed or the slot was reused. */
d11_link *d11_links_get(d11_links *t, uint32_t idx, uint32_t gen);
/* Close now: on_close, stop, close the fd, drop unsent output, free the slot, gen++.
 * No-op on a closed link. */
void d11_link_close(d11_link *k, int why);

/* The output buffer to append encoded frames to; marks the link dirty. Valid until the
 * next call into the table. */
d11_buf *d11_link_out(d11_link *k);
/* Queue a reply frame to req (see d11_conn_reply); marks dirty. */
void d11_link_reply(d11_link *k, const d11_frame_hdr *req, uint32_t status, const char *code,
                    const char *body, size_t n);
/* Append one encoded frame (n <= D11_FRAME_BYTES_MAX); marks dirty. */
void d11_link_send(d11_link *k, const void *frame, size_t n);
/* Flush every dirty link; arm or disarm D11_IO_WRITE only when it changes; a write error
 * (or unsent bytes over D11_RPC_OUT_BYTES_MAX) closes the link. Call from a before-sleep
 * hook. */
void d11_links_flush(d11_links *t);
/* A before-sleep hook calling d11_links_flush(data). */
void d11_links_flush_hook(d11_loop *l, void *links);

#endif
