/* rq_tail_dump - drains the request queue and prints every message as one TSV line, for
 * checking tailed lines (issue 3) byte for byte:
 *
 *   message_id  x-file  x-offset  x-source  content_type  delivery_mode  body-in-hex
 *
 * (a missing property or header prints as "-"). Messages are consumed and acknowledged:
 * the queue is emptied. Stops after --max N messages, or when none arrived for --idle S
 * seconds (default 3).
 *
 * Usage: rq_tail_dump [--max N] [--idle S] [--prefetch P]  > dump.tsv
 * The broker and queue come from the usual settings (RABBITMQ_HOST, RABBITMQ_PORT,
 * REQUEST_QUEUE, ...; see .env.example) in the environment.
 * Exit status: 0 done, 1 broker error, 2 usage error.
 */
#include <amqp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "amqp_conn.h"
#include "config.h"
#include "util.h"
#include "wire.h"

#define TOOL "rq_tail_dump"

static void put_field(amqp_bytes_t b, int present)
{
    if (!present) {
        fputs("-", stdout);
        return;
    }
    fwrite(b.bytes, 1, b.len, stdout);
}

static void put_header(const amqp_basic_properties_t *p, const char *key)
{
    const amqp_field_value_t *v = rq_amqp_header(p, key);

    if (v == NULL)
        fputs("-", stdout);
    else if (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES)
        fwrite(v->value.bytes.bytes, 1, v->value.bytes.len, stdout);
    else if (v->kind == AMQP_FIELD_KIND_I64)
        printf("%" PRId64, v->value.i64);
    else if (v->kind == AMQP_FIELD_KIND_U64)
        printf("%" PRIu64, v->value.u64);
    else
        fputs("?", stdout);
}

static void print_message(const amqp_message_t *m)
{
    const amqp_basic_properties_t *p = &m->properties;
    const unsigned char *b = m->body.bytes;

    put_field(p->message_id, (p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0);
    putchar('\t');
    put_header(p, RQ_WIRE_HDR_FILE);
    putchar('\t');
    put_header(p, RQ_WIRE_HDR_OFFSET);
    putchar('\t');
    put_header(p, RQ_WIRE_HDR_SOURCE);
    putchar('\t');
    put_field(p->content_type, (p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0);
    putchar('\t');
    if (p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG)
        printf("%u", (unsigned)p->delivery_mode);
    else
        putchar('-');
    putchar('\t');
    for (size_t i = 0; i < m->body.len; i++)
        printf("%02x", b[i]);
    putchar('\n');
}

int main(int argc, char **argv)
{
    rq_config_t cfg;
    rq_config_error_t cerr;
    amqp_connection_state_t conn = NULL;
    char err[512];
    long long max = -1, got = 0;
    double idle = 3;
    int prefetch = 1000, rc = 1;
    uint64_t last_tag = 0, unacked = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
            max = atoll(argv[++i]);
        } else if (strcmp(argv[i], "--idle") == 0 && i + 1 < argc) {
            idle = atof(argv[++i]);
        } else if (strcmp(argv[i], "--prefetch") == 0 && i + 1 < argc) {
            prefetch = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: " TOOL " [--max N] [--idle S] [--prefetch P] > dump.tsv\n");
            return 2;
        }
    }
    if (prefetch < 1 || prefetch > 65535 || idle <= 0) {
        fprintf(stderr, TOOL ": bad --prefetch or --idle\n");
        return 2;
    }
    if (rq_config_load(&cfg, RQ_SVC_ALL, NULL, &cerr) != 0) {
        fprintf(stderr, TOOL ": %s\n", cerr.text);
        return 2;
    }
    conn = rq_amqp_open(&cfg.rabbitmq, err, sizeof(err));
    if (conn == NULL) {
        fprintf(stderr, TOOL ": %s\n", err);
        goto out;
    }
    amqp_basic_qos(conn, RQ_AMQP_CHANNEL, /*prefetch_size=*/0, (uint16_t)prefetch, /*global=*/0);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "basic.qos", err, sizeof(err)) != 0)
        goto fail;
    amqp_basic_consume(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(cfg.rabbitmq.request_queue),
                       amqp_empty_bytes, /*no_local=*/0, /*no_ack=*/0, /*exclusive=*/0,
                       amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "basic.consume", err, sizeof(err)) != 0)
        goto fail;
    while (max < 0 || got < max) {
        struct timeval tv = {(time_t)idle, (suseconds_t)((idle - (double)(time_t)idle) * 1e6)};
        amqp_envelope_t env;
        amqp_rpc_reply_t r;

        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            break;
        if (rq_amqp_check_reply(r, "consume", err, sizeof(err)) != 0)
            goto fail;
        print_message(&env.message);
        last_tag = env.delivery_tag;
        amqp_destroy_envelope(&env);
        got++;
        if (++unacked >= (uint64_t)prefetch / 2) {
            amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_tag, /*multiple=*/1);
            unacked = 0;
        }
    }
    if (unacked > 0)
        amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_tag, /*multiple=*/1);
    fflush(stdout);
    fprintf(stderr, TOOL ": %lld messages from %s\n", got, cfg.rabbitmq.request_queue);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, TOOL ": %s\n", err);
out:
    rq_amqp_close(conn);
    rq_config_free(&cfg);
    return rc;
}
