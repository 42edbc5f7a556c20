/* ratelimit.c - token buckets in a bounded LRU map. */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "list.h"
#include "sha256.h"
#include "util.h"

void rq_bucket_init(rq_bucket_t *b, double burst, int64_t now_ns)
{
    b->tokens = burst;
    b->last_ns = now_ns;
}

int rq_bucket_take(rq_bucket_t *b, double rate, double burst, int64_t now_ns,
                   unsigned *retry_after_s)
{
    double wait;

    if (now_ns > b->last_ns) {
        b->tokens += (double)(now_ns - b->last_ns) / 1e9 * rate;
        if (b->tokens > burst)
            b->tokens = burst;
        b->last_ns = now_ns;
    }
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return 0;
    }
    wait = ceil((1.0 - b->tokens) / rate);
    *retry_after_s = wait < 1 ? 1u : wait > 86400 ? 86400u : (unsigned)wait;
    return 1;
}

/* A bucket in the LRU list (most recent at the head). */
typedef struct entry {
    rq_list_node_t lru;
    rq_bucket_t b;
    char key[RQ_CLIENT_KEY_MAX];
} entry_t;

struct rq_ratelimit {
    pthread_mutex_t lock;
    double rate, burst;
    size_t max;
    rq_hmap_t *map; /* key -> entry_t */
    rq_list_t lru;  /* of entry_t, most recently seen first */
};

rq_ratelimit_t *rq_ratelimit_new(double rate, double burst, size_t max_clients)
{
    rq_ratelimit_t *rl;

    if (!(rate > 0) || !(burst >= 1) || max_clients == 0)
        return NULL;
    rl = calloc(1, sizeof(*rl));
    if (rl == NULL)
        return NULL;
    rl->map = rq_hmap_new(max_clients < 1024 ? max_clients : 1024);
    if (rl->map == NULL) {
        free(rl);
        return NULL;
    }
    pthread_mutex_init(&rl->lock, NULL);
    rl->rate = rate;
    rl->burst = burst;
    rl->max = max_clients;
    return rl;
}

int rq_ratelimit_take(rq_ratelimit_t *rl, const char *client, int64_t now_ns,
                      unsigned *retry_after_s)
{
    char key[RQ_CLIENT_KEY_MAX];
    entry_t *e;
    int rc;

    snprintf(key, sizeof(key), "%s", client);
    pthread_mutex_lock(&rl->lock);
    e = rq_hmap_get(rl->map, key);
    if (e != NULL) {
        rq_list_unlink(&rl->lru, &e->lru);
    } else {
        if (rq_hmap_len(rl->map) >= rl->max && rl->lru.tail != NULL) {
            /* reuse the least recently seen client's entry */
            e = RQ_LIST_ENTRY(rl->lru.tail, entry_t, lru);
            rq_list_unlink(&rl->lru, &e->lru);
            rq_hmap_del(rl->map, e->key);
        } else {
            e = calloc(1, sizeof(*e));
        }
        if (e == NULL || rq_hmap_put(rl->map, key, e) != 0) {
            /* Out of memory: let the request through rather than refuse everyone. */
            free(e);
            pthread_mutex_unlock(&rl->lock);
            return 0;
        }
        memcpy(e->key, key, sizeof(key));
        rq_bucket_init(&e->b, rl->burst, now_ns);
    }
    rq_list_push_front(&rl->lru, &e->lru);
    rc = rq_bucket_take(&e->b, rl->rate, rl->burst, now_ns, retry_after_s);
    pthread_mutex_unlock(&rl->lock);
    return rc;
}

size_t rq_ratelimit_size(rq_ratelimit_t *rl)
{
    size_t n;

    pthread_mutex_lock(&rl->lock);
    n = rq_hmap_len(rl->map);
    pthread_mutex_unlock(&rl->lock);
    return n;
}

void rq_ratelimit_free(rq_ratelimit_t *rl)
{
    if (rl == NULL)
        return;
    for (rq_list_node_t *n = rl->lru.head, *next; n != NULL; n = next) {
        next = n->next;
        free(RQ_LIST_ENTRY(n, entry_t, lru));
    }
    rq_hmap_free(rl->map);
    pthread_mutex_destroy(&rl->lock);
    free(rl);
}

int rq_ratelimit_client_key(const struct sockaddr *sa, char *buf, size_t len)
{
    char text[INET6_ADDRSTRLEN];

    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
        snprintf(buf, len, "ip:%s", text);
        return 0;
    }
    if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        struct in6_addr prefix = in6->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(&prefix)) {
            inet_ntop(AF_INET, &prefix.s6_addr[12], text, sizeof(text));
            snprintf(buf, len, "ip:%s", text);
            return 0;
        }
        memset(&prefix.s6_addr[8], 0, 8);
        inet_ntop(AF_INET6, &prefix, text, sizeof(text));
        snprintf(buf, len, "ip6:%s/64", text);
        return 0;
    }
    snprintf(buf, len, "ip:?");
    return -1;
}

void rq_ratelimit_name_key(const char *prefix, const char *name, char *buf, size_t len)
{
    uint8_t d[RQ_SHA256_LEN];
    char hex[2 * RQ_SHA256_LEN + 1];

    if (strlen(prefix) + strlen(name) < len && strlen(prefix) + strlen(name) < RQ_CLIENT_KEY_MAX) {
        snprintf(buf, len, "%s%s", prefix, name);
        return;
    }
    rq_sha256(name, strlen(name), d);
    rq_hex_encode(d, sizeof(d), hex);
    snprintf(buf, len, "%.8s#%s", prefix, hex);
}

struct rq_labelset {
    pthread_mutex_t lock;
    size_t max;
    rq_hmap_t *map; /* value -> (void *)1 */
};

rq_labelset_t *rq_labelset_new(size_t max)
{
    rq_labelset_t *ls = calloc(1, sizeof(*ls));

    if (ls == NULL || max == 0 || (ls->map = rq_hmap_new(max)) == NULL) {
        free(ls);
        return NULL;
    }
    pthread_mutex_init(&ls->lock, NULL);
    ls->max = max;
    return ls;
}

const char *rq_labelset_pick(rq_labelset_t *ls, const char *value, const char *overflow)
{
    const char *r = overflow;

    pthread_mutex_lock(&ls->lock);
    if (rq_hmap_get(ls->map, value) != NULL ||
        (rq_hmap_len(ls->map) < ls->max && rq_hmap_put(ls->map, value, (void *)1) == 0))
        r = value;
    pthread_mutex_unlock(&ls->lock);
    return r;
}

void rq_labelset_free(rq_labelset_t *ls)
{
    if (ls == NULL)
        return;
    rq_hmap_free(ls->map);
    pthread_mutex_destroy(&ls->lock);
    free(ls);
}
