/* tmatch.h - AMQP topic binding patterns (issue 18), matched the way RabbitMQ's topic
 * exchange does, for subscriptions that read a topic's stream (hub.h) rather than a bound
 * queue.
 *
 * A routing key is words separated by '.'; in a pattern '*' is exactly one word and '#'
 * zero or more words ("a.#" matches "a", "a.b", "a.b.c"; "#.c" matches "c"; "#" everything).
 */
#ifndef RQ_TMATCH_H
#define RQ_TMATCH_H

#include <stddef.h>

/* Checks a binding pattern: 1..255 bytes, valid UTF-8, no control characters. Returns 0, or -1
 * with the reason in err. */
int rq_tmatch_check(const char *pattern, char *err, size_t errlen);

/* 1 when routing key `key` matches `pattern` (both NUL-terminated), else 0. */
int rq_tmatch(const char *pattern, const char *key);

#endif
