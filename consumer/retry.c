/* retry.c - attempt counting and the properties of retry / dead-letter copies (see retry.h). */
#include "retry.h"

#include <stdio.h>
#include <string.h>

#define MAX_ATTEMPT 1000000

int rq_retry_attempt(const rq_wire_msg_t *w)
{
    if (w->attempt.state != RQ_WIRE_OK || w->attempt.v < 0)
        return 0;
    return w->attempt.v > MAX_ATTEMPT ? MAX_ATTEMPT : (int)w->attempt.v;
}

int rq_retry_simulated_failure(const rq_message_t *m, int attempt, char *why, size_t whylen)
{
    if (m->fail_times <= 0 || attempt >= m->fail_times)
        return 0;
    snprintf(why, whylen, "simulated failure (fail_times=%d): attempt %d of %d fails",
             m->fail_times, attempt + 1, m->fail_times);
    return 1;
}

int rq_retry_next_queue(int attempt, int max_retries)
{
    return attempt < max_retries ? attempt + 1 : 0;
}

int rq_retry_copy_props(const amqp_basic_properties_t *orig, const amqp_table_entry_t *add,
                        int nadd, amqp_table_entry_t *entries, size_t cap,
                        amqp_basic_properties_t *out)
{
    size_t n = 0;

    *out = *orig;
    if (orig->_flags & AMQP_BASIC_HEADERS_FLAG) {
        for (int i = 0; i < orig->headers.num_entries; i++) {
            if (rq_wire_dropped_on_copy(orig->headers.entries[i].key))
                continue;
            if (n >= cap)
                return -1;
            entries[n++] = orig->headers.entries[i];
        }
    }
    for (int i = 0; i < nadd; i++) {
        if (n >= cap)
            return -1;
        entries[n++] = add[i];
    }
    out->_flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    /* a per-message TTL would shorten (or end) the wait in a delay queue or the DLQ */
    out->_flags &= ~AMQP_BASIC_EXPIRATION_FLAG;
    out->expiration = amqp_empty_bytes;
    out->delivery_mode = AMQP_DELIVERY_PERSISTENT;
    out->headers.num_entries = (int)n;
    out->headers.entries = entries;
    return 0;
}
