/* Unit tests for consumer/events.c: the lifecycle events the consumer writes to the status
 * stream (issue 17), built from a delivery's headers and what the worker knows of it. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "events.h"
#include "wire.h"

/* A delivery's decoded properties: message_id mid, x-relayq-uid uid (NULL: absent). */
static void wire_with(rq_wire_msg_t *w, const char *mid, const char *uid, const char *corr)
{
    memset(w, 0, sizeof(*w));
    if (mid != NULL) {
        w->has_message_id = 1;
        w->message_id = amqp_cstring_bytes(mid);
    }
    if (corr != NULL) {
        w->has_correlation_id = 1;
        w->correlation_id = amqp_cstring_bytes(corr);
    }
    if (uid != NULL) {
        w->uid.state = RQ_WIRE_OK;
        w->uid.v = amqp_cstring_bytes(uid);
    }
}

static rq_cev_in_t base(const rq_wire_msg_t *w, rq_sev_type_t type)
{
    rq_cev_in_t in = {.type = type,
                      .wire = w,
                      .msg_id = "body-id",
                      .queue = "requests",
                      .src = "consumer:h:1",
                      .ts_ms = 1700000000123,
                      .attempt = 0,
                      .reply_max = 4096};
    return in;
}

Test(events, delivered_names_the_message_its_uid_and_the_1_based_attempt)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;

    wire_with(&w, "m-1", "uid-1", "corr");
    in = base(&w, RQ_SEV_DELIVERED);
    in.attempt = 2; /* the third attempt (x-relayq-attempt 2) */
    in.error = "ignored";
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.type, RQ_SEV_DELIVERED);
    cr_expect_str_eq(ev.id, "m-1");
    cr_expect_str_eq(ev.uid, "uid-1");
    cr_expect_str_eq(ev.queue, "requests");
    cr_expect_str_eq(ev.src, "consumer:h:1");
    cr_expect_eq(ev.ts_ms, 1700000000123);
    cr_expect_eq(ev.attempt, 3);
    cr_expect_null(ev.error);
    cr_expect_null(ev.reply);
}

Test(events, retried_and_dead_lettered_carry_the_error_and_the_attempt)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;

    wire_with(&w, "m-2", NULL, NULL);
    in = base(&w, RQ_SEV_RETRIED);
    in.error = "simulated failure";
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.attempt, 1);
    cr_expect_str_eq(ev.error, "simulated failure");
    cr_expect_null(ev.uid, "no x-relayq-uid: no uid");
    in.type = RQ_SEV_DEAD_LETTERED;
    in.attempt = 5;
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.type, RQ_SEV_DEAD_LETTERED);
    cr_expect_eq(ev.attempt, 6);
    cr_expect_str_eq(ev.error, "simulated failure");
}

Test(events, replied_carries_the_reply_and_no_attempt)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;

    wire_with(&w, "m-3", "u", NULL);
    in = base(&w, RQ_SEV_REPLIED);
    in.reply = "Consumer processed: hi";
    in.reply_len = strlen(in.reply);
    in.attempt = 1;
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.attempt, 0);
    cr_expect_eq(ev.reply_len, in.reply_len);
    cr_expect(memcmp(ev.reply, in.reply, ev.reply_len) == 0);
    cr_expect_eq(ev.truncated, 0);
    cr_expect_eq(ev.reply_full_len, 0);
    cr_expect_null(ev.error);
}

Test(events, a_long_reply_is_cut_to_the_max_on_a_utf8_boundary)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;
    const char *r = "abc\xc3\xa9\xc3\xa9"; /* "abcéé": 7 bytes */

    wire_with(&w, "m-4", NULL, NULL);
    in = base(&w, RQ_SEV_REPLIED);
    in.reply = r;
    in.reply_len = 7;
    in.reply_max = 5;
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.truncated, 1);
    cr_expect_eq(ev.reply_full_len, 7);
    cr_expect_eq(ev.reply_len, 5);
    in.reply_max = 4; /* inside the first é: back to 3 */
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.reply_len, 3);
    cr_expect_eq(ev.truncated, 1);
    /* not UTF-8 (a raw line): cut where the max says */
    in.reply = "ab\xff\x80\x80zz";
    in.reply_len = 7;
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.reply_len, 4);
    in.reply_max = 7; /* exactly the max: whole, not cut */
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.reply_len, 7);
    cr_expect_eq(ev.truncated, 0);
    in.reply_max = 0; /* STATUS_REPLY_MAX 0: no bytes, marked cut */
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_eq(ev.reply_len, 0);
    cr_expect_null(ev.reply);
    cr_expect_eq(ev.truncated, 1);
    cr_expect_eq(ev.reply_full_len, 7);
}

Test(events, the_id_is_the_message_id_else_the_decoded_id_else_the_correlation_id)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;
    char long_id[300];

    wire_with(&w, NULL, NULL, "corr-1");
    in = base(&w, RQ_SEV_DELIVERED);
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_str_eq(ev.id, "body-id");
    in.msg_id = NULL; /* undecodable */
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_str_eq(ev.id, "corr-1");
    memset(long_id, 'i', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    in.msg_id = long_id; /* too long for an event */
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_str_eq(ev.id, "corr-1");
    wire_with(&w, "", NULL, NULL); /* an empty message_id is no id */
    in.msg_id = NULL;
    cr_expect_eq(rq_cev_build(&in, &s, &ev), -1);
    w.has_message_id = 1;
    w.message_id.bytes = "a\0b";
    w.message_id.len = 3;
    cr_expect_eq(rq_cev_build(&in, &s, &ev), -1);
}

Test(events, a_uid_of_the_wrong_kind_or_with_nul_is_left_out)
{
    rq_wire_msg_t w;
    rq_cev_strs_t s;
    rq_status_event_t ev;
    rq_cev_in_t in;

    wire_with(&w, "m", "uid", NULL);
    w.uid.state = RQ_WIRE_BAD_TYPE;
    in = base(&w, RQ_SEV_DELIVERED);
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_null(ev.uid);
    w.uid.state = RQ_WIRE_OK;
    w.uid.v.bytes = "u\0v";
    w.uid.v.len = 3;
    cr_assert_eq(rq_cev_build(&in, &s, &ev), 0);
    cr_expect_null(ev.uid);
}

Test(events, src_names_the_host_and_the_pid)
{
    char buf[300], want[64];

    rq_cev_src(buf, sizeof(buf));
    snprintf(want, sizeof(want), ":%ld", (long)getpid());
    cr_expect(strncmp(buf, "consumer:", 9) == 0, "%s", buf);
    cr_expect(strlen(buf) > strlen(want) + 9 && strcmp(buf + strlen(buf) - strlen(want), want) == 0,
              "%s", buf);
}
