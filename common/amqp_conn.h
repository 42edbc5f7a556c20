/* amqp_conn.h - opening an AMQP connection and declaring relayq's topology (rabbitmq-c 0.11).
 *
 * A connection is not thread-safe: the thread that opens it owns it and is the only one that
 * may use or close it. Channel 1 is opened by rq_amqp_open().
 *
 * Topology (declared identically by both services; declaration is idempotent). All queues
 * are durable, of type QUEUE_TYPE (quorum by default), on the default exchange:
 *   <q>           the request queue; x-dead-letter-exchange "" and x-dead-letter-routing-key
 *                 <q>.dlq, so a rejected message (requeue=false) lands in the DLQ; quorum
 *                 queues also get x-delivery-limit RQ_QUORUM_DELIVERY_LIMIT.
 *   Quorum queues that dead-letter (<q> and the delay queues) do it at least once:
 *                 x-dead-letter-strategy at-least-once with x-overflow reject-publish.
 *   <q>.dlq       the dead-letter queue.
 *   <q>.retry.N   for N = 1..MAX_RETRIES: delay queues with x-message-ttl
 *                 RETRY_BASE_MS * 2^(N-1) that dead-letter back to <q> (one queue per
 *                 attempt, so a long delay never blocks a short one behind it).
 * A service that finds a queue declared with other arguments gets PRECONDITION_FAILED,
 * reported as a clear error naming the queue by rq_amqp_declare_topology().
 */
#ifndef RQ_AMQP_CONN_H
#define RQ_AMQP_CONN_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define RQ_AMQP_CHANNEL 1
#define RQ_QUORUM_DELIVERY_LIMIT 20

/* The one doubling backoff: the base starts at min_ms and doubles after every failure up to
 * max_ms. With jitter each delay is drawn from the base's upper half [base/2, base] (many
 * clients do not retry in step after a broker restart); without, the delay is the base.
 * Reconnects (both services) use RQ_RECONNECT_MIN_MS..RQ_RECONNECT_MAX_MS with jitter: the cap
 * is low so that a service is ready again within seconds of the broker's return. A zeroed
 * rq_backoff_t is that reconnect backoff. Not thread-safe (one per loop). */
#define RQ_RECONNECT_MIN_MS 200
#define RQ_RECONNECT_MAX_MS 2000
typedef struct rq_backoff {
    int min_ms, max_ms; /* 0, 0: RQ_RECONNECT_MIN_MS, RQ_RECONNECT_MAX_MS */
    int no_jitter;      /* 0: jitter (the zeroed default) */
    int cur_ms;         /* 0 before the first failure */
    uint64_t rng;       /* xorshift state; seeded on first use */
} rq_backoff_t;

/* Sets b up (no failures yet) to double from min_ms to max_ms (1 <= min_ms <= max_ms, both
 * below INT_MAX / 2), with or without jitter. The struct is the caller's; nothing to free. */
void rq_backoff_init(rq_backoff_t *b, int min_ms, int max_ms, int jitter);

/* Returns the delay in ms before the next attempt, and doubles the base for the next. */
int rq_backoff_next(rq_backoff_t *b);

/* Forgets past failures (call after a successful attempt); keeps min, max and jitter. */
void rq_backoff_reset(rq_backoff_t *b);

/* Opens a TCP connection to a node of cfg (amqp_nodes.h: RABBITMQ_ADDRESSES in their order,
 * the preferred node first, each tried once; else cfg->host:port) (TLS when cfg->tls: AMQPS
 * with TLS 1.2+, the CA
 * bundle cfg->tls_ca or the system one, an optional client certificate, and peer plus host
 * name verification unless cfg->tls_verify is false), logs in (PLAIN) with cfg's heartbeat,
 * and opens channel 1. cfg->connect_timeout_ms bounds the TCP connect, the handshake, every
 * RPC and (rq_amqp_set_send_timeout()) every send until the caller sets another deadline. Returns
 * the connection (owned by the caller, close with rq_amqp_close()), or NULL with a human-readable
 * reason in err (credentials never included; a verification failure says so; with several
 * nodes, each node's reason). With several nodes cfg->connect_timeout_ms bounds the whole
 * attempt (each node gets what is left); a node that fails moves the preferred one on to the
 * next, and a success makes its node the preferred one and the node in use
 * (rq_amqp_node_in_use()); a change of node is logged. */
amqp_connection_state_t rq_amqp_open(const RabbitMQConfig *cfg, char *err, size_t errlen);

/* Closes channel and connection politely and frees it. NULL is a no-op. Safe on a
 * connection whose socket already failed. Bounded by about RQ_AMQP_CLOSE_TIMEOUT_MS even
 * when the broker stopped reading (frozen, resource alarm): a socket with no room to write
 * is not closed politely at all, each close frame may wait RQ_AMQP_CLOSE_TIMEOUT_MS for the
 * broker to read it and each RPC as long for its answer, and connection.close is skipped
 * when channel.close got none. */
#define RQ_AMQP_CLOSE_TIMEOUT_MS 1000
void rq_amqp_close(amqp_connection_state_t conn);

/* The send deadline of conn: once the broker has read nothing of what is waiting to be sent
 * for timeout_ms (TCP_USER_TIMEOUT: a zero receive window or unacknowledged data), the
 * kernel aborts the connection and every send blocked on it fails (rabbitmq-c's method frames,
 * heartbeats and publishes, OpenSSL's records, rq_pubbuf_t's flushes); so does every later
 * use. rabbitmq-c 0.11 itself waits for a full socket without a deadline. rq_amqp_open()
 * sets cfg->connect_timeout_ms; rq_pubbuf_new() sets its send timeout. Progress (the broker
 * reading) restarts the clock, so a slow broker is not a dead one. timeout_ms <= 0: the
 * kernel default (no deadline). Returns 0, or -1 (no socket, or the option is refused). */
int rq_amqp_set_send_timeout(amqp_connection_state_t conn, int timeout_ms);

/* Writes the name of the dead-letter queue ("<q>.dlq") into buf. Returns buf. */
char *rq_amqp_dlq_name(const RabbitMQConfig *cfg, char *buf, size_t len);

/* Writes the name of delay queue `attempt` (1..max_retries, "<q>.retry.N") into buf. */
char *rq_amqp_retry_queue_name(const RabbitMQConfig *cfg, int attempt, char *buf, size_t len);

/* Delay in ms of the delay queue for `attempt` (RETRY_BASE_MS * 2^(attempt-1)). */
long long rq_amqp_retry_delay_ms(const RabbitMQConfig *cfg, int attempt);

/* Declares the whole topology above. Returns 0, or -1 with err filled; a failure on a
 * connection this thread's latest rq_amqp_open() made moves the process's preferred node on
 * to the next (a node that took the connection but not the topology is a lost one). */
int rq_amqp_declare_topology(amqp_connection_state_t conn, const RabbitMQConfig *cfg, char *err,
                             size_t errlen);

/* ---- one queue of the queue service (issue 16) and its derived queues ----
 *
 * rq_amqp_declare_topology() declares the default queue's spec (rq_amqp_spec_of_config) with
 * exactly the arguments above. A queue of the queue service (spec.service) also gets:
 *   x-max-priority (max_priority > 0), x-max-length (max_length > 0; classic queues then
 *   also x-overflow reject-publish, so a full queue refuses a publish instead of dropping
 *   its head), x-message-ttl (message_ttl_ms > 0; expired messages go to <q>.dlq), and
 *   relayq's own settings, which the broker keeps and shows but does not use nor compare on
 *   a redeclare: x-relayq-queue (true), x-relayq-max-retries, x-relayq-retry-base-ms.
 * Delay buckets "<q>.delay.<ms>" (rq_amqp_declare_delay_queue): the type of <q>,
 * x-message-ttl ms, dead-lettering to <q> (at least once for quorum), and x-expires
 * ms + RQ_DELAY_QUEUE_IDLE_MS, so an unused bucket goes away (redeclare it at least every
 * 60 s while in use). */
#define RQ_QUEUE_ARGS_MAX 16
#define RQ_WIRE_ARG_MAX_PRIORITY "x-max-priority"
#define RQ_WIRE_ARG_MAX_LENGTH "x-max-length"
#define RQ_WIRE_ARG_EXPIRES "x-expires"
#define RQ_WIRE_ARG_RELAYQ_QUEUE "x-relayq-queue"
#define RQ_WIRE_ARG_RELAYQ_MAX_RETRIES "x-relayq-max-retries"
#define RQ_WIRE_ARG_RELAYQ_RETRY_BASE "x-relayq-retry-base-ms"
#define RQ_DELAY_QUEUE_IDLE_MS 600000LL
/* The largest delay bucket: the longest delay (86400000 ms, 24 h) rounded up to two
 * significant digits by rq_qname_delay_bucket(). */
#define RQ_DELAY_BUCKET_MAX_MS 87000000LL

typedef struct rq_queue_spec {
    const char *name;         /* <q> (borrowed) */
    const char *type;         /* "quorum" or "classic" (borrowed) */
    int max_priority;         /* 1..255; 0: none */
    long long max_length;     /* messages; 0: unbounded */
    long long message_ttl_ms; /* 0: none */
    int max_retries;          /* retry queues <q>.retry.1..max_retries */
    long long retry_base_ms;  /* delay of retry 1, doubling */
    int service;              /* 1: a queue of the queue service (x-relayq-* arguments) */
} rq_queue_spec_t;

typedef enum { RQ_QROLE_MAIN = 0, RQ_QROLE_DLQ, RQ_QROLE_RETRY } rq_queue_role_t;

/* The spec of the default queue (REQUEST_QUEUE, QUEUE_TYPE, MAX_RETRIES, RETRY_BASE_MS);
 * borrows cfg's strings. */
void rq_amqp_spec_of_config(const RabbitMQConfig *cfg, rq_queue_spec_t *s);

/* "<q>.retry.<attempt>" into buf; returns buf. */
char *rq_amqp_spec_retry_name(const rq_queue_spec_t *s, int attempt, char *buf, size_t len);

/* retry_base_ms * 2^(attempt-1), capped near 24 h. */
long long rq_amqp_spec_retry_delay_ms(const rq_queue_spec_t *s, int attempt);

/* Writes the declare arguments of one queue of s (role; attempt 1..max_retries for
 * RQ_QROLE_RETRY) into out (room for RQ_QUEUE_ARGS_MAX) and returns their count. Entries
 * borrow s's strings and, for RQ_QROLE_MAIN, dlq (filled with "<q>.dlq", dlqlen >= 256). */
int rq_amqp_queue_args(const rq_queue_spec_t *s, rq_queue_role_t role, int attempt,
                       amqp_table_entry_t *out, char *dlq, size_t dlqlen);

/* Declares one queue of s (see rq_amqp_queue_args) on channel ch. Returns 0, or -1 with err
 * (the broker's reason, e.g. "inequivalent arg 'x-max-length' ...", which closes ch). */
int rq_amqp_declare_spec_queue(amqp_connection_state_t conn, amqp_channel_t ch,
                               const rq_queue_spec_t *s, rq_queue_role_t role, int attempt,
                               char *err, size_t errlen);

/* Declares s's whole topology on ch: <q>.dlq, <q>.retry.1..N, then <q>. Returns 0 or -1
 * with err (ch is closed by a refused declare). */
int rq_amqp_declare_spec(amqp_connection_state_t conn, amqp_channel_t ch, const rq_queue_spec_t *s,
                         char *err, size_t errlen);

/* The arguments of delay bucket "<queue>.delay.<bucket_ms>" into out (room for
 * RQ_QUEUE_ARGS_MAX); returns their count. Entries borrow queue and type. */
int rq_amqp_delay_queue_args(const char *queue, const char *type, long long bucket_ms,
                             amqp_table_entry_t *out);

/* Declares (idempotently) the delay bucket "<queue>.delay.<bucket_ms>" of queue `queue`
 * whose type is `type` ("quorum"|"classic"; the delay queue gets the same) on channel ch of
 * the caller's connection: messages published to it wait bucket_ms and then dead-letter to
 * `queue`; it expires RQ_DELAY_QUEUE_IDLE_MS after its last use (redeclare it at least
 * every 60 s while publishing to it). bucket_ms in 1..RQ_DELAY_BUCKET_MAX_MS
 * (rq_qname_delay_bucket()).
 * Returns 0, or -1 with err filled (a refused declare closes ch). Thread: the connection's. */
int rq_amqp_declare_delay_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *queue,
                                const char *type, long long bucket_ms, char *err, size_t errlen);

/* Records that the node of this thread's latest rq_amqp_open() failed after it took the
 * connection (it stopped confirming publishes: a minority partition): the next rq_amqp_open()
 * of this process starts at the next node. No-op with one node or before any success. */
void rq_amqp_node_failed(void);

/* Describes the reply of an RPC call (amqp_get_rpc_reply) as text in err; `what` names the
 * operation ("queue.declare"). Returns 0 when the reply is normal, -1 otherwise. */
int rq_amqp_check_reply(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen);

/* Table entries for queue arguments and message headers. Key and value are borrowed (they
 * must outlive the table's use). */
amqp_table_entry_t rq_amqp_utf8_entry(const char *key, const char *value);
amqp_table_entry_t rq_amqp_i64_entry(const char *key, int64_t value);

/* The value of header `key` in a message's properties, or NULL when absent (borrowed from
 * props). */
const amqp_field_value_t *rq_amqp_header(const amqp_basic_properties_t *props, const char *key);

/* Copies an amqp_bytes_t into a NUL-terminated heap string (caller frees). NULL on failure. */
char *rq_amqp_strdup(amqp_bytes_t b);

#endif
