/* publisher.c - one thread, one AMQP connection, pipelined confirms, RPC replies.
 *
 * Data structures, all owned by the publisher thread except the intake list:
 *   intake   jobs handed over by other threads (mutex + rq_wakeup_t)
 *   sendq    messages waiting to be published, in order
 *   inflight messages published and not yet confirmed, indexed by delivery tag - base
 *   waiters  correlation id -> message, for messages whose job waits for a reply
 *   jobs     every accepted, unfinished job, oldest first (deadline sweeps walk it)
 */
#include "publisher.h"

#include <amqp.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "amqp_conn.h"
#include "amqp_nodes.h"
#include "amqp_pub.h"
#include "hmap.h"
#include "hub.h"
#include "list.h"
#include "log.h"
#include "qname.h"
#include "ring.h"
#include "util.h"
#include "wakeup.h"
#include "wire.h"

/* MSG_REFUSED: the broker nacked it (not stored). */
enum { MSG_QUEUED = 0, MSG_INFLIGHT, MSG_CONFIRMED, MSG_REFUSED, MSG_DONE };

/* A connection that dies sooner than this after it became ready keeps its backoff: a broker
 * that accepts and then drops every connection is not hammered in a tight loop. */
#define STABLE_CONNECTION_NS (5 * 1000000000LL)
/* A connection with nacks and no ack for this long is treated as lost (see handle_nack). */
#define NACK_RUN_RECONNECT_MS 2000

/* The side channel of declares made while publishing (delay buckets, passive checks): a
 * refused declare closes it, never the publishing channel and its confirms. */
#define DECL_CHANNEL 2
/* A delay bucket is declared again before a publish once its last declare is this old (it
 * expires RQ_DELAY_QUEUE_IDLE_MS after its last use; the issue asks for at most 60 s). */
#define BUCKET_REDECLARE_NS (30 * 1000000000LL)
#define BUCKETS_MAX 4096 /* cached bucket declares; more: the cache starts over */
#define NO_QUEUE_TEXT "the queue does not exist"

#define REPLY_LOST_TEXT                                                                            \
    "the message is stored, but the broker connection was lost before the reply came; "            \
    "GET /messages/{id} shows its status"

struct rq_publisher {
    const rq_config_t *cfg;
    rq_reply_hook_t hook;
    void *hook_arg;

    pthread_t thread;
    int thread_started;
    rq_wakeup_t *wake; /* signalled on intake and on stop */

    pthread_mutex_t lock; /* guards intake, pending, ready, reason, stopping */
    rq_list_t intake;     /* of rq_pub_job_t (node), oldest first */
    size_t pending;       /* messages accepted and not finished */
    int ready;
    char reason[256];
    int stopping;
    int stop_seen; /* stopping, as wait_for_work() last saw it */
    int blocked;   /* connection.blocked: the broker refuses publishes (resource alarm) */
    int64_t stop_deadline_ns;

    /* publisher thread only */
    amqp_connection_state_t conn;
    rq_pubbuf_t *pub; /* publishes of this connection, one send() per burst */
    char *reply_queue;
    rq_ring_t sendq;        /* of rq_pub_msg_t * */
    rq_ring_t inflight;     /* of rq_pub_msg_t *, NULL once resolved out of order */
    uint64_t inflight_base; /* delivery tag of inflight slot 0 (head) */
    uint64_t next_tag;
    rq_hmap_t *waiters;
    rq_list_t jobs; /* of rq_pub_job_t (node): taken in and not finished, oldest first */
    rq_backoff_t backoff;
    int64_t connected_ns;     /* when the current connection became ready */
    int64_t next_attempt_ns;  /* no reconnect before this */
    int topology_stale;       /* a publish was returned: declare the topology again */
    uint64_t declared_tag;    /* the first delivery tag published after the last declare */
    int64_t nacks_since_ns;   /* the first nack of this connection while it had no ack */
    int acked;                /* this connection had an ack */
    rq_hmap_t *buckets;       /* delay bucket name -> int64_t * (rq_mono_ns of its declare) */
    unsigned char *props_buf; /* TLS: scratch room of props_fit(), props_cap bytes */
    size_t props_cap;
    /* The latest ack or nack of this connection, or the publish that found nothing in flight,
     * or the end of a connection.blocked: where a confirm stall is counted from. */
    int64_t confirm_at_ns;

    rq_series_t *m_produced, *m_latency, *m_errors, *m_replies, *m_connected, *m_reconnects,
        *m_blocked, *m_stalls;
};

/* ---- ring ------------------------------------------------------------------------------ */

/* Typed views of the two rings (common/ring.h) of message pointers. */

/* The rings of a new publisher, empty: 1024 entries at first, no bound. */
static void rings_init(rq_publisher_t *p)
{
    rq_ring_init(&p->sendq, sizeof(rq_pub_msg_t *), 1024, 0);
    rq_ring_init(&p->inflight, sizeof(rq_pub_msg_t *), 1024, 0);
}

/* Makes room for `extra` more entries without pushing. Returns 0 or -1 (out of memory). */
static int ring_reserve(rq_ring_t *r, size_t extra)
{
    return rq_ring_reserve(r, extra);
}

/* Appends m. Returns 0, or -1 when out of memory (r unchanged). */
static int ring_push(rq_ring_t *r, rq_pub_msg_t *m)
{
    rq_pub_msg_t **slot = rq_ring_push(r);

    if (slot == NULL)
        return -1;
    *slot = m;
    return 0;
}

/* Entry i (0: the oldest), i < len. */
static rq_pub_msg_t **ring_at(rq_ring_t *r, size_t i)
{
    return rq_ring_at(r, i);
}

/* Removes and returns the oldest entry; len > 0. */
static rq_pub_msg_t *ring_pop(rq_ring_t *r)
{
    rq_pub_msg_t *m = *ring_at(r, 0);

    rq_ring_pop(r);
    return m;
}

/* ---- queues ---------------------------------------------------------------------------- */

/* The queue job's messages go to. */
static const char *job_queue(const rq_publisher_t *p, const rq_pub_job_t *job)
{
    return job->queue != NULL ? job->queue : p->cfg->rabbitmq.request_queue;
}

/* 1 when the job goes to a named queue other than the default one: never redeclared. */
static int job_named(const rq_publisher_t *p, const rq_pub_job_t *job)
{
    return job->queue != NULL && strcmp(job->queue, p->cfg->rabbitmq.request_queue) != 0;
}

/* The delay bucket of delayed message m into buf ("<q>.delay.<bucket>"); returns its ms. */
static long long bucket_of(const rq_publisher_t *p, const rq_pub_msg_t *m, char *buf, size_t len)
{
    long long b = rq_qname_delay_bucket(m->delay_ms);

    rq_qname_delay(job_queue(p, m->job), b, buf, len);
    return b;
}

static void free_value(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

/* Forgets every bucket declare (a new connection, a queue found missing, a full cache). */
static void buckets_clear(rq_publisher_t *p)
{
    if (p->buckets == NULL || rq_hmap_len(p->buckets) == 0)
        return;
    rq_hmap_each(p->buckets, free_value, NULL);
    rq_hmap_free(p->buckets);
    p->buckets = rq_hmap_new(64); /* NULL: none until bucket_declared() makes one */
}

/* ---- job bookkeeping ------------------------------------------------------------------- */

static void set_ready(rq_publisher_t *p, int ready, const char *reason)
{
    pthread_mutex_lock(&p->lock);
    p->ready = ready;
    snprintf(p->reason, sizeof(p->reason), "%s", reason);
    pthread_mutex_unlock(&p->lock);
    rq_series_set(p->m_connected, ready);
}

/* Completes a job: drops every reference the publisher holds to it, then calls done. */
static void job_finish(rq_publisher_t *p, rq_pub_job_t *job, rq_job_status_t st, const char *err)
{
    if (job->finished)
        return;
    job->finished = 1;
    for (size_t i = 0; i < job->n; i++) {
        rq_pub_msg_t *m = &job->msgs[i];
        if (m->state == MSG_INFLIGHT && m->tag >= p->inflight_base &&
            m->tag - p->inflight_base < p->inflight.len)
            *ring_at(&p->inflight, m->tag - p->inflight_base) = NULL;
        if (job->want_reply && m->correlation_id[0] != '\0')
            rq_hmap_del(p->waiters, m->correlation_id);
        if (m->state == MSG_CONFIRMED)
            m->outcome = RQ_MSG_STORED;
        else if (m->maybe_stored || (m->sent && !m->returned && m->state != MSG_REFUSED))
            m->outcome = RQ_MSG_UNKNOWN; /* sent; the broker's answer never came */
        else
            m->outcome = RQ_MSG_NOT_STORED;
        m->state = MSG_DONE;
    }
    /* sendq entries are dropped lazily: publish_sendq skips messages of finished jobs, but
     * they must not point at freed memory, so purge them now. */
    if (p->sendq.len > 0) {
        size_t w = 0;
        for (size_t i = 0; i < p->sendq.len; i++) {
            rq_pub_msg_t *m = *ring_at(&p->sendq, i);
            if (m->job != job)
                *ring_at(&p->sendq, w++) = m;
        }
        while (rq_ring_len(&p->sendq) > w)
            rq_ring_pop_back(&p->sendq);
    }
    rq_list_unlink(&p->jobs, &job->node);

    if (st != RQ_JOB_CONFIRMED && st != RQ_JOB_REPLIED)
        rq_series_inc(p->m_errors);
    pthread_mutex_lock(&p->lock);
    p->pending -= job->n;
    pthread_mutex_unlock(&p->lock);
    job->status = st;
    job->error = err;
    job->done(job, job->done_arg);
}

/* A message was confirmed (ack) or refused (nack) by the broker. */
static void msg_resolved(rq_publisher_t *p, rq_pub_msg_t *m, int acked)
{
    rq_pub_job_t *job = m->job;

    if (m->state != MSG_INFLIGHT)
        return;
    if (acked && m->returned && m->delay_ms == 0 && job_named(p, job)) {
        /* A queue of the queue service is gone (or never was): never declared here. */
        job_finish(p, job, RQ_JOB_NO_QUEUE, NO_QUEUE_TEXT);
        return;
    }
    if (acked && m->returned) {
        /* The broker confirmed a message it could not route (basic.return came first): not
         * stored. Publish it again once the topology is declared again; its deadline (or the
         * replay of a retry_forever job) bounds the attempts. */
        m->state = MSG_QUEUED;
        if (job->want_reply)
            rq_hmap_del(p->waiters, m->correlation_id);
        if (ring_push(&p->sendq, m) != 0)
            job_finish(p, job, RQ_JOB_UNAVAILABLE, "out of memory");
        return;
    }
    m->state = acked ? MSG_CONFIRMED : MSG_REFUSED;
    if (acked) {
        rq_series_observe(p->m_latency, (double)(rq_mono_ns() - m->sent_ns) / 1e9);
        rq_series_inc(p->m_produced);
    } else {
        job->nacked = 1;
    }
    if (--job->unconfirmed > 0)
        return;
    if (job->nacked)
        job_finish(p, job, RQ_JOB_UNAVAILABLE, "the broker refused the message (nack)");
    else if (job->reply_lost)
        job_finish(p, job, RQ_JOB_REPLY_LOST, REPLY_LOST_TEXT);
    else if (!job->want_reply || job->unreplied == 0)
        job_finish(p, job, job->want_reply ? RQ_JOB_REPLIED : RQ_JOB_CONFIRMED, NULL);
}

/* Returns 1 when a nack covers a message that must never be dropped. */
static int nack_needs_replay(rq_publisher_t *p, uint64_t tag, int multiple)
{
    for (size_t i = 0; i < p->inflight.len && p->inflight_base + i <= tag; i++) {
        rq_pub_msg_t *m = *ring_at(&p->inflight, i);
        if (m != NULL && (multiple || p->inflight_base + i == tag) && m->job->retry_forever)
            return 1;
    }
    return 0;
}

static void handle_confirm(rq_publisher_t *p, uint64_t tag, int multiple, int acked)
{
    if (tag < p->inflight_base)
        return;
    if (multiple) {
        while (p->inflight.len > 0 && p->inflight_base <= tag) {
            rq_pub_msg_t *m = ring_pop(&p->inflight);
            p->inflight_base++;
            if (m != NULL)
                msg_resolved(p, m, acked);
        }
        return;
    }
    if (tag - p->inflight_base < p->inflight.len) {
        rq_pub_msg_t **slot = ring_at(&p->inflight, tag - p->inflight_base);
        rq_pub_msg_t *m = *slot;
        *slot = NULL;
        if (m != NULL)
            msg_resolved(p, m, acked);
    }
    while (p->inflight.len > 0 && *ring_at(&p->inflight, 0) == NULL) {
        ring_pop(&p->inflight);
        p->inflight_base++;
    }
}

static void handle_reply(rq_publisher_t *p, amqp_message_t *msg)
{
    amqp_basic_properties_t *props = &msg->properties;
    char cid[RQ_UUID_LEN + 1] = "";
    char *mid = NULL;
    rq_pub_msg_t *m;

    rq_series_inc(p->m_replies);
    if ((props->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) &&
        props->correlation_id.len <= RQ_UUID_LEN) {
        memcpy(cid, props->correlation_id.bytes, props->correlation_id.len);
        cid[props->correlation_id.len] = '\0';
    }
    if (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        mid = rq_amqp_strdup(props->message_id);
    if (p->hook != NULL)
        p->hook(mid ? mid : "", msg->body.bytes, msg->body.len, p->hook_arg);
    free(mid);

    m = cid[0] ? rq_hmap_del(p->waiters, cid) : NULL;
    if (m == NULL || m->job->finished || m->reply != NULL)
        return;
    m->reply = rq_amqp_strdup(msg->body);
    m->reply_len = msg->body.len;
    if (--m->job->unreplied == 0 && m->job->unconfirmed == 0)
        job_finish(p, m->job, RQ_JOB_REPLIED, NULL);
}

/* ---- connection ------------------------------------------------------------------------ */

/* A want_reply job whose messages were (partly) published lost its callback queue: the
 * replies of what was sent can no longer arrive. Its messages are still published (again) and
 * confirmed; the job then completes as RQ_JOB_REPLY_LOST, never as "not stored". */
static void lose_replies(rq_publisher_t *p, rq_pub_job_t *job)
{
    for (size_t i = 0; i < job->n; i++)
        if (job->msgs[i].correlation_id[0] != '\0')
            rq_hmap_del(p->waiters, job->msgs[i].correlation_id);
    job->reply_lost = 1;
    job->unreplied = 0;
}

/* Rebuilds the send queue from the live structures after a connection died: every message
 * still in flight (in delivery-tag order), then the send queue as it is, each exactly once.
 * Jobs finished by the caller before this are no longer referenced by either ring. */
static void requeue_unconfirmed(rq_publisher_t *p)
{
    rq_ring_t nq;

    rq_ring_init(&nq, sizeof(rq_pub_msg_t *), 1024, 0);
    if (ring_reserve(&nq, p->inflight.len + p->sendq.len) != 0) {
        /* No room to rebuild: fail every job with a message in flight (job_finish drops
         * them from both rings); the send queue keeps its order. */
        while (p->inflight.len > 0) {
            rq_pub_msg_t *m = ring_pop(&p->inflight);
            p->inflight_base++;
            if (m != NULL && m->state == MSG_INFLIGHT)
                job_finish(p, m->job, RQ_JOB_UNAVAILABLE, "out of memory");
        }
        return;
    }
    while (p->inflight.len > 0) {
        rq_pub_msg_t *m = ring_pop(&p->inflight);
        if (m != NULL && m->state == MSG_INFLIGHT) {
            m->state = MSG_QUEUED;
            m->maybe_stored |= !m->returned; /* the broker may hold this copy */
            ring_push(&nq, m);               /* cannot fail: reserved */
        }
    }
    while (p->sendq.len > 0)
        ring_push(&nq, ring_pop(&p->sendq)); /* cannot fail: reserved */
    rq_ring_clear(&p->sendq);
    p->sendq = nq;
}

/* Requeues the work that depended on the connection, then closes it. */
static void connection_lost(rq_publisher_t *p, const char *why)
{
    int64_t now = rq_mono_ns();

    rq_warn("broker connection lost: %s", why);
    set_ready(p, 0, why);
    rq_pubbuf_free(p->pub);
    p->pub = NULL;
    rq_amqp_close(p->conn);
    p->conn = NULL;
    free(p->reply_queue);
    p->reply_queue = NULL;
    pthread_mutex_lock(&p->lock);
    p->blocked = 0; /* a new connection gets its own notice */
    pthread_mutex_unlock(&p->lock);
    rq_series_set(p->m_blocked, 0);
    p->topology_stale = 0; /* the next connection declares it anyway */
    buckets_clear(p);      /* a new connection declares every bucket again */

    /* A connection that dies soon after it was made keeps its backoff (retry storms). */
    if (p->connected_ns != 0 && now - p->connected_ns >= STABLE_CONNECTION_NS) {
        rq_backoff_reset(&p->backoff);
        p->next_attempt_ns = now;
    } else {
        p->next_attempt_ns = now + (int64_t)rq_backoff_next(&p->backoff) * 1000000;
    }
    p->connected_ns = 0;

    /* Jobs waiting for replies lost their callback queue once anything was published. */
    for (rq_list_node_t *n = p->jobs.head, *next; n != NULL; n = next) {
        rq_pub_job_t *job = RQ_LIST_ENTRY(n, rq_pub_job_t, node);

        next = n->next;
        if (!job->want_reply || job->reply_lost)
            continue;
        for (size_t i = 0; i < job->n; i++) {
            if (job->msgs[i].sent) {
                lose_replies(p, job);
                if (job->unconfirmed == 0) /* every message stored */
                    job_finish(p, job, RQ_JOB_REPLY_LOST, REPLY_LOST_TEXT);
                break;
            }
        }
    }
    /* Unconfirmed messages go back to the front of the send queue, in order. */
    requeue_unconfirmed(p);
    p->inflight_base = 1;
    p->next_tag = 1;
}

/* The earliest publish deadline of the jobs still to be confirmed (or of a shutdown under
 * way), or 0 when none has one. */
static int64_t earliest_deadline(rq_publisher_t *p)
{
    int64_t due = 0;

    for (rq_list_node_t *n = p->jobs.head; n != NULL; n = n->next) {
        const rq_pub_job_t *job = RQ_LIST_ENTRY(n, rq_pub_job_t, node);

        if (job->unconfirmed > 0 && !job->retry_forever &&
            (due == 0 || job->publish_deadline_ns < due))
            due = job->publish_deadline_ns;
    }
    pthread_mutex_lock(&p->lock); /* a shutdown's grace bounds an attempt too */
    if (p->stopping && (due == 0 || p->stop_deadline_ns < due))
        due = p->stop_deadline_ns;
    pthread_mutex_unlock(&p->lock);
    return due;
}

/* On the new connection: the topology, the topics' ingress, confirm mode and the declares'
 * channel. 0, or -1 with err. */
static int connect_channels(rq_publisher_t *p, const RabbitMQConfig *rc, char *err, size_t errlen)
{
    if (rq_amqp_declare_topology(p->conn, rc, err, errlen) != 0)
        return -1;
    /* The topics' ingress (hub.h), so that a topic publish never hits a missing exchange
     * (which would close the channel). */
    amqp_exchange_declare(p->conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(RQ_RT_INGRESS),
                          amqp_cstring_bytes("headers"), /*passive=*/0, /*durable=*/1,
                          /*auto_delete=*/0, /*internal=*/0, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(p->conn), "exchange.declare " RQ_RT_INGRESS, err,
                            errlen))
        return -1;
    amqp_confirm_select(p->conn, RQ_AMQP_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(p->conn), "confirm.select", err, errlen))
        return -1;
    amqp_channel_open(p->conn, DECL_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(p->conn), "channel.open (declares)", err, errlen))
        return -1;
    return 0;
}

/* Declares and consumes the callback queue (p->reply_queue). 0, or -1 with err. */
static int connect_callback_queue(rq_publisher_t *p, char *err, size_t errlen)
{
    amqp_queue_declare_ok_t *q;

    q = amqp_queue_declare(p->conn, RQ_AMQP_CHANNEL, amqp_empty_bytes, /*passive=*/0,
                           /*durable=*/0, /*exclusive=*/1, /*auto_delete=*/1, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(p->conn), "callback queue.declare", err, errlen))
        return -1;
    p->reply_queue = rq_amqp_strdup(q->queue);
    if (p->reply_queue == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    amqp_basic_consume(p->conn, RQ_AMQP_CHANNEL, q->queue, amqp_empty_bytes, /*no_local=*/0,
                       /*no_ack=*/1, /*exclusive=*/1, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(p->conn), "basic.consume", err, errlen))
        return -1;
    return 0;
}

/* The connection is up: the RPC timeout back to the configured one (the attempt's may have
 * been cut to the earliest deadline: later RPCs, a declare after a returned publish, get the
 * configured one) and the per-connection state reset. */
static void connected_reset(rq_publisher_t *p)
{
    int ms = p->cfg->rabbitmq.connect_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    amqp_set_rpc_timeout(p->conn, &tv);
    p->inflight_base = 1;
    p->next_tag = 1;
    p->declared_tag = 1;
    p->connected_ns = rq_mono_ns(); /* the backoff resets once this connection proves stable */
    p->nacks_since_ns = 0;
    p->acked = 0;
    p->confirm_at_ns = 0;
}

/* Opens the connection, confirm mode, topology and callback queue. Returns 0 or -1. */
static int connect_broker(rq_publisher_t *p)
{
    RabbitMQConfig bounded = p->cfg->rabbitmq;
    const RabbitMQConfig *rc = &bounded;
    int64_t due = earliest_deadline(p);
    char err[512], node[RQ_AMQP_NODE_HOST_MAX + 16];

    /* The attempt blocks this thread, so no deadline is swept meanwhile: against a broker
     * that accepts TCP but does not answer (frozen, overloaded), the jobs waiting to be
     * republished would be answered up to RABBITMQ_CONNECT_TIMEOUT_MS after their deadline.
     * Bound the handshake and every RPC of the attempt by the earliest deadline instead. */
    if (due > 0) {
        int64_t left_ms = (due - rq_mono_ns()) / 1000000;

        if (left_ms < bounded.connect_timeout_ms)
            bounded.connect_timeout_ms = left_ms < 100 ? 100 : (int)left_ms;
    }
    p->conn = rq_amqp_open(rc, err, sizeof(err));
    if (p->conn == NULL)
        goto fail;
    if (connect_channels(p, rc, err, sizeof(err)) != 0)
        goto fail;
    /* A broker that reads nothing for longer than a confirm may take is treated as lost. */
    p->pub = rq_pubbuf_new(p->conn, !rc->tls, p->cfg->publish_timeout_ms);
    if (p->pub == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    if (connect_callback_queue(p, err, sizeof(err)) != 0)
        goto fail;
    amqp_maybe_release_buffers(p->conn);
    connected_reset(p);
    rq_series_inc(p->m_reconnects);
    rq_info("connected to %s, queue %s, callback queue %s", rq_amqp_node_in_use(node, sizeof(node)),
            rc->request_queue, p->reply_queue);
    set_ready(p, 1, "");
    return 0;

fail:
    rq_warn("broker connection failed: %s", err);
    set_ready(p, 0, err);
    rq_pubbuf_free(p->pub);
    p->pub = NULL;
    rq_amqp_close(p->conn);
    p->conn = NULL;
    free(p->reply_queue);
    p->reply_queue = NULL;
    return -1;
}

/* ---- the loop -------------------------------------------------------------------------- */

/* 1 when every short string of every message of the job fits the wire (255 bytes), so that
 * a job is refused whole before anything of it is sent, never half-sent. */
static int job_fits_wire(const rq_pub_job_t *job)
{
    for (size_t i = 0; i < job->n; i++) {
        const rq_pub_msg_t *m = &job->msgs[i];
        if (strlen(m->message_id) > RQ_WIRE_SHORTSTR_MAX ||
            strlen(m->content_type) > RQ_WIRE_SHORTSTR_MAX ||
            m->nheaders > RQ_WIRE_USER_HEADERS_MAX ||
            (job->topic != NULL &&
             (strlen(job->topic) > RQ_WIRE_SHORTSTR_MAX ||
              (m->routing_key != NULL && strlen(m->routing_key) > RQ_WIRE_SHORTSTR_MAX))))
            return 0;
    }
    return 1;
}

/* Appends an accepted job to the list of unfinished jobs (oldest first). */
static void jobs_append(rq_publisher_t *p, rq_pub_job_t *job)
{
    rq_list_push_back(&p->jobs, &job->node);
}

static void take_intake(rq_publisher_t *p)
{
    rq_list_t taken;
    rq_list_node_t *n, *next;
    int r;

    if ((r = rq_wakeup_drain(p->wake)) < 0)
        rq_warn("eventfd read: %s", RQ_STRERR(-r));
    rq_wakeup_hold(p->wake); /* awake: wait_for_work() looks at the intake before it sleeps */
    pthread_mutex_lock(&p->lock);
    taken = p->intake;
    p->intake.head = p->intake.tail = NULL;
    pthread_mutex_unlock(&p->lock);
    for (n = taken.head; n != NULL; n = next) {
        rq_pub_job_t *job = RQ_LIST_ENTRY(n, rq_pub_job_t, node);

        next = n->next;
        n->prev = n->next = NULL; /* the node moves from the intake to the job list */
        jobs_append(p, job);
        if (!job_fits_wire(job)) {
            job_finish(p, job, RQ_JOB_INVALID,
                       "a message_id or content_type longer than 255 bytes (an AMQP short "
                       "string), or too many headers, cannot be sent");
            continue;
        }
        for (size_t i = 0; i < job->n; i++) {
            if (ring_push(&p->sendq, &job->msgs[i]) != 0) {
                job_finish(p, job, RQ_JOB_UNAVAILABLE, "out of memory");
                break;
            }
        }
    }
}

/* Reports a failed publish or flush as a lost connection. Returns -1. */
static int publish_failed(rq_publisher_t *p, int status)
{
    char why[160];

    snprintf(why, sizeof(why), "basic.publish: %s", amqp_error_string2(status));
    connection_lost(p, why);
    return -1;
}

/* After a returned publish (the request queue is gone) declares the topology again, before
 * anything is published again. Returns 0, or -1 when that failed and the connection was
 * dropped (the next connection declares it). */
static int redeclare_topology(rq_publisher_t *p)
{
    char err[512];

    if (rq_amqp_declare_topology(p->conn, &p->cfg->rabbitmq, err, sizeof(err)) != 0) {
        connection_lost(p, err);
        return -1;
    }
    p->topology_stale = 0;
    p->declared_tag = p->next_tag; /* returns of earlier publishes are old news */
    rq_info("the topology is declared again after a returned message");
    set_ready(p, 1, "");
    return 0;
}

/* 1 when rq_pubbuf_add()'s status concerns only the message it was given (its encoding):
 * nothing of it was buffered or sent, so the connection is still good. Over TLS rabbitmq-c
 * may have sent part of the message already, so every error there drops the connection. */
static int encoding_error(const rq_publisher_t *p, int status)
{
    return !p->cfg->rabbitmq.tls &&
           (status == AMQP_STATUS_BAD_AMQP_DATA || status == AMQP_STATUS_TABLE_TOO_BIG ||
            status == AMQP_STATUS_INVALID_PARAMETER);
}

/* The properties and headers of message m (wire.h), built in *props and hdr. */
static void message_props(const rq_publisher_t *p, rq_pub_msg_t *m, amqp_basic_properties_t *props,
                          amqp_table_entry_t *hdr, char expiration[24])
{
    rq_wire_out_t w;

    if (m->correlation_id[0] == '\0')
        rq_uuid(m->correlation_id);
    memset(&w, 0, sizeof(w));
    w.content_type = m->content_type;
    /* The client's id (tailed lines: the deterministic <file id>:<offset>). */
    w.message_id = m->message_id;
    w.correlation_id = m->correlation_id;
    w.app_id = "relayq-producer";
    w.published_ms = m->published_ms;
    w.source = m->source ? m->source : RQ_WIRE_SOURCE_API;
    w.traceparent = m->traceparent;
    w.tracestate = m->tracestate;
    if (m->file_id == NULL) {
        /* API messages always carry the callback queue (tailed lines expect no reply), and
         * the id consumers deduplicate on: made here, one per message, kept when the message
         * is published again; the client's id need not be unique. */
        w.reply_to = p->reply_queue;
        w.uid = m->correlation_id;
        w.idem_key = m->idem_key;
    } else {
        w.file_id = m->file_id;
        w.has_offset = w.has_end = 1;
        w.offset = m->offset;
        w.end = m->end_offset;
        w.chunk = m->chunk; /* the body holds whole lines with their '\n' */
        w.lines = m->lines;
    }
    w.has_priority = m->has_priority;
    w.priority = m->priority;
    if (m->ttl_ms > 0) {
        snprintf(expiration, 24, "%lld", (long long)m->ttl_ms);
        w.expiration = expiration;
    }
    w.user_headers = m->headers;
    w.n_user_headers = m->nheaders;
    rq_wire_encode(&w, props, hdr);
}

/* After an RPC refused on DECL_CHANNEL: when the broker closed that channel, answers it,
 * opens it again and returns 1 with the reply code in *code; 0 when the connection itself
 * failed (the caller drops it). */
static int decl_channel_error(rq_publisher_t *p, amqp_rpc_reply_t r, int *code)
{
    amqp_channel_close_ok_t ok;

    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return 0;
    *code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    if (amqp_send_method(p->conn, DECL_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0)
        return 0;
    amqp_channel_open(p->conn, DECL_CHANNEL);
    return amqp_get_rpc_reply(p->conn).reply_type == AMQP_RESPONSE_NORMAL;
}

/* Remembers that bucket `name` was declared at `now` (best effort: no cache, no memory). */
static void bucket_declared(rq_publisher_t *p, const char *name, int64_t now)
{
    int64_t *at;

    if (p->buckets != NULL && rq_hmap_len(p->buckets) >= BUCKETS_MAX)
        buckets_clear(p);
    if (p->buckets == NULL)
        p->buckets = rq_hmap_new(64);
    if (p->buckets == NULL)
        return;
    at = rq_hmap_get(p->buckets, name);
    if (at == NULL) {
        at = malloc(sizeof(*at));
        if (at == NULL)
            return;
        if (rq_hmap_put(p->buckets, name, at) != 0) {
            free(at);
            return;
        }
    }
    *at = now;
}

/* The passive declare of named queue q on DECL_CHANNEL for m's job. Returns 0 when q
 * exists, 1 when m's job failed (finished here: RQ_JOB_NO_QUEUE, or another refusal), -1 when
 * the connection was lost. */
static int check_queue(rq_publisher_t *p, rq_pub_job_t *job, const char *q)
{
    amqp_rpc_reply_t r;
    int code = 0;

    amqp_queue_declare(p->conn, DECL_CHANNEL, amqp_cstring_bytes(q), /*passive=*/1, 0, 0, 0,
                       amqp_empty_table);
    r = amqp_get_rpc_reply(p->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    if (!decl_channel_error(p, r, &code)) {
        connection_lost(p, "the passive declare of a delayed message's queue failed");
        return -1;
    }
    buckets_clear(p);
    job_finish(p, job, code == 404 ? RQ_JOB_NO_QUEUE : RQ_JOB_UNAVAILABLE,
               code == 404 ? NO_QUEUE_TEXT : "the queue could not be checked");
    return 1;
}

/* Before delayed message m (the head of the send queue) is published to bucket `name`
 * (bucket_ms) of queue q: unless declared less than BUCKET_REDECLARE_NS ago, declares the
 * bucket on DECL_CHANNEL, with a named q checked (passive declare) before and after: before,
 * so that a queue that does not exist gets no buckets; after, because a DELETE of q that
 * came between the first check and the declare lists q's buckets before this one existed,
 * and the bucket would take the message and dead-letter it into nowhere. Returns 0 to
 * publish, 1 when m's job failed (finished here: RQ_JOB_NO_QUEUE, or a refused declare), -1
 * when the connection was lost. */
static int ensure_bucket(rq_publisher_t *p, rq_pub_msg_t *m, const char *q, long long bucket_ms,
                         const char *name)
{
    rq_pub_job_t *job = m->job;
    int64_t now = rq_mono_ns(), *at = p->buckets ? rq_hmap_get(p->buckets, name) : NULL;
    const char *type = job->queue_type ? job->queue_type : p->cfg->rabbitmq.queue_type;
    char err[512];
    int code = 0, rc;

    if (at != NULL && now - *at < BUCKET_REDECLARE_NS)
        return 0;
    if ((rc = rq_pubbuf_flush(p->pub)) != AMQP_STATUS_OK) /* frames in order before the RPC */
        return publish_failed(p, rc);
    if (job_named(p, job) && (rc = check_queue(p, job, q)) != 0)
        return rc;
    for (int i = 0;; i++) {
        amqp_rpc_reply_t r;
        if (rq_amqp_declare_delay_queue(p->conn, DECL_CHANNEL, q, type, bucket_ms, err,
                                        sizeof(err)) == 0)
            break;
        r = amqp_get_rpc_reply(p->conn);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            /* refused before anything was sent (the last RPC went well): this message's
             * problem, never the connection's (a reconnect would replay it, and again) */
            rq_warn("delay queue %s: %s", name, err);
            job_finish(p, job, RQ_JOB_UNAVAILABLE,
                       "the delay queue could not be declared (the producer's log says why)");
            return 1;
        }
        if (!decl_channel_error(p, r, &code)) {
            connection_lost(p, err);
            return -1;
        }
        rq_warn("delay queue %s as %s: %s", name, type, err);
        if (i == 0 && code == 406) {
            /* The bucket exists with the other type (replicas with another QUEUE_TYPE, a
             * migration under way): use it as it is, as the leaser does. */
            type = strcmp(type, "quorum") == 0 ? "classic" : "quorum";
            continue;
        }
        job_finish(p, job, RQ_JOB_UNAVAILABLE,
                   "the delay queue could not be declared (the producer's log says why)");
        return 1;
    }
    if (job_named(p, job) && (rc = check_queue(p, job, q)) != 0)
        return rc;
    bucket_declared(p, name, now);
    return 0;
}

/* Marks the message at the head of the send queue as published with the next tag and moves
 * it to the in-flight ring (reserved before). */
static void mark_inflight(rq_publisher_t *p)
{
    rq_pub_msg_t *m = ring_pop(&p->sendq);

    ring_push(&p->inflight, m); /* cannot fail: reserved by the caller */
    m->tag = p->next_tag++;
    m->state = MSG_INFLIGHT;
    m->sent = 1;
    m->returned = 0;
    m->sent_ns = rq_mono_ns();
    if (p->inflight.len == 1) /* nothing was owed: a stall is counted from here */
        p->confirm_at_ns = m->sent_ns;
}

/* Over TLS rabbitmq-c sends basic.publish before it encodes the content header, so a header
 * that cannot fit one frame (the client's headers are within the API's limits, the broker's
 * frame_max may be as low as 4096) would break the connection after the method went out, and
 * the replay would break the next one: checked here first, by encoding the properties into a
 * frame's room (frame_max minus the frame's 8 bytes and the header's 12). Returns 1 when they
 * fit (or the scratch room cannot be had: the encoding decides), 0 when not. */
static int props_fit(rq_publisher_t *p, const amqp_basic_properties_t *props)
{
    int frame_max = amqp_get_frame_max(p->conn);
    size_t room;
    amqp_bytes_t enc;

    if (frame_max <= 20)
        return 1;
    room = (size_t)frame_max - 20;
    if (p->props_cap < room) {
        unsigned char *b = realloc(p->props_buf, room);
        if (b == NULL)
            return 1;
        p->props_buf = b;
        p->props_cap = room;
    }
    enc.bytes = p->props_buf;
    enc.len = room;
    /* amqp_encode_properties() takes a non-const pointer but does not write through it. */
    return amqp_encode_properties(AMQP_BASIC_CLASS, (void *)(uintptr_t)props, enc) >= 0;
}

/* Buffers the publish of the message at the head of the send queue. Returns 0 when it was
 * buffered (and is in flight), 1 when it failed its own job only (out of memory, or a message
 * the wire cannot carry: popped from the send queue), or -1 when the connection failed. */
static int publish_head(rq_publisher_t *p)
{
    rq_pub_msg_t *m = *ring_at(&p->sendq, 0);
    rq_pub_job_t *job = m->job;
    int waits = job->want_reply && !job->reply_lost;
    amqp_basic_properties_t props;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX + RQ_WIRE_USER_HEADERS_MAX + 1];
    amqp_bytes_t body, rk, exchange = amqp_empty_bytes;
    char bucket[RQ_WIRE_SHORTSTR_MAX + 1], expiration[24];
    int rc, mandatory = 1;

    if (job->topic != NULL) {
        /* A topic message (hub.h): the ingress routes it by its relayq-topic header to the
         * topic's exchange, which routes it by the routing key. Not mandatory: a topic
         * without subscribers (or deleted) drops it, and the confirm still comes. */
        exchange = amqp_cstring_bytes(RQ_RT_INGRESS);
        rk = amqp_cstring_bytes(m->routing_key != NULL ? m->routing_key : "");
        mandatory = 0;
    } else if (m->delay_ms > 0) {
        long long b = bucket_of(p, m, bucket, sizeof(bucket));
        if ((rc = ensure_bucket(p, m, job_queue(p, job), b, bucket)) != 0)
            return rc;
        rk = amqp_cstring_bytes(bucket);
    } else {
        rk = amqp_cstring_bytes(job_queue(p, job));
    }
    message_props(p, m, &props, hdr, expiration);
    if (job->topic != NULL) {
        /* hdr has one slot past the most rq_wire_encode() fills */
        hdr[props.headers.num_entries++] = rq_amqp_utf8_entry(RQ_RT_TOPIC_HEADER, job->topic);
    }
    if (p->cfg->rabbitmq.tls && !props_fit(p, &props)) {
        rq_warn("a message's properties and headers do not fit one frame (frame_max %d): "
                "failing its request only",
                amqp_get_frame_max(p->conn));
        ring_pop(&p->sendq);
        job_finish(p, job, RQ_JOB_INVALID,
                   "the message's headers and properties do not fit the broker's frame_max "
                   "(one AMQP frame): send fewer or shorter headers");
        return 1;
    }
    body.bytes = m->body;
    body.len = m->body_len;
    /* Reserve the bookkeeping first: once the frames are buffered they will be sent. */
    if (ring_reserve(&p->inflight, 1) != 0 ||
        (waits && rq_hmap_put(p->waiters, m->correlation_id, m) != 0)) {
        ring_pop(&p->sendq);
        job_finish(p, job, RQ_JOB_UNAVAILABLE, "out of memory");
        return 1;
    }
    rc = rq_pubbuf_add(p->pub, RQ_AMQP_CHANNEL, exchange, rk, mandatory, &props, body);
    if (rc != AMQP_STATUS_OK && encoding_error(p, rc)) {
        char why[160];
        snprintf(why, sizeof(why), "basic.publish: %s", amqp_error_string2(rc));
        rq_warn("a message of %zu bytes cannot be encoded (%s): failing its request only",
                m->body_len, why);
        ring_pop(&p->sendq);
        job_finish(p, job, RQ_JOB_INVALID, "the message cannot be encoded for AMQP");
        return 1;
    }
    if (rc != AMQP_STATUS_OK)
        return publish_failed(p, rc);
    mark_inflight(p);
    return 0;
}

/* Publishes everything in the send queue: the frames go out in one burst (rq_pubbuf_t),
 * written before the loop waits for confirms. Every publish but a topic's is mandatory. Bookkeeping
 * (the in-flight slot, the reply waiter) is reserved before a message is encoded, so a message is
 * never sent untracked. A message the wire cannot carry fails its own job only. Returns 0, or
 * -1 when the connection failed. */
static int publish_sendq(rq_publisher_t *p)
{
    int rc;

    while (p->sendq.len > 0) {
        if (publish_head(p) < 0)
            return -1;
    }
    rc = rq_pubbuf_flush(p->pub);
    return rc == AMQP_STATUS_OK ? 0 : publish_failed(p, rc);
}

/* basic.return: the broker could not route a mandatory publish (RabbitMQ sends it before the
 * message's basic.ack). Marks the in-flight message with that correlation id as returned, so
 * its ack does not count as stored; a job that must keep its order (retry_forever) is replayed
 * on a new connection instead. Returns 0, or -1 when the connection was dropped. */
static int handle_return(rq_publisher_t *p, amqp_channel_t channel, amqp_basic_return_t *ret)
{
    amqp_message_t msg;
    amqp_rpc_reply_t r = amqp_read_message(p->conn, channel, &msg, 0);
    char why[300];
    rq_pub_msg_t *found = NULL;

    if (rq_amqp_check_reply(r, "reading a returned message", why, sizeof(why)) != 0) {
        connection_lost(p, why);
        return -1;
    }
    if (msg.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        amqp_bytes_t cid = msg.properties.correlation_id;
        /* Returns are rare (a deleted queue): a scan of the in-flight ring is cheap enough. */
        for (size_t i = 0; i < p->inflight.len && found == NULL; i++) {
            rq_pub_msg_t *m = *ring_at(&p->inflight, i);
            if (m != NULL && m->state == MSG_INFLIGHT && !m->returned &&
                strlen(m->correlation_id) == cid.len &&
                memcmp(m->correlation_id, cid.bytes, cid.len) == 0)
                found = m;
        }
    }
    amqp_destroy_message(&msg);
    if (found == NULL)
        return 0; /* its job is over; a message still awaited would be found */
    found->returned = 1;
    if (found->delay_ms > 0) {
        /* Its delay bucket expired or was deleted: declared again before the republish. */
        char bucket[RQ_WIRE_SHORTSTR_MAX + 1];
        bucket_of(p, found, bucket, sizeof(bucket));
        if (p->buckets != NULL)
            free(rq_hmap_del(p->buckets, bucket));
    } else if (job_named(p, found->job)) {
        /* A queue of the queue service is missing: its job fails on the ack (msg_resolved);
         * the buckets known to exist may have gone with it. */
        buckets_clear(p);
    } else if (!p->topology_stale && found->tag >= p->declared_tag) {
        /* A return of a message published before the last declare says nothing new. */
        rq_warn("the broker returned a message: %u %.*s (queue %s): declaring the topology "
                "again",
                ret->reply_code, (int)ret->reply_text.len, (char *)ret->reply_text.bytes,
                p->cfg->rabbitmq.request_queue);
        p->topology_stale = 1;
        set_ready(p, 0, "the broker returned a message: the request queue is missing");
    }
    if (found->job->retry_forever) {
        connection_lost(p, "the broker returned a message that must not be dropped");
        return -1;
    }
    return 0;
}

/* A basic.nack: the messages it covers were refused (503), unless one must never be dropped
 * (a tailed line: everything unconfirmed is replayed on a new connection). Returns 0, or -1
 * when the connection must be rebuilt: that replay, or a connection that has had nacks and
 * no ack for NACK_RUN_RECONNECT_MS since its first nack. */
static int handle_nack(rq_publisher_t *p, const amqp_basic_nack_t *n)
{
    int64_t now;

    p->confirm_at_ns = rq_mono_ns(); /* an answer: no confirm stall */
    rq_warn("broker nacked delivery tag %llu%s", (unsigned long long)n->delivery_tag,
            n->multiple ? " (multiple)" : "");
    if (nack_needs_replay(p, n->delivery_tag, n->multiple)) {
        /* Publishing the nacked line alone would put it behind later lines: replay
         * everything unconfirmed, in order, on a new connection. */
        connection_lost(p, "the broker nacked a message that must not be dropped");
        return -1;
    }
    handle_confirm(p, n->delivery_tag, n->multiple, 0);
    if (p->acked)
        return 0; /* a working connection: the queue refuses these (e.g. full) */
    now = rq_mono_ns();
    if (p->nacks_since_ns == 0)
        p->nacks_since_ns = now;
    if (now - p->nacks_since_ns >= (int64_t)NACK_RUN_RECONNECT_MS * 1000000) {
        /* RabbitMQ 3.10: a channel opened while a quorum queue elected a new leader (its node
         * was lost) keeps the old leader and has every publish nacked until that node
         * returns; a new channel finds the new leader. Only a connection that never had an
         * ack: a full queue (x-overflow reject-publish) nacks on a working one too, and a
         * new connection would only tear down the callback queue of waiting requests. */
        connection_lost(p, "every publish nacked for 2 s (a quorum queue leader lost?): a new "
                           "connection");
        return -1;
    }
    return 0;
}

/* Handles one frame. Returns 0, or -1 when the connection must be rebuilt. */
static int handle_frame(rq_publisher_t *p, amqp_frame_t *f)
{
    char why[300];

    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f->payload.method.decoded;
        p->acked = 1;
        p->confirm_at_ns = rq_mono_ns();
        handle_confirm(p, a->delivery_tag, a->multiple, 1);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD:
        return handle_nack(p, f->payload.method.decoded);
    case AMQP_BASIC_DELIVER_METHOD: {
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(p->conn, f->channel, &msg, 0);
        if (rq_amqp_check_reply(r, "reading a reply", why, sizeof(why)) != 0) {
            connection_lost(p, why);
            return -1;
        }
        handle_reply(p, &msg);
        amqp_destroy_message(&msg);
        return 0;
    }
    case AMQP_BASIC_RETURN_METHOD:
        return handle_return(p, f->channel, f->payload.method.decoded);
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = f->payload.method.decoded;
        amqp_channel_close_ok_t ok;
        snprintf(why, sizeof(why), "channel closed by broker: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (char *)c->reply_text.bytes);
        amqp_send_method(p->conn, f->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        connection_lost(p, why);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *c = f->payload.method.decoded;
        amqp_connection_close_ok_t ok;
        snprintf(why, sizeof(why), "connection closed by broker: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (char *)c->reply_text.bytes);
        amqp_send_method(p->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        connection_lost(p, why);
        return -1;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        connection_lost(p, "the broker cancelled the callback queue consumer");
        return -1;
    case AMQP_CONNECTION_BLOCKED_METHOD:
    case AMQP_CONNECTION_UNBLOCKED_METHOD: {
        int blocked = f->payload.method.id == AMQP_CONNECTION_BLOCKED_METHOD;
        pthread_mutex_lock(&p->lock);
        p->blocked = blocked;
        pthread_mutex_unlock(&p->lock);
        rq_series_set(p->m_blocked, blocked);
        p->confirm_at_ns = rq_mono_ns(); /* a blocked connection owes no confirm */
        if (blocked)
            rq_warn("the broker blocked publishing (memory or disk alarm): answering 503");
        else
            rq_info("the broker unblocked publishing");
        return 0;
    }
    default:
        return 0;
    }
}

/* Reads and handles frames until none is waiting (or `budget` frames). `wait_ms` > 0 lets the
 * first read wait that long, which also lets rabbitmq-c send and check heartbeats.
 * Returns the number of frames handled, or -1 when the connection was lost. */
static int drain_frames(rq_publisher_t *p, int wait_ms, int budget)
{
    int n = 0;

    while (n < budget) {
        amqp_frame_t f;
        struct timeval tv = {0, n == 0 ? wait_ms * 1000 : 0};
        int rc = amqp_simple_wait_frame_noblock(p->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            char why[160];
            snprintf(why, sizeof(why), "%s", amqp_error_string2(rc));
            connection_lost(p, why);
            return -1;
        }
        n++;
        if (handle_frame(p, &f) != 0)
            return -1;
    }
    /* Every frame read in this pass is handled: release (librabbitmq skips a channel with
     * frames still queued). Waiting for no data in the buffer would never release under
     * sustained traffic, and a pool keeps the pages it grew to. */
    amqp_maybe_release_buffers(p->conn);
    return n;
}

/* The confirm-stall rule (CONFIRM_STALL_MS): publishes are in flight, the broker does not
 * block this connection (connection.blocked: a resource alarm is cluster-wide, another node
 * would not help), and not one ack or nack came for CONFIRM_STALL_MS. A node cut off in a
 * minority partition behaves so: it keeps the connection and takes publishes but never
 * confirms them. A node that is merely slow (quorum fsyncs under load) still confirms
 * something within the window, so only a total stall counts. The connection is then treated
 * as lost: its node is marked failed (the next connection starts at another node) and every
 * unconfirmed message is published again on the new connection (connection_lost).
 * Returns 1 when the connection was dropped. */
static int confirm_stall(rq_publisher_t *p, int64_t now)
{
    int64_t ms = p->cfg->confirm_stall_ms, stalled;
    char node[RQ_AMQP_NODE_HOST_MAX + 16], why[400];

    if (ms <= 0 || p->conn == NULL || p->blocked || p->inflight.len == 0 || p->confirm_at_ns == 0)
        return 0;
    stalled = (now - p->confirm_at_ns) / 1000000;
    if (stalled < ms)
        return 0;
    rq_series_inc(p->m_stalls);
    rq_amqp_node_failed();
    snprintf(why, sizeof(why),
             "no confirm from broker node %s for %lld ms with %zu publishes in flight "
             "(CONFIRM_STALL_MS %lld; a minority partition?): trying another node",
             rq_amqp_node_in_use(node, sizeof(node)), (long long)stalled, p->inflight.len,
             (long long)ms);
    /* No polite close: a node that confirms nothing answers channel.close late or never
     * (RQ_AMQP_CLOSE_TIMEOUT_MS lost before the next node is tried). */
    rq_pubbuf_free(p->pub);
    p->pub = NULL;
    amqp_destroy_connection(p->conn);
    p->conn = NULL;
    connection_lost(p, why);
    return 1;
}

/* Fails the jobs whose deadline has passed. Publish and reply deadlines interleave in the
 * job list, so the walk visits every job; the caller runs it at most every few ms. */
static void sweep_deadlines(rq_publisher_t *p, int64_t now)
{
    for (rq_list_node_t *n = p->jobs.head, *next; n != NULL; n = next) {
        rq_pub_job_t *job = RQ_LIST_ENTRY(n, rq_pub_job_t, node);

        next = n->next;
        if (job->unconfirmed > 0 && !job->retry_forever && now >= job->publish_deadline_ns)
            job_finish(p, job, RQ_JOB_TIMEOUT,
                       p->conn ? "the broker did not confirm the message in time"
                               : "the broker is unavailable");
        else if (job->unconfirmed == 0 && job->want_reply && now >= job->reply_deadline_ns)
            job_finish(p, job, RQ_JOB_REPLY_TIMEOUT, "no reply before the reply timeout");
    }
}

/* Completes every job left at shutdown. A job whose messages are all stored and that waits
 * for replies is RQ_JOB_REPLY_LOST (stored: never reported as not stored); the rest are
 * RQ_JOB_UNAVAILABLE, each message with its outcome. */
static void fail_remaining(rq_publisher_t *p)
{
    while (p->jobs.head != NULL) {
        rq_pub_job_t *job = RQ_LIST_ENTRY(p->jobs.head, rq_pub_job_t, node);

        if (job->unconfirmed == 0 && job->want_reply)
            job_finish(p, job, RQ_JOB_REPLY_LOST,
                       "the message is stored, but the producer shut down before the reply "
                       "came");
        else
            job_finish(p, job, RQ_JOB_UNAVAILABLE, "the producer is shutting down");
    }
}

static int stopping_now(rq_publisher_t *p, int64_t now)
{
    int s;

    pthread_mutex_lock(&p->lock);
    s = p->stopping &&
        ((p->intake.head == NULL && p->jobs.head == NULL) || now >= p->stop_deadline_ns);
    pthread_mutex_unlock(&p->lock);
    return s;
}

/* Sleeps until a signal, the broker's socket or timeout_ms, unless jobs or a stop came in
 * since the last take_intake() (their signals wrote nothing while the loop held). */
static void wait_for_work(rq_publisher_t *p, int timeout_ms)
{
    struct pollfd pf[2];
    int n = 1, news;

    rq_wakeup_arm(p->wake);
    pthread_mutex_lock(&p->lock);
    news = p->intake.head != NULL || p->stopping != p->stop_seen;
    p->stop_seen = p->stopping;
    pthread_mutex_unlock(&p->lock);
    if (news)
        return;

    pf[0].fd = rq_wakeup_fd(p->wake);
    pf[0].events = POLLIN;
    if (p->conn != NULL) {
        pf[1].fd = amqp_get_sockfd(p->conn);
        pf[1].events = POLLIN;
        n = 2;
    }
    poll(pf, (nfds_t)n, timeout_ms);
}

static void *publisher_main(void *arg)
{
    rq_publisher_t *p = arg;
    int64_t last_hb = 0, last_sweep = 0;

    rq_thread_name("rq-publisher");
    for (;;) {
        int64_t now = rq_mono_ns();
        int busy = 0;

        if (stopping_now(p, now))
            break;
        if (p->conn == NULL) {
            /* Jobs that came in while a send was stuck bound the attempt below too. */
            take_intake(p);
            sweep_deadlines(p, now); /* before an attempt that may block */
            if (now >= p->next_attempt_ns) {
                if (connect_broker(p) != 0) {
                    int delay = rq_backoff_next(&p->backoff);
                    p->next_attempt_ns = rq_mono_ns() + (int64_t)delay * 1000000;
                    rq_info("reconnecting in %d ms", delay);
                }
            }
            take_intake(p);
            sweep_deadlines(p, rq_mono_ns());
            if (p->conn == NULL) {
                wait_for_work(p, 20);
                continue;
            }
        }
        take_intake(p);
        if (p->topology_stale && redeclare_topology(p) != 0)
            continue;
        /* Under connection.blocked the broker stops reading: hold the messages back (the API
         * answers 503 meanwhile) instead of filling the socket. */
        if (p->sendq.len > 0 && !p->blocked) {
            busy = 1;
            if (publish_sendq(p) != 0)
                continue;
        }
        /* Confirms and replies already waiting. */
        int got = drain_frames(p, 0, 4096);
        if (got < 0)
            continue;
        busy |= got > 0;
        now = rq_mono_ns();
        if (now - last_sweep > 5000000) {
            last_sweep = now;
            sweep_deadlines(p, now);
            if (confirm_stall(p, now))
                continue;
        }
        if (now - last_hb > 1000000000LL) {
            /* Let rabbitmq-c send a heartbeat when due and check the broker's. */
            last_hb = now;
            if (drain_frames(p, 1, 64) < 0)
                continue;
        }
        if (!busy && p->conn != NULL && !amqp_frames_enqueued(p->conn) &&
            !amqp_data_in_buffer(p->conn))
            wait_for_work(p, 50);
    }

    /* Shutdown: fail whatever is left, then close. */
    take_intake(p);
    fail_remaining(p);
    rq_pubbuf_free(p->pub);
    p->pub = NULL;
    rq_amqp_close(p->conn);
    p->conn = NULL;
    set_ready(p, 0, "shut down");
    return NULL;
}

/* ---- public API ------------------------------------------------------------------------ */

rq_publisher_t *rq_publisher_new(const rq_config_t *cfg, rq_metrics_t *metrics,
                                 rq_reply_hook_t hook, void *hook_arg)
{
    rq_publisher_t *p = calloc(1, sizeof(*p));
    rq_metric_t *f;

    if (p == NULL)
        return NULL;
    p->cfg = cfg;
    p->hook = hook;
    p->hook_arg = hook_arg;
    rings_init(p);
    rq_backoff_init(&p->backoff, RQ_RECONNECT_MIN_MS, RQ_RECONNECT_MAX_MS, /*jitter=*/1);
    pthread_mutex_init(&p->lock, NULL);
    snprintf(p->reason, sizeof(p->reason), "connecting to the broker");
    p->waiters = rq_hmap_new(1024);
    p->wake = rq_wakeup_new();
    p->buckets = rq_hmap_new(64);
    if (p->waiters == NULL || p->wake == NULL || p->buckets == NULL)
        goto err;

    f = rq_metrics_counter(metrics, "messages_produced_total",
                           "Messages confirmed by the broker (durably stored).", 0, NULL);
    p->m_produced = rq_metric_series(f, 0, NULL);
    f = rq_metrics_histogram(metrics, "producer_queue_publish_latency_seconds",
                             "Time from basic.publish to the broker's confirm.", 0, NULL,
                             rq_metrics_latency_buckets, rq_metrics_latency_buckets_len);
    p->m_latency = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(metrics, "producer_publish_errors_total",
                           "Jobs that failed: broker unavailable, nack, timeout.", 0, NULL);
    p->m_errors = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(metrics, "producer_replies_received_total",
                           "Replies received on the callback queue.", 0, NULL);
    p->m_replies = rq_metric_series(f, 0, NULL);
    f = rq_metrics_gauge(metrics, "producer_broker_connected",
                         "1 when connected to the broker with topology declared.", 0, NULL);
    p->m_connected = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(metrics, "producer_broker_connections_total",
                           "Successful broker connections (1 + reconnects).", 0, NULL);
    p->m_reconnects = rq_metric_series(f, 0, NULL);
    f = rq_metrics_gauge(metrics, "producer_broker_blocked",
                         "1 while the broker blocks publishers (connection.blocked).", 0, NULL);
    p->m_blocked = rq_metric_series(f, 0, NULL);
    f = rq_metrics_counter(metrics, "producer_confirm_stalls_total",
                           "Connections dropped because no confirm came for CONFIRM_STALL_MS "
                           "while publishes were in flight (a minority partition).",
                           0, NULL);
    p->m_stalls = rq_metric_series(f, 0, NULL);

    if (pthread_create(&p->thread, NULL, publisher_main, p) != 0)
        goto err;
    p->thread_started = 1;
    return p;

err:
    rq_publisher_free(p);
    return NULL;
}

void rq_publisher_stop(rq_publisher_t *p, int grace_ms)
{
    int r;

    if (p->thread_started) {
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        p->stop_deadline_ns = rq_mono_ns() + (int64_t)grace_ms * 1000000;
        pthread_mutex_unlock(&p->lock);
        if ((r = rq_wakeup_signal(p->wake)) < 0)
            rq_warn("eventfd write: %s", RQ_STRERR(-r));
        pthread_join(p->thread, NULL);
        p->thread_started = 0;
    }
}

void rq_publisher_free(rq_publisher_t *p)
{
    if (p == NULL)
        return;
    rq_publisher_stop(p, 0);
    rq_wakeup_free(p->wake);
    rq_hmap_free(p->waiters);
    rq_hmap_each(p->buckets, free_value, NULL);
    rq_hmap_free(p->buckets);
    rq_ring_clear(&p->sendq);
    rq_ring_clear(&p->inflight);
    free(p->reply_queue);
    free(p->props_buf);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

int rq_publisher_submit(rq_publisher_t *p, rq_pub_job_t *job)
{
    int was_empty, r;

    job->status = RQ_JOB_PENDING;
    job->error = NULL;
    job->unconfirmed = job->n;
    job->unreplied = job->want_reply ? job->n : 0;
    job->finished = job->nacked = job->reply_lost = 0;
    job->node.prev = job->node.next = NULL;
    for (size_t i = 0; i < job->n; i++) {
        job->msgs[i].job = job;
        job->msgs[i].state = MSG_QUEUED;
        job->msgs[i].sent = job->msgs[i].returned = job->msgs[i].maybe_stored = 0;
        job->msgs[i].outcome = RQ_MSG_NOT_STORED;
        job->msgs[i].correlation_id[0] = '\0';
        job->msgs[i].reply = NULL;
        job->msgs[i].reply_len = 0;
    }
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        job->error = "the producer is shutting down";
        return -1;
    }
    if (!p->ready) {
        pthread_mutex_unlock(&p->lock);
        job->error = "the broker is unavailable";
        return -1;
    }
    if (p->blocked) {
        pthread_mutex_unlock(&p->lock);
        job->error = "the broker is blocking publishers (memory or disk alarm), retry later";
        return -1;
    }
    if (p->pending + job->n > (size_t)p->cfg->max_pending) {
        pthread_mutex_unlock(&p->lock);
        job->error = "the producer is overloaded, retry later";
        return -1;
    }
    p->pending += job->n;
    was_empty = p->intake.head == NULL;
    rq_list_push_back(&p->intake, &job->node);
    pthread_mutex_unlock(&p->lock);
    if (was_empty && (r = rq_wakeup_signal(p->wake)) < 0)
        rq_warn("eventfd write: %s", RQ_STRERR(-r));
    return 0;
}

int rq_publisher_ready(rq_publisher_t *p, char *reason, size_t reasonlen)
{
    int r;

    pthread_mutex_lock(&p->lock);
    r = p->ready;
    if (!r && reason != NULL)
        snprintf(reason, reasonlen, "%s", p->reason);
    pthread_mutex_unlock(&p->lock);
    return r;
}
