/* retry.h - what becomes of a delivery whose processing failed.
 *
 * Attempts are counted in the header x-relayq-attempt: absent (or 0) on the first delivery,
 * n on the copy that waited in delay queue <q>.retry.n. A failed attempt `a` goes on as a
 * copy of the message (same body and properties, persistent, headers updated):
 *   a < MAX_RETRIES   to <q>.retry.(a+1) with x-relayq-attempt = a+1 and
 *                     x-relayq-last-error = why it failed; after that queue's TTL
 *                     (RETRY_BASE_MS * 2^a) the broker dead-letters it back to <q>;
 *   a >= MAX_RETRIES  to <q>.dlq with x-relayq-reason (text) and x-relayq-attempts (a+1).
 * An undecodable message goes to <q>.dlq at once (x-relayq-reason "undecodable: ...",
 * x-relayq-attempts a+1). So a message is processed at most MAX_RETRIES + 1 times.
 * Copies drop the original's x-relayq-* headers (replaced) and the broker's dead-letter
 * history (x-death, x-first-death-*, x-last-death-*), and any per-message expiration;
 * reply_to and correlation_id survive, so the attempt that succeeds replies as usual.
 * POST /dlq/retry (producer/api/dlq.h) strips x-relayq-* again: a replayed message starts over at
 * attempt 0.
 *
 * Test aid: a JSON message with "fail_times": n fails its first n attempts (a < n), after
 * its processing_time, whatever else it holds.
 *
 * Pure functions (no I/O, no globals), thread-safe.
 */
#ifndef RQ_CONSUMER_RETRY_H
#define RQ_CONSUMER_RETRY_H

#include <amqp.h>
#include <stddef.h>

#include "message.h"
#include "wire.h"

/* The attempt number of a delivery (decoded by rq_wire_decode()): its x-relayq-attempt header
 * (wire.h's integer rule: any integer kind, a decimal string...), or 0 when absent, negative
 * or not an integer. Capped at 1000000. */
int rq_retry_attempt(const rq_wire_msg_t *w);

/* The test aid: returns 1 when decoded message `m` must fail attempt `attempt` (attempt <
 * m->fail_times), with why it failed written into why[whylen]; else 0 (why untouched). */
int rq_retry_simulated_failure(const rq_message_t *m, int attempt, char *why, size_t whylen);

/* Where failed attempt `attempt` goes: the number of the delay queue (attempt + 1) while
 * attempt < max_retries, else 0 for the dead-letter queue. */
int rq_retry_next_queue(int attempt, int max_retries);

/* Builds the properties of a copy of `orig`: every property of orig except expiration,
 * delivery_mode persistent, and headers = orig's headers without those
 * rq_wire_dropped_on_copy() names (x-relayq-* except x-relayq-uid, the message's identity,
 * which every copy keeps; x-death, x-first-death-* and x-last-death-*), followed by
 * add[0..nadd) (rq_wire_retry_headers(), rq_wire_dlq_headers()). The header table is built
 * in entries[0..cap); its entries (and every other property) borrow from orig and add, so
 * *out is valid only while those are. Returns 0, or -1 when cap is too small (cap >=
 * orig's header count + nadd always suffices). */
int rq_retry_copy_props(const amqp_basic_properties_t *orig, const amqp_table_entry_t *add,
                        int nadd, amqp_table_entry_t *entries, size_t cap,
                        amqp_basic_properties_t *out);

#endif
