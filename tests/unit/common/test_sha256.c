/* test_sha256.c - SHA-256 against FIPS 180-4 / NIST vectors, incremental feeding, padding
 * boundaries, constant-time comparison and hex helpers. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"

static void hex_of(const void *data, size_t len, char out[2 * RQ_SHA256_LEN + 1])
{
    uint8_t d[RQ_SHA256_LEN];

    rq_sha256(data, len, d);
    rq_hex_encode(d, sizeof(d), out);
}

Test(sha256, nist_vectors)
{
    static const struct {
        const char *msg, *hex;
    } cases[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmno"
         "pqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    char hex[2 * RQ_SHA256_LEN + 1];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        hex_of(cases[i].msg, strlen(cases[i].msg), hex);
        cr_expect_str_eq(hex, cases[i].hex, "vector %zu", i);
    }
}

/* Lengths around the 55/56/64-byte padding boundaries (digests from sha256sum). */
Test(sha256, padding_boundaries)
{
    static const struct {
        size_t n;
        const char *hex;
    } cases[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
        {1000, "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"},
    };
    char buf[1000], hex[2 * RQ_SHA256_LEN + 1];

    memset(buf, 'a', sizeof(buf));
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        hex_of(buf, cases[i].n, hex);
        cr_expect_str_eq(hex, cases[i].hex, "%zu x 'a'", cases[i].n);
    }
}

/* One million 'a' fed in uneven pieces equals the NIST digest. */
Test(sha256, million_a_incremental)
{
    rq_sha256_ctx_t c;
    uint8_t d[RQ_SHA256_LEN];
    char chunk[997], hex[2 * RQ_SHA256_LEN + 1];
    size_t left = 1000000, step = 1;

    memset(chunk, 'a', sizeof(chunk));
    rq_sha256_init(&c);
    while (left > 0) {
        size_t n = step < left ? step : left;
        rq_sha256_update(&c, chunk, n);
        left -= n;
        step = (step + 7) % sizeof(chunk) + 1; /* 1..997: every offset mod 64 */
    }
    rq_sha256_final(&c, d);
    rq_hex_encode(d, sizeof(d), hex);
    cr_expect_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Split feeding gives the one-shot digest for every split point of a 200-byte message. */
Test(sha256, every_split_point)
{
    uint8_t msg[200], want[RQ_SHA256_LEN], got[RQ_SHA256_LEN];

    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 31 + 7);
    rq_sha256(msg, sizeof(msg), want);
    for (size_t cut = 0; cut <= sizeof(msg); cut++) {
        rq_sha256_ctx_t c;
        rq_sha256_init(&c);
        rq_sha256_update(&c, msg, cut);
        rq_sha256_update(&c, NULL, 0);
        rq_sha256_update(&c, msg + cut, sizeof(msg) - cut);
        rq_sha256_final(&c, got);
        cr_assert(memcmp(want, got, sizeof(want)) == 0, "split at %zu", cut);
    }
}

Test(sha256, ct_memeq)
{
    uint8_t a[32], b[32];

    memset(a, 0x5a, sizeof(a));
    memcpy(b, a, sizeof(b));
    cr_expect_eq(rq_ct_memeq(a, b, sizeof(a)), 1);
    cr_expect_eq(rq_ct_memeq(a, b, 0), 1);
    for (size_t i = 0; i < sizeof(a); i++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            b[i] ^= (uint8_t)(1u << bit);
            cr_expect_eq(rq_ct_memeq(a, b, sizeof(a)), 0, "byte %zu bit %u", i, bit);
            b[i] ^= (uint8_t)(1u << bit);
        }
    }
    b[31] = 0xa5; /* every bit differs */
    cr_expect_eq(rq_ct_memeq(a, b, sizeof(a)), 0);
}

Test(sha256, hex_round_trip)
{
    uint8_t in[4] = {0x00, 0x7f, 0xab, 0xff}, out[4];
    char hex[9];

    rq_hex_encode(in, 4, hex);
    cr_expect_str_eq(hex, "007fabff");
    cr_expect_eq(rq_hex_decode("007FabFF", out, 4), 0);
    cr_expect(memcmp(in, out, 4) == 0);
    cr_expect_eq(rq_hex_decode("007fabfg", out, 4), -1);
    cr_expect_eq(rq_hex_decode("0 7fabff", out, 4), -1);
    cr_expect_eq(rq_hex_decode("007fab\0f", out, 4), -1);
}
