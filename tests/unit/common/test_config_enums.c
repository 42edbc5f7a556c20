/* Unit tests for the enum settings of common/config.c (issue 12): LOG_LEVEL, QUEUE_TYPE,
 * TAIL_FROM and TAIL_OVERLONG are parsed once, at load, into the canonical text and an enum
 * field; a bad value is refused with the same error text as before the enum fields existed
 * (the texts below were printed by the code before the change). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "config_table.h"
#include "log.h"

static const char *const enum_names[] = {"LOG_LEVEL", "QUEUE_TYPE", "TAIL_FROM", "TAIL_OVERLONG",
                                         "ENV_FILE"};

static void clean_env(void)
{
    for (size_t i = 0; i < sizeof(enum_names) / sizeof(enum_names[0]); i++)
        unsetenv(enum_names[i]);
}

TestSuite(config_enums, .init = clean_env, .fini = clean_env, .timeout = 30);

/* Every enum setting of the table fills an enum field, and the field follows the text. */
Test(config_enums, every_enum_setting_has_an_enum_field)
{
    size_t n, seen = 0;
    const rq_cfg_desc_t *t = rq_config_table(&n);
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < n; i++) {
        if (t[i].type != RQ_CFG_ENUM)
            continue;
        seen++;
        cr_expect_neq(t[i].enum_offset, 0, "%s has no enum field", t[i].name);
        for (int k = 0; t[i].choices[k]; k++) {
            cr_assert_eq(rq_cfg_parse(&t[i], &c, t[i].choices[k], &err), 0, "%s", err.text);
            cr_expect_eq(*(const int *)(const void *)((const char *)&c + t[i].enum_offset), k,
                         "%s=%s", t[i].name, t[i].choices[k]);
            cr_expect_str_eq(*(char *const *)(const void *)((const char *)&c + t[i].offset),
                             t[i].choices[k]);
        }
    }
    cr_expect_eq(seen, 5u,
                 "LOG_LEVEL, RABBITMQ_ADDRESS_ORDER, QUEUE_TYPE, TAIL_FROM, TAIL_OVERLONG");
    rq_config_free(&c);
}

Test(config_enums, defaults)
{
    rq_config_t c;

    cr_assert_eq(rq_config_defaults(&c), 0);
    cr_expect_eq(c.log_level_id, RQ_LOG_INFO);
    cr_expect_str_eq(c.log_level, "info");
    cr_expect_eq(c.rabbitmq.queue_type_id, RQ_QUEUE_QUORUM);
    cr_expect_str_eq(c.rabbitmq.queue_type, "quorum");
    cr_expect_eq(c.tail_from_id, RQ_TAIL_FROM_HEAD);
    cr_expect_eq(c.tail_overlong_id, RQ_TAIL_OVERLONG_SPLIT);
    rq_config_free(&c);
}

/* Every choice, in any case, sets both the canonical text and the enum. */
Test(config_enums, every_choice_sets_text_and_enum)
{
    static const struct {
        const char *name, *value, *text;
        int id;
    } cases[] = {
        {"QUEUE_TYPE", "classic", "classic", RQ_QUEUE_CLASSIC},
        {"QUEUE_TYPE", "QUORUM", "quorum", RQ_QUEUE_QUORUM},
        {"QUEUE_TYPE", "Classic", "classic", RQ_QUEUE_CLASSIC},
        {"TAIL_FROM", "end", "end", RQ_TAIL_FROM_END},
        {"TAIL_FROM", "HEAD", "head", RQ_TAIL_FROM_HEAD},
        {"TAIL_FROM", "End", "end", RQ_TAIL_FROM_END},
        {"TAIL_OVERLONG", "skip", "skip", RQ_TAIL_OVERLONG_SKIP},
        {"TAIL_OVERLONG", "SPLIT", "split", RQ_TAIL_OVERLONG_SPLIT},
        {"TAIL_OVERLONG", "Skip", "skip", RQ_TAIL_OVERLONG_SKIP},
        {"LOG_LEVEL", "debug", "debug", RQ_LOG_DEBUG},
        {"LOG_LEVEL", "WARN", "warn", RQ_LOG_WARN},
        {"LOG_LEVEL", "error", "error", RQ_LOG_ERROR},
        {"LOG_LEVEL", "Info", "info", RQ_LOG_INFO},
    };
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *text;
        int id;
        cr_assert_eq(rq_config_set(&c, cases[i].name, cases[i].value, &err), 0, "%s=%s: %s",
                     cases[i].name, cases[i].value, err.text);
        if (strcmp(cases[i].name, "QUEUE_TYPE") == 0) {
            text = c.rabbitmq.queue_type;
            id = (int)c.rabbitmq.queue_type_id;
        } else if (strcmp(cases[i].name, "TAIL_FROM") == 0) {
            text = c.tail_from;
            id = (int)c.tail_from_id;
        } else if (strcmp(cases[i].name, "TAIL_OVERLONG") == 0) {
            text = c.tail_overlong;
            id = (int)c.tail_overlong_id;
        } else {
            text = c.log_level;
            id = (int)c.log_level_id;
        }
        cr_expect_str_eq(text, cases[i].text, "%s=%s", cases[i].name, cases[i].value);
        cr_expect_eq(id, cases[i].id, "%s=%s: enum %d", cases[i].name, cases[i].value, id);
    }
    rq_config_free(&c);
}

/* The other spellings of LOG_LEVEL give the level rq_log_level_parse gives: main() reads
 * log_level_id instead of parsing the text a second time. */
Test(config_enums, log_level_aliases_match_the_log_parser)
{
    static const char *const values[] = {"WARNING", "warning", "err",   "CRITICAL", "crit",
                                         "FATAL",   "notice",  "trace", "DEBUG"};
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        rq_log_level_t want = RQ_LOG_INFO;
        cr_assert_eq(rq_log_level_parse(values[i], &want), 0);
        cr_assert_eq(rq_config_set(&c, "LOG_LEVEL", values[i], &err), 0, "%s", err.text);
        cr_expect_eq(c.log_level_id, want, "LOG_LEVEL=%s", values[i]);
        cr_expect_str_eq(c.log_level, rq_log_level_name(want), "LOG_LEVEL=%s", values[i]);
    }
    rq_config_free(&c);
}

/* A bad value: the same text as before, and neither the text nor the enum changes. */
Test(config_enums, bad_values_keep_the_error_text_and_the_old_value)
{
    static const struct {
        const char *name, *value, *want;
    } cases[] = {
        {"QUEUE_TYPE", "fifo", "QUEUE_TYPE: \"fifo\" is not one of classic|quorum"},
        {"QUEUE_TYPE", "", "QUEUE_TYPE: \"\" is not one of classic|quorum"},
        {"TAIL_FROM", "middle", "TAIL_FROM: \"middle\" is not one of head|end"},
        {"TAIL_OVERLONG", "drop", "TAIL_OVERLONG: \"drop\" is not one of split|skip"},
        {"LOG_LEVEL", "verbose",
         "LOG_LEVEL: \"verbose\" is not one of debug|info|warn|error (any case; also trace, "
         "notice, warning, err, crit, critical, fatal)"},
        {"LOG_LEVEL", "\x01\"x",
         "LOG_LEVEL: \"\\x01\\\"x\" is not one of debug|info|warn|error (any case; also trace, "
         "notice, warning, err, crit, critical, fatal)"},
    };
    rq_config_t c;
    rq_config_error_t err;

    cr_assert_eq(rq_config_defaults(&c), 0);
    /* Non-default values first, so "unchanged" cannot pass by falling back to a default. */
    cr_assert_eq(rq_config_set(&c, "QUEUE_TYPE", "classic", &err), 0);
    cr_assert_eq(rq_config_set(&c, "TAIL_FROM", "end", &err), 0);
    cr_assert_eq(rq_config_set(&c, "TAIL_OVERLONG", "skip", &err), 0);
    cr_assert_eq(rq_config_set(&c, "LOG_LEVEL", "error", &err), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&err, 0, sizeof(err));
        cr_expect_eq(rq_config_set(&c, cases[i].name, cases[i].value, &err), -1);
        cr_expect_str_eq(err.text, cases[i].want);
    }
    cr_expect_eq(c.rabbitmq.queue_type_id, RQ_QUEUE_CLASSIC);
    cr_expect_str_eq(c.rabbitmq.queue_type, "classic");
    cr_expect_eq(c.tail_from_id, RQ_TAIL_FROM_END);
    cr_expect_str_eq(c.tail_from, "end");
    cr_expect_eq(c.tail_overlong_id, RQ_TAIL_OVERLONG_SKIP);
    cr_expect_str_eq(c.tail_overlong, "skip");
    cr_expect_eq(c.log_level_id, RQ_LOG_ERROR);
    cr_expect_str_eq(c.log_level, "error");
    rq_config_free(&c);
}

/* At load: from a .env file (with the file:line prefix) and from the environment. */
Test(config_enums, load_parses_once_and_reports_bad_values)
{
    char path[] = "/tmp/rq-test-enums-XXXXXX";
    int fd = mkstemp(path);
    rq_config_t c;
    rq_config_error_t err;
    FILE *f;
    char want[600];

    cr_assert_geq(fd, 0);
    f = fdopen(fd, "w");
    cr_assert_not_null(f);
    fprintf(f, "# x\nTAIL_FROM=Middle\n");
    fclose(f);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_PRODUCER, path, &err), -1);
    snprintf(want, sizeof(want), "%s:2: TAIL_FROM: \"Middle\" is not one of head|end", path);
    cr_expect_str_eq(err.text, want);

    f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f, "TAIL_FROM=End\nTAIL_OVERLONG=SKIP\nQUEUE_TYPE=classic\nLOG_LEVEL=warning\n");
    fclose(f);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_PRODUCER, path, &err), 0, "%s", err.text);
    cr_expect_eq(c.tail_from_id, RQ_TAIL_FROM_END);
    cr_expect_eq(c.tail_overlong_id, RQ_TAIL_OVERLONG_SKIP);
    cr_expect_eq(c.rabbitmq.queue_type_id, RQ_QUEUE_CLASSIC);
    cr_expect_eq(c.log_level_id, RQ_LOG_WARN);
    rq_config_free(&c);

    setenv("QUEUE_TYPE", "quorum", 1); /* the environment overrides the file */
    cr_assert_eq(rq_config_load(&c, RQ_SVC_CONSUMER, path, &err), 0, "%s", err.text);
    cr_expect_eq(c.rabbitmq.queue_type_id, RQ_QUEUE_QUORUM);
    cr_expect_str_eq(c.rabbitmq.queue_type, "quorum");
    rq_config_free(&c);
    cr_expect_eq(c.rabbitmq.queue_type_id, 0, "rq_config_free zeroes the struct");

    setenv("QUEUE_TYPE", "stream", 1);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_CONSUMER, NULL, &err), -1);
    cr_expect_str_eq(err.text, "QUEUE_TYPE: \"stream\" is not one of classic|quorum");
    unlink(path);
}
