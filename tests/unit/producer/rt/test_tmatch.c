/* test_tmatch.c - AMQP topic patterns (producer/rt/tmatch.c): the cases of RabbitMQ's topic
 * exchange (its own test suite's table, plus empty words and the empty key), the pattern
 * check, and no exponential blow-up on "#.#.#..." patterns. */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "tmatch.h"

typedef struct {
    const char *pattern, *key;
    int match;
} tcase_t;

static const tcase_t cases[] = {
    /* the tutorial's and RabbitMQ's topic exchange test table */
    {"a.b.c", "a.b.c", 1},
    {"a.*.c", "a.b.c", 1},
    {"a.#.b", "a.b", 1},
    {"a.#.b", "a.x.b", 1},
    {"a.#.b", "a.x.y.b", 1},
    {"a.#.b", "a.b.b", 1},
    {"a.#.b", "a.b.x", 0},
    {"a.#.b", "b", 0},
    {"#", "a.b.c", 1},
    {"#", "", 1},
    {"#.#", "", 1},
    {"#.#", "a", 1},
    {"#.#", "a.b", 1},
    {"#.#.#", "a.b.c.d", 1},
    {"*", "a", 1},
    {"*", "", 0},
    {"*", "a.b", 0},
    {"*.*", "a.b", 1},
    {"*.*", "a", 0},
    {"a.*", "a.b", 1},
    {"a.*", "a", 0},
    {"a.*", "a.b.c", 0},
    {"a.#", "a", 1},
    {"a.#", "a.b", 1},
    {"a.#", "a.b.c", 1},
    {"a.#", "ab", 0},
    {"#.c", "c", 1},
    {"#.c", "a.b.c", 1},
    {"#.c", "a.b.cc", 0},
    {"*.#", "a", 1},
    {"*.#", "", 0},
    {"#.*", "a", 1},
    {"#.*", "", 0},
    {"#.*.#", "a.b", 1},
    {"*.#.*", "a", 0},
    {"*.#.*", "a.b", 1},
    {"*.#.*", "a.b.c", 1},
    {"a.#.#.b", "a.b", 1},
    {"a.#.*.#.b", "a.b", 0},
    {"a.#.*.#.b", "a.x.b", 1},
    {"#.b.#", "a.b.c", 1},
    {"#.b.#", "b", 1},
    {"#.b.#", "a.c", 0},
    {"quick.orange.rabbit", "quick.orange.rabbit", 1},
    {"*.orange.*", "quick.orange.rabbit", 1},
    {"*.*.rabbit", "quick.orange.fox", 0},
    {"lazy.#", "lazy.orange.male.rabbit", 1},
    /* empty words: every '.' ends a word */
    {"a.*.b", "a..b", 1},
    {"a.b", "a..b", 0},
    {"a..b", "a..b", 1},
    {"a.#.b", "a..b", 1},
    {"a.*", "a.", 1},
    {"a", "a.", 0},
    {"*.a", ".a", 1},
    {"*.*", ".", 1},
    {"*", ".", 0},
    {"#", ".", 1},
    {"a.#", "a.", 1},
    /* the empty key has no word */
    {"", "", 1},
    {"a", "", 0},
    {"", "a", 0},
    /* '*' and '#' inside a word are literal */
    {"a*", "a*", 1},
    {"a*", "ab", 0},
    {"#a", "a", 0},
    {"#a", "#a", 1},
    {"**", "a", 0},
    {"##", "a", 0},
    {"a.b", "a.B", 0},
    {"é.*", "é.x", 1},
};

Test(tmatch, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rq_tmatch(cases[i].pattern, cases[i].key), cases[i].match,
                     "case %zu: pattern \"%s\" key \"%s\": expected %d", i, cases[i].pattern,
                     cases[i].key, cases[i].match);
}

Test(tmatch, check)
{
    char err[128], long_pat[300];

    cr_expect_eq(rq_tmatch_check("a.#.b", err, sizeof(err)), 0);
    cr_expect_eq(rq_tmatch_check("#", err, sizeof(err)), 0);
    cr_expect_eq(rq_tmatch_check("a..b", err, sizeof(err)), 0, "empty words are fine");
    cr_expect_eq(rq_tmatch_check("é.ü", err, sizeof(err)), 0);
    cr_expect_eq(rq_tmatch_check("", err, sizeof(err)), -1);
    cr_expect(strstr(err, "1 to 255") != NULL, "%s", err);
    cr_expect_eq(rq_tmatch_check(NULL, err, sizeof(err)), -1);
    cr_expect_eq(rq_tmatch_check("a\tb", err, sizeof(err)), -1);
    cr_expect(strstr(err, "control") != NULL, "%s", err);
    cr_expect_eq(rq_tmatch_check("a\x7f", err, sizeof(err)), -1);
    cr_expect_eq(rq_tmatch_check("a\xff", err, sizeof(err)), -1);
    cr_expect(strstr(err, "UTF-8") != NULL, "%s", err);
    cr_expect_eq(rq_tmatch_check("\xc0\xae", err, sizeof(err)), -1, "overlong");
    memset(long_pat, 'a', 256);
    long_pat[255] = '\0';
    cr_expect_eq(rq_tmatch_check(long_pat, err, sizeof(err)), 0, "255 bytes");
    long_pat[255] = 'a';
    long_pat[256] = '\0';
    cr_expect_eq(rq_tmatch_check(long_pat, err, sizeof(err)), -1, "256 bytes");
}

Test(tmatch, no_blowup)
{
    char pat[256], key[256];
    size_t n = 0;
    struct timespec t0, t1;

    /* "#.#.#....#.z" (127 words) against 127 words that never end in z: a naive
     * backtracking matcher tries every split, exponentially many */
    while (n + 2 < 254) {
        pat[n++] = '#';
        pat[n++] = '.';
    }
    pat[n++] = 'z';
    pat[n] = '\0';
    for (n = 0; n + 2 < 255; n += 2) {
        key[n] = 'a';
        key[n + 1] = '.';
    }
    key[n - 1] = '\0';
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100; i++)
        cr_assert_eq(rq_tmatch(pat, key), 0);
    key[n - 2] = 'z';
    cr_assert_eq(rq_tmatch(pat, key), 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_expect(ms < 500, "101 matches took %.1f ms", ms);
}
