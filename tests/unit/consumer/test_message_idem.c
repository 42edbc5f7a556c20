/* Unit tests for consumer/message.c: the idempotency key (issue 17) as the dedup key. A
 * message with a valid x-relayq-idem header is keyed "idem:" + it, before x-relayq-uid and
 * the message_id; a bad one is ignored (the usual key, idem_ignored set). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "message.h"
#include "wire.h"
#include "wire_of.h"

#define JSON "application/json"

/* Decodes a JSON body with message_id mid and the headers x-relayq-uid = uid (NULL: absent)
 * and x-relayq-idem = idem[0..idem_len) of AMQP kind `kind` (NULL: absent). */
static int decode_idem(const char *mid, const char *uid, const char *idem, size_t idem_len,
                       uint8_t kind, rq_message_t *m)
{
    amqp_table_entry_t e[2];
    amqp_table_t t = {0, e};
    rq_msg_input_t in = {0};
    rq_msg_error_t err;
    rq_wire_msg_t w;
    const char *body = "{\"id\":\"client-1\",\"payload\":\"x\"}";
    int rc;

    if (uid != NULL) {
        e[t.num_entries].key = amqp_cstring_bytes(RQ_WIRE_HDR_UID);
        e[t.num_entries].value.kind = AMQP_FIELD_KIND_UTF8;
        e[t.num_entries++].value.value.bytes = amqp_cstring_bytes(uid);
    }
    if (idem != NULL) {
        e[t.num_entries].key = amqp_cstring_bytes(RQ_WIRE_HDR_IDEM);
        e[t.num_entries].value.kind = kind;
        if (kind == AMQP_FIELD_KIND_I64) {
            e[t.num_entries].value.value.i64 = 42;
        } else {
            e[t.num_entries].value.value.bytes.bytes = (void *)(uintptr_t)idem;
            e[t.num_entries].value.value.bytes.len = idem_len;
        }
        t.num_entries++;
    }
    in.content_type = JSON;
    in.content_type_len = strlen(JSON);
    in.message_id = mid;
    in.message_id_len = mid != NULL ? strlen(mid) : 0;
    in.body = body;
    in.body_len = strlen(body);
    in.wire = wire_of(&t, &w);
    rc = rq_message_decode(&in, 60, m, &err);
    cr_assert_eq(rc, 0, "%s", err.text);
    return rc;
}

static int key_is(const rq_message_t *m, const char *want)
{
    return m->key_len == strlen(want) && memcmp(m->key, want, m->key_len) == 0;
}

Test(message_idem, the_idem_header_is_the_key_before_the_uid_and_the_message_id)
{
    rq_message_t a, b;

    decode_idem("mid-a", "uid-a", "order-17", 8, AMQP_FIELD_KIND_UTF8, &a);
    decode_idem("mid-b", "uid-b", "order-17", 8, AMQP_FIELD_KIND_UTF8, &b);
    cr_expect(key_is(&a, "idem:order-17"), "key %.*s", (int)a.key_len, a.key);
    cr_expect(key_is(&b, "idem:order-17"), "key %.*s", (int)b.key_len, b.key);
    cr_expect_eq(a.idem_ignored, 0);
    cr_expect_str_eq(a.id, "client-1", "the id stays the client's");
    rq_message_clear(&a);
    rq_message_clear(&b);
    /* without a uid or a message_id too */
    decode_idem(NULL, NULL, "k", 1, AMQP_FIELD_KIND_UTF8, &a);
    cr_expect(key_is(&a, "idem:k"));
    rq_message_clear(&a);
}

Test(message_idem, a_255_byte_key_is_taken_a_256_byte_one_is_ignored)
{
    char k[257];
    char want[300];
    rq_message_t m;

    memset(k, 'k', sizeof(k));
    k[256] = '\0';
    decode_idem("mid", "uid-1", k, 255, AMQP_FIELD_KIND_UTF8, &m);
    snprintf(want, sizeof(want), "idem:%.255s", k);
    cr_expect(key_is(&m, want));
    cr_expect_eq(m.idem_ignored, 0);
    rq_message_clear(&m);
    decode_idem("mid", "uid-1", k, 256, AMQP_FIELD_KIND_UTF8, &m);
    cr_expect(key_is(&m, "uid-1"), "key %.*s", (int)m.key_len, m.key);
    cr_expect_eq(m.idem_ignored, 1);
    rq_message_clear(&m);
}

Test(message_idem, a_bad_idem_header_falls_back_to_the_usual_key)
{
    rq_message_t m;

    decode_idem("mid", "uid-1", "", 0, AMQP_FIELD_KIND_UTF8, &m); /* empty */
    cr_expect(key_is(&m, "uid-1"));
    cr_expect_eq(m.idem_ignored, 1);
    rq_message_clear(&m);
    decode_idem("mid", "uid-1", NULL, 0, 0, &m); /* absent: nothing to log */
    cr_expect(key_is(&m, "uid-1"));
    cr_expect_eq(m.idem_ignored, 0);
    rq_message_clear(&m);
    decode_idem("mid", "uid-1", "x", 0, AMQP_FIELD_KIND_I64, &m); /* not a string */
    cr_expect(key_is(&m, "uid-1"));
    cr_expect_eq(m.idem_ignored, 1);
    rq_message_clear(&m);
    decode_idem("mid", NULL, "ab", 2, AMQP_FIELD_KIND_BYTES, &m); /* 'x', not 'S' */
    cr_expect(key_is(&m, "mid"));
    cr_expect_eq(m.idem_ignored, 1);
    rq_message_clear(&m);
    decode_idem("mid", NULL, "a\0b", 3, AMQP_FIELD_KIND_UTF8, &m); /* a NUL */
    cr_expect(key_is(&m, "mid"));
    cr_expect_eq(m.idem_ignored, 1);
    rq_message_clear(&m);
}

/* A retry or DLQ copy keeps x-relayq-idem (like x-relayq-uid): the retried message keeps its
 * key, so its line is not written a second time under another key. */
Test(message_idem, copies_keep_the_idem_header)
{
    cr_expect_eq(rq_wire_dropped_on_copy(amqp_cstring_bytes(RQ_WIRE_HDR_IDEM)), 0);
    cr_expect_eq(rq_wire_dropped_on_copy(amqp_cstring_bytes(RQ_WIRE_HDR_UID)), 0);
    cr_expect_eq(rq_wire_dropped_on_copy(amqp_cstring_bytes(RQ_WIRE_HDR_ATTEMPT)), 1);
}
