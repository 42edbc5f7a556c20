/* Unit tests for consumer/settle.c: planning acks, rejects and requeues for a
 * batch. */
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
    size_t nops;
    rq_settle_op_t ops[8];
} scase_t;

static const scase_t cases[] = {
    {"empty batch", 0, {0}, {0}, 0, {{0}}},
    {"one ack", 1, {7}, {A}, 1, {{A, 7, 0}}},
    {"all acked: one ack multiple", 4, {1, 2, 3, 4}, {A, A, A, A}, 1, {{A, 4, 1}}},
    {"reject in the middle",
     5,
     {1, 2, 3, 4, 5},
     {A, A, R, A, A},
     3,
     {{A, 2, 1}, {R, 3, 0}, {A, 5, 1}}},
    {"last delivery rejected is never acked",
     3,
     {10, 11, 12},
     {A, A, R},
     2,
     {{A, 11, 1}, {R, 12, 0}}},
    {"first rejected", 3, {1, 2, 3}, {R, A, A}, 2, {{R, 1, 0}, {A, 3, 1}}},
    {"runs of rejects use nack multiple",
     6,
     {1, 2, 3, 4, 5, 6},
     {A, R, R, A, Q, Q},
     4,
     {{A, 1, 0}, {R, 3, 1}, {A, 4, 0}, {Q, 6, 1}}},
    {"gaps in tags are fine", 3, {3, 9, 20}, {A, A, A}, 1, {{A, 20, 1}}},
    {"tags not ascending: one frame each",
     3,
     {5, 4, 6},
     {A, A, A},
     3,
     {{A, 5, 0}, {A, 4, 0}, {A, 6, 0}}},
    {"duplicate tags: one frame each", 2, {5, 5}, {A, A}, 2, {{A, 5, 0}, {A, 5, 0}}},
};

Test(settle, plan_table)
{
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        const scase_t *c = &cases[k];
        rq_settle_op_t ops[8];
        size_t n = rq_settle_plan(c->tags, c->disp, c->n, ops);

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
        n = rq_settle_plan(tags, disp, 6, ops);
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
