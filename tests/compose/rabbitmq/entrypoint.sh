#!/bin/sh
# Writes what the official image's entrypoint derives from the environment (default user,
# password, guest allowed from other hosts), then execs the broker as the rabbitmq user,
# logging to stdout. Not through Debian's /usr/sbin wrapper: as root it stays PID 1 as a
# shell running `su`, which ignores SIGTERM (`docker stop` then waits and kills).
set -eu
{
	echo "loopback_users.guest = false"
	echo "listeners.tcp.default = 5672"
	echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
	echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
} >/etc/rabbitmq/rabbitmq.conf
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
cd /var/lib/rabbitmq
export HOME=/var/lib/rabbitmq RABBITMQ_LOGS=-
exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
