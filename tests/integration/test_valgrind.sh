#!/usr/bin/env bash
# test_valgrind.sh - the integration path once under valgrind memcheck (issue 6).
#
# Runs the producer (with API keys and a rate limit, so those paths run too) and the consumer
# (with OUTPUT_FILE) under `valgrind --leak-check=full --error-exitcode=99`, drives a short
# produce / consume / reply exchange through them (VG_REQUESTS requests from 4 threads: single
# and batch produces waiting for replies, message lookups, bad requests, 401s), stops both with
# SIGTERM and requires: exit status 0 (99 would mean memcheck errors), `ERROR SUMMARY: 0
# errors`, and no definitely or indirectly lost bytes in either process.
#
# Environment: BUILD_DIR (build), BROKER_PORT (a running broker on 127.0.0.1; default: start
# one on a free port), WORK (scratch folder; default mktemp), VG_REQUESTS (300).
# Prints `N passed, N failed`; exit 1 on failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

resolve_build_dir
own_work=
[ -z "${WORK:-}" ] && own_work=1
WORK=${WORK:-$(mktemp -d /tmp/relayq-vg.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK"
VG_REQUESTS=${VG_REQUESTS:-300}
broker_started=
pid_p='' pid_c=''

cleanup() {
	local rc=$?
	kill_quietly "$pid_p" "$pid_c"
	[ -n "$broker_started" ] && "$root/scripts/broker.sh" stop "$WORK/broker" >/dev/null 2>&1
	if [ -n "$own_work" ] && [ "$RQ_FAILED" -eq 0 ] && [ "${KEEP_TMP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "logs kept in $WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v valgrind >/dev/null; then
	fail "valgrind installed" "apt-get install valgrind (scripts/install-deps.sh does)"
	summary
	exit 1
fi
if [ -z "${BROKER_PORT:-}" ]; then
	BROKER_PORT=$(free_broker_port)
	broker_started=1
	if ! "$root/scripts/broker.sh" start "$WORK/broker" "$BROKER_PORT" >"$WORK/broker.log" 2>&1; then
		fail "broker started" "$(tail -n 3 "$WORK/broker.log" | tr '\n' ' ')"
		summary
		exit 1
	fi
fi

SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
P_PORT=$(free_port)
C_PORT=$(free_port)
QUEUE=relayq_vg_$$
VG=(valgrind --quiet --leak-check=full --show-leak-kinds=definite,indirect
	--errors-for-leak-kinds=definite,indirect --error-exitcode=99 --num-callers=30)
common=(RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT="$BROKER_PORT" REQUEST_QUEUE="$QUEUE" LOG_LEVEL=warn)

log "starting producer :$P_PORT and consumer :$C_PORT under valgrind (queue $QUEUE)"
env "${common[@]}" PRODUCER_PORT="$P_PORT" API_KEYS="vg:$SECRET" RATE_LIMIT_RPS=100000 \
	REPLY_TIMEOUT_MS=60000 PUBLISH_TIMEOUT_MS=30000 \
	"${VG[@]}" --log-file="$WORK/vg-producer.log" "$bin/producer" >"$WORK/producer.log" 2>&1 &
pid_p=$!
env "${common[@]}" CONSUMER_PORT="$C_PORT" OUTPUT_FILE="$WORK/output.txt" \
	"${VG[@]}" --log-file="$WORK/vg-consumer.log" "$bin/consumer" >"$WORK/consumer.log" 2>&1 &
pid_c=$!
if wait_ready "http://127.0.0.1:$P_PORT/health/ready" 90 && wait_ready "http://127.0.0.1:$C_PORT/health/ready" 90; then
	pass "producer and consumer ready under valgrind"
else
	fail "producer and consumer ready under valgrind" "$(tail -n 3 "$WORK/producer.log" "$WORK/consumer.log" | tr '\n' ' ')"
	summary
	exit 1
fi

out=$(timeout -k 5 240 "$PY" - "$P_PORT" "$SECRET" "$VG_REQUESTS" <<'EOF'
import http.client, json, sys, threading
port, secret, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
auth = {"Authorization": "Bearer " + secret, "Content-Type": "application/json"}
counts, bad, lock = {}, [], threading.Lock()

def one(c, i):
    kind = i % 10
    if kind < 5:
        body = {"payload": {"n": i, "s": "vg"}, "wait": True}
        c.request("POST", "/produce", json.dumps(body), auth)
        want = 200
    elif kind < 7:
        body = {"messages": [{"payload": "m%d-%d" % (i, k)} for k in range(5)], "wait": True}
        c.request("POST", "/batch-produce", json.dumps(body), auth)
        want = 200
    elif kind == 7:
        c.request("POST", "/produce", '{"payload": [1, 2', auth)
        want = 400
    elif kind == 8:
        c.request("POST", "/produce", '{"payload": 1}', {"Content-Type": "application/json"})
        want = 401
    else:
        c.request("GET", "/messages/vg-unknown-%d" % i, headers=auth)
        want = 404
    r = c.getresponse()
    data = r.read()
    with lock:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status != want:
            bad.append("%d: %d %r" % (i, r.status, data[:120]))
        elif want == 200 and b"Consumer processed" not in data:
            bad.append("%d: no reply in %r" % (i, data[:120]))
    if r.will_close:
        c.close()

def worker(t):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for i in range(t, total, 4):
        one(c, i)
    c.close()

ths = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
for t in ths: t.start()
for t in ths: t.join()
print("statuses: %s" % json.dumps(counts, sort_keys=True))
for b in bad[:5]: print("unexpected: " + b)
sys.exit(1 if bad or sum(counts.values()) != total else 0)
EOF
)
rc=$?
printf '%s\n' "$out" | sed 's/^/    /'
[ "$rc" = 0 ] && pass "$VG_REQUESTS requests under valgrind: replies, batches, 400/401/404 as expected" ||
	fail "$VG_REQUESTS requests under valgrind" "exit $rc"

log "stopping both with SIGTERM (valgrind then reports leaks)"
stop_pid "$pid_p" "producer under valgrind" 60
stop_pid "$pid_c" "consumer under valgrind" 60
pid_p='' pid_c=''

for who in producer consumer; do
	f=$WORK/vg-$who.log
	# --quiet: the log holds only errors and leak records (exit 99 above says the same).
	if [ -f "$f" ] && ! grep -qE 'ERROR SUMMARY: [1-9]|are (definitely|indirectly) lost|Invalid (read|write|free)|uninitialised|Mismatched free|Syscall param|Source and destination overlap|Process terminating' "$f"; then
		pass "$who: valgrind memcheck found no errors and no definite or indirect leaks"
	else
		fail "$who: valgrind memcheck clean" "$(grep -m 8 -E '^==[0-9]+== ' "$f" 2>/dev/null | tr '\n' ' ' | cut -c1-600)"
	fi
done
summary
