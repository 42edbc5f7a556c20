/* test_tail_watch.c - the verdicts about the open file (truncated, rewritten, rotated,
 * deleted, still at the path) and finding a rotated file by its saved identity, on real
 * files in a scratch folder. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tail_watch.h"

static char dir[] = "/tmp/rq_tail_watch_XXXXXX";
static char path[300];

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/in.log", dir);
}

static void teardown(void)
{
    char cmd[400];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

static void put(const char *p, const char *text, int flags)
{
    int fd = open(p, O_WRONLY | O_CREAT | flags, 0644);

    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* The open file after reading all of "hello\nworld\n". */
typedef struct opened {
    int fd;
    rq_tail_ident_t id;
    unsigned char head[RQ_TAIL_FP_BYTES];
    rq_tail_reading_t r;
} opened_t;

static void open_read(opened_t *o)
{
    static const unsigned char last[] = "world\n";

    put(path, "hello\nworld\n", O_TRUNC);
    o->fd = open(path, O_RDONLY);
    cr_assert_geq(o->fd, 0);
    cr_assert_eq(rq_tail_ident_of_fd(o->fd, &o->id, o->head), 0);
    o->r = (rq_tail_reading_t){o->fd, path, &o->id, o->head, 12, last, 6};
}

static rq_tail_verdict_kind_t check(opened_t *o, rq_tail_verdict_t *v)
{
    return rq_tail_watch_check(&o->r, v);
}

Test(tail_watch, at_path, .init = setup, .fini = teardown)
{
    opened_t o;
    rq_tail_verdict_t v;

    open_read(&o);
    cr_assert_eq(check(&o, &v), RQ_TAIL_AT_PATH);
    cr_assert(v.have_size);
    cr_assert_eq(v.size, 12);
    put(path, "more\n", O_APPEND);
    cr_assert_eq(check(&o, &v), RQ_TAIL_AT_PATH, "growing is no change");
    cr_assert_eq(v.size, 17);
    close(o.fd);
}

Test(tail_watch, truncated_and_rewritten, .init = setup, .fini = teardown)
{
    opened_t o;
    rq_tail_verdict_t v;

    open_read(&o);
    put(path, "hel", O_TRUNC);
    cr_assert_eq(check(&o, &v), RQ_TAIL_TRUNCATED);
    cr_assert_str_eq(v.why, "was truncated");
    cr_assert_eq(v.size, 3);
    put(path, "hello\nWORLD\n", O_TRUNC);
    cr_assert_eq(check(&o, &v), RQ_TAIL_TRUNCATED);
    cr_assert_str_eq(v.why, "was rewritten before the read position (copytruncate?)");
    put(path, "HELLO\nworld\n", O_TRUNC);
    cr_assert_eq(check(&o, &v), RQ_TAIL_TRUNCATED);
    cr_assert_str_eq(v.why, "had its first bytes rewritten (copytruncate?)");
    close(o.fd);
}

Test(tail_watch, renamed_replaced_deleted, .init = setup, .fini = teardown)
{
    opened_t o;
    rq_tail_verdict_t v;
    char old[400];

    open_read(&o);
    snprintf(old, sizeof(old), "%s/in.log.1", dir);
    cr_assert_eq(rename(path, old), 0);
    cr_assert_eq(check(&o, &v), RQ_TAIL_MOVED);
    cr_assert_not(v.path_exists);
    cr_assert_not(v.unlinked, "renamed away: still has a name");
    put(path, "new\n", O_TRUNC);
    cr_assert_eq(check(&o, &v), RQ_TAIL_MOVED);
    cr_assert(v.path_exists);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(unlink(old), 0);
    cr_assert_eq(check(&o, &v), RQ_TAIL_MOVED);
    cr_assert_not(v.path_exists);
    cr_assert(v.unlinked);
    close(o.fd);
}

Test(tail_watch, find_by_saved_identity, .init = setup, .fini = teardown)
{
    opened_t o;
    rq_tail_state_t st;
    char name[256], old[400];
    int fd;

    open_read(&o);
    memset(&st, 0, sizeof(st));
    st.ident = o.id;
    st.offset = 12;
    st.before_len = 6;
    st.before_hash = rq_tail_hash((const unsigned char *)"world\n", 6);
    snprintf(old, sizeof(old), "%s/in.log.1", dir);
    cr_assert_eq(rename(path, old), 0);
    put(path, "new\n", O_TRUNC);
    fd = rq_tail_watch_find(dir, &st, name, sizeof(name));
    cr_assert_geq(fd, 0);
    cr_assert_str_eq(name, "in.log.1");
    close(fd);
    st.before_hash ^= 1; /* the bytes before the offset differ: not the saved file */
    cr_assert_eq(rq_tail_watch_find(dir, &st, name, sizeof(name)), -1);
    cr_assert_eq(rq_tail_watch_find("/nonexistent-rq-dir", &st, name, sizeof(name)), -1);
    close(o.fd);
}

Test(tail_watch, without_inotify)
{
    rq_tail_watch_t *w = rq_tail_watch_new("/tmp", 0, 100);

    cr_assert_not_null(w);
    cr_assert_eq(rq_tail_watch_fd(w), -1);
    rq_tail_watch_dir(w, 0);
    rq_tail_watch_drain(w);
    rq_tail_watch_unwatch_file(w);
    rq_tail_watch_free(w);
    rq_tail_watch_free(NULL);
}
