/* jbuf.c - compact JSON written as jansson writes it, into one growing buffer. */
#include "jbuf.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rq_jbuf_init(rq_jbuf_t *b, size_t hint)
{
    b->p = NULL;
    b->len = 0;
    b->cap = hint < 64 ? 64 : hint;
    b->failed = 0;
}

/* Room for n more bytes and the NUL. Returns 0, or -1 (failed, sticky). */
static int reserve(rq_jbuf_t *b, size_t n)
{
    size_t need, cap;
    char *np;

    if (b->failed)
        return -1;
    need = b->len + n + 1;
    if (b->p != NULL && need <= b->cap)
        return 0;
    cap = b->cap;
    while (cap < need)
        cap *= 2;
    np = realloc(b->p, cap);
    if (np == NULL) {
        free(b->p);
        b->p = NULL;
        b->len = 0;
        b->failed = 1;
        return -1;
    }
    b->p = np;
    b->cap = cap;
    return 0;
}

void rq_jbuf_raw(rq_jbuf_t *b, const char *s, size_t n)
{
    if (reserve(b, n) != 0)
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void rq_jbuf_truncate(rq_jbuf_t *b, size_t len)
{
    if (b->failed || len > b->len)
        return;
    b->len = len;
    if (b->p != NULL)
        b->p[len] = '\0';
}

void rq_jbuf_lit(rq_jbuf_t *b, const char *s)
{
    rq_jbuf_raw(b, s, strlen(s));
}

/* The length of the UTF-8 sequence at s[0..n) (1..4), or 0 when it is not valid: jansson's
 * utf8_check_first and utf8_check_full. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t v;

    if (c < 0x80)
        return 1;
    if (c < 0xC2 || c > 0xF4) /* a continuation byte, an overlong 2-byte start, > U+10FFFF */
        return 0;
    len = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (len > n)
        return 0;
    v = c & (len == 2 ? 0x1Fu : len == 3 ? 0x0Fu : 0x07u);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    if ((len == 3 && v < 0x800) || (len == 4 && v < 0x10000)) /* overlong */
        return 0;
    return len;
}

int rq_jbuf_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t k = u[i] < 0x80 ? 1 : utf8_seq(u + i, n - i);
        if (k == 0)
            return 0;
        i += k;
    }
    return 1;
}

int rq_jbuf_str(rq_jbuf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *u = (const unsigned char *)s;
    size_t run = 0;

    if (!rq_jbuf_utf8_valid(s, n))
        return -1;
    /* at worst 6 bytes per input byte, and the quotes */
    if (reserve(b, n * 6 + 2) != 0)
        return 0;
    b->p[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        char *w;
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        memcpy(b->p + b->len, s + i - run, run);
        b->len += run;
        run = 0;
        w = b->p + b->len;
        w[0] = '\\';
        switch (c) {
        case '"':
        case '\\':
            w[1] = (char)c;
            break;
        case '\b':
            w[1] = 'b';
            break;
        case '\f':
            w[1] = 'f';
            break;
        case '\n':
            w[1] = 'n';
            break;
        case '\r':
            w[1] = 'r';
            break;
        case '\t':
            w[1] = 't';
            break;
        default:
            memcpy(w + 1, "u00", 3);
            w[4] = hex[c >> 4];
            w[5] = hex[c & 15];
            b->len += 4;
            break;
        }
        b->len += 2;
    }
    memcpy(b->p + b->len, s + n - run, run);
    b->len += run;
    b->p[b->len++] = '"';
    b->p[b->len] = '\0';
    return 0;
}

int rq_jbuf_real(rq_jbuf_t *b, double v)
{
    char text[40], *start, *end;
    int n;
    size_t len;

    if (!isfinite(v))
        return -1;
    if (v == 0 && !signbit(v)) {
        rq_jbuf_raw(b, "0.0", 3);
        return 0;
    }
    /* jansson's jsonp_dtostr(), precision 17, in the C locale (the services never set one) */
    n = snprintf(text, sizeof(text), "%.17g", v);
    if (n < 0 || (size_t)n >= sizeof(text) - 3)
        return -1;
    len = (size_t)n;
    if (strchr(text, '.') == NULL && strchr(text, 'e') == NULL) {
        memcpy(text + len, ".0", 3);
        len += 2;
    }
    start = strchr(text, 'e');
    if (start != NULL) {
        start++;
        end = start + 1;
        if (*start == '-')
            start++;
        while (*end == '0')
            end++;
        if (end != start) {
            memmove(start, end, len - (size_t)(end - text) + 1);
            len -= (size_t)(end - start);
        }
    }
    rq_jbuf_raw(b, text, len);
    return 0;
}

void rq_jbuf_int(rq_jbuf_t *b, long long v)
{
    char text[24], *p = text + sizeof(text);
    /* the magnitude in unsigned arithmetic: -LLONG_MIN does not fit a long long */
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

    do { /* digits from the right: no snprintf on the hot path (issue 20) */
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *--p = '-';
    rq_jbuf_raw(b, p, (size_t)(text + sizeof(text) - p));
}

char *rq_jbuf_take(rq_jbuf_t *b, size_t *len)
{
    char *p;

    if (!b->failed && b->p == NULL && reserve(b, 0) == 0)
        b->p[0] = '\0'; /* an empty text is still a string */
    p = b->failed ? NULL : b->p;
    if (p != NULL && len != NULL)
        *len = b->len;
    b->p = NULL;
    b->len = 0;
    b->failed = 0;
    return p;
}

void rq_jbuf_free(rq_jbuf_t *b)
{
    free(b->p);
    b->p = NULL;
    b->len = 0;
    b->failed = 0;
}
