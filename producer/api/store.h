/* store.h - a bounded in-memory record of recent messages, for GET /messages/{id}.
 *
 * Each entry: the message id, its status ("queued" once the broker confirmed it, "processed"
 * once the consumer's reply arrived, with the reply) and timestamps. When full, the oldest
 * entry is evicted (FIFO), so memory stays bounded by `capacity` entries.
 * Thread-safe (one mutex).
 */
#ifndef RQ_STORE_H
#define RQ_STORE_H

#include <jansson.h>
#include <stddef.h>

typedef struct rq_store rq_store_t;

/* Creates a store of at most `capacity` entries (0 keeps nothing). NULL on failure. */
rq_store_t *rq_store_new(size_t capacity);

/* Frees the store. NULL is a no-op. */
void rq_store_free(rq_store_t *s);

/* Records `id` as queued (confirmed) at `ts_ms` (epoch ms); an existing entry keeps its
 * status if already processed. Returns 0, or -1 on allocation failure. */
int rq_store_queued(rq_store_t *s, const char *id, long long ts_ms);

/* Records the reply for `id` (creating the entry if unknown). Returns 0 or -1. */
int rq_store_processed(rq_store_t *s, const char *id, const char *reply, size_t len,
                       long long ts_ms);

/* Returns a new JSON object {"message_id","status","queued_at"?,"processed_at"?,"reply"?}
 * for id (caller owns the reference), or NULL when unknown. */
json_t *rq_store_get(rq_store_t *s, const char *id);

/* Number of entries. */
size_t rq_store_len(rq_store_t *s);

#endif
