/* metrics.h - a thread-safe Prometheus metrics registry (text exposition format 0.0.4).
 *
 * A registry holds metric families (counter, gauge, histogram), each with a fixed list of
 * label names. A family's children (one per set of label values) are created on first use.
 * Updating a child is lock-free (C11 atomics); looking a child up by label values takes the
 * family's mutex, so hot paths should look a child up once and keep the pointer (children
 * live as long as the registry).
 *
 * Ownership: the registry owns families and children; rq_metrics_free() releases all.
 */
#ifndef RQ_METRICS_H
#define RQ_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct rq_metrics rq_metrics_t;
typedef struct rq_metric rq_metric_t; /* a family */
typedef struct rq_series rq_series_t; /* one child of a family */

#define RQ_METRIC_MAX_LABELS 4

/* Default buckets for latencies in seconds: 0.0005 .. 10. */
extern const double rq_metrics_latency_buckets[];
extern const size_t rq_metrics_latency_buckets_len;

/* Creates an empty registry. Returns NULL on allocation failure. */
rq_metrics_t *rq_metrics_new(void);

/* Frees the registry, its families and children. NULL is a no-op. */
void rq_metrics_free(rq_metrics_t *m);

/* Registers a family. `name`, `help` and the label names are copied. `nlabels` may be 0.
 * Returns the family (owned by the registry), or NULL on allocation failure, an invalid
 * name, too many labels, or a name already registered. */
rq_metric_t *rq_metrics_counter(rq_metrics_t *m, const char *name, const char *help, size_t nlabels,
                                const char *const *labels);
rq_metric_t *rq_metrics_gauge(rq_metrics_t *m, const char *name, const char *help, size_t nlabels,
                              const char *const *labels);
/* `buckets` are upper bounds in ascending order (copied; +Inf is implicit). */
rq_metric_t *rq_metrics_histogram(rq_metrics_t *m, const char *name, const char *help,
                                  size_t nlabels, const char *const *labels, const double *buckets,
                                  size_t nbuckets);

/* Returns the child for these label values (exactly the family's label count; values are
 * copied), creating it at zero on first use. With no labels, pass 0/NULL. Returns NULL on
 * allocation failure or a wrong count. Thread-safe. */
rq_series_t *rq_metric_series(rq_metric_t *f, size_t nvalues, const char *const *values);

/* Updates; all thread-safe and lock-free. A NULL series is ignored. */
void rq_series_inc(rq_series_t *s);               /* counter or gauge += 1 */
void rq_series_add(rq_series_t *s, double v);     /* counter (v >= 0) or gauge += v */
void rq_series_set(rq_series_t *s, double v);     /* gauge = v */
void rq_series_observe(rq_series_t *s, double v); /* histogram */
double rq_series_value(const rq_series_t *s);     /* counter/gauge value; histogram count */

/* A collector: called at each render, before any sample is written, to bring the series it
 * owns up to date (rq_series_set/add on children it looked up). Collectors of one registry
 * run one at a time; one must not render or register a collector itself. */
typedef void (*rq_metrics_collect_fn)(void *arg);

/* Adds a collector. The registry owns arg from then on: rq_metrics_free() passes it to
 * arg_free (when not NULL) after the last render. Returns 0, or -1 on allocation failure or a
 * NULL m or fn (arg is then still the caller's). Thread-safe. */
int rq_metrics_add_collector(rq_metrics_t *m, rq_metrics_collect_fn fn, void (*arg_free)(void *),
                             void *arg);

/* Runs the collectors, then renders every family in registration order in the text format
 * 0.0.4 (HELP, TYPE, then samples; histograms as _bucket{le=...} cumulative, _sum, _count;
 * label values escaped).
 * Returns a NUL-terminated buffer the caller frees with free(), or NULL on allocation
 * failure; *len (optional) receives the length. Thread-safe. */
char *rq_metrics_render(rq_metrics_t *m, size_t *len);

#endif
