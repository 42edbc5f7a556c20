/* handler.h - what processing a message means: the consumer's handlers (issue 14).
 *
 * HANDLER picks one per consumer process:
 *   echo (default)    the reply is "Consumer processed: <line>" after the message's
 *                     processing_time (a timer, not a sleep), failing its first fail_times
 *                     attempts (test aids, as before); HANDLER_TIMEOUT_MS does not apply
 *                     (handler_echo.c);
 *   http:// https://  a webhook: the payload is POSTed to the URL with the message's metadata
 *                     in headers; 2xx: the response body is the reply; 4xx (but 408 and 429):
 *                     to the DLQ with the status and body as the reason; any other status,
 *                     a timeout, a refused connection, a DNS failure: retried
 *                     (handler_webhook.c);
 *   exec:<cmd> [args] a command per message (the line split into words with '...', "..."
 *                     and \ quoting, no shell, never anything of the message in it), the
 *                     payload on stdin, the metadata in RELAYQ_* / TRACEPARENT / TRACESTATE
 *                     variables; exit 0: stdout is the reply; non-zero: retried; a timeout
 *                     kills its process group (handler_exec.c).
 * A reply over 16 MiB fails the job (RETRY). Retried jobs go through the delay queues and
 * then the DLQ (retry.h), with `why` as the reason.
 *
 * Handlers are asynchronous and single-threaded: the worker's thread starts jobs, polls the
 * handler's descriptors together with its AMQP socket, and collects the jobs that finished,
 * in any order. No handler call blocks (beyond a fork/exec or a non-blocking connect).
 * Up to HANDLER_CONCURRENCY jobs (default: PREFETCH_COUNT) run at once; each is bounded by
 * HANDLER_TIMEOUT_MS. Every handler counts consumer_handler_duration_seconds{handler} and
 * consumer_handler_outcomes_total{handler,outcome,status} (outcome ok|retry|reject; status
 * the HTTP status or exit status, "0" when there is none: echo, no HTTP answer).
 *
 * Not thread-safe: one thread (the worker's) makes every call. The process must ignore
 * SIGPIPE (libcurl runs with CURLOPT_NOSIGNAL), must not reap children it did not start
 * (waitpid(-1), SIGCHLD set to SIG_IGN), and should create a webhook handler before it
 * starts other threads that use libcurl (curl_global_init).
 *
 * The job is the caller's memory (embedded in its per-delivery item): the handler reads the
 * "in" fields, writes the "out" fields when the job completes, and keeps its own state in
 * `priv`. A job is started at most once at a time and handed back exactly once (by
 * rq_handler_collect), unless rq_handler_cancel_all() abandons it. */
#ifndef RQ_HANDLER_H
#define RQ_HANDLER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"

typedef enum {
    RQ_HANDLER_OK = 0, /* processed: ack, reply with `reply` */
    RQ_HANDLER_RETRY,  /* failed this attempt: through the delay queues (then the DLQ) */
    RQ_HANDLER_REJECT  /* refused for good: to the DLQ at once, `why` is the reason */
} rq_handler_outcome_t;

typedef struct rq_handler_job {
    /* in: set by the caller before rq_handler_start(), borrowed until the job is handed back */
    const char *payload; /* the message's payload, the bytes the client sent (rq_message_t
                          * payload): the webhook's request body, the command's stdin */
    size_t payload_len;
    const char *content_type;   /* of the payload ("" when none) */
    const char *message_id;     /* "" when none; as the other strings, NUL-terminated */
    const char *correlation_id; /* "" when none */
    const char *source;         /* x-source ("api", "tail", ...; "" when none) */
    const char *traceparent;    /* W3C trace context ("" when none) */
    const char *tracestate;     /* "" when none */
    int attempt;                /* 0: the first delivery */
    double processing_time;     /* echo: seconds to wait (already capped) */
    int fail_times;             /* echo: attempts 0..fail_times-1 fail */
    const char *line;           /* echo: the output line (rq_message_t line), the reply being
                                 * RQ_REPLY_PREFIX + line, byte for byte rq_message_t reply as
                                 * before; NULL: the payload stands for it */
    size_t line_len;
    void *owner; /* the caller's, untouched */
    /* out: set by the handler when the job completes */
    rq_handler_outcome_t outcome;
    int status;  /* webhook: HTTP status (0: no response); exec: exit status or 128+signal */
    char *reply; /* RQ_HANDLER_OK: malloc'd reply body (the caller frees), may be NULL */
    size_t reply_len;
    char why[256];  /* RETRY / REJECT: the reason, for the logs and the copy's headers */
    double seconds; /* how long the job ran */
    /* private to the handler */
    void *priv;         /* the implementation's state */
    int64_t started_ms; /* handler.c: rq_handler_start's now_ms, for `seconds` */
} rq_handler_job_t;

typedef struct rq_handler rq_handler_t;

/* The handler HANDLER names (cfg must outlive it), its metrics registered in `metrics`
 * (may be NULL; one handler per registry: a second one finds the names taken and counts
 * nothing). Returns NULL with a reason in err (a bad HANDLER, out of memory). */
rq_handler_t *rq_handler_new(const rq_config_t *cfg, rq_metrics_t *metrics, char *err,
                             size_t errlen);

/* "echo", "webhook" or "exec": the handler's kind, for logs and metric labels. */
const char *rq_handler_kind(const rq_handler_t *h);

/* Starts job at now_ms (rq_mono_ms). Returns 0 (the job runs; it comes back through
 * rq_handler_collect, possibly at the next call), or -1 when the handler cannot take it now
 * (HANDLER_CONCURRENCY reached, out of descriptors or memory): the job is untouched and the
 * caller starts it again later. */
int rq_handler_start(rq_handler_t *h, rq_handler_job_t *job, int64_t now_ms);

/* Jobs started and not yet handed back. */
size_t rq_handler_active(const rq_handler_t *h);

/* The descriptors the caller must poll for the running jobs (at most max are written, with
 * their events) and, in *timeout_ms, the most it may wait before calling rq_handler_collect
 * again (-1: no deadline of the handler's; the caller keeps its own). Returns the count. */
int rq_handler_pollfds(rq_handler_t *h, struct pollfd *pfd, int max, int64_t now_ms,
                       int *timeout_ms);

/* Does the work that is ready (after a poll, whatever it returned; a revents the caller
 * could not fill is fine: handlers re-check) and hands back up to max finished jobs in
 * done[], their "out" fields set. Returns the count (0..max). */
int rq_handler_collect(rq_handler_t *h, int64_t now_ms, rq_handler_job_t **done, int max);

/* Abandons every running job (kills commands and reaps them, closes transfers, frees what
 * the handler allocated for them): they are not handed back; their messages are requeued
 * by the caller. For a lost connection or a stop. */
void rq_handler_cancel_all(rq_handler_t *h);

/* Cancels what runs and frees the handler. NULL is a no-op. */
void rq_handler_free(rq_handler_t *h);

#endif
