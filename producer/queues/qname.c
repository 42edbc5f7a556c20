/* qname.c - queue names (see qname.h). */
#include "qname.h"

#include <stdio.h>
#include <string.h>

/* 1 when s ends in "<suffix><one or more digits>". */
static int ends_with_numbered(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix), d = 0;

    while (d < n && s[n - 1 - d] >= '0' && s[n - 1 - d] <= '9')
        d++;
    return d > 0 && n >= d + k && memcmp(s + n - d - k, suffix, k) == 0;
}

int rq_qname_check(const char *name, char *err, size_t errlen)
{
    size_t n = name != NULL ? strlen(name) : 0;

    if (n == 0 || n > RQ_QNAME_MAX) {
        snprintf(err, errlen, "a queue name has 1 to %d characters", RQ_QNAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-')) {
            snprintf(err, errlen,
                     "a queue name has only the characters A-Z a-z 0-9 . _ - (position %zu)",
                     i + 1);
            return -1;
        }
    }
    if (name[0] == '.') {
        snprintf(err, errlen, "a queue name may not start with '.'");
        return -1;
    }
    if (strncmp(name, "amq.", 4) == 0 || strncmp(name, "relayq.", 7) == 0) {
        snprintf(err, errlen, "the prefixes amq. and relayq. are reserved");
        return -1;
    }
    if ((n >= 4 && strcmp(name + n - 4, ".dlq") == 0) || ends_with_numbered(name, n, ".retry.") ||
        ends_with_numbered(name, n, ".delay.")) {
        snprintf(err, errlen,
                 "the suffixes .dlq, .retry.<n> and .delay.<n> are reserved for the queues "
                 "relayq derives from a queue");
        return -1;
    }
    return 0;
}

long long rq_qname_delay_bucket(long long ms)
{
    long long scale = 1;

    if (ms < 1 || ms > RQ_DELAY_MAX_MS)
        return 0;
    while (ms / scale >= 100)
        scale *= 10;
    return (ms + scale - 1) / scale * scale;
}

char *rq_qname_dlq(const char *q, char *buf, size_t len)
{
    snprintf(buf, len, "%s.dlq", q);
    return buf;
}

char *rq_qname_delay(const char *q, long long bucket_ms, char *buf, size_t len)
{
    snprintf(buf, len, "%s.delay.%lld", q, bucket_ms);
    return buf;
}
