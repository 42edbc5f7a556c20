/* test_filter_oom.c - common/filter.c under allocation failure (every allocation of
 * rq_filter_parse fails once: NULL with "out of memory", nothing leaked), and evaluation
 * making no allocation at all (counted through oom.h). */
#include <criterion/criterion.h>
#include <string.h>

#include "filter.h"
#include "oom.h"

static const char text[] = "(payload.level == \"error\" || payload.items[0][\"x y\"] in [1, \"a\"])"
                           " && !exists(headers.trace) && contains(payload.msg, \"disk\")"
                           " && starts_with(routing_key, \"orders.\") && id != \"x\"";

Test(filter_oom, parse_fails_cleanly_at_every_allocation)
{
    int done = 0;

    for (unsigned long n = 1; n < 100 && !done; n++) {
        char err[160] = "";
        size_t pos = 99;
        oom_start(n);
        rq_filter_t *f = rq_filter_parse(text, strlen(text), err, sizeof(err), &pos);
        int injected = oom_stop();
        if (!injected) {
            cr_expect_not_null(f, "%s", err);
            done = 1;
        } else if (f == NULL) {
            cr_expect_str_eq(err, "out of memory", "allocation %lu", n);
            cr_expect_eq(pos, 0);
        }
        /* a failed shrink (realloc) keeps the larger array: the filter is still fine */
        rq_filter_free(f);
    }
    cr_expect(done, "the parse never ran without a failure injected");
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(filter_oom, evaluation_does_not_allocate)
{
    char err[160];
    size_t pos;
    json_error_t je;
    json_t *payload = json_loads("{\"level\":\"warn\",\"items\":[{\"x y\":\"a\"}],"
                                 "\"msg\":\"the disk is full\"}",
                                 0, &je);
    json_t *headers = json_loads("{\"region\":\"eu\"}", 0, &je);
    rq_filter_msg_t m = {payload, headers, "orders.eu", "m-1"};
    rq_filter_t *f = rq_filter_parse(text, strlen(text), err, sizeof(err), &pos);

    cr_assert_not_null(f, "%s", err);
    cr_assert_not_null(payload);
    oom_start(0);
    int r = rq_filter_eval(f, &m);
    for (int i = 0; i < 100; i++)
        r &= rq_filter_eval(f, &m);
    oom_stop();
    cr_expect_eq(r, 1);
    cr_expect_eq(oom_count, 0, "evaluation allocated %lu times", oom_count);
    rq_filter_free(f);
    json_decref(payload);
    json_decref(headers);
}
