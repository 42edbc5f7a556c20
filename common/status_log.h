/* status_log.h - the status stream: a RabbitMQ stream that both services append message
 * lifecycle events to, and that every producer replica reads back.
 *
 * One thread per log owns its own AMQP connection (never the service's data connection, so an
 * outage or a slow stream never holds up a publish or a delivery). It:
 *   - declares the stream (durable, x-queue-type "stream", x-max-age "<max_age_s>s",
 *     x-max-length-bytes max_bytes, x-stream-max-segment-size-bytes
 *     rq_status_log_segment_bytes(max_bytes)); both services declare the same arguments. A
 *     stream that exists with other arguments (PRECONDITION_FAILED) is used as it is, after
 *     one warning naming the difference (a passive declare on a new channel);
 *   - appends: rq_status_log_append() queues a body (bounded: max_pending events and
 *     max_pending_bytes bytes; beyond, the event is dropped and counted) that the thread
 *     publishes (persistent, application/json, default exchange, routing key = the stream,
 *     the timestamp property in seconds, the header x-relayq-ts-ms in epoch ms and
 *     x-relayq-writer, the log's own UUID) on a
 *     confirm-mode channel, many per flush (with opts.pack_max, several per stream message);
 *     mandatory: an event that comes back unroutable (the stream was deleted) makes the log
 *     reconnect, declare the stream again and publish it again; events queued while the
 *     broker is away are published once it is back (an event sent when the connection died
 *     is published again: the stream may hold it twice; readers deduplicate). A connection
 *     resets the reconnect backoff only once it has stayed up 10 s;
 *   - reads (when opts.on_read is set): basic.qos prefetch, basic.consume with
 *     x-stream-offset (the stream's first offset, or the timestamp replay_from_ms less 2 s,
 *     events stamped before replay_from_ms being skipped), manual acks
 *     with `multiple` every prefetch/2 deliveries; after a reconnect it resumes at the offset
 *     after the last one it passed on (each delivery's x-stream-offset header; after the broker
 *     cancelled the consumer, the stream deleted and declared again, by time instead: the
 *     newest event's time less 2 s, for a new stream's offsets start at 0), so the reader
 *     sees every event at least once and (within one process) in stream order.
 * Markers: rq_status_log_barrier() appends a marker (a message with the header
 * x-relayq-marker, never passed to on_read) and calls its callback when the reader reads the
 * marker back: every event appended to the stream (by anyone) before the barrier call was
 * confirmed has been passed to on_read by then. Concurrent barriers share one marker.
 * The thread reconnects with the reconnect backoff (amqp_conn.h); each attempt (and RPC) is
 * bounded by RABBITMQ_CONNECT_TIMEOUT_MS but at most 2 s, so that a stop never waits longer
 * for a frozen broker. One warning per outage. Metrics (label service; registered by the
 * first log of a registry: a second log on the same registry has none):
 * status_events_appended_total, status_events_dropped_total, status_events_read_total,
 * status_stream_up (1 connected with the stream declared), status_stream_lag_seconds (gauge:
 * now minus the newest read event's stream timestamp; readers only).
 */
#ifndef RQ_STATUS_LOG_H
#define RQ_STATUS_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"

typedef struct rq_status_log rq_status_log_t;

/* Called on the log's thread for every stream message read: body (len bytes, valid only
 * during the call: one appended body, or several joined by '\n' when the writer packs), its
 * stream offset and the stream's timestamp of it (epoch ms). */
typedef void (*rq_status_read_fn)(const void *body, size_t len, uint64_t offset, int64_t ts_ms,
                                  void *arg);

/* Called once on the log's thread (or in rq_status_log_free()): ok 1 when the append was
 * confirmed by the broker (or the barrier was passed), 0 when it failed or timed out. */
typedef void (*rq_status_done_fn)(void *arg, int ok);

typedef struct rq_status_log_opts {
    const RabbitMQConfig *rabbitmq; /* the broker (borrowed for the log's lifetime) */
    const char *stream;             /* the stream's name (copied) */
    int64_t max_age_s;              /* retention by age, seconds (> 0) */
    int64_t max_bytes;              /* retention by size, bytes (> 0) */
    const char *service;            /* "producer" or "consumer": the metrics' label (copied) */
    size_t max_pending;             /* events queued and not yet confirmed, at most */
    size_t max_pending_bytes;       /* and their bytes, at most */
    rq_status_read_fn on_read;      /* NULL: append only, no reader */
    void *read_arg;
    int64_t replay_from_ms; /* reader start: 0 the stream's first event; else an epoch ms time */
    int prefetch;           /* reader's basic.qos (0: 1000) */
    int linger_ms;          /* with pack_max: events wait up to this long for others to share their
                               stream message (not markers, nor appends with a done callback) */
    int skip_own;           /* 1: the reader does not pass on what this log wrote (each message
                               carries the header x-relayq-writer, a UUID per log) */
    size_t pack_max; /* > 0: events queued together go out as one stream message, their bodies
                        joined by '\n', up to pack_max bytes (bodies must hold no '\n'); 0:
                        one message per append */
} rq_status_log_opts_t;

/* Makes a log (nothing started, no thread yet). NULL on allocation failure or invalid opts.
 * m may be NULL (no metrics). */
rq_status_log_t *rq_status_log_new(const rq_status_log_opts_t *opts, rq_metrics_t *m);

/* Starts the thread. Returns 0, or -1. */
int rq_status_log_start(rq_status_log_t *log);

/* Stops the thread (publishing what is queued for at most about 1 s, connecting first unless
 * the broker is already known to be away: the rest is dropped and its done callbacks get
 * ok 0; pending barriers too) and frees the log. Within about 2 s even against a frozen
 * broker. Not from a callback. NULL is a no-op. */
void rq_status_log_free(rq_status_log_t *log);

/* Queues body (len bytes, copied) for the stream. Thread-safe, never blocks on the broker.
 * done (may be NULL) is called once the broker confirmed it (ok 1), or when it is dropped
 * later (ok 0: stopped, or not confirmed within timeout_ms of this call; 0 means no limit).
 * Returns 0 when queued, -1 when dropped at once (buffer full, or len above 1 MiB; counted;
 * done is not called then). */
int rq_status_log_append(rq_status_log_t *log, const void *body, size_t len, int timeout_ms,
                         rq_status_done_fn done, void *arg);

/* A read barrier (see the header comment): done(arg, 1) once the reader has passed on every
 * event confirmed before this call, done(arg, 0) when that did not happen within timeout_ms
 * (0: no limit) (or at stop). Thread-safe. Returns 0, or -1 when the log has no reader (done
 * not called). */
int rq_status_log_barrier(rq_status_log_t *log, int timeout_ms, rq_status_done_fn done, void *arg);

/* 1 while connected with the stream declared (and, with a reader, consuming); else 0.
 * Thread-safe. */
int rq_status_log_up(const rq_status_log_t *log);

/* 1 once the reader has read up to a marker it appended after its first consume (the replay
 * at start is done), else 0. Thread-safe. */
int rq_status_log_caught_up(const rq_status_log_t *log);

/* The x-stream-max-segment-size-bytes declared for max_bytes: max_bytes / 4 bounded to
 * [1 MiB, 64 MiB] (retention drops whole segments: a segment must be well below the limit). */
int64_t rq_status_log_segment_bytes(int64_t max_bytes);

#endif
