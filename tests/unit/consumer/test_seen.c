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

/* ---- rq_seen_each_gap ---------------------------------------------------------------- */

typedef struct gaps {
    int64_t v[64][2];
    size_t n;
    size_t stop_after; /* 0: never stop */
} gaps_t;

static int collect_gap(int64_t a, int64_t b, void *arg)
{
    gaps_t *g = arg;

    cr_assert_lt(g->n, 64u);
    g->v[g->n][0] = a;
    g->v[g->n][1] = b;
    g->n++;
    return g->stop_after && g->n == g->stop_after ? 7 : 0;
}

typedef struct gap_case {
    int64_t a, c;
    size_t n;
    int64_t want[4][2];
} gap_case_t;

Test(seen, each_gap_walks_the_uncovered_parts_in_order)
{
    rq_seen_t *s = rq_seen_new(16, 4);
    /* recorded: [10,20) [30,40) [50,60) */
    static const gap_case_t cases[] = {
        {0, 10, 1, {{0, 10}}},                               /* before everything */
        {0, 5, 1, {{0, 5}}},                                 /* */
        {10, 20, 0, {{0}}},                                  /* exactly covered */
        {12, 18, 0, {{0}}},                                  /* inside a range */
        {5, 15, 1, {{5, 10}}},                               /* overlaps a range's start */
        {15, 25, 1, {{20, 25}}},                             /* overlaps a range's end */
        {15, 35, 1, {{20, 30}}},                             /* between two ranges */
        {0, 70, 4, {{0, 10}, {20, 30}, {40, 50}, {60, 70}}}, /* around all of them */
        {20, 30, 1, {{20, 30}}},                             /* exactly a hole */
        {60, 80, 1, {{60, 80}}},                             /* after everything */
        {35, 55, 1, {{40, 50}}},                             /* */
        {7, 7, 0, {{0}}},                                    /* empty */
        {9, 8, 0, {{0}}},                                    /* reversed */
    };

    cr_assert_not_null(s);
    rq_seen_add_range(s, "f", 30, 40);
    rq_seen_add_range(s, "f", 10, 20);
    rq_seen_add_range(s, "f", 50, 60);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gaps_t g = {.n = 0};
        cr_assert_eq(rq_seen_each_gap(s, "f", cases[i].a, cases[i].c, collect_gap, &g), 0);
        cr_assert_eq(g.n, cases[i].n, "[%lld,%lld): %zu gaps", (long long)cases[i].a,
                     (long long)cases[i].c, g.n);
        for (size_t k = 0; k < g.n; k++) {
            cr_expect_eq(g.v[k][0], cases[i].want[k][0], "case %zu gap %zu start", i, k);
            cr_expect_eq(g.v[k][1], cases[i].want[k][1], "case %zu gap %zu end", i, k);
        }
    }
    {
        gaps_t g = {.n = 0};
        cr_expect_eq(rq_seen_each_gap(s, "other", 3, 9, collect_gap, &g), 0);
        cr_assert_eq(g.n, 1u, "an unknown file is one gap");
        cr_expect_eq(g.v[0][0], 3);
        cr_expect_eq(g.v[0][1], 9);
    }
    {
        gaps_t g = {.n = 0, .stop_after = 2};
        cr_expect_eq(rq_seen_each_gap(s, "f", 0, 70, collect_gap, &g), 7, "fn's value stops it");
        cr_expect_eq(g.n, 2u);
    }
    rq_seen_free(s);
}

/* Random ranges against a bitmap: the gaps are exactly the unset bytes, maximal, in order;
 * recording the gaps then covers the whole range (a re-chunked redelivery writes each byte
 * once). */
Test(seen, each_gap_matches_a_bitmap)
{
    enum { N = 400 };
    unsigned seed = 42;

    for (int round = 0; round < 200; round++) {
        rq_seen_t *s = rq_seen_new(16, 4);
        unsigned char bit[N] = {0};
        int nadd = (int)(rand_r(&seed) % 8);

        for (int k = 0; k < nadd; k++) {
            int64_t a = rand_r(&seed) % N, b = a + 1 + rand_r(&seed) % 60;
            if (b > N)
                b = N;
            rq_seen_add_range(s, "f", a, b);
            memset(bit + a, 1, (size_t)(b - a));
        }
        for (int q = 0; q < 20; q++) {
            int64_t a = rand_r(&seed) % N, c = a + rand_r(&seed) % 120;
            gaps_t g = {.n = 0};
            int64_t pos = a;
            if (c > N)
                c = N;
            rq_seen_each_gap(s, "f", a, c, collect_gap, &g);
            for (size_t k = 0; k < g.n; k++) {
                cr_assert_lt(g.v[k][0], g.v[k][1]);
                cr_assert_geq(g.v[k][0], pos, "gaps in order, disjoint");
                for (int64_t x = pos; x < g.v[k][0]; x++)
                    cr_assert_eq(bit[x], 1, "byte %lld is uncovered but not in a gap",
                                 (long long)x);
                for (int64_t x = g.v[k][0]; x < g.v[k][1]; x++)
                    cr_assert_eq(bit[x], 0, "byte %lld is covered but in a gap", (long long)x);
                cr_assert(g.v[k][0] == a || bit[g.v[k][0] - 1], "gap not maximal at its start");
                cr_assert(g.v[k][1] == c || bit[g.v[k][1]], "gap not maximal at its end");
                pos = g.v[k][1];
            }
            for (int64_t x = pos; x < c; x++)
                cr_assert_eq(bit[x], 1, "byte %lld is uncovered after the last gap", (long long)x);
        }
        rq_seen_free(s);
    }
}
