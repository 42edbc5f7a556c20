/* hub.c - real-time delivery: topics and the AMQP side of subscriptions (hub.h).
 *
 * One thread, one connection. Channel GROUP_CH carries every live group's no-ack consumer;
 * ADMIN_CH every declare that may fail (a 404 closes the channel it was on, never a
 * consumer's); each queue subscription and each stream reader has a channel of its own,
 * taken round-robin from 3..channel_max (a closed channel's number is not reused at once, so
 * a stale frame cannot reach its successor). Other threads talk to the thread through the
 * inbox (a list under h->lock) and a wakeup; the thread never sleeps on anything but poll()
 * of the socket and the wakeup, and reads frames without blocking.
 */
#include "hub.h"

#include <amqp.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amqp_conn.h"
#include "event.h"
#include "hmap.h"
#include "list.h"
#include "log.h"
#include "mgmt.h"
#include "qname.h"
#include "tmatch.h"
#include "util.h"
#include "wakeup.h"

#define GROUP_CH RQ_AMQP_CHANNEL /* 1, opened by rq_amqp_open() */
#define ADMIN_CH 2
#define FIRST_SUB_CH 3
#define CH_CAP 4096           /* most channels used, whatever the broker allows */
#define FRAME_BUDGET 512      /* frames read per turn before the inbox is looked at again */
#define STREAM_PREFETCH 100   /* a stream reader's unacked messages */
#define STREAM_ACK_EVERY 50   /* ... acked in batches of */
#define CHECK_NS 2000000000LL /* topics of live subscriptions checked every 2 s */
#define KNOWN_NS 1000000000LL /* rq_rt_topic_known: a sighting counts for 1 s */
#define MGMT_TIMEOUT_MS 2000
#define STABLE_NS 10000000000LL

typedef enum { SUB_NEW = 0, SUB_LIVE, SUB_DONE } sub_state_t;
typedef enum { M_GROUP = 1, M_STREAM, M_QUEUE } sub_mode_t;

typedef struct group group_t;

struct rq_rt_sub {
    pthread_mutex_t lock; /* recursive: a callback may call rq_rt_unsubscribe */
    rq_rt_sink_t sink;
    int gone; /* unsubscribed (under lock): no callback any more */
    /* the spec */
    rq_rt_kind_t kind;
    char name[RQ_QNAME_MAX + 1];
    char binds[RQ_RT_BINDS_MAX][RQ_RT_BIND_MAX + 1];
    size_t nbinds;
    const rq_filter_t *filter;
    int resume;
    uint64_t after_offset;
    char key_id[128];
    /* the hub thread's */
    sub_state_t state;
    sub_mode_t mode;
    group_t *group;
    amqp_channel_t ch; /* stream reader, queue subscription */
    uint64_t seq;      /* a live member's event ids */
    uint64_t last_dtag, unacked;
    rq_list_node_t node;  /* h->subs */
    rq_list_node_t gnode; /* group->members */
};

struct group {
    char key[RQ_QNAME_MAX + 2 + RQ_RT_BINDS_MAX * (RQ_RT_BIND_MAX + 1)];
    char topic[RQ_QNAME_MAX + 1];
    char queue[256]; /* its server-named queue, bound again at every check */
    char ctag[32];
    rq_list_t members;
    rq_list_node_t node;
};

typedef enum { CMD_SUB = 1, CMD_UNSUB, CMD_ACK } cmd_kind_t;

typedef struct cmd {
    cmd_kind_t kind;
    rq_rt_sub_t *sub;
    uint64_t tag;
    rq_list_node_t node;
} cmd_t;

typedef enum { CH_FREE = 0, CH_OPEN, CH_CLOSING } ch_state_t;

struct rq_rt_hub {
    const rq_config_t *cfg;
    pthread_mutex_t lock; /* the inbox, counts, known topics, flags */
    rq_list_t inbox;
    rq_rt_topic_job_t *jobs, **jobs_tail;
    int stopping, thread_done, started;
    atomic_int connected;
    size_t nsubs;
    rq_hmap_t *per_key; /* key id -> (uintptr_t) count */
    rq_hmap_t *known;   /* topic -> heap int64_t (mono ns last seen) */
    rq_wakeup_t *wake;
    pthread_t thread;
    rq_mgmt_t *mgmt;
    char mgmt_err[256];
    /* the management worker (a blocking HTTP client: never on the hub thread) */
    pthread_t mthread;
    pthread_cond_t mcond; /* with lock: mjobs or mstop */
    rq_rt_topic_job_t *mjobs, **mjobs_tail;
    int mstarted, mstop;
    /* metrics */
    rq_series_t *m_subs_topic, *m_subs_queue, *m_delivered, *m_slow;
    rq_series_t *m_ref_limit, *m_ref_key, *m_ref_unavail;
    /* the thread's */
    amqp_connection_state_t conn;
    rq_backoff_t backoff;
    int64_t next_attempt_ns, connected_ns, last_check_ns;
    int channel_max;
    amqp_channel_t next_ch;
    unsigned char ch_state[CH_CAP + 1];
    rq_rt_sub_t *ch_sub[CH_CAP + 1];
    rq_list_t subs;          /* every subscription taken from the inbox, not yet unsubscribed */
    rq_list_t groups;        /* live groups */
    rq_hmap_t *group_of;     /* group key -> group */
    rq_hmap_t *group_by_tag; /* consumer tag -> group */
    uint64_t next_gid;
};

/* ---- small helpers ---- */

static void known_set(rq_rt_hub_t *h, const char *name, int present)
{
    int64_t *t;

    pthread_mutex_lock(&h->lock);
    t = rq_hmap_get(h->known, name);
    if (!present) {
        free(rq_hmap_del(h->known, name));
    } else if (t != NULL) {
        *t = rq_mono_ns();
    } else if ((t = malloc(sizeof(*t))) != NULL) {
        *t = rq_mono_ns();
        if (rq_hmap_put(h->known, name, t) != 0)
            free(t);
    }
    pthread_mutex_unlock(&h->lock);
}

int rq_rt_topic_known(rq_rt_hub_t *h, const char *name)
{
    int64_t *t;
    int known;

    if (h == NULL)
        return 0;
    pthread_mutex_lock(&h->lock);
    t = rq_hmap_get(h->known, name);
    known = t != NULL && rq_mono_ns() - *t < KNOWN_NS;
    pthread_mutex_unlock(&h->lock);
    return known;
}

static void topic_exchange(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", RQ_RT_TOPIC_PREFIX, name);
}

static void topic_stream(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s.retained", RQ_RT_TOPIC_PREFIX, name);
}

/* Calls the sink's ready() once, under the lock, unless unsubscribed. */
static void sub_ready(rq_rt_sub_t *s, unsigned status, const char *error)
{
    pthread_mutex_lock(&s->lock);
    if (!s->gone && s->sink.ready != NULL)
        s->sink.ready(s->sink.arg, status, error);
    pthread_mutex_unlock(&s->lock);
}

static void sub_ended(rq_rt_sub_t *s, const char *reason, const char *detail)
{
    pthread_mutex_lock(&s->lock);
    if (!s->gone && s->sink.ended != NULL)
        s->sink.ended(s->sink.arg, reason, detail);
    pthread_mutex_unlock(&s->lock);
}

/* ---- channels ---- */

/* Takes a free channel number (round-robin) and opens it. 0 when none is free or the open
 * failed (*lost set when the connection failed). */
static amqp_channel_t channel_take(rq_rt_hub_t *h, int *lost)
{
    int max = h->channel_max;

    *lost = 0;
    for (int i = 0; i < max - FIRST_SUB_CH + 1; i++) {
        amqp_channel_t ch = h->next_ch;
        h->next_ch = ch >= max ? FIRST_SUB_CH : ch + 1;
        if (h->ch_state[ch] != CH_FREE)
            continue;
        amqp_channel_open(h->conn, ch);
        if (amqp_get_rpc_reply(h->conn).reply_type != AMQP_RESPONSE_NORMAL) {
            *lost = 1;
            return 0;
        }
        h->ch_state[ch] = CH_OPEN;
        return ch;
    }
    return 0;
}

/* Sends channel.close without waiting: the number is free again on close-ok. */
static void channel_release(rq_rt_hub_t *h, amqp_channel_t ch)
{
    amqp_channel_close_t c;

    h->ch_sub[ch] = NULL;
    if (h->ch_state[ch] != CH_OPEN)
        return;
    memset(&c, 0, sizeof(c));
    c.reply_code = AMQP_REPLY_SUCCESS;
    c.reply_text = amqp_cstring_bytes("unsubscribed");
    if (amqp_send_method(h->conn, ch, AMQP_CHANNEL_CLOSE_METHOD, &c) == 0)
        h->ch_state[ch] = CH_CLOSING;
    else
        h->ch_state[ch] = CH_FREE; /* the connection failed: noticed by the next read */
}

/* After an RPC failed on channel ch: the reply code of the broker's channel.close (answered;
 * the channel is free, ADMIN_CH and GROUP_CH reopened), or -1 when the connection failed. */
static int rpc_failed(rq_rt_hub_t *h, amqp_channel_t ch, amqp_rpc_reply_t r)
{
    amqp_channel_close_ok_t ok;
    int code;

    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION || r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return -1;
    code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    if (amqp_send_method(h->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0)
        return -1;
    h->ch_state[ch] = CH_FREE;
    if (ch == ADMIN_CH) {
        amqp_channel_open(h->conn, ch);
        if (amqp_get_rpc_reply(h->conn).reply_type != AMQP_RESPONSE_NORMAL)
            return -1;
        h->ch_state[ch] = CH_OPEN;
    }
    return code;
}

/* ---- ending subscriptions ---- */

static void metrics_count(rq_rt_hub_t *h, rq_rt_kind_t kind, double d)
{
    rq_series_add(kind == RQ_RT_QUEUE ? h->m_subs_queue : h->m_subs_topic, d);
}

static void group_drop(rq_rt_hub_t *h, group_t *g)
{
    if (h->conn != NULL && h->ch_state[GROUP_CH] == CH_OPEN) {
        amqp_basic_cancel_t c;
        memset(&c, 0, sizeof(c));
        c.consumer_tag = amqp_cstring_bytes(g->ctag);
        c.nowait = 1; /* the auto-delete queue goes with its consumer */
        amqp_send_method(h->conn, GROUP_CH, AMQP_BASIC_CANCEL_METHOD, &c);
    }
    rq_hmap_del(h->group_of, g->key);
    rq_hmap_del(h->group_by_tag, g->ctag);
    rq_list_unlink(&h->groups, &g->node);
    free(g);
}

/* Detaches s from its consumer (group member, channel); s stays in h->subs until
 * unsubscribed. Calls ended(reason) first when reason is not NULL. */
static void sub_detach(rq_rt_hub_t *h, rq_rt_sub_t *s, const char *reason, const char *detail)
{
    if (s->state == SUB_DONE)
        return;
    if (reason != NULL && s->state == SUB_LIVE)
        sub_ended(s, reason, detail);
    else if (reason != NULL)
        sub_ready(s, 503, detail);
    s->state = SUB_DONE;
    if (s->group != NULL) {
        group_t *g = s->group;
        rq_list_unlink(&g->members, &s->gnode);
        s->group = NULL;
        if (g->members.head == NULL)
            group_drop(h, g);
    }
    if (s->ch != 0) {
        if (h->conn != NULL)
            channel_release(h, s->ch);
        s->ch = 0;
    }
}

static void sub_free(rq_rt_sub_t *s)
{
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Ends every subscription and forgets the connection (already failed or closed). */
static void all_end(rq_rt_hub_t *h, const char *reason, const char *detail)
{
    for (rq_list_node_t *n = h->subs.head; n != NULL; n = n->next)
        sub_detach(h, RQ_LIST_ENTRY(n, rq_rt_sub_t, node), reason, detail);
    while (h->groups.head != NULL)
        group_drop(h, RQ_LIST_ENTRY(h->groups.head, group_t, node));
}

static void connection_lost(rq_rt_hub_t *h, const char *why)
{
    rq_warn("real-time hub: broker connection lost: %s", why);
    atomic_store(&h->connected, 0);
    if (h->conn != NULL)
        amqp_destroy_connection(h->conn);
    h->conn = NULL;
    all_end(h, "broker_lost", "the connection to the broker was lost: subscribe again");
    memset(h->ch_state, 0, sizeof(h->ch_state));
    memset(h->ch_sub, 0, sizeof(h->ch_sub));
    if (h->connected_ns != 0 && rq_mono_ns() - h->connected_ns >= STABLE_NS)
        rq_backoff_reset(&h->backoff);
    h->connected_ns = 0;
    h->next_attempt_ns = rq_mono_ns() + (int64_t)rq_backoff_next(&h->backoff) * 1000000;
}

static int connect_broker(rq_rt_hub_t *h)
{
    char err[512];
    int max;

    h->conn = rq_amqp_open(&h->cfg->rabbitmq, err, sizeof(err));
    if (h->conn == NULL)
        goto fail;
    /* rq_amqp_open() opened RQ_AMQP_CHANNEL (GROUP_CH) already */
    h->ch_state[GROUP_CH] = CH_OPEN;
    amqp_channel_open(h->conn, ADMIN_CH);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(h->conn), "channel.open", err, sizeof(err)))
        goto fail;
    h->ch_state[ADMIN_CH] = CH_OPEN;
    max = amqp_get_channel_max(h->conn);
    h->channel_max = (max <= 0 || max > CH_CAP) ? CH_CAP : max;
    h->next_ch = FIRST_SUB_CH;
    h->connected_ns = rq_mono_ns();
    atomic_store(&h->connected, 1);
    rq_info("real-time hub connected (%d channels)", h->channel_max);
    return 0;

fail:
    rq_warn("real-time hub: broker connection failed: %s", err);
    if (h->conn != NULL)
        rq_amqp_close(h->conn);
    h->conn = NULL;
    memset(h->ch_state, 0, sizeof(h->ch_state));
    h->next_attempt_ns = rq_mono_ns() + (int64_t)rq_backoff_next(&h->backoff) * 1000000;
    return -1;
}

/* ---- admin RPCs on ADMIN_CH ---- */

/* Passive declare of exchange name: 1 exists, 0 missing, -1 connection lost. */
static int exchange_exists(rq_rt_hub_t *h, const char *name)
{
    amqp_rpc_reply_t r;

    amqp_exchange_declare(h->conn, ADMIN_CH, amqp_cstring_bytes(name), amqp_cstring_bytes("topic"),
                          /*passive=*/1, 0, 0, 0, amqp_empty_table);
    r = amqp_get_rpc_reply(h->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    return rpc_failed(h, ADMIN_CH, r) == AMQP_NOT_FOUND ? 0 : -1;
}

static int queue_exists(rq_rt_hub_t *h, const char *name)
{
    amqp_rpc_reply_t r;

    amqp_queue_declare(h->conn, ADMIN_CH, amqp_cstring_bytes(name), /*passive=*/1, 0, 0, 0,
                       amqp_empty_table);
    r = amqp_get_rpc_reply(h->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 1;
    return rpc_failed(h, ADMIN_CH, r) == AMQP_NOT_FOUND ? 0 : -1;
}

/* 0, or -1 with err (connection lost: *lost). */
static int admin_ok(rq_rt_hub_t *h, const char *what, char *err, size_t errlen, int *lost)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(h->conn);
    int code;

    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return 0;
    rq_amqp_check_reply(r, what, err, errlen);
    code = rpc_failed(h, ADMIN_CH, r);
    if (code < 0)
        *lost = 1;
    return -1;
}

/* ---- topic jobs ---- */

static json_t *topic_obj(const char *name, int64_t retention_s, int known)
{
    char ex[RQ_QNAME_MAX + 32];

    topic_exchange(name, ex, sizeof(ex));
    return json_pack("{s:s, s:s, s:o}", "name", name, "exchange", ex, "retention_s",
                     known ? json_integer(retention_s) : json_null());
}

static void job_error(rq_rt_topic_job_t *j, unsigned status, const char *msg)
{
    j->status = status;
    j->body = json_pack("{s:s}", "error", msg);
}

/* The retention of an existing topic from the management API: 0 with *ret, or -1. */
static int mgmt_retention(rq_rt_hub_t *h, const char *name, int64_t *ret)
{
    char vhost[256], ex[RQ_QNAME_MAX * 3 + 64], exname[RQ_QNAME_MAX + 32], path[1024], err[256];
    json_t *body = NULL, *v;
    int status, rc = -1;

    if (h->mgmt == NULL)
        return -1;
    topic_exchange(name, exname, sizeof(exname));
    if (rq_mgmt_escape(h->cfg->rabbitmq.vhost, vhost, sizeof(vhost)) != 0 ||
        rq_mgmt_escape(exname, ex, sizeof(ex)) != 0)
        return -1;
    snprintf(path, sizeof(path), "/api/exchanges/%s/%s", vhost, ex);
    if (rq_mgmt_get(h->mgmt, path, MGMT_TIMEOUT_MS, &status, &body, err, sizeof(err)) != 0 ||
        status != 200 || body == NULL)
        goto cleanup;
    v = json_object_get(json_object_get(body, "arguments"), "x-relayq-retention-s");
    *ret = json_is_integer(v) ? json_integer_value(v) : 0;
    rc = 0;

cleanup:
    json_decref(body);
    return rc;
}

/* The retention of job j's existing topic: from the management API (asked by the worker:
 * -3 when j must go there first), else 0 without a stream and -1 (unknown) with one. -2:
 * connection lost. */
static int64_t retention_of(rq_rt_hub_t *h, rq_rt_topic_job_t *j)
{
    char st[RQ_QNAME_MAX + 48];
    int e;

    if (j->mgmt_state == 0 && h->mstarted)
        return -3;
    if (j->mgmt_state == 0) { /* no worker: ask here */
        j->mgmt_rc = mgmt_retention(h, j->name, &j->mgmt_retention_s);
        j->mgmt_state = 2;
    }
    if (j->mgmt_rc == 0)
        return j->mgmt_retention_s;
    topic_stream(j->name, st, sizeof(st));
    e = queue_exists(h, st);
    return e < 0 ? -2 : e ? -1 : 0;
}

/* Declares exchange, ingress binding and (retention) stream. 0, -1 refused (err), or -2 lost. */
static int topic_declare(rq_rt_hub_t *h, const char *name, int64_t retention_s, char *err,
                         size_t errlen)
{
    char ex[RQ_QNAME_MAX + 32], st[RQ_QNAME_MAX + 48], age[32];
    amqp_table_entry_t args[2], bargs[2];
    amqp_table_t t = {0, args}, bt = {2, bargs};
    int lost = 0;

    topic_exchange(name, ex, sizeof(ex));
    if (retention_s > 0) {
        args[0] = rq_amqp_i64_entry("x-relayq-retention-s", retention_s);
        t.num_entries = 1;
    }
    amqp_exchange_declare(h->conn, ADMIN_CH, amqp_cstring_bytes(RQ_RT_INGRESS),
                          amqp_cstring_bytes("headers"), 0, /*durable=*/1, 0, 0, amqp_empty_table);
    if (admin_ok(h, "exchange.declare " RQ_RT_INGRESS, err, errlen, &lost) != 0)
        return lost ? -2 : -1;
    amqp_exchange_declare(h->conn, ADMIN_CH, amqp_cstring_bytes(ex), amqp_cstring_bytes("topic"), 0,
                          /*durable=*/1, 0, 0, t);
    if (admin_ok(h, "exchange.declare", err, errlen, &lost) != 0)
        return lost ? -2 : -1;
    bargs[0] = rq_amqp_utf8_entry("x-match", "all");
    bargs[1] = rq_amqp_utf8_entry(RQ_RT_TOPIC_HEADER, name);
    amqp_exchange_bind(h->conn, ADMIN_CH, amqp_cstring_bytes(ex), amqp_cstring_bytes(RQ_RT_INGRESS),
                       amqp_empty_bytes, bt);
    if (admin_ok(h, "exchange.bind", err, errlen, &lost) != 0)
        return lost ? -2 : -1;
    if (retention_s > 0) {
        amqp_table_entry_t qa[2];
        amqp_table_t qt = {2, qa};
        topic_stream(name, st, sizeof(st));
        snprintf(age, sizeof(age), "%llds", (long long)retention_s);
        qa[0] = rq_amqp_utf8_entry("x-queue-type", "stream");
        qa[1] = rq_amqp_utf8_entry("x-max-age", age);
        amqp_queue_declare(h->conn, ADMIN_CH, amqp_cstring_bytes(st), 0, /*durable=*/1, 0, 0, qt);
        if (admin_ok(h, "queue.declare (stream)", err, errlen, &lost) != 0)
            return lost ? -2 : -1;
        amqp_queue_bind(h->conn, ADMIN_CH, amqp_cstring_bytes(st), amqp_cstring_bytes(ex),
                        amqp_cstring_bytes("#"), amqp_empty_table);
        if (admin_ok(h, "queue.bind (stream)", err, errlen, &lost) != 0)
            return lost ? -2 : -1;
    }
    return 0;
}

static size_t subscribers_of(rq_rt_hub_t *h, const char *name)
{
    size_t n = 0;

    for (rq_list_node_t *i = h->subs.head; i != NULL; i = i->next) {
        rq_rt_sub_t *s = RQ_LIST_ENTRY(i, rq_rt_sub_t, node);
        if (s->kind == RQ_RT_TOPIC && s->state != SUB_DONE && strcmp(s->name, name) == 0)
            n++;
    }
    return n;
}

static void topic_gone_locally(rq_rt_hub_t *h, const char *name)
{
    for (rq_list_node_t *i = h->subs.head; i != NULL; i = i->next) {
        rq_rt_sub_t *s = RQ_LIST_ENTRY(i, rq_rt_sub_t, node);
        if (s->kind == RQ_RT_TOPIC && s->state == SUB_LIVE && strcmp(s->name, name) == 0)
            sub_detach(h, s, "topic_deleted", "the topic was deleted");
    }
    known_set(h, name, 0);
}

static void job_list(rq_rt_hub_t *h, rq_rt_topic_job_t *j)
{
    char vhost[256], path[512], err[256];
    json_t *body = NULL, *arr;
    size_t plen = strlen(RQ_RT_TOPIC_PREFIX), i;
    json_t *q;
    int status;

    if (h->mgmt == NULL) {
        job_error(j, 503, h->mgmt_err[0] ? h->mgmt_err : "no management API");
        return;
    }
    if (rq_mgmt_escape(h->cfg->rabbitmq.vhost, vhost, sizeof(vhost)) != 0) {
        job_error(j, 503, "vhost name too long");
        return;
    }
    snprintf(path, sizeof(path), "/api/exchanges/%s?columns=name,type,arguments", vhost);
    if (rq_mgmt_get(h->mgmt, path, MGMT_TIMEOUT_MS, &status, &body, err, sizeof(err)) != 0 ||
        status != 200 || !json_is_array(body)) {
        job_error(j, 503, status != 200 ? "the management API refused the listing" : err);
        json_decref(body);
        return;
    }
    arr = json_array();
    json_array_foreach(body, i, q)
    {
        const char *name = json_string_value(json_object_get(q, "name"));
        const char *type = json_string_value(json_object_get(q, "type"));
        json_t *r = json_object_get(json_object_get(q, "arguments"), "x-relayq-retention-s");
        if (name == NULL || type == NULL || strcmp(type, "topic") != 0 ||
            strncmp(name, RQ_RT_TOPIC_PREFIX, plen) != 0 ||
            rq_qname_check(name + plen, NULL, 0) != 0)
            continue;
        json_array_append_new(
            arr, topic_obj(name + plen, json_is_integer(r) ? json_integer_value(r) : 0, 1));
    }
    json_decref(body);
    j->status = 200;
    j->body = json_pack("{s:o, s:I}", "topics", arr, "count", (json_int_t)json_array_size(arr));
}

/* CREATE of j->name, whose exchange exists when e. 0, 1 for the management worker first, or
 * -1 connection lost. */
static int job_create(rq_rt_hub_t *h, rq_rt_topic_job_t *j, int e)
{
    char err[512];
    int64_t ret;
    int rc;

    if (j->retention_s < 0 || j->retention_s > RQ_RT_RETENTION_MAX_S) {
        job_error(j, 400, "retention_s must be 0..31536000");
        return 0;
    }
    if (e) {
        if ((ret = retention_of(h, j)) == -2)
            return -1;
        if (ret == -3)
            return 1;
        if (ret >= 0 && ret != j->retention_s) {
            job_error(j, 409, "the topic exists with another retention_s");
            return 0;
        }
        if (ret == -1 && j->retention_s == 0) {
            job_error(j, 409, "the topic exists with a retention");
            return 0;
        }
    }
    rc = topic_declare(h, j->name, j->retention_s, err, sizeof(err));
    if (rc == -2)
        return -1;
    if (rc != 0) {
        job_error(j, 409, err);
        return 0;
    }
    known_set(h, j->name, 1);
    j->status = e ? 200 : 201;
    j->body = topic_obj(j->name, j->retention_s, 1);
    return 0;
}

/* GET of j->name, whose exchange exists when e. 0, 1 for the management worker first, or
 * -1 connection lost. */
static int job_get(rq_rt_hub_t *h, rq_rt_topic_job_t *j, int e)
{
    int64_t ret;

    if (!e) {
        known_set(h, j->name, 0);
        job_error(j, 404, "no such topic");
        return 0;
    }
    if ((ret = retention_of(h, j)) == -2)
        return -1;
    if (ret == -3)
        return 1;
    known_set(h, j->name, 1);
    j->status = 200;
    j->body = topic_obj(j->name, ret, ret >= 0);
    json_object_set_new(j->body, "subscribers",
                        json_integer((json_int_t)subscribers_of(h, j->name)));
    return 0;
}

/* DELETE of j->name (exchange ex, which exists when e). 0, or -1 connection lost. */
static int job_delete(rq_rt_hub_t *h, rq_rt_topic_job_t *j, const char *ex, int e)
{
    char st[RQ_QNAME_MAX + 48], err[512];
    int lost = 0;

    if (!e) {
        known_set(h, j->name, 0);
        job_error(j, 404, "no such topic");
        return 0;
    }
    topic_stream(j->name, st, sizeof(st));
    if ((e = queue_exists(h, st)) < 0)
        return -1;
    if (e) {
        amqp_queue_delete(h->conn, ADMIN_CH, amqp_cstring_bytes(st), 0, 0);
        if (admin_ok(h, "queue.delete", err, sizeof(err), &lost) != 0 && lost)
            return -1;
    }
    amqp_exchange_delete(h->conn, ADMIN_CH, amqp_cstring_bytes(ex), 0);
    if (admin_ok(h, "exchange.delete", err, sizeof(err), &lost) != 0 && lost)
        return -1;
    topic_gone_locally(h, j->name);
    j->status = 200;
    j->body = json_pack("{s:s}", "deleted", j->name);
    return 0;
}

/* Runs one topic job: 0 answered, 1 handed to the management worker (it comes back to the
 * hub thread, which runs it again with the worker's answer: a LIST is answered by then), or
 * -1 when the connection was lost (the job is answered 503). */
static int job_run(rq_rt_hub_t *h, rq_rt_topic_job_t *j)
{
    char ex[RQ_QNAME_MAX + 32], err[512];
    int e, rc;

    if (j->op == RQ_RT_T_LIST) {
        if (j->mgmt_state == 0 && h->mstarted)
            return 1;
        if (j->mgmt_state == 0)
            job_list(h, j); /* no management API: 503 */
        return 0;
    }
    if (rq_qname_check(j->name, err, sizeof(err)) != 0) {
        job_error(j, 400, err);
        return 0;
    }
    topic_exchange(j->name, ex, sizeof(ex));
    if ((e = exchange_exists(h, ex)) < 0)
        goto lost;
    switch (j->op) {
    case RQ_RT_T_CREATE:
        rc = job_create(h, j, e);
        break;
    case RQ_RT_T_GET:
        rc = job_get(h, j, e);
        break;
    case RQ_RT_T_DELETE:
        rc = job_delete(h, j, ex, e);
        break;
    default:
        job_error(j, 400, "unknown topic operation");
        return 0;
    }
    if (rc >= 0)
        return rc;

lost:
    job_error(j, 503, "the broker connection was lost");
    connection_lost(h, "a topic job's RPC failed");
    return -1;
}

/* ---- starting subscriptions ---- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* The group key of s: topic, then its sorted distinct binds, '\n'-separated. */
static void group_key(rq_rt_sub_t *s, char *key, size_t len)
{
    size_t off;

    qsort(s->binds, s->nbinds, sizeof(s->binds[0]), cmp_str);
    off = (size_t)snprintf(key, len, "%s", s->name);
    for (size_t i = 0; i < s->nbinds && off < len; i++) {
        if (i > 0 && strcmp(s->binds[i], s->binds[i - 1]) == 0)
            continue;
        off += (size_t)snprintf(key + off, len - off, "\n%s", s->binds[i]);
    }
}

/* Joins s to its group, or makes the group (the topic exchange exists). 0 started, 1
 * refused (ready answered), -1 connection lost. */
static int start_group(rq_rt_hub_t *h, rq_rt_sub_t *s)
{
    char key[sizeof(((group_t *)0)->key)], ex[RQ_QNAME_MAX + 32], err[512];
    group_t *g;
    amqp_queue_declare_ok_t *q;
    amqp_bytes_t qname;
    int lost = 0;

    group_key(s, key, sizeof(key));
    g = rq_hmap_get(h->group_of, key);
    if (g != NULL) {
        rq_list_push_back(&g->members, &s->gnode);
        s->group = g;
        return 0;
    }
    topic_exchange(s->name, ex, sizeof(ex)); /* exists: start_topic() looked */
    q = amqp_queue_declare(h->conn, ADMIN_CH, amqp_empty_bytes, 0, 0, /*exclusive=*/1,
                           /*auto_delete=*/1, amqp_empty_table);
    if (admin_ok(h, "queue.declare", err, sizeof(err), &lost) != 0)
        goto refused;
    qname = amqp_bytes_malloc_dup(q->queue);
    for (size_t i = 0; i < s->nbinds; i++) {
        amqp_queue_bind(h->conn, ADMIN_CH, qname, amqp_cstring_bytes(ex),
                        amqp_cstring_bytes(s->binds[i]), amqp_empty_table);
        if (admin_ok(h, "queue.bind", err, sizeof(err), &lost) != 0) {
            if (!lost) { /* never consumed, so auto-delete would not fire: delete it */
                char e2[128];
                amqp_queue_delete(h->conn, ADMIN_CH, qname, 0, 0);
                (void)admin_ok(h, "queue.delete", e2, sizeof(e2), &lost);
            }
            amqp_bytes_free(qname);
            goto refused;
        }
    }
    if ((g = calloc(1, sizeof(*g))) == NULL) {
        amqp_bytes_free(qname);
        snprintf(err, sizeof(err), "out of memory");
        goto refused;
    }
    snprintf(g->key, sizeof(g->key), "%s", key);
    snprintf(g->topic, sizeof(g->topic), "%s", s->name);
    snprintf(g->queue, sizeof(g->queue), "%.*s", (int)qname.len, (const char *)qname.bytes);
    snprintf(g->ctag, sizeof(g->ctag), "rt-g-%" PRIu64, ++h->next_gid);
    amqp_basic_consume(h->conn, GROUP_CH, qname, amqp_cstring_bytes(g->ctag), 0, /*no_ack=*/1, 0,
                       amqp_empty_table);
    amqp_bytes_free(qname);
    if (amqp_get_rpc_reply(h->conn).reply_type != AMQP_RESPONSE_NORMAL) {
        free(g);
        return -1; /* the group channel is every group's: start over */
    }
    if (rq_hmap_put(h->group_of, g->key, g) != 0 || rq_hmap_put(h->group_by_tag, g->ctag, g) != 0) {
        rq_hmap_del(h->group_of, g->key);
        amqp_basic_cancel(h->conn, GROUP_CH, amqp_cstring_bytes(g->ctag));
        free(g);
        snprintf(err, sizeof(err), "out of memory");
        goto refused;
    }
    rq_list_push_back(&h->groups, &g->node);
    rq_list_push_back(&g->members, &s->gnode);
    s->group = g;
    return 0;

refused:
    if (lost)
        return -1;
    sub_ready(s, 400, err);
    return 1;
}

/* A channel of s's own, with basic.qos prefetch and basic.consume of queue q from args. */
static int start_channel(rq_rt_hub_t *h, rq_rt_sub_t *s, const char *q, int prefetch,
                         amqp_table_t args, unsigned notfound, const char *notfound_msg)
{
    amqp_rpc_reply_t r;
    char err[512];
    int lost, code;
    amqp_channel_t ch = channel_take(h, &lost);

    if (ch == 0) {
        if (lost)
            return -1;
        sub_ready(s, 503, "no AMQP channel free on the hub's connection");
        return 1;
    }
    amqp_basic_qos(h->conn, ch, 0, (uint16_t)prefetch, 0);
    r = amqp_get_rpc_reply(h->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        amqp_basic_consume(h->conn, ch, amqp_cstring_bytes(q), amqp_empty_bytes, 0, /*no_ack=*/0, 0,
                           args);
        r = amqp_get_rpc_reply(h->conn);
    }
    if (r.reply_type == AMQP_RESPONSE_NORMAL) {
        s->ch = ch;
        h->ch_sub[ch] = s;
        return 0;
    }
    rq_amqp_check_reply(r, "basic.consume", err, sizeof(err));
    if ((code = rpc_failed(h, ch, r)) < 0)
        return -1;
    if (code == AMQP_NOT_FOUND)
        sub_ready(s, notfound, notfound_msg);
    else
        sub_ready(s, 400, err);
    return 1;
}

/* A topic subscription. Reads the topic's stream on a channel of its own (M_STREAM, event
 * ids = stream offsets) when it resumes, and also when it is live on a topic with a retained
 * stream (from "next"): so a client's Last-Event-ID is always an offset of that stream. A
 * live subscription of a topic without retention joins a shared group. 0 started, 1
 * refused (ready answered), -1 connection lost. */
static int start_topic(rq_rt_hub_t *h, rq_rt_sub_t *s)
{
    char ex[RQ_QNAME_MAX + 32], st[RQ_QNAME_MAX + 48];
    amqp_table_entry_t a[1];
    amqp_table_t t = {1, a};
    int e;

    if (!s->resume) {
        char key[sizeof(((group_t *)0)->key)];
        group_key(s, key, sizeof(key));
        if (rq_hmap_get(h->group_of, key) != NULL)
            return start_group(h, s); /* a group: the topic has no stream */
    }
    topic_exchange(s->name, ex, sizeof(ex));
    topic_stream(s->name, st, sizeof(st));
    if ((e = exchange_exists(h, ex)) < 0)
        return -1;
    if (e == 0) {
        sub_ready(s, 404, "no such topic");
        return 1;
    }
    if (s->resume) {
        s->mode = M_STREAM;
        a[0] = rq_amqp_i64_entry("x-stream-offset", (int64_t)(s->after_offset + 1));
        return start_channel(h, s, st, STREAM_PREFETCH, t, 400, "topic has no retention");
    }
    if ((e = queue_exists(h, st)) < 0)
        return -1;
    if (e == 0) {
        s->mode = M_GROUP;
        return start_group(h, s);
    }
    s->mode = M_STREAM;
    a[0] = rq_amqp_utf8_entry("x-stream-offset", "next");
    return start_channel(h, s, st, STREAM_PREFETCH, t, 404, "no such topic");
}

static void sub_start(rq_rt_hub_t *h, rq_rt_sub_t *s)
{
    int rc;

    rq_list_push_back(&h->subs, &s->node);
    if (h->conn == NULL) {
        s->state = SUB_DONE;
        sub_ready(s, 503, "the broker is unreachable");
        return;
    }
    if (s->kind == RQ_RT_QUEUE) {
        s->mode = M_QUEUE;
        rc = start_channel(h, s, s->name, h->cfg->rt_queue_prefetch, amqp_empty_table, 404,
                           "no such queue");
    } else {
        rc = start_topic(h, s);
    }
    if (rc < 0) {
        connection_lost(h, "starting a subscription");
        return;
    }
    if (rc > 0) {
        s->state = SUB_DONE;
        return;
    }
    s->state = SUB_LIVE;
    if (s->kind == RQ_RT_TOPIC)
        known_set(h, s->name, 1);
    sub_ready(s, 0, "");
}

/* ---- deliveries ---- */

/* Hands ev to s; ends it as a slow consumer when its buffer is full. */
/* Hands ev to s when its filter matches fm; seq_id: ev->id (in buffer id) is s's next
 * sequence number. The filter is evaluated under s's lock, for it is borrowed only until
 * rq_rt_unsubscribe() (which may run on another thread meanwhile). */
static void sub_deliver(rq_rt_hub_t *h, rq_rt_sub_t *s, const rq_filter_msg_t *fm,
                        const rq_rt_event_t *ev, char *id, int seq_id)
{
    int rc = 0, sent = 0;

    pthread_mutex_lock(&s->lock);
    if (!s->gone && rq_filter_eval(s->filter, fm)) {
        if (seq_id)
            snprintf(id, RQ_RT_EVENT_ID_MAX, "%" PRIu64, ++s->seq);
        rc = s->sink.deliver(s->sink.arg, ev);
        sent = 1;
    }
    pthread_mutex_unlock(&s->lock);
    if (!sent)
        return;
    if (rc == 0) {
        rq_series_inc(h->m_delivered);
        return;
    }
    rq_series_inc(h->m_slow);
    sub_detach(h, s, "slow_consumer",
               "the subscriber did not read fast enough: its send buffer is full");
}

static int64_t stream_offset(const amqp_basic_properties_t *p, int *has)
{
    const amqp_field_value_t *v = rq_amqp_header(p, "x-stream-offset");

    *has = v != NULL && (v->kind == AMQP_FIELD_KIND_I64 || v->kind == AMQP_FIELD_KIND_U64);
    return *has ? v->value.i64 : 0;
}

static void deliver_group(rq_rt_hub_t *h, const amqp_basic_deliver_t *d, amqp_message_t *msg)
{
    char ctag[64], id[RQ_RT_EVENT_ID_MAX];
    group_t *g;
    rq_rt_event_in_t in;
    rq_rt_event_msg_t em;
    rq_rt_event_t ev;

    if (d->consumer_tag.len >= sizeof(ctag))
        return;
    memcpy(ctag, d->consumer_tag.bytes, d->consumer_tag.len);
    ctag[d->consumer_tag.len] = '\0';
    g = rq_hmap_get(h->group_by_tag, ctag);
    if (g == NULL)
        return; /* a cancelled group's late delivery */
    memset(&in, 0, sizeof(in));
    in.kind = RQ_RT_TOPIC;
    in.name = g->topic;
    in.routing_key = d->routing_key;
    in.props = &msg->properties;
    in.body = msg->body;
    if (rq_rt_event_make(&in, &em) != 0)
        return;
    ev.json = em.json;
    ev.len = em.len;
    ev.tag = 0;
    ev.id = id;
    for (rq_list_node_t *n = g->members.head, *next; n != NULL; n = next) {
        rq_rt_sub_t *s = RQ_LIST_ENTRY(n, rq_rt_sub_t, gnode);
        /* A slow member leaves the group (g is freed with its last member: then there is
         * no next one either). */
        next = n->next;
        sub_deliver(h, s, &em.fm, &ev, id, 1);
    }
    rq_rt_event_clear(&em);
}

static int deliver_channel(rq_rt_hub_t *h, rq_rt_sub_t *s, const amqp_basic_deliver_t *d,
                           amqp_message_t *msg)
{
    char id[RQ_RT_EVENT_ID_MAX];
    rq_rt_event_in_t in;
    rq_rt_event_msg_t em;
    rq_rt_event_t ev;
    int has = 0, match = 1;
    int64_t off = 0;

    memset(&in, 0, sizeof(in));
    in.kind = s->kind;
    in.name = s->name;
    in.routing_key = d->routing_key;
    in.props = &msg->properties;
    in.body = msg->body;
    in.redelivered = d->redelivered;
    if (s->mode == M_STREAM) {
        off = stream_offset(&msg->properties, &has);
        in.has_offset = has;
        in.offset = (uint64_t)off;
    }
    if (rq_rt_event_make(&in, &em) != 0)
        return 0;
    if (s->mode == M_STREAM) {
        match = 0;
        for (size_t i = 0; i < s->nbinds && !match; i++)
            match = rq_tmatch(s->binds[i], em.routing_key);
        snprintf(id, sizeof(id), "%" PRIu64, (uint64_t)off);
        ev.tag = 0;
    } else {
        snprintf(id, sizeof(id), "%" PRIu64, (uint64_t)d->delivery_tag);
        ev.tag = d->delivery_tag;
    }
    ev.json = em.json;
    ev.len = em.len;
    ev.id = id;
    if (match)
        sub_deliver(h, s, &em.fm, &ev, id, 0);
    rq_rt_event_clear(&em);
    if (s->mode == M_STREAM && s->state == SUB_LIVE) {
        s->last_dtag = d->delivery_tag;
        if (++s->unacked >= STREAM_ACK_EVERY) {
            if (amqp_basic_ack(h->conn, s->ch, s->last_dtag, 1) != 0)
                return -1;
            s->unacked = 0;
        }
    }
    return 0;
}

/* A subscription's channel went (closed by the broker, or its consumer cancelled). */
static void channel_gone(rq_rt_hub_t *h, rq_rt_sub_t *s, int code)
{
    const char *reason = s->kind == RQ_RT_QUEUE ? "queue_deleted" : "topic_deleted";

    if (code != 0 && code != AMQP_NOT_FOUND)
        reason = "broker_lost";
    sub_detach(h, s, reason,
               code == 0 || code == AMQP_NOT_FOUND ? "deleted on the broker"
                                                   : "the broker closed the subscription");
}

static int handle_cancel(rq_rt_hub_t *h, amqp_channel_t ch, const amqp_basic_cancel_t *c)
{
    if (ch == GROUP_CH) {
        for (rq_list_node_t *n = h->groups.head; n != NULL; n = n->next) {
            group_t *g = RQ_LIST_ENTRY(n, group_t, node);
            if (c->consumer_tag.len == strlen(g->ctag) &&
                memcmp(g->ctag, c->consumer_tag.bytes, c->consumer_tag.len) == 0) {
                size_t left = 0;
                for (rq_list_node_t *m = g->members.head; m != NULL; m = m->next)
                    left++;
                /* g is freed with its last member: never looked at after that */
                while (left-- > 0) {
                    rq_rt_sub_t *s = RQ_LIST_ENTRY(g->members.head, rq_rt_sub_t, gnode);
                    sub_detach(h, s, "topic_deleted", "the subscription's queue was deleted");
                }
                break;
            }
        }
        return 0;
    }
    if (ch <= CH_CAP && h->ch_sub[ch] != NULL)
        channel_gone(h, h->ch_sub[ch], 0);
    return 0;
}

static int handle_frame(rq_rt_hub_t *h, amqp_frame_t *f)
{
    amqp_channel_t ch = f->channel;

    if (f->frame_type != AMQP_FRAME_METHOD)
        return 0; /* the content of a delivery read elsewhere: none reaches here */
    switch (f->payload.method.id) {
    case AMQP_BASIC_DELIVER_METHOD: {
        amqp_basic_deliver_t d = *(amqp_basic_deliver_t *)f->payload.method.decoded;
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(h->conn, ch, &msg, 0);
        int rc = 0;
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            connection_lost(h, "reading a delivery");
            return -1;
        }
        if (ch == GROUP_CH)
            deliver_group(h, &d, &msg);
        else if (ch <= CH_CAP && h->ch_state[ch] == CH_OPEN && h->ch_sub[ch] != NULL)
            rc = deliver_channel(h, h->ch_sub[ch], &d, &msg);
        amqp_destroy_message(&msg);
        if (rc != 0)
            connection_lost(h, "acking a stream");
        return rc;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        return handle_cancel(h, ch, f->payload.method.decoded);
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *c = f->payload.method.decoded;
        amqp_channel_close_ok_t ok;
        int code = c->reply_code;
        rq_warn("real-time hub: the broker closed channel %u: %d %.*s", ch, code,
                (int)c->reply_text.len, (char *)c->reply_text.bytes);
        if (amqp_send_method(h->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != 0) {
            connection_lost(h, "answering channel.close");
            return -1;
        }
        if (ch == GROUP_CH || ch == ADMIN_CH) {
            /* not expected: start over */
            connection_lost(h, "the broker closed a hub channel");
            return -1;
        }
        if (ch <= CH_CAP) {
            h->ch_state[ch] = CH_FREE;
            if (h->ch_sub[ch] != NULL) {
                rq_rt_sub_t *s = h->ch_sub[ch];
                h->ch_sub[ch] = NULL;
                s->ch = 0;
                channel_gone(h, s, code);
            }
        }
        return 0;
    }
    case AMQP_CHANNEL_CLOSE_OK_METHOD:
        if (ch <= CH_CAP && h->ch_state[ch] == CH_CLOSING)
            h->ch_state[ch] = CH_FREE;
        return 0;
    case AMQP_CONNECTION_CLOSE_METHOD:
        connection_lost(h, "the broker closed the connection");
        return -1;
    default:
        return 0;
    }
}

static void read_frames(rq_rt_hub_t *h)
{
    for (int n = 0; n < FRAME_BUDGET && h->conn != NULL; n++) {
        amqp_frame_t f;
        struct timeval tv = {0, 0};
        int rc = amqp_simple_wait_frame_noblock(h->conn, &f, &tv);
        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        if (rc != AMQP_STATUS_OK) {
            connection_lost(h, amqp_error_string2(rc));
            return;
        }
        if (handle_frame(h, &f) != 0)
            return;
    }
    if (h->conn == NULL)
        return;
    /* idle: ack what the stream readers read */
    if (!amqp_data_in_buffer(h->conn) && !amqp_frames_enqueued(h->conn)) {
        for (rq_list_node_t *i = h->subs.head; i != NULL; i = i->next) {
            rq_rt_sub_t *s = RQ_LIST_ENTRY(i, rq_rt_sub_t, node);
            if (s->mode == M_STREAM && s->state == SUB_LIVE && s->unacked > 0) {
                if (amqp_basic_ack(h->conn, s->ch, s->last_dtag, 1) != 0) {
                    connection_lost(h, "acking a stream");
                    return;
                }
                s->unacked = 0;
            }
        }
        amqp_maybe_release_buffers(h->conn);
    }
}

/* Every CHECK_NS: the topics of live topic subscriptions still exist (another replica may
 * have deleted one: its bindings are gone, and nothing else would tell). */
/* Binds group g's queue again with each of its patterns (the key's lines after the topic):
 * idempotent on the broker. 0, 1 when the topic exchange is gone, -1 connection lost. */
static int rebind_group(rq_rt_hub_t *h, group_t *g)
{
    char ex[RQ_QNAME_MAX + 32], bind[RQ_RT_BIND_MAX + 1], err[256];
    const char *p = strchr(g->key, '\n');
    int lost = 0;

    topic_exchange(g->topic, ex, sizeof(ex));
    while (p != NULL) {
        const char *b = p + 1, *e = strchr(b, '\n');
        int bl = (int)(e != NULL ? (size_t)(e - b) : strlen(b));
        snprintf(bind, sizeof(bind), "%.*s", bl, b);
        amqp_queue_bind(h->conn, ADMIN_CH, amqp_cstring_bytes(g->queue), amqp_cstring_bytes(ex),
                        amqp_cstring_bytes(bind), amqp_empty_table);
        if (admin_ok(h, "queue.bind (check)", err, sizeof(err), &lost) != 0)
            return lost ? -1 : 1;
        p = e;
    }
    return 0;
}

/* A topic deleted and created again on another replica between two checks leaves a group's
 * queue without its bindings (they went with the old exchange): its members would get
 * nothing, with no end event. So every check binds each group again; a group whose exchange
 * is gone ends its members (topic_deleted). Returns 0, or -1 when the connection was lost. */
static int rebind_groups(rq_rt_hub_t *h)
{
    char gone[16][RQ_QNAME_MAX + 1];
    size_t ngone = 0;

    for (rq_list_node_t *i = h->groups.head; i != NULL && h->conn != NULL; i = i->next) {
        group_t *g = RQ_LIST_ENTRY(i, group_t, node);
        int rc = rebind_group(h, g);
        if (rc < 0)
            return -1;
        if (rc > 0 && ngone < 16)
            snprintf(gone[ngone++], sizeof(gone[0]), "%s", g->topic);
    }
    for (size_t k = 0; k < ngone; k++)
        topic_gone_locally(h, gone[k]);
    return 0;
}

static void check_topics(rq_rt_hub_t *h)
{
    char ex[RQ_QNAME_MAX + 32], done[64][RQ_QNAME_MAX + 1];
    size_t ndone = 0;

    for (rq_list_node_t *i = h->subs.head; i != NULL && h->conn != NULL; i = i->next) {
        rq_rt_sub_t *s = RQ_LIST_ENTRY(i, rq_rt_sub_t, node);
        int seen = 0, e;
        if (s->kind != RQ_RT_TOPIC || s->state != SUB_LIVE)
            continue;
        for (size_t k = 0; k < ndone && !seen; k++)
            seen = strcmp(done[k], s->name) == 0;
        if (seen)
            continue;
        if (ndone < 64)
            snprintf(done[ndone++], sizeof(done[0]), "%s", s->name);
        topic_exchange(s->name, ex, sizeof(ex));
        if ((e = exchange_exists(h, ex)) < 0) {
            connection_lost(h, "checking a topic");
            return;
        }
        if (e)
            known_set(h, s->name, 1);
        else
            topic_gone_locally(h, s->name);
    }
    if (h->conn != NULL && rebind_groups(h) != 0)
        connection_lost(h, "binding a group again");
}

/* ---- the inbox ---- */

static void key_release(rq_rt_hub_t *h, const char *key_id)
{
    uintptr_t n;

    if (key_id[0] == '\0')
        return;
    n = (uintptr_t)rq_hmap_get(h->per_key, key_id);
    if (n <= 1)
        rq_hmap_del(h->per_key, key_id);
    else
        rq_hmap_put(h->per_key, key_id, (void *)(n - 1));
}

static void take_inbox(rq_rt_hub_t *h, rq_list_t *cmds, rq_rt_topic_job_t **jobs, int *stopping)
{
    pthread_mutex_lock(&h->lock);
    *cmds = h->inbox;
    memset(&h->inbox, 0, sizeof(h->inbox));
    *jobs = h->jobs;
    h->jobs = NULL;
    h->jobs_tail = &h->jobs;
    *stopping = h->stopping;
    pthread_mutex_unlock(&h->lock);
}

static void run_cmds(rq_rt_hub_t *h, rq_list_t *cmds)
{
    while (cmds->head != NULL) {
        cmd_t *c = RQ_LIST_ENTRY(cmds->head, cmd_t, node);
        rq_list_unlink(cmds, &c->node);
        switch (c->kind) {
        case CMD_SUB:
            sub_start(h, c->sub);
            break;
        case CMD_UNSUB:
            sub_detach(h, c->sub, NULL, NULL);
            rq_list_unlink(&h->subs, &c->sub->node);
            sub_free(c->sub);
            break;
        case CMD_ACK:
            if (h->conn != NULL && c->sub->state == SUB_LIVE && c->sub->mode == M_QUEUE &&
                amqp_basic_ack(h->conn, c->sub->ch, c->tag, 0) != 0)
                connection_lost(h, "basic.ack");
            break;
        }
        free(c);
    }
}

/* Answers j 503 "the hub is stopping" (dropping a body the worker may have made). */
static void job_stopping(rq_rt_topic_job_t *j)
{
    json_decref(j->body);
    j->body = NULL;
    job_error(j, 503, "the hub is stopping");
    j->done(j, j->done_arg);
}

/* Hands j to the management worker (it comes back through h->jobs). */
static void mgmt_defer(rq_rt_hub_t *h, rq_rt_topic_job_t *j)
{
    pthread_mutex_lock(&h->lock);
    j->mgmt_state = 1;
    j->next = NULL;
    *h->mjobs_tail = j;
    h->mjobs_tail = &j->next;
    pthread_cond_signal(&h->mcond);
    pthread_mutex_unlock(&h->lock);
}

static void run_jobs(rq_rt_hub_t *h, rq_rt_topic_job_t *j)
{
    while (j != NULL) {
        rq_rt_topic_job_t *next = j->next;
        if (j->op == RQ_RT_T_LIST && j->mgmt_state == 2)
            ; /* answered by the worker */
        else if (h->conn == NULL)
            job_error(j, 503, "the broker is unreachable");
        else if (job_run(h, j) == 1) {
            mgmt_defer(h, j);
            j = next;
            continue;
        }
        j->done(j, j->done_arg);
        j = next;
    }
}

/* The management worker: asks the management API for the jobs the hub thread hands it
 * (LIST: the whole answer; CREATE/GET: the topic's retention) and gives them back to the
 * hub thread; answers them 503 itself once the hub thread is gone. */
static void *mgmt_main(void *arg)
{
    rq_rt_hub_t *h = arg;

    pthread_mutex_lock(&h->lock);
    for (;;) {
        rq_rt_topic_job_t *j;
        int back;
        while (h->mjobs == NULL && !h->mstop)
            pthread_cond_wait(&h->mcond, &h->lock);
        if ((j = h->mjobs) == NULL)
            break;
        if ((h->mjobs = j->next) == NULL)
            h->mjobs_tail = &h->mjobs;
        j->next = NULL;
        if (h->mstop) {
            pthread_mutex_unlock(&h->lock);
            job_stopping(j);
            pthread_mutex_lock(&h->lock);
            continue;
        }
        pthread_mutex_unlock(&h->lock);
        if (j->op == RQ_RT_T_LIST)
            job_list(h, j);
        else
            j->mgmt_rc = mgmt_retention(h, j->name, &j->mgmt_retention_s);
        pthread_mutex_lock(&h->lock);
        j->mgmt_state = 2;
        back = !h->thread_done;
        if (back) {
            *h->jobs_tail = j;
            h->jobs_tail = &j->next;
        }
        pthread_mutex_unlock(&h->lock);
        if (back)
            rq_wakeup_signal(h->wake);
        else
            job_stopping(j);
        pthread_mutex_lock(&h->lock);
    }
    pthread_mutex_unlock(&h->lock);
    return NULL;
}

/* Stops and joins the management worker (its jobs answered 503). */
static void mgmt_stop(rq_rt_hub_t *h)
{
    if (!h->mstarted)
        return;
    pthread_mutex_lock(&h->lock);
    h->mstop = 1;
    pthread_cond_signal(&h->mcond);
    pthread_mutex_unlock(&h->lock);
    pthread_join(h->mthread, NULL);
    h->mstarted = 0;
}

static void wait_for_work(rq_rt_hub_t *h, int timeout_ms)
{
    struct pollfd pf[2];
    nfds_t n = 1;

    if (h->conn != NULL && (amqp_data_in_buffer(h->conn) || amqp_frames_enqueued(h->conn)))
        return;
    pf[0].fd = rq_wakeup_fd(h->wake);
    pf[0].events = POLLIN;
    if (h->conn != NULL) {
        pf[1].fd = amqp_get_sockfd(h->conn);
        pf[1].events = POLLIN;
        n = 2;
    }
    poll(pf, n, timeout_ms);
}

static void *hub_main(void *arg)
{
    rq_rt_hub_t *h = arg;
    rq_list_t cmds;
    rq_rt_topic_job_t *jobs;
    int stopping;

    rq_thread_name("rq-hub");
    for (;;) {
        int64_t now = rq_mono_ns();

        rq_wakeup_drain(h->wake);
        take_inbox(h, &cmds, &jobs, &stopping);
        run_cmds(h, &cmds);
        if (stopping) {
            while (jobs != NULL) {
                rq_rt_topic_job_t *next = jobs->next;
                job_stopping(jobs);
                jobs = next;
            }
            break;
        }
        run_jobs(h, jobs);
        if (h->conn == NULL) {
            if (now >= h->next_attempt_ns)
                connect_broker(h);
            if (h->conn == NULL)
                wait_for_work(h, 50);
            continue;
        }
        read_frames(h);
        if (h->conn != NULL && now - h->last_check_ns >= CHECK_NS) {
            h->last_check_ns = now;
            check_topics(h);
        }
        wait_for_work(h, 200);
    }
    all_end(h, "shutdown", "the producer is shutting down");
    if (h->conn != NULL) {
        rq_amqp_close(h->conn);
        h->conn = NULL;
    }
    atomic_store(&h->connected, 0);
    /* From here on rq_rt_unsubscribe frees on its own. */
    pthread_mutex_lock(&h->lock);
    h->thread_done = 1;
    cmds = h->inbox;
    memset(&h->inbox, 0, sizeof(h->inbox));
    jobs = h->jobs;
    h->jobs = NULL;
    h->jobs_tail = &h->jobs;
    pthread_mutex_unlock(&h->lock);
    while (cmds.head != NULL) {
        cmd_t *c = RQ_LIST_ENTRY(cmds.head, cmd_t, node);
        rq_list_unlink(&cmds, &c->node);
        if (c->kind == CMD_SUB) {
            c->sub->state = SUB_DONE;
            sub_ready(c->sub, 503, "the hub is stopping");
        } else if (c->kind == CMD_UNSUB) {
            sub_free(c->sub); /* h->subs is not looked at any more */
        }
        free(c);
    }
    while (jobs != NULL) {
        rq_rt_topic_job_t *next = jobs->next;
        job_stopping(jobs);
        jobs = next;
    }
    return NULL;
}

/* ---- the API ---- */

rq_rt_hub_t *rq_rt_hub_new(const rq_config_t *cfg, rq_metrics_t *metrics)
{
    rq_rt_hub_t *h = calloc(1, sizeof(*h));
    static const char *const kind_l[] = {"kind"}, *const reason_l[] = {"reason"};
    rq_metric_t *f;

    if (h == NULL)
        return NULL;
    h->cfg = cfg;
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->mcond, NULL);
    h->jobs_tail = &h->jobs;
    h->mjobs_tail = &h->mjobs;
    h->per_key = rq_hmap_new(0);
    h->known = rq_hmap_new(0);
    h->group_of = rq_hmap_new(0);
    h->group_by_tag = rq_hmap_new(0);
    h->wake = rq_wakeup_new();
    if (h->per_key == NULL || h->known == NULL || h->group_of == NULL || h->group_by_tag == NULL ||
        h->wake == NULL)
        goto fail;
    rq_backoff_init(&h->backoff, 100, 5000, 1);
    h->mgmt = rq_mgmt_new(&cfg->rabbitmq, h->mgmt_err, sizeof(h->mgmt_err));
    if (metrics != NULL) {
        f = rq_metrics_gauge(metrics, "producer_rt_subscriptions",
                             "Real-time subscriptions open, by kind", 1, kind_l);
        h->m_subs_topic = rq_metric_series(f, 1, (const char *const[]){"topic"});
        h->m_subs_queue = rq_metric_series(f, 1, (const char *const[]){"queue"});
        f = rq_metrics_counter(metrics, "producer_rt_messages_delivered_total",
                               "Messages handed to real-time subscribers", 0, NULL);
        h->m_delivered = rq_metric_series(f, 0, NULL);
        f = rq_metrics_counter(metrics, "producer_rt_slow_disconnects_total",
                               "Real-time subscriptions ended as slow consumers", 0, NULL);
        h->m_slow = rq_metric_series(f, 0, NULL);
        f = rq_metrics_counter(metrics, "producer_rt_subscriptions_refused_total",
                               "Real-time subscriptions refused, by reason", 1, reason_l);
        h->m_ref_limit = rq_metric_series(f, 1, (const char *const[]){"limit"});
        h->m_ref_key = rq_metric_series(f, 1, (const char *const[]){"key_limit"});
        h->m_ref_unavail = rq_metric_series(f, 1, (const char *const[]){"unavailable"});
    }
    if (h->mgmt != NULL && pthread_create(&h->mthread, NULL, mgmt_main, h) == 0)
        h->mstarted = 1; /* else the hub thread asks the management API itself */
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0)
        goto fail;
    h->started = 1;
    return h;

fail:
    mgmt_stop(h);
    rq_mgmt_free(h->mgmt);
    rq_wakeup_free(h->wake);
    rq_hmap_free(h->per_key);
    rq_hmap_free(h->known);
    rq_hmap_free(h->group_of);
    rq_hmap_free(h->group_by_tag);
    pthread_cond_destroy(&h->mcond);
    pthread_mutex_destroy(&h->lock);
    free(h);
    return NULL;
}

void rq_rt_hub_stop(rq_rt_hub_t *h)
{
    int join;

    if (h == NULL)
        return;
    pthread_mutex_lock(&h->lock);
    join = h->started && !h->stopping;
    h->stopping = 1;
    pthread_mutex_unlock(&h->lock);
    if (!join)
        return;
    rq_wakeup_signal(h->wake);
    pthread_join(h->thread, NULL);
    mgmt_stop(h); /* after the hub thread: it may still hand the worker a job */
}

static void free_known(const char *key, void *value, void *arg)
{
    (void)key;
    (void)arg;
    free(value);
}

void rq_rt_hub_free(rq_rt_hub_t *h)
{
    if (h == NULL)
        return;
    rq_rt_hub_stop(h);
    rq_hmap_each(h->known, free_known, NULL);
    rq_hmap_free(h->known);
    rq_hmap_free(h->per_key);
    rq_hmap_free(h->group_of);
    rq_hmap_free(h->group_by_tag);
    rq_mgmt_free(h->mgmt);
    rq_wakeup_free(h->wake);
    pthread_cond_destroy(&h->mcond);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

static rq_rt_sub_t *sub_new(const rq_rt_sub_spec_t *spec, const rq_rt_sink_t *sink, char *err,
                            size_t errlen)
{
    rq_rt_sub_t *s;
    pthread_mutexattr_t a;

    if (spec->name == NULL || rq_qname_check(spec->name, err, errlen) != 0)
        return NULL;
    if (spec->nbinds > RQ_RT_BINDS_MAX) {
        snprintf(err, errlen, "at most %d bind patterns", RQ_RT_BINDS_MAX);
        return NULL;
    }
    for (size_t i = 0; i < spec->nbinds; i++) {
        if (spec->binds[i] == NULL || strlen(spec->binds[i]) > RQ_RT_BIND_MAX) {
            snprintf(err, errlen, "a bind pattern is longer than %d bytes", RQ_RT_BIND_MAX);
            return NULL;
        }
    }
    if ((s = calloc(1, sizeof(*s))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&s->lock, &a);
    pthread_mutexattr_destroy(&a);
    s->sink = *sink;
    s->kind = spec->kind;
    snprintf(s->name, sizeof(s->name), "%s", spec->name);
    for (size_t i = 0; i < spec->nbinds; i++)
        snprintf(s->binds[i], sizeof(s->binds[i]), "%s", spec->binds[i]);
    s->nbinds = spec->nbinds;
    if (s->nbinds == 0) {
        snprintf(s->binds[0], sizeof(s->binds[0]), "#");
        s->nbinds = 1;
    }
    s->filter = spec->filter;
    s->resume = spec->resume;
    s->after_offset = spec->after_offset;
    snprintf(s->key_id, sizeof(s->key_id), "%s", spec->key_id ? spec->key_id : "");
    return s;
}

rq_rt_sub_t *rq_rt_subscribe(rq_rt_hub_t *h, const rq_rt_sub_spec_t *spec, const rq_rt_sink_t *sink,
                             unsigned *status, char *err, size_t errlen)
{
    rq_rt_sub_t *s;
    cmd_t *c;
    int max, per_key;
    uintptr_t n = 0;

    *status = 400;
    if ((s = sub_new(spec, sink, err, errlen)) == NULL)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        *status = 503;
        snprintf(err, errlen, "out of memory");
        sub_free(s);
        return NULL;
    }
    max = h->cfg->rt_max_subscriptions;
    per_key = h->cfg->rt_max_subscriptions_per_key;
    pthread_mutex_lock(&h->lock);
    if (h->stopping || h->thread_done || !atomic_load(&h->connected)) {
        *status = 503;
        snprintf(err, errlen,
                 h->stopping ? "the producer is shutting down" : "no connection to the broker yet");
        rq_series_inc(h->m_ref_unavail);
        goto refused;
    }
    if (h->nsubs >= (size_t)max) {
        *status = 503;
        snprintf(err, errlen, "too many subscriptions (RT_MAX_SUBSCRIPTIONS %d)", max);
        rq_series_inc(h->m_ref_limit);
        goto refused;
    }
    if (s->key_id[0] != '\0' && per_key > 0) {
        n = (uintptr_t)rq_hmap_get(h->per_key, s->key_id);
        if (n >= (uintptr_t)per_key) {
            *status = 429;
            snprintf(err, errlen,
                     "too many subscriptions for this key (RT_MAX_SUBSCRIPTIONS_PER_KEY %d)",
                     per_key);
            rq_series_inc(h->m_ref_key);
            goto refused;
        }
    }
    if (s->key_id[0] != '\0' && rq_hmap_put(h->per_key, s->key_id, (void *)(n + 1)) != 0) {
        *status = 503;
        snprintf(err, errlen, "out of memory");
        goto refused;
    }
    h->nsubs++;
    metrics_count(h, s->kind, 1);
    c->kind = CMD_SUB;
    c->sub = s;
    rq_list_push_back(&h->inbox, &c->node);
    pthread_mutex_unlock(&h->lock);
    rq_wakeup_signal(h->wake);
    *status = 0;
    return s;

refused:
    pthread_mutex_unlock(&h->lock);
    free(c);
    sub_free(s);
    return NULL;
}

static int push_cmd(rq_rt_hub_t *h, cmd_kind_t kind, rq_rt_sub_t *s, uint64_t tag)
{
    cmd_t *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    c->kind = kind;
    c->sub = s;
    c->tag = tag;
    rq_list_push_back(&h->inbox, &c->node);
    return 0;
}

void rq_rt_ack(rq_rt_hub_t *h, rq_rt_sub_t *s, uint64_t tag)
{
    int wake = 0;

    if (h == NULL || s == NULL || s->kind != RQ_RT_QUEUE || tag == 0)
        return;
    pthread_mutex_lock(&h->lock);
    if (!h->thread_done)
        wake = push_cmd(h, CMD_ACK, s, tag) == 0;
    pthread_mutex_unlock(&h->lock);
    if (wake)
        rq_wakeup_signal(h->wake);
}

void rq_rt_unsubscribe(rq_rt_hub_t *h, rq_rt_sub_t *s)
{
    int free_now = 0;

    if (h == NULL || s == NULL)
        return;
    pthread_mutex_lock(&s->lock); /* waits for a callback in progress */
    s->gone = 1;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&h->lock);
    h->nsubs--;
    metrics_count(h, s->kind, -1);
    key_release(h, s->key_id);
    if (h->thread_done) {
        free_now = 1;
    } else {
        while (push_cmd(h, CMD_UNSUB, s, 0) != 0) {
            /* out of memory: the thread must learn of it; retry */
            pthread_mutex_unlock(&h->lock);
            nanosleep(&(struct timespec){0, 10000000}, NULL);
            pthread_mutex_lock(&h->lock);
            if (h->thread_done) {
                free_now = 1;
                break;
            }
        }
    }
    pthread_mutex_unlock(&h->lock);
    if (free_now) {
        sub_free(s);
        return;
    }
    rq_wakeup_signal(h->wake);
}

int rq_rt_topic_submit(rq_rt_hub_t *h, rq_rt_topic_job_t *job)
{
    int rc = -1;

    if (h == NULL || job == NULL)
        return -1;
    job->next = NULL;
    job->body = NULL;
    job->mgmt_state = 0;
    job->mgmt_rc = -1;
    job->mgmt_retention_s = 0;
    pthread_mutex_lock(&h->lock);
    if (!h->stopping && !h->thread_done) {
        *h->jobs_tail = job;
        h->jobs_tail = &job->next;
        rc = 0;
    }
    pthread_mutex_unlock(&h->lock);
    if (rc == 0)
        rq_wakeup_signal(h->wake);
    return rc;
}
