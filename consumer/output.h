/* output.h - the consumer's output file: durable, batched line appends.
 *
 * The file is opened O_WRONLY|O_APPEND|O_CREAT (mode 0644). A batch of lines is appended with
 * a single write(2) of one buffer (each line followed by '\n'), then fdatasync(2), so a batch
 * costs one write and one sync however many lines it holds. A batch is all or nothing as far
 * as this process can make it: when the write fails part-way, the file is truncated back to
 * its size before the batch (this assumes no other process appends concurrently; the
 * multi-writer case takes a file lock in the exactly-once writer of issue 3).
 *
 * Not thread-safe: one thread (the consumer worker) owns an rq_output_t.
 */
#ifndef RQ_CONSUMER_OUTPUT_H
#define RQ_CONSUMER_OUTPUT_H

#include <stddef.h>
#include <stdint.h>

typedef struct rq_output rq_output_t;

/* Opens (creating if needed) the output file at `path` and syncs its directory so that a
 * newly created file survives a crash. Returns the writer (free with rq_output_free()), or
 * NULL with a reason (including strerror) in err (errlen bytes, may be 0). */
rq_output_t *rq_output_open(const char *path, char *err, size_t errlen);

/* Appends n lines (lines[i] of lens[i] bytes, which may hold any byte except that a '\n'
 * inside a line splits it in the file) and makes them durable before returning. ids[i] is
 * the message id of each line (may be NULL, or hold NULL entries): unused for now, the
 * exactly-once writer (issue 3) skips ids it has already written.
 * Returns the number of lines written (n), or a negative errno: on a write error nothing of
 * the batch stays in the file; on a sync error (-EIO, -ENOSPC...) the data may or may not be
 * on disk, and the caller must not acknowledge the messages. n == 0 returns 0 at once. */
int64_t rq_output_append_batch(rq_output_t *out, const char *const *lines, const size_t *lens,
                               const char *const *ids, size_t n);

/* The path given to rq_output_open() (owned by out). */
const char *rq_output_path(const rq_output_t *out);

/* Closes the file and frees the writer. NULL is a no-op. */
void rq_output_free(rq_output_t *out);

#endif
