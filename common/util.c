/* util.c - time, ids, UTF-8 validation, an interruptible sleep, and the error helpers. */
#include "util.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/types.h>
#include <time.h>
#include <uuid/uuid.h>

int64_t rq_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t rq_mono_ms(void)
{
    return rq_mono_ns() / 1000000;
}

int64_t rq_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes `v` (0 <= v < 10^width) as exactly `width` decimal digits. */
static char *put_digits(char *p, int v, int width)
{
    assert(v >= 0 && width > 0);
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

/* Years 0000..9999 are all ISO 8601 allows without an expanded representation. */
#define RQ_ISO_MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define RQ_ISO_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

char *rq_iso8601(int64_t epoch_ms, char *out)
{
    if (epoch_ms < RQ_ISO_MIN_MS)
        epoch_ms = RQ_ISO_MIN_MS;
    if (epoch_ms > RQ_ISO_MAX_MS)
        epoch_ms = RQ_ISO_MAX_MS;
    /* Floor division so that times before 1970 get a positive millisecond part. */
    int64_t secs = epoch_ms / 1000;
    int64_t ms = epoch_ms % 1000;
    if (ms < 0) {
        ms += 1000;
        secs -= 1;
    }
    time_t t = (time_t)secs;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        tm = (struct tm){.tm_year = 70, .tm_mday = 1};
        ms = 0;
    }
    char *p = out;
    p = put_digits(p, tm.tm_year + 1900, 4);
    *p++ = '-';
    p = put_digits(p, tm.tm_mon + 1, 2);
    *p++ = '-';
    p = put_digits(p, tm.tm_mday, 2);
    *p++ = 'T';
    p = put_digits(p, tm.tm_hour, 2);
    *p++ = ':';
    p = put_digits(p, tm.tm_min, 2);
    *p++ = ':';
    /* A leap second (60) is left as gmtime reports it. */
    p = put_digits(p, tm.tm_sec, 2);
    *p++ = '.';
    p = put_digits(p, (int)ms, 3);
    *p++ = 'Z';
    assert(p - out == RQ_ISO8601_LEN); /* years 0000..9999 keep the width fixed */
    *p = '\0';
    return out;
}

/* A per-thread xoshiro256** generator seeded from getrandom(2). libuuid's
 * uuid_generate_random() re-reads the kernel's entropy and re-seeds random(3) on every call
 * (getpid, getuid, srandom: about 5 % of the producer's CPU at load); ids need uniqueness,
 * not secrecy, and 122 random bits from a well-seeded generator give that. Not fork-safe
 * (a child would repeat the parent's sequence); the services never fork. */
static _Thread_local uint64_t rng[4];
static _Thread_local int rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    uint64_t result, t;

    if (!rng_seeded) {
        if (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng)) {
            uuid_t u; /* getrandom unavailable: fall back to libuuid once for the seed */
            uuid_generate(u);
            memcpy(rng, u, sizeof(u));
            uuid_generate(u);
            memcpy(&rng[2], u, sizeof(u));
        }
        rng[0] |= 1; /* never all zero */
        rng_seeded = 1;
    }
    result = rotl(rng[1] * 5, 7) * 9;
    t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return result;
}

void rq_random_bytes(void *buf, size_t n)
{
    unsigned char *b = buf;

    while (n > 0) {
        uint64_t r = rng_next();
        size_t k = n < sizeof(r) ? n : sizeof(r);

        memcpy(b, &r, k);
        b += k;
        n -= k;
    }
}

void rq_uuid(char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    uint64_t a = rng_next(), c = rng_next();
    int j = 0;

    memcpy(b, &a, 8);
    memcpy(b + 8, &c, 8);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 10 */
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[j++] = '-';
        out[j++] = hex[b[i] >> 4];
        out[j++] = hex[b[i] & 15];
    }
    assert(j == RQ_UUID_LEN);
    out[j] = '\0';
}

/* Well-formed UTF-8 byte sequences, Unicode 15 table 3-7. */
int rq_utf8_valid(const char *buf, size_t len)
{
    const unsigned char *s = (const unsigned char *)buf;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
            if (c == 0xE0)
                lo = 0xA0; /* overlong */
            else if (c == 0xED)
                hi = 0x9F; /* surrogates U+D800..U+DFFF */
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
            if (c == 0xF0)
                lo = 0x90; /* overlong */
            else if (c == 0xF4)
                hi = 0x8F; /* above U+10FFFF */
        } else {
            return 0; /* continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        assert(i < len && n >= 2 && n <= 4);
        if (len - i < n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        }
        i += n;
    }
    return 1;
}

#define RQ_SLEEP_POLL_NS 50000000LL
#define RQ_SLEEP_MAX_S 1e9 /* ~31 years; keeps the nanosecond arithmetic in range */

int rq_sleep_interruptible(double seconds, volatile int *stop)
{
    if (!(seconds > 0)) /* also NaN */
        seconds = 0;
    if (seconds > RQ_SLEEP_MAX_S)
        seconds = RQ_SLEEP_MAX_S;
    int64_t deadline = rq_mono_ns() + (int64_t)(seconds * 1e9);
    for (;;) {
        int64_t now = rq_mono_ns();
        if (now >= deadline)
            return 0;
        if (stop && *stop)
            return -1;
        int64_t chunk = deadline - now;
        if (chunk > RQ_SLEEP_POLL_NS)
            chunk = RQ_SLEEP_POLL_NS;
        struct timespec ts = {.tv_sec = (time_t)(chunk / 1000000000),
                              .tv_nsec = (long)(chunk % 1000000000)};
        /* EINTR just means the loop re-checks the clock and the flag sooner. */
        (void)nanosleep(&ts, NULL);
    }
}

int rq_verrf(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err == NULL || errlen == 0)
        return -1;
    if (vsnprintf(err, errlen, fmt, ap) < 0)
        err[0] = '\0'; /* an encoding error: an empty text, not a stale one */
    return -1;
}

int rq_errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    rq_verrf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* strerror_r() is the XSI one (returns int, fills buf) under our _POSIX_C_SOURCE, the GNU one
 * (returns char *, which may point elsewhere) when a translation unit defines _GNU_SOURCE.
 * _Generic picks the matching reader, so this compiles and is right either way. */
static const char *strerror_xsi(int rc, char *buf, size_t len, int errnum)
{
    /* Failure: EINVAL (unknown number; glibc still writes "Unknown error N") or ERANGE
     * (cut, still NUL-terminated); older glibc returns -1 and sets errno instead. */
    if (rc != 0 && buf[0] == '\0')
        snprintf(buf, len, "Unknown error %d", errnum);
    return buf;
}

static const char *strerror_gnu(const char *s, char *buf, size_t len, int errnum)
{
    (void)errnum;
    if (s != buf)
        snprintf(buf, len, "%s", s ? s : "");
    return buf;
}

const char *rq_strerror(int errnum, char *buf, size_t len)
{
    int saved = errno;

    if (buf == NULL || len == 0)
        return "";
    buf[0] = '\0';
    _Generic(strerror_r(errnum, buf, len), int: strerror_xsi, char *: strerror_gnu)(
        strerror_r(errnum, buf, len), buf, len, errnum);
    buf[len - 1] = '\0';
    errno = saved;
    return buf;
}

void rq_thread_name(const char *name)
{
    char cut[16];

    snprintf(cut, sizeof(cut), "%s", name != NULL ? name : "");
    (void)prctl(PR_SET_NAME, cut, 0, 0, 0);
}
