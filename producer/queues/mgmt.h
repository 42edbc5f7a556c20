/* mgmt.h - a minimal client of RabbitMQ's management HTTP API (the rabbitmq_management plugin).
 *
 * Plain HTTP/1.1 over a TCP socket (no TLS, no libcurl): one request per connection
 * ("Connection: close"), Basic authentication with RABBITMQ_USER/RABBITMQ_PASS, a connect and
 * a total deadline, and a cap on the answer's size. Used by the queue service for what AMQP
 * cannot tell: the list of queues and their unacked counts and arguments.
 *
 * RABBITMQ_MANAGEMENT_URL: "http://host[:port][/prefix]" (port 80 when left out); empty:
 * http://RABBITMQ_HOST:15672; "off": no management API (rq_mgmt_new() gives NULL and why).
 * Blocking: call it from a worker thread, never from an HTTP thread.
 */
#ifndef RQ_MGMT_H
#define RQ_MGMT_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"

#define RQ_MGMT_MAX_BYTES (16u << 20) /* largest answer read (then an error) */
#define RQ_MGMT_HOST_MAX 255

typedef struct rq_mgmt rq_mgmt_t;

/* Splits an http:// URL into host, port and path prefix (without a trailing '/', "" for
 * none). Returns 0, or -1 with the reason in err (not http://, no host, bad port). */
int rq_mgmt_url_parse(const char *url, char *host, size_t hostlen, int *port, char *prefix,
                      size_t prefixlen, char *err, size_t errlen);

/* A client for cfg's management API (cfg borrowed: must outlive it; its URL, user and
 * password are copied). NULL with the reason in err when it is turned off ("off") or the URL
 * is invalid (the queue routes answer 503 with that reason). */
rq_mgmt_t *rq_mgmt_new(const RabbitMQConfig *cfg, char *err, size_t errlen);

/* Frees m. NULL is a no-op. */
void rq_mgmt_free(rq_mgmt_t *m);

/* The base URL in use ("http://host:port/prefix"), for messages. */
const char *rq_mgmt_base(const rq_mgmt_t *m);

/* GET <prefix><path> (path starts with '/', already percent-encoded) within timeout_ms in
 * all. Returns 0 with *status the HTTP status and *body (the answer's JSON when it is JSON,
 * else NULL; a new reference); or -1 with the reason in err (unreachable, timeout, answer too
 * large or malformed). Thread-safe (no shared state but m's constants). */
int rq_mgmt_get(const rq_mgmt_t *m, const char *path, int timeout_ms, int *status, json_t **body,
                char *err, size_t errlen);

/* Parses a complete HTTP/1.x answer in buf[0..len) (modified: a chunked body is decoded in
 * place). Returns 0 with *status and the body at buf[*body_off .. *body_off + *body_len), or -1
 * with the reason in err. */
int rq_mgmt_parse_response(char *buf, size_t len, int *status, size_t *body_off, size_t *body_len,
                           char *err, size_t errlen);

/* Writes name percent-encoded for a URL path segment ("/" becomes "%2F") into out. Returns 0,
 * or -1 when it does not fit. */
int rq_mgmt_escape(const char *name, char *out, size_t outlen);

/* The queue service's view of one queue object of GET /api/queues: a new object {"name",
 * "type", "ready", "unacked", "consumers", "arguments"} (numbers the broker has not computed
 * yet are 0), or NULL when q is not an object with a name. */
json_t *rq_mgmt_queue_summary(const json_t *q);

#endif
