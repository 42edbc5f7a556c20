/* events.c - the consumer's lifecycle events of one delivery (see events.h). */
#include "events.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "jbuf.h"

/* b[0..n) into out (NUL-terminated) when it is 1..RQ_SEV_ID_MAX bytes without NUL: 1; else 0. */
static int take_str(const void *b, size_t n, char out[RQ_SEV_ID_MAX + 1])
{
    if (b == NULL || n == 0 || n > RQ_SEV_ID_MAX || memchr(b, '\0', n) != NULL)
        return 0;
    memcpy(out, b, n);
    out[n] = '\0';
    return 1;
}

/* The event's id (events.h) into s->id. Returns 0, or -1 when there is none. */
static int event_id(const rq_cev_in_t *in, rq_cev_strs_t *s)
{
    const rq_wire_msg_t *w = in->wire;

    if (w->has_message_id && take_str(w->message_id.bytes, w->message_id.len, s->id))
        return 0;
    if (in->msg_id != NULL && take_str(in->msg_id, strlen(in->msg_id), s->id))
        return 0;
    if (w->has_correlation_id && take_str(w->correlation_id.bytes, w->correlation_id.len, s->id))
        return 0;
    return -1;
}

/* The reply of a replied event: at most reply_max bytes, cut on a UTF-8 boundary when the
 * whole is valid UTF-8. */
static void event_reply(const rq_cev_in_t *in, rq_status_event_t *ev)
{
    size_t n = in->reply_len;

    if (in->reply == NULL || in->reply_len == 0)
        return;
    if (n > in->reply_max) {
        n = in->reply_max;
        if (rq_jbuf_utf8_valid(in->reply, in->reply_len)) {
            /* back off over continuation bytes (10xxxxxx) to the start of a character */
            while (n > 0 && ((unsigned char)in->reply[n] & 0xC0) == 0x80)
                n--;
        }
        ev->truncated = 1;
        ev->reply_full_len = in->reply_len;
    }
    ev->reply = n > 0 ? in->reply : NULL;
    ev->reply_len = n;
}

int rq_cev_build(const rq_cev_in_t *in, rq_cev_strs_t *s, rq_status_event_t *ev)
{
    const rq_wire_str_t *uid = &in->wire->uid;

    memset(ev, 0, sizeof(*ev));
    if (event_id(in, s) < 0)
        return -1;
    ev->type = in->type;
    ev->id = s->id;
    if (uid->state == RQ_WIRE_OK && take_str(uid->v.bytes, uid->v.len, s->uid))
        ev->uid = s->uid;
    ev->queue = in->queue;
    ev->src = in->src;
    ev->ts_ms = in->ts_ms;
    switch (in->type) {
    case RQ_SEV_DELIVERED:
        ev->attempt = in->attempt + 1;
        break;
    case RQ_SEV_RETRIED:
    case RQ_SEV_DEAD_LETTERED:
        ev->attempt = in->attempt + 1;
        ev->error = in->error;
        break;
    case RQ_SEV_REPLIED:
        event_reply(in, ev);
        break;
    default:
        break;
    }
    return 0;
}

void rq_cev_src(char *buf, size_t len)
{
    char host[256];

    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = '\0';
    snprintf(buf, len, "consumer:%s:%ld", host, (long)getpid());
}
