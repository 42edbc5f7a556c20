/* tail_jobs.h - the tailer's job ring and chunk builder: pure (no files, threads or locks).
 *
 * A ring of njobs slots in file order: the oldest uncommitted job at index 0, the job being
 * filled (BUILDING) last. A slot's `state` goes FREE -> BUILDING -> READY (closed) ->
 * SUBMITTED, or BUILDING -> SKIPPED (only dropped overlong lines, nothing to publish). Lines
 * go into messages ("chunks" of whole lines up to chunk_bytes) whose bodies and ids live in
 * one arena per job. The owner (the tail thread) drives every state change except `result`,
 * which it guards itself (the publisher's done callback writes it).
 */
#ifndef RQ_TAIL_JOBS_H
#define RQ_TAIL_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "linesplit.h"
#include "publisher.h"
#include "tail_state.h"

#define RQ_TAIL_JOB_MAX_BYTES (1024 * 1024) /* a job closes once its bodies reach this size */
/* ... unless its last record is a piece of a split overlong line still open: then it grows
 * until the line's last piece, up to this bound. The pieces of a line up to ~8 MiB so travel
 * in one job, which the publisher sends without another job's messages in between, so no
 * API message lands inside the line in the consumer's output (chaos seed 100006214). */
#define RQ_TAIL_JOB_LINE_MAX_BYTES (8 * 1024 * 1024)

enum { RQ_TJ_FREE = 0, RQ_TJ_BUILDING, RQ_TJ_READY, RQ_TJ_SUBMITTED, RQ_TJ_SKIPPED }; /* state */
enum { RQ_TJ_PENDING = 0, RQ_TJ_CONFIRMED, RQ_TJ_FAILED };                            /* result */

typedef struct rq_tail_job {
    rq_pub_job_t job; /* valid once READY: msgs point into the arena */
    rq_pub_msg_t *msgs;
    size_t *body_off, *id_off; /* arena offsets while building (the arena may move) */
    size_t n, cap;             /* messages (chunks) */
    size_t nrec;               /* records (lines, pieces) in the messages */
    int chunk_open;            /* the last message is a chunk that may still grow */
    int line_open;             /* the last record is a PIECE of a line not ended yet */
    char *arena;
    size_t arena_len, arena_cap;
    int64_t start, end; /* stream offsets covered: [start, end) */
    unsigned char before[RQ_LINESPLIT_WINDOW];
    size_t before_len; /* the stream bytes just before `end` */
    char file_id[RQ_TAIL_FILE_ID_MAX];
    int state;   /* RQ_TJ_FREE..RQ_TJ_SKIPPED: the owner's */
    int result;  /* RQ_TJ_PENDING..RQ_TJ_FAILED: guarded by the owner */
    void *owner; /* the ring's owner, for the done callback */
} rq_tail_job_t;

typedef struct rq_tail_jobs rq_tail_jobs_t;

/* The publisher's done callback of a READY job (see rq_pub_job_t). */
typedef void (*rq_tail_done_fn)(rq_pub_job_t *job, void *arg);

/* A ring of njobs (>= 1) slots. A job holds at most batch_lines (>= 1) records and closes
 * at RQ_TAIL_JOB_MAX_BYTES; whole lines share a message up to chunk_bytes. A READY job's
 * rq_pub_job_t calls done(job, <the rq_tail_job_t>) and the job's `owner` is `owner`.
 * Returns a new ring (free with rq_tail_jobs_free), or NULL when out of memory. */
rq_tail_jobs_t *rq_tail_jobs_new(int njobs, int batch_lines, size_t chunk_bytes,
                                 rq_tail_done_fn done, void *owner);

/* Frees the ring and every job's buffers. NULL is a no-op. */
void rq_tail_jobs_free(rq_tail_jobs_t *r);

/* Jobs in the ring (FREE slots excluded): 0..njobs. */
int rq_tail_jobs_count(const rq_tail_jobs_t *r);

/* The i-th job from the oldest (0 <= i < count), borrowed. */
rq_tail_job_t *rq_tail_jobs_at(rq_tail_jobs_t *r, int i);

/* The BUILDING job (the last one), or a fresh BUILDING job starting at stream offset `at`
 * of generation file_id (copied). Returns it (borrowed), or NULL when the ring is full. */
rq_tail_job_t *rq_tail_jobs_building(rq_tail_jobs_t *r, int64_t at, const char *file_id);

/* Adds a record to the BUILDING job j: to its open chunk while that stays within chunk_bytes
 * and the record follows it, else as the first record of a new chunk. A SKIPPED line ends the
 * chunk (the gap is never sent) and only moves j's end; a PARTIAL line (rq_linesplit_flush)
 * travels alone as a one-line message without '\n' (the consumer ends it with one).
 * Returns 1 when a record was added, 0 for a SKIPPED line, or -1 on allocation failure
 * (nothing of the record added). */
int rq_tail_jobs_add(rq_tail_jobs_t *r, rq_tail_job_t *j, const rq_line_t *line);

/* 1 when the BUILDING job j is full (batch_lines records or RQ_TAIL_JOB_MAX_BYTES), except
 * while a split line is open in it (RQ_TAIL_JOB_LINE_MAX_BYTES then). */
int rq_tail_jobs_full(const rq_tail_jobs_t *r, const rq_tail_job_t *j);

/* Closes the BUILDING job j (the last one) with `before` (before_len <= RQ_LINESPLIT_WINDOW
 * bytes, copied: the stream just before j's end): READY with its messages stamped
 * published_ms = now_ms, SKIPPED when it holds only skipped lines, or dropped from the ring
 * when it covers nothing. */
void rq_tail_jobs_close(rq_tail_jobs_t *r, rq_tail_job_t *j, const unsigned char *before,
                        size_t before_len, int64_t now_ms);

/* Drops the newest job (count > 0): its slot is FREE again. */
void rq_tail_jobs_pop_back(rq_tail_jobs_t *r);

/* Drops the oldest job (count > 0, committed by the caller): its slot is FREE again. */
void rq_tail_jobs_pop_front(rq_tail_jobs_t *r);

/* Drops every job; the ring starts again at slot 0. */
void rq_tail_jobs_clear(rq_tail_jobs_t *r);

#endif
