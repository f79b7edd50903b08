/*
 * replay.h — replay a committed fuzz corpus through its libFuzzer driver inside a unit
 * test, so every input a fuzzer once kept (regression cases included) is re-checked by
 * the normal test run. Include after check.h. Used by test_wire, test_config and
 * test_fuzz_replay.
 */
#ifndef D11_TEST_REPLAY_H
#define D11_TEST_REPLAY_H

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

static const char *volatile replay_current;

static void replay_crash(int sig)
{
    const char *f = replay_current;
    static const char m1[] = "\n*** crashed while replaying fuzz corpus file ";
    (void)!write(1, m1, sizeof m1 - 1);
    if (f) (void)!write(1, f, strlen(f));
    (void)!write(1, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Feed every file of DIR to `one` (a libFuzzer driver's LLVMFuzzerTestOneInput). Run from
 * the repository root (as tests/run.sh does). A violated property traps; the handler names
 * the file first. At least 5 files must be replayed. */
static void replay_corpus(const char *dir, int (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    CHECKF(d != NULL, "%s not found: run from the repository root", dir);
    if (!d) return;
    void (*old_ill)(int) = signal(SIGILL, replay_crash);
    void (*old_abrt)(int) = signal(SIGABRT, replay_crash);
    void (*old_segv)(int) = signal(SIGSEGV, replay_crash);
    int n = 0;
    struct dirent *e;
    static char path[1024];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *data;
        size_t len;
        if (d11_read_file(path, &data, &len) < 0) continue;
        replay_current = path;
        one((const uint8_t *)data, len);
        replay_current = NULL;
        free(data);
        n++;
    }
    closedir(d);
    signal(SIGILL, old_ill);
    signal(SIGABRT, old_abrt);
    signal(SIGSEGV, old_segv);
    CHECKF(n >= 5, "only %d files replayed from %s", n, dir);
}

#endif
