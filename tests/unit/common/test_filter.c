/* test_filter.c - subscription filters (common/filter.c): every operator and function,
 * precedence, missing fields, type mismatches, escapes, limits and the position of every
 * kind of parse error. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

static const char payload_text[] =
    "{\"level\":\"error\",\"n\":10,\"r\":1.5,\"one\":1.0,\"ok\":true,\"off\":false,\"nil\":null,"
    "\"s\":\"abc\",\"items\":[{\"x\":1,\"sku\":\"A-1\"},{\"x\":2}],\"tags\":[\"urgent\",\"x\",3],"
    "\"odd key\":\"v\",\"a.b\":\"dot\",\"nested\":{\"deep\":{\"k\":\"v\"}},"
    "\"big\":9007199254740993,\"neg\":-3,\"empty\":\"\",\"uni\":\"\\u00e9\",\"nul\":\"a\\u0000b\","
    "\"B\":\"B\",\"q\":\"say \\\"hi\\\"\\n\",\"obj\":{},\"arr\":[],\"0\":\"zero\","
    "\"long\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaab\"}";
static const char headers_text[] = "{\"region\":\"us\",\"x-trace-id\":\"t1\",\"n\":5}";

static json_t *payload, *headers;
static rq_filter_msg_t msg;

static void setup(void)
{
    json_error_t e;

    payload = json_loads(payload_text, JSON_ALLOW_NUL, &e);
    headers = json_loads(headers_text, 0, &e);
    cr_assert_not_null(payload, "%s", e.text);
    cr_assert_not_null(headers, "%s", e.text);
    /* a key with a NUL byte (jansson's loader refuses them, its API does not) */
    cr_assert_eq(json_object_setn_new(payload, "k\0ey", 4, json_string("nulkey")), 0);
    msg.payload = payload;
    msg.headers = headers;
    msg.routing_key = "orders.eu.created";
    msg.id = "m-1";
}

static void teardown(void)
{
    json_decref(payload);
    json_decref(headers);
}

TestSuite(filter, .init = setup, .fini = teardown);

/* Parses text (asserting it parses) and evaluates it on msg. */
static int run(const char *text, const rq_filter_msg_t *m)
{
    char err[160] = "";
    size_t pos = 0;
    rq_filter_t *f = rq_filter_parse(text, strlen(text), err, sizeof(err), &pos);
    int r;

    cr_assert_not_null(f, "[%s] does not parse: %s at %zu", text, err, pos);
    r = rq_filter_eval(f, m);
    rq_filter_free(f);
    return r;
}

typedef struct {
    const char *text;
    int want;
} ecase_t;

static const ecase_t evals[] = {
    /* == != on every type */
    {"payload.level == \"error\"", 1},
    {"payload.level == \"Error\"", 0},
    {"payload.level != \"error\"", 0},
    {"payload.level != \"warn\"", 1},
    {"payload.n == 10", 1},
    {"payload.n == 10.0", 1},
    {"payload.n == 1e1", 1},
    {"payload.one == 1", 1},
    {"payload.r == 1.5", 1},
    {"payload.r == 15e-1", 1},
    {"payload.neg == -3", 1},
    {"payload.n != 11", 1},
    {"payload.ok == true", 1},
    {"payload.ok == false", 0},
    {"payload.off == false", 1},
    {"payload.ok != false", 1},
    {"payload.nil == null", 1},
    {"payload.nil != null", 0},
    {"payload.big == 9007199254740993", 1},
    {"payload.big == 9007199254740992", 0},
    /* type mismatches: never equal, never ordered */
    {"payload.n == \"10\"", 0},
    {"payload.n != \"10\"", 1},
    {"payload.s == 1", 0},
    {"payload.ok == 1", 0},
    {"payload.nil == false", 0},
    {"payload.obj == null", 0},
    {"payload.obj != null", 1},
    {"payload.arr == 0", 0},
    {"payload.s < 1", 0},
    {"payload.s >= 1", 0},
    {"payload.n < \"z\"", 0},
    {"payload.n > \"\"", 0},
    {"payload.ok > 0", 0},
    {"payload.nil < 1", 0},
    {"payload.obj < 1", 0},
    {"!(payload.s < 1)", 1},
    /* ordering */
    {"payload.n < 11", 1},
    {"payload.n < 10", 0},
    {"payload.n <= 10", 1},
    {"payload.n > 9.5", 1},
    {"payload.n >= 10", 1},
    {"payload.n >= 10.5", 0},
    {"payload.r > 1", 1},
    {"payload.r < 2", 1},
    {"payload.neg < 0", 1},
    {"payload.s < \"abd\"", 1},
    {"payload.s < \"abc\"", 0},
    {"payload.s <= \"abc\"", 1},
    {"payload.s > \"ab\"", 1},
    {"payload.s > \"abcd\"", 0},
    {"payload.s >= \"\"", 1},
    {"payload.B < \"a\"", 1}, /* bytewise */
    {"payload.uni > \"z\"", 1},
    /* missing paths */
    {"payload.nope == \"x\"", 0},
    {"payload.nope != \"x\"", 1},
    {"payload.nope == null", 0},
    {"payload.nope != null", 1},
    {"payload.nope < 1", 0},
    {"payload.nope >= 1", 0},
    {"payload.nope in [1, \"x\", null]", 0},
    {"contains(payload.nope, \"\")", 0},
    {"starts_with(payload.nope, \"\")", 0},
    {"payload.s.x == 1", 0},
    {"payload.s[0] == \"a\"", 0},
    {"payload.items.x == 1", 0},
    {"payload.items[2].x == 1", 0},
    {"payload.items[999999] == 1", 0},
    {"headers.nope == \"x\"", 0},
    {"headers.region.x != 1", 1},
    /* paths */
    {"payload.items[0].x == 1", 1},
    {"payload.items[1].x == 2", 1},
    {"payload.items[ 0 ].sku == \"A-1\"", 1},
    {"payload[\"odd key\"] == \"v\"", 1},
    {"payload[\"a.b\"] == \"dot\"", 1},
    {"payload.a.b == \"dot\"", 0},
    {"payload[\"items\"][0][\"x\"] == 1", 1},
    {"payload.nested.deep.k == \"v\"", 1},
    {"payload[\"nested\"].deep[\"k\"] == \"v\"", 1},
    {"payload.0 == \"zero\"", 1},
    {"payload[\"k\\u0000ey\"] == \"nulkey\"", 1},
    {"payload[\"k\"] == \"nulkey\"", 0},
    {"headers.region == \"us\"", 1},
    {"headers.x-trace-id == \"t1\"", 1},
    {"headers[\"x-trace-id\"] == \"t1\"", 1},
    {"headers.n > 4", 1},
    {"routing_key == \"orders.eu.created\"", 1},
    {"routing_key != \"orders\"", 1},
    {"id == \"m-1\"", 1},
    {"id == 1", 0},
    {"id < \"n\"", 1},
    {"payload == 1", 0},
    {"payload != null", 1},
    /* in */
    {"payload.level in [\"warn\", \"error\"]", 1},
    {"payload.level in [\"warn\"]", 0},
    {"payload.level in []", 0},
    {"payload.n in [1, 10.0]", 1},
    {"payload.nil in [null]", 1},
    {"payload.ok in [false, true]", 1},
    {"payload.n in [\"10\"]", 0},
    {"routing_key in [\"a\", \"orders.eu.created\"]", 1},
    {"!(payload.level in [\"error\"])", 0},
    /* functions */
    {"exists(payload.nil)", 1},
    {"exists(payload.nope)", 0},
    {"exists(payload)", 1},
    {"exists(headers)", 1},
    {"exists(headers.region)", 1},
    {"exists(routing_key)", 1},
    {"exists(id)", 1},
    {"exists(payload.items[1])", 1},
    {"exists(payload.items[2])", 0},
    {"contains(payload.s, \"b\")", 1},
    {"contains(payload.s, \"abc\")", 1},
    {"contains(payload.s, \"abcd\")", 0},
    {"contains(payload.s, \"\")", 1},
    {"contains(payload.long, \"aaab\")", 1},
    {"contains(payload.long, \"aaaba\")", 0},
    {"contains(payload.nul, \"\\u0000b\")", 1},
    {"contains(payload.tags, \"urgent\")", 1},
    {"contains(payload.tags, \"urg\")", 0},
    {"contains(payload.tags, \"3\")", 0},
    {"contains(payload.n, \"1\")", 0},
    {"contains(routing_key, \".eu.\")", 1},
    {"starts_with(routing_key, \"orders.\")", 1},
    {"starts_with(routing_key, \"eu\")", 0},
    {"starts_with(payload.s, \"abc\")", 1},
    {"starts_with(payload.s, \"abcd\")", 0},
    {"starts_with(payload.s, \"\")", 1},
    {"starts_with(payload.tags, \"urgent\")", 0},
    {"starts_with(payload.uni, \"\\u00e9\")", 1},
    {"starts_with(payload.uni, \"\xc3\xa9\")", 1},
    /* escapes */
    {"payload.q == \"say \\\"hi\\\"\\n\"", 1},
    {"payload.q == \"say \\u0022hi\\u0022\\u000a\"", 1},
    {"payload.uni == \"\\u00E9\"", 1},
    {"payload.nul == \"a\\u0000b\"", 1},
    {"payload.nul == \"a\"", 0},
    {"payload.empty == \"\"", 1},
    {"payload.s == \"\\u0061bc\"", 1},
    {"payload.s == \"a\\/bc\"", 0},
    /* boolean operators and precedence */
    {"payload.n == 10 && payload.s == \"abc\"", 1},
    {"payload.n == 10 && payload.s == \"x\"", 0},
    {"payload.n == 11 || payload.s == \"abc\"", 1},
    {"payload.n == 11 || payload.s == \"x\"", 0},
    {"!(payload.n == 10)", 0},
    {"!payload.n == 10", 0}, /* ! binds to the comparison: !(payload.n == 10) */
    {"!!exists(payload.s)", 1},
    {"!!!exists(payload.s)", 0},
    /* || looser than &&: true || (false && false) */
    {"payload.n == 10 || payload.n == 1 && payload.n == 2", 1},
    {"(payload.n == 10 || payload.n == 1) && payload.n == 2", 0},
    /* (false && x) || true */
    {"payload.n == 1 && payload.n == 2 || payload.n == 10", 1},
    {"payload.n == 1 && (payload.n == 2 || payload.n == 10)", 0},
    /* ! tighter than && */
    {"!exists(payload.nope) && exists(payload.s)", 1},
    {"!(exists(payload.nope) && exists(payload.s))", 1},
    {"exists(payload.s) && exists(payload.n) && exists(payload.r) && !exists(payload.x)", 1},
    {"exists(payload.x) || exists(payload.y) || exists(payload.z) || exists(payload.s)", 1},
    {"((((payload.n == 10))))", 1},
    {" \t\r\n payload . n == 10", -1}, /* a path has no inner spaces: see errors */
    {"\n payload.level\t==\r\n\"error\"  ", 1},
    {"payload.n==10&&payload.s==\"abc\"||payload.x==1", 1},
    {"payload.level == \"error\" && headers.region != \"eu\"", 1},
    {"(payload.n >= 10 || routing_key == \"a.b\") && !exists(headers.trace)", 1},
};

Test(filter, eval_table)
{
    for (size_t i = 0; i < sizeof(evals) / sizeof(evals[0]); i++) {
        if (evals[i].want < 0)
            continue;
        cr_expect_eq(run(evals[i].text, &msg), evals[i].want, "case %zu: [%s] expected %d", i,
                     evals[i].text, evals[i].want);
    }
}

Test(filter, absent_message_fields)
{
    rq_filter_msg_t none = {NULL, NULL, NULL, NULL};
    json_t *str = json_string("just text");
    rq_filter_msg_t scalar = {str, NULL, "", NULL};

    cr_expect_eq(run("exists(payload)", &none), 0);
    cr_expect_eq(run("exists(headers)", &none), 0);
    cr_expect_eq(run("exists(routing_key)", &none), 0);
    cr_expect_eq(run("exists(id)", &none), 0);
    cr_expect_eq(run("routing_key != \"a\"", &none), 1);
    cr_expect_eq(run("id == \"a\"", &none), 0);
    cr_expect_eq(run("headers.a != 1", &none), 1);
    cr_expect_eq(run("payload.a == 1", NULL), 0, "a NULL message has nothing");
    cr_expect_eq(run("payload == \"just text\"", &scalar), 1);
    cr_expect_eq(run("contains(payload, \"text\")", &scalar), 1);
    cr_expect_eq(run("payload.x == 1", &scalar), 0);
    cr_expect_eq(run("routing_key == \"\"", &scalar), 1);
    cr_expect_eq(run("exists(routing_key)", &scalar), 1);
    cr_expect_eq(rq_filter_eval(NULL, &msg), 1, "no filter matches everything");
    json_decref(str);
}

typedef struct {
    const char *text;
    size_t pos;
    const char *want; /* a part of the message */
} pcase_t;

static const pcase_t errors[] = {
    {"", 0, "unexpected end"},
    {"   ", 3, "unexpected end"},
    {"payload", 7, "expected a comparison"},
    {"payload.n", 9, "expected a comparison"},
    {"payload.n = 1", 10, "expected a comparison"},
    {"payload.n === 1", 12, "expected a literal"},
    {"payload.n ==", 12, "found the end of the filter"},
    {"payload.n == 1 &&", 17, "unexpected end"},
    {"payload.n == 1 & payload.n == 2", 15, "expected '&&', '||' or the end"},
    {"payload.n == 1 | x", 15, "expected '&&', '||'"},
    {"payload.n == 1 payload.n == 2", 15,
     "expected '&&', '||' or the end of the filter, found 'p'"},
    {"(payload.n == 1", 15, "expected ')'"},
    {"payload.n == 1)", 14, "found ')'"},
    {"()", 1, "expected a field"},
    {"!", 1, "unexpected end"},
    {"foo == 1", 0, "unknown field 'foo'"},
    {"Payload.a == 1", 0, "unknown field 'Payload'"},
    {"true", 0, "unknown field 'true'"},
    {"1 == payload.n", 0, "expected a field, a function, '!' or '(', found '1'"},
    {"\"a\" == payload.s", 0, "expected a field"},
    {"payload.n == foo", 13, "expected a literal"},
    {"payload.n == 'x'", 13, "expected a literal"},
    {"payload. n == 1", 8, "expected a field name after '.'"},
    {"payload . n == 1", 8, "expected a comparison"},
    {"payload..n == 1", 8, "field name after '.'"},
    {"payload.n. == 1", 10, "field name after '.'"},
    {"payload.items[] == 1", 14, "array index or a quoted key"},
    {"payload.items[-1] == 1", 14, "array index"},
    {"payload.items[01] == 1", 14, "invalid array index"},
    {"payload.items[1000000] == 1", 14, "array index larger than 999999"},
    {"payload.items[0 == 1", 16, "expected ']'"},
    {"payload[x] == 1", 8, "array index or a quoted key"},
    {"routing_key.a == 1", 11, "routing_key is a string"},
    {"id[0] == 1", 2, "id is a string"},
    {"payload.n == 01", 13, "invalid number"},
    {"payload.n == 1.", 13, "invalid number"},
    {"payload.n == .5", 13, "expected a literal"},
    {"payload.n == 1e", 13, "invalid number"},
    {"payload.n == -", 13, "invalid number"},
    {"payload.n == 1x", 13, "invalid number"},
    {"payload.n == 1.2.3", 13, "invalid number"},
    {"payload.n == 1e999", 13, "out of range"},
    {"payload.n == +1", 13, "expected a literal"},
    {"payload.s == \"abc", 13, "unterminated string"},
    {"payload.s == \"abc\\", 13, "unterminated string"},
    {"payload.s == \"a\\qc\"", 15, "invalid escape"},
    {"payload.s == \"a\\u12\"", 15, "invalid \\u escape"},
    {"payload.s == \"a\\u12g4\"", 15, "invalid \\u escape"},
    {"payload.s == \"\\ud800\"", 14, "high surrogate"},
    {"payload.s == \"\\ud800\\u0041\"", 14, "high surrogate"},
    {"payload.s == \"\\udc00\"", 14, "lone low surrogate"},
    {"payload.s == \"a\tb\"", 15, "control character"},
    {"payload.s == \"a\nb\"", 15, "control character"},
    {"payload.s == \"\xff\"", 13, "invalid UTF-8"},
    {"payload.s == \"\xc0\xaf\"", 13, "invalid UTF-8"},
    {"payload.s \xc3\xa9 1", 10, "found byte 0xc3"},
    {"payload.n < true", 10, "compare numbers or strings"},
    {"payload.n >= null", 10, "compare numbers or strings"},
    {"payload.n in 1", 13, "expected '[' after in"},
    {"payload.n in [1, 2", 18, "expected ',' or ']'"},
    {"payload.n in [1,]", 16, "expected a literal"},
    {"payload.n in [1 2]", 16, "expected ',' or ']'"},
    {"payload.n in [payload.m]", 14, "expected a literal"},
    {"exists(payload.n", 16, "expected ')'"},
    {"exists(payload.n, \"x\")", 16, "expected ')'"},
    {"exists()", 7, "expected a field"},
    {"exists(1)", 7, "expected a field"},
    {"contains(payload.s)", 18, "expected ','"},
    {"contains(payload.s, 1)", 20, "expected a string"},
    {"contains(payload.s, \"a\"", 23, "expected ')'"},
    {"starts_with(payload.s, x)", 23, "expected a string"},
    {"matches(payload.s, \"a\")", 0, "unknown function 'matches'"},
    {"payload (1)", 0, "unknown function 'payload'"},
    {"payload.n == 1 && !", 19, "unexpected end"},
};

Test(filter, parse_errors)
{
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        const pcase_t *c = &errors[i];
        char err[160] = "";
        size_t pos = 12345;
        rq_filter_t *f = rq_filter_parse(c->text, strlen(c->text), err, sizeof(err), &pos);

        cr_expect_null(f, "case %zu: [%s] parsed", i, c->text);
        rq_filter_free(f);
        cr_expect_eq(pos, c->pos, "case %zu: [%s]: position %zu, expected %zu (%s)", i, c->text,
                     pos, c->pos, err);
        cr_expect(strstr(err, c->want) != NULL, "case %zu: [%s]: \"%s\" lacks \"%s\"", i, c->text,
                  err, c->want);
    }
    /* the one case of the eval table that does not parse */
    size_t pos;
    char err[160];
    cr_expect_null(rq_filter_parse(" \t\r\n payload . n == 10", 22, err, sizeof(err), &pos));
    cr_expect_eq(pos, 13, "%s", err);
}

Test(filter, text_is_not_nul_terminated)
{
    const char text[] = "payload.n == 10 && garbage";
    char err[160];
    size_t pos;
    rq_filter_t *f = rq_filter_parse(text, 15, err, sizeof(err), &pos);

    cr_assert_not_null(f, "%s", err);
    cr_expect_eq(rq_filter_eval(f, &msg), 1);
    rq_filter_free(f);
    /* a NUL byte inside is just an unexpected byte */
    cr_expect_null(rq_filter_parse("payload.n == 1\0", 15, err, sizeof(err), &pos));
    cr_expect_eq(pos, 14);
    cr_expect(strstr(err, "byte 0x00") != NULL, "%s", err);
    cr_expect_null(rq_filter_parse(NULL, 0, err, sizeof(err), &pos));
    cr_expect_eq(pos, 0);
    /* err and pos are optional */
    cr_expect_null(rq_filter_parse("(", 1, NULL, 0, NULL));
}

/* Writes n copies of unit, then tail, into buf. */
static void repeat(char *buf, size_t len, const char *unit, int n, const char *tail)
{
    size_t k = 0;

    buf[0] = '\0';
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s", unit);
    snprintf(buf + k, len - k, "%s", tail);
}

Test(filter, limits)
{
    static char text[RQ_FILTER_MAX_BYTES + 64];
    char err[160];
    size_t pos;
    rq_filter_t *f;

    /* nesting: 32 levels parse, 33 do not */
    repeat(text, sizeof(text), "!", 32, "exists(payload.s)");
    cr_expect_eq(run(text, &msg), 1, "32 '!'");
    repeat(text, sizeof(text), "!", 33, "exists(payload.s)");
    cr_expect_null(rq_filter_parse(text, strlen(text), err, sizeof(err), &pos));
    cr_expect_eq(pos, 32);
    cr_expect(strstr(err, "nested deeper than 32") != NULL, "%s", err);
    repeat(text, sizeof(text), "(", 32, "payload.n == 10");
    for (int i = 0; i < 32; i++)
        strcat(text, ")");
    cr_expect_eq(run(text, &msg), 1, "32 parentheses");
    repeat(text, sizeof(text), "(!", 16, "payload.n == 10");
    for (int i = 0; i < 16; i++)
        strcat(text, ")");
    cr_expect_eq(run(text, &msg), 1, "16 of '(!': 32 levels, even count of '!'");
    repeat(text, sizeof(text), "(", 33, "payload.n == 10");
    cr_expect_null(rq_filter_parse(text, strlen(text), err, sizeof(err), &pos));
    cr_expect_eq(pos, 32);

    /* terms: a run of && is one node plus its operands, so 255 comparisons fit */
    repeat(text, sizeof(text), "payload.n==10&&", 254, "payload.n==10");
    cr_assert_lt(strlen(text), RQ_FILTER_MAX_BYTES);
    cr_expect_eq(run(text, &msg), 1, "255 operands of one &&");
    repeat(text, sizeof(text), "payload.n==10&&", 255, "payload.n==10");
    cr_assert_leq(strlen(text), RQ_FILTER_MAX_BYTES, "%zu", strlen(text));
    f = rq_filter_parse(text, strlen(text), err, sizeof(err), &pos);
    cr_expect_null(f);
    rq_filter_free(f);
    cr_expect(strstr(err, "too many terms (at most 256)") != NULL, "%s", err);
    cr_expect_eq(pos, 255 * 15, "at the 256th comparison: %zu", pos);
    /* list literals count */
    repeat(text, sizeof(text), "1,", 254, "10]");
    memmove(text + 14, text, strlen(text) + 1);
    memcpy(text, "payload.n in [", 14);
    cr_expect_eq(run(text, &msg), 1, "255 list literals");
    repeat(text, sizeof(text), "1,", 255, "10]");
    memmove(text + 14, text, strlen(text) + 1);
    memcpy(text, "payload.n in [", 14);
    cr_expect_null(rq_filter_parse(text, strlen(text), err, sizeof(err), &pos));
    cr_expect(strstr(err, "too many terms") != NULL, "%s", err);

    /* text length: RQ_FILTER_MAX_BYTES parse, one more does not */
    memset(text, ' ', RQ_FILTER_MAX_BYTES);
    memcpy(text, "payload.n == 10", 15);
    cr_expect_not_null((f = rq_filter_parse(text, RQ_FILTER_MAX_BYTES, err, sizeof(err), &pos)),
                       "%s", err);
    rq_filter_free(f);
    cr_expect_null(rq_filter_parse(text, RQ_FILTER_MAX_BYTES + 1, err, sizeof(err), &pos));
    cr_expect_eq(pos, RQ_FILTER_MAX_BYTES);
    cr_expect(strstr(err, "longer than 4096 bytes") != NULL, "%s", err);

    /* a long contains() needle on a long value: linear, and found at the very end */
    char *needle = malloc(2001), *hay = malloc(200002);
    memset(needle, 'a', 1999);
    needle[1999] = 'b';
    needle[2000] = '\0';
    memset(hay, 'a', 200000);
    hay[200000] = 'b';
    hay[200001] = '\0';
    snprintf(text, sizeof(text), "contains(payload, \"%s\")", needle);
    json_t *big = json_string(hay);
    rq_filter_msg_t m = {big, NULL, NULL, NULL};
    cr_expect_eq(run(text, &m), 1);
    hay[200000] = 'a';
    json_decref(big);
    big = json_string(hay);
    m.payload = big;
    cr_expect_eq(run(text, &m), 0);
    json_decref(big);
    free(needle);
    free(hay);
}

Test(filter, shared_across_threads_is_read_only)
{
    /* the same filter evaluated on two messages gives independent answers */
    const char *text = "payload.n > 5";
    char err[160];
    size_t pos;
    rq_filter_t *f = rq_filter_parse(text, strlen(text), err, sizeof(err), &pos);
    json_t *a = json_pack("{s:i}", "n", 1), *b = json_pack("{s:i}", "n", 9);
    rq_filter_msg_t ma = {a, NULL, NULL, NULL}, mb = {b, NULL, NULL, NULL};

    cr_assert_not_null(f);
    for (int i = 0; i < 3; i++) {
        cr_expect_eq(rq_filter_eval(f, &ma), 0);
        cr_expect_eq(rq_filter_eval(f, &mb), 1);
    }
    rq_filter_free(f);
    rq_filter_free(NULL);
    json_decref(a);
    json_decref(b);
}
