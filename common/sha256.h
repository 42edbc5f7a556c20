/* sha256.h - SHA-256 (FIPS 180-4), constant-time comparison and hex helpers.
 *
 * A small self-contained implementation so that API-key checks need no crypto library.
 * All functions are pure and thread-safe (no shared state).
 */
#ifndef RQ_SHA256_H
#define RQ_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define RQ_SHA256_LEN 32 /* digest bytes */

typedef struct rq_sha256_ctx {
    uint32_t h[8];
    uint64_t bytes; /* message length so far */
    uint8_t buf[64];
    size_t used; /* bytes waiting in buf */
} rq_sha256_ctx_t;

/* Starts a digest. */
void rq_sha256_init(rq_sha256_ctx_t *c);

/* Feeds len bytes (data may be NULL when len is 0). */
void rq_sha256_update(rq_sha256_ctx_t *c, const void *data, size_t len);

/* Writes the digest of everything fed into out and wipes the context. */
void rq_sha256_final(rq_sha256_ctx_t *c, uint8_t out[RQ_SHA256_LEN]);

/* One-shot digest of data[0..len). */
void rq_sha256(const void *data, size_t len, uint8_t out[RQ_SHA256_LEN]);

/* Returns 1 when a[0..n) equals b[0..n), else 0, in time that depends on n only (no early
 * exit), so a caller comparing secrets leaks nothing through timing. */
int rq_ct_memeq(const void *a, const void *b, size_t n);

/* Writes the 2*n lowercase hex digits of in[0..n) and a NUL into out (2*n + 1 bytes). */
void rq_hex_encode(const uint8_t *in, size_t n, char *out);

/* Decodes exactly 2*n hex digits (either case) from hex into out[0..n). Returns 0, or -1
 * when a character is not a hex digit (out is then undefined). */
int rq_hex_decode(const char *hex, uint8_t *out, size_t n);

/* Overwrites n bytes at p with zeros in a way the compiler may not remove. */
void rq_wipe(void *p, size_t n);

#endif
