/*
 * test_config.c — unit test of src/core/config.{h,c}.
 *
 * Covers: the documented defaults; d11_config_set for every key at both ends of its
 * range, one past each end, and a list of garbage values (empty, signs, spaces, hex,
 * exponent, overflow), with the rule that a refused value leaves the config unchanged
 * and produces a one-line reason; '-' and '_' alike in keys; unknown and over-long keys;
 * d11_config_parse_text (comments, blank lines, tabs, CRLF, no final newline, later wins,
 * missing '=', empty value, the 1023/1024-byte line limit, NUL bytes, `len` honoured
 * without a terminator, "line N:" in errors); d11_config_from_args (`--key=value`,
 * `--key value`, --help / -h, missing value, stray arguments, DATA/d11.conf loaded before
 * the flags and overridden by them, an error inside d11.conf names the file);
 * flags per subcommand (argv[0]): each subcommand accepts exactly the flags it reads and
 * refuses the others with a one-line reason, an unknown flag is "unknown flag" even
 * without a value, d11.conf keys stay shared by all; d11_config_value round-trips every
 * key; d11_config_usage lists exactly the accepted flags; d11_config_path. Also
 * core/datadir (the data-directory lock every config caller takes at start): a second
 * lock is refused naming the holder's pid, unlock releases and empties the file, the
 * directory is created, bad names are refused, the fd is close-on-exec.
 *
 * Every file of fuzz/corpus/config/ is first replayed through the libFuzzer driver
 * fuzz/fuzz_config.c (included here; its checks trap on a violation), from the repository
 * root. The test then chdir()s into a fresh temporary directory so that a
 * ./data/d11.conf in the repository cannot leak into the from_args cases.
 *
 * Output: one line per failed check, then "N passed, N failed"; exit 1 on any failure.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/datadir.h"
#include "core/limits.h"
#include "core/util.h"

/* The libFuzzer driver, to replay its corpus with its checks (see replay_corpus). */
#include "fuzz/fuzz_config.c"

#include "check.h"
#include "replay.h"

static bool cfg_same(const d11_config *a, const d11_config *b) { return memcmp(a, b, sizeof *a) == 0; }

/* An error message must be one non-empty line. */
static bool one_line(const char *e) { return e[0] && !strchr(e, '\n'); }

/* Read an integer setting back by key. */
static long long get_int(const d11_config *c, const char *key)
{
    if (!strcmp(key, "cells")) return c->cells;
    if (!strcmp(key, "threads")) return c->threads;
    if (!strcmp(key, "id")) return c->cell_id;
    if (!strcmp(key, "async-flush-ms")) return c->async_flush_ms;
    if (!strcmp(key, "order-ttl-ms")) return c->order_ttl_ms;
    if (!strcmp(key, "request-timeout-ms")) return c->request_timeout_ms;
    if (!strcmp(key, "grant-chunk-max")) return c->grant_chunk_max;
    if (!strcmp(key, "soldout-cache-ms")) return c->soldout_cache_ms;
    if (!strcmp(key, "events-retention-ms")) return c->events_retention_ms;
    return -999;
}

static void test_defaults(void)
{
    d11_config c;
    memset(&c, 0x5a, sizeof c);
    d11_config_defaults(&c);
    CHECK_STREQ(c.data_dir, "./data");
    CHECK_STREQ(c.listen, "127.0.0.1:8080");
    CHECK(c.cells >= 2 && c.cells <= D11_CELLS_MAX);
    CHECK(c.threads >= 1 && c.threads <= 64);
    CHECK_EQ(c.cell_id, -1);
    CHECK_EQ(c.durability, D11_DUR_SYNC);
    CHECK_EQ(c.async_flush_ms, 10);
    CHECK_EQ(c.order_ttl_ms, 900000);
    CHECK_EQ(c.request_timeout_ms, 3000);
    CHECK_EQ(c.grant_chunk_max, 1000);
    CHECK_EQ(c.soldout_cache_ms, 100);
    CHECK_EQ(c.log_level, D11_LOG_INFO);
    CHECK(!c.help);
    CHECK_STREQ(d11_durability_name(D11_DUR_SYNC), "sync");
    CHECK_STREQ(d11_durability_name(D11_DUR_ASYNC), "async");
    CHECK_STREQ(d11_durability_name(D11_DUR_NONE), "none");
}

static void test_set_ints(void)
{
    static const struct {
        const char *key;
        long long lo, hi;
    } k[] = {
        {"cells", 1, D11_CELLS_MAX},
        {"threads", 1, 64},
        {"id", 0, D11_CELLS_MAX - 1},
        {"async-flush-ms", 1, 10000},
        {"order-ttl-ms", 100, 30LL * 24 * 3600 * 1000},
        {"request-timeout-ms", 10, 600000},
        {"grant-chunk-max", 1, D11_STOCK_MAX},
        {"soldout-cache-ms", 0, 60000},
        {"events-retention-ms", 0, 365LL * 24 * 3600 * 1000},
    };
    static const char *const garbage[] = {
        "", "abc", "-1", "+1", " 1", "1 ", "1.5", "0x10", "1e3", "1_000", "12a", "99999999999999999999999",
        "18446744073709551616", "\xef\xbc\x91" /* fullwidth 1 */, "1\n", "--1",
    };
    char err[256], val[64];
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        d11_config c, before;
        d11_config_defaults(&c);
        long long ends[2] = {k[i].lo, k[i].hi};
        for (int e = 0; e < 2; e++) {
            snprintf(val, sizeof val, "%lld", ends[e]);
            err[0] = 0;
            int rc = d11_config_set(&c, k[i].key, val, err, sizeof err);
            CHECKF(rc == 0, "%s = %s refused: %s", k[i].key, val, err);
            CHECKF(get_int(&c, k[i].key) == ends[e], "%s = %s read back %lld", k[i].key, val, get_int(&c, k[i].key));
        }
        /* a middle value, then one past each end must be refused and change nothing */
        snprintf(val, sizeof val, "%lld", k[i].lo + (k[i].hi - k[i].lo) / 2);
        CHECK_EQ(d11_config_set(&c, k[i].key, val, err, sizeof err), 0);
        before = c;
        long long out[2] = {k[i].lo - 1, k[i].hi + 1};
        for (int e = 0; e < 2; e++) {
            if (out[e] < 0) snprintf(val, sizeof val, "-1");
            else snprintf(val, sizeof val, "%lld", out[e]);
            err[0] = 0;
            int rc = d11_config_set(&c, k[i].key, val, err, sizeof err);
            CHECKF(rc == -1, "%s = %s accepted", k[i].key, val);
            CHECKF(cfg_same(&c, &before), "%s = %s changed the config", k[i].key, val);
            CHECKF(one_line(err) && strstr(err, k[i].key), "%s = %s: error '%s'", k[i].key, val, err);
        }
        for (size_t g = 0; g < sizeof garbage / sizeof garbage[0]; g++) {
            err[0] = 0;
            int rc = d11_config_set(&c, k[i].key, garbage[g], err, sizeof err);
            CHECKF(rc == -1, "%s = '%s' accepted", k[i].key, garbage[g]);
            CHECKF(cfg_same(&c, &before), "%s = '%s' changed the config", k[i].key, garbage[g]);
            CHECKF(err[0] != 0, "%s = '%s': no reason given", k[i].key, garbage[g]);
        }
        /* leading zeros are plain decimal */
        snprintf(val, sizeof val, "000%lld", k[i].hi);
        CHECK_EQ(d11_config_set(&c, k[i].key, val, err, sizeof err), 0);
        CHECK_EQ(get_int(&c, k[i].key), k[i].hi);
    }
}

static void test_set_words(void)
{
    d11_config c, before;
    char err[256];
    d11_config_defaults(&c);
    static const struct {
        const char *v;
        int d;
    } dur[] = {{"async", D11_DUR_ASYNC}, {"none", D11_DUR_NONE}, {"sync", D11_DUR_SYNC}};
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(d11_config_set(&c, "durability", dur[i].v, err, sizeof err), 0);
        CHECK_EQ(c.durability, dur[i].d);
    }
    static const struct {
        const char *v;
        int l;
    } lv[] = {{"debug", D11_LOG_DEBUG}, {"warn", D11_LOG_WARN}, {"error", D11_LOG_ERROR}, {"info", D11_LOG_INFO}};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(d11_config_set(&c, "log-level", lv[i].v, err, sizeof err), 0);
        CHECK_EQ(c.log_level, lv[i].l);
    }
    before = c;
    static const char *const bad_words[] = {"", "SYNC", "Sync", "sync ", " sync", "syncx", "fsync", "0", "1"};
    for (size_t i = 0; i < sizeof bad_words / sizeof bad_words[0]; i++) {
        err[0] = 0;
        CHECKF(d11_config_set(&c, "durability", bad_words[i], err, sizeof err) == -1, "durability '%s'", bad_words[i]);
        CHECK(one_line(err));
        CHECK(cfg_same(&c, &before));
    }
    static const char *const bad_levels[] = {"", "INFO", "trace", "warning", "2", "info\n"};
    for (size_t i = 0; i < sizeof bad_levels / sizeof bad_levels[0]; i++) {
        err[0] = 0;
        CHECKF(d11_config_set(&c, "log-level", bad_levels[i], err, sizeof err) == -1, "log-level '%s'", bad_levels[i]);
        /* (the reason quotes the value verbatim, so a value with a newline gives two lines) */
        if (!strchr(bad_levels[i], '\n')) CHECK(one_line(err));
        CHECK(cfg_same(&c, &before));
    }

    /* data: non-empty, shorter than sizeof data_dir - 64 */
    char path[1100];
    memset(path, 'd', sizeof path);
    path[sizeof c.data_dir - 64 - 1] = 0; /* longest accepted */
    CHECK_EQ(d11_config_set(&c, "data", path, err, sizeof err), 0);
    CHECK_STREQ(c.data_dir, path);
    CHECK_EQ(d11_config_set(&c, "data", "/tmp/x y", err, sizeof err), 0);
    CHECK_STREQ(c.data_dir, "/tmp/x y");
    before = c;
    path[sizeof c.data_dir - 64 - 1] = 'd';
    path[sizeof c.data_dir - 64] = 0; /* one too long */
    CHECK_EQ(d11_config_set(&c, "data", path, err, sizeof err), -1);
    CHECK(one_line(err));
    CHECK_EQ(d11_config_set(&c, "data", "", err, sizeof err), -1);
    CHECK(cfg_same(&c, &before));

    /* listen: HOST:PORT with a port 0..65535 */
    static const struct {
        const char *v;
        int ok;
    } ls[] = {
        {"127.0.0.1:8080", 1}, {"0.0.0.0:0", 1}, {"localhost:65535", 1}, {":9000", 1},
        {"127.0.0.1", 0}, {"127.0.0.1:", 0}, {"127.0.0.1:65536", 0}, {"127.0.0.1:-1", 0},
        {"127.0.0.1:80x", 0}, {"127.0.0.1: 80", 0}, {"", 0}, {":", 0},
    };
    for (size_t i = 0; i < sizeof ls / sizeof ls[0]; i++) {
        before = c;
        err[0] = 0;
        int rc = d11_config_set(&c, "listen", ls[i].v, err, sizeof err);
        CHECKF(rc == (ls[i].ok ? 0 : -1), "listen '%s' -> %d (%s)", ls[i].v, rc, err);
        if (ls[i].ok) CHECK_STREQ(c.listen, ls[i].v);
        else CHECK(cfg_same(&c, &before) && one_line(err));
    }
    char longl[300];
    memset(longl, 'h', sizeof longl);
    memcpy(longl + 290, ":80", 4); /* 293 bytes: longer than listen[256] */
    before = c;
    CHECK_EQ(d11_config_set(&c, "listen", longl, err, sizeof err), -1);
    CHECK(cfg_same(&c, &before));
}

static void test_set_keys(void)
{
    d11_config c, before;
    char err[256];
    d11_config_defaults(&c);
    /* '-' and '_' alike, anywhere */
    CHECK_EQ(d11_config_set(&c, "order_ttl_ms", "1000", err, sizeof err), 0);
    CHECK_EQ(c.order_ttl_ms, 1000);
    CHECK_EQ(d11_config_set(&c, "order-ttl_ms", "2000", err, sizeof err), 0);
    CHECK_EQ(c.order_ttl_ms, 2000);
    CHECK_EQ(d11_config_set(&c, "log_level", "warn", err, sizeof err), 0);
    CHECK_EQ(c.log_level, D11_LOG_WARN);
    before = c;
    static const char *const unknown[] = {"", "Cells", "CELLS", "cell", "cellsx", "order ttl ms", "-cells",
                                          "--cells", "help", "data ", " data", "order-ttl-ms\n"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        err[0] = 0;
        CHECKF(d11_config_set(&c, unknown[i], "1", err, sizeof err) == -1, "key '%s' accepted", unknown[i]);
        CHECKF(strstr(err, "unknown") != NULL, "key '%s': error '%s'", unknown[i], err);
        CHECK(cfg_same(&c, &before));
    }
    /* keys of 63, 64 and 500 bytes: refused without overflowing anything */
    char key[501];
    for (size_t n = 63; n <= 500; n += (n == 63 ? 1 : 436)) {
        memset(key, 'k', n);
        key[n] = 0;
        err[0] = 0;
        CHECKF(d11_config_set(&c, key, "1", err, sizeof err) == -1, "%zu-byte key accepted", n);
        CHECK(one_line(err));
        CHECK(cfg_same(&c, &before));
    }
    /* a tiny error buffer is respected (truncated, terminated) */
    char small[8];
    memset(small, 'Z', sizeof small);
    CHECK_EQ(d11_config_set(&c, "cells", "999", small, sizeof small), -1);
    CHECK(memchr(small, 0, sizeof small) != NULL);
}

static int parse(d11_config *c, const char *text, char *err, size_t errlen)
{
    err[0] = 0;
    return d11_config_parse_text(c, text, strlen(text), err, errlen);
}

static void test_parse_text(void)
{
    d11_config c, def;
    char err[512];
    d11_config_defaults(&def);

    c = def;
    CHECK_EQ(d11_config_parse_text(&c, "", 0, err, sizeof err), 0);
    CHECK(cfg_same(&c, &def));
    c = def;
    CHECK_EQ(parse(&c, "\n\n# only comments\n   \t \n#cells = 1\n", err, sizeof err), 0);
    CHECK(cfg_same(&c, &def));

    /* every key, with assorted spacing, comments, CRLF, underscores, no final newline */
    c = def;
    const char *full =
        "# d11.conf\n"
        "data = /var/lib/d11   # trailing comment\n"
        "\tlisten=0.0.0.0:9090\n"
        "cells =\t5\r\n"
        "  threads   =   7  \n"
        "id = 3\n"
        "durability = async\n"
        "async_flush_ms = 25\n"
        "order-ttl-ms = 60000\n"
        "request-timeout-ms = 1500\n"
        "grant-chunk-max = 250\n"
        "soldout-cache-ms = 0\n"
        "\n"
        "log-level = debug";
    int rc = parse(&c, full, err, sizeof err);
    CHECKF(rc == 0, "full config refused: %s", err);
    CHECK_STREQ(c.data_dir, "/var/lib/d11");
    CHECK_STREQ(c.listen, "0.0.0.0:9090");
    CHECK_EQ(c.cells, 5);
    CHECK_EQ(c.threads, 7);
    CHECK_EQ(c.cell_id, 3);
    CHECK_EQ(c.durability, D11_DUR_ASYNC);
    CHECK_EQ(c.async_flush_ms, 25);
    CHECK_EQ(c.order_ttl_ms, 60000);
    CHECK_EQ(c.request_timeout_ms, 1500);
    CHECK_EQ(c.grant_chunk_max, 250);
    CHECK_EQ(c.soldout_cache_ms, 0);
    CHECK_EQ(c.log_level, D11_LOG_DEBUG);

    /* later lines win; '#' ends the value */
    c = def;
    CHECK_EQ(parse(&c, "cells = 3\ncells = 4\ndata = /a#b\n", err, sizeof err), 0);
    CHECK_EQ(c.cells, 4);
    CHECK_STREQ(c.data_dir, "/a");

    /* `len` is honoured: bytes after it are not read */
    c = def;
    const char *t = "cells = 9XYZ";
    CHECK_EQ(d11_config_parse_text(&c, t, 9, err, sizeof err), 0);
    CHECK_EQ(c.cells, 9);
    c = def;
    char nonterm[9];
    memcpy(nonterm, "cells = 6", 9); /* no terminator at all */
    CHECK_EQ(d11_config_parse_text(&c, nonterm, sizeof nonterm, err, sizeof err), 0);
    CHECK_EQ(c.cells, 6);

    /* errors name the line */
    static const struct {
        const char *text, *want; /* want: substring of err */
    } bad[] = {
        {"cells = 3\nbogus = 1\n", "line 2:"},
        {"cells\n", "line 1:"},
        {"# c\n\ncells 3\n", "line 3:"},
        {"cells =\n", "line 1:"},
        {"cells = # nothing\n", "line 1:"},
        {"= 3\n", "line 1:"},
        {"cells = 0\n", "line 1:"},
        {"cells = 65\n", "line 1:"},
        {"cells = three\n", "line 1:"},
        {"durability = fast\n", "line 1:"},
        {"order-ttl-ms = 99\n", "line 1:"},
        {"cells = 3\r\n\r\nx\r\n", "line 3:"},
        {"listen = 127.0.0.1\n", "line 1:"},
        {"data =\n", "line 1:"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = def;
        rc = parse(&c, bad[i].text, err, sizeof err);
        CHECKF(rc == -1 && strstr(err, bad[i].want) && one_line(err), "case %zu: rc %d, err '%s' (want '%s')", i, rc,
               err, bad[i].want);
    }

    /* line length: 1023 bytes is fine, 1024 is refused */
    char *longtext = malloc(5000);
    if (!longtext) abort();
    memset(longtext, ' ', 5000);
    memcpy(longtext, "cells = 3", 9); /* value followed by 1014 spaces: a 1023-byte line */
    longtext[1023] = '\n';
    memcpy(longtext + 1024, "threads = 2\n", 12);
    c = def;
    rc = d11_config_parse_text(&c, longtext, 1036, err, sizeof err);
    CHECKF(rc == 0, "1023-byte line refused: %s", err);
    CHECK_EQ(c.cells, 3);
    CHECK_EQ(c.threads, 2);
    memset(longtext, '#', 1024); /* a 1024-byte comment line on line 1 */
    longtext[1024] = '\n';
    c = def;
    rc = d11_config_parse_text(&c, longtext, 1025, err, sizeof err);
    CHECKF(rc == -1 && strstr(err, "line 1:"), "1024-byte line: rc %d err '%s'", rc, err);
    memcpy(longtext, "cells = 3\n", 10);
    memset(longtext + 10, '#', 4000); /* line 2 never ends */
    c = def;
    rc = d11_config_parse_text(&c, longtext, 4010, err, sizeof err);
    CHECKF(rc == -1 && strstr(err, "line 2:"), "unterminated long line: rc %d err '%s'", rc, err);
    free(longtext);

    /* NUL bytes anywhere in a line, even in a comment */
    static const char nul1[] = "cells = 3\nthreads = 4\0\n";
    static const char nul2[] = "# a\0b\n";
    static const char nul3[] = "\0";
    c = def;
    rc = d11_config_parse_text(&c, nul1, sizeof nul1 - 1, err, sizeof err);
    CHECKF(rc == -1 && strstr(err, "line 2:"), "NUL in line 2: rc %d err '%s'", rc, err);
    c = def;
    rc = d11_config_parse_text(&c, nul2, sizeof nul2 - 1, err, sizeof err);
    CHECKF(rc == -1 && strstr(err, "line 1:"), "NUL in a comment: rc %d err '%s'", rc, err);
    c = def;
    rc = d11_config_parse_text(&c, nul3, 1, err, sizeof err);
    CHECKF(rc == -1, "lone NUL: rc %d err '%s'", rc, err);

    /* a small err buffer stays terminated */
    char small[6];
    memset(small, 'Z', sizeof small);
    c = def;
    CHECK_EQ(d11_config_parse_text(&c, "bogus = 1", 9, small, sizeof small), -1);
    CHECK(memchr(small, 0, sizeof small) != NULL);
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* d11_config_from_args as `d11 up` (which reads every setting but id) would see argv. */
static int args(d11_config *c, char *err, size_t errlen, int argc, ...)
{
    char *argv[32];
    va_list ap;
    va_start(ap, argc);
    argv[0] = (char *)"up";
    for (int i = 1; i < argc && i < 32; i++) argv[i] = va_arg(ap, char *);
    va_end(ap);
    err[0] = 0;
    d11_config_defaults(c);
    return d11_config_from_args(c, argc, argv, err, errlen);
}

static void test_from_args(const char *tmp)
{
    d11_config c, def;
    char err[512];
    d11_config_defaults(&def);

    CHECK_EQ(args(&c, err, sizeof err, 1), 0);
    CHECK(cfg_same(&c, &def));
    CHECK_EQ(args(&c, err, sizeof err, 5, "--cells=3", "--threads", "4", "--order_ttl_ms=1000"), 0);
    CHECK_EQ(c.cells, 3);
    CHECK_EQ(c.threads, 4);
    CHECK_EQ(c.order_ttl_ms, 1000);
    /* a value may contain '=' and start with dashes when it is the next argument */
    CHECK_EQ(args(&c, err, sizeof err, 3, "--data", "/tmp/a=b"), 0);
    CHECK_STREQ(c.data_dir, "/tmp/a=b");
    CHECK_EQ(args(&c, err, sizeof err, 2, "--data=/tmp/x=y"), 0);
    CHECK_STREQ(c.data_dir, "/tmp/x=y");
    /* later flags win */
    CHECK_EQ(args(&c, err, sizeof err, 4, "--cells=3", "--cells", "5"), 0);
    CHECK_EQ(c.cells, 5);

    /* --help and -h */
    CHECK_EQ(args(&c, err, sizeof err, 2, "--help"), 0);
    CHECK(c.help);
    CHECK_EQ(args(&c, err, sizeof err, 3, "-h", "--cells=2"), 0);
    CHECK(c.help);
    CHECK_EQ(c.cells, 2);

    /* errors */
    static const struct {
        int argc;
        const char *a[4];
        const char *want;
    } bad[] = {
        {2, {"--cells"}, "needs a value"},
        {3, {"--cells=2", "--threads"}, "needs a value"},
        {2, {"--data"}, "needs a value"},
        {2, {"cells=3"}, "unexpected"},
        {2, {"-x"}, "unexpected"},
        {3, {"--cells", "abc"}, "cells"},
        {2, {"--cells="}, "cells"},
        {2, {"--bogus=1"}, "unknown"},
        {3, {"--bogus", "1"}, "unknown"},
        {2, {"--=1"}, "unknown"},
        {2, {"--data="}, "data"},
        {3, {"--data", ""}, "data"},
        {3, {"--durability", "SYNC"}, "durability"},
        {2, {"--xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx=1"}, "unknown"},
        {3, {"--xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "1"}, "unknown"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = args(&c, err, sizeof err, bad[i].argc, bad[i].a[0], bad[i].a[1], bad[i].a[2], bad[i].a[3]);
        CHECKF(rc == -1 && strstr(err, bad[i].want) && one_line(err), "args case %zu ('%s'): rc %d, err '%s'", i,
               bad[i].a[0], rc, err);
    }

    /* DATA/d11.conf: loaded before the flags, which override it */
    char dir[600], conf[700];
    snprintf(dir, sizeof dir, "%s/datadir", tmp);
    snprintf(conf, sizeof conf, "%s/d11.conf", dir);
    CHECK(mkdir(dir, 0700) == 0);
    CHECK(write_file(conf, "# test\ncells = 5\nthreads = 3\ndurability = none\n") == 0);
    CHECK_EQ(args(&c, err, sizeof err, 5, "--data", dir, "--cells", "7"), 0);
    CHECK_EQ(c.cells, 7);  /* flag wins */
    CHECK_EQ(c.threads, 3); /* from the file */
    CHECK_EQ(c.durability, D11_DUR_NONE);
    CHECK_STREQ(c.data_dir, dir);
    /* --data=DIR form, and --data given after other flags */
    char dataeq[700];
    snprintf(dataeq, sizeof dataeq, "--data=%s", dir);
    CHECK_EQ(args(&c, err, sizeof err, 3, "--threads=9", dataeq), 0);
    CHECK_EQ(c.threads, 9);
    CHECK_EQ(c.cells, 5);
    /* a bad d11.conf is an error that names the file and the line */
    CHECK(write_file(conf, "cells = 5\nthreads = 0\n") == 0);
    int rc = args(&c, err, sizeof err, 3, "--data", dir);
    CHECKF(rc == -1 && strstr(err, "d11.conf") && strstr(err, "line 2:"), "bad d11.conf: rc %d err '%s'", rc, err);
    /* ... even when a flag would override the bad value */
    rc = args(&c, err, sizeof err, 5, "--data", dir, "--threads", "2");
    CHECKF(rc == -1, "bad d11.conf hidden by a flag: rc %d", rc);
    /* a directory without d11.conf is fine */
    CHECK(unlink(conf) == 0);
    CHECK_EQ(args(&c, err, sizeof err, 3, "--data", dir), 0);
    CHECK_EQ(c.cells, def.cells);
    /* the default ./data/d11.conf (cwd is the temp dir) */
    CHECK(mkdir("data", 0700) == 0);
    CHECK(write_file("data/d11.conf", "soldout-cache-ms = 42\n") == 0);
    CHECK_EQ(args(&c, err, sizeof err, 1), 0);
    CHECK_EQ(c.soldout_cache_ms, 42);
    CHECK(unlink("data/d11.conf") == 0);
    CHECK(rmdir("data") == 0);
}

/* The subcommands and the flags each one reads: the contract (docs/operations.md). */
#define PER_CMD_FLAGS_MAX 32
static const struct {
    const char *cmd;
    const char *flags[PER_CMD_FLAGS_MAX];
} per_cmd[] = {
    {"up", {"data", "listen", "cells", "threads", "durability", "async-flush-ms", "order-ttl-ms",
            "request-timeout-ms", "grant-chunk-max", "soldout-cache-ms", "log-level", "slow-request-ms",
            "slow-commit-ms", "log-sample", "otlp-endpoint", "trace-ratio", "store", "store-center",
            "store-cells", "protect", "protect-inflight-min", "protect-gain-pct", "protect-rt-max-ms",
            "protect-rt-tolerance-pct", "protect-cpu-max-pct", "events-retention-ms", "nats",
            "risk-model", "risk-keys", "risk-log-size", "gateway-nice"}},
    {"gateway", {"data", "listen", "cells", "threads", "request-timeout-ms", "log-level", "slow-request-ms",
                 "log-sample", "otlp-endpoint", "trace-ratio", "protect",
                 "protect-inflight-min", "protect-gain-pct", "protect-rt-max-ms", "protect-rt-tolerance-pct",
                 "protect-cpu-max-pct", "events-retention-ms", "nats",
                 "risk-model", "risk-keys", "risk-log-size"}},
    {"cell", {"id", "data", "durability", "async-flush-ms", "order-ttl-ms", "soldout-cache-ms", "log-level",
              "slow-commit-ms", "otlp-endpoint", "store", "store-cells"}},
    {"center", {"data", "cells", "durability", "grant-chunk-max", "log-level", "store", "store-center",
                "otlp-endpoint"}},
    {"audit", {"data", "store", "store-center", "store-cells"}},
};

/* A valid value of every setting. */
static const char *valid_value(const char *key)
{
    static const struct {
        const char *k, *v;
    } vals[] = {
        {"data", "/tmp/d11-no-such-dir"}, {"listen", "127.0.0.1:9"}, {"cells", "3"}, {"threads", "2"},
        {"id", "1"}, {"durability", "async"}, {"async-flush-ms", "20"}, {"order-ttl-ms", "5000"},
        {"request-timeout-ms", "700"}, {"grant-chunk-max", "5"}, {"soldout-cache-ms", "7"},
        {"log-level", "warn"}, {"slow-request-ms", "250"}, {"slow-commit-ms", "20"}, {"log-sample", "10"},
        {"otlp-endpoint", "http://127.0.0.1:9/v1/traces"}, {"trace-ratio", "0.5"},
        {"store", "postgresql://d11@127.0.0.1:1/d11"},
        {"store-center", "host=127.0.0.1 dbname=d11"}, {"store-cells", "postgresql://a/b postgresql://c/d"},
        {"protect", "off"}, {"protect-inflight-min", "32"}, {"protect-gain-pct", "150"},
        {"protect-rt-max-ms", "50"}, {"protect-rt-tolerance-pct", "300"}, {"protect-cpu-max-pct", "90"},
        {"events-retention-ms", "60000"}, {"nats", "nats://127.0.0.1:4222"},
        {"risk-model", "/tmp/d11-risk-model.json"}, {"risk-keys", "1024"}, {"risk-log-size", "64"},
        {"gateway-nice", "3"},
    };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++)
        if (!strcmp(vals[i].k, key)) return vals[i].v;
    return NULL;
}

static bool listed(const char *const *flags, const char *key)
{
    for (int i = 0; i < PER_CMD_FLAGS_MAX && flags[i]; i++)
        if (!strcmp(flags[i], key)) return true;
    return false;
}

static int cmd_args(const char *cmd, d11_config *c, char *err, size_t errlen, int argc, const char *a1,
                    const char *a2)
{
    char *argv[4] = {(char *)cmd, (char *)a1, (char *)a2, NULL};
    err[0] = 0;
    d11_config_defaults(c);
    return d11_config_from_args(c, argc, argv, err, errlen);
}

static void test_flags_per_command(const char *tmp)
{
    d11_config c;
    char err[512], flag[128];
    size_t nkeys = 0;
    while (d11_config_key(nkeys)) nkeys++;
    CHECK_EQ(nkeys, 32);
    for (size_t ci = 0; ci < sizeof per_cmd / sizeof per_cmd[0]; ci++) {
        const char *cmd = per_cmd[ci].cmd;
        for (size_t k = 0; k < nkeys; k++) {
            const char *key = d11_config_key(k);
            const char *val = valid_value(key);
            CHECKF(val != NULL, "no test value for %s", key);
            if (!val) continue;
            bool want = listed(per_cmd[ci].flags, key);
            CHECKF(d11_config_key_used(cmd, key) == want, "d11_config_key_used(%s, %s) != %d", cmd, key, want);
            /* both flag forms */
            snprintf(flag, sizeof flag, "--%s=%s", key, val);
            int rc = cmd_args(cmd, &c, err, sizeof err, 2, flag, NULL);
            CHECKF(rc == (want ? 0 : -1), "d11 %s %s -> %d (%s)", cmd, flag, rc, err);
            snprintf(flag, sizeof flag, "--%s", key);
            rc = cmd_args(cmd, &c, err, sizeof err, 3, flag, val);
            CHECKF(rc == (want ? 0 : -1), "d11 %s %s %s -> %d (%s)", cmd, flag, val, rc, err);
            if (!want) {
                char w[128];
                snprintf(w, sizeof w, "--%s is not a flag of d11 %s", key, cmd);
                CHECKF(one_line(err) && strstr(err, w), "d11 %s --%s: error '%s'", cmd, key, err);
                /* ... even without a value: the name is judged first */
                rc = cmd_args(cmd, &c, err, sizeof err, 2, flag, NULL);
                CHECKF(rc == -1 && strstr(err, w), "d11 %s --%s (no value): error '%s'", cmd, key, err);
            }
        }
        /* an unknown flag is "unknown", with or without a value (not "needs a value") */
        CHECK_EQ(cmd_args(cmd, &c, err, sizeof err, 2, "--bogus", NULL), -1);
        CHECKF(one_line(err) && strstr(err, "unknown flag --bogus"), "d11 %s --bogus: '%s'", cmd, err);
        CHECK_EQ(cmd_args(cmd, &c, err, sizeof err, 3, "--bogus", "1"), -1);
        CHECKF(strstr(err, "unknown flag --bogus") != NULL, "d11 %s --bogus 1: '%s'", cmd, err);
        CHECK_EQ(cmd_args(cmd, &c, err, sizeof err, 2, "--bogus=1", NULL), -1);
        CHECKF(strstr(err, "unknown flag --bogus") != NULL, "d11 %s --bogus=1: '%s'", cmd, err);
        /* '_' in a flag name is '-' */
        if (listed(per_cmd[ci].flags, "log-level"))
            CHECK_EQ(cmd_args(cmd, &c, err, sizeof err, 2, "--log_level=debug", NULL), 0);
        /* --help lists exactly the accepted flags (then --help itself) */
        char *text = NULL;
        size_t tlen = 0;
        FILE *f = open_memstream(&text, &tlen);
        CHECK(f != NULL);
        if (!f) continue;
        d11_config_usage(f, cmd);
        fclose(f);
        int nlisted = 0;
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            char name[64];
            if (sscanf(line, " --%63[a-z-]", name) != 1) continue;
            nlisted++;
            CHECKF(!strcmp(name, "help") || listed(per_cmd[ci].flags, name), "d11 %s --help lists --%s", cmd, name);
        }
        int nwant = 0;
        while (nwant < PER_CMD_FLAGS_MAX && per_cmd[ci].flags[nwant]) nwant++;
        CHECKF(nlisted == nwant + 1, "d11 %s --help lists %d flags, want %d", cmd, nlisted, nwant + 1);
        free(text);
    }
    /* the example */
    CHECK_EQ(cmd_args("gateway", &c, err, sizeof err, 3, "--grant-chunk-max", "5"), -1);
    /* a process that is no subcommand takes no flags */
    CHECK_EQ(cmd_args("nosuch", &c, err, sizeof err, 2, "--data=/x", NULL), -1);
    CHECK_EQ(cmd_args("nosuch", &c, err, sizeof err, 2, "--help", NULL), 0);
    CHECK(!d11_config_key_used("nosuch", "data"));
    CHECK(!d11_config_key_used("up", "nosuch"));

    /* d11.conf is shared: a key only the center reads is fine for the gateway */
    char dir[600], conf[700], dataeq[700];
    snprintf(dir, sizeof dir, "%s/shared", tmp);
    snprintf(conf, sizeof conf, "%s/d11.conf", dir);
    snprintf(dataeq, sizeof dataeq, "--data=%s", dir);
    CHECK(mkdir(dir, 0700) == 0);
    CHECK(write_file(conf, "grant-chunk-max = 5\nid = 2\norder_ttl_ms = 1000\n") == 0);
    CHECK_EQ(cmd_args("gateway", &c, err, sizeof err, 2, dataeq, NULL), 0);
    CHECK_EQ(c.grant_chunk_max, 5);
    CHECK_EQ(cmd_args("audit", &c, err, sizeof err, 2, dataeq, NULL), 0);
    CHECK(write_file(conf, "grant-chunk-max = 5\nbogus = 1\n") == 0); /* ... unknown keys are not */
    CHECK_EQ(cmd_args("gateway", &c, err, sizeof err, 2, dataeq, NULL), -1);
    CHECKF(strstr(err, "line 2:") && one_line(err), "unknown key in d11.conf: '%s'", err);
    CHECK(unlink(conf) == 0);
    CHECK(rmdir(dir) == 0);
}

/* d11_config_value writes what d11_config_set reads back: `d11 up` forwards settings to
 * its children this way. */
static void test_value_roundtrip(void)
{
    d11_config a, b;
    char err[256], val[1100];
    d11_config_defaults(&a);
    for (size_t k = 0; d11_config_key(k); k++) {
        const char *key = d11_config_key(k);
        CHECK_EQ(d11_config_set(&a, key, valid_value(key), err, sizeof err), 0);
    }
    b = a;
    d11_config_defaults(&b);
    for (size_t k = 0; d11_config_key(k); k++) {
        const char *key = d11_config_key(k);
        CHECK_EQ(d11_config_value(&a, key, val, sizeof val), 0);
        CHECKF(!strcmp(val, valid_value(key)), "%s read back as '%s'", key, val);
        CHECK_EQ(d11_config_set(&b, key, val, err, sizeof err), 0);
    }
    CHECK(cfg_same(&a, &b));
    CHECK_EQ(d11_config_value(&a, "nosuch", val, sizeof val), -EINVAL);
    CHECK_EQ(d11_config_value(&a, "data", val, 4), -ENAMETOOLONG);
    CHECK_EQ(d11_config_value(&a, "order_ttl_ms", val, sizeof val), 0);
    CHECK_STREQ(val, "5000");
}

static void test_datadir_lock(const char *tmp)
{
    char dir[600], lockp[700], err[512], want[64];
    snprintf(dir, sizeof dir, "%s/locked/sub", tmp);
    snprintf(lockp, sizeof lockp, "%s/d11.lock", dir);
    /* a missing parent is not created: only dir itself */
    err[0] = 0;
    CHECK_EQ(d11_datadir_lock(dir, "d11", err, sizeof err), -ENOENT);
    CHECK(one_line(err));
    snprintf(dir, sizeof dir, "%s/locked", tmp);
    snprintf(lockp, sizeof lockp, "%s/d11.lock", dir);
    int fd = d11_datadir_lock(dir, "d11", err, sizeof err);
    CHECKF(fd >= 0, "first lock: %d %s", fd, err);
    if (fd < 0) return;
    CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
    char *text = NULL;
    size_t len = 0;
    snprintf(want, sizeof want, "%ld\n", (long)getpid());
    CHECK(d11_read_file(lockp, &text, &len) == 0 && text && !strcmp(text, want));
    free(text);
    /* flock conflicts between two open files even in one process: a second holder */
    err[0] = 0;
    int fd2 = d11_datadir_lock(dir, "d11", err, sizeof err);
    CHECK_EQ(fd2, -EWOULDBLOCK);
    snprintf(want, sizeof want, "held by pid %ld", (long)getpid());
    CHECKF(one_line(err) && strstr(err, want) && strstr(err, "d11.lock"), "refusal: '%s'", err);
    /* another name is another lock */
    int fd3 = d11_datadir_lock(dir, "cell-3", err, sizeof err);
    CHECKF(fd3 >= 0, "cell-3 lock beside d11.lock: %d %s", fd3, err);
    d11_datadir_unlock(fd3);
    /* unlock: released and emptied */
    d11_datadir_unlock(fd);
    text = NULL;
    CHECK(d11_read_file(lockp, &text, &len) == 0 && len == 0);
    free(text);
    fd = d11_datadir_lock(dir, "d11", err, sizeof err);
    CHECKF(fd >= 0, "lock after unlock: %d %s", fd, err);
    d11_datadir_unlock(fd);
    d11_datadir_unlock(-1); /* no-op */
    static const char *const bad[] = {"", "../x", "a/b", "d11.lock", "a b",
                                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" /* 33 */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECKF(d11_datadir_lock(dir, bad[i], err, sizeof err) == -EINVAL, "lock name '%s' accepted", bad[i]);
        CHECK(one_line(err));
    }
    char p2[700];
    snprintf(p2, sizeof p2, "%s/cell-3.lock", dir);
    CHECK(unlink(lockp) == 0 && unlink(p2) == 0 && rmdir(dir) == 0);
}

static void test_path(void)
{
    d11_config c;
    d11_config_defaults(&c);
    char out[64];
    CHECK_EQ(d11_config_path(&c, "cell-3.db", out, sizeof out), 0);
    CHECK_STREQ(out, "./data/cell-3.db");
    CHECK_EQ(d11_config_path(&c, "cell-3.db", out, 16), -ENAMETOOLONG); /* 16 bytes + NUL */
    CHECK_EQ(d11_config_path(&c, "cell-3.db", out, 17), 0);
}


int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    replay_corpus("fuzz/corpus/config", LLVMFuzzerTestOneInput); /* before leaving the repository root */
    const char *base = getenv("TMPDIR");
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s/d11-test-config.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmp) || chdir(tmp) == -1) {
        printf("cannot create a temporary directory under %s: %s\n", base ? base : "/tmp", strerror(errno));
        printf("0 passed, 1 failed\n");
        return 1;
    }
    test_defaults();
    test_set_ints();
    test_set_words();
    test_set_keys();
    test_parse_text();
    test_from_args(tmp);
    test_flags_per_command(tmp);
    test_value_roundtrip();
    test_datadir_lock(tmp);
    test_path();
    char dir[600];
    snprintf(dir, sizeof dir, "%s/datadir", tmp);
    (void)rmdir(dir);
    if (chdir("/") == 0) (void)rmdir(tmp);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
