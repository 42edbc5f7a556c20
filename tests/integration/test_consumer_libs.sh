#!/usr/bin/env bash
# The consumer loads libcurl (and the Kerberos, LDAP, HTTP/2, SSH libraries it pulls in) only when
# HANDLER is a webhook: an echo or exec consumer maps none of them, which keeps its peak RSS
# (bench step 6) where it was before webhooks existed. Needs no broker: the consumer keeps
# retrying its connection to a closed port while its /proc/PID/maps is read.
#   BUILD_DIR (build)
# Prints PASS/FAIL lines and `N passed, M failed`; exit 1 on any failure. Stops only the
# processes it started, by PID.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$(cd "${BUILD_DIR:-$root/build}" && pwd)/bin
pass=0 fail=0
check() { # NAME COND-RESULT(0|1) DETAIL
	if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "PASS $1"; else fail=$((fail + 1)); echo "FAIL $1: $3"; fi
}
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; }
trap stop EXIT

# mapped HANDLER: the shared objects a consumer with this HANDLER maps after its start
mapped() {
	local out
	out=$(mktemp)
	env -i PATH="$PATH" LOG_LEVEL=error RABBITMQ_HOST=127.0.0.1 RABBITMQ_PORT=1 CONSUMER_PORT=0 \
		HANDLER="$1" "$bin/consumer" >"$out" 2>&1 &
	PID=$!
	for _ in $(seq 1 50); do
		grep -q ' /.*libmicrohttpd' "/proc/$PID/maps" 2>/dev/null && break
		sleep 0.1
	done
	sleep 0.5 # past the handler's set-up
	awk '$6 ~ /\.so/ { print $6 }' "/proc/$PID/maps" 2>/dev/null | sort -u
	kill -0 "$PID" 2>/dev/null || { echo "EXITED"; cat "$out"; }
	stop
	rm -f "$out"
}

for h in echo "exec:cat"; do
	libs=$(mapped "$h")
	if grep -q EXITED <<<"$libs"; then
		check "HANDLER=$h: the consumer runs" 1 "$(tail -n 3 <<<"$libs")"
		continue
	fi
	bad=$(grep -E 'libcurl|libldap|libkrb5|libgssapi|libnghttp2|libssh2|librtmp|libpsl' <<<"$libs" | xargs -r -n1 basename | tr '\n' ' ')
	check "HANDLER=$h: no libcurl nor its Kerberos/LDAP/HTTP2/SSH libraries mapped" "$([ -z "$bad" ] && echo 0 || echo 1)" "mapped: $bad"
done
libs=$(mapped "http://127.0.0.1:1/hook")
check "HANDLER=http://...: libcurl is loaded" "$(grep -q libcurl <<<"$libs" && echo 0 || echo 1)" \
	"not mapped ($(tr '\n' ' ' <<<"$libs" | head -c 300))"
if readelf -d "$bin/consumer" | grep -q 'NEEDED.*libcurl'; then
	check "the consumer binary does not need libcurl at start (readelf -d)" 1 "$(readelf -d "$bin/consumer" | grep libcurl)"
else
	check "the consumer binary does not need libcurl at start (readelf -d)" 0 ""
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
