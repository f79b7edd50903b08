/* cell/cell.c — placeholder entry point for `d11 cell` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_cell_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 cell: not built yet\n");
    return 1;
}
