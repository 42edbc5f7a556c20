/* qname.h - names of the queue service's queues and of the queues derived from them.
 *
 * A queue name is 1..RQ_QNAME_MAX characters of [A-Za-z0-9._-] that does not start with '.',
 * does not start with a reserved prefix ("amq." belongs to the broker, "relayq." to relayq's
 * own queues), and does not end in a suffix relayq derives from a queue: ".dlq",
 * ".retry.<digits>", ".delay.<digits>". The alphabet has no AMQP topic wildcard ('*', '#')
 * and nothing a URL path needs escaped, and the longest derived name ("<q>.delay.86400000")
 * still fits an AMQP short string.
 *
 * Derived queues of <q>: "<q>.dlq" (dead letters), "<q>.retry.<n>" (the retry delay queues,
 * n = 1..max_retries) and "<q>.delay.<ms>" (one per delay bucket, see rq_qname_delay_bucket).
 */
#ifndef RQ_QNAME_H
#define RQ_QNAME_H

#include <stddef.h>

#define RQ_QNAME_MAX 200
#define RQ_DELAY_MAX_MS 86400000LL /* longest delay_ms: 24 h */

/* Checks a queue name (NUL-terminated). Returns 0, or -1 with the reason (for a 400 answer,
 * naming the rule broken) in err. */
int rq_qname_check(const char *name, char *err, size_t errlen);

/* The delay bucket of a delay of `ms` (1..RQ_DELAY_MAX_MS): ms rounded up to two significant
 * digits (1..99 stay exact; 1234 -> 1300; 56789 -> 57000), so a message waits at most about
 * 10% longer than asked and a queue has at most 627 delay queues (the 99 values below 100 ms,
 * 90 per decade above, up to 87000000: the bucket of 86400000 ms, RQ_DELAY_BUCKET_MAX_MS). Returns
 * 0 when ms is out of range. */
long long rq_qname_delay_bucket(long long ms);

/* Writes "<q>.dlq" into buf. Returns buf. */
char *rq_qname_dlq(const char *q, char *buf, size_t len);

/* Writes "<q>.delay.<bucket_ms>" into buf. Returns buf. */
char *rq_qname_delay(const char *q, long long bucket_ms, char *buf, size_t len);

#endif
