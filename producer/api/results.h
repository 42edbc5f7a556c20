/* results.h - what the producer knows of messages, shared by its replicas: the timeline index
 * (timeline.h) fed by this producer's own events and, with STATUS_STREAM, by the status stream
 * (common/status_log.h) that every replica and consumer writes to; and idempotency keys.
 *
 * The producer's events: accepted (the API took the message) and confirmed (the broker
 * stored it; with the message's Idempotency-Key) or not_stored (the publish failed). They are
 * applied to the local index at once, and, once the job is done, appended to the stream as one
 * stream message per job (up to 512 KiB each: the job's events, one JSON object per line), so
 * another replica sees a message once it is confirmed. The consumer appends delivered,
 * retried, dead_lettered and replied; this producer also applies each reply that reaches its
 * callback queue at once. The reader passes every event of the other writers to the index (what
 * this process wrote it skips: applied already), and observes status_visibility_seconds (now
 * minus the event's time).
 *
 * Without STATUS_STREAM the index holds this producer's own messages only (a restart
 * forgets them). Thread-safe.
 */
#ifndef RQ_RESULTS_H
#define RQ_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"
#include "publisher.h"
#include "status_log.h"
#include "timeline.h"

typedef struct rq_results rq_results_t;

/* Makes the index (MESSAGE_STORE_SIZE messages, IDEMPOTENCY_KEYS_MAX keys kept
 * IDEMPOTENCY_TTL_S) and, with STATUS_STREAM, the stream log (nothing started). NULL on
 * failure (logged). */
rq_results_t *rq_results_new(const rq_config_t *cfg, rq_metrics_t *m);

/* Starts the stream's thread (no-op without STATUS_STREAM). Returns 0 or -1. */
int rq_results_start(rq_results_t *r);

/* At a stop (once the API takes no new connections, before the API drains): wakes every long poll,
 * and answers every request waiting on the stream (barriers, keyed confirms: ok 0), so that no
 * connection stays suspended; from then on nothing waits on the stream. */
void rq_results_stop(rq_results_t *r);

/* Stops the stream's thread, wakes every long poll, frees. NULL is a no-op. */
void rq_results_free(rq_results_t *r);

/* The index (owned by r). */
rq_timeline_t *rq_results_timeline(rq_results_t *r);

/* 1 with STATUS_STREAM set; 0 without. */
int rq_results_stream_on(const rq_results_t *r);

/* The stream's state for answers: "off" (no STATUS_STREAM), "up", "catching_up" (replaying
 * at start), "unavailable". */
const char *rq_results_stream_state(const rq_results_t *r);

/* The accepted events of job's messages (queue: the job's queue name), at ts_ms. Local. */
void rq_results_accepted(rq_results_t *r, const rq_pub_job_t *job, const char *queue,
                         int64_t ts_ms);

/* The job is done: confirmed events for its stored messages (with their idem_key),
 * not_stored for those not stored, applied locally and appended to the stream. When done is
 * not NULL and some stored message has an idem_key and the stream is up, done(arg, ok) is
 * called once the stream confirmed the append (ok 1) or at its failure/timeout_ms (ok 0),
 * on the stream's thread, and 1 is returned; else 0 is returned and done is never called. */
int rq_results_job_done(rq_results_t *r, const rq_pub_job_t *job, const char *queue, int timeout_ms,
                        rq_status_done_fn done, void *arg);

/* How many of a reply's len bytes an event keeps: at most max, and for a reply that is valid
 * UTF-8 never inside a character (the cut stays text). */
size_t rq_results_cut(const char *s, size_t len, size_t max);

/* A reply that reached the callback queue for message_id (len bytes). Local. */
void rq_results_replied(rq_results_t *r, const char *message_id, const char *reply, size_t len);

/* A read barrier on the stream (status_log.h): done(arg, 1) once every event confirmed before
 * this call is in the index. Returns 0, or -1 without a stream or while it is unavailable
 * (done not called: the caller decides from the index alone). */
int rq_results_barrier(rq_results_t *r, int timeout_ms, rq_status_done_fn done, void *arg);

/* Claims idempotency key `key` for a request in flight on this replica. Returns 1 when the
 * key is known (a message was confirmed with it): its message id is copied to id (idlen
 * bytes) and nothing is claimed; 0 when claimed (the caller must rq_results_key_release()
 * it); -1 when another request of this replica holds it now; -2 out of memory. */
int rq_results_key_claim(rq_results_t *r, const char *key, char *id, size_t idlen);

/* Releases a claim made by rq_results_key_claim(). */
void rq_results_key_release(rq_results_t *r, const char *key);

#endif
