/* event.c - one delivered AMQP message as a real-time event (event.h). */
#include "event.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "b64.h"
#include "jbuf.h"
#include "json_span.h"
#include "wire.h"

/* 1 when b holds a NUL byte (rabbitmq-c gives an empty string as {0, NULL}). */
static int has_nul(amqp_bytes_t b)
{
    return b.len > 0 && memchr(b.bytes, '\0', b.len) != NULL;
}

/* b's bytes, never NULL. */
static const char *bytes_of(amqp_bytes_t b)
{
    return b.len > 0 ? (const char *)b.bytes : "";
}

/* 1 when the header named key[0..len) is left out of an event's "headers". */
static int header_hidden(const char *key, size_t len)
{
    static const char *const prefixes[] = {
        RQ_WIRE_HDR_RELAYQ_PREFIX, RQ_WIRE_HDR_FIRST_DEATH_PREFIX, RQ_WIRE_HDR_LAST_DEATH_PREFIX};
    static const char *const names[] = {RQ_WIRE_HDR_DEATH, RQ_WIRE_HDR_PUBLISHED_MS,
                                        "x-stream-offset", RQ_WIRE_HDR_TOPIC};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t n = strlen(prefixes[i]);
        if (len >= n && memcmp(key, prefixes[i], n) == 0)
            return 1;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (len == strlen(names[i]) && memcmp(key, names[i], len) == 0)
            return 1;
    }
    return 0;
}

static json_t *table_json(const amqp_table_t *t, int depth_left, int hide)
{
    json_t *o = json_object();

    if (o == NULL)
        return NULL;
    for (int i = 0; i < t->num_entries; i++) {
        const amqp_table_entry_t *e = &t->entries[i];
        char key[256];
        json_t *v;

        if (e->key.len >= sizeof(key) || has_nul(e->key) ||
            !rq_jbuf_utf8_valid(bytes_of(e->key), e->key.len))
            continue;
        if (hide && header_hidden(bytes_of(e->key), e->key.len))
            continue;
        memcpy(key, bytes_of(e->key), e->key.len);
        key[e->key.len] = '\0';
        v = rq_rt_event_field(&e->value, depth_left - 1);
        if (v != NULL && json_object_set_new(o, key, v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

json_t *rq_rt_event_field(const amqp_field_value_t *v, int depth_left)
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
    case AMQP_FIELD_KIND_TIMESTAMP:
        return v->value.u64 > INT64_MAX ? json_real((double)v->value.u64)
                                        : json_integer((json_int_t)v->value.u64);
    case AMQP_FIELD_KIND_F32:
        return json_real(v->value.f32);
    case AMQP_FIELD_KIND_F64:
        return json_real(v->value.f64);
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        if (!rq_jbuf_utf8_valid(bytes_of(v->value.bytes), v->value.bytes.len))
            return NULL;
        return json_stringn(bytes_of(v->value.bytes), v->value.bytes.len);
    case AMQP_FIELD_KIND_VOID:
        return json_null();
    case AMQP_FIELD_KIND_ARRAY: {
        json_t *a;
        if (depth_left <= 0 || (a = json_array()) == NULL)
            return NULL;
        for (int i = 0; i < v->value.array.num_entries; i++) {
            json_t *e = rq_rt_event_field(&v->value.array.entries[i], depth_left - 1);
            if (e != NULL && json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case AMQP_FIELD_KIND_TABLE:
        return depth_left <= 0 ? NULL : table_json(&v->value.table, depth_left, 0);
    default:
        return NULL; /* decimals */
    }
}

/* The body parsed as JSON (bounded depth; big integers read as reals), or NULL. */
static json_t *parse_body(amqp_bytes_t body)
{
    json_t *j;

    if (body.len == 0 || rq_json_too_deep(body.bytes, body.len, RQ_RT_PAYLOAD_MAX_DEPTH))
        return NULL;
    j = json_loadb(body.bytes, body.len, JSON_DECODE_ANY, NULL);
    if (j == NULL) /* "too big integer": JSON all the same */
        j = json_loadb(body.bytes, body.len, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
    return j;
}

/* Appends the JSON text body (already validated) trimmed, CR and LF as spaces. */
static void splice_json(rq_jbuf_t *b, amqp_bytes_t body)
{
    rq_json_span_t s = rq_json_trim(body.bytes, body.len);
    size_t start = b->len;

    rq_jbuf_raw(b, s.p, s.len);
    if (b->failed)
        return;
    for (size_t i = start; i < b->len; i++) {
        if (b->p[i] == '\r' || b->p[i] == '\n')
            b->p[i] = ' '; /* only whitespace: a JSON string holds no raw CR or LF */
    }
}

static int64_t published_ms_of(const amqp_basic_properties_t *props, int *has)
{
    const amqp_field_value_t *v;

    *has = 0;
    if (props == NULL)
        return 0;
    v = rq_amqp_header(props, RQ_WIRE_HDR_PUBLISHED_MS);
    if (v != NULL) {
        *has = 1;
        switch (v->kind) {
        case AMQP_FIELD_KIND_I64:
            return v->value.i64;
        case AMQP_FIELD_KIND_U64:
        case AMQP_FIELD_KIND_TIMESTAMP:
            return (int64_t)v->value.u64;
        case AMQP_FIELD_KIND_I32:
            return v->value.i32;
        case AMQP_FIELD_KIND_U32:
            return v->value.u32;
        default:
            *has = 0;
        }
    }
    if (props->_flags & AMQP_BASIC_TIMESTAMP_FLAG) {
        *has = 1;
        return (int64_t)props->timestamp * 1000;
    }
    return 0;
}

static char *dup_bytes(amqp_bytes_t b)
{
    char *s = malloc(b.len + 1);

    if (s != NULL) {
        if (b.len > 0)
            memcpy(s, b.bytes, b.len);
        s[b.len] = '\0';
    }
    return s;
}

/* The decoded parts of out (headers, routing key, id, payload) from in. 0, or -1 (out of
 * memory; the caller clears out). */
static int event_decode(const rq_rt_event_in_t *in, rq_rt_event_msg_t *out)
{
    const amqp_basic_properties_t *props = in->props;

    if (props != NULL && (props->_flags & AMQP_BASIC_HEADERS_FLAG))
        out->headers = table_json(&props->headers, RQ_RT_HEADER_MAX_DEPTH, 1);
    else
        out->headers = json_object();
    out->routing_key = dup_bytes(in->routing_key);
    if (out->headers == NULL || out->routing_key == NULL)
        return -1;
    out->routing_key[strnlen(out->routing_key, in->routing_key.len)] = '\0';
    if (props != NULL && (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) &&
        rq_jbuf_utf8_valid(bytes_of(props->message_id), props->message_id.len) &&
        !has_nul(props->message_id)) {
        if ((out->id = dup_bytes(props->message_id)) == NULL)
            return -1;
    }
    out->payload = parse_body(in->body);
    return 0;
}

/* Appends ,"payload":<JSON bytes verbatim | string> or ,"payload_base64":"...". 0, or -1
 * (out of memory). */
static int event_payload(rq_jbuf_t *b, const rq_rt_event_in_t *in, const json_t *payload)
{
    if (payload != NULL) {
        rq_jbuf_lit(b, ",\"payload\":");
        splice_json(b, in->body);
    } else if (rq_jbuf_utf8_valid(bytes_of(in->body), in->body.len)) {
        rq_jbuf_lit(b, ",\"payload\":");
        rq_jbuf_str(b, bytes_of(in->body), in->body.len);
    } else {
        size_t n;
        char *enc = malloc(RQ_B64_ENC_LEN(in->body.len) + 1);
        rq_jbuf_lit(b, ",\"payload_base64\":\"");
        if (enc == NULL)
            return -1;
        n = rq_b64_encode(bytes_of(in->body), in->body.len, enc);
        rq_jbuf_raw(b, enc, n);
        free(enc);
        rq_jbuf_lit(b, "\"");
    }
    return 0;
}

/* Appends ,"published_ms":..., ,"redelivered":... (queues), ,"offset":... (stream) and the
 * closing brace. */
static void event_tail(rq_jbuf_t *b, const rq_rt_event_in_t *in)
{
    int has_pub;
    int64_t pub = published_ms_of(in->props, &has_pub);

    rq_jbuf_lit(b, ",\"published_ms\":");
    if (has_pub)
        rq_jbuf_int(b, pub);
    else
        rq_jbuf_lit(b, "null");
    if (in->kind == RQ_RT_QUEUE)
        rq_jbuf_lit(b, in->redelivered ? ",\"redelivered\":true" : ",\"redelivered\":false");
    if (in->has_offset) {
        char num[24];
        snprintf(num, sizeof(num), ",\"offset\":%llu", (unsigned long long)in->offset);
        rq_jbuf_lit(b, num);
    }
    rq_jbuf_lit(b, "}");
}

int rq_rt_event_make(const rq_rt_event_in_t *in, rq_rt_event_msg_t *out)
{
    rq_jbuf_t b;
    char *hdr_text = NULL;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    rq_jbuf_init(&b, 256 + in->body.len);
    if (event_decode(in, out) != 0)
        goto cleanup;
    rq_jbuf_lit(&b, "{\"id\":");
    if (out->id == NULL || rq_jbuf_str(&b, out->id, strlen(out->id)) != 0)
        rq_jbuf_lit(&b, "null");
    rq_jbuf_lit(&b, in->kind == RQ_RT_QUEUE ? ",\"queue\":" : ",\"topic\":");
    if (rq_jbuf_str(&b, in->name, strlen(in->name)) != 0)
        rq_jbuf_lit(&b, "\"\"");
    rq_jbuf_lit(&b, ",\"routing_key\":");
    if (rq_jbuf_str(&b, out->routing_key, strlen(out->routing_key)) != 0)
        rq_jbuf_lit(&b, "\"\"");
    rq_jbuf_lit(&b, ",\"headers\":");
    hdr_text = json_dumps(out->headers, JSON_COMPACT);
    if (hdr_text == NULL)
        goto cleanup;
    rq_jbuf_lit(&b, hdr_text);
    if (event_payload(&b, in, out->payload) != 0)
        goto cleanup;
    event_tail(&b, in);
    out->json = rq_jbuf_take(&b, &out->len);
    if (out->json == NULL)
        goto cleanup;
    out->fm.payload = out->payload;
    out->fm.headers = out->headers;
    out->fm.routing_key = out->routing_key;
    out->fm.id = out->id;
    rc = 0;

cleanup:
    free(hdr_text);
    rq_jbuf_free(&b);
    if (rc != 0)
        rq_rt_event_clear(out);
    return rc;
}

void rq_rt_event_clear(rq_rt_event_msg_t *m)
{
    free(m->json);
    json_decref(m->payload);
    json_decref(m->headers);
    free(m->routing_key);
    free(m->id);
    memset(m, 0, sizeof(*m));
}
