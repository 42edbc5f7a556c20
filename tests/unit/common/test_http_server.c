/* test_http_server.c - the shared MHD options: limits from the config, HTTPS file checks,
 * loopback detection (the "no keys, not loopback" start-up warning) and the log budget. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http_server.h"

static const struct MHD_OptionItem *find_opt(rq_http_server_t *s, enum MHD_OPTION o)
{
    for (const struct MHD_OptionItem *it = rq_http_server_options(s); it->option != MHD_OPTION_END;
         it++) {
        if (it->option == o)
            return it;
    }
    return NULL;
}

static char *write_tmp(const char *text)
{
    char *path = strdup("/tmp/relayq-test-pem.XXXXXX");
    int fd = mkstemp(path);

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

Test(http_server, loopback)
{
    static const struct {
        const char *addr;
        int loop;
    } cases[] = {
        {"127.0.0.1", 1},       {"127.1.2.3", 1}, {"::1", 1},      {"::ffff:127.0.0.1", 1},
        {"0.0.0.0", 0},         {"::", 0},        {"10.0.0.1", 0}, {"128.0.0.1", 0},
        {"::ffff:10.0.0.1", 0}, {"localhost", 0}, {"", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rq_http_is_loopback(cases[i].addr), cases[i].loop, "%s", cases[i].addr);
}

Test(http_server, options_follow_the_config)
{
    rq_config_t cfg;
    rq_http_server_t s;
    char err[256];
    const struct MHD_OptionItem *o;

    cr_assert_eq(rq_config_defaults(&cfg), 0);
    cfg.http_connection_timeout_s = 7;
    cfg.http_max_connections = 123;
    cfg.max_header_bytes = 9000;
    cr_assert_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(rq_http_server_flags(&s), 0u);
    cr_expect_str_eq(rq_http_server_scheme(&s), "http");
    o = find_opt(&s, MHD_OPTION_CONNECTION_TIMEOUT);
    cr_assert_not_null(o);
    cr_expect_eq(o->value, 7);
    o = find_opt(&s, MHD_OPTION_CONNECTION_LIMIT);
    cr_assert_not_null(o);
    cr_expect_eq(o->value, 123);
    o = find_opt(&s, MHD_OPTION_CONNECTION_MEMORY_LIMIT);
    cr_assert_not_null(o);
    cr_expect_eq(o->value, 9000);
    cr_expect_null(find_opt(&s, MHD_OPTION_PER_IP_CONNECTION_LIMIT), "0 means no per-IP cap");
    cr_expect_not_null(find_opt(&s, MHD_OPTION_EXTERNAL_LOGGER));
    cr_expect_null(find_opt(&s, MHD_OPTION_HTTPS_MEM_CERT));
    rq_http_server_clear(&s);

    cfg.http_max_connections_per_ip = 5;
    cr_assert_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), 0, "%s", err);
    o = find_opt(&s, MHD_OPTION_PER_IP_CONNECTION_LIMIT);
    cr_assert_not_null(o);
    cr_expect_eq(o->value, 5);
    rq_http_server_clear(&s);
    rq_config_free(&cfg);
}

Test(http_server, https_files_are_checked)
{
    rq_config_t cfg;
    rq_http_server_t s;
    char err[256];
    char *pem = write_tmp("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    char *junk = write_tmp("not a certificate\n");

    cr_assert_eq(rq_config_defaults(&cfg), 0);
    free(cfg.http_tls_cert);
    cfg.http_tls_cert = strdup(pem);
    cr_expect_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), -1);
    cr_expect(strstr(err, "must be set together") != NULL, "%s", err);

    free(cfg.http_tls_key);
    cfg.http_tls_key = strdup("/nonexistent/key.pem");
    cr_expect_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), -1);
    cr_expect(strstr(err, "HTTP_TLS_KEY /nonexistent/key.pem") != NULL, "%s", err);

    free(cfg.http_tls_key);
    cfg.http_tls_key = strdup(junk);
    cr_expect_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), -1);
    cr_expect(strstr(err, "not a PEM file") != NULL, "%s", err);

    free(cfg.http_tls_key);
    cfg.http_tls_key = strdup(pem); /* only the PEM shape is checked here; MHD parses it */
    cr_assert_eq(rq_http_server_prepare(&s, &cfg, NULL, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(rq_http_server_flags(&s), (unsigned)MHD_USE_TLS);
    cr_expect_str_eq(rq_http_server_scheme(&s), "https");
    cr_expect_not_null(find_opt(&s, MHD_OPTION_HTTPS_MEM_CERT));
    cr_expect_not_null(find_opt(&s, MHD_OPTION_HTTPS_MEM_KEY));
    cr_expect_not_null(find_opt(&s, MHD_OPTION_HTTPS_PRIORITIES));
    rq_http_server_clear(&s);
    cr_expect_null(s.cert_pem);
    rq_http_server_clear(&s); /* twice is fine */
    rq_config_free(&cfg);
    unlink(pem);
    unlink(junk);
    free(pem);
    free(junk);
}

Test(http_server, warn_budget_drops_a_flood)
{
    rq_http_server_t s;

    memset(&s, 0, sizeof(s));
    for (int i = 0; i < 1000; i++)
        rq_http_server_warn(&s, "flood %d", i);
    /* Within one second at most RQ_HTTP_LOG_PER_SECOND were written. (A second boundary
     * during the loop resets the window, hence the generous bound.) */
    cr_expect_geq(atomic_load(&s.log_dropped), 1000 - 2 * RQ_HTTP_LOG_PER_SECOND - 1);
}

/* Issue 11 item 15: which early answers linger on the body, and the drain's two bounds. */
Test(http_server, drain_wanted)
{
    static const struct {
        const char *cl, *te, *expect;
        int want;
    } cases[] = {
        {"8388608", NULL, NULL, 1},
        {"1", NULL, NULL, 1},
        {"67108864", NULL, NULL, 1},
        {"67108865", NULL, NULL, 0}, /* past the bound: answer and close at once */
        {"1099511627776", NULL, NULL, 0},
        {"0", NULL, NULL, 0},
        {NULL, NULL, NULL, 0}, /* no body */
        {NULL, "chunked", NULL, 1},
        {NULL, "gzip, Chunked", NULL, 1},
        {"8388608", NULL, "100-continue", 0},
        {NULL, "chunked", "100-Continue", 0},
        {"-5", NULL, NULL, 0},
        {"x", NULL, NULL, 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(rq_http_drain_wanted(cases[i].cl, cases[i].te, cases[i].expect), cases[i].want,
                     "case %zu", i);
}

Test(http_server, drain_is_bounded_in_bytes_and_time)
{
    rq_http_drain_t d = {0};
    const int64_t t0 = 1000000000;

    cr_expect_eq(rq_http_drain_more(&d, 65536, t0), 1);
    cr_expect_eq(rq_http_drain_more(&d, RQ_HTTP_DRAIN_MAX_BYTES - 65536, t0 + 1), 1);
    cr_expect_eq(rq_http_drain_more(&d, 1, t0 + 2), 0, "one byte past the byte bound");

    rq_http_drain_t e = {0};
    cr_expect_eq(rq_http_drain_more(&e, 10, t0), 1);
    cr_expect_eq(rq_http_drain_more(&e, 10, t0 + (int64_t)RQ_HTTP_DRAIN_MAX_MS * 1000000), 1);
    cr_expect_eq(rq_http_drain_more(&e, 10, t0 + (int64_t)RQ_HTTP_DRAIN_MAX_MS * 1000000 + 1), 0,
                 "past the time bound");
}
