/* test_status_event.c - the status event encoding (common/status_event.c) and base64
 * (common/b64.c): round trips, the wire text, and every invalid input refused. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "status_event.h"

/* ev's encoding as a heap string (caller frees), or NULL when encode refused it. */
static char *enc(const rq_status_event_t *ev)
{
    rq_jbuf_t b;

    rq_jbuf_init(&b, 0);
    if (rq_status_event_encode(ev, &b) != 0) {
        cr_expect_eq(b.len, 0u, "a refused event leaves the buffer as it was");
        rq_jbuf_free(&b);
        return NULL;
    }
    return rq_jbuf_take(&b, NULL);
}

/* Decodes text (strlen) and returns the decode's result. */
static int dec_text(const char *text)
{
    rq_status_event_t ev;
    rq_sev_hold_t *h = (rq_sev_hold_t *)1;
    int rc = rq_status_event_decode(text, strlen(text), &ev, &h);

    if (rc != 0)
        cr_expect_null(h);
    rq_status_event_release(h);
    return rc;
}

static void expect_same_str(const char *a, const char *b)
{
    if (a == NULL || a[0] == '\0')
        cr_expect(b == NULL || b[0] == '\0', "want absent, got \"%s\"", b);
    else
        cr_expect(b != NULL && strcmp(a, b) == 0, "want \"%s\", got \"%s\"", a, b ? b : "(null)");
}

/* Encodes ev, decodes the text and checks every field came back. */
static void round_trip(const rq_status_event_t *ev)
{
    char *t = enc(ev);
    rq_status_event_t got;
    rq_sev_hold_t *h;

    cr_assert_not_null(t);
    cr_assert_eq(rq_status_event_decode(t, strlen(t), &got, &h), 0, "decode %s", t);
    cr_expect_eq(got.type, ev->type);
    expect_same_str(ev->id, got.id);
    expect_same_str(ev->uid, got.uid);
    expect_same_str(ev->queue, got.queue);
    expect_same_str(ev->key, got.key);
    expect_same_str(ev->src, got.src);
    expect_same_str(ev->error, got.error);
    cr_expect_eq(got.ts_ms, ev->ts_ms);
    cr_expect_eq(got.attempt, ev->attempt);
    cr_expect_eq(got.answer, ev->answer);
    cr_expect_eq(got.truncated, ev->truncated);
    cr_expect_eq(got.reply_full_len, ev->reply_full_len);
    if (ev->reply == NULL) {
        cr_expect_null(got.reply);
    } else {
        cr_assert_not_null(got.reply);
        cr_expect_eq(got.reply_len, ev->reply_len);
        cr_expect(memcmp(got.reply, ev->reply, ev->reply_len) == 0, "reply bytes differ");
    }
    rq_status_event_release(h);
    free(t);
}

Test(status_event, names_round_trip)
{
    for (int t = RQ_SEV_NONE + 1; t < RQ_SEV_COUNT; t++) {
        const char *n = rq_sev_name((rq_sev_type_t)t);
        cr_assert_not_null(n);
        cr_expect_eq(rq_sev_parse(n, strlen(n)), t);
    }
    cr_expect_null(rq_sev_name(RQ_SEV_NONE));
    cr_expect_null(rq_sev_name(RQ_SEV_COUNT));
    cr_expect_eq(rq_sev_parse("replie", 6), RQ_SEV_NONE);
    cr_expect_eq(rq_sev_parse("repliedx", 8), RQ_SEV_NONE);
    cr_expect_eq(rq_sev_parse(NULL, 0), RQ_SEV_NONE);
    cr_expect_str_eq(rq_sev_name(RQ_SEV_DEAD_LETTERED), "dead_lettered");
}

Test(status_event, minimal_wire_text)
{
    rq_status_event_t ev = {.type = RQ_SEV_ACCEPTED, .id = "m1", .ts_ms = 1000};
    char *t = enc(&ev);

    cr_assert_not_null(t);
    cr_expect_str_eq(t, "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m1\",\"ts\":1000}");
    free(t);
}

Test(status_event, full_wire_text)
{
    rq_status_event_t ev = {.type = RQ_SEV_CONFIRMED,
                            .id = "m1",
                            .uid = "u1",
                            .queue = "q",
                            .key = "k\"1",
                            .src = "producer:h:8080",
                            .ts_ms = 5,
                            .answer = 201};
    char *t = enc(&ev);

    cr_assert_not_null(t);
    cr_expect_str_eq(t,
                     "{\"v\":1,\"ev\":\"confirmed\",\"id\":\"m1\",\"uid\":\"u1\",\"queue\":\"q\","
                     "\"key\":\"k\\\"1\",\"src\":\"producer:h:8080\",\"ts\":5,\"answer\":201}");
    round_trip(&ev);
    free(t);
}

Test(status_event, round_trips_every_type)
{
    for (int t = RQ_SEV_NONE + 1; t < RQ_SEV_COUNT; t++) {
        rq_status_event_t ev = {.type = (rq_sev_type_t)t,
                                .id = "id-é",
                                .uid = "6f1c",
                                .src = "consumer:h:1",
                                .ts_ms = 1764616200123,
                                .attempt = t == RQ_SEV_DELIVERED ? 3 : 0,
                                .error = t == RQ_SEV_RETRIED ? "handler exit 1\nline 2" : NULL};
        round_trip(&ev);
    }
}

Test(status_event, reply_text_and_nul)
{
    static const char text[] = "Consumer processed: a\0b \xc3\xa9";
    rq_status_event_t ev = {.type = RQ_SEV_REPLIED,
                            .id = "m",
                            .ts_ms = 1,
                            .reply = text,
                            .reply_len = sizeof(text) - 1};
    char *t = enc(&ev);

    cr_assert_not_null(t);
    /* valid UTF-8 (a NUL is) goes in "reply", the NUL escaped */
    cr_expect_not_null(strstr(t, "\"reply\":\"Consumer processed: a\\u0000b \xc3\xa9\""), "%s", t);
    round_trip(&ev);
    free(t);
}

Test(status_event, reply_bytes_go_base64)
{
    static const char bytes[] = "\xff\x00\x01\x80zz\x00";
    rq_status_event_t ev = {.type = RQ_SEV_REPLIED,
                            .id = "m",
                            .ts_ms = 1,
                            .reply = bytes,
                            .reply_len = sizeof(bytes) - 1,
                            .truncated = 1,
                            .reply_full_len = 4096};
    char *t = enc(&ev);

    cr_assert_not_null(t);
    cr_expect_not_null(strstr(t, "\"reply_b64\":\"/wABgHp6AA==\""), "%s", t);
    cr_expect_null(strstr(t, "\"reply\":"));
    cr_expect_not_null(strstr(t, "\"reply_len\":4096,\"truncated\":true"), "%s", t);
    round_trip(&ev);
    free(t);
    ev.reply_len = 0; /* an empty reply is still a reply */
    ev.reply_full_len = 0;
    round_trip(&ev);
    for (size_t n = 1; n < sizeof(bytes) - 1; n++) { /* every padding */
        ev.reply_len = n;
        round_trip(&ev);
    }
}

Test(status_event, error_cut_on_utf8_boundary_and_cleaned)
{
    char err[RQ_SEV_TEXT_MAX + 10];
    rq_status_event_t ev = {.type = RQ_SEV_RETRIED, .id = "m", .ts_ms = 1, .attempt = 1};
    rq_status_event_t got;
    rq_sev_hold_t *h;
    char *t;

    memset(err, 'a', sizeof(err));
    memcpy(err + RQ_SEV_TEXT_MAX - 1, "\xc3\xa9", 2); /* straddles the cut */
    err[sizeof(err) - 1] = '\0';
    ev.error = err;
    t = enc(&ev);
    cr_assert_not_null(t);
    cr_assert_eq(rq_status_event_decode(t, strlen(t), &got, &h), 0);
    cr_expect_eq(strlen(got.error), RQ_SEV_TEXT_MAX - 1u);
    rq_status_event_release(h);
    free(t);
    ev.error = "bad \xff\xfe byte \xc3";
    t = enc(&ev);
    cr_assert_not_null(t);
    cr_expect_not_null(strstr(t, "\"error\":\"bad ?? byte ?\""), "%s", t);
    free(t);
}

Test(status_event, encode_refuses_invalid)
{
    char longs[RQ_SEV_ID_MAX + 2];
    rq_status_event_t ok = {.type = RQ_SEV_ACCEPTED, .id = "m", .ts_ms = 1}, ev;

    memset(longs, 'x', sizeof(longs) - 1);
    longs[sizeof(longs) - 1] = '\0';
    ev = ok, ev.type = RQ_SEV_NONE;
    cr_expect_null(enc(&ev));
    ev = ok, ev.type = RQ_SEV_COUNT;
    cr_expect_null(enc(&ev));
    ev = ok, ev.id = NULL;
    cr_expect_null(enc(&ev));
    ev = ok, ev.id = "";
    cr_expect_null(enc(&ev));
    ev = ok, ev.id = longs;
    cr_expect_null(enc(&ev));
    ev = ok, ev.uid = longs;
    cr_expect_null(enc(&ev));
    ev = ok, ev.queue = longs;
    cr_expect_null(enc(&ev));
    ev = ok, ev.id = "\xff";
    cr_expect_null(enc(&ev));
    ev = ok, ev.ts_ms = -1;
    cr_expect_null(enc(&ev));
    ev = ok, ev.attempt = 1000001;
    cr_expect_null(enc(&ev));
    ev = ok, ev.answer = 99;
    cr_expect_null(enc(&ev));
    ev = ok, ev.reply = "x", ev.reply_len = 1024 * 1024 + 1;
    cr_expect_null(enc(&ev));
    longs[RQ_SEV_KEY_MAX] = '\0'; /* exactly the maximum: fine */
    ev = ok, ev.key = longs, ev.id = longs;
    char *t = enc(&ev);
    cr_expect_not_null(t);
    free(t);
}

Test(status_event, encode_appends_and_keeps_buffer_on_refusal)
{
    rq_jbuf_t b;
    rq_status_event_t ev = {.type = RQ_SEV_ACCEPTED, .id = "m", .ts_ms = 1, .uid = "\xff"};

    rq_jbuf_init(&b, 0);
    rq_jbuf_lit(&b, "[");
    cr_expect_eq(rq_status_event_encode(&ev, &b), -1);
    cr_expect_str_eq(b.p, "[");
    ev.uid = NULL;
    cr_expect_eq(rq_status_event_encode(&ev, &b), 0);
    cr_expect_str_eq(b.p, "[{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1}");
    rq_jbuf_free(&b);
}

Test(status_event, decode_accepts_unknown_members_and_no_v)
{
    cr_expect_eq(dec_text("{\"ev\":\"accepted\",\"id\":\"m\",\"ts\":0}"), 0);
    cr_expect_eq(
        dec_text("{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":0,\"new\":{\"a\":[1]}}"), 0);
    cr_expect_eq(dec_text("{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":0,\"truncated\":false}"),
                 0);
    cr_expect_eq(
        dec_text(" {\"v\":1,\"ev\":\"delivered\",\"id\":\"m\",\"ts\":9,\"attempt\":1000000} "), 0);
}

/* Each a body that must be refused. */
static const char *const invalid[] = {
    "",
    "[]",
    "\"x\"",
    "{",
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\"}",                  /* no ts */
    "{\"v\":1,\"ev\":\"accepted\",\"ts\":1}",                      /* no id */
    "{\"v\":1,\"id\":\"m\",\"ts\":1}",                             /* no ev */
    "{\"v\":2,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1}",         /* newer version */
    "{\"v\":0,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1}",         /* no version 0 */
    "{\"v\":\"1\",\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1}",     /* v a string */
    "{\"v\":1,\"ev\":\"sent\",\"id\":\"m\",\"ts\":1}",             /* unknown type */
    "{\"v\":1,\"ev\":1,\"id\":\"m\",\"ts\":1}",                    /* ev a number */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"\",\"ts\":1}",          /* empty id */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":7,\"ts\":1}",             /* id a number */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"a\\u0000b\",\"ts\":1}", /* NUL in id */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":-1}",        /* negative ts */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1.5}",       /* real ts */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":\"1\"}",     /* string ts */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":99999999999999999999}",
    "{\"v\":1,\"ev\":\"delivered\",\"id\":\"m\",\"ts\":1,\"attempt\":-1}",
    "{\"v\":1,\"ev\":\"delivered\",\"id\":\"m\",\"ts\":1,\"attempt\":1000001}",
    "{\"v\":1,\"ev\":\"confirmed\",\"id\":\"m\",\"ts\":1,\"answer\":99}",
    "{\"v\":1,\"ev\":\"confirmed\",\"id\":\"m\",\"ts\":1,\"answer\":600}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"truncated\":1}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply\":1}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply\":\"a\",\"reply_b64\":\"YQ==\"}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply_b64\":\"YQ=\"}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply_b64\":\"YR==\"}", /* pad bits */
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply_b64\":\"Y Q==\"}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply_b64\":7}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply\":\"abc\",\"reply_len\":2}",
    "{\"v\":1,\"ev\":\"replied\",\"id\":\"m\",\"ts\":1,\"reply_len\":-1}",
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1,\"ts\":2}", /* duplicate member */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1,\"src\":[\"x\"]}",
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1,\"uid\":null}",
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"\xff\",\"ts\":1}", /* not UTF-8 */
    "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1} x",  /* trailing text */
};

Test(status_event, decode_refuses_invalid)
{
    for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++)
        cr_expect_eq(dec_text(invalid[i]), -1, "accepted: %s", invalid[i]);
}

/* A body {"v":1,"ev":"<type>","id":"m","ts":1,"<member>":"<n x c>"} (caller frees). */
static char *with_long(const char *member, size_t n, char c)
{
    char *s = malloc(n + 128);

    int k = snprintf(s, 128, "{\"v\":1,\"ev\":\"retried\",%s\"ts\":1,\"%s\":\"",
                     strcmp(member, "id") == 0 ? "" : "\"id\":\"m\",", member);
    memset(s + k, c, n);
    strcpy(s + k + n, "\"}");
    return s;
}

Test(status_event, decode_bounds_strings)
{
    static const struct {
        const char *member;
        size_t max;
    } cases[] = {{"id", RQ_SEV_ID_MAX},   {"uid", RQ_SEV_ID_MAX}, {"queue", RQ_SEV_ID_MAX},
                 {"key", RQ_SEV_KEY_MAX}, {"src", RQ_SEV_ID_MAX}, {"error", RQ_SEV_TEXT_MAX},
                 {"reply", 1024 * 1024}};

    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        char *ok = with_long(cases[i].member, cases[i].max, 'a');
        char *over = with_long(cases[i].member, cases[i].max + 1, 'a');
        cr_expect_eq(dec_text(ok), 0, "%s at its maximum", cases[i].member);
        cr_expect_eq(dec_text(over), -1, "%s over its maximum", cases[i].member);
        free(ok);
        free(over);
    }
}

Test(status_event, decode_bounds_b64_reply)
{
    size_t n = 1024 * 1024 + 3; /* decodes to 1 MiB + 3 bytes */
    char *over = with_long("reply_b64", RQ_B64_ENC_LEN(n), 'A');
    char *ok = with_long("reply_b64", RQ_B64_ENC_LEN(1024 * 1024 - 1), 'A');

    cr_expect_eq(dec_text(over), -1);
    ok[strlen(ok) - 3] = '='; /* ...AA=" : 1 MiB - 1 bytes, zero padding bits */
    cr_expect_eq(dec_text(ok), 0);
    free(over);
    free(ok);
}

Test(status_event, decode_refuses_raw_nul_and_depth)
{
    static const char body[] = "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1}\0junk";
    rq_status_event_t ev;
    rq_sev_hold_t *h;
    char deep[200];
    size_t k = 0;

    cr_expect_eq(rq_status_event_decode(body, sizeof(body) - 1, &ev, &h), -1);
    cr_expect_eq(rq_status_event_decode(body, 0, &ev, &h), -1);
    cr_expect_eq(rq_status_event_decode(NULL, 0, &ev, &h), -1);
    k += (size_t)sprintf(deep, "{\"v\":1,\"ev\":\"accepted\",\"id\":\"m\",\"ts\":1,\"x\":");
    for (int i = 0; i < 20; i++)
        deep[k++] = '[';
    for (int i = 0; i < 20; i++)
        deep[k++] = ']';
    strcpy(deep + k, "}");
    cr_expect_eq(dec_text(deep), -1);
    rq_status_event_release(NULL);
}

Test(b64, vectors)
{
    static const char *const rfc[][2] = {{"", ""},
                                         {"f", "Zg=="},
                                         {"fo", "Zm8="},
                                         {"foo", "Zm9v"},
                                         {"foob", "Zm9vYg=="},
                                         {"fooba", "Zm9vYmE="},
                                         {"foobar", "Zm9vYmFy"}};
    char out[16];
    unsigned char back[16];
    size_t n;

    for (size_t i = 0; i < sizeof(rfc) / sizeof(*rfc); i++) {
        cr_expect_eq(rq_b64_encode(rfc[i][0], strlen(rfc[i][0]), out), strlen(rfc[i][1]));
        cr_expect_str_eq(out, rfc[i][1]);
        cr_assert_eq(rq_b64_decode(rfc[i][1], strlen(rfc[i][1]), back, sizeof(back), &n), 0);
        cr_expect_eq(n, strlen(rfc[i][0]));
        cr_expect(memcmp(back, rfc[i][0], n) == 0);
    }
    cr_expect_eq(rq_b64_decode("Zm9v", 4, back, 2, &n), -1, "over cap");
    cr_expect_eq(rq_b64_decode("Zm9", 3, back, 16, &n), -1);
    cr_expect_eq(rq_b64_decode("Zg==Zg==", 8, back, 16, &n), -1, "padding inside");
    cr_expect_eq(rq_b64_decode("Zh==", 4, back, 16, &n), -1, "padding bits");
    cr_expect_eq(rq_b64_decode("Z===", 4, back, 16, &n), -1);
    cr_expect_eq(rq_b64_decode("Zm-v", 4, back, 16, &n), -1, "base64url is not base64");
}
