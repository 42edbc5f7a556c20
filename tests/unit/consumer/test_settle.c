/* Unit tests for consumer/settle.c: planning acks, rejects and requeues for a
 * batch, and for a group of deliveries finished in any order while others of the channel are
 * still outstanding (issue 14). */
#include <criterion/criterion.h>

#include "settle.h"

#define A RQ_DISP_ACK
#define R RQ_DISP_REJECT
#define Q RQ_DISP_REQUEUE

typedef struct {
    const char *name;
    size_t n;
    uint64_t tags[8];
    rq_disp_t disp[8];
    uint64_t other; /* the lowest tag outstanding outside the set (0 in the table: none) */
    size_t nops;
    rq_settle_op_t ops[8];
} scase_t;

static const scase_t cases[] = {
    {"empty batch", 0, {0}, {0}, 0, 0, {{0}}},
    {"one ack", 1, {7}, {A}, 0, 1, {{A, 7, 0}}},
    {"all acked: one ack multiple", 4, {1, 2, 3, 4}, {A, A, A, A}, 0, 1, {{A, 4, 1}}},
    {"reject in the middle",
     5,
     {1, 2, 3, 4, 5},
     {A, A, R, A, A},
     0,
     3,
     {{A, 2, 1}, {R, 3, 0}, {A, 5, 1}}},
    {"last delivery rejected is never acked",
     3,
     {10, 11, 12},
     {A, A, R},
     0,
     2,
     {{A, 11, 1}, {R, 12, 0}}},
    {"first rejected", 3, {1, 2, 3}, {R, A, A}, 0, 2, {{R, 1, 0}, {A, 3, 1}}},
    {"runs of rejects use nack multiple",
     6,
     {1, 2, 3, 4, 5, 6},
     {A, R, R, A, Q, Q},
     0,
     4,
     {{A, 1, 0}, {R, 3, 1}, {A, 4, 0}, {Q, 6, 1}}},
    {"gaps in tags are fine", 3, {3, 9, 20}, {A, A, A}, 0, 1, {{A, 20, 1}}},
    {"tags not ascending: one frame each",
     3,
     {5, 4, 6},
     {A, A, A},
     0,
     3,
     {{A, 5, 0}, {A, 4, 0}, {A, 6, 0}}},
    {"duplicate tags: one frame each", 2, {5, 5}, {A, A}, 0, 2, {{A, 5, 0}, {A, 5, 0}}},
    /* issue 14: the group is what finished, the other deliveries of the channel still run */
    {"a tag outstanding outside the set is never covered by multiple",
     4,
     {1, 3, 4, 6},
     {A, A, A, A},
     2,
     4,
     {{A, 1, 0}, {A, 3, 0}, {A, 4, 0}, {A, 6, 0}}},
    {"runs below the lowest outside tag still merge",
     5,
     {1, 2, 3, 7, 8},
     {A, A, R, A, A},
     5,
     4,
     {{A, 2, 1}, {R, 3, 0}, {A, 7, 0}, {A, 8, 0}}},
    {"an outside tag above the whole set changes nothing",
     3,
     {4, 5, 6},
     {A, A, A},
     9,
     1,
     {{A, 6, 1}}},
};

Test(settle, plan_table)
{
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const scase_t *c = &cases[k];
        rq_settle_op_t ops[8];
        size_t n =
            rq_settle_plan(c->tags, c->disp, c->n, c->other ? c->other : RQ_SETTLE_NO_OTHER, ops);

        cr_expect_eq(n, c->nops, "[%s] %zu ops, expected %zu", c->name, n, c->nops);
        for (size_t i = 0; i < n && i < c->nops; i++) {
            cr_expect_eq(ops[i].disp, c->ops[i].disp, "[%s] op %zu disp", c->name, i);
            cr_expect_eq(ops[i].tag, c->ops[i].tag, "[%s] op %zu tag", c->name, i);
            cr_expect_eq(ops[i].multiple, c->ops[i].multiple, "[%s] op %zu multiple", c->name, i);
        }
    }
}

/* Simulates the broker's rule on one channel: a frame naming a tag that is not
 * outstanding is a channel error; `multiple` settles every outstanding tag <=
 * the one named. Every delivery of the batch must end settled exactly once,
 * with its own disposition. */
Test(settle, plans_are_accepted_by_the_broker_rule)
{
    for (unsigned mask = 0; mask < 3u * 3u * 3u * 3u * 3u * 3u; mask++) {
        uint64_t tags[6];
        rq_disp_t disp[6];
        int settled[6] = {0};
        rq_disp_t how[6];
        rq_settle_op_t ops[6];
        unsigned m = mask;
        size_t n;

        for (int i = 0; i < 6; i++) {
            tags[i] = (uint64_t)(i + 1);
            disp[i] = (rq_disp_t)(m % 3);
            m /= 3;
        }
        n = rq_settle_plan(tags, disp, 6, RQ_SETTLE_NO_OTHER, ops);
        for (size_t k = 0; k < n; k++) {
            int named = -1;

            for (int i = 0; i < 6; i++)
                if (tags[i] == ops[k].tag)
                    named = i;
            cr_assert(named >= 0 && !settled[named], "mask %u: op %zu names a settled tag", mask,
                      k);
            for (int i = 0; i < 6; i++) {
                if (settled[i] || (ops[k].multiple ? tags[i] > ops[k].tag : i != named))
                    continue;
                settled[i] = 1;
                how[i] = ops[k].disp;
            }
        }
        for (int i = 0; i < 6; i++) {
            cr_assert(settled[i], "mask %u: delivery %d left unsettled", mask, i);
            cr_assert_eq(how[i], disp[i], "mask %u: delivery %d settled as %s", mask, i,
                         rq_disp_name(how[i]));
        }
    }
}

/* The broker's rule again, for a group finished in any order (issue 14): each of tags 1..8
 * is acked, rejected or requeued in the group, or still outstanding outside it (running).
 * Every plan must settle each member exactly once with its disposition and never touch an
 * outstanding tag outside the group (a multiple ack over a running delivery would lose it). */
Test(settle, plans_never_settle_a_delivery_outside_the_group)
{
    for (unsigned mask = 0; mask < 4u * 4u * 4u * 4u * 4u * 4u * 4u * 4u; mask++) {
        uint64_t tags[8], other = RQ_SETTLE_NO_OTHER;
        rq_disp_t disp[8], how[8];
        int member[8], settled[8] = {0};
        rq_settle_op_t ops[8];
        size_t n = 0, nops;
        unsigned m = mask;

        for (int t = 0; t < 8; t++, m /= 4) {
            member[t] = m % 4 != 3;
            if (!member[t]) {
                if (other == RQ_SETTLE_NO_OTHER)
                    other = (uint64_t)(t + 1);
                continue;
            }
            tags[n] = (uint64_t)(t + 1);
            disp[n++] = (rq_disp_t)(m % 4);
        }
        nops = rq_settle_plan(tags, disp, n, other, ops);
        for (size_t k = 0; k < nops; k++) {
            int named = (int)ops[k].tag - 1;

            cr_assert(named >= 0 && named < 8 && !settled[named],
                      "mask %u: op %zu names a settled or unknown tag", mask, k);
            for (int t = 0; t < 8; t++) {
                if (settled[t] || (ops[k].multiple ? t > named : t != named))
                    continue;
                cr_assert(member[t], "mask %u: op %zu settles tag %d, outside the group", mask, k,
                          t + 1);
                settled[t] = 1;
                how[t] = ops[k].disp;
            }
        }
        for (size_t i = 0; i < n; i++) {
            int t = (int)tags[i] - 1;

            cr_assert(settled[t], "mask %u: tag %d left unsettled", mask, t + 1);
            cr_assert_eq(how[t], disp[i], "mask %u: tag %d settled as %s", mask, t + 1,
                         rq_disp_name(how[t]));
        }
    }
}
