/* http_server.c - libmicrohttpd options shared by both services: limits, timeout, HTTPS. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define RQ_PEM_MAX (1u << 20)
/* TLS 1.2 and 1.3 only, GnuTLS's default ciphers otherwise. */
#define RQ_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Reads a PEM file into a NUL-terminated heap string. NULL with err filled on failure. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL, ebuf[RQ_STRERROR_LEN];
    size_t n;

    if (f == NULL) {
        rq_errf(err, errlen, "%s %s: %s", what, path, rq_strerror(errno, ebuf, sizeof(ebuf)));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > RQ_PEM_MAX) {
        rq_errf(err, errlen, "%s %s: not a regular file of 1 byte to 1 MiB", what, path);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rq_errf(err, errlen, "%s %s: out of memory", what, path);
        goto out;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    buf[n] = '\0';
    if (n != (size_t)st.st_size || strstr(buf, "-----BEGIN ") == NULL) {
        rq_errf(err, errlen, "%s %s: not a PEM file", what, path);
        memset(buf, 0, n);
        free(buf);
        buf = NULL;
    }
out:
    fclose(f);
    return buf;
}

static void add_opt(rq_http_server_t *s, size_t *n, enum MHD_OPTION o, intptr_t v, void *p)
{
    s->opts[*n].option = o;
    s->opts[*n].value = v;
    s->opts[*n].ptr_value = p;
    (*n)++;
}

/* MHD's log: counts the limits it enforces itself, then logs (rate-limited). */
__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    rq_http_server_t *s = cls;
    char text[512];
    const char *code;

    rq_verrf(text, sizeof(text), fmt, ap); /* the one formatter; always NUL-terminated */
    text[strcspn(text, "\n")] = '\0';
    code = strstr(text, "HTTP response code is ");
    if (code != NULL) {
        unsigned status = (unsigned)strtoul(code + 22, NULL, 10);
        if (status == 414 || status == 431)
            rq_series_inc(s->too_large);
        /* MHD also says which HTML page it sent: the status is all that matters. */
        rq_http_server_warn(s, "http: request refused by the HTTP layer with status %u", status);
        return;
    }
    /* MHD 0.9.75 says this both for HTTP_MAX_CONNECTIONS and for the per-address cap. */
    if (strstr(text, "reached connection limit") != NULL)
        rq_series_inc(s->conn_limit);
    rq_http_server_warn(s, "http: %s", text);
}

int rq_http_server_prepare(rq_http_server_t *s, const rq_config_t *cfg, rq_metric_t *limits,
                           char *err, size_t errlen)
{
    static const char *const header_size[1] = {"header_size"};
    static const char *const connections[1] = {"connections"};
    const char *cert = cfg->http_tls_cert, *key = cfg->http_tls_key;
    size_t n = 0;

    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->linger_lock, NULL);
    s->linger_init = 1;
    s->linger_wake[0] = s->linger_wake[1] = -1;
    if (limits != NULL) {
        s->too_large = rq_metric_series(limits, 1, header_size);
        s->conn_limit = rq_metric_series(limits, 1, connections);
    }
    if ((cert != NULL && cert[0] != '\0') != (key != NULL && key[0] != '\0')) {
        rq_errf(err, errlen, "HTTP_TLS_CERT and HTTP_TLS_KEY must be set together");
        return -1;
    }
    /* The logger first: MHD warns about (and prints with its own logger) anything before. */
    add_opt(s, &n, MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, s);
    if (cert != NULL && cert[0] != '\0') {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            rq_errf(err, errlen, "HTTP_TLS_CERT: this libmicrohttpd was built without TLS");
            return -1;
        }
        s->cert_pem = read_pem("HTTP_TLS_CERT", cert, err, errlen);
        if (s->cert_pem == NULL)
            goto err;
        s->key_pem = read_pem("HTTP_TLS_KEY", key, err, errlen);
        if (s->key_pem == NULL)
            goto err;
        add_opt(s, &n, MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem);
        add_opt(s, &n, MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem);
        add_opt(s, &n, MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)RQ_TLS_PRIORITIES);
    }
    add_opt(s, &n, MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->http_connection_timeout_s, NULL);
    add_opt(s, &n, MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->http_max_connections, NULL);
    if (cfg->http_max_connections_per_ip > 0)
        add_opt(s, &n, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                (intptr_t)cfg->http_max_connections_per_ip, NULL);
    add_opt(s, &n, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (intptr_t)cfg->max_header_bytes, NULL);
    add_opt(s, &n, MHD_OPTION_END, 0, NULL);
    return 0;

err:
    rq_http_server_clear(s);
    return -1;
}

unsigned rq_http_server_flags(const rq_http_server_t *s)
{
    return s->cert_pem != NULL ? (unsigned)MHD_USE_TLS : 0u;
}

struct MHD_OptionItem *rq_http_server_options(rq_http_server_t *s)
{
    return s->opts;
}

const char *rq_http_server_scheme(const rq_http_server_t *s)
{
    return s->cert_pem != NULL ? "https" : "http";
}

static void linger_stop(rq_http_server_t *s);

void rq_http_server_clear(rq_http_server_t *s)
{
    if (s == NULL)
        return;
    if (s->linger_init) {
        linger_stop(s);
        pthread_mutex_destroy(&s->linger_lock);
        s->linger_init = 0;
    }
    if (s->key_pem != NULL) {
        volatile char *p = s->key_pem;
        while (*p != '\0')
            *p++ = '\0';
    }
    free(s->key_pem);
    free(s->cert_pem);
    s->key_pem = s->cert_pem = NULL;
}

void rq_http_server_warn(rq_http_server_t *s, const char *fmt, ...)
{
    int64_t now = (int64_t)time(NULL), window = atomic_load(&s->log_window_s);
    va_list ap;

    if (now != window && atomic_compare_exchange_strong(&s->log_window_s, &window, now)) {
        int dropped = atomic_exchange(&s->log_dropped, 0);
        atomic_store(&s->log_used, 0);
        if (dropped > 0)
            rq_warn("http: %d similar log lines dropped in the last second(s)", dropped);
    }
    if (atomic_fetch_add(&s->log_used, 1) >= RQ_HTTP_LOG_PER_SECOND) {
        atomic_fetch_add(&s->log_dropped, 1);
        return;
    }
    va_start(ap, fmt);
    rq_logv(RQ_LOG_WARN, fmt, ap);
    va_end(ap);
}

int rq_http_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

int rq_http_drain_wanted(const char *content_length, const char *transfer_encoding,
                         const char *expect)
{
    unsigned long long n;
    char *end = NULL;

    if (expect != NULL && strcasecmp(expect, "100-continue") == 0)
        return 0;
    for (const char *t = transfer_encoding; t != NULL && *t != '\0'; t++)
        if (strncasecmp(t, "chunked", 7) == 0)
            return 1;
    if (content_length == NULL)
        return 0;
    errno = 0;
    n = strtoull(content_length, &end, 10);
    if (errno != 0 || end == content_length || content_length[0] == '-')
        return 0;
    return n > 0 && n <= (unsigned long long)RQ_HTTP_DRAIN_MAX_BYTES;
}

int rq_http_drain_more(rq_http_drain_t *d, size_t n, int64_t now_ns)
{
    if (!d->started) {
        d->started = 1;
        d->bytes = 0;
        d->deadline_ns = now_ns + (int64_t)RQ_HTTP_DRAIN_MAX_MS * 1000000;
    }
    d->bytes += n;
    return d->bytes <= RQ_HTTP_DRAIN_MAX_BYTES && now_ns <= d->deadline_ns;
}

/* ---- lingering close ---- */

/* Reads and throws away what slot i's client sent. Returns 1 when the slot is over (the
 * client closed, an error, or past the byte bound). Called with the lock held. */
static int linger_read(rq_http_server_t *s, int i)
{
    char sink[65536];

    for (int round = 0; round < 16; round++) {
        ssize_t r = recv(s->linger[i].fd, sink, sizeof(sink), MSG_DONTWAIT);
        if (r > 0) {
            s->linger[i].bytes += (size_t)r;
            if (s->linger[i].bytes > RQ_HTTP_DRAIN_MAX_BYTES)
                return 1;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return 1; /* 0: the client closed its side; < 0: reset or another error */
    }
    return 0; /* more to come: on the next pass, so one fast sender cannot starve the rest */
}

static void *linger_main(void *arg)
{
    rq_http_server_t *s = arg;
    struct pollfd pfd[RQ_HTTP_LINGER_MAX + 1];
    char drop[64];

    rq_thread_name("rq-http-linger");
    pthread_mutex_lock(&s->linger_lock);
    while (!s->linger_stop) {
        int n = s->linger_n, timeout = -1;
        int64_t now = rq_mono_ns();
        pfd[0].fd = s->linger_wake[0];
        pfd[0].events = POLLIN;
        for (int i = 0; i < n; i++) {
            int64_t left_ms = (s->linger[i].deadline_ns - now) / 1000000 + 1;
            pfd[i + 1].fd = s->linger[i].fd;
            pfd[i + 1].events = POLLIN;
            pfd[i + 1].revents = 0;
            if (left_ms < 0)
                left_ms = 0;
            if (timeout < 0 || left_ms < timeout)
                timeout = (int)left_ms;
        }
        pthread_mutex_unlock(&s->linger_lock);
        if (poll(pfd, (nfds_t)n + 1, timeout) > 0 && (pfd[0].revents & POLLIN))
            while (read(s->linger_wake[0], drop, sizeof(drop)) > 0)
                ;
        pthread_mutex_lock(&s->linger_lock);
        now = rq_mono_ns();
        /* Slots 0..n-1 are the ones polled (new ones are only appended); downwards, so the
         * last slot moved into a freed one has been handled or was not polled yet. */
        for (int i = n - 1; i >= 0; i--) {
            int over =
                (pfd[i + 1].revents != 0 && linger_read(s, i)) || now > s->linger[i].deadline_ns;
            if (!over)
                continue;
            close(s->linger[i].fd);
            s->linger[i] = s->linger[--s->linger_n];
        }
    }
    for (int i = 0; i < s->linger_n; i++)
        close(s->linger[i].fd);
    s->linger_n = 0;
    pthread_mutex_unlock(&s->linger_lock);
    return NULL;
}

/* Starts the thread and its wake-up pipe. Called with the lock held. Returns 0 or -1. */
static int linger_start(rq_http_server_t *s)
{
    if (pipe(s->linger_wake) != 0) {
        s->linger_wake[0] = s->linger_wake[1] = -1;
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(s->linger_wake[i], F_SETFL, fcntl(s->linger_wake[i], F_GETFL) | O_NONBLOCK);
        fcntl(s->linger_wake[i], F_SETFD, FD_CLOEXEC);
    }
    if (pthread_create(&s->linger_thread, NULL, linger_main, s) != 0)
        goto err;
    s->linger_started = 1;
    return 0;

err:
    close(s->linger_wake[0]);
    close(s->linger_wake[1]);
    s->linger_wake[0] = s->linger_wake[1] = -1;
    return -1;
}

int rq_http_server_linger(rq_http_server_t *s, struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd, rc = -1;

    if (ci == NULL || !s->linger_init)
        return -1;
    pthread_mutex_lock(&s->linger_lock);
    if (s->linger_stop || s->linger_n >= RQ_HTTP_LINGER_MAX)
        goto out;
    if (!s->linger_started && linger_start(s) != 0)
        goto out;
    fd = fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        goto out;
    s->linger[s->linger_n].fd = fd;
    s->linger[s->linger_n].bytes = 0;
    s->linger[s->linger_n].deadline_ns = rq_mono_ns() + (int64_t)RQ_HTTP_DRAIN_MAX_MS * 1000000;
    s->linger_n++;
    if (write(s->linger_wake[1], "w", 1) < 0) {
        /* a full pipe already wakes the thread */
    }
    rc = 0;
out:
    pthread_mutex_unlock(&s->linger_lock);
    return rc;
}

static void linger_stop(rq_http_server_t *s)
{
    pthread_mutex_lock(&s->linger_lock);
    s->linger_stop = 1;
    if (s->linger_started && write(s->linger_wake[1], "s", 1) < 0) {
        /* a full pipe already wakes the thread */
    }
    pthread_mutex_unlock(&s->linger_lock);
    if (s->linger_started) {
        pthread_join(s->linger_thread, NULL);
        close(s->linger_wake[0]);
        close(s->linger_wake[1]);
        s->linger_started = 0;
    }
}
