#!/usr/bin/env bash
# Local mode: a RabbitMQ from the Debian package plus the producer and consumers as plain
# processes, all bound to 127.0.0.1, with pidfiles and logs in RUN_DIR (default run/).
#
#   scripts/local.sh up          start broker, producer and one consumer; wait until ready; print URLs
#   scripts/local.sh down        stop everything `up`/`scale` started (by pidfile) and the broker
#   scripts/local.sh scale N     add or remove consumers until N run (they share the queue)
#   scripts/local.sh status      one line per process
#   scripts/local.sh logs        follow every log (tail -F)
#   scripts/local.sh running     exit 0 when the local producer or a consumer is running
#
# Settings (environment, else .env, else the default): AMQP_PORT (RABBITMQ_PORT, 5672),
# MGMT_PORT (15672), PRODUCER_PORT (5000), CONSUMER_PORT (8000; consumer i listens on
# CONSUMER_PORT+i-1), OUTPUT_FILE (RUN_DIR/output.txt), BUILD_DIR (build), RUN_DIR (run),
# ENV_FILE (.env), READY_TIMEOUT seconds (30), STOP_TIMEOUT seconds (20).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The .env file (ENV_FILE names another, as for the programs). It is handed to the programs
# with --env-file; ENV_FILE itself is not passed on, so they read exactly that one file.
envfile=${ENV_FILE:-.env}
if [ -f "$envfile" ]; then
	envfile=$(cd "$(dirname "$envfile")" && pwd)/$(basename "$envfile")
else
	envfile=
fi
unset ENV_FILE

# env_get NAME DEFAULT: the process environment, else the .env file, else DEFAULT.
env_get() {
	local name=$1 def=$2 line val
	if [ -n "${!name:-}" ]; then
		printf '%s' "${!name}"
		return
	fi
	if [ -n "$envfile" ]; then
		line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?$name=" "$envfile" | tail -n 1 || true)
		if [ -n "$line" ]; then
			val=${line#*=}
			val=${val%%[[:space:]]#*}
			val=${val%"${val##*[![:space:]]}"}
			case $val in
			\"*\") val=${val:1:${#val}-2} ;;
			\'*\') val=${val:1:${#val}-2} ;;
			esac
			printf '%s' "$val"
			return
		fi
	fi
	printf '%s' "$def"
}

abspath() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$ROOT" "$1" ;; esac; }

RUN_DIR=$(abspath "${RUN_DIR:-run}")
BUILD_DIR=$(abspath "${BUILD_DIR:-build}")
BROKER_DIR=$RUN_DIR/rabbitmq
AMQP_PORT=${AMQP_PORT:-$(env_get RABBITMQ_PORT 5672)}
MGMT_PORT=${MGMT_PORT:-15672}
PRODUCER_PORT=$(env_get PRODUCER_PORT 5000)
CONSUMER_PORT=$(env_get CONSUMER_PORT 8000)
OUTPUT_FILE=$(env_get OUTPUT_FILE "$RUN_DIR/output.txt")
READY_TIMEOUT=${READY_TIMEOUT:-30}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}

log() { printf 'local: %s\n' "$*"; }
die() {
	printf 'local: %s\n' "$*" >&2
	exit 1
}

# alive NAME: 0 when RUN_DIR/NAME.pid names a live process running one of our binaries
# (guards against a stale pidfile whose pid was reused by something else).
alive() {
	local pidf=$RUN_DIR/$1.pid pid exe
	[ -f "$pidf" ] || return 1
	pid=$(cat "$pidf" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
	case $exe in
	"$BUILD_DIR"/bin/producer | "$BUILD_DIR"/bin/consumer | */bin/producer | */bin/consumer) return 0 ;;
	*) return 1 ;;
	esac
}

pid_of() { cat "$RUN_DIR/$1.pid"; }

# wait_ready NAME PORT: polls /health/ready until 200, the process dies, or READY_TIMEOUT.
wait_ready() {
	local name=$1 port=$2 deadline=$((SECONDS + READY_TIMEOUT))
	while [ $SECONDS -lt $deadline ]; do
		if curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; then
			return 0
		fi
		alive "$name" || {
			echo "local: $name exited; last lines of $RUN_DIR/$name.log:" >&2
			tail -n 20 "$RUN_DIR/$name.log" >&2 || true
			return 1
		}
		sleep 0.3
	done
	echo "local: $name not ready on port $port after ${READY_TIMEOUT}s; last lines of $RUN_DIR/$name.log:" >&2
	tail -n 20 "$RUN_DIR/$name.log" >&2 || true
	if tail -n 50 "$RUN_DIR/$name.log" | grep -q "inequivalent arg 'x-queue-type'"; then
		echo "local: the local broker holds relayq's queues with another QUEUE_TYPE (made by an" \
			"older relayq, which declared classic queues). 'make clean' resets the local broker's" \
			"data (queued messages included); QUEUE_TYPE=classic in .env keeps them." >&2
	fi
	return 1
}

# start NAME BINARY [VAR=value...]: starts a service detached (own session, so a Ctrl-C in
# the terminal that ran make does not reach it), logs to RUN_DIR/NAME.log, pid in NAME.pid.
start() {
	local name=$1 bin=$2
	shift 2
	[ -x "$bin" ] || die "$bin is missing: run 'make build' first"
	if alive "$name"; then
		log "$name already running (pid $(pid_of "$name"))"
		return 0
	fi
	local args=()
	[ -n "$envfile" ] && args=(--env-file "$envfile")
	# Process environment wins over the .env file inside the programs, so the values set
	# here (the broker this script runs, the ports it hands out) are the ones used.
	env RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$AMQP_PORT" "$@" \
		setsid "$bin" "${args[@]}" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN_DIR/$name.pid"
	# setsid execs the program (the background child is not a group leader), so $! is its pid.
	local i
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ "$(readlink "/proc/$!/exe" 2>/dev/null)" = "$(readlink -f "$bin")" ] && break
		sleep 0.05
	done
	log "started $name (pid $(pid_of "$name"), log $RUN_DIR/$name.log)"
}

# stop NAME: SIGTERM, wait up to STOP_TIMEOUT for a clean exit, then SIGKILL. Removes the pidfile.
stop() {
	local name=$1 pid
	if alive "$name"; then
		pid=$(pid_of "$name")
		kill -TERM "$pid" 2>/dev/null || true
		local deadline=$((SECONDS + STOP_TIMEOUT))
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name (pid $pid) did not exit within ${STOP_TIMEOUT}s: SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		else
			log "stopped $name (pid $pid)"
		fi
	fi
	rm -f "$RUN_DIR/$name.pid" "$RUN_DIR/$name.port"
}

consumer_indexes() {
	local f
	for f in "$RUN_DIR"/consumer-*.pid; do
		[ -e "$f" ] || continue
		f=${f##*/consumer-}
		echo "${f%.pid}"
	done | sort -n
}

consumer_count() {
	local n=0 i
	for i in $(consumer_indexes); do alive "consumer-$i" && n=$((n + 1)); done
	echo "$n"
}

start_consumer() {
	local i=$1 port=$((CONSUMER_PORT + $1 - 1))
	start "consumer-$i" "$BUILD_DIR/bin/consumer" CONSUMER_PORT="$port" CONSUMER_BIND=127.0.0.1 \
		OUTPUT_FILE="$OUTPUT_FILE"
	echo "$port" >"$RUN_DIR/consumer-$i.port"
}

broker_up() {
	# epmd (Erlang's port mapper) is started by the first Erlang node and outlives it. Remember
	# whether this script caused it, so `down` can stop it and leave nothing behind.
	if ! epmd -names >/dev/null 2>&1; then touch "$RUN_DIR/epmd.ours"; fi
	# Its output goes to a file: a helper process of the broker's start-up may keep the
	# descriptors it inherits open for the broker's lifetime, which would hold a pipe
	# (`make run | tee ...`) open until `make down`.
	local rc=0
	bash scripts/broker.sh start "$BROKER_DIR" "$AMQP_PORT" "$MGMT_PORT" >"$RUN_DIR/broker-start.out" 2>&1 </dev/null || rc=$?
	cat "$RUN_DIR/broker-start.out"
	return $rc
}

broker_down() {
	bash scripts/broker.sh stop "$BROKER_DIR"
	if [ -f "$RUN_DIR/epmd.ours" ]; then
		# Refused by epmd while any other Erlang node is still registered: safe when shared.
		epmd -kill >/dev/null 2>&1 || true
		rm -f "$RUN_DIR/epmd.ours"
	fi
}

cmd_up() {
	mkdir -p "$RUN_DIR"
	mkdir -p "$(dirname "$OUTPUT_FILE")"
	broker_up
	start producer "$BUILD_DIR/bin/producer" PRODUCER_PORT="$PRODUCER_PORT" PRODUCER_BIND=127.0.0.1
	echo "$PRODUCER_PORT" >"$RUN_DIR/producer.port"
	local n
	n=$(consumer_count)
	[ "$n" -ge 1 ] || start_consumer 1
	wait_ready producer "$PRODUCER_PORT" || die "producer did not become ready ('make down' stops what started)"
	local i
	for i in $(consumer_indexes); do
		wait_ready "consumer-$i" "$(cat "$RUN_DIR/consumer-$i.port")" ||
			die "consumer-$i did not become ready ('make down' stops what started)"
	done
	cat <<EOF

relayq is running (local mode, everything on 127.0.0.1):
  producer API        http://127.0.0.1:$PRODUCER_PORT   (POST /produce, /health/ready, /metrics)
  consumer metrics    http://127.0.0.1:$CONSUMER_PORT/metrics$( [ "$(consumer_count)" -gt 1 ] && echo "  (more consumers on the next ports)")
  RabbitMQ AMQP       amqp://guest:guest@127.0.0.1:$AMQP_PORT/
  RabbitMQ management http://127.0.0.1:$MGMT_PORT   (guest / guest)
  consumer output     $OUTPUT_FILE
  logs                $RUN_DIR/*.log   (make logs)
Try:  curl -s -XPOST -H 'Content-Type: application/json' -d '{"payload":"hello","wait":true}' http://127.0.0.1:$PRODUCER_PORT/produce
Stop: make down        Scale: make scale-consumer N=3        Watch: make monitor
EOF
}

cmd_down() {
	[ -d "$RUN_DIR" ] || {
		log "nothing to stop ($RUN_DIR does not exist)"
		return 0
	}
	# Stop the producer first so nothing new is published, then the consumers drain and stop.
	stop producer
	local i
	for i in $(consumer_indexes); do stop "consumer-$i"; done
	broker_down
	log "down: nothing left running from $RUN_DIR"
}

cmd_scale() {
	local want=$1 have i next
	[[ $want =~ ^[0-9]+$ ]] || die "scale wants a number, got '$want'"
	bash scripts/broker.sh status "$BROKER_DIR" 2>/dev/null || die "the local broker is not running: run 'make run' first"
	mkdir -p "$RUN_DIR"
	# Forget pidfiles of consumers that died, so their slots are reused.
	for i in $(consumer_indexes); do alive "consumer-$i" || rm -f "$RUN_DIR/consumer-$i.pid" "$RUN_DIR/consumer-$i.port"; done
	have=$(consumer_count)
	if [ "$have" -lt "$want" ]; then
		local started=()
		next=1
		while [ "$have" -lt "$want" ]; do
			while alive "consumer-$next"; do next=$((next + 1)); done
			start_consumer "$next"
			started+=("$next")
			have=$((have + 1))
		done
		for i in "${started[@]}"; do
			wait_ready "consumer-$i" "$(cat "$RUN_DIR/consumer-$i.port")" || die "consumer-$i did not become ready"
		done
	elif [ "$have" -gt "$want" ]; then
		for i in $(consumer_indexes | sort -rn); do
			[ "$have" -gt "$want" ] || break
			stop "consumer-$i"
			have=$((have - 1))
		done
	fi
	log "$(consumer_count) consumer(s) running"
	cmd_status
}

cmd_status() {
	local name port
	if bash scripts/broker.sh status "$BROKER_DIR" 2>/dev/null; then
		printf '%-12s running   amqp 127.0.0.1:%s  management http://127.0.0.1:%s\n' rabbitmq "$AMQP_PORT" "$MGMT_PORT"
	else
		printf '%-12s stopped\n' rabbitmq
	fi
	for name in producer $(consumer_indexes | sed 's/^/consumer-/'); do
		port=$(cat "$RUN_DIR/$name.port" 2>/dev/null || echo '?')
		if alive "$name"; then
			printf '%-12s running   pid %-7s http://127.0.0.1:%s\n' "$name" "$(pid_of "$name")" "$port"
		else
			printf '%-12s stopped\n' "$name"
		fi
	done
}

cmd_running() {
	alive producer && return 0
	local i
	for i in $(consumer_indexes); do alive "consumer-$i" && return 0; done
	return 1
}

cmd_logs() {
	local files=()
	shopt -s nullglob
	files=("$RUN_DIR"/*.log "$BROKER_DIR"/log/*.log)
	[ ${#files[@]} -gt 0 ] || die "no logs in $RUN_DIR (start with 'make run')"
	exec tail -n 20 -F "${files[@]}"
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
scale) cmd_scale "${2:-${N:-3}}" ;;
status) cmd_status ;;
running) cmd_running ;;
logs) cmd_logs ;;
*)
	echo "usage: $0 up|down|scale N|status|logs|running" >&2
	exit 2
	;;
esac
