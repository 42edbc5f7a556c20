/* dlq.c - GET /dlq and POST /dlq/retry on a connection of their own. */
#include "dlq.h"

#include <amqp.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "amqp_conn.h"
#include "publisher.h"
#include "util.h"
#include "wire.h"

/* Messages moved per round of basic.get, confirm wait and basic.ack (multiple). At most 16: a
 * quorum DLQ turns a multiple ack of N basic.get deliveries into N settle commands, and once
 * 32 of them are in flight the broker's channel holds the rest back until earlier ones are
 * applied; a channel closed meanwhile drops them, and those messages, moved already, come back
 * to the DLQ (RabbitMQ 3.10: a multiple ack of 100 left 67 behind, of 40 left 7). 16 stays
 * under that limit even with the previous round's settles still in flight. */
#define RETRY_BATCH 16
/* POST /dlq/retry republishes on a channel of its own in confirm mode. On the channel of the
 * basic.get calls, a confirm arriving while a basic.get waits for its reply would be queued
 * by rabbitmq-c and then read by amqp_read_message() in place of the message's content
 * ("unexpected protocol state"). */
#define PUBLISH_CHANNEL 2

/* Message count of a queue (passive declare). Returns 0 or -1. */
static int queue_depth(amqp_connection_state_t conn, const char *name, size_t *count, char *err,
                       size_t errlen)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(name), /*passive=*/1, /*durable=*/0,
        /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);

    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "queue.declare (passive)", err, errlen))
        return -1;
    *count = ok->message_count;
    return 0;
}

/* Gets one message without acking it. Returns 1 with *msg and *tag filled, 0 when the queue
 * is empty, -1 on error. */
static int get_one(amqp_connection_state_t conn, const char *queue, amqp_message_t *msg,
                   uint64_t *tag, char *err, size_t errlen)
{
    amqp_rpc_reply_t r =
        amqp_basic_get(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(queue), /*no_ack=*/0);

    if (rq_amqp_check_reply(r, "basic.get", err, errlen))
        return -1;
    if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD)
        return 0;
    *tag = ((amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
    r = amqp_read_message(conn, RQ_AMQP_CHANNEL, msg, 0);
    if (rq_amqp_check_reply(r, "reading a dead-lettered message", err, errlen))
        return -1;
    return 1;
}

/* b as a JSON string of at most `cap` bytes, cut back to a UTF-8 boundary (*cut set to 1
 * when it was cut; cut may be NULL), or a placeholder when b is not UTF-8. */
static json_t *bytes_json(amqp_bytes_t b, size_t cap, int *cut)
{
    size_t n = b.len;

    if (!rq_utf8_valid(b.bytes, b.len))
        return json_sprintf("<%zu bytes, not UTF-8>", b.len);
    if (n > cap) {
        const unsigned char *p = b.bytes;
        n = cap;
        while (n > 0 && (p[n] & 0xC0) == 0x80) /* p[n] starts the part left out */
            n--;
        if (cut != NULL)
            *cut = 1;
    }
    return json_stringn(b.bytes, n);
}

/* 1 when the peer of fd has closed the connection (EOF or an error on a peek; data the
 * client sent meanwhile, such as a pipelined request, is left unread). */
static int client_gone(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

enum { GO_ON = 0, OUT_OF_TIME, GIVE_UP };

/* Whether a DLQ call goes on: GO_ON; OUT_OF_TIME past stop->deadline_ns; GIVE_UP (err
 * filled) when cancelled or the client went away. */
static int check_stop(const rq_dlq_stop_t *stop, char *err, size_t errlen)
{
    if (stop == NULL)
        return GO_ON;
    if (stop->cancel != NULL && atomic_load(stop->cancel) != 0) {
        rq_errf(err, errlen, "the producer is stopping");
        return GIVE_UP;
    }
    if (stop->watch_fd && client_gone(stop->client_fd)) {
        rq_errf(err, errlen, "the client went away");
        return GIVE_UP;
    }
    if (stop->deadline_ns != 0 && rq_mono_ns() >= stop->deadline_ns)
        return OUT_OF_TIME;
    return GO_ON;
}

/* The budget of a call in ms, for messages (0 when there is none). */
static long long budget_ms(const rq_dlq_stop_t *stop, int64_t start_ns)
{
    if (stop == NULL || stop->deadline_ns == 0)
        return 0;
    return (long long)((stop->deadline_ns - start_ns) / 1000000);
}

/* {"message_id","reason","attempts","content_type","body"[,"body_bytes","body_truncated"]}
 * for one message. */
static json_t *describe(const amqp_message_t *msg)
{
    rq_wire_msg_t w;
    json_t *o = json_object();
    json_t *reason = NULL;
    long long attempts = -1;
    int cut = 0;

    rq_wire_decode(&msg->properties, &w, NULL);
    if (w.has_message_id)
        json_object_set_new(o, "message_id", bytes_json(w.message_id, 255, NULL));
    /* relayq's own reason and count (the consumer writes an 'S' and an 'l'), else the
     * broker's latest death */
    if (w.reason.state == RQ_WIRE_OK)
        reason = bytes_json(w.reason.v, 1024, NULL);
    if (w.attempts.state == RQ_WIRE_OK && !w.attempts.converted)
        attempts = w.attempts.v;
    if (w.death == RQ_WIRE_OK) {
        if (reason == NULL && w.death_reason.state == RQ_WIRE_OK)
            reason = bytes_json(w.death_reason.v, 1024, NULL);
        if (attempts < 0 && w.death_count.state == RQ_WIRE_OK)
            attempts = w.death_count.v;
    }
    json_object_set_new(o, "reason", reason ? reason : json_string("unknown"));
    if (attempts >= 0)
        json_object_set_new(o, "attempts", json_integer(attempts));
    if (w.has_content_type)
        json_object_set_new(o, "content_type", bytes_json(w.content_type, 255, NULL));
    json_object_set_new(o, "body", bytes_json(msg->body, RQ_DLQ_BODY_MAX_BYTES, &cut));
    if (cut) {
        json_object_set_new(o, "body_bytes", json_integer((json_int_t)msg->body.len));
        json_object_set_new(o, "body_truncated", json_true());
    }
    return o;
}

/* Room kept for the page's fields around "messages" (the queue name is at most 255 bytes). */
#define PAGE_ENVELOPE_BYTES 600

/* 1 when err is the broker's 404 of a passive declare (the queue does not exist). */
static int is_not_found(const char *err)
{
    return strstr(err, "channel closed by broker: 404") != NULL;
}

/* For a per-queue call: queue itself must exist (a passive declare), so that an unknown
 * queue is a 404 rather than an unknown DLQ. Returns 0, or -1 with err and *not_found. */
static int queue_exists(amqp_connection_state_t conn, const char *queue, int *not_found, char *err,
                        size_t errlen)
{
    size_t depth;

    if (queue_depth(conn, queue, &depth, err, errlen) == 0)
        return 0;
    if (not_found != NULL && is_not_found(err)) {
        *not_found = 1;
        rq_errf(err, errlen, "no queue %s", queue);
    }
    return -1;
}

/* The DLQ of `queue` ("<queue>.dlq", once queue is known to exist), or of the default queue
 * (queue NULL), into dlq. Returns 0, or -1 with err (and *not_found) as queue_exists(). */
static int dlq_of(amqp_connection_state_t conn, const RabbitMQConfig *cfg, const char *queue,
                  char *dlq, size_t dlqlen, int *not_found, char *err, size_t errlen)
{
    if (queue == NULL) {
        rq_amqp_dlq_name(cfg, dlq, dlqlen);
        return 0;
    }
    if (queue_exists(conn, queue, not_found, err, errlen) != 0)
        return -1;
    snprintf(dlq, dlqlen, "%s.dlq", queue);
    return 0;
}

/* How long a page waits, at most, for the messages it read to be back in the DLQ, and how
 * long their count may stand still before it stops waiting (another client took some). */
#define RESTORE_WAIT_MS 2000
#define RESTORE_STILL_MS 300

/* Puts back the messages a page read (every delivery up to `last_tag`) and waits until the
 * DLQ holds `count` ready messages again, so that the next call (a POST /dlq/retry right
 * after) finds them. A quorum queue returns the messages of a closed channel only once its
 * log applied the channel's end: a retry sent right after the page's answer found 47 of 50 on
 * a loaded machine. The wait ends at RESTORE_WAIT_MS, when the count stood still for
 * RESTORE_STILL_MS below `count` (messages taken by others meanwhile), or on `stop` (the
 * producer stopping, the client gone); the return happens anyway, the wait only orders it. */
static void restore(amqp_connection_state_t conn, const char *dlq, uint64_t last_tag, size_t count,
                    const rq_dlq_stop_t *stop)
{
    int64_t t0 = rq_mono_ms(), moved = t0;
    size_t now = 0, seen = (size_t)-1;
    char err[256];

    if (last_tag == 0)
        return;
    if (amqp_basic_nack(conn, RQ_AMQP_CHANNEL, last_tag, /*multiple=*/1, /*requeue=*/1) !=
        AMQP_STATUS_OK)
        return;
    while (queue_depth(conn, dlq, &now, err, sizeof(err)) == 0 && now < count) {
        int64_t t = rq_mono_ms();
        if (now != seen) {
            seen = now;
            moved = t;
        }
        if (t - t0 >= RESTORE_WAIT_MS || t - moved >= RESTORE_STILL_MS ||
            check_stop(stop, err, sizeof(err)) == GIVE_UP)
            break;
        rq_sleep_interruptible(0.005, NULL);
    }
}

json_t *rq_dlq_peek(const RabbitMQConfig *cfg, size_t offset, size_t limit, size_t max_bytes,
                    const rq_dlq_stop_t *stop, char *err, size_t errlen)
{
    return rq_dlq_peek_queue(cfg, NULL, offset, limit, max_bytes, stop, NULL, err, errlen);
}

json_t *rq_dlq_peek_queue(const RabbitMQConfig *cfg, const char *queue, size_t offset, size_t limit,
                          size_t max_bytes, const rq_dlq_stop_t *stop, int *not_found, char *err,
                          size_t errlen)
{
    int64_t start_ns = rq_mono_ns();
    amqp_connection_state_t conn = rq_amqp_open(cfg, err, errlen);
    json_t *out = NULL, *list = NULL, *next;
    char dlq[300];
    size_t count = 0, pos = 0, used = PAGE_ENVELOPE_BYTES;
    uint64_t last_tag = 0;
    int truncated = 0, timed_out = 0;

    if (conn == NULL)
        return NULL;
    if (dlq_of(conn, cfg, queue, dlq, sizeof(dlq), not_found, err, errlen) != 0)
        goto out;
    if (queue_depth(conn, dlq, &count, err, errlen) != 0)
        goto out;
    list = json_array();
    if (list == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto out;
    }
    /* Every basic.get stays unacked: the ones before `offset` are read and dropped here, and
     * closing the channel puts all of them back in their places. */
    if (offset >= count) /* past the end: nothing to read */
        pos = count;
    for (; pos < count && pos < offset + limit; pos++) {
        amqp_message_t msg;
        uint64_t tag;
        int rc = check_stop(stop, err, errlen);
        if (rc == GIVE_UP)
            goto out;
        if (rc == OUT_OF_TIME && pos < offset) {
            rq_errf(err, errlen,
                    "the DLQ is read from its head and %zu of the %zu messages before offset "
                    "%zu were read within the time budget (%lld ms): ask for a smaller offset",
                    pos, offset, offset, budget_ms(stop, start_ns));
            goto out;
        }
        if (rc == OUT_OF_TIME && pos > offset) { /* at least one message on the page */
            truncated = timed_out = 1;
            break;
        }
        rc = get_one(conn, dlq, &msg, &tag, err, errlen);
        if (rc < 0)
            goto out;
        if (rc == 0) {
            count = pos; /* emptied meanwhile */
            break;
        }
        last_tag = tag;
        if (pos >= offset) {
            json_t *d = describe(&msg);
            size_t n = d != NULL ? json_dumpb(d, NULL, 0, JSON_COMPACT) : 0;
            if (d == NULL || used + n + 1 > max_bytes) {
                json_decref(d);
                amqp_destroy_message(&msg);
                truncated = 1;
                break;
            }
            used += n + 1;
            json_array_append_new(list, d);
        }
        amqp_destroy_message(&msg);
    }
    /* pos: the first message not on this page */
    if (pos < offset)
        pos = offset;
    next = pos < count ? json_integer((json_int_t)pos) : json_null();
    out = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:o,s:O}", "queue", dlq, "count",
                    (json_int_t)count, "offset", (json_int_t)offset, "limit", (json_int_t)limit,
                    "max_bytes", (json_int_t)max_bytes, "max_body_bytes",
                    (json_int_t)RQ_DLQ_BODY_MAX_BYTES, "truncated", truncated, "timed_out",
                    timed_out, "next_offset", next, "messages", list);
    if (out == NULL)
        rq_errf(err, errlen, "out of memory");
    restore(conn, dlq, last_tag, count, stop);
out:
    json_decref(list);
    /* Closing the channel requeues every unacked message still out (after an error). */
    rq_amqp_close(conn);
    return out;
}

/* Waits for confirms up to `last` (our publish tags start at 1). *confirmed is the highest
 * tag confirmed so far (in order), kept by the caller across batches: a batch's first confirm
 * may be a single ack of *confirmed + 1. Returns 0, or -1 on a nack, a basic.return (the copy
 * was not routed to request_queue) or a closed channel. */
static int wait_confirms(amqp_connection_state_t conn, const char *request_queue,
                         uint64_t *confirmed, uint64_t last, char *err, size_t errlen)
{
    while (*confirmed < last) {
        amqp_frame_t f;
        struct timeval tv = {5, 0};
        int rc = amqp_simple_wait_frame_noblock(conn, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            rq_errf(err, errlen, "waiting for publisher confirms: %s", amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD)
            continue;
        if (f.channel == PUBLISH_CHANNEL && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->multiple || a->delivery_tag == *confirmed + 1)
                *confirmed = a->delivery_tag > *confirmed ? a->delivery_tag : *confirmed;
        } else if (f.channel == PUBLISH_CHANNEL && f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            rq_errf(err, errlen, "the broker nacked a replayed message");
            return -1;
        } else if (f.channel == PUBLISH_CHANNEL &&
                   f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            /* Sent before the copy's ack: the copy went nowhere. Nothing of this batch is
             * acked on the DLQ (closing the channel puts the batch back). */
            rq_errf(err, errlen,
                    "the broker returned a replayed message (no queue %s to route it to): "
                    "the DLQ is unchanged",
                    request_queue);
            return -1;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
                   f.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
            rq_errf(err, errlen, "the broker closed the channel during the replay");
            return -1;
        }
    }
    return 0;
}

int rq_dlq_replay_headers(const amqp_table_t *in, amqp_table_t *out)
{
    int n_in = in != NULL && in->num_entries > 0 ? in->num_entries : 0, n = 0;
    amqp_table_entry_t *kept = malloc(((size_t)n_in + 1) * sizeof(*kept));

    if (kept == NULL)
        return -1;
    for (int i = 0; i < n_in; i++) {
        const amqp_table_entry_t *e = &in->entries[i];
        /* The broker's dead-letter history and relayq's counters go; user headers (even
         * x-firstname or x-last-seen) all stay, and so does the dedup key x-relayq-uid, so
         * that a consumer recognises a message it wrote already. */
        if (rq_wire_dropped_on_copy(e->key))
            continue;
        kept[n++] = *e;
    }
    kept[n++] = rq_wire_replayed_header();
    out->num_entries = n;
    out->entries = kept;
    return 0;
}

/* Republishes one dead-lettered message to the request queue with its relayq attempt
 * counters and the broker's x-death history removed. Returns an amqp_status_enum. */
static int republish(amqp_connection_state_t conn, const char *queue, const amqp_message_t *msg)
{
    amqp_basic_properties_t props = msg->properties;
    amqp_table_t headers;
    int rc;

    if (rq_dlq_replay_headers(props._flags & AMQP_BASIC_HEADERS_FLAG ? &props.headers : NULL,
                              &headers) != 0)
        return AMQP_STATUS_NO_MEMORY;
    props._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    props.headers = headers;
    props.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    props._flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
    /* mandatory: a copy with no queue to go to comes back (basic.return), never "moved" */
    rc = amqp_basic_publish(conn, PUBLISH_CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(queue),
                            /*mandatory=*/1,
                            /*immediate=*/0, &props, msg->body);
    free(headers.entries);
    return rc;
}

long rq_dlq_retry(const RabbitMQConfig *cfg, size_t count, size_t *remaining,
                  const rq_dlq_stop_t *stop, int *partial, char *err, size_t errlen)
{
    return rq_dlq_retry_queue(cfg, NULL, count, remaining, stop, partial, NULL, err, errlen);
}

long rq_dlq_retry_queue(const RabbitMQConfig *cfg, const char *queue, size_t count,
                        size_t *remaining, const rq_dlq_stop_t *stop, int *partial, int *not_found,
                        char *err, size_t errlen)
{
    amqp_connection_state_t conn = rq_amqp_open(cfg, err, errlen);
    const char *target = queue != NULL ? queue : cfg->request_queue;
    char dlq[300];
    size_t depth = 0;
    long moved = -1, done = 0;
    uint64_t published = 0, confirmed = 0;

    if (partial != NULL)
        *partial = 0;
    if (conn == NULL)
        return -1;
    if (dlq_of(conn, cfg, queue, dlq, sizeof(dlq), not_found, err, errlen) != 0)
        goto out;
    if (queue_depth(conn, dlq, &depth, err, errlen) != 0)
        goto out;
    if (count == 0 || count > depth)
        count = depth;
    amqp_channel_open(conn, PUBLISH_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "channel.open", err, errlen))
        goto out;
    amqp_confirm_select(conn, PUBLISH_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "confirm.select", err, errlen))
        goto out;
    while ((size_t)done < count) {
        uint64_t last_get = 0;
        size_t batch = 0;
        int rc = check_stop(stop, err, errlen);
        if (rc == GIVE_UP && done == 0)
            goto out;
        if (rc != GO_ON) { /* what moved so far is confirmed and acked: report it */
            if (partial != NULL)
                *partial = 1;
            break;
        }
        while (batch < RETRY_BATCH && (size_t)done + batch < count) {
            amqp_message_t msg;
            rc = get_one(conn, dlq, &msg, &last_get, err, errlen);
            if (rc < 0)
                goto out;
            if (rc == 0)
                break;
            rc = republish(conn, target, &msg);
            amqp_destroy_message(&msg);
            if (rc != AMQP_STATUS_OK) {
                rq_errf(err, errlen, "basic.publish: %s", amqp_error_string2(rc));
                goto out;
            }
            published++;
            batch++;
        }
        if (batch == 0)
            break;
        /* Confirmed in the request queue: only now remove them from the DLQ. */
        if (wait_confirms(conn, target, &confirmed, published, err, errlen) != 0)
            goto out;
        if (amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_get, /*multiple=*/1) != AMQP_STATUS_OK) {
            rq_errf(err, errlen, "basic.ack on the DLQ failed");
            goto out;
        }
        done += (long)batch;
    }
    moved = done;
    if (queue_depth(conn, dlq, remaining, err, errlen) != 0)
        *remaining = depth - (size_t)done;
out:
    rq_amqp_close(conn);
    return moved;
}

/* ---- the worker thread ---- */

struct rq_dlq_worker {
    const RabbitMQConfig *cfg;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    rq_list_t queue; /* of rq_dlq_job_t (node), FIFO, guarded by lock */
    size_t queued;
    int stopping;      /* guarded by lock */
    int joined;        /* the thread is joined (rq_dlq_worker_stop) */
    atomic_int cancel; /* tells the running job to give up */
};

static void run_job(rq_dlq_worker_t *w, rq_dlq_job_t *job)
{
    rq_dlq_stop_t stop = {&w->cancel, 0, job->watch_fd, job->client_fd};
    size_t remaining = 0;
    int partial = 0;
    long moved;

    /* The budget starts now, not at submit: a job queued behind a slow one still gets all. */
    if (job->budget_ms > 0)
        stop.deadline_ns = rq_mono_ns() + (int64_t)job->budget_ms * 1000000;
    job->result = NULL;
    job->error[0] = '\0';
    job->not_found = 0;
    if (job->kind == RQ_DLQ_RUN) {
        job->run(job, &stop);
        return;
    }
    if (job->kind == RQ_DLQ_PEEK) {
        job->result =
            rq_dlq_peek_queue(w->cfg, job->queue, job->offset, job->limit, RQ_DLQ_PAGE_MAX_BYTES,
                              &stop, &job->not_found, job->error, sizeof(job->error));
    } else {
        moved = rq_dlq_retry_queue(w->cfg, job->queue, job->count, &remaining, &stop, &partial,
                                   &job->not_found, job->error, sizeof(job->error));
        if (moved >= 0)
            job->result =
                json_pack("{s:s,s:I,s:I,s:b}", "status", "success", "moved", (json_int_t)moved,
                          "remaining", (json_int_t)remaining, "partial", partial);
    }
    if (job->result == NULL && job->error[0] == '\0')
        snprintf(job->error, sizeof(job->error), "out of memory");
}

static void *worker_main(void *arg)
{
    rq_dlq_worker_t *w = arg;

    rq_thread_name("rq-dlq");
    pthread_mutex_lock(&w->lock);
    for (;;) {
        rq_dlq_job_t *job;
        while (w->queue.head == NULL && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        if (w->queue.head == NULL)
            break; /* stopping, nothing left */
        job = RQ_LIST_ENTRY(w->queue.head, rq_dlq_job_t, node);
        rq_list_unlink(&w->queue, &job->node);
        w->queued--;
        if (w->stopping) {
            snprintf(job->error, sizeof(job->error), "the producer is stopping");
            job->result = NULL;
            pthread_mutex_unlock(&w->lock);
        } else {
            pthread_mutex_unlock(&w->lock);
            run_job(w, job);
        }
        job->done(job, job->done_arg); /* the job may be freed from here on */
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

rq_dlq_worker_t *rq_dlq_worker_new(const RabbitMQConfig *cfg)
{
    rq_dlq_worker_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->cfg = cfg;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    atomic_init(&w->cancel, 0);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        goto err;
    return w;

err:
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
    return NULL;
}

int rq_dlq_worker_submit(rq_dlq_worker_t *w, rq_dlq_job_t *job)
{
    int rc = -1;

    job->node.prev = job->node.next = NULL;
    job->result = NULL;
    job->error[0] = '\0';
    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        snprintf(job->error, sizeof(job->error), "the producer is stopping");
    } else if (w->queued >= RQ_DLQ_QUEUE_MAX) {
        snprintf(job->error, sizeof(job->error), "%d DLQ requests are waiting already; retry later",
                 RQ_DLQ_QUEUE_MAX);
    } else {
        rq_list_push_back(&w->queue, &job->node);
        w->queued++;
        pthread_cond_signal(&w->wake);
        rc = 0;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void rq_dlq_worker_stop(rq_dlq_worker_t *w)
{
    if (w == NULL || w->joined)
        return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1; /* submit fails from here on */
    atomic_store(&w->cancel, 1);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    /* The thread completes every queued job before it exits (worker_main). */
    pthread_join(w->thread, NULL);
    w->joined = 1;
}

void rq_dlq_worker_free(rq_dlq_worker_t *w)
{
    if (w == NULL)
        return;
    rq_dlq_worker_stop(w);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
