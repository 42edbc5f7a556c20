/* request.h - parsing and validating POST /produce and /batch-produce bodies.
 *
 * Pure functions (no I/O), so they are unit-tested table-driven and fuzzed.
 *
 * Single:  {"id"?: string, "payload": any, "processing_time"?: number, "fail_times"?: int,
 *           "wait"?: bool}
 * Batch:   {"messages": [item, ...], "wait"?: bool}   (items as single, without "wait")
 * Every item is validated before anything is published: one bad item rejects the batch.
 *
 * Payloads pass through unchanged: the payload's bytes as the client sent them (0.1, 19.99,
 * 1e-7, integers of any length, escapes, whitespace inside the value) are what
 * rq_item_encode() publishes. jansson only validates: the body is loaded with
 * JSON_DECODE_INT_AS_REAL, so an integer beyond 64 bits is valid (a number whose magnitude
 * overflows a double, such as 1e400, is still refused), and "fail_times" must be written as
 * an integer (no fraction or exponent), as before.
 */
#ifndef RQ_REQUEST_H
#define RQ_REQUEST_H

#include <jansson.h>
#include <stddef.h>

#define RQ_MAX_ID_LEN 255 /* an AMQP short string (message_id of the reply, store key) */

typedef struct rq_limits {
    size_t max_batch;           /* more items -> 413 */
    double max_processing_time; /* seconds */
    size_t max_depth;           /* deeper nesting of arrays/objects -> 400; 0: no limit */
} rq_limits_t;

typedef struct rq_item {
    char *id;          /* heap: given or a new UUID */
    json_t *payload;   /* borrowed from the request's root (numbers as reals: validation only);
                          NULL after rq_request_parse_fast()'s own scan */
    char *payload_raw; /* heap, owned: the payload's bytes as sent (no surrounding whitespace), */
    size_t payload_raw_len; /* NUL-terminated; what rq_item_encode() publishes */
    double processing_time;
    long long fail_times; /* -1 when absent */
} rq_item_t;

typedef struct rq_request {
    json_t *root; /* owned */
    int batch;
    int wait; /* "wait": true in the body */
    size_t n;
    rq_item_t *items; /* n items, owned */
} rq_request_t;

typedef struct rq_request_error {
    unsigned status;   /* 400 or 413 */
    const char *limit; /* the abuse limit hit ("json_depth", "batch_length"), else NULL */
    char text[256];
} rq_request_error_t;

/* Returns 1 when the JSON text buf[0..len) nests arrays and objects more than max_depth
 * levels deep (the top-level value is level 1; brackets inside strings, escapes included,
 * do not count), else 0. A linear pre-scan that bounds the work and recursion of the parser
 * before json_loadb() sees hostile input; it does not validate the text. Pure. */
int rq_json_too_deep(const char *buf, size_t len, size_t max_depth);

/* Parses body[0..len) (need not be NUL-terminated) into *req. Returns 0, or -1 with err
 * filled (status 400 for malformed JSON, nesting deeper than lim->max_depth, invalid UTF-8,
 * wrong types, missing payload, a bad batch item — naming its index; 413 for too many batch
 * items; err->limit names the abuse limit hit, if any; 400 "out of memory" when an allocation
 * fails, inside jansson only told apart with rq_json_alloc_init() installed, json_alloc.h).
 * *req is zeroed on error. */
int rq_request_parse(const char *body, size_t len, int batch, const rq_limits_t *lim,
                     rq_request_t *req, rq_request_error_t *err);

/* rq_request_parse() for the hot path: the same answer for every body (0, or -1 with the same
 * err), but an ordinary body (strings without escapes, plain numbers, shallow nesting: see
 * request.c) is validated and read in one scan without jansson; then req->root and every
 * item's `payload` are NULL (the item's payload_raw is what is published). Any other body,
 * and every refusal, goes through rq_request_parse(). Pure, thread-safe. */
int rq_request_parse_fast(const char *body, size_t len, int batch, const rq_limits_t *lim,
                          rq_request_t *req, rq_request_error_t *err);

/* Frees what *req owns and zeroes it. Safe on a zeroed struct. */
void rq_request_clear(rq_request_t *req);

/* Serializes the message published for an item:
 * {"id","payload","processing_time","timestamp","source":"api"[,"fail_times"]}, compact,
 * with item->payload_raw spliced in as the payload (the client's bytes, unchanged).
 * Returns a heap string (caller frees) with its length in *len, or NULL on failure. */
char *rq_item_encode(const rq_item_t *item, const char *timestamp, size_t *len);

#endif
