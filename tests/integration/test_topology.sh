#!/usr/bin/env bash
# test_topology.sh - a request queue declared with other arguments must be reported, not crash.
#
# Both services declare the request queue with identical arguments. When the queue already
# exists with other ones (x-queue-type classic vs quorum), the broker closes the channel
# with PRECONDITION_FAILED. The second service must then fail start-up with a non-zero exit
# status (or stay up but not ready, /health/ready 503), and log a clear message naming
# PRECONDITION_FAILED and the queue; it must not crash (no signal death), and the first
# service must stay ready. A second service with the same arguments must become ready (the
# control that shows the check can tell the difference).
#
# Scenario 4 checks what a service declares by default (QUEUE_TYPE unset): every queue a
# quorum queue, and those that dead-letter doing it at least once (x-dead-letter-strategy
# at-least-once, x-overflow reject-publish), read back with rabbitmqctl list_queues.
#
# Environment: BUILD_DIR (default build), RABBITMQ_PORT (a running broker; when unset a
# broker is started on BROKER_PORT or a free port and stopped at the end), BROKER_DIR (the
# folder of that running broker, for rabbitmqctl; scenario 4 is skipped without it), WORK (a
# scratch folder; default a new temporary one). Prints `N passed, N failed`; exit 1 on failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

BUILD_DIR=${BUILD_DIR:-build}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$root/$BUILD_DIR ;; esac
producer=$BUILD_DIR/bin/producer
consumer=$BUILD_DIR/bin/consumer
WORK=${WORK:-$(mktemp -d /tmp/relayq-topo.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # a broker started here runs as the rabbitmq user
own_broker=
pids=()

cleanup() {
	kill_quietly "${pids[@]}"
	if [ -n "$own_broker" ]; then "$root/scripts/broker.sh" stop "$own_broker" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

for b in "$producer" "$consumer"; do
	[ -x "$b" ] || { echo "missing $b (build first)"; fail "binaries present" "$b"; summary; exit 1; }
done

if [ -z "${RABBITMQ_PORT:-}" ]; then
	RABBITMQ_PORT=${BROKER_PORT:-$(free_broker_port)}
	own_broker=$WORK/broker
	BROKER_DIR=$own_broker
	log "starting a broker on 127.0.0.1:$RABBITMQ_PORT"
	"$root/scripts/broker.sh" start "$own_broker" "$RABBITMQ_PORT" || { fail "broker starts"; summary; exit 1; }
fi

run_id=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
STARTED_PID=

# start_svc KIND NAME QUEUE TYPE PORT: starts a producer/consumer in the background with its
# log in $WORK/NAME.log; sets STARTED_PID.
start_svc() {
	local kind=$1 name=$2 queue=$3 type=$4 port=$5
	if [ "$kind" = producer ]; then
		env RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$RABBITMQ_PORT" REQUEST_QUEUE="$queue" QUEUE_TYPE="$type" \
			PRODUCER_BIND=127.0.0.1 PRODUCER_PORT="$port" LOG_LEVEL=info \
			"$producer" >"$WORK/$name.log" 2>&1 &
	else
		env RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$RABBITMQ_PORT" REQUEST_QUEUE="$queue" QUEUE_TYPE="$type" \
			CONSUMER_BIND=127.0.0.1 CONSUMER_PORT="$port" LOG_LEVEL=info \
			"$consumer" >"$WORK/$name.log" 2>&1 &
	fi
	STARTED_PID=$!
	pids+=("$STARTED_PID")
}

# expect_ready NAME PID PORT: the service becomes ready within 30 s.
expect_ready() {
	local name=$1 pid=$2 port=$3
	if wait_ready "http://127.0.0.1:$port/health/ready" 30; then
		pass "$name becomes ready"
	else
		fail "$name becomes ready" "not ready within 30 s; log: $(tail -n 5 "$WORK/$name.log" | tr '\n' ' ')"
	fi
}

# expect_mismatch NAME PID PORT QUEUE: the service that met the inequivalent queue fails
# start-up cleanly or stays not-ready, and says PRECONDITION_FAILED naming QUEUE.
expect_mismatch() {
	local name=$1 pid=$2 port=$3 queue=$4 log=$WORK/$1.log state=running end=$((SECONDS + 8))
	# watch it for 8 s: it either exits, or stays up and must never turn ready
	while [ "$SECONDS" -lt "$end" ]; do
		proc_alive "$pid" || { state=exited; break; }
		# a service that stays up must not turn ready
		if [ "$(http_status "http://127.0.0.1:$port/health/ready" 1)" = 200 ]; then state=ready; break; fi
		sleep 0.1
	done
	case $state in
	exited)
		wait_exit "$pid" 5
		if [ "$RQ_RC" -ge 1 ] && [ "$RQ_RC" -le 125 ]; then
			pass "$name fails start-up with an error status ($RQ_RC), not a crash"
		else
			fail "$name fails start-up with an error status, not a crash" "exit status $RQ_RC"
		fi
		;;
	ready)
		fail "$name must not become ready on an inequivalent queue" "/health/ready answered 200"
		;;
	running)
		local st
		st=$(http_status "http://127.0.0.1:$port/health/ready" 2)
		if [ "$st" = 503 ]; then
			pass "$name stays up but not ready (/health/ready 503)"
		else
			fail "$name fails start-up or is not ready" "still running, /health/ready -> $st"
		fi
		;;
	esac
	if grep -i 'precondition' "$log" | grep -qF "$queue"; then
		pass "$name logs PRECONDITION_FAILED naming queue $queue"
	else
		fail "$name logs PRECONDITION_FAILED naming queue $queue" "log: $(tail -n 5 "$log" | tr '\n' ' ')"
	fi
	if grep -qiE 'segmentation fault|AddressSanitizer|runtime error:|core dumped' "$log"; then
		fail "$name log shows no crash" "$(grep -iE 'segmentation|sanitizer|runtime error:|core dumped' "$log" | head -n 2)"
	else
		pass "$name log shows no crash"
	fi
}

# Scenario 1: the producer declares the queue classic, a quorum consumer must refuse it.
q1=relayq_topo_${run_id}_classic
p1=$(free_port)
log "scenario 1: producer declares $q1 classic; consumer wants quorum"
start_svc producer topo-producer-classic "$q1" classic "$p1"
pid_p1=$STARTED_PID
expect_ready topo-producer-classic "$pid_p1" "$p1"
c1=$(free_port)
start_svc consumer topo-consumer-quorum "$q1" quorum "$c1"
pid_c1=$STARTED_PID
expect_mismatch topo-consumer-quorum "$pid_c1" "$c1" "$q1"
kill_quietly "$pid_c1"

# Control: a second service with the same arguments is fine (declaration is idempotent).
c2=$(free_port)
log "control: consumer with the same arguments (classic) on $q1"
start_svc consumer topo-consumer-classic "$q1" classic "$c2"
pid_c2=$STARTED_PID
expect_ready topo-consumer-classic "$pid_c2" "$c2"
if [ "$(http_status "http://127.0.0.1:$p1/health/ready" 2)" = 200 ]; then
	pass "first producer still ready after the mismatch"
else
	fail "first producer still ready after the mismatch"
fi
kill_quietly "$pid_c2" "$pid_p1"

# Scenario 2: the consumer declares the queue quorum, a classic producer must refuse it.
q2=relayq_topo_${run_id}_quorum
c3=$(free_port)
log "scenario 2: consumer declares $q2 quorum; producer wants classic"
start_svc consumer topo-consumer-q "$q2" quorum "$c3"
pid_c3=$STARTED_PID
expect_ready topo-consumer-q "$pid_c3" "$c3"
p2=$(free_port)
start_svc producer topo-producer-c "$q2" classic "$p2"
pid_p2=$STARTED_PID
expect_mismatch topo-producer-c "$pid_p2" "$p2" "$q2"
if [ "$(http_status "http://127.0.0.1:$c3/health/ready" 2)" = 200 ]; then
	pass "quorum consumer still ready after the mismatch"
else
	fail "quorum consumer still ready after the mismatch"
fi
kill_quietly "$pid_p2" "$pid_c3"

# Scenario 3: the queue was declared quorum by someone else (rq_amqp_tool); a classic
# producer must refuse it, and the tool's own declaration with the same type succeeds.
tool=$BUILD_DIR/bin/rq_amqp_tool
if [ -x "$tool" ]; then
	q3=relayq_topo_${run_id}_tool
	log "scenario 3: rq_amqp_tool declares $q3 quorum; producer wants classic"
	if "$tool" declare --port "$RABBITMQ_PORT" --queue "$q3" --topology --queue-type quorum --quiet >"$WORK/tool.log" 2>&1; then
		pass "rq_amqp_tool declares $q3 as a quorum queue"
	else
		fail "rq_amqp_tool declares $q3 as a quorum queue" "$(tail -n 3 "$WORK/tool.log" | tr '\n' ' ')"
	fi
	if "$tool" declare --port "$RABBITMQ_PORT" --queue "$q3" --topology --queue-type classic --quiet >"$WORK/tool2.log" 2>&1; then
		fail "rq_amqp_tool re-declaring $q3 as classic is refused" "it succeeded"
	elif grep -qi precondition "$WORK/tool2.log"; then
		pass "rq_amqp_tool re-declaring $q3 as classic is refused with PRECONDITION_FAILED"
	else
		fail "rq_amqp_tool re-declaring $q3 as classic is refused with PRECONDITION_FAILED" "$(tail -n 3 "$WORK/tool2.log" | tr '\n' ' ')"
	fi
	p3=$(free_port)
	start_svc producer topo-producer-tool "$q3" classic "$p3"
	pid_p3=$STARTED_PID
	expect_mismatch topo-producer-tool "$pid_p3" "$p3" "$q3"
	kill_quietly "$pid_p3"
	# with the matching type the same producer binary becomes ready on that queue
	p4=$(free_port)
	start_svc producer topo-producer-quorum "$q3" quorum "$p4"
	pid_p4=$STARTED_PID
	expect_ready topo-producer-quorum "$pid_p4" "$p4"
	kill_quietly "$pid_p4"
else
	log "no $tool: scenario 3 skipped"
fi

# Scenario 4: the default topology, read back from the broker.
if [ -n "${BROKER_DIR:-}" ]; then
	q4=relayq_topo_${run_id}_default
	p5=$(free_port)
	log "scenario 4: a producer with QUEUE_TYPE unset declares $q4; rabbitmqctl reads it back"
	env -u QUEUE_TYPE RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$RABBITMQ_PORT" REQUEST_QUEUE="$q4" MAX_RETRIES=2 \
		PRODUCER_BIND=127.0.0.1 PRODUCER_PORT="$p5" LOG_LEVEL=info "$producer" >"$WORK/topo-default.log" 2>&1 &
	pid_p5=$!
	pids+=("$pid_p5")
	expect_ready topo-producer-default "$pid_p5" "$p5"
	"$root/scripts/broker.sh" ctl "$BROKER_DIR" list_queues -q --no-table-headers name type arguments \
		>"$WORK/queues.txt" 2>&1 || true
	for q in "$q4" "$q4.dlq" "$q4.retry.1" "$q4.retry.2"; do
		line=$(awk -v q="$q" '$1 == q' "$WORK/queues.txt")
		if [ "$(awk '{ print $2 }' <<<"$line")" = quorum ]; then
			pass "$q is a quorum queue by default"
		else
			fail "$q is a quorum queue by default" "list_queues: ${line:-no such queue}"
		fi
		case $q in
		*.dlq)
			if grep -q 'x-dead-letter-strategy' <<<"$line"; then
				fail "$q (no dead-lettering) has no dead-letter strategy" "$line"
			else
				pass "$q (no dead-lettering) has no dead-letter strategy"
			fi
			;;
		*)
			if grep -q 'x-dead-letter-strategy.*at-least-once' <<<"$line" &&
				grep -q 'x-overflow.*reject-publish' <<<"$line"; then
				pass "$q dead-letters at least once (x-dead-letter-strategy, x-overflow reject-publish)"
			else
				fail "$q dead-letters at least once" "$line"
			fi
			;;
		esac
	done
	if grep -q 'x-delivery-limit' <<<"$(awk -v q="$q4" '$1 == q' "$WORK/queues.txt")"; then
		pass "$q4 has a delivery limit (poison messages end in the DLQ)"
	else
		fail "$q4 has a delivery limit" "$(awk -v q="$q4" '$1 == q' "$WORK/queues.txt")"
	fi
	kill_quietly "$pid_p5"
else
	log "no BROKER_DIR: scenario 4 skipped"
fi

summary
