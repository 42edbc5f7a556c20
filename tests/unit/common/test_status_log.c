/* Unit tests for the status log (common/status_log.c) without a broker: the segment size,
 * option validation, the append bounds, done callbacks at stop (exactly once, ok 0), append
 * timeouts and a bounded stop while the broker's port refuses (127.0.0.1, nothing listening).
 * The broker side is tests/integration/test_status_log.py. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "status_log.h"
#include "util.h"

TestSuite(status_log, .timeout = 30);

static rq_config_t cfg;
static rq_status_log_opts_t opts;

/* A port on 127.0.0.1 that refuses connections (bound once, closed: nothing listens). */
static int refusing_port(void)
{
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void setup(void)
{
    rq_config_error_t err;
    char port[16];

    cr_assert_eq(rq_config_defaults(&cfg), 0);
    snprintf(port, sizeof(port), "%d", refusing_port());
    cr_assert_eq(rq_config_set(&cfg, "RABBITMQ_HOST", "127.0.0.1", &err), 0);
    cr_assert_eq(rq_config_set(&cfg, "RABBITMQ_PORT", port, &err), 0);
    memset(&opts, 0, sizeof(opts));
    opts.rabbitmq = &cfg.rabbitmq;
    opts.stream = "relayq.status";
    opts.max_age_s = 86400;
    opts.max_bytes = 1LL << 30;
    opts.service = "producer";
    opts.max_pending = 4;
    opts.max_pending_bytes = 1 << 20;
}

static void teardown(void)
{
    rq_config_free(&cfg);
}

typedef struct calls {
    atomic_int ok, failed;
} calls_t;

static void on_done(void *arg, int ok)
{
    calls_t *c = arg;

    atomic_fetch_add(ok ? &c->ok : &c->failed, 1);
}

static void on_read(const void *body, size_t len, uint64_t offset, int64_t ts_ms, void *arg) {}

Test(status_log, segment_bytes_is_a_quarter_within_1_and_64_mib)
{
    cr_expect_eq(rq_status_log_segment_bytes(4LL << 20), 1LL << 20);
    cr_expect_eq(rq_status_log_segment_bytes(1LL << 20), 1LL << 20, "below the floor");
    cr_expect_eq(rq_status_log_segment_bytes(100LL << 20), 25LL << 20);
    cr_expect_eq(rq_status_log_segment_bytes(256LL << 20), 64LL << 20);
    cr_expect_eq(rq_status_log_segment_bytes(1LL << 30), 64LL << 20, "the default: capped");
    cr_expect_eq(rq_status_log_segment_bytes(1LL << 40), 64LL << 20);
}

Test(status_log, invalid_options_make_no_log, .init = setup, .fini = teardown)
{
    rq_status_log_opts_t o;
    char long_name[300];

    cr_expect_null(rq_status_log_new(NULL, NULL));
#define BAD(field, value)                                                                          \
    do {                                                                                           \
        o = opts;                                                                                  \
        o.field = value;                                                                           \
        cr_expect_null(rq_status_log_new(&o, NULL), #field " = " #value);                          \
    } while (0)
    BAD(rabbitmq, NULL);
    BAD(stream, NULL);
    BAD(stream, "");
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    BAD(stream, long_name);
    BAD(max_age_s, 0);
    BAD(max_bytes, -1);
    BAD(service, NULL);
    BAD(max_pending, 0);
    BAD(max_pending_bytes, 0);
    BAD(prefetch, -1);
    BAD(prefetch, 65536);
    BAD(replay_from_ms, -5);
#undef BAD
    rq_status_log_t *l = rq_status_log_new(&opts, NULL);
    cr_expect_not_null(l, "the valid options");
    rq_status_log_free(l);
    rq_status_log_free(NULL);
}

Test(status_log, appends_are_bounded_by_count_bytes_and_size, .init = setup, .fini = teardown)
{
    static char big[(1 << 20) + 1];
    rq_metrics_t *m = rq_metrics_new();
    rq_status_log_t *l;
    char *text;

    opts.max_pending_bytes = 10;
    l = rq_status_log_new(&opts, m);
    cr_assert_not_null(l);
    cr_expect_eq(rq_status_log_append(l, "12345", 5, 0, NULL, NULL), 0);
    cr_expect_eq(rq_status_log_append(l, "123456", 6, 0, NULL, NULL), -1, "11 bytes > 10");
    cr_expect_eq(rq_status_log_append(l, "12345", 5, 0, NULL, NULL), 0);
    cr_expect_eq(rq_status_log_append(l, "", 0, 0, NULL, NULL), 0);
    cr_expect_eq(rq_status_log_append(l, "", 0, 0, NULL, NULL), 0);
    cr_expect_eq(rq_status_log_append(l, "", 0, 0, NULL, NULL), -1, "5 events > 4");
    cr_expect_eq(rq_status_log_append(l, big, sizeof(big), 0, NULL, NULL), -1, "over 1 MiB");
    cr_expect_eq(rq_status_log_barrier(l, 0, NULL, NULL), -1, "no reader");
    cr_expect_eq(rq_status_log_up(l), 0);
    cr_expect_eq(rq_status_log_caught_up(l), 0);
    rq_status_log_free(l);
    text = rq_metrics_render(m, NULL);
    cr_assert_not_null(text);
    cr_expect_not_null(strstr(text, "status_events_dropped_total{service=\"producer\"} 7"), "%s",
                       text);
    cr_expect_not_null(strstr(text, "status_stream_up{service=\"producer\"} 0"), "%s", text);
    free(text);
    rq_metrics_free(m);
}

Test(status_log, free_without_start_fails_each_callback_once, .init = setup, .fini = teardown)
{
    calls_t c = {0}, b = {0};
    rq_status_log_t *l;

    opts.on_read = on_read;
    l = rq_status_log_new(&opts, NULL);
    cr_assert_not_null(l);
    for (int i = 0; i < 3; i++)
        cr_expect_eq(rq_status_log_append(l, "{}", 2, 0, on_done, &c), 0);
    cr_expect_eq(rq_status_log_barrier(l, 0, on_done, &b), 0);
    rq_status_log_free(l);
    cr_expect_eq(atomic_load(&c.failed), 3);
    cr_expect_eq(atomic_load(&c.ok), 0);
    cr_expect_eq(atomic_load(&b.failed), 1);
}

Test(status_log, a_refusing_broker_times_out_appends_and_stops_fast, .init = setup,
     .fini = teardown)
{
    calls_t c = {0}, t = {0}, b = {0};
    rq_status_log_t *l;
    int64_t t0;

    opts.on_read = on_read;
    l = rq_status_log_new(&opts, NULL);
    cr_assert_not_null(l);
    cr_assert_eq(rq_status_log_start(l), 0);
    cr_expect_eq(rq_status_log_append(l, "{}", 2, 100, on_done, &t), 0);
    cr_expect_eq(rq_status_log_append(l, "{}", 2, 0, on_done, &c), 0);
    cr_expect_eq(rq_status_log_barrier(l, 100, on_done, &b), 0);
    usleep(400 * 1000);
    cr_expect_eq(atomic_load(&t.failed), 1, "timed out while the broker is away");
    cr_expect_eq(atomic_load(&b.failed), 1, "barrier timed out");
    cr_expect_eq(atomic_load(&c.failed), 0, "no limit: still queued");
    cr_expect_eq(rq_status_log_up(l), 0);
    t0 = rq_mono_ms();
    rq_status_log_free(l);
    cr_expect_lt(rq_mono_ms() - t0, 2000, "stopped in %lld ms", (long long)(rq_mono_ms() - t0));
    cr_expect_eq(atomic_load(&c.failed), 1);
    cr_expect_eq(atomic_load(&t.failed) + atomic_load(&t.ok), 1, "exactly once");
    cr_expect_eq(atomic_load(&b.failed) + atomic_load(&b.ok), 1, "exactly once");
}

/* A broker that takes the TCP connection and never answers (frozen): the connect attempt is
 * bounded by the log's own cap, not RABBITMQ_CONNECT_TIMEOUT_MS (5 s here), so a stop during
 * it stays within about 2 s. */
Test(status_log, a_silent_broker_stops_within_about_2_s, .init = setup, .fini = teardown)
{
    struct sockaddr_in a = {0};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    rq_config_error_t err;
    calls_t c = {0};
    char port[16];
    rq_status_log_t *l;
    int64_t t0;

    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(lfd, 8), 0); /* never accepted: the kernel completes the handshake */
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
    cr_assert_eq(rq_config_set(&cfg, "RABBITMQ_PORT", port, &err), 0);
    cr_assert_eq(rq_config_set(&cfg, "RABBITMQ_CONNECT_TIMEOUT_MS", "5000", &err), 0);
    opts.on_read = on_read;
    l = rq_status_log_new(&opts, NULL);
    cr_assert_not_null(l);
    cr_assert_eq(rq_status_log_start(l), 0);
    cr_expect_eq(rq_status_log_append(l, "{}", 2, 0, on_done, &c), 0);
    usleep(200 * 1000); /* in the handshake now */
    cr_expect_eq(rq_status_log_up(l), 0);
    t0 = rq_mono_ms();
    rq_status_log_free(l);
    cr_expect_lt(rq_mono_ms() - t0, 2500, "stopped in %lld ms", (long long)(rq_mono_ms() - t0));
    cr_expect_eq(atomic_load(&c.failed), 1);
    close(lfd);
}
