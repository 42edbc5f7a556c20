/* test_request.c - table-driven validation of produce and batch bodies. */
#include <criterion/criterion.h>
#include <string.h>

#include "request.h"

static const rq_limits_t lim = {3, 60.0, 0};

typedef struct {
    const char *body;
    int batch;
    unsigned status;    /* 0 = accepted */
    const char *needle; /* part of the error text */
} rq_case_t;

static const rq_case_t cases[] = {
    {"{\"payload\":\"hi\"}", 0, 0, NULL},
    {"{\"payload\":null}", 0, 0, NULL},
    {"{\"payload\":{\"a\":[1,2]},\"id\":\"x\",\"processing_time\":0.5}", 0, 0, NULL},
    {"{\"payload\":1,\"wait\":true}", 0, 0, NULL},
    {"{\"payload\":1,\"fail_times\":2}", 0, 0, NULL},
    {"", 0, 400, "empty"},
    {"{", 0, 400, "invalid JSON"},
    {"[1,2]", 0, 400, "JSON object"},
    {"\"text\"", 0, 400, "invalid JSON"}, /* jansson needs JSON_DECODE_ANY for scalars */
    {"{\"id\":\"x\"}", 0, 400, "payload"},
    {"{\"payload\":1,\"id\":5}", 0, 400, "\"id\" must be a string"},
    {"{\"payload\":1,\"id\":\"\"}", 0, 400, "1 to 255"},
    {"{\"payload\":1,\"processing_time\":-1}", 0, 400, "processing_time"},
    {"{\"payload\":1,\"processing_time\":61}", 0, 400, "between 0 and 60"},
    {"{\"payload\":1,\"processing_time\":\"2\"}", 0, 400, "number of seconds"},
    {"{\"payload\":1,\"wait\":\"yes\"}", 0, 400, "true or false"},
    {"{\"payload\":1,\"fail_times\":-3}", 0, 400, "fail_times"},
    {"{\"payload\":1,\"payload\":2}", 0, 400, "invalid JSON"},
    {"{\"payload\":\"\xff\xfe\"}", 0, 400, "invalid JSON"},
    {"{\"payload\":\"a\\u0000b\"}", 0, 400, "invalid JSON"},
    {"{\"messages\":[{\"payload\":1},{\"payload\":2}]}", 1, 0, NULL},
    {"{\"messages\":[{\"payload\":1}],\"wait\":true}", 1, 0, NULL},
    {"{\"messages\":[]}", 1, 400, "must not be empty"},
    {"{\"messages\":{}}", 1, 400, "array"},
    {"{}", 1, 400, "array"},
    {"{\"messages\":[{\"payload\":1},{\"id\":\"x\"}]}", 1, 400, "messages[1]: \"payload\""},
    {"{\"messages\":[{\"payload\":1},7]}", 1, 400, "messages[1]: must be a JSON object"},
    {"{\"messages\":[{\"payload\":1,\"wait\":true}]}", 1, 400, "messages[0]"},
    {"{\"messages\":[{\"payload\":1},{\"payload\":1},{\"payload\":1},{\"payload\":1}]}", 1, 413,
     "at most 3"},
};

Test(request, table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rq_request_t req;
        rq_request_error_t err;
        const rq_case_t *c = &cases[i];
        int rc = rq_request_parse(c->body, strlen(c->body), c->batch, &lim, &req, &err);
        if (c->status == 0) {
            cr_expect_eq(rc, 0, "case %zu (%s) rejected: %s", i, c->body, err.text);
            cr_expect_gt(req.n, 0);
            rq_request_clear(&req);
        } else {
            cr_expect_eq(rc, -1, "case %zu (%s) accepted", i, c->body);
            cr_expect_eq(err.status, c->status, "case %zu: status %u", i, err.status);
            cr_expect(strstr(err.text, c->needle) != NULL, "case %zu: '%s' lacks '%s'", i, err.text,
                      c->needle);
            cr_expect_null(req.root);
        }
    }
}

/* An AMQP short string (the reply's message_id, the store key) holds at most 255 bytes: an id
 * of 255 bytes is accepted, one of 256 is refused at the edge, naming the limit (issue 11.2). */
Test(request, id_longer_than_an_amqp_short_string_is_400)
{
    char body[600], id[300];
    rq_request_t req;
    rq_request_error_t err;

    memset(id, 'a', 255);
    id[255] = '\0';
    snprintf(body, sizeof(body), "{\"payload\":1,\"id\":\"%s\"}", id);
    cr_assert_eq(rq_request_parse(body, strlen(body), 0, &lim, &req, &err), 0, "%s", err.text);
    cr_expect_eq(strlen(req.items[0].id), 255);
    rq_request_clear(&req);

    memset(id, 'a', 256);
    id[256] = '\0';
    snprintf(body, sizeof(body), "{\"messages\":[{\"payload\":1},{\"payload\":2,\"id\":\"%s\"}]}",
             id);
    cr_assert_eq(rq_request_parse(body, strlen(body), 1, &lim, &req, &err), -1);
    cr_expect_eq(err.status, 400);
    cr_expect(strstr(err.text, "messages[1]") && strstr(err.text, "255 bytes"), "%s", err.text);
}

Test(request, missing_id_becomes_uuid_and_given_id_is_kept)
{
    rq_request_t req;
    rq_request_error_t err;
    const char *b = "{\"messages\":[{\"payload\":1},{\"payload\":2,\"id\":\"mine\"}]}";

    cr_assert_eq(rq_request_parse(b, strlen(b), 1, &lim, &req, &err), 0);
    cr_expect_eq(strlen(req.items[0].id), 36);
    cr_expect_eq(req.items[0].id[8], '-');
    cr_expect_str_eq(req.items[1].id, "mine");
    rq_request_clear(&req);
}

Test(request, body_need_not_be_nul_terminated)
{
    rq_request_t req;
    rq_request_error_t err;
    char b[] = "{\"payload\":1}GARBAGE";

    cr_assert_eq(rq_request_parse(b, 13, 0, &lim, &req, &err), 0);
    rq_request_clear(&req);
}

Test(request, encode_carries_every_field)
{
    rq_request_t req;
    rq_request_error_t err;
    const char *b = "{\"payload\":{\"k\":\"v\"},\"id\":\"m1\",\"processing_time\":1.5,"
                    "\"fail_times\":2}";
    size_t len = 0;
    char *text;
    json_t *o;

    cr_assert_eq(rq_request_parse(b, strlen(b), 0, &lim, &req, &err), 0);
    text = rq_item_encode(&req.items[0], "2026-11-22T19:30:00.000Z", &len);
    cr_assert_not_null(text);
    cr_expect_eq(len, strlen(text));
    o = json_loads(text, 0, NULL);
    cr_assert_not_null(o);
    cr_expect_str_eq(json_string_value(json_object_get(o, "id")), "m1");
    cr_expect_str_eq(json_string_value(json_object_get(json_object_get(o, "payload"), "k")), "v");
    cr_expect_float_eq(json_number_value(json_object_get(o, "processing_time")), 1.5, 1e-9);
    cr_expect_str_eq(json_string_value(json_object_get(o, "timestamp")),
                     "2026-11-22T19:30:00.000Z");
    cr_expect_str_eq(json_string_value(json_object_get(o, "source")), "api");
    cr_expect_eq(json_integer_value(json_object_get(o, "fail_times")), 2);
    json_decref(o);
    free(text);
    rq_request_clear(&req);
}

/* ---- nesting depth (MAX_JSON_DEPTH, issue 6) ---- */

Test(request, json_too_deep_scan)
{
    static const struct {
        const char *text;
        size_t max;
        int deep;
    } scans[] = {
        {"", 1, 0},
        {"1", 0, 0},
        {"{}", 1, 0},
        {"{}", 0, 1},
        {"{\"a\":[1,{\"b\":[]}]}", 4, 0},
        {"{\"a\":[1,{\"b\":[]}]}", 3, 1},
        {"[[],[],[],[]]", 2, 0},                /* siblings do not add up */
        {"{\"a\":\"[[[[[[\"}", 1, 0},           /* brackets inside strings do not count */
        {"{\"a\":\"\\\"[[[[\"}", 1, 0},         /* nor after an escaped quote */
        {"{\"a\":\"\\\\\",\"b\":[[1]]}", 2, 1}, /* an escaped backslash ends before the quote */
        {"]]]]}}}}[[", 1, 1},                   /* stray closers never go below zero */
        {"\"[[[", 0, 0},                        /* unterminated string: its content ignored */
    };

    for (size_t i = 0; i < sizeof(scans) / sizeof(scans[0]); i++)
        cr_expect_eq(rq_json_too_deep(scans[i].text, strlen(scans[i].text), scans[i].max),
                     scans[i].deep, "case %zu: %s with max %zu", i, scans[i].text, scans[i].max);
}

Test(request, nesting_over_the_limit_is_400_before_parsing)
{
    const rq_limits_t deep_lim = {3, 60.0, 64};
    rq_request_t req;
    rq_request_error_t err;
    char body[2 * 100000 + 64];
    size_t n = 0, levels = 100000;

    /* 63 levels of payload under the top-level object: accepted. */
    n = (size_t)snprintf(body, sizeof(body), "{\"payload\":");
    for (size_t i = 0; i < 63; i++)
        body[n++] = '[';
    for (size_t i = 0; i < 63; i++)
        body[n++] = ']';
    body[n++] = '}';
    cr_assert_eq(rq_request_parse(body, n, 0, &deep_lim, &req, &err), 0, "%s", err.text);
    rq_request_clear(&req);

    /* 100000 levels: rejected by the pre-scan with the limit named (jansson never runs). */
    n = (size_t)snprintf(body, sizeof(body), "{\"payload\":");
    for (size_t i = 0; i < levels; i++)
        body[n++] = '[';
    for (size_t i = 0; i < levels && n < sizeof(body) - 1; i++)
        body[n++] = ']';
    cr_assert_eq(rq_request_parse(body, n, 0, &deep_lim, &req, &err), -1);
    cr_expect_eq(err.status, 400);
    cr_expect_str_eq(err.limit, "json_depth");
    cr_expect(strstr(err.text, "deeper than 64") != NULL, "%s", err.text);
    cr_expect_null(req.root);

    /* The batch limit names itself too; ordinary errors name none. */
    static const char four[] =
        "{\"messages\":[{\"payload\":1},{\"payload\":1},{\"payload\":1},{\"payload\":1}]}";
    cr_assert_eq(rq_request_parse(four, strlen(four), 1, &deep_lim, &req, &err), -1);
    cr_expect_str_eq(err.limit, "batch_length");
    cr_assert_eq(rq_request_parse("{", 1, 0, &deep_lim, &req, &err), -1);
    cr_expect_null(err.limit);
}
