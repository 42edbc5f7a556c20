/* test_ackwin.c - merging acks of deliveries settled in any order: every plan, replayed on a
 * model of the broker's channel (a multiple ack settles every outstanding tag up to the one
 * named; naming a tag not outstanding is the channel error "unknown delivery tag"), settles
 * exactly the tags acked, never another delivery; merging happens when it can. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ackwin.h"

#define MAXT 20000

typedef struct broker {
    unsigned char out[MAXT + 2]; /* 1: delivered, not settled */
    uint64_t next;               /* the next delivery tag */
    size_t frames;
} broker_t;

/* One frame: basic.ack (or a reject) of `tag`, with `multiple`. */
typedef struct frame {
    uint64_t tag;
    int multiple;
} frame_t;

static uint64_t deliver(broker_t *b)
{
    b->out[b->next] = 1;
    return b->next++;
}

/* Replays a frame; fails the test on an unknown tag. Returns how many tags it settled. */
static size_t replay(broker_t *b, frame_t f)
{
    size_t n = 0;

    cr_assert(f.tag >= 1 && f.tag < b->next && b->out[f.tag] == 1,
              "a frame names tag %llu, not outstanding", (unsigned long long)f.tag);
    b->frames++;
    if (!f.multiple) {
        b->out[f.tag] = 0;
        return 1;
    }
    for (uint64_t t = 1; t <= f.tag; t++)
        if (b->out[t]) {
            b->out[t] = 0;
            n++;
        }
    return n;
}

/* Acks tags[0..n) through the window and the model: exactly those settled. */
static void ack(rq_ackwin_t *w, broker_t *b, const uint64_t *tags, size_t n)
{
    uint64_t *t = malloc(n * sizeof(*t));
    size_t k, settled = 0;

    memcpy(t, tags, n * sizeof(*t));
    k = rq_ackwin_plan(w, t, n);
    cr_assert_leq(k, n);
    if (k > 0) /* the frames the plan asks for, in its order */
        settled += replay(b, (frame_t){t[k - 1], k > 1});
    for (size_t i = k; i < n; i++)
        settled += replay(b, (frame_t){t[i], 0});
    cr_assert_eq(settled, n, "the plan settled %zu tags for %zu acks", settled, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(b->out[tags[i]], 0, "tag %llu acked but still out",
                     (unsigned long long)tags[i]);
    free(t);
}

/* A reject's frame (recorded, or beyond the window: then it only stops the merging). */
static void reject(rq_ackwin_t *w, broker_t *b, uint64_t tag)
{
    (void)rq_ackwin_settle(w, tag);
    replay(b, (frame_t){tag, 0});
}

Test(ackwin, in_order_batches_are_one_frame_each)
{
    rq_ackwin_t *w = rq_ackwin_new(1024);
    broker_t b = {.next = 1};
    uint64_t tags[100];

    for (int round = 0; round < 5; round++) {
        size_t f0 = b.frames;
        for (int i = 0; i < 100; i++)
            tags[i] = deliver(&b);
        ack(w, &b, tags, 100);
        cr_assert_eq(b.frames - f0, 1, "round %d: %zu frames", round, b.frames - f0);
    }
    cr_assert_eq(rq_ackwin_low(w), 501);
    rq_ackwin_free(w);
}

Test(ackwin, a_lower_lease_still_out_keeps_frames_single)
{
    rq_ackwin_t *w = rq_ackwin_new(1024);
    broker_t b = {.next = 1};
    uint64_t first[10], second[10];

    for (int i = 0; i < 10; i++)
        first[i] = deliver(&b);
    for (int i = 0; i < 10; i++)
        second[i] = deliver(&b);
    ack(w, &b, second, 10); /* tags 1..10 are still leased: no multiple may reach them */
    cr_assert_eq(b.frames, 10);
    for (int i = 0; i < 10; i++)
        cr_assert_eq(b.out[first[i]], 1);
    ack(w, &b, first, 10);
    cr_assert_eq(b.frames, 11, "the first batch, now the lowest: one multiple frame");
    cr_assert_eq(rq_ackwin_low(w), 21);
    rq_ackwin_free(w);
}

Test(ackwin, rejects_between_acks)
{
    rq_ackwin_t *w = rq_ackwin_new(64);
    broker_t b = {.next = 1};
    uint64_t t[6];

    for (int i = 0; i < 6; i++)
        t[i] = deliver(&b);
    reject(w, &b, t[2]); /* tag 3 requeued */
    uint64_t a[] = {t[0], t[1], t[3], t[4]};
    ack(w, &b, a, 4);
    cr_assert_eq(b.frames, 2, "the reject, then one multiple up to tag 5");
    cr_assert_eq(b.out[t[5]], 1, "tag 6 was not acked");
    rq_ackwin_free(w);
}

Test(ackwin, beyond_the_window_single_frames_then_skip)
{
    rq_ackwin_t *w = rq_ackwin_new(64);
    broker_t b = {.next = 1};
    uint64_t held = deliver(&b), t[200];

    for (int i = 0; i < 200; i++)
        t[i] = deliver(&b);
    ack(w, &b, t, 200); /* tag 1 is held: frames single; tags past 64 are not recorded */
    cr_assert_eq(b.frames, 200);
    ack(w, &b, &held, 1);
    cr_assert_eq(rq_ackwin_low(w), 65, "low stops at the first tag it could not record");
    rq_ackwin_skip(w, b.next); /* nothing outstanding: merging again */
    for (int i = 0; i < 50; i++)
        t[i] = deliver(&b);
    size_t f0 = b.frames;
    ack(w, &b, t, 50);
    cr_assert_eq(b.frames - f0, 1);
    rq_ackwin_free(w);
}

Test(ackwin, reset_for_a_new_channel)
{
    rq_ackwin_t *w = rq_ackwin_new(64);
    broker_t b = {.next = 1};
    uint64_t t[5];

    for (int i = 0; i < 5; i++)
        t[i] = deliver(&b);
    ack(w, &b, t, 5);
    rq_ackwin_reset(w);
    cr_assert_eq(rq_ackwin_low(w), 1);
    broker_t b2 = {.next = 1};
    for (int i = 0; i < 5; i++)
        t[i] = deliver(&b2);
    ack(w, &b2, t, 5);
    cr_assert_eq(b2.frames, 1);
    rq_ackwin_free(w);
}

/* Many clients: deliveries leased in batches, acked (or rejected) in random order, in
 * batches of random sizes, with a small window so that it overflows too. */
Test(ackwin, random_against_the_model)
{
    for (unsigned seed = 1; seed <= 40; seed++) {
        rq_ackwin_t *w = rq_ackwin_new(seed % 2 ? 256 : 4096);
        broker_t b = {.next = 1};
        uint64_t *live = malloc(MAXT * sizeof(*live)), batch[64];
        size_t nlive = 0, merged = 0;

        srand(seed);
        while (b.next < MAXT - 64 || nlive > 0) {
            if (b.next < MAXT - 64 && (nlive < 200 || rand() % 3 == 0)) {
                int k = 1 + rand() % 40;
                for (int i = 0; i < k; i++)
                    live[nlive++] = deliver(&b);
                continue;
            }
            size_t k = 1 + (size_t)rand() % (nlive < 64 ? nlive : 64), n = 0;
            int oldest = rand() % 2; /* FIFO-ish clients or random ones */
            for (size_t i = 0; i < k; i++) {
                size_t j = oldest ? 0 : (size_t)rand() % nlive;
                uint64_t tag = live[j];
                memmove(&live[j], &live[j + 1], (nlive - j - 1) * sizeof(*live));
                nlive--;
                if (rand() % 10 == 0)
                    reject(w, &b, tag);
                else
                    batch[n++] = tag;
            }
            size_t f0 = b.frames;
            if (n > 0)
                ack(w, &b, batch, n);
            merged += n - (b.frames - f0);
            if (nlive == 0)
                rq_ackwin_skip(w, b.next);
        }
        for (uint64_t t = 1; t < b.next; t++)
            cr_assert_eq(b.out[t], 0, "seed %u: tag %llu never settled", seed,
                         (unsigned long long)t);
        cr_assert_gt(merged, 0, "seed %u: nothing merged", seed);
        free(live);
        rq_ackwin_free(w);
    }
}
