/*
 * fuzz_config.c — libFuzzer driver for d11_config_parse_text (src/core/config.c), the
 * d11.conf parser.
 *
 * Each input is parsed as a whole config text on top of the defaults. Beyond "no crash,
 * no out-of-bounds access" (ASan/UBSan), the contract of config.h is checked and trapped
 * on violation:
 *   - the result is 0 or -1; on -1 the reason is a NUL-terminated "line N: ..." string;
 *   - on 0 every setting is inside its documented range (a bad value is never accepted);
 *   - parsing is deterministic and does not depend on bytes past `len` (the input is
 *     parsed again from a copy followed by garbage, with the same outcome);
 *   - every accepted setting round-trips: d11_config_value writes text that
 *     d11_config_set accepts and that reads back the same (`d11 up` forwards settings to
 *     its children this way).
 *
 * Build and run (seed corpus in fuzz/corpus/config/):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc fuzz/fuzz_config.c \
 *       src/core/config.c src/core/util.c -o /tmp/fuzz_config
 *   /tmp/fuzz_config -max_total_time=60 fuzz/corpus/config
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/limits.h"
#include "core/util.h"

#define REQUIRE(c)                                                                         \
    do {                                                                                   \
        if (!(c)) __builtin_trap();                                                        \
    } while (0)

static void check_ranges(const d11_config *c)
{
    REQUIRE(c->data_dir[0] != 0 && memchr(c->data_dir, 0, sizeof c->data_dir));
    REQUIRE(memchr(c->listen, 0, sizeof c->listen) && strrchr(c->listen, ':'));
    REQUIRE(c->cells >= 1 && c->cells <= D11_CELLS_MAX);
    REQUIRE(c->threads >= 1 && c->threads <= 64);
    REQUIRE(c->cell_id >= -1 && c->cell_id < D11_CELLS_MAX);
    REQUIRE(c->durability == D11_DUR_SYNC || c->durability == D11_DUR_ASYNC || c->durability == D11_DUR_NONE);
    REQUIRE(c->async_flush_ms >= 1 && c->async_flush_ms <= 10000);
    REQUIRE(c->order_ttl_ms >= 100 && c->order_ttl_ms <= 30LL * 24 * 3600 * 1000);
    REQUIRE(c->request_timeout_ms >= 10 && c->request_timeout_ms <= 600000);
    REQUIRE(c->grant_chunk_max >= 1 && c->grant_chunk_max <= D11_STOCK_MAX);
    REQUIRE(c->soldout_cache_ms >= 0 && c->soldout_cache_ms <= 60000);
    REQUIRE(c->log_level >= D11_LOG_DEBUG && c->log_level <= D11_LOG_ERROR);
    REQUIRE(!c->help);
}

static void check_roundtrip(const d11_config *c)
{
    d11_config back;
    d11_config_defaults(&back);
    char v1[1100], v2[1100], err[300];
    for (size_t i = 0; d11_config_key(i); i++) {
        const char *key = d11_config_key(i);
        if (!strcmp(key, "id") && c->cell_id < 0) continue; /* unset: nothing to forward */
        REQUIRE(d11_config_value(c, key, v1, sizeof v1) == 0);
        REQUIRE(d11_config_set(&back, key, v1, err, sizeof err) == 0);
        REQUIRE(d11_config_value(&back, key, v2, sizeof v2) == 0);
        REQUIRE(strcmp(v1, v2) == 0);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static d11_config base;
    static bool init;
    if (!init) {
        d11_config_defaults(&base);
        init = true;
    }
    d11_config c = base;
    char err[300];
    memset(err, 'X', sizeof err);
    int rc = d11_config_parse_text(&c, (const char *)data, size, err, sizeof err);
    REQUIRE(rc == 0 || rc == -1);
    if (rc == 0) {
        check_ranges(&c);
        check_roundtrip(&c);
    } else {
        REQUIRE(memchr(err, 0, sizeof err) != NULL);
        REQUIRE(strncmp(err, "line ", 5) == 0);
    }
    /* same text followed by garbage that is not part of it: same outcome */
    char *copy = malloc(size + 16);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    memcpy(copy + size, "\ncells = 0\n\0\0\0\0\0", 16);
    d11_config c2 = base;
    char err2[300];
    int rc2 = d11_config_parse_text(&c2, copy, size, err2, sizeof err2);
    free(copy);
    REQUIRE(rc2 == rc);
    if (rc == 0) REQUIRE(memcmp(&c, &c2, sizeof c) == 0);
    else REQUIRE(strcmp(err, err2) == 0);
    return 0;
}
