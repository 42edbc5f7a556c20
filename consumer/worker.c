/* worker.c - the consumer loop (see worker.h). */
#include "worker.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "amqp_nodes.h"
#include "amqp_pub.h"
#include "events.h"
#include "handler.h"
#include "log.h"
#include "message.h"
#include "retry.h"
#include "ring.h"
#include "settle.h"
#include "status_event.h"
#include "status_log.h"
#include "trace.h"
#include "util.h"
#include "wire.h"

#define POLL_MS 100          /* how often the stop flag is checked while idle */
#define TICK_MIN_MS 100      /* heartbeat tick (pump): every heartbeat / 4, at least this often */
#define FRAMES_PER_PUMP 1024 /* frames read by one pump() before the loop goes round again */
#define OUTPUT_ERROR_PAUSE_MS 1000      /* before the first retry of a failed output write */
#define OUTPUT_ERROR_PAUSE_MAX_MS 30000 /* the pause doubles up to this (no jitter) */
#define REPLY_CONTENT_TYPE "text/plain; charset=utf-8"
#define CONFIRM_TIMEOUT_MS 10000 /* longest wait for the broker to confirm retry/DLQ copies */
#define COPY_CHANNEL 2           /* confirm-mode channel for retry/DLQ copies (see worker.h) */
/* Room a copy's content header leaves in a frame for the headers the broker adds when it
 * dead-letters the copy back from a delay queue (x-death, x-first-death-*, x-last-death-*):
 * a redelivery whose header outgrew frame_max cannot be read at all (rabbitmq-c: "invalid
 * AMQP data"), a poison loop. */
#define COPY_HEADER_MARGIN 1024
#define STABLE_MS 10000 /* a connection up this long forgets past failures (backoff reset) */

enum { ST_CONNECTING = 0, ST_READY = 1, ST_STOPPING = 2 };

/* Where a delivery is (item_t.state). */
enum {
    IT_FREE = 0, /* the slot holds no delivery */
    IT_PENDING,  /* decoded, waiting for the handler to take it (HANDLER_CONCURRENCY) */
    IT_RUNNING,  /* its handler job runs */
    IT_DONE,     /* finished (or undecodable, or to requeue): waits for its group commit */
};

/* What an acked delivery leaves behind besides the ack. */
enum {
    ROUTE_NONE = 0,        /* processed: output line and reply */
    ROUTE_RETRY,           /* failed: a copy to <q>.retry.(attempt+1) */
    ROUTE_DLQ_FAILED,      /* failed its last attempt: a copy to <q>.dlq */
    ROUTE_DLQ_UNDECODABLE, /* cannot be decoded: a copy to <q>.dlq */
};

typedef struct item {
    amqp_envelope_t env;
    int64_t recv_ns;
    rq_wire_msg_t wire; /* the delivery's properties and headers (borrows env) */
    rq_message_t msg;
    rq_disp_t disp;
    int attempt;   /* x-relayq-attempt of the delivery (0: first) */
    int route;     /* ROUTE_*, meaningful when disp is RQ_DISP_ACK */
    char why[256]; /* failure text for the copy's headers */
    int state;     /* IT_* */
    int in_group;  /* 1 while the commit in progress holds it */
    rq_handler_job_t job;
    char *reply; /* the handler's reply (RQ_HANDLER_OK), reply_len bytes, owned; may be NULL */
    size_t reply_len;
    char *meta; /* owned: the job's NUL-terminated content type, correlation id and source */
} item_t;

struct rq_worker {
    const rq_config_t *cfg;
    rq_output_t *out;
    rq_worker_metrics_t m;

    amqp_connection_state_t conn;
    rq_pubbuf_t *pub;          /* copies, replies and settles of a commit: one send() per burst */
    amqp_bytes_t consumer_tag; /* malloc'd copy */
    int ever_connected;

    /* the handler (handler.h) and the job descriptors it hands back */
    rq_handler_t *handler;
    int own_handler; /* created by rq_worker_new (none was given): freed with the worker */
    rq_handler_job_t **jdone;
    struct pollfd *pfd; /* [0]: the AMQP socket, then the handler's */
    int npfd;
    int64_t tick_ms; /* next heartbeat tick (pump) */

    /* the deliveries held (at most PREFETCH_COUNT: cap slots), free slots, the decoded ones
     * waiting for the handler (FIFO), the finished ones waiting for a commit (done) and the
     * group being committed (grp, in delivery-tag order), with scratch arrays for the commit */
    item_t *items;
    size_t cap;
    size_t n; /* slots in use */
    size_t *freel;
    size_t nfree;
    size_t *pend;
    size_t pend_head, npend;
    item_t **done;
    size_t ndone;
    int64_t done_first_ms; /* when the first of done finished (BATCH_WAIT_MS counts from it) */
    item_t **grp;
    size_t ngrp;
    rq_output_line_t *olines;
    uint64_t *tags;
    rq_disp_t *disps;
    rq_settle_op_t *ops;

    rq_backoff_t backoff;
    int64_t connected_ms; /* when the current connection was made (rq_mono_ms) */

    char *scratch; /* props_fit(): room for one content header */
    size_t scratch_cap;

    /* lifecycle events (rq_worker_set_status): the log (NULL: none) and the events' src */
    rq_status_log_t *slog;
    char src[320];

    /* SIGHUP: reopen the output file and the log (rq_worker_set_reopen) */
    volatile int *reopen_flag;
    void (*reopen_fn)(void *arg);
    void *reopen_arg;

    /* Copies are published on COPY_CHANNEL, in confirm mode: copy k of the connection gets
     * delivery tag k (pub_seq counts them). The copies of the commit in progress are
     * confirmed before their originals are acked on RQ_AMQP_CHANNEL. */
    uint64_t pub_seq;
    uint64_t *copy_tags;      /* delivery tags of the copies of the current commit */
    size_t *copy_item;        /* the group index of each copy's original */
    unsigned char *copy_done; /* its confirm (ack or nack) arrived */
    unsigned char *copy_bad;  /* nacked or returned: its original is requeued, not acked */
    size_t ncopies;
    size_t copies_left;
    int redeclare; /* a copy found no queue: reconnect (declaring the topology) after the group */

    /* every delivery read (pump), in order, until a free slot takes it (intake) */
    rq_ring_t stash; /* of amqp_envelope_t */

    /* shared with rq_worker_ready() */
    atomic_int state;
    pthread_mutex_t lock;
    char last_error[256];
};

static void set_last_error(rq_worker_t *w, const char *text)
{
    size_t len = strnlen(text, sizeof(w->last_error) - 1); /* truncates long texts */

    pthread_mutex_lock(&w->lock);
    memcpy(w->last_error, text, len);
    w->last_error[len] = '\0';
    pthread_mutex_unlock(&w->lock);
}

/* The end of every path that finds the broker connection broken: logs "broker connection
 * lost: " and the text made of fmt, keeps the text for rq_worker_ready() (truncated to
 * last_error) and returns -1, so that callers `return conn_lost(...)`. */
static int conn_lost(rq_worker_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int conn_lost(rq_worker_t *w, const char *fmt, ...)
{
    char text[300];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    rq_warn("broker connection lost: %s", text);
    set_last_error(w, text);
    return -1;
}

/* The trace id of it's message (its traceparent header) on the log lines that follow, or
 * none with NULL: every line about one message carries its trace (log.h). */
static void trace_log(const struct item *it)
{
    if (it != NULL && it->wire.traceparent.state == RQ_WIRE_OK)
        rq_log_set_trace((const char *)it->wire.traceparent.v.bytes + 3, RQ_TRACE_ID_LEN);
    else
        rq_log_set_trace(NULL, 0);
}

static void set_state(rq_worker_t *w, int st)
{
    atomic_store(&w->state, st);
    rq_series_set(w->m.connected, st == ST_READY ? 1 : 0);
}

/* A printable, bounded copy of AMQP bytes for log records. */
static void printable(amqp_bytes_t b, char *out, size_t outlen)
{
    size_t j = 0;
    const unsigned char *s = b.bytes;

    for (size_t i = 0; i < b.len && j + 1 < outlen; i++)
        out[j++] = (s[i] >= 0x20 && s[i] < 0x7f) ? (char)s[i] : '?';
    out[j] = '\0';
}

int rq_worker_metrics_register(rq_worker_metrics_t *wm, rq_metrics_t *reg)
{
    static const double batch_buckets[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000};
    static const char *const reason_label[] = {"reason"};
    static const char *const decode[] = {"decode"};
    static const char *const output[] = {"output"};
    static const char *const failed[] = {"failed"};
    static const char *const undecodable[] = {"undecodable"};
    rq_metric_t *f;

    memset(wm, 0, sizeof(*wm));
#define SIMPLE(field, kind, name, help)                                                            \
    do {                                                                                           \
        f = rq_metrics_##kind(reg, name, help, 0, NULL);                                           \
        if (f == NULL || (wm->field = rq_metric_series(f, 0, NULL)) == NULL)                       \
            return -1;                                                                             \
    } while (0)
#define HIST(field, name, help, buckets, nbuckets)                                                 \
    do {                                                                                           \
        f = rq_metrics_histogram(reg, name, help, 0, NULL, buckets, nbuckets);                     \
        if (f == NULL || (wm->field = rq_metric_series(f, 0, NULL)) == NULL)                       \
            return -1;                                                                             \
    } while (0)

    SIMPLE(consumed, counter, "messages_consumed_total",
           "Messages processed and acknowledged by this consumer.");
    HIST(duration, "message_processing_duration_seconds",
         "Time from delivery to acknowledgement of a processed message (processing_time, "
         "output write and sync, reply), in seconds.",
         rq_metrics_latency_buckets, rq_metrics_latency_buckets_len);
    f = rq_metrics_counter(reg, "message_processing_errors_total",
                           "Processing attempts that failed, by reason (decode: undecodable, "
                           "sent to the DLQ; output: output file error, retried; failed: "
                           "processing failed, retried or dead-lettered).",
                           1, reason_label);
    if (f == NULL || (wm->errors_decode = rq_metric_series(f, 1, decode)) == NULL ||
        (wm->errors_output = rq_metric_series(f, 1, output)) == NULL ||
        (wm->errors_failed = rq_metric_series(f, 1, failed)) == NULL)
        return -1;
    SIMPLE(retries, counter, "consumer_retries_total",
           "Failed attempts sent to a delay queue (<queue>.retry.N) for another attempt.");
    f = rq_metrics_counter(reg, "consumer_dead_lettered_total",
                           "Messages this consumer sent to the dead-letter queue, by reason "
                           "(failed: every attempt failed; undecodable: cannot be parsed).",
                           1, reason_label);
    if (f == NULL || (wm->dead_failed = rq_metric_series(f, 1, failed)) == NULL ||
        (wm->dead_undecodable = rq_metric_series(f, 1, undecodable)) == NULL)
        return -1;
    HIST(consume_latency, "consumer_queue_consume_latency_seconds",
         "Time from publication (" RQ_WIRE_HDR_PUBLISHED_MS
         " header, else the timestamp property) to "
         "delivery to this consumer, in seconds.",
         rq_metrics_latency_buckets, rq_metrics_latency_buckets_len);
    SIMPLE(lines_written, counter, "consumer_lines_written_total",
           "Lines appended (and synced) to OUTPUT_FILE.");
    SIMPLE(duplicates, counter, "consumer_duplicates_skipped_total",
           "Lines not written because OUTPUT_FILE already held them (redeliveries).");
    SIMPLE(replies_sent, counter, "consumer_replies_sent_total",
           "Replies published to reply_to queues.");
    SIMPLE(requeued, counter, "consumer_messages_requeued_total",
           "Deliveries returned to the queue unprocessed (shutdown, output error).");
    HIST(batch_size, "consumer_batch_size", "Deliveries settled per group commit.", batch_buckets,
         sizeof(batch_buckets) / sizeof(batch_buckets[0]));
    HIST(sync_duration, "consumer_output_sync_duration_seconds",
         "Time to write and sync one batch to OUTPUT_FILE, in seconds.", rq_metrics_latency_buckets,
         rq_metrics_latency_buckets_len);
    SIMPLE(connected, gauge, "consumer_broker_connected",
           "1 while connected to the broker and consuming, else 0.");
    SIMPLE(reconnects, counter, "consumer_reconnects_total",
           "Times a lost broker connection was re-established.");
#undef SIMPLE
#undef HIST
    return 0;
}

/* The handler the worker uses: h (borrowed), or one of its own made from the config. */
static int worker_handler(rq_worker_t *w, rq_handler_t *h)
{
    char err[300];

    if (h != NULL) {
        w->handler = h;
        return 0;
    }
    w->handler = rq_handler_new(w->cfg, NULL, err, sizeof(err));
    if (w->handler == NULL) {
        rq_error("%s", err);
        return -1;
    }
    w->own_handler = 1;
    return 0;
}

rq_worker_t *rq_worker_new(const rq_config_t *cfg, rq_output_t *out, rq_handler_t *handler,
                           const rq_worker_metrics_t *wm)
{
    rq_worker_t *w = calloc(1, sizeof(*w));
    size_t cap = cfg->rabbitmq.prefetch > 0 ? (size_t)cfg->rabbitmq.prefetch : 1;
    int conc = cfg->handler_concurrency > 0 ? cfg->handler_concurrency : (int)cap;

    if (w == NULL)
        return NULL;
    w->cfg = cfg;
    rq_ring_init(&w->stash, sizeof(amqp_envelope_t), 16, 0);
    w->out = out;
    if (wm != NULL)
        w->m = *wm;
    w->cap = cap;
    rq_backoff_init(&w->backoff, RQ_RECONNECT_MIN_MS, RQ_RECONNECT_MAX_MS, /*jitter=*/1);
    pthread_mutex_init(&w->lock, NULL);
    atomic_init(&w->state, ST_CONNECTING);
    snprintf(w->last_error, sizeof(w->last_error), "not connected yet");
    w->items = calloc(cap, sizeof(*w->items));
    w->freel = calloc(cap, sizeof(*w->freel));
    w->pend = calloc(cap, sizeof(*w->pend));
    w->done = calloc(cap, sizeof(*w->done));
    w->grp = calloc(cap, sizeof(*w->grp));
    w->jdone = calloc(cap, sizeof(*w->jdone));
    /* a webhook or command job polls a few descriptors: 4 each is plenty */
    w->npfd = 1 + 4 * conc + 8;
    w->pfd = calloc((size_t)w->npfd, sizeof(*w->pfd));
    w->olines = calloc(cap, sizeof(*w->olines));
    w->tags = calloc(cap, sizeof(*w->tags));
    w->disps = calloc(cap, sizeof(*w->disps));
    w->ops = calloc(cap, sizeof(*w->ops));
    w->copy_tags = calloc(cap, sizeof(*w->copy_tags));
    w->copy_item = calloc(cap, sizeof(*w->copy_item));
    w->copy_done = calloc(cap, sizeof(*w->copy_done));
    w->copy_bad = calloc(cap, sizeof(*w->copy_bad));
    if (w->items == NULL || w->olines == NULL || w->tags == NULL || w->disps == NULL ||
        w->ops == NULL || w->copy_tags == NULL || w->copy_item == NULL || w->copy_done == NULL ||
        w->copy_bad == NULL || w->freel == NULL || w->pend == NULL || w->done == NULL ||
        w->grp == NULL || w->jdone == NULL || w->pfd == NULL || worker_handler(w, handler) < 0) {
        rq_worker_free(w);
        return NULL;
    }
    for (size_t i = 0; i < cap; i++)
        w->freel[i] = cap - 1 - i; /* slot 0 is handed out first */
    w->nfree = cap;
    return w;
}

/* Frees the deliveries read and not taken in yet (the broker redelivers them once the
 * connection is gone). */
static void stash_clear(rq_worker_t *w)
{
    while (rq_ring_len(&w->stash) > 0) {
        amqp_destroy_envelope(rq_ring_at(&w->stash, 0));
        rq_ring_pop(&w->stash);
    }
    rq_ring_reset(&w->stash);
}

/* Keeps a delivery read (takes over env). Returns 0, or -1 when out of memory (env is then
 * destroyed). */
static int stash_push(rq_worker_t *w, amqp_envelope_t *env)
{
    amqp_envelope_t *slot = rq_ring_push(&w->stash);

    if (slot == NULL) {
        amqp_destroy_envelope(env);
        return -1;
    }
    *slot = *env;
    return 0;
}

/* Lets go of item `it` (its delivery, message, reply and metadata) and frees its slot. */
static void item_release(rq_worker_t *w, item_t *it)
{
    amqp_destroy_envelope(&it->env);
    rq_message_clear(&it->msg);
    free(it->reply);
    free(it->meta);
    memset(it, 0, sizeof(*it));
    w->freel[w->nfree++] = (size_t)(it - w->items);
    w->n--;
}

/* Lets go of every delivery held, whatever its state (the handler's jobs must have been
 * cancelled): the broker redelivers them once the connection is gone. */
static void release_all(rq_worker_t *w)
{
    if (w->items == NULL || w->freel == NULL)
        return;
    for (size_t i = 0; i < w->cap; i++) {
        if (w->items[i].state != IT_FREE)
            item_release(w, &w->items[i]);
    }
    w->npend = w->pend_head = 0;
    w->ndone = w->ngrp = 0;
}

void rq_worker_free(rq_worker_t *w)
{
    if (w == NULL)
        return;
    if (w->conn != NULL)
        amqp_destroy_connection(w->conn);
    if (w->handler != NULL)
        rq_handler_cancel_all(w->handler);
    release_all(w);
    if (w->own_handler)
        rq_handler_free(w->handler);
    stash_clear(w);
    rq_ring_clear(&w->stash);
    free(w->freel);
    free(w->pend);
    free(w->done);
    free(w->grp);
    free(w->jdone);
    free(w->pfd);
    free(w->copy_tags);
    free(w->copy_item);
    free(w->copy_done);
    free(w->copy_bad);
    amqp_bytes_free(w->consumer_tag);
    free(w->items);
    free(w->olines);
    free(w->tags);
    free(w->disps);
    free(w->ops);
    free(w->scratch);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void rq_worker_set_status(rq_worker_t *w, rq_status_log_t *log)
{
    w->slog = log;
    if (log != NULL)
        rq_cev_src(w->src, sizeof(w->src));
}

/* Appends the lifecycle event `type` of item `it` to the status log (worker.h), fire and
 * forget: without a log nothing; an event that cannot be built or encoded is only logged
 * (debug), one the log drops is counted there. error: retried / dead_lettered (else NULL). */
static void emit(rq_worker_t *w, const item_t *it, rq_sev_type_t type, const char *error)
{
    rq_cev_in_t in = {.type = type,
                      .wire = &it->wire,
                      .msg_id = it->msg.id,
                      .queue = w->cfg->rabbitmq.request_queue,
                      .src = w->src,
                      .ts_ms = rq_wall_ms(),
                      .attempt = it->attempt,
                      .error = error};
    rq_cev_strs_t strs;
    rq_status_event_t ev;
    rq_jbuf_t b;

    if (w->slog == NULL)
        return;
    if (type == RQ_SEV_REPLIED) {
        in.reply = it->reply;
        in.reply_len = it->reply_len;
        in.reply_max =
            (size_t)(w->cfg->rabbitmq.status_reply_max > 0 ? w->cfg->rabbitmq.status_reply_max : 0);
    }
    if (rq_cev_build(&in, &strs, &ev) < 0) {
        rq_debug("delivery %llu: no %s event (no usable message id)",
                 (unsigned long long)it->env.delivery_tag, rq_sev_name(type));
        return;
    }
    rq_jbuf_init(&b, 256 + ev.reply_len + (error != NULL ? strlen(error) : 0));
    if (rq_status_event_encode(&ev, &b) == 0)
        rq_status_log_append(w->slog, b.p, b.len, 0, NULL, NULL);
    else
        rq_debug("message %s: the %s event cannot be encoded", ev.id, rq_sev_name(type));
    rq_jbuf_free(&b);
}

void rq_worker_set_reopen(rq_worker_t *w, volatile int *flag, void (*fn)(void *arg), void *arg)
{
    w->reopen_flag = flag;
    w->reopen_fn = fn;
    w->reopen_arg = arg;
}

int rq_worker_ready(void *arg, char *reason, size_t reasonlen)
{
    rq_worker_t *w = arg;
    int st = atomic_load(&w->state);

    if (st == ST_READY)
        return 1;
    if (reasonlen == 0)
        return 0;
    if (st == ST_STOPPING) {
        snprintf(reason, reasonlen, "shutting down");
    } else {
        pthread_mutex_lock(&w->lock);
        snprintf(reason, reasonlen, "broker not connected: %s", w->last_error);
        pthread_mutex_unlock(&w->lock);
    }
    return 0;
}

/* Forgets a failed connection without talking to the broker: the running jobs are cancelled,
 * every delivery held is let go of, the socket is closed, and the broker requeues every
 * unsettled delivery. */
static void drop_conn(rq_worker_t *w)
{
    rq_handler_cancel_all(w->handler);
    release_all(w);
    rq_pubbuf_free(w->pub);
    w->pub = NULL;
    if (w->conn != NULL)
        amqp_destroy_connection(w->conn);
    w->conn = NULL;
    w->redeclare = 0;
    stash_clear(w);
    amqp_bytes_free(w->consumer_tag);
    w->consumer_tag = amqp_empty_bytes;
    if (atomic_load(&w->state) == ST_READY)
        set_state(w, ST_CONNECTING);
}

/* Opens the connection, declares the topology, sets the prefetch and starts consuming.
 * Returns 0, or -1 with err filled (nothing left open). */
static int connect_broker(rq_worker_t *w, char *err, size_t errlen)
{
    const RabbitMQConfig *rc = &w->cfg->rabbitmq;
    amqp_connection_state_t conn;
    amqp_basic_consume_ok_t *ok;

    conn = rq_amqp_open(rc, err, errlen);
    if (conn == NULL)
        return -1;
    if (rq_amqp_declare_topology(conn, rc, err, errlen) < 0)
        goto err;
    amqp_basic_qos(conn, RQ_AMQP_CHANNEL, /*prefetch_size=*/0, (uint16_t)rc->prefetch,
                   /*global=*/0);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "basic.qos", err, errlen) < 0)
        goto err;
    /* A second channel in confirm mode for the copies: a retry/DLQ copy is known to be stored
     * before its original is acked, and replies (channel 1) need no confirms. */
    amqp_channel_open(conn, COPY_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "channel.open (copies)", err, errlen) < 0)
        goto err;
    amqp_confirm_select(conn, COPY_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "confirm.select", err, errlen) < 0)
        goto err;
    ok = amqp_basic_consume(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(rc->request_queue),
                            amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0,
                            amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "basic.consume", err, errlen) < 0)
        goto err;
    if (ok == NULL) {
        rq_errf(err, errlen, "basic.consume: no consume-ok");
        goto err;
    }
    w->consumer_tag = amqp_bytes_malloc_dup(ok->consumer_tag);
    if (w->consumer_tag.bytes == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto err;
    }
    w->pub = rq_pubbuf_new(conn, !rc->tls, CONFIRM_TIMEOUT_MS);
    if (w->pub == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto err;
    }
    w->conn = conn;
    w->pub_seq = 0;
    return 0;
err:
    amqp_destroy_connection(conn);
    return -1;
}

/* The queue the copy of failed or undecodable item `it` goes to (retry.h). */
static char *copy_queue(const rq_worker_t *w, const item_t *it, char *buf, size_t len)
{
    if (it->route == ROUTE_RETRY)
        return rq_amqp_retry_queue_name(&w->cfg->rabbitmq, it->attempt + 1, buf, len);
    return rq_amqp_dlq_name(&w->cfg->rabbitmq, buf, len);
}

/* A confirm on COPY_CHANNEL (ack, or nack: the broker could not store it) for delivery tag
 * `tag` (and every lower one with `multiple`): marks the copies of the current commit it
 * covers. */
static void note_confirm(rq_worker_t *w, uint64_t tag, int multiple, int acked)
{
    for (size_t k = 0; k < w->ncopies; k++) {
        if (w->copy_done[k] || !(w->copy_tags[k] == tag || (multiple && w->copy_tags[k] < tag)))
            continue;
        w->copy_done[k] = 1;
        w->copies_left--;
        if (!acked) {
            w->copy_bad[k] = 1;
            rq_warn("the broker refused (nacked) the copy of delivery %llu: requeueing it",
                    (unsigned long long)w->grp[w->copy_item[k]]->env.delivery_tag);
        }
    }
}

/* A copy to queue `rk` came back unroutable: the queue is gone (deleted by hand?), so every
 * copy of this commit to it failed (if none matches, every copy is suspect). Their originals
 * are requeued, and the connection is rebuilt after the batch, which declares the topology
 * again. */
static void note_returned(rq_worker_t *w, amqp_bytes_t rk)
{
    char name[300], text[160];
    size_t hits = 0;

    for (size_t k = 0; k < w->ncopies; k++) {
        copy_queue(w, w->grp[w->copy_item[k]], name, sizeof(name));
        if (rk.bytes != NULL && strlen(name) == rk.len && memcmp(name, rk.bytes, rk.len) == 0) {
            w->copy_bad[k] = 1;
            hits++;
        }
    }
    for (size_t k = 0; hits == 0 && k < w->ncopies; k++)
        w->copy_bad[k] = 1;
    printable(rk.bytes != NULL ? rk : amqp_empty_bytes, text, sizeof(text));
    if (!w->redeclare)
        rq_error("a copy to queue %s was returned unroutable (queue deleted?): requeueing its "
                 "message, then reconnecting to declare the topology again",
                 text);
    w->redeclare = 1;
}

/* Reads the content of a basic.deliver method frame `f` into the stash (intake takes it from
 * there). Returns 0 or -1. */
static int stash_delivery(rq_worker_t *w, const amqp_frame_t *f, char *text, size_t textlen)
{
    const amqp_basic_deliver_t *d = f->payload.method.decoded;
    amqp_envelope_t env;
    amqp_rpc_reply_t r;

    memset(&env, 0, sizeof(env));
    env.channel = f->channel;
    env.delivery_tag = d->delivery_tag;
    env.redelivered = d->redelivered;
    env.consumer_tag = amqp_bytes_malloc_dup(d->consumer_tag);
    env.exchange = amqp_bytes_malloc_dup(d->exchange);
    env.routing_key = amqp_bytes_malloc_dup(d->routing_key);
    r = amqp_read_message(w->conn, f->channel, &env.message, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_bytes_free(env.consumer_tag);
        amqp_bytes_free(env.exchange);
        amqp_bytes_free(env.routing_key);
        rq_amqp_check_reply(r, "reading a delivery", text, textlen);
        return -1;
    }
    if (stash_push(w, &env) < 0) {
        snprintf(text, textlen, "out of memory keeping a delivery");
        return -1;
    }
    rq_debug("delivery %llu read (%zu kept)", (unsigned long long)d->delivery_tag,
             rq_ring_len(&w->stash));
    return 0;
}

/* A basic.return method frame `f`: reads the returned message's content and lets go of it;
 * a returned copy marks the copies to its queue (note_returned), a returned reply is only
 * logged. Only copies are published `mandatory` (replies are not): one found no queue. The
 * return comes before the copy's confirm, so the commit waiting for it sees it.
 * Returns 0, or -1 with text filled when the content cannot be read. */
static int handle_return(rq_worker_t *w, const amqp_frame_t *f, char *text, size_t textlen)
{
    const amqp_basic_return_t *ret = f->payload.method.decoded;
    amqp_bytes_t rk = amqp_bytes_malloc_dup(ret->routing_key);
    amqp_message_t msg;
    amqp_rpc_reply_t r;

    /* (the method frame's memory may be reused while the content is read) */
    r = amqp_read_message(w->conn, f->channel, &msg, 0);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        amqp_bytes_free(rk);
        rq_amqp_check_reply(r, "basic.return", text, textlen);
        return -1;
    }
    amqp_destroy_message(&msg);
    if (f->channel == COPY_CHANNEL)
        note_returned(w, rk);
    else
        rq_warn("a reply was returned by the broker (unroutable)");
    amqp_bytes_free(rk);
    return 0;
}

/* Handles one frame read by pump_frames(): deliveries (kept in the stash), confirms,
 * returns, closes, cancels, blocked notices. Returns 0 to carry on, -1 when the connection
 * must go (logged). */
static int handle_frame(rq_worker_t *w, const amqp_frame_t *f)
{
    char text[300];

    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0; /* stray content frame: nothing to do */
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        const amqp_basic_ack_t *m = f->payload.method.decoded;

        if (f->channel == COPY_CHANNEL)
            note_confirm(w, m->delivery_tag, m->multiple, 1);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        const amqp_basic_nack_t *m = f->payload.method.decoded;

        if (f->channel == COPY_CHANNEL)
            note_confirm(w, m->delivery_tag, m->multiple, 0);
        return 0;
    }
    case AMQP_BASIC_DELIVER_METHOD:
        if (stash_delivery(w, f, text, sizeof(text)) < 0)
            goto fail;
        return 0;
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = f->payload.method.decoded;
        amqp_channel_close_ok_t close_ok = {0};
        char msg[200];

        printable(m->reply_text, msg, sizeof(msg));
        snprintf(text, sizeof(text), "channel closed by the broker: %u %s", m->reply_code, msg);
        amqp_send_method(w->conn, f->channel, AMQP_CHANNEL_CLOSE_OK_METHOD, &close_ok);
        goto fail;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f->payload.method.decoded;
        amqp_connection_close_ok_t close_ok = {0};
        char msg[200];

        printable(m->reply_text, msg, sizeof(msg));
        snprintf(text, sizeof(text), "connection closed by the broker: %u %s", m->reply_code, msg);
        amqp_send_method(w->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &close_ok);
        goto fail;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        snprintf(text, sizeof(text), "the broker cancelled the consumer (queue deleted?)");
        goto fail;
    case AMQP_BASIC_RETURN_METHOD:
        if (handle_return(w, f, text, sizeof(text)) < 0)
            goto fail;
        return 0;
    case AMQP_CONNECTION_BLOCKED_METHOD:
        rq_warn("the broker blocked the connection (resource alarm): replies may stall");
        return 0;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        rq_info("the broker unblocked the connection");
        return 0;
    default:
        rq_debug("ignoring AMQP method 0x%08x on channel %u", (unsigned)f->payload.method.id,
                 (unsigned)f->channel);
        return 0;
    }
fail:
    rq_warn("%s", text);
    set_last_error(w, text);
    return -1;
}

/* SIGHUP: when the reopen flag is set, clears it, lets go of a rotated output file (the
 * file at OUTPUT_FILE is used from now on) and calls the reopen hook (the log). */
static void check_reopen(rq_worker_t *w)
{
    if (w->reopen_flag == NULL || !*w->reopen_flag)
        return;
    *w->reopen_flag = 0;
    if (w->out != NULL) {
        int rc = rq_output_reopen(w->out);

        if (rc != 0)
            rq_error("SIGHUP: cannot reopen %s: %s (writing on to the file open)",
                     rq_output_path(w->out), RQ_STRERR(-rc));
    }
    if (w->reopen_fn != NULL)
        w->reopen_fn(w->reopen_arg);
    rq_info("SIGHUP: output file and log reopened");
}

static void fail_attempt(rq_worker_t *w, item_t *it);

/* Item `it` is finished (processed, failed, undecodable or to be requeued: it->disp and
 * it->route say which): it waits in w->done for the next group commit. */
static void mark_done(rq_worker_t *w, item_t *it)
{
    it->state = IT_DONE;
    if (w->ndone == 0)
        w->done_first_ms = rq_mono_ms();
    w->done[w->ndone++] = it;
}

/* Copies the job's strings (content type, correlation id, x-source, traceparent,
 * tracestate) NUL-terminated into it->meta and points the job at them ("" for each one
 * absent). Returns 0, or -1 when out of memory. */
static int build_meta(item_t *it)
{
    const rq_wire_msg_t *wm = &it->wire;
    amqp_bytes_t f[5] = {wm->has_content_type ? wm->content_type : amqp_empty_bytes,
                         wm->has_correlation_id ? wm->correlation_id : amqp_empty_bytes,
                         wm->source.state == RQ_WIRE_OK ? wm->source.v : amqp_empty_bytes,
                         wm->traceparent.state == RQ_WIRE_OK ? wm->traceparent.v : amqp_empty_bytes,
                         wm->tracestate.state == RQ_WIRE_OK ? wm->tracestate.v : amqp_empty_bytes};
    const char **to[5] = {&it->job.content_type, &it->job.correlation_id, &it->job.source,
                          &it->job.traceparent, &it->job.tracestate};
    size_t len = 0;
    char *p;

    for (int k = 0; k < 5; k++)
        len += f[k].len + 1;
    it->meta = malloc(len);
    if (it->meta == NULL)
        return -1;
    p = it->meta;
    for (int k = 0; k < 5; k++) {
        if (f[k].len > 0)
            memcpy(p, f[k].bytes, f[k].len);
        p[f[k].len] = '\0';
        *to[k] = p;
        p += f[k].len + 1;
    }
    return 0;
}

/* Fills the handler job of decoded item `it` (handler.h: the "in" fields): the payload as
 * the client sent it (the webhook's body, the command's stdin) and the output line (echo's
 * reply is "Consumer processed: " and the line, byte for byte as before). Returns 0, or -1
 * when out of memory. */
static int prepare_job(item_t *it)
{
    rq_handler_job_t *j = &it->job;

    memset(j, 0, sizeof(*j));
    if (build_meta(it) < 0)
        return -1;
    j->payload = it->msg.payload != NULL ? it->msg.payload : it->msg.line;
    j->payload_len = it->msg.payload != NULL ? it->msg.payload_len : it->msg.line_len;
    j->line = it->msg.line;
    j->line_len = it->msg.line_len;
    j->message_id = it->msg.id;
    j->attempt = it->attempt;
    j->processing_time = it->msg.processing_time;
    j->fail_times = it->msg.fail_times;
    j->owner = it;
    return 0;
}

/* Decodes item `it` (its delivery just taken in): an undecodable message is done at once
 * (to the DLQ with the reason), one that cannot be decoded for lack of memory too (to be
 * requeued); a decoded one waits for the handler (w->pend). */
static void decode_item(rq_worker_t *w, item_t *it)
{
    rq_msg_input_t in;
    rq_msg_error_t err;
    char mid[128];
    int rc;

    rq_message_input_from_wire(&it->wire, it->env.message.body, &in);
    rc = rq_message_decode(&in, w->cfg->max_processing_time, &it->msg, &err);
    if (rc == 0 && prepare_job(it) == 0) {
        if (it->msg.idem_ignored && rq_log_enabled(RQ_LOG_DEBUG)) {
            trace_log(it);
            rq_debug("message %s: " RQ_WIRE_HDR_IDEM " is not a valid key (an 'S' string of "
                     "1..%d bytes without NUL): deduplicated without it",
                     it->msg.id, RQ_MSG_IDEM_MAX);
            trace_log(NULL);
        }
        emit(w, it, RQ_SEV_DELIVERED, NULL);
        if (it->msg.processing_capped) {
            trace_log(it);
            rq_debug("message %s: processing_time capped at %g s", it->msg.id,
                     it->msg.processing_time);
            trace_log(NULL);
        }
        it->state = IT_PENDING;
        w->pend[(w->pend_head + w->npend) % w->cap] = (size_t)(it - w->items);
        w->npend++;
        return;
    }
    printable(it->wire.has_message_id ? it->wire.message_id : amqp_empty_bytes, mid, sizeof(mid));
    if (rc == 0 || rc == -2) {
        trace_log(it);
        rq_error("out of memory decoding message %s; requeueing it", mid);
        trace_log(NULL);
        it->disp = RQ_DISP_REQUEUE;
    } else {
        /* Straight to the DLQ with the reason in a header (GET /dlq shows it), rather than a
         * reject whose x-death would only say "rejected". */
        trace_log(it);
        rq_warn("dead-lettering undecodable message (delivery %llu, message_id \"%s\"): %s",
                (unsigned long long)it->env.delivery_tag, mid, err.text);
        trace_log(NULL);
        rq_series_inc(w->m.errors_decode);
        snprintf(it->why, sizeof(it->why), "undecodable: %s", err.text);
        it->route = ROUTE_DLQ_UNDECODABLE;
        it->disp = RQ_DISP_ACK;
    }
    mark_done(w, it);
}

/* Takes the delivery env (owned from now on) into a free slot and decodes it. */
static void accept_delivery(rq_worker_t *w, const amqp_envelope_t *env)
{
    item_t *it = &w->items[w->freel[--w->nfree]];
    int64_t pub_ms;

    memset(it, 0, sizeof(*it));
    it->env = *env;
    w->n++;
    /* The one reading of the delivery's headers: everything after uses it->wire. */
    rq_wire_decode(&it->env.message.properties, &it->wire, NULL);
    pub_ms = it->wire.published_ms;
    it->recv_ns = rq_mono_ns();
    it->disp = RQ_DISP_REQUEUE; /* until processed */
    it->route = ROUTE_NONE;
    it->attempt = rq_retry_attempt(&it->wire);
    if (pub_ms > 0) {
        int64_t lag = rq_wall_ms() - pub_ms;

        rq_series_observe(w->m.consume_latency, lag > 0 ? (double)lag / 1000.0 : 0.0);
    }
    decode_item(w, it);
}

/* Moves the deliveries read (the stash) into free slots, in order. There is always a slot:
 * the broker delivers at most PREFETCH_COUNT unsettled messages, as many as the slots. */
static void intake(rq_worker_t *w)
{
    while (rq_ring_len(&w->stash) > 0 && w->nfree > 0) {
        accept_delivery(w, rq_ring_at(&w->stash, 0));
        rq_ring_pop(&w->stash);
    }
}

/* Starts the jobs of the decoded deliveries, in order, as long as the handler takes them
 * (HANDLER_CONCURRENCY; one it cannot take now is tried again on the next round). */
static void start_pending(rq_worker_t *w)
{
    while (w->npend > 0) {
        item_t *it = &w->items[w->pend[w->pend_head]];

        if (rq_handler_start(w->handler, &it->job, rq_mono_ms()) < 0)
            return;
        it->state = IT_RUNNING;
        w->pend_head = (w->pend_head + 1) % w->cap;
        w->npend--;
    }
}

/* A job came back from the handler: maps its outcome to its item's route (OK: output line
 * and reply; RETRY: the delay queues, then the DLQ; REJECT: the DLQ with the reason). */
static void finish_job(rq_worker_t *w, rq_handler_job_t *j)
{
    item_t *it = j->owner;

    it->disp = RQ_DISP_ACK;
    switch (j->outcome) {
    case RQ_HANDLER_OK:
        it->route = ROUTE_NONE;
        it->reply = j->reply;
        it->reply_len = j->reply != NULL ? j->reply_len : 0;
        j->reply = NULL;
        break;
    case RQ_HANDLER_RETRY:
        snprintf(it->why, sizeof(it->why), "%s", j->why[0] ? j->why : "the handler failed");
        fail_attempt(w, it);
        break;
    case RQ_HANDLER_REJECT:
    default:
        rq_series_inc(w->m.errors_failed);
        snprintf(it->why, sizeof(it->why), "rejected: %s", j->why[0] ? j->why : "by the handler");
        it->route = ROUTE_DLQ_FAILED;
        break;
    }
    mark_done(w, it);
}

/* Hands the jobs that finished to finish_job(). */
static void harvest(rq_worker_t *w)
{
    int n = rq_handler_collect(w->handler, rq_mono_ms(), w->jdone, (int)w->cap);

    for (int i = 0; i < n; i++)
        finish_job(w, w->jdone[i]);
}

/* Reads every frame that has arrived (at most FRAMES_PER_PUMP) and handles it (deliveries go
 * to the stash, confirms are noted). `tick`: the first read may wait 1 ms, which lets
 * rabbitmq-c send a heartbeat that is due and notice a heartbeat timeout (it does both
 * inside amqp_simple_wait_frame_noblock when its deadline comes before the caller's).
 * Returns 0, or -1 when the connection failed (logged). */
static int pump_frames(rq_worker_t *w, int tick)
{
    for (int k = 0; k < FRAMES_PER_PUMP; k++) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = tick && k == 0 ? 1000 : 0};
        amqp_frame_t f;
        int rc;

        amqp_maybe_release_buffers(w->conn);
        rc = amqp_simple_wait_frame_noblock(w->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            return 0;
        if (rc != AMQP_STATUS_OK)
            return conn_lost(w, "reading a frame: %s", amqp_error_string2(rc));
        if (handle_frame(w, &f) < 0)
            return -1;
    }
    return 0;
}

/* One wait of the loop: polls the AMQP socket with the handler's descriptors for up to
 * wait_ms (less when the handler or a heartbeat tick needs it; not at all when rabbitmq-c
 * holds frames or bytes already), then reads what arrived (pump_frames) and collects the
 * jobs that finished (harvest). Returns 0, or -1 when the connection failed (logged). */
static int pump(rq_worker_t *w, int wait_ms)
{
    int64_t now = rq_mono_ms();
    int hb = amqp_get_heartbeat(w->conn);
    int buffered = amqp_frames_enqueued(w->conn) || amqp_data_in_buffer(w->conn);
    int tick = hb > 0 && now >= w->tick_ms;
    int hto = -1, nh;

    w->pfd[0].fd = amqp_get_sockfd(w->conn);
    w->pfd[0].events = POLLIN;
    w->pfd[0].revents = 0;
    nh = rq_handler_pollfds(w->handler, w->pfd + 1, w->npfd - 1, now, &hto);
    if (hto >= 0 && hto < wait_ms)
        wait_ms = hto;
    if (hb > 0 && !tick && w->tick_ms - now < wait_ms)
        wait_ms = (int)(w->tick_ms - now);
    if (buffered || tick || wait_ms < 0)
        wait_ms = 0;
    if (poll(w->pfd, (nfds_t)(1 + nh), wait_ms) < 0 && errno != EINTR)
        rq_debug("poll: %s", RQ_STRERR(errno));
    if (buffered || tick || w->pfd[0].revents != 0) {
        if (pump_frames(w, tick) < 0)
            return -1;
    }
    if (tick) {
        int period = hb * 1000 / 4;

        w->tick_ms = rq_mono_ms() + (period > TICK_MIN_MS ? period : TICK_MIN_MS);
    }
    harvest(w);
    return 0;
}

/* Publishes the reply of a processed message (the handler's) to its reply_to queue, if it
 * has one.
 * Returns 1 when sent, 0 when there is no reply_to, -1 on a connection error. */
static int send_reply(rq_worker_t *w, const item_t *it)
{
    const amqp_basic_properties_t *req = &it->env.message.properties;
    amqp_basic_properties_t p;
    amqp_bytes_t body = {.len = it->reply_len, .bytes = it->reply};
    amqp_table_entry_t th[2];
    int rc, nth = 0;

    if (!(req->_flags & AMQP_BASIC_REPLY_TO_FLAG) || req->reply_to.len == 0)
        return 0;
    if (strlen(it->msg.id) > 255) { /* the decoder refuses these (message.h): never reached */
        trace_log(it);
        rq_warn("message %.64s...: no reply, its id does not fit a message_id", it->msg.id);
        trace_log(NULL);
        return 0;
    }
    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_APP_ID_FLAG;
    /* a raw line that is not UTF-8 is not text */
    p.content_type = amqp_cstring_bytes(
        it->reply_len > 0 && !rq_utf8_valid(it->reply, it->reply_len) ? "application/octet-stream"
                                                                      : REPLY_CONTENT_TYPE);
    p.delivery_mode = 1;
    p.message_id = amqp_cstring_bytes(it->msg.id);
    p.timestamp = (uint64_t)(rq_wall_ms() / 1000);
    p.app_id = amqp_cstring_bytes("relayq-consumer");
    if (req->_flags & AMQP_BASIC_CORRELATION_ID_FLAG) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = req->correlation_id;
    }
    /* The reply carries the message's trace context back (trace.h). */
    if (it->wire.traceparent.state == RQ_WIRE_OK) {
        th[nth].key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACEPARENT);
        th[nth].value.kind = AMQP_FIELD_KIND_UTF8;
        th[nth++].value.value.bytes = it->wire.traceparent.v;
        if (it->wire.tracestate.state == RQ_WIRE_OK) {
            th[nth].key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACESTATE);
            th[nth].value.kind = AMQP_FIELD_KIND_UTF8;
            th[nth++].value.value.bytes = it->wire.tracestate.v;
        }
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = nth;
        p.headers.entries = th;
    }
    rc = rq_pubbuf_add(w->pub, RQ_AMQP_CHANNEL, amqp_empty_bytes, req->reply_to, 0, &p, body);
    if (rc != AMQP_STATUS_OK)
        return conn_lost(w, "publishing a reply: %s", amqp_error_string2(rc));
    return 1;
}

/* 1 when properties `p` encode into one content header frame of this connection (short
 * strings at most 255 bytes, the whole within frame_max less COPY_HEADER_MARGIN), 0 when
 * not, -1 when out of memory.
 * Checked before a copy is published: over TLS rabbitmq-c sends the method frame before it
 * finds the header unencodable, and a half-sent message breaks the connection. */
static int props_fit(rq_worker_t *w, const amqp_basic_properties_t *p)
{
    int fm = amqp_get_frame_max(w->conn);
    /* frame overhead 8, class..size 12 */
    size_t room = (fm > 4096 ? (size_t)fm : 4096) - 8 - 12 - COPY_HEADER_MARGIN;
    amqp_bytes_t enc;

    if (w->scratch_cap < room) {
        char *nb = realloc(w->scratch, room);

        if (nb == NULL)
            return -1;
        w->scratch = nb;
        w->scratch_cap = room;
    }
    enc.bytes = w->scratch;
    enc.len = room;
    /* amqp_encode_properties() takes a non-const pointer but does not write through it. */
    return amqp_encode_properties(AMQP_BASIC_CLASS, (void *)(uintptr_t)p, enc) >= 0;
}

/* Builds in *p the properties of the copy of failed or undecodable item `it` (publish_copy),
 * trying in turn: as is; for a retry copy that does not fit, a DLQ copy instead (it->route
 * and it->why change); without the original's headers. The header table is built in
 * entries[0..cap), which *p borrows (as it borrows it->why and the original's properties).
 * Returns 1 when *p fits one content header, 0 when no variant fits, -1 when out of memory. */
static int build_copy(rq_worker_t *w, item_t *it, amqp_table_entry_t *entries, size_t cap,
                      amqp_basic_properties_t *p)
{
    const amqp_basic_properties_t *orig = &it->env.message.properties;
    amqp_basic_properties_t bare;
    amqp_table_entry_t add[3];
    int fit = 0;

    /* stage 0: as is; 1: a retry copy that does not fit goes to the DLQ; 2: without the
     * original's headers */
    for (int stage = 0; stage < 3 && fit == 0; stage++) {
        const amqp_basic_properties_t *src = orig;
        int nadd;

        if (stage == 1) {
            char last[sizeof(it->why)];

            if (it->route != ROUTE_RETRY)
                continue;
            memcpy(last, it->why, sizeof(last));
            snprintf(it->why, sizeof(it->why),
                     "its retry copy cannot be encoded (headers over frame_max?): %s", last);
            it->route = ROUTE_DLQ_FAILED;
        }
        if (stage == 2) {
            bare = *orig;
            bare._flags &= ~(amqp_flags_t)AMQP_BASIC_HEADERS_FLAG;
            bare.headers = amqp_empty_table;
            src = &bare;
        }
        if (it->route == ROUTE_RETRY)
            nadd = rq_wire_retry_headers(it->attempt + 1, it->why, add);
        else
            nadd = rq_wire_dlq_headers(it->why, it->attempt + 1, stage == 2, add);
        if (rq_retry_copy_props(src, add, nadd, entries, cap, p) < 0)
            return -1;
        fit = props_fit(w, p);
    }
    return fit;
}

/* Publishes the copy of failed or undecodable group item i (retry.h): to the next delay
 * queue or to the DLQ, persistent and `mandatory` (an unroutable copy comes back as
 * basic.return), and records its delivery tag so that the commit waits for its confirm.
 * A copy that cannot be encoded is a per-message failure, never the connection's: a retry
 * copy goes to the DLQ instead, a DLQ copy without the original's headers
 * (x-relayq-headers-dropped), and if even that does not fit the original is rejected (the
 * broker dead-letters it). Out of memory requeues the original.
 * Returns 0, or -1 on a connection error (logged). */
static int publish_copy(rq_worker_t *w, size_t i)
{
    item_t *it = w->grp[i];
    const amqp_basic_properties_t *orig = &it->env.message.properties;
    amqp_basic_properties_t p;
    amqp_table_entry_t *entries;
    size_t cap =
        (size_t)3 + ((orig->_flags & AMQP_BASIC_HEADERS_FLAG) && orig->headers.num_entries > 0
                         ? (size_t)orig->headers.num_entries
                         : 0);
    char queue[300];
    int rcode, fit;

    entries = malloc(cap * sizeof(*entries));
    if (entries == NULL)
        goto nomem;
    fit = build_copy(w, it, entries, cap, &p);
    if (fit < 0) {
        free(entries);
        goto nomem;
    }
    if (!fit) {
        free(entries);
        trace_log(it);
        rq_warn("message %s (delivery %llu): no copy of it can be encoded; rejecting it (the "
                "broker dead-letters it): %s",
                it->msg.id != NULL ? it->msg.id : "?", (unsigned long long)it->env.delivery_tag,
                it->why);
        trace_log(NULL);
        it->disp = RQ_DISP_REJECT;
        return 0;
    }
    copy_queue(w, it, queue, sizeof(queue));
    rcode = rq_pubbuf_add(w->pub, COPY_CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, &p,
                          it->env.message.body);
    free(entries);
    if (rcode != AMQP_STATUS_OK)
        return conn_lost(w, "publishing a copy to %s: %s", queue, amqp_error_string2(rcode));
    w->copy_tags[w->ncopies] = ++w->pub_seq;
    w->copy_item[w->ncopies] = i;
    w->copy_done[w->ncopies] = 0;
    w->copy_bad[w->ncopies] = 0;
    w->ncopies++;
    w->copies_left++;
    return 0;
nomem:
    trace_log(it);
    rq_error("out of memory building the copy of delivery %llu: requeueing it",
             (unsigned long long)it->env.delivery_tag);
    trace_log(NULL);
    it->disp = RQ_DISP_REQUEUE;
    return 0;
}

/* Waits until the broker confirmed every copy published by this commit (they are then
 * stored: persistent messages in durable queues), pumping meanwhile (deliveries arriving are
 * kept in the stash, jobs finishing wait in w->done for the next group). The original of a
 * copy that was nacked or returned is set to be requeued instead of acked. Returns 0, or -1
 * when the connection failed or no confirm came within CONFIRM_TIMEOUT_MS (logged): the
 * caller drops the connection, and the originals, not acked, come back. */
static int wait_copies(rq_worker_t *w)
{
    int64_t deadline = rq_mono_ms() + CONFIRM_TIMEOUT_MS;

    while (w->copies_left > 0) {
        int64_t left = deadline - rq_mono_ms();

        if (left <= 0)
            return conn_lost(w,
                             "no publisher confirm for %zu retry/dead-letter copies "
                             "within %d ms",
                             w->copies_left, CONFIRM_TIMEOUT_MS);
        if (pump(w, left < POLL_MS ? (int)left : POLL_MS) < 0)
            return -1;
    }
    for (size_t k = 0; k < w->ncopies; k++) {
        if (w->copy_bad[k])
            w->grp[w->copy_item[k]]->disp = RQ_DISP_REQUEUE;
    }
    return 0;
}

/* Adds the frame of one settle operation to the commit's burst: basic.ack, or basic.nack
 * (several tags) / basic.reject (one) with requeue set for RQ_DISP_REQUEUE. */
static int send_settle(rq_worker_t *w, const rq_settle_op_t *op)
{
    amqp_basic_ack_t ack = {.delivery_tag = op->tag, .multiple = op->multiple ? 1 : 0};
    amqp_basic_nack_t nack = {.delivery_tag = op->tag, .multiple = 1};
    amqp_basic_reject_t rej = {.delivery_tag = op->tag};

    switch (op->disp) {
    case RQ_DISP_ACK:
        return rq_pubbuf_add_method(w->pub, RQ_AMQP_CHANNEL, AMQP_BASIC_ACK_METHOD, &ack);
    case RQ_DISP_REJECT:
    case RQ_DISP_REQUEUE:
        nack.requeue = rej.requeue = op->disp == RQ_DISP_REQUEUE;
        if (op->multiple)
            return rq_pubbuf_add_method(w->pub, RQ_AMQP_CHANNEL, AMQP_BASIC_NACK_METHOD, &nack);
        return rq_pubbuf_add_method(w->pub, RQ_AMQP_CHANNEL, AMQP_BASIC_REJECT_METHOD, &rej);
    }
    return AMQP_STATUS_INVALID_PARAMETER;
}

/* Writes the commit's buffered frames (copies, replies, settles). Returns 0, or -1 on a
 * connection error (logged). */
static int flush_burst(rq_worker_t *w)
{
    int rc = rq_pubbuf_flush(w->pub);

    if (rc == AMQP_STATUS_OK)
        return 0;
    return conn_lost(w, "sending replies and acks: %s", amqp_error_string2(rc));
}

/* 1 when item i was processed (its line goes to the output and its reply is sent). */
static int processed(const item_t *it)
{
    return it->disp == RQ_DISP_ACK && it->route == ROUTE_NONE;
}

/* Counts and logs what a settled commit did with the group. */
static void account(rq_worker_t *w)
{
    const RabbitMQConfig *rc = &w->cfg->rabbitmq;
    int64_t now = rq_mono_ns();

    for (size_t i = 0; i < w->ngrp; i++) {
        const item_t *it = w->grp[i];
        const char *id = it->msg.id != NULL ? it->msg.id : "?";

        if (it->disp != RQ_DISP_ACK)
            continue;
        switch (it->route) {
        case ROUTE_NONE:
            rq_series_inc(w->m.consumed);
            rq_series_observe(w->m.duration, (double)(now - it->recv_ns) / 1e9);
            break;
        case ROUTE_RETRY:
            rq_series_inc(w->m.retries);
            trace_log(it);
            rq_info("message %s: attempt %d failed (%s); retry %d in %lld ms", id, it->attempt + 1,
                    it->why, it->attempt + 1, rq_amqp_retry_delay_ms(rc, it->attempt + 1));
            trace_log(NULL);
            break;
        case ROUTE_DLQ_FAILED:
            rq_series_inc(w->m.dead_failed);
            trace_log(it);
            rq_warn("message %s dead-lettered: %s", id, it->why);
            trace_log(NULL);
            break;
        case ROUTE_DLQ_UNDECODABLE:
            rq_series_inc(w->m.dead_undecodable);
            break;
        }
    }
}

static int hold(rq_worker_t *w, double seconds, volatile int *stop);
static int pump(rq_worker_t *w, int wait_ms);

/* commit() phase 1, copies: publishes (into the burst) the retry/DLQ copy of every failed or
 * undecodable item of the group and records it for commit_settle() to await its confirm. They go
 * first so that the broker stores them while the output is written and synced. A copy that
 * cannot be built changes its item's disp instead (publish_copy). Returns 0, or -1 on a
 * connection error (logged). */
static int commit_copies(rq_worker_t *w)
{
    w->ncopies = w->copies_left = 0;
    for (size_t i = 0; i < w->ngrp; i++) {
        const item_t *it = w->grp[i];

        if (it->disp == RQ_DISP_ACK && it->route != ROUTE_NONE && publish_copy(w, i) < 0)
            return -1;
    }
    return 0;
}

/* Fills w->olines with the output lines of the processed items of the group, in order (the
 * lines borrow the items' messages). Returns how many. */
static size_t output_lines(rq_worker_t *w)
{
    size_t nok = 0;

    for (size_t i = 0; i < w->ngrp; i++) {
        const item_t *it = w->grp[i];
        rq_output_line_t *ol = &w->olines[nok];

        if (!processed(it))
            continue;
        memset(ol, 0, sizeof(*ol));
        ol->data = it->msg.line;
        ol->len = it->msg.line_len;
        /* A tailed line is keyed by its place in the source file (x-file, x-offset, x-end,
         * bounds-checked by the decoder); an API message by its dedup key (message.h: the
         * message_id property, else the body id). A chunk (x-format "lines") is the source
         * bytes [start, end), written verbatim. */
        if (it->msg.tailed) {
            ol->file_id = it->msg.file_id;
            ol->start = it->msg.start;
            ol->end = it->msg.end;
            ol->verbatim = it->msg.verbatim;
        } else {
            ol->msg_id = it->msg.key;
            ol->msg_id_len = it->msg.key_len;
        }
        nok++;
    }
    return nok;
}

/* commit() phase 2, output: appends the lines of the processed items of the group to the
 * output file (one write and one sync; none without an output file or lines). A failed
 * write (disk full, I/O error) is retried here with a pause doubling from
 * OUTPUT_ERROR_PAUSE_MS to OUTPUT_ERROR_PAUSE_MAX_MS (rq_backoff_t), the deliveries held unacked:
 * requeueing them would count against the quorum queue's x-delivery-limit and send them to the DLQ
 * while the disk is full. Only a stop (or a lost connection) gives them back to the broker. Returns
 * 0 when written (or nothing to write), 1 when *stop ended the retries (the processed items are
 * then set to be requeued), -1 on a connection error (logged). */
static int commit_output(rq_worker_t *w, volatile int *stop)
{
    size_t nok = output_lines(w);
    rq_backoff_t backoff;
    double pause;
    int64_t wr, lines = 0;

    if (w->out == NULL || nok == 0)
        return 0;
    rq_backoff_init(&backoff, OUTPUT_ERROR_PAUSE_MS, OUTPUT_ERROR_PAUSE_MAX_MS, /*jitter=*/0);
    for (;;) {
        int64_t t0 = rq_mono_ns();
        int r;

        wr = rq_output_append_batch(w->out, w->olines, nok);
        rq_series_observe(w->m.sync_duration, (double)(rq_mono_ns() - t0) / 1e9);
        if (wr >= 0)
            break;
        rq_series_add(w->m.errors_output, (double)nok);
        pause = rq_backoff_next(&backoff) / 1000.0;
        if (*stop) {
            r = 1;
        } else {
            rq_error("cannot write %zu lines to %s: %s; trying again in %.0f s", nok,
                     rq_output_path(w->out), RQ_STRERR((int)-wr), pause);
            r = hold(w, pause, stop);
        }
        if (r < 0)
            return -1;
        if (r > 0) {
            rq_error("stopping with %zu lines not written to %s: requeueing them", nok,
                     rq_output_path(w->out));
            for (size_t i = 0; i < w->ngrp; i++) {
                if (processed(w->grp[i]))
                    w->grp[i]->disp = RQ_DISP_REQUEUE;
            }
            return 1;
        }
    }
    for (size_t i = 0; i < nok; i++)
        lines += w->olines[i].newlines;
    rq_series_add(w->m.lines_written, (double)lines);
    rq_series_add(w->m.duplicates, (double)(nok - (size_t)wr));
    return 0;
}

/* commit() phase 3, replies: adds to the burst the reply of every processed item of the group
 * that has a reply_to (none for a failed attempt, nor for a message requeued because the
 * output could not be written). Returns 0, or -1 on a connection error (logged). */
static int commit_replies(rq_worker_t *w)
{
    for (size_t i = 0; i < w->ngrp; i++) {
        int r;

        if (!processed(w->grp[i]))
            continue;
        r = send_reply(w, w->grp[i]);
        if (r < 0)
            return -1;
        if (r > 0)
            rq_series_inc(w->m.replies_sent);
    }
    return 0;
}

/* The lowest delivery tag held outside the group being committed (running, waiting, done
 * since, or still in the stash), RQ_SETTLE_NO_OTHER when none: no `multiple` frame of the
 * group's settlement may reach it (settle.h). */
static uint64_t lowest_other(const rq_worker_t *w)
{
    uint64_t low = RQ_SETTLE_NO_OTHER;

    for (size_t i = 0; i < w->cap; i++) {
        const item_t *it = &w->items[i];

        if (it->state != IT_FREE && !it->in_group && it->env.delivery_tag < low)
            low = it->env.delivery_tag;
    }
    for (size_t i = 0; i < rq_ring_len(&w->stash); i++) {
        const amqp_envelope_t *e = rq_ring_at(&w->stash, i);

        if (e->delivery_tag < low)
            low = e->delivery_tag;
    }
    return low;
}

/* The outcome events of the group (worker.h), once final: the output is written and synced,
 * the copies confirmed (a refused copy's original is requeued: no event), the acks not yet
 * sent. */
static void commit_events(rq_worker_t *w)
{
    for (size_t i = 0; w->slog != NULL && i < w->ngrp; i++) {
        const item_t *it = w->grp[i];

        if (it->disp == RQ_DISP_REQUEUE)
            continue;
        if (it->disp == RQ_DISP_ACK && it->route == ROUTE_NONE)
            emit(w, it, RQ_SEV_REPLIED, NULL);
        else if (it->disp == RQ_DISP_ACK && it->route == ROUTE_RETRY)
            emit(w, it, RQ_SEV_RETRIED, it->why);
        else /* to the DLQ (a copy), or rejected: the broker dead-letters it */
            emit(w, it, RQ_SEV_DEAD_LETTERED, it->why);
    }
}

/* commit() phase 4, settle: sends the burst and waits for the confirms of the copies (a
 * nacked or returned copy's original is set to be requeued), then settles the group by each
 * item's disp with the fewest ack/nack/reject frames (settle.h), sends them, and counts
 * and logs the batch (account). Returns 0, or -1 when the connection failed or a copy was
 * not confirmed within CONFIRM_TIMEOUT_MS (logged; nothing of the group is settled then). */
static int commit_settle(rq_worker_t *w)
{
    size_t nreq = 0;
    size_t nops;

    /* Copy confirmed, then ack: a crash anywhere up to here (consumer, connection or broker)
     * leaves the original unacked, so it comes back: a duplicate copy at worst, never a lost
     * message. The copies (and replies) must be on the wire before their confirms are
     * awaited. */
    if (w->ncopies > 0 && (flush_burst(w) < 0 || wait_copies(w) < 0))
        return -1;
    w->ncopies = w->copies_left = 0;

    commit_events(w);
    for (size_t i = 0; i < w->ngrp; i++) {
        w->tags[i] = w->grp[i]->env.delivery_tag;
        w->disps[i] = w->grp[i]->disp;
        if (w->grp[i]->disp == RQ_DISP_REQUEUE)
            nreq++;
    }
    nops = rq_settle_plan(w->tags, w->disps, w->ngrp, lowest_other(w), w->ops);
    for (size_t k = 0; k < nops; k++) {
        int rc = send_settle(w, &w->ops[k]);

        if (rc != AMQP_STATUS_OK)
            return conn_lost(w, "sending %s: %s", rq_disp_name(w->ops[k].disp),
                             amqp_error_string2(rc));
    }
    if (flush_burst(w) < 0)
        return -1;

    account(w);
    rq_series_add(w->m.requeued, (double)nreq);
    rq_series_observe(w->m.batch_size, (double)w->ngrp);
    if (rq_log_enabled(RQ_LOG_DEBUG))
        rq_debug("group settled: %zu deliveries, %zu frames, %zu requeued", w->ngrp, nops, nreq);
    return 0;
}

/* Commits items the group in four phases: copies (commit_copies) → output (commit_output) →
 * replies (commit_replies) → settle (commit_settle: the copies' confirms, then the
 * settlement). After a batch whose output could not be written before a stop, pauses
 * OUTPUT_ERROR_PAUSE_MS (cut short by *stop). Returns 0, or -1 when the connection failed or a
 * copy was not confirmed (the caller drops the connection; unsettled deliveries come back). */
static int commit(rq_worker_t *w, volatile int *stop)
{
    int out;

    if (commit_copies(w) < 0)
        return -1;
    out = commit_output(w, stop);
    if (out < 0 || commit_replies(w) < 0 || commit_settle(w) < 0)
        return -1;
    if (out > 0)
        rq_sleep_interruptible(OUTPUT_ERROR_PAUSE_MS / 1000.0, stop);
    return 0;
}

/* Waits `seconds` while the group's output cannot be written (commit_output), pumping:
 * heartbeats go out, deliveries arriving are kept, jobs that finish meanwhile wait in
 * w->done for the next group, and no job is started. Returns 0 when done, 1 when *stop cut
 * it short, -1 on a connection error. */
static int hold(rq_worker_t *w, double seconds, volatile int *stop)
{
    int64_t end = rq_mono_ms() + (int64_t)(seconds * 1000.0);

    for (;;) {
        int64_t left = end - rq_mono_ms();

        if (*stop)
            return 1;
        if (left <= 0)
            return 0;
        if (pump(w, left < POLL_MS ? (int)left : POLL_MS) < 0)
            return -1;
    }
}

/* Routes a failed attempt (it->why says why): to the next delay queue, or after the last
 * attempt to the DLQ with the reason. */
static void fail_attempt(rq_worker_t *w, item_t *it)
{
    rq_series_inc(w->m.errors_failed);
    if (rq_retry_next_queue(it->attempt, w->cfg->rabbitmq.max_retries) > 0) {
        it->route = ROUTE_RETRY;
    } else {
        char last[sizeof(it->why)];

        memcpy(last, it->why, sizeof(last));
        snprintf(it->why, sizeof(it->why), "processing failed after %d attempts: %s",
                 it->attempt + 1, last);
        it->route = ROUTE_DLQ_FAILED;
    }
}

static int by_tag(const void *a, const void *b)
{
    uint64_t x = (*(item_t *const *)a)->env.delivery_tag;
    uint64_t y = (*(item_t *const *)b)->env.delivery_tag;

    return x < y ? -1 : x > y;
}

/* Commits everything finished since the last commit (w->done) as one group, in
 * delivery-tag order, and frees its slots. Returns 0, or -1 when the connection failed
 * (the caller drops it: nothing of the group is settled, or part of it). */
static int commit_done(rq_worker_t *w, volatile int *stop)
{
    memcpy(w->grp, w->done, w->ndone * sizeof(*w->grp));
    w->ngrp = w->ndone;
    w->ndone = 0;
    qsort(w->grp, w->ngrp, sizeof(*w->grp), by_tag);
    for (size_t i = 0; i < w->ngrp; i++)
        w->grp[i]->in_group = 1;
    if (commit(w, stop) < 0)
        return -1;
    for (size_t i = 0; i < w->ngrp; i++)
        item_release(w, w->grp[i]);
    w->ngrp = 0;
    return 0;
}

/* Stop: the jobs that run are cancelled, and their deliveries, with those not started yet,
 * are set to be requeued (they join the last group, after what had finished). */
static void stop_jobs(rq_worker_t *w)
{
    rq_handler_cancel_all(w->handler);
    for (size_t i = 0; i < w->cap; i++) {
        item_t *it = &w->items[i];

        if (it->state != IT_RUNNING && it->state != IT_PENDING)
            continue;
        trace_log(it);
        rq_info("shutting down: message %s requeued before it was processed", it->msg.id);
        trace_log(NULL);
        it->disp = RQ_DISP_REQUEUE;
        it->route = ROUTE_NONE;
        mark_done(w, it);
    }
    w->npend = w->pend_head = 0;
}

/* The loop of one connection (worker.h): takes the deliveries read in (intake), starts
 * their jobs (start_pending), collects those finished (harvest) and commits them as a group
 * once BATCH_WAIT_MS passed since the first of them finished (at once by default), or when
 * every slot is done; otherwise waits (pump) for the socket, a job or the next deadline,
 * at most POLL_MS (the stop flag and SIGHUP are checked every round). Returns 0 when *stop
 * is set or a copy found no queue (w->redeclare), -1 when the connection failed. */
static int serve(rq_worker_t *w, volatile int *stop)
{
    while (!*stop && !w->redeclare) {
        int wait = POLL_MS;

        check_reopen(w);
        intake(w);
        start_pending(w);
        harvest(w);
        if (w->ndone > 0) {
            int64_t left = w->done_first_ms + w->cfg->batch_wait_ms - rq_mono_ms();

            if (left <= 0 || w->ndone >= w->cap) {
                if (commit_done(w, stop) < 0)
                    return -1;
                continue;
            }
            if (left < wait)
                wait = (int)left;
        }
        if (pump(w, wait) < 0)
            return -1;
    }
    return 0;
}

/* Stops consuming and closes the connection politely. Unsettled deliveries (prefetched
 * after the last batch) are requeued by the broker when the channel closes. */
static void shutdown_conn(rq_worker_t *w)
{
    char err[300];

    struct timeval rpc_timeout = {.tv_sec = 5, .tv_usec = 0};

    if (w->conn == NULL)
        return;
    /* bound the shutdown even when the broker stopped answering */
    amqp_set_rpc_timeout(w->conn, &rpc_timeout);
    amqp_basic_cancel(w->conn, RQ_AMQP_CHANNEL, w->consumer_tag);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(w->conn), "basic.cancel", err, sizeof(err)) < 0) {
        rq_warn("%s", err);
        drop_conn(w);
        return;
    }
    rq_pubbuf_free(w->pub);
    w->pub = NULL;
    rq_amqp_close(w->conn);
    w->conn = NULL;
    amqp_bytes_free(w->consumer_tag);
    w->consumer_tag = amqp_empty_bytes;
}

int rq_worker_run(rq_worker_t *w, volatile int *stop)
{
    const RabbitMQConfig *rc = &w->cfg->rabbitmq;
    int attempt = 0;
    char err[512], node[RQ_AMQP_NODE_HOST_MAX + 16];

    while (!*stop) {
        int r;

        check_reopen(w);
        if (w->conn == NULL) {
            attempt++;
            if (connect_broker(w, err, sizeof(err)) < 0) {
                int delay = rq_backoff_next(&w->backoff);

                set_last_error(w, err);
                rq_warn("broker connection attempt %d to %s:%d failed: %s; retrying in %d ms",
                        attempt, rc->host, rc->port, err, delay);
                rq_sleep_interruptible(delay / 1000.0, stop);
                continue;
            }
            rq_info("consuming from queue %s on %s (prefetch %d, handler %s, batch wait %d ms, "
                    "output %s)%s",
                    rc->request_queue, rq_amqp_node_in_use(node, sizeof(node)), rc->prefetch,
                    rq_handler_kind(w->handler), w->cfg->batch_wait_ms,
                    w->out != NULL ? rq_output_path(w->out) : "none",
                    w->ever_connected ? " after reconnecting" : "");
            if (w->ever_connected)
                rq_series_inc(w->m.reconnects);
            w->ever_connected = 1;
            attempt = 0;
            /* The backoff is reset only once the connection proved stable (below): one that
             * drops right after connecting must not reconnect in a tight loop. */
            w->connected_ms = rq_mono_ms();
            set_state(w, ST_READY);
        }
        r = serve(w, stop);
        if (r == 0 && *stop) {
            /* the jobs running are cancelled (requeued), what finished is committed */
            stop_jobs(w);
            if (w->ndone > 0)
                r = commit_done(w, stop);
        }
        if (r < 0) {
            drop_conn(w);
        } else if (w->redeclare) {
            /* The group is settled; a polite close makes sure the broker applied it (and
             * requeues the rest: jobs running are cancelled, what finished since is let go of)
             * before the new connection declares the topology. */
            w->redeclare = 0;
            rq_handler_cancel_all(w->handler);
            release_all(w);
            rq_amqp_close(w->conn);
            w->conn = NULL;
            drop_conn(w);
        }
        if (w->conn == NULL && !*stop) {
            int64_t up = rq_mono_ms() - w->connected_ms;
            int delay;

            if (up >= STABLE_MS)
                rq_backoff_reset(&w->backoff);
            delay = rq_backoff_next(&w->backoff);
            rq_warn("broker connection lost after %lld ms connected; reconnecting in %d ms",
                    (long long)up, delay);
            rq_sleep_interruptible(delay / 1000.0, stop);
        }
    }
    set_state(w, ST_STOPPING);
    rq_handler_cancel_all(w->handler);
    release_all(w);
    shutdown_conn(w);
    rq_info("consumer stopped");
    return 0;
}
