/* test_ws_frame.c - RFC 6455 framing (producer/rt/ws_frame.c): the accept value (4.2.2's
 * example), every parser rule of 5.2 (mask, RSV, opcodes, 64-bit length), 5.4 (fragments,
 * control frames between them), 5.5 (control frame size and fragmentation), 5.6/8.1
 * (UTF-8, incrementally across fragments), 7.4 (close codes), size limits, byte-at-a-time
 * feeding, and the writer. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "ws_frame.h"

static const unsigned char MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Appends a masked client frame to buf at *n. */
static void put(unsigned char *buf, size_t *n, int fin, int op, const void *pl, size_t len)
{
    size_t w = rq_ws_frame_write(buf + *n, 1 << 20, fin, op, pl, len, MASK);
    cr_assert(w > 0);
    *n += w;
}

/* Feeds buf[0..n) in pieces of `step` bytes; collects up to 8 messages; returns the parse
 * result of the last call (-1 on error) and the count in *nmsg. */
typedef struct {
    int op;
    unsigned code;
    size_t len;
    unsigned char data[300];
} got_t;

static int feed(rq_ws_parser_t *p, const unsigned char *buf, size_t n, size_t step, got_t *got,
                int *nmsg)
{
    size_t at = 0;
    *nmsg = 0;
    while (at < n) {
        size_t piece = n - at < step ? n - at : step, used = 0;
        size_t off = 0;
        while (off < piece) {
            rq_ws_msg_t m;
            int rc = rq_ws_parse(p, buf + at + off, piece - off, &used, &m);
            if (rc < 0)
                return -1;
            off += used;
            if (rc == 1) {
                cr_assert(*nmsg < 8);
                got[*nmsg].op = m.opcode;
                got[*nmsg].code = m.close_code;
                got[*nmsg].len = m.len;
                memcpy(got[*nmsg].data, m.data, m.len < 300 ? m.len : 300);
                (*nmsg)++;
            } else {
                cr_assert_eq(off, piece);
            }
        }
        at += piece;
    }
    return 0;
}

/* Parses buf whole and byte by byte; both must agree. Returns the error code (0: none). */
static unsigned parse_both(const unsigned char *buf, size_t n, size_t max, got_t *got, int *nmsg)
{
    unsigned codes[2];
    int counts[2];
    size_t steps[2] = {n ? n : 1, 1};
    for (int k = 0; k < 2; k++) {
        rq_ws_parser_t *p = rq_ws_parser_new(max);
        int rc = feed(p, buf, n, steps[k], got, &counts[k]);
        codes[k] = rq_ws_parser_error(p, NULL);
        cr_assert_eq(rc < 0, codes[k] != 0);
        rq_ws_parser_free(p);
    }
    cr_assert_eq(codes[0], codes[1], "whole %u vs bytewise %u", codes[0], codes[1]);
    cr_assert_eq(counts[0], counts[1]);
    *nmsg = counts[0];
    return codes[0];
}

Test(ws_frame, accept_rfc_example)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    cr_assert_eq(rq_ws_accept(key, strlen(key), out), 0);
    cr_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

Test(ws_frame, masked_text_single_frame)
{
    unsigned char b[64];
    size_t n = 0;
    got_t g[8];
    int k;
    put(b, &n, 1, RQ_WS_OP_TEXT, "Hello", 5);
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    cr_assert_eq(k, 1);
    cr_assert_eq(g[0].op, RQ_WS_OP_TEXT);
    cr_assert_eq(g[0].len, 5);
    cr_assert(memcmp(g[0].data, "Hello", 5) == 0);
}

Test(ws_frame, unmasked_is_1002)
{
    /* RFC 5.7's unmasked "Hello" */
    const unsigned char b[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    got_t g[8];
    int k;
    cr_assert_eq(parse_both(b, sizeof(b), 1024, g, &k), 1002);
}

Test(ws_frame, rsv_bits_are_1002)
{
    for (int bit = 4; bit <= 6; bit++) {
        unsigned char b[32];
        size_t n = 0;
        got_t g[8];
        int k;
        put(b, &n, 1, RQ_WS_OP_TEXT, "x", 1);
        b[0] |= (unsigned char)(1 << bit);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002, "rsv bit %d", bit);
    }
}

Test(ws_frame, reserved_opcodes_are_1002)
{
    const int ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        unsigned char b[32];
        size_t n = 0;
        got_t g[8];
        int k;
        put(b, &n, 1, ops[i], "", 0);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002, "opcode %d", ops[i]);
    }
}

Test(ws_frame, lengths_16_and_64_bit)
{
    size_t sizes[] = {125, 126, 65535, 65536, 70000};
    for (size_t i = 0; i < 5; i++) {
        size_t len = sizes[i];
        unsigned char *pl = malloc(len), *b = malloc(len + 14);
        memset(pl, 'a', len);
        size_t n = 0;
        got_t g[8];
        int k;
        n = rq_ws_frame_write(b, len + 14, 1, RQ_WS_OP_BINARY, pl, len, MASK);
        cr_assert_eq(parse_both(b, n, 1 << 20, g, &k), 0);
        cr_assert_eq(k, 1);
        cr_assert_eq(g[0].len, len);
        free(pl);
        free(b);
    }
}

Test(ws_frame, length_top_bit_is_1002)
{
    unsigned char b[14] = {0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4};
    got_t g[8];
    int k;
    cr_assert_eq(parse_both(b, sizeof(b), 1024, g, &k), 1002);
}

Test(ws_frame, frame_over_limit_is_1009_before_payload)
{
    /* header only: announces 2000 bytes with a 1000-byte limit */
    unsigned char b[RQ_WS_HDR_MAX];
    size_t n = rq_ws_frame_header(b, 1, RQ_WS_OP_BINARY, 2000, MASK);
    got_t g[8];
    int k;
    cr_assert_eq(parse_both(b, n, 1000, g, &k), 1009);
}

Test(ws_frame, fragments_reassemble_and_total_limit)
{
    unsigned char b[4096];
    size_t n = 0;
    got_t g[8];
    int k;
    put(b, &n, 0, RQ_WS_OP_TEXT, "Hel", 3);
    put(b, &n, 1, RQ_WS_OP_PING, "p", 1); /* 5.4: control frames between fragments */
    put(b, &n, 0, RQ_WS_OP_CONT, "l", 1);
    put(b, &n, 1, RQ_WS_OP_CONT, "o", 1);
    cr_assert_eq(parse_both(b, n, 5, g, &k), 0);
    cr_assert_eq(k, 2);
    cr_assert_eq(g[0].op, RQ_WS_OP_PING);
    cr_assert_eq(g[1].op, RQ_WS_OP_TEXT);
    cr_assert_eq(g[1].len, 5);
    cr_assert(memcmp(g[1].data, "Hello", 5) == 0);
    /* the same message with a limit of 4: the fragments add up over it */
    cr_assert_eq(parse_both(b, n, 4, g, &k), 1009);
}

Test(ws_frame, continuation_rules_are_1002)
{
    unsigned char b[64];
    size_t n = 0;
    got_t g[8];
    int k;
    put(b, &n, 1, RQ_WS_OP_CONT, "x", 1); /* nothing to continue */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002);
    n = 0;
    put(b, &n, 0, RQ_WS_OP_TEXT, "x", 1);
    put(b, &n, 1, RQ_WS_OP_TEXT, "y", 1); /* a new message inside one */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002);
}

Test(ws_frame, control_frame_rules_are_1002)
{
    unsigned char b[300], big[126];
    size_t n = 0;
    got_t g[8];
    int k;
    memset(big, 'x', sizeof(big));
    put(b, &n, 1, RQ_WS_OP_PING, big, 126);
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002);
    n = 0;
    put(b, &n, 0, RQ_WS_OP_PING, "x", 1); /* fragmented control frame */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002);
    n = 0;
    put(b, &n, 1, RQ_WS_OP_PONG, big, 125); /* 125 is fine */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    cr_assert_eq(g[0].op, RQ_WS_OP_PONG);
    cr_assert_eq(g[0].len, 125);
}

Test(ws_frame, utf8_rules_are_1007)
{
    static const struct {
        const char *s;
        size_t n;
        int ok;
    } cases[] = {
        {"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", 11, 1}, /* κόσμε */
        {"\xf0\x9f\x98\x80", 4, 1},                              /* U+1F600 */
        {"\xf4\x8f\xbf\xbf", 4, 1},                              /* U+10FFFF */
        {"\xc0\xaf", 2, 0},                                      /* overlong */
        {"\xe0\x80\xaf", 3, 0},                                  /* overlong */
        {"\xed\xa0\x80", 3, 0},                                  /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0},                              /* > U+10FFFF */
        {"\xff", 1, 0},
        {"\xce", 1, 0}, /* truncated at the end */
        {"\x80", 1, 0}, /* lone continuation */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        unsigned char b[64];
        size_t n = 0;
        got_t g[8];
        int k;
        put(b, &n, 1, RQ_WS_OP_TEXT, cases[i].s, cases[i].n);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), cases[i].ok ? 0 : 1007, "case %zu", i);
        cr_assert_eq(rq_ws_utf8_valid(cases[i].s, cases[i].n), cases[i].ok);
        /* binary frames are not checked */
        n = 0;
        put(b, &n, 1, RQ_WS_OP_BINARY, cases[i].s, cases[i].n);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    }
}

Test(ws_frame, utf8_split_across_fragments)
{
    unsigned char b[64];
    size_t n = 0;
    got_t g[8];
    int k;
    put(b, &n, 0, RQ_WS_OP_TEXT, "\xf0\x9f", 2); /* U+1F600 cut in two */
    put(b, &n, 1, RQ_WS_OP_CONT, "\x98\x80", 2);
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    cr_assert_eq(g[0].len, 4);
    /* fail fast: an invalid first fragment is refused before the message ends */
    n = 0;
    put(b, &n, 0, RQ_WS_OP_TEXT, "a\xff", 2);
    rq_ws_parser_t *p = rq_ws_parser_new(1024);
    size_t used;
    rq_ws_msg_t m;
    cr_assert_eq(rq_ws_parse(p, b, n, &used, &m), -1);
    cr_assert_eq(rq_ws_parser_error(p, NULL), 1007);
    rq_ws_parser_free(p);
}

Test(ws_frame, close_payload_rules)
{
    unsigned char b[200], pl[130];
    size_t n = 0;
    got_t g[8];
    int k;
    put(b, &n, 1, RQ_WS_OP_CLOSE, "", 0);
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    cr_assert_eq(g[0].code, RQ_WS_CLOSE_NO_STATUS);
    n = 0;
    put(b, &n, 1, RQ_WS_OP_CLOSE, "\x03", 1); /* 1 byte */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002);
    n = 0;
    put(b, &n, 1, RQ_WS_OP_CLOSE,
        "\x03\xe8"
        "bye",
        5); /* 1000 "bye" */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 0);
    cr_assert_eq(g[0].code, 1000);
    cr_assert_eq(g[0].len, 3);
    cr_assert(memcmp(g[0].data, "bye", 3) == 0);
    n = 0;
    put(b, &n, 1, RQ_WS_OP_CLOSE, "\x03\xe8\xff", 3); /* reason not UTF-8 */
    cr_assert_eq(parse_both(b, n, 1024, g, &k), 1007);
    /* 7.4: valid and invalid codes */
    static const unsigned bad[] = {0,    999,  1004, 1005, 1006, 1015,
                                   1016, 1100, 2000, 2999, 5000, 65535};
    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008,
                                    1009, 1010, 1011, 3000, 4404, 4999};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pl[0] = (unsigned char)(bad[i] >> 8);
        pl[1] = (unsigned char)bad[i];
        n = 0;
        put(b, &n, 1, RQ_WS_OP_CLOSE, pl, 2);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), 1002, "code %u", bad[i]);
        cr_assert_not(rq_ws_close_code_valid(bad[i]));
    }
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        pl[0] = (unsigned char)(good[i] >> 8);
        pl[1] = (unsigned char)good[i];
        n = 0;
        put(b, &n, 1, RQ_WS_OP_CLOSE, pl, 2);
        cr_assert_eq(parse_both(b, n, 1024, g, &k), 0, "code %u", good[i]);
        cr_assert_eq(g[0].code, good[i]);
    }
}

Test(ws_frame, stays_failed_and_stops_at_each_message)
{
    unsigned char b[64];
    size_t n = 0, used;
    rq_ws_msg_t m;
    put(b, &n, 1, RQ_WS_OP_TEXT, "a", 1);
    size_t first = n;
    put(b, &n, 1, RQ_WS_OP_TEXT, "b", 1);
    rq_ws_parser_t *p = rq_ws_parser_new(16);
    cr_assert_eq(rq_ws_parse(p, b, n, &used, &m), 1);
    cr_assert_eq(used, first); /* stops after the first message */
    cr_assert_eq(m.data[0], 'a');
    cr_assert_eq(rq_ws_parse(p, b + used, n - used, &used, &m), 1);
    cr_assert_eq(m.data[0], 'b');
    b[0] = 0x81; /* an unmasked frame */
    b[1] = 0x01;
    cr_assert_eq(rq_ws_parse(p, b, 3, &used, &m), -1);
    cr_assert_eq(rq_ws_parse(p, b, 3, &used, &m), -1);
    cr_assert_eq(rq_ws_parser_error(p, NULL), 1002);
    rq_ws_parser_free(p);
}

Test(ws_frame, writer_server_frames_unmasked)
{
    unsigned char out[RQ_WS_HDR_MAX];
    cr_assert_eq(rq_ws_frame_header(out, 1, RQ_WS_OP_TEXT, 5, NULL), 2);
    cr_assert_eq(out[0], 0x81);
    cr_assert_eq(out[1], 0x05);
    cr_assert_eq(rq_ws_frame_header(out, 1, RQ_WS_OP_BINARY, 256, NULL), 4);
    cr_assert_eq(out[1], 126);
    cr_assert_eq(out[2], 1);
    cr_assert_eq(out[3], 0);
    cr_assert_eq(rq_ws_frame_header(out, 1, RQ_WS_OP_BINARY, 65536, NULL), 10);
    cr_assert_eq(out[1], 127);
    cr_assert_eq(out[7], 1);
    unsigned char cf[2 + RQ_WS_CONTROL_MAX];
    size_t n = rq_ws_close_frame(cf, 1008, "slow_consumer");
    cr_assert_eq(n, 2 + 2 + 13);
    cr_assert_eq(cf[0], 0x88);
    cr_assert_eq(cf[1], 15);
    cr_assert_eq(cf[2], 0x03);
    cr_assert_eq(cf[3], 0xf0);
    cr_assert_eq(rq_ws_close_frame(cf, 0, NULL), 2);
    /* a long reason is cut at a code point boundary to fit 125 bytes */
    char reason[300];
    for (int i = 0; i < 149; i++)
        memcpy(reason + 2 * i, "\xce\xba", 2);
    reason[298] = '\0';
    n = rq_ws_close_frame(cf, 1000, reason);
    cr_assert(n <= 127);
    cr_assert(rq_ws_utf8_valid(cf + 4, n - 4));
}
