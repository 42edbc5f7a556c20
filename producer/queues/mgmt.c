/* mgmt.c - a minimal HTTP/1.1 client of RabbitMQ's management API. */
#include "mgmt.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

struct rq_mgmt {
    char host[RQ_MGMT_HOST_MAX + 1];      /* without brackets (getaddrinfo) */
    char hostport[RQ_MGMT_HOST_MAX + 12]; /* "host:port" or "[v6]:port" (the Host header) */
    int port;
    char prefix[512];
    char auth[1400]; /* base64 of user:password */
    char base[800];
};

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 (with padding) of in[0..len) into out. Returns 0, or -1 when it does not
 * fit. */
static int base64(const unsigned char *in, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    if ((len + 2) / 3 * 4 + 1 > outlen)
        return -1;
    for (size_t i = 0; i < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = b64[(v >> 18) & 63];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return 0;
}

int rq_mgmt_url_parse(const char *url, char *host, size_t hostlen, int *port, char *prefix,
                      size_t prefixlen, char *err, size_t errlen)
{
    const char *p, *h, *end, *colon;
    size_t n;

    if (strncasecmp(url, "http://", 7) != 0)
        return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: only http:// URLs are supported",
                       url);
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f) /* would end up in the request line or Host header */
            return rq_errf(err, errlen,
                           "RABBITMQ_MANAGEMENT_URL: a blank, control or non-ASCII character "
                           "(percent-encode it)");
    h = url + 7;
    end = h + strcspn(h, "/?#");
    if (*end == '?' || *end == '#')
        return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: no query or fragment allowed",
                       url);
    if (memchr(h, '@', (size_t)(end - h)) != NULL)
        return rq_errf(err, errlen,
                       "RABBITMQ_MANAGEMENT_URL: no credentials in the URL (RABBITMQ_USER and "
                       "RABBITMQ_PASS are used)");
    if (*h == '[') {
        /* an IPv6 literal (RFC 3986): "[v6]" or "[v6]:port", the host without brackets */
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (rb == NULL || (rb + 1 != end && rb[1] != ':'))
            return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: bad IPv6 address", url);
        colon = rb + 1 != end ? rb + 1 : NULL;
        n = (size_t)(rb - h - 1);
        h++;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        n = (size_t)((colon != NULL ? colon : end) - h);
    }
    *port = 80;
    if (colon != NULL) {
        char *e = NULL;
        long v;
        errno = 0;
        v = strtol(colon + 1, &e, 10);
        if (colon + 1 == end || colon[1] < '0' || colon[1] > '9' || e != end || errno != 0 ||
            v < 1 || v > 65535)
            return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: bad port", url);
        *port = (int)v;
    }
    if (n == 0 || n >= hostlen)
        return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: no host (or too long)", url);
    memcpy(host, h, n);
    host[n] = '\0';
    p = end;
    n = strlen(p);
    while (n > 0 && p[n - 1] == '/')
        n--;
    if (n >= prefixlen)
        return rq_errf(err, errlen, "RABBITMQ_MANAGEMENT_URL %s: path too long", url);
    memcpy(prefix, p, n);
    prefix[n] = '\0';
    return 0;
}

rq_mgmt_t *rq_mgmt_new(const RabbitMQConfig *cfg, char *err, size_t errlen)
{
    const char *url = cfg->management_url != NULL ? cfg->management_url : "";
    char derived[RQ_MGMT_HOST_MAX + 32], cred[1030];
    rq_mgmt_t *m;

    if (strcasecmp(url, "off") == 0) {
        rq_errf(err, errlen, "no management API (RABBITMQ_MANAGEMENT_URL is off)");
        return NULL;
    }
    if (url[0] == '\0') {
        /* an IPv6 RABBITMQ_HOST ("::1") goes in brackets */
        snprintf(derived, sizeof(derived),
                 strchr(cfg->host, ':') != NULL ? "http://[%s]:15672" : "http://%s:15672",
                 cfg->host);
        url = derived;
    }
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        rq_errf(err, errlen, "out of memory");
        return NULL;
    }
    if (rq_mgmt_url_parse(url, m->host, sizeof(m->host), &m->port, m->prefix, sizeof(m->prefix),
                          err, errlen) != 0)
        goto fail;
    snprintf(cred, sizeof(cred), "%s:%s", cfg->user, cfg->password ? cfg->password : "");
    if (base64((const unsigned char *)cred, strlen(cred), m->auth, sizeof(m->auth)) != 0) {
        rq_errf(err, errlen, "RABBITMQ_USER/RABBITMQ_PASS too long for the management API");
        goto fail;
    }
    snprintf(m->hostport, sizeof(m->hostport), strchr(m->host, ':') ? "[%s]:%d" : "%s:%d", m->host,
             m->port);
    snprintf(m->base, sizeof(m->base), "http://%s%s", m->hostport, m->prefix);
    return m;

fail:
    free(m);
    return NULL;
}

void rq_mgmt_free(rq_mgmt_t *m)
{
    if (m == NULL)
        return;
    memset(m->auth, 0, sizeof(m->auth));
    free(m);
}

const char *rq_mgmt_base(const rq_mgmt_t *m)
{
    return m->base;
}

int rq_mgmt_escape(const char *name, char *out, size_t outlen)
{
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (o + (plain ? 1 : 3) >= outlen)
            return -1;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            snprintf(out + o, 4, "%%%02X", *p);
            o += 3;
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return 0;
}

/* ms left until deadline (>= 0). */
static int left_ms(int64_t deadline)
{
    int64_t l = deadline - rq_mono_ms();
    return l > 0 ? (int)l : 0;
}

/* A socket connected to address a by deadline, or -1 with err. */
static int connect_one(const rq_mgmt_t *m, const struct addrinfo *a, int64_t deadline, char *err,
                       size_t errlen)
{
    struct pollfd pf;
    int soerr = 0, fd;
    socklen_t sl = sizeof(soerr);

    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
        rq_errf(err, errlen, "management API %s: socket: %s", m->base, strerror(errno));
        return -1;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS) {
        rq_errf(err, errlen, "management API %s: connect: %s", m->base, strerror(errno));
        close(fd);
        return -1;
    }
    pf.fd = fd;
    pf.events = POLLOUT;
    if (poll(&pf, 1, left_ms(deadline)) != 1) {
        rq_errf(err, errlen, "management API %s: connect timed out", m->base);
        close(fd);
        return -1;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
        rq_errf(err, errlen, "management API %s: connect: %s", m->base, strerror(soerr));
        close(fd);
        return -1;
    }
    return fd;
}

/* A connected non-blocking socket to host:port by deadline (each address in turn), or -1
 * with err. */
static int connect_to(const rq_mgmt_t *m, int64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    int fd = -1, rc;

    snprintf(port, sizeof(port), "%d", m->port);
    rc = getaddrinfo(m->host, port, &hints, &res);
    if (rc != 0) {
        rq_errf(err, errlen, "management API %s: %s", m->base, gai_strerror(rc));
        return -1;
    }
    rq_errf(err, errlen, "management API %s: no address", m->base);
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next)
        fd = connect_one(m, a, deadline, err, errlen);
    freeaddrinfo(res);
    return fd;
}

/* The hexadecimal chunk size at the start of line[0..len) (RFC 9112: 1*HEXDIG, then an
 * optional ";extension"), into *sz. Parsed here, not by strtoull(): that skips blanks and
 * newlines (reading past the line, past the answer when no NUL follows it), and takes signs
 * and "0x". Returns 0, or -1 for no digits, another character or a size over SIZE_MAX / 2. */
static int chunk_size(const char *line, size_t len, size_t *sz)
{
    size_t i = 0, v = 0;

    for (; i < len; i++) {
        int c = (unsigned char)line[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            break;
        if (v > (SIZE_MAX / 2) >> 4)
            return -1;
        v = v * 16 + (size_t)d;
    }
    if (i == 0)
        return -1;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i < len && line[i] != ';')
        return -1;
    *sz = v;
    return 0;
}

/* Decodes a chunked body in place at b[0..*len). Returns 0 or -1. */
static int dechunk(char *b, size_t *len)
{
    size_t r = 0, w = 0, n = *len;

    for (;;) {
        size_t sz, ll;
        const char *eol = memchr(b + r, '\n', n - r);
        if (eol == NULL)
            return -1;
        ll = (size_t)(eol - (b + r));
        if (ll > 0 && b[r + ll - 1] == '\r')
            ll--;
        if (chunk_size(b + r, ll, &sz) != 0)
            return -1;
        r = (size_t)(eol - b) + 1;
        if (sz == 0)
            break;
        if (sz > n - r)
            return -1;
        memmove(b + w, b + r, sz);
        w += sz;
        r += sz;
        if (r + 2 > n || b[r] != '\r' || b[r + 1] != '\n')
            return -1;
        r += 2;
    }
    *len = w;
    return 0;
}

/* The value of a Content-Length header line v[0..len) (after the colon): optional blanks,
 * 1..15 digits, optional blanks. Returns it, or -1 when it is anything else. */
static long long content_length(const char *v, size_t len)
{
    size_t i = 0, digits = 0;
    long long n = 0;

    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    for (; i < len && v[i] >= '0' && v[i] <= '9' && digits < 16; i++, digits++)
        n = n * 10 + (v[i] - '0');
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    return digits == 0 || digits > 15 || i != len ? -1 : n;
}

int rq_mgmt_parse_response(char *buf, size_t len, int *status, size_t *body_off, size_t *body_len,
                           char *err, size_t errlen)
{
    const char *hend = NULL;
    long long clen = -1;
    int chunked = 0;
    size_t off, blen;
    char *line, *eol;

    for (size_t i = 0; i + 3 < len; i++)
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
            hend = buf + i;
            break;
        }
    if (hend == NULL || len < 12 || strncmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
        return rq_errf(err, errlen, "management API: malformed HTTP answer");
    if (buf[9] < '1' || buf[9] > '5' || buf[10] < '0' || buf[10] > '9' || buf[11] < '0' ||
        buf[11] > '9')
        return rq_errf(err, errlen, "management API: malformed HTTP status");
    *status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    line = memchr(buf, '\n', (size_t)(hend - buf));
    while (line != NULL && line < hend) {
        line++;
        eol = memchr(line, '\r', (size_t)(hend + 2 - line));
        if (eol == NULL)
            break;
        if ((size_t)(eol - line) >= 15 && strncasecmp(line, "content-length:", 15) == 0) {
            long long v = content_length(line + 15, (size_t)(eol - line) - 15);
            if (v < 0 || (clen >= 0 && v != clen))
                return rq_errf(err, errlen, "management API: malformed Content-Length");
            clen = v;
        } else if ((size_t)(eol - line) > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
            const char *v = line + 18;
            while (*v == ' ')
                v++;
            chunked = strncasecmp(v, "chunked", 7) == 0;
        }
        line = memchr(line, '\n', (size_t)(hend + 2 - line));
    }
    off = (size_t)(hend - buf) + 4;
    blen = len - off;
    if (chunked) {
        if (dechunk(buf + off, &blen) != 0)
            return rq_errf(err, errlen, "management API: malformed chunked body");
    } else if (clen >= 0) {
        if ((unsigned long long)clen > blen)
            return rq_errf(err, errlen, "management API: answer cut short (%zu of %lld bytes)",
                           blen, clen);
        blen = (size_t)clen;
    }
    *body_off = off;
    *body_len = blen;
    return 0;
}

int rq_mgmt_get(const rq_mgmt_t *m, const char *path, int timeout_ms, int *status, json_t **body,
                char *err, size_t errlen)
{
    int64_t deadline = rq_mono_ms() + (timeout_ms > 0 ? timeout_ms : 5000);
    char req[4096], *buf = NULL;
    size_t cap = 0, len = 0, sent = 0, reqlen, off = 0, blen = 0;
    int fd, rc = -1, n;

    *body = NULL;
    n = snprintf(req, sizeof(req),
                 "GET %s%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Basic %s\r\n"
                 "Accept: application/json\r\nConnection: close\r\n\r\n",
                 m->prefix, path, m->hostport, m->auth);
    if (n < 0 || (size_t)n >= sizeof(req))
        return rq_errf(err, errlen, "management API: request too long");
    reqlen = (size_t)n;
    fd = connect_to(m, deadline, err, errlen);
    if (fd < 0)
        return -1;
    while (sent < reqlen) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        ssize_t w;
        if (poll(&pf, 1, left_ms(deadline)) != 1) {
            rq_errf(err, errlen, "management API %s: send timed out", m->base);
            goto out;
        }
        w = send(fd, req + sent, reqlen - sent, MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            rq_errf(err, errlen, "management API %s: send: %s", m->base, strerror(errno));
            goto out;
        }
        if (w > 0)
            sent += (size_t)w;
    }
    for (;;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        ssize_t r;
        if (len + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 65536;
            char *nb;
            if (ncap > RQ_MGMT_MAX_BYTES + 1)
                ncap = RQ_MGMT_MAX_BYTES + 1;
            if (len + 1 >= ncap) {
                rq_errf(err, errlen, "management API %s: answer over %u bytes", m->base,
                        RQ_MGMT_MAX_BYTES);
                goto out;
            }
            nb = realloc(buf, ncap);
            if (nb == NULL) {
                rq_errf(err, errlen, "out of memory");
                goto out;
            }
            buf = nb;
            cap = ncap;
        }
        if (poll(&pf, 1, left_ms(deadline)) != 1) {
            rq_errf(err, errlen, "management API %s: no answer within %d ms", m->base, timeout_ms);
            goto out;
        }
        r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            rq_errf(err, errlen, "management API %s: recv: %s", m->base, strerror(errno));
            goto out;
        }
        len += (size_t)r;
    }
    if (buf == NULL || rq_mgmt_parse_response(buf, len, status, &off, &blen, err, errlen) != 0)
        goto out;
    *body = blen > 0 ? json_loadb(buf + off, blen, 0, NULL) : NULL;
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

/* An integer member of o, 0 when absent or not a number. */
static json_int_t int_of(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

json_t *rq_mgmt_queue_summary(const json_t *q)
{
    const json_t *name = json_object_get(q, "name"), *args = json_object_get(q, "arguments");
    const char *type = json_string_value(json_object_get(q, "type"));

    if (!json_is_object(q) || !json_is_string(name))
        return NULL;
    return json_pack("{s:O,s:s,s:I,s:I,s:I,s:o}", "name", name, "type", type ? type : "classic",
                     "ready", int_of(q, "messages_ready"), "unacked",
                     int_of(q, "messages_unacknowledged"), "consumers", int_of(q, "consumers"),
                     "arguments", json_is_object(args) ? json_deep_copy(args) : json_object());
}
