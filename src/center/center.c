/* center/center.c — placeholder entry point for `d11 center` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_center_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 center: not built yet\n");
    return 1;
}
