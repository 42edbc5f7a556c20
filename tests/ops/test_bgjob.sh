#!/usr/bin/env bash
# scripts/bgjob.sh: a background job's exit status survives bash forgetting its PID.
#
# CI lost make test's Docker Compose status after 1100 s ("wait: pid 20115 is not a child
# of this shell", exit 127): the shell had forked another child with that PID. Here the
# kernel is made to hand the PID out again (as root: /proc/sys/kernel/ns_last_pid); where
# that cannot be written, a plain `wait` makes bash forget the same way.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/bgjob.sh
. "$ROOT/scripts/bgjob.sh"
TMP=$(mktemp -d /tmp/relayq-bgjob.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
pass() { passed=$((passed + 1)) && echo "PASS  $1"; }
fail() { failed=$((failed + 1)) && echo "FAIL  $1: $2"; }

# reuse_pid PID HOW: makes this shell fork a child that gets PID, once PID is free; HOW is
# "fg" (a foreground command: bash then forgets PID's status) or "subst" (a $(...): bash
# may then answer with the newer child's status). Returns 1 when PID could not be had.
reuse_pid() {
	local pid=$1 how=$2 try got
	[ -w /proc/sys/kernel/ns_last_pid ] || return 1
	for try in $(seq 1 50); do
		echo $((pid - 1)) >/proc/sys/kernel/ns_last_pid 2>/dev/null || return 1
		if [ "$how" = fg ]; then
			sh -c 'echo $$ >"$1"' sh "$TMP/got"
			got=$(cat "$TMP/got")
		else
			got=$(sh -c 'echo $$')
		fi
		[ "$got" = "$pid" ] && return 0
	done
	return 1
}
# forget PID HOW: bash forgets (or mixes up) PID's status, by reuse or by a plain wait.
forget() {
	if reuse_pid "$1" "$2"; then
		echo "      (PID $1 handed out again, $2)"
	else
		echo "      (ns_last_pid not writable: a plain wait instead)"
		wait
	fi
}

# 1. The failure itself, with a plain background job and `wait PID`.
sh -c 'exit 3' &
p=$!
sleep 0.3
forget "$p" fg
rc=0
wait "$p" 2>/dev/null || rc=$?
if [ "$rc" != 3 ]; then
	pass "control: bash's own wait loses the status once the PID is reused (got $rc, not 3)"
else
	fail "control: bash's own wait loses the status once the PID is reused" "it kept 3: the reproduction does not reproduce"
fi

# 2. bg_wait returns the job's own status after the same loss, for 3 and for 0.
for want in 3 0; do
	for how in fg subst; do
		bg_start "$TMP/job" sh -c "echo out; exit $want"
		p=$BG_PID
		sleep 0.3
		forget "$p" "$how"
		rc=0
		bg_wait "$TMP/job" "$p" || rc=$?
		if [ "$rc" = "$want" ]; then
			pass "bg_wait returns $want after the PID was reused ($how)"
		else
			fail "bg_wait returns $want after the PID was reused ($how)" "got $rc"
		fi
	done
done
grep -qx out "$TMP/job" && pass "the job's output is in OUT" || fail "the job's output is in OUT" "$(cat "$TMP/job")"

# 3. A job still running is waited for; bg_running says so until it ends.
bg_start "$TMP/slow" sh -c 'sleep 1; exit 5'
p=$BG_PID
bg_running "$TMP/slow" "$p" && pass "bg_running while the job runs" || fail "bg_running while the job runs" "said no"
t0=$(date +%s%N)
rc=0
bg_wait "$TMP/slow" "$p" || rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 5 ] && [ "$ms" -ge 500 ] && pass "bg_wait waits for a running job (${ms} ms, status 5)" ||
	fail "bg_wait waits for a running job" "status $rc after ${ms} ms"
bg_running "$TMP/slow" "$p" && fail "bg_running after the end" "still says yes" || pass "bg_running is false once the job ended"

# 4. A job killed before it could write its status is a failure, not a pass.
bg_start "$TMP/killed" sleep 30
p=$BG_PID
sleep 0.2
kill -KILL "$p"
rc=0
bg_wait "$TMP/killed" "$p" 2>"$TMP/err" || rc=$?
[ "$rc" != 0 ] && grep -q 'left no exit status' "$TMP/err" && pass "a killed job fails (status $rc, says why)" ||
	fail "a killed job fails" "status $rc: $(cat "$TMP/err")"

# 5. The scripts that wait on long-running jobs use the helpers.
for f in scripts/make-test.sh tests/integration/asan_system.sh; do
	if grep -q 'bgjob.sh' "$ROOT/$f" && ! grep -nE '^[^#]*\bwait +"?\$(compose_pid|\{tp)' "$ROOT/$f" >/dev/null; then
		pass "$f waits through bg_wait"
	else
		fail "$f waits through bg_wait" "it still uses bash's wait for a job's status"
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
