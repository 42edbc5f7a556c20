#!/usr/bin/env bash
# test_tls.sh - AMQPS to RabbitMQ and HTTPS on the producer and consumer ports (issue 6).
#
# Makes a throw-away PKI with openssl (a CA, a broker certificate for localhost, a client
# certificate, and an unrelated "wrong" CA), starts a private RabbitMQ with a TLS listener
# that requires client certificates (scripts/broker.sh with BROKER_EXTRA_CONF), then checks:
#   - producer and consumer over AMQPS with HTTPS on their own ports: a produce with
#     wait=true over HTTPS comes back with the consumer's reply; plain produces are consumed;
#   - curl with the wrong CA, plain HTTP to an HTTPS port, and TLS 1.1 are refused;
#   - the broker's certificate checked against the wrong CA, a host name the certificate does
#     not name, and no client certificate: the service stays not ready and says why;
#     RABBITMQ_TLS_VERIFY=0 (the documented escape hatch) connects despite the wrong CA;
#   - HTTP_TLS_CERT without HTTP_TLS_KEY stops start-up.
# Everything binds 127.0.0.1 and is stopped by PID; the broker by scripts/broker.sh.
#
# Environment: BUILD_DIR (build), WORK (a scratch folder; default mktemp), BROKER_PORT and
# BROKER_TLS_PORT (default: free ports). Prints `N passed, N failed`; exit 1 on failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tests/integration/lib.sh
. "$here/lib.sh"

resolve_build_dir
own_work=
[ -z "${WORK:-}" ] && own_work=1
WORK=${WORK:-$(mktemp -d /tmp/relayq-tls.XXXXXX)}
mkdir -p "$WORK"
chmod 755 "$WORK" # the broker (user rabbitmq) must reach its folder inside
broker_dir=$WORK/broker
pki=$WORK/pki
broker_started=
pids=()

cleanup() {
	local rc=$?
	kill_quietly "${pids[@]}"
	[ -n "$broker_started" ] && "$root/scripts/broker.sh" stop "$broker_dir" >/dev/null 2>&1
	if [ -n "$own_work" ] && [ "$RQ_FAILED" -eq 0 ] && [ "${KEEP_TMP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		echo "logs kept in $WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- a throw-away PKI (EC P-256: quick to make) ----
log "making a throw-away CA and certificates in $pki"
mkdir -p "$pki" "$broker_dir/tls"
mkcert() { # mkcert NAME SUBJECT EXT CA: key + certificate signed by CA (self-signed when CA=-)
	local name=$1 subj=$2 ext=$3 ca=$4
	if [ "$ca" = - ]; then
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-keyout "$pki/$name.key" -out "$pki/$name.pem" -subj "$subj" 2>/dev/null
	else
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
			-keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" 2>/dev/null &&
			printf '%s\n' "$ext" >"$pki/$name.ext" &&
			openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$ca.pem" -CAkey "$pki/$ca.key" \
				-CAcreateserial -days 2 -out "$pki/$name.pem" -extfile "$pki/$name.ext" 2>/dev/null
	fi
}
if mkcert ca "/CN=relayq test CA" "" - && mkcert wrongca "/CN=unrelated CA" "" - &&
	mkcert server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth" ca &&
	mkcert client "/CN=relayq-client" "extendedKeyUsage=clientAuth" ca &&
	openssl verify -CAfile "$pki/ca.pem" "$pki/server.pem" "$pki/client.pem" >/dev/null; then
	pass "openssl made a CA, a server and a client certificate"
else
	fail "openssl made the test PKI"
	summary
	exit 1
fi
chmod 600 "$pki"/*.key
cp "$pki/ca.pem" "$pki/server.pem" "$pki/server.key" "$broker_dir/tls/" # chowned to rabbitmq

# ---- a broker with a TLS listener that requires client certificates ----
BROKER_PORT=${BROKER_PORT:-$(free_broker_port)}
BROKER_TLS_PORT=${BROKER_TLS_PORT:-$(free_port)}
log "starting a broker: AMQP 127.0.0.1:$BROKER_PORT, AMQPS 127.0.0.1:$BROKER_TLS_PORT"
broker_started=1
if BROKER_EXTRA_CONF="listeners.ssl.1 = 127.0.0.1:$BROKER_TLS_PORT
ssl_options.cacertfile = $broker_dir/tls/ca.pem
ssl_options.certfile = $broker_dir/tls/server.pem
ssl_options.keyfile = $broker_dir/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2" "$root/scripts/broker.sh" start "$broker_dir" "$BROKER_PORT" >"$WORK/broker.log" 2>&1; then
	pass "broker with a TLS listener started"
else
	fail "broker with a TLS listener started" "$(tail -n 5 "$WORK/broker.log" | tr '\n' ' ')"
	summary
	exit 1
fi

tls_env=(RABBITMQ_HOST=localhost RABBITMQ_PORT="$BROKER_TLS_PORT" RABBITMQ_TLS=1
	RABBITMQ_TLS_CA="$pki/ca.pem" RABBITMQ_TLS_CERT="$pki/client.pem" RABBITMQ_TLS_KEY="$pki/client.key"
	REQUEST_QUEUE=relayq_tls_test LOG_LEVEL=info)
https_env=(HTTP_TLS_CERT="$pki/server.pem" HTTP_TLS_KEY="$pki/server.key")
CURL=(curl -sS --max-time 10 --cacert "$pki/ca.pem")

# start NAME LOG ENV...: starts a service (producer or consumer by NAME's first word).
start() {
	local name=$1 logf=$2
	shift 2
	env "$@" "$bin/${name%% *}" >"$logf" 2>&1 &
	pids+=($!)
	last_pid=$!
}

# https_ready URL SECONDS: waits for 200 from URL over HTTPS (CA-verified).
https_ready() {
	local i
	for ((i = 0; i < $2 * 5; i++)); do
		[ "$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" = 200 ] && return 0
		sleep 0.2
	done
	return 1
}

# ---- 1. the happy path: AMQPS + HTTPS on both services ----
P_PORT=$(free_port)
C_PORT=$(free_port)
start producer "$WORK/producer.log" "${tls_env[@]}" "${https_env[@]}" PRODUCER_PORT="$P_PORT"
p_pid=$last_pid
start consumer "$WORK/consumer.log" "${tls_env[@]}" "${https_env[@]}" CONSUMER_PORT="$C_PORT"
c_pid=$last_pid
if https_ready "https://localhost:$P_PORT/health/ready" 30 && https_ready "https://127.0.0.1:$C_PORT/health/ready" 30; then
	pass "producer and consumer ready over AMQPS (client certificate), HTTPS health checked with curl --cacert"
else
	fail "producer and consumer ready over AMQPS" "$(tail -n 3 "$WORK/producer.log" "$WORK/consumer.log" | tr '\n' ' ')"
fi
reply=$("${CURL[@]}" -X POST "https://localhost:$P_PORT/produce?wait=true" \
	-H 'Content-Type: application/json' -d '{"payload":"over tls"}' -w ' %{http_code}' 2>&1)
case $reply in
*'"reply":"Consumer processed: over tls"'*' 200') pass "POST /produce?wait=true over HTTPS -> 200 with the consumer's reply (both legs AMQPS)" ;;
*) fail "POST /produce?wait=true over HTTPS -> 200 with the reply" "$reply" ;;
esac
ok=0
for i in $(seq 1 20); do
	code=$("${CURL[@]}" -o /dev/null -w '%{http_code}' -X POST "https://127.0.0.1:$P_PORT/produce" \
		-H 'Content-Type: application/json' -d "{\"payload\":$i}")
	[ "$code" = 201 ] && ok=$((ok + 1))
done
[ "$ok" = 20 ] && pass "20 produces over HTTPS -> 201" || fail "20 produces over HTTPS -> 201" "$ok x 201"
consumed=0
for _ in $(seq 1 50); do
	consumed=$("${CURL[@]}" "https://127.0.0.1:$C_PORT/metrics" | awk '/^messages_consumed_total/ {s += $2} END {print s + 0}')
	[ "${consumed%.*}" -ge 21 ] && break
	sleep 0.2
done
[ "${consumed%.*}" -ge 21 ] && pass "consumer consumed all 21 over AMQPS (metrics read over HTTPS: $consumed)" ||
	fail "consumer consumed all 21 over AMQPS" "messages_consumed_total=$consumed"

# ---- 2. the HTTPS side refuses what it should ----
"${CURL[@]}" --cacert "$pki/wrongca.pem" -o /dev/null "https://127.0.0.1:$P_PORT/health" 2>/dev/null
rc=$?
[ "$rc" = 60 ] && pass "curl with the wrong CA refuses the producer's certificate (exit 60)" ||
	fail "curl with the wrong CA refuses the producer's certificate" "curl exit $rc"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$P_PORT/health")
[ "$code" = 000 ] && pass "plain HTTP to the HTTPS port gets no HTTP answer" || fail "plain HTTP to the HTTPS port refused" "status $code"
"${CURL[@]}" --tlsv1.1 --tls-max 1.1 -o /dev/null "https://127.0.0.1:$P_PORT/health" 2>/dev/null
rc=$?
[ "$rc" != 0 ] && pass "TLS 1.1 is refused (curl exit $rc)" || fail "TLS 1.1 is refused" "it connected"

stop_pid "$p_pid" "producer (AMQPS + HTTPS)"
stop_pid "$c_pid" "consumer (AMQPS + HTTPS)"

# ---- 3. verification failures keep a service not ready, with the reason ----
# not_ready NAME EXPECT ENV...: the producer must stay not ready with EXPECT in the reason.
not_ready() {
	local name=$1 expect=$2 port body=''
	shift 2
	port=$(free_port)
	start producer "$WORK/producer-neg.log" "$@" PRODUCER_PORT="$port"
	for _ in $(seq 1 50); do
		body=$(curl -s --max-time 2 "http://127.0.0.1:$port/health/ready")
		case $body in *"$expect"*) break ;; esac
		sleep 0.2
	done
	sleep 1 # still not ready a moment later (retries keep failing)
	local again
	again=$(curl -s -w ' %{http_code}' --max-time 2 "http://127.0.0.1:$port/health/ready")
	case "$body|$again" in
	*"$expect"*'|'*' 503') pass "$name: not ready, reason names it (${expect})" ;;
	*) fail "$name: not ready with '$expect'" "$body / $again" ;;
	esac
	stop_pid "$last_pid" "producer ($name)" >/dev/null
}
not_ready "broker certificate checked against the wrong CA" "peer cert verification failed" \
	"${tls_env[@]}" RABBITMQ_TLS_CA="$pki/wrongca.pem"
not_ready "host name not in the broker's certificate" "hostname verification failed" \
	"${tls_env[@]}" RABBITMQ_HOST=127.0.0.1
not_ready "no client certificate (the broker requires one)" "SSL error" \
	"${tls_env[@]}" RABBITMQ_TLS_CERT= RABBITMQ_TLS_KEY=
not_ready "plain AMQP to the TLS listener" "not_ready" \
	"${tls_env[@]}" RABBITMQ_TLS=0

port=$(free_port)
start producer "$WORK/producer-noverify.log" "${tls_env[@]}" RABBITMQ_TLS_CA="$pki/wrongca.pem" \
	RABBITMQ_TLS_VERIFY=0 PRODUCER_PORT="$port"
if wait_ready "http://127.0.0.1:$port/health/ready" 20; then
	pass "RABBITMQ_TLS_VERIFY=0 connects despite the wrong CA (the documented escape hatch)"
else
	fail "RABBITMQ_TLS_VERIFY=0 connects" "$(tail -n 2 "$WORK/producer-noverify.log" | tr '\n' ' ')"
fi
stop_pid "$last_pid" "producer (verification off)" >/dev/null

# ---- 4. a half HTTPS configuration stops start-up ----
env "${tls_env[@]}" HTTP_TLS_CERT="$pki/server.pem" PRODUCER_PORT="$(free_port)" \
	timeout 10 "$bin/producer" >"$WORK/producer-half.log" 2>&1
rc=$?
if [ "$rc" != 0 ] && [ "$rc" != 124 ] && grep -q 'HTTP_TLS_CERT and HTTP_TLS_KEY must be set together' "$WORK/producer-half.log"; then
	pass "HTTP_TLS_CERT without HTTP_TLS_KEY stops start-up (exit $rc) with a clear message"
else
	fail "HTTP_TLS_CERT without HTTP_TLS_KEY stops start-up" "exit $rc: $(tail -n 1 "$WORK/producer-half.log")"
fi
if grep -h 'BEGIN\|PRIVATE KEY' "$WORK"/*.log >/dev/null 2>&1; then
	fail "no key material in the logs"
else
	pass "no key material in the logs"
fi
if grep -q 'not the first option' "$WORK"/*.log; then
	fail "libmicrohttpd takes our logger first (no 'not the first option' warning)"
fi
if grep -lE 'AddressSanitizer|runtime error:|LeakSanitizer' "$WORK"/*.log >/dev/null 2>&1; then
	fail "no sanitizer reports in the service logs" "$(grep -lE 'AddressSanitizer|runtime error:|LeakSanitizer' "$WORK"/*.log | tr '\n' ' ')"
fi

summary
