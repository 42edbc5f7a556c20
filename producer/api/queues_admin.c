/* queues_admin.c - the queue service's admin routes (issue 16): POST/GET /queues,
 * GET/DELETE /queues/{id}, GET /queues/{id}/dlq, POST /queues/{id}/messages/retry.
 *
 * The HTTP thread validates and answers 400/403/404/405 itself; every broker call runs on the
 * queue admin's worker (producer/queues/qadmin.h) while the connection is suspended (c->ext
 * holds the job, answered by resume() on an HTTP thread). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_ctx.h"
#include "qadmin.h"

/* Bounds of POST /queues' options. */
#define QA_MAX_PRIORITY 255
#define QA_MAX_LENGTH 1000000000LL
#define QA_MAX_TTL_MS 2147483647LL /* x-message-ttl's bound in practice (~24.8 days) */
#define QA_MAX_RETRIES 20          /* MAX_RETRIES' bound */
#define QA_MIN_RETRY_BASE_MS 10
#define QA_MAX_RETRY_BASE_MS 3600000

/* The permission check of POST /queues on the body's name. */
static int may_admin(req_ctx_t *c, const char *name)
{
    return rq_principal_allows_queue(&c->principal, RQ_QACT_ADMIN, name);
}

/* 1 when the principal may see queue `name` in GET /queues (any queue action on it;
 * publish: and subscribe: are topic actions). */
static int may_see(req_ctx_t *c, const char *name)
{
    for (int act = 0; act < RQ_QACT_COUNT; act++)
        if ((RQ_QACT_QUEUE_MASK & (1u << act)) &&
            rq_principal_allows_queue(&c->principal, (rq_qaction_t)act, name))
            return 1;
    return 0;
}

static void free_job(void *ext)
{
    rq_qa_job_t *job = ext;

    json_decref(job->body);
    json_decref(job->base.result);
    free(job);
}

static void on_done(rq_qa_job_t *job, void *arg)
{
    (void)job;
    rq_api_ctx_complete(arg);
}

static enum MHD_Result resume(req_ctx_t *c)
{
    rq_qa_job_t *job = c->ext;
    json_t *body = job->body;
    unsigned status = job->status;

    job->body = NULL;
    if (body == NULL)
        return rq_api_reply_503(c, "the queue call failed (out of memory)");
    if (job->op == RQ_QA_LIST && status == 200) {
        json_t *all = json_object_get(body, "queues"), *kept = json_array(), *q;
        size_t i;
        json_array_foreach(all, i, q)
        {
            if (may_see(c, json_string_value(json_object_get(q, "name"))))
                json_array_append(kept, q);
        }
        json_object_set_new(body, "count", json_integer((json_int_t)json_array_size(kept)));
        json_object_set_new(body, "queues", kept);
    }
    if (status == 503)
        return rq_api_reply_503_json(c, body);
    return rq_api_reply(c, status, body);
}

/* Hands job (owned by c from here on) to the worker and suspends. */
static enum MHD_Result start(req_ctx_t *c, rq_qa_job_t *job)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    c->ext = job;
    c->ext_free = free_job;
    c->ext_resume = resume;
    if (c->api->qadmin == NULL)
        return rq_api_reply_503(c, "the queue service is not running");
    job->done = on_done;
    job->done_arg = c;
    job->base.budget_ms = (int)c->api->cfg->publish_timeout_ms;
    job->base.watch_fd = ci != NULL && ci->connect_fd != MHD_INVALID_SOCKET;
    job->base.client_fd = job->base.watch_fd ? ci->connect_fd : -1;
    if (rq_qadmin_submit(c->api->qadmin, job) != 0)
        return rq_api_reply_503(c, job->base.error);
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return resume(c);
}

static rq_qa_job_t *new_job(req_ctx_t *c, rq_qa_op_t op, const char *name)
{
    rq_qa_job_t *job = calloc(1, sizeof(*job));

    (void)c;
    if (job == NULL)
        return NULL;
    job->op = op;
    snprintf(job->name, sizeof(job->name), "%s", name ? name : "");
    return job;
}

/* 400 for a bad {id}; returns 1 when answered. */
static int bad_name(req_ctx_t *c, enum MHD_Result *ret)
{
    char why[200];

    if (c->qname_too_long) {
        snprintf(why, sizeof(why), "a queue name holds at most %d characters", RQ_QNAME_MAX);
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, why);
        return 1;
    }
    if (rq_qname_check(c->qname, why, sizeof(why)) != 0) {
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, why);
        return 1;
    }
    return 0;
}

/* An optional integer field lo..hi into *out (absent or null leaves it). Returns 0, or -1
 * with msg filled. */
static int int_field(json_t *o, const char *key, long long lo, long long hi, long long *out,
                     char *msg, size_t len)
{
    json_t *v = json_object_get(o, key);

    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(msg, len, "%s must be an integer from %lld to %lld", key, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

/* POST /queues' body: 0 when every member is a known field and "name" a valid queue name
 * (*name set, borrowed from root), else -1 with the 400 text in msg. */
static int create_name(json_t *root, const char **name, char *msg, size_t len)
{
    static const char *const known[] = {"name",         "type",           "max_priority",
                                        "max_length",   "message_ttl_ms", "max_retries",
                                        "retry_base_ms"};
    const char *key;
    json_t *v;

    json_object_foreach(root, key, v)
    {
        size_t i;
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strcmp(key, known[i]) == 0)
                break;
        if (i == sizeof(known) / sizeof(known[0])) {
            snprintf(msg, len,
                     "unknown field '%.64s' (known: name, type, max_priority, max_length, "
                     "message_ttl_ms, max_retries, retry_base_ms)",
                     key);
            return -1;
        }
    }
    v = json_object_get(root, "name");
    if (!json_is_string(v)) {
        snprintf(msg, len, "name must be a string (the queue's name)");
        return -1;
    }
    *name = json_string_value(v);
    if (strlen(*name) != json_string_length(v)) {
        snprintf(msg, len, "name must not hold a NUL character");
        return -1;
    }
    return rq_qname_check(*name, msg, len) != 0 ? -1 : 0;
}

/* POST /queues. */
static enum MHD_Result create(req_ctx_t *c)
{
    const RabbitMQConfig *r = &c->api->cfg->rabbitmq;
    enum MHD_Result ret = MHD_NO;
    json_t *root = rq_api_body_object(c, &ret), *v;
    const char *name = NULL, *type = r->queue_type;
    long long prio = 0, maxlen = 0, ttl = 0, retries = r->max_retries, base = r->retry_base_ms;
    char msg[300];
    rq_qa_job_t *job;

    if (root == NULL)
        return ret;
    if (create_name(root, &name, msg, sizeof(msg)) != 0)
        goto bad;
    v = json_object_get(root, "type");
    if (v != NULL && !json_is_null(v)) {
        type = json_string_value(v);
        if (type == NULL || (strcmp(type, "quorum") != 0 && strcmp(type, "classic") != 0)) {
            snprintf(msg, sizeof(msg), "type must be \"quorum\" or \"classic\"");
            goto bad;
        }
    }
    if (int_field(root, "max_priority", 1, QA_MAX_PRIORITY, &prio, msg, sizeof(msg)) != 0 ||
        int_field(root, "max_length", 1, QA_MAX_LENGTH, &maxlen, msg, sizeof(msg)) != 0 ||
        int_field(root, "message_ttl_ms", 1, QA_MAX_TTL_MS, &ttl, msg, sizeof(msg)) != 0 ||
        int_field(root, "max_retries", 0, QA_MAX_RETRIES, &retries, msg, sizeof(msg)) != 0 ||
        int_field(root, "retry_base_ms", QA_MIN_RETRY_BASE_MS, QA_MAX_RETRY_BASE_MS, &base, msg,
                  sizeof(msg)) != 0)
        goto bad;
    if (prio > 0 && strcmp(type, "quorum") == 0) {
        snprintf(msg, sizeof(msg),
                 "max_priority needs a classic queue (RabbitMQ 3.10's quorum queues have no "
                 "priorities: the broker refuses x-max-priority on them)");
        goto bad;
    }
    if (!may_admin(c, name)) {
        snprintf(msg, sizeof(msg), "this credential may not administer queue '%s'", name);
        json_decref(root);
        return rq_api_reply_error(c, MHD_HTTP_FORBIDDEN, msg);
    }
    job = new_job(c, RQ_QA_CREATE, name);
    if (job == NULL) {
        json_decref(root);
        return rq_api_reply_503(c, "out of memory");
    }
    snprintf(job->type, sizeof(job->type), "%s", type);
    job->spec.max_priority = (int)prio;
    job->spec.max_length = maxlen;
    job->spec.message_ttl_ms = ttl;
    job->spec.max_retries = (int)retries;
    job->spec.retry_base_ms = base;
    json_decref(root);
    return start(c, job);

bad:
    json_decref(root);
    return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
}

/* POST /queues/{id}/messages/retry: {"count": N} or ?count=N (as POST /dlq/retry). */
static enum MHD_Result retry(req_ctx_t *c)
{
    enum MHD_Result ret = MHD_NO;
    long long count;
    rq_qa_job_t *job;

    if (rq_api_retry_count(c, &count, &ret) != 0)
        return ret;
    job = new_job(c, RQ_QA_DLQ_RETRY, c->qname);
    if (job == NULL)
        return rq_api_reply_503(c, "out of memory");
    job->base.count = (size_t)count;
    return start(c, job);
}

_Static_assert(RQ_DLQ_MAX_OFFSET == 100000, "the GET /queues/{id}/dlq 400 message says 100000");

/* GET /queues/{id}/dlq?limit=N&offset=M (as GET /dlq). */
static enum MHD_Result peek(req_ctx_t *c)
{
    rq_qa_job_t *job = new_job(c, RQ_QA_DLQ_PEEK, c->qname);

    if (job == NULL)
        return rq_api_reply_503(c, "out of memory");
    job->base.limit = 10;
    job->base.offset = 0;
    if (rq_api_query_size(c->conn, "limit", RQ_DLQ_MAX_LIMIT, &job->base.limit) != 0 ||
        rq_api_query_size(c->conn, "offset", RQ_DLQ_MAX_OFFSET, &job->base.offset) != 0) {
        free(job);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  "limit must be an integer from 0 to 1000 and offset one from 0 "
                                  "to 100000");
    }
    return start(c, job);
}

/* DELETE /queues/{id}[?force=true|false]. */
static enum MHD_Result delete_route(req_ctx_t *c)
{
    const char *f = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "force");
    rq_qa_job_t *job;
    int force = 0;

    if (f != NULL) {
        if (strcmp(f, "true") == 0 || strcmp(f, "1") == 0)
            force = 1;
        else if (strcmp(f, "false") != 0 && strcmp(f, "0") != 0)
            return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "force must be true or false");
    }
    job = new_job(c, RQ_QA_DELETE, c->qname);
    if (job == NULL)
        return rq_api_reply_503(c, "out of memory");
    job->force = force;
    return start(c, job);
}

static int is(const req_ctx_t *c, const char *m)
{
    return strcmp(c->method, m) == 0;
}

enum MHD_Result rq_qroute_admin(req_ctx_t *c)
{
    int get = is(c, MHD_HTTP_METHOD_GET) || is(c, MHD_HTTP_METHOD_HEAD);
    enum MHD_Result ret;
    rq_qa_job_t *job;

    switch (c->route) {
    case R_QUEUES:
        if (is(c, MHD_HTTP_METHOD_POST))
            return create(c);
        if (!get)
            return rq_api_reply_405(c, "GET, POST");
        if (c->api->qadmin != NULL && rq_qadmin_mgmt_error(c->api->qadmin)[0] != '\0') {
            char msg[400];
            snprintf(msg, sizeof(msg), "the queue list needs the management API: %s",
                     rq_qadmin_mgmt_error(c->api->qadmin));
            return rq_api_reply_503(c, msg);
        }
        job = new_job(c, RQ_QA_LIST, "");
        return job ? start(c, job) : rq_api_reply_503(c, "out of memory");
    case R_QUEUE:
        if (!get && !is(c, MHD_HTTP_METHOD_DELETE))
            return rq_api_reply_405(c, "GET, DELETE");
        if (bad_name(c, &ret))
            return ret;
        if (!get)
            return delete_route(c);
        job = new_job(c, RQ_QA_GET, c->qname);
        return job ? start(c, job) : rq_api_reply_503(c, "out of memory");
    case R_QDLQ:
        if (!get)
            return rq_api_reply_405(c, "GET");
        if (bad_name(c, &ret))
            return ret;
        return peek(c);
    case R_QRETRY:
        if (!is(c, MHD_HTTP_METHOD_POST))
            return rq_api_reply_405(c, "POST");
        if (bad_name(c, &ret))
            return ret;
        return retry(c);
    default:
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
    }
}
