#!/usr/bin/env bash
# End-to-end test of the local mode (what `make run`, `make scale-consumer`, `make monitor` and
# `make down` run), on free ports and a scratch run folder so it never touches a developer's
# run/. Checks: up answers ready, a message goes producer -> broker -> consumer -> OUTPUT_FILE,
# both /metrics pages pass `promtool check metrics`, monitor --once reports everything ready,
# scaling to 3 consumers and back to 1, and `down` leaves no process behind.
#
# Environment: BUILD_DIR (default build). Prints `N passed, N failed`; exit 1 on any failure.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
PY=/usr/bin/python3
export BUILD_DIR=${BUILD_DIR:-build}
RUN_DIR=$(mktemp -d /tmp/relayq-ops.XXXXXX)
chmod 755 "$RUN_DIR" # the broker runs as the rabbitmq user and must reach its folder inside
export RUN_DIR ENV_FILE=/nonexistent READY_TIMEOUT=30 STOP_TIMEOUT=15

passed=0 failed=0
ok() {
	passed=$((passed + 1))
	echo "PASS  $1"
}
ko() {
	failed=$((failed + 1))
	echo "FAIL  $1${2:+: $2}"
}
check() {
	local name=$1
	shift
	if "$@"; then ok "$name"; else ko "$name"; fi
}

# Ports: AMQP P with P+20000 free too (scripts/broker.sh puts Erlang distribution there), a
# management port, a producer port, and 3 consecutive consumer ports.
# Below the ephemeral range (scripts/rq_ports.py); the consumers' first port starts 3 free ones.
read -r AMQP_PORT MGMT_PORT PRODUCER_PORT CONSUMER_PORT < <("$PY" "$ROOT/scripts/rq_ports.py" 4 3)
export AMQP_PORT MGMT_PORT PRODUCER_PORT CONSUMER_PORT
echo "local mode test: run folder $RUN_DIR, amqp $AMQP_PORT, mgmt $MGMT_PORT, producer $PRODUCER_PORT, consumers from $CONSUMER_PORT"

pids_of_run() {
	local f
	for f in "$RUN_DIR"/*.pid "$RUN_DIR"/rabbitmq/rabbitmq.pid; do
		[ -f "$f" ] && cat "$f"
	done
}
all_pids=()
remember_pids() {
	local p
	for p in $(pids_of_run); do all_pids+=("$p"); done
}

cleanup() {
	bash scripts/local.sh down >/dev/null 2>&1 || true
	if [ "$failed" -eq 0 ]; then rm -rf "$RUN_DIR"; else echo "logs kept in $RUN_DIR"; fi
}
trap cleanup EXIT

if ! bash scripts/local.sh up; then
	ko "local.sh up starts broker, producer and consumer and waits for ready"
	for f in "$RUN_DIR"/*.log; do
		echo "--- $f"
		tail -n 15 "$f"
	done
	echo "$passed passed, $failed failed"
	exit 1
fi
ok "local.sh up starts broker, producer and consumer and waits for ready"
remember_pids

P=http://127.0.0.1:$PRODUCER_PORT
C=http://127.0.0.1:$CONSUMER_PORT
code() { curl -s -o /dev/null -w '%{http_code}' -m 5 "$@"; }
check "producer /health/ready is 200" test "$(code "$P/health/ready")" = 200
check "consumer /health/ready is 200" test "$(code "$C/health/ready")" = 200
check "services bound to 127.0.0.1 only" bash -c "! ss -ltnH | grep -E ':($PRODUCER_PORT|$CONSUMER_PORT|$AMQP_PORT|$MGMT_PORT)\b' | grep -vE '127\.0\.0\.1:'"

marker="ops-check-$$-$RANDOM"
check "POST /produce answers 201" test "$(code -XPOST -H 'Content-Type: application/json' -d "{\"payload\":\"$marker\"}" "$P/produce")" = 201
seen=
for _ in $(seq 1 50); do
	if grep -qxF "$marker" "$RUN_DIR/output.txt" 2>/dev/null; then
		seen=1
		break
	fi
	sleep 0.2
done
check "the consumer wrote the message to OUTPUT_FILE ($RUN_DIR/output.txt)" test -n "$seen"

for pair in "producer:$P" "consumer:$C"; do
	name=${pair%%:*}
	url=${pair#*:}
	out=$(curl -s -m 5 "$url/metrics" | promtool check metrics 2>&1)
	rc=$?
	if [ $rc -eq 0 ]; then ok "$name /metrics passes promtool check metrics"; else ko "$name /metrics passes promtool check metrics" "$out"; fi
done

frame=$("$PY" scripts/monitor.py --once --run-dir "$RUN_DIR" --mgmt "http://127.0.0.1:$MGMT_PORT")
rc=$?
echo "$frame" | sed 's/^/    /'
check "monitor --once exits 0 with everything ready" test $rc -eq 0
check "monitor shows producer, consumer-1, request_queue and the DLQ line" bash -c '
	grep -qE "^producer +http://127.0.0.1:[0-9]+ +ok +ok" <<<"$1" &&
	grep -qE "^consumer-1 +http://127.0.0.1:[0-9]+ +ok +ok" <<<"$1" &&
	grep -qE "^queue +request_queue +depth [0-9]+" <<<"$1" &&
	grep -qE "^dlq +request_queue.dlq" <<<"$1"' _ "$frame"

check "scale to 3 consumers" bash scripts/local.sh scale 3
remember_pids
n=0
for i in 1 2 3; do
	curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$((CONSUMER_PORT + i - 1))/health/ready" && n=$((n + 1))
done
check "3 consumers answer ready on consecutive ports" test "$n" = 3
# The broker sees 3 consumers on the queue (the management API's view lags a few seconds).
consumers=0
for _ in $(seq 1 40); do
	consumers=$(curl -s -m 3 -u guest:guest "http://127.0.0.1:$MGMT_PORT/api/queues/%2F/request_queue" |
		"$PY" -c 'import json,sys; print(json.load(sys.stdin).get("consumers", 0))' 2>/dev/null || echo 0)
	[ "$consumers" = 3 ] && break
	sleep 0.5
done
check "RabbitMQ counts 3 consumers on request_queue" test "$consumers" = 3
frame=$("$PY" scripts/monitor.py --once --run-dir "$RUN_DIR" --mgmt "http://127.0.0.1:$MGMT_PORT")
check "monitor lists consumer-3" grep -qE '^consumer-3 +http://127.0.0.1:[0-9]+ +ok +ok' <<<"$frame"

c3=$(cat "$RUN_DIR/consumer-3.pid" 2>/dev/null || echo 0)
check "scale back to 1 consumer" bash scripts/local.sh scale 1
check "consumer-3 process is gone and its pidfile removed" bash -c "! kill -0 $c3 2>/dev/null && [ ! -e '$RUN_DIR/consumer-3.pid' ]"
check "consumer-1 still ready" test "$(code "$C/health/ready")" = 200

check "local.sh down" bash scripts/local.sh down
left=()
for p in "${all_pids[@]}"; do kill -0 "$p" 2>/dev/null && left+=("$p"); done
check "down leaves none of the started processes (${#all_pids[@]} pids)" test ${#left[@]} -eq 0
check "down removes every pidfile" bash -c "! ls '$RUN_DIR'/*.pid >/dev/null 2>&1"
check "nothing listens on the test ports after down" bash -c "! ss -ltnH | grep -E ':($PRODUCER_PORT|$CONSUMER_PORT|$((CONSUMER_PORT + 1))|$AMQP_PORT|$MGMT_PORT)\b'"
check "no process runs from the run folder" bash -c "! ps -eo args | grep -F '$RUN_DIR' | grep -v grep"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
