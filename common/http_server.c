/* http_server.c - libmicrohttpd options shared by both services: limits, timeout, HTTPS. */
#include "http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

#define RQ_PEM_MAX (1u << 20)
/* TLS 1.2 and 1.3 only, GnuTLS's default ciphers otherwise. */
#define RQ_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Reads a PEM file into a NUL-terminated heap string. NULL with err filled on failure. */
static char *read_pem(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    size_t n;

    if (f == NULL) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
        (uint64_t)st.st_size > RQ_PEM_MAX) {
        snprintf(err, errlen, "%s %s: not a regular file of 1 byte to 1 MiB", what, path);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s %s: out of memory", what, path);
        goto out;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    buf[n] = '\0';
    if (n != (size_t)st.st_size || strstr(buf, "-----BEGIN ") == NULL) {
        snprintf(err, errlen, "%s %s: not a PEM file", what, path);
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

/* The text of a peer address (the key of the per-address connection count). */
static int addr_key(const struct sockaddr *sa, char *buf, size_t len)
{
    const void *a;

    if (sa == NULL)
        return -1;
    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
    else
        return -1;
    return inet_ntop(sa->sa_family, a, buf, (socklen_t)len) != NULL ? 0 : -1;
}

enum MHD_Result rq_http_server_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    rq_http_server_t *s = cls;
    char key[INET6_ADDRSTRLEN];
    uintptr_t n;

    if (s->ip_open == NULL || addr_key(addr, key, sizeof(key)) != 0)
        return MHD_YES;
    pthread_mutex_lock(&s->ip_lock);
    n = (uintptr_t)rq_hmap_get(s->ip_open, key);
    pthread_mutex_unlock(&s->ip_lock);
    if (n < (uintptr_t)s->per_ip_limit)
        return MHD_YES;
    rq_series_inc(s->conn_limit);
    rq_http_server_warn(s,
                        "http: connection from %s refused: it has %u open, the most "
                        "HTTP_MAX_CONNECTIONS_PER_IP allows",
                        key, (unsigned)n);
    return MHD_NO;
}

/* MHD_OPTION_NOTIFY_CONNECTION: keeps the per-address counts of open connections. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    rq_http_server_t *s = cls;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char key[INET6_ADDRSTRLEN];
    uintptr_t n;

    if (ci == NULL || addr_key(ci->client_addr, key, sizeof(key)) != 0)
        return;
    pthread_mutex_lock(&s->ip_lock);
    n = (uintptr_t)rq_hmap_get(s->ip_open, key);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        /* On allocation failure the count stays low: the limit errs on letting in. */
        rq_hmap_put(s->ip_open, key, (void *)(n + 1));
        *socket_context = s; /* marks a counted connection */
    } else if (*socket_context == s && n > 1) {
        rq_hmap_put(s->ip_open, key, (void *)(n - 1));
    } else if (*socket_context == s) {
        rq_hmap_del(s->ip_open, key);
    }
    pthread_mutex_unlock(&s->ip_lock);
}

/* MHD's log: counts the limits it enforces itself, then logs (rate-limited). */
__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt,
                                                             va_list ap)
{
    rq_http_server_t *s = cls;
    char text[512];
    const char *code;

    vsnprintf(text, sizeof(text), fmt, ap);
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
    if (strstr(text, "connection limit") != NULL || strstr(text, "limit reached") != NULL ||
        strstr(text, "IP connection limit") != NULL || strstr(text, "too many connections") != NULL)
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
    if (limits != NULL) {
        s->too_large = rq_metric_series(limits, 1, header_size);
        s->conn_limit = rq_metric_series(limits, 1, connections);
    }
    if ((cert != NULL && cert[0] != '\0') != (key != NULL && key[0] != '\0')) {
        snprintf(err, errlen, "HTTP_TLS_CERT and HTTP_TLS_KEY must be set together");
        return -1;
    }
    if (cert != NULL && cert[0] != '\0') {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, errlen, "HTTP_TLS_CERT: this libmicrohttpd was built without TLS");
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
    add_opt(s, &n, MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, s);
    add_opt(s, &n, MHD_OPTION_CONNECTION_TIMEOUT, (intptr_t)cfg->http_connection_timeout_s,
            NULL);
    add_opt(s, &n, MHD_OPTION_CONNECTION_LIMIT, (intptr_t)cfg->http_max_connections, NULL);
    if (cfg->http_max_connections_per_ip > 0) {
        s->ip_open = rq_hmap_new(64);
        if (s->ip_open == NULL) {
            snprintf(err, errlen, "out of memory");
            goto err;
        }
        pthread_mutex_init(&s->ip_lock, NULL);
        s->per_ip_limit = cfg->http_max_connections_per_ip;
        add_opt(s, &n, MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, s);
        add_opt(s, &n, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                (intptr_t)cfg->http_max_connections_per_ip, NULL);
    }
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

void rq_http_server_clear(rq_http_server_t *s)
{
    if (s == NULL)
        return;
    if (s->key_pem != NULL) {
        volatile char *p = s->key_pem;
        while (*p != '\0')
            *p++ = '\0';
    }
    free(s->key_pem);
    free(s->cert_pem);
    s->key_pem = s->cert_pem = NULL;
    if (s->ip_open != NULL) {
        rq_hmap_free(s->ip_open);
        pthread_mutex_destroy(&s->ip_lock);
        s->ip_open = NULL;
    }
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
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}
