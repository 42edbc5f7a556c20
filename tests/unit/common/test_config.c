/* test_config.c - the settings table: defaults, validation, .env files, precedence, --help,
 * .env.example and the command line. */
#include <criterion/criterion.h>
#include <criterion/redirect.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_table.h"

/* Every test starts from an environment holding none of our variables (the runner's shell
 * may export LOG_LEVEL and the like). Criterion runs each test in its own process. */
static void clean_env(void)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);

    for (size_t i = 0; i < n; i++)
        unsetenv(t[i].name);
    unsetenv("ENV_FILE");
}

static void clean_env_redirect(void)
{
    clean_env();
    cr_redirect_stdout();
    cr_redirect_stderr();
}

TestSuite(config, .init = clean_env);
TestSuite(config_args, .init = clean_env_redirect);

/* Writes text to a fresh temp file; returns its malloc'd path. */
static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/rq_test_config_XXXXXX");
    int fd;
    size_t len = strlen(text);

    cr_assert_not_null(path);
    fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp failed");
    cr_assert_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void remove_temp(char *path)
{
    unlink(path);
    free(path);
}

/* Runs a printer into memory; returns the malloc'd text. */
static char *capture_help(unsigned services)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    cr_assert_not_null(f);
    rq_config_print_help(f, "prog", services);
    fclose(f);
    return buf;
}

static char *capture_env_example(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    cr_assert_not_null(f);
    rq_config_print_env_example(f);
    fclose(f);
    return buf;
}

static char *read_whole_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    FILE *m;
    char chunk[4096];
    size_t n;

    cr_assert_not_null(f, "cannot open %s", path);
    m = open_memstream(&buf, &len);
    cr_assert_not_null(m);
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    fclose(m);
    fclose(f);
    return buf;
}

/* Splits a copy of doc into lines (the array and the copy are malloc'd; free both). */
static char **split_lines(const char *doc, size_t *count, char **copy)
{
    size_t n = 0, cap = 16;
    char **lines = malloc(cap * sizeof *lines);
    char *rest, *line;

    *copy = strdup(doc);
    cr_assert(lines && *copy);
    rest = *copy;
    while ((line = strsep(&rest, "\n")) != NULL) {
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof *lines);
            cr_assert_not_null(lines);
        }
        lines[n++] = line;
    }
    *count = n;
    return lines;
}

/* Finds the line starting with `key` and joins, with single spaces, the run of lines that
 * start with `prefix` just before it (before=true) or just after it, without the prefix:
 * the printers wrap long descriptions. Returns a malloc'd string, or NULL if no such key. */
static char *block_near(const char *doc, const char *key, const char *prefix, bool before)
{
    size_t n, i, plen = strlen(prefix), first, last;
    char *copy, *out = NULL;
    char **lines = split_lines(doc, &n, &copy);

    for (i = 0; i < n; i++) {
        if (strncmp(lines[i], key, strlen(key)) == 0)
            break;
    }
    if (i == n)
        goto out;
    first = last = i;
    if (before) {
        while (first > 0 && strncmp(lines[first - 1], prefix, plen) == 0)
            first--;
        last = i; /* exclusive */
    } else {
        first = i + 1;
        last = first;
        while (last < n && strncmp(lines[last], prefix, plen) == 0)
            last++;
    }
    out = calloc(1, strlen(doc) + 1);
    cr_assert_not_null(out);
    for (size_t j = first; j < last; j++) {
        if (j > first)
            strcat(out, " ");
        strcat(out, lines[j] + plen);
    }
out:
    free(lines);
    free(copy);
    return out;
}

/* "description (range)" as the printers show it for d. */
static void expected_doc(const rq_cfg_desc_t *d, char *buf, size_t len)
{
    char range[256];

    rq_cfg_describe_range(d, range, sizeof range);
    snprintf(buf, len, "%s (%s)", d->desc, range);
}

/* ---- defaults: the values config.h documents ---- */

Test(config, defaults_match_the_header)
{
    rq_config_t c;

    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_expect_str_eq(c.rabbitmq.host, "localhost");
    cr_expect_eq(c.rabbitmq.port, 5672);
    cr_expect_str_eq(c.rabbitmq.user, "guest");
    cr_expect_str_eq(c.rabbitmq.password, "guest");
    cr_expect_str_eq(c.rabbitmq.vhost, "/");
    cr_expect_eq(c.rabbitmq.heartbeat, 30);
    cr_expect_eq(c.rabbitmq.connect_timeout_ms, 5000);
    cr_expect_str_eq(c.rabbitmq.request_queue, "request_queue");
    cr_expect_str_eq(c.rabbitmq.queue_type, "quorum");
    cr_expect_eq(c.rabbitmq.prefetch, 100);
    cr_expect_str_eq(c.log_level, "info");
    cr_expect_str_eq(c.producer_bind, "127.0.0.1");
    cr_expect_eq(c.producer_port, 5000);
    cr_expect_eq(c.max_body_bytes, 1048576);
    cr_expect_eq(c.max_batch_size, 1000);
    cr_expect_eq(c.max_processing_time, 60.0);
    cr_expect_eq(c.publish_timeout_ms, 5000);
    cr_expect_eq(c.reply_timeout_ms, 30000);
    cr_expect_eq(c.message_store_size, 10000);
    cr_expect_eq(c.max_pending, 100000);
    cr_expect_eq(c.http_threads, 2);
    cr_expect_eq(c.lease_max_outstanding, 10000);
    cr_expect_eq(c.lease_max_bytes, 67108864);
    cr_expect_eq(c.lease_max_waiters, 1000);
    cr_expect_eq(c.lease_idle_ms, 5000);
    cr_expect_str_eq(c.input_file, "");
    cr_expect_str_eq(c.tail_state_dir, "tail-state");
    cr_expect_str_eq(c.tail_from, "head");
    cr_expect_eq(c.tail_max_line_bytes, 1048576);
    cr_expect_str_eq(c.tail_overlong, "split");
    cr_expect_eq(c.tail_poll_ms, 250);
    cr_expect_eq(c.tail_rotate_wait_ms, 1000);
    cr_expect_eq(c.tail_batch_lines, 500);
    cr_expect_eq(c.tail_max_inflight_jobs, 16);
    cr_expect_eq(c.tail_chunk_bytes, 8192);
    cr_expect_str_eq(c.consumer_bind, "127.0.0.1");
    cr_expect_eq(c.consumer_port, 8000);
    cr_expect_str_eq(c.output_file, "");
    cr_expect_eq(c.batch_wait_ms, 0);
    rq_config_free(&c);
}

/* The names, ranges and services from config.h; the table must hold exactly these. */
static const struct {
    const char *name;
    rq_cfg_type_t type;
    double min, max; /* numbers; ignored for strings and enums */
    unsigned services;
} expected_table[] = {
    {"RABBITMQ_HOST", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_PORT", RQ_CFG_INT, 1, 65535, RQ_SVC_ALL},
    {"RABBITMQ_ADDRESSES", RQ_CFG_STRING, 0, 4095, RQ_SVC_ALL},
    {"RABBITMQ_ADDRESS_ORDER", RQ_CFG_ENUM, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_USER", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_PASS", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_VHOST", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_HEARTBEAT", RQ_CFG_INT, 0, 3600, RQ_SVC_ALL},
    {"RABBITMQ_CONNECT_TIMEOUT_MS", RQ_CFG_INT, 100, 120000, RQ_SVC_ALL},
    {"REQUEST_QUEUE", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"QUEUE_TYPE", RQ_CFG_ENUM, 0, 0, RQ_SVC_ALL},
    {"PREFETCH_COUNT", RQ_CFG_INT, 1, 65535, RQ_SVC_ALL},
    {"MAX_RETRIES", RQ_CFG_INT, 0, 20, RQ_SVC_ALL},
    {"RETRY_BASE_MS", RQ_CFG_INT, 10, 3600000, RQ_SVC_ALL},
    {"RABBITMQ_TLS", RQ_CFG_BOOL, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_TLS_CA", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_TLS_CERT", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_TLS_KEY", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_TLS_VERIFY", RQ_CFG_BOOL, 0, 0, RQ_SVC_ALL},
    {"RABBITMQ_MANAGEMENT_URL", RQ_CFG_STRING, 0, 1024, RQ_SVC_PRODUCER},
    {"STATUS_STREAM", RQ_CFG_STRING, 0, 200, RQ_SVC_ALL},
    {"STATUS_MAX_AGE_S", RQ_CFG_INT64, 60, 31536000, RQ_SVC_ALL},
    {"STATUS_MAX_BYTES", RQ_CFG_INT64, 4194304, 1099511627776.0, RQ_SVC_ALL},
    {"STATUS_REPLY_MAX", RQ_CFG_INT, 0, 1048576, RQ_SVC_ALL},
    {"HTTP_CONNECTION_TIMEOUT_S", RQ_CFG_INT, 0, 86400, RQ_SVC_ALL},
    {"HTTP_MAX_CONNECTIONS", RQ_CFG_INT, 1, 1000000, RQ_SVC_ALL},
    {"HTTP_MAX_CONNECTIONS_PER_IP", RQ_CFG_INT, 0, 1000000, RQ_SVC_ALL},
    {"MAX_HEADER_BYTES", RQ_CFG_INT, 4096, 1048576, RQ_SVC_ALL},
    {"HTTP_TLS_CERT", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"HTTP_TLS_KEY", RQ_CFG_STRING, 0, 0, RQ_SVC_ALL},
    {"LOG_LEVEL", RQ_CFG_ENUM, 0, 0, RQ_SVC_ALL},
    {"PRODUCER_BIND", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"PRODUCER_PORT", RQ_CFG_INT, 1, 65535, RQ_SVC_PRODUCER},
    {"MAX_BODY_BYTES", RQ_CFG_INT64, 1024, 64 * 1024 * 1024, RQ_SVC_PRODUCER},
    {"MAX_BATCH_SIZE", RQ_CFG_INT, 1, 100000, RQ_SVC_PRODUCER},
    {"MAX_PROCESSING_TIME", RQ_CFG_DOUBLE, 0, 3600, RQ_SVC_PRODUCER},
    {"PUBLISH_TIMEOUT_MS", RQ_CFG_INT, 100, 120000, RQ_SVC_PRODUCER},
    {"CONFIRM_STALL_MS", RQ_CFG_INT, 0, 600000, RQ_SVC_PRODUCER},
    {"REPLY_TIMEOUT_MS", RQ_CFG_INT, 100, 600000, RQ_SVC_PRODUCER},
    {"MESSAGE_STORE_SIZE", RQ_CFG_INT, 0, 10000000, RQ_SVC_PRODUCER},
    {"STATUS_REPLAY_S", RQ_CFG_INT64, 0, 31536000, RQ_SVC_PRODUCER},
    {"IDEMPOTENCY_TTL_S", RQ_CFG_INT64, 1, 31536000, RQ_SVC_PRODUCER},
    {"IDEMPOTENCY_KEYS_MAX", RQ_CFG_INT, 0, 100000000, RQ_SVC_PRODUCER},
    {"MAX_PENDING", RQ_CFG_INT, 1, 10000000, RQ_SVC_PRODUCER},
    {"HTTP_THREADS", RQ_CFG_INT, 1, 64, RQ_SVC_PRODUCER},
    {"LEASE_MAX_OUTSTANDING", RQ_CFG_INT, 1, 1000000, RQ_SVC_PRODUCER},
    {"LEASE_MAX_BYTES", RQ_CFG_INT64, 1048576, 17179869184LL, RQ_SVC_PRODUCER},
    {"LEASE_MAX_WAITERS", RQ_CFG_INT, 1, 100000, RQ_SVC_PRODUCER},
    {"LEASE_IDLE_MS", RQ_CFG_INT, 100, 600000, RQ_SVC_PRODUCER},
    {"RT_MAX_SUBSCRIPTIONS", RQ_CFG_INT, 0, 100000, RQ_SVC_PRODUCER},
    {"RT_MAX_SUBSCRIPTIONS_PER_KEY", RQ_CFG_INT, 0, 100000, RQ_SVC_PRODUCER},
    {"RT_SEND_BUFFER_BYTES", RQ_CFG_INT64, 4096, 67108864, RQ_SVC_PRODUCER},
    {"RT_HEARTBEAT_S", RQ_CFG_INT, 1, 3600, RQ_SVC_PRODUCER},
    {"RT_QUEUE_PREFETCH", RQ_CFG_INT, 1, 10000, RQ_SVC_PRODUCER},
    {"WS_MAX_FRAME_BYTES", RQ_CFG_INT64, 125, 16777216, RQ_SVC_PRODUCER},
    {"DOCS_UI_DIR", RQ_CFG_STRING, 0, 4095, RQ_SVC_PRODUCER},
    {"API_KEYS_FILE", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"API_KEYS", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"RATE_LIMIT_RPS", RQ_CFG_DOUBLE, 0, 1000000, RQ_SVC_PRODUCER},
    {"RATE_LIMIT_BURST", RQ_CFG_INT, 0, 1000000, RQ_SVC_PRODUCER},
    {"RATE_LIMIT_MAX_CLIENTS", RQ_CFG_INT, 16, 10000000, RQ_SVC_PRODUCER},
    {"QUEUE_RATE_LIMIT_RPS", RQ_CFG_DOUBLE, 0, 1000000, RQ_SVC_PRODUCER},
    {"QUEUE_RATE_LIMIT_BURST", RQ_CFG_INT, 0, 1000000, RQ_SVC_PRODUCER},
    {"JWKS_FILE", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"JWT_ISSUER", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"JWT_AUDIENCE", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"JWT_SCOPE_CLAIM", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"JWT_LEEWAY_S", RQ_CFG_INT, 0, 3600, RQ_SVC_PRODUCER},
    {"MAX_JSON_DEPTH", RQ_CFG_INT, 1, 1000, RQ_SVC_PRODUCER},
    {"INPUT_FILE", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"TAIL_STATE_DIR", RQ_CFG_STRING, 0, 0, RQ_SVC_PRODUCER},
    {"TAIL_FROM", RQ_CFG_ENUM, 0, 0, RQ_SVC_PRODUCER},
    {"TAIL_MAX_LINE_BYTES", RQ_CFG_INT64, 1, 64 * 1024 * 1024, RQ_SVC_PRODUCER},
    {"TAIL_OVERLONG", RQ_CFG_ENUM, 0, 0, RQ_SVC_PRODUCER},
    {"TAIL_POLL_MS", RQ_CFG_INT, 10, 60000, RQ_SVC_PRODUCER},
    {"TAIL_ROTATE_WAIT_MS", RQ_CFG_INT, 0, 600000, RQ_SVC_PRODUCER},
    {"TAIL_BATCH_LINES", RQ_CFG_INT, 1, 100000, RQ_SVC_PRODUCER},
    {"TAIL_MAX_INFLIGHT_JOBS", RQ_CFG_INT, 1, 1024, RQ_SVC_PRODUCER},
    {"TAIL_CHUNK_BYTES", RQ_CFG_INT, 1, 16777216, RQ_SVC_PRODUCER},
    {"CONSUMER_BIND", RQ_CFG_STRING, 0, 0, RQ_SVC_CONSUMER},
    {"CONSUMER_PORT", RQ_CFG_INT, 0, 65535, RQ_SVC_CONSUMER},
    {"OUTPUT_FILE", RQ_CFG_STRING, 0, 0, RQ_SVC_CONSUMER},
    {"BATCH_WAIT_MS", RQ_CFG_INT, 0, 1000, RQ_SVC_CONSUMER},
    {"DEDUP_ID_WINDOW", RQ_CFG_INT, 1, 10000000, RQ_SVC_CONSUMER},
    {"HANDLER", RQ_CFG_STRING, 1, 4095, RQ_SVC_CONSUMER},
    {"HANDLER_TIMEOUT_MS", RQ_CFG_INT, 1, 3600000, RQ_SVC_CONSUMER},
    {"HANDLER_CONCURRENCY", RQ_CFG_INT, 0, 65535, RQ_SVC_CONSUMER},
};
#define N_EXPECTED (sizeof expected_table / sizeof expected_table[0])

Test(config, table_holds_exactly_the_documented_settings)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);

    cr_assert_eq(n, N_EXPECTED, "table has %zu settings, config.h documents %zu", n,
                 (size_t)N_EXPECTED);
    for (size_t i = 0; i < N_EXPECTED; i++) {
        const rq_cfg_desc_t *d = NULL;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(t[j].name, expected_table[i].name) == 0) {
                cr_expect_null(d, "%s listed twice", t[j].name);
                d = &t[j];
            }
        }
        cr_assert_not_null(d, "%s missing from the table", expected_table[i].name);
        cr_expect_eq(d->type, expected_table[i].type, "%s: type", d->name);
        cr_expect_eq(d->services, expected_table[i].services, "%s: services", d->name);
        cr_expect(d->desc && *d->desc, "%s: no description", d->name);
        if (d->type == RQ_CFG_INT || d->type == RQ_CFG_INT64) {
            cr_expect_eq((double)d->min, expected_table[i].min, "%s: min", d->name);
            cr_expect_eq((double)d->max, expected_table[i].max, "%s: max", d->name);
        } else if (d->type == RQ_CFG_DOUBLE) {
            cr_expect_eq(d->dmin, expected_table[i].min, "%s: min", d->name);
            cr_expect_eq(d->dmax, expected_table[i].max, "%s: max", d->name);
        }
        if (d->type == RQ_CFG_INT) {
            cr_expect(d->min >= INT32_MIN && d->max <= INT32_MAX, "%s: bounds exceed int", d->name);
            cr_expect(d->offset + sizeof(int) <= sizeof(rq_config_t));
        }
    }
}

/* ---- rq_config_set: valid values of every type ---- */

Test(config, set_valid_values)
{
    rq_config_t c;

    cr_assert_eq(rq_config_defaults(&c), 0);
    static const struct {
        const char *name, *value;
    } cases[] = {
        {"RABBITMQ_PORT", "1"},         {"RABBITMQ_PORT", "65535"},
        {"RABBITMQ_PORT", "+5673"},     {"RABBITMQ_PORT", "00042"},
        {"RABBITMQ_HEARTBEAT", "0"},    {"CONSUMER_PORT", "0"},
        {"MAX_BODY_BYTES", "1024"},     {"MAX_BODY_BYTES", "67108864"},
        {"MAX_PROCESSING_TIME", "0"},   {"MAX_PROCESSING_TIME", "3600"},
        {"MAX_PROCESSING_TIME", "0.5"}, {"MAX_PROCESSING_TIME", "1e3"},
        {"MAX_PROCESSING_TIME", ".25"}, {"LOG_LEVEL", "debug"},
        {"LOG_LEVEL", "ERROR"},         {"QUEUE_TYPE", "classic"},
        {"RABBITMQ_PASS", ""},          {"OUTPUT_FILE", "/tmp/out file.txt"},
        {"RABBITMQ_HOST", "a"},         {"MESSAGE_STORE_SIZE", "10000000"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rq_config_error_t err = {{0}};
        cr_expect_eq(rq_config_set(&c, cases[i].name, cases[i].value, &err), 0,
                     "%s=\"%s\" rejected: %s", cases[i].name, cases[i].value, err.text);
    }
    rq_config_free(&c);
}

Test(config, set_stores_the_parsed_values)
{
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_assert_eq(rq_config_set(&c, "PRODUCER_PORT", "6001", &err), 0);
    cr_expect_eq(c.producer_port, 6001);
    cr_assert_eq(rq_config_set(&c, "MAX_BODY_BYTES", "67108864", &err), 0);
    cr_expect_eq(c.max_body_bytes, INT64_C(67108864));
    cr_assert_eq(rq_config_set(&c, "MAX_PROCESSING_TIME", "2.5", &err), 0);
    cr_expect_eq(c.max_processing_time, 2.5);
    cr_assert_eq(rq_config_set(&c, "LOG_LEVEL", "WaRn", &err), 0);
    cr_expect_str_eq(c.log_level, "warn", "enum values are stored in canonical form");
    cr_assert_eq(rq_config_set(&c, "QUEUE_TYPE", "ClAsSiC", &err), 0);
    cr_expect_str_eq(c.rabbitmq.queue_type, "classic");
    cr_assert_eq(rq_config_set(&c, "RABBITMQ_HOST", "rabbit.example", &err), 0);
    cr_expect_str_eq(c.rabbitmq.host, "rabbit.example");
    cr_assert_eq(rq_config_set(&c, "RABBITMQ_HOST", "again", &err), 0);
    cr_expect_str_eq(c.rabbitmq.host, "again");
    cr_assert_eq(rq_config_set(&c, "RABBITMQ_HEARTBEAT", "-0", &err), 0);
    cr_expect_eq(c.rabbitmq.heartbeat, 0);
    rq_config_free(&c);
}

/* Issue 11 item 16: .env files written for Python services say LOG_LEVEL=WARNING; every
 * common spelling is accepted (case-insensitively) and stored in its canonical form. */
Test(config, log_level_accepts_other_spellings)
{
    static const struct {
        const char *value, *want;
    } cases[] = {
        {"WARNING", "warn"}, {"warning", "warn"}, {"Warn", "warn"},      {"WARN", "warn"},
        {"ERROR", "error"},  {"err", "error"},    {"CRITICAL", "error"}, {"crit", "error"},
        {"FATAL", "error"},  {"INFO", "info"},    {"notice", "info"},    {"DEBUG", "debug"},
        {"trace", "debug"},
    };
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cr_expect_eq(rq_config_set(&c, "LOG_LEVEL", cases[i].value, &err), 0,
                     "LOG_LEVEL=%s rejected: %s", cases[i].value, err.text);
        cr_expect_str_eq(c.log_level, cases[i].want, "LOG_LEVEL=%s", cases[i].value);
    }
    cr_expect_eq(rq_config_set(&c, "LOG_LEVEL", "verbose", &err), -1);
    cr_expect(strstr(err.text, "warning") != NULL && strstr(err.text, "any case") != NULL,
              "the error lists the accepted spellings: %s", err.text);
    rq_config_free(&c);
}

/* ---- rq_config_set: invalid values; the error names the variable and what is allowed ---- */

Test(config, set_rejects_invalid_values)
{
    static char long_queue[202];
    static const struct {
        const char *name, *value, *expect; /* expect: a substring of the error */
    } cases[] = {
        {"PRODUCER_PORT", "70000", "PRODUCER_PORT: \"70000\" is out of range 1..65535"},
        {"PRODUCER_PORT", "0", "out of range 1..65535"},
        {"PRODUCER_PORT", "-1", "out of range 1..65535"},
        {"PRODUCER_PORT", "12abc", "PRODUCER_PORT: \"12abc\" is not an integer"},
        {"PRODUCER_PORT", "", "PRODUCER_PORT: \"\" is not an integer (allowed: 1..65535)"},
        {"PRODUCER_PORT", " 5000", "not an integer"},
        {"PRODUCER_PORT", "5000 ", "not an integer"},
        {"PRODUCER_PORT", "+", "not an integer"},
        {"PRODUCER_PORT", "0x10", "not an integer"},
        {"PRODUCER_PORT", "1.0", "not an integer"},
        {"PRODUCER_PORT", "99999999999999999999999", "out of range 1..65535"},
        {"PRODUCER_PORT", "4294972296", "out of range 1..65535"}, /* 2^32 + 5000 */
        {"RABBITMQ_HEARTBEAT", "3601", "RABBITMQ_HEARTBEAT: \"3601\" is out of range 0..3600"},
        {"HTTP_THREADS", "65", "HTTP_THREADS: \"65\" is out of range 1..64"},
        {"CONSUMER_PORT", "65536", "CONSUMER_PORT: \"65536\" is out of range 0..65535"},
        {"BATCH_WAIT_MS", "1001", "out of range 0..1000"},
        {"MAX_BODY_BYTES", "1023", "MAX_BODY_BYTES: \"1023\" is out of range 1024..67108864"},
        {"MAX_BODY_BYTES", "67108865", "out of range 1024..67108864"},
        {"MAX_BODY_BYTES", "9223372036854775808", "out of range 1024..67108864"},
        {"MAX_BODY_BYTES", "1MiB", "MAX_BODY_BYTES: \"1MiB\" is not an integer"},
        {"MAX_PROCESSING_TIME", "3600.5",
         "MAX_PROCESSING_TIME: \"3600.5\" is out of range 0..3600"},
        {"MAX_PROCESSING_TIME", "-0.1", "out of range 0..3600"},
        {"MAX_PROCESSING_TIME", "abc", "MAX_PROCESSING_TIME: \"abc\" is not a number"},
        {"MAX_PROCESSING_TIME", "", "is not a number (allowed: 0..3600)"},
        {"MAX_PROCESSING_TIME", "nan", "not a number"},
        {"MAX_PROCESSING_TIME", "inf", "not a number"},
        {"MAX_PROCESSING_TIME", "0x10", "not a number"},
        {"MAX_PROCESSING_TIME", "1e", "not a number"},
        {"MAX_PROCESSING_TIME", "1.2.3", "not a number"},
        {"MAX_PROCESSING_TIME", "1e999", "out of range 0..3600"},
        {"LOG_LEVEL", "verbose", "LOG_LEVEL: \"verbose\" is not one of debug|info|warn|error"},
        {"LOG_LEVEL", "", "is not one of debug|info|warn|error"},
        {"LOG_LEVEL", "info ", "is not one of"},
        {"QUEUE_TYPE", "stream", "QUEUE_TYPE: \"stream\" is not one of classic|quorum"},
        {"RABBITMQ_HOST", "", "RABBITMQ_HOST: \"\" must be 1..255 characters long"},
        {"RABBITMQ_VHOST", "", "RABBITMQ_VHOST"},
        {"REQUEST_QUEUE", long_queue, "REQUEST_QUEUE: \"qqqq"},
        {"PRODUCER_PORT", "1\n2", "\"1\\x0a2\""},
        {"NO_SUCH_SETTING", "1", "unknown setting NO_SUCH_SETTING"},
    };
    rq_config_t c;

    memset(long_queue, 'q', sizeof long_queue - 1);
    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rq_config_error_t err = {{0}};
        int rc = rq_config_set(&c, cases[i].name, cases[i].value, &err);
        cr_expect_eq(rc, -1, "%s=\"%s\" accepted", cases[i].name, cases[i].value);
        cr_expect(strstr(err.text, cases[i].expect) != NULL, "%s=\"%s\": error \"%s\" lacks \"%s\"",
                  cases[i].name, cases[i].value, err.text, cases[i].expect);
        if (strncmp(cases[i].name, "NO_SUCH", 7) != 0)
            cr_expect(strncmp(err.text, cases[i].name, strlen(cases[i].name)) == 0,
                      "error \"%s\" does not start with the variable name", err.text);
    }
    /* a rejected value leaves the previous one in place */
    cr_expect_eq(c.producer_port, 5000);
    cr_expect_str_eq(c.rabbitmq.host, "localhost");
    cr_expect_str_eq(c.log_level, "info");
    cr_expect_eq(c.max_processing_time, 60.0);
    rq_config_free(&c);
}

Test(config, long_values_are_cut_in_errors)
{
    char value[2000];
    rq_config_t c;
    rq_config_error_t err;

    memset(value, '7', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_assert_eq(rq_config_set(&c, "PRODUCER_PORT", value, &err), -1);
    cr_expect(strstr(err.text, "...\" is out of range 1..65535") != NULL, "%s", err.text);
    rq_config_free(&c);
}

Test(config, password_is_never_echoed)
{
    char value[1100];
    rq_config_t c;
    rq_config_error_t err;

    memset(value, 'S', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_assert_eq(rq_config_set(&c, "RABBITMQ_PASS", value, &err), -1);
    cr_expect(strstr(err.text, "RABBITMQ_PASS") != NULL, "%s", err.text);
    cr_expect(strstr(err.text, "0..1024 characters") != NULL, "%s", err.text);
    cr_expect(strstr(err.text, "SSS") == NULL, "password echoed: %s", err.text);
    cr_expect_str_eq(c.rabbitmq.password, "guest");
    rq_config_free(&c);
}

/* ---- the bool type, through a descriptor of a test struct ---- */

typedef struct probe {
    bool flag;
    char *name;
} probe_t;

static const rq_cfg_desc_t bool_desc = {"TEST_FLAG",
                                        RQ_CFG_BOOL,
                                        "false",
                                        offsetof(probe_t, flag),
                                        0,
                                        0,
                                        0,
                                        0,
                                        NULL,
                                        RQ_SVC_ALL,
                                        0,
                                        RQ_CFG_GROUP_GENERAL,
                                        "a test flag",
                                        0};

Test(config, bool_values)
{
    static const struct {
        const char *text;
        int rc;
        bool value;
    } cases[] = {
        {"true", 0, true}, {"TRUE", 0, true},    {"1", 0, true},     {"yes", 0, true},
        {"Yes", 0, true},  {"false", 0, false},  {"0", 0, false},    {"no", 0, false},
        {"NO", 0, false},  {"", -1, false},      {"2", -1, false},   {"on", -1, false},
        {"y", -1, false},  {"true ", -1, false}, {"tru", -1, false}, {"yesno", -1, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        probe_t p = {.flag = !cases[i].value};
        rq_config_error_t err = {{0}};
        int rc = rq_cfg_parse(&bool_desc, &p, cases[i].text, &err);
        cr_expect_eq(rc, cases[i].rc, "\"%s\": rc %d", cases[i].text, rc);
        if (rc == 0) {
            cr_expect_eq(p.flag, cases[i].value, "\"%s\"", cases[i].text);
        } else {
            cr_expect_eq(p.flag, !cases[i].value, "\"%s\" changed the field", cases[i].text);
            cr_expect(strstr(err.text, "TEST_FLAG: ") == err.text, "%s", err.text);
            cr_expect(strstr(err.text, "true|false|1|0|yes|no") != NULL, "%s", err.text);
        }
    }
}

Test(config, describe_range)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);
    char buf[256];

    for (size_t i = 0; i < n; i++) {
        rq_cfg_describe_range(&t[i], buf, sizeof buf);
        if (strcmp(t[i].name, "LOG_LEVEL") == 0)
            cr_expect_str_eq(buf, "debug|info|warn|error");
        if (strcmp(t[i].name, "QUEUE_TYPE") == 0)
            cr_expect_str_eq(buf, "classic|quorum");
        if (strcmp(t[i].name, "MAX_PROCESSING_TIME") == 0)
            cr_expect_str_eq(buf, "0..3600");
        if (strcmp(t[i].name, "RABBITMQ_PORT") == 0)
            cr_expect_str_eq(buf, "1..65535");
        if (strcmp(t[i].name, "RABBITMQ_HOST") == 0)
            cr_expect_str_eq(buf, "1..255 characters");
    }
    rq_cfg_describe_range(&bool_desc, buf, 5);
    cr_expect_str_eq(buf, "true", "output is cut to the buffer");
}

/* ---- rq_config_free ---- */

Test(config, free_zeroes_and_is_idempotent)
{
    rq_config_t c, zero;

    memset(&zero, 0, sizeof zero);
    cr_assert_eq(rq_config_defaults(&c), 0);
    rq_config_free(&c);
    cr_expect_null(c.rabbitmq.host);
    cr_expect_null(c.log_level);
    cr_expect_null(c.output_file);
    cr_expect_eq(memcmp(&c, &zero, sizeof c), 0);
    rq_config_free(&c);
    rq_config_free(NULL);
}

/* ---- rq_env_parse_line ---- */

Test(config, env_parse_line_cases)
{
    static const struct {
        const char *line;
        int rc;
        const char *name, *value; /* name NULL: blank or comment */
    } cases[] = {
        {"", 0, NULL, NULL},
        {"\n", 0, NULL, NULL},
        {"   \t \r\n", 0, NULL, NULL},
        {"# a comment", 0, NULL, NULL},
        {"   # indented = comment", 0, NULL, NULL},
        {"FOO=bar", 0, "FOO", "bar"},
        {"FOO=bar\n", 0, "FOO", "bar"},
        {"FOO=bar\r\n", 0, "FOO", "bar"},
        {"  FOO  =  bar  ", 0, "FOO", "bar"},
        {"\tFOO\t=\tbar baz\t", 0, "FOO", "bar baz"},
        {"export FOO=bar", 0, "FOO", "bar"},
        {"export   FOO = bar", 0, "FOO", "bar"},
        {"export=1", 0, "export", "1"},
        {"exportFOO=1", 0, "exportFOO", "1"},
        {"FOO=", 0, "FOO", ""},
        {"FOO=   ", 0, "FOO", ""},
        {"FOO= # only a comment", 0, "FOO", ""},
        {"FOO=bar # comment", 0, "FOO", "bar"},
        {"FOO=bar\t# comment", 0, "FOO", "bar"},
        {"FOO=bar#notcomment", 0, "FOO", "bar#notcomment"},
        {"FOO=#x", 0, "FOO", "#x"},
        {"FOO=a=b", 0, "FOO", "a=b"},
        {"FOO=it's", 0, "FOO", "it's"},
        {"FOO=a\"b", 0, "FOO", "a\"b"},
        {"_x9=1", 0, "_x9", "1"},
        {"FOO='single quoted'", 0, "FOO", "single quoted"},
        {"FOO='  keep  # spaces '  # comment", 0, "FOO", "  keep  # spaces "},
        {"FOO='a\\nb'", 0, "FOO", "a\\nb"},
        {"FOO='has \"double\"'", 0, "FOO", "has \"double\""},
        {"FOO=''", 0, "FOO", ""},
        {"FOO=\"\"", 0, "FOO", ""},
        {"FOO=\"a\\nb\"", 0, "FOO", "a\nb"},
        {"FOO=\"say \\\"hi\\\"\"", 0, "FOO", "say \"hi\""},
        {"FOO=\"back\\\\slash\"", 0, "FOO", "back\\slash"},
        {"FOO=\"keep \\t unknown\"", 0, "FOO", "keep \\t unknown"},
        {"FOO=\"it's # not a comment\" # comment", 0, "FOO", "it's # not a comment"},
        {"FOO=\"x\"#c", 0, "FOO", "x"},
        {"FOO=\"x\"\r\n", 0, "FOO", "x"},
        {"FOO='x'  \n", 0, "FOO", "x"},
        {"FOO='unterminated", -1, NULL, NULL},
        {"FOO=\"unterminated", -1, NULL, NULL},
        {"FOO=\"ends in backslash\\", -1, NULL, NULL},
        {"FOO=\"escaped quote\\\"", -1, NULL, NULL},
        {"FOO='x' trailing", -1, NULL, NULL},
        {"FOO=\"x\"y", -1, NULL, NULL},
        {"FOO", -1, NULL, NULL},
        {"FOO bar", -1, NULL, NULL},
        {"export FOO", -1, NULL, NULL},
        {"export", -1, NULL, NULL},
        {"=value", -1, NULL, NULL},
        {"1FOO=x", -1, NULL, NULL},
        {"FOO-BAR=x", -1, NULL, NULL},
        {"FOO.BAR=x", -1, NULL, NULL},
        {"FÖO=x", -1, NULL, NULL},
        {"FOO BAR=x", -1, NULL, NULL},
        {"\"FOO\"=x", -1, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *line = strdup(cases[i].line);
        char *name = (char *)1, *value = (char *)1;
        rq_config_error_t err = {{0}};
        int rc = rq_env_parse_line(line, &name, &value, &err);

        cr_expect_eq(rc, cases[i].rc, "[%s]: rc %d (%s)", cases[i].line, rc, err.text);
        if (rc == 0 && cases[i].rc == 0) {
            if (cases[i].name) {
                cr_expect(name && strcmp(name, cases[i].name) == 0, "[%s]: name [%s]",
                          cases[i].line, name ? name : "(null)");
                cr_expect(value && strcmp(value, cases[i].value) == 0, "[%s]: value [%s]",
                          cases[i].line, value ? value : "(null)");
            } else {
                cr_expect_null(name, "[%s]: expected no name", cases[i].line);
                cr_expect_null(value, "[%s]: expected no value", cases[i].line);
            }
        } else if (rc == -1) {
            cr_expect(err.text[0] != '\0', "[%s]: empty error", cases[i].line);
        }
        free(line);
    }
}

Test(config, env_parse_line_error_texts)
{
    static const struct {
        const char *line, *expect;
    } cases[] = {
        {"FOO='abc", "column 5: unterminated single quote"},
        {"FOO=\"abc", "column 5: unterminated double quote"},
        {"FOO", "missing '=' after FOO"},
        {"FOO-BAR=1", "invalid character in variable name FOO"},
        {"9X=1", "expected a variable name"},
        {"A='b' c", "unexpected text after the closing quote"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *line = strdup(cases[i].line);
        char *name, *value;
        rq_config_error_t err = {{0}};
        cr_expect_eq(rq_env_parse_line(line, &name, &value, &err), -1, "[%s]", cases[i].line);
        cr_expect(strstr(err.text, cases[i].expect) != NULL, "[%s]: \"%s\" lacks \"%s\"",
                  cases[i].line, err.text, cases[i].expect);
        free(line);
    }
}

/* Random lines from an alphabet rich in the parser's special characters, each in an
 * exactly-sized heap buffer so ASan sees any overread. Bounded: 50,000 lines. */
Test(config, env_parse_line_random_lines)
{
    static const char alphabet[] = "AZaz_09=#'\"\\ \t\r\nexport.-\x01\xff";
    uint64_t state = 0x9e3779b97f4a7c15u;

    for (int iter = 0; iter < 50000; iter++) {
        size_t len;
        char *line, *name, *value;
        rq_config_error_t err = {{0}};
        int rc;

        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        len = state % 40;
        line = malloc(len + 1);
        cr_assert_not_null(line);
        for (size_t i = 0; i < len; i++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            line[i] = alphabet[state % (sizeof alphabet - 1)];
        }
        line[len] = '\0';
        if (iter % 3 == 0 && len > 6)
            memcpy(line, "export ", 7 <= len ? 7 : len);
        rc = rq_env_parse_line(line, &name, &value, &err);
        cr_assert(rc == 0 || rc == -1);
        if (rc == -1) {
            cr_assert(err.text[0] != '\0' && memchr(err.text, '\0', sizeof err.text));
        } else if (name) {
            cr_assert(name >= line && name < line + len);
            cr_assert(value >= line && value <= line + len);
            cr_assert(strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
                                   "0123456789") == strlen(name) &&
                      strlen(name) > 0 && !(name[0] >= '0' && name[0] <= '9'));
        } else {
            cr_assert_null(value);
        }
        free(line);
    }
}

/* ---- rq_config_load: .env files and precedence ---- */

Test(config, load_defaults_without_file_or_environment)
{
    rq_config_t c, d;
    rq_config_error_t err;

    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &err), 0, "%s", err.text);
    cr_assert_eq(rq_config_defaults(&d), 0);
    cr_expect_eq(c.producer_port, d.producer_port);
    cr_expect_str_eq(c.rabbitmq.host, d.rabbitmq.host);
    rq_config_free(&c);
    rq_config_free(&d);
}

Test(config, precedence_defaults_file_environment)
{
    char *path = write_temp("# settings for the test\n"
                            "\n"
                            "PRODUCER_PORT=6000\n"
                            "export RABBITMQ_HOST = filehost # comment\n"
                            "RABBITMQ_PASS='from file'\n"
                            "LOG_LEVEL=\"debug\"\n"
                            "CONSUMER_PORT=9000\n");
    rq_config_t c;
    rq_config_error_t err = {{0}};

    setenv("PRODUCER_PORT", "7000", 1);
    setenv("QUEUE_TYPE", "classic", 1);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_PRODUCER, path, &err), 0, "%s", err.text);
    cr_expect_eq(c.producer_port, 7000, "the environment overrides the file");
    cr_expect_str_eq(c.rabbitmq.host, "filehost", "the file overrides the default");
    cr_expect_str_eq(c.rabbitmq.password, "from file");
    cr_expect_str_eq(c.log_level, "debug");
    cr_expect_str_eq(c.rabbitmq.queue_type, "classic", "the environment overrides the default");
    cr_expect_eq(c.rabbitmq.port, 5672, "untouched settings keep the default");
    cr_expect_eq(c.consumer_port, 8000, "consumer settings are not applied to the producer");
    rq_config_free(&c);

    cr_assert_eq(rq_config_load(&c, RQ_SVC_CONSUMER, path, &err), 0, "%s", err.text);
    cr_expect_eq(c.consumer_port, 9000);
    cr_expect_eq(c.producer_port, 5000, "producer settings are not applied to the consumer");
    cr_expect_str_eq(c.rabbitmq.host, "filehost");
    rq_config_free(&c);
    remove_temp(path);
}

Test(config, later_lines_override_earlier_ones)
{
    char *path = write_temp("PRODUCER_PORT=6000\nPRODUCER_PORT=6001");
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_load(&c, RQ_SVC_PRODUCER, path, &err), 0, "%s", err.text);
    cr_expect_eq(c.producer_port, 6001, "the last line (even without a newline) wins");
    rq_config_free(&c);
    remove_temp(path);
}

Test(config, environment_of_the_other_service_is_ignored)
{
    rq_config_t c;
    rq_config_error_t err = {{0}};

    setenv("CONSUMER_PORT", "not a port", 1);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_PRODUCER, NULL, &err), 0, "%s", err.text);
    rq_config_free(&c);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_CONSUMER, NULL, &err), -1);
    cr_expect(strstr(err.text, "CONSUMER_PORT: \"not a port\" is not an integer") != NULL, "%s",
              err.text);
}

Test(config, bad_environment_value_fails_and_frees)
{
    rq_config_t c;
    rq_config_error_t err = {{0}};

    setenv("PRODUCER_PORT", "70000", 1);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_PRODUCER, NULL, &err), -1);
    cr_expect_str_eq(err.text, "PRODUCER_PORT: \"70000\" is out of range 1..65535");
    cr_expect_null(c.rabbitmq.host, "the struct is freed on failure");
    cr_expect_null(c.log_level);
}

Test(config, environment_password_is_never_echoed)
{
    rq_config_t c;
    rq_config_error_t err = {{0}};
    char value[1100];

    memset(value, 'S', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    setenv("RABBITMQ_PASS", value, 1);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_CONSUMER, NULL, &err), -1);
    cr_expect(strstr(err.text, "SSS") == NULL, "%s", err.text);
    setenv("RABBITMQ_PASS", "s3cret", 1);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_CONSUMER, NULL, &err), 0);
    cr_expect_str_eq(c.rabbitmq.password, "s3cret");
    rq_config_free(&c);
}

static void expect_file_error(const char *text, unsigned services, const char *expect_line,
                              const char *expect)
{
    char *path = write_temp(text);
    char prefix[256];
    rq_config_t c;
    rq_config_error_t err = {{0}};

    cr_assert_eq(rq_config_load(&c, services, path, &err), -1, "[%s] loaded", text);
    snprintf(prefix, sizeof prefix, "%s:%s: ", path, expect_line);
    cr_expect(strncmp(err.text, prefix, strlen(prefix)) == 0, "error \"%s\" lacks \"%s\"", err.text,
              prefix);
    cr_expect(strstr(err.text, expect) != NULL, "error \"%s\" lacks \"%s\"", err.text, expect);
    cr_expect_null(c.rabbitmq.host, "the struct is freed on failure");
    remove_temp(path);
}

Test(config, file_errors_name_the_file_and_line)
{
    expect_file_error("PRODUCER_PORT=6000\n# comment\nPRODUCER_PROT=6001\n", RQ_SVC_PRODUCER, "3",
                      "unknown variable PRODUCER_PROT");
    /* an unknown name is an error even for a service that would skip it */
    expect_file_error("\n\n\n\nTYPO=1\n", RQ_SVC_CONSUMER, "5", "unknown variable TYPO");
    expect_file_error("RABBITMQ_HOST=x\nPRODUCER_PORT=70000\n", RQ_SVC_PRODUCER, "2",
                      "PRODUCER_PORT: \"70000\" is out of range 1..65535");
    expect_file_error("LOG_LEVEL='debug\n", RQ_SVC_ALL, "1", "unterminated single quote");
    expect_file_error("A\n", RQ_SVC_ALL, "1", "missing '='");
    expect_file_error("LOG_LEVEL=info\nLOG_LEVEL=loud\n", RQ_SVC_ALL, "2",
                      "LOG_LEVEL: \"loud\" is not one of debug|info|warn|error");
}

Test(config, file_with_nul_byte_is_an_error)
{
    char path[] = "/tmp/rq_test_config_XXXXXX";
    int fd = mkstemp(path);
    static const char text[] = "LOG_LEVEL=info\nLOG_LEVEL=de\0bug\n";
    rq_config_t c;
    rq_config_error_t err = {{0}};

    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_ALL, path, &err), -1);
    cr_expect(strstr(err.text, ":2: NUL byte") != NULL, "%s", err.text);
    unlink(path);
}

Test(config, missing_file_is_an_error)
{
    rq_config_t c;
    rq_config_error_t err = {{0}};

    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, "/nonexistent/relayq.env", &err), -1);
    cr_expect_str_eq(err.text, "/nonexistent/relayq.env: No such file or directory");
    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, "/tmp", &err), -1);
    cr_expect(strstr(err.text, "/tmp: ") == err.text, "%s", err.text);
}

/* ---- --help ---- */

Test(config, help_lists_the_settings_of_the_service_only)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);
    static const unsigned masks[] = {RQ_SVC_PRODUCER, RQ_SVC_CONSUMER, RQ_SVC_ALL};

    for (size_t m = 0; m < 3; m++) {
        char *help = capture_help(masks[m]);
        cr_assert_not_null(help);
        cr_expect(strstr(help, "Usage: prog [OPTIONS]") != NULL);
        cr_expect(strstr(help, "--env-file PATH") != NULL);
        cr_expect(strstr(help, "--print-env-example") != NULL);
        cr_expect(strstr(help, "--version") != NULL);
        cr_expect(strstr(help, "ENV_FILE") != NULL);
        cr_expect(strstr(help, "\nRabbitMQ:\n") != NULL);
        cr_expect((strstr(help, "\nProducer:\n") != NULL) == !!(masks[m] & RQ_SVC_PRODUCER));
        cr_expect((strstr(help, "\nConsumer:\n") != NULL) == !!(masks[m] & RQ_SVC_CONSUMER));
        for (size_t i = 0; i < n; i++) {
            char entry[256];
            snprintf(entry, sizeof entry, "\n  %s=", t[i].name);
            bool listed = strstr(help, entry) != NULL;
            cr_expect_eq(listed, (t[i].services & masks[m]) != 0, "mask %u: %s listed: %d",
                         masks[m], t[i].name, listed);
            if (listed) {
                char key[256], doc[600];
                char *got;
                snprintf(key, sizeof key, "  %s=", t[i].name);
                got = block_near(help, key, "      ", false);
                expected_doc(&t[i], doc, sizeof doc);
                cr_expect(got && strcmp(got, doc) == 0, "%s: help says [%s], want [%s]", t[i].name,
                          got ? got : "(none)", doc);
                free(got);
            }
        }
        free(help);
    }
}

Test(config, help_shows_defaults_and_ranges)
{
    char *help = capture_help(RQ_SVC_PRODUCER);

    cr_expect(strstr(help, "  PRODUCER_PORT=5000\n      TCP port of the producer's HTTP API "
                           "(1..65535)\n") != NULL,
              "%s", help);
    /* long descriptions are wrapped within 79 columns */
    for (const char *p = help; *p;) {
        size_t len = strcspn(p, "\n");
        cr_expect(len <= 79, "help line longer than 79 columns: %.*s", (int)len, p);
        p += len + (p[len] != '\0');
    }
    cr_expect(strstr(help, "  LOG_LEVEL=info\n") != NULL);
    cr_expect(strstr(help, "(debug|info|warn|error)") != NULL);
    cr_expect(strstr(help, "(classic|quorum)") != NULL);
    cr_expect(strstr(help, "  MAX_BODY_BYTES=1048576\n") != NULL);
    cr_expect(strstr(help, "(1024..67108864)") != NULL);
    cr_expect(strstr(help, "  MAX_PROCESSING_TIME=60\n") != NULL);
    free(help);
}

Test(config, help_never_shows_the_environment_password)
{
    char *help;

    setenv("RABBITMQ_PASS", "topsecret-from-env", 1);
    help = capture_help(RQ_SVC_ALL);
    cr_expect(strstr(help, "topsecret") == NULL);
    cr_expect(strstr(help, "RABBITMQ_PASS=guest\n") != NULL, "the public default is shown");
    free(help);
}

/* ---- .env.example ---- */

Test(config, env_example_is_the_committed_file)
{
    char *expected = capture_env_example();
    char *committed = read_whole_file(RQ_SOURCE_DIR "/.env.example");

    cr_expect_str_eq(committed, expected,
                     ".env.example is stale: regenerate it with "
                     "build/bin/relayq_env_example > .env.example");
    free(expected);
    free(committed);
}

Test(config, env_example_documents_every_setting)
{
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);
    char *text = capture_env_example();

    cr_expect(strstr(text, "Precedence") != NULL);
    cr_expect(strstr(text, "# ---- RabbitMQ") != NULL);
    cr_expect(strstr(text, "# ---- Producer") != NULL);
    cr_expect(strstr(text, "# ---- Consumer") != NULL);
    cr_expect(strstr(text, "\n# Broker AMQP port (1..65535)\nRABBITMQ_PORT=5672\n") != NULL);
    for (size_t i = 0; i < n; i++) {
        char key[256], doc[600], *got;
        snprintf(key, sizeof key, "%s=", t[i].name);
        got = block_near(text, key, "# ", true);
        expected_doc(&t[i], doc, sizeof doc);
        cr_expect(got && strcmp(got, doc) == 0, "%s: documented as [%s], want [%s]", t[i].name,
                  got ? got : "(none)", doc);
        free(got);
    }
    for (const char *p = text; *p;) {
        size_t len = strcspn(p, "\n");
        cr_expect(len <= 88, "line longer than 88 columns: %.*s", (int)len, p);
        p += len + (p[len] != '\0');
    }
    free(text);
}

/* Loading the example as an env file gives exactly the defaults, for every service. */
Test(config, env_example_loads_as_the_defaults)
{
    char *text = capture_env_example();
    char *path = write_temp(text);
    size_t n;
    const rq_cfg_desc_t *t = rq_config_table(&n);
    rq_config_t c, d;
    rq_config_error_t err = {{0}};

    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, path, &err), 0, "%s", err.text);
    cr_assert_eq(rq_config_defaults(&d), 0);
    for (size_t i = 0; i < n; i++) {
        const char *a = (const char *)&c + t[i].offset, *b = (const char *)&d + t[i].offset;
        switch (t[i].type) {
        case RQ_CFG_STRING:
        case RQ_CFG_ENUM:
            cr_expect_str_eq(*(char *const *)(const void *)a, *(char *const *)(const void *)b, "%s",
                             t[i].name);
            break;
        case RQ_CFG_INT:
            cr_expect_eq(*(const int *)(const void *)a, *(const int *)(const void *)b, "%s",
                         t[i].name);
            break;
        case RQ_CFG_INT64:
            cr_expect_eq(*(const int64_t *)(const void *)a, *(const int64_t *)(const void *)b, "%s",
                         t[i].name);
            break;
        case RQ_CFG_DOUBLE:
            cr_expect_eq(*(const double *)(const void *)a, *(const double *)(const void *)b, "%s",
                         t[i].name);
            break;
        case RQ_CFG_BOOL:
            cr_expect_eq(*(const bool *)(const void *)a, *(const bool *)(const void *)b, "%s",
                         t[i].name);
            break;
        }
    }
    rq_config_free(&c);
    rq_config_free(&d);
    remove_temp(path);
    free(text);
}

/* ---- rq_config_from_args ---- */

static int run_args(rq_config_t *c, int argc, const char **argv, unsigned services)
{
    return rq_config_from_args(c, argc, (char **)argv, "prog", services);
}

Test(config_args, version)
{
    rq_config_t c;
    const char *argv[] = {"prog", "--version"};

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_PRODUCER), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("prog relayq 0.1.0\n");
}

Test(config_args, short_version)
{
    rq_config_t c;
    const char *argv[] = {"prog", "-V"};

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_CONSUMER), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str("prog relayq 0.1.0\n");
}

Test(config_args, help)
{
    rq_config_t c;
    const char *argv[] = {"prog", "-h"};
    char *expected = capture_help(RQ_SVC_CONSUMER);

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_CONSUMER), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str(expected);
    free(expected);
}

Test(config_args, long_help_wins_over_a_bad_environment)
{
    rq_config_t c;
    const char *argv[] = {"prog", "--help"};

    setenv("PRODUCER_PORT", "bad", 1);
    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_PRODUCER), 1);
}

Test(config_args, print_env_example)
{
    rq_config_t c;
    const char *argv[] = {"prog", "--print-env-example"};
    char *expected = capture_env_example();

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_PRODUCER), 1);
    fflush(stdout);
    cr_assert_stdout_eq_str(expected);
    free(expected);
}

Test(config_args, unknown_option)
{
    rq_config_t c;
    const char *argv[] = {"prog", "--bogus"};

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_PRODUCER), -1);
    fflush(stderr);
    cr_assert_stderr_eq_str("prog: unknown option '--bogus'\n"
                            "Try 'prog --help' for more information.\n");
}

Test(config_args, unexpected_argument)
{
    rq_config_t c;
    const char *argv[] = {"prog", "stray"};

    cr_assert_eq(run_args(&c, 2, argv, RQ_SVC_PRODUCER), -1);
}

Test(config_args, env_file_needs_a_path)
{
    rq_config_t c;
    const char *argv1[] = {"prog", "--env-file"};
    const char *argv2[] = {"prog", "--env-file="};

    cr_expect_eq(run_args(&c, 2, argv1, RQ_SVC_PRODUCER), -1);
    cr_expect_eq(run_args(&c, 2, argv2, RQ_SVC_PRODUCER), -1);
    fflush(stderr);
    cr_expect_stderr_eq_str("prog: option '--env-file' needs a PATH\n"
                            "Try 'prog --help' for more information.\n"
                            "prog: option '--env-file' needs a non-empty PATH\n"
                            "Try 'prog --help' for more information.\n");
}

Test(config_args, env_file_both_spellings)
{
    char *path = write_temp("PRODUCER_PORT=6100\n");
    char joined[512];
    rq_config_t c;
    const char *argv1[] = {"prog", "--env-file", path};
    const char *argv2[] = {"prog", joined};

    snprintf(joined, sizeof joined, "--env-file=%s", path);
    cr_assert_eq(run_args(&c, 3, argv1, RQ_SVC_PRODUCER), 0);
    cr_expect_eq(c.producer_port, 6100);
    rq_config_free(&c);
    cr_assert_eq(run_args(&c, 2, argv2, RQ_SVC_PRODUCER), 0);
    cr_expect_eq(c.producer_port, 6100);
    rq_config_free(&c);
    remove_temp(path);
}

Test(config_args, env_file_from_the_environment)
{
    char *path = write_temp("CONSUMER_PORT=0\n");
    char *other = write_temp("CONSUMER_PORT=8100\n");
    rq_config_t c;
    const char *argv0[] = {"prog"};
    const char *argv1[] = {"prog", "--env-file", other};

    setenv("ENV_FILE", path, 1);
    cr_assert_eq(run_args(&c, 1, argv0, RQ_SVC_CONSUMER), 0);
    cr_expect_eq(c.consumer_port, 0, "ENV_FILE names the env file");
    rq_config_free(&c);
    cr_assert_eq(run_args(&c, 3, argv1, RQ_SVC_CONSUMER), 0);
    cr_expect_eq(c.consumer_port, 8100, "--env-file wins over ENV_FILE");
    rq_config_free(&c);
    remove_temp(path);
    remove_temp(other);
}

Test(config_args, load_error_is_printed)
{
    char *path = write_temp("OUTPUT_FILE=/tmp/x\nCONSUMER_PROT=1\n");
    rq_config_t c;
    const char *argv[] = {"prog", "--env-file", path};
    char expected[512];

    cr_assert_eq(run_args(&c, 3, argv, RQ_SVC_CONSUMER), -1);
    cr_expect_null(c.rabbitmq.host);
    snprintf(expected, sizeof expected, "prog: %s:2: unknown variable CONSUMER_PROT\n", path);
    fflush(stderr);
    cr_expect_stderr_eq_str(expected);
    remove_temp(path);
}

/* ---- security settings (issue 6) ---- */

Test(config, security_defaults_and_bools)
{
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_expect(!c.rabbitmq.tls, "AMQPS is off by default");
    cr_expect(c.rabbitmq.tls_verify, "peer verification is on by default");
    cr_expect_str_eq(c.api_keys, "");
    cr_expect_eq(c.rate_limit_rps, 0.0, "rate limiting is off by default");
    cr_expect_eq(c.max_json_depth, 64);
    cr_expect_eq(c.http_connection_timeout_s, 30);
    cr_expect_str_eq(c.producer_bind, "127.0.0.1", "loopback unless told otherwise");
    cr_expect_eq(rq_config_set(&c, "RABBITMQ_TLS", "1", &err), 0, "%s", err.text);
    cr_expect_eq(rq_config_set(&c, "RABBITMQ_TLS_VERIFY", "no", &err), 0, "%s", err.text);
    cr_expect(c.rabbitmq.tls && !c.rabbitmq.tls_verify);
    cr_expect_eq(rq_config_set(&c, "RABBITMQ_TLS", "maybe", &err), -1);
    cr_expect(strstr(err.text, "RABBITMQ_TLS") != NULL, "%s", err.text);
    cr_expect_eq(rq_config_set(&c, "MAX_JSON_DEPTH", "0", &err), -1);
    cr_expect_eq(rq_config_set(&c, "RATE_LIMIT_RPS", "2.5", &err), 0, "%s", err.text);
    cr_expect_eq(c.rate_limit_rps, 2.5);
    rq_config_free(&c);
}

Test(config, api_keys_are_never_echoed)
{
    char value[70000];
    rq_config_t c;
    rq_config_error_t err;

    memset(value, 'K', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_assert_eq(rq_config_set(&c, "API_KEYS", value, &err), -1);
    cr_expect(strstr(err.text, "API_KEYS") != NULL, "%s", err.text);
    cr_expect(strstr(err.text, "KKK") == NULL, "secret echoed: %s", err.text);
    rq_config_free(&c);
}
