/* message.h - decoding a delivered message into what the consumer writes and replies.
 *
 * Pure functions (no I/O, no globals): a delivery's content type,
 * message id and body go in, the output line, the reply text and the processing parameters come
 * out. Safe to call from any thread; meant to be fuzzed.
 *
 * Accepted content types (parameters such as "; charset=utf-8" are ignored, case-insensitive):
 *   - application/json (also when the content type is absent): a JSON object with
 *     "payload" (any JSON value, required), "id" (string; when absent the message_id
 *     property is used), "processing_time" (number >= 0, optional, capped at a maximum),
 *     "fail_times" (integer >= 0, optional). Other members are ignored.
 *   - application/octet-stream and text/plain (tailed lines): the body is the line, byte for
 *     byte (NUL, \r and invalid UTF-8 included); the id is the message_id property.
 * Anything else is undecodable: the caller dead-letters it (retry.h).
 *
 * Deduplication key (`key`): the x-relayq-uid header when present (a non-empty string: the
 * producer's UUID per accepted message, kept across its republishes), else the message_id
 * property (foreign publishers; a tailed line's is "<file id>:<offset>"), else the body "id"
 * (a foreign publisher that sets no message_id). The client's "id" (the producer's
 * message_id) is metadata: it stays the reply's message_id and need not be unique.
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
 * The output line is a string payload verbatim (it may hold any character, even '\n'), any
 * other payload compact-serialized (JSON_COMPACT | JSON_ENCODE_ANY, keys in their original
 * order). The reply is "Consumer processed: " followed by the line.
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
    RQ_MSG_RAW = 1,  /* a tailed line */
} rq_msg_kind_t;

/* What message decoding needs from a delivery. Each field is a (pointer, length) pair that
 * need not be NUL-terminated; a NULL pointer means "property absent". */
typedef struct rq_msg_input {
    const char *content_type;
    size_t content_type_len;
    const char *message_id;
    size_t message_id_len;
    const void *body;
    size_t body_len;
    /* the delivery's decoded headers (NULL: no headers property): the tail range and the
     * x-relayq-uid key; borrowed */
    const rq_wire_msg_t *wire;
    int has_reply_to; /* 1 when the delivery has a non-empty reply_to */
} rq_msg_input_t;

#define RQ_MSG_FILE_ID_MAX 128

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
    char *key_buf;          /* owned: the message_id property when it is the key, else NULL */
    /* a tailed line (x-file header on a raw message): its byte range [start, end) */
    int tailed;
    char file_id[RQ_MSG_FILE_ID_MAX + 1];
    int64_t start, end;
    int verbatim; /* a chunk of lines (x-format "lines"): written as is, end - start == line_len */
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
 * and its body: content type, message id, headers, reply_to presence. Pointers are borrowed
 * from `w` (which must outlive *in) and `body`. */
void rq_message_input_from_wire(const rq_wire_msg_t *w, amqp_bytes_t body, rq_msg_input_t *in);

#endif
