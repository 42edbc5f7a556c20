/* Unit tests for common/amqp_nodes.c: RABBITMQ_ADDRESSES parsing, the order nodes are tried
 * in (sticky on success, the next one after a loss, shuffle a permutation), and
 * rq_amqp_open() over several refusing nodes (each one's reason in the error). Criterion
 * runs each test in its own process, so the per-process node state starts fresh. */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "amqp_conn.h"
#include "amqp_nodes.h"
#include "config.h"

TestSuite(amqp_nodes, .timeout = 30);

static int parse(const char *text, rq_amqp_node_t *out, char *err)
{
    return rq_amqp_nodes_parse(text, 5672, out, RQ_AMQP_MAX_NODES, err, 256);
}

Test(amqp_nodes, parses_hosts_ports_and_ipv6)
{
    rq_amqp_node_t n[RQ_AMQP_MAX_NODES];
    char err[256] = "", name[300];

    cr_assert_eq(parse("rabbit-1:5673, rabbit-2 ,10.0.0.3:1,[::1]:5674,[fe80::1]", n, err), 5, "%s",
                 err);
    cr_expect_str_eq(n[0].host, "rabbit-1");
    cr_expect_eq(n[0].port, 5673);
    cr_expect_str_eq(n[1].host, "rabbit-2");
    cr_expect_eq(n[1].port, 5672, "a port left out is the default");
    cr_expect_str_eq(n[2].host, "10.0.0.3");
    cr_expect_eq(n[2].port, 1);
    cr_expect_str_eq(n[3].host, "::1");
    cr_expect_eq(n[3].port, 5674);
    cr_expect_str_eq(n[4].host, "fe80::1");
    cr_expect_eq(n[4].port, 5672);
    rq_amqp_node_name(&n[3], name, sizeof(name));
    cr_expect_str_eq(name, "[::1]:5674");
    rq_amqp_node_name(&n[0], name, sizeof(name));
    cr_expect_str_eq(name, "rabbit-1:5673");
    cr_assert_eq(parse("one", n, err), 1, "%s", err);
}

Test(amqp_nodes, refuses_bad_lists_with_a_reason)
{
    static const char *const bad[] = {
        "",        ",",        "a,,b",     "a,",    " , a",  "a:",     "a:0",
        "a:65536", "a:12x",    "a:123456", ":5672", "[::1",  "[::1]x", "[]:5672",
        "::1",     "a:5672:1", "a b:1",    "a/b",   "[a b]", "[::1]:",
    };
    rq_amqp_node_t n[RQ_AMQP_MAX_NODES];
    char err[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        cr_expect_eq(parse(bad[i], n, err), -1, "\"%s\" accepted", bad[i]);
        cr_expect(strstr(err, "RABBITMQ_ADDRESSES") != NULL, "\"%s\": reason \"%s\"", bad[i], err);
    }
}

Test(amqp_nodes, refuses_more_than_the_maximum_and_overlong_hosts)
{
    rq_amqp_node_t n[RQ_AMQP_MAX_NODES];
    char text[2048] = "", err[256], host[300];

    for (int i = 0; i <= RQ_AMQP_MAX_NODES; i++)
        strcat(text, i ? ",h" : "h");
    cr_expect_eq(parse(text, n, err), -1);
    cr_expect(strstr(err, "more than") != NULL, "%s", err);
    memset(host, 'x', RQ_AMQP_NODE_HOST_MAX + 1);
    host[RQ_AMQP_NODE_HOST_MAX + 1] = '\0';
    cr_expect_eq(parse(host, n, err), -1);
    host[RQ_AMQP_NODE_HOST_MAX] = '\0';
    cr_expect_eq(parse(host, n, err), 1, "a host of the maximum length: %s", err);
}

static void expect_order(int n, const int *want)
{
    int order[RQ_AMQP_MAX_NODES];

    rq_amqp_nodes_plan(n, /*shuffle=*/0, order);
    for (int k = 0; k < n; k++)
        cr_expect_eq(order[k], want[k], "position %d: node %d, expected %d", k, order[k], want[k]);
}

Test(amqp_nodes, in_order_sticks_to_the_working_node_and_moves_on_after_a_loss)
{
    expect_order(3, (const int[]){0, 1, 2});
    rq_amqp_nodes_result(3, 0, 1); /* connected to node 0 */
    expect_order(3, (const int[]){0, 1, 2});
    /* node 0 is killed: the reconnect plan still starts at 0 (refused at once), node 1 takes */
    rq_amqp_nodes_result(3, 1, 1);
    expect_order(3, (const int[]){1, 2, 0});
    /* node 1 accepts but refuses the topology: the next plan starts after it */
    rq_amqp_nodes_result(3, 1, 0);
    expect_order(3, (const int[]){2, 0, 1});
    /* a refusal of a node that is not the preferred one changes nothing */
    rq_amqp_nodes_result(3, 0, 0);
    expect_order(3, (const int[]){2, 0, 1});
    /* wraps around */
    rq_amqp_nodes_result(3, 2, 0);
    expect_order(3, (const int[]){0, 1, 2});
}

Test(amqp_nodes, shuffle_is_a_permutation_kept_for_the_process)
{
    int first[RQ_AMQP_MAX_NODES], again[RQ_AMQP_MAX_NODES], seen[RQ_AMQP_MAX_NODES] = {0};

    rq_amqp_nodes_plan(RQ_AMQP_MAX_NODES, /*shuffle=*/1, first);
    for (int k = 0; k < RQ_AMQP_MAX_NODES; k++) {
        cr_assert(first[k] >= 0 && first[k] < RQ_AMQP_MAX_NODES);
        seen[first[k]]++;
    }
    for (int i = 0; i < RQ_AMQP_MAX_NODES; i++)
        cr_expect_eq(seen[i], 1, "node %d appears %d times", i, seen[i]);
    rq_amqp_nodes_plan(RQ_AMQP_MAX_NODES, /*shuffle=*/1, again);
    cr_expect_arr_eq(first, again, sizeof(first), "the order is drawn once per process");
    /* a success on the third node of the order: the plan starts there, same cycle */
    rq_amqp_nodes_result(RQ_AMQP_MAX_NODES, first[2], 1);
    rq_amqp_nodes_plan(RQ_AMQP_MAX_NODES, 1, again);
    for (int k = 0; k < RQ_AMQP_MAX_NODES; k++)
        cr_expect_eq(again[k], first[(k + 2) % RQ_AMQP_MAX_NODES]);
}

/* A port nobody listens on (bound, then closed). */
static int closed_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

Test(amqp_nodes, open_tries_every_node_and_reports_each)
{
    rq_config_t c;
    rq_config_error_t cerr;
    char text[128], err[1024] = "", inuse[300];
    int p1 = closed_port(), p2 = closed_port();

    snprintf(text, sizeof(text), "127.0.0.1:%d,127.0.0.1:%d", p1, p2);
    cr_assert_eq(setenv("RABBITMQ_ADDRESSES", text, 1), 0);
    cr_assert_eq(setenv("RABBITMQ_CONNECT_TIMEOUT_MS", "1000", 1), 0);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &cerr), 0, "%s", cerr.text);
    cr_expect_null(rq_amqp_open(&c.rabbitmq, err, sizeof(err)));
    snprintf(text, sizeof(text), "node 127.0.0.1:%d: cannot connect", p1);
    cr_expect(strstr(err, text) != NULL, "%s", err);
    snprintf(text, sizeof(text), "; node 127.0.0.1:%d: cannot connect", p2);
    cr_expect(strstr(err, text) != NULL, "%s", err);
    cr_expect_str_eq(rq_amqp_node_in_use(inuse, sizeof(inuse)), "");
    rq_config_free(&c);
}

Test(amqp_nodes, a_bad_address_list_is_a_config_error)
{
    rq_config_t c;
    rq_config_error_t cerr;

    cr_assert_eq(setenv("RABBITMQ_ADDRESSES", "rabbit-1:5672,,rabbit-2", 1), 0);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &cerr), -1);
    cr_expect(strstr(cerr.text, "RABBITMQ_ADDRESSES") != NULL, "%s", cerr.text);
    cr_assert_eq(setenv("RABBITMQ_ADDRESSES", "", 1), 0);
    cr_assert_eq(setenv("RABBITMQ_ADDRESS_ORDER", "random", 1), 0);
    cr_expect_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &cerr), -1, "only in-order | shuffle");
    cr_assert_eq(setenv("RABBITMQ_ADDRESS_ORDER", "shuffle", 1), 0);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &cerr), 0, "%s", cerr.text);
    cr_expect_eq(c.rabbitmq.address_order_id, RQ_ADDRESS_SHUFFLE);
    rq_config_free(&c);
}

/* A node that accepts TCP but never speaks AMQP (the kernel completes the handshake: never
 * accept()ed). */
static int frozen_node(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert(fd >= 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(fd, 8), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

/* RABBITMQ_CONNECT_TIMEOUT_MS bounds the whole attempt, not each node (a caller that cut it
 * to a job's deadline must get its thread back by then), and a node that failed is not
 * tried first again: the next attempt starts at the node after it. */
Test(amqp_nodes, one_deadline_for_all_nodes_and_the_next_attempt_starts_after_a_frozen_one)
{
    rq_config_t c;
    rq_config_error_t cerr;
    char text[128], err[1024] = "";
    int p1, p2, f1 = frozen_node(&p1), f2 = frozen_node(&p2), order[2];
    struct timespec t0, t1;
    double secs;

    snprintf(text, sizeof(text), "127.0.0.1:%d,127.0.0.1:%d", p1, p2);
    cr_assert_eq(setenv("RABBITMQ_ADDRESSES", text, 1), 0);
    cr_assert_eq(setenv("RABBITMQ_CONNECT_TIMEOUT_MS", "1000", 1), 0);
    cr_assert_eq(rq_config_load(&c, RQ_SVC_ALL, NULL, &cerr), 0, "%s", cerr.text);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_expect_null(rq_amqp_open(&c.rabbitmq, err, sizeof(err)));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_expect(secs < 1.6, "two frozen nodes took %.2f s with a 1 s deadline (%s)", secs, err);
    rq_amqp_nodes_plan(2, /*shuffle=*/0, order);
    cr_expect_eq(order[0], 1, "the next attempt starts at node %d, not after the frozen one",
                 order[0]);
    rq_config_free(&c);
    close(f1);
    close(f2);
}
