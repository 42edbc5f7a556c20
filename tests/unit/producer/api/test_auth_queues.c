/* test_auth_queues.c - per-queue permissions: the pattern glob, the key syntax in a file and
 * in API_KEYS, principals (rq_auth_identify, rq_principal_*), JWTs through the live table
 * (JWKS_FILE with its required issuer/audience, scope mapping, SIGHUP rotation). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "jwt_test_util.h"

#define SECRET_A "alpha-secret-0123456789"
#define SECRET_B "bravo+secret/ABCDEFGHIJ=="
#define ISS "https://idp.example"
#define AUD "relayq"

Test(auth_queues, pattern_glob)
{
    static const struct {
        const char *pat, *name;
        int match;
    } cases[] = {
        {"*", "orders", 1},
        {"*", "a.b.c", 1},
        {"orders.*", "orders.eu", 1},
        {"orders.*", "orders.eu.x", 1},
        {"orders.*", "orders.", 1},
        {"orders.*", "orders", 0},
        {"orders.*", "ordersXeu", 0},
        {"orders", "orders", 1},
        {"orders", "orders.eu", 0},
        {"orders", "order", 0},
        {"*.eu", "orders.eu", 1},
        {"*.eu", "orders.eu.x", 0},
        {"*.eu", "a.eu.b.eu", 1},
        {"o*s.*.x", "orders.eu.x", 1},
        {"o*s.*.x", "orders.eu.y", 0},
        {"**", "x", 1},
        {"a*b*c", "aXbYbZc", 1},
        {"a*b*c", "aXbYbZ", 0},
        {"*", "", 1},
        {"a", "", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rq_qpattern_match(cases[i].pat, cases[i].name), cases[i].match,
                     "case %zu: %s vs %s", i, cases[i].pat, cases[i].name);
    cr_expect(rq_qpattern_valid("orders.*", 8));
    cr_expect(rq_qpattern_valid("a-b_c.D9*", 9));
    cr_expect_not(rq_qpattern_valid("", 0));
    cr_expect_not(rq_qpattern_valid("a/b", 3));
    cr_expect_not(rq_qpattern_valid("a:b", 3));
    cr_expect_not(rq_qpattern_valid("a b", 3));
    char long_pat[202];
    memset(long_pat, 'a', 201);
    long_pat[201] = '\0';
    cr_expect(rq_qpattern_valid(long_pat, 200));
    cr_expect_not(rq_qpattern_valid(long_pat, 201));
}

/* Identifies SECRET with auth a; asserts OK. */
static void identify_ok(rq_auth_t *a, const char *secret, rq_principal_t *p)
{
    char h[400];

    snprintf(h, sizeof(h), "Bearer %s", secret);
    cr_assert_eq(rq_auth_identify(a, h, p), RQ_AUTH_OK, "%s", p->why ? p->why : "");
}

Test(auth_queues, key_file_and_list_syntax)
{
    rq_auth_error_t err;
    const char *text = "k1:" SECRET_A ":produce:orders.*,consume:orders.*\n"
                       "k2:" SECRET_B ":produce,admin:*,consume:a,produce:a\n";
    rq_keyset_t *ks = rq_keyset_parse_text(text, strlen(text), "keys.txt", &err);

    cr_assert_not_null(ks, "%s", err.text);
    const rq_api_key_t *k1 = rq_keyset_key(ks, 0), *k2 = rq_keyset_key(ks, 1);
    cr_expect_eq(k1->scopes, 0, "queue permissions grant no endpoint");
    cr_expect_eq(k1->all_queues, 0);
    cr_assert_eq(k1->n_grants, 1, "the same pattern twice is one grant");
    cr_expect_str_eq(k1->grants[0].pattern, "orders.*");
    cr_expect_eq(k1->grants[0].acts, (1u << RQ_QACT_PRODUCE) | (1u << RQ_QACT_CONSUME));
    cr_expect_eq(k2->scopes, RQ_SCOPE_PRODUCE);
    cr_expect_eq(k2->all_queues, 1u << RQ_QACT_ADMIN);
    cr_assert_eq(k2->n_grants, 1);
    cr_expect_eq(k2->grants[0].acts, (1u << RQ_QACT_PRODUCE) | (1u << RQ_QACT_CONSUME));
    rq_keyset_free(ks);

    /* API_KEYS: queue permissions continue the entry before; then a next key */
    ks = rq_keyset_parse_list(
        NULL, "k1:" SECRET_A ":produce:orders.*,consume:orders.*,batch,k2:" SECRET_B, &err);
    cr_assert_not_null(ks, "%s", err.text);
    cr_assert_eq(rq_keyset_count(ks), 2);
    k1 = rq_keyset_key(ks, 0);
    cr_expect_eq(k1->scopes, RQ_SCOPE_BATCH);
    cr_assert_eq(k1->n_grants, 1);
    cr_expect_eq(k1->grants[0].acts, (1u << RQ_QACT_PRODUCE) | (1u << RQ_QACT_CONSUME));
    cr_expect_eq(rq_keyset_key(ks, 1)->scopes, RQ_SCOPE_ALL);
    cr_expect_eq(rq_keyset_key(ks, 1)->all_queues, RQ_QACT_ALL, "no scope list: everything");
    rq_keyset_free(ks);

    static const struct {
        const char *list, *needle;
    } bad[] = {
        {"k1:" SECRET_A ",consume:orders.*", "is neither"}, /* k1 listed no scopes */
        {"consume:orders.*", "is neither"},
        {"k1:" SECRET_A ":produce,consume:bad/name", "bad queue pattern"},
        {"k1:" SECRET_A ":produce,admin:", "bad queue pattern"},
        {"admin:" SECRET_A ":produce", "is neither"}, /* a reserved id, first entry */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(err.text, 0, sizeof(err.text));
        ks = rq_keyset_parse_list(NULL, bad[i].list, &err);
        cr_expect_null(ks, "case %zu accepted", i);
        rq_keyset_free(ks);
        cr_expect(strstr(err.text, bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, err.text,
                  bad[i].needle);
        cr_expect(strstr(err.text, "secret-0123") == NULL, "case %zu echoes a secret", i);
    }
    /* more than RQ_GRANTS_MAX */
    char big[8192];
    size_t pos = (size_t)snprintf(big, sizeof(big), "k:" SECRET_A ":produce");
    for (int i = 0; i <= RQ_GRANTS_MAX; i++)
        pos += (size_t)snprintf(big + pos, sizeof(big) - pos, ",consume:q%d", i);
    ks = rq_keyset_parse_text(big, strlen(big), "keys.txt", &err);
    cr_expect_null(ks);
    cr_expect(strstr(err.text, "more than 64 queue permissions") != NULL, "%s", err.text);
}

Test(auth_queues, principals_of_keys)
{
    rq_auth_error_t err;
    rq_principal_t p;
    rq_auth_t *a = rq_auth_new(
        NULL, "k1:" SECRET_A ":produce:orders.*,consume:orders.eu,k2:" SECRET_B ":*", &err);
    char id[RQ_KEY_ID_MAX + 1];

    cr_assert_not_null(a, "%s", err.text);
    identify_ok(a, SECRET_A, &p);
    cr_expect_str_eq(rq_principal_id(&p), "k1");
    cr_expect_not(rq_principal_allows(&p, RQ_SCOPE_PRODUCE));
    cr_expect(rq_principal_allows(&p, 0));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, "orders.eu"));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, "orders.us.x"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, "billing"));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_CONSUME, "orders.eu"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_CONSUME, "orders.us"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_ADMIN, "orders.eu"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, NULL));
    cr_expect(rq_principal_any_queue(&p));
    rq_principal_clear(&p);
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, "orders.eu"), "cleared");
    rq_principal_clear(&p); /* twice is fine */

    identify_ok(a, SECRET_B, &p);
    cr_expect(rq_principal_allows(&p, RQ_SCOPE_ALL));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_ADMIN, "anything"));
    rq_principal_clear(&p);

    cr_expect_eq(rq_auth_identify(a, "Bearer nope-nope-nope-nope", &p), RQ_AUTH_INVALID);
    cr_expect_not(rq_principal_any_queue(&p));
    cr_expect_eq(rq_auth_identify(a, NULL, &p), RQ_AUTH_MISSING);
    /* rq_auth_check on top */
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_A, RQ_SCOPE_PRODUCE, id), RQ_AUTH_FORBIDDEN);
    cr_expect_str_eq(id, "k1");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);

    char buf[512];
    rq_auth_describe(a, buf, sizeof(buf));
    cr_expect(strstr(buf, "k1[produce:orders.*,consume:orders.eu]") != NULL, "%s", buf);
    cr_expect(strstr(buf, "k2[*]") != NULL, "%s", buf);
    rq_auth_free(a);

    rq_principal_open(&p);
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_ADMIN, "x"));
    cr_expect(rq_principal_allows(&p, RQ_SCOPE_DLQ));
    cr_expect_str_eq(rq_principal_id(&p), "");
    rq_principal_clear(&p);
    memset(&p, 0, sizeof(p));
    cr_expect_not(rq_principal_allows(&p, 0), "an empty principal may do nothing");
    cr_expect_not(rq_principal_any_queue(&p));
}

/* Writes the JWKS of k (kid) to path. */
static void write_jwks(const char *path, EVP_PKEY *k, const char *kid)
{
    char jwks[4096] = "";
    FILE *f = fopen(path, "w");

    tu_jwk(k, kid, NULL, jwks, sizeof(jwks));
    cr_assert_not_null(f);
    fprintf(f, "{\"keys\":[%s]}", jwks);
    fclose(f);
}

static void token(EVP_PKEY *k, const char *kid, const char *scope, long exp_off, char *tok,
                  size_t len)
{
    char hdr[128], p[1024];

    snprintf(hdr, sizeof(hdr), "{\"alg\":\"%s\",\"kid\":\"%s\"}",
             EVP_PKEY_is_a(k, "EC") ? "ES256" : "RS256", kid);
    snprintf(p, sizeof(p),
             "{\"iss\":\"" ISS "\",\"aud\":[\"" AUD "\"],\"sub\":\"svc\",\"exp\":%lld,"
             "\"scope\":\"%s\"}",
             (long long)time(NULL) + exp_off, scope);
    tu_sign(k, hdr, p, tok, len);
}

Test(auth_queues, jwt_through_the_table_and_rotation)
{
    char path[] = "/tmp/rq-test-jwks-XXXXXX", tok[12000], h[12100];
    int fd = mkstemp(path);
    EVP_PKEY *k1 = tu_rsa_key(), *k2 = tu_ec_key();
    rq_auth_error_t err;
    rq_principal_t p;
    rq_auth_jwt_opts_t o = {path, ISS, AUD, NULL, 60};
    rq_auth_t *a;

    cr_assert(fd >= 0 && k1 != NULL && k2 != NULL);
    close(fd);
    write_jwks(path, k1, "one");

    /* fail closed: no issuer or audience */
    rq_auth_jwt_opts_t noiss = {path, "", AUD, NULL, 60}, noaud = {path, ISS, NULL, NULL, 60};
    cr_expect_null(rq_auth_new_jwt(NULL, NULL, &noiss, &err));
    cr_expect(strstr(err.text, "JWT_ISSUER and JWT_AUDIENCE") != NULL, "%s", err.text);
    cr_expect_null(rq_auth_new_jwt(NULL, NULL, &noaud, &err));
    rq_auth_jwt_opts_t missing = {"/nonexistent/jwks.json", ISS, AUD, NULL, 60};
    cr_expect_null(rq_auth_new_jwt(NULL, NULL, &missing, &err));
    cr_expect(strstr(err.text, "JWKS_FILE /nonexistent/jwks.json") != NULL, "%s", err.text);

    a = rq_auth_new_jwt(NULL, "key:" SECRET_A ":dlq", &o, &err);
    cr_assert_not_null(a, "%s", err.text);
    cr_expect(rq_auth_enabled(a));
    cr_expect_eq(rq_auth_jwks_count(a), 1);

    token(k1, "one", "openid produce consume:orders.* bogus:x admin:bad/x", 300, tok, sizeof(tok));
    snprintf(h, sizeof(h), "Bearer %s", tok);
    cr_assert_eq(rq_auth_identify(a, h, &p), RQ_AUTH_OK, "%s", p.why ? p.why : "");
    cr_expect(p.jwt);
    cr_expect_str_eq(rq_principal_id(&p), "svc");
    cr_expect(rq_principal_allows(&p, RQ_SCOPE_PRODUCE));
    cr_expect_not(rq_principal_allows(&p, RQ_SCOPE_BATCH));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_CONSUME, "orders.eu"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PRODUCE, "orders.eu"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_ADMIN, "bad"));
    rq_principal_clear(&p);
    /* API keys still work beside JWTs */
    identify_ok(a, SECRET_A, &p);
    cr_expect_not(p.jwt);
    rq_principal_clear(&p);

    token(k1, "one", "produce", -3600, tok, sizeof(tok));
    snprintf(h, sizeof(h), "Bearer %s", tok);
    cr_expect_eq(rq_auth_identify(a, h, &p), RQ_AUTH_INVALID);
    cr_expect(p.jwt);
    cr_expect_str_eq(p.why, "token expired");
    rq_principal_clear(&p);

    /* rotation: the new JWKS holds only k2; the old key's tokens are refused after reload */
    write_jwks(path, k2, "two");
    cr_expect_eq(rq_auth_reload(a, &err), 1, "%s", err.text);
    token(k1, "one", "produce", 300, tok, sizeof(tok));
    snprintf(h, sizeof(h), "Bearer %s", tok);
    cr_expect_eq(rq_auth_identify(a, h, &p), RQ_AUTH_INVALID);
    cr_expect_str_eq(p.why, "no matching key (kid)");
    token(k2, "two", "*", 300, tok, sizeof(tok));
    snprintf(h, sizeof(h), "Bearer %s", tok);
    cr_expect_eq(rq_auth_identify(a, h, &p), RQ_AUTH_OK, "%s", p.why ? p.why : "");
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_ADMIN, "x"), "scope * grants every queue");
    rq_principal_clear(&p);

    /* a broken JWKS on reload keeps the current set */
    FILE *f = fopen(path, "w");
    fputs("{\"keys\":[]}", f);
    fclose(f);
    cr_expect_eq(rq_auth_reload(a, &err), -1);
    cr_expect(strstr(err.text, "no usable key") != NULL, "%s", err.text);
    cr_expect_eq(rq_auth_identify(a, h, &p), RQ_AUTH_OK, "the k2 set stays");
    rq_principal_clear(&p);
    rq_auth_free(a);

    /* JWKS alone: auth on, no API key needed, reload works */
    write_jwks(path, k1, "one");
    a = rq_auth_new_jwt(NULL, NULL, &o, &err);
    cr_assert_not_null(a, "%s", err.text);
    cr_expect(rq_auth_enabled(a));
    cr_expect_eq(rq_auth_reload(a, &err), 0, "%s", err.text);
    cr_expect_eq(rq_auth_identify(a, "Bearer " SECRET_A, &p), RQ_AUTH_INVALID);
    cr_expect_str_eq(p.why, "the token matches no API key");
    rq_auth_free(a);
    unlink(path);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}
