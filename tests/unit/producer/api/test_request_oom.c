/* test_request_oom.c - request parsing and item encoding when any allocation fails.
 *
 * Jansson's style: fail the n-th allocation, for every n, until a run completes without a
 * failure. Every run must succeed with the right result or fail cleanly (a 400 with an error
 * text, *req zeroed); nothing may leak (LSan, in the sanitizer build).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <string.h>

#include "oom.h"
#include "json_alloc.h"
#include "request.h"

#define OOM_MAX_RUNS 100000ul

static const rq_limits_t lim = {8, 60.0, 64};

static const struct {
    const char *body;
    int batch;
} bodies[] = {
    {"{\"payload\":\"hi\"}", 0},
    {"{\"payload\":{\"a\":[1,2,{\"b\":null}]},\"id\":\"x\",\"processing_time\":0.5,"
     "\"fail_times\":2,\"wait\":true}",
     0},
    {"{\"messages\":[{\"payload\":1,\"id\":\"a\"},{\"payload\":[true,\"x\"]},"
     "{\"payload\":{\"k\":\"v\"},\"fail_times\":0}],\"wait\":false}",
     1},
};

Test(request_oom, parse_every_allocation)
{
    rq_json_alloc_init();
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        json_t *want = json_loads(bodies[b].body, JSON_DECODE_INT_AS_REAL, NULL);
        unsigned long n;
        int done = 0;

        cr_assert_not_null(want);
        for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
            rq_request_t req;
            rq_request_error_t err;
            int rc, injected;

            memset(&err, 0, sizeof(err));
            oom_start(n);
            rc = rq_request_parse(bodies[b].body, strlen(bodies[b].body), bodies[b].batch, &lim,
                                  &req, &err);
            injected = oom_stop();
            if (rc == 0) {
                cr_assert_eq(req.n, bodies[b].batch ? 3u : 1u, "body %zu, n=%lu", b, n);
                cr_assert(json_equal(req.root, want),
                          "body %zu, n=%lu: an allocation failure changed the request", b, n);
                for (size_t i = 0; i < req.n; i++)
                    cr_assert(req.items[i].id != NULL && req.items[i].payload != NULL,
                              "body %zu, n=%lu, item %zu", b, n, i);
                rq_request_clear(&req);
            } else {
                cr_assert(injected, "body %zu failed with no allocation failure: %s", b, err.text);
                cr_assert_eq(err.status, 400u, "body %zu, n=%lu: status %u (%s)", b, n, err.status,
                             err.text);
                cr_assert_neq(err.text[0], '\0', "body %zu, n=%lu: no error text", b, n);
                cr_assert(req.root == NULL && req.items == NULL && req.n == 0,
                          "body %zu, n=%lu: *req not zeroed", b, n);
            }
            done = !injected;
        }
        json_decref(want);
        cr_assert(done, "body %zu: still failing after %lu runs", b, OOM_MAX_RUNS);
        cr_assert_gt(n, 2, "body %zu: no allocation seen", b);
    }
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}

Test(request_oom, encode_every_allocation)
{
    const char *body = "{\"payload\":{\"a\":[1,\"two\",{\"b\":null}]},\"id\":\"m-1\","
                       "\"processing_time\":0.5,\"fail_times\":2}";
    rq_request_t req;
    rq_request_error_t err;
    char *want;
    size_t want_len;
    unsigned long n;
    int done = 0;

    cr_assert_eq(rq_request_parse(body, strlen(body), 0, &lim, &req, &err), 0, "%s", err.text);
    want = rq_item_encode(&req.items[0], "2026-01-01T00:00:00Z", &want_len);
    cr_assert_not_null(want);
    cr_assert_not_null(strstr(want, "\"fail_times\":2"), "%s", want);
    for (n = 1; n <= OOM_MAX_RUNS && !done; n++) {
        size_t len = 0;
        char *got;
        int injected;

        oom_start(n);
        got = rq_item_encode(&req.items[0], "2026-01-01T00:00:00Z", &len);
        injected = oom_stop();
        if (got != NULL) {
            cr_assert_eq(len, want_len, "n=%lu: %s", n, got);
            cr_assert_str_eq(got, want, "n=%lu: an allocation failure changed the message", n);
            free(got);
        } else {
            cr_assert(injected, "encode failed with no allocation failure");
        }
        done = !injected;
    }
    cr_assert(done, "still failing after %lu runs", OOM_MAX_RUNS);
    cr_assert_gt(n, 2, "no allocation seen");
    free(want);
    rq_request_clear(&req);
    cr_assert_not(oom_leaks(), "memory leaked (see LeakSanitizer's report)");
}
