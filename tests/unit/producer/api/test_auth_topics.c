/* test_auth_topics.c - the topic permissions publish:<pattern> and subscribe:<pattern>
 * (issue 18): parsing in a key file, in API_KEYS (the continuation rule) and in a JWT's scope
 * claim; what '*' and a key without a scope list get; and that topic permissions alone do
 * not open the queue routes (GET /queues, rq_principal_any_queue). */
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
#define SECRET_C "charlie-secret-9876543210"
#define ISS "https://idp.example"
#define AUD "relayq"

#define PUB (1u << RQ_QACT_PUBLISH)
#define SUB (1u << RQ_QACT_SUBSCRIBE)

static void identify_ok(rq_auth_t *a, const char *secret, rq_principal_t *p)
{
    char h[400];

    snprintf(h, sizeof(h), "Bearer %s", secret);
    cr_assert_eq(rq_auth_identify(a, h, p), RQ_AUTH_OK, "%s", p->why ? p->why : "");
}

Test(auth_topics, action_names_and_masks)
{
    cr_expect_eq(RQ_QACT_PUBLISH, RQ_QACT_ADMIN + 1);
    cr_expect_eq(RQ_QACT_SUBSCRIBE, RQ_QACT_ADMIN + 2);
    cr_expect_eq(RQ_QACT_COUNT, 5);
    cr_expect_eq(RQ_QACT_ALL, 0x1fu);
    cr_expect_str_eq(rq_qaction_name(RQ_QACT_PUBLISH), "publish");
    cr_expect_str_eq(rq_qaction_name(RQ_QACT_SUBSCRIBE), "subscribe");
    cr_expect_str_eq(rq_qaction_name(RQ_QACT_ADMIN), "admin");
    cr_expect_str_eq(rq_qaction_name(RQ_QACT_COUNT), "?");
    cr_expect_eq(RQ_QACT_QUEUE_MASK & (PUB | SUB), 0u);
    cr_expect_eq(RQ_QACT_TOPIC_MASK, PUB | SUB | (1u << RQ_QACT_ADMIN));
}

Test(auth_topics, key_file)
{
    static const char text[] = "# topics\n"
                               "k1:" SECRET_A ":publish:events.*,subscribe:events.*,subscribe:log\n"
                               "k2:" SECRET_B ":subscribe:*,produce:orders\n"
                               "k3:" SECRET_C "\n";
    rq_auth_error_t err;
    rq_keyset_t *ks = rq_keyset_parse_text(text, strlen(text), "keys.txt", &err);

    cr_assert_not_null(ks, "%s", err.text);
    cr_assert_eq(rq_keyset_count(ks), 3);
    const rq_api_key_t *k1 = rq_keyset_key(ks, 0), *k2 = rq_keyset_key(ks, 1),
                       *k3 = rq_keyset_key(ks, 2);
    cr_expect_eq(k1->scopes, 0u);
    cr_expect_eq(k1->all_queues, 0u);
    cr_assert_eq(k1->n_grants, 2);
    cr_expect_str_eq(k1->grants[0].pattern, "events.*");
    cr_expect_eq(k1->grants[0].acts, PUB | SUB);
    cr_expect_str_eq(k1->grants[1].pattern, "log");
    cr_expect_eq(k1->grants[1].acts, SUB);
    cr_expect_eq(k2->all_queues, SUB, "subscribe:* is every topic");
    cr_expect_eq(k2->n_grants, 1);
    cr_expect_eq(k3->all_queues, RQ_QACT_ALL, "no scope list: every action, topics included");
    rq_keyset_free(ks);
}

Test(auth_topics, key_file_errors)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"k1:" SECRET_A ":publish:\n", "bad queue pattern"},
        {"k1:" SECRET_A ":subscribe:a/b\n", "bad queue pattern"},
        {"k1:" SECRET_A ":subscribe\n", "unknown scope"},
        {"k1:" SECRET_A ":publisher:x\n", "unknown scope"},
        {"publish:" SECRET_A "\n", "the key id publish is reserved"},
        {"subscribe:" SECRET_A "\n", "the key id subscribe is reserved"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        rq_auth_error_t err;
        rq_keyset_t *ks =
            rq_keyset_parse_text(cases[i].text, strlen(cases[i].text), "keys.txt", &err);
        cr_expect_null(ks, "case %zu", i);
        cr_expect(strstr(err.text, cases[i].want) != NULL, "case %zu: %s", i, err.text);
        rq_keyset_free(ks);
    }
}

Test(auth_topics, api_keys_continuation)
{
    rq_auth_error_t err;
    rq_keyset_t *ks = rq_keyset_parse_list(
        NULL,
        "k1:" SECRET_A ":consume:jobs,publish:events.*,subscribe:events.eu,k2:" SECRET_B
        ":subscribe:x,publish:y",
        &err);

    cr_assert_not_null(ks, "%s", err.text);
    cr_assert_eq(rq_keyset_count(ks), 2, "the publish:/subscribe: pieces continue k1's list");
    const rq_api_key_t *k1 = rq_keyset_key(ks, 0), *k2 = rq_keyset_key(ks, 1);
    cr_assert_eq(k1->n_grants, 3);
    cr_expect_str_eq(k1->grants[1].pattern, "events.*");
    cr_expect_eq(k1->grants[1].acts, PUB);
    cr_expect_eq(k1->grants[2].acts, SUB);
    cr_assert_eq(k2->n_grants, 2);
    cr_expect_eq(k2->grants[0].acts, SUB);
    cr_expect_eq(k2->grants[1].acts, PUB);
    rq_keyset_free(ks);

    /* a publish: piece with no entry before it, or after a key without a scope list */
    cr_expect_null(rq_keyset_parse_list(NULL, "publish:x", &err));
    cr_expect(strstr(err.text, "is neither") != NULL, "%s", err.text);
    cr_expect_null(rq_keyset_parse_list(NULL, "k1:" SECRET_A ",subscribe:x", &err));
    cr_expect(strstr(err.text, "is neither") != NULL, "%s", err.text);
    cr_expect_null(rq_keyset_parse_list(NULL, "k1:" SECRET_A ":publish:x,subscribe:a/b", &err));
    cr_expect(strstr(err.text, "bad queue pattern") != NULL, "%s", err.text);
}

Test(auth_topics, principals)
{
    rq_auth_error_t err;
    rq_principal_t p;
    rq_auth_t *a = rq_auth_new(NULL,
                               "k1:" SECRET_A ":publish:events.*,subscribe:events.eu,"
                               "k2:" SECRET_B ":*,"
                               "k3:" SECRET_C ":admin:ops.*",
                               &err);

    cr_assert_not_null(a, "%s", err.text);
    identify_ok(a, SECRET_A, &p);
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_PUBLISH, "events.us"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PUBLISH, "orders"));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "events.eu"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "events.us"));
    for (int act = RQ_QACT_PRODUCE; act <= RQ_QACT_ADMIN; act++)
        cr_expect_not(rq_principal_allows_queue(&p, (rq_qaction_t)act, "events.eu"),
                      "no queue action from topic permissions (%d)", act);
    cr_expect_not(rq_principal_any_queue(&p), "topic permissions alone: GET /queues is 403");
    cr_expect(rq_principal_any_topic(&p));
    rq_principal_clear(&p);

    identify_ok(a, SECRET_B, &p);
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_PUBLISH, "anything"), "* grants topics");
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "anything"));
    cr_expect(rq_principal_any_queue(&p));
    cr_expect(rq_principal_any_topic(&p));
    rq_principal_clear(&p);

    identify_ok(a, SECRET_C, &p);
    cr_expect(rq_principal_any_queue(&p), "admin: is a queue action");
    cr_expect(rq_principal_any_topic(&p), "admin: is a topic action too");
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "ops.x"));
    rq_principal_clear(&p);

    char buf[512];
    rq_auth_describe(a, buf, sizeof(buf));
    cr_expect(strstr(buf, "k1[publish:events.*,subscribe:events.eu]") != NULL, "%s", buf);
    cr_expect(strstr(buf, "k2[*]") != NULL, "%s", buf);
    rq_auth_free(a);

    /* consume: alone is a queue permission, not a topic one */
    a = rq_auth_new(NULL, "k1:" SECRET_A ":consume:jobs", &err);
    cr_assert_not_null(a, "%s", err.text);
    identify_ok(a, SECRET_A, &p);
    cr_expect(rq_principal_any_queue(&p));
    cr_expect_not(rq_principal_any_topic(&p));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "jobs"));
    rq_principal_clear(&p);
    rq_auth_free(a);

    rq_principal_open(&p);
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "x"), "no auth: everything");
    cr_expect(rq_principal_any_topic(&p));
    memset(&p, 0, sizeof(p));
    cr_expect_not(rq_principal_any_topic(&p));
    cr_expect_not(rq_principal_any_topic(NULL));
}

static void write_jwks(const char *path, EVP_PKEY *k, const char *kid)
{
    char jwks[4096] = "";
    FILE *f = fopen(path, "w");

    tu_jwk(k, kid, NULL, jwks, sizeof(jwks));
    cr_assert_not_null(f);
    fprintf(f, "{\"keys\":[%s]}", jwks);
    fclose(f);
}

Test(auth_topics, jwt_scope_claim)
{
    char path[] = "/tmp/rq-test-jwks-topics-XXXXXX", tok[12000], h[12100], hdr[128], pl[1024];
    int fd = mkstemp(path);
    EVP_PKEY *k = tu_ec_key();
    rq_auth_error_t err;
    rq_principal_t p;
    rq_auth_jwt_opts_t o = {path, ISS, AUD, NULL, 60};
    rq_auth_t *a;

    cr_assert(fd >= 0 && k != NULL);
    close(fd);
    write_jwks(path, k, "one");
    a = rq_auth_new_jwt(NULL, NULL, &o, &err);
    cr_assert_not_null(a, "%s", err.text);
    snprintf(hdr, sizeof(hdr), "{\"alg\":\"ES256\",\"kid\":\"one\"}");
    snprintf(pl, sizeof(pl),
             "{\"iss\":\"" ISS "\",\"aud\":\"" AUD "\",\"sub\":\"svc\",\"exp\":%lld,"
             "\"scope\":\"openid subscribe:events.* publish:bad/x publish:out\"}",
             (long long)time(NULL) + 300);
    tu_sign(k, hdr, pl, tok, sizeof(tok));
    snprintf(h, sizeof(h), "Bearer %s", tok);
    cr_assert_eq(rq_auth_identify(a, h, &p), RQ_AUTH_OK, "%s", p.why ? p.why : "");
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_SUBSCRIBE, "events.eu"));
    cr_expect(rq_principal_allows_queue(&p, RQ_QACT_PUBLISH, "out"));
    cr_expect_not(rq_principal_allows_queue(&p, RQ_QACT_PUBLISH, "events.eu"));
    cr_expect_not(rq_principal_any_queue(&p));
    cr_expect(rq_principal_any_topic(&p));
    rq_principal_clear(&p);
    rq_auth_free(a);
    EVP_PKEY_free(k);
    unlink(path);
}
