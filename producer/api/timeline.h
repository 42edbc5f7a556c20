/* timeline.h - the producer's bounded index of message timelines and idempotency keys, for
 * GET /messages/{id} (any replica) and Idempotency-Key.
 *
 * Fed with lifecycle events (common/status_event.h): the producer's own, applied at once, and
 * every event read from the status stream (its own again among them). Applying is idempotent:
 * a message keeps at most one event per (type, attempt); a repeat is ignored. A message is
 * known by its id; its entry belongs to one uid: an event with another, non-empty uid than the
 * entry's starts the entry again if it is an accepted or confirmed event newer than the
 * entry's first event (the id was reused by a newer message), and is ignored otherwise.
 *
 * Status, from the events held: "processed" (replied), "failed" (dead_lettered or
 * not_stored), "processing" (delivered or retried), "queued" (accepted or confirmed). A
 * final status (processed, failed) never goes back, except that a later attempt's events
 * after a dead_lettered (a message moved back from the DLQ) make it processing again.
 *
 * Bounds: at most `capacity` messages (the least recently created entry is evicted first);
 * at most RQ_TIMELINE_EVENTS_MAX events per message (beyond, the oldest after the first are
 * dropped and counted in "events_dropped"); at most `keys_capacity` idempotency keys, each
 * kept for key_ttl_ms after its confirmed event's ts (the oldest evicted first when full).
 *
 * Long polls: rq_timeline_wait() registers a waiter woken once when the message's status is
 * final or at its deadline, by a timer thread the timeline owns.
 * Thread-safe (one mutex); callbacks run without it held.
 */
#ifndef RQ_TIMELINE_H
#define RQ_TIMELINE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "status_event.h"

#define RQ_TIMELINE_EVENTS_MAX 32
/* Distinct event sources and queue names kept once each for the timeline's life; texts
 * beyond are copied per event or message. */
#define RQ_TIMELINE_INTERN_MAX 1024

typedef struct rq_timeline rq_timeline_t;

typedef enum rq_tl_status {
    RQ_TL_UNKNOWN = 0,
    RQ_TL_QUEUED,
    RQ_TL_PROCESSING,
    RQ_TL_PROCESSED,
    RQ_TL_FAILED,
} rq_tl_status_t;

/* Makes an index of at most capacity messages and keys_capacity keys (0 keeps none), keys
 * kept key_ttl_ms (> 0), and starts its timer thread. NULL on failure. */
rq_timeline_t *rq_timeline_new(size_t capacity, size_t keys_capacity, int64_t key_ttl_ms);

/* Wakes every waiter (their callbacks run, timed_out 1), stops the timer thread and frees the
 * index. NULL is a no-op. */
void rq_timeline_free(rq_timeline_t *tl);

/* Applies ev (copied; see the header comment). A confirmed event with a key also records the
 * key (-> ev->id, ev->uid, ev->ts_ms). Wakes the message's waiters when its status became
 * final. Returns 1 when applied, 0 when ignored (a repeat, another uid, capacity 0), -1 on
 * allocation failure or an invalid event. */
int rq_timeline_apply(rq_timeline_t *tl, const rq_status_event_t *ev);

/* The message's status (RQ_TL_UNKNOWN when not held). */
rq_tl_status_t rq_timeline_status(rq_timeline_t *tl, const char *id);

/* The status's name: "queued", "processing", "processed", "failed" (NULL for unknown). */
const char *rq_tl_status_name(rq_tl_status_t s);

/* A new JSON object for message id (caller owns it), or NULL when not held:
 *   {"message_id", "status", "uid"?, "queue"?, "attempts" (delivered events),
 *    "queued_at"? (ISO 8601, first accepted/confirmed), "processed_at"? (replied),
 *    "reply"? (text; or "reply_b64" for bytes that are not UTF-8), "reply_truncated"?,
 *    "error"? (the last retried/dead_lettered/not_stored error),
 *    "timeline": [{"event", "at" (ISO 8601), "ts" (epoch ms), "attempt"?, "error"?,
 *                  "reply"?/"reply_b64"?, "truncated"?, "by" (src)}...] in ts order,
 *    "events_dropped"? (when over RQ_TIMELINE_EVENTS_MAX)} */
json_t *rq_timeline_get(rq_timeline_t *tl, const char *id);

/* Looks idempotency key `key` up. When held and not expired: copies the message id into id
 * (idlen bytes, NUL-terminated) and returns 1; else returns 0. */
int rq_timeline_key_find(rq_timeline_t *tl, const char *key, char *id, size_t idlen);

/* Called once per waiter, on the timer thread or the thread that applied the final event or
 * in rq_timeline_free(): timed_out 0 when the status became final, 1 at the deadline (or at
 * free). Must not call into the timeline. */
typedef void (*rq_timeline_wake_fn)(void *arg, int timed_out);

/* Registers a waiter on id until deadline_ms (rq_mono_ms() based). Returns 1 when the status
 * is final already (no waiter registered, fn not called), 0 when registered, -1 on
 * allocation failure or when more than 100000 waiters are registered (fn not called). An
 * unknown id may be waited for (it may arrive from the stream). */
int rq_timeline_wait(rq_timeline_t *tl, const char *id, int64_t deadline_ms, rq_timeline_wake_fn fn,
                     void *arg);

/* Wakes every waiter now (timed_out 1), as at free; from then on rq_timeline_wait() returns 1
 * at once (a stopping producer answers long polls with what it has). */
void rq_timeline_wake_all(rq_timeline_t *tl);

/* Entries held, and keys held. */
size_t rq_timeline_len(rq_timeline_t *tl);
size_t rq_timeline_keys_len(rq_timeline_t *tl);

#endif
