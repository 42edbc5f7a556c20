/* seen.h - the in-memory index of what the output file already holds (exactly-once writer).
 *
 * Two kinds of keys:
 *   - tailed lines: (file id, [start, end) byte range in the source file). Per file id the
 *     index keeps a sorted list of disjoint ranges, merging adjacent ones, so a file read in
 *     order costs one range however many lines it has. A one-line message is "seen" when its
 *     start offset lies inside a recorded range; a chunk of lines (several records in one
 *     byte range) is written only where it is not covered (rq_seen_each_gap).
 *   - API messages: the message id, kept as a 64-bit hash in a set bounded to the last
 *     `id_window` ids (FIFO eviction). A redelivery older than the window is not detected;
 *     redeliveries come within seconds to minutes, far inside any sensible window.
 * Memory is bounded: at most `max_files` file ids are kept (the least recently added is
 * dropped first), each with its ranges.
 *
 * Not thread-safe: one writer owns an index.
 */
#ifndef RQ_CONSUMER_SEEN_H
#define RQ_CONSUMER_SEEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct rq_seen rq_seen_t;

/* Creates an empty index. NULL on allocation failure. */
rq_seen_t *rq_seen_new(size_t id_window, size_t max_files);

/* Frees the index. NULL is a no-op. */
void rq_seen_free(rq_seen_t *s);

/* Returns 1 when the line starting at `start` of file_id was recorded, else 0. */
int rq_seen_has_range(const rq_seen_t *s, const char *file_id, int64_t start);

/* Walks the parts of [start, end) of file_id that are NOT recorded ("gaps"), in ascending
 * order: fn(gap_start, gap_end, arg) once per maximal uncovered sub-range (gap_end >
 * gap_start). An unknown file id gives one gap, the whole range; end <= start gives none.
 * Stops early when fn returns non-zero and returns that value; else returns 0. The index must
 * not be changed from inside fn. */
int rq_seen_each_gap(const rq_seen_t *s, const char *file_id, int64_t start, int64_t end,
                     int (*fn)(int64_t gap_start, int64_t gap_end, void *arg), void *arg);

/* Records [start, end) of file_id (end > start). Returns 0, or -1 on allocation failure. */
int rq_seen_add_range(rq_seen_t *s, const char *file_id, int64_t start, int64_t end);

/* Returns 1 when the message id was recorded (and is still in the window), else 0. */
int rq_seen_has_id(const rq_seen_t *s, const char *id, size_t len);

/* Records a message id. Returns 0, or -1 on allocation failure. */
int rq_seen_add_id(rq_seen_t *s, const char *id, size_t len);

/* Hash of a message id as stored (for the on-disk ledger). */
uint64_t rq_seen_hash(const char *id, size_t len);

/* Records a hash directly (ledger replay). Returns 0 or -1. */
int rq_seen_add_hash(rq_seen_t *s, uint64_t h);

/* Calls fn for every file range and then every id hash, oldest first (ledger compaction).
 * file_id is NULL for hashes. */
void rq_seen_each(const rq_seen_t *s,
                  void (*fn)(const char *file_id, int64_t start, int64_t end, uint64_t hash,
                             void *arg),
                  void *arg);

/* Counters for metrics and tests. */
size_t rq_seen_files(const rq_seen_t *s);
size_t rq_seen_ranges(const rq_seen_t *s);
size_t rq_seen_ids(const rq_seen_t *s);

#endif
