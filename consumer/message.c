/* message.c - decoding a delivered message (see message.h). */
#include "message.h"

#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json_alloc.h"
#include "util.h"
#include "wire.h"

/* The parser error setter (docs/CONVENTIONS.md): one line over rq_verrf(). */
__attribute__((format(printf, 2, 3))) static void set_err(rq_msg_error_t *err, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    va_start(ap, fmt);
    rq_verrf(err->text, sizeof(err->text), fmt, ap);
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

/* A string header into out (NUL-terminated). Returns its length, or -1 when not a string,
 * empty, too long for out, or holding NUL. */
static long field_str(const rq_wire_str_t *f, char *out, size_t outlen)
{
    if (f->state != RQ_WIRE_OK || f->v.len == 0 || f->v.len >= outlen ||
        memchr(f->v.bytes, '\0', f->v.len) != NULL)
        return -1;
    memcpy(out, f->v.bytes, f->v.len);
    out[f->v.len] = '\0';
    return (long)f->v.len;
}

/* The tail range of a raw message with an x-file header (see message.h): fills out->tailed,
 * file_id, start, end, verbatim. Returns 0 (also when there is no x-file: not tailed), or -1
 * with err set when the headers describe an impossible range. */
static int decode_tail_range(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    const rq_wire_msg_t *w = in->wire;
    const int64_t len = (int64_t)in->body_len; /* a body is far below INT64_MAX bytes */
    char fmt[16];
    int64_t start, end;
    long n;

    if (w == NULL || w->file.state == RQ_WIRE_ABSENT)
        return 0;
    n = field_str(&w->file, out->file_id, sizeof(out->file_id));
    if (n < 0 ||
        strspn(out->file_id,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:._-") != (size_t)n) {
        set_err(err, RQ_WIRE_HDR_FILE " header must be 1..%d bytes of [A-Za-z0-9:._-]",
                RQ_MSG_FILE_ID_MAX);
        return -1;
    }
    if (w->offset.state != RQ_WIRE_OK || w->offset.v < 0) {
        set_err(err, "a tailed line (" RQ_WIRE_HDR_FILE ") needs an integer " RQ_WIRE_HDR_OFFSET
                     " >= 0");
        return -1;
    }
    start = w->offset.v;
    if (w->format.state != RQ_WIRE_ABSENT &&
        (field_str(&w->format, fmt, sizeof(fmt)) < 0 || strcmp(fmt, RQ_WIRE_FORMAT_LINES) != 0)) {
        set_err(err, "unsupported " RQ_WIRE_HDR_FORMAT " (only \"" RQ_WIRE_FORMAT_LINES "\")");
        return -1;
    }
    out->verbatim = w->format.state != RQ_WIRE_ABSENT;
    /* start >= 0 and len >= 0, so INT64_MAX - start cannot overflow */
    if (len > INT64_MAX - start || (!out->verbatim && len + 1 > INT64_MAX - start)) {
        set_err(err,
                "impossible range: " RQ_WIRE_HDR_OFFSET " %lld plus %lld bytes passes INT64_MAX",
                (long long)start, (long long)len);
        return -1;
    }
    if (w->end.state != RQ_WIRE_ABSENT) {
        if (w->end.state != RQ_WIRE_OK) {
            set_err(err, RQ_WIRE_HDR_END " must be an integer");
            return -1;
        }
        end = w->end.v;
        /* end > start >= 0 first, so end - start cannot overflow */
        if (end <= start || (out->verbatim && end - start != len) ||
            (!out->verbatim && end - start != len && end - start != len + 1)) {
            set_err(err,
                    "impossible range [%lld, %lld) for a %s of %lld bytes (" RQ_WIRE_HDR_OFFSET
                    ", " RQ_WIRE_HDR_END ")",
                    (long long)start, (long long)end, out->verbatim ? "chunk" : "line",
                    (long long)len);
            return -1;
        }
    } else {
        end = start + len + (out->verbatim ? 0 : 1);
        if (end <= start) {
            set_err(err, "impossible range: an empty chunk at " RQ_WIRE_HDR_OFFSET " %lld",
                    (long long)start);
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

/* Parses the body into a JSON object (*root, a new reference, NULL on failure). Returns 0, or
 * -1 with err set. */
static int parse_object(const rq_msg_input_t *in, json_t **root, rq_msg_error_t *err)
{
    json_error_t jerr;

    rq_json_oom_clear();
    *root = json_loadb(in->body, in->body_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (rq_json_oom()) {
        /* a syntax error or a corrupt value (json_alloc.h): not the message's fault */
        set_err(err, "out of memory");
        return -1;
    }
    if (*root == NULL) {
        set_err(err, "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return -1;
    }
    if (!json_is_object(*root)) {
        set_err(err, "the body must be a JSON object");
        return -1;
    }
    return 0;
}

/* out->id: the body's "id" (a non-empty string without NUL), else the message_id property;
 * with a reply_to it must fit the reply's message_id. Returns 0, or -1 with err set. */
static int decode_id(const json_t *root, const rq_msg_input_t *in, rq_message_t *out,
                     rq_msg_error_t *err)
{
    json_t *v = json_object_get(root, "id");

    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0) {
            set_err(err, "\"id\" must be a non-empty string");
            return -1;
        }
        if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
            set_err(err, "\"id\" contains a NUL character");
            return -1;
        }
        out->id = dup_id(json_string_value(v), json_string_length(v));
    } else if (in->message_id != NULL && in->message_id_len > 0) {
        if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
            set_err(err, "message_id property contains a NUL byte");
            return -1;
        }
        out->id = dup_id(in->message_id, in->message_id_len);
    } else {
        set_err(err, "missing \"id\" (and no message_id property)");
        return -1;
    }
    if (out->id == NULL) {
        set_err(err, "out of memory");
        return -1;
    }
    if (in->has_reply_to && strlen(out->id) > RQ_WIRE_SHORTSTR_MAX) {
        set_err(err,
                "\"id\" is %zu bytes: the reply's message_id (an AMQP short string) holds at "
                "most 255",
                strlen(out->id));
        return -1;
    }
    return 0;
}

/* out->key_buf: the x-relayq-uid header (a non-empty 'S' string without NUL), else the
 * message_id property, else nothing (the key is then the id). Returns 0, or -1 with err set. */
static int decode_key(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    const rq_wire_str_t *uid = in->wire != NULL ? &in->wire->uid : NULL;

    if (uid != NULL && uid->state == RQ_WIRE_OK && uid->v.len > 0 &&
        memchr(uid->v.bytes, '\0', uid->v.len) == NULL) {
        out->key_buf = dup_id(uid->v.bytes, uid->v.len);
        if (out->key_buf == NULL) {
            set_err(err, "out of memory");
            return -1;
        }
    } else if (in->message_id != NULL && in->message_id_len > 0) {
        if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
            set_err(err, "message_id property contains a NUL byte");
            return -1;
        }
        out->key_buf = dup_id(in->message_id, in->message_id_len);
        if (out->key_buf == NULL) {
            set_err(err, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* The optional "processing_time" (a number >= 0, capped at max_pt) and "fail_times" (an
 * integer >= 0). Returns 0, or -1 with err set. */
static int decode_options(const json_t *root, double max_pt, rq_message_t *out, rq_msg_error_t *err)
{
    json_t *v = json_object_get(root, "processing_time");

    if (v != NULL && !json_is_null(v)) {
        double t;

        if (!json_is_number(v)) {
            set_err(err, "\"processing_time\" must be a number");
            return -1;
        }
        t = json_number_value(v);
        if (!(t >= 0)) {
            set_err(err, "\"processing_time\" must be >= 0");
            return -1;
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
            return -1;
        }
        n = json_integer_value(v);
        if (n < 0) {
            set_err(err, "\"fail_times\" must be >= 0");
            return -1;
        }
        out->fail_times = n > INT_MAX ? INT_MAX : (int)n;
    }
    return 0;
}

/* The output line and reply from the payload: a string verbatim, anything else compact JSON.
 * Returns 0, or -1 with err set. */
static int encode_line(const json_t *payload, rq_message_t *out, rq_msg_error_t *err)
{
    const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
    size_t need;

    if (json_is_string(payload)) {
        if (set_reply(out, json_string_value(payload), json_string_length(payload)) < 0) {
            set_err(err, "out of memory");
            return -1;
        }
        return 0;
    }
    need = json_dumpb(payload, NULL, 0, flags);
    out->reply = need > 0 ? malloc(RQ_REPLY_PREFIX_LEN + need + 1) : NULL;
    if (out->reply == NULL) {
        set_err(err,
                need > 0 || rq_json_oom() ? "out of memory" : "\"payload\" cannot be serialized");
        return -1;
    }
    memcpy(out->reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN);
    if (json_dumpb(payload, out->reply + RQ_REPLY_PREFIX_LEN, need, flags) != need) {
        set_err(err, rq_json_oom() ? "out of memory" : "\"payload\" cannot be serialized");
        return -1;
    }
    out->reply[RQ_REPLY_PREFIX_LEN + need] = '\0';
    out->reply_len = RQ_REPLY_PREFIX_LEN + need;
    out->line = out->reply + RQ_REPLY_PREFIX_LEN;
    out->line_len = need;
    return 0;
}

static int decode_json(const rq_msg_input_t *in, double max_pt, rq_message_t *out,
                       rq_msg_error_t *err)
{
    json_t *root = NULL;
    json_t *payload;
    int rc = -1;

    if (parse_object(in, &root, err) < 0)
        goto out;
    out->kind = RQ_MSG_JSON;
    payload = json_object_get(root, "payload");
    if (payload == NULL) {
        set_err(err, "missing \"payload\"");
        goto out;
    }
    if (decode_id(root, in, out, err) < 0 || decode_key(in, out, err) < 0 ||
        decode_options(root, max_pt, out, err) < 0 || encode_line(payload, out, err) < 0)
        goto out;
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

void rq_message_input_from_wire(const rq_wire_msg_t *w, amqp_bytes_t body, rq_msg_input_t *in)
{
    memset(in, 0, sizeof(*in));
    if (w->has_content_type) {
        in->content_type = w->content_type.len > 0 ? w->content_type.bytes : "";
        in->content_type_len = w->content_type.len;
    }
    if (w->has_message_id) {
        in->message_id = w->message_id.len > 0 ? w->message_id.bytes : "";
        in->message_id_len = w->message_id.len;
    }
    in->body = body.len > 0 ? body.bytes : "";
    in->body_len = body.len;
    if (w->has_headers)
        in->wire = w;
    in->has_reply_to = w->has_reply_to && w->reply_to.len > 0;
}
