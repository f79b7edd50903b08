/*
 * test_fuzz_replay.c — replays the committed corpora of the HTTP and JSON libFuzzer
 * drivers (fuzz/corpus/http, fuzz/corpus/json) through the drivers themselves, so every
 * input a fuzzer once kept — including regression inputs of fixed bugs — is re-checked by
 * the normal test run (the wire and config corpora are replayed by test_wire/test_config).
 * A driver traps on a broken property; the crash message names the file being replayed.
 * Run from the repository root (tests/run.sh does).
 */
#include <stdint.h>
#include <stdio.h>

#include "check.h"
#include "replay.h"

/* Each driver defines LLVMFuzzerTestOneInput; give each its own name. */
#define LLVMFuzzerTestOneInput fuzz_http_one
#include "fuzz/fuzz_http.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_json_one
#include "fuzz/fuzz_json.c"
#undef LLVMFuzzerTestOneInput

int main(void)
{
    replay_corpus("fuzz/corpus/http", fuzz_http_one);
    replay_corpus("fuzz/corpus/json", fuzz_json_one);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
