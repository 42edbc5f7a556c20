/* ws_frame.h - RFC 6455 framing, pure (no I/O, no threads): the handshake's accept value, an
 * incremental parser of client frames, and the writer of server frames.
 *
 * Parser rules (the close code of each violation in brackets):
 *   - every client frame is masked (5.1, 5.3) [1002]; RSV1-3 are 0, no extension is
 *     negotiated (5.2) [1002]; opcodes 0x0 continuation, 0x1 text, 0x2 binary, 0x8 close,
 *     0x9 ping, 0xA pong, the others are reserved (5.2) [1002];
 *   - a 64-bit length has its top bit 0 (5.2) [1002]; a non-minimal length encoding is
 *     accepted (lenient);
 *   - control frames carry <= 125 bytes and are not fragmented (5.5) [1002]; they may come
 *     between the fragments of a message (5.4);
 *   - a continuation without a message started, or a new text/binary frame inside a
 *     fragmented message (5.4) [1002];
 *   - a message over max_message bytes in total (all fragments) [1009];
 *   - a text message is UTF-8 (5.6, 8.1), checked incrementally as bytes arrive, across
 *     fragments (fails as soon as a byte cannot continue valid UTF-8) [1007];
 *   - a close payload is empty, or a 2-byte code + UTF-8 reason (5.5.1): 1 byte [1002], a
 *     code that rq_ws_close_code_valid() refuses [1002], a reason that is not UTF-8 [1007].
 * After an error the parser stays failed.
 */
#ifndef RQ_RT_WS_FRAME_H
#define RQ_RT_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define RQ_WS_OP_CONT 0x0
#define RQ_WS_OP_TEXT 0x1
#define RQ_WS_OP_BINARY 0x2
#define RQ_WS_OP_CLOSE 0x8
#define RQ_WS_OP_PING 0x9
#define RQ_WS_OP_PONG 0xA

#define RQ_WS_CLOSE_NORMAL 1000
#define RQ_WS_CLOSE_GOING_AWAY 1001
#define RQ_WS_CLOSE_PROTOCOL 1002
#define RQ_WS_CLOSE_UNSUPPORTED 1003
#define RQ_WS_CLOSE_NO_STATUS 1005 /* never sent: an empty close payload */
#define RQ_WS_CLOSE_BAD_DATA 1007
#define RQ_WS_CLOSE_POLICY 1008
#define RQ_WS_CLOSE_TOO_BIG 1009
#define RQ_WS_CLOSE_INTERNAL 1011

#define RQ_WS_HDR_MAX 14      /* 2 + 8 length + 4 mask */
#define RQ_WS_CONTROL_MAX 125 /* payload of a control frame */
#define RQ_WS_ACCEPT_LEN 28   /* base64 of a SHA-1 */

/* The Sec-WebSocket-Accept value of key[0..keylen) (4.2.2: base64(SHA-1(key + GUID))) into
 * out (29 bytes, NUL-terminated). 0, or -1 when the digest fails. Thread-safe. */
int rq_ws_accept(const char *key, size_t keylen, char out[RQ_WS_ACCEPT_LEN + 1]);

/* 1 when `code` may be sent in a close frame (7.4): 1000-1003, 1007-1014, 3000-4999. */
int rq_ws_close_code_valid(unsigned code);

/* 1 when s[0..n) is complete, valid UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
int rq_ws_utf8_valid(const void *s, size_t n);

/* Incremental UTF-8 check: state 0 at a code point boundary. Feeds s[0..n); returns 0, or
 * -1 at the first byte that cannot continue valid UTF-8. */
typedef struct rq_ws_utf8 {
    unsigned need;        /* continuation bytes still expected */
    unsigned char lo, hi; /* the range of the next continuation byte */
} rq_ws_utf8_t;
int rq_ws_utf8_feed(rq_ws_utf8_t *st, const unsigned char *s, size_t n);

/* One message (data messages reassembled) or control frame from the parser. `data` is the
 * parser's and valid until the next rq_ws_parse() or rq_ws_parser_free(). */
typedef struct rq_ws_msg {
    int opcode;                /* RQ_WS_OP_TEXT, _BINARY, _CLOSE, _PING, _PONG */
    const unsigned char *data; /* the (unmasked) payload; a close frame's reason only */
    size_t len;
    unsigned close_code; /* CLOSE: the code, RQ_WS_CLOSE_NO_STATUS for an empty payload */
} rq_ws_msg_t;

typedef struct rq_ws_parser rq_ws_parser_t;

/* A parser of client frames whose reassembled messages hold at most max_message bytes.
 * NULL on allocation failure. rq_ws_parser_free(NULL) is a no-op. */
rq_ws_parser_t *rq_ws_parser_new(size_t max_message);
void rq_ws_parser_free(rq_ws_parser_t *p);

/* Consumes bytes of buf[0..len) into the parser and sets *used to how many. Returns 1 when a
 * message was completed (in *msg; the rest of buf is left for the next call, *used < len
 * possible), 0 when all of buf was consumed without completing one, or -1 on a protocol
 * violation (see rq_ws_parser_error; also every later call). */
int rq_ws_parse(rq_ws_parser_t *p, const unsigned char *buf, size_t len, size_t *used,
                rq_ws_msg_t *msg);

/* The close code (1002, 1007, 1009; 1011 on allocation failure) and a static description
 * of the parser's error; 0 and "" when it has none. */
unsigned rq_ws_parser_error(const rq_ws_parser_t *p, const char **why);

/* ---- writer ---- */

/* Writes the header of a frame (FIN when fin, opcode, len payload bytes; masked with mask
 * when mask is not NULL - servers never mask, tests and the fuzzer do) into out, returns its
 * length (2..14). */
size_t rq_ws_frame_header(unsigned char out[RQ_WS_HDR_MAX], int fin, int opcode, uint64_t len,
                          const unsigned char *mask);

/* XORs data[0..n) with mask, the first byte being at payload offset `offset`. */
void rq_ws_mask(unsigned char *data, size_t n, const unsigned char mask[4], uint64_t offset);

/* Writes a whole frame (header then payload[0..len), masked when mask != NULL) into out
 * (cap bytes). Returns its length, or 0 when cap is too small. */
size_t rq_ws_frame_write(unsigned char *out, size_t cap, int fin, int opcode, const void *payload,
                         size_t len, const unsigned char *mask);

/* Writes an unmasked close frame with `code` and `reason` (cut to fit 123 bytes, at a UTF-8
 * boundary) into out; code 0 writes an empty close frame. Returns its length (<= 127). */
size_t rq_ws_close_frame(unsigned char out[2 + RQ_WS_CONTROL_MAX], unsigned code,
                         const char *reason);

#endif
