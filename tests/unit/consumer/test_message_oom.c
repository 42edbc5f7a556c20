/* test_message_oom.c - message decoding when any allocation fails.
 *
 * Jansson's style: fail the n-th allocation, for every n, until a run completes without a
 * failure. A run must decode exactly what a run without failures decodes, or return -2 with
 * "out of memory" and *out empty: never -1, which would dead-letter a good message because
 * the consumer was short of memory. Nothing may leak (LSan, in the sanitizer build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <string.h>

#include "oom.h"
#include "json_alloc.h"
#include "message.h"
#include "wire.h"
#include "wire_of.h"

#define OOM_MAX_RUNS 100000ul

static amqp_table_entry_t entry_str(const char *key, const char *value)
{
    amqp_table_entry_t e;

    memset(&e, 0, sizeof(e));
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

static amqp_table_entry_t entry_i64(const char *key, int64_t value)
{
    amqp_table_entry_t e;

    memset(&e, 0, sizeof(e));
    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    return e;
}

static int bytes_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Decodes `in` once without failures, then with each allocation failing in turn. */
static void every_allocation(const char *name, const rq_msg_input_t *in)
{
    rq_message_t want, got;
    rq_msg_error_t err;
    unsigned long n;
    int done = 0;

    rq_json_alloc_init();
    cr_assert_eq(rq_message_decode(in, 60, &want, &err), 0, "%s: %s", name, err.text);
    for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
        int rc, injected;

        oom_start(n);
        rc = rq_message_decode(in, 60, &got, &err);
        injected = oom_stop();
        if (rc == 0) {
            cr_assert_eq(got.kind, want.kind, "%s, n=%lu", name, n);
            cr_assert_str_eq(got.id, want.id, "%s, n=%lu", name, n);
            cr_assert(bytes_eq(got.line, got.line_len, want.line, want.line_len),
                      "%s, n=%lu: line %.*s", name, n, (int)got.line_len, got.line);
            cr_assert(bytes_eq(got.reply, got.reply_len, want.reply, want.reply_len),
                      "%s, n=%lu: reply", name, n);
            if (in->correlation_id != NULL && in->message_id == NULL && want.key_len == 36 &&
                !bytes_eq(want.key, want.key_len, want.id, strlen(want.id)))
                cr_assert_eq(got.key_len, 36, "%s, n=%lu: a fresh key", name, n);
            else
                cr_assert(bytes_eq(got.key, got.key_len, want.key, want.key_len), "%s, n=%lu: key",
                          name, n);
            cr_assert_eq(got.processing_time, want.processing_time, "%s, n=%lu", name, n);
            cr_assert_eq(got.fail_times, want.fail_times, "%s, n=%lu", name, n);
            cr_assert_eq(got.tailed, want.tailed, "%s, n=%lu", name, n);
            cr_assert_eq(got.start, want.start, "%s, n=%lu", name, n);
            cr_assert_eq(got.end, want.end, "%s, n=%lu", name, n);
            cr_assert(bytes_eq(got.payload, got.payload_len, want.payload, want.payload_len),
                      "%s, n=%lu: payload", name, n);
            rq_message_clear(&got);
        } else {
            cr_assert(injected, "%s failed with no allocation failure: %s", name, err.text);
            cr_assert_eq(rc, -2, "%s, n=%lu: rc %d (%s): a good message would be dead-lettered",
                         name, n, rc, err.text);
            cr_assert_str_eq(err.text, "out of memory", "%s, n=%lu", name, n);
            cr_assert(got.id == NULL && got.reply == NULL && got.key_buf == NULL,
                      "%s, n=%lu: *out not empty", name, n);
        }
        done = !injected;
    }
    cr_assert(done, "%s: still failing after %lu runs", name, OOM_MAX_RUNS);
    cr_assert_gt(n, 2, "%s: no allocation seen", name);
    rq_message_clear(&want);
}

Test(message_oom, json_object_payload)
{
    static const char body[] = "{\"id\":\"c-1\",\"payload\":{\"b\":1,\"a\":[1,\"x\",{\"c\":null}]},"
                               "\"processing_time\":0.25,\"fail_times\":3,\"extra\":[1,2]}";
    amqp_table_entry_t e[1];
    amqp_table_t headers;
    rq_wire_msg_t wire;
    rq_msg_input_t in;

    e[0] = entry_str(RQ_WIRE_HDR_UID, "0b6d1f3e-uid");
    headers.num_entries = 1;
    headers.entries = e;
    memset(&in, 0, sizeof(in));
    in.content_type = "application/json";
    in.content_type_len = strlen(in.content_type);
    in.message_id = "c-1";
    in.message_id_len = 3;
    in.body = body;
    in.body_len = sizeof(body) - 1;
    in.wire = wire_of(&headers, &wire);
    in.has_reply_to = 1;
    every_allocation("json object payload", &in);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(message_oom, json_string_payload_message_id_key)
{
    static const char body[] = "{\"payload\":\"hello\\nworld\"}";
    rq_msg_input_t in;

    memset(&in, 0, sizeof(in));
    in.message_id = "mid-7";
    in.message_id_len = 5;
    in.body = body;
    in.body_len = sizeof(body) - 1;
    every_allocation("json string payload", &in);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(message_oom, tailed_chunk)
{
    static const char body[] = "line one\nline two\n";
    amqp_table_entry_t e[4];
    amqp_table_t headers;
    rq_wire_msg_t wire;
    rq_msg_input_t in;

    e[0] = entry_str("x-file", "dev1:ino2");
    e[1] = entry_i64("x-offset", 100);
    e[2] = entry_i64("x-end", 100 + (int64_t)sizeof(body) - 1);
    e[3] = entry_str("x-format", "lines");
    headers.num_entries = 4;
    headers.entries = e;
    memset(&in, 0, sizeof(in));
    in.content_type = "application/octet-stream";
    in.content_type_len = strlen(in.content_type);
    in.message_id = "dev1:ino2:100";
    in.message_id_len = strlen(in.message_id);
    in.body = body;
    in.body_len = sizeof(body) - 1;
    in.wire = wire_of(&headers, &wire);
    every_allocation("tailed chunk", &in);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

/* issue 14: a foreign client's text (quoted: it holds a newline) and JSON without the
 * envelope (the payload itself, id from the correlation_id) */
Test(message_oom, foreign_text_and_bare_json)
{
    static const char text[] = "two\nlines";
    static const char bare[] = "[0.1, {\"n\":123456789012345678901234567890}]";
    rq_msg_input_t in;

    memset(&in, 0, sizeof(in));
    in.content_type = "text/plain";
    in.content_type_len = strlen(in.content_type);
    in.correlation_id = "corr-1";
    in.correlation_id_len = 6;
    in.has_reply_to = 1;
    in.body = text;
    in.body_len = sizeof(text) - 1;
    every_allocation("foreign text", &in);
    in.content_type = NULL;
    in.content_type_len = 0;
    in.body = bare;
    in.body_len = sizeof(bare) - 1;
    every_allocation("bare json", &in);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}
