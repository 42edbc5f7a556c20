/* jwt.h - OAuth2 bearer tokens: JWTs signed RS256 or ES256, checked against a JWKS.
 *
 * Pure parsing and verification (no I/O, no clock: the caller gives the time), used by
 * auth.c. A token is accepted only when every check passes, in this order:
 *
 *   1. size and shape: at most RQ_JWT_MAX_LEN bytes, three base64url segments (no padding,
 *      canonical trailing bits), a JSON object header and payload;
 *   2. header: `alg` is RS256 or ES256 (none, HS*, PS*, anything else: unsupported alg, so
 *      an RSA public key can never serve as an HMAC secret), no `crit`;
 *   3. key: with a `kid`, the JWKS key of that kid; without one, the only key of the JWKS
 *      usable for the alg (several: refused, so that a token costs one verification); the
 *      key's kty must fit the alg (RSA for RS256, EC P-256 for ES256) and its `alg`, when
 *      the JWK names one, must be the token's;
 *   4. signature: RSASSA-PKCS1-v1_5 SHA-256, or ECDSA P-256 SHA-256 whose 64-byte r||s is
 *      converted to DER for OpenSSL;
 *   5. claims (only read once the signature holds): `exp` required, now < exp + leeway;
 *      `nbf` when present, now + leeway >= nbf; `iat` when present, not after now + leeway;
 *      `iss` equal to the policy's issuer; `aud` (a string or an array of strings) holding
 *      the policy's audience.
 *
 * JWKS (RFC 7517): {"keys": [...]} with kty RSA (n, e; n odd, of 2048 to 8192 bits; e odd
 * and at least 3, as e = 1 would make any padded digest a signature) or EC (crv
 * P-256, x, y; the point is checked on the curve); optional kid (<= 128 bytes), alg (RS256
 * or ES256) and use (a key with use other than "sig" is skipped). Keys of other types (oct,
 * OKP, other curves) are skipped; a JWKS without a usable key is an error (fail closed).
 */
#ifndef RQ_JWT_H
#define RQ_JWT_H

#include <stddef.h>
#include <stdint.h>

#define RQ_JWT_MAX_LEN 8192         /* longest token accepted, in bytes */
#define RQ_JWKS_FILE_MAX (1u << 20) /* largest JWKS text accepted */
#define RQ_JWKS_MAX_KEYS 64         /* most keys in a JWKS */
#define RQ_JWT_SUB_MAX 64           /* bytes of a sanitized subject (RQ_KEY_ID_MAX) */
#define RQ_JWT_SCOPES_MAX 4096      /* bytes of the scope text kept from a token */

typedef enum rq_jwt_result {
    RQ_JWT_OK = 0,
    RQ_JWT_MALFORMED,       /* not three base64url segments of JSON objects */
    RQ_JWT_OVERSIZED,       /* longer than RQ_JWT_MAX_LEN */
    RQ_JWT_UNSUPPORTED_ALG, /* alg other than RS256/ES256, or a crit header */
    RQ_JWT_UNKNOWN_KEY,     /* no JWKS key for the kid/alg */
    RQ_JWT_BAD_SIGNATURE,   /* the signature does not verify */
    RQ_JWT_EXPIRED,         /* exp passed (beyond the leeway) */
    RQ_JWT_NOT_YET_VALID,   /* nbf not reached (beyond the leeway) */
    RQ_JWT_BAD_IAT,         /* iat in the future (beyond the leeway) */
    RQ_JWT_WRONG_ISSUER,    /* iss missing or not the configured issuer */
    RQ_JWT_WRONG_AUDIENCE,  /* aud missing or without the configured audience */
    RQ_JWT_BAD_CLAIMS,      /* exp missing, or a time claim that is not a number */
} rq_jwt_result_t;

/* A short text for r, fit for an error_description ("token expired"). Static. */
const char *rq_jwt_strerror(rq_jwt_result_t r);

/* ---- key sets ---- */

typedef struct rq_jwks rq_jwks_t;

/* Parses a JWKS text (len bytes, at most RQ_JWKS_FILE_MAX). Returns a new set (free with
 * rq_jwks_free) holding at least one key, or NULL with the reason in err (errlen bytes,
 * never NULL-terminated beyond errlen). Immutable afterwards: thread-safe to verify with. */
rq_jwks_t *rq_jwks_parse(const char *text, size_t len, char *err, size_t errlen);

/* Number of usable keys (0 for NULL). */
size_t rq_jwks_count(const rq_jwks_t *ks);

/* Frees the set. NULL is a no-op. */
void rq_jwks_free(rq_jwks_t *ks);

/* ---- verification ---- */

/* What a token must say. Strings are borrowed; scope_claim names the claim mapped to
 * permissions (a space-separated string, as OAuth2's `scope`, or an array of strings, as
 * `roles`); NULL or "" means "scope". */
typedef struct rq_jwt_policy {
    const char *issuer;
    const char *audience;
    const char *scope_claim;
    int64_t leeway_s; /* clock skew allowed on exp, nbf and iat (0..86400; more counts as
                         86400) */
} rq_jwt_policy_t;

/* What an accepted token says. */
typedef struct rq_jwt_claims {
    char sub[RQ_JWT_SUB_MAX + 1]; /* sub (else client_id, else azp, else "jwt") as it is when
                                     of [A-Za-z0-9_.@:-] and <= 64 bytes; else its first 47
                                     bytes (others as '_'), '~' and 16 hex digits of its
                                     SHA-256 (distinct subjects keep distinct ids) */
    char *scopes; /* heap: the scope claim's pieces separated by single spaces ("" when the
                     claim is absent; array elements holding a space are dropped) */
    int64_t exp;  /* the exp claim, seconds since the epoch */
} rq_jwt_claims_t;

/* 1 when tok[0..len) has the shape of a JWS compact token (two '.', a header segment
 * starting "eyJ"), else 0. Cheap; says nothing about validity. */
int rq_jwt_looks_like(const char *tok, size_t len);

/* Verifies tok[0..len) against ks and pol at now_s (seconds since the epoch). On RQ_JWT_OK
 * fills *out (release with rq_jwt_claims_clear); otherwise *out is cleared (safe to clear
 * again). Bounded work: one signature verification at most. Thread-safe. */
rq_jwt_result_t rq_jwt_verify(const rq_jwks_t *ks, const rq_jwt_policy_t *pol, const char *tok,
                              size_t len, int64_t now_s, rq_jwt_claims_t *out);

/* Frees out->scopes and zeroes *out. */
void rq_jwt_claims_clear(rq_jwt_claims_t *out);

/* Decodes base64url (RFC 4648 section 5, no padding, zero trailing bits) in[0..len) into
 * out (cap bytes). Returns 0 with *outlen, or -1 for a bad character, length or overflow. */
int rq_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen);

#endif
