/* lease_fwd.h - an ack, nack or lease extension for a lease another replica holds, forwarded
 * to that replica over the broker.
 *
 * Leases live on the producer replica that handed them out (producer/queues/lease.h): the
 * unacked delivery is on its AMQP connection. Every lease id starts with the holder's replica
 * id. Each replica's forwarder thread (one AMQP connection of its own) consumes its own
 * exclusive, auto-delete queue "relayq.replica.<id>", so:
 *
 *   - a replica that receives POST .../ack|nack|lease for a lease of replica R publishes the
 *     request (JSON, type "relayq.lease.request") to "relayq.replica.<R>" (mandatory), with
 *     reply_to its own queue and a correlation id, and answers the client with R's answer
 *     (type "relayq.lease.reply": the HTTP status and the JSON body R's leaser gave);
 *   - the broker returns the request when R's queue is gone. Then R's leaser's presence
 *     queue (RQ_LEASE_PRESENCE_FMT, exclusive to the leaser's connection) tells: missing, R's
 *     leases are gone with it (the broker requeued them): 409 "the lease's replica is gone";
 *     there, only R's forwarder is reconnecting (or its queue was deleted, and a cancel
 *     makes it declare the queue again): 503, retry;
 *   - no answer within PUBLISH_TIMEOUT_MS (R overloaded, or the request lost with a
 *     connection): 503 with Retry-After (the lease may or may not have been settled: an ack
 *     retried after that is 409 when it was).
 *
 * Who may ack was checked by the receiving replica (the consume permission on the queue);
 * the holder checks that the lease is one of its own and is for that message of that queue.
 * Anyone who can publish to relayq.replica.* on the broker could send such requests, but
 * only for lease ids they know (128 random bits each): broker credentials are the trust
 * boundary, as for the queues themselves.
 */
#ifndef RQ_LEASE_FWD_H
#define RQ_LEASE_FWD_H

#include "config.h"
#include "lease.h"
#include "metrics.h"

typedef struct rq_lease_fwd rq_lease_fwd_t;

#define RQ_LEASE_FWD_PREFIX "relayq.replica."

/* Starts the forwarder thread for this replica (rq_leaser_replica(leaser)). cfg, leaser and
 * metrics must outlive it. Registers producer_lease_forwarded_total{role,outcome}. The
 * connection is made by the thread (again with backoff after a loss). Returns NULL when out
 * of memory or the thread cannot start. */
rq_lease_fwd_t *rq_lease_fwd_new(const rq_config_t *cfg, rq_leaser_t *leaser,
                                 rq_metrics_t *metrics);

/* 1 when job (an ack, nack or extend) names a lease of another replica: then it goes to
 * rq_lease_fwd_submit(), else to rq_leaser_submit(). */
int rq_lease_fwd_wanted(const rq_lease_fwd_t *f, const rq_lease_job_t *job);

/* Forwards job to the replica named by its lease id; thread-safe. Returns 0: job->done is
 * called once, on the forwarder thread, with job->status, job->result and job->replica as
 * the holder's leaser set them (or 409/503 as above); job must live until then. Returns -1
 * without calling it: job->status (503) and job->result say why (not connected, stopping,
 * too many forwards in flight). */
int rq_lease_fwd_submit(rq_lease_fwd_t *f, rq_lease_job_t *job);

/* Stops the thread: forwards in flight end with 503, then the connection closes (and with it
 * the replica's queue). Idempotent; NULL is a no-op. */
void rq_lease_fwd_stop(rq_lease_fwd_t *f);

/* rq_lease_fwd_stop(), then frees. NULL is a no-op. Call after rq_leaser_stop() (the requests
 * served for other replicas end through the leaser, which may not call back into a freed
 * forwarder). */
void rq_lease_fwd_free(rq_lease_fwd_t *f);

/* ---- the wire format (pure; exposed for the unit tests) ---- */

/* The request body for job (kind, queue, lease_id, msgid, requeue, delay_ms, reason,
 * lease_s) as a new JSON string (free()), or NULL when out of memory. */
char *rq_lease_fwd_encode(const rq_lease_job_t *job);

/* Fills job's request fields from a request body (len bytes, untrusted: any publisher may
 * have sent it). Returns 0, or -1 when it is not a well-formed request (wrong types, a
 * string too long for its field, an unknown kind). */
int rq_lease_fwd_decode(const char *body, size_t len, rq_lease_job_t *job);

#endif
