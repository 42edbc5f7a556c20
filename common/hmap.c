/* hmap.c - string-keyed open-addressing hash map.
 *
 * Linear probing over a power-of-two table; deletion shifts the following entries of the
 * probe run back (no tombstones), so lookups never walk over dead slots and the load factor
 * only counts live entries. Each slot caches its key's hash to make probing and growth cheap.
 */
#include "hmap.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RQ_HMAP_MIN_CAP 8

typedef struct {
    char *key; /* NULL: empty slot */
    void *value;
    uint64_t hash;
} rq_hslot_t;

struct rq_hmap {
    rq_hslot_t *slots;
    size_t cap; /* power of two */
    size_t len;
    int borrowed; /* keys are the caller's (rq_hmap_new_borrowed), never copied nor freed */
};

/* FNV-1a, 64-bit. */
static uint64_t hash_key(const char *key)
{
    uint64_t h = 14695981039346656037ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    /* FNV's low bits mix poorly for short keys; fold the high bits in (we mask the low). */
    h ^= h >> 32;
    return h;
}

/* True when `len` entries exceed 70 % of `cap`. */
static int over_load(size_t len, size_t cap)
{
    return len > cap / 10 * 7 + (cap % 10) * 7 / 10;
}

/* Smallest power-of-two capacity holding `n` entries under the load limit, or 0 on overflow. */
static size_t cap_for(size_t n)
{
    size_t cap = RQ_HMAP_MIN_CAP;
    while (over_load(n, cap)) {
        if (cap > SIZE_MAX / 2 / sizeof(rq_hslot_t))
            return 0;
        cap *= 2;
    }
    return cap;
}

rq_hmap_t *rq_hmap_new(size_t hint)
{
    rq_hmap_t *h = calloc(1, sizeof(*h));
    if (!h)
        goto err;
    h->cap = cap_for(hint);
    if (h->cap == 0)
        goto err;
    h->slots = calloc(h->cap, sizeof(rq_hslot_t));
    if (!h->slots)
        goto err;
    return h;
err:
    free(h);
    return NULL;
}

rq_hmap_t *rq_hmap_new_borrowed(size_t hint)
{
    rq_hmap_t *h = rq_hmap_new(hint);

    if (h)
        h->borrowed = 1;
    return h;
}

void rq_hmap_free(rq_hmap_t *h)
{
    if (!h)
        return;
    for (size_t i = 0; h->borrowed == 0 && i < h->cap; i++)
        free(h->slots[i].key);
    free(h->slots);
    free(h);
}

/* Index of the slot holding key, or of the empty slot where it would go. */
static size_t find_slot(const rq_hmap_t *h, const char *key, uint64_t hash)
{
    size_t mask = h->cap - 1;
    size_t i = (size_t)hash & mask;
    /* A power-of-two table with at least one empty slot: the probe below ends. */
    assert(h->cap >= RQ_HMAP_MIN_CAP && (h->cap & mask) == 0 && h->len < h->cap);
    while (h->slots[i].key) {
        if (h->slots[i].hash == hash && strcmp(h->slots[i].key, key) == 0)
            break;
        i = (i + 1) & mask;
    }
    return i;
}

/* Rehashes into a table of `cap` slots. Returns 0, or -1 (map unchanged) on failure. */
static int resize(rq_hmap_t *h, size_t cap)
{
    assert((cap & (cap - 1)) == 0 && cap > h->len);
    rq_hslot_t *slots = calloc(cap, sizeof(rq_hslot_t));
    if (!slots)
        return -1;
    size_t mask = cap - 1;
    for (size_t i = 0; i < h->cap; i++) {
        if (!h->slots[i].key)
            continue;
        size_t j = (size_t)h->slots[i].hash & mask;
        while (slots[j].key)
            j = (j + 1) & mask;
        slots[j] = h->slots[i];
    }
    free(h->slots);
    h->slots = slots;
    h->cap = cap;
    return 0;
}

int rq_hmap_put(rq_hmap_t *h, const char *key, void *value)
{
    if (!h || !key)
        return -1;
    uint64_t hash = hash_key(key);
    size_t i = find_slot(h, key, hash);
    if (h->slots[i].key) {
        if (h->borrowed)
            h->slots[i].key = (char *)key; /* the caller's newer pointer to the same text */
        h->slots[i].value = value;
        return 0;
    }
    char *copy = h->borrowed ? (char *)key : strdup(key);
    if (!copy)
        goto err;
    if (over_load(h->len + 1, h->cap)) {
        if (h->cap > SIZE_MAX / 2 / sizeof(rq_hslot_t) || resize(h, h->cap * 2) < 0)
            goto err;
        i = find_slot(h, key, hash);
    }
    assert(h->slots[i].key == NULL);
    h->slots[i] = (rq_hslot_t){.key = copy, .value = value, .hash = hash};
    h->len++;
    assert(!over_load(h->len, h->cap));
    return 0;
err:
    if (!h->borrowed)
        free(copy);
    return -1;
}

void *rq_hmap_get(const rq_hmap_t *h, const char *key)
{
    if (!h || !key)
        return NULL;
    size_t i = find_slot(h, key, hash_key(key));
    return h->slots[i].key ? h->slots[i].value : NULL;
}

void *rq_hmap_del(rq_hmap_t *h, const char *key)
{
    if (!h || !key)
        return NULL;
    size_t mask = h->cap - 1;
    size_t i = find_slot(h, key, hash_key(key));
    if (!h->slots[i].key)
        return NULL;
    void *value = h->slots[i].value;
    assert(h->len > 0);
    if (!h->borrowed)
        free(h->slots[i].key);
    h->slots[i].key = NULL;
    h->len--;
    /* Backward shift: move later entries of the run into the hole when their home slot is
     * not after the hole (cyclically), so every entry stays reachable from its home. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!h->slots[j].key)
            break;
        size_t home = (size_t)h->slots[j].hash & mask;
        if (((j - home) & mask) >= ((j - i) & mask)) {
            h->slots[i] = h->slots[j];
            h->slots[j].key = NULL;
            i = j;
        }
    }
    return value;
}

size_t rq_hmap_len(const rq_hmap_t *h)
{
    return h ? h->len : 0;
}

void rq_hmap_each(const rq_hmap_t *h, void (*fn)(const char *key, void *value, void *arg),
                  void *arg)
{
    if (!h || !fn)
        return;
    for (size_t i = 0; i < h->cap; i++) {
        if (h->slots[i].key)
            fn(h->slots[i].key, h->slots[i].value, arg);
    }
}
