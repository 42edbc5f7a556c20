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
#include <stdint.h>

#include "config.h"
#include "list.h"

#define RQ_DLQ_MAX_LIMIT 1000             /* most messages on one GET /dlq page */
#define RQ_DLQ_PAGE_MAX_BYTES (2u << 20)  /* most JSON bytes of one GET /dlq page */
#define RQ_DLQ_BODY_MAX_BYTES (64u << 10) /* body bytes shown per message (then cut) */
#define RQ_DLQ_QUEUE_MAX 16               /* jobs waiting for the worker; more get 503 */
/* Largest GET /dlq offset (400 beyond). The DLQ is read from its head with one basic.get
 * round trip per message, so an offset costs about that many round trips; deeper than this
 * does not fit a job's time budget anyway (each job is bounded by PUBLISH_TIMEOUT_MS). */
#define RQ_DLQ_MAX_OFFSET 100000

/* When a DLQ call gives up. All fields may be 0 (never). */
typedef struct rq_dlq_stop {
    const atomic_int *cancel; /* polled between broker round trips: nonzero fails the call
                               * ("the producer is stopping") */
    int64_t deadline_ns;      /* rq_mono_ns() time after which the call ends early with what
                               * it has (see rq_dlq_peek, rq_dlq_retry); 0: none */
    int watch_fd;             /* nonzero: client_fd is the socket of the requesting client; */
    int client_fd;            /* once its peer has closed it the call fails ("the client went
                               * away") */
} rq_dlq_stop_t;

/* Returns a new JSON object describing one page of the DLQ, which stays in the DLQ in its
 * order: {"queue","count","offset","limit","max_bytes","max_body_bytes","truncated",
 * "timed_out","next_offset","messages":[{"message_id","reason","attempts","content_type","body",
 * "body_bytes","body_truncated"}...]}. The page holds the messages at positions
 * offset..offset+limit-1 (0 = the head; the ones before are read and put back), stopping
 * early when the page would pass max_bytes of compact JSON ("truncated": true). A body over
 * RQ_DLQ_BODY_MAX_BYTES is cut (on a UTF-8 boundary) and flagged with "body_truncated" and
 * its full "body_bytes". "next_offset" is where the next page starts, or null after the last
 * message. When stop->deadline_ns passes after the page's first message, the page ends there
 * ("truncated" and "timed_out": true, "next_offset" where to continue); when it passes
 * before the read reached `offset` the call fails (asking again cannot get further). `stop`
 * may be NULL; see rq_dlq_stop_t. On failure returns NULL with a reason in err. */
json_t *rq_dlq_peek(const RabbitMQConfig *cfg, size_t offset, size_t limit, size_t max_bytes,
                    const rq_dlq_stop_t *stop, char *err, size_t errlen);

/* Moves up to `count` messages (0 = all present when called) from the DLQ back to the
 * request queue: each is republished with the headers of rq_dlq_replay_headers(), confirmed
 * by the broker, and only then removed from the DLQ (so a failure duplicates, never loses).
 * `stop` as for rq_dlq_peek() (may be NULL; checked between batches of 16): past its
 * deadline, or cancelled, or when the client went away after the first batch, the call
 * returns the number moved so far with *partial (may be NULL) set to 1 (the moved ones are
 * confirmed and gone from the DLQ: POST again for the rest); cancelled or client gone before
 * the first batch, it fails. Returns the number moved (>= 0), or -1 with err
 * filled; *remaining gets the DLQ depth afterwards. */
long rq_dlq_retry(const RabbitMQConfig *cfg, size_t count, size_t *remaining,
                  const rq_dlq_stop_t *stop, int *partial, char *err, size_t errlen);

/* rq_dlq_peek() and rq_dlq_retry() for the DLQ "<queue>.dlq" of any queue of the queue
 * service (and back to `queue`); queue NULL: the default queue (REQUEST_QUEUE), exactly the
 * calls above. With a queue, the queue itself must exist: when it does not, the call fails
 * with *not_found (may be NULL) set to 1 and "no queue <queue>" in err. */
json_t *rq_dlq_peek_queue(const RabbitMQConfig *cfg, const char *queue, size_t offset, size_t limit,
                          size_t max_bytes, const rq_dlq_stop_t *stop, int *not_found, char *err,
                          size_t errlen);
long rq_dlq_retry_queue(const RabbitMQConfig *cfg, const char *queue, size_t count,
                        size_t *remaining, const rq_dlq_stop_t *stop, int *partial, int *not_found,
                        char *err, size_t errlen);

/* The headers of a replayed message: every entry of `in` (may be NULL: no headers) but the
 * broker's dead-letter history (x-death, x-first-death-*, x-last-death-*) and relayq's own
 * counters and reasons (x-relayq-* but the dedup key x-relayq-uid, which stays), followed by
 * x-relayq-replayed = true. out->entries is a new array
 * the caller free()s; keys and values are borrowed from `in`. Returns 0, or -1 when out of
 * memory (*out untouched). */
int rq_dlq_replay_headers(const amqp_table_t *in, amqp_table_t *out);

/* RQ_DLQ_RUN: any broker job of the worker's owner (the queue service's admin calls): the
 * worker calls job->run(job, stop) on its thread, which fills the results itself. */
typedef enum { RQ_DLQ_PEEK = 0, RQ_DLQ_RETRY, RQ_DLQ_RUN } rq_dlq_kind_t;

/* One GET /dlq or POST /dlq/retry (or another broker job) for the worker. The submitter owns
 * the memory and keeps it valid until done() has run. */
typedef struct rq_dlq_job {
    rq_dlq_kind_t kind;
    const char *queue; /* PEEK, RETRY: the queue whose DLQ (borrowed); NULL: REQUEST_QUEUE */
    void (*run)(struct rq_dlq_job *job, const rq_dlq_stop_t *stop); /* RQ_DLQ_RUN */
    int not_found;        /* result: 1 when `queue` does not exist */
    size_t offset, limit; /* RQ_DLQ_PEEK */
    size_t count;         /* RQ_DLQ_RETRY: 0 moves all */
    int budget_ms;        /* the job's time budget from when it starts running; 0: none */
    int watch_fd;         /* nonzero: give up when client_fd's peer closed it */
    int client_fd;
    /* Runs once on the worker thread when the job is over (by rq_dlq_worker_stop() at the
     * latest);
     * after it returns the worker never touches the job again. */
    void (*done)(struct rq_dlq_job *job, void *arg);
    void *done_arg;
    /* results: a new JSON object to send with 200 (peek: the page; retry: {"status",
     * "moved","remaining","partial"}), owned by the submitter; or NULL with the reason in error */
    json_t *result;
    char error[300];
    rq_list_node_t node; /* private to the worker: its queue */
} rq_dlq_job_t;

typedef struct rq_dlq_worker rq_dlq_worker_t;

/* Starts the worker thread; cfg is borrowed and must outlive the worker. NULL on failure. */
rq_dlq_worker_t *rq_dlq_worker_new(const RabbitMQConfig *cfg);

/* Queues a job (FIFO). Thread-safe. Returns 0 (job->done will run exactly once), or -1 with
 * job->error filled when RQ_DLQ_QUEUE_MAX jobs wait already or the worker is stopping or
 * stopped (then done never runs: answer at once). Safe to call until rq_dlq_worker_free(). */
int rq_dlq_worker_submit(rq_dlq_worker_t *w, rq_dlq_job_t *job);

/* Stops the worker: from now on submit fails at once; the running job is cancelled at its
 * next broker round trip, the queued ones complete with "the producer is stopping" (every
 * done has run when this returns), and the thread is joined. The struct stays valid for
 * submit until rq_dlq_worker_free(). Idempotent; not concurrently with itself. NULL is a
 * no-op. Call it before stopping the HTTP daemon, which must not hold suspended connections,
 * and free the worker after the daemon is stopped (its threads may submit until then). */
void rq_dlq_worker_stop(rq_dlq_worker_t *w);

/* Stops the worker (if not yet) and frees it. Nobody may submit any more. NULL is a no-op. */
void rq_dlq_worker_free(rq_dlq_worker_t *w);

#endif
