/* util.h - small helpers shared by both services: time, ids, UTF-8, errors. */
#ifndef RQ_UTIL_H
#define RQ_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define RQ_UUID_LEN 36    /* without the NUL */
#define RQ_ISO8601_LEN 24 /* "2026-11-22T19:30:00.123Z" without the NUL */

/* Monotonic clock in nanoseconds / milliseconds (CLOCK_MONOTONIC). */
int64_t rq_mono_ns(void);
int64_t rq_mono_ms(void);

/* Wall clock in milliseconds since the epoch (CLOCK_REALTIME). */
int64_t rq_wall_ms(void);

/* Writes `epoch_ms` as ISO 8601 UTC with milliseconds ("...T...Z") into out, which must hold
 * RQ_ISO8601_LEN + 1 bytes. Returns out. */
char *rq_iso8601(int64_t epoch_ms, char *out);

/* Writes a new random (v4) UUID in lowercase text into out (RQ_UUID_LEN + 1 bytes). */
void rq_uuid(char *out);

/* n bytes from the same per-thread generator as rq_uuid() (unique, not secret: never keys). */
void rq_random_bytes(void *buf, size_t n);

/* Returns 1 when buf[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF),
 * else 0. */
int rq_utf8_valid(const char *buf, size_t len);

/* Sleeps `seconds` (fractional), returning early (with -1) if *stop becomes non-zero; the
 * flag is polled every 50 ms. `stop` may be NULL. Returns 0 when the full time elapsed. */
int rq_sleep_interruptible(double seconds, volatile int *stop);

/* ---- errors (docs/CONVENTIONS.md, "Errors") ---- */

/* Writes printf-formatted text into err[0..errlen), the caller-supplied error buffer of
 * set-up code. Safe with err == NULL or errlen == 0 (then nothing is written); otherwise the
 * text is cut to errlen - 1 bytes and always NUL-terminated. Always returns -1, so a
 * function can end with `return rq_errf(err, errlen, ...);`. Thread-safe. */
int rq_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* rq_errf() with a va_list: the one formatter behind every error setter (rq_errf, and the
 * setters of the parser error structs rq_config_error_t, rq_auth_error_t). Returns -1. */
int rq_verrf(char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Writes the text of errnum (as strerror() would word it, "Unknown error N" for an unknown
 * number) into buf[0..len), cut to fit, and returns buf (a static "" when len is 0): never
 * NULL. Thread-safe
 * (strerror() is not): use it in any code that may run on more than one thread. */
const char *rq_strerror(int errnum, char *buf, size_t len);

/* Names the calling thread (what `top -H`, `ps -L` and /proc/PID/task/TID/comm show), cut to
 * the kernel's 15 characters. Best effort: nothing happens where it cannot be set. */
void rq_thread_name(const char *name);

/* Room for the text of any errno value. */
#define RQ_STRERROR_LEN 128

/* rq_strerror() into a buffer that lives as long as the enclosing block (a compound
 * literal): for log and error arguments, `rq_warn("read: %s", RQ_STRERR(errno))`. */
#define RQ_STRERR(errnum) rq_strerror((errnum), (char[RQ_STRERROR_LEN]){""}, RQ_STRERROR_LEN)

#endif
