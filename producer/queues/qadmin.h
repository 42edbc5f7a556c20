/* qadmin.h - the queue service's queue administration (issue 16): create, inspect, list and
 * delete queues with their derived queues, and their DLQs, off the HTTP threads.
 *
 * One worker thread (an rq_dlq_worker_t: a bounded FIFO of RQ_DLQ_QUEUE_MAX jobs, cancelled
 * and drained by rq_qadmin_stop()) runs every job on a short-lived AMQP connection of its
 * own (never the publisher's), plus the management API (mgmt.h) for what AMQP cannot tell:
 * the list of queues, unacked counts and stored arguments.
 *
 * A job answers with an HTTP status and a JSON body:
 *   CREATE  201 created; 200 an identical queue exists; 409 it exists with other arguments
 *           ({"error", "argument", "queue"}: the first argument that differs, and for the
 *           broker's refusals its reason "inequivalent arg ..."); 400 a refused argument.
 *   GET     200 {"name","type","ready","unacked","consumers","dlq_depth","default",
 *           "settings"}; "unacked" null without the management API; 404 unknown.
 *   LIST    200 {"queues":[...],"count"}: every queue with x-relayq-queue, and the default
 *           queue; 503 without the management API.
 *   DELETE  200 {"deleted","derived":[...]}; 409 not empty (without force) or the default
 *           queue; 404 unknown.
 *   PEEK, RETRY (per-queue DLQ): as rq_dlq_peek_queue()/rq_dlq_retry_queue(); 404 unknown.
 * Broker unreachable or failing: 503 with the reason.
 */
#ifndef RQ_QADMIN_H
#define RQ_QADMIN_H

#include <jansson.h>

#include "amqp_conn.h"
#include "config.h"
#include "dlq.h"
#include "qname.h"

typedef struct rq_qadmin rq_qadmin_t;

typedef enum {
    RQ_QA_CREATE = 0,
    RQ_QA_GET,
    RQ_QA_LIST,
    RQ_QA_DELETE,
    RQ_QA_DLQ_PEEK,
    RQ_QA_DLQ_RETRY
} rq_qa_op_t;

/* One job. The submitter fills op, name, spec (CREATE), force (DELETE), base.offset/limit
 * (PEEK), base.count (RETRY), done/done_arg, base.budget_ms and base.watch_fd/client_fd, and
 * keeps the job valid until done has run (base.done is the admin's own). */
typedef struct rq_qa_job {
    rq_dlq_job_t base; /* first member */
    rq_qa_op_t op;
    char name[RQ_QNAME_MAX + 1];
    char type[16];                                  /* CREATE: spec.type points here */
    rq_queue_spec_t spec;                           /* CREATE: spec.name points at name */
    int force;                                      /* DELETE */
    void (*done)(struct rq_qa_job *job, void *arg); /* on the worker, once, when over */
    void *done_arg;
    /* results */
    unsigned status;
    json_t *body; /* new reference, the submitter's */
    rq_qadmin_t *qa;
} rq_qa_job_t;

/* Starts the worker. cfg borrowed (outlives the admin). The management API client is made
 * from cfg->rabbitmq (turned off, or a bad URL: logged, and LIST answers 503 with why). NULL
 * when the thread cannot start. */
rq_qadmin_t *rq_qadmin_new(const rq_config_t *cfg);

/* Queues a job. Returns 0 (base.done runs exactly once, on the worker), or -1 with
 * base.error filled (full or stopping: answer 503 at once). Thread-safe. */
int rq_qadmin_submit(rq_qadmin_t *qa, rq_qa_job_t *job);

/* Why there is no management API ("" when there is one). */
const char *rq_qadmin_mgmt_error(const rq_qadmin_t *qa);

/* Stops the worker as rq_dlq_worker_stop() (every queued job done). NULL: no-op. */
void rq_qadmin_stop(rq_qadmin_t *qa);

/* Stops (if not yet) and frees. NULL: no-op. */
void rq_qadmin_free(rq_qadmin_t *qa);

/* ---- pieces, exposed for the unit tests ---- */

/* The first difference between the arguments a spec wants (want[0..n)) and a queue's
 * arguments as the management API shows them (have, an object): returns the argument's name
 * (borrowed from want or have) with what is wanted and what is there written into
 * wanted/current, or NULL when they are the same set with the same values. */
const char *rq_qadmin_args_differ(const amqp_table_entry_t *want, int n, const json_t *have,
                                  char *wanted, size_t wlen, char *current, size_t clen);

/* The name of the argument in a broker refusal "... inequivalent arg 'x-max-length' ..." (or
 * "invalid arg '...'") into out; returns 0, or -1 when the text names none. */
int rq_qadmin_refused_arg(const char *reason, char *out, size_t outlen);

/* The settings object {"type","max_priority","max_length","message_ttl_ms","max_retries",
 * "retry_base_ms"} of a queue's arguments (management API object); absent ones are null. */
json_t *rq_qadmin_settings(const json_t *args, const char *type);

#endif
