/*
 * test_fuzz_replay.c — replays the committed corpora of the HTTP and JSON libFuzzer
 * drivers (fuzz/corpus/http, fuzz/corpus/json) through the drivers themselves, so every
 * input a fuzzer once kept — including regression inputs of fixed bugs — is re-checked by
 * the normal test run (the wire and config corpora are replayed by test_wire/test_config).
 * A driver aborts on a broken property; a crash here names the file being replayed.
 * Run from the repository root (tests/run.sh does).
 */
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"

/* Each driver defines LLVMFuzzerTestOneInput; give each its own name. */
#define LLVMFuzzerTestOneInput fuzz_http_one
#include "../../fuzz/fuzz_http.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_json_one
#include "../../fuzz/fuzz_json.c"
#undef LLVMFuzzerTestOneInput

static char current[512];

static void on_crash(int sig)
{
    char msg[700];
    int n = snprintf(msg, sizeof msg, "\n*** signal %d while replaying %s\n", sig, current);
    if (n > 0) (void)!write(2, msg, (size_t)n);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Returns the number of files replayed, or -1 when the directory is missing. */
static int replay(const char *dir, int (*one)(const uint8_t *, size_t))
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(current, sizeof current, "%s/%s", dir, e->d_name);
        char *data;
        size_t len;
        if (d11_read_file(current, &data, &len) < 0) continue;
        one((const uint8_t *)data, len);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

int main(void)
{
    signal(SIGSEGV, on_crash);
    signal(SIGABRT, on_crash);
    int passed = 0, failed = 0;
    int nh = replay("fuzz/corpus/http", fuzz_http_one);
    int nj = replay("fuzz/corpus/json", fuzz_json_one);
    if (nh > 0) passed++;
    else {
        printf("FAIL fuzz/corpus/http: missing or empty (run from the repository root)\n");
        failed++;
    }
    if (nj > 0) passed++;
    else {
        printf("FAIL fuzz/corpus/json: missing or empty (run from the repository root)\n");
        failed++;
    }
    printf("replayed %d http and %d json corpus inputs\n", nh, nj);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
