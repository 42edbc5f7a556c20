#!/usr/bin/env bash
# chaos.sh - the randomized fault campaign of tests/chaos (issue 13), bounded in time.
#
# Runs the proxy's self-test, the checker's planted-bug test and a short campaign against a
# consumer with a planted bug (it must fail), then one campaign per seed
# against the ASan+UBSan services of ASAN_DIR (built by the caller; rq_amqp_tool from
# BUILD_DIR), each DURATION seconds of traffic and faults plus start-up, drain and checks.
#
#   scripts/chaos.sh [SEED ...]     SEED "random" draws one (printed; replay it with SEED=n)
#
# Environment: DURATION (90), CHAOS_TABLE (a file to append one row per seed to), BUILD_DIR,
# ASAN_DIR, PYTHON. Prints `N passed, M failed` (one per part); exit 1 when any part failed.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
abspath() { case $1 in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$ROOT" "$1" ;; esac; }
BUILD_DIR=$(abspath "${BUILD_DIR:-build}")
ASAN_DIR=$(abspath "${ASAN_DIR:-build-asan}")
PYTHON=${PYTHON:-/usr/bin/python3}
DURATION=${DURATION:-90}
export PYTHONDONTWRITEBYTECODE=1
[ $# -gt 0 ] || set -- random

passed=0 failed=0
part() {
	local name=$1 limit=$2 rc
	shift 2
	printf -- '--- %s\n' "$name"
	timeout -k 10 "$limit" "$@"
	rc=$?
	if [ $rc -eq 0 ]; then
		passed=$((passed + 1))
		printf -- '--- PASS %s\n' "$name"
	else
		failed=$((failed + 1))
		printf -- '--- FAIL %s (exit %d)\n' "$name" "$rc"
	fi
}

part "fault proxy self-test (tests/chaos/test_proxy.py)" 120 "$PYTHON" tests/chaos/test_proxy.py
part "checker catches planted bugs (tests/chaos/test_checker.py)" 120 "$PYTHON" tests/chaos/test_checker.py
part "the campaign catches a consumer that acks messages it never wrote (tests/chaos/test_planted.sh)" 600 \
	env BUILD_DIR="$BUILD_DIR" bash tests/chaos/test_planted.sh
for seed in "$@"; do
	args=(--build-dir "$ASAN_DIR" --tool-build-dir "$BUILD_DIR" --duration "$DURATION")
	[ -n "${CHAOS_TABLE:-}" ] && args+=(--table "$CHAOS_TABLE")
	[ "$seed" = random ] || args+=(--seed "$seed")
	part "campaign, seed $seed, ${DURATION} s" $((DURATION * 2 + 240)) \
		"$PYTHON" tests/chaos/run.py "${args[@]}"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
