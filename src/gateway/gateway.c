/* gateway/gateway.c — placeholder entry point for `d11 gateway` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_gateway_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 gateway: not built yet\n");
    return 1;
}
