/* tailer.c - the tail thread: watch, read, split, batch, submit, commit, save.
 *
 * Jobs live in a ring of max_inflight + 1 slots, in file order: the oldest uncommitted job
 * at `head`, the job being filled (BUILDING) last. A slot's `state` (the tail thread's own)
 * goes FREE -> BUILDING -> READY (closed) -> SUBMITTED (accepted by the publisher), or
 * BUILDING -> SKIPPED (only dropped overlong lines, nothing to publish). The publisher's done
 * callback only writes the slot's `result` (CONFIRMED or FAILED) under `lock` and signals the
 * wake-up. When the head of the ring is confirmed (or SKIPPED) its end offset becomes the
 * committed offset and the slot is FREE again.
 *
 * All jobs in the ring belong to the open file's current generation: before following
 * another file, or restarting a truncated one at 0, the thread stops reading until every job
 * is committed (the "barrier"), so the saved state always names the file its offset is in.
 *
 * Anything that breaks the in-order chain (a job failing after acceptance, an allocation
 * failure while filling a job) triggers a rewind: wait until nothing is in flight, drop the
 * uncommitted jobs, and read again from the committed offset (same message ids).
 *
 * The ring and the chunk builder are tail_jobs.c (pure); inotify, stat and the rotation and
 * truncation verdicts are tail_watch.c. This file is the thread that acts on them.
 */
#include "tailer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "amqp_conn.h"
#include "log.h"
#include "tail_jobs.h"
#include "tail_state.h"
#include "tail_watch.h"
#include "util.h"
#include "wakeup.h"

#define READ_CHUNK (256 * 1024)
#define READ_BUDGET (8 * 1024 * 1024) /* bytes read per turn before looking at confirms */
#define SAVE_EVERY_MS 100
#define BACKOFF_MIN_MS 20 /* a refused submit is retried after 20, 40, ... ms (no jitter) */
#define BACKOFF_MAX_MS 1000
#define W RQ_LINESPLIT_WINDOW

_Static_assert(RQ_LINESPLIT_WINDOW == RQ_TAIL_BEFORE_BYTES,
               "the splitter's window is the hash-before-offset span");

typedef enum { ACT_NONE = 0, ACT_SWITCH, ACT_RESTART } action_t;

struct rq_tailer {
    rq_tail_opts_t o;
    char *path, *state_dir, *dir;
    char state_path[4200];
    int lock_fd;
    rq_tail_submit_fn submit;
    void *submit_arg;

    pthread_t thread;
    int started;
    rq_wakeup_t *wake;    /* signalled by completions and by stop */
    pthread_mutex_t lock; /* job states once submitted, stop request, stats */
    int stop;
    int64_t stop_deadline_ms;
    rq_tail_stats_t stats;

    /* ---- tail thread only ---- */
    rq_tail_watch_t *watch;
    rq_linesplit_t *ls;
    rq_tail_jobs_t *jobs;
    int inflight; /* submitted jobs not yet done */
    int rewind;

    /* the open file and its generation */
    int fd;
    rq_tail_ident_t ident;
    unsigned char head_bytes[RQ_TAIL_FP_BYTES];
    char file_id[RQ_TAIL_FILE_ID_MAX];
    int64_t read_pos;           /* file offset of the next read */
    unsigned char last_read[W]; /* the file bytes just before read_pos */
    size_t last_read_len;
    int64_t file_size;
    int eof, blocked;
    int rotated;        /* the path no longer names the open file */
    int64_t rotated_ms; /* when the rotate_wait clock started (0: not yet) */
    action_t action;
    int flush_pending; /* the action waits for the partial line to be handed out */

    /* saved position */
    rq_tail_state_t loaded;
    int have_state; /* 1 loaded, 0 none, -1 unreadable */
    int first_open;
    int64_t committed;
    unsigned char committed_before[W];
    size_t committed_before_len;
    int dirty;
    int64_t last_save_ms;
    int save_error_logged;

    int64_t retry_at_ms, refused_since_ms;
    rq_backoff_t backoff; /* refused submits */
    int refused_logged, waiting_logged, read_error_logged;
    uint64_t overlong_counted;

    rq_series_t *m_read, *m_confirmed, *m_behind, *m_rotations, *m_overlong;
};

/* ---- small helpers --------------------------------------------------------------------- */

static void wake(rq_tailer_t *t)
{
    int r = rq_wakeup_signal(t->wake);

    if (r < 0)
        rq_warn("tailer: eventfd write: %s", RQ_STRERR(-r));
}

/* Called by the publisher (any thread), exactly once per accepted job. */
static void on_job_done(rq_pub_job_t *job, void *arg)
{
    rq_tail_job_t *j = arg;
    rq_tailer_t *t = j->owner;

    pthread_mutex_lock(&t->lock);
    j->result = job->status == RQ_JOB_CONFIRMED ? RQ_TJ_CONFIRMED : RQ_TJ_FAILED;
    pthread_mutex_unlock(&t->lock);
    wake(t);
}

/* ---- state ----------------------------------------------------------------------------- */

static void save_now(rq_tailer_t *t)
{
    rq_tail_state_t st;
    char err[512];

    memset(&st, 0, sizeof(st));
    snprintf(st.file_id, sizeof(st.file_id), "%s", t->file_id);
    st.ident = t->ident;
    st.offset = t->committed;
    st.before_len = (uint32_t)t->committed_before_len;
    st.before_hash = rq_tail_hash(t->committed_before, t->committed_before_len);
    t->last_save_ms = rq_mono_ms();
    if (rq_tail_state_save(t->state_path, &st, err, sizeof(err)) != 0) {
        if (!t->save_error_logged)
            rq_error("tailer: cannot save the tail position: %s (retrying)", err);
        t->save_error_logged = 1;
        return;
    }
    if (t->save_error_logged)
        rq_info("tailer: the tail position is saved again");
    t->save_error_logged = 0;
    t->dirty = 0;
    pthread_mutex_lock(&t->lock);
    t->stats.state_saves++;
    pthread_mutex_unlock(&t->lock);
}

/* ---- the file -------------------------------------------------------------------------- */

/* Makes fd (`name`, for logs) the file being read, from `offset`, as generation `file_id`
 * (NULL: a new one). Saves the position before any line of it is handed out. */
static void start_generation(rq_tailer_t *t, int fd, const char *name, const rq_tail_ident_t *id,
                             const unsigned char *head, int64_t offset, const char *file_id)
{
    unsigned char before[W];
    size_t blen = offset < W ? (size_t)offset : W;
    ssize_t n = blen ? rq_tail_pread_all(fd, before, blen, offset - (int64_t)blen) : 0;

    if (n < 0 || (size_t)n != blen)
        n = 0; /* cannot happen for a verified offset; a shorter hash is still valid */
    if (t->fd >= 0 && t->fd != fd)
        close(t->fd);
    t->fd = fd;
    t->ident = *id;
    memcpy(t->head_bytes, head, id->fp_len);
    if (file_id != NULL)
        snprintf(t->file_id, sizeof(t->file_id), "%s", file_id);
    else
        rq_tail_new_file_id(id, t->file_id);
    if (lseek(fd, (off_t)offset, SEEK_SET) < 0)
        rq_warn("tailer: lseek: %s", RQ_STRERR(errno));
    t->read_pos = offset;
    t->last_read_len = 0;
    rq_window_push(t->last_read, &t->last_read_len, before, (size_t)n);
    rq_linesplit_reset(t->ls, offset, before, (size_t)n);
    t->committed = offset;
    t->committed_before_len = 0;
    rq_window_push(t->committed_before, &t->committed_before_len, before, (size_t)n);
    t->eof = 0;
    t->rotated = 0;
    t->action = ACT_NONE;
    t->flush_pending = 0;
    t->waiting_logged = 0;
    rq_tail_watch_file(t->watch, t->fd, t->path);
    save_now(t);
    pthread_mutex_lock(&t->lock);
    snprintf(t->stats.file_id, sizeof(t->stats.file_id), "%s", t->file_id);
    t->stats.committed = offset;
    t->stats.read_offset = offset;
    t->stats.following = 1;
    pthread_mutex_unlock(&t->lock);
    rq_info("tailer: following %s (file id %s) from offset %" PRId64, name, t->file_id, offset);
}

static void count_rotation(rq_tailer_t *t)
{
    rq_series_inc(t->m_rotations);
    pthread_mutex_lock(&t->lock);
    t->stats.rotations++;
    pthread_mutex_unlock(&t->lock);
}

/* First file of this process with a saved state: resume in the rotated file if it is still
 * in the folder. Returns 1 when resumed there. */
static int resume_rotated(rq_tailer_t *t)
{
    char name[256], full[600];
    rq_tail_ident_t id;
    unsigned char head[RQ_TAIL_FP_BYTES];
    int fd = rq_tail_watch_find(t->dir, &t->loaded, name, sizeof(name));

    if (fd < 0)
        return 0;
    if (rq_tail_ident_of_fd(fd, &id, head) != 0) {
        close(fd);
        return 0;
    }
    snprintf(full, sizeof(full), "%s/%s", t->dir, name);
    rq_info("tailer: %s was rotated while stopped; finishing %s first", t->path, full);
    t->first_open = 0;
    start_generation(t, fd, full, &id, head, t->loaded.offset, t->loaded.file_id);
    t->rotated = 1; /* check_file starts the rotate_wait clock */
    t->rotated_ms = 0;
    count_rotation(t);
    return 1;
}

/* No file open: opens the path if it exists and decides where to start. */
static void open_path(rq_tailer_t *t)
{
    rq_tail_ident_t id;
    unsigned char head[RQ_TAIL_FP_BYTES];
    struct stat sb;
    char why[256];
    int fd, m;

    fd = open(t->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (t->first_open && t->have_state == 1 && resume_rotated(t))
            return;
        if (!t->waiting_logged)
            rq_info("tailer: waiting for %s (%s)", t->path, RQ_STRERR(errno));
        t->waiting_logged = 1;
        return;
    }
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || rq_tail_ident_of_fd(fd, &id, head) != 0) {
        if (!t->waiting_logged)
            rq_warn("tailer: %s is not a readable regular file; waiting", t->path);
        t->waiting_logged = 1;
        close(fd);
        return;
    }
    if (!t->first_open) {
        start_generation(t, fd, t->path, &id, head, 0, NULL);
        return;
    }
    if (t->have_state == 1) {
        m = rq_tail_state_verify(&t->loaded, fd, why, sizeof(why));
        if (m == RQ_TAIL_SAME) {
            t->first_open = 0;
            rq_info("tailer: resuming %s at saved offset %" PRId64, t->path, t->loaded.offset);
            start_generation(t, fd, t->path, &id, head, t->loaded.offset, t->loaded.file_id);
            return;
        }
        if (m == RQ_TAIL_OTHER) {
            if (resume_rotated(t)) {
                close(fd);
                return;
            }
            rq_warn("tailer: the saved file of %s is gone (rotated away or deleted); starting "
                    "the current file at its head",
                    t->path);
        } else {
            rq_warn("tailer: saved position does not fit %s: %s; starting at its head", t->path,
                    m < 0 ? RQ_STRERR(-m) : why);
        }
        count_rotation(t);
        t->first_open = 0;
        start_generation(t, fd, t->path, &id, head, 0, NULL);
        return;
    }
    t->first_open = 0;
    if (t->have_state < 0) {
        start_generation(t, fd, t->path, &id, head, 0, NULL); /* unreadable state: never skip */
        return;
    }
    start_generation(t, fd, t->path, &id, head, t->o.from_end ? (int64_t)sb.st_size : 0, NULL);
}

/* ---- jobs ------------------------------------------------------------------------------ */

/* The job being filled, or a fresh one; NULL when the ring is full. */
static rq_tail_job_t *building_job(rq_tailer_t *t)
{
    return rq_tail_jobs_building(t->jobs, rq_linesplit_offset(t->ls), t->file_id);
}

/* Adds a record to j (see rq_tail_jobs_add) and counts it. Returns 0, or -1 on allocation
 * failure (nothing of the record added). */
static int add_record(rq_tailer_t *t, rq_tail_job_t *j, const rq_line_t *line)
{
    int r = rq_tail_jobs_add(t->jobs, j, line);

    if (r <= 0)
        return r;
    rq_series_inc(t->m_read);
    pthread_mutex_lock(&t->lock);
    t->stats.lines_read++;
    pthread_mutex_unlock(&t->lock);
    return 0;
}

/* Closes the BUILDING job j: READY to submit, CONFIRMED when it holds only skipped lines,
 * or dropped when it covers nothing. */
static void close_job(rq_tailer_t *t, rq_tail_job_t *j)
{
    int64_t now = rq_wall_ms();
    unsigned char before[W];
    size_t before_len = rq_linesplit_window(t->ls, before);

    rq_tail_jobs_close(t->jobs, j, before, before_len, now);
}

static void close_building(rq_tailer_t *t)
{
    int count = rq_tail_jobs_count(t->jobs);

    if (count > 0 && rq_tail_jobs_at(t->jobs, count - 1)->state == RQ_TJ_BUILDING)
        close_job(t, rq_tail_jobs_at(t->jobs, count - 1));
}

/* Adds the overlong lines the splitter recognised since the last call to the metric. */
static void count_overlong(rq_tailer_t *t)
{
    uint64_t ov = rq_linesplit_overlong(t->ls);

    if (ov == t->overlong_counted)
        return;
    rq_series_add(t->m_overlong, (double)(ov - t->overlong_counted));
    pthread_mutex_lock(&t->lock);
    t->stats.overlong += ov - t->overlong_counted;
    pthread_mutex_unlock(&t->lock);
    t->overlong_counted = ov;
}

/* Moves buffered records into jobs. Returns 0 when the splitter has no complete record left,
 * 1 when the ring is full (or a rewind is needed) and records wait in the splitter. */
static int extract(rq_tailer_t *t)
{
    for (;;) {
        rq_tail_job_t *j = building_job(t);
        rq_line_t line;

        if (j == NULL)
            return 1;
        count_overlong(t);
        if (!rq_linesplit_next(t->ls, &line)) {
            if (j->n == 0 && j->end == j->start)
                rq_tail_jobs_pop_back(t->jobs);
            break;
        }
        if (add_record(t, j, &line) != 0) {
            rq_error("tailer: out of memory; reading again from the confirmed offset");
            t->rewind = 1;
            return 1;
        }
        if (rq_tail_jobs_full(t->jobs, j))
            close_job(t, j);
    }
    count_overlong(t);
    return 0;
}

/* Hands the trailing partial line out as a line (the file will not grow any more). Returns 0,
 * or 1 when the ring is full (try again later). */
static int flush_partial(rq_tailer_t *t)
{
    rq_tail_job_t *j;
    rq_line_t line;

    if (extract(t) != 0)
        return 1;
    if (rq_linesplit_pending(t->ls) == 0)
        return 0;
    j = building_job(t);
    if (j == NULL)
        return 1;
    if (rq_linesplit_flush(t->ls, &line) && add_record(t, j, &line) != 0) {
        rq_error("tailer: out of memory; reading again from the confirmed offset");
        t->rewind = 1;
        return 1;
    }
    count_overlong(t);
    return 0;
}

/* Extracts and reads until end of file, a full ring, or the read budget. */
static void pump(rq_tailer_t *t)
{
    size_t budget = READ_BUDGET;

    t->blocked = 0;
    for (;;) {
        size_t got;
        ssize_t n;
        char *p;

        if (extract(t) != 0) {
            t->blocked = 1;
            return;
        }
        if (budget == 0)
            return;
        p = rq_linesplit_space(t->ls, READ_CHUNK, &got);
        if (p == NULL) {
            rq_error("tailer: out of memory for the read buffer");
            t->blocked = 1;
            return;
        }
        n = read(t->fd, p, got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (!t->read_error_logged)
                rq_error("tailer: read %s: %s", t->path, RQ_STRERR(errno));
            t->read_error_logged = 1;
            t->eof = 1;
            return;
        }
        if (n == 0) {
            t->eof = 1;
            close_building(t); /* no more lines now: send what we have */
            return;
        }
        t->read_error_logged = 0;
        rq_linesplit_commit(t->ls, (size_t)n);
        /* the first bytes feed the fingerprint until it covers RQ_TAIL_FP_BYTES */
        if (t->ident.fp_len < RQ_TAIL_FP_BYTES && t->read_pos <= (int64_t)t->ident.fp_len &&
            t->read_pos + n > (int64_t)t->ident.fp_len) {
            size_t from = t->ident.fp_len - (size_t)t->read_pos;
            size_t take = (size_t)n - from;
            if (take > RQ_TAIL_FP_BYTES - t->ident.fp_len)
                take = RQ_TAIL_FP_BYTES - t->ident.fp_len;
            memcpy(t->head_bytes + t->ident.fp_len, p + from, take);
            t->ident.fp_len += (uint32_t)take;
            t->ident.fp = rq_tail_hash(t->head_bytes, t->ident.fp_len);
        }
        rq_window_push(t->last_read, &t->last_read_len, p, (size_t)n);
        t->read_pos += n;
        t->eof = 0;
        budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
    }
}

/* The open file no longer holds what was read from it: finish the lines read, then start
 * again at 0 once they are committed. */
static void truncated(rq_tailer_t *t, const char *why)
{
    rq_warn("tailer: %s %s (read up to offset %" PRId64 "); starting it again at 0 as a new "
            "file",
            t->path, why, t->read_pos);
    count_rotation(t);
    t->action = ACT_RESTART;
    t->flush_pending = 1;
}

/* Acts on the verdict about the open file: truncated or rewritten, rotated away, or still
 * at the path. */
static void check_file(rq_tailer_t *t, int64_t now)
{
    rq_tail_reading_t r = {t->fd,       t->path,      &t->ident,       t->head_bytes,
                           t->read_pos, t->last_read, t->last_read_len};
    rq_tail_verdict_t v;

    rq_tail_watch_check(&r, &v);
    if (v.have_size)
        t->file_size = v.size;
    if (v.kind == RQ_TAIL_TRUNCATED) {
        truncated(t, v.why);
        return;
    }
    if (v.kind == RQ_TAIL_AT_PATH) {
        t->rotated = 0; /* (again) the file at the path: nothing to switch to */
        t->rotated_ms = 0;
        return;
    }
    if (!t->rotated) {
        t->rotated = 1;
        t->rotated_ms = 0;
        count_rotation(t);
        rq_info("tailer: %s was %s; reading the old file to its end", t->path,
                v.path_exists ? "rotated" : "renamed or deleted");
    }
    /* The old file is left rotate_wait after another file appears at the path, or after it
     * is deleted; renamed away with nothing new at the path yet, it is still the file to
     * read (late writes keep coming to it). */
    if (t->rotated_ms == 0 && (v.path_exists || v.unlinked))
        t->rotated_ms = now;
}

/* Submits the READY jobs in order until one is refused. */
static void submit_ready(rq_tailer_t *t, int64_t now)
{
    for (int i = 0; i < rq_tail_jobs_count(t->jobs); i++) {
        rq_tail_job_t *j = rq_tail_jobs_at(t->jobs, i);

        if (j->state == RQ_TJ_BUILDING)
            return;
        if (j->state != RQ_TJ_READY)
            continue;
        if (now < t->retry_at_ms || t->inflight >= t->o.max_inflight)
            return;
        j->state = RQ_TJ_SUBMITTED;
        pthread_mutex_lock(&t->lock);
        j->result = RQ_TJ_PENDING; /* before submit: done may run before it returns */
        pthread_mutex_unlock(&t->lock);
        if (t->submit(t->submit_arg, &j->job) != 0) {
            j->state = RQ_TJ_READY;
            t->retry_at_ms = now + rq_backoff_next(&t->backoff);
            /* brief refusals (starting up, a reconnect) are routine; a long streak is not */
            if (t->refused_logged == 0) {
                t->refused_since_ms = now;
                rq_info("tailer: the publisher refused lines (%s); retrying",
                        j->job.error ? j->job.error : "refused");
                t->refused_logged = 1;
            } else if (t->refused_logged == 1 && now - t->refused_since_ms > 10000) {
                rq_warn("tailer: the publisher has refused lines for %" PRId64 " s (%s); still "
                        "retrying, reading is paused",
                        (now - t->refused_since_ms) / 1000, j->job.error ? j->job.error : "");
                t->refused_logged = 2;
            }
            return;
        }
        if (t->refused_logged)
            rq_info("tailer: the publisher accepts lines again");
        t->refused_logged = 0;
        rq_backoff_reset(&t->backoff);
        t->inflight++;
    }
}

/* Commits the confirmed prefix of the ring; notes failures. */
static void collect(rq_tailer_t *t)
{
    uint64_t confirmed = 0;
    int failed = 0, inflight = 0;
    int r;

    if ((r = rq_wakeup_drain(t->wake)) < 0)
        rq_warn("tailer: eventfd read: %s", RQ_STRERR(-r));
    pthread_mutex_lock(&t->lock);
    while (rq_tail_jobs_count(t->jobs) > 0) {
        rq_tail_job_t *j = rq_tail_jobs_at(t->jobs, 0);
        if (j->state != RQ_TJ_SKIPPED &&
            (j->state != RQ_TJ_SUBMITTED || j->result != RQ_TJ_CONFIRMED))
            break;
        t->committed = j->end;
        memcpy(t->committed_before, j->before, j->before_len);
        t->committed_before_len = j->before_len;
        confirmed += j->nrec;
        rq_tail_jobs_pop_front(t->jobs);
        t->dirty = 1;
    }
    for (int i = 0; i < rq_tail_jobs_count(t->jobs); i++) {
        rq_tail_job_t *j = rq_tail_jobs_at(t->jobs, i);
        if (j->state != RQ_TJ_SUBMITTED)
            continue;
        failed |= j->result == RQ_TJ_FAILED;
        inflight += j->result == RQ_TJ_PENDING;
    }
    t->stats.lines_confirmed += confirmed;
    t->stats.committed = t->committed;
    t->stats.inflight_jobs = inflight;
    pthread_mutex_unlock(&t->lock);
    t->inflight = inflight;
    if (confirmed)
        rq_series_add(t->m_confirmed, (double)confirmed);
    if (failed && !t->rewind) {
        rq_warn("tailer: the publisher gave up on tailed lines; publishing again from offset "
                "%" PRId64,
                t->committed);
        t->rewind = 1;
    }
}

/* Drops the uncommitted jobs and reads again from the committed offset. Only when nothing is
 * in flight. */
static void do_rewind(rq_tailer_t *t)
{
    rq_tail_jobs_clear(t->jobs);
    if (t->fd >= 0) {
        if (lseek(t->fd, (off_t)t->committed, SEEK_SET) < 0)
            rq_warn("tailer: lseek: %s", RQ_STRERR(errno));
        t->read_pos = t->committed;
        t->last_read_len = 0;
        rq_window_push(t->last_read, &t->last_read_len, t->committed_before,
                       t->committed_before_len);
        rq_linesplit_reset(t->ls, t->committed, t->committed_before, t->committed_before_len);
        t->eof = 0;
        if (t->action != ACT_NONE) {
            t->action = ACT_NONE; /* the checks find the reason again */
            t->flush_pending = 0;
            t->rotated = 0;
        }
    }
    t->rewind = 0;
}

/* Every job is committed: follow the next file, or restart the truncated one at 0. */
static void do_action(rq_tailer_t *t)
{
    rq_tail_ident_t id;
    unsigned char head[RQ_TAIL_FP_BYTES];

    if (t->dirty)
        save_now(t);
    if (t->action == ACT_RESTART && rq_tail_ident_of_fd(t->fd, &id, head) == 0) {
        start_generation(t, t->fd, t->path, &id, head, 0, NULL);
        return;
    }
    rq_info("tailer: finished the old file (file id %s) at offset %" PRId64, t->file_id,
            t->committed);
    close(t->fd);
    t->fd = -1;
    t->action = ACT_NONE;
    t->rotated = 0;
    t->file_size = 0;
    rq_tail_watch_unwatch_file(t->watch);
    pthread_mutex_lock(&t->lock);
    t->stats.following = 0;
    pthread_mutex_unlock(&t->lock);
    open_path(t);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Phase "collect" is collect() above. The rest of the loop, in order: */

/* Reads the stop request. Returns 1 when the thread is asked to stop. */
static int stop_requested(rq_tailer_t *t)
{
    int stop;

    pthread_mutex_lock(&t->lock);
    stop = t->stop;
    pthread_mutex_unlock(&t->lock);
    return stop;
}

/* Phase "act": looks at the folder, rewinds once nothing is in flight, opens the file when
 * none is open, and carries a pending action (flush the partial line, then switch or restart
 * once every job is committed). Leaves t->fd open (or -1), t->action ACT_NONE when reading may
 * go on. */
static void act(rq_tailer_t *t, int64_t now)
{
    rq_tail_watch_dir(t->watch, now);
    if (t->rewind && t->inflight == 0)
        do_rewind(t);
    if (t->fd < 0 && !t->rewind)
        open_path(t);
    if (t->fd < 0 || t->rewind)
        return;
    if (t->action != ACT_NONE && t->flush_pending && flush_partial(t) == 0) {
        close_building(t);
        t->flush_pending = 0;
    }
    if (t->action != ACT_NONE && !t->flush_pending && rq_tail_jobs_count(t->jobs) == 0)
        do_action(t);
}

/* Phase "read": with a file open, no rewind and no action pending, checks the file's identity,
 * reads what was appended into jobs, and decides to leave a rotated file once rotate_wait is
 * over and it is read to its end (sets t->action ACT_SWITCH with a flush pending). */
static void read_input(rq_tailer_t *t, int64_t now)
{
    if (t->fd < 0 || t->rewind || t->action != ACT_NONE)
        return;
    check_file(t, now);
    if (t->action == ACT_NONE)
        pump(t);
    if (t->action == ACT_NONE && t->rotated && t->rotated_ms != 0 && t->eof && !t->blocked &&
        now - t->rotated_ms >= t->o.rotate_wait_ms) {
        pump(t); /* one last look for late writes */
        if (t->eof && !t->blocked) {
            t->action = ACT_SWITCH;
            t->flush_pending = 1;
        }
    }
}

/* Phase "submit": hands the READY jobs to the publisher, in order, unless a rewind waits. */
static void submit_jobs(rq_tailer_t *t, int64_t now)
{
    if (!t->rewind)
        submit_ready(t, now);
}

/* Phase "save": saves the position when dirty and SAVE_EVERY_MS have passed, and publishes
 * the bytes-behind gauge and the read offset in the stats. */
static void save_due(rq_tailer_t *t, int64_t now)
{
    if (t->dirty && now - t->last_save_ms >= SAVE_EVERY_MS)
        save_now(t);
    rq_series_set(t->m_behind, t->fd >= 0 && t->file_size > t->committed
                                   ? (double)(t->file_size - t->committed)
                                   : 0);
    pthread_mutex_lock(&t->lock);
    t->stats.read_offset = rq_linesplit_offset(t->ls);
    pthread_mutex_unlock(&t->lock);
}

/* Phase "wait": sleeps on the wake-up and the watch until the next thing is due: not at all
 * with more to read, else at most poll_ms. Drains the watch's events when it fired. */
static void wait_for_work(rq_tailer_t *t, int64_t now)
{
    int64_t timeout = t->o.poll_ms;
    struct pollfd pf[2];
    int nfds = 1, ready = 0;

    if (t->fd >= 0 && !t->eof && !t->blocked && !t->rewind && t->action == ACT_NONE)
        timeout = 0;
    if (t->action != ACT_NONE && !t->flush_pending && rq_tail_jobs_count(t->jobs) == 0)
        timeout = 0;
    for (int i = 0; i < rq_tail_jobs_count(t->jobs); i++)
        ready |= rq_tail_jobs_at(t->jobs, i)->state == RQ_TJ_READY;
    if (ready && t->inflight < t->o.max_inflight) /* else a completion wakes us */
        timeout = min64(timeout, t->retry_at_ms - now);
    if (t->dirty)
        timeout = min64(timeout, t->last_save_ms + SAVE_EVERY_MS - now);
    if (t->rotated && t->rotated_ms != 0 && t->action == ACT_NONE)
        timeout = min64(timeout, t->rotated_ms + t->o.rotate_wait_ms - now);
    if (timeout < 0)
        timeout = 0;
    pf[0].fd = rq_wakeup_fd(t->wake);
    pf[0].events = POLLIN;
    if (rq_tail_watch_fd(t->watch) >= 0) {
        pf[1].fd = rq_tail_watch_fd(t->watch);
        pf[1].events = POLLIN;
        nfds = 2;
    }
    if (poll(pf, (nfds_t)nfds, (int)timeout) > 0 && nfds == 2 && (pf[1].revents & POLLIN))
        rq_tail_watch_drain(t->watch);
}

/* At stop: drops the jobs not yet accepted (read again next time), waits until the stop
 * deadline for the submitted ones, saves the position and logs where it stopped. */
static void finish(rq_tailer_t *t)
{
    int64_t deadline;

    while (rq_tail_jobs_count(t->jobs) > 0) {
        rq_tail_job_t *j = rq_tail_jobs_at(t->jobs, rq_tail_jobs_count(t->jobs) - 1);
        if (j->state != RQ_TJ_BUILDING && j->state != RQ_TJ_READY)
            break;
        rq_tail_jobs_pop_back(t->jobs);
    }
    pthread_mutex_lock(&t->lock);
    deadline = t->stop_deadline_ms;
    pthread_mutex_unlock(&t->lock);
    for (;;) {
        struct pollfd pf = {rq_wakeup_fd(t->wake), POLLIN, 0};
        int64_t left;
        collect(t);
        left = deadline - rq_mono_ms();
        if (t->inflight == 0 || left <= 0)
            break;
        poll(&pf, 1, (int)min64(left, 50));
    }
    if (t->file_id[0] != '\0' && (t->dirty || t->save_error_logged))
        save_now(t);
    rq_info("tailer: stopped at offset %" PRId64 " of file id %s (%d jobs unconfirmed)",
            t->committed, t->file_id[0] ? t->file_id : "-", t->inflight);
}

/* The tail thread: collect -> act -> read -> submit -> save -> wait, until stopped. */
static void *tail_main(void *arg)
{
    rq_tailer_t *t = arg;

    rq_thread_name("rq-tailer");
    for (;;) {
        int64_t now = rq_mono_ms();

        collect(t);
        if (stop_requested(t))
            break;
        act(t, now);
        read_input(t, now);
        submit_jobs(t, now);
        now = rq_mono_ms();
        save_due(t, now);
        wait_for_work(t, now);
    }
    finish(t);
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------ */

void rq_tail_opts_from_config(rq_tail_opts_t *o, const rq_config_t *cfg)
{
    memset(o, 0, sizeof(*o));
    o->path = cfg->input_file;
    o->state_dir = cfg->tail_state_dir;
    o->from_end = cfg->tail_from_id == RQ_TAIL_FROM_END;
    o->max_line = (size_t)cfg->tail_max_line_bytes;
    o->overlong =
        cfg->tail_overlong_id == RQ_TAIL_OVERLONG_SKIP ? RQ_OVERLONG_SKIP : RQ_OVERLONG_SPLIT;
    o->poll_ms = cfg->tail_poll_ms;
    o->rotate_wait_ms = cfg->tail_rotate_wait_ms;
    o->batch_lines = cfg->tail_batch_lines;
    if (cfg->max_pending > 0 && o->batch_lines > cfg->max_pending)
        o->batch_lines = cfg->max_pending;
    o->max_inflight = cfg->tail_max_inflight_jobs;
    o->chunk_bytes = cfg->tail_chunk_bytes > 0 ? (size_t)cfg->tail_chunk_bytes : 0;
    o->use_inotify = 1;
}

/* mkdir -p. Returns 0 or -1 (errno set). */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(buf)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static void register_metrics(rq_tailer_t *t, rq_metrics_t *m)
{
    rq_metric_t *f;

    f = rq_metrics_counter(m, "producer_lines_read_total",
                           "Lines read from INPUT_FILE and handed to the publisher (a piece of "
                           "a split overlong line counts as a line).",
                           0, NULL);
    t->m_read = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(m, "producer_tail_lines_confirmed_total",
                           "Tailed lines confirmed by the broker.", 0, NULL);
    t->m_confirmed = rq_metric_series(f, 0, NULL);
    f = rq_metrics_gauge(m, "producer_tail_bytes_behind",
                         "Bytes of the tailed file after the confirmed offset.", 0, NULL);
    t->m_behind = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(m, "producer_tail_rotations_total",
                           "Rotations seen: renamed or deleted, truncated or rewritten files.", 0,
                           NULL);
    t->m_rotations = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(m, "producer_tail_overlong_lines_total",
                           "Tailed lines longer than TAIL_MAX_LINE_BYTES (split or skipped).", 0,
                           NULL);
    t->m_overlong = rq_metric_series(f, 0, NULL);
}

/* Fills a zeroed t from o: the lock, copies of the strings (t->o points at them), the job ring
 * and the line splitter. Returns 0, or -1 with err filled (t half built: rq_tailer_free()). */
static int init_parts(rq_tailer_t *t, const rq_tail_opts_t *o, rq_tail_submit_fn submit,
                      void *submit_arg, char *err, size_t errlen)
{
    const char *slash;

    pthread_mutex_init(&t->lock, NULL);
    t->o = *o;
    t->fd = t->lock_fd = -1;
    t->first_open = 1;
    rq_backoff_init(&t->backoff, BACKOFF_MIN_MS, BACKOFF_MAX_MS, /*jitter=*/0);
    t->submit = submit;
    t->submit_arg = submit_arg;
    t->path = strdup(o->path);
    t->state_dir = strdup(o->state_dir);
    slash = strrchr(o->path, '/');
    t->dir = slash == NULL      ? strdup(".")
             : slash == o->path ? strdup("/")
                                : strndup(o->path, (size_t)(slash - o->path));
    if (t->o.chunk_bytes == 0)
        t->o.chunk_bytes = RQ_TAIL_CHUNK_BYTES_DEFAULT;
    t->jobs =
        rq_tail_jobs_new(o->max_inflight + 1, o->batch_lines, t->o.chunk_bytes, on_job_done, t);
    t->ls = rq_linesplit_new(o->max_line, o->overlong);
    if (t->path == NULL || t->state_dir == NULL || t->dir == NULL || t->jobs == NULL ||
        t->ls == NULL) {
        rq_errf(err, errlen, "out of memory");
        return -1;
    }
    t->o.path = t->path;
    t->o.state_dir = t->state_dir;
    return 0;
}

/* Creates the state folder, names the state file (t->state_path) and takes its exclusive lock
 * (t->lock_fd), then removes a temporary file left by a crash. Returns 0, or -1 with err
 * filled (t->lock_fd may then be open: rq_tailer_free() closes it). */
static int lock_state(rq_tailer_t *t, char *err, size_t errlen)
{
    char lock_path[4300], tmp_path[4300];

    if (make_dirs(t->state_dir) != 0) {
        rq_errf(err, errlen, "TAIL_STATE_DIR %s: %s", t->state_dir, RQ_STRERR(errno));
        return -1;
    }
    if (rq_tail_state_path(t->state_dir, t->path, t->state_path, sizeof(t->state_path)) != 0) {
        rq_errf(err, errlen, "TAIL_STATE_DIR/INPUT_FILE: path too long");
        return -1;
    }
    snprintf(lock_path, sizeof(lock_path), "%s.lock", t->state_path);
    t->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (t->lock_fd < 0) {
        rq_errf(err, errlen, "%s: %s", lock_path, RQ_STRERR(errno));
        return -1;
    }
    if (flock(t->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        rq_errf(err, errlen, "%s is tailed by another process with the same TAIL_STATE_DIR (%s)",
                t->path, RQ_STRERR(errno));
        return -1;
    }
    snprintf(tmp_path, sizeof(tmp_path), "%s.tmp", t->state_path);
    unlink(tmp_path); /* a save cut short by a crash */
    return 0;
}

/* Loads the saved position into t->loaded and sets t->have_state (1 loaded, 0 none, -1
 * unreadable, logged). Never fails: without a usable position the file is read from its head. */
static void load_position(rq_tailer_t *t)
{
    char lerr[512];

    t->have_state = 0;
    switch (rq_tail_state_load(t->state_path, &t->loaded, lerr, sizeof(lerr))) {
    case 0:
        t->have_state = 1;
        rq_info("tailer: saved position for %s: file id %s, offset %" PRId64, t->path,
                t->loaded.file_id, t->loaded.offset);
        break;
    case 1:
        break;
    default:
        t->have_state = -1;
        rq_error("tailer: the saved position is unreadable (%s); the file will be read from "
                 "its head",
                 lerr);
        break;
    }
}

/* Creates the wake-up and the watch, registers the metrics and starts the tail thread (sets
 * t->started). Returns 0, or -1 with err filled (what was created stays for rq_tailer_free()). */
static int start_thread(rq_tailer_t *t, rq_metrics_t *metrics, char *err, size_t errlen)
{
    t->wake = rq_wakeup_new();
    if (t->wake == NULL) {
        rq_errf(err, errlen, "eventfd: %s", RQ_STRERR(errno));
        return -1;
    }
    t->watch = rq_tail_watch_new(t->dir, t->o.use_inotify, t->o.poll_ms);
    if (t->watch == NULL) {
        rq_errf(err, errlen, "out of memory");
        return -1;
    }
    register_metrics(t, metrics);
    if (pthread_create(&t->thread, NULL, tail_main, t) != 0) {
        rq_errf(err, errlen, "cannot start the tailer thread");
        return -1;
    }
    t->started = 1;
    return 0;
}

rq_tailer_t *rq_tailer_new(const rq_tail_opts_t *o, rq_metrics_t *metrics, rq_tail_submit_fn submit,
                           void *submit_arg, char *err, size_t errlen)
{
    rq_tailer_t *t = NULL;

    if (o->path == NULL || o->path[0] == '\0' || o->state_dir == NULL || o->max_line == 0 ||
        o->batch_lines < 1 || o->max_inflight < 1 || o->poll_ms < 1 || submit == NULL) {
        rq_errf(err, errlen, "invalid tailer options");
        return NULL;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto err;
    }
    if (init_parts(t, o, submit, submit_arg, err, errlen) != 0 || lock_state(t, err, errlen) != 0)
        goto err;
    load_position(t);
    if (start_thread(t, metrics, err, errlen) != 0)
        goto err;
    return t;

err:
    rq_tailer_free(t);
    return NULL;
}

void rq_tailer_stop(rq_tailer_t *t, int grace_ms)
{
    if (t == NULL || !t->started)
        return;
    pthread_mutex_lock(&t->lock);
    t->stop = 1;
    t->stop_deadline_ms = rq_mono_ms() + grace_ms;
    pthread_mutex_unlock(&t->lock);
    wake(t);
    pthread_join(t->thread, NULL);
    t->started = 0;
}

void rq_tailer_free(rq_tailer_t *t)
{
    if (t == NULL)
        return;
    rq_tailer_stop(t, 0);
    rq_tail_jobs_free(t->jobs);
    rq_linesplit_free(t->ls);
    if (t->fd >= 0)
        close(t->fd);
    rq_tail_watch_free(t->watch);
    rq_wakeup_free(t->wake);
    if (t->lock_fd >= 0)
        close(t->lock_fd);
    free(t->path);
    free(t->state_dir);
    free(t->dir);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void rq_tailer_stats(rq_tailer_t *t, rq_tail_stats_t *s)
{
    pthread_mutex_lock(&t->lock);
    *s = t->stats;
    pthread_mutex_unlock(&t->lock);
}
