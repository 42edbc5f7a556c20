/* output.h - the consumer's exactly-once output file writer.
 *
 * At-least-once delivery plus this idempotent writer give exactly-once lines in the output:
 * a line whose key was already written is skipped. Keys: a tailed line is (source file id,
 * [start, end) byte range); an API message is its message id (see seen.h). A chunk of tailed
 * lines (verbatim) may overlap what was written before (a redelivery, or the producer cut
 * the same bytes into other chunks after a restart): only its bytes not yet written are
 * written, in order, so every source byte lands once.
 *
 * Files, for OUTPUT_FILE=PATH:
 *   PATH          the lines, byte for byte, each followed by '\n' (chunks: as they are)
 *   PATH.ledger   an append-only journal of commits: what each batch wrote and the output
 *                 file's size before and after it
 *   PATH.lock     flock(2) target shared by every consumer process writing PATH
 *
 * A commit (one batch), under the lock:
 *   1. catch up: read ledger records other processes appended since our last look;
 *   2. recover: when the newest record's "after" size is larger than PATH's size, its writer
 *      died between the ledger and the output: truncate PATH back to "before" and void the
 *      record's entries in place (its messages were not acked, so they come again). A newest
 *      record that cannot be checked (it names a file that was rotated away, other than a
 *      PATH.1 that holds it, or PATH is now shorter than its "before": copytruncate) is
 *      voided too: a duplicate at worst, never a loss. The ledger never shrinks under
 *      another process (voiding keeps every offset);
 *   3. skip the lines already written (per the index) and duplicates inside the batch;
 *   4. append the record, fdatasync the ledger, look at PATH's size again (a copytruncate
 *      during that sync: record the new size; written at most 3 times, then the commit fails
 *      with -EAGAIN); append the lines with one write (O_APPEND: never at a stale offset,
 *      never a hole of NUL bytes) and, if a truncate landed just before it, rewrite the
 *      record with where they went; fdatasync PATH; then (caller) ack.
 * So durability costs two syncs per batch, a crash at any point neither loses nor repeats a
 * line, and several consumers on one host may share PATH. With several consumers, lines keep
 * their order within a batch; batches interleave in commit order.
 * The ledger is compacted (rewritten as one record of the whole index) after a commit that
 * leaves it past 8 MiB (rq_output_set_compact_bytes) and past twice its size right after the
 * last compaction; best effort (a failed compaction leaves the ledger as it was).
 *
 * Not thread-safe: one thread (the consumer worker) owns an rq_output_t.
 */
#ifndef RQ_CONSUMER_OUTPUT_H
#define RQ_CONSUMER_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct rq_output rq_output_t;

/* One line, or one chunk of lines, to write. */
typedef struct rq_output_line {
    const char *data; /* the line's bytes, without '\n' (may hold any byte); verbatim: the
                       * source bytes [start, end), lines with their '\n' */
    size_t len;
    const char *file_id; /* tailed line: the source file's id, else NULL */
    int64_t start, end;  /* tailed line: its byte range [start, end) in the source */
    int verbatim;        /* a chunk (x-format "lines", file_id set, end - start == len): written
                          * as is, no '\n' added, and only its bytes not written before */
    const char *msg_id;  /* otherwise: the message id (NULL: no de-duplication) */
    size_t msg_id_len;
    int written;      /* out: 1 written (a chunk: some of it) by this call, 0 skipped */
    int64_t newlines; /* out: lines written for it: a chunk's '\n' bytes written, else 0/1 */
} rq_output_line_t;

/* Opens (creating if needed) PATH, PATH.ledger and PATH.lock, loads the index from the
 * ledger, repairs a commit a crashed writer left half done and follows a rotated PATH (as
 * rq_output_reopen). `id_window` bounds the message ids remembered (0 counts as 1). `path`
 * is copied. Returns the writer, or NULL with a reason in err. */
rq_output_t *rq_output_open(const char *path, size_t id_window, char *err, size_t errlen);

/* Writes the lines not written before, durably (see above), setting each line's `written`
 * and `newlines`. Returns the number of entries written, wholly or in part (0..n), or a
 * negative errno: then the batch is not committed (what was written of it is cut back; if
 * even that fails, logged, the next call settles it as a crashed writer's commit), every
 * `written` and `newlines` is 0, and the caller must not ack. */
int64_t rq_output_append_batch(rq_output_t *out, rq_output_line_t *lines, size_t n);

/* Rotation: switches to the file now at PATH when it is not the one open (renamed away by
 * logrotate, deleted, or replaced), creating it when missing; a file at PATH that is the one
 * open is kept (copytruncate needs nothing). Under the lock, after catching up with the
 * ledger (so a newest record naming the old file is settled first). Commits do the same by
 * themselves; call this on SIGHUP so that a rotated file is let go of at once. Returns 0 or
 * a negative errno (the old file stays in use). */
int rq_output_reopen(rq_output_t *out);

/* The path given to rq_output_open() (owned by out). */
const char *rq_output_path(const rq_output_t *out);

/* Size of the index, for metrics: file ranges and remembered ids. */
size_t rq_output_index_entries(const rq_output_t *out);

/* Sets the ledger size past which it is compacted (default 8 MiB; tests use small sizes). */
void rq_output_set_compact_bytes(rq_output_t *out, size_t bytes);

/* Records a clean close in the ledger (an empty record for the output's current size and
 * identity, so that a later copytruncate is never taken for a half-done commit), closes the
 * files and frees the writer. NULL is a no-op. */
void rq_output_free(rq_output_t *out);

#endif
