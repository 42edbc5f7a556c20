/* store.c - bounded FIFO map of recent message states. */
#include "store.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"
#include "ring.h"
#include "util.h"

typedef struct entry {
    char *id; /* also the hmap key (the map keeps its own copy) */
    int processed;
    long long queued_ms, processed_ms;
    char *reply;
    size_t reply_len;
} entry_t;

struct rq_store {
    pthread_mutex_t lock;
    rq_hmap_t *map;
    rq_ring_t fifo; /* of entry_t *, in insertion order; cap entries allocated at once */
    size_t cap;
};

static void entry_free(entry_t *e)
{
    if (e == NULL)
        return;
    free(e->id);
    free(e->reply);
    free(e);
}

rq_store_t *rq_store_new(size_t capacity)
{
    rq_store_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    pthread_mutex_init(&s->lock, NULL);
    s->cap = capacity;
    s->map = rq_hmap_new(capacity < 65536 ? capacity : 65536);
    rq_ring_init(&s->fifo, sizeof(entry_t *), capacity, capacity);
    if (s->map == NULL || (capacity && rq_ring_reserve(&s->fifo, capacity) != 0)) {
        rq_store_free(s);
        return NULL;
    }
    return s;
}

void rq_store_free(rq_store_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < rq_ring_len(&s->fifo); i++)
        entry_free(*(entry_t **)rq_ring_at(&s->fifo, i));
    rq_ring_clear(&s->fifo);
    rq_hmap_free(s->map);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Returns the entry for id, creating it (and evicting the oldest) when absent. Locked. */
static entry_t *lookup_or_add(rq_store_t *s, const char *id)
{
    entry_t *e = rq_hmap_get(s->map, id);

    if (e != NULL || s->cap == 0)
        return e;
    e = calloc(1, sizeof(*e));
    if (e == NULL || (e->id = strdup(id)) == NULL || rq_hmap_put(s->map, id, e) != 0) {
        entry_free(e);
        return NULL;
    }
    if (rq_ring_len(&s->fifo) == s->cap) {
        entry_t *old = *(entry_t **)rq_ring_at(&s->fifo, 0);
        rq_hmap_del(s->map, old->id);
        entry_free(old);
        rq_ring_pop(&s->fifo);
    }
    *(entry_t **)rq_ring_push(&s->fifo) = e; /* cannot fail: cap slots allocated, one free */
    return e;
}

int rq_store_queued(rq_store_t *s, const char *id, long long ts_ms)
{
    entry_t *e;
    int rc = 0;

    pthread_mutex_lock(&s->lock);
    e = lookup_or_add(s, id);
    if (e != NULL && e->queued_ms == 0)
        e->queued_ms = ts_ms;
    else if (e == NULL && s->cap > 0)
        rc = -1;
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int rq_store_processed(rq_store_t *s, const char *id, const char *reply, size_t len,
                       long long ts_ms)
{
    entry_t *e;
    char *copy;
    int rc = -1;

    if (s->cap == 0)
        return 0;
    copy = malloc(len + 1);
    if (copy == NULL)
        return -1;
    memcpy(copy, reply, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->lock);
    e = lookup_or_add(s, id);
    if (e != NULL) {
        free(e->reply);
        e->reply = copy;
        e->reply_len = len;
        e->processed = 1;
        e->processed_ms = ts_ms;
        copy = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&s->lock);
    free(copy);
    return rc;
}

json_t *rq_store_get(rq_store_t *s, const char *id)
{
    json_t *o = NULL;
    entry_t *e;
    char ts[RQ_ISO8601_LEN + 1];

    pthread_mutex_lock(&s->lock);
    e = rq_hmap_get(s->map, id);
    if (e == NULL)
        goto out;
    o = json_pack("{s:s,s:s}", "message_id", e->id, "status",
                  e->processed ? "processed" : "queued");
    if (o == NULL)
        goto out;
    if (e->queued_ms)
        json_object_set_new(o, "queued_at", json_string(rq_iso8601(e->queued_ms, ts)));
    if (e->processed) {
        json_object_set_new(o, "processed_at", json_string(rq_iso8601(e->processed_ms, ts)));
        json_object_set_new(o, "reply", json_stringn(e->reply, e->reply_len));
    }
out:
    pthread_mutex_unlock(&s->lock);
    return o;
}

size_t rq_store_len(rq_store_t *s)
{
    size_t n;

    pthread_mutex_lock(&s->lock);
    n = rq_ring_len(&s->fifo);
    pthread_mutex_unlock(&s->lock);
    return n;
}
