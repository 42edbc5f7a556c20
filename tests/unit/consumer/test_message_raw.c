/* test_message_raw.c - payloads reach the output line and the reply as the bytes the client
 * sent, one line per message, and foreign clients' messages are processed (issue 14).
 * Table-driven: delivery (content type, message_id, correlation_id, body) -> output line. */
#include <criterion/criterion.h>
#include <string.h>

#include "message.h"

enum { OK = 0, BAD = -1 };

typedef struct {
    const char *name;
    const char *ct;   /* NULL: no content type */
    const char *mid;  /* NULL: no message_id */
    const char *corr; /* NULL: no correlation_id */
    const char *body;
    size_t body_len;
    int rc;
    rq_msg_kind_t kind;
    const char *id;   /* NULL: a new UUID */
    const char *line; /* the output line (the reply is the prefix then this) */
    size_t line_len;
    const char *payload; /* the payload as sent (NULL: the body) */
} mcase_t;

#define J "application/json"
#define L(s) s, sizeof(s) - 1
#define ENV(name, body, line)                                                                      \
    {                                                                                              \
        name, J, "m", NULL, L(body), OK, RQ_MSG_JSON, "m", L(line), NULL                           \
    }

static const mcase_t cases[] = {
    /* relayq's envelope: the payload's bytes as sent */
    {"0.1", J, "m", NULL, L("{\"payload\":0.1}"), OK, RQ_MSG_JSON, "m", L("0.1"), "0.1"},
    ENV("19.99", "{\"id\":\"m\",\"payload\":19.99}", "19.99"),
    ENV("1e-7", "{\"payload\":1e-7,\"id\":\"m\"}", "1e-7"),
    ENV("an integer beyond 64 bits", "{\"payload\":123456789012345678901234567890}",
        "123456789012345678901234567890"),
    ENV("a big integer in an object", "{\"payload\":{\"n\":-123456789012345678901234567890}}",
        "{\"n\":-123456789012345678901234567890}"),
    ENV("escapes as sent inside an object", "{\"payload\":{\"k\":\"caf\\u00e9 \\/\"}}",
        "{\"k\":\"caf\\u00e9 \\/\"}"),
    ENV("a string's escapes decoded (no control character)", "{\"payload\":\"caf\\u00e9\"}",
        "caf\xC3\xA9"),
    ENV("a string with \\n is written as sent", "{\"payload\":\"line1\\nline2\"}",
        "\"line1\\nline2\""),
    ENV("a string with \\u000a is written as sent", "{\"payload\":\"a\\u000Ab\"}", "\"a\\u000Ab\""),
    ENV("a string with a tab, CR, NUL", "{\"payload\":\"a\\tb\\rc\\u0000\"}",
        "\"a\\tb\\rc\\u0000\""),
    ENV("a string with a raw DEL", "{\"payload\":\"a\x7f\"}", "\"a\x7f\""),
    ENV("nested objects with odd whitespace",
        "{ \"payload\" :\n  { \"b\" : [ 1 ,\r\n 2.50 ],\n\t\"a\" :{} }\n, \"id\":\"m\" }",
        "{ \"b\" : [ 1 , 2.50 ],\t\"a\" :{} }"),
    ENV("the last of two payload members, as jansson keeps", "{\"payload\":1,\"payload\":[2.0]}",
        "[2.0]"),
    ENV("the payload key with an escape", "{\"pay\\u006Coad\":0.5}", "0.5"),
    ENV("a string payload holding the envelope's text",
        "{\"payload\":\"{\\\"payload\\\":1}\",\"id\":\"m\"}", "{\"payload\":1}"),
    {"fail_times huge is clamped", J, "m", NULL,
     L("{\"payload\":1,\"fail_times\":123456789012345678901234567890}"), OK, RQ_MSG_JSON, "m",
     L("1"), "1"},
    {"fail_times 2.0 is not an integer", J, "m", NULL, L("{\"payload\":1,\"fail_times\":2.0}"), BAD,
     RQ_MSG_JSON, NULL, NULL, 0, NULL},
    {"fail_times 1e1 is not an integer", J, "m", NULL, L("{\"payload\":1,\"fail_times\":1e1}"), BAD,
     RQ_MSG_JSON, NULL, NULL, 0, NULL},

    /* foreign clients */
    {"the RPC tutorial's client: \"30\", no content type", NULL, NULL, "corr-1", L("30"), OK,
     RQ_MSG_JSON, "corr-1", L("30"), "30"},
    {"plain text, no content type", NULL, NULL, "c2", L("fib please"), OK, RQ_MSG_RAW, "c2",
     L("fib please"), NULL},
    {"text/plain", "text/plain", "t1", NULL, L("hello"), OK, RQ_MSG_RAW, "t1", L("hello"), NULL},
    {"text/plain that looks like JSON stays text", "text/plain", "t2", NULL, L("{\"payload\":0.1}"),
     OK, RQ_MSG_RAW, "t2", L("{\"payload\":0.1}"), NULL},
    {"text with a newline is quoted", "text/plain; charset=utf-8", "t3", NULL,
     L("two\nlines \"q\" \\"), OK, RQ_MSG_RAW, "t3", L("\"two\\nlines \\\"q\\\" \\\\\""), NULL},
    {"binary with a newline: control bytes escaped, others kept", "application/octet-stream", "b1",
     NULL, L("\xff\x00\n\x7f"), OK, RQ_MSG_RAW, "b1", L("\"\xff\\u0000\\n\\u007f\""), NULL},
    {"binary without a newline stays byte for byte", "application/octet-stream", "b2", NULL,
     L("\xff\x00\r"), OK, RQ_MSG_RAW, "b2", L("\xff\x00\r"), NULL},
    {"broken JSON without a content type is text", NULL, "n1", NULL, L("{\"payload\":"), OK,
     RQ_MSG_RAW, "n1", L("{\"payload\":"), NULL},
    {"JSON without the envelope: an object", J, "f1", NULL, L("{\"x\": 0.1,\n\"y\":[1]}"), OK,
     RQ_MSG_JSON, "f1", L("{\"x\": 0.1,\"y\":[1]}"), NULL},
    {"JSON without the envelope: an object with an id", NULL, "f2", NULL,
     L("{\"id\":\"no\",\"processing_time\":9}"), OK, RQ_MSG_JSON, "f2",
     L("{\"id\":\"no\",\"processing_time\":9}"), NULL},
    {"JSON without the envelope: an array, whitespace around", J, "f3", NULL,
     L("\n [1, 2, \"x\"] \n"), OK, RQ_MSG_JSON, "f3", L("[1, 2, \"x\"]"), "[1, 2, \"x\"]"},
    {"JSON without the envelope: a string", NULL, "f4", NULL, L("\"hi \\u00e9\""), OK, RQ_MSG_JSON,
     "f4", L("hi \xC3\xA9"), NULL},
    {"JSON without the envelope: null", J, "f5", NULL, L("null"), OK, RQ_MSG_JSON, "f5", L("null"),
     NULL},
    {"no id at all: a new UUID", NULL, NULL, NULL, L("7"), OK, RQ_MSG_JSON, NULL, L("7"), NULL},
    {"an empty body without a content type is empty text", NULL, "e1", NULL, L(""), OK, RQ_MSG_RAW,
     "e1", L(""), NULL},

    /* still undecodable */
    {"declared JSON that does not parse", J, "x1", NULL, L("{\"payload\":"), BAD, RQ_MSG_JSON, NULL,
     NULL, 0, NULL},
    {"declared JSON, invalid UTF-8", J, "x2", NULL, L("{\"payload\":\"\xff\"}"), BAD, RQ_MSG_JSON,
     NULL, NULL, 0, NULL},
    {"declared JSON, a number overflowing a double", J, "x3", NULL, L("{\"payload\":1e400}"), BAD,
     RQ_MSG_JSON, NULL, NULL, 0, NULL},
    {"an envelope with a bad field", NULL, "x4", NULL,
     L("{\"payload\":1,\"processing_time\":\"slow\"}"), BAD, RQ_MSG_JSON, NULL, NULL, 0, NULL},
    {"an unsupported content type", "image/png", "x5", NULL, L("\x89PNG"), BAD, RQ_MSG_JSON, NULL,
     NULL, 0, NULL},
};

static void run(const mcase_t *c)
{
    rq_msg_input_t in = {0};
    rq_message_t m;
    rq_msg_error_t err = {{0}};
    int rc;

    in.content_type = c->ct;
    in.content_type_len = c->ct ? strlen(c->ct) : 0;
    in.message_id = c->mid;
    in.message_id_len = c->mid ? strlen(c->mid) : 0;
    in.correlation_id = c->corr;
    in.correlation_id_len = c->corr ? strlen(c->corr) : 0;
    in.body = c->body;
    in.body_len = c->body_len;
    in.has_reply_to = c->corr != NULL;
    rc = rq_message_decode(&in, 60, &m, &err);
    cr_expect_eq(rc, c->rc, "[%s] rc %d, expected %d (%s)", c->name, rc, c->rc,
                 rc ? err.text : "-");
    if (rc != 0 || c->rc != 0) {
        rq_message_clear(&m);
        return;
    }
    cr_expect_eq(m.kind, c->kind, "[%s] kind %d", c->name, m.kind);
    if (c->id != NULL)
        cr_expect_str_eq(m.id, c->id, "[%s] id", c->name);
    else
        cr_expect(strlen(m.id) == 36 && m.id[14] == '4', "[%s] id %s is not a UUID", c->name, m.id);
    cr_expect(m.line_len == c->line_len && memcmp(m.line, c->line, c->line_len) == 0,
              "[%s] line [%.*s] (%zu bytes), expected [%.*s] (%zu)", c->name, (int)m.line_len,
              m.line, m.line_len, (int)c->line_len, c->line, c->line_len);
    cr_expect(memchr(m.line, '\n', m.line_len) == NULL, "[%s] the line holds a newline", c->name);
    cr_expect(m.reply_len == RQ_REPLY_PREFIX_LEN + m.line_len &&
                  memcmp(m.reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN) == 0 &&
                  m.line == m.reply + RQ_REPLY_PREFIX_LEN,
              "[%s] reply is not \"Consumer processed: \" + the line", c->name);
    if (c->payload != NULL)
        cr_expect(m.payload_len == strlen(c->payload) &&
                      memcmp(m.payload, c->payload, m.payload_len) == 0,
                  "[%s] payload [%.*s]", c->name, (int)m.payload_len, m.payload);
    else if (c->kind == RQ_MSG_RAW)
        cr_expect(m.payload_len == c->body_len && memcmp(m.payload, c->body, c->body_len) == 0,
                  "[%s] payload is not the body", c->name);
    cr_expect_eq(m.payload_json, c->kind == RQ_MSG_JSON, "[%s] payload_json", c->name);
    rq_message_clear(&m);
}

Test(message_raw, body_to_output_line)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run(&cases[i]);
}

/* A foreign RPC request without a message_id takes its correlation_id as its id, never as
 * its key (clients reuse correlation ids across messages: keying on them would skip the
 * later messages' lines as duplicates): each decode gets a key of its own. */
Test(message_raw, correlation_id_is_the_id_but_not_the_key_without_a_message_id)
{
    rq_msg_input_t in = {0};
    rq_message_t a, b;

    in.body = "30";
    in.body_len = 2;
    in.correlation_id = "c-a";
    in.correlation_id_len = 3;
    in.has_reply_to = 1;
    cr_assert_eq(rq_message_decode(&in, 60, &a, NULL), 0);
    in.correlation_id = "c-b";
    cr_assert_eq(rq_message_decode(&in, 60, &b, NULL), 0);
    cr_expect_str_eq(a.id, "c-a");
    cr_expect_str_eq(b.id, "c-b");
    cr_expect(!(a.key_len == 3 && memcmp(a.key, "c-a", 3) == 0), "not the correlation id");
    cr_expect_eq(a.key_len, 36, "a UUID of its own");
    cr_expect(a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0);
    cr_expect_str_eq(a.reply, "Consumer processed: 30");
    rq_message_clear(&a);
    rq_message_clear(&b);
}
