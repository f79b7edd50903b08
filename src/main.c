/*
 * main.c — `d11`: one binary, subcommands. Dispatches to the part named by argv[1].
 */
#include <stdio.h>
#include <string.h>
#include "cmd.h"

#define D11_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} cmds[] = {
    {"up", d11_up_main, "run the whole platform on this machine (supervisor)"},
    {"gateway", d11_gateway_main, "run the HTTP gateway"},
    {"cell", d11_cell_main, "run one cell (orders for a slice of users)"},
    {"center", d11_center_main, "run the center (catalog, inventory ledger, routing)"},
    {"token", d11_token_main, "create API tokens"},
    {"ctl", d11_ctl_main, "operator CLI over the admin API"},
    {"bench", d11_bench_main, "full-link load generator"},
    {"bench-engine", d11_bench_engine_main, "one cell driven over the wire protocol (no HTTP)"},
    {"audit", d11_audit_main, "check the invariants against a stopped platform's data"},
    {"rehearse", d11_rehearse_main, "a Double-11 rehearsal against a running d11 (stress traffic, faults, report)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: d11 SUBCOMMAND [FLAGS]   (d11 SUBCOMMAND --help for its flags)\n\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-13s %s\n", cmds[i].name, cmds[i].what);
    fprintf(f, "\n  --version  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("d11 %s\n", D11_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name)) return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "d11: unknown subcommand '%s' (see d11 --help)\n", argv[1]);
    return 2;
}
