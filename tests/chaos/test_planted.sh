#!/usr/bin/env bash
# test_planted.sh - the fault campaign must catch a real bug in a service, not only in a
# recorded history: a consumer built with RQ_PLANT_LOSE_EVERY=N acks every Nth API message
# without writing it (as if it were a duplicate). A short campaign against it must fail
# invariant 1 and name the lost ids; the same seed against the real build passes (that part
# is scripts/chaos.sh's). Builds build-planted (ASan+UBSan, the consumer only).
#
# Environment: BUILD_DIR (rq_amqp_tool and the producer: build), PLANTED_DIR (build-planted),
# PYTHON. Prints `N passed, M failed`; exit 1 when the campaign did not catch the bug.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT" || exit 1
BUILD_DIR=${BUILD_DIR:-build}
PLANTED_DIR=${PLANTED_DIR:-build-planted}
PYTHON=${PYTHON:-/usr/bin/python3}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
case $PLANTED_DIR in /*) ;; *) PLANTED_DIR=$ROOT/$PLANTED_DIR ;; esac

cmake -S . -B "$PLANTED_DIR" -DRQ_SANITIZE=ON -DRQ_WERROR=ON -DCMAKE_BUILD_TYPE=Debug \
	-DRQ_TESTS=OFF -DRQ_PLANT_LOSE_EVERY=97 >/dev/null || exit 1
cmake --build "$PLANTED_DIR" -j"${JOBS:-2}" --target producer consumer -- --no-print-directory \
	>/dev/null || exit 1
out=$(mktemp)
timeout -k 10 300 "$PYTHON" tests/chaos/run.py --build-dir "$PLANTED_DIR" \
	--tool-build-dir "$BUILD_DIR" --duration "${PLANTED_DURATION:-20}" --seed 5 >"$out" 2>&1
rc=$?
passed=0 failed=0
if [ "$rc" -ne 0 ] && grep -q '^FAIL  1 ' "$out"; then
	echo "PASS  the campaign caught the planted bug (invariant 1):"
	grep '^FAIL  1 ' "$out" | cut -c1-300
	passed=1
else
	echo "FAIL  the campaign did not catch a consumer that acks every 97th message unwritten (exit $rc)"
	tail -20 "$out"
	failed=1
fi
rm -f "$out"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
