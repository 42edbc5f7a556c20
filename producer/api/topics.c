/* topics.c - the real-time routes (issue 18): topic administration (POST/GET /topics,
 * GET/DELETE /topics/{name}), publishing (POST /topics/{name}/messages) and subscriptions
 * (GET /topics/{name}/events|ws, GET /queues/{id}/events|ws).
 *
 * The HTTP thread validates and answers 400/403/404/405 itself; topic jobs run on the hub's
 * thread while the connection is suspended (c->ext holds the state, answered by an
 * ext_resume on an HTTP thread), as queues_admin.c does with the queue admin. A subscription
 * is suspended until the hub's ready(); then SSE answers 200 text/event-stream (sse.h) and
 * WebSocket 101 (ws.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_ctx.h"
#include "filter.h"
#include "hub.h"
#include "sse.h"
#include "tmatch.h"
#include "ws.h"

/* ---- topic jobs ---- */

typedef struct tjob {
    rq_rt_topic_job_t job;
    req_ctx_t *c;
} tjob_t;

static void tjob_free(void *ext)
{
    tjob_t *t = ext;

    json_decref(t->job.body);
    free(t);
}

static void tjob_done(rq_rt_topic_job_t *job, void *arg)
{
    (void)job;
    rq_api_ctx_complete(arg);
}

/* 1 when the principal may see topic `name` in GET /topics (any topic action on it). */
static int may_see(req_ctx_t *c, const char *name)
{
    for (int act = 0; act < RQ_QACT_COUNT; act++)
        if ((RQ_QACT_TOPIC_MASK & (1u << act)) &&
            rq_principal_allows_queue(&c->principal, (rq_qaction_t)act, name))
            return 1;
    return 0;
}

static enum MHD_Result tjob_reply(req_ctx_t *c)
{
    tjob_t *t = c->ext;
    json_t *body = t->job.body;
    unsigned status = t->job.status;

    t->job.body = NULL;
    if (body == NULL)
        return rq_api_reply_503(c, "the topic call failed");
    if (t->job.op == RQ_RT_T_LIST && status == 200) {
        json_t *all = json_object_get(body, "topics"), *kept = json_array(), *q;
        size_t i;
        json_array_foreach(all, i, q)
        {
            if (may_see(c, json_string_value(json_object_get(q, "name"))))
                json_array_append(kept, q);
        }
        json_object_set_new(body, "count", json_integer((json_int_t)json_array_size(kept)));
        json_object_set_new(body, "topics", kept);
    }
    if (status == 503)
        return rq_api_reply_503_json(c, body);
    if (status >= 400 && status < 500) {
        json_t *e = json_object_get(body, "error");
        enum MHD_Result r =
            rq_api_reply_error(c, status, json_is_string(e) ? json_string_value(e) : "refused");
        json_decref(body);
        return r;
    }
    return rq_api_reply(c, status, body);
}

/* Hands a topic job to the hub with `resume` as the answer, and suspends. */
static enum MHD_Result tjob_start(req_ctx_t *c, rq_rt_topic_op_t op, const char *name,
                                  int64_t retention_s, enum MHD_Result (*resume)(req_ctx_t *c))
{
    tjob_t *t = calloc(1, sizeof(*t));

    if (t == NULL)
        return rq_api_reply_503(c, "out of memory");
    if (c->ext != NULL && c->ext_free != NULL)
        c->ext_free(c->ext);
    c->ext = t;
    c->ext_free = tjob_free;
    c->ext_resume = resume;
    t->c = c;
    t->job.op = op;
    snprintf(t->job.name, sizeof(t->job.name), "%s", name != NULL ? name : "");
    t->job.retention_s = retention_s;
    t->job.done = tjob_done;
    t->job.done_arg = c;
    c->done = 0;
    if (c->api->hub == NULL || rq_rt_topic_submit(c->api->hub, &t->job) != 0)
        return rq_api_reply_503(c, "the real-time hub is not running");
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return resume(c);
}

/* 400 for a bad {name}; returns 1 when answered. */
static int bad_name(req_ctx_t *c, const char *what, enum MHD_Result *ret)
{
    char why[200], msg[260];

    if (c->qname_too_long || rq_qname_check(c->qname, why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "invalid %s name: %s", what,
                 c->qname_too_long ? "too long or empty" : why);
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
        return 1;
    }
    return 0;
}

/* POST /topics {"name", "retention_s"?}. */
static enum MHD_Result topic_create(req_ctx_t *c)
{
    enum MHD_Result ret;
    json_t *o = rq_api_body_object(c, &ret), *v;
    char why[200], msg[260], name[RQ_QNAME_MAX + 1];
    json_int_t retention = 0;

    if (o == NULL)
        return ret;
    v = json_object_get(o, "name");
    if (!json_is_string(v)) {
        json_decref(o);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "\"name\" (a string) is required");
    }
    if (json_string_length(v) > RQ_QNAME_MAX ||
        rq_qname_check(json_string_value(v), why, sizeof(why)) != 0) {
        snprintf(msg, sizeof(msg), "invalid topic name: %s",
                 json_string_length(v) > RQ_QNAME_MAX ? "too long" : why);
        json_decref(o);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
    }
    snprintf(name, sizeof(name), "%s", json_string_value(v));
    v = json_object_get(o, "retention_s");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > RQ_RT_RETENTION_MAX_S) {
            json_decref(o);
            return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      "\"retention_s\" must be an integer from 0 to 31536000");
        }
        retention = json_integer_value(v);
    }
    json_decref(o);
    if (!rq_principal_allows_queue(&c->principal, RQ_QACT_ADMIN, name)) {
        snprintf(msg, sizeof(msg), "this credential may not administer topic '%s'", name);
        return rq_api_reply_error(c, MHD_HTTP_FORBIDDEN, msg);
    }
    return tjob_start(c, RQ_RT_T_CREATE, name, (int64_t)retention, tjob_reply);
}

/* ---- publishing ---- */

/* The routing key of item `obj` into c->rkeys[i]. 0, or -1 with msg filled. */
static int item_rkey(req_ctx_t *c, size_t i, json_t *obj, char *msg, size_t msglen)
{
    json_t *v = json_object_get(obj, "routing_key");
    const char *where = c->req.batch ? "messages[" : "";
    char idx[32] = "";

    if (c->req.batch)
        snprintf(idx, sizeof(idx), "%zu]: ", i);
    if (!json_is_string(v)) {
        snprintf(msg, msglen, "%s%s\"routing_key\" (a string) is required on topics", where, idx);
        return -1;
    }
    if (json_string_length(v) > 255 || memchr(json_string_value(v), '\0', json_string_length(v))) {
        snprintf(msg, msglen, "%s%s\"routing_key\" must be at most 255 bytes (no NUL)", where, idx);
        return -1;
    }
    c->rkeys[i] = strdup(json_string_value(v));
    if (c->rkeys[i] == NULL) {
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    return 0;
}

/* What topics refuse, then c->rkeys from c->buf. 0, or -1 after answering. */
static int publish_check(req_ctx_t *c, enum MHD_Result *ret)
{
    json_t *root, *items = NULL;
    char msg[300];

    if (MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "wait") != NULL ||
        c->req.wait) {
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "\"wait\" is not supported on topics");
        return -1;
    }
    if (MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Idempotency-Key") != NULL) {
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  "Idempotency-Key is not supported on topics");
        return -1;
    }
    for (size_t i = 0; i < c->req.n; i++) {
        const char *what = c->req.items[i].delay_ms > 0       ? "delay_ms"
                           : c->req.items[i].idem_key != NULL ? "idempotency_key"
                                                              : NULL;
        if (what != NULL) {
            snprintf(msg, sizeof(msg), "\"%s\" is not supported on topics", what);
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
            return -1;
        }
    }
    /* the parser ignores "routing_key": read it here (the depth was checked already) */
    root = json_loadb(c->buf, c->len, JSON_DECODE_INT_AS_REAL, NULL);
    c->rkeys = calloc(c->req.n ? c->req.n : 1, sizeof(*c->rkeys));
    if (root == NULL || c->rkeys == NULL) {
        json_decref(root);
        *ret = rq_api_reply_503(c, "out of memory");
        return -1;
    }
    c->nrkeys = c->req.n;
    if (c->req.batch)
        items = json_object_get(root, "messages");
    for (size_t i = 0; i < c->req.n; i++) {
        json_t *obj = c->req.batch ? json_array_get(items, i) : root;
        if (item_rkey(c, i, obj, msg, sizeof(msg)) != 0) {
            json_decref(root);
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
            return -1;
        }
    }
    json_decref(root);
    free(c->buf);
    c->buf = NULL;
    return 0;
}

/* The GET job before a publish to a topic the hub did not know: 404, or publish. */
static enum MHD_Result publish_resume(req_ctx_t *c)
{
    tjob_t *t = c->ext;

    if (t->job.status == 200)
        return rq_api_submit_produce(c);
    if (t->job.status == 404) {
        char msg[260];
        snprintf(msg, sizeof(msg), "no such topic: '%s'", c->qname);
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, msg);
    }
    return tjob_reply(c);
}

enum MHD_Result rq_troute_publish(req_ctx_t *c)
{
    enum MHD_Result ret;

    if (publish_check(c, &ret) != 0)
        return ret;
    if (c->api->hub == NULL)
        return rq_api_reply_503(c, "the real-time hub is not running");
    if (rq_rt_topic_known(c->api->hub, c->qname))
        return rq_api_submit_produce(c);
    return tjob_start(c, RQ_RT_T_GET, c->qname, 0, publish_resume);
}

/* ---- subscriptions ---- */

typedef struct sub_state {
    req_ctx_t *c;
    rq_sse_conn_t *sse; /* one of these two */
    rq_ws_conn_t *ws;
    rq_filter_t *filter;
    char *binds[RQ_RT_BINDS_MAX];
    size_t nbinds;
    int too_many_binds;
    rq_rt_sub_spec_t spec;
    int client_acks;
    char accept[29];
    unsigned status; /* ready()'s */
    char err[256];
    rq_rt_topic_job_t job; /* Last-Event-ID: the topic's retention first */
    int resume_from_header;
} sub_state_t;

static void sub_free(void *ext)
{
    sub_state_t *s = ext;

    rq_sse_conn_free(s->sse); /* unsubscribes: no callback after */
    rq_ws_conn_abandon(s->ws);
    rq_filter_free(s->filter);
    for (size_t i = 0; i < s->nbinds; i++)
        free(s->binds[i]);
    json_decref(s->job.body);
    free(s);
}

/* The hub's ready() (hub thread): the request resumes with the answer. */
static void sub_ready(void *arg, unsigned status, const char *err)
{
    req_ctx_t *c = arg;
    sub_state_t *s = c->ext;

    s->status = status;
    snprintf(s->err, sizeof(s->err), "%s", err != NULL ? err : "");
    rq_api_ctx_complete(c);
}

/* An SSE stream's end event was queued: the drain counts the request answered. */
static void sse_end(void *arg)
{
    rq_api_ctx_answered(arg);
}

static enum MHD_Result reply_refused(req_ctx_t *c, unsigned status, const char *msg)
{
    if (status == 503 || status == 429) {
        json_t *o = json_pack("{s:s}", "error", msg);
        char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        c->status = status;
        if (text == NULL)
            return MHD_NO;
        return rq_http_reply_buf(c->conn, status, "application/json", text, strlen(text),
                                 MHD_HTTP_HEADER_RETRY_AFTER, "1");
    }
    return rq_api_reply_error(c, status ? status : 503, msg);
}

/* Once ready(): the 200 event stream, the 101 upgrade, or the error. */
static enum MHD_Result sub_resume(req_ctx_t *c)
{
    sub_state_t *s = c->ext;
    struct MHD_Response *r;
    enum MHD_Result ret;

    if (s->status != 0)
        return reply_refused(c, s->status, s->err[0] ? s->err : "subscription refused");
    if (s->sse != NULL) {
        r = rq_sse_conn_response(s->sse, sse_end, c);
        c->status = MHD_HTTP_OK;
    } else {
        r = rq_ws_conn_response(s->ws, s->accept);
        c->status = MHD_HTTP_SWITCHING_PROTOCOLS;
    }
    if (r == NULL)
        return MHD_NO;
    ret = MHD_queue_response(c->conn, c->status, r);
    MHD_destroy_response(r);
    if (s->ws != NULL)
        rq_api_ctx_answered(c); /* the WebSocket server owns the socket from here */
    return ret;
}

/* Subscribes with s->spec and suspends until ready(). */
static enum MHD_Result sub_start(req_ctx_t *c)
{
    sub_state_t *s = c->ext;
    unsigned status = 0;
    char err[256] = "";
    rq_rt_sub_t *sub;
    const rq_rt_sink_t *sink;

    if (c->route == R_TEVENTS || c->route == R_QEVENTS)
        s->sse = rq_sse_conn_new(c->api->sse, c->conn, s->spec.kind, sub_ready, c);
    else
        s->ws = rq_ws_conn_new(c->api->ws, s->client_acks, sub_ready, c);
    if (s->sse == NULL && s->ws == NULL)
        return rq_api_reply_503(c, "out of memory");
    if (s->ws != NULL && s->filter != NULL) {
        /* an upgraded session outlives the request: it frees the filter after unsubscribing */
        rq_ws_conn_own_filter(s->ws, s->filter);
        s->filter = NULL;
    }
    sink = s->sse != NULL ? rq_sse_conn_sink(s->sse) : rq_ws_conn_sink(s->ws);
    c->done = 0;
    c->ext_resume = sub_resume;
    sub = rq_rt_subscribe(c->api->hub, &s->spec, sink, &status, err, sizeof(err));
    if (sub == NULL)
        return reply_refused(c, status, err[0] ? err : "subscription refused");
    if (s->sse != NULL)
        rq_sse_conn_set_sub(s->sse, sub);
    else
        rq_ws_conn_set_sub(s->ws, sub);
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return sub_resume(c);
}

static void retention_done(rq_rt_topic_job_t *job, void *arg)
{
    (void)job;
    rq_api_ctx_complete(arg);
}

/* The topic's retention is known (Last-Event-ID given): resume from it, or live. */
static enum MHD_Result retention_resume(req_ctx_t *c)
{
    sub_state_t *s = c->ext;
    json_t *r = json_object_get(s->job.body, "retention_s");

    if (s->job.status == 404) {
        char msg[260];
        snprintf(msg, sizeof(msg), "no such topic: '%s'", c->qname);
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, msg);
    }
    if (s->job.status != 200) {
        json_t *e = json_object_get(s->job.body, "error");
        return reply_refused(c, s->job.status ? s->job.status : 503,
                             json_is_string(e) ? json_string_value(e) : "the topic call failed");
    }
    if (json_is_integer(r) && json_integer_value(r) <= 0) { /* null: unknown, the hub checks */
        /* EventSource sends Last-Event-ID on every reconnect: a live topic ignores it */
        if (!s->resume_from_header)
            return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "topic has no retention");
        s->spec.resume = 0;
    }
    return sub_start(c);
}

/* MHD_get_connection_values: every bind= argument. */
static enum MHD_Result collect_bind(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    sub_state_t *s = cls;

    (void)kind;
    if (key == NULL || strcmp(key, "bind") != 0)
        return MHD_YES;
    if (s->nbinds == RQ_RT_BINDS_MAX) {
        s->too_many_binds = 1;
        return MHD_NO;
    }
    s->binds[s->nbinds] = strdup(value != NULL ? value : "");
    if (s->binds[s->nbinds] == NULL) {
        s->too_many_binds = 1;
        return MHD_NO;
    }
    s->nbinds++;
    return MHD_YES;
}

/* A decimal uint64 (the event id), 0 or -1. */
static int parse_u64(const char *v, uint64_t *out)
{
    char *end = NULL;
    unsigned long long n;

    if (v == NULL || *v < '0' || *v > '9')
        return -1;
    errno = 0;
    n = strtoull(v, &end, 10);
    /* the next offset (n + 1) must be an AMQP long-long: a larger id is no stream offset */
    if (*end != '\0' || errno != 0 || n >= (unsigned long long)INT64_MAX)
        return -1;
    *out = (uint64_t)n;
    return 0;
}

/* GET on a subscription route: the query, then the subscription. */
/* The WebSocket handshake of c (the /ws routes): 0 with the Sec-WebSocket-Accept value in
 * accept, or -1 after answering 400/426 itself (*ret). */
static int ws_check(req_ctx_t *c, char *accept, enum MHD_Result *ret)
{
    char err[256];
    unsigned st = rq_ws_handshake(c->conn, accept, err, sizeof(err));

    if (st == 0)
        return 0;
    if (st == 426) {
        json_t *o = json_pack("{s:s}", "error", err);
        char *text = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        c->status = st;
        *ret = text == NULL ? MHD_NO
                            : rq_http_reply_buf(c->conn, st, "application/json", text, strlen(text),
                                                "Sec-WebSocket-Version", "13");
        return -1;
    }
    *ret = rq_api_reply_error(c, st, err);
    return -1;
}

/* Reads and checks the query of a subscription (bind, filter, ack) into s. Returns 0, or -1
 * after answering 400 itself (*ret). */
static int sub_parse(req_ctx_t *c, sub_state_t *s, int topic, enum MHD_Result *ret)
{
    const char *filter, *ack;
    char err[256], msg[400];

    MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, collect_bind, s);
    filter = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "filter");
    ack = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "ack");
    if (!topic && (s->nbinds > 0 || filter != NULL)) {
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  s->nbinds > 0 ? "bind applies to topic subscriptions"
                                                : "filters apply to topic subscriptions");
        return -1;
    }
    if (s->too_many_binds) {
        snprintf(msg, sizeof(msg), "at most %d bind patterns", RQ_RT_BINDS_MAX);
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
        return -1;
    }
    for (size_t i = 0; i < s->nbinds; i++) {
        if (rq_tmatch_check(s->binds[i], err, sizeof(err)) != 0) {
            snprintf(msg, sizeof(msg), "bind: %s", err);
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
            return -1;
        }
    }
    if (filter != NULL) {
        size_t pos = 0;
        s->filter = rq_filter_parse(filter, strlen(filter), err, sizeof(err), &pos);
        if (s->filter == NULL) {
            snprintf(msg, sizeof(msg), "filter: %s at position %zu", err, pos);
            rq_series_inc(c->api->m_rejected);
            *ret = rq_api_reply(c, MHD_HTTP_BAD_REQUEST,
                                json_pack("{s:s,s:I}", "error", msg, "position", (json_int_t)pos));
            return -1;
        }
    }
    if (ack != NULL) {
        if (c->route != R_QWS || (strcmp(ack, "client") != 0 && strcmp(ack, "auto") != 0)) {
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      c->route != R_QWS ? "ack applies to /queues/{id}/ws"
                                                        : "ack must be \"client\" or \"auto\"");
            return -1;
        }
        s->client_acks = strcmp(ack, "client") == 0;
    }
    return 0;
}

/* Resuming on a retained topic: asks the hub for the topic's retention first (the GET job),
 * then retention_resume() subscribes or answers 400. */
static enum MHD_Result resume_start(req_ctx_t *c, sub_state_t *s, const char *lei_q,
                                    const char *lei_h)
{
    if (parse_u64(lei_q != NULL ? lei_q : lei_h, &s->spec.after_offset) != 0)
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  "Last-Event-ID must be a decimal event id");
    s->spec.resume = 1;
    s->resume_from_header = lei_q == NULL;
    s->job.op = RQ_RT_T_GET;
    snprintf(s->job.name, sizeof(s->job.name), "%s", c->qname);
    s->job.done = retention_done;
    s->job.done_arg = c;
    c->done = 0;
    c->ext_resume = retention_resume;
    if (rq_rt_topic_submit(c->api->hub, &s->job) != 0)
        return rq_api_reply_503(c, "the real-time hub is not running");
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return retention_resume(c);
}

static enum MHD_Result subscribe_route(req_ctx_t *c)
{
    int topic = c->route == R_TEVENTS || c->route == R_TWS;
    int ws = c->route == R_TWS || c->route == R_QWS;
    sub_state_t *s;
    enum MHD_Result ret;
    const char *lei_q, *lei_h;
    char accept[64];

    if (strcmp(c->method, MHD_HTTP_METHOD_GET) != 0)
        return rq_api_reply_405(c, "GET");
    if (bad_name(c, topic ? "topic" : "queue", &ret))
        return ret;
    if (c->api->hub == NULL)
        return rq_api_reply_503(c, "the real-time hub is not running");
    if (ws && ws_check(c, accept, &ret) != 0)
        return ret;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return rq_api_reply_503(c, "out of memory");
    if (ws)
        memcpy(s->accept, accept, sizeof(s->accept));
    s->c = c;
    c->ext = s;
    c->ext_free = sub_free;
    if (sub_parse(c, s, topic, &ret) != 0)
        return ret;
    lei_q = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "last_event_id");
    lei_h = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Last-Event-ID");
    s->spec.kind = topic ? RQ_RT_TOPIC : RQ_RT_QUEUE;
    s->spec.name = c->qname;
    s->spec.binds = (const char *const *)s->binds;
    s->spec.nbinds = s->nbinds;
    s->spec.filter = s->filter;
    s->spec.key_id = c->key_id;
    if (topic && (lei_q != NULL || lei_h != NULL))
        return resume_start(c, s, lei_q, lei_h);
    return sub_start(c);
}

/* ---- dispatch ---- */

enum MHD_Result rq_troute(req_ctx_t *c)
{
    int get = strcmp(c->method, MHD_HTTP_METHOD_GET) == 0;
    enum MHD_Result ret;

    switch (c->route) {
    case R_TOPICS:
        if (strcmp(c->method, MHD_HTTP_METHOD_POST) == 0)
            return topic_create(c);
        if (!get)
            return rq_api_reply_405(c, "GET, POST");
        return tjob_start(c, RQ_RT_T_LIST, NULL, 0, tjob_reply);
    case R_TOPIC:
        if (!get && strcmp(c->method, MHD_HTTP_METHOD_DELETE) != 0)
            return rq_api_reply_405(c, "GET, DELETE");
        if (bad_name(c, "topic", &ret))
            return ret;
        return tjob_start(c, get ? RQ_RT_T_GET : RQ_RT_T_DELETE, c->qname, 0, tjob_reply);
    case R_TEVENTS:
    case R_TWS:
    case R_QEVENTS:
    case R_QWS:
        return subscribe_route(c);
    default:
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
    }
}
