/* status_event.c - encoding and decoding of one status event (status_event.h).
 *
 * Encoding writes with jbuf (no jansson tree on the producer's and consumer's paths);
 * decoding loads with jansson, after a nesting check, and bounds every member. */
#include "status_event.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "json_alloc.h"
#include "json_span.h"

#define SEV_REPLY_MAX (1024 * 1024) /* the longest reply an event holds (bytes) */
/* The longest body decoded: a reply of SEV_REPLY_MAX bytes written as \u00XX, and room. */
#define SEV_BODY_MAX (8 * 1024 * 1024)
#define SEV_DEPTH_MAX 16 /* nesting allowed in a body (unknown members may nest) */
#define SEV_ATTEMPT_MAX 1000000
#define SEV_SRC_MAX RQ_SEV_ID_MAX

struct rq_sev_hold {
    json_t *root;
    unsigned char *reply; /* a decoded "reply_b64" */
};

static const char *const names[RQ_SEV_COUNT] = {
    [RQ_SEV_ACCEPTED] = "accepted",     [RQ_SEV_CONFIRMED] = "confirmed",
    [RQ_SEV_NOT_STORED] = "not_stored", [RQ_SEV_DELIVERED] = "delivered",
    [RQ_SEV_RETRIED] = "retried",       [RQ_SEV_DEAD_LETTERED] = "dead_lettered",
    [RQ_SEV_REPLIED] = "replied",
};

const char *rq_sev_name(rq_sev_type_t t)
{
    return t > RQ_SEV_NONE && t < RQ_SEV_COUNT ? names[t] : NULL;
}

rq_sev_type_t rq_sev_parse(const char *name, size_t n)
{
    if (name == NULL)
        return RQ_SEV_NONE;
    for (int t = RQ_SEV_NONE + 1; t < RQ_SEV_COUNT; t++)
        if (strlen(names[t]) == n && memcmp(names[t], name, n) == 0)
            return (rq_sev_type_t)t;
    return RQ_SEV_NONE;
}

/* The length of s, 0 for NULL. */
static size_t slen(const char *s)
{
    return s == NULL ? 0 : strlen(s);
}

/* Appends ,"name":"s" when s is not absent. -1 when s is longer than max or not UTF-8. */
static int put_str(rq_jbuf_t *out, const char *name, const char *s, size_t max)
{
    size_t n = slen(s);

    if (n == 0)
        return 0;
    if (n > max)
        return -1;
    rq_jbuf_lit(out, ",\"");
    rq_jbuf_lit(out, name);
    rq_jbuf_lit(out, "\":");
    return rq_jbuf_str(out, s, n);
}

/* Appends ,"name":v when v is not 0. */
static void put_int(rq_jbuf_t *out, const char *name, long long v)
{
    if (v == 0)
        return;
    rq_jbuf_lit(out, ",\"");
    rq_jbuf_lit(out, name);
    rq_jbuf_lit(out, "\":");
    rq_jbuf_int(out, v);
}

/* The error text, cut to RQ_SEV_TEXT_MAX bytes on a UTF-8 boundary, with every byte that is
 * not part of valid UTF-8 replaced by '?' (an error may quote anything), into buf. */
static size_t clean_text(const char *s, char *buf)
{
    size_t n = slen(s), o = 0;

    for (size_t i = 0; i < n;) {
        size_t k = 1;
        unsigned char c = (unsigned char)s[i];
        if (c >= 0xf0)
            k = 4;
        else if (c >= 0xe0)
            k = 3;
        else if (c >= 0xc0)
            k = 2;
        if (i + k > n || !rq_jbuf_utf8_valid(s + i, k))
            k = 1, c = 0;
        if (o + k > RQ_SEV_TEXT_MAX)
            break;
        if (k == 1 && (c == 0 || c >= 0x80))
            buf[o] = '?';
        else
            memcpy(buf + o, s + i, k);
        o += k;
        i += k;
    }
    buf[o] = '\0';
    return o;
}

/* Appends the reply: "reply" when it is UTF-8, else "reply_b64". -1 when it is too long. */
static int put_reply(rq_jbuf_t *out, const rq_status_event_t *ev)
{
    char *b;

    if (ev->reply == NULL)
        return 0;
    if (ev->reply_len > SEV_REPLY_MAX)
        return -1;
    if (rq_jbuf_utf8_valid(ev->reply, ev->reply_len)) {
        rq_jbuf_lit(out, ",\"reply\":");
        return rq_jbuf_str(out, ev->reply, ev->reply_len);
    }
    b = malloc(RQ_B64_ENC_LEN(ev->reply_len) + 1);
    if (b == NULL)
        return -1;
    rq_jbuf_lit(out, ",\"reply_b64\":\"");
    rq_jbuf_raw(out, b, rq_b64_encode(ev->reply, ev->reply_len, b));
    rq_jbuf_lit(out, "\"");
    free(b);
    return 0;
}

/* Appends every member of ev after "ev". 0, or -1 when one is invalid. */
static int put_members(const rq_status_event_t *ev, rq_jbuf_t *out)
{
    char text[RQ_SEV_TEXT_MAX + 1];

    if (put_str(out, "id", ev->id, RQ_SEV_ID_MAX) != 0 ||
        put_str(out, "uid", ev->uid, RQ_SEV_ID_MAX) != 0 ||
        put_str(out, "queue", ev->queue, RQ_SEV_ID_MAX) != 0 ||
        put_str(out, "key", ev->key, RQ_SEV_KEY_MAX) != 0 ||
        put_str(out, "src", ev->src, SEV_SRC_MAX) != 0)
        return -1;
    rq_jbuf_lit(out, ",\"ts\":");
    rq_jbuf_int(out, ev->ts_ms);
    put_int(out, "attempt", ev->attempt);
    clean_text(ev->error, text);
    if (put_str(out, "error", text, RQ_SEV_TEXT_MAX) != 0 || put_reply(out, ev) != 0)
        return -1;
    put_int(out, "reply_len", (long long)ev->reply_full_len);
    if (ev->truncated)
        rq_jbuf_lit(out, ",\"truncated\":true");
    put_int(out, "answer", ev->answer);
    return 0;
}

int rq_status_event_encode(const rq_status_event_t *ev, rq_jbuf_t *out)
{
    const char *name = rq_sev_name(ev->type);
    size_t start = out->len;

    if (name == NULL || slen(ev->id) == 0 || ev->ts_ms < 0 || ev->attempt < 0 ||
        ev->attempt > SEV_ATTEMPT_MAX ||
        (ev->answer != 0 && (ev->answer < 100 || ev->answer > 599)))
        return -1;
    rq_jbuf_lit(out, "{\"v\":1,\"ev\":\"");
    rq_jbuf_lit(out, name);
    rq_jbuf_lit(out, "\"");
    if (put_members(ev, out) != 0) {
        if (!out->failed && out->p != NULL) { /* take back what was appended */
            out->len = start;
            out->p[start] = '\0';
        }
        return -1;
    }
    rq_jbuf_lit(out, "}");
    return out->failed ? -1 : 0;
}

/* Member `name` of o as a string of at most max bytes without NUL into *out (NULL when
 * absent). 0, or -1 when present but not such a string. */
static int get_str(json_t *o, const char *name, size_t max, const char **out)
{
    json_t *v = json_object_get(o, name);

    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    *out = json_string_value(v);
    return 0;
}

/* Member `name` of o as an integer in [lo, hi] into *out (0 when absent). 0 or -1. */
static int get_int(json_t *o, const char *name, json_int_t lo, json_int_t hi, json_int_t *out)
{
    json_t *v = json_object_get(o, name);

    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

/* The strings of the event in o into ev. 0 or -1. */
static int decode_strings(json_t *o, rq_status_event_t *ev)
{
    const char *name;

    if (get_str(o, "ev", 32, &name) != 0 || name == NULL ||
        (ev->type = rq_sev_parse(name, strlen(name))) == RQ_SEV_NONE)
        return -1;
    if (get_str(o, "id", RQ_SEV_ID_MAX, &ev->id) != 0 || ev->id == NULL || ev->id[0] == '\0' ||
        get_str(o, "uid", RQ_SEV_ID_MAX, &ev->uid) != 0 ||
        get_str(o, "queue", RQ_SEV_ID_MAX, &ev->queue) != 0 ||
        get_str(o, "key", RQ_SEV_KEY_MAX, &ev->key) != 0 ||
        get_str(o, "src", SEV_SRC_MAX, &ev->src) != 0 ||
        get_str(o, "error", RQ_SEV_TEXT_MAX, &ev->error) != 0)
        return -1;
    return 0;
}

/* The numbers and flags of the event in o into ev. 0 or -1. */
static int decode_numbers(json_t *o, rq_status_event_t *ev)
{
    json_int_t v, ts, attempt, answer, full;
    json_t *tr = json_object_get(o, "truncated");

    if (get_int(o, "v", 1, 1, &v) != 0 || json_object_get(o, "ts") == NULL ||
        get_int(o, "ts", 0, INT64_MAX, &ts) != 0 ||
        get_int(o, "attempt", 0, SEV_ATTEMPT_MAX, &attempt) != 0 ||
        get_int(o, "answer", 100, 599, &answer) != 0 ||
        get_int(o, "reply_len", 0, INT64_MAX, &full) != 0 || (tr != NULL && !json_is_boolean(tr)))
        return -1;
    ev->ts_ms = ts;
    ev->attempt = (int)attempt;
    ev->answer = (unsigned)answer;
    ev->reply_full_len = (size_t)full;
    ev->truncated = json_is_true(tr);
    return 0;
}

/* The reply of the event in o into ev ("reply_b64" decoded into hold->reply). 0 or -1. */
static int decode_reply(json_t *o, rq_status_event_t *ev, rq_sev_hold_t *hold)
{
    json_t *r = json_object_get(o, "reply"), *b = json_object_get(o, "reply_b64");
    size_t n;

    if (r != NULL && b != NULL)
        return -1;
    if (r != NULL) {
        if (!json_is_string(r) || json_string_length(r) > SEV_REPLY_MAX)
            return -1;
        ev->reply = json_string_value(r);
        ev->reply_len = json_string_length(r);
    } else if (b != NULL) {
        n = json_is_string(b) ? json_string_length(b) : SIZE_MAX;
        if (n > RQ_B64_ENC_LEN(SEV_REPLY_MAX) || (hold->reply = malloc(n / 4 * 3 + 1)) == NULL ||
            rq_b64_decode(json_string_value(b), n, hold->reply, SEV_REPLY_MAX, &ev->reply_len) != 0)
            return -1;
        ev->reply = (const char *)hold->reply;
    }
    if (ev->reply_full_len != 0 && ev->reply_full_len < ev->reply_len)
        return -1; /* the length before the cut is shorter than what was kept */
    return 0;
}

int rq_status_event_decode(const void *body, size_t len, rq_status_event_t *ev,
                           rq_sev_hold_t **hold)
{
    rq_sev_hold_t *h = NULL;

    memset(ev, 0, sizeof(*ev));
    *hold = NULL;
    /* a raw NUL is no JSON text (jansson would stop reading there) */
    if (body == NULL || len == 0 || len > SEV_BODY_MAX || memchr(body, '\0', len) != NULL ||
        rq_json_too_deep(body, len, SEV_DEPTH_MAX))
        return -1;
    h = calloc(1, sizeof(*h));
    if (h == NULL)
        return -1;
    rq_json_oom_clear();
    h->root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    if (rq_json_oom() || !json_is_object(h->root) || decode_strings(h->root, ev) != 0 ||
        decode_numbers(h->root, ev) != 0 || decode_reply(h->root, ev, h) != 0)
        goto fail;
    *hold = h;
    return 0;
fail:
    rq_status_event_release(h);
    memset(ev, 0, sizeof(*ev));
    return -1;
}

void rq_status_event_release(rq_sev_hold_t *hold)
{
    if (hold == NULL)
        return;
    json_decref(hold->root);
    free(hold->reply);
    free(hold);
}
