/* test_tail_jobs.c - the tailer's job ring and chunk builder, with no files or threads:
 * chunking by size and contiguity, skipped and partial lines, message ids, closing, the ring's
 * order, wrap-around and capacity. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tail_jobs.h"

static int done_calls;
static void *done_arg_seen;

static void on_done(rq_pub_job_t *job, void *arg)
{
    (void)job;
    done_calls++;
    done_arg_seen = arg;
}

static rq_line_t line(rq_line_kind_t kind, const char *data, int64_t off, int newline)
{
    rq_line_t l;

    memset(&l, 0, sizeof(l));
    l.kind = kind;
    l.data = data;
    l.len = data != NULL ? strlen(data) : 5;
    l.offset = off;
    l.newline = newline;
    l.end = off + (int64_t)l.len + (newline ? 1 : 0);
    return l;
}

static rq_line_t full(const char *data, int64_t off)
{
    return line(RQ_LINE_FULL, data, off, 1);
}

static const unsigned char before[] = "before";

Test(tail_jobs, new_rejects_bad_sizes)
{
    cr_assert_null(rq_tail_jobs_new(0, 10, 100, on_done, NULL));
    cr_assert_null(rq_tail_jobs_new(2, 0, 100, on_done, NULL));
    rq_tail_jobs_free(NULL);
}

Test(tail_jobs, lines_share_a_chunk_with_one_id)
{
    int owner;
    rq_tail_jobs_t *r = rq_tail_jobs_new(2, 10, 100, on_done, &owner);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 7, "f1");
    rq_line_t a = full("abc", 7), b = full("de", 11);

    cr_assert_not_null(j);
    cr_assert_eq(rq_tail_jobs_count(r), 1);
    cr_assert_eq(j->state, RQ_TJ_BUILDING);
    cr_assert_eq(j->start, 7);
    cr_assert_eq(rq_tail_jobs_building(r, 99, "other"), j, "the BUILDING job is reused");
    cr_assert_eq(rq_tail_jobs_add(r, j, &a), 1);
    cr_assert_eq(rq_tail_jobs_add(r, j, &b), 1);
    cr_assert_eq(j->n, 1);
    cr_assert_eq(j->nrec, 2);
    cr_assert_eq(j->end, 14);
    rq_tail_jobs_close(r, j, before, 6, 1234);
    cr_assert_eq(j->state, RQ_TJ_READY);
    cr_assert_eq(j->msgs[0].body_len, 7);
    cr_assert_eq(memcmp(j->msgs[0].body, "abc\nde\n", 7), 0);
    cr_assert_str_eq(j->msgs[0].message_id, "f1:7");
    cr_assert_eq(j->msgs[0].offset, 7);
    cr_assert_eq(j->msgs[0].end_offset, 14);
    cr_assert_eq(j->msgs[0].lines, 2);
    cr_assert_eq(j->msgs[0].chunk, 1);
    cr_assert_eq(j->msgs[0].published_ms, 1234);
    cr_assert_str_eq(j->msgs[0].source, "tail");
    cr_assert_str_eq(j->msgs[0].file_id, "f1");
    cr_assert_str_eq(j->msgs[0].content_type, "application/octet-stream");
    cr_assert_eq(j->before_len, 6);
    cr_assert_eq(memcmp(j->before, "before", 6), 0);
    cr_assert_eq(j->job.msgs, j->msgs);
    cr_assert_eq(j->job.n, 1);
    cr_assert_eq(j->job.retry_forever, 1);
    cr_assert_eq(j->owner, &owner);
    done_calls = 0;
    j->job.done(&j->job, j->job.done_arg);
    cr_assert_eq(done_calls, 1);
    cr_assert_eq(done_arg_seen, j);
    rq_tail_jobs_free(r);
}

Test(tail_jobs, chunk_bytes_and_gaps_start_new_messages)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(2, 10, 8, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
    rq_line_t a = full("aaa", 0), b = full("bbb", 4), c = full("cc", 8), d = full("dd", 20);

    rq_tail_jobs_add(r, j, &a);
    rq_tail_jobs_add(r, j, &b); /* 8 bytes: still fits */
    rq_tail_jobs_add(r, j, &c); /* 11 > 8: new chunk */
    rq_tail_jobs_add(r, j, &d); /* not contiguous: new chunk */
    rq_tail_jobs_close(r, j, before, 0, 0);
    cr_assert_eq(j->n, 3);
    cr_assert_str_eq(j->msgs[0].message_id, "f:0");
    cr_assert_eq(j->msgs[0].body_len, 8);
    cr_assert_str_eq(j->msgs[1].message_id, "f:8");
    cr_assert_eq(j->msgs[1].end_offset, 11);
    cr_assert_str_eq(j->msgs[2].message_id, "f:20");
    cr_assert_eq(memcmp(j->msgs[2].body, "dd\n", 3), 0);
    rq_tail_jobs_free(r);
}

Test(tail_jobs, skipped_ends_the_chunk_and_partial_travels_alone)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(2, 10, 100, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
    rq_line_t a = full("aa", 0), s = line(RQ_LINE_SKIPPED, NULL, 3, 1), b = full("bb", 9);
    rq_line_t p = line(RQ_LINE_PARTIAL, "tail", 12, 0);

    cr_assert_eq(rq_tail_jobs_add(r, j, &a), 1);
    cr_assert_eq(rq_tail_jobs_add(r, j, &s), 0);
    cr_assert_eq(j->end, 9);
    cr_assert_eq(j->nrec, 1, "a skipped line is no record");
    cr_assert_eq(rq_tail_jobs_add(r, j, &b), 1);
    cr_assert_eq(rq_tail_jobs_add(r, j, &p), 1);
    rq_tail_jobs_close(r, j, before, 0, 0);
    cr_assert_eq(j->n, 3);
    cr_assert_str_eq(j->msgs[1].message_id, "f:9");
    cr_assert_eq(j->msgs[2].chunk, 0);
    cr_assert_eq(j->msgs[2].lines, 0);
    cr_assert_eq(j->msgs[2].body_len, 4);
    cr_assert_eq(memcmp(j->msgs[2].body, "tail", 4), 0);
    cr_assert_str_eq(j->msgs[2].message_id, "f:12");
    cr_assert_eq(j->end, 16);
    rq_tail_jobs_free(r);
}

Test(tail_jobs, closing_empty_and_skipped_only_jobs)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(2, 10, 100, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 5, "f");
    rq_line_t s = line(RQ_LINE_SKIPPED, NULL, 5, 1);

    rq_tail_jobs_close(r, j, before, 0, 0);
    cr_assert_eq(rq_tail_jobs_count(r), 0, "a job covering nothing is dropped");
    j = rq_tail_jobs_building(r, 5, "f");
    rq_tail_jobs_add(r, j, &s);
    rq_tail_jobs_close(r, j, before, 3, 0);
    cr_assert_eq(rq_tail_jobs_count(r), 1);
    cr_assert_eq(j->state, RQ_TJ_SKIPPED);
    cr_assert_eq(j->before_len, 3);
    rq_tail_jobs_free(r);
}

Test(tail_jobs, full_at_batch_lines_and_partial_into_a_full_job)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(1, 2, 1, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
    rq_line_t a = full("a", 0), b = full("b", 2), p = line(RQ_LINE_PARTIAL, "c", 4, 0);

    rq_tail_jobs_add(r, j, &a);
    cr_assert_not(rq_tail_jobs_full(r, j));
    rq_tail_jobs_add(r, j, &b);
    cr_assert(rq_tail_jobs_full(r, j));
    cr_assert_eq(rq_tail_jobs_add(r, j, &p), 1, "a flushed partial line still fits");
    rq_tail_jobs_close(r, j, before, 0, 0);
    cr_assert_eq(j->n, 3);
    cr_assert_null(rq_tail_jobs_building(r, 5, "f"), "one slot, taken");
    rq_tail_jobs_free(r);
}

Test(tail_jobs, ring_order_wraps_and_clears)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(3, 1, 100, on_done, NULL);
    rq_line_t l[6];
    char txt[6][4];

    for (int i = 0; i < 6; i++) {
        snprintf(txt[i], sizeof(txt[i]), "l%d", i);
        l[i] = full(txt[i], 3 * i);
    }
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++) {
            rq_tail_job_t *j = rq_tail_jobs_building(r, 3 * (3 * round + i), "f");
            cr_assert_not_null(j);
            rq_tail_jobs_add(r, j, &l[3 * round + i]);
            cr_assert(rq_tail_jobs_full(r, j));
            rq_tail_jobs_close(r, j, before, 0, 0);
        }
        cr_assert_null(rq_tail_jobs_building(r, 0, "f"));
        for (int i = 0; i < 3; i++)
            cr_assert_eq(rq_tail_jobs_at(r, i)->start, 3 * (3 * round + i));
        rq_tail_jobs_pop_front(r);
        cr_assert_eq(rq_tail_jobs_count(r), 2);
        cr_assert_eq(rq_tail_jobs_at(r, 0)->start, 3 * (3 * round + 1));
        rq_tail_jobs_pop_back(r);
        cr_assert_eq(rq_tail_jobs_count(r), 1);
        cr_assert_eq(rq_tail_jobs_at(r, 0)->state, RQ_TJ_READY);
        rq_tail_jobs_clear(r);
        cr_assert_eq(rq_tail_jobs_count(r), 0);
        /* Every slot is free again: the next three jobs fit (a job still held would not). */
        for (int i = 0; i < 3; i++) {
            rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
            cr_assert_not_null(j);
            cr_assert_eq(j->state, RQ_TJ_BUILDING);
            cr_assert_eq(j->n, 0);
            rq_tail_jobs_add(r, j, &l[0]);
            rq_tail_jobs_close(r, j, before, 0, 0);
        }
        cr_assert_null(rq_tail_jobs_building(r, 0, "f"));
        rq_tail_jobs_clear(r);
    }
    rq_tail_jobs_free(r);
}

/* Chaos seed 100006214: a job closed between two pieces of a split overlong line, and an API
 * message published in between landed inside the line in the output. A job is not full while
 * its last record is a piece of a line still open (up to RQ_TAIL_JOB_LINE_MAX_BYTES). */
Test(tail_jobs, not_full_inside_a_split_line)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(1, 2, 100, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
    rq_line_t p1 = line(RQ_LINE_PIECE, "aaaa", 0, 0), p2 = line(RQ_LINE_PIECE, "bbbb", 4, 0),
              p3 = line(RQ_LINE_PIECE, "cccc", 8, 0), last = line(RQ_LINE_PIECE, "dd", 12, 1);

    rq_tail_jobs_add(r, j, &p1);
    rq_tail_jobs_add(r, j, &p2);
    cr_assert_not(rq_tail_jobs_full(r, j), "2 records, but the line goes on");
    rq_tail_jobs_add(r, j, &p3);
    cr_assert_not(rq_tail_jobs_full(r, j));
    rq_tail_jobs_add(r, j, &last);
    cr_assert(rq_tail_jobs_full(r, j), "the line ended: full at batch_lines");
    rq_tail_jobs_free(r);
}

Test(tail_jobs, a_split_line_past_the_bound_closes_the_job)
{
    rq_tail_jobs_t *r = rq_tail_jobs_new(1, 2, 1 << 20, on_done, NULL);
    rq_tail_job_t *j = rq_tail_jobs_building(r, 0, "f");
    static char piece[1 << 20];
    rq_line_t p;
    int64_t off = 0;
    size_t added = 0;

    memset(piece, 'x', sizeof(piece) - 1);
    while (!rq_tail_jobs_full(r, j)) {
        p = line(RQ_LINE_PIECE, piece, off, 0);
        cr_assert_eq(rq_tail_jobs_add(r, j, &p), 1);
        off = p.end;
        added += p.len;
        cr_assert_leq(added, (size_t)RQ_TAIL_JOB_LINE_MAX_BYTES + sizeof(piece), "bounded");
    }
    cr_assert_geq(added + 1024, (size_t)RQ_TAIL_JOB_LINE_MAX_BYTES, "ids aside, the bound");
    rq_tail_jobs_free(r);
}
