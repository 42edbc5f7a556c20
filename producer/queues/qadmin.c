/* qadmin.c - queue create/get/list/delete and per-queue DLQ jobs on a worker thread. */
#include "qadmin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mgmt.h"
#include "util.h"
#include "wire.h"

#define CH RQ_AMQP_CHANNEL
#define MGMT_TIMEOUT_MS 5000
#define MGMT_COLUMNS "columns=name,type,messages_ready,messages_unacknowledged,consumers,arguments"

struct rq_qadmin {
    const rq_config_t *cfg;
    rq_dlq_worker_t *worker;
    rq_mgmt_t *mgmt; /* NULL: none (mgmt_err says why) */
    char mgmt_err[300];
};

/* ---- argument comparison (pure) ---- */

/* An AMQP field value as text into out (for messages). */
static void field_text(const amqp_field_value_t *v, char *out, size_t len)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        snprintf(out, len, "'%.*s'", (int)v->value.bytes.len, (const char *)v->value.bytes.bytes);
        break;
    case AMQP_FIELD_KIND_I64:
        snprintf(out, len, "%lld", (long long)v->value.i64);
        break;
    case AMQP_FIELD_KIND_BOOLEAN:
        snprintf(out, len, "%s", v->value.boolean ? "true" : "false");
        break;
    default:
        snprintf(out, len, "?");
        break;
    }
}

static void json_text(const json_t *v, char *out, size_t len)
{
    if (v == NULL) {
        snprintf(out, len, "absent");
    } else if (json_is_string(v)) {
        snprintf(out, len, "'%s'", json_string_value(v));
    } else {
        char *d = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        snprintf(out, len, "%s", d ? d : "?");
        free(d);
    }
}

/* 1 when the AMQP value equals the JSON value the management API shows. */
static int same_value(const amqp_field_value_t *v, const json_t *j)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return json_is_string(j) && json_string_length(j) == v->value.bytes.len &&
               memcmp(json_string_value(j), v->value.bytes.bytes, v->value.bytes.len) == 0;
    case AMQP_FIELD_KIND_I64:
        return json_is_integer(j) && json_integer_value(j) == v->value.i64;
    case AMQP_FIELD_KIND_BOOLEAN:
        return json_is_boolean(j) && (json_is_true(j) ? 1 : 0) == (v->value.boolean ? 1 : 0);
    default:
        return 0;
    }
}

const char *rq_qadmin_args_differ(const amqp_table_entry_t *want, int n, const json_t *have,
                                  char *wanted, size_t wlen, char *current, size_t clen)
{
    const char *k;
    json_t *v;

    for (int i = 0; i < n; i++) {
        char key[256];
        const json_t *h;
        snprintf(key, sizeof(key), "%.*s", (int)want[i].key.len, (const char *)want[i].key.bytes);
        h = json_object_get(have, key);
        if (h == NULL || !same_value(&want[i].value, h)) {
            field_text(&want[i].value, wanted, wlen);
            json_text(h, current, clen);
            return (const char *)want[i].key.bytes;
        }
    }
    json_object_foreach((json_t *)have, k, v)
    {
        int found = 0;
        for (int i = 0; i < n && !found; i++)
            found = want[i].key.len == strlen(k) && memcmp(want[i].key.bytes, k, strlen(k)) == 0;
        if (!found) {
            snprintf(wanted, wlen, "absent");
            json_text(v, current, clen);
            return k;
        }
    }
    return NULL;
}

int rq_qadmin_refused_arg(const char *reason, char *out, size_t outlen)
{
    const char *p = strstr(reason, "inequivalent arg '");
    const char *e;

    if (p == NULL)
        p = strstr(reason, "invalid arg '");
    if (p == NULL)
        return -1;
    p = strchr(p, '\'') + 1;
    e = strchr(p, '\'');
    if (e == NULL || (size_t)(e - p) >= outlen)
        return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return 0;
}

static json_t *int_or_null(const json_t *args, const char *key)
{
    const json_t *v = json_object_get(args, key);
    return json_is_integer(v) ? json_integer(json_integer_value(v)) : json_null();
}

json_t *rq_qadmin_settings(const json_t *args, const char *type)
{
    const char *t = json_string_value(json_object_get(args, RQ_WIRE_ARG_QUEUE_TYPE));

    if (t == NULL)
        t = type;
    return json_pack("{s:s?,s:o,s:o,s:o,s:o,s:o}", "type", t, "max_priority",
                     int_or_null(args, RQ_WIRE_ARG_MAX_PRIORITY), "max_length",
                     int_or_null(args, RQ_WIRE_ARG_MAX_LENGTH), "message_ttl_ms",
                     int_or_null(args, RQ_WIRE_ARG_MESSAGE_TTL), "max_retries",
                     int_or_null(args, RQ_WIRE_ARG_RELAYQ_MAX_RETRIES), "retry_base_ms",
                     int_or_null(args, RQ_WIRE_ARG_RELAYQ_RETRY_BASE));
}

/* ---- broker helpers (worker thread) ---- */

static int is_code(const char *err, const char *code)
{
    char needle[48];
    snprintf(needle, sizeof(needle), "channel closed by broker: %s", code);
    return strstr(err, needle) != NULL;
}

/* After a channel exception: close-ok, and channel CH open again. Returns 0 or -1. */
static int reopen(amqp_connection_state_t conn, char *err, size_t errlen)
{
    amqp_channel_close_ok_t ok;

    ok.dummy = '\0';
    if (amqp_send_method(conn, CH, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok) != AMQP_STATUS_OK)
        return rq_errf(err, errlen, "channel.close-ok failed");
    amqp_channel_open(conn, CH);
    return rq_amqp_check_reply(amqp_get_rpc_reply(conn), "channel.open", err, errlen);
}

/* Passive declare: 1 exists (*ready, *consumers), 0 missing (channel reopened), -1 error. */
static int passive(amqp_connection_state_t conn, const char *name, long long *ready,
                   long long *consumers, char *err, size_t errlen)
{
    amqp_queue_declare_ok_t *ok =
        amqp_queue_declare(conn, CH, amqp_cstring_bytes(name), 1, 0, 0, 0, amqp_empty_table);

    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "queue.declare (passive)", err, errlen) ==
        0) {
        if (ready != NULL)
            *ready = ok->message_count;
        if (consumers != NULL)
            *consumers = ok->consumer_count;
        return 1;
    }
    if (is_code(err, "404"))
        return reopen(conn, err, errlen) == 0 ? 0 : -1;
    return -1;
}

/* queue.delete; 0 deleted (or absent), 1 refused (if_empty: not empty; channel reopened),
 * -1 error. */
static int delete_queue(amqp_connection_state_t conn, const char *name, int if_empty,
                        long long *dropped, char *err, size_t errlen)
{
    amqp_queue_delete_ok_t *ok =
        amqp_queue_delete(conn, CH, amqp_cstring_bytes(name), /*if_unused=*/0, if_empty);

    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "queue.delete", err, errlen) == 0) {
        if (dropped != NULL)
            *dropped += ok->message_count;
        return 0;
    }
    if (is_code(err, "404"))
        return reopen(conn, err, errlen) == 0 ? 0 : -1;
    if (is_code(err, "406"))
        return reopen(conn, err, errlen) == 0 ? 1 : -1;
    return -1;
}

/* GET /api/queues/<vhost>/<name> of the management API: 1 with *q (new), 0 absent, -1 error
 * (or no management API) with err. */
static int mgmt_queue(rq_qadmin_t *qa, const char *name, json_t **q, char *err, size_t errlen)
{
    char vh[800], nm[700], path[1700];
    int status = 0;
    json_t *body = NULL;

    *q = NULL;
    if (qa->mgmt == NULL)
        return rq_errf(err, errlen, "%s", qa->mgmt_err);
    if (rq_mgmt_escape(qa->cfg->rabbitmq.vhost, vh, sizeof(vh)) != 0 ||
        rq_mgmt_escape(name, nm, sizeof(nm)) != 0)
        return rq_errf(err, errlen, "name too long");
    snprintf(path, sizeof(path), "/api/queues/%s/%s?" MGMT_COLUMNS, vh, nm);
    if (rq_mgmt_get(qa->mgmt, path, MGMT_TIMEOUT_MS, &status, &body, err, errlen) != 0)
        return -1;
    if (status == 404) {
        json_decref(body);
        return 0;
    }
    if (status != 200 || !json_is_object(body)) {
        json_decref(body);
        return rq_errf(err, errlen, "management API %s: HTTP %d for queue %s",
                       rq_mgmt_base(qa->mgmt), status, name);
    }
    *q = body;
    return 1;
}

/* Every queue of the vhost (an array, new), or NULL with err. */
static json_t *mgmt_list(rq_qadmin_t *qa, char *err, size_t errlen)
{
    char vh[800], path[1000];
    int status = 0;
    json_t *body = NULL;

    if (qa->mgmt == NULL) {
        rq_errf(err, errlen, "%s", qa->mgmt_err);
        return NULL;
    }
    if (rq_mgmt_escape(qa->cfg->rabbitmq.vhost, vh, sizeof(vh)) != 0) {
        rq_errf(err, errlen, "vhost too long");
        return NULL;
    }
    snprintf(path, sizeof(path), "/api/queues/%s?" MGMT_COLUMNS, vh);
    if (rq_mgmt_get(qa->mgmt, path, MGMT_TIMEOUT_MS, &status, &body, err, errlen) != 0)
        return NULL;
    if (status != 200 || !json_is_array(body)) {
        json_decref(body);
        rq_errf(err, errlen, "management API %s: HTTP %d for the queue list%s",
                rq_mgmt_base(qa->mgmt), status,
                status == 401 ? " (RABBITMQ_USER/RABBITMQ_PASS refused, or no management tag)"
                              : "");
        return NULL;
    }
    return body;
}

static int is_default(const rq_qadmin_t *qa, const char *name)
{
    return strcmp(name, qa->cfg->rabbitmq.request_queue) == 0;
}

static void answer(rq_qa_job_t *job, unsigned status, json_t *body)
{
    job->status = status;
    job->body = body;
}

static void answer_error(rq_qa_job_t *job, unsigned status, const char *msg)
{
    answer(job, status, json_pack("{s:s}", "error", msg));
}

/* ---- the jobs ---- */

/* The answer to a declare the broker refused (err): 409 for another queue's arguments
 * (PRECONDITION_FAILED "inequivalent arg"), 400 for an argument it does not take ("invalid
 * arg"), with the argument named; 503 for anything else. */
static void answer_refusal(rq_qa_job_t *job, const char *err)
{
    const char *r = strstr(err, "PRECONDITION_FAILED - ");
    char arg[128];
    json_t *o;

    if (!is_code(err, "406")) {
        answer_error(job, 503, err);
        return;
    }
    r = r ? r + 22 : err;
    o = json_pack("{s:s,s:s,s:s}", "error", r, "queue", job->name, "reason", r);
    if (o != NULL && rq_qadmin_refused_arg(r, arg, sizeof(arg)) == 0)
        json_object_set_new(o, "argument", json_string(arg));
    answer(job, strstr(r, "invalid arg") != NULL ? 400 : 409, o);
}

/* Without the management API: 1 (msg filled) when the retry queues of s's name that exist
 * show another max_retries (<q>.retry.N missing or <q>.retry.N+1 present), 0 when not, -1 on
 * a broker error. */
static int retries_differ(amqp_connection_state_t conn, const rq_queue_spec_t *s, char *msg,
                          size_t msglen, char *err, size_t errlen)
{
    char name[300];
    int rc;

    if (s->max_retries > 0) {
        rq_amqp_spec_retry_name(s, s->max_retries, name, sizeof(name));
        rc = passive(conn, name, NULL, NULL, err, errlen);
        if (rc <= 0) {
            if (rc == 0)
                snprintf(msg, msglen,
                         "queue %s exists with fewer retries: it has no %s (asked max_retries "
                         "%d)",
                         s->name, name, s->max_retries);
            return rc < 0 ? -1 : 1;
        }
    }
    rq_amqp_spec_retry_name(s, s->max_retries + 1, name, sizeof(name));
    rc = passive(conn, name, NULL, NULL, err, errlen);
    if (rc == 1)
        snprintf(msg, msglen, "queue %s exists with more retries: it has %s (asked max_retries %d)",
                 s->name, name, s->max_retries);
    return rc;
}

/* Compares the arguments a create wants (want[0..n)) with those the management API shows for
 * job->name: 1 when they differ (409 answered, naming the first argument; `how` says how the
 * queue came to be there), 0 when they are the same (or the management API does not know the
 * queue), -1 when the management API cannot tell (err filled). */
static int conflict_409(rq_qa_job_t *job, const amqp_table_entry_t *want, int n, const char *how,
                        char *err, size_t errlen)
{
    char wanted[300], current[300], arg[128], msg[900];
    const char *diff;
    json_t *mq = NULL;
    int rc = mgmt_queue(job->qa, job->name, &mq, err, errlen);

    if (rc != 1)
        return rc;
    diff = rq_qadmin_args_differ(want, n, json_object_get(mq, "arguments"), wanted, sizeof(wanted),
                                 current, sizeof(current));
    if (diff != NULL) {
        snprintf(arg, sizeof(arg), "%s", diff);
        snprintf(msg, sizeof(msg), "queue %s %s with other arguments: %s is %s, asked %s",
                 job->name, how, arg, current, wanted);
        answer(job, 409,
               json_pack("{s:s,s:s,s:s}", "error", msg, "argument", arg, "queue", job->name));
    }
    json_decref(mq);
    return diff != NULL ? 1 : 0;
}

static void run_create(rq_qa_job_t *job, amqp_connection_state_t conn, char *err, size_t errlen)
{
    rq_qadmin_t *qa = job->qa;
    amqp_table_entry_t want[RQ_QUEUE_ARGS_MAX];
    char dlq[300], msg[900];
    int n, exists, rc;

    if (is_default(qa, job->name)) {
        snprintf(msg, sizeof(msg),
                 "%s is the default queue (REQUEST_QUEUE): its settings come from the "
                 "configuration (QUEUE_TYPE, MAX_RETRIES, RETRY_BASE_MS)",
                 job->name);
        answer(job, 409, json_pack("{s:s,s:s}", "error", msg, "queue", job->name));
        return;
    }
    n = rq_amqp_queue_args(&job->spec, RQ_QROLE_MAIN, 0, want, dlq, sizeof(dlq));
    exists = passive(conn, job->name, NULL, NULL, err, errlen);
    if (exists < 0)
        goto unavailable;
    if (exists) {
        /* relayq's own settings are not compared by the broker: compare every argument
         * through the management API when there is one */
        rc = conflict_409(job, want, n, "exists", err, errlen);
        if (rc == 1)
            return;
        if (rc < 0) {
            /* no management API: max_retries shows in which retry queues exist (the broker
             * compares retry_base_ms through <q>.retry.1's x-message-ttl) */
            rq_debug("create %s: no argument check by the management API: %s", job->name, err);
            rc = retries_differ(conn, &job->spec, msg, sizeof(msg), err, errlen);
            if (rc < 0)
                goto unavailable;
            if (rc == 1) {
                answer(job, 409,
                       json_pack("{s:s,s:s,s:s}", "error", msg, "argument",
                                 RQ_WIRE_ARG_RELAYQ_MAX_RETRIES, "queue", job->name));
                return;
            }
        }
        /* the broker checks its own arguments: <q> first, so that nothing derived is
         * declared for a queue that is refused */
        if (rq_amqp_declare_spec_queue(conn, CH, &job->spec, RQ_QROLE_MAIN, 0, err, errlen) != 0) {
            answer_refusal(job, err);
            return;
        }
    }
    if (!exists && qa->mgmt != NULL) {
        /* Another replica may have created it since the passive declare, with other
         * settings of relayq's own that the broker does not compare (x-relayq-max-retries):
         * the broker's declare-ok says nothing, the stored arguments do. <q> first, then
         * the check, so that the loser declares nothing derived. */
        if (rq_amqp_declare_spec_queue(conn, CH, &job->spec, RQ_QROLE_MAIN, 0, err, errlen) != 0) {
            answer_refusal(job, err);
            return;
        }
        if (conflict_409(job, want, n, "was just created by another request", err, errlen) == 1)
            return;
    }
    if (rq_amqp_declare_spec(conn, CH, &job->spec, err, errlen) != 0) {
        answer_refusal(job, err);
        return;
    }
    answer(job, exists ? 200 : 201,
           json_pack("{s:s,s:s,s:b}", "name", job->name, "status", exists ? "exists" : "created",
                     "created", !exists));
    if (job->body != NULL)
        json_object_set_new(
            job->body, "settings",
            json_pack("{s:s,s:o,s:o,s:o,s:i,s:I}", "type", job->spec.type, "max_priority",
                      job->spec.max_priority ? json_integer(job->spec.max_priority) : json_null(),
                      "max_length",
                      job->spec.max_length ? json_integer(job->spec.max_length) : json_null(),
                      "message_ttl_ms",
                      job->spec.message_ttl_ms ? json_integer(job->spec.message_ttl_ms)
                                               : json_null(),
                      "max_retries", job->spec.max_retries, "retry_base_ms",
                      (json_int_t)job->spec.retry_base_ms));
    return;

unavailable:
    answer_error(job, 503, err);
}

/* {"dlq_depth"} etc of one queue into o: the DLQ's ready count or null. */
static int dlq_depth(amqp_connection_state_t conn, const char *name, json_t *o, char *err,
                     size_t errlen)
{
    char dlq[300];
    long long d = 0;
    int rc;

    snprintf(dlq, sizeof(dlq), "%s.dlq", name);
    rc = passive(conn, dlq, &d, NULL, err, errlen);
    if (rc < 0)
        return -1;
    json_object_set_new(o, "dlq_depth", rc ? json_integer(d) : json_null());
    return 0;
}

/* The settings of the default queue (from the configuration). */
static json_t *default_settings(const rq_qadmin_t *qa)
{
    const RabbitMQConfig *r = &qa->cfg->rabbitmq;
    return json_pack("{s:s,s:n,s:n,s:n,s:i,s:i}", "type", r->queue_type, "max_priority",
                     "max_length", "message_ttl_ms", "max_retries", r->max_retries, "retry_base_ms",
                     r->retry_base_ms);
}

static void run_get(rq_qa_job_t *job, amqp_connection_state_t conn, char *err, size_t errlen)
{
    rq_qadmin_t *qa = job->qa;
    long long ready = 0, consumers = 0;
    json_t *o, *mq = NULL, *args;
    int rc = passive(conn, job->name, &ready, &consumers, err, errlen), def;

    if (rc < 0) {
        answer_error(job, 503, err);
        return;
    }
    if (rc == 0) {
        char msg[300];
        snprintf(msg, sizeof(msg), "no queue %s", job->name);
        answer_error(job, 404, msg);
        return;
    }
    def = is_default(qa, job->name);
    o = json_pack("{s:s,s:b,s:I,s:n,s:I}", "name", job->name, "default", def, "ready",
                  (json_int_t)ready, "unacked", "consumers", (json_int_t)consumers);
    if (o == NULL || dlq_depth(conn, job->name, o, err, errlen) != 0) {
        json_decref(o);
        answer_error(job, 503, o ? err : "out of memory");
        return;
    }
    rc = mgmt_queue(qa, job->name, &mq, err, errlen);
    args = json_object_get(mq, "arguments");
    if (rc == 1 && !def && !json_is_true(json_object_get(args, RQ_WIRE_ARG_RELAYQ_QUEUE))) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "no queue %s of the queue service (the broker has one, not "
                 "created by relayq)",
                 job->name);
        json_decref(mq);
        json_decref(o);
        answer_error(job, 404, msg);
        return;
    }
    if (rc == 1) {
        json_object_set_new(
            o, "unacked",
            json_integer(json_integer_value(json_object_get(mq, "messages_unacknowledged"))));
        json_object_set_new(o, "type", json_copy(json_object_get(mq, "type")));
    } else {
        json_object_set_new(o, "type",
                            def ? json_string(qa->cfg->rabbitmq.queue_type) : json_null());
        json_object_set_new(o, "management", json_string(err));
    }
    json_object_set_new(
        o, "settings",
        def       ? default_settings(qa)
        : rc == 1 ? rq_qadmin_settings(args, json_string_value(json_object_get(mq, "type")))
                  : json_null());
    json_decref(mq);
    answer(job, 200, o);
}

static void run_list(rq_qa_job_t *job, char *err, size_t errlen)
{
    rq_qadmin_t *qa = job->qa;
    json_t *all = mgmt_list(qa, err, errlen), *ready = NULL, *out = NULL, *q;
    size_t i;

    if (all == NULL) {
        char msg[500];
        snprintf(msg, sizeof(msg), "the queue list needs the management API: %s", err);
        answer_error(job, 503, msg);
        return;
    }
    ready = json_object();
    out = json_array();
    json_array_foreach(all, i, q)
    {
        const char *name = json_string_value(json_object_get(q, "name"));
        json_t *r = json_object_get(q, "messages_ready");
        if (name != NULL)
            json_object_set_new(ready, name,
                                json_integer(json_is_integer(r) ? json_integer_value(r) : 0));
    }
    json_array_foreach(all, i, q)
    {
        const char *name = json_string_value(json_object_get(q, "name"));
        json_t *args = json_object_get(q, "arguments"), *s, *d;
        char dlq[300];
        int def;
        if (name == NULL)
            continue;
        def = is_default(qa, name);
        if (!def && !json_is_true(json_object_get(args, RQ_WIRE_ARG_RELAYQ_QUEUE)))
            continue;
        s = rq_mgmt_queue_summary(q);
        if (s == NULL)
            continue;
        snprintf(dlq, sizeof(dlq), "%s.dlq", name);
        d = json_object_get(ready, dlq);
        json_object_del(s, "arguments");
        json_object_set_new(s, "default", json_boolean(def));
        json_object_set_new(s, "dlq_depth", d ? json_integer(json_integer_value(d)) : json_null());
        json_object_set_new(
            s, "settings",
            def ? default_settings(qa)
                : rq_qadmin_settings(args, json_string_value(json_object_get(q, "type"))));
        json_array_append_new(out, s);
    }
    json_decref(ready);
    json_decref(all);
    answer(job, 200, json_pack("{s:o}", "queues", out));
}

/* The derived queues of name that exist or may: .dlq, .retry.1..max_retries and every
 * .delay.<ms> there is: from the management list when there is one (and use_mgmt), else found by a
 * passive declare of every delay bucket there can be (rq_qname_delay_bucket(): about 630 names; a
 * DELETE without the management API must not leave a bucket whose messages would be
 * dead-lettered into a queue that is gone). A new array of strings, or NULL with err when the
 * broker failed. */
static json_t *derived_names(rq_qadmin_t *qa, amqp_connection_state_t conn, const char *name,
                             int max_retries, int use_mgmt, char *err, size_t errlen)
{
    json_t *out = json_array(), *all, *q;
    char b[300];
    size_t i, plen;

    snprintf(b, sizeof(b), "%s.dlq", name);
    json_array_append_new(out, json_string(b));
    for (int a = 1; a <= max_retries; a++) {
        snprintf(b, sizeof(b), "%s.retry.%d", name, a);
        json_array_append_new(out, json_string(b));
    }
    all = qa->mgmt != NULL && use_mgmt ? mgmt_list(qa, err, errlen) : NULL;
    if (all == NULL) {
        for (long long ms = 1; ms > 0; ms = rq_qname_delay_bucket(ms + 1)) {
            int rc;
            rq_qname_delay(name, ms, b, sizeof(b));
            rc = passive(conn, b, NULL, NULL, err, errlen);
            if (rc < 0) {
                json_decref(out);
                return NULL;
            }
            if (rc == 1)
                json_array_append_new(out, json_string(b));
        }
    }
    plen = strlen(name);
    json_array_foreach(all, i, q)
    {
        const char *n = json_string_value(json_object_get(q, "name")), *t;
        size_t sl;
        if (n == NULL || strncmp(n, name, plen) != 0 || n[plen] != '.')
            continue;
        t = n + plen + 1;
        sl = strncmp(t, "delay.", 6) == 0 ? 6 : strncmp(t, "retry.", 6) == 0 ? 6 : 0;
        if (sl == 0 || t[sl] == '\0' || strspn(t + sl, "0123456789") != strlen(t + sl))
            continue;
        /* retry queues beyond max_retries: left by an earlier queue of that name */
        if (t[0] == 'r' && atoll(t + sl) >= 1 && atoll(t + sl) <= max_retries)
            continue;
        json_array_append_new(out, json_string(n));
    }
    json_decref(all);
    return out;
}

/* Appends to `to` every string of `from` it does not hold yet. */
static void names_union(json_t *to, const json_t *from)
{
    size_t i, k;
    json_t *v, *w;

    json_array_foreach(from, i, v)
    {
        int found = 0;
        json_array_foreach(to, k, w) found |= json_equal(v, w);
        if (!found)
            json_array_append(to, v);
    }
}

/* DELETE's ownership check: job's queue must be relayq's (its x-relayq-queue argument through
 * the management API; without it, its <q>.dlq must exist). Reads its max_retries and unacked
 * count when the management API answers (*mgmt_ok 0 when it just failed: not asked again).
 * Returns 1 to go on, or 0 when answered (409, 503). */
static int delete_owned(rq_qa_job_t *job, amqp_connection_state_t conn, int *max_retries,
                        long long *unacked, int *mgmt_ok, char *err, size_t errlen)
{
    json_t *mq = NULL, *v;
    char msg[600];
    int rc = mgmt_queue(job->qa, job->name, &mq, err, errlen);

    *mgmt_ok = rc >= 0; /* a management API that just failed (a timeout) is not asked again */
    if (rc == 1) {
        json_t *args = json_object_get(mq, "arguments");
        if (!json_is_true(json_object_get(args, RQ_WIRE_ARG_RELAYQ_QUEUE))) {
            snprintf(msg, sizeof(msg),
                     "queue %s was not created by relayq (no " RQ_WIRE_ARG_RELAYQ_QUEUE
                     " argument): not deleted",
                     job->name);
            json_decref(mq);
            answer_error(job, 409, msg);
            return 0;
        }
        v = json_object_get(args, RQ_WIRE_ARG_RELAYQ_MAX_RETRIES);
        if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= 1000)
            *max_retries = (int)json_integer_value(v);
        *unacked = json_integer_value(json_object_get(mq, "messages_unacknowledged"));
        json_decref(mq);
    } else if (rc < 0) {
        /* Without the management API the arguments (x-relayq-queue) cannot be read: a queue
         * relayq created always has its <q>.dlq; another application's queue without one is
         * never deleted on a guess. */
        char dlq[300], why[400];
        snprintf(why, sizeof(why), "%s", err);
        snprintf(dlq, sizeof(dlq), "%s.dlq", job->name);
        rc = passive(conn, dlq, NULL, NULL, err, errlen);
        if (rc < 0) {
            answer_error(job, 503, err);
            return 0;
        }
        if (rc == 0) {
            snprintf(msg, sizeof(msg),
                     "queue %s has no %s: it does not look created by relayq, and without the "
                     "management API (%s) its arguments cannot be checked: not deleted",
                     job->name, dlq, why);
            answer_error(job, 409, msg);
            return 0;
        }
    }
    return 1;
}

/* DELETE without ?force: 1 when the queue (ready, unacked) and every derived queue are empty,
 * else 0 when answered (409 with the counts, or 503). */
static int delete_empty(rq_qa_job_t *job, amqp_connection_state_t conn, const json_t *derived,
                        long long ready, long long unacked, char *err, size_t errlen)
{
    long long total = ready + unacked, dready = 0;
    char msg[600];
    json_t *v;
    size_t i;

    json_array_foreach(derived, i, v)
    {
        long long d = 0;
        if (passive(conn, json_string_value(v), &d, NULL, err, errlen) < 0) {
            answer_error(job, 503, err);
            return 0;
        }
        total += d;
        if (i == 0)
            dready = d;
    }
    if (total == 0)
        return 1;
    snprintf(msg, sizeof(msg),
             "queue %s is not empty (%lld ready, %lld unacked, %lld in its DLQ, %lld in its retry "
             "and delay queues): DELETE with ?force=true drops them",
             job->name, ready, unacked, dready, total - ready - unacked - dready);
    answer(job, 409,
           json_pack("{s:s,s:I,s:I,s:I}", "error", msg, "ready", (json_int_t)ready, "unacked",
                     (json_int_t)unacked, "dlq_depth", (json_int_t)dready));
    return 0;
}

static void run_delete(rq_qa_job_t *job, amqp_connection_state_t conn, char *err, size_t errlen)
{
    long long ready = 0, dropped = 0, unacked = 0;
    int max_retries = 20; /* MAX_RETRIES' bound: every retry queue there may be */
    int mgmt_ok, rc;
    json_t *derived = NULL, *again, *v;
    char msg[600];
    size_t i;

    if (is_default(job->qa, job->name)) {
        snprintf(msg, sizeof(msg),
                 "%s is the default queue (REQUEST_QUEUE) of /produce and the consumers: it "
                 "cannot be deleted through the API",
                 job->name);
        answer_error(job, 409, msg);
        return;
    }
    rc = passive(conn, job->name, &ready, NULL, err, errlen);
    if (rc <= 0) {
        if (rc == 0)
            snprintf(msg, sizeof(msg), "no queue %s", job->name);
        answer_error(job, rc == 0 ? 404 : 503, rc == 0 ? msg : err);
        return;
    }
    if (!delete_owned(job, conn, &max_retries, &unacked, &mgmt_ok, err, errlen))
        return;
    derived = derived_names(job->qa, conn, job->name, max_retries, mgmt_ok, err, errlen);
    if (derived == NULL)
        goto unavailable;
    if (!job->force && !delete_empty(job, conn, derived, ready, unacked, err, errlen)) {
        json_decref(derived);
        return;
    }
    /* Not queue.delete's if-empty: quorum queues refuse it (540 NOT_IMPLEMENTED); the check
     * above is the emptiness test (a publish racing the delete is dropped with the queue) */
    rc = delete_queue(conn, job->name, 0, &dropped, err, errlen);
    if (rc == 1) {
        snprintf(msg, sizeof(msg),
                 "queue %s is not empty: DELETE with ?force=true drops its messages", job->name);
        json_decref(derived);
        answer_error(job, 409, msg);
        return;
    }
    if (rc < 0)
        goto unavailable;
    /* Listed again now that <q> is gone: a bucket the publisher declared after the first list
     * (its passive check of <q> came before the delete) goes too, never left to take messages
     * and dead-letter them into nowhere (or into a new queue of that name much later). */
    again = derived_names(job->qa, conn, job->name, max_retries, mgmt_ok, err, errlen);
    if (again == NULL)
        goto unavailable;
    names_union(derived, again);
    json_decref(again);
    json_array_foreach(derived, i, v)
    {
        if (delete_queue(conn, json_string_value(v), 0, &dropped, err, errlen) < 0)
            goto unavailable;
    }
    answer(job, 200,
           json_pack("{s:s,s:s,s:o,s:I}", "status", "deleted", "deleted", job->name, "derived",
                     derived, "messages_dropped", (json_int_t)dropped));
    return;

unavailable:
    json_decref(derived);
    answer_error(job, 503, err);
}

/* The RQ_DLQ_RUN job of the worker. */
static void run_job(rq_dlq_job_t *base, const rq_dlq_stop_t *stop)
{
    rq_qa_job_t *job = (rq_qa_job_t *)base;
    char err[512] = "";
    amqp_connection_state_t conn = NULL;

    (void)stop;
    if (job->op == RQ_QA_LIST) {
        run_list(job, err, sizeof(err));
        return;
    }
    conn = rq_amqp_open(&job->qa->cfg->rabbitmq, err, sizeof(err));
    if (conn == NULL) {
        answer_error(job, 503, err);
        return;
    }
    if (job->op == RQ_QA_CREATE)
        run_create(job, conn, err, sizeof(err));
    else if (job->op == RQ_QA_GET)
        run_get(job, conn, err, sizeof(err));
    else
        run_delete(job, conn, err, sizeof(err));
    rq_amqp_close(conn);
}

/* base.done of every job: turns a DLQ job's result into a status, then the submitter's. */
static void job_done(rq_dlq_job_t *base, void *arg)
{
    rq_qa_job_t *job = arg;

    (void)base;
    if (job->op == RQ_QA_DLQ_PEEK || job->op == RQ_QA_DLQ_RETRY) {
        if (job->base.result != NULL)
            answer(job, 200, job->base.result);
        else
            answer_error(job, job->base.not_found ? 404 : 503,
                         job->base.error[0] ? job->base.error : "the DLQ call failed");
        job->base.result = NULL;
    } else if (job->status == 0) {
        answer_error(job, 503, job->base.error[0] ? job->base.error : "the queue call failed");
    }
    if (job->body == NULL)
        job->status = 503; /* out of memory: the resume answers with a generic 503 */
    job->done(job, job->done_arg);
}

rq_qadmin_t *rq_qadmin_new(const rq_config_t *cfg)
{
    rq_qadmin_t *qa = calloc(1, sizeof(*qa));

    if (qa == NULL)
        return NULL;
    qa->cfg = cfg;
    qa->mgmt = rq_mgmt_new(&cfg->rabbitmq, qa->mgmt_err, sizeof(qa->mgmt_err));
    if (qa->mgmt == NULL)
        rq_warn("queue service: %s (GET /queues answers 503; GET /queues/{id} has no unacked "
                "counts)",
                qa->mgmt_err);
    else
        rq_info("queue service: management API %s", rq_mgmt_base(qa->mgmt));
    qa->worker = rq_dlq_worker_new(&cfg->rabbitmq);
    if (qa->worker == NULL) {
        rq_qadmin_free(qa);
        return NULL;
    }
    return qa;
}

int rq_qadmin_submit(rq_qadmin_t *qa, rq_qa_job_t *job)
{
    job->qa = qa;
    job->status = 0;
    job->body = NULL;
    job->base.done = job_done;
    job->base.done_arg = job;
    job->base.queue = job->name;
    if (job->op == RQ_QA_DLQ_PEEK)
        job->base.kind = RQ_DLQ_PEEK;
    else if (job->op == RQ_QA_DLQ_RETRY)
        job->base.kind = RQ_DLQ_RETRY;
    else
        job->base.kind = RQ_DLQ_RUN;
    job->base.run = run_job;
    if (job->op == RQ_QA_CREATE) {
        job->spec.name = job->name;
        job->spec.type = job->type;
        job->spec.service = 1;
    }
    return rq_dlq_worker_submit(qa->worker, &job->base);
}

const char *rq_qadmin_mgmt_error(const rq_qadmin_t *qa)
{
    return qa->mgmt == NULL ? qa->mgmt_err : "";
}

void rq_qadmin_stop(rq_qadmin_t *qa)
{
    if (qa != NULL)
        rq_dlq_worker_stop(qa->worker);
}

void rq_qadmin_free(rq_qadmin_t *qa)
{
    if (qa == NULL)
        return;
    rq_dlq_worker_free(qa->worker);
    rq_mgmt_free(qa->mgmt);
    free(qa);
}
