/* test_lease_json.c - rq_lease_msg_json() writes what rq_lease_msg_jansson() builds.
 *
 * Differential: messages from a table and from a seeded generator (content types, every AMQP
 * field kind in the headers, nested tables and arrays, keys that repeat, are not UTF-8, hold a
 * NUL or are too long, NaN and infinite reals, bodies that are JSON with whitespace, escapes,
 * big integers or duplicates, and bytes that are not) go through both writers; the text
 * written, loaded with jansson, must equal the reference tree (json_equal: same keys, same
 * values), with the keys in the reference's order. And the fast path must be taken for an
 * ordinary message (its JSON body spliced as sent).
 */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lease_json.h"

static amqp_bytes_t B(const char *s)
{
    amqp_bytes_t b = {strlen(s), (void *)s};
    return b;
}

static amqp_bytes_t BN(const void *s, size_t n)
{
    amqp_bytes_t b = {n, (void *)s};
    return b;
}

static const rq_lease_msg_info_t info = {"m-1", 2, "0123abcd-0123456789abcdef0123456789abcdef",
                                         1796233898123LL};

/* The keys of object o in order, joined by ',' into out. */
static void keys_of(json_t *o, char *out, size_t cap)
{
    const char *k;
    json_t *v;
    size_t n = 0;

    out[0] = '\0';
    json_object_foreach(o, k, v)
    {
        (void)v;
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s,", k);
    }
}

/* Both writers on m; returns 1 when the fast writer's body is m's bytes spliced. */
static int check_msg(const amqp_message_t *m, const char *what)
{
    json_t *ref = rq_lease_msg_jansson(m, &info), *got;
    rq_jbuf_t b;
    json_error_t e;
    char *text, ka[4096], kb[4096];
    size_t len = 0;
    int rc;

    rq_jbuf_init(&b, 0);
    rc = rq_lease_msg_json(&b, m, &info);
    text = rq_jbuf_take(&b, &len);
    cr_assert_eq(rc, 0, "%s: the writer failed", what);
    cr_assert_not_null(ref, "%s: the reference failed", what);
    cr_assert_not_null(text);
    got = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
    cr_assert_not_null(got, "%s: not JSON (%s): %s", what, e.text, text);
    if (!json_equal(got, ref)) {
        char *want = json_dumps(ref, JSON_COMPACT);
        cr_assert_fail("%s:\n got  %s\n want %s", what, text, want);
    }
    keys_of(got, ka, sizeof(ka));
    keys_of(ref, kb, sizeof(kb));
    cr_assert_str_eq(ka, kb, "%s: key order", what);
    {
        json_t *hg = json_object_get(got, "headers"), *hr = json_object_get(ref, "headers");
        keys_of(hg, ka, sizeof(ka));
        keys_of(hr, kb, sizeof(kb));
        cr_assert_str_eq(ka, kb, "%s: header order", what);
    }
    rc = m->body.len > 0 && strstr(text, "\"body\":") != NULL &&
         memmem(text, len, m->body.bytes, m->body.len) != NULL;
    json_decref(got);
    json_decref(ref);
    free(text);
    return rc;
}

static amqp_message_t msg(const char *ctype, const void *body, size_t n)
{
    amqp_message_t m;

    memset(&m, 0, sizeof(m));
    if (ctype != NULL) {
        m.properties._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        m.properties.content_type = B(ctype);
    }
    m.body = BN(body, n);
    return m;
}

Test(lease_json, bodies)
{
    static const struct {
        const char *ctype, *body;
        int spliced;
    } c[] = {
        {"application/json", "{\"a\":1,\"b\":[true,null,\"x\"]}", 1},
        {"application/json", " \n{ \"a\" : 1.50 , \"b\" : -0 , \"c\" : 1E3 }\r\n", 0},
        {"application/json; charset=utf-8", "[1,2]", 1},
        {"application/vnd.x+json", "\"s\"", 1},
        {"APPLICATION/JSON ", "7", 1},
        {"application/json", "{\"s\":\"a\\nb \\u00e9 \\ud83d\\ude00\"}", 0}, /* jansson's turn */
        {"application/json", "{\"n\":99999999999999999999}", 0},             /* base64 */
        {"application/json", "{\"n\":9223372036854775807}", 1},
        {"application/json", "{\"a\":1,\"a\":2}", 0},
        {"application/json", "{\"a\":1", 0},
        {"application/json", "", 0},
        {"application/json", "1e400", 0},
        {"application/json", "{\"s\":\"\\u0000\"}", 0},
        {"text/plain", "{\"a\":1}", 0},
        {"text/plain", "caf\xc3\xa9", 0},
        {NULL, "plain", 0},
        {"application/json", "\xef\xbb\xbf{}", 0},
    };

    for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
        amqp_message_t m = msg(c[i].ctype, c[i].body, strlen(c[i].body));
        char what[64];
        snprintf(what, sizeof(what), "body %zu", i);
        int spliced = check_msg(&m, what);
        if (c[i].spliced)
            cr_expect(spliced, "%s: [%s] not spliced", what, c[i].body);
    }
    {
        static const char bin[] = {0, (char)0xff, 1};
        amqp_message_t m = msg("application/octet-stream", bin, sizeof(bin));
        check_msg(&m, "binary body");
        m = msg("x/\xff", bin, sizeof(bin));
        check_msg(&m, "a content type that is not UTF-8");
    }
}

static amqp_field_value_t F(int kind)
{
    amqp_field_value_t v;

    memset(&v, 0, sizeof(v));
    v.kind = (uint8_t)kind;
    return v;
}

Test(lease_json, headers_every_kind)
{
    amqp_table_entry_t inner[2], arr_items[3], e[32];
    amqp_field_value_t v;
    int n = 0;

    inner[0].key = B("x");
    inner[0].value = F(AMQP_FIELD_KIND_BOOLEAN);
    inner[1].key = B("y");
    inner[1].value = F(AMQP_FIELD_KIND_UTF8);
    inner[1].value.value.bytes = B("in");
#define ADD(k, val) (e[n].key = B(k), e[n].value = (val), n++)
    v = F(AMQP_FIELD_KIND_BOOLEAN), v.value.boolean = 1, ADD("bool", v);
    v = F(AMQP_FIELD_KIND_I8), v.value.i8 = -8, ADD("i8", v);
    v = F(AMQP_FIELD_KIND_U8), v.value.u8 = 255, ADD("u8", v);
    v = F(AMQP_FIELD_KIND_I16), v.value.i16 = -16000, ADD("i16", v);
    v = F(AMQP_FIELD_KIND_U16), v.value.u16 = 65535, ADD("u16", v);
    v = F(AMQP_FIELD_KIND_I32), v.value.i32 = -2000000000, ADD("i32", v);
    v = F(AMQP_FIELD_KIND_U32), v.value.u32 = 4000000000u, ADD("u32", v);
    v = F(AMQP_FIELD_KIND_I64), v.value.i64 = -9223372036854775807LL - 1, ADD("i64", v);
    v = F(AMQP_FIELD_KIND_U64), v.value.u64 = 18446744073709551615ULL, ADD("u64", v);
    v = F(AMQP_FIELD_KIND_TIMESTAMP), v.value.u64 = 1796233898, ADD("ts", v);
    v = F(AMQP_FIELD_KIND_F32), v.value.f32 = 0.1f, ADD("f32", v);
    v = F(AMQP_FIELD_KIND_F64), v.value.f64 = 1e300, ADD("f64", v);
    v = F(AMQP_FIELD_KIND_F64), v.value.f64 = 3.0, ADD("f64int", v);
    v = F(AMQP_FIELD_KIND_F64), v.value.f64 = NAN, ADD("nan", v);
    v = F(AMQP_FIELD_KIND_F32), v.value.f32 = INFINITY, ADD("inf", v);
    v = F(AMQP_FIELD_KIND_UTF8), v.value.bytes = B("t\"e\\x\nt \xc3\xa9"), ADD("utf8", v);
    v = F(AMQP_FIELD_KIND_BYTES), v.value.bytes = BN("a\0b", 3), ADD("nul", v);
    v = F(AMQP_FIELD_KIND_BYTES), v.value.bytes = BN("\xff\xfe", 2), ADD("bin", v);
    v = F(AMQP_FIELD_KIND_VOID), ADD("void", v);
    v = F(AMQP_FIELD_KIND_DECIMAL), ADD("dec", v);
    v = F(AMQP_FIELD_KIND_UTF8), v.value.bytes = B(""), ADD("", v);
    {
        amqp_message_t m = msg("application/json", "{}", 2);
        m.properties._flags |= AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_PRIORITY_FLAG;
        m.properties.priority = 9;
        m.properties.headers.entries = e;
        m.properties.headers.num_entries = n;
        m.properties.headers.num_entries = n, check_msg(&m, "scalars");
        /* then each kind of table jansson must write */
        v = F(AMQP_FIELD_KIND_TABLE), v.value.table.entries = inner, v.value.table.num_entries = 2;
        ADD("nested", v);
        m.properties.headers.num_entries = n, check_msg(&m, "a nested table");
        n--;
        arr_items[0].value = F(AMQP_FIELD_KIND_I32);
        arr_items[1].value = F(AMQP_FIELD_KIND_UTF8);
        arr_items[1].value.value.bytes = B("s");
        arr_items[2].value = F(AMQP_FIELD_KIND_TABLE);
        arr_items[2].value.value.table.entries = inner;
        arr_items[2].value.value.table.num_entries = 2;
        {
            amqp_field_value_t items[3] = {arr_items[0].value, arr_items[1].value,
                                           arr_items[2].value};
            v = F(AMQP_FIELD_KIND_ARRAY), v.value.array.entries = items;
            v.value.array.num_entries = 3;
            ADD("array", v);
            m.properties.headers.num_entries = n, check_msg(&m, "an array");
        }
        n--;
        v = F(AMQP_FIELD_KIND_I32), v.value.i32 = 2, ADD("i8", v); /* repeated: the last wins */
        m.properties.headers.num_entries = n, check_msg(&m, "a repeated key");
        n--;
        v = F(AMQP_FIELD_KIND_I32);
        e[n].key = BN("\xff", 1), e[n].value = v, n++;
        m.properties.headers.num_entries = n, check_msg(&m, "a key that is not UTF-8");
        n--;
        e[n].key = BN("a\0b", 3), e[n].value = v, n++;
        m.properties.headers.num_entries = n, check_msg(&m, "a key holding a NUL");
        n--;
        {
            static char longkey[300];
            memset(longkey, 'k', sizeof(longkey));
            e[n].key = BN(longkey, sizeof(longkey)), e[n].value = v, n++;
            m.properties.headers.num_entries = n, check_msg(&m, "a key of 300 bytes");
        }
    }
#undef ADD
}

/* An unsigned 64-bit header above INT64_MAX (a foreign client's 'L' field) is a positive
 * number in both writers, never cast to a negative integer (18446744073709551615 came out as
 * -1); at or below INT64_MAX it stays an exact integer. */
Test(lease_json, u64_above_int64_max)
{
    static const unsigned long long vals[] = {18446744073709551615ULL, 9223372036854775808ULL,
                                              9223372036854775807ULL};
    amqp_table_entry_t e[1];
    amqp_message_t m = msg("application/json", "{}", 2);

    m.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    m.properties.headers.entries = e;
    m.properties.headers.num_entries = 1;
    e[0].key = B("big");
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        rq_jbuf_t b;
        size_t len = 0;
        char *text;
        json_t *got, *ref, *h;

        e[0].value = F(AMQP_FIELD_KIND_U64);
        e[0].value.value.u64 = vals[i];
        check_msg(&m, "a u64 header");
        rq_jbuf_init(&b, 0);
        cr_assert_eq(rq_lease_msg_json(&b, &m, &info), 0);
        text = rq_jbuf_take(&b, &len);
        got = json_loadb(text, len, 0, NULL);
        ref = rq_lease_msg_jansson(&m, &info);
        cr_assert_not_null(got);
        cr_assert_not_null(ref);
        for (int w = 0; w < 2; w++) {
            h = json_object_get(json_object_get(w ? ref : got, "headers"), "big");
            cr_assert(json_is_number(h), "%llu: not a number", vals[i]);
            cr_assert(json_number_value(h) > 9.2e18, "%llu came out as %.17g (%s)", vals[i],
                      json_number_value(h), w ? "jansson" : "writer");
            if (vals[i] <= 9223372036854775807ULL)
                cr_assert(json_is_integer(h) &&
                              (unsigned long long)json_integer_value(h) == vals[i],
                          "%llu: not the exact integer", vals[i]);
        }
        json_decref(got);
        json_decref(ref);
        free(text);
    }
}

Test(lease_json, bad_ids_leave_the_buffer)
{
    amqp_message_t m = msg("application/json", "{}", 2);
    rq_lease_msg_info_t bad = info;
    rq_jbuf_t b;
    char *t;

    rq_jbuf_init(&b, 0);
    rq_jbuf_lit(&b, "[before");
    bad.message_id = "\xff";
    cr_expect_eq(rq_lease_msg_json(&b, &m, &bad), -1);
    t = rq_jbuf_take(&b, NULL);
    cr_expect_str_eq(t, "[before");
    free(t);
    cr_expect(rq_lease_msgid_ok("m-1", 3));
    cr_expect_not(rq_lease_msgid_ok("", 0));
    cr_expect_not(rq_lease_msgid_ok("a\0b", 3));
    cr_expect_not(rq_lease_msgid_ok("\xc3", 1));
}

/* ---- generated messages ---- */

static unsigned long long rs = 88172645463325252ULL;

static unsigned rnd(unsigned n)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (unsigned)(rs % n);
}

static const char *const ctypes[] = {"application/json",
                                     "text/plain",
                                     "application/x+json",
                                     "application/json; charset=utf-8",
                                     "\xff/x",
                                     ""};
static const char *const bodies[] = {
    "{\"id\":\"m-1\",\"payload\":{\"a\":[1,2,3]},\"processing_time\":0.5}",
    "[1,2.5,-0,1e3]",
    "\"\xc3\xa9\"",
    "{\"a\":\"\\t\"}",
    "{\"n\":12345678901234567890}",
    "{\"a\":1,\"a\":1}",
    " { } ",
    "nul\0l",
    "\xff\xfe",
    "true",
    "1e-400",
    "{\"x\":1e400}"};
static const char *const keys[] = {"a", "b", "x-relayq-uid", "x-delivery-count", "\xff", "a"};

static amqp_field_value_t gen_field(int depth, amqp_table_entry_t *pool, size_t *used,
                                    amqp_field_value_t *apool, size_t *aused)
{
    static const int kinds[] = {
        AMQP_FIELD_KIND_BOOLEAN, AMQP_FIELD_KIND_I8,    AMQP_FIELD_KIND_U32,
        AMQP_FIELD_KIND_I64,     AMQP_FIELD_KIND_U64,   AMQP_FIELD_KIND_F64,
        AMQP_FIELD_KIND_F32,     AMQP_FIELD_KIND_UTF8,  AMQP_FIELD_KIND_BYTES,
        AMQP_FIELD_KIND_VOID,    AMQP_FIELD_KIND_TABLE, AMQP_FIELD_KIND_ARRAY};
    static const double reals[] = {0.0, -0.0, 1.5, 1e-7, 123456789.125, 1e22, NAN, -INFINITY};
    amqp_field_value_t v = F(kinds[rnd(depth > 2 ? 10 : 12)]);

    switch (v.kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        v.value.boolean = (amqp_boolean_t)rnd(2);
        break;
    case AMQP_FIELD_KIND_I8:
        v.value.i8 = (int8_t)(rnd(256) - 128);
        break;
    case AMQP_FIELD_KIND_U32:
        v.value.u32 = rnd(4000000000u);
        break;
    case AMQP_FIELD_KIND_I64:
        v.value.i64 = (int64_t)rs;
        break;
    case AMQP_FIELD_KIND_U64:
        v.value.u64 = rs;
        break;
    case AMQP_FIELD_KIND_F64:
        v.value.f64 = reals[rnd(8)];
        break;
    case AMQP_FIELD_KIND_F32:
        v.value.f32 = (float)reals[rnd(8)];
        break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        v.value.bytes = B(bodies[rnd(12)]);
        break;
    case AMQP_FIELD_KIND_TABLE: {
        int n = (int)rnd(4);
        if (*used + (size_t)n > 256)
            n = 0;
        v.value.table.entries = pool + *used;
        v.value.table.num_entries = n;
        *used += (size_t)n;
        for (int i = 0; i < n; i++) {
            v.value.table.entries[i].key = B(keys[rnd(6)]);
            v.value.table.entries[i].value = gen_field(depth + 1, pool, used, apool, aused);
        }
        break;
    }
    case AMQP_FIELD_KIND_ARRAY: {
        int n = (int)rnd(4);
        if (*aused + (size_t)n > 256)
            n = 0;
        v.value.array.entries = apool + *aused;
        v.value.array.num_entries = n;
        *aused += (size_t)n;
        for (int i = 0; i < n; i++)
            v.value.array.entries[i] = gen_field(depth + 1, pool, used, apool, aused);
        break;
    }
    default:
        break;
    }
    return v;
}

Test(lease_json, generated)
{
    static amqp_table_entry_t pool[256], top[8];
    static amqp_field_value_t apool[256];
    int spliced = 0;

    for (int i = 0; i < 30000; i++) {
        size_t used = 0, aused = 0;
        const char *body = bodies[rnd(12)];
        size_t blen = strcmp(body, "nul") == 0 ? 5 : strlen(body);
        amqp_message_t m = msg(rnd(5) == 0 ? NULL : ctypes[rnd(6)], body, blen);
        char what[32];
        if (rnd(3) != 0) {
            int n = (int)rnd(8);
            for (int k = 0; k < n; k++) {
                top[k].key = B(keys[rnd(rnd(4) == 0 ? 6 : 4)]);
                top[k].value = gen_field(0, pool, &used, apool, &aused);
            }
            m.properties._flags |= AMQP_BASIC_HEADERS_FLAG;
            m.properties.headers.entries = top;
            m.properties.headers.num_entries = n;
        }
        if (rnd(4) == 0) {
            m.properties._flags |= AMQP_BASIC_PRIORITY_FLAG;
            m.properties.priority = (uint8_t)rnd(256);
        }
        snprintf(what, sizeof(what), "generated %d", i);
        spliced += check_msg(&m, what);
    }
    cr_expect(spliced > 3000, "only %d bodies spliced", spliced);
}
