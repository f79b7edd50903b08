/* up/up.c — placeholder entry point for `d11 up` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_up_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 up: not built yet\n");
    return 1;
}
