/* results.c - the producer's shared view of message lifecycles (see results.h). */
#include "results.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hmap.h"
#include "jbuf.h"
#include "list.h"
#include "log.h"
#include "status_event.h"
#include "util.h"

#define STREAM_BODY_MAX (512 * 1024) /* one stream message holds a job's events up to this */
#define PENDING_EVENTS_MAX 100000
#define PENDING_BYTES_MAX (64u * 1024 * 1024)
#define PACK_MAX (64 * 1024) /* events queued together share a stream message up to this */
/* A job's stream text to begin with: its two events (about 400 bytes) per message, at most
 * 4 KiB (it grows); a small start stays in malloc's per-thread cache. */
#define BODY_HINT(n) ((n) > 8 ? 4096 : 512 * (n))

/* A request waiting on the stream (a barrier, a keyed confirm): answered once, by the log's
 * callback or by rq_results_stop(), whichever comes first; freed by the log's callback (the log
 * calls each exactly once, at the latest in rq_status_log_free()). */
typedef struct pending {
    rq_list_node_t node;
    struct rq_results *r;
    rq_status_done_fn done;
    void *arg;
    int answered;
} pending_t;

struct rq_results {
    const rq_config_t *cfg;
    rq_timeline_t *tl;
    rq_status_log_t *log; /* NULL without STATUS_STREAM */
    char src[320];        /* "producer:<host>:<port>" */
    pthread_mutex_t lock; /* claims */
    rq_hmap_t *claims;    /* idempotency keys of requests in flight here */
    rq_list_t pending;    /* of pending_t, under lock */
    int stopped;          /* rq_results_stop() ran: nothing waits on the stream any more */
    rq_series_t *m_visibility;
    rq_series_t *m_bad_events;
};

/* The job's queue for events: its own, else REQUEST_QUEUE. */
static const char *queue_of(const rq_results_t *r, const char *queue)
{
    return queue != NULL && queue[0] != '\0' ? queue : r->cfg->rabbitmq.request_queue;
}

/* One line of a stream message: decoded and applied; a foreign writer's event is timed. */
static void apply_line(rq_results_t *r, const char *line, size_t len)
{
    rq_status_event_t ev;
    rq_sev_hold_t *hold = NULL;

    if (rq_status_event_decode(line, len, &ev, &hold) != 0) {
        rq_series_inc(r->m_bad_events);
        return;
    }
    /* One accepted, confirmed, not_stored and replied per message, whoever wrote it (this
     * producer applies replies from its callback queue without an attempt). */
    if (ev.type == RQ_SEV_ACCEPTED || ev.type == RQ_SEV_CONFIRMED || ev.type == RQ_SEV_NOT_STORED ||
        ev.type == RQ_SEV_REPLIED)
        ev.attempt = 0;
    rq_timeline_apply(r->tl, &ev);
    if (ev.src == NULL || strcmp(ev.src, r->src) != 0) {
        double lag = (double)(rq_wall_ms() - ev.ts_ms) / 1000.0;
        rq_series_observe(r->m_visibility, lag > 0 ? lag : 0);
    }
    rq_status_event_release(hold);
}

/* The stream reader: a stream message holds one event per line. */
static void on_read(const void *body, size_t len, uint64_t offset, int64_t ts_ms, void *arg)
{
    const char *p = body, *end = p + len;

    (void)offset;
    (void)ts_ms;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > 0)
            apply_line(arg, p, n);
        p += n + 1;
    }
}

static int metrics_init(rq_results_t *r, rq_metrics_t *m)
{
    static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                     0.25,  0.5,    1,     2.5,  5,     10};
    rq_metric_t *f;

    if (m == NULL)
        return 0;
    f = rq_metrics_histogram(m, "status_visibility_seconds",
                             "Time from a lifecycle event (written by another producer or a "
                             "consumer) until this producer's index holds it, in seconds.",
                             0, NULL, buckets, sizeof(buckets) / sizeof(buckets[0]));
    if (f == NULL || (r->m_visibility = rq_metric_series(f, 0, NULL)) == NULL)
        return -1;
    f = rq_metrics_counter(m, "status_events_invalid_total",
                           "Lines read from the status stream that are not a valid event.", 0,
                           NULL);
    if (f == NULL || (r->m_bad_events = rq_metric_series(f, 0, NULL)) == NULL)
        return -1;
    return 0;
}

static int log_new(rq_results_t *r, rq_metrics_t *m)
{
    const rq_config_t *cfg = r->cfg;
    rq_status_log_opts_t o;

    memset(&o, 0, sizeof(o));
    o.rabbitmq = &cfg->rabbitmq;
    o.stream = cfg->rabbitmq.status_stream;
    o.max_age_s = cfg->rabbitmq.status_max_age_s;
    o.max_bytes = cfg->rabbitmq.status_max_bytes;
    o.service = "producer";
    o.max_pending = PENDING_EVENTS_MAX;
    o.max_pending_bytes = PENDING_BYTES_MAX;
    o.pack_max = PACK_MAX;
    o.linger_ms = 5; /* fewer, fuller stream messages: the broker's cost is per message */
    o.skip_own = 1;  /* this producer applied its own events when it wrote them */
    o.on_read = on_read;
    o.read_arg = r;
    o.replay_from_ms = cfg->status_replay_s > 0 ? rq_wall_ms() - cfg->status_replay_s * 1000 : 0;
    r->log = rq_status_log_new(&o, m);
    return r->log != NULL ? 0 : -1;
}

rq_results_t *rq_results_new(const rq_config_t *cfg, rq_metrics_t *m)
{
    rq_results_t *r = calloc(1, sizeof(*r));
    char host[256];
    int64_t ttl;

    if (r == NULL)
        goto fail;
    r->cfg = cfg;
    pthread_mutex_init(&r->lock, NULL);
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(r->src, sizeof(r->src), "producer:%s:%d", host, cfg->producer_port);
    ttl = cfg->idempotency_ttl_s * 1000;
    r->tl = rq_timeline_new((size_t)cfg->message_store_size, (size_t)cfg->idempotency_keys_max,
                            ttl > 0 ? ttl : 1);
    r->claims = rq_hmap_new(64);
    if (r->tl == NULL || r->claims == NULL || metrics_init(r, m) != 0)
        goto fail;
    if (cfg->rabbitmq.status_stream[0] != '\0' && log_new(r, m) != 0)
        goto fail;
    return r;
fail:
    rq_error("out of memory (message index)");
    rq_results_free(r);
    return NULL;
}

int rq_results_start(rq_results_t *r)
{
    return r->log == NULL ? 0 : rq_status_log_start(r->log);
}

/* The log's callback of a pending_t: answers it unless stop did, then frees it. */
static void pending_done(void *arg, int ok)
{
    pending_t *p = arg;
    rq_results_t *r = p->r;
    int answer;

    pthread_mutex_lock(&r->lock);
    answer = !p->answered;
    p->answered = 1;
    if (answer)
        rq_list_unlink(&r->pending, &p->node);
    pthread_mutex_unlock(&r->lock);
    if (answer)
        p->done(p->arg, ok);
    free(p);
}

/* A pending_t for done/arg, listed; NULL once stopped or out of memory. */
static pending_t *pending_new(rq_results_t *r, rq_status_done_fn done, void *arg)
{
    pending_t *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->r = r;
    p->done = done;
    p->arg = arg;
    pthread_mutex_lock(&r->lock);
    if (r->stopped) {
        pthread_mutex_unlock(&r->lock);
        free(p);
        return NULL;
    }
    rq_list_push_back(&r->pending, &p->node);
    pthread_mutex_unlock(&r->lock);
    return p;
}

/* Takes back a pending_t the log refused (its callback will never run). */
static void pending_drop(rq_results_t *r, pending_t *p)
{
    pthread_mutex_lock(&r->lock);
    if (!p->answered)
        rq_list_unlink(&r->pending, &p->node);
    pthread_mutex_unlock(&r->lock);
    free(p);
}

void rq_results_stop(rq_results_t *r)
{
    if (r == NULL)
        return;
    rq_timeline_wake_all(r->tl);
    /* Requests waiting on the stream answer now (ok 0: decided from the index); the log's
     * callbacks that come later only free their records. */
    for (;;) {
        pending_t *p = NULL;
        pthread_mutex_lock(&r->lock);
        r->stopped = 1;
        if (r->pending.head != NULL) {
            p = RQ_LIST_ENTRY(r->pending.head, pending_t, node);
            rq_list_unlink(&r->pending, &p->node);
            p->answered = 1;
        }
        pthread_mutex_unlock(&r->lock);
        if (p == NULL)
            break;
        p->done(p->arg, 0);
    }
}

void rq_results_free(rq_results_t *r)
{
    if (r == NULL)
        return;
    rq_status_log_free(r->log); /* first: its reader applies to the index */
    rq_timeline_free(r->tl);
    rq_hmap_free(r->claims);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

rq_timeline_t *rq_results_timeline(rq_results_t *r)
{
    return r->tl;
}

int rq_results_stream_on(const rq_results_t *r)
{
    return r->log != NULL;
}

const char *rq_results_stream_state(const rq_results_t *r)
{
    if (r->log == NULL)
        return "off";
    if (!rq_status_log_up(r->log))
        return "unavailable";
    return rq_status_log_caught_up(r->log) ? "up" : "catching_up";
}

/* An event of message m of a job for queue q, by this producer. */
static void event_of(const rq_results_t *r, const rq_pub_msg_t *m, const char *q,
                     rq_sev_type_t type, int64_t ts_ms, rq_status_event_t *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    ev->id = m->message_id;
    ev->uid = m->correlation_id[0] != '\0' ? m->correlation_id : NULL;
    ev->queue = q;
    ev->src = r->src;
    ev->ts_ms = ts_ms;
}

void rq_results_accepted(rq_results_t *r, const rq_pub_job_t *job, const char *queue, int64_t ts_ms)
{
    const char *q = queue_of(r, queue);
    rq_status_event_t ev;

    for (size_t i = 0; i < job->n; i++) {
        event_of(r, &job->msgs[i], q, RQ_SEV_ACCEPTED, ts_ms, &ev);
        rq_timeline_apply(r->tl, &ev);
    }
}

/* Appends the stream message in b (if any), taking its text. Returns 1 when done will be
 * called, else 0. */
static int flush_body(rq_results_t *r, rq_jbuf_t *b, int timeout_ms, rq_status_done_fn done,
                      void *arg)
{
    size_t len = 0;
    char *text = rq_jbuf_take(b, &len);
    pending_t *p = done != NULL ? pending_new(r, done, arg) : NULL;
    int rc = 0;

    if (text != NULL && len > 0) {
        rc = rq_status_log_append(r->log, text, len, timeout_ms, p != NULL ? pending_done : NULL,
                                  p) == 0 &&
             p != NULL;
    }
    if (!rc && p != NULL)
        pending_drop(r, p);
    free(text);
    rq_jbuf_init(b, BODY_HINT(1));
    return rc;
}

/* The events of message m once its job is done: accepted (again, for the stream: the
 * index ignores the repeat) and confirmed or not_stored; applied, and encoded into b.
 * Returns 1 when m is stored with an idempotency key. */
static int done_events(rq_results_t *r, const rq_pub_job_t *job, const rq_pub_msg_t *m,
                       const char *q, int64_t now, rq_jbuf_t *b)
{
    rq_status_event_t acc, ev;

    if (m->outcome == RQ_MSG_UNKNOWN)
        return 0;
    event_of(r, m, q, RQ_SEV_ACCEPTED, m->published_ms, &acc);
    event_of(r, m, q, m->outcome == RQ_MSG_STORED ? RQ_SEV_CONFIRMED : RQ_SEV_NOT_STORED, now, &ev);
    if (m->outcome == RQ_MSG_STORED) {
        ev.key = m->idem_key;
        ev.answer = 201;
    } else {
        ev.error = job->error != NULL ? job->error : "not stored";
    }
    rq_timeline_apply(r->tl, &ev);
    if (b != NULL && rq_status_event_encode(&acc, b) == 0) {
        rq_jbuf_raw(b, "\n", 1);
        if (rq_status_event_encode(&ev, b) == 0)
            rq_jbuf_raw(b, "\n", 1);
    }
    return m->outcome == RQ_MSG_STORED && m->idem_key != NULL;
}

int rq_results_job_done(rq_results_t *r, const rq_pub_job_t *job, const char *queue, int timeout_ms,
                        rq_status_done_fn done, void *arg)
{
    const char *q = queue_of(r, queue);
    int64_t now = rq_wall_ms();
    rq_jbuf_t b;
    int keyed = 0;

    rq_jbuf_init(&b, BODY_HINT(job->n));
    for (size_t i = 0; i < job->n; i++) {
        keyed |= done_events(r, job, &job->msgs[i], q, now, r->log != NULL ? &b : NULL);
        if (r->log != NULL && b.len > STREAM_BODY_MAX)
            flush_body(r, &b, 0, NULL, NULL);
    }
    if (r->log == NULL) {
        rq_jbuf_free(&b);
        return 0;
    }
    /* The last part carries the callback: the stream confirms in order. While the stream is
     * away the answer does not wait for it (the key is known here; see results.h). */
    if (!rq_status_log_up(r->log))
        keyed = 0;
    keyed = flush_body(r, &b, timeout_ms, keyed ? done : NULL, arg);
    rq_jbuf_free(&b);
    return keyed;
}

size_t rq_results_cut(const char *s, size_t len, size_t max)
{
    size_t cut = len > max ? max : len;

    /* A text reply stays text: never cut inside a UTF-8 character. */
    if (cut < len && rq_utf8_valid(s, len))
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
    return cut;
}

void rq_results_replied(rq_results_t *r, const char *message_id, const char *reply, size_t len)
{
    rq_status_event_t ev;
    size_t max = (size_t)r->cfg->rabbitmq.status_reply_max;

    if (message_id == NULL || message_id[0] == '\0')
        return;
    memset(&ev, 0, sizeof(ev));
    ev.type = RQ_SEV_REPLIED;
    ev.id = message_id;
    ev.src = r->src;
    ev.ts_ms = rq_wall_ms();
    ev.reply = reply;
    ev.reply_len = rq_results_cut(reply, len, max);
    ev.reply_full_len = len;
    ev.truncated = ev.reply_len < len;
    rq_timeline_apply(r->tl, &ev);
}

int rq_results_barrier(rq_results_t *r, int timeout_ms, rq_status_done_fn done, void *arg)
{
    pending_t *p;

    if (r->log == NULL || !rq_status_log_up(r->log) || (p = pending_new(r, done, arg)) == NULL)
        return -1;
    if (rq_status_log_barrier(r->log, timeout_ms, pending_done, p) != 0) {
        pending_drop(r, p);
        return -1;
    }
    return 0;
}

int rq_results_key_claim(rq_results_t *r, const char *key, char *id, size_t idlen)
{
    int rc;

    if (rq_timeline_key_find(r->tl, key, id, idlen))
        return 1;
    pthread_mutex_lock(&r->lock);
    if (rq_hmap_get(r->claims, key) != NULL)
        rc = -1;
    else
        rc = rq_hmap_put(r->claims, key, (void *)1) == 0 ? 0 : -2;
    pthread_mutex_unlock(&r->lock);
    /* A confirm may have recorded the key between the lookup and the claim. */
    if (rc == 0 && rq_timeline_key_find(r->tl, key, id, idlen)) {
        rq_results_key_release(r, key);
        return 1;
    }
    return rc;
}

void rq_results_key_release(rq_results_t *r, const char *key)
{
    pthread_mutex_lock(&r->lock);
    rq_hmap_del(r->claims, key);
    pthread_mutex_unlock(&r->lock);
}
