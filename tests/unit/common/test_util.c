/* Unit tests for common/util.c: clocks, ISO 8601, UUIDs, UTF-8 validation, sleep. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "hmap.h"
#include "util.h"

TestSuite(util, .timeout = 30);

/* ---- UTF-8 ---- */

typedef struct {
    const char *name;
    const char *bytes;
    size_t len;
    int valid;
} utf8_case_t;

#define U8(name, lit, valid)                                                                       \
    {                                                                                              \
        name, lit, sizeof(lit) - 1, valid                                                          \
    }

static const utf8_case_t utf8_cases[] = {
    U8("empty", "", 1),
    U8("ascii", "hello, world", 1),
    {"ascii with NUL", "a\0b", 3, 1},
    U8("2-byte min U+0080", "\xC2\x80", 1),
    U8("2-byte max U+07FF", "\xDF\xBF", 1),
    U8("3-byte min U+0800", "\xE0\xA0\x80", 1),
    U8("3-byte U+D7FF (before surrogates)", "\xED\x9F\xBF", 1),
    U8("3-byte U+E000 (after surrogates)", "\xEE\x80\x80", 1),
    U8("3-byte max U+FFFF", "\xEF\xBF\xBF", 1),
    U8("U+FFFD", "\xEF\xBF\xBD", 1),
    U8("4-byte min U+10000", "\xF0\x90\x80\x80", 1),
    U8("4-byte max U+10FFFF", "\xF4\x8F\xBF\xBF", 1),
    U8("mixed text", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 ok", 1),
    /* overlongs */
    U8("overlong '/' 2 bytes C0", "\xC0\xAF", 0),
    U8("overlong NUL 2 bytes C0 80", "\xC0\x80", 0),
    U8("overlong 2 bytes C1", "\xC1\xBF", 0),
    U8("overlong 3 bytes U+007F", "\xE0\x81\xBF", 0),
    U8("overlong 3 bytes U+07FF", "\xE0\x9F\xBF", 0),
    U8("overlong 4 bytes U+FFFF", "\xF0\x8F\xBF\xBF", 0),
    U8("overlong 4 bytes '/'", "\xF0\x80\x80\xAF", 0),
    /* surrogates */
    U8("high surrogate U+D800", "\xED\xA0\x80", 0),
    U8("low surrogate U+DFFF", "\xED\xBF\xBF", 0),
    U8("surrogate pair (CESU-8)", "\xED\xA0\xBD\xED\xB8\x80", 0),
    /* beyond U+10FFFF */
    U8("U+110000", "\xF4\x90\x80\x80", 0),
    U8("F5 lead", "\xF5\x80\x80\x80", 0),
    U8("F8 5-byte form", "\xF8\x88\x80\x80\x80", 0),
    U8("FC 6-byte form", "\xFC\x84\x80\x80\x80\x80", 0),
    U8("FE", "\xFE", 0),
    U8("FF", "\xFF", 0),
    /* continuation bytes without a lead */
    U8("lone continuation 80", "\x80", 0),
    U8("lone continuation BF", "a\xBF", 0),
    U8("extra continuation", "\xC3\xA9\xA9", 0),
    /* truncated sequences */
    U8("truncated 2-byte", "\xC3", 0),
    U8("truncated 3-byte after 1", "\xE2", 0),
    U8("truncated 3-byte after 2", "\xE2\x82", 0),
    U8("truncated 4-byte after 3", "\xF0\x9F\x98", 0),
    U8("truncated then ascii", "\xE2\x82z", 0),
    U8("lead followed by lead", "\xC3\xC3\xA9", 0),
    U8("valid then truncated at end", "ok \xF0\x9F\x98\x80 \xF0\x9F", 0),
};

Test(util, utf8_table)
{
    for (size_t i = 0; i < sizeof(utf8_cases) / sizeof(utf8_cases[0]); i++) {
        const utf8_case_t *c = &utf8_cases[i];
        cr_expect_eq(rq_utf8_valid(c->bytes, c->len), c->valid, "case '%s': expected %s", c->name,
                     c->valid ? "valid" : "invalid");
    }
}

Test(util, utf8_length_is_respected)
{
    /* Only the first `len` bytes count: a valid prefix of an invalid buffer is valid. */
    const char buf[] = "abc\xFF";
    cr_expect_eq(rq_utf8_valid(buf, 3), 1);
    cr_expect_eq(rq_utf8_valid(buf, 4), 0);
    /* A sequence cut by len is invalid even when the bytes after it would complete it. */
    const char euro[] = "\xE2\x82\xAC";
    cr_expect_eq(rq_utf8_valid(euro, 2), 0);
    cr_expect_eq(rq_utf8_valid(euro, 3), 1);
    cr_expect_eq(rq_utf8_valid(NULL, 0), 1);
}

Test(util, utf8_every_code_point_encodes_valid)
{
    /* Encode every scalar value and check it validates; surrogates must not. */
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
        unsigned char b[4];
        size_t n;
        if (cp < 0x80) {
            b[0] = (unsigned char)cp;
            n = 1;
        } else if (cp < 0x800) {
            b[0] = (unsigned char)(0xC0 | (cp >> 6));
            b[1] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 2;
        } else if (cp < 0x10000) {
            b[0] = (unsigned char)(0xE0 | (cp >> 12));
            b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            b[2] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 3;
        } else {
            b[0] = (unsigned char)(0xF0 | (cp >> 18));
            b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
            b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
            b[3] = (unsigned char)(0x80 | (cp & 0x3F));
            n = 4;
        }
        int want = !(cp >= 0xD800 && cp <= 0xDFFF);
        if (rq_utf8_valid((const char *)b, n) != want)
            cr_assert_fail("code point U+%04X: expected %s", (unsigned)cp,
                           want ? "valid" : "invalid");
    }
}

/* ---- ISO 8601 ---- */

Test(util, iso8601_known_epochs)
{
    static const struct {
        int64_t ms;
        const char *want;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1, "1970-01-01T00:00:00.001Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {1000, "1970-01-01T00:00:01.000Z"},
        {1700000000123LL, "2023-11-14T22:13:20.123Z"},
        {951782400000LL, "2000-02-29T00:00:00.000Z"}, /* leap day */
        {946684799999LL, "1999-12-31T23:59:59.999Z"},
        {2147483648000LL, "2038-01-19T03:14:08.000Z"}, /* past 32-bit time_t */
        {1798761599999LL, "2026-12-31T23:59:59.999Z"},
        {-1, "1969-12-31T23:59:59.999Z"}, /* floor, not truncation */
        {-1000, "1969-12-31T23:59:59.000Z"},
        {-86400001LL, "1969-12-30T23:59:59.999Z"},
        {253402300799999LL, "9999-12-31T23:59:59.999Z"}, /* last representable */
        {253402300800000LL, "9999-12-31T23:59:59.999Z"}, /* clamped */
        {INT64_MAX, "9999-12-31T23:59:59.999Z"},
        {-62167219200000LL, "0000-01-01T00:00:00.000Z"},
        {INT64_MIN, "0000-01-01T00:00:00.000Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[RQ_ISO8601_LEN + 1];
        memset(out, 'x', sizeof(out));
        char *r = rq_iso8601(cases[i].ms, out);
        cr_expect_eq(r, out);
        cr_expect_str_eq(out, cases[i].want, "epoch %lld", (long long)cases[i].ms);
        cr_expect_eq(strlen(out), RQ_ISO8601_LEN);
    }
}

Test(util, iso8601_now_matches_time)
{
    char out[RQ_ISO8601_LEN + 1];
    time_t before = time(NULL);
    rq_iso8601(rq_wall_ms(), out);
    time_t after = time(NULL);
    char a[32], b[32];
    struct tm tm;
    strftime(a, sizeof(a), "%Y-%m-%dT%H:%M:%S", gmtime_r(&before, &tm));
    strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", gmtime_r(&after, &tm));
    cr_expect(strncmp(out, a, 19) == 0 || strncmp(out, b, 19) == 0, "got %s, want %s or %s", out, a,
              b);
}

/* ---- clocks ---- */

Test(util, clocks)
{
    int64_t a = rq_mono_ns();
    int64_t am = rq_mono_ms();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    int64_t b = rq_mono_ns();
    int64_t bm = rq_mono_ms();
    cr_expect_geq(b - a, 20 * 1000 * 1000);
    cr_expect_lt(b - a, 2000LL * 1000 * 1000);
    cr_expect_geq(bm - am, 19);
    int64_t wall = rq_wall_ms();
    int64_t now = (int64_t)time(NULL) * 1000;
    cr_expect(wall >= now - 2000 && wall <= now + 2000, "wall %lld vs time() %lld", (long long)wall,
              (long long)now);
}

/* ---- UUID ---- */

static int is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

Test(util, uuid_format)
{
    for (int i = 0; i < 1000; i++) {
        char u[RQ_UUID_LEN + 1];
        memset(u, 'X', sizeof(u));
        rq_uuid(u);
        cr_assert_eq(strlen(u), RQ_UUID_LEN, "%s", u);
        for (int k = 0; k < RQ_UUID_LEN; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                cr_assert_eq(u[k], '-', "%s", u);
            else
                cr_assert(is_lower_hex(u[k]), "%s", u);
        }
        cr_assert_eq(u[14], '4', "version nibble of %s", u);
        cr_assert(strchr("89ab", u[19]) != NULL, "variant nibble of %s", u);
    }
}

Test(util, uuid_unique)
{
    enum { N = 20000 };
    rq_hmap_t *seen = rq_hmap_new(N);
    cr_assert_not_null(seen);
    for (int i = 0; i < N; i++) {
        char u[RQ_UUID_LEN + 1];
        rq_uuid(u);
        cr_assert_null(rq_hmap_get(seen, u), "duplicate uuid %s", u);
        cr_assert_eq(rq_hmap_put(seen, u, seen), 0);
    }
    cr_expect_eq(rq_hmap_len(seen), N);
    rq_hmap_free(seen);
}

/* ---- sleep ---- */

Test(util, sleep_full)
{
    int64_t t0 = rq_mono_ns();
    cr_expect_eq(rq_sleep_interruptible(0.12, NULL), 0);
    int64_t el = rq_mono_ns() - t0;
    cr_expect_geq(el, 120LL * 1000 * 1000);
    cr_expect_lt(el, 1000LL * 1000 * 1000);

    volatile int stop = 0;
    t0 = rq_mono_ns();
    cr_expect_eq(rq_sleep_interruptible(0.07, &stop), 0);
    cr_expect_geq(rq_mono_ns() - t0, 70LL * 1000 * 1000);
}

Test(util, sleep_zero_negative_nan)
{
    int64_t t0 = rq_mono_ns();
    cr_expect_eq(rq_sleep_interruptible(0, NULL), 0);
    cr_expect_eq(rq_sleep_interruptible(-5, NULL), 0);
    cr_expect_eq(rq_sleep_interruptible(NAN, NULL), 0);
    cr_expect_lt(rq_mono_ns() - t0, 50LL * 1000 * 1000);
}

Test(util, sleep_stop_already_set)
{
    volatile int stop = 1;
    int64_t t0 = rq_mono_ns();
    cr_expect_eq(rq_sleep_interruptible(5.0, &stop), -1);
    cr_expect_lt(rq_mono_ns() - t0, 50LL * 1000 * 1000);
}

static void *set_stop_later(void *arg)
{
    struct timespec ts = {0, 150 * 1000 * 1000};
    nanosleep(&ts, NULL);
    *(volatile int *)arg = 1;
    return NULL;
}

Test(util, sleep_interrupted_by_other_thread)
{
    volatile int stop = 0;
    pthread_t th;
    int64_t t0 = rq_mono_ns();
    cr_assert_eq(pthread_create(&th, NULL, set_stop_later, (void *)&stop), 0);
    int r = rq_sleep_interruptible(10.0, &stop);
    int64_t el = rq_mono_ns() - t0;
    pthread_join(th, NULL);
    cr_expect_eq(r, -1);
    cr_expect_geq(el, 150LL * 1000 * 1000);
    /* Polled every 50 ms: returns well before the 10 s. */
    cr_expect_lt(el, 1000LL * 1000 * 1000, "took %lld ms", (long long)(el / 1000000));
}
