/* request.c - request body validation. */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_alloc.h"
#include "json_span.h"
#include "util.h"

static int fail(rq_request_error_t *err, unsigned status, const char *prefix, const char *msg)
{
    err->status = status;
    err->limit = NULL;
    snprintf(err->text, sizeof(err->text), "%s%s", prefix, msg);
    return -1;
}

/* Copies the payload's bytes as sent (member "payload" of the item's text `span`) into
 * it->payload_raw. Returns 0, or -1 with err filled. */
static int copy_payload(rq_json_span_t span, rq_item_t *it, const char *prefix,
                        rq_request_error_t *err)
{
    rq_json_span_t raw;

    /* jansson accepted the text, so the scan finds what jansson found */
    if (rq_json_member(span.p, span.len, "payload", &raw) != 1 || raw.len == 0)
        return fail(err, 400, prefix, "\"payload\" could not be located in the body");
    it->payload_raw = malloc(raw.len + 1);
    if (it->payload_raw == NULL)
        return fail(err, 400, prefix, "out of memory");
    memcpy(it->payload_raw, raw.p, raw.len);
    it->payload_raw[raw.len] = '\0';
    it->payload_raw_len = raw.len;
    return 0;
}

/* "fail_times": a number written as an integer (its token in the item's text `span`: the
 * body is loaded with JSON_DECODE_INT_AS_REAL) from 0 to 100. Returns 0 or -1. */
static int parse_fail_times(json_t *v, rq_json_span_t span, rq_item_t *it)
{
    rq_json_span_t tok;
    double n;

    if (!json_is_number(v) || rq_json_member(span.p, span.len, "fail_times", &tok) != 1 ||
        !rq_json_is_integer_token(tok))
        return -1;
    n = json_number_value(v);
    if (!(n >= 0 && n <= 100))
        return -1;
    it->fail_times = (long long)n;
    return 0;
}

/* Validates one item object `obj` (whose text in the body is `span`) into *it. `prefix` names
 * the item in messages ("" or "messages[3]: "). */
static int parse_item(json_t *obj, rq_json_span_t span, int allow_wait, const rq_limits_t *lim,
                      rq_item_t *it, int *wait, const char *prefix, rq_request_error_t *err)
{
    json_t *v;
    char uuid[RQ_UUID_LEN + 1];

    it->fail_times = -1;
    if (!json_is_object(obj))
        return fail(err, 400, prefix, "must be a JSON object");
    it->payload = json_object_get(obj, "payload");
    if (it->payload == NULL)
        return fail(err, 400, prefix, "\"payload\" is required");
    v = json_object_get(obj, "id");
    if (v != NULL) {
        if (!json_is_string(v))
            return fail(err, 400, prefix, "\"id\" must be a string");
        if (json_string_length(v) == 0 || json_string_length(v) > RQ_MAX_ID_LEN)
            return fail(err, 400, prefix,
                        "\"id\" must be 1 to 255 bytes long (an AMQP short string)");
        if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL)
            return fail(err, 400, prefix, "\"id\" must not contain NUL");
        it->id = strdup(json_string_value(v));
    } else {
        rq_uuid(uuid);
        it->id = strdup(uuid);
    }
    if (it->id == NULL)
        return fail(err, 400, prefix, "out of memory");
    v = json_object_get(obj, "processing_time");
    if (v != NULL) {
        char msg[128];
        if (!json_is_number(v))
            return fail(err, 400, prefix, "\"processing_time\" must be a number of seconds");
        it->processing_time = json_number_value(v);
        if (!isfinite(it->processing_time) || it->processing_time < 0 ||
            it->processing_time > lim->max_processing_time) {
            snprintf(msg, sizeof(msg), "\"processing_time\" must be between 0 and %g seconds",
                     lim->max_processing_time);
            return fail(err, 400, prefix, msg);
        }
    }
    v = json_object_get(obj, "fail_times");
    if (v != NULL && parse_fail_times(v, span, it) != 0)
        return fail(err, 400, prefix, "\"fail_times\" must be an integer from 0 to 100");
    v = json_object_get(obj, "wait");
    if (v != NULL) {
        if (!allow_wait)
            return fail(err, 400, prefix, "\"wait\" belongs to the batch, not to an item");
        if (!json_is_boolean(v))
            return fail(err, 400, prefix, "\"wait\" must be true or false");
        *wait = json_is_true(v);
    }
    return copy_payload(span, it, prefix, err);
}

int rq_json_too_deep(const char *buf, size_t len, size_t max_depth)
{
    size_t depth = 0;
    int in_string = 0;

    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (in_string) {
            if (ch == '\\')
                i++; /* skip the escaped character, a quote included */
            else if (ch == '"')
                in_string = 0;
        } else if (ch == '"') {
            in_string = 1;
        } else if (ch == '[' || ch == '{') {
            if (++depth > max_depth)
                return 1;
        } else if ((ch == ']' || ch == '}') && depth > 0) {
            depth--;
        }
    }
    return 0;
}

/* Loads body[0..len) into req->root (a new reference, owned by req) and checks that it is a
 * JSON object within lim->max_depth. Returns 0, or -1 with err filled (req->root NULL, or the
 * non-object value: rq_request_clear() frees it). */
static int load_object(const char *body, size_t len, const rq_limits_t *lim, rq_request_t *req,
                       rq_request_error_t *err)
{
    json_error_t jerr;

    if (len == 0) {
        fail(err, 400, "", "the request body is empty; send a JSON object");
        return -1;
    }
    if (lim->max_depth > 0 && rq_json_too_deep(body, len, lim->max_depth)) {
        char msg[96];
        snprintf(msg, sizeof(msg), "JSON nested deeper than %zu levels", lim->max_depth);
        fail(err, 400, "", msg);
        err->limit = "json_depth";
        return -1;
    }
    /* A raw NUL byte: jansson takes it for the end of the text, so what follows would go
     * unchecked while the payload's raw bytes (copy_payload) are published. JSON text
     * cannot hold one (inside a string it is \u0000). */
    if (memchr(body, '\0', len) != NULL) {
        fail(err, 400, "",
             "the request body holds a NUL byte, which JSON text cannot (in a string "
             "write \\u0000)");
        return -1;
    }
    /* jansson rejects invalid UTF-8 and NUL inside strings (without JSON_ALLOW_NUL).
     * Integers load as reals: one beyond 64 bits is valid JSON, and the payload is published
     * from its bytes (copy_payload), never from the parsed value. */
    rq_json_oom_clear();
    req->root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
    if (rq_json_oom()) { /* a syntax error or a corrupt value (json_alloc.h) */
        fail(err, 400, "", "out of memory");
        return -1;
    }
    if (req->root == NULL) {
        char msg[220];
        snprintf(msg, sizeof(msg), "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                 jerr.text);
        fail(err, 400, "", msg);
        return -1;
    }
    if (!json_is_object(req->root)) {
        fail(err, 400, "", "the request body must be a JSON object");
        return -1;
    }
    return 0;
}

/* POST /produce: req->root is the one item (with "wait"), body[0..len) its text. Fills
 * req->items (owned by req), req->n and req->wait. Returns 0, or -1 with err filled (req for
 * rq_request_clear()). */
static int parse_single(const char *body, size_t len, const rq_limits_t *lim, rq_request_t *req,
                        rq_request_error_t *err)
{
    req->items = calloc(1, sizeof(*req->items));
    if (req->items == NULL) {
        fail(err, 400, "", "out of memory");
        return -1;
    }
    req->n = 1;
    return parse_item(req->root, rq_json_trim(body, len), 1, lim, &req->items[0], &req->wait, "",
                      err);
}

/* The texts of the req->n items of the batch body[0..len) into a new array *spans (caller
 * frees). Returns 0, or -1 with err filled. */
static int item_spans(const char *body, size_t len, const rq_request_t *req, rq_json_span_t **spans,
                      rq_request_error_t *err)
{
    rq_json_span_t msgs;

    *spans = calloc(req->n, sizeof(**spans));
    if (*spans == NULL) {
        fail(err, 400, "", "out of memory");
        return -1;
    }
    if (rq_json_member(body, len, "messages", &msgs) != 1 ||
        rq_json_elements(msgs.p, msgs.len, *spans, req->n) != (long)req->n) {
        fail(err, 400, "", "\"messages\" could not be located in the body");
        return -1;
    }
    return 0;
}

/* POST /batch-produce: req->root holds "messages" (1..lim->max_batch items) and "wait"?;
 * body[0..len) is its text. Fills req->items (owned by req), req->n and req->wait. Returns 0,
 * or -1 with err filled (the first bad item named by its index; req for rq_request_clear()). */
static int parse_batch(const char *body, size_t len, const rq_limits_t *lim, rq_request_t *req,
                       rq_request_error_t *err)
{
    json_t *msgs, *v;
    rq_json_span_t *spans = NULL;
    char prefix[48];
    int rc = -1;

    msgs = json_object_get(req->root, "messages");
    if (!json_is_array(msgs)) {
        fail(err, 400, "", "\"messages\" must be an array of message objects");
        return -1;
    }
    if (json_array_size(msgs) == 0) {
        fail(err, 400, "", "\"messages\" must not be empty");
        return -1;
    }
    if (json_array_size(msgs) > lim->max_batch) {
        char msg[96];
        snprintf(msg, sizeof(msg), "a batch holds at most %zu messages, got %zu", lim->max_batch,
                 json_array_size(msgs));
        fail(err, 413, "", msg);
        err->limit = "batch_length";
        return -1;
    }
    v = json_object_get(req->root, "wait");
    if (v != NULL) {
        if (!json_is_boolean(v)) {
            fail(err, 400, "", "\"wait\" must be true or false");
            return -1;
        }
        req->wait = json_is_true(v);
    }
    req->items = calloc(json_array_size(msgs), sizeof(*req->items));
    if (req->items == NULL) {
        fail(err, 400, "", "out of memory");
        return -1;
    }
    req->n = json_array_size(msgs);
    if (item_spans(body, len, req, &spans, err) != 0)
        goto out;
    for (size_t i = 0; i < req->n; i++) {
        snprintf(prefix, sizeof(prefix), "messages[%zu]: ", i);
        if (parse_item(json_array_get(msgs, i), spans[i], 0, lim, &req->items[i], NULL, prefix,
                       err) != 0)
            goto out;
    }
    rc = 0;
out:
    free(spans);
    return rc;
}

int rq_request_parse(const char *body, size_t len, int batch, const rq_limits_t *lim,
                     rq_request_t *req, rq_request_error_t *err)
{
    memset(req, 0, sizeof(*req));
    req->batch = batch;
    if (load_object(body, len, lim, req, err) != 0)
        goto err;
    if ((batch ? parse_batch(body, len, lim, req, err) : parse_single(body, len, lim, req, err)) !=
        0)
        goto err;
    return 0;

err:
    rq_request_clear(req);
    return -1;
}

void rq_request_clear(rq_request_t *req)
{
    for (size_t i = 0; i < req->n && req->items != NULL; i++) {
        free(req->items[i].id);
        free(req->items[i].payload_raw);
    }
    free(req->items);
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

/* The compact JSON text of v (JSON_ENCODE_ANY) into a new heap string (caller frees), its
 * length in *len; NULL on failure. Not json_dumps(): jansson (2.14) ignores a failed append
 * of an object key and returns the text without it. Dumping into a buffer of the right size
 * cannot fail that way. */
static char *dump(const json_t *v, size_t *len)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t need = json_dumpb(v, NULL, 0, flags);
    char *text = need > 0 ? malloc(need + 1) : NULL;

    if (text != NULL && json_dumpb(v, text, need, flags) != need) {
        free(text);
        return NULL;
    }
    if (text != NULL) {
        text[need] = '\0';
        *len = need;
    }
    return text;
}

char *rq_item_encode(const rq_item_t *item, const char *timestamp, size_t *len)
{
    static const char head[] = "{\"id\":", mid[] = ",\"payload\":";
    json_t *id = json_string(item->id);
    json_t *o = json_pack("{s:f,s:s,s:s}", "processing_time", item->processing_time, "timestamp",
                          timestamp, "source", "api");
    char *id_text = NULL, *rest = NULL, *text = NULL;
    size_t id_len = 0, rest_len = 0, at;

    if (id == NULL || o == NULL || item->payload_raw == NULL)
        goto out;
    /* a failed set must not publish the message without its fail_times */
    if (item->fail_times >= 0 &&
        json_object_set_new(o, "fail_times", json_integer(item->fail_times)) != 0)
        goto out;
    id_text = dump(id, &id_len);
    rest = dump(o, &rest_len); /* {"processing_time":...}: its '{' becomes the ',' */
    if (id_text == NULL || rest == NULL)
        goto out;
    text =
        malloc(sizeof(head) - 1 + id_len + sizeof(mid) - 1 + item->payload_raw_len + rest_len + 1);
    if (text == NULL)
        goto out;
    memcpy(text, head, sizeof(head) - 1);
    at = sizeof(head) - 1;
    memcpy(text + at, id_text, id_len);
    at += id_len;
    memcpy(text + at, mid, sizeof(mid) - 1);
    at += sizeof(mid) - 1;
    memcpy(text + at, item->payload_raw, item->payload_raw_len);
    at += item->payload_raw_len;
    memcpy(text + at, rest, rest_len);
    text[at] = ',';
    at += rest_len;
    text[at] = '\0';
    *len = at;
out:
    free(id_text);
    free(rest);
    json_decref(id);
    json_decref(o);
    return text;
}
