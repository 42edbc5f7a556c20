/* test_ratelimit.c - token buckets (pure, on a fake clock), the bounded LRU of clients,
 * client keys of addresses, and concurrent takers. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ratelimit.h"

#define S 1000000000LL /* one second in ns */

Test(ratelimit, bucket_burst_then_rate)
{
    rq_bucket_t b;
    unsigned ra = 0;
    int allowed = 0;

    rq_bucket_init(&b, 5, 0);
    for (int i = 0; i < 10; i++)
        allowed += rq_bucket_take(&b, 2.0, 5, 0, &ra) == 0;
    cr_expect_eq(allowed, 5, "a full bucket lets the burst through at once");
    cr_expect_eq(rq_bucket_take(&b, 2.0, 5, 0, &ra), 1);
    cr_expect_eq(ra, 1u, "one token at 2/s is 0.5 s away: Retry-After rounds up to 1");
    cr_expect_eq(rq_bucket_take(&b, 2.0, 5, S / 2, &ra), 0, "after 0.5 s one token is back");
    cr_expect_eq(rq_bucket_take(&b, 2.0, 5, S / 2, &ra), 1);

    /* Over 10 s at 2/s, about 20 more are allowed, never more than the burst at once. */
    allowed = 0;
    for (int64_t t = S / 2; t <= 10 * S + S / 2; t += S / 100)
        allowed += rq_bucket_take(&b, 2.0, 5, t, &ra) == 0;
    cr_expect(allowed >= 19 && allowed <= 21, "%d allowed in 10 s at 2/s", allowed);

    /* Idle for an hour: the bucket holds the burst, not 7200 tokens. */
    allowed = 0;
    for (int i = 0; i < 20; i++)
        allowed += rq_bucket_take(&b, 2.0, 5, 3600 * S, &ra) == 0;
    cr_expect_eq(allowed, 5);
}

Test(ratelimit, bucket_slow_rate_retry_after_and_clock_backwards)
{
    rq_bucket_t b;
    unsigned ra = 0;

    rq_bucket_init(&b, 1, 100 * S);
    cr_expect_eq(rq_bucket_take(&b, 0.1, 1, 100 * S, &ra), 0);
    cr_expect_eq(rq_bucket_take(&b, 0.1, 1, 100 * S, &ra), 1);
    cr_expect_eq(ra, 10u, "0.1/s: the next token is 10 s away");
    cr_expect_eq(rq_bucket_take(&b, 0.1, 1, 104 * S, &ra), 1);
    cr_expect_eq(ra, 6u);
    cr_expect_eq(rq_bucket_take(&b, 0.1, 1, 50 * S, &ra), 1, "time going back refills nothing");
    cr_expect_eq(ra, 6u);
    cr_expect_eq(rq_bucket_take(&b, 0.1, 1, 110 * S, &ra), 0);
}

Test(ratelimit, bad_arguments)
{
    cr_expect_null(rq_ratelimit_new(0, 1, 10));
    cr_expect_null(rq_ratelimit_new(1, 0.5, 10));
    cr_expect_null(rq_ratelimit_new(1, 1, 0));
    rq_ratelimit_free(NULL);
}

Test(ratelimit, clients_are_independent)
{
    rq_ratelimit_t *rl = rq_ratelimit_new(1, 2, 100);
    unsigned ra;

    cr_assert_not_null(rl);
    cr_expect_eq(rq_ratelimit_take(rl, "k:a", 0, &ra), 0);
    cr_expect_eq(rq_ratelimit_take(rl, "k:a", 0, &ra), 0);
    cr_expect_eq(rq_ratelimit_take(rl, "k:a", 0, &ra), 1, "a's burst is spent");
    cr_expect_eq(rq_ratelimit_take(rl, "k:b", 0, &ra), 0, "b has its own bucket");
    cr_expect_eq(rq_ratelimit_size(rl), 2);
    rq_ratelimit_free(rl);
}

Test(ratelimit, memory_is_bounded_and_lru_evicts_the_idlest)
{
    rq_ratelimit_t *rl = rq_ratelimit_new(1, 1, 16);
    char key[32];
    unsigned ra;

    cr_assert_not_null(rl);
    cr_expect_eq(rq_ratelimit_take(rl, "ip:victim", 0, &ra), 0);
    cr_expect_eq(rq_ratelimit_take(rl, "ip:victim", 0, &ra), 1);
    /* 100000 distinct addresses: the map never holds more than 16 buckets. */
    for (int i = 0; i < 100000; i++) {
        snprintf(key, sizeof(key), "ip:10.%d.%d.%d", i >> 16 & 255, i >> 8 & 255, i & 255);
        rq_ratelimit_take(rl, key, 0, &ra);
        if (i % 1000 == 0)
            cr_assert_leq(rq_ratelimit_size(rl), 16);
        if (i == 5) {
            /* The victim, seen again recently, is not the one evicted next. */
            cr_expect_eq(rq_ratelimit_take(rl, "ip:victim", 0, &ra), 1);
        }
    }
    cr_expect_eq(rq_ratelimit_size(rl), 16);
    /* A recent client keeps its empty bucket while 15 others come and go. */
    cr_expect_eq(rq_ratelimit_take(rl, "ip:recent", 0, &ra), 0);
    for (int i = 0; i < 15; i++) {
        snprintf(key, sizeof(key), "ip:192.0.2.%d", i);
        rq_ratelimit_take(rl, key, 0, &ra);
    }
    cr_expect_eq(rq_ratelimit_take(rl, "ip:recent", 0, &ra), 1, "still limited: not evicted");
    rq_ratelimit_free(rl);
}

Test(ratelimit, long_keys_are_cut_not_overflowed)
{
    rq_ratelimit_t *rl = rq_ratelimit_new(1, 1, 4);
    char key[300];
    unsigned ra;

    memset(key, 'x', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    cr_assert_not_null(rl);
    cr_expect_eq(rq_ratelimit_take(rl, key, 0, &ra), 0);
    key[200] = 'y'; /* differs only past the cut: the same client */
    cr_expect_eq(rq_ratelimit_take(rl, key, 0, &ra), 1);
    rq_ratelimit_free(rl);
}

Test(ratelimit, client_keys)
{
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr sa;
    char buf[RQ_CLIENT_KEY_MAX], buf2[RQ_CLIENT_KEY_MAX];

    memset(&in4, 0, sizeof(in4));
    in4.sin_family = AF_INET;
    inet_pton(AF_INET, "203.0.113.7", &in4.sin_addr);
    cr_expect_eq(rq_ratelimit_client_key((struct sockaddr *)&in4, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "ip:203.0.113.7");

    memset(&in6, 0, sizeof(in6));
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", &in6.sin6_addr);
    cr_expect_eq(rq_ratelimit_client_key((struct sockaddr *)&in6, buf, sizeof(buf)), 0);
    cr_expect_str_eq(buf, "ip6:2001:db8:1:2::/64");
    inet_pton(AF_INET6, "2001:db8:1:2::1", &in6.sin6_addr);
    rq_ratelimit_client_key((struct sockaddr *)&in6, buf2, sizeof(buf2));
    cr_expect_str_eq(buf, buf2, "one /64, one bucket");

    inet_pton(AF_INET6, "::ffff:198.51.100.9", &in6.sin6_addr);
    rq_ratelimit_client_key((struct sockaddr *)&in6, buf, sizeof(buf));
    cr_expect_str_eq(buf, "ip:198.51.100.9", "IPv4-mapped counts as IPv4");

    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    cr_expect_eq(rq_ratelimit_client_key(&sa, buf, sizeof(buf)), -1);
    cr_expect_eq(rq_ratelimit_client_key(NULL, buf, sizeof(buf)), -1);
}

/* Four threads hammer one client at a fixed instant: exactly `burst` requests pass. */
typedef struct {
    rq_ratelimit_t *rl;
    int allowed;
} taker_t;

static void *taker(void *arg)
{
    taker_t *t = arg;
    unsigned ra;
    char key[32];

    for (int i = 0; i < 20000; i++) {
        t->allowed += rq_ratelimit_take(t->rl, "k:shared", 7 * S, &ra) == 0;
        snprintf(key, sizeof(key), "ip:%d", i % 300); /* churn the LRU meanwhile */
        rq_ratelimit_take(t->rl, key, 7 * S, &ra);
    }
    return NULL;
}

Test(ratelimit, concurrent_takers_share_one_bucket)
{
    rq_ratelimit_t *rl = rq_ratelimit_new(1000, 500, 1000);
    taker_t t[4];
    pthread_t th[4];
    int total = 0;

    cr_assert_not_null(rl);
    for (int i = 0; i < 4; i++) {
        t[i] = (taker_t){rl, 0};
        pthread_create(&th[i], NULL, taker, &t[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        total += t[i].allowed;
    }
    cr_expect_eq(total, 500, "%d allowed, the burst is 500", total);
    rq_ratelimit_free(rl);
}
