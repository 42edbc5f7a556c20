/* request.c - request body validation. */
#include "request.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jbuf.h"
#include "json_alloc.h"
#include "json_scan.h"
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

/* An integer field `key` of the item (its text `span`) written as an integer, lo..hi.
 * Returns 0 when absent, 1 with *out set, -1 when present and not such an integer. */
static int parse_int_field(json_t *obj, rq_json_span_t span, const char *key, long long lo,
                           long long hi, long long *out)
{
    json_t *v = json_object_get(obj, key);
    rq_json_span_t tok;
    double n;

    if (v == NULL)
        return 0;
    if (!json_is_number(v) || rq_json_member(span.p, span.len, key, &tok) != 1 ||
        !rq_json_is_integer_token(tok))
        return -1;
    n = json_number_value(v);
    if (!(n >= (double)lo && n <= (double)hi))
        return -1;
    *out = (long long)n;
    return 1;
}

/* 1 when name[0..len) is a header name a client may write (wire.h): 1..128 visible ASCII. */
static int header_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > RQ_WIRE_USER_HEADER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
            return 0;
    return 1;
}

/* Checks one client header (name as given, value of vlen bytes) against the bounds and the
 * reserved names, adding its bytes to *total. Returns 0, or -1 with err filled. */
static int check_header(const char *name, size_t nlen, size_t vlen, size_t *total,
                        const char *prefix, rq_request_error_t *err)
{
    const char *why;
    char msg[240];

    if (!header_name_ok(name, nlen))
        return fail(err, 400, prefix,
                    "a header name must be 1 to 128 bytes of visible ASCII (no space)");
    why = rq_wire_header_reserved(name, nlen);
    if (why != NULL) {
        snprintf(msg, sizeof(msg), "header \"%.*s\" is reserved: %s", (int)nlen, name, why);
        return fail(err, 400, prefix, msg);
    }
    if (vlen > RQ_WIRE_USER_HEADER_VALUE_MAX) {
        snprintf(msg, sizeof(msg), "header \"%.*s\": a value holds at most %d bytes", (int)nlen,
                 name, RQ_WIRE_USER_HEADER_VALUE_MAX);
        return fail(err, 400, prefix, msg);
    }
    *total += nlen + vlen;
    if (*total > RQ_WIRE_USER_HEADERS_BYTES_MAX) {
        snprintf(msg, sizeof(msg), "headers hold at most %d bytes of names and values",
                 RQ_WIRE_USER_HEADERS_BYTES_MAX);
        return fail(err, 400, prefix, msg);
    }
    return 0;
}

/* Copies header (name[0..nlen), value[0..vlen)) into it->headers[it->nheaders++] (room made
 * by the caller), the name lowercased when `lower`. Returns 0 or -1 (out of memory). */
static int add_header(rq_item_t *it, const char *name, size_t nlen, const char *value, size_t vlen,
                      int lower)
{
    rq_wire_header_t *h = &it->headers[it->nheaders];

    h->name = malloc(nlen + 1);
    h->value = malloc(vlen + 1);
    if (h->name == NULL || h->value == NULL) {
        free(h->name);
        free(h->value);
        h->name = h->value = NULL;
        return -1;
    }
    for (size_t i = 0; i < nlen; i++)
        h->name[i] = lower && name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] + 32) : name[i];
    h->name[nlen] = '\0';
    memcpy(h->value, value, vlen);
    h->value[vlen] = '\0';
    h->value_len = vlen;
    it->nheaders++;
    return 0;
}

/* "headers": an object of string values (wire.h's bounds, no reserved name) into
 * it->headers, in the body's order. Returns 0, or -1 with err filled. */
static int parse_headers(json_t *v, rq_item_t *it, const char *prefix, rq_request_error_t *err)
{
    const char *key;
    json_t *val;
    size_t total = 0;
    char msg[240];

    if (!json_is_object(v))
        return fail(err, 400, prefix, "\"headers\" must be an object of string values");
    if (json_object_size(v) > RQ_WIRE_USER_HEADERS_MAX) {
        snprintf(msg, sizeof(msg), "\"headers\" holds at most %d headers",
                 RQ_WIRE_USER_HEADERS_MAX);
        return fail(err, 400, prefix, msg);
    }
    if (json_object_size(v) == 0)
        return 0;
    it->headers = calloc(json_object_size(v), sizeof(*it->headers));
    if (it->headers == NULL)
        return fail(err, 400, prefix, "out of memory");
    json_object_foreach(v, key, val)
    {
        size_t nlen = strlen(key);
        if (check_header(key, nlen, json_is_string(val) ? json_string_length(val) : 0, &total,
                         prefix, err) != 0)
            return -1;
        if (!json_is_string(val)) {
            snprintf(msg, sizeof(msg), "header \"%s\" must have a string value", key);
            return fail(err, 400, prefix, msg);
        }
        if (add_header(it, key, nlen, json_string_value(val), json_string_length(val), 0) != 0)
            return fail(err, 400, prefix, "out of memory");
    }
    return 0;
}

/* The delivery options of an item (priority, ttl_ms, delay_ms, headers) into *it. Returns 0,
 * or -1 with err filled. */
static int parse_options(json_t *obj, rq_json_span_t span, rq_item_t *it, const char *prefix,
                         rq_request_error_t *err)
{
    long long n = 0;
    json_t *v;

    if (parse_int_field(obj, span, "priority", 0, RQ_PRIORITY_MAX, &n) < 0)
        return fail(err, 400, prefix, "\"priority\" must be an integer from 0 to 255");
    it->priority = json_object_get(obj, "priority") != NULL ? (int)n : -1;
    if (parse_int_field(obj, span, "ttl_ms", 1, RQ_TTL_MAX_MS, &it->ttl_ms) < 0)
        return fail(err, 400, prefix,
                    "\"ttl_ms\" must be an integer from 1 to 2147483647 (milliseconds)");
    if (parse_int_field(obj, span, "delay_ms", 1, RQ_ITEM_DELAY_MAX_MS, &it->delay_ms) < 0)
        return fail(err, 400, prefix,
                    "\"delay_ms\" must be an integer from 1 to 86400000 (milliseconds, 24 h)");
    if (it->ttl_ms > 0 && it->delay_ms > 0)
        return fail(err, 400, prefix,
                    "\"ttl_ms\" cannot be combined with \"delay_ms\" (a delayed message gets "
                    "the queue's own TTL only)");
    v = json_object_get(obj, "headers");
    if (v != NULL && parse_headers(v, it, prefix, err) != 0)
        return -1;
    v = json_object_get(obj, "idempotency_key");
    if (v != NULL) {
        if (!json_is_string(v) || !rq_idem_key_valid(json_string_value(v), json_string_length(v)))
            return fail(err, 400, prefix,
                        "\"idempotency_key\" must be a string of 1 to 255 printable ASCII "
                        "characters");
        if ((it->idem_key = strdup(json_string_value(v))) == NULL)
            return fail(err, 400, prefix, "out of memory");
    }
    return 0;
}

int rq_idem_key_valid(const char *k, size_t n)
{
    if (k == NULL || n == 0 || n > RQ_IDEM_KEY_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x20 || (unsigned char)k[i] > 0x7e)
            return 0;
    return 1;
}

/* Validates one item object `obj` (whose text in the body is `span`) into *it. `prefix` names
 * the item in messages ("" or "messages[3]: "). */
static int parse_item(json_t *obj, rq_json_span_t span, int allow_wait, const rq_limits_t *lim,
                      rq_item_t *it, int *wait, const char *prefix, rq_request_error_t *err)
{
    json_t *v;
    char uuid[RQ_UUID_LEN + 1];

    it->fail_times = -1;
    it->priority = -1;
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
    if (parse_options(obj, span, it, prefix, err) != 0)
        return -1;
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
    if (batch == RQ_PARSE_AUTO)
        batch = req->batch = json_object_get(req->root, "messages") != NULL &&
                             json_object_get(req->root, "payload") == NULL;
    if ((batch ? parse_batch(body, len, lim, req, err) : parse_single(body, len, lim, req, err)) !=
        0)
        goto err;
    return 0;

err:
    rq_request_clear(req);
    return -1;
}

/* A query option: a decimal integer without sign or spaces, lo..hi. Returns 0 when absent
 * (s NULL), 1 with *out, -1 otherwise. */
static int raw_int(const char *s, long long lo, long long hi, long long *out)
{
    long long n = 0;
    size_t i;

    if (s == NULL)
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 12)
            return -1;
        n = n * 10 + (s[i] - '0');
    }
    if (i == 0 || n < lo || n > hi)
        return -1;
    *out = n;
    return 1;
}

/* The options of a raw body into *it. Returns 0, or -1 with err filled. */
static int raw_options(const rq_raw_opts_t *o, rq_item_t *it, rq_request_error_t *err)
{
    long long n = 0;
    size_t total = 0;

    if (raw_int(o->priority, 0, RQ_PRIORITY_MAX, &n) < 0)
        return fail(err, 400, "", "query parameter priority must be an integer from 0 to 255");
    it->priority = o->priority != NULL ? (int)n : -1;
    if (raw_int(o->ttl_ms, 1, RQ_TTL_MAX_MS, &it->ttl_ms) < 0)
        return fail(err, 400, "",
                    "query parameter ttl_ms must be an integer from 1 to 2147483647 "
                    "(milliseconds)");
    if (raw_int(o->delay_ms, 1, RQ_ITEM_DELAY_MAX_MS, &it->delay_ms) < 0)
        return fail(err, 400, "",
                    "query parameter delay_ms must be an integer from 1 to 86400000 "
                    "(milliseconds, 24 h)");
    if (it->ttl_ms > 0 && it->delay_ms > 0)
        return fail(err, 400, "",
                    "ttl_ms cannot be combined with delay_ms (a delayed message gets the "
                    "queue's own TTL only)");
    if (o->nheaders > RQ_WIRE_USER_HEADERS_MAX) {
        char msg[96];
        snprintf(msg, sizeof(msg), "at most %d Message-Header-* headers", RQ_WIRE_USER_HEADERS_MAX);
        return fail(err, 400, "", msg);
    }
    if (o->nheaders == 0)
        return 0;
    it->headers = calloc(o->nheaders, sizeof(*it->headers));
    if (it->headers == NULL)
        return fail(err, 400, "", "out of memory");
    for (size_t i = 0; i < o->nheaders; i++) {
        const rq_wire_header_t *h = &o->headers[i];
        char lower[RQ_WIRE_USER_HEADER_NAME_MAX + 1];
        size_t nlen = strlen(h->name);
        for (size_t k = 0; k < nlen && k < RQ_WIRE_USER_HEADER_NAME_MAX; k++)
            lower[k] =
                h->name[k] >= 'A' && h->name[k] <= 'Z' ? (char)(h->name[k] + 32) : h->name[k];
        lower[nlen < RQ_WIRE_USER_HEADER_NAME_MAX ? nlen : RQ_WIRE_USER_HEADER_NAME_MAX] = '\0';
        if (check_header(lower, nlen, h->value_len, &total, "", err) != 0)
            return -1;
        /* HTTP header names ignore case and the names are sent lowercased: the same name
         * twice would be one AMQP table key twice, which consumers read differently (first
         * or last wins); a JSON body cannot have it either (duplicate keys are refused). */
        for (size_t k = 0; k < it->nheaders; k++)
            if (strcmp(it->headers[k].name, lower) == 0) {
                char msg[200];
                snprintf(msg, sizeof(msg), "header \"%s\" is given twice (Message-Header-%s)",
                         lower, h->name);
                return fail(err, 400, "", msg);
            }
        if (!rq_jbuf_utf8_valid(h->value, h->value_len) ||
            memchr(h->value, '\0', h->value_len) != NULL)
            return fail(err, 400, "", "a Message-Header-* value must be UTF-8 without NUL");
        if (add_header(it, h->name, nlen, h->value, h->value_len, 1) != 0)
            return fail(err, 400, "", "out of memory");
    }
    return 0;
}

int rq_request_raw(const char *body, size_t len, const rq_raw_opts_t *o, rq_request_t *req,
                   rq_request_error_t *err)
{
    rq_item_t *it;
    char uuid[RQ_UUID_LEN + 1];

    memset(req, 0, sizeof(*req));
    if (len == 0) {
        fail(err, 400, "", "the request body is empty");
        goto err;
    }
    if (o->content_type == NULL || strlen(o->content_type) == 0 ||
        strlen(o->content_type) > RQ_WIRE_SHORTSTR_MAX) {
        fail(err, 400, "", "the Content-Type must be 1 to 255 bytes (an AMQP short string)");
        goto err;
    }
    if (o->message_id != NULL &&
        (strlen(o->message_id) == 0 || strlen(o->message_id) > RQ_MAX_ID_LEN)) {
        fail(err, 400, "", "Message-Id must be 1 to 255 bytes long (an AMQP short string)");
        goto err;
    }
    req->items = calloc(1, sizeof(*req->items));
    if (req->items == NULL) {
        fail(err, 400, "", "out of memory");
        goto err;
    }
    req->n = 1;
    it = &req->items[0];
    it->fail_times = -1;
    if (o->message_id == NULL)
        rq_uuid(uuid);
    it->id = strdup(o->message_id != NULL ? o->message_id : uuid);
    it->content_type = strdup(o->content_type);
    it->payload_raw = malloc(len + 1);
    if (it->id == NULL || it->content_type == NULL || it->payload_raw == NULL) {
        fail(err, 400, "", "out of memory");
        goto err;
    }
    memcpy(it->payload_raw, body, len);
    it->payload_raw[len] = '\0';
    it->payload_raw_len = len;
    if (raw_options(o, it, err) != 0)
        goto err;
    return 0;

err:
    rq_request_clear(req);
    return -1;
}

void rq_request_clear(rq_request_t *req)
{
    for (size_t i = 0; i < req->n && req->items != NULL; i++) {
        rq_item_t *it = &req->items[i];
        free(it->id);
        free(it->payload_raw);
        for (size_t k = 0; k < it->nheaders; k++) {
            free(it->headers[k].name);
            free(it->headers[k].value);
        }
        free(it->headers);
        free(it->content_type);
        free(it->idem_key);
    }
    free(req->items);
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

char *rq_item_encode(const rq_item_t *item, const char *timestamp, size_t *len)
{
    rq_jbuf_t b;

    if (item->id == NULL || item->payload_raw == NULL)
        return NULL;
    /* The text jansson wrote for the same object (common/jbuf.h), in one allocation. */
    rq_jbuf_init(&b, item->payload_raw_len + strlen(item->id) + 160);
    rq_jbuf_raw(&b, "{\"id\":", 6);
    if (rq_jbuf_str(&b, item->id, strlen(item->id)) != 0)
        goto err;
    rq_jbuf_raw(&b, ",\"payload\":", 11);
    rq_jbuf_raw(&b, item->payload_raw, item->payload_raw_len);
    rq_jbuf_lit(&b, ",\"processing_time\":");
    if (rq_jbuf_real(&b, item->processing_time) != 0)
        goto err;
    rq_jbuf_lit(&b, ",\"timestamp\":");
    if (rq_jbuf_str(&b, timestamp, strlen(timestamp)) != 0)
        goto err;
    rq_jbuf_lit(&b, ",\"source\":\"api\"");
    if (item->fail_times >= 0) {
        rq_jbuf_lit(&b, ",\"fail_times\":");
        rq_jbuf_int(&b, item->fail_times);
    }
    rq_jbuf_raw(&b, "}", 1);
    return rq_jbuf_take(&b, len);

err:
    rq_jbuf_free(&b);
    return NULL;
}

/* ---- the fast path: the common body without jansson --------------------------------------
 *
 * The body is first checked by the validating scanner of common/json_scan.h (the subset of
 * JSON that ordinary requests use; integers read as reals, as rq_request_parse() loads them).
 * What it accepts, jansson accepts with the same values; anything else (an escape, a
 * validation error, an unusual number, a deep or wide body) is left to rq_request_parse(),
 * so every refusal keeps its exact status and text. */

#define FAST_NUM_MAX RQ_JSON_SCAN_NUM_MAX /* a longer number token: the slow path */

static int is_ws(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* The value of number token t (a whole valid token). */
static double token_number(rq_json_span_t t)
{
    char text[FAST_NUM_MAX + 1];

    memcpy(text, t.p, t.len);
    text[t.len] = '\0';
    return strtod(text, NULL);
}

/* The end of the value starting at q in a scanned-valid text (strings without escapes). */
static const char *skip_value(const char *q, const char *end)
{
    size_t depth = 0;

    do {
        if (*q == '"') {
            q = (const char *)memchr(q + 1, '"', (size_t)(end - q - 1)) + 1;
            continue;
        }
        if (*q == '{' || *q == '[') {
            depth++;
        } else if (*q == '}' || *q == ']') {
            if (depth == 0)
                return q;
            depth--;
        } else if (depth == 0 && (*q == ',' || is_ws(*q))) {
            return q;
        }
        q++;
    } while (q < end && (depth > 0 || (*q != ',' && *q != '}' && *q != ']' && !is_ws(*q))));
    return q;
}

/* Iterates the members of a scanned-valid object (keys without escapes, unique): *q starts
 * just inside its '{'. Returns 1 with the next key (its bytes, no quotes) and value (no
 * surrounding whitespace), or 0 at the '}'. */
static int next_member(const char **q, const char *end, rq_json_span_t *key, rq_json_span_t *val)
{
    const char *p = *q;

    while (p < end && (is_ws(*p) || *p == ','))
        p++;
    if (p >= end || *p != '"')
        return 0;
    key->p = p + 1;
    p = (const char *)memchr(p + 1, '"', (size_t)(end - p - 1));
    key->len = (size_t)(p - key->p);
    p++;
    while (is_ws(*p) || *p == ':')
        p++;
    val->p = p;
    p = skip_value(p, end);
    val->len = (size_t)(p - val->p);
    *q = p;
    return 1;
}

static int key_eq(rq_json_span_t k, const char *name, size_t n)
{
    return k.len == n && memcmp(k.p, name, n) == 0;
}

/* An integer member token v in lo..hi into *out. 0, or -1 (the slow path decides). */
static int fast_int(rq_json_span_t v, long long lo, long long hi, long long *out)
{
    double n;

    if (!rq_json_is_integer_token(v) || v.len > FAST_NUM_MAX)
        return -1;
    n = token_number(v);
    if (!(n >= (double)lo && n <= (double)hi))
        return -1;
    *out = (long long)n;
    return 0;
}

/* "headers" (the value v, scanned valid) into it->headers when the slow path would accept
 * it as it is. 0, or -1. */
static int fast_headers(rq_json_span_t v, rq_item_t *it)
{
    const char *q = v.p + 1, *end = v.p + v.len;
    rq_json_span_t k, x;
    size_t n = 0, total = 0;

    if (v.p[0] != '{')
        return -1;
    while (next_member(&q, end, &k, &x))
        if (++n > RQ_WIRE_USER_HEADERS_MAX)
            return -1;
    if (n == 0)
        return 0;
    it->headers = calloc(n, sizeof(*it->headers));
    if (it->headers == NULL)
        return -1;
    q = v.p + 1;
    while (next_member(&q, end, &k, &x)) {
        if (!header_name_ok(k.p, k.len) || rq_wire_header_reserved(k.p, k.len) != NULL ||
            x.p[0] != '"' || x.len - 2 > RQ_WIRE_USER_HEADER_VALUE_MAX)
            return -1;
        total += k.len + x.len - 2;
        if (total > RQ_WIRE_USER_HEADERS_BYTES_MAX ||
            add_header(it, k.p, k.len, x.p + 1, x.len - 2, 0) != 0)
            return -1;
    }
    return 0;
}

/* The members of an item the fast path reads (len 0: absent). */
typedef struct fast_members {
    rq_json_span_t id, payload, pt, ft, wait, prio, ttl, delay, hdrs, idem;
} fast_members_t;

/* One pass over the item's members into *f. */
static void fast_collect(rq_json_span_t span, fast_members_t *f)
{
    const char *q = span.p + 1, *end = span.p + span.len;
    rq_json_span_t k, v;

    memset(f, 0, sizeof(*f));
    while (next_member(&q, end, &k, &v)) {
        rq_json_span_t *slot = NULL;
        switch (k.len) {
        case 2:
            slot = key_eq(k, "id", 2) ? &f->id : NULL;
            break;
        case 4:
            slot = key_eq(k, "wait", 4) ? &f->wait : NULL;
            break;
        case 6:
            slot = key_eq(k, "ttl_ms", 6) ? &f->ttl : NULL;
            break;
        case 7:
            slot = key_eq(k, "payload", 7)   ? &f->payload
                   : key_eq(k, "headers", 7) ? &f->hdrs
                                             : NULL;
            break;
        case 8:
            slot = key_eq(k, "priority", 8)   ? &f->prio
                   : key_eq(k, "delay_ms", 8) ? &f->delay
                                              : NULL;
            break;
        case 10:
            slot = key_eq(k, "fail_times", 10) ? &f->ft : NULL;
            break;
        case 15:
            slot = key_eq(k, "processing_time", 15)   ? &f->pt
                   : key_eq(k, "idempotency_key", 15) ? &f->idem
                                                      : NULL;
            break;
        default:
            break;
        }
        if (slot != NULL)
            *slot = v;
    }
}

/* The delivery options of f into *it. 0, or -1 (the slow path decides). */
static int fast_options(const fast_members_t *f, rq_item_t *it)
{
    long long n;

    if (f->prio.len > 0) {
        if (fast_int(f->prio, 0, RQ_PRIORITY_MAX, &n) != 0)
            return -1;
        it->priority = (int)n;
    }
    if (f->ttl.len > 0 && fast_int(f->ttl, 1, RQ_TTL_MAX_MS, &it->ttl_ms) != 0)
        return -1;
    if (f->delay.len > 0 && fast_int(f->delay, 1, RQ_ITEM_DELAY_MAX_MS, &it->delay_ms) != 0)
        return -1;
    if (it->ttl_ms > 0 && it->delay_ms > 0)
        return -1;
    if (f->hdrs.len > 0 && fast_headers(f->hdrs, it) != 0)
        return -1;
    if (f->idem.len > 0) /* rare: the slow path checks and copies it */
        return -1;
    return 0;
}

/* One item object `span` (scanned valid) into *it, when every field is as the slow path
 * accepts it. Returns 0, or -1 (leave it to the slow path). */
static int fast_item(rq_json_span_t span, int allow_wait, const rq_limits_t *lim, rq_item_t *it,
                     int *wait)
{
    fast_members_t f;
    rq_json_span_t v;
    char uuid[RQ_UUID_LEN + 1];

    it->fail_times = -1;
    it->priority = -1;
    if (span.len == 0 || span.p[0] != '{')
        return -1;
    fast_collect(span, &f);
    if ((v = f.pt).len > 0) {
        if (!(v.p[0] == '-' || (v.p[0] >= '0' && v.p[0] <= '9')) || v.len > FAST_NUM_MAX)
            return -1;
        it->processing_time = token_number(v);
        if (!(it->processing_time >= 0 && it->processing_time <= lim->max_processing_time))
            return -1;
    }
    if (f.ft.len > 0 && fast_int(f.ft, 0, 100, &it->fail_times) != 0)
        return -1;
    if (fast_options(&f, it) != 0)
        return -1;
    if ((v = f.wait).len > 0) {
        if (!allow_wait)
            return -1;
        if (v.len == 4 && memcmp(v.p, "true", 4) == 0)
            *wait = 1;
        else if (v.len == 5 && memcmp(v.p, "false", 5) == 0)
            *wait = 0;
        else
            return -1;
    }
    if ((v = f.id).len > 0) {
        /* scanned: a string without escapes, so its bytes are its value (no NUL) */
        if (v.len < 3 || v.p[0] != '"' || v.len - 2 > RQ_MAX_ID_LEN)
            return -1;
        it->id = malloc(v.len - 1);
        if (it->id == NULL)
            return -1;
        memcpy(it->id, v.p + 1, v.len - 2);
        it->id[v.len - 2] = '\0';
    }
    if ((v = f.payload).len == 0)
        return -1;
    it->payload_raw = malloc(v.len + 1);
    if (it->payload_raw == NULL)
        return -1;
    memcpy(it->payload_raw, v.p, v.len);
    it->payload_raw[v.len] = '\0';
    it->payload_raw_len = v.len;
    if (it->id == NULL) {
        rq_uuid(uuid);
        it->id = strdup(uuid);
        if (it->id == NULL)
            return -1;
    }
    return 0;
}

/* The fast path of rq_request_parse_fast(). Returns 0 with *req filled (root NULL), or -1 with
 * *req zeroed: the slow path decides. */
static int fast_parse(const char *body, size_t len, int batch, const rq_limits_t *lim,
                      rq_request_t *req)
{
    rq_json_span_t top, msgs, one[1], *spans = NULL;
    long n;
    int rc = -1;

    memset(req, 0, sizeof(*req));
    req->batch = batch;
    top = rq_json_trim(body, len);
    if (top.len == 0 || top.p[0] != '{')
        return -1;
    if (!rq_json_scan_valid(top.p, top.len, lim->max_depth, RQ_JSON_SCAN_INT_AS_REAL))
        return -1;
    if (batch == RQ_PARSE_AUTO) {
        rq_json_span_t x;
        batch = req->batch = rq_json_member(top.p, top.len, "messages", &x) == 1 &&
                             rq_json_member(top.p, top.len, "payload", &x) != 1;
    }
    if (!batch) {
        one[0] = top;
        spans = one;
        n = 1;
    } else {
        rq_json_span_t w;
        if (rq_json_member(top.p, top.len, "messages", &msgs) != 1 || msgs.p[0] != '[')
            goto out;
        n = rq_json_elements(msgs.p, msgs.len, NULL, 0);
        if (n <= 0 || (size_t)n > lim->max_batch)
            goto out;
        if (rq_json_member(top.p, top.len, "wait", &w) == 1) {
            if (w.len == 4 && memcmp(w.p, "true", 4) == 0)
                req->wait = 1;
            else if (!(w.len == 5 && memcmp(w.p, "false", 5) == 0))
                goto out;
        }
        spans = calloc((size_t)n, sizeof(*spans));
        if (spans == NULL || rq_json_elements(msgs.p, msgs.len, spans, (size_t)n) != n)
            goto out;
    }
    req->items = calloc((size_t)n, sizeof(*req->items));
    if (req->items == NULL)
        goto out;
    req->n = (size_t)n;
    for (long i = 0; i < n; i++)
        if (fast_item(spans[i], !batch, lim, &req->items[i], &req->wait) != 0)
            goto out;
    rc = 0;
out:
    if (spans != one)
        free(spans);
    if (rc != 0)
        rq_request_clear(req);
    return rc;
}

int rq_request_parse_fast(const char *body, size_t len, int batch, const rq_limits_t *lim,
                          rq_request_t *req, rq_request_error_t *err)
{
    if (fast_parse(body, len, batch, lim, req) == 0)
        return 0;
    return rq_request_parse(body, len, batch, lim, req, err);
}
