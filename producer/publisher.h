/* publisher.h - the thread that owns the producer's AMQP connection.
 *
 * HTTP threads (and the tailer) hand over jobs; the publisher thread publishes every message
 * of every job on one channel in confirm mode, pipelining publishes and reading basic.ack /
 * basic.nack frames (honouring `multiple`), so many jobs share one broker round trip. The same
 * thread consumes the producer's exclusive, server-named callback queue and completes jobs
 * that wait for replies by correlation id.
 *
 * A job completes exactly once, through its `done` callback, called on the publisher thread:
 *   RQ_JOB_CONFIRMED     every message confirmed by the broker (persistent, durable queue)
 *   RQ_JOB_REPLIED       confirmed, and every message got its reply (want_reply)
 *   RQ_JOB_UNAVAILABLE   not connected, connection lost, or the broker nacked a message
 *   RQ_JOB_TIMEOUT       not confirmed before the publish deadline
 *   RQ_JOB_REPLY_TIMEOUT confirmed, but a reply did not come before the reply deadline
 *   RQ_JOB_REPLY_LOST    confirmed, but the connection (and with it the callback queue) was
 *                        lost before every reply came: stored, and no reply will come here
 *   RQ_JOB_INVALID       a message the wire cannot carry (a short string over 255 bytes...):
 *                        refused whole when taken, nothing of the job was sent; the connection
 *                        and other jobs are unaffected
 *   RQ_JOB_NO_QUEUE      the job's named queue (job->queue, not REQUEST_QUEUE) does not exist:
 *                        the broker returned a message published to it, or (delayed messages)
 *                        a passive declare of it failed; messages confirmed before stay stored
 *                        (a batch whose queue was deleted mid-way), the rest are not
 * After `done` returns, the publisher never touches the job again: its owner may free it.
 * Never RQ_JOB_CONFIRMED without a broker confirm: messages in flight when the connection
 * drops are published again (each exactly once, in order) on the new connection while their
 * deadline allows. A connection with publishes in flight that gets no ack or nack for
 * CONFIRM_STALL_MS while the broker does not block it (a node in a minority partition takes
 * publishes and never confirms them) is such a drop: its node is left for the next one.
 * Every publish but a topic's (job->topic) is mandatory: a message the broker returns (no queue to
 * route it to) is never counted as confirmed; the topology is declared again and the message
 * published again within its deadline. That holds for the default queue (REQUEST_QUEUE) only: a
 * job for another queue (job->queue) fails with RQ_JOB_NO_QUEUE instead, for the publisher
 * never creates a queue of the queue service. A delayed message (delay_ms) is published to
 * the delay bucket "<q>.delay.<bucket>" (qname.h), which the publisher declares on a side
 * channel before its first use and again when its last declare is 30 s old (the bucket
 * expires 10 min after its last declare), after a passive declare of <q> (RQ_JOB_NO_QUEUE if
 * it is gone); a returned delayed message drops the bucket from that cache and is published
 * again after a new declare. The cache is emptied on every new connection and whenever a
 * named queue turns out missing. Whatever the status, each message's `outcome` says
 * what is known of it: stored (confirmed), not stored (never sent, or refused), or unknown
 * (sent, and the connection died before the broker answered). At every connect the
 * publisher also declares the topics' ingress RQ_RT_INGRESS (durable, headers; hub.h).
 */
#ifndef RQ_PUBLISHER_H
#define RQ_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "list.h"
#include "metrics.h"
#include "util.h"
#include "wire.h"

typedef struct rq_publisher rq_publisher_t;

typedef enum {
    RQ_JOB_PENDING = 0,
    RQ_JOB_CONFIRMED,
    RQ_JOB_REPLIED,
    RQ_JOB_UNAVAILABLE,
    RQ_JOB_TIMEOUT,
    RQ_JOB_REPLY_TIMEOUT,
    RQ_JOB_REPLY_LOST,
    RQ_JOB_INVALID,
    RQ_JOB_NO_QUEUE,
} rq_job_status_t;

/* What is known of one message once its job is done. */
typedef enum {
    RQ_MSG_NOT_STORED = 0, /* never sent, or refused (nack, returned) */
    RQ_MSG_STORED,         /* confirmed by the broker */
    RQ_MSG_UNKNOWN,        /* sent; no answer came before the connection or deadline went */
} rq_msg_outcome_t;

typedef struct rq_pub_msg {
    /* set by the submitter */
    char *body; /* owned by the job's owner */
    size_t body_len;
    char *message_id;         /* owned by the job's owner */
    const char *content_type; /* static string */
    int64_t published_ms;     /* wall clock, for the x-published-ms header */
    const char *source;       /* x-source header: "api" or "tail" (static string) */
    const char *file_id; /* tailed lines: x-file header (owned by the job's owner), else NULL */
    int64_t offset;      /* tailed lines: x-offset header, the line's byte offset */
    int64_t end_offset;  /* tailed lines: x-end header, just past the line (and its '\n') */
    /* tailed chunk: 1 when the body is the file's bytes [offset, end_offset) verbatim (whole
     * records: lines with their '\n', pieces of a split overlong line); adds the headers
     * x-format "lines" and x-lines. 0: the body is one line without its '\n'. */
    int chunk;
    int64_t lines;           /* chunk: complete lines ('\n's) in the body (x-lines) */
    const char *traceparent; /* W3C trace context headers (owned by the job's owner); NULL: */
    const char *tracestate;  /* none (common/trace.h) */
    /* delivery options (issue 16); zero: none */
    int has_priority; /* 1: the priority property = priority */
    uint8_t priority;
    int64_t ttl_ms;       /* > 0: the expiration property, "<ttl_ms>" */
    int64_t delay_ms;     /* > 0: published to the delay bucket of the job's queue (see above) */
    const char *idem_key; /* the x-relayq-idem header (owned by the job's owner); NULL: none */
    const rq_wire_header_t *headers; /* the client's headers (owned by the job's owner), */
    size_t nheaders;                 /* at most RQ_WIRE_USER_HEADERS_MAX */
    /* topic jobs (job->topic): the routing key, at most 255 bytes (owned by the job's
     * owner); NULL: "" */
    const char *routing_key;
    /* filled by the publisher */
    /* A UUID made at the first publish and kept across republishes: the correlation_id, and
     * for API messages (file_id == NULL) also the x-relayq-uid header (wire.h), unique per
     * message, on which consumers deduplicate: a republished message is recognised, and two
     * messages with the same client id (message_id above, which need not be unique) are two
     * messages. */
    char correlation_id[RQ_UUID_LEN + 1];
    rq_msg_outcome_t outcome; /* set before the job's done() */
    char *reply;              /* heap, owned by the job's owner after done (free()) */
    size_t reply_len;
    /* private to the publisher */
    int state;
    int sent;         /* published at least once (on any connection) */
    int maybe_stored; /* a copy sent on an earlier connection got no answer: may be stored */
    int returned;     /* basic.return came for the current publish */
    uint64_t tag;
    int64_t sent_ns;
    struct rq_pub_job *job;
} rq_pub_msg_t;

typedef struct rq_pub_job {
    rq_pub_msg_t *msgs; /* n messages, owned by the job's owner */
    size_t n;
    /* The queue every message goes to (default exchange, routing key = the queue; owned by
     * the job's owner). NULL or REQUEST_QUEUE: the default queue, whose topology the
     * publisher declares again when a message comes back; another queue must exist. */
    const char *queue;
    const char *queue_type; /* the type of `queue` for its delay buckets; NULL: QUEUE_TYPE */
    /* A topic (issue 18, hub.h; owned by the job's owner), or NULL. Every message goes to the
     * headers exchange RQ_RT_INGRESS with the header relayq-topic = topic and its own
     * routing_key, NOT mandatory (a topic without subscribers, or deleted, drops it and the
     * broker still confirms it): CONFIRMED after the confirms. `queue`, delay_ms and
     * want_reply are not used with a topic (the route refuses them). */
    const char *topic;
    int want_reply;
    /* Never give up (tailed lines): no publish deadline, and a nack rebuilds the connection
     * so that every unconfirmed message is published again in its original order. */
    int retry_forever;
    int64_t publish_deadline_ns; /* rq_mono_ns() based; ignored with retry_forever */
    int64_t reply_deadline_ns;
    void (*done)(struct rq_pub_job *job, void *arg);
    void *done_arg;
    rq_job_status_t status; /* set before done() */
    const char *error;      /* static text for failures */
    /* private to the publisher */
    size_t unconfirmed, unreplied;
    int finished, nacked;
    int reply_lost;      /* want_reply, and the callback queue died with a connection */
    rq_list_node_t node; /* in the publisher's intake, then in its job list */
} rq_pub_job_t;

/* Called on the publisher thread for every reply that arrives on the callback queue, with
 * the reply's message_id property (may be empty) and body. */
typedef void (*rq_reply_hook_t)(const char *message_id, const char *body, size_t len, void *arg);

/* Creates the publisher and starts its thread, which connects (and reconnects with backoff)
 * on its own. `cfg` and `metrics` must outlive the publisher. Returns NULL on failure. */
rq_publisher_t *rq_publisher_new(const rq_config_t *cfg, rq_metrics_t *metrics,
                                 rq_reply_hook_t hook, void *hook_arg);

/* Stops accepting jobs (later submits fail at once), waits up to `grace_ms` for the jobs in
 * flight to complete, fails the rest with RQ_JOB_UNAVAILABLE, closes the connection and
 * joins the thread. The publisher stays allocated, so other threads may still call submit
 * or ready safely until rq_publisher_free(). Idempotent. */
void rq_publisher_stop(rq_publisher_t *p, int grace_ms);

/* Stops the publisher (with no grace) if still running, then frees it. NULL is a no-op. */
void rq_publisher_free(rq_publisher_t *p);

/* Hands a job to the publisher. Thread-safe. Returns 0 when accepted (done will be called
 * later, on the publisher thread); -1 when refused at once because the publisher is not
 * connected, shutting down, or holds max_pending messages already: then `done` is NOT
 * called and job->error says why. */
int rq_publisher_submit(rq_publisher_t *p, rq_pub_job_t *job);

/* Returns 1 when connected with topology declared, else 0 with the reason copied into
 * reason. Thread-safe. */
int rq_publisher_ready(rq_publisher_t *p, char *reason, size_t reasonlen);

#endif
