/* Unit tests for common/trace.c (W3C trace context). */
#include <criterion/criterion.h>
#include <string.h>

#include "trace.h"

TestSuite(trace, .timeout = 30);

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int valid(const char *s)
{
    return rq_traceparent_valid(s, strlen(s));
}

Test(trace, traceparent_validation_follows_the_spec)
{
    cr_expect(valid(TP));
    cr_expect(valid("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"));
    cr_expect(!valid("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace id");
    cr_expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "zero parent");
    cr_expect(!valid("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version ff");
    cr_expect(!valid("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "uppercase");
    cr_expect(!valid(TP "-x"), "version 00 has exactly 55 characters");
    cr_expect(valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"),
              "a later version may append fields");
    cr_expect(!valid("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
    cr_expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01"));
    cr_expect(!valid("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"), "short");
    cr_expect(!valid(""));
    cr_expect(!rq_traceparent_valid(NULL, 0));
}

Test(trace, tracestate_is_bounded_printable_ascii)
{
    char big[RQ_TRACESTATE_MAX + 2];

    cr_expect(rq_tracestate_valid("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", 39));
    cr_expect(!rq_tracestate_valid("", 0));
    cr_expect(!rq_tracestate_valid("a=b\r\nx-evil: 1", 14), "no CR/LF (header injection)");
    cr_expect(!rq_tracestate_valid("a=\xc3\xa9", 4), "ASCII only");
    memset(big, 'a', sizeof(big));
    cr_expect(rq_tracestate_valid(big, RQ_TRACESTATE_MAX));
    cr_expect(!rq_tracestate_valid(big, RQ_TRACESTATE_MAX + 1));
}

Test(trace, a_child_keeps_the_trace_and_flags_with_a_new_parent_id)
{
    char a[RQ_TRACEPARENT_LEN + 1], b[RQ_TRACEPARENT_LEN + 1];

    rq_traceparent_child(TP, strlen(TP), a);
    rq_traceparent_child(TP, strlen(TP), b);
    cr_expect(valid(a), "%s", a);
    cr_expect_eq(memcmp(a, TP, 36), 0, "same version and trace id: %s", a);
    cr_expect_eq(memcmp(a + 52, "-01", 3), 0, "the caller's flags");
    cr_expect_neq(memcmp(a + 36, TP + 36, 16), 0, "a new parent id");
    cr_expect_neq(memcmp(a + 36, b + 36, 16), 0, "each span its own id");
}

Test(trace, no_or_a_bad_parent_starts_a_new_sampled_trace)
{
    char a[RQ_TRACEPARENT_LEN + 1], b[RQ_TRACEPARENT_LEN + 1];

    rq_traceparent_child(NULL, 0, a);
    rq_traceparent_child("garbage", 7, b);
    cr_expect(valid(a), "%s", a);
    cr_expect(valid(b), "%s", b);
    cr_expect_neq(memcmp(a + 3, b + 3, 32), 0, "two new traces");
    cr_expect_eq(strcmp(a + 52, "-01"), 0);
}
