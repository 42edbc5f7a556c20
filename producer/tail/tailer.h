/* tailer.h - follows INPUT_FILE and publishes every line, in order, at least once.
 *
 * One thread ("the tailer") owns the file, the line splitter and the saved position. It
 * wakes on inotify events (the file and its folder) and on a stat poll every poll_ms (the
 * only wake-up when inotify is unavailable), reads what was appended, cuts it into lines
 * (linesplit.h) and hands them to the publisher in jobs of up to batch_lines lines (records)
 * and about 1 MiB, with at most max_inflight jobs unconfirmed (reading pauses beyond that:
 * back-pressure, not memory).
 *
 * Chunks: consecutive records travel together in one message of up to chunk_bytes bytes, the
 * file's bytes [offset, end) verbatim (lines with their '\n', pieces of a split overlong line)
 * with headers x-format "lines" and x-lines (complete lines in it); a record longer than
 * chunk_bytes travels alone. A skipped overlong line ends a chunk (its bytes are never sent).
 * A partial last line flushed when leaving a rotated or truncated file travels alone in the
 * one-line format (body without '\n', no x-format), so the consumer ends it with a '\n'.
 * Chunk boundaries depend on how much was read at a time, so after a restart the same bytes
 * may come in other chunks; they always start and end on record boundaries and carry the id
 * "<file id>:<offset of their first byte>" (the consumer de-duplicates by byte range).
 *
 * The promise: every line written to the file is published at least once, in file order,
 * in a message with id "<file id>:<offset>" (tail_state.h). The saved offset only moves over a
 * contiguous prefix of jobs the broker confirmed, so a kill -9 at any moment re-publishes
 * (same ids) instead of losing. A refused submit (broker down, overloaded) is retried with a
 * backoff, never skipped; a job that fails after acceptance is submitted again.
 *
 * Files:
 *   - missing: waited for.
 *   - rotation by rename, or deletion: the open file keeps being read (late writes) until
 *     rotate_wait_ms after another file appeared at the path (or after it was deleted), then
 *     it is read to its end, its trailing partial line (if any) is sent as a line, and the
 *     file at the path is followed from its head. Renamed away with nothing new at the path
 *     yet, the old file simply stays the one being read.
 *   - copytruncate / truncation (size below the read position, or the bytes before it or the
 *     first bytes changed): the lines already read are confirmed first, then reading starts
 *     again at 0 under a new file id (counted as a rotation).
 *   - resume: a saved position is used only when the file has the same identity and still
 *     holds the bytes before the offset; else the file starts at 0 (logged). If the path now
 *     holds another file, the saved one is looked for in the same folder (renamed by a
 *     rotation while the producer was down) and read to its end first.
 *   - with no saved position, a file present at start begins at its head (from_end = 0) or
 *     its end (from_end = 1); a file appearing later begins at its head.
 * Before any line of a new file (or generation) is handed out, its file id and start offset
 * are saved; later saves happen at most every ~100 ms, before leaving a file whose position
 * changed, and at stop.
 *
 * Metrics: producer_lines_read_total, producer_tail_lines_confirmed_total (a piece of a split
 * overlong line counts as a line), producer_tail_bytes_behind (file size - confirmed offset),
 * producer_tail_rotations_total, producer_tail_overlong_lines_total.
 *
 * Memory: up to (max_inflight + 1) jobs of at most batch_lines lines and about 1 MiB (more
 * only when one line is longer), plus one partial line in the splitter.
 */
#ifndef RQ_TAILER_H
#define RQ_TAILER_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "linesplit.h"
#include "metrics.h"
#include "publisher.h"

typedef struct rq_tailer rq_tailer_t;

#define RQ_TAIL_CHUNK_BYTES_DEFAULT 8192

/* Hands a job to the publisher with rq_publisher_submit() semantics: 0 when accepted (done
 * is then called exactly once, on any thread), -1 when refused (done not called). */
typedef int (*rq_tail_submit_fn)(void *arg, rq_pub_job_t *job);

typedef struct rq_tail_opts {
    const char *path;      /* the file to tail */
    const char *state_dir; /* folder of the state file (created if missing) */
    int from_end;          /* no saved state: start at the end of a file present at start */
    size_t max_line;       /* >= 1 */
    rq_overlong_t overlong;
    int poll_ms;        /* stat poll interval (>= 1) */
    int rotate_wait_ms; /* keep reading a rotated file this long (>= 0) */
    int batch_lines;    /* lines per job (>= 1) */
    int max_inflight;   /* jobs submitted and unconfirmed (>= 1) */
    size_t chunk_bytes; /* most bytes per message; 0: RQ_TAIL_CHUNK_BYTES_DEFAULT */
    int use_inotify;    /* 0: stat polling only */
} rq_tail_opts_t;

/* Fills *o from the TAIL_* settings and INPUT_FILE of cfg (pointers borrow cfg's strings),
 * with inotify on (TAIL_CHUNK_BYTES gives chunk_bytes). batch_lines is capped at cfg->max_pending
 * so a job always fits. */
void rq_tail_opts_from_config(rq_tail_opts_t *o, const rq_config_t *cfg);

/* Checks `o` ("invalid tailer options"), creates the state folder, takes an exclusive lock on
 * the state file (a second tailer of the same input with the same folder is refused), removes
 * a temporary state file left by a crash, loads the saved position (an unreadable one is
 * logged and ignored: the file is then read from its head), registers the metrics in
 * `metrics` and starts the thread. The strings of `o` are copied; `metrics` and submit_arg
 * must outlive the tailer. Returns NULL with err filled on failure. */
rq_tailer_t *rq_tailer_new(const rq_tail_opts_t *o, rq_metrics_t *metrics, rq_tail_submit_fn submit,
                           void *submit_arg, char *err, size_t errlen);

/* Stops reading (lines read but not yet accepted by the publisher are dropped: read again
 * next time), waits up to grace_ms for the submitted jobs to be confirmed, saves the position
 * when it changed (or a save had failed) and joins the thread. Jobs still unconfirmed stay
 * valid (the publisher may still complete them) until rq_tailer_free(). Idempotent; NULL is a
 * no-op. Not concurrently with itself. */
void rq_tailer_stop(rq_tailer_t *t, int grace_ms);

/* Stops the tailer (no grace) if running and frees it. Every submitted job must have
 * completed first: call after rq_publisher_stop(). NULL is a no-op. */
void rq_tailer_free(rq_tailer_t *t);

/* A consistent snapshot of the tailer's progress, for tests and health. */
typedef struct rq_tail_stats {
    char file_id[64];    /* the file id being read ("" before a file is found) */
    int64_t committed;   /* confirmed offset in that file */
    int64_t read_offset; /* offset just past the last line handed out */
    uint64_t lines_read; /* lines handed to jobs */
    uint64_t lines_confirmed;
    uint64_t rotations;
    uint64_t overlong;
    uint64_t state_saves;
    int inflight_jobs; /* submitted and not completed */
    int following;     /* 1 while a file is open */
} rq_tail_stats_t;

/* Copies the current progress into *s. Thread-safe. */
void rq_tailer_stats(rq_tailer_t *t, rq_tail_stats_t *s);

#endif
