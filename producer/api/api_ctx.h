/* api_ctx.h - the producer API's request context, shared by api.c and the route modules.
 *
 * api.c owns the MHD callbacks and the request life cycle (admission, body reading, drain,
 * metrics); a route module (queues_admin.c, queues_pull.c) answers the routes it owns from
 * the context once the request is admitted and its body (if any) read. A route that hands
 * work to another thread sets c->ext (its state, freed by c->ext_free with the context) and
 * c->ext_resume (called on an HTTP thread, state ST_EXT, to answer once resumed), then
 * calls rq_api_ctx_suspend(); the other thread calls rq_api_ctx_complete() when done.
 *
 * Internal to the producer's API: not a public interface.
 */
#ifndef RQ_API_CTX_H
#define RQ_API_CTX_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "api.h"
#include "auth.h"
#include "dlq.h"
#include "http_server.h"
#include "http_util.h"
#include "qname.h"
#include "ratelimit.h"
#include "request.h"
#include "trace.h"
#include "util.h"

enum route {
    R_OTHER = 0,
    R_PRODUCE,
    R_BATCH,
    R_MESSAGES,
    R_HEALTH,
    R_LIVE,
    R_READY,
    R_METRICS,
    R_DLQ,
    R_DLQ_RETRY,
    R_QUEUES,      /* /queues: GET list, POST create */
    R_QUEUE,       /* /queues/{id}: GET, DELETE */
    R_QMESSAGES,   /* /queues/{id}/messages: POST enqueue, GET pull */
    R_QMSG_ACTION, /* /queues/{id}/messages/{msgId}/(ack|nack|lease): POST */
    R_QDLQ,        /* /queues/{id}/dlq: GET */
    R_QRETRY,      /* /queues/{id}/messages/retry: POST */
    R_QACKS,       /* /queues/{id}/messages/ack: POST, many acks at once */
    /* real-time delivery (issue 18): c->qname holds the {name} or {id} */
    R_TOPICS,    /* /topics: GET list, POST create */
    R_TOPIC,     /* /topics/{name}: GET, DELETE */
    R_TMESSAGES, /* /topics/{name}/messages: POST publish */
    R_TEVENTS,   /* /topics/{name}/events: GET, SSE */
    R_TWS,       /* /topics/{name}/ws: GET, WebSocket upgrade */
    R_QEVENTS,   /* /queues/{id}/events: GET, SSE */
    R_QWS,       /* /queues/{id}/ws: GET, WebSocket upgrade */
    R_OPENAPI,   /* /openapi.json (public, static.h) */
    R_DOCS,      /* /docs, /docs/<asset> (public) */
    R_VIEWER,    /* /viewer (public) */
    R_COUNT
};

/* ST_NEW: made by the URI log callback, before the first access-handler call.
 * ST_DRAINING: the body passed MAX_BODY_BYTES while being read; the rest is read and thrown
 * away (bounded) before the 413, so that the client can read it. ST_DLQ: suspended until the
 * DLQ worker is done. ST_EXT: suspended by a route module, answered by c->ext_resume. */
enum { ST_NEW = 0, ST_FIRST, ST_RECEIVING, ST_WAITING, ST_DONE, ST_DRAINING, ST_DLQ, ST_EXT };

/* The message actions of R_QMSG_ACTION. */
typedef enum { RQ_QMA_NONE = 0, RQ_QMA_ACK, RQ_QMA_NACK, RQ_QMA_LEASE } rq_qmsg_action_t;

#define RQ_API_MSGID_MAX 255 /* longest {msgId} in a queue route */

/* How a produce waits for its reply (issue 17): not at all (201 once stored), wait=true
 * (REPLY_TIMEOUT_MS, then 504), or ?wait=N / Prefer: respond-async, wait=N (the reply within
 * N seconds, else 202 with Location: /messages/{id}). */
enum { RQ_WAIT_NONE = 0, RQ_WAIT_SYNC, RQ_WAIT_ASYNC };
#define RQ_API_WAIT_MAX_S 3600

struct rq_api {
    const rq_config_t *cfg;
    rq_publisher_t *pub;
    struct rq_results *results; /* the message index and the status stream (results.h) */
    rq_metrics_t *metrics;
    struct MHD_Daemon *daemon;
    rq_http_common_t common;
    rq_metric_t *m_http;
    rq_series_t *m_rejected;
    /* security (issue 6) */
    rq_auth_t *auth;    /* never NULL; disabled without keys */
    rq_ratelimit_t *rl; /* NULL when RATE_LIMIT_RPS is 0 */
    rq_http_server_t http;
    rq_metric_t *m_by_key;       /* producer_requests_total{key} */
    rq_metric_t *m_rate_limited; /* producer_rate_limited_total{key} */
    rq_metric_t *m_limits;       /* producer_limit_rejections_total{limit} */
    rq_series_t *m_auth[3];      /* producer_auth_failures_total{reason}: missing, invalid, scope */
    rq_series_t *m_lim_body, *m_lim_timeout;
    rq_ratelimit_t *qrl;          /* per-queue buckets; NULL when QUEUE_RATE_LIMIT_RPS is 0 */
    rq_labelset_t *qlabels;       /* queue label values of m_queue_limited (bounded) */
    rq_metric_t *m_queue_limited; /* producer_queue_rate_limited_total{queue} */
    rq_dlq_worker_t *dlq;         /* runs GET /dlq and POST /dlq/retry off the HTTP threads */
    atomic_int open;              /* requests past their headers and not yet completed (drain) */
    /* req_ctx_t blocks freed, kept for the next requests (at most CTX_CACHE_MAX): a context
     * is 2.4 KB, beyond malloc's per-thread cache, and one came and went per request */
    pthread_mutex_t ctx_lock;
    struct req_ctx *ctx_cache; /* linked through cache_next */
    size_t ctx_cached;
    /* the queue service (issue 16) */
    struct rq_qadmin *qadmin;       /* queue declare/inspect/delete worker */
    struct rq_leaser *leaser;       /* pull consumption with leases */
    struct rq_lease_fwd *lease_fwd; /* lease operations for other replicas, over the broker */
    /* real-time delivery (issue 18) */
    struct rq_rt_hub *hub;     /* topics and subscriptions (producer/rt/hub.h) */
    struct rq_ws_server *ws;   /* upgraded WebSocket sessions (producer/rt/ws.h) */
    struct rq_sse_server *sse; /* SSE sessions' heartbeats (producer/rt/sse.h) */
};

/* Per-request state, from the first callback to MHD's completion notice. */
typedef struct req_ctx {
    rq_api_t *api;
    struct MHD_Connection *conn;
    int64_t start_ns;
    enum route route;
    const char *method;
    int state;
    unsigned status; /* the status sent, for the metric */
    /* body */
    char *buf;
    size_t len, cap;
    int too_large;
    /* the job */
    rq_request_t req;
    rq_pub_job_t job;
    rq_pub_msg_t *msgs;
    char ts[RQ_ISO8601_LEN + 1];
    pthread_mutex_t lock; /* done vs suspended, between an HTTP and the publisher thread */
    int done, suspended;
    /* admission: the key that authenticated the request, or why it is refused */
    char key_id[RQ_KEY_ID_MAX + 1];
    unsigned deny_status;     /* 401, 403 or 429; 0: admitted */
    unsigned retry_after;     /* 429: seconds */
    int invalid_token;        /* 401 for a token that matches no key (not a missing one) */
    rq_principal_t principal; /* who the request is (rq_principal_open without auth); handlers
                                 call rq_principal_allows_queue(&c->principal, ...); cleared
                                 in ctx_free */
    char deny_msg[200];       /* the 401/403/429 text when admit() names a reason ("" none) */
    const char *deny_why;     /* 401 for a JWT: the failed check (static), else NULL */
    /* an answer decided before the body was read or while it was (issue 11: 14, 15) */
    unsigned early_status; /* 400, 405, 413, 415; 0: none (deny_status may be set instead) */
    char early_msg[96];
    int wrong_type; /* a chunked body not declared JSON: 415, or 400 when it is empty */
    rq_http_drain_t drain;
    rq_dlq_job_t dlq; /* GET /dlq, POST /dlq/retry */
    /* W3C trace context of the request's messages: the producer's span in the caller's
     * trace (or a new one), and the caller's tracestate ("" when none) */
    char traceparent[RQ_TRACEPARENT_LEN + 1];
    char tracestate[RQ_TRACESTATE_MAX + 1];
    /* queue routes: the {id} and {msgId} of the URL, as sent (percent-decoded; not yet
     * checked with rq_qname_check: a route answers 400 for a bad name) */
    char qname[RQ_QNAME_MAX + 1];
    char msgid[RQ_API_MSGID_MAX + 1];
    rq_qmsg_action_t qaction;
    int qname_too_long; /* the {id} or {msgId} was longer than the buffers: 400 */
    /* results (issue 17): the wait mode, and idempotency keys */
    int wait_mode;        /* RQ_WAIT_* */
    long long wait_s;     /* RQ_WAIT_ASYNC: seconds */
    int prefer_async;     /* asked with a Prefer header: Preference-Applied on the 202 */
    char **dup_ids;       /* per item: the message id its key was first produced as (a
                             duplicate: not published), else NULL; NULL when none */
    size_t ndups;         /* non-NULL dup_ids */
    const char **claimed; /* keys claimed on this replica (borrowed from the items) */
    size_t nclaimed;
    size_t *item_of; /* with dup_ids: the item of each job message, else NULL */
    /* a route module's suspended work (see the header comment) */
    void *ext;
    void (*ext_free)(void *ext);
    enum MHD_Result (*ext_resume)(struct req_ctx *c);
    /* topics (issue 18): each message's routing key (heap, owned; one per item) */
    char **rkeys;
    size_t nrkeys;
    /* a streaming answer (SSE, WebSocket): counted done for rq_api_drain once its end was
     * queued (rq_api_ctx_answered), not at MHD's completion notice */
    atomic_int counted_done;
    struct req_ctx *cache_next; /* in rq_api_t.ctx_cache, once freed */
} req_ctx_t;

/* Sends `body` (consumed) as JSON with `status`; records the status for the metric. */
enum MHD_Result rq_api_reply(req_ctx_t *c, unsigned status, json_t *body);

/* Sends {"error": msg} with `status` (4xx counted as rejected). */
enum MHD_Result rq_api_reply_error(req_ctx_t *c, unsigned status, const char *msg);

/* 503 with Retry-After: 1 and the JSON object o (consumed). */
enum MHD_Result rq_api_reply_503_json(req_ctx_t *c, json_t *o);

/* 503 with Retry-After: 1 and {"error": msg}. */
enum MHD_Result rq_api_reply_503(req_ctx_t *c, const char *msg);

/* 405 with Allow: `allow` and a JSON error. */
enum MHD_Result rq_api_reply_405(req_ctx_t *c, const char *allow);

/* The completion handshake, on the thread that finished c's work: marks c done and resumes
 * its connection if an HTTP thread suspended it. The caller must touch nothing of c after. */
void rq_api_ctx_complete(req_ctx_t *c);

/* On the HTTP thread, once c's work was handed over: suspends the connection unless the work
 * completed already. Returns 1 when suspended, 0 when the work is done (answer now). */
int rq_api_ctx_suspend(req_ctx_t *c);

/* A query argument holding an integer 0..max into *out; absent leaves *out. Returns 0, or
 * -1 when present but not such an integer. */
int rq_api_query_size(struct MHD_Connection *conn, const char *name, long long max, size_t *out);

/* The request body parsed as a JSON object (NULL body or empty: an empty object), within
 * MAX_JSON_DEPTH. Returns a new reference, or NULL after answering 400 (or 413 for a body
 * over MAX_BODY_BYTES) itself: the caller returns *ret then. */
json_t *rq_api_body_object(req_ctx_t *c, enum MHD_Result *ret);

/* The count of a DLQ retry (POST /dlq/retry, POST /queues/{id}/messages/retry): ?count=N, or
 * {"count": N}, or no body (0: every message). Returns 0 with *count, or -1 after answering
 * 413/400 itself (the caller returns *ret). */
int rq_api_retry_count(req_ctx_t *c, long long *count, enum MHD_Result *ret);

/* Builds the job of c's items (those that are not duplicates), hands it to the publisher
 * and suspends; or answers (503) when that fails. In api.c. */
enum MHD_Result rq_api_submit_produce(req_ctx_t *c);

/* A streaming answer's end is queued (an SSE end event, a WebSocket upgrade): the request
 * stops counting as open for rq_api_drain (once; on_completed then does not count it).
 * Thread-safe. */
void rq_api_ctx_answered(req_ctx_t *c);

/* ---- producer/api/messages.c: results that outlive a request (issue 17) ---- */

/* The wait mode of a produce from ?wait= (true, false, or seconds) or the Prefer header, over
 * the body's "wait". Returns 0, or -1 after answering 400 itself (the caller returns *ret). */
int rq_api_wait_parse(req_ctx_t *c, enum MHD_Result *ret);

/* The Idempotency-Key header into a single item (400 on a batch, a bad key, or a key that
 * differs from the body's); two items with one key are 400. Returns 1 when some item has a
 * key, 0 when none, -1 after answering itself. */
int rq_api_keys_prepare(req_ctx_t *c, enum MHD_Result *ret);

/* A keyed produce: reads the stream up to now when a key is not in the index (a barrier, at
 * most 2 s; suspended meanwhile), claims the keys (409 when another request of this replica
 * holds one), answers 200 "duplicate" when every message is one, else submits the others. */
enum MHD_Result rq_api_keys_start(req_ctx_t *c);

/* Releases c's claims and duplicate ids (ctx_free). */
void rq_api_keys_release(req_ctx_t *c);

/* The job's events, once it is done (job_done, publisher thread); completes c, at once or,
 * for a keyed message, once the stream confirmed its confirmed event (at most 2 s). */
void rq_api_job_events(req_ctx_t *c);

/* 202 Accepted with Location: /messages/{id} (a batch: "locations") and the status so far. */
enum MHD_Result rq_api_reply_accepted(req_ctx_t *c);

/* GET /messages/{id}[?wait=N]: the timeline; with wait, once the status is final or after N
 * seconds (suspended meanwhile). 404 for an id the index does not hold. */
enum MHD_Result rq_api_serve_message(req_ctx_t *c, const char *id);

/* ---- route modules (each answers every method of its routes; 405 for others) ---- */

/* producer/api/queues_admin.c: R_QUEUES, R_QUEUE, R_QDLQ, R_QRETRY. */
enum MHD_Result rq_qroute_admin(req_ctx_t *c);

/* producer/api/queues_pull.c: GET on R_QMESSAGES, R_QMSG_ACTION and R_QACKS. */
enum MHD_Result rq_qroute_pull(req_ctx_t *c);

/* producer/api/topics.c (issue 18): R_TOPICS, R_TOPIC and the subscription routes R_TEVENTS,
 * R_TWS, R_QEVENTS, R_QWS (GET; 405 for other methods). */
enum MHD_Result rq_troute(req_ctx_t *c);

/* producer/api/topics.c: POST /topics/{name}/messages once its body is parsed into c->req:
 * checks what topics refuse (delay_ms, wait, idempotency keys: 400), fills c->rkeys from
 * the body (routing_key required per message: 400), answers 404 for an unknown topic (asks
 * the hub, suspended meanwhile), then submits the produce (rq_api_submit_produce). */
enum MHD_Result rq_troute_publish(req_ctx_t *c);

#endif
