/* json_scan.c - the validating scanner (json_scan.h); moved out of the request parser's
 * fast path (producer/api/request.c) so that the leaser can use it too. */
#include "json_scan.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"
#include "json_span.h"

typedef struct scan {
    const char *p, *end;
    size_t max_depth; /* 0: none */
    unsigned flags;
    size_t nkeys;
    rq_json_span_t keys[RQ_JSON_SCAN_MAX_KEYS];
} scan_t;

static int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static void skip_ws(scan_t *s)
{
    while (s->p < s->end && is_ws(*s->p))
        s->p++;
}

/* A string without escapes at s->p (the opening quote): its contents into *out. 0 or -1. */
static int scan_string(scan_t *s, rq_json_span_t *out)
{
    const char *q = s->p + 1;
    int ascii = 1;

    for (; q < s->end; q++) {
        unsigned char ch = (unsigned char)*q;
        if (ch == '"')
            break;
        if (ch < 0x20 || ch == '\\')
            return -1;
        ascii &= ch < 0x80;
    }
    if (q >= s->end)
        return -1;
    out->p = s->p + 1;
    out->len = (size_t)(q - out->p);
    if (!ascii && !rq_jbuf_utf8_valid(out->p, out->len))
        return -1;
    s->p = q + 1;
    return 0;
}

/* A number token at s->p in the JSON grammar, whose value strtod() reads as finite (jansson
 * refuses an overflow) and, for an integer token unless RQ_JSON_SCAN_INT_AS_REAL, that
 * strtoll() reads without overflow (as jansson's loader). Returns 0, or -1. */
static int scan_number(scan_t *s)
{
    const char *q = s->p, *e = s->end;
    char text[RQ_JSON_SCAN_NUM_MAX + 1];
    int integer = 1;
    double v;
    size_t n;

    if (q < e && *q == '-')
        q++;
    if (q >= e || *q < '0' || *q > '9')
        return -1;
    if (*q == '0') {
        q++;
        if (q < e && *q >= '0' && *q <= '9')
            return -1; /* a leading zero */
    } else {
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < e && *q == '.') {
        integer = 0;
        q++;
        if (q >= e || *q < '0' || *q > '9')
            return -1;
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < e && (*q == 'e' || *q == 'E')) {
        integer = 0;
        q++;
        if (q < e && (*q == '+' || *q == '-'))
            q++;
        if (q >= e || *q < '0' || *q > '9')
            return -1;
        while (q < e && *q >= '0' && *q <= '9')
            q++;
    }
    n = (size_t)(q - s->p);
    if (n > RQ_JSON_SCAN_NUM_MAX)
        return -1;
    memcpy(text, s->p, n);
    text[n] = '\0';
    if (integer && !(s->flags & RQ_JSON_SCAN_INT_AS_REAL)) {
        errno = 0;
        (void)strtoll(text, NULL, 10);
        if (errno == ERANGE)
            return -1;
    } else {
        v = strtod(text, NULL);
        if (!isfinite(v))
            return -1;
    }
    s->p = q;
    return 0;
}

static int scan_literal(scan_t *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return -1;
    s->p += n;
    return 0;
}

static int scan_value(scan_t *s, size_t depth);

/* An object at s->p ('{'), nested `depth` levels deep. 0 or -1. */
static int scan_object(scan_t *s, size_t depth)
{
    size_t first = s->nkeys;

    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return 0;
    }
    for (;;) {
        rq_json_span_t key;
        if (s->p >= s->end || *s->p != '"' || scan_string(s, &key) != 0)
            return -1;
        for (size_t i = first; i < s->nkeys; i++)
            if (s->keys[i].len == key.len && memcmp(s->keys[i].p, key.p, key.len) == 0)
                return -1; /* a duplicate: jansson's error text */
        if (s->nkeys >= RQ_JSON_SCAN_MAX_KEYS)
            return -1;
        s->keys[s->nkeys++] = key;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return -1;
        s->p++;
        skip_ws(s);
        if (scan_value(s, depth) != 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            s->nkeys = first;
            return 0;
        }
        return -1;
    }
}

static int scan_array(scan_t *s, size_t depth)
{
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == ']') {
        s->p++;
        return 0;
    }
    for (;;) {
        if (scan_value(s, depth) != 0)
            return -1;
        skip_ws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            skip_ws(s);
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return 0;
        }
        return -1;
    }
}

/* A value at s->p (no whitespace before it), inside `depth` levels of nesting. 0 or -1.
 * Recursion is bounded by RQ_JSON_SCAN_MAX_DEPTH. */
static int scan_value(scan_t *s, size_t depth)
{
    rq_json_span_t str;

    if (s->p >= s->end)
        return -1;
    switch (*s->p) {
    case '{':
    case '[':
        if (depth + 1 > RQ_JSON_SCAN_MAX_DEPTH || (s->max_depth > 0 && depth + 1 > s->max_depth))
            return -1;
        return *s->p == '{' ? scan_object(s, depth + 1) : scan_array(s, depth + 1);
    case '"':
        return scan_string(s, &str);
    case 't':
        return scan_literal(s, "true", 4);
    case 'f':
        return scan_literal(s, "false", 5);
    case 'n':
        return scan_literal(s, "null", 4);
    default:
        return scan_number(s);
    }
}

int rq_json_scan_valid(const char *text, size_t len, size_t max_depth, unsigned flags)
{
    scan_t s;

    s.p = text;
    s.end = text + len;
    s.max_depth = max_depth;
    s.flags = flags;
    s.nkeys = 0;
    return len > 0 && scan_value(&s, 0) == 0 && s.p == s.end;
}
