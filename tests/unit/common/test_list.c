/* Unit tests for common/list.h. */
#include <criterion/criterion.h>

#include "list.h"

TestSuite(list, .timeout = 30);

typedef struct item {
    int v;
    rq_list_node_t node;
} item_t;

/* The values from head to tail into out; also checks the back links. Returns the count. */
static int values(const rq_list_t *l, int *out)
{
    int n = 0;
    const rq_list_node_t *prev = NULL;

    for (const rq_list_node_t *x = l->head; x != NULL; x = x->next) {
        cr_assert_eq(x->prev, prev);
        out[n++] = RQ_LIST_ENTRY(x, item_t, node)->v;
        prev = x;
    }
    cr_assert_eq(l->tail, prev);
    return n;
}

Test(list, push_unlink_head_middle_tail_and_only)
{
    item_t it[4] = {{0, {0}}, {1, {0}}, {2, {0}}, {3, {0}}};
    rq_list_t l = {0};
    int v[4];

    rq_list_push_back(&l, &it[1].node);
    rq_list_push_back(&l, &it[2].node);
    rq_list_push_front(&l, &it[0].node);
    rq_list_push_back(&l, &it[3].node);
    cr_assert_eq(values(&l, v), 4);
    for (int i = 0; i < 4; i++)
        cr_expect_eq(v[i], i);

    rq_list_unlink(&l, &it[2].node); /* middle */
    cr_expect_null(it[2].node.prev);
    cr_expect_null(it[2].node.next);
    cr_assert_eq(values(&l, v), 3);
    cr_expect(v[0] == 0 && v[1] == 1 && v[2] == 3);
    rq_list_unlink(&l, &it[0].node); /* head */
    rq_list_unlink(&l, &it[3].node); /* tail */
    cr_assert_eq(values(&l, v), 1);
    cr_expect_eq(v[0], 1);
    rq_list_unlink(&l, &it[1].node); /* the only one */
    cr_expect_null(l.head);
    cr_expect_null(l.tail);
    rq_list_push_front(&l, &it[2].node); /* reusable */
    cr_assert_eq(values(&l, v), 1);
    cr_expect_eq(v[0], 2);
    cr_expect_eq(RQ_LIST_ENTRY(l.head, item_t, node), &it[2]);
}
