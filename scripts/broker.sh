#!/usr/bin/env bash
# Start, stop or query a private RabbitMQ node from the Debian package, bound to 127.0.0.1.
#
#   scripts/broker.sh start DIR [PORT [MGMT_PORT]] start a node whose data, logs and pidfile live in DIR
#                                                  (PORT: the one DIR was started with before, else 5672)
#   scripts/broker.sh stop DIR                     stop the node started in DIR (by its pid)
#   scripts/broker.sh status DIR                   exit 0 when the node in DIR answers
#   scripts/broker.sh ctl DIR ARGS...              rabbitmqctl ARGS against the node in DIR
#                                                  (e.g. list_queues name type arguments)
#   scripts/broker.sh upgrade DIR ARGS...          rabbitmq-upgrade ARGS against the node in DIR
#                                                  (drain: maintenance mode; revive: back)
#   scripts/broker.sh cluster DIR N PORT           a cluster of N nodes (DIR/node1..N, AMQP ports
#                                                  PORT..PORT+N-1, one Erlang cookie), node1 first,
#                                                  the others joined to it; quorum queues declared
#                                                  after that get a replica on every node
#   scripts/broker.sh cluster-stop DIR             stop every node of the cluster in DIR
#   scripts/broker.sh kill DIR                     kill -9 the node in DIR (a crash; `start DIR
#                                                  PORT` brings it back into its cluster)
#   scripts/broker.sh partition DIR K              cut node K of the cluster in DIR off from the
#                                                  others' Erlang distribution traffic (iptables
#                                                  DROP rules on loopback; needs root and iptables)
#   scripts/broker.sh unpartition DIR K            remove exactly those rules again (the node stays
#                                                  partitioned in RabbitMQ's view until restarted)
#
# The node name and cookie are derived from PORT, and the Erlang distribution port is a free
# one of the 1000 ports below the ephemeral range (DIR/dist_port, kept across restarts), so
# several nodes (a developer's `make run` and a `make test`) can run side by side without
# touching each other.
#
# The nodes of a cluster make their distribution connections from 127.0.1.K (node K; file
# DIR/nodeK/dist_src), so that `partition` can tell node K's traffic from the others' on loopback.
# BROKER_NET_TICKTIME (cluster): the nodes' net_ticktime in seconds (file DIR/nodeK/net_ticktime;
# kept for later `start`s, removed by a `cluster` without it): a lost peer is seen within about
# that long (RabbitMQ's default is 60 s).
#
# BROKER_EXTRA_CONF (start): lines appended verbatim to the node's rabbitmq.conf, for example a
# TLS listener (`listeners.ssl.1 = 127.0.0.1:5671` and `ssl_options.*`). Files it names must
# be readable by the rabbitmq user. Unset: the default configuration.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop|status|ctl|upgrade|kill|cluster|cluster-stop|partition|unpartition DIR [PORT [MGMT_PORT] | ARGS... | N PORT | K]" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

node_env() {
	local port
	port=$(cat "$dir/port")
	export RABBITMQ_NODENAME="relayq$port@localhost"
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT="$port"
	export RABBITMQ_DIST_PORT
	RABBITMQ_DIST_PORT=$(cat "$dir/dist_port" 2>/dev/null || echo $((port + 20000)))
	export RABBITMQ_MNESIA_BASE="$dir/mnesia"
	export RABBITMQ_LOG_BASE="$dir/log"
	export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
	export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
	export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
	export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
	export ERL_EPMD_ADDRESS=127.0.0.1
	# Erlang distribution (node-to-node, and rabbitmqctl) on loopback only, like everything else.
	local srv="-kernel inet_dist_use_interface {127,0,0,1}" cli="-kernel inet_dist_use_interface {127,0,0,1}"
	if [ -f "$dir/dist_src" ]; then
		srv="$srv -kernel inet_dist_connect_options [{ip,{$(tr . , <"$dir/dist_src")}}]"
	fi
	if [ -f "$dir/net_ticktime" ]; then
		srv="$srv -kernel net_ticktime $(cat "$dir/net_ticktime")"
		cli="$cli -kernel net_ticktime $(cat "$dir/net_ticktime")"
	fi
	export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$srv"
	export RABBITMQ_CTL_ERL_ARGS="$cli"
	export HOME="$dir/home"
}

# pick_dist_port PORT: prints the Erlang distribution port for a node on PORT: the one it had
# (DIR/dist_port, so a restarted node keeps it) when free, else a free one of the 1000 ports
# just below the kernel's ephemeral range. A port in the ephemeral range may be any client
# socket's at the moment RabbitMQ binds it (dist_port_already_used, not_erlang), and the test
# helpers pick their ports below those 1000. PORT + 20000 when no other can be found.
pick_dist_port() {
	python3 - "$1" "$(cat "$dir/dist_port" 2>/dev/null || echo 0)" <<'PY' 2>/dev/null || echo $(($1 + 20000))
import random, socket, sys
port, had = int(sys.argv[1]), int(sys.argv[2])
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
def free(p):
    if not 1024 < p < lo:
        return False
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for p in [had] + [random.randrange(max(1025, lo - 1000), lo) for _ in range(500)]:
    if free(p):
        print(p)
        break
else:
    print(port + 20000)
PY
}

ctl() { rabbitmqctl -n "$RABBITMQ_NODENAME" "$@"; }
upgrade() { rabbitmq-upgrade -n "$RABBITMQ_NODENAME" "$@"; }

case "$cmd" in
start)
	# no PORT: the node's own (a restart of a node of a cluster keeps its name), else 5672
	port=${3:-$(cat "$dir/port" 2>/dev/null || echo 5672)}
	mgmt=${4:-}
	echo "$port" >"$dir/port"
	node_env
	if [ -f "$RABBITMQ_PID_FILE" ] && kill -0 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null; then
		echo "broker already running (pid $(cat "$RABBITMQ_PID_FILE"))"
		exit 0
	fi
	pick_dist_port "$port" >"$dir/dist_port.new" && mv "$dir/dist_port.new" "$dir/dist_port"
	node_env
	mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE" "$HOME"
	{
		echo "listeners.tcp.1 = 127.0.0.1:$port"
		echo "loopback_users.guest = true"
		if [ -n "$mgmt" ]; then
			echo "management.tcp.ip = 127.0.0.1"
			echo "management.tcp.port = $mgmt"
		fi
		# Extra rabbitmq.conf lines from the caller (e.g. a TLS listener); none by default.
		if [ -n "${BROKER_EXTRA_CONF:-}" ]; then
			printf '%s\n' "$BROKER_EXTRA_CONF"
		fi
	} >"$dir/rabbitmq.conf"
	echo "[]." >"$dir/advanced.config"
	if [ -n "$mgmt" ]; then echo "[rabbitmq_management]." >"$dir/enabled_plugins"; else echo "[]." >"$dir/enabled_plugins"; fi
	# The same cookie for the server (run as rabbitmq) and rabbitmqctl (run here).
	[ -f "$HOME/.erlang.cookie" ] || head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$HOME/.erlang.cookie"
	chmod 600 "$HOME/.erlang.cookie"
	chown -R rabbitmq:rabbitmq "$dir"
	# rabbitmq-server drops to the rabbitmq user; run it detached and remember its pid.
	# exec: no shell lingers holding the caller's stdout (a pipe would never close).
	# Its file descriptors up to the hard limit: RabbitMQ's file handle cache budgets every
	# socket and queue file against the soft limit (often 1024), and once that budget is spent
	# new connections wait forever in the handshake ("login: request timed out") while the
	# broker looks idle. A few hundred queues and connections (the queue service's tests) get
	# there within minutes.
	# rabbitmq-server drops to the rabbitmq user with su, whose PAM session (pam_limits) sets
	# the limits, so the file below is what counts (the RabbitMQ docs' way without systemd).
	# 65536 as the RabbitMQ docs advise, or this machine's hard limit when lower (a container's:
	# a limit above it would make su fail).
	limits=/etc/security/limits.d/relayq-rabbitmq.conf
	nofile=$(ulimit -Hn)
	case $nofile in unlimited | '' | *[!0-9]*) nofile=65536 ;; esac
	[ "$nofile" -gt 65536 ] && nofile=65536
	want=$(printf '# relayq scripts/broker.sh: RabbitMQ needs more than 1024 files (sockets, queues)\nrabbitmq soft nofile %s\nrabbitmq hard nofile %s\n' "$nofile" "$nofile")
	if [ "$(id -u)" = 0 ] && [ -d /etc/security/limits.d ] && [ "$(cat "$limits" 2>/dev/null)" != "$want" ]; then
		printf '%s\n' "$want" >"$limits"
	fi
	(cd "$dir" && exec setsid -w rabbitmq-server >"$RABBITMQ_LOG_BASE/stdout.log" 2>&1 </dev/null) &
	server=$!
	for _ in $(seq 1 120); do
		# rabbitmq-server runs in the foreground: once it has exited, waiting longer is useless.
		kill -0 "$server" 2>/dev/null || break
		if [ -f "$RABBITMQ_PID_FILE" ] && ctl await_startup --timeout 2 >/dev/null 2>&1; then
			echo "broker up on 127.0.0.1:$port (node $RABBITMQ_NODENAME, pid $(cat "$RABBITMQ_PID_FILE"))"
			exit 0
		fi
		sleep 0.5
	done
	echo "broker did not start; see $RABBITMQ_LOG_BASE" >&2
	tail -n 30 "$RABBITMQ_LOG_BASE/stdout.log" >&2 || true
	exit 1
	;;
stop)
	[ -f "$dir/port" ] || exit 0
	node_env
	[ -f "$RABBITMQ_PID_FILE" ] || exit 0
	pid=$(cat "$RABBITMQ_PID_FILE")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$RABBITMQ_PID_FILE"
	;;
status)
	[ -f "$dir/port" ] || exit 1
	node_env
	ctl status >/dev/null 2>&1
	;;
kill)
	[ -f "$dir/port" ] || exit 0
	node_env
	[ -f "$RABBITMQ_PID_FILE" ] || exit 0
	pid=$(cat "$RABBITMQ_PID_FILE")
	kill -9 "$pid" 2>/dev/null || true
	for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	rm -f "$RABBITMQ_PID_FILE"
	;;
cluster)
	n=${3:-3}
	port=${4:-5672}
	[ "$n" -ge 1 ] || { echo "cluster: N must be >= 1" >&2; exit 2; }
	cookie=$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')
	for k in $(seq 1 "$n"); do
		mkdir -p "$dir/node$k/home"
		[ -f "$dir/node$k/home/.erlang.cookie" ] || printf '%s' "$cookie" >"$dir/node$k/home/.erlang.cookie"
		echo "127.0.1.$k" >"$dir/node$k/dist_src"
		if [ -n "${BROKER_NET_TICKTIME:-}" ]; then
			echo "$BROKER_NET_TICKTIME" >"$dir/node$k/net_ticktime"
		else
			rm -f "$dir/node$k/net_ticktime"
		fi
	done
	# node1's cookie for all (a rerun keeps the nodes' own)
	for k in $(seq 2 "$n"); do cp "$dir/node1/home/.erlang.cookie" "$dir/node$k/home/.erlang.cookie"; done
	"$here/broker.sh" start "$dir/node1" "$port"
	first="relayq$port@localhost"
	for k in $(seq 2 "$n"); do
		p=$((port + k - 1))
		"$here/broker.sh" start "$dir/node$k" "$p"
		members=$("$here/broker.sh" ctl "$dir/node$k" cluster_status --formatter json 2>/dev/null || true)
		if ! grep -q "\"$first\"" <<<"$members"; then
			"$here/broker.sh" ctl "$dir/node$k" stop_app >/dev/null
			"$here/broker.sh" ctl "$dir/node$k" join_cluster "$first" >/dev/null
			"$here/broker.sh" ctl "$dir/node$k" start_app >/dev/null
		fi
	done
	echo "$n" >"$dir/nodes"
	echo "cluster of $n nodes up on 127.0.0.1:$port..$((port + n - 1)) ($first first)"
	;;
cluster-stop)
	[ -f "$dir/nodes" ] || exit 0
	for k in $(seq "$(cat "$dir/nodes")" -1 1); do "$here/broker.sh" stop "$dir/node$k"; done
	;;
partition | unpartition)
	# Node K's distribution connections come from 127.0.1.K, the others' from 127.0.1.J, and
	# every node listens on 127.0.0.1:(its DIR/nodeK/dist_port). Four rules per other node J drop
	# both directions of K -> J and J -> K; the comment names them, and unpartition deletes
	# exactly these rules (never a flush).
	[ -f "$dir/nodes" ] || { echo "no cluster in $dir" >&2; exit 1; }
	k=${3:?node number}
	n=$(cat "$dir/nodes")
	op=-I
	[ "$cmd" = unpartition ] && op=-D
	kd=$(cat "$dir/node$k/dist_port" 2>/dev/null || echo $(($(cat "$dir/node$k/port") + 20000)))
	rc=0
	for j in $(seq 1 "$n"); do
		[ "$j" = "$k" ] && continue
		jd=$(cat "$dir/node$j/dist_port" 2>/dev/null || echo $(($(cat "$dir/node$j/port") + 20000)))
		for rule in "-s 127.0.1.$k -d 127.0.0.1 -p tcp --dport $jd" \
			"-s 127.0.0.1 -d 127.0.1.$k -p tcp --sport $jd" \
			"-s 127.0.1.$j -d 127.0.0.1 -p tcp --dport $kd" \
			"-s 127.0.0.1 -d 127.0.1.$j -p tcp --sport $kd"; do
			# shellcheck disable=SC2086 # the rule's words
			if [ "$op" = -D ]; then
				while iptables -w 5 -C OUTPUT $rule -m comment --comment "relayq-partition-$kd" -j DROP 2>/dev/null; do
					iptables -w 5 -D OUTPUT $rule -m comment --comment "relayq-partition-$kd" -j DROP || { rc=1; break; }
				done
			else
				iptables -w 5 -I OUTPUT $rule -m comment --comment "relayq-partition-$kd" -j DROP || rc=1
			fi
		done
	done
	exit $rc
	;;
ctl)
	[ -f "$dir/port" ] || { echo "no broker in $dir" >&2; exit 1; }
	node_env
	shift 2
	ctl "$@"
	;;
upgrade)
	[ -f "$dir/port" ] || { echo "no broker in $dir" >&2; exit 1; }
	node_env
	shift 2
	upgrade "$@"
	;;
*)
	echo "unknown command $cmd" >&2
	exit 2
	;;
esac
