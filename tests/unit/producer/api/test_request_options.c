/* test_request_options.c - the per-message options of issue 16 (priority, ttl_ms, delay_ms,
 * headers), the "either" body of POST /queues/{id}/messages and raw bodies: every case
 * through both parsers (rq_request_parse and rq_request_parse_fast), which must agree. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "request.h"

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const rq_limits_t lim = {8, 60.0, 64};

typedef struct {
    const char *body;
    int batch;        /* 0, 1, RQ_PARSE_AUTO */
    unsigned status;  /* 0: accepted */
    const char *text; /* a substring of the refusal */
    int priority;     /* item 0, when accepted */
    long long ttl, delay;
    size_t nheaders;
} opt_case_t;

#define H32                                                                                        \
    "\"a1\":\"v\",\"a2\":\"v\",\"a3\":\"v\",\"a4\":\"v\",\"a5\":\"v\",\"a6\":\"v\",\"a7\":\"v\","  \
    "\"a8\":\"v\",\"a9\":\"v\",\"b1\":\"v\",\"b2\":\"v\",\"b3\":\"v\",\"b4\":\"v\",\"b5\":\"v\","  \
    "\"b6\":\"v\",\"b7\":\"v\",\"b8\":\"v\",\"b9\":\"v\",\"c1\":\"v\",\"c2\":\"v\",\"c3\":\"v\","  \
    "\"c4\":\"v\",\"c5\":\"v\",\"c6\":\"v\",\"c7\":\"v\",\"c8\":\"v\",\"c9\":\"v\",\"d1\":\"v\","  \
    "\"d2\":\"v\",\"d3\":\"v\",\"d4\":\"v\",\"d5\":\"v\""

static const opt_case_t cases[] = {
    {"{\"payload\":1}", 0, 0, NULL, -1, 0, 0, 0},
    {"{\"payload\":1,\"priority\":0}", 0, 0, NULL, 0, 0, 0, 0},
    {"{\"payload\":1,\"priority\":255}", 0, 0, NULL, 255, 0, 0, 0},
    {"{\"payload\":1,\"priority\":256}", 0, 400, "\"priority\" must be an integer from 0 to 255"},
    {"{\"payload\":1,\"priority\":-1}", 0, 400, "\"priority\""},
    {"{\"payload\":1,\"priority\":1.0}", 0, 400, "\"priority\""},
    {"{\"payload\":1,\"priority\":1e1}", 0, 400, "\"priority\""},
    {"{\"payload\":1,\"priority\":\"5\"}", 0, 400, "\"priority\""},
    {"{\"payload\":1,\"priority\":null}", 0, 400, "\"priority\""},
    {"{\"payload\":1,\"ttl_ms\":1}", 0, 0, NULL, -1, 1, 0, 0},
    {"{\"payload\":1,\"ttl_ms\":2147483647}", 0, 0, NULL, -1, 2147483647LL, 0, 0},
    {"{\"payload\":1,\"ttl_ms\":2147483648}", 0, 400, "\"ttl_ms\" must be an integer from 1"},
    {"{\"payload\":1,\"ttl_ms\":0}", 0, 400, "\"ttl_ms\""},
    {"{\"payload\":1,\"ttl_ms\":true}", 0, 400, "\"ttl_ms\""},
    {"{\"payload\":1,\"delay_ms\":1}", 0, 0, NULL, -1, 0, 1, 0},
    {"{\"payload\":1,\"delay_ms\":86400000}", 0, 0, NULL, -1, 0, 86400000LL, 0},
    {"{\"payload\":1,\"delay_ms\":86400001}", 0, 400, "\"delay_ms\" must be an integer from 1"},
    {"{\"payload\":1,\"delay_ms\":0}", 0, 400, "\"delay_ms\""},
    {"{\"payload\":1,\"delay_ms\":[1]}", 0, 400, "\"delay_ms\""},
    {"{\"payload\":1,\"delay_ms\":10,\"ttl_ms\":10}", 0, 400, "cannot be combined"},
    {"{\"payload\":1,\"headers\":{}}", 0, 0, NULL, -1, 0, 0, 0},
    {"{\"payload\":1,\"headers\":{\"a\":\"b\",\"X-Trace\":\"c d\"}}", 0, 0, NULL, -1, 0, 0, 2},
    {"{\"payload\":1,\"headers\":{\"e\":\"caf\\u00e9\"}}", 0, 0, NULL, -1, 0, 0, 1},
    {"{\"payload\":1,\"headers\":[]}", 0, 400, "\"headers\" must be an object"},
    {"{\"payload\":1,\"headers\":\"a\"}", 0, 400, "\"headers\" must be an object"},
    {"{\"payload\":1,\"headers\":{\"a\":1}}", 0, 400, "header \"a\" must have a string value"},
    {"{\"payload\":1,\"headers\":{\"a\":null}}", 0, 400, "header \"a\" must have a string"},
    {"{\"payload\":1,\"headers\":{\"x-relayq-uid\":\"u\"}}", 0, 400,
     "header \"x-relayq-uid\" is reserved: relayq's own x-relayq-* space"},
    {"{\"payload\":1,\"headers\":{\"X-RelayQ-Attempt\":\"1\"}}", 0, 400, "is reserved"},
    /* RabbitMQ's sender-selected distribution: a string CC closes the publishing channel */
    {"{\"payload\":1,\"headers\":{\"CC\":\"q2\"}}", 0, 400,
     "header \"CC\" is reserved: the broker's sender-selected distribution"},
    {"{\"payload\":1,\"headers\":{\"BCC\":\"q2\"}}", 0, 400, "header \"BCC\" is reserved"},
    {"{\"payload\":1,\"headers\":{\"bcc\":\"q2\"}}", 0, 400, "is reserved"},
    {"{\"payload\":1,\"headers\":{\"CCX\":\"q2\",\"xCC\":\"1\"}}", 0, 0, NULL, -1, 0, 0, 2},
    {"{\"payload\":1,\"headers\":{\"x-death\":\"u\"}}", 0, 400, "dead-letter history"},
    {"{\"payload\":1,\"headers\":{\"x-first-death-queue\":\"u\"}}", 0, 400, "dead-letter"},
    {"{\"payload\":1,\"headers\":{\"x-last-death-reason\":\"u\"}}", 0, 400, "dead-letter"},
    {"{\"payload\":1,\"headers\":{\"x-delay\":\"5\"}}", 0, 400, "x-delay"},
    {"{\"payload\":1,\"headers\":{\"x-published-ms\":\"5\"}}", 0, 400, "relayq sets itself"},
    {"{\"payload\":1,\"headers\":{\"traceparent\":\"5\"}}", 0, 400, "relayq sets itself"},
    {"{\"payload\":1,\"headers\":{\"x-deathstar\":\"5\"}}", 0, 400, "dead-letter"},
    {"{\"payload\":1,\"headers\":{\"x-relay\":\"fine\"}}", 0, 0, NULL, -1, 0, 0, 1},
    {"{\"payload\":1,\"headers\":{\"\":\"v\"}}", 0, 400, "a header name must be 1 to 128"},
    {"{\"payload\":1,\"headers\":{\"a b\":\"v\"}}", 0, 400, "a header name must be"},
    {"{\"payload\":1,\"headers\":{\"caf\\u00e9\":\"v\"}}", 0, 400, "a header name must be"},
    {"{\"payload\":1,\"headers\":{" H32 "}}", 0, 0, NULL, -1, 0, 0, 32},
    {"{\"payload\":1,\"headers\":{" H32 ",\"z\":\"v\"}}", 0, 400, "at most 32 headers"},
    {"{\"payload\":1,\"headers\":{\"a\":\"1\",\"a\":\"2\"}}", 0, 400, "duplicate"},
    /* in a batch, per item, named by index */
    {"{\"messages\":[{\"payload\":1,\"priority\":3},{\"payload\":2,\"priority\":300}]}", 1, 400,
     "messages[1]: \"priority\""},
    {"{\"messages\":[{\"payload\":1,\"headers\":{\"a\":\"b\"},\"delay_ms\":5}]}", 1, 0, NULL, -1, 0,
     5, 1},
    /* either: POST /queues/{id}/messages */
    {"{\"payload\":1,\"priority\":7}", RQ_PARSE_AUTO, 0, NULL, 7, 0, 0, 0},
    {"{\"messages\":[{\"payload\":1,\"ttl_ms\":9}]}", RQ_PARSE_AUTO, 0, NULL, -1, 9, 0, 0},
    {"{\"messages\":[{\"payload\":1}],\"payload\":2}", RQ_PARSE_AUTO, 0, NULL, -1, 0, 0, 0},
    {"{\"messages\":[]}", RQ_PARSE_AUTO, 400, "\"messages\" must not be empty"},
    {"{\"id\":\"x\"}", RQ_PARSE_AUTO, 400, "\"payload\" is required"},
    /* unknown members are ignored, as before */
    {"{\"payload\":1,\"prio\":\"x\",\"header\":1}", 0, 0, NULL, -1, 0, 0, 0},
};

static void check_case(const opt_case_t *k, int fast)
{
    rq_request_t r;
    rq_request_error_t e;
    int rc;

    memset(&e, 0, sizeof(e));
    rc = fast ? rq_request_parse_fast(k->body, strlen(k->body), k->batch, &lim, &r, &e)
              : rq_request_parse(k->body, strlen(k->body), k->batch, &lim, &r, &e);
    if (k->status != 0) {
        cr_expect_eq(rc, -1, "%s (fast %d): accepted", k->body, fast);
        cr_expect_eq(e.status, k->status, "%s (fast %d): %u %s", k->body, fast, e.status, e.text);
        cr_expect(strstr(e.text, k->text) != NULL, "%s (fast %d): text %s", k->body, fast, e.text);
        return;
    }
    cr_assert_eq(rc, 0, "%s (fast %d): refused: %s", k->body, fast, e.text);
    cr_expect_eq(r.items[0].priority, k->priority, "%s: priority %d", k->body, r.items[0].priority);
    cr_expect_eq(r.items[0].ttl_ms, k->ttl, "%s", k->body);
    cr_expect_eq(r.items[0].delay_ms, k->delay, "%s", k->body);
    cr_expect_eq(r.items[0].nheaders, k->nheaders, "%s: %zu headers", k->body, r.items[0].nheaders);
    rq_request_clear(&r);
}

Test(request_options, table_both_parsers)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check_case(&cases[i], 0);
        check_case(&cases[i], 1);
    }
}

Test(request_options, headers_values_and_order)
{
    const char *body = "{\"payload\":1,\"headers\":{\"zeta\":\"1\",\"Alpha\":\"two words\","
                       "\"m\":\"caf\xc3\xa9\"}}";
    for (int fast = 0; fast < 2; fast++) {
        rq_request_t r;
        rq_request_error_t e;
        int rc = fast ? rq_request_parse_fast(body, strlen(body), 0, &lim, &r, &e)
                      : rq_request_parse(body, strlen(body), 0, &lim, &r, &e);
        cr_assert_eq(rc, 0);
        cr_assert_eq(r.items[0].nheaders, 3);
        cr_expect_str_eq(r.items[0].headers[0].name, "zeta");
        cr_expect_str_eq(r.items[0].headers[1].name, "Alpha"); /* JSON names kept as sent */
        cr_expect_str_eq(r.items[0].headers[1].value, "two words");
        cr_expect_str_eq(r.items[0].headers[2].value, "caf\xc3\xa9");
        cr_expect_eq(r.items[0].headers[2].value_len, 5);
        rq_request_clear(&r);
    }
}

Test(request_options, auto_resolves_batch)
{
    rq_request_t r;
    rq_request_error_t e;
    const char *b = "{\"messages\":[{\"payload\":1},{\"payload\":2}]}";

    cr_assert_eq(rq_request_parse_fast(b, strlen(b), RQ_PARSE_AUTO, &lim, &r, &e), 0);
    cr_expect_eq(r.batch, 1);
    cr_expect_eq(r.n, 2);
    rq_request_clear(&r);
    cr_assert_eq(rq_request_parse(b, strlen(b), RQ_PARSE_AUTO, &lim, &r, &e), 0);
    cr_expect_eq(r.batch, 1);
    rq_request_clear(&r);
    b = "{\"payload\":{\"messages\":[1]}}";
    cr_assert_eq(rq_request_parse_fast(b, strlen(b), RQ_PARSE_AUTO, &lim, &r, &e), 0);
    cr_expect_eq(r.batch, 0);
    rq_request_clear(&r);
}

/* ---- raw bodies ---- */

Test(request_raw_body, bytes_verbatim_with_options)
{
    const char body[] = {'a', '\0', '\xff', '\n', 'b'};
    rq_wire_header_t h[2] = {{(char *)"Color", (char *)"red", 3}, {(char *)"k", (char *)"", 0}};
    rq_raw_opts_t o = {"application/octet-stream", "mid-1", "9", "1500", NULL, h, 2};
    rq_request_t r;
    rq_request_error_t e;

    cr_assert_eq(rq_request_raw(body, sizeof(body), &o, &r, &e), 0, "%s", e.text);
    cr_expect_eq(r.n, 1);
    cr_expect_eq(r.items[0].payload_raw_len, sizeof(body));
    cr_expect(memcmp(r.items[0].payload_raw, body, sizeof(body)) == 0);
    cr_expect_str_eq(r.items[0].content_type, "application/octet-stream");
    cr_expect_str_eq(r.items[0].id, "mid-1");
    cr_expect_eq(r.items[0].priority, 9);
    cr_expect_eq(r.items[0].ttl_ms, 1500);
    cr_expect_eq(r.items[0].delay_ms, 0);
    cr_expect_str_eq(r.items[0].headers[0].name, "color"); /* HTTP names: lowercased */
    cr_expect_str_eq(r.items[0].headers[0].value, "red");
    rq_request_clear(&r);
}

Test(request_raw_body, refusals)
{
    rq_wire_header_t bad[1] = {{(char *)"X-Relayq-Uid", (char *)"u", 1}};
    rq_wire_header_t twice[3] = {{(char *)"Color", (char *)"red", 3},
                                 {(char *)"k", (char *)"v", 1},
                                 {(char *)"COLOR", (char *)"blue", 4}};
    struct {
        rq_raw_opts_t o;
        size_t len;
        const char *text;
    } k[] = {
        {{"text/plain", NULL, NULL, NULL, NULL, NULL, 0}, 0, "the request body is empty"},
        {{"text/plain", NULL, "256", NULL, NULL, NULL, 0}, 1, "query parameter priority"},
        {{"text/plain", NULL, "+1", NULL, NULL, NULL, 0}, 1, "query parameter priority"},
        {{"text/plain", NULL, "", NULL, NULL, NULL, 0}, 1, "query parameter priority"},
        {{"text/plain", NULL, NULL, "0", NULL, NULL, 0}, 1, "query parameter ttl_ms"},
        {{"text/plain", NULL, NULL, "99999999999999", NULL, NULL, 0}, 1, "query parameter ttl_ms"},
        {{"text/plain", NULL, NULL, NULL, "86400001", NULL, 0}, 1, "query parameter delay_ms"},
        {{"text/plain", NULL, NULL, "5", "5", NULL, 0}, 1, "cannot be combined"},
        {{"text/plain", "", NULL, NULL, NULL, NULL, 0}, 1, "Message-Id must be 1 to 255"},
        {{"text/plain", NULL, NULL, NULL, NULL, bad, 1}, 1, "header \"x-relayq-uid\" is reserved"},
        {{"text/plain", NULL, NULL, NULL, NULL, twice, 3}, 1, "header \"color\" is given twice"},
    };
    for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        rq_request_t r;
        rq_request_error_t e;
        cr_expect_eq(rq_request_raw("x", k[i].len, &k[i].o, &r, &e), -1, "case %zu", i);
        cr_expect_eq(e.status, 400, "case %zu", i);
        cr_expect(strstr(e.text, k[i].text) != NULL, "case %zu: %s", i, e.text);
        cr_expect_eq(r.n, 0);
    }
}
