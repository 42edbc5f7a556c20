/* retry.c - attempt counting and the properties of retry / dead-letter copies (see retry.h). */
#include "retry.h"

#include "amqp_conn.h"

#include <stdio.h>
#include <string.h>

#define MAX_ATTEMPT 1000000

int rq_retry_attempt(const amqp_basic_properties_t *props)
{
    int64_t v;

    if (rq_message_header_i64(props, RQ_HDR_ATTEMPT, &v) != 0 || v < 0)
        return 0;
    return v > MAX_ATTEMPT ? MAX_ATTEMPT : (int)v;
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

/* 1 when header `key` is one a copy must not carry over. */
static int dropped_header(amqp_bytes_t key)
{
    static const char *const prefixes[] = {"x-relayq-", "x-first-death-", "x-last-death-"};

    if (key.len == 7 && memcmp(key.bytes, "x-death", 7) == 0)
        return 1;
    if (key.len == strlen(RQ_HDR_UID) && memcmp(key.bytes, RQ_HDR_UID, key.len) == 0)
        return 0; /* the message's identity (dedup key) stays with every copy */
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t n = strlen(prefixes[i]);

        if (key.len >= n && memcmp(key.bytes, prefixes[i], n) == 0)
            return 1;
    }
    return 0;
}

int rq_retry_copy_props(const amqp_basic_properties_t *orig, const amqp_table_entry_t *add,
                        int nadd, amqp_table_entry_t *entries, size_t cap,
                        amqp_basic_properties_t *out)
{
    size_t n = 0;

    *out = *orig;
    if (orig->_flags & AMQP_BASIC_HEADERS_FLAG) {
        for (int i = 0; i < orig->headers.num_entries; i++) {
            if (dropped_header(orig->headers.entries[i].key))
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
