/* request.c - request body validation. */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_alloc.h"
#include "util.h"

static int fail(rq_request_error_t *err, unsigned status, const char *prefix, const char *msg)
{
    err->status = status;
    err->limit = NULL;
    snprintf(err->text, sizeof(err->text), "%s%s", prefix, msg);
    return -1;
}

/* Validates one item object into *it. `prefix` names the item in messages ("" or
 * "messages[3]: "). */
static int parse_item(json_t *obj, int allow_wait, const rq_limits_t *lim, rq_item_t *it, int *wait,
                      const char *prefix, rq_request_error_t *err)
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
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 100)
            return fail(err, 400, prefix, "\"fail_times\" must be an integer from 0 to 100");
        it->fail_times = json_integer_value(v);
    }
    v = json_object_get(obj, "wait");
    if (v != NULL) {
        if (!allow_wait)
            return fail(err, 400, prefix, "\"wait\" belongs to the batch, not to an item");
        if (!json_is_boolean(v))
            return fail(err, 400, prefix, "\"wait\" must be true or false");
        *wait = json_is_true(v);
    }
    return 0;
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
    /* jansson rejects invalid UTF-8 and NUL inside strings (without JSON_ALLOW_NUL). */
    rq_json_oom_clear();
    req->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
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

/* POST /produce: req->root is the one item (with "wait"). Fills req->items (owned by req),
 * req->n and req->wait. Returns 0, or -1 with err filled (req for rq_request_clear()). */
static int parse_single(const rq_limits_t *lim, rq_request_t *req, rq_request_error_t *err)
{
    req->items = calloc(1, sizeof(*req->items));
    if (req->items == NULL) {
        fail(err, 400, "", "out of memory");
        return -1;
    }
    req->n = 1;
    return parse_item(req->root, 1, lim, &req->items[0], &req->wait, "", err);
}

/* POST /batch-produce: req->root holds "messages" (1..lim->max_batch items) and "wait"?.
 * Fills req->items (owned by req), req->n and req->wait. Returns 0, or -1 with err filled
 * (the first bad item named by its index; req for rq_request_clear()). */
static int parse_batch(const rq_limits_t *lim, rq_request_t *req, rq_request_error_t *err)
{
    json_t *msgs, *v;
    char prefix[48];

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
    req->n = json_array_size(msgs);
    req->items = calloc(req->n, sizeof(*req->items));
    if (req->items == NULL) {
        fail(err, 400, "", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < req->n; i++) {
        snprintf(prefix, sizeof(prefix), "messages[%zu]: ", i);
        if (parse_item(json_array_get(msgs, i), 0, lim, &req->items[i], NULL, prefix, err) != 0)
            return -1;
    }
    return 0;
}

int rq_request_parse(const char *body, size_t len, int batch, const rq_limits_t *lim,
                     rq_request_t *req, rq_request_error_t *err)
{
    memset(req, 0, sizeof(*req));
    req->batch = batch;
    if (load_object(body, len, lim, req, err) != 0)
        goto err;
    if ((batch ? parse_batch(lim, req, err) : parse_single(lim, req, err)) != 0)
        goto err;
    return 0;

err:
    rq_request_clear(req);
    return -1;
}

void rq_request_clear(rq_request_t *req)
{
    for (size_t i = 0; i < req->n && req->items != NULL; i++)
        free(req->items[i].id);
    free(req->items);
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

char *rq_item_encode(const rq_item_t *item, const char *timestamp, size_t *len)
{
    json_t *o = json_pack("{s:s,s:O,s:f,s:s,s:s}", "id", item->id, "payload", item->payload,
                          "processing_time", item->processing_time, "timestamp", timestamp,
                          "source", "api");
    char *text;
    size_t need;

    if (o == NULL)
        return NULL;
    /* a failed set must not publish the message without its fail_times */
    if (item->fail_times >= 0 &&
        json_object_set_new(o, "fail_times", json_integer(item->fail_times)) != 0) {
        json_decref(o);
        return NULL;
    }
    /* Not json_dumps(): jansson (2.14) ignores a failed append of an object key and returns
     * the text without it. Dumping into a buffer of the right size cannot fail that way. */
    need = json_dumpb(o, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    text = need > 0 ? malloc(need + 1) : NULL;
    if (text != NULL && json_dumpb(o, text, need, JSON_COMPACT | JSON_ENCODE_ANY) != need) {
        free(text);
        text = NULL;
    }
    json_decref(o);
    if (text != NULL) {
        text[need] = '\0';
        *len = need;
    }
    return text;
}
