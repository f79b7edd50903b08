/*
 * auth.c — token creation, DATA/tokens parsing and lookup (see auth.h).
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../core/util.h"

static const struct {
    const char *name;
    uint32_t    bit;
} scope_names[] = {
    {"read", D11_SCOPE_READ},       {"orders", D11_SCOPE_ORDERS}, {"products", D11_SCOPE_PRODUCTS},
    {"stress", D11_SCOPE_STRESS},   {"admin", D11_SCOPE_ADMIN},
    {"events", D11_SCOPE_EVENTS},
};

int d11_scopes_parse(const char *s, size_t n, uint32_t *out)
{
    uint32_t bits = 0;
    size_t i = 0;
    if (n == 0) return -1;
    while (i <= n) {
        size_t j = i;
        while (j < n && s[j] != ',') j++;
        if (j == i) return -1;
        bool found = false;
        for (size_t k = 0; k < sizeof scope_names / sizeof scope_names[0]; k++)
            if (strlen(scope_names[k].name) == j - i && !memcmp(scope_names[k].name, s + i, j - i)) {
                bits |= scope_names[k].bit;
                found = true;
            }
        if (!found) return -1;
        i = j + 1;
    }
    if (bits & D11_SCOPE_ADMIN) bits = D11_SCOPE_ALL;
    *out = bits;
    return 0;
}

void d11_scopes_format(uint32_t scopes, char *out, size_t cap)
{
    size_t len = 0;
    out[0] = 0;
    for (size_t k = 0; k < sizeof scope_names / sizeof scope_names[0]; k++)
        if (scopes & scope_names[k].bit) {
            int w = snprintf(out + len, cap - len, "%s%s", len ? "," : "", scope_names[k].name);
            if (w < 0 || (size_t)w >= cap - len) break;
            len += (size_t)w;
        }
}

void d11_token_generate(char out[D11_TOKEN_LEN + 1])
{
    uint8_t r[16];
    d11_random_bytes(r, sizeof r);
    memcpy(out, "d11_", 4);
    d11_hex(r, sizeof r, out + 4);
    D11_ASSERT(strlen(out) == D11_TOKEN_LEN);
}

void d11_token_hash_hex(const char *tok, size_t n, char out[65])
{
    uint8_t md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, n, md);
    d11_hex(md, sizeof md, out);
}

static bool label_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > D11_TOKEN_LABEL_BYTES_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static int tokens_path(const char *data_dir, const char *name, char *out, size_t cap)
{
    int w = snprintf(out, cap, "%s/%s", data_dir, name);
    return (w < 0 || (size_t)w >= cap) ? -ENAMETOOLONG : 0;
}

int d11_token_create(const char *data_dir, uint32_t scopes, const char *label,
                     char tok_out[D11_TOKEN_LEN + 1])
{
    return d11_token_create_exp(data_dir, scopes, label, 0, tok_out);
}

int d11_token_create_exp(const char *data_dir, uint32_t scopes, const char *label, int64_t expires_s,
                         char tok_out[D11_TOKEN_LEN + 1])
{
    if (expires_s < 0) return -EINVAL;
    if (!label_ok(label) || scopes == 0 || (scopes & ~(uint32_t)D11_SCOPE_ALL)) return -EINVAL;
    char path[1100];
    int rc = tokens_path(data_dir, "tokens", path, sizeof path);
    if (rc) return rc;
    char tok[D11_TOKEN_LEN + 1], hex[65], sc[64], line[256];
    d11_token_generate(tok);
    d11_token_hash_hex(tok, D11_TOKEN_LEN, hex);
    d11_scopes_format(scopes, sc, sizeof sc);
    int n = expires_s ? snprintf(line, sizeof line, "%s %s %s exp=%lld\n", hex, sc, label, (long long)expires_s)
                      : snprintf(line, sizeof line, "%s %s %s\n", hex, sc, label);
    D11_ASSERT(n > 0 && (size_t)n < sizeof line);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd == -1) return -errno;
    rc = d11_write_all(fd, line, (size_t)n); /* one write: O_APPEND keeps lines whole */
    if (rc == 0 && fsync(fd) == -1) rc = -errno;
    if (close(fd) == -1 && rc == 0) rc = -errno;
    if (rc) return rc;
    memcpy(tok_out, tok, sizeof tok);
    explicit_bzero(tok, sizeof tok);
    return 0;
}

int d11_auth_bootstrap(const char *data_dir, char *path_out, size_t n)
{
    char path[1100];
    int rc = tokens_path(data_dir, "admin.token", path, sizeof path);
    if (rc) return rc;
    if ((size_t)snprintf(path_out, n, "%s", path) >= n) return -ENAMETOOLONG;
    struct stat st;
    if (stat(path, &st) == 0) return 0;
    if (errno != ENOENT) return -errno;
    if (mkdir(data_dir, 0700) == -1 && errno != EEXIST) return -errno;
    /* Hash line first: a crash in between leaves an unused hash, never a dead token. */
    char tok[D11_TOKEN_LEN + 1];
    rc = d11_token_create(data_dir, D11_SCOPE_ALL, "admin", tok);
    if (rc) return rc;
    char content[D11_TOKEN_LEN + 2];
    snprintf(content, sizeof content, "%s\n", tok);
    rc = d11_write_file_atomic(path, content, D11_TOKEN_LEN + 1, 0600);
    explicit_bzero(tok, sizeof tok);
    explicit_bzero(content, sizeof content);
    return rc ? rc : 1;
}

/* ---- the per-thread table ---- */

static size_t slot_of(const uint8_t d[32])
{
    uint64_t h;
    memcpy(&h, d, sizeof h);
    return (size_t)(h % (D11_TOKENS_MAX * 2));
}

static int hexbyte(const char *s)
{
    int v = 0;
    for (int i = 0; i < 2; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Parse the whole file into a fresh table; returns the number of tokens or < 0. */
static int parse_file(const char *text, size_t len, d11_auth_entry *table, size_t *skipped)
{
    int ntok = 0;
    size_t pos = 0, lineno = 0;
    *skipped = 0;
    memset(table, 0, sizeof(d11_auth_entry) * D11_TOKENS_MAX * 2);
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n') end++;
        const char *l = text + pos;
        size_t ln = end - pos;
        pos = end + 1;
        lineno++;
        if (ln && l[ln - 1] == '\r') ln--;
        if (ln == 0 || l[0] == '#') continue;
        /* <64 hex> SP <scopes> SP <label> */
        uint8_t d[32];
        bool ok = ln > 66 && l[64] == ' ';
        for (int i = 0; ok && i < 32; i++) {
            int b = hexbyte(l + 2 * i);
            if (b < 0) ok = false;
            else d[i] = (uint8_t)b;
        }
        uint32_t scopes = 0;
        if (ok) {
            const char *sc = l + 65;
            const char *sp = memchr(sc, ' ', ln - 65);
            size_t scn = sp ? (size_t)(sp - sc) : ln - 65;
            if (d11_scopes_parse(sc, scn, &scopes) < 0) ok = false;
        }
        if (!ok) {
            (*skipped)++;
            d11_warn("tokens file: line %zu malformed, skipped", lineno);
            continue;
        }
        if (ntok >= D11_TOKENS_MAX) return D11_ETOOBIG;
        size_t s = slot_of(d);
        while (table[s].used && memcmp(table[s].digest, d, 32) != 0) s = (s + 1) % (D11_TOKENS_MAX * 2);
        if (!table[s].used) ntok++;
        table[s].used = true;
        memcpy(table[s].digest, d, 32);
        table[s].scopes = scopes;
        const char *lb = memchr(l + 65, ' ', ln - 65);
        size_t lbn = lb ? ln - (size_t)(lb + 1 - l) : 0;
        table[s].expires_s = 0;
        const char *lsp = lb ? memchr(lb + 1, ' ', lbn) : NULL;
        if (lsp) { /* "<label> exp=<unix seconds>" */
            size_t rest = ln - (size_t)(lsp + 1 - l);
            uint64_t ex;
            if (rest > 4 && !memcmp(lsp + 1, "exp=", 4) && d11_parse_u64(lsp + 5, rest - 4, INT64_MAX, &ex) == 0)
                table[s].expires_s = (int64_t)ex;
            else
                table[s].expires_s = 1; /* an unreadable expiry: treat the token as expired */
            lbn = (size_t)(lsp - lb - 1);
        }
        if (lbn > D11_TOKEN_LABEL_BYTES_MAX) lbn = D11_TOKEN_LABEL_BYTES_MAX;
        for (size_t i = 0; i < lbn; i++) { /* labels are [A-Za-z0-9_.-]; anything else is masked */
            char ch = lb[1 + i];
            bool okc = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                       ch == '_' || ch == '.' || ch == '-';
            table[s].label[i] = okc ? ch : '_';
        }
        table[s].label[lbn] = 0;
    }
    return ntok;
}

int d11_auth_load(d11_auth *a)
{
    struct stat st;
    if (stat(a->path, &st) == -1) {
        int e = errno;
        if (e == ENOENT) { /* no file: no tokens */
            memset(a->table, 0, sizeof a->table);
            a->ntokens = 0;
            a->have_stat = false;
            return 0;
        }
        return -e;
    }
    if (st.st_size > D11_TOKENS_FILE_BYTES_MAX) return D11_ETOOBIG;
    char *text;
    size_t len;
    int rc = d11_read_file(a->path, &text, &len);
    if (rc) return rc;
    d11_auth_entry *fresh = malloc(sizeof a->table);
    if (!fresh) {
        free(text);
        return -ENOMEM;
    }
    size_t skipped;
    int n = parse_file(text, len, fresh, &skipped);
    explicit_bzero(text, len);
    free(text);
    if (n < 0) {
        free(fresh);
        return n;
    }
    memcpy(a->table, fresh, sizeof a->table);
    free(fresh);
    a->ntokens = (size_t)n;
    a->have_stat = true;
    a->mtime = st.st_mtim;
    a->size = st.st_size;
    a->ino = st.st_ino;
    return 0;
}

void d11_auth_init(d11_auth *a, const char *data_dir)
{
    memset(a, 0, sizeof *a);
    if (tokens_path(data_dir, "tokens", a->path, sizeof a->path))
        d11_fatal("data directory path too long");
    int rc = d11_auth_load(a);
    if (rc) d11_error("cannot load tokens file: %s", d11_strerror(rc));
}

void d11_auth_maybe_reload(d11_auth *a, int64_t now_ms)
{
    if (now_ms < a->next_check_ms) return;
    a->next_check_ms = now_ms + D11_AUTH_RELOAD_MS;
    struct stat st;
    bool exists = stat(a->path, &st) == 0;
    if (!exists && !a->have_stat) return;
    if (exists && a->have_stat && st.st_mtim.tv_sec == a->mtime.tv_sec &&
        st.st_mtim.tv_nsec == a->mtime.tv_nsec && st.st_size == a->size && st.st_ino == a->ino)
        return;
    int rc = d11_auth_load(a);
    if (rc) d11_error("cannot reload tokens file (keeping the previous tokens): %s", d11_strerror(rc));
    else d11_log(D11_LOG_DEBUG, "tokens reloaded: %zu tokens", a->ntokens);
}

uint32_t d11_auth_check(const d11_auth *a, const char *hdr, size_t n)
{
    const char *label;
    return d11_auth_check_label(a, hdr, n, &label);
}

uint32_t d11_auth_check_label(const d11_auth *a, const char *hdr, size_t n, const char **label)
{
    *label = "";
    if (n < 8 || !(hdr[0] == 'B' || hdr[0] == 'b') || strncasecmp(hdr, "Bearer ", 7) != 0) return 0;
    const char *tok = hdr + 7;
    size_t tn = n - 7;
    while (tn && *tok == ' ') { tok++; tn--; }
    if (tn == 0 || tn > D11_TOKEN_BYTES_MAX) return 0;
    uint8_t d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)tok, tn, d);
    size_t s = slot_of(d);
    for (size_t probes = 0; probes < D11_TOKENS_MAX * 2 && a->table[s].used; probes++) {
        if (CRYPTO_memcmp(a->table[s].digest, d, 32) == 0) {
            if (a->table[s].expires_s && d11_wall_ms() / 1000 >= a->table[s].expires_s) return 0; /* expired */
            *label = a->table[s].label;
            return a->table[s].scopes;
        }
        s = (s + 1) % (D11_TOKENS_MAX * 2);
    }
    return 0;
}
