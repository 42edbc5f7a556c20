/* event.h - one delivered AMQP message as a real-time event (issue 18, hub.h).
 *
 * The hub decodes each delivered message once: its body as JSON (for filters, and for the
 * event's "payload"), its application headers as a JSON object, and writes the event text
 * once for every subscriber it goes to:
 *
 *   {"id": <message_id property, or null>, "topic": "<name>" | "queue": "<name>",
 *    "routing_key": "...", "headers": {...}, "payload": <body> | "payload_base64": "...",
 *    "published_ms": n | null, "redelivered": bool (queues only), "offset": n (streams only)}
 *
 * - "payload" is the body's bytes verbatim when the body is a JSON text (FAILURE-CLASSES
 *   "Bytes in, same bytes out": 0.1 and big integers arrive as sent), leading and trailing
 *   whitespace trimmed and every CR or LF between tokens turned into a space so the event is
 *   one line; else the body as a JSON string when it is UTF-8; else "payload_base64" (RFC
 *   4648) instead. A body nesting deeper than RQ_RT_PAYLOAD_MAX_DEPTH is not parsed: it is
 *   a string (or base64) and a filter sees no payload.
 * - "headers" holds the application headers but relayq's own (x-relayq-*, x-published-ms)
 *   and the broker's (x-death, x-first-death-*, x-last-death-*, x-stream-offset): strings
 *   (a byte string that is not UTF-8 is left out), integers, booleans, reals, null, arrays
 *   and tables (at most RQ_RT_HEADER_MAX_DEPTH levels; deeper ones are left out).
 * - "published_ms": the x-published-ms header, else the timestamp property * 1000, else
 *   null.
 */
#ifndef RQ_RT_EVENT_H
#define RQ_RT_EVENT_H

#include <amqp.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "filter.h"
#include "hub.h"

#define RQ_RT_PAYLOAD_MAX_DEPTH 64
#define RQ_RT_HEADER_MAX_DEPTH 8

/* What the hub knows of one delivered message. */
typedef struct rq_rt_event_in {
    rq_rt_kind_t kind; /* "topic" or "queue" member */
    const char *name;  /* the topic or queue name */
    amqp_bytes_t routing_key;
    const amqp_basic_properties_t *props; /* may be NULL: no properties */
    amqp_bytes_t body;
    int redelivered; /* queues: the envelope's flag */
    int has_offset;  /* streams: 1, and offset = the message's stream offset */
    uint64_t offset;
} rq_rt_event_in_t;

/* One decoded message: its event text and what a filter looks at (fm). */
typedef struct rq_rt_event_msg {
    char *json; /* heap, NUL-terminated, len bytes, no '\n' */
    size_t len;
    json_t *payload;    /* the parsed body, or NULL */
    json_t *headers;    /* an object (never NULL after a successful make) */
    char *routing_key;  /* heap, NUL-terminated (a NUL inside the key cuts it) */
    char *id;           /* heap, the message_id property, or NULL */
    rq_filter_msg_t fm; /* borrows the fields above */
} rq_rt_event_msg_t;

/* Decodes `in` into *out (overwritten). Returns 0, or -1 when out of memory (*out is empty
 * then). Release with rq_rt_event_clear(). Pure but for allocation; thread-safe. */
int rq_rt_event_make(const rq_rt_event_in_t *in, rq_rt_event_msg_t *out);

/* Frees what rq_rt_event_make() allocated; *m is empty after. Safe on an empty message. */
void rq_rt_event_clear(rq_rt_event_msg_t *m);

/* The JSON value of one AMQP field value (headers): a new reference, or NULL when it has no
 * JSON form (a byte string that is not UTF-8, a table nested deeper than depth_left). */
json_t *rq_rt_event_field(const amqp_field_value_t *v, int depth_left);

#endif
