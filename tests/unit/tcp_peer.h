/* tcp_peer.h - a rabbitmq-c connection whose far end the test holds (unit tests only).
 *
 * rq_test_tcp_peer() opens a listener on 127.0.0.1, connects a plain rabbitmq-c TCP socket
 * to it (no AMQP handshake) and accepts: the test then reads what the code under test wrote
 * from *sfd, or stops reading to fill the socket. Criterion asserts on any failure. Include
 * it once per test file. */
#ifndef RQ_TEST_TCP_PEER_H
#define RQ_TEST_TCP_PEER_H

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* Returns the client connection (amqp_destroy_connection() it); *lfd is the listener and
 * *sfd the accepted server side (close both). */
static amqp_connection_state_t rq_test_tcp_peer(int *lfd, int *sfd)
{
    struct sockaddr_in a;
    socklen_t alen = sizeof(a);
    amqp_connection_state_t conn;
    amqp_socket_t *sock;

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *lfd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(*lfd, 0);
    cr_assert_eq(bind(*lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    cr_assert_eq(listen(*lfd, 1), 0);
    cr_assert_eq(getsockname(*lfd, (struct sockaddr *)&a, &alen), 0);
    conn = amqp_new_connection();
    sock = amqp_tcp_socket_new(conn);
    cr_assert_not_null(sock);
    cr_assert_eq(amqp_socket_open(sock, "127.0.0.1", ntohs(a.sin_port)), AMQP_STATUS_OK);
    *sfd = accept(*lfd, NULL, NULL);
    cr_assert_geq(*sfd, 0);
    return conn;
}

#endif
