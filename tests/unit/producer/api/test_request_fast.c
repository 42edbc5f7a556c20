/* test_request_fast.c - rq_request_parse_fast() answers as rq_request_parse() does, and
 * rq_item_encode() (written without jansson) publishes what the jansson version published.
 *
 * Differential: bodies from a table and from a seeded generator (valid requests, then the
 * same with random bytes changed, cut or inserted) go through both parsers; the return code,
 * the status and text of a refusal, and every field of an accepted request must be equal.
 * The table's ordinary bodies must take the fast path (req.root NULL).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "request.h"
#include "util.h"

static const rq_limits_t lim = {5, 60.0, 8};

/* The item object of item i of the slow path's root. */
static json_t *item_obj(const rq_request_t *r, size_t i)
{
    return r->batch ? json_array_get(json_object_get(r->root, "messages"), i) : r->root;
}

/* Parses body both ways and compares. Returns 1 when the fast path took it. */
static int check_body(const char *body, size_t len, int batch)
{
    rq_request_t fast, slow;
    rq_request_error_t ef, es;
    int rf, rs, took;

    memset(&ef, 0, sizeof(ef));
    memset(&es, 0, sizeof(es));
    rf = rq_request_parse_fast(body, len, batch, &lim, &fast, &ef);
    rs = rq_request_parse(body, len, batch, &lim, &slow, &es);
    cr_assert_eq(rf, rs, "batch=%d body [%.*s]: fast %d (%s), slow %d (%s)", batch, (int)len, body,
                 rf, ef.text, rs, es.text);
    if (rs != 0) {
        cr_assert_eq(ef.status, es.status, "[%.*s]", (int)len, body);
        cr_assert_str_eq(ef.text, es.text, "[%.*s]", (int)len, body);
        cr_assert_eq(ef.limit == NULL, es.limit == NULL);
        return 0;
    }
    took = fast.root == NULL;
    cr_assert_eq(fast.n, slow.n, "[%.*s]", (int)len, body);
    cr_assert_eq(fast.wait, slow.wait, "[%.*s]", (int)len, body);
    cr_assert_eq(fast.batch, slow.batch);
    for (size_t i = 0; i < slow.n; i++) {
        const rq_item_t *a = &fast.items[i], *b = &slow.items[i];
        cr_assert_eq(a->payload_raw_len, b->payload_raw_len, "[%.*s] item %zu", (int)len, body, i);
        cr_assert(memcmp(a->payload_raw, b->payload_raw, b->payload_raw_len) == 0);
        cr_assert(a->processing_time == b->processing_time &&
                      signbit(a->processing_time) == signbit(b->processing_time),
                  "[%.*s] item %zu: %.17g vs %.17g", (int)len, body, i, a->processing_time,
                  b->processing_time);
        cr_assert_eq(a->fail_times, b->fail_times, "[%.*s] item %zu", (int)len, body, i);
        if (json_object_get(item_obj(&slow, i), "id") != NULL)
            cr_assert_str_eq(a->id, b->id, "[%.*s] item %zu", (int)len, body, i);
        else
            cr_assert(strlen(a->id) == RQ_UUID_LEN && strlen(b->id) == RQ_UUID_LEN);
    }
    rq_request_clear(&fast);
    rq_request_clear(&slow);
    return took;
}

Test(request_fast, ordinary_bodies_take_the_fast_path)
{
    static const char *const single[] = {
        "{\"payload\":{\"user\":\"bench\",\"n\":42,\"text\":\"hello relayq\"}}",
        " {\"id\":\"m-1\",\"payload\":[1,2.5,-0,1e-7,true,false,null],\"processing_time\":0.5,"
        "\"fail_times\":2,\"wait\":true}\n",
        "{\"payload\":\"caf\xc3\xa9\",\"processing_time\":0,\"wait\":false,\"other\":{}}",
        "{\"payload\":19.99,\"processing_time\":-0.0}",
    };
    static const char *const batch[] = {
        "{\"messages\":[{\"payload\":1,\"id\":\"a\"},{\"payload\":[true,\"x\"]},"
        "{\"payload\":{\"k\":\"v\"},\"fail_times\":0}],\"wait\":false}",
        "{\"messages\":[{\"payload\":{}}]}",
    };

    for (size_t i = 0; i < sizeof(single) / sizeof(single[0]); i++)
        cr_assert(check_body(single[i], strlen(single[i]), 0), "slow path: %s", single[i]);
    for (size_t i = 0; i < sizeof(batch) / sizeof(batch[0]); i++)
        cr_assert(check_body(batch[i], strlen(batch[i]), 1), "slow path: %s", batch[i]);
}

Test(request_fast, same_answers_table)
{
    static const char *const bodies[] = {
        "",
        "   ",
        "{}",
        "[]",
        "{\"payload\":1,\"payload\":2}",
        "{\"payload\":{\"a\":1,\"a\":2}}",
        "{\"payload\":{\"a\":1,\"b\":{\"a\":2}}}",
        "{\"payload\":\"a\\nb\"}",
        "{\"payload\":\"\\u0000\"}",
        "{\"pay\\u006coad\":1}",
        "{\"payload\":1e400}",
        "{\"payload\":-1e400}",
        "{\"payload\":1e-400}",
        "{\"payload\":123456789012345678901234567890123456789012345678901234567890}",
        "{\"payload\":99999999999999999999}",
        "{\"payload\":[9223372036854775807,-9223372036854775808]}",
        "{\"payload\":9223372036854775808}",
        "{\"payload\":{\"n\":-9223372036854775809}}",
        "{\"processing_time\":99999999999999999999,\"payload\":1}",
        "{\"payload\":01}",
        "{\"payload\":1.}",
        "{\"payload\":.5}",
        "{\"payload\":-}",
        "{\"payload\":+1}",
        "{\"payload\":1,}",
        "{\"payload\":[1,]}",
        "{\"payload\":tru}",
        "{\"payload\":truex}",
        "{\"payload\":\"\xc3\"}",
        "{\"payload\":\"\xed\xa0\x80\"}",
        "{\"payload\":\"a\tb\"}",
        "{\"payload\":1} x",
        "{\"payload\":1}{}",
        "\xef\xbb\xbf{\"payload\":1}",
        "{\"payload\":[[[[[[[[1]]]]]]]]}",
        "{\"payload\":[[[[[[[1]]]]]]]}",
        "{\"id\":\"\",\"payload\":1}",
        "{\"id\":5,\"payload\":1}",
        "{\"id\":\"a\\u0000b\",\"payload\":1}",
        "{\"payload\":1,\"processing_time\":61}",
        "{\"payload\":1,\"processing_time\":60}",
        "{\"payload\":1,\"processing_time\":-1}",
        "{\"payload\":1,\"processing_time\":\"1\"}",
        "{\"payload\":1,\"processing_time\":1e308}",
        "{\"payload\":1,\"fail_times\":1.0}",
        "{\"payload\":1,\"fail_times\":101}",
        "{\"payload\":1,\"fail_times\":-0}",
        "{\"payload\":1,\"fail_times\":1e1}",
        "{\"payload\":1,\"wait\":1}",
        "{\"payload\":1,\"wait\":null}",
        "{\"messages\":[]}",
        "{\"messages\":{}}",
        "{\"messages\":[1]}",
        "{\"messages\":[{\"payload\":1,\"wait\":true}]}",
        "{\"messages\":[{\"payload\":1}],\"wait\":\"yes\"}",
        "{\"messages\":[{\"payload\":1},{\"payload\":2},{\"payload\":3},{\"payload\":4},"
        "{\"payload\":5},{\"payload\":6}]}",
        "{\"messages\":[{\"id\":\"x\"}]}",
        "{\"messages\":[{\"payload\":1,\"id\":\"b\"},{\"payload\":2,\"processing_time\":99}]}",
    };
    char id[300];

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        for (int batch = 0; batch < 2; batch++)
            check_body(bodies[i], strlen(bodies[i]), batch);
    /* the id's length bound (an AMQP short string) */
    for (size_t n = 254; n <= 256; n++) {
        char body[400];
        memset(id, 'i', n);
        id[n] = '\0';
        snprintf(body, sizeof(body), "{\"id\":\"%s\",\"payload\":1}", id);
        check_body(body, strlen(body), 0);
    }
    check_body("{\"payload\":1\0}", 14, 0); /* a NUL byte */
}

/* A random valid-looking value into b at *at (bounded by cap). */
static void gen_value(char *b, size_t *at, size_t cap, int depth)
{
    static const char *const atoms[] = {
        "1",     "-0",       "0.5",   "19.99", "1e-7", "2E+3",
        "true",  "false",    "null",  "\"s\"", "\"\"", "\"caf\xc3\xa9\"",
        "1e400", "\"a\\n\"", "-12.5", "100",   "0",    "60"};
    int r = rand() % 10;

    if (*at + 64 >= cap)
        return;
    if (depth < 4 && r < 2) {
        int n = rand() % 4;
        b[(*at)++] = '[';
        for (int i = 0; i < n; i++) {
            if (i > 0)
                b[(*at)++] = ',';
            gen_value(b, at, cap, depth + 1);
        }
        b[(*at)++] = ']';
    } else if (depth < 4 && r < 4) {
        static const char *const keys[] = {"a", "b", "payload", "id", "wait", "k\xc3\xa9"};
        int n = rand() % 4;
        b[(*at)++] = '{';
        for (int i = 0; i < n && *at + 64 < cap; i++) {
            if (i > 0)
                b[(*at)++] = ',';
            *at += (size_t)snprintf(b + *at, cap - *at, "\"%s\":", keys[rand() % 6]);
            gen_value(b, at, cap, depth + 1);
        }
        b[(*at)++] = '}';
    } else {
        *at += (size_t)snprintf(b + *at, cap - *at, "%s", atoms[rand() % 18]);
    }
}

/* Field k (0..7) of an item with the number v, into b: some valid, some not. */
static size_t gen_field(char *b, size_t cap, int k, int v)
{
    switch (k) {
    case 0:
        return (size_t)snprintf(b, cap, "\"id\":\"m-%d\"", v);
    case 1:
        return (size_t)snprintf(b, cap, "\"processing_time\":0.%d", v);
    case 2:
        return (size_t)snprintf(b, cap, "\"fail_times\":%d", v);
    case 3:
        return (size_t)snprintf(b, cap, "\"wait\":true");
    case 4:
        return (size_t)snprintf(b, cap, "\"x\":[%d]", v);
    case 5:
        return (size_t)snprintf(b, cap, "\"processing_time\":%d", v);
    case 6:
        return (size_t)snprintf(b, cap, "\"fail_times\":%d.0", v);
    default:
        return (size_t)snprintf(b, cap, "\"id\":\"\\u00%d1\"", v % 10);
    }
}

/* A random request body: an item, or a batch of items, with the fields in random order. */
static size_t gen_body(char *b, size_t cap, int batch)
{
    size_t at = 0;
    int items = batch ? 1 + rand() % 6 : 1;

    if (batch)
        at += (size_t)snprintf(b, cap, "{%s\"messages\":[", rand() % 3 ? "" : "\"wait\":true,");
    for (int i = 0; i < items; i++) {
        int nf = rand() % 4;
        if (i > 0)
            b[at++] = ',';
        b[at++] = '{';
        for (int f = 0; f < nf; f++) {
            at += gen_field(b + at, cap - at, rand() % 8, rand() % 120);
            b[at++] = ',';
        }
        at += (size_t)snprintf(b + at, cap - at, "\"payload\":");
        gen_value(b, &at, cap - 8, 0);
        b[at++] = '}';
    }
    if (batch)
        at += (size_t)snprintf(b + at, cap - at, "]}");
    return at;
}

Test(request_fast, same_answers_random)
{
    char body[2048];
    static const char noise[] = "{}[]\",:\\ 0e-.tnx\x80\xc3\x00";
    int fast = 0;

    srand(20261201);
    for (int round = 0; round < 120000; round++) {
        int batch = rand() % 2;
        size_t len = gen_body(body, sizeof(body) - 16, batch);
        int mutations = round % 3 == 0 ? 0 : 1 + rand() % 3;

        for (int m = 0; m < mutations && len > 0; m++) {
            size_t at = (size_t)rand() % len;
            switch (rand() % 3) {
            case 0:
                body[at] = noise[rand() % (int)(sizeof(noise) - 1)];
                break;
            case 1:
                memmove(body + at, body + at + 1, len - at - 1);
                len--;
                break;
            default:
                memmove(body + at + 1, body + at, len - at);
                body[at] = noise[rand() % (int)(sizeof(noise) - 1)];
                len++;
                break;
            }
        }
        fast += check_body(body, len, batch);
    }
    cr_assert_gt(fast, 10000, "the fast path took only %d bodies", fast);
}

/* rq_item_encode() as it was written with jansson (the reference). */
static char *encode_ref(const rq_item_t *item, const char *ts)
{
    json_t *id = json_string(item->id);
    json_t *o = json_pack("{s:f,s:s,s:s}", "processing_time", item->processing_time, "timestamp",
                          ts, "source", "api");
    char *id_text, *rest, *text;

    if (item->fail_times >= 0)
        json_object_set_new(o, "fail_times", json_integer(item->fail_times));
    id_text = json_dumps(id, JSON_COMPACT | JSON_ENCODE_ANY);
    rest = json_dumps(o, JSON_COMPACT);
    text = malloc(strlen(id_text) + item->payload_raw_len + strlen(rest) + 32);
    sprintf(text, "{\"id\":%s,\"payload\":%s,%s", id_text, item->payload_raw, rest + 1);
    free(id_text);
    free(rest);
    json_decref(id);
    json_decref(o);
    return text;
}

Test(request_fast, encode_as_jansson_did)
{
    static const char *const ids[] = {"m-1", "quote\"back\\slash", "tab\tnl\n\x01\x1f",
                                      "caf\xc3\xa9 \xf0\x9f\x98\x80", "/"};
    static const double pts[] = {0, -0.0, 0.5, 60, 1e-7, 0.1, 19.99, 33.333333333333336};

    srand(3);
    for (int round = 0; round < 20000; round++) {
        rq_item_t it;
        char idbuf[64], *got, *want;
        size_t len = 0;

        memset(&it, 0, sizeof(it));
        if (round < 40) {
            snprintf(idbuf, sizeof(idbuf), "%s", ids[round % 5]);
            it.processing_time = pts[round % 8];
        } else {
            size_t n = 1 + (size_t)(rand() % 20);
            for (size_t i = 0; i < n; i++)
                idbuf[i] = (char)(1 + rand() % 127);
            idbuf[n] = '\0';
            it.processing_time = (double)rand() / RAND_MAX * 60.0;
        }
        it.id = idbuf;
        it.payload_raw = (char *)"{\"a\": [1, 0.10]}";
        it.payload_raw_len = strlen(it.payload_raw);
        it.fail_times = round % 3 == 0 ? -1 : rand() % 101;
        got = rq_item_encode(&it, "2026-12-01T00:00:00.000Z", &len);
        want = encode_ref(&it, "2026-12-01T00:00:00.000Z");
        cr_assert_not_null(got);
        cr_assert_str_eq(got, want);
        cr_assert_eq(len, strlen(want));
        free(got);
        free(want);
    }
}
