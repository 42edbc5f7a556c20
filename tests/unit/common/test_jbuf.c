/* test_jbuf.c - the JSON writer (common/jbuf.c) writes what jansson's json_dumps() writes.
 *
 * Differential: every string and real, from tables and from a seeded random generator, is
 * written by both and the texts compared byte for byte; a string jansson refuses (invalid
 * UTF-8) must be refused by rq_jbuf_str() too.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"

/* jansson's compact text of the string s[0..n), or NULL when it refuses it. */
static char *jansson_str(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    char *t = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    json_decref(v);
    return t;
}

static void check_str(const char *s, size_t n)
{
    rq_jbuf_t b;
    char *want = jansson_str(s, n), *got;
    size_t len = 0;
    int rc;

    rq_jbuf_init(&b, 0);
    rc = rq_jbuf_str(&b, s, n);
    got = rq_jbuf_take(&b, &len);
    cr_assert_not_null(got);
    if (want == NULL) {
        cr_assert_eq(rc, -1, "jansson refuses a string of %zu bytes, jbuf wrote %s", n, got);
        cr_assert_eq(len, 0u);
    } else {
        cr_assert_eq(rc, 0, "jbuf refused %s", want);
        cr_assert_eq(len, strlen(want), "%s vs %s", got, want);
        cr_assert_str_eq(got, want);
    }
    free(got);
    free(want);
}

Test(jbuf, strings_table)
{
    static const char *const cases[] = {
        "",
        "a",
        "hello relayq",
        "quote \" and \\ back",
        "/slash/",
        "\n\r\t\b\f",
        "\x01\x1f ",
        "\x7f",
        "caf\xc3\xa9",
        "\xe2\x82\xac",
        "\xf0\x9f\x98\x80",
        "\xc3",
        "\x80",
        "\xc0\xaf",
        "\xed\xa0\x80",
        "\xf4\x90\x80\x80",
        "\xe0\x80\xaf",
        "\xf0\x80\x80\xaf",
        "\xf5\x80\x80\x80",
        "\xff",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_str(cases[i], strlen(cases[i]));
    check_str("a\0b", 3); /* NUL: \u0000 */
}

Test(jbuf, strings_random)
{
    char s[24];

    srand(20261201);
    for (int round = 0; round < 200000; round++) {
        size_t n = (size_t)(rand() % (int)sizeof(s));
        for (size_t i = 0; i < n; i++) {
            int r = rand() % 8;
            /* mostly bytes that matter: controls, quotes, UTF-8 lead and continuation bytes */
            s[i] = (char)(r == 0   ? rand() % 0x20
                          : r == 1 ? "\"\\/"[rand() % 3]
                          : r < 5  ? 0x80 + rand() % 0x80
                                   : rand() % 0x100);
        }
        check_str(s, n);
    }
}

static void check_real(double v)
{
    json_t *j = json_real(v);
    char *want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY), *got;
    rq_jbuf_t b;

    cr_assert_not_null(want, "%g", v);
    rq_jbuf_init(&b, 0);
    cr_assert_eq(rq_jbuf_real(&b, v), 0);
    got = rq_jbuf_take(&b, NULL);
    cr_assert_str_eq(got, want, "%.17g", v);
    free(got);
    free(want);
    json_decref(j);
}

static void check_int(long long v)
{
    rq_jbuf_t b;
    char want[32], *got;
    size_t len = 0;

    snprintf(want, sizeof(want), "%lld", v);
    rq_jbuf_init(&b, 0);
    rq_jbuf_int(&b, v);
    got = rq_jbuf_take(&b, &len);
    cr_assert_not_null(got);
    cr_assert_eq(len, strlen(want), "%s vs %s", got, want);
    cr_assert_str_eq(got, want);
    free(got);
}

/* Integers as printf's %lld: the limits, every power of ten and its neighbours, random. */
Test(jbuf, integers_like_printf)
{
    long long p = 1;

    check_int(0);
    check_int(LLONG_MAX);
    check_int(LLONG_MIN);
    check_int(LLONG_MIN + 1);
    for (int i = 0; i < 19; i++) { /* 10^0 .. 10^18 (10^19 does not fit) */
        for (long long d = -1; d <= 1; d++) {
            check_int(p + d);
            check_int(-(p + d));
        }
        if (i < 18)
            p *= 10;
    }
    srand(11);
    for (int i = 0; i < 100000; i++) {
        unsigned long long u = ((unsigned long long)rand() << 33) ^
                               ((unsigned long long)rand() << 2) ^ (unsigned long long)rand();
        long long v = (long long)(u >> 1); /* 0 .. LLONG_MAX: its negation fits */
        int k = rand() % 63;
        check_int(v >> k);
        check_int(-(v >> k));
    }
}

Test(jbuf, reals)
{
    static const double cases[] = {
        0.0,    -0.0,  0.5,     1.0,    -1.0,    0.1,     60.0,   19.99,
        1e-7,   1e21,  1.5e300, 1e-300, DBL_MAX, DBL_MIN, 5e-324, 123456789012345678.0,
        3.0e10, 2.5e-5};
    rq_jbuf_t b;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_real(cases[i]);
    srand(7);
    for (int i = 0; i < 100000; i++) {
        double v = ldexp((double)rand() / RAND_MAX, rand() % 200 - 100);
        check_real(rand() % 2 ? v : -v);
        check_real((double)(rand() % 100000) / 1000.0);
    }
    rq_jbuf_init(&b, 0);
    cr_assert_eq(rq_jbuf_real(&b, NAN), -1);
    cr_assert_eq(rq_jbuf_real(&b, INFINITY), -1);
    rq_jbuf_free(&b);
}

Test(jbuf, object_like_jansson)
{
    json_t *o = json_pack("{s:s,s:I,s:f}", "status", "success", "n", (json_int_t)-42, "t", 0.25);
    char *want = json_dumps(o, JSON_COMPACT), *got;
    rq_jbuf_t b;
    size_t len;

    rq_jbuf_init(&b, 8); /* grows */
    rq_jbuf_lit(&b, "{\"status\":");
    rq_jbuf_str(&b, "success", 7);
    rq_jbuf_lit(&b, ",\"n\":");
    rq_jbuf_int(&b, -42);
    rq_jbuf_lit(&b, ",\"t\":");
    rq_jbuf_real(&b, 0.25);
    rq_jbuf_raw(&b, "}", 1);
    got = rq_jbuf_take(&b, &len);
    cr_assert_str_eq(got, want);
    cr_assert_eq(len, strlen(want));
    free(got);
    free(want);
    json_decref(o);
    /* empty: still a string */
    rq_jbuf_init(&b, 0);
    got = rq_jbuf_take(&b, &len);
    cr_assert_str_eq(got, "");
    cr_assert_eq(len, 0u);
    free(got);
}
