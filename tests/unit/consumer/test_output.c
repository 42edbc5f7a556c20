/* test_output.c - the exactly-once output writer: dedup, ledger, crash recovery, sharing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "output.h"

static char dir[64];
static char path[128], ledger[160], lockp[160];

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/rq_test_output.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/out.txt", dir);
    snprintf(ledger, sizeof(ledger), "%s.ledger", path);
    snprintf(lockp, sizeof(lockp), "%s.lock", path);
}

static void teardown(void)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(output, .init = setup, .fini = teardown, .timeout = 60);

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
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static off_t size_of(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static rq_output_line_t id_line(const char *data, const char *id)
{
    rq_output_line_t l = {0};
    l.data = data;
    l.len = strlen(data);
    l.msg_id = id;
    l.msg_id_len = strlen(id);
    return l;
}

static rq_output_line_t tail_line(const char *data, size_t len, const char *file, int64_t start)
{
    rq_output_line_t l = {0};
    l.data = data;
    l.len = len;
    l.file_id = file;
    l.start = start;
    l.end = start + (int64_t)len + 1;
    return l;
}

static void expect_file(const char *want, size_t wantlen)
{
    size_t len;
    char *got = read_all(path, &len);
    cr_expect_eq(len, wantlen, "output is %zu bytes, want %zu", len, wantlen);
    cr_expect(len == wantlen && memcmp(got, want, len) == 0, "output differs: [%s]", got);
    free(got);
}

Test(output, writes_lines_and_skips_repeated_ids)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b1[3], b2[3];

    cr_assert_not_null(o, "%s", err);
    b1[0] = id_line("one", "m1");
    b1[1] = id_line("two", "m2");
    b1[2] = id_line("one again", "m1"); /* a duplicate inside the batch */
    cr_expect_eq(rq_output_append_batch(o, b1, 3), 2);
    cr_expect_eq(b1[0].written, 1);
    cr_expect_eq(b1[2].written, 0);
    b2[0] = id_line("two", "m2");
    b2[1] = id_line("three", "m3");
    b2[2] = id_line("", "m4"); /* an empty line is a line */
    cr_expect_eq(rq_output_append_batch(o, b2, 3), 2);
    cr_expect_eq(b2[0].written, 0);
    expect_file("one\ntwo\nthree\n\n", 15);
    rq_output_free(o);
}

Test(output, remembers_across_reopen)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];
    const char raw[] = {'a', '\0', '\r', (char)0xff};

    b[0] = id_line("api", "id-1");
    b[1] = tail_line(raw, sizeof(raw), "f1", 0);
    cr_assert_eq(rq_output_append_batch(o, b, 2), 2);
    rq_output_free(o);

    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("api", "id-1");
    b[1] = tail_line(raw, sizeof(raw), "f1", 0);
    cr_expect_eq(rq_output_append_batch(o, b, 2), 0, "redelivered lines written twice");
    b[0] = tail_line("next", 4, "f1", 5);
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("api\na\0\r\xff\nnext\n", 14);
    rq_output_free(o);
}

Test(output, rolls_back_a_commit_whose_output_is_incomplete)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];
    FILE *f;

    b[0] = tail_line("first", 5, "f", 0);
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    /* A writer died after its ledger record and half its output. */
    f = fopen(ledger, "a");
    fprintf(f, "B 6 12\nR f 6 12\nE\n");
    fclose(f);
    f = fopen(path, "a");
    fprintf(f, "sec");
    fclose(f);

    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    expect_file("first\n", 6);
    b[0] = tail_line("secnd", 5, "f", 6);
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1, "the rolled-back line must be written");
    expect_file("first\nsecnd\n", 12);
    rq_output_free(o);
}

Test(output, drops_a_torn_ledger_record)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];
    FILE *f;

    b[0] = id_line("x", "a");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    f = fopen(ledger, "a");
    fprintf(f, "B 2 4\nH 00000000000000"); /* died mid-record */
    fclose(f);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("y", "b");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    b[0] = id_line("x", "a");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 0);
    rq_output_free(o);
    o = rq_output_open(path, 100, err, sizeof(err));
    b[0] = id_line("y", "b");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 0, "the ledger must parse after the repair");
    expect_file("x\ny\n", 4);
    rq_output_free(o);
}

Test(output, two_writers_share_one_file)
{
    char err[256];
    rq_output_t *a = rq_output_open(path, 1000, err, sizeof(err));
    rq_output_t *b = rq_output_open(path, 1000, err, sizeof(err));
    char data[200][16];
    size_t total = 0;

    cr_assert_not_null(a);
    cr_assert_not_null(b);
    /* Both get every line (as after a redelivery to another consumer): each written once. */
    for (int i = 0; i < 200; i++) {
        rq_output_line_t l;
        snprintf(data[i], sizeof(data[i]), "line %03d", i);
        l = tail_line(data[i], strlen(data[i]), "src", (int64_t)i * 9);
        cr_assert_geq(rq_output_append_batch(i % 2 ? a : b, &l, 1), 0);
        l = tail_line(data[i], strlen(data[i]), "src", (int64_t)i * 9);
        cr_assert_eq(rq_output_append_batch(i % 2 ? b : a, &l, 1), 0, "line %d twice", i);
        total += strlen(data[i]) + 1;
    }
    cr_expect_eq(size_of(path), (off_t)total);
    rq_output_free(a);
    rq_output_free(b);
}

Test(output, compaction_keeps_the_index)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 1000, err, sizeof(err));
    char ids[300][16];

    rq_output_set_compact_bytes(o, 2048);
    for (int i = 0; i < 300; i++) {
        rq_output_line_t l;
        snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
        l = id_line("v", ids[i]);
        cr_assert_eq(rq_output_append_batch(o, &l, 1), 1);
    }
    cr_expect_lt(size_of(ledger), 2048 + 4096, "ledger not compacted: %lld bytes",
                 (long long)size_of(ledger));
    rq_output_free(o);
    o = rq_output_open(path, 1000, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    for (int i = 0; i < 300; i += 13) {
        rq_output_line_t l = id_line("v", ids[i]);
        cr_expect_eq(rq_output_append_batch(o, &l, 1), 0, "%s forgotten by compaction", ids[i]);
    }
    cr_expect_eq(size_of(path), 600);
    rq_output_free(o);
}

Test(output, untrusted_file_id_falls_back_to_the_message_id)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t l = tail_line("x", 1, "bad id\nB 0 0", 0);

    l.msg_id = "m";
    l.msg_id_len = 1;
    cr_expect_eq(rq_output_append_batch(o, &l, 1), 1);
    rq_output_free(o);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "ledger corrupted by a hostile header: %s", err);
    l = tail_line("x", 1, "bad id\nB 0 0", 0);
    l.msg_id = "m";
    l.msg_id_len = 1;
    cr_expect_eq(rq_output_append_batch(o, &l, 1), 0);
    rq_output_free(o);
}

Test(output, open_fails_clearly_on_a_missing_directory)
{
    char err[256] = "";
    cr_expect_null(rq_output_open("/nonexistent-dir/out.txt", 10, err, sizeof(err)));
    cr_expect(strstr(err, "/nonexistent-dir/out.txt") != NULL, "%s", err);
    rq_output_free(NULL);
}

/* A chunk of the source bytes [start, start + len), written verbatim. */
static rq_output_line_t chunk(const char *src, const char *file, int64_t start, int64_t end)
{
    rq_output_line_t l = {0};
    l.data = src + start;
    l.len = (size_t)(end - start);
    l.file_id = file;
    l.start = start;
    l.end = end;
    l.verbatim = 1;
    return l;
}

Test(output, chunks_are_written_verbatim_and_once_however_they_are_cut)
{
    /* records: "a\n" [0,2) "bb\n" [2,5) "\n" [5,6) "c\0d\r\n" [6,11) "eeee\n" [11,16) */
    static const char src[] = "a\nbb\n\nc\0d\r\neeee\n";
    const size_t srclen = sizeof(src) - 1;
    char err[256];
    rq_output_t *out = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b1[2], b2[3], b3[1];

    cr_assert_not_null(out, "%s", err);
    b1[0] = chunk(src, "f:1", 0, 5);
    b1[1] = chunk(src, "f:1", 5, 6);
    cr_assert_eq(rq_output_append_batch(out, b1, 2), 2);
    cr_expect_eq(b1[0].newlines, 2);
    cr_expect_eq(b1[1].newlines, 1);
    expect_file(src, 6);
    /* after a producer restart the same bytes come cut differently, overlapping */
    b2[0] = chunk(src, "f:1", 2, 11); /* [2,6) written, [6,11) new */
    b2[1] = chunk(src, "f:1", 6, 16); /* [6,11) written by b2[0]: only [11,16) */
    b2[2] = chunk(src, "f:1", 0, 2);  /* all written: skipped */
    cr_assert_eq(rq_output_append_batch(out, b2, 3), 2);
    cr_expect_eq(b2[0].written, 1);
    cr_expect_eq(b2[0].newlines, 1);
    cr_expect_eq(b2[1].written, 1);
    cr_expect_eq(b2[1].newlines, 1);
    cr_expect_eq(b2[2].written, 0);
    cr_expect_eq(b2[2].newlines, 0);
    expect_file(src, srclen);
    rq_output_free(out);

    /* the parts are remembered across a reopen (ledger) */
    out = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(out, "%s", err);
    b3[0] = chunk(src, "f:1", 0, 16);
    cr_assert_eq(rq_output_append_batch(out, b3, 1), 0);
    expect_file(src, srclen);
    /* another file id is another file */
    b3[0] = chunk(src, "f:2", 11, 16);
    cr_assert_eq(rq_output_append_batch(out, b3, 1), 1);
    {
        char want[64];
        memcpy(want, src, srclen);
        memcpy(want + srclen, "eeee\n", 5);
        expect_file(want, srclen + 5);
    }
    rq_output_free(out);
}

Test(output, chunks_and_one_line_messages_of_one_file_mix)
{
    static const char src[] = "one\ntwo\nthree\n";
    char err[256];
    rq_output_t *out = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[3];

    cr_assert_not_null(out, "%s", err);
    /* an old one-line message of "two" (no newline in its body), then a chunk of all */
    b[0] = tail_line("two", 3, "g", 4);
    cr_assert_eq(rq_output_append_batch(out, b, 1), 1);
    cr_expect_eq(b[0].newlines, 1);
    b[0] = chunk(src, "g", 0, 14);
    b[1] = tail_line("three", 5, "g", 8); /* inside the chunk: a duplicate */
    cr_assert_eq(rq_output_append_batch(out, b, 2), 1);
    cr_expect_eq(b[0].newlines, 2, "one and three");
    cr_expect_eq(b[1].written, 0);
    /* order is the order of the batches: "two" came first */
    expect_file("two\none\nthree\n", 14);
    rq_output_free(out);
}

Test(output, a_chunk_whose_range_is_not_its_body_is_whole_or_nothing)
{
    static const char src[] = "x\ny\n";
    char err[256];
    rq_output_t *out = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];

    cr_assert_not_null(out, "%s", err);
    b[0] = chunk(src, "h", 0, 4);
    b[0].end = 9; /* lies about its range: keyed by its message id instead */
    b[0].msg_id = "h:0";
    b[0].msg_id_len = 3;
    cr_assert_eq(rq_output_append_batch(out, b, 1), 1);
    b[0] = chunk(src, "h", 0, 4);
    b[0].end = 9;
    b[0].msg_id = "h:0";
    b[0].msg_id_len = 3;
    cr_assert_eq(rq_output_append_batch(out, b, 1), 0);
    expect_file("x\ny\n", 4);
    rq_output_free(out);
}

/* More pieces than one pwritev takes (IOV_MAX): still one batch, every byte in order. */
Test(output, a_batch_of_more_pieces_than_iov_max)
{
    enum { N = 1500 };
    static rq_output_line_t b[N];
    static char text[N][16], ids[N][16];
    char *want = malloc(N * 16), *w = want;
    char err[256];
    rq_output_t *out = rq_output_open(path, 4 * N, err, sizeof(err));

    cr_assert_not_null(out, "%s", err);
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof(text[i]), "line %d", i);
        snprintf(ids[i], sizeof(ids[i]), "id-%d", i);
        b[i] = id_line(text[i], ids[i]);
        w += sprintf(w, "%s\n", text[i]);
    }
    cr_assert_eq(rq_output_append_batch(out, b, N), N);
    expect_file(want, (size_t)(w - want));
    for (int i = 0; i < N; i++)
        cr_expect_eq(b[i].newlines, 1);
    rq_output_free(out);
    free(want);
}

/* ---- rotation (issue 11 item 6): a different or shorter file is a rotation, never a rollback */

static int has_nul(const char *p)
{
    size_t len;
    char *got = read_all(p, &len);
    int nul = memchr(got, '\0', len) != NULL;

    free(got);
    return nul;
}

Test(output, restart_after_a_rename_is_a_rotation_not_a_rollback)
{
    char err[256], old[200];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    b[0] = id_line("second", "m2");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    snprintf(old, sizeof(old), "%s.1", path);
    cr_assert_eq(rename(path, old), 0); /* logrotate: rename, then a new file */

    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    cr_expect_eq(size_of(path), 0, "the new file was grown to %lld bytes",
                 (long long)size_of(path));
    b[0] = id_line("second", "m2"); /* the newest commit is still remembered */
    b[1] = id_line("third", "m3");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 1);
    expect_file("third\n", 6);
    cr_expect_eq(size_of(old), 13, "the rotated file was changed");
    rq_output_free(o);
}

Test(output, restart_after_copytruncate_never_grows_the_file)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    b[0] = tail_line("tailed", 6, "f", 0);
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    cr_assert_eq(truncate(path, 0), 0); /* copytruncate: same inode, emptied */

    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    cr_expect_eq(size_of(path), 0, "ftruncate grew the file to %lld bytes",
                 (long long)size_of(path));
    b[0] = tail_line("tailed", 6, "f", 0); /* remembered: not written again */
    b[1] = id_line("next", "m9");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 1);
    expect_file("next\n", 5);
    cr_expect(!has_nul(path));
    rq_output_free(o);
}

Test(output, a_legacy_record_larger_than_a_replaced_file_is_not_rolled_back_nor_applied)
{
    char err[256];
    rq_output_t *o;
    rq_output_line_t b[1];
    FILE *f;

    /* a ledger without file identities (older versions) whose newest record ends past the
     * end of a shorter, newer file */
    f = fopen(ledger, "w");
    fprintf(f, "B 0 100\nH 00000000000000aa\nE\nB 100 200\nR f 0 100\nE\n");
    fclose(f);
    f = fopen(path, "w");
    fprintf(f, "new\n");
    fclose(f);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    expect_file("new\n", 4); /* not rolled back: never grown */
    /* the newest record cannot be verified against this file: forgotten (a duplicate at
     * worst, never a loss), and the file is written on, not padded */
    b[0] = tail_line("x", 1, "f", 50);
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("new\nx\n", 6);
    rq_output_free(o);
}

Test(output, a_rename_while_running_is_noticed_at_the_next_commit)
{
    char err[256], old[200];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("before", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    snprintf(old, sizeof(old), "%s.1", path);
    cr_assert_eq(rename(path, old), 0);
    b[0] = id_line("after", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("after\n", 6);
    cr_expect_eq(size_of(old), 7, "the rotated file got %lld bytes", (long long)size_of(old));
    b[0] = id_line("before", "m1"); /* nothing written twice across the rotation */
    cr_expect_eq(rq_output_append_batch(o, b, 1), 0);
    rq_output_free(o);
}

Test(output, reopen_switches_to_the_new_file_at_the_path)
{
    char err[256], old[200];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];
    int fd;

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("before", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    snprintf(old, sizeof(old), "%s.1", path);
    cr_assert_eq(rename(path, old), 0);
    fd = open(path, O_WRONLY | O_CREAT, 0600); /* logrotate's `create` */
    cr_assert_geq(fd, 0);
    close(fd);
    cr_expect_eq(rq_output_reopen(o), 0);
    b[0] = id_line("after", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("after\n", 6);
    cr_expect_eq(size_of(old), 7);
    /* reopening when nothing changed is harmless */
    cr_expect_eq(rq_output_reopen(o), 0);
    b[0] = id_line("more", "m3");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("after\nmore\n", 11);
    rq_output_free(o);
}

Test(output, a_half_done_commit_in_the_same_file_is_still_rolled_back_down)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];
    struct stat st;
    FILE *f;

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    cr_assert_eq(stat(path, &st), 0);
    f = fopen(ledger, "a"); /* a record naming this very file, half written */
    fprintf(f, "B 6 12 %llu %llu\nH 00000000000000bb\nE\n", (unsigned long long)st.st_dev,
            (unsigned long long)st.st_ino);
    fclose(f);
    f = fopen(path, "a");
    fprintf(f, "sec");
    fclose(f);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    expect_file("first\n", 6);
    rq_output_free(o);
}

Test(output, copytruncate_after_a_single_commit_and_a_clean_close_forgets_nothing)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("only", "m1"); /* the newest commit starts at 0: before == 0 */
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    rq_output_free(o);
    cr_assert_eq(truncate(path, 0), 0);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("only", "m1");
    b[1] = id_line("next", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 1,
                 "a line written before the copytruncate "
                 "was written again");
    expect_file("next\n", 5);
    rq_output_free(o);
}

/* Fault injection at the ledger's fdatasync (the test binary's fdatasync wins over libc's, as
 * the writer comes from a static library): a copytruncate landing in the middle of a commit,
 * or a kill -9 between the ledger record and the output. */
enum { FAULT_NONE, FAULT_TRUNCATE, FAULT_EXIT, FAULT_TRUNCATE_AT_WRITE, FAULT_EXIT_AFTER_WRITE };
static int fault_mode, fault_after; /* act at the fault_after-th ledger sync from now */
static int fault_next;              /* FAULT_TRUNCATE: the mode after it */

int fdatasync(int fd)
{
    struct stat a, b;
    int rc = (int)syscall(SYS_fdatasync, fd);

    if (fault_mode == FAULT_NONE || fault_mode >= FAULT_TRUNCATE_AT_WRITE || fstat(fd, &a) != 0 ||
        stat(ledger, &b) != 0 || a.st_ino != b.st_ino || --fault_after > 0)
        return rc;
    if (fault_mode == FAULT_EXIT)
        _exit(9);
    fault_mode = fault_next;
    if (truncate(path, 0) != 0)
        return -1;
    return rc;
}

/* The same copytruncate, landing right before the lines are written (after the writer's last
 * look at the size). */
ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    struct stat a, b;

    if (fault_mode == FAULT_EXIT_AFTER_WRITE && fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
        a.st_ino == b.st_ino) {
        (void)syscall(SYS_writev, fd, iov, cnt);
        _exit(9); /* kill -9 right after the lines are written */
    }
    if (fault_mode == FAULT_TRUNCATE_AT_WRITE && fstat(fd, &a) == 0 && stat(path, &b) == 0 &&
        a.st_ino == b.st_ino) {
        fault_mode = FAULT_NONE;
        if (truncate(path, 0) != 0)
            return -1;
    }
    return syscall(SYS_writev, fd, iov, cnt);
}

Test(output, copytruncate_right_before_the_write_never_pads_and_is_recorded)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    fault_mode = FAULT_TRUNCATE_AT_WRITE;
    b[0] = id_line("second", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    cr_expect_eq(fault_mode, FAULT_NONE, "the fault was not injected");
    expect_file("second\n", 7);
    /* no clean close (kill -9 after the commit): the newest record must say where the lines
     * are, else a restart takes "second" for a half-done commit and cuts it */
    pid_t pid = fork();
    int status = 0;
    cr_assert_geq(pid, 0);
    if (pid == 0)
        _exit(0);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    {
        char err2[256];
        rq_output_t *o2 = rq_output_open(path, 100, err2, sizeof(err2));
        cr_assert_not_null(o2, "%s", err2);
        expect_file("second\n", 7);
        b[0] = id_line("second", "m2");
        cr_expect_eq(rq_output_append_batch(o2, b, 1), 0, "a committed line written again");
        rq_output_free(o2);
    }
    rq_output_free(o);
}

Test(output, copytruncate_in_the_middle_of_a_commit_never_pads_with_nul_bytes)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1");
    cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    fault_mode = FAULT_TRUNCATE; /* the truncate lands after the record, before the lines */
    fault_after = 1;
    b[0] = id_line("second", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    cr_expect(!has_nul(path), "the output was padded with NUL bytes (%lld bytes)",
              (long long)size_of(path));
    expect_file("second\n", 7);
    b[0] = id_line("third", "m3");
    cr_expect_eq(rq_output_append_batch(o, b, 1), 1);
    expect_file("second\nthird\n", 13);
    rq_output_free(o);
    /* the ledger describes the file as it is: a restart rolls nothing back, forgets nothing */
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    expect_file("second\nthird\n", 13);
    b[0] = id_line("second", "m2");
    b[1] = id_line("third", "m3");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 0);
    rq_output_free(o);
}

/* A child commits "first", then dies (kill -9) after the ledger record of "second" is synced
 * and before its line is written. */
static void crash_in_the_middle_of_the_second_commit(void)
{
    pid_t pid = fork();
    int status = 0;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        char err[256];
        rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
        rq_output_line_t b[1];

        if (o == NULL)
            _exit(1);
        b[0] = id_line("first", "m1");
        if (rq_output_append_batch(o, b, 1) != 1)
            _exit(2);
        fault_mode = FAULT_EXIT;
        fault_after = 1;
        b[0] = id_line("second", "m2");
        rq_output_append_batch(o, b, 1);
        _exit(3); /* not reached */
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 9, "child status %d", status);
    expect_file("first\n", 6);
}

/* After the crash and a rotation, the redelivered "second" must be written. */
static void redelivery_is_written(const char *want, size_t wantlen)
{
    char err[256];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[2];

    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("first", "m1"); /* committed before the crash: still remembered */
    b[1] = id_line("second", "m2");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 1, "the unacked line was taken as written");
    cr_expect_eq(b[0].written, 0, "a committed line was written again");
    expect_file(want, wantlen);
    cr_expect(!has_nul(path));
    rq_output_free(o);
}

Test(output, a_crash_mid_commit_then_a_rename_rotation_loses_nothing)
{
    char old[200];
    int fd;

    crash_in_the_middle_of_the_second_commit();
    snprintf(old, sizeof(old), "%s.9", path); /* not a name the writer looks for */
    cr_assert_eq(rename(path, old), 0);
    fd = open(path, O_WRONLY | O_CREAT, 0644); /* logrotate's `create` */
    cr_assert_geq(fd, 0);
    close(fd);
    redelivery_is_written("second\n", 7);
    cr_expect_eq(size_of(old), 6);
}

Test(output, a_crash_mid_commit_then_copytruncate_loses_nothing)
{
    crash_in_the_middle_of_the_second_commit();
    cr_assert_eq(truncate(path, 0), 0);
    redelivery_is_written("second\n", 7);
}

Test(output, a_crash_mid_commit_then_a_rename_to_dot_1_loses_nothing)
{
    char old[200];
    int fd;

    crash_in_the_middle_of_the_second_commit();
    snprintf(old, sizeof(old), "%s.1", path); /* logrotate's name: the writer looks there */
    cr_assert_eq(rename(path, old), 0);
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    redelivery_is_written("second\n", 7);
    cr_expect_eq(size_of(old), 6);
}

Test(output, a_commit_found_whole_in_dot_1_after_a_crash_is_not_written_twice)
{
    char err[256], old[200];
    rq_output_line_t b[2];
    rq_output_t *o;
    pid_t pid = fork();
    int status = 0, fd;

    cr_assert_geq(pid, 0);
    if (pid == 0) { /* commits two batches, then dies before acking (no clean close) */
        o = rq_output_open(path, 100, err, sizeof(err));
        b[0] = id_line("first", "m1");
        if (o == NULL || rq_output_append_batch(o, b, 1) != 1)
            _exit(1);
        b[0] = id_line("second", "m2");
        _exit(rq_output_append_batch(o, b, 1) == 1 ? 9 : 2);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 9, "child status %d", status);
    snprintf(old, sizeof(old), "%s.1", path);
    cr_assert_eq(rename(path, old), 0);
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    o = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(o, "%s", err);
    b[0] = id_line("second", "m2"); /* the redelivery of the unacked batch */
    b[1] = id_line("third", "m3");
    cr_expect_eq(rq_output_append_batch(o, b, 2), 1);
    cr_expect_eq(b[0].written, 0, "the commit whole in %s.1 was written again", path);
    expect_file("third\n", 6);
    rq_output_free(o);
}

Test(output, a_rollback_by_another_writer_after_copytruncate_keeps_the_shared_ledger_whole)
{
    char err[256];
    rq_output_t *a = rq_output_open(path, 100, err, sizeof(err)), *b2, *c;
    rq_output_line_t b[2];

    cr_assert_not_null(a, "%s", err);
    b[0] = id_line("only", "m1"); /* the first commit: before == 0 */
    cr_assert_eq(rq_output_append_batch(a, b, 1), 1);
    cr_assert_eq(truncate(path, 0), 0); /* copytruncate while a runs */
    /* a second writer opens: the newest commit (before 0, after 5) looks half done in the
     * empty file and is rolled back (its entries forgotten: a duplicate at worst) */
    b2 = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(b2, "%s", err);
    b[0] = id_line("only", "m1"); /* the writer that committed it still knows it */
    cr_expect_eq(rq_output_append_batch(a, b, 1), 0);
    b[0] = id_line("two", "m2");
    cr_expect_eq(rq_output_append_batch(a, b, 1), 1);
    b[0] = id_line("three", "m3");
    cr_expect_eq(rq_output_append_batch(b2, b, 1), 1);
    rq_output_free(a);
    rq_output_free(b2);
    cr_expect(!has_nul(ledger), "the ledger has a hole");
    expect_file("two\nthree\n", 10);
    c = rq_output_open(path, 100, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    b[0] = id_line("two", "m2");
    b[1] = id_line("three", "m3");
    cr_expect_eq(rq_output_append_batch(c, b, 2), 0, "a commit was dropped from the ledger");
    rq_output_free(c);
}

Test(output, copytruncate_mid_commit_then_a_crash_after_the_write_cuts_nothing)
{
    char err[256];
    rq_output_line_t b[1];
    rq_output_t *o;
    pid_t pid = fork();
    int status = 0;

    cr_assert_geq(pid, 0);
    if (pid == 0) {
        o = rq_output_open(path, 100, err, sizeof(err));
        b[0] = id_line("first", "m1");
        if (o == NULL || rq_output_append_batch(o, b, 1) != 1)
            _exit(1);
        fault_mode = FAULT_TRUNCATE; /* at the ledger's sync, then die after the write */
        fault_after = 1;
        fault_next = FAULT_EXIT_AFTER_WRITE;
        b[0] = id_line("second", "m2");
        rq_output_append_batch(o, b, 1);
        _exit(3);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 9, "child status %d", status);
    expect_file("second\n", 7);
    o = rq_output_open(path, 100, err, sizeof(err)); /* the record says where "second" is */
    cr_assert_not_null(o, "%s", err);
    expect_file("second\n", 7);
    rq_output_free(o);
}

/* A ledger record cut short by a full disk (write() stores what fits and returns less) must
 * be reported as what it is, the next write's errno (ENOSPC; EFBIG here, from RLIMIT_FSIZE
 * standing in for the full disk), not as EIO: an SRE reading "Input/output error" looks for
 * a failing disk, not a full one (found by the fault campaign, seed 11, 900 s). */
Test(output, a_short_ledger_write_reports_the_disk_error_not_eio)
{
    char err[256], old[200];
    rq_output_t *o = rq_output_open(path, 100, err, sizeof(err));
    rq_output_line_t b[1];
    struct rlimit rl;
    off_t lsize;
    int fd, rc;

    cr_assert_not_null(o, "%s", err);
    /* A big ledger beside a new, empty output file: the ledger is the larger file. */
    for (int i = 0; i < 40; i++) {
        char id[16];
        snprintf(id, sizeof(id), "m%d", i);
        b[0] = id_line("x", id);
        cr_assert_eq(rq_output_append_batch(o, b, 1), 1);
    }
    snprintf(old, sizeof(old), "%s.1", path);
    cr_assert_eq(rename(path, old), 0);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    cr_assert_geq(fd, 0);
    close(fd);
    cr_assert_eq(rq_output_reopen(o), 0);
    lsize = size_of(ledger);
    cr_assert_gt(lsize, 100);
    /* Room for the output line and 3 bytes of the next ledger record. */
    signal(SIGXFSZ, SIG_IGN);
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
    rl.rlim_cur = (rlim_t)lsize + 3; /* the hard limit stays: the soft one can come back */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    b[0] = id_line("y", "n1");
    rc = rq_output_append_batch(o, b, 1);
    cr_expect_eq(rc, -EFBIG, "got %d (%s)", rc, rc < 0 ? strerror(-rc) : "written");
    cr_expect_eq(size_of(ledger), lsize, "the cut record is undone");
    rl.rlim_cur = rl.rlim_max;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
    rc = rq_output_append_batch(o, b, 1);
    cr_expect_eq(rc, 1, "written once there is room: got %d", rc);
    expect_file("y\n", 2);
    rq_output_free(o);
}
