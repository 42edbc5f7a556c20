/* Unit tests for the publisher's confirm-stall rule (CONFIRM_STALL_MS, issue 19).
 *
 * publisher.c is #included, so confirm_stall() and the bookkeeping that feeds it (the publish
 * that finds nothing in flight, every ack and nack, connection.blocked/unblocked) are driven
 * directly; p->conn is a real TCP socket whose far end the test holds (tcp_peer.h). The
 * integration tests (test_cluster.py partition, test_confirm_stall.py) show the rule against
 * real brokers: a minority node, a loaded single node, a resource alarm. */
#include <amqp.h>
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcp_peer.h"

#include "publisher.c" /* producer/, on the include path of relayq_producer */
#undef malloc

static rq_config_t cfg;
static int lfd, sfd;

static void done_count(rq_pub_job_t *job, void *arg)
{
    (void)job;
    (*(int *)arg)++;
}

/* A publisher without its thread, "connected" to a local socket, with job of n messages in
 * flight (tags 1..n), the last sent `age_ms` ago and no confirm since. */
static rq_publisher_t *stalled_new(rq_pub_job_t *job, rq_pub_msg_t *msgs, size_t n, int age_ms,
                                   int *done)
{
    rq_publisher_t *p = calloc(1, sizeof(*p));

    cr_assert_not_null(p);
    cr_assert_eq(rq_config_defaults(&cfg), 0);
    p->cfg = &cfg;
    p->wake = rq_wakeup_new();
    pthread_mutex_init(&p->lock, NULL);
    p->waiters = rq_hmap_new(64);
    rings_init(p);
    p->inflight_base = p->next_tag = 1;
    p->ready = 1;
    p->conn = rq_test_tcp_peer(&lfd, &sfd);
    p->connected_ns = rq_mono_ns() - 60000000000LL;
    memset(job, 0, sizeof(*job));
    memset(msgs, 0, n * sizeof(*msgs));
    job->msgs = msgs;
    job->n = job->unconfirmed = n;
    job->publish_deadline_ns = rq_mono_ns() + 60000000000LL;
    job->done = done_count;
    job->done_arg = done;
    rq_list_push_back(&p->jobs, &job->node);
    p->pending = n;
    for (size_t i = 0; i < n; i++) {
        msgs[i].job = job;
        msgs[i].message_id = "m";
        msgs[i].content_type = "application/json";
        cr_assert_eq(ring_push(&p->sendq, &msgs[i]), 0);
        cr_assert_eq(ring_reserve(&p->inflight, 1), 0);
        mark_inflight(p);
    }
    p->confirm_at_ns = rq_mono_ns() - (int64_t)age_ms * 1000000;
    return p;
}

static void stalled_free(rq_publisher_t *p)
{
    rq_amqp_close(p->conn);
    close(sfd);
    close(lfd);
    rq_hmap_free(p->waiters);
    rq_wakeup_free(p->wake);
    rq_ring_clear(&p->sendq);
    rq_ring_clear(&p->inflight);
    pthread_mutex_destroy(&p->lock);
    free(p->reply_queue);
    free(p);
    rq_config_free(&cfg);
}

/* No ack or nack for CONFIRM_STALL_MS with publishes in flight: the connection is dropped,
 * and every unconfirmed message goes back to the send queue in order, marked maybe stored
 * (the broker may hold it); no job is answered yet: they are published again. */
Test(stall, total_stall_drops_the_connection_and_requeues_in_order)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[3];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 3, 3100, &done);

    cr_assert_eq(cfg.confirm_stall_ms, 3000, "the default");
    cr_assert_eq(confirm_stall(p, rq_mono_ns()), 1);
    cr_expect_null(p->conn, "the connection is closed");
    cr_expect_eq(p->inflight.len, 0);
    cr_assert_eq(p->sendq.len, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_expect_eq(*ring_at(&p->sendq, i), &msgs[i], "in order");
        cr_expect_eq(msgs[i].state, MSG_QUEUED);
        cr_expect(msgs[i].maybe_stored);
    }
    cr_expect_eq(done, 0, "nothing answered: published again on the next connection");
    cr_expect_leq(p->next_attempt_ns, rq_mono_ns(), "a long-lived connection: reconnect now");
    stalled_free(p);
}

Test(stall, not_within_the_window)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[2];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 2, 2500, &done);

    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0);
    cr_expect_not_null(p->conn);
    stalled_free(p);
}

/* connection.blocked (a resource alarm, cluster-wide): never a failover. */
Test(stall, never_while_the_broker_blocks_the_connection)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[2];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 2, 10000, &done);

    p->blocked = 1;
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0);
    cr_expect_not_null(p->conn);
    stalled_free(p);
}

Test(stall, never_with_the_rule_off)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[1];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 1, 100000, &done);

    cfg.confirm_stall_ms = 0;
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0);
    cr_expect_not_null(p->conn);
    stalled_free(p);
}

/* An ack of one message restarts the window (a slow broker confirms something); a nack too;
 * the end of connection.blocked too. With nothing in flight there is nothing to wait for. */
Test(stall, every_confirm_restarts_the_window)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[3];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 3, 10000, &done);
    amqp_basic_ack_t ack = {.delivery_tag = 1, .multiple = 0};
    amqp_basic_nack_t nack = {.delivery_tag = 2, .multiple = 0, .requeue = 0};
    amqp_frame_t f = {.frame_type = AMQP_FRAME_METHOD};

    f.payload.method.id = AMQP_BASIC_ACK_METHOD;
    f.payload.method.decoded = &ack;
    cr_assert_eq(handle_frame(p, &f), 0);
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0, "an ack came just now");
    cr_expect_eq(confirm_stall(p, rq_mono_ns() + 3001000000LL), 1, "then none for 3 s");

    stalled_free(p);
    p = stalled_new(&job, msgs, 3, 10000, &done);
    f.payload.method.id = AMQP_BASIC_NACK_METHOD;
    f.payload.method.decoded = &nack;
    cr_assert_eq(handle_frame(p, &f), 0);
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0, "a nack is an answer too");

    p->confirm_at_ns -= 10000000000LL;
    f.payload.method.id = AMQP_CONNECTION_UNBLOCKED_METHOD;
    f.payload.method.decoded = NULL;
    cr_assert_eq(handle_frame(p, &f), 0);
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0, "unblocked: a new window");

    ack.delivery_tag = 3;
    ack.multiple = 1;
    f.payload.method.id = AMQP_BASIC_ACK_METHOD;
    f.payload.method.decoded = &ack;
    cr_assert_eq(handle_frame(p, &f), 0);
    cr_assert_eq(p->inflight.len, 0);
    p->confirm_at_ns -= 10000000000LL;
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 0, "nothing in flight: nothing owed");
    stalled_free(p);
}

/* Publishes that keep coming do not hide a stall: only the publish that finds nothing in
 * flight starts the window. */
Test(stall, later_publishes_do_not_restart_the_window)
{
    rq_pub_job_t job;
    rq_pub_msg_t msgs[2];
    int done = 0;
    rq_publisher_t *p = stalled_new(&job, msgs, 1, 0, &done);
    int64_t first = p->confirm_at_ns;

    p->confirm_at_ns = first - 3100000000LL;
    memset(&msgs[1], 0, sizeof(msgs[1]));
    msgs[1].job = &job;
    msgs[1].message_id = "m";
    msgs[1].content_type = "application/json";
    job.n = job.unconfirmed = 2;
    cr_assert_eq(ring_push(&p->sendq, &msgs[1]), 0);
    cr_assert_eq(ring_reserve(&p->inflight, 1), 0);
    mark_inflight(p);
    cr_expect_eq(p->confirm_at_ns, first - 3100000000LL, "the window kept its start");
    cr_expect_eq(confirm_stall(p, rq_mono_ns()), 1);
    stalled_free(p);
}
