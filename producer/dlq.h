/* dlq.h - inspecting and replaying the dead-letter queue (<queue>.dlq).
 *
 * Both operations open a short-lived AMQP connection of their own, so they never disturb
 * the publisher's connection, and block for the broker round trips (each bounded by
 * RABBITMQ_CONNECT_TIMEOUT_MS). The HTTP API never runs them on an HTTP thread: it hands
 * them to an rq_dlq_worker_t (one thread, a bounded FIFO of jobs) and suspends the
 * connection until the job's callback resumes it, so a slow DLQ call never stalls the other
 * connections of that thread (health probes included).
 *
 * Reasons come from the headers the consumer sets when it dead-letters a message
 * (x-relayq-reason, x-relayq-attempts) or, for messages the broker dead-lettered itself,
 * from the first x-death entry ("rejected", "expired", "delivery_limit").
 */
#ifndef RQ_DLQ_H
#define RQ_DLQ_H

#include <amqp.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stddef.h>

#include "config.h"

#define RQ_DLQ_MAX_LIMIT 1000             /* most messages on one GET /dlq page */
#define RQ_DLQ_PAGE_MAX_BYTES (2u << 20)  /* most JSON bytes of one GET /dlq page */
#define RQ_DLQ_BODY_MAX_BYTES (64u << 10) /* body bytes shown per message (then cut) */
#define RQ_DLQ_QUEUE_MAX 16               /* jobs waiting for the worker; more get 503 */

/* Returns a new JSON object describing one page of the DLQ, which stays in the DLQ in its
 * order: {"queue","count","offset","limit","max_bytes","max_body_bytes","truncated",
 * "next_offset","messages":[{"message_id","reason","attempts","content_type","body",
 * "body_bytes","body_truncated"}...]}. The page holds the messages at positions
 * offset..offset+limit-1 (0 = the head; the ones before are read and put back), stopping
 * early when the page would pass max_bytes of compact JSON ("truncated": true). A body over
 * RQ_DLQ_BODY_MAX_BYTES is cut (on a UTF-8 boundary) and flagged with "body_truncated" and
 * its full "body_bytes". "next_offset" is where the next page starts, or null after the last
 * message. `cancel` (may be NULL) is polled between broker round trips: when it becomes
 * nonzero the call fails. On failure returns NULL with a reason in err. */
json_t *rq_dlq_peek(const RabbitMQConfig *cfg, size_t offset, size_t limit, size_t max_bytes,
                    const atomic_int *cancel, char *err, size_t errlen);

/* Moves up to `count` messages (0 = all present when called) from the DLQ back to the
 * request queue: each is republished with the headers of rq_dlq_replay_headers(), confirmed
 * by the broker, and only then removed from the DLQ (so a failure duplicates, never loses).
 * `cancel` as for rq_dlq_peek() (checked between batches of 100). Returns the number moved
 * (>= 0), or -1 with err filled; *remaining gets the DLQ depth afterwards. */
long rq_dlq_retry(const RabbitMQConfig *cfg, size_t count, size_t *remaining,
                  const atomic_int *cancel, char *err, size_t errlen);

/* The headers of a replayed message: every entry of `in` (may be NULL: no headers) but the
 * broker's dead-letter history (x-death, x-first-death-*, x-last-death-*) and relayq's own
 * counters and reasons (x-relayq-* but the dedup key x-relayq-uid, which stays), followed by
 * x-relayq-replayed = true. out->entries is a new array
 * the caller free()s; keys and values are borrowed from `in`. Returns 0, or -1 when out of
 * memory (*out untouched). */
int rq_dlq_replay_headers(const amqp_table_t *in, amqp_table_t *out);

typedef enum { RQ_DLQ_PEEK = 0, RQ_DLQ_RETRY } rq_dlq_kind_t;

/* One GET /dlq or POST /dlq/retry for the worker. The submitter owns the memory and keeps it
 * valid until done() has run. */
typedef struct rq_dlq_job {
    rq_dlq_kind_t kind;
    size_t offset, limit; /* RQ_DLQ_PEEK */
    size_t count;         /* RQ_DLQ_RETRY: 0 moves all */
    /* Runs once on the worker thread (or in rq_dlq_worker_free()) when the job is over;
     * after it returns the worker never touches the job again. */
    void (*done)(struct rq_dlq_job *job, void *arg);
    void *done_arg;
    /* results: a new JSON object to send with 200 (peek: the page; retry: {"status",
     * "moved","remaining"}), owned by the submitter; or NULL with the reason in error */
    json_t *result;
    char error[300];
    struct rq_dlq_job *next; /* private to the worker */
} rq_dlq_job_t;

typedef struct rq_dlq_worker rq_dlq_worker_t;

/* Starts the worker thread; cfg is borrowed and must outlive the worker. NULL on failure. */
rq_dlq_worker_t *rq_dlq_worker_new(const RabbitMQConfig *cfg);

/* Queues a job (FIFO). Thread-safe. Returns 0 (job->done will run exactly once), or -1 with
 * job->error filled when RQ_DLQ_QUEUE_MAX jobs wait already or the worker is stopping (then
 * done never runs). */
int rq_dlq_worker_submit(rq_dlq_worker_t *w, rq_dlq_job_t *job);

/* Stops the worker: the running job is cancelled at its next broker round trip, the queued
 * ones complete with an error (their done runs), and the thread is joined. NULL is a no-op.
 * Call it before stopping the HTTP daemon, which must not hold suspended connections. */
void rq_dlq_worker_free(rq_dlq_worker_t *w);

#endif
