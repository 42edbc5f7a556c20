/* Unit tests for producer/queues/mgmt.c: URL parsing, HTTP answer parsing (Content-Length,
 * chunked, cut short), and rq_mgmt_get() against a tiny HTTP server thread on 127.0.0.1
 * that answers with a management API queue list captured from RabbitMQ 3.10.8. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "mgmt.h"

TestSuite(mgmt, .timeout = 20);

/* GET /api/queues/%2F?columns=... of a RabbitMQ 3.10.8 node (two of its entries). */
static const char fixture[] =
    "[{\"arguments\":{\"x-max-priority\":5,\"x-queue-type\":\"classic\",\"x-relayq-max-"
    "retries\":3,\"x-relayq-queue\":true,\"x-relayq-retry-base-ms\":500},\"consumers\":0,"
    "\"messages_ready\":0,\"messages_unacknowledged\":0,\"name\":\"fixq\",\"type\":\"classic\"},"
    "{\"arguments\":{\"x-dead-letter-exchange\":\"\",\"x-dead-letter-routing-key\":\"request_"
    "queue.dlq\",\"x-dead-letter-strategy\":\"at-least-once\",\"x-delivery-limit\":20,\"x-"
    "overflow\":\"reject-publish\",\"x-queue-type\":\"quorum\"},\"consumers\":0,\"messages_"
    "ready\":0,\"messages_unacknowledged\":0,\"name\":\"request_queue\",\"type\":\"quorum\"}]";

Test(mgmt, url_parse)
{
    char host[64], prefix[64], err[200];
    int port;

    cr_expect_eq(rq_mgmt_url_parse("http://127.0.0.1:15672", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 0);
    cr_expect_str_eq(host, "127.0.0.1");
    cr_expect_eq(port, 15672);
    cr_expect_str_eq(prefix, "");
    cr_expect_eq(rq_mgmt_url_parse("http://rabbit/mgmt/", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 0);
    cr_expect_eq(port, 80);
    cr_expect_str_eq(prefix, "/mgmt");
    cr_expect_eq(rq_mgmt_url_parse("https://rabbit", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    cr_expect(strstr(err, "http://") != NULL, "%s", err);
    cr_expect_eq(rq_mgmt_url_parse("http://rabbit:0", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    cr_expect_eq(rq_mgmt_url_parse("http://u:p@rabbit", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    cr_expect_eq(rq_mgmt_url_parse("http://:80", host, sizeof(host), &port, prefix, sizeof(prefix),
                                   err, sizeof(err)),
                 -1);
}

Test(mgmt, escape)
{
    char out[32];

    cr_expect_eq(rq_mgmt_escape("/", out, sizeof(out)), 0);
    cr_expect_str_eq(out, "%2F");
    cr_expect_eq(rq_mgmt_escape("a.b-c_d", out, sizeof(out)), 0);
    cr_expect_str_eq(out, "a.b-c_d");
    cr_expect_eq(rq_mgmt_escape("////////////", out, 8), -1);
}

Test(mgmt, parse_response)
{
    char a[] = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\nserver: Cowboy\r\n\r\n[1]\nextra";
    char b[] =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n";
    char c[] = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[1]";
    char d[] = "garbage";
    size_t off, len;
    int status;
    char err[200];

    cr_assert_eq(rq_mgmt_parse_response(a, strlen(a), &status, &off, &len, err, sizeof(err)), 0);
    cr_expect_eq(status, 200);
    cr_expect_eq(len, 4);
    cr_expect_eq(memcmp(a + off, "[1]\n", 4), 0);
    cr_assert_eq(rq_mgmt_parse_response(b, strlen(b), &status, &off, &len, err, sizeof(err)), 0);
    cr_expect_eq(len, 5);
    cr_expect_eq(memcmp(b + off, "[1,2]", 5), 0);
    cr_expect_eq(rq_mgmt_parse_response(c, strlen(c), &status, &off, &len, err, sizeof(err)), -1);
    cr_expect(strstr(err, "cut short") != NULL, "%s", err);
    cr_expect_eq(rq_mgmt_parse_response(d, strlen(d), &status, &off, &len, err, sizeof(err)), -1);
}

/* ---- a one-shot HTTP server thread ---- */

typedef struct server {
    int lfd, port;
    const char *answer; /* sent after the request's headers; NULL: say nothing (timeout) */
    char request[2048];
    pthread_t t;
} server_t;

static void *serve(void *arg)
{
    server_t *s = arg;
    int fd = accept(s->lfd, NULL, NULL);
    size_t n = 0;

    if (fd < 0)
        return NULL;
    while (n < sizeof(s->request) - 1 && strstr(s->request, "\r\n\r\n") == NULL) {
        ssize_t r = recv(fd, s->request + n, sizeof(s->request) - 1 - n, 0);
        if (r <= 0)
            break;
        n += (size_t)r;
        s->request[n] = '\0';
    }
    if (s->answer != NULL)
        send(fd, s->answer, strlen(s->answer), MSG_NOSIGNAL);
    else
        sleep(2);
    close(fd);
    return NULL;
}

static void server_start(server_t *s, const char *answer)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof(a);

    memset(s, 0, sizeof(*s));
    s->answer = answer;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s->lfd >= 0);
    cr_assert_eq(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(s->lfd, 1), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    cr_assert_eq(pthread_create(&s->t, NULL, serve, s), 0);
}

static void server_stop(server_t *s)
{
    pthread_join(s->t, NULL);
    close(s->lfd);
}

static rq_mgmt_t *client_for(int port, char *url, size_t len)
{
    RabbitMQConfig cfg;
    char err[200];
    rq_mgmt_t *m;

    memset(&cfg, 0, sizeof(cfg));
    snprintf(url, len, "http://127.0.0.1:%d", port);
    cfg.management_url = url;
    cfg.host = "127.0.0.1";
    cfg.user = "guest";
    cfg.password = "guest";
    m = rq_mgmt_new(&cfg, err, sizeof(err));
    cr_assert_not_null(m, "%s", err);
    return m;
}

Test(mgmt, get_queue_list)
{
    static char answer[4096];
    server_t s;
    char url[64], err[200];
    rq_mgmt_t *m;
    json_t *body = NULL, *sum;
    int status = 0;

    snprintf(answer, sizeof(answer),
             "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
             "server: Cowboy\r\n\r\n%s",
             strlen(fixture), fixture);
    server_start(&s, answer);
    m = client_for(s.port, url, sizeof(url));
    cr_assert_eq(
        rq_mgmt_get(m, "/api/queues/%2F?columns=name", 3000, &status, &body, err, sizeof(err)), 0,
        "%s", err);
    server_stop(&s);
    cr_expect_eq(status, 200);
    cr_expect(strstr(s.request, "GET /api/queues/%2F?columns=name HTTP/1.1\r\n") == s.request);
    cr_expect(strstr(s.request, "Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n") != NULL,
              "Basic auth guest:guest: %s", s.request);
    cr_assert(json_is_array(body));
    cr_expect_eq(json_array_size(body), 2);
    sum = rq_mgmt_queue_summary(json_array_get(body, 0));
    cr_assert_not_null(sum);
    cr_expect_str_eq(json_string_value(json_object_get(sum, "name")), "fixq");
    cr_expect_str_eq(json_string_value(json_object_get(sum, "type")), "classic");
    cr_expect_eq(json_integer_value(json_object_get(sum, "unacked")), 0);
    cr_expect(json_is_true(json_object_get(json_object_get(sum, "arguments"), "x-relayq-queue")));
    json_decref(sum);
    json_decref(body);
    rq_mgmt_free(m);
}

Test(mgmt, timeout_and_refused)
{
    server_t s;
    char url[64], err[200];
    rq_mgmt_t *m;
    json_t *body = NULL;
    int status = 0, port;

    server_start(&s, NULL); /* accepts, never answers */
    m = client_for(s.port, url, sizeof(url));
    cr_expect_eq(rq_mgmt_get(m, "/api/overview", 300, &status, &body, err, sizeof(err)), -1);
    cr_expect(strstr(err, "no answer within 300 ms") != NULL, "%s", err);
    rq_mgmt_free(m);
    server_stop(&s);
    port = s.port; /* closed now: refused */
    m = client_for(port, url, sizeof(url));
    cr_expect_eq(rq_mgmt_get(m, "/api/overview", 1000, &status, &body, err, sizeof(err)), -1);
    cr_expect(strstr(err, "refused") != NULL, "%s", err);
    rq_mgmt_free(m);
}

Test(mgmt, off_and_derived)
{
    RabbitMQConfig cfg;
    char err[200];
    rq_mgmt_t *m;

    memset(&cfg, 0, sizeof(cfg));
    cfg.host = "rabbit.example";
    cfg.user = "u";
    cfg.password = "p";
    cfg.management_url = "off";
    cr_expect_null(rq_mgmt_new(&cfg, err, sizeof(err)));
    cr_expect(strstr(err, "off") != NULL);
    cfg.management_url = "";
    m = rq_mgmt_new(&cfg, err, sizeof(err));
    cr_assert_not_null(m);
    cr_expect_str_eq(rq_mgmt_base(m), "http://rabbit.example:15672");
    rq_mgmt_free(m);
}

/* A copy of text in a heap block of exactly its length (no NUL after it), as rq_mgmt_get()
 * hands its receive buffer over: ASan sees any read past the answer. */
static char *exact(const char *text, size_t *len)
{
    char *b;

    *len = strlen(text);
    b = malloc(*len);
    cr_assert_not_null(b);
    memcpy(b, text, *len);
    return b;
}

/* A broken or hostile endpoint: chunk-size lines and Content-Length values that are not what
 * RFC 9112 allows are refused, and nothing is read past the answer. */
Test(mgmt, parse_response_hostile)
{
    static const char *refused[] = {
        /* a chunk-size line of blanks up to the end: strtoull() would skip the '\n' */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n \r\n  ",
        /* signs and 0x are not chunk sizes */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\n[1]\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\n[1]\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n[1]\r\n0\r\n\r\n",
        /* a chunk size of 2^64 + 3 (wraps) */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
        "chunked\r\n\r\n10000000000000003\r\n[1]\r\n0\r\n\r\n",
        /* an empty Content-Length: the number would be read from the body */
        "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n3",
        "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n[1]",
        "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n[1]",
        /* two different lengths (request smuggling's classic) */
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 1\r\n\r\n[1]",
    };
    char err[200];
    size_t off, blen, n;
    int status;

    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char *b = exact(refused[i], &n);
        int rc = rq_mgmt_parse_response(b, n, &status, &off, &blen, err, sizeof(err));
        cr_expect_eq(rc, -1, "case %zu accepted (body %zu bytes)", i, blen);
        free(b);
    }
    /* chunk extensions and a trailer are fine */
    {
        char *b = exact("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\n[1]\r\n"
                        "0\r\nX-T: 1\r\n\r\n",
                        &n);
        cr_expect_eq(rq_mgmt_parse_response(b, n, &status, &off, &blen, err, sizeof(err)), 0, "%s",
                     err);
        cr_expect_eq(blen, 3);
        free(b);
    }
}

/* IPv6 literals: "[v6]" or "[v6]:port" in the URL (RFC 3986), and a derived URL for an IPv6
 * RABBITMQ_HOST gets its brackets. */
Test(mgmt, url_ipv6)
{
    char host[64], prefix[64], err[200];
    RabbitMQConfig cfg;
    rq_mgmt_t *m;
    int port = 0;

    cr_expect_eq(rq_mgmt_url_parse("http://[::1]:15673/x", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 0, "%s", err);
    cr_expect_str_eq(host, "::1");
    cr_expect_eq(port, 15673);
    cr_expect_str_eq(prefix, "/x");
    cr_expect_eq(rq_mgmt_url_parse("http://[fe80::1]", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 0, "%s", err);
    cr_expect_str_eq(host, "fe80::1");
    cr_expect_eq(port, 80);
    cr_expect_eq(rq_mgmt_url_parse("http://[::1:80", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    cr_expect_eq(rq_mgmt_url_parse("http://[::1]x", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    /* nothing that would end up as a line break or a blank in the request */
    cr_expect_eq(rq_mgmt_url_parse("http://rabbit\r\nX-Evil: 1", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    cr_expect_eq(rq_mgmt_url_parse("http://rabbit:15672/a b", host, sizeof(host), &port, prefix,
                                   sizeof(prefix), err, sizeof(err)),
                 -1);
    memset(&cfg, 0, sizeof(cfg));
    cfg.management_url = "";
    cfg.host = "::1";
    cfg.user = "guest";
    cfg.password = "guest";
    m = rq_mgmt_new(&cfg, err, sizeof(err));
    cr_assert_not_null(m, "%s", err);
    cr_expect_str_eq(rq_mgmt_base(m), "http://[::1]:15672");
    rq_mgmt_free(m);
}
