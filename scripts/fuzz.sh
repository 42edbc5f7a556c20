#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, ASan+UBSan) and runs each for a bounded time.
#
#   scripts/fuzz.sh [SECONDS]     default 60 s per harness (`make fuzz`); `make test` uses 10
#
# Seeds come from fuzz/corpus/<name>/ (committed); what a run discovers goes to a scratch
# corpus under $FUZZ_DIR (default build-fuzz/corpus), never into the repository. A crash
# leaves its input in build-fuzz/artifacts/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-${FUZZ_SECONDS:-60}}
build=${FUZZ_BUILD_DIR:-build-fuzz}
work=${FUZZ_DIR:-$build/corpus}

CC=clang cmake -S . -B "$build" -DRQ_FUZZ=ON -DRQ_TESTS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DRQ_WERROR=ON >/dev/null
harnesses=(fuzz_request fuzz_request_fast fuzz_message fuzz_linesplit fuzz_env fuzz_keys fuzz_jwt fuzz_status_event fuzz_filter fuzz_ws_frame fuzz_lease_json)
cmake --build "$build" -j"$(nproc)" --target "${harnesses[@]}" >/dev/null

declare -A seeds=([fuzz_request]="request batch" [fuzz_request_fast]="request batch" [fuzz_message]=message [fuzz_linesplit]=linesplit
	[fuzz_env]=env [fuzz_keys]=keys [fuzz_jwt]=jwt [fuzz_status_event]=status_event [fuzz_filter]=filter [fuzz_ws_frame]=ws_frame [fuzz_lease_json]="message request")
mkdir -p "$build/artifacts"
# Harnesses run FUZZ_JOBS at a time (default: the number of cores), each on one core.
jobs=${FUZZ_JOBS:-$(nproc)}
run_one() {
	local h=$1 s log runs
	mkdir -p "$work/$h"
	for s in ${seeds[$h]}; do cp -n fuzz/corpus/"$s"/* "$work/$h/" 2>/dev/null || true; done
	log="$build/$h.log"
	if "$build/fuzz/$h" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix="$build/artifacts/$h-" "$work/$h" >"$log" 2>&1; then
		runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{print $2}' || true)
		echo "fuzz: $h ok (${secs}s, ${runs:-?} runs)" >"$build/$h.result"
	else
		{
			echo "fuzz: $h FAILED; input in $build/artifacts/, log $log"
			tail -n 30 "$log"
		} >"$build/$h.result"
		return 1
	fi
}
pass=0
fail=0
running=0
for h in "${harnesses[@]}"; do
	if [ "$running" -ge "$jobs" ]; then
		wait -n || true
		running=$((running - 1))
	fi
	rm -f "$build/$h.result"
	run_one "$h" &
	running=$((running + 1))
done
wait
for h in "${harnesses[@]}"; do
	if grep -q "^fuzz: $h ok" "$build/$h.result" 2>/dev/null; then
		pass=$((pass + 1))
	else
		fail=$((fail + 1))
	fi
	cat "$build/$h.result" 2>/dev/null || echo "fuzz: $h FAILED (no result)"
done
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
