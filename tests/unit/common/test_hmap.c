/* Unit tests for common/hmap.c. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

TestSuite(hmap, .timeout = 30);

/* Distinct non-NULL values to store: addresses inside this array. */
static char vals[16];

Test(hmap, put_get_del_replace)
{
    rq_hmap_t *h = rq_hmap_new(0);
    cr_assert_not_null(h);
    cr_expect_eq(rq_hmap_len(h), 0);
    cr_expect_null(rq_hmap_get(h, "a"));
    cr_expect_null(rq_hmap_del(h, "a"));

    cr_assert_eq(rq_hmap_put(h, "a", &vals[1]), 0);
    cr_assert_eq(rq_hmap_put(h, "b", &vals[2]), 0);
    cr_assert_eq(rq_hmap_put(h, "", &vals[3]), 0); /* empty key is a key */
    cr_expect_eq(rq_hmap_len(h), 3);
    cr_expect_eq(rq_hmap_get(h, "a"), &vals[1]);
    cr_expect_eq(rq_hmap_get(h, "b"), &vals[2]);
    cr_expect_eq(rq_hmap_get(h, ""), &vals[3]);
    cr_expect_null(rq_hmap_get(h, "c"));
    cr_expect_null(rq_hmap_get(h, "ab"));

    /* replace keeps the count */
    cr_assert_eq(rq_hmap_put(h, "a", &vals[4]), 0);
    cr_expect_eq(rq_hmap_len(h), 3);
    cr_expect_eq(rq_hmap_get(h, "a"), &vals[4]);

    cr_expect_eq(rq_hmap_del(h, "a"), &vals[4]);
    cr_expect_eq(rq_hmap_len(h), 2);
    cr_expect_null(rq_hmap_get(h, "a"));
    cr_expect_null(rq_hmap_del(h, "a"));
    cr_expect_eq(rq_hmap_get(h, "b"), &vals[2]);

    /* a NULL value is storable (get cannot tell it from absent, len can) */
    cr_assert_eq(rq_hmap_put(h, "nil", NULL), 0);
    cr_expect_eq(rq_hmap_len(h), 3);
    rq_hmap_free(h);
}

Test(hmap, keys_are_copied)
{
    rq_hmap_t *h = rq_hmap_new(4);
    cr_assert_not_null(h);
    char key[16];
    strcpy(key, "alpha");
    cr_assert_eq(rq_hmap_put(h, key, &vals[1]), 0);
    strcpy(key, "beta");
    cr_expect_null(rq_hmap_get(h, "beta"));
    cr_expect_eq(rq_hmap_get(h, "alpha"), &vals[1]);
    rq_hmap_free(h);
}

static void each_same_ptr(const char *key, void *value, void *arg)
{
    (void)arg;
    cr_expect_eq(key, (const char *)value, "the map holds the caller's pointer");
}

/* Borrowed keys: the map keeps the caller's pointers (neither copies nor frees them: ASan
 * would report a double free or a leak), lookups go by content, a replace takes the newer
 * pointer, and growth and backward-shift deletes keep every key reachable. */
Test(hmap, borrowed_keys_are_the_callers)
{
    enum { N = 3000 };
    static char keys[N][16], again[16];
    rq_hmap_t *h = rq_hmap_new_borrowed(0);
    cr_assert_not_null(h);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        cr_assert_eq(rq_hmap_put(h, keys[i], keys[i]), 0); /* the value is the key itself */
    }
    cr_expect_eq(rq_hmap_len(h), N);
    rq_hmap_each(h, each_same_ptr, NULL);
    for (int i = 0; i < N; i += 2)
        cr_assert_eq(rq_hmap_del(h, keys[i]), keys[i]);
    for (int i = 0; i < N; i++)
        cr_assert_eq(rq_hmap_get(h, keys[i]), i % 2 ? keys[i] : NULL, "key %d", i);
    strcpy(again, keys[1]);
    cr_assert_eq(rq_hmap_put(h, again, again), 0); /* same text, another pointer */
    cr_expect_eq(rq_hmap_len(h), N / 2);
    keys[1][0] = 'x'; /* the old pointer may change now: the map holds again */
    cr_expect_eq(rq_hmap_get(h, "k1"), again);
    rq_hmap_each(h, each_same_ptr, NULL);
    rq_hmap_free(h);
}

Test(hmap, null_arguments)
{
    rq_hmap_free(NULL);
    cr_expect_eq(rq_hmap_len(NULL), 0);
    cr_expect_null(rq_hmap_get(NULL, "a"));
    cr_expect_null(rq_hmap_del(NULL, "a"));
    cr_expect_eq(rq_hmap_put(NULL, "a", &vals[0]), -1);
    rq_hmap_t *h = rq_hmap_new(0);
    cr_assert_not_null(h);
    cr_expect_eq(rq_hmap_put(h, NULL, &vals[0]), -1);
    cr_expect_eq(rq_hmap_len(h), 0);
    rq_hmap_free(h);
}

static void key_of(char *buf, size_t n, size_t i)
{
    snprintf(buf, n, "key-%zu", i);
}

Test(hmap, growth_to_100k)
{
    enum { N = 100000 };
    rq_hmap_t *h = rq_hmap_new(0); /* starts small: must grow many times */
    cr_assert_not_null(h);
    char k[32];
    for (size_t i = 0; i < N; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(rq_hmap_put(h, k, (void *)(uintptr_t)(i + 1)), 0);
    }
    cr_assert_eq(rq_hmap_len(h), N);
    for (size_t i = 0; i < N; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(rq_hmap_get(h, k), (void *)(uintptr_t)(i + 1), "key %s", k);
    }
    key_of(k, sizeof(k), N);
    cr_expect_null(rq_hmap_get(h, k));

    /* delete the even keys; odd ones must remain reachable after the backward shifts */
    for (size_t i = 0; i < N; i += 2) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(rq_hmap_del(h, k), (void *)(uintptr_t)(i + 1));
    }
    cr_assert_eq(rq_hmap_len(h), N / 2);
    for (size_t i = 0; i < N; i++) {
        key_of(k, sizeof(k), i);
        void *want = (i % 2) ? (void *)(uintptr_t)(i + 1) : NULL;
        cr_assert_eq(rq_hmap_get(h, k), want, "key %s", k);
    }
    rq_hmap_free(h);
}

Test(hmap, delete_then_reinsert)
{
    rq_hmap_t *h = rq_hmap_new(0);
    cr_assert_not_null(h);
    char k[32];
    /* repeated cycles over the same keys: no tombstone build-up, counts stay exact */
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < 200; i++) {
            key_of(k, sizeof(k), i);
            cr_assert_eq(rq_hmap_put(h, k, (void *)(uintptr_t)(i + 1 + (size_t)round)), 0);
        }
        cr_assert_eq(rq_hmap_len(h), 200);
        for (size_t i = 0; i < 200; i++) {
            key_of(k, sizeof(k), i);
            cr_assert_eq(rq_hmap_get(h, k), (void *)(uintptr_t)(i + 1 + (size_t)round));
            cr_assert_eq(rq_hmap_del(h, k), (void *)(uintptr_t)(i + 1 + (size_t)round));
            cr_assert_null(rq_hmap_get(h, k));
        }
        cr_assert_eq(rq_hmap_len(h), 0);
    }
    cr_assert_eq(rq_hmap_put(h, "x", &vals[1]), 0);
    cr_expect_eq(rq_hmap_del(h, "x"), &vals[1]);
    cr_assert_eq(rq_hmap_put(h, "x", &vals[2]), 0);
    cr_expect_eq(rq_hmap_get(h, "x"), &vals[2]);
    cr_expect_eq(rq_hmap_len(h), 1);
    rq_hmap_free(h);
}

/* Randomised operations checked against a plain array model (deterministic PRNG). */
Test(hmap, random_ops_match_model)
{
    enum { KEYS = 500, OPS = 200000 };
    static uintptr_t model[KEYS]; /* 0 = absent */
    memset(model, 0, sizeof(model));
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    rq_hmap_t *h = rq_hmap_new(0);
    cr_assert_not_null(h);
    size_t live = 0;
    char k[32];
    for (int op = 0; op < OPS; op++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t i = (size_t)(x % KEYS);
        key_of(k, sizeof(k), i);
        switch ((x >> 32) % 3) {
        case 0: {
            uintptr_t v = (uintptr_t)op + 1;
            cr_assert_eq(rq_hmap_put(h, k, (void *)v), 0);
            if (!model[i])
                live++;
            model[i] = v;
            break;
        }
        case 1:
            cr_assert_eq(rq_hmap_del(h, k), (void *)model[i], "op %d del %s", op, k);
            if (model[i])
                live--;
            model[i] = 0;
            break;
        default:
            cr_assert_eq(rq_hmap_get(h, k), (void *)model[i], "op %d get %s", op, k);
        }
        cr_assert_eq(rq_hmap_len(h), live);
    }
    for (size_t i = 0; i < KEYS; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(rq_hmap_get(h, k), (void *)model[i]);
    }
    rq_hmap_free(h);
}

typedef struct {
    size_t calls;
    uintptr_t sum;
    unsigned char seen[1000];
    int bad;
} each_acc_t;

static void each_cb(const char *key, void *value, void *arg)
{
    each_acc_t *acc = arg;
    unsigned idx;
    if (sscanf(key, "key-%u", &idx) != 1 || idx >= 1000 || acc->seen[idx] ||
        (uintptr_t)value != idx + 1) {
        acc->bad = 1;
        return;
    }
    acc->seen[idx] = 1;
    acc->calls++;
    acc->sum += (uintptr_t)value;
}

Test(hmap, each_visits_every_entry_once)
{
    rq_hmap_t *h = rq_hmap_new(10);
    cr_assert_not_null(h);
    char k[32];
    for (size_t i = 0; i < 1000; i++) {
        key_of(k, sizeof(k), i);
        cr_assert_eq(rq_hmap_put(h, k, (void *)(uintptr_t)(i + 1)), 0);
    }
    for (size_t i = 0; i < 1000; i += 3) {
        key_of(k, sizeof(k), i);
        cr_assert_not_null(rq_hmap_del(h, k));
    }
    each_acc_t acc;
    memset(&acc, 0, sizeof(acc));
    rq_hmap_each(h, each_cb, &acc);
    cr_expect_eq(acc.bad, 0);
    cr_expect_eq(acc.calls, rq_hmap_len(h));
    uintptr_t want = 0;
    for (size_t i = 0; i < 1000; i++) {
        cr_expect_eq(acc.seen[i], i % 3 != 0, "key-%zu", i);
        if (i % 3)
            want += i + 1;
    }
    cr_expect_eq(acc.sum, want);

    each_acc_t none;
    memset(&none, 0, sizeof(none));
    rq_hmap_each(NULL, each_cb, &none);
    cr_expect_eq(none.calls, 0);
    rq_hmap_free(h);
}

Test(hmap, large_hint_and_long_keys)
{
    rq_hmap_t *h = rq_hmap_new(100000);
    cr_assert_not_null(h);
    char *big = malloc(10001);
    cr_assert_not_null(big);
    memset(big, 'z', 10000);
    big[10000] = '\0';
    cr_assert_eq(rq_hmap_put(h, big, &vals[5]), 0);
    big[9999] = 'y';
    cr_expect_null(rq_hmap_get(h, big));
    big[9999] = 'z';
    cr_expect_eq(rq_hmap_get(h, big), &vals[5]);
    free(big);
    rq_hmap_free(h);
}
