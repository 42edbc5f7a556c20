/* Unit tests for consumer/output.c: durable batched appends, on temporary files. */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "output.h"

static char dir[64];
static char path[128];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/rq_test_output.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/out.log", dir);
}

static void teardown(void)
{
    unlink(path);
    rmdir(dir);
}

TestSuite(output, .init = setup, .fini = teardown);

/* Reads the whole file at `p` into a malloc'd buffer; *len gets its size. */
static char *read_all(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    char *buf;
    long n;

    cr_assert_not_null(f, "cannot open %s", p);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

Test(output, batch_append_writes_lines_in_order)
{
    const char *lines[] = {"first", "", "with\0nul", "tab\tand\rcr", "{\"a\":1}"};
    size_t lens[] = {5, 0, 8, 10, 7};
    const char *ids[] = {"1", "2", "3", "4", "5"};
    static const char want[] = "first\n\nwith\0nul\ntab\tand\rcr\n{\"a\":1}\n";
    char err[256] = "";
    rq_output_t *out = rq_output_open(path, err, sizeof(err));
    size_t len;
    char *got;

    cr_assert_not_null(out, "open: %s", err);
    cr_expect_str_eq(rq_output_path(out), path);
    cr_assert_eq(rq_output_append_batch(out, lines, lens, ids, 5), 5);
    got = read_all(path, &len);
    cr_expect_eq(len, sizeof(want) - 1);
    cr_expect(memcmp(got, want, sizeof(want) - 1) == 0, "content differs");
    free(got);
    rq_output_free(out);
}

Test(output, empty_batch_is_a_no_op)
{
    char err[256] = "";
    rq_output_t *out = rq_output_open(path, err, sizeof(err));
    struct stat st;

    cr_assert_not_null(out, "open: %s", err);
    cr_expect_eq(rq_output_append_batch(out, NULL, NULL, NULL, 0), 0);
    cr_assert_eq(stat(path, &st), 0, "the file is created at open");
    cr_expect_eq(st.st_size, 0);
    rq_output_free(out);
}

Test(output, reopen_appends_and_keeps_earlier_lines)
{
    const char *a[] = {"one", "two"};
    size_t alen[] = {3, 3};
    const char *b[] = {"three"};
    size_t blen[] = {5};
    char err[256] = "";
    rq_output_t *out;
    size_t len;
    char *got;

    out = rq_output_open(path, err, sizeof(err));
    cr_assert_not_null(out, "open: %s", err);
    cr_assert_eq(rq_output_append_batch(out, a, alen, NULL, 2), 2);
    rq_output_free(out);

    out = rq_output_open(path, err, sizeof(err));
    cr_assert_not_null(out, "reopen: %s", err);
    cr_assert_eq(rq_output_append_batch(out, b, blen, NULL, 1), 1);
    cr_assert_eq(rq_output_append_batch(out, a, alen, NULL, 2), 2);
    rq_output_free(out);

    got = read_all(path, &len);
    cr_expect_eq(len, strlen("one\ntwo\nthree\none\ntwo\n"));
    cr_expect(memcmp(got, "one\ntwo\nthree\none\ntwo\n", len) == 0, "got \"%.*s\"", (int)len, got);
    free(got);
}

Test(output, large_batches_grow_the_buffer)
{
    enum { N = 20000 };
    static const char *lines[N];
    static size_t lens[N];
    static char text[N][16];
    char err[256] = "";
    rq_output_t *out = rq_output_open(path, err, sizeof(err));
    size_t len;
    size_t nl = 0;
    char *got;

    cr_assert_not_null(out, "open: %s", err);
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof(text[i]), "line %d", i);
        lines[i] = text[i];
        lens[i] = strlen(text[i]);
    }
    cr_assert_eq(rq_output_append_batch(out, lines, lens, NULL, 10), 10);
    cr_assert_eq(rq_output_append_batch(out, lines + 10, lens + 10, NULL, N - 10), N - 10);
    rq_output_free(out);

    got = read_all(path, &len);
    for (size_t i = 0; i < len; i++)
        nl += got[i] == '\n';
    cr_expect_eq(nl, N);
    cr_expect(memcmp(got, "line 0\nline 1\n", 14) == 0);
    cr_expect(memcmp(got + len - 11, "line 19999\n", 11) == 0);
    free(got);
}

Test(output, new_file_mode_is_0644)
{
    char err[256] = "";
    mode_t old = umask(022);
    rq_output_t *out = rq_output_open(path, err, sizeof(err));
    struct stat st;

    umask(old);
    cr_assert_not_null(out, "open: %s", err);
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_mode & 0777, 0644, "mode %o", (unsigned)(st.st_mode & 0777));
    rq_output_free(out);
}

Test(output, open_errors_name_the_path)
{
    char err[256] = "";
    char bad[200];

    snprintf(bad, sizeof(bad), "%s/no/such/dir/out.log", dir);
    cr_expect_null(rq_output_open(bad, err, sizeof(err)));
    cr_expect_not_null(strstr(err, bad), "error \"%s\" should name the path", err);
    cr_expect_null(rq_output_open("", err, sizeof(err)));
    cr_expect_null(rq_output_open(dir, err, sizeof(err)), "a directory is not a file");
    rq_output_free(NULL);
}

Test(output, write_error_is_reported)
{
    /* /dev/full fails every write with ENOSPC */
    const char *lines[] = {"x"};
    size_t lens[] = {1};
    char err[256] = "";
    rq_output_t *out = rq_output_open("/dev/full", err, sizeof(err));

    if (out == NULL)
        cr_skip_test("/dev/full unavailable: %s", err);
    cr_expect_eq(rq_output_append_batch(out, lines, lens, NULL, 1), -ENOSPC);
    rq_output_free(out);
}
