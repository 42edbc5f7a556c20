/* ws.h - the WebSocket transport of real-time subscriptions (issue 18, RFC 6455).
 *
 * One server thread (epoll) serves every upgraded socket. A session is one hub subscription
 * (hub.h) and, once MHD upgraded the request, one socket:
 *   - it implements the hub's sink: each event becomes one text frame
 *     `{"event_id":"<id>",` + json[1..] in a bounded send buffer (RT_SEND_BUFFER_BYTES; full:
 *     deliver() returns -1 and the hub ends the subscription as "slow_consumer");
 *   - ended(reason) sends a close frame (1008 slow_consumer, 1011 broker_lost, 4404
 *     topic_deleted/queue_deleted, 1001 shutdown) and closes the socket once it is written;
 *   - client frames (ws_frame.h rules: masked, sizes up to WS_MAX_FRAME_BYTES, UTF-8):
 *     ping -> pong, close -> close reply then shutdown, text {"ack":"<event_id>"} in
 *     client-ack mode -> rq_rt_ack. In auto-ack mode other text messages are ignored; in
 *     client-ack mode a text message that is not an ack of the form above closes 1008 and
 *     a binary message closes 1003 (both modes);
 *   - auto-ack (queues, default): rq_rt_ack once the message's frame was fully written;
 *   - heartbeat: a ping every RT_HEARTBEAT_S; no pong for 2 x RT_HEARTBEAT_S closes the
 *     socket (1008 "heartbeat timeout"); a close handshake (ours or the client's) that does
 *     not finish within 2 x RT_HEARTBEAT_S (a client that stopped reading) drops the socket;
 *   - when the socket closes for any reason the session unsubscribes (a queue's unacked
 *     messages go back to it), and MHD_upgrade_action(CLOSE) is called on the server thread.
 *
 * Life cycle, driven by api.c (topics.c): rq_ws_handshake() checks the request;
 * rq_ws_conn_new, rq_rt_subscribe with rq_ws_conn_sink(), rq_ws_conn_set_sub, suspend the
 * request; on_ready (hub thread) resumes it; then the request answers
 * rq_ws_conn_response() (status 0: 101, MHD calls the session's upgrade handler, and from
 * then on the session frees itself) or the error, followed by rq_ws_conn_abandon(). A request
 * that ends before its 101 was queued calls rq_ws_conn_abandon() (unsubscribes, frees).
 *
 * Metrics: producer_rt_ws_connections (gauge), producer_rt_ws_frames_received_total,
 * producer_rt_ws_protocol_errors_total{code}.
 *
 * Shutdown order (api.c): rq_rt_hub_stop (sessions get their end: close 1001), then
 * rq_ws_server_stop BEFORE MHD_stop_daemon (MHD must not see an upgraded socket still open,
 * nor the thread call MHD_upgrade_action after), then rq_ws_server_free AFTER
 * MHD_stop_daemon (request completions call rq_ws_conn_abandon), then rq_rt_hub_free.
 *
 * Internal to the producer: not a public interface.
 */
#ifndef RQ_RT_WS_H
#define RQ_RT_WS_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "filter.h"
#include "hub.h"
#include "metrics.h"

typedef struct rq_ws_server rq_ws_server_t; /* one epoll thread for every upgraded socket */
typedef struct rq_ws_conn rq_ws_conn_t;

/* Starts the server thread. `cfg`, `m` and `hub` must outlive it (hub may be NULL in tests:
 * then acks and unsubscribes are skipped). NULL on failure. */
rq_ws_server_t *rq_ws_server_new(const rq_config_t *cfg, rq_metrics_t *m, rq_rt_hub_t *hub);

/* Closes every upgraded socket (close 1001 "shutdown", best effort), unsubscribes them and
 * joins the thread. Sessions not yet upgraded stay valid (abandon them). Idempotent. */
void rq_ws_server_stop(rq_ws_server_t *s);

/* Stops (if needed) and frees the server. Every not-upgraded session must be abandoned. */
void rq_ws_server_free(rq_ws_server_t *s);

/* Handshake check of a request (the caller checks the method is GET; Upgrade: websocket,
 * Connection: contains upgrade, Sec-WebSocket-Version: 13, Sec-WebSocket-Key: base64 of 16 bytes).
 * Returns 0 and the Sec-WebSocket-Accept value in accept (28 characters + NUL), or the HTTP status
 * to answer (400; 426 for another version: answer it with the header Sec-WebSocket-Version: 13) and
 * why in err. */
unsigned rq_ws_handshake(struct MHD_Connection *conn, char accept[29], char *err, size_t errlen);

/* A new session; client_acks: the client acks each queue message ({"ack":"<event_id>"}),
 * else each is acked once written. on_ready(arg, status, err) runs once, on the hub thread,
 * when the hub calls the sink's ready(). NULL on allocation failure. */
rq_ws_conn_t *rq_ws_conn_new(rq_ws_server_t *s, int client_acks,
                             void (*on_ready)(void *arg, unsigned status, const char *err),
                             void *arg);

/* The sink to give rq_rt_subscribe (valid as long as the session). */
const rq_rt_sink_t *rq_ws_conn_sink(rq_ws_conn_t *c);

/* The subscription rq_rt_subscribe returned (the session unsubscribes it). */
void rq_ws_conn_set_sub(rq_ws_conn_t *c, rq_rt_sub_t *sub);

/* The session takes f (the subscription's filter, which the hub borrows until
 * rq_rt_unsubscribe) and rq_filter_free()s it once unsubscribed and freed: an upgraded
 * session outlives its request. f may be NULL. Call before rq_rt_subscribe. */
void rq_ws_conn_own_filter(rq_ws_conn_t *c, rq_filter_t *f);

/* The 101 answer of a ready session: MHD_create_response_for_upgrade with the session's
 * upgrade handler, headers Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Accept.
 * The caller queues and destroys it; once queued, MHD owns the session's fate (the upgrade
 * handler adopts the socket, or rq_ws_conn_abandon must still be called if the request
 * completes without upgrading - see below). NULL on allocation failure. */
struct MHD_Response *rq_ws_conn_response(rq_ws_conn_t *c, const char *accept);

/* The request ended (its completion callback) without the session being upgraded: it
 * unsubscribes and frees the session. After the upgrade handler ran, this only drops the
 * request's reference (the server thread owns the session). NULL is a no-op; call it
 * exactly once per session, from the request's completion. */
void rq_ws_conn_abandon(rq_ws_conn_t *c);

/* Testing: adopt an already-connected socket fd (non-blocking is set here) as if MHD had
 * upgraded it, with no MHD handle (close(fd) at the end instead of MHD_upgrade_action).
 * 0, or -1 (the session is then abandoned by the caller). */
int rq_ws_conn_adopt_fd(rq_ws_conn_t *c, int fd);

/* Testing without a hub (rq_ws_server_new with hub NULL): ack(arg, sub, tag) and
 * unsub(arg, sub) are called where rq_rt_ack / rq_rt_unsubscribe would be (on the server
 * thread, or abandon's). Set before the first session. */
void rq_ws_server_test_hooks(rq_ws_server_t *s,
                             void (*ack)(void *arg, rq_rt_sub_t *sub, uint64_t tag),
                             void (*unsub)(void *arg, rq_rt_sub_t *sub), void *arg);

#endif
