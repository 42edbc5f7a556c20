/* test_lease_fwd.c - the wire format of forwarded lease operations (lease_fwd.h): what one
 * replica encodes the other decodes, and a request from an untrusted publisher is checked. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "lease_fwd.h"

static rq_lease_job_t sample(void)
{
    rq_lease_job_t j;

    memset(&j, 0, sizeof(j));
    j.kind = RQ_LJ_NACK;
    snprintf(j.queue, sizeof(j.queue), "orders.eu");
    snprintf(j.lease_id, sizeof(j.lease_id), "0123abcd-0123456789abcdef0123456789abcdef");
    snprintf(j.msgid, sizeof(j.msgid), "m-\"1\"\\x");
    snprintf(j.reason, sizeof(j.reason), "bad \xc3\xa9 data");
    j.requeue = 1;
    j.delay_ms = 1500;
    j.lease_s = 45;
    return j;
}

Test(lease_fwd, round_trip)
{
    rq_lease_job_t in = sample(), out;
    char *text = rq_lease_fwd_encode(&in);

    cr_assert_not_null(text);
    memset(&out, 0, sizeof(out));
    cr_assert_eq(rq_lease_fwd_decode(text, strlen(text), &out), 0, "%s", text);
    cr_expect_eq(out.kind, RQ_LJ_NACK);
    cr_expect_str_eq(out.queue, in.queue);
    cr_expect_str_eq(out.lease_id, in.lease_id);
    cr_expect_str_eq(out.msgid, in.msgid);
    cr_expect_str_eq(out.reason, in.reason);
    cr_expect_eq(out.requeue, 1);
    cr_expect_eq(out.delay_ms, 1500);
    cr_expect_eq(out.lease_s, 45);
    free(text);
    for (int k = RQ_LJ_ACK; k <= RQ_LJ_EXTEND; k++) {
        in.kind = (rq_lease_kind_t)k;
        text = rq_lease_fwd_encode(&in);
        cr_assert_eq(rq_lease_fwd_decode(text, strlen(text), &out), 0);
        cr_expect_eq(out.kind, (rq_lease_kind_t)k);
        free(text);
    }
}

Test(lease_fwd, untrusted_requests_are_refused)
{
    static const char *const bad[] = {
        "",
        "[]",
        "{\"kind\":\"pull\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
        "{\"kind\":\"ack\",\"queue\":5,\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
        "{\"kind\":\"ack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":false,\"delay_ms\":-1,\"lease_s\":0}",
        "{\"kind\":\"ack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":false,\"delay_ms\":0,\"lease_s\":99999}",
        "{\"kind\":\"ack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\\u0000x\",\"reason\":"
        "\"\",\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
        "{\"kind\":\"ack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":0,\"delay_ms\":0,\"lease_s\":0}",
        "{\"kind\":\"lease\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\",\"reason\":\"\","
        "\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
        "{\"kind\":\"ack\",\"kind\":\"nack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"m\","
        "\"reason\":\"\",\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
    };
    char big[400];
    rq_lease_job_t out;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&out, 0, sizeof(out));
        cr_expect_eq(rq_lease_fwd_decode(bad[i], strlen(bad[i]), &out), -1, "case %zu", i);
    }
    /* a message id longer than the field */
    memset(big, 'a', sizeof(big));
    char text[1000];
    snprintf(text, sizeof(text),
             "{\"kind\":\"ack\",\"queue\":\"q\",\"lease_id\":\"l\",\"msgid\":\"%.*s\","
             "\"reason\":\"\",\"requeue\":false,\"delay_ms\":0,\"lease_s\":0}",
             (int)sizeof(big), big);
    cr_expect_eq(rq_lease_fwd_decode(text, strlen(text), &out), -1);
}
