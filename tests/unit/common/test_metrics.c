/* Unit tests for common/metrics.c: exposition text, validation, concurrency. */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

TestSuite(metrics, .timeout = 60);

static const char *const method_path[] = {"method", "path"};
static const char *const route[] = {"route"};

Test(metrics, render_exact)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    rq_metric_t *reqs = rq_metrics_counter(m, "rq_requests_total",
                                           "Requests handled.\nBy method \\ path.", 2, method_path);
    cr_assert_not_null(reqs);
    const char *v1[] = {"GET", "/a\"b\\c\nd"};
    rq_series_t *s1 = rq_metric_series(reqs, 2, v1);
    cr_assert_not_null(s1);
    rq_series_inc(s1);
    rq_series_inc(s1);
    rq_series_inc(s1);
    const char *v2[] = {"POST", "/x"};
    rq_series_t *s2 = rq_metric_series(reqs, 2, v2);
    cr_assert_not_null(s2);
    rq_series_add(s2, 2.5);

    rq_metric_t *infl = rq_metrics_gauge(m, "rq_inflight", "In-flight requests.", 0, NULL);
    cr_assert_not_null(infl);
    rq_series_set(rq_metric_series(infl, 0, NULL), -4);

    const double b[] = {0.005, 0.25, 1};
    rq_metric_t *lat = rq_metrics_histogram(m, "rq_latency_seconds", "Latency.", 1, route, b, 3);
    cr_assert_not_null(lat);
    const char *r1[] = {"r1"};
    rq_series_t *h1 = rq_metric_series(lat, 1, r1);
    rq_series_observe(h1, 0.00390625); /* <= 0.005 */
    rq_series_observe(h1, 0.25);       /* bounds are inclusive */
    rq_series_observe(h1, 0.5);
    rq_series_observe(h1, 4); /* only +Inf */
    const char *r2[] = {"r2"};
    cr_assert_not_null(rq_metric_series(lat, 1, r2));

    const double b2[] = {0.5};
    cr_assert_not_null(rq_metrics_histogram(m, "rq_plain_seconds", "No labels.", 0, NULL, b2, 1));
    cr_assert_not_null(rq_metrics_counter(m, "rq_up_total", "", 0, NULL));
    cr_assert_not_null(rq_metrics_counter(m, "rq_unused_total", "Never used.", 1, route));

    const char *want = "# HELP rq_requests_total Requests handled.\\nBy method \\\\ path.\n"
                       "# TYPE rq_requests_total counter\n"
                       "rq_requests_total{method=\"GET\",path=\"/a\\\"b\\\\c\\nd\"} 3\n"
                       "rq_requests_total{method=\"POST\",path=\"/x\"} 2.5\n"
                       "# HELP rq_inflight In-flight requests.\n"
                       "# TYPE rq_inflight gauge\n"
                       "rq_inflight -4\n"
                       "# HELP rq_latency_seconds Latency.\n"
                       "# TYPE rq_latency_seconds histogram\n"
                       "rq_latency_seconds_bucket{route=\"r1\",le=\"0.005\"} 1\n"
                       "rq_latency_seconds_bucket{route=\"r1\",le=\"0.25\"} 2\n"
                       "rq_latency_seconds_bucket{route=\"r1\",le=\"1\"} 3\n"
                       "rq_latency_seconds_bucket{route=\"r1\",le=\"+Inf\"} 4\n"
                       "rq_latency_seconds_sum{route=\"r1\"} 4.75390625\n"
                       "rq_latency_seconds_count{route=\"r1\"} 4\n"
                       "rq_latency_seconds_bucket{route=\"r2\",le=\"0.005\"} 0\n"
                       "rq_latency_seconds_bucket{route=\"r2\",le=\"0.25\"} 0\n"
                       "rq_latency_seconds_bucket{route=\"r2\",le=\"1\"} 0\n"
                       "rq_latency_seconds_bucket{route=\"r2\",le=\"+Inf\"} 0\n"
                       "rq_latency_seconds_sum{route=\"r2\"} 0\n"
                       "rq_latency_seconds_count{route=\"r2\"} 0\n"
                       "# HELP rq_plain_seconds No labels.\n"
                       "# TYPE rq_plain_seconds histogram\n"
                       "rq_plain_seconds_bucket{le=\"0.5\"} 0\n"
                       "rq_plain_seconds_bucket{le=\"+Inf\"} 0\n"
                       "rq_plain_seconds_sum 0\n"
                       "rq_plain_seconds_count 0\n"
                       "# HELP rq_up_total \n"
                       "# TYPE rq_up_total counter\n"
                       "rq_up_total 0\n"
                       "# HELP rq_unused_total Never used.\n"
                       "# TYPE rq_unused_total counter\n";
    size_t len = 0;
    char *got = rq_metrics_render(m, &len);
    cr_assert_not_null(got);
    cr_expect_str_eq(got, want);
    cr_expect_eq(len, strlen(got));
    free(got);

    cr_expect_eq(rq_series_value(s1), 3);
    cr_expect_eq(rq_series_value(s2), 2.5);
    cr_expect_eq(rq_series_value(h1), 4); /* histogram: count */
    rq_metrics_free(m);
}

Test(metrics, empty_registry_renders_empty)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    size_t len = 99;
    char *got = rq_metrics_render(m, &len);
    cr_assert_not_null(got);
    cr_expect_str_eq(got, "");
    cr_expect_eq(len, 0);
    free(got);
    rq_metrics_free(m);
    rq_metrics_free(NULL);
}

/* Renders a lone gauge set to v and returns its value text. */
static void gauge_text(double v, char *out, size_t n)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    rq_metric_t *g = rq_metrics_gauge(m, "g", "h", 0, NULL);
    cr_assert_not_null(g);
    rq_series_set(rq_metric_series(g, 0, NULL), v);
    char *txt = rq_metrics_render(m, NULL);
    cr_assert_not_null(txt);
    const char *line = strstr(txt, "\ng ");
    cr_assert_not_null(line, "%s", txt);
    line += 3;
    size_t l = strcspn(line, "\n");
    cr_assert_lt(l, n);
    memcpy(out, line, l);
    out[l] = '\0';
    free(txt);
    rq_metrics_free(m);
}

Test(metrics, number_formatting)
{
    static const struct {
        double v;
        const char *want;
    } cases[] = {
        {0, "0"},
        {-0.0, "0"},
        {3, "3"},
        {-4, "-4"},
        {2.5, "2.5"},
        {0.1, "0.1"},
        {0.005, "0.005"},
        {1.0 / 3.0, "0.3333333333333333"},
        {0.1 + 0.2, "0.30000000000000004"},
        {123456789.125, "123456789.125"},
        {1e15, "1000000000000000"},
        {9007199254740991.0, "9007199254740991"}, /* 2^53 - 1: integer, no exponent */
        {1e20, "1e+20"},
        {1e-7, "1e-07"},
        {1.7976931348623157e308, "1.7976931348623157e+308"},
        {5e-324, "5e-324"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
        {NAN, "NaN"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char got[64];
        gauge_text(cases[i].v, got, sizeof(got));
        cr_expect_str_eq(got, cases[i].want, "case %zu", i);
    }
}

Test(metrics, update_semantics)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    rq_series_t *c = rq_metric_series(rq_metrics_counter(m, "c_total", "c", 0, NULL), 0, NULL);
    rq_series_t *g = rq_metric_series(rq_metrics_gauge(m, "g", "g", 0, NULL), 0, NULL);
    const double b[] = {1, 2};
    rq_series_t *h = rq_metric_series(rq_metrics_histogram(m, "h", "h", 0, NULL, b, 2), 0, NULL);
    cr_assert(c && g && h);

    rq_series_inc(c);
    rq_series_add(c, 0.5);
    rq_series_add(c, -3);  /* counters never go down: ignored */
    rq_series_add(c, NAN); /* ignored */
    rq_series_set(c, 100); /* set is for gauges: ignored */
    rq_series_observe(c, 1);
    cr_expect_eq(rq_series_value(c), 1.5);

    rq_series_set(g, 10);
    rq_series_inc(g);
    rq_series_add(g, -2.5);
    rq_series_observe(g, 1);
    cr_expect_eq(rq_series_value(g), 8.5);

    rq_series_inc(h); /* ignored on histograms */
    rq_series_set(h, 5);
    rq_series_observe(h, NAN); /* counted in +Inf only */
    rq_series_observe(h, 2);
    cr_expect_eq(rq_series_value(h), 2);

    rq_series_inc(NULL);
    rq_series_add(NULL, 1);
    rq_series_set(NULL, 1);
    rq_series_observe(NULL, 1);
    cr_expect_eq(rq_series_value(NULL), 0);

    char *txt = rq_metrics_render(m, NULL);
    cr_assert_not_null(txt);
    cr_expect(strstr(txt, "h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
                          "h_sum NaN\nh_count 2\n") != NULL,
              "%s", txt);
    free(txt);
    rq_metrics_free(m);
}

Test(metrics, series_identity_and_counts)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    const char *const ab[] = {"a", "b"};
    rq_metric_t *f = rq_metrics_counter(m, "x_total", "x", 2, ab);
    cr_assert_not_null(f);
    const char *v1[] = {"a", "bc"};
    const char *v2[] = {"ab", "c"}; /* same concatenation, different label set */
    const char *v3[] = {"", ""};
    rq_series_t *s1 = rq_metric_series(f, 2, v1);
    rq_series_t *s2 = rq_metric_series(f, 2, v2);
    rq_series_t *s3 = rq_metric_series(f, 2, v3);
    cr_assert(s1 && s2 && s3);
    cr_expect_neq(s1, s2);
    cr_expect_neq(s1, s3);
    char buf[8];
    strcpy(buf, "a"); /* values are copied: a fresh buffer finds the same child */
    const char *v1b[] = {buf, "bc"};
    cr_expect_eq(rq_metric_series(f, 2, v1b), s1);
    strcpy(buf, "zz");
    cr_expect_eq(rq_metric_series(f, 2, v2), s2);

    cr_expect_null(rq_metric_series(f, 1, v1));   /* wrong count */
    cr_expect_null(rq_metric_series(f, 0, NULL)); /* wrong count */
    const char *vnull[] = {"a", NULL};
    cr_expect_null(rq_metric_series(f, 2, vnull));
    cr_expect_null(rq_metric_series(NULL, 0, NULL));

    rq_metric_t *nolab = rq_metrics_gauge(m, "y", "y", 0, NULL);
    cr_assert_not_null(nolab);
    rq_series_t *y = rq_metric_series(nolab, 0, NULL);
    cr_expect_not_null(y);
    cr_expect_eq(rq_metric_series(nolab, 0, NULL), y);
    cr_expect_null(rq_metric_series(nolab, 1, v1));
    rq_metrics_free(m);
}

Test(metrics, invalid_names_rejected)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    static const char *const bad_names[] = {"",    "1abc",        "a-b", "a b",
                                            "a.b", "caf\xC3\xA9", "a\n", "{x}"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        cr_expect_null(rq_metrics_counter(m, bad_names[i], "h", 0, NULL), "'%s'", bad_names[i]);
        cr_expect_null(rq_metrics_gauge(m, bad_names[i], "h", 0, NULL), "'%s'", bad_names[i]);
        cr_expect_null(rq_metrics_histogram(m, bad_names[i], "h", 0, NULL, NULL, 0), "'%s'",
                       bad_names[i]);
    }
    cr_expect_null(rq_metrics_counter(m, NULL, "h", 0, NULL));

    static const char *const good_names[] = {"a", "_x", ":x", "a:b_c9", "ABC_def:ghi"};
    for (size_t i = 0; i < sizeof(good_names) / sizeof(good_names[0]); i++)
        cr_expect_not_null(rq_metrics_counter(m, good_names[i], "h", 0, NULL), "'%s'",
                           good_names[i]);

    static const char *const bad_labels[] = {"", "1a", "a:b", "a-b", "__reserved", "a b", "é"};
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++) {
        const char *l[] = {bad_labels[i]};
        cr_expect_null(rq_metrics_counter(m, "bad_label_total", "h", 1, l), "label '%s'",
                       bad_labels[i]);
    }
    const char *l_null[] = {NULL};
    cr_expect_null(rq_metrics_counter(m, "bad_label_total", "h", 1, l_null));
    cr_expect_null(rq_metrics_counter(m, "bad_label_total", "h", 1, NULL));
    const char *dup[] = {"a", "a"};
    cr_expect_null(rq_metrics_counter(m, "bad_label_total", "h", 2, dup));
    const char *five[] = {"a", "b", "c", "d", "e"};
    cr_expect_null(rq_metrics_counter(m, "bad_label_total", "h", 5, five));
    const char *four[] = {"a", "b", "c", "d"};
    cr_expect_not_null(rq_metrics_counter(m, "four_labels_total", "h", 4, four));

    /* "le" is reserved on histograms only */
    const char *le[] = {"le"};
    const double b[] = {1};
    cr_expect_null(rq_metrics_histogram(m, "h_le", "h", 1, le, b, 1));
    cr_expect_not_null(rq_metrics_counter(m, "c_le_total", "h", 1, le));

    /* buckets must be strictly ascending and not NaN; a trailing +Inf is implicit */
    const double desc[] = {1, 0.5};
    const double same[] = {1, 1};
    const double nan_b[] = {NAN};
    const double ninf[] = {-INFINITY, 1};
    const double with_inf[] = {1, INFINITY};
    cr_expect_null(rq_metrics_histogram(m, "h1", "h", 0, NULL, desc, 2));
    cr_expect_null(rq_metrics_histogram(m, "h2", "h", 0, NULL, same, 2));
    cr_expect_null(rq_metrics_histogram(m, "h3", "h", 0, NULL, nan_b, 1));
    cr_expect_null(rq_metrics_histogram(m, "h4", "h", 0, NULL, ninf, 2));
    cr_expect_null(rq_metrics_histogram(m, "h5", "h", 0, NULL, NULL, 2));
    cr_expect_not_null(rq_metrics_histogram(m, "h6", "h", 0, NULL, with_inf, 2));
    cr_expect_not_null(rq_metrics_histogram(m, "h7", "h", 0, NULL, NULL, 0));

    /* duplicate names, across kinds too */
    cr_expect_not_null(rq_metrics_counter(m, "dup_total", "h", 0, NULL));
    cr_expect_null(rq_metrics_counter(m, "dup_total", "h", 0, NULL));
    cr_expect_null(rq_metrics_gauge(m, "dup_total", "h", 0, NULL));
    cr_expect_null(rq_metrics_histogram(m, "dup_total", "h", 0, NULL, b, 1));
    cr_expect_null(rq_metrics_counter(NULL, "x", "h", 0, NULL));

    char *txt = rq_metrics_render(m, NULL);
    cr_assert_not_null(txt);
    cr_expect(strstr(txt, "h6_bucket{le=\"1\"} 0\nh6_bucket{le=\"+Inf\"} 0\nh6_sum") != NULL, "%s",
              txt);
    cr_expect(strstr(txt, "h7_bucket{le=\"+Inf\"} 0\nh7_sum 0\nh7_count 0\n") != NULL, "%s", txt);
    cr_expect(strstr(txt, "bad_label_total") == NULL);
    free(txt);
    rq_metrics_free(m);
}

Test(metrics, latency_buckets)
{
    static const double want[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                  0.1,    0.25,  0.5,    1,     2.5,  5,     10};
    cr_assert_eq(rq_metrics_latency_buckets_len, 14);
    for (size_t i = 0; i < 14; i++)
        cr_expect_eq(rq_metrics_latency_buckets[i], want[i]);

    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    rq_metric_t *h = rq_metrics_histogram(
        m, "lat_seconds", "l", 0, NULL, rq_metrics_latency_buckets, rq_metrics_latency_buckets_len);
    cr_assert_not_null(h);
    rq_series_t *s = rq_metric_series(h, 0, NULL);
    for (int i = 0; i < 20; i++)
        rq_series_observe(s, 0.003); /* the 0.005 bucket and above */
    char *txt = rq_metrics_render(m, NULL);
    cr_assert_not_null(txt);
    const char *want_txt = "lat_seconds_bucket{le=\"0.0005\"} 0\n"
                           "lat_seconds_bucket{le=\"0.001\"} 0\n"
                           "lat_seconds_bucket{le=\"0.0025\"} 0\n"
                           "lat_seconds_bucket{le=\"0.005\"} 20\n"
                           "lat_seconds_bucket{le=\"0.01\"} 20\n"
                           "lat_seconds_bucket{le=\"0.025\"} 20\n"
                           "lat_seconds_bucket{le=\"0.05\"} 20\n"
                           "lat_seconds_bucket{le=\"0.1\"} 20\n"
                           "lat_seconds_bucket{le=\"0.25\"} 20\n"
                           "lat_seconds_bucket{le=\"0.5\"} 20\n"
                           "lat_seconds_bucket{le=\"1\"} 20\n"
                           "lat_seconds_bucket{le=\"2.5\"} 20\n"
                           "lat_seconds_bucket{le=\"5\"} 20\n"
                           "lat_seconds_bucket{le=\"10\"} 20\n"
                           "lat_seconds_bucket{le=\"+Inf\"} 20\n";
    cr_expect(strstr(txt, want_txt) != NULL, "%s", txt);
    cr_expect(strstr(txt, "lat_seconds_count 20\n") != NULL, "%s", txt);
    free(txt);
    rq_metrics_free(m);
}

/* ---- concurrency ---- */

enum { THREADS = 4, PER_THREAD = 100000 };

typedef struct {
    rq_series_t *counter;
    rq_series_t *gauge;
    rq_series_t *hist;
    rq_metric_t *family; /* for concurrent child lookup/creation */
    int id;
} worker_arg_t;

static void *worker(void *p)
{
    worker_arg_t *a = p;
    for (int i = 0; i < PER_THREAD; i++) {
        rq_series_inc(a->counter);
        rq_series_add(a->gauge, (i & 1) ? 0.5 : -0.25);
        rq_series_observe(a->hist, (i % 4) * 0.5); /* 0, 0.5, 1, 1.5 */
    }
    for (int i = 0; i < 1000; i++) {
        char v[16];
        snprintf(v, sizeof(v), "k%d", i % 50); /* every thread creates/looks up the same 50 */
        const char *vals[] = {v};
        rq_series_inc(rq_metric_series(a->family, 1, vals));
    }
    return NULL;
}

typedef struct {
    rq_metrics_t *m;
    volatile int stop;
    int renders;
} render_arg_t;

static void *renderer(void *p)
{
    render_arg_t *r = p;
    while (!r->stop && r->renders < 100000) {
        char *t = rq_metrics_render(r->m, NULL);
        if (t)
            r->renders++;
        free(t);
    }
    return NULL;
}

Test(metrics, concurrent_updates_exact)
{
    rq_metrics_t *m = rq_metrics_new();
    cr_assert_not_null(m);
    rq_series_t *c = rq_metric_series(rq_metrics_counter(m, "c_total", "c", 0, NULL), 0, NULL);
    rq_series_t *g = rq_metric_series(rq_metrics_gauge(m, "g", "g", 0, NULL), 0, NULL);
    const double b[] = {0, 0.5, 1};
    rq_series_t *h = rq_metric_series(rq_metrics_histogram(m, "h", "h", 0, NULL, b, 3), 0, NULL);
    const char *const key[] = {"key"};
    rq_metric_t *fam = rq_metrics_counter(m, "fam_total", "f", 1, key);
    cr_assert(c && g && h && fam);

    render_arg_t ra = {.m = m};
    pthread_t rt;
    cr_assert_eq(pthread_create(&rt, NULL, renderer, &ra), 0);
    pthread_t th[THREADS];
    worker_arg_t args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (worker_arg_t){c, g, h, fam, t};
        cr_assert_eq(pthread_create(&th[t], NULL, worker, &args[t]), 0);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    ra.stop = 1;
    pthread_join(rt, NULL);

    cr_expect_eq(rq_series_value(c), THREADS * PER_THREAD);
    /* per thread: 50000 * 0.5 - 50000 * 0.25 = 12500, all exactly representable */
    cr_expect_eq(rq_series_value(g), THREADS * 12500.0);
    cr_expect_eq(rq_series_value(h), THREADS * PER_THREAD);

    char *txt = rq_metrics_render(m, NULL);
    cr_assert_not_null(txt);
    cr_expect(strstr(txt, "\nc_total 400000\n") != NULL, "%s", txt);
    cr_expect(strstr(txt, "\ng 50000\n") != NULL, "%s", txt);
    /* 100000 observations each of 0, 0.5, 1, 1.5; sum = 100000 * 3 */
    cr_expect(strstr(txt, "h_bucket{le=\"0\"} 100000\n"
                          "h_bucket{le=\"0.5\"} 200000\n"
                          "h_bucket{le=\"1\"} 300000\n"
                          "h_bucket{le=\"+Inf\"} 400000\n"
                          "h_sum 300000\n"
                          "h_count 400000\n") != NULL,
              "%s", txt);
    /* 50 children, each incremented 20 times per thread; each appears once */
    for (int i = 0; i < 50; i++) {
        char line[64];
        snprintf(line, sizeof(line), "fam_total{key=\"k%d\"} %d\n", i, THREADS * 20);
        const char *at = strstr(txt, line);
        cr_expect_not_null(at, "missing %s", line);
        if (at)
            cr_expect_null(strstr(at + 1, line), "duplicate %s", line);
    }
    free(txt);
    rq_metrics_free(m);
}

/* ---- collectors ---- */

typedef struct {
    rq_series_t *g;
    int calls;
    int *freed;
} collect_state_t;

static void collect_count(void *arg)
{
    collect_state_t *st = arg;
    st->calls++;
    rq_series_set(st->g, st->calls);
}

static void collect_state_free(void *arg)
{
    collect_state_t *st = arg;
    (*st->freed)++;
    free(st);
}

Test(metrics, collector_runs_before_each_render_and_is_freed_with_the_registry)
{
    int freed = 0;
    rq_metrics_t *m = rq_metrics_new();
    rq_metric_t *f = rq_metrics_gauge(m, "rq_collected", "Set by a collector.", 0, NULL);
    collect_state_t *st = calloc(1, sizeof(*st));

    cr_assert_not_null(st);
    st->g = rq_metric_series(f, 0, NULL);
    st->freed = &freed;
    cr_assert_eq(rq_metrics_add_collector(m, collect_count, collect_state_free, st), 0);
    for (int i = 1; i <= 3; i++) {
        char want[64], *text = rq_metrics_render(m, NULL);
        snprintf(want, sizeof(want), "\nrq_collected %d\n", i);
        cr_assert_not_null(strstr(text, want), "render %d: %s", i, text);
        free(text);
    }
    cr_assert_eq(st->calls, 3);
    cr_assert_eq(freed, 0);
    rq_metrics_free(m);
    cr_assert_eq(freed, 1, "the registry frees the collector's state");
}

Test(metrics, collector_refused_arguments)
{
    rq_metrics_t *m = rq_metrics_new();
    int x = 0;

    cr_assert_eq(rq_metrics_add_collector(NULL, collect_count, NULL, &x), -1);
    cr_assert_eq(rq_metrics_add_collector(m, NULL, NULL, &x), -1);
    rq_metrics_free(m);
}

static void *render_loop(void *arg)
{
    for (int i = 0; i < 200; i++)
        free(rq_metrics_render(arg, NULL));
    return NULL;
}

Test(metrics, collectors_run_one_at_a_time)
{
    rq_metrics_t *m = rq_metrics_new();
    rq_metric_t *f = rq_metrics_gauge(m, "rq_collected", "Set by a collector.", 0, NULL);
    collect_state_t st = {.g = rq_metric_series(f, 0, NULL)};
    pthread_t t[4];

    cr_assert_eq(rq_metrics_add_collector(m, collect_count, NULL, &st), 0);
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, render_loop, m);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(st.calls, 800, "a plain int counted every call: no two ran at once");
    rq_metrics_free(m);
}
