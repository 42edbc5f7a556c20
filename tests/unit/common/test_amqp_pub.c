/* Unit tests for common/amqp_pub.c: the frames rq_pubbuf_t writes are read back from a real
 * TCP socket and decoded with rabbitmq-c's own decoders, so an encoding mistake (sizes, frame
 * end, body split, property flags) fails here rather than as a broker connection error. The
 * send timeout is checked against a peer that never reads. */
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amqp_conn.h"
#include "amqp_pub.h"
#include "tcp_peer.h"

#ifndef RQ_AMQP_CLOSE_TIMEOUT_MS
#define RQ_AMQP_CLOSE_TIMEOUT_MS 1000
#endif

typedef struct peer {
    amqp_connection_state_t conn; /* the client side, as the services use it */
    int lfd;                      /* listener */
    int sfd;                      /* the accepted server side: the test reads from it */
} peer_t;

/* frame_max > 0: the connection's frame_max, as if negotiated with a broker (rabbitmq-c lets
 * it be set only before the socket opens). */
static void peer_open_frame_max(peer_t *p, int frame_max)
{
    p->conn = rq_test_tcp_peer(&p->lfd, &p->sfd);
    if (frame_max > 0) {
        /* rabbitmq-c tunes only an idle connection: the peer sends a protocol header */
        static const unsigned char hdr[8] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
        struct timeval tv = {2, 0};
        amqp_frame_t f;

        cr_assert_eq(send(p->sfd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
        cr_assert_eq(amqp_simple_wait_frame_noblock(p->conn, &f, &tv), AMQP_STATUS_OK);
        cr_assert_eq(amqp_tune_connection(p->conn, 0, frame_max, 0), AMQP_STATUS_OK);
    }
}

static void peer_open(peer_t *p)
{
    peer_open_frame_max(p, 0);
}

static void peer_close(peer_t *p)
{
    close(p->sfd);
    close(p->lfd);
    amqp_destroy_connection(p->conn);
}

/* Reads exactly n bytes from the server side (5 s at most). */
static void read_exact(int fd, unsigned char *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        ssize_t r;

        cr_assert_gt(poll(&pf, 1, 5000), 0, "no data from the publisher");
        r = recv(fd, buf + got, n - got, 0);
        cr_assert_gt(r, 0);
        got += (size_t)r;
    }
}

/* Bytes waiting on the server side right now (non-blocking). */
static size_t available(int fd)
{
    unsigned char tmp[65536];
    ssize_t r = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT | MSG_PEEK);

    return r > 0 ? (size_t)r : 0;
}

typedef struct frame {
    uint8_t type;
    uint16_t channel;
    uint32_t size;
    unsigned char *payload; /* malloc'd */
} frame_t;

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const unsigned char *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void read_frame(int fd, frame_t *f)
{
    unsigned char h[7], end;

    read_exact(fd, h, sizeof(h));
    f->type = h[0];
    f->channel = (uint16_t)(h[1] << 8 | h[2]);
    f->size = be32(h + 3);
    f->payload = malloc(f->size + 1);
    cr_assert_not_null(f->payload);
    read_exact(fd, f->payload, f->size);
    read_exact(fd, &end, 1);
    cr_assert_eq(end, AMQP_FRAME_END, "frame end byte");
}

/* Reads one basic.publish (method, header, body frames) and checks it against the expected
 * routing key, message id, header and body. */
static void expect_publish(int fd, uint16_t channel, const char *rk, int mandatory,
                           const char *msg_id, const unsigned char *body, size_t body_len,
                           size_t max_body_frame)
{
    frame_t f;
    amqp_pool_t pool;
    void *decoded = NULL;
    amqp_basic_publish_t *m;
    amqp_basic_properties_t *props;
    amqp_bytes_t enc;
    size_t got = 0;

    init_amqp_pool(&pool, 4096);
    read_frame(fd, &f);
    cr_assert_eq(f.type, AMQP_FRAME_METHOD);
    cr_assert_eq(f.channel, channel);
    cr_assert_eq(be32(f.payload), AMQP_BASIC_PUBLISH_METHOD);
    enc.bytes = f.payload + 4;
    enc.len = f.size - 4;
    cr_assert_eq(amqp_decode_method(AMQP_BASIC_PUBLISH_METHOD, &pool, enc, &decoded), 0);
    m = decoded;
    cr_expect_eq(m->routing_key.len, strlen(rk));
    cr_expect_eq(memcmp(m->routing_key.bytes, rk, strlen(rk)), 0);
    cr_expect_eq(m->exchange.len, 0);
    cr_expect_eq(m->mandatory, mandatory);
    cr_expect_eq(m->immediate, 0);
    free(f.payload);

    read_frame(fd, &f);
    cr_assert_eq(f.type, AMQP_FRAME_HEADER);
    cr_assert_eq(f.channel, channel);
    cr_expect_eq(f.payload[0] << 8 | f.payload[1], AMQP_BASIC_CLASS);
    cr_expect_eq(be64(f.payload + 4), body_len, "body size in the content header");
    enc.bytes = f.payload + 12;
    enc.len = f.size - 12;
    cr_assert_eq(amqp_decode_properties(AMQP_BASIC_CLASS, &pool, enc, &decoded), 0);
    props = decoded;
    cr_assert(props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    cr_expect_eq(props->message_id.len, strlen(msg_id));
    cr_expect_eq(memcmp(props->message_id.bytes, msg_id, strlen(msg_id)), 0);
    cr_assert(props->_flags & AMQP_BASIC_HEADERS_FLAG);
    cr_assert_eq(props->headers.num_entries, 1);
    cr_expect_eq(props->headers.entries[0].value.kind, AMQP_FIELD_KIND_I64);
    cr_expect_eq(props->headers.entries[0].value.value.i64, (int64_t)body_len);
    cr_expect_eq(props->delivery_mode, 2);
    free(f.payload);

    while (got < body_len) {
        read_frame(fd, &f);
        cr_assert_eq(f.type, AMQP_FRAME_BODY);
        cr_assert_eq(f.channel, channel);
        cr_assert_leq(f.size, max_body_frame, "a body frame larger than frame_max allows");
        cr_assert_leq(got + f.size, body_len);
        cr_assert_eq(memcmp(f.payload, body + got, f.size), 0, "body bytes at %zu", got);
        got += f.size;
        free(f.payload);
    }
    empty_amqp_pool(&pool);
}

static int add(rq_pubbuf_t *b, uint16_t channel, const char *rk, int mandatory, const char *msg_id,
               const unsigned char *body, size_t len)
{
    amqp_basic_properties_t p;
    amqp_table_entry_t h;

    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_HEADERS_FLAG;
    p.delivery_mode = 2;
    p.message_id = amqp_cstring_bytes(msg_id);
    h.key = amqp_cstring_bytes("x-len");
    h.value.kind = AMQP_FIELD_KIND_I64;
    h.value.value.i64 = (int64_t)len;
    p.headers.num_entries = 1;
    p.headers.entries = &h;
    return rq_pubbuf_add(b, channel, amqp_empty_bytes, amqp_cstring_bytes(rk), mandatory, &p,
                         (amqp_bytes_t){.len = len, .bytes = (void *)(uintptr_t)body});
}

Test(amqp_pub, burst_is_held_until_flush_then_decodes)
{
    peer_t p;
    rq_pubbuf_t *b;
    const char *bodies[] = {"first", "", "{\"payload\":\"third\"}"};
    char id[16];

    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof(id), "m-%d", i);
        cr_assert_eq(
            add(b, 1, "q.req", i == 2, id, (const unsigned char *)bodies[i], strlen(bodies[i])),
            AMQP_STATUS_OK);
    }
    cr_expect_gt(rq_pubbuf_pending(b), 0);
    usleep(20000);
    cr_expect_eq(available(p.sfd), 0, "nothing is written before the flush");
    cr_assert_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK);
    cr_expect_eq(rq_pubbuf_pending(b), 0);
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof(id), "m-%d", i);
        expect_publish(p.sfd, 1, "q.req", i == 2, id, (const unsigned char *)bodies[i],
                       strlen(bodies[i]), 131072 - 8);
    }
    cr_expect_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK, "an empty flush is fine");
    rq_pubbuf_free(b);
    peer_close(&p);
}

Test(amqp_pub, large_body_is_split_at_frame_max_and_flushed_early)
{
    peer_t p;
    rq_pubbuf_t *b;
    size_t len = 3 * 131072 + 17; /* four body frames, more than RQ_PUBBUF_FLUSH_BYTES */
    unsigned char *body = malloc(len);

    cr_assert_not_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (unsigned char)(i * 31 + 7);
    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    cr_assert_eq(add(b, 2, "q.big", 1, "big", body, len), AMQP_STATUS_OK);
    cr_expect_lt(rq_pubbuf_pending(b), (size_t)RQ_PUBBUF_FLUSH_BYTES,
                 "a burst past the flush size is written at once");
    cr_assert_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK);
    expect_publish(p.sfd, 2, "q.big", 1, "big", body, len, 131072 - 8);
    rq_pubbuf_free(b);
    peer_close(&p);
    free(body);
}

Test(amqp_pub, methods_interleave_in_order)
{
    peer_t p;
    rq_pubbuf_t *b;
    amqp_basic_ack_t ack = {.delivery_tag = 42, .multiple = 1};
    amqp_basic_reject_t rej = {.delivery_tag = 7, .requeue = 1};
    frame_t f;
    amqp_pool_t pool;
    void *decoded;
    amqp_bytes_t enc;

    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    cr_assert_eq(add(b, 1, "reply.q", 0, "r-1", (const unsigned char *)"ok", 2), AMQP_STATUS_OK);
    cr_assert_eq(rq_pubbuf_add_method(b, 1, AMQP_BASIC_ACK_METHOD, &ack), AMQP_STATUS_OK);
    cr_assert_eq(rq_pubbuf_add_method(b, 1, AMQP_BASIC_REJECT_METHOD, &rej), AMQP_STATUS_OK);
    cr_assert_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK);

    expect_publish(p.sfd, 1, "reply.q", 0, "r-1", (const unsigned char *)"ok", 2, 131072 - 8);
    init_amqp_pool(&pool, 1024);
    read_frame(p.sfd, &f);
    cr_assert_eq(f.type, AMQP_FRAME_METHOD);
    cr_assert_eq(be32(f.payload), AMQP_BASIC_ACK_METHOD);
    enc.bytes = f.payload + 4;
    enc.len = f.size - 4;
    cr_assert_eq(amqp_decode_method(AMQP_BASIC_ACK_METHOD, &pool, enc, &decoded), 0);
    cr_expect_eq(((amqp_basic_ack_t *)decoded)->delivery_tag, 42);
    cr_expect_eq(((amqp_basic_ack_t *)decoded)->multiple, 1);
    free(f.payload);
    read_frame(p.sfd, &f);
    cr_assert_eq(be32(f.payload), AMQP_BASIC_REJECT_METHOD);
    enc.bytes = f.payload + 4;
    enc.len = f.size - 4;
    cr_assert_eq(amqp_decode_method(AMQP_BASIC_REJECT_METHOD, &pool, enc, &decoded), 0);
    cr_expect_eq(((amqp_basic_reject_t *)decoded)->delivery_tag, 7);
    cr_expect_eq(((amqp_basic_reject_t *)decoded)->requeue, 1);
    free(f.payload);
    empty_amqp_pool(&pool);
    rq_pubbuf_free(b);
    peer_close(&p);
}

Test(amqp_pub, routing_key_longer_than_a_shortstr_is_refused)
{
    peer_t p;
    rq_pubbuf_t *b;
    char rk[300];

    memset(rk, 'k', sizeof(rk) - 1);
    rk[sizeof(rk) - 1] = '\0';
    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    cr_expect_eq(add(b, 1, rk, 0, "x", (const unsigned char *)"x", 1),
                 AMQP_STATUS_INVALID_PARAMETER);
    rq_pubbuf_free(b);
    peer_close(&p);
}

Test(amqp_pub, a_peer_that_stops_reading_times_the_flush_out)
{
    peer_t p;
    rq_pubbuf_t *b;
    size_t len = 1024 * 1024;
    unsigned char *body = calloc(1, len);
    struct timespec t0, t1;
    int rc = AMQP_STATUS_OK;
    double secs;

    cr_assert_not_null(body);
    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 1, 300);
    cr_assert_not_null(b);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* The server side never reads: the socket buffers fill, then the flush must give up
     * after about 300 ms without progress instead of blocking forever. */
    for (int i = 0; i < 256 && rc == AMQP_STATUS_OK; i++) {
        rc = add(b, 1, "q", 0, "fill", body, len);
        if (rc == AMQP_STATUS_OK)
            rc = rq_pubbuf_flush(b);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect_eq(rc, AMQP_STATUS_TIMEOUT, "got %d", rc);
    cr_expect_geq(secs, 0.29, "gave up after %.3f s", secs);
    cr_expect_lt(secs, 5.0, "gave up after %.3f s", secs);
    cr_expect_eq(rq_pubbuf_pending(b), 0, "a failed flush drops what it could not write");
    rq_pubbuf_free(b);
    peer_close(&p);
    free(body);
}

Test(amqp_pub, free_null_is_a_no_op)
{
    rq_pubbuf_free(NULL);
}

/* Issue 11 item 10: any negotiated frame_max >= 4096 is the limit (4096..4104 used to be
 * replaced by 131072, and every publish then broke the broker's limit). */
static void frame_max_is_honoured(int frame_max)
{
    peer_t p;
    rq_pubbuf_t *b;
    size_t len = 3 * (size_t)frame_max + 5;
    unsigned char *body = malloc(len);

    cr_assert_not_null(body);
    for (size_t i = 0; i < len; i++)
        body[i] = (unsigned char)(i * 13 + 1);
    peer_open_frame_max(&p, frame_max);
    cr_assert_eq(amqp_get_frame_max(p.conn), frame_max);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    cr_assert_eq(add(b, 1, "q.small", 0, "small", body, len), AMQP_STATUS_OK);
    cr_assert_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK);
    /* a frame is 7 header bytes + payload + 1 end byte: payload <= frame_max - 8 */
    expect_publish(p.sfd, 1, "q.small", 0, "small", body, len, (size_t)frame_max - 8);
    rq_pubbuf_free(b);
    peer_close(&p);
    free(body);
}

Test(amqp_pub, frame_max_4096_is_honoured)
{
    frame_max_is_honoured(4096);
}

Test(amqp_pub, frame_max_4100_is_honoured)
{
    frame_max_is_honoured(4100);
}

Test(amqp_pub, frame_max_4104_is_honoured)
{
    frame_max_is_honoured(4104);
}

Test(amqp_pub, frame_max_4105_is_honoured)
{
    frame_max_is_honoured(4105);
}

/* The content header must fit the frame too (checked on the wire). */
Test(amqp_pub, content_header_fits_frame_max_4096)
{
    peer_t p;
    rq_pubbuf_t *b;
    frame_t f;

    peer_open_frame_max(&p, 4096);
    b = rq_pubbuf_new(p.conn, 1, 1000);
    cr_assert_not_null(b);
    cr_assert_eq(add(b, 1, "q", 0, "h", (const unsigned char *)"x", 1), AMQP_STATUS_OK);
    cr_assert_eq(rq_pubbuf_flush(b), AMQP_STATUS_OK);
    read_frame(p.sfd, &f);
    cr_assert_leq(f.size, 4096 - 8);
    free(f.payload);
    read_frame(p.sfd, &f);
    cr_assert_eq(f.type, AMQP_FRAME_HEADER);
    cr_assert_leq(f.size, 4096 - 8);
    free(f.payload);
    rq_pubbuf_free(b);
    peer_close(&p);
}

static double since(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Issue 11 item 9: with raw = 0 (the TLS path) every publish goes through rabbitmq-c, which
 * waits for a full socket forever. A peer that never reads must make the publish fail after
 * about the send timeout, not hang the thread (the Criterion timeout catches a hang). */
Test(amqp_pub, rabbitmq_c_publish_to_a_peer_that_stops_reading_fails_in_time, .timeout = 20)
{
    peer_t p;
    rq_pubbuf_t *b;
    size_t len = 1024 * 1024;
    unsigned char *body = calloc(1, len);
    struct timespec t0;
    int rc = AMQP_STATUS_OK;
    double secs;

    cr_assert_not_null(body);
    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 0, 500);
    cr_assert_not_null(b);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 256 && rc == AMQP_STATUS_OK; i++)
        rc = add(b, 1, "q", 0, "fill", body, len);
    secs = since(&t0);
    cr_expect_neq(rc, AMQP_STATUS_OK,
                  "every publish of 256 MiB went out to a peer that reads "
                  "nothing");
    cr_expect_lt(secs, 5.0, "gave up after %.3f s", secs);
    rq_pubbuf_free(b);
    peer_close(&p);
    free(body);
}

/* A method frame (what acks, channel.close and heartbeats use) through rabbitmq-c is bounded
 * the same way. */
Test(amqp_pub, method_frames_to_a_peer_that_stops_reading_fail_in_time, .timeout = 20)
{
    peer_t p;
    rq_pubbuf_t *b;
    amqp_basic_ack_t ack = {.delivery_tag = 1, .multiple = 0};
    struct timespec t0;
    int rc = AMQP_STATUS_OK;
    double secs;

    peer_open(&p);
    b = rq_pubbuf_new(p.conn, 0, 500);
    cr_assert_not_null(b);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < 20L * 1000 * 1000 && rc == AMQP_STATUS_OK; i++)
        rc = rq_pubbuf_add_method(b, 1, AMQP_BASIC_ACK_METHOD, &ack);
    secs = since(&t0);
    cr_expect_neq(rc, AMQP_STATUS_OK, "20 million acks went out to a peer that reads nothing");
    cr_expect_lt(secs, 10.0, "gave up after %.3f s", secs);
    rq_pubbuf_free(b);
    peer_close(&p);
}

/* rq_amqp_close() on a connection whose broker stopped reading (the socket buffer is full)
 * returns within about its timeout instead of blocking in channel.close. */
Test(amqp_pub, close_with_a_full_socket_is_bounded, .timeout = 20)
{
    peer_t p;
    int fd;
    unsigned char junk[65536];
    struct timespec t0;
    double secs;

    memset(junk, 0, sizeof(junk));
    peer_open(&p);
    fd = amqp_get_sockfd(p.conn);
    /* fill the socket buffers (the peer never reads) */
    for (int i = 0; i < 100000; i++) {
        if (send(fd, junk, sizeof(junk), MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            cr_assert(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s", strerror(errno));
            break;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rq_amqp_close(p.conn);
    secs = since(&t0);
    cr_expect_lt(secs, 3.0, "rq_amqp_close took %.3f s", secs);
    close(p.sfd);
    close(p.lfd);
}

/* rq_amqp_close() with room in the socket but nobody answering (a frozen broker whose buffers
 * are not full) costs one RPC timeout, not two. */
Test(amqp_pub, close_without_an_answer_is_bounded, .timeout = 20)
{
    peer_t p;
    struct timespec t0;
    double secs;

    peer_open(&p);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rq_amqp_close(p.conn);
    secs = since(&t0);
    cr_expect_lt(secs, RQ_AMQP_CLOSE_TIMEOUT_MS / 1000.0 + 0.7, "rq_amqp_close took %.3f s", secs);
    close(p.sfd);
    close(p.lfd);
}
