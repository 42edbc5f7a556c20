/* test_tailer.c - the tail thread on real temporary files: growth, rotation by rename,
 * copytruncate, delete + recreate, missing files, resume, reused inodes, overlong lines,
 * refused and failed jobs, back-pressure, and kill -9 at random moments.
 *
 * The tailer hands jobs to a submit hook. Here the hook is a recording sink: a thread that
 * takes accepted jobs in order, records their messages (a stand-in for the broker storing
 * them) and then calls done, with the publisher's contract (refusal = done never called;
 * done exactly once, on another thread). The real publisher and broker are exercised by the
 * integration run. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "tail_state.h"
#include "tailer.h"
#include "util.h"

/* ---- the recording sink ---------------------------------------------------------------- */

typedef struct rec {
    char *id, *file, *body;
    size_t len;
    int64_t off;
} rec_t;

typedef struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    rq_pub_job_t **q;
    size_t qhead, qlen, qcap;
    rec_t *rec;
    size_t nrec, reccap;
    int refuse_first, refused; /* refuse this many submits first */
    int fail_every, jobs_seen; /* complete every Nth job with RQ_JOB_UNAVAILABLE */
    int hold;                  /* while set, accepted jobs wait */
    int inflight, max_inflight;
    int log_fd;         /* >= 0: append records there (fork test) */
    size_t chunk_bytes; /* the tailer's chunk_bytes, checked against every chunk */
    size_t nmsgs, nchunks, max_chunk_records;
    int delay_us;
    int stop;
    pthread_t th;
    char bad[256]; /* first contract violation seen */
} sink_t;

static void hexs(const char *p, size_t n, char *out);

static void sink_bad(sink_t *s, const char *what)
{
    if (s->bad[0] == '\0')
        snprintf(s->bad, sizeof(s->bad), "%s", what);
}

static void check_job(sink_t *s, rq_pub_job_t *job)
{
    char want[200];

    if (!job->retry_forever || job->want_reply || job->n == 0 || job->done == NULL)
        sink_bad(s, "job flags");
    for (size_t i = 0; i < job->n; i++) {
        rq_pub_msg_t *m = &job->msgs[i];
        snprintf(want, sizeof(want), "%s:%" PRId64, m->file_id ? m->file_id : "?", m->offset);
        if (m->message_id == NULL || strcmp(m->message_id, want) != 0)
            sink_bad(s, "message id is not <file id>:<offset>");
        if (m->content_type == NULL || strcmp(m->content_type, "application/octet-stream") != 0)
            sink_bad(s, "content type");
        if (m->source == NULL || strcmp(m->source, "tail") != 0)
            sink_bad(s, "source");
        if (m->body == NULL && m->body_len > 0)
            sink_bad(s, "body");
        if (m->published_ms <= 0)
            sink_bad(s, "published_ms");
        if (m->chunk) {
            int64_t nl = 0;
            for (size_t k = 0; k < m->body_len; k++)
                nl += m->body[k] == '\n';
            if (m->end_offset - m->offset != (int64_t)m->body_len)
                sink_bad(s, "a chunk's body is not its byte range [offset, end)");
            if (m->lines != nl)
                sink_bad(s, "x-lines is not the number of newlines in the chunk");
            /* beyond chunk_bytes only one record: at most one '\n', at the very end */
            if (m->body_len > s->chunk_bytes &&
                (nl > 1 || (nl == 1 && m->body[m->body_len - 1] != '\n')))
                sink_bad(s, "a chunk of several records is larger than chunk_bytes");
        } else if (m->end_offset <= m->offset) {
            sink_bad(s, "a one-line message with an empty range");
        }
    }
}

/* Records one line (or piece) as the sink's unit of comparison. Lock held. */
static void sink_record(sink_t *s, FILE *mf, const char *file, int64_t off, const char *body,
                        size_t len)
{
    char id[200];
    rec_t *r;

    if (s->nrec == s->reccap) {
        s->reccap = s->reccap ? s->reccap * 2 : 1024;
        s->rec = realloc(s->rec, s->reccap * sizeof(*s->rec));
    }
    snprintf(id, sizeof(id), "%s:%" PRId64, file, off);
    r = &s->rec[s->nrec++];
    r->id = strdup(id);
    r->file = strdup(file);
    r->body = malloc(len + 1);
    memcpy(r->body, body, len);
    r->body[len] = '\0';
    r->len = len;
    r->off = off;
    if (mf) {
        char *hx = malloc(2 * len + 1);
        hexs(body, len, hx);
        fprintf(mf, "%s\t%s\n", id, hx);
        free(hx);
    }
}

static void hexs(const char *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", (unsigned char)p[i]);
    out[2 * n] = '\0';
}

static void *sink_main(void *arg)
{
    sink_t *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        rq_pub_job_t *job;
        int fail;
        while (!s->stop && (s->qlen == 0 || s->hold))
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stop)
            break;
        job = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
        s->jobs_seen++;
        fail = s->fail_every > 0 && s->jobs_seen % s->fail_every == 0;
        if (!fail) {
            char *buf = NULL;
            size_t blen = 0;
            FILE *mf = s->log_fd >= 0 ? open_memstream(&buf, &blen) : NULL;
            for (size_t i = 0; i < job->n; i++) {
                rq_pub_msg_t *m = &job->msgs[i];
                size_t k = 0, nr = 0;
                s->nmsgs++;
                if (!m->chunk) {
                    sink_record(s, mf, m->file_id, m->offset, m->body, m->body_len);
                    continue;
                }
                /* split a chunk back into its lines (a piece without '\n' ends it) */
                s->nchunks++;
                while (k < m->body_len) {
                    const char *nl = memchr(m->body + k, '\n', m->body_len - k);
                    size_t e = nl ? (size_t)(nl - m->body) : m->body_len;
                    sink_record(s, mf, m->file_id, m->offset + (int64_t)k, m->body + k, e - k);
                    nr++;
                    k = nl ? e + 1 : e;
                }
                if (nr > s->max_chunk_records)
                    s->max_chunk_records = nr;
            }
            if (mf) {
                /* one write per job: a kill lands before or after it, never inside */
                fclose(mf);
                if (write(s->log_fd, buf, blen) != (ssize_t)blen)
                    sink_bad(s, "log write");
                free(buf);
            }
        }
        job->status = fail ? RQ_JOB_UNAVAILABLE : RQ_JOB_CONFIRMED;
        job->error = fail ? "test failure" : NULL;
        s->inflight--;
        pthread_mutex_unlock(&s->mu);
        if (s->delay_us)
            usleep((useconds_t)s->delay_us);
        job->done(job, job->done_arg);
        pthread_mutex_lock(&s->mu);
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int sink_submit(void *arg, rq_pub_job_t *job)
{
    sink_t *s = arg;

    pthread_mutex_lock(&s->mu);
    check_job(s, job);
    if (s->refused < s->refuse_first) {
        s->refused++;
        job->error = "refused by the test";
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    if (s->qlen == s->qcap) {
        size_t ncap = s->qcap ? s->qcap * 2 : 64;
        rq_pub_job_t **nq = malloc(ncap * sizeof(*nq));
        for (size_t i = 0; i < s->qlen; i++)
            nq[i] = s->q[(s->qhead + i) % s->qcap];
        free(s->q);
        s->q = nq;
        s->qcap = ncap;
        s->qhead = 0;
    }
    s->q[(s->qhead + s->qlen) % s->qcap] = job;
    s->qlen++;
    s->inflight++;
    if (s->inflight > s->max_inflight)
        s->max_inflight = s->inflight;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void sink_init(sink_t *s)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->log_fd = -1;
    s->chunk_bytes = RQ_TAIL_CHUNK_BYTES_DEFAULT;
    cr_assert_eq(pthread_create(&s->th, NULL, sink_main, s), 0);
}

static void sink_set_hold(sink_t *s, int hold)
{
    pthread_mutex_lock(&s->mu);
    s->hold = hold;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Stops the thread; accepted jobs left are completed (failed), like the publisher does. */
static void sink_stop(sink_t *s)
{
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    while (s->qlen > 0) {
        rq_pub_job_t *job = s->q[s->qhead];
        s->qhead = (s->qhead + 1) % s->qcap;
        s->qlen--;
        job->status = RQ_JOB_UNAVAILABLE;
        job->done(job, job->done_arg);
    }
}

static void sink_free(sink_t *s)
{
    for (size_t i = 0; i < s->nrec; i++) {
        free(s->rec[i].id);
        free(s->rec[i].file);
        free(s->rec[i].body);
    }
    free(s->rec);
    free(s->q);
}

static size_t sink_count(sink_t *s)
{
    size_t n;

    pthread_mutex_lock(&s->mu);
    n = s->nrec;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- fixture and helpers --------------------------------------------------------------- */

static char dir[256], input[300], statedir[300];
static rq_metrics_t *metrics;

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/rq_test_tailer_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(input, sizeof(input), "%s/in.log", dir);
    snprintf(statedir, sizeof(statedir), "%s/state", dir);
    metrics = rq_metrics_new();
    rq_log_init("test", RQ_LOG_ERROR);
}

static void teardown(void)
{
    char cmd[400];

    rq_metrics_free(metrics);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        cr_log_warn("cannot remove %s", dir);
}

TestSuite(tailer, .init = setup, .fini = teardown, .timeout = 120);

static void opts(rq_tail_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->path = input;
    o->state_dir = statedir;
    o->max_line = 1 << 20;
    o->overlong = RQ_OVERLONG_SPLIT;
    o->poll_ms = 20;
    o->rotate_wait_ms = 100;
    o->batch_lines = 50;
    o->max_inflight = 4;
    o->use_inotify = 1;
}

static rq_tailer_t *start(const rq_tail_opts_t *o, sink_t *s)
{
    char err[256] = "";
    rq_tailer_t *t = rq_tailer_new(o, metrics, sink_submit, s, err, sizeof(err));

    cr_assert_not_null(t, "rq_tailer_new: %s", err);
    return t;
}

/* Stops tailer and sink in the producer's order, then frees the tailer. */
static void finish(rq_tailer_t *t, sink_t *s)
{
    rq_tailer_stop(t, 2000);
    sink_stop(s);
    rq_tailer_free(t);
}

static void append(const char *path, const char *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);

    cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void append_str(const char *path, const char *s)
{
    append(path, s, strlen(s));
}

/* Expected lines, in order. */
typedef struct lines {
    char **v;
    size_t *len;
    size_t n, cap;
} lines_t;

static void lines_add(lines_t *l, const char *p, size_t n)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        l->len = realloc(l->len, l->cap * sizeof(*l->len));
    }
    l->v[l->n] = malloc(n + 1);
    memcpy(l->v[l->n], p, n);
    l->v[l->n][n] = '\0';
    l->len[l->n++] = n;
}

static void lines_free(lines_t *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    free(l->len);
}

/* Appends lines "<tag> <i>" for i in [from, to) to path (NULL: none) and to want. */
static void write_lines(const char *path, const char *tag, int from, int to, lines_t *want)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *m = open_memstream(&buf, &blen);

    for (int i = from; i < to; i++) {
        char line[128];
        int n = snprintf(line, sizeof(line), "%s %06d the quick brown fox", tag, i);
        fprintf(m, "%s\n", line);
        if (want)
            lines_add(want, line, (size_t)n);
    }
    fclose(m);
    if (path)
        append(path, buf, blen);
    free(buf);
}

static int wait_for(sink_t *s, size_t n, double seconds)
{
    int64_t end = rq_mono_ms() + (int64_t)(seconds * 1000);

    while (rq_mono_ms() < end) {
        if (sink_count(s) >= n)
            return 1;
        usleep(5000);
    }
    return sink_count(s) >= n;
}

static void wait_committed(rq_tailer_t *t, int64_t off, double seconds)
{
    int64_t end = rq_mono_ms() + (int64_t)(seconds * 1000);
    rq_tail_stats_t st;

    do {
        rq_tailer_stats(t, &st);
        if (st.committed >= off && st.inflight_jobs == 0)
            return;
        usleep(5000);
    } while (rq_mono_ms() < end);
    cr_assert_fail("committed offset %lld, expected %lld", (long long)st.committed, (long long)off);
}

/* The records must be exactly the expected lines, in order, each once. */
static void expect_exactly(sink_t *s, const lines_t *want)
{
    cr_assert_str_empty(s->bad, "sink saw: %s", s->bad);
    cr_assert_eq(s->nrec, want->n, "%zu records, expected %zu", s->nrec, want->n);
    for (size_t i = 0; i < want->n; i++) {
        cr_assert_eq(s->rec[i].len, want->len[i], "record %zu: length %zu, expected %zu (%s)", i,
                     s->rec[i].len, want->len[i], want->v[i]);
        cr_assert(memcmp(s->rec[i].body, want->v[i], want->len[i]) == 0,
                  "record %zu: \"%s\", expected \"%s\"", i, s->rec[i].body, want->v[i]);
    }
}

/* Every expected line at least once; for each line, its last record comes after the last
 * record of the line before (a replay re-publishes everything after a failure, in order);
 * duplicates carry the same message id. */
static void expect_at_least_once_in_order(sink_t *s, const lines_t *want)
{
    size_t *last = calloc(want->n, sizeof(*last)), k = 0;

    cr_assert_str_empty(s->bad, "sink saw: %s", s->bad);
    /* lines are unique here: find each line's records by body */
    for (size_t i = 0; i < want->n; i++) {
        int found = 0;
        const char *id = NULL;
        for (size_t r = 0; r < s->nrec; r++) {
            if (s->rec[r].len == want->len[i] &&
                memcmp(s->rec[r].body, want->v[i], want->len[i]) == 0) {
                if (id != NULL)
                    cr_assert_str_eq(s->rec[r].id, id, "line %zu republished under another id", i);
                id = s->rec[r].id;
                last[i] = r;
                found = 1;
            }
        }
        cr_assert(found, "line %zu (%s) never published", i, want->v[i]);
        if (i > 0)
            cr_assert_gt(last[i], last[i - 1], "line %zu last published before line %zu", i, i - 1);
        k++;
    }
    free(last);
}

static double metric(const char *name)
{
    size_t len;
    char *text = rq_metrics_render(metrics, &len), *p, key[128];
    double v = -1;

    snprintf(key, sizeof(key), "\n%s ", name);
    p = strstr(text, key);
    if (p)
        v = strtod(p + strlen(key), NULL);
    free(text);
    return v;
}

static void load_state(rq_tail_state_t *st)
{
    char sp[600];

    cr_assert_eq(rq_tail_state_path(statedir, input, sp, sizeof(sp)), 0);
    cr_assert_eq(rq_tail_state_load(sp, st, NULL, 0), 0, "no saved state");
}

static int64_t file_size(const char *p)
{
    struct stat sb;

    cr_assert_eq(stat(p, &sb), 0);
    return (int64_t)sb.st_size;
}

/* ---- growth, bytes, ids ---------------------------------------------------------------- */

Test(tailer, publishes_existing_and_appended_lines_in_order)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tail_state_t st;
    rq_tailer_t *t;

    write_lines(input, "a", 0, 120, &want);
    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 120, 10));
    for (int round = 0; round < 5; round++)
        write_lines(input, "b", round * 37, round * 37 + 37, &want);
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    wait_committed(t, file_size(input), 5);
    finish(t, &s);
    expect_exactly(&s, &want);
    /* ids: one file id, offsets are the byte offsets of the lines */
    {
        int64_t off = 0;
        for (size_t i = 0; i < s.nrec; i++) {
            cr_assert_eq(s.rec[i].off, off, "record %zu offset", i);
            cr_assert_str_eq(s.rec[i].file, s.rec[0].file);
            off += (int64_t)s.rec[i].len + 1;
        }
    }
    load_state(&st);
    cr_expect_eq(st.offset, file_size(input), "the whole file is confirmed and saved");
    cr_expect_str_eq(st.file_id, s.rec[0].file);
    cr_expect_eq(metric("producer_lines_read_total"), (double)want.n);
    cr_expect_eq(metric("producer_tail_lines_confirmed_total"), (double)want.n);
    cr_expect_eq(metric("producer_tail_bytes_behind"), 0);
    cr_expect_leq(s.max_inflight, o.max_inflight, "at most max_inflight jobs at once");
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, every_byte_survives_and_partial_lines_wait)
{
    static const char data[] = "plain\n\n\r\n\ttab\t\nnul\0byte\n\xff\xfe\xc0\x80 bad utf8\n"
                               "\xed\xa0\x80\n"
                               "no newline yet";
    static const struct {
        const char *s;
        size_t n;
    } want[] = {{"plain", 5},        {"", 0},
                {"\r", 1},           {"\ttab\t", 5},
                {"nul\0byte", 8},    {"\xff\xfe\xc0\x80 bad utf8", 13},
                {"\xed\xa0\x80", 3}, {"no newline yet, now it has one", 30}};
    rq_tail_opts_t o;
    sink_t s;
    rq_tailer_t *t;

    append(input, data, sizeof(data) - 1);
    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 7, 10));
    usleep(200000);
    cr_assert_eq(sink_count(&s), 7u, "the partial line must wait for its newline");
    append_str(input, ", now it has one\n");
    cr_assert(wait_for(&s, 8, 10));
    finish(t, &s);
    cr_assert_eq(s.nrec, 8u);
    for (size_t i = 0; i < 8; i++) {
        cr_assert_eq(s.rec[i].len, want[i].n, "line %zu length", i);
        cr_assert(memcmp(s.rec[i].body, want[i].s, want[i].n) == 0, "line %zu bytes", i);
    }
    sink_free(&s);
}

Test(tailer, waits_for_a_missing_file_and_polls_without_inotify)
{
    for (int ino = 1; ino >= 0; ino--) {
        rq_tail_opts_t o;
        sink_t s;
        lines_t want = {0};
        rq_tailer_t *t;
        char sd[400];

        unlink(input);
        snprintf(sd, sizeof(sd), "%s/state%d", dir, ino);
        opts(&o);
        o.use_inotify = ino;
        o.state_dir = sd;
        sink_init(&s);
        t = start(&o, &s);
        usleep(100000);
        cr_assert_eq(sink_count(&s), 0u);
        write_lines(input, "late", 0, 30, &want);
        cr_assert(wait_for(&s, 30, 10), "inotify %d: file appearing later", ino);
        write_lines(input, "more", 0, 30, &want);
        cr_assert(wait_for(&s, 60, 10), "inotify %d: growth", ino);
        finish(t, &s);
        expect_exactly(&s, &want);
        sink_free(&s);
        lines_free(&want);
    }
}

Test(tailer, tail_from_end_skips_existing_lines_only_the_first_time)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;

    write_lines(input, "old", 0, 50, NULL);
    opts(&o);
    o.from_end = 1;
    sink_init(&s);
    t = start(&o, &s);
    usleep(150000);
    write_lines(input, "new", 0, 20, &want);
    cr_assert(wait_for(&s, 20, 10));
    rq_tailer_stop(t, 2000);
    rq_tailer_free(t);
    /* a saved position wins over TAIL_FROM: lines written while stopped are not skipped */
    write_lines(input, "while-stopped", 0, 10, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 30, 10));
    finish(t, &s);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

/* ---- rotation -------------------------------------------------------------------------- */

Test(tailer, rename_rotation_reads_the_old_file_to_its_end_first)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char rotated[400];
    rq_tail_stats_t st;

    snprintf(rotated, sizeof(rotated), "%s.1", input);
    opts(&o);
    o.rotate_wait_ms = 300;
    sink_init(&s);
    t = start(&o, &s);
    write_lines(input, "before", 0, 100, &want);
    cr_assert(wait_for(&s, 100, 10));
    /* logrotate create: rename, create a new file; the writer still has the old one open */
    cr_assert_eq(rename(input, rotated), 0);
    write_lines(rotated, "late-write-to-old", 0, 25, &want);
    write_lines(input, "after", 0, 40, NULL);
    usleep(50000);
    write_lines(rotated, "later-write-to-old", 0, 5, &want);
    write_lines(NULL, "after", 0, 40, &want); /* the new file comes after all of the old */
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    write_lines(input, "after2", 0, 10, &want);
    cr_assert(wait_for(&s, want.n, 10));
    rq_tailer_stats(t, &st);
    finish(t, &s);
    expect_exactly(&s, &want);
    cr_expect_str_neq(s.rec[0].file, s.rec[want.n - 1].file, "the new file has a new id");
    cr_expect_eq(s.rec[130].off, 0, "the new file starts at offset 0");
    cr_expect_str_eq(s.rec[129].body, "later-write-to-old 000004 the quick brown fox");
    cr_expect_eq(st.rotations, 1u);
    cr_expect_eq(metric("producer_tail_rotations_total"), 1);
    sink_free(&s);
    lines_free(&want);
}

/* Renamed away and nothing at the path yet: the old file is still the one to read, however
 * long that lasts; rotate_wait counts from when the new file appears. */
Test(tailer, renamed_file_is_read_until_a_new_file_appears)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char rotated[400];

    snprintf(rotated, sizeof(rotated), "%s.1", input);
    opts(&o);
    o.rotate_wait_ms = 100;
    sink_init(&s);
    t = start(&o, &s);
    write_lines(input, "a", 0, 20, &want);
    cr_assert(wait_for(&s, 20, 10));
    cr_assert_eq(rename(input, rotated), 0);
    usleep(400000); /* four times rotate_wait */
    write_lines(rotated, "late", 0, 20, &want);
    cr_assert(wait_for(&s, 40, 10), "late writes to the renamed file are read");
    write_lines(input, "new", 0, 20, NULL);
    usleep(30000);
    write_lines(rotated, "later", 0, 5, &want); /* within rotate_wait of the new file */
    write_lines(NULL, "new", 0, 20, &want);     /* the new file comes after all of the old */
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    usleep(100000);
    finish(t, &s);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, rotated_file_partial_last_line_is_sent_when_leaving_it)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char rotated[400];

    snprintf(rotated, sizeof(rotated), "%s.1", input);
    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    write_lines(input, "x", 0, 10, &want);
    append_str(input, "cut short");
    lines_add(&want, "cut short", 9);
    cr_assert(wait_for(&s, 10, 10));
    cr_assert_eq(rename(input, rotated), 0);
    write_lines(input, "y", 0, 10, &want);
    cr_assert(wait_for(&s, want.n, 10));
    finish(t, &s);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, copytruncate_starts_again_at_zero_with_a_new_id)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char copy[400], cmd[1000];
    rq_tail_stats_t st;

    snprintf(copy, sizeof(copy), "%s.1", input);
    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    write_lines(input, "first", 0, 200, &want);
    cr_assert(wait_for(&s, 200, 10));
    snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", input, copy);
    cr_assert_eq(system(cmd), 0);
    cr_assert_eq(truncate(input, 0), 0);
    usleep(100000);
    write_lines(input, "second", 0, 30, &want);
    cr_assert(wait_for(&s, want.n, 10));
    /* truncated and at once refilled past the old read position: caught by content */
    {
        int64_t n = 0;
        rq_tailer_stats(t, &st);
        wait_committed(t, file_size(input), 5);
        n = file_size(input);
        cr_assert_eq(truncate(input, 0), 0);
        while (file_size(input) <= n + 100)
            write_lines(input, "third", 0, 50, &want);
    }
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    usleep(200000);
    rq_tailer_stats(t, &st);
    finish(t, &s);
    expect_exactly(&s, &want);
    cr_expect_eq(st.rotations, 2u);
    cr_expect_str_neq(s.rec[0].file, s.rec[200].file);
    cr_expect_eq(s.rec[200].off, 0);
    cr_expect_str_neq(s.rec[200].file, s.rec[230].file);
    cr_expect_eq(s.rec[230].off, 0);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, delete_and_recreate_is_followed)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;

    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    write_lines(input, "one", 0, 60, &want);
    cr_assert(wait_for(&s, 60, 10));
    cr_assert_eq(unlink(input), 0);
    usleep(300000); /* deleted for a while: the old file is drained, then the path waited for */
    write_lines(input, "two", 0, 60, &want);
    cr_assert(wait_for(&s, 120, 10));
    cr_assert_eq(unlink(input), 0);
    write_lines(input, "three", 0, 10, &want); /* recreated at once */
    cr_assert(wait_for(&s, 130, 10));
    finish(t, &s);
    expect_exactly(&s, &want);
    cr_expect_str_neq(s.rec[59].file, s.rec[60].file);
    cr_expect_str_neq(s.rec[119].file, s.rec[120].file);
    sink_free(&s);
    lines_free(&want);
}

/* ---- restart --------------------------------------------------------------------------- */

Test(tailer, restart_resumes_exactly)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char *fid;

    opts(&o);
    sink_init(&s);
    write_lines(input, "r1", 0, 300, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 300, 10));
    wait_committed(t, file_size(input), 5);
    rq_tailer_stop(t, 2000);
    rq_tailer_free(t);
    write_lines(input, "r2", 0, 77, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, want.n, 10));
    usleep(100000);
    finish(t, &s);
    expect_exactly(&s, &want); /* exactly: nothing re-published, nothing skipped */
    fid = s.rec[0].file;
    cr_expect_str_eq(s.rec[want.n - 1].file, fid, "same file, same id after a restart");
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, restart_after_rotation_while_stopped_finishes_the_rotated_file)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char rotated[400];

    snprintf(rotated, sizeof(rotated), "%s.1", input);
    opts(&o);
    sink_init(&s);
    write_lines(input, "a", 0, 100, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 100, 10));
    wait_committed(t, file_size(input), 5);
    rq_tailer_stop(t, 2000);
    rq_tailer_free(t);
    /* while stopped: more lines, rotation, lines in the new file */
    write_lines(input, "b-unread-in-old", 0, 40, &want);
    cr_assert_eq(rename(input, rotated), 0);
    write_lines(input, "c-new", 0, 40, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    usleep(100000);
    finish(t, &s);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, restart_after_copytruncate_while_stopped_starts_at_zero)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;

    opts(&o);
    sink_init(&s);
    write_lines(input, "a", 0, 100, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 100, 10));
    wait_committed(t, file_size(input), 5);
    rq_tailer_stop(t, 2000);
    rq_tailer_free(t);
    cr_assert_eq(truncate(input, 0), 0);
    write_lines(input, "b", 0, 150, &want); /* longer than before: size alone cannot tell */
    t = start(&o, &s);
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    usleep(100000);
    finish(t, &s);
    expect_exactly(&s, &want);
    cr_expect_str_neq(s.rec[99].file, s.rec[100].file);
    cr_expect_eq(s.rec[100].off, 0);
    sink_free(&s);
    lines_free(&want);
}

/* A new file at the path that got the old inode number (or any other new file) must not be
 * resumed at the old offset. The inode number is forced by editing the saved state. */
Test(tailer, restart_with_reused_inode_starts_the_new_file_at_zero)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    rq_tail_state_t st;
    struct stat sb;
    char sp[600];

    opts(&o);
    sink_init(&s);
    write_lines(input, "old", 0, 100, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 100, 10));
    wait_committed(t, file_size(input), 5);
    rq_tailer_stop(t, 2000);
    rq_tailer_free(t);
    cr_assert_eq(unlink(input), 0);
    write_lines(input, "NEW", 0, 120, &want);
    cr_assert_eq(stat(input, &sb), 0);
    load_state(&st);
    st.ident.dev = (uint64_t)sb.st_dev;
    st.ident.ino = (uint64_t)sb.st_ino;
    cr_assert_eq(rq_tail_state_path(statedir, input, sp, sizeof(sp)), 0);
    cr_assert_eq(rq_tail_state_save(sp, &st, NULL, 0), 0);
    t = start(&o, &s);
    cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
    usleep(100000);
    finish(t, &s);
    expect_exactly(&s, &want);
    cr_expect_eq(s.rec[100].off, 0);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, unreadable_state_reads_from_the_head)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    char sp[600];

    opts(&o);
    o.from_end = 1; /* even so: a damaged state must never skip lines */
    cr_assert_eq(mkdir(statedir, 0755), 0);
    cr_assert_eq(rq_tail_state_path(statedir, input, sp, sizeof(sp)), 0);
    append_str(sp, "relayq-tail-state 1\ngarbage\n");
    write_lines(input, "x", 0, 20, &want);
    sink_init(&s);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 20, 10));
    finish(t, &s);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, a_second_tailer_of_the_same_input_is_refused)
{
    rq_tail_opts_t o;
    sink_t s;
    rq_tailer_t *t, *t2;
    char err[256] = "";

    opts(&o);
    sink_init(&s);
    t = start(&o, &s);
    t2 = rq_tailer_new(&o, metrics, sink_submit, &s, err, sizeof(err));
    cr_expect_null(t2);
    cr_expect(strstr(err, "another process") != NULL, "%s", err);
    finish(t, &s);
    sink_free(&s);
}

/* ---- the publisher saying no ------------------------------------------------------------ */

Test(tailer, refused_submits_are_retried_never_skipped)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;

    opts(&o);
    sink_init(&s);
    s.refuse_first = 6;
    write_lines(input, "r", 0, 500, &want);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 500, 20), "%zu of 500", sink_count(&s));
    finish(t, &s);
    cr_expect_eq(s.refused, 6);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, failed_jobs_are_published_again_in_order)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    rq_tail_state_t st;

    opts(&o);
    o.batch_lines = 20;
    sink_init(&s);
    s.fail_every = 7;
    write_lines(input, "f", 0, 1000, &want);
    t = start(&o, &s);
    {
        int64_t end = rq_mono_ms() + 20000;
        rq_tail_stats_t ts;
        do {
            usleep(10000);
            rq_tailer_stats(t, &ts);
        } while (ts.committed < file_size(input) && rq_mono_ms() < end);
        cr_assert_eq(ts.committed, file_size(input), "every line confirmed in the end");
    }
    finish(t, &s);
    expect_at_least_once_in_order(&s, &want);
    load_state(&st);
    cr_expect_eq(st.offset, file_size(input));
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, reading_pauses_at_max_inflight_and_offsets_follow_confirms)
{
    rq_tail_opts_t o;
    sink_t s;
    lines_t want = {0};
    rq_tailer_t *t;
    rq_tail_stats_t st;
    rq_tail_state_t saved;

    opts(&o);
    o.batch_lines = 10;
    o.max_inflight = 3;
    sink_init(&s);
    sink_set_hold(&s, 1);
    write_lines(input, "h", 0, 200, &want);
    t = start(&o, &s);
    usleep(300000);
    rq_tailer_stats(t, &st);
    cr_expect_eq(st.inflight_jobs, 3, "jobs in flight while the broker holds them");
    cr_expect_leq(st.lines_read, 40u, "reading paused: %llu lines read",
                  (unsigned long long)st.lines_read);
    cr_expect_eq(st.committed, 0, "nothing confirmed, nothing committed");
    load_state(&saved);
    cr_expect_eq(saved.offset, 0, "the saved offset never runs ahead of the confirms");
    sink_set_hold(&s, 0);
    cr_assert(wait_for(&s, 200, 10));
    wait_committed(t, file_size(input), 5);
    usleep(250000);
    load_state(&saved);
    cr_expect_eq(saved.offset, file_size(input), "saved within ~100 ms of the confirms");
    finish(t, &s);
    cr_expect_leq(s.max_inflight, 3);
    expect_exactly(&s, &want);
    sink_free(&s);
    lines_free(&want);
}

Test(tailer, stop_waits_for_jobs_in_flight_then_saves)
{
    rq_tail_opts_t o;
    sink_t s;
    rq_tailer_t *t;
    rq_tail_state_t saved;
    rq_tail_stats_t st;

    opts(&o);
    sink_init(&s);
    s.delay_us = 20000; /* a slow broker */
    write_lines(input, "s", 0, 400, NULL);
    t = start(&o, &s);
    cr_assert(wait_for(&s, 60, 10));
    rq_tailer_stop(t, 5000);
    rq_tailer_stats(t, &st);
    load_state(&saved);
    cr_expect_eq(st.inflight_jobs, 0, "stop waited for the jobs in flight");
    cr_expect_eq(saved.offset, st.committed, "and saved what was confirmed");
    cr_expect_gt(saved.offset, 0);
    sink_stop(&s);
    rq_tailer_free(t);
    sink_free(&s);
}

/* ---- overlong lines -------------------------------------------------------------------- */

/* Consecutive lines share a message up to chunk_bytes; a chunk is the file's bytes verbatim
 * (checked by the sink) and splits back into exactly the lines; chunk_bytes 1 sends one line
 * per message. */
Test(tailer, lines_travel_in_chunks_of_at_most_chunk_bytes)
{
    size_t sizes[] = {1, 200, 4096, 0};

    for (size_t c = 0; c < sizeof(sizes) / sizeof(sizes[0]); c++) {
        rq_tail_opts_t o;
        sink_t s;
        lines_t want = {0};
        rq_tailer_t *t;
        char sd[400];

        unlink(input);
        rq_metrics_free(metrics);
        metrics = rq_metrics_new();
        snprintf(sd, sizeof(sd), "%s/state-chunk%zu", dir, c);
        opts(&o);
        o.state_dir = sd;
        o.chunk_bytes = sizes[c];
        write_lines(input, "c", 0, 300, &want);
        sink_init(&s);
        s.chunk_bytes = sizes[c] ? sizes[c] : RQ_TAIL_CHUNK_BYTES_DEFAULT;
        t = start(&o, &s);
        cr_assert(wait_for(&s, 300, 10));
        write_lines(input, "d", 0, 100, &want);
        append_str(input, "\n\r\n");
        lines_add(&want, "", 0);
        lines_add(&want, "\r", 1);
        cr_assert(wait_for(&s, want.n, 10), "%zu of %zu", sink_count(&s), want.n);
        wait_committed(t, file_size(input), 5);
        finish(t, &s);
        expect_exactly(&s, &want);
        cr_expect_eq(s.nchunks, s.nmsgs, "every message of whole lines is a chunk");
        if (sizes[c] == 1) {
            cr_expect_eq(s.nmsgs, want.n, "chunk_bytes 1: one line per message");
        } else {
            /* lines are 32 bytes with their newline; jobs hold 50 lines */
            cr_expect_lt(s.nmsgs, want.n / 5, "%zu messages for %zu lines", s.nmsgs, want.n);
            cr_expect_geq(s.max_chunk_records, 6u);
        }
        cr_expect_eq(metric("producer_lines_read_total"), (double)want.n);
        cr_expect_eq(metric("producer_tail_lines_confirmed_total"), (double)want.n);
        sink_free(&s);
        lines_free(&want);
    }
}

Test(tailer, overlong_lines_follow_the_policy_and_are_counted)
{
    for (int pol = 0; pol < 2; pol++) {
        rq_tail_opts_t o;
        sink_t s;
        rq_tailer_t *t;
        char big[2500], sd[400];
        rq_tail_stats_t st;

        unlink(input);
        rq_metrics_free(metrics); /* metric families register once per registry */
        metrics = rq_metrics_new();
        snprintf(sd, sizeof(sd), "%s/state-ov%d", dir, pol);
        memset(big, 'L', sizeof(big));
        big[sizeof(big) - 1] = '\n';
        opts(&o);
        o.state_dir = sd;
        o.max_line = 1000;
        o.overlong = pol ? RQ_OVERLONG_SKIP : RQ_OVERLONG_SPLIT;
        o.chunk_bytes = 1000; /* a piece fills a chunk: the sink sees the pieces apart */
        append_str(input, "short\n");
        append(input, big, sizeof(big)); /* 2499 bytes + newline */
        append_str(input, "after\n");
        sink_init(&s);
        s.chunk_bytes = o.chunk_bytes;
        t = start(&o, &s);
        cr_assert(wait_for(&s, pol ? 2 : 5, 10));
        wait_committed(t, file_size(input), 5);
        rq_tailer_stats(t, &st);
        finish(t, &s);
        cr_expect_eq(st.overlong, 1u);
        cr_expect_eq(metric("producer_tail_overlong_lines_total"), 1);
        if (pol == 0) {
            cr_assert_eq(s.nrec, 5u);
            cr_expect_eq(s.rec[1].len, 1000u);
            cr_expect_eq(s.rec[2].len, 1000u);
            cr_expect_eq(s.rec[3].len, 499u);
            cr_expect_eq(s.rec[2].off, 6 + 1000);
            cr_expect_str_eq(s.rec[4].body, "after");
            cr_expect_eq(s.nmsgs, 4u, "short | piece | piece | last piece + after");
        } else {
            cr_assert_eq(s.nrec, 2u);
            cr_expect_str_eq(s.rec[0].body, "short");
            cr_expect_str_eq(s.rec[1].body, "after");
            cr_expect_eq(s.rec[1].off, 6 + 2500);
            cr_expect_eq(s.nmsgs, 2u, "a skipped line ends the chunk before it");
        }
        cr_expect_str_empty(s.bad, "sink saw: %s", s.bad);
        sink_free(&s);
    }
}

/* ---- kill -9 --------------------------------------------------------------------------- */

/* Child: a tailer whose sink appends every message to `log` before confirming it. */
static void child_run(const char *log)
{
    rq_tail_opts_t o;
    sink_t s;
    char err[256];

    opts(&o);
    o.batch_lines = 25;
    sink_init(&s);
    s.log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (s.log_fd < 0 || rq_tailer_new(&o, metrics, sink_submit, &s, err, sizeof(err)) == NULL)
        _exit(3);
    for (;;)
        pause();
}

static pid_t spawn(const char *log)
{
    pid_t pid = fork();

    cr_assert_geq(pid, 0);
    if (pid == 0)
        child_run(log);
    return pid;
}

static int hexval(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

Test(tailer, kill_9_at_random_moments_loses_nothing, .timeout = 180)
{
    char log[400], rotated[400];
    lines_t want = {0};
    pid_t pid;
    FILE *f;
    char *line = NULL;
    size_t cap = 0, nrec = 0, next = 0, dups = 0;
    ssize_t n;
    int kills = 0, status;

    snprintf(log, sizeof(log), "%s/broker.log", dir);
    snprintf(rotated, sizeof(rotated), "%s.1", input);
    srand(1234);
    pid = spawn(log);
    for (int batch = 0; batch < 40; batch++) {
        write_lines(input, "k", batch * 100, batch * 100 + 100, &want);
        if (batch == 20) { /* a rotation in the middle, with the tailer being killed too */
            cr_assert_eq(rename(input, rotated), 0);
        }
        usleep((useconds_t)(10000 + rand() % 40000));
        if (rand() % 3 == 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            kills++;
            pid = spawn(log);
        }
    }
    /* let the last one finish: every line recorded at least once */
    {
        int64_t end = rq_mono_ms() + 60000;
        for (;;) {
            size_t lines = 0;
            f = fopen(log, "r");
            if (f) {
                while (getline(&line, &cap, f) > 0)
                    lines++;
                fclose(f);
            }
            if (lines >= want.n || rq_mono_ms() > end)
                break;
            usleep(50000);
        }
    }
    usleep(300000);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    cr_assert_gt(kills, 3, "the test must actually kill");

    /* first occurrences must be exactly the lines in order; repeats only of earlier ids */
    f = fopen(log, "r");
    cr_assert_not_null(f);
    {
        char **seen_ids = calloc(want.n, sizeof(*seen_ids));
        while ((n = getline(&line, &cap, f)) > 0) {
            char *tab = strchr(line, '\t'), body[256];
            size_t blen = 0;
            size_t k;
            cr_assert_not_null(tab);
            *tab = '\0';
            for (char *h = tab + 1; h[0] && h[0] != '\n'; h += 2)
                body[blen++] = (char)(hexval(h[0]) * 16 + hexval(h[1]));
            nrec++;
            for (k = 0; k < next; k++) {
                if (strcmp(seen_ids[k], line) == 0)
                    break;
            }
            if (k < next) { /* a duplicate: same id, same line */
                cr_assert(blen == want.len[k] && memcmp(body, want.v[k], blen) == 0,
                          "id %s republished with other bytes", line);
                dups++;
                continue;
            }
            cr_assert_lt(next, want.n, "more distinct lines than written");
            cr_assert(blen == want.len[next] && memcmp(body, want.v[next], blen) == 0,
                      "line %zu out of order or wrong: got \"%.*s\", expected \"%s\"", next,
                      (int)blen, body, want.v[next]);
            seen_ids[next++] = strdup(line);
        }
        for (size_t k = 0; k < next; k++)
            free(seen_ids[k]);
        free(seen_ids);
    }
    fclose(f);
    free(line);
    cr_assert_eq(next, want.n, "%zu of %zu lines published", next, want.n);
    cr_log_info("kill -9 test: %d kills, %zu records, %zu duplicates", kills, nrec, dups);
    lines_free(&want);
}
