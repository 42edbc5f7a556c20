/* test_auth.c - API keys: the entry format (table-driven), constant-time matching, Bearer
 * parsing, scopes, the file and list sources, reload semantics and reload under load. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "sha256.h"

#define SECRET_A "alpha-secret-0123456789"
#define SECRET_B "bravo+secret/ABCDEFGHIJ=="
/* sha256("hashed-secret-0123456789") */
#define SECRET_H "hashed-secret-0123456789"

static void sha_hex(const char *s, char out[2 * RQ_SHA256_LEN + 1])
{
    uint8_t d[RQ_SHA256_LEN];

    rq_sha256(s, strlen(s), d);
    rq_hex_encode(d, sizeof(d), out);
}

static rq_keyset_t *parse(const char *text, rq_auth_error_t *err)
{
    return rq_keyset_parse_text(text, strlen(text), "keys.txt", err);
}

static int match(const rq_keyset_t *ks, const char *tok)
{
    return rq_keyset_match(ks, tok, strlen(tok));
}

Test(auth, file_format_comments_blank_lines_crlf_hashes_scopes)
{
    char hex[2 * RQ_SHA256_LEN + 1], text[1024];
    rq_auth_error_t err;
    rq_keyset_t *ks;

    sha_hex(SECRET_H, hex);
    snprintf(text, sizeof(text),
             "# relayq keys\n"
             "\n"
             "   app-1:" SECRET_A "  \r\n"
             "\t# indented comment\n"
             "app.2:" SECRET_B ":produce,batch\n"
             "hashed_3:sha256:%s:dlq\n"
             "last:%s:messages", /* no final newline; an upper-case hex digest */
             hex, "LAST-secret-0123456789");
    ks = parse(text, &err);
    cr_assert_not_null(ks, "%s", err.text);
    cr_assert_eq(rq_keyset_count(ks), 4);
    cr_expect_str_eq(rq_keyset_key(ks, 0)->id, "app-1");
    cr_expect_eq(rq_keyset_key(ks, 0)->scopes, RQ_SCOPE_ALL);
    cr_expect_str_eq(rq_keyset_key(ks, 1)->id, "app.2");
    cr_expect_eq(rq_keyset_key(ks, 1)->scopes, RQ_SCOPE_PRODUCE | RQ_SCOPE_BATCH);
    cr_expect_eq(rq_keyset_key(ks, 2)->scopes, RQ_SCOPE_DLQ);
    cr_expect_eq(rq_keyset_key(ks, 3)->scopes, RQ_SCOPE_MESSAGES);
    cr_expect_eq(match(ks, SECRET_A), 0);
    cr_expect_eq(match(ks, SECRET_B), 1);
    cr_expect_eq(match(ks, SECRET_H), 2, "a hashed secret matches its plain text");
    cr_expect_eq(match(ks, "LAST-secret-0123456789"), 3);
    cr_expect_eq(match(ks, hex), -1, "the digest itself is not a secret");
    cr_expect_eq(match(ks, "alpha-secret-012345678"), -1, "a prefix does not match");
    cr_expect_eq(match(ks, SECRET_A "9"), -1, "a longer token does not match");
    cr_expect_eq(match(ks, ""), -1);
    cr_expect_eq(rq_keyset_match(NULL, "x", 1), -1);
    rq_keyset_free(ks);

    /* Upper-case hex digits are accepted. */
    for (char *p = hex; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(text, sizeof(text), "h:sha256:%s\n", hex);
    ks = parse(text, &err);
    cr_assert_not_null(ks, "%s", err.text);
    cr_expect_eq(match(ks, SECRET_H), 0);
    rq_keyset_free(ks);

    /* Only comments: a valid, empty set (rq_auth_new refuses it, see below). */
    ks = parse("# nothing yet\n\n", &err);
    cr_assert_not_null(ks);
    cr_expect_eq(rq_keyset_count(ks), 0);
    rq_keyset_free(ks);
}

Test(auth, bad_entries_name_the_line_and_never_echo_the_secret)
{
    static const struct {
        const char *text, *needle;
    } cases[] = {
        {"nocolon\n", "keys.txt:1: expected key-id:secret"},
        {"\n:" SECRET_A "\n", "keys.txt:2: the key id must be 1 to 64"},
        {"bad id:" SECRET_A "\n", "only letters, digits"},
        {"a:short\n", "key a: the secret must be 16 to 256"},
        {"a:" SECRET_A " x\n", "key a: the secret may hold only"},
        {"a:" SECRET_A "=x\n", "the secret may hold only"},       /* '=' only at the end */
        {"a:" SECRET_A ",produce\n", "the secret may hold only"}, /* ',' is not in a secret */
        {"a:" SECRET_A ":\n", "unknown scope \"\""},
        {"a:" SECRET_A ":produce,\n", "unknown scope \"\""},
        {"a:" SECRET_A ":write\n", "unknown scope \"write\""},
        {"a:" SECRET_A ":batch:orders\n", "unknown scope"}, /* batch is no queue action */
        {"a:" SECRET_A ":produce:orders/eu\n", "bad queue pattern"},
        {"a:" SECRET_A ":consume:\n", "bad queue pattern"},
        {"produce:" SECRET_A "\n", "the key id produce is reserved"},
        {"a:sha256:abc\n", "64 hex digits"},
        {"a:sha256:" SECRET_A SECRET_A SECRET_A "\n", "64 hex digits"},
        {"a:" SECRET_A "\na:" SECRET_B "\n", "keys.txt:2: key id a is listed twice"},
        {"a:" SECRET_A "\nb:" SECRET_A "\n", "keys a and b have the same secret"},
        {"a:" SECRET_A "\0\n", "NUL byte"},
    };
    rq_auth_error_t err;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len = strlen(cases[i].text);
        if (strstr(cases[i].needle, "NUL") != NULL)
            len += 2; /* the text goes on after the NUL */
        memset(err.text, 0, sizeof(err.text));
        rq_keyset_t *ks = rq_keyset_parse_text(cases[i].text, len, "keys.txt", &err);
        cr_expect_null(ks, "case %zu accepted", i);
        rq_keyset_free(ks);
        cr_expect(strstr(err.text, cases[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i,
                  err.text, cases[i].needle);
        cr_expect(strstr(err.text, "secret-0123") == NULL && strstr(err.text, "ABCDEFGHIJ") == NULL,
                  "case %zu echoes a secret: %s", i, err.text);
    }
}

Test(auth, a_hash_duplicating_a_plain_secret_is_refused)
{
    char hex[2 * RQ_SHA256_LEN + 1], text[256];
    rq_auth_error_t err;

    sha_hex(SECRET_A, hex);
    snprintf(text, sizeof(text), "a:" SECRET_A "\nb:sha256:%s\n", hex);
    cr_expect_null(parse(text, &err));
    cr_expect(strstr(err.text, "same secret") != NULL, "%s", err.text);
}

Test(auth, list_entries_and_scope_continuation)
{
    rq_auth_error_t err;
    rq_keyset_t *ks =
        rq_keyset_parse_list(NULL,
                             " a:" SECRET_A ":produce,batch , b:" SECRET_B ",c:sha256:"
                             "0000000000000000000000000000000000000000000000000000000000000000"
                             ":dlq,messages",
                             &err);

    cr_assert_not_null(ks, "%s", err.text);
    cr_assert_eq(rq_keyset_count(ks), 3);
    cr_expect_eq(rq_keyset_key(ks, 0)->scopes, RQ_SCOPE_PRODUCE | RQ_SCOPE_BATCH);
    cr_expect_eq(rq_keyset_key(ks, 1)->scopes, RQ_SCOPE_ALL);
    cr_expect_eq(rq_keyset_key(ks, 2)->scopes, RQ_SCOPE_DLQ | RQ_SCOPE_MESSAGES);
    cr_expect_eq(match(ks, SECRET_B), 1);
    rq_keyset_free(ks);

    static const struct {
        const char *list, *needle;
    } bad[] = {
        {"produce", "entry 1: \"produce\" is neither"},
        {"a:" SECRET_A ",produce", "entry 2: \"produce\" is neither"}, /* a has no scope list */
        {"a:" SECRET_A ":produce,nope", "unknown scope"},
        {"a:" SECRET_A ",", "empty entry after entry 1"},
        {"a:" SECRET_A ",,b:" SECRET_B, "empty entry"},
        {"a:" SECRET_A ",b:" SECRET_A, "entry 2: keys a and b have the same secret"},
        {"a:" SECRET_A ":produce," SECRET_B, "entry 1: unknown scope"}, /* not echoed */
        {SECRET_B, "(hidden)"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(err.text, 0, sizeof(err.text));
        ks = rq_keyset_parse_list(NULL, bad[i].list, &err);
        cr_expect_null(ks, "case %zu accepted", i);
        rq_keyset_free(ks);
        cr_expect(strstr(err.text, bad[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, err.text,
                  bad[i].needle);
        cr_expect(strstr(err.text, "secret-0123") == NULL && strstr(err.text, "ABCDEFGHIJ") == NULL,
                  "case %zu echoes a secret: %s", i, err.text);
    }
}

Test(auth, scopes_parse_and_format)
{
    char buf[64];

    cr_expect_eq(rq_scope_parse("produce", 7), RQ_SCOPE_PRODUCE);
    cr_expect_eq(rq_scope_parse("messages", 8), RQ_SCOPE_MESSAGES);
    cr_expect_eq(rq_scope_parse("*", 1), RQ_SCOPE_ALL);
    cr_expect_eq(rq_scope_parse("Produce", 7), 0);
    cr_expect_eq(rq_scope_parse("produc", 6), 0);
    cr_expect_eq(rq_scope_parse("", 0), 0);
    rq_scope_format(RQ_SCOPE_PRODUCE | RQ_SCOPE_DLQ, buf, sizeof(buf));
    cr_expect_str_eq(buf, "produce,dlq");
    rq_scope_format(RQ_SCOPE_ALL, buf, sizeof(buf));
    cr_expect_str_eq(buf, "*");
}

Test(auth, bearer_header)
{
    static const struct {
        const char *h, *tok; /* tok NULL: rejected */
    } cases[] = {
        {"Bearer abc", "abc"}, {"bearer abc", "abc"},       {"BEARER \t abc  ", "abc"},
        {"Bearer", NULL},      {"Bearer ", NULL},           {"Bearerabc", NULL},
        {"Basic abc", NULL},   {"Bearer abc def", NULL},    {"", NULL},
        {" Bearer abc", NULL}, {"Bearer a=b/c+", "a=b/c+"},
    };
    const char *tok;
    size_t len;

    cr_expect_eq(rq_auth_bearer_token(NULL, &tok, &len), -1);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = rq_auth_bearer_token(cases[i].h, &tok, &len);
        if (cases[i].tok == NULL) {
            cr_expect_eq(rc, -1, "case %zu (%s) accepted", i, cases[i].h);
        } else {
            cr_expect_eq(rc, 0, "case %zu (%s) rejected", i, cases[i].h);
            cr_expect(len == strlen(cases[i].tok) && memcmp(tok, cases[i].tok, len) == 0,
                      "case %zu: token '%.*s'", i, (int)len, tok);
        }
    }
}

/* ---- the live table ---- */

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/relayq-test-keys.XXXXXX");
    int fd = mkstemp(path);

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void rewrite(const char *path, const char *text)
{
    /* Atomically, as an operator's editor or config manager would. */
    char tmp[256];
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(tmp, 0600), 0); /* else the loader warns on every reload */
    cr_assert_eq(rename(tmp, path), 0);
}

Test(auth, no_sources_means_disabled)
{
    rq_auth_error_t err;
    rq_auth_t *a = rq_auth_new(NULL, "", &err);

    cr_assert_not_null(a, "%s", err.text);
    cr_expect_eq(rq_auth_enabled(a), 0);
    cr_expect_eq(rq_auth_reload(a, &err), -1);
    rq_auth_free(a);
    rq_auth_free(NULL);
}

Test(auth, check_results_and_ids)
{
    rq_auth_error_t err;
    char id[RQ_KEY_ID_MAX + 1];
    rq_auth_t *a = rq_auth_new(NULL, "full:" SECRET_A ",prod:" SECRET_B ":produce", &err);

    cr_assert_not_null(a, "%s", err.text);
    cr_expect_eq(rq_auth_enabled(a), 1);
    cr_expect_eq(rq_auth_check(a, NULL, RQ_SCOPE_PRODUCE, id), RQ_AUTH_MISSING);
    cr_expect_str_eq(id, "");
    cr_expect_eq(rq_auth_check(a, "Basic Zm9vOmJhcg==", RQ_SCOPE_PRODUCE, id), RQ_AUTH_MISSING);
    cr_expect_eq(rq_auth_check(a, "Bearer wrong-secret-0123456789", RQ_SCOPE_PRODUCE, id),
                 RQ_AUTH_INVALID);
    cr_expect_str_eq(id, "");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_A, RQ_SCOPE_DLQ, id), RQ_AUTH_OK);
    cr_expect_str_eq(id, "full");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);
    cr_expect_str_eq(id, "prod");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_BATCH, id), RQ_AUTH_FORBIDDEN);
    cr_expect_str_eq(id, "prod", "a forbidden key is still named");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, 0, id), RQ_AUTH_OK, "scope 0: any key");
    rq_auth_free(a);
}

Test(auth, file_reload_swaps_keeps_on_error_and_fails_closed)
{
    rq_auth_error_t err;
    char id[RQ_KEY_ID_MAX + 1], desc[256];
    char *path = write_tmp("one:" SECRET_A "\n");
    rq_auth_t *a = rq_auth_new(path, "env:" SECRET_H ":messages", &err);

    cr_assert_not_null(a, "%s", err.text);
    rq_auth_describe(a, desc, sizeof(desc));
    cr_expect_str_eq(desc, "one[*], env[messages]");
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_A, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_INVALID);

    /* Rotate: one's secret replaced, two added. The old secret stops working at once. */
    rewrite(path, "one:" SECRET_B "\ntwo:another-secret-0123456789:batch\n");
    cr_expect_eq(rq_auth_reload(a, &err), 3, "%s", err.text);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_A, RQ_SCOPE_PRODUCE, id), RQ_AUTH_INVALID);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);
    cr_expect_eq(rq_auth_check(a, "Bearer another-secret-0123456789", RQ_SCOPE_PRODUCE, id),
                 RQ_AUTH_FORBIDDEN);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_H, RQ_SCOPE_MESSAGES, id), RQ_AUTH_OK,
                 "API_KEYS entries survive a reload");

    /* A broken file: the error names the line, the current keys stay. */
    rewrite(path, "one:" SECRET_B "\ntwo:tiny\n");
    cr_expect_eq(rq_auth_reload(a, &err), -1);
    cr_expect(strstr(err.text, ":2: key two") != NULL, "%s", err.text);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);

    /* An emptied file never opens the API. */
    rewrite(path, "# all keys revoked?\n");
    cr_expect_eq(rq_auth_reload(a, &err), -1);
    cr_expect(strstr(err.text, "holds no key") != NULL, "%s", err.text);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);

    /* A vanished file: same. */
    cr_assert_eq(unlink(path), 0);
    cr_expect_eq(rq_auth_reload(a, &err), -1);
    cr_expect(strstr(err.text, "No such file") != NULL, "%s", err.text);
    cr_expect_eq(rq_auth_check(a, "Bearer " SECRET_B, RQ_SCOPE_PRODUCE, id), RQ_AUTH_OK);
    rq_auth_free(a);
    free(path);
}

Test(auth, start_refuses_empty_or_missing_sources)
{
    rq_auth_error_t err;
    char *path = write_tmp("# no keys\n");

    cr_expect_null(rq_auth_new(path, NULL, &err));
    cr_expect(strstr(err.text, "holds no key") != NULL, "%s", err.text);
    cr_expect_null(rq_auth_new("/nonexistent/keys", NULL, &err));
    cr_expect(strstr(err.text, "/nonexistent/keys") != NULL, "%s", err.text);
    cr_expect_null(rq_auth_new(NULL, "a:short", &err));
    cr_expect(strstr(err.text, "API_KEYS entry 1") != NULL, "%s", err.text);
    unlink(path);
    free(path);
}

/* Readers check keys while the main thread reloads: a reader never sees a freed set (ASan
 * would report it) and the key present in every version always passes. */
typedef struct {
    rq_auth_t *a;
    atomic_int *stop;
    long ok, bad;
} reader_t;

static void *reader(void *arg)
{
    reader_t *r = arg;
    char id[RQ_KEY_ID_MAX + 1];

    while (!atomic_load(r->stop)) {
        if (rq_auth_check(r->a, "Bearer " SECRET_A, RQ_SCOPE_PRODUCE, id) == RQ_AUTH_OK &&
            strcmp(id, "stable") == 0)
            r->ok++;
        else
            r->bad++;
    }
    return NULL;
}

Test(auth, reload_under_concurrent_checks)
{
    rq_auth_error_t err;
    char *path = write_tmp("stable:" SECRET_A "\n");
    rq_auth_t *a = rq_auth_new(path, NULL, &err);
    atomic_int stop = 0;
    reader_t r[4];
    pthread_t th[4];
    char text[256];

    cr_assert_not_null(a, "%s", err.text);
    for (int i = 0; i < 4; i++) {
        r[i] = (reader_t){a, &stop, 0, 0};
        pthread_create(&th[i], NULL, reader, &r[i]);
    }
    for (int v = 0; v < 300; v++) {
        snprintf(text, sizeof(text), "stable:" SECRET_A "\nv%d:rotating-secret-%08d\n", v, v);
        rewrite(path, text);
        cr_expect_eq(rq_auth_reload(a, &err), 2, "%s", err.text);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(r[i].bad, 0, "reader %d: %ld failed checks", i, r[i].bad);
        cr_expect_gt(r[i].ok, 0);
    }
    rq_auth_free(a);
    unlink(path);
    free(path);
}
