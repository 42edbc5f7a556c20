/* worker.h - the consumer loop: one thread owning the AMQP connection.
 *
 * rq_worker_run() connects (rq_amqp_open, topology, basic.qos(PREFETCH_COUNT), a second
 * channel in confirm mode for copies, basic.consume with manual acks) and then repeats a
 * group commit:
 *   1. collect deliveries: wait for one (checking the stop flag every 100 ms), then gather
 *      more for up to BATCH_WAIT_MS or until PREFETCH_COUNT are held;
 *   2. decode each and process it: wait its processing_time (before such a wait, the
 *      messages already processed are committed, so a slow message does not hold back the
 *      replies of earlier ones), then succeed, or fail (today only the "fail_times" test
 *      aid fails a message). A failed attempt is retried through the delay queues, and
 *      after MAX_RETRIES retries dead-lettered; an undecodable message is dead-lettered at
 *      once (retry.h: attempt counter header, copies, reasons);
 *   3. commit, in four phases: copies: publish the copies of failed and undecodable
 *      deliveries (to <q>.retry.<attempt+1> or <q>.dlq); output: append the lines of the
 *      processed messages to OUTPUT_FILE with one write and one fdatasync; replies: publish
 *      their replies (to reply_to, with the correlation_id; none for a failed attempt);
 *      settle: wait for the broker to confirm the copies, then settle the batch (settle.h:
 *      ack/nack runs with `multiple`).
 * When the output cannot be written (disk full, I/O error), the write is retried holding the
 * batch: its deliveries stay unacked (not requeued, which would count against the quorum
 * queue's x-delivery-limit and dead-letter them while the disk is full) and the write is
 * tried again after a pause of 1 s doubling up to 30 s, sending heartbeats meanwhile. Only a
 * stop (the processed messages are then requeued) or a lost connection ends the retries.
 * A socket error, heartbeat timeout, channel or connection close, or a cancelled consumer
 * drops the connection (the unsettled batch is redelivered by the broker) and reconnects
 * with the shared exponential backoff with jitter (rq_backoff_t in amqp_conn.h: 200 ms
 * doubling to RQ_RECONNECT_MAX_MS), logging every attempt; readiness is false while
 * disconnected. The backoff applies after a dropped connection too and is reset only once
 * a connection stayed up 10 s, so a connection that fails right after connecting never
 * reconnects in a tight loop.
 * A per-message failure never drops the connection: an undecodable message (including one
 * whose reply could not be encoded, or an impossible tail range: message.h) is dead-lettered
 * with its reason and the rest of the batch acked; a copy that cannot be encoded is handled
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
 * such a return the connection is closed and opened again, which declares the topology
 * again; no confirm within 10 s drops the connection (the originals come back). A crash
 * between the confirm and the ack makes a duplicate copy (two retry chains of one message:
 * the output writer keeps its line once; the caller gets the first reply), never a loss.
 * Replies stay unconfirmed on channel 1 (they are transient and best effort: a lost reply
 * is a 504 for a waiting caller, never a lost message), so the common path pays nothing for
 * confirms. Deliveries that arrive while waiting for confirms are kept in order and handed
 * to the next batch. While the broker blocks publishers (memory or disk alarm) it stops
 * reading this connection once it publishes: replies and copies stall, and after 10 s
 * without a confirm the connection is rebuilt (a consumer that never publishes would keep
 * going; one connection per process is the simpler trade).
 *
 * Stop (the flag becomes non-zero, e.g. from SIGTERM): the current batch is finished —
 * messages without processing_time are processed and acked (or retried / dead-lettered); a
 * processing_time wait is cut short and that message requeued; an output write being retried
 * is given up and the batch's processed messages requeued — then basic.cancel, and the
 * connection is closed.
 *
 * Threads: rq_worker_run() runs in one thread; rq_worker_ready() may be called from any
 * thread (e.g. the HTTP server's).
 */
#ifndef RQ_CONSUMER_WORKER_H
#define RQ_CONSUMER_WORKER_H

#include <stddef.h>

#include "config.h"
#include "metrics.h"
#include "output.h"

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
 * output file) is borrowed too; `wm` is copied (may be NULL: no metrics).
 * Returns NULL on allocation failure. */
rq_worker_t *rq_worker_new(const rq_config_t *cfg, rq_output_t *out, const rq_worker_metrics_t *wm);

/* SIGHUP support: while rq_worker_run() runs, the worker checks *flag between batches and
 * every 100 ms while idle; when non-zero it clears it, calls rq_output_reopen() on the output
 * (a rotated OUTPUT_FILE is let go of) and then fn(arg) (e.g. reopen the log), in the
 * worker's thread. flag may be NULL (no reopening); fn may be NULL. Call before
 * rq_worker_run(). */
void rq_worker_set_reopen(rq_worker_t *w, volatile int *flag, void (*fn)(void *arg), void *arg);

/* Runs the loop described above in the calling thread until *stop becomes non-zero (set it
 * from a signal handler or another thread). Broker failures are retried, never fatal; so is
 * an output file error (the write is retried, the batch held unacked). Returns 0 once
 * stopped. */
int rq_worker_run(rq_worker_t *w, volatile int *stop);

/* rq_ready_fn for the HTTP server: 1 when connected, topology declared and consuming; else 0
 * with the reason in reason[reasonlen]. `arg` is the rq_worker_t. Thread-safe. */
int rq_worker_ready(void *arg, char *reason, size_t reasonlen);

/* Frees the worker (not cfg/out). Call after rq_worker_run() returned. NULL is a no-op. */
void rq_worker_free(rq_worker_t *w);

#endif
