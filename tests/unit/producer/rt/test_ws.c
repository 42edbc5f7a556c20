/* test_ws.c - the WebSocket session (producer/rt/ws.c) over a real socketpair: the test is
 * the client (masked frames, ws_frame.h's writer) and drives the hub's side through the
 * session's sink, as the hub would (hub.h is the interface; no broker here: the hooks of
 * rq_ws_server_test_hooks record the acks and the unsubscribe). Covers: event framing,
 * auto-acks only once written, client acks, ping/pong, the close handshake, protocol errors
 * (1002, 1009, 1003, 1008) and their metric, the bounded send buffer, the hub's end codes,
 * heartbeat pings and the pong timeout, the client going away, abandon before the upgrade. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ws.h"
#include "ws_frame.h"

static const unsigned char MASK[4] = {1, 2, 3, 4};
static rq_config_t cfg;
static rq_metrics_t *metrics;
static rq_ws_server_t *srv;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t acks[64];
static int nacks, nunsub, nready;
static unsigned ready_status;
static rq_rt_sub_t *const SUB = (rq_rt_sub_t *)&nacks; /* a token: never dereferenced */

static void on_ack(void *arg, rq_rt_sub_t *sub, uint64_t tag)
{
    (void)arg;
    cr_assert_eq(sub, SUB);
    pthread_mutex_lock(&mu);
    if (nacks < 64)
        acks[nacks++] = tag;
    pthread_mutex_unlock(&mu);
}

static void on_unsub(void *arg, rq_rt_sub_t *sub)
{
    (void)arg;
    cr_assert_eq(sub, SUB);
    pthread_mutex_lock(&mu);
    nunsub++;
    pthread_mutex_unlock(&mu);
}

static void on_ready(void *arg, unsigned status, const char *err)
{
    (void)arg;
    (void)err;
    nready++;
    ready_status = status;
}

static int get(int *v)
{
    pthread_mutex_lock(&mu);
    int r = *v;
    pthread_mutex_unlock(&mu);
    return r;
}

/* Waits up to ms for *v >= want. */
static int wait_for(int *v, int want, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (get(v) >= want)
            return 1;
        usleep(10000);
    }
    return get(v) >= want;
}

static void setup_with(int heartbeat_s, int64_t max_frame, int64_t sendbuf)
{
    cr_assert_eq(rq_config_defaults(&cfg), 0);
    cfg.rt_heartbeat_s = heartbeat_s;
    cfg.ws_max_frame_bytes = max_frame;
    cfg.rt_send_buffer_bytes = sendbuf;
    metrics = rq_metrics_new();
    srv = rq_ws_server_new(&cfg, metrics, NULL);
    cr_assert_not_null(srv);
    rq_ws_server_test_hooks(srv, on_ack, on_unsub, NULL);
    nacks = nunsub = nready = 0;
}

static void setup(void)
{
    setup_with(15, 1024, 4096);
}

static void teardown(void)
{
    rq_ws_server_free(srv);
    rq_metrics_free(metrics);
    rq_config_free(&cfg);
}

/* A session adopted on one end of a socketpair; returns the client's end. */
static int open_session(rq_ws_conn_t **out, int client_acks)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    rq_ws_conn_t *c = rq_ws_conn_new(srv, client_acks, on_ready, NULL);
    cr_assert_not_null(c);
    rq_ws_conn_set_sub(c, SUB);
    const rq_rt_sink_t *k = rq_ws_conn_sink(c);
    k->ready(k->arg, 0, NULL);
    cr_assert_eq(nready, 1);
    cr_assert_eq(rq_ws_conn_adopt_fd(c, sv[0]), 0);
    *out = c;
    return sv[1];
}

/* Reads one server frame (must be unmasked, FIN) within ms: its opcode, payload into buf. */
static int read_frame(int fd, unsigned char *buf, size_t cap, size_t *len, int ms)
{
    unsigned char h[10];
    size_t need = 2, got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < need) {
        if (poll(&p, 1, ms) <= 0)
            return -1; /* timeout */
        ssize_t r = read(fd, h + got, 1);
        if (r <= 0)
            return -2; /* EOF */
        got++;
        if (got == 2) {
            cr_assert_eq(h[1] & 0x80, 0, "server frames are never masked");
            cr_assert_eq(h[0] & 0x80, 0x80);
            unsigned l7 = h[1] & 0x7F;
            need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0);
        }
    }
    uint64_t l = h[1] & 0x7F;
    if (l == 126)
        l = (uint64_t)h[2] << 8 | h[3];
    else if (l == 127) {
        l = 0;
        for (int i = 0; i < 8; i++)
            l = l << 8 | h[2 + i];
    }
    cr_assert(l <= cap);
    size_t at = 0;
    while (at < l) {
        if (poll(&p, 1, ms) <= 0)
            return -1;
        ssize_t r = read(fd, buf + at, (size_t)l - at);
        if (r <= 0)
            return -2;
        at += (size_t)r;
    }
    *len = (size_t)l;
    return h[0] & 0x0F;
}

static void send_frame(int fd, int op, const void *pl, size_t len)
{
    unsigned char b[4096];
    size_t n = rq_ws_frame_write(b, sizeof(b), 1, op, pl, len, MASK);
    cr_assert(n > 0);
    cr_assert_eq(write(fd, b, n), (ssize_t)n);
}

static int deliver(rq_ws_conn_t *c, const char *id, const char *json, uint64_t tag)
{
    const rq_rt_sink_t *k = rq_ws_conn_sink(c);
    rq_rt_event_t ev = {json, strlen(json), id, tag};
    return k->deliver(k->arg, &ev);
}

/* Expects a close frame with code (and reason when not NULL), then EOF. */
static void expect_close(int fd, unsigned code, const char *reason, int ms)
{
    unsigned char b[70000];
    size_t n;
    int op;
    while ((op = read_frame(fd, b, sizeof(b), &n, ms)) == RQ_WS_OP_PING)
        ;
    cr_assert_eq(op, RQ_WS_OP_CLOSE, "expected a close frame, got %d", op);
    cr_assert(n >= 2);
    unsigned got = (unsigned)b[0] << 8 | b[1];
    cr_assert_eq(got, code, "close code %u, expected %u", got, code);
    if (reason)
        cr_assert(n - 2 == strlen(reason) && memcmp(b + 2, reason, n - 2) == 0, "reason %.*s",
                  (int)(n - 2), b + 2);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_assert(poll(&p, 1, ms) == 1);
    cr_assert_eq(read(fd, b, 1), 0, "EOF after the close frame");
}

static double metric(const char *name_and_labels)
{
    size_t len;
    char *text = rq_metrics_render(metrics, &len);
    double v = -1;
    char *p = strstr(text, name_and_labels);
    while (p && p > text && p[-1] != '\n')
        p = strstr(p + 1, name_and_labels);
    if (p)
        v = strtod(p + strlen(name_and_labels), NULL);
    free(text);
    return v;
}

TestSuite(ws, .init = setup, .fini = teardown, .timeout = 20);

Test(ws, event_frame_and_auto_ack_once_written)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    cr_assert_eq(deliver(c, "7", "{\"id\":null,\"queue\":\"q\",\"payload\":1}", 7), 0);
    unsigned char b[512];
    size_t n;
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    const char *want = "{\"event_id\":\"7\",\"id\":null,\"queue\":\"q\",\"payload\":1}";
    cr_assert_eq(n, strlen(want));
    cr_assert(memcmp(b, want, n) == 0, "%.*s", (int)n, b);
    cr_assert(wait_for(&nacks, 1, 2000));
    cr_assert_eq(acks[0], 7);
    /* a topic event (tag 0) is never acked */
    cr_assert_eq(deliver(c, "8", "{\"id\":null}", 0), 0);
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    usleep(50000);
    cr_assert_eq(get(&nacks), 1);
    cr_assert_eq(metric("producer_rt_ws_connections "), 1);
    close(fd);
    cr_assert(wait_for(&nunsub, 1, 2000), "the client went away: unsubscribed");
    usleep(50000);
    cr_assert_eq(metric("producer_rt_ws_connections "), 0);
    rq_ws_conn_abandon(c);
}

Test(ws, no_auto_ack_before_the_frame_is_written)
{
    /* the send buffer holds a message while the session is not upgraded yet: no ack */
    rq_ws_conn_t *c = rq_ws_conn_new(srv, 0, on_ready, NULL);
    rq_ws_conn_set_sub(c, SUB);
    cr_assert_eq(deliver(c, "1", "{\"id\":null}", 1), 0);
    usleep(100000);
    cr_assert_eq(get(&nacks), 0);
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(rq_ws_conn_adopt_fd(c, sv[0]), 0);
    cr_assert(wait_for(&nacks, 1, 2000));
    unsigned char b[512];
    size_t n;
    cr_assert_eq(read_frame(sv[1], b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    close(sv[1]);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

Test(ws, client_acks)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 1);
    cr_assert_eq(deliver(c, "5", "{\"id\":\"m\"}", 5), 0);
    unsigned char b[512];
    size_t n;
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    usleep(100000);
    cr_assert_eq(get(&nacks), 0, "client mode: no ack until the client acks");
    send_frame(fd, RQ_WS_OP_TEXT, "{\"ack\":\"5\"}", 11);
    cr_assert(wait_for(&nacks, 1, 2000));
    cr_assert_eq(acks[0], 5);
    /* anything else in client mode: 1008 */
    send_frame(fd, RQ_WS_OP_TEXT, "hello", 5);
    expect_close(fd, 1008, NULL, 2000);
    cr_assert_eq(metric("producer_rt_ws_protocol_errors_total{code=\"1008\"} "), 1);
    close(fd); /* the client's side of the close handshake */
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

Test(ws, auto_mode_ignores_text_binary_is_1003)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    send_frame(fd, RQ_WS_OP_TEXT, "{\"ack\":\"1\"}", 11);
    send_frame(fd, RQ_WS_OP_PING, "x", 1);
    unsigned char b[512];
    size_t n;
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_PONG);
    cr_assert_eq(get(&nacks), 0);
    send_frame(fd, RQ_WS_OP_BINARY, "\x01", 1);
    expect_close(fd, 1003, NULL, 2000);
    close(fd);
    rq_ws_conn_abandon(c);
}

Test(ws, ping_pong_echoes_payload)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    send_frame(fd, RQ_WS_OP_PING, "hello", 5);
    unsigned char b[512];
    size_t n;
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_PONG);
    cr_assert_eq(n, 5);
    cr_assert(memcmp(b, "hello", 5) == 0);
    cr_assert_eq(metric("producer_rt_ws_frames_received_total "), 1);
    close(fd);
    rq_ws_conn_abandon(c);
}

Test(ws, client_close_is_echoed_then_eof)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    send_frame(fd, RQ_WS_OP_CLOSE,
               "\x03\xe8"
               "bye",
               5);
    expect_close(fd, 1000, "", 2000);
    cr_assert(wait_for(&nunsub, 1, 2000));
    close(fd);
    rq_ws_conn_abandon(c);
}

Test(ws, unmasked_frame_is_1002)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    const unsigned char b[] = {0x81, 0x02, 'h', 'i'};
    cr_assert_eq(write(fd, b, sizeof(b)), 4);
    expect_close(fd, 1002, "client frame not masked", 2000);
    cr_assert_eq(metric("producer_rt_ws_protocol_errors_total{code=\"1002\"} "), 1);
    close(fd);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

Test(ws, oversized_frame_is_1009)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    unsigned char h[RQ_WS_HDR_MAX];
    size_t hl = rq_ws_frame_header(h, 1, RQ_WS_OP_TEXT, 2000, MASK); /* limit 1024 */
    cr_assert_eq(write(fd, h, hl), (ssize_t)hl);
    expect_close(fd, 1009, NULL, 2000);
    cr_assert_eq(metric("producer_rt_ws_protocol_errors_total{code=\"1009\"} "), 1);
    close(fd);
    rq_ws_conn_abandon(c);
}

Test(ws, send_buffer_is_bounded_then_slow_consumer_closes_1008)
{
    rq_ws_conn_t *c = rq_ws_conn_new(srv, 0, on_ready, NULL);
    rq_ws_conn_set_sub(c, SUB);
    char json[300];
    memset(json, ' ', sizeof(json));
    json[0] = '{';
    memcpy(json + 1, "\"id\":null", 9);
    json[298] = '}';
    json[299] = '\0';
    int ok = 0;
    while (deliver(c, "1", json, 0) == 0)
        ok++;
    /* 4096 bytes: 13 whole frames of 316 bytes fit */
    cr_assert_eq(ok, 4096 / (4 + 13 + 1 + 2 + 298), "%d delivered", ok);
    const rq_rt_sink_t *k = rq_ws_conn_sink(c);
    k->ended(k->arg, "slow_consumer", "send buffer full");
    cr_assert_eq(deliver(c, "2", json, 0), 0, "after the end: dropped, not an error");
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    cr_assert_eq(rq_ws_conn_adopt_fd(c, sv[0]), 0);
    unsigned char b[512];
    size_t n;
    for (int i = 0; i < ok; i++)
        cr_assert_eq(read_frame(sv[1], b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    expect_close(sv[1], 1008, "slow_consumer", 2000);
    close(sv[1]);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

Test(ws, hub_end_codes)
{
    static const struct {
        const char *reason;
        unsigned code;
    } t[] = {{"topic_deleted", 4404},
             {"queue_deleted", 4404},
             {"broker_lost", 1011},
             {"shutdown", 1001}};
    for (size_t i = 0; i < 4; i++) {
        rq_ws_conn_t *c;
        int fd = open_session(&c, 0);
        nready = 0;
        const rq_rt_sink_t *k = rq_ws_conn_sink(c);
        k->ended(k->arg, t[i].reason, "x");
        expect_close(fd, t[i].code, t[i].reason, 2000);
        close(fd);
        cr_assert(wait_for(&nunsub, (int)i + 1, 2000));
        rq_ws_conn_abandon(c);
    }
}

static void setup_hb(void)
{
    setup_with(1, 1024, 4096);
}

Test(ws_hb, ping_then_pong_timeout, .init = setup_hb, .fini = teardown, .timeout = 20)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    unsigned char b[512];
    size_t n;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 3000), RQ_WS_OP_PING);
    send_frame(fd, RQ_WS_OP_PONG, b, n); /* answered: still open after 2 s */
    usleep(1500000);
    cr_assert_eq(get(&nunsub), 0);
    /* stop answering: closed 1008 about 2 s after the last pong */
    int op;
    while ((op = read_frame(fd, b, sizeof(b), &n, 4000)) == RQ_WS_OP_PING)
        ;
    cr_assert_eq(op, RQ_WS_OP_CLOSE);
    cr_assert_eq((unsigned)b[0] << 8 | b[1], 1008);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert(el >= 2.5 && el < 5.0, "closed after %.2f s", el);
    close(fd);
    cr_assert(wait_for(&nunsub, 1, 3000));
    rq_ws_conn_abandon(c);
}

Test(ws, abandon_before_upgrade_unsubscribes)
{
    rq_ws_conn_t *c = rq_ws_conn_new(srv, 0, on_ready, NULL);
    rq_ws_conn_set_sub(c, SUB);
    cr_assert_eq(deliver(c, "1", "{\"id\":null}", 1), 0);
    rq_ws_conn_abandon(c);
    cr_assert_eq(get(&nunsub), 1);
    cr_assert_eq(get(&nacks), 0);
}

Test(ws, stop_closes_with_1001)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    rq_ws_server_stop(srv);
    expect_close(fd, 1001, "shutdown", 2000);
    cr_assert_eq(get(&nunsub), 1);
    close(fd);
    rq_ws_conn_abandon(c);
}

Test(ws_hb, unanswered_close_is_dropped_after_2_heartbeats, .init = setup_hb, .fini = teardown,
     .timeout = 20)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    const rq_rt_sink_t *k = rq_ws_conn_sink(c);
    k->ended(k->arg, "slow_consumer", "x");
    unsigned char b[512];
    size_t n;
    int op;
    while ((op = read_frame(fd, b, sizeof(b), &n, 2000)) == RQ_WS_OP_PING)
        ;
    cr_assert_eq(op, RQ_WS_OP_CLOSE);
    usleep(500000);
    cr_assert_eq(get(&nunsub), 0, "waits for the client's close");
    cr_assert(wait_for(&nunsub, 1, 4000), "then gives up (2 x RT_HEARTBEAT_S)");
    close(fd);
    rq_ws_conn_abandon(c);
}

static void setup_big(void)
{
    setup_with(15, 1024, 65536);
}

Test(ws_big, auto_acks_wait_for_a_blocked_socket, .init = setup_big, .fini = teardown,
     .timeout = 20)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    cr_assert_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    rq_ws_conn_t *c = rq_ws_conn_new(srv, 0, on_ready, NULL);
    rq_ws_conn_set_sub(c, SUB);
    cr_assert_eq(rq_ws_conn_adopt_fd(c, sv[0]), 0);
    static char json[3002];
    memset(json, ' ', sizeof(json) - 1);
    json[0] = '{';
    json[sizeof(json) - 2] = '}';
    for (int i = 1; i <= 20; i++) {
        char id[8];
        snprintf(id, sizeof(id), "%d", i);
        cr_assert_eq(deliver(c, id, json, (uint64_t)i), 0);
    }
    usleep(300000);
    int early = get(&nacks);
    cr_assert(early < 20, "the client read nothing: not all acked (%d)", early);
    unsigned char b[4096];
    size_t n;
    for (int i = 0; i < 20; i++)
        cr_assert_eq(read_frame(sv[1], b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    cr_assert(wait_for(&nacks, 20, 2000));
    for (int i = 0; i < 20; i++)
        cr_assert_eq(acks[i], (uint64_t)i + 1, "acked in order");
    close(sv[1]);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

/* Review (issue 18): a client's ack for a tag it was never sent went straight to basic.ack,
 * and the broker closed the channel (the client saw 1011 broker_lost, every unacked message
 * was redelivered). An ack for a tag not outstanding now closes 1008 without reaching the
 * hub; a repeated ack of an acked tag is ignored. */
Test(ws, client_ack_of_an_unknown_tag_is_1008_and_never_reaches_the_hub)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 1);
    unsigned char b[512];
    size_t n;

    cr_assert_eq(deliver(c, "5", "{\"id\":\"m\"}", 5), 0);
    cr_assert_eq(deliver(c, "6", "{\"id\":\"m\"}", 6), 0);
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    send_frame(fd, RQ_WS_OP_TEXT, "{\"ack\":\"5\"}", 11);
    cr_assert(wait_for(&nacks, 1, 2000));
    send_frame(fd, RQ_WS_OP_TEXT, "{\"ack\":\"5\"}", 11); /* again: ignored */
    send_frame(fd, RQ_WS_OP_PING, "p", 1);
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_PONG, "still open");
    cr_assert_eq(get(&nacks), 1, "a repeated ack is not passed on");
    send_frame(fd, RQ_WS_OP_TEXT, "{\"ack\":\"999\"}", 13);
    expect_close(fd, 1008, NULL, 2000);
    cr_assert_eq(get(&nacks), 1, "the unknown tag never reached the hub");
    close(fd);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}

/* Review (issue 18): an event larger than RT_SEND_BUFFER_BYTES never fit: every subscriber
 * ended as slow_consumer and a queue got it back first forever. A queue event goes into an
 * empty buffer whatever its size; a topic event over the limit becomes a small notice. */
Test(ws, oversized_events_queue_fits_empty_buffer_topic_gets_a_notice)
{
    rq_ws_conn_t *c;
    int fd = open_session(&c, 0);
    static unsigned char b[70000];
    static char json[10001];
    size_t n;

    memset(json, ' ', sizeof(json) - 1);
    json[0] = '{';
    json[sizeof(json) - 2] = '}';
    cr_assert_eq(deliver(c, "1", json, 1), 0, "a queue event: any size into an empty buffer");
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    cr_assert_gt(n, 10000);
    cr_assert_eq(deliver(c, "2", json, 0), 0, "a topic event over the limit: a notice");
    cr_assert_eq(read_frame(fd, b, sizeof(b), &n, 2000), RQ_WS_OP_TEXT);
    cr_assert_lt(n, 300);
    cr_assert(memmem(b, n, "\"skipped\":true", 14) != NULL, "%.*s", (int)n, b);
    close(fd);
    cr_assert(wait_for(&nunsub, 1, 2000));
    rq_ws_conn_abandon(c);
}
