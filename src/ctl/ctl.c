/* ctl/ctl.c — placeholder entry point for `d11 ctl` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_ctl_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 ctl: not built yet\n");
    return 1;
}
