/* Unit tests for producer/publisher.c's bookkeeping (issue 11: items 1, 2, 4 and 11).
 *
 * The file is compiled into this test (it is #included), so the static functions that keep
 * the send queue, the in-flight ring and the jobs are driven directly, in states that are
 * hard to reach against a broker at will: a connection lost with wait=true jobs partly sent,
 * a message the wire cannot carry, an allocation that fails just before a publish. Where
 * frames are written, they go to a real TCP socket whose far end the test reads. A ring's
 * growth is made to fail by bounding it (max_cap), as an allocation failure would. Run under
 * ASan+UBSan by make test, so a stale pointer to memory a done() callback freed fails here. */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tcp_peer.h"

#include "publisher.c" /* producer/, on the include path of relayq_producer */
#undef malloc

/* ---- fixtures -------------------------------------------------------------------------- */

static rq_config_t cfg;

typedef struct done_log {
    int calls;
    rq_job_status_t status;
} done_log_t;

/* Like the HTTP thread: the job's owner frees the messages as soon as done() returns. */
static void done_free(rq_pub_job_t *job, void *arg)
{
    done_log_t *d = arg;

    d->calls++;
    d->status = job->status;
    memset(job->msgs, 0xa5, job->n * sizeof(*job->msgs));
    free(job->msgs);
    job->msgs = NULL;
}

/* Like the tailer or a test that inspects the result: keeps the messages. */
static void done_keep(rq_pub_job_t *job, void *arg)
{
    done_log_t *d = arg;

    d->calls++;
    d->status = job->status;
}

static rq_publisher_t *pub_new(void)
{
    rq_publisher_t *p = calloc(1, sizeof(*p));

    cr_assert_not_null(p);
    cr_assert_eq(rq_config_defaults(&cfg), 0);
    p->cfg = &cfg;
    p->wake = rq_wakeup_new();
    cr_assert_not_null(p->wake);
    pthread_mutex_init(&p->lock, NULL);
    p->waiters = rq_hmap_new(64);
    rings_init(p);
    p->inflight_base = 1;
    p->next_tag = 1;
    p->ready = 1;
    return p;
}

static void pub_free(rq_publisher_t *p)
{
    rq_pubbuf_free(p->pub);
    if (p->conn != NULL)
        amqp_destroy_connection(p->conn);
    rq_hmap_free(p->waiters);
    rq_wakeup_free(p->wake);
    rq_ring_clear(&p->sendq);
    rq_ring_clear(&p->inflight);
    pthread_mutex_destroy(&p->lock);
    free(p);
    rq_config_free(&cfg);
}

/* A job of n messages with heap-allocated messages (ids "<tag>-<i>"), accepted as
 * take_intake() accepts it. */
static rq_pub_job_t *job_new(rq_publisher_t *p, const char *tag, size_t n, int want_reply,
                             void (*done)(rq_pub_job_t *, void *), done_log_t *log)
{
    static char ids[64][32];
    static int next_id;
    rq_pub_job_t *job = calloc(1, sizeof(*job));

    cr_assert_not_null(job);
    job->msgs = calloc(n, sizeof(*job->msgs));
    job->n = n;
    job->want_reply = want_reply;
    job->publish_deadline_ns = rq_mono_ns() + 60000000000LL;
    job->reply_deadline_ns = job->publish_deadline_ns;
    job->done = done;
    job->done_arg = log;
    for (size_t i = 0; i < n; i++) {
        rq_pub_msg_t *m = &job->msgs[i];
        snprintf(ids[next_id % 64], sizeof(ids[0]), "%s-%zu", tag, i);
        m->message_id = ids[next_id++ % 64];
        m->body = "{}";
        m->body_len = 2;
        m->content_type = "application/json";
    }
    pthread_mutex_lock(&p->lock);
    cr_assert_eq(p->stopping, 0);
    pthread_mutex_unlock(&p->lock);
    job->unconfirmed = n;
    job->unreplied = want_reply ? n : 0;
    for (size_t i = 0; i < n; i++)
        job->msgs[i].job = job;
    jobs_append(p, job);
    p->pending += n;
    return job;
}

/* Puts message m in flight as publish_sendq() does once its frames are written. */
static void fake_publish(rq_publisher_t *p, rq_pub_msg_t *m)
{
    rq_uuid(m->correlation_id);
    cr_assert_eq(ring_push(&p->inflight, m), 0);
    m->tag = p->next_tag++;
    m->state = MSG_INFLIGHT;
    m->sent = 1;
    if (m->job->want_reply)
        cr_assert_eq(rq_hmap_put(p->waiters, m->correlation_id, m), 0);
}

static void queue(rq_publisher_t *p, rq_pub_msg_t *m)
{
    cr_assert_eq(ring_push(&p->sendq, m), 0);
}

/* ---- item 1: connection lost mid-send ------------------------------------------------- */

/* A wait=true job A with its first message in flight and the second still queued, beside a
 * plain job B in the same state and a job C not sent at all. Before the fix the send queue
 * was copied, then compacted in place by job_finish(A), and the stale copy replayed: B1 and
 * C0 twice, and A1 (freed by its owner) touched again. Now: every unconfirmed message once,
 * in order (in flight first, in tag order, then the queue), and no job is told "not stored"
 * for a message the broker may hold. */
Test(publisher, connection_lost_requeues_each_unconfirmed_message_once_in_order)
{
    rq_publisher_t *p = pub_new();
    done_log_t la = {0}, lb = {0}, lc = {0};
    rq_pub_job_t *a = job_new(p, "a", 2, 1, done_free, &la);
    rq_pub_job_t *b = job_new(p, "b", 2, 0, done_free, &lb);
    rq_pub_job_t *c = job_new(p, "c", 1, 0, done_free, &lc);
    rq_pub_msg_t *want[5];

    fake_publish(p, &a->msgs[0]);
    fake_publish(p, &b->msgs[0]);
    queue(p, &a->msgs[1]);
    queue(p, &b->msgs[1]);
    queue(p, &c->msgs[0]);
    want[0] = &a->msgs[0];
    want[1] = &b->msgs[0];
    want[2] = &a->msgs[1];
    want[3] = &b->msgs[1];
    want[4] = &c->msgs[0];

    connection_lost(p, "test: socket closed");

    cr_assert_eq(la.calls + lb.calls + lc.calls, 0, "no job is failed: all can be sent again");
    cr_assert_eq(p->inflight.len, 0);
    cr_assert_eq(p->sendq.len, 5, "each unconfirmed message once (got %zu)", p->sendq.len);
    for (size_t i = 0; i < 5; i++) {
        rq_pub_msg_t *m = *ring_at(&p->sendq, i);
        cr_expect_eq(m, want[i], "position %zu: %s", i, m->message_id);
        cr_expect_eq(m->state, MSG_QUEUED);
    }
    cr_expect(a->reply_lost, "A's callback queue is gone: its replies cannot come");
    cr_expect_eq(rq_hmap_len(p->waiters), 0, "no waiter points at A any more");

    /* On the new connection everything is confirmed: A completes as stored, reply lost. */
    p->inflight_base = 1;
    p->next_tag = 1;
    while (p->sendq.len > 0)
        fake_publish(p, ring_pop(&p->sendq));
    handle_confirm(p, 5, 1, 1);
    cr_expect_eq(la.calls, 1);
    cr_expect_eq(la.status, RQ_JOB_REPLY_LOST);
    cr_expect_eq(lb.status, RQ_JOB_CONFIRMED);
    cr_expect_eq(lc.status, RQ_JOB_CONFIRMED);
    cr_expect_null(p->jobs.head);
    free(a);
    free(b);
    free(c);
    pub_free(p);
}

/* ---- item 4: a stored message is never reported as not stored ------------------------- */

Test(publisher, confirmed_reply_job_at_connection_loss_is_reply_lost_and_stored)
{
    rq_publisher_t *p = pub_new();
    done_log_t la = {0}, lq = {0};
    rq_pub_job_t *a = job_new(p, "a", 2, 1, done_keep, &la);
    rq_pub_job_t *q = job_new(p, "q", 1, 1, done_keep, &lq); /* wait=true, nothing sent */

    fake_publish(p, &a->msgs[0]);
    fake_publish(p, &a->msgs[1]);
    queue(p, &q->msgs[0]);
    handle_confirm(p, 2, 1, 1); /* both stored; the replies are awaited */
    cr_assert_eq(la.calls, 0);

    connection_lost(p, "test: heartbeat timeout");

    cr_assert_eq(la.calls, 1);
    cr_expect_eq(la.status, RQ_JOB_REPLY_LOST, "stored: 504 with the ids, never 503");
    cr_expect_eq(a->msgs[0].outcome, RQ_MSG_STORED);
    cr_expect_eq(a->msgs[1].outcome, RQ_MSG_STORED);
    cr_expect_eq(lq.calls, 0, "a job with nothing sent yet still waits for its reply");
    cr_expect_eq(q->reply_lost, 0);
    cr_expect_eq(p->sendq.len, 1);

    /* Its deadline passes before a new connection: not stored, and it says so. */
    sweep_deadlines(p, q->publish_deadline_ns + 1);
    cr_expect_eq(lq.status, RQ_JOB_TIMEOUT);
    cr_expect_eq(q->msgs[0].outcome, RQ_MSG_NOT_STORED);
    free(a->msgs);
    free(a);
    free(q->msgs);
    free(q);
    pub_free(p);
}

Test(publisher, unconfirmed_message_past_its_deadline_is_unknown_not_unstored)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = job_new(p, "u", 3, 0, done_keep, &l);

    fake_publish(p, &j->msgs[0]);
    fake_publish(p, &j->msgs[1]);
    queue(p, &j->msgs[2]);
    handle_confirm(p, 1, 0, 1);
    connection_lost(p, "test: reset"); /* msgs[1] was sent: the broker may hold it */
    sweep_deadlines(p, j->publish_deadline_ns + 1);
    cr_assert_eq(l.calls, 1);
    cr_expect_eq(j->msgs[0].outcome, RQ_MSG_STORED);
    cr_expect_eq(j->msgs[1].outcome, RQ_MSG_UNKNOWN);
    cr_expect_eq(j->msgs[2].outcome, RQ_MSG_NOT_STORED);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* A returned message (no queue to route it to) is not stored, even though the broker acks
 * it: it is queued to be published again, and the topology to be declared again. */
Test(publisher, returned_then_acked_message_is_published_again)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = job_new(p, "r", 2, 0, done_keep, &l);

    fake_publish(p, &j->msgs[0]);
    fake_publish(p, &j->msgs[1]);
    j->msgs[0].returned = 1; /* what handle_return() sets */
    handle_confirm(p, 2, 1, 1);
    cr_expect_eq(l.calls, 0, "not complete: msgs[0] was returned");
    cr_expect_eq(j->unconfirmed, 1);
    cr_assert_eq(p->sendq.len, 1);
    cr_expect_eq(*ring_at(&p->sendq, 0), &j->msgs[0]);
    sweep_deadlines(p, j->publish_deadline_ns + 1);
    cr_expect_eq(l.status, RQ_JOB_TIMEOUT);
    cr_expect_eq(j->msgs[0].outcome, RQ_MSG_NOT_STORED);
    cr_expect_eq(j->msgs[1].outcome, RQ_MSG_STORED);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* A batch the broker partly refuses (a queue at its max-length with reject-publish nacks
 * what does not fit): the job fails, and each message says whether it was stored. */
Test(publisher, nacked_messages_are_not_stored_and_acked_ones_are)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = job_new(p, "n", 3, 0, done_keep, &l);

    for (size_t i = 0; i < 3; i++)
        fake_publish(p, &j->msgs[i]);
    handle_confirm(p, 2, 1, 1);
    handle_confirm(p, 3, 0, 0);
    cr_assert_eq(l.calls, 1);
    cr_expect_eq(l.status, RQ_JOB_UNAVAILABLE);
    cr_expect_eq(j->msgs[0].outcome, RQ_MSG_STORED);
    cr_expect_eq(j->msgs[1].outcome, RQ_MSG_STORED);
    cr_expect_eq(j->msgs[2].outcome, RQ_MSG_NOT_STORED);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* Sent on one connection, lost with it (the broker may hold it), then refused on the next:
 * the first copy may be stored, so the outcome is unknown, never "not stored" (a retry of
 * an unknown message is a duplicate nothing can deduplicate). */
Test(publisher, refused_republish_of_a_maybe_stored_message_is_unknown)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = job_new(p, "m", 1, 0, done_keep, &l);

    fake_publish(p, &j->msgs[0]);
    connection_lost(p, "test: reset before the ack");
    p->inflight_base = 1;
    p->next_tag = 1;
    fake_publish(p, ring_pop(&p->sendq));
    handle_confirm(p, 1, 0, 0); /* nacked on the new connection */
    cr_assert_eq(l.calls, 1);
    cr_expect_eq(j->msgs[0].outcome, RQ_MSG_UNKNOWN);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* Shutdown with a wait=true job whose messages are stored: the reply will not come here,
 * but the message is stored: REPLY_LOST (504 queued), never UNAVAILABLE (503). */
Test(publisher, shutdown_with_a_stored_reply_job_is_reply_lost)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0}, lq = {0};
    rq_pub_job_t *j = job_new(p, "s", 1, 1, done_keep, &l);
    rq_pub_job_t *q = job_new(p, "q", 1, 0, done_keep, &lq);

    fake_publish(p, &j->msgs[0]);
    handle_confirm(p, 1, 0, 1);
    queue(p, &q->msgs[0]);
    fail_remaining(p);
    cr_expect_eq(l.status, RQ_JOB_REPLY_LOST);
    cr_expect_eq(lq.status, RQ_JOB_UNAVAILABLE);
    cr_expect_eq(q->msgs[0].outcome, RQ_MSG_NOT_STORED);
    free(j->msgs);
    free(j);
    free(q->msgs);
    free(q);
    pub_free(p);
}

/* A job with one message the wire cannot carry is refused whole when it is taken, before
 * any of its messages is encoded: nothing of a job answered 400 reaches the broker. */
Test(publisher, a_job_with_one_message_the_wire_cannot_carry_is_refused_before_sending)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = calloc(1, sizeof(*j));
    char longid[300];

    j->msgs = calloc(3, sizeof(*j->msgs));
    j->n = 3;
    j->done = done_keep;
    j->done_arg = &l;
    j->publish_deadline_ns = rq_mono_ns() + 60000000000LL;
    memset(longid, 'x', 256);
    longid[256] = '\0';
    for (size_t i = 0; i < 3; i++) {
        j->msgs[i].message_id = i == 2 ? longid : "ok";
        j->msgs[i].content_type = "application/json";
        j->msgs[i].body = "{}";
        j->msgs[i].body_len = 2;
    }
    cr_assert_eq(rq_publisher_submit(p, j), 0);
    take_intake(p);
    cr_assert_eq(l.calls, 1);
    cr_expect_eq(l.status, RQ_JOB_INVALID);
    cr_expect_eq(p->sendq.len, 0, "no message of the job is queued to be sent");
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(j->msgs[i].outcome, RQ_MSG_NOT_STORED);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* A job handed over again (a caller that reuses its struct) starts with clean bookkeeping. */
Test(publisher, submit_resets_every_per_submission_field)
{
    rq_publisher_t *p = pub_new();
    done_log_t l = {0};
    rq_pub_job_t *j = calloc(1, sizeof(*j));

    j->msgs = calloc(1, sizeof(*j->msgs));
    j->n = 1;
    j->want_reply = 1;
    j->done = done_keep;
    j->done_arg = &l;
    j->msgs[0].message_id = "again";
    j->msgs[0].content_type = "application/json";
    j->reply_lost = 1;
    j->msgs[0].sent = 1;
    j->msgs[0].returned = 1;
    j->msgs[0].outcome = RQ_MSG_STORED;
    cr_assert_eq(rq_publisher_submit(p, j), 0);
    cr_expect_eq(j->reply_lost, 0);
    cr_expect_eq(j->msgs[0].sent, 0);
    cr_expect_eq(j->msgs[0].returned, 0);
    cr_expect_eq(j->msgs[0].outcome, RQ_MSG_NOT_STORED);
    take_intake(p);
    fail_remaining(p);
    free(j->msgs);
    free(j);
    pub_free(p);
}

/* ---- item 2: a drop right after a connect keeps its backoff --------------------------- */

Test(publisher, drop_soon_after_connect_keeps_the_backoff)
{
    rq_publisher_t *p = pub_new();
    int64_t now = rq_mono_ns();

    p->connected_ns = now - 50000000LL; /* ready 50 ms ago */
    connection_lost(p, "test: dropped at once");
    cr_expect_geq(p->next_attempt_ns - now, (int64_t)RQ_RECONNECT_MIN_MS / 2 * 1000000,
                  "the next attempt waits (got %lld ns)", (long long)(p->next_attempt_ns - now));
    int64_t first = p->next_attempt_ns - now;
    p->connected_ns = rq_mono_ns() - 10000000LL;
    connection_lost(p, "test: dropped at once again");
    cr_expect_gt(p->backoff.cur_ms, RQ_RECONNECT_MIN_MS, "the backoff grows");
    (void)first;

    p->connected_ns = rq_mono_ns() - STABLE_CONNECTION_NS - 1;
    connection_lost(p, "test: a long-lived connection dropped");
    cr_expect_eq(p->backoff.cur_ms, 0, "a stable connection resets the backoff");
    cr_expect_leq(p->next_attempt_ns, rq_mono_ns(), "and reconnects at once");
    pub_free(p);
}

/* ---- items 2 and 11: publishing against a real socket --------------------------------- */

typedef struct peer {
    int lfd, sfd;
} peer_t;

/* Connects p->conn (a plain rabbitmq-c TCP socket, no handshake) to a local listener and
 * makes p->pub raw, as connect_broker() does. */
static void peer_open(rq_publisher_t *p, peer_t *pe)
{
    p->conn = rq_test_tcp_peer(&pe->lfd, &pe->sfd);
    p->pub = rq_pubbuf_new(p->conn, 1, 1000);
    cr_assert_not_null(p->pub);
    p->reply_queue = strdup("amq.gen-test");
}

/* Bytes the publisher wrote so far (waits up to 200 ms for the first). */
static size_t peer_drain(peer_t *pe)
{
    unsigned char buf[65536];
    size_t total = 0;
    struct pollfd pf = {.fd = pe->sfd, .events = POLLIN};

    while (poll(&pf, 1, total == 0 ? 200 : 20) > 0) {
        ssize_t r = recv(pe->sfd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
    return total;
}

static void peer_close(rq_publisher_t *p, peer_t *pe)
{
    close(pe->sfd);
    close(pe->lfd);
    free(p->reply_queue);
    p->reply_queue = NULL;
}

/* A tailed chunk whose message_id cannot be an AMQP short string fails alone: 400-class
 * RQ_JOB_INVALID, nothing of it on the wire, the connection kept, the next job published.
 * Before the fix the encoder's error dropped the connection (every client got 503). */
Test(publisher, message_the_wire_cannot_carry_fails_only_its_job)
{
    rq_publisher_t *p = pub_new();
    peer_t pe;
    done_log_t lbad = {0}, lgood = {0};
    char longid[300];
    rq_pub_job_t *bad, *good;

    peer_open(p, &pe);
    bad = job_new(p, "bad", 1, 0, done_keep, &lbad);
    good = job_new(p, "good", 1, 1, done_keep, &lgood);
    memset(longid, 'x', 256);
    longid[256] = '\0';
    bad->msgs[0].message_id = longid;
    bad->msgs[0].file_id = "f0";
    queue(p, &bad->msgs[0]);
    queue(p, &good->msgs[0]);

    cr_assert_eq(publish_sendq(p), 0, "the connection is kept");
    cr_expect_not_null(p->conn);
    cr_expect_eq(lbad.calls, 1);
    cr_expect_eq(lbad.status, RQ_JOB_INVALID);
    cr_expect_eq(bad->msgs[0].outcome, RQ_MSG_NOT_STORED);
    cr_expect_eq(lgood.calls, 0);
    cr_expect_eq(good->msgs[0].state, MSG_INFLIGHT);
    cr_expect_eq(good->msgs[0].tag, 1, "the good message takes delivery tag 1");
    cr_expect_eq(p->inflight.len, 1);
    cr_expect_gt(peer_drain(&pe), 0);

    /* A property the encoder refuses (a header name over 255 bytes cannot occur from our
     * own code, a content type can be checked the same way): also per message. */
    done_log_t lct = {0};
    char longct[300];
    rq_pub_job_t *ct = job_new(p, "ct", 1, 0, done_keep, &lct);
    memset(longct, 'c', 299);
    longct[299] = '\0';
    ct->msgs[0].content_type = longct;
    queue(p, &ct->msgs[0]);
    cr_assert_eq(publish_sendq(p), 0);
    cr_expect_eq(lct.status, RQ_JOB_INVALID);
    cr_expect_eq(peer_drain(&pe), 0, "nothing of the refused message was sent");

    peer_close(p, &pe);
    free(bad->msgs);
    free(bad);
    free(good->msgs);
    free(good);
    free(ct->msgs);
    free(ct);
    pub_free(p);
}

/* Item 11: the in-flight ring must grow for this message and the allocation fails. Before
 * the fix the message was encoded and sent first, then left untracked: its confirm (tag N)
 * was matched to the next message. Now nothing is sent, the job fails, the tags stay in step. */
Test(publisher, allocation_failure_before_publish_sends_nothing_untracked)
{
    rq_publisher_t *p = pub_new();
    peer_t pe;
    done_log_t l1 = {0}, l2 = {0};
    rq_pub_job_t *j1, *j2;

    peer_open(p, &pe);
    /* Fill the in-flight ring to its capacity so the next publish must grow it. */
    cr_assert_eq(ring_reserve(&p->inflight, 1), 0);
    while (p->inflight.len < p->inflight.cap)
        ring_push(&p->inflight, NULL);
    p->inflight_base = 1;
    p->next_tag = 1 + p->inflight.len;
    uint64_t tag_before = p->next_tag;

    j1 = job_new(p, "oom", 1, 0, done_keep, &l1);
    queue(p, &j1->msgs[0]);
    p->inflight.max_cap = p->inflight.cap; /* the ring's growth fails, as out of memory */
    cr_assert_eq(publish_sendq(p), 0);
    p->inflight.max_cap = 0;
    cr_expect_eq(l1.calls, 1);
    cr_expect_eq(l1.status, RQ_JOB_UNAVAILABLE);
    cr_expect_eq(j1->msgs[0].outcome, RQ_MSG_NOT_STORED, "never sent");
    cr_expect_eq(p->next_tag, tag_before, "no delivery tag used");
    cr_expect_eq(peer_drain(&pe), 0, "nothing was sent untracked");

    /* The next message is tracked under the tag the broker will use for it. */
    j2 = job_new(p, "next", 1, 0, done_keep, &l2);
    queue(p, &j2->msgs[0]);
    cr_assert_eq(publish_sendq(p), 0);
    cr_expect_eq(j2->msgs[0].tag, tag_before);
    cr_expect_gt(peer_drain(&pe), 0);
    handle_confirm(p, tag_before, 0, 1);
    cr_expect_eq(l2.status, RQ_JOB_CONFIRMED);

    peer_close(p, &pe);
    free(j1->msgs);
    free(j1);
    free(j2->msgs);
    free(j2);
    pub_free(p);
}
