/* ackwin.h - which delivery tags of a channel are settled, for coalescing acks.
 *
 * The broker's `multiple` flag on basic.ack settles every delivery of the channel still
 * outstanding up to and including the tag named. The pull engine leases deliveries to many
 * clients, who ack them in any order; one frame per ack costs the broker about 40% more CPU
 * per message than acks merged into multiple frames (RabbitMQ 3.10, a quorum queue: 13.0
 * against 9.1 us). The window records the settled tags (a frame queued for them: ack or
 * reject) above the lowest unsettled one, `low`: every tag below `low` is settled, so a
 * multiple ack naming a tag below `low` settles nothing else.
 *
 * A tag never recorded counts as outstanding: a delivery the caller forgot only stops the
 * merging, it is never acked by accident. Tags are a channel's, from 1 up; the window covers
 * `cap` tags from `low`. A tag settled beyond that is not recorded (its frame is single) and
 * stops merging until rq_ackwin_skip() or rq_ackwin_reset(): a lease held for long, while
 * millions of tags go by, costs only the merging, never memory.
 *
 * Not thread-safe: one owner (the leaser thread).
 */
#ifndef RQ_QUEUES_ACKWIN_H
#define RQ_QUEUES_ACKWIN_H

#include <stddef.h>
#include <stdint.h>

typedef struct rq_ackwin rq_ackwin_t;

/* A window of cap tags (rounded up to a multiple of 64, at least 64), low = 1. NULL when out
 * of memory. */
rq_ackwin_t *rq_ackwin_new(size_t cap);

/* Frees w (NULL is fine). */
void rq_ackwin_free(rq_ackwin_t *w);

/* A new channel: nothing settled, low = 1, merging on again. */
void rq_ackwin_reset(rq_ackwin_t *w);

/* Records that a frame settling `tag` (a reject, or an ack not planned here) is queued.
 * Returns 1 when recorded (or below low already), 0 when beyond the window (merging stops
 * until a skip or a reset). */
int rq_ackwin_settle(rq_ackwin_t *w, uint64_t tag);

/* The owner knows every tag below `next` is settled (nothing of the channel is outstanding):
 * low moves up to it, and merging resumes after a tag was settled beyond the window. */
void rq_ackwin_skip(rq_ackwin_t *w, uint64_t next);

/* The lowest tag not settled: every tag below it is. */
uint64_t rq_ackwin_low(const rq_ackwin_t *w);

/* Records the n acked tags (distinct, none settled before) and sorts them in place. Returns
 * k: tags[0..k) are below the new low and settle with one basic.ack naming tags[k - 1]
 * (multiple=1 when k > 1); each of tags[k..n) needs a frame of its own (multiple=0). The
 * frames go after every frame recorded before, the merged one first. */
size_t rq_ackwin_plan(rq_ackwin_t *w, uint64_t *tags, size_t n);

#endif
