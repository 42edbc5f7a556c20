/* fuzz_request.c - libFuzzer harness: POST /produce and /batch-produce body validation.
 * The first byte picks single or batch; the rest is the body. Checks invariants on success:
 * every item has an id and a payload, and its encoded message parses back as JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rq_limits_t lim = {50, 60.0, 32};
    rq_request_t req;
    rq_request_error_t err;

    if (size < 1)
        return 0;
    if (rq_request_parse((const char *)data + 1, size - 1, data[0] & 1, &lim, &req, &err) != 0) {
        if (err.status != 400 && err.status != 413)
            abort();
        if (req.root != NULL || req.items != NULL)
            abort();
        return 0;
    }
    for (size_t i = 0; i < req.n; i++) {
        size_t len = 0;
        char *text;
        json_t *back;
        if (req.items[i].id == NULL || req.items[i].payload == NULL)
            abort();
        text = rq_item_encode(&req.items[i], "2026-01-01T00:00:00.000Z", &len);
        if (text == NULL || strlen(text) != len)
            abort();
        back = json_loadb(text, len, JSON_DECODE_INT_AS_REAL, NULL); /* big integers pass */
        if (back == NULL)
            abort();
        json_decref(back);
        free(text);
    }
    rq_request_clear(&req);
    return 0;
}
