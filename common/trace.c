/* trace.c - W3C trace context (see trace.h). */
#include "trace.h"

#include <string.h>

#include "util.h"

static int lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* 1 when s[0..n) is lowercase hex and, with nonzero, not all '0'. */
static int hex_field(const char *s, size_t n, int nonzero)
{
    int any = 0;

    for (size_t i = 0; i < n; i++) {
        if (!lower_hex(s[i]))
            return 0;
        any |= s[i] != '0';
    }
    return !nonzero || any;
}

int rq_traceparent_valid(const char *tp, size_t len)
{
    if (tp == NULL || len < RQ_TRACEPARENT_LEN)
        return 0;
    if (!hex_field(tp, 2, 0) || memcmp(tp, "ff", 2) == 0)
        return 0;
    if (memcmp(tp, "00", 2) == 0 ? len != RQ_TRACEPARENT_LEN
                                 : len > RQ_TRACEPARENT_LEN && tp[RQ_TRACEPARENT_LEN] != '-')
        return 0;
    return tp[2] == '-' && tp[35] == '-' && tp[52] == '-' && hex_field(tp + 3, 32, 1) &&
           hex_field(tp + 36, 16, 1) && hex_field(tp + 53, 2, 0);
}

int rq_tracestate_valid(const char *ts, size_t len)
{
    if (ts == NULL || len == 0 || len > RQ_TRACESTATE_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (ts[i] < 0x20 || ts[i] > 0x7e)
            return 0;
    return 1;
}

/* n random bytes as 2n lowercase hex characters, never all zero. */
static void random_hex(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];

    rq_random_bytes(b, n);
    b[0] |= 1;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
}

void rq_traceparent_child(const char *parent, size_t parent_len, char out[RQ_TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    if (rq_traceparent_valid(parent, parent_len)) {
        memcpy(out + 3, parent + 3, 32);
        memcpy(out + 53, parent + 53, 2);
    } else {
        random_hex(out + 3, 16);
        memcpy(out + 53, "01", 2);
    }
    out[35] = '-';
    random_hex(out + 36, 8);
    out[52] = '-';
    out[RQ_TRACEPARENT_LEN] = '\0';
}
