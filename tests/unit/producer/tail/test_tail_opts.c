/* Unit tests for rq_tail_opts_from_config (producer/tail/tailer.c): TAIL_FROM and
 * TAIL_OVERLONG reach the tailer's options from the enums config.c parsed at load (issue 12),
 * in any spelling the config accepts. */
#include <criterion/criterion.h>
#include <string.h>

#include "config.h"
#include "tailer.h"

TestSuite(tail_opts, .timeout = 30);

Test(tail_opts, defaults_start_at_head_and_split)
{
    rq_config_t c;
    rq_tail_opts_t o;

    cr_assert_eq(rq_config_defaults(&c), 0);
    memset(&o, 0x55, sizeof(o));
    rq_tail_opts_from_config(&o, &c);
    cr_expect_eq(o.from_end, 0);
    cr_expect_eq(o.overlong, RQ_OVERLONG_SPLIT);
    rq_config_free(&c);
}

Test(tail_opts, end_and_skip_in_any_case)
{
    static const char *const ends[] = {"end", "END", "End"};
    static const char *const skips[] = {"skip", "SKIP", "sKiP"};
    rq_config_t c;
    rq_config_error_t err;
    rq_tail_opts_t o;

    cr_assert_eq(rq_config_defaults(&c), 0);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(rq_config_set(&c, "TAIL_FROM", ends[i], &err), 0, "%s", err.text);
        cr_assert_eq(rq_config_set(&c, "TAIL_OVERLONG", skips[i], &err), 0, "%s", err.text);
        rq_tail_opts_from_config(&o, &c);
        cr_expect_eq(o.from_end, 1, "TAIL_FROM=%s", ends[i]);
        cr_expect_eq(o.overlong, RQ_OVERLONG_SKIP, "TAIL_OVERLONG=%s", skips[i]);
    }
    cr_assert_eq(rq_config_set(&c, "TAIL_FROM", "Head", &err), 0, "%s", err.text);
    cr_assert_eq(rq_config_set(&c, "TAIL_OVERLONG", "Split", &err), 0, "%s", err.text);
    rq_tail_opts_from_config(&o, &c);
    cr_expect_eq(o.from_end, 0);
    cr_expect_eq(o.overlong, RQ_OVERLONG_SPLIT);
    rq_config_free(&c);
}
