/* log.c - JSON-lines logging on stderr.
 *
 * A record is formatted into one buffer and written with one write(2) so that records of
 * concurrent threads (and processes sharing stderr) do not interleave mid-line. The message
 * is escaped so the line is always valid JSON: control characters become escapes and bytes
 * that are not well-formed UTF-8 become U+FFFD.
 */
#include "log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "util.h"

#define RQ_LOG_SERVICE_MAX 31
#define RQ_LOG_STACK_MSG 1024
#define RQ_LOG_STACK_LINE 4096

static char log_service[RQ_LOG_SERVICE_MAX + 1] = "relayq";
static atomic_int log_min_level = RQ_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void rq_log_init(const char *service, rq_log_level_t level)
{
    if (service) {
        size_t n = strlen(service);
        if (n > RQ_LOG_SERVICE_MAX)
            n = RQ_LOG_SERVICE_MAX;
        memcpy(log_service, service, n);
        log_service[n] = '\0';
    }
    if ((int)level < RQ_LOG_DEBUG)
        level = RQ_LOG_DEBUG;
    if ((int)level > RQ_LOG_ERROR)
        level = RQ_LOG_ERROR;
    atomic_store(&log_min_level, (int)level);
}

int rq_log_level_parse(const char *text, rq_log_level_t *out)
{
    static const struct {
        const char *name;
        rq_log_level_t level;
    } table[] = {
        /* The names of Python's logging, syslog and log4j map onto the nearest level. */
        {"debug", RQ_LOG_DEBUG}, {"trace", RQ_LOG_DEBUG}, {"info", RQ_LOG_INFO},
        {"notice", RQ_LOG_INFO}, {"warn", RQ_LOG_WARN},   {"warning", RQ_LOG_WARN},
        {"error", RQ_LOG_ERROR}, {"err", RQ_LOG_ERROR},   {"critical", RQ_LOG_ERROR},
        {"crit", RQ_LOG_ERROR},  {"fatal", RQ_LOG_ERROR},
    };
    if (!text || !out)
        return -1;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        if (strcasecmp(text, table[i].name) == 0) {
            *out = table[i].level;
            return 0;
        }
    }
    return -1;
}

const char *rq_log_level_name(rq_log_level_t level)
{
    if ((int)level < RQ_LOG_DEBUG || (int)level > RQ_LOG_ERROR)
        return "unknown";
    return level_names[level];
}

int rq_log_enabled(rq_log_level_t level)
{
    return (int)level >= atomic_load_explicit(&log_min_level, memory_order_relaxed);
}

/* Length of the well-formed UTF-8 sequence at s[0..len) (len >= 1), or 0 when it is not
 * well-formed; then *bad receives the length of its maximal valid prefix (at least 1), which
 * is replaced by one U+FFFD (the Unicode "maximal subpart" practice). */
static size_t utf8_seq(const unsigned char *s, size_t len, size_t *bad)
{
    unsigned char c = s[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t k = 1;
    for (; k < n && k < len; k++) {
        unsigned char b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80)
            break;
    }
    if (k == n)
        return n;
    *bad = k;
    return 0;
}

/* Upper bound of the escaped size of `len` message bytes. */
#define RQ_ESC_MAX(len) ((len)*6)

/* JSON-escapes src[0..len) into dst (room for RQ_ESC_MAX(len) bytes); returns bytes written. */
static size_t json_escape(char *dst, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)src;
    char *p = dst;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t bad = 0;
            size_t n = utf8_seq(s + i, len - i, &bad);
            if (n) {
                memcpy(p, s + i, n);
                p += n;
                i += n;
            } else {
                memcpy(p, "\xEF\xBF\xBD", 3); /* U+FFFD */
                p += 3;
                i += bad;
            }
            continue;
        }
        switch (c) {
        case '"':
            *p++ = '\\';
            *p++ = '"';
            break;
        case '\\':
            *p++ = '\\';
            *p++ = '\\';
            break;
        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            break;
        case '\r':
            *p++ = '\\';
            *p++ = 'r';
            break;
        case '\t':
            *p++ = '\\';
            *p++ = 't';
            break;
        default:
            if (c < 0x20 || c == 0x7F) {
                memcpy(p, "\\u00", 4);
                p[4] = hex[c >> 4];
                p[5] = hex[c & 0xF];
                p += 6;
            } else {
                *p++ = (char)c;
            }
        }
        i++;
    }
    return (size_t)(p - dst);
}

/* Writes all of buf to stderr; a short write (signal, full pipe) is completed. */
static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(STDERR_FILENO, buf, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += w;
        len -= (size_t)w;
    }
}

/* The trace id of this thread's current message ("" for none): rq_log_set_trace(). */
static _Thread_local char log_trace[33];

void rq_log_set_trace(const char *trace_id, size_t len)
{
    if (trace_id == NULL || len == 0) {
        log_trace[0] = '\0';
        return;
    }
    if (len > sizeof(log_trace) - 1)
        len = sizeof(log_trace) - 1;
    memcpy(log_trace, trace_id, len);
    log_trace[len] = '\0';
}

void rq_logv(rq_log_level_t level, const char *fmt, va_list ap)
{
    if (!rq_log_enabled(level) || !fmt)
        return;
    int saved_errno = errno; /* callers often log strerror(errno) and then test errno */
    char msg_stack[RQ_LOG_STACK_MSG];
    char line_stack[RQ_LOG_STACK_LINE];
    char *msg = msg_stack, *line = line_stack;

    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(msg_stack, sizeof(msg_stack), fmt, ap);
    if (n < 0) {
        va_end(ap2);
        goto out;
    }
    size_t msg_len = (size_t)n;
    if (msg_len >= sizeof(msg_stack)) {
        msg = malloc(msg_len + 1);
        if (msg)
            vsnprintf(msg, msg_len + 1, fmt, ap2);
        else {
            msg = msg_stack; /* out of memory: keep what fits */
            msg_len = sizeof(msg_stack) - 1;
        }
    }
    va_end(ap2);

    char ts[RQ_ISO8601_LEN + 1];
    rq_iso8601(rq_wall_ms(), ts);
    const char *lvl = rq_log_level_name(level);
    size_t svc_len = strlen(log_service);
    /* {"ts":"","level":"","service":"","msg":""}\n is 43 bytes; 64 leaves slack. */
    size_t cap = 64 + RQ_ISO8601_LEN + strlen(lvl) + RQ_ESC_MAX(svc_len) + RQ_ESC_MAX(msg_len) +
                 14 + RQ_ESC_MAX(sizeof(log_trace));
    if (cap > sizeof(line_stack)) {
        line = malloc(cap);
        if (!line) {
            line = line_stack;
            cap = sizeof(line_stack);
            /* Out of memory: shorten the message so the record still fits. */
            size_t room = (cap - 64 - RQ_ISO8601_LEN - strlen(lvl) - RQ_ESC_MAX(svc_len) - 14 -
                           RQ_ESC_MAX(sizeof(log_trace))) /
                          6;
            if (msg_len > room)
                msg_len = room;
        }
    }

    char *p = line;
    p += snprintf(p, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"service\":\"", ts, lvl);
    p += json_escape(p, log_service, svc_len);
    if (log_trace[0] != '\0') {
        memcpy(p, "\",\"trace_id\":\"", 14);
        p += 14;
        p += json_escape(p, log_trace, strlen(log_trace));
    }
    memcpy(p, "\",\"msg\":\"", 9);
    p += 9;
    p += json_escape(p, msg, msg_len);
    memcpy(p, "\"}\n", 3);
    p += 3;
    write_all(line, (size_t)(p - line));

out:
    if (line != line_stack)
        free(line);
    if (msg != msg_stack)
        free(msg);
    errno = saved_errno;
}

void rq_log(rq_log_level_t level, const char *fmt, ...)
{
    if (!rq_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    rq_logv(level, fmt, ap);
    va_end(ap);
}
