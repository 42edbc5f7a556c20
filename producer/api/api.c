/* api.c - request routing, validation and suspended waits for the publisher. */
#include "api.h"
#include "api_ctx.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "dlq.h"
#include "http_server.h"
#include "http_util.h"
#include "jbuf.h"
#include "lease.h"
#include "lease_fwd.h"
#include "log.h"
#include "hub.h"
#include "qadmin.h"
#include "sse.h"
#include "ws.h"
#include "ratelimit.h"
#include "request.h"
#include "static.h"
#include "trace.h"
#include "util.h"
#include "wire.h"

/* Freed contexts kept for reuse (rq_api_t.ctx_cache); none under AddressSanitizer, which
 * must see each context's use after its free. */
#if defined(__SANITIZE_ADDRESS__)
#define CTX_CACHE 0
#else
#define CTX_CACHE 1
#endif
#define CTX_CACHE_MAX 256

static const char *const route_label[R_COUNT] = {
    "other",
    "/produce",
    "/batch-produce",
    "/messages/{id}",
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/dlq",
    "/dlq/retry",
    "/queues",
    "/queues/{id}",
    "/queues/{id}/messages",
    "/queues/{id}/messages/{msgId}/{action}",
    "/queues/{id}/dlq",
    "/queues/{id}/messages/retry",
    "/queues/{id}/messages/ack",
    "/topics",
    "/topics/{name}",
    "/topics/{name}/messages",
    "/topics/{name}/events",
    "/topics/{name}/ws",
    "/queues/{id}/events",
    "/queues/{id}/ws",
    "/openapi.json",
    "/docs",
    "/viewer",
};

static int route_public(enum route r)
{
    return r == R_HEALTH || r == R_LIVE || r == R_READY || r == R_METRICS || r == R_OPENAPI ||
           r == R_DOCS || r == R_VIEWER;
}

/* 1 for the subscription routes, which also take ?access_token= (browsers cannot set
 * Authorization on EventSource or WebSocket; RFC 6750 2.3). */
static int route_subscription(enum route r)
{
    return r == R_TEVENTS || r == R_TWS || r == R_QEVENTS || r == R_QWS;
}

/* 1 for the topic routes (c->qname is a topic name). */
static int route_topic(enum route r)
{
    return r == R_TOPICS || r == R_TOPIC || r == R_TMESSAGES || r == R_TEVENTS || r == R_TWS;
}

/* The scope a key needs for each route; public routes need no key at all. The queue routes
 * need a queue action instead (route_qneed). */
static const unsigned route_scope[R_COUNT] = {
    [R_PRODUCE] = RQ_SCOPE_PRODUCE, [R_BATCH] = RQ_SCOPE_BATCH,   [R_MESSAGES] = RQ_SCOPE_MESSAGES,
    [R_DLQ] = RQ_SCOPE_DLQ,         [R_DLQ_RETRY] = RQ_SCOPE_DLQ,
};

/* What a queue route needs of the principal (route_qneed). */
enum {
    QNEED_NONE = -1,
    QNEED_ANY_QUEUE = -2,
    QNEED_ANY_ACTION = -3,
    QNEED_ANY_TOPIC = -4,  /* some topic permission (GET/POST /topics) */
    QNEED_ANY_TACTION = -5 /* any topic action on c->qname (GET /topics/{name}) */
};

/* The queue action c's route needs on c->qname (an rq_qaction_t), QNEED_ANY_QUEUE (some
 * queue permission: GET /queues filters by name, POST /queues checks admin on the body's
 * name itself), QNEED_ANY_ACTION (any action on c->qname: GET /queues/{id}), or QNEED_NONE
 * (not a queue route: route_scope applies). */
static int route_qneed(const req_ctx_t *c)
{
    int get =
        strcmp(c->method, MHD_HTTP_METHOD_GET) == 0 || strcmp(c->method, MHD_HTTP_METHOD_HEAD) == 0;

    switch (c->route) {
    case R_QUEUES:
        return QNEED_ANY_QUEUE;
    case R_QUEUE:
        return get ? QNEED_ANY_ACTION : RQ_QACT_ADMIN;
    case R_QMESSAGES:
        return strcmp(c->method, MHD_HTTP_METHOD_POST) == 0 ? RQ_QACT_PRODUCE : RQ_QACT_CONSUME;
    case R_QMSG_ACTION:
    case R_QACKS:
    case R_QDLQ:
        return RQ_QACT_CONSUME;
    case R_QRETRY:
        return RQ_QACT_ADMIN;
    case R_QEVENTS:
    case R_QWS:
        return RQ_QACT_CONSUME;
    case R_TOPICS:
        return QNEED_ANY_TOPIC;
    case R_TOPIC:
        return get ? QNEED_ANY_TACTION : RQ_QACT_ADMIN;
    case R_TMESSAGES:
        return RQ_QACT_PUBLISH;
    case R_TEVENTS:
    case R_TWS:
        return RQ_QACT_SUBSCRIBE;
    default:
        return QNEED_NONE;
    }
}

static enum route route_of(const char *url)
{
    if (strcmp(url, "/produce") == 0)
        return R_PRODUCE;
    if (strcmp(url, "/batch-produce") == 0)
        return R_BATCH;
    if (strncmp(url, "/messages/", 10) == 0 && url[10] != '\0' && strchr(url + 10, '/') == NULL)
        return R_MESSAGES;
    if (strcmp(url, "/health") == 0)
        return R_HEALTH;
    if (strcmp(url, "/health/live") == 0)
        return R_LIVE;
    if (strcmp(url, "/health/ready") == 0)
        return R_READY;
    if (strcmp(url, "/metrics") == 0)
        return R_METRICS;
    if (strcmp(url, "/dlq") == 0)
        return R_DLQ;
    if (strcmp(url, "/dlq/retry") == 0)
        return R_DLQ_RETRY;
    if (strcmp(url, "/openapi.json") == 0)
        return R_OPENAPI;
    if (strcmp(url, "/docs") == 0 || strncmp(url, "/docs/", 6) == 0)
        return R_DOCS;
    if (strcmp(url, "/viewer") == 0)
        return R_VIEWER;
    return R_OTHER;
}

/* Copies the path segment s[0..n) into dst (cap bytes with its NUL); an empty or longer one
 * sets c->qname_too_long (400 from the route). */
static void copy_segment(req_ctx_t *c, char *dst, size_t cap, const char *s, size_t n)
{
    if (n == 0 || n >= cap) {
        c->qname_too_long = 1;
        n = 0;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* The queue routes: /queues, /queues/{id}, /queues/{id}/messages, /queues/{id}/dlq,
 * /queues/{id}/messages/retry, /queues/{id}/messages/{msgId}/(ack|nack|lease). Fills
 * c->qname, c->msgid and c->qaction. Returns R_OTHER for anything else. */
static enum route queue_route_of(req_ctx_t *c, const char *url)
{
    const char *seg[5];
    size_t len[5], n = 0;
    const char *p;

    if (strcmp(url, "/queues") == 0)
        return R_QUEUES;
    if (strncmp(url, "/queues/", 8) != 0)
        return R_OTHER;
    p = url + 8;
    while (n < 5) {
        const char *slash = strchr(p, '/');
        seg[n] = p;
        len[n] = slash != NULL ? (size_t)(slash - p) : strlen(p);
        n++;
        if (slash == NULL)
            break;
        p = slash + 1;
    }
    if (n == 5 || len[0] == 0)
        return R_OTHER;
    copy_segment(c, c->qname, sizeof(c->qname), seg[0], len[0]);
    if (n == 1)
        return R_QUEUE;
    if (n == 2 && len[1] == 3 && memcmp(seg[1], "dlq", 3) == 0)
        return R_QDLQ;
    if (n == 2 && len[1] == 6 && memcmp(seg[1], "events", 6) == 0)
        return R_QEVENTS;
    if (n == 2 && len[1] == 2 && memcmp(seg[1], "ws", 2) == 0)
        return R_QWS;
    if (len[1] != 8 || memcmp(seg[1], "messages", 8) != 0)
        return R_OTHER;
    if (n == 2)
        return R_QMESSAGES;
    if (n == 3 && len[2] == 5 && memcmp(seg[2], "retry", 5) == 0)
        return R_QRETRY;
    if (n == 3 && len[2] == 3 && memcmp(seg[2], "ack", 3) == 0)
        return R_QACKS;
    if (n != 4)
        return R_OTHER;
    if (len[3] == 3 && memcmp(seg[3], "ack", 3) == 0)
        c->qaction = RQ_QMA_ACK;
    else if (len[3] == 4 && memcmp(seg[3], "nack", 4) == 0)
        c->qaction = RQ_QMA_NACK;
    else if (len[3] == 5 && memcmp(seg[3], "lease", 5) == 0)
        c->qaction = RQ_QMA_LEASE;
    else
        return R_OTHER;
    copy_segment(c, c->msgid, sizeof(c->msgid), seg[2], len[2]);
    return R_QMSG_ACTION;
}

/* The topic routes: /topics, /topics/{name}, /topics/{name}/(messages|events|ws). Fills
 * c->qname with the {name}. Returns R_OTHER for anything else. */
static enum route topic_route_of(req_ctx_t *c, const char *url)
{
    const char *p, *slash;
    size_t n;

    if (strcmp(url, "/topics") == 0)
        return R_TOPICS;
    if (strncmp(url, "/topics/", 8) != 0)
        return R_OTHER;
    p = url + 8;
    slash = strchr(p, '/');
    n = slash != NULL ? (size_t)(slash - p) : strlen(p);
    if (n == 0)
        return R_OTHER;
    copy_segment(c, c->qname, sizeof(c->qname), p, n);
    if (slash == NULL)
        return R_TOPIC;
    if (strcmp(slash, "/messages") == 0)
        return R_TMESSAGES;
    if (strcmp(slash, "/events") == 0)
        return R_TEVENTS;
    if (strcmp(slash, "/ws") == 0)
        return R_TWS;
    return R_OTHER;
}

/* 1 for the requests that carry a body to read: the produce routes and POST on the queue
 * routes that take one. */
static int route_has_body(const req_ctx_t *c)
{
    switch (c->route) {
    case R_PRODUCE:
    case R_BATCH:
    case R_DLQ_RETRY:
        return 1;
    case R_QUEUES:
    case R_QMESSAGES:
    case R_QMSG_ACTION:
    case R_QACKS:
    case R_QRETRY:
    case R_TOPICS:
    case R_TMESSAGES:
        return strcmp(c->method, MHD_HTTP_METHOD_POST) == 0;
    default:
        return 0;
    }
}

static void ctx_free(req_ctx_t *c)
{
    rq_api_t *api;

    if (c == NULL)
        return;
    if (c->ext != NULL && c->ext_free != NULL)
        c->ext_free(c->ext);
    rq_api_keys_release(c);
    for (size_t i = 0; i < c->nrkeys; i++)
        free(c->rkeys[i]);
    free(c->rkeys);
    free(c->item_of);
    rq_principal_clear(&c->principal);
    for (size_t i = 0; c->msgs != NULL && i < c->job.n; i++) {
        free(c->msgs[i].body);
        free(c->msgs[i].reply);
    }
    free(c->msgs);
    rq_request_clear(&c->req);
    free(c->buf);
    json_decref(c->dlq.result);
    pthread_mutex_destroy(&c->lock);
    api = c->api;
    pthread_mutex_lock(&api->ctx_lock);
    if (CTX_CACHE && api->ctx_cached < CTX_CACHE_MAX) {
        c->cache_next = api->ctx_cache;
        api->ctx_cache = c;
        api->ctx_cached++;
        c = NULL;
    }
    pthread_mutex_unlock(&api->ctx_lock);
    free(c);
}

/* A zeroed context: a cached block (ctx_free), or a new one. */
static req_ctx_t *ctx_alloc(rq_api_t *api)
{
    req_ctx_t *c;

    pthread_mutex_lock(&api->ctx_lock);
    if ((c = api->ctx_cache) != NULL) {
        api->ctx_cache = c->cache_next;
        api->ctx_cached--;
    }
    pthread_mutex_unlock(&api->ctx_lock);
    if (c == NULL)
        return calloc(1, sizeof(*c));
    memset(c, 0, sizeof(*c));
    return c;
}

static req_ctx_t *ctx_new(rq_api_t *api, struct MHD_Connection *conn)
{
    req_ctx_t *c = ctx_alloc(api);

    if (c == NULL)
        return NULL;
    pthread_mutex_init(&c->lock, NULL);
    c->api = api;
    c->conn = conn;
    c->start_ns = rq_mono_ns();
    return c;
}

/* MHD_OPTION_URI_LOG_CALLBACK: runs as soon as the request line is read, so that a request
 * whose headers or body then stall is reported to on_completed (with its termination
 * code) even when the access handler never ran. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    return ctx_new(cls, conn);
}

enum MHD_Result rq_api_reply(req_ctx_t *c, unsigned status, json_t *body)
{
    c->status = status;
    return rq_http_reply_json(c->conn, status, body);
}

enum MHD_Result rq_api_reply_error(req_ctx_t *c, unsigned status, const char *msg)
{
    if (status >= 400 && status < 500)
        rq_series_inc(c->api->m_rejected);
    c->status = status;
    return rq_http_reply_error(c->conn, status, msg);
}

/* 503 with Retry-After and the JSON object o (consumed). */
enum MHD_Result rq_api_reply_503_json(req_ctx_t *c, json_t *o)
{
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

    json_decref(o);
    c->status = MHD_HTTP_SERVICE_UNAVAILABLE;
    if (text == NULL)
        return MHD_NO;
    return rq_http_reply_buf(c->conn, c->status, "application/json", text, strlen(text),
                             MHD_HTTP_HEADER_RETRY_AFTER, "1");
}

/* 503 with Retry-After: the broker is unavailable or the producer is overloaded. */
enum MHD_Result rq_api_reply_503(req_ctx_t *c, const char *msg)
{
    return rq_api_reply_503_json(c, json_pack("{s:s}", "error", msg));
}

enum MHD_Result rq_api_reply_405(req_ctx_t *c, const char *allow)
{
    c->status = MHD_HTTP_METHOD_NOT_ALLOWED;
    return rq_http_reply_405(c->conn, allow);
}

json_t *rq_api_body_object(req_ctx_t *c, enum MHD_Result *ret)
{
    json_error_t jerr;
    json_t *root;

    if (c->too_large) {
        rq_series_inc(c->api->m_lim_body);
        *ret = rq_api_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");
        return NULL;
    }
    if (c->len == 0)
        return json_object();
    if (rq_json_too_deep(c->buf, c->len, (size_t)c->api->cfg->max_json_depth)) {
        static const char *const depth[1] = {"json_depth"};
        rq_series_inc(rq_metric_series(c->api->m_limits, 1, depth));
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "JSON nested too deep");
        return NULL;
    }
    root = json_loadb(c->buf, c->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        char msg[220];
        if (root == NULL)
            snprintf(msg, sizeof(msg), "invalid JSON at position %d: %s", jerr.position, jerr.text);
        else
            snprintf(msg, sizeof(msg), "the body must be a JSON object");
        json_decref(root);
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, msg);
        return NULL;
    }
    return root;
}

/* The peer's numeric address, for log lines. */
static void peer_text(struct MHD_Connection *conn, char *buf, size_t len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci != NULL ? ci->client_addr : NULL;
    socklen_t salen = sa == NULL                  ? 0
                      : sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                  : sizeof(struct sockaddr_in);

    if (sa == NULL || getnameinfo(sa, salen, buf, (socklen_t)len, NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(buf, len, "?");
}

/* c->qname when it is a valid queue name, else NULL (never echoed or bucketed then). */
static const char *checked_qname(const req_ctx_t *c)
{
    char why[128];

    if (c->qname_too_long || c->qname[0] == '\0' || rq_qname_check(c->qname, why, sizeof(why)) != 0)
        return NULL;
    return c->qname;
}

/* admit_scope() of a topic route: need is RQ_QACT_PUBLISH, RQ_QACT_SUBSCRIBE, RQ_QACT_ADMIN,
 * QNEED_ANY_TOPIC or QNEED_ANY_TACTION; t the checked topic name (NULL: bad, the route
 * answers 400). admin: covers every topic action. */
static int admit_topic(req_ctx_t *c, int need, const char *t)
{
    const rq_principal_t *p = &c->principal;

    if (need == QNEED_ANY_TOPIC || t == NULL) {
        if (rq_principal_any_topic(p))
            return 1;
        snprintf(c->deny_msg, sizeof(c->deny_msg), "this credential holds no topic permission");
        return 0;
    }
    if (rq_principal_allows_queue(p, RQ_QACT_ADMIN, t))
        return 1;
    if (need == QNEED_ANY_TACTION) {
        if (rq_principal_allows_queue(p, RQ_QACT_PUBLISH, t) ||
            rq_principal_allows_queue(p, RQ_QACT_SUBSCRIBE, t))
            return 1;
        snprintf(c->deny_msg, sizeof(c->deny_msg),
                 "this credential has no permission on topic '%s'", t);
        return 0;
    }
    if (need != RQ_QACT_ADMIN && rq_principal_allows_queue(p, (rq_qaction_t)need, t))
        return 1;
    snprintf(c->deny_msg, sizeof(c->deny_msg), "this credential may not %s topic '%s'",
             need == RQ_QACT_PUBLISH     ? "publish to"
             : need == RQ_QACT_SUBSCRIBE ? "subscribe to"
                                         : "administer",
             t);
    return 0;
}

/* 1 when the principal may use c's route; else 0 with c->deny_msg naming what is missing. */
static int admit_scope(req_ctx_t *c)
{
    const rq_principal_t *p = &c->principal;
    int need = route_qneed(c);
    const char *q = checked_qname(c);

    if (need == QNEED_NONE) {
        if (rq_principal_allows(p, route_scope[c->route]))
            return 1;
        snprintf(c->deny_msg, sizeof(c->deny_msg), "this %s may not use this endpoint",
                 p->jwt ? "token" : "API key");
        return 0;
    }
    if (route_topic(c->route))
        return admit_topic(c, need, q);
    if (need == QNEED_ANY_QUEUE || q == NULL) { /* a bad name: the route answers 400 */
        if (rq_principal_any_queue(p))
            return 1;
        snprintf(c->deny_msg, sizeof(c->deny_msg), "this credential holds no queue permission");
        return 0;
    }
    if (need == QNEED_ANY_ACTION) {
        for (int act = 0; act < RQ_QACT_COUNT; act++) { /* queue actions, not topic ones */
            if ((RQ_QACT_QUEUE_MASK & (1u << act)) &&
                rq_principal_allows_queue(p, (rq_qaction_t)act, q))
                return 1;
        }
        snprintf(c->deny_msg, sizeof(c->deny_msg),
                 "this credential has no permission on queue '%s'", q);
        return 0;
    }
    if (rq_principal_allows_queue(p, (rq_qaction_t)need, q))
        return 1;
    snprintf(c->deny_msg, sizeof(c->deny_msg), "this credential may not %s queue '%s'",
             need == RQ_QACT_PRODUCE   ? "produce to"
             : need == RQ_QACT_CONSUME ? "consume from"
                                       : "administer",
             q);
    return 0;
}

/* The queue whose shared bucket c is charged to (QUEUE_RATE_LIMIT_RPS): the queue of a queue
 * route's messages (not the admin routes), or the default queue for /produce and
 * /batch-produce (its shortcuts, which would otherwise bypass it). NULL: none. Acks, nacks
 * and lease extensions are not charged: they end a delivery its pull already paid for, and
 * refusing one (a bucket emptied by the queue's producers) would only let the lease expire
 * and the message be delivered again; the per-key bucket still bounds them. */
static const char *rate_queue(const req_ctx_t *c)
{
    switch (c->route) {
    case R_PRODUCE:
    case R_BATCH:
        return c->api->cfg->rabbitmq.request_queue;
    case R_QMESSAGES:
    case R_QDLQ:
    case R_QRETRY:
        return checked_qname(c);
    default:
        return NULL;
    }
}

/* The per-key (or per-address) bucket, then the per-queue one. Sets c->deny_status 429. */
static void admit_rate(req_ctx_t *c)
{
    rq_api_t *api = c->api;
    char client[RQ_CLIENT_KEY_MAX];
    const char *q;

    if (api->rl != NULL) {
        if (c->key_id[0] != '\0') {
            /* a JWT subject never shares the bucket of a key with the same id */
            snprintf(client, sizeof(client), "%s:%s", c->principal.jwt ? "j" : "k", c->key_id);
        } else {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
            rq_ratelimit_client_key(ci != NULL ? ci->client_addr : NULL, client, sizeof(client));
        }
        if (rq_ratelimit_take(api->rl, client, rq_mono_ns(), &c->retry_after) != 0) {
            const char *label[1] = {rq_auth_metric_label(api->auth, &c->principal)};
            c->deny_status = MHD_HTTP_TOO_MANY_REQUESTS;
            rq_series_inc(rq_metric_series(api->m_rate_limited, 1, label));
            return;
        }
    }
    if (api->qrl != NULL && (q = rate_queue(c)) != NULL) {
        rq_ratelimit_name_key("q:", q, client, sizeof(client));
        if (rq_ratelimit_take(api->qrl, client, rq_mono_ns(), &c->retry_after) != 0) {
            const char *label[1] = {rq_labelset_pick(api->qlabels, q, "_other")};
            c->deny_status = MHD_HTTP_TOO_MANY_REQUESTS;
            snprintf(c->deny_msg, sizeof(c->deny_msg),
                     "rate limit of queue '%s' exceeded; retry after the time in Retry-After", q);
            rq_series_inc(rq_metric_series(api->m_queue_limited, 1, label));
        }
    }
}

/* Authentication, scope and rate limit, on the first call of every non-public request.
 * Leaves c->deny_status 0 when the request may go on, with c->principal set (an open one
 * when no credentials are configured). */
static void admit(req_ctx_t *c)
{
    rq_api_t *api = c->api;
    char peer[64];

    if (route_public(c->route))
        return;
    if (rq_auth_enabled(api->auth)) {
        const char *h =
            MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
        char bearer[8 + 4096];
        rq_auth_result_t r;
        if (h == NULL && route_subscription(c->route)) {
            /* ?access_token= (RFC 6750 2.3), on the subscription routes only; never logged
             * (the log lines name the route, not the URL) */
            const char *tok =
                MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "access_token");
            if (tok != NULL && tok[0] != '\0' && strlen(tok) < sizeof(bearer) - 8) {
                snprintf(bearer, sizeof(bearer), "Bearer %s", tok);
                h = bearer;
            }
        }
        r = rq_auth_identify(api->auth, h, &c->principal);
        if (r == RQ_AUTH_OK) {
            snprintf(c->key_id, sizeof(c->key_id), "%s", rq_principal_id(&c->principal));
            if (!admit_scope(c))
                r = RQ_AUTH_FORBIDDEN;
        } else if (c->principal.jwt) {
            c->deny_why = c->principal.why;
        }
        if (r != RQ_AUTH_OK) {
            peer_text(c->conn, peer, sizeof(peer));
            c->deny_status = r == RQ_AUTH_FORBIDDEN ? MHD_HTTP_FORBIDDEN : MHD_HTTP_UNAUTHORIZED;
            c->invalid_token = r == RQ_AUTH_INVALID;
            rq_series_inc(api->m_auth[r == RQ_AUTH_MISSING ? 0 : r == RQ_AUTH_INVALID ? 1 : 2]);
            if (r == RQ_AUTH_FORBIDDEN)
                rq_http_server_warn(&api->http, "403 %s %s: %s %s lacks the scope%s%s (from %s)",
                                    c->method, route_label[c->route],
                                    c->principal.jwt ? "token" : "key", c->key_id,
                                    route_qneed(c) != QNEED_NONE ? ": " : "",
                                    route_qneed(c) != QNEED_NONE ? c->deny_msg : "", peer);
            else
                rq_http_server_warn(&api->http, "401 %s %s from %s: %s%s", c->method,
                                    route_label[c->route], peer,
                                    c->principal.jwt ? "JWT refused: " : "",
                                    c->principal.why != NULL ? c->principal.why : "refused");
            return;
        }
        /* a JWT subject is labelled only while the bounded set admits it */
        const char *label[1] = {rq_auth_metric_label(api->auth, &c->principal)};
        rq_series_inc(rq_metric_series(api->m_by_key, 1, label));
    } else {
        rq_principal_open(&c->principal);
    }
    admit_rate(c);
}

/* The 401, 403 or 429 decided by admit(). */
static enum MHD_Result reply_deny(req_ctx_t *c)
{
    const char *msg, *hname = NULL;
    char hvalue[200], text[300];
    json_t *o;
    char *body;

    switch (c->deny_status) {
    case MHD_HTTP_UNAUTHORIZED:
        hname = MHD_HTTP_HEADER_WWW_AUTHENTICATE;
        if (c->deny_why != NULL) {
            /* a JWT that failed a check: RFC 6750 error_description names it (static
             * text, never the token) */
            snprintf(text, sizeof(text), "invalid token: %s", c->deny_why);
            msg = text;
            snprintf(hvalue, sizeof(hvalue),
                     "Bearer realm=\"relayq\", error=\"invalid_token\", error_description=\"%s\"",
                     c->deny_why);
            break;
        }
        msg = c->invalid_token ? "invalid API key"
                               : "an API key is required: send Authorization: Bearer <secret>";
        snprintf(hvalue, sizeof(hvalue), "Bearer realm=\"relayq\"%s",
                 c->invalid_token ? ", error=\"invalid_token\"" : "");
        break;
    case MHD_HTTP_FORBIDDEN:
        msg = c->deny_msg[0] != '\0' ? c->deny_msg : "this API key may not use this endpoint";
        break;
    default:
        msg = c->deny_msg[0] != '\0' ? c->deny_msg
                                     : "rate limit exceeded; retry after the time in Retry-After";
        hname = MHD_HTTP_HEADER_RETRY_AFTER;
        snprintf(hvalue, sizeof(hvalue), "%u", c->retry_after);
        break;
    }
    rq_series_inc(c->api->m_rejected);
    c->status = c->deny_status;
    o = json_pack("{s:s}", "error", msg); /* msg may hold a queue name: escaped */
    body = o != NULL ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (body == NULL)
        return MHD_NO;
    return rq_http_reply_buf(c->conn, c->status, "application/json", body, strlen(body), hname,
                             hname != NULL ? hvalue : NULL);
}

/* The completion handshake, on the thread that finished c's work (publisher or DLQ worker):
 * marks c done and resumes its connection if an HTTP thread suspended it. After the resume,
 * an HTTP thread may answer and free c at once: the caller must touch nothing of c after. */
void rq_api_ctx_complete(req_ctx_t *c)
{
    struct MHD_Connection *conn = c->conn;
    int resume;

    pthread_mutex_lock(&c->lock);
    c->done = 1;
    resume = c->suspended;
    c->suspended = 0;
    pthread_mutex_unlock(&c->lock);
    if (resume)
        MHD_resume_connection(conn);
}

void rq_api_ctx_answered(req_ctx_t *c)
{
    if (atomic_exchange(&c->counted_done, 1) == 0)
        atomic_fetch_sub(&c->api->open, 1);
}

/* On the HTTP thread, once c's work was handed over: suspends the connection unless the work
 * completed already. Returns 1 when suspended (c may be resumed, not freed, from now on), 0
 * when the work is done and the caller answers now. */
int rq_api_ctx_suspend(req_ctx_t *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->done) {
        MHD_suspend_connection(c->conn);
        c->suspended = 1;
        pthread_mutex_unlock(&c->lock);
        return 1;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

/* Runs on the publisher thread when the job completes. */
static void job_done(rq_pub_job_t *job, void *arg)
{
    (void)job;
    /* Every message's outcome goes to the index (and the stream), whatever became of the
     * rest of its job; completes c. */
    rq_api_job_events(arg);
}

/* Adds what is known of each message of a failed job: a single message's "message_id" and
 * "stored" (false or "unknown"); a batch's "stored", "not_stored" and "unknown" id lists, so
 * the client retries only what was not stored. */
static void add_outcomes(const req_ctx_t *c, json_t *o)
{
    const rq_pub_job_t *job = &c->job;
    json_t *lists[3];

    if (!c->req.batch) {
        rq_msg_outcome_t oc = job->msgs[0].outcome;
        json_object_set_new(o, "message_id", json_string(job->msgs[0].message_id));
        json_object_set_new(o, "stored",
                            oc == RQ_MSG_STORED    ? json_true()
                            : oc == RQ_MSG_UNKNOWN ? json_string("unknown")
                                                   : json_false());
        return;
    }
    lists[RQ_MSG_NOT_STORED] = json_array();
    lists[RQ_MSG_STORED] = json_array();
    lists[RQ_MSG_UNKNOWN] = json_array();
    for (size_t i = 0; i < job->n; i++)
        json_array_append_new(lists[job->msgs[i].outcome], json_string(job->msgs[i].message_id));
    json_object_set_new(o, "stored", lists[RQ_MSG_STORED]);
    json_object_set_new(o, "not_stored", lists[RQ_MSG_NOT_STORED]);
    json_object_set_new(o, "unknown", lists[RQ_MSG_UNKNOWN]);
}

/* 1 when jansson would hold s[0..n) as a string (json_stringn() does not return NULL). */
static int jstr_ok(const char *s, size_t n)
{
    return s != NULL && rq_jbuf_utf8_valid(s, n);
}

/* Appends `sep` then the string s[0..n) when jansson would hold it; else nothing (jansson's
 * set or append of a NULL value fails and leaves the member out). Returns 1 when appended. */
static int jstr_member(rq_jbuf_t *b, const char *sep, const char *s, size_t n)
{
    if (!jstr_ok(s, n))
        return 0;
    rq_jbuf_lit(b, sep);
    rq_jbuf_str(b, s, n);
    return 1;
}

/* The answer of a confirmed (or replied) job: 201, or 200 with the replies, written as
 * jansson wrote the same object (common/jbuf.h) without building it. */
static enum MHD_Result reply_success(req_ctx_t *c)
{
    const rq_pub_job_t *job = &c->job;
    rq_jbuf_t b;
    size_t len = 0, k;
    char *text;

    rq_jbuf_init(&b, 128 + job->n * (RQ_UUID_LEN + 4));
    rq_jbuf_lit(&b, "{\"status\":\"success\"");
    if (c->req.batch) {
        rq_jbuf_lit(&b, ",\"messages_produced\":");
        rq_jbuf_int(&b, (long long)job->n);
        rq_jbuf_lit(&b, ",\"message_ids\":[");
        k = 0;
        for (size_t i = 0, j = 0; i < c->req.n; i++) {
            const char *id = c->dup_ids != NULL && c->dup_ids[i] != NULL ? c->dup_ids[i]
                             : j < job->n                                ? job->msgs[j++].message_id
                                                                         : NULL;
            k += jstr_member(&b, k > 0 ? "," : "", id, id != NULL ? strlen(id) : 0);
        }
        rq_jbuf_raw(&b, "]", 1);
        if (c->ndups > 0) {
            rq_jbuf_lit(&b, ",\"duplicates\":[");
            k = 0;
            for (size_t i = 0; i < c->req.n; i++)
                if (c->dup_ids[i] != NULL)
                    k += jstr_member(&b, k > 0 ? "," : "", c->dup_ids[i], strlen(c->dup_ids[i]));
            rq_jbuf_raw(&b, "]", 1);
        }
        if (job->want_reply) {
            /* One per item, as message_ids: null for a duplicate (not published now) and for
             * a reply that is not text (GET /messages/{id} has its bytes). */
            rq_jbuf_lit(&b, ",\"replies\":[");
            for (size_t i = 0, j = 0; i < c->req.n; i++) {
                const rq_pub_msg_t *m = c->dup_ids != NULL && c->dup_ids[i] != NULL ? NULL
                                        : j < job->n ? &job->msgs[j++]
                                                     : NULL;
                if (i > 0)
                    rq_jbuf_raw(&b, ",", 1);
                if (m == NULL || !jstr_member(&b, "", m->reply, m->reply_len))
                    rq_jbuf_lit(&b, "null");
            }
            rq_jbuf_raw(&b, "]", 1);
        }
    } else {
        const rq_pub_msg_t *m = &job->msgs[0];
        jstr_member(&b, ",\"message_id\":", m->message_id,
                    m->message_id != NULL ? strlen(m->message_id) : 0);
        if (job->want_reply)
            jstr_member(&b, ",\"reply\":", m->reply, m->reply_len);
    }
    jstr_member(&b, ",\"timestamp\":", c->ts, strlen(c->ts));
    rq_jbuf_raw(&b, "}", 1);
    text = rq_jbuf_take(&b, &len);
    c->status = job->want_reply ? MHD_HTTP_OK : MHD_HTTP_CREATED;
    if (text == NULL)
        return MHD_NO;
    return rq_http_reply_buf(c->conn, c->status, "application/json", text, len, NULL, NULL);
}

/* The response once the job completed. */
static enum MHD_Result reply_job(req_ctx_t *c)
{
    rq_pub_job_t *job = &c->job;
    json_t *o, *ids;

    switch (job->status) {
    case RQ_JOB_CONFIRMED:
        if (c->wait_mode == RQ_WAIT_ASYNC)
            return rq_api_reply_accepted(c); /* wait=0: stored, the result comes later */
        break;
    case RQ_JOB_REPLIED:
        break;
    case RQ_JOB_REPLY_TIMEOUT:
    case RQ_JOB_REPLY_LOST:
        if (c->wait_mode == RQ_WAIT_ASYNC)
            return rq_api_reply_accepted(c);
        /* Stored, no reply (yet): never "not stored", which would invite a duplicate. */
        o = json_pack("{s:s,s:s}", "error", job->error, "status", "queued");
        if (c->req.batch) {
            ids = json_array();
            /* one per item, in item order: a duplicate's is the first request's id */
            for (size_t i = 0, j = 0; i < c->req.n; i++) {
                const char *id = c->dup_ids != NULL && c->dup_ids[i] != NULL ? c->dup_ids[i]
                                 : j < job->n ? job->msgs[j++].message_id
                                              : NULL;
                json_array_append_new(ids, id != NULL ? json_string(id) : json_null());
            }
            json_object_set_new(o, "message_ids", ids);
        } else {
            json_object_set_new(o, "message_id", json_string(job->msgs[0].message_id));
        }
        return rq_api_reply(c, MHD_HTTP_GATEWAY_TIMEOUT, o);
    case RQ_JOB_INVALID:
        o = json_pack("{s:s}", "error", job->error);
        add_outcomes(c, o);
        rq_series_inc(c->api->m_rejected);
        return rq_api_reply(c, MHD_HTTP_BAD_REQUEST, o);
    case RQ_JOB_NO_QUEUE: {
        char msg[RQ_QNAME_MAX + 32];
        snprintf(msg, sizeof(msg), "queue '%s' does not exist", job->queue ? job->queue : "");
        o = json_pack("{s:s}", "error", msg);
        add_outcomes(c, o);
        rq_series_inc(c->api->m_rejected);
        return rq_api_reply(c, MHD_HTTP_NOT_FOUND, o);
    }
    default:
        o = json_pack("{s:s}", "error", job->error ? job->error : "the broker is unavailable");
        add_outcomes(c, o);
        return rq_api_reply_503_json(c, o);
    }
    return reply_success(c);
}

/* The trace context of c's messages (common/trace.h): a span of the producer in the trace of
 * the request's traceparent header, or in a new trace when it has none or a malformed one;
 * the caller's tracestate is passed on when it can be carried. */
static void trace_context(req_ctx_t *c)
{
    const char *tp = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, RQ_WIRE_HDR_TRACEPARENT);
    const char *ts = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, RQ_WIRE_HDR_TRACESTATE);

    rq_traceparent_child(tp, tp != NULL ? strlen(tp) : 0, c->traceparent);
    c->tracestate[0] = '\0';
    if (ts != NULL && rq_traceparent_valid(tp, tp != NULL ? strlen(tp) : 0) &&
        rq_tracestate_valid(ts, strlen(ts)))
        memcpy(c->tracestate, ts, strlen(ts) + 1);
}

static int is_json_type(const char *ct);

/* The Message-Header-<name> request headers of a raw body, collected for rq_request_raw(). */
#define MSG_HEADER_PREFIX "Message-Header-"
typedef struct raw_headers {
    rq_wire_header_t h[RQ_WIRE_USER_HEADERS_MAX + 1];
    size_t n;
} raw_headers_t;

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value)
{
    raw_headers_t *rh = cls;
    size_t n = strlen(MSG_HEADER_PREFIX);

    (void)kind;
    if (key == NULL || strncasecmp(key, MSG_HEADER_PREFIX, n) != 0)
        return MHD_YES;
    if (rh->n < RQ_WIRE_USER_HEADERS_MAX + 1) {
        rh->h[rh->n].name = (char *)key + n; /* borrowed: rq_request_raw() copies */
        rh->h[rh->n].value = (char *)(value != NULL ? value : "");
        rh->h[rh->n].value_len = strlen(rh->h[rh->n].value);
    }
    rh->n++;
    return MHD_YES;
}

/* A raw body (Content-Type ct, not JSON) into c->req: its bytes are the message, options
 * from the query string (?priority=&ttl_ms=&delay_ms=), the Message-Id header and the
 * Message-Header-<name> headers. Returns 0, or -1 with err. */
static int parse_raw(req_ctx_t *c, const char *ct, rq_request_error_t *err)
{
    struct MHD_Connection *conn = c->conn;
    raw_headers_t *rh = calloc(1, sizeof(*rh));
    rq_raw_opts_t o;
    int rc;

    if (rh == NULL) {
        err->status = 400;
        err->limit = NULL;
        snprintf(err->text, sizeof(err->text), "out of memory");
        return -1;
    }
    memset(&o, 0, sizeof(o));
    o.content_type = ct;
    o.message_id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Message-Id");
    o.priority = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "priority");
    o.ttl_ms = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "ttl_ms");
    o.delay_ms = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "delay_ms");
    MHD_get_connection_values(conn, MHD_HEADER_KIND, collect_header, rh);
    o.headers = rh->h;
    o.nheaders = rh->n;
    if (o.nheaders > RQ_WIRE_USER_HEADERS_MAX + 1)
        o.nheaders = RQ_WIRE_USER_HEADERS_MAX + 1; /* refused as too many */
    rc = rq_request_raw(c->buf, c->len, &o, &c->req, err);
    free(rh);
    return rc;
}

/* POST /queues/{id}/messages: c->qname checked (the default queue by its name too). Returns
 * 0, or 1 with the 400 answer queued in *ret. */
static int check_qname(req_ctx_t *c, enum MHD_Result *ret)
{
    char why[160];

    if (c->qname_too_long) {
        snprintf(why, sizeof(why), "a %s name holds at most %d characters",
                 c->route == R_TMESSAGES ? "topic" : "queue", RQ_QNAME_MAX);
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, why);
        return 1;
    }
    if ((c->route == R_TMESSAGES || strcmp(c->qname, c->api->cfg->rabbitmq.request_queue) != 0) &&
        rq_qname_check(c->qname, why, sizeof(why)) != 0) {
        *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, why);
        return 1;
    }
    return 0;
}

/* The message of item it (whose request was stamped c->ts) into *m. Returns 0 or -1. */
static int item_message(req_ctx_t *c, rq_item_t *it, rq_pub_msg_t *m)
{
    if (it->content_type != NULL || c->route == R_TMESSAGES) {
        /* a raw body: its bytes, its type; a topic message: the payload's bytes as sent (its
         * subscribers get the payload itself, not the consumer's envelope) */
        m->body = it->payload_raw;
        m->body_len = it->payload_raw_len;
        it->payload_raw = NULL; /* now the message's (ctx_free frees it) */
        m->content_type = it->content_type != NULL ? it->content_type : "application/json";
    } else {
        m->body = rq_item_encode(it, c->ts, &m->body_len);
        if (m->body == NULL)
            return -1;
        m->content_type = "application/json";
    }
    m->message_id = it->id;
    m->has_priority = it->priority >= 0;
    m->priority = (uint8_t)(it->priority >= 0 ? it->priority : 0);
    m->ttl_ms = it->ttl_ms;
    m->delay_ms = it->delay_ms;
    m->headers = it->headers;
    m->nheaders = it->nheaders;
    return 0;
}

/* The whole body arrived: validate, hand over, suspend. */
static enum MHD_Result start_produce(req_ctx_t *c)
{
    rq_api_t *api = c->api;
    rq_limits_t lim = {(size_t)api->cfg->max_batch_size, api->cfg->max_processing_time,
                       (size_t)api->cfg->max_json_depth};
    rq_request_error_t err;
    const char *ct = NULL;
    enum MHD_Result ret;
    int rc;

    if ((c->route == R_QMESSAGES || c->route == R_TMESSAGES) && check_qname(c, &ret))
        return ret;
    if (c->too_large) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the request body exceeds %lld bytes",
                 (long long)api->cfg->max_body_bytes);
        rq_series_inc(api->m_lim_body);
        return rq_api_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, msg);
    }
    if (c->route == R_PRODUCE || c->route == R_QMESSAGES)
        ct = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct != NULL && !is_json_type(ct))
        rc = parse_raw(c, ct, &err);
    else
        rc = rq_request_parse_fast(c->buf, c->len,
                                   c->route == R_BATCH ? 1
                                   : c->route == R_QMESSAGES || c->route == R_TMESSAGES
                                       ? RQ_PARSE_AUTO
                                       : 0,
                                   &lim, &c->req, &err);
    if (rc != 0) {
        if (err.limit != NULL)
            rq_series_inc(rq_metric_series(api->m_limits, 1, &err.limit));
        return rq_api_reply_error(c, err.status, err.text);
    }
    if (c->route == R_TMESSAGES) {
        c->state = ST_DONE;
        return rq_troute_publish(c); /* reads c->buf (routing keys), then submits */
    }
    free(c->buf);
    c->buf = NULL;
    if (rq_api_wait_parse(c, &ret) != 0)
        return ret;
    rc = rq_api_keys_prepare(c, &ret);
    if (rc < 0)
        return ret;
    c->state = ST_DONE;
    if (rc > 0)
        return rq_api_keys_start(c);
    return rq_api_submit_produce(c);
}

enum MHD_Result rq_api_submit_produce(req_ctx_t *c)
{
    rq_api_t *api = c->api;
    int64_t now_ns = rq_mono_ns();
    int64_t now_ms = rq_wall_ms();
    size_t n = c->req.n - c->ndups, k = 0;

    c->msgs = calloc(n, sizeof(*c->msgs));
    if (c->msgs == NULL || (c->ndups > 0 && (c->item_of = calloc(n, sizeof(size_t))) == NULL))
        return rq_api_reply_503(c, "out of memory");
    c->job.msgs = c->msgs;
    rq_iso8601(now_ms, c->ts);
    trace_context(c);
    c->job.queue = c->route == R_QMESSAGES ? c->qname : NULL;
    c->job.topic = c->route == R_TMESSAGES ? c->qname : NULL;
    for (size_t i = 0; i < c->req.n; i++) {
        rq_pub_msg_t *m = &c->msgs[k];
        if (c->dup_ids != NULL && c->dup_ids[i] != NULL)
            continue;
        if (c->item_of != NULL)
            c->item_of[k] = i;
        c->job.n = ++k; /* ctx_free frees what the messages so far hold */
        if (item_message(c, &c->req.items[i], m) != 0)
            return rq_api_reply_503(c, "out of memory");
        m->published_ms = now_ms;
        m->traceparent = c->traceparent;
        m->tracestate = c->tracestate[0] ? c->tracestate : NULL;
        m->idem_key = c->req.items[i].idem_key;
        m->routing_key = c->rkeys != NULL && i < c->nrkeys ? c->rkeys[i] : NULL;
        rq_uuid(m->correlation_id); /* the uid, known to the accepted event */
    }
    c->job.want_reply =
        c->wait_mode == RQ_WAIT_SYNC || (c->wait_mode == RQ_WAIT_ASYNC && c->wait_s > 0);
    c->job.publish_deadline_ns = now_ns + (int64_t)api->cfg->publish_timeout_ms * 1000000;
    c->job.reply_deadline_ns =
        now_ns + (c->wait_mode == RQ_WAIT_ASYNC ? (int64_t)c->wait_s * 1000000000
                                                : (int64_t)api->cfg->reply_timeout_ms * 1000000);
    c->job.done = job_done;
    c->job.done_arg = c;
    c->done = 0;
    if (rq_publisher_submit(api->pub, &c->job) != 0)
        return rq_api_reply_503(c, c->job.error);
    /* Only a job the publisher took is known (a 503 here names no message). The job may be
     * done already: c lives until this thread answers, and the index orders events by time. */
    rq_results_accepted(api->results, &c->job, c->job.queue, now_ms);
    c->state = ST_WAITING;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return reply_job(c);
}

/* Runs on the DLQ worker when c's job is over: the handshake of job_done. */
static void dlq_done(rq_dlq_job_t *job, void *arg)
{
    (void)job;
    rq_api_ctx_complete(arg);
}

/* The answer of a finished DLQ job: its JSON with 200, or 503 with the reason. */
static enum MHD_Result reply_dlq(req_ctx_t *c)
{
    json_t *o = c->dlq.result;

    c->dlq.result = NULL;
    if (o == NULL)
        return rq_api_reply_503(c, c->dlq.error[0] ? c->dlq.error : "the DLQ call failed");
    return rq_api_reply(c, MHD_HTTP_OK, o);
}

/* Hands c->dlq (filled in) to the DLQ worker and suspends the connection: the broker calls
 * never run on an HTTP thread, whose other connections would all wait meanwhile. The job gets
 * PUBLISH_TIMEOUT_MS to run (then a partial answer) and gives up when the client closes its
 * connection: MHD does not watch a suspended connection (no completion notice before the
 * resume), so the worker peeks at its socket between broker round trips. */
static enum MHD_Result start_dlq(req_ctx_t *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);

    c->dlq.done = dlq_done;
    c->dlq.done_arg = c;
    c->dlq.budget_ms = (int)c->api->cfg->publish_timeout_ms;
    c->dlq.watch_fd = ci != NULL && ci->connect_fd != MHD_INVALID_SOCKET;
    c->dlq.client_fd = c->dlq.watch_fd ? ci->connect_fd : -1;
    if (rq_dlq_worker_submit(c->api->dlq, &c->dlq) != 0) {
        c->state = ST_DONE;
        return rq_api_reply_503(c, c->dlq.error);
    }
    c->state = ST_DLQ;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return reply_dlq(c);
}

/* A query argument holding an integer 0..max into *out; absent leaves *out. Returns 0, or
 * -1 when present but not such an integer. */
int rq_api_query_size(struct MHD_Connection *conn, const char *name, long long max, size_t *out)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end = NULL;
    long long n;

    if (v == NULL)
        return 0;
    errno = 0;
    n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0 || n < 0 || n > max)
        return -1;
    *out = (size_t)n;
    return 0;
}

_Static_assert(RQ_DLQ_MAX_OFFSET == 100000, "the GET /dlq 400 message says 100000");

static enum MHD_Result serve_get(req_ctx_t *c, const char *url)
{
    enum MHD_Result ret;

    if (rq_http_serve_common(&c->api->common, c->conn, c->method, url, &ret)) {
        c->status = strcmp(url, "/metrics") == 0 || strcmp(url, "/health/live") == 0 ? 200 : 0;
        if (c->status == 0) {
            char reason[8];
            c->status =
                c->api->common.ready(c->api->common.ready_arg, reason, sizeof(reason)) ? 200 : 503;
        }
        return ret;
    }
    if (c->route == R_MESSAGES) {
        if (strcmp(c->method, "GET") != 0 && strcmp(c->method, "HEAD") != 0) {
            c->status = 405;
            return rq_http_reply_405(c->conn, "GET, HEAD");
        }
        return rq_api_serve_message(c, url + 10);
    }
    if (c->route == R_DLQ) {
        /* ?limit=N (0..1000, default 10) &offset=M (0..RQ_DLQ_MAX_OFFSET, default 0): one
         * page, at most RQ_DLQ_PAGE_MAX_BYTES and PUBLISH_TIMEOUT_MS; the answer's
         * next_offset is where the next one starts. */
        if (strcmp(c->method, "GET") != 0) {
            c->status = 405;
            return rq_http_reply_405(c->conn, "GET");
        }
        c->dlq.kind = RQ_DLQ_PEEK;
        c->dlq.limit = 10;
        c->dlq.offset = 0;
        if (rq_api_query_size(c->conn, "limit", RQ_DLQ_MAX_LIMIT, &c->dlq.limit) != 0 ||
            rq_api_query_size(c->conn, "offset", RQ_DLQ_MAX_OFFSET, &c->dlq.offset) != 0)
            return rq_api_reply_error(
                c, MHD_HTTP_BAD_REQUEST,
                "limit must be an integer from 0 to 1000 and offset one from 0 "
                "to 100000");
        return start_dlq(c);
    }
    if (c->route == R_QUEUES || c->route == R_QUEUE || c->route == R_QDLQ || c->route == R_QRETRY)
        return rq_qroute_admin(c);
    if (c->route == R_QMESSAGES || c->route == R_QMSG_ACTION || c->route == R_QACKS)
        return rq_qroute_pull(c);
    if (c->route == R_OPENAPI || c->route == R_DOCS || c->route == R_VIEWER) {
        ret = rq_static_route(c, url);
        if (c->status == 0)
            c->status = 200; /* the static module does not record it */
        return ret;
    }
    if (c->route == R_TMESSAGES) {
        c->status = MHD_HTTP_METHOD_NOT_ALLOWED;
        return rq_http_reply_405(c->conn, "POST");
    }
    if (route_topic(c->route) || c->route == R_QEVENTS || c->route == R_QWS)
        return rq_troute(c);
    return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "no such endpoint");
}

int rq_api_retry_count(req_ctx_t *c, long long *count, enum MHD_Result *ret)
{
    const char *q = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "count");
    char *end = NULL;

    *count = 0;
    if (c->too_large) {
        rq_series_inc(c->api->m_lim_body);
        *ret = rq_api_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");
        return -1;
    }
    if (q != NULL) {
        errno = 0;
        *count = strtoll(q, &end, 10);
        if (*q == '\0' || *end != '\0' || *count < 0 || errno != 0) {
            *ret =
                rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "count must be a non-negative integer");
            return -1;
        }
    } else if (c->len > 0) {
        if (rq_json_too_deep(c->buf, c->len, (size_t)c->api->cfg->max_json_depth)) {
            static const char *const depth[1] = {"json_depth"};
            rq_series_inc(rq_metric_series(c->api->m_limits, 1, depth));
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, "JSON nested too deep");
            return -1;
        }
        json_t *root = json_loadb(c->buf, c->len, JSON_REJECT_DUPLICATES, NULL);
        json_t *v = json_object_get(root, "count");
        if (!json_is_object(root) ||
            (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 0))) {
            json_decref(root);
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      "send {\"count\": N} with N >= 0, or no body to move all");
            return -1;
        }
        *count = v ? json_integer_value(v) : 0;
        json_decref(root);
    }
    return 0;
}

/* POST /dlq/retry: {"count": N} or ?count=N; none or 0 moves every message. */
static enum MHD_Result dlq_retry(req_ctx_t *c)
{
    enum MHD_Result ret = MHD_NO;
    long long count;

    if (rq_api_retry_count(c, &count, &ret) != 0)
        return ret;
    c->dlq.kind = RQ_DLQ_RETRY;
    c->dlq.count = (size_t)count;
    return start_dlq(c);
}

/* 1 for "application/json", optionally followed by spaces and ";parameters". */
static int is_json_type(const char *ct)
{
    if (ct == NULL || strncasecmp(ct, "application/json", 16) != 0)
        return 0;
    ct += 16;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Percent-decodes s in place, except "%00": a NUL would cut the path short for every
 * string comparison, so it stays literal (and matches no route). Returns the new length. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *r = s, *w = s;

    while (*r != '\0') {
        if (r[0] == '%' && isxdigit((unsigned char)r[1]) && isxdigit((unsigned char)r[2])) {
            char hex[3] = {r[1], r[2], '\0'};
            unsigned v = (unsigned)strtoul(hex, NULL, 16);
            if (v != 0) {
                *w++ = (char)v;
                r += 3;
                continue;
            }
        }
        *w++ = *r++;
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* Records an answer decided before the body is read, for reply_early(). */
static void set_early(req_ctx_t *c, unsigned status, const char *msg)
{
    c->early_status = status;
    snprintf(c->early_msg, sizeof(c->early_msg), "%s", msg);
}

/* Sends the answer decided before the body was read: admit()'s 401/403/429, else the one
 * recorded by set_early(). */
static enum MHD_Result reply_early(req_ctx_t *c)
{
    if (c->deny_status != 0)
        return reply_deny(c);
    if (c->early_status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        c->status = c->early_status;
        return rq_http_reply_405(c->conn, "POST");
    }
    return rq_api_reply_error(c, c->early_status, c->early_msg);
}

/* 1 for a Content-Type (present) that is no type to publish raw bytes with: the HTML form
 * types (application/x-www-form-urlencoded, multipart/form-data: what curl -d and browsers
 * send by default, a forgotten header rather than a payload), or no concrete type/subtype
 * (no '/', an empty side, a '*' wildcard). */
static int is_refused_type(const char *ct)
{
    const char *slash, *end;

    if (ct == NULL || ct[0] == '\0')
        return 0;
    if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0 ||
        strncasecmp(ct, "multipart/form-data", 19) == 0)
        return 1;
    slash = strchr(ct, '/');
    end = ct + strcspn(ct, "; \t");
    return slash == NULL || slash == ct || slash + 1 >= end || slash > end ||
           memchr(ct, '*', (size_t)(end - ct)) != NULL;
}

/* 1 for the POST routes that may come without a body. */
static int body_optional(const req_ctx_t *c)
{
    return c->route == R_DLQ_RETRY || c->route == R_QMSG_ACTION || c->route == R_QRETRY;
}

#define NO_BODY_MSG "the request has no body: send JSON with Content-Type: application/json"

/* Checks method and headers of a produce request on its first callback. Returns 0 to go
 * on reading the body, or 1 with the answer recorded (set_early). Without a body (no
 * Content-Length or 0, not chunked) it is 400 whatever the Content-Type (POST /dlq/retry:
 * move everything); a body not declared JSON is 415, decided at the end for a chunked body
 * (c->wrong_type), which is 400 when it turns out empty; a Content-Length over
 * MAX_BODY_BYTES is 413. POST /produce and /queues/{id}/messages with a Content-Type that is
 * not JSON carry a raw body (start_produce publishes its bytes); without a Content-Type 415. */
static int check_produce_headers(req_ctx_t *c)
{
    const char *ct, *cl, *te;
    long long len;
    int chunked;

    if (strcmp(c->method, MHD_HTTP_METHOD_POST) != 0) {
        set_early(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
        return 1;
    }
    ct = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    cl = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    te = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    chunked = te != NULL && strcasecmp(te, "chunked") == 0;
    len = cl != NULL ? strtoll(cl, NULL, 10) : 0;
    if (!chunked && len <= 0) {
        if (body_optional(c))
            return 0; /* no body: POST /dlq/retry moves everything; defaults elsewhere */
        set_early(c, MHD_HTTP_BAD_REQUEST, NO_BODY_MSG);
        return 1;
    }
    if (is_refused_type(ct)) {
        /* curl -d's default type (a forgotten header), or no concrete type */
        set_early(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                  "send application/json, or raw bytes with their own type/subtype (no form)");
        return 1;
    }
    if (ct != NULL && ct[0] != '\0' && (c->route == R_PRODUCE || c->route == R_QMESSAGES)) {
        /* JSON or not: another type is a raw body, published as it is (start_produce) */
    } else if (!is_json_type(ct)) {
        if (chunked) {
            c->wrong_type = 1;
            return 0;
        }
        set_early(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        return 1;
    }
    if (!chunked && len > c->api->cfg->max_body_bytes) {
        char msg[96];
        rq_series_inc(c->api->m_lim_body);
        snprintf(msg, sizeof(msg), "the request body exceeds %lld bytes",
                 (long long)c->api->cfg->max_body_bytes);
        set_early(c, MHD_HTTP_CONTENT_TOO_LARGE, msg);
        return 1;
    }
    return 0;
}

/* ST_NEW, the first callback (headers read): counts the request open, routes and admits it.
 * A GET-like route waits in ST_FIRST; a produce or DLQ retry goes to ST_RECEIVING, or, refused
 * before its body is read, to ST_DONE with the answer queued (the connection lingers). */
static enum MHD_Result on_headers(req_ctx_t *c, const char *url, const char *method)
{
    rq_api_t *api = c->api;
    struct MHD_Connection *conn = c->conn;

    c->state = ST_FIRST;
    atomic_fetch_add(&api->open, 1); /* until on_completed */
    c->route = route_of(url);
    if (c->route == R_OTHER)
        c->route = queue_route_of(c, url);
    if (c->route == R_OTHER)
        c->route = topic_route_of(c, url);
    c->method = method;
    admit(c);
    if (!route_has_body(c))
        return MHD_YES; /* answered on the next call: answering now closes keep-alive */
    if (c->deny_status != 0 || check_produce_headers(c)) {
        /* Refused before the body is read: answered at once, and MHD closes the
         * connection after the answer. With the body unread that close would make the
         * kernel reset the connection before the client reads the answer, so the
         * connection lingers (nginx's lingering close): what the client still sends is
         * read and thrown away, within bounds. Not when there is no body, or the client
         * waits for "100 Continue" before sending it. */
        if (rq_http_drain_wanted(
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH),
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                            MHD_HTTP_HEADER_TRANSFER_ENCODING),
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT)))
            rq_http_server_linger(&api->http, conn);
        c->state = ST_DONE;
        return reply_early(c);
    }
    c->state = ST_RECEIVING;
    return MHD_YES;
}

/* ST_DRAINING: throws the rest of an oversized body away; at its end (or past the drain
 * bound, then MHD closes) goes to ST_DONE with the early answer (413) queued. */
static enum MHD_Result on_draining(req_ctx_t *c, size_t *upload_data_size)
{
    size_t n = *upload_data_size;

    *upload_data_size = 0;
    if (n > 0 && rq_http_drain_more(&c->drain, n, rq_mono_ns()))
        return MHD_YES;
    c->state = ST_DONE;
    return reply_early(c); /* the body's end; or past the bound, then MHD closes */
}

/* ST_FIRST, a route without a body (GET /messages, /health*, /metrics, /dlq, others): a body
 * sent anyway is thrown away within the bound (else 413); then ST_DONE with the refusal or
 * serve_get()'s answer (GET /dlq: ST_DLQ, suspended, instead). */
static enum MHD_Result on_bodyless(req_ctx_t *c, const char *url, size_t *upload_data_size)
{
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0; /* a body on GET is ignored: thrown away, within the bound */
        if (rq_http_drain_more(&c->drain, n, rq_mono_ns()))
            return MHD_YES;
        c->state = ST_DONE;
        set_early(c, MHD_HTTP_CONTENT_TOO_LARGE, "the request body is too large");
        return reply_early(c);
    }
    c->state = ST_DONE;
    if (c->deny_status != 0)
        return reply_deny(c);
    return serve_get(c, url);
}

/* ST_RECEIVING, a piece of the body: appended to c->buf; past MAX_BODY_BYTES the body is
 * dropped and the rest thrown away (ST_DRAINING, then 413). MHD_NO when out of memory. */
static enum MHD_Result on_body_data(req_ctx_t *c, const char *upload_data, size_t n)
{
    rq_api_t *api = c->api;

    if (c->len + n > (size_t)api->cfg->max_body_bytes) {
        /* Over MAX_BODY_BYTES (chunked, or more than its Content-Length said): throw the
         * rest away within the drain bound, then 413. */
        char msg[96];
        c->too_large = 1;
        rq_series_inc(api->m_lim_body);
        snprintf(msg, sizeof(msg), "the request body exceeds %lld bytes",
                 (long long)api->cfg->max_body_bytes);
        set_early(c, MHD_HTTP_CONTENT_TOO_LARGE, msg);
        free(c->buf);
        c->buf = NULL;
        c->len = c->cap = 0;
        c->state = ST_DRAINING;
        if (rq_http_drain_more(&c->drain, n, rq_mono_ns()))
            return MHD_YES;
        c->state = ST_DONE;
        return reply_early(c);
    }
    if (c->len + n > c->cap) {
        size_t ncap = c->cap ? c->cap : 1024;
        while (ncap < c->len + n)
            ncap *= 2;
        char *nb = realloc(c->buf, ncap);
        if (nb == NULL)
            return MHD_NO;
        c->buf = nb;
        c->cap = ncap;
    }
    memcpy(c->buf + c->len, upload_data, n);
    c->len += n;
    return MHD_YES;
}

/* ST_RECEIVING, the whole body read: a chunked body not declared JSON gets 415 (400 when
 * empty, but an empty POST /dlq/retry moves everything); POST /dlq/retry goes to the DLQ
 * worker (ST_DLQ) and a produce to the publisher (ST_WAITING), both suspended, or ST_DONE
 * with the answer queued. */
static enum MHD_Result on_body_end(req_ctx_t *c)
{
    if (c->wrong_type && (c->len > 0 || !body_optional(c))) {
        c->state = ST_DONE;
        if (c->len > 0)
            return rq_api_reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                      "Content-Type must be application/json");
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST, NO_BODY_MSG);
    }
    if (c->route == R_DLQ_RETRY) {
        c->state = ST_DONE;
        return dlq_retry(c);
    }
    if (c->route == R_QUEUES || c->route == R_QRETRY) {
        c->state = ST_DONE; /* or ST_EXT when the module suspends */
        return rq_qroute_admin(c);
    }
    if (c->route == R_QMSG_ACTION || c->route == R_QACKS) {
        c->state = ST_DONE;
        return rq_qroute_pull(c);
    }
    if (c->route == R_TOPICS) {
        c->state = ST_DONE; /* or ST_EXT when the module suspends */
        return rq_troute(c);
    }
    return start_produce(c); /* R_PRODUCE, R_BATCH, POST R_QMESSAGES, POST R_TMESSAGES */
}

/* MHD's access handler: dispatches each call by the request's state. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    rq_api_t *api = cls;
    req_ctx_t *c = *con_cls;

    if (c == NULL) {
        c = ctx_new(api, conn); /* normally made by on_uri already */
        if (c == NULL)
            return MHD_NO;
        *con_cls = c;
    }
    switch (c->state) {
    case ST_NEW:
        return on_headers(c, url, method);
    case ST_DRAINING:
        return on_draining(c, upload_data_size);
    case ST_FIRST:
        return on_bodyless(c, url, upload_data_size);
    case ST_RECEIVING:
        if (*upload_data_size > 0) {
            size_t n = *upload_data_size;
            *upload_data_size = 0;
            return on_body_data(c, upload_data, n);
        }
        return on_body_end(c);
    case ST_DLQ:
        c->state = ST_DONE;
        return reply_dlq(c);
    case ST_WAITING:
        c->state = ST_DONE;
        return reply_job(c);
    case ST_EXT:
        c->state = ST_DONE;
        return c->ext_resume(c);
    default:
        return MHD_NO;
    }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    rq_api_t *api = cls;
    req_ctx_t *c = *con_cls;
    char status[12];
    const char *method;

    if (c == NULL)
        return;
    *con_cls = NULL;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        rq_series_inc(api->m_lim_timeout); /* a stalled client (slowloris) was cut off */
    if (c->state == ST_NEW) {
        /* Refused by MHD before the handler ran (headers too large: counted by its logger)
         * or timed out while sending its headers. */
        ctx_free(c);
        return;
    }
    if (atomic_exchange(&c->counted_done, 1) == 0)
        atomic_fetch_sub(&api->open, 1);
    snprintf(status, sizeof(status), "%u", c->status ? c->status : 499u);
    method = strcmp(c->method, "GET") == 0    ? "GET"
             : strcmp(c->method, "POST") == 0 ? "POST"
             : strcmp(c->method, "HEAD") == 0 ? "HEAD"
                                              : "other";
    const char *labels[3] = {method, route_label[c->route], status};
    rq_series_observe(rq_metric_series(api->m_http, 3, labels),
                      (double)(rq_mono_ns() - c->start_ns) / 1e9);
    if (rq_log_enabled(RQ_LOG_DEBUG))
        rq_debug("%s %s %s key=%s %.1f ms%s", method, route_label[c->route], status,
                 c->key_id[0] ? c->key_id : "-", (double)(rq_mono_ns() - c->start_ns) / 1e6,
                 toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? " (timed out)" : "");
    ctx_free(c);
}

static int ready_cb(void *arg, char *reason, size_t reasonlen)
{
    return rq_publisher_ready(arg, reason, reasonlen);
}

/* Registers the API's metrics in `metrics` and keeps their handles in api. Never fails. */
static void register_metrics(rq_api_t *api, rq_metrics_t *metrics)
{
    static const char *const http_labels[3] = {"method", "path", "status"};
    static const char *const key_label[1] = {"key"}, *const limit_label[1] = {"limit"};
    static const char *const reason_label[1] = {"reason"}, *const queue_label[1] = {"queue"};
    static const char *const reasons[3][1] = {{"missing"}, {"invalid"}, {"scope"}};
    static const char *const body_size[1] = {"body_size"}, *const timeout[1] = {"timeout"};
    rq_metric_t *auth_fail;

    api->m_http =
        rq_metrics_histogram(metrics, "http_request_duration_seconds",
                             "HTTP request duration, by method, path and status.", 3, http_labels,
                             rq_metrics_latency_buckets, rq_metrics_latency_buckets_len);
    api->m_rejected =
        rq_metric_series(rq_metrics_counter(metrics, "producer_requests_rejected_total",
                                            "Requests answered 4xx (nothing published).", 0, NULL),
                         0, NULL);
    api->m_by_key =
        rq_metrics_counter(metrics, "producer_requests_total",
                           "Requests that presented a valid API key or JWT, by key id or JWT "
                           "subject (the first 100 subjects keep their own label, later ones "
                           "count as _jwt_other).",
                           1, key_label);
    api->m_rate_limited = rq_metrics_counter(
        metrics, "producer_rate_limited_total",
        "Requests answered 429 by the rate limit, by API key id or JWT subject (as "
        "producer_requests_total; empty without keys).",
        1, key_label);
    api->m_queue_limited = rq_metrics_counter(
        metrics, "producer_queue_rate_limited_total",
        "Requests answered 429 by the per-queue rate limit, by queue (the first 100 queue "
        "names limited keep their own label; later ones count as _other).",
        1, queue_label);
    api->m_limits = rq_metrics_counter(
        metrics, "producer_limit_rejections_total",
        "Requests or connections refused by an abuse limit: body_size, batch_length, "
        "json_depth, header_size, connections, timeout.",
        1, limit_label);
    auth_fail = rq_metrics_counter(metrics, "producer_auth_failures_total",
                                   "Requests refused by API key checks: missing (no Bearer "
                                   "token), invalid (unknown key), scope (key lacks the "
                                   "endpoint).",
                                   1, reason_label);
    for (int i = 0; i < 3; i++)
        api->m_auth[i] = rq_metric_series(auth_fail, 1, reasons[i]);
    api->m_lim_body = rq_metric_series(api->m_limits, 1, body_size);
    api->m_lim_timeout = rq_metric_series(api->m_limits, 1, timeout);
}

/* Loads the API keys into api->auth and logs who may call the API. Returns 0, or -1 with the
 * reason logged (api->auth NULL). */
static int setup_auth(rq_api_t *api, const rq_config_t *cfg)
{
    char keys[1024];
    rq_auth_error_t aerr;

    rq_auth_jwt_opts_t jwt = {cfg->jwks_file, cfg->jwt_issuer, cfg->jwt_audience,
                              cfg->jwt_scope_claim, cfg->jwt_leeway_s};

    api->auth = rq_auth_new_jwt(cfg->api_keys_file, cfg->api_keys, &jwt, &aerr);
    if (api->auth == NULL) {
        rq_error("API keys: %s", aerr.text);
        return -1;
    }
    if (rq_auth_enabled(api->auth)) {
        rq_auth_describe(api->auth, keys, sizeof(keys));
        rq_info("credentials required on every endpoint but /health*, /metrics, /openapi.json, "
                "/docs and /viewer; keys: %s",
                keys);
    } else if (!rq_http_is_loopback(cfg->producer_bind)) {
        rq_warn("PRODUCER_BIND %s is not a loopback address and no API keys are configured: "
                "anyone who reaches this port can publish; set API_KEYS_FILE or API_KEYS",
                cfg->producer_bind);
    } else {
        rq_info("no API keys configured: the API is open to local clients only (%s)",
                cfg->producer_bind);
    }
    return 0;
}

/* With RATE_LIMIT_RPS > 0, creates api->rl (logged); else leaves it NULL. Needs api->auth.
 * Returns 0, or -1 with the reason logged. */
static int setup_ratelimit(rq_api_t *api, const rq_config_t *cfg)
{
    double burst;

    if (cfg->queue_rate_limit_rps > 0) {
        burst = cfg->queue_rate_limit_burst > 0 ? (double)cfg->queue_rate_limit_burst
                                                : ceil(cfg->queue_rate_limit_rps);
        api->qrl = rq_ratelimit_new(cfg->queue_rate_limit_rps, burst < 1 ? 1 : burst,
                                    (size_t)cfg->rate_limit_max_clients);
        api->qlabels = rq_labelset_new(100);
        if (api->qrl == NULL || api->qlabels == NULL) {
            rq_error("cannot create the per-queue rate limiter");
            return -1;
        }
        rq_info("queue rate limit: %g requests/s per queue, bursts of %g",
                cfg->queue_rate_limit_rps, burst < 1 ? 1 : burst);
    }
    if (cfg->rate_limit_rps <= 0)
        return 0;
    burst = cfg->rate_limit_burst > 0 ? (double)cfg->rate_limit_burst : ceil(cfg->rate_limit_rps);
    api->rl = rq_ratelimit_new(cfg->rate_limit_rps, burst < 1 ? 1 : burst,
                               (size_t)cfg->rate_limit_max_clients);
    if (api->rl == NULL) {
        rq_error("cannot create the rate limiter");
        return -1;
    }
    rq_info("rate limit: %g requests/s per %s, bursts of %g", cfg->rate_limit_rps,
            rq_auth_enabled(api->auth) ? "API key" : "client address", burst < 1 ? 1 : burst);
    return 0;
}

/* Resolves PRODUCER_BIND:PRODUCER_PORT (numeric only) into *ai, a new list for the caller to
 * freeaddrinfo(). Returns 0, or -1 with the reason logged and *ai NULL. */
static int listen_address(const rq_config_t *cfg, struct addrinfo **ai)
{
    struct addrinfo hints;
    char port[16];

    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_PASSIVE;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", cfg->producer_port);
    if (getaddrinfo(cfg->producer_bind, port, &hints, ai) != 0 || *ai == NULL) {
        rq_error("PRODUCER_BIND %s is not a numeric IP address", cfg->producer_bind);
        *ai = NULL; /* nothing to free */
        return -1;
    }
    return 0;
}

/* Starts the MHD daemon (api->daemon) listening on ai's first address, with the options of
 * api->http (prepared). Returns 0, or -1 with the reason logged (api->daemon NULL). */
static int start_daemon(rq_api_t *api, const struct addrinfo *ai)
{
    const rq_config_t *cfg = api->cfg;
    struct sockaddr_storage ss;
    unsigned flags;

    memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    /* epoll, not poll(): poll() would cost every request a pass over all of a thread's
     * connections, so one client holding thousands of idle ones (HTTP_MAX_CONNECTIONS 8192)
     * slows everyone: measured (issue 20 review) with 8000 idle connections, 326 req/s and
     * p50 24.5 ms with poll() against 6347 req/s and 0.63 ms with epoll. poll() saved about
     * 5 us per request at 64 connections (no epoll_ctl per suspend/resume): not worth it. */
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
            MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG | rq_http_server_flags(&api->http);
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Logger, timeout, connection caps, header memory and HTTPS come from the array. */
    api->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->producer_port, NULL, NULL, on_request, api, MHD_OPTION_ARRAY,
        rq_http_server_options(&api->http), MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)cfg->http_threads, MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, api, MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
        MHD_OPTION_END);
    if (api->daemon == NULL) {
        rq_error("cannot listen on %s:%d (port in use, or a bad HTTPS certificate or key?)",
                 cfg->producer_bind, cfg->producer_port);
        return -1;
    }
    return 0;
}

rq_api_t *rq_api_new(const rq_config_t *cfg, rq_metrics_t *metrics, rq_publisher_t *pub,
                     struct rq_results *results)
{
    rq_api_t *api = calloc(1, sizeof(*api));
    struct addrinfo *ai = NULL;
    char err[512];

    if (api == NULL)
        return NULL;
    atomic_init(&api->open, 0);
    pthread_mutex_init(&api->ctx_lock, NULL);
    api->cfg = cfg;
    api->pub = pub;
    api->results = results;
    api->metrics = metrics;
    api->common.metrics = metrics;
    api->common.ready = ready_cb;
    api->common.ready_arg = pub;
    register_metrics(api, metrics);
    if (setup_auth(api, cfg) != 0 || setup_ratelimit(api, cfg) != 0)
        goto err;
    api->qadmin = rq_qadmin_new(cfg);
    if (api->qadmin == NULL) {
        rq_error("cannot start the queue admin thread");
        goto err;
    }
    api->dlq = rq_dlq_worker_new(&cfg->rabbitmq);
    if (api->dlq == NULL) {
        rq_error("cannot start the DLQ worker thread");
        goto err;
    }
    api->leaser = rq_leaser_new(cfg, metrics, NULL);
    if (api->leaser == NULL) {
        rq_error("cannot start the leaser thread (pull consumption)");
        goto err;
    }
    api->lease_fwd = rq_lease_fwd_new(cfg, api->leaser, metrics);
    if (api->lease_fwd == NULL) {
        rq_error("cannot start the lease forwarder thread");
        goto err;
    }
    api->hub = rq_rt_hub_new(cfg, metrics);
    if (api->hub == NULL) {
        rq_error("cannot start the real-time hub thread");
        goto err;
    }
    api->sse = rq_sse_server_new(cfg, metrics, api->hub);
    api->ws = rq_ws_server_new(cfg, metrics, api->hub);
    if (api->sse == NULL || api->ws == NULL) {
        rq_error("cannot start the SSE or WebSocket server thread");
        goto err;
    }
    if (rq_http_server_prepare(&api->http, cfg, api->m_limits, err, sizeof(err)) != 0) {
        rq_error("%s", err);
        goto err;
    }
    if (listen_address(cfg, &ai) != 0 || start_daemon(api, ai) != 0)
        goto err;
    freeaddrinfo(ai);
    return api;

err:
    if (ai != NULL)
        freeaddrinfo(ai);
    rq_api_free(api);
    return NULL;
}

const char *rq_api_scheme(const rq_api_t *api)
{
    return rq_http_server_scheme(&api->http);
}

int rq_api_reload_keys(rq_api_t *api)
{
    rq_auth_error_t err;
    char keys[1024];
    int n = rq_auth_reload(api->auth, &err);

    if (n < 0) {
        rq_error("API keys not reloaded (the current keys stay): %s", err.text);
        return -1;
    }
    rq_auth_describe(api->auth, keys, sizeof(keys));
    rq_info("API keys reloaded: %d keys: %s", n, keys); /* and the JWKS, when configured */
    return n;
}

void rq_api_quiesce(rq_api_t *api)
{
    if (api != NULL && api->daemon != NULL)
        MHD_quiesce_daemon(api->daemon);
}

/* How long the drain lets ended SSE streams flush their end event (within its timeout). */
#define RQ_API_STREAM_FLUSH_MS 500

int rq_api_drain(rq_api_t *api, int timeout_ms)
{
    int64_t deadline, flush_deadline;
    int open;

    if (api == NULL)
        return 0;
    /* Its jobs end (cancelled) and their connections are resumed with their answers. */
    rq_dlq_worker_stop(api->dlq);
    rq_qadmin_stop(api->qadmin);
    /* The leaser first: the requests it serves for other replicas end in the forwarder's
     * outbox, which the forwarder sends before it stops (forwards in flight: 503). */
    rq_leaser_stop(api->leaser); /* long-polls answered; leases given back */
    rq_lease_fwd_stop(api->lease_fwd);
    /* Every subscription ends ("shutdown"): SSE clients get their end event (the request
     * counts as answered once it is queued), WebSocket clients a 1001 close. */
    rq_rt_hub_stop(api->hub);
    rq_ws_server_stop(api->ws);
    rq_sse_server_stop(api->sse);
    deadline = rq_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    /* A resumed connection is answered by an HTTP thread on its next turn: until then
     * MHD_stop_daemon() would close it unanswered. */
    while ((open = atomic_load(&api->open)) > 0 && rq_mono_ms() < deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    if (open > 0)
        rq_warn("%d request(s) still open after %d ms: cut off", open, timeout_ms);
    /* SSE streams counted answered once their end event was queued: a short while for it to
     * reach the clients that read (a client that does not is cut off) */
    flush_deadline = rq_mono_ms() + RQ_API_STREAM_FLUSH_MS;
    if (flush_deadline > deadline)
        flush_deadline = deadline;
    while (rq_sse_server_sessions(api->sse) > 0 && rq_mono_ms() < flush_deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    return open;
}

void rq_api_free(rq_api_t *api)
{
    if (api == NULL)
        return;
    /* First: its jobs' connections are resumed; MHD must not stop with suspended ones. The
     * HTTP threads may still submit (keep-alive connections) until MHD_stop_daemon(): those
     * get 503 at once, and the worker is freed only after. */
    rq_dlq_worker_stop(api->dlq);
    rq_qadmin_stop(api->qadmin);
    rq_leaser_stop(api->leaser); /* before the forwarder: see rq_api_drain() */
    rq_lease_fwd_stop(api->lease_fwd);
    rq_rt_hub_stop(api->hub); /* SSE sessions end: none stays suspended */
    rq_ws_server_stop(api->ws);
    rq_sse_server_stop(api->sse);
    if (api->daemon != NULL)
        MHD_stop_daemon(api->daemon); /* SSE sessions freed (unsubscribed) here */
    rq_ws_server_free(api->ws);
    rq_sse_server_free(api->sse);
    rq_rt_hub_free(api->hub);
    rq_dlq_worker_free(api->dlq);
    rq_qadmin_free(api->qadmin);
    rq_lease_fwd_free(api->lease_fwd); /* after the leaser stopped */
    rq_leaser_free(api->leaser);
    rq_http_server_clear(&api->http);
    rq_ratelimit_free(api->rl);
    rq_ratelimit_free(api->qrl);
    rq_labelset_free(api->qlabels);
    rq_auth_free(api->auth);
    while (api->ctx_cache != NULL) {
        req_ctx_t *c = api->ctx_cache;
        api->ctx_cache = c->cache_next;
        free(c);
    }
    pthread_mutex_destroy(&api->ctx_lock);
    free(api);
}
