/* http_server.h - the hardening and HTTPS options both services give libmicrohttpd.
 *
 * One place turns the HTTP settings (HTTP_CONNECTION_TIMEOUT_S, HTTP_MAX_CONNECTIONS,
 * HTTP_MAX_CONNECTIONS_PER_IP, MAX_HEADER_BYTES, HTTP_TLS_CERT/KEY) into MHD options, so the
 * producer's API and the consumer's metrics port behave alike:
 *
 *   timeout          a connection idle that long is closed (slowloris); MHD does not time
 *                    out a suspended connection (a request waiting for the broker)
 *   connection caps  a connection over HTTP_MAX_CONNECTIONS_PER_IP is closed at once (no HTTP
 *                    answer); at HTTP_MAX_CONNECTIONS MHD stops accepting, so new ones wait
 *                    in the listen backlog (and are closed when MHD still gets one)
 *   header memory    the per-connection memory pool; MHD answers 414 (URL) or 431 (headers)
 *   HTTPS            GnuTLS via MHD_USE_TLS, certificate and key as PEM in memory, TLS 1.2+
 *
 * MHD reports the events it handles itself only through its log, so rq_http_server's logger
 * recognises those lines, counts them in metrics, and rate-limits the log output.
 */
#ifndef RQ_HTTP_SERVER_H
#define RQ_HTTP_SERVER_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "metrics.h"

#define RQ_HTTP_MAX_OPTIONS 12
#define RQ_HTTP_LOG_PER_SECOND 20
#define RQ_HTTP_LINGER_MAX 256 /* connections lingering at a time; beyond, closed at once */

typedef struct rq_http_server {
    char *cert_pem; /* NUL-terminated PEM text, or NULL when HTTPS is off */
    char *key_pem;
    rq_series_t *too_large;  /* 414/431 answered by MHD (optional) */
    rq_series_t *conn_limit; /* connections refused by the caps (optional) */
    /* log rate limit */
    _Atomic int64_t log_window_s;
    atomic_int log_used, log_dropped;
    struct MHD_OptionItem opts[RQ_HTTP_MAX_OPTIONS];
    /* lingering close (rq_http_server_linger): one thread, started on first use */
    pthread_mutex_t linger_lock;
    pthread_t linger_thread;
    int linger_init, linger_started, linger_stop;
    int linger_wake[2]; /* pipe: wakes the thread for a new socket or to stop */
    int linger_n;
    struct {
        int fd; /* a dup() of the connection's socket, owned by the thread */
        size_t bytes;
        int64_t deadline_ns;
    } linger[RQ_HTTP_LINGER_MAX];
} rq_http_server_t;

/* Prepares *s from cfg: reads the HTTPS files when HTTP_TLS_CERT and HTTP_TLS_KEY are set and
 * fills the option array. `limits` (may be NULL) is a counter family with one label, limit:
 * its series "header_size" and "connections" count what MHD refuses itself. Returns 0, or -1
 * with err filled when only one TLS file is set, a file cannot be read or is not PEM, or
 * libmicrohttpd lacks TLS. *s must stay at its address and outlive the daemon. */
int rq_http_server_prepare(rq_http_server_t *s, const rq_config_t *cfg, rq_metric_t *limits,
                           char *err, size_t errlen);

/* MHD_USE_TLS when HTTPS is on, else 0: to OR into the daemon flags. */
unsigned rq_http_server_flags(const rq_http_server_t *s);

/* The option array for MHD_OPTION_ARRAY (terminated by MHD_OPTION_END). */
struct MHD_OptionItem *rq_http_server_options(rq_http_server_t *s);

/* "https" or "http", for log lines and URLs. */
const char *rq_http_server_scheme(const rq_http_server_t *s);

/* Wipes and frees the PEM texts and stops the lingering thread, closing the sockets it
 * still holds (stop the daemon first). Safe on a zeroed struct. */
void rq_http_server_clear(rq_http_server_t *s);

/* Logs a warn line through s's rate limit (RQ_HTTP_LOG_PER_SECOND lines per second, then one
 * line saying how many were dropped). For events a client can trigger at will. Thread-safe. */
void rq_http_server_warn(rq_http_server_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Refusing a request whose body is still coming (413, 415, 401, ...). Closing the
 * connection with the body unread makes the kernel reset it, and a client still sending
 * (Python's http.client, requests) sees ECONNRESET or EPIPE and never reads the answer.
 * Two remedies, both bounded by RQ_HTTP_DRAIN_MAX_BYTES and RQ_HTTP_DRAIN_MAX_MS:
 *   - an answer decided from the headers goes out at once, and the connection lingers
 *     (rq_http_server_linger, as nginx's lingering close): after MHD's close, a thread
 *     reads and throws away what the client still sends, until it closes or a bound;
 *   - a body found too large while it is read (chunked) is read on and thrown away
 *     (rq_http_drain_more) and answered at its end, on a connection that stays usable;
 *     past a bound the answer goes out at once and the connection is closed.
 * So a client that sends forever is cut off, and an ordinary one reads its answer. */
#define RQ_HTTP_DRAIN_MAX_BYTES ((size_t)64 << 20)
#define RQ_HTTP_DRAIN_MAX_MS 10000

typedef struct rq_http_drain {
    size_t bytes;        /* thrown away so far */
    int64_t deadline_ns; /* monotonic */
    int started;
} rq_http_drain_t;

/* 1 when a request refused early should have its body drained before the answer: it has a
 * body (Content-Length > 0, or chunked), declares no more than RQ_HTTP_DRAIN_MAX_BYTES, and
 * did not send "Expect: 100-continue" (such a client waits for our answer before it sends
 * the body: answering at once spares it the upload). Arguments are the header values, each
 * NULL when absent. Pure function. */
int rq_http_drain_wanted(const char *content_length, const char *transfer_encoding,
                         const char *expect);

/* Counts n more bytes thrown away; the first call starts the clock (now_ns, monotonic).
 * Returns 1 while within both bounds (keep reading), 0 once past one (answer now). */
int rq_http_drain_more(rq_http_drain_t *d, size_t n, int64_t now_ns);

/* Lingering close of conn, for an answer queued before its request's body was read (call it
 * in the access handler, then queue the answer): a dup() of the socket goes to s's lingering
 * thread, so MHD's close (after it sent the answer and shut down its side) does not reset the
 * connection; the thread reads and throws away what the client still sends until it closes
 * its side, or RQ_HTTP_DRAIN_MAX_BYTES or RQ_HTTP_DRAIN_MAX_MS are passed, then closes the
 * socket. Thread-safe. Returns 0, or -1 when it cannot (RQ_HTTP_LINGER_MAX sockets linger
 * already, stopping, no descriptor): MHD then closes the connection at once as before. */
int rq_http_server_linger(rq_http_server_t *s, struct MHD_Connection *conn);

/* 1 when addr (a numeric IPv4 or IPv6 address) is a loopback address, else 0. */
int rq_http_is_loopback(const char *addr);

#endif
