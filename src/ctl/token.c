/*
 * token.c — `d11 token create --data DIR --scopes LIST [--label NAME]`: make an API token.
 *
 * Appends the token's SHA-256 line to DATA/tokens (see src/gateway/auth.h; running
 * gateways pick it up within D11_AUTH_RELOAD_MS) and prints the token once on stdout. The
 * token is not stored anywhere else and cannot be shown again.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../cmd.h"
#include "../core/util.h"
#include "../gateway/auth.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: d11 token create [--data DIR] --scopes LIST [--label NAME]\n"
            "\n"
            "Create an API token, append its hash to DIR/tokens and print the token once on\n"
            "stdout (it is not stored; keep it). Running gateways accept it within a second.\n"
            "\n"
            "  --data DIR      data directory; default ./data\n"
            "  --scopes LIST   comma-separated: read, orders, products, stress, admin\n"
            "                  (admin implies all)\n"
            "  --label NAME    1-64 of [A-Za-z0-9_.-]; default \"token\"\n"
            "  --help          this text\n");
}

int d11_token_main(int argc, char **argv)
{
    const char *data = "./data", *scopes = NULL, *label = "token";
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "create") != 0) {
        fprintf(stderr, "d11 token: expected the action 'create'\n");
        usage(stderr);
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], **dst = NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        size_t kl = 0;
        if (!strncmp(a, "--data", 6)) { dst = &data; kl = 6; }
        else if (!strncmp(a, "--scopes", 8)) { dst = &scopes; kl = 8; }
        else if (!strncmp(a, "--label", 7)) { dst = &label; kl = 7; }
        if (dst && a[kl] == '=') {
            *dst = a + kl + 1;
        } else if (dst && a[kl] == 0 && i + 1 < argc) {
            *dst = argv[++i];
        } else {
            fprintf(stderr, "d11 token: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    uint32_t bits;
    if (!scopes) {
        fprintf(stderr, "d11 token: --scopes is required\n");
        usage(stderr);
        return 2;
    }
    if (d11_scopes_parse(scopes, strlen(scopes), &bits) < 0) {
        fprintf(stderr, "d11 token: --scopes: expected a comma-separated list of read, orders, "
                        "products, stress, admin\n");
        return 2;
    }
    size_t ln = strlen(label);
    bool label_ok = ln >= 1 && ln <= D11_TOKEN_LABEL_BYTES_MAX;
    for (size_t i = 0; label_ok && i < ln; i++) {
        char c = label[i];
        label_ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '_' || c == '.' || c == '-';
    }
    if (!label_ok) {
        fprintf(stderr, "d11 token: --label: 1-64 characters of [A-Za-z0-9_.-]\n");
        return 2;
    }
    struct stat st;
    if (stat(data, &st) == -1 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "d11 token: data directory %s does not exist\n", data);
        return 1;
    }
    char tok[D11_TOKEN_LEN + 1];
    int rc = d11_token_create(data, bits, label, tok);
    if (rc < 0) {
        fprintf(stderr, "d11 token: cannot write %s/tokens: %s\n", data, d11_strerror(rc));
        return 1;
    }
    printf("%s\n", tok);
    fflush(stdout);
    explicit_bzero(tok, sizeof tok);
    return 0;
}
