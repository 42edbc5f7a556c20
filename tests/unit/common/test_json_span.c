/* test_json_span.c - locating values in a JSON text (common/json_span.c). */
#include <criterion/criterion.h>
#include <string.h>

#include "json_span.h"

typedef struct {
    const char *text;
    const char *key;
    int rc;
    const char *want; /* the member's bytes when rc == 1 */
} mcase_t;

static const mcase_t members[] = {
    {"{\"a\":1}", "a", 1, "1"},
    {" \n{ \"a\" :\t0.10 , \"b\":2 }\n", "a", 1, "0.10"},
    {"{\"a\":1,\"b\":{\"a\":2}}", "b", 1, "{\"a\":2}"},
    {"{\"x\":{\"a\":2},\"a\":[3,{\"a\":4}]}", "a", 1, "[3,{\"a\":4}]"},
    {"{\"s\":\"}\\\"{,\",\"a\":\"x\"}", "a", 1, "\"x\""},
    {"{\"a\":1,\"a\":2}", "a", 1, "2"},
    {"{\"\\u0061\":true}", "a", 1, "true"},
    {"{\"a\\u0000\":1}", "a", 0, NULL},
    {"{\"\\u00e1\":1}", "a", 0, NULL},
    {"{\"ab\":1}", "a", 0, NULL},
    {"{\"a\":1}", "ab", 0, NULL},
    {"{}", "a", 0, NULL},
    {"[1]", "a", -1, NULL},
    {"", "a", -1, NULL},
    {"  ", "a", -1, NULL},
    /* malformed text: within bounds, never a crash */
    {"{\"a\"", "a", 0, NULL},
    {"{\"a\":", "a", 0, NULL},
    {"{\"a\":[1,2", "a", 0, NULL},
    {"{\"a\":\"open", "a", 0, NULL},
    {"{\"a\\", "a", 0, NULL},
};

Test(json_span, member_table)
{
    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
        const mcase_t *c = &members[i];
        rq_json_span_t s = {NULL, 0};
        int rc = rq_json_member(c->text, strlen(c->text), c->key, &s);

        cr_expect_eq(rc, c->rc, "case %zu (%s): rc %d", i, c->text, rc);
        if (rc == 1 && c->rc == 1)
            cr_expect(s.len == strlen(c->want) && memcmp(s.p, c->want, s.len) == 0,
                      "case %zu: [%.*s], expected [%s]", i, (int)s.len, s.p, c->want);
    }
}

Test(json_span, elements)
{
    const char *t = " [ 1 , {\"a\":[2]} ,\"]\" ,[] ] ";
    rq_json_span_t e[8];

    cr_assert_eq(rq_json_elements(t, strlen(t), e, 8), 4);
    cr_expect(e[0].len == 1 && memcmp(e[0].p, "1", 1) == 0);
    cr_expect(e[1].len == 9 && memcmp(e[1].p, "{\"a\":[2]}", 9) == 0);
    cr_expect(e[2].len == 3 && memcmp(e[2].p, "\"]\"", 3) == 0);
    cr_expect(e[3].len == 2 && memcmp(e[3].p, "[]", 2) == 0);
    cr_expect_eq(rq_json_elements(t, strlen(t), e, 2), 4, "counts past max");
    cr_expect_eq(rq_json_elements("[]", 2, e, 8), 0);
    cr_expect_eq(rq_json_elements("{}", 2, e, 8), -1);
    cr_expect_eq(rq_json_elements("[1,", 3, e, 8), 1);
}

Test(json_span, integer_tokens_and_trim)
{
    static const struct {
        const char *tok;
        int want;
    } t[] = {{"0", 1},   {"-0", 1},  {"123456789012345678901234567890", 1},
             {"1.0", 0}, {"1e2", 0}, {"-", 0},
             {"", 0},    {"+1", 0},  {"\"1\"", 0}};
    rq_json_span_t s;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        cr_expect_eq(rq_json_is_integer_token((rq_json_span_t){t[i].tok, strlen(t[i].tok)}),
                     t[i].want, "%s", t[i].tok);
    s = rq_json_trim(" \r\n\t[1] \n", 9);
    cr_expect(s.len == 3 && memcmp(s.p, "[1]", 3) == 0);
    s = rq_json_trim("   ", 3);
    cr_expect_eq(s.len, 0);
}
