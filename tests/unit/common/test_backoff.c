/* Unit tests for rq_backoff_t (common/amqp_conn.c): the delays of every caller's settings,
 * the same as the hand-written backoffs it replaced (tailer: 20 ms..1 s, worker output
 * pause: 1 s..30 s, both without jitter; reconnects: 200 ms..2 s with jitter). */
#include <criterion/criterion.h>

#include "amqp_conn.h"

TestSuite(backoff, .timeout = 30);

static void expect_exact(rq_backoff_t *b, const int *want, int n)
{
    for (int i = 0; i < n; i++)
        cr_expect_eq(rq_backoff_next(b), want[i], "delay %d", i);
}

Test(backoff, tailer_refusals_double_from_20_to_1000_ms)
{
    static const int want[] = {20, 40, 80, 160, 320, 640, 1000, 1000, 1000};
    rq_backoff_t b;

    rq_backoff_init(&b, 20, 1000, /*jitter=*/0);
    expect_exact(&b, want, (int)(sizeof(want) / sizeof(want[0])));
    rq_backoff_reset(&b);
    expect_exact(&b, want, 3);
}

Test(backoff, output_pause_doubles_from_1_to_30_s)
{
    static const int want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    rq_backoff_t b;

    rq_backoff_init(&b, 1000, 30000, /*jitter=*/0);
    expect_exact(&b, want, (int)(sizeof(want) / sizeof(want[0])));
}

/* Each delay in the upper half of a base doubling 200, 400, ..., 2000 ms. */
static void expect_reconnect(rq_backoff_t *b)
{
    static const int base[] = {200, 400, 800, 1600, 2000, 2000, 2000};

    for (int i = 0; i < (int)(sizeof(base) / sizeof(base[0])); i++) {
        int d = rq_backoff_next(b);

        cr_expect(d >= base[i] / 2 && d <= base[i], "delay %d: %d not in [%d, %d]", i, d,
                  base[i] / 2, base[i]);
        cr_expect_eq(b->cur_ms, base[i]);
    }
}

Test(backoff, reconnect_zeroed_and_init_are_the_same)
{
    rq_backoff_t zeroed = {0}, b;

    expect_reconnect(&zeroed);
    rq_backoff_reset(&zeroed);
    cr_expect_eq(zeroed.cur_ms, 0);
    expect_reconnect(&zeroed);
    rq_backoff_init(&b, RQ_RECONNECT_MIN_MS, RQ_RECONNECT_MAX_MS, /*jitter=*/1);
    expect_reconnect(&b);
}

Test(backoff, jitter_varies_the_delays)
{
    rq_backoff_t b;
    int lo = 1 << 30, hi = 0;

    rq_backoff_init(&b, 1000, 1000, /*jitter=*/1);
    for (int i = 0; i < 200; i++) {
        int d = rq_backoff_next(&b);

        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    cr_expect(lo >= 500 && hi <= 1000 && lo < hi, "delays in [%d, %d]", lo, hi);
}
