/* test_tail_state.c - tail position save/restore and file identity checks, on temp files. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tail_state.h"

static char tmpdir[256];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/rq_test_tail_state_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[600];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
    }
    closedir(d);
    rmdir(tmpdir);
}

TestSuite(tail_state, .init = make_tmpdir, .fini = remove_tmpdir);

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *data, size_t len, int flags)
{
    int fd = open(path, O_WRONLY | O_CREAT | flags, 0644);

    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(65536);

    cr_assert_not_null(f);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

/* A state for `path` at `offset`, as the tailer would build it. Returns the open fd. */
static int state_for(const char *path, int64_t offset, rq_tail_state_t *st)
{
    int fd = open(path, O_RDONLY);

    cr_assert(fd >= 0);
    memset(st, 0, sizeof(*st));
    cr_assert_eq(rq_tail_ident_of_fd(fd, &st->ident, NULL), 0);
    rq_tail_new_file_id(&st->ident, st->file_id);
    st->offset = offset;
    cr_assert_eq(rq_tail_state_hash_before(st, fd), 0);
    return fd;
}

static int verify_path(const rq_tail_state_t *st, const char *path, char *why, size_t whylen)
{
    int fd = open(path, O_RDONLY), m;

    cr_assert(fd >= 0);
    m = rq_tail_state_verify(st, fd, why, whylen);
    close(fd);
    return m;
}

static const char *log_text(int lines, char *buf, size_t len)
{
    size_t n = 0;

    for (int i = 0; i < lines && n + 64 < len; i++)
        n += (size_t)snprintf(buf + n, len - n, "2026-11-22T19:30:%02d line number %04d\n", i % 60,
                              i);
    return buf;
}

/* ---- hash and ids ---------------------------------------------------------------------- */

Test(tail_state, hash_is_fnv1a_64)
{
    /* published FNV-1a 64 test vectors: the hash is saved on disk, it must never change */
    cr_expect_eq(rq_tail_hash("", 0), 0xcbf29ce484222325ULL);
    cr_expect_eq(rq_tail_hash("a", 1), 0xaf63dc4c8601ec8cULL);
    cr_expect_eq(rq_tail_hash("foobar", 6), 0x85944171f73967e8ULL);
}

Test(tail_state, file_ids_are_valid_distinct_and_name_the_inode)
{
    rq_tail_ident_t id = {0x803, 0x1a2b3c, 64, 42};
    char a[RQ_TAIL_FILE_ID_MAX], b[RQ_TAIL_FILE_ID_MAX];

    rq_tail_new_file_id(&id, a);
    rq_tail_new_file_id(&id, b);
    cr_expect(rq_tail_file_id_valid(a), "%s", a);
    cr_expect_str_neq(a, b, "a new generation gets a new id");
    cr_expect_eq(strncmp(a, "803-1a2b3c-", 11), 0, "%s", a);
    cr_expect_eq(strlen(a), 11u + 16u);
    cr_expect_not(rq_tail_file_id_valid(""));
    cr_expect_not(rq_tail_file_id_valid("ABC"));
    cr_expect_not(rq_tail_file_id_valid("a:b"));
    cr_expect_not(rq_tail_file_id_valid("a b"));
}

Test(tail_state, state_path_is_per_input)
{
    char a[512], b[512], c[512], cwd[512], rel[600];

    cr_assert_eq(rq_tail_state_path("/st", "/var/log/app.log", a, sizeof(a)), 0);
    cr_assert_eq(rq_tail_state_path("/st", "/var/log/app.log", b, sizeof(b)), 0);
    cr_expect_str_eq(a, b);
    cr_expect_eq(strncmp(a, "/st/app.log.", 12), 0, "%s", a);
    cr_expect_eq(strcmp(a + strlen(a) - 6, ".state"), 0, "%s", a);
    cr_assert_eq(rq_tail_state_path("/st", "/srv/app.log", c, sizeof(c)), 0);
    cr_expect_str_neq(a, c, "same name in another folder: another state");
    cr_assert_eq(rq_tail_state_path("/st", "/x/we ird*name\n", c, sizeof(c)), 0);
    cr_expect_eq(strncmp(c, "/st/we_ird_name_.", 17), 0, "%s", c);
    /* a relative input means the same file as its absolute path */
    cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
    snprintf(rel, sizeof(rel), "%s/in.log", cwd);
    cr_assert_eq(rq_tail_state_path("d", "in.log", a, sizeof(a)), 0);
    cr_assert_eq(rq_tail_state_path("d", rel, b, sizeof(b)), 0);
    cr_expect_str_eq(a, b);
    cr_expect_eq(rq_tail_state_path("/st", "/a", a, 10), -1, "too small a buffer");
}

/* ---- save / load ----------------------------------------------------------------------- */

Test(tail_state, save_load_round_trip)
{
    char sp[512];
    rq_tail_state_t st = {0}, back;
    char err[256] = "";

    path_in(sp, sizeof(sp), "x.state");
    snprintf(st.file_id, sizeof(st.file_id), "803-1a2b3c-00ff00ff00ff00ff");
    st.ident.dev = UINT64_MAX - 1;
    st.ident.ino = 123456789012345ULL;
    st.ident.fp_len = 17;
    st.ident.fp = 0x0123456789abcdefULL;
    st.offset = INT64_MAX - 5;
    st.before_len = 64;
    st.before_hash = 0xfedcba9876543210ULL;
    cr_assert_eq(rq_tail_state_save(sp, &st, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(rq_tail_state_load(sp, &back, err, sizeof(err)), 0, "%s", err);
    cr_expect_str_eq(back.file_id, st.file_id);
    cr_expect_eq(back.ident.dev, st.ident.dev);
    cr_expect_eq(back.ident.ino, st.ident.ino);
    cr_expect_eq(back.ident.fp_len, st.ident.fp_len);
    cr_expect_eq(back.ident.fp, st.ident.fp);
    cr_expect_eq(back.offset, st.offset);
    cr_expect_eq(back.before_len, st.before_len);
    cr_expect_eq(back.before_hash, st.before_hash);

    /* offset 0 with nothing before it */
    st.offset = 0;
    st.before_len = 0;
    st.before_hash = rq_tail_hash("", 0);
    cr_assert_eq(rq_tail_state_save(sp, &st, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(rq_tail_state_load(sp, &back, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(back.offset, 0);
}

Test(tail_state, missing_state_file_is_not_an_error)
{
    char sp[512];
    rq_tail_state_t st;

    path_in(sp, sizeof(sp), "none.state");
    memset(&st, 0xab, sizeof(st));
    cr_expect_eq(rq_tail_state_load(sp, &st, NULL, 0), 1);
    cr_expect_eq(st.offset, 0, "zeroed");
}

static int count_entries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    int n = 0;

    cr_assert_not_null(d);
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

Test(tail_state, save_replaces_atomically)
{
    char sp[512], tmp[600];
    rq_tail_state_t a = {0}, b, back;
    struct stat s1, s2;

    path_in(sp, sizeof(sp), "r.state");
    snprintf(a.file_id, sizeof(a.file_id), "1-2-0000000000000003");
    a.offset = 10;
    a.before_len = 10;
    b = a;
    b.offset = 20;
    cr_assert_eq(rq_tail_state_save(sp, &a, NULL, 0), 0);
    cr_assert_eq(stat(sp, &s1), 0);
    cr_assert_eq(rq_tail_state_save(sp, &b, NULL, 0), 0);
    cr_assert_eq(stat(sp, &s2), 0);
    /* rename: the new state is a new inode, never the old one rewritten in place */
    cr_expect_neq(s1.st_ino, s2.st_ino);
    cr_assert_eq(rq_tail_state_load(sp, &back, NULL, 0), 0);
    cr_expect_eq(back.offset, 20);
    cr_expect_eq(count_entries(), 1, "no temporary file left behind");

    /* a crash while writing leaves a partial temp file: the saved state is untouched */
    snprintf(tmp, sizeof(tmp), "%s.tmp", sp);
    write_file(tmp, "relayq-tail-state 1\nfile_id 1-2-3\noff", 37, O_TRUNC);
    cr_assert_eq(rq_tail_state_load(sp, &back, NULL, 0), 0);
    cr_expect_eq(back.offset, 20);
    /* and the next save goes through */
    cr_assert_eq(rq_tail_state_save(sp, &a, NULL, 0), 0);
    cr_assert_eq(rq_tail_state_load(sp, &back, NULL, 0), 0);
    cr_expect_eq(back.offset, 10);
    cr_expect_eq(count_entries(), 1);
}

Test(tail_state, save_failure_keeps_the_old_state)
{
    char sp[512], err[256] = "";
    rq_tail_state_t st = {0};

    path_in(sp, sizeof(sp), "no-such-dir/s.state");
    snprintf(st.file_id, sizeof(st.file_id), "1-2-3");
    cr_expect_eq(rq_tail_state_save(sp, &st, err, sizeof(err)), -1);
    cr_expect_neq(err[0], '\0');
    st.file_id[0] = '\0';
    path_in(sp, sizeof(sp), "s.state");
    cr_expect_eq(rq_tail_state_save(sp, &st, NULL, 0), -1, "an invalid file id is refused");
    cr_expect_eq(count_entries(), 0);
}

/* Every prefix of a valid state file (a torn write on a filesystem without atomic rename)
 * and every single-byte change is refused, never half-loaded. */
Test(tail_state, damaged_state_files_are_refused)
{
    char sp[512], dp[512], err[256];
    rq_tail_state_t st = {0}, back;
    size_t len;
    char *good;

    path_in(sp, sizeof(sp), "good.state");
    path_in(dp, sizeof(dp), "bad.state");
    snprintf(st.file_id, sizeof(st.file_id), "803-1a2b3c-00ff00ff00ff00ff");
    st.ident.dev = 2049;
    st.ident.ino = 777;
    st.ident.fp_len = 64;
    st.ident.fp = 1;
    st.offset = 4096;
    st.before_len = 64;
    st.before_hash = 2;
    cr_assert_eq(rq_tail_state_save(sp, &st, NULL, 0), 0);
    good = read_file(sp, &len);
    cr_assert_gt(len, 100u);

    for (size_t cut = 0; cut < len; cut++) {
        write_file(dp, good, cut, O_TRUNC);
        err[0] = '\0';
        cr_assert_eq(rq_tail_state_load(dp, &back, err, sizeof(err)), -1,
                     "a state cut at %zu bytes was accepted", cut);
        cr_expect_neq(err[0], '\0');
        cr_expect_eq(back.offset, 0);
    }
    for (size_t i = 0; i < len; i++) {
        char *bad = malloc(len);
        memcpy(bad, good, len);
        bad[i] ^= 0x01;
        write_file(dp, bad, len, O_TRUNC);
        cr_assert_eq(rq_tail_state_load(dp, &back, NULL, 0), -1,
                     "a state with byte %zu changed was accepted", i);
        free(bad);
    }
    /* appended junk, another version, NUL bytes */
    {
        char more[2048];
        memcpy(more, good, len);
        memcpy(more + len, "x 1\n", 4);
        write_file(dp, more, len + 4, O_TRUNC);
        cr_expect_eq(rq_tail_state_load(dp, &back, NULL, 0), -1, "trailing line");
        memcpy(more, good, len);
        more[18] = '2';
        write_file(dp, more, len, O_TRUNC);
        cr_expect_eq(rq_tail_state_load(dp, &back, NULL, 0), -1, "version 2");
        memcpy(more, good, len);
        more[30] = '\0';
        write_file(dp, more, len, O_TRUNC);
        cr_expect_eq(rq_tail_state_load(dp, &back, NULL, 0), -1, "NUL byte");
    }
    /* a huge file is not read into memory whole */
    {
        char *big = calloc(1, 1 << 20);
        memcpy(big, good, len);
        write_file(dp, big, 1 << 20, O_TRUNC);
        cr_expect_eq(rq_tail_state_load(dp, &back, NULL, 0), -1);
        free(big);
    }
    /* the good one still loads */
    cr_expect_eq(rq_tail_state_load(sp, &back, NULL, 0), 0);
    free(good);
}

/* ---- identity and hash-before-offset verification -------------------------------------- */

Test(tail_state, same_file_resumes_and_keeps_resuming_as_it_grows)
{
    char p[512], text[8192], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(p, sizeof(p), "app.log");
    log_text(20, text, sizeof(text));
    write_file(p, text, strlen(text), O_TRUNC);
    fd = state_for(p, 200, &st);
    close(fd);
    cr_expect_eq(st.ident.fp_len, 64u);
    cr_expect_eq(st.before_len, 64u);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
    write_file(p, "appended\n", 9, O_APPEND);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
    /* the offset at the very end of the file is fine */
    fd = state_for(p, (int64_t)strlen(text) + 9, &st);
    close(fd);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
}

Test(tail_state, short_fingerprint_still_matches_after_growth)
{
    char p[512], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(p, sizeof(p), "small.log");
    write_file(p, "tiny\n", 5, O_TRUNC);
    fd = state_for(p, 5, &st);
    close(fd);
    cr_expect_eq(st.ident.fp_len, 5u);
    cr_expect_eq(st.before_len, 5u);
    for (int i = 0; i < 30; i++)
        write_file(p, "more lines here\n", 16, O_APPEND);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
}

Test(tail_state, offset_zero_of_an_empty_file)
{
    char p[512], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(p, sizeof(p), "empty.log");
    write_file(p, "", 0, O_TRUNC);
    fd = state_for(p, 0, &st);
    close(fd);
    cr_expect_eq(st.ident.fp_len, 0u);
    cr_expect_eq(st.before_len, 0u);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
    write_file(p, "x\n", 2, O_APPEND);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
}

Test(tail_state, another_file_is_other)
{
    char a[512], b[512], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(a, sizeof(a), "a.log");
    path_in(b, sizeof(b), "b.log");
    write_file(a, "same content\n", 13, O_TRUNC);
    write_file(b, "same content\n", 13, O_TRUNC);
    fd = state_for(a, 13, &st);
    close(fd);
    cr_expect_eq(verify_path(&st, b, why, sizeof(why)), RQ_TAIL_OTHER);
    cr_expect_neq(why[0], '\0');
}

/* logrotate copytruncate: the file is copied away, truncated, and written again. */
Test(tail_state, copytruncate_is_recognised)
{
    char p[512], text[8192], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(p, sizeof(p), "ct.log");
    log_text(50, text, sizeof(text));
    write_file(p, text, strlen(text), O_TRUNC);
    fd = state_for(p, 1000, &st);
    close(fd);
    /* truncated and nothing written yet */
    cr_assert_eq(truncate(p, 0), 0);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_REWRITTEN);
    /* truncated and new lines written past the old offset: the first bytes differ */
    log_text(10, text, sizeof(text));
    for (int i = 0; i < 8; i++)
        write_file(p, "new content after copytruncate, more than before\n", 50, O_APPEND);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_REWRITTEN);
    cr_expect(strstr(why, "first bytes") != NULL, "%s", why);
}

/* Rewritten with the same first bytes (a header line, say): the bytes before the offset
 * give it away. */
Test(tail_state, same_head_other_content_is_recognised_by_the_bytes_before)
{
    char p[512], text[8192], why[256] = "";
    rq_tail_state_t st;
    size_t len;
    int fd;

    path_in(p, sizeof(p), "hdr.log");
    log_text(50, text, sizeof(text));
    len = strlen(text);
    write_file(p, text, len, O_TRUNC);
    fd = state_for(p, 600, &st);
    close(fd);
    cr_assert_eq(truncate(p, 0), 0);
    text[580] ^= 0x20; /* same size, same first 64 bytes, one byte before the offset differs */
    write_file(p, text, len, O_TRUNC);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_REWRITTEN);
    cr_expect(strstr(why, "before the saved offset") != NULL, "%s", why);
    /* a byte after the offset may differ: that part was never read */
    text[580] ^= 0x20;
    text[700] ^= 0x20;
    write_file(p, text, len, O_TRUNC);
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_SAME, "%s", why);
}

Test(tail_state, truncated_below_the_offset_is_recognised)
{
    char p[512], text[8192], why[256] = "";
    rq_tail_state_t st;
    int fd;

    path_in(p, sizeof(p), "tr.log");
    log_text(50, text, sizeof(text));
    write_file(p, text, strlen(text), O_TRUNC);
    fd = state_for(p, 1500, &st);
    close(fd);
    cr_assert_eq(truncate(p, 1000), 0); /* keeps the fingerprint, loses the offset */
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_REWRITTEN);
    cr_expect(strstr(why, "shorter than the saved offset") != NULL, "%s", why);
    cr_assert_eq(truncate(p, 10), 0); /* shorter than the fingerprint */
    cr_expect_eq(verify_path(&st, p, why, sizeof(why)), RQ_TAIL_REWRITTEN);
}

/* A new file that got the old file's inode number: same dev/ino, other first bytes. */
Test(tail_state, reused_inode_is_recognised_by_the_fingerprint)
{
    char a[512], b[512], text[8192], why[256] = "";
    rq_tail_state_t st, other;
    struct stat sb;
    int fd, reused = 0;

    path_in(a, sizeof(a), "old.log");
    path_in(b, sizeof(b), "new.log");
    log_text(40, text, sizeof(text));
    write_file(a, text, strlen(text), O_TRUNC);
    fd = state_for(a, 800, &st);
    close(fd);

    /* deterministic: give a different file's identity the saved dev/ino */
    write_file(b, "a different file, long enough to pass the old offset?\n", 54, O_TRUNC);
    fd = state_for(b, 0, &other);
    close(fd);
    other = st;
    cr_assert_eq(stat(b, &sb), 0);
    other.ident.dev = (uint64_t)sb.st_dev;
    other.ident.ino = (uint64_t)sb.st_ino;
    cr_expect_eq(verify_path(&other, b, why, sizeof(why)), RQ_TAIL_REWRITTEN);
    cr_expect(strstr(why, "first bytes") != NULL || strstr(why, "shorter") != NULL, "%s", why);

    /* the real thing, when the filesystem hands the freed inode number out again */
    for (int i = 0; i < 50 && !reused; i++) {
        char c[512];
        snprintf(c, sizeof(c), "%s/reuse%d.log", tmpdir, i);
        unlink(a);
        write_file(c, "a brand new log file that is not the old one at all, honest\n", 60, O_TRUNC);
        cr_assert_eq(stat(c, &sb), 0);
        if ((uint64_t)sb.st_ino == st.ident.ino && (uint64_t)sb.st_dev == st.ident.dev) {
            reused = 1;
            cr_expect_eq(verify_path(&st, c, why, sizeof(why)), RQ_TAIL_REWRITTEN, "%s", why);
        }
        unlink(c);
    }
    if (!reused)
        cr_log_info("the filesystem did not reuse the inode; the constructed case covers it");
}

Test(tail_state, hash_before_needs_the_bytes)
{
    char p[512];
    rq_tail_state_t st = {0};
    int fd;

    path_in(p, sizeof(p), "hb.log");
    write_file(p, "0123456789", 10, O_TRUNC);
    fd = open(p, O_RDONLY);
    st.offset = 0;
    cr_expect_eq(rq_tail_state_hash_before(&st, fd), 0);
    cr_expect_eq(st.before_len, 0u);
    st.offset = 10;
    cr_expect_eq(rq_tail_state_hash_before(&st, fd), 0);
    cr_expect_eq(st.before_len, 10u);
    cr_expect_eq(st.before_hash, rq_tail_hash("0123456789", 10));
    st.offset = 11;
    cr_expect_eq(rq_tail_state_hash_before(&st, fd), -EIO);
    close(fd);
}
