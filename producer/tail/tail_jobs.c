/* tail_jobs.c - the job ring and chunk builder (see tail_jobs.h). */
#include "tail_jobs.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

struct rq_tail_jobs {
    rq_ring_t ring; /* of rq_tail_job_t, njobs slots allocated once: slots keep buffers */
    int batch_lines;
    size_t chunk_bytes;
    rq_tail_done_fn done;
    void *owner;
};

static void job_reset(rq_tail_job_t *j)
{
    j->n = 0;
    j->nrec = 0;
    j->chunk_open = 0;
    j->line_open = 0;
    j->arena_len = 0;
    j->state = RQ_TJ_FREE;
    if (j->arena_cap > 4 * RQ_TAIL_JOB_MAX_BYTES) {
        free(j->arena);
        j->arena = NULL;
        j->arena_cap = 0;
    }
}

rq_tail_jobs_t *rq_tail_jobs_new(int njobs, int batch_lines, size_t chunk_bytes,
                                 rq_tail_done_fn done, void *owner)
{
    rq_tail_jobs_t *r = NULL;

    if (njobs < 1 || batch_lines < 1)
        goto err;
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        goto err;
    rq_ring_init(&r->ring, sizeof(rq_tail_job_t), (size_t)njobs, (size_t)njobs);
    r->batch_lines = batch_lines;
    r->chunk_bytes = chunk_bytes;
    r->done = done;
    r->owner = owner;
    if (rq_ring_reserve(&r->ring, (size_t)njobs) != 0)
        goto err;
    for (size_t k = 0; k < r->ring.cap; k++)
        ((rq_tail_job_t *)rq_ring_slot(&r->ring, k))->owner = owner;
    return r;

err:
    rq_tail_jobs_free(r);
    return NULL;
}

void rq_tail_jobs_free(rq_tail_jobs_t *r)
{
    if (r == NULL)
        return;
    for (size_t k = 0; k < r->ring.cap; k++) {
        rq_tail_job_t *j = rq_ring_slot(&r->ring, k);

        free(j->msgs);
        free(j->body_off);
        free(j->id_off);
        free(j->arena);
    }
    rq_ring_clear(&r->ring);
    free(r);
}

int rq_tail_jobs_count(const rq_tail_jobs_t *r)
{
    return (int)rq_ring_len(&r->ring);
}

rq_tail_job_t *rq_tail_jobs_at(rq_tail_jobs_t *r, int i)
{
    assert(i >= 0);
    return rq_ring_at(&r->ring, (size_t)i);
}

rq_tail_job_t *rq_tail_jobs_building(rq_tail_jobs_t *r, int64_t at, const char *file_id)
{
    rq_tail_job_t *j;

    if (rq_ring_len(&r->ring) > 0) {
        j = rq_ring_at(&r->ring, rq_ring_len(&r->ring) - 1);
        if (j->state == RQ_TJ_BUILDING)
            return j;
    }
    j = rq_ring_push(&r->ring); /* the slot as it was left: its buffers are reused */
    if (j == NULL)
        return NULL; /* full */
    assert(j->state == RQ_TJ_FREE);
    j->state = RQ_TJ_BUILDING;
    j->n = 0;
    j->nrec = 0;
    j->chunk_open = 0;
    j->line_open = 0;
    j->arena_len = 0;
    j->start = j->end = at;
    snprintf(j->file_id, sizeof(j->file_id), "%s", file_id);
    return j;
}

/* Room for `need` more arena bytes plus the message id written when the chunk closes.
 * Returns 0, or -1 on allocation failure (j unchanged). */
static int arena_reserve(rq_tail_job_t *j, size_t need)
{
    size_t ncap;
    char *na;

    need += RQ_TAIL_FILE_ID_MAX + 24;
    if (j->arena_cap - j->arena_len >= need)
        return 0;
    ncap = j->arena_cap * 2;
    if (ncap < j->arena_len + need)
        ncap = j->arena_len + need;
    if (ncap < 64 * 1024)
        ncap = 64 * 1024;
    na = realloc(j->arena, ncap);
    if (na == NULL)
        return -1;
    j->arena = na;
    j->arena_cap = ncap;
    return 0;
}

/* Room for one more message. Returns 0, or -1 on allocation failure (j unchanged). */
static int msg_reserve(const rq_tail_jobs_t *r, rq_tail_job_t *j)
{
    size_t ncap = j->cap ? j->cap * 2 : 64;
    rq_pub_msg_t *nm;
    size_t *nb, *ni;

    if (j->n < j->cap)
        return 0;
    /* a job holds at most batch_lines records, so at most that many messages */
    if (ncap > (size_t)r->batch_lines)
        ncap = (size_t)r->batch_lines;
    if (ncap <= j->cap)
        ncap = j->cap + 1; /* a partial line flushed into a full job */
    nm = realloc(j->msgs, ncap * sizeof(*nm));
    if (nm == NULL)
        return -1;
    j->msgs = nm;
    nb = realloc(j->body_off, ncap * sizeof(*nb));
    if (nb == NULL)
        return -1;
    j->body_off = nb;
    ni = realloc(j->id_off, ncap * sizeof(*ni));
    if (ni == NULL)
        return -1;
    j->id_off = ni;
    j->cap = ncap;
    return 0;
}

/* Writes the id "<file id>:<offset>" of the last message after its body (room reserved). */
static void close_chunk(rq_tail_job_t *j)
{
    int n;

    if (!j->chunk_open)
        return;
    j->id_off[j->n - 1] = j->arena_len;
    n = snprintf(j->arena + j->arena_len, j->arena_cap - j->arena_len, "%s:%" PRId64, j->file_id,
                 j->msgs[j->n - 1].offset);
    j->arena_len += (size_t)n + 1;
    j->chunk_open = 0;
}

int rq_tail_jobs_add(rq_tail_jobs_t *r, rq_tail_job_t *j, const rq_line_t *line)
{
    int chunk = line->kind != RQ_LINE_PARTIAL;
    size_t rb = line->len + (chunk && line->newline ? 1 : 0);
    rq_pub_msg_t *m;

    if (line->kind == RQ_LINE_SKIPPED) {
        close_chunk(j);
        j->line_open = 0;
        j->end = line->end;
        return 0;
    }
    m = j->n > 0 ? &j->msgs[j->n - 1] : NULL;
    if (chunk && j->chunk_open && m->body_len + rb <= r->chunk_bytes &&
        m->end_offset == line->offset) {
        if (arena_reserve(j, rb) != 0)
            return -1;
    } else {
        close_chunk(j);
        if (msg_reserve(r, j) != 0 || arena_reserve(j, rb) != 0)
            return -1;
        m = &j->msgs[j->n++];
        memset(m, 0, sizeof(*m));
        j->body_off[j->n - 1] = j->arena_len;
        m->offset = line->offset;
        m->chunk = chunk;
        j->chunk_open = 1; /* a partial line's id is written at once, below */
    }
    memcpy(j->arena + j->arena_len, line->data, line->len);
    j->arena_len += line->len;
    if (rb > line->len)
        j->arena[j->arena_len++] = '\n';
    m->body_len += rb;
    m->end_offset = line->end; /* x-end: the consumer indexes [offset, end) */
    m->lines += chunk && line->newline;
    j->line_open = line->kind == RQ_LINE_PIECE && !line->newline;
    if (!chunk)
        close_chunk(j);
    j->nrec++;
    j->end = line->end;
    return 1;
}

int rq_tail_jobs_full(const rq_tail_jobs_t *r, const rq_tail_job_t *j)
{
    if (j->line_open)
        return j->arena_len >= RQ_TAIL_JOB_LINE_MAX_BYTES;
    return j->nrec >= (size_t)r->batch_lines || j->arena_len >= RQ_TAIL_JOB_MAX_BYTES;
}

void rq_tail_jobs_close(rq_tail_jobs_t *r, rq_tail_job_t *j, const unsigned char *before,
                        size_t before_len, int64_t now_ms)
{
    close_chunk(j);
    memcpy(j->before, before, before_len);
    j->before_len = before_len;
    if (j->n == 0) {
        if (j->end == j->start)
            rq_tail_jobs_pop_back(r);
        else
            j->state = RQ_TJ_SKIPPED;
        return;
    }
    for (size_t i = 0; i < j->n; i++) {
        rq_pub_msg_t *m = &j->msgs[i];
        m->body = j->arena + j->body_off[i];
        m->message_id = j->arena + j->id_off[i];
        m->content_type = "application/octet-stream";
        m->published_ms = now_ms;
        m->source = "tail";
        m->file_id = j->file_id;
    }
    memset(&j->job, 0, sizeof(j->job));
    j->job.msgs = j->msgs;
    j->job.n = j->n;
    j->job.retry_forever = 1;
    j->job.done = r->done;
    j->job.done_arg = j;
    j->state = RQ_TJ_READY;
}

void rq_tail_jobs_pop_back(rq_tail_jobs_t *r)
{
    job_reset(rq_ring_at(&r->ring, rq_ring_len(&r->ring) - 1));
    rq_ring_pop_back(&r->ring);
}

void rq_tail_jobs_pop_front(rq_tail_jobs_t *r)
{
    job_reset(rq_ring_at(&r->ring, 0));
    rq_ring_pop(&r->ring);
}

void rq_tail_jobs_clear(rq_tail_jobs_t *r)
{
    while (rq_ring_len(&r->ring) > 0)
        rq_tail_jobs_pop_back(r);
    rq_ring_reset(&r->ring);
}
