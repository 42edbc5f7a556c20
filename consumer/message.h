/* message.h - decoding a delivered message into what the consumer writes and replies.
 *
 * Pure functions (no I/O, no globals; the one exception: a message with no identity at all
 * gets a random UUID as its id): a delivery's content type, message id and body go in, the
 * output line, the reply text and the processing parameters come out. Safe to call from any
 * thread; meant to be fuzzed.
 *
 * What a body is, by content type (parameters such as "; charset=utf-8" are ignored,
 * case-insensitive):
 *   - application/json: JSON. relayq's envelope is a JSON object with a "payload" member:
 *     "payload" (any JSON value), "id" (string; when absent see "Ids" below),
 *     "processing_time" (number >= 0, optional, capped at a maximum), "fail_times" (a number
 *     written as an integer, >= 0, optional); other members are ignored. An envelope whose
 *     fields have the wrong types is undecodable. Any other JSON value (an array, a number,
 *     an object without "payload": what a foreign client sends) is the payload itself. A body
 *     declared application/json that does not parse is undecodable.
 *   - no content type (or an empty one): JSON as above when the body parses as JSON,
 *     otherwise text (below). The RabbitMQ tutorials' clients send "30" this way.
 *   - text/plain and application/octet-stream: with an x-file header a tailed line (below);
 *     otherwise text from a foreign client: the raw body is the payload.
 * Any other content type is undecodable. The caller dead-letters undecodable messages
 * (retry.h).
 *
 * Ids (`id`, the reply's message_id): the envelope's "id", else the message_id property, else
 * the correlation_id property (an RPC client that sets only that), else a new random UUID.
 *
 * Deduplication key (`key`): "idem:" + the x-relayq-idem header when present and valid (an
 * 'S' string of 1..255 bytes without NUL: the client's Idempotency-Key, which the producer
 * puts on every message produced with one, so that two messages with one key are written to
 * the output once; both are still acked and replied to), else the x-relayq-uid header when
 * present (a non-empty string: the producer's UUID per accepted message, kept across its
 * republishes), else the message_id property (foreign publishers; a tailed line's is
 * "<file id>:<offset>"), else the envelope "id". Never the correlation_id (clients reuse one across
 * messages: a saga id): a message whose id is its correlation_id, like one with no identity at all,
 * gets a new UUID as its key per delivery, so a redelivery of it may be written twice. An
 * x-relayq-idem of another kind, empty, over RQ_MSG_IDEM_MAX bytes or holding NUL is ignored (the
 * rules above apply; idem_ignored is set so that the caller can log it). A tailed line is keyed by
 * its place in its file, never by these. The client's "id" (the producer's message_id) is metadata:
 * it stays the reply's message_id and need not be unique.
 *
 * A reply must fit the wire: with a reply_to, an "id" over 255 bytes (an AMQP short string,
 * the reply's message_id) makes the message undecodable, so it is dead-lettered with that
 * reason instead of breaking the commit.
 *
 * Tailed lines (a raw message with an x-file header) carry their place in the source file:
 * x-file (1..128 bytes of [A-Za-z0-9:._-]), x-offset (integer >= 0, required), x-end
 * (integer, optional), x-format (optional, only "lines": a chunk of whole lines, verbatim).
 * Anything may publish to the request queue, so every range is checked (no arithmetic can
 * overflow) and an impossible one is undecodable: a chunk covers exactly its body, [x-offset,
 * x-offset + body length), and x-end, when given, must say so; a one-line message covers its
 * bytes and at most one '\n' (x-end - x-offset is the body length or one more; without x-end,
 * one more); the range must end at or before INT64_MAX.
 *
 * The payload reaches the output and the reply as the bytes the client sent (never
 * re-serialized: 0.1 stays 0.1, big integers and escapes stay as written). jansson only
 * validates, with JSON_DECODE_INT_AS_REAL: an integer of any length is valid, a number whose
 * magnitude overflows a double (1e400) is not. The output line,
 * one line per message (the output adds the '\n'; the line never holds one, except a tailed
 * chunk, whose lines are counted):
 *   - a JSON string payload: its decoded text when it holds no control character (U+0000 to
 *     U+001F, U+007F); otherwise its JSON text as sent, quotes and escapes included
 *     ("line1\nline2" is written as those 14 bytes);
 *   - any other JSON payload: its JSON text as sent, with the raw CR and LF between tokens
 *     removed (nothing else changes: spaces and tabs stay);
 *   - a text body from a foreign client: the body byte for byte when it holds no '\n'
 *     (NUL, CR and invalid UTF-8 included, as for tailed lines); otherwise quoted as a JSON
 *     string ('"', '\\' and C0/DEL characters escaped, every other byte as it is);
 *   - a tailed line: the body byte for byte; a chunk (x-format "lines"): its lines verbatim.
 *     (The tailer never sends a one-line message holding '\n'; a forged one is written as
 *     is: the range checks above do not look inside the body.)
 * A reader cannot tell a quoted string from a string whose text starts with '"', nor the
 * string "42" from the number 42: the line is for people and line-based tools; the payload
 * itself travels unchanged in `payload`. The reply is "Consumer processed: " followed by the
 * line.
 */
#ifndef RQ_CONSUMER_MESSAGE_H
#define RQ_CONSUMER_MESSAGE_H

#include <amqp.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

#define RQ_REPLY_PREFIX "Consumer processed: "
#define RQ_REPLY_PREFIX_LEN (sizeof(RQ_REPLY_PREFIX) - 1)

typedef enum {
    RQ_MSG_JSON = 0, /* an API message */
    RQ_MSG_RAW = 1,  /* a tailed line, or a foreign client's text body */
} rq_msg_kind_t;

/* What message decoding needs from a delivery. Each field is a (pointer, length) pair that
 * need not be NUL-terminated; a NULL pointer means "property absent". */
typedef struct rq_msg_input {
    const char *content_type;
    size_t content_type_len;
    const char *message_id;
    size_t message_id_len;
    const char *correlation_id; /* an id for a message that has no other (see "Ids") */
    size_t correlation_id_len;
    const void *body;
    size_t body_len;
    /* the delivery's decoded headers (NULL: no headers property): the tail range and the
     * x-relayq-uid key; borrowed */
    const rq_wire_msg_t *wire;
    int has_reply_to; /* 1 when the delivery has a non-empty reply_to */
} rq_msg_input_t;

#define RQ_MSG_FILE_ID_MAX 128
#define RQ_MSG_IDEM_PREFIX "idem:" /* the dedup key of a message with an x-relayq-idem */
#define RQ_MSG_IDEM_MAX 255        /* longest x-relayq-idem taken as a key */

/* A decoded message. All memory is owned by the struct; release it with rq_message_clear(). */
typedef struct rq_message {
    rq_msg_kind_t kind;
    char *id;    /* NUL-terminated message id (never NULL after a successful decode) */
    char *reply; /* "Consumer processed: <line>", reply_len bytes, NUL-terminated */
    size_t reply_len;
    const char *line; /* points into reply after the prefix; line_len bytes, may hold NUL */
    size_t line_len;
    double processing_time; /* seconds, 0 when absent, already capped */
    int processing_capped;  /* 1 when processing_time was above the maximum and got capped */
    int fail_times;         /* 0 when absent */
    const char *key;        /* the deduplication key (see above): key_len bytes, points into */
    size_t key_len;         /* key_buf or id; never NULL after a successful decode */
    char *key_buf;          /* owned: the key when it is not the id ("idem:..." too), else NULL */
    int idem_ignored;       /* 1: an x-relayq-idem header was there but not a valid key */
    /* a tailed line (x-file header on a raw message): its byte range [start, end) */
    int tailed;
    char file_id[RQ_MSG_FILE_ID_MAX + 1];
    int64_t start, end;
    int verbatim; /* a chunk of lines (x-format "lines"): written as is, end - start == line_len */
    /* the payload as the client sent it (what a handler gets): the JSON text of the value
     * (payload_json 1) or the raw body (0); payload_len bytes, NUL-terminated, owned */
    char *payload;
    size_t payload_len;
    int payload_json;
} rq_message_t;

/* Why a message could not be decoded, as one short sentence. */
typedef struct rq_msg_error {
    char text[256];
} rq_msg_error_t;

/* Decodes `in` into *out (which is overwritten, not freed first). `max_processing_time`
 * (seconds, >= 0) caps processing_time. Returns 0; -1 when the message is undecodable, with
 * err->text set (err may be NULL) and *out left empty (rq_message_clear() is still safe);
 * -2 on allocation failure (err->text "out of memory"): the message itself may be fine;
 * inside jansson it is only told apart with rq_json_alloc_init() installed (json_alloc.h). */
int rq_message_decode(const rq_msg_input_t *in, double max_processing_time, rq_message_t *out,
                      rq_msg_error_t *err);

/* Frees what rq_message_decode() allocated and zeroes *m. NULL and zeroed structs are fine. */
void rq_message_clear(rq_message_t *m);

/* Fills an rq_msg_input_t from a delivery's decoded properties and headers (rq_wire_decode())
 * and its body: content type, message id, correlation id, headers, reply_to presence. Pointers are
 * borrowed from `w` (which must outlive *in) and `body`. */
void rq_message_input_from_wire(const rq_wire_msg_t *w, amqp_bytes_t body, rq_msg_input_t *in);

#endif
