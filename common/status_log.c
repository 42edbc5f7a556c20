/* status_log.c - the status stream (status_log.h): one thread, one AMQP connection per log.
 *
 * Threads: callers hand appends and barriers over through `intake` / `bintake` under `lock`
 * and signal `wake`; everything else (the connection, the queue of unconfirmed events `q`,
 * the barriers, the markers, the reader's position) belongs to the log's thread.
 *
 * Channels: 1 publishes (confirm mode), 2 declares the stream and then consumes it.
 * Invariant of `q` (oldest first): the events published on the current connection (tag > 0)
 * come before those not published yet (tag 0); a new connection republishes from the head.
 */
#include "status_log.h"

#include <amqp.h>
#include <amqp_framing.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "amqp_pub.h"
#include "list.h"
#include "log.h"
#include "util.h"
#include "wakeup.h"

#define CH_PUB 1
#define CH_READ 2
#define BODY_MAX (1024 * 1024)
#define STOP_FLUSH_MS 800             /* rq_status_log_free(): publishing what is queued, at most */
#define CONNECT_MAX_MS 2000           /* the log's connect/RPC bound (stop stays within ~2 s) */
#define PUBLISH_BATCH 256             /* publishes per turn */
#define FRAME_BUDGET 512              /* frames read per turn */
#define INFLIGHT_MAX 2048             /* unconfirmed publishes on the connection, at most */
#define REPLAY_MARGIN_S 2             /* the reader's start by time begins this much earlier */
#define STABLE_NS (10LL * 1000000000) /* a connection up this long resets the backoff */
#define IDLE_ACK_NS (1000LL * 1000000) /* an idle reader acks at most this often */
#define HDR_MARKER "x-relayq-marker"
#define HDR_TS_MS "x-relayq-ts-ms"
#define HDR_WRITER "x-relayq-writer"
#define HDR_OFFSET "x-stream-offset"

typedef struct item {
    rq_list_node_t node;
    void *body;
    size_t len;
    int64_t deadline_ns; /* 0: none */
    int64_t queued_ns;   /* when it was appended (the linger of opts.linger_ms) */
    rq_status_done_fn done;
    void *arg;
    uint64_t tag;                 /* delivery tag on the current connection; 0 unpublished */
    char marker[RQ_UUID_LEN + 1]; /* "": an event; else a marker's token */
    char text[];                  /* an event's body (body points here): one allocation */
} item_t;

typedef struct barrier {
    rq_list_node_t node;
    uint64_t seq; /* registration order */
    int64_t deadline_ns;
    rq_status_done_fn done;
    void *arg;
} barrier_t;

typedef struct marker {
    rq_list_node_t node;
    char token[RQ_UUID_LEN + 1];
    uint64_t covers; /* barriers with seq <= covers pass when it is read back */
} marker_t;

struct rq_status_log {
    rq_status_log_opts_t o;
    RabbitMQConfig rc; /* a copy of *o.rabbitmq with the connect bound */
    char *stream, *service;
    pthread_t thread;
    int started;

    pthread_mutex_t lock;
    rq_list_t intake, bintake; /* items, barriers from callers */
    size_t pend_count, pend_bytes;
    uint64_t barrier_seq;
    int stopping;
    /* The thread waits out a linger (lingering): appends then wake it only when they must not
     * wait (a done callback) or fill a stream message (intake_bytes reaching linger_room), not
     * at every first append after a take, which woke it thousands of times a second. */
    int lingering;
    size_t intake_bytes, linger_room;
    rq_wakeup_t *wake;
    atomic_int up, caught_up;

    /* the thread's own */
    amqp_connection_state_t conn;
    rq_pubbuf_t *pub;
    rq_list_t q, barriers, markers;
    uint64_t next_tag, inflight, covers_max, seq_seen;
    rq_backoff_t backoff;
    int64_t next_attempt_ns, stop_deadline_ns, last_sweep_ns;
    int outage, mismatch_warned, nack_warned, consuming, consumed_once, have_offset;
    int resume_by_ts;     /* after a cancel: the stream may be a new one (offsets from 0) */
    int64_t last_ts_ms;   /* the newest event passed on, its time */
    int64_t connected_ns; /* when the current connection was made */
    int64_t last_ack_ns;  /* the reader's last basic.ack */
    uint64_t last_offset, unacked, last_dtag;
    char *packbuf;                /* opts.pack_max bytes: one stream message of several events */
    char writer[RQ_UUID_LEN + 1]; /* this log's id, on every message it writes */

    rq_series_t *m_appended, *m_dropped, *m_read, *m_up, *m_lag;
};

int64_t rq_status_log_segment_bytes(int64_t max_bytes)
{
    const int64_t lo = 1024 * 1024, hi = 64 * 1024 * 1024;
    int64_t s = max_bytes / 4;

    return s < lo ? lo : s > hi ? hi : s;
}

/* ---- making and freeing ---- */

static int opts_valid(const rq_status_log_opts_t *o)
{
    return o != NULL && o->rabbitmq != NULL && o->stream != NULL && o->stream[0] != '\0' &&
           strlen(o->stream) <= 255 && o->max_age_s > 0 && o->max_bytes > 0 && o->service != NULL &&
           o->max_pending > 0 && o->max_pending_bytes > 0 && o->prefetch >= 0 &&
           o->prefetch <= 65535 && o->replay_from_ms >= 0;
}

static rq_series_t *series(rq_metrics_t *m, int gauge, const char *name, const char *help,
                           const char *service)
{
    static const char *const labels[] = {"service"};
    rq_metric_t *f;

    if (m == NULL)
        return NULL;
    f = gauge ? rq_metrics_gauge(m, name, help, 1, labels)
              : rq_metrics_counter(m, name, help, 1, labels);
    return f != NULL ? rq_metric_series(f, 1, &service) : NULL;
}

static void metrics_setup(rq_status_log_t *l, rq_metrics_t *m)
{
    const char *s = l->service;

    l->m_appended =
        series(m, 0, "status_events_appended_total", "Status events confirmed by the stream", s);
    l->m_dropped = series(m, 0, "status_events_dropped_total",
                          "Status events dropped (buffer full, timeout, stop, nack)", s);
    l->m_read = series(m, 0, "status_events_read_total", "Status events read from the stream", s);
    l->m_up = series(m, 1, "status_stream_up", "1 while connected to the status stream", s);
    if (l->o.on_read != NULL)
        l->m_lag = series(m, 1, "status_stream_lag_seconds",
                          "Now minus the stream timestamp of the newest status event read", s);
}

rq_status_log_t *rq_status_log_new(const rq_status_log_opts_t *opts, rq_metrics_t *m)
{
    rq_status_log_t *l = NULL;

    if (!opts_valid(opts))
        return NULL;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        goto err;
    l->o = *opts;
    l->rc = *opts->rabbitmq;
    if (l->rc.connect_timeout_ms > CONNECT_MAX_MS)
        l->rc.connect_timeout_ms = CONNECT_MAX_MS;
    l->stream = strdup(opts->stream);
    l->service = strdup(opts->service);
    l->wake = rq_wakeup_new();
    if (l->stream == NULL || l->service == NULL || l->wake == NULL)
        goto err;
    l->o.stream = l->stream;
    l->o.service = l->service;
    rq_uuid(l->writer);
    if (l->o.pack_max > 0 && (l->packbuf = malloc(l->o.pack_max + BODY_MAX + 1)) == NULL)
        goto err;
    if (l->o.prefetch == 0)
        l->o.prefetch = 1000;
    pthread_mutex_init(&l->lock, NULL);
    metrics_setup(l, m);
    return l;
err:
    if (l != NULL) {
        rq_wakeup_free(l->wake);
        free(l->service);
        free(l->stream);
        free(l);
    }
    return NULL;
}

/* Finishes an item (unlinked by the caller): its callback, the bounds, the counters. */
static void item_finish(rq_status_log_t *l, item_t *it, int ok)
{
    if (it->marker[0] == '\0') {
        pthread_mutex_lock(&l->lock);
        l->pend_count--;
        l->pend_bytes -= it->len;
        pthread_mutex_unlock(&l->lock);
        rq_series_inc(ok ? l->m_appended : l->m_dropped);
        if (it->done != NULL)
            it->done(it->arg, ok);
    }
    free(it);
}

static void barrier_finish(barrier_t *b, int ok)
{
    if (b->done != NULL)
        b->done(b->arg, ok);
    free(b);
}

/* Fails everything still queued (stop). */
static void fail_all(rq_status_log_t *l)
{
    rq_list_t *lists[] = {&l->q, &l->intake};
    rq_list_t *blists[] = {&l->barriers, &l->bintake};

    for (size_t i = 0; i < 2; i++)
        while (lists[i]->head != NULL) {
            item_t *it = RQ_LIST_ENTRY(lists[i]->head, item_t, node);
            rq_list_unlink(lists[i], &it->node);
            item_finish(l, it, 0);
        }
    for (size_t i = 0; i < 2; i++)
        while (blists[i]->head != NULL) {
            barrier_t *b = RQ_LIST_ENTRY(blists[i]->head, barrier_t, node);
            rq_list_unlink(blists[i], &b->node);
            barrier_finish(b, 0);
        }
    while (l->markers.head != NULL) {
        marker_t *mk = RQ_LIST_ENTRY(l->markers.head, marker_t, node);
        rq_list_unlink(&l->markers, &mk->node);
        free(mk);
    }
}

void rq_status_log_free(rq_status_log_t *log)
{
    if (log == NULL)
        return;
    if (log->started) {
        pthread_mutex_lock(&log->lock);
        log->stopping = 1;
        pthread_mutex_unlock(&log->lock);
        rq_wakeup_signal(log->wake);
        pthread_join(log->thread, NULL);
    }
    fail_all(log);
    pthread_mutex_destroy(&log->lock);
    rq_wakeup_free(log->wake);
    free(log->packbuf);
    free(log->service);
    free(log->stream);
    free(log);
}

/* ---- callers' side ---- */

int rq_status_log_append(rq_status_log_t *log, const void *body, size_t len, int timeout_ms,
                         rq_status_done_fn done, void *arg)
{
    item_t *it = NULL;
    int wake;

    if (len > BODY_MAX)
        goto err;
    if ((it = malloc(sizeof(*it) + (len > 0 ? len : 1))) == NULL)
        goto err;
    memset(it, 0, sizeof(*it));
    it->body = it->text;
    memcpy(it->body, body, len);
    it->len = len;
    it->done = done;
    it->arg = arg;
    it->queued_ns = rq_mono_ns();
    it->deadline_ns = timeout_ms > 0 ? it->queued_ns + (int64_t)timeout_ms * 1000000 : 0;
    pthread_mutex_lock(&log->lock);
    if (log->stopping || log->pend_count >= log->o.max_pending ||
        log->pend_bytes + len > log->o.max_pending_bytes) {
        pthread_mutex_unlock(&log->lock);
        goto err;
    }
    log->pend_count++;
    log->pend_bytes += len;
    log->intake_bytes += len + 1;
    wake = log->intake.head == NULL; /* the first since the thread's last take */
    rq_list_push_back(&log->intake, &it->node);
    if (log->lingering) {
        wake = done != NULL || log->intake_bytes >= log->linger_room;
        log->lingering = !wake;
    }
    pthread_mutex_unlock(&log->lock);
    if (wake)
        rq_wakeup_signal(log->wake);
    return 0;
err:
    rq_series_inc(log->m_dropped);
    free(it);
    return -1;
}

static int barrier_add(rq_status_log_t *log, int timeout_ms, rq_status_done_fn done, void *arg)
{
    barrier_t *b = calloc(1, sizeof(*b));

    if (b == NULL)
        return -1;
    b->done = done;
    b->arg = arg;
    b->deadline_ns = timeout_ms > 0 ? rq_mono_ns() + (int64_t)timeout_ms * 1000000 : 0;
    pthread_mutex_lock(&log->lock);
    b->seq = ++log->barrier_seq;
    rq_list_push_back(&log->bintake, &b->node);
    pthread_mutex_unlock(&log->lock);
    rq_wakeup_signal(log->wake);
    return 0;
}

int rq_status_log_barrier(rq_status_log_t *log, int timeout_ms, rq_status_done_fn done, void *arg)
{
    if (log->o.on_read == NULL)
        return -1;
    return barrier_add(log, timeout_ms, done, arg);
}

int rq_status_log_up(const rq_status_log_t *log)
{
    return atomic_load(&((rq_status_log_t *)log)->up);
}

int rq_status_log_caught_up(const rq_status_log_t *log)
{
    return atomic_load(&((rq_status_log_t *)log)->caught_up);
}

static void caught_up_done(void *arg, int ok)
{
    rq_status_log_t *l = arg;

    if (ok)
        atomic_store(&l->caught_up, 1);
}

/* ---- the thread: intake, deadlines, markers ---- */

/* Moves what callers queued into the thread's lists. Returns the stopping flag. */
static int take_intake(rq_status_log_t *l)
{
    int stopping;

    rq_wakeup_drain(l->wake);
    pthread_mutex_lock(&l->lock);
    while (l->intake.head != NULL) {
        rq_list_node_t *n = l->intake.head;
        rq_list_unlink(&l->intake, n);
        rq_list_push_back(&l->q, n);
    }
    while (l->bintake.head != NULL) {
        rq_list_node_t *n = l->bintake.head;
        rq_list_unlink(&l->bintake, n);
        rq_list_push_back(&l->barriers, n);
    }
    l->seq_seen = l->barrier_seq;
    l->intake_bytes = 0;
    l->lingering = 0;
    stopping = l->stopping;
    pthread_mutex_unlock(&l->lock);
    return stopping;
}

static void sweep_deadlines(rq_status_log_t *l, int64_t now)
{
    for (rq_list_node_t *n = l->q.head, *next; n != NULL; n = next) {
        item_t *it = RQ_LIST_ENTRY(n, item_t, node);
        next = n->next;
        if (it->deadline_ns != 0 && now >= it->deadline_ns) {
            if (it->tag != 0)
                l->inflight--;
            rq_list_unlink(&l->q, n);
            item_finish(l, it, 0);
        }
    }
    for (rq_list_node_t *n = l->barriers.head, *next; n != NULL; n = next) {
        barrier_t *b = RQ_LIST_ENTRY(n, barrier_t, node);
        next = n->next;
        if (b->deadline_ns != 0 && now >= b->deadline_ns) {
            rq_list_unlink(&l->barriers, n);
            barrier_finish(b, 0);
        }
    }
}

/* Queues a marker when a waiting barrier is not covered by one already on its way. */
static void ensure_marker(rq_status_log_t *l)
{
    item_t *it;
    marker_t *mk;

    if (l->barriers.head == NULL || l->seq_seen <= l->covers_max)
        return;
    it = calloc(1, sizeof(*it));
    mk = calloc(1, sizeof(*mk));
    if (it == NULL || mk == NULL) {
        free(it);
        free(mk);
        return;
    }
    rq_uuid(it->marker);
    memcpy(mk->token, it->marker, sizeof(mk->token));
    mk->covers = l->covers_max = l->seq_seen;
    rq_list_push_back(&l->markers, &mk->node);
    rq_list_push_back(&l->q, &it->node);
}

static void forget_marker(rq_status_log_t *l, const char *token)
{
    l->covers_max = 0;
    for (rq_list_node_t *n = l->markers.head, *next; n != NULL; n = next) {
        marker_t *mk = RQ_LIST_ENTRY(n, marker_t, node);
        next = n->next;
        if (strcmp(mk->token, token) == 0) {
            rq_list_unlink(&l->markers, n);
            free(mk);
        } else if (mk->covers > l->covers_max) {
            l->covers_max = mk->covers;
        }
    }
}

/* Our marker `token` was read back: the barriers it covers pass, older markers are moot. */
static void marker_read(rq_status_log_t *l, const char *token)
{
    uint64_t covers = 0;
    int found = 0;

    for (rq_list_node_t *n = l->markers.head; n != NULL; n = n->next) {
        marker_t *mk = RQ_LIST_ENTRY(n, marker_t, node);
        if (strcmp(mk->token, token) == 0) {
            covers = mk->covers;
            found = 1;
        }
    }
    if (!found)
        return; /* another log's marker, or a duplicate */
    for (rq_list_node_t *n = l->markers.head, *next; n != NULL; n = next) {
        marker_t *mk = RQ_LIST_ENTRY(n, marker_t, node);
        next = n->next;
        if (mk->covers <= covers) {
            rq_list_unlink(&l->markers, n);
            free(mk);
        }
    }
    for (rq_list_node_t *n = l->barriers.head, *next; n != NULL; n = next) {
        barrier_t *b = RQ_LIST_ENTRY(n, barrier_t, node);
        next = n->next;
        if (b->seq <= covers) {
            rq_list_unlink(&l->barriers, n);
            barrier_finish(b, 1);
        }
    }
}

/* ---- the thread: the connection ---- */

static void set_up(rq_status_log_t *l, int up)
{
    atomic_store(&l->up, up);
    rq_series_set(l->m_up, up);
}

/* Drops the connection (no polite close: it failed). Unconfirmed events are published again
 * on the next one. One warning per outage. */
static void connection_lost(rq_status_log_t *l, const char *why)
{
    if (!l->outage)
        rq_warn("status stream %s: %s (events are kept, up to %zu, until it is back)", l->stream,
                why, l->o.max_pending);
    else
        rq_debug("status stream %s: %s", l->stream, why);
    l->outage = 1;
    /* A connection that keeps failing soon after it is made (a proxy that cuts it, a node
     * that drops it) backs off like a broker that refuses: only a stable one resets. */
    if (l->connected_ns != 0 && rq_mono_ns() - l->connected_ns >= STABLE_NS)
        rq_backoff_reset(&l->backoff);
    l->connected_ns = 0;
    rq_pubbuf_free(l->pub);
    l->pub = NULL;
    if (l->conn != NULL)
        amqp_destroy_connection(l->conn);
    l->conn = NULL;
    l->consuming = 0;
    l->inflight = 0;
    for (rq_list_node_t *n = l->q.head; n != NULL; n = n->next)
        RQ_LIST_ENTRY(n, item_t, node)->tag = 0;
    set_up(l, 0);
    l->next_attempt_ns = rq_mono_ns() + (int64_t)rq_backoff_next(&l->backoff) * 1000000;
}

/* After a refused declare on CH_READ: answers the broker's channel.close and opens the channel
 * again. Returns the reply code (406...), or -1 when the connection itself failed. */
static int reopen_after_refusal(rq_status_log_t *l, amqp_rpc_reply_t r)
{
    amqp_channel_close_ok_t ok;
    int code;

    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return -1;
    code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    if (amqp_send_method(l->conn, CH_READ, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0)
        return -1;
    amqp_channel_open(l->conn, CH_READ);
    if (amqp_get_rpc_reply(l->conn).reply_type != AMQP_RESPONSE_NORMAL)
        return -1;
    return code;
}

/* Declares the stream on CH_READ (open); a stream with other arguments is used as it is.
 * Returns 0, or -1 with err. */
static int declare_stream(rq_status_log_t *l, char *err, size_t errlen)
{
    amqp_table_entry_t e[4];
    amqp_table_t args;
    amqp_rpc_reply_t r;
    char age[32];
    int code;

    e[0] = rq_amqp_utf8_entry("x-queue-type", "stream");
    snprintf(age, sizeof(age), "%llds", (long long)l->o.max_age_s);
    e[1] = rq_amqp_utf8_entry("x-max-age", age);
    e[2] = rq_amqp_i64_entry("x-max-length-bytes", l->o.max_bytes);
    e[3] = rq_amqp_i64_entry("x-stream-max-segment-size-bytes",
                             rq_status_log_segment_bytes(l->o.max_bytes));
    args.num_entries = 4;
    args.entries = e;
    amqp_queue_declare(l->conn, CH_READ, amqp_cstring_bytes(l->stream), 0, 1, 0, 0, args);
    r = amqp_get_rpc_reply(l->conn);
    if (rq_amqp_check_reply(r, "queue.declare (status stream)", err, errlen) == 0)
        return 0;
    if ((code = reopen_after_refusal(l, r)) != 406)
        return -1;
    if (!l->mismatch_warned)
        rq_warn("status stream %s exists with other arguments (%s): using it as it is", l->stream,
                err);
    l->mismatch_warned = 1;
    amqp_queue_declare(l->conn, CH_READ, amqp_cstring_bytes(l->stream), 1, 0, 0, 0,
                       amqp_empty_table);
    return rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "queue.declare passive (status stream)",
                               err, errlen);
}

/* basic.qos and basic.consume on CH_READ: from the first offset, the replay time, or after
 * the last offset passed on. Returns 0, or -1 with err. */
static int start_consume(rq_status_log_t *l, char *err, size_t errlen)
{
    amqp_table_entry_t e;
    amqp_table_t args = {1, &e};

    amqp_basic_qos(l->conn, CH_READ, 0, (uint16_t)l->o.prefetch, 0);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "basic.qos", err, errlen) != 0)
        return -1;
    if (l->have_offset) {
        e = rq_amqp_i64_entry(HDR_OFFSET, (int64_t)(l->last_offset + 1));
    } else if (l->resume_by_ts) {
        /* a cancelled consumer: the stream may have been deleted and declared again, whose
         * offsets start at 0 again; by time, a little early (readers deduplicate) */
        int64_t t = l->last_ts_ms / 1000 - REPLAY_MARGIN_S;
        e.key = amqp_cstring_bytes(HDR_OFFSET);
        e.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        e.value.value.u64 = (uint64_t)(t > 0 ? t : 0);
    } else if (l->o.replay_from_ms > 0) {
        /* a few seconds early (the broker starts at a chunk's timestamp, and a chunk may
         * begin before the time); handle_message() skips what is older */
        int64_t t = l->o.replay_from_ms / 1000 - REPLAY_MARGIN_S;
        e.key = amqp_cstring_bytes(HDR_OFFSET);
        e.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        e.value.value.u64 = (uint64_t)(t > 0 ? t : 0);
    } else {
        e = rq_amqp_utf8_entry(HDR_OFFSET, "first");
    }
    amqp_basic_consume(l->conn, CH_READ, amqp_cstring_bytes(l->stream), amqp_empty_bytes, 0, 0, 0,
                       args);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "basic.consume", err, errlen) != 0)
        return -1;
    l->consuming = 1;
    l->unacked = 0;
    if (!l->consumed_once) {
        l->consumed_once = 1;
        barrier_add(l, 0, caught_up_done, l); /* the replay is done when its marker is read */
    }
    return 0;
}

/* Connects, declares, selects confirms, consumes. bound_ms > 0 bounds the attempt tighter
 * than l->rc (a stop). Returns 0, or -1 (connection_lost() called). */
static int connect_stream(rq_status_log_t *l, int64_t bound_ms)
{
    RabbitMQConfig rc = l->rc;
    char err[512];

    if (bound_ms > 0 && bound_ms < rc.connect_timeout_ms)
        rc.connect_timeout_ms = bound_ms < 100 ? 100 : (int)bound_ms;
    l->conn = rq_amqp_open(&rc, err, sizeof(err));
    if (l->conn == NULL)
        goto err;
    amqp_channel_open(l->conn, CH_READ);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "channel.open", err, sizeof(err)) != 0 ||
        declare_stream(l, err, sizeof(err)) != 0)
        goto err;
    amqp_confirm_select(l->conn, CH_PUB);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(l->conn), "confirm.select", err, sizeof(err)) != 0)
        goto err;
    if (l->o.on_read != NULL && start_consume(l, err, sizeof(err)) != 0)
        goto err;
    l->pub = rq_pubbuf_new(l->conn, !l->rc.tls, l->rc.connect_timeout_ms);
    if (l->pub == NULL) {
        snprintf(err, sizeof(err), "out of memory");
        goto err;
    }
    l->next_tag = 0;
    l->inflight = 0;
    l->nack_warned = 0;
    l->connected_ns = rq_mono_ns();
    if (l->outage)
        rq_info("status stream %s: connected again", l->stream);
    l->outage = 0;
    set_up(l, 1);
    return 0;
err:
    connection_lost(l, err);
    return -1;
}

/* ---- the thread: publishing and confirms ---- */

static int publish_one(rq_status_log_t *l, item_t *it, amqp_bytes_t body)
{
    amqp_basic_properties_t props;
    amqp_table_entry_t h[3];
    int64_t now_ms = rq_wall_ms();
    int n = 0;

    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
                   AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.content_type = amqp_cstring_bytes("application/json");
    props.delivery_mode = 2;
    props.timestamp = (uint64_t)(now_ms / 1000);
    h[n++] = rq_amqp_i64_entry(HDR_TS_MS, now_ms);
    h[n++] = rq_amqp_utf8_entry(HDR_WRITER, l->writer);
    if (it->marker[0] != '\0')
        h[n++] = rq_amqp_utf8_entry(HDR_MARKER, it->marker);
    props.headers.num_entries = n;
    props.headers.entries = h;
    return rq_pubbuf_add(l->pub, CH_PUB, amqp_empty_bytes, amqp_cstring_bytes(l->stream), 1, &props,
                         body);
}

/* The events from n on that one stream message carries (opts.pack_max): their bodies
 * joined by '\n' into l->packbuf, up to pack_max bytes (at least one event). Sets *last to
 * the last node packed. Returns the message body. */
static amqp_bytes_t pack_events(rq_status_log_t *l, rq_list_node_t *n, rq_list_node_t **last)
{
    item_t *it = RQ_LIST_ENTRY(n, item_t, node);
    size_t len = 0;

    *last = n;
    if (it->marker[0] != '\0' || l->o.pack_max == 0 || n->next == NULL ||
        RQ_LIST_ENTRY(n->next, item_t, node)->marker[0] != '\0' || l->packbuf == NULL)
        return (amqp_bytes_t){it->len, it->body};
    for (rq_list_node_t *m = n; m != NULL; m = m->next) {
        item_t *x = RQ_LIST_ENTRY(m, item_t, node);
        size_t add = x->len + (len > 0);
        if (x->marker[0] != '\0' || (len > 0 && len + add > l->o.pack_max))
            break;
        if (len > 0)
            l->packbuf[len] = '\n';
        memcpy(l->packbuf + len + (len > 0), x->body, x->len);
        len += add;
        *last = m;
    }
    return (amqp_bytes_t){len, l->packbuf};
}

/* Publishes what is not published yet (a batch; several events per message with
 * opts.pack_max). Returns 1 when something was sent, 0 when nothing, -1 when the connection
 * was lost. */
/* With opts.linger_ms: how long to wait before publishing what is queued (0: now), so that
 * more events share a stream message. Never for a marker or an event someone waits on (a
 * done callback), nor once a message's worth is queued, nor once the thread saw a stop (it
 * publishes what is queued within STOP_FLUSH_MS; lingering would spin to that bound). */
static int64_t linger_left_ns(const rq_status_log_t *l, size_t *room)
{
    const item_t *first = NULL;
    size_t bytes = 0;

    if (l->o.linger_ms <= 0 || l->o.pack_max == 0 || l->stop_deadline_ns != 0)
        return 0;
    for (rq_list_node_t *n = l->q.head; n != NULL; n = n->next) {
        const item_t *it = RQ_LIST_ENTRY(n, item_t, node);
        if (it->tag != 0)
            continue;
        if (it->marker[0] != '\0' || it->done != NULL)
            return 0;
        if (first == NULL)
            first = it;
        if ((bytes += it->len + 1) >= l->o.pack_max)
            return 0;
    }
    if (first == NULL)
        return 0;
    if (room != NULL)
        *room = l->o.pack_max - bytes;
    int64_t left = first->queued_ns + (int64_t)l->o.linger_ms * 1000000 - rq_mono_ns();
    return left > 0 ? left : 0;
}

static int publish_ready(rq_status_log_t *l)
{
    int sent = 0, rc;
    char why[160];

    if (linger_left_ns(l, NULL) > 0)
        return 0;

    for (rq_list_node_t *n = l->q.head; n != NULL && sent < PUBLISH_BATCH; n = n->next) {
        item_t *it = RQ_LIST_ENTRY(n, item_t, node);
        rq_list_node_t *last;
        amqp_bytes_t body;
        if (it->tag != 0)
            continue;
        if (l->inflight >= INFLIGHT_MAX)
            break;
        body = pack_events(l, n, &last);
        if ((rc = publish_one(l, it, body)) != AMQP_STATUS_OK)
            goto err;
        /* rq_pubbuf_add() copied the body: the pack buffer is free again */
        ++l->next_tag;
        for (rq_list_node_t *m = n;; m = m->next) {
            RQ_LIST_ENTRY(m, item_t, node)->tag = l->next_tag;
            l->inflight++;
            if (m == last)
                break;
        }
        n = last;
        sent++;
    }
    if (sent > 0 && (rc = rq_pubbuf_flush(l->pub)) != AMQP_STATUS_OK)
        goto err;
    return sent > 0;
err:
    snprintf(why, sizeof(why), "publishing: %s", amqp_error_string2(rc));
    connection_lost(l, why);
    return -1;
}

static void handle_confirm(rq_status_log_t *l, uint64_t tag, int multiple, int ok)
{
    for (rq_list_node_t *n = l->q.head, *next; n != NULL; n = next) {
        item_t *it = RQ_LIST_ENTRY(n, item_t, node);
        next = n->next;
        if (it->tag == 0 || it->tag > tag)
            break; /* the published ones come first, in tag order */
        if (!multiple && it->tag != tag)
            continue;
        rq_list_unlink(&l->q, n);
        l->inflight--;
        if (!ok && it->marker[0] != '\0')
            forget_marker(l, it->marker); /* a newer marker is made for its barriers */
        if (!ok && !l->nack_warned)
            rq_warn("status stream %s: the broker refused an event (nack; not repeated on this "
                    "connection)",
                    l->stream);
        l->nack_warned |= !ok;
        item_finish(l, it, ok);
    }
}

/* ---- the thread: reading ---- */

static int header_i64(const amqp_basic_properties_t *p, const char *key, int64_t *out)
{
    const amqp_field_value_t *v = rq_amqp_header(p, key);

    if (v == NULL)
        return -1;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return 0;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
        *out = (int64_t)v->value.u64;
        return 0;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return 0;
    default:
        return -1;
    }
}

/* One delivery: skipped when already passed on (a chunk resent from its start) or older than
 * the replay time; a marker is never passed on. */
static void handle_message(rq_status_log_t *l, amqp_message_t *msg)
{
    const amqp_basic_properties_t *p = &msg->properties;
    const amqp_field_value_t *mk = rq_amqp_header(p, HDR_MARKER);
    int64_t off = -1, ts_ms = 0;

    header_i64(p, HDR_OFFSET, &off);
    if (off >= 0 && l->have_offset && (uint64_t)off <= l->last_offset)
        return;
    if (header_i64(p, HDR_TS_MS, &ts_ms) != 0)
        ts_ms = (p->_flags & AMQP_BASIC_TIMESTAMP_FLAG) ? (int64_t)p->timestamp * 1000 : 0;
    if (off >= 0) {
        l->last_offset = (uint64_t)off;
        l->have_offset = 1;
        l->resume_by_ts = 0;
    }
    if (ts_ms > 0) {
        rq_series_set(l->m_lag, (double)(rq_wall_ms() - ts_ms) / 1000.0);
        if (ts_ms > l->last_ts_ms)
            l->last_ts_ms = ts_ms;
    }
    if (mk != NULL) {
        if (mk->kind == AMQP_FIELD_KIND_UTF8 && mk->value.bytes.len == RQ_UUID_LEN) {
            char token[RQ_UUID_LEN + 1];
            memcpy(token, mk->value.bytes.bytes, RQ_UUID_LEN);
            token[RQ_UUID_LEN] = '\0';
            marker_read(l, token);
        }
        return;
    }
    if (l->o.replay_from_ms > 0 && ts_ms > 0 && ts_ms < l->o.replay_from_ms)
        return;
    if (l->o.skip_own) {
        const amqp_field_value_t *w = rq_amqp_header(p, HDR_WRITER);
        if (w != NULL && w->kind == AMQP_FIELD_KIND_UTF8 && w->value.bytes.len == RQ_UUID_LEN &&
            memcmp(w->value.bytes.bytes, l->writer, RQ_UUID_LEN) == 0)
            return; /* this process wrote it: its reader knows it already */
    }
    rq_series_inc(l->m_read);
    l->o.on_read(msg->body.bytes, msg->body.len, off >= 0 ? (uint64_t)off : 0, ts_ms,
                 l->o.read_arg);
}

static int handle_delivery(rq_status_log_t *l, amqp_frame_t *f)
{
    amqp_basic_deliver_t *d = f->payload.method.decoded;
    uint64_t dtag = d->delivery_tag;
    amqp_message_t msg;
    char why[300];

    if (rq_amqp_check_reply(amqp_read_message(l->conn, f->channel, &msg, 0), "reading the stream",
                            why, sizeof(why)) != 0) {
        connection_lost(l, why);
        return -1;
    }
    handle_message(l, &msg);
    amqp_destroy_message(&msg);
    l->last_dtag = dtag;
    if (++l->unacked >= (uint64_t)(l->o.prefetch / 2 > 0 ? l->o.prefetch / 2 : 1)) {
        if (amqp_basic_ack(l->conn, CH_READ, dtag, 1) != 0) {
            connection_lost(l, "acking the stream's deliveries");
            return -1;
        }
        l->unacked = 0;
        l->last_ack_ns = rq_mono_ns();
    }
    return 0;
}

/* Handles one frame. Returns 0, or -1 when the connection was lost. */
static int handle_frame(rq_status_log_t *l, amqp_frame_t *f)
{
    char why[300];

    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0;
    switch (f->payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f->payload.method.decoded;
        handle_confirm(l, a->delivery_tag, a->multiple, 1);
        return 0;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *a = f->payload.method.decoded;
        handle_confirm(l, a->delivery_tag, a->multiple, 0);
        return 0;
    }
    case AMQP_BASIC_DELIVER_METHOD:
        return handle_delivery(l, f);
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = f->payload.method.decoded;
        snprintf(why, sizeof(why), "channel closed by the broker: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (char *)c->reply_text.bytes);
        break;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *c = f->payload.method.decoded;
        snprintf(why, sizeof(why), "connection closed by the broker: %u %.*s", c->reply_code,
                 (int)c->reply_text.len, (char *)c->reply_text.bytes);
        break;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        /* The stream was deleted (or its leader moved): resume by time, not by offset. */
        snprintf(why, sizeof(why), "the broker cancelled the stream's consumer");
        if (l->have_offset || l->consumed_once) {
            l->have_offset = 0;
            l->resume_by_ts = 1;
        }
        break;
    case AMQP_BASIC_RETURN_METHOD:
        /* mandatory: no stream to route to (deleted): declare it again, publish again */
        snprintf(why, sizeof(why), "an event came back unroutable (the stream is gone)");
        break;
    default:
        return 0;
    }
    connection_lost(l, why);
    return -1;
}

/* Reads frames until none is waiting (or the budget). Returns 0, or -1 when lost. */
static int drain_frames(rq_status_log_t *l)
{
    for (int n = 0; n < FRAME_BUDGET; n++) {
        amqp_frame_t f;
        struct timeval tv = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(l->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            connection_lost(l, amqp_error_string2(rc));
            return -1;
        }
        if (handle_frame(l, &f) != 0)
            return -1;
        /* Nothing refers to the frame (or the message read after it) any more: give its
         * channel's pool back now. Releasing only once no data waits, as before, never
         * happens while a long stream is replayed, and librabbitmq keeps a pool's pages: a
         * restarted producer grew by the size of the stream. */
        amqp_maybe_release_buffers_on_channel(l->conn, f.channel);
    }
    /* Idle: ack what was read, at most once a second. Acking each delivery as it comes would
     * keep the consumer's credit low, and a stream then reads its chunk again for every
     * message (the broker's CPU per event grew several times over). */
    if (l->consuming && l->unacked > 0 && !amqp_data_in_buffer(l->conn) &&
        !amqp_frames_enqueued(l->conn) && rq_mono_ns() - l->last_ack_ns >= IDLE_ACK_NS) {
        if (amqp_basic_ack(l->conn, CH_READ, l->last_dtag, 1) != 0) {
            connection_lost(l, "acking the stream's deliveries");
            return -1;
        }
        l->unacked = 0;
        l->last_ack_ns = rq_mono_ns();
    }
    amqp_maybe_release_buffers(l->conn);
    return 0;
}

static void wait_for_work(rq_status_log_t *l, int timeout_ms)
{
    struct pollfd pf[2];
    nfds_t n = 1;

    if (l->conn != NULL && (amqp_data_in_buffer(l->conn) || amqp_frames_enqueued(l->conn)))
        return;
    pf[0].fd = rq_wakeup_fd(l->wake);
    pf[0].events = POLLIN;
    if (l->conn != NULL) {
        pf[1].fd = amqp_get_sockfd(l->conn);
        pf[1].events = POLLIN;
        n = 2;
    }
    poll(pf, n, timeout_ms);
}

static int events_queued(const rq_status_log_t *l)
{
    for (rq_list_node_t *n = l->q.head; n != NULL; n = n->next)
        if (RQ_LIST_ENTRY(n, item_t, node)->marker[0] == '\0')
            return 1;
    return 0;
}

/* Before waiting out a linger: from now on appends wake the thread only when they have to
 * (see rq_status_log_t.lingering); take_intake() ends it. Returns 0, without lingering, when
 * something was handed over since the last take. */
static int linger_begin(rq_status_log_t *l, size_t room)
{
    int empty;

    pthread_mutex_lock(&l->lock);
    empty = l->intake.head == NULL && l->bintake.head == NULL && !l->stopping;
    if (empty) {
        l->lingering = 1;
        l->linger_room = room;
    }
    pthread_mutex_unlock(&l->lock);
    return empty;
}

/* One turn while connected. */
static void connected_turn(rq_status_log_t *l)
{
    int sent;

    if (l->o.on_read != NULL)
        ensure_marker(l);
    if ((sent = publish_ready(l)) < 0)
        return;
    if (drain_frames(l) != 0)
        return;
    if (!sent) {
        size_t room = 0;
        int64_t left = linger_left_ns(l, &room);
        if (left > 0 && !linger_begin(l, room))
            return; /* appended meanwhile: take it first */
        wait_for_work(l, left > 0 ? (int)(left / 1000000) + 1 : 50);
    }
}

static void *log_main(void *arg)
{
    rq_status_log_t *l = arg;

    rq_thread_name("rq-status-log");
    for (;;) {
        int64_t now = rq_mono_ns();
        int stopping = take_intake(l);

        if (now - l->last_sweep_ns >= 10000000) {
            sweep_deadlines(l, now);
            l->last_sweep_ns = now;
        }
        if (stopping && l->stop_deadline_ns == 0)
            l->stop_deadline_ns = now + (int64_t)STOP_FLUSH_MS * 1000000;
        /* At stop, a log that has not failed yet still connects to publish what is queued
         * (a service that appends and quits at once); in an outage it gives up at once. */
        if (stopping &&
            (!events_queued(l) || now >= l->stop_deadline_ns || (l->conn == NULL && l->outage)))
            break;
        if (l->conn == NULL) {
            if (now >= l->next_attempt_ns)
                /* rounded up: in the deadline's last millisecond 0 would mean no bound */
                connect_stream(l, stopping ? (l->stop_deadline_ns - now + 999999) / 1000000 : 0);
            if (l->conn == NULL)
                wait_for_work(l, 20);
            continue;
        }
        connected_turn(l);
    }
    if (l->conn != NULL) {
        rq_pubbuf_free(l->pub);
        l->pub = NULL;
        rq_amqp_close(l->conn);
        l->conn = NULL;
    }
    set_up(l, 0);
    return NULL;
}

int rq_status_log_start(rq_status_log_t *log)
{
    if (log->started)
        return -1;
    if (pthread_create(&log->thread, NULL, log_main, log) != 0)
        return -1;
    log->started = 1;
    return 0;
}
