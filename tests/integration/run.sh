#!/usr/bin/env bash
# run.sh - the end-to-end tests of relayq against a private RabbitMQ on free ports.
#
# Starts a broker (scripts/broker.sh, bound to 127.0.0.1), the producer, the consumer (with
# OUTPUT_FILE) and a second producer whose request queue has no consumer (for the bad-request
# tests); runs scripts/test_system.py, test_api.py, test_topology.sh and, when present,
# test_consumer.sh (which starts its own broker on BROKER2_PORT), test_tail_faults.py and the
# reliability scenarios of test_reliability.py (broker restart, kill -9 of each service,
# retries and the DLQ, graceful shutdown under load), the security tests (test_security.py,
# test_tls.sh, test_valgrind.sh); checks that the output file
# holds a line for every message the producer accepted; stops the services with SIGTERM
# (each must exit 0 within 10 s) and the broker. Everything started is stopped by PID on exit.
#
# Environment: BUILD_DIR (default build), BROKER_PORT (default: a free port), KEEP_TMP=1 to
# keep the scratch folder. Prints each step and `N passed, N failed`; exit 1 on any failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

resolve_build_dir
TMP=$(mktemp -d /tmp/relayq-it.XXXXXX)
chmod 755 "$TMP" # the broker runs as the rabbitmq user and must reach its folder inside
t_start=$(date +%s)
broker_dir=$TMP/broker
broker_started=
pid_producer='' pid_badreq='' pid_consumer=''

cleanup() {
	local rc=$?
	kill_quietly "$pid_producer" "$pid_badreq" "$pid_consumer"
	if [ -n "$broker_started" ]; then
		"$root/scripts/broker.sh" stop "$broker_dir" >/dev/null 2>&1 || true
	fi
	if [ "$RQ_FAILED" -eq 0 ] && [ "${KEEP_TMP:-0}" != 1 ]; then
		rm -rf "$TMP"
	else
		echo "logs and data kept in $TMP"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME SECONDS CMD...: runs CMD bounded in time with its output indented; one check.
step() {
	local name=$1 limit=$2 rc
	shift 2
	log "step: $name"
	timeout -k 5 "$limit" "$@" 2>&1 | sed -u 's/^/    /' | tee "$TMP/step.out"
	rc=${PIPESTATUS[0]}
	local sub
	sub=$(grep -E '^ *[0-9]+ passed, [0-9]+ failed$' "$TMP/step.out" | tail -n 1 | tr -s ' ')
	if [ "$rc" = 0 ]; then
		pass "$name${sub:+ ($sub)}"
	elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		fail "$name" "timed out after $limit s"
	else
		fail "$name${sub:+ ($sub)}" "exit status $rc"
	fi
}

# pstep NAME SECONDS CMD...: queues a step to run beside the others queued; run_psteps runs
# them all at once (each bounded in time, on its own producers and queues of this broker),
# then prints each one's output and counts one check each, as step does.
P_NAMES=() P_LIMITS=() P_CMDS=()
pstep() {
	P_NAMES+=("$1")
	P_LIMITS+=("$2")
	shift 2
	P_CMDS+=("$(printf '%q ' "$@")")
}
run_psteps() {
	local i rc sub pids=()
	for i in "${!P_NAMES[@]}"; do
		(
			eval "timeout -k 5 ${P_LIMITS[$i]} ${P_CMDS[$i]}" >"$TMP/pstep.$i.out" 2>&1
			echo $? >"$TMP/pstep.$i.rc"
		) &
		pids+=($!)
	done
	wait "${pids[@]}"
	for i in "${!P_NAMES[@]}"; do
		log "step (run beside the others): ${P_NAMES[$i]}"
		sed 's/^/    /' "$TMP/pstep.$i.out"
		rc=$(cat "$TMP/pstep.$i.rc" 2>/dev/null || echo 1)
		sub=$(grep -E '^ *[0-9]+ passed, [0-9]+ failed$' "$TMP/pstep.$i.out" | tail -n 1 | tr -s ' ')
		if [ "$rc" = 0 ]; then
			pass "${P_NAMES[$i]}${sub:+ ($sub)}"
		elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			fail "${P_NAMES[$i]}" "timed out after ${P_LIMITS[$i]} s"
		else
			fail "${P_NAMES[$i]}${sub:+ ($sub)}" "exit status $rc"
		fi
	done
	P_NAMES=() P_LIMITS=() P_CMDS=()
}

# lstep LANE NAME SECONDS CMD...: queues a step in a lane; lanes_start runs every lane in the
# background, each lane's steps one after the other (steps that each use a broker or queues
# of their own, mostly waiting on timeouts and restarts), and lanes_wait prints each step's
# output and counts one check each, as step does. Three lanes keep the two cores busy
# without stacking every timing-sensitive test at once.
L_LANE=() L_NAMES=() L_LIMITS=() L_CMDS=() L_PIDS=()
lstep() {
	L_LANE+=("$1")
	L_NAMES+=("$2")
	L_LIMITS+=("$3")
	shift 3
	L_CMDS+=("$(printf '%q ' "$@")")
}
lanes_start() {
	local lane i t0
	for lane in $(printf '%s\n' "${L_LANE[@]}" | sort -u); do
		(
			for i in "${!L_NAMES[@]}"; do
				[ "${L_LANE[$i]}" = "$lane" ] || continue
				t0=$(date +%s)
				eval "timeout -k 5 ${L_LIMITS[$i]} ${L_CMDS[$i]}" >"$TMP/lstep.$i.out" 2>&1
				echo $? >"$TMP/lstep.$i.rc"
				echo "$(($(date +%s) - t0))" >"$TMP/lstep.$i.secs"
			done
		) &
		L_PIDS+=($!)
	done
}
lanes_wait() {
	local i rc sub
	wait "${L_PIDS[@]}"
	for i in "${!L_NAMES[@]}"; do
		log "step (lane ${L_LANE[$i]}, $(cat "$TMP/lstep.$i.secs" 2>/dev/null || echo '?') s): ${L_NAMES[$i]}"
		sed 's/^/    /' "$TMP/lstep.$i.out"
		rc=$(cat "$TMP/lstep.$i.rc" 2>/dev/null || echo 1)
		sub=$(grep -E '^ *[0-9]+ passed, [0-9]+ failed$' "$TMP/lstep.$i.out" | tail -n 1 | tr -s ' ')
		if [ "$rc" = 0 ]; then
			pass "${L_NAMES[$i]}${sub:+ ($sub)}"
		elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
			fail "${L_NAMES[$i]}" "timed out after ${L_LIMITS[$i]} s"
		else
			fail "${L_NAMES[$i]}${sub:+ ($sub)}" "exit status $rc"
		fi
	done
	L_LANE=() L_NAMES=() L_LIMITS=() L_CMDS=() L_PIDS=()
}

log "relayq integration tests (build: $BUILD_DIR, scratch: $TMP)"
for b in producer consumer; do
	if [ ! -x "$bin/$b" ]; then
		fail "binary $bin/$b present" "build first (make build)"
		summary
		exit 1
	fi
done
pass "binaries present in $bin"

BROKER_PORT=${BROKER_PORT:-$(free_broker_port)}
# The management plugin too: the queue service lists queues and unacked counts through it.
MGMT_PORT=${MGMT_PORT:-$(free_port)}
log "step: start broker on 127.0.0.1:$BROKER_PORT (management :$MGMT_PORT)"
if "$root/scripts/broker.sh" start "$broker_dir" "$BROKER_PORT" "$MGMT_PORT" >"$TMP/broker-start.log" 2>&1; then
	broker_started=1
	pass "broker started on 127.0.0.1:$BROKER_PORT"
else
	broker_started=1
	fail "broker started" "$(tail -n 5 "$TMP/broker-start.log" | tr '\n' ' ')"
	summary
	exit 1
fi
# With the soft limit of 1024 files, RabbitMQ's file handle cache runs out after a few hundred
# queues and connections, and every new connection then hangs in its handshake.
nofile=$(awk '/^Max open files/ { print $4 }' "/proc/$(cat "$broker_dir/rabbitmq.pid")/limits" 2>/dev/null)
if [ "${nofile:-0}" -ge 4096 ] 2>/dev/null; then
	pass "broker may open $nofile files (>= 4096)"
else
	fail "broker may open at least 4096 files" "soft limit ${nofile:-unknown} (scripts/broker.sh sets it through /etc/security/limits.d)"
fi

PRODUCER_PORT=$(free_port)
BADREQ_PORT=$(free_port)
CONSUMER_PORT=$(free_port)
BADREQ_QUEUE=relayq_badreq_test
BADREQ_REPLY_TIMEOUT_MS=1000
OUTPUT=$TMP/output.txt
common_env=(RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$BROKER_PORT" LOG_LEVEL=warn)

log "step: start producer :$PRODUCER_PORT, consumer :$CONSUMER_PORT, bad-request producer :$BADREQ_PORT"
env "${common_env[@]}" PRODUCER_BIND=127.0.0.1 PRODUCER_PORT="$PRODUCER_PORT" \
	"$bin/producer" >"$TMP/producer.log" 2>&1 &
pid_producer=$!
env "${common_env[@]}" CONSUMER_BIND=127.0.0.1 CONSUMER_PORT="$CONSUMER_PORT" OUTPUT_FILE="$OUTPUT" \
	"$bin/consumer" >"$TMP/consumer.log" 2>&1 &
pid_consumer=$!
env "${common_env[@]}" PRODUCER_BIND=127.0.0.1 PRODUCER_PORT="$BADREQ_PORT" REQUEST_QUEUE="$BADREQ_QUEUE" \
	REPLY_TIMEOUT_MS="$BADREQ_REPLY_TIMEOUT_MS" "$bin/producer" >"$TMP/producer-badreq.log" 2>&1 &
pid_badreq=$!

ready_ok=1
for pair in "producer:$PRODUCER_PORT" "consumer:$CONSUMER_PORT" "bad-request producer:$BADREQ_PORT"; do
	name=${pair%:*}
	port=${pair##*:}
	if wait_ready "http://127.0.0.1:$port/health/ready" 30; then
		pass "$name ready on 127.0.0.1:$port"
	else
		ready_ok=
		fail "$name ready on 127.0.0.1:$port within 30 s" "/health/ready -> $(http_status "http://127.0.0.1:$port/health/ready")"
	fi
done
if [ -z "$ready_ok" ]; then
	for f in producer consumer producer-badreq; do
		echo "--- $f.log (tail)"
		tail -n 20 "$TMP/$f.log"
	done
	summary
	exit 1
fi

EXPECTED=$TMP/expected.txt
: >"$EXPECTED"
step "system test (scripts/test_system.py)" 120 \
	"$PY" "$root/scripts/test_system.py" --url "http://127.0.0.1:$PRODUCER_PORT" \
	--consumer-url "http://127.0.0.1:$CONSUMER_PORT" --record "$EXPECTED"
grep -E '^ *INFO  load:' "$TMP/step.out" | sed 's/^ *INFO  /throughput: /' >"$TMP/throughput.txt" || true

step "API edge cases (tests/integration/test_api.py)" 150 \
	"$PY" "$here/test_api.py" --url "http://127.0.0.1:$PRODUCER_PORT" \
	--badreq-url "http://127.0.0.1:$BADREQ_PORT" --queue "$BADREQ_QUEUE" --amqp-port "$BROKER_PORT" \
	--tool "$bin/rq_amqp_tool" --reply-timeout-ms "$BADREQ_REPLY_TIMEOUT_MS" --record "$EXPECTED"

step "topology mismatch (tests/integration/test_topology.sh)" 120 \
	env BUILD_DIR="$BUILD_DIR" RABBITMQ_PORT="$BROKER_PORT" BROKER_DIR="$broker_dir" WORK="$TMP/topology" bash "$here/test_topology.sh"

# Issue 6: API keys, scopes, SIGHUP reload, rate limits, abuse limits and slowloris against
# producers of its own (on this broker); AMQPS and HTTPS (a broker of its own with a TLS
# listener); the integration path once under valgrind memcheck (on this broker).
step "security: keys, rate limits, limits, slowloris (tests/integration/test_security.py)" 120 \
	"$PY" "$here/test_security.py" --bin "$bin" --amqp-port "$BROKER_PORT" --work "$TMP/security"
step "security: AMQPS and HTTPS with a throw-away CA (tests/integration/test_tls.sh)" 120 \
	env BUILD_DIR="$BUILD_DIR" WORK="$TMP/tls" bash "$here/test_tls.sh"
step "security: produce/consume/reply under valgrind memcheck (tests/integration/test_valgrind.sh)" 240 \
	env BUILD_DIR="$BUILD_DIR" BROKER_PORT="$BROKER_PORT" WORK="$TMP/valgrind" bash "$here/test_valgrind.sh"

# Issue 16: OAuth2 tokens and the queue service (queues as resources, messages in with
# options, pull with leases, two replicas), each against producers of its own on this broker
# and its management API, all at once (most of their time is spent waiting on leases and
# delays).
pstep "security: OAuth2 JWTs (RS256/ES256, JWKS rotation on SIGHUP), per-queue scopes and rate limits (tests/integration/test_jwt.py)" 180 \
	"$PY" "$here/test_jwt.py" --bin "$bin" --amqp-port "$BROKER_PORT" --work "$TMP/jwt"

pstep "queue service: admin routes, per-queue topology and DLQ (tests/integration/test_queues_admin.py)" 180 \
	"$PY" "$here/test_queues_admin.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/queues-admin"
pstep "queue service: POST /queues/{id}/messages, priority/ttl_ms/delay_ms/headers, raw bodies, 404 unknown queue (test_queues_produce.py)" 240 \
	"$PY" "$here/test_queues_produce.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/queues-produce"
pstep "queue service: pull with leases, ack/nack/extend, expiry, long-poll, kill -9 (test_queues_pull.py)" 180 \
	"$PY" "$here/test_queues_pull.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/queues-pull"
pstep "queue service: two replicas, acks forwarded to the lease's holder, holder killed (test_queues_replicas.py)" 120 \
	"$PY" "$here/test_queues_replicas.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --broker-dir "$broker_dir" --work "$TMP/queues-replicas"
pstep "queue service review: create race, delayed load, DELETE vs delay buckets, foreign DELETE without mgmt, raw/CC headers, max delay, bucket type, frame_max 4096 + TLS (test_queues_r2.py)" 420 \
	"$PY" "$here/test_queues_r2.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/queues-r2"
pstep "results (issue 17): 202 + Location on A, result on B, long poll, timeline, restart, idempotency keys across replicas, stream outage (test_status.py)" 300 \
	"$PY" "$here/test_status.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --broker-dir "$broker_dir" --work "$TMP/status"
pstep "status stream transport: replay order, from-ms, stop flush, stop during a linger, stream args, pika reader, mismatch, barriers, broker restart and kill -9 (test_status_log.py)" 180 \
	/usr/bin/python3 "$here/test_status_log.py" --build-dir "$BUILD_DIR"
pstep "consumer lifecycle events on the status stream, idempotency dedup key (test_consumer_events.py)" 120 \
	/usr/bin/python3 "$here/test_consumer_events.py" --build-dir "$BUILD_DIR"
pstep "results review (issue 17): batch answers with duplicates keep one id per item; SIGTERM answers requests waiting on the stream at once (test_status_review.py, a broker of its own: it freezes it)" 180 \
	"$PY" "$here/test_status_review.py" --bin "$bin" --work "$TMP/status_review"
pstep "security: topic permissions publish:/subscribe: never open queue routes (tests/integration/test_auth_topics.py)" 120 \
	"$PY" "$here/test_auth_topics.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/auth-topics"
pstep "topics: rq_tmatch's pattern table agrees with RabbitMQ's topic exchange (tests/integration/test_tmatch_rabbitmq.py)" 120 \
	"$PY" "$here/test_tmatch_rabbitmq.py" --mgmt-port "$MGMT_PORT"
run_psteps

# The rest runs in four lanes beside each other (lstep above). Lane a: the steps on this
# broker's queues, then the two that start brokers of their own; lanes b and c: the long
# reviews with brokers of their own; lane d: the real-time steps (issue 18; seventeen
# psteps at once overloaded two cores in CI).
lstep d "real time: /viewer over SSE and WebSocket, /docs Swagger UI, in headless Chromium (test_rt_viewer.py)" 180 \
	"$PY" "$here/test_rt_viewer.py" --build-dir "$BUILD_DIR" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/rt-viewer"
lstep d "real-time: WebSocket subscriptions, acks, ping/pong, 1002/1009/1007, slow reader 1008 (test_rt_ws.py)" 240 \
	"$PY" "$here/test_rt_ws.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/rt-ws"
lstep d "real-time: topic routes, SSE, binds, filters, heartbeat, queue subscription, slow consumer, limits, resume, SIGTERM, kill -9 (test_rt_sse.py)" 240 \
	"$PY" "$here/test_rt_sse.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/rt-sse"
lstep d "real-time hub: topics, fan-out with filters, shared group queues, slow consumer, queue acks/requeue, deleted topic/queue, stream resume, live retained ids, slow management API, limits, broker restart (test_rt_hub.py)" 240 \
	/usr/bin/python3 "$here/test_rt_hub.py" --build-dir "$BUILD_DIR"
lstep d "real-time: a live EventSource on a retained topic reconnects with Last-Event-ID; ids past 2^63 are 400 (test_rt_sse_liveret.py)" 120 \
	"$PY" "$here/test_rt_sse_liveret.py" --bin "$bin" --amqp-port "$BROKER_PORT" --mgmt-port "$MGMT_PORT" --work "$TMP/rt-sse-liveret"
lstep c "status stream: a restarted producer replays 150,000 messages' events with its RSS flat (test_status_memory.py, a broker of its own: 150,000 messages)" 120 \
	"$PY" "$here/test_status_memory.py" --bin "$bin" --work "$TMP/status-memory"
lstep b "broker.sh: PORT + 20000 taken by a non-Erlang socket: the node takes another distribution port (test_broker_ports.sh)" 120 \
	bash "$here/test_broker_ports.sh"
if [ -f "$here/test_consumer.sh" ]; then
	BROKER2_PORT=$(free_broker_port)
	lstep b "consumer tests (tests/integration/test_consumer.sh)" 180 \
		env BUILD_DIR="$BUILD_DIR" BROKER_PORT="$BROKER2_PORT" CONSUMER_HTTP_PORT="$(free_port)" bash "$here/test_consumer.sh"
else
	log "tests/integration/test_consumer.sh not present: skipped"
fi

# Issue 4: reliability under real faults (tests/integration/test_reliability.py). Each step
# uses a queue of its own on this broker, except broker-restart and broker-alarm, which
# restart or reconfigure a broker of their own.
rel=("$PY" "$here/test_reliability.py" --build-dir "$BUILD_DIR")
lstep a "reliability: consumer kill -9 with messages in flight" 120 "${rel[@]}" consumer-kill --amqp-port "$BROKER_PORT"
lstep a "reliability: producer kill -9 under HTTP load" 120 "${rel[@]}" producer-kill --amqp-port "$BROKER_PORT"
lstep a "reliability: retries, dead-letter queue, GET /dlq, POST /dlq/retry" 120 "${rel[@]}" retry-dlq --amqp-port "$BROKER_PORT"
lstep a "reliability: GET /dlq then POST /dlq/retry at once, 10 rounds: all moved, none left behind (dlq-race)" 120 \
	"${rel[@]}" dlq-race --rounds 10 --amqp-port "$BROKER_PORT"
lstep a "reliability: graceful shutdown (SIGTERM) of each service under load" 120 "${rel[@]}" graceful --amqp-port "$BROKER_PORT"
lstep a "reliability: output disk full (tmpfs): deliveries held, no requeue, all written after" 120 "${rel[@]}" output-full --amqp-port "$BROKER_PORT"

# Issue 11: the review holes (every 201 stored, one request never hurts another).
pub=("$PY" "$here/test_publisher_review.py" --build-dir "$BUILD_DIR")
lstep a "publisher: request queue deleted under load: never 201 unstored (mandatory + basic.return)" 120 "${pub[@]}" unroutable
lstep a "publisher: connection lost after the confirm of wait=true: 504 queued, never 503" 120 "${pub[@]}" wait-disconnect
lstep a "publisher: a partly refused batch lists stored / not stored / unknown ids" 120 "${pub[@]}" partial
lstep a "publisher: an id the wire cannot carry is 400, other clients unaffected" 120 "${pub[@]}" wire-limits --amqp-port "$BROKER_PORT"
lstep a "publisher: one client id, several payloads: each one processed (dedup on x-relayq-uid)" 120 "${pub[@]}" same-id --amqp-port "$BROKER_PORT"
lstep a "publisher: POST /dlq/retry with the request queue missing leaves the DLQ unchanged" 120 "${pub[@]}" dlq-unroutable
lstep a "consumer libraries: libcurl loaded only for a webhook HANDLER (test_consumer_libs.sh)" 60 \
	env BUILD_DIR="$BUILD_DIR" bash "$here/test_consumer_libs.sh"
lstep a "payloads unchanged: request body -> queue, reply, OUTPUT_FILE (test_payloads.py)" 120 \
	"$PY" "$here/test_payloads.py" --build-dir "$BUILD_DIR" --amqp-port "$BROKER_PORT"
lstep a "foreign clients: pika RPC client vs our consumer, pika worker vs our producer (test_pika.py)" 120 \
	/usr/bin/python3 "$here/test_pika.py" --build-dir "$BUILD_DIR" --amqp-port "$BROKER_PORT"
lstep a "reliability: broker restarted under HTTP load from 8 threads" 180 "${rel[@]}" broker-restart
lstep a "reliability: broker memory alarm (connection.blocked) and recovery" 120 "${rel[@]}" broker-alarm

# Issue 3's promise under faults: every tailed line in the output exactly once, in order.
lstep c "tail faults: rotate, copytruncate, kill -9 both, broker restart (test_tail_faults.py)" 300 \
	"$PY" "$here/test_tail_faults.py" --build-dir "$BUILD_DIR" --lines "${TAIL_FAULT_LINES:-30000}" \
	--seconds "${TAIL_FAULT_SECONDS:-40}"
lstep b "wire: frame_max 4096 and send deadlines vs a frozen/alarmed broker, AMQP and AMQPS (test_wire_review.py)" 420 \
	"$PY" "$here/test_wire_review.py" --build-dir "$BUILD_DIR"
lstep c "HTTP and DLQ review: empty bodies, lingering 413, DLQ off the HTTP threads, time budget, replay headers (test_http_review.py)" 180 \
	"$PY" "$here/test_http_review.py" --build-dir "$BUILD_DIR"
lstep c "consumer review: poison reply, oversized copies, dedup key, tail ranges, rotation + SIGHUP, reconnect backoff (test_consumer_review.py)" 180 \
	"$PY" "$here/test_consumer_review.py" --build-dir "$BUILD_DIR"
lstep b "consumer concurrency: 40 x 1 s callers in ~1 s, fast not behind slow, SIGTERM mid-processing requeues (test_consumer_concurrency.py)" 180 \
	"$PY" "$here/test_consumer_concurrency.py" --build-dir "$BUILD_DIR" parallel mixed sigterm
# Issue 19: a three-node cluster of its own; the consumer-node, tailer-node, leader,
# no-quorum, maintenance, rolling-restart, partition and status-stream scenarios run in
# `make test-cluster` (all nine, about 8 minutes).
lstep c "cluster: kill -9 the producer's node under load: nothing lost (test_cluster.py)" 300 \
	"$PY" "$here/test_cluster.py" --build-dir "$BUILD_DIR" producer-node
lanes_start
lanes_wait

# Every message the producer accepted must have its line in OUTPUT_FILE (at least once).
log "step: output file has a line for every accepted message"
verify_out=$("$PY" - "$EXPECTED" "$OUTPUT" <<'EOF'
import collections, sys, time
exp_path, out_path = sys.argv[1], sys.argv[2]
with open(exp_path, encoding="utf-8") as f:
    want = collections.Counter(line.rstrip("\n") for line in f)
deadline = time.monotonic() + 30
while True:
    try:
        with open(out_path, "rb") as f:
            got = collections.Counter(l.rstrip(b"\n").decode("utf-8", "replace") for l in f)
    except FileNotFoundError:
        got = collections.Counter()
    missing = {k: n - got[k] for k, n in want.items() if got[k] < n}
    if not missing or time.monotonic() > deadline:
        break
    time.sleep(0.25)
total = sum(want.values())
print("%d expected lines, %d lines in the output file, %d missing" % (total, sum(got.values()), sum(missing.values())))
for k in list(missing)[:5]:
    print("missing: %r x%d" % (k[:120], missing[k]))
sys.exit(1 if missing or total == 0 else 0)
EOF
)
vrc=$?
printf '%s\n' "$verify_out" | sed 's/^/    /' # indent
if [ "$vrc" = 0 ]; then
	pass "output file: $(echo "$verify_out" | head -n 1)"
else
	fail "output file has every accepted message" "$(echo "$verify_out" | head -n 1)"
fi

# Shutdown: every service exits 0 on SIGTERM within 10 s.
log "step: stop services with SIGTERM"
stop_pid "$pid_producer" "producer"
stop_pid "$pid_badreq" "bad-request producer"
stop_pid "$pid_consumer" "consumer"
pid_producer='' pid_badreq='' pid_consumer=''

if grep -lE 'AddressSanitizer|runtime error:|LeakSanitizer|ThreadSanitizer' "$TMP"/*.log "$TMP"/topology/*.log >/dev/null 2>&1; then
	fail "no sanitizer reports in service logs" "$(grep -lE 'AddressSanitizer|runtime error:|LeakSanitizer|ThreadSanitizer' "$TMP"/*.log "$TMP"/topology/*.log 2>/dev/null | tr '\n' ' ')"
else
	pass "no sanitizer reports in service logs"
fi

log "step: stop broker"
if "$root/scripts/broker.sh" stop "$broker_dir" >/dev/null 2>&1; then
	broker_started=
	pass "broker stopped"
else
	fail "broker stopped"
fi

[ -s "$TMP/throughput.txt" ] && cat "$TMP/throughput.txt"
log "finished in $(($(date +%s) - t_start)) s"
summary
