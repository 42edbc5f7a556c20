/* fuzz_lease_json.c - libFuzzer harness: a pulled message's JSON (producer/queues/lease_json.h)
 * and the validating scanner under it (common/json_scan.h). For every input: what
 * rq_json_scan_valid() accepts, json_loadb() accepts with the matching flags; and the object
 * rq_lease_msg_json() writes for a message with that body loads (jansson) to exactly the tree
 * rq_lease_msg_jansson() builds. Byte 0 picks the content type (bits 0-1) and whether the body
 * also becomes a header value (bit 2); the rest is the body, copied to a buffer of its exact
 * size so that an overread is an ASan report. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_scan.h"
#include "lease_json.h"

static void check_scan(const char *t, size_t n)
{
    for (unsigned flags = 0; flags <= RQ_JSON_SCAN_INT_AS_REAL; flags++) {
        size_t f = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES;
        json_t *v;
        if (!rq_json_scan_valid(t, n, 0, flags))
            continue;
        if (flags & RQ_JSON_SCAN_INT_AS_REAL)
            f |= JSON_DECODE_INT_AS_REAL;
        v = json_loadb(t, n, f, NULL);
        if (v == NULL)
            abort(); /* accepted what jansson refuses */
        json_decref(v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const ctypes[] = {"application/json", "text/plain", "x/y+json", NULL};
    const rq_lease_msg_info_t info = {"m", 1, "0123abcd-0123456789abcdef0123456789abcdef", 0};
    amqp_table_entry_t e[1];
    amqp_message_t m;
    rq_jbuf_t b;
    json_t *ref, *got;
    char *body, *text;
    size_t len = 0;

    if (size < 1)
        return 0;
    body = malloc(size - 1 > 0 ? size - 1 : 1);
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    check_scan(body, size - 1);
    memset(&m, 0, sizeof(m));
    if (ctypes[data[0] & 3] != NULL) {
        m.properties._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        m.properties.content_type = amqp_cstring_bytes(ctypes[data[0] & 3]);
    }
    if (data[0] & 4) {
        e[0].key = (amqp_bytes_t){size - 1 < 40 ? size - 1 : 40, body};
        e[0].value.kind = AMQP_FIELD_KIND_BYTES;
        e[0].value.value.bytes = (amqp_bytes_t){size - 1, body};
        m.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
        m.properties.headers.entries = e;
        m.properties.headers.num_entries = 1;
    }
    m.body = (amqp_bytes_t){size - 1, body};
    ref = rq_lease_msg_jansson(&m, &info);
    rq_jbuf_init(&b, 0);
    if (rq_lease_msg_json(&b, &m, &info) != 0 || ref == NULL)
        abort();
    text = rq_jbuf_take(&b, &len);
    got =
        text != NULL ? json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL) : NULL;
    if (got == NULL || !json_equal(got, ref))
        abort();
    json_decref(got);
    json_decref(ref);
    free(text);
    free(body);
    return 0;
}
