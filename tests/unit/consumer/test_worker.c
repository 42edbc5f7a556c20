/* Unit tests for consumer/worker.c's commit state machine (issue 12) and its concurrent loop
 * (issue 14).
 *
 * The file is compiled into this test (it is #included), so the static functions of the
 * loop (pump, intake, serve, commit and its phases, drop_conn) are driven directly, in states
 * that are hard to reach against a broker at will: deliveries arriving while the copies'
 * confirms are awaited, a nacked or returned copy, an output file that cannot be written, a
 * connection lost between the copies and the acks. The worker's connection is a plain
 * rabbitmq-c TCP socket (no handshake, tcp_peer.h) whose far end the test holds with a
 * second rabbitmq-c connection on the accepted socket: the test plays the broker, writing
 * deliveries and confirms as frames and reading back (and decoding) every frame the worker
 * wrote. Run under ASan+UBSan by make test, so a delivery leaked or freed twice fails here. */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tcp_peer.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define RQ_TEST_LSAN 1
#endif

#include "worker.c" /* consumer/, on the include path of relayq_consumer */

/* ---- fixtures -------------------------------------------------------------------------- */

static rq_config_t cfg;

typedef struct fx {
    rq_worker_t *w;
    rq_output_t *out;
    amqp_connection_state_t broker; /* the test's end of the worker's socket */
    int lfd, sfd;
    volatile int stop;
    char dir[64], path[128];
} fx_t;

/* A connected, consuming worker (as connect_broker() leaves it) on a socket whose far end is
 * fx->broker, with an OUTPUT_FILE in a fresh folder when with_output. */
static void fx_open(fx_t *fx, int with_output)
{
    amqp_socket_t *s;
    char err[256];

    memset(fx, 0, sizeof(*fx));
    cr_assert_eq(rq_config_defaults(&cfg), 0);
    cfg.batch_wait_ms = 50; /* collect_held() gathers what the test wrote before it */
    if (with_output) {
        snprintf(fx->dir, sizeof(fx->dir), "/tmp/rq_test_worker.XXXXXX");
        cr_assert_not_null(mkdtemp(fx->dir));
        snprintf(fx->path, sizeof(fx->path), "%s/out.txt", fx->dir);
        fx->out = rq_output_open(fx->path, 1000, err, sizeof(err));
        cr_assert_not_null(fx->out, "%s", err);
    }
    fx->w = rq_worker_new(&cfg, fx->out, NULL, NULL); /* its own handler: HANDLER=echo */
    cr_assert_not_null(fx->w);
    fx->w->conn = rq_test_tcp_peer(&fx->lfd, &fx->sfd);
    fx->w->pub = rq_pubbuf_new(fx->w->conn, 1, 1000);
    cr_assert_not_null(fx->w->pub);
    fx->w->consumer_tag = amqp_bytes_malloc_dup(amqp_cstring_bytes("ctag-test"));
    set_state(fx->w, ST_READY);
    fx->broker = amqp_new_connection();
    s = amqp_tcp_socket_new(fx->broker);
    cr_assert_not_null(s);
    /* rabbitmq-c waits with poll() on a non-blocking socket, as its own sockets are */
    cr_assert_eq(fcntl(fx->sfd, F_SETFL, fcntl(fx->sfd, F_GETFL) | O_NONBLOCK), 0);
    amqp_tcp_socket_set_sockfd(s, fx->sfd);
}

static void fx_close(fx_t *fx)
{
    char cmd[160];

    drop_conn(fx->w);
    rq_worker_free(fx->w);
    amqp_destroy_connection(fx->broker); /* closes sfd */
    close(fx->lfd);
    if (fx->out != NULL) {
        rq_output_free(fx->out);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", fx->dir);
        cr_expect_eq(system(cmd), 0);
    }
    rq_config_free(&cfg);
#ifdef RQ_TEST_LSAN
    /* LeakSanitizer's report at exit does not fail a Criterion test: ask it here. */
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* What the test broker delivers. */
typedef struct dlv {
    const char *body;
    const char *content_type; /* NULL: application/json */
    const char *reply_to;     /* NULL: none */
    const char *corr;         /* NULL: none */
    const amqp_table_entry_t *hdr;
    int nhdr;
} dlv_t;

/* A JSON message: payload "line-<n>", failing its first fail_times attempts. */
static const char *json_body(char *buf, size_t len, int n, int fail_times)
{
    snprintf(buf, len, "{\"id\":\"id-%d\",\"payload\":\"line-%d\",\"fail_times\":%d}", n, n,
             fail_times);
    return buf;
}

static void send_content(fx_t *fx, amqp_channel_t ch, const amqp_basic_properties_t *p,
                         const char *body)
{
    amqp_frame_t f;

    memset(&f, 0, sizeof(f));
    f.frame_type = AMQP_FRAME_HEADER;
    f.channel = ch;
    f.payload.properties.class_id = AMQP_BASIC_CLASS;
    f.payload.properties.body_size = strlen(body);
    f.payload.properties.decoded = (void *)(uintptr_t)p;
    cr_assert_eq(amqp_send_frame(fx->broker, &f), AMQP_STATUS_OK);
    if (strlen(body) == 0)
        return;
    memset(&f, 0, sizeof(f));
    f.frame_type = AMQP_FRAME_BODY;
    f.channel = ch;
    f.payload.body_fragment = amqp_cstring_bytes(body);
    cr_assert_eq(amqp_send_frame(fx->broker, &f), AMQP_STATUS_OK);
}

/* Writes basic.deliver (delivery tag `tag`, message_id "m<tag>") and its content. */
static void deliver(fx_t *fx, uint64_t tag, const dlv_t *d)
{
    amqp_basic_deliver_t m = {.consumer_tag = amqp_cstring_bytes("ctag-test"),
                              .delivery_tag = tag,
                              .exchange = amqp_empty_bytes,
                              .routing_key = amqp_cstring_bytes("request_queue")};
    amqp_basic_properties_t p;
    char mid[32];

    memset(&p, 0, sizeof(p));
    snprintf(mid, sizeof(mid), "m%llu", (unsigned long long)tag);
    p._flags =
        AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.content_type = amqp_cstring_bytes(d->content_type ? d->content_type : "application/json");
    p.message_id = amqp_cstring_bytes(mid);
    p.delivery_mode = 2;
    if (d->reply_to != NULL) {
        p._flags |= AMQP_BASIC_REPLY_TO_FLAG;
        p.reply_to = amqp_cstring_bytes(d->reply_to);
    }
    if (d->corr != NULL) {
        p._flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        p.correlation_id = amqp_cstring_bytes(d->corr);
    }
    if (d->nhdr > 0) {
        p._flags |= AMQP_BASIC_HEADERS_FLAG;
        p.headers.num_entries = d->nhdr;
        p.headers.entries = (amqp_table_entry_t *)(uintptr_t)d->hdr;
    }
    cr_assert_eq(amqp_send_method(fx->broker, 1, AMQP_BASIC_DELIVER_METHOD, &m), AMQP_STATUS_OK);
    send_content(fx, 1, &p, d->body);
}

/* A plain JSON delivery n (no reply_to) that fails its first fail_times attempts. */
static void deliver_json(fx_t *fx, uint64_t tag, int fail_times)
{
    char body[128];
    dlv_t d = {.body = json_body(body, sizeof(body), (int)tag, fail_times)};

    deliver(fx, tag, &d);
}

/* A publisher confirm on the copy channel: basic.ack (ack) or basic.nack of `tag`. */
static void confirm(fx_t *fx, uint64_t tag, int multiple, int ack)
{
    amqp_basic_ack_t a = {.delivery_tag = tag, .multiple = multiple};
    amqp_basic_nack_t n = {.delivery_tag = tag, .multiple = multiple, .requeue = 0};

    cr_assert_eq(amqp_send_method(fx->broker, COPY_CHANNEL,
                                  ack ? AMQP_BASIC_ACK_METHOD : AMQP_BASIC_NACK_METHOD,
                                  ack ? (void *)&a : (void *)&n),
                 AMQP_STATUS_OK);
}

/* One method frame the worker wrote, with its content for a basic.publish. */
typedef struct seen {
    amqp_channel_t ch;
    amqp_method_number_t id;
    uint64_t tag;
    int multiple, requeue, mandatory;
    char rk[300];     /* basic.publish: routing key */
    char corr[64];    /* basic.publish: correlation_id */
    char hdrs[1024];  /* basic.publish: "name=value;" per header (long values: "#<length>") */
    char body[256];   /* basic.publish: the body (truncated) */
    size_t body_size; /* basic.publish: the whole body's size */
} seen_t;

static void append(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static void render_headers(const amqp_table_t *t, char *buf, size_t len)
{
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        const amqp_field_value_t *v = &e->value;

        append(buf, len, "%.*s=", (int)e->key.len, (const char *)e->key.bytes);
        switch (v->kind) {
        case AMQP_FIELD_KIND_UTF8:
        case AMQP_FIELD_KIND_BYTES:
            if (v->value.bytes.len > 120)
                append(buf, len, "#%zu", v->value.bytes.len);
            else
                append(buf, len, "%.*s", (int)v->value.bytes.len,
                       (const char *)v->value.bytes.bytes);
            break;
        case AMQP_FIELD_KIND_I64:
            append(buf, len, "%lld", (long long)v->value.i64);
            break;
        case AMQP_FIELD_KIND_I32:
            append(buf, len, "%d", (int)v->value.i32);
            break;
        default:
            append(buf, len, "?%c", (char)v->kind);
        }
        append(buf, len, ";");
    }
}

/* Reads and decodes the frames the worker wrote, waiting up to 300 ms for the first and
 * 100 ms for each next. Returns how many method frames (at most max). */
static size_t read_frames(fx_t *fx, seen_t *out, size_t max)
{
    size_t n = 0;
    int got = 0;

    memset(out, 0, max * sizeof(*out));

    for (;;) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = got ? 100000 : 300000};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(fx->broker, &f, &tv);

        if (rc == AMQP_STATUS_TIMEOUT)
            break;
        cr_assert_eq(rc, AMQP_STATUS_OK, "reading the worker's frames: %s", amqp_error_string2(rc));
        got = 1;
        if (f.frame_type == AMQP_FRAME_METHOD) {
            seen_t *s;

            cr_assert_lt(n, max, "more frames than expected");
            s = &out[n++];
            memset(s, 0, sizeof(*s));
            s->ch = f.channel;
            s->id = f.payload.method.id;
            switch (s->id) {
            case AMQP_BASIC_ACK_METHOD: {
                const amqp_basic_ack_t *m = f.payload.method.decoded;
                s->tag = m->delivery_tag;
                s->multiple = m->multiple;
                break;
            }
            case AMQP_BASIC_NACK_METHOD: {
                const amqp_basic_nack_t *m = f.payload.method.decoded;
                s->tag = m->delivery_tag;
                s->multiple = m->multiple;
                s->requeue = m->requeue;
                break;
            }
            case AMQP_BASIC_REJECT_METHOD: {
                const amqp_basic_reject_t *m = f.payload.method.decoded;
                s->tag = m->delivery_tag;
                s->requeue = m->requeue;
                break;
            }
            case AMQP_BASIC_PUBLISH_METHOD: {
                const amqp_basic_publish_t *m = f.payload.method.decoded;
                snprintf(s->rk, sizeof(s->rk), "%.*s", (int)m->routing_key.len,
                         (const char *)m->routing_key.bytes);
                s->mandatory = m->mandatory;
                break;
            }
            }
        } else if (f.frame_type == AMQP_FRAME_HEADER) {
            const amqp_basic_properties_t *p = f.payload.properties.decoded;
            seen_t *s = &out[n - 1];

            cr_assert_gt(n, 0);
            s->body_size = (size_t)f.payload.properties.body_size;
            if (p->_flags & AMQP_BASIC_CORRELATION_ID_FLAG)
                snprintf(s->corr, sizeof(s->corr), "%.*s", (int)p->correlation_id.len,
                         (const char *)p->correlation_id.bytes);
            if (p->_flags & AMQP_BASIC_HEADERS_FLAG)
                render_headers(&p->headers, s->hdrs, sizeof(s->hdrs));
        } else if (f.frame_type == AMQP_FRAME_BODY) {
            cr_assert_gt(n, 0);
            append(out[n - 1].body, sizeof(out[n - 1].body), "%.*s",
                   (int)f.payload.body_fragment.len, (const char *)f.payload.body_fragment.bytes);
        }
        amqp_maybe_release_buffers(fx->broker);
    }
    return n;
}

/* The settle frames (ack, nack, reject on channel 1) among s[0..n), in order, as text:
 * "ack 3 m; reject 4 rq; ack 5;" (m: multiple, rq: requeue). */
static void settles(const seen_t *s, size_t n, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *name = s[i].id == AMQP_BASIC_ACK_METHOD      ? "ack"
                           : s[i].id == AMQP_BASIC_NACK_METHOD   ? "nack"
                           : s[i].id == AMQP_BASIC_REJECT_METHOD ? "reject"
                                                                 : NULL;
        if (name == NULL)
            continue;
        cr_expect_eq(s[i].ch, RQ_AMQP_CHANNEL, "settled on channel 1");
        append(buf, len, "%s %llu%s%s; ", name, (unsigned long long)s[i].tag,
               s[i].multiple ? " m" : "", s[i].requeue ? " rq" : "");
    }
}

/* The publishes on channel ch among s[0..n) as "rk;rk;". */
static void publishes(const seen_t *s, size_t n, amqp_channel_t ch, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (s[i].id == AMQP_BASIC_PUBLISH_METHOD && s[i].ch == ch)
            append(buf, len, "%s;", s[i].rk);
    }
}

static char *read_file(const char *p)
{
    static char buf[4096];
    FILE *f = fopen(p, "rb");
    size_t n;

    cr_assert_not_null(f, "cannot open %s", p);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static amqp_table_entry_t hdr_i64(const char *k, int64_t v)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(k)};

    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    return e;
}

static amqp_table_entry_t hdr_i32(const char *k, int32_t v)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(k)};

    e.value.kind = AMQP_FIELD_KIND_I32;
    e.value.value.i32 = v;
    return e;
}

static amqp_table_entry_t hdr_str(const char *k, const char *v)
{
    amqp_table_entry_t e = {.key = amqp_cstring_bytes(k)};

    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(v);
    return e;
}

/* ---- output file errors: RLIMIT_FSIZE makes every write past 1 byte fail (EFBIG) ------- */

static void output_fails(int on)
{
    static struct rlimit saved;
    struct rlimit r;

    if (on) {
        signal(SIGXFSZ, SIG_IGN);
        cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
        r = saved;
        r.rlim_cur = 1;
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &r), 0);
    } else {
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    }
}

static double now_s(void)
{
    return (double)rq_mono_ns() / 1e9;
}

/* ---- the loop, step by step ------------------------------------------------------------ */

/* Takes in deliveries as the loop does (pump, intake), without starting their jobs: waits up
 * to 5 s for a first one, then until none came for BATCH_WAIT_MS (what collect() did before
 * issue 14). Returns 0, or -1 when the connection failed. */
static int collect_held(rq_worker_t *w, volatile int *stop)
{
    int64_t end = rq_mono_ms() + 5000, quiet_since = rq_mono_ms();
    size_t seen = w->n;

    while (!*stop && rq_mono_ms() < end) {
        if (pump(w, 10) < 0)
            return -1;
        intake(w);
        if (w->n != seen) {
            seen = w->n;
            quiet_since = rq_mono_ms();
        } else if (w->n > 0 && rq_mono_ms() - quiet_since >= w->cfg->batch_wait_ms) {
            break;
        }
    }
    return 0;
}

/* Starts the jobs of the deliveries held and runs the loop (serve's steps, without taking in
 * more deliveries: those read meanwhile stay in the stash) until every one held is settled:
 * a group commits once everything held is done, or BATCH_WAIT_MS after the first finished.
 * Returns 0, or -1 when the connection failed. */
static int process_held(rq_worker_t *w, volatile int *stop)
{
    int64_t end = rq_mono_ms() + 20000;

    while (w->n > 0 && rq_mono_ms() < end) {
        start_pending(w);
        harvest(w);
        if (w->ndone > 0 &&
            (w->ndone == w->n || rq_mono_ms() - w->done_first_ms >= w->cfg->batch_wait_ms)) {
            if (commit_done(w, stop) < 0)
                return -1;
            continue;
        }
        if (pump(w, 10) < 0)
            return -1;
    }
    cr_assert_eq(w->n, 0, "every delivery held was settled");
    return 0;
}

TestSuite(worker, .timeout = 30);

/* ---- the settle plan ------------------------------------------------------------------- */

/* Five deliveries: 1, 2, 5 processed (with replies), 3 and 4 failed (retry copies); the
 * broker acks the copy of 3 and nacks the copy of 4. Copies go first, then the replies, then
 * the settlement: one ack covering 1..3, 4 requeued alone (its copy is not stored), 5 acked. */
Test(worker, settle_plan_acks_and_requeues_the_right_delivery_tags)
{
    fx_t fx;
    seen_t s[16];
    char b[5][128], text[512];
    size_t n;

    fx_open(&fx, 1);
    for (int t = 1; t <= 5; t++) {
        char corr[16];
        int fails = t == 3 || t == 4;
        dlv_t d = {.body = json_body(b[t - 1], sizeof(b[0]), t, fails ? 9 : 0),
                   .reply_to = fails ? NULL : "amq.gen-cb",
                   .corr = corr};

        snprintf(corr, sizeof(corr), "c%d", t);
        deliver(&fx, (uint64_t)t, &d);
    }
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 5);
    confirm(&fx, 1, 0, 1); /* copy 1 (of delivery 3): stored */
    confirm(&fx, 2, 0, 0); /* copy 2 (of delivery 4): refused */

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);

    n = read_frames(&fx, s, 16);
    cr_expect_eq(n, 8, "2 copies, 3 replies, 3 settles (got %zu)", n);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;request_queue.retry.1;", "got %s", text);
    cr_expect(s[0].mandatory && s[1].mandatory, "copies are mandatory");
    cr_expect_str_eq(s[0].corr, "c3");
    cr_expect_str_eq(s[1].corr, "c4");
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "amq.gen-cb;amq.gen-cb;amq.gen-cb;", "got %s", text);
    cr_expect_str_eq(s[2].corr, "c1");
    cr_expect_str_eq(s[3].corr, "c2");
    cr_expect_str_eq(s[4].corr, "c5");
    cr_expect_str_eq(s[2].body, "Consumer processed: line-1");
    for (size_t i = 0; i < 5; i++)
        cr_expect_eq(s[i].id, AMQP_BASIC_PUBLISH_METHOD, "frame %zu: publishes before settles", i);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 3 m; reject 4 rq; ack 5; ", "got %s", text);
    cr_expect_str_eq(read_file(fx.path), "line-1\nline-2\nline-5\n");
    fx_close(&fx);
}

/* ---- deliveries read while waiting for confirms ---------------------------------------- */

/* Deliveries 2 and 3 arrive while the copy of 1 awaits its confirm: they are kept, and the
 * next batch takes them first, in order, before 4 (read from the socket). */
Test(worker, deliveries_read_while_waiting_for_confirms_come_back_in_order)
{
    fx_t fx;
    seen_t s[16];
    char text[256];
    size_t n;

    fx_open(&fx, 0);
    deliver_json(&fx, 1, 1);
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 1);
    deliver_json(&fx, 2, 0);
    deliver_json(&fx, 3, 0);
    confirm(&fx, 1, 0, 1);

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);
    cr_expect_eq(rq_ring_len(&fx.w->stash), 2, "2 and 3 kept");
    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;", "got %s", text);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 1; ", "only 1 is settled (got %s)", text);
    deliver_json(&fx, 4, 0);
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 3);
    for (size_t i = 0; i < 3; i++)
        cr_expect_eq(fx.w->items[i].env.delivery_tag, i + 2, "item %zu: delivery %llu", i,
                     (unsigned long long)fx.w->items[i].env.delivery_tag);
    cr_expect_eq(rq_ring_len(&fx.w->stash), 0);
    cr_assert_eq(process_held(fx.w, &fx.stop), 0);
    n = read_frames(&fx, s, 16);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 4 m; ", "got %s", text);
    fx_close(&fx);
}

/* ---- a connection lost in the middle of commit() --------------------------------------- */

/* The copy of 2 is published, the output of 1 and 3 written and their replies sent, then
 * 20 more deliveries arrive (the stash grows past its first 16 slots) and the connection
 * ends before the copy's confirm: nothing is settled (the broker redelivers all three; the
 * output writer keeps their lines once), and dropping the connection frees every delivery
 * kept (ASan: no leak, no double free). */
Test(worker, connection_lost_mid_commit_settles_nothing_and_frees_the_stash)
{
    fx_t fx;
    seen_t s[16];
    char b[3][128], text[256];
    size_t n;
    char ready[128];

    fx_open(&fx, 1);
    for (int t = 1; t <= 3; t++) {
        dlv_t d = {.body = json_body(b[t - 1], sizeof(b[0]), t, t == 2 ? 1 : 0),
                   .reply_to = "amq.gen-cb",
                   .corr = "c"};
        deliver(&fx, (uint64_t)t, &d);
    }
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 3);
    for (uint64_t t = 4; t < 24; t++)
        deliver_json(&fx, t, 0);
    cr_assert_eq(shutdown(fx.sfd, SHUT_WR), 0); /* the worker reads EOF after them */

    cr_assert_eq(process_held(fx.w, &fx.stop), -1, "the commit fails with the connection");

    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;", "got %s", text);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "", "nothing half-acknowledged (got %s)", text);
    cr_expect_str_eq(read_file(fx.path), "line-1\nline-3\n");
    cr_assert_eq(rq_ring_len(&fx.w->stash), 20);
    for (size_t i = 0; i < 20; i++) {
        const amqp_envelope_t *e = rq_ring_at(&fx.w->stash, i);
        cr_expect_eq(e->delivery_tag, i + 4, "kept in order");
    }
    drop_conn(fx.w);
    cr_expect_eq(rq_ring_len(&fx.w->stash), 0);
    cr_expect_null(fx.w->conn);
    cr_expect_eq(rq_worker_ready(fx.w, ready, sizeof(ready)), 0, "not ready once dropped");
    fx_close(&fx);
}

/* ---- the output file cannot be written ------------------------------------------------- */

typedef struct watch {
    int sfd;
    int early; /* 1: the worker wrote something while the output was failing */
} watch_t;

/* Watches the worker's socket for 600 ms (the first write fails, the retry comes after
 * 1 s), then lets the output be written again. */
static void *watch_then_heal(void *arg)
{
    watch_t *wt = arg;
    struct pollfd pf = {.fd = wt->sfd, .events = POLLIN};

    wt->early = poll(&pf, 1, 600) > 0;
    output_fails(0);
    return NULL;
}

/* A batch whose output write fails is held: no reply, no ack, the write retried after a
 * pause; once written, the lines are there once and the batch is acked. */
Test(worker, output_write_failure_holds_the_batch_unacked_until_written)
{
    fx_t fx;
    seen_t s[16];
    char b[2][128], text[256];
    pthread_t th;
    watch_t wt;
    double t0, took;
    size_t n;

    fx_open(&fx, 1);
    for (int t = 1; t <= 2; t++) {
        dlv_t d = {.body = json_body(b[t - 1], sizeof(b[0]), t, 0),
                   .reply_to = "amq.gen-cb",
                   .corr = t == 1 ? "c1" : "c2"};
        deliver(&fx, (uint64_t)t, &d);
    }
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 2);
    wt.sfd = fx.sfd;
    wt.early = 0;
    output_fails(1);
    cr_assert_eq(pthread_create(&th, NULL, watch_then_heal, &wt), 0);

    t0 = now_s();
    cr_assert_eq(process_held(fx.w, &fx.stop), 0);
    took = now_s() - t0;
    pthread_join(th, NULL);

    cr_expect_eq(wt.early, 0, "nothing sent while the output could not be written");
    cr_expect_geq(took, 0.9, "the write was retried after its pause (took %.2f s)", took);
    cr_expect_str_eq(read_file(fx.path), "line-1\nline-2\n");
    n = read_frames(&fx, s, 16);
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "amq.gen-cb;amq.gen-cb;", "got %s", text);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 2 m; ", "got %s", text);
    fx_close(&fx);
}

/* A stop while the output fails: the processed message is requeued (no reply: it was not
 * written), the failed one is acked, its copy being confirmed. */
Test(worker, stop_while_the_output_fails_requeues_the_processed_and_acks_the_copied)
{
    fx_t fx;
    seen_t s[16];
    char b[128], text[256];
    dlv_t d = {.body = json_body(b, sizeof(b), 1, 0), .reply_to = "amq.gen-cb", .corr = "c1"};
    size_t n;
    struct stat st;

    fx_open(&fx, 1);
    deliver(&fx, 1, &d);
    deliver_json(&fx, 2, 1);
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 2);
    confirm(&fx, 1, 0, 1);
    fx.stop = 1;
    output_fails(1);
    cr_assert_eq(process_held(fx.w, &fx.stop), 0);
    output_fails(0);

    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;", "got %s", text);
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "", "no reply for a line not written (got %s)", text);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "reject 1 rq; ack 2; ", "got %s", text);
    cr_assert_eq(stat(fx.path, &st), 0);
    cr_expect_eq(st.st_size, 0, "no line written");
    fx_close(&fx);
}

/* ---- retries, dead letters and copies that do not fit ---------------------------------- */

/* x-relayq-attempt, read through rq_wire_decode() in whatever kind a publisher used, picks
 * the next delay queue, and after MAX_RETRIES (5) the DLQ; a header that is not an integer
 * counts as the first attempt. Each copy carries the attempt once. */
Test(worker, the_attempt_header_picks_the_next_delay_queue_or_the_dlq)
{
    fx_t fx;
    seen_t s[16];
    char b[6][128], text[512];
    amqp_table_entry_t h[6];
    size_t n;

    fx_open(&fx, 0);
    cr_assert_eq(cfg.rabbitmq.max_retries, 5);
    h[1] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 2);
    h[2] = hdr_i32(RQ_WIRE_HDR_ATTEMPT, 4);
    h[3] = hdr_str(RQ_WIRE_HDR_ATTEMPT, "5");
    h[4] = hdr_str(RQ_WIRE_HDR_ATTEMPT, "abc");
    h[5] = hdr_i64(RQ_WIRE_HDR_ATTEMPT, -3);
    for (int t = 1; t <= 6; t++) {
        dlv_t d = {.body = json_body(b[t - 1], sizeof(b[0]), t, 99),
                   .hdr = &h[t - 1],
                   .nhdr = t == 1 ? 0 : 1};
        deliver(&fx, (uint64_t)t, &d);
    }
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 6);
    confirm(&fx, 6, 1, 1);

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);

    n = read_frames(&fx, s, 16);
    cr_expect_eq(n, 7, "6 copies and one ack (got %zu)", n);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;request_queue.retry.3;request_queue.retry.5;"
                           "request_queue.dlq;request_queue.retry.1;request_queue.retry.1;");
    static const char *const want[6] = {"x-relayq-attempt=1;", "x-relayq-attempt=3;",
                                        "x-relayq-attempt=5;", "x-relayq-attempts=6;",
                                        "x-relayq-attempt=1;", "x-relayq-attempt=1;"};
    for (size_t i = 0; i < 6; i++) {
        const char *at = strstr(s[i].hdrs, "x-relayq-attempt");

        cr_expect(strstr(s[i].hdrs, want[i]) != NULL, "copy %zu: %s in %s", i, want[i], s[i].hdrs);
        cr_expect(at != NULL && strstr(at + 1, "x-relayq-attempt") == NULL,
                  "copy %zu carries the attempt once: %s", i, s[i].hdrs);
    }
    cr_expect(strstr(s[3].hdrs, "x-relayq-reason=processing failed after 6 attempts") != NULL, "%s",
              s[3].hdrs);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 6 m; ", "got %s", text);
    fx_close(&fx);
}

/* An undecodable message (a content type relayq does not read) and a poison reply (a reply
 * whose message_id cannot be encoded: "id" over 255 bytes with a reply_to) go to the DLQ
 * with the reason; the message beside them is written, replied to and acked. */
Test(worker, undecodable_and_poison_reply_messages_go_to_the_dlq_alone)
{
    fx_t fx;
    seen_t s[16];
    char longid[300], poison[512], b[128], text[512];
    dlv_t png = {.body = "\x89PNG", .content_type = "image/png", .reply_to = "amq.gen-cb"};
    dlv_t bad = {.body = poison, .reply_to = "amq.gen-cb", .corr = "c2"};
    dlv_t ok = {.body = json_body(b, sizeof(b), 3, 0), .reply_to = "amq.gen-cb", .corr = "c3"};
    size_t n;

    memset(longid, 'i', 300);
    longid[299] = '\0';
    snprintf(poison, sizeof(poison), "{\"id\":\"%s\",\"payload\":\"line-2\"}", longid);
    fx_open(&fx, 1);
    deliver(&fx, 1, &png);
    deliver(&fx, 2, &bad);
    deliver(&fx, 3, &ok);
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 3);
    confirm(&fx, 2, 1, 1);

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);

    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.dlq;request_queue.dlq;", "got %s", text);
    cr_expect(strstr(s[0].hdrs, "x-relayq-reason=undecodable: ") != NULL, "%s", s[0].hdrs);
    cr_expect(strstr(s[1].hdrs, "x-relayq-reason=undecodable: ") != NULL, "%s", s[1].hdrs);
    cr_expect_eq(s[1].body_size, strlen(poison), "the copy keeps the body");
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "amq.gen-cb;", "one reply: the good message's (got %s)", text);
    cr_expect_str_eq(s[2].corr, "c3");
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 3 m; ", "got %s", text);
    cr_expect_str_eq(read_file(fx.path), "line-3\n");
    fx_close(&fx);
}

/* A failed delivery whose headers nearly fill the frame: its retry copy (the headers plus
 * relayq's) cannot be encoded in a content header frame, so it goes to the DLQ instead,
 * without the original's headers (x-relayq-headers-dropped), and the original is acked. */
Test(worker, a_copy_over_the_frame_goes_to_the_dlq_without_the_headers)
{
    fx_t fx;
    seen_t s[16];
    char b[128], text[512];
    char *bigval;
    amqp_table_entry_t h[2];
    size_t n, biglen;

    fx_open(&fx, 0);
    /* the delivery's content header fits the frame (it can be read); a copy's, with relayq's
     * headers added, leaves less than COPY_HEADER_MARGIN of it */
    biglen = (size_t)amqp_get_frame_max(fx.w->conn) - COPY_HEADER_MARGIN / 2 - 60;
    bigval = malloc(biglen + 1);
    cr_assert_not_null(bigval);
    memset(bigval, 'h', biglen);
    bigval[biglen] = '\0';
    h[0] = hdr_str("x-big", bigval);
    h[1] = hdr_str("x-small", "kept?");
    dlv_t d = {.body = json_body(b, sizeof(b), 1, 1), .hdr = h, .nhdr = 2};
    deliver(&fx, 1, &d);
    deliver_json(&fx, 2, 0);
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 2);
    cr_expect_eq(fx.w->items[0].env.message.properties.headers.num_entries, 2);
    confirm(&fx, 1, 0, 1);

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);

    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.dlq;", "a DLQ copy, not a retry (got %s)", text);
    cr_expect(strstr(s[0].hdrs, "x-relayq-headers-dropped=1;") != NULL, "%s", s[0].hdrs);
    cr_expect(strstr(s[0].hdrs, "x-big") == NULL && strstr(s[0].hdrs, "x-small") == NULL,
              "without the original's headers: %s", s[0].hdrs);
    cr_expect(strstr(s[0].hdrs, "its retry copy cannot be encoded") != NULL, "%s", s[0].hdrs);
    cr_expect_str_eq(s[0].body, b, "the body is kept");
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 2 m; ", "got %s", text);
    free(bigval);
    fx_close(&fx);
}

/* A copy comes back unroutable (its delay queue was deleted): its original is requeued, not
 * acked, and the worker asks for a new connection (which declares the topology again); the
 * other copy is confirmed and its original acked. */
Test(worker, a_returned_copy_requeues_its_original_and_asks_for_the_topology_again)
{
    fx_t fx;
    seen_t s[16];
    char b[128], text[512];
    amqp_table_entry_t h = hdr_i64(RQ_WIRE_HDR_ATTEMPT, 5);
    dlv_t last = {.body = json_body(b, sizeof(b), 2, 99), .hdr = &h, .nhdr = 1};
    amqp_basic_return_t ret = {.reply_code = 312,
                               .reply_text = amqp_cstring_bytes("NO_ROUTE"),
                               .exchange = amqp_empty_bytes,
                               .routing_key = amqp_cstring_bytes("request_queue.retry.1")};
    amqp_basic_properties_t rp;
    size_t n;

    fx_open(&fx, 0);
    deliver_json(&fx, 1, 1); /* to request_queue.retry.1: returned */
    deliver(&fx, 2, &last);  /* to request_queue.dlq: stored */
    cr_assert_eq(collect_held(fx.w, &fx.stop), 0);
    cr_assert_eq(fx.w->n, 2);
    memset(&rp, 0, sizeof(rp));
    cr_assert_eq(amqp_send_method(fx.broker, COPY_CHANNEL, AMQP_BASIC_RETURN_METHOD, &ret),
                 AMQP_STATUS_OK);
    send_content(&fx, COPY_CHANNEL, &rp, "returned body");
    confirm(&fx, 2, 1, 1);

    cr_assert_eq(process_held(fx.w, &fx.stop), 0);

    cr_expect_eq(fx.w->redeclare, 1, "the topology is declared again after the batch");
    n = read_frames(&fx, s, 16);
    publishes(s, n, COPY_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "request_queue.retry.1;request_queue.dlq;", "got %s", text);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "reject 1 rq; ack 2; ", "got %s", text);
    fx_close(&fx);
}

/* ---- concurrency (issue 14) ------------------------------------------------------------ */

/* A JSON message n (reply_to, correlation id "c<n>") with a processing_time. */
static void deliver_timed(fx_t *fx, uint64_t tag, double seconds)
{
    char body[160], corr[16];
    dlv_t d = {.body = body, .reply_to = "amq.gen-cb", .corr = corr};

    snprintf(body, sizeof(body),
             "{\"id\":\"id-%d\",\"payload\":\"line-%d\",\"processing_time\":%g}", (int)tag,
             (int)tag, seconds);
    snprintf(corr, sizeof(corr), "c%d", (int)tag);
    deliver(fx, tag, &d);
}

typedef struct stopper {
    volatile int *stop;
    int ms;
} stopper_t;

static void *stop_after(void *arg)
{
    stopper_t *s = arg;
    struct timespec ts = {.tv_sec = s->ms / 1000, .tv_nsec = (long)(s->ms % 1000) * 1000000};

    nanosleep(&ts, NULL);
    *s->stop = 1;
    return NULL;
}

/* Runs serve() (the loop of rq_worker_run) for ms milliseconds, then the stop path of
 * rq_worker_run (the jobs running cancelled and requeued, what finished committed). */
static void serve_for(fx_t *fx, int ms)
{
    stopper_t sp = {.stop = &fx->stop, .ms = ms};
    pthread_t th;

    cr_assert_eq(pthread_create(&th, NULL, stop_after, &sp), 0);
    cr_assert_eq(serve(fx->w, &fx->stop), 0);
    pthread_join(th, NULL);
    stop_jobs(fx->w);
    if (fx->w->ndone > 0)
        cr_assert_eq(commit_done(fx->w, &fx->stop), 0);
    cr_expect_eq(fx->w->n, 0, "nothing held after the stop");
}

/* Delivery 1 takes 400 ms, 2 and 3 none: 2 and 3 are written, replied to and acked first,
 * each by its own frame (an ack `multiple` of 3 would also settle 1, still running), then 1
 * on its own; every reply is the echo's "Consumer processed: <line>". */
Test(worker, a_slow_delivery_does_not_hold_back_the_fast_ones_behind_it)
{
    fx_t fx;
    seen_t s[16];
    char text[512];
    size_t n;

    fx_open(&fx, 1);
    deliver_timed(&fx, 1, 0.4);
    deliver_timed(&fx, 2, 0);
    deliver_timed(&fx, 3, 0);
    serve_for(&fx, 700);

    n = read_frames(&fx, s, 16);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 2; ack 3; ack 1; ", "got %s", text);
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "amq.gen-cb;amq.gen-cb;amq.gen-cb;", "got %s", text);
    cr_expect_str_eq(s[0].corr, "c2");
    cr_expect_str_eq(s[1].corr, "c3");
    cr_expect_eq(s[2].id, AMQP_BASIC_ACK_METHOD, "2 and 3 are settled before 1's reply");
    cr_expect_str_eq(s[4].corr, "c1", "the slow one's reply comes last");
    cr_expect_str_eq(s[4].body, "Consumer processed: line-1");
    cr_expect_str_eq(read_file(fx.path), "line-2\nline-3\nline-1\n");
    fx_close(&fx);
}

/* A stop while 1 and 3 run (5 s each): 2 (no processing_time) is written and acked, the
 * running two are cancelled and requeued (no line, no reply), after 2's group: one nack
 * `multiple`, nothing else being outstanding by then. */
Test(worker, stop_requeues_the_running_jobs_and_keeps_the_finished)
{
    fx_t fx;
    seen_t s[16];
    char text[512];
    size_t n;
    double t0, took;

    fx_open(&fx, 1);
    deliver_timed(&fx, 1, 5);
    deliver_timed(&fx, 2, 0);
    deliver_timed(&fx, 3, 5);
    t0 = now_s();
    serve_for(&fx, 300);
    took = now_s() - t0;

    cr_expect_lt(took, 1.0, "the stop does not wait for the jobs (took %.2f s)", took);
    n = read_frames(&fx, s, 16);
    settles(s, n, text, sizeof(text));
    cr_expect_str_eq(text, "ack 2; nack 3 m rq; ", "got %s", text);
    publishes(s, n, RQ_AMQP_CHANNEL, text, sizeof(text));
    cr_expect_str_eq(text, "amq.gen-cb;", "one reply: 2's (got %s)", text);
    cr_expect_str_eq(read_file(fx.path), "line-2\n");
    fx_close(&fx);
}
