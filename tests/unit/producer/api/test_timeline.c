/* test_timeline.c - the producer's timeline index (producer/api/timeline.c): apply rules,
 * status derivation, bounds, idempotency keys and long-poll waiters. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "timeline.h"
#include "util.h"

#define DAY_MS (86400LL * 1000)

static rq_status_event_t mk(rq_sev_type_t t, const char *id, const char *uid, int64_t ts,
                            int attempt)
{
    return (rq_status_event_t){
        .type = t, .id = id, .uid = uid, .ts_ms = ts, .attempt = attempt, .src = "test:1"};
}

static int ap(rq_timeline_t *tl, rq_sev_type_t t, const char *id, const char *uid, int64_t ts,
              int attempt)
{
    rq_status_event_t ev = mk(t, id, uid, ts, attempt);

    return rq_timeline_apply(tl, &ev);
}

static const char *str_of(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* The event names of id's timeline, space separated, into buf. */
static const char *events_of(rq_timeline_t *tl, const char *id, char *buf, size_t len)
{
    json_t *o = rq_timeline_get(tl, id), *a = json_object_get(o, "timeline"), *it;
    size_t i, k = 0;

    buf[0] = '\0';
    json_array_foreach(a, i, it)
    {
        json_int_t at = json_integer_value(json_object_get(it, "attempt"));
        k += (size_t)snprintf(buf + k, len - k, "%s%s", k ? " " : "", str_of(it, "event"));
        if (at)
            k += (size_t)snprintf(buf + k, len - k, "%lld", (long long)at);
    }
    json_decref(o);
    return buf;
}

Test(timeline, lifecycle_and_store_keys)
{
    rq_timeline_t *tl = rq_timeline_new(8, 8, DAY_MS);
    rq_status_event_t r = mk(RQ_SEV_REPLIED, "m", "u", 4000, 0);
    json_t *o;
    char buf[256];

    cr_assert_not_null(tl);
    cr_expect_null(rq_timeline_get(tl, "m"));
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_UNKNOWN);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1000, 0), 1);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_QUEUED);
    cr_expect_eq(ap(tl, RQ_SEV_CONFIRMED, "m", "u", 1001, 0), 1);
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 2000, 1), 1);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_PROCESSING);
    r.reply = "Consumer processed: x";
    r.reply_len = strlen(r.reply);
    cr_expect_eq(rq_timeline_apply(tl, &r), 1);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_PROCESSED);
    o = rq_timeline_get(tl, "m");
    cr_assert_not_null(o);
    cr_expect_str_eq(str_of(o, "message_id"), "m");
    cr_expect_str_eq(str_of(o, "status"), "processed");
    cr_expect_str_eq(str_of(o, "queued_at"), "1970-01-01T00:00:01.000Z");
    cr_expect_str_eq(str_of(o, "processed_at"), "1970-01-01T00:00:04.000Z");
    cr_expect_str_eq(str_of(o, "reply"), "Consumer processed: x");
    cr_expect_str_eq(str_of(o, "uid"), "u");
    cr_expect_eq(json_integer_value(json_object_get(o, "attempts")), 1);
    cr_expect_null(json_object_get(o, "events_dropped"));
    json_t *last = json_array_get(json_object_get(o, "timeline"), 3);
    cr_expect_str_eq(str_of(last, "event"), "replied");
    cr_expect_str_eq(str_of(last, "reply"), "Consumer processed: x");
    cr_expect_str_eq(str_of(last, "by"), "test:1");
    cr_expect_str_eq(str_of(last, "at"), "1970-01-01T00:00:04.000Z");
    cr_expect_eq(json_integer_value(json_object_get(last, "ts")), 4000);
    json_decref(o);
    cr_expect_str_eq(events_of(tl, "m", buf, sizeof(buf)), "accepted confirmed delivered1 replied");
    cr_expect_str_eq(rq_tl_status_name(RQ_TL_FAILED), "failed");
    cr_expect_null(rq_tl_status_name(RQ_TL_UNKNOWN));
    rq_timeline_free(tl);
    rq_timeline_free(NULL);
}

Test(timeline, repeats_ignored_and_ts_order)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    char buf[256];

    /* out of order, from different writers */
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 3000, 2), 1);
    cr_expect_eq(ap(tl, RQ_SEV_RETRIED, "m", "u", 2000, 1), 1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1000, 0), 1);
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 1500, 1), 1);
    /* one event per (type, attempt): a repeat, even with another ts, is ignored */
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 3000, 2), 0);
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 9000, 1), 0);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", NULL, 1000, 0), 0);
    cr_expect_str_eq(events_of(tl, "m", buf, sizeof(buf)),
                     "accepted delivered1 retried1 delivered2");
    json_t *o = rq_timeline_get(tl, "m");
    cr_expect_eq(json_integer_value(json_object_get(o, "attempts")), 2);
    json_decref(o);
    rq_timeline_free(tl);
}

Test(timeline, uid_rules)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    char buf[256];

    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u1", 1000, 0), 1);
    cr_expect_eq(ap(tl, RQ_SEV_REPLIED, "m", "u1", 2000, 0), 1);
    /* another uid: a delivered one is ignored, and so is an older accepted */
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u2", 3000, 1), 0);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u2", 500, 0), 0);
    cr_expect_eq(ap(tl, RQ_SEV_CONFIRMED, "m", "u2", 1000, 0), 0);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_PROCESSED);
    /* an event without uid belongs to whatever the entry is */
    cr_expect_eq(ap(tl, RQ_SEV_CONFIRMED, "m", NULL, 1001, 0), 1);
    /* a newer accepted with another uid: the id was reused, the entry starts again */
    cr_expect_eq(ap(tl, RQ_SEV_CONFIRMED, "m", "u3", 5000, 0), 1);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_QUEUED);
    cr_expect_str_eq(events_of(tl, "m", buf, sizeof(buf)), "confirmed");
    json_t *o = rq_timeline_get(tl, "m");
    cr_expect_str_eq(str_of(o, "uid"), "u3");
    cr_expect_null(json_object_get(o, "reply"));
    json_decref(o);
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u1", 6000, 1), 0);
    /* an entry made without uid adopts the first one it sees */
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "f", NULL, 1000, 1), 1);
    cr_expect_eq(ap(tl, RQ_SEV_REPLIED, "f", "u9", 2000, 0), 1);
    o = rq_timeline_get(tl, "f");
    cr_expect_str_eq(str_of(o, "uid"), "u9");
    json_decref(o);
    cr_expect_eq(ap(tl, RQ_SEV_RETRIED, "f", "u8", 3000, 1), 0);
    rq_timeline_free(tl);
}

Test(timeline, status_derivation_and_final)
{
    rq_timeline_t *tl = rq_timeline_new(16, 0, DAY_MS);
    rq_status_event_t ns = mk(RQ_SEV_NOT_STORED, "n", "u", 1001, 0);

    ns.error = "publish nacked";
    ap(tl, RQ_SEV_ACCEPTED, "n", "u", 1000, 0);
    cr_expect_eq(rq_timeline_apply(tl, &ns), 1);
    cr_expect_eq(rq_timeline_status(tl, "n"), RQ_TL_FAILED);
    ap(tl, RQ_SEV_DELIVERED, "n", "u", 2000, 1); /* final: stays failed */
    cr_expect_eq(rq_timeline_status(tl, "n"), RQ_TL_FAILED);
    json_t *o = rq_timeline_get(tl, "n");
    cr_expect_str_eq(str_of(o, "error"), "publish nacked");
    json_decref(o);

    /* processed never goes back: a late delivered, a late dead_lettered */
    ap(tl, RQ_SEV_REPLIED, "p", "u", 3000, 0);
    ap(tl, RQ_SEV_DELIVERED, "p", "u", 2000, 1);
    ap(tl, RQ_SEV_DEAD_LETTERED, "p", "u", 4000, 1);
    ap(tl, RQ_SEV_ACCEPTED, "p", "u", 1000, 0);
    cr_expect_eq(rq_timeline_status(tl, "p"), RQ_TL_PROCESSED);

    /* dead_lettered is final, except that a later attempt makes it processing again */
    ap(tl, RQ_SEV_DELIVERED, "d", "u", 1000, 1);
    ap(tl, RQ_SEV_RETRIED, "d", "u", 1100, 1);
    ap(tl, RQ_SEV_DELIVERED, "d", "u", 1200, 2);
    ap(tl, RQ_SEV_DEAD_LETTERED, "d", "u", 1300, 2);
    cr_expect_eq(rq_timeline_status(tl, "d"), RQ_TL_FAILED);
    ap(tl, RQ_SEV_RETRIED, "d", "u", 1250, 2); /* same attempt, arriving late: still failed */
    cr_expect_eq(rq_timeline_status(tl, "d"), RQ_TL_FAILED);
    ap(tl, RQ_SEV_DELIVERED, "d", "u", 9000, 3); /* moved back from the DLQ */
    cr_expect_eq(rq_timeline_status(tl, "d"), RQ_TL_PROCESSING);
    ap(tl, RQ_SEV_DEAD_LETTERED, "d", "u", 9100, 3);
    cr_expect_eq(rq_timeline_status(tl, "d"), RQ_TL_FAILED);
    ap(tl, RQ_SEV_DELIVERED, "d", "u", 9200, 4);
    ap(tl, RQ_SEV_REPLIED, "d", "u", 9300, 0);
    cr_expect_eq(rq_timeline_status(tl, "d"), RQ_TL_PROCESSED);
    rq_timeline_free(tl);
}

Test(timeline, last_error_and_bytes_reply)
{
    rq_timeline_t *tl = rq_timeline_new(4, 0, DAY_MS);
    rq_status_event_t e1 = mk(RQ_SEV_RETRIED, "m", "u", 2000, 1);
    rq_status_event_t e2 = mk(RQ_SEV_DEAD_LETTERED, "m", "u", 3000, 2);
    rq_status_event_t r = mk(RQ_SEV_REPLIED, "b", "u", 1, 0);
    json_t *o;

    e1.error = "exit 1";
    e2.error = "max retries";
    cr_expect_eq(rq_timeline_apply(tl, &e2), 1);
    cr_expect_eq(rq_timeline_apply(tl, &e1), 1); /* older: not the last error */
    o = rq_timeline_get(tl, "m");
    cr_expect_str_eq(str_of(o, "error"), "max retries");
    cr_expect_str_eq(str_of(json_array_get(json_object_get(o, "timeline"), 0), "error"), "exit 1");
    json_decref(o);

    /* a local error over RQ_SEV_TEXT_MAX is cut on a UTF-8 boundary */
    char big[RQ_SEV_TEXT_MAX + 8];
    memset(big, 'e', sizeof(big));
    memcpy(big + RQ_SEV_TEXT_MAX - 1, "\xc3\xa9", 2);
    big[sizeof(big) - 1] = '\0';
    e1 = mk(RQ_SEV_RETRIED, "m", "u", 4000, 3);
    e1.error = big;
    cr_expect_eq(rq_timeline_apply(tl, &e1), 1);
    o = rq_timeline_get(tl, "m");
    cr_assert_not_null(str_of(o, "error"));
    cr_expect_eq(strlen(str_of(o, "error")), RQ_SEV_TEXT_MAX - 1u);
    json_decref(o);

    r.reply = "\xff\x00z";
    r.reply_len = 3;
    r.truncated = 1;
    cr_expect_eq(rq_timeline_apply(tl, &r), 1);
    o = rq_timeline_get(tl, "b");
    cr_expect_null(json_object_get(o, "reply"));
    cr_expect_str_eq(str_of(o, "reply_b64"), "/wB6");
    cr_expect(json_is_true(json_object_get(o, "reply_truncated")));
    json_t *it = json_array_get(json_object_get(o, "timeline"), 0);
    cr_expect_str_eq(str_of(it, "reply_b64"), "/wB6");
    cr_expect(json_is_true(json_object_get(it, "truncated")));
    json_decref(o);
    rq_timeline_free(tl);
}

Test(timeline, evicts_least_recently_created)
{
    rq_timeline_t *tl = rq_timeline_new(3, 0, DAY_MS);
    char id[16];

    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        cr_assert_eq(ap(tl, RQ_SEV_CONFIRMED, id, "u", i + 1, 0), 1);
        cr_expect_leq(rq_timeline_len(tl), 3);
        if (i > 7)
            ap(tl, RQ_SEV_DELIVERED, "m7", NULL, 100 + i, i); /* updates do not refresh m7 */
    }
    cr_expect_eq(rq_timeline_status(tl, "m6"), RQ_TL_UNKNOWN);
    for (int i = 7; i < 10; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        cr_expect_neq(rq_timeline_status(tl, id), RQ_TL_UNKNOWN, "%s evicted too early", id);
    }
    /* a restarted entry (id reused) counts as created now */
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m7", "v", 1000, 0), 1);
    ap(tl, RQ_SEV_ACCEPTED, "x", "u", 1, 0);
    cr_expect_eq(rq_timeline_status(tl, "m8"), RQ_TL_UNKNOWN);
    cr_expect_eq(rq_timeline_status(tl, "m7"), RQ_TL_QUEUED);
    rq_timeline_free(tl);
}

Test(timeline, capacity_zero_keeps_nothing)
{
    rq_timeline_t *tl = rq_timeline_new(0, 0, DAY_MS);

    cr_assert_not_null(tl);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "a", "u", 1, 0), 0);
    cr_expect_null(rq_timeline_get(tl, "a"));
    cr_expect_eq(rq_timeline_len(tl), 0);
    rq_timeline_free(tl);
    cr_expect_null(rq_timeline_new(4, 4, 0), "ttl must be > 0");
}

Test(timeline, events_per_message_bounded)
{
    rq_timeline_t *tl = rq_timeline_new(4, 0, DAY_MS);
    int n = 0;

    ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1000, 0);
    for (int a = 1; a <= 40; a++) {
        ap(tl, RQ_SEV_DELIVERED, "m", "u", 1000 + 10 * a, a);
        ap(tl, RQ_SEV_RETRIED, "m", "u", 1000 + 10 * a + 5, a);
    }
    n = 1 + 80;
    json_t *o = rq_timeline_get(tl, "m"), *a = json_object_get(o, "timeline");
    cr_expect_eq(json_array_size(a), RQ_TIMELINE_EVENTS_MAX);
    cr_expect_eq(json_integer_value(json_object_get(o, "events_dropped")),
                 n - RQ_TIMELINE_EVENTS_MAX);
    cr_expect_str_eq(str_of(json_array_get(a, 0), "event"), "accepted", "the first is kept");
    cr_expect_eq(json_integer_value(json_object_get(json_array_get(a, 31), "attempt")), 40);
    cr_expect_eq(json_integer_value(json_object_get(o, "attempts")), 40);
    json_decref(o);
    /* replaying the whole stream again drops nothing more, holds the same */
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1000, 0), 0);
    for (int i = 1; i <= 40; i++) {
        cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 1000 + 10 * i, i), 0);
        cr_expect_eq(ap(tl, RQ_SEV_RETRIED, "m", "u", 1000 + 10 * i + 5, i), 0);
    }
    o = rq_timeline_get(tl, "m");
    cr_expect_eq(json_integer_value(json_object_get(o, "events_dropped")),
                 n - RQ_TIMELINE_EVENTS_MAX);
    json_decref(o);
    /* an event older than the first becomes the first; the old first is dropped */
    cr_expect_eq(ap(tl, RQ_SEV_CONFIRMED, "m", "u", 999, 0), 1);
    o = rq_timeline_get(tl, "m");
    a = json_object_get(o, "timeline");
    cr_expect_eq(json_array_size(a), RQ_TIMELINE_EVENTS_MAX);
    cr_expect_str_eq(str_of(json_array_get(a, 0), "event"), "confirmed");
    cr_expect_str_neq(str_of(json_array_get(a, 1), "event"), "accepted");
    json_decref(o);
    /* a replied event that sorts among the dropped still makes it processed */
    cr_expect_eq(ap(tl, RQ_SEV_REPLIED, "m", "u", 1001, 0), 1);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_PROCESSED);
    rq_timeline_free(tl);
}

Test(timeline, apply_refuses_invalid)
{
    rq_timeline_t *tl = rq_timeline_new(4, 4, DAY_MS);
    char longid[RQ_SEV_ID_MAX + 2];
    rq_status_event_t ev;

    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = '\0';
    cr_expect_eq(ap(tl, RQ_SEV_NONE, "m", "u", 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_COUNT, "m", "u", 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, NULL, "u", 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "", "u", 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, longid, "u", 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", longid, 1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_ACCEPTED, "m", "u", -1, 0), -1);
    cr_expect_eq(ap(tl, RQ_SEV_DELIVERED, "m", "u", 1, -1), -1);
    ev = mk(RQ_SEV_REPLIED, "m", "u", 1, 0);
    ev.reply_len = 3;
    cr_expect_eq(rq_timeline_apply(tl, &ev), -1);
    /* sources and queue names are interned for the timeline's life: bounded like an id */
    ev = mk(RQ_SEV_ACCEPTED, "m", "u", 1, 0);
    ev.src = longid;
    cr_expect_eq(rq_timeline_apply(tl, &ev), -1);
    ev = mk(RQ_SEV_ACCEPTED, "m", "u", 1, 0);
    ev.queue = longid;
    cr_expect_eq(rq_timeline_apply(tl, &ev), -1);
    cr_expect_eq(rq_timeline_len(tl), 0);
    rq_timeline_free(tl);
}

/* ---- keys ---- */

static int confirm_key(rq_timeline_t *tl, const char *key, const char *id, int64_t ts)
{
    rq_status_event_t ev = mk(RQ_SEV_CONFIRMED, id, "u", ts, 0);

    ev.key = key;
    return rq_timeline_apply(tl, &ev);
}

Test(timeline, keys_find_ttl_and_first_wins)
{
    rq_timeline_t *tl = rq_timeline_new(8, 8, 60000);
    int64_t now = rq_wall_ms();
    char id[RQ_SEV_ID_MAX + 1];

    cr_expect_eq(rq_timeline_key_find(tl, "k", id, sizeof(id)), 0);
    cr_expect_eq(confirm_key(tl, "k", "m1", now), 1);
    cr_expect_eq(rq_timeline_key_find(tl, "k", id, sizeof(id)), 1);
    cr_expect_str_eq(id, "m1");
    /* a later message with the same key does not take it; an earlier one does */
    confirm_key(tl, "k", "m2", now + 5);
    cr_expect_eq(rq_timeline_key_find(tl, "k", id, sizeof(id)), 1);
    cr_expect_str_eq(id, "m1");
    confirm_key(tl, "k", "m0", now - 5);
    cr_expect_eq(rq_timeline_key_find(tl, "k", id, sizeof(id)), 1);
    cr_expect_str_eq(id, "m0");
    cr_expect_eq(rq_timeline_keys_len(tl), 1);
    /* only a confirmed event records a key */
    rq_status_event_t acc = mk(RQ_SEV_ACCEPTED, "m9", "u", now, 0);
    acc.key = "k9";
    rq_timeline_apply(tl, &acc);
    cr_expect_eq(rq_timeline_key_find(tl, "k9", id, sizeof(id)), 0);
    /* expired: a key whose confirmed event is older than the TTL is not found */
    cr_expect_eq(confirm_key(tl, "old", "m3", now - 60001), 1); /* the entry, not the key */
    cr_expect_eq(rq_timeline_key_find(tl, "old", id, sizeof(id)), 0);
    cr_expect_eq(confirm_key(tl, "soon", "m4", now - 60000 + 300), 1);
    cr_expect_eq(rq_timeline_key_find(tl, "soon", id, sizeof(id)), 1);
    usleep(400 * 1000);
    cr_expect_eq(rq_timeline_key_find(tl, "soon", id, sizeof(id)), 0, "expired after its TTL");
    cr_expect_eq(rq_timeline_keys_len(tl), 1);
    rq_timeline_free(tl);
}

Test(timeline, keys_bounded_oldest_evicted)
{
    rq_timeline_t *tl = rq_timeline_new(2, 3, DAY_MS);
    int64_t now = rq_wall_ms();
    char id[64], key[16], mid[16];

    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(mid, sizeof(mid), "m%d", i);
        cr_assert_eq(confirm_key(tl, key, mid, now + i), 1);
        cr_expect_leq(rq_timeline_keys_len(tl), 3);
    }
    cr_expect_eq(rq_timeline_key_find(tl, "k6", id, sizeof(id)), 0);
    for (int i = 7; i < 10; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        cr_expect_eq(rq_timeline_key_find(tl, key, id, sizeof(id)), 1, "%s evicted", key);
    }
    /* keys outlive their entries (capacity 2) */
    cr_expect_eq(rq_timeline_status(tl, "m7"), RQ_TL_UNKNOWN);
    rq_timeline_free(tl);

    tl = rq_timeline_new(4, 0, DAY_MS); /* keys_capacity 0 keeps none */
    cr_expect_eq(confirm_key(tl, "k", "m", now), 1);
    cr_expect_eq(rq_timeline_key_find(tl, "k", id, sizeof(id)), 0);
    cr_expect_eq(rq_timeline_keys_len(tl), 0);
    rq_timeline_free(tl);
}

/* ---- waiters ---- */

typedef struct wake_rec {
    atomic_int calls, timed_out;
    atomic_llong at_ms;
} wake_rec_t;

static void on_wake(void *arg, int timed_out)
{
    wake_rec_t *r = arg;

    atomic_fetch_add(&r->calls, 1);
    if (timed_out)
        atomic_fetch_add(&r->timed_out, 1);
    atomic_store(&r->at_ms, rq_mono_ms());
}

static void wait_calls(wake_rec_t *r, int n, int ms)
{
    for (int i = 0; i < ms && atomic_load(&r->calls) < n; i++)
        usleep(1000);
}

Test(timeline, waiter_woken_by_final_once)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t r = {0}, other = {0};
    int64_t far = rq_mono_ms() + 60000;

    ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1, 0);
    cr_expect_eq(rq_timeline_wait(tl, "m", far, on_wake, &r), 0);
    cr_expect_eq(rq_timeline_wait(tl, "m", far, on_wake, &r), 0);
    cr_expect_eq(rq_timeline_wait(tl, "x", far, on_wake, &other), 0);
    ap(tl, RQ_SEV_DELIVERED, "m", "u", 2, 1); /* not final */
    cr_expect_eq(atomic_load(&r.calls), 0);
    ap(tl, RQ_SEV_REPLIED, "m", "u", 3, 0);
    /* woken on the applying thread, before apply returns */
    cr_expect_eq(atomic_load(&r.calls), 2);
    cr_expect_eq(atomic_load(&r.timed_out), 0);
    ap(tl, RQ_SEV_DEAD_LETTERED, "m", "u", 4, 1);
    cr_expect_eq(atomic_load(&r.calls), 2, "once each");
    /* already final: 1, no waiter */
    cr_expect_eq(rq_timeline_wait(tl, "m", far, on_wake, &r), 1);
    cr_expect_eq(atomic_load(&other.calls), 0);
    rq_timeline_free(tl); /* wakes "x" (timed out) */
    cr_expect_eq(atomic_load(&other.calls), 1);
    cr_expect_eq(atomic_load(&other.timed_out), 1);
    cr_expect_eq(atomic_load(&r.calls), 2);
}

Test(timeline, waiter_on_unknown_id_and_failed)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t r = {0};

    cr_expect_eq(rq_timeline_wait(tl, "later", rq_mono_ms() + 60000, on_wake, &r), 0);
    ap(tl, RQ_SEV_DELIVERED, "later", "u", 1, 1);
    cr_expect_eq(atomic_load(&r.calls), 0);
    ap(tl, RQ_SEV_DEAD_LETTERED, "later", "u", 2, 1);
    cr_expect_eq(atomic_load(&r.calls), 1);
    cr_expect_eq(atomic_load(&r.timed_out), 0);
    cr_expect_eq(rq_timeline_wait(tl, "later", rq_mono_ms() + 60000, on_wake, &r), 1);
    rq_timeline_free(tl);
    cr_expect_eq(atomic_load(&r.calls), 1);
}

Test(timeline, waiters_fire_at_their_deadline_in_order)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t a = {0}, b = {0}, c = {0};
    int64_t t0 = rq_mono_ms();

    cr_expect_eq(rq_timeline_wait(tl, "m", t0 + 300, on_wake, &c), 0);
    cr_expect_eq(rq_timeline_wait(tl, "m", t0 + 200, on_wake, &b), 0);
    cr_expect_eq(rq_timeline_wait(tl, "n", t0 + 100, on_wake, &a), 0); /* an earlier one later */
    wait_calls(&c, 1, 3000);
    cr_expect_eq(atomic_load(&a.calls), 1);
    cr_expect_eq(atomic_load(&b.calls), 1);
    cr_expect_eq(atomic_load(&c.calls), 1);
    cr_expect_eq(atomic_load(&c.timed_out), 1);
    cr_expect_geq(atomic_load(&a.at_ms), t0 + 100);
    cr_expect_geq(atomic_load(&b.at_ms), t0 + 200);
    cr_expect_geq(atomic_load(&c.at_ms), t0 + 300);
    cr_expect_lt(atomic_load(&a.at_ms), t0 + 200, "a fired late: %lld",
                 (long long)(atomic_load(&a.at_ms) - t0));
    cr_expect_leq(atomic_load(&a.at_ms), atomic_load(&b.at_ms));
    cr_expect_leq(atomic_load(&b.at_ms), atomic_load(&c.at_ms));
    /* nothing is left to fire: a final event now wakes nobody */
    ap(tl, RQ_SEV_REPLIED, "m", "u", 1, 0);
    usleep(50 * 1000);
    cr_expect_eq(atomic_load(&c.calls), 1);
    cr_expect_eq(atomic_load(&b.calls), 1);
    rq_timeline_free(tl);
    cr_expect_eq(atomic_load(&a.calls), 1);
}

Test(timeline, waiter_deadline_past_fires_soon)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t r = {0};

    cr_expect_eq(rq_timeline_wait(tl, "m", rq_mono_ms() - 5, on_wake, &r), 0);
    wait_calls(&r, 1, 2000);
    cr_expect_eq(atomic_load(&r.calls), 1);
    cr_expect_eq(atomic_load(&r.timed_out), 1);
    rq_timeline_free(tl);
    cr_expect_eq(atomic_load(&r.calls), 1);
}

Test(timeline, waiters_capped_and_all_woken_by_free, .timeout = 60)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t r = {0}, fin = {0};
    int64_t t0 = rq_mono_ms();
    char id[32];

    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof(id), "m%d", i % 1000);
        /* deadlines spread, none reached during the test */
        cr_assert_eq(rq_timeline_wait(tl, id, t0 + 600000 + (i * 7919) % 100000, on_wake, &r), 0,
                     "waiter %d", i);
    }
    cr_expect_eq(rq_timeline_wait(tl, "m1", t0 + 600000, on_wake, &r), -1, "over 100000");
    /* a final wake frees room: m5's 100 waiters go */
    ap(tl, RQ_SEV_REPLIED, "m5", "u", 1, 0);
    cr_expect_eq(atomic_load(&r.calls), 100);
    cr_expect_eq(atomic_load(&r.timed_out), 0);
    cr_expect_eq(rq_timeline_wait(tl, "m1", t0 + 600000, on_wake, &fin), 0);
    rq_timeline_free(tl);
    cr_expect_eq(atomic_load(&r.calls), 100000);
    cr_expect_eq(atomic_load(&r.timed_out), 100000 - 100);
    cr_expect_eq(atomic_load(&fin.calls), 1);
}

/* A callback that takes the timeline's mutex (through rq_timeline_len): it would deadlock if
 * called with the mutex held. The contract forbids it to callers; here it proves the point. */
static rq_timeline_t *probe_tl;
static atomic_int probe_calls;

static void on_wake_probe(void *arg, int timed_out)
{
    (void)arg;
    (void)timed_out;
    (void)rq_timeline_len(probe_tl);
    atomic_fetch_add(&probe_calls, 1);
}

Test(timeline, callbacks_run_without_the_mutex, .timeout = 10)
{
    probe_tl = rq_timeline_new(8, 0, DAY_MS);
    cr_expect_eq(rq_timeline_wait(probe_tl, "m", rq_mono_ms() + 60000, on_wake_probe, NULL), 0);
    cr_expect_eq(rq_timeline_wait(probe_tl, "n", rq_mono_ms() + 20, on_wake_probe, NULL), 0);
    ap(probe_tl, RQ_SEV_REPLIED, "m", "u", 1, 0); /* on this thread */
    for (int i = 0; i < 2000 && atomic_load(&probe_calls) < 2; i++)
        usleep(1000); /* "n" on the timer thread */
    cr_expect_eq(atomic_load(&probe_calls), 2);
    rq_timeline_free(probe_tl);
}

Test(timeline, wake_all_wakes_every_waiter_and_closes)
{
    rq_timeline_t *tl = rq_timeline_new(8, 0, DAY_MS);
    wake_rec_t r = {0};
    int64_t far = rq_mono_ms() + 60000;

    ap(tl, RQ_SEV_ACCEPTED, "m", "u", 1, 0);
    for (int i = 0; i < 50; i++)
        cr_assert_eq(rq_timeline_wait(tl, i % 2 ? "m" : "unknown", far + i, on_wake, &r), 0);
    rq_timeline_wake_all(tl);
    cr_expect_eq(atomic_load(&r.calls), 50);
    cr_expect_eq(atomic_load(&r.timed_out), 50);
    /* from then on a wait returns 1 at once, and nothing more is called */
    cr_expect_eq(rq_timeline_wait(tl, "m", far, on_wake, &r), 1);
    cr_expect_eq(rq_timeline_wait(tl, "other", far, on_wake, &r), 1);
    ap(tl, RQ_SEV_REPLIED, "m", "u", 2, 0);
    cr_expect_eq(rq_timeline_status(tl, "m"), RQ_TL_PROCESSED, "events still apply");
    rq_timeline_wake_all(tl);
    rq_timeline_free(tl);
    cr_expect_eq(atomic_load(&r.calls), 50);
}

/* ---- threads ---- */

typedef struct race {
    rq_timeline_t *tl;
    int base;
    wake_rec_t *rec;
    atomic_int *registered;
} race_t;

static void *applier(void *arg)
{
    race_t *r = arg;
    char id[32];

    for (int i = 0; i < 2000; i++) {
        snprintf(id, sizeof(id), "r%d", i);
        if (rq_timeline_wait(r->tl, id, rq_mono_ms() + (i % 3 == 0 ? 1 : 60000), on_wake, r->rec) ==
            0)
            atomic_fetch_add(r->registered, 1);
        ap(r->tl, RQ_SEV_DELIVERED, id, "u", r->base + i, 1);
        ap(r->tl, RQ_SEV_REPLIED, id, "u", r->base + i + 1, 0);
    }
    return NULL;
}

Test(timeline, concurrent_apply_and_wait_each_callback_once, .timeout = 60)
{
    rq_timeline_t *tl = rq_timeline_new(500, 0, DAY_MS);
    wake_rec_t rec = {0};
    race_t rs[3];
    pthread_t th[3];
    atomic_int registered = 0;

    for (int t = 0; t < 3; t++) {
        rs[t] = (race_t){tl, t * 10, &rec, &registered};
        pthread_create(&th[t], NULL, applier, &rs[t]);
    }
    for (int t = 0; t < 3; t++)
        pthread_join(th[t], NULL);
    rq_timeline_free(tl);
    /* every registered waiter's callback ran exactly once (at its deadline, on the final
     * event, or in free) */
    cr_expect_eq(atomic_load(&rec.calls), atomic_load(&registered));
    cr_expect_geq(atomic_load(&registered), 2000);
}

/* Sources and queue names are interned up to RQ_TIMELINE_INTERN_MAX distinct texts and copied
 * past it; uids are held in the entry up to a UUID's length and copied beyond; events beyond
 * the entry's inline ones move to an allocation. Every text reads back as applied, also after
 * an id is reused and after evictions (ASan checks that nothing is freed twice or leaked). */
Test(timeline, interned_and_inline_texts_read_back)
{
    enum { N = RQ_TIMELINE_INTERN_MAX + 300, CAP = N - 100 };
    rq_timeline_t *tl = rq_timeline_new(CAP, 0, DAY_MS);
    char id[32], src[32], queue[32], uid[128], buf[512];

    cr_assert_not_null(tl);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        snprintf(src, sizeof(src), "svc:%d", i);
        snprintf(queue, sizeof(queue), "q.%d", i % 2 ? i : 0); /* half share one queue */
        memset(uid, 'u', sizeof(uid) - 1);
        uid[i % 3 == 0 ? 100 : 36] = '\0'; /* beyond the inline room, and a UUID's length */
        rq_status_event_t ev = mk(RQ_SEV_CONFIRMED, id, uid, 1000 + i, 0);
        ev.src = src;
        ev.queue = queue;
        cr_assert_eq(rq_timeline_apply(tl, &ev), 1);
        for (int a = 1; a <= 3; a++) /* 6 events in all: past the inline 4 */
            cr_assert_eq(ap(tl, RQ_SEV_DELIVERED, id, uid, 2000 + i + a, a), 1);
        cr_assert_eq(ap(tl, RQ_SEV_RETRIED, id, uid, 3000 + i, 1), 1);
        cr_assert_eq(ap(tl, RQ_SEV_REPLIED, id, uid, 4000 + i, 0), 1);
    }
    cr_expect_eq(rq_timeline_len(tl), CAP);
    for (int i = N - CAP; i < N; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        snprintf(src, sizeof(src), "svc:%d", i);
        snprintf(queue, sizeof(queue), "q.%d", i % 2 ? i : 0);
        json_t *o = rq_timeline_get(tl, id),
               *first = json_array_get(json_object_get(o, "timeline"), 0);
        cr_assert_not_null(o, "%s", id);
        cr_expect_str_eq(str_of(first, "by"), src, "%s", id);
        cr_expect_str_eq(str_of(o, "queue"), queue, "%s", id);
        cr_expect_eq(strlen(str_of(o, "uid")), i % 3 == 0 ? 100u : 36u, "%s", id);
        json_decref(o);
        cr_expect_str_eq(events_of(tl, id, buf, sizeof(buf)),
                         "confirmed delivered1 delivered2 delivered3 retried1 replied", "%s", id);
    }
    /* an id reused by a newer message starts again with its own texts */
    rq_status_event_t ev = mk(RQ_SEV_CONFIRMED, "m500", "v", 9000, 0);
    ev.src = "svc:new";
    ev.queue = "q.new";
    cr_expect_eq(rq_timeline_apply(tl, &ev), 1);
    json_t *o = rq_timeline_get(tl, "m500");
    cr_expect_str_eq(str_of(o, "uid"), "v");
    cr_expect_str_eq(str_of(o, "queue"), "q.new");
    cr_expect_str_eq(str_of(json_array_get(json_object_get(o, "timeline"), 0), "by"), "svc:new");
    json_decref(o);
    rq_timeline_free(tl);
}
