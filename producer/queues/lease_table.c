/* lease_table.c - leases by id (rq_hmap_t) and by expiry (a binary min-heap). */
#include "lease_table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "hmap.h"

struct rq_lease_table {
    rq_hmap_t *by_id;
    rq_lease_entry_t **heap;
    size_t len, max;
};

/* n secret random bytes; a per-thread block of getrandom(2) output, so that a GET of 100
 * messages makes one system call, not 100. Returns 0 or -1. */
static int secret_bytes(unsigned char *out, size_t n)
{
    static _Thread_local unsigned char pool[1024];
    static _Thread_local size_t left;

    while (n > 0) {
        if (left == 0) {
            size_t got = 0;
            while (got < sizeof(pool)) {
                ssize_t r = getrandom(pool + got, sizeof(pool) - got, 0);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    return -1;
                got += (size_t)r;
            }
            left = sizeof(pool);
        }
        size_t k = n < left ? n : left;
        memcpy(out, pool + sizeof(pool) - left, k);
        memset(pool + sizeof(pool) - left, 0, k); /* used bytes are not kept */
        left -= k;
        out += k;
        n -= k;
    }
    return 0;
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int rq_lease_replica_id(char *out)
{
    unsigned char b[RQ_LEASE_REPLICA_LEN / 2];

    out[0] = '\0';
    if (secret_bytes(b, sizeof(b)) != 0)
        return -1;
    hex(b, sizeof(b), out);
    return 0;
}

int rq_lease_id_new(const char *replica, char *out)
{
    unsigned char b[16];

    out[0] = '\0';
    if (strlen(replica) != RQ_LEASE_REPLICA_LEN || secret_bytes(b, sizeof(b)) != 0)
        return -1;
    memcpy(out, replica, RQ_LEASE_REPLICA_LEN);
    out[RQ_LEASE_REPLICA_LEN] = '-';
    hex(b, sizeof(b), out + RQ_LEASE_REPLICA_LEN + 1);
    memset(b, 0, sizeof(b));
    return 0;
}

int rq_lease_id_valid(const char *id)
{
    size_t i;

    for (i = 0; id[i] != '\0'; i++) {
        int h = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
        if (i == RQ_LEASE_REPLICA_LEN ? id[i] != '-' : !h)
            return 0;
    }
    return i == RQ_LEASE_ID_LEN;
}

rq_lease_table_t *rq_lease_table_new(size_t max)
{
    rq_lease_table_t *t = calloc(1, sizeof(*t));

    if (t == NULL || max == 0)
        goto err;
    t->max = max;
    t->by_id = rq_hmap_new(max < 1024 ? max : 1024);
    t->heap = calloc(max, sizeof(*t->heap));
    if (t->by_id == NULL || t->heap == NULL)
        goto err;
    return t;

err:
    rq_lease_table_free(t);
    return NULL;
}

void rq_lease_table_free(rq_lease_table_t *t)
{
    if (t == NULL)
        return;
    rq_hmap_free(t->by_id);
    free(t->heap);
    free(t);
}

static void heap_set(rq_lease_table_t *t, size_t i, rq_lease_entry_t *e)
{
    t->heap[i] = e;
    e->heap_i = i;
}

static void sift_up(rq_lease_table_t *t, size_t i)
{
    rq_lease_entry_t *e = t->heap[i];

    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (t->heap[p]->expires_ms <= e->expires_ms)
            break;
        heap_set(t, i, t->heap[p]);
        i = p;
    }
    heap_set(t, i, e);
}

static void sift_down(rq_lease_table_t *t, size_t i)
{
    rq_lease_entry_t *e = t->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, m = i;
        int64_t best = e->expires_ms;
        if (l < t->len && t->heap[l]->expires_ms < best)
            m = l, best = t->heap[l]->expires_ms;
        if (l + 1 < t->len && t->heap[l + 1]->expires_ms < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(t, i, t->heap[m]);
        i = m;
    }
    heap_set(t, i, e);
}

int rq_lease_table_add(rq_lease_table_t *t, rq_lease_entry_t *e)
{
    if (t->len >= t->max)
        return -1;
    if (rq_hmap_get(t->by_id, e->id) != NULL)
        return -2;
    if (rq_hmap_put(t->by_id, e->id, e) != 0)
        return -1;
    heap_set(t, t->len++, e);
    sift_up(t, e->heap_i);
    return 0;
}

rq_lease_entry_t *rq_lease_table_get(const rq_lease_table_t *t, const char *id)
{
    return rq_hmap_get(t->by_id, id);
}

void rq_lease_table_remove(rq_lease_table_t *t, rq_lease_entry_t *e)
{
    size_t i = e->heap_i;

    rq_hmap_del(t->by_id, e->id);
    t->len--;
    if (i == t->len)
        return;
    rq_lease_entry_t *moved = t->heap[t->len];
    heap_set(t, i, moved);
    sift_up(t, i);
    sift_down(t, moved->heap_i);
}

void rq_lease_table_set_expiry(rq_lease_table_t *t, rq_lease_entry_t *e, int64_t expires_ms)
{
    e->expires_ms = expires_ms;
    sift_up(t, e->heap_i);
    sift_down(t, e->heap_i);
}

rq_lease_entry_t *rq_lease_table_pop_expired(rq_lease_table_t *t, int64_t now_ms)
{
    rq_lease_entry_t *e;

    if (t->len == 0 || t->heap[0]->expires_ms > now_ms)
        return NULL;
    e = t->heap[0];
    rq_lease_table_remove(t, e);
    return e;
}

int64_t rq_lease_table_next_expiry(const rq_lease_table_t *t)
{
    return t->len == 0 ? INT64_MAX : t->heap[0]->expires_ms;
}

rq_lease_entry_t *rq_lease_table_pop_any(rq_lease_table_t *t)
{
    rq_lease_entry_t *e;

    if (t->len == 0)
        return NULL;
    e = t->heap[t->len - 1];
    rq_lease_table_remove(t, e);
    return e;
}

void rq_lease_table_each(const rq_lease_table_t *t, void (*fn)(rq_lease_entry_t *e, void *arg),
                         void *arg)
{
    for (size_t i = 0; i < t->len; i++)
        fn(t->heap[i], arg);
}

size_t rq_lease_table_len(const rq_lease_table_t *t)
{
    return t->len;
}

size_t rq_lease_table_max(const rq_lease_table_t *t)
{
    return t->max;
}
