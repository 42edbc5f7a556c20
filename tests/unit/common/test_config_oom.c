/* test_config_oom.c - config loading (.env file) and rq_config_set() when any allocation
 * fails.
 *
 * Jansson's style: fail the n-th allocation, for every n, until a run completes without a
 * failure. A run must load exactly what a run without failures loads, or fail with -1, an
 * error text and the struct freed; nothing may leak (LSan, in the sanitizer build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "oom.h"
#include "config.h"
#include "config_table.h"

#define OOM_MAX_RUNS 100000ul

/* The runner's shell may export LOG_LEVEL and the like. */
static void clean_env(void)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);

    for (size_t i = 0; i < n; i++)
        unsetenv(t[i].name);
    unsetenv("ENV_FILE");
}

TestSuite(config_oom, .init = clean_env);

/* A line longer than getline()'s first buffer, so that it grows it. */
#define LONG_KEYS                                                                                  \
    "key-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,"                        \
    "key-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,"                        \
    "key-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static const char env_text[] = "# a comment\n"
                               "\n"
                               "RABBITMQ_HOST=broker.example\n"
                               "export RABBITMQ_PORT=5673\n"
                               "LOG_LEVEL=DEBUG\n"
                               "QUEUE_TYPE=classic\n"
                               "API_KEYS='" LONG_KEYS "'\n"
                               "OUTPUT_FILE=\"/tmp/out file\\n\" # trailing comment\n"
                               "MAX_PROCESSING_TIME=2.5\n"
                               "TAIL_STATE_DIR=state\n";

static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/rq-config-oom-XXXXXX");
    int fd;

    cr_assert_not_null(path);
    fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int is_zeroed(const rq_config_t *c)
{
    static const rq_config_t zero;

    return memcmp(c, &zero, sizeof(zero)) == 0;
}

static void check_loaded(const rq_config_t *c, unsigned long n)
{
    cr_assert_str_eq(c->rabbitmq.host, "broker.example", "n=%lu", n);
    cr_assert_eq(c->rabbitmq.port, 5673, "n=%lu", n);
    cr_assert_str_eq(c->log_level, "debug", "n=%lu", n);
    cr_assert_str_eq(c->rabbitmq.queue_type, "classic", "n=%lu", n);
    cr_assert_str_eq(c->api_keys, LONG_KEYS, "n=%lu", n);
    cr_assert_str_eq(c->output_file, "/tmp/out file\n", "n=%lu", n);
    cr_assert_eq(c->max_processing_time, 2.5, "n=%lu", n);
    cr_assert_str_eq(c->tail_state_dir, "state", "n=%lu", n);
    cr_assert_str_eq(c->rabbitmq.user, "guest", "n=%lu: a default", n);
}

Test(config_oom, load_env_file_every_allocation)
{
    char *path = write_temp(env_text);
    unsigned long n;
    int done = 0;

    for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
        rq_config_t c;
        rq_config_error_t err;
        int rc, injected;

        memset(&err, 0, sizeof(err));
        oom_start(n);
        rc = rq_config_load(&c, RQ_SVC_ALL, path, &err);
        injected = oom_stop();
        if (rc == 0) {
            check_loaded(&c, n);
            rq_config_free(&c);
        } else {
            cr_assert(injected, "load failed with no allocation failure: %s", err.text);
            cr_assert_eq(rc, -1, "n=%lu", n);
            cr_assert(strstr(err.text, "out of memory") != NULL ||
                          strstr(err.text, strerror(ENOMEM)) != NULL,
                      "n=%lu: error text \"%s\"", n, err.text);
            cr_assert(is_zeroed(&c), "n=%lu: the struct was not freed", n);
        }
        done = !injected;
    }
    cr_assert(done, "still failing after %lu runs", OOM_MAX_RUNS);
    cr_assert_gt(n, 2, "no allocation seen");
    unlink(path);
    free(path);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(config_oom, set_every_allocation)
{
    static const struct {
        const char *name, *value, *want;
    } sets[] = {
        {"RABBITMQ_HOST", "other.example", "other.example"},
        {"LOG_LEVEL", "warning", "warn"},
        {"QUEUE_TYPE", "quorum", "quorum"},
    };

    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        unsigned long n;
        int done = 0;

        for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
            rq_config_t c;
            rq_config_error_t err;
            const char *now;
            int rc, injected;

            cr_assert_eq(rq_config_defaults(&c), 0);
            cr_assert_eq(rq_config_set(&c, "RABBITMQ_HOST", "before", &err), 0);
            cr_assert_eq(rq_config_set(&c, "LOG_LEVEL", "error", &err), 0);
            cr_assert_eq(rq_config_set(&c, "QUEUE_TYPE", "classic", &err), 0);
            memset(&err, 0, sizeof(err));
            oom_start(n);
            rc = rq_config_set(&c, sets[i].name, sets[i].value, &err);
            injected = oom_stop();
            now = strcmp(sets[i].name, "RABBITMQ_HOST") == 0 ? c.rabbitmq.host
                  : strcmp(sets[i].name, "LOG_LEVEL") == 0   ? c.log_level
                                                             : c.rabbitmq.queue_type;
            if (rc == 0) {
                cr_assert_str_eq(now, sets[i].want, "%s, n=%lu", sets[i].name, n);
            } else {
                cr_assert(injected, "%s failed with no allocation failure: %s", sets[i].name,
                          err.text);
                cr_assert_eq(rc, -1);
                cr_assert_not_null(strstr(err.text, "out of memory"), "%s, n=%lu: \"%s\"",
                                   sets[i].name, n, err.text);
                cr_assert_not_null(now, "%s, n=%lu: the old value was lost", sets[i].name, n);
                cr_assert_str_neq(now, sets[i].want, "%s, n=%lu", sets[i].name, n);
            }
            rq_config_free(&c);
            done = !injected;
        }
        cr_assert(done, "%s: still failing after %lu runs", sets[i].name, OOM_MAX_RUNS);
        cr_assert_gt(n, 2, "%s: no allocation seen", sets[i].name);
    }
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}
