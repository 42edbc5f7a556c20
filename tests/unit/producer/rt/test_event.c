/* test_event.c - a delivered message as a real-time event (producer/rt/event.c): payload
 * bytes verbatim, CR/LF, non-JSON and non-UTF-8 bodies, headers filtered and typed, the
 * filter's view of the message, queue and stream fields. */
#include <criterion/criterion.h>
#include <string.h>

#include "event.h"
#include "amqp_conn.h"
#include "filter.h"

static amqp_bytes_t B(const char *s)
{
    amqp_bytes_t b = {strlen(s), (void *)(uintptr_t)s};
    return b;
}

static rq_rt_event_in_t topic_in(const char *body, const amqp_basic_properties_t *props)
{
    rq_rt_event_in_t in;
    memset(&in, 0, sizeof(in));
    in.kind = RQ_RT_TOPIC;
    in.name = "orders";
    in.routing_key = B("eu.new");
    in.props = props;
    in.body = B(body);
    return in;
}

Test(event, payload_bytes_verbatim)
{
    rq_rt_event_in_t in = topic_in("{\"n\": 0.1, \"big\": 12345678901234567890}", NULL);
    rq_rt_event_msg_t m;

    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_str_eq(m.json, "{\"id\":null,\"topic\":\"orders\",\"routing_key\":\"eu.new\","
                             "\"headers\":{},\"payload\":{\"n\": 0.1, \"big\": "
                             "12345678901234567890},\"published_ms\":null}");
    cr_assert_eq(m.len, strlen(m.json));
    cr_assert_not_null(m.payload, "the filter sees the payload (big ints as reals)");
    cr_assert_not_null(json_object_get(m.payload, "big"));
    rq_rt_event_clear(&m);
}

Test(event, crlf_between_tokens_become_spaces)
{
    rq_rt_event_in_t in = topic_in("\r\n {\"a\":\r\n\"x\\ny\"}\n", NULL);
    rq_rt_event_msg_t m;

    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_null(strchr(m.json, '\n'));
    cr_assert_null(strchr(m.json, '\r'));
    cr_assert(strstr(m.json, "\"payload\":{\"a\":  \"x\\ny\"}") != NULL, "%s", m.json);
    json_t *p = json_loads(m.json, 0, NULL);
    cr_assert_not_null(p);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "payload"), "a")),
                     "x\ny");
    json_decref(p);
    rq_rt_event_clear(&m);
}

Test(event, text_and_binary_bodies)
{
    rq_rt_event_in_t in = topic_in("hello\nworld", NULL);
    rq_rt_event_msg_t m;

    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert(strstr(m.json, "\"payload\":\"hello\\nworld\"") != NULL, "%s", m.json);
    cr_assert_null(m.payload);
    rq_rt_event_clear(&m);

    in.body.bytes = "\xff\x00\x01";
    in.body.len = 3;
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert(strstr(m.json, "\"payload_base64\":\"/wAB\"") != NULL, "%s", m.json);
    cr_assert_null(strstr(m.json, "\"payload\":"));
    rq_rt_event_clear(&m);

    in.body = B("");
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert(strstr(m.json, "\"payload\":\"\"") != NULL, "%s", m.json);
    rq_rt_event_clear(&m);
}

Test(event, too_deep_body_is_a_string)
{
    char body[300];
    rq_rt_event_msg_t m;

    memset(body, '[', 100);
    memset(body + 100, ']', 100);
    body[200] = '\0';
    rq_rt_event_in_t in = topic_in(body, NULL);
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_null(m.payload);
    cr_assert(strstr(m.json, "\"payload\":\"[[[") != NULL);
    rq_rt_event_clear(&m);
}

Test(event, headers_id_published_and_filter)
{
    amqp_table_entry_t e[7];
    amqp_basic_properties_t props;
    rq_rt_event_msg_t m;

    e[0] = rq_amqp_utf8_entry("region", "eu");
    e[1] = rq_amqp_i64_entry("x-published-ms", 1700000000123);
    e[2] = rq_amqp_utf8_entry("x-relayq-uid", "u-1");
    e[3] = rq_amqp_utf8_entry("relayq-topic", "orders");
    e[4] = rq_amqp_i64_entry("n", 7);
    e[5].key = amqp_cstring_bytes("x-death");
    e[5].value.kind = AMQP_FIELD_KIND_ARRAY;
    e[5].value.value.array.num_entries = 0;
    e[5].value.value.array.entries = NULL;
    e[6].key = amqp_cstring_bytes("ok");
    e[6].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e[6].value.value.boolean = 1;
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    props.headers.num_entries = 7;
    props.headers.entries = e;
    props.message_id = amqp_cstring_bytes("m-\"1");
    rq_rt_event_in_t in = topic_in("{\"level\":\"error\"}", &props);

    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_str_eq(m.json, "{\"id\":\"m-\\\"1\",\"topic\":\"orders\",\"routing_key\":\"eu.new\","
                             "\"headers\":{\"region\":\"eu\",\"n\":7,\"ok\":true},"
                             "\"payload\":{\"level\":\"error\"},\"published_ms\":1700000000123}");
    cr_assert_str_eq(m.fm.id, "m-\"1");
    cr_assert_str_eq(m.fm.routing_key, "eu.new");

    rq_filter_t *f = rq_filter_parse("payload.level == \"error\" && headers.region == \"eu\"",
                                     strlen("payload.level == \"error\" && headers.region == "
                                            "\"eu\""),
                                     NULL, 0, NULL);
    if (f != NULL) { /* filter.c may not have landed yet */
        cr_assert_eq(rq_filter_eval(f, &m.fm), 1);
        rq_filter_free(f);
    }
    rq_rt_event_clear(&m);
}

Test(event, queue_and_stream_fields)
{
    rq_rt_event_in_t in = topic_in("1", NULL);
    rq_rt_event_msg_t m;

    in.kind = RQ_RT_QUEUE;
    in.name = "jobs";
    in.redelivered = 1;
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_str_eq(m.json, "{\"id\":null,\"queue\":\"jobs\",\"routing_key\":\"eu.new\","
                             "\"headers\":{},\"payload\":1,\"published_ms\":null,"
                             "\"redelivered\":true}");
    rq_rt_event_clear(&m);

    in.kind = RQ_RT_TOPIC;
    in.has_offset = 1;
    in.offset = 42;
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert(strstr(m.json, ",\"offset\":42}") != NULL, "%s", m.json);
    cr_assert_null(strstr(m.json, "redelivered"));
    rq_rt_event_clear(&m);
}

Test(event, timestamp_property_when_no_header)
{
    amqp_basic_properties_t props;
    rq_rt_event_msg_t m;

    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_TIMESTAMP_FLAG;
    props.timestamp = 1700000000;
    rq_rt_event_in_t in = topic_in("true", &props);
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert(strstr(m.json, "\"published_ms\":1700000000000") != NULL, "%s", m.json);
    rq_rt_event_clear(&m);
}

/* rabbitmq-c gives empty strings as {0, NULL}: an empty message id, key and body */
Test(event, empty_fields_with_null_bytes)
{
    amqp_basic_properties_t props;
    amqp_table_entry_t e[1];
    rq_rt_event_msg_t m;
    rq_rt_event_in_t in;

    memset(&props, 0, sizeof(props));
    memset(&in, 0, sizeof(in));
    e[0].key = amqp_empty_bytes;
    e[0].value.kind = AMQP_FIELD_KIND_UTF8;
    e[0].value.value.bytes = amqp_empty_bytes;
    props._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props.message_id = amqp_empty_bytes;
    props.headers.num_entries = 1;
    props.headers.entries = e;
    in.kind = RQ_RT_TOPIC;
    in.name = "t";
    in.props = &props;
    cr_assert_eq(rq_rt_event_make(&in, &m), 0);
    cr_assert_str_eq(m.json,
                     "{\"id\":\"\",\"topic\":\"t\",\"routing_key\":\"\",\"headers\":{\"\":\"\"},"
                     "\"payload\":\"\",\"published_ms\":null}");
    rq_rt_event_clear(&m);
}
