/* messages.c - results that outlive a request (issue 17): asynchronous request/reply (202 +
 * Location), GET /messages/{id} with its timeline and long poll, idempotency keys. Routes of
 * the producer's API (api_ctx.h); the index and the stream are results.h's. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_ctx.h"
#include "jbuf.h"
#include "log.h"
#include "results.h"

#define KEY_BARRIER_MS 2000 /* longest wait for the stream before a keyed produce goes on */
#define KEY_CONFIRM_MS 2000 /* longest wait for the stream to confirm a keyed message's event */

/* ---- wait modes ----------------------------------------------------------------------- */

/* delta-seconds s[0..n) in 0..RQ_API_WAIT_MAX_S into *out. 0, or -1. */
static int parse_seconds(const char *s, size_t n, long long *out)
{
    long long v = 0;

    if (n == 0 || n > 7)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > RQ_API_WAIT_MAX_S)
        return -1;
    *out = v;
    return 0;
}

/* The Prefer header (RFC 7240): respond-async and wait=N among its comma-separated
 * preferences (parameters after ';' ignored). Returns 1 when it asks for an asynchronous
 * answer (with *wait_s: N, or 0), 0 when it does not, -1 for a wait that is not 0..max. */
static int parse_prefer(const char *h, long long *wait_s)
{
    int async = 0;

    *wait_s = 0;
    while (h != NULL && *h != '\0') {
        const char *end = strchr(h, ','), *semi;
        size_t n;
        if (end == NULL)
            end = h + strlen(h);
        while (h < end && (*h == ' ' || *h == '\t'))
            h++;
        semi = memchr(h, ';', (size_t)(end - h));
        n = (size_t)((semi != NULL ? semi : end) - h);
        while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
            n--;
        if (n == 13 && strncasecmp(h, "respond-async", 13) == 0) {
            async = 1;
        } else if (n > 4 && strncasecmp(h, "wait", 4) == 0 && strchr(" \t=", h[4]) != NULL) {
            /* wait BWS "=" BWS word (RFC 7240): a token or a quoted string */
            const char *v = h + 4, *ve = h + n;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            if (v == ve || *v++ != '=')
                return -1;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            if (ve - v >= 2 && *v == '"' && ve[-1] == '"')
                v++, ve--;
            if (parse_seconds(v, (size_t)(ve - v), wait_s) != 0)
                return -1;
            async = 1;
        }
        h = *end == ',' ? end + 1 : end;
    }
    return async;
}

int rq_api_wait_parse(req_ctx_t *c, enum MHD_Result *ret)
{
    const char *w = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "wait");
    const char *pref = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Prefer");
    long long s = 0;
    int rc;

    c->wait_mode = c->req.wait ? RQ_WAIT_SYNC : RQ_WAIT_NONE;
    if (w != NULL) {
        if (w[0] == '\0' || strcmp(w, "true") == 0) {
            c->wait_mode = RQ_WAIT_SYNC;
        } else if (strcmp(w, "false") == 0) {
            c->wait_mode = RQ_WAIT_NONE;
        } else if (parse_seconds(w, strlen(w), &s) == 0) {
            c->wait_mode = RQ_WAIT_ASYNC;
            c->wait_s = s;
        } else {
            goto bad;
        }
        return 0;
    }
    rc = parse_prefer(pref, &s);
    if (rc < 0)
        goto bad;
    if (rc > 0) {
        c->wait_mode = RQ_WAIT_ASYNC;
        c->wait_s = s;
        c->prefer_async = 1;
    }
    return 0;
bad:
    *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                              "wait must be true, false, or a number of seconds from 0 to 3600 "
                              "(?wait=N or Prefer: respond-async, wait=N)");
    return -1;
}

/* ---- answers -------------------------------------------------------------------------- */

/* "/messages/" and id percent-encoded (every byte but unreserved ones) into a new string. */
static char *location_of(const char *id)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(id);
    char *out = malloc(10 + 3 * n + 1), *p;

    if (out == NULL)
        return NULL;
    memcpy(out, "/messages/", 10);
    p = out + 10;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)id[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *p++ = (char)ch;
        } else {
            *p++ = '%';
            *p++ = hex[ch >> 4];
            *p++ = hex[ch & 15];
        }
    }
    *p = '\0';
    return out;
}

/* Queues body (consumed) with status and the headers Location (when loc is not NULL) and
 * Preference-Applied (when pref is not NULL). */
static enum MHD_Result reply_with(req_ctx_t *c, unsigned status, json_t *body, const char *loc,
                                  const char *pref)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    struct MHD_Response *r;
    enum MHD_Result ret;

    json_decref(body);
    if (text == NULL)
        return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (loc != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_LOCATION, loc);
    if (pref != NULL)
        MHD_add_response_header(r, "Preference-Applied", pref);
    c->status = status;
    ret = MHD_queue_response(c->conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* What the index holds of id, or a minimal object when it holds nothing (capacity 0). */
static json_t *message_json(req_ctx_t *c, const char *id, const char *status)
{
    json_t *o = rq_timeline_get(rq_results_timeline(c->api->results), id);

    if (o == NULL)
        o = json_pack("{s:s,s:s}", "message_id", id, "status", status);
    return o;
}

enum MHD_Result rq_api_reply_accepted(req_ctx_t *c)
{
    const rq_pub_job_t *job = &c->job;
    char pref[48], *loc = NULL;
    json_t *o;
    enum MHD_Result ret;

    if (c->prefer_async)
        snprintf(pref, sizeof(pref), "respond-async, wait=%lld", c->wait_s);
    if (!c->req.batch) {
        const char *id = job->msgs[0].message_id;
        o = message_json(c, id, "queued");
        loc = location_of(id);
        json_object_set_new(o, "location", loc != NULL ? json_string(loc) : json_null());
    } else {
        json_t *ids = json_array(), *locs = json_array(), *dups = json_array();
        /* one entry per item, in item order: a duplicate's is the first request's id */
        for (size_t i = 0, j = 0; i < c->req.n; i++) {
            int dup = c->dup_ids != NULL && c->dup_ids[i] != NULL;
            const char *id = dup ? c->dup_ids[i] : j < job->n ? job->msgs[j++].message_id : NULL;
            char *l = id != NULL ? location_of(id) : NULL;
            json_array_append_new(ids, id != NULL ? json_string(id) : json_null());
            json_array_append_new(locs, l != NULL ? json_string(l) : json_null());
            if (dup)
                json_array_append_new(dups, json_string(id));
            free(l);
        }
        o = json_pack("{s:s,s:o,s:o}", "status", "accepted", "message_ids", ids, "locations", locs);
        if (c->ndups > 0)
            json_object_set_new(o, "duplicates", dups);
        else
            json_decref(dups);
    }
    json_object_set_new(o, "status_stream", json_string(rq_results_stream_state(c->api->results)));
    ret = reply_with(c, MHD_HTTP_ACCEPTED, o, loc, c->prefer_async ? pref : NULL);
    free(loc);
    return ret;
}

/* ---- GET /messages/{id} --------------------------------------------------------------- */

static void message_woken(void *arg, int timed_out)
{
    (void)timed_out;
    rq_api_ctx_complete(arg);
}

/* The answer to GET /messages/{id} (c->msgid): the timeline, or 404. */
static enum MHD_Result answer_message(req_ctx_t *c)
{
    json_t *o = rq_timeline_get(rq_results_timeline(c->api->results), c->msgid);

    if (o == NULL)
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown message id (or no longer kept)");
    json_object_set_new(o, "status_stream", json_string(rq_results_stream_state(c->api->results)));
    return rq_api_reply(c, MHD_HTTP_OK, o);
}

enum MHD_Result rq_api_serve_message(req_ctx_t *c, const char *id)
{
    rq_timeline_t *tl = rq_results_timeline(c->api->results);
    const char *w = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, "wait");
    long long s = 0;
    int rc;

    if (strlen(id) > RQ_API_MSGID_MAX)
        return rq_api_reply_error(c, MHD_HTTP_NOT_FOUND, "unknown message id (or no longer kept)");
    memcpy(c->msgid, id, strlen(id) + 1);
    if (w != NULL && parse_seconds(w, strlen(w), &s) != 0)
        return rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                  "wait must be a number of seconds from 0 to 3600");
    /* Without a stream an unknown id cannot become known: answer at once. */
    if (s == 0 ||
        (rq_timeline_status(tl, id) == RQ_TL_UNKNOWN && !rq_results_stream_on(c->api->results)))
        return answer_message(c);
    c->done = 0;
    rc = rq_timeline_wait(tl, id, rq_mono_ms() + s * 1000, message_woken, c);
    if (rc < 0)
        return rq_api_reply_503(c, "too many requests are waiting for messages");
    if (rc == 1)
        return answer_message(c);
    c->ext_resume = answer_message;
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return answer_message(c);
}

/* ---- idempotency keys ----------------------------------------------------------------- */

int rq_api_keys_prepare(req_ctx_t *c, enum MHD_Result *ret)
{
    const char *h = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Idempotency-Key");
    int keyed = 0;

    if (h != NULL) {
        rq_item_t *it = &c->req.items[0];
        if (c->req.batch) {
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      "a batch takes an \"idempotency_key\" per message, not "
                                      "the Idempotency-Key header");
            return -1;
        }
        if (!rq_idem_key_valid(h, strlen(h))) {
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      "Idempotency-Key must be 1 to 255 printable ASCII "
                                      "characters");
            return -1;
        }
        if (it->idem_key != NULL && strcmp(it->idem_key, h) != 0) {
            *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                      "the Idempotency-Key header and \"idempotency_key\" differ");
            return -1;
        }
        if (it->idem_key == NULL && (it->idem_key = strdup(h)) == NULL) {
            *ret = rq_api_reply_503(c, "out of memory");
            return -1;
        }
    }
    for (size_t i = 0; i < c->req.n; i++) {
        if (c->req.items[i].idem_key == NULL)
            continue;
        keyed = 1;
        for (size_t j = 0; j < i; j++)
            if (c->req.items[j].idem_key != NULL &&
                strcmp(c->req.items[j].idem_key, c->req.items[i].idem_key) == 0) {
                *ret = rq_api_reply_error(c, MHD_HTTP_BAD_REQUEST,
                                          "two messages of the batch have the same "
                                          "idempotency_key");
                return -1;
            }
    }
    return keyed;
}

/* Records item i as a duplicate of message id. Returns 0 or -1 (out of memory). */
static int mark_dup(req_ctx_t *c, size_t i, const char *id)
{
    if (c->dup_ids == NULL && (c->dup_ids = calloc(c->req.n, sizeof(*c->dup_ids))) == NULL)
        return -1;
    if (c->dup_ids[i] == NULL) {
        if ((c->dup_ids[i] = strdup(id)) == NULL)
            return -1;
        c->ndups++;
    }
    return 0;
}

/* The local lookup of every key (no claim). Returns how many keys are not known. */
static size_t keys_unknown(req_ctx_t *c)
{
    rq_timeline_t *tl = rq_results_timeline(c->api->results);
    char id[RQ_SEV_ID_MAX + 1];
    size_t n = 0;

    for (size_t i = 0; i < c->req.n; i++) {
        const char *k = c->req.items[i].idem_key;
        if (k == NULL || (c->dup_ids != NULL && c->dup_ids[i] != NULL))
            continue;
        if (rq_timeline_key_find(tl, k, id, sizeof(id)))
            mark_dup(c, i, id);
        else
            n++;
    }
    return n;
}

/* The answer when every message of the request is a duplicate: 200, the first requests'
 * ids, "duplicate": true (a single message: its status so far, and its reply if any). */
static enum MHD_Result reply_all_dups(req_ctx_t *c)
{
    json_t *o;

    if (!c->req.batch) {
        json_t *m = message_json(c, c->dup_ids[0], "queued");
        char *loc = location_of(c->dup_ids[0]);
        enum MHD_Result ret;
        o = json_pack("{s:s,s:s,s:b}", "status", "success", "message_id", c->dup_ids[0],
                      "duplicate", 1);
        json_object_set(o, "state", json_object_get(m, "status"));
        if (json_object_get(m, "reply") != NULL)
            json_object_set(o, "reply", json_object_get(m, "reply"));
        json_object_set_new(o, "message", m);
        ret = reply_with(c, MHD_HTTP_OK, o, loc, NULL);
        free(loc);
        return ret;
    }
    o = json_pack("{s:s,s:i,s:[],s:[]}", "status", "success", "messages_produced", 0, "message_ids",
                  "duplicates");
    for (size_t i = 0; i < c->req.n; i++) {
        json_array_append_new(json_object_get(o, "message_ids"), json_string(c->dup_ids[i]));
        json_array_append_new(json_object_get(o, "duplicates"), json_string(c->dup_ids[i]));
    }
    return rq_api_reply(c, MHD_HTTP_OK, o);
}

/* After the barrier (or without one): claims every key still unknown, then publishes the
 * messages that are not duplicates. */
static enum MHD_Result keys_claim_and_go(req_ctx_t *c)
{
    char id[RQ_SEV_ID_MAX + 1];

    keys_unknown(c);
    if (c->claimed == NULL && (c->claimed = calloc(c->req.n, sizeof(*c->claimed))) == NULL)
        return rq_api_reply_503(c, "out of memory");
    for (size_t i = 0; i < c->req.n; i++) {
        const char *k = c->req.items[i].idem_key;
        int rc;
        if (k == NULL || (c->dup_ids != NULL && c->dup_ids[i] != NULL))
            continue;
        rc = rq_results_key_claim(c->api->results, k, id, sizeof(id));
        if (rc == 1 && mark_dup(c, i, id) == 0)
            continue;
        if (rc == 0) {
            c->claimed[c->nclaimed++] = k;
            continue;
        }
        if (rc == -1)
            return rq_api_reply_error(c, MHD_HTTP_CONFLICT,
                                      "a request with this idempotency key is in progress; "
                                      "retry once it is answered");
        return rq_api_reply_503(c, "out of memory");
    }
    if (c->ndups == c->req.n)
        return reply_all_dups(c);
    return rq_api_submit_produce(c);
}

static void barrier_done(void *arg, int ok)
{
    (void)ok; /* without the stream the local index decides */
    rq_api_ctx_complete(arg);
}

enum MHD_Result rq_api_keys_start(req_ctx_t *c)
{
    /* Keys the index does not hold may be in the stream, written by another replica: read
     * up to now first (a barrier), then decide. */
    if (keys_unknown(c) == 0 || !rq_results_stream_on(c->api->results))
        return keys_claim_and_go(c);
    c->done = 0;
    if (rq_results_barrier(c->api->results, KEY_BARRIER_MS, barrier_done, c) != 0)
        return keys_claim_and_go(c);
    c->ext_resume = keys_claim_and_go;
    c->state = ST_EXT;
    if (rq_api_ctx_suspend(c))
        return MHD_YES;
    c->state = ST_DONE;
    return keys_claim_and_go(c);
}

void rq_api_keys_release(req_ctx_t *c)
{
    for (size_t i = 0; i < c->nclaimed; i++)
        rq_results_key_release(c->api->results, c->claimed[i]);
    free(c->claimed);
    c->claimed = NULL;
    c->nclaimed = 0;
    for (size_t i = 0; c->dup_ids != NULL && i < c->req.n; i++)
        free(c->dup_ids[i]);
    free(c->dup_ids);
    c->dup_ids = NULL;
}

/* ---- the job's events ----------------------------------------------------------------- */

static void key_confirmed(void *arg, int ok)
{
    (void)ok; /* the message is stored either way; only the stream's copy of the key is late */
    rq_api_ctx_complete(arg);
}

void rq_api_job_events(req_ctx_t *c)
{
    if (rq_results_job_done(c->api->results, &c->job, c->job.queue, KEY_CONFIRM_MS, key_confirmed,
                            c) == 0)
        rq_api_ctx_complete(c);
}
