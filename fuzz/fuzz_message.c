/* fuzz_message.c - libFuzzer harness: the consumer's decoding of an untrusted delivery.
 * Layout: byte 0 picks the content type, byte 1 the message id length, then the id, then the
 * body. Checks: a decoded message has an id and a reply that starts with the prefix and
 * contains the line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"

static const char *const types[] = {
    NULL,
    "application/json",
    "application/octet-stream",
    "text/plain",
    "application/json; charset=utf-8",
    "image/png",
    "APPLICATION/JSON",
    "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rq_msg_input_t in;
    rq_message_t m;
    rq_msg_error_t err;
    size_t idlen;
    int rc;

    if (size < 2)
        return 0;
    memset(&in, 0, sizeof(in));
    in.content_type = types[data[0] & 7];
    in.content_type_len = in.content_type ? strlen(in.content_type) : 0;
    idlen = data[1] % 64;
    if (idlen > size - 2)
        idlen = size - 2;
    in.message_id = idlen ? (const char *)data + 2 : NULL;
    in.message_id_len = idlen;
    in.body = data + 2 + idlen;
    in.body_len = size - 2 - idlen;
    rc = rq_message_decode(&in, 30.0, &m, &err);
    if (rc == 0) {
        if (m.id == NULL || m.reply == NULL || m.reply_len < RQ_REPLY_PREFIX_LEN ||
            memcmp(m.reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN) != 0 ||
            m.line != m.reply + RQ_REPLY_PREFIX_LEN ||
            m.line_len != m.reply_len - RQ_REPLY_PREFIX_LEN || m.processing_time < 0 ||
            m.processing_time > 30.0)
            abort();
    } else if (rc == -1 && err.text[0] == '\0') {
        abort();
    }
    rq_message_clear(&m);
    return 0;
}
