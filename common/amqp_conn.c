/* amqp_conn.c - connection set-up and topology for rabbitmq-c 0.11. */
#include "amqp_conn.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "amqp_nodes.h"
#include "log.h"
#include "util.h"
#include "wire.h"

void rq_backoff_init(rq_backoff_t *b, int min_ms, int max_ms, int jitter)
{
    memset(b, 0, sizeof(*b));
    b->min_ms = min_ms;
    b->max_ms = max_ms;
    b->no_jitter = !jitter;
}

int rq_backoff_next(rq_backoff_t *b)
{
    int min_ms = b->min_ms > 0 ? b->min_ms : RQ_RECONNECT_MIN_MS;
    int max_ms = b->max_ms > 0 ? b->max_ms : RQ_RECONNECT_MAX_MS;

    b->cur_ms = b->cur_ms == 0 ? min_ms : b->cur_ms * 2;
    if (b->cur_ms > max_ms)
        b->cur_ms = max_ms;
    if (b->no_jitter)
        return b->cur_ms;
    if (b->rng == 0)
        b->rng = (((uint64_t)time(NULL) * 2654435761u) ^ ((uint64_t)getpid() << 32)) | 1;
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    return b->cur_ms / 2 + (int)(b->rng % (uint64_t)(b->cur_ms / 2 + 1));
}

void rq_backoff_reset(rq_backoff_t *b)
{
    b->cur_ms = 0;
}

amqp_table_entry_t rq_amqp_utf8_entry(const char *key, const char *value)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = amqp_cstring_bytes(value);
    return e;
}

amqp_table_entry_t rq_amqp_i64_entry(const char *key, int64_t value)
{
    amqp_table_entry_t e;

    e.key = amqp_cstring_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = value;
    return e;
}

const amqp_field_value_t *rq_amqp_header(const amqp_basic_properties_t *props, const char *key)
{
    size_t klen = strlen(key);

    if (!(props->_flags & AMQP_BASIC_HEADERS_FLAG))
        return NULL;
    for (int i = 0; i < props->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &props->headers.entries[i];
        if (e->key.len == klen && memcmp(e->key.bytes, key, klen) == 0)
            return &e->value;
    }
    return NULL;
}

char *rq_amqp_strdup(amqp_bytes_t b)
{
    char *s = malloc(b.len + 1);
    if (s == NULL)
        return NULL;
    if (b.len > 0)
        memcpy(s, b.bytes, b.len);
    s[b.len] = '\0';
    return s;
}

int rq_amqp_check_reply(amqp_rpc_reply_t r, const char *what, char *err, size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        rq_errf(err, errlen, "%s: missing RPC reply", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        rq_errf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r.reply.decoded;
            rq_errf(err, errlen, "%s: connection closed by broker: %u %.*s", what, m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r.reply.decoded;
            rq_errf(err, errlen, "%s: channel closed by broker: %u %.*s", what, m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            rq_errf(err, errlen, "%s: unexpected broker method 0x%08X", what, r.reply.id);
        }
        break;
    default:
        rq_errf(err, errlen, "%s: unknown reply type %d", what, (int)r.reply_type);
        break;
    }
    return -1;
}

/* The CA bundle used when RABBITMQ_TLS_CA is empty (Debian's ca-certificates). */
#define RQ_SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

/* Creates the TLS socket of conn as configured: CA, client certificate, verification, TLS
 * 1.2 or later. Returns it (owned by conn), or NULL with err filled. */
static amqp_socket_t *tls_socket(amqp_connection_state_t conn, const RabbitMQConfig *cfg, char *err,
                                 size_t errlen)
{
    const char *ca =
        cfg->tls_ca != NULL && cfg->tls_ca[0] != '\0' ? cfg->tls_ca : RQ_SYSTEM_CA_BUNDLE;
    int has_cert = cfg->tls_cert != NULL && cfg->tls_cert[0] != '\0';
    int has_key = cfg->tls_key != NULL && cfg->tls_key[0] != '\0';
    amqp_socket_t *sock = amqp_ssl_socket_new(conn);
    int rc;

    if (sock == NULL) {
        rq_errf(err, errlen, "cannot create a TLS socket (OpenSSL initialisation failed)");
        return NULL;
    }
    if (has_cert != has_key) {
        rq_errf(err, errlen, "RABBITMQ_TLS_CERT and RABBITMQ_TLS_KEY must be set together");
        return NULL;
    }
    amqp_ssl_socket_set_verify_peer(sock, cfg->tls_verify ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(sock, cfg->tls_verify ? 1 : 0);
    rc = amqp_ssl_socket_set_ssl_versions(sock, AMQP_TLSv1_2, AMQP_TLSvLATEST);
    if (rc != AMQP_STATUS_OK) {
        rq_errf(err, errlen, "TLS: cannot require TLS 1.2 or later: %s", amqp_error_string2(rc));
        return NULL;
    }
    if (cfg->tls_verify || (cfg->tls_ca != NULL && cfg->tls_ca[0] != '\0')) {
        rc = amqp_ssl_socket_set_cacert(sock, ca);
        if (rc != AMQP_STATUS_OK) {
            rq_errf(err, errlen, "RABBITMQ_TLS_CA %s: cannot load the CA certificates: %s", ca,
                    amqp_error_string2(rc));
            return NULL;
        }
    }
    if (has_cert) {
        rc = amqp_ssl_socket_set_key(sock, cfg->tls_cert, cfg->tls_key);
        if (rc != AMQP_STATUS_OK) {
            rq_errf(err, errlen,
                    "RABBITMQ_TLS_CERT %s / RABBITMQ_TLS_KEY %s: cannot load the client "
                    "certificate and key: %s",
                    cfg->tls_cert, cfg->tls_key, amqp_error_string2(rc));
            return NULL;
        }
    }
    return sock;
}

/* Opens one connection to node (see rq_amqp_open). */
static amqp_connection_state_t open_node(const RabbitMQConfig *cfg, const rq_amqp_node_t *node,
                                         int timeout_ms, char *err, size_t errlen)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock;
    struct timeval tv;
    amqp_table_entry_t caps[2], props[2];
    amqp_table_t ptable;
    int rc;

    if (conn == NULL) {
        rq_errf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg->tls) {
        sock = tls_socket(conn, cfg, err, errlen);
        if (sock == NULL)
            goto fail;
    } else {
        sock = amqp_tcp_socket_new(conn);
        if (sock == NULL) {
            rq_errf(err, errlen, "cannot create TCP socket");
            goto fail;
        }
    }
    tv.tv_sec = timeout_ms / 1000;
    tv.tv_usec = (timeout_ms % 1000) * 1000;
    /* Bounds the AMQP handshake and every synchronous RPC (declares, qos, consume). */
    amqp_set_handshake_timeout(conn, &tv);
    amqp_set_rpc_timeout(conn, &tv);
    rc = amqp_socket_open_noblock(sock, node->host, node->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        rq_errf(err, errlen, "cannot connect to %s%s:%d: %s%s", cfg->tls ? "amqps://" : "",
                node->host, node->port, amqp_error_string2(rc),
                cfg->tls &&
                        (rc == AMQP_STATUS_SSL_ERROR || rc == AMQP_STATUS_SSL_PEER_VERIFY_FAILED ||
                         rc == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED ||
                         rc == AMQP_STATUS_SSL_CONNECTION_FAILED)
                    ? " (check RABBITMQ_TLS_CA, the broker's certificate and RABBITMQ_HOST)"
                    : "");
        goto fail;
    }
    /* rabbitmq-c waits for a full socket forever: without a deadline a broker that stops
     * reading (frozen, or a resource alarm) would hang this thread in a send. */
    if (rq_amqp_set_send_timeout(conn, timeout_ms) != 0) {
        rq_errf(err, errlen, "cannot set a send deadline on the socket (TCP_USER_TIMEOUT)");
        goto fail;
    }
    /* Ask for connection.blocked notices (resource alarms) and consumer-cancel notices. */
    caps[0].key = amqp_cstring_bytes("connection.blocked");
    caps[0].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[0].value.value.boolean = 1;
    caps[1].key = amqp_cstring_bytes("consumer_cancel_notify");
    caps[1].value.kind = AMQP_FIELD_KIND_BOOLEAN;
    caps[1].value.value.boolean = 1;
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table.num_entries = 2;
    props[0].value.value.table.entries = caps;
    props[1].key = amqp_cstring_bytes("product");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes("relayq " RQ_VERSION);
    ptable.num_entries = 2;
    ptable.entries = props;
    if (rq_amqp_check_reply(amqp_login_with_properties(conn, cfg->vhost, /*channel_max=*/0,
                                                       AMQP_DEFAULT_FRAME_SIZE, cfg->heartbeat,
                                                       &ptable, AMQP_SASL_METHOD_PLAIN, cfg->user,
                                                       cfg->password),
                            "login", err, errlen) != 0)
        goto fail;
    amqp_channel_open(conn, RQ_AMQP_CHANNEL);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "channel.open", err, errlen) != 0)
        goto fail;
    return conn;

fail:
    amqp_destroy_connection(conn);
    return NULL;
}

/* With several nodes, RABBITMQ_CONNECT_TIMEOUT_MS bounds the whole attempt; a node is not
 * tried with less than this left. */
#define RQ_AMQP_NODE_MIN_MS 100

/* The nodes list and the node of this thread's latest rq_amqp_open(), for
 * rq_amqp_declare_topology() to report a node that refused the topology. */
static _Thread_local int tl_nodes, tl_node = -1;

amqp_connection_state_t rq_amqp_open(const RabbitMQConfig *cfg, char *err, size_t errlen)
{
    rq_amqp_node_t nodes[RQ_AMQP_MAX_NODES];
    int order[RQ_AMQP_MAX_NODES], n;
    int64_t deadline;
    char one[384], name[RQ_AMQP_NODE_HOST_MAX + 16], prev[RQ_AMQP_NODE_HOST_MAX + 16];
    size_t used = 0;

    tl_node = -1;
    n = rq_amqp_nodes_of(cfg, nodes, err, errlen);
    if (n < 0)
        return NULL;
    if (n == 1) {
        amqp_connection_state_t conn =
            open_node(cfg, &nodes[0], cfg->connect_timeout_ms, err, errlen);

        if (conn != NULL)
            rq_amqp_set_node_in_use(&nodes[0]);
        return conn;
    }
    rq_amqp_nodes_plan(n, cfg->address_order_id == RQ_ADDRESS_SHUFFLE, order);
    if (errlen > 0)
        err[0] = '\0';
    deadline = rq_mono_ms() + cfg->connect_timeout_ms;
    for (int k = 0; k < n; k++) {
        const rq_amqp_node_t *node = &nodes[order[k]];
        int64_t left = deadline - rq_mono_ms();
        amqp_connection_state_t conn;

        rq_amqp_node_name(node, name, sizeof(name));
        if (left < RQ_AMQP_NODE_MIN_MS) {
            if (used < errlen)
                snprintf(err + used, errlen - used,
                         "; no time left for the other nodes (RABBITMQ_CONNECT_TIMEOUT_MS %d)",
                         cfg->connect_timeout_ms);
            break;
        }
        conn = open_node(cfg, node, (int)left, one, sizeof(one));
        if (conn == NULL) /* the next attempt starts after this node (if it was the first) */
            rq_amqp_nodes_result(n, order[k], /*ok=*/0);
        if (conn != NULL) {
            rq_amqp_nodes_result(n, order[k], 1);
            rq_amqp_node_in_use(prev, sizeof(prev));
            if (strcmp(prev, name) != 0)
                rq_info("broker node %s in use (%d of RABBITMQ_ADDRESSES; was %s)", name,
                        order[k] + 1, prev[0] ? prev : "none");
            rq_amqp_set_node_in_use(node);
            tl_nodes = n;
            tl_node = order[k];
            return conn;
        }
        if (used < errlen) {
            int w = snprintf(err + used, errlen - used, "%snode %s: %s", k ? "; " : "", name, one);
            used += w > 0 ? (size_t)w : 0;
        }
    }
    return NULL;
}

int rq_amqp_set_send_timeout(amqp_connection_state_t conn, int timeout_ms)
{
    unsigned int ms = timeout_ms > 0 ? (unsigned int)timeout_ms : 0;
    int fd = amqp_get_socket(conn) != NULL ? amqp_get_sockfd(conn) : -1;

    if (fd < 0)
        return -1;
    return setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms)) == 0 ? 0 : -1;
}

/* 1 when a small frame can be written to fd at once (room in the socket buffer, no error). */
static int writable_now(int fd)
{
    struct pollfd pf = {.fd = fd, .events = POLLOUT};

    if (poll(&pf, 1, 0) != 1)
        return 0;
    return (pf.revents & POLLOUT) && !(pf.revents & (POLLERR | POLLHUP | POLLNVAL));
}

void rq_amqp_close(amqp_connection_state_t conn)
{
    struct timeval tv = {RQ_AMQP_CLOSE_TIMEOUT_MS / 1000, (RQ_AMQP_CLOSE_TIMEOUT_MS % 1000) * 1000};
    amqp_rpc_reply_t r;
    int fd;

    if (conn == NULL)
        return;
    fd = amqp_get_socket(conn) != NULL ? amqp_get_sockfd(conn) : -1;
    /* A full socket means the broker is not reading: a polite close would only wait. */
    if (fd >= 0 && writable_now(fd)) {
        /* A live broker answers in time; a frozen one costs one RPC timeout (rabbitmq-c then
         * drops the socket, so connection.close is skipped). A send waits at most as long. */
        rq_amqp_set_send_timeout(conn, RQ_AMQP_CLOSE_TIMEOUT_MS);
        amqp_set_rpc_timeout(conn, &tv);
        r = amqp_channel_close(conn, RQ_AMQP_CHANNEL, AMQP_REPLY_SUCCESS);
        if (r.reply_type == AMQP_RESPONSE_NORMAL && amqp_get_sockfd(conn) >= 0)
            amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
}

char *rq_amqp_dlq_name(const RabbitMQConfig *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%s.dlq", cfg->request_queue);
    return buf;
}

char *rq_amqp_retry_queue_name(const RabbitMQConfig *cfg, int attempt, char *buf, size_t len)
{
    rq_queue_spec_t s;

    rq_amqp_spec_of_config(cfg, &s);
    return rq_amqp_spec_retry_name(&s, attempt, buf, len);
}

long long rq_amqp_retry_delay_ms(const RabbitMQConfig *cfg, int attempt)
{
    rq_queue_spec_t s;

    rq_amqp_spec_of_config(cfg, &s);
    return rq_amqp_spec_retry_delay_ms(&s, attempt);
}

/* Declares one durable queue `name` on channel ch with the arguments args[0..n-1]; `type`
 * only names it in an error. */
static int declare_args(amqp_connection_state_t conn, amqp_channel_t ch, const char *name,
                        const char *type, amqp_table_entry_t *args, int n, char *err, size_t errlen)
{
    amqp_table_t table;
    char what[320];

    table.num_entries = n;
    table.entries = args;
    amqp_queue_declare(conn, ch, amqp_cstring_bytes(name), /*passive=*/0,
                       /*durable=*/1, /*exclusive=*/0, /*auto_delete=*/0, table);
    snprintf(what, sizeof(what), "queue.declare %s (durable, " RQ_WIRE_ARG_QUEUE_TYPE "=%s)", name,
             type);
    return rq_amqp_check_reply(amqp_get_rpc_reply(conn), what, err, errlen);
}

/* A quorum queue dead-letters at most once unless told otherwise: a broker crash between the
 * removal and the copy's arrival would lose the message. At-least-once dead-lettering (RabbitMQ
 * >= 3.10) keeps it until the target queue has confirmed the copy; it requires the
 * reject-publish overflow. Writes the entries to out (room for 2), returns how many. */
static int quorum_dead_letter_args(int quorum, amqp_table_entry_t *out)
{
    if (!quorum)
        return 0;
    out[0] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_STRATEGY, "at-least-once");
    out[1] = rq_amqp_utf8_entry(RQ_WIRE_ARG_OVERFLOW, "reject-publish");
    return 2;
}

static int spec_quorum(const rq_queue_spec_t *s)
{
    return strcmp(s->type, "quorum") == 0;
}

void rq_amqp_spec_of_config(const RabbitMQConfig *cfg, rq_queue_spec_t *s)
{
    memset(s, 0, sizeof(*s));
    s->name = cfg->request_queue;
    s->type = cfg->queue_type;
    s->max_retries = cfg->max_retries;
    s->retry_base_ms = cfg->retry_base_ms;
}

char *rq_amqp_spec_retry_name(const rq_queue_spec_t *s, int attempt, char *buf, size_t len)
{
    snprintf(buf, len, "%s.retry.%d", s->name, attempt);
    return buf;
}

long long rq_amqp_spec_retry_delay_ms(const rq_queue_spec_t *s, int attempt)
{
    long long d = s->retry_base_ms;

    for (int i = 1; i < attempt && d < 86400000LL; i++)
        d *= 2;
    return d;
}

int rq_amqp_queue_args(const rq_queue_spec_t *s, rq_queue_role_t role, int attempt,
                       amqp_table_entry_t *out, char *dlq, size_t dlqlen)
{
    int quorum = spec_quorum(s);
    int n = 0;

    out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_QUEUE_TYPE, s->type);
    switch (role) {
    case RQ_QROLE_DLQ:
        break;
    case RQ_QROLE_RETRY:
        out[n++] =
            rq_amqp_i64_entry(RQ_WIRE_ARG_MESSAGE_TTL, rq_amqp_spec_retry_delay_ms(s, attempt));
        out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_EXCHANGE, "");
        out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_ROUTING_KEY, s->name);
        n += quorum_dead_letter_args(quorum, out + n);
        break;
    case RQ_QROLE_MAIN:
        snprintf(dlq, dlqlen, "%s.dlq", s->name);
        out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_EXCHANGE, "");
        out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_ROUTING_KEY, dlq);
        if (quorum)
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_DELIVERY_LIMIT, RQ_QUORUM_DELIVERY_LIMIT);
        n += quorum_dead_letter_args(quorum, out + n);
        if (!quorum && s->max_length > 0)
            out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_OVERFLOW, "reject-publish");
        if (s->max_priority > 0)
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_MAX_PRIORITY, s->max_priority);
        if (s->max_length > 0)
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_MAX_LENGTH, s->max_length);
        if (s->message_ttl_ms > 0)
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_MESSAGE_TTL, s->message_ttl_ms);
        if (s->service) {
            out[n].key = amqp_cstring_bytes(RQ_WIRE_ARG_RELAYQ_QUEUE);
            out[n].value.kind = AMQP_FIELD_KIND_BOOLEAN;
            out[n++].value.value.boolean = 1;
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_RELAYQ_MAX_RETRIES, s->max_retries);
            out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_RELAYQ_RETRY_BASE, s->retry_base_ms);
        }
        break;
    }
    return n;
}

int rq_amqp_declare_spec_queue(amqp_connection_state_t conn, amqp_channel_t ch,
                               const rq_queue_spec_t *s, rq_queue_role_t role, int attempt,
                               char *err, size_t errlen)
{
    amqp_table_entry_t args[RQ_QUEUE_ARGS_MAX];
    char name[300], dlq[300];
    int n = rq_amqp_queue_args(s, role, attempt, args, dlq, sizeof(dlq));

    if (role == RQ_QROLE_DLQ)
        snprintf(name, sizeof(name), "%s.dlq", s->name);
    else if (role == RQ_QROLE_RETRY)
        rq_amqp_spec_retry_name(s, attempt, name, sizeof(name));
    else
        snprintf(name, sizeof(name), "%s", s->name);
    return declare_args(conn, ch, name, s->type, args, n, err, errlen);
}

int rq_amqp_declare_spec(amqp_connection_state_t conn, amqp_channel_t ch, const rq_queue_spec_t *s,
                         char *err, size_t errlen)
{
    if (rq_amqp_declare_spec_queue(conn, ch, s, RQ_QROLE_DLQ, 0, err, errlen) != 0)
        return -1;
    for (int a = 1; a <= s->max_retries; a++)
        if (rq_amqp_declare_spec_queue(conn, ch, s, RQ_QROLE_RETRY, a, err, errlen) != 0)
            return -1;
    return rq_amqp_declare_spec_queue(conn, ch, s, RQ_QROLE_MAIN, 0, err, errlen);
}

int rq_amqp_delay_queue_args(const char *queue, const char *type, long long bucket_ms,
                             amqp_table_entry_t *out)
{
    int n = 0;

    out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_QUEUE_TYPE, type);
    out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_MESSAGE_TTL, bucket_ms);
    out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_EXCHANGE, "");
    out[n++] = rq_amqp_utf8_entry(RQ_WIRE_ARG_DL_ROUTING_KEY, queue);
    out[n++] = rq_amqp_i64_entry(RQ_WIRE_ARG_EXPIRES, bucket_ms + RQ_DELAY_QUEUE_IDLE_MS);
    n += quorum_dead_letter_args(strcmp(type, "quorum") == 0, out + n);
    return n;
}

int rq_amqp_declare_delay_queue(amqp_connection_state_t conn, amqp_channel_t ch, const char *queue,
                                const char *type, long long bucket_ms, char *err, size_t errlen)
{
    amqp_table_entry_t args[RQ_QUEUE_ARGS_MAX];
    char name[300];
    int n;

    if (bucket_ms <= 0 || bucket_ms > RQ_DELAY_BUCKET_MAX_MS) {
        rq_errf(err, errlen, "delay queue of %s: bucket %lld ms out of range", queue, bucket_ms);
        return -1;
    }
    n = rq_amqp_delay_queue_args(queue, type, bucket_ms, args);
    snprintf(name, sizeof(name), "%s.delay.%lld", queue, bucket_ms);
    return declare_args(conn, ch, name, type, args, n, err, errlen);
}

static int declare_all(amqp_connection_state_t conn, const RabbitMQConfig *cfg, char *err,
                       size_t errlen)
{
    rq_queue_spec_t s;

    rq_amqp_spec_of_config(cfg, &s);
    return rq_amqp_declare_spec(conn, RQ_AMQP_CHANNEL, &s, err, errlen);
}

int rq_amqp_declare_topology(amqp_connection_state_t conn, const RabbitMQConfig *cfg, char *err,
                             size_t errlen)
{
    if (declare_all(conn, cfg, err, errlen) == 0)
        return 0;
    /* A node that took the connection but not the topology (a minority partition, a node
     * shutting down): the next rq_amqp_open() of this process starts at the next node. */
    rq_amqp_node_failed();
    return -1;
}

void rq_amqp_node_failed(void)
{
    if (tl_node >= 0)
        rq_amqp_nodes_result(tl_nodes, tl_node, /*ok=*/0);
}
