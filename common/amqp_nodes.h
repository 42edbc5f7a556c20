/* amqp_nodes.h - the broker nodes a service may connect to, and which one to try first.
 *
 * RABBITMQ_ADDRESSES lists a cluster's nodes, "host[:port],host[:port],..." (a port left
 * out is RABBITMQ_PORT; an IPv6 address in brackets, "[::1]:5672"); unset or empty, the one
 * node is RABBITMQ_HOST:RABBITMQ_PORT. RABBITMQ_ADDRESS_ORDER chooses the order of the
 * first connection: "in-order" (the list's order) or "shuffle" (a random order drawn once
 * per process, so replicas spread over the nodes). After that, rq_amqp_open() tries the
 * node of its last success first (a connection stays on a node while it works), then the
 * ones after it in that order, wrapping around: when a node is lost (refused, timed out,
 * or it accepted the connection but refused the topology), the next attempt goes on to
 * the next node, and so on around the list, each attempt bounded by
 * RABBITMQ_CONNECT_TIMEOUT_MS.
 *
 * State (the preferred node, the order, the node in use) is per process and thread-safe. */
#ifndef RQ_AMQP_NODES_H
#define RQ_AMQP_NODES_H

#include <stddef.h>

#include "config.h"
#include "metrics.h"

#define RQ_AMQP_MAX_NODES 16
#define RQ_AMQP_NODE_HOST_MAX 255

typedef struct rq_amqp_node {
    char host[RQ_AMQP_NODE_HOST_MAX + 1]; /* a name or an address, without brackets */
    int port;
} rq_amqp_node_t;

/* Parses a RABBITMQ_ADDRESSES value into out[0..max): comma-separated entries (spaces
 * around them ignored), each "host", "host:port", "[v6]" or "[v6]:port" with a port of
 * 1..65535 (def_port when left out). Returns the number of nodes (>= 1), or -1 with the
 * reason in err for an empty entry, a bad port, an unclosed bracket, a host over
 * RQ_AMQP_NODE_HOST_MAX bytes, more than max entries, or an empty list. */
int rq_amqp_nodes_parse(const char *text, int def_port, rq_amqp_node_t *out, int max, char *err,
                        size_t errlen);

/* The nodes of cfg (RABBITMQ_ADDRESSES, else RABBITMQ_HOST:RABBITMQ_PORT) into
 * out[0..RQ_AMQP_MAX_NODES). Returns their number, or -1 with the reason in err. */
int rq_amqp_nodes_of(const RabbitMQConfig *cfg, rq_amqp_node_t *out, char *err, size_t errlen);

/* Writes "host:port" ("[v6]:port" for an IPv6 address) of n into buf[0..len). */
void rq_amqp_node_name(const rq_amqp_node_t *n, char *buf, size_t len);

/* The order of the next connection attempt: fills order[0..n) with node indexes, the
 * preferred node first (see above). shuffle: RABBITMQ_ADDRESS_ORDER is "shuffle". A list of
 * another length than the last call's starts over (first node, or a new shuffle). */
void rq_amqp_nodes_plan(int n, int shuffle, int *order);

/* Records that node i (of n) took a connection (it becomes the preferred one and the node
 * in use) or, with ok = 0, that it failed after accepting one (the topology refused): the
 * next plan then starts at the node after it. */
void rq_amqp_nodes_result(int n, int i, int ok);

/* The node of the process's latest successful connection as "host:port" in buf (empty
 * before the first one). Returns buf. */
char *rq_amqp_node_in_use(char *buf, size_t len);

/* Sets the node in use (rq_amqp_open() calls it on every success). */
void rq_amqp_set_node_in_use(const rq_amqp_node_t *node);

/* Registers the gauge rabbitmq_node_in_use{node="host:port"} in m (1 for the node in use, 0
 * for a node used before) and keeps it updated from now on; NULL stops the updates (call it
 * before freeing the registry). Returns 0, or -1 when the family cannot be registered. */
int rq_amqp_nodes_metrics(rq_metrics_t *m);

#endif
