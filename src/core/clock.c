/*
 * clock.c — the system clock behind d11_clock (see clock.h).
 */
#include "clock.h"
#include "util.h"

static int64_t sys_mono(void *data)
{
    (void)data;
    return d11_mono_ms();
}

static int64_t sys_wall(void *data)
{
    (void)data;
    return d11_wall_ms();
}

static const d11_clock system_clock = {sys_mono, sys_wall, NULL};

const d11_clock *d11_clock_system(void) { return &system_clock; }
