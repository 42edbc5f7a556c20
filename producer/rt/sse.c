/* sse.c - the Server-Sent Events transport (see sse.h). */
#include "sse.h"

#include <errno.h>
#include <jansson.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define SSE_START ("retry: 2000\n: subscribed\n\n")
#define SSE_HEARTBEAT (": heartbeat\n\n")
#define SSE_END_MAX 1024 /* room kept beyond the send buffer for the end event */
#define SSE_SMALL 4096   /* the buffer an idle session keeps */
/* What MHD asks the callback for, at most. libmicrohttpd callocs the response with a buffer of
 * this size (zeroed again whenever glibc hands back a used chunk): at 64 KiB, 1,000 subscribers
 * cost 64 MB, and each round of them that came and went grew the producer by about 55 MB. A
 * busy session's coalesced events are 1-3 KiB; a larger backlog takes more calls. 4 KiB gave
 * the same latency as 8 KiB in the bench and 5 MB less at 1,000 subscribers. */
#define SSE_READ_BLOCK 4096
/* A session woken less than this long ago is woken again by the flusher (the heartbeat
 * thread) at its next tick instead of at once, so that the events of a busy subscription go
 * out several per send(2): one TCP segment per event per subscriber is what a fan-out to
 * 1,000 subscribers spends its CPU on. The first event after a quiet spell goes at once. */
#define SSE_COALESCE_MS 15

struct rq_sse_server {
    const rq_config_t *cfg;
    rq_rt_hub_t *hub;
    pthread_mutex_t mu; /* the session list, and stop */
    pthread_cond_t cv;
    pthread_t thread;
    int running, stop;
    rq_sse_conn_t *head; /* every session, for the heartbeat */
    size_t nsessions;
    atomic_int pending; /* some session has wake_pending set */
    /* The close watcher: a suspended connection is out of MHD's event loop, so MHD cannot
     * see its client go; an epoll set of their sockets (EPOLLRDHUP, one shot) can. */
    int wfd, wstop; /* the epoll set; an eventfd that stops the watcher */
    pthread_t wthread;
    int wrunning;
    uint64_t serial; /* the last session's serial (srv->mu) */
};

typedef struct sse_ack {
    uint64_t end; /* the message's last byte + 1, in bytes ever appended */
    uint64_t tag;
} sse_ack_t;

struct rq_sse_conn {
    rq_sse_server_t *srv;
    struct MHD_Connection *conn;
    rq_rt_kind_t kind;
    rq_rt_sink_t sink;
    rq_rt_sub_t *sub;
    void (*on_ready)(void *arg, unsigned status, const char *err);
    void *ready_arg;
    void (*on_end)(void *arg);
    void *end_arg;
    rq_sse_conn_t *prev, *next; /* srv->head list */
    pthread_mutex_t mu;         /* everything below */
    char *buf;                  /* buf[off..len): bytes not yet handed to MHD */
    size_t off, len, cap;
    size_t limit;      /* RT_SEND_BUFFER_BYTES */
    uint64_t appended; /* bytes ever appended (ack positions) */
    uint64_t taken;    /* bytes ever handed to MHD */
    sse_ack_t *acks;   /* queue messages not yet handed over, in order */
    size_t nacks, acap;
    int streaming;        /* the response is queued: the callback runs */
    int suspended;        /* the callback suspended the connection */
    int ended;            /* the end event is in the buffer */
    int end_told;         /* on_end ran */
    int listed;           /* in srv->head */
    int wake_pending;     /* the flusher is to resume it at its next tick */
    int64_t last_wake_ms; /* when deliver() or the flusher last resumed it */
    uint64_t serial;      /* the watcher's name for it (never reused) */
    int watched;          /* its socket is in the watcher's set */
    int peer_closed;      /* the watcher saw the client close: end the stream */
};

/* ---- formatting ---- */

size_t rq_sse_format_event(char *out, size_t cap, const char *id, const char *json, size_t len)
{
    int n = snprintf(out, cap, "id: %s\nevent: message\ndata: ", id != NULL ? id : "");
    size_t need;

    if (n < 0)
        return 0;
    need = (size_t)n + len + 2;
    if (need >= cap)
        return need;
    memcpy(out + n, json, len);
    memcpy(out + n + len, "\n\n", 3);
    return need;
}

size_t rq_sse_format_end(char *out, size_t cap, const char *reason, const char *detail)
{
    json_t *o = json_pack("{s:s,s:s}", "reason", reason != NULL ? reason : "", "detail",
                          detail != NULL ? detail : "");
    char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    int n;

    json_decref(o);
    n = snprintf(out, cap, "event: end\ndata: %s\n\n",
                 text != NULL ? text : "{\"reason\":\"error\",\"detail\":\"\"}");
    free(text);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- the buffer (session lock held) ---- */

/* Appends n bytes; `force` ignores the limit (the end event, the start). 0, or -1 when the
 * limit (or memory) refuses them. */
static int buf_put(rq_sse_conn_t *s, const char *p, size_t n, int force)
{
    size_t used = s->len - s->off;

    if (!force && used + n > s->limit)
        return -1;
    if (s->off > 0 && (s->len + n > s->cap || s->off >= s->len / 2)) {
        memmove(s->buf, s->buf + s->off, used);
        s->len = used;
        s->off = 0;
    }
    if (s->len + n > s->cap) {
        size_t ncap = s->cap ? s->cap : SSE_SMALL;
        char *nb;
        while (ncap < s->len + n)
            ncap *= 2;
        nb = realloc(s->buf, ncap);
        if (nb == NULL)
            return -1;
        s->buf = nb;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    s->appended += n;
    return 0;
}

/* Resumes the connection when the callback suspended it: returns 1 when the caller must call
 * MHD_resume_connection (after unlocking). */
static int wake(rq_sse_conn_t *s)
{
    if (!s->suspended)
        return 0;
    s->suspended = 0;
    return 1;
}

/* wake() for an event: at once when the session was last woken SSE_COALESCE_MS ago or more,
 * else at the flusher's next tick (wake_pending). Returns 1 when the caller must resume. */
static int wake_soon(rq_sse_conn_t *s)
{
    int64_t now;

    if (!s->suspended)
        return 0;
    now = rq_mono_ms();
    if (now - s->last_wake_ms >= SSE_COALESCE_MS) {
        s->last_wake_ms = now;
        return wake(s);
    }
    if (!s->wake_pending) {
        s->wake_pending = 1;
        atomic_store(&s->srv->pending, 1);
    }
    return 0;
}

/* ---- the sink (hub thread, subscription lock held) ---- */

static void sink_ready(void *arg, unsigned status, const char *err)
{
    rq_sse_conn_t *s = arg;

    s->on_ready(s->ready_arg, status, err);
}

/* Room for one more ack in s->acks. 0, or -1 out of memory. */
static int acks_room(rq_sse_conn_t *s)
{
    sse_ack_t *na;
    size_t ncap;

    if (s->nacks < s->acap)
        return 0;
    ncap = s->acap ? s->acap * 2 : 16;
    na = realloc(s->acks, ncap * sizeof(*na));
    if (na == NULL)
        return -1;
    s->acks = na;
    s->acap = ncap;
    return 0;
}

/* Appends ev (session lock held). The limit applies to the backlog: an event goes into an
 * empty buffer whatever its size (a queue message bigger than RT_SEND_BUFFER_BYTES would
 * otherwise end every subscriber and come back first forever), but a topic event over the
 * limit is replaced by a small notice (one message must not cost every subscriber its size).
 * Returns 0, or -1 when the backlog leaves no room (a slow consumer). */
static int put_event(rq_sse_conn_t *s, const rq_rt_event_t *ev, int *queued)
{
    char head[160];
    const char *id = ev->id ? ev->id : "";
    size_t used = s->len - s->off, need;
    int n = snprintf(head, sizeof(head), "id: %s\nevent: message\ndata: ", id);

    *queued = 0;
    if (n < 0 || (size_t)n >= sizeof(head))
        return -1;
    need = (size_t)n + ev->len + 2;
    if (need > s->limit && s->kind != RQ_RT_QUEUE) {
        n = snprintf(head, sizeof(head),
                     "id: %s\nevent: skipped\ndata: {\"bytes\":%zu,\"reason\":\"the event "
                     "is larger than RT_SEND_BUFFER_BYTES\"}\n\n",
                     id, ev->len);
        if (n < 0 || (size_t)n >= sizeof(head))
            return -1;
        return buf_put(s, head, (size_t)n, 0);
    }
    if (used > 0 && used + need > s->limit)
        return -1;
    if (s->kind == RQ_RT_QUEUE && acks_room(s) != 0)
        return -1;
    if (buf_put(s, head, (size_t)n, 1) != 0 || buf_put(s, ev->json, ev->len, 1) != 0 ||
        buf_put(s, "\n\n", 2, 1) != 0)
        return -1; /* out of memory (what was put is a partial event: the end follows) */
    *queued = 1;
    return 0;
}

static int sink_deliver(void *arg, const rq_rt_event_t *ev)
{
    rq_sse_conn_t *s = arg;
    int rc, queued, resume = 0;

    pthread_mutex_lock(&s->mu);
    if (s->ended) {
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    rc = put_event(s, ev, &queued);
    if (rc == 0) {
        if (queued && s->kind == RQ_RT_QUEUE) {
            s->acks[s->nacks].end = s->appended;
            s->acks[s->nacks].tag = ev->tag;
            s->nacks++;
        }
        resume = wake_soon(s);
    }
    pthread_mutex_unlock(&s->mu);
    if (resume)
        MHD_resume_connection(s->conn);
    return rc;
}

static void sink_ended(void *arg, const char *reason, const char *detail)
{
    rq_sse_conn_t *s = arg;
    char text[SSE_END_MAX];
    size_t n = rq_sse_format_end(text, sizeof(text), reason, detail);
    int resume = 0, tell = 0;

    if (n >= sizeof(text))
        n = rq_sse_format_end(text, sizeof(text), reason, "");
    pthread_mutex_lock(&s->mu);
    if (!s->ended) {
        s->ended = 1;
        if (n < sizeof(text))
            (void)buf_put(s, text, n, 1);
        resume = wake(s);
        tell = s->streaming && !s->end_told;
        if (tell)
            s->end_told = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (tell && s->on_end != NULL)
        s->on_end(s->end_arg);
    if (resume)
        MHD_resume_connection(s->conn);
}

/* ---- the close watcher ---- */

/* Puts the session's socket into the watcher's set, once (session lock held). EPOLLONESHOT:
 * the one event that matters is the first; the registration goes with the socket when MHD
 * closes it, so it is never removed by hand (a reused descriptor number is another file).
 * EPOLLRDHUP is the client's FIN: a client that half-closes its side (shutdown(SHUT_WR))
 * while it still reads ends its stream too, as libmicrohttpd does when it reads the EOF. */
static void watch(rq_sse_conn_t *s)
{
    const union MHD_ConnectionInfo *ci;
    struct epoll_event ev;

    if (s->watched || s->srv->wfd < 0)
        return;
    ci = MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci == NULL)
        return;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLRDHUP | EPOLLONESHOT;
    ev.data.u64 = s->serial;
    /* EEXIST: a keep-alive connection whose earlier stream ended (the socket, and so its
     * registration, lives on): name this session and arm it again. */
    if (epoll_ctl(s->srv->wfd, EPOLL_CTL_ADD, ci->connect_fd, &ev) == 0 ||
        (errno == EEXIST && epoll_ctl(s->srv->wfd, EPOLL_CTL_MOD, ci->connect_fd, &ev) == 0))
        s->watched = 1;
    else
        rq_warn("SSE: cannot watch a connection for its close: %s", strerror(errno));
}

/* The client of the session with this serial closed: end its stream (resume it when
 * suspended; its reader then ends with an error, and MHD closes the connection). */
static void peer_closed(rq_sse_server_t *srv, uint64_t serial)
{
    pthread_mutex_lock(&srv->mu);
    for (rq_sse_conn_t *s = srv->head; s != NULL; s = s->next) {
        int resume;
        if (s->serial != serial)
            continue;
        pthread_mutex_lock(&s->mu);
        s->peer_closed = 1;
        resume = wake(s);
        pthread_mutex_unlock(&s->mu);
        if (resume) /* s stays listed (alive) while srv->mu is held */
            MHD_resume_connection(s->conn);
        break;
    }
    pthread_mutex_unlock(&srv->mu);
}

static void *watch_main(void *arg)
{
    rq_sse_server_t *srv = arg;
    struct epoll_event evs[64];

    for (;;) {
        int n = epoll_wait(srv->wfd, evs, 64, -1);
        if (n < 0 && errno != EINTR) {
            rq_error("SSE close watcher: epoll_wait: %s", strerror(errno));
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0)
                return NULL; /* rq_sse_server_stop() */
            peer_closed(srv, evs[i].data.u64);
        }
    }
}

/* Starts the watcher (0), or -1 (logged; sessions then see a close at their next write). */
static int watcher_start(rq_sse_server_t *srv)
{
    struct epoll_event ev;
    int rc = -1;

    srv->wfd = epoll_create1(EPOLL_CLOEXEC);
    srv->wstop = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->wfd < 0 || srv->wstop < 0)
        goto cleanup;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(srv->wfd, EPOLL_CTL_ADD, srv->wstop, &ev) != 0 ||
        pthread_create(&srv->wthread, NULL, watch_main, srv) != 0)
        goto cleanup;
    srv->wrunning = 1;
    rc = 0;
cleanup:
    if (rc != 0) {
        rq_warn("SSE: no close watcher (%s): a closed client is seen at its next write",
                strerror(errno));
        if (srv->wfd >= 0)
            close(srv->wfd);
        if (srv->wstop >= 0)
            close(srv->wstop);
        srv->wfd = srv->wstop = -1;
    }
    return rc;
}

/* Stops and joins the watcher. Its set stays open (sessions may still add to it, harmlessly)
 * until watcher_close(). Idempotent. */
static void watcher_stop(rq_sse_server_t *srv)
{
    uint64_t one = 1;

    if (!srv->wrunning)
        return;
    if (write(srv->wstop, &one, sizeof(one)) < 0)
        rq_warn("SSE: stopping the close watcher: %s", strerror(errno));
    pthread_join(srv->wthread, NULL);
    srv->wrunning = 0;
}

/* Closes the watcher's set (the server is freed: no session is left). */
static void watcher_close(rq_sse_server_t *srv)
{
    if (srv->wfd >= 0)
        close(srv->wfd);
    if (srv->wstop >= 0)
        close(srv->wstop);
    srv->wfd = srv->wstop = -1;
}

/* ---- MHD's content reader (an HTTP thread) ---- */

#define SSE_ACK_BATCH 128

/* Acks the queue messages whose last byte is before `sent` (s->mu held; dropped around the
 * hub's calls, which never take our lock under the hub's). */
static void ack_written(rq_sse_conn_t *s, uint64_t sent)
{
    uint64_t tags[SSE_ACK_BATCH];
    size_t k, more;

    do {
        k = 0;
        while (k < s->nacks && k < SSE_ACK_BATCH && s->acks[k].end <= sent) {
            tags[k] = s->acks[k].tag;
            k++;
        }
        if (k > 0) {
            memmove(s->acks, s->acks + k, (s->nacks - k) * sizeof(*s->acks));
            s->nacks -= k;
        }
        more = s->nacks > 0 && s->acks[0].end <= sent;
        if (k > 0) {
            pthread_mutex_unlock(&s->mu);
            for (size_t i = 0; i < k; i++)
                rq_rt_ack(s->srv->hub, s->sub, tags[i]);
            pthread_mutex_lock(&s->mu);
        }
    } while (more);
}

uint64_t rq_sse_peer_confirmed(int fd, uint64_t taken)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    int queued = 0;

    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        ti.tcpi_state == TCP_CLOSE || ioctl(fd, SIOCOUTQ, &queued) != 0 || queued < 0)
        return 0;
    return (uint64_t)queued >= taken ? 0 : taken - (uint64_t)queued;
}

/* What a closed client received of s->taken (see rq_sse_peer_confirmed). */
static uint64_t closed_peer_confirmed(rq_sse_conn_t *s)
{
    const union MHD_ConnectionInfo *ci =
        s->conn != NULL ? MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD)
                        : NULL;

    return ci != NULL ? rq_sse_peer_confirmed(ci->connect_fd, s->taken) : 0;
}

/* Hands MHD what the buffer holds; acks the queue messages whose last byte was written to
 * the socket (handed over in an earlier call); suspends the connection when there is nothing
 * to send. */
static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max)
{
    rq_sse_conn_t *s = cls;
    uint64_t sent;
    size_t n;

    (void)pos;
    pthread_mutex_lock(&s->mu);
    /* MHD asks for the next chunk once the previous one went to the socket: what was taken
     * before this call is written (a dead client's write fails instead: not acked, the
     * message goes back to the queue when the session ends). */
    if (s->peer_closed) {
        /* The client closed, maybe after reading all and leaving (those messages are acked:
         * else the next subscriber gets them again), maybe before the last block reached it
         * (its kernel answers that block with a reset and drops it: not acked, back to the
         * queue). What its TCP confirmed tells them apart. Then MHD closes the connection
         * and the request completes. */
        ack_written(s, closed_peer_confirmed(s));
        pthread_mutex_unlock(&s->mu);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    sent = s->taken;
    ack_written(s, sent);
    n = s->len - s->off;
    if (n > max)
        n = max;
    if (n > 0) /* an idle session's buffer is freed: NULL */
        memcpy(out, s->buf + s->off, n);
    s->off += n;
    s->taken += n;
    if (s->off == s->len) {
        s->off = s->len = 0;
        if (s->cap > 4 * SSE_SMALL) { /* an idle session keeps a small buffer */
            free(s->buf);
            s->buf = NULL;
            s->cap = 0;
        }
    }
    if (n == 0 && s->len == s->off) {
        if (s->ended) {
            pthread_mutex_unlock(&s->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        MHD_suspend_connection(s->conn); /* deliver(), a heartbeat or the end resume it */
        s->suspended = 1;
        watch(s);
    }
    pthread_mutex_unlock(&s->mu);
    return (ssize_t)n;
}

ssize_t rq_sse_conn_read(rq_sse_conn_t *c, char *out, size_t max)
{
    return reader(c, 0, out, max);
}

/* ---- the heartbeat thread ---- */

/* Resumes the sessions waiting for the flusher (srv->mu held). */
static void flush_pending(rq_sse_server_t *srv)
{
    int64_t now = rq_mono_ms();

    for (rq_sse_conn_t *s = srv->head; s != NULL; s = s->next) {
        int resume = 0;
        pthread_mutex_lock(&s->mu);
        if (s->wake_pending) {
            s->wake_pending = 0;
            s->last_wake_ms = now;
            resume = wake(s);
        }
        pthread_mutex_unlock(&s->mu);
        if (resume) /* s stays listed (alive) while srv->mu is held */
            MHD_resume_connection(s->conn);
    }
}

/* A heartbeat comment into every streaming session (srv->mu held). */
static void heartbeat_all(rq_sse_server_t *srv)
{
    for (rq_sse_conn_t *s = srv->head; s != NULL; s = s->next) {
        int resume = 0;
        pthread_mutex_lock(&s->mu);
        if (s->streaming && !s->ended && buf_put(s, SSE_HEARTBEAT, strlen(SSE_HEARTBEAT), 0) == 0)
            resume = wake(s);
        pthread_mutex_unlock(&s->mu);
        if (resume)
            MHD_resume_connection(s->conn);
    }
}

/* The heartbeat and flusher thread: ticks every SSE_COALESCE_MS while sessions exist. */
static void *hb_main(void *arg)
{
    rq_sse_server_t *srv = arg;
    int64_t period_ms =
        (int64_t)(srv->cfg->rt_heartbeat_s > 0 ? srv->cfg->rt_heartbeat_s : 15) * 1000;
    int64_t next = rq_mono_ms() + period_ms;

    rq_thread_name("rq-sse");
    pthread_mutex_lock(&srv->mu);
    while (!srv->stop) {
        int64_t now = rq_mono_ms();
        if (atomic_exchange(&srv->pending, 0))
            flush_pending(srv);
        if (now >= next) {
            next = now + period_ms;
            heartbeat_all(srv);
            continue;
        }
        struct timespec ts;
        int64_t wait_ms = next - now;
        if (srv->nsessions > 0 && wait_ms > SSE_COALESCE_MS)
            wait_ms = SSE_COALESCE_MS;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(wait_ms / 1000);
        ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

rq_sse_server_t *rq_sse_server_new(const rq_config_t *cfg, rq_metrics_t *m, rq_rt_hub_t *hub)
{
    rq_sse_server_t *srv = calloc(1, sizeof(*srv));

    (void)m;
    if (srv == NULL)
        return NULL;
    srv->cfg = cfg;
    srv->hub = hub;
    srv->wfd = srv->wstop = -1;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    (void)watcher_start(srv);
    if (pthread_create(&srv->thread, NULL, hb_main, srv) != 0) {
        rq_error("cannot start the SSE heartbeat thread");
        watcher_stop(srv);
        watcher_close(srv);
        pthread_cond_destroy(&srv->cv);
        pthread_mutex_destroy(&srv->mu);
        free(srv);
        return NULL;
    }
    srv->running = 1;
    return srv;
}

void rq_sse_server_stop(rq_sse_server_t *srv)
{
    if (srv == NULL || !srv->running)
        return;
    watcher_stop(srv);
    pthread_mutex_lock(&srv->mu);
    srv->stop = 1;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    pthread_join(srv->thread, NULL);
    srv->running = 0;
}

void rq_sse_server_free(rq_sse_server_t *srv)
{
    if (srv == NULL)
        return;
    rq_sse_server_stop(srv);
    if (srv->head != NULL)
        rq_warn("SSE server freed with sessions left");
    watcher_close(srv);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}

size_t rq_sse_server_sessions(rq_sse_server_t *srv)
{
    size_t n;

    if (srv == NULL)
        return 0;
    pthread_mutex_lock(&srv->mu);
    n = srv->nsessions;
    pthread_mutex_unlock(&srv->mu);
    return n;
}

/* ---- sessions ---- */

rq_sse_conn_t *rq_sse_conn_new(rq_sse_server_t *srv, struct MHD_Connection *conn, rq_rt_kind_t kind,
                               void (*on_ready)(void *arg, unsigned status, const char *err),
                               void *arg)
{
    rq_sse_conn_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->srv = srv;
    s->conn = conn;
    s->kind = kind;
    s->on_ready = on_ready;
    s->ready_arg = arg;
    s->limit = srv->cfg->rt_send_buffer_bytes > 0 ? (size_t)srv->cfg->rt_send_buffer_bytes
                                                  : (size_t)1 << 20;
    s->sink.ready = sink_ready;
    s->sink.deliver = sink_deliver;
    s->sink.ended = sink_ended;
    s->sink.arg = s;
    pthread_mutex_init(&s->mu, NULL);
    if (buf_put(s, SSE_START, strlen(SSE_START), 1) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    pthread_mutex_lock(&srv->mu);
    s->serial = ++srv->serial;
    s->next = srv->head;
    if (srv->head != NULL)
        srv->head->prev = s;
    srv->head = s;
    s->listed = 1;
    if (srv->nsessions++ == 0) /* the flusher may sleep a whole heartbeat: tick from now on */
        pthread_cond_signal(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    return s;
}

const rq_rt_sink_t *rq_sse_conn_sink(rq_sse_conn_t *c)
{
    return &c->sink;
}

void rq_sse_conn_set_sub(rq_sse_conn_t *c, rq_rt_sub_t *sub)
{
    pthread_mutex_lock(&c->mu);
    c->sub = sub;
    pthread_mutex_unlock(&c->mu);
}

struct MHD_Response *rq_sse_conn_response(rq_sse_conn_t *c, void (*on_end)(void *arg), void *arg)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_READ_BLOCK, reader, c, NULL);
    int tell = 0;

    if (r == NULL)
        return NULL;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    pthread_mutex_lock(&c->mu);
    c->on_end = on_end;
    c->end_arg = arg;
    c->streaming = 1;
    tell = c->ended && !c->end_told;
    if (tell)
        c->end_told = 1;
    pthread_mutex_unlock(&c->mu);
    if (tell && on_end != NULL)
        on_end(arg);
    return r;
}

void rq_sse_conn_free(rq_sse_conn_t *c)
{
    rq_sse_server_t *srv;

    if (c == NULL)
        return;
    srv = c->srv;
    if (c->sub != NULL)
        rq_rt_unsubscribe(srv->hub, c->sub); /* no sink callback after this */
    pthread_mutex_lock(&srv->mu);
    if (c->listed) {
        if (c->prev != NULL)
            c->prev->next = c->next;
        else
            srv->head = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
        srv->nsessions--;
    }
    pthread_mutex_unlock(&srv->mu);
    pthread_mutex_destroy(&c->mu);
    free(c->acks);
    free(c->buf);
    free(c);
}
