#!/usr/bin/env bash
# Integration test of the consumer against a real RabbitMQ that this script starts and stops.
#
#   BUILD_DIR=./build BROKER_PORT=5710 tests/integration/test_consumer.sh
#
# Environment: BUILD_DIR (default ./build; needs bin/consumer and bin/rq_amqp_tool),
# BROKER_PORT (default 5710), CONSUMER_HTTP_PORT (default BROKER_PORT + 13000),
# KEEP_WORK=1 keeps the temporary folder (logs, output files) for inspection.
#
# Checks: start-up exit codes; 1,000 JSON messages drained into OUTPUT_FILE; health, metrics
# and 404 endpoints; replies on a reply_to queue with the right correlation ids; undecodable
# messages mixed into one batch are dead-lettered without a channel error; kill -9 mid-way loses
# nothing; SIGTERM under load exits 0 with every message either written and acked or still
# queued; SIGTERM during a processing_time wait requeues the message; a long processing_time
# survives heartbeats; a broker restart is recovered from. Prints the drain rate with fsync.
# Every wait is bounded; exit status 0 when all checks pass, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-./build}
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
BROKER_PORT=${BROKER_PORT:-5710}
HTTP_PORT=${CONSUMER_HTTP_PORT:-$((BROKER_PORT + 13000))}
CONSUMER=$BUILD_DIR/bin/consumer
TOOL=$BUILD_DIR/bin/rq_amqp_tool
QUEUE=consumer_it_queue
REPLIES=consumer_it_replies

for bin in "$CONSUMER" "$TOOL"; do
	[ -x "$bin" ] || { echo "FAIL: $bin not built" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/rq-consumer-it.XXXXXX)
chmod 755 "$WORK" # the broker runs as the rabbitmq user and needs to reach its folder
BROKER_DIR=$WORK/broker
OUT=$WORK/output.log
LOG=$WORK/consumer.log
CPID=
T_START=$(date +%s)

log() { echo "[$(($(date +%s) - T_START))s] $*"; }

cleanup() {
	local rc=$?
	if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
		kill -9 "$CPID" 2>/dev/null || true
		wait "$CPID" 2>/dev/null || true
	fi
	"$ROOT/scripts/broker.sh" stop "$BROKER_DIR" >/dev/null 2>&1 || true
	if [ "${KEEP_WORK:-0}" = 1 ] || [ $rc -ne 0 ]; then
		echo "work folder kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$LOG" ]; then
		echo "--- last consumer log lines:" >&2
		tail -n 20 "$LOG" >&2
	fi
	exit 1
}
ok() { log "ok - $*"; }

# tool CMD ARGS...: rq_amqp_tool against the test broker
tool() {
	local cmd=$1
	shift
	"$TOOL" "$cmd" --host 127.0.0.1 --port "$BROKER_PORT" --quiet "$@"
}

depth() { tool depth --queue "${1:-$QUEUE}" --consumers; }

# wait_until SECONDS CMD...: polls CMD every 0.1 s; returns 1 when it never succeeded
wait_until() {
	local limit=$1
	shift
	local end=$(($(date +%s%N) / 1000000 + limit * 1000))
	while ! "$@"; do
		[ $(($(date +%s%N) / 1000000)) -lt $end ] || return 1
		sleep 0.1
	done
}

http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT$1" || true; }
metric() {
	curl -s -m 2 "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
ready() { [ "$(http_code /health/ready)" = 200 ]; }
ready_or_exited() { ! kill -0 "$CPID" 2>/dev/null || ready; }
not_ready() { [ "$(http_code /health/ready)" = 503 ]; }
lines() { if [ -f "$OUT" ]; then wc -l <"$OUT"; else echo 0; fi; }
count_prefix() { grep -c "^$1 message " "$OUT" || true; }
uniq_prefix() { grep "^$1 message " "$OUT" | sort -u | wc -l; }
drained() { [ "$(depth)" = "0 1" ]; }
has_unique() { [ "$(uniq_prefix "$1")" -ge "$2" ]; }

# start_consumer [VAR=value...]: starts the consumer in the background and waits until ready
start_consumer() {
	env RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$BROKER_PORT" REQUEST_QUEUE="$QUEUE" \
		OUTPUT_FILE="$OUT" CONSUMER_PORT="$HTTP_PORT" CONSUMER_BIND=127.0.0.1 LOG_LEVEL=info \
		"$@" "$CONSUMER" 2>>"$LOG" &
	CPID=$!
	wait_until 15 ready_or_exited || fail "consumer not ready within 15 s"
	kill -0 "$CPID" 2>/dev/null || fail "consumer exited at start-up"
}

# stop_consumer [SIGNAL]: signals the consumer, waits (bounded) and sets STATUS
stop_consumer() {
	local sig=${1:-TERM} i
	kill -"$sig" "$CPID"
	for i in $(seq 1 100); do
		kill -0 "$CPID" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$CPID" 2>/dev/null && fail "consumer still running 10 s after SIG$sig"
	STATUS=0
	{ wait "$CPID"; } 2>/dev/null || STATUS=$? # no "Killed" notice from bash
	CPID=
}

expect_lines() { # expect_lines PREFIX N: the output holds each "PREFIX message i" (0 <= i < N)
	seq 0 $(($2 - 1)) | sed "s/^/$1 message /" | sort >"$WORK/expect"
	grep "^$1 message " "$OUT" | sort -u >"$WORK/got"
	if ! cmp -s "$WORK/expect" "$WORK/got"; then
		echo "missing lines for $1:" >&2
		comm -23 "$WORK/expect" "$WORK/got" | head -n 5 >&2
		fail "output lacks lines of $1"
	fi
}

# ---- broker ----------------------------------------------------------------------------
log "starting a broker on 127.0.0.1:$BROKER_PORT in $BROKER_DIR"
"$ROOT/scripts/broker.sh" start "$BROKER_DIR" "$BROKER_PORT" >"$WORK/broker-start.log" 2>&1 ||
	{ cat "$WORK/broker-start.log" >&2; fail "broker did not start"; }

# ---- start-up exit codes ---------------------------------------------------------------
st=0
"$CONSUMER" --version >/dev/null || st=$?
[ $st -eq 0 ] || fail "--version exit $st"
st=0
PREFETCH_COUNT=0 "$CONSUMER" >/dev/null 2>&1 || st=$?
[ $st -eq 2 ] || fail "bad PREFETCH_COUNT: exit $st, expected 2"
st=0
RABBITMQ_PORT=$BROKER_PORT OUTPUT_FILE=$WORK/no/such/dir/out CONSUMER_PORT=0 "$CONSUMER" \
	2>"$WORK/startup.log" || st=$?
[ $st -eq 1 ] || fail "unwritable OUTPUT_FILE: exit $st, expected 1"
grep -q "no/such/dir" "$WORK/startup.log" || fail "the start-up error does not name the file"
ok "exit codes: --version 0, bad config 2, unusable output file 1"

# ---- 1,000 messages drained into the output file ----------------------------------------
tool publish --queue "$QUEUE" --declare --count 1000 --id-prefix basic >/dev/null ||
	fail "publish 1000"
[ "$(depth)" = "1000 0" ] || fail "queue depth before consuming: $(depth)"
start_consumer
wait_until 30 drained || fail "queue not drained: $(depth)"
wait_until 5 has_unique basic 1000 || fail "only $(lines) lines written"
[ "$(lines)" -eq 1000 ] || fail "$(lines) lines written, expected 1000"
expect_lines basic 1000
[ "$(metric messages_consumed_total)" = 1000 ] || fail "messages_consumed_total $(metric messages_consumed_total)"
[ "$(metric consumer_lines_written_total)" = 1000 ] || fail "consumer_lines_written_total"
[ "$(metric consumer_queue_consume_latency_seconds_count)" = 1000 ] || fail "consume latency count"
ok "1000 messages consumed, 1000 lines in OUTPUT_FILE, queue empty"

[ "$(http_code /health)" = 200 ] || fail "/health"
[ "$(http_code /health/live)" = 200 ] || fail "/health/live"
[ "$(http_code /metrics)" = 200 ] || fail "/metrics"
[ "$(http_code /nope)" = 404 ] || fail "/nope is not 404"
curl -s "http://127.0.0.1:$HTTP_PORT/nope" | grep -q '"error"' || fail "404 body is not a JSON error"
ok "health, live, metrics 200; unknown path 404 JSON"

# ---- replies ------------------------------------------------------------------------------
tool declare --queue "$REPLIES" --transient || fail "declare reply queue"
tool publish --queue "$QUEUE" --count 20 --id-prefix rpc --payload-object --reply-to "$REPLIES" \
	--correlation-id corr >/dev/null || fail "publish with reply_to"
tool publish --queue "$QUEUE" --count 1 --id-prefix one --reply-to "$REPLIES" \
	--correlation-id single >/dev/null || fail "publish one with reply_to"
tool get --queue "$REPLIES" --count 21 --wait 15 --format props >"$WORK/replies" ||
	fail "fewer than 21 replies: $(wc -l <"$WORK/replies")"
for i in $(seq 0 19); do
	printf 'corr-%d\trpc-%d\tConsumer processed: {"seq":%d,"text":"rpc message %d"}\n' \
		"$i" "$i" "$i" "$i"
done >"$WORK/replies.expect"
printf 'single\tone-0\tConsumer processed: one message 0\n' >>"$WORK/replies.expect"
sort "$WORK/replies" >"$WORK/replies.sorted"
sort "$WORK/replies.expect" | cmp -s - "$WORK/replies.sorted" || {
	diff <(sort "$WORK/replies.expect") "$WORK/replies.sorted" | head >&2
	fail "replies differ"
}
[ "$(metric consumer_replies_sent_total)" = 21 ] || fail "consumer_replies_sent_total"
ok "21 replies with matching correlation ids and bodies"

stop_consumer TERM
[ $STATUS -eq 0 ] || fail "SIGTERM exit $STATUS"
ok "SIGTERM while idle: exit 0"

# ---- undecodable messages inside one batch --------------------------------------------------
# valid x3, bad, valid x2, bad, bad, valid, bad: processed and dead-lettered deliveries
# (copies to the DLQ, confirmed, then acked) interleave in one batch, and the last delivery
# of the batch is a bad one.
tool publish --queue "$QUEUE" --count 3 --id-prefix mixA >/dev/null
tool publish --queue "$QUEUE" --body '{"id":"bad1","payload":' >/dev/null
tool publish --queue "$QUEUE" --count 2 --id-prefix mixB >/dev/null
tool publish --queue "$QUEUE" --body '[1,2,3' >/dev/null
tool publish --queue "$QUEUE" --body '{"id":"bad3","payload":1,"fail_times":1.5}' >/dev/null
tool publish --queue "$QUEUE" --count 1 --id-prefix mixC >/dev/null
tool publish --queue "$QUEUE" --body '<x/>' --content-type application/xml >/dev/null
[ "$(depth)" = "10 0" ] || fail "depth before the mixed batch: $(depth)"
start_consumer
wait_until 15 drained || fail "mixed batch not drained: $(depth)"
wait_until 5 has_unique mixC 1 || fail "mixed batch lines missing"
sleep 1 # a channel error would surface on the next read
expect_lines mixA 3
expect_lines mixB 2
expect_lines mixC 1
[ "$(metric message_processing_errors_total'{reason="decode"}')" = 4 ] ||
	fail "decode errors: $(metric message_processing_errors_total'{reason="decode"}')"
[ "$(metric consumer_reconnects_total)" = 0 ] || fail "the consumer reconnected (channel error?)"
grep -q "PRECONDITION_FAILED\|unknown delivery tag" "$LOG" && fail "channel error in the log"
[ "$(metric consumer_broker_connected)" = 1 ] || fail "not connected after the mixed batch"
stop_consumer TERM
[ $STATUS -eq 0 ] || fail "SIGTERM exit $STATUS"
[ "$(depth)" = "0 0" ] || fail "messages left after the mixed batch: $(depth)"
[ "$(depth "$QUEUE.dlq")" = "4 0" ] || fail "the DLQ holds $(depth "$QUEUE.dlq"), expected 4 dead-lettered"
ok "4 undecodable messages dead-lettered (to $QUEUE.dlq) amid 6 valid ones in one batch, no channel error"

# ---- kill -9 in the middle ------------------------------------------------------------------
N=20000
tool publish --queue "$QUEUE" --count $N --id-prefix kill >/dev/null || fail "publish $N"
start_consumer
wait_until 30 has_unique kill 2000 || fail "consumer too slow before kill -9"
stop_consumer KILL
killed_at=$(count_prefix kill)
[ "$killed_at" -lt $N ] || fail "everything was consumed before the kill; nothing tested"
start_consumer
wait_until 60 drained || fail "not drained after restart: $(depth)"
wait_until 10 has_unique kill $N || fail "only $(uniq_prefix kill) of $N after restart"
expect_lines kill $N
ok "kill -9 after $killed_at of $N lines: all $N present after restart ($(($(count_prefix kill) - N)) duplicates)"

# ---- SIGTERM under load -----------------------------------------------------------------------
stop_consumer TERM
[ $STATUS -eq 0 ] || fail "SIGTERM exit $STATUS"
tool publish --queue "$QUEUE" --count $N --id-prefix term >/dev/null || fail "publish $N"
start_consumer
wait_until 30 has_unique term 2000 || fail "consumer too slow before SIGTERM"
t0=$(date +%s%N)
stop_consumer TERM
ms=$((($(date +%s%N) - t0) / 1000000))
[ $STATUS -eq 0 ] || fail "SIGTERM under load: exit $STATUS"
written=$(count_prefix term)
left=$(depth | cut -d' ' -f1)
[ "$written" -eq "$(uniq_prefix term)" ] || fail "duplicates written before a graceful stop"
[ $((written + left)) -eq $N ] ||
	fail "after SIGTERM: $written written + $left queued != $N (unacked or lost messages)"
ok "SIGTERM under load: exit 0 in $ms ms; $written written and acked + $left still queued = $N"
start_consumer
wait_until 60 drained || fail "not drained: $(depth)"
wait_until 10 has_unique term $N || fail "only $(uniq_prefix term) of $N"
expect_lines term $N
stop_consumer TERM

# ---- processing_time: heartbeats, no head-of-line hold, SIGTERM requeue -----------------------
start_consumer RABBITMQ_HEARTBEAT=1
tool publish --queue "$QUEUE" --count 2 --id-prefix early >/dev/null
tool publish --queue "$QUEUE" --count 1 --id-prefix slow --processing-time 3.5 >/dev/null
tool publish --queue "$QUEUE" --count 1 --id-prefix late >/dev/null
wait_until 3 has_unique early 2 || fail "messages before a slow one were held back"
has_unique slow 1 && fail "processing_time 3.5 s was not waited"
wait_until 10 has_unique late 1 || fail "messages after the slow one not processed"
# (issue 14: "late" no longer waits behind "slow", which ends on its own 3.5 s)
wait_until 10 has_unique slow 1 || fail "the slow message was not processed"
expect_lines slow 1
[ "$(metric consumer_reconnects_total)" = 0 ] || fail "heartbeat timeout during processing_time"
tool publish --queue "$QUEUE" --count 1 --id-prefix cut --processing-time 30 >/dev/null
sleep 1
t0=$(date +%s%N)
stop_consumer TERM
ms=$((($(date +%s%N) - t0) / 1000000))
[ $STATUS -eq 0 ] || fail "SIGTERM during processing_time: exit $STATUS"
[ $ms -lt 3000 ] || fail "SIGTERM during processing_time took $ms ms"
[ "$(depth)" = "1 0" ] || fail "the interrupted message was not requeued: $(depth)"
tool purge --queue "$QUEUE" >/dev/null
ok "processing_time 3.5 s with 1 s heartbeats, earlier replies not held; SIGTERM mid-wait requeues (exit 0 in $ms ms)"

# ---- broker restart -------------------------------------------------------------------------
start_consumer RABBITMQ_HEARTBEAT=5
"$ROOT/scripts/broker.sh" stop "$BROKER_DIR" >/dev/null 2>&1
wait_until 10 not_ready || fail "/health/ready not 503 with the broker down"
"$ROOT/scripts/broker.sh" start "$BROKER_DIR" "$BROKER_PORT" >>"$WORK/broker-start.log" 2>&1 ||
	fail "broker did not restart"
wait_until 30 ready || fail "not ready again 30 s after the broker restarted"
tool publish --queue "$QUEUE" --count 100 --id-prefix again >/dev/null || fail "publish after restart"
wait_until 15 has_unique again 100 || fail "not consuming after the broker restart"
[ "$(metric consumer_reconnects_total)" -ge 1 ] || fail "consumer_reconnects_total not counted"
grep -q "broker connection attempt" "$LOG" || fail "reconnect attempts not logged"
stop_consumer TERM
[ $STATUS -eq 0 ] || fail "SIGTERM exit $STATUS"
ok "broker restart: not ready while down, ready and consuming again after"

# ---- raw lines (application/octet-stream) arrive byte for byte -------------------------------
/usr/bin/python3 - "$WORK/raw.in" <<'PY'
import random, sys
random.seed(7)
bytes_but_newline = [b for b in range(256) if b != 10]
with open(sys.argv[1], "wb") as f:
    for _ in range(3000):
        f.write(bytes(random.choice(bytes_but_newline) for _ in range(random.randint(0, 200))))
        f.write(b"\n")
    f.write(b"\n\r\n\x00\n\xff\xfe\n")
PY
raw_lines=$(wc -l <"$WORK/raw.in")
tool publish --queue "$QUEUE" --raw-file "$WORK/raw.in" --id-prefix rawfile >/dev/null ||
	fail "publish raw lines"
OUT_SAVED=$OUT
OUT=$WORK/raw.out
start_consumer
wait_until 30 drained || fail "raw lines not drained: $(depth)"
wait_until 5 eval '[ "$(lines)" -ge '"$raw_lines"' ]' || fail "raw lines: $(lines) of $raw_lines"
stop_consumer TERM
[ $STATUS -eq 0 ] || fail "SIGTERM exit $STATUS"
cmp "$WORK/raw.in" "$OUT" || fail "raw lines differ from the input"
OUT=$OUT_SAVED
ok "$raw_lines raw lines (NUL, CR, invalid UTF-8, empty) written byte for byte, in order"

# ---- drain rate with fsync -------------------------------------------------------------------
for pf in 100 1000; do
	tool publish --queue "$QUEUE" --count $N --id-prefix "rate$pf" >"$WORK/pub.out" ||
		fail "publish $N"
	t0=$(date +%s%N)
	start_consumer PREFETCH_COUNT=$pf
	wait_until 120 has_unique "rate$pf" $N || fail "drain of $N not finished"
	ms=$((($(date +%s%N) - t0) / 1000000))
	batches=$(metric consumer_batch_size_count)
	stop_consumer TERM
	log "drain rate with OUTPUT_FILE fsync, PREFETCH_COUNT=$pf: $N messages in $ms ms" \
		"($((N * 1000 / (ms > 0 ? ms : 1))) msg/s, $batches batches; publish: $(cut -d' ' -f6 "$WORK/pub.out"))"
	[ $((N * 1000 / (ms > 0 ? ms : 1))) -ge 500 ] || fail "drain rate below 500 msg/s"
done

log "all consumer integration checks passed"
