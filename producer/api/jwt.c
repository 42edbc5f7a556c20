/* jwt.c - JWKS parsing and JWT (RS256, ES256) verification with OpenSSL 3 EVP. */
#include "jwt.h"

#include <jansson.h>
#include <math.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sha256.h"
#include "util.h"

enum { ALG_RS256 = 1, ALG_ES256 = 2 };

#define KID_MAX 128

typedef struct jwk {
    char kid[KID_MAX + 1];
    int has_kid;
    int alg; /* ALG_* the key is for (from kty; the JWK's alg must agree) */
    EVP_PKEY *pkey;
} jwk_t;

struct rq_jwks {
    size_t n;
    jwk_t keys[RQ_JWKS_MAX_KEYS];
};

const char *rq_jwt_strerror(rq_jwt_result_t r)
{
    switch (r) {
    case RQ_JWT_OK:
        return "ok";
    case RQ_JWT_MALFORMED:
        return "malformed token";
    case RQ_JWT_OVERSIZED:
        return "token too long";
    case RQ_JWT_UNSUPPORTED_ALG:
        return "unsupported alg (RS256 or ES256 only)";
    case RQ_JWT_UNKNOWN_KEY:
        return "no matching key (kid)";
    case RQ_JWT_BAD_SIGNATURE:
        return "bad signature";
    case RQ_JWT_EXPIRED:
        return "token expired";
    case RQ_JWT_NOT_YET_VALID:
        return "token not yet valid (nbf)";
    case RQ_JWT_BAD_IAT:
        return "token issued in the future (iat)";
    case RQ_JWT_WRONG_ISSUER:
        return "wrong issuer";
    case RQ_JWT_WRONG_AUDIENCE:
        return "wrong audience";
    case RQ_JWT_BAD_CLAIMS:
        return "bad claims (exp required; times must be numbers)";
    }
    return "invalid token";
}

/* ---- base64url ---- */

static int b64_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '-')
        return 62;
    if (ch == '_')
        return 63;
    return -1;
}

int rq_b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
    size_t o = 0, need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    uint32_t acc = 0;
    int bits = 0;

    if (len % 4 == 1 || need > cap)
        return -1;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* non-canonical: the unused trailing bits must be zero */
        return -1;
    *outlen = o;
    return 0;
}

/* Decodes a base64url JSON member (a string) into out; -1 when absent, not a string, or
 * not base64url, or longer than cap. */
static int b64_member(json_t *o, const char *name, unsigned char *out, size_t cap, size_t *n)
{
    json_t *v = json_object_get(o, name);

    if (!json_is_string(v))
        return -1;
    return rq_b64url_decode(json_string_value(v), json_string_length(v), out, cap, n);
}

/* ---- keys ---- */

/* Builds an RSA public key from n and e (big-endian bytes). NULL on failure. */
static EVP_PKEY *rsa_key(const unsigned char *n, size_t nlen, const unsigned char *e, size_t elen)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
    OSSL_PARAM *params = NULL;
    EVP_PKEY *pkey = NULL;

    if (ctx == NULL || bld == NULL || bn == NULL || be == NULL ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    OSSL_PARAM_free(params);
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    return pkey;
}

/* Builds a P-256 public key from x and y (32 bytes each), checked on the curve. */
static EVP_PKEY *ec_key(const unsigned char *x, const unsigned char *y)
{
    unsigned char pub[65];
    char group[] = "prime256v1";
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL), *chk = NULL;
    EVP_PKEY *pkey = NULL;

    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, 32);
    memcpy(pub + 33, y, 32);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub));
    params[2] = OSSL_PARAM_construct_end();
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        goto err;
    chk = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (chk == NULL || EVP_PKEY_public_check(chk) != 1)
        goto err;
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_CTX_free(ctx);
    return pkey;

err:
    EVP_PKEY_CTX_free(chk);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    return NULL;
}

static int alg_of(const char *s)
{
    if (s != NULL && strcmp(s, "RS256") == 0)
        return ALG_RS256;
    if (s != NULL && strcmp(s, "ES256") == 0)
        return ALG_ES256;
    return 0;
}

/* Parses JWK j into *k. Returns 1 (a usable key), 0 (skipped: another type or use) or -1
 * (a broken key of a supported type) with why. */
static int parse_jwk(json_t *j, jwk_t *k, char *why, size_t whylen)
{
    const char *kty = json_string_value(json_object_get(j, "kty"));
    json_t *kid = json_object_get(j, "kid"), *alg = json_object_get(j, "alg");
    json_t *use = json_object_get(j, "use");
    unsigned char a[1024], b[1024];
    size_t alen, blen;

    memset(k, 0, sizeof(*k));
    if (!json_is_object(j) || kty == NULL)
        return rq_errf(why, whylen, "a key without kty"), -1;
    if (use != NULL && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return 0;
    if (strcmp(kty, "RSA") == 0) {
        k->alg = ALG_RS256;
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(j, "crv"));
        if (crv == NULL || strcmp(crv, "P-256") != 0)
            return 0;
        k->alg = ALG_ES256;
    } else {
        return 0;
    }
    if (alg != NULL) {
        int ja = json_is_string(alg) ? alg_of(json_string_value(alg)) : 0;
        if (ja == 0)
            return 0; /* a key for an algorithm we do not accept */
        if (ja != k->alg)
            return rq_errf(why, whylen, "a %s key with alg %s", kty, json_string_value(alg)), -1;
    }
    if (kid != NULL) {
        if (!json_is_string(kid) || json_string_length(kid) > KID_MAX)
            return rq_errf(why, whylen, "kid must be a string of at most %d bytes", KID_MAX), -1;
        memcpy(k->kid, json_string_value(kid), json_string_length(kid) + 1);
        k->has_kid = 1;
    }
    if (k->alg == ALG_RS256) {
        if (b64_member(j, "n", a, sizeof(a), &alen) != 0 ||
            b64_member(j, "e", b, sizeof(b), &blen) != 0 || blen == 0 || blen > 8)
            return rq_errf(why, whylen, "RSA key %s: bad n or e", k->kid), -1;
        while (alen > 0 && a[0] == 0) { /* leading zero bytes do not count */
            memmove(a, a + 1, --alen);
        }
        if (alen < 256 || alen > 1024)
            return rq_errf(why, whylen, "RSA key %s: n must be 2048 to 8192 bits", k->kid), -1;
        /* OpenSSL takes any e: with e = 1 the padded digest itself is a valid signature of
         * every message, so a mistyped JWKS would accept forged tokens. */
        while (blen > 0 && b[0] == 0)
            memmove(b, b + 1, --blen);
        if (blen == 0 || (b[blen - 1] & 1) == 0 || (blen == 1 && b[0] < 3) ||
            (a[alen - 1] & 1) == 0)
            return rq_errf(why, whylen,
                           "RSA key %s: the exponent e must be odd and at least 3 "
                           "and n odd",
                           k->kid),
                   -1;
        k->pkey = rsa_key(a, alen, b, blen);
    } else {
        if (b64_member(j, "x", a, sizeof(a), &alen) != 0 || alen != 32 ||
            b64_member(j, "y", b, sizeof(b), &blen) != 0 || blen != 32)
            return rq_errf(why, whylen, "EC key %s: x and y must be 32 bytes", k->kid), -1;
        k->pkey = ec_key(a, b);
    }
    if (k->pkey == NULL)
        return rq_errf(why, whylen, "%s key %s: not a valid public key", kty, k->kid), -1;
    return 1;
}

void rq_jwks_free(rq_jwks_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++)
        EVP_PKEY_free(ks->keys[i].pkey);
    free(ks);
}

size_t rq_jwks_count(const rq_jwks_t *ks)
{
    return ks != NULL ? ks->n : 0;
}

rq_jwks_t *rq_jwks_parse(const char *text, size_t len, char *err, size_t errlen)
{
    rq_jwks_t *ks = NULL;
    json_t *root = NULL, *keys;
    json_error_t jerr;
    char why[200];
    size_t i;

    if (len > RQ_JWKS_FILE_MAX) {
        rq_errf(err, errlen, "larger than %u bytes", RQ_JWKS_FILE_MAX);
        goto err;
    }
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    keys = json_object_get(root, "keys");
    if (root == NULL || !json_is_array(keys)) {
        rq_errf(err, errlen, "not a JWKS (a JSON object with a \"keys\" array)%s%s",
                root == NULL ? ": " : "", root == NULL ? jerr.text : "");
        goto err;
    }
    if (json_array_size(keys) > RQ_JWKS_MAX_KEYS) {
        rq_errf(err, errlen, "more than %d keys", RQ_JWKS_MAX_KEYS);
        goto err;
    }
    ks = calloc(1, sizeof(*ks));
    if (ks == NULL) {
        rq_errf(err, errlen, "out of memory");
        goto err;
    }
    for (i = 0; i < json_array_size(keys); i++) {
        jwk_t *k = &ks->keys[ks->n];
        int r = parse_jwk(json_array_get(keys, i), k, why, sizeof(why));
        if (r < 0) {
            rq_errf(err, errlen, "key %zu: %s", i + 1, why);
            goto err;
        }
        if (r == 0)
            continue;
        for (size_t j = 0; k->has_kid && j < ks->n; j++) {
            if (ks->keys[j].has_kid && strcmp(ks->keys[j].kid, k->kid) == 0) {
                EVP_PKEY_free(k->pkey);
                rq_errf(err, errlen, "key %zu: kid %s is listed twice", i + 1, k->kid);
                goto err;
            }
        }
        ks->n++;
    }
    if (ks->n == 0) {
        rq_errf(err, errlen, "no usable key (RSA, or EC P-256, for signatures)");
        goto err;
    }
    json_decref(root);
    return ks;

err:
    rq_jwks_free(ks);
    json_decref(root);
    return NULL;
}

/* ---- verification ---- */

int rq_jwt_looks_like(const char *tok, size_t len)
{
    size_t dots = 0;

    if (len < 5 || memcmp(tok, "eyJ", 3) != 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        dots += tok[i] == '.';
    return dots == 2;
}

/* The key for a token with alg and kid (NULL: none); NULL when there is none or, without a
 * kid, when several keys could do. */
static const jwk_t *find_key(const rq_jwks_t *ks, int alg, const char *kid)
{
    const jwk_t *found = NULL;

    for (size_t i = 0; i < ks->n; i++) {
        const jwk_t *k = &ks->keys[i];
        if (kid != NULL) {
            if (k->has_kid && strcmp(k->kid, kid) == 0)
                return k->alg == alg ? k : NULL;
        } else if (k->alg == alg) {
            if (found != NULL)
                return NULL;
            found = k;
        }
    }
    return found;
}

/* Converts a 64-byte ES256 signature r||s to DER into der (>= 72 bytes). Returns its length,
 * or 0 on failure. */
static size_t es256_der(const unsigned char *raw, unsigned char *der, size_t cap)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL), *s = BN_bin2bn(raw + 32, 32, NULL);
    unsigned char *p = der;
    int n = 0;

    if (sig == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(sig, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return 0;
    }
    if (i2d_ECDSA_SIG(sig, NULL) <= (int)cap)
        n = i2d_ECDSA_SIG(sig, &p);
    ECDSA_SIG_free(sig); /* frees r and s */
    return n > 0 ? (size_t)n : 0;
}

/* 1 when sig verifies over data with k, else 0. */
static int verify_sig(const jwk_t *k, const char *data, size_t dlen, const unsigned char *sig,
                      size_t slen)
{
    unsigned char der[80];
    EVP_MD_CTX *mctx;
    int ok = 0;

    if (k->alg == ALG_ES256) {
        if (slen != 64 || (slen = es256_der(sig, der, sizeof(der))) == 0)
            return 0;
        sig = der;
    }
    mctx = EVP_MD_CTX_new();
    if (mctx != NULL && EVP_DigestVerifyInit(mctx, NULL, EVP_sha256(), NULL, k->pkey) == 1)
        ok = EVP_DigestVerify(mctx, sig, slen, (const unsigned char *)data, dlen) == 1;
    EVP_MD_CTX_free(mctx);
    return ok;
}

/* Decodes segment s[0..len) as a JSON object. NULL when it is not one. */
static json_t *segment_json(const char *s, size_t len)
{
    unsigned char buf[RQ_JWT_MAX_LEN];
    size_t n;
    json_t *j;

    if (rq_b64url_decode(s, len, buf, sizeof(buf), &n) != 0)
        return NULL;
    j = json_loadb((const char *)buf, n, JSON_REJECT_DUPLICATES, NULL);
    if (j != NULL && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

/* Reads a NumericDate claim: 1 present (*v set), 0 absent, -1 not a number. */
static int time_claim(json_t *p, const char *name, int64_t *v)
{
    json_t *j = json_object_get(p, name);
    double d;

    if (j == NULL)
        return 0;
    if (json_is_integer(j)) {
        *v = (int64_t)json_integer_value(j);
        return 1;
    }
    if (!json_is_real(j))
        return -1;
    d = json_real_value(j);
    if (!isfinite(d))
        return -1;
    *v = d > 9e15 ? (int64_t)9e15 : d < -9e15 ? (int64_t)-9e15 : (int64_t)floor(d);
    return 1;
}

static int audience_ok(json_t *aud, const char *want)
{
    size_t i;
    json_t *v;

    if (json_is_string(aud))
        return strcmp(json_string_value(aud), want) == 0;
    if (!json_is_array(aud))
        return 0;
    json_array_foreach(aud, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), want) == 0)
            return 1;
    }
    return 0;
}

static int sub_char_ok(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '.' || ch == '@' || ch == ':' || ch == '-';
}

/* The subject as a principal id (the per-key rate bucket and the metric label): as it is when
 * it fits the alphabet and RQ_JWT_SUB_MAX, else its first 47 bytes (others as '_'), '~' and
 * 16 hex digits of its SHA-256, so that two subjects never share an id (and a bucket) by a
 * common beginning or by characters that became '_'; '~' is never in an unchanged one. */
static void sanitize_sub(json_t *p, char *out)
{
    static const char *const names[] = {"sub", "client_id", "azp"};
    const char *s = NULL;
    size_t n = 0, len;
    int plain;

    for (size_t i = 0; i < 3 && (s == NULL || s[0] == '\0'); i++)
        s = json_string_value(json_object_get(p, names[i]));
    if (s == NULL || s[0] == '\0')
        s = "jwt";
    len = strlen(s);
    plain = len <= RQ_JWT_SUB_MAX;
    for (size_t i = 0; plain && i < len; i++)
        plain = sub_char_ok(s[i]);
    if (plain) {
        memcpy(out, s, len + 1);
        return;
    }
    uint8_t d[RQ_SHA256_LEN];
    char hex[2 * RQ_SHA256_LEN + 1];
    for (; n < len && n < RQ_JWT_SUB_MAX - 17; n++)
        out[n] = sub_char_ok(s[n]) ? s[n] : '_';
    rq_sha256(s, len, d);
    rq_hex_encode(d, 8, hex);
    snprintf(out + n, RQ_JWT_SUB_MAX + 1 - n, "~%.16s", hex);
}

/* Appends piece s (n bytes) to the space-separated scopes in buf (pos bytes used). */
static void add_scope(char *buf, size_t *pos, const char *s, size_t n)
{
    if (n == 0 || *pos + n + 2 > RQ_JWT_SCOPES_MAX)
        return;
    if (*pos > 0)
        buf[(*pos)++] = ' ';
    memcpy(buf + *pos, s, n);
    *pos += n;
    buf[*pos] = '\0';
}

/* The scope claim as space-separated pieces: a new heap string ("" when absent). */
static char *scopes_of(json_t *p, const char *claim)
{
    json_t *v = json_object_get(p, claim != NULL && claim[0] != '\0' ? claim : "scope"), *e;
    char *buf = calloc(1, RQ_JWT_SCOPES_MAX);
    size_t pos = 0, i;

    if (buf == NULL)
        return NULL;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        while (*s != '\0') {
            size_t n = strcspn(s, " \t");
            add_scope(buf, &pos, s, n);
            s += n;
            s += strspn(s, " \t");
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, e)
        {
            const char *s = json_string_value(e);
            if (s != NULL && strpbrk(s, " \t") == NULL)
                add_scope(buf, &pos, s, strlen(s));
        }
    }
    return buf;
}

/* Checks the claims of a signed payload p and fills *out. */
static rq_jwt_result_t check_claims(json_t *p, const rq_jwt_policy_t *pol, int64_t now,
                                    rq_jwt_claims_t *out)
{
    int64_t exp = 0, nbf = 0, iat = 0, lw = pol->leeway_s > 0 ? pol->leeway_s : 0;
    int has_exp = time_claim(p, "exp", &exp), has_nbf = time_claim(p, "nbf", &nbf);
    int has_iat = time_claim(p, "iat", &iat);
    const char *iss = json_string_value(json_object_get(p, "iss"));

    if (has_exp <= 0 || has_nbf < 0 || has_iat < 0)
        return RQ_JWT_BAD_CLAIMS;
    if (lw > 86400)
        lw = 86400; /* with now a real time, now +/- lw cannot overflow; exp + lw could */
    if (now - lw >= exp)
        return RQ_JWT_EXPIRED;
    if (has_nbf && now + lw < nbf)
        return RQ_JWT_NOT_YET_VALID;
    if (has_iat && iat > now + lw)
        return RQ_JWT_BAD_IAT;
    if (iss == NULL || pol->issuer == NULL || strcmp(iss, pol->issuer) != 0)
        return RQ_JWT_WRONG_ISSUER;
    if (pol->audience == NULL || !audience_ok(json_object_get(p, "aud"), pol->audience))
        return RQ_JWT_WRONG_AUDIENCE;
    out->scopes = scopes_of(p, pol->scope_claim);
    if (out->scopes == NULL)
        return RQ_JWT_MALFORMED; /* out of memory: refuse */
    sanitize_sub(p, out->sub);
    out->exp = exp;
    return RQ_JWT_OK;
}

rq_jwt_result_t rq_jwt_verify(const rq_jwks_t *ks, const rq_jwt_policy_t *pol, const char *tok,
                              size_t len, int64_t now_s, rq_jwt_claims_t *out)
{
    const char *d1, *d2;
    json_t *hdr = NULL, *payload = NULL, *kid;
    unsigned char sig[1024];
    size_t slen;
    const jwk_t *k;
    rq_jwt_result_t r = RQ_JWT_MALFORMED;
    int alg;

    memset(out, 0, sizeof(*out));
    if (len > RQ_JWT_MAX_LEN)
        return RQ_JWT_OVERSIZED;
    d1 = memchr(tok, '.', len);
    d2 = d1 != NULL ? memchr(d1 + 1, '.', (size_t)(tok + len - d1 - 1)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', (size_t)(tok + len - d2 - 1)) != NULL)
        goto out;
    hdr = segment_json(tok, (size_t)(d1 - tok));
    if (hdr == NULL)
        goto out;
    alg = alg_of(json_string_value(json_object_get(hdr, "alg")));
    if (alg == 0 || json_object_get(hdr, "crit") != NULL) {
        r = RQ_JWT_UNSUPPORTED_ALG;
        goto out;
    }
    kid = json_object_get(hdr, "kid");
    if (kid != NULL && !json_is_string(kid))
        goto out;
    k = ks != NULL ? find_key(ks, alg, json_string_value(kid)) : NULL;
    if (k == NULL) {
        r = RQ_JWT_UNKNOWN_KEY;
        goto out;
    }
    if (rq_b64url_decode(d2 + 1, (size_t)(tok + len - d2 - 1), sig, sizeof(sig), &slen) != 0)
        goto out;
    if (!verify_sig(k, tok, (size_t)(d2 - tok), sig, slen)) {
        r = RQ_JWT_BAD_SIGNATURE;
        goto out;
    }
    payload = segment_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (payload == NULL)
        goto out;
    r = check_claims(payload, pol, now_s, out);
out:
    if (r != RQ_JWT_OK)
        rq_jwt_claims_clear(out);
    json_decref(payload);
    json_decref(hdr);
    return r;
}

void rq_jwt_claims_clear(rq_jwt_claims_t *out)
{
    free(out->scopes);
    memset(out, 0, sizeof(*out));
}
