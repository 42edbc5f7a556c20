/* test_store.c - the bounded message status store. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "store.h"

Test(store, queued_then_processed)
{
    rq_store_t *s = rq_store_new(4);
    json_t *o;

    cr_assert_not_null(s);
    cr_expect_null(rq_store_get(s, "a"));
    cr_assert_eq(rq_store_queued(s, "a", 1000), 0);
    o = rq_store_get(s, "a");
    cr_assert_not_null(o);
    cr_expect_str_eq(json_string_value(json_object_get(o, "status")), "queued");
    cr_expect_str_eq(json_string_value(json_object_get(o, "queued_at")),
                     "1970-01-01T00:00:01.000Z");
    cr_expect_null(json_object_get(o, "reply"));
    json_decref(o);
    cr_assert_eq(rq_store_processed(s, "a", "Consumer processed: x", 21, 2000), 0);
    o = rq_store_get(s, "a");
    cr_expect_str_eq(json_string_value(json_object_get(o, "status")), "processed");
    cr_expect_str_eq(json_string_value(json_object_get(o, "reply")), "Consumer processed: x");
    json_decref(o);
    /* a late "queued" does not undo "processed" */
    rq_store_queued(s, "a", 3000);
    o = rq_store_get(s, "a");
    cr_expect_str_eq(json_string_value(json_object_get(o, "status")), "processed");
    json_decref(o);
    rq_store_free(s);
}

Test(store, evicts_oldest_when_full)
{
    rq_store_t *s = rq_store_new(3);
    char id[16];

    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        cr_assert_eq(rq_store_queued(s, id, i + 1), 0);
        cr_expect_leq(rq_store_len(s), 3);
    }
    cr_expect_null(rq_store_get(s, "m6"));
    for (int i = 7; i < 10; i++) {
        snprintf(id, sizeof(id), "m%d", i);
        json_t *o = rq_store_get(s, id);
        cr_expect_not_null(o, "%s evicted too early", id);
        json_decref(o);
    }
    rq_store_free(s);
}

Test(store, capacity_zero_keeps_nothing)
{
    rq_store_t *s = rq_store_new(0);

    cr_assert_not_null(s);
    cr_expect_eq(rq_store_queued(s, "a", 1), 0);
    cr_expect_eq(rq_store_processed(s, "a", "r", 1, 2), 0);
    cr_expect_null(rq_store_get(s, "a"));
    rq_store_free(s);
    rq_store_free(NULL);
}
