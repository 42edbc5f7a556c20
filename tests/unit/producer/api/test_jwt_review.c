/* test_jwt_review.c - adversarial review of jwt.c, auth.c and the queue patterns: ECDSA
 * signatures with r or s out of range, far-future and huge time claims, a JWKS key with a
 * weak RSA exponent, pathological globs, API_KEYS separators, the bounded metric labels of
 * JWT subjects, reloads racing verifications, and the measured verification rate. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "jwt.h"
#include "jwt_test_util.h"

#define NOW 1700000000LL
#define ISS "https://idp.example"
#define AUD "relayq"

static const rq_jwt_policy_t pol = {ISS, AUD, "scope", 60};

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static rq_jwks_t *jwks_of(EVP_PKEY *k, const char *kid)
{
    char jwk[4096] = "", text[4200], err[200];
    rq_jwks_t *ks;

    tu_jwk(k, kid, NULL, jwk, sizeof(jwk));
    snprintf(text, sizeof(text), "{\"keys\":[%s]}", jwk);
    ks = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    cr_assert_not_null(ks, "%s", err);
    return ks;
}

/* Replaces the signature segment of tok with the base64url of raw[0..n). */
static void set_sig(char *tok, size_t cap, const unsigned char *raw, size_t n)
{
    char *dot = strrchr(tok, '.');
    char b[2048];

    tu_b64url(raw, n, b);
    snprintf(dot + 1, cap - (size_t)(dot + 1 - tok), "%s", b);
}

static rq_jwt_result_t verify_tok(const rq_jwks_t *ks, const char *tok)
{
    rq_jwt_claims_t cl;
    rq_jwt_result_t r = rq_jwt_verify(ks, &pol, tok, strlen(tok), NOW, &cl);

    rq_jwt_claims_clear(&cl);
    return r;
}

/* The P-256 group order n. */
static const unsigned char P256_N[32] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};

Test(jwt_review, es256_r_s_out_of_range_and_high_s)
{
    EVP_PKEY *ec = tu_ec_key();
    rq_jwks_t *ks = jwks_of(ec, "e1");
    char p[256], tok[4096];
    unsigned char raw[64], bad[64];
    size_t n;

    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld}", NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_assert_eq(verify_tok(ks, tok), RQ_JWT_OK);
    cr_assert_eq(rq_b64url_decode(strrchr(tok, '.') + 1, strlen(strrchr(tok, '.') + 1), raw,
                                  sizeof(raw), &n),
                 0);
    cr_assert_eq(n, 64);

    memset(bad, 0, 64); /* r = s = 0 */
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "r = s = 0");
    memcpy(bad, raw, 64);
    memset(bad, 0, 32); /* r = 0 */
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "r = 0");
    memcpy(bad, raw, 64);
    memset(bad + 32, 0, 32); /* s = 0 */
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "s = 0");
    memcpy(bad, P256_N, 32); /* r = n */
    memcpy(bad + 32, raw + 32, 32);
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "r = n");
    memcpy(bad, raw, 32); /* s = n */
    memcpy(bad + 32, P256_N, 32);
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "s = n");
    memset(bad, 0xFF, 64); /* r, s > n */
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "r, s = 2^256 - 1");
    /* a 65-byte r||s with a leading zero (non-canonical length), and a 63-byte one */
    bad[0] = 0;
    memcpy(bad + 1, raw, 63);
    unsigned char longer[65] = {0};
    memcpy(longer + 1, raw, 64);
    set_sig(tok, sizeof(tok), longer, 65);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "65 bytes");
    set_sig(tok, sizeof(tok), raw, 63);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_SIGNATURE, "63 bytes");

    /* high-S: (r, n - s) is the other valid signature of the same message (ECDSA is
     * malleable; JWS does not ask for low-S). It verifies: nothing here keys on the token's
     * bytes (no replay cache by signature), so this is not a weakness. */
    BIGNUM *bn_n = BN_bin2bn(P256_N, 32, NULL), *bs = BN_bin2bn(raw + 32, 32, NULL);
    BN_sub(bs, bn_n, bs);
    memcpy(bad, raw, 32);
    BN_bn2binpad(bs, bad + 32, 32);
    set_sig(tok, sizeof(tok), bad, 64);
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_OK, "(r, n - s) verifies, as ECDSA does");
    BN_free(bn_n);
    BN_free(bs);
    rq_jwks_free(ks);
    EVP_PKEY_free(ec);
}

Test(jwt_review, far_future_and_huge_time_claims)
{
    EVP_PKEY *ec = tu_ec_key();
    rq_jwks_t *ks = jwks_of(ec, "e1");
    char p[256], tok[4096];
    static const struct {
        const char *exp;
        rq_jwt_result_t want;
    } cases[] = {
        {"9223372036854775807", RQ_JWT_OK}, /* INT64_MAX: exp + leeway must not overflow */
        {"9223372036854775746", RQ_JWT_OK},
        {"-9223372036854775808", RQ_JWT_EXPIRED},
        {"1e300", RQ_JWT_OK},
        {"-1e300", RQ_JWT_EXPIRED},
        {"1700000000.5", RQ_JWT_EXPIRED}, /* NOW + 0.5 is within... no: now >= exp - lw? */
        {"\"1800000000\"", RQ_JWT_BAD_CLAIMS},
        {"true", RQ_JWT_BAD_CLAIMS},
        {"null", RQ_JWT_BAD_CLAIMS},
        {"[1800000000]", RQ_JWT_BAD_CLAIMS},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rq_jwt_result_t want = cases[i].want;
        if (strcmp(cases[i].exp, "1700000000.5") == 0)
            want = RQ_JWT_OK; /* within the 60 s leeway */
        snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%s}",
                 cases[i].exp);
        tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
        cr_expect_eq(verify_tok(ks, tok), want, "exp %s: %d, want %d", cases[i].exp,
                     verify_tok(ks, tok), want);
    }
    /* nbf far in the future or INT64_MAX, and iat INT64_MAX: refused without overflow */
    snprintf(p, sizeof(p),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"nbf\":9223372036854775807}",
             NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_NOT_YET_VALID);
    snprintf(p, sizeof(p),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"iat\":9223372036854775807}",
             NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_BAD_IAT);
    /* iss with an escaped NUL, aud array of non-strings, duplicate claim */
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\\u0000x\",\"aud\":\"" AUD "\",\"exp\":%lld}",
             NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_neq(verify_tok(ks, tok), RQ_JWT_OK, "iss with \\u0000");
    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":[1,null,{},[\"" AUD "\"]],\"exp\":%lld}",
             NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_WRONG_AUDIENCE);
    snprintf(p, sizeof(p),
             "{\"iss\":\"https://evil\",\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld}",
             NOW + 300);
    tu_sign(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_MALFORMED, "duplicate iss");
    /* duplicate alg in the header: {"alg":"none","alg":"ES256"} */
    tu_sign(ec, "{\"alg\":\"none\",\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_expect_eq(verify_tok(ks, tok), RQ_JWT_MALFORMED, "duplicate alg");
    rq_jwks_free(ks);
    EVP_PKEY_free(ec);
}

/* PKCS#1 v1.5 encoding of SHA-256(msg) for a k-byte modulus: 00 01 FF.. 00 DigestInfo H. */
static void pkcs1_em(const char *msg, unsigned char *em, size_t k)
{
    static const unsigned char di[19] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                         0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    unsigned char h[32];
    unsigned hl = 0;

    EVP_Digest(msg, strlen(msg), h, &hl, EVP_sha256(), NULL);
    memset(em, 0xFF, k);
    em[0] = 0x00;
    em[1] = 0x01;
    em[k - 52] = 0x00;
    memcpy(em + k - 51, di, sizeof(di));
    memcpy(em + k - 32, h, 32);
}

Test(jwt_review, rsa_key_with_exponent_1_is_refused)
{
    EVP_PKEY *rsa = tu_rsa_key();
    char n[1500], text[2000], err[200], h[200], pl[400], si[700], tok[2600];
    unsigned char em[256];
    rq_jwks_t *ks;

    tu_bn_param(rsa, OSSL_PKEY_PARAM_RSA_N, 0, n);
    /* e = 1: any "signature" equal to the padded digest verifies (s^1 mod n = s) */
    snprintf(text, sizeof(text),
             "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"w\",\"n\":\"%s\",\"e\":\"AQ\"}]}", n);
    ks = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    if (ks != NULL) {
        tu_b64url_str("{\"alg\":\"RS256\",\"kid\":\"w\"}", h);
        char claims[300];
        snprintf(claims, sizeof(claims),
                 "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"exp\":%lld,\"scope\":\"*\"}",
                 NOW + 300);
        tu_b64url_str(claims, pl);
        snprintf(si, sizeof(si), "%s.%s", h, pl);
        pkcs1_em(si, em, sizeof(em));
        char sig[400];
        tu_b64url(em, sizeof(em), sig);
        snprintf(tok, sizeof(tok), "%s.%s", si, sig);
        rq_jwt_result_t r = verify_tok(ks, tok);
        rq_jwks_free(ks);
        cr_assert_fail("a JWKS key with e = 1 was accepted: a token forged without the private key "
                       "gives %d (%s)",
                       r, rq_jwt_strerror(r));
    }
    cr_expect(strstr(err, "exponent") != NULL, "%s", err);
    /* an even exponent */
    snprintf(text, sizeof(text), "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AAE\"}]}", n);
    ks = rq_jwks_parse(text, strlen(text), err, sizeof(err));
    cr_expect_null(ks, "e = 256 (even)");
    rq_jwks_free(ks);
    EVP_PKEY_free(rsa);
}

Test(jwt_review, pathological_globs_stay_linear)
{
    char name[201], pat[201];
    double t0;

    memset(name, 'a', 200);
    name[200] = '\0';
    /* *a*a*a...*b (100 stars) against 200 'a': exponential with naive recursion */
    for (int i = 0; i < 99; i++) {
        pat[2 * i] = '*';
        pat[2 * i + 1] = 'a';
    }
    pat[198] = '*';
    pat[199] = 'b';
    pat[200] = '\0';
    t0 = mono_s();
    for (int i = 0; i < 1000; i++)
        cr_assert_not(rq_qpattern_match(pat, name));
    cr_expect_lt(mono_s() - t0, 2.0, "1000 matches took %.3f s", mono_s() - t0);
    /* the glob still means what it says */
    cr_expect(rq_qpattern_match("*a*b", "xxaxxb"));
    cr_expect(rq_qpattern_match("a*a*a", "aaa"));
    cr_expect_not(rq_qpattern_match("a*a*a", "aa"));
    cr_expect(rq_qpattern_match("*.eu", "orders.x.eu"));
    cr_expect_not(rq_qpattern_match("orders.*", "orders"));
    cr_expect(rq_qpattern_match("**", ""));
}

Test(jwt_review, api_keys_separators)
{
    rq_auth_error_t err;
    rq_keyset_t *ks;

    /* "admin" as a key id after a key with scopes reads as a queue permission of that key
     * (documented: the id is reserved); a base64 secret then fails the pattern check, and
     * the error must not print it */
    ks = rq_keyset_parse_list(NULL, "a:AAAAAAAAAAAAAAAA1:produce,admin:abc+def/ghijklmnop==", &err);
    cr_expect_null(ks);
    rq_keyset_free(ks);
    cr_expect(strstr(err.text, "ghijklmnop") == NULL, "the error echoes a secret: %s", err.text);
    ks = rq_keyset_parse_text("a:AAAAAAAAAAAAAAAA1:produce,consume:abc+def/ghijklmnop==\n", 57,
                              "keys.txt", &err);
    cr_expect_null(ks);
    rq_keyset_free(ks);
    cr_expect(strstr(err.text, "ghijklmnop") == NULL, "the error echoes a secret: %s", err.text);
    /* two keys on one line of a key file: the second reads as a scope piece */
    ks = rq_keyset_parse_text("a:AAAAAAAAAAAAAAAA1:produce,b:BBBBBBBBBBBBBBBB2\n", 48, "keys.txt",
                              &err);
    cr_expect_null(ks);
    rq_keyset_free(ks);
    cr_expect(strstr(err.text, "BBBBBBBB") == NULL, "the error echoes a secret: %s", err.text);
    /* short pieces are still named */
    ks = rq_keyset_parse_text("a:AAAAAAAAAAAAAAAA1:produce,bogus\n", 34, "keys.txt", &err);
    cr_expect(ks == NULL && strstr(err.text, "\"bogus\"") != NULL, "%s", err.text);
    rq_keyset_free(ks);
    /* a secret can hold neither ',' nor ':' */
    ks = rq_keyset_parse_list(NULL, "a:AAAAAAAAAAAAAAAAAAAA,AAAAAAAAAAAAAAAAAAAAAA", &err);
    cr_expect_null(ks);
    cr_expect(strstr(err.text, "AAAAAAAAAAAAAAAAAAAAAA") == NULL, "echoes a secret: %s", err.text);
    rq_keyset_free(ks);
    ks = rq_keyset_parse_list(NULL, "a:AAAAAAAAAAAAAAAAAAAA,", &err);
    cr_expect_null(ks, "a trailing comma");
    rq_keyset_free(ks);
    ks = rq_keyset_parse_list(NULL, "a:AAAAAAAAAAAAAAAAAAAA,produce", &err);
    cr_expect_null(ks, "a scope after a key without a scope list is ambiguous");
    rq_keyset_free(ks);
}

/* ---- metric labels of JWT subjects ---- */

static void write_jwks(const char *path, EVP_PKEY *k, const char *kid)
{
    char jwk[4096] = "";
    FILE *f = fopen(path, "w");

    cr_assert_not_null(f);
    tu_jwk(k, kid, NULL, jwk, sizeof(jwk));
    fprintf(f, "{\"keys\":[%s]}", jwk);
    fclose(f);
}

static void sub_token(EVP_PKEY *k, const char *kid, const char *sub, char *hdr, size_t cap)
{
    char p[400], h[100], tok[4096];

    snprintf(h, sizeof(h), "{\"alg\":\"%s\",\"kid\":\"%s\"}",
             EVP_PKEY_is_a(k, "EC") ? "ES256" : "RS256", kid);
    snprintf(p, sizeof(p),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"%s\",\"exp\":%lld,"
             "\"scope\":\"produce\"}",
             sub, (long long)time(NULL) + 300);
    tu_sign(k, h, p, tok, sizeof(tok));
    snprintf(hdr, cap, "Bearer %s", tok);
}

Test(jwt_review, jwt_subjects_get_bounded_metric_labels)
{
    char path[] = "/tmp/rq-test-jwks-r1-XXXXXX", hdr[4200], sub[40];
    int fd = mkstemp(path);
    EVP_PKEY *ec = tu_ec_key();
    rq_auth_jwt_opts_t o = {path, ISS, AUD, NULL, 60};
    rq_auth_error_t err;
    rq_principal_t p;
    rq_auth_t *a;
    size_t own = 0;

    cr_assert(fd >= 0);
    close(fd);
    write_jwks(path, ec, "e1");
    a = rq_auth_new_jwt(NULL, "ops:AAAAAAAAAAAAAAAAAAAA", &o, &err);
    cr_assert_not_null(a, "%s", err.text);
    for (int i = 0; i < RQ_AUTH_JWT_LABELS_MAX + 50; i++) {
        snprintf(sub, sizeof(sub), "user-%d", i);
        sub_token(ec, "e1", sub, hdr, sizeof(hdr));
        cr_assert_eq(rq_auth_identify(a, hdr, &p), RQ_AUTH_OK);
        const char *label = rq_auth_metric_label(a, &p);
        cr_assert_not_null(label);
        if (strcmp(label, sub) == 0)
            own++;
        else
            cr_expect_str_eq(label, RQ_AUTH_JWT_LABEL_OTHER);
        rq_principal_clear(&p);
    }
    cr_expect_eq(own, RQ_AUTH_JWT_LABELS_MAX, "%zu subjects kept their own label", own);
    /* a subject seen early keeps its label; API keys always keep theirs */
    sub_token(ec, "e1", "user-3", hdr, sizeof(hdr));
    cr_assert_eq(rq_auth_identify(a, hdr, &p), RQ_AUTH_OK);
    cr_expect_str_eq(rq_auth_metric_label(a, &p), "user-3");
    rq_principal_clear(&p);
    cr_assert_eq(rq_auth_identify(a, "Bearer AAAAAAAAAAAAAAAAAAAA", &p), RQ_AUTH_OK);
    cr_expect_str_eq(rq_auth_metric_label(a, &p), "ops");
    rq_principal_clear(&p);
    rq_auth_free(a);
    unlink(path);
    EVP_PKEY_free(ec);
}

/* ---- reloads racing verifications ---- */

typedef struct race {
    rq_auth_t *a;
    const char *hdr;
    atomic_int stop;
    atomic_long ok, bad;
} race_t;

static void *verifier(void *arg)
{
    race_t *r = arg;
    rq_principal_t p;

    while (!atomic_load(&r->stop)) {
        if (rq_auth_identify(r->a, r->hdr, &p) == RQ_AUTH_OK &&
            rq_principal_allows(&p, RQ_SCOPE_PRODUCE))
            atomic_fetch_add(&r->ok, 1);
        else
            atomic_fetch_add(&r->bad, 1);
        rq_principal_clear(&p);
    }
    return NULL;
}

Test(jwt_review, reload_races_verification_and_broken_jwks_keeps_old, .timeout = 30)
{
    char path[] = "/tmp/rq-test-jwks-r1-XXXXXX", hdr[4200];
    int fd = mkstemp(path);
    EVP_PKEY *ec = tu_ec_key();
    rq_auth_jwt_opts_t o = {path, ISS, AUD, NULL, 60};
    rq_auth_error_t err;
    pthread_t th[2];
    race_t r = {0};
    double t0;
    int reloads = 0, failed = 0;

    cr_assert(fd >= 0);
    close(fd);
    write_jwks(path, ec, "e1");
    r.a = rq_auth_new_jwt(NULL, NULL, &o, &err);
    cr_assert_not_null(r.a, "%s", err.text);
    sub_token(ec, "e1", "svc", hdr, sizeof(hdr));
    r.hdr = hdr;
    for (int i = 0; i < 2; i++)
        pthread_create(&th[i], NULL, verifier, &r);
    t0 = mono_s();
    while (mono_s() - t0 < 0.5) {
        FILE *f = fopen(path, "w");
        if (reloads % 2)
            fputs("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}", f); /* broken */
        else
            fclose(f), write_jwks(path, ec, "e1"), f = NULL;
        if (f != NULL)
            fclose(f);
        failed += rq_auth_reload(r.a, &err) < 0;
        reloads++;
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    cr_expect_eq(atomic_load(&r.bad), 0, "%ld refusals during %d reloads (%d failed)",
                 atomic_load(&r.bad), reloads, failed);
    cr_expect_gt(atomic_load(&r.ok), 0);
    cr_expect_eq(failed, reloads / 2, "every broken JWKS refused, every good one taken");
    rq_auth_free(r.a);
    unlink(path);
    EVP_PKEY_free(ec);
}

/* ---- cost of a token ---- */

/* ---- subjects: the principal id keys the per-key rate bucket and the metric label ---- */

static void sub_of(EVP_PKEY *k, rq_jwks_t *ks, const char *sub, char *out)
{
    char p[600], tok[4096];
    rq_jwt_claims_t cl;

    snprintf(p, sizeof(p), "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"%s\",\"exp\":%lld}",
             sub, NOW + 300);
    tu_sign(k, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", p, tok, sizeof(tok));
    cr_assert_eq(rq_jwt_verify(ks, &pol, tok, strlen(tok), NOW, &cl), RQ_JWT_OK);
    snprintf(out, RQ_JWT_SUB_MAX + 1, "%s", cl.sub);
    rq_jwt_claims_clear(&cl);
}

Test(jwt_review, distinct_subjects_stay_distinct)
{
    EVP_PKEY *ec = tu_ec_key();
    rq_jwks_t *ks = jwks_of(ec, "e1");
    char a[RQ_JWT_SUB_MAX + 1], b[RQ_JWT_SUB_MAX + 1];
    static const char *const pairs[][2] = {
        /* a long common beginning (URL-style subjects), cut at 64 bytes */
        {"https://idp.example/tenants/0000-1111-2222/users/alice-smith-0001",
         "https://idp.example/tenants/0000-1111-2222/users/alice-smith-0002"},
        /* characters outside the label alphabet all become '_' */
        {"auth0|1234", "auth0 1234"},
        {"auth0|1234", "auth0_1234"},
    };

    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        sub_of(ec, ks, pairs[i][0], a);
        sub_of(ec, ks, pairs[i][1], b);
        cr_expect_str_neq(a, b, "subjects '%s' and '%s' both become '%s'", pairs[i][0], pairs[i][1],
                          a);
        cr_expect_leq(strlen(a), RQ_JWT_SUB_MAX);
    }
    sub_of(ec, ks, "svc-1", a); /* a plain subject stays as it is */
    cr_expect_str_eq(a, "svc-1");
    sub_of(ec, ks, "alice@example.com", a);
    cr_expect_str_eq(a, "alice@example.com");
    rq_jwks_free(ks);
    EVP_PKEY_free(ec);
}
