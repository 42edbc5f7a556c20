/* ws.c - the WebSocket server (see ws.h): one epoll thread for every upgraded socket.
 *
 * Locks. s->mu guards the server's lists (pending, dirty), every session's refs, adopted,
 * dead and in_dirty. c->mu guards a session's send buffer, its ack ring and its closing
 * state; the hub's callbacks take it (under the subscription's lock), the server thread takes
 * it to write. Never nested with each other, and neither is held when calling the hub
 * (rq_rt_ack, rq_rt_unsubscribe), so the hub's lock order stays its own.
 *
 * Life: a session starts with one reference, the request's (dropped by rq_ws_conn_abandon);
 * the upgrade handler adds the server thread's (dropped when it finalizes the socket). The
 * server thread alone unsubscribes an upgraded session; abandon unsubscribes one that never
 * was. `dead` (under s->mu) keeps a session that is being torn down off the dirty list.
 */
#include "ws.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"
#include "log.h"
#include "util.h"
#include "ws_frame.h"

#define CTL_RESERVE 512 /* room past the send limit for control frames (ping, pong, close) */
#define EVENT_PREFIX "{\"event_id\":\""
#define ACK_BATCH 64

typedef struct ack_ent {
    uint64_t end; /* q_total after the frame: acked once w_total reaches it */
    uint64_t tag;
} ack_ent_t;

struct rq_ws_conn {
    rq_ws_server_t *s;
    int client_acks;
    void (*on_ready)(void *arg, unsigned status, const char *err);
    void *arg;
    rq_rt_sink_t sink;

    /* under s->mu */
    int refs, adopted, dead, in_dirty;
    rq_ws_conn_t *dnext, *pnext;

    /* under c->mu */
    pthread_mutex_t mu;
    rq_rt_sub_t *sub;
    rq_filter_t *filter; /* owned: freed with the session, after the unsubscribe */
    unsigned char *out;
    size_t out_off, out_len, out_cap;
    uint64_t q_total, w_total;
    ack_ent_t *acks;
    size_t a_head, a_n, a_cap;
    /* client-ack mode: the tags sent and not yet acked by the client (at most the prefetch),
     * and the highest tag sent; under mu */
    uint64_t *pend;
    size_t pend_n, pend_cap;
    uint64_t pend_max;
    int closing;       /* a close frame is queued: nothing else is */
    int can_send;      /* fd is registered and open: deliver() may flush (non-blocking) */
    unsigned code_out; /* the code of the close frame sent */

    /* server thread only */
    int fd;
    struct MHD_UpgradeResponseHandle *urh;
    rq_ws_parser_t *parser;
    unsigned char *extra;
    size_t extra_len;
    double last_pong, last_ping, close_deadline;
    int registered, want_out, shut_wr, peer_closed, done, failed_read;
    rq_ws_conn_t *next, *prev;
};

struct rq_ws_server {
    const rq_config_t *cfg;
    rq_metrics_t *m;
    rq_rt_hub_t *hub;
    int epfd, evfd;
    pthread_t th;
    int started;
    pthread_mutex_t mu;
    int stopping, stopped;         /* under mu */
    rq_ws_conn_t *pending, *dirty; /* under mu */
    rq_ws_conn_t *conns;           /* server thread only */
    rq_series_t *g_conns, *c_frames;
    rq_metric_t *f_errors;
    void (*t_ack)(void *arg, rq_rt_sub_t *sub, uint64_t tag); /* tests (hub NULL) */
    void (*t_unsub)(void *arg, rq_rt_sub_t *sub);
    void *t_arg;
};

static void hub_ack(rq_ws_server_t *s, rq_rt_sub_t *sub, uint64_t tag)
{
    if (sub == NULL)
        return;
    if (s->hub)
        rq_rt_ack(s->hub, sub, tag);
    else if (s->t_ack)
        s->t_ack(s->t_arg, sub, tag);
}

static void hub_unsub(rq_ws_server_t *s, rq_rt_sub_t *sub)
{
    if (sub == NULL)
        return;
    if (s->hub)
        rq_rt_unsubscribe(s->hub, sub);
    else if (s->t_unsub)
        s->t_unsub(s->t_arg, sub);
}

void rq_ws_server_test_hooks(rq_ws_server_t *s,
                             void (*ack)(void *arg, rq_rt_sub_t *sub, uint64_t tag),
                             void (*unsub)(void *arg, rq_rt_sub_t *sub), void *arg)
{
    s->t_ack = ack;
    s->t_unsub = unsub;
    s->t_arg = arg;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wake(rq_ws_server_t *s)
{
    uint64_t one = 1;
    ssize_t r = write(s->evfd, &one, sizeof(one));
    (void)r; /* EAGAIN: the counter is already non-zero, the thread wakes anyway */
}

static void count_error(rq_ws_server_t *s, unsigned code)
{
    char v[16];
    snprintf(v, sizeof(v), "%u", code);
    const char *vals[1] = {v};
    rq_series_inc(rq_metric_series(s->f_errors, 1, vals));
}

/* Puts c on the dirty list (the server thread will try to write it). */
static void mark_dirty(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    int w = 0;
    pthread_mutex_lock(&s->mu);
    if (!c->dead && !c->in_dirty) {
        c->in_dirty = 1;
        c->dnext = s->dirty;
        s->dirty = c;
        w = 1;
    }
    pthread_mutex_unlock(&s->mu);
    if (w)
        wake(s);
}

/* Under s->mu: takes c off the dirty list and keeps it off. */
static void make_dead_locked(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    c->dead = 1;
    if (c->in_dirty) {
        for (rq_ws_conn_t **pp = &s->dirty; *pp; pp = &(*pp)->dnext)
            if (*pp == c) {
                *pp = c->dnext;
                break;
            }
        c->in_dirty = 0;
    }
}

static void conn_free(rq_ws_conn_t *c)
{
    rq_filter_free(c->filter);
    pthread_mutex_destroy(&c->mu);
    rq_ws_parser_free(c->parser);
    free(c->out);
    free(c->acks);
    free(c->pend);
    free(c->extra);
    free(c);
}

/* Drops one reference; frees c at the last. */
static void conn_unref(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    pthread_mutex_lock(&s->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last)
        conn_free(c);
}

/* Under c->mu: room for n more bytes in the send buffer, within limit (the data limit, or
 * the limit plus CTL_RESERVE for control frames). 0, or -1. */
static int out_reserve(rq_ws_conn_t *c, size_t n, size_t limit)
{
    size_t pending = c->out_len - c->out_off;
    if (pending + n > limit)
        return -1;
    if (c->out_off > 0 && c->out_len + n > c->out_cap) {
        memmove(c->out, c->out + c->out_off, pending);
        c->out_len = pending;
        c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        while (cap < c->out_len + n)
            cap *= 2;
        unsigned char *nb = realloc(c->out, cap);
        if (nb == NULL)
            return -1;
        c->out = nb;
        c->out_cap = cap;
    }
    return 0;
}

static size_t data_limit(const rq_ws_conn_t *c)
{
    return (size_t)c->s->cfg->rt_send_buffer_bytes;
}

/* Under c->mu: queues a control frame (always fits in the reserve unless alloc fails). */
static void queue_control(rq_ws_conn_t *c, int op, const void *pl, size_t len)
{
    if (out_reserve(c, 2 + len, data_limit(c) + CTL_RESERVE) < 0)
        return;
    c->out_len +=
        rq_ws_frame_write(c->out + c->out_len, c->out_cap - c->out_len, 1, op, pl, len, NULL);
    c->q_total += 2 + len;
}

/* Under c->mu: queues the close frame (once); nothing is queued after it. */
static void queue_close(rq_ws_conn_t *c, unsigned code, const char *reason)
{
    unsigned char f[2 + RQ_WS_CONTROL_MAX];
    if (c->closing)
        return;
    size_t n = rq_ws_close_frame(f, code, reason);
    if (out_reserve(c, n, data_limit(c) + CTL_RESERVE) == 0) {
        memcpy(c->out + c->out_len, f, n);
        c->out_len += n;
        c->q_total += n;
    }
    c->closing = 1;
    c->code_out = code;
}

/* Under c->mu: non-blocking send of what the buffer holds (the hub's thread uses it when a
 * burst fills the buffer before the server thread ran). Acks are left to the server
 * thread. */
static void flush_locked(rq_ws_conn_t *c)
{
    while (c->can_send && c->out_off < c->out_len) {
        ssize_t w =
            send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN, or an error the server thread will see */
        }
        c->out_off += (size_t)w;
        c->w_total += (uint64_t)w;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
}

/* ---- the sink (hub thread) ---- */

static void sink_ready(void *arg, unsigned status, const char *error)
{
    rq_ws_conn_t *c = arg;
    if (c->on_ready)
        c->on_ready(c->arg, status, error);
}

/* Under c->mu: records that the frame ending at stream byte `end` carries queue message
 * `tag` (auto mode: acked once written). 0, or -1 out of memory. */
static int auto_ack_add(rq_ws_conn_t *c, uint64_t end, uint64_t tag)
{
    if (c->a_n == c->a_cap) {
        size_t cap = c->a_cap ? c->a_cap * 2 : 64;
        ack_ent_t *na = malloc(cap * sizeof(*na));
        if (na == NULL)
            return -1;
        for (size_t i = 0; i < c->a_n; i++)
            na[i] = c->acks[(c->a_head + i) % c->a_cap];
        free(c->acks);
        c->acks = na;
        c->a_cap = cap;
        c->a_head = 0;
    }
    c->acks[(c->a_head + c->a_n) % c->a_cap] = (ack_ent_t){end, tag};
    c->a_n++;
    return 0;
}

/* Under c->mu: client-ack mode, `tag` was sent and awaits the client's ack. 0, or -1. */
static int pend_add(rq_ws_conn_t *c, uint64_t tag)
{
    if (c->pend_n == c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap * 2 : 64;
        uint64_t *np = realloc(c->pend, cap * sizeof(*np));
        if (np == NULL)
            return -1;
        c->pend = np;
        c->pend_cap = cap;
    }
    c->pend[c->pend_n++] = tag;
    if (tag > c->pend_max)
        c->pend_max = tag;
    return 0;
}

/* Under c->mu: the client acked `tag`. 1 when it was outstanding (now removed: pass it on),
 * 0 for a repeat of an acked tag (ignored), -1 for a tag never sent (a protocol error: the
 * broker would close the channel on it). */
static int pend_take(rq_ws_conn_t *c, uint64_t tag)
{
    for (size_t i = 0; i < c->pend_n; i++) {
        if (c->pend[i] == tag) {
            c->pend[i] = c->pend[--c->pend_n];
            return 1;
        }
    }
    return tag != 0 && tag <= c->pend_max ? 0 : -1;
}

/* Under c->mu: a topic event over RT_SEND_BUFFER_BYTES is replaced by a small notice frame
 * (one message must not cost every subscriber its size). 0, or -1 when it does not fit. */
static int put_notice(rq_ws_conn_t *c, const rq_rt_event_t *ev)
{
    char text[200];
    unsigned char h[RQ_WS_HDR_MAX];
    int n = snprintf(text, sizeof(text),
                     EVENT_PREFIX "%s\",\"skipped\":true,\"bytes\":%zu,\"reason\":\"the event "
                                  "is larger than RT_SEND_BUFFER_BYTES\"}",
                     ev->id, ev->len);
    size_t hl;

    if (n < 0 || (size_t)n >= sizeof(text))
        return -1;
    hl = rq_ws_frame_header(h, 1, RQ_WS_OP_TEXT, (size_t)n, NULL);
    if (out_reserve(c, hl + (size_t)n, data_limit(c)) < 0)
        return -1;
    memcpy(c->out + c->out_len, h, hl);
    memcpy(c->out + c->out_len + hl, text, (size_t)n);
    c->out_len += hl + (size_t)n;
    c->q_total += hl + (size_t)n;
    return 0;
}

/* Under c->mu: room for a frame of n bytes. The limit applies to the backlog: a queue event
 * goes into an empty buffer whatever its size (else it would end every subscriber and come
 * back first forever). 0, or -1 (a slow consumer). */
static int reserve_event(rq_ws_conn_t *c, size_t n)
{
    size_t limit = data_limit(c);

    if (n > limit && c->out_len == c->out_off)
        limit = n;
    if (out_reserve(c, n, limit) == 0)
        return 0;
    flush_locked(c);
    if (n > data_limit(c) && c->out_len == c->out_off)
        limit = n;
    return out_reserve(c, n, limit);
}

static int sink_deliver(void *arg, const rq_rt_event_t *ev)
{
    rq_ws_conn_t *c = arg;
    int rc = 0, dirty = 0;
    size_t idlen = strlen(ev->id);
    if (ev->len < 2 || ev->json[0] != '{')
        return 0; /* not an object: nothing to splice (never from event.c) */
    size_t plen = strlen(EVENT_PREFIX) + idlen + 2 + (ev->len - 1);
    unsigned char h[RQ_WS_HDR_MAX];
    size_t hl = rq_ws_frame_header(h, 1, RQ_WS_OP_TEXT, plen, NULL);

    pthread_mutex_lock(&c->mu);
    if (c->closing)
        goto out;
    if (ev->tag == 0 && hl + plen > data_limit(c)) {
        rc = put_notice(c, ev);
        dirty = rc == 0;
        goto out;
    }
    if (reserve_event(c, hl + plen) < 0 ||
        (ev->tag != 0 && (c->client_acks ? pend_add(c, ev->tag)
                                         : auto_ack_add(c, c->q_total + hl + plen, ev->tag))) !=
            0) {
        rc = -1;
        goto out;
    }
    unsigned char *p = c->out + c->out_len;
    memcpy(p, h, hl);
    p += hl;
    memcpy(p, EVENT_PREFIX, strlen(EVENT_PREFIX));
    p += strlen(EVENT_PREFIX);
    memcpy(p, ev->id, idlen);
    p += idlen;
    memcpy(p, "\",", 2);
    p += 2;
    memcpy(p, ev->json + 1, ev->len - 1);
    c->out_len += hl + plen;
    c->q_total += hl + plen;
    dirty = 1;
out:
    pthread_mutex_unlock(&c->mu);
    if (dirty)
        mark_dirty(c);
    return rc;
}

/* The close code of a hub end reason (q18-common.md). */
static unsigned end_code(const char *reason)
{
    if (strcmp(reason, "slow_consumer") == 0)
        return RQ_WS_CLOSE_POLICY;
    if (strcmp(reason, "topic_deleted") == 0 || strcmp(reason, "queue_deleted") == 0)
        return 4404;
    if (strcmp(reason, "shutdown") == 0)
        return RQ_WS_CLOSE_GOING_AWAY;
    return RQ_WS_CLOSE_INTERNAL; /* broker_lost and anything new */
}

static void sink_ended(void *arg, const char *reason, const char *detail)
{
    rq_ws_conn_t *c = arg;
    (void)detail;
    pthread_mutex_lock(&c->mu);
    queue_close(c, end_code(reason), reason);
    pthread_mutex_unlock(&c->mu);
    mark_dirty(c);
}

/* ---- the server thread ---- */

static void set_out_interest(rq_ws_conn_t *c, int want)
{
    if (c->want_out == want || c->done)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

/* Writes what the send buffer holds; acks (auto mode) the messages fully written. */
static void do_write(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    uint64_t tags[ACK_BATCH];
    size_t ntags;
    int again = 1;

    while (again && !c->done) {
        int blocked = 0, broken = 0, empty, closing;
        ntags = 0;
        pthread_mutex_lock(&c->mu);
        while (c->out_off < c->out_len) {
            ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    blocked = 1;
                else
                    broken = 1;
                break;
            }
            c->out_off += (size_t)w;
            c->w_total += (uint64_t)w;
        }
        if (c->out_off == c->out_len)
            c->out_off = c->out_len = 0;
        while (c->a_n > 0 && ntags < ACK_BATCH && c->acks[c->a_head].end <= c->w_total) {
            tags[ntags++] = c->acks[c->a_head].tag;
            c->a_head = (c->a_head + 1) % c->a_cap;
            c->a_n--;
        }
        again = ntags == ACK_BATCH;
        empty = c->out_len == 0;
        closing = c->closing;
        rq_rt_sub_t *sub = c->sub;
        pthread_mutex_unlock(&c->mu);

        for (size_t i = 0; i < ntags; i++)
            hub_ack(s, sub, tags[i]);
        if (broken) {
            c->done = 1;
            return;
        }
        set_out_interest(c, blocked);
        if (empty && closing) {
            if (!c->shut_wr)
                shutdown(c->fd, SHUT_WR); /* the close frame is out: FIN after it */
            c->shut_wr = 1;
            if (c->peer_closed)
                c->done = 1; /* both close frames exchanged */
        }
    }
}

/* Closes with code (a protocol error of ours or the client's). */
static void close_with(rq_ws_conn_t *c, unsigned code, const char *why)
{
    pthread_mutex_lock(&c->mu);
    queue_close(c, code, why);
    pthread_mutex_unlock(&c->mu);
    if (c->close_deadline == 0)
        c->close_deadline = now_s() + 2.0 * c->s->cfg->rt_heartbeat_s;
}

/* A client text message in client-ack mode: {"ack":"<event_id>"} (or a number). 0, or -1. */
static int parse_ack(const unsigned char *d, size_t n, uint64_t *tag)
{
    json_error_t e;
    int rc = -1;
    json_t *j = json_loadb((const char *)d, n, JSON_REJECT_DUPLICATES, &e);
    if (!json_is_object(j) || json_object_size(j) != 1)
        goto out;
    json_t *a = json_object_get(j, "ack");
    if (json_is_integer(a) && json_integer_value(a) > 0) {
        *tag = (uint64_t)json_integer_value(a);
        rc = 0;
    } else if (json_is_string(a)) {
        const char *t = json_string_value(a);
        size_t l = strlen(t);
        if (l == 0 || l > 20 || t[0] == '0')
            goto out;
        uint64_t v = 0;
        for (size_t i = 0; i < l; i++) {
            if (t[i] < '0' || t[i] > '9')
                goto out;
            uint64_t nv = v * 10 + (uint64_t)(t[i] - '0');
            if (nv / 10 != v)
                goto out; /* overflow */
            v = nv;
        }
        *tag = v;
        rc = 0;
    }
out:
    json_decref(j);
    return rc;
}

static void on_message(rq_ws_conn_t *c, const rq_ws_msg_t *m)
{
    rq_ws_server_t *s = c->s;
    rq_series_inc(s->c_frames);
    switch (m->opcode) {
    case RQ_WS_OP_PING:
        pthread_mutex_lock(&c->mu);
        if (!c->closing)
            queue_control(c, RQ_WS_OP_PONG, m->data, m->len);
        pthread_mutex_unlock(&c->mu);
        break;
    case RQ_WS_OP_PONG:
        c->last_pong = now_s();
        break;
    case RQ_WS_OP_CLOSE: {
        c->peer_closed = 1;
        unsigned code = m->close_code == RQ_WS_CLOSE_NO_STATUS ? 0 : m->close_code;
        close_with(c, code, ""); /* the reply echoes the code (5.5.1); no-op if we closed */
        break;
    }
    case RQ_WS_OP_BINARY:
        count_error(s, RQ_WS_CLOSE_UNSUPPORTED);
        close_with(c, RQ_WS_CLOSE_UNSUPPORTED, "binary messages are not accepted");
        break;
    case RQ_WS_OP_TEXT: {
        if (!c->client_acks)
            break; /* auto mode: ignored */
        uint64_t tag;
        if (parse_ack(m->data, m->len, &tag) < 0) {
            count_error(s, RQ_WS_CLOSE_POLICY);
            close_with(c, RQ_WS_CLOSE_POLICY, "expected {\"ack\":\"<event_id>\"}");
            break;
        }
        pthread_mutex_lock(&c->mu);
        rq_rt_sub_t *sub = c->sub;
        int known = pend_take(c, tag);
        pthread_mutex_unlock(&c->mu);
        if (known < 0) {
            count_error(s, RQ_WS_CLOSE_POLICY);
            close_with(c, RQ_WS_CLOSE_POLICY, "ack of an event_id this socket was not sent");
        } else if (known > 0) {
            hub_ack(s, sub, tag);
        }
        break;
    }
    default:
        break;
    }
}

/* Feeds received bytes to the parser; handles each message. */
static void on_bytes(rq_ws_conn_t *c, const unsigned char *b, size_t n)
{
    size_t at = 0;
    while (at < n && !c->failed_read && !c->peer_closed) {
        size_t used = 0;
        rq_ws_msg_t m;
        int rc = rq_ws_parse(c->parser, b + at, n - at, &used, &m);
        at += used;
        if (rc < 0) {
            const char *why;
            unsigned code = rq_ws_parser_error(c->parser, &why);
            count_error(c->s, code);
            c->failed_read = 1;
            close_with(c, code, why);
            break;
        }
        if (rc == 0)
            break;
        on_message(c, &m);
    }
}

static void do_read(rq_ws_conn_t *c)
{
    unsigned char buf[65536];
    for (int rounds = 0; rounds < 16 && !c->done; rounds++) {
        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                c->done = 1;
            return;
        }
        if (r == 0) {
            c->done = 1; /* the client went away (or answered our shutdown) */
            return;
        }
        if (c->failed_read || c->peer_closed)
            continue; /* after a close: discard until EOF */
        on_bytes(c, buf, (size_t)r);
    }
}

/* Ends the socket: unsubscribes (a queue's unacked messages go back), closes. */
static void finalize(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    pthread_mutex_lock(&s->mu);
    make_dead_locked(c);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&c->mu);
    rq_rt_sub_t *sub = c->sub;
    c->sub = NULL;
    c->closing = 1;
    c->can_send = 0;
    pthread_mutex_unlock(&c->mu);
    hub_unsub(s, sub);
    if (c->urh)
        MHD_upgrade_action(c->urh, MHD_UPGRADE_ACTION_CLOSE);
    else
        close(c->fd);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    rq_series_add(s->g_conns, -1);
    conn_unref(c);
}

/* A newly adopted socket: register it, take MHD's extra bytes, start writing. */
static void start_conn(rq_ws_conn_t *c)
{
    rq_ws_server_t *s = c->s;
    double t = now_s();
    c->last_pong = c->last_ping = t;
    c->next = s->conns;
    c->prev = NULL;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    rq_series_add(s->g_conns, 1);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        c->done = 1;
        return;
    }
    c->registered = 1;
    pthread_mutex_lock(&c->mu);
    c->can_send = 1;
    pthread_mutex_unlock(&c->mu);
    if (c->extra_len > 0)
        on_bytes(c, c->extra, c->extra_len);
    do_write(c);
}

/* Once a second: pings, heartbeat timeouts, close deadlines. */
static void tick(rq_ws_server_t *s, double t)
{
    double hb = s->cfg->rt_heartbeat_s;
    for (rq_ws_conn_t *c = s->conns; c; c = c->next) {
        if (c->done)
            continue;
        if (c->close_deadline == 0) {
            pthread_mutex_lock(&c->mu);
            int closing = c->closing;
            pthread_mutex_unlock(&c->mu);
            if (closing) /* closed by the hub's end */
                c->close_deadline = t + 2.0 * hb;
        }
        if (c->close_deadline != 0) {
            if (t >= c->close_deadline)
                c->done = 1;
            continue;
        }
        if (t - c->last_pong >= 2.0 * hb) {
            count_error(s, RQ_WS_CLOSE_POLICY);
            close_with(c, RQ_WS_CLOSE_POLICY, "heartbeat timeout");
        } else if (t - c->last_ping >= hb) {
            pthread_mutex_lock(&c->mu);
            queue_control(c, RQ_WS_OP_PING, "hb", 2);
            pthread_mutex_unlock(&c->mu);
            c->last_ping = t;
        }
        do_write(c);
    }
}

static void reap(rq_ws_server_t *s)
{
    rq_ws_conn_t *c = s->conns;
    while (c) {
        rq_ws_conn_t *n = c->next;
        if (c->done)
            finalize(c);
        c = n;
    }
}

static void *ws_main(void *arg)
{
    rq_ws_server_t *s = arg;
    struct epoll_event evs[64];
    double last_tick;

    rq_thread_name("rq-ws");
    last_tick = now_s();
    for (;;) {
        int n = epoll_wait(s->epfd, evs, 64, 500);
        for (int i = 0; i < n; i++) {
            rq_ws_conn_t *c = evs[i].data.ptr;
            if (c == NULL) {
                uint64_t v;
                ssize_t r = read(s->evfd, &v, sizeof(v));
                (void)r;
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                do_read(c);
            do_write(c); /* EPOLLOUT, or what reading queued (pong, close) */
        }
        pthread_mutex_lock(&s->mu);
        int stopping = s->stopping;
        rq_ws_conn_t *p = s->pending;
        s->pending = NULL;
        pthread_mutex_unlock(&s->mu);
        while (p) {
            rq_ws_conn_t *nx = p->pnext;
            start_conn(p);
            p = nx;
        }
        for (;;) { /* the dirty list, one at a time (abandon may unlink under s->mu) */
            pthread_mutex_lock(&s->mu);
            rq_ws_conn_t *c = s->dirty;
            int mine = 0;
            if (c) {
                s->dirty = c->dnext;
                c->in_dirty = 0;
                mine = c->adopted && !c->dead && c->fd >= 0;
            }
            pthread_mutex_unlock(&s->mu);
            if (c == NULL)
                break;
            if (mine && c->registered)
                do_write(c); /* registered sockets only (pending ones flush at start) */
        }
        double t = now_s();
        if (t - last_tick >= 0.5) {
            tick(s, t);
            last_tick = t;
        }
        if (stopping)
            break;
        reap(s);
    }
    /* shutdown: close every socket with 1001, best effort */
    for (rq_ws_conn_t *c = s->conns; c; c = c->next) {
        pthread_mutex_lock(&c->mu);
        queue_close(c, RQ_WS_CLOSE_GOING_AWAY, "shutdown");
        pthread_mutex_unlock(&c->mu);
        do_write(c);
        c->done = 1;
    }
    reap(s);
    return NULL;
}

/* ---- public ---- */

rq_ws_server_t *rq_ws_server_new(const rq_config_t *cfg, rq_metrics_t *m, rq_rt_hub_t *hub)
{
    rq_ws_server_t *s = calloc(1, sizeof(*s));
    static const char *code_label[1] = {"code"};
    if (s == NULL)
        return NULL;
    s->cfg = cfg;
    s->m = m;
    s->hub = hub;
    s->epfd = s->evfd = -1;
    pthread_mutex_init(&s->mu, NULL);
    rq_metric_t *g = rq_metrics_gauge(m, "producer_rt_ws_connections",
                                      "Open (upgraded) WebSocket connections.", 0, NULL);
    rq_metric_t *f = rq_metrics_counter(m, "producer_rt_ws_frames_received_total",
                                        "WebSocket messages and control frames received.", 0, NULL);
    s->f_errors = rq_metrics_counter(m, "producer_rt_ws_protocol_errors_total",
                                     "WebSocket connections closed for a client protocol error, by "
                                     "close code.",
                                     1, code_label);
    s->g_conns = g ? rq_metric_series(g, 0, NULL) : NULL;
    s->c_frames = f ? rq_metric_series(f, 0, NULL) : NULL;
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epfd < 0 || s->evfd < 0)
        goto fail;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->evfd, &ev) < 0)
        goto fail;
    if (pthread_create(&s->th, NULL, ws_main, s) != 0)
        goto fail;
    s->started = 1;
    return s;
fail:
    rq_ws_server_free(s);
    return NULL;
}

void rq_ws_server_stop(rq_ws_server_t *s)
{
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    int join = s->started && !s->stopping;
    s->stopping = 1;
    pthread_mutex_unlock(&s->mu);
    if (join) {
        wake(s);
        pthread_join(s->th, NULL);
        pthread_mutex_lock(&s->mu);
        s->stopped = 1;
        pthread_mutex_unlock(&s->mu);
    }
}

void rq_ws_server_free(rq_ws_server_t *s)
{
    if (s == NULL)
        return;
    rq_ws_server_stop(s);
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->evfd >= 0)
        close(s->evfd);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* 1 when the comma-separated header value v holds token t (case-insensitive). */
static int has_token(const char *v, const char *t)
{
    size_t tl = strlen(t);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *e = v;
        while (*e && *e != ',')
            e++;
        const char *te = e;
        while (te > v && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - v) == tl && strncasecmp(v, t, tl) == 0)
            return 1;
        v = e;
    }
    return 0;
}

unsigned rq_ws_handshake(struct MHD_Connection *conn, char accept[29], char *err, size_t errlen)
{
    const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Upgrade");
    const char *co = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Connection");
    const char *ver = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Version");
    const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Sec-WebSocket-Key");
    unsigned char raw[24];
    size_t rawlen = 0;

    if (up == NULL || !has_token(up, "websocket")) {
        snprintf(err, errlen, "a WebSocket upgrade is required (Upgrade: websocket)");
        return 400;
    }
    if (co == NULL || !has_token(co, "upgrade")) {
        snprintf(err, errlen, "Connection: Upgrade is required");
        return 400;
    }
    if (ver == NULL || strcmp(ver, "13") != 0) {
        snprintf(err, errlen, "unsupported Sec-WebSocket-Version (13 is supported)");
        return 426;
    }
    if (key == NULL || strlen(key) != 24 || rq_b64_decode(key, 24, raw, sizeof(raw), &rawlen) < 0 ||
        rawlen != 16) {
        snprintf(err, errlen, "Sec-WebSocket-Key must be the base64 of 16 bytes");
        return 400;
    }
    if (rq_ws_accept(key, 24, accept) < 0) {
        snprintf(err, errlen, "cannot compute Sec-WebSocket-Accept");
        return 500;
    }
    if (errlen > 0)
        err[0] = '\0';
    return 0;
}

rq_ws_conn_t *rq_ws_conn_new(rq_ws_server_t *s, int client_acks,
                             void (*on_ready)(void *arg, unsigned status, const char *err),
                             void *arg)
{
    rq_ws_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->parser = rq_ws_parser_new((size_t)s->cfg->ws_max_frame_bytes);
    if (c->parser == NULL) {
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    c->s = s;
    c->client_acks = client_acks;
    c->on_ready = on_ready;
    c->arg = arg;
    c->refs = 1;
    c->fd = -1;
    c->sink = (rq_rt_sink_t){sink_ready, sink_deliver, sink_ended, c};
    return c;
}

const rq_rt_sink_t *rq_ws_conn_sink(rq_ws_conn_t *c)
{
    return &c->sink;
}

void rq_ws_conn_set_sub(rq_ws_conn_t *c, rq_rt_sub_t *sub)
{
    pthread_mutex_lock(&c->mu);
    c->sub = sub;
    pthread_mutex_unlock(&c->mu);
}

void rq_ws_conn_own_filter(rq_ws_conn_t *c, rq_filter_t *f)
{
    c->filter = f;
}

/* Adopts fd (and MHD's handle, NULL in tests) on the server thread. 0, or -1 when the
 * server is stopped (then the socket is closed here and the subscription ended). */
static int adopt(rq_ws_conn_t *c, int fd, struct MHD_UpgradeResponseHandle *urh, const char *extra,
                 size_t extra_len)
{
    rq_ws_server_t *s = c->s;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    c->fd = fd;
    c->urh = urh;
    if (extra_len > 0) {
        c->extra = malloc(extra_len);
        if (c->extra) {
            memcpy(c->extra, extra, extra_len);
            c->extra_len = extra_len;
        }
    }
    pthread_mutex_lock(&s->mu);
    int open = !s->stopping;
    c->adopted = 1; /* abandon only drops the request's reference from now on */
    if (open) {
        c->refs++;
        c->pnext = s->pending;
        s->pending = c;
    } else {
        make_dead_locked(c);
    }
    pthread_mutex_unlock(&s->mu);
    if (open) {
        wake(s);
        return 0;
    }
    pthread_mutex_lock(&c->mu);
    rq_rt_sub_t *sub = c->sub;
    c->sub = NULL;
    pthread_mutex_unlock(&c->mu);
    hub_unsub(s, sub);
    if (urh)
        MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CLOSE);
    else
        close(fd);
    return -1;
}

static void upgrade_cb(void *cls, struct MHD_Connection *connection, void *con_cls,
                       const char *extra_in, size_t extra_in_size, MHD_socket sock,
                       struct MHD_UpgradeResponseHandle *urh)
{
    (void)connection;
    (void)con_cls;
    adopt(cls, sock, urh, extra_in, extra_in_size);
}

struct MHD_Response *rq_ws_conn_response(rq_ws_conn_t *c, const char *accept)
{
    struct MHD_Response *r = MHD_create_response_for_upgrade(upgrade_cb, c);
    if (r == NULL)
        return NULL;
    if (MHD_add_response_header(r, MHD_HTTP_HEADER_UPGRADE, "websocket") != MHD_YES ||
        MHD_add_response_header(r, "Sec-WebSocket-Accept", accept) != MHD_YES) {
        MHD_destroy_response(r);
        return NULL;
    }
    /* MHD adds "Connection: Upgrade" itself for a 101 with an upgrade handler */
    return r;
}

int rq_ws_conn_adopt_fd(rq_ws_conn_t *c, int fd)
{
    return adopt(c, fd, NULL, NULL, 0);
}

void rq_ws_conn_abandon(rq_ws_conn_t *c)
{
    if (c == NULL)
        return;
    rq_ws_server_t *s = c->s;
    pthread_mutex_lock(&s->mu);
    int adopted = c->adopted;
    if (!adopted)
        make_dead_locked(c);
    pthread_mutex_unlock(&s->mu);
    if (adopted) {
        conn_unref(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    rq_rt_sub_t *sub = c->sub;
    c->sub = NULL;
    pthread_mutex_unlock(&c->mu);
    hub_unsub(s, sub);
    conn_unref(c);
}
