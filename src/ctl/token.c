/* ctl/token.c — placeholder entry point for `d11 token` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_token_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 token: not built yet\n");
    return 1;
}
