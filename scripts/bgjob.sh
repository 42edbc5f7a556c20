# Background jobs whose exit status survives PID reuse (sourced by make-test.sh and the
# integration scripts).
#
# bash keeps a finished background job's status under its PID, and forgets it as soon as
# the shell forks another child that the kernel gives the same PID (pid_max is 32768 here:
# a long run wraps it). `wait PID` then says "not a child of this shell" and returns 127,
# or returns the newer child's status, hiding a failure. A CI run of make test lost the
# Docker Compose step's status that way after 1100 s. These helpers keep the status in a
# file the job writes itself.

# bg_start OUT CMD...: runs CMD in the background with stdout and stderr in OUT; when CMD
# ends, its exit status is written to OUT.rc (atomically). Sets BG_PID to the job's PID
# (a subshell of this shell). Call it from the shell that will call bg_wait.
bg_start() {
	local out=$1
	shift
	rm -f "$out.rc" "$out.rc.tmp"
	(
		"$@" >"$out" 2>&1
		echo $? >"$out.rc.tmp" && mv -f "$out.rc.tmp" "$out.rc"
	) &
	BG_PID=$!
}

# bg_running OUT PID: true while the job started with OUT (PID its BG_PID) has not written
# its status. Only then is PID certainly still the job's, so only then may it be signalled.
bg_running() {
	[ ! -e "$1.rc" ] && kill -0 "$2" 2>/dev/null
}

# bg_wait OUT PID: from the shell that ran bg_start, waits for the job to end and returns its exit status, read from OUT.rc;
# returns 1 with a message on stderr when the job left no status (it was killed).
bg_wait() {
	local out=$1 pid=$2 rc
	# Returns when the job exits, or at once when bash has forgotten PID, which happens only
	# after the job has exited: either way its status file is final now.
	wait "$pid" 2>/dev/null
	if ! rc=$(cat "$out.rc" 2>/dev/null) || [ -z "$rc" ]; then
		echo "bg_wait: the job writing $out left no exit status (killed?)" >&2
		return 1
	fi
	return "$rc"
}
