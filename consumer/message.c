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
#include "json_span.h"
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

/* How set_reply() turns the text into the output line (message.h, "The output line"). */
typedef enum {
    LINE_AS_IS,     /* byte for byte */
    LINE_NO_BREAKS, /* a JSON text without its raw CR and LF (whitespace between tokens) */
    LINE_QUOTED,    /* as a JSON string: '"', '\\' and C0/DEL escaped, other bytes as they are */
} line_mode_t;

/* 1 when s[0..n) holds a control character (C0 or DEL). */
static int has_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    return 0;
}

/* Writes s[0..n) as a JSON string into out (room for 6 * n + 2 bytes). Returns the length. */
static size_t quote(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    size_t j = 0;

    out[j++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = c == '"'    ? "\\\""
                          : c == '\\' ? "\\\\"
                          : c == '\n' ? "\\n"
                          : c == '\r' ? "\\r"
                          : c == '\t' ? "\\t"
                          : c == '\b' ? "\\b"
                          : c == '\f' ? "\\f"
                                      : NULL;

        if (esc != NULL) {
            out[j++] = esc[0];
            out[j++] = esc[1];
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(out + j, "\\u00", 4);
            out[j + 4] = hex[c >> 4];
            out[j + 5] = hex[c & 15];
            j += 6;
        } else {
            out[j++] = (char)c;
        }
    }
    out[j++] = '"';
    return j;
}

/* Builds m->reply = prefix + the line made of text[0..len) by `mode` and points m->line into
 * it. Returns 0 or -1 (no memory). */
static int set_reply(rq_message_t *m, const char *text, size_t len, line_mode_t mode)
{
    size_t room = len, n = 0;
    char *line;

    if (mode == LINE_QUOTED) {
        if (len > (SIZE_MAX - RQ_REPLY_PREFIX_LEN - 3) / 6)
            return -1;
        room = 6 * len + 2;
    }
    m->reply = malloc(RQ_REPLY_PREFIX_LEN + room + 1);
    if (m->reply == NULL)
        return -1;
    memcpy(m->reply, RQ_REPLY_PREFIX, RQ_REPLY_PREFIX_LEN);
    line = m->reply + RQ_REPLY_PREFIX_LEN;
    if (mode == LINE_QUOTED) {
        n = quote(text, len, line);
    } else if (mode == LINE_NO_BREAKS) {
        /* in a valid JSON text a raw CR or LF is whitespace between tokens (strings escape
         * them), so dropping them changes no value and merges no tokens */
        for (size_t i = 0; i < len; i++)
            if (text[i] != '\n' && text[i] != '\r')
                line[n++] = text[i];
    } else if (len > 0) {
        memcpy(line, text, len);
        n = len;
    }
    line[n] = '\0';
    m->reply_len = RQ_REPLY_PREFIX_LEN + n;
    m->line = line;
    m->line_len = n;
    return 0;
}

/* m->payload: a NUL-terminated copy of p[0..len) (json: 1 when it is a JSON text). Returns 0
 * or -1 (no memory). */
static int set_payload(rq_message_t *m, const char *p, size_t len, int json)
{
    m->payload = malloc(len + 1);
    if (m->payload == NULL)
        return -1;
    if (len > 0)
        memcpy(m->payload, p, len);
    m->payload[len] = '\0';
    m->payload_len = len;
    m->payload_json = json;
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

/* out->id for a message whose body names no id: the message_id property, else the
 * correlation_id property (the RPC tutorial's clients set only that), else a new UUID (a
 * message without any identity: see message.h). Returns 0, or -1 with err set. */
static int fallback_id(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    char uuid[RQ_UUID_LEN + 1];

    if (in->message_id != NULL && in->message_id_len > 0) {
        if (memchr(in->message_id, '\0', in->message_id_len) != NULL) {
            set_err(err, "message_id property contains a NUL byte");
            return -1;
        }
        out->id = dup_id(in->message_id, in->message_id_len);
    } else if (in->correlation_id != NULL && in->correlation_id_len > 0 &&
               memchr(in->correlation_id, '\0', in->correlation_id_len) == NULL) {
        out->id = dup_id(in->correlation_id, in->correlation_id_len);
    } else {
        rq_uuid(uuid);
        out->id = dup_id(uuid, RQ_UUID_LEN);
    }
    if (out->id == NULL) {
        set_err(err, "out of memory");
        return -1;
    }
    return 0;
}

/* The idempotency key (message.h): "idem:" + a valid x-relayq-idem header into out->key_buf
 * (1), or 0 when there is none (out->idem_ignored set when one was there but not valid).
 * Returns -1 when out of memory (err set). */
static int decode_idem(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    const rq_wire_str_t *idem = in->wire != NULL ? &in->wire->idem : NULL;
    const size_t plen = sizeof(RQ_MSG_IDEM_PREFIX) - 1;

    if (idem == NULL || idem->state == RQ_WIRE_ABSENT)
        return 0;
    if (idem->state != RQ_WIRE_OK || idem->v.len == 0 || idem->v.len > RQ_MSG_IDEM_MAX ||
        memchr(idem->v.bytes, '\0', idem->v.len) != NULL) {
        out->idem_ignored = 1;
        return 0;
    }
    out->key_buf = malloc(plen + idem->v.len + 1);
    if (out->key_buf == NULL) {
        set_err(err, "out of memory");
        return -1;
    }
    memcpy(out->key_buf, RQ_MSG_IDEM_PREFIX, plen);
    memcpy(out->key_buf + plen, idem->v.bytes, idem->v.len);
    out->key_buf[plen + idem->v.len] = '\0';
    return 1;
}

/* out->key_buf: "idem:" + the x-relayq-idem header (decode_idem), else the x-relayq-uid header
 * (a non-empty 'S' string without NUL), else the message_id property, else a fresh UUID when
 * the id is the correlation_id, else nothing (the key is then the id). Returns 0, or -1 with
 * err set. */
static int decode_key(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    const rq_wire_str_t *uid = in->wire != NULL ? &in->wire->uid : NULL;
    int idem = decode_idem(in, out, err);

    if (idem != 0)
        return idem < 0 ? -1 : 0;
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
    } else if (out->id != NULL && in->correlation_id != NULL && in->correlation_id_len > 0 &&
               strlen(out->id) == in->correlation_id_len &&
               memcmp(out->id, in->correlation_id, in->correlation_id_len) == 0) {
        /* The id came from the correlation_id, which clients reuse across messages (a saga
         * id): a key of its own, so such a message is never taken for another's duplicate
         * (and, like one with no identity at all, not deduplicated across redeliveries). */
        char uuid[RQ_UUID_LEN + 1];

        rq_uuid(uuid);
        out->key_buf = dup_id(uuid, RQ_UUID_LEN);
        if (out->key_buf == NULL) {
            set_err(err, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* A tailed line (a raw message with an x-file header): the body is the line, byte for byte.
 * Returns 0, or -1 with err set. */
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
    if (out->id == NULL || set_reply(out, in->body, in->body_len, LINE_AS_IS) < 0 ||
        set_payload(out, in->body, in->body_len, 0) < 0) {
        set_err(err, "out of memory");
        return -1;
    }
    return 0;
}

/* A text or binary body that is not a tailed line (a foreign client's message): the raw body
 * is the payload. The line is the body byte for byte, or quoted when it holds a '\n'
 * (message.h). Returns 0, or -1 with err set. */
static int decode_text(const rq_msg_input_t *in, rq_message_t *out, rq_msg_error_t *err)
{
    line_mode_t mode = memchr(in->body, '\n', in->body_len) != NULL ? LINE_QUOTED : LINE_AS_IS;

    out->kind = RQ_MSG_RAW;
    if (fallback_id(in, out, err) < 0 || decode_key(in, out, err) < 0)
        return -1;
    if (set_reply(out, in->body, in->body_len, mode) < 0 ||
        set_payload(out, in->body, in->body_len, 0) < 0) {
        set_err(err, "out of memory");
        return -1;
    }
    return 0;
}

/* Parses the body as any JSON value (*root, a new reference, NULL on failure). Integers load
 * as reals so that one beyond 64 bits is valid: values are read from the text (json_span.h).
 * Returns 0; -1 with err set when the body is not JSON; -2 with err "out of memory". */
static int parse_json(const rq_msg_input_t *in, json_t **root, rq_msg_error_t *err)
{
    json_error_t jerr;

    /* JSON text cannot hold a raw NUL byte (in a string it is \u0000), but jansson skips
     * one between tokens: the payload's raw span would carry it into the line. */
    *root = NULL;
    if (in->body_len > 0 && memchr(in->body, '\0', in->body_len) != NULL) {
        set_err(err, "invalid JSON: a raw NUL byte");
        return -1;
    }
    rq_json_oom_clear();
    *root = json_loadb(in->body, in->body_len,
                       JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &jerr);
    if (rq_json_oom()) {
        /* a syntax error or a corrupt value (json_alloc.h): not the message's fault */
        json_decref(*root);
        *root = NULL;
        set_err(err, "out of memory");
        return -2;
    }
    if (*root == NULL) {
        set_err(err, "invalid JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
        return -1;
    }
    return 0;
}

/* out->id: the envelope's "id" (a non-empty string without NUL), else fallback_id(); with a
 * reply_to it must fit the reply's message_id. Returns 0, or -1 with err set. */
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
        if (out->id == NULL) {
            set_err(err, "out of memory");
            return -1;
        }
    } else if (fallback_id(in, out, err) < 0) {
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

/* The envelope's optional "processing_time" (a number >= 0, capped at max_pt) and
 * "fail_times" (a number written as an integer, >= 0: its token in the envelope's text
 * `body`). Returns 0, or -1 with err set. */
static int decode_options(const json_t *root, rq_json_span_t body, double max_pt, rq_message_t *out,
                          rq_msg_error_t *err)
{
    json_t *v = json_object_get(root, "processing_time");
    rq_json_span_t tok;

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
        double n;

        if (!json_is_number(v) || rq_json_member(body.p, body.len, "fail_times", &tok) != 1 ||
            !rq_json_is_integer_token(tok)) {
            set_err(err, "\"fail_times\" must be an integer");
            return -1;
        }
        n = json_number_value(v);
        if (n < 0) {
            set_err(err, "\"fail_times\" must be >= 0");
            return -1;
        }
        out->fail_times = n > INT_MAX ? INT_MAX : (int)n;
    }
    return 0;
}

/* The output line, the reply and out->payload from the payload (its value and its text
 * `raw`, as sent): a string without control characters is its decoded text, any other
 * payload its text as sent without raw line breaks (message.h). Returns 0, or -1 with err
 * set. */
static int encode_line(const json_t *payload, rq_json_span_t raw, rq_message_t *out,
                       rq_msg_error_t *err)
{
    int rc;

    if (json_is_string(payload) &&
        !has_control(json_string_value(payload), json_string_length(payload)))
        rc = set_reply(out, json_string_value(payload), json_string_length(payload), LINE_AS_IS);
    else
        rc = set_reply(out, raw.p, raw.len, LINE_NO_BREAKS);
    if (rc < 0 || set_payload(out, raw.p, raw.len, 1) < 0) {
        set_err(err, "out of memory");
        return -1;
    }
    return 0;
}

/* A JSON body (root, parsed from it): relayq's envelope (an object with "payload") or, without
 * one, the payload itself. Returns 0, or -1 with err set. */
static int decode_json(const rq_msg_input_t *in, const json_t *root, double max_pt,
                       rq_message_t *out, rq_msg_error_t *err)
{
    rq_json_span_t body = rq_json_trim(in->body, in->body_len);
    rq_json_span_t raw;
    json_t *payload = json_is_object(root) ? json_object_get(root, "payload") : NULL;

    out->kind = RQ_MSG_JSON;
    if (payload == NULL) /* JSON without the envelope: the payload itself */
        return fallback_id(in, out, err) < 0 || decode_key(in, out, err) < 0 ||
                       encode_line(root, body, out, err) < 0
                   ? -1
                   : 0;
    /* jansson accepted the text, so the scan finds the value jansson kept (the last) */
    if (rq_json_member(body.p, body.len, "payload", &raw) != 1) {
        set_err(err, "\"payload\" could not be located in the body");
        return -1;
    }
    if (decode_id(root, in, out, err) < 0 || decode_key(in, out, err) < 0 ||
        decode_options(root, body, max_pt, out, err) < 0 || encode_line(payload, raw, out, err) < 0)
        return -1;
    return 0;
}

/* A body without a content type: JSON when it parses as JSON, else text. A body declared
 * application/json (declared = 1) that does not parse is undecodable. Returns 0, -1 with err
 * set, or -2 (out of memory). */
static int decode_json_or_text(const rq_msg_input_t *in, int declared, double max_pt,
                               rq_message_t *out, rq_msg_error_t *err)
{
    json_t *root = NULL;
    int rc = parse_json(in, &root, err);

    if (rc == 0)
        rc = decode_json(in, root, max_pt, out, err);
    else if (rc == -1 && !declared)
        rc = decode_text(in, out, err);
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

    if (in->content_type == NULL || in->content_type_len == 0) {
        rc = decode_json_or_text(in, 0, max_processing_time, out, err);
    } else if (media_type_is(in->content_type, in->content_type_len, "application/json")) {
        rc = decode_json_or_text(in, 1, max_processing_time, out, err);
    } else if (media_type_is(in->content_type, in->content_type_len, "application/octet-stream") ||
               media_type_is(in->content_type, in->content_type_len, "text/plain")) {
        if (in->wire != NULL && in->wire->file.state != RQ_WIRE_ABSENT)
            rc = decode_raw(in, out, err);
        else
            rc = decode_text(in, out, err);
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
    free(m->payload);
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
    if (w->has_correlation_id) {
        in->correlation_id = w->correlation_id.len > 0 ? w->correlation_id.bytes : "";
        in->correlation_id_len = w->correlation_id.len;
    }
    in->body = body.len > 0 ? body.bytes : "";
    in->body_len = body.len;
    if (w->has_headers)
        in->wire = w;
    in->has_reply_to = w->has_reply_to && w->reply_to.len > 0;
}
