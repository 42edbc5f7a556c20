/* dlq.h - inspecting and replaying the dead-letter queue (<queue>.dlq).
 *
 * Both calls open a short-lived AMQP connection of their own on the calling thread (an HTTP
 * thread), so they never disturb the publisher's connection. They block for the broker
 * round trips (bounded by RABBITMQ_CONNECT_TIMEOUT_MS per call to the broker).
 *
 * Reasons come from the headers the consumer sets when it dead-letters a message
 * (x-relayq-reason, x-relayq-attempts) or, for messages the broker dead-lettered itself,
 * from the first x-death entry ("rejected", "expired", "delivery_limit").
 */
#ifndef RQ_DLQ_H
#define RQ_DLQ_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

/* Returns a new JSON object {"queue","count","messages":[{"message_id","reason","attempts",
 * "content_type","body"}...]} with at most `limit` messages from the head of the DLQ, which
 * stay in the DLQ in their order. On failure returns NULL with a reason in err. */
json_t *rq_dlq_peek(const RabbitMQConfig *cfg, size_t limit, char *err, size_t errlen);

/* Moves up to `count` messages (0 = all present when called) from the DLQ back to the
 * request queue: each is republished with the attempt counters reset, confirmed by the
 * broker, and only then removed from the DLQ (so a failure duplicates, never loses).
 * Returns the number moved (>= 0), or -1 with err filled; *remaining gets the DLQ depth
 * afterwards. */
long rq_dlq_retry(const RabbitMQConfig *cfg, size_t count, size_t *remaining, char *err,
                  size_t errlen);

#endif
