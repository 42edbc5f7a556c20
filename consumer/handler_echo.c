/* handler_echo.c - HANDLER=echo: today's behaviour, on timers instead of sleeps.
 *
 * A job is due processing_time after its start; at the first collect at or after that
 * moment it completes: attempts below fail_times fail (RETRY, why from
 * rq_retry_simulated_failure), the others succeed with the reply RQ_REPLY_PREFIX + the job's
 * line (its payload when it has none), which is rq_message_t's reply byte for byte.
 * HANDLER_TIMEOUT_MS does not apply (processing_time is capped by MAX_PROCESSING_TIME, as
 * before). Due jobs are kept in a binary min-heap on (due, start order), so jobs due at the
 * same moment come back in the order they were started. */
#include <stdlib.h>
#include <string.h>

#include "handler_impl.h"
#include "message.h"
#include "retry.h"
#include "util.h"

typedef struct echo_entry {
    int64_t due_ms;
    uint64_t seq;
    rq_handler_job_t *job;
    char *reply; /* built at start for a job that will succeed (so start is what can fail) */
    size_t reply_len;
} echo_entry_t;

typedef struct echo {
    echo_entry_t *heap; /* cap = concurrency entries, allocated once */
    size_t n, cap;
    uint64_t seq;
} echo_t;

static int entry_before(const echo_entry_t *a, const echo_entry_t *b)
{
    return a->due_ms < b->due_ms || (a->due_ms == b->due_ms && a->seq < b->seq);
}

static void swap_entries(echo_entry_t *a, echo_entry_t *b)
{
    echo_entry_t t = *a;

    *a = *b;
    *b = t;
}

static void sift_up(echo_t *e, size_t i)
{
    while (i > 0 && entry_before(&e->heap[i], &e->heap[(i - 1) / 2])) {
        swap_entries(&e->heap[i], &e->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

static void sift_down(echo_t *e, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < e->n && entry_before(&e->heap[l], &e->heap[m]))
            m = l;
        if (r < e->n && entry_before(&e->heap[r], &e->heap[m]))
            m = r;
        if (m == i)
            return;
        swap_entries(&e->heap[i], &e->heap[m]);
        i = m;
    }
}

static int echo_start(void *impl, rq_handler_job_t *job, int64_t now_ms)
{
    echo_t *e = impl;
    echo_entry_t *x;
    double ms = job->processing_time > 0 ? job->processing_time * 1000.0 : 0.0;

    if (e->n >= e->cap)
        return -1;
    x = &e->heap[e->n];
    memset(x, 0, sizeof(*x));
    if (job->fail_times <= 0 || job->attempt >= job->fail_times) {
        const char *line = job->line ? job->line : job->payload;
        size_t len = job->line ? job->line_len : job->payload_len;

        x->reply_len = RQ_REPLY_PREFIX_LEN + len;
        x->reply = malloc(x->reply_len + 1);
        if (x->reply == NULL)
            return -1;
        memcpy(x->reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN);
        if (len > 0)
            memcpy(x->reply + RQ_REPLY_PREFIX_LEN, line, len);
        x->reply[x->reply_len] = '\0';
    }
    /* rounded up: a job never completes before its processing_time */
    x->due_ms = now_ms + (int64_t)ms + ((double)(int64_t)ms < ms ? 1 : 0);
    x->seq = e->seq++;
    x->job = job;
    job->priv = NULL;
    e->n++;
    sift_up(e, e->n - 1);
    return 0;
}

static int echo_pollfds(void *impl, struct pollfd *pfd, int max, int64_t now_ms, int *timeout_ms)
{
    echo_t *e = impl;

    (void)pfd;
    (void)max;
    if (e->n == 0) {
        *timeout_ms = -1;
        return 0;
    }
    *timeout_ms = e->heap[0].due_ms <= now_ms ? 0 : (int)(e->heap[0].due_ms - now_ms);
    return 0;
}

static int echo_collect(void *impl, int64_t now_ms, rq_handler_job_t **done, int max)
{
    echo_t *e = impl;
    int n = 0;

    while (n < max && e->n > 0 && e->heap[0].due_ms <= now_ms) {
        echo_entry_t x = e->heap[0];
        rq_handler_job_t *j = x.job;

        e->heap[0] = e->heap[--e->n];
        sift_down(e, 0);
        j->status = 0;
        j->why[0] = '\0';
        j->reply = NULL;
        j->reply_len = 0;
        if (x.reply) {
            j->outcome = RQ_HANDLER_OK;
            j->reply = x.reply;
            j->reply_len = x.reply_len;
        } else {
            rq_message_t m;

            memset(&m, 0, sizeof(m));
            m.fail_times = j->fail_times;
            j->outcome = RQ_HANDLER_RETRY;
            rq_retry_simulated_failure(&m, j->attempt, j->why, sizeof(j->why));
        }
        done[n++] = j;
    }
    return n;
}

static void echo_cancel_all(void *impl)
{
    echo_t *e = impl;

    for (size_t i = 0; i < e->n; i++)
        free(e->heap[i].reply);
    e->n = 0;
}

static void echo_free(void *impl)
{
    echo_t *e = impl;

    if (e == NULL)
        return;
    echo_cancel_all(e);
    free(e->heap);
    free(e);
}

static const rq_handler_ops_t echo_ops = {
    .kind = "echo",
    .start = echo_start,
    .pollfds = echo_pollfds,
    .collect = echo_collect,
    .cancel_all = echo_cancel_all,
    .free = echo_free,
};

void *rq_handler_echo_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                          size_t errlen)
{
    echo_t *e = calloc(1, sizeof(*e));

    if (e == NULL)
        goto fail;
    e->cap = o->concurrency > 0 ? (size_t)o->concurrency : 1;
    e->heap = calloc(e->cap, sizeof(*e->heap));
    if (e->heap == NULL)
        goto fail;
    *ops = &echo_ops;
    return e;
fail:
    echo_free(e);
    rq_errf(err, errlen, "HANDLER echo: out of memory");
    return NULL;
}
