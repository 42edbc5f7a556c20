/* trace.h - W3C trace context (traceparent, tracestate) carried through relayq (issue 14).
 *
 * The producer takes `traceparent` / `tracestate` from an HTTP request, or starts a trace
 * when there is none (or it is malformed), and publishes every message of the request with
 * a traceparent of its own span in that trace (same trace id, a new parent id, the caller's
 * flags) and the caller's tracestate; the consumer passes both to its handler, logs the
 * trace id with every line about the message, and puts them on the reply.
 *
 * traceparent (https://www.w3.org/TR/trace-context/): "00-<32 hex trace id>-<16 hex parent
 * id>-<2 hex flags>", lowercase, neither id all zeros, version ff invalid; a later version
 * may append "-..." (its first 55 characters are read as version 00's). */
#ifndef RQ_TRACE_H
#define RQ_TRACE_H

#include <stddef.h>

#define RQ_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */
#define RQ_TRACE_ID_LEN 32    /* hex characters of a trace id */
#define RQ_TRACESTATE_MAX 512 /* longest tracestate carried (the spec's limit) */

/* 1 when tp[0..len) is a valid traceparent, else 0. */
int rq_traceparent_valid(const char *tp, size_t len);

/* 1 when ts[0..len) can be carried as a tracestate: 1..RQ_TRACESTATE_MAX bytes of printable
 * ASCII (list members are not parsed: it is passed on as received), else 0. */
int rq_tracestate_valid(const char *ts, size_t len);

/* The traceparent of a new span: in the trace of parent (parent_len bytes, valid) with a new
 * random parent id and parent's flags, or, when parent is NULL or invalid, in a new trace
 * (new random ids, flags 01: sampled). Writes RQ_TRACEPARENT_LEN + 1 bytes to out. */
void rq_traceparent_child(const char *parent, size_t parent_len, char out[RQ_TRACEPARENT_LEN + 1]);

#endif
