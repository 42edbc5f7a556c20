/* fuzz_ws_frame.c - libFuzzer harness: the incremental RFC 6455 parser (producer/rt/ws_frame.h)
 * on an untrusted client byte stream.
 * Input: byte 0-1 seed the sizes of the pieces (1..N bytes) the stream is fed in; the rest is
 * the stream. Checks: never crashes; the messages (opcode, payload, close code) and the
 * final error code equal those of a reference decoder below, written independently, that
 * sees the whole stream at once; every message is within bounds (text is UTF-8, control
 * frames <= 125 bytes, data <= the limit). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ws_frame.h"

#define MAXMSG 4096 /* small, so that 1009 is reachable */
#define MAXOUT 64   /* messages compared per input */

typedef struct {
    int op;
    unsigned code;
    size_t len;
    unsigned char *data;
} msg_t;

typedef struct {
    msg_t m[MAXOUT];
    int n;
    unsigned err;
} result_t;

static void add(result_t *r, int op, unsigned code, const unsigned char *d, size_t len)
{
    if (r->n >= MAXOUT)
        return;
    msg_t *m = &r->m[r->n++];
    m->op = op;
    m->code = code;
    m->len = len;
    m->data = malloc(len ? len : 1);
    if (len)
        memcpy(m->data, d, len);
}

static void clear(result_t *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->m[i].data);
    r->n = 0;
}

/* Reference UTF-8: 1 when s[0..n) is valid, or (partial) a valid prefix of valid UTF-8. */
static int utf8_ok(const unsigned char *s, size_t n, int partial)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        for (size_t k = 1; k < len; k++) {
            if (i + k >= n)
                return partial;
            unsigned b = s[i + k];
            if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
                return 0;
        }
        i += len;
    }
    return 1;
}

static int valid_code(unsigned c)
{
    return c == 1000 || c == 1001 || c == 1002 || c == 1003 || (c >= 1007 && c <= 1014) ||
           (c >= 3000 && c <= 4999);
}

/* The reference: the whole stream s[0..n) at once, frame by frame. */
static void reference(const unsigned char *s, size_t n, result_t *r)
{
    static unsigned char msg[MAXMSG];
    size_t mlen = 0, at = 0;
    int in_msg = 0, mop = 0;
    r->err = 0;
    while (at + 2 <= n) {
        unsigned b0 = s[at], b1 = s[at + 1];
        int fin = b0 >> 7, op = b0 & 15, ctl = op >= 8;
        if (b0 & 0x70 || !(b1 & 0x80) || (op > 2 && op < 8) || op > 10 ||
            (ctl && (!fin || (b1 & 0x7F) > 125)) || (op == 0 && !in_msg) ||
            ((op == 1 || op == 2) && in_msg)) {
            r->err = 1002;
            return;
        }
        size_t hl = 2 + 4 + ((b1 & 0x7F) == 126 ? 2 : (b1 & 0x7F) == 127 ? 8 : 0);
        if (at + hl > n)
            return;
        uint64_t len = b1 & 0x7F;
        const unsigned char *p = s + at + 2;
        if (len == 126) {
            len = (uint64_t)p[0] << 8 | p[1];
            p += 2;
        } else if (len == 127) {
            if (p[0] & 0x80) {
                r->err = 1002;
                return;
            }
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | p[i];
            p += 8;
        }
        const unsigned char *mask = p;
        at += hl;
        if (!ctl) {
            if (!in_msg) {
                mop = op;
                mlen = 0;
            }
            in_msg = 1;
            if (len > MAXMSG || mlen + len > MAXMSG) {
                r->err = 1009;
                return;
            }
        }
        size_t have = n - at < len ? n - at : (size_t)len;
        unsigned char pl[MAXMSG];
        for (size_t i = 0; i < have; i++)
            pl[i] = s[at + i] ^ mask[i % 4];
        if (!ctl) {
            memcpy(msg + mlen, pl, have);
            if (mop == 1 && !utf8_ok(msg, mlen + have, 1)) {
                r->err = 1007;
                return;
            }
        }
        if (have < len)
            return;
        at += have;
        if (ctl) {
            if (op == 8 && len == 1) {
                r->err = 1002;
                return;
            }
            if (op == 8 && len >= 2) {
                unsigned code = (unsigned)pl[0] << 8 | pl[1];
                if (!valid_code(code)) {
                    r->err = 1002;
                    return;
                }
                if (!utf8_ok(pl + 2, have - 2, 0)) {
                    r->err = 1007;
                    return;
                }
                add(r, op, code, pl + 2, have - 2);
            } else {
                add(r, op, op == 8 ? 1005 : 0, pl, have);
            }
            continue;
        }
        mlen += have;
        if (!fin)
            continue;
        if (mop == 1 && !utf8_ok(msg, mlen, 0)) {
            r->err = 1007;
            return;
        }
        add(r, mop, 0, msg, mlen);
        in_msg = 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t seed = ((uint32_t)data[0] << 8 | data[1]) | 1;
    const unsigned char *s = data + 2;
    size_t n = size - 2, at = 0;
    static result_t got, want;
    rq_ws_parser_t *p = rq_ws_parser_new(MAXMSG);
    if (p == NULL)
        return 0;
    got.n = 0;
    while (at < n) {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        size_t piece = 1 + seed % ((data[0] & 0x3F) + 1);
        if (piece > n - at)
            piece = n - at;
        size_t off = 0;
        int rc = 0;
        while (off < piece) {
            size_t used = 0;
            rq_ws_msg_t m;
            rc = rq_ws_parse(p, s + at + off, piece - off, &used, &m);
            if (used > piece - off)
                abort();
            off += used;
            if (rc < 0)
                break;
            if (rc == 1) {
                if (m.opcode == RQ_WS_OP_TEXT && !rq_ws_utf8_valid(m.data, m.len))
                    abort();
                if (m.opcode >= 8 && m.len > 125)
                    abort();
                if (m.len > MAXMSG)
                    abort();
                add(&got, m.opcode, m.close_code, m.data, m.len);
            } else if (off != piece) {
                abort(); /* 0 means everything was consumed */
            }
        }
        if (rc < 0)
            break;
        at += piece;
    }
    got.err = rq_ws_parser_error(p, NULL);
    rq_ws_parser_free(p);

    reference(s, n, &want);
    if (got.err != want.err || got.n != want.n)
        abort();
    for (int i = 0; i < got.n; i++) {
        const msg_t *a = &got.m[i], *b = &want.m[i];
        if (a->op != b->op || a->code != b->code || a->len != b->len ||
            (a->len && memcmp(a->data, b->data, a->len) != 0))
            abort();
    }
    clear(&got);
    clear(&want);
    return 0;
}
