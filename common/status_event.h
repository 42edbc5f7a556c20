/* status_event.h - one lifecycle event of a message, as written to the status stream.
 *
 * Both services write events to the status stream (status_log.h); every producer replica
 * reads them back into its timeline index (producer/api/timeline.h). The producer writes
 * accepted (taken by the API), confirmed (stored by the broker; with the idempotency key, if
 * any) and not_stored (the publish failed); the consumer writes delivered (attempt n), retried
 * (with the error), dead_lettered (with the reason) and replied (with the reply, at most
 * STATUS_REPLY_MAX bytes: longer ones are cut and marked truncated).
 *
 * Encoding: one compact JSON object per event, the stream message's body (content type
 * application/json):
 *   {"v":1,"ev":"<type>","id":"<message id>","uid":"...","queue":"...","key":"...",
 *    "src":"...","ts":<epoch ms>,"attempt":N,"error":"...","reply":"..." | "reply_b64":"...",
 *    "reply_len":N,"truncated":true,"answer":N}
 * Members that are absent (NULL strings, zero numbers, false) are left out. A reply that is
 * valid UTF-8 goes in "reply", any other in "reply_b64" (base64). Unknown members are ignored
 * when decoding (newer writers); "v" above 1 or a missing "ev"/"id"/"ts" is an error.
 *
 * Pure functions, no globals: safe on any thread; the decoder is fuzzed.
 */
#ifndef RQ_STATUS_EVENT_H
#define RQ_STATUS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "jbuf.h"

typedef enum rq_sev_type {
    RQ_SEV_NONE = 0,
    RQ_SEV_ACCEPTED,      /* "accepted": the producer took it */
    RQ_SEV_CONFIRMED,     /* "confirmed": the broker stored it */
    RQ_SEV_NOT_STORED,    /* "not_stored": the publish failed (error says why) */
    RQ_SEV_DELIVERED,     /* "delivered": a consumer got attempt `attempt` */
    RQ_SEV_RETRIED,       /* "retried": attempt `attempt` failed with `error`, retry follows */
    RQ_SEV_DEAD_LETTERED, /* "dead_lettered": to the DLQ after attempt `attempt`, `error` */
    RQ_SEV_REPLIED,       /* "replied": processed; `reply` */
    RQ_SEV_COUNT
} rq_sev_type_t;

#define RQ_SEV_ID_MAX 255    /* longest id, uid, queue */
#define RQ_SEV_KEY_MAX 255   /* longest idempotency key */
#define RQ_SEV_TEXT_MAX 1024 /* longest error text kept (longer: cut on encode) */

/* One event. Strings are borrowed (NUL-terminated; NULL or "" means absent), except reply,
 * which is reply_len bytes (may hold NUL). */
typedef struct rq_status_event {
    rq_sev_type_t type;
    const char *id;    /* the message id (the client's "id", or the producer's); required */
    const char *uid;   /* the producer's per-message UUID (x-relayq-uid); NULL: foreign */
    const char *queue; /* the queue it went to; NULL: unknown */
    const char *key;   /* confirmed: the idempotency key it was produced with; NULL: none */
    const char *src;   /* who wrote it: "producer:<replica>", "consumer:<host>:<pid>" */
    int64_t ts_ms;     /* epoch ms, when it happened (the writer's clock) */
    int attempt;       /* delivered/retried/dead_lettered: the attempt, 1-based; else 0 */
    const char *error; /* retried: the error; dead_lettered: the reason; not_stored: why */
    const char *reply; /* replied: the reply bytes (NULL: none) */
    size_t reply_len;
    size_t reply_full_len; /* replied: the reply's length before any cut (0: = reply_len) */
    int truncated;         /* replied: 1 when reply holds only the first bytes */
    unsigned answer;       /* confirmed: the HTTP status the producer answered (201); 0: none */
} rq_status_event_t;

/* The event type's wire name ("accepted"...), or NULL for an invalid type. */
const char *rq_sev_name(rq_sev_type_t t);

/* The type named `name` (n bytes), or RQ_SEV_NONE. */
rq_sev_type_t rq_sev_parse(const char *name, size_t n);

/* Appends ev's JSON encoding to out (see the header comment). An error longer than
 * RQ_SEV_TEXT_MAX is cut there (on a UTF-8 boundary). Returns 0, or -1 when ev is invalid
 * (no type, no id, an id/uid/queue/key over its maximum) or out failed to grow. */
int rq_status_event_encode(const rq_status_event_t *ev, rq_jbuf_t *out);

/* What a decoded event's strings point into (opaque). */
typedef struct rq_sev_hold rq_sev_hold_t;

/* Decodes one event from body (len bytes). On success returns 0 and fills *ev with strings
 * that point into *hold (new; the caller releases it with rq_status_event_release() once done
 * with ev; a "reply_b64" is decoded into memory *hold owns). Returns -1 for anything that is
 * not a valid event (*hold is NULL then). */
int rq_status_event_decode(const void *body, size_t len, rq_status_event_t *ev,
                           rq_sev_hold_t **hold);

/* Releases what rq_status_event_decode() made. NULL is a no-op. */
void rq_status_event_release(rq_sev_hold_t *hold);

#endif
