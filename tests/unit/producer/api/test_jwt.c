/* test_jwt.c - JWKS parsing and JWT verification: tokens signed in the test with keys made
 * in-process (RS256, ES256), every claim check with and without the leeway, the attacks
 * (alg none, HS256 keyed with the RSA public key, tampering), malformed and oversized input. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jwt.h"
#include "jwt_test_util.h"

#define NOW 1700000000LL
#define ISS "https://idp.example"
#define AUD "relayq"

static EVP_PKEY *rsa, *ec, *other;
static rq_jwks_t *ks;
static const rq_jwt_policy_t pol = {ISS, AUD, "scope", 60};

static void setup(void)
{
    char jwks[8192] = "";
    char err[200];

    rsa = tu_rsa_key();
    ec = tu_ec_key();
    other = tu_rsa_key();
    cr_assert(rsa != NULL && ec != NULL && other != NULL);
    tu_jwk(rsa, "r1", "RS256", jwks, sizeof(jwks));
    tu_jwk(ec, "e1", NULL, jwks, sizeof(jwks));
    char text[9000];
    snprintf(text, sizeof(text), "{\"keys\":[%s]}", jwks);
    ks = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    cr_assert_not_null(ks, "%s", err);
    cr_assert_eq(rq_jwks_count(ks), 2);
}

static void teardown(void)
{
    rq_jwks_free(ks);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(other);
}

/* A payload with the given exp offset and extra members. */
static void claims(char *buf, size_t len, long long exp_off, const char *extra)
{
    snprintf(buf, len, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"svc-1\",\"exp\":%lld%s}",
             NOW + exp_off, extra);
}

static rq_jwt_result_t verify(const char *tok, rq_jwt_claims_t *cl)
{
    return rq_jwt_verify(ks, &pol, tok, strlen(tok), NOW, cl);
}

static rq_jwt_result_t verify_signed(EVP_PKEY *k, const char *hdr, const char *payload)
{
    char tok[12000];
    rq_jwt_claims_t cl;
    rq_jwt_result_t r;

    tu_sign(k, hdr, payload, tok, sizeof(tok));
    r = verify(tok, &cl);
    rq_jwt_claims_clear(&cl);
    return r;
}

#define RS "{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"JWT\"}"
#define ES "{\"alg\":\"ES256\",\"kid\":\"e1\"}"

TestSuite(jwt, .init = setup, .fini = teardown);

Test(jwt, good_rs256_and_es256_give_sub_and_scopes)
{
    char p[512], tok[12000];
    rq_jwt_claims_t cl;

    claims(p, sizeof(p), 300, ",\"scope\":\"openid  produce:orders.* consume:orders.eu\"");
    tu_sign(rsa, RS, p, tok, sizeof(tok));
    cr_assert_eq(verify(tok, &cl), RQ_JWT_OK);
    cr_expect_str_eq(cl.sub, "svc-1");
    cr_expect_str_eq(cl.scopes, "openid produce:orders.* consume:orders.eu");
    cr_expect_eq(cl.exp, NOW + 300);
    rq_jwt_claims_clear(&cl);
    cr_expect_null(cl.scopes);

    tu_sign(ec, ES, p, tok, sizeof(tok));
    cr_assert_eq(verify(tok, &cl), RQ_JWT_OK);
    cr_expect_str_eq(cl.scopes, "openid produce:orders.* consume:orders.eu");
    rq_jwt_claims_clear(&cl);
    /* without a kid: the only key of the alg's type */
    cr_expect_eq(verify_signed(ec, "{\"alg\":\"ES256\"}", p), RQ_JWT_OK);
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS256\"}", p), RQ_JWT_OK);
}

Test(jwt, roles_array_claim)
{
    char p[512], tok[12000];
    rq_jwt_claims_t cl;
    rq_jwt_policy_t roles = {ISS, AUD, "roles", 60};

    claims(p, sizeof(p), 300, ",\"roles\":[\"admin:*\",\"has space\",7,\"consume:a\"]");
    tu_sign(rsa, RS, p, tok, sizeof(tok));
    cr_assert_eq(rq_jwt_verify(ks, &roles, tok, strlen(tok), NOW, &cl), RQ_JWT_OK);
    cr_expect_str_eq(cl.scopes, "admin:* consume:a");
    rq_jwt_claims_clear(&cl);
    /* no such claim: no permissions, still a valid token */
    cr_assert_eq(verify(tok, &cl), RQ_JWT_OK);
    cr_expect_str_eq(cl.scopes, "");
    rq_jwt_claims_clear(&cl);
}

Test(jwt, time_checks_with_leeway)
{
    char p[512];

    claims(p, sizeof(p), -61, "");
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_EXPIRED);
    claims(p, sizeof(p), -60, "");
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_EXPIRED, "exp + leeway is already expired");
    claims(p, sizeof(p), -59, "");
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_OK, "expired within the leeway");
    char extra[100];
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld", NOW + 61);
    claims(p, sizeof(p), 300, extra);
    cr_expect_eq(verify_signed(ec, ES, p), RQ_JWT_NOT_YET_VALID);
    snprintf(extra, sizeof(extra), ",\"nbf\":%lld,\"iat\":%lld", NOW + 60, NOW + 60);
    claims(p, sizeof(p), 300, extra);
    cr_expect_eq(verify_signed(ec, ES, p), RQ_JWT_OK, "nbf and iat within the leeway");
    snprintf(extra, sizeof(extra), ",\"iat\":%lld", NOW + 3600);
    claims(p, sizeof(p), 7200, extra);
    cr_expect_eq(verify_signed(ec, ES, p), RQ_JWT_BAD_IAT);
    snprintf(extra, sizeof(extra), ",\"iat\":%lld.5", NOW - 10);
    claims(p, sizeof(p), 300, extra);
    cr_expect_eq(verify_signed(ec, ES, p), RQ_JWT_OK, "a fractional NumericDate");
    claims(p, sizeof(p), 300, ",\"nbf\":\"soon\"");
    cr_expect_eq(verify_signed(ec, ES, p), RQ_JWT_BAD_CLAIMS);
    cr_expect_eq(verify_signed(ec, ES, "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\"}"),
                 RQ_JWT_BAD_CLAIMS, "exp is required");
}

Test(jwt, issuer_and_audience)
{
    char p[512];

    snprintf(p, sizeof(p), "{\"iss\":\"https://evil\",\"aud\":\"" AUD "\",\"exp\":%lld}", NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_WRONG_ISSUER);
    snprintf(p, sizeof(p), "{\"aud\":\"" AUD "\",\"exp\":%lld}", NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_WRONG_ISSUER, "iss missing");
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":\"other\",\"exp\":%lld}", NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_WRONG_AUDIENCE);
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"exp\":%lld}", NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_WRONG_AUDIENCE, "aud missing");
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":[\"x\",\"" AUD "\"],\"exp\":%lld}",
             NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_OK, "aud array holding it");
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":[\"x\",\"relayq2\"],\"exp\":%lld}",
             NOW + 60);
    cr_expect_eq(verify_signed(rsa, RS, p), RQ_JWT_WRONG_AUDIENCE);
}

Test(jwt, signatures_keys_and_tampering)
{
    char p[512], tok[12000], tampered[12000], evil[512];
    rq_jwt_claims_t cl;

    claims(p, sizeof(p), 300, ",\"scope\":\"consume:a\"");
    cr_expect_eq(verify_signed(other, RS, p), RQ_JWT_BAD_SIGNATURE, "signed by another key");
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS256\",\"kid\":\"nope\"}", p), RQ_JWT_UNKNOWN_KEY);
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS256\",\"kid\":\"e1\"}", p), RQ_JWT_UNKNOWN_KEY,
                 "kid of an EC key with alg RS256");
    cr_expect_eq(verify_signed(ec, "{\"alg\":\"ES256\",\"kid\":\"r1\"}", p), RQ_JWT_UNKNOWN_KEY);
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS256\",\"kid\":7}", p), RQ_JWT_MALFORMED);

    /* payload swapped for one granting more, signature kept */
    tu_sign(rsa, RS, p, tok, sizeof(tok));
    claims(evil, sizeof(evil), 300, ",\"scope\":\"*\"");
    char eh[2048];
    tu_b64url_str(evil, eh);
    const char *d1 = strchr(tok, '.'), *d2 = strchr(d1 + 1, '.');
    snprintf(tampered, sizeof(tampered), "%.*s.%s%s", (int)(d1 - tok), tok, eh, d2);
    cr_expect_eq(verify(tampered, &cl), RQ_JWT_BAD_SIGNATURE);
    /* one signature bit flipped */
    snprintf(tampered, sizeof(tampered), "%s", tok);
    char *last = tampered + strlen(tampered) - 2;
    *last = *last == 'A' ? 'B' : 'A';
    cr_expect_eq(verify(tampered, &cl), RQ_JWT_BAD_SIGNATURE);
    /* ES256 with a DER signature instead of r||s, or a short one */
    tu_sign(ec, ES, p, tok, sizeof(tok));
    snprintf(tampered, sizeof(tampered), "%.*sAAAA", (int)(strrchr(tok, '.') - tok + 1), tok);
    cr_expect_eq(verify(tampered, &cl), RQ_JWT_BAD_SIGNATURE);
    /* no key set */
    cr_expect_eq(rq_jwt_verify(NULL, &pol, tok, strlen(tok), NOW, &cl), RQ_JWT_UNKNOWN_KEY);
}

Test(jwt, alg_none_hs256_confusion_and_others_refused)
{
    char p[512], tok[12000], h[256], pb[1024];
    rq_jwt_claims_t cl;
    unsigned char pem[4096];
    BIO *bio = BIO_new(BIO_s_mem());
    size_t pemlen;

    claims(p, sizeof(p), 300, ",\"scope\":\"*\"");
    tu_b64url_str("{\"alg\":\"none\"}", h);
    tu_b64url_str(p, pb);
    snprintf(tok, sizeof(tok), "%s.%s.", h, pb);
    cr_expect_eq(verify(tok, &cl), RQ_JWT_UNSUPPORTED_ALG, "alg none, empty signature");
    tu_b64url_str("{\"alg\":\"None\",\"kid\":\"r1\"}", h);
    snprintf(tok, sizeof(tok), "%s.%s.", h, pb);
    cr_expect_eq(verify(tok, &cl), RQ_JWT_UNSUPPORTED_ALG);

    /* HS256 keyed with the RSA public key (PEM and DER), the classic confusion */
    PEM_write_bio_PUBKEY(bio, rsa);
    pemlen = (size_t)BIO_read(bio, pem, sizeof(pem));
    BIO_free(bio);
    tu_sign_hs256(pem, pemlen, "{\"alg\":\"HS256\",\"kid\":\"r1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify(tok, &cl), RQ_JWT_UNSUPPORTED_ALG);
    tu_sign_hs256(pem, pemlen, "{\"alg\":\"HS256\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify(tok, &cl), RQ_JWT_UNSUPPORTED_ALG);

    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"PS256\",\"kid\":\"r1\"}", p),
                 RQ_JWT_UNSUPPORTED_ALG);
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS512\",\"kid\":\"r1\"}", p),
                 RQ_JWT_UNSUPPORTED_ALG);
    cr_expect_eq(verify_signed(rsa, "{\"kid\":\"r1\"}", p), RQ_JWT_UNSUPPORTED_ALG, "no alg");
    cr_expect_eq(verify_signed(rsa, "{\"alg\":\"RS256\",\"kid\":\"r1\",\"crit\":[\"exp\"]}", p),
                 RQ_JWT_UNSUPPORTED_ALG, "crit");
}

Test(jwt, malformed_and_oversized)
{
    static const char *const bad[] = {
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "eyJ.eyJ.",
        "!!!.eyJ.sig",
        "eyJhbGciOiJSUzI1NiJ9.e30",                         /* two segments */
        "W10.e30.AAAA",                                     /* header [] */
        "eyJhbGciOiJSUzI1NiJ9=.e30.AAAA",                   /* padding */
        "eyJhbGciOiJSUzI1NiJ9.e30.A",                       /* length 1 mod 4 */
        "eyJhbGciOiJSUzI1NiIsImFsZyI6IlJTMjU2In0.e30.AAAA", /* duplicate alg */
    };
    rq_jwt_claims_t cl;
    char *big;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rq_jwt_result_t r = verify(bad[i], &cl);
        cr_expect(r == RQ_JWT_MALFORMED || r == RQ_JWT_UNKNOWN_KEY || r == RQ_JWT_BAD_SIGNATURE,
                  "case %zu: %d", i, r);
        cr_expect_neq(r, RQ_JWT_OK);
        cr_expect_null(cl.scopes);
    }
    /* a header that is valid base64url but not JSON */
    char h[64], tok[200];
    tu_b64url_str("{\"alg\":", h);
    snprintf(tok, sizeof(tok), "%s.e30.AAAA", h);
    cr_expect_eq(verify(tok, &cl), RQ_JWT_MALFORMED);
    /* a signed payload that is not JSON */
    cr_expect_eq(verify_signed(rsa, RS, "not json"), RQ_JWT_MALFORMED);
    cr_expect_eq(verify_signed(rsa, RS, "[1]"), RQ_JWT_MALFORMED);

    big = malloc(RQ_JWT_MAX_LEN + 2);
    memset(big, 'A', RQ_JWT_MAX_LEN + 1);
    memcpy(big, "eyJ.", 4);
    big[100] = '.';
    big[RQ_JWT_MAX_LEN + 1] = '\0';
    cr_expect_eq(verify(big, &cl), RQ_JWT_OVERSIZED);
    free(big);
}

Test(jwt, base64url)
{
    unsigned char out[16];
    size_t n;

    cr_expect_eq(rq_b64url_decode("TWFu", 4, out, sizeof(out), &n), 0);
    cr_expect(n == 3 && memcmp(out, "Man", 3) == 0);
    cr_expect_eq(rq_b64url_decode("TWE", 3, out, sizeof(out), &n), 0);
    cr_expect(n == 2 && memcmp(out, "Ma", 2) == 0);
    cr_expect_eq(rq_b64url_decode("TWF", 3, out, sizeof(out), &n), -1, "non-zero trailing bits");
    cr_expect_eq(rq_b64url_decode("TQ", 2, out, sizeof(out), &n), 0);
    cr_expect_eq(rq_b64url_decode("TR", 2, out, sizeof(out), &n), -1);
    cr_expect_eq(rq_b64url_decode("T+8/", 4, out, sizeof(out), &n), -1, "base64, not url");
    cr_expect_eq(rq_b64url_decode("-_8", 3, out, sizeof(out), &n), 0);
    cr_expect_eq(rq_b64url_decode("TWFuTWFu", 8, out, 5, &n), -1, "overflow");
    cr_expect_eq(rq_b64url_decode("", 0, out, sizeof(out), &n), 0);
    cr_expect_eq(n, 0);
}

Test(jwt, jwks_parsing)
{
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"", "not a JWKS"},
        {"[]", "not a JWKS"},
        {"{\"keys\":{}}", "not a JWKS"},
        {"{\"keys\":[]}", "no usable key"},
        {"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", "no usable key"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
         "no usable key"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", "2048 to 8192"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "bad n or e"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}]}", "32 bytes"},
        {"{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":"
         "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\",\"y\":"
         "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE\"}]}",
         "not a valid public key"}, /* (0, 1) is not on the curve */
        {"{\"keys\":[1]}", "without kty"},
        {"{\"keys\":[{\"kty\":\"RSA\",\"alg\":\"ES256\"}]}", "alg ES256"},
    };
    char err[200], jwks[8192] = "", text[9000];
    rq_jwks_t *k;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        k = rq_jwks_parse(bad[i].text, strlen(bad[i].text), err, sizeof(err));
        cr_expect_null(k, "case %zu accepted", i);
        rq_jwks_free(k);
        cr_expect(strstr(err, bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, err,
                  bad[i].needle);
    }
    /* skipped keys: use enc, alg HS256, oct; a duplicate kid is an error */
    tu_jwk(rsa, "a", NULL, jwks, sizeof(jwks));
    snprintf(text, sizeof(text),
             "{\"keys\":[%s,{\"kty\":\"oct\",\"k\":\"AA\"},{\"kty\":\"RSA\",\"use\":\"enc\"},"
             "{\"kty\":\"RSA\",\"alg\":\"HS256\"}]}",
             jwks);
    k = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    cr_expect_eq(rq_jwks_count(k), 1);
    rq_jwks_free(k);
    tu_jwk(ec, "a", NULL, jwks, sizeof(jwks));
    snprintf(text, sizeof(text), "{\"keys\":[%s]}", jwks);
    cr_expect_null(rq_jwks_parse(text, strlen(text), err, sizeof(err)));
    cr_expect(strstr(err, "kid a is listed twice") != NULL, "%s", err);
    /* without kid and with two RSA keys: a kid-less token is refused (one verification) */
    jwks[0] = '\0';
    tu_jwk(rsa, NULL, NULL, jwks, sizeof(jwks));
    tu_jwk(other, NULL, NULL, jwks, sizeof(jwks));
    snprintf(text, sizeof(text), "{\"keys\":[%s]}", jwks);
    k = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    cr_assert_not_null(k, "%s", err);
    char p[512], tok[12000];
    rq_jwt_claims_t cl;
    claims(p, sizeof(p), 300, "");
    tu_sign(rsa, "{\"alg\":\"RS256\"}", p, tok, sizeof(tok));
    cr_expect_eq(rq_jwt_verify(k, &pol, tok, strlen(tok), NOW, &cl), RQ_JWT_UNKNOWN_KEY);
    rq_jwks_free(k);
    /* too many keys, too large */
    char *many = malloc(RQ_JWKS_FILE_MAX + 2);
    size_t pos = (size_t)sprintf(many, "{\"keys\":[");
    for (int i = 0; i <= RQ_JWKS_MAX_KEYS; i++)
        pos += (size_t)sprintf(many + pos, "%s{\"kty\":\"oct\"}", i ? "," : "");
    sprintf(many + pos, "]}");
    cr_expect_null(rq_jwks_parse(many, strlen(many), err, sizeof(err)));
    cr_expect(strstr(err, "more than") != NULL, "%s", err);
    memset(many, ' ', RQ_JWKS_FILE_MAX + 1);
    cr_expect_null(rq_jwks_parse(many, RQ_JWKS_FILE_MAX + 1, err, sizeof(err)));
    cr_expect(strstr(err, "larger than") != NULL, "%s", err);
    free(many);
}

Test(jwt, subject_is_sanitized_and_looks_like)
{
    char p[512], tok[12000];
    rq_jwt_claims_t cl;

    snprintf(p, sizeof(p),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"sub\":\"a b\\\"c/"
             "0123456789012345678901234567890123456789012345678901234567890123456789\"}",
             NOW + 60);
    tu_sign(rsa, RS, p, tok, sizeof(tok));
    cr_assert_eq(verify(tok, &cl), RQ_JWT_OK);
    cr_expect_eq(strlen(cl.sub), RQ_JWT_SUB_MAX);
    cr_expect(strncmp(cl.sub, "a_b_c_0123", 10) == 0, "%s", cl.sub);
    rq_jwt_claims_clear(&cl);
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"azp\":\"cli\"}",
             NOW + 60);
    tu_sign(ec, ES, p, tok, sizeof(tok));
    cr_assert_eq(verify(tok, &cl), RQ_JWT_OK);
    cr_expect_str_eq(cl.sub, "cli");
    rq_jwt_claims_clear(&cl);
    cr_expect(rq_jwt_looks_like(tok, strlen(tok)));
    cr_expect_not(rq_jwt_looks_like("alpha-secret-0123456789", 23));
    cr_expect_not(rq_jwt_looks_like("eyJa.b", 6));
    cr_expect_str_eq(rq_jwt_strerror(RQ_JWT_EXPIRED), "token expired");
}
