/* ws_frame.c - RFC 6455 framing (see ws_frame.h). */
#include "ws_frame.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

int rq_ws_accept(const char *key, size_t keylen, char out[RQ_WS_ACCEPT_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    int rc = -1;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL)
        goto out;
    if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 || EVP_DigestUpdate(ctx, key, keylen) != 1 ||
        EVP_DigestUpdate(ctx, WS_GUID, strlen(WS_GUID)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 20)
        goto out;
    rq_b64_encode(md, 20, out);
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

int rq_ws_close_code_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int rq_ws_utf8_feed(rq_ws_utf8_t *st, const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char b = s[i];
        if (st->need > 0) {
            if (b < st->lo || b > st->hi)
                return -1;
            st->need--;
            st->lo = 0x80;
            st->hi = 0xBF;
            continue;
        }
        if (b < 0x80)
            continue;
        st->lo = 0x80;
        st->hi = 0xBF;
        if (b >= 0xC2 && b <= 0xDF) {
            st->need = 1;
        } else if (b >= 0xE0 && b <= 0xEF) {
            st->need = 2;
            if (b == 0xE0)
                st->lo = 0xA0; /* overlong */
            else if (b == 0xED)
                st->hi = 0x9F; /* surrogates */
        } else if (b >= 0xF0 && b <= 0xF4) {
            st->need = 3;
            if (b == 0xF0)
                st->lo = 0x90; /* overlong */
            else if (b == 0xF4)
                st->hi = 0x8F; /* > U+10FFFF */
        } else {
            return -1;
        }
    }
    return 0;
}

int rq_ws_utf8_valid(const void *s, size_t n)
{
    rq_ws_utf8_t st = {0, 0x80, 0xBF};
    return rq_ws_utf8_feed(&st, s, n) == 0 && st.need == 0;
}

/* ---- parser ---- */

enum { ST_HDR = 0, ST_PAYLOAD, ST_FAILED };

struct rq_ws_parser {
    size_t max;
    int state;
    unsigned char hdr[RQ_WS_HDR_MAX];
    size_t hlen;
    /* the frame being read */
    int fin, opcode, control;
    unsigned char mask[4];
    uint64_t flen, fpos;
    /* the data message being reassembled */
    int in_msg, msg_op;
    unsigned char *buf;
    size_t blen, bcap;
    rq_ws_utf8_t utf8;
    int emitted_data; /* the last message returned was buf: reset it on the next call */
    unsigned char ctl[RQ_WS_CONTROL_MAX];
    unsigned err;
    const char *why;
};

rq_ws_parser_t *rq_ws_parser_new(size_t max_message)
{
    rq_ws_parser_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->max = max_message;
    return p;
}

void rq_ws_parser_free(rq_ws_parser_t *p)
{
    if (p == NULL)
        return;
    free(p->buf);
    free(p);
}

unsigned rq_ws_parser_error(const rq_ws_parser_t *p, const char **why)
{
    if (why != NULL)
        *why = p->err ? p->why : "";
    return p->err;
}

static int fail(rq_ws_parser_t *p, unsigned code, const char *why)
{
    p->state = ST_FAILED;
    p->err = code;
    p->why = why;
    return -1;
}

/* Bytes of header a frame needs, given its first two bytes. */
static size_t hdr_need(const unsigned char *h)
{
    size_t n = 2 + 4; /* client frames are masked (checked separately) */
    unsigned l7 = h[1] & 0x7F;
    if (l7 == 126)
        n += 2;
    else if (l7 == 127)
        n += 8;
    return n;
}

/* The first two bytes are in: the checks that need nothing more. */
static int check_first(rq_ws_parser_t *p)
{
    unsigned char b0 = p->hdr[0], b1 = p->hdr[1];
    int op = b0 & 0x0F;
    if (b0 & 0x70)
        return fail(p, RQ_WS_CLOSE_PROTOCOL, "RSV bits set without an extension");
    if (!(b1 & 0x80))
        return fail(p, RQ_WS_CLOSE_PROTOCOL, "client frame not masked");
    switch (op) {
    case RQ_WS_OP_CONT:
    case RQ_WS_OP_TEXT:
    case RQ_WS_OP_BINARY:
        p->control = 0;
        break;
    case RQ_WS_OP_CLOSE:
    case RQ_WS_OP_PING:
    case RQ_WS_OP_PONG:
        p->control = 1;
        if (!(b0 & 0x80))
            return fail(p, RQ_WS_CLOSE_PROTOCOL, "fragmented control frame");
        if ((b1 & 0x7F) > RQ_WS_CONTROL_MAX)
            return fail(p, RQ_WS_CLOSE_PROTOCOL, "control frame over 125 bytes");
        break;
    default:
        return fail(p, RQ_WS_CLOSE_PROTOCOL, "reserved opcode");
    }
    if (op == RQ_WS_OP_CONT && !p->in_msg)
        return fail(p, RQ_WS_CLOSE_PROTOCOL, "continuation without a message");
    if ((op == RQ_WS_OP_TEXT || op == RQ_WS_OP_BINARY) && p->in_msg)
        return fail(p, RQ_WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
    p->fin = (b0 & 0x80) != 0;
    p->opcode = op;
    return 0;
}

/* The whole header is in: length, mask, room for the payload. */
static int header_done(rq_ws_parser_t *p)
{
    unsigned l7 = p->hdr[1] & 0x7F;
    size_t at = 2;
    uint64_t len = l7;
    if (l7 == 126) {
        len = ((uint64_t)p->hdr[2] << 8) | p->hdr[3];
        at = 4;
    } else if (l7 == 127) {
        if (p->hdr[2] & 0x80)
            return fail(p, RQ_WS_CLOSE_PROTOCOL, "64-bit length with the top bit set");
        len = 0;
        for (size_t i = 0; i < 8; i++)
            len = (len << 8) | p->hdr[2 + i];
        at = 10;
    }
    memcpy(p->mask, p->hdr + at, 4);
    p->flen = len;
    p->fpos = 0;
    if (p->control)
        return 0;
    if (!p->in_msg) {
        p->in_msg = 1;
        p->msg_op = p->opcode;
        p->blen = 0;
        p->utf8 = (rq_ws_utf8_t){0, 0x80, 0xBF};
    }
    if (len > p->max || p->blen > p->max - (size_t)len)
        return fail(p, RQ_WS_CLOSE_TOO_BIG, "message too big");
    if (p->blen + (size_t)len > p->bcap) {
        size_t want = p->blen + (size_t)len, cap = p->bcap ? p->bcap : 256;
        while (cap < want)
            cap = cap > p->max / 2 ? p->max : cap * 2;
        if (cap < want)
            cap = want;
        unsigned char *nb = realloc(p->buf, cap);
        if (nb == NULL)
            return fail(p, RQ_WS_CLOSE_INTERNAL, "out of memory");
        p->buf = nb;
        p->bcap = cap;
    }
    return 0;
}

/* The frame's payload is complete: 1 and *msg when it completes a message, else 0. */
static int frame_done(rq_ws_parser_t *p, rq_ws_msg_t *msg)
{
    p->state = ST_HDR;
    p->hlen = 0;
    if (p->control) {
        msg->opcode = p->opcode;
        msg->data = p->ctl;
        msg->len = (size_t)p->flen;
        msg->close_code = 0;
        if (p->opcode == RQ_WS_OP_CLOSE) {
            if (p->flen == 0) {
                msg->close_code = RQ_WS_CLOSE_NO_STATUS;
            } else if (p->flen == 1) {
                return fail(p, RQ_WS_CLOSE_PROTOCOL, "close payload of 1 byte");
            } else {
                msg->close_code = ((unsigned)p->ctl[0] << 8) | p->ctl[1];
                if (!rq_ws_close_code_valid(msg->close_code))
                    return fail(p, RQ_WS_CLOSE_PROTOCOL, "invalid close code");
                msg->data = p->ctl + 2;
                msg->len = (size_t)p->flen - 2;
                if (!rq_ws_utf8_valid(msg->data, msg->len))
                    return fail(p, RQ_WS_CLOSE_BAD_DATA, "close reason not UTF-8");
            }
        }
        return 1;
    }
    if (!p->fin)
        return 0;
    if (p->msg_op == RQ_WS_OP_TEXT && p->utf8.need != 0)
        return fail(p, RQ_WS_CLOSE_BAD_DATA, "text message not UTF-8");
    p->in_msg = 0;
    p->emitted_data = 1;
    msg->opcode = p->msg_op;
    msg->data = p->buf;
    msg->len = p->blen;
    msg->close_code = 0;
    return 1;
}

int rq_ws_parse(rq_ws_parser_t *p, const unsigned char *buf, size_t len, size_t *used,
                rq_ws_msg_t *msg)
{
    size_t i = 0;
    int rc = 0;

    if (p->state == ST_FAILED) {
        rc = -1;
        goto out;
    }
    if (p->emitted_data) {
        p->emitted_data = 0;
        p->blen = 0;
    }
    while (p->state != ST_FAILED) {
        if (p->state == ST_HDR) {
            if (i >= len)
                break;
            p->hdr[p->hlen++] = buf[i++];
            if (p->hlen == 2 && check_first(p) < 0)
                break;
            if (p->hlen < 2 || p->hlen < hdr_need(p->hdr))
                continue;
            if (header_done(p) < 0)
                break;
            p->state = ST_PAYLOAD;
        }
        /* ST_PAYLOAD */
        size_t n = (size_t)(p->flen - p->fpos);
        if (n > len - i)
            n = len - i;
        if (n > 0) {
            unsigned char *dst = p->control ? p->ctl + p->fpos : p->buf + p->blen;
            memcpy(dst, buf + i, n);
            rq_ws_mask(dst, n, p->mask, p->fpos);
            if (!p->control) {
                if (p->msg_op == RQ_WS_OP_TEXT && rq_ws_utf8_feed(&p->utf8, dst, n) < 0) {
                    fail(p, RQ_WS_CLOSE_BAD_DATA, "text message not UTF-8");
                    break;
                }
                p->blen += n;
            }
            p->fpos += n;
            i += n;
        }
        if (p->fpos < p->flen)
            break; /* input exhausted */
        rc = frame_done(p, msg);
        if (rc != 0)
            break;
    }
    if (p->state == ST_FAILED)
        rc = -1;
out:
    *used = i;
    return rc;
}

/* ---- writer ---- */

size_t rq_ws_frame_header(unsigned char out[RQ_WS_HDR_MAX], int fin, int opcode, uint64_t len,
                          const unsigned char *mask)
{
    size_t n = 2;
    out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0F));
    unsigned char mbit = mask ? 0x80 : 0;
    if (len <= 125) {
        out[1] = (unsigned char)(mbit | len);
    } else if (len <= 0xFFFF) {
        out[1] = mbit | 126;
        out[2] = (unsigned char)(len >> 8);
        out[3] = (unsigned char)len;
        n = 4;
    } else {
        out[1] = mbit | 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void rq_ws_mask(unsigned char *data, size_t n, const unsigned char mask[4], uint64_t offset)
{
    for (size_t i = 0; i < n; i++)
        data[i] ^= mask[(offset + i) & 3];
}

size_t rq_ws_frame_write(unsigned char *out, size_t cap, int fin, int opcode, const void *payload,
                         size_t len, const unsigned char *mask)
{
    unsigned char h[RQ_WS_HDR_MAX];
    size_t hl = rq_ws_frame_header(h, fin, opcode, len, mask);
    if (cap < hl || cap - hl < len)
        return 0;
    memcpy(out, h, hl);
    if (len > 0)
        memcpy(out + hl, payload, len);
    if (mask)
        rq_ws_mask(out + hl, len, mask, 0);
    return hl + len;
}

size_t rq_ws_close_frame(unsigned char out[2 + RQ_WS_CONTROL_MAX], unsigned code,
                         const char *reason)
{
    unsigned char pl[RQ_WS_CONTROL_MAX];
    size_t n = 0;
    if (code != 0) {
        size_t rl = reason ? strlen(reason) : 0;
        if (rl > RQ_WS_CONTROL_MAX - 2) {
            rl = RQ_WS_CONTROL_MAX - 2;
            while (rl > 0 && ((unsigned char)reason[rl] & 0xC0) == 0x80)
                rl--; /* do not cut a code point */
        }
        pl[0] = (unsigned char)(code >> 8);
        pl[1] = (unsigned char)code;
        if (rl > 0)
            memcpy(pl + 2, reason, rl);
        n = 2 + rl;
    }
    return rq_ws_frame_write(out, 2 + RQ_WS_CONTROL_MAX, 1, RQ_WS_OP_CLOSE, pl, n, NULL);
}
