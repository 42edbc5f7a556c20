/* rq_consume_rate.c - the broker's own consume rate, for the pull benchmark (issue 16).
 *
 *   rq_consume_rate QUEUE COUNT [PORT [PREFETCH [ACK_EVERY [TIMEOUT_S]]]]
 *
 * basic.consume on QUEUE (127.0.0.1:PORT, guest/guest) with basic.qos PREFETCH (default 1000),
 * manual acks sent every ACK_EVERY messages (default 100) with multiple=true, until COUNT
 * messages were received or TIMEOUT_S (default 120) passed. Prints one JSON line:
 * {"messages": n, "seconds": s, "rate": n/s} (the clock starts at the first delivery).
 * Exit status: 0 when COUNT arrived, 1 otherwise, 2 usage.
 */
#include <amqp.h>
#include <amqp_framing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqp_conn.h"
#include "config.h"
#include "util.h"

static int usage(void)
{
    fprintf(stderr, "usage: rq_consume_rate QUEUE COUNT [PORT [PREFETCH [ACK_EVERY "
                    "[TIMEOUT_S]]]]\n");
    return 2;
}

static amqp_connection_state_t open_conn(rq_config_t *cfg, const char *port)
{
    rq_config_error_t cerr;
    char err[512];
    amqp_connection_state_t conn;

    if (rq_config_defaults(cfg) < 0 ||
        rq_config_set(cfg, "RABBITMQ_HOST", "127.0.0.1", &cerr) < 0 ||
        rq_config_set(cfg, "RABBITMQ_PORT", port, &cerr) < 0) {
        fprintf(stderr, "rq_consume_rate: bad settings\n");
        return NULL;
    }
    conn = rq_amqp_open(&cfg->rabbitmq, err, sizeof(err));
    if (conn == NULL)
        fprintf(stderr, "rq_consume_rate: %s\n", err);
    return conn;
}

int main(int argc, char **argv)
{
    rq_config_t cfg;
    amqp_connection_state_t conn;
    long long count, got = 0, prefetch = 1000, every = 100, timeout_s = 120;
    uint64_t last_tag = 0, acked = 0;
    int64_t start = 0, deadline;
    char err[512];

    if (argc < 3)
        return usage();
    count = atoll(argv[2]);
    if (argc > 4)
        prefetch = atoll(argv[4]);
    if (argc > 5)
        every = atoll(argv[5]);
    if (argc > 6)
        timeout_s = atoll(argv[6]);
    if (count < 1 || prefetch < 1 || prefetch > 65535 || every < 1)
        return usage();
    if ((conn = open_conn(&cfg, argc > 3 ? argv[3] : "5672")) == NULL)
        return 1;
    amqp_basic_qos(conn, RQ_AMQP_CHANNEL, 0, (uint16_t)prefetch, 0);
    amqp_basic_consume(conn, RQ_AMQP_CHANNEL, amqp_cstring_bytes(argv[1]), amqp_empty_bytes, 0, 0,
                       0, amqp_empty_table);
    if (rq_amqp_check_reply(amqp_get_rpc_reply(conn), "basic.consume", err, sizeof(err)) < 0) {
        fprintf(stderr, "rq_consume_rate: %s\n", err);
        return 1;
    }
    deadline = rq_mono_ms() + timeout_s * 1000;
    while (got < count && rq_mono_ms() < deadline) {
        amqp_envelope_t env;
        struct timeval tv = {1, 0};
        amqp_maybe_release_buffers(conn);
        amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            continue;
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            break;
        if (got++ == 0)
            start = rq_mono_ns();
        last_tag = env.delivery_tag;
        amqp_destroy_envelope(&env);
        if (got % every == 0 || got == count) {
            amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_tag, 1);
            acked = last_tag;
        }
    }
    if (acked != last_tag)
        amqp_basic_ack(conn, RQ_AMQP_CHANNEL, last_tag, 1);
    double secs = got > 0 ? (double)(rq_mono_ns() - start) / 1e9 : 0;
    printf("{\"messages\": %lld, \"seconds\": %.3f, \"rate\": %.0f}\n", got, secs,
           secs > 0 ? (double)got / secs : 0.0);
    rq_amqp_close(conn);
    rq_config_free(&cfg);
    return got == count ? 0 : 1;
}
