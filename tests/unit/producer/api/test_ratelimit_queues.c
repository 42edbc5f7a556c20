/* test_ratelimit_queues.c - the per-queue rate limit's pieces: bucket keys of queue names
 * (long names never share a bucket through a common prefix), the bounded label set, and one
 * shared bucket per queue whatever the number of made-up names. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#define S 1000000000LL

Test(ratelimit_queues, name_keys_fit_and_never_collide)
{
    char a[RQ_CLIENT_KEY_MAX], b[RQ_CLIENT_KEY_MAX], n1[201], n2[201];

    rq_ratelimit_name_key("q:", "orders.eu", a, sizeof(a));
    cr_expect_str_eq(a, "q:orders.eu");
    memset(n1, 'x', 200);
    n1[200] = '\0';
    memcpy(n2, n1, sizeof(n1));
    n2[199] = 'y'; /* differs only in the last byte, beyond what a cut key would keep */
    rq_ratelimit_name_key("q:", n1, a, sizeof(a));
    rq_ratelimit_name_key("q:", n2, b, sizeof(b));
    cr_expect_lt(strlen(a), RQ_CLIENT_KEY_MAX);
    cr_expect_str_neq(a, b);
    cr_expect(strncmp(a, "q:#", 3) == 0, "%s", a);

    /* and the limiter keeps them apart */
    rq_ratelimit_t *rl = rq_ratelimit_new(1, 1, 100);
    unsigned ra;
    cr_expect_eq(rq_ratelimit_take(rl, a, 1 * S, &ra), 0);
    cr_expect_eq(rq_ratelimit_take(rl, b, 1 * S, &ra), 0, "a bucket of its own");
    cr_expect_eq(rq_ratelimit_take(rl, a, 1 * S, &ra), 1);
    cr_expect_eq(ra, 1);
    rq_ratelimit_free(rl);
}

Test(ratelimit_queues, label_set_is_bounded)
{
    rq_labelset_t *ls = rq_labelset_new(3);
    char name[32];

    cr_assert_not_null(ls);
    cr_expect_str_eq(rq_labelset_pick(ls, "a", "_other"), "a");
    cr_expect_str_eq(rq_labelset_pick(ls, "b", "_other"), "b");
    cr_expect_str_eq(rq_labelset_pick(ls, "a", "_other"), "a", "seen: no new slot");
    cr_expect_str_eq(rq_labelset_pick(ls, "c", "_other"), "c");
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof(name), "made-up-%d", i);
        cr_expect_str_eq(rq_labelset_pick(ls, name, "_other"), "_other");
    }
    cr_expect_str_eq(rq_labelset_pick(ls, "b", "_other"), "b", "the admitted stay");
    rq_labelset_free(ls);
    rq_labelset_free(NULL);
    cr_expect_null(rq_labelset_new(0));
}

Test(ratelimit_queues, made_up_names_cannot_grow_the_buckets)
{
    rq_ratelimit_t *rl = rq_ratelimit_new(1, 2, 16);
    char key[RQ_CLIENT_KEY_MAX], name[40];
    unsigned ra;

    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof(name), "q%d", i);
        rq_ratelimit_name_key("q:", name, key, sizeof(key));
        rq_ratelimit_take(rl, key, 5 * S, &ra);
    }
    cr_expect_eq(rq_ratelimit_size(rl), 16);
    rq_ratelimit_free(rl);
}
