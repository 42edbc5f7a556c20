/* test_seen.c - the exactly-once writer's index of written lines and ids. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "seen.h"

Test(seen, in_order_lines_merge_into_one_range)
{
    rq_seen_t *s = rq_seen_new(16, 4);
    int64_t off = 0;

    cr_assert_not_null(s);
    /* lines of 5 bytes + '\n': ranges [0,6) [6,12) ... touch and merge */
    for (int i = 0; i < 1000; i++, off += 6) {
        cr_expect_eq(rq_seen_has_range(s, "f1", off), 0);
        cr_assert_eq(rq_seen_add_range(s, "f1", off, off + 6), 0);
        cr_expect_eq(rq_seen_has_range(s, "f1", off), 1);
    }
    cr_expect_eq(rq_seen_ranges(s), 1);
    cr_expect_eq(rq_seen_has_range(s, "f1", off), 0, "the next line is not seen");
    cr_expect_eq(rq_seen_has_range(s, "f2", 0), 0, "another file is independent");
    rq_seen_free(s);
}

Test(seen, out_of_order_ranges_fill_gaps)
{
    rq_seen_t *s = rq_seen_new(16, 4);

    rq_seen_add_range(s, "f", 20, 30);
    rq_seen_add_range(s, "f", 0, 10);
    rq_seen_add_range(s, "f", 40, 50);
    cr_expect_eq(rq_seen_ranges(s), 3);
    cr_expect_eq(rq_seen_has_range(s, "f", 10), 0);
    cr_expect_eq(rq_seen_has_range(s, "f", 35), 0);
    cr_expect_eq(rq_seen_has_range(s, "f", 45), 1);
    rq_seen_add_range(s, "f", 10, 20);
    cr_expect_eq(rq_seen_ranges(s), 2);
    rq_seen_add_range(s, "f", 30, 40);
    cr_expect_eq(rq_seen_ranges(s), 1);
    cr_expect_eq(rq_seen_has_range(s, "f", 0), 1);
    cr_expect_eq(rq_seen_has_range(s, "f", 49), 1);
    cr_expect_eq(rq_seen_has_range(s, "f", 50), 0);
    /* an overlapping re-add changes nothing */
    rq_seen_add_range(s, "f", 5, 45);
    cr_expect_eq(rq_seen_ranges(s), 1);
    rq_seen_free(s);
}

Test(seen, ids_are_bounded_by_the_window)
{
    rq_seen_t *s = rq_seen_new(100, 4);
    char id[32];

    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "msg-%d", i);
        cr_expect_eq(rq_seen_has_id(s, id, strlen(id)), 0, "%s seen too early", id);
        rq_seen_add_id(s, id, strlen(id));
        cr_expect_eq(rq_seen_has_id(s, id, strlen(id)), 1);
        cr_expect_leq(rq_seen_ids(s), 100);
    }
    for (int i = 900; i < 1000; i++) {
        snprintf(id, sizeof(id), "msg-%d", i);
        cr_expect_eq(rq_seen_has_id(s, id, strlen(id)), 1, "%s evicted too early", id);
    }
    for (int i = 0; i < 900; i += 7) {
        snprintf(id, sizeof(id), "msg-%d", i);
        cr_expect_eq(rq_seen_has_id(s, id, strlen(id)), 0, "%s kept past the window", id);
    }
    /* adding an id twice keeps one entry */
    rq_seen_add_id(s, "msg-999", 7);
    cr_expect_eq(rq_seen_ids(s), 100);
    rq_seen_free(s);
}

Test(seen, oldest_file_is_dropped_past_max_files)
{
    rq_seen_t *s = rq_seen_new(4, 2);

    rq_seen_add_range(s, "a", 0, 10);
    rq_seen_add_range(s, "b", 0, 10);
    rq_seen_add_range(s, "c", 0, 10);
    cr_expect_eq(rq_seen_files(s), 2);
    cr_expect_eq(rq_seen_has_range(s, "a", 0), 0);
    cr_expect_eq(rq_seen_has_range(s, "b", 0), 1);
    cr_expect_eq(rq_seen_has_range(s, "c", 5), 1);
    rq_seen_free(s);
}

static void count_cb(const char *file_id, int64_t start, int64_t end, uint64_t hash, void *arg)
{
    size_t *n = arg;
    n[file_id ? 0 : 1]++;
    (void)start;
    (void)end;
    (void)hash;
}

Test(seen, each_visits_ranges_then_hashes)
{
    rq_seen_t *s = rq_seen_new(8, 4);
    size_t n[2] = {0, 0};

    rq_seen_add_range(s, "a", 0, 10);
    rq_seen_add_range(s, "a", 20, 30);
    rq_seen_add_id(s, "x", 1);
    rq_seen_add_hash(s, rq_seen_hash("y", 1));
    rq_seen_each(s, count_cb, n);
    cr_expect_eq(n[0], 2);
    cr_expect_eq(n[1], 2);
    cr_expect_eq(rq_seen_has_id(s, "y", 1), 1);
    rq_seen_free(s);
    rq_seen_free(NULL);
}
