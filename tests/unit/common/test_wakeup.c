/* Unit tests for common/wakeup.c: the fd is readable exactly while signalled, signals
 * coalesce (uv_async_send's contract), and a signal from another thread wakes a poll(). */
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "wakeup.h"

TestSuite(wakeup, .timeout = 30);

/* 1 when w's fd is readable within timeout_ms, else 0. */
static int readable(rq_wakeup_t *w, int timeout_ms)
{
    struct pollfd pf = {rq_wakeup_fd(w), POLLIN, 0};
    int n = poll(&pf, 1, timeout_ms);

    cr_assert_geq(n, 0);
    return n == 1 && (pf.revents & POLLIN) != 0;
}

Test(wakeup, new_is_not_signalled)
{
    rq_wakeup_t *w = rq_wakeup_new();

    cr_assert_not_null(w);
    cr_expect_geq(rq_wakeup_fd(w), 0);
    cr_expect_eq(readable(w, 0), 0);
    cr_expect_eq(rq_wakeup_drain(w), 0, "draining an unsignalled wake-up never blocks");
    rq_wakeup_free(w);
    rq_wakeup_free(NULL);
}

Test(wakeup, signals_coalesce_until_drained)
{
    rq_wakeup_t *w = rq_wakeup_new();

    cr_assert_not_null(w);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rq_wakeup_signal(w), 0);
    cr_expect_eq(readable(w, 0), 1);
    cr_expect_eq(readable(w, 0), 1, "polling does not clear it");
    cr_expect_eq(rq_wakeup_drain(w), 1, "three signals, one wake-up");
    cr_expect_eq(readable(w, 0), 0);
    cr_expect_eq(rq_wakeup_drain(w), 0);
    cr_assert_eq(rq_wakeup_signal(w), 0);
    cr_expect_eq(readable(w, 0), 1, "signalled again after a drain");
    cr_expect_eq(rq_wakeup_drain(w), 1);
    rq_wakeup_free(w);
}

#define SIGNALLERS 4
#define PER_SIGNALLER 1000

typedef struct shared {
    rq_wakeup_t *w;
    atomic_int queued; /* the "queue": items handed over, taken by the loop */
} shared_t;

static void *signaller(void *arg)
{
    shared_t *s = arg;

    for (int i = 0; i < PER_SIGNALLER; i++) {
        atomic_fetch_add(&s->queued, 1); /* hand over first, then signal */
        cr_assert_eq(rq_wakeup_signal(s->w), 0);
    }
    return NULL;
}

/* The pattern of the publisher and the tailer: poll, drain, take everything queued. Every
 * item handed over is seen, with no more wake-ups than signals. */
Test(wakeup, other_threads_wake_a_polling_loop)
{
    shared_t s = {.w = rq_wakeup_new()};
    pthread_t th[SIGNALLERS];
    int taken = 0, wakeups = 0;

    cr_assert_not_null(s.w);
    atomic_init(&s.queued, 0);
    for (int i = 0; i < SIGNALLERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, signaller, &s), 0);
    while (taken < SIGNALLERS * PER_SIGNALLER) {
        cr_assert_eq(readable(s.w, 10000), 1, "a signal was lost (%d of %d taken)", taken,
                     SIGNALLERS * PER_SIGNALLER);
        cr_assert_geq(rq_wakeup_drain(s.w), 0);
        wakeups++;
        taken += atomic_exchange(&s.queued, 0);
    }
    for (int i = 0; i < SIGNALLERS; i++)
        pthread_join(th[i], NULL);
    cr_expect_eq(taken, SIGNALLERS * PER_SIGNALLER);
    cr_expect_leq(wakeups, SIGNALLERS * PER_SIGNALLER);
    rq_wakeup_free(s.w);
}

static void *late_signal(void *arg)
{
    struct timespec ts = {0, 50 * 1000000};

    nanosleep(&ts, NULL);
    rq_wakeup_signal(arg);
    return NULL;
}

Test(wakeup, signal_wakes_a_blocked_poll)
{
    rq_wakeup_t *w = rq_wakeup_new();
    pthread_t th;

    cr_assert_not_null(w);
    cr_assert_eq(pthread_create(&th, NULL, late_signal, w), 0);
    cr_expect_eq(readable(w, 10000), 1);
    pthread_join(th, NULL);
    cr_expect_eq(rq_wakeup_drain(w), 1);
    rq_wakeup_free(w);
}

/* A loop that holds while it works: signals meanwhile do not make the fd readable (no write,
 * no wake-up to find nothing by); rq_wakeup_arm() makes the next signal write again. */
Test(wakeup, a_holding_loop_is_not_signalled_until_it_arms)
{
    rq_wakeup_t *w = rq_wakeup_new();

    cr_assert_not_null(w);
    cr_assert_eq(rq_wakeup_signal(w), 0);
    cr_assert_eq(rq_wakeup_drain(w), 1);
    rq_wakeup_hold(w);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rq_wakeup_signal(w), 0);
    cr_expect_eq(readable(w, 0), 0, "signals while the loop holds write nothing");
    rq_wakeup_arm(w);
    cr_expect_eq(readable(w, 0), 0, "arming is not a signal");
    cr_assert_eq(rq_wakeup_signal(w), 0);
    cr_expect_eq(readable(w, 0), 1, "armed: the next signal wakes the loop");
    cr_expect_eq(rq_wakeup_drain(w), 1);
    cr_expect_eq(rq_wakeup_drain(w), 0);
    rq_wakeup_free(w);
}

/* The publisher's pattern: drain, hold, take; arm, look again, and poll only when that look
 * found nothing. No item is ever left waiting for a signal that was not written: each poll
 * that sleeps out its whole timeout would be one (the test counts them). */
Test(wakeup, hold_and_arm_lose_no_hand_over)
{
    shared_t s = {.w = rq_wakeup_new()};
    pthread_t th[SIGNALLERS];
    int taken = 0, stalls = 0;

    cr_assert_not_null(s.w);
    atomic_init(&s.queued, 0);
    for (int i = 0; i < SIGNALLERS; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, signaller, &s), 0);
    while (taken < SIGNALLERS * PER_SIGNALLER && stalls < 3) {
        cr_assert_geq(rq_wakeup_drain(s.w), 0);
        rq_wakeup_hold(s.w);
        taken += atomic_exchange(&s.queued, 0);
        rq_wakeup_arm(s.w);
        int more = atomic_exchange(&s.queued, 0);
        taken += more;
        if (more == 0 && taken < SIGNALLERS * PER_SIGNALLER && !readable(s.w, 2000))
            stalls++;
    }
    for (int i = 0; i < SIGNALLERS; i++)
        pthread_join(th[i], NULL);
    cr_expect_eq(stalls, 0, "a poll slept out its timeout with work handed over");
    cr_expect_eq(taken, SIGNALLERS * PER_SIGNALLER);
    rq_wakeup_free(s.w);
}
