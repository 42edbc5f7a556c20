/* worker.h - the consumer loop: one thread owning the AMQP connection.
 *
 * rq_worker_run() connects (rq_amqp_open, topology, basic.qos(PREFETCH_COUNT), a second
 * channel in confirm mode for copies, basic.consume with manual acks) and then works on up
 * to PREFETCH_COUNT deliveries at once through the handler (handler.h: echo, webhook or
 * exec; asynchronous, in this same thread), each replied to and settled when it finishes,
 * in any order (issue 14). One round of the loop:
 *   1. intake: every delivery read is decoded into one of PREFETCH_COUNT slots (the broker
 *      never has more unsettled); an undecodable one is finished at once (to the DLQ with
 *      the reason: retry.h), a decoded one waits for the handler;
 *   2. start: the waiting deliveries' jobs are started, in delivery order, as long as the
 *      handler takes them (HANDLER_CONCURRENCY, default PREFETCH_COUNT);
 *   3. collect: the jobs that finished come back (rq_handler_collect), in any order:
 *      RQ_HANDLER_OK → an output line and a reply (the handler's reply; echo's is
 *      "Consumer processed: <line>"); RETRY → the next delay queue, and after MAX_RETRIES
 *      retries the DLQ ("processing failed after N attempts: <why>"); REJECT → the DLQ at
 *      once ("rejected: <why>");
 *   4. commit: everything finished since the last commit is one group, committed at once
 *      (or BATCH_WAIT_MS after the first of it finished, to gather more into one fsync; at
 *      once too when every slot is finished), in delivery-tag order, in four phases:
 *      copies: publish the copies of failed and undecodable deliveries (to
 *      <q>.retry.<attempt+1> or <q>.dlq); output: append the lines of the processed
 *      messages to OUTPUT_FILE with one write and one fdatasync; replies: publish their
 *      replies (to reply_to, with the correlation_id; none for a failed attempt); settle:
 *      wait for the broker to confirm the copies, then settle the group (settle.h:
 *      ack/nack runs with `multiple` only below the lowest delivery still held outside the
 *      group, so a multiple never settles one that is still being processed);
 *   5. wait (pump): poll(2) the AMQP socket (not at all when rabbitmq-c holds frames or
 *      bytes already) with the handler's descriptors, up to the handler's deadline, the
 *      group's BATCH_WAIT_MS, a heartbeat tick and at most 100 ms (the stop flag and SIGHUP
 *      are checked every round); then read every frame that arrived (deliveries are kept
 *      in order for the intake, confirms noted) and collect the finished jobs. The tick,
 *      every heartbeat / 4 (at least 100 ms), lets rabbitmq-c's
 *      amqp_simple_wait_frame_noblock send a heartbeat that is due and notice a heartbeat
 *      timeout, however busy the handler keeps the loop.
 * The commit pumps too while it waits (confirms, an output retry), so running jobs go on
 * and the ones finishing meanwhile form the next group; it starts no job.
 * When the output cannot be written (disk full, I/O error), the write is retried holding the
 * group: its deliveries stay unacked (not requeued, which would count against the quorum
 * queue's x-delivery-limit and dead-letter them while the disk is full) and the write is
 * tried again after a pause of 1 s doubling up to 30 s, pumping meanwhile (heartbeats, the
 * jobs already running finish and wait for the next group; no new job starts while the
 * group is held). Only a stop (the group's processed messages are then requeued) or a lost
 * connection ends the retries.
 * A socket error, heartbeat timeout, channel or connection close, or a cancelled consumer
 * drops the connection: the running jobs are cancelled (rq_handler_cancel_all), every
 * unsettled delivery is let go of (the broker redelivers it), and the worker reconnects
 * with the shared exponential backoff with jitter (rq_backoff_t in amqp_conn.h: 200 ms
 * doubling to RQ_RECONNECT_MAX_MS), logging every attempt; readiness is false while
 * disconnected. The backoff applies after a dropped connection too and is reset only once
 * a connection stayed up 10 s, so a connection that fails right after connecting never
 * reconnects in a tight loop.
 * A per-message failure never drops the connection: an undecodable message (including one
 * whose reply could not be encoded, or an impossible tail range: message.h) is dead-lettered
 * with its reason and the rest of the group acked; a copy that cannot be encoded is handled
 * per message (publish_copy in worker.c).
 *
 * Retry and dead-letter copies: confirmed before the original is acked. The copy is a new
 * publish and the original's ack a separate step, so the order matters: publish, then ack.
 * Publishing before acking on one channel would order the two at the broker, but without a
 * confirm the broker may still lose the copy (it was not yet written to disk) while the ack
 * is already applied, if it crashes in between. So copies go on a second channel (2) in
 * confirm mode, `mandatory`, persistent, and the originals are acked (channel 1) only once
 * every copy of the commit is confirmed (stored in its durable queue). The original of a
 * nacked or returned copy (unroutable: its queue was deleted) is requeued instead, and after
 * such a return, once the group is settled, the connection is closed and opened again,
 * which declares the topology again (jobs still running are cancelled and what was not
 * settled is let go of: the broker redelivers it); no confirm within 10 s drops the connection (the
 * originals come back). A crash between the confirm and the ack makes a duplicate copy (two retry
 * chains of one message: the output writer keeps its line once; the caller gets the first reply),
 * never a loss. Replies stay unconfirmed on channel 1 (they are transient and best effort: a lost
 * reply is a 504 for a waiting caller, never a lost message), so the common path pays nothing for
 * confirms. Deliveries read and jobs finished while waiting for confirms are kept, in
 * order, for the next group. While the broker blocks publishers (memory or disk alarm) it stops
 * reading this connection once it publishes: replies and copies stall, and after 10 s
 * without a confirm the connection is rebuilt (a consumer that never publishes would keep
 * going; one connection per process is the simpler trade).
 *
 * Stop (the flag becomes non-zero, e.g. from SIGTERM): the running jobs are cancelled
 * (rq_handler_cancel_all: commands killed, transfers closed, echo timers dropped) and their
 * deliveries, with those not started yet, are requeued; what had finished is committed
 * with them as a last group (an output write being retried is given up and its processed
 * messages requeued) — then basic.cancel, and the connection is closed (deliveries read
 * but not taken in are requeued by the broker). A stop does not wait for any job.
 *
 * Lifecycle events (issue 17; only with a status log given, rq_worker_set_status): the worker
 * appends one event (events.h, status_event.h) to the status stream, fire and forget
 * (rq_status_log_append never blocks; a full buffer drops the event, counted by the log):
 * "delivered" when a decodable delivery is taken in (attempt = its retry attempt + 1), and
 * once its outcome is final in the commit (after the group's output write and sync and the
 * copies' confirms, before the acks go out): "retried" (error = why the attempt failed),
 * "dead_lettered" (a failed last attempt, a rejection or an undecodable message: error = the
 * reason) or "replied" (processed, with or without a reply_to: the handler's reply, cut to
 * STATUS_REPLY_MAX bytes). A delivery requeued (stop, output error, a refused copy) gets no
 * outcome event; a redelivery gets its events again (readers deduplicate).
 *
 * Threads: rq_worker_run() runs in one thread; rq_worker_ready() may be called from any
 * thread (e.g. the HTTP server's).
 */
#ifndef RQ_CONSUMER_WORKER_H
#define RQ_CONSUMER_WORKER_H

#include <stddef.h>

#include "config.h"
#include "handler.h"
#include "metrics.h"
#include "output.h"
#include "status_log.h"

/* The metric series the worker updates (any may be NULL). */
typedef struct rq_worker_metrics {
    rq_series_t *consumed;         /* messages_consumed_total */
    rq_series_t *duration;         /* message_processing_duration_seconds */
    rq_series_t *errors_decode;    /* message_processing_errors_total{reason="decode"} */
    rq_series_t *errors_output;    /* message_processing_errors_total{reason="output"} */
    rq_series_t *errors_failed;    /* message_processing_errors_total{reason="failed"} */
    rq_series_t *retries;          /* consumer_retries_total */
    rq_series_t *dead_failed;      /* consumer_dead_lettered_total{reason="failed"} */
    rq_series_t *dead_undecodable; /* consumer_dead_lettered_total{reason="undecodable"} */
    rq_series_t *consume_latency;  /* consumer_queue_consume_latency_seconds */
    rq_series_t *lines_written;    /* consumer_lines_written_total */
    rq_series_t *duplicates;       /* consumer_duplicates_skipped_total */
    rq_series_t *replies_sent;     /* consumer_replies_sent_total */
    rq_series_t *requeued;         /* consumer_messages_requeued_total */
    rq_series_t *batch_size;       /* consumer_batch_size (histogram) */
    rq_series_t *sync_duration;    /* consumer_output_sync_duration_seconds (histogram) */
    rq_series_t *connected;        /* consumer_broker_connected (gauge 0/1) */
    rq_series_t *reconnects;       /* consumer_reconnects_total */
} rq_worker_metrics_t;

typedef struct rq_worker rq_worker_t;

/* Registers the consumer's metric families in `reg` and fills *wm with their series.
 * Returns 0, or -1 when a family cannot be registered (e.g. name taken, no memory). */
int rq_worker_metrics_register(rq_worker_metrics_t *wm, rq_metrics_t *reg);

/* Creates a worker. `cfg` is borrowed and must outlive the worker; `out` (may be NULL: no
 * output file) is borrowed too; `handler` (handler.h) is borrowed and must outlive the
 * worker (NULL: the worker makes the one HANDLER names, without metrics, and frees it);
 * `wm` is copied (may be NULL: no metrics). Returns NULL on allocation failure (or, without
 * a handler given, when HANDLER is bad: logged). */
rq_worker_t *rq_worker_new(const rq_config_t *cfg, rq_output_t *out, rq_handler_t *handler,
                           const rq_worker_metrics_t *wm);

/* SIGHUP support: while rq_worker_run() runs, the worker checks *flag every round of the loop
 * (at least every 100 ms); when non-zero it clears it, calls rq_output_reopen() on the output
 * (a rotated OUTPUT_FILE is let go of) and then fn(arg) (e.g. reopen the log), in the
 * worker's thread. flag may be NULL (no reopening); fn may be NULL. Call before
 * rq_worker_run(). */
void rq_worker_set_reopen(rq_worker_t *w, volatile int *flag, void (*fn)(void *arg), void *arg);

/* Lifecycle events (see above) go to `log` (borrowed: it must outlive rq_worker_run(); NULL,
 * the default: no events). Call before rq_worker_run(). */
void rq_worker_set_status(rq_worker_t *w, rq_status_log_t *log);

/* Runs the loop described above in the calling thread until *stop becomes non-zero (set it
 * from a signal handler or another thread). Broker failures are retried, never fatal; so is
 * an output file error (the write is retried, the group held unacked). Returns 0 once
 * stopped. */
int rq_worker_run(rq_worker_t *w, volatile int *stop);

/* rq_ready_fn for the HTTP server: 1 when connected, topology declared and consuming; else 0
 * with the reason in reason[reasonlen]. `arg` is the rq_worker_t. Thread-safe. */
int rq_worker_ready(void *arg, char *reason, size_t reasonlen);

/* Frees the worker (not cfg/out). Call after rq_worker_run() returned. NULL is a no-op. */
void rq_worker_free(rq_worker_t *w);

#endif
