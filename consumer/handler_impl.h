/* handler_impl.h - what a handler implementation provides to handler.c (consumer only).
 *
 * handler.c owns the common part (the HANDLER choice, HANDLER_CONCURRENCY, the metrics, the
 * duration of each job) and calls an implementation through this table; each function has
 * the contract of its rq_handler_* counterpart in handler.h, for the implementation's jobs. */
#ifndef RQ_HANDLER_IMPL_H
#define RQ_HANDLER_IMPL_H

#include "handler.h"

typedef struct rq_handler_ops {
    const char *kind; /* "echo", "webhook", "exec" */
    int (*start)(void *impl, rq_handler_job_t *job, int64_t now_ms);
    int (*pollfds)(void *impl, struct pollfd *pfd, int max, int64_t now_ms, int *timeout_ms);
    int (*collect)(void *impl, int64_t now_ms, rq_handler_job_t **done, int max);
    void (*cancel_all)(void *impl);
    void (*free)(void *impl);
} rq_handler_ops_t;

/* Options every implementation gets (from the config; handler.c fills them). */
typedef struct rq_handler_opts {
    const char *target; /* webhook: the URL; exec: the command line after "exec:" */
    int timeout_ms;     /* HANDLER_TIMEOUT_MS: a job running longer fails (RETRY) */
    int concurrency;    /* at most this many jobs at once */
    size_t max_reply;   /* a reply (response body, stdout) over this fails the job (RETRY) */
} rq_handler_opts_t;

/* Writes prefix followed by the first RQ_HANDLER_WHY_BODY bytes of text[0..len) into
 * why[0..whylen) as one printable line (control characters become spaces, so does every byte
 * >= 0x80 unless the quoted part is valid UTF-8; a UTF-8 sequence cut at the end is dropped):
 * the start of a webhook's failure body or a command's stderr, for logs and AMQP headers. */
#define RQ_HANDLER_WHY_BODY 200
void rq_handler_why_quote(char *why, size_t whylen, const char *prefix, const char *text,
                          size_t len);

/* Each returns the implementation (its ops in *ops) or NULL with a reason in err. */
void *rq_handler_echo_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                          size_t errlen);
void *rq_handler_webhook_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                             size_t errlen);
void *rq_handler_exec_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                          size_t errlen);

#endif
