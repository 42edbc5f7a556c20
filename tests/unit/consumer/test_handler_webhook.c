/* Unit tests for consumer/handler_webhook.c against a real HTTP/1.1 server on 127.0.0.1 run
 * by the test (an accept loop in a thread, a thread per connection, keep-alive): statuses and
 * outcomes, the body as the reply, a timeout, a refused port, overlapping requests, the
 * headers that arrive, connection reuse, cancel. */
#define _GNU_SOURCE /* strcasestr */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "handler.h"
#include "handler_impl.h"
#include "metrics.h"
#include "util.h"
#include "handler_test.h"

/* ---- the server ---- */

static struct {
    int lfd, port;
    pthread_t th;
    atomic_int stop, accepts, inflight, max_inflight;
    pthread_mutex_t mu;
    char last_headers[8192];
} srv;

static void ms_sleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void respond(int fd, int status, const char *body, size_t len)
{
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
                     status, len);

    if (send_all(fd, head, (size_t)n) == 0)
        send_all(fd, body, len);
}

static void *conn_main(void *arg)
{
    int fd = (int)(intptr_t)arg;
    size_t cap = 1 << 20, have = 0;
    char *buf = malloc(cap + 1);

    while (buf) {
        char *end, path[256] = "";
        size_t hlen, clen = 0;
        const char *cl;
        ssize_t r;

        while ((end = (have ? strstr(buf, "\r\n\r\n") : NULL)) == NULL) {
            r = recv(fd, buf + have, cap - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
            buf[have] = '\0';
        }
        hlen = (size_t)(end - buf) + 4;
        cl = strcasestr(buf, "\r\nContent-Length:");
        if (cl && cl < end)
            clen = strtoul(cl + 17, NULL, 10);
        while (have < hlen + clen) {
            r = recv(fd, buf + have, cap - have, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
            buf[have] = '\0';
        }
        sscanf(buf, "POST %255s", path);
        pthread_mutex_lock(&srv.mu);
        snprintf(srv.last_headers, sizeof(srv.last_headers), "%.*s", (int)hlen, buf);
        pthread_mutex_unlock(&srv.mu);
        int now = atomic_fetch_add(&srv.inflight, 1) + 1;
        int prev = atomic_load(&srv.max_inflight);
        while (now > prev && !atomic_compare_exchange_weak(&srv.max_inflight, &prev, now))
            ;
        if (strcmp(path, "/ok") == 0) {
            char *b = malloc(clen + 4);

            memcpy(b, "got:", 4);
            memcpy(b + 4, buf + hlen, clen);
            respond(fd, 200, b, clen + 4);
            free(b);
        } else if (strcmp(path, "/empty") == 0) {
            respond(fd, 200, "", 0);
        } else if (strcmp(path, "/404") == 0) {
            respond(fd, 404, "no such thing\n", 14);
        } else if (strcmp(path, "/500") == 0) {
            respond(fd, 500, "boom", 4);
        } else if (strcmp(path, "/429") == 0) {
            respond(fd, 429, "later", 5);
        } else if (strcmp(path, "/slow") == 0) {
            ms_sleep(1500);
            respond(fd, 200, "late", 4);
        } else if (strcmp(path, "/delay") == 0) {
            ms_sleep(300);
            respond(fd, 200, "d", 1);
        } else if (strcmp(path, "/headers") == 0) {
            respond(fd, 200, buf, hlen);
        } else {
            respond(fd, 400, "bad path", 8);
        }
        atomic_fetch_sub(&srv.inflight, 1);
        memmove(buf, buf + hlen + clen, have - hlen - clen);
        have -= hlen + clen;
        buf[have] = '\0';
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {srv.lfd, POLLIN, 0};
        pthread_t t;
        int fd;

        if (poll(&p, 1, 50) <= 0)
            continue;
        fd = accept(srv.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&srv.accepts, 1);
        if (pthread_create(&t, NULL, conn_main, (void *)(intptr_t)fd) != 0)
            close(fd);
        else
            pthread_detach(t);
    }
    return NULL;
}

/* A port nothing listens on (bound, then closed). */
static int dead_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static rq_config_t cfg;

static void setup(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int one = 1;

    cr_assert_eq(rq_config_defaults(&cfg), 0);
    pthread_mutex_init(&srv.mu, NULL);
    srv.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(srv.lfd >= 0);
    setsockopt(srv.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    cr_assert_eq(bind(srv.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(srv.lfd, 64), 0);
    cr_assert_eq(getsockname(srv.lfd, (struct sockaddr *)&a, &al), 0);
    srv.port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&srv.th, NULL, accept_main, NULL), 0);
}

static void teardown(void)
{
    atomic_store(&srv.stop, 1);
    pthread_join(srv.th, NULL);
    close(srv.lfd);
    rq_config_free(&cfg);
}

TestSuite(handler_webhook, .init = setup, .fini = teardown, .timeout = 30);

/* ---- helpers ---- */

static rq_handler_t *webhook(const char *path)
{
    char url[128], err[256] = "";
    rq_handler_t *h;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", srv.port, path);
    free(cfg.handler);
    cfg.handler = strdup(url);
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    cr_assert_str_eq(rq_handler_kind(h), "webhook");
    return h;
}

/* Drives h until n jobs came back or limit_ms passed (handler_test.h). */
static int run(rq_handler_t *h, int n, int limit_ms)
{
    return run_waiting(h, n, limit_ms, 50);
}

static rq_handler_job_t one(const char *path, const char *payload, int limit_ms)
{
    rq_handler_t *h = webhook(path);
    rq_handler_job_t j;

    job_init(&j, payload);
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, limit_ms), 1, "no answer in %d ms", limit_ms);
    cr_assert_eq(rq_handler_active(h), 0);
    rq_handler_free(h);
    return j;
}

/* ---- tests ---- */

Test(handler_webhook, ok_200_body_is_the_reply)
{
    rq_handler_job_t j = one("/ok", "{\"n\":0.1,\"big\":123456789012345678901234567890}", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_OK);
    cr_assert_eq(j.status, 200);
    cr_assert_str_eq(j.reply, "got:{\"n\":0.1,\"big\":123456789012345678901234567890}");
    cr_assert_eq(j.reply_len, strlen(j.reply));
    cr_assert_str_eq(j.why, "");
    free(j.reply);
}

Test(handler_webhook, ok_with_an_empty_body)
{
    rq_handler_job_t j = one("/empty", "x", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_OK);
    cr_assert_eq(j.reply_len, 0);
    free(j.reply);
}

Test(handler_webhook, status_404_rejects_with_status_and_body)
{
    rq_handler_job_t j = one("/404", "x", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_REJECT);
    cr_assert_eq(j.status, 404);
    cr_assert_str_eq(j.why, "webhook answered 404: no such thing ");
    cr_assert_null(j.reply);
}

Test(handler_webhook, status_500_and_429_retry)
{
    rq_handler_job_t j = one("/500", "x", 5000);

    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert_eq(j.status, 500);
    cr_assert_str_eq(j.why, "webhook answered 500: boom");
    cr_assert_null(j.reply);
    j = one("/429", "x", 5000);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY, "429 asks to come back later");
    cr_assert_eq(j.status, 429);
}

Test(handler_webhook, slow_server_past_the_timeout_retries)
{
    int64_t t0 = rq_mono_ms();
    rq_handler_job_t j;

    cfg.handler_timeout_ms = 200;
    j = one("/slow", "x", 5000);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert(strstr(j.why, "timed out after 200 ms") != NULL, "%s", j.why);
    cr_assert_lt(rq_mono_ms() - t0, 1000, "the timeout did not cut the request");
}

Test(handler_webhook, refused_port_retries)
{
    char url[128], err[256] = "";
    rq_handler_t *h;
    rq_handler_job_t j;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", dead_port());
    free(cfg.handler);
    cfg.handler = strdup(url);
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    job_init(&j, "x");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert_eq(j.status, 0);
    cr_assert(strstr(j.why, "connect") != NULL, "%s", j.why);
    rq_handler_free(h);
}

Test(handler_webhook, unknown_host_retries)
{
    char err[256] = "";
    rq_handler_t *h;
    rq_handler_job_t j;

    free(cfg.handler);
    cfg.handler = strdup("http://no-such-host.invalid/");
    h = rq_handler_new(&cfg, NULL, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    job_init(&j, "x");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 10000), 1);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert(strstr(j.why, "resolve") != NULL, "%s", j.why);
    rq_handler_free(h);
}

Test(handler_webhook, ten_jobs_overlap)
{
    rq_handler_t *h = webhook("/delay");
    rq_handler_job_t j[10];
    int64_t t0 = rq_mono_ms();

    for (int i = 0; i < 10; i++) {
        job_init(&j[i], "x");
        cr_assert_eq(rq_handler_start(h, &j[i], rq_mono_ms()), 0);
    }
    cr_assert_eq(rq_handler_active(h), 10);
    cr_assert_eq(run(h, 10, 5000), 10);
    cr_assert_lt(rq_mono_ms() - t0, 1200, "10 x 300 ms took %lld ms: not overlapping",
                 (long long)(rq_mono_ms() - t0));
    cr_assert_eq(atomic_load(&srv.max_inflight), 10);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(j[i].outcome, RQ_HANDLER_OK);
        cr_assert_str_eq(j[i].reply, "d");
        free(j[i].reply);
    }
    rq_handler_free(h);
}

Test(handler_webhook, connections_are_kept_alive)
{
    rq_handler_t *h = webhook("/ok");
    rq_handler_job_t j;

    for (int i = 0; i < 5; i++) {
        job_init(&j, "k");
        cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
        cr_assert_eq(run(h, 1, 5000), 1);
        cr_assert_eq(j.outcome, RQ_HANDLER_OK);
        free(j.reply);
    }
    cr_assert_eq(atomic_load(&srv.accepts), 1, "%d connections for 5 sequential requests",
                 atomic_load(&srv.accepts));
    rq_handler_free(h);
}

Test(handler_webhook, metadata_arrives_in_headers)
{
    rq_handler_t *h = webhook("/headers");
    rq_handler_job_t j;
    static const char *const want[] = {
        "\r\nContent-Type: text/plain; charset=utf-8\r\n",
        "\r\nX-Relayq-Message-Id: m-1\r\n",
        "\r\nX-Relayq-Correlation-Id: c-1X-Evil: 1\r\n",
        "\r\nX-Relayq-Attempt: 2\r\n",
        "\r\nX-Relayq-Source: api\r\n",
        "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
        "\r\ntracestate: congo=t61rcWkgMzE\r\n",
    };

    job_init(&j, "hello");
    j.content_type = "text/plain; charset=utf-8";
    j.message_id = "m-1";
    j.correlation_id = "c-1\r\nX-Evil: 1"; /* from the queue: must not add a header */
    j.attempt = 2;
    j.source = "api";
    j.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    j.tracestate = "congo=t61rcWkgMzE";
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert_eq(j.outcome, RQ_HANDLER_OK);
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert(strstr(j.reply, want[i]) != NULL, "missing %s in\n%s", want[i], j.reply);
    cr_assert(strstr(j.reply, "\r\nX-Evil") == NULL, "header injected:\n%s", j.reply);
    cr_assert(strstr(j.reply, "Expect:") == NULL, "%s", j.reply);
    cr_assert(strstr(j.reply, "Content-Length: 5\r\n") != NULL, "%s", j.reply);
    free(j.reply);

    /* no content type: application/json; unset metadata: no header */
    job_init(&j, "{}");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert(strstr(j.reply, "\r\nContent-Type: application/json\r\n") != NULL, "%s", j.reply);
    cr_assert(strstr(j.reply, "\r\nX-Relayq-Attempt: 0\r\n") != NULL, "%s", j.reply);
    cr_assert(strstr(j.reply, "Message-Id") == NULL, "%s", j.reply);
    cr_assert(strstr(j.reply, "traceparent") == NULL, "%s", j.reply);
    free(j.reply);
    rq_handler_free(h);
}

Test(handler_webhook, reply_over_max_reply_retries)
{
    char url[128], err[256] = "";
    const rq_handler_ops_t *ops;
    rq_handler_opts_t o = {url, 5000, 4, 5}; /* replies of at most 5 bytes */
    void *w;
    rq_handler_job_t j, *done[1];
    int n = 0;
    int64_t end = rq_mono_ms() + 5000;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/ok", srv.port);
    w = rq_handler_webhook_new(&o, &ops, err, sizeof(err));
    cr_assert_not_null(w, "%s", err);
    job_init(&j, "12345"); /* answer "got:12345", 9 bytes */
    cr_assert_eq(ops->start(w, &j, rq_mono_ms()), 0);
    while (n == 0 && rq_mono_ms() < end) {
        struct pollfd pfd[8];
        int tmo, np = ops->pollfds(w, pfd, 8, rq_mono_ms(), &tmo);

        poll(pfd, (nfds_t)np, tmo < 0 || tmo > 50 ? 50 : tmo);
        n = ops->collect(w, rq_mono_ms(), done, 1);
    }
    cr_assert_eq(n, 1);
    cr_assert_eq(j.outcome, RQ_HANDLER_RETRY);
    cr_assert(strstr(j.why, "over 5 bytes") != NULL, "%s", j.why);
    cr_assert_null(j.reply);
    ops->free(w);
}

Test(handler_webhook, cancel_all_abandons_running_requests)
{
    rq_handler_t *h = webhook("/slow");
    rq_handler_job_t j[3], *done[3];

    for (int i = 0; i < 3; i++) {
        job_init(&j[i], "x");
        cr_assert_eq(rq_handler_start(h, &j[i], rq_mono_ms()), 0);
    }
    run(h, 3, 200); /* connected and sent, waiting */
    rq_handler_cancel_all(h);
    cr_assert_eq(rq_handler_active(h), 0);
    cr_assert_eq(rq_handler_collect(h, rq_mono_ms(), done, 3), 0);
    /* the handler still works after a cancel */
    rq_handler_free(h);
    h = webhook("/ok");
    job_init(&j[0], "again");
    cr_assert_eq(rq_handler_start(h, &j[0], rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    cr_assert_str_eq(j[0].reply, "got:again");
    free(j[0].reply);
    rq_handler_free(h);
}

Test(handler_webhook, bad_url_is_a_config_error)
{
    char err[256] = "";

    free(cfg.handler);
    cfg.handler = strdup("http://exa mple.com/");
    cr_assert_null(rq_handler_new(&cfg, NULL, err, sizeof(err)));
    cr_assert(strstr(err, "HANDLER") != NULL, "%s", err);
}

Test(handler_webhook, metrics_by_status)
{
    char url[128], err[256] = "";
    rq_metrics_t *m = rq_metrics_new();
    rq_handler_t *h;
    rq_handler_job_t j;
    char *text;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/404", srv.port);
    free(cfg.handler);
    cfg.handler = strdup(url);
    h = rq_handler_new(&cfg, m, err, sizeof(err));
    job_init(&j, "x");
    cr_assert_eq(rq_handler_start(h, &j, rq_mono_ms()), 0);
    cr_assert_eq(run(h, 1, 5000), 1);
    text = rq_metrics_render(m, NULL);
    cr_assert(strstr(text, "consumer_handler_outcomes_total{handler=\"webhook\",outcome=\"reject\","
                           "status=\"404\"} 1") != NULL,
              "%s", text);
    cr_assert(strstr(text, "consumer_handler_duration_seconds_count{handler=\"webhook\"} 1") !=
                  NULL,
              "%s", text);
    free(text);
    rq_handler_free(h);
    rq_metrics_free(m);
}
