/* fuzz_filter.c - libFuzzer harness: the subscription filter language (common/filter.h).
 * Input: a filter text, optionally followed by a NUL byte and a JSON text (the payload of a
 * second message; its "headers" member, when an object, is that message's headers and its
 * "routing_key" member, when a string, its routing key). Checks: a refused text reports an
 * error message and a position within the text (or RQ_FILTER_MAX_BYTES); a parsed filter
 * evaluates to 0 or 1 on a fixed message and on the input's, twice alike, and "!(text)",
 * when it parses, evaluates to the opposite. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

static json_t *fixed_payload, *fixed_headers;

static void init(void)
{
    json_error_t e;

    fixed_payload = json_loads("{\"level\":\"error\",\"n\":10,\"r\":1.5,\"ok\":true,\"nil\":null,"
                               "\"s\":\"abc\",\"items\":[{\"x\":1},{\"x\":\"2\"}],\"tags\":[\"a\","
                               "\"b\"],\"odd key\":{\"\":[]},\"u\":\"\\u00e9\\u0000\"}",
                               JSON_ALLOW_NUL, &e);
    fixed_headers = json_loads("{\"region\":\"eu\",\"x-trace-id\":\"t\",\"n\":5}", 0, &e);
    if (fixed_payload == NULL || fixed_headers == NULL)
        abort();
}

/* Evaluates f on m, checking the result is 0 or 1 and stable. */
static int eval_checked(const rq_filter_t *f, const rq_filter_msg_t *m)
{
    int r = rq_filter_eval(f, m);

    if ((r != 0 && r != 1) || rq_filter_eval(f, m) != r)
        abort();
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const uint8_t *nul = memchr(data, '\0', size);
    size_t len = nul != NULL ? (size_t)(nul - data) : size, pos = (size_t)-1;
    char err[256] = "", *neg = NULL;
    rq_filter_t *f, *g = NULL;
    json_t *doc = NULL;
    rq_filter_msg_t fixed, mine = {NULL, NULL, NULL, "id-1"};
    int r1, r2;

    if (fixed_payload == NULL)
        init();
    f = rq_filter_parse(text, len, err, sizeof(err), &pos);
    if (f == NULL) {
        if (err[0] == '\0' || (pos > len && pos != RQ_FILTER_MAX_BYTES))
            abort();
        return 0;
    }
    fixed = (rq_filter_msg_t){fixed_payload, fixed_headers, "orders.eu.created", "m-1"};
    r1 = eval_checked(f, &fixed);
    if (nul != NULL) {
        doc = json_loadb((const char *)nul + 1, size - len - 1, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                         NULL);
        mine.payload = doc;
        if (json_is_object(json_object_get(doc, "headers")))
            mine.headers = json_object_get(doc, "headers");
        if (json_is_string(json_object_get(doc, "routing_key")))
            mine.routing_key = json_string_value(json_object_get(doc, "routing_key"));
    }
    r2 = eval_checked(f, &mine);
    /* the negation: "!(" text ")" */
    if ((neg = malloc(len + 4)) != NULL) {
        memcpy(neg, "!(", 2);
        memcpy(neg + 2, text, len);
        neg[len + 2] = ')';
        g = rq_filter_parse(neg, len + 3, err, sizeof(err), &pos);
        if (g != NULL && (eval_checked(g, &fixed) != !r1 || eval_checked(g, &mine) != !r2))
            abort();
    }
    rq_filter_free(g);
    free(neg);
    json_decref(doc);
    rq_filter_free(f);
    return 0;
}
