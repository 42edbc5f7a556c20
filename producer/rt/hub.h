/* hub.h - real-time delivery (issue 18): topics and the AMQP side of subscriptions.
 *
 * Topics. A topic <name> (the queue name alphabet, rq_qname_check) is a durable topic
 * exchange RQ_RT_TOPIC_PREFIX<name>, bound to the durable headers exchange RQ_RT_INGRESS
 * with the arguments {x-match: all, relayq-topic: <name>} (a binding argument starting with
 * "x-" is ignored by the headers exchange). The publisher sends every topic
 * message to RQ_RT_INGRESS with the header relayq-topic and the message's routing key
 * (publisher.h: job->topic), not mandatory: a deleted topic or one without subscribers drops
 * it, and never closes the publisher's channel (publishing to a missing exchange would). A
 * foreign AMQP client may publish to the topic exchange itself. A topic created with a
 * retention (seconds) also has a stream queue RQ_RT_TOPIC_PREFIX<name>.retained (x-max-age)
 * bound with "#", from which SSE clients resume (Last-Event-ID = the stream offset).
 *
 * Subscriptions. One hub thread owns one broker connection of its own (never the
 * publisher's) and every subscription's consumer:
 *   - a live topic subscription of a topic WITHOUT retention joins a group: subscriptions of
 *     the same topic with the same
 *     set of binding patterns share one exclusive, auto-delete, server-named queue bound with
 *     those patterns, consumed with no-ack; each message is decoded once, formatted once
 *     (event.h) and handed to every member whose filter matches. So 1,000 subscribers of a
 *     topic cost the broker one queue, not 1,000;
 *   - a resuming subscription of a retained topic (last_event_id given, or from_start)
 *     consumes the topic's stream from that offset on a channel of its own, matching the
 *     binding patterns itself (tmatch.h); a live subscription of a retained topic does the
 *     same from "next" (x-stream-offset "next": what is published from now on), so that
 *     every event id of a retained topic is a stream offset and a reconnecting client's
 *     Last-Event-ID resumes right after the last event it got (a retained topic's live
 *     subscribers cost one stream consumer and one channel each);
 *   - a queue subscription consumes the named queue on a channel of its own with
 *     RT_QUEUE_PREFETCH unacked (competing with every other consumer of the queue); the
 *     transport acks each message once written to its socket (or once the WebSocket client
 *     acks it, see ws.h); closing the channel gives the unacked ones back to the queue.
 * When the connection is lost, every subscription ends with reason "broker_lost" (clients
 * reconnect; a queue's unacked messages go back to it).
 *
 * A topic deleted through this hub ends its subscriptions here at once; one deleted elsewhere
 * (another replica, a foreign client) is noticed within about 2 s (the hub declares the
 * topic exchanges of its live subscriptions passively every 2 s). A queue deleted under a
 * queue subscription (or a retained topic's stream under a resuming one) is noticed at once
 * (the broker's basic.cancel). Channels: 1 for every group's consumer, 2 for declares, one
 * per queue subscription and stream reader (at most the broker's channel_max; past it
 * ready() says 503).
 *
 * Threads: rq_rt_subscribe, rq_rt_ack, rq_rt_unsubscribe and the topic jobs may be called
 * from any thread; the sink's callbacks run on the hub thread, under the subscription's lock
 * (recursive), and must not block (copy into a buffer, wake the connection). A callback may
 * call rq_rt_ack() and rq_rt_unsubscribe() itself; but a thread that holds a lock the
 * callbacks take must not call rq_rt_unsubscribe() (it waits for a callback in progress:
 * deadlock). The hub thread waits for the broker's answers to its declares; never for the
 * management API: topic GET/LIST and CREATE of an existing topic ask it (at most 2 s) on a
 * worker thread of the hub, meanwhile deliveries go on.
 */
#ifndef RQ_RT_HUB_H
#define RQ_RT_HUB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "filter.h"
#include "metrics.h"
#include "wire.h"

#define RQ_RT_INGRESS "relayq.topics"
#define RQ_RT_TOPIC_PREFIX "relayq.topic."
#define RQ_RT_TOPIC_HEADER RQ_WIRE_HDR_TOPIC /* "relayq-topic" (wire.h: never x-prefixed) */
#define RQ_RT_BINDS_MAX 16                   /* binding patterns per subscription */
#define RQ_RT_BIND_MAX 255                   /* bytes of one binding pattern */
#define RQ_RT_EVENT_ID_MAX 32                /* an SSE id: decimal uint64 */
#define RQ_RT_RETENTION_MAX_S 31536000

typedef struct rq_rt_hub rq_rt_hub_t;
typedef struct rq_rt_sub rq_rt_sub_t;

typedef enum { RQ_RT_TOPIC = 1, RQ_RT_QUEUE = 2 } rq_rt_kind_t;

/* One message for one subscriber. The JSON object text is (event.h):
 *   {"id": <message_id property or null>, "topic": <name> | "queue": <name>,
 *    "routing_key": "...", "headers": {<application headers, x-relayq-* left out>},
 *    "payload": <the body as JSON when it is JSON, else a string when UTF-8>,
 *    ("payload_base64": "..." instead, for other bodies), "published_ms": n|null,
 *    "redelivered": bool (queues), "offset": n (stream)}
 * `json`, `id` are valid only during the deliver() call (copy them). */
typedef struct rq_rt_event {
    const char *json; /* NUL-terminated, len bytes, one line (no '\n' inside) */
    size_t len;
    const char *id; /* the SSE id: the stream offset (retained topic, live or resuming),
                       the delivery tag (queue), or the live member's own sequence number
                       1, 2, ... (topic without retention) (decimal) */
    uint64_t tag;   /* queue subscriptions: the token for rq_rt_ack(); 0 for topics */
} rq_rt_event_t;

/* What a transport (sse.h, ws.h) gives the hub. Every callback runs on the hub thread with
 * the subscription's lock held; none is called once rq_rt_unsubscribe() has returned. */
typedef struct rq_rt_sink {
    /* The subscription is consuming (status 0), or could not start: status 404 (no such
     * topic or queue), 400 (the broker refused a binding), 503 (broker unreachable) with a
     * message. Called exactly once, before any deliver(). */
    void (*ready)(void *arg, unsigned status, const char *error);
    /* Queues ev for sending (copy it). 0, or -1 when the sink's send buffer
     * (RT_SEND_BUFFER_BYTES) is full: the hub then ends the subscription as "slow_consumer". */
    int (*deliver)(void *arg, const rq_rt_event_t *ev);
    /* The subscription ended on the hub's side: reason "slow_consumer", "topic_deleted",
     * "queue_deleted", "broker_lost" or "shutdown", detail a sentence. No deliver() after;
     * the transport tells its client, closes, and still calls rq_rt_unsubscribe(). */
    void (*ended)(void *arg, const char *reason, const char *detail);
    void *arg;
} rq_rt_sink_t;

typedef struct rq_rt_sub_spec {
    rq_rt_kind_t kind;
    const char *name;          /* topic or queue name, checked with rq_qname_check */
    const char *const *binds;  /* topics: nbinds patterns checked with rq_tmatch_check; */
    size_t nbinds;             /* 0 means "#" (everything) */
    const rq_filter_t *filter; /* topics: NULL for none; borrowed until rq_rt_unsubscribe */
    int resume;                /* retained topics: 1 to start at after_offset + 1 */
    uint64_t after_offset;     /* (Last-Event-ID), else live */
    const char *key_id;        /* the principal's key id, for the per-key limit ("": none) */
} rq_rt_sub_spec_t;

/* Starts the hub thread, which connects on its own (and again after a loss, with backoff).
 * `cfg` and `metrics` must outlive it. Registers producer_rt_subscriptions (gauge, by kind),
 * producer_rt_messages_delivered_total, producer_rt_slow_disconnects_total and
 * producer_rt_subscriptions_refused_total{reason}. NULL on failure. */
rq_rt_hub_t *rq_rt_hub_new(const rq_config_t *cfg, rq_metrics_t *metrics);

/* Ends every subscription ("shutdown"), closes the connection and joins the thread. The hub
 * stays allocated (later calls fail with 503) until rq_rt_hub_free(). Idempotent. */
void rq_rt_hub_stop(rq_rt_hub_t *h);

/* Stops (if needed) and frees the hub. Every subscription must have been unsubscribed. */
void rq_rt_hub_free(rq_rt_hub_t *h);

/* Opens a subscription for spec (copied; the filter is borrowed). Returns the handle, and
 * sink->ready() follows on the hub thread; or NULL with *status 503 (RT_MAX_SUBSCRIPTIONS
 * reached, hub stopped, or no connection yet) or 429 (RT_MAX_SUBSCRIPTIONS_PER_KEY) and the
 * reason in err. */
rq_rt_sub_t *rq_rt_subscribe(rq_rt_hub_t *h, const rq_rt_sub_spec_t *spec, const rq_rt_sink_t *sink,
                             unsigned *status, char *err, size_t errlen);

/* Acks the queue message of `tag` (written to the client, or acked by it). Ignored for
 * topics and after the subscription ended; never call it after rq_rt_unsubscribe(s).
 * Thread-safe, never blocks on the broker. */
void rq_rt_ack(rq_rt_hub_t *h, rq_rt_sub_t *s, uint64_t tag);

/* Ends s from the transport's side (the client went away): no sink callback after this
 * returns; the consumer is cancelled and the channel closed on the hub thread later (a
 * queue's unacked messages go back to it), and s is freed there. Thread-safe. */
void rq_rt_unsubscribe(rq_rt_hub_t *h, rq_rt_sub_t *s);

/* ---- topic administration (on the hub's thread, answered through done) ---- */

typedef enum { RQ_RT_T_CREATE = 0, RQ_RT_T_GET, RQ_RT_T_LIST, RQ_RT_T_DELETE } rq_rt_topic_op_t;

/* A topic job. The submitter fills op, name (not LIST), retention_s (CREATE: 0 none),
 * done/done_arg and keeps the job valid until done has run (on the hub thread, once; on the
 * hub's management worker when the hub stops meanwhile).
 *   CREATE  201 {"name","exchange","retention_s"}; 200 when the same topic exists; 409 it
 *           exists with another retention; 400 bad name
 *   GET     200 {"name","exchange","retention_s","subscribers"(this replica)}; 404
 *   LIST    200 {"topics":[{"name","exchange","retention_s"}...],"count"} from the
 *           management API (every replica's topics); 503 without it
 *   DELETE  200 {"deleted": name}; 404. Subscribers on every replica see their queue go
 *           (this replica's end with "topic_deleted")
 * Broker unreachable: 503 {"error"}. */
typedef struct rq_rt_topic_job {
    rq_rt_topic_op_t op;
    char name[201];
    int64_t retention_s;
    void (*done)(struct rq_rt_topic_job *job, void *arg);
    void *done_arg;
    unsigned status;              /* results */
    json_t *body;                 /* new reference, the submitter's */
    struct rq_rt_topic_job *next; /* private (set by rq_rt_topic_submit) */
    int mgmt_state;               /* private: 0, 1 at the management worker, 2 answered */
    int mgmt_rc;                  /* private: the management lookup's result */
    int64_t mgmt_retention_s;     /* private */
} rq_rt_topic_job_t;

/* Queues a topic job. 0, or -1 when the hub is stopped (done is not called: answer 503). */
int rq_rt_topic_submit(rq_rt_hub_t *h, rq_rt_topic_job_t *job);

/* 1 when the hub knows topic `name` exists (created or seen within the last second), for the
 * publish route's 404 without a round trip; 0 unknown (ask with RQ_RT_T_GET). Thread-safe. */
int rq_rt_topic_known(rq_rt_hub_t *h, const char *name);

#endif
