/* fuzz_status_event.c - libFuzzer harness: the decoding of an untrusted status event (a
 * stream message's body, common/status_event.h) and its application to a timeline.
 * Input: the body. Checks: a decoded event is within every bound, encodes again (to a text
 * that decodes to the same event), and applies to a timeline without error. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "status_event.h"
#include "timeline.h"

static rq_timeline_t *tl; /* one for the run: 64 entries, 64 keys */

/* 1 when a and b are the same optional string (NULL and "" alike). */
static int same(const char *a, const char *b)
{
    if (a == NULL || a[0] == '\0')
        return b == NULL || b[0] == '\0';
    return b != NULL && strcmp(a, b) == 0;
}

static int same_event(const rq_status_event_t *a, const rq_status_event_t *b)
{
    return a->type == b->type && same(a->id, b->id) && same(a->uid, b->uid) &&
           same(a->queue, b->queue) && same(a->key, b->key) && same(a->src, b->src) &&
           same(a->error, b->error) && a->ts_ms == b->ts_ms && a->attempt == b->attempt &&
           a->answer == b->answer && a->truncated == b->truncated &&
           a->reply_full_len == b->reply_full_len && (a->reply == NULL) == (b->reply == NULL) &&
           a->reply_len == b->reply_len &&
           (a->reply == NULL || a->reply_len == 0 || memcmp(a->reply, b->reply, a->reply_len) == 0);
}

static void check_bounds(const rq_status_event_t *ev)
{
    if (rq_sev_name(ev->type) == NULL || ev->id == NULL || ev->id[0] == '\0' ||
        strlen(ev->id) > RQ_SEV_ID_MAX || (ev->key != NULL && strlen(ev->key) > RQ_SEV_KEY_MAX) ||
        (ev->error != NULL && strlen(ev->error) > RQ_SEV_TEXT_MAX) || ev->ts_ms < 0 ||
        ev->attempt < 0 || ev->attempt > 1000000 ||
        (ev->answer != 0 && (ev->answer < 100 || ev->answer > 599)) ||
        ev->reply_len > 1024 * 1024 || (ev->reply == NULL && ev->reply_len != 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rq_status_event_t ev, again;
    rq_sev_hold_t *hold, *hold2;
    rq_jbuf_t b;
    size_t len;
    char *text;

    if (tl == NULL && (tl = rq_timeline_new(64, 64, 1000)) == NULL)
        abort();
    if (rq_status_event_decode(data, size, &ev, &hold) != 0) {
        if (hold != NULL)
            abort();
        return 0;
    }
    check_bounds(&ev);
    rq_jbuf_init(&b, 0);
    if (rq_status_event_encode(&ev, &b) != 0 || (text = rq_jbuf_take(&b, &len)) == NULL)
        abort(); /* every event decoded encodes */
    if (rq_status_event_decode(text, len, &again, &hold2) != 0 || !same_event(&ev, &again))
        abort();
    if (rq_timeline_apply(tl, &ev) < 0)
        abort();
    json_decref(rq_timeline_get(tl, ev.id));
    rq_status_event_release(hold2);
    rq_status_event_release(hold);
    free(text);
    return 0;
}
