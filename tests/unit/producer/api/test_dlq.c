/* Unit tests for producer/api/dlq.c: the headers a replayed message keeps (issue 11 item 13), and
 * the worker's queue bound and shutdown (no broker needed: the jobs fail to connect). */
#include <amqp.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "dlq.h"

TestSuite(dlq, .timeout = 30);

static const amqp_table_entry_t *find(const amqp_table_t *t, const char *key)
{
    for (int i = 0; i < t->num_entries; i++)
        if (t->entries[i].key.len == strlen(key) &&
            memcmp(t->entries[i].key.bytes, key, t->entries[i].key.len) == 0)
            return &t->entries[i];
    return NULL;
}

Test(dlq, replay_keeps_every_user_header)
{
    static const char *const user[] = {"x-firstname", "x-last-seen", "x-lastly",     "x-deathstar",
                                       "x-first",     "x-last",      "x-relayq-uid", "X-Death"};
    static const char *const broker[] = {"x-death",
                                         "x-first-death-reason",
                                         "x-first-death-queue",
                                         "x-first-death-exchange",
                                         "x-last-death-reason",
                                         "x-last-death-queue",
                                         "x-relayq-attempts",
                                         "x-relayq-reason"};
    amqp_table_entry_t in[60];
    char names[40][16];
    amqp_table_t tin, out;
    int n = 0;

    for (int i = 0; i < 40; i++) {
        if (i < 8) /* x-relayq-uid: the dedup key, kept like a user header */
            snprintf(names[i], sizeof(names[i]), "%s", user[i]);
        else
            snprintf(names[i], sizeof(names[i]), "h%02d", i);
        in[n++] = rq_amqp_utf8_entry(names[i], "v");
    }
    for (size_t i = 0; i < sizeof(broker) / sizeof(broker[0]); i++)
        in[n++] = rq_amqp_utf8_entry(broker[i], "b");
    tin.num_entries = n;
    tin.entries = in;

    cr_assert_eq(rq_dlq_replay_headers(&tin, &out), 0);
    cr_expect_eq(out.num_entries, 41, "40 user headers + x-relayq-replayed, got %d",
                 out.num_entries);
    for (int i = 0; i < 40; i++)
        cr_expect_not_null(find(&out, names[i]), "user header %s dropped", names[i]);
    for (size_t i = 0; i < sizeof(broker) / sizeof(broker[0]); i++)
        cr_expect_null(find(&out, broker[i]), "%s kept", broker[i]);
    const amqp_table_entry_t *r = find(&out, "x-relayq-replayed");
    cr_assert_not_null(r);
    cr_expect_eq(r->value.kind, AMQP_FIELD_KIND_BOOLEAN);
    cr_expect_eq(r->value.value.boolean, 1);
    free(out.entries);
}

Test(dlq, replay_without_headers)
{
    amqp_table_t out;

    cr_assert_eq(rq_dlq_replay_headers(NULL, &out), 0);
    cr_expect_eq(out.num_entries, 1);
    cr_expect_not_null(find(&out, "x-relayq-replayed"));
    free(out.entries);
}

/* ---- the worker: every submitted job completes exactly once, also when it is freed ---- */

static int completed;

static void on_done(rq_dlq_job_t *job, void *arg)
{
    (void)arg;
    cr_expect_null(job->result);
    cr_expect_neq(job->error[0], '\0');
    __atomic_add_fetch(&completed, 1, __ATOMIC_SEQ_CST);
}

Test(dlq, worker_completes_every_job_and_bounds_its_queue)
{
    RabbitMQConfig cfg;
    rq_dlq_job_t jobs[RQ_DLQ_QUEUE_MAX + 8];
    int accepted = 0, refused = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.port = 1; /* nothing listens: each job fails at once */
    cfg.user = cfg.password = "guest";
    cfg.vhost = "/";
    cfg.request_queue = "q";
    cfg.connect_timeout_ms = 200;
    rq_dlq_worker_t *w = rq_dlq_worker_new(&cfg);
    cr_assert_not_null(w);
    memset(jobs, 0, sizeof(jobs));
    for (size_t i = 0; i < sizeof(jobs) / sizeof(jobs[0]); i++) {
        jobs[i].kind = i % 2 ? RQ_DLQ_RETRY : RQ_DLQ_PEEK;
        jobs[i].limit = 10;
        jobs[i].done = on_done;
        if (rq_dlq_worker_submit(w, &jobs[i]) == 0)
            accepted++;
        else
            refused++;
    }
    cr_expect_geq(refused, 1, "the queue is bounded");
    rq_dlq_worker_free(w);
    cr_expect_eq(__atomic_load_n(&completed, __ATOMIC_SEQ_CST), accepted);
}

/* Issue 11 item 12 review: the HTTP threads may still submit (keep-alive connections) after
 * the worker was stopped and until MHD_stop_daemon() returns; rq_api_free() used to free the
 * worker first (heap-use-after-free under ASan). Stop, then a late submit fails at once, then
 * free. */
static int late_done;

static void on_late_done(rq_dlq_job_t *job, void *arg)
{
    (void)job;
    (void)arg;
    __atomic_add_fetch(&late_done, 1, __ATOMIC_SEQ_CST);
}

Test(dlq, submit_after_stop_fails_at_once)
{
    RabbitMQConfig cfg;
    rq_dlq_job_t queued[4], late;
    int accepted = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "127.0.0.1";
    cfg.port = 1;
    cfg.user = cfg.password = "guest";
    cfg.vhost = "/";
    cfg.request_queue = "q";
    cfg.connect_timeout_ms = 200;
    rq_dlq_worker_t *w = rq_dlq_worker_new(&cfg);
    cr_assert_not_null(w);
    memset(queued, 0, sizeof(queued));
    for (int i = 0; i < 4; i++) {
        queued[i].kind = RQ_DLQ_PEEK;
        queued[i].limit = 1;
        queued[i].done = on_late_done;
        accepted += rq_dlq_worker_submit(w, &queued[i]) == 0;
    }
    rq_dlq_worker_stop(w); /* what rq_api_free() does before MHD_stop_daemon() */
    cr_expect_eq(__atomic_load_n(&late_done, __ATOMIC_SEQ_CST), accepted,
                 "every queued job completed by stop");
    memset(&late, 0, sizeof(late));
    late.kind = RQ_DLQ_PEEK;
    late.limit = 1;
    late.done = on_late_done;
    cr_expect_eq(rq_dlq_worker_submit(w, &late), -1); /* an HTTP thread, before the stop */
    cr_expect_str_eq(late.error, "the producer is stopping");
    rq_dlq_worker_stop(w); /* idempotent */
    rq_dlq_worker_free(w); /* after MHD_stop_daemon() */
    cr_expect_eq(__atomic_load_n(&late_done, __ATOMIC_SEQ_CST), accepted,
                 "the refused job never completes");
}
