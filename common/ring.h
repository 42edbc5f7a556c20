/* ring.h - a growable ring (FIFO) of fixed-size entries, the one ring buffer of relayq.
 *
 * Entries are stored by value (entry_size bytes each) in one array; index 0 is the oldest
 * entry (the front), len - 1 the newest. Pushing at the back and popping at the front are
 * O(1), and so is dropping the newest entry; the array doubles (from min_cap) when full, up to
 * max_cap entries (0: no bound).
 *
 * Slots keep their bytes when popped and are handed out again by rq_ring_push() as they
 * were: a ring whose entries own memory can reuse it (the tailer's jobs keep their buffers)
 * as long as the ring never grows (reserve max_cap once, see rq_ring_reserve()): growing
 * keeps the len live entries only, and the new slots start zeroed.
 *
 * Not thread-safe: one owner at a time, as with every container here. */
#ifndef RQ_RING_H
#define RQ_RING_H

#include <stddef.h>

typedef struct rq_ring {
    unsigned char *v;  /* cap * entry_size bytes */
    size_t entry_size; /* bytes per entry */
    size_t cap;        /* slots allocated */
    size_t head;       /* slot of entry 0 */
    size_t len;        /* live entries */
    size_t min_cap;    /* first allocation */
    size_t max_cap;    /* 0: no bound */
} rq_ring_t;

/* An empty ring of entries of entry_size (> 0) bytes, allocating nothing yet; the first
 * allocation holds min_cap entries (0: 16), never more than max_cap (0: no bound). */
void rq_ring_init(rq_ring_t *r, size_t entry_size, size_t min_cap, size_t max_cap);

/* Frees the array (the entries' own memory is the caller's) and leaves r empty and
 * reusable with the same sizes. */
void rq_ring_clear(rq_ring_t *r);

/* Makes room for `extra` more entries without pushing. Returns 0, or -1 when out of memory
 * or past max_cap (r unchanged). */
int rq_ring_reserve(rq_ring_t *r, size_t extra);

/* A new entry at the back (len + 1), growing the ring when it is full. Returns the slot,
 * holding what it held last (zero bytes if never used), or NULL when out of memory or full
 * at max_cap (r unchanged). The pointer is valid until the ring grows or is cleared. */
void *rq_ring_push(rq_ring_t *r);

/* Entry i, 0 the oldest; i < len (asserted in debug builds). */
void *rq_ring_at(const rq_ring_t *r, size_t i);

/* Drops the front entry (its slot keeps its bytes); len > 0 (asserted). */
void rq_ring_pop(rq_ring_t *r);

/* Drops the back (newest) entry (its slot keeps its bytes); len > 0 (asserted). */
void rq_ring_pop_back(rq_ring_t *r);

/* Drops every entry; entry 0 goes back to slot 0. Keeps the array and the slots' bytes. */
void rq_ring_reset(rq_ring_t *r);

/* Slot k of the array, 0 <= k < cap, whether live or not: to free what the slots own. */
void *rq_ring_slot(const rq_ring_t *r, size_t k);

/* Live entries. */
static inline size_t rq_ring_len(const rq_ring_t *r)
{
    return r->len;
}

#endif
