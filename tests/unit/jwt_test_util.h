/* jwt_test_util.h - makes throw-away RSA and EC P-256 keys, their JWKS and signed tokens,
 * in-process with OpenSSL 3 EVP, for the JWT and auth tests. Header-only (static). */
#ifndef RQ_JWT_TEST_UTIL_H
#define RQ_JWT_TEST_UTIL_H

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* base64url without padding of in[0..n) into out (>= 4n/3 + 4 bytes). */
static inline void tu_b64url(const unsigned char *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;

    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
    }
    out[o] = '\0';
}

static inline void tu_b64url_str(const char *s, char *out)
{
    tu_b64url((const unsigned char *)s, strlen(s), out);
}

static inline EVP_PKEY *tu_rsa_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
}

static inline EVP_PKEY *tu_ec_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* The base64url of a BIGNUM parameter of k, fixed to width bytes when width > 0. */
static inline void tu_bn_param(EVP_PKEY *k, const char *name, size_t width, char *out)
{
    BIGNUM *bn = NULL;
    unsigned char buf[1024];
    int n;

    EVP_PKEY_get_bn_param(k, name, &bn);
    n = width > 0 ? BN_bn2binpad(bn, buf, (int)width) : BN_bn2bin(bn, buf);
    tu_b64url(buf, (size_t)n, out);
    BN_free(bn);
}

/* Appends the JWK of public key k (kid may be NULL; alg may be NULL) to buf. */
static inline void tu_jwk(EVP_PKEY *k, const char *kid, const char *alg, char *buf, size_t len)
{
    char a[1500], b[1500], extra[200] = "";
    size_t pos = strlen(buf);

    if (kid != NULL)
        snprintf(extra, sizeof(extra), ",\"kid\":\"%s\"", kid);
    if (alg != NULL)
        snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), ",\"alg\":\"%s\"", alg);
    if (EVP_PKEY_is_a(k, "RSA")) {
        tu_bn_param(k, OSSL_PKEY_PARAM_RSA_N, 0, a);
        tu_bn_param(k, OSSL_PKEY_PARAM_RSA_E, 0, b);
        snprintf(buf + pos, len - pos, "%s{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"%s}",
                 pos > 0 && buf[pos - 1] == '}' ? "," : "", a, b, extra);
    } else {
        tu_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, 32, a);
        tu_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32, b);
        snprintf(buf + pos, len - pos,
                 "%s{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"%s}",
                 pos > 0 && buf[pos - 1] == '}' ? "," : "", a, b, extra);
    }
}

/* Signs header.payload (JSON texts) with k (RS256 or ES256 by the key type) into tok. */
static inline void tu_sign(EVP_PKEY *k, const char *header, const char *payload, char *tok,
                           size_t len)
{
    char h[4096], p[8192], s[2048];
    unsigned char sig[1024], raw[64];
    size_t slen = sizeof(sig);
    EVP_MD_CTX *m = EVP_MD_CTX_new();

    tu_b64url_str(header, h);
    tu_b64url_str(payload, p);
    snprintf(tok, len, "%s.%s", h, p);
    EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(m, sig, &slen, (const unsigned char *)tok, strlen(tok));
    EVP_MD_CTX_free(m);
    if (EVP_PKEY_is_a(k, "EC")) { /* DER -> raw r||s */
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)slen);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        tu_b64url(raw, 64, s);
    } else {
        tu_b64url(sig, slen, s);
    }
    snprintf(tok + strlen(tok), len - strlen(tok), ".%s", s);
}

/* header.payload signed HS256 with secret (the alg confusion attack). */
static inline void tu_sign_hs256(const unsigned char *secret, size_t slen, const char *header,
                                 const char *payload, char *tok, size_t len)
{
    char h[4096], p[8192], s[100];
    unsigned char mac[32];
    unsigned mlen = 0;

    tu_b64url_str(header, h);
    tu_b64url_str(payload, p);
    snprintf(tok, len, "%s.%s", h, p);
    HMAC(EVP_sha256(), secret, (int)slen, (const unsigned char *)tok, strlen(tok), mac, &mlen);
    tu_b64url(mac, mlen, s);
    snprintf(tok + strlen(tok), len - strlen(tok), ".%s", s);
}

#endif
