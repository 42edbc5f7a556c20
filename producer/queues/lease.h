/* lease.h - the pull engine: GET /queues/{id}/messages with leases, and ack/nack/extend.
 *
 * One thread (the leaser) owns one AMQP connection. Channel 1 consumes (basic.consume, manual
 * ack) each queue that pulls ask for, and keeps its deliveries unacked: a lease IS the unacked
 * delivery, so a crash or kill -9 of the producer gives every leased message back (the broker
 * requeues the deliveries of a closed connection). Deliveries wait in a per-queue buffer until
 * a GET takes them. The buffer is bounded by the consumer's prefetch (BUF_HIGH, 2000: room for
 * the leases of 16 clients pulling 100 at a time and a buffer): a consumer whose credit is
 * spent (BUF_HIGH of its deliveries leased and not yet acked or rejected: an ack gives its
 * credit back) is cancelled and made anew with a new tag, so the number of leases is not
 * bound by the prefetch while the buffer is. A queue nobody pulled from for LEASE_IDLE_MS
 * (5 s, no long-poll waiting) has its consumer cancelled and its buffer given back
 * (basic.reject requeue): a replica hides messages it has not handed out for at most about
 * LEASE_IDLE_MS (on a quorum queue such a give-back counts as a delivery in x-delivery-count,
 * so the next attempt number is one higher). A pull that finds the buffer empty starts the
 * consumer and waits for the deliveries on their way (100 ms for a new consumer); when the
 * consumer runs already it is parked (PARK_MS, 25 ms, the thread going on) and answered once
 * its max is buffered or at the end of those 25 ms with what came, so wait_s=0 still returns
 * what the queue holds and pulls get full batches. Acks, nacks and extends run before pulls
 * (and between two pulls), so an ack waits for one pull's work at most.
 *
 * Every queue's consumer shares channel 1: RabbitMQ looks an ack's delivery tag up by walking
 * the channel's unacked deliveries from the oldest, so a slow queue's buffered deliveries make
 * every ack of a busy queue on the same replica dearer (measured: 96 us of broker CPU per
 * message instead of 27 with a second, slowly pulled queue; a channel per queue would fix it).
 * Channel 2 (confirm mode) checks that queues exist (passive queue.declare, which closes the
 * channel on 404: never channel 1, whose deliveries would all be requeued), declares delay
 * queues and republishes for nack (delay queue, DLQ, requeue), each confirmed before the
 * original is acked. Acks and rejects of one loop turn go out in one send().
 *
 * A batch ack (RQ_LJ_ACKS, job->acks[0..nacks)) is one job: each item is checked like a
 * single ack (queue, lease id, message id) and acked or listed in "failed" on its own; the
 * acks go out with the loop turn's others in one send() (one basic.ack per delivery:
 * multiple=true would also ack any other unacked delivery of the channel with a lower tag,
 * another client's lease or a buffered delivery, so it is not used), and the job is answered
 * {"acked": n, "failed": [{"index", "message_id", "error"}...]} once they are written.
 *
 * max_retries of a nack with requeue: the queue's own x-relayq-max-retries argument when the
 * management API gives it (qsettings.h: cached per queue, refreshed at most every 30 s by a
 * lookup thread; the first pull of a queue asks for it), else MAX_RETRIES. A requeue nack
 * for a queue whose value is still being looked up waits for it (at most 2 s, parked: the
 * thread goes on), then MAX_RETRIES applies.
 *
 * Long-polls (wait_s > 0 on an empty queue) wait in the leaser and are served as soon as a
 * delivery for their queue arrives (and at least every RQ_LEASE_POLL_MS). A waiter whose
 * client closed its connection is dropped (its socket is peeked every turn, before messages
 * are taken for it).
 *
 * Message fields (rq_lease_job_t.result of a pull, one object per message):
 *   message_id   the AMQP message_id property; else the x-relayq-uid header; else a new
 *                "gen-<uuid>" (made on each delivery; a nack republish keeps it).
 *   body | body_base64, content_type, headers (the AMQP headers as JSON, x-relayq-* too)
 *   attempt      1 on the first delivery: x-relayq-attempts (default 1, set by a nack
 *                requeue's republish) + x-delivery-count (quorum queues), or + 1 when the
 *                broker flags the delivery redelivered (classic queues: a lease expiry or a
 *                connection loss; a classic message redelivered twice counts once more).
 *   lease_id, lease_expires_at (ISO 8601), lease_expires_ms (epoch ms)
 *
 * Bounds: at most max_leases (LEASE_MAX_OUTSTANDING) leases and max_bytes (LEASE_MAX_BYTES)
 * of leased and buffered messages (each kept until acked, for a nack's republish), at most
 * max_waiters (LEASE_MAX_WAITERS) long-polls, at most max_jobs jobs queued for the thread;
 * past them a job is refused with 503 at once.
 */
#ifndef RQ_LEASE_H
#define RQ_LEASE_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "jbuf.h"
#include "lease_table.h"
#include "metrics.h"
#include "qname.h"

#define RQ_LEASE_POLL_MS 20
#define RQ_LEASE_MAX_PULL 100   /* messages per GET */
#define RQ_LEASE_MAX_S 3600     /* longest lease */
#define RQ_LEASE_MAX_WAIT_S 30  /* longest long-poll */
#define RQ_LEASE_REASON_MAX 200 /* a nack's reason */
/* The leaser's presence queue: exclusive to its connection, so it exists while the replica's
 * leases do (the %s is the replica id). */
#define RQ_LEASE_PRESENCE_FMT "relayq.replica.%s.leases"

typedef struct rq_lease_limits {
    size_t max_leases;  /* 0: LEASE_MAX_OUTSTANDING (10000) */
    size_t max_bytes;   /* 0: LEASE_MAX_BYTES (64 MiB; body + 4 KiB per lease) */
    size_t max_waiters; /* 0: LEASE_MAX_WAITERS (1000) */
    size_t max_jobs;    /* 0: 4096 */
    int idle_ms;        /* 0: LEASE_IDLE_MS (5000): an unpulled queue's buffer is given back */
} rq_lease_limits_t;

typedef enum { RQ_LJ_PULL = 0, RQ_LJ_ACK, RQ_LJ_NACK, RQ_LJ_EXTEND, RQ_LJ_ACKS } rq_lease_kind_t;

#define RQ_LEASE_MAX_ACKS 1000 /* items of one batch ack */
#define RQ_LEASE_MSGID_MAX 255

/* One item of a batch ack (RQ_LJ_ACKS). */
typedef struct rq_lease_ack_item {
    char lease_id[RQ_LEASE_ID_LEN + 1]; /* "-" when the client's was too long: it fails */
    char msgid[RQ_LEASE_MSGID_MAX + 1];
} rq_lease_ack_item_t;

typedef struct rq_lease_job rq_lease_job_t;
struct rq_lease_job {
    /* the request, filled in by the caller */
    rq_lease_kind_t kind;
    char queue[RQ_QNAME_MAX + 1];
    int max, lease_s, wait_s;             /* pull (lease_s also extend) */
    char lease_id[RQ_LEASE_ID_LEN + 1];   /* ack, nack, extend */
    char msgid[256];                      /* ack, nack, extend: must be the lease's */
    int requeue;                          /* nack */
    long long delay_ms;                   /* nack with requeue: 0 = none */
    char reason[RQ_LEASE_REASON_MAX + 1]; /* nack */
    int client_fd;                        /* the client's socket (peeked), -1: not watched */
    rq_lease_ack_item_t *acks;            /* batch ack: nacks items (the caller's memory) */
    size_t nacks;
    void (*done)(rq_lease_job_t *job, void *arg); /* on the leaser thread, once, at the end */
    void *done_arg;
    /* the outcome, set before done() */
    unsigned status; /* HTTP status */
    json_t *result;  /* the answer's JSON object (new reference, the job's); for a pull
                        answered 200 {"queue","messages":[],"replica"}, the messages in: */
    rq_jbuf_t msgs;  /* a pull's messages, their objects written comma-separated */
    size_t nmsgs;
    char replica[RQ_LEASE_REPLICA_LEN + 1];
    /* the leaser's */
    rq_lease_job_t *next;
    int64_t deadline_ms;
    int settings_asked; /* nack: its queue's max_retries was asked for */
};

typedef struct rq_leaser rq_leaser_t;

/* The answer's text for a job done() was called for: compact JSON of job->result, or for a
 * pull answered 200 {"queue","messages":[...],"replica"} with job's messages. A heap string
 * (caller frees) with its length in *len (may be NULL), or NULL when out of memory. */
char *rq_lease_job_text(const rq_lease_job_t *job, size_t *len);

/* Frees what a finished job holds (its result and messages). Safe twice. */
void rq_lease_job_clear(rq_lease_job_t *job);

/* Starts the leaser thread for cfg's broker (cfg and metrics outlive it), registering its
 * metrics: producer_lease_expired_total, producer_leases (gauge), producer_pulled_total,
 * producer_lease_ops_total{op,outcome}. The connection is made by the thread (and remade with
 * backoff after a loss: every lease is then gone, the broker requeued them). lim NULL (or a
 * field 0): cfg's LEASE_MAX_OUTSTANDING, LEASE_MAX_BYTES, LEASE_MAX_WAITERS, LEASE_IDLE_MS.
 * Returns NULL when out of memory or the thread cannot start. */
rq_leaser_t *rq_leaser_new(const rq_config_t *cfg, rq_metrics_t *metrics,
                           const rq_lease_limits_t *lim);

/* Hands job to the leaser (thread-safe). Returns 0: job->done will be called on the leaser
 * thread, once (job must live until then). Returns -1 without calling it: job->status (503)
 * and job->result say why (stopping, too many jobs or waiters). */
int rq_leaser_submit(rq_leaser_t *l, rq_lease_job_t *job);

/* The replica id in this producer's lease ids. */
const char *rq_leaser_replica(const rq_leaser_t *l);

/* Stops the thread: the jobs queued are done, long-polls end with their answer (an empty
 * list), then the connection is closed (the broker requeues every leased message). Later
 * submits fail. Idempotent; NULL is a no-op. Not from the leaser thread. */
void rq_leaser_stop(rq_leaser_t *l);

/* rq_leaser_stop(), then frees. NULL is a no-op. */
void rq_leaser_free(rq_leaser_t *l);

#endif
