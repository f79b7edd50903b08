/*
 * check.h — the assertion macros shared by the unit test programs (tests/unit/test_*.c).
 * Each failed check prints file:line, the expression and the values, and counts; a test's
 * main() ends with `printf("%d passed, %d failed\n", n_pass, n_fail)` and a non-zero exit
 * when n_fail > 0. Include once, after the headers the test needs (<stdio.h>, <string.h>).
 */
#ifndef D11_TEST_CHECK_H
#define D11_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

static int n_pass, n_fail;

#define CHECK(c)                                                                           \
    do {                                                                                   \
        if (c) n_pass++;                                                                   \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);                   \
        }                                                                                  \
    } while (0)

#define CHECKF(c, ...)                                                                     \
    do {                                                                                   \
        if (c) n_pass++;                                                                   \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #c);                   \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
        }                                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    do {                                                                                   \
        unsigned long long va_ = (unsigned long long)(a), vb_ = (unsigned long long)(b);   \
        if (va_ == vb_) n_pass++;                                                          \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK_EQ(%s, %s) failed: %llu != %llu\n", __FILE__, __LINE__,   \
                   #a, #b, va_, vb_);                                                      \
        }                                                                                  \
    } while (0)

#define CHECK_RC(a, b)                                                                     \
    do {                                                                                   \
        long long va_ = (long long)(a), vb_ = (long long)(b);                              \
        if (va_ == vb_) n_pass++;                                                          \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK_RC(%s, %s) failed: %lld != %lld\n", __FILE__, __LINE__,   \
                   #a, #b, va_, vb_);                                                      \
        }                                                                                  \
    } while (0)

#define CHECK_STREQ(a, b)                                                                  \
    do {                                                                                   \
        const char *sa_ = (a), *sb_ = (b);                                                 \
        if (sa_ && sb_ && strcmp(sa_, sb_) == 0) n_pass++;                                 \
        else {                                                                             \
            n_fail++;                                                                      \
            printf("%s:%d: CHECK_STREQ(%s, %s) failed: '%s' != '%s'\n", __FILE__, __LINE__, \
                   #a, #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                   \
        }                                                                                  \
    } while (0)

#endif
