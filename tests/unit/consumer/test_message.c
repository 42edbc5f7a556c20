/* Unit tests for consumer/message.c: decoding deliveries, output line and reply rendering,
 * and the published-at lookup for the consume latency. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "message.h"
#include "wire.h"
#include "wire_of.h"

/* ---- decode cases ---- */

enum { OK = 0, BAD = -1 };

typedef struct {
    const char *name;
    const char *content_type; /* NULL: property absent */
    const char *message_id;   /* NULL: property absent */
    const char *body;
    size_t body_len; /* bytes of body */
    double max_pt;
    int rc;
    /* expectations when rc == OK */
    rq_msg_kind_t kind;
    const char *id;
    const char *line;
    size_t line_len;
    double pt;
    int capped;
    int fail_times;
    /* expectation when rc == BAD: a substring of the reason */
    const char *reason;
} dcase_t;

#define JSON "application/json"
#define RAW "application/octet-stream"
#define L(s) s, sizeof(s) - 1

/* A valid JSON message: id, line (both C strings), pt / capped / fail_times. */
#define GOOD(name, ct, mid, body, id, line, pt, capped, ft)                                        \
    {                                                                                              \
        name, ct, mid, L(body), 60, OK, RQ_MSG_JSON, id, L(line), pt, capped, ft, NULL             \
    }
#define FAIL(name, ct, mid, body, reason)                                                          \
    {                                                                                              \
        name, ct, mid, L(body), 60, BAD, RQ_MSG_JSON, NULL, NULL, 0, 0, 0, 0, reason               \
    }

static const dcase_t cases[] = {
    /* valid API messages */
    GOOD("string payload", JSON, "m1", "{\"id\":\"a1\",\"payload\":\"hello\"}", "a1", "hello", 0, 0,
         0),
    GOOD("producer body", JSON, "a2",
         "{\"id\":\"a2\",\"payload\":\"hi\",\"processing_time\":0.5,"
         "\"timestamp\":\"2026-01-01T00:00:00.000Z\",\"source\":\"api\"}",
         "a2", "hi", 0.5, 0, 0),
    /* issue 14: a payload is written as sent (test_message_raw.c has the whole table) */
    GOOD("object payload as sent, spaces kept", JSON, NULL,
         "{\"id\":\"o\",\"payload\": { \"b\" : 1, \"a\" : [1, 2, {\"c\": null}] } }", "o",
         "{ \"b\" : 1, \"a\" : [1, 2, {\"c\": null}] }", 0, 0, 0),
    GOOD("array payload as sent", JSON, NULL, "{\"id\":\"x\",\"payload\":[\"a\", true, false]}",
         "x", "[\"a\", true, false]", 0, 0, 0),
    GOOD("integer payload", JSON, NULL, "{\"id\":\"x\",\"payload\":42}", "x", "42", 0, 0, 0),
    GOOD("real payload", JSON, NULL, "{\"id\":\"x\",\"payload\":1.5}", "x", "1.5", 0, 0, 0),
    GOOD("true payload", JSON, NULL, "{\"id\":\"x\",\"payload\":true}", "x", "true", 0, 0, 0),
    GOOD("null payload is present", JSON, NULL, "{\"id\":\"x\",\"payload\":null}", "x", "null", 0,
         0, 0),
    GOOD("empty string payload", JSON, NULL, "{\"id\":\"x\",\"payload\":\"\"}", "x", "", 0, 0, 0),
    GOOD("string payload without control characters is verbatim (escapes decoded)", JSON, NULL,
         "{\"id\":\"x\",\"payload\":\"a\\\"b\\\\c z \\u00e9\"}", "x", "a\"b\\c z \xC3\xA9", 0, 0,
         0),
    GOOD("string payload with a tab is written as sent", JSON, NULL,
         "{\"id\":\"x\",\"payload\":\"a\\\"b\\\\c\\tz \\u00e9\"}", "x",
         "\"a\\\"b\\\\c\\tz \\u00e9\"", 0, 0, 0),
    GOOD("string payload with NUL is written as sent", JSON, NULL,
         "{\"id\":\"x\",\"payload\":\"a\\u0000b\"}", "x", "\"a\\u0000b\"", 0, 0, 0),
    GOOD("non-ASCII escaped in object payload stays as sent", JSON, NULL,
         "{\"id\":\"x\",\"payload\":{\"k\":\"\\u20ac\"}}", "x", "{\"k\":\"\\u20ac\"}", 0, 0, 0),
    GOOD("id falls back to message_id", JSON, "mid-7", "{\"payload\":\"p\"}", "mid-7", "p", 0, 0,
         0),
    GOOD("null id falls back to message_id", JSON, "mid-8", "{\"id\":null,\"payload\":\"p\"}",
         "mid-8", "p", 0, 0, 0),
    GOOD("body id wins over message_id", JSON, "mid-9", "{\"id\":\"body\",\"payload\":\"p\"}",
         "body", "p", 0, 0, 0),
    GOOD("content type absent means JSON", NULL, NULL, "{\"id\":\"x\",\"payload\":1}", "x", "1", 0,
         0, 0),
    GOOD("content type with parameters", "application/json; charset=utf-8", NULL,
         "{\"id\":\"x\",\"payload\":1}", "x", "1", 0, 0, 0),
    GOOD("content type in capitals", " Application/JSON ", NULL, "{\"id\":\"x\",\"payload\":1}",
         "x", "1", 0, 0, 0),
    GOOD("processing_time integer", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":2}", "x", "1", 2, 0, 0),
    GOOD("processing_time zero", JSON, NULL, "{\"id\":\"x\",\"payload\":1,\"processing_time\":0.0}",
         "x", "1", 0, 0, 0),
    GOOD("processing_time null is absent", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":null}", "x", "1", 0, 0, 0),
    GOOD("processing_time at the maximum is kept", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":60}", "x", "1", 60, 0, 0),
    GOOD("processing_time huge is capped", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":1e300}", "x", "1", 60, 1, 0),
    GOOD("processing_time just above the maximum is capped", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":60.001}", "x", "1", 60, 1, 0),
    GOOD("fail_times", JSON, NULL, "{\"id\":\"x\",\"payload\":1,\"fail_times\":3}", "x", "1", 0, 0,
         3),
    GOOD("fail_times huge is clamped", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"fail_times\":99999999999}", "x", "1", 0, 0, INT_MAX),
    GOOD("unknown members are ignored", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"extra\":{\"deep\":[1]},\"source\":7}", "x", "1", 0, 0, 0),

    /* issue 14: JSON without the envelope is the payload itself; no id at all: a UUID (NULL) */
    GOOD("no payload member: the body is the payload", JSON, "m",
         "{\"id\":\"x\",\"processing_time\":1}", "m", "{\"id\":\"x\",\"processing_time\":1}", 0, 0,
         0),
    GOOD("missing id and message_id: a UUID", JSON, NULL, "{\"payload\":1}", NULL, "1", 0, 0, 0),
    GOOD("empty message_id does not count as an id", JSON, "", "{\"payload\":1}", NULL, "1", 0, 0,
         0),
    GOOD("array body is the payload", JSON, "m", "[1,2]", "m", "[1,2]", 0, 0, 0),
    GOOD("string body is the payload", JSON, "m", "\"payload\"", "m", "payload", 0, 0, 0),
    GOOD("number body is the payload", JSON, "m", "42", "m", "42", 0, 0, 0),
    GOOD("null body is the payload", JSON, "m", "null", "m", "null", 0, 0, 0),
    {"plain text without a content type is text", NULL, "m", L("hello"), 60, OK, RQ_MSG_RAW, "m",
     L("hello"), 0, 0, 0, NULL},

    /* undecodable API messages */
    FAIL("id is a number", JSON, "m", "{\"id\":5,\"payload\":1}", "\"id\" must be"),
    FAIL("id is an object", JSON, "m", "{\"id\":{},\"payload\":1}", "\"id\" must be"),
    FAIL("id is empty", JSON, "m", "{\"id\":\"\",\"payload\":1}", "\"id\" must be"),
    FAIL("id holds NUL", JSON, NULL, "{\"id\":\"a\\u0000b\",\"payload\":1}", "NUL"),
    FAIL("processing_time negative", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":-0.5}",
         "\"processing_time\" must be >= 0"),
    FAIL("processing_time string", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":\"5\"}", "must be a number"),
    FAIL("processing_time bool", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":true}", "must be a number"),
    FAIL("processing_time overflowing", JSON, NULL,
         "{\"id\":\"x\",\"payload\":1,\"processing_time\":1e999}", "invalid JSON"),
    FAIL("fail_times negative", JSON, NULL, "{\"id\":\"x\",\"payload\":1,\"fail_times\":-1}",
         "\"fail_times\" must be >= 0"),
    FAIL("fail_times real", JSON, NULL, "{\"id\":\"x\",\"payload\":1,\"fail_times\":1.5}",
         "must be an integer"),
    FAIL("fail_times string", JSON, NULL, "{\"id\":\"x\",\"payload\":1,\"fail_times\":\"2\"}",
         "must be an integer"),
    FAIL("invalid JSON", JSON, "m", "{\"id\":\"x\",\"payload\":", "invalid JSON"),
    FAIL("trailing garbage", JSON, "m", "{\"id\":\"x\",\"payload\":1} x", "invalid JSON"),
    FAIL("empty body", JSON, "m", "", "invalid JSON"),
    FAIL("invalid UTF-8 in JSON", JSON, "m", "{\"id\":\"x\",\"payload\":\"\xC3\x28\"}",
         "invalid JSON"),
    FAIL("plain text declared JSON", JSON, "m", "hello", "invalid JSON"),
    FAIL("unsupported content type", "application/xml", "m", "<a/>", "unsupported content_type"),
    FAIL("unsupported content type prefix", "application/jsonx", "m", "{\"payload\":1}",
         "unsupported content_type"),

    /* tailed lines */
    {"raw line with NUL and CR", RAW, "f:0", L("a\0b\r"), 60, OK, RQ_MSG_RAW, "f:0", L("a\0b\r"), 0,
     0, 0, NULL},
    {"raw empty line", RAW, "f:10", L(""), 60, OK, RQ_MSG_RAW, "f:10", L(""), 0, 0, 0, NULL},
    {"raw invalid UTF-8 and tabs", RAW, "f:3", L("\xFF\xFE\t x"), 60, OK, RQ_MSG_RAW, "f:3",
     L("\xFF\xFE\t x"), 0, 0, 0, NULL},
    {"raw JSON-looking line stays raw", RAW, "f:4", L("{\"payload\":1}"), 60, OK, RQ_MSG_RAW, "f:4",
     L("{\"payload\":1}"), 0, 0, 0, NULL},
    {"text/plain is a raw line", "text/plain; charset=utf-8", "f:5", L("line"), 60, OK, RQ_MSG_RAW,
     "f:5", L("line"), 0, 0, 0, NULL},
    /* issue 14: not a tailed line (no x-file): a foreign client's text, id a UUID (NULL) */
    {"raw line without message_id", RAW, NULL, L("x"), 60, OK, RQ_MSG_RAW, NULL, L("x"), 0, 0, 0,
     NULL},
    {"raw line with empty message_id", RAW, "", L("x"), 60, OK, RQ_MSG_RAW, NULL, L("x"), 0, 0, 0,
     NULL},
};

static void run_case(const dcase_t *c)
{
    rq_msg_input_t in = {0};
    rq_message_t m;
    rq_msg_error_t err;
    int rc;

    in.content_type = c->content_type;
    in.content_type_len = c->content_type != NULL ? strlen(c->content_type) : 0;
    in.message_id = c->message_id;
    in.message_id_len = c->message_id != NULL ? strlen(c->message_id) : 0;
    in.body = c->body;
    in.body_len = c->body_len;

    rc = rq_message_decode(&in, c->max_pt, &m, &err);
    cr_expect_eq(rc, c->rc, "[%s] rc %d, expected %d (reason: %s)", c->name, rc, c->rc,
                 rc < 0 ? err.text : "-");
    if (rc != c->rc) {
        rq_message_clear(&m);
        return;
    }
    if (rc < 0) {
        cr_expect_not_null(strstr(err.text, c->reason), "[%s] reason \"%s\" lacks \"%s\"", c->name,
                           err.text, c->reason);
        cr_expect_null(m.id, "[%s] id left set on failure", c->name);
        cr_expect_null(m.reply, "[%s] reply left set on failure", c->name);
        return;
    }
    cr_expect_eq(m.kind, c->kind, "[%s] kind", c->name);
    if (c->id != NULL)
        cr_expect_str_eq(m.id, c->id, "[%s] id", c->name);
    else /* no id anywhere: a new UUID */
        cr_expect_eq(strlen(m.id), 36, "[%s] id %s is not a UUID", c->name, m.id);
    cr_expect_eq(m.line_len, c->line_len, "[%s] line length %zu, expected %zu", c->name, m.line_len,
                 c->line_len);
    if (m.line_len == c->line_len)
        cr_expect(memcmp(m.line, c->line, c->line_len) == 0, "[%s] line \"%.*s\" != \"%s\"",
                  c->name, (int)m.line_len, m.line, c->line);
    /* the reply is the prefix then the line, NUL-terminated */
    cr_expect_eq(m.reply_len, RQ_REPLY_PREFIX_LEN + c->line_len, "[%s] reply length", c->name);
    cr_expect(memcmp(m.reply, "Consumer processed: ", RQ_REPLY_PREFIX_LEN) == 0,
              "[%s] reply prefix", c->name);
    cr_expect_eq(m.line, m.reply + RQ_REPLY_PREFIX_LEN, "[%s] line points into reply", c->name);
    cr_expect_eq(m.reply[m.reply_len], '\0', "[%s] reply NUL-terminated", c->name);
    cr_expect_float_eq(m.processing_time, c->pt, 1e-9, "[%s] processing_time %g, expected %g",
                       c->name, m.processing_time, c->pt);
    cr_expect_eq(m.processing_capped, c->capped, "[%s] capped", c->name);
    cr_expect_eq(m.fail_times, c->fail_times, "[%s] fail_times", c->name);
    rq_message_clear(&m);
    cr_expect_null(m.reply);
}

Test(message, decode_table)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        run_case(&cases[i]);
}

Test(message, reply_text_for_string_and_object)
{
    rq_msg_input_t in = {0};
    rq_message_t m;

    in.body = "{\"id\":\"r\",\"payload\":\"hello world\"}";
    in.body_len = strlen(in.body);
    cr_assert_eq(rq_message_decode(&in, 60, &m, NULL), 0);
    cr_expect_str_eq(m.reply, "Consumer processed: hello world");
    rq_message_clear(&m);

    in.body = "{\"id\":\"r\",\"payload\":{\"z\":1,\"a\":\"b\"}}";
    in.body_len = strlen(in.body);
    cr_assert_eq(rq_message_decode(&in, 60, &m, NULL), 0);
    cr_expect_str_eq(m.reply, "Consumer processed: {\"z\":1,\"a\":\"b\"}");
    rq_message_clear(&m);
}

Test(message, max_processing_time_zero_caps_everything)
{
    rq_msg_input_t in = {0};
    rq_message_t m;

    in.body = "{\"id\":\"r\",\"payload\":1,\"processing_time\":0.25}";
    in.body_len = strlen(in.body);
    cr_assert_eq(rq_message_decode(&in, 0, &m, NULL), 0);
    cr_expect_float_eq(m.processing_time, 0.0, 1e-12);
    cr_expect_eq(m.processing_capped, 1);
    rq_message_clear(&m);
}

Test(message, body_is_not_read_past_its_length)
{
    /* the body is a prefix of a longer buffer: only body_len bytes count */
    static const char buf[] = "{\"id\":\"x\",\"payload\":\"ab\"}GARBAGE";
    rq_msg_input_t in = {0};
    rq_message_t m;

    in.body = buf;
    in.body_len = strlen("{\"id\":\"x\",\"payload\":\"ab\"}");
    cr_assert_eq(rq_message_decode(&in, 60, &m, NULL), 0);
    cr_expect_eq(m.line_len, 2);
    rq_message_clear(&m);

    /* a message_id that is not NUL-terminated */
    in.body = "{\"payload\":1}";
    in.body_len = strlen(in.body);
    in.message_id = "idXYZ";
    in.message_id_len = 2;
    cr_assert_eq(rq_message_decode(&in, 60, &m, NULL), 0);
    cr_expect_str_eq(m.id, "id");
    rq_message_clear(&m);
}

Test(message, clear_is_idempotent)
{
    rq_message_t m;

    memset(&m, 0, sizeof(m));
    rq_message_clear(&m);
    rq_message_clear(&m);
    rq_message_clear(NULL);
}

/* ---- AMQP properties ---- */

/* The input the consumer builds from properties p and a body. */
static void input_from(const amqp_basic_properties_t *p, amqp_bytes_t body, rq_wire_msg_t *w,
                       rq_msg_input_t *in)
{
    rq_wire_decode(p, w, NULL);
    rq_message_input_from_wire(w, body, in);
}

/* The published-at time the consumer reads from properties p. */
static int64_t published_ms(const amqp_basic_properties_t *p)
{
    rq_wire_msg_t w;

    rq_wire_decode(p, &w, NULL);
    return w.published_ms;
}

Test(message, input_from_wire_properties)
{
    amqp_basic_properties_t p;
    rq_msg_input_t in;
    rq_wire_msg_t w;
    char body[] = "xyz";

    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.message_id = amqp_cstring_bytes("m-1");
    input_from(&p, (amqp_bytes_t){3, body}, &w, &in);
    cr_expect_eq(in.content_type_len, 16);
    cr_expect(memcmp(in.content_type, "application/json", 16) == 0);
    cr_expect_eq(in.message_id_len, 3);
    cr_expect_eq(in.body, body);
    cr_expect_eq(in.body_len, 3);

    p._flags = 0;
    input_from(&p, amqp_empty_bytes, &w, &in);
    cr_expect_null(in.content_type);
    cr_expect_null(in.message_id);
    cr_expect_not_null(in.body);
    cr_expect_eq(in.body_len, 0);
}

static amqp_basic_properties_t with_header(amqp_table_entry_t *e)
{
    amqp_basic_properties_t p;

    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = 1;
    p.headers.entries = e;
    return p;
}

Test(message, published_ms_from_header_kinds)
{
    amqp_table_entry_t e;
    amqp_basic_properties_t p;

    e.key = amqp_cstring_bytes("x-published-ms");
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = 1767225600123;
    p = with_header(&e);
    cr_expect_eq(published_ms(&p), 1767225600123);

    e.value.kind = AMQP_FIELD_KIND_U64;
    e.value.value.u64 = 1767225600124;
    cr_expect_eq(published_ms(&p), 1767225600124);

    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes("1767225600125");
    cr_expect_eq(published_ms(&p), 1767225600125);

    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes("12abc");
    cr_expect_eq(published_ms(&p), -1, "not a number, no timestamp");

    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = 1;
    cr_expect_eq(published_ms(&p), -1);

    e.key = amqp_cstring_bytes("x-other");
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = 5;
    cr_expect_eq(published_ms(&p), -1, "other header names are ignored");
}

Test(message, published_ms_falls_back_to_timestamp)
{
    amqp_table_entry_t e;
    amqp_basic_properties_t p;

    e.key = amqp_cstring_bytes("x-published-ms");
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = 0; /* not positive: ignored */
    p = with_header(&e);
    p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p.timestamp = 1767225600;
    cr_expect_eq(published_ms(&p), 1767225600000LL);

    memset(&p, 0, sizeof(p));
    cr_expect_eq(published_ms(&p), -1);
}

/* ---- the deduplication key (issue 11 item 7) ---- */

static int decode_with(const char *ct, const char *mid, const char *body,
                       const amqp_table_t *headers, int reply_to, rq_message_t *m,
                       rq_msg_error_t *err)
{
    rq_msg_input_t in = {0};
    rq_wire_msg_t w;

    in.content_type = ct;
    in.content_type_len = ct != NULL ? strlen(ct) : 0;
    in.message_id = mid;
    in.message_id_len = mid != NULL ? strlen(mid) : 0;
    in.body = body;
    in.body_len = strlen(body);
    in.wire = wire_of(headers, &w);
    in.has_reply_to = reply_to;
    return rq_message_decode(&in, 60, m, err);
}

Test(message, dedup_key_is_the_message_id_property_the_line_keeps_the_body_id)
{
    rq_message_t a, b;
    rq_msg_error_t err;

    cr_assert_eq(
        decode_with(JSON, "uuid-1", "{\"id\":\"same\",\"payload\":\"one\"}", NULL, 0, &a, &err), 0,
        "%s", err.text);
    cr_assert_eq(
        decode_with(JSON, "uuid-2", "{\"id\":\"same\",\"payload\":\"two\"}", NULL, 0, &b, &err), 0,
        "%s", err.text);
    cr_expect_str_eq(a.id, "same");
    cr_expect_str_eq(b.id, "same");
    cr_expect_eq(a.key_len, 6);
    cr_expect(memcmp(a.key, "uuid-1", 6) == 0);
    cr_expect(a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0,
              "two messages with one client id share a dedup key");
    rq_message_clear(&a);
    rq_message_clear(&b);
}

Test(message, dedup_key_falls_back_to_the_body_id_without_a_message_id)
{
    rq_message_t m;
    rq_msg_error_t err;

    cr_assert_eq(decode_with(JSON, NULL, "{\"id\":\"client-7\",\"payload\":1}", NULL, 0, &m, &err),
                 0, "%s", err.text);
    cr_expect_eq(m.key_len, 8);
    cr_expect(memcmp(m.key, "client-7", 8) == 0);
    rq_message_clear(&m);
    cr_assert_eq(decode_with(JSON, "", "{\"id\":\"client-8\",\"payload\":1}", NULL, 0, &m, &err), 0,
                 "%s", err.text); /* an empty property counts as absent */
    cr_expect_eq(m.key_len, 8);
    rq_message_clear(&m);
    cr_assert_eq(decode_with(RAW, "f:12", "line", NULL, 0, &m, &err), 0, "%s", err.text);
    cr_expect_eq(m.key_len, 4);
    cr_expect(memcmp(m.key, "f:12", 4) == 0);
    rq_message_clear(&m);
}

/* The producer keeps the client's id as the message_id property (it need not be unique) and
 * puts its own UUID per message in x-relayq-uid: that header is the key when present. */
Test(message, dedup_key_is_the_producer_uid_header_before_the_message_id)
{
    rq_message_t a, b;
    rq_msg_error_t err;
    amqp_table_entry_t ea, eb;
    amqp_table_t ta = {1, &ea}, tb = {1, &eb};

    ea.key = amqp_cstring_bytes("x-relayq-uid");
    ea.value.kind = AMQP_FIELD_KIND_UTF8;
    ea.value.value.bytes = amqp_cstring_bytes("0b6d1f3e-uid-a");
    eb = ea;
    eb.value.value.bytes = amqp_cstring_bytes("0b6d1f3e-uid-b");
    cr_assert_eq(
        decode_with(JSON, "same", "{\"id\":\"same\",\"payload\":\"one\"}", &ta, 0, &a, &err), 0,
        "%s", err.text);
    cr_assert_eq(
        decode_with(JSON, "same", "{\"id\":\"same\",\"payload\":\"two\"}", &tb, 0, &b, &err), 0,
        "%s", err.text);
    cr_expect_str_eq(a.id, "same");
    cr_expect_eq(a.key_len, strlen("0b6d1f3e-uid-a"));
    cr_expect(memcmp(a.key, "0b6d1f3e-uid-a", a.key_len) == 0);
    cr_expect(a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0,
              "two messages with one client id share a dedup key");
    rq_message_clear(&a);
    rq_message_clear(&b);

    /* An empty or non-string header does not count: the message_id is the key then. */
    ea.value.value.bytes = amqp_cstring_bytes("");
    cr_assert_eq(decode_with(JSON, "mid-9", "{\"id\":\"c\",\"payload\":1}", &ta, 0, &a, &err), 0,
                 "%s", err.text);
    cr_expect(a.key_len == 5 && memcmp(a.key, "mid-9", 5) == 0);
    rq_message_clear(&a);
    ea.value.kind = AMQP_FIELD_KIND_I64;
    ea.value.value.i64 = 7;
    cr_assert_eq(decode_with(JSON, "mid-9", "{\"id\":\"c\",\"payload\":1}", &ta, 0, &a, &err), 0,
                 "%s", err.text);
    cr_expect(a.key_len == 5 && memcmp(a.key, "mid-9", 5) == 0);
    rq_message_clear(&a);
}

/* ---- a reply that cannot be encoded (issue 11 item 5) ---- */

Test(message, an_id_longer_than_a_short_string_with_reply_to_is_undecodable)
{
    char body[600];
    char id[300];
    rq_message_t m;
    rq_msg_error_t err;

    memset(id, 'i', 256);
    id[256] = '\0';
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"payload\":\"p\"}", id);
    cr_expect_eq(decode_with(JSON, "u", body, NULL, 1, &m, &err), -1);
    cr_expect_not_null(strstr(err.text, "255"), "reason: %s", err.text);
    cr_expect_null(m.id);
    /* no reply_to: no reply to encode, the line is fine */
    cr_expect_eq(decode_with(JSON, "u", body, NULL, 0, &m, &err), 0, "%s", err.text);
    rq_message_clear(&m);
    id[255] = '\0'; /* exactly 255 bytes fits */
    snprintf(body, sizeof(body), "{\"id\":\"%s\",\"payload\":\"p\"}", id);
    cr_expect_eq(decode_with(JSON, "u", body, NULL, 1, &m, &err), 0, "%s", err.text);
    rq_message_clear(&m);
}

/* ---- tail headers from any publisher (issue 11 item 8) ---- */

typedef struct {
    const char *name;
    const char *body;
    const char *file; /* NULL: no x-file */
    int has_off;
    int64_t off;
    int has_end;
    int64_t end;
    const char *format; /* NULL: no x-format */
    int rc;             /* 0 or -1 */
    int64_t want_start, want_end;
    int want_verbatim;
    const char *reason;
} tcase_t;

#define I64MAX INT64_MAX
static const tcase_t tcases[] = {
    {"one line with its newline", "abc", "f0", 1, 10, 1, 14, NULL, 0, 10, 14, 0, NULL},
    {"a partial line without newline", "abc", "f0", 1, 10, 1, 13, NULL, 0, 10, 13, 0, NULL},
    {"no x-end: line plus newline", "abc", "f0", 1, 10, 0, 0, NULL, 0, 10, 14, 0, NULL},
    {"a chunk", "a\nb\n", "f0", 1, 0, 1, 4, "lines", 0, 0, 4, 1, NULL},
    {"a chunk without x-end", "a\nb\n", "f0", 1, 7, 0, 0, "lines", 0, 7, 11, 1, NULL},
    {"a chunk ending at INT64_MAX", "ab", "f0", 1, I64MAX - 2, 1, I64MAX, "lines", 0, I64MAX - 2,
     I64MAX, 1, NULL},
    {"x-offset INT64_MAX, one line", "evil", "f0", 1, I64MAX, 0, 0, NULL, -1, 0, 0, 0, "range"},
    {"x-offset INT64_MAX, x-end INT64_MAX", "", "f0", 1, I64MAX, 1, I64MAX, NULL, -1, 0, 0, 0,
     "range"},
    {"x-offset near INT64_MAX, chunk", "evil\n", "f0", 1, I64MAX - 3, 0, 0, "lines", -1, 0, 0, 0,
     "range"},
    {"negative x-offset", "x", "f0", 1, -5, 0, 0, NULL, -1, 0, 0, 0, "x-offset"},
    {"INT64_MIN x-offset", "x", "f0", 1, INT64_MIN, 1, 1, NULL, -1, 0, 0, 0, "x-offset"},
    {"x-end before x-offset", "x", "f0", 1, 100, 1, 50, NULL, -1, 0, 0, 0, "range"},
    {"x-end equal to x-offset", "x", "f0", 1, 100, 1, 100, NULL, -1, 0, 0, 0, "range"},
    {"negative x-end", "x", "f0", 1, 0, 1, -1, NULL, -1, 0, 0, 0, "range"},
    {"x-end INT64_MAX on a short line", "x", "f0", 1, 0, 1, I64MAX, NULL, -1, 0, 0, 0, "range"},
    {"a range wider than the line", "abc", "f0", 1, 0, 1, 1000, NULL, -1, 0, 0, 0, "range"},
    {"a range narrower than the line", "abcdef", "f0", 1, 0, 1, 3, NULL, -1, 0, 0, 0, "range"},
    {"a chunk whose x-end is not its body", "a\nb\n", "f0", 1, 0, 1, 1 << 30, "lines", -1, 0, 0, 0,
     "range"},
    {"x-file without x-offset", "x", "f0", 0, 0, 0, 0, NULL, -1, 0, 0, 0, "x-offset"},
    {"x-file with spaces", "x", "f 0", 1, 0, 0, 0, NULL, -1, 0, 0, 0, "x-file"},
    {"an unknown x-format", "x\n", "f0", 1, 0, 0, 0, "csv", -1, 0, 0, 0, "x-format"},
    {"no x-file: not a tailed line", "x", NULL, 1, I64MAX, 0, 0, NULL, 0, 0, 0, 0, NULL},
};

static void run_tcase(const tcase_t *c)
{
    amqp_table_entry_t e[4];
    amqp_table_t t = {0, e};
    rq_message_t m;
    rq_msg_error_t err;
    rq_msg_input_t in = {0};
    rq_wire_msg_t w;
    int rc;

    if (c->file != NULL)
        e[t.num_entries++] = (amqp_table_entry_t){
            amqp_cstring_bytes("x-file"),
            {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(c->file)}};
    if (c->has_off)
        e[t.num_entries++] = (amqp_table_entry_t){
            amqp_cstring_bytes("x-offset"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = c->off}};
    if (c->has_end)
        e[t.num_entries++] = (amqp_table_entry_t){
            amqp_cstring_bytes("x-end"), {.kind = AMQP_FIELD_KIND_I64, .value.i64 = c->end}};
    if (c->format != NULL)
        e[t.num_entries++] = (amqp_table_entry_t){
            amqp_cstring_bytes("x-format"),
            {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes(c->format)}};
    in.content_type = RAW;
    in.content_type_len = strlen(RAW);
    in.message_id = "f0:1";
    in.message_id_len = 4;
    in.body = c->body;
    in.body_len = strlen(c->body);
    in.wire = wire_of(&t, &w);
    rc = rq_message_decode(&in, 60, &m, &err);
    cr_expect_eq(rc, c->rc, "[%s] rc %d, expected %d (%s)", c->name, rc, c->rc,
                 rc < 0 ? err.text : "-");
    if (rc < 0 && c->rc < 0)
        cr_expect_not_null(strstr(err.text, c->reason), "[%s] reason \"%s\" lacks \"%s\"", c->name,
                           err.text, c->reason);
    if (rc == 0 && c->rc == 0) {
        cr_expect_eq(m.tailed, c->file != NULL, "[%s] tailed", c->name);
        if (c->file != NULL) {
            cr_expect_str_eq(m.file_id, c->file, "[%s] file id", c->name);
            cr_expect_eq(m.start, c->want_start, "[%s] start %lld", c->name, (long long)m.start);
            cr_expect_eq(m.end, c->want_end, "[%s] end %lld", c->name, (long long)m.end);
            cr_expect_eq(m.verbatim, c->want_verbatim, "[%s] verbatim", c->name);
        }
    }
    rq_message_clear(&m);
}

Test(message, tail_ranges_are_bounds_checked)
{
    for (size_t i = 0; i < sizeof(tcases) / sizeof(tcases[0]); i++)
        run_tcase(&tcases[i]);
}

Test(message, input_from_wire_takes_headers_and_reply_to)
{
    amqp_basic_properties_t p;
    amqp_table_entry_t e = {amqp_cstring_bytes("x-file"),
                            {.kind = AMQP_FIELD_KIND_UTF8, .value.bytes = amqp_cstring_bytes("f")}};
    rq_msg_input_t in;
    rq_wire_msg_t w;

    memset(&p, 0, sizeof(p));
    input_from(&p, amqp_empty_bytes, &w, &in);
    cr_expect_null(in.wire);
    cr_expect_eq(in.has_reply_to, 0);
    p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    p.headers.num_entries = 1;
    p.headers.entries = &e;
    p.reply_to = amqp_cstring_bytes("q");
    input_from(&p, amqp_empty_bytes, &w, &in);
    cr_expect_eq(in.wire, &w);
    cr_expect_eq(in.wire->file.state, RQ_WIRE_OK);
    cr_expect_eq(in.has_reply_to, 1);
}

/* Review of issue 14: a foreign message with no message_id takes its correlation_id as its
 * id, but never as its dedup key: clients reuse correlation ids across messages (a saga or
 * conversation id), and keying on it would skip every later message's line as a duplicate. */
Test(message, a_correlation_id_is_an_id_never_a_dedup_key)
{
    rq_msg_input_t in;
    rq_message_t a, b;
    rq_msg_error_t err;

    memset(&in, 0, sizeof(in));
    in.correlation_id = "saga-7";
    in.correlation_id_len = 6;
    in.body = "30";
    in.body_len = 2;
    cr_assert_eq(rq_message_decode(&in, 10, &a, &err), 0, "%s", err.text);
    in.body = "31";
    cr_assert_eq(rq_message_decode(&in, 10, &b, &err), 0, "%s", err.text);
    cr_expect_str_eq(a.id, "saga-7", "the id (and the reply's message_id)");
    cr_expect(a.key_len != b.key_len || memcmp(a.key, b.key, a.key_len) != 0,
              "two messages, two keys (got %.*s twice)", (int)a.key_len, a.key);
    cr_expect(a.key_len != 6 || memcmp(a.key, "saga-7", 6) != 0, "not the correlation id");
    rq_message_clear(&a);
    rq_message_clear(&b);
}

/* jansson skips a raw NUL byte between tokens, so `{"payload":2<NUL>}` parsed and the
 * payload's raw span carried the NUL into the output line. JSON text cannot hold a raw NUL:
 * declared application/json it is undecodable (the DLQ); without a content type, raw text. */
Test(message, a_raw_nul_byte_makes_a_body_not_json)
{
    static const char body[] = "{\"payload\":2\0}";
    rq_msg_input_t in;
    rq_message_t m;
    rq_msg_error_t err;

    memset(&in, 0, sizeof(in));
    in.content_type = "application/json";
    in.content_type_len = 16;
    in.message_id = "n1";
    in.message_id_len = 2;
    in.body = body;
    in.body_len = sizeof(body) - 1;
    cr_expect_eq(rq_message_decode(&in, 10, &m, &err), -1, "declared JSON: undecodable");
    in.content_type = NULL;
    in.content_type_len = 0;
    cr_assert_eq(rq_message_decode(&in, 10, &m, &err), 0, "%s", err.text);
    cr_expect(m.line_len != 2 || memcmp(m.line, "2", 2) != 0, "not read as the JSON 2");
    rq_message_clear(&m);
}
