/* test_request_fast_oom.c - rq_request_parse_fast() when any allocation fails.
 *
 * Fail the n-th allocation, for every n, until a run completes without a failure: every run
 * must give the fast path's answer (the same fields) or fail cleanly as rq_request_parse()
 * does (400 "out of memory", *req zeroed); nothing may leak (LSan, in the sanitizer build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <string.h>

#include "oom.h"
#include "json_alloc.h"
#include "request.h"

#define OOM_MAX_RUNS 100000ul

static const rq_limits_t lim = {8, 60.0, 64};

Test(request_fast_oom, parse_every_allocation)
{
    static const struct {
        const char *body;
        int batch;
        size_t n;
    } bodies[] = {
        {"{\"payload\":\"hi\"}", 0, 1},
        {"{\"payload\":{\"a\":[1,2,{\"b\":null}]},\"id\":\"x\",\"processing_time\":0.5,"
         "\"fail_times\":2,\"wait\":true}",
         0, 1},
        {"{\"messages\":[{\"payload\":1,\"id\":\"a\"},{\"payload\":[true,\"x\"]},"
         "{\"payload\":{\"k\":\"v\"},\"fail_times\":0}],\"wait\":false}",
         1, 3},
    };

    rq_json_alloc_init();
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        unsigned long n;
        int done = 0;

        for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
            rq_request_t req;
            rq_request_error_t err;
            int rc, injected;

            memset(&err, 0, sizeof(err));
            oom_start(n);
            rc = rq_request_parse_fast(bodies[b].body, strlen(bodies[b].body), bodies[b].batch,
                                       &lim, &req, &err);
            injected = oom_stop();
            if (rc == 0) {
                cr_assert_eq(req.n, bodies[b].n, "body %zu, n=%lu", b, n);
                for (size_t i = 0; i < req.n; i++)
                    cr_assert(req.items[i].id != NULL && req.items[i].payload_raw != NULL,
                              "body %zu, n=%lu, item %zu", b, n, i);
                rq_request_clear(&req);
            } else {
                cr_assert(injected, "body %zu failed with no allocation failure: %s", b, err.text);
                cr_assert_eq(err.status, 400u, "body %zu, n=%lu: %u %s", b, n, err.status,
                             err.text);
                cr_assert(req.root == NULL && req.items == NULL && req.n == 0,
                          "body %zu, n=%lu: *req not zeroed", b, n);
            }
            done = !injected;
        }
        cr_assert(done, "body %zu: still failing after %lu runs", b, OOM_MAX_RUNS);
    }
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}
