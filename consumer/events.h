/* events.h - the consumer's lifecycle events (status_event.h) of one delivery.
 *
 * The worker writes to the status stream (status_log.h, when STATUS_STREAM is set):
 * delivered (a decodable delivery; attempt = its retry attempt + 1), retried (that attempt
 * failed, a retry copy is confirmed: error = why), dead_lettered (to the DLQ after that
 * attempt, or undecodable: error = the reason) and replied (processed: the handler's reply,
 * cut to STATUS_REPLY_MAX bytes). This builds such an event from what the worker knows of
 * the delivery; a pure function (no I/O, no globals), safe on any thread.
 */
#ifndef RQ_CONSUMER_EVENTS_H
#define RQ_CONSUMER_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "status_event.h"
#include "wire.h"

/* What an event says about a delivery. Strings are borrowed. */
typedef struct rq_cev_in {
    rq_sev_type_t type;        /* delivered, retried, dead_lettered or replied */
    const rq_wire_msg_t *wire; /* the delivery's properties and headers (required) */
    const char *msg_id;        /* the decoded id (message.h); NULL: undecodable */
    const char *queue;         /* the request queue */
    const char *src;           /* "consumer:<host>:<pid>" (rq_cev_src) */
    int64_t ts_ms;             /* when (epoch ms) */
    int attempt;               /* the delivery's retry attempt, 0-based (rq_retry_attempt) */
    const char *error;         /* retried / dead_lettered: why; else NULL */
    const char *reply;         /* replied: the reply bytes (NULL: none) */
    size_t reply_len;
    size_t reply_max; /* STATUS_REPLY_MAX: longer replies are cut */
} rq_cev_in_t;

/* The NUL-terminated copies an event points into. */
typedef struct rq_cev_strs {
    char id[RQ_SEV_ID_MAX + 1];
    char uid[RQ_SEV_ID_MAX + 1];
} rq_cev_strs_t;

/* Fills *ev (pointing into *s and in's strings) with the event of in:
 *   id       the message_id property (a non-empty string without NUL), else msg_id (at most
 *            RQ_SEV_ID_MAX bytes), else the correlation_id property;
 *   uid      the x-relayq-uid header ('S', 1..RQ_SEV_ID_MAX bytes without NUL), else none;
 *   attempt  attempt + 1 for delivered, retried and dead_lettered; 0 for replied;
 *   reply    replied only: the first reply_max bytes (backed off to a UTF-8 boundary when the
 *            reply is valid UTF-8, so it stays text), truncated = 1 and reply_full_len = the
 *            whole length when cut; error for retried and dead_lettered only.
 * Returns 0, or -1 when the delivery has no usable id (no event can name it). */
int rq_cev_build(const rq_cev_in_t *in, rq_cev_strs_t *s, rq_status_event_t *ev);

/* "consumer:<hostname>:<pid>" into buf[len] (the host "unknown" when it cannot be read). */
void rq_cev_src(char *buf, size_t len);

#endif
