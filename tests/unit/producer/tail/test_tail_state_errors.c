/* Unit tests for producer/tail/tail_state.c: the exact error text of every way
 * rq_tail_state_load refuses a state file (issue 12 split the function into helpers; these
 * texts were produced by the code before the split and must not change). */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tail_state.h"

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof(dir), "/tmp/rq-tse-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void)
{
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        cr_log_warn("cannot remove %s", dir);
}

TestSuite(tail_state_errors, .init = make_dir, .fini = remove_dir, .timeout = 30);

/* Writes the state text `body` (the lines after the magic line) with a correct sum line,
 * unless `sum` is non-NULL (then that sum line text is used verbatim). */
static void write_state(const char *path, const char *body, const char *sum)
{
    char text[8192];
    int n = snprintf(text, sizeof(text), "relayq-tail-state 1\n%s", body);
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    fwrite(text, 1, (size_t)n, f);
    if (sum)
        fputs(sum, f);
    else
        fprintf(f, "sum %016" PRIx64 "\n", rq_tail_hash(text, (size_t)n));
    fclose(f);
}

static void expect_refused(const char *path, const char *want_after_path)
{
    char err[256], want[512];
    rq_tail_state_t st;

    memset(err, 'x', sizeof(err));
    memset(&st, 0x55, sizeof(st));
    cr_expect_eq(rq_tail_state_load(path, &st, err, sizeof(err)), -1, "%s", want_after_path);
    snprintf(want, sizeof(want), "%s%s", path, want_after_path);
    cr_expect_str_eq(err, want);
    cr_expect_eq(st.offset, 0, "st is zeroed on failure");
    cr_expect_eq(st.file_id[0], '\0', "st is zeroed on failure");
}

#define GOOD_FIELDS                                                                                \
    "dev 2049\n"                                                                                   \
    "ino 777\n"                                                                                    \
    "fp_len 64\n"                                                                                  \
    "fp 0000000000000001\n"                                                                        \
    "offset 4096\n"                                                                                \
    "before_len 64\n"                                                                              \
    "before 0000000000000002\n"

Test(tail_state_errors, each_refusal_has_its_text)
{
    char p[128];

    snprintf(p, sizeof(p), "%s/s.state", dir);

    write_state(p, "file_id 803-1a2b-00ff\n" GOOD_FIELDS, NULL);
    {
        rq_tail_state_t st;
        char err[64] = "";
        cr_assert_eq(rq_tail_state_load(p, &st, err, sizeof(err)), 0, "%s", err);
        cr_expect_eq(st.offset, 4096);
        cr_expect_str_eq(st.file_id, "803-1a2b-00ff");
    }
    write_state(p, "file_id 803-1a2b-00ff\n" GOOD_FIELDS, "sum 12\n");
    expect_refused(p, ": bad checksum line");
    write_state(p, "file_id 803-1a2b-00ff\n" GOOD_FIELDS, "sum 0000000000000000\n");
    expect_refused(p, ": checksum mismatch (damaged)");
    write_state(p, "file_id NOT_HEX\n" GOOD_FIELDS, NULL);
    expect_refused(p, ": bad or missing file_id");
    write_state(p, "file_id 803-1a2b-00ff\ndev 2049\nino x\n", NULL);
    expect_refused(p, ": bad or missing ino");
    write_state(p, "file_id 803-1a2b-00ff\ndev 2049\nino 777\nfp_len 999999\n", NULL);
    expect_refused(p, ": bad or missing fp_len");
    write_state(p,
                "file_id 803-1a2b-00ff\ndev 1\nino 2\nfp_len 64\nfp 0000000000000001\noffset 10\n"
                "before_len 64\nbefore 0000000000000002\n",
                NULL);
    expect_refused(p, ": before_len exceeds offset");
    write_state(p, "file_id 803-1a2b-00ff\n" GOOD_FIELDS "extra 1\n", NULL);
    expect_refused(p, ": unexpected lines");

    {
        FILE *f = fopen(p, "w");
        cr_assert_not_null(f);
        fputs("relayq-tail-state 2\nsum 0000000000000000\n", f);
        fclose(f);
        expect_refused(p, ": not a version 1 tail state file (or cut short)");
        f = fopen(p, "w");
        fputs("relayq-tail-state 1\nfile_id", f);
        fclose(f);
        expect_refused(p, ": not a version 1 tail state file (or cut short)");
        f = fopen(p, "w");
        fwrite("relayq-tail-state 1\n\0sum 0\n", 1, 28, f);
        fclose(f);
        expect_refused(p, ": NUL byte in the state file");
        f = fopen(p, "w");
        for (int i = 0; i < 5000; i++)
            fputc('a', f);
        fclose(f);
        expect_refused(p, ": larger than any state file");
        f = fopen(p, "w");
        for (int i = 0; i < 4095; i++) /* the largest size still read whole */
            fputc('a', f);
        fclose(f);
        expect_refused(p, ": not a version 1 tail state file (or cut short)");
    }
}

Test(tail_state_errors, unreadable_and_missing)
{
    char p[128], err[256], want[256];
    rq_tail_state_t st;

    snprintf(p, sizeof(p), "%s/none.state", dir);
    strcpy(err, "untouched");
    cr_expect_eq(rq_tail_state_load(p, &st, err, sizeof(err)), 1, "no state file");
    cr_expect_str_eq(err, "untouched");
    /* A folder opens read-only but cannot be read. */
    cr_expect_eq(rq_tail_state_load(dir, &st, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "read %s: Is a directory", dir);
    cr_expect_str_eq(err, want);
    cr_expect_eq(rq_tail_state_load(dir, &st, NULL, 0), -1, "err may be NULL");
}

Test(tail_state_errors, save_errors_name_the_step)
{
    char p[128], err[256], want[256];
    rq_tail_state_t st = {0};

    snprintf(st.file_id, sizeof(st.file_id), "1-2-3");
    snprintf(p, sizeof(p), "%s/no-such-dir/s.state", dir);
    cr_expect_eq(rq_tail_state_save(p, &st, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "open %s.tmp: No such file or directory", p);
    cr_expect_str_eq(err, want);
    st.file_id[0] = '\0';
    cr_expect_eq(rq_tail_state_save(p, &st, err, sizeof(err)), -1);
    cr_expect_str_eq(err, "invalid file id");
}
