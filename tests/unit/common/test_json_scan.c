/* test_json_scan.c - rq_json_scan_valid() accepts only what jansson accepts.
 *
 * A table of texts with the answer expected, then a seeded generator of JSON texts (valid,
 * then with bytes changed, cut or inserted): for both flag sets, every text the scanner
 * accepts must be one json_loadb() accepts with the matching flags (JSON_DECODE_ANY |
 * JSON_REJECT_DUPLICATES, plus JSON_DECODE_INT_AS_REAL), and the ordinary ones must be
 * accepted (the scanner is useful only if it takes the common case).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"

static int jansson_ok(const char *t, size_t n, unsigned flags)
{
    size_t f = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES;
    json_t *v;

    if (flags & RQ_JSON_SCAN_INT_AS_REAL)
        f |= JSON_DECODE_INT_AS_REAL;
    v = json_loadb(t, n, f, NULL);
    json_decref(v);
    return v != NULL;
}

typedef struct {
    const char *text;
    int ints, reals; /* the answer without flags, with RQ_JSON_SCAN_INT_AS_REAL */
} case_t;

static const case_t cases[] = {
    {"{}", 1, 1},
    {"[]", 1, 1},
    {"1", 1, 1},
    {"\"s\"", 1, 1},
    {"null", 1, 1},
    {"true", 1, 1},
    {"{\"a\":[1,2.5,-0,1e3,1E-3,\"x\",null,false,{\"b\":{}}]}", 1, 1},
    {"{ \"a\" : 1 , \"b\" :\t[ 1 ,\n2 ] }", 1, 1},
    {"9223372036854775807", 1, 1},
    {"-9223372036854775808", 1, 1},
    {"9223372036854775808", 0, 1}, /* jansson: too big integer */
    {"-9223372036854775809", 0, 1},
    {"99999999999999999999", 0, 1},
    {"{\"n\":99999999999999999999}", 0, 1},
    {"1e400", 0, 0}, /* overflows a double */
    {"-1e400", 0, 0},
    {"1e-400", 1, 1},
    {"12345678901234567890123456789012345678901", 0, 0}, /* longer than NUM_MAX */
    {"{\"a\":1,\"a\":2}", 0, 0},
    {"{\"a\":{\"b\":1},\"b\":{\"a\":1}}", 1, 1}, /* the same key in different objects */
    {"\"a\\nb\"", 0, 0},                         /* escapes: jansson's job */
    {"\"\xc3\xa9\"", 1, 1},
    {"\"\xc3\"", 0, 0},
    {"\"\xed\xa0\x80\"", 0, 0}, /* a surrogate */
    {"\"a\tb\"", 0, 0},
    {"01", 0, 0},
    {"1.", 0, 0},
    {".5", 0, 0},
    {"+1", 0, 0},
    {"[1,]", 0, 0},
    {"{\"a\":1,}", 0, 0},
    {"tru", 0, 0},
    {"truex", 0, 0},
    {"", 0, 0},
    {" 1", 0, 0}, /* the caller trims */
    {"1 ", 0, 0},
    {"{}{}", 0, 0},
};

Test(json_scan, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const case_t *c = &cases[i];
        size_t n = strlen(c->text);
        int a = rq_json_scan_valid(c->text, n, 0, 0);
        int b = rq_json_scan_valid(c->text, n, 0, RQ_JSON_SCAN_INT_AS_REAL);
        cr_expect_eq(a, c->ints, "[%s] without flags: %d", c->text, a);
        cr_expect_eq(b, c->reals, "[%s] INT_AS_REAL: %d", c->text, b);
        if (a)
            cr_expect(jansson_ok(c->text, n, 0), "[%s] accepted, jansson refuses", c->text);
        if (b)
            cr_expect(jansson_ok(c->text, n, RQ_JSON_SCAN_INT_AS_REAL), "[%s]", c->text);
    }
}

Test(json_scan, max_depth)
{
    char t[80];

    for (int depth = 31; depth <= 33; depth++) {
        int n = 0;
        for (int i = 0; i < depth; i++)
            t[n++] = '[';
        t[n++] = '1';
        for (int i = 0; i < depth; i++)
            t[n++] = ']';
        cr_expect_eq(rq_json_scan_valid(t, (size_t)n, 0, 0), depth <= RQ_JSON_SCAN_MAX_DEPTH,
                     "depth %d", depth);
    }
    cr_expect(rq_json_scan_valid("[[1]]", 5, 2, 0));
    cr_expect_not(rq_json_scan_valid("[[1]]", 5, 1, 0));
    cr_expect(rq_json_scan_valid("{\"a\":{}}", 8, 2, 0));
    cr_expect_not(rq_json_scan_valid("{\"a\":{}}", 8, 1, 0));
}

/* ---- generated texts ---- */

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

static void gen_value(char *out, size_t cap, size_t *len, int depth);

static void put(char *out, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);

    if (*len + n < cap) {
        memcpy(out + *len, s, n);
        *len += n;
    }
}

static void gen_value(char *out, size_t cap, size_t *len, int depth)
{
    static const char *const atoms[] = {
        "0",
        "-0",
        "1",
        "17",
        "-42",
        "2.5",
        "1e3",
        "1E-2",
        "-1.5e+7",
        "true",
        "false",
        "null",
        "\"\"",
        "\"abc\"",
        "\"\xc3\xa9\xe2\x82\xac\"",
        "\"k\"",
        "9223372036854775807",
        "9223372036854775808",
        "123456789012345678901",
        "1e309",
        "\"a\\\"b\"",
        "\"\\u00e9\"",
    };
    unsigned kind = depth > 4 ? 0 : rnd(4);
    char key[16];

    if (kind <= 1) {
        put(out, cap, len, atoms[rnd(sizeof(atoms) / sizeof(atoms[0]))]);
        return;
    }
    put(out, cap, len, kind == 2 ? "[" : "{");
    for (unsigned i = 0, n = rnd(4); i < n; i++) {
        if (i > 0)
            put(out, cap, len, rnd(4) == 0 ? " , " : ",");
        if (kind == 3) {
            snprintf(key, sizeof(key), "\"%c\":", 'a' + rnd(4)); /* duplicates now and then */
            put(out, cap, len, key);
        }
        gen_value(out, cap, len, depth + 1);
    }
    put(out, cap, len, kind == 2 ? "]" : "}");
}

static void check_text(const char *t, size_t n, int *accepted)
{
    for (unsigned flags = 0; flags <= RQ_JSON_SCAN_INT_AS_REAL; flags++) {
        if (!rq_json_scan_valid(t, n, 0, flags))
            continue;
        (*accepted)++;
        cr_assert(jansson_ok(t, n, flags), "flags %u: [%.*s] accepted, jansson refuses it", flags,
                  (int)n, t);
    }
}

Test(json_scan, generated_against_jansson)
{
    char text[4096];
    int accepted = 0, plain = 0;

    for (int i = 0; i < 60000; i++) {
        size_t n = 0;
        gen_value(text, sizeof(text), &n, 0);
        check_text(text, n, &accepted);
        /* and mutated: a byte changed, the text cut, a byte inserted */
        if (n > 0) {
            char m[4097];
            size_t k = rnd((unsigned)n), mn = n;
            memcpy(m, text, n);
            switch (rnd(3)) {
            case 0:
                m[k] = "{}[],:\"0-.eE\\ \xff"[rnd(15)];
                break;
            case 1:
                mn = k;
                break;
            default:
                memmove(m + k + 1, m + k, n - k);
                m[k] = "{}[],:\"1 -"[rnd(10)];
                mn = n + 1;
            }
            check_text(m, mn, &accepted);
        }
    }
    /* the common case is taken: a text of plain values without duplicates */
    for (int i = 0; i < 1000; i++) {
        char t[64];
        int n = snprintf(t, sizeof(t), "{\"id\":\"m-%d\",\"n\":%d,\"x\":[1.5,true,null]}", i, i);
        plain += rq_json_scan_valid(t, (size_t)n, 0, 0);
    }
    cr_expect_eq(plain, 1000);
    cr_expect(accepted > 10000, "only %d generated texts accepted", accepted);
}
