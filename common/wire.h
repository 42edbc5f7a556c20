/* wire.h - the wire contract of a relayq message: every AMQP header and queue-argument name
 * relayq uses, the properties and headers a message carries, and how a delivery is read back.
 *
 * This header is the one place those names are spelled; every other file uses the macros.
 *
 * Properties of a message relayq publishes (rq_wire_encode):
 *   content_type    "application/json" (API) or "application/octet-stream" (tailed lines);
 *                   absent when the publisher has none (the consumer then assumes JSON)
 *   delivery_mode   2 (persistent), 1 only for a tool's --transient messages
 *   message_id      the client's id (need not be unique); tailed lines: "<file id>:<offset>"
 *   timestamp       x-published-ms / 1000 (seconds)
 *   correlation_id  the producer's UUID for the message (RPC replies are matched on it)
 *   reply_to        API messages: the producer's exclusive callback queue
 *   app_id          who published ("relayq-producer", "rq_amqp_tool")
 *   priority        the client's "priority" (0..255), when it gave one; only a queue
 *                   declared with x-max-priority orders by it
 *   expiration      the client's "ttl_ms" as a decimal string (1..2147483647), when given
 *
 * Headers (AMQP field kinds in brackets: 'l' I64, 'S' long string, 't' boolean):
 *   x-published-ms       ['l'] epoch ms at which the message was accepted; every message
 *   x-source             ['S'] "api", "tail" or "tool"; every message
 *   x-relayq-uid         ['S'] API messages: the producer's UUID, kept across republishes,
 *                        retry copies and DLQ replays; the key consumers deduplicate on
 *   x-relayq-idem        ['S'] API messages produced with an Idempotency-Key: the key (1..255
 *                        printable ASCII bytes); consumers deduplicate on it instead
 *                        ("idem:" + it, before x-relayq-uid); kept by every copy
 *   x-file               ['S'] tailed lines: the source file's identity (1..128 bytes of
 *                        [A-Za-z0-9:._-])
 *   x-offset             ['l'] tailed lines: byte offset of the body in the source file
 *   x-end                ['l'] tailed lines: byte offset just past the body (and its '\n')
 *   x-format             ['S'] tailed chunks only: "lines" (the body is whole lines, verbatim)
 *   x-lines              ['l'] tailed chunks only: the number of '\n' in the body
 *   traceparent          ['S'] W3C trace context of the message (common/trace.h): API
 *                        messages, the producer's span in the caller's trace (or a new one);
 *                        kept by every copy and put on the reply
 *   tracestate           ['S'] the caller's W3C tracestate, when it sent one
 *   (client headers)     ['S'] the produce request's "headers" (a string map; raw bodies:
 *                        Message-Header-<name> request headers), after relayq's own, in the
 *                        client's order; names relayq or the broker use are refused
 *                        (rq_wire_header_reserved)
 *   x-relayq-attempt     ['l'] retry copies: the attempt the copy is for (1..MAX_RETRIES)
 *   x-relayq-last-error  ['S'] retry copies: why the previous attempt failed
 *   x-relayq-reason      ['S'] DLQ copies: why the message was dead-lettered
 *   x-relayq-attempts    ['l'] DLQ copies: how many attempts were made
 *   x-relayq-headers-dropped ['l' 1] DLQ copies sent without the original's headers
 *   x-relayq-replayed    ['t' true] messages moved back from the DLQ by POST /dlq/retry
 *   x-death, x-first-death-*, x-last-death-*  the broker's dead-letter history (read only;
 *                        dropped from every copy relayq makes: rq_wire_dropped_on_copy())
 *
 * Reading (rq_wire_decode) is lenient where foreign clients differ and strict about type:
 *   integer headers  any AMQP integer kind (pika sends 'I' I32 for small ints), an unsigned
 *                    64-bit value up to INT64_MAX, a float in (0, 9.2e18) (truncated), or a
 *                    decimal string of 1..23 bytes (strtoll, whole string); the last two are
 *                    marked `converted`. Anything else is RQ_WIRE_BAD_TYPE.
 *   string headers   'S' long strings; x-file, x-format, x-source and x-relayq-last-error
 *                    also accept 'x' byte arrays (pika's Python bytes). x-relayq-uid,
 *                    x-relayq-idem and x-relayq-reason must be 'S'. Anything else is
 *                    RQ_WIRE_BAD_TYPE.
 *   trace headers    traceparent and tracestate as 'S' or 'x'; of any other kind, or
 *                    malformed, they are ignored (never a reason to refuse a message)
 *   duplicates       the first entry of a name counts (as in a table lookup), good or bad.
 * Contents (lengths, charsets, ranges) are the reader's business: the decoder checks types.
 */
#ifndef RQ_WIRE_H
#define RQ_WIRE_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

/* ---- names ---------------------------------------------------------------------------- */

#define RQ_WIRE_HDR_PUBLISHED_MS "x-published-ms"
#define RQ_WIRE_HDR_SOURCE "x-source"
#define RQ_WIRE_HDR_UID "x-relayq-uid"
#define RQ_WIRE_HDR_IDEM "x-relayq-idem"
#define RQ_WIRE_HDR_TRACEPARENT "traceparent"
#define RQ_WIRE_HDR_TRACESTATE "tracestate"
#define RQ_WIRE_HDR_FILE "x-file"
#define RQ_WIRE_HDR_OFFSET "x-offset"
#define RQ_WIRE_HDR_END "x-end"
#define RQ_WIRE_HDR_FORMAT "x-format"
#define RQ_WIRE_HDR_LINES "x-lines"
#define RQ_WIRE_HDR_ATTEMPT "x-relayq-attempt"
#define RQ_WIRE_HDR_LAST_ERROR "x-relayq-last-error"
#define RQ_WIRE_HDR_REASON "x-relayq-reason"
#define RQ_WIRE_HDR_ATTEMPTS "x-relayq-attempts"
#define RQ_WIRE_HDR_HEADERS_DROPPED "x-relayq-headers-dropped"
#define RQ_WIRE_HDR_REPLAYED "x-relayq-replayed"
/* A topic message's topic (issue 18), matched by the relayq.topics headers exchange: not
 * x-prefixed, because RabbitMQ's headers exchange ignores binding arguments starting with
 * "x-" (with x-match all every topic exchange then matched every message). */
#define RQ_WIRE_HDR_TOPIC "relayq-topic"
#define RQ_WIRE_HDR_RELAYQ_PREFIX "x-relayq-" /* relayq's counters: dropped from copies */
#define RQ_WIRE_HDR_DEATH "x-death"           /* the broker's: an array of tables */
#define RQ_WIRE_HDR_FIRST_DEATH_PREFIX "x-first-death-"
#define RQ_WIRE_HDR_LAST_DEATH_PREFIX "x-last-death-"
#define RQ_WIRE_DEATH_REASON "reason" /* in an x-death table: 'S' rejected, expired... */
#define RQ_WIRE_DEATH_COUNT "count"   /* in an x-death table: 'l' times dead-lettered */

#define RQ_WIRE_FORMAT_LINES "lines" /* the one x-format value */
#define RQ_WIRE_SOURCE_API "api"
#define RQ_WIRE_SOURCE_TAIL "tail"

/* Queue arguments of relayq's topology (amqp_conn.h describes the topology). */
#define RQ_WIRE_ARG_QUEUE_TYPE "x-queue-type"
#define RQ_WIRE_ARG_DL_EXCHANGE "x-dead-letter-exchange"
#define RQ_WIRE_ARG_DL_ROUTING_KEY "x-dead-letter-routing-key"
#define RQ_WIRE_ARG_DL_STRATEGY "x-dead-letter-strategy"
#define RQ_WIRE_ARG_OVERFLOW "x-overflow"
#define RQ_WIRE_ARG_MESSAGE_TTL "x-message-ttl"
#define RQ_WIRE_ARG_DELIVERY_LIMIT "x-delivery-limit"

#define RQ_WIRE_SHORTSTR_MAX 255 /* bytes in an AMQP short string (message_id, content_type) */

/* ---- writing -------------------------------------------------------------------------- */

/* A message to publish. Strings are NUL-terminated and borrowed: they must outlive the
 * properties rq_wire_encode() fills. */
typedef struct rq_wire_out {
    const char *message_id;     /* required */
    const char *content_type;   /* NULL: the property is absent */
    const char *correlation_id; /* NULL: absent */
    const char *reply_to;       /* NULL: absent */
    const char *app_id;         /* NULL: absent */
    int transient;              /* 1: delivery_mode 1; 0: 2 (persistent) */
    int64_t published_ms;       /* x-published-ms, and the timestamp property (/ 1000) */
    const char *source;         /* x-source, required */
    const char *uid;            /* x-relayq-uid; NULL: absent */
    const char *idem_key;       /* x-relayq-idem (the Idempotency-Key); NULL: absent */
    const char *file_id;        /* x-file; NULL: absent */
    int has_offset;             /* 1: x-offset = offset */
    int64_t offset;
    int has_end; /* 1: x-end = end */
    int64_t end;
    int chunk;               /* 1: x-format "lines" and x-lines = lines */
    int64_t lines;           /* chunk only */
    const char *traceparent; /* NULL: absent */
    const char *tracestate;  /* NULL: absent */
    int has_priority;        /* 1: the priority property = priority */
    uint8_t priority;
    const char *expiration;                    /* the expiration property; NULL: absent */
    const struct rq_wire_header *user_headers; /* the client's headers, after relayq's */
    size_t n_user_headers;                     /* at most RQ_WIRE_USER_HEADERS_MAX */
} rq_wire_out_t;

/* Most headers rq_wire_encode() writes of its own (the client's come on top). */
#define RQ_WIRE_OUT_HEADERS_MAX 11

/* ---- client headers (issue 16) --------------------------------------------------------
 * A produce request may carry headers of its own: a name of 1..RQ_WIRE_USER_HEADER_NAME_MAX
 * bytes of visible ASCII (0x21..0x7e), a UTF-8 value of at most RQ_WIRE_USER_HEADER_VALUE_MAX
 * bytes without NUL, at most RQ_WIRE_USER_HEADERS_MAX per message and
 * RQ_WIRE_USER_HEADERS_BYTES_MAX bytes of names and values together. */
#define RQ_WIRE_USER_HEADERS_MAX 32
#define RQ_WIRE_USER_HEADER_NAME_MAX 128
#define RQ_WIRE_USER_HEADER_VALUE_MAX 4096
#define RQ_WIRE_USER_HEADERS_BYTES_MAX 16384

typedef struct rq_wire_header {
    char *name;  /* NUL-terminated */
    char *value; /* value_len bytes, NUL-terminated */
    size_t value_len;
} rq_wire_header_t;

/* Why a client may not set header name[0..len): the names relayq writes itself (x-published-ms,
 * x-source, x-file, x-offset, x-end, x-format, x-lines, traceparent, tracestate), relayq's
 * space "x-relayq-*", the broker's dead-letter history ("x-death*", "x-first-death*",
 * "x-last-death*"), the delayed-message plugin's "x-delay*", and "CC" and "BCC" (RabbitMQ's
 * sender-selected distribution: it routes copies by them, and closes the publishing channel
 * when one is not an array, as a client's string would be); compared ignoring ASCII case.
 * Returns a static text naming the space, or NULL when the name is the client's to use. */
const char *rq_wire_header_reserved(const char *name, size_t len);

/* Fills *props (overwritten whole) with the properties and headers of message *m, headers
 * in this order: x-published-ms, x-source, x-relayq-uid, x-file, x-offset, x-end, x-format,
 * x-lines, traceparent, tracestate (each only when set), then m->user_headers. The header
 * table is built in hdr[0..RQ_WIRE_OUT_HEADERS_MAX + m->n_user_headers); *props borrows hdr
 * and m's strings. Short strings are not
 * checked here: one over RQ_WIRE_SHORTSTR_MAX bytes makes rabbitmq-c's encoding fail. Cannot fail;
 * allocates nothing. */
void rq_wire_encode(const rq_wire_out_t *m, amqp_basic_properties_t *props,
                    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX]);

/* The headers relayq adds to a retry copy for `attempt` (x-relayq-attempt, then
 * x-relayq-last-error = why) into out[0..2). Returns 2. Borrows why. */
int rq_wire_retry_headers(int64_t attempt, const char *why, amqp_table_entry_t out[2]);

/* The headers relayq adds to a DLQ copy (x-relayq-reason = why, x-relayq-attempts =
 * attempts, and with headers_dropped x-relayq-headers-dropped = 1) into out[0..3). Returns
 * how many (2 or 3). Borrows why. */
int rq_wire_dlq_headers(const char *why, int64_t attempts, int headers_dropped,
                        amqp_table_entry_t out[3]);

/* The header a message moved back from the DLQ carries (x-relayq-replayed = true). */
amqp_table_entry_t rq_wire_replayed_header(void);

/* 1 when a header must not be carried over to a copy relayq makes (retry, DLQ, replay): the
 * broker's dead-letter history (x-death, x-first-death-*, x-last-death-*) and relayq's
 * x-relayq-* counters, except x-relayq-uid and x-relayq-idem (the message's identity stays
 * with every copy).
 * Every other header, even x-firstname or x-last-seen, stays. */
int rq_wire_dropped_on_copy(amqp_bytes_t key);

/* ---- reading -------------------------------------------------------------------------- */

typedef enum {
    RQ_WIRE_ABSENT = 0,    /* no such header (or no headers at all) */
    RQ_WIRE_OK = 1,        /* present, of an accepted kind: the value is set */
    RQ_WIRE_BAD_TYPE = -1, /* present, of a kind the contract does not accept */
} rq_wire_state_t;

/* A string header: v borrows the delivery's memory (may be empty, may hold NUL). */
typedef struct rq_wire_str {
    rq_wire_state_t state;
    amqp_bytes_t v;
} rq_wire_str_t;

/* An integer header. converted: 1 when read from a decimal string or a float, 0 from an
 * AMQP integer. */
typedef struct rq_wire_int {
    rq_wire_state_t state;
    int64_t v;
    int converted;
} rq_wire_int_t;

/* Everything relayq reads from a delivery's properties and headers. Byte strings borrow the
 * delivery's memory (valid while the delivery is); the struct itself may be copied. */
typedef struct rq_wire_msg {
    /* properties: has_* is 1 when the property's flag is set (the value may be empty) */
    int has_content_type, has_message_id, has_correlation_id, has_reply_to;
    amqp_bytes_t content_type, message_id, correlation_id, reply_to;
    int has_timestamp;
    uint64_t timestamp; /* seconds */
    int has_delivery_mode;
    uint8_t delivery_mode;
    int has_headers; /* the headers property is set (it may be empty) */
    /* headers */
    rq_wire_int_t published_ms_header; /* x-published-ms */
    /* derived: x-published-ms when an integer > 0, else timestamp * 1000 when the timestamp
     * is set, > 0 and below INT64_MAX / 1000, else -1 */
    int64_t published_ms;
    rq_wire_str_t source;     /* x-source */
    rq_wire_str_t uid;        /* x-relayq-uid ('S' only) */
    rq_wire_str_t idem;       /* x-relayq-idem ('S' only) */
    rq_wire_str_t file;       /* x-file */
    rq_wire_int_t offset;     /* x-offset */
    rq_wire_int_t end;        /* x-end */
    rq_wire_str_t format;     /* x-format */
    rq_wire_int_t lines;      /* x-lines */
    rq_wire_int_t attempt;    /* x-relayq-attempt */
    rq_wire_str_t last_error; /* x-relayq-last-error */
    rq_wire_str_t reason;     /* x-relayq-reason ('S' only) */
    rq_wire_int_t attempts;   /* x-relayq-attempts */
    /* x-death: RQ_WIRE_OK when an array whose first element is a table (the latest death);
     * BAD_TYPE for anything else. From that table: the first RQ_WIRE_DEATH_REASON that is an
     * 'S' string, and the first RQ_WIRE_DEATH_COUNT that is an AMQP integer >= 0. */
    rq_wire_state_t death;
    rq_wire_str_t death_reason;
    rq_wire_int_t death_count;
    /* trace context: RQ_WIRE_OK only for a valid traceparent / carriable tracestate
     * (common/trace.h); anything else is left RQ_WIRE_ABSENT and never makes the decode fail */
    rq_wire_str_t traceparent;
    rq_wire_str_t tracestate;
} rq_wire_msg_t;

/* Why rq_wire_decode() found a header of the wrong type. */
typedef struct rq_wire_error {
    char text[160];
} rq_wire_error_t;

/* Reads the properties and headers of a delivery into *out (overwritten whole; it borrows
 * from props' memory). Returns 0, or -1 when a header of the contract has a kind it does not
 * accept, with err->text naming the first one ("header x-offset is a boolean, not an
 * integer"; err may be NULL). Even then *out is complete: the field has RQ_WIRE_BAD_TYPE and
 * every other field its value, so that the reader decides what a bad field means. Allocates
 * nothing; thread-safe. */
int rq_wire_decode(const amqp_basic_properties_t *props, rq_wire_msg_t *out, rq_wire_error_t *err);

/* The integer rule of the contract applied to one field value (see above). Returns 0 with
 * *out (and *converted, which may be NULL), or -1 when f is not an integer. */
int rq_wire_field_i64(const amqp_field_value_t *f, int64_t *out, int *converted);

/* A short name of an AMQP field kind for error texts ("a boolean", "an array"...). */
const char *rq_wire_kind_name(uint8_t kind);

#endif
