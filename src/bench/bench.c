/* bench/bench.c — placeholder entry point for `d11 bench` (being written). */
#include <stdio.h>
#include "../cmd.h"

int d11_bench_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "d11 bench: not built yet\n");
    return 1;
}
