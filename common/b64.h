/* b64.h - standard base64 (RFC 4648 section 4, alphabet A-Z a-z 0-9 + /, '=' padding).
 *
 * For bytes that JSON text cannot carry as a string (a reply that is not UTF-8): the status
 * events' "reply_b64" and GET /messages/{id}'s. Pure, allocation-free, thread-safe.
 */
#ifndef RQ_B64_H
#define RQ_B64_H

#include <stddef.h>

/* Characters rq_b64_encode() writes for n bytes (without the NUL). */
#define RQ_B64_ENC_LEN(n) ((((n) + 2) / 3) * 4)

/* Writes in[0..n) as padded base64 into out, which must hold RQ_B64_ENC_LEN(n) + 1 bytes,
 * NUL-terminated. Returns the characters written (RQ_B64_ENC_LEN(n)). */
size_t rq_b64_encode(const void *in, size_t n, char *out);

/* Decodes the padded base64 in[0..len) (a multiple of 4 characters, no whitespace, zero
 * padding bits) into out (cap bytes; len / 4 * 3 always suffice) and sets *outlen. Returns 0,
 * or -1 for text that is not canonical base64 or a result over cap bytes. */
int rq_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen);

#endif
