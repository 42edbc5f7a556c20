#!/usr/bin/env bash
# relayq's benchmark (`make bench`): a private broker, the producer and the consumer on
# 127.0.0.1, each step over a fixed duration, one table at the end and every figure in
# bench-results.json in the run folder (printed at the end).
#
#   1. the broker's limit: rq_amqp_tool publishing persistent messages with pipelined confirms
#   2. POST /produce with wrk at 1, 16, 64 and 256 connections
#   3. POST /batch-produce with 100 messages per request
#   4. request/reply (POST /produce with "wait": true) at 16 callers, a consumer running
#   5. file tail end to end (INPUT_FILE -> broker -> fsync'd OUTPUT_FILE), 200,000 lines
#   6. peak RSS (VmHWM) of the producer and the consumer over every step
#   7. the consumer alone draining a pre-filled queue, with and without OUTPUT_FILE
#   9. with BENCH_CLUSTER >= 3: failover under /produce load (tests/integration/test_cluster.py
#      failover: kill -9 the producer's node several times; time to the next 201, p50 and max)
#  10. pull consumption (issue 16, BENCH_STEPS 10 or pull): scripts/bench/pull.py against this
#      broker: GET /queues/{id}/messages?max=100, each pull acked with one batch ack, wrk at
#      BENCH_PULL_CONNECTIONS, beside the broker's own consume rate measured in the same step
#      (tools/rq_consume_rate); the batch ack's latency p50/p99 (a probe: 100 acks a request)
#  11. the status stream (issue 17, BENCH_STEPS 11 or status): /produce at 64 connections with
#      STATUS_STREAM off and on (alternating runs), and how soon a second replica sees a
#      confirmed message (scripts/bench/visibility.py: p50/p99)
#  12. real-time delivery (issue 18, BENCH_STEPS 12 or rt): scripts/bench/rt.py: 1,000 SSE
#      subscribers of one topic (tools/rq_sse_bench) with 200 messages/s published: latency
#      p50/p99 and the producer's peak RSS; WebSocket queue consumption beside the broker's
#      consume rate (BENCH_RT_SUBSCRIBERS, BENCH_RT_RATE, BENCH_RT_SECONDS, BENCH_RT_COUNT;
#      BENCH_RT_REPEATS SSE runs, 3: the run with the median p99 is reported)
#   8. consumer concurrency (issue 14): a burst of 40 waiting callers with processing_time
#      1 s, then 200 with 0.1 s, through one consumer with PREFETCH_COUNT 50 (its own broker:
#      tests/integration/test_consumer_concurrency.py bench); then the steady state: 200
#      closed-loop wrk callers x 0.1 s through one consumer with PREFETCH_COUNT 200 and an
#      OUTPUT_FILE; round trips/s against prefetch/processing_time, p99
#
# Every ratio is against step 1 of the same run. The bench checks what it measured: the 201s
# the producer answered equal the messages confirmed and the queue's depth (a dedicated queue
# per step, no consumer in steps 2-3); wrk's own 201 count matches up to the requests still in
# flight when wrk stopped. It exits 1 on a MISMATCH; a missed target is only reported.
#
# Settings (environment):
#   BENCH_SECONDS (10)             duration of each timed step
#   BENCH_CONNECTIONS ("1 16 64 256")  wrk connections for /produce
#   BENCH_BATCH_SIZE (100)  BENCH_BATCH_CONNECTIONS (16)  BENCH_RR_CONNECTIONS (16)
#   BENCH_TAIL_LINES (200000)  BENCH_TAIL_TIMEOUT (180)  BENCH_DRAIN_COUNT (10000 x BENCH_SECONDS)
#   BENCH_WINDOW (1000)            rq_amqp_tool's confirm window for the broker limit
#   BENCH_QUEUE_TYPE (quorum)      QUEUE_TYPE of every queue, the limit's included (classic|quorum)
#   BENCH_STEPS ("1 2 3 4 5 7 8 10")  the steps to run (6, peak RSS, comes with the others)
#   BENCH_CLUSTER (1)              N >= 2: the broker is a cluster of N nodes (scripts/broker.sh
#                                  cluster; services get RABBITMQ_ADDRESSES), the limit is also
#                                  measured on a single node beside it, and step 9 runs
#   BENCH_PULL_CONNECTIONS (16)  BENCH_PULL_COUNT (60000 x BENCH_SECONDS, messages per queue)
#   BENCH_CONC_CONNECTIONS (200)  BENCH_CONC_PROCESSING_TIME (0.1)  BENCH_CONC_PREFETCH (= callers)
#   BENCH_REPEAT (3)               runs of each step with a target (/produce at 64 connections,
#                                  /batch-produce, request/reply, step 8's steady state);
#                                  the table shows the median of each figure and lists
#                                  every run
#   BENCH_LIMIT_AGAIN (1)          measure the broker limit again at the end (drift; 0: no)
#   BENCH_AMQP_PORT                broker port (default: the first free one in 5680-5699)
#   BENCH_DIR                      run folder (default: a new /tmp/relayq-bench.XXXXXX)
#   BENCH_SKIP_BUILD=1             use BUILD_DIR as it is (default: cmake --build first)
#   BENCH_PRODUCER_ENV, BENCH_CONSUMER_ENV  extra VAR=VALUE words for the services
#   BUILD_DIR (build; configured as Release when it does not exist yet), PYTHON
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

abspath() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$ROOT" "$1" ;; esac; }

PY=${PYTHON:-/usr/bin/python3}
REPORT=$ROOT/scripts/bench/report.py
LUA_DIR=$ROOT/scripts/bench
BUILD_DIR=$(abspath "${BUILD_DIR:-build}")
BIN=$BUILD_DIR/bin
TOOL=$BIN/rq_amqp_tool
SECS=${BENCH_SECONDS:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-1 16 64 256}
BATCH_SIZE=${BENCH_BATCH_SIZE:-100}
BATCH_CONNS=${BENCH_BATCH_CONNECTIONS:-16}
RR_CONNS=${BENCH_RR_CONNECTIONS:-16}
TAIL_LINES=${BENCH_TAIL_LINES:-200000}
TAIL_TIMEOUT=${BENCH_TAIL_TIMEOUT:-180}
DRAIN_COUNT=${BENCH_DRAIN_COUNT:-$((10000 * SECS))}
WINDOW=${BENCH_WINDOW:-1000}
QTYPE=${BENCH_QUEUE_TYPE:-quorum}
STEPS=${BENCH_STEPS:-1 2 3 4 5 7 8 10}
CLUSTER=${BENCH_CLUSTER:-1}
[[ $CLUSTER =~ ^[1-9]$ ]] || { echo "bench: BENCH_CLUSTER must be 1..9" >&2; exit 2; }
[ "$CLUSTER" -ge 3 ] && STEPS="$STEPS 9"
CONC_CONNS=${BENCH_CONC_CONNECTIONS:-200}
CONC_PT=${BENCH_CONC_PROCESSING_TIME:-0.1}
CONC_PREFETCH=${BENCH_CONC_PREFETCH:-$CONC_CONNS}
REPEAT=${BENCH_REPEAT:-3}
CLK_TCK=$(getconf CLK_TCK)
TIMEFORMAT='%U %S' # for `time`: user and system CPU seconds of the load generator

# The services and the tool read these; the bench sets what it needs explicitly.
unset ENV_FILE RABBITMQ_HOST RABBITMQ_PORT RABBITMQ_USER RABBITMQ_PASS RABBITMQ_VHOST

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

[[ $SECS =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECONDS must be a positive integer"
[[ $REPEAT =~ ^[1-9]$ ]] || die "BENCH_REPEAT must be 1..9"
[[ $QTYPE =~ ^(classic|quorum)$ ]] || die "BENCH_QUEUE_TYPE must be classic or quorum"
command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
command -v curl >/dev/null || die "curl is not installed"

# ---- run folder ----------------------------------------------------------------------------
if [ -n "${BENCH_DIR:-}" ]; then
	WORK=$(abspath "$BENCH_DIR")
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/relayq-bench.XXXXXX")
fi
chmod 755 "$WORK" # the broker runs as the rabbitmq user and keeps its data below
LOGS=$WORK/logs
FACTS=$WORK/facts.tsv
BROKER_DIR=$WORK/broker
mkdir -p "$LOGS"
: >"$FACTS"

# ---- build (only the three programs the bench runs) ----------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
	if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
		cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
	fi
	log "building in $BUILD_DIR"
	cmake --build "$BUILD_DIR" -j"${JOBS:-2}" --target producer consumer rq_amqp_tool rq_consume_rate \
		>"$LOGS/build.log" 2>&1 || { tail -n 30 "$LOGS/build.log" >&2; die "build failed"; }
fi
for b in producer consumer rq_amqp_tool; do
	[ -x "$BIN/$b" ] || die "$BIN/$b is missing (build first, or unset BENCH_SKIP_BUILD)"
done
BUILD_TYPE=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$BUILD_DIR/CMakeCache.txt" 2>/dev/null || true)

fact() { printf '%s\t%s\n' "$1" "$2" >>"$FACTS"; }

# ---- ports, cleanup ------------------------------------------------------------------------

if [ -n "${BENCH_AMQP_PORT:-}" ]; then
	AMQP_PORT=$BENCH_AMQP_PORT
else
	AMQP_PORT=
	for p in $(seq 5680 5699); do
		# broker.sh puts the Erlang distribution port at PORT + 20000; a cluster takes N ports
		# from PORT, and the single node beside it (BENCH_CLUSTER) the one after.
		want=()
		for k in $(seq 0 "$CLUSTER"); do want+=($((p + k)) $((p + k + 20000))); done
		if "$PY" "$REPORT" portfree "${want[@]}"; then
			AMQP_PORT=$p
			break
		fi
	done
	[ -n "$AMQP_PORT" ] || die "no free broker port in 5680-5699 (set BENCH_AMQP_PORT)"
fi

PIDS=()
BROKER_STARTED=0

alive() { [ -d "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

# stop_pid PID: SIGTERM, up to 15 s, then SIGKILL; reaps it.
stop_pid() {
	local pid=$1
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 150); do
			alive "$pid" || break
			sleep 0.1
		done
		alive "$pid" && kill -KILL "$pid" 2>/dev/null
	fi
	wait "$pid" 2>/dev/null || true
	local keep=() p
	for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
	PIDS=("${keep[@]}")
}

cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
	if [ "$BROKER_STARTED" = 1 ]; then
		if [ "$CLUSTER" -ge 2 ]; then
			scripts/broker.sh cluster-stop "$BROKER_DIR" >/dev/null 2>&1 || true
			rm -rf "$BROKER_DIR"/node*/mnesia
		else
			scripts/broker.sh stop "$BROKER_DIR" >/dev/null 2>&1 || true
			rm -rf "$BROKER_DIR/mnesia" # persistent messages of the run; the logs stay
		fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers -------------------------------------------------------------------------------
cpu_ticks() { # utime + stime of PID in clock ticks (0 when gone); "busy"/"steal": the machine's
	if [ "$1" = busy ]; then
		awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
	elif [ "$1" = steal ]; then
		awk '/^cpu / { print $9 }' /proc/stat
	elif [ "$1" = cluster ]; then # every node of BENCH_CLUSTER
		local k t=0
		for k in $(seq 1 "$CLUSTER"); do
			t=$((t + $(cpu_ticks "$(cat "$BROKER_DIR/node$k/rabbitmq.pid" 2>/dev/null || echo 0)")))
		done
		echo "$t"
	elif [ -r "/proc/$1/stat" ]; then
		awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
	else
		echo 0
	fi
}
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# cpu_mark STEP ROLE=PID...: remembers the CPU counters now; cpu_record STEP writes the deltas.
declare -A CPU0=()
declare -A CPUPID=()
cpu_mark() {
	local step=$1 kv
	shift
	for kv in "$@"; do
		CPUPID[$step.${kv%%=*}]=${kv#*=}
		CPU0[$step.${kv%%=*}]=$(cpu_ticks "${kv#*=}")
	done
}
cpu_mark_new() { # STEP ROLE=PID: for a process started during the step (counters from 0)
	local step=$1 kv
	shift
	for kv in "$@"; do
		CPUPID[$step.${kv%%=*}]=${kv#*=}
		CPU0[$step.${kv%%=*}]=0
	done
}
cpu_record() {
	local step=$1 key
	for key in "${!CPU0[@]}"; do
		[[ $key == "$step".* ]] || continue
		fact "$step.cpu_ticks.${key#"$step".}" $(($(cpu_ticks "${CPUPID[$key]}") - ${CPU0[$key]}))
		unset "CPU0[$key]" "CPUPID[$key]"
	done
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
depth() { "$TOOL" depth --host 127.0.0.1 --port "$AMQP_PORT" --queue "$1" --quiet; }
delete_queue() { "$TOOL" delete --host 127.0.0.1 --port "$AMQP_PORT" --queue "$1" --quiet >/dev/null 2>&1 || true; }

# quiesce STEP: waits (at most 20 s) until the broker is idle, below 10% of a core over two
# consecutive half seconds, so that a step does not pay for the previous one's background work
# (quorum queue WAL and segment writes, deleted queues, garbage collection). Records the wait.
quiesce() {
	local step=$1 t0 a b calm=0
	t0=$EPOCHREALTIME
	a=$(cpu_ticks "$BROKER_PID")
	for _ in $(seq 1 40); do
		sleep 0.5
		b=$(cpu_ticks "$BROKER_PID")
		if [ $(((b - a) * 100)) -lt $((CLK_TCK * 5)) ]; then
			calm=$((calm + 1))
			[ "$calm" -ge 2 ] && break
		else
			calm=0
		fi
		a=$b
	done
	fact "$step.quiesce_s" "$(elapsed "$t0")"
}

# start_service ROLE STEP VAR=VALUE...: starts build/bin/ROLE with a clean environment and
# waits for /health/ready. Sets SVC_PID and SVC_URL.
SVC_PID=
SVC_URL=
start_service() {
	local role=$1 step=$2 port extra
	shift 2
	port=$("$PY" "$REPORT" freeport)
	if [ "$role" = producer ]; then
		set -- PRODUCER_BIND=127.0.0.1 PRODUCER_PORT="$port" "$@"
		extra=${BENCH_PRODUCER_ENV:-}
	else
		set -- CONSUMER_BIND=127.0.0.1 CONSUMER_PORT="$port" "$@"
		extra=${BENCH_CONSUMER_ENV:-}
	fi
	# shellcheck disable=SC2086 # extra is a list of VAR=VALUE words
	# A status stream per step (the step's producer and consumer share it; a step's own
	# STATUS_STREAM=... overrides it): a producer reads its stream from the start when it
	# starts, and in one stream every step would first replay the events of the steps before
	# it (millions of events late in the run), on the CPU the step measures.
	env -i PATH="$PATH" HOME="${HOME:-/root}" LOG_LEVEL=warn RABBITMQ_HOST=127.0.0.1 \
		RABBITMQ_PORT="$AMQP_PORT" RABBITMQ_ADDRESSES="$ADDRESSES" QUEUE_TYPE="$QTYPE" \
		STATUS_STREAM="relayq.status.bench.$step" "$@" $extra \
		"$BIN/$role" >>"$LOGS/$step.$role.log" 2>&1 &
	SVC_PID=$!
	SVC_URL=http://127.0.0.1:$port
	PIDS+=("$SVC_PID")
	for _ in $(seq 1 300); do
		alive "$SVC_PID" || { tail -n 20 "$LOGS/$step.$role.log" >&2; die "$role exited during $step"; }
		if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$SVC_URL/health/ready")" = 200 ]; then
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$LOGS/$step.$role.log" >&2
	die "$role not ready after 30 s during $step"
}

# stop_service ROLE STEP PID: records the peak RSS, then stops the process.
stop_service() {
	local role=$1 step=$2 pid=$3 kb
	kb=$(hwm_kb "$pid")
	[ -n "$kb" ] && fact "$step.rss_kb.$role" "$kb"
	# what the peak is made of, now: private memory, and mapped files (shared libraries)
	kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
	[ -n "$kb" ] && fact "$step.rss_anon_kb.$role" "$kb"
	kb=$(awk '/^RssFile:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
	[ -n "$kb" ] && fact "$step.rss_file_kb.$role" "$kb"
	alive "$pid" || log "warning: $role of $step had exited already (see $LOGS/$step.$role.log)"
	stop_pid "$pid"
}

# run_wrk STEP CONNECTIONS SCRIPT URL: wrk over SECS seconds; output in logs/STEP.wrk.txt.
run_wrk() {
	local step=$1 c=$2 script=$3 url=$4 t=2
	[ "$c" -ge 2 ] || t=1
	fact "$step.connections" "$c"
	fact "$step.threads" "$t"
	fact "$step.wrk" "$LOGS/$step.wrk.txt"
	fact "$step.loadgen_time" "$LOGS/$step.wrk.time"
	{ time BATCH_SIZE=$BATCH_SIZE wrk -t"$t" -c"$c" -d"${SECS}s" --timeout 10s --latency \
		-s "$LUA_DIR/$script" "$url" >"$LOGS/$step.wrk.txt" 2>&1; } 2>"$LOGS/$step.wrk.time" ||
		log "warning: wrk failed in $step (see $LOGS/$step.wrk.txt)"
}

BROKER_PID=
broker_pid() { cat "$BROKER_DIR/rabbitmq.pid" 2>/dev/null || echo 0; }

# ---- meta ----------------------------------------------------------------------------------
fact meta.date "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
fact meta.host "$(uname -srm)"
fact meta.nproc "$(nproc)"
fact meta.cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
fact meta.build_type "${BUILD_TYPE:-?}"
fact meta.build_dir "$BUILD_DIR"
fact meta.git "$(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')"
fact meta.bench_seconds "$SECS"
fact meta.loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
fact meta.clk_tck "$CLK_TCK"
fact meta.amqp_port "$AMQP_PORT"
fact meta.run_dir "$WORK"
fact meta.produce_connections "$CONNECTIONS"
fact meta.steps "$STEPS"
fact meta.queue_type "$QTYPE"
fact meta.services_env "${BENCH_PRODUCER_ENV:-} ${BENCH_CONSUMER_ENV:-}"
fact meta.wrk "$(wrk --version 2>&1 | head -n 1)"

log "run folder $WORK"
BROKER_STARTED=1
if [ "$CLUSTER" -ge 2 ]; then
	log "starting a cluster of $CLUSTER nodes on 127.0.0.1:$AMQP_PORT..$((AMQP_PORT + CLUSTER - 1))"
	scripts/broker.sh cluster "$BROKER_DIR" "$CLUSTER" "$AMQP_PORT" >"$LOGS/broker-start.log" 2>&1 ||
		{ cat "$LOGS/broker-start.log" >&2; die "the cluster did not start"; }
	BROKER_PID=cluster # cpu_ticks sums every node
	ADDRESSES=$(for k in $(seq 0 $((CLUSTER - 1))); do printf '127.0.0.1:%d,' $((AMQP_PORT + k)); done)
	ADDRESSES=${ADDRESSES%,}
	fact meta.cluster_nodes "$CLUSTER"
else
	log "starting a broker on 127.0.0.1:$AMQP_PORT"
	scripts/broker.sh start "$BROKER_DIR" "$AMQP_PORT" >"$LOGS/broker-start.log" 2>&1 ||
		{ cat "$LOGS/broker-start.log" >&2; die "the broker did not start"; }
	BROKER_PID=$(broker_pid)
	ADDRESSES=
	fact meta.cluster_nodes 1
fi
fact meta.broker "RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?')"

# ---- 1. the broker's limit -----------------------------------------------------------------
step_limit() { # STEP: limit (first, the denominator) or limit_end (again at the end: drift)
	# rq_amqp_tool publishes a fixed count, so the step runs it in chunks of about 2 s until
	# BENCH_SECONDS have passed; the rate is the sum of confirmed messages over the sum of the
	# tool's own publishing times (connection set-up excluded, each chunk's last confirms in).
	local step=$1 rate0 chunk t0
	"$TOOL" publish --host 127.0.0.1 --port "$AMQP_PORT" --queue bench.warmup --declare --queue-type "$QTYPE" \
		--count 5000 --window "$WINDOW" --quiet >"$LOGS/$step.warmup.out" 2>&1 ||
		{ cat "$LOGS/$step.warmup.out" >&2; die "warm-up publish failed"; }
	rate0=$(sed -n 's/.* rate=\([0-9]*\).*/\1/p' "$LOGS/$step.warmup.out")
	delete_queue bench.warmup
	chunk=$((${rate0:-5000} * 2))
	[ "$chunk" -ge 2000 ] || chunk=2000
	fact "$step.window" "$WINDOW"
	fact "$step.out" "$LOGS/$step.out"
	fact "$step.loadgen_time" "$LOGS/$step.time"
	: >"$LOGS/$step.out"
	: >"$LOGS/$step.time"
	quiesce "$step"
	cpu_mark "$step" broker="$BROKER_PID" machine=busy steal=steal
	t0=$EPOCHREALTIME
	while awk -v a="$t0" -v b="$EPOCHREALTIME" -v s="$SECS" 'BEGIN { exit !(b - a < s) }'; do
		{ time "$TOOL" publish --host 127.0.0.1 --port "$AMQP_PORT" --queue bench.limit \
			--declare --queue-type "$QTYPE" --count "$chunk" --window "$WINDOW" --timeout $((SECS * 10 + 60)) \
			--quiet >>"$LOGS/$step.out" 2>&1; } 2>>"$LOGS/$step.time" ||
			{ log "warning: the limit publish failed (see $LOGS/$step.out)"; break; }
	done
	fact "$step.wall_s" "$(elapsed "$t0")"
	cpu_record "$step"
	fact "$step.depth" "$(depth bench.limit || echo -1)"
	delete_queue bench.limit
	log "    $("$PY" "$REPORT" tool-rate "$LOGS/$step.out") msg/s"
}

# ---- 2. and 3. POST /produce and /batch-produce (no consumer: the queue keeps every message) --
step_produce() { # STEP QUEUE SCRIPT PATH CONNECTIONS [VAR=VALUE...]
	local step=$1 q=$2 script=$3 path=$4 c=$5 pid url t0
	shift 5
	delete_queue "$q"
	start_service producer "$step" REQUEST_QUEUE="$q" "$@"
	pid=$SVC_PID url=$SVC_URL
	quiesce "$step"
	cpu_mark "$step" producer="$pid" broker="$BROKER_PID" machine=busy steal=steal
	t0=$EPOCHREALTIME
	run_wrk "$step" "$c" "$script" "$url$path"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$url/metrics" \
		produced=messages_produced_total server_status="http_status:$path" ||
		log "warning: could not read the producer's metrics in $step"
	fact "$step.wall_s" "$(elapsed "$t0")"
	cpu_record "$step"
	fact "$step.depth" "$(depth "$q" || echo -1)"
	stop_service producer "$step" "$pid"
	delete_queue "$q"
}

# ---- 4. request/reply ----------------------------------------------------------------------
step_rr() { # STEP (rr, or rr_r2... for a repeat)
	local step=${1:-rr} q=bench.rr cpid curl ppid purl t0
	delete_queue "$q"
	start_service consumer "$step" REQUEST_QUEUE="$q"
	cpid=$SVC_PID curl=$SVC_URL
	start_service producer "$step" REQUEST_QUEUE="$q"
	ppid=$SVC_PID purl=$SVC_URL
	quiesce "$step"
	cpu_mark "$step" producer="$ppid" consumer="$cpid" broker="$BROKER_PID" machine=busy steal=steal
	t0=$EPOCHREALTIME
	run_wrk "$step" "$RR_CONNS" wait.lua "$purl/produce"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$purl/metrics" \
		produced=messages_produced_total replies_received=producer_replies_received_total \
		server_status=http_status:/produce || log "warning: could not read the producer's metrics"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$curl/metrics" \
		consumed=messages_consumed_total replies_sent=consumer_replies_sent_total ||
		log "warning: could not read the consumer's metrics"
	fact "$step.wall_s" "$(elapsed "$t0")"
	cpu_record "$step"
	fact "$step.depth" "$(depth "$q" || echo -1)"
	stop_service producer "$step" "$ppid"
	stop_service consumer "$step" "$cpid"
	delete_queue "$q"
}

# ---- 8. consumer concurrency, steady state -------------------------------------------------
# CONC_CONNS wrk connections, each a closed-loop caller (POST /produce wait=true with
# processing_time CONC_PT, the echo handler's timer), through one consumer with
# PREFETCH_COUNT=CONC_PREFETCH and an OUTPUT_FILE (group commit, fdatasync) after a 2 s
# warm-up; the same checks as step 4. STAGGER 1: each caller's first request leaves at a
# random moment within one processing time (independent callers); 0: all in the same
# millisecond (wrk's start), and every cycle after stays one burst of CONC_CONNS requests.
step_conc() { # STEP STAGGER (conc, conc_r2..., conc_lock...)
	local step=$1 stagger=$2 q=bench.conc cpid curl ppid purl t0
	export STAGGER=$stagger CONC_CONNS_PER_THREAD=$(((CONC_CONNS + 1) / 2))
	fact "$step.stagger" "$stagger"
	delete_queue "$q"
	rm -f "$WORK/conc.output"
	start_service consumer "$step" REQUEST_QUEUE="$q" PREFETCH_COUNT="$CONC_PREFETCH" \
		OUTPUT_FILE="$WORK/conc.output"
	cpid=$SVC_PID curl=$SVC_URL
	start_service producer "$step" REQUEST_QUEUE="$q" REPLY_TIMEOUT_MS=30000
	ppid=$SVC_PID purl=$SVC_URL
	fact "$step.prefetch" "$CONC_PREFETCH"
	fact "$step.processing_time_s" "$CONC_PT"
	PROCESSING_TIME=$CONC_PT wrk -t2 -c"$CONC_CONNS" -d2s --timeout 10s -s "$LUA_DIR/wait_pt.lua" \
		"$purl/produce" >"$LOGS/$step.warmup.txt" 2>&1 || log "warning: the warm-up of $step failed"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step.warmup" "$purl/metrics" \
		server_status=http_status:/produce >/dev/null || log "warning: could not read the producer's metrics"
	cpu_mark "$step" producer="$ppid" consumer="$cpid" broker="$BROKER_PID" machine=busy steal=steal
	t0=$EPOCHREALTIME
	PROCESSING_TIME=$CONC_PT run_wrk "$step" "$CONC_CONNS" wait_pt.lua "$purl/produce"
	fact "$step.wall_s" "$(elapsed "$t0")"
	cpu_record "$step"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$purl/metrics" \
		produced=messages_produced_total replies_received=producer_replies_received_total \
		server_status=http_status:/produce || log "warning: could not read the producer's metrics"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$curl/metrics" \
		consumed=messages_consumed_total replies_sent=consumer_replies_sent_total \
		lines_written=consumer_lines_written_total || log "warning: could not read the consumer's metrics"
	fact "$step.output_lines" "$(wc -l <"$WORK/conc.output" 2>/dev/null || echo -1)"
	fact "$step.depth" "$(depth "$q" || echo -1)"
	stop_service producer "$step" "$ppid"
	stop_service consumer "$step" "$cpid"
	delete_queue "$q"
}

# ---- 5. file tail end to end ---------------------------------------------------------------
# The input file is complete before the producer starts (TAIL_FROM=head); the clock runs from
# the producer's start until the consumer's output file holds every byte, then cmp.
step_tail() {
	local q=bench.tail tdir=$WORK/tail size cpid ppid phelp end
	local tail_env=()
	phelp=$("$BIN/producer" --help 2>/dev/null || true)
	if ! grep -q INPUT_FILE <<<"$phelp"; then
		log "    skipped: the producer has no INPUT_FILE yet"
		fact tail.status skipped
		fact tail.why "no tailer"
		return 0
	fi
	rm -rf "$tdir"
	mkdir -p "$tdir/state"
	"$PY" "$REPORT" gen-lines "$tdir/input.log" "$TAIL_LINES"
	size=$(stat -c %s "$tdir/input.log")
	fact tail.status ran
	fact tail.lines "$TAIL_LINES"
	fact tail.bytes "$size"
	delete_queue "$q"
	start_service consumer tail REQUEST_QUEUE="$q" OUTPUT_FILE="$tdir/output.log"
	cpid=$SVC_PID
	tail_env=(REQUEST_QUEUE="$q" INPUT_FILE="$tdir/input.log")
	grep -q TAIL_STATE_DIR <<<"$phelp" && tail_env+=(TAIL_STATE_DIR="$tdir/state")
	grep -q TAIL_FROM <<<"$phelp" && tail_env+=(TAIL_FROM=head)
	quiesce tail
	cpu_mark tail consumer="$cpid" broker="$BROKER_PID" machine=busy steal=steal
	fact tail.t_start "$EPOCHREALTIME"
	start_service producer tail "${tail_env[@]}"
	ppid=$SVC_PID
	cpu_mark_new tail producer="$ppid"
	if end=$("$PY" "$REPORT" wait-size "$tdir/output.log" "$size" "$TAIL_TIMEOUT"); then
		fact tail.t_end "$end"
		cpu_record tail
		sleep 1 # a late duplicate would show in cmp
	else
		cpu_record tail
		fact tail.timeout "$end"
		log "warning: the output file did not reach the input's size within $TAIL_TIMEOUT s ($end)"
	fi
	if cmp -s "$tdir/input.log" "$tdir/output.log"; then
		fact tail.cmp identical
	else
		fact tail.cmp differ
	fi
	fact tail.output_lines "$(wc -l <"$tdir/output.log" 2>/dev/null || echo -1)"
	fact tail.depth "$(depth "$q" || echo -1)"
	stop_service producer tail "$ppid"
	stop_service consumer tail "$cpid"
	delete_queue "$q"
	if grep -q '^tail.cmp	identical' "$FACTS"; then rm -f "$tdir/input.log" "$tdir/output.log"; fi
}

# ---- 7. the consumer draining a pre-filled queue -------------------------------------------
step_drain() { # MODE: file (OUTPUT_FILE, the durable path) or plain (ack only)
	local mode=$1 step=drain_$1 q=bench.drain.$1 cpid end
	local out_env=()
	delete_queue "$q"
	fact "$step.count" "$DRAIN_COUNT"
	fact "$step.prefill_out" "$LOGS/$step.prefill.out"
	"$TOOL" publish --host 127.0.0.1 --port "$AMQP_PORT" --queue "$q" --declare \
		--queue-type "$QTYPE" --count "$DRAIN_COUNT" --window "$WINDOW" --id-prefix drain --timeout 600 \
		>"$LOGS/$step.prefill.out" 2>&1 || log "warning: pre-filling $q failed"
	if [ "$mode" = file ]; then
		rm -f "$WORK/drain.out"
		out_env=(OUTPUT_FILE="$WORK/drain.out")
	fi
	quiesce "$step"
	cpu_mark "$step" broker="$BROKER_PID" machine=busy steal=steal
	fact "$step.t_start" "$EPOCHREALTIME"
	start_service consumer "$step" REQUEST_QUEUE="$q" "${out_env[@]}"
	cpid=$SVC_PID
	cpu_mark_new "$step" consumer="$cpid"
	if end=$("$PY" "$REPORT" wait-metric "$SVC_URL/metrics" messages_consumed_total \
		"$DRAIN_COUNT" $((SECS * 30 + 60))); then
		fact "$step.t_end" "$end"
	else
		fact "$step.timeout" "$end"
		log "warning: the consumer did not drain $q in time ($end)"
	fi
	cpu_record "$step"
	"$PY" "$REPORT" settle --facts "$FACTS" --prefix "$step" "$SVC_URL/metrics" \
		consumed=messages_consumed_total || true
	fact "$step.depth" "$(depth "$q" || echo -1)"
	if [ "$mode" = file ]; then
		fact "$step.output_lines" "$(wc -l <"$WORK/drain.out" 2>/dev/null || echo -1)"
	fi
	stop_service consumer "$step" "$cpid"
	delete_queue "$q"
	rm -f "$WORK/drain.out"
}

# ---- the run -------------------------------------------------------------------------------
want() { [[ " $STEPS " == *" $1 "* ]]; }

if want 1; then
	log "1/7 broker limit: rq_amqp_tool publish, window $WINDOW, ~${SECS} s"
	step_limit limit
	if [ "$CLUSTER" -ge 2 ]; then
		single=$((AMQP_PORT + CLUSTER))
		log "1/7 broker limit on one node beside the cluster (127.0.0.1:$single)"
		scripts/broker.sh start "$WORK/single" "$single" >"$LOGS/single-start.log" 2>&1 ||
			{ cat "$LOGS/single-start.log" >&2; die "the single node did not start"; }
		(
			AMQP_PORT=$single
			BROKER_PID=$(cat "$WORK/single/rabbitmq.pid")
			step_limit limit_single
		)
		scripts/broker.sh stop "$WORK/single" >/dev/null 2>&1 || true
		rm -rf "$WORK/single/mnesia"
	fi
fi
# run_name BASE K: the step name of run K of a repeated step (BASE, BASE_r2, BASE_r3...).
run_name() { if [ "$2" -le 1 ]; then printf '%s' "$1"; else printf '%s_r%s' "$1" "$2"; fi; }

if want 2; then
	for c in $CONNECTIONS; do
		runs=1
		[ "$c" = 64 ] && runs=$REPEAT
		for k in $(seq 1 "$runs"); do
			log "2/7 POST /produce, $c connection(s), ${SECS} s (run $k of $runs)"
			step_produce "$(run_name "produce_c$c" "$k")" "bench.produce.c$c" produce.lua /produce "$c"
		done
	done
fi
if want 3; then
	fact batch.batch_size "$BATCH_SIZE"
	for k in $(seq 1 "$REPEAT"); do
		log "3/7 POST /batch-produce, $BATCH_SIZE messages per request, $BATCH_CONNS connections, ${SECS} s (run $k of $REPEAT)"
		step_produce "$(run_name batch "$k")" bench.batch batch.lua /batch-produce "$BATCH_CONNS"
	done
fi
if want 4; then
	for k in $(seq 1 "$REPEAT"); do
		log "4/7 request/reply, $RR_CONNS callers, ${SECS} s (run $k of $REPEAT)"
		step_rr "$(run_name rr "$k")"
	done
fi
if want 5; then
	log "5/7 file tail end to end, $TAIL_LINES lines"
	step_tail
fi
if want 7; then
	log "7/7 consumer draining $DRAIN_COUNT queued messages, with OUTPUT_FILE"
	step_drain file
	log "7/7 consumer draining $DRAIN_COUNT queued messages, without OUTPUT_FILE"
	step_drain plain
fi
if want 8; then
	log "8/8 consumer concurrency: 40 waiting callers x 1 s, 200 x 0.1 s, one consumer (prefetch 50)"
	cc_out=$("$PY" tests/integration/test_consumer_concurrency.py --build-dir "$BUILD_DIR" bench 2>&1) ||
		{ echo "$cc_out" | tail -20; echo "MISMATCH: consumer concurrency bench failed"; exit 1; }
	echo "$cc_out" | grep 'bench: ' | sed 's/^.*bench: /    /'
	while read -r n rts p99; do
		fact "concurrency.callers_${n}.round_trips_per_s" "$rts"
		fact "concurrency.callers_${n}.p99_s" "$p99"
	done < <(echo "$cc_out" | sed -n 's/.*bench: \([0-9]*\) callers.* = \([0-9.]*\) round trips\/s.*p99 \([0-9.]*\) s.*/\1 \2 \3/p')
	for k in $(seq 1 "$REPEAT"); do
		log "8/8 consumer concurrency, steady state: $CONC_CONNS independent closed-loop callers x $CONC_PT s, PREFETCH_COUNT $CONC_PREFETCH, run $k of $REPEAT"
		step_conc "$(run_name conc "$k")" 1
	done
	for k in $(seq 1 "$REPEAT"); do
		log "8/8 consumer concurrency, lockstep: $CONC_CONNS callers started in the same millisecond x $CONC_PT s, run $k of $REPEAT"
		step_conc "$(run_name conc_lock "$k")" 0
	done
fi
if want 9; then
	log "9/9 failover: kill -9 the producer's node ${BENCH_FAILOVER_KILLS:-5} times under /produce load (test_cluster.py failover, a cluster of its own)"
	fo_out=$("$PY" tests/integration/test_cluster.py --build-dir "$BUILD_DIR" --kills "${BENCH_FAILOVER_KILLS:-5}" failover 2>&1) ||
		{ echo "$fo_out" | tail -20; echo "MISMATCH: the failover bench failed"; exit 1; }
	echo "$fo_out" | grep 'bench: ' | sed 's/^.*bench: /    /'
	fo=$(echo "$fo_out" | sed -n 's/.*bench: failover .* p50 \([0-9.]*\) s, max \([0-9.]*\) s.*/\1 \2/p')
	fact failover.kills "${BENCH_FAILOVER_KILLS:-5}"
	fact failover.p50_s "${fo% *}"
	fact failover.max_s "${fo#* }"
fi
if want 10 || want pull; then
	PULL_CONNS=${BENCH_PULL_CONNECTIONS:-16}
	PULL_COUNT=${BENCH_PULL_COUNT:-$((60000 * SECS))}
	log "10/10 pull consumption: GET max=100 + one batch ack per pull, $PULL_CONNS connections, ${SECS} s, beside the broker's own consume rate ($PULL_COUNT messages per queue)"
	[ -x "$BIN/rq_consume_rate" ] || die "$BIN/rq_consume_rate is missing (build it)"
	quiesce pull
	bpid=$BROKER_PID
	[ "$bpid" = cluster ] && bpid=0
	fact pull.out "$LOGS/pull.json"
	"$PY" scripts/bench/pull.py --bin "$BIN" --amqp-port "$AMQP_PORT" --broker-pid "$bpid" \
		--count "$PULL_COUNT" --seconds "$SECS" --connections "$PULL_CONNS" --queue-type "$QTYPE" \
		--work "$WORK/pull" --producer-env "${BENCH_PRODUCER_ENV:-}" --out "$LOGS/pull.json" \
		>"$LOGS/pull.log" 2>&1 || log "warning: the pull bench reported a failure (see $LOGS/pull.log)"
	"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print("    pull %s msg/s = %.0f%% of the broker consume rate %s msg/s; batch ack p50 %s ms, p99 %s ms" % (r["pull_rate"], 100*r["pull_vs_consume"], r["broker_consume"]["rate"], r["ack_latency_ms"]["p50"], r["ack_latency_ms"]["p99"]))' \
		"$LOGS/pull.json" 2>/dev/null || log "warning: no pull figures (see $LOGS/pull.log)"
fi
if want 11 || want status; then
	# The status stream's cost: /produce at 64 connections with STATUS_STREAM off and on
	# (alternating, REPEAT runs each), then how soon a second replica sees a confirmed message.
	for k in $(seq 1 "$REPEAT"); do
		log "11/11 POST /produce, 64 connections, status stream off (run $k of $REPEAT)"
		step_produce "$(run_name status_off "$k")" bench.status.off produce.lua /produce 64 STATUS_STREAM=
		log "11/11 POST /produce, 64 connections, status stream on (run $k of $REPEAT)"
		step_produce "$(run_name status_on "$k")" bench.status.on produce.lua /produce 64 \
			STATUS_STREAM=relayq.status.bench
	done
	log "11/11 visibility: a message produced on replica A, polled on replica B (every 1 ms)"
	delete_queue bench.status.vis
	# a stream of its own: replica B does not first replay the runs' history
	delete_queue relayq.status.bench
	start_service producer status_vis_a REQUEST_QUEUE=bench.status.vis STATUS_STREAM=relayq.status.vis
	vis_a=$SVC_PID vis_a_url=$SVC_URL
	start_service producer status_vis_b REQUEST_QUEUE=bench.status.vis STATUS_STREAM=relayq.status.vis
	vis_b=$SVC_PID vis_b_url=$SVC_URL
	vis=$("$PY" scripts/bench/visibility.py "$vis_a_url" "$vis_b_url" --count "${BENCH_VIS_COUNT:-300}" 2>&1) ||
		log "warning: visibility probe: $vis"
	log "    $vis"
	fact status.visibility "$vis"
	fact status.visibility_p50_ms "$(echo "$vis" | sed -n 's/.*p50=\([0-9.]*\).*/\1/p')"
	fact status.visibility_p99_ms "$(echo "$vis" | sed -n 's/.*p99=\([0-9.]*\).*/\1/p')"
	stop_service producer status_vis_b "$vis_b"
	stop_service producer status_vis_a "$vis_a"
	delete_queue bench.status.vis
	delete_queue relayq.status.vis
fi
if want 12 || want rt; then
	# Real-time delivery (issue 18): SSE fan-out to BENCH_RT_SUBSCRIBERS subscribers of one topic
	# at BENCH_RT_RATE messages/s, then WebSocket queue consumption beside the broker's consume
	# rate (scripts/bench/rt.py; a producer of its own on this broker).
	RT_SUBS=${BENCH_RT_SUBSCRIBERS:-1000}
	RT_RATE=${BENCH_RT_RATE:-200}
	log "12/12 real-time: $RT_SUBS SSE subscribers x $RT_RATE msg/s for ${BENCH_RT_SECONDS:-20} s; WebSocket queue consumption (${BENCH_RT_COUNT:-100000} messages) beside the broker's consume rate"
	[ -x "$BIN/rq_sse_bench" ] || die "$BIN/rq_sse_bench is missing (build it)"
	quiesce rt
	fact rt.out "$LOGS/rt.json"
	"$PY" scripts/bench/rt.py --bin "$BIN" --amqp-port "$AMQP_PORT" --subscribers "$RT_SUBS" \
		--rate "$RT_RATE" --seconds "${BENCH_RT_SECONDS:-20}" --count "${BENCH_RT_COUNT:-100000}" \
		--sse-repeats "${BENCH_RT_REPEATS:-3}" \
		--queue-type "$QTYPE" --work "$WORK/rt" --producer-env "${BENCH_PRODUCER_ENV:-}" \
		--out "$LOGS/rt.json" >"$LOGS/rt.log" 2>&1 || log "warning: the real-time bench reported a failure (see $LOGS/rt.log)"
	grep -E '^(sse|sse run [0-9]+|ws): ' "$LOGS/rt.log" | sed 's/^/    /' || log "warning: no real-time figures (see $LOGS/rt.log)"
fi
if want 1 && [ "${BENCH_LIMIT_AGAIN:-1}" = 1 ]; then
	log "1/7 broker limit again (drift over the run)"
	step_limit limit_end
fi

fact meta.loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
cleanup
BROKER_STARTED=0
trap - EXIT

echo
rc=0
"$PY" "$REPORT" summarize "$WORK" || rc=$?
echo
echo "figures: $WORK/bench-results.json (table: $WORK/bench-table.txt, logs: $LOGS)"
exit "$rc"
