/* test_output_oom.c - the exactly-once output writer when any allocation fails.
 *
 * Jansson's style: fail the n-th allocation, for every n, until a run completes without a
 * failure. rq_output_open() must return a writer or NULL with a reason; a batch must be
 * written whole (the right bytes) or not at all (a negative errno, PATH unchanged), and the
 * same batch retried must then give the same file as a run without failures. Nothing may
 * leak (LSan, in the sanitizer build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oom.h"
#include "output.h"

#define OOM_MAX_RUNS 100000ul

static char dir[64];

static void setup(void)
{
    strcpy(dir, "/tmp/rq-output-oom-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(output_oom, .init = setup, .fini = teardown);

static rq_output_line_t msg(const char *data, const char *id)
{
    rq_output_line_t l;

    memset(&l, 0, sizeof(l));
    l.data = data;
    l.len = strlen(data);
    l.msg_id = id;
    l.msg_id_len = strlen(id);
    return l;
}

static rq_output_line_t tailed(const char *data, const char *file_id, int64_t start, int verbatim)
{
    rq_output_line_t l;

    memset(&l, 0, sizeof(l));
    l.data = data;
    l.len = strlen(data);
    l.file_id = file_id;
    l.start = start;
    l.end = start + (int64_t)l.len + (verbatim ? 0 : 1);
    l.verbatim = verbatim;
    return l;
}

/* The first batch, then one that overlaps it: a repeated id, a new id, a chunk that overlaps
 * the first one, a new single tailed line. */
static void batch_a(rq_output_line_t *l)
{
    l[0] = msg("alpha", "m1");
    l[1] = msg("beta", "m2");
    l[2] = tailed("l1\nl2\n", "f1", 0, 1);
}

static void batch_b(rq_output_line_t *l)
{
    l[0] = msg("beta", "m2");
    l[1] = msg("gamma", "m3");
    l[2] = tailed("l2\nl3\n", "f1", 3, 1);
    l[3] = tailed("x", "f2", 0, 0);
}

#define AFTER_A "alpha\nbeta\nl1\nl2\n"
#define AFTER_B AFTER_A "gamma\nl3\nx\n"

static void check_file(const char *path, const char *want, const char *what, unsigned long n)
{
    char buf[256];
    FILE *f = fopen(path, "r");
    size_t got;

    cr_assert_not_null(f, "%s", path);
    got = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[got] = '\0';
    cr_assert_str_eq(buf, want, "%s, n=%lu", what, n);
}

Test(output_oom, append_every_allocation)
{
    unsigned long n;
    int done = 0;

    for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
        char path[128], err[256];
        rq_output_line_t a[3], b[4];
        rq_output_t *out;
        int64_t rc;
        int injected;

        snprintf(path, sizeof(path), "%s/out-%lu", dir, n);
        out = rq_output_open(path, 100, err, sizeof(err));
        cr_assert_not_null(out, "%s", err);
        batch_a(a);
        cr_assert_eq(rq_output_append_batch(out, a, 3), 3);
        batch_b(b);
        oom_start(n);
        rc = rq_output_append_batch(out, b, 4);
        injected = oom_stop();
        if (rc < 0) {
            cr_assert(injected, "append failed with no allocation failure: %lld", (long long)rc);
            cr_assert_eq(rc, -ENOMEM, "n=%lu: %s", n, strerror((int)-rc));
            check_file(path, AFTER_A, "a failed batch left bytes in the file", n);
            batch_b(b);
            rc = rq_output_append_batch(out, b, 4);
        }
        cr_assert_eq(rc, 3, "n=%lu: %lld entries written", n, (long long)rc);
        cr_assert(!b[0].written && b[1].written && b[2].written && b[3].written, "n=%lu", n);
        check_file(path, AFTER_B, "after the batch", n);
        rq_output_free(out);
        /* the ledger must still describe the file: nothing written twice on a redelivery */
        out = rq_output_open(path, 100, err, sizeof(err));
        cr_assert_not_null(out, "n=%lu: %s", n, err);
        batch_b(b);
        cr_assert_eq(rq_output_append_batch(out, b, 4), 0, "n=%lu", n);
        rq_output_free(out);
        check_file(path, AFTER_B, "after a redelivery", n);
        done = !injected;
    }
    cr_assert(done, "still failing after %lu runs", OOM_MAX_RUNS);
    cr_assert_gt(n, 2, "no allocation seen");
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(output_oom, open_every_allocation)
{
    char path[128], err[256];
    rq_output_line_t a[3];
    rq_output_t *out;
    unsigned long n;
    int done = 0;

    /* a ledger with history to load */
    snprintf(path, sizeof(path), "%s/out", dir);
    out = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(out, "%s", err);
    batch_a(a);
    cr_assert_eq(rq_output_append_batch(out, a, 3), 3);
    rq_output_free(out);
    for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
        int injected;

        memset(err, 0, sizeof(err));
        oom_start(n);
        out = rq_output_open(path, 100, err, sizeof(err));
        injected = oom_stop();
        if (out == NULL) {
            cr_assert(injected, "open failed with no allocation failure: %s", err);
            cr_assert(strstr(err, "out of memory") != NULL || strstr(err, strerror(ENOMEM)) != NULL,
                      "n=%lu: \"%s\"", n, err);
            out = rq_output_open(path, 100, err, sizeof(err));
            cr_assert_not_null(out, "n=%lu: after a failed open: %s", n, err);
        }
        /* the index was loaded whole: batch A again writes nothing */
        batch_a(a);
        cr_assert_eq(rq_output_append_batch(out, a, 3), 0, "n=%lu: index incomplete", n);
        rq_output_free(out);
        check_file(path, AFTER_A, "after open", n);
        done = !injected;
    }
    cr_assert(done, "still failing after %lu runs", OOM_MAX_RUNS);
    cr_assert_gt(n, 2, "no allocation seen");
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}
