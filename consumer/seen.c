/* seen.c - range sets per source file and a bounded id-hash window. */
#include "seen.h"

#include <stdlib.h>
#include <string.h>

typedef struct range {
    int64_t start, end;
} range_t;

typedef struct file_ranges {
    char *file_id;
    range_t *r; /* sorted by start, disjoint, never adjacent */
    size_t n, cap;
} file_ranges_t;

struct rq_seen {
    /* files: a small array in insertion order (few identities: one per rotation) */
    file_ranges_t *files;
    size_t nfiles, max_files;
    /* ids: open-addressing set of non-zero hashes + FIFO ring for eviction */
    uint64_t *set;
    size_t set_cap; /* power of two, >= 2 * window */
    uint64_t *ring;
    size_t window, ring_head, ring_len;
};

uint64_t rq_seen_hash(const char *id, size_t len)
{
    /* FNV-1a 64, then a final avalanche (splitmix64) so low bits index well. */
    uint64_t h = 1469598103934665603ULL;

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h ? h : 1; /* 0 marks an empty slot */
}

rq_seen_t *rq_seen_new(size_t id_window, size_t max_files)
{
    rq_seen_t *s = calloc(1, sizeof(*s));

    if (s == NULL)
        return NULL;
    s->window = id_window ? id_window : 1;
    s->max_files = max_files ? max_files : 1;
    s->set_cap = 16;
    while (s->set_cap < s->window * 2)
        s->set_cap *= 2;
    s->set = calloc(s->set_cap, sizeof(*s->set));
    s->ring = calloc(s->window, sizeof(*s->ring));
    if (s->set == NULL || s->ring == NULL) {
        rq_seen_free(s);
        return NULL;
    }
    return s;
}

void rq_seen_free(rq_seen_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nfiles; i++) {
        free(s->files[i].file_id);
        free(s->files[i].r);
    }
    free(s->files);
    free(s->set);
    free(s->ring);
    free(s);
}

/* ---- file ranges ----------------------------------------------------------------------- */

static file_ranges_t *find_file(const rq_seen_t *s, const char *file_id)
{
    /* newest first: the file being tailed now is the last one added */
    for (size_t i = s->nfiles; i-- > 0;)
        if (strcmp(s->files[i].file_id, file_id) == 0)
            return &s->files[i];
    return NULL;
}

/* Index of the last range with start <= x, or -1. */
static long last_start_leq(const file_ranges_t *f, int64_t x)
{
    long lo = 0, hi = (long)f->n - 1, ans = -1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        if (f->r[mid].start <= x) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans;
}

int rq_seen_has_range(const rq_seen_t *s, const char *file_id, int64_t start)
{
    const file_ranges_t *f = find_file(s, file_id);
    long i;

    if (f == NULL)
        return 0;
    i = last_start_leq(f, start);
    return i >= 0 && start < f->r[i].end;
}

int rq_seen_each_gap(const rq_seen_t *s, const char *file_id, int64_t start, int64_t end,
                     int (*fn)(int64_t gap_start, int64_t gap_end, void *arg), void *arg)
{
    const file_ranges_t *f;
    int64_t pos = start;
    size_t j;
    long i;
    int rc;

    if (end <= start)
        return 0;
    f = find_file(s, file_id);
    if (f == NULL)
        return fn(start, end, arg);
    /* first range that could cover or follow `start`: the last one starting at or before it */
    i = last_start_leq(f, start);
    j = i < 0 ? 0 : (size_t)i;
    for (; j < f->n && pos < end; j++) {
        if (f->r[j].end <= pos)
            continue;
        if (f->r[j].start >= end)
            break;
        if (f->r[j].start > pos && (rc = fn(pos, f->r[j].start, arg)) != 0)
            return rc;
        pos = f->r[j].end;
    }
    if (pos < end)
        return fn(pos, end, arg);
    return 0;
}

int rq_seen_add_range(rq_seen_t *s, const char *file_id, int64_t start, int64_t end)
{
    file_ranges_t *f = find_file(s, file_id);
    long i;
    size_t lo, hi;

    if (end <= start)
        return 0;
    if (f == NULL) {
        if (s->nfiles == s->max_files) {
            /* drop the oldest identity: a file rotated away long ago */
            free(s->files[0].file_id);
            free(s->files[0].r);
            memmove(&s->files[0], &s->files[1], (s->nfiles - 1) * sizeof(*s->files));
            s->nfiles--;
        } else {
            file_ranges_t *nf = realloc(s->files, (s->nfiles + 1) * sizeof(*nf));
            if (nf == NULL)
                return -1;
            s->files = nf;
        }
        f = &s->files[s->nfiles];
        memset(f, 0, sizeof(*f));
        f->file_id = strdup(file_id);
        if (f->file_id == NULL)
            return -1;
        s->nfiles++;
    }
    /* Ranges [lo, hi) overlap or touch [start, end): merge them into one. */
    i = last_start_leq(f, start);
    lo = (i >= 0 && f->r[i].end >= start) ? (size_t)i : (size_t)(i + 1);
    hi = lo;
    while (hi < f->n && f->r[hi].start <= end)
        hi++;
    if (hi > lo) {
        if (f->r[lo].start < start)
            start = f->r[lo].start;
        if (f->r[hi - 1].end > end)
            end = f->r[hi - 1].end;
        f->r[lo].start = start;
        f->r[lo].end = end;
        memmove(&f->r[lo + 1], &f->r[hi], (f->n - hi) * sizeof(*f->r));
        f->n -= hi - lo - 1;
        return 0;
    }
    if (f->n == f->cap) {
        size_t ncap = f->cap ? f->cap * 2 : 4;
        range_t *nr = realloc(f->r, ncap * sizeof(*nr));
        if (nr == NULL)
            return -1;
        f->r = nr;
        f->cap = ncap;
    }
    memmove(&f->r[lo + 1], &f->r[lo], (f->n - lo) * sizeof(*f->r));
    f->r[lo].start = start;
    f->r[lo].end = end;
    f->n++;
    return 0;
}

/* ---- id hashes ------------------------------------------------------------------------- */

static size_t slot_of(const rq_seen_t *s, uint64_t h)
{
    size_t i = (size_t)h & (s->set_cap - 1);

    while (s->set[i] != 0 && s->set[i] != h)
        i = (i + 1) & (s->set_cap - 1);
    return i;
}

static void set_remove(rq_seen_t *s, uint64_t h)
{
    size_t i = slot_of(s, h), j;

    if (s->set[i] == 0)
        return;
    s->set[i] = 0;
    /* backward-shift deletion keeps probe chains intact */
    j = i;
    for (;;) {
        size_t k;
        j = (j + 1) & (s->set_cap - 1);
        if (s->set[j] == 0)
            return;
        k = (size_t)s->set[j] & (s->set_cap - 1);
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            s->set[i] = s->set[j];
            s->set[j] = 0;
            i = j;
        }
    }
}

int rq_seen_add_hash(rq_seen_t *s, uint64_t h)
{
    size_t i = slot_of(s, h);

    if (s->set[i] == h)
        return 0;
    if (s->ring_len == s->window) {
        set_remove(s, s->ring[s->ring_head]);
        s->ring_head = (s->ring_head + 1) % s->window;
        s->ring_len--;
        i = slot_of(s, h);
    }
    s->set[i] = h;
    s->ring[(s->ring_head + s->ring_len) % s->window] = h;
    s->ring_len++;
    return 0;
}

int rq_seen_has_id(const rq_seen_t *s, const char *id, size_t len)
{
    uint64_t h = rq_seen_hash(id, len);

    return s->set[slot_of(s, h)] == h;
}

int rq_seen_add_id(rq_seen_t *s, const char *id, size_t len)
{
    return rq_seen_add_hash(s, rq_seen_hash(id, len));
}

void rq_seen_each(const rq_seen_t *s,
                  void (*fn)(const char *file_id, int64_t start, int64_t end, uint64_t hash,
                             void *arg),
                  void *arg)
{
    for (size_t i = 0; i < s->nfiles; i++)
        for (size_t j = 0; j < s->files[i].n; j++)
            fn(s->files[i].file_id, s->files[i].r[j].start, s->files[i].r[j].end, 0, arg);
    for (size_t i = 0; i < s->ring_len; i++)
        fn(NULL, 0, 0, s->ring[(s->ring_head + i) % s->window], arg);
}

size_t rq_seen_files(const rq_seen_t *s)
{
    return s->nfiles;
}

size_t rq_seen_ranges(const rq_seen_t *s)
{
    size_t n = 0;

    for (size_t i = 0; i < s->nfiles; i++)
        n += s->files[i].n;
    return n;
}

size_t rq_seen_ids(const rq_seen_t *s)
{
    return s->ring_len;
}
