/* amqp_pub.h - basic.publish (and acks) in bursts: frames encoded into one buffer, one send()
 * per burst.
 *
 * rabbitmq-c 0.11 writes every basic.publish as three send() calls (method, content header,
 * body). A publisher that pipelines many messages spends most of its time in those calls, and
 * the broker reads them one small segment at a time. rq_pubbuf_t encodes the same frames
 * (with rabbitmq-c's own amqp_encode_method()/amqp_encode_properties()) into a buffer and
 * writes the buffer with one send() when the caller flushes, or when it grows past
 * RQ_PUBBUF_FLUSH_BYTES.
 *
 * Only on a plain TCP connection: with TLS the socket belongs to OpenSSL, so a buffer made
 * with raw = 0 publishes each message at once through amqp_basic_publish() and flushing is a
 * no-op. Either way the caller sees the same contract.
 *
 * Ordering: frames still in the buffer have not reached the socket. The caller must flush
 * before it sends anything else on the same channel through rabbitmq-c, and before it waits
 * for the confirms of what it added. Like the connection, a buffer belongs to one thread.
 */
#ifndef RQ_AMQP_PUB_H
#define RQ_AMQP_PUB_H

#include <amqp.h>
#include <stddef.h>

/* A buffer this large is written at once by rq_pubbuf_add(). */
#define RQ_PUBBUF_FLUSH_BYTES (256 * 1024)

typedef struct rq_pubbuf rq_pubbuf_t;

/* Returns a buffer for conn (which must outlive it), or NULL when out of memory. raw != 0:
 * encode and buffer (plain TCP only); raw == 0: publish through rabbitmq-c. A flush that
 * cannot write for send_timeout_ms (the broker stopped reading) fails with
 * AMQP_STATUS_TIMEOUT. */
rq_pubbuf_t *rq_pubbuf_new(amqp_connection_state_t conn, int raw, int send_timeout_ms);

/* Frees the buffer; frames not flushed are dropped (the connection is usually gone then).
 * NULL is a no-op. */
void rq_pubbuf_free(rq_pubbuf_t *b);

/* Adds one basic.publish (method, content header, body frames split at the connection's
 * frame_max) on `channel`, as amqp_basic_publish() would send it (immediate is always 0).
 * Returns AMQP_STATUS_OK or a negative AMQP_STATUS_* (encoding, memory, or the socket when
 * it flushed or published directly). Raw: an encoding error of the method or the properties
 * (AMQP_STATUS_BAD_AMQP_DATA, _TABLE_TOO_BIG, _INVALID_PARAMETER) leaves the buffer as it was,
 * so only that message failed; after any other error, or any error when not raw, the
 * connection must be dropped. */
int rq_pubbuf_add(rq_pubbuf_t *b, amqp_channel_t channel, amqp_bytes_t exchange,
                  amqp_bytes_t routing_key, int mandatory, const amqp_basic_properties_t *props,
                  amqp_bytes_t body);

/* Adds one method frame (basic.ack, basic.nack, basic.reject...: a method without content)
 * on `channel`; decoded is the method's struct (amqp_basic_ack_t...). Not raw: sent at once
 * with amqp_send_method(). Returns AMQP_STATUS_OK or a negative AMQP_STATUS_*. */
int rq_pubbuf_add_method(rq_pubbuf_t *b, amqp_channel_t channel, amqp_method_number_t id,
                         void *decoded);

/* Writes everything buffered (waiting for the socket up to the send timeout). Returns
 * AMQP_STATUS_OK (also when empty, or not raw) or a negative AMQP_STATUS_*. */
int rq_pubbuf_flush(rq_pubbuf_t *b);

/* Bytes waiting to be written. */
size_t rq_pubbuf_pending(const rq_pubbuf_t *b);

#endif
