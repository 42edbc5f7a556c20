/* Unit tests for consumer/retry.c: attempt counting, the fail_times test aid, routing of a
 * failed attempt, and the properties of retry / dead-letter copies. */
#include <criterion/criterion.h>
#include <string.h>

#include "retry.h"
#include "wire.h"

static amqp_table_entry_t hdr_i64(const char *key, int64_t v)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    return e;
}

static amqp_table_entry_t hdr_str(const char *key, const char *v)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

static amqp_basic_properties_t props_with(amqp_table_entry_t *e, int n)
{
    amqp_basic_properties_t p;

    memset(&p, 0, sizeof(p));
    if (n > 0) {
        p._flags = AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = n;
        p.headers.entries = e;
    }
    return p;
}

static int has_key(const amqp_basic_properties_t *p, const char *key)
{
    for (int i = 0; i < p->headers.num_entries; i++) {
        amqp_bytes_t k = p->headers.entries[i].key;
        if (k.len == strlen(key) && memcmp(k.bytes, key, k.len) == 0)
            return 1;
    }
    return 0;
}

/* The attempt the consumer reads from properties p (one rq_wire_decode(), as the worker). */
static int attempt_of(const amqp_basic_properties_t *p)
{
    rq_wire_msg_t w;

    rq_wire_decode(p, &w, NULL);
    return rq_retry_attempt(&w);
}

Test(retry, attempt_from_header)
{
    amqp_table_entry_t e[2];
    amqp_basic_properties_t p = props_with(NULL, 0);

    cr_expect_eq(attempt_of(&p), 0, "no headers: first attempt");
    e[0] = hdr_str("x-source", "api");
    p = props_with(e, 1);
    cr_expect_eq(attempt_of(&p), 0, "absent header: first attempt");
    e[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 3);
    p = props_with(e, 2);
    cr_expect_eq(attempt_of(&p), 3);
    e[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, -4);
    cr_expect_eq(attempt_of(&p), 0, "negative counts as first");
    e[1] = hdr_str(RQ_WIRE_HDR_ATTEMPT, "2");
    cr_expect_eq(attempt_of(&p), 2, "decimal string");
    e[1] = hdr_str(RQ_WIRE_HDR_ATTEMPT, "two");
    cr_expect_eq(attempt_of(&p), 0, "not a number");
    e[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, INT64_MAX);
    cr_expect_eq(attempt_of(&p), 1000000, "capped");
}

Test(retry, simulated_failure_first_n_attempts)
{
    rq_message_t m;
    char why[128] = "untouched";

    memset(&m, 0, sizeof(m));
    cr_expect_eq(rq_retry_simulated_failure(&m, 0, why, sizeof(why)), 0, "no fail_times");
    cr_expect_str_eq(why, "untouched");
    m.fail_times = 2;
    cr_expect_eq(rq_retry_simulated_failure(&m, 0, why, sizeof(why)), 1);
    cr_expect(strstr(why, "attempt 1 of 2") != NULL, "why: %s", why);
    cr_expect_eq(rq_retry_simulated_failure(&m, 1, why, sizeof(why)), 1);
    cr_expect(strstr(why, "attempt 2 of 2") != NULL, "why: %s", why);
    cr_expect_eq(rq_retry_simulated_failure(&m, 2, why, sizeof(why)), 0, "third attempt ok");
    cr_expect_eq(rq_retry_simulated_failure(&m, 7, why, sizeof(why)), 0);
}

Test(retry, next_queue)
{
    /* MAX_RETRIES = 3: attempts 0, 1, 2 go to retry.1..3; attempt 3 (the 4th) to the DLQ */
    cr_expect_eq(rq_retry_next_queue(0, 3), 1);
    cr_expect_eq(rq_retry_next_queue(2, 3), 3);
    cr_expect_eq(rq_retry_next_queue(3, 3), 0);
    cr_expect_eq(rq_retry_next_queue(9, 3), 0, "counter above the maximum: DLQ");
    cr_expect_eq(rq_retry_next_queue(0, 0), 0, "MAX_RETRIES=0: straight to the DLQ");
}

Test(retry, copy_props_replace_our_headers_and_drop_history)
{
    amqp_table_entry_t orig_h[6], add[2], out_h[8];
    amqp_basic_properties_t orig, copy;

    orig_h[0] = hdr_i64("x-published-ms", 1234);
    orig_h[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 1);
    orig_h[2] = hdr_str("x-death", "history");
    orig_h[3] = hdr_str("x-first-death-queue", "q.retry.1");
    orig_h[4] = hdr_str(RQ_WIRE_HDR_LAST_ERROR, "old");
    orig_h[5] = hdr_str("x-source", "api");
    orig = props_with(orig_h, 6);
    orig._flags |= AMQP_BASIC_REPLY_TO_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG |
                   AMQP_BASIC_EXPIRATION_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
    orig.reply_to = amqp_cstring_bytes("amq.gen-abc");
    orig.correlation_id = amqp_cstring_bytes("cid-1");
    orig.message_id = amqp_cstring_bytes("m1");
    orig.expiration = amqp_cstring_bytes("60000");
    add[0] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 2);
    add[1] = hdr_str(RQ_WIRE_HDR_LAST_ERROR, "new");

    cr_assert_eq(rq_retry_copy_props(&orig, add, 2, out_h, 8, &copy), 0);
    cr_expect_eq(copy.headers.num_entries, 4, "x-published-ms, x-source + 2 new");
    cr_expect(has_key(&copy, "x-published-ms"));
    cr_expect(has_key(&copy, "x-source"));
    cr_expect(!has_key(&copy, "x-death"));
    cr_expect(!has_key(&copy, "x-first-death-queue"));
    cr_expect_eq(copy.headers.entries[2].value.value.i64, 2, "new attempt counter");
    cr_expect_eq(copy.headers.entries[3].value.value.bytes.len, 3, "new last error");
    cr_expect(copy._flags & AMQP_BASIC_REPLY_TO_FLAG, "reply_to survives");
    cr_expect(copy._flags & AMQP_BASIC_CORRELATION_ID_FLAG, "correlation_id survives");
    cr_expect_eq(copy.reply_to.bytes, orig.reply_to.bytes);
    cr_expect(!(copy._flags & AMQP_BASIC_EXPIRATION_FLAG), "expiration dropped");
    cr_expect(copy._flags & AMQP_BASIC_DELIVERY_MODE_FLAG);
    cr_expect_eq(copy.delivery_mode, AMQP_DELIVERY_PERSISTENT);
    cr_expect_eq(orig.headers.num_entries, 6, "the original is untouched");
    cr_expect(orig._flags & AMQP_BASIC_EXPIRATION_FLAG);
}

/* The producer's per-message id (the consumer's dedup key) survives every copy: a retried
 * message whose copy lost it would be deduplicated on its client id, and dropped when another
 * message with that id was written first (issue 11.7). */
Test(retry, copy_props_keep_the_producer_uid)
{
    amqp_table_entry_t orig_h[3], add[1], out_h[4];
    amqp_basic_properties_t orig, copy;
    int found = 0;

    orig_h[0] = hdr_str(RQ_WIRE_HDR_UID, "9f0c-uid");
    orig_h[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 1);
    orig_h[2] = hdr_str("x-relayq-replayed", "1");
    orig = props_with(orig_h, 3);
    add[0] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 2);
    cr_assert_eq(rq_retry_copy_props(&orig, add, 1, out_h, 4, &copy), 0);
    for (int i = 0; i < copy.headers.num_entries; i++)
        if (copy.headers.entries[i].key.len == strlen(RQ_WIRE_HDR_UID) &&
            memcmp(copy.headers.entries[i].key.bytes, RQ_WIRE_HDR_UID, strlen(RQ_WIRE_HDR_UID)) ==
                0)
            found++;
    cr_expect_eq(found, 1, "x-relayq-uid kept once");
    cr_expect_eq(copy.headers.num_entries, 2, "uid + the new attempt; other x-relayq-* dropped");
}

Test(retry, copy_props_without_original_headers_and_small_buffer)
{
    amqp_table_entry_t add[2], out_h[2], one[1];
    amqp_basic_properties_t orig = props_with(NULL, 0), copy;
    amqp_table_entry_t oh[1];

    add[0] = hdr_str(RQ_WIRE_HDR_REASON, "undecodable: bad JSON");
    add[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPTS, 1);
    cr_assert_eq(rq_retry_copy_props(&orig, add, 2, out_h, 2, &copy), 0);
    cr_expect(copy._flags & AMQP_BASIC_HEADERS_FLAG);
    cr_expect_eq(copy.headers.num_entries, 2);
    cr_expect_eq(rq_retry_copy_props(&orig, add, 2, one, 1, &copy), -1, "cap too small");
    oh[0] = hdr_str("x-source", "tail");
    orig = props_with(oh, 1);
    cr_expect_eq(rq_retry_copy_props(&orig, add, 2, out_h, 2, &copy), -1, "kept header + 2");
}
