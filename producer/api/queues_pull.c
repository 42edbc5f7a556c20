/* queues_pull.c - GET /queues/{id}/messages (pull with leases) and
 * POST /queues/{id}/messages/{msgId}/(ack|nack|lease), answered by the leaser thread
 * (producer/queues/lease.h): the request is checked here, handed over as a job, and its
 * connection suspended until the leaser is done (a long-poll: up to wait_s seconds).
 *
 *   GET  ?max=1..100 (1) &lease_s=1..3600 (30) &wait_s=0..30 (0)
 *        -> 200 {"queue", "messages": [...], "replica"}; 404 unknown queue; 400 bad parameters
 *   POST .../ack    {"lease_id"} (or ?lease_id=)                       -> 200 | 409
 *   POST .../nack   {"lease_id", "requeue"?: true, "delay_ms"?, "reason"?} -> 200 | 409
 *   POST .../lease  {"lease_id", "lease_s"?: 30}                       -> 200 | 409
 *   POST /queues/{id}/messages/ack  (batch ack)
 *        {"acks": [{"message_id", "lease_id"}, ...]}  1..1000 items
 *        -> 200 {"acked": n, "failed": [{"index", "message_id", "error"}...]}: each item is
 *           acked or fails on its own (unknown, expired, another replica's lease, or a lease
 *           of another message: the reason in "error"); the request is never 409 for them.
 *           400 for a malformed body, naming the first bad item: "acks[3].lease_id must be a
 *           non-empty string". One leaser job for the batch, its acks in one send().
 * Every answer of the leaser carries Relayq-Replica: the replica holding the leases (a load
 * balancer routes a lease's ack/nack/lease to it); a 503 carries Retry-After: 1.
 */
#include <stdlib.h>
#include <string.h>

#include "api_ctx.h"
#include "lease.h"
#include "lease_fwd.h"

typedef struct pull_ext {
    rq_lease_job_t job;
    rq_lease_ack_item_t *acks; /* a batch ack's items (job.acks) */
} pull_ext_t;

static void ext_free(void *p)
{
    pull_ext_t *x = p;

    rq_lease_job_clear(&x->job);
    free(x->acks);
    free(x);
}

static enum MHD_Result reply_job(req_ctx_t *c)
{
    pull_ext_t *x = c->ext;
    unsigned status = x->job.status ? x->job.status : 503;
    size_t len = 0;
    char *text = rq_lease_job_text(&x->job, &len);

    if (text == NULL)
        return MHD_NO;
    if (status >= 400 && status < 500)
        rq_series_inc(c->api->m_rejected);
    c->status = status;
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        return rq_http_reply_buf(c->conn, status, "application/json", text, len,
                                 MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return rq_http_reply_buf(c->conn, status, "application/json", text, len, "Relayq-Replica",
                             x->job.replica);
}

static void job_done(rq_lease_job_t *job, void *arg)
{
    (void)job;
    rq_api_ctx_complete(arg);
}

/* Hands x's job to the leaser and suspends c until it is done. */
static enum MHD_Result submit(req_ctx_t *c, pull_ext_t *x)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    if (c->api->leaser == NULL) {
        free(x->acks);
        free(x);
        return rq_api_reply_503(c, "pull consumption is not available");
    }
    x->job.client_fd = ci != NULL && ci->connect_fd != MHD_INVALID_SOCKET ? ci->connect_fd : -1;
    x->job.done = job_done;
    x->job.done_arg = c;
    c->ext = x;
    c->ext_free = ext_free;
    c->ext_resume = reply_job;
    c->state = ST_DONE;
    /* A lease of another replica: forwarded to it over the broker (lease_fwd.h). */
    if ((rq_lease_fwd_wanted(c->api->lease_fwd, &x->job)
             ? rq_lease_fwd_submit(c->api->lease_fwd, &x->job)
             : rq_leaser_submit(c->api->leaser, &x->job)) != 0)
        return reply_job(c);
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return reply_job(c);
}

/* A query integer lo..hi into *out (absent: unchanged). Returns 0, or -1 when malformed. */
static int query_int(struct MHD_Connection *conn, const char *name, long long lo, long long hi,
                     int *out)
{
    size_t v;

    if (MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name) == NULL)
        return 0;
    if (rq_api_query_size(conn, name, hi, &v) != 0 || (long long)v < lo)
        return -1;
    *out = (int)v;
    return 0;
}

static enum MHD_Result pull(req_ctx_t *c)
{
    pull_ext_t *x = calloc(1, sizeof(*x));
    char bad[256] = "";

    if (x == NULL)
        return rq_api_reply_503(c, "out of memory");
    x->job.kind = RQ_LJ_PULL;
    x->job.max = 1;
    x->job.lease_s = 30;
    x->job.wait_s = 0;
    if (query_int(c->conn, "max", 1, RQ_LEASE_MAX_PULL, &x->job.max) != 0)
        strcat(bad, "; max must be an integer from 1 to 100");
    if (query_int(c->conn, "lease_s", 1, RQ_LEASE_MAX_S, &x->job.lease_s) != 0)
        strcat(bad, "; lease_s must be an integer from 1 to 3600");
    if (query_int(c->conn, "wait_s", 0, RQ_LEASE_MAX_WAIT_S, &x->job.wait_s) != 0)
        strcat(bad, "; wait_s must be an integer from 0 to 30");
    if (bad[0] != '\0') {
        free(x);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, bad + 2);
    }
    snprintf(x->job.queue, sizeof(x->job.queue), "%s", c->qname);
    return submit(c, x);
}

/* The lease id of an action: the body's "lease_id", else ?lease_id=. Returns 0, or -1 after
 * writing the 400 reason into err. */
static int action_lease_id(req_ctx_t *c, json_t *b, rq_lease_job_t *job, char *err, size_t len)
{
    json_t *v = json_object_get(b, "lease_id");
    const char *id = json_is_string(v) ? json_string_value(v) : NULL;

    if (v != NULL && !json_is_string(v))
        return rq_errf(err, len, "lease_id must be a string");
    if (id == NULL)
        id = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "lease_id");
    if (id == NULL || id[0] == '\0')
        return rq_errf(err, len, "lease_id is required (in the body or as ?lease_id=)");
    /* too long to be one: the leaser answers 409 for an id of the wrong shape */
    snprintf(job->lease_id, sizeof(job->lease_id), "%s", strlen(id) <= RQ_LEASE_ID_LEN ? id : "-");
    return 0;
}

static int nack_fields(json_t *b, rq_lease_job_t *job, char *err, size_t len)
{
    json_t *rq = json_object_get(b, "requeue"), *d = json_object_get(b, "delay_ms"),
           *r = json_object_get(b, "reason");

    job->requeue = 1;
    if (rq != NULL && !json_is_boolean(rq))
        return rq_errf(err, len, "requeue must be true or false");
    if (rq != NULL)
        job->requeue = json_is_true(rq);
    if (d != NULL && !json_is_null(d)) {
        if (!json_is_integer(d) || json_integer_value(d) < 1 ||
            json_integer_value(d) > RQ_DELAY_MAX_MS)
            return rq_errf(err, len, "delay_ms must be an integer from 1 to 86400000");
        if (!job->requeue)
            return rq_errf(err, len, "delay_ms needs requeue true");
        job->delay_ms = json_integer_value(d);
    }
    if (r != NULL && !json_is_null(r)) {
        if (!json_is_string(r) || json_string_length(r) > RQ_LEASE_REASON_MAX ||
            !rq_utf8_valid(json_string_value(r), json_string_length(r)))
            return rq_errf(err, len, "reason must be a string of at most 200 bytes");
        snprintf(job->reason, sizeof(job->reason), "%s", json_string_value(r));
    }
    return 0;
}

static int extend_fields(req_ctx_t *c, json_t *b, rq_lease_job_t *job, char *err, size_t len)
{
    json_t *v = json_object_get(b, "lease_s");

    job->lease_s = 30;
    if (v == NULL && query_int(c->conn, "lease_s", 1, RQ_LEASE_MAX_S, &job->lease_s) != 0)
        return rq_errf(err, len, "lease_s must be an integer from 1 to 3600");
    if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                      json_integer_value(v) > RQ_LEASE_MAX_S))
        return rq_errf(err, len, "lease_s must be an integer from 1 to 3600");
    if (v != NULL)
        job->lease_s = (int)json_integer_value(v);
    return 0;
}

static enum MHD_Result action(req_ctx_t *c)
{
    enum MHD_Result ret;
    pull_ext_t *x;
    char err[160];
    json_t *b;
    int rc;

    if (c->msgid[0] == '\0')
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "the message id is empty");
    if ((b = rq_api_body_object(c, &ret)) == NULL)
        return ret;
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        json_decref(b);
        return rq_api_reply_503(c, "out of memory");
    }
    x->job.kind = c->qaction == RQ_QMA_ACK    ? RQ_LJ_ACK
                  : c->qaction == RQ_QMA_NACK ? RQ_LJ_NACK
                                              : RQ_LJ_EXTEND;
    rc = action_lease_id(c, b, &x->job, err, sizeof(err));
    if (rc == 0 && x->job.kind == RQ_LJ_NACK)
        rc = nack_fields(b, &x->job, err, sizeof(err));
    if (rc == 0 && x->job.kind == RQ_LJ_EXTEND)
        rc = extend_fields(c, b, &x->job, err, sizeof(err));
    json_decref(b);
    if (rc != 0) {
        free(x);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, err);
    }
    snprintf(x->job.queue, sizeof(x->job.queue), "%s", c->qname);
    snprintf(x->job.msgid, sizeof(x->job.msgid), "%s", c->msgid);
    return submit(c, x);
}

/* Reads a batch ack's items into x (x->acks, x->job.acks). Returns 0, or -1 after writing
 * the 400 reason into err. */
static int ack_items(json_t *b, pull_ext_t *x, char *err, size_t len)
{
    json_t *arr = json_object_get(b, "acks");
    size_t n = json_array_size(arr), i;
    json_t *it;

    if (!json_is_array(arr) || n < 1 || n > RQ_LEASE_MAX_ACKS)
        return rq_errf(err, len,
                       "acks must be an array of 1 to %d {\"message_id\", "
                       "\"lease_id\"} objects",
                       RQ_LEASE_MAX_ACKS);
    if ((x->acks = calloc(n, sizeof(*x->acks))) == NULL)
        return rq_errf(err, len, "out of memory");
    json_array_foreach(arr, i, it)
    {
        json_t *m = json_object_get(it, "message_id"), *lid = json_object_get(it, "lease_id");
        if (!json_is_object(it))
            return rq_errf(err, len, "acks[%zu] must be an object", i);
        if (!json_is_string(m) || json_string_length(m) == 0 ||
            json_string_length(m) > RQ_LEASE_MSGID_MAX)
            return rq_errf(err, len, "acks[%zu].message_id must be a string of 1 to %d bytes", i,
                           RQ_LEASE_MSGID_MAX);
        if (!json_is_string(lid) || json_string_length(lid) == 0)
            return rq_errf(err, len, "acks[%zu].lease_id must be a non-empty string", i);
        snprintf(x->acks[i].msgid, sizeof(x->acks[i].msgid), "%s", json_string_value(m));
        /* too long to be one: the leaser lists it in "failed" (unknown lease) */
        snprintf(x->acks[i].lease_id, sizeof(x->acks[i].lease_id), "%s",
                 json_string_length(lid) <= RQ_LEASE_ID_LEN ? json_string_value(lid) : "-");
    }
    x->job.acks = x->acks;
    x->job.nacks = n;
    return 0;
}

static enum MHD_Result batch_ack(req_ctx_t *c)
{
    enum MHD_Result ret;
    pull_ext_t *x;
    char err[200];
    json_t *b;
    int rc;

    if ((b = rq_api_body_object(c, &ret)) == NULL)
        return ret;
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        json_decref(b);
        return rq_api_reply_503(c, "out of memory");
    }
    x->job.kind = RQ_LJ_ACKS;
    rc = ack_items(b, x, err, sizeof(err));
    json_decref(b);
    if (rc != 0) {
        free(x->acks);
        free(x);
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, err);
    }
    snprintf(x->job.queue, sizeof(x->job.queue), "%s", c->qname);
    return submit(c, x);
}

enum MHD_Result rq_qroute_pull(req_ctx_t *c)
{
    char err[160];

    if (c->route == R_QMESSAGES && strcmp(c->method, MHD_HTTP_METHOD_GET) != 0)
        return rq_api_reply_405(c, "GET, POST");
    if ((c->route == R_QMSG_ACTION || c->route == R_QACKS) &&
        strcmp(c->method, MHD_HTTP_METHOD_POST) != 0)
        return rq_api_reply_405(c, "POST");
    if (c->qname_too_long)
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  "the queue name or message id is too long");
    if (rq_qname_check(c->qname, err, sizeof(err)) != 0)
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, err);
    if (c->route == R_QMESSAGES)
        return pull(c);
    if (c->route == R_QACKS)
        return batch_ack(c);
    if (c->qaction == RQ_QMA_NONE)
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
    return action(c);
}
