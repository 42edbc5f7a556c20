/* amqp_nodes.c - the broker nodes and the order they are tried in: see amqp_nodes.h. */
#include "amqp_nodes.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int plan_n;                  /* the list length of the order below (0: none yet) */
static int perm[RQ_AMQP_MAX_NODES]; /* the order of the nodes: in-order or shuffled */
static int preferred;               /* position in perm of the node tried first */
static char in_use[RQ_AMQP_NODE_HOST_MAX + 16];
static rq_metric_t *node_gauge; /* rabbitmq_node_in_use, or NULL */

/* Parses one entry text[0..len) (trimmed, not empty) into *n. */
static int parse_entry(const char *text, size_t len, int def_port, rq_amqp_node_t *n, char *err,
                       size_t errlen)
{
    const char *host = text, *port = NULL;
    size_t hlen = len;

    if (text[0] == '[') {
        const char *close = memchr(text, ']', len);

        if (close == NULL)
            return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: \"%.*s\" has no closing ']'", (int)len,
                           text);
        host = text + 1;
        hlen = (size_t)(close - host);
        if (close + 1 < text + len) {
            if (close[1] != ':')
                return rq_errf(err, errlen,
                               "RABBITMQ_ADDRESSES: \"%.*s\": expected ':port' after ']'", (int)len,
                               text);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(text, ':', len);

        if (colon != NULL) {
            if (memchr(colon + 1, ':', (size_t)(text + len - colon - 1)) != NULL)
                return rq_errf(err, errlen,
                               "RABBITMQ_ADDRESSES: \"%.*s\": an IPv6 address goes in brackets, "
                               "\"[::1]:5672\"",
                               (int)len, text);
            hlen = (size_t)(colon - text);
            port = colon + 1;
        }
    }
    if (hlen == 0)
        return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: \"%.*s\" has no host", (int)len, text);
    if (hlen > RQ_AMQP_NODE_HOST_MAX)
        return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: a host is longer than %d bytes",
                       RQ_AMQP_NODE_HOST_MAX);
    for (size_t i = 0; i < hlen; i++) {
        unsigned char ch = (unsigned char)host[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '-' || ch == '_' || (host != text && (ch == ':' || ch == '%'));

        if (!ok)
            return rq_errf(err, errlen,
                           "RABBITMQ_ADDRESSES: \"%.*s\": a host is letters, digits, '.', '-' "
                           "and '_' (an IPv6 address in brackets)",
                           (int)len, text);
    }
    memcpy(n->host, host, hlen);
    n->host[hlen] = '\0';
    n->port = def_port;
    if (port != NULL) {
        size_t plen = (size_t)(text + len - port);
        long v = 0;

        if (plen == 0 || plen > 5)
            return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: \"%.*s\": bad port", (int)len, text);
        for (size_t i = 0; i < plen; i++) {
            if (port[i] < '0' || port[i] > '9')
                return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: \"%.*s\": bad port", (int)len,
                               text);
            v = v * 10 + (port[i] - '0');
        }
        if (v < 1 || v > 65535)
            return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: \"%.*s\": port out of 1..65535",
                           (int)len, text);
        n->port = (int)v;
    }
    return 0;
}

int rq_amqp_nodes_parse(const char *text, int def_port, rq_amqp_node_t *out, int max, char *err,
                        size_t errlen)
{
    const char *p = text;
    int n = 0;

    assert(text != NULL && out != NULL && max > 0);
    for (;;) {
        const char *end = strchr(p, ',');
        const char *stop = end ? end : p + strlen(p);
        const char *a = p, *b = stop;

        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b)
            return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: an empty entry");
        if (n == max)
            return rq_errf(err, errlen, "RABBITMQ_ADDRESSES: more than %d addresses", max);
        if (parse_entry(a, (size_t)(b - a), def_port, &out[n], err, errlen) != 0)
            return -1;
        n++;
        if (end == NULL)
            return n;
        p = end + 1;
    }
}

int rq_amqp_nodes_of(const RabbitMQConfig *cfg, rq_amqp_node_t *out, char *err, size_t errlen)
{
    if (cfg->addresses != NULL && cfg->addresses[0] != '\0')
        return rq_amqp_nodes_parse(cfg->addresses, cfg->port, out, RQ_AMQP_MAX_NODES, err, errlen);
    if (strlen(cfg->host) > RQ_AMQP_NODE_HOST_MAX)
        return rq_errf(err, errlen, "RABBITMQ_HOST is longer than %d bytes", RQ_AMQP_NODE_HOST_MAX);
    snprintf(out[0].host, sizeof(out[0].host), "%s", cfg->host);
    out[0].port = cfg->port;
    return 1;
}

void rq_amqp_node_name(const rq_amqp_node_t *n, char *buf, size_t len)
{
    if (strchr(n->host, ':') != NULL)
        snprintf(buf, len, "[%s]:%d", n->host, n->port);
    else
        snprintf(buf, len, "%s:%d", n->host, n->port);
}

/* A new order for n nodes (lock held): identity, or a Fisher-Yates shuffle. */
static void new_order(int n, int shuffle)
{
    uint64_t x;
    struct timespec ts;

    for (int i = 0; i < n; i++)
        perm[i] = i;
    if (shuffle) {
        clock_gettime(CLOCK_REALTIME, &ts);
        x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
        x |= 1;
        for (int i = n - 1; i > 0; i--) {
            int j, t;

            x ^= x << 13; /* xorshift64 */
            x ^= x >> 7;
            x ^= x << 17;
            j = (int)(x % (uint64_t)(i + 1));
            t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
    }
    plan_n = n;
    preferred = 0;
}

void rq_amqp_nodes_plan(int n, int shuffle, int *order)
{
    assert(n >= 1 && n <= RQ_AMQP_MAX_NODES);
    pthread_mutex_lock(&lock);
    if (plan_n != n)
        new_order(n, shuffle);
    for (int k = 0; k < n; k++)
        order[k] = perm[(preferred + k) % n];
    pthread_mutex_unlock(&lock);
}

void rq_amqp_nodes_result(int n, int i, int ok)
{
    pthread_mutex_lock(&lock);
    if (plan_n == n) {
        for (int pos = 0; pos < n; pos++) {
            if (perm[pos] != i)
                continue;
            if (ok)
                preferred = pos;
            else if (preferred == pos)
                preferred = (pos + 1) % n;
            break;
        }
    }
    pthread_mutex_unlock(&lock);
}

char *rq_amqp_node_in_use(char *buf, size_t len)
{
    pthread_mutex_lock(&lock);
    snprintf(buf, len, "%s", in_use);
    pthread_mutex_unlock(&lock);
    return buf;
}

void rq_amqp_set_node_in_use(const rq_amqp_node_t *node)
{
    char name[sizeof(in_use)];

    rq_amqp_node_name(node, name, sizeof(name));
    pthread_mutex_lock(&lock);
    if (node_gauge != NULL && strcmp(name, in_use) != 0) {
        const char *old = in_use, *cur = name;

        if (in_use[0] != '\0')
            rq_series_set(rq_metric_series(node_gauge, 1, &old), 0);
        rq_series_set(rq_metric_series(node_gauge, 1, &cur), 1);
    }
    memcpy(in_use, name, sizeof(in_use));
    pthread_mutex_unlock(&lock);
}

int rq_amqp_nodes_metrics(rq_metrics_t *m)
{
    static const char *const labels[] = {"node"};
    rq_metric_t *g = NULL;

    if (m != NULL) {
        g = rq_metrics_gauge(m, "rabbitmq_node_in_use",
                             "1 for the broker node (RABBITMQ_ADDRESSES) of the service's latest "
                             "connection, 0 for a node it used before",
                             1, labels);
        if (g == NULL)
            return -1;
    }
    pthread_mutex_lock(&lock);
    node_gauge = g;
    if (g != NULL && in_use[0] != '\0') {
        const char *cur = in_use;

        rq_series_set(rq_metric_series(g, 1, &cur), 1);
    }
    pthread_mutex_unlock(&lock);
    return 0;
}
