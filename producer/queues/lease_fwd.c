/* lease_fwd.c - forwarding lease operations to the replica that holds the lease (see
 * lease_fwd.h). One thread owns one AMQP connection (channel 1): it consumes the replica's own
 * queue (no-ack: a request or reply lost with a connection ends as the requester's timeout),
 * publishes forwarded requests (mandatory: a request to a replica that is gone comes back as
 * basic.return) and the replies to requests it served for others. */
#include "lease_fwd.h"

#include <amqp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "log.h"
#include "util.h"
#include "wakeup.h"

#define CH 1
#define CH_CHECK 2        /* passive declares of a holder's presence queue */
#define MAX_INFLIGHT 4096 /* forwards waiting to be sent or answered */
#define TYPE_REQUEST "relayq.lease.request"
#define TYPE_REPLY "relayq.lease.reply"
#define BODY_MAX (64u << 10) /* largest request or reply accepted */

typedef struct pending {
    rq_lease_job_t *job;
    char corr[RQ_UUID_LEN + 1];
    int64_t deadline_ms;
    struct pending *next;
} pending_t;

/* A request served for another replica: the leaser runs `job`, then it goes to the outbox. */
typedef struct served {
    rq_lease_job_t job;
    rq_lease_fwd_t *f;
    char reply_to[256];
    char corr[256];
    struct served *next;
} served_t;

enum { O_SENT_OK = 0, O_SENT_GONE, O_SENT_TIMEOUT, O_SENT_LOST, O_SERVED, O_BAD, O_COUNT };

struct rq_lease_fwd {
    const rq_config_t *cfg;
    rq_leaser_t *leaser;
    char replica[RQ_LEASE_REPLICA_LEN + 1];
    char self_queue[64];
    pthread_t thread;
    int started;
    rq_wakeup_t *wake;
    pthread_mutex_t mu; /* guards what follows */
    int stopping, connected;
    pending_t *intake, *intake_tail;
    size_t inflight; /* in intake or pending */
    served_t *outbox;
    /* the thread's own */
    amqp_connection_state_t conn;
    int64_t next_connect_ms;
    rq_backoff_t backoff;
    pending_t *pending;
    rq_series_t *m[O_COUNT];
};

/* ---- the wire format ---- */

static const char *const kind_names[] = {"pull", "ack", "nack", "lease"};

char *rq_lease_fwd_encode(const rq_lease_job_t *job)
{
    json_t *o = json_pack("{ss ss ss ss sb sI ss si}", "kind", kind_names[job->kind], "queue",
                          job->queue, "lease_id", job->lease_id, "msgid", job->msgid, "requeue",
                          job->requeue, "delay_ms", (json_int_t)job->delay_ms, "reason",
                          job->reason, "lease_s", job->lease_s);
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    return text;
}

/* Copies the string member `key` of o into dst (cap bytes with the NUL). Returns 0, or -1
 * when it is missing, not a string, holds a NUL or does not fit. */
static int copy_member(const json_t *o, const char *key, char *dst, size_t cap)
{
    const json_t *v = json_object_get(o, key);
    size_t n;

    if (!json_is_string(v))
        return -1;
    n = json_string_length(v);
    if (n >= cap || memchr(json_string_value(v), '\0', n) != NULL)
        return -1;
    memcpy(dst, json_string_value(v), n + 1);
    return 0;
}

int rq_lease_fwd_decode(const char *body, size_t len, rq_lease_job_t *job)
{
    json_t *o = len <= BODY_MAX ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    char kind[8];
    const json_t *rq, *dl, *ls;
    int rc = -1;

    if (!json_is_object(o) || copy_member(o, "kind", kind, sizeof(kind)) != 0 ||
        copy_member(o, "queue", job->queue, sizeof(job->queue)) != 0 ||
        copy_member(o, "lease_id", job->lease_id, sizeof(job->lease_id)) != 0 ||
        copy_member(o, "msgid", job->msgid, sizeof(job->msgid)) != 0 ||
        copy_member(o, "reason", job->reason, sizeof(job->reason)) != 0)
        goto done;
    if (strcmp(kind, "ack") == 0)
        job->kind = RQ_LJ_ACK;
    else if (strcmp(kind, "nack") == 0)
        job->kind = RQ_LJ_NACK;
    else if (strcmp(kind, "lease") == 0)
        job->kind = RQ_LJ_EXTEND;
    else
        goto done;
    rq = json_object_get(o, "requeue");
    dl = json_object_get(o, "delay_ms");
    ls = json_object_get(o, "lease_s");
    if (!json_is_boolean(rq) || !json_is_integer(dl) || !json_is_integer(ls) ||
        json_integer_value(dl) < 0 || json_integer_value(dl) > RQ_DELAY_MAX_MS ||
        json_integer_value(ls) < 0 || json_integer_value(ls) > RQ_LEASE_MAX_S)
        goto done;
    if (job->kind == RQ_LJ_EXTEND && json_integer_value(ls) < 1)
        goto done; /* as over HTTP: 1..RQ_LEASE_MAX_S */
    job->requeue = json_is_true(rq);
    job->delay_ms = (long long)json_integer_value(dl);
    job->lease_s = (int)json_integer_value(ls);
    rc = 0;

done:
    json_decref(o);
    return rc;
}

/* ---- finishing jobs ---- */

static void set_error(rq_lease_job_t *job, unsigned status, const char *msg)
{
    job->status = status;
    json_decref(job->result);
    job->result = json_pack("{ss}", "error", msg);
}

/* Ends a forwarded job with what is in it (on the forwarder thread, or the submitter's when
 * refused before it was taken). */
static void finish(rq_lease_fwd_t *f, pending_t *p, int outcome)
{
    rq_lease_job_t *job = p->job;

    pthread_mutex_lock(&f->mu);
    f->inflight--;
    pthread_mutex_unlock(&f->mu);
    rq_series_inc(f->m[outcome]);
    free(p);
    job->done(job, job->done_arg);
}

static void fail_list(rq_lease_fwd_t *f, pending_t *list, const char *msg)
{
    for (pending_t *p = list, *next; p != NULL; p = next) {
        next = p->next;
        set_error(p->job, 503, msg);
        finish(f, p, O_SENT_LOST);
    }
}

/* ---- the connection ---- */

static void drop_conn(rq_lease_fwd_t *f, const char *why)
{
    pending_t *list = f->pending;

    rq_warn("lease forwarder: connection lost: %s", why);
    f->pending = NULL;
    if (f->conn != NULL)
        rq_amqp_close(f->conn);
    f->conn = NULL;
    pthread_mutex_lock(&f->mu);
    f->connected = 0;
    pthread_mutex_unlock(&f->mu);
    f->next_connect_ms = rq_mono_ms() + rq_backoff_next(&f->backoff);
    fail_list(f, list,
              "the broker connection was lost while forwarding to the lease's replica; "
              "retry");
}

static void try_connect(rq_lease_fwd_t *f)
{
    char err[512];
    amqp_bytes_t q = amqp_cstring_bytes(f->self_queue);

    if (rq_mono_ms() < f->next_connect_ms)
        return;
    f->conn = rq_amqp_open(&f->cfg->rabbitmq, err, sizeof(err));
    if (f->conn == NULL)
        goto err;
    amqp_queue_declare(f->conn, CH, q, 0, 0, 1, 1, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(f->conn), "queue.declare", err, sizeof(err)) != 0)
        goto err;
    amqp_basic_consume(f->conn, CH, q, amqp_empty_bytes, 0, 1, 1, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(f->conn), "basic.consume", err, sizeof(err)) != 0)
        goto err;
    rq_backoff_reset(&f->backoff);
    pthread_mutex_lock(&f->mu);
    f->connected = 1;
    pthread_mutex_unlock(&f->mu);
    rq_info("lease forwarder: consuming %s", f->self_queue);
    return;

err:
    if (f->conn != NULL)
        rq_amqp_close(f->conn);
    f->conn = NULL;
    f->next_connect_ms = rq_mono_ms() + rq_backoff_next(&f->backoff);
    rq_warn("lease forwarder: cannot connect to the broker: %s", err);
}

/* Publishes body to queue `rk` on the default exchange. Returns 0, or -1 (the connection is
 * then dropped by the caller). */
static int publish(rq_lease_fwd_t *f, const char *rk, const char *type, const char *corr,
                   int mandatory, const char *body)
{
    amqp_basic_properties_t props;

    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_TYPE_FLAG |
                   AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.type = amqp_cstring_bytes(type);
    props.correlation_id = amqp_cstring_bytes(corr);
    props.delivery_mode = 1; /* transient: it lives no longer than the connections */
    if (mandatory) {
        props._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props.reply_to = amqp_cstring_bytes(f->self_queue);
    }
    return amqp_basic_publish(f->conn, CH, amqp_empty_bytes, amqp_cstring_bytes(rk), mandatory, 0,
                              &props, amqp_cstring_bytes(body)) == AMQP_STATUS_OK
               ? 0
               : -1;
}

/* ---- requesting ---- */

static void send_forwards(rq_lease_fwd_t *f, pending_t *list)
{
    for (pending_t *p = list, *next; p != NULL; p = next) {
        char rk[sizeof(RQ_LEASE_FWD_PREFIX) + RQ_LEASE_REPLICA_LEN];
        char *body;
        next = p->next;
        if (f->conn == NULL) {
            set_error(p->job, 503, "not connected to the broker; retry");
            finish(f, p, O_SENT_LOST);
            continue;
        }
        snprintf(rk, sizeof(rk), "%s%.*s", RQ_LEASE_FWD_PREFIX, RQ_LEASE_REPLICA_LEN,
                 p->job->lease_id);
        body = rq_lease_fwd_encode(p->job);
        if (body == NULL) {
            set_error(p->job, 503, "out of memory");
            finish(f, p, O_SENT_LOST);
            continue;
        }
        rq_uuid(p->corr);
        p->deadline_ms = rq_mono_ms() + f->cfg->publish_timeout_ms;
        p->next = f->pending; /* answered by its reply, its return, a timeout or a loss */
        f->pending = p;
        if (publish(f, rk, TYPE_REQUEST, p->corr, 1, body) != 0)
            drop_conn(f, "cannot publish a forwarded request"); /* fails it, with the rest */
        free(body);
    }
}

/* Takes the pending forward with correlation id `corr` off the list, or NULL. */
static pending_t *take_pending(rq_lease_fwd_t *f, amqp_bytes_t corr)
{
    for (pending_t **pp = &f->pending; *pp != NULL; pp = &(*pp)->next) {
        pending_t *p = *pp;
        if (corr.len == strlen(p->corr) && memcmp(corr.bytes, p->corr, corr.len) == 0) {
            *pp = p->next;
            return p;
        }
    }
    return NULL;
}

static void on_reply(rq_lease_fwd_t *f, const amqp_message_t *m)
{
    pending_t *p = take_pending(f, m->properties.correlation_id);
    json_t *o, *st, *res, *rep;

    if (p == NULL)
        return; /* late: its requester gave up */
    o = m->body.len <= BODY_MAX ? json_loadb(m->body.bytes, m->body.len, 0, NULL) : NULL;
    st = json_object_get(o, "status");
    res = json_object_get(o, "result");
    rep = json_object_get(o, "replica");
    if (!json_is_integer(st) || json_integer_value(st) < 200 || json_integer_value(st) > 599 ||
        !json_is_object(res)) {
        set_error(p->job, 503, "the lease's replica sent an undecodable answer");
        json_decref(o);
        finish(f, p, O_BAD);
        return;
    }
    p->job->status = (unsigned)json_integer_value(st);
    json_decref(p->job->result);
    p->job->result = json_incref(res);
    if (json_is_string(rep) && json_string_length(rep) <= RQ_LEASE_REPLICA_LEN)
        snprintf(p->job->replica, sizeof(p->job->replica), "%s", json_string_value(rep));
    json_decref(o);
    finish(f, p, O_SENT_OK);
}

/* 1 when the leases of replica `rid` are gone (its leaser's presence queue is not there), 0
 * when its leaser is still connected (the queue exists, exclusive to that connection: 405),
 * -1 when it cannot be told (our connection is then dropped). */
static int holder_gone(rq_lease_fwd_t *f, const char *rid)
{
    char name[64], err[256];
    amqp_rpc_reply_t r;
    int code = 0;

    snprintf(name, sizeof(name), RQ_LEASE_PRESENCE_FMT, rid);
    amqp_channel_open(f->conn, CH_CHECK);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(f->conn), "channel.open", err, sizeof(err)) != 0)
        goto lost;
    amqp_queue_declare(f->conn, CH_CHECK, amqp_cstring_bytes(name), 1, 0, 1, 1, amqp_empty_table);
    r = amqp_get_rpc_reply(f->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_channel_close(f->conn, CH_CHECK, AMQP_REPLY_SUCCESS); /* ours?! it exists */
        return 0;
    }
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        goto lost;
    code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    amqp_channel_close_ok_t ok = {0};
    if (amqp_send_method(f->conn, CH_CHECK, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
        goto lost;
    return code == AMQP_NOT_FOUND ? 1 : 0; /* 405 RESOURCE_LOCKED: exclusive to a live leaser */

lost:
    drop_conn(f, "cannot check a replica's presence");
    return -1;
}

static void on_return(rq_lease_fwd_t *f, const amqp_message_t *m)
{
    pending_t *p = take_pending(f, m->properties.correlation_id);
    char msg[200], rid[RQ_LEASE_REPLICA_LEN + 1];
    int gone;

    if (p == NULL)
        return;
    /* The request queue lives with the holder's forwarder connection, its leases with its
     * leaser's: only a missing presence queue means the leases went back. */
    snprintf(rid, sizeof(rid), "%.*s", RQ_LEASE_REPLICA_LEN, p->job->lease_id);
    gone = holder_gone(f, rid);
    if (gone != 1) {
        set_error(p->job, 503,
                  "the lease's replica is reconnecting to the broker (it still holds the "
                  "lease); retry");
        finish(f, p, O_SENT_LOST);
        return;
    }
    snprintf(msg, sizeof(msg),
             "the lease's replica %.8s is gone: its leases went back to the queue (the message "
             "will be delivered again)",
             p->job->lease_id);
    set_error(p->job, 409, msg);
    finish(f, p, O_SENT_GONE);
}

static void expire_pending(rq_lease_fwd_t *f)
{
    int64_t now = rq_mono_ms();

    for (pending_t **pp = &f->pending; *pp != NULL;) {
        pending_t *p = *pp;
        if (p->deadline_ms > now) {
            pp = &p->next;
            continue;
        }
        *pp = p->next;
        set_error(p->job, 503,
                  "the lease's replica did not answer in time (the operation may or may not "
                  "have been done); retry");
        finish(f, p, O_SENT_TIMEOUT);
    }
}

/* ---- serving ---- */

/* On the leaser thread: the served request is done; its reply goes out on our thread. */
static void served_done(rq_lease_job_t *job, void *arg)
{
    served_t *s = arg;
    rq_lease_fwd_t *f = s->f;

    (void)job;
    pthread_mutex_lock(&f->mu);
    s->next = f->outbox;
    f->outbox = s;
    pthread_mutex_unlock(&f->mu);
    rq_wakeup_signal(f->wake);
}

/* Copies an AMQP short string into dst; -1 when empty or too long. */
static int copy_bytes(amqp_bytes_t b, char *dst, size_t cap)
{
    if (b.len == 0 || b.len >= cap || memchr(b.bytes, '\0', b.len) != NULL)
        return -1;
    memcpy(dst, b.bytes, b.len);
    dst[b.len] = '\0';
    return 0;
}

static void on_request(rq_lease_fwd_t *f, const amqp_message_t *m)
{
    served_t *s = calloc(1, sizeof(*s));
    const amqp_basic_properties_t *pr = &m->properties;

    if (s == NULL)
        return; /* the requester times out */
    s->f = f;
    if (!(pr->_flags & AMQP_BASIC_REPLY_TO_FLAG) ||
        !(pr->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) ||
        copy_bytes(pr->reply_to, s->reply_to, sizeof(s->reply_to)) != 0 ||
        copy_bytes(pr->correlation_id, s->corr, sizeof(s->corr)) != 0 ||
        rq_lease_fwd_decode(m->body.bytes, m->body.len, &s->job) != 0) {
        rq_series_inc(f->m[O_BAD]);
        free(s);
        return;
    }
    s->job.client_fd = -1;
    s->job.done = served_done;
    s->job.done_arg = s;
    if (rq_leaser_submit(f->leaser, &s->job) != 0)
        served_done(&s->job, s); /* refused: status and result say why */
}

static void send_replies(rq_lease_fwd_t *f, served_t *list)
{
    for (served_t *s = list, *next; s != NULL; s = next) {
        json_t *res = s->job.result != NULL ? json_incref(s->job.result) : json_object();
        json_t *o = json_pack("{si so ss}", "status", (int)s->job.status, "result", res, "replica",
                              s->job.replica);
        char *body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        next = s->next;
        /* Not connected, or out of memory: the requester times out (503, retry). */
        if (f->conn != NULL && body != NULL) {
            if (publish(f, s->reply_to, TYPE_REPLY, s->corr, 0, body) != 0)
                drop_conn(f, "cannot publish a reply");
            else
                rq_series_inc(f->m[O_SERVED]);
        }
        free(body);
        json_decref(o);
        json_decref(s->job.result);
        free(s);
    }
}

/* ---- the loop ---- */

static void on_message(rq_lease_fwd_t *f, const amqp_message_t *m, int returned)
{
    amqp_bytes_t t =
        m->properties._flags & AMQP_BASIC_TYPE_FLAG ? m->properties.type : amqp_empty_bytes;

    if (returned)
        on_return(f, m);
    else if (t.len == strlen(TYPE_REPLY) && memcmp(t.bytes, TYPE_REPLY, t.len) == 0)
        on_reply(f, m);
    else if (t.len == strlen(TYPE_REQUEST) && memcmp(t.bytes, TYPE_REQUEST, t.len) == 0)
        on_request(f, m);
    else
        rq_series_inc(f->m[O_BAD]);
}

/* Reads every frame there is: deliveries (requests, replies), returns, closes. */
static void read_frames(rq_lease_fwd_t *f)
{
    /* At most 256 frames a turn: the replies queued meanwhile go out between two turns (a
     * flood of requests cannot grow the outbox without bound); next_timeout() is 0 while
     * frames wait. */
    for (int n = 0; f->conn != NULL && n < 256; n++) {
        amqp_frame_t fr;
        amqp_message_t m;
        struct timeval tv = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(f->conn, &fr, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            drop_conn(f, amqp_error_string2(rc));
            return;
        }
        if (fr.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (fr.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
            fr.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD ||
            fr.payload.method.id == AMQP_BASIC_CANCEL_METHOD) {
            /* a cancel: our queue was deleted; a new connection declares it again */
            drop_conn(f, "closed by the broker, or our queue deleted");
            return;
        }
        if (fr.payload.method.id != AMQP_BASIC_DELIVER_METHOD &&
            fr.payload.method.id != AMQP_BASIC_RETURN_METHOD)
            continue;
        if (amqp_read_message(f->conn, fr.channel, &m, 0).reply_type != AMQP_RESPONSE_NORMAL) {
            drop_conn(f, "cannot read a message");
            return;
        }
        on_message(f, &m, fr.payload.method.id == AMQP_BASIC_RETURN_METHOD);
        amqp_destroy_message(&m);
    }
    /* Every frame read in this pass is handled: release (librabbitmq skips a channel with
     * frames still queued). Waiting for no data in the buffer would never release under
     * sustained traffic, and a pool keeps the pages it grew to. */
    if (f->conn != NULL)
        amqp_maybe_release_buffers(f->conn);
}

static int next_timeout(const rq_lease_fwd_t *f)
{
    int64_t now = rq_mono_ms(), t = now + 200;

    for (const pending_t *p = f->pending; p != NULL; p = p->next)
        if (p->deadline_ms < t)
            t = p->deadline_ms;
    if (f->conn == NULL && f->next_connect_ms < t)
        t = f->next_connect_ms;
    if (f->conn != NULL && (amqp_frames_enqueued(f->conn) || amqp_data_in_buffer(f->conn)))
        t = now;
    return t <= now ? 0 : (int)(t - now);
}

static void *fwd_main(void *arg)
{
    rq_lease_fwd_t *f = arg;

    rq_thread_name("rq-lease-fwd");
    for (;;) {
        struct pollfd pf[2] = {{.fd = rq_wakeup_fd(f->wake), .events = POLLIN}};
        pending_t *intake;
        served_t *outbox;
        int stop;
        if (f->conn == NULL)
            try_connect(f);
        if (f->conn != NULL)
            pf[1] = (struct pollfd){.fd = amqp_get_sockfd(f->conn), .events = POLLIN};
        poll(pf, f->conn != NULL ? 2 : 1, next_timeout(f));
        rq_wakeup_drain(f->wake);
        read_frames(f);
        pthread_mutex_lock(&f->mu);
        intake = f->intake;
        f->intake = f->intake_tail = NULL;
        outbox = f->outbox;
        f->outbox = NULL;
        stop = f->stopping;
        pthread_mutex_unlock(&f->mu);
        if (stop) {
            fail_list(f, intake, "the producer is stopping");
            send_replies(f, outbox);
            break;
        }
        send_forwards(f, intake);
        send_replies(f, outbox);
        expire_pending(f);
    }
    fail_list(f, f->pending, "the producer is stopping");
    f->pending = NULL;
    if (f->conn != NULL)
        rq_amqp_close(f->conn);
    f->conn = NULL;
    return NULL;
}

/* ---- public ---- */

static void register_metrics(rq_lease_fwd_t *f, rq_metrics_t *metrics)
{
    static const char *const names[2] = {"role", "outcome"};
    static const char *const values[O_COUNT][2] = {
        {"sent", "answered"}, {"sent", "replica_gone"}, {"sent", "timeout"},
        {"sent", "lost"},     {"served", "answered"},   {"received", "undecodable"},
    };
    rq_metric_t *c = rq_metrics_counter(
        metrics, "producer_lease_forwarded_total",
        "Lease operations (ack, nack, extend) forwarded to the replica holding the lease "
        "(role sent) or served for another replica (role served), by outcome.",
        2, names);

    for (int i = 0; i < O_COUNT; i++)
        f->m[i] = rq_metric_series(c, 2, values[i]);
}

rq_lease_fwd_t *rq_lease_fwd_new(const rq_config_t *cfg, rq_leaser_t *leaser, rq_metrics_t *metrics)
{
    rq_lease_fwd_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return NULL;
    f->cfg = cfg;
    f->leaser = leaser;
    pthread_mutex_init(&f->mu, NULL);
    snprintf(f->replica, sizeof(f->replica), "%s", rq_leaser_replica(leaser));
    snprintf(f->self_queue, sizeof(f->self_queue), "%s%s", RQ_LEASE_FWD_PREFIX, f->replica);
    rq_backoff_init(&f->backoff, 100, 5000, 1);
    f->wake = rq_wakeup_new();
    if (f->wake == NULL)
        goto err;
    register_metrics(f, metrics);
    if (pthread_create(&f->thread, NULL, fwd_main, f) != 0)
        goto err;
    f->started = 1;
    return f;

err:
    rq_lease_fwd_free(f);
    return NULL;
}

int rq_lease_fwd_wanted(const rq_lease_fwd_t *f, const rq_lease_job_t *job)
{
    return f != NULL &&
           (job->kind == RQ_LJ_ACK || job->kind == RQ_LJ_NACK || job->kind == RQ_LJ_EXTEND) &&
           rq_lease_id_valid(job->lease_id) &&
           strncmp(job->lease_id, f->replica, RQ_LEASE_REPLICA_LEN) != 0;
}

int rq_lease_fwd_submit(rq_lease_fwd_t *f, rq_lease_job_t *job)
{
    pending_t *p = calloc(1, sizeof(*p));
    const char *why = NULL;

    job->status = 0;
    job->result = NULL;
    snprintf(job->replica, sizeof(job->replica), "%.*s", RQ_LEASE_REPLICA_LEN, job->lease_id);
    pthread_mutex_lock(&f->mu);
    if (p == NULL)
        why = "out of memory";
    else if (f->stopping)
        why = "the producer is stopping";
    else if (!f->connected)
        why = "not connected to the broker (cannot forward to the lease's replica)";
    else if (f->inflight >= MAX_INFLIGHT)
        why = "too many lease operations being forwarded";
    if (why == NULL) {
        p->job = job;
        if (f->intake_tail != NULL)
            f->intake_tail->next = p;
        else
            f->intake = p;
        f->intake_tail = p;
        f->inflight++;
    }
    pthread_mutex_unlock(&f->mu);
    if (why != NULL) {
        free(p);
        rq_series_inc(f->m[O_SENT_LOST]);
        set_error(job, 503, why);
        return -1;
    }
    rq_wakeup_signal(f->wake);
    return 0;
}

void rq_lease_fwd_stop(rq_lease_fwd_t *f)
{
    if (f == NULL || !f->started)
        return;
    pthread_mutex_lock(&f->mu);
    f->stopping = 1;
    pthread_mutex_unlock(&f->mu);
    rq_wakeup_signal(f->wake);
    pthread_join(f->thread, NULL);
    f->started = 0;
}

void rq_lease_fwd_free(rq_lease_fwd_t *f)
{
    if (f == NULL)
        return;
    rq_lease_fwd_stop(f);
    /* Served requests the leaser finished after the thread stopped: never answered. */
    for (served_t *s = f->outbox, *next; s != NULL; s = next) {
        next = s->next;
        json_decref(s->job.result);
        free(s);
    }
    rq_wakeup_free(f->wake);
    pthread_mutex_destroy(&f->mu);
    free(f);
}
