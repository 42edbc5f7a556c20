/* test_qsettings.c - per-queue settings: parsing x-relayq-max-retries out of a management API
 * queue object, and the cache's answers without a management API or with an unreachable one
 * (never blocking the caller). */
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "qsettings.h"
#include "util.h"

static int parse(const char *text, int *out)
{
    json_t *o = json_loads(text, 0, NULL);
    int rc;

    cr_assert_not_null(o, "%s", text);
    rc = rq_qsettings_parse_max_retries(o, out);
    json_decref(o);
    return rc;
}

Test(qsettings, parse_max_retries)
{
    int v = -7;

    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":3}}", &v), 1);
    cr_expect_eq(v, 3);
    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":0}}", &v), 1);
    cr_expect_eq(v, 0);
    v = -7;
    cr_expect_eq(parse("{\"arguments\":{}}", &v), 0);
    cr_expect_eq(parse("{\"name\":\"q\"}", &v), 0);
    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":\"3\"}}", &v), 0);
    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":-1}}", &v), 0);
    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":1001}}", &v), 0);
    cr_expect_eq(parse("{\"arguments\":{\"x-relayq-max-retries\":2.5}}", &v), 0);
    cr_expect_eq(v, -7, "left alone when absent or invalid");
    cr_expect_eq(rq_qsettings_parse_max_retries(NULL, &v), 0);
}

static rq_config_t cfg_with(const char *url)
{
    rq_config_t c;
    rq_config_error_t e;

    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_assert_eq(rq_config_set(&c, "RABBITMQ_MANAGEMENT_URL", url, &e), 0);
    return c;
}

Test(qsettings, without_management_api_the_default)
{
    rq_config_t c = cfg_with("off");
    rq_qsettings_t *s = rq_qsettings_new(&c, NULL, NULL);
    int v = -7;

    cr_assert_not_null(s);
    cr_expect_eq(rq_qsettings_max_retries(s, "q1", &v), 0);
    cr_expect_eq(v, -7);
    rq_qsettings_free(s);
    rq_config_free(&c);
}

static atomic_int notified;

static void on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&notified, 1);
}

/* a port nothing listens on: bound, never listening */
static int dead_port(int *fd)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);

    *fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(*fd >= 0);
    cr_assert_eq(bind(*fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(*fd, (struct sockaddr *)&a, &len), 0);
    return ntohs(a.sin_port);
}

Test(qsettings, unreachable_api_answers_at_once_then_the_default)
{
    char url[64];
    int fd, v = -7, rc = -1;
    rq_config_t c;
    rq_qsettings_t *s;
    int64_t t0;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d", dead_port(&fd));
    c = cfg_with(url);
    s = rq_qsettings_new(&c, on_notify, NULL);
    cr_assert_not_null(s);
    t0 = rq_mono_ms();
    cr_expect_eq(rq_qsettings_max_retries(s, "q1", &v), -1, "unknown yet: a lookup is asked");
    cr_expect_lt(rq_mono_ms() - t0, 50, "never blocks on the lookup");
    for (int i = 0; i < 500 && rc < 0; i++) {
        usleep(10000);
        rc = rq_qsettings_max_retries(s, "q1", &v);
    }
    cr_expect_eq(rc, 0, "a failed lookup: the default (MAX_RETRIES)");
    cr_expect_eq(v, -7);
    cr_expect_geq(atomic_load(&notified), 1, "the caller was told");
    rq_qsettings_free(s);
    rq_config_free(&c);
    close(fd);
}
