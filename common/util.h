/* util.h - small helpers shared by both services: time, ids, UTF-8, JSON text. */
#ifndef RQ_UTIL_H
#define RQ_UTIL_H

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

/* Returns 1 when buf[0..len) is valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF),
 * else 0. */
int rq_utf8_valid(const char *buf, size_t len);

/* Sleeps `seconds` (fractional), returning early (with -1) if *stop becomes non-zero; the
 * flag is polled every 50 ms. `stop` may be NULL. Returns 0 when the full time elapsed. */
int rq_sleep_interruptible(double seconds, volatile int *stop);

#endif
