/* rq_amqp_tool.c - a small AMQP command-line tool for relayq's tests and benchmarks.
 *
 *   rq_amqp_tool publish --queue Q [--count N] [--json|--raw-file F|--body TEXT] ...
 *   rq_amqp_tool get     --queue Q [--count N] [--wait S] [--format body|props]
 *   rq_amqp_tool depth   --queue Q [--consumers]
 *   rq_amqp_tool purge   --queue Q
 *   rq_amqp_tool declare --queue Q [--topology [--queue-type T] | --transient]
 *   rq_amqp_tool delete  --queue Q
 *
 * publish uses publisher confirms, pipelined: messages are published back to back while
 * basic.ack / basic.nack frames (honouring `multiple`) are read as they come, with at most
 * --window messages unconfirmed. It fails (exit 1) unless every message was confirmed (no
 * nack, no basic.return: messages are published `mandatory`) before --timeout.
 *
 * Connection settings: RABBITMQ_HOST/PORT/USER/PASS/VHOST from the environment if set
 * (host defaults to 127.0.0.1 here), overridden by --host/--port/--user/--pass/--vhost.
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "amqp_conn.h"
#include "amqp_pub.h"
#include "config.h"
#include "util.h"
#include "wire.h"

#define TOOL "rq_amqp_tool"

typedef struct opts {
    const char *cmd;
    const char *queue;
    long long count; /* -1: not given */
    int json;
    const char *raw_file;
    const char *body;
    const char *content_type;
    const char *reply_to;
    const char *correlation_id;
    const char *id_prefix;
    long long start;
    double processing_time; /* < 0: omitted */
    long long fail_times;   /* < 0: omitted */
    int payload_object;
    int transient;
    long long window;
    double timeout;
    double rate; /* messages/s, 0 = unlimited */
    int declare;
    double wait;
    const char *format;
    const char *max_priority; /* declare: x-max-priority */
    int consumers;
    int topology;
    const char *queue_type;
    int quiet;
} opts_t;

static void usage(FILE *f)
{
    fprintf(
        f, "usage: " TOOL " COMMAND --queue Q [options]\n"
           "\n"
           "commands:\n"
           "  publish   publish messages with publisher confirms (pipelined)\n"
           "  get       fetch messages with basic.get (acked after printing) and print them\n"
           "  depth     print the queue's ready message count (passive declare)\n"
           "  purge     purge the queue, print the number of messages removed\n"
           "  declare   declare the queue (durable unless --transient; --topology: as relayq's\n"
           "            request queue, with " RQ_WIRE_ARG_QUEUE_TYPE ")\n"
           "  delete    delete the queue\n"
           "\n"
           "connection: --host H (127.0.0.1) --port P (5672) --user U --pass P --vhost V\n"
           "            (defaults from RABBITMQ_HOST/PORT/USER/PASS/VHOST when set)\n"
           "\n"
           "publish:\n"
           "  --count N             messages to publish (default 1; with --raw-file: all lines)\n"
           "  --json                API-style JSON messages (default): {\"id\":\"<prefix>-<i>\",\n"
           "                        \"payload\":\"<prefix> message <i>\",\"processing_time\",...}\n"
           "  --payload-object      payload {\"seq\":i,\"text\":\"<prefix> message <i>\"}\n"
           "  --id-prefix P         id prefix (default \"msg\"; with --raw-file: the file path)\n"
           "  --start I             first index i (default 0)\n"
           "  --processing-time T   add \"processing_time\": T\n"
           "  --fail-times N        add \"fail_times\": N\n"
           "  --raw-file F          publish each line of F (without its '\\n'; a last line\n"
           "                        without '\\n' too) as application/octet-stream, message id\n"
           "                        \"<prefix>:<byte offset>\"\n"
           "  --body TEXT           publish TEXT verbatim (message id \"<prefix>-<i>\")\n"
           "  --content-type CT     content type for --body (default application/json;\n"
           "                        \"none\" omits the property)\n"
           "  --reply-to Q          set reply_to\n"
           "  --correlation-id X    X for a single message, X-<i> for several (default with\n"
           "                        --reply-to: a UUID per message)\n"
           "  --transient           delivery_mode 1 (default 2, persistent)\n"
           "  --window W            most unconfirmed messages at a time (default 10000)\n"
           "  --rate R              publish at most R messages per second (default unlimited)\n"
           "  --declare             declare the queue as relayq's request queue first\n"
           "  --queue-type T        " RQ_WIRE_ARG_QUEUE_TYPE
           " for --declare/--topology (default: QUEUE_TYPE, "
           "quorum)\n"
           "  --timeout S           give up after S seconds (default 120)\n"
           "get:\n"
           "  --count N             stop after N messages (default: all that are there)\n"
           "  --wait S              poll up to S seconds for N messages (default 0); exit 1 when\n"
           "                        fewer than N arrived\n"
           "  --format body|props|json  body per line, or "
           "\"correlation_id<TAB>message_id<TAB>body\",\n"
           "                        or one JSON object per message: body_hex, content_type,\n"
           "                        message_id, priority, expiration, headers (strings, ints)\n"
           "declare:\n"
           "  --max-priority N      x-max-priority N\n"
           "depth:\n"
           "  --consumers           print \"<messages> <consumers>\"\n"
           "  --quiet               (all commands) no summary on stderr\n");
}

static int connect_to(const opts_t *o, const char *host, const char *port, const char *user,
                      const char *pass, const char *vhost, rq_config_t *cfg,
                      amqp_connection_state_t *conn)
{
    rq_config_error_t cerr;
    char err[512];
    struct {
        const char *name;
        const char *value;
    } sets[] = {
        {"RABBITMQ_HOST", host},       {"RABBITMQ_PORT", port},   {"RABBITMQ_USER", user},
        {"RABBITMQ_PASS", pass},       {"RABBITMQ_VHOST", vhost}, {"REQUEST_QUEUE", o->queue},
        {"QUEUE_TYPE", o->queue_type},
    };

    if (rq_config_defaults(cfg) < 0) {
        fprintf(stderr, TOOL ": out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < sizeof(sets) / sizeof(sets[0]); i++) {
        if (sets[i].value == NULL)
            continue;
        if (rq_config_set(cfg, sets[i].name, sets[i].value, &cerr) < 0) {
            fprintf(stderr, TOOL ": %s\n", cerr.text);
            return -1;
        }
    }
    *conn = rq_amqp_open(&cfg->rabbitmq, err, sizeof(err));
    if (*conn == NULL) {
        fprintf(stderr, TOOL ": %s\n", err);
        return -1;
    }
    return 0;
}

static int check(amqp_connection_state_t conn, const char *what)
{
    char err[512];

    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), what, err, sizeof(err)) < 0) {
        fprintf(stderr, TOOL ": %s\n", err);
        return -1;
    }
    return 0;
}

/* ---- publish ---------------------------------------------------------------------------- */

typedef struct pub {
    amqp_connection_state_t conn;
    rq_pubbuf_t *buf;   /* publishes not yet written: flushed before any wait */
    uint8_t *state;     /* per tag (index tag-1): 0 unsettled, 1 acked, 2 nacked */
    uint64_t published; /* highest tag published */
    uint64_t low;       /* lowest tag that may be unsettled */
    uint64_t settled;
    uint64_t nacked;
    uint64_t returned;
} pub_t;

static void settle(pub_t *p, uint64_t tag, int multiple, uint8_t how)
{
    if (tag == 0 || tag > p->published)
        return;
    if (multiple) {
        for (uint64_t t = p->low; t <= tag; t++) {
            if (p->state[t - 1] == 0) {
                p->state[t - 1] = how;
                p->settled++;
                p->nacked += how == 2;
            }
        }
    } else if (p->state[tag - 1] == 0) {
        p->state[tag - 1] = how;
        p->settled++;
        p->nacked += how == 2;
    }
    while (p->low <= p->published && p->state[p->low - 1] != 0)
        p->low++;
}

/* Reads one frame, waiting at most timeout_ms (0: only what is already there). Returns 1 when
 * a frame was handled, 0 on timeout, -1 on a fatal error (printed). */
static int read_confirm(pub_t *p, int timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    amqp_frame_t f;
    int rc;

    if (rq_pubbuf_pending(p->buf) > 0 && (rc = rq_pubbuf_flush(p->buf)) != AMQP_STATUS_OK) {
        fprintf(stderr, TOOL ": publish: %s\n", amqp_error_string2(rc));
        return -1;
    }
    amqp_maybe_release_buffers(p->conn);
    rc = amqp_simple_wait_frame_noblock(p->conn, &f, &tv);
    if (rc == AMQP_STATUS_TIMEOUT)
        return 0;
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, TOOL ": waiting for confirms: %s\n", amqp_error_string2(rc));
        return -1;
    }
    if (f.frame_type != AMQP_FRAME_METHOD)
        return 1;
    switch (f.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
        amqp_basic_ack_t *a = f.payload.method.decoded;
        settle(p, a->delivery_tag, a->multiple, 1);
        return 1;
    }
    case AMQP_BASIC_NACK_METHOD: {
        amqp_basic_nack_t *n = f.payload.method.decoded;
        settle(p, n->delivery_tag, n->multiple, 2);
        return 1;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        amqp_message_t m;
        amqp_rpc_reply_t r = amqp_read_message(p->conn, f.channel, &m, 0);

        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            fprintf(stderr, TOOL ": reading a returned message failed\n");
            return -1;
        }
        amqp_destroy_message(&m);
        p->returned++;
        return 1;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        amqp_channel_close_t *m = f.payload.method.decoded;
        fprintf(stderr, TOOL ": channel closed by the broker: %u %.*s\n", m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    case AMQP_CONNECTION_CLOSE_METHOD: {
        amqp_connection_close_t *m = f.payload.method.decoded;
        fprintf(stderr, TOOL ": connection closed by the broker: %u %.*s\n", m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        return -1;
    }
    default:
        return 1;
    }
}

/* Reads a whole file into memory. Returns 0 or -1 (printed). */
static int slurp(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 16;
    size_t n = 0;
    char *b = NULL;

    if (f == NULL) {
        fprintf(stderr, TOOL ": %s: %s\n", path, RQ_STRERR(errno));
        return -1;
    }
    b = malloc(cap);
    while (b != NULL) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (nb == NULL) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    if (b == NULL || ferror(f)) {
        fprintf(stderr, TOOL ": %s: read failed\n", path);
        free(b);
        fclose(f);
        return -1;
    }
    fclose(f);
    *buf = b;
    *len = n;
    return 0;
}

static double now_s(void)
{
    return (double)rq_mono_ns() / 1e9;
}

/* What a publish run works through: the raw file, the count, the id prefix, the clock. */
typedef struct run {
    char *file; /* --raw-file's contents (heap), or NULL */
    size_t file_len, file_off;
    long long count;
    const char *prefix;
    double t0, deadline;
} run_t;

/* One message being built. */
typedef struct tool_msg {
    rq_wire_out_t w;
    amqp_bytes_t body;
    char id[512];
    char corr[300];
    char *json_body; /* heap (the JSON body), or NULL */
} tool_msg_t;

/* Declares the topology (--declare), reads --raw-file and settles the count and the id
 * prefix. Returns 0, or -1 (printed). */
static int publish_setup(const opts_t *o, amqp_connection_state_t conn, const rq_config_t *cfg,
                         run_t *r)
{
    r->count = o->count;
    r->prefix = o->id_prefix;
    if (o->declare) {
        char err[512];

        if (rq_amqp_declare_topology(conn, &cfg->rabbitmq, err, sizeof(err)) < 0) {
            fprintf(stderr, TOOL ": %s\n", err);
            return -1;
        }
    }
    if (o->raw_file != NULL) {
        long long lines = 0;

        if (slurp(o->raw_file, &r->file, &r->file_len) < 0)
            return -1;
        for (size_t i = 0; i < r->file_len; i++)
            lines += r->file[i] == '\n';
        if (r->file_len > 0 && r->file[r->file_len - 1] != '\n')
            lines++;
        if (r->count < 0 || r->count > lines)
            r->count = lines;
        if (r->prefix == NULL)
            r->prefix = o->raw_file;
    }
    if (r->prefix == NULL)
        r->prefix = "msg";
    if (r->count < 0)
        r->count = 1;
    return 0;
}

/* Allocates the confirm bookkeeping for r->count messages, selects confirm mode and makes the
 * burst buffer. Returns 0, or -1 (printed). */
static int publish_open(pub_t *p, const opts_t *o, const rq_config_t *cfg, const run_t *r)
{
    p->state = calloc((size_t)r->count + 1, 1);
    if (p->state == NULL) {
        fprintf(stderr, TOOL ": out of memory\n");
        return -1;
    }
    amqp_confirm_select(p->conn, RQ_AMQP_CHANNEL);
    if (check(p->conn, "confirm.select") < 0)
        return -1;
    /* The broker's limit is measured with the same burst writes as the producer's. */
    p->buf = rq_pubbuf_new(p->conn, !cfg->rabbitmq.tls,
                           o->timeout < 3600 ? (int)(o->timeout * 1000) : 3600000);
    if (p->buf == NULL) {
        fprintf(stderr, TOOL ": out of memory\n");
        return -1;
    }
    return 0;
}

/* Before message k: drains the confirms already there every 256 messages, keeps at most
 * --window unconfirmed, and keeps to --rate. Returns 0, or -1 (printed). */
static int publish_pace(pub_t *p, const opts_t *o, const run_t *r, long long k)
{
    int rc;

    if (k % 256 == 0 && k > 0) {
        while ((rc = read_confirm(p, 0)) > 0)
            ;
        if (rc < 0)
            return -1;
    }
    while ((long long)(p->published - p->settled) >= o->window) {
        if (now_s() > r->deadline) {
            fprintf(stderr, TOOL ": timed out waiting for confirms\n");
            return -1;
        }
        if (read_confirm(p, 100) < 0)
            return -1;
    }
    if (o->rate > 0) {
        double due = r->t0 + (double)k / o->rate;
        double now = now_s();

        if (due > now) {
            if (rq_pubbuf_flush(p->buf) != AMQP_STATUS_OK) {
                fprintf(stderr, TOOL ": publish: the connection failed\n");
                return -1;
            }
            rq_sleep_interruptible(due - now, NULL);
        }
    }
    return 0;
}

/* The API-style JSON body of message i into m (m->json_body, heap). Returns 0, or -1
 * (printed). */
static int json_message(const opts_t *o, const run_t *r, long long i, int64_t wall, tool_msg_t *m)
{
    char ts[RQ_ISO8601_LEN + 1];
    char text[600];
    json_t *obj;

    snprintf(m->id, sizeof(m->id), "%s-%lld", r->prefix, i);
    snprintf(text, sizeof(text), "%s message %lld", r->prefix, i);
    obj = json_object();
    json_object_set_new(obj, "id", json_string(m->id));
    if (o->payload_object)
        json_object_set_new(obj, "payload",
                            json_pack("{s:I,s:s}", "seq", (json_int_t)i, "text", text));
    else
        json_object_set_new(obj, "payload", json_string(text));
    if (o->processing_time >= 0)
        json_object_set_new(obj, "processing_time", json_real(o->processing_time));
    if (o->fail_times >= 0)
        json_object_set_new(obj, "fail_times", json_integer(o->fail_times));
    json_object_set_new(obj, "timestamp", json_string(rq_iso8601(wall, ts)));
    json_object_set_new(obj, "source", json_string("tool"));
    m->json_body = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (m->json_body == NULL) {
        fprintf(stderr, TOOL ": out of memory\n");
        return -1;
    }
    m->body = amqp_cstring_bytes(m->json_body);
    m->w.content_type = "application/json";
    return 0;
}

/* The correlation id of message i (--correlation-id X: X for one message, X-<i> for
 * several; with --reply-to and no X a UUID) into m, or none. */
static void message_correlation(const opts_t *o, const run_t *r, long long i, tool_msg_t *m)
{
    m->w.reply_to = o->reply_to;
    if (o->reply_to == NULL && o->correlation_id == NULL)
        return;
    if (o->correlation_id == NULL)
        rq_uuid(m->corr);
    else if (r->count == 1)
        snprintf(m->corr, sizeof(m->corr), "%s", o->correlation_id);
    else
        snprintf(m->corr, sizeof(m->corr), "%s-%lld", o->correlation_id, i);
    m->w.correlation_id = m->corr;
}

/* Builds message i (k-th of the run) published at wall: its body, id and properties (wire.h).
 * Returns 0, or -1 (printed). */
static int build_message(const opts_t *o, run_t *r, long long i, int64_t wall, tool_msg_t *m)
{
    memset(&m->w, 0, sizeof(m->w));
    m->json_body = NULL;
    m->w.transient = o->transient;
    m->w.published_ms = wall;
    m->w.app_id = TOOL;
    m->w.source = o->raw_file != NULL ? RQ_WIRE_SOURCE_TAIL : "tool";
    if (o->raw_file != NULL) {
        const char *nl = memchr(r->file + r->file_off, '\n', r->file_len - r->file_off);
        size_t len =
            nl != NULL ? (size_t)(nl - (r->file + r->file_off)) : r->file_len - r->file_off;

        snprintf(m->id, sizeof(m->id), "%s:%zu", r->prefix, r->file_off);
        m->body.bytes = r->file + r->file_off;
        m->body.len = len;
        m->w.has_offset = 1;
        m->w.offset = (int64_t)r->file_off;
        m->w.content_type = "application/octet-stream";
        r->file_off += len + 1;
    } else if (o->body != NULL) {
        snprintf(m->id, sizeof(m->id), "%s-%lld", r->prefix, i);
        m->body = amqp_cstring_bytes(o->body);
        if (strcmp(o->content_type, "none") != 0)
            m->w.content_type = o->content_type;
    } else if (json_message(o, r, i, wall, m) < 0) {
        return -1;
    }
    m->w.message_id = m->id;
    message_correlation(o, r, i, m);
    return 0;
}

/* Waits for the confirms of everything published, prints the summary and returns the exit
 * status (0: every message confirmed, 1 otherwise). */
static int publish_finish(pub_t *p, const opts_t *o, const run_t *r)
{
    double elapsed;

    while (p->settled < p->published) {
        if (now_s() > r->deadline) {
            fprintf(stderr, TOOL ": timed out waiting for confirms (%llu of %llu)\n",
                    (unsigned long long)p->settled, (unsigned long long)p->published);
            return 1;
        }
        if (read_confirm(p, 100) < 0)
            return 1;
    }
    /* a basic.return comes before the ack of its message: all are in by now */
    elapsed = now_s() - r->t0;
    if (!o->quiet)
        fprintf(stderr,
                TOOL ": published %llu to %s: %llu confirmed, %llu nacked, %llu returned in "
                     "%.3f s (%.0f msg/s)\n",
                (unsigned long long)p->published, o->queue,
                (unsigned long long)(p->settled - p->nacked), (unsigned long long)p->nacked,
                (unsigned long long)p->returned, elapsed,
                elapsed > 0 ? (double)p->published / elapsed : 0.0);
    printf("published=%llu confirmed=%llu nacked=%llu returned=%llu seconds=%.3f rate=%.0f\n",
           (unsigned long long)p->published, (unsigned long long)(p->settled - p->nacked),
           (unsigned long long)p->nacked, (unsigned long long)p->returned, elapsed,
           elapsed > 0 ? (double)p->published / elapsed : 0.0);
    if (p->returned > 0)
        fprintf(stderr, TOOL ": %llu messages were unroutable (does queue %s exist?)\n",
                (unsigned long long)p->returned, o->queue);
    return (p->nacked == 0 && p->returned == 0) ? 0 : 1;
}

static int cmd_publish(const opts_t *o, amqp_connection_state_t conn, const rq_config_t *cfg)
{
    pub_t p;
    run_t r;
    int rc = 1;

    memset(&p, 0, sizeof(p));
    memset(&r, 0, sizeof(r));
    p.conn = conn;
    p.low = 1;
    if (publish_setup(o, conn, cfg, &r) < 0 || publish_open(&p, o, cfg, &r) < 0)
        goto out;
    r.t0 = now_s();
    r.deadline = r.t0 + o->timeout;
    for (long long k = 0; k < r.count; k++) {
        amqp_basic_properties_t props;
        amqp_table_entry_t hdr[RQ_WIRE_OUT_HEADERS_MAX];
        tool_msg_t m;
        int64_t wall = rq_wall_ms();
        int st;

        if (publish_pace(&p, o, &r, k) < 0 || build_message(o, &r, o->start + k, wall, &m) < 0)
            goto out;
        rq_wire_encode(&m.w, &props, hdr);
        st = rq_pubbuf_add(p.buf, RQ_AMQP_CHANNEL, amqp_empty_bytes, amqp_cstring_bytes(o->queue),
                           1, &props, m.body);
        free(m.json_body);
        if (st != AMQP_STATUS_OK) {
            fprintf(stderr, TOOL ": publish: %s\n", amqp_error_string2(st));
            goto out;
        }
        p.published++;
    }
    rc = publish_finish(&p, o, &r);
out:
    rq_pubbuf_free(p.buf);
    free(p.state);
    free(r.file);
    return rc;
}

/* ---- get, depth, purge, declare, delete ------------------------------------------------- */

static void put_bytes(amqp_bytes_t b)
{
    if (b.len > 0)
        fwrite(b.bytes, 1, b.len, stdout);
}

/* One message as a JSON line (--format json). */
static void put_json(const amqp_message_t *m)
{
    const amqp_basic_properties_t *pr = &m->properties;
    json_t *o = json_object(), *h = json_object();
    char *hex = malloc(m->body.len * 2 + 1), *t;

    for (size_t i = 0; hex != NULL && i < m->body.len; i++)
        sprintf(hex + 2 * i, "%02x", ((const unsigned char *)m->body.bytes)[i]);
    if (hex != NULL)
        hex[m->body.len * 2] = '\0';
    json_object_set_new(o, "body_hex", json_string(hex ? hex : ""));
    free(hex);
    if (pr->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG)
        json_object_set_new(o, "content_type",
                            json_stringn(pr->content_type.bytes, pr->content_type.len));
    if (pr->_flags & AMQP_BASIC_MESSAGE_ID_FLAG)
        json_object_set_new(o, "message_id",
                            json_stringn(pr->message_id.bytes, pr->message_id.len));
    if (pr->_flags & AMQP_BASIC_PRIORITY_FLAG)
        json_object_set_new(o, "priority", json_integer(pr->priority));
    if (pr->_flags & AMQP_BASIC_EXPIRATION_FLAG)
        json_object_set_new(o, "expiration",
                            json_stringn(pr->expiration.bytes, pr->expiration.len));
    for (int i = 0; (pr->_flags & AMQP_BASIC_HEADERS_FLAG) && i < pr->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &pr->headers.entries[i];
        char key[256];
        int64_t v;
        snprintf(key, sizeof(key), "%.*s", (int)e->key.len, (const char *)e->key.bytes);
        if (e->value.kind == AMQP_FIELD_KIND_UTF8 || e->value.kind == AMQP_FIELD_KIND_BYTES)
            json_object_set_new(h, key,
                                json_stringn(e->value.value.bytes.bytes, e->value.value.bytes.len));
        else if (rq_wire_field_i64(&e->value, &v, NULL) == 0)
            json_object_set_new(h, key, json_integer(v));
        else
            json_object_set_new(h, key, json_string(rq_wire_kind_name(e->value.kind)));
    }
    json_object_set_new(o, "headers", h);
    t = json_dumps(o, JSON_COMPACT);
    if (t != NULL)
        puts(t);
    free(t);
    json_decref(o);
}

static int cmd_get(const opts_t *o, amqp_connection_state_t conn)
{
    long long got = 0;
    double deadline = now_s() + o->wait;
    int props = o->format != NULL && strcmp(o->format, "props") == 0;
    int as_json = o->format != NULL && strcmp(o->format, "json") == 0;

    while (o->count < 0 || got < o->count) {
        amqp_rpc_reply_t r;
        amqp_message_t m;
        amqp_basic_get_ok_t *ok;

        amqp_maybe_release_buffers(conn);
        r = amqp_basic_get(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(o->queue), /*no_ack=*/0);
        if (check(conn, "basic.get") < 0)
            return 1;
        if (r.reply.id == AMQP_BASIC_GET_EMPTY_METHOD) {
            if (o->count < 0 || now_s() >= deadline)
                break;
            rq_sleep_interruptible(0.05, NULL);
            continue;
        }
        ok = r.reply.decoded;
        r = amqp_read_message(conn, RQ_AMQP_CHANNEL, &m, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            char err[512];
            rq_amqp_check_reply(r, "reading a message", err, sizeof(err));
            fprintf(stderr, TOOL ": %s\n", err);
            return 1;
        }
        if (as_json) {
            put_json(&m);
        } else if (props) {
            if (m.properties._flags & AMQP_BASIC_CORRELATION_ID_FLAG)
                put_bytes(m.properties.correlation_id);
            putchar('\t');
            if (m.properties._flags & AMQP_BASIC_MESSAGE_ID_FLAG)
                put_bytes(m.properties.message_id);
            putchar('\t');
        }
        if (!as_json) {
            put_bytes(m.body);
            putchar('\n');
        }
        amqp_destroy_message(&m);
        if (amqp_basic_ack(conn, RQ_AMQP_CHANNEL, ok->delivery_tag, /*multiple=*/0) !=
            AMQP_STATUS_OK) {
            fprintf(stderr, TOOL ": basic.ack failed\n");
            return 1;
        }
        got++;
    }
    fflush(stdout);
    if (!o->quiet)
        fprintf(stderr, TOOL ": got %lld messages from %s\n", got, o->queue);
    return (o->count >= 0 && got < o->count) ? 1 : 0;
}

static int cmd_depth(const opts_t *o, amqp_connection_state_t conn)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(
        conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(o->queue), /*passive=*/1, /*durable=*/0,
        /*exclusive=*/0, /*auto_delete=*/0, amqp_empty_table);

    if (check(conn, "queue.declare (passive)") < 0 || ok == NULL)
        return 1;
    if (o->consumers)
        printf("%u %u\n", ok->message_count, ok->consumer_count);
    else
        printf("%u\n", ok->message_count);
    return 0;
}

static int cmd_purge(const opts_t *o, amqp_connection_state_t conn)
{
    amqp_queue_purge_ok_t *ok =
        amqp_queue_purge(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(o->queue));

    if (check(conn, "queue.purge") < 0 || ok == NULL)
        return 1;
    printf("%u\n", ok->message_count);
    return 0;
}

static int cmd_declare(const opts_t *o, amqp_connection_state_t conn, const rq_config_t *cfg)
{
    char err[512];

    if (o->topology) {
        if (rq_amqp_declare_topology(conn, &cfg->rabbitmq, err, sizeof(err)) < 0) {
            fprintf(stderr, TOOL ": %s\n", err);
            return 1;
        }
        return 0;
    }
    amqp_table_entry_t arg;
    amqp_table_t args = amqp_empty_table;
    if (o->max_priority != NULL) {
        arg = rq_amqp_i64_entry("x-max-priority", atoll(o->max_priority));
        args.num_entries = 1;
        args.entries = &arg;
    }
    amqp_queue_declare(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(o->queue), /*passive=*/0,
                       /*durable=*/!o->transient, /*exclusive=*/0, /*auto_delete=*/0, args);
    return check(conn, "queue.declare") < 0 ? 1 : 0;
}

static int cmd_delete(const opts_t *o, amqp_connection_state_t conn)
{
    amqp_queue_delete(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(o->queue), 0, 0);
    return check(conn, "queue.delete") < 0 ? 1 : 0;
}

/* ---- main ------------------------------------------------------------------------------- */

static int parse_ll(const char *opt, const char *s, long long lo, long long *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *s == '\0' || *end != '\0' || v < lo) {
        fprintf(stderr, TOOL ": %s: expected an integer >= %lld, got \"%s\"\n", opt, lo, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_d(const char *opt, const char *s, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *s == '\0' || *end != '\0' || !(v >= 0)) {
        fprintf(stderr, TOOL ": %s: expected a number >= 0, got \"%s\"\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* Where to connect: the environment's settings, overridden by options. */
typedef struct conn_args {
    const char *host, *port, *user, *pass, *vhost;
} conn_args_t;

/* The defaults of every option, and the environment's connection settings. */
static void opts_defaults(opts_t *o, conn_args_t *c)
{
    memset(o, 0, sizeof(*o));
    o->count = -1;
    o->json = 1;
    o->content_type = "application/json";
    o->processing_time = -1;
    o->fail_times = -1;
    o->window = 10000;
    o->timeout = 120;
    o->queue_type = NULL;
    c->host = getenv("RABBITMQ_HOST") != NULL ? getenv("RABBITMQ_HOST") : "127.0.0.1";
    c->port = getenv("RABBITMQ_PORT");
    c->user = getenv("RABBITMQ_USER");
    c->pass = getenv("RABBITMQ_PASS");
    c->vhost = getenv("RABBITMQ_VHOST");
}

/* An option without a value. Returns 1 when `a` is one (set in *o), 0 when not, 3 for --help
 * (usage printed). */
static int parse_flag(opts_t *o, const char *a)
{
    static const struct {
        const char *name;
        size_t off;
    } flags[] = {
        {"--json", offsetof(opts_t, json)},
        {"--payload-object", offsetof(opts_t, payload_object)},
        {"--transient", offsetof(opts_t, transient)},
        {"--declare", offsetof(opts_t, declare)},
        {"--consumers", offsetof(opts_t, consumers)},
        {"--topology", offsetof(opts_t, topology)},
        {"--quiet", offsetof(opts_t, quiet)},
    };

    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (strcmp(a, flags[i].name) == 0) {
            *(int *)(void *)((char *)o + flags[i].off) = 1;
            return 1;
        }
    }
    if (strcmp(a, "--help") == 0) {
        usage(stdout);
        return 3;
    }
    return 0;
}

/* A numeric option. Returns 1 when `a` is one (parsed into *o), 0 when not, -1 when its
 * value is bad (printed). */
static int parse_number(opts_t *o, const char *a, const char *v)
{
    static const struct {
        const char *name;
        size_t off;
        long long lo; /* integers: the least value; -1: a number >= 0 (double) */
    } nums[] = {
        {"--count", offsetof(opts_t, count), 0},
        {"--start", offsetof(opts_t, start), 0},
        {"--window", offsetof(opts_t, window), 1},
        {"--fail-times", offsetof(opts_t, fail_times), 0},
        {"--processing-time", offsetof(opts_t, processing_time), -1},
        {"--timeout", offsetof(opts_t, timeout), -1},
        {"--rate", offsetof(opts_t, rate), -1},
        {"--wait", offsetof(opts_t, wait), -1},
    };

    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        void *field = (char *)o + nums[i].off;

        if (strcmp(a, nums[i].name) != 0)
            continue;
        if (nums[i].lo < 0)
            return parse_d(a, v, (double *)field) < 0 ? -1 : 1;
        return parse_ll(a, v, nums[i].lo, (long long *)field) < 0 ? -1 : 1;
    }
    return 0;
}

/* An option with a value v. Returns 0, or 2 (usage error, printed). */
static int parse_value(opts_t *o, conn_args_t *c, const char *a, const char *v)
{
    const struct {
        const char *name;
        const char **dst;
    } strs[] = {
        {"--host", &c->host},
        {"--port", &c->port},
        {"--user", &c->user},
        {"--pass", &c->pass},
        {"--vhost", &c->vhost},
        {"--queue", &o->queue},
        {"--raw-file", &o->raw_file},
        {"--body", &o->body},
        {"--content-type", &o->content_type},
        {"--reply-to", &o->reply_to},
        {"--correlation-id", &o->correlation_id},
        {"--id-prefix", &o->id_prefix},
        {"--queue-type", &o->queue_type},
    };
    int n;

    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        if (strcmp(a, strs[i].name) == 0) {
            *strs[i].dst = v;
            return 0;
        }
    }
    if ((n = parse_number(o, a, v)) != 0)
        return n < 0 ? 2 : 0;
    if (strcmp(a, "--format") == 0) {
        if (strcmp(v, "body") != 0 && strcmp(v, "props") != 0 && strcmp(v, "json") != 0) {
            fprintf(stderr, TOOL ": --format: body, props or json\n");
            return 2;
        }
        o->format = v;
        return 0;
    }
    if (strcmp(a, "--max-priority") == 0) {
        o->max_priority = v;
        return 0;
    }
    fprintf(stderr, TOOL ": unknown option: %s\n", a);
    return 2;
}

/* Parses argv[2..argc). Returns -1 to go on, else the exit status (0 after --help, 2 on a
 * usage error, printed). */
static int parse_args(int argc, char **argv, opts_t *o, conn_args_t *c)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int f = parse_flag(o, a), rc;

        if (f == 3)
            return 0;
        if (f)
            continue;
        if (v == NULL) {
            fprintf(stderr, TOOL ": unknown option or missing value: %s\n", a);
            return 2;
        }
        i++;
        if ((rc = parse_value(o, c, a, v)) != 0)
            return rc;
    }
    return -1;
}

/* Checks the options together. Returns 0, or 2 (printed). */
static int check_args(const opts_t *o)
{
    static const char *const cmds[] = {"publish", "get", "depth", "purge", "declare", "delete"};
    int known = 0;

    if (o->queue == NULL || o->queue[0] == '\0') {
        fprintf(stderr, TOOL ": --queue is required\n");
        return 2;
    }
    if (o->raw_file != NULL && o->body != NULL) {
        fprintf(stderr, TOOL ": --raw-file and --body exclude each other\n");
        return 2;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        known |= strcmp(o->cmd, cmds[i]) == 0;
    if (!known) {
        fprintf(stderr, TOOL ": unknown command %s\n", o->cmd);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Runs command o->cmd on an open connection. Returns the exit status. */
static int run_command(const opts_t *o, amqp_connection_state_t conn, const rq_config_t *cfg)
{
    if (strcmp(o->cmd, "publish") == 0)
        return cmd_publish(o, conn, cfg);
    if (strcmp(o->cmd, "get") == 0)
        return cmd_get(o, conn);
    if (strcmp(o->cmd, "depth") == 0)
        return cmd_depth(o, conn);
    if (strcmp(o->cmd, "purge") == 0)
        return cmd_purge(o, conn);
    if (strcmp(o->cmd, "declare") == 0)
        return cmd_declare(o, conn, cfg);
    return cmd_delete(o, conn);
}

int main(int argc, char **argv)
{
    opts_t o;
    conn_args_t c;
    rq_config_t cfg;
    amqp_connection_state_t conn = NULL;
    int rc = 1;

    opts_defaults(&o, &c);
    memset(&cfg, 0, sizeof(cfg));
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    o.cmd = argv[1];
    if ((rc = parse_args(argc, argv, &o, &c)) >= 0)
        return rc;
    if ((rc = check_args(&o)) != 0)
        return rc;
    rc = 1;
    if (connect_to(&o, c.host, c.port, c.user, c.pass, c.vhost, &cfg, &conn) == 0)
        rc = run_command(&o, conn, &cfg);
    rq_amqp_close(conn);
    rq_config_free(&cfg);
    return rc;
}
