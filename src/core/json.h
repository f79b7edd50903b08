/*
 * json.h — strict JSON decoding for request bodies and rule documents.
 *
 * Tokenizing is done by jsmn (header-only, compiled once, static, in json.c with
 * JSMN_STRICT and JSMN_PARENT_LINKS). jsmn alone is lax — it accepts missing or extra
 * commas, bare words starting with t/f/n, several top-level values, raw control bytes in
 * strings — so d11_json_parse re-walks the token tree against the text and accepts only
 * RFC 8259 documents, with these rules on top:
 *
 *   - the top level is an object; nothing but whitespace may follow it;
 *   - at most D11_JSON_TOKENS_MAX tokens and D11_JSON_DEPTH_MAX levels of nesting;
 *   - strings are valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF), escapes are the
 *     RFC ones, \uXXXX surrogates come in proper high+low pairs;
 *   - no object has the same key twice (compared after unescaping);
 *   - numbers follow the JSON grammar except that leading zeros ("007") are tolerated as
 *     tokens: they are well-formed input with an invalid value, which the typed getters
 *     reject (422 rather than 400, see API.md and d11_json_u64).
 *
 * Any violation is D11_JSON_EBAD, which the gateway answers with 400 bad_json. The typed
 * getters then distinguish a missing field, a wrong type and a value out of range, which
 * the gateway answers with 422 invalid naming the field.
 *
 * A d11_json holds token positions into the caller's text; the text must outlive it.
 * No allocation. Not thread-safe per object (use one per thread).
 */
#ifndef D11_JSON_H
#define D11_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "limits.h"

enum {
    D11_JSON_EBAD     = -1, /* malformed document (400 bad_json) */
    D11_JSON_EMISSING = -2, /* field absent (422) */
    D11_JSON_ETYPE    = -3, /* wrong type, or a number that is not an exact integer (422) */
    D11_JSON_ERANGE   = -4, /* value out of the allowed range or too long (422) */
};

enum d11_json_type { D11_JT_OBJECT = 1, D11_JT_ARRAY, D11_JT_STRING, D11_JT_NUMBER,
                     D11_JT_TRUE, D11_JT_FALSE, D11_JT_NULL };

typedef struct d11_json_tok {
    uint8_t type;   /* enum d11_json_type */
    int     start;  /* strings: first byte after the opening quote */
    int     end;    /* one past the last byte (strings: the closing quote) */
    int     size;   /* objects: number of keys; arrays: number of elements */
    int     next;   /* index of the first token after this one's subtree */
} d11_json_tok;

typedef struct d11_json {
    const char  *js;
    size_t       len;
    int          ntok;
    d11_json_tok tok[D11_JSON_TOKENS_MAX];
    char         err[128]; /* why parsing failed (safe to show a client) */
} d11_json;

/* Parse and validate js[0..len). Returns 0 or D11_JSON_EBAD with j->err set. */
int d11_json_parse(d11_json *j, const char *js, size_t len);

/* Index of the value for key in object token obj, or -1 when absent. */
int d11_json_find(const d11_json *j, int obj, const char *key);

/* Token index of the i-th element of array tok arr (0-based; caller checks i < size). */
int d11_json_elem(const d11_json *j, int arr, int i);

/*
 * Exact non-negative integer in [min, max]. Accepts only a plain digit string without
 * leading zeros; a fraction, an exponent, a minus sign, leading zeros and any value out
 * of range are rejected. t < 0 gives D11_JSON_EMISSING, a non-number D11_JSON_ETYPE,
 * everything else invalid D11_JSON_ERANGE.
 */
int d11_json_u64(const d11_json *j, int t, uint64_t min, uint64_t max, uint64_t *out);

int d11_json_bool(const d11_json *j, int t, bool *out);

/*
 * Unescaped UTF-8 string value of token t into out[0..cap); *n = its length in bytes
 * (no terminator is written). D11_JSON_EMISSING, D11_JSON_ETYPE, or D11_JSON_ERANGE when
 * it does not fit cap.
 */
int d11_json_str(const d11_json *j, int t, char *out, size_t cap, size_t *n);

/* True when string token t equals s after unescaping. */
bool d11_json_str_eq(const d11_json *j, int t, const char *s, size_t n);

/* Validate UTF-8 in p[0..n) (RFC 3629: no overlongs, surrogates or > U+10FFFF). */
bool d11_utf8_valid(const char *p, size_t n);

#endif
