/* ackwin.c - settled delivery tags of a channel above its lowest unsettled one (a bit ring). */
#include "ackwin.h"

#include <stdlib.h>
#include <string.h>

struct rq_ackwin {
    uint64_t *bits; /* bit (t % cap) set: tag t settled, for low <= t < low + cap */
    size_t cap;     /* tags the ring covers, a multiple of 64 */
    uint64_t low;   /* the lowest tag not settled */
};

rq_ackwin_t *rq_ackwin_new(size_t cap)
{
    rq_ackwin_t *w = calloc(1, sizeof(*w));

    if (w == NULL)
        return NULL;
    w->cap = cap < 64 ? 64 : (cap + 63) / 64 * 64;
    w->bits = calloc(w->cap / 64, sizeof(*w->bits));
    if (w->bits == NULL) {
        free(w);
        return NULL;
    }
    w->low = 1;
    return w;
}

void rq_ackwin_free(rq_ackwin_t *w)
{
    if (w == NULL)
        return;
    free(w->bits);
    free(w);
}

static void clear(rq_ackwin_t *w, uint64_t low)
{
    memset(w->bits, 0, w->cap / 64 * sizeof(*w->bits));
    w->low = low;
}

void rq_ackwin_reset(rq_ackwin_t *w)
{
    clear(w, 1);
}

static int bit(const rq_ackwin_t *w, uint64_t t)
{
    size_t i = (size_t)(t % w->cap);

    return (int)((w->bits[i / 64] >> (i % 64)) & 1u);
}

static void set_bit(rq_ackwin_t *w, uint64_t t, int on)
{
    size_t i = (size_t)(t % w->cap);
    uint64_t m = (uint64_t)1 << (i % 64);

    if (on)
        w->bits[i / 64] |= m;
    else
        w->bits[i / 64] &= ~m;
}

/* Moves low past the settled tags at it; each tag is passed once: amortised O(1). */
static void advance(rq_ackwin_t *w)
{
    while (bit(w, w->low)) {
        set_bit(w, w->low, 0);
        w->low++;
    }
}

int rq_ackwin_settle(rq_ackwin_t *w, uint64_t tag)
{
    if (tag < w->low)
        return 1;
    if (tag - w->low >= w->cap)
        return 0;
    set_bit(w, tag, 1);
    advance(w);
    return 1;
}

void rq_ackwin_skip(rq_ackwin_t *w, uint64_t next)
{
    if (next <= w->low)
        return;
    if (next - w->low >= w->cap) {
        clear(w, next);
        return;
    }
    for (; w->low < next; w->low++)
        set_bit(w, w->low, 0);
    advance(w);
}

uint64_t rq_ackwin_low(const rq_ackwin_t *w)
{
    return w->low;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

size_t rq_ackwin_plan(rq_ackwin_t *w, uint64_t *tags, size_t n)
{
    size_t k = 0;

    if (n == 0)
        return 0;
    qsort(tags, n, sizeof(*tags), cmp_u64);
    for (size_t i = 0; i < n; i++)
        (void)rq_ackwin_settle(w, tags[i]);
    while (k < n && tags[k] < w->low) /* settled with every tag below them: one frame */
        k++;
    return k;
}
