/* json_span.c - byte spans of values inside a JSON text (see json_span.h). */
#include "json_span.h"

#include <stdint.h>
#include <string.h>

#define BAD SIZE_MAX

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t skip_ws(const char *t, size_t len, size_t i)
{
    while (i < len && is_ws(t[i]))
        i++;
    return i;
}

/* The index just past the string whose opening quote is t[i], or BAD. */
static size_t string_end(const char *t, size_t len, size_t i)
{
    for (i++; i < len; i++) {
        if (t[i] == '\\')
            i++; /* the escaped character, a quote included */
        else if (t[i] == '"')
            return i + 1;
    }
    return BAD;
}

/* The index just past the value starting at t[i] (no whitespace before it), or BAD. Nested
 * arrays and objects are skipped by counting brackets outside strings: on a text jansson
 * accepted, brackets balance. */
static size_t value_end(const char *t, size_t len, size_t i)
{
    size_t depth = 0;

    if (i >= len)
        return BAD;
    if (t[i] == '"')
        return string_end(t, len, i);
    if (t[i] != '{' && t[i] != '[') {
        size_t start = i;

        while (i < len && !is_ws(t[i]) && t[i] != ',' && t[i] != ']' && t[i] != '}' && t[i] != ':')
            i++;
        return i > start ? i : BAD;
    }
    for (; i < len; i++) {
        if (t[i] == '"') {
            i = string_end(t, len, i);
            if (i == BAD)
                return BAD;
            i--; /* the loop's increment steps past the closing quote */
        } else if (t[i] == '{' || t[i] == '[') {
            depth++;
        } else if (t[i] == '}' || t[i] == ']') {
            if (--depth == 0)
                return i + 1;
        }
    }
    return BAD;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 1 when the JSON string body s[0..n) (between the quotes) decodes to the ASCII `key`. */
static int key_equals(const char *s, size_t n, const char *key)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++) {
        unsigned cp = (unsigned char)s[i];

        if (s[i] == '\\') {
            if (++i >= n)
                return 0;
            switch (s[i]) {
            case 'b':
                cp = '\b';
                break;
            case 'f':
                cp = '\f';
                break;
            case 'n':
                cp = '\n';
                break;
            case 'r':
                cp = '\r';
                break;
            case 't':
                cp = '\t';
                break;
            case 'u':
                if (n - i < 5)
                    return 0;
                cp = 0;
                for (int h = 1; h <= 4; h++) {
                    int v = hexval(s[i + h]);
                    if (v < 0)
                        return 0;
                    cp = cp << 4 | (unsigned)v;
                }
                i += 4;
                break;
            default:
                cp = (unsigned char)s[i];
                break; /* \" \\ \/ */
            }
        }
        /* a non-ASCII character never equals an ASCII key */
        if (cp == 0 || cp > 0x7f || key[k] == '\0' || (unsigned char)key[k] != cp)
            return 0;
        k++;
    }
    return key[k] == '\0';
}

rq_json_span_t rq_json_trim(const char *text, size_t len)
{
    size_t a = skip_ws(text, len, 0);
    size_t b = len;

    while (b > a && is_ws(text[b - 1]))
        b--;
    return (rq_json_span_t){text + a, b - a};
}

int rq_json_member(const char *text, size_t len, const char *key, rq_json_span_t *out)
{
    size_t i = skip_ws(text, len, 0);
    int found = 0;

    if (i >= len || text[i] != '{')
        return -1;
    i = skip_ws(text, len, i + 1);
    if (i < len && text[i] == '}')
        return 0;
    while (i < len && text[i] == '"') {
        size_t kend = string_end(text, len, i);
        size_t vstart, vend;
        int match;

        if (kend == BAD)
            return found;
        match = key_equals(text + i + 1, kend - i - 2, key);
        i = skip_ws(text, len, kend);
        if (i >= len || text[i] != ':')
            return found;
        vstart = skip_ws(text, len, i + 1);
        vend = value_end(text, len, vstart);
        if (vend == BAD)
            return found;
        if (match) {
            out->p = text + vstart;
            out->len = vend - vstart;
            found = 1;
        }
        i = skip_ws(text, len, vend);
        if (i >= len || text[i] != ',')
            return found;
        i = skip_ws(text, len, i + 1);
    }
    return found;
}

long rq_json_elements(const char *text, size_t len, rq_json_span_t *out, size_t max)
{
    size_t i = skip_ws(text, len, 0);
    long n = 0;

    if (i >= len || text[i] != '[')
        return -1;
    i = skip_ws(text, len, i + 1);
    if (i < len && text[i] == ']')
        return 0;
    while (i < len) {
        size_t end = value_end(text, len, i);

        if (end == BAD)
            return n;
        if ((size_t)n < max)
            out[n] = (rq_json_span_t){text + i, end - i};
        n++;
        i = skip_ws(text, len, end);
        if (i >= len || text[i] != ',')
            return n;
        i = skip_ws(text, len, i + 1);
    }
    return n;
}

int rq_json_is_integer_token(rq_json_span_t s)
{
    size_t i = 0;

    if (s.len > 0 && s.p[0] == '-')
        i++;
    if (i == s.len)
        return 0;
    for (; i < s.len; i++)
        if (s.p[i] < '0' || s.p[i] > '9')
            return 0;
    return 1;
}

int rq_json_too_deep(const char *buf, size_t len, size_t max_depth)
{
    size_t depth = 0;
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (in_string) {
            if (ch == '\\')
                i++; /* skip the escaped character, a quote included */
            else if (ch == '"')
                in_string = 0;
        } else if (ch == '"') {
            in_string = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max_depth)
                return 1;
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}
