/* Unit tests for consumer/handler.c and consumer/handler_echo.c: the HANDLER choice, the
 * concurrency cap, the metrics, and echo's timers, fail_times and reply (byte for byte
 * today's "Consumer processed: <line>"). Time is passed in, so nothing sleeps. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "handler.h"
#include "message.h"
#include "metrics.h"

static rq_config_t cfg;

static void setup(void)
{
    cr_assert_eq(rq_config_defaults(&cfg), 0);
}

static void teardown(void)
{
    rq_config_free(&cfg);
}

TestSuite(handler_echo, .init = setup, .fini = teardown);

static void set_handler(const char *spec)
{
    free(cfg.handler);
    cfg.handler = strdup(spec);
    cr_assert_not_null(cfg.handler);
}

static void job_init(rq_handler_job_t *j, const char *payload, double pt, int fail_times,
                     int attempt)
{
    memset(j, 0, sizeof(*j));
    j->payload = payload;
    j->payload_len = strlen(payload);
    j->content_type = j->message_id = j->correlation_id = j->source = "";
    j->traceparent = j->tracestate = "";
    j->processing_time = pt;
    j->fail_times = fail_times;
    j->attempt = attempt;
}

Test(handler_echo, default_is_echo)
{
    char err[256] = "";
    rq_handler_t *h;

    cr_assert_str_eq(cfg.handler, "echo");
    cr_assert_eq(cfg.handler_timeout_ms, 30000);
    cr_assert_eq(cfg.handler_concurrency, 0);
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    cr_assert_str_eq(rq_handler_kind(h), "echo");
    cr_assert_eq(rq_handler_active(h), 0);
    rq_handler_free(h);
}

Test(handler_echo, bad_handler_is_an_error)
{
    static const char *const bad[] = {"ech", "ftp://x", "exec:", "exec:   ", "HTTP:/x", "file:/x"};
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        set_handler(bad[i]);
        cr_assert_null(rq_handler_new(&cfg, NULL, err, sizeof(err)), "%s accepted", bad[i]);
        cr_assert(strstr(err, "HANDLER") != NULL, "%s: %s", bad[i], err);
    }
}

Test(handler_echo, zero_processing_time_completes_at_next_collect)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j, *done[4];
    struct pollfd pfd[4];
    int tmo = 123;
    const char *want = RQ_REPLY_PREFIX "{\"a\":0.1}";

    cr_assert_not_null(h);
    job_init(&j, "{\"a\":0.1}", 0, 0, 0);
    cr_assert_eq(rq_handler_start(h, &j, 1000), 0);
    cr_assert_eq(rq_handler_active(h), 1);
    cr_assert_eq(rq_handler_pollfds(h, pfd, 4, 1000, &tmo), 0);
    cr_assert_eq(tmo, 0);
    cr_assert_eq(rq_handler_collect(h, 1000, done, 4), 1);
    cr_assert_eq(done[0], &j);
    cr_assert_eq(j.outcome, RQ_HANDLER_OK);
    cr_assert_eq(j.reply_len, strlen(want));
    cr_assert_eq(memcmp(j.reply, want, j.reply_len), 0);
    cr_assert_eq(j.status, 0);
    cr_assert_eq(rq_handler_active(h), 0);
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_echo, reply_keeps_nul_and_newline_bytes)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j, *done[1];
    static const char payload[] = "a\nb\0c\r";

    job_init(&j, "", 0, 0, 0);
    j.payload = payload;
    j.payload_len = sizeof(payload) - 1;
    cr_assert_eq(rq_handler_start(h, &j, 0), 0);
    cr_assert_eq(rq_handler_collect(h, 0, done, 1), 1);
    cr_assert_eq(j.reply_len, RQ_REPLY_PREFIX_LEN + sizeof(payload) - 1);
    cr_assert_eq(memcmp(j.reply + RQ_REPLY_PREFIX_LEN, payload, sizeof(payload) - 1), 0);
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_echo, reply_is_the_line_when_given)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j, *done[1];

    job_init(&j, "\"hello\"", 0, 0, 0); /* a JSON string payload; its line is its text */
    j.line = "hello";
    j.line_len = 5;
    cr_assert_eq(rq_handler_start(h, &j, 0), 0);
    cr_assert_eq(rq_handler_collect(h, 0, done, 1), 1);
    cr_assert_str_eq(j.reply, RQ_REPLY_PREFIX "hello");
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_echo, timers_overlap_and_finish_in_due_order)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j[3], *done[3];
    struct pollfd pfd[1];
    int tmo;

    job_init(&j[0], "slow", 1.0, 0, 0);
    job_init(&j[1], "fast", 0.25, 0, 0);
    job_init(&j[2], "mid", 0.5, 0, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rq_handler_start(h, &j[i], 10000), 0);
    cr_assert_eq(rq_handler_pollfds(h, pfd, 1, 10000, &tmo), 0);
    cr_assert_eq(tmo, 250);
    cr_assert_eq(rq_handler_collect(h, 10249, done, 3), 0, "nothing due before 250 ms");
    cr_assert_eq(rq_handler_collect(h, 10250, done, 3), 1);
    cr_assert_eq(done[0], &j[1]);
    cr_assert_float_eq(j[1].seconds, 0.25, 1e-9);
    rq_handler_pollfds(h, pfd, 1, 10250, &tmo);
    cr_assert_eq(tmo, 250);
    /* one collect long after: both remaining, earliest due first; 3 jobs in ~1 s, not 1.75 */
    cr_assert_eq(rq_handler_collect(h, 11000, done, 3), 2);
    cr_assert_eq(done[0], &j[2]);
    cr_assert_eq(done[1], &j[0]);
    cr_assert_eq(rq_handler_active(h), 0);
    rq_handler_pollfds(h, pfd, 1, 11000, &tmo);
    cr_assert_eq(tmo, -1);
    for (int i = 0; i < 3; i++)
        free(j[i].reply);
    rq_handler_free(h);
}

Test(handler_echo, never_before_processing_time)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j, *done[1];

    job_init(&j, "x", 0.0015, 0, 0); /* 1.5 ms: due at 2 ms, not 1 */
    cr_assert_eq(rq_handler_start(h, &j, 0), 0);
    cr_assert_eq(rq_handler_collect(h, 1, done, 1), 0);
    cr_assert_eq(rq_handler_collect(h, 2, done, 1), 1);
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_echo, same_due_in_start_order_and_max_respected)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j[5], *done[5];

    for (int i = 0; i < 5; i++) {
        job_init(&j[i], "p", 0, 0, 0);
        cr_assert_eq(rq_handler_start(h, &j[i], 7), 0);
    }
    cr_assert_eq(rq_handler_collect(h, 7, done, 2), 2);
    cr_assert_eq(done[0], &j[0]);
    cr_assert_eq(done[1], &j[1]);
    cr_assert_eq(rq_handler_collect(h, 7, done, 5), 3);
    cr_assert_eq(done[0], &j[2]);
    cr_assert_eq(done[1], &j[3]);
    cr_assert_eq(done[2], &j[4]);
    for (int i = 0; i < 5; i++)
        free(j[i].reply);
    rq_handler_free(h);
}

Test(handler_echo, fail_times_retries_with_the_simulated_failure_text)
{
    char err[256];
    rq_handler_t *h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    rq_handler_job_t j, *done[1];

    for (int attempt = 0; attempt < 3; attempt++) {
        job_init(&j, "x", 0.1, 2, attempt);
        cr_assert_eq(rq_handler_start(h, &j, 0), 0);
        cr_assert_eq(rq_handler_collect(h, 99, done, 1), 0, "fails after processing_time");
        cr_assert_eq(rq_handler_collect(h, 100, done, 1), 1);
        if (attempt < 2) {
            char want[128];

            snprintf(want, sizeof(want), "simulated failure (fail_times=2): attempt %d of 2 fails",
                     attempt + 1);
            cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
            cr_assert_str_eq(j.why, want);
            cr_assert_null(j.reply);
        } else {
            cr_assert_eq(j.outcome, RQ_HANDLER_OK);
            cr_assert_str_eq(j.reply, RQ_REPLY_PREFIX "x");
            free(j.reply);
        }
    }
    rq_handler_free(h);
}

Test(handler_echo, concurrency_defaults_to_prefetch_and_is_capped)
{
    char err[256];
    rq_handler_t *h;
    rq_handler_job_t j[4], *done[4];

    cfg.rabbitmq.prefetch = 3;
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    for (int i = 0; i < 4; i++)
        job_init(&j[i], "c", 1, 0, 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rq_handler_start(h, &j[i], 0), 0);
    cr_assert_eq(rq_handler_start(h, &j[3], 0), -1, "over PREFETCH_COUNT");
    cr_assert_eq(rq_handler_active(h), 3);
    cr_assert_eq(rq_handler_collect(h, 1000, done, 1), 1);
    free(done[0]->reply);
    cr_assert_eq(rq_handler_start(h, &j[3], 1000), 0, "a slot is free again");
    rq_handler_cancel_all(h);
    cr_assert_eq(rq_handler_active(h), 0);
    cr_assert_eq(rq_handler_collect(h, 5000, done, 4), 0, "cancelled jobs never come back");
    rq_handler_free(h);

    cfg.handler_concurrency = 1;
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_eq(rq_handler_start(h, &j[0], 0), 0);
    cr_assert_eq(rq_handler_start(h, &j[1], 0), -1, "HANDLER_CONCURRENCY=1");
    rq_handler_free(h); /* frees the running job's reply: no leak under ASan */
}

Test(handler_echo, metrics_count_duration_and_outcomes)
{
    char err[256];
    rq_metrics_t *m = rq_metrics_new();
    rq_handler_t *h = rq_handler_new(&cfg, m, err, sizeof(err));
    rq_handler_job_t j[2], *done[2];
    char *text;

    job_init(&j[0], "ok", 0.5, 0, 0);
    job_init(&j[1], "bad", 0, 1, 0);
    cr_assert_eq(rq_handler_start(h, &j[0], 0), 0);
    cr_assert_eq(rq_handler_start(h, &j[1], 0), 0);
    cr_assert_eq(rq_handler_collect(h, 500, done, 2), 2);
    text = rq_metrics_render(m, NULL);
    cr_assert_not_null(text);
    cr_assert(strstr(text, "consumer_handler_duration_seconds_count{handler=\"echo\"} 2") != NULL,
              "%s", text);
    cr_assert(
        strstr(text, "consumer_handler_duration_seconds_bucket{handler=\"echo\",le=\"0.5\"} 2") !=
            NULL,
        "%s", text);
    cr_assert(strstr(text, "consumer_handler_outcomes_total{handler=\"echo\",outcome=\"ok\","
                           "status=\"0\"} 1") != NULL,
              "%s", text);
    cr_assert(strstr(text, "consumer_handler_outcomes_total{handler=\"echo\",outcome=\"retry\","
                           "status=\"0\"} 1") != NULL,
              "%s", text);
    free(text);
    free(j[0].reply);
    rq_handler_free(h);
    rq_metrics_free(m);
}
