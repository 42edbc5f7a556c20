/* qsettings.h - per-queue settings the broker keeps as queue arguments (x-relayq-max-retries),
 * looked up through the management API (mgmt.h) off the caller's thread.
 *
 * A small cache: queue name -> {max_retries, fetched_at}. rq_qsettings_max_retries() never
 * blocks: it answers from the cache and, when the entry is missing or older than
 * RQ_QSETTINGS_TTL_MS (30 s), asks the lookup thread for a refresh (at most one lookup in
 * flight per queue; at most RQ_QSETTINGS_QUEUE_MAX waiting). The thread GETs
 * /api/queues/<vhost>/<queue> and stores the queue's x-relayq-max-retries (an integer
 * 0..1000), or "none" (the caller's default) when the queue has no such argument, does not
 * exist or the API fails (retried after RQ_QSETTINGS_RETRY_MS). After each lookup the
 * notify callback runs on the lookup thread (the leaser wakes up for nacks waiting on it).
 *
 * Without a management API (RABBITMQ_MANAGEMENT_URL=off or invalid) every lookup answers
 * "none" at once: the callers use MAX_RETRIES. Thread-safe.
 */
#ifndef RQ_QSETTINGS_H
#define RQ_QSETTINGS_H

#include <jansson.h>

#include "config.h"

#define RQ_QSETTINGS_TTL_MS 30000
#define RQ_QSETTINGS_RETRY_MS 5000
#define RQ_QSETTINGS_QUEUE_MAX 256
#define RQ_QSETTINGS_CACHE_MAX 10000
#define RQ_QSETTINGS_TIMEOUT_MS 3000
#define RQ_QSETTINGS_MAX_RETRIES 1000 /* largest x-relayq-max-retries honoured */

typedef struct rq_qsettings rq_qsettings_t;

/* Starts the lookup thread for cfg's management API (cfg outlives the object). notify (may be
 * NULL) is called with arg on the lookup thread after each lookup. Returns NULL when out of
 * memory or the thread cannot start; without a management API the object answers "none". */
rq_qsettings_t *rq_qsettings_new(const rq_config_t *cfg, void (*notify)(void *arg), void *arg);

/* Stops the thread (lookups queued are dropped) and frees. NULL is a no-op. */
void rq_qsettings_free(rq_qsettings_t *s);

/* queue's max retries: 1 with *out set when the cache knows the queue's own value, 0 when it
 * knows the queue has none (use the default), -1 when it does not know yet (a lookup was
 * asked for). Refreshes an entry older than RQ_QSETTINGS_TTL_MS in the background (the old
 * value is still answered meanwhile). Never blocks on I/O. */
int rq_qsettings_max_retries(rq_qsettings_t *s, const char *queue, int *out);

/* The x-relayq-max-retries of a management API queue object ({"arguments": {...}}): 1 with
 * *out set (an integer 0..RQ_QSETTINGS_MAX_RETRIES), else 0. Pure. */
int rq_qsettings_parse_max_retries(const json_t *queue_obj, int *out);

#endif
