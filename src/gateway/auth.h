/*
 * auth.h — API tokens: creation, the hashed token file, and request authentication.
 *
 * A token is "d11_" followed by 32 lowercase hex characters (128 random bits from
 * getrandom). Tokens are never stored: DATA/tokens holds one line per token,
 *
 *     <sha256 of the token, 64 hex> <scopes, comma-separated> <label> [exp=<unix seconds>]
 *
 * with scopes from: read, orders, products, stress, admin (admin implies all). Blank
 * lines and lines starting with '#' are ignored; a malformed line is skipped with a
 * warning (its content is not logged). The file is created with mode 0600 and appended
 * to with one write(2) per line, so concurrent `d11 token create` runs do not interleave.
 *
 * A d11_auth is one thread's read-only view of DATA/tokens: a hash table keyed by the
 * token digest. Each gateway thread owns one and calls d11_auth_maybe_reload from its
 * loop; the file is re-read when its mtime, size or inode changed, checked at most every
 * D11_AUTH_RELOAD_MS. A failed reload keeps the previous table (logged).
 *
 * Secrets: a presented token is hashed and looked up by digest; the raw token is never
 * logged, stored, or echoed in an error message.
 */
#ifndef D11_GW_AUTH_H
#define D11_GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "../core/limits.h"

enum {
    D11_SCOPE_READ     = 1 << 0,
    D11_SCOPE_ORDERS   = 1 << 1,
    D11_SCOPE_PRODUCTS = 1 << 2,
    D11_SCOPE_STRESS   = 1 << 3,
    D11_SCOPE_ADMIN    = 1 << 4,
    D11_SCOPE_EVENTS   = 1 << 5, /* GET /v1/events, /v1/consumers (docs/events.md) */
    D11_SCOPE_ALL      = (1 << 6) - 1,
};

#define D11_TOKEN_LEN 36 /* "d11_" + 32 hex */

typedef struct d11_auth_entry {
    uint8_t  digest[32];
    uint32_t scopes;
    bool     used;
    char     label[D11_TOKEN_LABEL_BYTES_MAX + 1]; /* request log, per-caller flow rules; NUL-terminated */
    int64_t  expires_s; /* unix seconds; 0 = never (optional "exp=N" field of the line) */
} d11_auth_entry;

typedef struct d11_auth {
    char      path[1100];
    size_t    ntokens;
    d11_auth_entry table[D11_TOKENS_MAX * 2]; /* open addressing, load <= 1/2 */
    int64_t   next_check_ms;
    bool      have_stat;
    struct timespec mtime;
    off_t     size;
    ino_t     ino;
} d11_auth;

/*
 * Parse "read,orders" into scope bits (admin expands to all). Returns 0, or -1 on an
 * unknown or empty scope name.
 */
int d11_scopes_parse(const char *s, size_t n, uint32_t *out);
/* Render scope bits as "read,orders,..." into out (cap >= 48). */
void d11_scopes_format(uint32_t scopes, char *out, size_t cap);

/* Make a new random token into out (D11_TOKEN_LEN + 1 bytes, NUL-terminated). */
void d11_token_generate(char out[D11_TOKEN_LEN + 1]);
/* SHA-256 of tok[0..n) as 64 lowercase hex + NUL. */
void d11_token_hash_hex(const char *tok, size_t n, char out[65]);

/*
 * Create a token with the given scopes and label (1..D11_TOKEN_LABEL_BYTES_MAX of
 * [A-Za-z0-9_.-]), append its hash line to DATA/tokens (created 0600 if missing) and
 * fsync it. The token is written to tok_out. Returns 0, -EINVAL for a bad label or
 * scopes, or -errno.
 */
int d11_token_create(const char *data_dir, uint32_t scopes, const char *label,
                     char tok_out[D11_TOKEN_LEN + 1]);
/* The same with an expiry (unix seconds, 0 = never): the line gets " exp=N" and gateways
 * answer 401 for the token from that second on. */
int d11_token_create_exp(const char *data_dir, uint32_t scopes, const char *label, int64_t expires_s,
                         char tok_out[D11_TOKEN_LEN + 1]);

/*
 * First start: when DATA/admin.token does not exist, create an admin token (all scopes,
 * label "admin"), append its hash to DATA/tokens, then write the token to
 * DATA/admin.token with mode 0600 (atomically). Returns 1 when created (path in
 * path_out), 0 when it already existed (path in path_out too), < 0 on error.
 */
int d11_auth_bootstrap(const char *data_dir, char *path_out, size_t n);

/* Start a thread's view of DATA/tokens and load it (a missing file means no tokens). */
void d11_auth_init(d11_auth *a, const char *data_dir);
/* Reload when the file changed; call often, it rate-limits itself. */
void d11_auth_maybe_reload(d11_auth *a, int64_t now_ms);
/* (Re)load now. Returns 0, or -errno / D11_ETOOBIG with the old table kept. */
int d11_auth_load(d11_auth *a);

/*
 * Authenticate an Authorization header value. Returns the token's scope bits (admin
 * expanded), or 0 when the header is missing, malformed or the token is unknown.
 */
uint32_t d11_auth_check(const d11_auth *a, const char *hdr, size_t n);
/* The same, and *label = the token's label (owned by a, valid until its next reload), or
 * "" when the token is unknown. */
uint32_t d11_auth_check_label(const d11_auth *a, const char *hdr, size_t n, const char **label);

/* Does a token with scopes `have` satisfy any of the scopes in `need_any`? */
static inline bool d11_scope_ok(uint32_t have, uint32_t need_any)
{
    return (have & D11_SCOPE_ADMIN) || (have & need_any);
}

#endif
