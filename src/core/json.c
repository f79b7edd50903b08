/*
 * json.c — strict JSON on top of jsmn (see json.h for the rules enforced).
 *
 * jsmn is header-only. It is compiled here, and only here, with JSMN_STATIC so its two
 * functions are private to this object file: any number of other files may include
 * json.h without duplicate symbols, and nobody else includes jsmn.h.
 *
 * Validation strategy: jsmn gives a token tree with positions; walk() then checks every
 * byte of the text against that tree — each gap between tokens may hold only whitespace
 * and exactly the punctuation the grammar expects there (':' after a key, ',' between
 * members, the closing bracket at the container's recorded end) — and checks the
 * content of each string and primitive token. Whatever jsmn tolerated that RFC 8259 does
 * not is caught by that walk.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#define JSMN_PARENT_LINKS
#include <jsmn.h>

#include "json.h"
#include "util.h"

#include <stdio.h>
#include <string.h>

_Static_assert(D11_JSON_TOKENS_MAX < (1 << 20), "token indexes are ints");

bool d11_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; } /* no UTF-16 surrogates */
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; } /* <= U+10FFFF */
        else return false; /* 0x80..0xC1 continuation/overlong leads, 0xF5.. */
        if (n - i - 1 < need) return false;
        if (p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k <= need; k++)
            if ((p[i + k] & 0xC0) != 0x80) return false;
        i += need + 1;
    }
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int hex4(const char *p, const char *end)
{
    if (end - p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return -1;
        v = v * 16 + h;
    }
    return v;
}

/*
 * Decode the next character of string content at *p (< end) into out as UTF-8 bytes.
 * Returns the byte count (1..4), or -1 on a bad escape / lone surrogate.
 */
static int unesc_next(const char **pp, const char *end, uint8_t out[4])
{
    const char *p = *pp;
    if (*p != '\\') {
        out[0] = (uint8_t)*p;
        *pp = p + 1;
        return 1;
    }
    if (end - p < 2) return -1;
    char e = p[1];
    uint8_t c;
    switch (e) {
    case '"': c = '"'; break;
    case '\\': c = '\\'; break;
    case '/': c = '/'; break;
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;
    case 'u': {
        int u = hex4(p + 2, end);
        if (u < 0) return -1;
        const char *q = p + 6;
        uint32_t cp = (uint32_t)u;
        if (u >= 0xDC00 && u <= 0xDFFF) return -1; /* lone low surrogate */
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - q < 6 || q[0] != '\\' || q[1] != 'u') return -1;
            int lo = hex4(q + 2, end);
            if (lo < 0xDC00 || lo > 0xDFFF) return -1;
            cp = 0x10000 + (((uint32_t)u - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            q += 6;
        }
        *pp = q;
        if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
        if (cp < 0x800) {
            out[0] = (uint8_t)(0xC0 | (cp >> 6));
            out[1] = (uint8_t)(0x80 | (cp & 0x3F));
            return 2;
        }
        if (cp < 0x10000) {
            out[0] = (uint8_t)(0xE0 | (cp >> 12));
            out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            out[2] = (uint8_t)(0x80 | (cp & 0x3F));
            return 3;
        }
        out[0] = (uint8_t)(0xF0 | (cp >> 18));
        out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (uint8_t)(0x80 | (cp & 0x3F));
        return 4;
    }
    default: return -1;
    }
    out[0] = c;
    *pp = p + 2;
    return 1;
}

/* Validate string content js[start..end): no raw control bytes, good escapes, UTF-8. */
static bool string_ok(const char *js, int start, int end)
{
    for (int i = start; i < end; i++)
        if ((unsigned char)js[i] < 0x20) return false;
    if (!d11_utf8_valid(js + start, (size_t)(end - start))) return false;
    const char *p = js + start, *e = js + end;
    uint8_t tmp[4];
    while (p < e)
        if (unesc_next(&p, e, tmp) < 0) return false;
    return true;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Classify a primitive token: a JSON literal or a number; 0 when malformed. */
static int primitive_type(const char *s, size_t n)
{
    if (n == 4 && !memcmp(s, "true", 4)) return D11_JT_TRUE;
    if (n == 5 && !memcmp(s, "false", 5)) return D11_JT_FALSE;
    if (n == 4 && !memcmp(s, "null", 4)) return D11_JT_NULL;
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    size_t d0 = i;
    while (i < n && is_digit(s[i])) i++;
    if (i == d0) return 0;
    if (i < n && s[i] == '.') {
        i++;
        size_t f0 = i;
        while (i < n && is_digit(s[i])) i++;
        if (i == f0) return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        size_t e0 = i;
        while (i < n && is_digit(s[i])) i++;
        if (i == e0) return 0;
    }
    return i == n ? D11_JT_NUMBER : 0;
}

typedef struct walker {
    d11_json        *j;
    const jsmntok_t *t;
    int              nt;
    int              i;   /* next token to visit */
    size_t           pos; /* next text byte to check */
} walker;

static int fail(d11_json *j, const char *msg, size_t pos)
{
    snprintf(j->err, sizeof j->err, "%s at byte %zu", msg, pos);
    return D11_JSON_EBAD;
}

static void skip_ws(walker *w)
{
    const char *js = w->j->js;
    while (w->pos < w->j->len &&
           (js[w->pos] == ' ' || js[w->pos] == '\t' || js[w->pos] == '\n' || js[w->pos] == '\r'))
        w->pos++;
}

static int expect(walker *w, char c)
{
    skip_ws(w);
    if (w->pos >= w->j->len || w->j->js[w->pos] != c) {
        char msg[32];
        snprintf(msg, sizeof msg, "expected '%c'", c);
        return fail(w->j, msg, w->pos);
    }
    w->pos++;
    return 0;
}

/* Compare the unescaped contents of two string tokens. */
static bool keys_equal(const d11_json *j, int a, int b)
{
    const char *pa = j->js + j->tok[a].start, *ea = j->js + j->tok[a].end;
    const char *pb = j->js + j->tok[b].start, *eb = j->js + j->tok[b].end;
    if (ea - pa == eb - pb && !memcmp(pa, pb, (size_t)(ea - pa))) return true;
    if (!memchr(pa, '\\', (size_t)(ea - pa)) && !memchr(pb, '\\', (size_t)(eb - pb))) return false;
    uint8_t ba[4], bb[4];
    int na = 0, nb = 0, ia = 0, ib = 0;
    for (;;) {
        if (ia == na) {
            if (pa == ea) na = 0;
            else na = unesc_next(&pa, ea, ba);
            ia = 0;
        }
        if (ib == nb) {
            if (pb == eb) nb = 0;
            else nb = unesc_next(&pb, eb, bb);
            ib = 0;
        }
        if (na <= 0 || nb <= 0) return na <= 0 && nb <= 0;
        if (ba[ia++] != bb[ib++]) return false;
    }
}

static int walk(walker *w, int parent, int depth)
{
    d11_json *j = w->j;
    if (w->i >= w->nt) return fail(j, "truncated document", w->pos);
    int me = w->i;
    const jsmntok_t *t = &w->t[me];
    if (t->parent != parent) return fail(j, "unexpected value", w->pos);
    skip_ws(w);
    d11_json_tok *o = &j->tok[me];
    o->size = 0;
    switch (t->type) {
    case JSMN_STRING:
        if (t->start < 1 || w->pos != (size_t)t->start - 1 || j->js[w->pos] != '"')
            return fail(j, "unexpected string", w->pos);
        if (!string_ok(j->js, t->start, t->end)) return fail(j, "invalid string", (size_t)t->start);
        o->type = D11_JT_STRING;
        o->start = t->start;
        o->end = t->end;
        w->pos = (size_t)t->end + 1;
        w->i++;
        break;
    case JSMN_PRIMITIVE: {
        if (w->pos != (size_t)t->start) return fail(j, "unexpected value", w->pos);
        int ty = primitive_type(j->js + t->start, (size_t)(t->end - t->start));
        if (!ty) return fail(j, "invalid literal", w->pos);
        o->type = (uint8_t)ty;
        o->start = t->start;
        o->end = t->end;
        w->pos = (size_t)t->end;
        w->i++;
        break;
    }
    case JSMN_OBJECT:
    case JSMN_ARRAY: {
        bool obj = t->type == JSMN_OBJECT;
        if (depth + 1 > D11_JSON_DEPTH_MAX) return fail(j, "nesting too deep", w->pos);
        if (w->pos != (size_t)t->start) return fail(j, "unexpected container", w->pos);
        w->pos++;
        o->type = obj ? D11_JT_OBJECT : D11_JT_ARRAY;
        o->start = t->start;
        o->end = t->end;
        o->size = t->size;
        w->i++;
        int first_key = w->i;
        for (int k = 0; k < t->size; k++) {
            if (k > 0 && expect(w, ',')) return D11_JSON_EBAD;
            if (obj) {
                int key = w->i;
                if (key >= w->nt || w->t[key].type != JSMN_STRING || w->t[key].size != 1)
                    return fail(j, "expected a key", w->pos);
                int rc = walk(w, me, depth + 1);
                if (rc) return rc;
                if (expect(w, ':')) return D11_JSON_EBAD;
                rc = walk(w, key, depth + 1);
                if (rc) return rc;
                /* duplicate keys: compare with every earlier key of this object */
                for (int q = first_key; q < key; q = j->tok[q + 1].next)
                    if (keys_equal(j, q, key)) {
                        char msg[40];
                        snprintf(msg, sizeof msg, "duplicate key");
                        return fail(j, msg, (size_t)j->tok[key].start);
                    }
            } else {
                int rc = walk(w, me, depth + 1);
                if (rc) return rc;
            }
        }
        if (expect(w, obj ? '}' : ']')) return D11_JSON_EBAD;
        if (w->pos != (size_t)t->end) return fail(j, "misplaced bracket", w->pos);
        break;
    }
    default:
        return fail(j, "unexpected token", w->pos);
    }
    o->next = w->i;
    return 0;
}

int d11_json_parse(d11_json *j, const char *js, size_t len)
{
    jsmntok_t toks[D11_JSON_TOKENS_MAX];
    j->js = js;
    j->len = len;
    j->ntok = 0;
    j->err[0] = 0;
    if (len > (size_t)1 << 30) return fail(j, "document too large", 0);
    if (memchr(js, 0, len)) return fail(j, "NUL byte", (size_t)((const char *)memchr(js, 0, len) - js));
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, js, len, toks, D11_JSON_TOKENS_MAX);
    if (n == JSMN_ERROR_NOMEM) return fail(j, "too many values", p.pos);
    if (n < 0) return fail(j, n == JSMN_ERROR_PART ? "truncated document" : "invalid JSON", p.pos);
    if (n == 0) return fail(j, "empty document", 0);
    if (toks[0].type != JSMN_OBJECT) return fail(j, "top level must be an object", 0);
    walker w = {.j = j, .t = toks, .nt = n, .i = 0, .pos = 0};
    int rc = walk(&w, -1, 0);
    if (rc) return rc;
    skip_ws(&w);
    if (w.i != n || w.pos != len) return fail(j, "trailing data", w.pos);
    j->ntok = n;
    D11_ASSERT(j->tok[0].next == n);
    return 0;
}

bool d11_json_str_eq(const d11_json *j, int t, const char *s, size_t n)
{
    if (t < 0 || t >= j->ntok || j->tok[t].type != D11_JT_STRING) return false;
    const char *p = j->js + j->tok[t].start, *e = j->js + j->tok[t].end;
    if (!memchr(p, '\\', (size_t)(e - p))) return (size_t)(e - p) == n && !memcmp(p, s, n);
    size_t k = 0;
    uint8_t b[4];
    while (p < e) {
        int m = unesc_next(&p, e, b);
        D11_ASSERT(m > 0); /* validated by d11_json_parse */
        if (k + (size_t)m > n || memcmp(s + k, b, (size_t)m)) return false;
        k += (size_t)m;
    }
    return k == n;
}

int d11_json_find(const d11_json *j, int obj, const char *key)
{
    if (obj < 0 || obj >= j->ntok || j->tok[obj].type != D11_JT_OBJECT) return -1;
    size_t kn = strlen(key);
    int k = obj + 1;
    for (int i = 0; i < j->tok[obj].size; i++) {
        if (d11_json_str_eq(j, k, key, kn)) return k + 1;
        k = j->tok[k + 1].next;
    }
    return -1;
}

int d11_json_elem(const d11_json *j, int arr, int i)
{
    if (arr < 0 || arr >= j->ntok || j->tok[arr].type != D11_JT_ARRAY || i < 0 ||
        i >= j->tok[arr].size)
        return -1;
    int k = arr + 1;
    while (i-- > 0) k = j->tok[k].next;
    return k;
}

int d11_json_u64(const d11_json *j, int t, uint64_t min, uint64_t max, uint64_t *out)
{
    if (t < 0 || t >= j->ntok || j->tok[t].type == D11_JT_NULL) return D11_JSON_EMISSING;
    if (j->tok[t].type != D11_JT_NUMBER) return D11_JSON_ETYPE;
    const char *s = j->js + j->tok[t].start;
    size_t n = (size_t)(j->tok[t].end - j->tok[t].start);
    /* digits only: no '-', '.', exponent; no leading zeros */
    if (s[0] == '-') return D11_JSON_ERANGE;
    for (size_t i = 0; i < n; i++)
        if (!is_digit(s[i])) return D11_JSON_ETYPE; /* fraction or exponent */
    if (n > 1 && s[0] == '0') return D11_JSON_ERANGE;
    uint64_t v;
    if (d11_parse_u64(s, n, max, &v) < 0 || v < min) return D11_JSON_ERANGE;
    *out = v;
    return 0;
}

int d11_json_bool(const d11_json *j, int t, bool *out)
{
    if (t < 0 || t >= j->ntok || j->tok[t].type == D11_JT_NULL) return D11_JSON_EMISSING;
    if (j->tok[t].type == D11_JT_TRUE) *out = true;
    else if (j->tok[t].type == D11_JT_FALSE) *out = false;
    else return D11_JSON_ETYPE;
    return 0;
}

int d11_json_str(const d11_json *j, int t, char *out, size_t cap, size_t *n)
{
    if (t < 0 || t >= j->ntok || j->tok[t].type == D11_JT_NULL) return D11_JSON_EMISSING;
    if (j->tok[t].type != D11_JT_STRING) return D11_JSON_ETYPE;
    const char *p = j->js + j->tok[t].start, *e = j->js + j->tok[t].end;
    size_t k = 0;
    uint8_t b[4];
    while (p < e) {
        int m = unesc_next(&p, e, b);
        D11_ASSERT(m > 0);
        if (k + (size_t)m > cap) return D11_JSON_ERANGE;
        memcpy(out + k, b, (size_t)m);
        k += (size_t)m;
    }
    *n = k;
    return 0;
}
