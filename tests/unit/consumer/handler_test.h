/* handler_test.h - driving a consumer handler as the worker does (unit tests only). */
#ifndef RQ_TEST_HANDLER_TEST_H
#define RQ_TEST_HANDLER_TEST_H

#include <poll.h>
#include <stdint.h>
#include <string.h>

#include "handler.h"
#include "util.h"

/* A job for payload (borrowed) with every metadata string empty. */
static void job_init(rq_handler_job_t *j, const char *payload)
{
    memset(j, 0, sizeof(*j));
    j->payload = payload;
    j->payload_len = strlen(payload);
    j->content_type = j->message_id = j->correlation_id = j->source = "";
    j->traceparent = j->tracestate = "";
}

/* Drives h as the worker would (pollfds, poll at most max_wait_ms, collect) until n jobs
 * came back or limit_ms passed. Returns how many came back. */
static int run_waiting(rq_handler_t *h, int n, int limit_ms, int max_wait_ms)
{
    int64_t end = rq_mono_ms() + limit_ms;
    int got = 0;

    while (got < n && rq_mono_ms() < end) {
        struct pollfd pfd[64];
        rq_handler_job_t *done[64];
        int tmo, np = rq_handler_pollfds(h, pfd, 64, rq_mono_ms(), &tmo);

        if (tmo < 0 || tmo > max_wait_ms)
            tmo = max_wait_ms;
        poll(pfd, (nfds_t)np, tmo);
        got += rq_handler_collect(h, rq_mono_ms(), done, 64);
    }
    return got;
}

#endif
