/* rq_rt_tool - drives the real-time hub (producer/rt/hub.h) and the publisher's topic
 * publishing (publisher.h: job->topic) from stdin, for tests/integration/test_rt_hub.py.
 *
 * Configuration from the environment (RABBITMQ_*, RT_*) through the config module. Reads one
 * JSON command per line on stdin and prints one JSON line per happening on stdout:
 *   {"op":"sub","id":"a","kind":"topic"|"queue","name":"t","binds":["x.*"],"filter":"...",
 *    "resume":true,"after":5,"key":"k1","slow":N,"ack":"auto"|"none"}
 *       -> {"ev":"subscribe","id":"a","status":0|503|429|400,"error":"..."} then
 *          {"ev":"ready","id":"a","status":0|404|400|503,"error":"..."},
 *          {"ev":"msg","id":"a","event_id":"1","tag":0,"data":{...}} (slow N: the N+1st
 *          deliver() says the buffer is full), {"ev":"end","id":"a","reason":"...","detail":"..."}
 *   {"op":"unsub","id":"a"}           -> {"ev":"unsub","id":"a"}
 *   {"op":"ack","id":"a","tag":3}      (queue subscriptions, "ack":"none")
 *   {"op":"topic","job":"create"|"get"|"list"|"delete","name":"t","retention_s":60}
 *       -> {"ev":"topic","status":201,"body":{...}}
 *   {"op":"pub","topic":"t","rk":"a.b","body":"<text>","id":"m1","headers":{"k":"v"}}
 *       -> {"ev":"pub","status":"confirmed"|"..."}
 *   {"op":"wait_ready"} -> {"ev":"connected","up":1} once the hub has its connection
 * EOF on stdin: unsubscribes everything, stops the hub and exits 0.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "filter.h"
#include "hub.h"
#include "log.h"
#include "publisher.h"
#include "util.h"

#define TOOL "rq_rt_tool"
#define MAX_SUBS 4096

typedef struct tsub {
    char id[64];
    rq_rt_sub_t *sub;
    rq_filter_t *filter;
    int slow;     /* > 0: deliveries accepted before the buffer is "full" */
    int auto_ack; /* queue subscriptions */
    int n;
} tsub_t;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static rq_rt_hub_t *hub;
static tsub_t *subs[MAX_SUBS];

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);

    pthread_mutex_lock(&out_lock);
    if (s != NULL)
        printf("%s\n", s);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    free(s);
    json_decref(o);
}

static void on_ready(void *arg, unsigned status, const char *error)
{
    tsub_t *t = arg;
    emit(json_pack("{s:s, s:s, s:i, s:s}", "ev", "ready", "id", t->id, "status", (int)status,
                   "error", error ? error : ""));
}

static int on_deliver(void *arg, const rq_rt_event_t *ev)
{
    tsub_t *t = arg;
    json_t *data;

    if (t->slow > 0 && t->n >= t->slow)
        return -1;
    t->n++;
    data = json_loadb(ev->json, ev->len, 0, NULL);
    if (data == NULL) /* big integers: the text is in "raw" */
        data = json_loadb(ev->json, ev->len, JSON_DECODE_INT_AS_REAL, NULL);
    emit(json_pack("{s:s, s:s, s:s, s:I, s:o, s:s%, s:b}", "ev", "msg", "id", t->id, "event_id",
                   ev->id, "tag", (json_int_t)ev->tag, "data", data ? data : json_null(), "raw",
                   ev->json, ev->len, "oneline",
                   strchr(ev->json, '\n') == NULL && strlen(ev->json) == ev->len));
    if (t->auto_ack && ev->tag != 0)
        rq_rt_ack(hub, t->sub, ev->tag);
    return 0;
}

static void on_ended(void *arg, const char *reason, const char *detail)
{
    tsub_t *t = arg;
    emit(json_pack("{s:s, s:s, s:s, s:s}", "ev", "end", "id", t->id, "reason", reason, "detail",
                   detail ? detail : ""));
}

static tsub_t **find(const char *id)
{
    for (int i = 0; i < MAX_SUBS; i++)
        if (subs[i] != NULL && strcmp(subs[i]->id, id) == 0)
            return &subs[i];
    return NULL;
}

static void cmd_sub(json_t *c, const rq_config_t *cfg)
{
    tsub_t *t = calloc(1, sizeof(*t));
    rq_rt_sub_spec_t spec;
    rq_rt_sink_t sink = {on_ready, on_deliver, on_ended, t};
    const char *binds[RQ_RT_BINDS_MAX + 4];
    json_t *b = json_object_get(c, "binds"), *v;
    const char *ftext = json_string_value(json_object_get(c, "filter"));
    const char *kind = json_string_value(json_object_get(c, "kind"));
    const char *ack = json_string_value(json_object_get(c, "ack"));
    char err[256] = "";
    unsigned status = 0;
    size_t i;
    int slot = -1;

    (void)cfg;
    snprintf(t->id, sizeof(t->id), "%s", json_string_value(json_object_get(c, "id")));
    memset(&spec, 0, sizeof(spec));
    spec.kind = kind && strcmp(kind, "queue") == 0 ? RQ_RT_QUEUE : RQ_RT_TOPIC;
    spec.name = json_string_value(json_object_get(c, "name"));
    json_array_foreach(b, i, v)
    {
        if (i < RQ_RT_BINDS_MAX + 4)
            binds[spec.nbinds++] = json_string_value(v);
    }
    spec.binds = binds;
    if (ftext != NULL) {
        size_t pos = 0;
        t->filter = rq_filter_parse(ftext, strlen(ftext), err, sizeof(err), &pos);
        if (t->filter == NULL) {
            emit(json_pack("{s:s, s:s, s:i, s:s}", "ev", "subscribe", "id", t->id, "status", 400,
                           "error", err));
            free(t);
            return;
        }
    }
    spec.filter = t->filter;
    spec.resume = json_is_true(json_object_get(c, "resume"));
    spec.after_offset = (uint64_t)json_integer_value(json_object_get(c, "after"));
    spec.key_id = json_string_value(json_object_get(c, "key"));
    if (spec.key_id == NULL)
        spec.key_id = "";
    t->slow = (int)json_integer_value(json_object_get(c, "slow"));
    t->auto_ack = ack == NULL || strcmp(ack, "auto") == 0;
    for (int k = 0; k < MAX_SUBS && slot < 0; k++)
        if (subs[k] == NULL)
            slot = k;
    subs[slot] = t;
    t->sub = rq_rt_subscribe(hub, &spec, &sink, &status, err, sizeof(err));
    emit(json_pack("{s:s, s:s, s:i, s:s}", "ev", "subscribe", "id", t->id, "status",
                   t->sub ? 0 : (int)status, "error", err));
    if (t->sub == NULL) {
        subs[slot] = NULL;
        rq_filter_free(t->filter);
        free(t);
    }
}

static void unsub(tsub_t **slot)
{
    tsub_t *t = *slot;

    rq_rt_unsubscribe(hub, t->sub);
    rq_filter_free(t->filter);
    emit(json_pack("{s:s, s:s}", "ev", "unsub", "id", t->id));
    free(t);
    *slot = NULL;
}

typedef struct waiter {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
} waiter_t;

static void topic_done(rq_rt_topic_job_t *job, void *arg)
{
    waiter_t *w = arg;
    (void)job;
    pthread_mutex_lock(&w->m);
    w->done = 1;
    pthread_cond_signal(&w->c);
    pthread_mutex_unlock(&w->m);
}

static void pub_done(rq_pub_job_t *job, void *arg)
{
    (void)job;
    topic_done(NULL, arg);
}

static void wait_done(waiter_t *w)
{
    pthread_mutex_lock(&w->m);
    while (!w->done)
        pthread_cond_wait(&w->c, &w->m);
    pthread_mutex_unlock(&w->m);
}

static void cmd_topic(json_t *c)
{
    static const char *const ops[] = {"create", "get", "list", "delete"};
    const char *job = json_string_value(json_object_get(c, "job"));
    const char *name = json_string_value(json_object_get(c, "name"));
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    rq_rt_topic_job_t j;

    memset(&j, 0, sizeof(j));
    for (int i = 0; i < 4; i++)
        if (job != NULL && strcmp(job, ops[i]) == 0)
            j.op = (rq_rt_topic_op_t)i;
    snprintf(j.name, sizeof(j.name), "%s", name ? name : "");
    j.retention_s = json_integer_value(json_object_get(c, "retention_s"));
    j.done = topic_done;
    j.done_arg = &w;
    if (rq_rt_topic_submit(hub, &j) != 0) {
        emit(json_pack("{s:s, s:i}", "ev", "topic", "status", 503));
        return;
    }
    wait_done(&w);
    emit(json_pack("{s:s, s:i, s:o, s:b}", "ev", "topic", "status", (int)j.status, "body",
                   j.body ? j.body : json_null(), "known", rq_rt_topic_known(hub, j.name)));
}

static void cmd_pub(json_t *c, rq_publisher_t *p)
{
    static const char *const st[] = {"pending",     "confirmed", "replied",
                                     "unavailable", "timeout",   "reply_timeout",
                                     "reply_lost",  "invalid",   "no_queue"};
    waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    rq_pub_job_t job;
    rq_pub_msg_t m;
    rq_wire_header_t hdr[RQ_WIRE_USER_HEADERS_MAX];
    json_t *h = json_object_get(c, "headers"), *v;
    const char *k;
    const char *body = json_string_value(json_object_get(c, "body"));
    const char *id = json_string_value(json_object_get(c, "id"));

    memset(&job, 0, sizeof(job));
    memset(&m, 0, sizeof(m));
    m.body = (char *)(body ? body : "");
    m.body_len = strlen(m.body);
    m.message_id = (char *)(id ? id : "");
    m.content_type = "application/json";
    m.published_ms = rq_wall_ms();
    m.source = "api";
    m.routing_key = json_string_value(json_object_get(c, "rk"));
    json_object_foreach(h, k, v)
    {
        if (m.nheaders < RQ_WIRE_USER_HEADERS_MAX && json_is_string(v)) {
            hdr[m.nheaders].name = (char *)k;
            hdr[m.nheaders].value = (char *)json_string_value(v);
            hdr[m.nheaders].value_len = json_string_length(v);
            m.nheaders++;
        }
    }
    m.headers = hdr;
    job.msgs = &m;
    job.n = 1;
    job.topic = json_string_value(json_object_get(c, "topic"));
    job.publish_deadline_ns = rq_mono_ns() + 10000000000LL;
    job.done = pub_done;
    job.done_arg = &w;
    if (rq_publisher_submit(p, &job) != 0) {
        emit(json_pack("{s:s, s:s, s:s}", "ev", "pub", "status", "refused", "error",
                       job.error ? job.error : ""));
        return;
    }
    wait_done(&w);
    emit(json_pack("{s:s, s:s}", "ev", "pub", "status", st[job.status]));
}

static void cmd_metrics(rq_metrics_t *metrics)
{
    size_t len;
    char *text = rq_metrics_render(metrics, &len);
    json_t *o = json_pack("{s:s, s:s}", "ev", "metrics", "text", text ? text : "");

    free(text);
    emit(o);
}

static void cmd_wait_ready(void)
{
    int up = 0;

    /* connected: a topic job that needs no name answers without 503 "unreachable" */
    for (int i = 0; i < 200 && !up; i++) {
        waiter_t w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
        rq_rt_topic_job_t j;
        memset(&j, 0, sizeof(j));
        j.op = RQ_RT_T_GET;
        snprintf(j.name, sizeof(j.name), "probe");
        j.done = topic_done;
        j.done_arg = &w;
        if (rq_rt_topic_submit(hub, &j) != 0)
            break;
        wait_done(&w);
        up = j.status != 503;
        json_decref(j.body);
        if (!up)
            nanosleep(&(struct timespec){0, 50000000}, NULL);
    }
    emit(json_pack("{s:s, s:i}", "ev", "connected", "up", up));
}

int main(void)
{
    rq_config_t cfg;
    rq_config_error_t err;
    rq_metrics_t *metrics;
    rq_publisher_t *pub = NULL;
    char *line = NULL;
    size_t cap = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    rq_log_init(TOOL, RQ_LOG_INFO);
    if (rq_config_load(&cfg, RQ_SVC_ALL, NULL, &err) != 0) {
        fprintf(stderr, TOOL ": %s\n", err.text);
        return 2;
    }
    metrics = rq_metrics_new();
    hub = rq_rt_hub_new(&cfg, metrics);
    if (hub == NULL) {
        fprintf(stderr, TOOL ": rq_rt_hub_new failed\n");
        return 2;
    }
    while (getline(&line, &cap, stdin) > 0) {
        json_t *c = json_loads(line, 0, NULL);
        const char *op = json_string_value(json_object_get(c, "op"));
        if (op == NULL) {
            json_decref(c);
            continue;
        }
        if (strcmp(op, "sub") == 0) {
            cmd_sub(c, &cfg);
        } else if (strcmp(op, "unsub") == 0) {
            tsub_t **t = find(json_string_value(json_object_get(c, "id")));
            if (t != NULL)
                unsub(t);
        } else if (strcmp(op, "ack") == 0) {
            tsub_t **t = find(json_string_value(json_object_get(c, "id")));
            if (t != NULL)
                rq_rt_ack(hub, (*t)->sub, (uint64_t)json_integer_value(json_object_get(c, "tag")));
        } else if (strcmp(op, "topic") == 0) {
            cmd_topic(c);
        } else if (strcmp(op, "pub") == 0) {
            if (pub == NULL)
                pub = rq_publisher_new(&cfg, metrics, NULL, NULL);
            for (int i = 0; i < 100 && !rq_publisher_ready(pub, NULL, 0); i++)
                nanosleep(&(struct timespec){0, 50000000}, NULL);
            cmd_pub(c, pub);
        } else if (strcmp(op, "metrics") == 0) {
            cmd_metrics(metrics);
        } else if (strcmp(op, "wait_ready") == 0) {
            cmd_wait_ready();
        }
        json_decref(c);
    }
    free(line);
    for (int i = 0; i < MAX_SUBS; i++)
        if (subs[i] != NULL)
            unsub(&subs[i]);
    rq_rt_hub_stop(hub);
    rq_rt_hub_free(hub);
    if (pub != NULL)
        rq_publisher_free(pub);
    rq_metrics_free(metrics);
    rq_config_free(&cfg);
    return 0;
}
