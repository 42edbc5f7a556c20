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

/* MHD's log: counts the limits it enforces itself, then logs (rate-limited). */
__attribute__((format(printf, 2, 0))) static void mhd_logger(void *cls, const char *fmt, va_list ap)
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
    if (limits != NULL) {
        s->too_large = rq_metric_series(limits, 1, header_size);
        s->conn_limit = rq_metric_series(limits, 1, connections);
    }
    if ((cert != NULL && cert[0] != '\0') != (key != NULL && key[0] != '\0')) {
        snprintf(err, errlen, "HTTP_TLS_CERT and HTTP_TLS_KEY must be set together");
        return -1;
    }
    /* The logger first: MHD warns about (and prints with its own logger) anything before. */
    add_opt(s, &n, MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_logger, s);
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
