#!/usr/bin/env bash
# test_broker_ports.sh - scripts/broker.sh starts a node whose default Erlang distribution port
# (PORT + 20000) is taken by something that is not Erlang.
#
# CI found it: the queue-service tests pick AMQP ports up to 31768, so PORT + 20000 lands in
# the kernel's ephemeral range, where any client socket of a test beside it may hold it, and
# RabbitMQ then stops with dist_port_already_used. broker.sh must choose a free port of the
# 1000 below the ephemeral range for the distribution (file DIR/dist_port, kept across restarts;
# `partition` reads it); the test helpers pick their ports below those.
#
# Checks: a listener on PORT + 20000, then `broker.sh start DIR PORT`: the node starts, serves
# rabbitmqctl, DIR/dist_port names the port it listens on (not PORT + 20000, and below the
# ephemeral range); a restart of the stopped node starts again. Everything binds 127.0.0.1;
# the broker is stopped by broker.sh (pidfile), the listener by PID.
# Environment: WORK (scratch; default mktemp). Prints `N passed, N failed`; exit 1 on failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

own_work=
[ -z "${WORK:-}" ] && own_work=1
WORK=${WORK:-$(mktemp -d /tmp/relayq-bports.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"
broker_dir=$WORK/broker
pids=()

cleanup() {
	local rc=$?
	kill_quietly "${pids[@]}"
	"$root/scripts/broker.sh" stop "$broker_dir" >/dev/null 2>&1
	if [ -n "$own_work" ] && [ "$RQ_FAILED" -eq 0 ] && [ "${KEEP_TMP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "logs kept in $WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eph_lo=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range)
# Something that is not Erlang holds PORT + 20000 (a plain listener, as a client socket would).
# PORT + 20000 lies in the ephemeral range, so another process may hold it already (CI: "Address
# already in use"): then another PORT is tried, up to 20 times.
for _ in $(seq 1 20); do
	port=$(free_broker_port)
	dist=$((port + 20000))
	"$PY" -c 'import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
print("bound", flush=True)
time.sleep(300)' "$dist" >"$WORK/holder.out" 2>&1 &
	holder=$!
	for _ in $(seq 1 50); do
		grep -q bound "$WORK/holder.out" 2>/dev/null && break
		kill -0 "$holder" 2>/dev/null || break # could not bind: exited
		sleep 0.1
	done
	grep -q bound "$WORK/holder.out" && break
	kill_quietly "$holder"
done
pids+=("$holder")
check "a listener holds 127.0.0.1:$dist (PORT + 20000)" grep -q bound "$WORK/holder.out"

log "broker.sh start on $port with $dist taken"
if "$root/scripts/broker.sh" start "$broker_dir" "$port" >"$WORK/start1.log" 2>&1; then
	pass "the node starts although PORT + 20000 is taken"
else
	fail "the node starts although PORT + 20000 is taken" "$(tail -c 400 "$WORK/start1.log" | tr '\n' ' ')"
	summary
	exit 1
fi
check "rabbitmqctl reaches the node" "$root/scripts/broker.sh" status "$broker_dir"
got=$(cat "$broker_dir/dist_port" 2>/dev/null || echo none)
if [ "$got" != none ] && [ "$got" != "$dist" ] && [ "$got" -lt "$eph_lo" ] && [ "$got" -ge $((eph_lo - 1000)) ]; then
	pass "DIR/dist_port is one of the 1000 ports below the ephemeral range ($got, range from $eph_lo)"
else
	fail "DIR/dist_port is one of the 1000 ports below the ephemeral range" "dist_port $got, taken $dist, ephemeral from $eph_lo"
fi
pid=$(cat "$broker_dir/rabbitmq.pid" 2>/dev/null || echo 0)
if [ "$got" != none ] && awk -v p="$(printf '%04X' "$got" 2>/dev/null)" '$2 ~ ":"p"$" && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp; then
	pass "the node listens on its dist_port $got"
else
	fail "the node listens on its dist_port" "dist_port $got, pid $pid"
fi

log "stop and start again (the listener still holds $dist)"
"$root/scripts/broker.sh" stop "$broker_dir" >/dev/null 2>&1
if "$root/scripts/broker.sh" start "$broker_dir" >"$WORK/start2.log" 2>&1; then
	pass "a restart of the stopped node starts"
else
	fail "a restart of the stopped node starts" "$(tail -c 400 "$WORK/start2.log" | tr '\n' ' ')"
fi
check "rabbitmqctl reaches the restarted node" "$root/scripts/broker.sh" status "$broker_dir"
again=$(cat "$broker_dir/dist_port" 2>/dev/null || echo none)
if [ "$again" = "$got" ]; then
	pass "the restarted node kept its distribution port ($again)"
else
	fail "the restarted node kept its distribution port" "$got before, $again after"
fi
summary
