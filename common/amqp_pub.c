/* amqp_pub.c - basic.publish frames encoded into one buffer (see amqp_pub.h). */
#include "amqp_pub.h"

#include <amqp_framing.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "amqp_conn.h"
#include "util.h"

#define FRAME_HEADER 7 /* type, channel, payload size */
#define FRAME_END_SIZE 1
#define FRAME_OVERHEAD (FRAME_HEADER + FRAME_END_SIZE)
#define METHOD_ROOM 600 /* method id + shortstr exchange + shortstr routing key + ticket, bits */
#define PROPS_ROOM 4096 /* first try for the content header; doubled up to frame_max */
#define RQ_AMQP_FRAME_MIN 4096          /* AMQP frame-min-size */
#define RQ_PUBBUF_NO_LIMIT_FRAME 131072 /* frame size used when the broker sets no limit */

struct rq_pubbuf {
    amqp_connection_state_t conn;
    int fd;           /* -1: publish through rabbitmq-c */
    size_t frame_max; /* negotiated frame size, header and end byte included */
    int send_timeout_ms;
    unsigned char *buf;
    size_t len;
    size_t cap;
};

static void put16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put32(unsigned char *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* Makes room for `need` more bytes. Returns 0 or -1 (out of memory). */
static int reserve(rq_pubbuf_t *b, size_t need)
{
    size_t cap = b->cap ? b->cap : 64 * 1024;
    unsigned char *nb;

    if (b->len + need <= b->cap)
        return 0;
    while (cap < b->len + need)
        cap *= 2;
    nb = realloc(b->buf, cap);
    if (nb == NULL)
        return -1;
    b->buf = nb;
    b->cap = cap;
    return 0;
}

/* Starts a frame at b->len: writes type and channel; the caller encodes the payload after the
 * 7-byte header, then calls end_frame() with the payload size. */
static unsigned char *begin_frame(rq_pubbuf_t *b, uint8_t type, amqp_channel_t channel)
{
    unsigned char *f = b->buf + b->len;

    f[0] = type;
    put16(f + 1, channel);
    return f;
}

static void end_frame(rq_pubbuf_t *b, unsigned char *f, size_t payload)
{
    put32(f + 3, (uint32_t)payload);
    f[FRAME_HEADER + payload] = AMQP_FRAME_END;
    b->len += FRAME_OVERHEAD + payload;
}

rq_pubbuf_t *rq_pubbuf_new(amqp_connection_state_t conn, int raw, int send_timeout_ms)
{
    rq_pubbuf_t *b = calloc(1, sizeof(*b));
    int frame_max;

    if (b == NULL)
        return NULL;
    b->conn = conn;
    b->fd = raw ? amqp_get_sockfd(conn) : -1;
    frame_max = amqp_get_frame_max(conn);
    /* Any negotiated frame_max is the broker's limit, down to AMQP's minimum (4096, which
     * every peer must accept). 0 means "no limit"; RabbitMQ always negotiates one. */
    if (frame_max == 0)
        b->frame_max = RQ_PUBBUF_NO_LIMIT_FRAME;
    else
        b->frame_max = frame_max >= RQ_AMQP_FRAME_MIN ? (size_t)frame_max : RQ_AMQP_FRAME_MIN;
    b->send_timeout_ms = send_timeout_ms > 0 ? send_timeout_ms : 30000;
    /* rabbitmq-c and OpenSSL wait for a full socket without a deadline: bound every send on
     * the connection (theirs too) by the same timeout as our flush. */
    (void)rq_amqp_set_send_timeout(conn, b->send_timeout_ms); /* checked by rq_amqp_open() */
    return b;
}

void rq_pubbuf_free(rq_pubbuf_t *b)
{
    if (b == NULL)
        return;
    free(b->buf);
    free(b);
}

size_t rq_pubbuf_pending(const rq_pubbuf_t *b)
{
    return b->len;
}

int rq_pubbuf_flush(rq_pubbuf_t *b)
{
    size_t off = 0;
    int64_t deadline = 0;

    while (off < b->len) {
        ssize_t n = send(b->fd, b->buf + off, b->len - off, MSG_NOSIGNAL);
        struct pollfd pf;
        int64_t left;

        if (n > 0) {
            off += (size_t)n;
            deadline = 0; /* progress: the timeout counts from the last write */
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            /* ETIMEDOUT: the kernel's send deadline (rq_amqp_set_send_timeout()) hit first */
            int timed_out = n < 0 && errno == ETIMEDOUT;

            b->len = 0;
            return timed_out ? AMQP_STATUS_TIMEOUT : AMQP_STATUS_SOCKET_ERROR;
        }
        if (deadline == 0)
            deadline = rq_mono_ms() + b->send_timeout_ms;
        left = deadline - rq_mono_ms();
        if (left <= 0) {
            b->len = 0;
            return AMQP_STATUS_TIMEOUT;
        }
        pf.fd = b->fd;
        pf.events = POLLOUT;
        pf.revents = 0;
        if (poll(&pf, 1, (int)left) < 0 && errno != EINTR) {
            b->len = 0;
            return AMQP_STATUS_SOCKET_ERROR;
        }
    }
    b->len = 0;
    return AMQP_STATUS_OK;
}

/* Encodes the content header (class, weight, body size, properties) as one frame, growing
 * the room for the properties up to frame_max. */
static int add_header(rq_pubbuf_t *b, amqp_channel_t channel, const amqp_basic_properties_t *props,
                      size_t body_len)
{
    size_t room = PROPS_ROOM;

    for (;;) {
        amqp_bytes_t enc;
        unsigned char *f;
        int res;

        if (room > b->frame_max - FRAME_OVERHEAD - 12)
            room = b->frame_max - FRAME_OVERHEAD - 12;
        if (reserve(b, FRAME_OVERHEAD + 12 + room) != 0)
            return AMQP_STATUS_NO_MEMORY;
        f = begin_frame(b, AMQP_FRAME_HEADER, channel);
        put16(f + FRAME_HEADER, AMQP_BASIC_CLASS);
        put16(f + FRAME_HEADER + 2, 0); /* weight */
        put64(f + FRAME_HEADER + 4, body_len);
        enc.bytes = f + FRAME_HEADER + 12;
        enc.len = room;
        /* amqp_encode_properties() takes a non-const pointer but does not write through it. */
        res = amqp_encode_properties(AMQP_BASIC_CLASS, (void *)(uintptr_t)props, enc);
        if (res >= 0) {
            end_frame(b, f, 12 + (size_t)res);
            return AMQP_STATUS_OK;
        }
        if (room >= b->frame_max - FRAME_OVERHEAD - 12)
            return res; /* the properties do not fit in one frame */
        room *= 4;
    }
}

int rq_pubbuf_add_method(rq_pubbuf_t *b, amqp_channel_t channel, amqp_method_number_t id,
                         void *decoded)
{
    amqp_bytes_t enc;
    unsigned char *f;
    int res;

    if (b->fd < 0)
        return amqp_send_method(b->conn, channel, id, decoded);
    if (reserve(b, FRAME_OVERHEAD + METHOD_ROOM) != 0)
        return AMQP_STATUS_NO_MEMORY;
    f = begin_frame(b, AMQP_FRAME_METHOD, channel);
    put32(f + FRAME_HEADER, id);
    enc.bytes = f + FRAME_HEADER + 4;
    enc.len = METHOD_ROOM - 4;
    res = amqp_encode_method(id, decoded, enc);
    if (res < 0)
        return res;
    end_frame(b, f, 4 + (size_t)res);
    return AMQP_STATUS_OK;
}

int rq_pubbuf_add(rq_pubbuf_t *b, amqp_channel_t channel, amqp_bytes_t exchange,
                  amqp_bytes_t routing_key, int mandatory, const amqp_basic_properties_t *props,
                  amqp_bytes_t body)
{
    amqp_basic_publish_t m;
    unsigned char *f;
    size_t chunk = b->frame_max - FRAME_OVERHEAD;
    size_t start = b->len;
    int res;

    if (b->fd < 0)
        return amqp_basic_publish(b->conn, channel, exchange, routing_key, mandatory,
                                  /*immediate=*/0, props, body);
    if (exchange.len > 255 || routing_key.len > 255)
        return AMQP_STATUS_INVALID_PARAMETER;
    memset(&m, 0, sizeof(m));
    m.exchange = exchange;
    m.routing_key = routing_key;
    m.mandatory = mandatory != 0;
    res = rq_pubbuf_add_method(b, channel, AMQP_BASIC_PUBLISH_METHOD, &m);
    if (res == AMQP_STATUS_OK)
        res = add_header(b, channel, props, body.len);
    if (res != AMQP_STATUS_OK) {
        b->len = start; /* nothing of this message stays in the buffer */
        return res;
    }

    for (size_t off = 0; off < body.len; off += chunk) {
        size_t n = body.len - off < chunk ? body.len - off : chunk;

        if (reserve(b, FRAME_OVERHEAD + n) != 0)
            return AMQP_STATUS_NO_MEMORY;
        f = begin_frame(b, AMQP_FRAME_BODY, channel);
        memcpy(f + FRAME_HEADER, (const unsigned char *)body.bytes + off, n);
        end_frame(b, f, n);
        if (b->len >= RQ_PUBBUF_FLUSH_BYTES && (res = rq_pubbuf_flush(b)) != AMQP_STATUS_OK)
            return res;
    }
    if (b->len >= RQ_PUBBUF_FLUSH_BYTES)
        return rq_pubbuf_flush(b);
    return AMQP_STATUS_OK;
}
