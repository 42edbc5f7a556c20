#!/usr/bin/env bash
# The system test against the ASan+UBSan build: a private broker, the sanitizer builds of the
# producer (with an INPUT_FILE) and the consumer (with an OUTPUT_FILE), scripts/test_system.py
# (health, produce, batch, load, wait replies, bad requests), tailed lines, then SIGTERM; then
# the queue service's and the OAuth2 tests (issue 16) against ASan producers of their own, at
# once.
# Fails on any test failure, a non-zero exit, or any sanitizer report in the service logs.
#
#   ASAN_DIR=build-asan bash tests/integration/asan_system.sh
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"
. "$root/scripts/bgjob.sh"
ASAN_DIR=${ASAN_DIR:-build-asan}
case $ASAN_DIR in /*) ;; *) ASAN_DIR=$root/$ASAN_DIR ;; esac
bin=$ASAN_DIR/bin
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

TMP=$(mktemp -d /tmp/relayq-asan.XXXXXX)
chmod 755 "$TMP"
BROKER_PORT=$(free_broker_port)
MGMT_PORT=$(free_port)
PPORT=$(free_port)
CPORT=$(free_port)
pid_p='' pid_c='' broker=''
cleanup() {
	for p in $pid_p $pid_c; do kill -TERM "$p" 2>/dev/null; done
	[ -n "$broker" ] && "$root/scripts/broker.sh" stop "$TMP/broker" >/dev/null 2>&1
	if [ "$RQ_FAILED" -eq 0 ]; then rm -rf "$TMP"; else log "kept $TMP"; fi
}
trap cleanup EXIT

wait_ready() { # URL
	for _ in $(seq 1 150); do
		curl -fs -o /dev/null "$1/health/ready" && return 0
		sleep 0.2
	done
	return 1
}

if "$root/scripts/broker.sh" start "$TMP/broker" "$BROKER_PORT" "$MGMT_PORT" >"$TMP/broker.out" 2>&1; then
	broker=1
	pass "broker started on 127.0.0.1:$BROKER_PORT"
else
	fail "broker started" "$(tail -n 5 "$TMP/broker.out")"
	summary
	exit 1
fi
common=(RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$BROKER_PORT" LOG_LEVEL=warn REQUEST_QUEUE=asan_system)
printf 'tailed line one\n\nbytes \001\377 and \r\n' >"$TMP/in.log"
env -i PATH="$PATH" ASAN_OPTIONS="$ASAN_OPTIONS" UBSAN_OPTIONS="$UBSAN_OPTIONS" "${common[@]}" \
	CONSUMER_PORT="$CPORT" OUTPUT_FILE="$TMP/out.txt" "$bin/consumer" >"$TMP/consumer.log" 2>&1 &
pid_c=$!
env -i PATH="$PATH" ASAN_OPTIONS="$ASAN_OPTIONS" UBSAN_OPTIONS="$UBSAN_OPTIONS" "${common[@]}" \
	PRODUCER_PORT="$PPORT" INPUT_FILE="$TMP/in.log" TAIL_STATE_DIR="$TMP/state" \
	"$bin/producer" >"$TMP/producer.log" 2>&1 &
pid_p=$!
check "ASan producer ready" wait_ready "http://127.0.0.1:$PPORT"
check "ASan consumer ready" wait_ready "http://127.0.0.1:$CPORT"
check "system test against the ASan build" "$PY" "$root/scripts/test_system.py" \
	--url "http://127.0.0.1:$PPORT" --consumer-url "http://127.0.0.1:$CPORT"
tail_in() { # the tailed bytes reach the output file
	for _ in $(seq 1 100); do
		grep -qa 'tailed line one' "$TMP/out.txt" 2>/dev/null && grep -qa $'bytes \001\377 and \r' "$TMP/out.txt" && return 0
		sleep 0.2
	done
	return 1
}
check "tailed lines reach the output file" tail_in
for name in producer consumer; do
	if [ $name = producer ]; then p=$pid_p; else p=$pid_c; fi
	kill -TERM "$p"
	rc=0
	wait "$p" || rc=$?
	if [ "$rc" -eq 0 ]; then pass "ASan $name exits 0 on SIGTERM"; else fail "ASan $name exits 0 on SIGTERM" "exit $rc"; fi
done
pid_p='' pid_c=''
# The queue service and the shared results (test_status: producers and a consumer) under the
# sanitizers: each test starts its own ASan services on this broker, checks their exit status
# and that their logs hold no sanitizer report.
qpids=()
for t in test_queues_admin test_queues_produce test_queues_pull test_queues_replicas test_jwt test_status; do
	margs=(--mgmt-port "$MGMT_PORT")
	[ $t = test_jwt ] && margs=()
	[ $t = test_queues_replicas ] || [ $t = test_status ] && margs+=(--broker-dir "$TMP/broker")
	bg_start "$TMP/$t.out" timeout -k 5 240 "$PY" "$here/$t.py" --bin "$bin" \
		--amqp-port "$BROKER_PORT" "${margs[@]}" --work "$TMP/$t"
	qpids+=("$t:$BG_PID")
done
for tp in "${qpids[@]}"; do
	rc=0
	bg_wait "$TMP/${tp%%:*}.out" "${tp#*:}" || rc=$?
	res=$(grep -E '^ *[0-9]+ passed, [0-9]+ failed$' "$TMP/${tp%%:*}.out" | tail -n 1)
	if [ "$rc" -eq 0 ]; then
		pass "${tp%%:*}.py against the ASan producer ($res)"
	else
		fail "${tp%%:*}.py against the ASan producer" "exit $rc; $res; $(grep -E '^FAIL' "$TMP/${tp%%:*}.out" | head -n 3 | tr '\n' ' ')"
	fi
done
if grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:' "$TMP"/producer.log "$TMP"/consumer.log >/dev/null 2>&1; then
	fail "no sanitizer reports" "$(grep -hE 'ERROR|runtime error' "$TMP"/*.log | head -n 5)"
else
	pass "no sanitizer reports in the service logs"
fi
summary
