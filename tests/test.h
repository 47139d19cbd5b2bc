/*
 * tests/test.h - a tiny test harness.  Each test binary defines tests with
 * TEST(name) { ... } and lists them in main via RUN(name).  The binary ends
 * with "N passed, N failed" and exits non-zero if anything failed.
 */
#ifndef PB_TEST_H
#define PB_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failed_checks;
static int t_passed, t_failed;
static const char *t_current;

#define TEST(name) static void name(void)

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  FAIL %s:%d in %s: %s\n", __FILE__, __LINE__, t_current, \
                    #cond);                                                         \
            t_failed_checks++;                                                      \
        }                                                                           \
    } while (0)

#define CHECK_MSG(cond, ...)                                                        \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  FAIL %s:%d in %s: %s: ", __FILE__, __LINE__, t_current, \
                    #cond);                                                         \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
            t_failed_checks++;                                                      \
        }                                                                           \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                          \
    do {                                                                            \
        long long t_a = (long long)(a), t_b = (long long)(b);                       \
        if (t_a != t_b) {                                                           \
            fprintf(stderr, "  FAIL %s:%d in %s: %s == %s (%lld != %lld)\n", __FILE__, \
                    __LINE__, t_current, #a, #b, t_a, t_b);                         \
            t_failed_checks++;                                                      \
        }                                                                           \
    } while (0)

#define RUN(name)                                                                   \
    do {                                                                            \
        int t_before = t_failed_checks;                                             \
        t_current = #name;                                                          \
        name();                                                                     \
        if (t_failed_checks == t_before) {                                          \
            t_passed++;                                                             \
            printf("ok   %s\n", #name);                                             \
        } else {                                                                    \
            t_failed++;                                                             \
            printf("FAIL %s\n", #name);                                             \
        }                                                                           \
        fflush(stdout);                                                             \
    } while (0)

#define TEST_SUMMARY()                                                              \
    (printf("%d passed, %d failed\n", t_passed, t_failed), t_failed ? 1 : 0)

/* Where ../shared is: $PB_SHARED_DIR, else ../shared from the source dir. */
static inline const char *test_shared_dir(void) {
    const char *s = getenv("PB_SHARED_DIR");
    return s && *s ? s : "../shared";
}

/* Read a whole file; caller frees.  NULL if unreadable. */
static inline char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = 0; if (len) *len = (size_t)n; }
    return buf;
}

/* Hex helpers for vectors. */
static inline size_t test_unhex(const char *hex, unsigned char *out, size_t cap) {
    size_t n = 0;
    for (; hex[0] && hex[1] && n < cap; hex += 2) {
        unsigned v;
        if (sscanf(hex, "%2x", &v) != 1) break;
        out[n++] = (unsigned char)v;
    }
    return n;
}
#endif
