/*
 * jwalk.c — the JSON walker of `d11 ctl` (see ctl_int.h): skip, iterate members and
 * elements, over texts the gateway wrote. Recursion depth is bounded by JW_DEPTH_MAX.
 */
#include <string.h>

#include "ctl_int.h"

#define JW_DEPTH_MAX 64

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static const char *skip_d(const char *p, const char *end, int depth)
{
    p = ws(p, end);
    if (p >= end || depth > JW_DEPTH_MAX) return NULL;
    if (*p == '"') {
        for (p++; p < end; p++) {
            if (*p == '\\') p++;
            else if (*p == '"') return p + 1;
        }
        return NULL;
    }
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_d(p, end, depth + 1); /* key */
                if (!p) return NULL;
                p = ws(p, end);
                if (p >= end || *p != ':') return NULL;
                p++;
            }
            p = skip_d(p, end, depth + 1);
            if (!p) return NULL;
            p = ws(p, end);
            if (p >= end) return NULL;
            if (*p == close) return p + 1;
            if (*p != ',') return NULL;
            p++;
        }
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p;
}

const char *jw_skip(const char *p, const char *end) { return skip_d(p, end, 0); }

static bool next_common(const char **it, const char *end, char open, char close, jw_span *key, jw_span *val)
{
    const char *p = ws(*it, end);
    if (p >= end) return false;
    if (*p == open) p++;
    else if (*p == ',') p++;
    else return false;
    p = ws(p, end);
    if (p >= end || *p == close) {
        *it = end;
        return false;
    }
    if (key) {
        const char *ke = jw_skip(p, end);
        if (!ke || *p != '"') return false;
        *key = (jw_span){p + 1, (size_t)(ke - p - 2)};
        p = ws(ke, end);
        if (p >= end || *p != ':') return false;
        p = ws(p + 1, end);
    }
    const char *ve = jw_skip(p, end);
    if (!ve) return false;
    *val = (jw_span){p, (size_t)(ve - p)};
    *it = ve;
    return true;
}

bool jw_member(const char **it, const char *end, jw_span *key, jw_span *val)
{
    return next_common(it, end, '{', '}', key, val);
}

bool jw_elem(const char **it, const char *end, jw_span *val) { return next_common(it, end, '[', ']', NULL, val); }

bool jw_key_is(jw_span key, const char *s) { return strlen(s) == key.n && memcmp(key.p, s, key.n) == 0; }

bool jw_get(jw_span obj, const char *key, jw_span *val)
{
    const char *it = obj.p, *end = obj.p + obj.n;
    jw_span k, v;
    if (obj.n == 0 || obj.p[0] != '{') return false;
    while (jw_member(&it, end, &k, &v))
        if (jw_key_is(k, key)) {
            *val = v;
            return true;
        }
    return false;
}

void jw_text(jw_span v, char *out, size_t cap)
{
    const char *p = v.p;
    size_t n = v.n;
    if (n >= 2 && p[0] == '"') {
        p++;
        n -= 2;
    }
    if (n >= cap) n = cap - 1;
    memcpy(out, p, n);
    out[n] = 0;
}
