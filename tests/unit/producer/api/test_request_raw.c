/* test_request_raw.c - payloads pass through the producer unchanged (issue 14): the message
 * rq_item_encode() publishes carries the payload as the bytes the client sent. Table-driven:
 * request body -> the bytes of the published payload. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

static const rq_limits_t lim = {8, 60.0, 64};

typedef struct {
    const char *name;
    const char *body;    /* POST /produce body */
    const char *payload; /* the payload's bytes in the published message */
} raw_case_t;

static const raw_case_t cases[] = {
    {"0.1 stays 0.1", "{\"payload\":0.1}", "0.1"},
    {"19.99 stays 19.99", "{\"payload\":19.99}", "19.99"},
    {"1e-7 stays 1e-7", "{\"payload\":1e-7}", "1e-7"},
    {"an exponent in capitals", "{\"payload\":1E+2}", "1E+2"},
    {"minus zero", "{\"payload\":-0}", "-0"},
    {"an integer beyond 64 bits", "{\"payload\":123456789012345678901234567890}",
     "123456789012345678901234567890"},
    {"a negative integer beyond 64 bits", "{\"payload\":-98765432109876543210987654321}",
     "-98765432109876543210987654321"},
    {"escapes as sent", "{\"payload\":\"caf\\u00e9\"}", "\"caf\\u00e9\""},
    {"a surrogate pair and an escaped slash", "{\"payload\":\"\\ud83d\\ude00 \\/\"}",
     "\"\\ud83d\\ude00 \\/\""},
    {"UTF-8 as sent", "{\"payload\":\"caf\xC3\xA9\"}", "\"caf\xC3\xA9\""},
    {"a string with \\n", "{\"payload\":\"line1\\nline2\"}", "\"line1\\nline2\""},
    {"a nested object with odd whitespace",
     "{ \"id\" : \"n1\" ,\n  \"payload\" :\t{ \"b\" : [ 1 ,2.50, {\"c\" :null} ] ,\n\"a\":{}}  ,"
     "\"processing_time\" : 0 }",
     "{ \"b\" : [ 1 ,2.50, {\"c\" :null} ] ,\n\"a\":{}}"},
    {"a number inside an object keeps its text", "{\"payload\":{\"price\":19.99,\"n\":1e400}}",
     NULL}, /* 1e400 overflows a double: jansson refuses it (see below) */
    {"brackets and quotes inside strings", "{\"payload\":[\"]\",\"}\\\"{\",{\"k\":\"[\"}]}",
     "[\"]\",\"}\\\"{\",{\"k\":\"[\"}]"},
    {"the key written with an escape", "{\"pay\\u006coad\":0.1,\"id\":\"k\"}", "0.1"},
    {"payload after the other members", "{\"id\":\"x\",\"fail_times\":1,\"payload\":true}", "true"},
    {"null", "{\"payload\":null}", "null"},
    {"an empty string", "{\"payload\":\"\"}", "\"\""},
};

/* The bytes of the payload in the published message of item 0 of body: its text after
 * `"payload":` up to `,"processing_time"` (the encoder's member order). */
static char *published_payload(const char *body, int batch, size_t item, rq_request_error_t *err)
{
    rq_request_t req;
    char *text, *a, *b, *out = NULL;
    size_t len = 0;

    if (rq_request_parse(body, strlen(body), batch, &lim, &req, err) != 0)
        return NULL;
    text = rq_item_encode(&req.items[item], "2026-12-01T00:00:00.000Z", &len);
    cr_assert_not_null(text);
    cr_assert_eq(len, strlen(text));
    a = strstr(text, ",\"payload\":");
    b = a != NULL ? strstr(a, ",\"processing_time\":") : NULL;
    /* the last ",\"processing_time\":" : a string payload may hold the same text */
    while (b != NULL && strstr(b + 1, ",\"processing_time\":") != NULL)
        b = strstr(b + 1, ",\"processing_time\":");
    if (a != NULL && b != NULL) {
        a += strlen(",\"payload\":");
        out = strndup(a, (size_t)(b - a));
    }
    free(text);
    rq_request_clear(&req);
    return out;
}

Test(request_raw, payload_bytes_as_sent)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const raw_case_t *c = &cases[i];
        rq_request_error_t err = {0};
        char *got = published_payload(c->body, 0, 0, &err);

        if (c->payload == NULL) {
            cr_expect_null(got, "[%s] accepted", c->name);
            free(got);
            continue;
        }
        cr_expect_not_null(got, "[%s] refused: %u %s", c->name, err.status, err.text);
        if (got != NULL)
            cr_expect_str_eq(got, c->payload, "[%s] published payload %s, sent %s", c->name, got,
                             c->payload);
        free(got);
    }
}

Test(request_raw, batch_items_keep_their_own_bytes)
{
    const char *body = "{\"messages\":[{\"payload\":0.1},\n {\"id\":\"b\", \"payload\" : [ 1e-7 ]},"
                       "{\"payload\":\"x\\ty\",\"fail_times\":0}], \"wait\":false}";
    const char *want[] = {"0.1", "[ 1e-7 ]", "\"x\\ty\""};

    for (size_t i = 0; i < 3; i++) {
        rq_request_error_t err = {0};
        char *got = published_payload(body, 1, i, &err);

        cr_assert_not_null(got, "item %zu: %s", i, err.text);
        cr_expect_str_eq(got, want[i], "item %zu", i);
        free(got);
    }
}

Test(request_raw, the_message_is_json_with_every_field)
{
    const char *body = "{\"payload\":123456789012345678901234567890,\"id\":\"big\","
                       "\"processing_time\":0.5,\"fail_times\":3}";
    rq_request_t req;
    rq_request_error_t err;
    char *text;
    size_t len = 0;

    cr_assert_eq(rq_request_parse(body, strlen(body), 0, &lim, &req, &err), 0, "%s", err.text);
    text = rq_item_encode(&req.items[0], "2026-12-01T00:00:00.000Z", &len);
    cr_assert_not_null(text);
    cr_expect_str_eq(text, "{\"id\":\"big\",\"payload\":123456789012345678901234567890,"
                           "\"processing_time\":0.5,\"timestamp\":\"2026-12-01T00:00:00.000Z\","
                           "\"source\":\"api\",\"fail_times\":3}");
    free(text);
    rq_request_clear(&req);
}

/* fail_times keeps its rule under JSON_DECODE_INT_AS_REAL: an integer literal, 0..100. */
Test(request_raw, fail_times_must_be_written_as_an_integer)
{
    static const struct {
        const char *ft;
        int ok;
        long long want;
    } ft[] = {{"2", 1, 2},    {"0", 1, 0},   {"100", 1, 100},
              {"-0", 1, 0},   {"2.0", 0, 0}, {"1e1", 0, 0},
              {"101", 0, 0},  {"-1", 0, 0},  {"\"2\"", 0, 0},
              {"true", 0, 0}, {"1.5", 0, 0}, {"123456789012345678901234567890", 0, 0}};

    for (size_t i = 0; i < sizeof(ft) / sizeof(ft[0]); i++) {
        char body[128];
        rq_request_t req;
        rq_request_error_t err;
        int rc;

        snprintf(body, sizeof(body), "{\"payload\":1,\"fail_times\":%s}", ft[i].ft);
        rc = rq_request_parse(body, strlen(body), 0, &lim, &req, &err);
        cr_expect_eq(rc, ft[i].ok ? 0 : -1, "fail_times %s: rc %d (%s)", ft[i].ft, rc,
                     rc ? err.text : "-");
        if (rc == 0) {
            cr_expect_eq(req.items[0].fail_times, ft[i].want, "fail_times %s", ft[i].ft);
            rq_request_clear(&req);
        } else {
            cr_expect(strstr(err.text, "fail_times") != NULL, "%s", err.text);
        }
    }
}

/* Found by fuzz_request (make test, CI): jansson reads a raw NUL byte in a body as the end of
 * the text, so `{"payload":2<NUL>}` parsed, and the payload's raw span carried the NUL into
 * the published message (its text no longer what strlen says). JSON text cannot hold a raw
 * NUL (inside strings it is \u0000): such a body is a 400, whatever follows the NUL. */
Test(request_raw, a_raw_nul_byte_in_the_body_is_400)
{
    static const char body[] = "{ \t\t\"payload\":2\0}    ";
    static const char batch[] = "{\"messages\":[{\"payload\":\"a\"}\0]}";
    rq_request_t req;
    rq_request_error_t err;

    cr_expect_neq(rq_request_parse(body, sizeof(body) - 1, 0, &lim, &req, &err), 0,
                  "a NUL in a single produce body is refused");
    cr_expect_eq(err.status, 400);
    cr_expect(strstr(err.text, "NUL") != NULL, "%s", err.text);
    cr_expect_neq(rq_request_parse(batch, sizeof(batch) - 1, 1, &lim, &req, &err), 0,
                  "and in a batch");
    cr_expect_eq(err.status, 400);
}
