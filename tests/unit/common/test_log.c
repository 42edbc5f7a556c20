/* Unit tests for common/log.c: record shape, JSON escaping, level filter, threads. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

TestSuite(log, .timeout = 30);

/* ---- capturing fd 2 into a temporary file ---- */

typedef struct {
    FILE *file;
    int saved;
} capture_t;

static void cap_begin(capture_t *c)
{
    fflush(stderr);
    c->file = tmpfile();
    cr_assert_not_null(c->file);
    int fd = fileno(c->file);
    /* O_APPEND like a typical log file; the record is still one write(2). */
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_APPEND), 0);
    c->saved = dup(STDERR_FILENO);
    cr_assert_geq(c->saved, 0);
    cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
}

/* Restores stderr and returns everything written meanwhile (caller frees). */
static char *cap_end(capture_t *c, size_t *len)
{
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    int fd = fileno(c->file);
    off_t size = lseek(fd, 0, SEEK_END);
    cr_assert_geq(size, 0);
    char *buf = malloc((size_t)size + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(pread(fd, buf, (size_t)size, 0), size);
    buf[size] = '\0';
    fclose(c->file);
    if (len)
        *len = (size_t)size;
    return buf;
}

/* Parses one JSON record (the whole text must be exactly one line). */
static json_t *parse_record(const char *text, size_t len)
{
    cr_assert_gt(len, 0);
    cr_assert_eq(text[len - 1], '\n', "record does not end with a newline");
    cr_assert_eq(memchr(text, '\n', len), text + len - 1, "record spans several lines");
    cr_assert(rq_utf8_valid(text, len), "record is not valid UTF-8");
    json_error_t err;
    json_t *j = json_loadb(text, len - 1, JSON_ALLOW_NUL, &err);
    cr_assert_not_null(j, "not JSON (%s): %s", err.text, text);
    cr_assert(json_is_object(j));
    return j;
}

static const char *jstr(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "field %s missing or not a string", key);
    return json_string_value(v);
}

/* Logs one record at INFO and returns it parsed; *raw receives the line (caller frees). */
static json_t *log_one(char **raw, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static json_t *log_one(char **raw, const char *fmt, ...)
{
    capture_t c;
    size_t len;
    va_list ap;
    cap_begin(&c);
    va_start(ap, fmt);
    rq_logv(RQ_LOG_INFO, fmt, ap);
    va_end(ap);
    char *text = cap_end(&c, &len);
    json_t *j = parse_record(text, len);
    if (raw)
        *raw = text;
    else
        free(text);
    return j;
}

static int ts_well_formed(const char *ts)
{
    const char *pat = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(ts) != strlen(pat))
        return 0;
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd' ? (ts[i] < '0' || ts[i] > '9') : ts[i] != pat[i])
            return 0;
    }
    return 1;
}

Test(log, record_fields_and_order)
{
    rq_log_init("svc", RQ_LOG_INFO);
    char *raw;
    int64_t before = rq_wall_ms();
    json_t *j = log_one(&raw, "hello %d %s", 42, "world");
    int64_t after = rq_wall_ms();
    cr_expect_eq(json_object_size(j), 4);
    cr_expect_str_eq(jstr(j, "level"), "info");
    cr_expect_str_eq(jstr(j, "service"), "svc");
    cr_expect_str_eq(jstr(j, "msg"), "hello 42 world");
    const char *ts = jstr(j, "ts");
    cr_expect(ts_well_formed(ts), "ts %s", ts);
    char lo[RQ_ISO8601_LEN + 1], hi[RQ_ISO8601_LEN + 1];
    rq_iso8601(before, lo);
    rq_iso8601(after, hi);
    cr_expect(strcmp(ts, lo) >= 0 && strcmp(ts, hi) <= 0, "ts %s not in [%s, %s]", ts, lo, hi);
    /* field order as documented: ts, level, service, msg */
    cr_expect(strncmp(raw, "{\"ts\":\"", 7) == 0, "%s", raw);
    const char *tail = "\",\"level\":\"info\",\"service\":\"svc\",\"msg\":\"hello 42 world\"}\n";
    cr_expect(strcmp(raw + 7 + RQ_ISO8601_LEN, tail) == 0, "%s", raw);
    free(raw);
    json_decref(j);
}

Test(log, escapes_quotes_backslashes_controls)
{
    rq_log_init("svc", RQ_LOG_DEBUG);
    char *raw;
    const char *msg = "q\"b\\s\n\t\r\x01\x1f\x7f\b\f end/";
    json_t *j = log_one(&raw, "%s", msg);
    cr_expect_str_eq(jstr(j, "msg"), msg);
    cr_expect(strstr(raw, "\"msg\":\"q\\\"b\\\\s\\n\\t\\r\\u0001\\u001f\\u007f\\u0008\\u000c "
                          "end/\"}\n") != NULL,
              "raw: %s", raw);
    free(raw);
    json_decref(j);
}

Test(log, embedded_nul_is_escaped)
{
    rq_log_init("svc", RQ_LOG_DEBUG);
    char *raw;
    json_t *j = log_one(&raw, "a%cb", 0);
    json_t *m = json_object_get(j, "msg");
    cr_assert(json_is_string(m));
    cr_expect_eq(json_string_length(m), 3);
    cr_expect_eq(memcmp(json_string_value(m), "a\0b", 3), 0);
    cr_expect(strstr(raw, "\"msg\":\"a\\u0000b\"") != NULL, "raw: %s", raw);
    free(raw);
    json_decref(j);
}

Test(log, utf8_passthrough_and_replacement)
{
    static const struct {
        const char *in;
        const char *want; /* decoded msg */
    } cases[] = {
        {"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"},
        {"a\xFF!", "a\xEF\xBF\xBD!"},
        {"\xC0\xAF", "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong: 2 bad bytes */
        {"x\xE2\x82z", "x\xEF\xBF\xBDz"},                         /* truncated: 1 U+FFFD */
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF4\x90\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* >10FFFF */
        {"end \xF0\x9F\x98", "end \xEF\xBF\xBD"}, /* truncated at the end */
        {"\x80\x80", "\xEF\xBF\xBD\xEF\xBF\xBD"}, /* lone continuations */
    };
    rq_log_init("svc", RQ_LOG_DEBUG);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *j = log_one(NULL, "%s", cases[i].in);
        cr_expect_str_eq(jstr(j, "msg"), cases[i].want, "case %zu", i);
        json_decref(j);
    }
}

Test(log, level_filter)
{
    capture_t c;
    size_t len;
    rq_log_init("svc", RQ_LOG_WARN);
    cr_expect_eq(rq_log_enabled(RQ_LOG_DEBUG), 0);
    cr_expect_eq(rq_log_enabled(RQ_LOG_INFO), 0);
    cr_expect_eq(rq_log_enabled(RQ_LOG_WARN), 1);
    cr_expect_eq(rq_log_enabled(RQ_LOG_ERROR), 1);
    cap_begin(&c);
    rq_debug("d");
    rq_info("i");
    rq_warn("w");
    rq_error("e");
    char *text = cap_end(&c, &len);
    char *nl = strchr(text, '\n');
    cr_assert_not_null(nl, "no record written");
    json_t *w = parse_record(text, (size_t)(nl + 1 - text));
    json_t *e = parse_record(nl + 1, len - (size_t)(nl + 1 - text));
    cr_expect_str_eq(jstr(w, "level"), "warn");
    cr_expect_str_eq(jstr(w, "msg"), "w");
    cr_expect_str_eq(jstr(e, "level"), "error");
    cr_expect_str_eq(jstr(e, "msg"), "e");
    json_decref(w);
    json_decref(e);
    free(text);

    rq_log_init("svc", RQ_LOG_DEBUG);
    cr_expect_eq(rq_log_enabled(RQ_LOG_DEBUG), 1);
    cap_begin(&c);
    rq_debug("d");
    rq_info("i");
    rq_warn("w");
    rq_error("e");
    text = cap_end(&c, &len);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    cr_expect_eq(lines, 4);
    cr_expect(strstr(text, "\"level\":\"debug\"") != NULL);
    free(text);

    rq_log_init("svc", RQ_LOG_ERROR);
    cap_begin(&c);
    rq_warn("w");
    text = cap_end(&c, &len);
    cr_expect_eq(len, 0);
    free(text);
}

Test(log, level_parse_and_names)
{
    static const struct {
        const char *text;
        int ok;
        rq_log_level_t want;
    } cases[] = {
        {"debug", 1, RQ_LOG_DEBUG},
        {"DEBUG", 1, RQ_LOG_DEBUG},
        {"info", 1, RQ_LOG_INFO},
        {"Info", 1, RQ_LOG_INFO},
        {"warn", 1, RQ_LOG_WARN},
        {"warning", 1, RQ_LOG_WARN},
        {"WARNING", 1, RQ_LOG_WARN},
        {"error", 1, RQ_LOG_ERROR},
        {"ERROR", 1, RQ_LOG_ERROR},
        {"", 0, 0},
        /* issue 11 item 16: the spellings of Python's logging, syslog and log4j */
        {"err", 1, RQ_LOG_ERROR},
        {"fatal", 1, RQ_LOG_ERROR},
        {"FATAL", 1, RQ_LOG_ERROR},
        {"CRITICAL", 1, RQ_LOG_ERROR},
        {"crit", 1, RQ_LOG_ERROR},
        {"notice", 1, RQ_LOG_INFO},
        {"trace", 1, RQ_LOG_DEBUG},
        {"info ", 0, 0},
        {" info", 0, 0},
        {"verbose", 0, 0},
        {"warnings", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rq_log_level_t out = (rq_log_level_t)77;
        int r = rq_log_level_parse(cases[i].text, &out);
        if (cases[i].ok) {
            cr_expect_eq(r, 0, "'%s'", cases[i].text);
            cr_expect_eq(out, cases[i].want, "'%s'", cases[i].text);
        } else {
            cr_expect_eq(r, -1, "'%s'", cases[i].text);
            cr_expect_eq((int)out, 77, "'%s' touched *out", cases[i].text);
        }
    }
    cr_expect_str_eq(rq_log_level_name(RQ_LOG_DEBUG), "debug");
    cr_expect_str_eq(rq_log_level_name(RQ_LOG_INFO), "info");
    cr_expect_str_eq(rq_log_level_name(RQ_LOG_WARN), "warn");
    cr_expect_str_eq(rq_log_level_name(RQ_LOG_ERROR), "error");
}

Test(log, long_message_is_one_line)
{
    enum { N = 100000 };
    char *msg = malloc(N + 1);
    cr_assert_not_null(msg);
    for (size_t i = 0; i < N; i++)
        msg[i] = (i % 97 == 0) ? '"' : (i % 89 == 0) ? '\n' : (char)('a' + i % 26);
    msg[N] = '\0';
    rq_log_init("svc", RQ_LOG_INFO);
    json_t *j = log_one(NULL, "%s", msg);
    cr_expect_str_eq(jstr(j, "msg"), msg);
    json_decref(j);
    free(msg);
}

Test(log, service_truncated_and_escaped)
{
    rq_log_init("a-very-long-service-name-that-goes-on-and-on", RQ_LOG_INFO);
    json_t *j = log_one(NULL, "x");
    cr_expect_str_eq(jstr(j, "service"), "a-very-long-service-name-that-g"); /* 31 bytes */
    json_decref(j);
    rq_log_init("we\"ird\\svc", RQ_LOG_INFO);
    j = log_one(NULL, "x");
    cr_expect_str_eq(jstr(j, "service"), "we\"ird\\svc");
    json_decref(j);
}

Test(log, errno_preserved)
{
    rq_log_init("svc", RQ_LOG_INFO);
    capture_t c;
    cap_begin(&c);
    errno = ENOENT;
    rq_info("%s", "something");
    int e = errno;
    free(cap_end(&c, NULL));
    cr_expect_eq(e, ENOENT);
}

enum { LOG_THREADS = 4, LOG_PER_THREAD = 2000 };

static void *log_worker(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_PER_THREAD; i++)
        rq_info("thread %d record %d padding \"quoted\" text to make the line longer", id, i);
    return NULL;
}

Test(log, concurrent_records_do_not_interleave)
{
    rq_log_init("svc", RQ_LOG_INFO);
    capture_t c;
    size_t len;
    pthread_t th[LOG_THREADS];
    cap_begin(&c);
    for (int t = 0; t < LOG_THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, log_worker, (void *)(intptr_t)t), 0);
    for (int t = 0; t < LOG_THREADS; t++)
        pthread_join(th[t], NULL);
    char *text = cap_end(&c, &len);

    int next[LOG_THREADS] = {0};
    size_t lines = 0;
    char *p = text;
    while (p < text + len) {
        char *nl = memchr(p, '\n', (size_t)(text + len - p));
        cr_assert_not_null(nl, "unterminated record");
        json_t *j = parse_record(p, (size_t)(nl + 1 - p));
        int id, seq;
        cr_assert_eq(sscanf(jstr(j, "msg"), "thread %d record %d", &id, &seq), 2);
        cr_assert(id >= 0 && id < LOG_THREADS);
        cr_assert_eq(seq, next[id], "thread %d out of order", id); /* per-thread order kept */
        next[id]++;
        json_decref(j);
        lines++;
        p = nl + 1;
    }
    cr_expect_eq(lines, LOG_THREADS * LOG_PER_THREAD);
    free(text);
}

/* The trace id of the current message (issue 14) rides on this thread's lines until
 * cleared, between service and msg; a long one is cut to 32 characters. */
Test(log, trace_id_field_while_set)
{
    rq_log_init("svc", RQ_LOG_INFO);
    rq_log_set_trace("4bf92f3577b34da6a3ce929d0e0e4736", 32);
    char *raw;
    json_t *j = log_one(&raw, "about message %s", "m1");
    cr_expect_eq(json_object_size(j), 5);
    cr_expect_str_eq(jstr(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_expect(strstr(raw, "\"service\":\"svc\",\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\","
                          "\"msg\":") != NULL,
              "%s", raw);
    free(raw);
    json_decref(j);
    rq_log_set_trace("0123456789abcdef0123456789abcdefEXTRA", 37);
    j = log_one(NULL, "cut");
    cr_expect_str_eq(jstr(j, "trace_id"), "0123456789abcdef0123456789abcdef");
    json_decref(j);
    rq_log_set_trace(NULL, 0);
    j = log_one(NULL, "no trace");
    cr_expect_eq(json_object_size(j), 4, "cleared");
    json_decref(j);
}
