/* lease.c - the pull engine's thread: basic.get pipelines, leases, ack/nack/extend, expiry.
 *
 * Everything below the public functions runs on the leaser thread, which alone uses the
 * connection, the lease table and the queue states; HTTP threads only queue jobs (under mu)
 * and signal the wake-up.
 */
#include "lease.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "amqp_conn.h"
#include "ackwin.h"
#include "amqp_pub.h"
#include "hmap.h"
#include "lease_json.h"
#include "log.h"
#include "qsettings.h"
#include "util.h"
#include "wakeup.h"

#define CH_GET 1   /* basic.get, the leases, their acks and rejects */
#define CH_OTHER 2 /* passive declares, delay-queue declares, confirmed republishes */
#define QUEUE_CHECK_MS 2000
#define DELAY_REDECLARE_MS 60000
#define LEASE_OVERHEAD 4096   /* the per-message pool of amqp_read_message() */
#define BUF_HIGH 2000         /* a consumer's prefetch: at most this many buffered for a queue */
#define BUF_LOW 100           /* ... basic.consume again below this many, while in demand */
#define SETTINGS_WAIT_MS 2000 /* a requeue nack waits this long for its queue's max_retries */
#define CTAG_PREFIX "rq-pull."
#define FRESH_WAIT_MS 100 /* an empty pull waits this long for a new consumer's deliveries */
#define PARK_MS 25 /* an empty pull while consuming waits (parked) this long for deliveries */
#define ATTEMPT_MAX 1000000    /* at most this attempt count (from headers any client sets) */
#define ACKWIN_TAGS (1u << 20) /* delivery tags the ack merging covers above the lowest out */

typedef struct delivery {
    struct delivery *next;
    uint64_t tag;
    int redelivered;
    unsigned gen; /* the generation of the consumer it came to */
    amqp_message_t msg;
} delivery_t;

typedef struct qstate qstate_t;

typedef struct lease {
    rq_lease_entry_t e;
    qstate_t *q;
    uint64_t tag;
    unsigned gen; /* the generation of the consumer it came to */
    int attempt;
    int gen_id; /* message_id made here: a republish sets it */
    char *msgid;
    size_t bytes;
    amqp_message_t msg;
} lease_t;

struct qstate {
    char name[RQ_QNAME_MAX + 1];
    int64_t checked_ms; /* last passive declare that found it (monotonic), 0: never */
    rq_lease_job_t *wait_head, *wait_tail;
    size_t nleases;
    qstate_t *next_active; /* in the list of queues with waiters */
    int active;
    /* basic.consume while pulls ask for messages; deliveries wait in buf until a pull */
    int consuming;
    int64_t last_demand_ms;
    delivery_t *buf_head, *buf_tail;
    size_t nbuf;
    unsigned generation; /* of the consumer tag */
    size_t credit_used;  /* current consumer's deliveries not yet acked or rejected (its
                            prefetch is BUF_HIGH) */
};

struct rq_leaser {
    const rq_config_t *cfg;
    rq_lease_limits_t lim;
    char replica[RQ_LEASE_REPLICA_LEN + 1];
    pthread_t thread;
    int started, joined;
    pthread_mutex_t mu;
    rq_lease_job_t *head, *tail; /* queued for the thread, under mu */
    size_t njobs;                /* queued + running + waiting, under mu */
    int stopping;                /* under mu */
    atomic_size_t nwaiting;
    rq_wakeup_t *wake;
    /* the thread's */
    amqp_connection_state_t conn;
    rq_pubbuf_t *acks; /* basic.ack / basic.reject on CH_GET, one send() per loop turn */
    rq_ackwin_t *win;  /* CH_GET's settled tags: acks merged into multiple frames */
    uint64_t *pend;    /* tags acked this turn, planned into frames by flush_acks */
    size_t npend, cap_pend;
    int64_t next_resync_ms;      /* resync_window() not before */
    uint64_t last_tag;           /* the highest delivery tag on CH_GET (this connection) */
    rq_lease_job_t *after_flush; /* ack jobs answered once their acks are written */
    rq_backoff_t backoff;
    int64_t next_connect_ms;
    rq_lease_table_t *leases;
    size_t bytes;
    rq_hmap_t *queues; /* name -> qstate_t */
    rq_hmap_t *delays; /* "<q>.delay.<ms>" -> int64_t *: last declared (monotonic ms) */
    qstate_t *active;  /* queues with waiters */
    int64_t next_sweep_ms, next_manage_ms;
    size_t buffered;        /* deliveries buffered, all queues */
    int delivered;          /* a delivery came since the waiters were last served */
    rq_qsettings_t *qs;     /* per-queue max_retries (management API), off this thread */
    rq_lease_job_t *parked; /* requeue nacks waiting for their queue's max_retries */
    rq_lease_job_t *pulls, **pulls_tail; /* pulls taken, to run after the acks (FIFO) */
    /* metrics */
    rq_series_t *m_expired, *m_leases, *m_pulled, *m_acked, *m_lost, *m_released;
    rq_series_t *m_nack[3]; /* requeued, delayed, dead_lettered */
};

/* ---- results ---- */

static void job_error(rq_lease_job_t *job, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void job_error(rq_lease_job_t *job, unsigned status, const char *fmt, ...)
{
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    json_decref(job->result);
    job->result = json_pack("{ss}", "error", text);
    job->status = status;
}

/* Forgets the messages written for a pull (their leases stay until acked or expired). */
static void clear_messages(rq_lease_job_t *job)
{
    rq_jbuf_free(&job->msgs);
    job->nmsgs = 0;
}

/* Ends job: done() is called, after which the job is not touched. */
static void finish(rq_leaser_t *l, rq_lease_job_t *job)
{
    if (job->status == 0)
        job->status = 200;
    if (job->result == NULL)
        job->result = json_object();
    pthread_mutex_lock(&l->mu);
    l->njobs--;
    pthread_mutex_unlock(&l->mu);
    job->done(job, job->done_arg);
}

/* ---- leases ---- */

static void lease_free(rq_leaser_t *l, lease_t *ls)
{
    if (ls == NULL)
        return;
    if (ls->gen == ls->q->generation && ls->q->credit_used > 0)
        ls->q->credit_used--; /* acked, rejected or gone: the consumer's credit is back */
    ls->q->nleases--;
    l->bytes -= ls->bytes;
    amqp_destroy_message(&ls->msg);
    free(ls->msgid);
    free(ls);
}

static void update_gauge(rq_leaser_t *l)
{
    rq_series_set(l->m_leases, (double)rq_lease_table_len(l->leases));
}

/* Forgets every lease (the connection is gone: the broker requeued their messages). */
static void forget_leases(rq_leaser_t *l)
{
    rq_lease_entry_t *e;
    size_t n = 0;

    while ((e = rq_lease_table_pop_any(l->leases)) != NULL) {
        lease_free(l, e->data);
        n++;
    }
    if (n > 0) {
        rq_series_add(l->m_lost, (double)n);
        rq_warn("leaser: %zu lease(s) ended with the broker connection (messages requeued)", n);
    }
    update_gauge(l);
}

/* Ends every ack job waiting for a flush with `status` (a lost connection: 503). */
static void finish_after_flush(rq_leaser_t *l, int ok)
{
    rq_lease_job_t *job = l->after_flush, *next;

    l->after_flush = NULL;
    for (; job != NULL; job = next) {
        next = job->next;
        if (!ok)
            job_error(job, 503,
                      "the broker connection was lost before the ack was sent; the "
                      "message will be delivered again");
        finish(l, job);
    }
}

static void forget_buffers(rq_leaser_t *l);

static void drop_conn(rq_leaser_t *l, const char *why)
{
    if (l->conn == NULL)
        return;
    rq_warn("leaser: broker connection dropped: %s", why);
    rq_pubbuf_free(l->acks);
    l->acks = NULL;
    l->npend = 0;
    finish_after_flush(l, 0);
    rq_amqp_close(l->conn);
    l->conn = NULL;
    forget_leases(l);
    forget_buffers(l);
    l->next_connect_ms = rq_mono_ms() + rq_backoff_next(&l->backoff);
}

/* Queues one frame on CH_GET: basic.reject (requeue) or basic.ack. Returns 0, or -1 when
 * the connection was dropped. */
static int add_frame(rq_leaser_t *l, uint64_t tag, int reject_requeue, int multiple)
{
    int rc;

    if (reject_requeue) {
        amqp_basic_reject_t m = {.delivery_tag = tag, .requeue = 1};
        rc = rq_pubbuf_add_method(l->acks, CH_GET, AMQP_BASIC_REJECT_METHOD, &m);
    } else {
        amqp_basic_ack_t m = {.delivery_tag = tag, .multiple = multiple != 0};
        rc = rq_pubbuf_add_method(l->acks, CH_GET, AMQP_BASIC_ACK_METHOD, &m);
    }
    if (rc != AMQP_STATUS_OK) {
        drop_conn(l, amqp_error_string2(rc));
        return -1;
    }
    return 0;
}

static void min_lease_tag(rq_lease_entry_t *e, void *arg)
{
    const lease_t *ls = e->data;
    uint64_t *m = arg;

    if (ls->tag < *m)
        *m = ls->tag;
}

static void min_buffer_tag(const char *key, void *value, void *arg)
{
    const qstate_t *q = value;
    uint64_t *m = arg;

    (void)key;
    if (q->buf_head != NULL && q->buf_head->tag < *m) /* a buffer is in tag order */
        *m = q->buf_head->tag;
}

/* Moves the window's low up to the lowest tag still out (leased or buffered): every tag
 * below it is settled. Needed when low stopped at a tag settled beyond the window (a lease
 * held while more than ACKWIN_TAGS went by, then rejected at its expiry): merging resumes.
 * With nothing out, at once; else at most once a second, and only when low lags half a
 * window: it walks every lease. */
static void resync_window(rq_leaser_t *l)
{
    uint64_t m = l->last_tag + 1;
    int64_t now = rq_mono_ms();

    if (rq_lease_table_len(l->leases) == 0 && l->buffered == 0) {
        rq_ackwin_skip(l->win, m);
        return;
    }
    if (m - rq_ackwin_low(l->win) < ACKWIN_TAGS / 2 || now < l->next_resync_ms)
        return;
    l->next_resync_ms = now + 1000;
    rq_lease_table_each(l->leases, min_lease_tag, &m);
    rq_hmap_each(l->queues, min_buffer_tag, &m);
    rq_ackwin_skip(l->win, m);
}

/* The acks of this turn as frames, merged where every lower tag is settled (ackwin.h);
 * after every frame queued before them. Returns 0, or -1 when the connection was dropped. */
static int plan_acks(rq_leaser_t *l)
{
    size_t n = l->npend, k = rq_ackwin_plan(l->win, l->pend, n);

    l->npend = 0;
    if (k > 0 && add_frame(l, l->pend[k - 1], 0, k > 1) != 0)
        return -1;
    for (size_t i = k; i < n; i++)
        if (add_frame(l, l->pend[i], 0, 0) != 0)
            return -1;
    resync_window(l);
    return 0;
}

/* Writes the queued acks and rejects; answers the ack jobs once they are written. */
static int flush_acks(rq_leaser_t *l)
{
    if (l->conn == NULL)
        return -1;
    if (l->npend > 0 && plan_acks(l) != 0)
        return -1;
    if (rq_pubbuf_pending(l->acks) > 0) {
        int rc = rq_pubbuf_flush(l->acks);
        if (rc != AMQP_STATUS_OK) {
            drop_conn(l, amqp_error_string2(rc));
            return -1;
        }
    }
    finish_after_flush(l, 1);
    return 0;
}

/* Room for one more ack this turn. Returns 0, or -1 when out of memory. */
static int pend_room(rq_leaser_t *l)
{
    size_t cap = l->cap_pend ? l->cap_pend * 2 : 256;
    uint64_t *p;

    if (l->npend < l->cap_pend)
        return 0;
    p = realloc(l->pend, cap * sizeof(*p));
    if (p == NULL)
        return -1;
    l->pend = p;
    l->cap_pend = cap;
    return 0;
}

/* Settles a delivery: a reject (requeue) is queued now, an ack is kept for flush_acks, which
 * merges the turn's acks (out of memory for that: a frame of its own now). Returns 0, or -1
 * when the connection was dropped. */
static int send_ack(rq_leaser_t *l, uint64_t tag, int reject_requeue)
{
    if (reject_requeue || pend_room(l) != 0) {
        (void)rq_ackwin_settle(l->win, tag);
        return add_frame(l, tag, reject_requeue, 0);
    }
    l->pend[l->npend++] = tag;
    return 0;
}

/* ---- the connection ---- */

static int open_other_channel(rq_leaser_t *l, char *err, size_t errlen)
{
    amqp_channel_open(l->conn, CH_OTHER);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "channel.open", err, errlen) != 0)
        return -1;
    amqp_confirm_select(l->conn, CH_OTHER);
    return rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "confirm.select", err, errlen);
}

/* The presence queue RQ_LEASE_PRESENCE_FMT of this replica: exclusive to this connection, so
 * it exists exactly as long as the leases do (lease_fwd.c tells "reconnecting" from "gone"
 * by it). */
static int declare_presence(rq_leaser_t *l, char *err, size_t errlen)
{
    char name[64];

    snprintf(name, sizeof(name), RQ_LEASE_PRESENCE_FMT, l->replica);
    amqp_queue_declare(l->conn, CH_OTHER, amqp_cstring_bytes(name), 0, 0, 1, 1, amqp_empty_table);
    return rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "queue.declare (presence)", err,
                               errlen);
}

static void try_connect(rq_leaser_t *l)
{
    char err[512];

    if (rq_mono_ms() < l->next_connect_ms)
        return;
    l->conn = rq_amqp_open(&l->cfg->rabbitmq, err, sizeof(err));
    if (l->conn == NULL)
        goto err;
    if (open_other_channel(l, err, sizeof(err)) != 0 || declare_presence(l, err, sizeof(err)) != 0)
        goto err;
    l->acks = rq_pubbuf_new(l->conn, !l->cfg->rabbitmq.tls, l->cfg->rabbitmq.connect_timeout_ms);
    if (l->acks == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto err;
    }
    rq_ackwin_reset(l->win); /* a new channel: its tags start at 1 */
    l->npend = 0;
    l->last_tag = 0;
    rq_backoff_reset(&l->backoff);
    rq_info("leaser: connected to the broker (replica %s)", l->replica);
    return;

err:
    if (l->conn != NULL)
        rq_amqp_close(l->conn);
    l->conn = NULL;
    l->next_connect_ms = rq_mono_ms() + rq_backoff_next(&l->backoff);
    rq_warn("leaser: cannot connect to the broker: %s", err);
}

/* After a server-initiated channel.close on CH_OTHER: close-ok, then the channel again. */
static int reopen_other(rq_leaser_t *l)
{
    amqp_channel_close_ok_t ok = {0};
    char err[256];

    if (amqp_send_method(l->conn, CH_OTHER, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK ||
        open_other_channel(l, err, sizeof(err)) != 0) {
        drop_conn(l, "cannot reopen channel 2");
        return -1;
    }
    return 0;
}

/* The reply code of a channel.close in r, or 0 when r is no channel exception. */
static int channel_close_code(amqp_rpc_reply_t r)
{
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    return 0;
}

/* Frames that come while the thread is idle: heartbeats (rabbitmq-c answers them), or a
 * close. Anything that closes a channel or the connection drops the connection. */
static int on_async_method(rq_leaser_t *l, const amqp_frame_t *f);

static void read_idle_frames(rq_leaser_t *l)
{
    while (l->conn != NULL) {
        amqp_frame_t f;
        struct timeval tv = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            drop_conn(l, amqp_error_string2(rc));
            return;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
            f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            drop_conn(l, "closed by the broker");
            return;
        }
        if (f.channel == CH_GET && on_async_method(l, &f) != 0)
            return;
    }
    /* Every frame read in this pass is handled: release (librabbitmq skips a channel with
     * frames still queued). Waiting for no data in the buffer would never release under
     * sustained traffic, and a pool keeps the pages it grew to. */
    if (l->conn != NULL)
        amqp_maybe_release_buffers(l->conn);
}

/* ---- queues ---- */

static qstate_t *queue_state(rq_leaser_t *l, const char *name)
{
    qstate_t *q = rq_hmap_get(l->queues, name);

    if (q != NULL)
        return q;
    q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    snprintf(q->name, sizeof(q->name), "%s", name);
    if (rq_hmap_put(l->queues, name, q) != 0) {
        free(q);
        return NULL;
    }
    return q;
}

/* The state of an existing queue (passive declare at most every QUEUE_CHECK_MS), or NULL
 * with job's error set (404 unknown, 503 broker trouble). */
static qstate_t *existing_queue(rq_leaser_t *l, rq_lease_job_t *job)
{
    qstate_t *q = queue_state(l, job->queue);
    int64_t now = rq_mono_ms();
    amqp_rpc_reply_t r;

    if (q == NULL) {
        job_error(job, 503, "out of memory");
        return NULL;
    }
    if (q->checked_ms != 0 && now - q->checked_ms < QUEUE_CHECK_MS)
        return q;
    amqp_queue_declare(l->conn, CH_OTHER, amqp_cstring_bytes(q->name), 1, 0, 0, 0,
                       amqp_empty_table);
    r = amqp_get_rpc_reply(l->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        q->checked_ms = now;
        return q;
    }
    if (channel_close_code(r) == 404) {
        q->checked_ms = 0;
        if (reopen_other(l) == 0)
            job_error(job, 404, "no such queue: %s", job->queue);
        else
            job_error(job, 503, "the broker connection was lost");
        return NULL;
    }
    drop_conn(l, "queue.declare (passive) failed");
    job_error(job, 503, "the broker connection was lost");
    return NULL;
}

/* ---- consuming ---- */

/* "rq-pull.<generation>.<queue>": a new tag for every basic.consume (RabbitMQ 3.10's channel
 * crashed on a late delivery for a cancelled and re-made consumer of the same tag). */
static void ctag_of(qstate_t *q, char *buf, size_t len)
{
    snprintf(buf, len, CTAG_PREFIX "%u.%s", q->generation, q->name);
}

static qstate_t *queue_of_ctag(rq_leaser_t *l, amqp_bytes_t ctag, unsigned *gen)
{
    size_t pl = strlen(CTAG_PREFIX);
    char name[RQ_QNAME_MAX + 1];

    const char *s = ctag.bytes;
    size_t i;

    if (ctag.len <= pl || memcmp(s, CTAG_PREFIX, pl) != 0)
        return NULL;
    *gen = 0;
    for (i = pl; i < ctag.len && s[i] >= '0' && s[i] <= '9'; i++)
        *gen = *gen * 10 + (unsigned)(s[i] - '0');
    if (i >= ctag.len || s[i] != '.' || ctag.len - i - 1 > RQ_QNAME_MAX)
        return NULL;
    memcpy(name, s + i + 1, ctag.len - i - 1);
    name[ctag.len - i - 1] = '\0';
    return rq_hmap_get(l->queues, name);
}

/* basic.consume (nowait) or basic.cancel (nowait) of q's consumer. */
static void set_consuming(rq_leaser_t *l, qstate_t *q, int on)
{
    char ctag[RQ_QNAME_MAX + 32], err[256];
    int rc;

    if (l->conn == NULL || q->consuming == on)
        return;
    if (on) {
        q->generation++;
        q->credit_used = 0;
    }
    ctag_of(q, ctag, sizeof(ctag));
    if (on) {
        /* basic.qos applies to the consumers made after it; prefetch counts this consumer's
         * leased deliveries too: room for them plus BUF_HIGH buffered */
        amqp_basic_qos(l->conn, CH_GET, 0, BUF_HIGH, 0);
        if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "basic.qos", err, sizeof(err)) != 0) {
            drop_conn(l, err);
            return;
        }
        amqp_basic_consume(l->conn, CH_GET, amqp_cstring_bytes(q->name), amqp_cstring_bytes(ctag),
                           0, 0, 0, amqp_empty_table);
    } else {
        amqp_basic_cancel(l->conn, CH_GET, amqp_cstring_bytes(ctag));
    }
    /* synchronous: deliveries that come meanwhile are queued by rabbitmq-c, read later */
    rc = rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), on ? "basic.consume" : "basic.cancel",
                             err, sizeof(err));
    if (rc != 0) {
        drop_conn(l, err);
        return;
    }
    q->consuming = on;
}

static delivery_t *buf_pop(rq_leaser_t *l, qstate_t *q)
{
    delivery_t *dv = q->buf_head;

    if (dv == NULL)
        return NULL;
    q->buf_head = dv->next;
    if (q->buf_head == NULL)
        q->buf_tail = NULL;
    q->nbuf--;
    l->buffered--;
    l->bytes -= dv->msg.body.len + LEASE_OVERHEAD;
    return dv;
}

/* After a basic.deliver frame on CH_GET: reads its message into its queue's buffer (or
 * rejects it back when no queue wants it). Returns 0, or -1 when the connection was dropped. */
static int on_deliver(rq_leaser_t *l, const amqp_frame_t *f)
{
    const amqp_basic_deliver_t *d = f->payload.method.decoded;
    uint64_t tag = d->delivery_tag;
    int redelivered = d->redelivered;
    unsigned gen;
    qstate_t *q = queue_of_ctag(l, d->consumer_tag, &gen);
    delivery_t *dv = calloc(1, sizeof(*dv));
    amqp_message_t tmp;
    amqp_rpc_reply_t r = amqp_read_message(l->conn, CH_GET, dv != NULL ? &dv->msg : &tmp, 0);

    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        free(dv);
        drop_conn(l, "cannot read a delivery");
        return -1;
    }
    if (tag > l->last_tag)
        l->last_tag = tag;
    if (q == NULL || dv == NULL) {
        amqp_destroy_message(dv != NULL ? &dv->msg : &tmp);
        free(dv);
        return send_ack(l, tag, 1);
    }
    dv->tag = tag;
    dv->redelivered = redelivered;
    dv->gen = gen;
    if (q->buf_tail != NULL)
        q->buf_tail->next = dv;
    else
        q->buf_head = dv;
    q->buf_tail = dv;
    q->nbuf++;
    l->buffered++;
    l->bytes += dv->msg.body.len + LEASE_OVERHEAD;
    l->delivered = 1;
    if (gen == q->generation)
        q->credit_used++;
    if (l->bytes >= l->lim.max_bytes)
        set_consuming(l, q, 0);
    return 0;
}

/* A method frame on CH_GET that is no answer to a call of ours. Returns 0, or -1 (dropped). */
static int on_async_method(rq_leaser_t *l, const amqp_frame_t *f)
{
    if (f->payload.method.id == AMQP_BASIC_DELIVER_METHOD)
        return on_deliver(l, f);
    if (f->payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
        /* the broker cancelled the consumer: the queue was deleted */
        const amqp_basic_cancel_t *c = f->payload.method.decoded;
        unsigned gen;
        qstate_t *q = queue_of_ctag(l, c->consumer_tag, &gen);
        if (q != NULL) {
            q->consuming = 0;
            q->checked_ms = 0;
        }
    }
    return 0;
}

/* Gives q's buffered deliveries back to the broker (basic.reject requeue). */
static void release_buffer(rq_leaser_t *l, qstate_t *q)
{
    delivery_t *dv;
    size_t n = 0;

    while ((dv = buf_pop(l, q)) != NULL) {
        uint64_t tag = dv->tag;
        if (dv->gen == q->generation && q->credit_used > 0)
            q->credit_used--;
        amqp_destroy_message(&dv->msg);
        free(dv);
        n++;
        if (l->conn != NULL)
            send_ack(l, tag, 1);
    }
    if (n > 0)
        rq_series_add(l->m_released, (double)n);
}

static void forget_buffer(const char *key, void *value, void *arg)
{
    rq_leaser_t *l = arg;
    qstate_t *q = value;
    delivery_t *dv;

    (void)key;
    while ((dv = buf_pop(l, q)) != NULL) {
        amqp_destroy_message(&dv->msg);
        free(dv);
    }
    q->consuming = 0;
}

/* The connection is gone: the broker requeued the buffered deliveries. */
static void forget_buffers(rq_leaser_t *l)
{
    rq_hmap_each(l->queues, forget_buffer, l);
}

typedef struct qlist {
    qstate_t **q;
    size_t n, cap;
} qlist_t;

static void collect_busy(const char *key, void *value, void *arg)
{
    qstate_t *q = value;
    qlist_t *ql = arg;

    (void)key;
    if ((q->consuming || q->nbuf > 0 || q->wait_head != NULL) && ql->n < ql->cap)
        ql->q[ql->n++] = q;
}

/* Every 100 ms: queues pulled from within idle_ms (or with waiters) keep their consumer
 * (again once the buffer is below BUF_LOW); idle ones are cancelled and their buffers given
 * back, so that a replica hides messages nobody asked for at most about idle_ms. */
static void manage_consumers(rq_leaser_t *l)
{
    int64_t now = rq_mono_ms();
    qstate_t *arr[256];
    qlist_t ql = {arr, 0, sizeof(arr) / sizeof(arr[0])};

    if (now < l->next_manage_ms || l->conn == NULL)
        return;
    l->next_manage_ms = now + 100;
    rq_hmap_each(l->queues, collect_busy, &ql);
    for (size_t i = 0; i < ql.n && l->conn != NULL; i++) {
        qstate_t *q = ql.q[i];
        int idle = q->wait_head == NULL && now - q->last_demand_ms > l->lim.idle_ms;
        if (idle) {
            set_consuming(l, q, 0);
            release_buffer(l, q);
        } else if (!q->consuming && q->nbuf < BUF_LOW && l->bytes < l->lim.max_bytes) {
            set_consuming(l, q, 1);
        }
    }
    flush_acks(l);
}

/* ---- taking messages ---- */

static long long header_int(const amqp_basic_properties_t *p, const char *key, long long dflt)
{
    const amqp_field_value_t *v = rq_amqp_header(p, key);

    if (v == NULL)
        return dflt;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        return v->value.i8;
    case AMQP_FIELD_KIND_U8:
        return v->value.u8;
    case AMQP_FIELD_KIND_I16:
        return v->value.i16;
    case AMQP_FIELD_KIND_U16:
        return v->value.u16;
    case AMQP_FIELD_KIND_I32:
        return v->value.i32;
    case AMQP_FIELD_KIND_U32:
        return v->value.u32;
    case AMQP_FIELD_KIND_I64:
        return v->value.i64;
    case AMQP_FIELD_KIND_U64:
        return v->value.u64 > LLONG_MAX ? LLONG_MAX : (long long)v->value.u64;
    default:
        return dflt;
    }
}

/* message_id: the property, else x-relayq-uid, else a new "gen-<uuid>". An id that is not
 * UTF-8 (or holds a NUL: a foreign client's) cannot be written in the answer nor sent back
 * in an ack: it counts as none (rejecting the delivery would only bring it back, forever). */
static char *message_id_of(const amqp_basic_properties_t *p, int *gen)
{
    const amqp_field_value_t *uid = rq_amqp_header(p, "x-relayq-uid");
    char uuid[RQ_UUID_LEN + 5];

    *gen = 0;
    if ((p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
        rq_lease_msgid_ok(p->message_id.bytes, p->message_id.len))
        return rq_amqp_strdup(p->message_id);
    if (uid != NULL && uid->kind == AMQP_FIELD_KIND_UTF8 &&
        rq_lease_msgid_ok(uid->value.bytes.bytes, uid->value.bytes.len))
        return rq_amqp_strdup(uid->value.bytes);
    *gen = 1;
    memcpy(uuid, "gen-", 4);
    rq_uuid(uuid + 4);
    return strdup(uuid);
}

static int attempt_of(const amqp_basic_properties_t *p, int redelivered)
{
    long long a = header_int(p, "x-relayq-attempts", 1);
    long long dc = header_int(p, "x-delivery-count", -1);

    /* both come from the publisher (any client): bounded before the sum, never overflowing */
    a = a < 1 ? 1 : (a > ATTEMPT_MAX ? ATTEMPT_MAX : a);
    dc = dc < 0 ? (redelivered ? 1 : 0) : (dc > ATTEMPT_MAX ? ATTEMPT_MAX : dc);
    a += dc;
    return a > ATTEMPT_MAX ? ATTEMPT_MAX : (int)a;
}

/* Appends ls's object to job's messages (job->msgs). Returns 0 or -1 (the text as it was, or
 * the buffer failed: out of memory). */
static int append_message(rq_lease_job_t *job, const lease_t *ls)
{
    rq_lease_msg_info_t info = {ls->msgid, ls->attempt, ls->e.id,
                                rq_wall_ms() + (ls->e.expires_ms - rq_mono_ms())};
    size_t mark = job->msgs.len;

    if (job->nmsgs > 0)
        rq_jbuf_raw(&job->msgs, ",", 1);
    if (rq_lease_msg_json(&job->msgs, &ls->msg, &info) != 0) {
        rq_jbuf_truncate(&job->msgs, mark);
        return -1;
    }
    job->nmsgs++;
    return 0;
}

/* Makes the lease of one delivery (msg taken over) and appends its JSON to job's messages.
 * Returns 0, or -1 (the delivery is rejected back to the queue). */
static int lease_delivery(rq_leaser_t *l, qstate_t *q, rq_lease_job_t *job, uint64_t tag,
                          unsigned gen, int redelivered, amqp_message_t *msg)
{
    lease_t *ls = calloc(1, sizeof(*ls));

    if (ls == NULL)
        goto err;
    ls->msg = *msg;
    memset(msg, 0, sizeof(*msg));
    ls->q = q;
    q->nleases++;
    ls->tag = tag;
    ls->gen = gen;
    ls->attempt = attempt_of(&ls->msg.properties, redelivered);
    ls->msgid = message_id_of(&ls->msg.properties, &ls->gen_id);
    ls->bytes = ls->msg.body.len + LEASE_OVERHEAD;
    l->bytes += ls->bytes;
    ls->e.data = ls;
    ls->e.expires_ms = rq_mono_ms() + (int64_t)job->lease_s * 1000;
    if (ls->msgid == NULL || rq_lease_id_new(l->replica, ls->e.id) != 0 ||
        rq_lease_table_add(l->leases, &ls->e) != 0)
        goto err;
    if (append_message(job, ls) != 0) {
        rq_lease_table_remove(l->leases, &ls->e);
        goto err;
    }
    rq_series_inc(l->m_pulled);
    return 0;

err:
    if (ls != NULL)
        lease_free(l, ls);
    else
        amqp_destroy_message(msg);
    send_ack(l, tag, 1);
    return -1;
}

/* A round trip on CH_GET (basic.qos, unchanged), then the deliveries that came before its
 * answer are buffered: a basic.get finds nothing when the queue's messages are on their way
 * to our consumer (just started, or just published), and a pull with wait_s=0 must not
 * answer empty then. Returns 0, or -1 when the connection was dropped. */
static int sync_deliveries(rq_leaser_t *l, const qstate_t *q, int wait_ms)
{
    char err[256];

    /* any synchronous call on CH_GET does; basic.qos with what the next consumer would get */
    amqp_basic_qos(l->conn, CH_GET, 0, BUF_HIGH, 0);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "basic.qos", err, sizeof(err)) != 0) {
        drop_conn(l, err);
        return -1;
    }
    read_idle_frames(l); /* the deliveries rabbitmq-c queued meanwhile */
    /* a new consumer's first deliveries: wait for them a little (wait_ms at most, only for a
     * pull that found nothing) */
    for (int64_t end = rq_mono_ms() + wait_ms; l->conn != NULL && q->nbuf == 0;) {
        struct pollfd pf = {.fd = amqp_get_sockfd(l->conn), .events = POLLIN};
        int64_t left = end - rq_mono_ms();
        if (left <= 0)
            break;
        if (poll(&pf, 1, (int)left) > 0)
            read_idle_frames(l);
    }
    return l->conn != NULL ? 0 : -1;
}

/* Leases up to want of q's buffered deliveries for job. Returns the count. */
static int take_buffered(rq_leaser_t *l, qstate_t *q, rq_lease_job_t *job, int want)
{
    int got = 0;
    delivery_t *dv;

    while (got < want && (dv = buf_pop(l, q)) != NULL) {
        if (lease_delivery(l, q, job, dv->tag, dv->gen, dv->redelivered, &dv->msg) == 0)
            got++;
        free(dv);
    }
    return got;
}

/* A consumer whose credit is spent (BUF_HIGH deliveries, leased and not yet acked) gets no
 * more: cancelled and made anew (a new tag, fresh credit) once its buffer runs low. So the
 * buffer never holds more than about BUF_HIGH messages nobody asked for, whatever the
 * number of leases. */
static void renew_if_spent(rq_leaser_t *l, qstate_t *q)
{
    if (q->consuming && q->credit_used >= BUF_HIGH && q->nbuf < BUF_LOW) {
        set_consuming(l, q, 0);
        set_consuming(l, q, 1);
    }
}

/* Takes up to `want` messages of q for job, leased for job->lease_s, appended to
 * job's messages (job->msgs), from what q's consumer buffered. With may_wait (a pull, not a
 * long-poll's turn) and nothing buffered: a consumer started now has its first deliveries
 * awaited here (FRESH_WAIT_MS); a consumer already running sets *park (when not NULL): the
 * caller parks the pull as a waiter for PARK_MS (served as soon as deliveries come, the
 * thread going on meanwhile), so that a pull with wait_s=0 finds what the queue holds
 * without blocking the acks of others. Marks q in demand (its consumer runs while pulls
 * come). Returns the count, or -1 when the connection was lost (job's error set; the leases
 * taken are gone with it). */
static int take(rq_leaser_t *l, qstate_t *q, rq_lease_job_t *job, int want, int may_wait, int *park)
{
    size_t room = rq_lease_table_max(l->leases) - rq_lease_table_len(l->leases);
    int got;

    if (flush_acks(l) != 0)
        goto lost;
    if ((size_t)want > room)
        want = (int)room;
    q->last_demand_ms = rq_mono_ms();
    renew_if_spent(l, q);
    got = take_buffered(l, q, job, want);
    if (l->conn != NULL && got == 0 && want > 0 && l->bytes < l->lim.max_bytes) {
        int fresh = !q->consuming;
        set_consuming(l, q, 1);
        if (may_wait && !fresh && park != NULL) {
            *park = 1;
        } else if (may_wait) {
            if (l->conn != NULL && sync_deliveries(l, q, fresh ? FRESH_WAIT_MS : 0) != 0)
                goto lost;
            got = take_buffered(l, q, job, want);
        }
    }
    renew_if_spent(l, q);
    if (l->conn == NULL || flush_acks(l) != 0)
        goto lost;
    update_gauge(l);
    /* Every frame read in this pass is handled: release (librabbitmq skips a channel with
     * frames still queued). Waiting for no data in the buffer would never release under
     * sustained traffic, and a pool keeps the pages it grew to. */
    amqp_maybe_release_buffers(l->conn);
    return got;

lost:
    clear_messages(job);
    job_error(job, 503, "the broker connection was lost; try again");
    return -1;
}

/* ---- jobs ---- */

static void activate(rq_leaser_t *l, qstate_t *q)
{
    if (!q->active) {
        q->active = 1;
        q->next_active = l->active;
        l->active = q;
    }
}

static void do_pull(rq_leaser_t *l, rq_lease_job_t *job, int final)
{
    qstate_t *q;
    int n, park = 0;

    job->result = json_pack("{ss s[] ss}", "queue", job->queue, "messages", "replica", l->replica);
    if (final) {
        job_error(job, 503, "the producer is stopping");
        goto done;
    }
    if (l->conn == NULL) {
        job_error(job, 503, "not connected to the broker");
        goto done;
    }
    if ((q = existing_queue(l, job)) == NULL)
        goto done;
    {
        int own; /* asks for the queue's max_retries early: a nack will need it */
        (void)rq_qsettings_max_retries(l->qs, q->name, &own);
    }
    if (rq_lease_table_len(l->leases) >= rq_lease_table_max(l->leases) ||
        l->bytes >= l->lim.max_bytes) {
        job_error(job, 503, "too many messages leased by this producer (%zu); ack some first",
                  rq_lease_table_len(l->leases));
        goto done;
    }
    n = take(l, q, job, job->max, 1, &park);
    if (n != 0 || (job->wait_s == 0 && !park) || atomic_load(&l->nwaiting) >= l->lim.max_waiters)
        goto done;
    job->deadline_ms = rq_mono_ms() + (job->wait_s > 0 ? (int64_t)job->wait_s * 1000 : PARK_MS);
    job->next = NULL;
    if (q->wait_tail != NULL)
        q->wait_tail->next = job;
    else
        q->wait_head = job;
    q->wait_tail = job;
    atomic_fetch_add(&l->nwaiting, 1);
    activate(l, q);
    return;

done:
    finish(l, job);
}

/* The lease lease_id names if it is for message msgid of queue, else NULL with the reason
 * in why (a 409: unknown, expired, another replica's, another message's). *other_replica is
 * set when the id is another replica's. */
static lease_t *find_lease(rq_leaser_t *l, const char *queue, const char *lease_id,
                           const char *msgid, char *why, size_t len, int *other_replica)
{
    rq_lease_entry_t *e;
    lease_t *ls;

    *other_replica = 0;
    if (!rq_lease_id_valid(lease_id)) {
        snprintf(why, len, "unknown lease_id (not a lease id of this service)");
        return NULL;
    }
    if (strncmp(lease_id, l->replica, RQ_LEASE_REPLICA_LEN) != 0) {
        snprintf(why, len,
                 "the lease is held by producer replica %.8s, not this one (%s): send the "
                 "request to the replica named by the pull's Relayq-Replica header",
                 lease_id, l->replica);
        *other_replica = 1;
        return NULL;
    }
    e = rq_lease_table_get(l->leases, lease_id);
    if (e == NULL) {
        snprintf(why, len, "unknown or expired lease (the message went back to the queue)");
        return NULL;
    }
    ls = e->data;
    if (strcmp(ls->msgid, msgid) != 0 || strcmp(ls->q->name, queue) != 0) {
        snprintf(why, len, "the lease is not for message %s of queue %s", msgid, queue);
        return NULL;
    }
    return ls;
}

/* The lease a job names, or NULL with job's error set (409). */
static lease_t *job_lease(rq_leaser_t *l, rq_lease_job_t *job)
{
    char why[600];
    int other;
    lease_t *ls = find_lease(l, job->queue, job->lease_id, job->msgid, why, sizeof(why), &other);

    if (ls != NULL)
        return ls;
    job_error(job, 409, "%s", why);
    if (other)
        json_object_set_new(job->result, "replica", json_stringn(job->lease_id, 8));
    return NULL;
}

static void do_ack(rq_leaser_t *l, rq_lease_job_t *job)
{
    lease_t *ls = job_lease(l, job);

    if (ls == NULL)
        goto done;
    if (send_ack(l, ls->tag, 0) != 0) {
        job_error(job, 503, "the broker connection was lost; the message will be delivered again");
        goto done;
    }
    rq_lease_table_remove(l->leases, &ls->e);
    job->result =
        json_pack("{ss ss sb}", "message_id", ls->msgid, "lease_id", job->lease_id, "acked", 1);
    lease_free(l, ls);
    rq_series_inc(l->m_acked);
    update_gauge(l);
    /* answered once the ack is written (flush_acks) */
    job->next = l->after_flush;
    l->after_flush = job;
    return;

done:
    finish(l, job);
}

/* A batch ack: each item acked or in "failed" on its own; every ack in the one send() of
 * this loop turn (flush_acks), the job answered once they are written. */
static void do_acks(rq_leaser_t *l, rq_lease_job_t *job)
{
    json_t *failed = json_array();
    size_t acked = 0, i;
    char why[600];
    int other;

    for (i = 0; i < job->nacks && failed != NULL; i++) {
        const rq_lease_ack_item_t *it = &job->acks[i];
        lease_t *ls = find_lease(l, job->queue, it->lease_id, it->msgid, why, sizeof(why), &other);
        if (ls == NULL) {
            json_array_append_new(failed, json_pack("{sI ss ss}", "index", (json_int_t)i,
                                                    "message_id", it->msgid, "error", why));
            continue;
        }
        uint64_t tag = ls->tag;
        rq_lease_table_remove(l->leases, &ls->e);
        lease_free(l, ls);
        if (send_ack(l, tag, 0) != 0) /* the connection is gone, and every lease with it */
            break;
        acked++;
    }
    for (; i < job->nacks && failed != NULL; i++)
        json_array_append_new(failed,
                              json_pack("{sI ss ss}", "index", (json_int_t)i, "message_id",
                                        job->acks[i].msgid, "error",
                                        "the broker connection was lost: the message will be "
                                        "delivered again"));
    if (failed == NULL) {
        job_error(job, 503, "out of memory");
        finish(l, job);
        return;
    }
    job->result = json_pack("{sI so}", "acked", (json_int_t)acked, "failed", failed);
    if (l->conn != NULL)
        rq_series_add(l->m_acked, (double)acked);
    update_gauge(l);
    if (l->conn == NULL && acked > 0) /* queued acks went with the connection, unsent */
        job_error(job, 503,
                  "the broker connection was lost before the acks were sent; the messages "
                  "will be delivered again");
    if (acked == 0 || l->conn == NULL) {
        finish(l, job);
        return;
    }
    job->next = l->after_flush; /* answered once the acks are written (flush_acks) */
    l->after_flush = job;
}

static void do_extend(rq_leaser_t *l, rq_lease_job_t *job)
{
    lease_t *ls = job_lease(l, job);
    char iso[RQ_ISO8601_LEN + 1];
    int64_t wall;

    if (ls != NULL) {
        rq_lease_table_set_expiry(l->leases, &ls->e, rq_mono_ms() + (int64_t)job->lease_s * 1000);
        wall = rq_wall_ms() + (int64_t)job->lease_s * 1000;
        job->result = json_pack("{ss ss ss sI}", "message_id", ls->msgid, "lease_id", ls->e.id,
                                "lease_expires_at", rq_iso8601(wall, iso), "lease_expires_ms",
                                (json_int_t)wall);
    }
    finish(l, job);
}

/* Waits for the confirm of the one message just published on CH_OTHER. Returns 0 (stored),
 * 1 (returned: no such queue), -2 (nacked), -1 (connection dropped). */
static int wait_confirm(rq_leaser_t *l)
{
    int returned = 0;

    for (;;) {
        amqp_frame_t f;
        struct timeval tv = {l->cfg->publish_timeout_ms / 1000,
                             (l->cfg->publish_timeout_ms % 1000) * 1000};
        int rc = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            drop_conn(l, rc == AMQP_STATUS_TIMEOUT ? "no publisher confirm in time"
                                                   : amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.channel == CH_GET) { /* a delivery of our consumers meanwhile */
            if (on_async_method(l, &f) != 0)
                return -1;
            continue;
        }
        if (f.channel != CH_OTHER)
            continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_RETURN_METHOD: {
            amqp_message_t m;
            if (amqp_read_message(l->conn, CH_OTHER, &m, 0).reply_type != AMQP_RESPONSE_NORMAL) {
                drop_conn(l, "cannot read a returned message");
                return -1;
            }
            amqp_destroy_message(&m);
            returned = 1;
            break;
        }
        case AMQP_BASIC_ACK_METHOD:
            return returned;
        case AMQP_BASIC_NACK_METHOD:
            return -2;
        default:
            drop_conn(l, "unexpected method while waiting for a confirm");
            return -1;
        }
    }
}

/* Publishes a copy of ls's message to `target` (default exchange, mandatory) with
 * x-relayq-attempts = attempts and, when reason is not NULL, x-relayq-reason (the broker's
 * x-delivery-count is left out: it counts the deliveries of one queue). Returns as
 * wait_confirm(), -3 when out of memory. */
static int republish(rq_leaser_t *l, lease_t *ls, const char *target, int attempts,
                     const char *reason)
{
    amqp_basic_properties_t p = ls->msg.properties;
    const amqp_table_t *old = (p._flags & AMQP_BASIC_HEADERS_FLAG) ? &p.headers : NULL;
    int n = 0, cap = (old != NULL ? old->num_entries : 0) + 2;
    amqp_table_entry_t *e = calloc((size_t)cap, sizeof(*e));
    int rc;

    if (e == NULL)
        return -3;
    for (int i = 0; old != NULL && i < old->num_entries; i++) {
        amqp_bytes_t k = old->entries[i].key;
        if ((k.len == 16 && memcmp(k.bytes, "x-delivery-count", 16) == 0) ||
            (k.len == 17 && memcmp(k.bytes, "x-relayq-attempts", 17) == 0) ||
            (k.len == 15 && memcmp(k.bytes, "x-relayq-reason", 15) == 0))
            continue;
        e[n++] = old->entries[i];
    }
    e[n++] = rq_amqp_i64_entry("x-relayq-attempts", attempts);
    if (reason != NULL)
        e[n++] = rq_amqp_utf8_entry("x-relayq-reason", reason);
    p.headers.num_entries = n;
    p.headers.entries = e;
    p._flags |= AMQP_BASIC_HEADERS_FLAG;
    if (ls->gen_id) {
        p.message_id = amqp_cstring_bytes(ls->msgid);
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
    }
    rc = amqp_basic_publish(l->conn, CH_OTHER, amqp_empty_bytes, amqp_cstring_bytes(target), 1, 0,
                            &p, ls->msg.body);
    free(e);
    if (rc != AMQP_STATUS_OK) {
        drop_conn(l, amqp_error_string2(rc));
        return -1;
    }
    return wait_confirm(l);
}

/* Declares the delay bucket queue of q (at most every DELAY_REDECLARE_MS): with the type of
 * QUEUE_TYPE first, and with the other type when the broker has it with that one. */
static int ensure_delay_queue(rq_leaser_t *l, const char *q, long long bucket, char *name,
                              size_t namelen)
{
    int64_t now = rq_mono_ms();
    int64_t *last;
    char err[512];
    const char *types[2] = {l->cfg->rabbitmq.queue_type,
                            strcmp(l->cfg->rabbitmq.queue_type, "quorum") == 0 ? "classic"
                                                                               : "quorum"};

    rq_qname_delay(q, bucket, name, namelen);
    last = rq_hmap_get(l->delays, name);
    if (last != NULL && now - *last < DELAY_REDECLARE_MS)
        return 0;
    for (int i = 0; i < 2; i++) {
        if (rq_amqp_declare_delay_queue(l->conn, CH_OTHER, q, types[i], bucket, err, sizeof(err)) ==
            0) {
            if (last == NULL && (last = malloc(sizeof(*last))) != NULL &&
                rq_hmap_put(l->delays, name, last) != 0) {
                free(last);
                last = NULL;
            }
            if (last != NULL)
                *last = now;
            return 0;
        }
        rq_warn("leaser: declaring %s as %s: %s", name, types[i], err);
        if (reopen_other(l) != 0)
            return -1;
    }
    return -1;
}

/* Where a nack sends ls: writes the target queue, the next attempt count and the reason. */
enum { NK_REQUEUE = 0, NK_DELAY, NK_DLQ };

static int nack_target(rq_leaser_t *l, rq_lease_job_t *job, lease_t *ls, char *target, size_t tlen,
                       char *reason, size_t rlen)
{
    int max = l->cfg->rabbitmq.max_retries, own;

    if (rq_qsettings_max_retries(l->qs, ls->q->name, &own) == 1)
        max = own;
    if (job->requeue && ls->attempt > max) {
        snprintf(reason, rlen, "max retries (%d) reached%s%s", max, job->reason[0] ? ": " : "",
                 job->reason);
        rq_qname_dlq(ls->q->name, target, tlen);
        return NK_DLQ;
    }
    if (!job->requeue) {
        snprintf(reason, rlen, "%s", job->reason[0] ? job->reason : "rejected by the client");
        rq_qname_dlq(ls->q->name, target, tlen);
        return NK_DLQ;
    }
    reason[0] = '\0';
    if (job->delay_ms > 0) {
        long long b = rq_qname_delay_bucket(job->delay_ms);
        if (ensure_delay_queue(l, ls->q->name, b, target, tlen) != 0)
            return -1;
        return NK_DELAY;
    }
    snprintf(target, tlen, "%s", ls->q->name);
    return NK_REQUEUE;
}

static void do_nack(rq_leaser_t *l, rq_lease_job_t *job)
{
    static const char *const outcome[] = {"requeued", "delayed", "dead_lettered"};
    char target[RQ_QNAME_MAX + 64], reason[RQ_LEASE_REASON_MAX + 64];
    lease_t *ls;
    int kind, rc, own;

    if (job->requeue && !job->settings_asked) {
        job->settings_asked = 1;
        if (rq_qsettings_max_retries(l->qs, job->queue, &own) < 0) {
            /* its queue's max_retries is being looked up: wait for it (at most
             * SETTINGS_WAIT_MS, then MAX_RETRIES), without blocking this thread */
            job->deadline_ms = rq_mono_ms() + SETTINGS_WAIT_MS;
            job->next = l->parked;
            l->parked = job;
            return;
        }
    }
    if ((ls = job_lease(l, job)) == NULL || flush_acks(l) != 0)
        goto done;
    kind = nack_target(l, job, ls, target, sizeof(target), reason, sizeof(reason));
    if (kind < 0) {
        job_error(job, 503, "cannot declare the delay queue");
        goto done;
    }
    rc = republish(l, ls, target, kind == NK_DLQ ? ls->attempt : ls->attempt + 1,
                   kind == NK_DLQ ? reason : NULL);
    if (rc == 1) {
        job_error(job, 409, "queue %s does not exist: the message stays leased", target);
        goto done;
    }
    if (rc != 0) {
        job_error(job, 503, "the broker did not store the message in %s%s", target,
                  rc == -1 ? " (connection lost: the message will be delivered again)" : "");
        goto done;
    }
    if (send_ack(l, ls->tag, 0) != 0 || flush_acks(l) != 0) {
        job_error(job, 503, "the broker connection was lost after the republish to %s", target);
        goto done;
    }
    rq_lease_table_remove(l->leases, &ls->e);
    job->result = json_pack("{ss ss ss ss si}", "message_id", ls->msgid, "lease_id", job->lease_id,
                            "outcome", outcome[kind], "queue", target, "attempt",
                            kind == NK_DLQ ? ls->attempt : ls->attempt + 1);
    if (kind == NK_DLQ && job->result != NULL)
        json_object_set_new(job->result, "reason", json_string(reason));
    lease_free(l, ls);
    rq_series_inc(l->m_nack[kind]);
    update_gauge(l);

done:
    finish(l, job);
}

static void run_job(rq_leaser_t *l, rq_lease_job_t *job, int final)
{
    if (job->kind != RQ_LJ_PULL && job->kind != RQ_LJ_ACKS && l->conn == NULL) {
        job_error(job, 409,
                  "unknown or expired lease (the broker connection was lost: the "
                  "message went back to the queue)");
        finish(l, job);
        return;
    }
    switch (job->kind) {
    case RQ_LJ_PULL:
        do_pull(l, job, final);
        break;
    case RQ_LJ_ACK:
        do_ack(l, job);
        break;
    case RQ_LJ_NACK:
        do_nack(l, job);
        break;
    case RQ_LJ_ACKS:
        do_acks(l, job);
        break;
    default:
        do_extend(l, job);
        break;
    }
}

/* ---- the loop ---- */

static void expire_leases(rq_leaser_t *l)
{
    rq_lease_entry_t *e;
    int n = 0;

    while (l->conn != NULL && (e = rq_lease_table_pop_expired(l->leases, rq_mono_ms())) != NULL) {
        lease_t *ls = e->data;
        uint64_t tag = ls->tag;
        lease_free(l, ls);
        rq_series_inc(l->m_expired);
        n++;
        if (send_ack(l, tag, 1) != 0)
            return;
    }
    if (n > 0) {
        flush_acks(l);
        update_gauge(l);
    }
}

static int client_gone(int fd)
{
    char b;
    ssize_t n;

    if (fd < 0)
        return 0;
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

static void unpark(rq_leaser_t *l, qstate_t *q, rq_lease_job_t *prev, rq_lease_job_t *job)
{
    if (prev != NULL)
        prev->next = job->next;
    else
        q->wait_head = job->next;
    if (q->wait_tail == job)
        q->wait_tail = prev;
    atomic_fetch_sub(&l->nwaiting, 1);
}

/* One turn for q's waiters: ends those past their deadline (a parked pull, wait_s=0, with
 * what is buffered then) or whose client left, then serves the oldest while the queue has
 * messages (a parked pull only once its max is buffered: pulls get full batches, not the
 * few messages of one delivery burst each). */
static void serve_queue(rq_leaser_t *l, qstate_t *q, int final)
{
    int64_t now = rq_mono_ms();

    for (rq_lease_job_t *prev = NULL, *job = q->wait_head, *next; job != NULL; job = next) {
        next = job->next;
        if (final || now >= job->deadline_ms || client_gone(job->client_fd)) {
            unpark(l, q, prev, job);
            if (!final && job->wait_s == 0 && now >= job->deadline_ms && l->conn != NULL)
                (void)take(l, q, job, job->max, 0, NULL);
            finish(l, job);
        } else {
            prev = job;
        }
    }
    if (q->wait_head != NULL)
        q->last_demand_ms = now;
    while (q->wait_head != NULL && l->conn != NULL) {
        rq_lease_job_t *job = q->wait_head;
        if (q->checked_ms == 0 || now - q->checked_ms >= QUEUE_CHECK_MS) {
            if (existing_queue(l, job) == NULL) {
                if (job->status == 404) {
                    unpark(l, q, NULL, job);
                    finish(l, job);
                    continue;
                }
                job->status = 0; /* the connection: try again later */
                clear_messages(job);
                json_decref(job->result);
                job->result = json_pack("{ss s[] ss}", "queue", job->queue, "messages", "replica",
                                        l->replica);
                break;
            }
        }
        if (job->wait_s == 0 && q->nbuf < (size_t)job->max)
            break; /* a parked pull: for its full batch, or its deadline */
        int n = take(l, q, job, job->max, 0, NULL);
        if (n == 0)
            break;
        unpark(l, q, NULL, job);
        finish(l, job);
    }
}

static void serve_waiters(rq_leaser_t *l, int final)
{
    qstate_t **pp = &l->active;

    while (*pp != NULL) {
        qstate_t *q = *pp;
        serve_queue(l, q, final);
        if (q->wait_head == NULL) {
            q->active = 0;
            *pp = q->next_active;
        } else {
            pp = &q->next_active;
        }
    }
}

typedef struct idle_list {
    char *names[256];
    size_t n;
} idle_list_t;

static void collect_idle(const char *key, void *value, void *arg)
{
    qstate_t *q = value;
    idle_list_t *idle = arg;

    /* a running consumer or a buffer keeps its state: freed with them, the buffered
     * deliveries stayed out and the next pull re-made the consumer under its live tag */
    if (q->wait_head == NULL && q->nleases == 0 && !q->active && !q->consuming && q->nbuf == 0 &&
        idle->n < sizeof(idle->names) / sizeof(idle->names[0]))
        idle->names[idle->n++] = strdup(key);
}

static void sweep_queues(rq_leaser_t *l)
{
    idle_list_t idle = {.n = 0};

    if (rq_mono_ms() < l->next_sweep_ms)
        return;
    l->next_sweep_ms = rq_mono_ms() + 10000;
    if (rq_hmap_len(l->queues) <= 64)
        return;
    /* rq_hmap_each must not see the map change: delete after the walk */
    rq_hmap_each(l->queues, collect_idle, &idle);
    for (size_t i = 0; i < idle.n; i++) {
        if (idle.names[i] != NULL)
            free(rq_hmap_del(l->queues, idle.names[i]));
        free(idle.names[i]);
    }
}

static rq_lease_job_t *take_jobs(rq_leaser_t *l, int *stop)
{
    rq_lease_job_t *jobs;

    pthread_mutex_lock(&l->mu);
    jobs = l->head;
    l->head = l->tail = NULL;
    *stop = l->stopping;
    pthread_mutex_unlock(&l->mu);
    return jobs;
}

static int next_timeout(rq_leaser_t *l)
{
    int64_t now = rq_mono_ms(), t = now + 1000;
    int64_t exp = rq_lease_table_next_expiry(l->leases);

    if (exp < t)
        t = exp;
    if ((l->active != NULL || l->parked != NULL) && now + RQ_LEASE_POLL_MS < t)
        t = now + RQ_LEASE_POLL_MS;
    if (l->conn != NULL && l->next_manage_ms < t)
        t = l->next_manage_ms;
    if (l->conn == NULL && l->next_connect_ms < t)
        t = l->next_connect_ms;
    if (l->pulls != NULL ||
        (l->conn != NULL && (amqp_frames_enqueued(l->conn) || amqp_data_in_buffer(l->conn))))
        t = now;
    return t <= now ? 0 : (int)(t - now);
}

static void wait_events(rq_leaser_t *l)
{
    struct pollfd pf[2] = {{.fd = rq_wakeup_fd(l->wake), .events = POLLIN}};
    nfds_t n = 1;

    if (l->conn != NULL) {
        pf[1].fd = amqp_get_sockfd(l->conn);
        pf[1].events = POLLIN;
        n = 2;
    }
    poll(pf, n, next_timeout(l));
    if (l->conn != NULL)
        read_idle_frames(l);
    rq_wakeup_drain(l->wake);
}

/* Runs the parked nacks whose queue settings came (or whose wait is over). */
static void run_parked(rq_leaser_t *l, int final)
{
    rq_lease_job_t *job = l->parked, *next, *keep = NULL;
    int64_t now = rq_mono_ms();
    int own;

    l->parked = NULL;
    for (; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        if (final || now >= job->deadline_ms ||
            rq_qsettings_max_retries(l->qs, job->queue, &own) >= 0) {
            run_job(l, job, final);
        } else {
            job->next = keep;
            keep = job;
        }
    }
    /* run_job may not park again (settings_asked), so l->parked is still NULL */
    l->parked = keep;
}

/* Sorts jobs: pulls to the end of l->pulls (in order), the others (acks, nacks, extends) run
 * now; then the acks are written and answered. */
static void sort_jobs(rq_leaser_t *l, rq_lease_job_t *jobs, int final)
{
    for (rq_lease_job_t *job = jobs, *next; job != NULL; job = next) {
        next = job->next;
        job->next = NULL;
        if (job->kind == RQ_LJ_PULL) {
            *l->pulls_tail = job;
            l->pulls_tail = &job->next;
        } else {
            run_job(l, job, final);
        }
    }
    flush_acks(l);
}

/* Runs jobs, acks first: every ack, nack and extend queued is run (and the acks written and
 * answered) before each pull, and the jobs that came meanwhile are taken between two pulls,
 * so that an ack waits for at most one pull's work (a pull
 * of 100 builds 100 messages' JSON), not for every pull of the turn. Pulls keep their order. */
static void run_jobs(rq_leaser_t *l, rq_lease_job_t *jobs, int final)
{
    int stop;

    sort_jobs(l, jobs, final);
    while (l->pulls != NULL) {
        rq_lease_job_t *job = l->pulls;
        l->pulls = job->next;
        if (l->pulls == NULL)
            l->pulls_tail = &l->pulls;
        job->next = NULL;
        run_job(l, job, final);
        sort_jobs(l, take_jobs(l, &stop), final);
    }
    flush_acks(l);
}

static void *leaser_main(void *arg)
{
    rq_leaser_t *l = arg;
    int stop = 0;
    int64_t next_serve = 0;

    rq_thread_name("rq-leaser");
    while (!stop) {
        if (l->conn == NULL)
            try_connect(l);
        wait_events(l);
        run_jobs(l, take_jobs(l, &stop), 0);
        if (l->parked != NULL) {
            run_parked(l, 0);
            flush_acks(l);
        }
        expire_leases(l);
        if (rq_mono_ms() >= next_serve || l->delivered) {
            l->delivered = 0;
            serve_waiters(l, 0);
            next_serve = rq_mono_ms() + RQ_LEASE_POLL_MS;
        }
        manage_consumers(l);
        sweep_queues(l);
    }
    /* Stopping: the last jobs (pulls refused, acks done), long-polls answered empty. */
    run_jobs(l, take_jobs(l, &stop), 1);
    run_parked(l, 1);
    serve_waiters(l, 1);
    flush_acks(l);
    if (l->conn != NULL) {
        rq_pubbuf_free(l->acks);
        l->acks = NULL;
        rq_amqp_close(l->conn); /* the broker requeues every leased and buffered message */
        l->conn = NULL;
    }
    forget_leases(l);
    forget_buffers(l); /* a stop with deliveries buffered freed the queues without them */
    return NULL;
}

/* ---- public ---- */

static void register_metrics(rq_leaser_t *l, rq_metrics_t *m)
{
    static const char *const nack_lbl[] = {"outcome"};
    static const char *const nack_val[3] = {"requeued", "delayed", "dead_lettered"};
    rq_metric_t *f;

    if (m == NULL)
        return;
    f = rq_metrics_counter(m, "producer_lease_expired_total",
                           "Leases that ended without an ack: the message went back to its queue",
                           0, NULL);
    l->m_expired = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_gauge(m, "producer_leases", "Messages leased by this producer now", 0, NULL);
    l->m_leases = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_counter(m, "producer_pulled_total", "Messages handed out by pulls", 0, NULL);
    l->m_pulled = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_counter(m, "producer_lease_acked_total", "Leased messages acked", 0, NULL);
    l->m_acked = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_counter(m, "producer_lease_lost_total",
                           "Leases ended by a lost broker connection (messages requeued)", 0, NULL);
    l->m_lost = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_counter(m, "producer_pull_released_total",
                           "Buffered deliveries given back unleased (no pull asked for them)", 0,
                           NULL);
    l->m_released = f ? rq_metric_series(f, 0, NULL) : NULL;
    f = rq_metrics_counter(m, "producer_lease_nacked_total", "Leased messages nacked, by outcome",
                           1, nack_lbl);
    for (int i = 0; i < 3; i++)
        l->m_nack[i] = f ? rq_metric_series(f, 1, &nack_val[i]) : NULL;
}

/* On the settings lookup thread: a queue's max_retries came; parked nacks may go on. */
static void settings_came(void *arg)
{
    rq_leaser_t *l = arg;

    rq_wakeup_signal(l->wake);
}

rq_leaser_t *rq_leaser_new(const rq_config_t *cfg, rq_metrics_t *metrics,
                           const rq_lease_limits_t *lim)
{
    rq_leaser_t *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->cfg = cfg;
    l->pulls_tail = &l->pulls;
    pthread_mutex_init(&l->mu, NULL);
    atomic_init(&l->nwaiting, 0);
    if (lim != NULL)
        l->lim = *lim;
    if (l->lim.max_leases == 0)
        l->lim.max_leases =
            cfg->lease_max_outstanding > 0 ? (size_t)cfg->lease_max_outstanding : 10000;
    if (l->lim.max_bytes == 0)
        l->lim.max_bytes = cfg->lease_max_bytes > 0 ? (size_t)cfg->lease_max_bytes : 64u << 20;
    if (l->lim.max_waiters == 0)
        l->lim.max_waiters = cfg->lease_max_waiters > 0 ? (size_t)cfg->lease_max_waiters : 1000;
    if (l->lim.max_jobs == 0)
        l->lim.max_jobs = 4096;
    if (l->lim.idle_ms <= 0)
        l->lim.idle_ms = cfg->lease_idle_ms > 0 ? cfg->lease_idle_ms : 5000;
    l->leases = rq_lease_table_new(l->lim.max_leases);
    l->win = rq_ackwin_new(ACKWIN_TAGS);
    l->queues = rq_hmap_new(0);
    l->delays = rq_hmap_new(0);
    l->wake = rq_wakeup_new();
    if (l->wake != NULL)
        l->qs = rq_qsettings_new(cfg, settings_came, l);
    if (l->leases == NULL || l->win == NULL || l->queues == NULL || l->delays == NULL ||
        l->wake == NULL || l->qs == NULL || rq_lease_replica_id(l->replica) != 0)
        goto err;
    register_metrics(l, metrics);
    if (pthread_create(&l->thread, NULL, leaser_main, l) != 0)
        goto err;
    l->started = 1;
    return l;

err:
    rq_leaser_free(l);
    return NULL;
}

char *rq_lease_job_text(const rq_lease_job_t *job, size_t *len)
{
    rq_jbuf_t b;
    char *text;

    if (job->kind == RQ_LJ_PULL && job->status == 200 && job->result != NULL &&
        json_object_get(job->result, "messages") != NULL) {
        /* {"queue","messages","replica"}: the messages as they were written */
        rq_jbuf_init(&b, job->msgs.len + 128);
        rq_jbuf_lit(&b, "{\"queue\":");
        rq_jbuf_str(&b, job->queue, strlen(job->queue));
        rq_jbuf_lit(&b, ",\"messages\":[");
        if (job->nmsgs > 0)
            rq_jbuf_raw(&b, job->msgs.p, job->msgs.len);
        rq_jbuf_lit(&b, "],\"replica\":");
        rq_jbuf_str(&b, job->replica, strlen(job->replica));
        rq_jbuf_raw(&b, "}", 1);
        if (job->msgs.failed) { /* a message could not be written: no answer */
            rq_jbuf_free(&b);
            return NULL;
        }
        return rq_jbuf_take(&b, len);
    }
    text = job->result != NULL ? json_dumps(job->result, JSON_COMPACT) : strdup("{}");
    if (text != NULL && len != NULL)
        *len = strlen(text);
    return text;
}

void rq_lease_job_clear(rq_lease_job_t *job)
{
    json_decref(job->result);
    job->result = NULL;
    clear_messages(job);
}

const char *rq_leaser_replica(const rq_leaser_t *l)
{
    return l->replica;
}

int rq_leaser_submit(rq_leaser_t *l, rq_lease_job_t *job)
{
    const char *why = NULL;

    snprintf(job->replica, sizeof(job->replica), "%s", l->replica);
    job->status = 0;
    job->result = NULL;
    rq_jbuf_init(&job->msgs, 0);
    job->nmsgs = 0;
    job->next = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->stopping)
        why = "the producer is stopping";
    else if (l->njobs >= l->lim.max_jobs)
        why = "too many pull requests in progress";
    else if (job->kind == RQ_LJ_PULL && job->wait_s > 0 &&
             atomic_load(&l->nwaiting) >= l->lim.max_waiters)
        why = "too many long-polls waiting";
    if (why == NULL) {
        if (l->tail != NULL)
            l->tail->next = job;
        else
            l->head = job;
        l->tail = job;
        l->njobs++;
    }
    pthread_mutex_unlock(&l->mu);
    if (why != NULL) {
        job_error(job, 503, "%s", why);
        return -1;
    }
    rq_wakeup_signal(l->wake);
    return 0;
}

void rq_leaser_stop(rq_leaser_t *l)
{
    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_mutex_unlock(&l->mu);
    if (l->started && !l->joined) {
        rq_wakeup_signal(l->wake);
        pthread_join(l->thread, NULL);
        l->joined = 1;
    }
}

static void free_qstate(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

void rq_leaser_free(rq_leaser_t *l)
{
    if (l == NULL)
        return;
    rq_leaser_stop(l);
    if (l->queues != NULL)
        rq_hmap_each(l->queues, free_qstate, NULL);
    if (l->delays != NULL)
        rq_hmap_each(l->delays, free_qstate, NULL);
    rq_hmap_free(l->queues);
    rq_hmap_free(l->delays);
    rq_lease_table_free(l->leases);
    rq_ackwin_free(l->win);
    free(l->pend);
    rq_qsettings_free(l->qs); /* its thread signals l->wake: freed before it */
    rq_wakeup_free(l->wake);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
