/* handler_webhook.c - HANDLER=http(s)://...: each job is a POST through one libcurl multi
 * handle, driven by the caller's poll (curl's multi_socket API).
 *
 * The request: the payload as the body, Content-Type the message's (application/json when
 * none), X-Relayq-Message-Id, X-Relayq-Correlation-Id, X-Relayq-Source (each when set),
 * X-Relayq-Attempt (0 on the first delivery), traceparent and tracestate (when set). Header
 * values come from the queue (any publisher): control characters are dropped from them, so
 * no value can add a header. No "Expect: 100-continue", no redirects, http and https only.
 * The answer: 2xx is OK with the body as the reply (at most max_reply bytes, else RETRY);
 * 4xx is REJECT with why "webhook answered <status>: <first 200 bytes of body>", except 408
 * and 429 (the server asks to come back later: RETRY); any other status, a timeout
 * (HANDLER_TIMEOUT_MS for the whole exchange), a refused connection or a DNS failure is
 * RETRY with why.
 *
 * Keep-alive: connections live in the multi handle's cache (CURLMOPT_MAXCONNECTS and
 * CURLMOPT_MAX_HOST_CONNECTIONS = the concurrency) and easy handles are pooled, so a
 * steady flow reuses its connections. The sockets curl wants watched are kept in a table
 * by CURLMOPT_SOCKETFUNCTION and its timer by CURLMOPT_TIMERFUNCTION; collect() polls
 * that table with a zero timeout (it is not given the caller's revents) and hands curl the
 * ready sockets. curl runs with CURLOPT_NOSIGNAL: the process must ignore SIGPIPE (the
 * consumer's main.c does). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curl_lazy.h"
#include "handler_impl.h"
#include "list.h"
#include "log.h"
#include "util.h"

#define WH_HEADER_VALUE 1024 /* longest header value sent (tracestate is at most 512) */

typedef struct wh_xfer {
    rq_list_node_t node; /* in active, finished or pool */
    CURL *easy;
    struct curl_slist *headers;
    rq_handler_job_t *job;
    char *body; /* response body: the reply (2xx) or its first RQ_HANDLER_WHY_BODY bytes */
    size_t len, cap;
    int overflow, oom;
    size_t max_reply;
    rq_handler_outcome_t outcome;
    int status;
    char why[256];
    char errbuf[CURL_ERROR_SIZE];
} wh_xfer_t;

typedef struct wh_sock {
    curl_socket_t fd;
    int what; /* CURL_POLL_IN / OUT / INOUT */
} wh_sock_t;

typedef struct webhook {
    CURLM *multi;
    char *url;
    rq_handler_opts_t o;
    rq_list_t active, finished, pool;
    size_t npool;
    wh_sock_t *socks;
    struct pollfd *scratch; /* collect's poll set, socks_cap entries */
    size_t nsocks, socks_cap;
    int64_t timer_ms; /* when curl wants CURL_SOCKET_TIMEOUT, -1: never */
    int global_init;
} webhook_t;

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    webhook_t *w = userp;
    size_t i;

    (void)e;
    (void)socketp;
    for (i = 0; i < w->nsocks && w->socks[i].fd != s; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        if (i < w->nsocks)
            w->socks[i] = w->socks[--w->nsocks];
        return 0;
    }
    if (i == w->nsocks) {
        if (w->nsocks == w->socks_cap) {
            size_t cap = w->socks_cap ? 2 * w->socks_cap : 16;
            wh_sock_t *ns = realloc(w->socks, cap * sizeof(*ns));
            struct pollfd *np;

            if (ns == NULL)
                return -1;
            w->socks = ns;
            np = realloc(w->scratch, cap * sizeof(*np));
            if (np == NULL)
                return -1;
            w->scratch = np;
            w->socks_cap = cap;
        }
        w->socks[w->nsocks++].fd = s;
    }
    w->socks[i].what = what;
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    webhook_t *w = userp;

    (void)multi;
    w->timer_ms = timeout_ms < 0 ? -1 : rq_mono_ms() + timeout_ms;
    return 0;
}

static int is_2xx(long code)
{
    return code >= 200 && code <= 299;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud)
{
    wh_xfer_t *x = ud;
    size_t n = size * nmemb, keep = n, need;
    long code = 0;

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    if (!is_2xx(code)) {
        /* a failure: only the start of the body matters (why) */
        keep = x->len >= RQ_HANDLER_WHY_BODY ? 0 : RQ_HANDLER_WHY_BODY - x->len;
        if (keep > n)
            keep = n;
    } else if (n > x->max_reply - x->len) {
        x->overflow = 1;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    need = x->len + keep + 1;
    if (need > x->cap) {
        size_t cap = x->cap ? x->cap : 1024;
        char *nb;

        while (cap < need)
            cap *= 2;
        nb = realloc(x->body, cap);
        if (nb == NULL) {
            x->oom = 1;
            return 0;
        }
        x->body = nb;
        x->cap = cap;
    }
    memcpy(x->body + x->len, p, keep);
    x->len += keep;
    x->body[x->len] = '\0';
    return n;
}

/* Appends "name: value" to *list with control characters dropped from value (cut to
 * WH_HEADER_VALUE bytes). Returns 0 or -1 (no memory). */
static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    char buf[64 + WH_HEADER_VALUE + 1];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "%s: ", name), start = n;
    struct curl_slist *l;

    for (const unsigned char *v = (const unsigned char *)value; *v && n - start < WH_HEADER_VALUE;
         v++)
        if (*v >= 0x20 && *v != 0x7f)
            buf[n++] = (char)*v;
    buf[n] = '\0';
    l = curl_slist_append(*list, buf);
    if (l == NULL)
        return -1;
    *list = l;
    return 0;
}

static int build_headers(const rq_handler_job_t *j, struct curl_slist **out)
{
    char attempt[16];
    struct curl_slist *l = NULL;

    snprintf(attempt, sizeof(attempt), "%d", j->attempt);
    if (add_header(&l, "Content-Type",
                   j->content_type && j->content_type[0] ? j->content_type : "application/json") <
            0 ||
        add_header(&l, "X-Relayq-Attempt", attempt) < 0 || add_header(&l, "Expect", "") < 0)
        goto fail;
    if (j->message_id && j->message_id[0] &&
        add_header(&l, "X-Relayq-Message-Id", j->message_id) < 0)
        goto fail;
    if (j->correlation_id && j->correlation_id[0] &&
        add_header(&l, "X-Relayq-Correlation-Id", j->correlation_id) < 0)
        goto fail;
    if (j->source && j->source[0] && add_header(&l, "X-Relayq-Source", j->source) < 0)
        goto fail;
    if (j->traceparent && j->traceparent[0] && add_header(&l, "traceparent", j->traceparent) < 0)
        goto fail;
    if (j->tracestate && j->tracestate[0] && add_header(&l, "tracestate", j->tracestate) < 0)
        goto fail;
    *out = l;
    return 0;
fail:
    curl_slist_free_all(l);
    return -1;
}

/* Returns an unused transfer (pooled, or new). NULL: no memory. */
static wh_xfer_t *xfer_get(webhook_t *w)
{
    wh_xfer_t *x;

    if (w->pool.head) {
        x = RQ_LIST_ENTRY(w->pool.head, wh_xfer_t, node);
        rq_list_unlink(&w->pool, &x->node);
        w->npool--;
        curl_easy_reset(x->easy);
        return x;
    }
    x = calloc(1, sizeof(*x));
    if (x == NULL)
        return NULL;
    x->easy = curl_easy_init();
    if (x->easy == NULL) {
        free(x);
        return NULL;
    }
    return x;
}

/* Returns x (out of every list, out of the multi handle) to the pool, or frees it. */
static void xfer_put(webhook_t *w, wh_xfer_t *x)
{
    curl_slist_free_all(x->headers);
    x->headers = NULL;
    free(x->body);
    x->body = NULL;
    x->len = x->cap = 0;
    x->job = NULL;
    if (w->npool >= (size_t)w->o.concurrency) {
        curl_easy_cleanup(x->easy);
        free(x);
        return;
    }
    rq_list_push_back(&w->pool, &x->node);
    w->npool++;
}

static int wh_start(void *impl, rq_handler_job_t *job, int64_t now_ms)
{
    webhook_t *w = impl;
    wh_xfer_t *x = xfer_get(w);
    CURL *e;

    (void)now_ms;
    if (x == NULL)
        return -1;
    e = x->easy;
    x->job = job;
    x->overflow = x->oom = 0;
    x->max_reply = w->o.max_reply;
    x->errbuf[0] = '\0';
    if (build_headers(job, &x->headers) < 0)
        goto fail;
    if (curl_easy_setopt(e, CURLOPT_URL, w->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->payload_len) !=
            CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, job->payload_len ? job->payload : "") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, x) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, x) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)w->o.timeout_ms) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, "relayq-consumer/" RQ_VERSION) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L) != CURLE_OK)
        goto fail;
    if (curl_multi_add_handle(w->multi, e) != CURLM_OK)
        goto fail;
    rq_list_push_back(&w->active, &x->node);
    job->priv = x;
    return 0;
fail:
    xfer_put(w, x);
    return -1;
}

static int wh_pollfds(void *impl, struct pollfd *pfd, int max, int64_t now_ms, int *timeout_ms)
{
    webhook_t *w = impl;
    int n = 0;

    for (size_t i = 0; i < w->nsocks && n < max; i++, n++) {
        pfd[n].fd = w->socks[i].fd;
        pfd[n].events = (short)(((w->socks[i].what & CURL_POLL_IN) ? POLLIN : 0) |
                                ((w->socks[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
        pfd[n].revents = 0;
    }
    if (w->finished.head)
        *timeout_ms = 0;
    else if (w->timer_ms < 0)
        *timeout_ms = -1;
    else
        *timeout_ms = w->timer_ms <= now_ms ? 0 : (int)(w->timer_ms - now_ms);
    if ((size_t)n < w->nsocks && (*timeout_ms < 0 || *timeout_ms > 10))
        *timeout_ms = 10; /* the caller's set is full: come back soon for the rest */
    return n;
}

static void finish(webhook_t *w, wh_xfer_t *x, CURLcode rc)
{
    long code = 0;
    char prefix[64];

    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
    curl_multi_remove_handle(w->multi, x->easy);
    rq_list_unlink(&w->active, &x->node);
    x->status = (int)code;
    x->outcome = RQ_HANDLER_RETRY;
    x->why[0] = '\0';
    if (rc == CURLE_WRITE_ERROR && x->overflow) {
        snprintf(x->why, sizeof(x->why), "webhook answered %ld with a body over %zu bytes", code,
                 x->max_reply);
    } else if (rc == CURLE_WRITE_ERROR && x->oom) {
        snprintf(x->why, sizeof(x->why), "webhook: out of memory for the answer");
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(x->why, sizeof(x->why), "webhook timed out after %d ms (HANDLER_TIMEOUT_MS)",
                 w->o.timeout_ms);
    } else if (rc != CURLE_OK) {
        snprintf(x->why, sizeof(x->why), "webhook: %s%s%s%s", curl_easy_strerror(rc),
                 x->errbuf[0] ? " (" : "", x->errbuf, x->errbuf[0] ? ")" : "");
    } else if (is_2xx(code)) {
        x->outcome = RQ_HANDLER_OK;
    } else {
        snprintf(prefix, sizeof(prefix), "webhook answered %ld: ", code);
        rq_handler_why_quote(x->why, sizeof(x->why), prefix, x->body, x->len);
        if (code >= 400 && code <= 499 && code != 408 && code != 429)
            x->outcome = RQ_HANDLER_REJECT;
    }
    rq_list_push_back(&w->finished, &x->node);
}

static int wh_collect(void *impl, int64_t now_ms, rq_handler_job_t **done, int max)
{
    webhook_t *w = impl;
    int running, n = 0, left;
    size_t ns = w->nsocks;
    CURLMsg *m;

    /* which of curl's sockets are ready (a copy: curl's callbacks change the table) */
    for (size_t i = 0; i < ns; i++) {
        w->scratch[i].fd = w->socks[i].fd;
        w->scratch[i].events = POLLIN | POLLOUT;
        w->scratch[i].revents = 0;
    }
    if (ns > 0 && poll(w->scratch, (nfds_t)ns, 0) > 0) {
        for (size_t i = 0; i < ns; i++) {
            short r = w->scratch[i].revents;
            int ev = ((r & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
                     ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
                     ((r & POLLERR) ? CURL_CSELECT_ERR : 0);

            if (ev)
                curl_multi_socket_action(w->multi, w->scratch[i].fd, ev, &running);
        }
    }
    if (w->timer_ms >= 0 && w->timer_ms <= now_ms) {
        w->timer_ms = -1;
        curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        char *priv = NULL;

        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv)
            finish(w, (wh_xfer_t *)(void *)priv, m->data.result); /* m is invalid from here */
    }
    while (n < max && w->finished.head) {
        wh_xfer_t *x = RQ_LIST_ENTRY(w->finished.head, wh_xfer_t, node);
        rq_handler_job_t *j = x->job;

        rq_list_unlink(&w->finished, &x->node);
        j->outcome = x->outcome;
        j->status = x->status;
        j->reply = NULL;
        j->reply_len = 0;
        memcpy(j->why, x->why, sizeof(j->why));
        if (x->outcome == RQ_HANDLER_OK) {
            j->why[0] = '\0';
            j->reply = x->body; /* NUL-terminated; NULL for an empty body */
            j->reply_len = x->len;
            x->body = NULL;
        }
        j->priv = NULL;
        xfer_put(w, x);
        done[n++] = j;
    }
    return n;
}

static void wh_cancel_all(void *impl)
{
    webhook_t *w = impl;

    while (w->active.head) {
        wh_xfer_t *x = RQ_LIST_ENTRY(w->active.head, wh_xfer_t, node);

        curl_multi_remove_handle(w->multi, x->easy);
        rq_list_unlink(&w->active, &x->node);
        xfer_put(w, x);
    }
    while (w->finished.head) {
        wh_xfer_t *x = RQ_LIST_ENTRY(w->finished.head, wh_xfer_t, node);

        rq_list_unlink(&w->finished, &x->node);
        xfer_put(w, x);
    }
}

static void wh_free(void *impl)
{
    webhook_t *w = impl;

    if (w == NULL)
        return;
    if (w->multi)
        wh_cancel_all(w);
    while (w->pool.head) {
        wh_xfer_t *x = RQ_LIST_ENTRY(w->pool.head, wh_xfer_t, node);

        rq_list_unlink(&w->pool, &x->node);
        curl_easy_cleanup(x->easy);
        free(x);
    }
    if (w->multi)
        curl_multi_cleanup(w->multi);
    if (w->global_init)
        curl_global_cleanup();
    free(w->socks);
    free(w->scratch);
    free(w->url);
    free(w);
}

static const rq_handler_ops_t webhook_ops = {
    .kind = "webhook",
    .start = wh_start,
    .pollfds = wh_pollfds,
    .collect = wh_collect,
    .cancel_all = wh_cancel_all,
    .free = wh_free,
};

void *rq_handler_webhook_new(const rq_handler_opts_t *o, const rq_handler_ops_t **ops, char *err,
                             size_t errlen)
{
    webhook_t *w = calloc(1, sizeof(*w));
    CURLU *u = NULL;
    CURLUcode uc;

    if (w == NULL) {
        rq_errf(err, errlen, "HANDLER webhook: out of memory");
        goto fail;
    }
    w->o = *o;
    w->timer_ms = -1;
    if (rq_curl_load(err, errlen) != 0)
        goto fail;
    u = curl_url();
    if (u == NULL) {
        rq_errf(err, errlen, "HANDLER webhook: out of memory");
        goto fail;
    }
    uc = curl_url_set(u, CURLUPART_URL, o->target, 0);
    if (uc != CURLUE_OK) {
        rq_errf(err, errlen, "HANDLER: %.200s is not a valid URL: %s", o->target,
                curl_url_strerror(uc));
        goto fail;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        rq_errf(err, errlen, "HANDLER webhook: libcurl cannot start");
        goto fail;
    }
    w->global_init = 1;
    if (!(curl_version_info(CURLVERSION_NOW)->features & CURL_VERSION_ASYNCHDNS))
        rq_warn("HANDLER webhook: this libcurl resolves host names synchronously: a slow DNS "
                "answer blocks the consumer's worker (use an IP address in the URL)");
    w->url = strdup(o->target);
    w->multi = curl_multi_init();
    if (w->url == NULL || w->multi == NULL) {
        rq_errf(err, errlen, "HANDLER webhook: out of memory");
        goto fail;
    }
    if (curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, sock_cb) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)o->concurrency) !=
            CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_MAXCONNECTS, (long)o->concurrency) != CURLM_OK) {
        rq_errf(err, errlen, "HANDLER webhook: libcurl refused the multi options");
        goto fail;
    }
    curl_url_cleanup(u);
    *ops = &webhook_ops;
    return w;
fail:
    if (u != NULL)
        curl_url_cleanup(u);
    wh_free(w);
    return NULL;
}
