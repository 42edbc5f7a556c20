/* test_lease_table.c - the pull engine's lease table: lease ids (shape, uniqueness,
 * validation), lookups, expiry ordering through the heap (add, remove, extend), the bound. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "lease_table.h"

Test(lease_id, shape_and_uniqueness)
{
    char rep[RQ_LEASE_REPLICA_LEN + 1], id[RQ_LEASE_ID_LEN + 1];
    rq_hmap_t *seen = rq_hmap_new(0);

    cr_assert_eq(rq_lease_replica_id(rep), 0);
    cr_assert_eq(strlen(rep), RQ_LEASE_REPLICA_LEN);
    for (int i = 0; i < 20000; i++) {
        cr_assert_eq(rq_lease_id_new(rep, id), 0);
        cr_assert_eq(strlen(id), RQ_LEASE_ID_LEN);
        cr_assert_eq(strncmp(id, rep, RQ_LEASE_REPLICA_LEN), 0, "the replica prefix");
        cr_assert(rq_lease_id_valid(id), "%s", id);
        cr_assert_null(rq_hmap_get(seen, id), "duplicate lease id %s", id);
        cr_assert_eq(rq_hmap_put(seen, id, (void *)1), 0);
    }
    rq_hmap_free(seen);
}

Test(lease_id, random_part_not_sequential)
{
    char a[RQ_LEASE_ID_LEN + 1], b[RQ_LEASE_ID_LEN + 1];
    int same = 0;

    cr_assert_eq(rq_lease_id_new("0123abcd", a), 0);
    cr_assert_eq(rq_lease_id_new("0123abcd", b), 0);
    /* two consecutive ids share about 2 of 32 hex digits by chance, never most of them */
    for (int i = RQ_LEASE_REPLICA_LEN + 1; i < RQ_LEASE_ID_LEN; i++)
        same += a[i] == b[i];
    cr_assert_lt(same, 16, "%s vs %s", a, b);
}

Test(lease_id, bad_replica_refused)
{
    char id[RQ_LEASE_ID_LEN + 1];

    cr_assert_eq(rq_lease_id_new("short", id), -1);
    cr_assert_str_empty(id);
}

Test(lease_id, validation_table)
{
    static const struct {
        const char *id;
        int ok;
    } cases[] = {
        {"0123abcd-0123456789abcdef0123456789abcdef", 1},
        {"0123abcd-0123456789abcdef0123456789abcde", 0},   /* short */
        {"0123abcd-0123456789abcdef0123456789abcdef0", 0}, /* long */
        {"0123ABCD-0123456789abcdef0123456789abcdef", 0},  /* upper case */
        {"0123abcd_0123456789abcdef0123456789abcdef", 0},  /* separator */
        {"0123abcd-0123456789abcdef0123456789abcdeg", 0},  /* not hex */
        {"0123abc-d0123456789abcdef0123456789abcdef", 0},  /* separator misplaced */
        {"", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rq_lease_id_valid(cases[i].id), cases[i].ok, "%s", cases[i].id);
}

static rq_lease_entry_t *entry(int n, int64_t exp)
{
    rq_lease_entry_t *e = calloc(1, sizeof(*e));

    snprintf(e->id, sizeof(e->id), "lease-%d", n);
    e->expires_ms = exp;
    e->data = (void *)(intptr_t)n;
    return e;
}

Test(lease_table, expiry_order_with_removals_and_extensions)
{
    enum { N = 500 };
    rq_lease_table_t *t = rq_lease_table_new(N);
    rq_lease_entry_t *es[N];
    int64_t last = INT64_MIN;
    size_t popped = 0;

    cr_assert_not_null(t);
    srand(7);
    for (int i = 0; i < N; i++) {
        es[i] = entry(i, rand() % 100000);
        cr_assert_eq(rq_lease_table_add(t, es[i]), 0);
    }
    cr_assert_eq(rq_lease_table_len(t), N);
    cr_assert_eq(rq_lease_table_get(t, "lease-42"), es[42]);
    /* remove every 5th, extend every 7th (later) and every 11th (earlier) */
    for (int i = 0; i < N; i += 5) {
        rq_lease_table_remove(t, es[i]);
        free(es[i]);
        es[i] = NULL;
    }
    for (int i = 1; i < N; i += 7)
        if (es[i] != NULL)
            rq_lease_table_set_expiry(t, es[i], es[i]->expires_ms + 50000);
    for (int i = 3; i < N; i += 11)
        if (es[i] != NULL)
            rq_lease_table_set_expiry(t, es[i], es[i]->expires_ms / 3);
    cr_assert_null(rq_lease_table_get(t, "lease-0"), "removed");
    /* nothing expired before its time, and pops come out in expiry order */
    cr_assert_null(rq_lease_table_pop_expired(t, -1));
    for (;;) {
        int64_t next = rq_lease_table_next_expiry(t);
        rq_lease_entry_t *e = rq_lease_table_pop_expired(t, next);
        if (e == NULL)
            break;
        cr_assert_eq(e->expires_ms, next);
        cr_assert_geq(e->expires_ms, last, "out of order");
        last = e->expires_ms;
        cr_assert_null(rq_lease_table_get(t, e->id), "popped means gone");
        free(e);
        popped++;
    }
    cr_assert_eq(popped, N - N / 5);
    cr_assert_eq(rq_lease_table_len(t), 0);
    cr_assert_eq(rq_lease_table_next_expiry(t), INT64_MAX);
    rq_lease_table_free(t);
}

Test(lease_table, pop_expired_only_due)
{
    rq_lease_table_t *t = rq_lease_table_new(4);
    rq_lease_entry_t *a = entry(1, 100), *b = entry(2, 200);

    rq_lease_table_add(t, b);
    rq_lease_table_add(t, a);
    cr_assert_eq(rq_lease_table_next_expiry(t), 100);
    cr_assert_null(rq_lease_table_pop_expired(t, 99));
    cr_assert_eq(rq_lease_table_pop_expired(t, 150), a);
    cr_assert_null(rq_lease_table_pop_expired(t, 150));
    /* an extension moves it past now */
    rq_lease_table_set_expiry(t, b, 500);
    cr_assert_null(rq_lease_table_pop_expired(t, 300));
    cr_assert_eq(rq_lease_table_pop_expired(t, 500), b);
    free(a);
    free(b);
    rq_lease_table_free(t);
}

Test(lease_table, bounded_and_unique)
{
    rq_lease_table_t *t = rq_lease_table_new(3);
    rq_lease_entry_t *e[5];

    for (int i = 0; i < 5; i++)
        e[i] = entry(i, i);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rq_lease_table_add(t, e[i]), 0);
    cr_assert_eq(rq_lease_table_add(t, e[3]), -1, "full");
    cr_assert_eq(rq_lease_table_len(t), 3);
    rq_lease_table_remove(t, e[1]);
    snprintf(e[4]->id, sizeof(e[4]->id), "%s", e[0]->id);
    cr_assert_eq(rq_lease_table_add(t, e[4]), -2, "same id twice");
    cr_assert_eq(rq_lease_table_add(t, e[3]), 0, "room again after a removal");
    cr_assert_eq(rq_lease_table_max(t), 3);
    while (rq_lease_table_pop_any(t) != NULL)
        ;
    cr_assert_eq(rq_lease_table_len(t), 0);
    for (int i = 0; i < 5; i++)
        free(e[i]);
    rq_lease_table_free(t);
}

Test(lease_table, zero_max_refused)
{
    cr_assert_null(rq_lease_table_new(0));
    rq_lease_table_free(NULL);
}
