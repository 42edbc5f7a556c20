/* wire.c - the wire contract of a relayq message (see wire.h). */
#include "wire.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "trace.h"

/* ---- writing -------------------------------------------------------------------------- */

static amqp_table_entry_t utf8_entry(const char *key, const char *value)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

static amqp_table_entry_t i64_entry(const char *key, int64_t value)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    return e;
}

/* The headers of message m into hdr; returns how many. */
static int encode_headers(const rq_wire_out_t *m, amqp_table_entry_t *hdr)
{
    int n = 0;

    hdr[n++] = i64_entry(RQ_WIRE_HDR_PUBLISHED_MS, m->published_ms);
    hdr[n++] = utf8_entry(RQ_WIRE_HDR_SOURCE, m->source);
    if (m->uid != NULL)
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_UID, m->uid);
    if (m->idem_key != NULL)
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_IDEM, m->idem_key);
    if (m->file_id != NULL)
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_FILE, m->file_id);
    if (m->has_offset)
        hdr[n++] = i64_entry(RQ_WIRE_HDR_OFFSET, m->offset);
    if (m->has_end)
        hdr[n++] = i64_entry(RQ_WIRE_HDR_END, m->end);
    if (m->chunk) {
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_FORMAT, RQ_WIRE_FORMAT_LINES);
        hdr[n++] = i64_entry(RQ_WIRE_HDR_LINES, m->lines);
    }
    if (m->traceparent != NULL)
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_TRACEPARENT, m->traceparent);
    if (m->tracestate != NULL)
        hdr[n++] = utf8_entry(RQ_WIRE_HDR_TRACESTATE, m->tracestate);
    assert(n <= RQ_WIRE_OUT_HEADERS_MAX);
    for (size_t i = 0; i < m->n_user_headers; i++) {
        const rq_wire_header_t *h = &m->user_headers[i];
        hdr[n].key = amqp_cstring_bytes(h->name);
        hdr[n].value.kind = AMQP_FIELD_KIND_UTF8;
        hdr[n].value.value.bytes.bytes = h->value;
        hdr[n].value.value.bytes.len = h->value_len;
        n++;
    }
    return n;
}

void rq_wire_encode(const rq_wire_out_t *m, amqp_basic_properties_t *props,
                    amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX])
{
    memset(props, 0, sizeof(*props));
    props->_flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                    AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_HEADERS_FLAG;
    props->delivery_mode = m->transient ? AMQP_DELIVERY_NONPERSISTENT : AMQP_DELIVERY_PERSISTENT;
    props->message_id = amqp_cstring_bytes(m->message_id);
    props->timestamp = (uint64_t)(m->published_ms / 1000);
    if (m->content_type != NULL) {
        props->_flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
        props->content_type = amqp_cstring_bytes(m->content_type);
    }
    if (m->correlation_id != NULL) {
        props->_flags |= AMQP_BASIC_CORRELATION_ID_FLAG;
        props->correlation_id = amqp_cstring_bytes(m->correlation_id);
    }
    if (m->reply_to != NULL) {
        props->_flags |= AMQP_BASIC_REPLY_TO_FLAG;
        props->reply_to = amqp_cstring_bytes(m->reply_to);
    }
    if (m->app_id != NULL) {
        props->_flags |= AMQP_BASIC_APP_ID_FLAG;
        props->app_id = amqp_cstring_bytes(m->app_id);
    }
    if (m->has_priority) {
        props->_flags |= AMQP_BASIC_PRIORITY_FLAG;
        props->priority = m->priority;
    }
    if (m->expiration != NULL) {
        props->_flags |= AMQP_BASIC_EXPIRATION_FLAG;
        props->expiration = amqp_cstring_bytes(m->expiration);
    }
    props->headers.num_entries = encode_headers(m, hdr);
    props->headers.entries = hdr;
}

int rq_wire_retry_headers(int64_t attempt, const char *why, amqp_table_entry_t out[2])
{
    out[0] = i64_entry(RQ_WIRE_HDR_ATTEMPT, attempt);
    out[1] = utf8_entry(RQ_WIRE_HDR_LAST_ERROR, why);
    return 2;
}

int rq_wire_dlq_headers(const char *why, int64_t attempts, int headers_dropped,
                        amqp_table_entry_t out[3])
{
    int n = 0;

    out[n++] = utf8_entry(RQ_WIRE_HDR_REASON, why);
    out[n++] = i64_entry(RQ_WIRE_HDR_ATTEMPTS, attempts);
    if (headers_dropped)
        out[n++] = i64_entry(RQ_WIRE_HDR_HEADERS_DROPPED, 1);
    return n;
}

amqp_table_entry_t rq_wire_replayed_header(void)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(RQ_WIRE_HDR_REPLAYED);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = 1;
    return e;
}

/* 1 when key is exactly the NUL-terminated name. */
static int key_is(amqp_bytes_t key, const char *name)
{
    size_t n = strlen(name);

    return key.len == n && memcmp(key.bytes, name, n) == 0;
}

/* 1 when key starts with the NUL-terminated prefix. */
static int key_has_prefix(amqp_bytes_t key, const char *prefix)
{
    size_t n = strlen(prefix);

    return key.len >= n && memcmp(key.bytes, prefix, n) == 0;
}

int rq_wire_dropped_on_copy(amqp_bytes_t key)
{
    if (key_is(key, RQ_WIRE_HDR_DEATH))
        return 1;
    if (key_is(key, RQ_WIRE_HDR_UID) || key_is(key, RQ_WIRE_HDR_IDEM))
        return 0; /* the message's identity (dedup key) stays with every copy */
    return key_has_prefix(key, RQ_WIRE_HDR_RELAYQ_PREFIX) ||
           key_has_prefix(key, RQ_WIRE_HDR_FIRST_DEATH_PREFIX) ||
           key_has_prefix(key, RQ_WIRE_HDR_LAST_DEATH_PREFIX);
}

/* 1 when name[0..len) starts with the NUL-terminated prefix, ignoring ASCII case. */
static int name_has_prefix(const char *name, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);

    return len >= n && strncasecmp(name, prefix, n) == 0;
}

const char *rq_wire_header_reserved(const char *name, size_t len)
{
    static const char *const own[] = {
        RQ_WIRE_HDR_PUBLISHED_MS, RQ_WIRE_HDR_SOURCE,      RQ_WIRE_HDR_FILE,
        RQ_WIRE_HDR_OFFSET,       RQ_WIRE_HDR_END,         RQ_WIRE_HDR_FORMAT,
        RQ_WIRE_HDR_LINES,        RQ_WIRE_HDR_TRACEPARENT, RQ_WIRE_HDR_TRACESTATE};

    if (name_has_prefix(name, len, RQ_WIRE_HDR_RELAYQ_PREFIX))
        return "relayq's own x-relayq-* space";
    if (len == strlen(RQ_WIRE_HDR_TOPIC) && strncasecmp(name, RQ_WIRE_HDR_TOPIC, len) == 0)
        return "the header that routes topic messages (relayq-topic)";
    if (name_has_prefix(name, len, RQ_WIRE_HDR_DEATH) ||
        name_has_prefix(name, len, "x-first-death") || name_has_prefix(name, len, "x-last-death"))
        return "the broker's dead-letter history (x-death, x-first-death*, x-last-death*)";
    if (name_has_prefix(name, len, "x-delay"))
        return "the broker's x-delay* space (delayed-message plugin)";
    if ((len == 2 && strncasecmp(name, "CC", 2) == 0) ||
        (len == 3 && strncasecmp(name, "BCC", 3) == 0))
        return "the broker's sender-selected distribution (CC and BCC route copies of the "
               "message, and a string there closes the publishing channel)";
    for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
        if (strlen(own[i]) == len && strncasecmp(name, own[i], len) == 0)
            return "a header relayq sets itself";
    return NULL;
}

/* ---- reading -------------------------------------------------------------------------- */

const char *rq_wire_kind_name(uint8_t kind)
{
    switch (kind) {
    case AMQP_FIELD_KIND_BOOLEAN:
        return "a boolean";
    case AMQP_FIELD_KIND_I8:
    case AMQP_FIELD_KIND_U8:
    case AMQP_FIELD_KIND_I16:
    case AMQP_FIELD_KIND_U16:
    case AMQP_FIELD_KIND_I32:
    case AMQP_FIELD_KIND_U32:
    case AMQP_FIELD_KIND_I64:
    case AMQP_FIELD_KIND_U64:
        return "an integer";
    case AMQP_FIELD_KIND_F32:
    case AMQP_FIELD_KIND_F64:
        return "a float";
    case AMQP_FIELD_KIND_DECIMAL:
        return "a decimal";
    case AMQP_FIELD_KIND_UTF8:
        return "a string";
    case AMQP_FIELD_KIND_BYTES:
        return "a byte array";
    case AMQP_FIELD_KIND_ARRAY:
        return "an array";
    case AMQP_FIELD_KIND_TIMESTAMP:
        return "a timestamp";
    case AMQP_FIELD_KIND_TABLE:
        return "a table";
    case AMQP_FIELD_KIND_VOID:
        return "void";
    default:
        return "an unknown kind";
    }
}

/* A decimal string (1..23 bytes, strtoll over the whole of it) into *out. */
static int string_to_i64(amqp_bytes_t b, int64_t *out)
{
    char buf[24];
    char *end;
    long long v;

    if (b.len == 0 || b.len >= sizeof(buf))
        return -1;
    memcpy(buf, b.bytes, b.len);
    buf[b.len] = '\0';
    v = strtoll(buf, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* An AMQP integer of any width (an unsigned one up to INT64_MAX) into *out. */
static int integer_to_i64(const amqp_field_value_t *f, int64_t *out)
{
    switch (f->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = f->value.i8;
        return 0;
    case AMQP_FIELD_KIND_U8:
        *out = f->value.u8;
        return 0;
    case AMQP_FIELD_KIND_I16:
        *out = f->value.i16;
        return 0;
    case AMQP_FIELD_KIND_U16:
        *out = f->value.u16;
        return 0;
    case AMQP_FIELD_KIND_I32:
        *out = f->value.i32;
        return 0;
    case AMQP_FIELD_KIND_U32:
        *out = f->value.u32;
        return 0;
    case AMQP_FIELD_KIND_I64:
        *out = f->value.i64;
        return 0;
    case AMQP_FIELD_KIND_U64:
        if (f->value.u64 > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)f->value.u64;
        return 0;
    default:
        return -1;
    }
}

int rq_wire_field_i64(const amqp_field_value_t *f, int64_t *out, int *converted)
{
    int conv = 1;
    int rc;

    switch (f->kind) {
    case AMQP_FIELD_KIND_F64:
        if (!(f->value.f64 > 0 && f->value.f64 < 9.2e18))
            return -1;
        *out = (int64_t)f->value.f64;
        rc = 0;
        break;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
        rc = string_to_i64(f->value.bytes, out);
        break;
    default:
        conv = 0;
        rc = integer_to_i64(f, out);
        break;
    }
    if (rc == 0 && converted != NULL)
        *converted = conv;
    return rc;
}

/* Which string kinds a string header accepts. */
enum { STR_UTF8 = 1, STR_UTF8_OR_BYTES = 2 };

/* Where each header of the contract goes in rq_wire_msg_t. */
typedef struct field_spec {
    const char *name;
    size_t off;  /* offsetof the rq_wire_str_t / rq_wire_int_t in rq_wire_msg_t */
    int is_int;  /* 1: integer rule; 0: string */
    int strkind; /* strings: STR_UTF8 or STR_UTF8_OR_BYTES */
} field_spec_t;

static const field_spec_t fields[] = {
    {RQ_WIRE_HDR_PUBLISHED_MS, offsetof(rq_wire_msg_t, published_ms_header), 1, 0},
    {RQ_WIRE_HDR_SOURCE, offsetof(rq_wire_msg_t, source), 0, STR_UTF8_OR_BYTES},
    {RQ_WIRE_HDR_UID, offsetof(rq_wire_msg_t, uid), 0, STR_UTF8},
    {RQ_WIRE_HDR_IDEM, offsetof(rq_wire_msg_t, idem), 0, STR_UTF8},
    {RQ_WIRE_HDR_FILE, offsetof(rq_wire_msg_t, file), 0, STR_UTF8_OR_BYTES},
    {RQ_WIRE_HDR_OFFSET, offsetof(rq_wire_msg_t, offset), 1, 0},
    {RQ_WIRE_HDR_END, offsetof(rq_wire_msg_t, end), 1, 0},
    {RQ_WIRE_HDR_FORMAT, offsetof(rq_wire_msg_t, format), 0, STR_UTF8_OR_BYTES},
    {RQ_WIRE_HDR_LINES, offsetof(rq_wire_msg_t, lines), 1, 0},
    {RQ_WIRE_HDR_ATTEMPT, offsetof(rq_wire_msg_t, attempt), 1, 0},
    {RQ_WIRE_HDR_LAST_ERROR, offsetof(rq_wire_msg_t, last_error), 0, STR_UTF8_OR_BYTES},
    {RQ_WIRE_HDR_REASON, offsetof(rq_wire_msg_t, reason), 0, STR_UTF8},
    {RQ_WIRE_HDR_ATTEMPTS, offsetof(rq_wire_msg_t, attempts), 1, 0},
};

/* Records the first bad header's text (later ones keep the first). */
static void bad_type(rq_wire_error_t *err, int *bad, const char *name, const char *what,
                     uint8_t kind)
{
    if (!*bad && err != NULL)
        snprintf(err->text, sizeof(err->text), "header %s is %s, not %s", name,
                 rq_wire_kind_name(kind), what);
    *bad = 1;
}

/* Decodes one header of the contract into its field (first occurrence only). */
static void decode_field(const field_spec_t *s, const amqp_field_value_t *v, rq_wire_msg_t *out,
                         rq_wire_error_t *err, int *bad)
{
    char *base = (char *)out + s->off;

    if (s->is_int) {
        rq_wire_int_t *f = (rq_wire_int_t *)(void *)base;

        if (f->state != RQ_WIRE_ABSENT)
            return;
        f->state = rq_wire_field_i64(v, &f->v, &f->converted) == 0 ? RQ_WIRE_OK : RQ_WIRE_BAD_TYPE;
        if (f->state == RQ_WIRE_BAD_TYPE)
            bad_type(err, bad, s->name, "an integer", v->kind);
    } else {
        rq_wire_str_t *f = (rq_wire_str_t *)(void *)base;
        int ok = v->kind == AMQP_FIELD_KIND_UTF8 ||
                 (s->strkind == STR_UTF8_OR_BYTES && v->kind == AMQP_FIELD_KIND_BYTES);

        if (f->state != RQ_WIRE_ABSENT)
            return;
        f->state = ok ? RQ_WIRE_OK : RQ_WIRE_BAD_TYPE;
        if (ok)
            f->v = v->value.bytes;
        else
            bad_type(err, bad, s->name, "a string", v->kind);
    }
}

/* The latest death (x-death's first table): its reason and count. */
static void decode_death(const amqp_field_value_t *v, rq_wire_msg_t *out, rq_wire_error_t *err,
                         int *bad)
{
    const amqp_table_t *d;

    if (out->death != RQ_WIRE_ABSENT)
        return;
    if (v->kind != AMQP_FIELD_KIND_ARRAY || v->value.array.num_entries <= 0 ||
        v->value.array.entries[0].kind != AMQP_FIELD_KIND_TABLE) {
        out->death = RQ_WIRE_BAD_TYPE;
        bad_type(err, bad, RQ_WIRE_HDR_DEATH, "an array of tables", v->kind);
        return;
    }
    out->death = RQ_WIRE_OK;
    d = &v->value.array.entries[0].value.table;
    for (int i = 0; i < d->num_entries; i++) {
        const amqp_table_entry_t *e = &d->entries[i];
        int64_t n;

        if (out->death_reason.state == RQ_WIRE_ABSENT && key_is(e->key, RQ_WIRE_DEATH_REASON) &&
            e->value.kind == AMQP_FIELD_KIND_UTF8) {
            out->death_reason.state = RQ_WIRE_OK;
            out->death_reason.v = e->value.value.bytes;
        }
        if (out->death_count.state == RQ_WIRE_ABSENT && key_is(e->key, RQ_WIRE_DEATH_COUNT) &&
            integer_to_i64(&e->value, &n) == 0 && n >= 0) {
            out->death_count.state = RQ_WIRE_OK;
            out->death_count.v = n;
        }
    }
}

/* The properties of props into out. */
static void decode_properties(const amqp_basic_properties_t *props, rq_wire_msg_t *out)
{
    amqp_flags_t fl = props->_flags;

    out->has_content_type = (fl & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0;
    if (out->has_content_type)
        out->content_type = props->content_type;
    out->has_message_id = (fl & AMQP_BASIC_MESSAGE_ID_FLAG) != 0;
    if (out->has_message_id)
        out->message_id = props->message_id;
    out->has_correlation_id = (fl & AMQP_BASIC_CORRELATION_ID_FLAG) != 0;
    if (out->has_correlation_id)
        out->correlation_id = props->correlation_id;
    out->has_reply_to = (fl & AMQP_BASIC_REPLY_TO_FLAG) != 0;
    if (out->has_reply_to)
        out->reply_to = props->reply_to;
    out->has_timestamp = (fl & AMQP_BASIC_TIMESTAMP_FLAG) != 0;
    if (out->has_timestamp)
        out->timestamp = props->timestamp;
    out->has_delivery_mode = (fl & AMQP_BASIC_DELIVERY_MODE_FLAG) != 0;
    if (out->has_delivery_mode)
        out->delivery_mode = props->delivery_mode;
    out->has_headers = (fl & AMQP_BASIC_HEADERS_FLAG) != 0;
}

/* A trace header, leniently: kept only when valid, first occurrence only. */
static void decode_trace(const amqp_table_entry_t *e, rq_wire_msg_t *out)
{
    int parent = key_is(e->key, RQ_WIRE_HDR_TRACEPARENT);
    rq_wire_str_t *f = parent ? &out->traceparent : &out->tracestate;
    amqp_bytes_t v;

    if (f->state != RQ_WIRE_ABSENT)
        return;
    if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)
        v = e->value.value.bytes;
    else
        return;
    if (parent ? !rq_traceparent_valid(v.bytes, v.len) : !rq_tracestate_valid(v.bytes, v.len))
        return;
    if (parent)
        v.len = RQ_TRACEPARENT_LEN; /* a later version's extra fields are not carried: the
                                     * reply and copies stay small whatever a client sends */
    f->state = RQ_WIRE_OK;
    f->v = v;
}

int rq_wire_decode(const amqp_basic_properties_t *props, rq_wire_msg_t *out, rq_wire_error_t *err)
{
    int bad = 0;

    memset(out, 0, sizeof(*out));
    if (err != NULL)
        err->text[0] = '\0';
    decode_properties(props, out);
    for (int i = 0; out->has_headers && i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];

        if (key_is(e->key, RQ_WIRE_HDR_DEATH)) {
            decode_death(&e->value, out, err, &bad);
            continue;
        }
        if (key_is(e->key, RQ_WIRE_HDR_TRACEPARENT) || key_is(e->key, RQ_WIRE_HDR_TRACESTATE)) {
            decode_trace(e, out);
            continue;
        }
        for (size_t k = 0; k < sizeof(fields) / sizeof(fields[0]); k++) {
            if (key_is(e->key, fields[k].name)) {
                decode_field(&fields[k], &e->value, out, err, &bad);
                break;
            }
        }
    }
    out->published_ms = -1;
    if (out->published_ms_header.state == RQ_WIRE_OK && out->published_ms_header.v > 0)
        out->published_ms = out->published_ms_header.v;
    else if (out->has_timestamp && out->timestamp > 0 &&
             out->timestamp < (uint64_t)INT64_MAX / 1000)
        out->published_ms = (int64_t)out->timestamp * 1000;
    return bad ? -1 : 0;
}
