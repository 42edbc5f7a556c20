/* sse.h - the Server-Sent Events transport of real-time subscriptions (issue 18).
 *
 * One SSE session is one suspended MHD request (GET /topics/{name}/events,
 * GET /queues/{id}/events) and one hub subscription (hub.h). The session implements the hub's
 * sink: events are copied into a bounded buffer (RT_SEND_BUFFER_BYTES; full: the hub ends
 * the subscription as "slow_consumer"), and MHD's content-reader callback hands them to the
 * socket. When the buffer is empty the callback suspends the connection and returns 0;
 * deliver(), a heartbeat or the end resume it (the suspend and the resume are paired under
 * the session's lock, so a resume is never lost and never targets a running connection).
 *
 * Wire format:
 *   on start   retry: 2000\n: subscribed\n\n
 *   message    id: <event id>\nevent: message\ndata: <json>\n\n
 *   heartbeat  : heartbeat\n\n   every RT_HEARTBEAT_S (one timer thread for all sessions)
 *   end        event: end\ndata: {"reason": "...", "detail": "..."}\n\n, then the stream ends
 * A queue subscription's message is acked (rq_rt_ack) once its last byte was written to the
 * socket (MHD asks for the next chunk once the previous one was sent).
 *
 * Life cycle, driven by api.c (topics.c): rq_sse_conn_new, rq_rt_subscribe with
 * rq_sse_conn_sink(), rq_sse_conn_set_sub, suspend the request; on_ready (hub thread) tells
 * the request to resume; then rq_sse_conn_response() (status 0) is queued, or the error is
 * answered. rq_sse_conn_free() (the request's completion) unsubscribes and frees.
 *
 * Internal to the producer: not a public interface.
 */
#ifndef RQ_RT_SSE_H
#define RQ_RT_SSE_H

#include <microhttpd.h>
#include <stddef.h>
#include <sys/types.h>

#include "config.h"
#include "hub.h"
#include "metrics.h"

typedef struct rq_sse_server rq_sse_server_t;
typedef struct rq_sse_conn rq_sse_conn_t;

/* Starts the heartbeat thread shared by every SSE session. `cfg`, `m` and `hub` must outlive
 * it. NULL on failure. */
rq_sse_server_t *rq_sse_server_new(const rq_config_t *cfg, rq_metrics_t *m, rq_rt_hub_t *hub);

/* Stops the heartbeat thread (joins it). Sessions stay valid; idempotent. */
void rq_sse_server_stop(rq_sse_server_t *s);

/* Stops (if needed) and frees the server. Every session must have been freed. */
void rq_sse_server_free(rq_sse_server_t *s);

/* The sessions not yet freed (their requests not completed): the drain gives their end
 * events a short while to reach the clients. Thread-safe. */
size_t rq_sse_server_sessions(rq_sse_server_t *s);

/* A new session for the request on `conn`, a queue subscription when kind is RQ_RT_QUEUE
 * (acks once written). on_ready(arg, status, err) runs once, on the hub thread, when the hub
 * calls the sink's ready(): the caller resumes its request there. NULL on allocation
 * failure. */
rq_sse_conn_t *rq_sse_conn_new(rq_sse_server_t *s, struct MHD_Connection *conn, rq_rt_kind_t kind,
                               void (*on_ready)(void *arg, unsigned status, const char *err),
                               void *arg);

/* The sink to give rq_rt_subscribe (valid as long as the session). */
const rq_rt_sink_t *rq_sse_conn_sink(rq_sse_conn_t *c);

/* The subscription rq_rt_subscribe returned (the session unsubscribes it when freed). */
void rq_sse_conn_set_sub(rq_sse_conn_t *c, rq_rt_sub_t *sub);

/* The 200 text/event-stream response (Cache-Control: no-cache, X-Accel-Buffering: no) of a
 * ready session: a content-reader callback of unknown size. The caller queues and destroys
 * it. Once queued, the connection must only be suspended or resumed by the session. NULL on
 * allocation failure. on_end(arg) runs once when the end event has been queued (the drain
 * may count the request answered). */
struct MHD_Response *rq_sse_conn_response(rq_sse_conn_t *c, void (*on_end)(void *arg), void *arg);

/* Unsubscribes (if subscribed) and frees the session; the request's completion. NULL is a
 * no-op. Never while MHD may still call the response's callback (after MHD's completion
 * notice only). */
void rq_sse_conn_free(rq_sse_conn_t *c);

/* Testing: what MHD's content reader does (at most max bytes of the buffer into out; -1
 * MHD_CONTENT_READER_END_OF_STREAM once the end event went). With nothing to send it suspends
 * the connection (never with a NULL conn in tests: call it while bytes are buffered). */
ssize_t rq_sse_conn_read(rq_sse_conn_t *c, char *out, size_t max);

/* Of the first `taken` bytes handed to the kernel on the TCP socket fd, how many the peer is
 * known to have received, for a session whose client has closed: taken less what is still in
 * the send queue (SIOCOUTQ), and 0 after a reset (TCP state CLOSE: the kernel dropped the
 * queue, nothing more is known) or when the socket cannot be asked. Errs low: chunk framing
 * and TLS records only lengthen the queue. Exposed for tests. */
uint64_t rq_sse_peer_confirmed(int fd, uint64_t taken);

/* ---- formatting (pure; exposed for tests) ---- */

/* The SSE text of a message event, `id: <id>\nevent: message\ndata: <json>\n\n`, into out
 * (cap bytes, NUL-terminated). Returns its length, or the length it needs (>= cap: nothing
 * usable written), like snprintf. json must hold no '\n' or '\r' (hub.h). */
size_t rq_sse_format_event(char *out, size_t cap, const char *id, const char *json, size_t len);

/* The SSE text of the end event, `event: end\ndata: {"reason":..,"detail":..}\n\n` (JSON
 * escaped), as rq_sse_format_event. */
size_t rq_sse_format_end(char *out, size_t cap, const char *reason, const char *detail);

#endif
