/* handler.c - the common part of the handlers: the HANDLER choice, HANDLER_CONCURRENCY, the
 * metrics and the duration of each job; the implementations are handler_{echo,webhook,exec}.c. */
#include "handler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handler_impl.h"
#include "util.h"

/* A reply (webhook response body, command stdout) larger than this fails the job (RETRY). */
#define RQ_HANDLER_MAX_REPLY (16u * 1024 * 1024)

struct rq_handler {
    const rq_handler_ops_t *ops;
    void *impl;
    int concurrency;
    size_t active;
    rq_metric_t *outcomes; /* consumer_handler_outcomes_total{handler,outcome,status} */
    rq_series_t *duration; /* consumer_handler_duration_seconds{handler=kind} */
};

/* Seconds: HANDLER_TIMEOUT_MS is at most an hour, processing_time at most MAX_PROCESSING_TIME. */
static const double duration_buckets[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                          1,     2.5,   5,    10,    30,   60,  300};

static const char *outcome_name(rq_handler_outcome_t o)
{
    switch (o) {
    case RQ_HANDLER_OK:
        return "ok";
    case RQ_HANDLER_RETRY:
        return "retry";
    case RQ_HANDLER_REJECT:
        return "reject";
    }
    return "unknown";
}

rq_handler_t *rq_handler_new(const rq_config_t *cfg, rq_metrics_t *metrics, char *err,
                             size_t errlen)
{
    const char *spec = cfg->handler && cfg->handler[0] ? cfg->handler : "echo";
    rq_handler_opts_t o;
    rq_handler_t *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        rq_errf(err, errlen, "HANDLER: out of memory");
        goto fail;
    }
    h->concurrency =
        cfg->handler_concurrency > 0 ? cfg->handler_concurrency : cfg->rabbitmq.prefetch;
    if (h->concurrency < 1)
        h->concurrency = 1;
    memset(&o, 0, sizeof(o));
    o.timeout_ms = cfg->handler_timeout_ms > 0 ? cfg->handler_timeout_ms : 30000;
    o.concurrency = h->concurrency;
    o.max_reply = RQ_HANDLER_MAX_REPLY;
    if (strcmp(spec, "echo") == 0) {
        o.target = "";
        h->impl = rq_handler_echo_new(&o, &h->ops, err, errlen);
    } else if (strncmp(spec, "http://", 7) == 0 || strncmp(spec, "https://", 8) == 0) {
        o.target = spec;
        h->impl = rq_handler_webhook_new(&o, &h->ops, err, errlen);
    } else if (strncmp(spec, "exec:", 5) == 0) {
        o.target = spec + 5;
        h->impl = rq_handler_exec_new(&o, &h->ops, err, errlen);
    } else {
        rq_errf(err, errlen,
                "HANDLER: \"%.64s\" is not echo, an http:// or https:// URL, or exec:<command>",
                spec);
        goto fail;
    }
    if (h->impl == NULL)
        goto fail;
    if (metrics) {
        static const char *const dl[] = {"handler"};
        static const char *const ol[] = {"handler", "outcome", "status"};
        const char *kind = h->ops->kind;
        rq_metric_t *d = rq_metrics_histogram(
            metrics, "consumer_handler_duration_seconds",
            "Time from the start of a handler job (webhook request, command, echo timer) to its "
            "end, in seconds",
            1, dl, duration_buckets, sizeof(duration_buckets) / sizeof(duration_buckets[0]));
        h->outcomes = rq_metrics_counter(
            metrics, "consumer_handler_outcomes_total",
            "Handler jobs finished, by outcome (ok, retry, reject) and status (the HTTP status or "
            "exit status; 0: none)",
            3, ol);
        h->duration = d ? rq_metric_series(d, 1, &kind) : NULL;
    }
    return h;
fail:
    rq_handler_free(h);
    return NULL;
}

const char *rq_handler_kind(const rq_handler_t *h)
{
    return h->ops->kind;
}

int rq_handler_start(rq_handler_t *h, rq_handler_job_t *job, int64_t now_ms)
{
    if (h->active >= (size_t)h->concurrency)
        return -1;
    job->started_ms = now_ms;
    if (h->ops->start(h->impl, job, now_ms) < 0)
        return -1;
    h->active++;
    return 0;
}

size_t rq_handler_active(const rq_handler_t *h)
{
    return h->active;
}

int rq_handler_pollfds(rq_handler_t *h, struct pollfd *pfd, int max, int64_t now_ms,
                       int *timeout_ms)
{
    *timeout_ms = -1;
    if (h->active == 0)
        return 0;
    return h->ops->pollfds(h->impl, pfd, max, now_ms, timeout_ms);
}

int rq_handler_collect(rq_handler_t *h, int64_t now_ms, rq_handler_job_t **done, int max)
{
    int n;

    if (h->active == 0 || max <= 0)
        return 0;
    n = h->ops->collect(h->impl, now_ms, done, max);
    for (int i = 0; i < n; i++) {
        rq_handler_job_t *j = done[i];
        char status[16];
        const char *labels[3] = {h->ops->kind, outcome_name(j->outcome), status};

        j->seconds = now_ms > j->started_ms ? (double)(now_ms - j->started_ms) / 1000.0 : 0.0;
        snprintf(status, sizeof(status), "%d", j->status);
        rq_series_observe(h->duration, j->seconds);
        if (h->outcomes)
            rq_series_inc(rq_metric_series(h->outcomes, 3, labels));
    }
    h->active -= (size_t)n <= h->active ? (size_t)n : h->active;
    return n;
}

void rq_handler_cancel_all(rq_handler_t *h)
{
    if (h == NULL || h->impl == NULL)
        return;
    h->ops->cancel_all(h->impl);
    h->active = 0;
}

void rq_handler_why_quote(char *why, size_t whylen, const char *prefix, const char *text,
                          size_t len)
{
    size_t n;
    int utf8;

    if (whylen == 0)
        return;
    n = (size_t)snprintf(why, whylen, "%s", prefix);
    if (n >= whylen)
        return;
    if (len > RQ_HANDLER_WHY_BODY)
        len = RQ_HANDLER_WHY_BODY;
    utf8 = text && rq_utf8_valid(text, len);
    for (size_t i = 0; i < len && n + 1 < whylen; i++) {
        unsigned char c = (unsigned char)text[i];

        why[n++] = c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8) ? ' ' : (char)c;
    }
    /* the text was valid UTF-8 up to the cut: drop a sequence the cut split */
    while (utf8 && n > 0 && !rq_utf8_valid(why, n))
        n--;
    why[n] = '\0';
}

void rq_handler_free(rq_handler_t *h)
{
    if (h == NULL)
        return;
    if (h->impl) {
        h->ops->cancel_all(h->impl);
        h->ops->free(h->impl);
    }
    free(h);
}
