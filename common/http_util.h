/* http_util.h - JSON responses and the endpoints both services share (libmicrohttpd 0.9.75).
 *
 * Shared endpoints, served by rq_http_serve_common():
 *   GET /health        200 {"status":"healthy","timestamp"} | 503
 * {"status":"unhealthy","reason","timestamp"} GET /health/live   200 {"status":"alive","timestamp"}
 * while the process runs GET /health/ready  200 {"status":"ready",...} | 503
 * {"status":"not_ready","reason",...} GET /metrics       the registry in Prometheus text format
 * 0.0.4 Other methods on these paths get 405 with an Allow header.
 */
#ifndef RQ_HTTP_UTIL_H
#define RQ_HTTP_UTIL_H

#include <jansson.h>
#include <microhttpd.h>
#include <stddef.h>

#include "metrics.h"

/* Returns 1 when the service is ready (broker connected, topology declared); else 0 with a
 * short reason written into reason (NUL-terminated, at most reasonlen bytes). Thread-safe. */
typedef int (*rq_ready_fn)(void *arg, char *reason, size_t reasonlen);

typedef struct rq_http_common {
    rq_metrics_t *metrics;
    rq_ready_fn ready;
    void *ready_arg;
} rq_http_common_t;

/* Queues a response with `body` serialized compactly as application/json. Steals the
 * reference to body (it is decref'd). Returns the MHD result of MHD_queue_response. */
enum MHD_Result rq_http_reply_json(struct MHD_Connection *conn, unsigned status, json_t *body);

/* Queues {"error": msg} with status. Returns the MHD result. */
enum MHD_Result rq_http_reply_error(struct MHD_Connection *conn, unsigned status, const char *msg);

/* Queues 405 {"error":"method not allowed"} with `Allow: allow`. */
enum MHD_Result rq_http_reply_405(struct MHD_Connection *conn, const char *allow);

/* Queues `buf` (len bytes, taken over and later free()d by MHD) with content_type. Extra
 * header `hname: hvalue` is added when hname is not NULL. */
enum MHD_Result rq_http_reply_buf(struct MHD_Connection *conn, unsigned status,
                                  const char *content_type, char *buf, size_t len,
                                  const char *hname, const char *hvalue);

/* Serves the shared endpoints. Returns 1 and sets *ret when `url` is one of them (the
 * response is queued), 0 when it is not (nothing queued). */
int rq_http_serve_common(const rq_http_common_t *c, struct MHD_Connection *conn, const char *method,
                         const char *url, enum MHD_Result *ret);

#endif
