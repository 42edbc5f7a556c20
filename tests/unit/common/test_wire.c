/* Unit tests for common/wire.c: the wire contract. Round trips go through rabbitmq-c's own
 * property encoder and decoder (the bytes a broker would carry); foreign-client cases build
 * the tables other clients send. The literals here are the contract, spelled out on purpose.
 * wire.c allocates nothing (encode fills caller storage, decode borrows), so there is no
 * allocation-failure test. */
#include <amqp.h>
#include <amqp_framing.h>
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "wire.h"

/* Encodes props as rabbitmq-c sends them and decodes them back into *out (pool-owned).
 * Returns the encoder's status (>= 0 on success). */
static int through_the_wire(const amqp_basic_properties_t *props, amqp_pool_t *pool,
                            amqp_basic_properties_t **out)
{
    static char buf[131072];
    amqp_bytes_t enc = {sizeof(buf), buf};
    int n = amqp_encode_properties(AMQP_BASIC_CLASS, (void *)(uintptr_t)props, enc);

    if (n < 0)
        return n;
    enc.len = (size_t)n;
    cr_assert_eq(amqp_decode_properties(AMQP_BASIC_CLASS, pool, enc, (void **)out), 0);
    return n;
}

static int bytes_is(amqp_bytes_t b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.bytes, s, b.len) == 0;
}

static amqp_table_entry_t e_str(const char *k, const char *v)
{
    amqp_table_entry_t e = {amqp_cstring_bytes(k), {.kind = AMQP_FIELD_KIND_UTF8}};

    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static amqp_table_entry_t e_kind(const char *k, uint8_t kind)
{
    amqp_table_entry_t e;

    memset(&e, 0, sizeof(e));
    e.key = amqp_cstring_bytes(k);
    e.value.kind = kind;
    return e;
}

static amqp_basic_properties_t with_table(amqp_table_entry_t *e, int n)
{
    amqp_basic_properties_t p;

    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = n;
    p.headers.entries = e;
    return p;
}

Test(wire, names_are_the_contract)
{
    cr_expect_str_eq(RQ_WIRE_HDR_PUBLISHED_MS, "x-published-ms");
    cr_expect_str_eq(RQ_WIRE_HDR_SOURCE, "x-source");
    cr_expect_str_eq(RQ_WIRE_HDR_UID, "x-relayq-uid");
    cr_expect_str_eq(RQ_WIRE_HDR_FILE, "x-file");
    cr_expect_str_eq(RQ_WIRE_HDR_OFFSET, "x-offset");
    cr_expect_str_eq(RQ_WIRE_HDR_END, "x-end");
    cr_expect_str_eq(RQ_WIRE_HDR_FORMAT, "x-format");
    cr_expect_str_eq(RQ_WIRE_HDR_LINES, "x-lines");
    cr_expect_str_eq(RQ_WIRE_HDR_ATTEMPT, "x-relayq-attempt");
    cr_expect_str_eq(RQ_WIRE_HDR_LAST_ERROR, "x-relayq-last-error");
    cr_expect_str_eq(RQ_WIRE_HDR_REASON, "x-relayq-reason");
    cr_expect_str_eq(RQ_WIRE_HDR_ATTEMPTS, "x-relayq-attempts");
    cr_expect_str_eq(RQ_WIRE_HDR_HEADERS_DROPPED, "x-relayq-headers-dropped");
    cr_expect_str_eq(RQ_WIRE_HDR_REPLAYED, "x-relayq-replayed");
    cr_expect_str_eq(RQ_WIRE_HDR_DEATH, "x-death");
    cr_expect_str_eq(RQ_WIRE_ARG_QUEUE_TYPE, "x-queue-type");
    cr_expect_str_eq(RQ_WIRE_ARG_DL_EXCHANGE, "x-dead-letter-exchange");
    cr_expect_str_eq(RQ_WIRE_ARG_DL_ROUTING_KEY, "x-dead-letter-routing-key");
    cr_expect_str_eq(RQ_WIRE_ARG_DL_STRATEGY, "x-dead-letter-strategy");
    cr_expect_str_eq(RQ_WIRE_ARG_OVERFLOW, "x-overflow");
    cr_expect_str_eq(RQ_WIRE_ARG_MESSAGE_TTL, "x-message-ttl");
    cr_expect_str_eq(RQ_WIRE_ARG_DELIVERY_LIMIT, "x-delivery-limit");
}

Test(wire, api_message_round_trip)
{
    rq_wire_out_t m;
    amqp_basic_properties_t props, *back;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX];
    amqp_pool_t pool;
    rq_wire_msg_t w;
    rq_wire_error_t err;

    memset(&m, 0, sizeof(m));
    m.message_id = "client-7";
    m.content_type = "application/json";
    m.correlation_id = "5b0c-corr";
    m.reply_to = "amq.gen-reply";
    m.app_id = "relayq-producer";
    m.published_ms = 1767225600123;
    m.source = "api";
    m.uid = "5b0c-corr";
    rq_wire_encode(&m, &props, hdr);
    cr_expect_eq(props.headers.num_entries, 3);
    cr_expect(bytes_is(props.headers.entries[0].key, "x-published-ms"));
    cr_expect(bytes_is(props.headers.entries[1].key, "x-source"));
    cr_expect(bytes_is(props.headers.entries[2].key, "x-relayq-uid"));
    init_amqp_pool(&pool, 4096);
    cr_assert_geq(through_the_wire(&props, &pool, &back), 0);
    cr_assert_eq(rq_wire_decode(back, &w, &err), 0, "%s", err.text);
    cr_expect(w.has_message_id && bytes_is(w.message_id, "client-7"));
    cr_expect(w.has_content_type && bytes_is(w.content_type, "application/json"));
    cr_expect(w.has_correlation_id && bytes_is(w.correlation_id, "5b0c-corr"));
    cr_expect(w.has_reply_to && bytes_is(w.reply_to, "amq.gen-reply"));
    cr_expect(back->_flags & AMQP_BASIC_APP_ID_FLAG);
    cr_expect(bytes_is(back->app_id, "relayq-producer"));
    cr_expect(w.has_delivery_mode && w.delivery_mode == 2, "persistent");
    cr_expect(w.has_timestamp && w.timestamp == 1767225600);
    cr_expect(w.published_ms_header.state == RQ_WIRE_OK && !w.published_ms_header.converted);
    cr_expect_eq(w.published_ms, 1767225600123);
    cr_expect(w.source.state == RQ_WIRE_OK && bytes_is(w.source.v, "api"));
    cr_expect(w.uid.state == RQ_WIRE_OK && bytes_is(w.uid.v, "5b0c-corr"));
    cr_expect_eq(w.file.state, RQ_WIRE_ABSENT);
    cr_expect_eq(w.offset.state, RQ_WIRE_ABSENT);
    cr_expect_eq(w.attempt.state, RQ_WIRE_ABSENT);
    cr_expect_eq(w.death, RQ_WIRE_ABSENT);
    empty_amqp_pool(&pool);
}

Test(wire, tailed_chunk_round_trip)
{
    rq_wire_out_t m;
    amqp_basic_properties_t props, *back;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX];
    amqp_pool_t pool;
    rq_wire_msg_t w;
    static const char *const order[] = {"x-published-ms", "x-source", "x-file", "x-offset",
                                        "x-end",          "x-format", "x-lines"};

    memset(&m, 0, sizeof(m));
    m.message_id = "dev1:ino2:100";
    m.content_type = "application/octet-stream";
    m.correlation_id = "c";
    m.published_ms = 999;
    m.source = "tail";
    m.file_id = "dev1:ino2";
    m.has_offset = m.has_end = 1;
    m.offset = 100;
    m.end = INT64_MAX;
    m.chunk = 1;
    m.lines = 3;
    rq_wire_encode(&m, &props, hdr);
    cr_assert_eq(props.headers.num_entries, 7);
    for (int i = 0; i < 7; i++)
        cr_expect(bytes_is(props.headers.entries[i].key, order[i]), "header %d", i);
    cr_expect_not(props._flags & AMQP_BASIC_REPLY_TO_FLAG, "tailed lines want no reply");
    init_amqp_pool(&pool, 4096);
    cr_assert_geq(through_the_wire(&props, &pool, &back), 0);
    cr_assert_eq(rq_wire_decode(back, &w, NULL), 0);
    cr_expect_not(w.has_reply_to);
    cr_expect(w.file.state == RQ_WIRE_OK && bytes_is(w.file.v, "dev1:ino2"));
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == 100);
    cr_expect(w.end.state == RQ_WIRE_OK && w.end.v == INT64_MAX);
    cr_expect(w.format.state == RQ_WIRE_OK && bytes_is(w.format.v, "lines"));
    cr_expect(w.lines.state == RQ_WIRE_OK && w.lines.v == 3);
    cr_expect_eq(w.published_ms, 999, "from the header, not the timestamp (0 s)");
    cr_expect_eq(w.uid.state, RQ_WIRE_ABSENT);
    empty_amqp_pool(&pool);
}

Test(wire, tool_message_transient_without_optional_properties)
{
    rq_wire_out_t m;
    amqp_basic_properties_t props;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX];
    rq_wire_msg_t w;

    memset(&m, 0, sizeof(m));
    m.message_id = "msg-0";
    m.transient = 1;
    m.published_ms = 5000;
    m.source = "tool";
    m.has_offset = 1; /* an offset without x-file: not a tailed line */
    m.offset = 0;
    rq_wire_encode(&m, &props, hdr);
    cr_expect_eq(props._flags, AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                                   AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG);
    cr_expect_eq(props.delivery_mode, 1);
    cr_expect_eq(props.headers.num_entries, 3);
    rq_wire_decode(&props, &w, NULL);
    cr_expect_not(w.has_content_type || w.has_correlation_id || w.has_reply_to);
    cr_expect_eq(w.file.state, RQ_WIRE_ABSENT);
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == 0);
}

Test(wire, retry_and_dlq_headers_round_trip)
{
    amqp_table_entry_t e[5];
    amqp_basic_properties_t p, *back;
    amqp_pool_t pool;
    rq_wire_msg_t w;
    int n = rq_wire_retry_headers(2, "boom", e);

    cr_assert_eq(n, 2);
    n += rq_wire_dlq_headers("undecodable: bad JSON", 3, 1, e + n);
    cr_assert_eq(n, 5);
    p = with_table(e, n);
    init_amqp_pool(&pool, 4096);
    cr_assert_geq(through_the_wire(&p, &pool, &back), 0);
    cr_assert_eq(rq_wire_decode(back, &w, NULL), 0);
    cr_expect(w.attempt.state == RQ_WIRE_OK && w.attempt.v == 2);
    cr_expect(w.last_error.state == RQ_WIRE_OK && bytes_is(w.last_error.v, "boom"));
    cr_expect(w.reason.state == RQ_WIRE_OK && bytes_is(w.reason.v, "undecodable: bad JSON"));
    cr_expect(w.attempts.state == RQ_WIRE_OK && w.attempts.v == 3 && !w.attempts.converted);
    cr_expect(bytes_is(back->headers.entries[4].key, "x-relayq-headers-dropped"));
    cr_expect_eq(rq_wire_dlq_headers("r", 1, 0, e), 2, "without headers-dropped");
    e[0] = rq_wire_replayed_header();
    cr_expect(bytes_is(e[0].key, "x-relayq-replayed"));
    cr_expect(e[0].value.kind == AMQP_FIELD_KIND_BOOLEAN && e[0].value.value.boolean);
    empty_amqp_pool(&pool);
}

Test(wire, short_strings_of_255_bytes_fit_256_do_not)
{
    char id[257];
    rq_wire_out_t m;
    amqp_basic_properties_t props, *back;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX];
    amqp_pool_t pool;
    rq_wire_msg_t w;

    memset(id, 'a', 255);
    id[255] = '\0';
    memset(&m, 0, sizeof(m));
    m.message_id = id;
    m.content_type = id;
    m.source = "api";
    rq_wire_encode(&m, &props, hdr);
    init_amqp_pool(&pool, 4096);
    cr_assert_geq(through_the_wire(&props, &pool, &back), 0);
    rq_wire_decode(back, &w, NULL);
    cr_expect_eq(w.message_id.len, RQ_WIRE_SHORTSTR_MAX);
    cr_expect_eq(w.content_type.len, RQ_WIRE_SHORTSTR_MAX);
    cr_expect_eq(memcmp(w.message_id.bytes, id, 255), 0);
    id[255] = 'a';
    id[256] = '\0';
    rq_wire_encode(&m, &props, hdr);
    cr_expect_lt(through_the_wire(&props, &pool, &back), 0, "256 bytes: rabbitmq-c refuses");
    empty_amqp_pool(&pool);
}

Test(wire, missing_headers)
{
    amqp_basic_properties_t p;
    rq_wire_msg_t w;
    rq_wire_error_t err;

    memset(&p, 0, sizeof(p));
    cr_expect_eq(rq_wire_decode(&p, &w, &err), 0);
    cr_expect_not(w.has_headers || w.has_message_id || w.has_content_type);
    cr_expect_eq(w.uid.state, RQ_WIRE_ABSENT);
    cr_expect_eq(w.published_ms, -1, "no header, no timestamp");
    p = with_table(NULL, 0);
    cr_expect_eq(rq_wire_decode(&p, &w, &err), 0);
    cr_expect(w.has_headers);
    cr_expect_eq(w.file.state, RQ_WIRE_ABSENT);
    p._flags |= AMQP_BASIC_TIMESTAMP_FLAG;
    p.timestamp = 1767225600;
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.published_ms, 1767225600000LL, "the timestamp when the header is absent");
}

Test(wire, a_header_of_the_wrong_type_is_named)
{
    amqp_table_entry_t e[4];
    amqp_basic_properties_t p;
    rq_wire_msg_t w;
    rq_wire_error_t err;

    e[0] = e_str("x-file", "f0");
    e[1] = e_kind("x-offset", AMQP_FIELD_KIND_BOOLEAN);
    e[1].value.value.boolean = 1;
    e[2] = e_kind("x-relayq-uid", AMQP_FIELD_KIND_BYTES);
    e[2].value.value.bytes = amqp_cstring_bytes("uid-as-bytes");
    e[3] = e_kind("x-end", AMQP_FIELD_KIND_TABLE);
    p = with_table(e, 4);
    cr_expect_eq(rq_wire_decode(&p, &w, &err), -1);
    cr_expect_str_eq(err.text, "header x-offset is a boolean, not an integer", "the first bad");
    cr_expect_eq(w.offset.state, RQ_WIRE_BAD_TYPE);
    cr_expect_eq(w.uid.state, RQ_WIRE_BAD_TYPE, "the uid must be a long string");
    cr_expect_eq(w.end.state, RQ_WIRE_BAD_TYPE);
    cr_expect(w.file.state == RQ_WIRE_OK && bytes_is(w.file.v, "f0"), "the rest is decoded");
    cr_expect_eq(rq_wire_decode(&p, &w, NULL), -1, "err may be NULL");

    e[0] = e_kind("x-death", AMQP_FIELD_KIND_UTF8);
    p = with_table(e, 1);
    cr_expect_eq(rq_wire_decode(&p, &w, &err), -1);
    cr_expect_str_eq(err.text, "header x-death is a string, not an array of tables");
    cr_expect_eq(w.death, RQ_WIRE_BAD_TYPE);

    e[0] = e_kind("x-reason-not-ours", AMQP_FIELD_KIND_VOID);
    p = with_table(e, 1);
    cr_expect_eq(rq_wire_decode(&p, &w, &err), 0, "other headers are not checked");
}

Test(wire, integer_rule)
{
    amqp_table_entry_t e = e_kind("x-offset", AMQP_FIELD_KIND_I8);
    amqp_basic_properties_t p = with_table(&e, 1);
    rq_wire_msg_t w;

    e.value.value.i8 = -3;
    rq_wire_decode(&p, &w, NULL);
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == -3 && !w.offset.converted);
    e.value.kind = AMQP_FIELD_KIND_U64;
    e.value.value.u64 = (uint64_t)INT64_MAX + 1;
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.offset.state, RQ_WIRE_BAD_TYPE, "above INT64_MAX");
    e.value.kind = AMQP_FIELD_KIND_F64;
    e.value.value.f64 = 12.9;
    rq_wire_decode(&p, &w, NULL);
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == 12 && w.offset.converted);
    e.value.value.f64 = -1;
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.offset.state, RQ_WIRE_BAD_TYPE);
    e = e_str("x-offset", "42");
    rq_wire_decode(&p, &w, NULL);
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == 42 && w.offset.converted);
    e = e_str("x-offset", "42x");
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.offset.state, RQ_WIRE_BAD_TYPE);
    e = e_str("x-offset", "");
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.offset.state, RQ_WIRE_BAD_TYPE);
}

/* What pika sends for {"x-file": "dev:ino", "x-offset": 12, "x-end": 16, "x-format":
 * b"lines", "x-published-ms": 1767225600123, "x-relayq-attempt": "2", "flag": True}: str as
 * 'S', a small int as 'I' (I32), a big one as 'l', bytes as 'x', bool as 't'. */
Test(wire, a_table_as_pika_sends_it)
{
    amqp_table_entry_t e[7];
    amqp_basic_properties_t p, *back;
    amqp_pool_t pool;
    rq_wire_msg_t w;
    rq_wire_error_t err;

    e[0] = e_str("x-file", "dev:ino");
    e[1] = e_kind("x-offset", AMQP_FIELD_KIND_I32);
    e[1].value.value.i32 = 12;
    e[2] = e_kind("x-end", AMQP_FIELD_KIND_I32);
    e[2].value.value.i32 = 16;
    e[3] = e_kind("x-format", AMQP_FIELD_KIND_BYTES);
    e[3].value.value.bytes = amqp_cstring_bytes("lines");
    e[4] = e_kind("x-published-ms", AMQP_FIELD_KIND_I64);
    e[4].value.value.i64 = 1767225600123;
    e[5] = e_str("x-relayq-attempt", "2");
    e[6] = e_kind("flag", AMQP_FIELD_KIND_BOOLEAN);
    e[6].value.value.boolean = 1;
    p = with_table(e, 7);
    init_amqp_pool(&pool, 4096);
    cr_assert_geq(through_the_wire(&p, &pool, &back), 0);
    cr_assert_eq(rq_wire_decode(back, &w, &err), 0, "%s", err.text);
    cr_expect(w.file.state == RQ_WIRE_OK && bytes_is(w.file.v, "dev:ino"));
    cr_expect(w.offset.state == RQ_WIRE_OK && w.offset.v == 12);
    cr_expect(w.end.state == RQ_WIRE_OK && w.end.v == 16);
    cr_expect(w.format.state == RQ_WIRE_OK && bytes_is(w.format.v, "lines"));
    cr_expect_eq(w.published_ms, 1767225600123);
    cr_expect(w.attempt.state == RQ_WIRE_OK && w.attempt.v == 2 && w.attempt.converted);
    empty_amqp_pool(&pool);
}

Test(wire, duplicates_the_first_counts)
{
    amqp_table_entry_t e[3];
    amqp_basic_properties_t p;
    rq_wire_msg_t w;

    e[0] = e_kind("x-relayq-attempt", AMQP_FIELD_KIND_BOOLEAN);
    e[1] = e_kind("x-relayq-attempt", AMQP_FIELD_KIND_I64);
    e[1].value.value.i64 = 4;
    e[2] = e_str("x-relayq-uid", "u1");
    p = with_table(e, 3);
    rq_wire_decode(&p, &w, NULL);
    cr_expect_eq(w.attempt.state, RQ_WIRE_BAD_TYPE, "a bad first entry is not skipped");
}

Test(wire, x_death_latest_reason_and_count)
{
    amqp_table_entry_t d1[4], d2[1], top[1];
    amqp_field_value_t arr[2];
    amqp_basic_properties_t p;
    rq_wire_msg_t w;

    d1[0] = e_kind("reason", AMQP_FIELD_KIND_BYTES); /* not 'S': skipped */
    d1[1] = e_str("reason", "rejected");
    d1[2] = e_kind("count", AMQP_FIELD_KIND_I64);
    d1[2].value.value.i64 = -1; /* negative: skipped */
    d1[3] = e_kind("count", AMQP_FIELD_KIND_I64);
    d1[3].value.value.i64 = 3;
    d2[0] = e_str("reason", "expired");
    arr[0].kind = AMQP_FIELD_KIND_TABLE;
    arr[0].value.table = (amqp_table_t){4, d1};
    arr[1].kind = AMQP_FIELD_KIND_TABLE;
    arr[1].value.table = (amqp_table_t){1, d2};
    top[0] = e_kind("x-death", AMQP_FIELD_KIND_ARRAY);
    top[0].value.value.array = (amqp_array_t){2, arr};
    p = with_table(top, 1);
    cr_assert_eq(rq_wire_decode(&p, &w, NULL), 0);
    cr_expect_eq(w.death, RQ_WIRE_OK);
    cr_expect(w.death_reason.state == RQ_WIRE_OK && bytes_is(w.death_reason.v, "rejected"));
    cr_expect(w.death_count.state == RQ_WIRE_OK && w.death_count.v == 3);
    top[0].value.value.array = (amqp_array_t){0, arr};
    cr_expect_eq(rq_wire_decode(&p, &w, NULL), -1, "an empty x-death array");
}

Test(wire, dropped_on_copy)
{
    static const char *const dropped[] = {
        "x-death",          "x-first-death-reason", "x-last-death-queue",
        "x-relayq-attempt", "x-relayq-reason",      "x-relayq-headers-dropped"};
    static const char *const kept[] = {"x-relayq-uid", "x-firstname", "x-last-seen",
                                       "x-deathstar",  "X-Death",     "x-source"};

    for (size_t i = 0; i < sizeof(dropped) / sizeof(dropped[0]); i++)
        cr_expect(rq_wire_dropped_on_copy(amqp_cstring_bytes(dropped[i])), "%s", dropped[i]);
    for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++)
        cr_expect_not(rq_wire_dropped_on_copy(amqp_cstring_bytes(kept[i])), "%s", kept[i]);
}

/* Trace context (issue 14): encoded after the contract's headers, decoded when valid, and a
 * foreign client's odd trace header is ignored, never a reason to refuse the message. */
Test(wire, trace_headers_round_trip_and_bad_ones_are_ignored)
{
    static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    rq_wire_out_t o;
    amqp_basic_properties_t props;
    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX], bad[3];
    rq_wire_msg_t m;
    rq_wire_error_t err;

    memset(&o, 0, sizeof(o));
    o.message_id = "m1";
    o.source = RQ_WIRE_SOURCE_API;
    o.published_ms = 1;
    o.traceparent = tp;
    o.tracestate = "congo=t61rcWkgMzE";
    rq_wire_encode(&o, &props, hdr);
    cr_assert_eq(rq_wire_decode(&props, &m, &err), 0, "%s", err.text);
    cr_assert_eq(m.traceparent.state, RQ_WIRE_OK);
    cr_expect_eq(m.traceparent.v.len, strlen(tp));
    cr_expect_eq(memcmp(m.traceparent.v.bytes, tp, strlen(tp)), 0);
    cr_assert_eq(m.tracestate.state, RQ_WIRE_OK);
    cr_expect_eq(m.tracestate.v.len, 17);

    /* A boolean traceparent, a malformed one after it, a tracestate with CR LF. */
    bad[0].key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACEPARENT);
    bad[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    bad[0].value.value.boolean = 1;
    bad[1].key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACEPARENT);
    bad[1].value.kind = AMQP_FIELD_KIND_UTF8;
    bad[1].value.value.bytes = amqp_cstring_bytes("00-zz-yy-01");
    bad[2].key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACESTATE);
    bad[2].value.kind = AMQP_FIELD_KIND_UTF8;
    bad[2].value.value.bytes = amqp_cstring_bytes("a=b\r\nx: y");
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = 3;
    props.headers.entries = bad;
    cr_expect_eq(rq_wire_decode(&props, &m, &err), 0, "never refused for its trace headers");
    cr_expect_eq(m.traceparent.state, RQ_WIRE_ABSENT);
    cr_expect_eq(m.tracestate.state, RQ_WIRE_ABSENT);
}

/* Review of issue 14: a later-version traceparent may carry extra fields, but only its first
 * 55 bytes are read and carried on: a 150 kB one must not make the reply too big for a frame
 * (a lost connection and a redelivery loop for the whole group). */
Test(wire, a_long_later_version_traceparent_is_carried_as_55_bytes)
{
    size_t n = 150000;
    char *tp = malloc(n + 1);
    amqp_table_entry_t e;
    amqp_basic_properties_t props;
    rq_wire_msg_t m;

    cr_assert_not_null(tp);
    memcpy(tp, "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", 56);
    memset(tp + 56, 'A', n - 56);
    tp[n] = '\0';
    e.key = amqp_cstring_bytes(RQ_WIRE_HDR_TRACEPARENT);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(tp);
    memset(&props, 0, sizeof(props));
    props._flags = AMQP_BASIC_HEADERS_FLAG;
    props.headers.num_entries = 1;
    props.headers.entries = &e;
    cr_assert_eq(rq_wire_decode(&props, &m, NULL), 0);
    cr_assert_eq(m.traceparent.state, RQ_WIRE_OK);
    cr_expect_eq(m.traceparent.v.len, 55);
    free(tp);
}
