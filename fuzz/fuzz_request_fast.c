/* fuzz_request_fast.c - libFuzzer harness: the one-pass request parser against the jansson one.
 * rq_request_parse_fast() must give exactly what rq_request_parse() gives for every body:
 * the same result, status, error text and limit on a refusal; the same count, wait, ids,
 * processing_time (bit for bit), fail_times, raw payload bytes, and the options of issue 16
 * (priority, ttl_ms, delay_ms, headers in order, name and value bytes) on a success. Bit 4 of
 * byte 0 parses in RQ_PARSE_AUTO mode (POST /queues/{id}/messages) instead. Byte 0 picks
 * single or batch (bit 0) and a limit set (bits 1-3); the rest is the body, copied to a buffer
 * of its exact size so that an overread is an ASan report. Also checks rq_jbuf_str() against
 * json_dumps(json_stringn()) on the body's bytes. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"
#include "request.h"

static void check_str(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    rq_jbuf_t b;
    size_t len = 0;
    char *t, *want;
    int rc;

    rq_jbuf_init(&b, 0);
    rc = rq_jbuf_str(&b, s, n);
    t = rq_jbuf_take(&b, &len);
    if ((j == NULL) != (rc != 0))
        abort();
    if (j != NULL) {
        want = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        if (want == NULL || t == NULL || strlen(want) != len || memcmp(want, t, len) != 0)
            abort();
        free(want);
        json_decref(j);
    }
    free(t);
}

/* Items of both parses agree (an id the client left out is a new UUID in each: not compared). */
static void check_items(const rq_request_t *a, const rq_request_t *b)
{
    json_t *msgs = b->batch ? json_object_get(b->root, "messages") : NULL;

    if (a->n != b->n || a->wait != b->wait || a->batch != b->batch)
        abort();
    for (size_t i = 0; i < a->n; i++) {
        const rq_item_t *x = &a->items[i], *y = &b->items[i];
        json_t *obj = b->batch ? json_array_get(msgs, i) : b->root;

        if ((x->id == NULL) != (y->id == NULL))
            abort();
        if (json_object_get(obj, "id") != NULL && strcmp(x->id, y->id) != 0)
            abort();
        if (memcmp(&x->processing_time, &y->processing_time, sizeof(double)) != 0 ||
            x->fail_times != y->fail_times || x->payload_raw_len != y->payload_raw_len ||
            memcmp(x->payload_raw, y->payload_raw, x->payload_raw_len) != 0)
            abort();
        if (x->priority != y->priority || x->ttl_ms != y->ttl_ms || x->delay_ms != y->delay_ms ||
            x->nheaders != y->nheaders || x->content_type != NULL || y->content_type != NULL)
            abort();
        for (size_t k = 0; k < x->nheaders; k++)
            if (strcmp(x->headers[k].name, y->headers[k].name) != 0 ||
                x->headers[k].value_len != y->headers[k].value_len ||
                memcmp(x->headers[k].value, y->headers[k].value, x->headers[k].value_len) != 0)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const rq_limits_t sets[8] = {{50, 60.0, 32},   {50, 60.0, 0},  {50, 60.0, 1},
                                        {50, 60.0, 2},    {50, 60.0, 33}, {2, 60.0, 32},
                                        {50, 1e-300, 32}, {1, 0.5, 3}};
    rq_limits_t lim;
    rq_request_t a, b;
    rq_request_error_t ea, eb;
    char *buf;
    size_t len;
    int ra, rb, mode;

    if (size < 1)
        return 0;
    lim = sets[(data[0] >> 1) & 7];
    len = size - 1;
    buf = malloc(len ? len : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data + 1, len);
    memset(&ea, 0, sizeof(ea));
    memset(&eb, 0, sizeof(eb));
    mode = (data[0] & 16) ? RQ_PARSE_AUTO : (data[0] & 1);
    ra = rq_request_parse_fast(buf, len, mode, &lim, &a, &ea);
    rb = rq_request_parse(buf, len, mode, &lim, &b, &eb);
    if (ra != rb)
        abort();
    if (ra != 0) {
        if (ea.status != eb.status || strcmp(ea.text, eb.text) != 0 ||
            (ea.limit == NULL) != (eb.limit == NULL) || (ea.limit && strcmp(ea.limit, eb.limit)))
            abort();
    } else {
        check_items(&a, &b);
        rq_request_clear(&a);
        rq_request_clear(&b);
    }
    check_str(buf, len);
    free(buf);
    return 0;
}
