/* message.c - decoding a delivered message (see message.h). */
#include "message.h"

#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "amqp_conn.h"
#include "json_alloc.h"

#define SHORTSTR_MAX 255 /* bytes in an AMQP short string (message_id, header names) */

__attribute__((format(printf, 2, 3))) static void set_err(rq_msg_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

__attribute__((format(printf, 2, 3))) static void set_err(rq_msg_error_t *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}

/* Compares the media type of a content type (before any ';' parameters, spaces trimmed)
 * with `want`, ignoring case. */
static int media_type_is(const char *ct, size_t len, const char *want)
{
    size_t end = 0;
    size_t start = 0;
    size_t wlen = strlen(want);

    while (end < len && ct[end] != ';')
        end++;
    while (start < end && (ct[start] == ' ' || ct[start] == '\t'))
        start++;
    while (end > start && (ct[end - 1] == ' ' || ct[end - 1] == '\t'))
        end--;
    return end - start == wlen && strncasecmp(ct + start, want, wlen) == 0;
}

/* Copies a (ptr, len) text into a printable, truncated form for error messages. */
static void printable(const char *s, size_t len, char *out, size_t outlen)
{
    size_t j = 0;

    for (size_t i = 0; i < len && j + 5 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c >= 0x20 && c < 0x7f && c != '"') ? (char)c : '?';
    }
    if (outlen > 0)
        out[j < outlen ? j : outlen - 1] = '\0';
}

static char *dup_id(const char *s, size_t len)
{
    char *p = malloc(len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* Builds m->reply = prefix + line and points m->line into it. Returns 0 or -1 (no memory). */
static int set_reply(rq_message_t *m, const char *line, size_t len)
{
    m->reply = malloc(RQ_REPLY_PREFIX_LEN + len + 1);
    if (m->reply == NULL)
        return -1;
    memcpy(m->reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN);
    if (len > 0)
        memcpy(m->reply + RQ_REPLY_PREFIX_LEN, line, len);
    m->reply[RQ_REPLY_PREFIX_LEN + len] = '\0';
    m->reply_len = RQ_REPLY_PREFIX_LEN + len;
    m->line = m->reply + RQ_REPLY_PREFIX_LEN;
    m->line_len = len;
    return 0;
}

/* Looks up header `key` in a table (NULL: no table). */
static const amqp_field_value_t *table_get(const amqp_table_t *t, const char *key)
{
    size_t klen = strlen(key);

    if (t == NULL)
        return NULL;
    for (int i = 0; i < t->num_entries; i++) {
        if (t->entries[i].key.len == klen && memcmp(t->entries[i].key.bytes, key, klen) == 0)
            return &t->entries[i].value;
    }
    return NULL;
}

static int field_to_i64(const amqp_field_value_t *f, int64_t *out);

/* A string header into out (NUL-terminated). Returns its length, or -1 when not a string,
 * empty, too long for out, or holding NUL. */
static long field_str(const amqp_field_value_t *f, char *out, size_t outlen)
{
    if ((f->kind != AMQP_FIELD_KIND_UTF8 && f->kind != AMQP_FIELD_KIND_BYTES) ||
        f->value.bytes.len == 0 || f->value.bytes.len >= outlen ||
        memchr(f->value.bytes.bytes, '\0', f->value.bytes.len) != NULL)
        return -1;
    memcpy(out, f->value.bytes.bytes, f->value.bytes.len);
    out[f->value.bytes.len] = '\0';
    return (long)f->value.bytes.len;
}

/* The tail range of a raw message with an x-file header (see message.h): fills out->tailed,
 * file_id, start, end, verbatim. Returns 0 (also when there is no x-file: not tailed), or -1
 * with err set when the headers describe an impossible range. */
static int decode_tail_range(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    const amqp_field_value_t *f = table_get(in->headers, "x-file");
    const int64_t len = (int64_t)in->body_len; /* a body is far below INT64_MAX bytes */
    char fmt[16];
    int64_t start, end;
    long n;

    if (f == NULL)
        return 0;
    n = field_str(f, out->file_id, sizeof(out->file_id));
    if (n < 0 ||
        strspn(out->file_id,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-") != (size_t)n) {
        set_err(err, "x-file header must be 1..%d bytes of [A-Za-z0-9:._-]", RQ_MSG_FILE_ID_MAX);
        return -1;
    }
    f = table_get(in->headers, "x-offset");
    if (f == NULL || field_to_i64(f, &start) != 0 || start < 0) {
        set_err(err, "a tailed line (x-file) needs an integer x-offset >= 0");
        return -1;
    }
    f = table_get(in->headers, "x-format");
    if (f != NULL && (field_str(f, fmt, sizeof(fmt)) < 0 || strcmp(fmt, "lines") != 0)) {
        set_err(err, "unsupported x-format (only \"lines\")");
        return -1;
    }
    out->verbatim = f != NULL;
    /* start >= 0 and len >= 0, so INT64_MAX - start cannot overflow */
    if (len > INT64_MAX - start || (!out->verbatim && len + 1 > INT64_MAX - start)) {
        set_err(err, "impossible range: x-offset %lld plus %lld bytes passes INT64_MAX",
                (long long)start, (long long)len);
        return -1;
    }
    f = table_get(in->headers, "x-end");
    if (f != NULL) {
        if (field_to_i64(f, &end) != 0) {
            set_err(err, "x-end must be an integer");
            return -1;
        }
        /* end > start >= 0 first, so end - start cannot overflow */
        if (end <= start || (out->verbatim && end - start != len) ||
            (!out->verbatim && end - start != len && end - start != len + 1)) {
            set_err(err, "impossible range [%lld, %lld) for a %s of %lld bytes (x-offset, x-end)",
                    (long long)start, (long long)end, out->verbatim ? "chunk" : "line",
                    (long long)len);
            return -1;
        }
    } else {
        end = start + len + (out->verbatim ? 0 : 1);
        if (end <= start) {
            set_err(err, "impossible range: an empty chunk at x-offset %lld", (long long)start);
            return -1;
        }
    }
    out->tailed = 1;
    out->start = start;
    out->end = end;
    return 0;
}

static int decode_raw(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    if (in->message_id == NULL || in->message_id_len == 0) {
        set_err(err, "a raw line message needs a message_id property");
        return -1;
    }
    if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
        set_err(err, "message_id property contains a NUL byte");
        return -1;
    }
    out->kind = RQ_MSG_RAW;
    if (decode_tail_range(in, out, err) < 0)
        return -1;
    out->id = dup_id(in->message_id, in->message_id_len);
    if (out->id == NULL || set_reply(out, in->body, in->body_len) < 0) {
        set_err(err, "out of memory");
        return -1;
    }
    return 0;
}

static int decode_json(const rq_msg_input_t *in, double max_pt, rq_message_t *out,
                       rq_msg_error_t *err)
{
    json_error_t jerr;
    json_t *root = NULL;
    const amqp_field_value_t *uid;
    json_t *payload;
    json_t *v;
    int rc = -1;

    rq_json_oom_clear();
    root = json_loadb(in->body, in->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (rq_json_oom()) {
        /* a syntax error or a corrupt value (json_alloc.h): not the message's fault */
        set_err(err, "out of memory");
        goto out;
    }
    if (root == NULL) {
        set_err(err, "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        goto out;
    }
    if (!json_is_object(root)) {
        set_err(err, "the body must be a JSON object");
        goto out;
    }
    out->kind = RQ_MSG_JSON;
    payload = json_object_get(root, "payload");
    if (payload == NULL) {
        set_err(err, "missing \"payload\"");
        goto out;
    }

    /* id: a non-empty string without NUL, else the message_id property */
    v = json_object_get(root, "id");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            set_err(err, "\"id\" must be a non-empty string");
            goto out;
        }
        if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
            set_err(err, "\"id\" contains a NUL character");
            goto out;
        }
        out->id = dup_id(json_string_value(v), json_string_length(v));
    } else if (in->message_id != NULL && in->message_id_len > 0) {
        if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
            set_err(err, "message_id property contains a NUL byte");
            goto out;
        }
        out->id = dup_id(in->message_id, in->message_id_len);
    } else {
        set_err(err, "missing \"id\" (and no message_id property)");
        goto out;
    }
    if (out->id == NULL) {
        set_err(err, "out of memory");
        goto out;
    }
    if (in->has_reply_to && strlen(out->id) > SHORTSTR_MAX) {
        set_err(err,
                "\"id\" is %zu bytes: the reply's message_id (an AMQP short string) holds at "
                "most 255",
                strlen(out->id));
        goto out;
    }
    uid = table_get(in->headers, RQ_HDR_UID);
    if (uid != NULL && uid->kind == AMQP_FIELD_KIND_UTF8 && uid->value.bytes.len > 0 &&
        memchr(uid->value.bytes.bytes, '\0', uid->value.bytes.len) == NULL) {
        out->key_buf = dup_id(uid->value.bytes.bytes, uid->value.bytes.len);
        if (out->key_buf == NULL) {
            set_err(err, "out of memory");
            goto out;
        }
    } else if (in->message_id != NULL && in->message_id_len > 0) {
        if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
            set_err(err, "message_id property contains a NUL byte");
            goto out;
        }
        out->key_buf = dup_id(in->message_id, in->message_id_len);
        if (out->key_buf == NULL) {
            set_err(err, "out of memory");
            goto out;
        }
    }

    v = json_object_get(root, "processing_time");
    if (v != NULL && !json_is_null(v)) {
        double t;

        if (!json_is_number(v)) {
            set_err(err, "\"processing_time\" must be a number");
            goto out;
        }
        t = json_number_value(v);
        if (!(t >= 0)) {
            set_err(err, "\"processing_time\" must be >= 0");
            goto out;
        }
        if (t > max_pt) {
            t = max_pt;
            out->processing_capped = 1;
        }
        out->processing_time = t;
    }

    v = json_object_get(root, "fail_times");
    if (v != NULL && !json_is_null(v)) {
        json_int_t n;

        if (!json_is_integer(v)) {
            set_err(err, "\"fail_times\" must be an integer");
            goto out;
        }
        n = json_integer_value(v);
        if (n < 0) {
            set_err(err, "\"fail_times\" must be >= 0");
            goto out;
        }
        out->fail_times = n > INT_MAX ? INT_MAX : (int)n;
    }

    v = payload;
    if (json_is_string(v)) {
        if (set_reply(out, json_string_value(v), json_string_length(v)) < 0) {
            set_err(err, "out of memory");
            goto out;
        }
    } else {
        const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
        size_t need = json_dumpb(v, NULL, 0, flags);

        out->reply = need > 0 ? malloc(RQ_REPLY_PREFIX_LEN + need + 1) : NULL;
        if (out->reply == NULL) {
            set_err(err, need > 0 || rq_json_oom() ? "out of memory"
                                                   : "\"payload\" cannot be serialized");
            goto out;
        }
        memcpy(out->reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN);
        if (json_dumpb(v, out->reply + RQ_REPLY_PREFIX_LEN, need, flags) != need) {
            set_err(err, rq_json_oom() ? "out of memory" : "\"payload\" cannot be serialized");
            goto out;
        }
        out->reply[RQ_REPLY_PREFIX_LEN + need] = '\0';
        out->reply_len = RQ_REPLY_PREFIX_LEN + need;
        out->line = out->reply + RQ_REPLY_PREFIX_LEN;
        out->line_len = need;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int rq_message_decode(const rq_msg_input_t *in, double max_processing_time, rq_message_t *out,
                      rq_msg_error_t *err)
{
    rq_msg_error_t local;
    int rc;

    if (err == NULL)
        err = &local;
    memset(out, 0, sizeof(*out));
    err->text[0] = '\0';
    if (in->body == NULL && in->body_len > 0) {
        set_err(err, "body pointer missing");
        return -1;
    }
    if (max_processing_time < 0)
        max_processing_time = 0;

    if (in->content_type == NULL || in->content_type_len == 0 ||
        media_type_is(in->content_type, in->content_type_len, "application/json")) {
        rc = decode_json(in, max_processing_time, out, err);
    } else if (media_type_is(in->content_type, in->content_type_len, "application/octet-stream") ||
               media_type_is(in->content_type, in->content_type_len, "text/plain")) {
        rc = decode_raw(in, out, err);
    } else {
        char ct[64];

        printable(in->content_type, in->content_type_len, ct, sizeof(ct));
        set_err(err, "unsupported content_type \"%s\"", ct);
        rc = -1;
    }
    if (rc < 0) {
        rq_message_clear(out);
        if (strcmp(err->text, "out of memory") == 0)
            rc = -2;
        return rc;
    }
    out->key = out->key_buf != NULL ? out->key_buf : out->id;
    out->key_len = strlen(out->key);
    return rc;
}

void rq_message_clear(rq_message_t *m)
{
    if (m == NULL)
        return;
    free(m->id);
    free(m->reply);
    free(m->key_buf);
    memset(m, 0, sizeof(*m));
}

void rq_message_input_from_amqp(const amqp_basic_properties_t *props, amqp_bytes_t body,
                                rq_msg_input_t *in)
{
    memset(in, 0, sizeof(*in));
    if (props->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) {
        in->content_type = props->content_type.len > 0 ? props->content_type.bytes : "";
        in->content_type_len = props->content_type.len;
    }
    if (props->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) {
        in->message_id = props->message_id.len > 0 ? props->message_id.bytes : "";
        in->message_id_len = props->message_id.len;
    }
    in->body = body.len > 0 ? body.bytes : "";
    in->body_len = body.len;
    if (props->_flags & AMQP_BASIC_HEADERS_FLAG)
        in->headers = &props->headers;
    in->has_reply_to = (props->_flags & AMQP_BASIC_REPLY_TO_FLAG) && props->reply_to.len > 0;
}

/* Reads an integer-like field value; returns 0 and *out, or -1 when the kind is not one. */
static int field_to_i64(const amqp_field_value_t *f, int64_t *out)
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
    case AMQP_FIELD_KIND_F64:
        if (!(f->value.f64 > 0 && f->value.f64 < 9.2e18))
            return -1;
        *out = (int64_t)f->value.f64;
        return 0;
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: {
        char buf[24];
        char *end;
        long long v;

        if (f->value.bytes.len == 0 || f->value.bytes.len >= sizeof(buf))
            return -1;
        memcpy(buf, f->value.bytes.bytes, f->value.bytes.len);
        buf[f->value.bytes.len] = '\0';
        v = strtoll(buf, &end, 10);
        if (*end != '\0')
            return -1;
        *out = v;
        return 0;
    }
    default:
        return -1;
    }
}

int rq_message_header_i64(const amqp_basic_properties_t *props, const char *key, int64_t *out)
{
    const amqp_field_value_t *v = rq_amqp_header(props, key);

    return v != NULL && field_to_i64(v, out) == 0 ? 0 : -1;
}

int rq_message_header_str(const amqp_basic_properties_t *props, const char *key, char *out,
                          size_t outlen)
{
    const amqp_field_value_t *v = rq_amqp_header(props, key);

    if (v == NULL || (v->kind != AMQP_FIELD_KIND_UTF8 && v->kind != AMQP_FIELD_KIND_BYTES) ||
        v->value.bytes.len == 0 || v->value.bytes.len >= outlen ||
        memchr(v->value.bytes.bytes, '\0', v->value.bytes.len) != NULL)
        return -1;
    memcpy(out, v->value.bytes.bytes, v->value.bytes.len);
    out[v->value.bytes.len] = '\0';
    return 0;
}

int64_t rq_message_published_ms(const amqp_basic_properties_t *props)
{
    int64_t v;

    if (rq_message_header_i64(props, "x-published-ms", &v) == 0 && v > 0)
        return v;
    if ((props->_flags & AMQP_BASIC_TIMESTAMP_FLAG) && props->timestamp > 0 &&
        props->timestamp < (uint64_t)INT64_MAX / 1000)
        return (int64_t)props->timestamp * 1000;
    return -1;
}
