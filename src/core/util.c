/*
 * util.c — implementation of util.h: error names, assertions, clocks, JSON-line logging,
 * growable buffers, fd and file helpers. No global mutable state except the log
 * settings, which are written once at process start before any thread exists.
 */

#include "util.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *d11_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case D11_EPROTO: return "protocol error";
    case D11_ETOOBIG: return "limit exceeded";
    case D11_ECLOSED: return "connection closed";
    case D11_ESTORE: return "storage error";
    case D11_ECONFIG: return "configuration error";
    case D11_EFULL: return "queue full";
    default: return err < 0 ? strerror(-err) : "unknown error";
    }
}

void d11__assert_fail(const char *expr, const char *file, int line)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "ASSERTION FAILED: %s at %s:%d\n", expr, file, line);
    if (n > 0) (void)!write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    abort();
}

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
int64_t d11_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t d11_mono_us(void) { return clock_ns(CLOCK_MONOTONIC) / 1000; }
int64_t d11_mono_ms(void) { return clock_ns(CLOCK_MONOTONIC) / 1000000; }
int64_t d11_wall_ms(void) { return clock_ns(CLOCK_REALTIME) / 1000000; }

void d11_fmt_iso8601(int64_t wall_ms, char out[25])
{
    /* gmtime + snprintf cost ~1 us; orders are rendered many times per second within the
     * same second, so the "YYYY-MM-DDTHH:MM:SS." prefix is cached per thread. */
    static __thread int64_t cached_sec = -1;
    static __thread char cached[21];
    int64_t sec = wall_ms / 1000;
    if (sec == cached_sec && wall_ms >= 0) {
        int ms = (int)(wall_ms % 1000);
        memcpy(out, cached, 20);
        out[20] = (char)('0' + ms / 100);
        out[21] = (char)('0' + ms / 10 % 10);
        out[22] = (char)('0' + ms % 10);
        out[23] = 'Z';
        out[24] = 0;
        return;
    }
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char tmp[64]; /* large enough for any int fields; the valid range fits 24 chars */
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(wall_ms % 1000));
    memcpy(out, tmp, 24);
    out[24] = 0;
    if (wall_ms >= 0 && tmp[19] == '.') {
        memcpy(cached, tmp, 20);
        cached_sec = sec;
    }
}

/* ---- logging ---- */

static char log_proc[32] = "d11";
static _Atomic int log_level_min = D11_LOG_INFO; /* set at run time by the admin API */
static const char *const log_names[] = {"debug", "info", "warn", "error"};

void d11_log_init(const char *proc_name, int level_min)
{
    snprintf(log_proc, sizeof log_proc, "%s", proc_name);
    atomic_store(&log_level_min, level_min);
}

void d11_log_set_level(int level_min)
{
    D11_ASSERT(level_min >= D11_LOG_DEBUG && level_min <= D11_LOG_ERROR);
    atomic_store(&log_level_min, level_min);
}

int d11_log_level(void) { return atomic_load_explicit(&log_level_min, memory_order_relaxed); }

const char *d11_log_level_name(int level)
{
    return level >= D11_LOG_DEBUG && level <= D11_LOG_ERROR ? log_names[level] : NULL;
}

int d11_log_level_parse(const char *s, size_t n)
{
    for (int i = D11_LOG_DEBUG; i <= D11_LOG_ERROR; i++)
        if (strlen(log_names[i]) == n && memcmp(log_names[i], s, n) == 0) return i;
    return -1;
}

static void log_v(int level, const char *kv, const char *fmt, va_list ap)
{
    const char *const *names = log_names;
    char msg[1024], ts[25], line[2000];
    vsnprintf(msg, sizeof msg, fmt, ap);
    d11_fmt_iso8601(d11_wall_ms(), ts);
    d11_buf b = {line, 0, sizeof line};
    /* A stack buffer dressed as d11_buf: we must not grow it, so bound msg first. */
    int n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"proc\":\"%s\",\"pid\":%d,%s%s\"msg\":",
                     ts, names[level & 3], log_proc, (int)getpid(), kv ? kv : "", kv && kv[0] ? "," : "");
    if (n < 0 || (size_t)n >= sizeof line - 64) return;
    b.len = (size_t)n;
    /* escape msg by hand into the remaining space */
    size_t room = sizeof line - b.len - 4;
    line[b.len++] = '"';
    for (const char *p = msg; *p && room > 6; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') { line[b.len++] = '\\'; line[b.len++] = (char)c; room -= 2; }
        else if (c < 0x20) { b.len += (size_t)snprintf(line + b.len, 7, "\\u%04x", c); room -= 6; }
        else { line[b.len++] = (char)c; room--; }
    }
    line[b.len++] = '"';
    line[b.len++] = '}';
    line[b.len++] = '\n';
    (void)!write(2, line, b.len);
}

void d11_log(int level, const char *fmt, ...)
{
    if (level < d11_log_level()) return;
    va_list ap;
    va_start(ap, fmt);
    log_v(level, NULL, fmt, ap);
    va_end(ap);
}

void d11_log_kv(int level, const char *kv, const char *fmt, ...)
{
    if (level < d11_log_level()) return;
    va_list ap;
    va_start(ap, fmt);
    log_v(level, kv, fmt, ap);
    va_end(ap);
}

void d11_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_v(D11_LOG_ERROR, NULL, fmt, ap);
    va_end(ap);
    exit(1);
}

/* ---- buffers ---- */

void d11_buf_init(d11_buf *b, size_t cap)
{
    b->data = NULL;
    b->len = b->cap = 0;
    if (cap) d11_buf_reserve(b, cap);
}

void d11_buf_free(d11_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void d11_buf_reserve(d11_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) d11_fatal("out of memory growing a buffer to %zu bytes", cap);
    b->data = p;
    b->cap = cap;
}

void d11_buf_append(d11_buf *b, const void *p, size_t n)
{
    d11_buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void d11_buf_puts(d11_buf *b, const char *s) { d11_buf_append(b, s, strlen(s)); }

void d11_buf_printf(d11_buf *b, const char *fmt, ...)
{
    va_list ap;
    d11_buf_reserve(b, 64);
    va_start(ap, fmt);
    int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    D11_ASSERT(n >= 0);
    if ((size_t)n >= b->cap - b->len) {
        d11_buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        D11_ASSERT(n >= 0 && (size_t)n < b->cap - b->len);
    }
    b->len += (size_t)n;
}

void d11_buf_consume(d11_buf *b, size_t n)
{
    D11_ASSERT(n <= b->len);
    if (n == b->len) { b->len = 0; return; }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

char *d11_fmt_u64(char *w, uint64_t v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    char tmp[20];
    int n = 20;
    while (v >= 100) { /* two digits per step */
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        tmp[--n] = pairs[2 * r + 1];
        tmp[--n] = pairs[2 * r];
    }
    if (v >= 10) {
        tmp[--n] = pairs[2 * v + 1];
        tmp[--n] = pairs[2 * v];
    } else {
        tmp[--n] = (char)('0' + v);
    }
    memcpy(w, tmp + n, (size_t)(20 - n));
    return w + (20 - n);
}

void d11_buf_u64(d11_buf *b, uint64_t v)
{
    d11_buf_reserve(b, 20);
    b->len = (size_t)(d11_fmt_u64(b->data + b->len, v) - b->data);
    b->data[b->len] = 0;
}

void d11_buf_json_str(d11_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    d11_buf_reserve(b, n + 2);
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            d11_buf_reserve(b, 2);
            b->data[b->len++] = '\\';
            b->data[b->len++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            d11_buf_reserve(b, 6);
            b->data[b->len++] = '\\';
            b->data[b->len++] = 'u';
            b->data[b->len++] = '0';
            b->data[b->len++] = '0';
            b->data[b->len++] = hex[c >> 4];
            b->data[b->len++] = hex[c & 15];
        } else {
            d11_buf_reserve(b, 1);
            b->data[b->len++] = (char)c;
        }
    }
    d11_buf_reserve(b, 1);
    b->data[b->len++] = '"';
    b->data[b->len] = 0;
}

/* ---- fds and files ---- */

int d11_set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1) return -errno;
    if (fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) return -errno;
    return 0;
}

int d11_set_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl == -1) return -errno;
    if (fcntl(fd, F_SETFD, fl | FD_CLOEXEC) == -1) return -errno;
    return 0;
}

int d11_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w == -1) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int d11_read_file(const char *path, char **out, size_t *len_out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) return -errno;
    d11_buf b;
    d11_buf_init(&b, 4096);
    for (;;) {
        d11_buf_reserve(&b, 4096);
        ssize_t r = read(fd, b.data + b.len, b.cap - b.len - 1);
        if (r == -1) {
            if (errno == EINTR) continue;
            int e = -errno;
            close(fd);
            d11_buf_free(&b);
            return e;
        }
        if (r == 0) break;
        b.len += (size_t)r;
    }
    close(fd);
    b.data[b.len] = 0;
    *out = b.data;
    if (len_out) *len_out = b.len;
    return 0;
}

int d11_write_file_atomic(const char *path, const void *data, size_t n, int mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd == -1) return -errno;
    int rc = d11_write_all(fd, data, n);
    if (rc == 0 && fsync(fd) == -1) rc = -errno;
    if (close(fd) == -1 && rc == 0) rc = -errno;
    if (rc == 0 && rename(tmp, path) == -1) rc = -errno;
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd != -1) {
        (void)fsync(dfd);
        close(dfd);
    }
    return 0;
}

void d11_random_bytes(void *out, size_t n)
{
    char *p = out;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r == -1) {
            if (errno == EINTR) continue;
            d11_fatal("getrandom failed: %s", strerror(errno));
        }
        p += r;
        n -= (size_t)r;
    }
}

void d11_hex(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = 0;
}

int d11_parse_u64(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 20) return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -EINVAL;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -ERANGE;
        v = v * 10 + d;
    }
    if (v > max) return -ERANGE;
    *out = v;
    return 0;
}

bool d11_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

void d11_thread_background(void)
{
    pid_t tid = gettid();
    errno = 0;
    int cur = getpriority(PRIO_PROCESS, (id_t)tid);
    if (cur == -1 && errno != 0) return;
    int want = cur + D11_BACKGROUND_NICE > 19 ? 19 : cur + D11_BACKGROUND_NICE;
    (void)setpriority(PRIO_PROCESS, (id_t)tid, want);
}
