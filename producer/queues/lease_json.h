/* lease_json.h - the JSON object of one leased message in a pull's answer (lease.h, "Message
 * fields"), written straight into the answer's text.
 *
 * rq_lease_msg_json() writes what rq_lease_msg_jansson() (the reference: a jansson tree) holds,
 * the same keys in the same order with the same values, without a node per value: scalar
 * headers are written directly, and a JSON body that common/json_scan.h vouches for is
 * spliced in as its bytes (its whitespace and number spellings kept; the values are jansson's).
 * A header table it cannot vouch for (a nested table or array, a key that is not UTF-8, too
 * long, repeated, or holding a NUL) and a JSON body outside the scanner's subset go through
 * jansson, as before. Not thread-safe per buffer; no global state.
 */
#ifndef RQ_LEASE_JSON_H
#define RQ_LEASE_JSON_H

#include <amqp.h>
#include <jansson.h>
#include <stdint.h>

#include "jbuf.h"

/* What the leaser adds to a message. */
typedef struct rq_lease_msg_info {
    const char *message_id; /* UTF-8 (see rq_lease_msgid_ok()) */
    int attempt;
    const char *lease_id;
    int64_t expires_ms; /* epoch ms */
} rq_lease_msg_info_t;

/* Appends the message's object to b: {"message_id","attempt","lease_id","lease_expires_at",
 * "lease_expires_ms","content_type","headers"[,"priority"],"body"|"body_base64"}. Returns 0,
 * or -1 with b as it was (a message_id or lease_id that is not UTF-8), or -1 with b failed
 * (out of memory). */
int rq_lease_msg_json(rq_jbuf_t *b, const amqp_message_t *m, const rq_lease_msg_info_t *info);

/* The same object as a jansson tree (new reference), or NULL (out of memory, or an id that
 * is not UTF-8). The reference for tests, and the writer's fallback pieces. */
json_t *rq_lease_msg_jansson(const amqp_message_t *m, const rq_lease_msg_info_t *info);

/* 1 when id[0..len) can be a pulled message's message_id (non-empty valid UTF-8 without NUL:
 * it is written as a JSON string and sent back in an ack's URL or body), else 0. */
int rq_lease_msgid_ok(const void *id, size_t len);

#endif
