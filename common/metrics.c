/* metrics.c - Prometheus registry: counters, gauges, histograms; text format 0.0.4.
 *
 * Values are doubles kept as their bit patterns in _Atomic uint64_t and updated with
 * compare-and-swap loops, so updates never take a lock. Histogram buckets are plain atomic
 * integer counts per bucket (not cumulative); rendering sums them up, and reports the total
 * as both the +Inf bucket and _count so a scrape is always self-consistent.
 *
 * Locks: the registry mutex guards the family list (registration, render); each family's
 * mutex guards its children (lookup/creation, and the walk during render). Lock order is
 * registry, then family. Collectors run one at a time under their own mutex, before the
 * render takes the registry mutex (a collector may look children up: collector, then family).
 */
#include "metrics.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hmap.h"

const double rq_metrics_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                             0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t rq_metrics_latency_buckets_len =
    sizeof(rq_metrics_latency_buckets) / sizeof(rq_metrics_latency_buckets[0]);

typedef enum { RQ_KIND_COUNTER, RQ_KIND_GAUGE, RQ_KIND_HISTOGRAM } rq_kind_t;

struct rq_series {
    rq_kind_t kind;
    size_t nbuckets;          /* histogram: finite bounds (a +Inf slot follows) */
    const double *bounds;     /* histogram: the family's bounds */
    _Atomic uint64_t value;   /* double bits: counter/gauge value, histogram sum */
    _Atomic uint64_t count;   /* histogram: number of observations */
    _Atomic uint64_t *bucket; /* histogram: nbuckets + 1 non-cumulative counts */
    char *values[RQ_METRIC_MAX_LABELS];
    rq_series_t *next; /* creation order */
};

struct rq_metric {
    rq_kind_t kind;
    char *name;
    char *help;
    size_t nlabels;
    char *labels[RQ_METRIC_MAX_LABELS];
    double *bounds;
    size_t nbuckets;
    pthread_mutex_t mu;
    rq_hmap_t *index; /* encoded label values -> rq_series_t */
    rq_series_t *head, *tail;
    rq_metric_t *next; /* registration order */
};

typedef struct rq_collector {
    rq_metrics_collect_fn fn;
    void (*arg_free)(void *arg);
    void *arg;
    struct rq_collector *next;
} rq_collector_t;

struct rq_metrics {
    pthread_mutex_t mu;
    rq_hmap_t *names; /* family name -> rq_metric_t */
    rq_metric_t *head, *tail;
    pthread_mutex_t collect_mu; /* serialises the collectors; guards the list */
    rq_collector_t *collectors; /* in the reverse order of registration */
};

/* ---- atomics on doubles ---- */

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, dbits(bitsd(old) + v),
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

/* ---- children ---- */

static void series_free(rq_series_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < RQ_METRIC_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->bucket);
    free(s);
}

static rq_series_t *series_new(const rq_metric_t *f, const char *const *values)
{
    rq_series_t *s = calloc(1, sizeof(*s));
    assert(f->nlabels <= RQ_METRIC_MAX_LABELS); /* family_new refuses more */
    if (!s)
        goto err;
    s->kind = f->kind;
    atomic_init(&s->value, dbits(0.0));
    atomic_init(&s->count, 0);
    if (f->kind == RQ_KIND_HISTOGRAM) {
        s->nbuckets = f->nbuckets;
        s->bounds = f->bounds;
        s->bucket = malloc((f->nbuckets + 1) * sizeof(*s->bucket));
        if (!s->bucket)
            goto err;
        for (size_t i = 0; i <= f->nbuckets; i++)
            atomic_init(&s->bucket[i], 0);
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        s->values[i] = strdup(values[i]);
        if (!s->values[i])
            goto err;
    }
    return s;
err:
    series_free(s);
    return NULL;
}

/* Encodes label values as "<len>:<value>" pieces, an unambiguous hash-map key. */
static char *series_key(size_t n, const char *const *values)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(values[i]) + 24;
    char *key = malloc(cap);
    if (!key)
        return NULL;
    char *p = key;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(values[i]);
        p += snprintf(p, cap - (size_t)(p - key), "%zu:", l);
        memcpy(p, values[i], l);
        p += l;
    }
    assert((size_t)(p - key) < cap);
    *p = '\0';
    return key;
}

rq_series_t *rq_metric_series(rq_metric_t *f, size_t nvalues, const char *const *values)
{
    rq_series_t *s = NULL;
    char *key = NULL;
    if (!f || nvalues != f->nlabels || (nvalues > 0 && !values))
        return NULL;
    for (size_t i = 0; i < nvalues; i++) {
        if (!values[i])
            return NULL;
    }
    key = series_key(nvalues, values);
    if (!key)
        return NULL;
    pthread_mutex_lock(&f->mu);
    s = rq_hmap_get(f->index, key);
    if (s)
        goto out;
    s = series_new(f, values);
    if (!s)
        goto out;
    if (rq_hmap_put(f->index, key, s) < 0) {
        series_free(s);
        s = NULL;
        goto out;
    }
    if (f->tail)
        f->tail->next = s;
    else
        f->head = s;
    f->tail = s;
out:
    pthread_mutex_unlock(&f->mu);
    free(key);
    return s;
}

/* ---- updates ---- */

void rq_series_inc(rq_series_t *s)
{
    rq_series_add(s, 1.0);
}

void rq_series_add(rq_series_t *s, double v)
{
    if (!s || s->kind == RQ_KIND_HISTOGRAM)
        return;
    if (s->kind == RQ_KIND_COUNTER && !(v >= 0)) /* counters only go up; NaN is dropped */
        return;
    atomic_add_double(&s->value, v);
}

void rq_series_set(rq_series_t *s, double v)
{
    if (!s || s->kind != RQ_KIND_GAUGE)
        return;
    atomic_store_explicit(&s->value, dbits(v), memory_order_relaxed);
}

void rq_series_observe(rq_series_t *s, double v)
{
    if (!s || s->kind != RQ_KIND_HISTOGRAM)
        return;
    size_t i = 0;
    while (i < s->nbuckets && !(v <= s->bounds[i])) /* NaN lands in +Inf */
        i++;
    assert(s->bucket != NULL && i <= s->nbuckets); /* nbuckets + 1 slots */
    atomic_fetch_add_explicit(&s->bucket[i], 1, memory_order_relaxed);
    atomic_add_double(&s->value, v);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

double rq_series_value(const rq_series_t *s)
{
    if (!s)
        return 0.0;
    if (s->kind == RQ_KIND_HISTOGRAM)
        return (double)atomic_load_explicit(&s->count, memory_order_relaxed);
    return bitsd(atomic_load_explicit(&s->value, memory_order_relaxed));
}

/* ---- registry ---- */

rq_metrics_t *rq_metrics_new(void)
{
    rq_metrics_t *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->names = rq_hmap_new(0);
    if (!m->names) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->collect_mu, NULL);
    return m;
}

static void family_free(rq_metric_t *f)
{
    if (!f)
        return;
    rq_series_t *s = f->head;
    while (s) {
        rq_series_t *next = s->next;
        series_free(s);
        s = next;
    }
    rq_hmap_free(f->index);
    pthread_mutex_destroy(&f->mu);
    for (size_t i = 0; i < RQ_METRIC_MAX_LABELS; i++)
        free(f->labels[i]);
    free(f->bounds);
    free(f->help);
    free(f->name);
    free(f);
}

void rq_metrics_free(rq_metrics_t *m)
{
    if (!m)
        return;
    while (m->collectors != NULL) { /* first: their state may name the families' series */
        rq_collector_t *c = m->collectors;
        m->collectors = c->next;
        if (c->arg_free != NULL)
            c->arg_free(c->arg);
        free(c);
    }
    rq_metric_t *f = m->head;
    while (f) {
        rq_metric_t *next = f->next;
        family_free(f);
        f = next;
    }
    rq_hmap_free(m->names);
    pthread_mutex_destroy(&m->collect_mu);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int rq_metrics_add_collector(rq_metrics_t *m, rq_metrics_collect_fn fn, void (*arg_free)(void *),
                             void *arg)
{
    rq_collector_t *c = m != NULL && fn != NULL ? calloc(1, sizeof(*c)) : NULL;

    if (c == NULL)
        return -1;
    c->fn = fn;
    c->arg_free = arg_free;
    c->arg = arg;
    pthread_mutex_lock(&m->collect_mu);
    c->next = m->collectors;
    m->collectors = c;
    pthread_mutex_unlock(&m->collect_mu);
    return 0;
}

/* Runs every collector once, one at a time. */
static void run_collectors(rq_metrics_t *m)
{
    pthread_mutex_lock(&m->collect_mu);
    for (rq_collector_t *c = m->collectors; c != NULL; c = c->next)
        c->fn(c->arg);
    pthread_mutex_unlock(&m->collect_mu);
}

static int is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* */
static int valid_metric_name(const char *name)
{
    if (!name || !*name || is_digit(name[0]))
        return 0;
    for (const char *p = name; *p; p++) {
        if (!is_alpha_(*p) && !is_digit(*p) && *p != ':')
            return 0;
    }
    return 1;
}

/* [a-zA-Z_][a-zA-Z0-9_]*, not reserved ("__" prefix), not "le" on a histogram. */
static int valid_label_name(const char *name, rq_kind_t kind)
{
    if (!name || !*name || is_digit(name[0]))
        return 0;
    if (name[0] == '_' && name[1] == '_')
        return 0;
    if (kind == RQ_KIND_HISTOGRAM && strcmp(name, "le") == 0)
        return 0;
    for (const char *p = name; *p; p++) {
        if (!is_alpha_(*p) && !is_digit(*p))
            return 0;
    }
    return 1;
}

static rq_metric_t *family_new(rq_kind_t kind, const char *name, const char *help, size_t nlabels,
                               const char *const *labels, const double *buckets, size_t nbuckets)
{
    if (!valid_metric_name(name) || nlabels > RQ_METRIC_MAX_LABELS || (nlabels && !labels))
        return NULL;
    for (size_t i = 0; i < nlabels; i++) {
        if (!valid_label_name(labels[i], kind))
            return NULL;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(labels[i], labels[j]) == 0)
                return NULL;
        }
    }
    if (kind == RQ_KIND_HISTOGRAM) {
        if (nbuckets && !buckets)
            return NULL;
        if (nbuckets && isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
            nbuckets--; /* an explicit +Inf is the implicit one */
        for (size_t i = 0; i < nbuckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1])))
                return NULL;
        }
    }

    rq_metric_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    pthread_mutex_init(&f->mu, NULL);
    f->kind = kind;
    f->nlabels = nlabels;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    f->index = rq_hmap_new(0);
    if (!f->name || !f->help || !f->index)
        goto err;
    for (size_t i = 0; i < nlabels; i++) {
        f->labels[i] = strdup(labels[i]);
        if (!f->labels[i])
            goto err;
    }
    if (kind == RQ_KIND_HISTOGRAM && nbuckets) {
        f->bounds = malloc(nbuckets * sizeof(double));
        if (!f->bounds)
            goto err;
        memcpy(f->bounds, buckets, nbuckets * sizeof(double));
        f->nbuckets = nbuckets;
    }
    return f;
err:
    family_free(f);
    return NULL;
}

static rq_metric_t *family_register(rq_metrics_t *m, rq_kind_t kind, const char *name,
                                    const char *help, size_t nlabels, const char *const *labels,
                                    const double *buckets, size_t nbuckets)
{
    if (!m)
        return NULL;
    rq_metric_t *f = family_new(kind, name, help, nlabels, labels, buckets, nbuckets);
    if (!f)
        return NULL;
    /* A family without labels has exactly one child: create it now so it is exported (as 0)
     * from the start, as Prometheus client libraries do. */
    if (nlabels == 0 && !rq_metric_series(f, 0, NULL))
        goto err;
    pthread_mutex_lock(&m->mu);
    if (rq_hmap_get(m->names, name) || rq_hmap_put(m->names, name, f) < 0) {
        pthread_mutex_unlock(&m->mu);
        goto err;
    }
    if (m->tail)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    pthread_mutex_unlock(&m->mu);
    return f;
err:
    family_free(f);
    return NULL;
}

rq_metric_t *rq_metrics_counter(rq_metrics_t *m, const char *name, const char *help, size_t nlabels,
                                const char *const *labels)
{
    return family_register(m, RQ_KIND_COUNTER, name, help, nlabels, labels, NULL, 0);
}

rq_metric_t *rq_metrics_gauge(rq_metrics_t *m, const char *name, const char *help, size_t nlabels,
                              const char *const *labels)
{
    return family_register(m, RQ_KIND_GAUGE, name, help, nlabels, labels, NULL, 0);
}

rq_metric_t *rq_metrics_histogram(rq_metrics_t *m, const char *name, const char *help,
                                  size_t nlabels, const char *const *labels, const double *buckets,
                                  size_t nbuckets)
{
    return family_register(m, RQ_KIND_HISTOGRAM, name, help, nlabels, labels, buckets, nbuckets);
}

/* ---- rendering ---- */

typedef struct {
    char *buf;
    size_t len;
    size_t cap;
    int oom;
} rq_sbuf_t;

static int sb_reserve(rq_sbuf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->buf, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->buf = p;
    b->cap = cap;
    return 0;
}

static void sb_put(rq_sbuf_t *b, const char *s, size_t n)
{
    if (sb_reserve(b, n) < 0)
        return;
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    assert(b->len < b->cap); /* sb_reserve kept room for the NUL */
    b->buf[b->len] = '\0';
}

static void sb_puts(rq_sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Appends s with backslash and newline escaped, and '"' too when `quote` is set. */
static void sb_escaped(rq_sbuf_t *b, const char *s, int quote)
{
    for (const char *p = s; *p; p++) {
        if (*p == '\\')
            sb_put(b, "\\\\", 2);
        else if (*p == '\n')
            sb_put(b, "\\n", 2);
        else if (quote && *p == '"')
            sb_put(b, "\\\"", 2);
        else
            sb_put(b, p, 1);
    }
}

/* Formats v as Prometheus reads it: NaN, +Inf, -Inf; integers without exponent when exact;
 * otherwise the shortest %.Ng (N <= 17, %.17g always round-trips) that reads back as the
 * same double, so 0.005 prints as "0.005" and not "0.0050000000000000001". */
static void format_value(char *out, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == 0) {
        snprintf(out, size, "0"); /* also -0 */
    } else if (fabs(v) < 9007199254740992.0 && v == floor(v)) {
        snprintf(out, size, "%.0f", v);
    } else {
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(out, size, "%.*g", prec, v);
            if (strtod(out, NULL) == v)
                break;
        }
    }
}

static void sb_value(rq_sbuf_t *b, double v)
{
    char num[40];
    format_value(num, sizeof(num), v);
    sb_puts(b, num);
}

/* Writes `{l1="v1",...[,le="x"]}` (nothing when there are no labels and no le). */
static void sb_labels(rq_sbuf_t *b, const rq_metric_t *f, const rq_series_t *s, const char *le)
{
    if (f->nlabels == 0 && !le)
        return;
    sb_put(b, "{", 1);
    for (size_t i = 0; i < f->nlabels; i++) {
        if (i > 0)
            sb_put(b, ",", 1);
        sb_puts(b, f->labels[i]);
        sb_put(b, "=\"", 2);
        sb_escaped(b, s->values[i], /*quote=*/1);
        sb_put(b, "\"", 1);
    }
    if (le) {
        if (f->nlabels > 0)
            sb_put(b, ",", 1);
        sb_put(b, "le=\"", 4);
        sb_puts(b, le);
        sb_put(b, "\"", 1);
    }
    sb_put(b, "}", 1);
}

/* One sample line: name[suffix]{labels} value */
static void sb_sample(rq_sbuf_t *b, const rq_metric_t *f, const char *suffix, const rq_series_t *s,
                      const char *le, double v)
{
    sb_puts(b, f->name);
    sb_puts(b, suffix);
    sb_labels(b, f, s, le);
    sb_put(b, " ", 1);
    sb_value(b, v);
    sb_put(b, "\n", 1);
}

static void render_histogram(rq_sbuf_t *b, const rq_metric_t *f, const rq_series_t *s)
{
    char le[40];
    uint64_t cum = 0;
    assert(s->kind == RQ_KIND_HISTOGRAM && s->nbuckets == f->nbuckets && s->bucket != NULL);
    for (size_t i = 0; i < s->nbuckets; i++) {
        cum += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
        format_value(le, sizeof(le), s->bounds[i]);
        sb_sample(b, f, "_bucket", s, le, (double)cum);
    }
    cum += atomic_load_explicit(&s->bucket[s->nbuckets], memory_order_relaxed);
    sb_sample(b, f, "_bucket", s, "+Inf", (double)cum);
    sb_sample(b, f, "_sum", s, NULL, bitsd(atomic_load_explicit(&s->value, memory_order_relaxed)));
    sb_sample(b, f, "_count", s, NULL, (double)cum);
}

static const char *kind_name(rq_kind_t k)
{
    switch (k) {
    case RQ_KIND_COUNTER:
        return "counter";
    case RQ_KIND_GAUGE:
        return "gauge";
    default:
        return "histogram";
    }
}

char *rq_metrics_render(rq_metrics_t *m, size_t *len)
{
    rq_sbuf_t b = {0};
    if (!m)
        return NULL;
    run_collectors(m);
    sb_reserve(&b, 0); /* an empty registry still yields "" */
    pthread_mutex_lock(&m->mu);
    for (rq_metric_t *f = m->head; f; f = f->next) {
        sb_puts(&b, "# HELP ");
        sb_puts(&b, f->name);
        sb_put(&b, " ", 1);
        sb_escaped(&b, f->help, /*quote=*/0);
        sb_puts(&b, "\n# TYPE ");
        sb_puts(&b, f->name);
        sb_put(&b, " ", 1);
        sb_puts(&b, kind_name(f->kind));
        sb_put(&b, "\n", 1);
        pthread_mutex_lock(&f->mu);
        for (const rq_series_t *s = f->head; s; s = s->next) {
            if (f->kind == RQ_KIND_HISTOGRAM)
                render_histogram(&b, f, s);
            else
                sb_sample(&b, f, "", s, NULL, rq_series_value(s));
        }
        pthread_mutex_unlock(&f->mu);
    }
    pthread_mutex_unlock(&m->mu);
    if (b.oom) {
        free(b.buf);
        return NULL;
    }
    b.buf[b.len] = '\0';
    if (len)
        *len = b.len;
    return b.buf;
}
