/* Unit tests for the per-queue topology (common/amqp_conn: rq_queue_spec_t, the delay
 * buckets) and the queue admin's argument comparison (producer/queues/qadmin.c). No broker:
 * the arguments are what RabbitMQ gets; the integration test test_queues_admin.py declares
 * them against a real one. */
#include <amqp.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "amqp_conn.h"
#include "qadmin.h"
#include "qname.h"

TestSuite(qadmin_args, .timeout = 10);

static const amqp_field_value_t *arg(const amqp_table_entry_t *a, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (a[i].key.len == strlen(key) && memcmp(a[i].key.bytes, key, a[i].key.len) == 0)
            return &a[i].value;
    return NULL;
}

static int is_str(const amqp_field_value_t *v, const char *s)
{
    return v != NULL && v->kind == AMQP_FIELD_KIND_UTF8 && v->value.bytes.len == strlen(s) &&
           memcmp(v->value.bytes.bytes, s, strlen(s)) == 0;
}

static int is_int(const amqp_field_value_t *v, long long x)
{
    return v != NULL && v->kind == AMQP_FIELD_KIND_I64 && v->value.i64 == x;
}

/* The default queue's topology is today's: exactly these arguments, no relayq ones. */
Test(qadmin_args, default_queue_unchanged)
{
    RabbitMQConfig cfg;
    rq_queue_spec_t s;
    amqp_table_entry_t a[RQ_QUEUE_ARGS_MAX];
    char dlq[300];
    int n;

    memset(&cfg, 0, sizeof(cfg));
    cfg.request_queue = "request_queue";
    cfg.queue_type = "quorum";
    cfg.queue_type_id = RQ_QUEUE_QUORUM;
    cfg.max_retries = 5;
    cfg.retry_base_ms = 1000;
    rq_amqp_spec_of_config(&cfg, &s);
    n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    cr_expect_eq(n, 6, "got %d arguments", n);
    cr_expect(is_str(arg(a, n, "x-queue-type"), "quorum"));
    cr_expect(is_str(arg(a, n, "x-dead-letter-exchange"), ""));
    cr_expect(is_str(arg(a, n, "x-dead-letter-routing-key"), "request_queue.dlq"));
    cr_expect(is_int(arg(a, n, "x-delivery-limit"), RQ_QUORUM_DELIVERY_LIMIT));
    cr_expect(is_str(arg(a, n, "x-dead-letter-strategy"), "at-least-once"));
    cr_expect(is_str(arg(a, n, "x-overflow"), "reject-publish"));
    cr_expect_null(arg(a, n, "x-relayq-queue"));

    n = rq_amqp_queue_args(&s, RQ_QROLE_RETRY, 3, a, dlq, sizeof(dlq));
    cr_expect_eq(n, 6);
    cr_expect(is_int(arg(a, n, "x-message-ttl"), 4000));
    cr_expect(is_str(arg(a, n, "x-dead-letter-routing-key"), "request_queue"));
    n = rq_amqp_queue_args(&s, RQ_QROLE_DLQ, 0, a, dlq, sizeof(dlq));
    cr_expect_eq(n, 1);

    cfg.queue_type = "classic";
    cfg.queue_type_id = RQ_QUEUE_CLASSIC;
    rq_amqp_spec_of_config(&cfg, &s);
    n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    cr_expect_eq(n, 3, "classic default queue: type and dead-lettering only, got %d", n);
}

Test(qadmin_args, service_queue_options)
{
    rq_queue_spec_t s = {.name = "orders",
                         .type = "classic",
                         .max_priority = 7,
                         .max_length = 1000,
                         .message_ttl_ms = 60000,
                         .max_retries = 2,
                         .retry_base_ms = 250,
                         .service = 1};
    amqp_table_entry_t a[RQ_QUEUE_ARGS_MAX];
    char dlq[300];
    const amqp_field_value_t *v;
    int n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));

    cr_assert_leq(n, RQ_QUEUE_ARGS_MAX);
    cr_expect(is_int(arg(a, n, "x-max-priority"), 7));
    cr_expect(is_int(arg(a, n, "x-max-length"), 1000));
    cr_expect(is_str(arg(a, n, "x-overflow"), "reject-publish"), "a full queue refuses");
    cr_expect(is_int(arg(a, n, "x-message-ttl"), 60000));
    cr_expect(is_int(arg(a, n, "x-relayq-max-retries"), 2));
    cr_expect(is_int(arg(a, n, "x-relayq-retry-base-ms"), 250));
    v = arg(a, n, "x-relayq-queue");
    cr_expect(v != NULL && v->kind == AMQP_FIELD_KIND_BOOLEAN && v->value.boolean);
    cr_expect_null(arg(a, n, "x-delivery-limit"), "classic: no delivery limit");
    cr_expect(is_str(arg(a, n, "x-dead-letter-routing-key"), "orders.dlq"));

    /* quorum with max_length: one x-overflow only */
    s.type = "quorum";
    s.max_priority = 0;
    n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    int overflow = 0;
    for (int i = 0; i < n; i++)
        overflow += a[i].key.len == 10 && memcmp(a[i].key.bytes, "x-overflow", 10) == 0;
    cr_expect_eq(overflow, 1);
    n = rq_amqp_queue_args(&s, RQ_QROLE_RETRY, 2, a, dlq, sizeof(dlq));
    cr_expect(is_int(arg(a, n, "x-message-ttl"), 500));
}

Test(qadmin_args, delay_bucket)
{
    amqp_table_entry_t a[RQ_QUEUE_ARGS_MAX];
    int n = rq_amqp_delay_queue_args("orders", "quorum", 1300, a);

    cr_expect(is_int(arg(a, n, "x-message-ttl"), 1300));
    cr_expect(is_str(arg(a, n, "x-dead-letter-routing-key"), "orders"));
    cr_expect(is_str(arg(a, n, "x-dead-letter-exchange"), ""));
    cr_expect(is_int(arg(a, n, "x-expires"), 1300 + RQ_DELAY_QUEUE_IDLE_MS));
    cr_expect(is_str(arg(a, n, "x-dead-letter-strategy"), "at-least-once"));
    cr_expect(is_str(arg(a, n, "x-queue-type"), "quorum"));
    n = rq_amqp_delay_queue_args("orders", "classic", 5, a);
    cr_expect_null(arg(a, n, "x-dead-letter-strategy"));
    char err[100];
    cr_expect_eq(rq_amqp_declare_delay_queue(NULL, 1, "orders", "classic", 0, err, sizeof(err)), -1,
                 "bucket 0 is refused before any broker call");
    /* the longest delay (86400000) has bucket 87000000 (two significant digits, rounded up):
     * that one is declared; only a larger one is refused */
    cr_expect_eq(RQ_DELAY_BUCKET_MAX_MS, rq_qname_delay_bucket(86400000));
    cr_expect_eq(rq_amqp_declare_delay_queue(NULL, 1, "orders", "classic",
                                             RQ_DELAY_BUCKET_MAX_MS + 1, err, sizeof(err)),
                 -1);
}

Test(qadmin_args, differ_names_the_argument)
{
    rq_queue_spec_t s = {.name = "fixq",
                         .type = "classic",
                         .max_priority = 5,
                         .max_retries = 3,
                         .retry_base_ms = 500,
                         .service = 1};
    amqp_table_entry_t a[RQ_QUEUE_ARGS_MAX];
    char dlq[300], w[100], c[100];
    /* as the management API of RabbitMQ 3.10.8 shows it (captured) */
    json_t *have =
        json_loads("{\"x-dead-letter-exchange\":\"\",\"x-dead-letter-routing-key\":\"fixq.dlq\","
                   "\"x-max-priority\":5,\"x-queue-type\":\"classic\",\"x-relayq-max-retries\":3,"
                   "\"x-relayq-queue\":true,\"x-relayq-retry-base-ms\":500}",
                   0, NULL);
    int n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    const char *d;

    cr_assert_not_null(have);
    cr_expect_null(rq_qadmin_args_differ(a, n, have, w, sizeof(w), c, sizeof(c)));
    s.max_retries = 4;
    n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    d = rq_qadmin_args_differ(a, n, have, w, sizeof(w), c, sizeof(c));
    cr_expect(d != NULL && strncmp(d, "x-relayq-max-retries", 20) == 0);
    cr_expect_str_eq(w, "4");
    cr_expect_str_eq(c, "3");
    s.max_retries = 3;
    s.max_priority = 0;
    n = rq_amqp_queue_args(&s, RQ_QROLE_MAIN, 0, a, dlq, sizeof(dlq));
    d = rq_qadmin_args_differ(a, n, have, w, sizeof(w), c, sizeof(c));
    cr_expect(d != NULL && strcmp(d, "x-max-priority") == 0, "an extra argument there");
    cr_expect_str_eq(w, "absent");
    json_decref(have);
}

Test(qadmin_args, refused_arg)
{
    char a[64];

    cr_expect_eq(rq_qadmin_refused_arg("inequivalent arg 'x-max-length' for queue 'qq' in vhost "
                                       "'/': received '101' but current is '100'",
                                       a, sizeof(a)),
                 0);
    cr_expect_str_eq(a, "x-max-length");
    cr_expect_eq(rq_qadmin_refused_arg("invalid arg 'x-max-priority' for queue 'q'", a, sizeof(a)),
                 0);
    cr_expect_str_eq(a, "x-max-priority");
    cr_expect_eq(rq_qadmin_refused_arg("something else", a, sizeof(a)), -1);
}

Test(qadmin_args, settings)
{
    json_t *args = json_loads("{\"x-max-priority\":5,\"x-queue-type\":\"classic\","
                              "\"x-relayq-max-retries\":3,\"x-relayq-retry-base-ms\":500}",
                              0, NULL);
    json_t *s = rq_qadmin_settings(args, NULL);

    cr_assert_not_null(s);
    cr_expect_str_eq(json_string_value(json_object_get(s, "type")), "classic");
    cr_expect_eq(json_integer_value(json_object_get(s, "max_priority")), 5);
    cr_expect(json_is_null(json_object_get(s, "max_length")));
    cr_expect_eq(json_integer_value(json_object_get(s, "max_retries")), 3);
    cr_expect_eq(json_integer_value(json_object_get(s, "retry_base_ms")), 500);
    json_decref(s);
    json_decref(args);
}
