/* ring.c - the growable ring of fixed-size entries (see ring.h). */
#include "ring.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void rq_ring_init(rq_ring_t *r, size_t entry_size, size_t min_cap, size_t max_cap)
{
    assert(entry_size > 0);
    memset(r, 0, sizeof(*r));
    r->entry_size = entry_size;
    r->min_cap = min_cap ? min_cap : 16;
    r->max_cap = max_cap;
    if (r->max_cap != 0 && r->min_cap > r->max_cap)
        r->min_cap = r->max_cap;
}

void rq_ring_clear(rq_ring_t *r)
{
    free(r->v);
    r->v = NULL;
    r->cap = r->head = r->len = 0;
}

int rq_ring_reserve(rq_ring_t *r, size_t extra)
{
    size_t need, ncap, first;
    unsigned char *nv;

    if (extra > SIZE_MAX - r->len)
        return -1;
    need = r->len + extra;
    if (need <= r->cap)
        return 0;
    if (r->max_cap != 0 && need > r->max_cap)
        return -1;
    ncap = r->cap ? r->cap : r->min_cap;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2)
            return -1;
        ncap *= 2;
    }
    if (r->max_cap != 0 && ncap > r->max_cap)
        ncap = r->max_cap;
    if (ncap > SIZE_MAX / r->entry_size)
        return -1;
    nv = calloc(ncap, r->entry_size);
    if (nv == NULL)
        return -1;
    /* Linearize: the live entries from slot head (wrapping) go to slots 0..len-1. */
    first = r->cap - r->head < r->len ? r->cap - r->head : r->len;
    if (r->len > 0) {
        memcpy(nv, r->v + r->head * r->entry_size, first * r->entry_size);
        memcpy(nv + first * r->entry_size, r->v, (r->len - first) * r->entry_size);
    }
    free(r->v);
    r->v = nv;
    r->cap = ncap;
    r->head = 0;
    return 0;
}

void *rq_ring_push(rq_ring_t *r)
{
    void *slot;

    if (rq_ring_reserve(r, 1) != 0)
        return NULL;
    slot = r->v + ((r->head + r->len) % r->cap) * r->entry_size;
    r->len++;
    return slot;
}

void *rq_ring_at(const rq_ring_t *r, size_t i)
{
    assert(i < r->len);
    return r->v + ((r->head + i) % r->cap) * r->entry_size;
}

void rq_ring_pop(rq_ring_t *r)
{
    assert(r->len > 0);
    r->head = (r->head + 1) % r->cap;
    r->len--;
}

void rq_ring_pop_back(rq_ring_t *r)
{
    assert(r->len > 0);
    r->len--;
}

void rq_ring_reset(rq_ring_t *r)
{
    r->head = r->len = 0;
}

void *rq_ring_slot(const rq_ring_t *r, size_t k)
{
    assert(k < r->cap);
    return r->v + k * r->entry_size;
}
