/*
 * util.h — small shared pieces: error codes, assertions, clocks, logging, growable
 * buffers, fd helpers.
 *
 * Errors: int functions return 0 on success or a negative value: -errno for system
 * errors, or one of the D11_E* codes below. d11_strerror() names both.
 * Assertions: D11_ASSERT is always on; it protects data (stock conservation, state
 * machine moves, frame sizes) and aborts loudly rather than continue wrong.
 * Thread safety: everything here is safe from any thread (logging writes one line with
 * one write(2)).
 */
#ifndef D11_UTIL_H
#define D11_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdarg.h>

/* d11's own error codes (negative, below the errno range). */
enum {
    D11_EPROTO   = -10001, /* malformed frame or message */
    D11_ETOOBIG  = -10002, /* a named limit was exceeded */
    D11_ECLOSED  = -10003, /* peer closed the connection */
    D11_ESTORE   = -10004, /* the storage engine failed */
    D11_ECONFIG  = -10005, /* bad configuration */
    D11_EFULL    = -10006, /* a pool or queue is full (backpressure) */
};

const char *d11_strerror(int err);

#define D11_ASSERT(cond)                                                           \
    do {                                                                           \
        if (__builtin_expect(!(cond), 0)) d11__assert_fail(#cond, __FILE__, __LINE__); \
    } while (0)
_Noreturn void d11__assert_fail(const char *expr, const char *file, int line);

/* Clocks. d11_mono_ms/us: CLOCK_MONOTONIC; d11_wall_ms: milliseconds since the epoch. */
int64_t d11_mono_ms(void);

/* Background threads (the event reader of a cell, the NATS relay, the stats aggregator,
 * the webhook worker): the calling thread's nice value is raised by
 * D11_BACKGROUND_NICE (Linux: nice is per thread; threads it creates inherit it). Under
 * CPU saturation the order path wins and events wait in the outbox (their lag is in
 * /metrics) instead of taking CPU from orders; on an idle core nothing changes.
 * Best effort: a failure is ignored. */
#define D11_BACKGROUND_NICE 5
void d11_thread_background(void);
int64_t d11_mono_us(void);
int64_t d11_mono_ns(void);
int64_t d11_wall_ms(void);
/* Format a wall time in ms as "2026-11-11T00:00:00.000Z" into out (>= 25 bytes). */
void d11_fmt_iso8601(int64_t wall_ms, char out[25]);

/* Logging: one JSON object per line on stderr. Set the process name once at start. */
enum { D11_LOG_DEBUG, D11_LOG_INFO, D11_LOG_WARN, D11_LOG_ERROR };
void d11_log_init(const char *proc_name, int level_min);
void d11_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The minimum level logged, changeable at run time from any thread (admin API). */
void d11_log_set_level(int level_min);
int  d11_log_level(void);
/* Name of a level ("debug".."error"), or NULL; and back (-1 when unknown). */
const char *d11_log_level_name(int level);
int  d11_log_level_parse(const char *s, size_t n);
/* One line with extra top-level fields: kv is a JSON fragment `"k":v,"k2":v2` (trusted,
 * already escaped by the caller), placed before "msg". */
void d11_log_kv(int level, const char *kv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define d11_info(...)  d11_log(D11_LOG_INFO, __VA_ARGS__)
#define d11_warn(...)  d11_log(D11_LOG_WARN, __VA_ARGS__)
#define d11_error(...) d11_log(D11_LOG_ERROR, __VA_ARGS__)
_Noreturn void d11_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * d11_buf: a growable byte buffer. Owns .data (free with d11_buf_free). Growth is by
 * doubling; on the hot path buffers are reused (d11_buf_reset keeps the capacity), so
 * steady state allocates nothing. Allocation failure aborts (the process is sized by
 * its limits; running out of memory is not an operating error we can answer).
 */
typedef struct d11_buf {
    char  *data;
    size_t len;
    size_t cap;
} d11_buf;

void  d11_buf_init(d11_buf *b, size_t cap);
void  d11_buf_free(d11_buf *b);
static inline void d11_buf_reset(d11_buf *b) { b->len = 0; }
void  d11_buf_reserve(d11_buf *b, size_t extra);
void  d11_buf_append(d11_buf *b, const void *p, size_t n);
void  d11_buf_puts(d11_buf *b, const char *s);
void  d11_buf_printf(d11_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drop the first n bytes (consumed input). */
void  d11_buf_consume(d11_buf *b, size_t n);
/* Append the decimal digits of v (no printf: this is on the order hot path). */
void  d11_buf_u64(d11_buf *b, uint64_t v);
/* Write the decimal digits of v at w (room for 20 bytes, no NUL); returns the end. */
char *d11_fmt_u64(char *w, uint64_t v);
/* Append s as a JSON string literal (quotes included), escaping as RFC 8259 requires. */
void  d11_buf_json_str(d11_buf *b, const char *s, size_t n);

/* fd helpers; return 0 or -errno. */
int d11_set_nonblock(int fd);
int d11_set_cloexec(int fd);
/* Write all of buf to a blocking fd (retries EINTR and short writes). */
int d11_write_all(int fd, const void *buf, size_t n);
/* Read a whole small file into a malloc'ed NUL-terminated string (caller frees). */
int d11_read_file(const char *path, char **out, size_t *len_out);
/* Write data to path atomically (tmp + fsync + rename + dir fsync) with the given mode. */
int d11_write_file_atomic(const char *path, const void *data, size_t n, int mode);

/* Random bytes from getrandom(2); aborts on failure (only at startup / token creation). */
void d11_random_bytes(void *out, size_t n);
/* Lowercase hex of n bytes into out (2n+1 bytes). */
void d11_hex(const uint8_t *in, size_t n, char *out);

/* Strict decimal parsing of s[0..n): digits only, no sign/space; -ERANGE above max. */
int d11_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out);
/* A whole NUL-terminated string as a finite double in [lo, hi] (command-line flags). */
bool d11_parse_double(const char *s, double lo, double hi, double *out);

/* FNV-1a 64-bit hash (hash tables; not for security). */
static inline uint64_t d11_hash64(const void *p, size_t n, uint64_t seed)
{
    const unsigned char *s = p;
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (size_t i = 0; i < n; i++) { h ^= s[i]; h *= 1099511628211ULL; }
    return h;
}

#endif
