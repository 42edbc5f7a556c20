/* log.h - JSON-lines logging on stderr.
 *
 * Every record is one JSON object on one line:
 *   {"ts":"2026-11-22T19:30:00.123Z","level":"info","service":"producer","msg":"..."}
 * The message is formatted with printf rules and JSON-escaped. Callers must never pass
 * credentials (passwords, API secrets) into a log call.
 *
 * Thread-safe: each record is written with a single write(2) call.
 */
#ifndef RQ_LOG_H
#define RQ_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum {
    RQ_LOG_DEBUG = 0,
    RQ_LOG_INFO = 1,
    RQ_LOG_WARN = 2,
    RQ_LOG_ERROR = 3,
} rq_log_level_t;

/* Sets the service name written in every record and the minimum level written.
 * `service` is copied (truncated to 31 bytes). Safe to call before any thread starts. */
void rq_log_init(const char *service, rq_log_level_t level);

/* Parses a level name, case-insensitively, into *out: "debug" (also "trace"), "info"
 * (also "notice"), "warn" (also "warning"), "error" (also "err", "critical", "crit",
 * "fatal"), so the spellings of Python's logging, syslog and log4j work too.
 * Returns 0, or -1 when the text names no level (*out untouched). */
int rq_log_level_parse(const char *text, rq_log_level_t *out);

/* Name of a level ("debug", "info", "warn", "error"). */
const char *rq_log_level_name(rq_log_level_t level);

/* Returns 1 when records of `level` are written, else 0 (to skip costly formatting). */
int rq_log_enabled(rq_log_level_t level);

/* Writes one record if `level` is enabled. Never fails visibly. */
/* Sets the trace id (len bytes, at most 32, copied) that this thread's next log lines carry
 * as a "trace_id" field, for the lines about one message (W3C trace context, trace.h);
 * NULL or len 0 clears it. Thread-local: other threads' lines are not affected. */
void rq_log_set_trace(const char *trace_id, size_t len);

void rq_log(rq_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rq_logv(rq_log_level_t level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define rq_debug(...) rq_log(RQ_LOG_DEBUG, __VA_ARGS__)
#define rq_info(...) rq_log(RQ_LOG_INFO, __VA_ARGS__)
#define rq_warn(...) rq_log(RQ_LOG_WARN, __VA_ARGS__)
#define rq_error(...) rq_log(RQ_LOG_ERROR, __VA_ARGS__)

#endif
