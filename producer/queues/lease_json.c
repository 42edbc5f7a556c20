/* lease_json.c - a leased message's JSON object (lease_json.h). */
#include "lease_json.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_scan.h"
#include "json_span.h"
#include "util.h"

#define TABLE_DEPTH_MAX 8 /* deeper tables and arrays are null (both writers) */
#define FAST_TABLE_MAX 64 /* more header entries: jansson (the key check is quadratic) */
#define KEY_MAX 255       /* longer header keys are cut (jansson's writer): jansson */

int rq_lease_msgid_ok(const void *id, size_t len)
{
    return len > 0 && memchr(id, '\0', len) == NULL && rq_jbuf_utf8_valid(id, len);
}

/* ---- the reference: jansson ---- */

/* s[0..n) as base64 (a heap string), or NULL. */
static char *base64_of(const void *s, size_t n)
{
    char *out = malloc(4 * ((n + 2) / 3) + 1);

    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, s, (int)n);
    return out;
}

static json_t *bytes_json(amqp_bytes_t b)
{
    json_t *s = json_stringn(b.bytes, b.len); /* NULL for invalid UTF-8 */
    char *out;

    if (s != NULL)
        return s;
    if ((out = base64_of(b.bytes, b.len)) == NULL)
        return NULL;
    s = json_pack("{ss}", "base64", out);
    free(out);
    return s;
}

static json_t *table_json(const amqp_table_t *t, int depth);

static json_t *field_json(const amqp_field_value_t *v, int depth)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        return json_boolean(v->value.boolean);
    case AMQP_FIELD_KIND_I8:
        return json_integer(v->value.i8);
    case AMQP_FIELD_KIND_U8:
        return json_integer(v->value.u8);
    case AMQP_FIELD_KIND_I16:
        return json_integer(v->value.i16);
    case AMQP_FIELD_KIND_U16:
        return json_integer(v->value.u16);
    case AMQP_FIELD_KIND_I32:
        return json_integer(v->value.i32);
    case AMQP_FIELD_KIND_U32:
        return json_integer(v->value.u32);
    case AMQP_FIELD_KIND_I64:
        return json_integer(v->value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: /* above INT64_MAX: a real (jansson's integers are signed) */
        return v->value.u64 > INT64_MAX ? json_real((double)v->value.u64)
                                        : json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32:
        return json_real(v->value.f32);
    case AMQP_FIELD_KIND_F64:
        return json_real(v->value.f64);
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        return bytes_json(v->value.bytes);
    case AMQP_FIELD_KIND_TABLE:
        return depth > TABLE_DEPTH_MAX ? json_null() : table_json(&v->value.table, depth + 1);
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a = json_array();
        for (int i = 0; a != NULL && depth <= TABLE_DEPTH_MAX && i < v->value.array.num_entries;
             i++)
            json_array_append_new(a, field_json(&v->value.array.entries[i], depth + 1));
        return a;
    }
    default:
        return json_null();
    }
}

static json_t *table_json(const amqp_table_t *t, int depth)
{
    json_t *o = json_object();

    for (int i = 0; o != NULL && i < t->num_entries; i++) {
        char key[KEY_MAX + 1];
        amqp_bytes_t k = t->entries[i].key;
        snprintf(key, sizeof(key), "%.*s", (int)(k.len < KEY_MAX ? k.len : KEY_MAX),
                 (const char *)k.bytes);
        json_t *v = field_json(&t->entries[i].value, depth);
        json_object_set_new(o, key, v != NULL ? v : json_null());
    }
    return o;
}

/* 1 for application/json and any type/subtype+json (parameters ignored). */
static int is_json_type(const amqp_basic_properties_t *p)
{
    char ct[128];
    char *semi;
    size_t n;

    if (!(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG))
        return 0;
    snprintf(ct, sizeof(ct), "%.*s", (int)(p->content_type.len < 127 ? p->content_type.len : 127),
             (const char *)p->content_type.bytes);
    if ((semi = strchr(ct, ';')) != NULL)
        *semi = '\0';
    n = strlen(ct);
    while (n > 0 && ct[n - 1] == ' ')
        ct[--n] = '\0';
    return strcasecmp(ct, "application/json") == 0 ||
           (n > 5 && strcasecmp(ct + n - 5, "+json") == 0);
}

/* The body as JSON (a new reference) when its type says JSON and jansson takes it, else NULL. */
static json_t *body_value(const amqp_message_t *m)
{
    if (!is_json_type(&m->properties))
        return NULL;
    return json_loadb(m->body.bytes, m->body.len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
}

json_t *rq_lease_msg_jansson(const amqp_message_t *m, const rq_lease_msg_info_t *info)
{
    const amqp_basic_properties_t *p = &m->properties;
    char iso[RQ_ISO8601_LEN + 1], *b64;
    json_t *o, *v;

    o = json_pack("{ss si ss ss sI}", "message_id", info->message_id, "attempt", info->attempt,
                  "lease_id", info->lease_id, "lease_expires_at", rq_iso8601(info->expires_ms, iso),
                  "lease_expires_ms", (json_int_t)info->expires_ms);
    if (o == NULL)
        return NULL;
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        json_object_set_new(o, "content_type", bytes_json(p->content_type));
    else
        json_object_set_new(o, "content_type", json_null());
    json_object_set_new(o, "headers",
                        (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? table_json(&p->headers, 0)
                                                              : json_object());
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG)
        json_object_set_new(o, "priority", json_integer(p->priority));
    if ((v = body_value(m)) != NULL) {
        json_object_set_new(o, "body", v);
    } else if ((b64 = base64_of(m->body.bytes, m->body.len)) != NULL) {
        json_object_set_new(o, "body_base64", json_string(b64));
        free(b64);
    }
    return o;
}

/* ---- the writer ---- */

/* A string, or {"base64": ...} when it is not UTF-8 (bytes_json). */
static void put_bytes(rq_jbuf_t *b, amqp_bytes_t s)
{
    char *out;

    if (rq_jbuf_str(b, s.bytes, s.len) == 0)
        return;
    if ((out = base64_of(s.bytes, s.len)) == NULL) {
        rq_jbuf_raw(b, "null", 4); /* jansson's null member */
        return;
    }
    rq_jbuf_lit(b, "{\"base64\":\"");
    rq_jbuf_lit(b, out); /* base64's alphabet needs no escape */
    rq_jbuf_raw(b, "\"}", 2);
    free(out);
}

/* A scalar field as field_json() makes it. Returns 0, or -1 for a table or an array. */
static int put_scalar(rq_jbuf_t *b, const amqp_field_value_t *v)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        rq_jbuf_lit(b, v->value.boolean ? "true" : "false");
        return 0;
    case AMQP_FIELD_KIND_I8:
        rq_jbuf_int(b, v->value.i8);
        return 0;
    case AMQP_FIELD_KIND_U8:
        rq_jbuf_int(b, v->value.u8);
        return 0;
    case AMQP_FIELD_KIND_I16:
        rq_jbuf_int(b, v->value.i16);
        return 0;
    case AMQP_FIELD_KIND_U16:
        rq_jbuf_int(b, v->value.u16);
        return 0;
    case AMQP_FIELD_KIND_I32:
        rq_jbuf_int(b, v->value.i32);
        return 0;
    case AMQP_FIELD_KIND_U32:
        rq_jbuf_int(b, v->value.u32);
        return 0;
    case AMQP_FIELD_KIND_I64:
        rq_jbuf_int(b, v->value.i64);
        return 0;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: /* above INT64_MAX: a real, as the reference writes it */
        if (v->value.u64 > INT64_MAX)
            rq_jbuf_real(b, (double)v->value.u64);
        else
            rq_jbuf_int(b, (long long)v->value.u64);
        return 0;
    case AMQP_FIELD_KIND_F32:
    case AMQP_FIELD_KIND_F64:
        /* json_real() refuses NaN and infinities: the member is null */
        if (rq_jbuf_real(b, v->kind == AMQP_FIELD_KIND_F32 ? v->value.f32 : v->value.f64) != 0)
            rq_jbuf_raw(b, "null", 4);
        return 0;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        put_bytes(b, v->value.bytes);
        return 0;
    case AMQP_FIELD_KIND_TABLE:
    case AMQP_FIELD_KIND_ARRAY:
        return -1;
    default:
        rq_jbuf_raw(b, "null", 4);
        return 0;
    }
}

/* 1 when table_json() would give t's entries one for one, in order, with scalar values. */
static int table_simple(const amqp_table_t *t)
{
    if (t->num_entries > FAST_TABLE_MAX)
        return 0;
    for (int i = 0; i < t->num_entries; i++) {
        amqp_bytes_t k = t->entries[i].key;
        int kind = t->entries[i].value.kind;
        if (k.len >= KEY_MAX || !(k.len == 0 || rq_lease_msgid_ok(k.bytes, k.len)) ||
            kind == AMQP_FIELD_KIND_TABLE || kind == AMQP_FIELD_KIND_ARRAY)
            return 0;
        for (int j = 0; j < i; j++)
            if (t->entries[j].key.len == k.len &&
                memcmp(t->entries[j].key.bytes, k.bytes, k.len) == 0)
                return 0;
    }
    return 1;
}

/* Appends a jansson value's compact text (and drops the reference); null when v is NULL. */
static void put_json(rq_jbuf_t *b, json_t *v)
{
    char *text = v != NULL ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    if (v != NULL && text == NULL)
        b->failed = 1; /* out of memory: the answer is lost */
    rq_jbuf_lit(b, text != NULL ? text : "null");
    free(text);
    json_decref(v);
}

static void put_headers(rq_jbuf_t *b, const amqp_basic_properties_t *p)
{
    const amqp_table_t *t = &p->headers;

    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG) || t->num_entries == 0) {
        rq_jbuf_raw(b, "{}", 2);
        return;
    }
    if (!table_simple(t)) {
        put_json(b, table_json(t, 0));
        return;
    }
    rq_jbuf_raw(b, "{", 1);
    for (int i = 0; i < t->num_entries; i++) {
        if (i > 0)
            rq_jbuf_raw(b, ",", 1);
        rq_jbuf_str(b, t->entries[i].key.bytes, t->entries[i].key.len); /* checked UTF-8 */
        rq_jbuf_raw(b, ":", 1);
        put_scalar(b, &t->entries[i].value); /* checked scalar */
    }
    rq_jbuf_raw(b, "}", 1);
}

static void put_body(rq_jbuf_t *b, const amqp_message_t *m)
{
    char *b64;

    if (is_json_type(&m->properties)) {
        rq_json_span_t t = rq_json_trim(m->body.bytes, m->body.len);
        json_t *v;
        if (rq_json_scan_valid(t.p, t.len, 0, 0)) {
            rq_jbuf_lit(b, ",\"body\":");
            rq_jbuf_raw(b, t.p, t.len);
            return;
        }
        if ((v = body_value(m)) != NULL) {
            rq_jbuf_lit(b, ",\"body\":");
            put_json(b, v);
            return;
        }
    }
    if ((b64 = base64_of(m->body.bytes, m->body.len)) == NULL) {
        b->failed = 1;
        return;
    }
    rq_jbuf_lit(b, ",\"body_base64\":\"");
    rq_jbuf_lit(b, b64);
    rq_jbuf_raw(b, "\"", 1);
    free(b64);
}

int rq_lease_msg_json(rq_jbuf_t *b, const amqp_message_t *m, const rq_lease_msg_info_t *info)
{
    const amqp_basic_properties_t *p = &m->properties;
    char iso[RQ_ISO8601_LEN + 1];
    size_t mark = b->len;

    rq_jbuf_lit(b, "{\"message_id\":");
    if (rq_jbuf_str(b, info->message_id, strlen(info->message_id)) != 0)
        goto bad;
    rq_jbuf_lit(b, ",\"attempt\":");
    rq_jbuf_int(b, info->attempt);
    rq_jbuf_lit(b, ",\"lease_id\":");
    if (rq_jbuf_str(b, info->lease_id, strlen(info->lease_id)) != 0)
        goto bad;
    rq_jbuf_lit(b, ",\"lease_expires_at\":\"");
    rq_jbuf_lit(b, rq_iso8601(info->expires_ms, iso));
    rq_jbuf_lit(b, "\",\"lease_expires_ms\":");
    rq_jbuf_int(b, info->expires_ms);
    rq_jbuf_lit(b, ",\"content_type\":");
    if (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        put_bytes(b, p->content_type);
    else
        rq_jbuf_raw(b, "null", 4);
    rq_jbuf_lit(b, ",\"headers\":");
    put_headers(b, p);
    if (p->_flags & AMQP_BASIC_PRIORITY_FLAG) {
        rq_jbuf_lit(b, ",\"priority\":");
        rq_jbuf_int(b, p->priority);
    }
    put_body(b, m);
    rq_jbuf_raw(b, "}", 1);
    return b->failed ? -1 : 0;

bad:
    rq_jbuf_truncate(b, mark);
    return -1;
}
