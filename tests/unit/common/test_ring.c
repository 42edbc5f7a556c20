/* Unit tests for common/ring.c. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "ring.h"

TestSuite(ring, .timeout = 30);

static void push_int(rq_ring_t *r, int v)
{
    int *slot = rq_ring_push(r);
    cr_assert_not_null(slot);
    *slot = v;
}

static int front(rq_ring_t *r)
{
    return *(int *)rq_ring_at(r, 0);
}

Test(ring, fifo_order_across_wraps_and_growth)
{
    rq_ring_t r;
    int next_in = 0, next_out = 0;

    rq_ring_init(&r, sizeof(int), 4, 0);
    cr_expect_eq(rq_ring_len(&r), 0);
    /* Push 3, pop 2, many times: head wraps around the array, and it grows from 4 while the
     * live entries straddle the end of the array. */
    for (int round = 0; round < 50; round++) {
        for (int k = 0; k < 3; k++)
            push_int(&r, next_in++);
        for (int k = 0; k < 2; k++) {
            cr_assert_eq(front(&r), next_out, "round %d", round);
            rq_ring_pop(&r);
            next_out++;
        }
        for (size_t i = 0; i < rq_ring_len(&r); i++)
            cr_assert_eq(*(int *)rq_ring_at(&r, i), next_out + (int)i);
    }
    cr_expect_eq(rq_ring_len(&r), (size_t)(next_in - next_out));
    cr_expect_geq(r.cap, rq_ring_len(&r));
    rq_ring_clear(&r);
    cr_expect_eq(rq_ring_len(&r), 0);
    cr_expect_null(r.v);
    push_int(&r, 7); /* usable again after clear */
    cr_expect_eq(front(&r), 7);
    rq_ring_clear(&r);
}

Test(ring, growth_linearizes_a_wrapped_ring)
{
    rq_ring_t r;

    rq_ring_init(&r, sizeof(int), 4, 0);
    for (int i = 0; i < 4; i++)
        push_int(&r, i);
    rq_ring_pop(&r);
    rq_ring_pop(&r);
    push_int(&r, 4);
    push_int(&r, 5); /* slots: 4 5 2 3, head 2 */
    cr_assert_eq(r.head, 2);
    push_int(&r, 6); /* grows to 8: 2 3 4 5 6 from slot 0 */
    cr_expect_eq(r.cap, 8);
    cr_expect_eq(r.head, 0);
    for (int i = 0; i < 5; i++)
        cr_expect_eq(*(int *)rq_ring_at(&r, (size_t)i), 2 + i);
    rq_ring_clear(&r);
}

Test(ring, max_cap_bounds_it_and_slots_keep_their_bytes)
{
    rq_ring_t r;
    void *p[3];

    rq_ring_init(&r, sizeof(void *), 16, 3); /* min_cap is cut to max_cap */
    cr_assert_eq(rq_ring_reserve(&r, 3), 0);
    cr_expect_eq(r.cap, 3);
    cr_expect_eq(rq_ring_reserve(&r, 4), -1);
    for (int i = 0; i < 3; i++) {
        void **slot = rq_ring_push(&r);
        cr_assert_not_null(slot);
        cr_expect_null(*slot); /* never used: zero */
        *slot = p[i] = &p[i];
    }
    cr_expect_null(rq_ring_push(&r)); /* full at max_cap */
    cr_expect_eq(rq_ring_len(&r), 3);
    rq_ring_pop(&r);
    /* The popped slot comes back with what it held: the owner reuses its memory. */
    void **again = rq_ring_push(&r);
    cr_assert_not_null(again);
    cr_expect_eq(*again, &p[0]);
    rq_ring_pop_back(&r); /* the newest goes; its slot is the next push's */
    cr_expect_eq(rq_ring_len(&r), 2);
    cr_expect_eq(*(void **)rq_ring_at(&r, 1), &p[2]);
    again = rq_ring_push(&r);
    cr_assert_not_null(again);
    cr_expect_eq(*again, &p[0]);
    rq_ring_reset(&r);
    cr_expect_eq(rq_ring_len(&r), 0);
    cr_expect_eq(r.head, 0);
    for (size_t k = 0; k < r.cap; k++)
        cr_expect_eq(*(void **)rq_ring_slot(&r, k), &p[k]);
    rq_ring_clear(&r);
}

Test(ring, reserve_overflow_is_refused)
{
    rq_ring_t r;

    rq_ring_init(&r, 1024, 0, 0);
    push_int(&r, 1);
    cr_expect_eq(rq_ring_reserve(&r, SIZE_MAX), -1);
    cr_expect_eq(rq_ring_reserve(&r, SIZE_MAX / 2), -1); /* * entry_size overflows */
    cr_expect_eq(rq_ring_len(&r), 1);
    cr_expect_eq(front(&r), 1);
    rq_ring_clear(&r);
}
