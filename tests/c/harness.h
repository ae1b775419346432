/*
 * A tiny test harness for the C unit tests (tests/c/test_*.c).
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_U(a, b); CHECK_MEM(p, n, q, m); }
 *   int main(void) { RUN(name); ...; return harness_done(); }
 *
 * A test passes when none of its checks failed.  A failed check prints
 * file:line and goes on (tests are not aborted), so one run shows every
 * failure.  harness_done() prints, as the LAST line of the output,
 *
 *   N passed, N failed
 *
 * counting tests, and returns the exit status: non-zero on any failure.
 * Header-only, for exactly one translation unit per test binary.
 */
#ifndef BEEOS_TEST_HARNESS_H
#define BEEOS_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned long checks;        /* checks evaluated, all tests */
    unsigned long checks_failed; /* checks failed, all tests */
    unsigned long tests_passed;
    unsigned long tests_failed;
    unsigned long cur_failed;    /* checks failed in the running test */
    const char *cur_test;
} harness_state;

static harness_state harness;

/* Prints a failure; fmt describes it. */
static inline void harness_fail(const char *file, int line, const char *what) {
    harness.checks_failed++;
    harness.cur_failed++;
    fprintf(stderr, "FAIL %s:%d [%s] %s\n", file, line,
            harness.cur_test ? harness.cur_test : "?", what);
}

/* Returns cond so callers can skip work that depends on it. */
static inline int harness_check(int cond, const char *file, int line, const char *what) {
    harness.checks++;
    if (!cond) harness_fail(file, line, what);
    return cond;
}

/* Writes a printable, escaped rendition of n bytes of s (at most 80). */
static inline void harness_dump(FILE *f, const char *s, size_t n) {
    size_t i;
    fputc('"', f);
    for (i = 0; i < n && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20 || c >= 0x7f) fprintf(f, "\\x%02X", c);
        else fputc(c, f);
    }
    fputc('"', f);
    if (n > 80) fprintf(f, "...(%zu bytes)", n);
}

static inline int harness_check_mem(const char *a, size_t an, const char *b, size_t bn,
                                    const char *file, int line, const char *what) {
    int ok = an == bn && (an == 0 || memcmp(a, b, an) == 0);
    harness.checks++;
    if (!ok) {
        harness_fail(file, line, what);
        fputs("     got      ", stderr);
        harness_dump(stderr, a, an);
        fputs("\n     expected ", stderr);
        harness_dump(stderr, b, bn);
        fputc('\n', stderr);
    }
    return ok;
}

static inline int harness_check_u(uint64_t a, uint64_t b, const char *file, int line,
                                  const char *what) {
    harness.checks++;
    if (a != b) {
        harness_fail(file, line, what);
        fprintf(stderr, "     got %llu, expected %llu\n", (unsigned long long)a,
                (unsigned long long)b);
        return 0;
    }
    return 1;
}

#define CHECK(cond) harness_check(!!(cond), __FILE__, __LINE__, #cond)
/* Unsigned integers (sizes, counts, enums). */
#define CHECK_EQ_U(a, b) \
    harness_check_u((uint64_t)(a), (uint64_t)(b), __FILE__, __LINE__, #a " == " #b)
/* Byte strings with lengths. */
#define CHECK_MEM(a, an, b, bn) \
    harness_check_mem((a), (an), (b), (bn), __FILE__, __LINE__, #a " == " #b)
/* A byte string against a string literal (which may hold NULs). */
#define CHECK_LIT(a, an, lit) \
    harness_check_mem((a), (an), (lit), sizeof(lit) - 1, __FILE__, __LINE__, #a " == " #lit)

#define TEST(name) static void name(void)

#define RUN(name)                                        \
    do {                                                 \
        harness.cur_test = #name;                        \
        harness.cur_failed = 0;                          \
        name();                                          \
        if (harness.cur_failed) {                        \
            harness.tests_failed++;                      \
            fprintf(stderr, "not ok: %s\n", #name);      \
        } else {                                         \
            harness.tests_passed++;                      \
            printf("ok: %s\n", #name);                   \
        }                                                \
        fflush(stdout);                                  \
        harness.cur_test = NULL;                         \
    } while (0)

/* Prints the summary; its last line is "N passed, N failed" (tests). */
static inline int harness_done(void) {
    fflush(stderr);
    printf("%lu checks, %lu failed checks\n", harness.checks, harness.checks_failed);
    printf("%lu passed, %lu failed\n", harness.tests_passed, harness.tests_failed);
    fflush(stdout);
    return harness.tests_failed || harness.checks_failed ? 1 : 0;
}

#endif
