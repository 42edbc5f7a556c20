/* rq_status_tool.c - drives a status log (common/status_log.h) for tests.
 *
 *   rq_status_tool append N [--size B] [--tag T] [--rate R] [--timeout S]
 *       appends N bodies {"n":i,"tag":T,"pad":"..."} (i = 0..N-1, padded to about B bytes),
 *       R per second (0: at once), waits for every confirm (at most S s after the last) and
 *       prints "confirmed i" per confirm, then "appended N confirmed C failed F dropped D".
 *       Exit 0 when all N were confirmed.
 *       With --linger MS: the log packs events (64 KiB stream messages) and lingers MS for
 *       more; the appends have no callback (a linger waits only for those), the log is freed
 *       right after them (its stop must publish them at once) and the line reads
 *       "appended N confirmed 0 failed 0 dropped D" (exit 0 when D is 0; read them back).
 *   rq_status_tool read --count N [--tag T] [--from-ms T] [--timeout S]
 *       reads the stream (from its start, or from epoch ms T) and prints "OFFSET BODY" per
 *       event until N were read (with --tag: N distinct n of that tag) (exit 0) or S s passed
 *       (exit 1), then "read K caught_up X".
 *   rq_status_tool barrier [--count N] [--rate R] [--timeout S]
 *       two logs in this process: a writer appending N events (R/s) on its own connection and
 *       a reader (from now) calling barriers back to back; a barrier must not pass before the
 *       reader has read every event the writer had confirmed when the barrier was called.
 *       Prints "barriers K ok O failed F violations V max_ms M". Exit 0 when K > 0, F and V 0.
 *       With --count 0: one append, one barrier (timeout S), "barrier ok ms M".
 *   rq_status_tool stream-args    prints the arguments the stream is declared with.
 *
 * Settings from the environment (RABBITMQ_*, STATUS_STREAM, STATUS_MAX_AGE_S,
 * STATUS_MAX_BYTES) through the config module; --stream NAME overrides STATUS_STREAM.
 * Logs (JSON lines) on stderr. Exit status: 0 success, 1 failure, 2 usage error.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "status_log.h"
#include "util.h"

#define TOOL "rq_status_tool"
#define MAX_N 1000000

typedef struct args {
    const char *cmd;
    long n, size;
    const char *tag, *stream;
    int tag_given;
    double rate, timeout;
    long long from_ms;
    int linger_ms;
} args_t;

typedef struct state {
    atomic_long ok, failed, read;
    pthread_mutex_t lock;
    unsigned char *seen; /* barrier: n read by the reader */
    long seen_max_n;     /* every n below was read */
    const char *tag;     /* read --tag */
    long confirmed_upto; /* the writer's confirms (in order): every n below */
} state_t;

static void usage(void)
{
    fprintf(stderr, "usage: " TOOL " append N [--size B] [--tag T] [--rate R] [--timeout S] "
                    "[--linger MS]\n"
                    "       " TOOL " read --count N [--tag T] [--from-ms T] [--timeout S]\n"
                    "       " TOOL " barrier [--count N] [--rate R] [--timeout S]\n"
                    "       " TOOL " stream-args\n"
                    "options for all: --stream NAME\n");
}

static int parse(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->tag = "t";
    a->timeout = 30;
    a->n = -1;
    if (argc < 2)
        return -1;
    a->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strncmp(k, "--", 2) != 0 && a->n < 0) {
            a->n = atol(k);
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(k, "--size") == 0)
            a->size = atol(v);
        else if (strcmp(k, "--count") == 0)
            a->n = atol(v);
        else if (strcmp(k, "--tag") == 0)
            a->tag = v, a->tag_given = 1;
        else if (strcmp(k, "--stream") == 0)
            a->stream = v;
        else if (strcmp(k, "--rate") == 0)
            a->rate = atof(v);
        else if (strcmp(k, "--timeout") == 0)
            a->timeout = atof(v);
        else if (strcmp(k, "--from-ms") == 0)
            a->from_ms = atoll(v);
        else if (strcmp(k, "--linger") == 0)
            a->linger_ms = atoi(v);
        else
            return -1;
    }
    return a->n > MAX_N ? -1 : 0;
}

static void opts_of(const rq_config_t *c, const args_t *a, rq_status_log_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->rabbitmq = &c->rabbitmq;
    o->stream = a->stream != NULL ? a->stream : c->rabbitmq.status_stream;
    o->max_age_s = c->rabbitmq.status_max_age_s;
    o->max_bytes = c->rabbitmq.status_max_bytes;
    o->service = "tool";
    o->max_pending = 100000;
    o->max_pending_bytes = 256u * 1024 * 1024;
    if (a->linger_ms > 0) {
        o->pack_max = 64 * 1024;
        o->linger_ms = a->linger_ms;
    }
}

static void on_done(void *arg, int ok)
{
    state_t *s = arg;

    if (ok)
        atomic_fetch_add(&s->ok, 1);
    else
        atomic_fetch_add(&s->failed, 1);
}

typedef struct confirm {
    state_t *s;
    long n;
} confirm_t;

static void on_done_print(void *arg, int ok)
{
    confirm_t *c = arg;

    if (ok)
        printf("confirmed %ld\n", c->n);
    on_done(c->s, ok);
}

static int body_of(char *buf, size_t cap, long n, const char *tag, long size)
{
    int len = snprintf(buf, cap, "{\"n\":%ld,\"tag\":\"%s\",\"pad\":\"", n, tag);

    while (len < size - 2 && (size_t)len < cap - 3)
        buf[len++] = 'x';
    buf[len++] = '"';
    buf[len++] = '}';
    return len;
}

static void pace(double rate, long i, int64_t t0)
{
    if (rate > 0) {
        int64_t due = t0 + (int64_t)((double)i / rate * 1e9);
        int64_t now = rq_mono_ns();
        if (due > now)
            usleep((useconds_t)((due - now) / 1000));
    }
}

static int cmd_append(const rq_config_t *c, const args_t *a)
{
    rq_status_log_opts_t o;
    state_t s = {0};
    confirm_t *cs = calloc((size_t)(a->n > 0 ? a->n : 1), sizeof(*cs));
    size_t cap = (size_t)(a->size > 64 ? a->size : 64) + 64;
    char *buf = malloc(cap);
    rq_status_log_t *log;
    long dropped = 0;
    int64_t t0 = rq_mono_ns(), deadline;

    opts_of(c, a, &o);
    log = rq_status_log_new(&o, NULL);
    if (log == NULL || cs == NULL || buf == NULL || rq_status_log_start(log) != 0) {
        fprintf(stderr, TOOL ": cannot make the log\n");
        free(cs);
        free(buf);
        rq_status_log_free(log);
        return 1;
    }
    for (long i = 0; i < a->n; i++) {
        int len = body_of(buf, cap, i, a->tag, a->size);
        pace(a->rate, i, t0);
        cs[i] = (confirm_t){&s, i};
        if (rq_status_log_append(log, buf, (size_t)len, 0, a->linger_ms > 0 ? NULL : on_done_print,
                                 &cs[i]) != 0)
            dropped++;
    }
    deadline = rq_mono_ns() + (int64_t)(a->timeout * 1e9);
    while (a->linger_ms <= 0 && atomic_load(&s.ok) + atomic_load(&s.failed) + dropped < a->n &&
           rq_mono_ns() < deadline)
        usleep(10000);
    rq_status_log_free(log);
    printf("appended %ld confirmed %ld failed %ld dropped %ld\n", a->n, atomic_load(&s.ok),
           atomic_load(&s.failed), dropped);
    free(cs);
    free(buf);
    if (a->linger_ms > 0)
        return dropped == 0 ? 0 : 1;
    return atomic_load(&s.ok) == a->n ? 0 : 1;
}

static long body_n(const void *body, size_t len, const char *tag)
{
    char b[256], want[80];
    const char *p;

    if (len >= sizeof(b))
        return -1;
    memcpy(b, body, len);
    b[len] = '\0';
    snprintf(want, sizeof(want), "\"tag\":\"%s\"", tag);
    p = strstr(b, "\"n\":");
    if (p == NULL || strstr(b, want) == NULL)
        return -1;
    return atol(p + 4) < MAX_N ? atol(p + 4) : -1;
}

/* Prints every event (a packed stream message: each of its '\n'-separated events, under the
 * message's offset); counts all (no --tag) or the distinct n of --tag's. */
static void on_read_print(const void *body, size_t len, uint64_t offset, int64_t ts_ms, void *arg)
{
    state_t *s = arg;
    const char *p = body, *end = p + len;

    (void)ts_ms;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n_len = (size_t)((nl != NULL ? nl : end) - p);
        long n;
        printf("%llu %.*s\n", (unsigned long long)offset, (int)n_len, p);
        if (s->seen == NULL) {
            atomic_fetch_add(&s->read, 1);
        } else if ((n = body_n(p, n_len, s->tag)) >= 0 && !s->seen[n]) {
            s->seen[n] = 1;
            atomic_fetch_add(&s->read, 1);
        }
        p += n_len + 1;
    }
}

static int cmd_read(const rq_config_t *c, const args_t *a)
{
    rq_status_log_opts_t o;
    state_t s = {0};
    rq_status_log_t *log;
    int64_t deadline = rq_mono_ns() + (int64_t)(a->timeout * 1e9);
    int caught;

    if (a->tag_given && (s.seen = calloc(MAX_N, 1)) == NULL)
        return 1;
    s.tag = a->tag;
    opts_of(c, a, &o);
    o.on_read = on_read_print;
    o.read_arg = &s;
    o.replay_from_ms = a->from_ms;
    log = rq_status_log_new(&o, NULL);
    if (log == NULL || rq_status_log_start(log) != 0) {
        fprintf(stderr, TOOL ": cannot make the log\n");
        rq_status_log_free(log);
        free(s.seen);
        return 1;
    }
    while (atomic_load(&s.read) < a->n && rq_mono_ns() < deadline)
        usleep(10000);
    /* the replay's marker comes after what was read: wait for it too (within the deadline) */
    while (!rq_status_log_caught_up(log) && rq_mono_ns() < deadline)
        usleep(10000);
    caught = rq_status_log_caught_up(log);
    rq_status_log_free(log);
    printf("read %ld caught_up %d\n", atomic_load(&s.read), caught);
    free(s.seen);
    return atomic_load(&s.read) >= a->n ? 0 : 1;
}

/* ---- barrier ---- */

static void on_read_mark(const void *body, size_t len, uint64_t offset, int64_t ts_ms, void *arg)
{
    state_t *s = arg;
    char b[256];
    const char *p;
    long n;

    if (len >= sizeof(b))
        return;
    memcpy(b, body, len);
    b[len] = '\0';
    p = strstr(b, "\"n\":");
    n = p != NULL ? atol(p + 4) : -1;
    if (n < 0 || n >= MAX_N || strstr(b, "\"tag\":\"barrier\"") == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    s->seen[n] = 1;
    while (s->seen_max_n < MAX_N && s->seen[s->seen_max_n])
        s->seen_max_n++;
    pthread_mutex_unlock(&s->lock);
}

typedef struct wconfirm {
    state_t *s;
    long n;
} wconfirm_t;

static void on_writer_done(void *arg, int ok)
{
    wconfirm_t *w = arg;

    pthread_mutex_lock(&w->s->lock);
    if (ok && w->n == w->s->confirmed_upto)
        w->s->confirmed_upto = w->n + 1; /* confirms come in order */
    pthread_mutex_unlock(&w->s->lock);
}

typedef struct bwait {
    atomic_int done, ok;
} bwait_t;

static void on_barrier(void *arg, int ok)
{
    bwait_t *w = arg;

    atomic_store(&w->ok, ok);
    atomic_store(&w->done, 1);
}

/* One barrier: 1 passed in order, 0 failed, -1 passed too early (a violation). */
static int one_barrier(rq_status_log_t *r, state_t *s, int timeout_ms, int64_t *ms)
{
    bwait_t w = {0};
    long need;
    int64_t t0 = rq_mono_ns();

    pthread_mutex_lock(&s->lock);
    need = s->confirmed_upto;
    pthread_mutex_unlock(&s->lock);
    if (rq_status_log_barrier(r, timeout_ms, on_barrier, &w) != 0)
        return 0;
    while (!atomic_load(&w.done))
        usleep(1000);
    *ms = (rq_mono_ns() - t0) / 1000000;
    if (!atomic_load(&w.ok))
        return 0;
    pthread_mutex_lock(&s->lock);
    need = s->seen_max_n >= need ? 1 : -1;
    pthread_mutex_unlock(&s->lock);
    return (int)need;
}

static int barriers_run(rq_status_log_t *w, rq_status_log_t *r, state_t *s, const args_t *a)
{
    wconfirm_t *ws = calloc((size_t)a->n, sizeof(*ws));
    char buf[128];
    long k = 0, ok = 0, failed = 0, viol = 0, next = 0;
    int64_t t0 = rq_mono_ns(), deadline = t0 + (int64_t)(a->timeout * 1e9), max_ms = 0;

    if (ws == NULL)
        return 1;
    for (int last = 0; rq_mono_ns() < deadline && !last;) {
        int64_t ms = 0, due = t0 + (int64_t)((double)next / (a->rate > 0 ? a->rate : 1e9) * 1e9);
        while (next < a->n && rq_mono_ns() >= due) {
            int len = body_of(buf, sizeof(buf), next, "barrier", 0);
            ws[next] = (wconfirm_t){s, next};
            rq_status_log_append(w, buf, (size_t)len, 0, on_writer_done, &ws[next]);
            next++;
            due = t0 + (int64_t)((double)next / (a->rate > 0 ? a->rate : 1e9) * 1e9);
        }
        pthread_mutex_lock(&s->lock);
        last = next >= a->n && s->confirmed_upto >= a->n; /* one more after the last confirm */
        pthread_mutex_unlock(&s->lock);
        int rc = one_barrier(r, s, 10000, &ms);
        k++;
        ok += rc == 1;
        failed += rc == 0;
        viol += rc < 0;
        max_ms = ms > max_ms ? ms : max_ms;
    }
    rq_status_log_free(w); /* before ws goes: its callbacks point into it */
    printf("barriers %ld ok %ld failed %ld violations %ld max_ms %lld\n", k, ok, failed, viol,
           (long long)max_ms);
    free(ws);
    return k > 0 && failed == 0 && viol == 0 ? 0 : 1;
}

static int cmd_barrier(const rq_config_t *c, const args_t *a)
{
    rq_status_log_opts_t o;
    state_t s = {0};
    rq_status_log_t *w = NULL, *r = NULL;
    int rc = 1;
    int64_t ms = 0;

    pthread_mutex_init(&s.lock, NULL);
    s.seen = calloc(MAX_N, 1);
    opts_of(c, a, &o);
    w = rq_status_log_new(&o, NULL);
    o.on_read = on_read_mark;
    o.read_arg = &s;
    o.replay_from_ms = rq_wall_ms();
    r = rq_status_log_new(&o, NULL);
    if (s.seen == NULL || w == NULL || r == NULL || rq_status_log_start(w) != 0 ||
        rq_status_log_start(r) != 0) {
        fprintf(stderr, TOOL ": cannot make the logs\n");
        goto out;
    }
    if (a->n <= 0) {
        char buf[64];
        int len = body_of(buf, sizeof(buf), 0, "one", 0);
        rq_status_log_append(w, buf, (size_t)len, 0, NULL, NULL);
        rc = one_barrier(r, &s, (int)(a->timeout * 1000), &ms) != 0 ? 0 : 1;
        printf("barrier %s ms %lld\n", rc == 0 ? "ok" : "failed", (long long)ms);
        goto out;
    }
    rc = barriers_run(w, r, &s, a);
    w = NULL;
out:
    rq_status_log_free(w);
    rq_status_log_free(r);
    free(s.seen);
    pthread_mutex_destroy(&s.lock);
    return rc;
}

static int cmd_stream_args(const rq_config_t *c, const args_t *a)
{
    const RabbitMQConfig *r = &c->rabbitmq;

    printf("stream %s\nx-queue-type stream\nx-max-age %llds\nx-max-length-bytes %lld\n"
           "x-stream-max-segment-size-bytes %lld\n",
           a->stream != NULL ? a->stream : r->status_stream, (long long)r->status_max_age_s,
           (long long)r->status_max_bytes,
           (long long)rq_status_log_segment_bytes(r->status_max_bytes));
    return 0;
}

int main(int argc, char **argv)
{
    args_t a;
    rq_config_t cfg;
    rq_config_error_t err;
    int rc = 2;

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (parse(argc, argv, &a) != 0) {
        usage();
        return 2;
    }
    rq_log_init(TOOL, RQ_LOG_INFO);
    if (rq_config_load(&cfg, RQ_SVC_ALL, NULL, &err) != 0) {
        fprintf(stderr, TOOL ": %s\n", err.text);
        return 2;
    }
    if ((a.stream == NULL || a.stream[0] == '\0') && cfg.rabbitmq.status_stream[0] == '\0')
        fprintf(stderr, TOOL ": no stream (STATUS_STREAM is empty)\n");
    else if (strcmp(a.cmd, "append") == 0 && a.n >= 0)
        rc = cmd_append(&cfg, &a);
    else if (strcmp(a.cmd, "read") == 0 && a.n >= 0)
        rc = cmd_read(&cfg, &a);
    else if (strcmp(a.cmd, "barrier") == 0)
        rc = cmd_barrier(&cfg, &a);
    else if (strcmp(a.cmd, "stream-args") == 0)
        rc = cmd_stream_args(&cfg, &a);
    else
        usage();
    rq_config_free(&cfg);
    return rc;
}
