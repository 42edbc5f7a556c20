/* request.h - parsing and validating POST /produce and /batch-produce bodies.
 *
 * Pure functions (no I/O), so they are unit-tested table-driven and fuzzed.
 *
 * Single:  {"id"?: string, "payload": any, "processing_time"?: number, "fail_times"?: int,
 *           "priority"?: int, "ttl_ms"?: int, "delay_ms"?: int, "headers"?: {string: string},
 *           "wait"?: bool}
 * Batch:   {"messages": [item, ...], "wait"?: bool}   (items as single, without "wait")
 * Either (POST /queues/{id}/messages, RQ_PARSE_AUTO): a batch when the object has "messages"
 * and no "payload", else a single message.
 * Every item is validated before anything is published: one bad item rejects the batch.
 * Members not named here are ignored (as they always were).
 *
 * Per message (issue 16), each an integer written as one (no fraction or exponent):
 *   priority  0..255: the AMQP priority property (only queues with x-max-priority order by it)
 *   ttl_ms    1..2147483647: the per-message expiration property ("<ttl_ms>")
 *   delay_ms  1..86400000: delivered that much later, through the queue's delay bucket
 *             (rq_qname_delay_bucket: rounded up to 2 significant digits); not with ttl_ms
 *             (the broker's dead-lettering out of the delay queue would apply the expiration
 *             from the wrong moment or drop it): 400
 *   headers   an object of string values, passed through as AMQP 'S' headers, within the
 *             bounds of wire.h (RQ_WIRE_USER_HEADERS_*), names not reserved
 *             (rq_wire_header_reserved(): 400 naming the header)
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

#include "json_span.h"
#include "wire.h"

#define RQ_MAX_ID_LEN 255 /* an AMQP short string (message_id of the reply, store key) */
#define RQ_PRIORITY_MAX 255
#define RQ_TTL_MAX_MS 2147483647LL
#define RQ_ITEM_DELAY_MAX_MS 86400000LL /* = RQ_DELAY_MAX_MS (qname.h) */
#define RQ_IDEM_KEY_MAX 255             /* longest idempotency key (the x-relayq-idem header) */
#define RQ_PARSE_AUTO 2                 /* rq_request_parse()'s `batch`: decided by the body */

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
    long long fail_times;      /* -1 when absent */
    int priority;              /* 0..RQ_PRIORITY_MAX; -1 when absent */
    long long ttl_ms;          /* 1..RQ_TTL_MAX_MS; 0 when absent */
    long long delay_ms;        /* 1..RQ_ITEM_DELAY_MAX_MS; 0 when absent */
    rq_wire_header_t *headers; /* heap, owned: nheaders client headers, in the body's order */
    size_t nheaders;
    /* raw bodies (rq_request_raw): the request's Content-Type (heap, owned), and then
     * payload_raw is the message's body itself, published verbatim; NULL for JSON items */
    char *content_type;
    char *idem_key; /* heap, owned: "idempotency_key" (1..RQ_IDEM_KEY_MAX printable ASCII
                       bytes), or the Idempotency-Key header (the API sets it); NULL: none */
} rq_item_t;

typedef struct rq_request {
    json_t *root; /* owned */
    int batch;    /* 0 or 1 (RQ_PARSE_AUTO resolved) */
    int wait;     /* "wait": true in the body */
    size_t n;
    rq_item_t *items; /* n items, owned */
} rq_request_t;

typedef struct rq_request_error {
    unsigned status;   /* 400 or 413 */
    const char *limit; /* the abuse limit hit ("json_depth", "batch_length"), else NULL */
    char text[256];
} rq_request_error_t;

/* rq_json_too_deep() is in common/json_span.h. */

/* Parses body[0..len) (need not be NUL-terminated) into *req; `batch` is 0 (POST /produce),
 * 1 (POST /batch-produce) or RQ_PARSE_AUTO (POST /queues/{id}/messages). Returns 0, or -1 with err
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

/* The options of a raw body (a request whose Content-Type is not JSON), as the request gave
 * them: strings borrowed, NULL when absent. */
typedef struct rq_raw_opts {
    const char *content_type; /* required: the request's Content-Type, verbatim */
    const char *message_id;   /* the Message-Id request header; NULL: a new UUID */
    const char *priority;     /* the query parameters ?priority=&ttl_ms=&delay_ms= */
    const char *ttl_ms;
    const char *delay_ms;
    const rq_wire_header_t *headers; /* Message-Header-<name> request headers: names without */
    size_t nheaders;                 /* the prefix, as sent (lowercased here); values */
} rq_raw_opts_t;

/* Makes *req one message whose body is body[0..len) verbatim (copied) with o's options,
 * validated as the JSON fields are (decimal integers without sign; the same bounds, reserved
 * names and ttl_ms/delay_ms rule; header names lowercased). Returns 0, or -1 with err (400:
 * an empty body, a Content-Type or Message-Id over 255 bytes, a bad option naming it). *req
 * is zeroed on error. Pure. */
int rq_request_raw(const char *body, size_t len, const rq_raw_opts_t *o, rq_request_t *req,
                   rq_request_error_t *err);

/* 1 when k[0..n) is a valid idempotency key: 1..RQ_IDEM_KEY_MAX bytes, each printable ASCII
 * (0x20..0x7E). */
int rq_idem_key_valid(const char *k, size_t n);

/* Frees what *req owns and zeroes it. Safe on a zeroed struct. */
void rq_request_clear(rq_request_t *req);

/* Serializes the message published for an item:
 * {"id","payload","processing_time","timestamp","source":"api"[,"fail_times"]}, compact,
 * with item->payload_raw spliced in as the payload (the client's bytes, unchanged).
 * Returns a heap string (caller frees) with its length in *len, or NULL on failure. */
char *rq_item_encode(const rq_item_t *item, const char *timestamp, size_t *len);

#endif
